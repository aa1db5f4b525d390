//! Child processes of the `lab` tool (and of the tests): worker binaries started on loopback,
//! found by the address they log, stopped with SIGTERM so they print their summaries; and the
//! generic parts `lab demo` needs for Prometheus and Grafana: log files, health waits, stopping
//! with a deadline, signals, and telling whether a process recorded in a state file still runs.

use std::fs::File;
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
        let mut command = Command::new(binary);
        command.arg("--listen").arg(listen.to_string()).args(args);
        WorkerProcess::spawn_command(command, kind, log_file)
    }

    /// Like [`WorkerProcess::spawn`], for a `command` the caller has prepared: the binary, its
    /// `--listen` and other flags, and anything else (see [`isolate`]). Sets `RUST_LOG` unless
    /// the command already has it, pipes stdout (the exit summary) and stderr (the log), and
    /// waits until `/healthz` answers.
    pub fn spawn_command(
        command: Command,
        kind: WorkerKind,
        log_file: Option<&Path>,
    ) -> Result<WorkerProcess, String> {
        WorkerProcess::start_command(command, kind, log_file).map_err(|e| e.message)
    }

    /// Like [`WorkerProcess::spawn`], but a worker that exits before it serves says how it
    /// exited: a rejected flag is its exit status 2, which `lab profile --start` passes on.
    pub fn start(
        binary: &Path,
        kind: WorkerKind,
        listen: SocketAddr,
        args: &[String],
    ) -> Result<WorkerProcess, StartFailure> {
        let mut command = Command::new(binary);
        command.arg("--listen").arg(listen.to_string()).args(args);
        WorkerProcess::start_command(command, kind, None)
    }

    fn start_command(
        mut command: Command,
        kind: WorkerKind,
        log_file: Option<&Path>,
    ) -> Result<WorkerProcess, StartFailure> {
        if !command.get_envs().any(|(key, _)| key == "RUST_LOG") {
            command.env(
                "RUST_LOG",
                std::env::var("RUST_LOG").unwrap_or_else(|_| "info".into()),
            );
        }
        let program = PathBuf::from(command.get_program());
        let mut child = command
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .map_err(|e| StartFailure::from(format!("cannot start {}: {e}", program.display())))?;
        let mut file = match log_file {
            Some(path) => Some(std::fs::File::create(path).map_err(|e| {
                StartFailure::from(format!("cannot write {}: {e}", path.display()))
            })?),
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
            StartFailure::from(format!("worker-{kind} {why}:\n{log}"))
        };
        let addr = match addr_rx.recv_timeout(Duration::from_secs(30)) {
            Ok(addr) => addr,
            // Its stderr closed without an address: it exited (a rejected flag, a taken port).
            Err(mpsc::RecvTimeoutError::Disconnected) => {
                let status = child.wait().ok();
                let log = log.lock().unwrap_or_else(|e| e.into_inner());
                let how = status.map_or_else(|| "exited".to_owned(), |s| format!("exited ({s})"));
                return Err(StartFailure {
                    message: format!("worker-{kind} {how} before serving:\n{log}"),
                    exit_code: status.and_then(|s| s.code()),
                });
            }
            Err(mpsc::RecvTimeoutError::Timeout) => {
                return Err(fail(&mut child, "did not start".into(), &log));
            }
        };
        let worker = WorkerProcess {
            kind,
            addr,
            child: Some(child),
            log,
        };
        // It already serves (it logged its address): this waits out a loaded machine, no more.
        match wait_healthy(&worker.url("/healthz"), Duration::from_secs(60)) {
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

    /// Sends SIGTERM without waiting, so that several processes can stop at the same time;
    /// follow with [`WorkerProcess::wait_within`].
    pub fn begin_terminate(&self) {
        if let Some(child) = &self.child {
            signal_terminate(child);
        }
    }

    /// The exit status if the worker has exited (it should not have, before it is told to).
    pub fn try_wait(&mut self) -> Result<Option<ExitStatus>, String> {
        match &mut self.child {
            Some(child) => child
                .try_wait()
                .map_err(|e| format!("checking on worker-{}: {e}", self.kind)),
            None => Ok(None),
        }
    }

    /// Waits at most `timeout` for the worker to exit (after [`WorkerProcess::begin_terminate`]),
    /// then kills it; returns how it ended and what it printed on stdout (its summary).
    pub fn wait_within(mut self, timeout: Duration) -> Result<Stopped, String> {
        let mut child = self.child.take().expect("running");
        let killed = wait_or_kill(&mut child, timeout)?;
        let (status, output) = finish(&mut child)?;
        Ok(Stopped {
            status,
            output,
            killed,
        })
    }
}

/// Why a worker did not start: the message (with its log), and its exit status if it exited.
#[derive(Debug)]
pub struct StartFailure {
    pub message: String,
    pub exit_code: Option<i32>,
}

impl From<String> for StartFailure {
    fn from(message: String) -> StartFailure {
        StartFailure {
            message,
            exit_code: None,
        }
    }
}

/// How a child process ended when it was asked to stop.
#[derive(Debug)]
pub struct Stopped {
    pub status: ExitStatus,
    /// What it printed on stdout, when stdout was piped to us.
    pub output: String,
    /// It did not stop within the time allowed and was killed.
    pub killed: bool,
}

impl Drop for WorkerProcess {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Takes an exclusive fcntl lock on the whole of `file` without waiting; false if another
/// process holds it. fcntl, not flock: its holder's pid can be asked for ([`lock_holder`]).
pub fn try_lock(file: &File) -> bool {
    use std::os::fd::AsRawFd;
    let mut lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: fcntl(2) on an open descriptor with a valid, initialized flock struct.
    unsafe { libc::fcntl(file.as_raw_fd(), libc::F_SETLK, &mut lock) == 0 }
}

/// The pid of another process holding a lock on `file`, if any.
pub fn lock_holder(file: &File) -> Option<u32> {
    use std::os::fd::AsRawFd;
    let mut lock = whole_file_lock(libc::F_WRLCK);
    // SAFETY: as in `try_lock`; F_GETLK only writes into `lock`.
    let ok = unsafe { libc::fcntl(file.as_raw_fd(), libc::F_GETLK, &mut lock) == 0 };
    (ok && lock.l_type != libc::F_UNLCK as libc::c_short && lock.l_pid > 0)
        .then_some(lock.l_pid as u32)
}

fn whole_file_lock(kind: libc::c_int) -> libc::flock {
    // SAFETY: flock is plain data; all-zero is a valid value, the fields set below matter.
    let mut lock: libc::flock = unsafe { std::mem::zeroed() };
    lock.l_type = kind as libc::c_short;
    lock.l_whence = libc::SEEK_SET as libc::c_short;
    lock.l_start = 0;
    lock.l_len = 0;
    lock
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
    poll_healthy(url, timeout, || Ok(()))
}

/// Polls `url` every 50 ms until it answers 200 or `timeout` passes; `give_up` is asked before
/// each try and ends the wait early with its error.
fn poll_healthy(
    url: &str,
    timeout: Duration,
    mut give_up: impl FnMut() -> Result<(), String>,
) -> Result<Duration, String> {
    let start = Instant::now();
    let mut last = String::from("no answer yet");
    while start.elapsed() < timeout {
        give_up()?;
        match client::get(url, Duration::from_secs(2)) {
            Ok(r) if r.status == 200 => return Ok(start.elapsed()),
            Ok(r) => last = format!("status {}", r.status),
            Err(e) => last = e,
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    Err(format!("{url} not healthy after {timeout:?} ({last})"))
}

/// Polls `child` until it exits or `timeout` passes; `None` when it is still running.
pub fn wait_timeout(child: &mut Child, timeout: Duration) -> Result<Option<ExitStatus>, String> {
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("waiting for process {}: {e}", child.id()))?
        {
            return Ok(Some(status));
        }
        if Instant::now() >= deadline {
            return Ok(None);
        }
        std::thread::sleep(Duration::from_millis(20));
    }
}

/// Waits at most `timeout` for `child` to exit, then kills it; true when it had to be killed.
/// (`Child` keeps the status `try_wait` saw, so a later `wait` still returns it.)
fn wait_or_kill(child: &mut Child, timeout: Duration) -> Result<bool, String> {
    if wait_timeout(child, timeout)?.is_some() {
        return Ok(false);
    }
    let _ = child.kill();
    Ok(true)
}

/// Asks `child` to stop with SIGTERM, waits at most `timeout`, then kills it. Returns its exit
/// status and whether it had to be killed.
pub fn stop_child(child: &mut Child, timeout: Duration) -> Result<(ExitStatus, bool), String> {
    signal_terminate(child);
    finish_within(child, timeout)
}

/// Waits at most `timeout` for a child already told to stop, then kills it. Returns its exit
/// status and whether it had to be killed.
pub fn finish_within(child: &mut Child, timeout: Duration) -> Result<(ExitStatus, bool), String> {
    if let Some(status) = wait_timeout(child, timeout)? {
        return Ok((status, false));
    }
    let _ = child.kill();
    let status = child
        .wait()
        .map_err(|e| format!("waiting for process {}: {e}", child.id()))?;
    Ok((status, true))
}

/// Prepares `command` to run as a service of a foreground program such as `lab demo`:
/// - in a process group of its own, so the terminal's Ctrl-C reaches only the program, which
///   then stops its children in order and collects what they print;
/// - on Linux, sent SIGTERM by the kernel if the thread that spawned it dies (even by
///   `kill -9`), so no service outlives the program. Spawn from the main thread: the kernel
///   watches the spawning thread, not the process.
pub fn isolate(command: &mut Command) {
    #[cfg(unix)]
    {
        use std::os::unix::process::CommandExt;
        command.process_group(0);
        #[cfg(target_os = "linux")]
        {
            // SAFETY: getpid before the fork; prctl and getppid are async-signal-safe calls
            // made between fork and exec, touching no memory of the parent.
            let parent = unsafe { libc::getpid() };
            unsafe {
                command.pre_exec(move || {
                    if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGTERM) != 0 {
                        return Err(std::io::Error::last_os_error());
                    }
                    // The parent died between fork and prctl: nobody would stop us.
                    if libc::getppid() != parent {
                        return Err(std::io::Error::other("the parent process exited"));
                    }
                    Ok(())
                });
            }
        }
    }
    #[cfg(not(unix))]
    let _ = command;
}

/// Starts `command` with stdin closed and stdout and stderr appended to `log_file`.
pub fn spawn_logged(command: &mut Command, log_file: &Path) -> Result<Child, String> {
    let open = || {
        File::options()
            .create(true)
            .append(true)
            .open(log_file)
            .map_err(|e| format!("cannot write {}: {e}", log_file.display()))
    };
    let (stdout, stderr) = (open()?, open()?);
    command
        .stdin(Stdio::null())
        .stdout(stdout)
        .stderr(stderr)
        .spawn()
        .map_err(|e| format!("cannot start {}: {e}", command.get_program().display()))
}

/// Polls `url` until it answers 200, like [`wait_healthy`], but gives up early when `child`
/// exits (a service that cannot start should not be waited for) or `interrupted` says so.
pub fn wait_child_healthy(
    url: &str,
    child: &mut Child,
    timeout: Duration,
    interrupted: &mut dyn FnMut() -> bool,
) -> Result<Duration, String> {
    poll_healthy(url, timeout, || {
        if let Some(status) = child
            .try_wait()
            .map_err(|e| format!("checking on process {}: {e}", child.id()))?
        {
            return Err(format!("exited ({status}) before {url} answered"));
        }
        if interrupted() {
            return Err("interrupted".into());
        }
        Ok(())
    })
}

/// A channel that receives the name of each SIGINT (Ctrl-C) and SIGTERM this process gets,
/// from now on: the handlers are installed before this returns, and the signals no longer end
/// the process. A thread with a small tokio runtime does the listening.
pub fn termination_signals() -> Result<mpsc::Receiver<&'static str>, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .build()
        .map_err(|e| format!("cannot start the signal listener: {e}"))?;
    let (tx, rx) = mpsc::channel();
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        let _entered = runtime.enter();
        let listen = |kind| signal(kind).map_err(|e| format!("cannot listen for signals: {e}"));
        let mut interrupt = listen(SignalKind::interrupt())?;
        let mut terminate = listen(SignalKind::terminate())?;
        drop(_entered);
        std::thread::spawn(move || {
            runtime.block_on(async move {
                loop {
                    let name = tokio::select! {
                        _ = interrupt.recv() => "SIGINT",
                        _ = terminate.recv() => "SIGTERM",
                    };
                    if tx.send(name).is_err() {
                        break;
                    }
                }
            })
        });
    }
    #[cfg(not(unix))]
    std::thread::spawn(move || {
        runtime.block_on(async move {
            while tokio::signal::ctrl_c().await.is_ok() {
                if tx.send("Ctrl-C").is_err() {
                    break;
                }
            }
        })
    });
    Ok(rx)
}

/// Sends SIGTERM to the process `pid` (one this program did not start: `lab stop` uses it on
/// the demo recorded in its state file).
pub fn terminate_pid(pid: u32) -> Result<(), String> {
    #[cfg(unix)]
    {
        let pid = libc::pid_t::try_from(pid).map_err(|_| format!("no such process {pid}"))?;
        // SAFETY: kill(2) with a checked pid; it only sends a signal.
        if unsafe { libc::kill(pid, libc::SIGTERM) } != 0 {
            return Err(format!(
                "cannot signal process {pid}: {}",
                std::io::Error::last_os_error()
            ));
        }
        Ok(())
    }
    #[cfg(not(unix))]
    Err(format!(
        "cannot signal process {pid} on this platform: stop it with Ctrl-C"
    ))
}

/// Whether process `pid` is running. A zombie (exited, not yet reaped by its parent) counts as
/// stopped: it holds no ports and does nothing.
pub fn process_alive(pid: u32) -> bool {
    #[cfg(target_os = "linux")]
    {
        match std::fs::read_to_string(format!("/proc/{pid}/stat")) {
            // The state letter follows the command name in parentheses, which may hold spaces.
            Ok(stat) => stat
                .rsplit_once(')')
                .and_then(|(_, rest)| rest.split_whitespace().next())
                .is_some_and(|state| state != "Z" && state != "X"),
            Err(_) => false,
        }
    }
    #[cfg(all(unix, not(target_os = "linux")))]
    {
        let Ok(pid) = libc::pid_t::try_from(pid) else {
            return false;
        };
        // SAFETY: signal 0 only checks that the process exists and may be signalled.
        unsafe {
            libc::kill(pid, 0) == 0
                || std::io::Error::last_os_error().raw_os_error() == Some(libc::EPERM)
        }
    }
    #[cfg(not(unix))]
    {
        let _ = pid;
        false
    }
}

/// The command line of process `pid`, where the system shows it (Linux `/proc`); `None`
/// elsewhere or when the process is gone. Used to check that a pid from a state file still
/// belongs to the program that wrote it and not to a process that reused the number.
pub fn command_line(pid: u32) -> Option<Vec<String>> {
    let raw = std::fs::read(format!("/proc/{pid}/cmdline")).ok()?;
    Some(
        raw.split(|&b| b == 0)
            .filter(|arg| !arg.is_empty())
            .map(|arg| String::from_utf8_lossy(arg).into_owned())
            .collect(),
    )
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
