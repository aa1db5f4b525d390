//! `lab`: run the stack, compare the workers, fetch profiles, measure the lab's figures.

fn main() -> std::process::ExitCode {
    profiling_lab::lab::main()
}
