//! The flags both worker binaries take, with the original lab's names.
//!
//! Every flag also reads an environment variable (`LAB_*`), so a compose file or a systemd unit
//! can configure a worker without a command line. Bad values stop the program with status 2 and
//! a message naming the flag and what it accepts, before any work starts.

use std::ffi::OsString;
use std::fmt::Display;
use std::net::{IpAddr, SocketAddr};
use std::str::FromStr;
use std::time::Duration;

use clap::error::{ContextKind, ContextValue, ErrorKind};
use clap::parser::ValueSource;
use clap::{Command, CommandFactory, FromArgMatches, Parser};

use crate::burst::Burst;
use crate::kind::WorkerKind;
use crate::pool::RunConfig;
use crate::problems::Problems;
use crate::profile_file::ProfilePath;

/// Flags of `worker-bad` and `worker-optimized`.
#[derive(Debug, Clone, Parser)]
#[command(
    version,
    about = "Runs the profiling lab's workload and serves /metrics, /healthz and /debug/pprof/.",
    after_help = "Stops after --duration, or on Ctrl-C or SIGTERM: finishes the tasks in hand, prints a \
                  summary, writes the profile files, then gives open HTTP requests up to 5 s. A \
                  second Ctrl-C or SIGTERM stops at once, still printing the summary and writing \
                  the profile files; a third exits without them."
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
    // Hyphen values reach the parser, so `-5s` is "cannot be negative", not "unexpected argument".
    #[arg(long, env = "LAB_DURATION", default_value = "60s", allow_hyphen_values = true,
          value_parser = parse_duration)]
    pub duration: Duration,

    /// Tasks produced per second; two workers at the same rate run the same stream at the same pace
    #[arg(long, env = "LAB_RATE", allow_negative_numbers = true, default_value_t = 200,
          value_parser = rate_range())]
    pub rate: u32,

    /// Seed of the task stream; the same seed gives the same tasks
    #[arg(long, env = "LAB_SEED", allow_negative_numbers = true, default_value_t = 42,
          value_parser = whole_number(0, u64::MAX))]
    pub seed: u64,

    /// Produce exactly N tasks, then stop once all are handled (before --duration if it comes
    /// first) and print a `lab-ledger` line after the summary: tasks, digest checksum,
    /// allocations per task and tasks left alive. `lab check` grades workers with it
    #[arg(long, env = "LAB_MAX_TASKS", value_name = "N", allow_negative_numbers = true,
          value_parser = whole_number(1, u64::MAX))]
    pub max_tasks: Option<u64>,

    /// Address of the HTTP endpoints, an IP address and port (host names are not accepted)
    /// [default: 127.0.0.1:9090 (bad), 127.0.0.1:9091 (optimized), 127.0.0.1:9093 (exercise)]
    #[arg(long, env = "LAB_LISTEN", value_name = "ADDR", value_parser = parse_listen)]
    pub listen: Option<SocketAddr>,

    /// tokio worker threads running the workload and the HTTP endpoints
    #[arg(long, env = "LAB_RUNTIME_THREADS", value_name = "N", allow_negative_numbers = true,
          default_value_t = crate::runtime::DEFAULT_THREADS as u64, value_parser = runtime_threads_range())]
    pub runtime_threads: u64,

    /// Write a CPU profile of the whole run to PATH at exit (pprof format); an existing file is
    /// replaced only by a complete profile
    #[arg(long, value_name = "PATH", allow_hyphen_values = true, value_parser = ProfilePath::check)]
    pub cpuprofile: Option<ProfilePath>,

    /// Write a heap profile (live memory) to PATH at exit (pprof format); an existing file is
    /// replaced only by a complete profile
    #[arg(long, value_name = "PATH", allow_hyphen_values = true, value_parser = ProfilePath::check)]
    pub memprofile: Option<ProfilePath>,

    /// `--listen` came from `LAB_LISTEN`: an address the worker cannot use is reported under
    /// that name.
    #[arg(skip)]
    pub listen_from_env: bool,

    /// Problems worker-bad has: all, none, or a list of leak, capacity, churn, blocking,
    /// contention, backlog (worker-optimized has every fix and ignores this)
    #[arg(long, env = "LAB_PROBLEMS", value_name = "LIST", default_value = "all", allow_hyphen_values = true,
          value_parser = Problems::parse)]
    pub problems: Problems,

    /// Bursts of load: FACTORx[:ON/EVERY], e.g. 20x:10s/30s runs at 20 times --rate for 10s of
    /// every 30s (ON/EVERY default to 10s/30s); off for none
    #[arg(long, env = "LAB_BURST", value_name = "SPEC", default_value = "off", allow_hyphen_values = true,
          value_parser = Burst::parse)]
    pub burst: ::std::option::Option<Burst>,

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
    ///
    /// Beyond what clap checks: a value read from an environment variable is reported under
    /// that variable's name, and the two profile flags must name different files.
    pub fn try_parse_for<I, T>(kind: WorkerKind, args: I) -> Result<WorkerArgs, clap::Error>
    where
        I: IntoIterator<Item = T>,
        T: Into<OsString> + Clone,
    {
        let args: Vec<OsString> = args.into_iter().map(Into::into).collect();
        let mut command = WorkerArgs::command()
            .name(kind.binary())
            .bin_name(kind.binary())
            .about(about(kind));
        let matches = command
            .try_get_matches_from_mut(&args)
            .map_err(|err| name_the_environment_variable(&command, &args, err))?;
        let mut parsed = WorkerArgs::from_arg_matches(&matches)?;
        parsed.listen_from_env = matches.value_source("listen") == Some(ValueSource::EnvVariable);
        if let (Some(cpu), Some(mem)) = (&parsed.cpuprofile, &parsed.memprofile)
            && cpu.same_file(mem)
        {
            return Err(command.error(
                ErrorKind::ArgumentConflict,
                format!(
                    "--cpuprofile {} and --memprofile {} name the same file; each profile needs \
                     a file of its own, e.g. --cpuprofile cpu.pb.gz --memprofile mem.pb.gz",
                    cpu.given().display(),
                    mem.given().display()
                ),
            ));
        }
        if let Some(burst) = &parsed.burst {
            let peak = u64::from(parsed.rate) * u64::from(burst.factor);
            if peak > MAX_RATE {
                // Named as the user set them: a flag, or the environment variable behind it.
                let origin = |id: &str, flag: &str, env: &str, value: String| match matches
                    .value_source(id)
                {
                    Some(ValueSource::EnvVariable) => format!("{env}={value}"),
                    Some(ValueSource::DefaultValue) => format!("{flag} {value} (the default)"),
                    _ => format!("{flag} {value}"),
                };
                return Err(command.error(
                    ErrorKind::ValueValidation,
                    format!(
                        "{} with {} would produce {peak} tasks/s; the burst rate (FACTOR x --rate) must be at most {MAX_RATE}",
                        origin("burst", "--burst", "LAB_BURST", burst.to_string()),
                        origin("rate", "--rate", "LAB_RATE", parsed.rate.to_string()),
                    ),
                ));
            }
        }
        Ok(parsed)
    }

    /// Where the listen address came from, for messages: `--listen`, `LAB_LISTEN=ADDR` or
    /// this worker's default.
    pub fn listen_origin(&self, kind: WorkerKind) -> String {
        match (self.listen, self.listen_from_env) {
            (Some(addr), true) => format!("LAB_LISTEN={addr}"),
            (Some(_), false) => "--listen".to_owned(),
            (None, _) => format!("the default of {}", kind.binary()),
        }
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
            max_tasks: self.max_tasks,
        }
    }
}

/// What `--help` says first: which of the two workers this is.
fn about(kind: WorkerKind) -> &'static str {
    match kind {
        WorkerKind::Bad => {
            "The lab's deliberately bad worker: it runs the workload with task leaks, capacity \
             mistakes and allocation in hot paths, for you to find with metrics and profiles. \
             worker-optimized runs the same workload with each problem fixed. Serves /metrics, \
             /healthz and /debug/pprof/."
        }
        WorkerKind::Optimized => {
            "The lab's optimized worker: the same workload as worker-bad with each of its \
             problems fixed (no leaked tasks, buffers sized once and reused, no allocation per \
             task), to compare with it. Serves /metrics, /healthz and /debug/pprof/."
        }
        WorkerKind::Exercise => {
            "Your worker: the same workload as worker-bad, run by src/exercise.rs, the copy of              the bad worker's code you fix (`lab exercise start`); `lab check` grades it. Serves              /metrics, /healthz and /debug/pprof/."
        }
    }
}

/// Rewrites clap's error for a bad value that came from an environment variable (say
/// `LAB_RATE=0`), which clap reports as if `--rate 0` had been typed, to name the variable.
fn name_the_environment_variable(
    command: &Command,
    args: &[OsString],
    err: clap::Error,
) -> clap::Error {
    if !matches!(
        err.kind(),
        ErrorKind::ValueValidation | ErrorKind::InvalidValue
    ) {
        return err;
    }
    let (Some(ContextValue::String(invalid_arg)), Some(ContextValue::String(value))) = (
        err.get(ContextKind::InvalidArg),
        err.get(ContextKind::InvalidValue),
    ) else {
        return err;
    };
    // clap names the argument as `--rate <RATE>`.
    let Some(arg) = command.get_arguments().find(|arg| {
        arg.get_long()
            .is_some_and(|long| invalid_arg.split(' ').next() == Some(&format!("--{long}")))
    }) else {
        return err;
    };
    let (Some(long), Some(env)) = (arg.get_long(), arg.get_env()) else {
        return err;
    };
    let flag = format!("--{long}");
    let on_command_line = args.iter().skip(1).any(|a| {
        let a = a.to_string_lossy();
        a == flag || a.starts_with(&format!("{flag}="))
    });
    if on_command_line {
        return err;
    }
    let reason = std::error::Error::source(&err)
        .map(ToString::to_string)
        .unwrap_or_else(|| "not an allowed value; see --help".to_owned());
    let env = env.to_string_lossy();
    command.clone().error(
        ErrorKind::ValueValidation,
        format!(
            "invalid value '{value}' for '{flag}' from the environment variable {env}={value}: \
             {reason}"
        ),
    )
}

// The allowed values of the workload flags. `lab demo` and `lab compare` pass these flags on to
// the workers, so they check them with the same parsers: what they accept, the workers accept.

/// `--tasks`: tasks per round.
pub fn tasks_range() -> impl WholeNumberParser<u64> {
    whole_number(1, 1_000_000_000)
}

/// `--workers`: concurrent worker tasks.
pub fn workers_range() -> impl WholeNumberParser<u64> {
    whole_number(1, 10_000)
}

/// `--data-size`: integers per payload.
pub fn data_size_range() -> impl WholeNumberParser<u64> {
    whole_number(1, 1_000_000)
}

/// Most tasks per second `--rate` accepts, and the most a burst may reach.
pub const MAX_RATE: u64 = 1_000_000;

/// `--rate`: tasks per second.
pub fn rate_range() -> impl WholeNumberParser<u32> {
    whole_number(1, MAX_RATE as u32)
}

/// A clap value parser for a whole number: what [`whole_number`] returns.
pub trait WholeNumberParser<T>:
    Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
{
}

impl<T, F> WholeNumberParser<T> for F where
    F: Fn(&str) -> Result<T, String> + Clone + Send + Sync + 'static
{
}

/// A parser of whole numbers from `min` to `max` whose every error states the range: for
/// `-1`, `abc` or an empty value alike (clap adds the flag and the value).
pub fn whole_number<T>(min: T, max: T) -> impl WholeNumberParser<T>
where
    T: FromStr + PartialOrd + Display + Copy + Send + Sync + 'static,
{
    move |value: &str| match value.parse::<T>() {
        // Rust's parser takes a leading `+`; a flag's number is written without one.
        _ if value.starts_with('+') => Err(format!(
            "{value} has a sign; expected a whole number in {min}..={max}, written without +"
        )),
        Ok(n) if n >= min && n <= max => Ok(n),
        Ok(n) => Err(format!("{n} is not in {min}..={max}")),
        Err(_) if value.is_empty() => {
            Err(format!("empty; expected a whole number in {min}..={max}"))
        }
        Err(_) if value.trim() != value => Err(format!(
            "has spaces around it; expected a whole number in {min}..={max}"
        )),
        // Digits that overflow the type, or a negative number: out of range, not "not a number".
        Err(_)
            if value
                .strip_prefix('-')
                .unwrap_or(value)
                .bytes()
                .all(|b| b.is_ascii_digit())
                && value != "-" =>
        {
            Err(format!("{value} is not in {min}..={max}"))
        }
        Err(_) => Err(format!(
            "{value:?} is not a whole number; expected one in {min}..={max}"
        )),
    }
}

/// `--runtime-threads`: tokio worker threads.
pub fn runtime_threads_range() -> impl WholeNumberParser<u64> {
    whole_number(1, crate::runtime::MAX_THREADS as u64)
}

/// Refuses a value with spaces in it or around it, for every kind of flag value alike: a
/// value that arrives padded (`" all"`, `"leak, churn"`, `"1 s"`) was likely quoted or pasted
/// wrongly, and is better questioned than silently trimmed. `expected` says what is allowed.
pub fn refuse_spaces(value: &str, expected: &str) -> Result<(), String> {
    if value.trim() != value {
        return Err(format!("has spaces around it; {expected}"));
    }
    if value.contains(char::is_whitespace) {
        return Err(format!("has spaces in it; {expected}"));
    }
    Ok(())
}

/// A parser of durations from `min` to `max` whose every error states what is allowed: spaces,
/// negative values and garbage alike. `examples` shows the expected form, e.g. "500ms, 1s or 10s".
pub fn duration_in(
    min: Duration,
    max: Duration,
    examples: &'static str,
) -> impl Fn(&str) -> Result<Duration, String> + Clone + Send + Sync + 'static {
    move |value: &str| {
        let range = format!(
            "from {} to {}",
            humantime::format_duration(min),
            humantime::format_duration(max)
        );
        let expected = format!("expected a duration such as {examples}, {range}");
        if value.is_empty() {
            return Err(format!("empty; {expected}"));
        }
        refuse_spaces(value, &expected)?;
        if value.starts_with('-') {
            return Err(format!("a duration cannot be negative; {expected}"));
        }
        let duration = humantime::parse_duration(value).map_err(|e| format!("{e}; {expected}"))?;
        if !(min..=max).contains(&duration) {
            return Err(format!("must be {range}"));
        }
        Ok(duration)
    }
}

/// Longest run accepted: about ten years, far beyond any class.
const MAX_DURATION: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

/// A humantime duration from one second to about ten years.
///
/// Spaces around the value are an error, as they are in the HTTP endpoints' parameters: a
/// value that arrives padded was likely quoted or pasted wrongly, and is better questioned.
pub fn parse_duration(value: &str) -> Result<Duration, String> {
    const EXPECTED: &str = "expected a duration such as 30s, 10m or 48h";
    if value.is_empty() {
        return Err(format!("empty; {EXPECTED}"));
    }
    refuse_spaces(value, EXPECTED)?;
    if value.starts_with('-') {
        return Err(format!("a duration cannot be negative; {EXPECTED}"));
    }
    let duration = humantime::parse_duration(value).map_err(|e| format!("{e}; {EXPECTED}"))?;
    if duration < Duration::from_secs(1) {
        return Err("must be at least 1s".to_owned());
    }
    if duration > MAX_DURATION {
        return Err("must be at most 3650days".to_owned());
    }
    Ok(duration)
}

/// A duration as a person would type it, and as [`parse_duration`] reads it back: `60s` is
/// `1m`, `48h` stays `48h` (not humantime's `2days`), `90m` is `1h30m`.
pub fn format_duration(duration: Duration) -> String {
    let secs = duration.as_secs();
    let parts = [
        (secs / 3600, "h"),
        (secs / 60 % 60, "m"),
        (secs % 60, "s"),
        (u64::from(duration.subsec_millis()), "ms"),
    ];
    let text: String = parts
        .iter()
        .filter(|(n, _)| *n > 0)
        .map(|(n, unit)| format!("{n}{unit}"))
        .collect();
    if text.is_empty() {
        "0s".to_owned()
    } else {
        text
    }
}

/// `--listen`: an IP address and a port.
///
/// Host names are refused rather than resolved: a name can stand for several addresses
/// (`localhost` is 127.0.0.1 and ::1), and a worker must listen where Prometheus and the
/// dashboard expect it, not on whichever address the resolver lists first.
pub fn parse_listen(value: &str) -> Result<SocketAddr, String> {
    const EXAMPLES: &str = "127.0.0.1:9090 (this machine only), 0.0.0.0:9090 (every interface) \
                            or [::1]:9090";
    if let Ok(addr) = value.parse::<SocketAddr>() {
        return Ok(addr);
    }
    if value.is_empty() {
        return Err(format!("empty; expected IP:PORT such as {EXAMPLES}"));
    }
    if let Some((scheme, rest)) = value.split_once("://") {
        return Err(format!(
            "{scheme}:// makes it a URL; --listen takes an address without a scheme or path, \
             e.g. {}",
            rest.trim_end_matches('/')
        ));
    }
    if let Some(port) = value.strip_prefix(':')
        && port.parse::<u16>().is_ok()
    {
        return Err(format!(
            "no IP address before the port; use 127.0.0.1:{port} for this machine only or \
             0.0.0.0:{port} for every interface"
        ));
    }
    if value.trim() != value {
        return Err(format!(
            "has spaces around it; expected IP:PORT such as {EXAMPLES}"
        ));
    }
    match value.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => {
            return Err(format!(
                "no port (an IPv6 address with a port is written in brackets, e.g. [::1]:9090); \
                 expected IP:PORT such as {EXAMPLES}"
            ));
        }
        Ok(IpAddr::V4(_)) => return Err(format!("no port; expected IP:PORT such as {EXAMPLES}")),
        Err(_) => {}
    }
    let Some((host, port)) = value.rsplit_once(':') else {
        return Err(format!(
            "host names are not accepted and there is no port; expected IP:PORT such as {EXAMPLES}"
        ));
    };
    if port.parse::<u16>().is_err() {
        return Err(format!(
            "port {port:?} is not in 0..=65535; expected IP:PORT such as {EXAMPLES}"
        ));
    }
    let bare = host.trim_start_matches('[').trim_end_matches(']');
    match bare.parse::<IpAddr>() {
        Ok(IpAddr::V6(_)) => Err(format!("an IPv6 address needs brackets: [{bare}]:{port}")),
        Ok(IpAddr::V4(_)) => Err(format!("expected IP:PORT such as {EXAMPLES}")),
        Err(_) => Err(format!(
            "host names such as {host:?} are not accepted, only IP addresses: use \
             127.0.0.1:{port} for this machine only or 0.0.0.0:{port} for every interface"
        )),
    }
}

/// tokio-console's port for each worker: its own default (6669) for the bad worker, the next ones
/// for the optimized and the exercise worker, so all can run with --console side by side.
pub fn default_console_addr(kind: WorkerKind) -> SocketAddr {
    let port = match kind {
        WorkerKind::Bad => 6669,
        WorkerKind::Optimized => 6670,
        WorkerKind::Exercise => 6671,
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

/// `--console-addr`: an IP address and a port, read as strictly as `--listen`.
fn parse_console_addr(value: &str) -> Result<SocketAddr, String> {
    parse_listen(value)
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
    fn durations_are_printed_as_typed() {
        for (text, secs) in [("1m", 60), ("48h", 48 * 3600), ("1h30m", 5400), ("45s", 45)] {
            assert_eq!(format_duration(Duration::from_secs(secs)), text);
            assert_eq!(parse_duration(text).unwrap(), Duration::from_secs(secs));
        }
        assert_eq!(format_duration(Duration::from_millis(1500)), "1s500ms");
    }

    #[test]
    fn padded_and_negative_durations_are_refused() {
        assert!(parse_duration(" 10s").unwrap_err().contains("spaces"));
        assert!(parse_duration("10s\n").unwrap_err().contains("spaces"));
        assert!(parse_duration("-5s").unwrap_err().contains("negative"));
        assert!(parse_duration("").unwrap_err().contains("30s, 10m or 48h"));
    }

    #[test]
    fn whole_numbers_state_the_range_for_every_bad_value() {
        let parse = whole_number(1u64, 10_000);
        for bad in ["-1", "abc", "", " 5", "0", "10001", "1.5"] {
            let err = parse(bad).unwrap_err();
            assert!(err.contains("1..=10000"), "{bad:?}: {err}");
        }
        assert_eq!(parse("10000").unwrap(), 10_000);
    }

    #[test]
    fn listen_takes_ip_addresses_and_explains_the_rest() {
        assert_eq!(
            parse_listen("[::1]:8080").unwrap(),
            "[::1]:8080".parse::<SocketAddr>().unwrap()
        );
        for (bad, expected) in [
            (
                "localhost:9090",
                "host names such as \"localhost\" are not accepted",
            ),
            ("localhost", "host names are not accepted"),
            ("127.0.0.1", "no port"),
            ("127.0.0.1:99999", "port \"99999\" is not in 0..=65535"),
            ("::1:9090", "written in brackets"),
            ("[::1:9090", "brackets: [::1]:9090"),
            (" 127.0.0.1:9090", "spaces"),
        ] {
            let err = parse_listen(bad).unwrap_err();
            assert!(err.contains(expected), "{bad:?}: {err}");
        }
    }

    #[test]
    fn help_says_which_worker_it_is() {
        let help = |kind| {
            let mut cmd = WorkerArgs::command().about(about(kind));
            cmd.render_help().to_string()
        };
        assert!(help(WorkerKind::Bad).contains("deliberately bad worker"));
        assert!(help(WorkerKind::Optimized).contains("optimized worker"));
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
        for bad in ["0", "257", "-1", "two"] {
            let err = parse(&["--runtime-threads", bad]).unwrap_err();
            assert_eq!(err.exit_code(), 2);
            let text = err.to_string();
            assert!(text.contains("--runtime-threads"), "{text}");
            if bad == "0" || bad == "257" {
                assert!(text.contains("1..=256"), "{text}");
            }
        }
        assert_eq!(parse(&[]).unwrap().runtime_threads, 2);
        assert_eq!(
            parse(&["--runtime-threads", "4"]).unwrap().runtime_threads,
            4
        );
    }
}
