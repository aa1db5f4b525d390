//! `worker-bad`: the lab's workload with task leaks, capacity mistakes and allocation churn.

fn main() -> std::process::ExitCode {
    profiling_lab::worker::main(profiling_lab::WorkerKind::Bad)
}
