//! `lab profile`: fetches one profile from a worker, saves it under `pprof/` with a timestamped
//! name and prints its top entries, with `go tool pprof` (or Google's `pprof`) when installed and
//! with the lab's own summary otherwise. The guide's `profile-cpu.sh` and `profile-mem.sh` for
//! a running worker, or for one it starts itself (`--start`).

mod top;

use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode};
use std::time::{Duration, SystemTime};

use clap::ValueEnum;

use crate::client;
use crate::kind::WorkerKind;
use crate::lab::procs::{self, WorkerProcess};
use crate::pprof::encode::gunzip_profile;

/// Which profile, by the name a learner thinks of it.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Kind {
    /// CPU samples (/debug/pprof/profile?seconds=N)
    Cpu,
    /// Live memory by allocation site (/debug/pprof/heap)
    Heap,
    /// Memory allocated since start by site, freed or not (/debug/pprof/allocs)
    Allocs,
    /// Live tokio tasks by where they wait: Go's goroutine profile (/debug/pprof/goroutine)
    #[value(alias = "goroutine")]
    Tasks,
    /// CPU samples as an SVG flamegraph (/debug/pprof/flamegraph?seconds=N)
    Flamegraph,
    /// Where tasks waited for contended locks, and how long (/debug/pprof/mutex)
    Mutex,
}

impl Kind {
    fn name(self) -> &'static str {
        match self {
            Kind::Cpu => "cpu",
            Kind::Heap => "heap",
            Kind::Allocs => "allocs",
            Kind::Tasks => "tasks",
            Kind::Flamegraph => "flamegraph",
            Kind::Mutex => "mutex",
        }
    }

    fn sampled(self) -> bool {
        matches!(self, Kind::Cpu | Kind::Flamegraph)
    }

    /// The endpoint; `seconds` is how long CPU is sampled, or for the other kinds the span of
    /// a delta profile (Go's `?seconds=N`: what changed over those seconds), if one was asked.
    fn path(self, seconds: Option<u64>) -> String {
        let endpoint = match self {
            Kind::Cpu => "/debug/pprof/profile",
            Kind::Heap => "/debug/pprof/heap",
            Kind::Allocs => "/debug/pprof/allocs",
            Kind::Tasks => "/debug/pprof/goroutine",
            Kind::Flamegraph => "/debug/pprof/flamegraph",
            Kind::Mutex => "/debug/pprof/mutex",
        };
        let seconds = match self.sampled() {
            true => Some(seconds.unwrap_or(DEFAULT_SECONDS)),
            false => seconds,
        };
        match seconds {
            Some(seconds) => format!("{endpoint}?seconds={seconds}"),
            None => endpoint.to_owned(),
        }
    }

    fn extension(self) -> &'static str {
        match self {
            Kind::Flamegraph => "svg",
            _ => "pb.gz",
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Worker {
    Bad,
    Optimized,
}

impl From<Worker> for WorkerKind {
    fn from(worker: Worker) -> WorkerKind {
        match worker {
            Worker::Bad => WorkerKind::Bad,
            Worker::Optimized => WorkerKind::Optimized,
        }
    }
}

/// Who prints the top entries.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Viewer {
    /// `go tool pprof` if `go` is on PATH, else `pprof`, else the lab's own summary
    Auto,
    /// `go tool pprof -top`
    Go,
    /// Google's standalone `pprof -top`
    Pprof,
    /// The lab's own summary (no external tools)
    Lab,
}

/// Default length of a CPU profile: long enough for about a thousand samples per busy core at
/// 100 Hz, short enough to wait for. (Go's default is 30 s; pass --seconds 30 for the guide's.)
const DEFAULT_SECONDS: u64 = 10;

/// How long a worker started with `--start` works before it is profiled: about a thousand
/// tasks at the default rate, enough for the allocations and the CPU time to show.
const DEFAULT_WARMUP: Duration = Duration::from_secs(5);

/// The warm-up for a task profile: at the default rate the leak (an audit helper per failed
/// task, a reporter per round) outnumbers the pool's 10 idle workers and its producer only
/// after 10-15 s; at 30 s it is several times their number, and tops the profile.
const TASKS_WARMUP: Duration = Duration::from_secs(30);

/// How long a worker started with `--start` may take to exit after SIGTERM.
const STOP_TIMEOUT: Duration = Duration::from_secs(10);

const AFTER_HELP: &str = "\
Examples:
  lab profile tasks bad                      which tasks leak (worker on 127.0.0.1:9090)
  lab profile allocs bad --start             start a worker, let it run, profile it, stop it
  lab profile cpu optimized --seconds 30     the guide's profile-cpu.sh
  lab profile heap bad --start -- --rate 1000 --data-size 2000
Profiles are saved as pprof/WORKER-KIND-YYYYMMDDTHHMMSSZ.pb.gz (.svg for flamegraphs); open
one with `go tool pprof -http=: FILE` or list a function with `go tool pprof -list 'bad::render' FILE`.";

#[derive(Debug, clap::Args)]
#[command(after_help = AFTER_HELP)]
pub struct ProfileArgs {
    /// Which profile
    #[arg(value_enum)]
    kind: Kind,

    /// Which worker
    #[arg(value_enum)]
    worker: Worker,

    /// How long to sample, for cpu and flamegraph [default: 10]; for heap, allocs, tasks and
    /// mutex, a delta profile of what changed over N seconds [default: since start]
    #[arg(long, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(1, crate::pprof::MAX_SECONDS))]
    seconds: Option<u64>,

    /// The worker's address [default: http://127.0.0.1:9090 (bad), http://127.0.0.1:9091 (optimized)]
    #[arg(long, value_name = "URL", conflicts_with = "start", value_parser = parse_url)]
    url: Option<String>,

    /// Start the worker on a free port first (and stop it afterwards)
    #[arg(long)]
    start: bool,

    /// With --start: how long the worker runs before it is profiled [default: 30s for tasks, 5s for the others]
    #[arg(long, allow_hyphen_values = true, value_parser = parse_warmup)]
    warmup: Option<Duration>,

    /// Where to save profiles
    #[arg(long, value_name = "DIR", default_value = "pprof")]
    dir: PathBuf,

    /// How many entries to print
    #[arg(long, value_name = "N", default_value_t = 15, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(1usize, 10_000))]
    top: usize,

    /// Who prints the top entries
    #[arg(long, value_enum, default_value_t = Viewer::Auto)]
    viewer: Viewer,

    /// With --start: flags for the worker, after `--` (e.g. -- --rate 1000)
    #[arg(last = true, value_name = "WORKER_FLAGS")]
    worker_flags: Vec<String>,
}

/// A base URL: `http://HOST:PORT`, without a trailing slash or path, the port in 1..=65535.
/// `--warmup`: up to an hour of the worker running before it is profiled.
fn parse_warmup(value: &str) -> Result<Duration, String> {
    crate::cli::duration_in(Duration::ZERO, Duration::from_secs(3600), "5s, 30s or 1m")(value)
}

fn parse_url(value: &str) -> Result<String, String> {
    let trimmed = value.trim_end_matches('/');
    let rest = trimmed
        .strip_prefix("http://")
        .ok_or("expected http://HOST:PORT, e.g. http://127.0.0.1:9090")?;
    if rest.is_empty() || rest.contains('/') {
        return Err("expected http://HOST:PORT without a path, e.g. http://127.0.0.1:9090".into());
    }
    let (host, port) = rest
        .rsplit_once(':')
        .ok_or("expected http://HOST:PORT with a port, e.g. http://127.0.0.1:9090")?;
    if host.is_empty() {
        return Err("expected http://HOST:PORT with a host, e.g. http://127.0.0.1:9090".into());
    }
    match port.parse::<u16>() {
        Ok(p) if p >= 1 => Ok(trimmed.to_owned()),
        _ => Err(format!(
            "port {port:?} is not a TCP port: allowed are 1..=65535, e.g. http://127.0.0.1:9090"
        )),
    }
}

pub fn run(args: ProfileArgs) -> Result<ExitCode, String> {
    let kind: WorkerKind = args.worker.into();
    if !args.worker_flags.is_empty() && !args.start {
        return Ok(usage("worker flags after `--` need --start"));
    }
    if args.warmup.is_some() && !args.start {
        return Ok(usage(
            "--warmup needs --start (a running worker is profiled as it is)",
        ));
    }
    let seconds = args.seconds;
    let viewer = resolve_viewer(args.viewer)?;
    // Before the worker is started or sampled: a bad --dir must not waste the profile. A
    // directory made here and left empty (the worker was the wrong one, the fetch failed) goes
    // again, so a failed run leaves nothing behind.
    let _made = (!args.dir.exists()).then(|| RemoveIfEmpty(args.dir.clone()));
    if let Some(code) = crate::lab::output_dir("--dir", &args.dir)? {
        return Ok(code);
    }

    let started = if args.start {
        match start_worker(kind, &args, seconds)? {
            Started::Running(worker) => Some(worker),
            Started::Rejected(code) => return Ok(ExitCode::from(code)),
        }
    } else {
        None
    };
    let base = match (&started, &args.url) {
        (Some(worker), _) => worker.url(""),
        (None, Some(url)) => url.clone(),
        (None, None) => format!("http://{}", kind.default_listen()),
    };
    if started.is_none() {
        identify(kind, args.kind, &base)?;
    }
    let fetched = fetch(kind, args.kind, &base, seconds);
    if let Some(worker) = started {
        // The profile is in hand (or the fetch failed); the worker has done its part. Its
        // summary is not needed, so a worker slow to exit is not waited for long.
        worker.begin_terminate();
        if worker.wait_within(STOP_TIMEOUT)?.killed {
            eprintln!(
                "warning: the worker did not exit within {}s of SIGTERM; killed it",
                STOP_TIMEOUT.as_secs()
            );
        }
    }
    let (body, text_dump) = fetched?;
    let has_text = text_dump.is_some();

    let stamp = timestamp(SystemTime::now());
    let path = save(
        &args.dir,
        &format!("{kind}-{}-{stamp}", args.kind.name()),
        args.kind.extension(),
        &body,
    )?;
    println!("saved {}", path.display());
    if let Some(text) = text_dump {
        let text_path = save(
            &args.dir,
            &format!("{kind}-{}-{stamp}", args.kind.name()),
            "txt",
            &text,
        )?;
        println!(
            "saved {} (the same tasks as text, grouped, with file:line: ?debug=1)",
            text_path.display()
        );
    }
    if args.kind == Kind::Flamegraph {
        println!(
            "open it in a browser: the widest boxes are where the CPU time goes; click one to zoom in"
        );
        return Ok(ExitCode::SUCCESS);
    }
    println!();
    // Ranked by cum, as with `-top -cum`: each task's function and its "created by" frame (the
    // line that spawned it) show with the same count.
    let by_cum = args.kind == Kind::Tasks;
    print_top(&viewer, args.viewer, &path, args.top, by_cum)?;
    println!("\n{}", next_steps(args.kind, kind, &path, has_text));
    Ok(ExitCode::SUCCESS)
}

/// Where to look next, for this kind of profile.
fn next_steps(profile: Kind, worker: WorkerKind, path: &Path, has_text: bool) -> String {
    let path = path.display();
    if profile == Kind::Tasks && !has_text {
        format!("each group's full stack: go tool pprof -traces {path}")
    } else if profile == Kind::Tasks {
        format!(
            "each group's full stack, with file:line: the .txt beside it, or go tool pprof -traces {path}"
        )
    } else {
        format!(
            "line by line: go tool pprof -list 'profiling_lab::{worker}::' {path}\n\
             in a browser (graph, flamegraph, source): go tool pprof -http=: {path}"
        )
    }
}

/// Prints a usage error the way clap does and gives its exit status.
fn usage(message: &str) -> ExitCode {
    eprintln!("error: {message}\n\nFor more information, try '--help'.");
    ExitCode::from(2)
}

/// What prints the top entries, decided before anything runs so `--viewer go` without Go fails
/// at once.
enum Resolved {
    /// A program and the arguments before `-top`: `go tool pprof` or `pprof`.
    External(PathBuf, Vec<&'static str>, &'static str),
    Lab,
}

fn resolve_viewer(viewer: Viewer) -> Result<Resolved, String> {
    let go = || {
        procs::find_on_path("go")
            .map(|go| Resolved::External(go, vec!["tool", "pprof"], "go tool pprof"))
    };
    let pprof = || procs::find_on_path("pprof").map(|p| Resolved::External(p, vec![], "pprof"));
    match viewer {
        Viewer::Auto => Ok(go().or_else(pprof).unwrap_or(Resolved::Lab)),
        Viewer::Go => go().ok_or_else(|| {
            "--viewer go: `go` is not on PATH (install Go, e.g. apt-get install golang-go, or use --viewer lab)".into()
        }),
        Viewer::Pprof => pprof().ok_or_else(|| {
            "--viewer pprof: `pprof` is not on PATH (go install github.com/google/pprof@latest, or use --viewer lab)".into()
        }),
        Viewer::Lab => Ok(Resolved::Lab),
    }
}

fn default_warmup(kind: Kind) -> Duration {
    if kind == Kind::Tasks {
        TASKS_WARMUP
    } else {
        DEFAULT_WARMUP
    }
}

/// A worker `--start` started, or the exit status to end with when it rejected its flags.
enum Started {
    Running(WorkerProcess),
    Rejected(u8),
}

fn start_worker(
    kind: WorkerKind,
    args: &ProfileArgs,
    seconds: Option<u64>,
) -> Result<Started, String> {
    let binary = procs::sibling_binary(kind.binary())?;
    let mut flags = args.worker_flags.clone();
    // The worker's own default (60s) could end the run before the profile does.
    if !flags
        .iter()
        .any(|f| f == "--duration" || f.starts_with("--duration="))
    {
        let lifetime = args.warmup.unwrap_or(default_warmup(args.kind))
            + Duration::from_secs(seconds.unwrap_or(DEFAULT_SECONDS))
            + Duration::from_secs(600);
        flags.push("--duration".into());
        flags.push(crate::cli::format_duration(lifetime));
    }
    let warmup = args.warmup.unwrap_or(default_warmup(args.kind));
    let any_port = std::net::SocketAddr::from(([127, 0, 0, 1], 0));
    let mut worker = match WorkerProcess::start(&binary, kind, any_port, &flags) {
        Ok(worker) => worker,
        // A flag the worker rejects is a usage error, as if it had been given to the worker
        // itself: its own message, its own exit status (2).
        Err(failure) if failure.exit_code == Some(2) => {
            eprint!("{}", failure.message);
            return Ok(Started::Rejected(2));
        }
        Err(failure) => return Err(failure.message),
    };
    eprintln!(
        "started worker-{kind} on {}; letting it work for {} before profiling",
        worker.addr,
        humantime::format_duration(warmup)
    );
    // Watched, not slept through: a worker that ends during the warm-up (its own --duration,
    // a crash) is reported as what happened, not later as an unreachable address.
    let deadline = std::time::Instant::now() + warmup;
    while let Some(left) = deadline.checked_duration_since(std::time::Instant::now()) {
        if let Some(status) = worker.try_wait()? {
            let log = worker.log();
            let (_, summary) = worker.wait()?;
            let hint = if args
                .worker_flags
                .iter()
                .any(|f| f == "--duration" || f.starts_with("--duration="))
            {
                format!(
                    "\nits --duration ended it before the profile: give it more than the warm-up \
                     ({}) plus the profile's time, or leave --duration out",
                    humantime::format_duration(warmup)
                )
            } else {
                String::new()
            };
            return Err(format!(
                "worker-{kind} exited during the warm-up ({status}), before it could be \
                 profiled{hint}\nits log:\n{}\nits output:\n{}",
                log.trim_end(),
                summary.trim_end()
            ));
        }
        std::thread::sleep(left.min(Duration::from_millis(100)));
    }
    Ok(Started::Running(worker))
}

/// Checks that `base` is the worker the profile is for, by the `worker_type` label its
/// `/metrics` carries: a profile saved under the wrong worker's name, or Prometheus' own
/// profile saved as a worker's, would teach the wrong lesson.
fn identify(kind: WorkerKind, profile: Kind, base: &str) -> Result<(), String> {
    let response = client::get(&format!("{base}/metrics"), Duration::from_secs(10))
        .map_err(|e| unreachable(kind, profile, base, &e))?;
    let text = response.text();
    if response.status == 200
        && let Some(found) = worker_type(&text)
    {
        if found == kind.label() {
            return Ok(());
        }
        return Err(format!(
            "{base} is worker-{found}, not worker-{kind} (its /metrics say worker_type=\"{found}\"): \
             run `lab profile {} {found} --url {base}`, or point --url at worker-{kind}",
            profile.name()
        ));
    }
    let prometheus = text.contains("prometheus_build_info")
        || client::get(&format!("{base}/-/ready"), Duration::from_secs(5))
            .is_ok_and(|r| r.status == 200);
    if prometheus {
        return Err(format!(
            "{base} is Prometheus, not worker-{kind}: the demo's workers are on \
             http://{} (bad) and http://{} (optimized)",
            WorkerKind::Bad.default_listen(),
            WorkerKind::Optimized.default_listen()
        ));
    }
    Err(format!(
        "{base} is not a worker of this lab: its /metrics ({}) carry no worker_type label",
        response.status
    ))
}

/// The `worker_type` label's value in a `/metrics` text.
fn worker_type(metrics: &str) -> Option<&str> {
    let start = metrics.find("worker_type=\"")? + "worker_type=\"".len();
    let len = metrics[start..].find('"')?;
    Some(&metrics[start..start + len])
}

fn unreachable(kind: WorkerKind, profile: Kind, base: &str, error: &str) -> String {
    format!(
        "worker-{kind} is not reachable at {base} ({error}).\n\
         Start the workers with `lab demo`, point at another with --url, or let this command \
         start one: lab profile {} {kind} --start",
        profile.name()
    )
}

/// GETs the profile (and, for tasks, the grouped text dump too).
fn fetch(
    kind: WorkerKind,
    profile: Kind,
    base: &str,
    seconds: Option<u64>,
) -> Result<(Vec<u8>, Option<Vec<u8>>), String> {
    let url = format!("{base}{}", profile.path(seconds));
    match seconds {
        _ if profile.sampled() => eprintln!(
            "sampling worker-{kind}'s CPU for {}s: {url}",
            seconds.unwrap_or(DEFAULT_SECONDS)
        ),
        Some(seconds) => eprintln!("fetching what changed over {seconds}s: {url}"),
        None => eprintln!("fetching {url}"),
    }
    // Symbolizing a large profile takes a few seconds on top of the sampling time, a debug
    // build on a loaded machine a minute or more; only a stuck worker waits this long.
    let timeout = Duration::from_secs(seconds.unwrap_or(DEFAULT_SECONDS) + 300);
    let body = get(kind, profile, base, &url, timeout)?;
    // The grouped text is of live tasks; a delta (?seconds=N) is a pprof profile only.
    let text = if profile == Kind::Tasks && seconds.is_none() {
        Some(get(
            kind,
            profile,
            base,
            &format!("{url}?debug=1"),
            timeout,
        )?)
    } else {
        None
    };
    Ok((body, text))
}

fn get(
    kind: WorkerKind,
    profile: Kind,
    base: &str,
    url: &str,
    timeout: Duration,
) -> Result<Vec<u8>, String> {
    let response = client::get(url, timeout).map_err(|e| unreachable(kind, profile, base, &e))?;
    let message = || response.text().trim().to_owned();
    match response.status {
        200 => Ok(response.body),
        409 => Err(format!(
            "worker-{kind} is busy with another {} profile (409): {}",
            profile.name(),
            message()
        )),
        404 => Err(format!(
            "{url} does not exist (404): is {base} a worker of this lab?"
        )),
        status => Err(format!(
            "worker-{kind} answered {status} for {url}: {}",
            message()
        )),
    }
}

/// `2026-11-24T20:30:00Z` -> `20261124T203000Z`: sorts by time, no characters a shell or
/// Windows would trip on.
fn timestamp(time: SystemTime) -> String {
    humantime::format_rfc3339_seconds(time)
        .to_string()
        .replace(['-', ':'], "")
}

/// Writes `DIR/STEM.EXT`, or `STEM-2.EXT`, ... if a profile of the same second exists.
fn save(dir: &Path, stem: &str, extension: &str, bytes: &[u8]) -> Result<PathBuf, String> {
    for n in 1.. {
        let name = if n == 1 {
            format!("{stem}.{extension}")
        } else {
            format!("{stem}-{n}.{extension}")
        };
        let path = dir.join(name);
        match std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .open(&path)
        {
            Ok(mut file) => {
                use std::io::Write;
                file.write_all(bytes)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?;
                return Ok(path);
            }
            Err(e) if e.kind() == std::io::ErrorKind::AlreadyExists => continue,
            Err(e) => return Err(format!("cannot write {}: {e}", path.display())),
        }
    }
    unreachable!("1.. is endless")
}

fn print_top(
    viewer: &Resolved,
    asked: Viewer,
    path: &Path,
    n: usize,
    by_cum: bool,
) -> Result<(), String> {
    let cum = if by_cum { " -cum" } else { "" };
    // Why the lab's own summary: asked for, or nothing else to run (a failed external viewer
    // has said so above).
    let mut why = match asked {
        Viewer::Lab => "--viewer lab",
        _ => "no go or pprof on PATH",
    };
    if let Resolved::External(program, prefix, name) = viewer {
        let output = Command::new(program)
            .args(prefix)
            .arg("-top")
            .args(by_cum.then_some("-cum"))
            .arg(format!("-nodecount={n}"))
            .arg(path)
            .output();
        match output {
            Ok(out) if out.status.success() => {
                println!(
                    "top entries, by {name} -top{cum} -nodecount={n} {}:",
                    path.display()
                );
                print!("{}", String::from_utf8_lossy(&out.stdout));
                return Ok(());
            }
            Ok(out) => eprintln!(
                "{name} failed ({}); using the lab's own summary instead:\n{}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
            Err(e) => eprintln!("cannot run {name} ({e}); using the lab's own summary instead"),
        }
        why = "the external viewer failed";
    }
    let bytes = std::fs::read(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let profile = gunzip_profile(&bytes)?;
    let mut top = top::top(&profile)?;
    if by_cum {
        top.sort_by_cum();
    }
    println!("top entries{cum}, by the lab's own summary ({why}):");
    print!("{}", top::render(&top, n));
    Ok(())
}

/// Removes a directory when dropped if it is still empty (`remove_dir` refuses otherwise).
struct RemoveIfEmpty(PathBuf);

impl Drop for RemoveIfEmpty {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir(&self.0);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_task_profile_warms_up_until_the_leak_outnumbers_the_pool() {
        // 10 idle pool workers and a producer: at the default rate the leak needs 10-15 s.
        assert_eq!(default_warmup(Kind::Tasks), Duration::from_secs(30));
        assert_eq!(default_warmup(Kind::Heap), Duration::from_secs(5));
    }

    #[test]
    fn urls_name_the_allowed_ports() {
        assert_eq!(
            parse_url("http://127.0.0.1:9090/").as_deref(),
            Ok("http://127.0.0.1:9090")
        );
        for (bad, needle) in [
            ("http://127.0.0.1:99999", "1..=65535"),
            ("http://127.0.0.1:0", "1..=65535"),
            ("http://127.0.0.1", "with a port"),
            ("http://:9090", "with a host"),
        ] {
            let err = parse_url(bad).unwrap_err();
            assert!(err.contains(needle), "{bad}: {err}");
        }
        assert_eq!(worker_type("x{worker_type=\"bad\"} 1"), Some("bad"));
        assert_eq!(worker_type("prometheus_build_info 1"), None);
    }

    #[test]
    fn timestamps_sort_and_have_no_separators() {
        let t = SystemTime::UNIX_EPOCH + Duration::from_secs(1_795_552_200);
        assert_eq!(timestamp(t), "20261124T203000Z");
    }

    #[test]
    fn urls_are_base_addresses() {
        assert_eq!(
            parse_url("http://127.0.0.1:9090/").unwrap(),
            "http://127.0.0.1:9090"
        );
        assert!(parse_url("127.0.0.1:9090").unwrap_err().contains("http://"));
        assert!(
            parse_url("http://h:1/debug/pprof")
                .unwrap_err()
                .contains("without a path")
        );
    }

    #[test]
    fn saving_never_overwrites() {
        let dir = std::env::temp_dir().join(format!("lab-profile-save-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let a = save(&dir, "bad-cpu-x", "pb.gz", b"1").unwrap();
        let b = save(&dir, "bad-cpu-x", "pb.gz", b"2").unwrap();
        assert_ne!(a, b);
        assert!(b.to_string_lossy().ends_with("bad-cpu-x-2.pb.gz"));
        assert_eq!(std::fs::read(&a).unwrap(), b"1");
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
