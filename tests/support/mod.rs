//! Shared helpers for the integration tests: external tools and real worker processes.
#![allow(dead_code)] // each test binary uses a different subset

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus};
use std::time::{Duration, Instant};

use profiling_lab::WorkerKind;
pub use profiling_lab::client::{Response, metric_value};
use profiling_lab::lab::procs::{Stopped, WorkerProcess};

/// The repository root (where Cargo.toml lives).
pub fn repo_root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// Finds an external tool on PATH.
///
/// With `LAB_REQUIRE_TOOLS=1` (set by `.ci/run`) a missing tool fails the test, so CI can never
/// pass by skipping; elsewhere the test prints why it skipped and the caller returns early.
pub fn require_tool(name: &str, install_hint: &str) -> Option<PathBuf> {
    if let Some(path) = which(name) {
        return Some(path);
    }
    let test = std::thread::current().name().unwrap_or("test").to_owned();
    if std::env::var("LAB_REQUIRE_TOOLS").is_ok_and(|v| v == "1") {
        panic!(
            "{test}: `{name}` not found on PATH and LAB_REQUIRE_TOOLS=1; install it with: {install_hint}"
        );
    }
    eprintln!("SKIP {test}: `{name}` not found on PATH; install it with: {install_hint}");
    None
}

fn which(name: &str) -> Option<PathBuf> {
    profiling_lab::lab::procs::find_on_path(name)
}

/// `go tool pprof` is how the guide reads profiles; Debian's golang-go provides it.
pub fn require_go() -> Option<PathBuf> {
    require_tool("go", "apt-get install -y --no-install-recommends golang-go")
}

pub fn require_promtool() -> Option<PathBuf> {
    require_tool(
        "promtool",
        "apt-get install -y --no-install-recommends prometheus",
    )
}

/// Runs `go tool pprof ARGS`, returning its stdout; panics with its stderr when it fails.
pub fn go_pprof(go: &PathBuf, args: &[&str]) -> String {
    let home = std::env::temp_dir().join("profiling-lab-pprof-home");
    let out = Command::new(go)
        .args(["tool", "pprof"])
        // pprof gives up on a URL after the profile's seconds plus a minute; a loaded CI
        // machine symbolizing a debug build can need more. Only a hang waits this long.
        .args(
            args.iter()
                .any(|a| a.starts_with("http"))
                .then_some("-timeout=600"),
        )
        .args(args)
        // pprof saves every fetched profile under $HOME/pprof; keep tests from filling $HOME.
        .env("PPROF_TMPDIR", &home)
        .output()
        .expect("go runs");
    let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(
        out.status.success(),
        "go tool pprof {args:?} failed:\n{stderr}\n{stdout}"
    );
    stdout
}

/// Polls `check` every 100 ms until it returns `Some`, or panics after `timeout`.
pub fn wait_for<T>(what: &str, timeout: Duration, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(
            Instant::now() < deadline,
            "timed out after {timeout:?} waiting for {what}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// A worker binary running on a free loopback port; killed when dropped.
pub struct Worker {
    pub kind: &'static str,
    pub addr: SocketAddr,
    process: WorkerProcess,
}

/// The path of a worker binary Cargo built for the tests.
pub fn worker_binary(kind: &str) -> &'static str {
    match kind {
        "bad" => env!("CARGO_BIN_EXE_worker-bad"),
        "optimized" => env!("CARGO_BIN_EXE_worker-optimized"),
        other => panic!("no worker kind {other:?}"),
    }
}

impl Worker {
    /// Starts `worker-<kind>` with `args` on a port the OS picks and waits until it is healthy;
    /// without a `--duration` in `args` it runs for an hour (or until dropped).
    pub fn start(kind: &'static str, args: &[&str]) -> Worker {
        let worker_kind = match kind {
            "bad" => WorkerKind::Bad,
            _ => WorkerKind::Optimized,
        };
        let mut args: Vec<String> = args.iter().map(|a| a.to_string()).collect();
        // The worker's default --duration (60 s) is less than a loaded CI machine may need for
        // one test; a test's worker lives until the test drops it.
        if !args.iter().any(|a| a.starts_with("--duration")) {
            args.extend(["--duration".into(), "1h".into()]);
        }
        let listen = "127.0.0.1:0".parse().unwrap();
        let process = WorkerProcess::spawn(
            Path::new(worker_binary(kind)),
            worker_kind,
            listen,
            &args,
            None,
        )
        .unwrap_or_else(|e| panic!("{e}"));
        Worker {
            kind,
            addr: process.addr,
            process,
        }
    }

    /// Opens `count` connections to the worker, each having sent `bytes` (a whole request, or
    /// the start of one), and keeps them open for the caller.
    pub fn connect_sending(&self, count: usize, bytes: &[u8]) -> Vec<std::net::TcpStream> {
        use std::io::Write;
        (0..count)
            .map(|_| {
                let mut stream = std::net::TcpStream::connect(self.addr).unwrap();
                stream.write_all(bytes).unwrap();
                stream
            })
            .collect()
    }

    pub fn url(&self, path: &str) -> String {
        self.process.url(path)
    }

    /// GETs `path`; error statuses are returned, transport errors panic.
    pub fn get(&self, path: &str) -> Response {
        self.process
            .get(path, Duration::from_secs(120))
            .unwrap_or_else(|e| panic!("worker-{}: {e}\n{}", self.kind, self.process.log()))
    }

    pub fn metrics(&self) -> String {
        let response = self.get("/metrics");
        assert_eq!(response.status, 200);
        response.text()
    }

    /// The sum of a metric's series; panics if it is missing.
    pub fn metric(&self, name: &str) -> f64 {
        metric_value(&self.metrics(), name)
            .unwrap_or_else(|| panic!("worker-{} has no metric {name}", self.kind))
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        self.process.log()
    }

    /// Sends SIGTERM and waits for the exit; returns the status and what it printed on stdout.
    pub fn terminate(self) -> (ExitStatus, String) {
        self.process.terminate().unwrap_or_else(|e| panic!("{e}"))
    }

    /// Sends SIGTERM and waits at most `timeout` before killing it.
    pub fn terminate_within(self, timeout: Duration) -> Stopped {
        self.process.begin_terminate();
        self.process
            .wait_within(timeout)
            .unwrap_or_else(|e| panic!("{e}"))
    }

    /// Waits for the worker to exit on its own (after --duration).
    pub fn wait(self) -> (ExitStatus, String) {
        self.process.wait().unwrap_or_else(|e| panic!("{e}"))
    }
}
