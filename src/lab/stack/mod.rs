//! The lab's stack without Nix: `lab demo` starts both workers, Prometheus and Grafana (those
//! that are installed) with the repository's configs, and `lab stop`, `lab logs`,
//! `lab grafana` and `lab clean` act on it from another terminal, through the state the demo
//! keeps in its data dir. They stand in for the original guide's `make start / stop / logs /
//! grafana / clean`.
//!
//! | module | what it does |
//! |---|---|
//! | [`config`] | renders the embedded Prometheus and Grafana configs for the ports and data dir |
//! | [`layout`] | the data dir: where configs, logs and the state file are |
//! | [`services`] | finds Prometheus and Grafana and builds their command lines |
//! | [`prometheus_api`] | readiness, targets, queries and rules through Prometheus' HTTP API |
//! | `demo` | `lab demo`: checks, starts, waits, prints the URLs, stops on a signal |
//! | `control` | `lab stop`, `lab logs`, `lab grafana`, `lab clean` |

pub mod config;
mod control;
mod demo;
pub mod layout;
pub mod prometheus_api;
pub mod services;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use crate::cli::parse_duration;
use layout::Service;

/// The data dir flag every stack command shares.
#[derive(Debug, Clone, clap::Args)]
pub struct DataDirArg {
    /// Where the demo keeps its configs, logs, Prometheus' samples and Grafana's database
    /// (relative to the current directory)
    #[arg(long, value_name = "DIR", default_value = "data")]
    pub data_dir: PathBuf,
}

/// Flags of `lab demo`.
#[derive(Debug, Clone, clap::Args)]
#[command(after_help = "\
Prometheus and Grafana are started when found (on PATH, or named with --prometheus-bin and \
--grafana-bin); without them the rest still runs, and the message says how to install them.

Stop with Ctrl-C here, or `lab stop` from another terminal in the same directory. \
`lab logs`, `lab grafana` and `lab clean` work the same way; pass them the same --data-dir.")]
pub struct DemoArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// Port of the bad worker
    #[arg(long, value_name = "PORT", default_value_t = 9090, allow_negative_numbers = true,
          value_parser = port_parser())]
    pub bad_port: u16,

    /// Port of the optimized worker
    #[arg(long, value_name = "PORT", default_value_t = 9091, allow_negative_numbers = true,
          value_parser = port_parser())]
    pub optimized_port: u16,

    /// Port of Prometheus
    #[arg(long, value_name = "PORT", default_value_t = 9092, allow_negative_numbers = true,
          value_parser = port_parser())]
    pub prometheus_port: u16,

    /// Port of Grafana
    #[arg(long, value_name = "PORT", default_value_t = 3000, allow_negative_numbers = true,
          value_parser = port_parser())]
    pub grafana_port: u16,

    /// The Prometheus binary to run [default: `prometheus` on PATH]
    #[arg(long, value_name = "PATH", value_parser = executable, conflicts_with = "no_prometheus")]
    pub prometheus_bin: Option<PathBuf>,

    /// The Grafana binary to run (`grafana` or `grafana-server`) [default: either on PATH]
    #[arg(long, value_name = "PATH", value_parser = executable, conflicts_with = "no_grafana")]
    pub grafana_bin: Option<PathBuf>,

    /// Grafana's home directory, with conf/ and public/ [default: found from the binary]
    #[arg(long, value_name = "DIR", value_parser = grafana_home, conflicts_with = "no_grafana")]
    pub grafana_homepath: Option<PathBuf>,

    /// Also run your worker (src/exercise.rs, see `lab exercise start`) on --exercise-port,
    /// scraped as worker_type="exercise"
    #[arg(long)]
    pub exercise: bool,

    /// Port of your worker, with --exercise
    #[arg(long, value_name = "PORT", default_value_t = 9093, allow_negative_numbers = true,
          value_parser = port_parser(), requires = "exercise")]
    pub exercise_port: u16,

    /// Do not start Prometheus (run your own on --prometheus-port to keep the dashboard)
    #[arg(long)]
    pub no_prometheus: bool,

    /// Do not start Grafana
    #[arg(long)]
    pub no_grafana: bool,

    /// How long Prometheus keeps samples (its --storage.tsdb.retention.time)
    #[arg(long, value_name = "DURATION", default_value = "30d",
          value_parser = services::parse_retention)]
    pub retention: String,

    /// Tasks per round, for both workers
    #[arg(long, value_name = "N", default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = crate::cli::tasks_range())]
    pub tasks: u64,

    /// Concurrent worker tasks, for both workers
    #[arg(long, value_name = "N", default_value_t = 50, allow_negative_numbers = true,
          value_parser = crate::cli::workers_range())]
    pub workers: u64,

    /// How long the workers run
    #[arg(long, value_name = "DURATION", default_value = "48h", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub duration: Duration,

    /// Integers in each task's payload [default: the workers' own]
    #[arg(long, value_name = "N", allow_negative_numbers = true,
          value_parser = crate::cli::data_size_range())]
    pub data_size: Option<u64>,

    /// Tasks produced per second [default: the workers' own]
    #[arg(long, value_name = "R", allow_negative_numbers = true,
          value_parser = crate::cli::rate_range())]
    pub rate: Option<u32>,

    /// The bad worker's problems (its --problems): all, none, or a list of leak, capacity,
    /// churn, blocking, contention, backlog, to show one lesson at a time; worker-optimized has
    /// every fix whatever this says
    #[arg(long, env = "LAB_PROBLEMS", value_name = "LIST", default_value = "all", value_parser = crate::problems::Problems::parse, allow_hyphen_values = true)]
    pub problems: crate::problems::Problems,

    /// Bursts of load for both workers (their --burst): FACTORx[:ON/EVERY], e.g. 5x:10s/30s
    /// (lesson 6, overload), or off
    #[arg(long, env = "LAB_BURST", value_name = "SPEC", default_value = "off", value_parser = crate::burst::Burst::parse, allow_hyphen_values = true)]
    pub burst: ::std::option::Option<crate::burst::Burst>,
}

/// Flags of `lab stop`.
#[derive(Debug, Clone, clap::Args)]
pub struct StopArgs {
    #[command(flatten)]
    pub data: DataDirArg,

    /// How long to wait for the demo to stop everything
    #[arg(long, value_name = "DURATION", default_value = "30s", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub timeout: Duration,
}

/// Flags of `lab logs`.
#[derive(Debug, Clone, clap::Args)]
pub struct LogsArgs {
    /// Only this service's log [default: all, each line prefixed with the service]
    #[arg(value_enum, value_name = "SERVICE")]
    pub service: Option<Service>,

    /// Keep printing new lines until the demo stops (or Ctrl-C)
    #[arg(short, long)]
    pub follow: bool,

    /// Lines to show from the end of each log first; 0 shows whole logs
    #[arg(short = 'n', long, value_name = "N", default_value_t = 100, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(0u64, 10_000_000))]
    pub lines: u64,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// Flags of `lab grafana`.
#[derive(Debug, Clone, clap::Args)]
pub struct GrafanaArgs {
    /// Only print the dashboard's URL, do not open a browser
    #[arg(long)]
    pub print: bool,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// Flags of `lab clean`.
#[derive(Debug, Clone, clap::Args)]
pub struct CleanArgs {
    /// Stop a demo still running with this data dir first (otherwise `lab clean` refuses)
    #[arg(long)]
    pub force: bool,

    #[command(flatten)]
    pub data: DataDirArg,
}

/// `lab demo`.
pub fn demo(args: DemoArgs) -> Result<ExitCode, String> {
    demo::run(args)
}

/// `lab stop`.
pub fn stop(args: StopArgs) -> Result<ExitCode, String> {
    control::stop(args)
}

/// `lab logs`.
pub fn logs(args: LogsArgs) -> Result<ExitCode, String> {
    control::logs(args)
}

/// `lab grafana`.
pub fn grafana(args: GrafanaArgs) -> Result<ExitCode, String> {
    control::grafana(args)
}

/// `lab clean`.
pub fn clean(args: CleanArgs) -> Result<ExitCode, String> {
    control::clean(args)
}

/// Ports 1 to 65535: the demo writes each into configs and URLs, so it cannot be 0 (any).
fn port_parser() -> clap::builder::RangedI64ValueParser<u16> {
    clap::value_parser!(u16).range(1..=65535)
}

/// An existing executable file.
fn executable(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    let meta = std::fs::metadata(&path).map_err(|e| format!("{value}: {e}"))?;
    if !meta.is_file() {
        return Err(format!(
            "{value} is not a file; expected the program to run"
        ));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if meta.permissions().mode() & 0o111 == 0 {
            return Err(format!("{value} is not executable"));
        }
    }
    Ok(path)
}

/// A directory with Grafana's conf/defaults.ini.
fn grafana_home(value: &str) -> Result<PathBuf, String> {
    let path = PathBuf::from(value);
    if services::is_grafana_home(&path) {
        Ok(path)
    } else {
        Err(format!(
            "{value} has no conf/defaults.ini; expected Grafana's home directory \
             (the one with conf/ and public/, e.g. /usr/share/grafana)"
        ))
    }
}
