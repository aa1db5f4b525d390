//! Runs the workers side by side on the same workload and reads each one's ledger line.
//!
//! The workers listen on free loopback ports (port 0) and nobody connects to them: no HTTP
//! connection task can blur the count of tasks a run leaves alive.

use std::fs::{self, File};
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use crate::kind::WorkerKind;
use crate::lab::procs;
use crate::worker::{LEDGER_PREFIX, LedgerReport};

use super::workload::Workload;

/// How long one worker may take for the workload: far beyond what any honest worker needs even
/// in a debug build on a loaded machine.
const RUN_LIMIT: Duration = Duration::from_secs(300);

/// One worker's run.
#[derive(Debug, Clone, PartialEq)]
pub struct Run {
    pub ledger: LedgerReport,
    /// From start to exit, process start-up included.
    pub elapsed: Duration,
}

/// What a worker did instead of finishing its workload with a ledger.
pub type RunError = String;

/// Starts every worker in `kinds` at once, from `bin_dir`, and waits for all of them.
pub fn run_all(
    bin_dir: &Path,
    kinds: &[WorkerKind],
    workload: &Workload,
) -> Result<Vec<Result<Run, RunError>>, String> {
    let logs = tempfile::tempdir().map_err(|e| format!("cannot create a temp dir: {e}"))?;
    let mut started = Vec::new();
    for &kind in kinds {
        let binary = bin_dir.join(kind.binary());
        let stdout = logs.path().join(format!("{kind}.out"));
        let stderr = logs.path().join(format!("{kind}.err"));
        let file = |path: &Path| {
            File::create(path).map_err(|e| format!("cannot create {}: {e}", path.display()))
        };
        let mut command = Command::new(&binary);
        command
            .args(workload.args())
            .arg("--listen=127.0.0.1:0")
            .stdin(Stdio::null())
            .stdout(file(&stdout)?)
            .stderr(file(&stderr)?);
        // The learner's environment must not change the workload.
        for (name, _) in std::env::vars_os() {
            if name.to_string_lossy().starts_with("LAB_") {
                command.env_remove(name);
            }
        }
        procs::isolate(&mut command);
        let child = command
            .spawn()
            .map_err(|e| format!("cannot start {}: {e}", binary.display()))?;
        started.push((kind, child, Instant::now(), stdout, stderr));
    }
    Ok(started
        .into_iter()
        .map(|(kind, child, at, stdout, stderr)| finish(kind, child, at, &stdout, &stderr))
        .collect())
}

fn finish(
    kind: WorkerKind,
    mut child: Child,
    started: Instant,
    stdout: &Path,
    stderr: &Path,
) -> Result<Run, RunError> {
    let binary = kind.binary();
    let left = RUN_LIMIT.saturating_sub(started.elapsed());
    let status = match procs::wait_timeout(&mut child, left)? {
        Some(status) => status,
        None => {
            let _ = procs::stop_child(&mut child, Duration::from_secs(5));
            return Err(format!(
                "{binary} did not finish its tasks within {}s (does it hang or drop tasks?)",
                RUN_LIMIT.as_secs()
            ));
        }
    };
    let elapsed = started.elapsed();
    let out = fs::read_to_string(stdout).unwrap_or_default();
    let err = fs::read_to_string(stderr).unwrap_or_default();
    if !status.success() {
        return Err(format!(
            "{binary} failed ({status}); its last output:\n{}",
            tail(&format!("{out}{err}"), 15)
        ));
    }
    let Some(line) = out
        .lines()
        .rev()
        .find_map(|l| l.strip_prefix(LEDGER_PREFIX))
    else {
        return Err(format!(
            "{binary} printed no ledger line (`{}...`) at exit",
            LEDGER_PREFIX.trim_end()
        ));
    };
    let ledger = serde_json::from_str(line)
        .map_err(|e| format!("{binary}'s ledger line is not valid ({e}): {line}"))?;
    Ok(Run { ledger, elapsed })
}

fn tail(text: &str, lines: usize) -> String {
    let all: Vec<&str> = text.lines().collect();
    all[all.len().saturating_sub(lines)..].join("\n")
}
