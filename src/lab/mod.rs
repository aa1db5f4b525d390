//! `lab`: the lab's own tool. It runs the stack without Nix (`demo`, `stop`, `logs`, `grafana`,
//! `clean`), compares the two workers headless (`compare`), fetches profiles (`profile`) and
//! measures the figures the lab promises (`bench`).

pub mod bench;
pub mod check;
pub mod compare;
pub mod exercise;
pub mod observer_bench;
pub mod procs;
pub mod profile;
pub mod stack;

use std::process::ExitCode;

use clap::{Parser, Subcommand};

#[derive(Debug, Parser)]
#[command(
    name = "lab",
    version,
    about = "The profiling lab's tool: run the stack, compare the workers, fetch profiles, measure."
)]
struct Lab {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Start both workers, Prometheus and Grafana (when installed) and wait until all are healthy
    Demo(stack::DemoArgs),
    /// Stop a running `lab demo`
    Stop(stack::StopArgs),
    /// Show the logs of the demo's services
    Logs(stack::LogsArgs),
    /// Open the Grafana dashboard in a browser (or print its URL)
    Grafana(stack::GrafanaArgs),
    /// Delete the demo's data and logs
    Clean(stack::CleanArgs),
    /// Run both workers side by side and report the difference (table, JSON, charts)
    Compare(compare::CompareArgs),
    /// Fetch a profile from a worker, save it and print its top entries
    Profile(profile::ProfileArgs),
    /// Measure the lab's figures: cost per task, allocations per task, instrumentation overhead
    Bench(bench::BenchArgs),
    /// Your own worker to fix: put it in place, restore it, see your change
    Exercise(exercise::ExerciseArgs),
    /// Grade your worker (src/exercise.rs) lesson by lesson against the bad and optimized ones
    Check(check::CheckArgs),
}

/// The `main` of the `lab` binary.
pub fn main() -> ExitCode {
    let lab = Lab::parse();
    crate::logging::init();
    let result = match lab.command {
        Command::Demo(args) => stack::demo(args),
        Command::Stop(args) => stack::stop(args),
        Command::Logs(args) => stack::logs(args),
        Command::Grafana(args) => stack::grafana(args),
        Command::Clean(args) => stack::clean(args),
        Command::Compare(args) => compare::run(args),
        Command::Profile(args) => profile::run(args),
        Command::Bench(args) => bench::run(args),
        Command::Exercise(args) => exercise::run(args),
        Command::Check(args) => check::run(args),
    };
    match result {
        Ok(code) => code,
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Creates the output directory given as `flag` before any work is done, so a bad one fails at
/// once rather than after a profile or a run. Something there that is not a directory is a
/// usage error (exit 2); a directory that cannot be created is an error (exit 1).
pub fn output_dir(flag: &str, dir: &std::path::Path) -> Result<Option<ExitCode>, String> {
    if std::fs::metadata(dir).is_ok_and(|m| !m.is_dir()) {
        eprintln!(
            "error: {flag} {}: is not a directory; give a directory to write into (it is \
             created if missing)\n\nFor more information, try '--help'.",
            dir.display()
        );
        return Ok(Some(ExitCode::from(2)));
    }
    std::fs::create_dir_all(dir)
        .map_err(|e| format!("cannot create {flag} {}: {e}", dir.display()))?;
    Ok(None)
}
