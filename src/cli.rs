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

use crate::kind::WorkerKind;
use crate::pool::RunConfig;

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

    /// Serve tokio-console (console-subscriber) so `tokio-console http://ADDR` can attach; it
    /// costs CPU and memory per task (see README), so it is off by default
    #[arg(long, env = "LAB_CONSOLE", action = clap::ArgAction::SetTrue, value_parser = parse_switch)]
    pub console: bool,

    /// Address tokio-console attaches to, with --console; port 0 picks a free one (logged)
    /// [default: 127.0.0.1:6669 (bad), 127.0.0.1:6670 (optimized)]
    #[arg(long, env = "LAB_CONSOLE_ADDR", value_name = "ADDR", requires = "console",
          value_parser = parse_console_addr)]
    pub console_addr: Option<SocketAddr>,
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
        let matches = WorkerArgs::command()
            .name(kind.binary())
            .bin_name(kind.binary())
            .try_get_matches_from(args)?;
        WorkerArgs::from_arg_matches(&matches)
    }

    /// The listen address, with this worker's default port when none was given.
    pub fn listen_addr(&self, kind: WorkerKind) -> SocketAddr {
        self.listen.unwrap_or_else(|| kind.default_listen())
    }

    /// Where to serve tokio-console: `None` without --console. Errors when it is the HTTP
    /// address, which the worker binds too.
    pub fn console_addr(&self, kind: WorkerKind) -> Result<Option<SocketAddr>, String> {
        if !self.console {
            return Ok(None);
        }
        let console = self
            .console_addr
            .unwrap_or_else(|| default_console_addr(kind));
        let listen = self.listen_addr(kind);
        let overlaps = console.ip() == listen.ip()
            || console.ip().is_unspecified()
            || listen.ip().is_unspecified();
        if console.port() != 0 && console.port() == listen.port() && overlaps {
            return Err(format!(
                "--console-addr {console} is the HTTP address (--listen {listen}); choose another port for tokio-console"
            ));
        }
        Ok(Some(console))
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

/// `--rate`: tasks per second.
pub fn rate_range() -> RangedI64ValueParser<u32> {
    clap::value_parser!(u32).range(1..=1_000_000)
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

/// tokio-console's port for each worker: its own default (6669) for the bad worker, the next one
/// for the optimized worker, so both can run with --console side by side.
pub fn default_console_addr(kind: WorkerKind) -> SocketAddr {
    let port = match kind {
        WorkerKind::Bad => 6669,
        WorkerKind::Optimized => 6670,
    };
    SocketAddr::from(([127, 0, 0, 1], port))
}

/// An on/off switch set from the environment (`LAB_CONSOLE=1`); the flag alone means on.
fn parse_switch(value: &str) -> Result<bool, String> {
    match value.trim().to_ascii_lowercase().as_str() {
        "1" | "true" | "yes" | "on" => Ok(true),
        "0" | "false" | "no" | "off" | "" => Ok(false),
        _ => Err(
            "expected 1, true, yes or on to turn it on, 0, false, no or off to turn it off \
             (LAB_CONSOLE sets --console)"
                .to_owned(),
        ),
    }
}

/// `--console-addr`: an IP address and a port.
fn parse_console_addr(value: &str) -> Result<SocketAddr, String> {
    value.trim().parse().map_err(|_| {
        "expected an IP address and a port, such as 127.0.0.1:6669 (a host name is not accepted)"
            .to_owned()
    })
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
    fn console_is_off_by_default_with_a_port_per_worker() {
        let args = parse(&[]).unwrap();
        assert_eq!(args.console_addr(WorkerKind::Bad), Ok(None));
        let args = parse(&["--console"]).unwrap();
        let bad = args.console_addr(WorkerKind::Bad).unwrap().unwrap();
        let optimized = args.console_addr(WorkerKind::Optimized).unwrap().unwrap();
        assert_eq!((bad.port(), optimized.port()), (6669, 6670));
        let args = parse(&["--console", "--console-addr", "127.0.0.1:7000"]).unwrap();
        assert_eq!(
            args.console_addr(WorkerKind::Bad).unwrap().unwrap().port(),
            7000
        );
    }

    #[test]
    fn bad_console_flags_are_refused() {
        let err = parse(&["--console", "--console-addr", "localhost:6669"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        let text = err.to_string();
        assert!(
            text.contains("--console-addr") && text.contains("localhost:6669"),
            "{text}"
        );
        assert!(text.contains("127.0.0.1:6669"), "{text}");
        let err = parse(&["--console-addr", "127.0.0.1:7000"]).unwrap_err();
        assert!(err.to_string().contains("--console"), "{err}");
        let args = parse(&[
            "--console",
            "--console-addr",
            "127.0.0.1:9090",
            "--listen",
            "127.0.0.1:9090",
        ])
        .unwrap();
        let err = args.console_addr(WorkerKind::Bad).unwrap_err();
        assert!(err.contains("--console-addr 127.0.0.1:9090"), "{err}");
    }

    #[test]
    fn out_of_range_values_name_the_flag() {
        let err = parse(&["--workers", "0"]).unwrap_err();
        assert_eq!(err.exit_code(), 2);
        assert!(err.to_string().contains("--workers"), "{err}");
    }
}
