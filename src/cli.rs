//! The flags both worker binaries take, with the original lab's names.
//!
//! Every flag also reads an environment variable (`LAB_*`), so a compose file or a systemd unit
//! can configure a worker without a command line. Bad values stop the program with status 2 and
//! a message naming the flag and what it accepts, before any work starts.

use std::fs::File;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

use clap::builder::{RangedI64ValueParser, RangedU64ValueParser};
use clap::{CommandFactory, FromArgMatches, Parser};

use crate::burst::Burst;
use crate::kind::WorkerKind;
use crate::pool::RunConfig;
use crate::problems::Problems;

/// Flags of `worker-bad` and `worker-optimized`.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Runs the profiling lab's workload and serves /metrics, /healthz and /debug/pprof/.",
    after_help = "Stops after --duration, or on Ctrl-C or SIGTERM, and prints a summary."
)]
pub struct WorkerArgs {
    /// Tasks per round; rounds repeat until --duration has passed
    #[arg(long, env = "LAB_TASKS", allow_negative_numbers = true, default_value_t = 1000,
          value_parser = tasks_range())]
    pub tasks: u64,

    /// Concurrent worker tasks taking tasks off the queue
    #[arg(long, env = "LAB_WORKERS", allow_negative_numbers = true, default_value_t = 10,
          value_parser = workers_range())]
    pub workers: u64,

    /// Integers in each task's payload
    #[arg(long, env = "LAB_DATA_SIZE", allow_negative_numbers = true, default_value_t = 10_000,
          value_parser = data_size_range())]
    pub data_size: u64,

    /// How long to run: 30s, 10m, 48h, ...
    #[arg(long, env = "LAB_DURATION", default_value = "60s", value_parser = parse_duration)]
    pub duration: Duration,

    /// Tasks produced per second; two workers at the same rate run the same stream at the same pace
    #[arg(long, env = "LAB_RATE", allow_negative_numbers = true, default_value_t = 200,
          value_parser = rate_range())]
    pub rate: u32,

    /// Seed of the task stream; the same seed gives the same tasks
    #[arg(
        long,
        env = "LAB_SEED",
        allow_negative_numbers = true,
        default_value_t = 42
    )]
    pub seed: u64,

    /// Address of the HTTP endpoints [default: 127.0.0.1:9090 (bad), 127.0.0.1:9091 (optimized)]
    #[arg(long, env = "LAB_LISTEN", value_name = "ADDR")]
    pub listen: Option<SocketAddr>,

    /// Write a CPU profile of the whole run to PATH at exit (pprof format)
    #[arg(long, value_name = "PATH", value_parser = writable_file)]
    pub cpuprofile: Option<PathBuf>,

    /// Write a heap profile (live memory) to PATH at exit (pprof format)
    #[arg(long, value_name = "PATH", value_parser = writable_file)]
    pub memprofile: Option<PathBuf>,

    /// Problems worker-bad has: all, none, or a list of leak, capacity, churn, blocking,
    /// contention, backlog (worker-optimized has every fix and ignores this)
    #[arg(long, env = "LAB_PROBLEMS", value_name = "LIST", default_value = "all",
          value_parser = Problems::parse)]
    pub problems: Problems,

    /// Bursts of load: FACTORx[:ON/EVERY], e.g. 20x:10s/30s runs at 20 times --rate for 10s of
    /// every 30s (ON/EVERY default to 10s/30s); off for none
    #[arg(long, env = "LAB_BURST", value_name = "SPEC", default_value = "off",
          value_parser = Burst::parse)]
    pub burst: ::std::option::Option<Burst>,
}

impl WorkerArgs {
    /// Parses the process's arguments for `kind`; prints help, version or an error and exits
    /// (status 2 for errors) when there is nothing to run.
    pub fn parse_for(kind: WorkerKind) -> WorkerArgs {
        Self::try_parse_for(kind, std::env::args_os()).unwrap_or_else(|err| err.exit())
    }

    /// Parses `args` (program name first) for `kind`.
    pub fn try_parse_for<I, T>(kind: WorkerKind, args: I) -> Result<WorkerArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<std::ffi::OsString> + Clone,
    {
        let mut command = WorkerArgs::command()
            .name(kind.binary())
            .bin_name(kind.binary());
        let matches = command.try_get_matches_from_mut(args)?;
        let args = WorkerArgs::from_arg_matches(&matches)?;
        if let Some(burst) = &args.burst {
            let peak = u64::from(args.rate) * u64::from(burst.factor);
            if peak > MAX_RATE {
                return Err(command.error(
                    clap::error::ErrorKind::ValueValidation,
                    format!(
                        "--burst {burst} with --rate {} would produce {peak} tasks/s; the burst rate (FACTOR x --rate) must be at most {MAX_RATE}",
                        args.rate
                    ),
                ));
            }
        }
        Ok(args)
    }

    /// The listen address, with this worker's default port when none was given.
    pub fn listen_addr(&self, kind: WorkerKind) -> SocketAddr {
        self.listen.unwrap_or_else(|| kind.default_listen())
    }

    pub fn run_config(&self) -> RunConfig {
        RunConfig {
            tasks_per_round: self.tasks,
            workers: self.workers as usize,
            data_size: self.data_size as usize,
            rate: self.rate,
            seed: self.seed,
        }
    }
}

// The allowed values of the workload flags. `lab demo` and `lab compare` pass these flags on to
// the workers, so they check them with the same parsers: what they accept, the workers accept.

/// `--tasks`: tasks per round.
pub fn tasks_range() -> RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=1_000_000_000)
}

/// `--workers`: concurrent worker tasks.
pub fn workers_range() -> RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=10_000)
}

/// `--data-size`: integers per payload.
pub fn data_size_range() -> RangedU64ValueParser {
    clap::value_parser!(u64).range(1..=1_000_000)
}

/// Most tasks per second `--rate` accepts, and the most a burst may reach.
pub const MAX_RATE: u64 = 1_000_000;

/// `--rate`: tasks per second.
pub fn rate_range() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=MAX_RATE as i64)
}

/// Longest run accepted: about ten years, far beyond any class.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A humantime duration from one second to about ten years.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    let duration = humantime::parse_duration(value)
        .map_err(|e| format!("{e}; expected a duration such as 30s, 10m or 48h"))?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    if duration > MAX_DURATION {
        return Err("must be at most 3650days".to_owned());
    }
    Ok(duration)
}

/// A path the profile can be written to. The file is created now, so a mistyped directory
/// fails at start and not after a 48-hour run.
fn writable_file(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    File::create(&path).map_err(|e| format!("cannot create the file: {e}"))?;
    Ok(path)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<WorkerArgs, clap::Error> {
        let mut all = vec!["worker-bad"];
        all.extend_from_slice(args);
        WorkerArgs::try_parse_for(WorkerKind::Bad, all)
    }

    #[test]
    fn defaults_and_listen_per_worker() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.listen_addr(WorkerKind::Bad).port(), 9090);
        assert_eq!(args.listen_addr(WorkerKind::Optimized).port(), 9091);
        assert_eq!(args.duration, Duration::from_secs(60));
    }

    #[test]
    fn humantime_durations() {
        assert_eq!(
            parse_duration("48h").unwrap(),
            Duration::from_secs(48 * 3600)
        );
        assert!(parse_duration("0s").unwrap_err().contains("at least 1s"));
        assert!(
            parse_duration("ten")
                .unwrap_err()
                .contains("30s, 10m or 48h")
        );
    }

    #[test]
    fn problems_and_burst_flags() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.problems, Problems::ALL);
        assert_eq!(args.burst, None);
        let args = parse(&["--problems", "blocking,backlog", "--burst", "5x:2s/4s"]).unwrap();
        assert_eq!(args.problems.to_string(), "blocking,backlog");
        assert_eq!(args.burst.unwrap().factor, 5);
        let err = parse(&["--problems", "blocking,slow"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(
            err.to_string().contains("--problems") && err.to_string().contains("\"slow\""),
            "{err}"
        );
        let err = parse(&["--burst", "2x:10s"]).unwrap_err();
        assert!(
            err.to_string().contains("--burst") && err.to_string().contains("ON/EVERY"),
            "{err}"
        );
        let err = parse(&["--rate", "100000", "--burst", "20x"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("2000000 tasks/s"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_flag() {
        let err = parse(&["--workers", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--workers"), "{err}");
    }
}
