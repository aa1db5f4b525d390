//! `lab stop`, `lab logs`, `lab grafana` and `lab clean`: acting on a demo from another
//! terminal, through what it keeps in its data dir (see [`super::layout`]).
//!
//! - `stop` sends SIGTERM to the `lab demo` process, which stops its services and prints the
//!   workers' summaries in its own terminal, and waits until it has finished.
//! - `logs` prints the end of each service's log file, prefixed with the service's name when it
//!   shows several, and with `--follow` keeps printing new lines until the demo stops.
//! - `grafana` opens the running demo's dashboard with `xdg-open` (`open` on macOS), or prints
//!   its URL when there is no such program or `--print` is given.
//! - `clean` deletes the data dir, but only one `lab demo` made, and not while a demo uses it
//!   unless `--force` says to stop that demo first.

use std::fs::File;
use std::io::{Read, Seek, SeekFrom, Write};
use std::path::Path;
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant};

use super::layout::{DataDir, Service};
use super::{CleanArgs, GrafanaArgs, LogsArgs, StopArgs};
use crate::lab::procs;

pub fn stop(args: StopArgs) -> Result<ExitCode, String> {
    let data = DataDir::resolve(&args.data.data_dir)?;
    let pid = match data.running_demo() {
        Ok(Some(state)) => state.pid,
        // Its state file is missing or damaged, but the demo holds its lock: found by that.
        Err(why) => match data.lock_holder() {
            Some(pid) => {
                println!("lab stop: {why}");
                pid
            }
            None => return Err(why),
        },
        Ok(None) => return Ok(nothing_to_stop(&data)),
    };
    stop_demo(&data, pid, args.timeout)?;
    println!("lab stop: stopped the demo (pid {pid})");
    Ok(ExitCode::SUCCESS)
}

/// No demo runs with this data dir (no live state, no lock held). If the lab's services
/// answer on the guide's ports anyway, something else started them (a demo with another
/// --data-dir, `nix run .#demo`, docker compose): say so, and that this command cannot know
/// which, rather than "nothing to stop".
fn nothing_to_stop(data: &DataDir) -> ExitCode {
    let answering = services_on_default_ports();
    if answering.is_empty() {
        println!(
            "lab stop: no `lab demo` is running with {} (no state file, its lock is free), and \
             nothing of the lab answers on the default ports; nothing to stop",
            data.root().display()
        );
        return ExitCode::SUCCESS;
    }
    eprintln!(
        "lab stop: no `lab demo` is running with {} (no state file, its lock is free), but the \
         lab's services answer on the default ports:\n{}\n\
         They were started some other way: a `lab demo` with another --data-dir (`lab stop \
         --data-dir DIR`), `nix run .#demo` or docker compose. This command cannot know which, \
         so it stops nothing: stop them where they were started (Ctrl-C in that terminal).",
        data.root().display(),
        answering
            .iter()
            .map(|s| format!("  {s}"))
            .collect::<Vec<_>>()
            .join("\n")
    );
    ExitCode::FAILURE
}

/// Which of the lab's services answer on the guide's ports: a worker by the `worker_type` of
/// its `/metrics`, Prometheus by `/-/ready`.
fn services_on_default_ports() -> Vec<String> {
    let ports = super::config::Ports::default();
    let timeout = Duration::from_secs(2);
    let mut found = Vec::new();
    for port in [ports.bad, ports.optimized] {
        let url = format!("http://127.0.0.1:{port}");
        if let Ok(r) = crate::client::get(&format!("{url}/metrics"), timeout)
            && r.status == 200
            && let Some(kind) = ["bad", "optimized"]
                .into_iter()
                .find(|k| r.text().contains(&format!("worker_type=\"{k}\"")))
        {
            found.push(format!("worker-{kind} at {url}"));
        }
    }
    let url = format!("http://127.0.0.1:{}", ports.prometheus);
    if crate::client::get(&format!("{url}/-/ready"), timeout).is_ok_and(|r| r.status == 200) {
        found.push(format!("Prometheus at {url}"));
    }
    found
}

/// SIGTERM to the demo, then wait until it has exited or, as it is still a zombie until its
/// parent reaps it, until it has given up both its state file (its last act after stopping
/// every service) and its lock.
fn stop_demo(data: &DataDir, pid: u32, timeout: Duration) -> Result<(), String> {
    println!("lab stop: stopping the demo (pid {pid}) and its services");
    procs::terminate_pid(pid)?;
    let deadline = Instant::now() + timeout;
    let holds = || data.state_file().exists() || data.lock_holder() == Some(pid);
    while holds() && procs::process_alive(pid) {
        if Instant::now() >= deadline {
            return Err(format!(
                "the demo (pid {pid}) is still running after {}; see `lab logs` and stop it with \
                 `kill -9 {pid}` (its services then get SIGTERM from the system)",
                humantime::format_duration(timeout),
            ));
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Ok(())
}

pub fn logs(args: LogsArgs) -> Result<ExitCode, String> {
    let data = DataDir::resolve(&args.data.data_dir)?;
    let logs_dir = data.logs_dir();
    if !logs_dir.is_dir() {
        return Err(format!(
            "no logs in {}: start the demo with `lab demo{}`",
            logs_dir.display(),
            data.flag()
        ));
    }
    let services: Vec<Service> = match args.service {
        Some(service) => vec![service],
        None => Service::ALL.to_vec(),
    };
    let width = services.iter().map(|s| s.name().len()).max().unwrap_or(0);
    let prefix = |service: Service| {
        if args.service.is_some() {
            String::new()
        } else {
            format!("{:<width$} | ", service.name())
        }
    };
    let mut out = std::io::stdout().lock();
    let mut offsets: Vec<(Service, u64)> = Vec::new();
    for &service in &services {
        let path = data.log_file(service);
        if !path.exists() {
            if args.service.is_some() {
                return Err(format!(
                    "no log for {} in {}: it has not run with this data dir",
                    service.name(),
                    logs_dir.display()
                ));
            }
            offsets.push((service, 0));
            continue;
        }
        let (lines, end) = last_lines(&path, args.lines)?;
        for line in lines {
            if let Err(e) = writeln!(out, "{}{line}", prefix(service)) {
                return output_error(e);
            }
        }
        offsets.push((service, end));
    }
    if let Err(e) = out.flush() {
        return output_error(e);
    }
    if !args.follow {
        return Ok(ExitCode::SUCCESS);
    }
    // Follow: poll the files for new bytes, print whole lines, stop once the demo has gone.
    let mut partial: Vec<String> = vec![String::new(); offsets.len()];
    loop {
        let running = data.running_demo()?.is_some();
        for (i, (service, offset)) in offsets.iter_mut().enumerate() {
            let path = data.log_file(*service);
            let new = read_from(&path, offset)?;
            if new.is_empty() {
                continue;
            }
            partial[i].push_str(&new);
            while let Some(end) = partial[i].find('\n') {
                let line: String = partial[i].drain(..=end).collect();
                if let Err(e) = write!(out, "{}{line}", prefix(*service)) {
                    return output_error(e);
                }
            }
        }
        if let Err(e) = out.flush() {
            return output_error(e);
        }
        if !running {
            return Ok(ExitCode::SUCCESS);
        }
        std::thread::sleep(Duration::from_millis(250));
    }
}

/// `lab logs | head` closes the pipe early: that is the reader being done, not an error.
fn output_error(error: std::io::Error) -> Result<ExitCode, String> {
    if error.kind() == std::io::ErrorKind::BrokenPipe {
        Ok(ExitCode::SUCCESS)
    } else {
        Err(format!("writing the logs: {error}"))
    }
}

/// What was appended to `path` since `offset`, advancing it. A file that shrank was started
/// anew (the demo truncates logs at start): read it from the beginning.
fn read_from(path: &Path, offset: &mut u64) -> Result<String, String> {
    let Ok(mut file) = File::open(path) else {
        return Ok(String::new());
    };
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    if len < *offset {
        *offset = 0;
    }
    file.seek(SeekFrom::Start(*offset))
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    let mut bytes = Vec::new();
    file.read_to_end(&mut bytes)
        .map_err(|e| format!("reading {}: {e}", path.display()))?;
    *offset += bytes.len() as u64;
    Ok(String::from_utf8_lossy(&bytes).into_owned())
}

/// The last `n` lines of a file (all when `n` is 0) and its length, read from the end in
/// blocks so that a 48-hour log costs no more than its tail.
pub(super) fn last_lines(path: &Path, n: u64) -> Result<(Vec<String>, u64), String> {
    let mut file = File::open(path).map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    let len = file.metadata().map_err(|e| e.to_string())?.len();
    const BLOCK: u64 = 64 * 1024;
    let mut start = len;
    let mut tail: Vec<u8> = Vec::new();
    loop {
        // n + 1 newlines: the last line ends with one, and the line before the first wanted.
        let newlines = tail.iter().filter(|&&b| b == b'\n').count() as u64;
        if start == 0 || (n > 0 && newlines > n) {
            break;
        }
        let from = start.saturating_sub(BLOCK);
        let mut block = vec![0; (start - from) as usize];
        file.seek(SeekFrom::Start(from))
            .and_then(|_| file.read_exact(&mut block))
            .map_err(|e| format!("reading {}: {e}", path.display()))?;
        block.extend_from_slice(&tail);
        tail = block;
        start = from;
    }
    let text = String::from_utf8_lossy(&tail);
    let lines: Vec<String> = text.lines().map(str::to_owned).collect();
    let skip = if n == 0 {
        0
    } else {
        lines.len().saturating_sub(n as usize)
    };
    Ok((lines[skip..].to_vec(), len))
}

pub fn grafana(args: GrafanaArgs) -> Result<ExitCode, String> {
    let data = DataDir::resolve(&args.data.data_dir)?;
    let again = data.flag();
    let Some(state) = data.running_demo()? else {
        return Err(format!(
            "no `lab demo` is running with {}: start one with `lab demo{again}`",
            data.root().display()
        ));
    };
    if !state.has(Service::Grafana) {
        return Err(format!(
            "the running demo has no Grafana: it was started with --no-grafana, or found no \
             grafana-server (its terminal said which; install Grafana from \
             https://grafana.com/grafana/download or name it with `lab demo --grafana-bin PATH`). \
             Without it: {}",
            super::demo::prometheus_pages(&state.ports.prometheus_url())
        ));
    }
    let url = state.ports.dashboard_url();
    if !args.print
        && let Some(opener) = opener()
    {
        let opened = Command::new(&opener)
            .arg(&url)
            .stdin(Stdio::null())
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .status();
        match opened {
            Ok(status) if status.success() => {
                println!("lab grafana: opened {url} (user admin, password admin)");
                return Ok(ExitCode::SUCCESS);
            }
            Ok(status) => eprintln!("lab grafana: {} {url} failed ({status})", opener.display()),
            Err(e) => eprintln!("lab grafana: cannot run {}: {e}", opener.display()),
        }
    }
    println!("{url}");
    Ok(ExitCode::SUCCESS)
}

/// The program that opens a URL in the desktop's browser.
fn opener() -> Option<std::path::PathBuf> {
    let name = if cfg!(target_os = "macos") {
        "open"
    } else {
        "xdg-open"
    };
    procs::find_on_path(name)
}

pub fn clean(args: CleanArgs) -> Result<ExitCode, String> {
    let data = DataDir::resolve(&args.data.data_dir)?;
    let root = data.root();
    // Deleting a link deletes the link, not the data: say where the data is instead of
    // reporting it deleted.
    if root.is_symlink() {
        let target = std::fs::canonicalize(root).map_or_else(
            |e| format!("a target that cannot be resolved ({e})"),
            |t| t.display().to_string(),
        );
        return Err(format!(
            "{} is a symbolic link to {target}: not deleting anything. To delete the demo's \
             data, run `lab clean --data-dir {target}`; the link itself is yours to remove",
            root.display()
        ));
    }
    if !root.exists() {
        println!(
            "lab clean: {} does not exist; nothing to clean",
            root.display()
        );
        return Ok(ExitCode::SUCCESS);
    }
    if !data.is_labs() {
        return Err(format!(
            "{} was not made by `lab demo` (no .lab-data-dir file in it): not deleting it",
            root.display()
        ));
    }
    if let Some(state) = data.running_demo()? {
        if !args.force {
            return Err(format!(
                "a `lab demo` (pid {}) is running with {}: stop it first with `lab stop{again}`, \
                 or run `lab clean --force{again}` to stop it and delete everything",
                state.pid,
                root.display(),
                again = data.flag()
            ));
        }
        stop_demo(&data, state.pid, Duration::from_secs(30))?;
    }
    std::fs::remove_dir_all(root).map_err(|e| format!("cannot delete {}: {e}", root.display()))?;
    println!(
        "lab clean: deleted {} (Prometheus' samples, Grafana's database, logs and configs)",
        root.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn last_lines_reads_only_the_tail_and_handles_edges() {
        let path = std::env::temp_dir().join(format!("lab-last-lines-{}", std::process::id()));
        let text: String = (0..20_000).map(|i| format!("line {i}\n")).collect();
        std::fs::write(&path, &text).unwrap();
        let (lines, len) = last_lines(&path, 3).unwrap();
        assert_eq!(lines, ["line 19997", "line 19998", "line 19999"]);
        assert_eq!(len, text.len() as u64);
        assert_eq!(last_lines(&path, 0).unwrap().0.len(), 20_000);
        assert_eq!(last_lines(&path, 50_000).unwrap().0.len(), 20_000);
        std::fs::write(&path, "no newline at the end").unwrap();
        assert_eq!(last_lines(&path, 1).unwrap().0, ["no newline at the end"]);
        std::fs::write(&path, "").unwrap();
        assert!(last_lines(&path, 5).unwrap().0.is_empty());
        std::fs::remove_file(&path).unwrap();
    }
}
