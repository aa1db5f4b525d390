//! Your worker: the bad worker's code, for you to fix lesson by lesson.
//!
//! Each section says how its problem shows on the dashboard and in a profile, not how to
//! fix it: finding that is the exercise. Run it beside the others with `lab demo --exercise`
//! (`worker_type="exercise"`), grade it with `lab check`, see your changes with
//! `lab exercise diff`, start a lesson over with `lab exercise reset LESSON`. The path
//! through the lessons and the hints are in docs/EXERCISES.md.
//!
//! Generated from src/bad.rs (fnv1a 90f10251a758bdd7); `lab exercise reset --all` restores it.

// The strategy's methods are given what the fixes need; the bad code leaves some unused.
#![allow(unused_variables)]

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::optimized::Reporter;
use crate::pool::{self, Completed, Context, QueueKind, RunConfig, Slowest, Strategy};
use crate::task::{self, Operation, TaskError, TaskSpec};

/// How often a round's progress reporter logs.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Payload values an audit helper keeps to report a failure with.
const AUDIT_SAMPLE: usize = 64;

/// What a task's audit helper is told: its latency, or why it failed.
type Outcome = Result<Duration, TaskError>;

/// Your worker's strategy.
pub struct Exercise {
    data_size: usize,
    /// Completion signals of the audit helpers, by task id.
    in_flight: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
}

impl Exercise {
    /// Your worker, as it starts: every problem present.
    pub fn new(config: &RunConfig) -> Exercise {
        Exercise {
            data_size: config.data_size,
            in_flight: Mutex::new(HashMap::new()),
        }
    }
}

/// What each worker task keeps between tasks: with every problem on, nothing is used.
#[derive(Default)]
pub struct ExerciseWorker {}

impl Strategy for Exercise {
    type Worker = ExerciseWorker;
    /// Without `leak`, the run's progress reporter.
    type Run = Option<Reporter>;

    // ---- Lesson 6 (backlog) -------------------------------------------------------------------
    // Shows in: `worker_tasks_in_queue` climbing through the burst
    // and draining long after it, `worker_task_queue_delay_seconds` p99 in seconds, memory
    // (`worker_allocated_memory_bytes`) growing with the backlog, no rejections at all.
    fn queue(&self, config: &RunConfig) -> QueueKind {
        QueueKind::Unbounded
    }

    // ---- Per-worker state (capacity) ----------------------------------------------------------
    fn worker(&self, ctx: &Context) -> ExerciseWorker {
        ExerciseWorker::default()
    }

    // ---- Lesson 1a (leak) ---------------------------------------------------------------------
    // Shows in: `worker_active_goroutines` stepping up each round;
    // `go tool pprof -top .../debug/pprof/goroutine` lists `exercise::progress_reporter`.
    fn start_run(&self, ctx: &Arc<Context>) -> Option<Reporter> {
        None
    }

    fn start_round(&self, round: u64, run: &mut Option<Reporter>, ctx: &Arc<Context>) {
        pool::spawn_helper(progress_reporter(round, Arc::clone(ctx)));
    }

    async fn finish_run(&self, run: Option<Reporter>) {}

    // ---- Lesson 5 (contention) ----------------------------------------------------------------
    // Shows in: `worker_lock_wait_seconds{lock="tally"}` (rate of
    // `_sum` over rate of tasks = wait per task, several tasks' worth), throughput flat however
    // many threads with CPU left over (waiters yield), p99 `worker_task_latency_seconds`;
    // `go tool pprof -top .../debug/pprof/mutex` names `exercise::Exercise::run_task` as the waiter.
    async fn run_task(
        &self,
        worker: &mut ExerciseWorker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Completed {
        let mut tally = ctx.tally.lock().await;
        let completed = pool::handle_and_seal(self, worker, task, ctx).await;
        tally.add(task.operation, completed.result());
        completed
    }

    // ---- Lesson 1b (leak) ---------------------------------------------------------------------
    fn handle(
        &self,
        worker: &mut ExerciseWorker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Result<u64, TaskError> {
        let trace_id = format!("{}-{}-{}", ctx.metrics.kind(), task.id, task.operation);
        tracing::trace!(?trace_id, task = task.id, "task started");

        let (done_tx, done_rx) = oneshot::channel();
        self.pending().insert(task.id, done_tx);
        let sample: Vec<i64> = task.values(self.data_size).take(AUDIT_SAMPLE).collect();
        pool::spawn_helper(audit_on_completion(
            task,
            trace_id,
            sample,
            done_rx,
            Arc::clone(ctx),
        ));

        let started = Instant::now();
        let outcome = process_with(task, self.data_size);
        let elapsed = started.elapsed();
        record(ctx, &task, &outcome, elapsed);

        // Shows in: `worker_active_goroutines` climbing with `worker_task_errors_total`, and
        // `worker_allocated_memory_bytes` creeping up; the goroutine profile's largest entry is
        // `exercise::audit_on_completion`.
        let digest = outcome?;
        if let Some(done) = self.pending().remove(&task.id) {
            let _ = done.send(Ok(elapsed));
        }
        Ok(digest)
    }

    // ---- Lesson 4 (blocking) ------------------------------------------------------------------
    // Shows in: tokio's poll-time histogram and long polls, the busy
    // ratio, `worker_task_queue_delay_seconds`, p99 `worker_task_latency_seconds`, Prometheus'
    // `scrape_duration_seconds` for this worker; the CPU profile (`-peek 'task::seal'`) shows
    // `task::seal` called from `pool::work` on a runtime worker thread.
    async fn seal(&self, worker: &mut ExerciseWorker, digest: u64, data_size: usize) -> u64 {
        task::seal(digest, data_size)
    }

    async fn finish_worker(&self, worker: ExerciseWorker, ctx: &Context) {}
}

impl Exercise {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Outcome>>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

async fn progress_reporter(round: u64, ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        tracing::debug!(round, processed = ctx.metrics.processed_total(), "progress");
    }
}

async fn audit_on_completion(
    task: TaskSpec,
    trace_id: String,
    sample: Vec<i64>,
    done: oneshot::Receiver<Outcome>,
    ctx: Arc<Context>,
) {
    match done.await {
        Ok(Ok(elapsed)) => {
            tracing::trace!(?trace_id, ?elapsed, "task audited");
            ctx.audit.record(Slowest {
                task: task.id,
                operation: task.operation,
                elapsed,
            });
        }
        Ok(Err(err)) => tracing::warn!(?trace_id, ?sample, "task failed: {err}"),
        Err(_) => {}
    }
}

// ---- Lesson 3 (churn) -------------------------------------------------------------------------
// Shows in: allocations per task; `metrics::record` in the CPU
// profile.
fn record(ctx: &Context, task: &TaskSpec, outcome: &Result<u64, TaskError>, elapsed: Duration) {
    let metrics = &ctx.metrics;
    let operation = task.operation.to_string();
    metrics
        .task_duration
        .with_label_values(&[&operation])
        .observe(elapsed.as_secs_f64());
    metrics
        .tasks_processed
        .with_label_values(&[&operation])
        .inc();
    if outcome.is_err() {
        metrics
            .task_errors
            .with_label_values(&[&task.operation.to_string()])
            .inc();
    }
}

// ---- Lessons 2 and 3 (capacity, churn) --------------------------------------------------------
// Shows in: `worker_task_allocations_total` (hundreds to thousands per task), the allocation
// rate and purge rate panels, and `go tool pprof -top .../debug/pprof/allocs` naming these
// functions. Functions are `inline(never)` in both workers so profiles name them alike.

/// Computes a task's digest with every problem; must agree with `optimized::process` for every
/// task.
pub fn process(task: TaskSpec, data_size: usize) -> Result<u64, TaskError> {
    process_with(task, data_size)
}

/// Computes a task's digest as this worker does; must agree with `optimized::process` for
/// every task.
pub fn process_with(task: TaskSpec, data_size: usize) -> Result<u64, TaskError> {
    let payload = generate(&task, data_size);
    let context = format!("task {} ({})", task.id, task.operation);
    task::validate(&payload).inspect_err(|err| tracing::debug!("{context}: {err}"))?;
    Ok(match task.operation {
        Operation::Stats => stats(payload.clone()),
        Operation::Sort => sort(&payload),
        Operation::Dedup => dedup(&payload),
        Operation::Render => render(&payload),
    })
}

#[inline(never)]
fn generate(task: &TaskSpec, data_size: usize) -> Vec<i64> {
    let mut payload = Vec::new();
    for value in task.values(data_size) {
        payload.push(value);
    }
    payload
}

#[inline(never)]
fn stats(payload: Vec<i64>) -> u64 {
    let sum = payload.iter().fold(0i64, |acc, &v| acc.wrapping_add(v));
    let mut sorted = payload.clone();
    sorted.sort();
    task::mix(&[
        sum as u64,
        sorted[0] as u64,
        sorted[sorted.len() - 1] as u64,
    ])
}

#[inline(never)]
fn sort(payload: &[i64]) -> u64 {
    let mut sorted = payload.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let checksum = task::weighted_checksum(sorted.clone().into_iter());
    task::mix(&[median as u64, checksum])
}

#[inline(never)]
fn dedup(payload: &[i64]) -> u64 {
    let mut counts: HashMap<String, u32> = HashMap::new();
    for &value in payload {
        *counts
            .entry(format!("{}", task::bucket(value)))
            .or_insert(0) += 1;
    }
    let mut ranked: Vec<(usize, u32)> = counts
        .iter()
        .map(|(bucket, &count)| (bucket.parse().expect("formatted from a usize"), count))
        .collect();
    ranked.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(&b.0)));
    let (top_bucket, top_count) = ranked[0];
    task::mix(&[counts.len() as u64, top_bucket as u64, u64::from(top_count)])
}

#[inline(never)]
fn render(payload: &[i64]) -> u64 {
    let mut text = String::new();
    for value in payload {
        text = text + &value.to_string() + ",";
    }
    let mut hash = task::Fnv1a::default();
    hash.write(text.as_bytes());
    task::mix(&[hash.0, text.len() as u64])
}
