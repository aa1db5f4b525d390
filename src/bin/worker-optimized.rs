//! `worker-optimized`: the lab's workload with every problem of `worker-bad` fixed.

fn main() -> std::process::ExitCode {
    profiling_lab::worker::main(profiling_lab::WorkerKind::Optimized)
}
