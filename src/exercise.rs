//! Your worker: the bad worker's code, for you to fix lesson by lesson.
//!
//! Each section says how its problem shows on the dashboard and in a profile, not how to
//! fix it: finding that is the exercise. Run it beside the others with `lab demo --exercise`
//! (`worker_type="exercise"`), grade it with `lab check`, see your changes with
//! `lab exercise diff`, start a lesson over with `lab exercise reset LESSON`. The path
//! through the lessons and the hints are in docs/EXERCISES.md.
//!
//! Generated from src/bad.rs (fnv1a 0946bfcdac1e5640); `lab exercise reset --all` restores it.

use std::collections::HashMap;
use std::future::Future;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::optimized::{self, Handles, Reporter, WIDEST_VALUE};
use crate::pool::{self, Context, QueueKind, RunConfig, Slowest, Strategy, Tally};
use crate::problems::{Problem, Problems};
use crate::task::{self, BUCKETS, Operation, TaskError, TaskSpec};

/// How often a round's progress reporter logs.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Payload values an audit helper keeps to report a failure with.
const AUDIT_SAMPLE: usize = 64;

/// What a task's audit helper is told: its latency, or why it failed.
type Outcome = Result<Duration, TaskError>;

/// Your worker's strategy.
pub struct Exercise {
    data_size: usize,
    problems: Problems,
    /// Completion signals of the audit helpers, by task id.
    in_flight: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
}

impl Exercise {
    /// The bad worker with every problem.
    pub fn new(config: &RunConfig) -> Exercise {
        Exercise::with_problems(config, Problems::ALL)
    }

    /// The bad worker with only `problems`; the other sections run the fixed code.
    pub fn with_problems(config: &RunConfig, problems: Problems) -> Exercise {
        Exercise {
            data_size: config.data_size,
            problems,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    fn has(&self, problem: Problem) -> bool {
        self.problems.has(problem)
    }
}

/// What each worker task keeps between tasks: with every problem on, nothing is used.
pub struct BadWorker {
    /// Metric handles resolved once: only without `churn`.
    handles: Option<Handles>,
    /// The slowest task seen, merged when the worker stops: only without `leak` (with it, the
    /// audit helpers record it).
    slowest: Option<Slowest>,
    /// This worker's own tally: only without `contention`.
    tally: Tally,
}

impl Strategy for Exercise {
    type Worker = BadWorker;
    /// Without `leak`, the round's reporter and its stop token.
    type Round = Option<Reporter>;

    // ---- Lesson 6 (backlog) -------------------------------------------------------------------
    // Shows in: `worker_tasks_in_queue` climbing through the burst
    // and draining long after it, `worker_task_queue_delay_seconds` p99 in seconds, memory
    // (`worker_allocated_memory_bytes`) growing with the backlog, no rejections at all.
    fn queue(&self, config: &RunConfig) -> QueueKind {
        if self.has(Problem::Backlog) {
            QueueKind::Unbounded
        } else {
            optimized::queue(config)
        }
    }

    // ---- Per-worker state (capacity) ----------------------------------------------------------
    fn worker(&self, ctx: &Context) -> BadWorker {
        if !self.has(Problem::Capacity) && !self.has(Problem::Churn) {
            optimized::reserve_scratch(self.data_size);
        }
        BadWorker {
            handles: (!self.has(Problem::Churn)).then(|| Handles::resolve(&ctx.metrics)),
            slowest: None,
            tally: Tally::default(),
        }
    }

    // ---- Lesson 1a (leak) ---------------------------------------------------------------------
    // Shows in: `worker_active_goroutines` stepping up each round;
    // `go tool pprof -top .../debug/pprof/goroutine` lists `exercise::progress_reporter`.
    fn start_round(&self, round: u64, ctx: &Arc<Context>) -> Option<Reporter> {
        if !self.has(Problem::Leak) {
            return Some(optimized::start_reporter(round, ctx));
        }
        pool::spawn_helper(progress_reporter(round, Arc::clone(ctx)));
        None
    }

    async fn finish_round(&self, round: Option<Reporter>) {
        if let Some(reporter) = round {
            optimized::stop_reporter(reporter).await;
        }
    }

    // ---- Lesson 1b (leak) ---------------------------------------------------------------------
    fn handle(
        &self,
        worker: &mut BadWorker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Result<u64, TaskError> {
        let trace_id = self
            .has(Problem::Churn)
            .then(|| format!("{}-{}-{}", ctx.metrics.kind(), task.id, task.operation));
        tracing::trace!(?trace_id, task = task.id, "task started");

        if self.has(Problem::Leak) {
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
        }

        let started = Instant::now();
        // ---- Lesson 5 (contention) ------------------------------------------------------------
        // Shows in:
        // `worker_lock_wait_seconds{lock="tally"}` (rate of `_sum` over rate of tasks = wait
        // per task), throughput flat however many threads, p99 task latency;
        // `go tool pprof -top .../debug/pprof/mutex` names `exercise::Exercise::handle` as the waiter.
        let outcome = if self.has(Problem::Contention) {
            let mut tally = ctx.tally.lock();
            let outcome = process_with(task, self.data_size, self.problems);
            tally.add(task.operation, &outcome);
            outcome
        } else {
            let outcome = process_with(task, self.data_size, self.problems);
            worker.tally.add(task.operation, &outcome);
            outcome
        };
        let elapsed = started.elapsed();
        match &worker.handles {
            Some(handles) => handles.record(task.operation, &outcome, elapsed),
            None => record(ctx, &task, &outcome, elapsed),
        }

        if !self.has(Problem::Leak) {
            worker.slowest = Slowest::max(
                worker.slowest,
                Some(Slowest {
                    task: task.id,
                    operation: task.operation,
                    elapsed,
                }),
            );
            return outcome;
        }
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
    fn seal(&self, digest: u64, data_size: usize) -> impl Future<Output = u64> + Send {
        let blocking = self.has(Problem::Blocking);
        async move {
            if blocking {
                task::seal(digest, data_size)
            } else {
                optimized::seal_off_runtime(digest, data_size).await
            }
        }
    }

    fn finish_worker(&self, worker: BadWorker, ctx: &Context) {
        if let Some(slowest) = worker.slowest {
            ctx.audit.record(slowest);
        }
        if !self.has(Problem::Contention) {
            ctx.tally.lock().merge(&worker.tally);
        }
    }
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
    trace_id: Option<String>,
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
    process_with(task, data_size, Problems::ALL)
}

/// Computes a task's digest with the `capacity` and `churn` problems `problems` has (the
/// others do not touch this part); must agree with `optimized::process` for every task and set.
pub fn process_with(
    task: TaskSpec,
    data_size: usize,
    problems: Problems,
) -> Result<u64, TaskError> {
    let capacity = problems.has(Problem::Capacity);
    let churn = problems.has(Problem::Churn);
    if !capacity && !churn {
        return optimized::process_on_this_thread(&task, data_size);
    }
    let payload = generate(&task, data_size, capacity);
    if churn {
        let context = format!("task {} ({})", task.id, task.operation);
        task::validate(&payload).inspect_err(|err| tracing::debug!("{context}: {err}"))?;
    } else {
        task::validate(&payload)?;
    }
    Ok(match task.operation {
        Operation::Stats if churn => stats(payload.clone()),
        Operation::Stats => optimized::stats(&payload),
        Operation::Sort if churn => sort(&payload),
        Operation::Sort => optimized::sort(&payload, &mut Vec::new()),
        Operation::Dedup => dedup(&payload, capacity, churn),
        Operation::Render => render(&payload, capacity, churn),
    })
}

#[inline(never)]
fn generate(task: &TaskSpec, data_size: usize, capacity_problem: bool) -> Vec<i64> {
    if !capacity_problem {
        return task.values(data_size).collect();
    }
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
fn dedup(payload: &[i64], capacity_problem: bool, churn_problem: bool) -> u64 {
    if !churn_problem {
        let mut counts = if capacity_problem {
            HashMap::new()
        } else {
            HashMap::with_capacity(BUCKETS)
        };
        return optimized::dedup(payload, &mut counts);
    }
    let mut counts: HashMap<String, u32> = if capacity_problem {
        HashMap::new()
    } else {
        HashMap::with_capacity(BUCKETS)
    };
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
fn render(payload: &[i64], capacity_problem: bool, churn_problem: bool) -> u64 {
    let mut text = if capacity_problem {
        String::new()
    } else {
        String::with_capacity(payload.len() * WIDEST_VALUE)
    };
    if !churn_problem {
        return optimized::render(payload, &mut text);
    }
    for value in payload {
        text = text + &value.to_string() + ",";
    }
    let mut hash = task::Fnv1a::default();
    hash.write(text.as_bytes());
    task::mix(&[hash.0, text.len() as u64])
}
