//! Running the two workers side by side: both started with the same flags on free ports,
//! `/metrics` of both sampled on one clock, both stopped with SIGTERM and their exit summaries
//! kept.

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::progress::Progress;
use super::report::{ExitSummaries, ProfileFile};
use super::sample::Sample;
use crate::kind::WorkerKind;
use crate::lab::procs::{self, WorkerProcess};

/// How long a scrape may take. `/metrics` answers in well under a millisecond; a worker that
/// needs seconds is stuck, and the comparison says so instead of waiting.
const SCRAPE_TIMEOUT: Duration = Duration::from_secs(10);

/// The workers run longer than the sampling, and are stopped with SIGTERM when it ends; this
/// margin only matters if `lab` itself dies, so orphans do not run forever.
const WORKER_MARGIN: Duration = Duration::from_secs(600);

/// How long a worker may take to stop after SIGTERM: its summary, and with `--profiles`
/// symbolizing a whole-run CPU profile, take seconds, not minutes.
const STOP_TIMEOUT: Duration = Duration::from_secs(60);

/// What to run and how to watch it.
pub struct Plan<'a> {
    /// How long both workers run before the first sample.
    pub warmup: Duration,
    pub duration: Duration,
    pub interval: Duration,
    /// Flags both workers get (`--rate ...`), without `--duration`.
    pub worker_flags: Vec<String>,
    /// Where worker logs (and, with `profiles`, profiles) go.
    pub out: Option<&'a Path>,
    /// Have each worker write `--cpuprofile` and `--memprofile` into `out`.
    pub profiles: bool,
    pub quiet: bool,
}

/// What a run produced.
pub struct Run {
    pub bad: Vec<Sample>,
    pub optimized: Vec<Sample>,
    pub summaries: ExitSummaries,
    pub profiles: Vec<ProfileFile>,
}

/// Runs both workers for `plan.duration`, sampling every `plan.interval`.
pub fn run(plan: &Plan<'_>) -> Result<Run, String> {
    let mut profiles = Vec::new();
    let mut start = |kind: WorkerKind| -> Result<WorkerProcess, String> {
        let binary = procs::sibling_binary(kind.binary())?;
        let mut flags = plan.worker_flags.clone();
        flags.push("--duration".into());
        let lifetime = plan.warmup + plan.duration + WORKER_MARGIN;
        flags.push(crate::cli::format_duration(lifetime));
        if let (true, Some(dir)) = (plan.profiles, plan.out) {
            for (flag, what) in [("--cpuprofile", "cpu"), ("--memprofile", "heap")] {
                let path = dir.join(format!("{kind}-{what}.pb.gz"));
                flags.push(flag.into());
                flags.push(path.display().to_string());
                profiles.push(ProfileFile {
                    worker: kind.label().into(),
                    kind: what.into(),
                    path: path.display().to_string(),
                });
            }
        }
        let log = plan.out.map(|dir| log_path(dir, kind));
        let any_port = SocketAddr::from(([127, 0, 0, 1], 0));
        WorkerProcess::spawn(&binary, kind, any_port, &flags, log.as_deref())
    };
    let bad = start(WorkerKind::Bad)?;
    let optimized = start(WorkerKind::Optimized)?;

    let mut progress = Progress::new(plan.duration, plan.quiet);
    progress.note(&format!(
        "lab compare: worker-bad on {}, worker-optimized on {}, both with {}; warming up for {}, \
         then sampling every {} for {}",
        bad.addr,
        optimized.addr,
        plan.worker_flags.join(" "),
        humantime::format_duration(plan.warmup),
        humantime::format_duration(plan.interval),
        humantime::format_duration(plan.duration),
    ));
    // One-time costs (each runtime thread sizing its buffers on its first task, the first CPU
    // profile's collector) belong to start-up, not to the per-task figures.
    std::thread::sleep(plan.warmup);
    let (mut bad_samples, mut optimized_samples) = (Vec::new(), Vec::new());
    let started = Instant::now();
    let rounds = (plan.duration.as_secs_f64() / plan.interval.as_secs_f64()).ceil() as u32;
    for round in 0..=rounds {
        // Deadlines from the start, not sleeps after each scrape, so samples do not drift.
        let due = started + (plan.interval * round).min(plan.duration);
        if let Some(wait) = due.checked_duration_since(Instant::now()) {
            std::thread::sleep(wait);
        }
        let b = scrape(&bad, started)?;
        let o = scrape(&optimized, started)?;
        progress.update(started.elapsed(), &b, &o);
        bad_samples.push(b);
        optimized_samples.push(o);
    }
    progress.finish("stopping both workers (SIGTERM) and waiting for their summaries...");

    // Both told at once: the bad worker's shutdown (leaked tasks, a whole-run CPU profile to
    // symbolize) should not delay the optimized one's.
    bad.begin_terminate();
    optimized.begin_terminate();
    let bad_exit = stop(bad);
    let optimized_exit = stop(optimized);
    Ok(Run {
        bad: bad_samples,
        optimized: optimized_samples,
        summaries: ExitSummaries {
            bad: bad_exit?,
            optimized: optimized_exit?,
        },
        profiles,
    })
}

fn scrape(worker: &WorkerProcess, started: Instant) -> Result<Sample, String> {
    let t = started.elapsed().as_secs_f64();
    let failed = |why: String| {
        format!(
            "worker-{} stopped answering /metrics after {t:.1}s: {why}\nits last log lines:\n{}",
            worker.kind,
            tail(&worker.log(), 20)
        )
    };
    let asked = Instant::now();
    let response = worker.get("/metrics", SCRAPE_TIMEOUT).map_err(failed)?;
    // Lesson 4: a blocked runtime thread delays the worker's HTTP server too.
    let answered_in = asked.elapsed().as_secs_f64();
    if response.status != 200 {
        return Err(failed(format!("status {}", response.status)));
    }
    let mut sample = Sample::parse(t, &response.text()).map_err(failed)?;
    sample.lessons.scrape_seconds = Some(answered_in);
    Ok(sample)
}

/// Waits for a worker told to stop; returns the summary it printed. A worker that printed its
/// summary but then failed to exit is killed and its summary kept (with a warning): the
/// comparison has what it needs.
fn stop(worker: WorkerProcess) -> Result<String, String> {
    let kind = worker.kind;
    let log = worker.log();
    let stopped = worker.wait_within(STOP_TIMEOUT)?;
    let has_summary = stopped.output.contains("summary");
    if stopped.killed && has_summary {
        eprintln!(
            "warning: worker-{kind} printed its summary but did not exit within {}s; killed it",
            STOP_TIMEOUT.as_secs()
        );
        return Ok(stopped.output);
    }
    if stopped.killed || !stopped.status.success() || !has_summary {
        let how = if stopped.killed {
            format!(
                "did not stop within {}s and was killed",
                STOP_TIMEOUT.as_secs()
            )
        } else {
            format!("exited with {}", stopped.status)
        };
        return Err(format!(
            "worker-{kind} {how} when stopped:\n{}\nits last log lines:\n{}",
            stopped.output,
            tail(&log, 20)
        ));
    }
    Ok(stopped.output)
}

/// The last `n` lines of `text`.
fn tail(text: &str, n: usize) -> String {
    let lines: Vec<&str> = text.lines().collect();
    lines[lines.len().saturating_sub(n)..].join("\n")
}

/// Where a worker's log goes under `--out`.
pub fn log_path(dir: &Path, kind: WorkerKind) -> PathBuf {
    dir.join(format!("{kind}.log"))
}
