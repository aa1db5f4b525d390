//! `worker-exercise`: the learner's worker, running `src/exercise.rs` (`lab exercise start`).

fn main() -> std::process::ExitCode {
    profiling_lab::worker::main(profiling_lab::WorkerKind::Exercise)
}
