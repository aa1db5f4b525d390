//! Child processes of the `lab` tool (and of the tests): worker binaries started on loopback,
//! found by the address they log, stopped with SIGTERM so they print their summaries.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex, mpsc};
use std::time::{Duration, Instant};

use crate::client::{self, Response};
use crate::kind::WorkerKind;

/// Finds a binary of this package: next to the running executable (as `cargo build` and
/// `nix build` lay them out), else on PATH.
pub fn sibling_binary(name: &str) -> Result<PathBuf, String> {
    let beside = std::env::current_exe()
        .ok()
        .and_then(|exe| exe.parent().map(|dir| dir.join(name)))
        .filter(|path| path.is_file());
    beside.or_else(|| find_on_path(name)).ok_or_else(|| {
        format!(
            "cannot find `{name}` next to this program or on PATH; build it with \
             `cargo build --release` (then run target/release/lab) or use `nix run`"
        )
    })
}

/// The first `name` on PATH.
pub fn find_on_path(name: &str) -> Option<PathBuf> {
    let path = std::env::var_os("PATH")?;
    std::env::split_paths(&path)
        .map(|dir| dir.join(name))
        .find(|candidate| candidate.is_file())
}

/// A running worker process.
pub struct WorkerProcess {
    pub kind: WorkerKind,
    /// Where it serves `/metrics`, `/healthz` and `/debug/pprof/`.
    pub addr: SocketAddr,
    child: Option<Child>,
    log: Arc<Mutex<String>>,
}

impl WorkerProcess {
    /// Starts `binary` as a `kind` worker with `args`, listening on `listen` (port 0 lets the OS
    /// choose), and waits until `/healthz` answers. Its stderr is kept in memory (see
    /// [`WorkerProcess::log`]) and, when `log_file` is given, copied there as it comes.
    pub fn spawn(
        binary: &Path,
        kind: WorkerKind,
        listen: SocketAddr,
        args: &[String],
        log_file: Option<&Path>,
    ) -> Result<WorkerProcess, String> {
        let mut child = Command::new(binary)
            .arg("--listen")
            .arg(listen.to_string())
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        let mut file = match log_file {
            Some(path) => Some(
                std::fs::File::create(path)
                    .map_err(|e| format!("cannot write {}: {e}", path.display()))?,
            ),
            None => None,
        };
        let log = Arc::new(Mutex::new(String::new()));
        let (addr_tx, addr_rx) = mpsc::channel();
        let stderr = child.stderr.take().expect("stderr is piped");
        let sink = Arc::clone(&log);
        std::thread::spawn(move || {
            for line in BufReader::new(stderr).lines().map_while(Result::ok) {
                if let Some(addr) = serving_address(&line) {
                    let _ = addr_tx.send(addr);
                }
                if let Some(file) = &mut file {
                    let _ = writeln!(file, "{line}");
                }
                let mut log = sink.lock().unwrap_or_else(|e| e.into_inner());
                log.push_str(&line);
                log.push('\n');
            }
        });
        let fail = |child: &mut Child, why: String, log: &Mutex<String>| {
            let _ = child.kill();
            let _ = child.wait();
            let log = log.lock().unwrap_or_else(|e| e.into_inner());
            format!("worker-{kind} {why}:\n{log}")
        };
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            Err(_) => return Err(fail(&mut child, "did not start".into(), &log)),
        };
        let worker = WorkerProcess {
            kind,
            addr,
            child: Some(child),
            log,
        };
        match wait_healthy(&worker.url("/healthz"), Duration::from_secs(10)) {
            Ok(_) => Ok(worker),
            Err(why) => {
                let mut worker = worker;
                let mut child = worker.child.take().expect("running");
                Err(fail(&mut child, why, &worker.log))
            }
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// GETs `path` from the worker.
    pub fn get(&self, path: &str, timeout: Duration) -> Result<Response, String> {
        client::get(&self.url(path), timeout)
    }

    /// What the worker logged so far.
    pub fn log(&self) -> String {
        self.log.lock().unwrap_or_else(|e| e.into_inner()).clone()
    }

    pub fn id(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    /// Sends SIGTERM and waits for the exit; returns the status and the summary it printed.
    pub fn terminate(mut self) -> Result<(ExitStatus, String), String> {
        let mut child = self.child.take().expect("running");
        signal_terminate(&child);
        finish(&mut child)
    }

    /// Waits for the worker to exit on its own (after `--duration`).
    pub fn wait(mut self) -> Result<(ExitStatus, String), String> {
        let mut child = self.child.take().expect("running");
        finish(&mut child)
    }
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Asks a child to stop the way Ctrl-C or `kill` would, so it can clean up.
pub fn signal_terminate(child: &Child) {
    #[cfg(unix)]
    // SAFETY: kill(2) on a child we spawned and have not yet waited for.
    unsafe {
        libc::kill(child.id() as libc::pid_t, libc::SIGTERM);
    }
    #[cfg(not(unix))]
    let _ = child;
}

fn finish(child: &mut Child) -> Result<(ExitStatus, String), String> {
    let mut stdout = String::new();
    if let Some(mut out) = child.stdout.take() {
        out.read_to_string(&mut stdout)
            .map_err(|e| format!("reading the worker's output: {e}"))?;
    }
    let status = child
        .wait()
        .map_err(|e| format!("waiting for the worker: {e}"))?;
    Ok((status, stdout))
}

/// Polls `url` until it answers 200; returns how long that took.
pub fn wait_healthy(url: &str, timeout: Duration) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < timeout {
        match client::get(url, Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => return Ok(start.elapsed()),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{url} not healthy after {timeout:?} ({last})"))
}

/// The address in a worker's "serving http://ADDR/metrics" log line.
fn serving_address(line: &str) -> Option<SocketAddr> {
    let rest = &line[line.find("serving http://")? + "serving http://".len()..];
    rest[..rest.find('/')?].parse().ok()
}

#[cfg(test)]
mod tests {
    use super::serving_address;

    #[test]
    fn finds_the_address_in_the_log_line() {
        let line = "2026-11-24T20:00:00Z INFO profiling_lab::worker: worker-bad serving http://127.0.0.1:41234/metrics, /healthz";
        assert_eq!(
            serving_address(line),
            Some("127.0.0.1:41234".parse().unwrap())
        );
        assert_eq!(serving_address("nothing here"), None);
    }
}
