//! The bad worker: the same workload as `optimized.rs`, written the way it often is at first.
//!
//! Each section names a problem, the metric that shows it on the dashboard and the profile that
//! points at it. `optimized.rs` has the same sections in the same order with the fix, so the two
//! files can be read side by side (`diff src/bad.rs src/optimized.rs`).
//!
//! 1. Task leaks (`leak`): helper tasks with no way to exit.
//! 2. Capacity mistakes (`capacity`): collections that start empty and grow, and are thrown
//!    away per task.
//! 3. Excess allocation in hot paths (`churn`): clones, `to_string`/`format!`, intermediate
//!    collections, metric label lookups per task.
//! 4. Blocking the runtime (`blocking`): a long CPU-bound step run inside the worker task, on a
//!    runtime thread.
//! 5. Lock contention (`contention`): the run's tally behind one lock that every worker holds
//!    for the whole of every task, seal included.
//! 6. Overload without backpressure (`backlog`): an unbounded queue.
//!
//! `--problems` (default `all`) says which of these this worker has; a section whose problem is
//! off runs the fixed code of `optimized.rs` instead, so a teacher can show one lesson at a time.
//! Every switch is written one way, so that `lab exercise` can keep only the bad code for the
//! learner: `if self.has(Problem::X) { bad } else { fixed }` (or `problems.has` in a free
//! function), and `if !self.has(Problem::X) { fixed }` for code that runs only without problem X.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use tokio::sync::oneshot;

use crate::optimized::{self, Handles, Reporter, WIDEST_VALUE};
use crate::pool::{self, Completed, Context, QueueKind, RunConfig, Slowest, Strategy, Tally};
use crate::problems::{Problem, Problems};
use crate::seal_threads;
use crate::task::{self, BUCKETS, Operation, TaskError, TaskSpec};

/// How often a round's progress reporter logs.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// Payload values an audit helper keeps to report a failure with.
const AUDIT_SAMPLE: usize = 64;

/// What a task's audit helper is told: its latency, or why it failed.
type Outcome = Result<Duration, TaskError>;

/// The bad worker's strategy.
pub struct Bad {
    data_size: usize,
    /// Which problems this worker has (`--problems`).
    problems: Problems,
    /// Completion signals of the audit helpers, by task id.
    in_flight: Mutex<HashMap<u64, oneshot::Sender<Outcome>>>,
}

impl Bad {
    /// The bad worker with every problem.
    pub fn new(config: &RunConfig) -> Bad {
        Bad {
            data_size: config.data_size,
            problems: Problems::ALL,
            in_flight: Mutex::new(HashMap::new()),
        }
    }

    /// The bad worker with only `problems`; the other sections run the fixed code.
    pub fn with_problems(config: &RunConfig, problems: Problems) -> Bad {
        Bad {
            problems,
            ..Bad::new(config)
        }
    }

    fn has(&self, problem: Problem) -> bool {
        self.problems.has(problem)
    }
}

/// What each worker task keeps between tasks: with every problem on, nothing is used.
#[derive(Default)]
pub struct BadWorker {
    /// Metric handles resolved once: only without `churn`.
    handles: Option<Handles>,
    /// The slowest task seen, merged when the worker stops: only without `leak` (with it, the
    /// audit helpers record it).
    slowest: Option<Slowest>,
    /// This worker's own tally: only without `contention`.
    tally: Tally,
    /// Where this worker's seals come back: only without `blocking`.
    seal: seal_threads::Slot,
}

impl Strategy for Bad {
    type Worker = BadWorker;
    /// Without `leak`, the run's progress reporter.
    type Run = Option<Reporter>;

    // ---- Lesson 6: the queue ------------------------------------------------------------------
    // An unbounded channel never makes the producer wait. While workers keep up nothing shows;
    // when a burst takes the offered load above what they can handle, the backlog grows without
    // limit and so does the wait. Shows in: `worker_tasks_in_queue` climbing through the burst
    // and draining long after it, `worker_task_queue_delay_seconds` p99 in seconds, memory
    // (`worker_allocated_memory_bytes`) growing with the backlog, no rejections at all.
    fn queue(&self, config: &RunConfig) -> QueueKind {
        if self.has(Problem::Backlog) {
            QueueKind::Unbounded
        } else {
            optimized::queue(config)
        }
    }

    // ---- Per-worker state ------------------------------------------------------------------
    // Lesson 2: none. Every task allocates its buffers afresh and throws them away.
    fn worker(&self, ctx: &Context) -> BadWorker {
        if !self.has(Problem::Capacity) && !self.has(Problem::Churn) {
            optimized::reserve_scratch(self.data_size);
        }
        if self.has(Problem::Churn) {
            BadWorker::default()
        } else {
            BadWorker {
                handles: Some(Handles::resolve(&ctx.metrics)),
                ..BadWorker::default()
            }
        }
    }

    // ---- Lesson 1a: a helper per round that never exits -------------------------------------
    // Every round starts a progress reporter; nothing stops it, and its JoinHandle is dropped
    // (detached), so nobody could. One more live task per round, forever.
    // Shows in: `worker_active_goroutines` stepping up each round;
    // `go tool pprof -top .../debug/pprof/goroutine` lists `bad::progress_reporter`.
    fn start_run(&self, ctx: &Arc<Context>) -> Option<Reporter> {
        if !self.has(Problem::Leak) {
            return Some(Reporter::start(ctx));
        }
        None
    }

    fn start_round(&self, round: u64, run: &mut Option<Reporter>, ctx: &Arc<Context>) {
        if !self.has(Problem::Leak) {
            if let Some(reporter) = run {
                reporter.round(round);
            }
            return;
        }
        pool::spawn_helper(progress_reporter(round, Arc::clone(ctx)));
    }

    async fn finish_run(&self, run: Option<Reporter>) {
        if !self.has(Problem::Leak)
            && let Some(reporter) = run
        {
            reporter.stop().await;
        }
    }

    // ---- Lesson 5: one lock held across the whole task ----------------------------------------
    // The run's tally is shared by every worker task, and the natural first version takes its
    // lock before the work and keeps it until the result is in. The work awaits (the seal), so
    // std's guard will not compile here and tokio's mutex is the one reached for: waiting
    // workers yield their threads, but only one task is worked on at a time, however many
    // threads the runtime has. Shows in: `worker_lock_wait_seconds{lock="tally"}` (rate of
    // `_sum` over rate of tasks = wait per task, several tasks' worth), throughput flat however
    // many threads with CPU left over (waiters yield), p99 `worker_task_latency_seconds`;
    // `go tool pprof -top .../debug/pprof/mutex` names `bad::Bad::run_task` as the waiter.
    async fn run_task(
        &self,
        worker: &mut BadWorker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Completed {
        if self.has(Problem::Contention) {
            let mut tally = ctx.tally.lock().await;
            let completed = pool::handle_and_seal(self, worker, task, ctx).await;
            tally.add(task.operation, completed.result());
            completed
        } else {
            let completed = pool::handle_and_seal(self, worker, task, ctx).await;
            worker.tally.add(task.operation, completed.result());
            completed
        }
    }

    // ---- Lesson 1b: a helper per task, told only about successes -------------------------
    fn handle(
        &self,
        worker: &mut BadWorker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Result<u64, TaskError> {
        // Lesson 3: a string built for every task, used only if tracing is on.
        let trace_id = if self.has(Problem::Churn) {
            format!("{}-{}-{}", ctx.metrics.kind(), task.id, task.operation)
        } else {
            String::new()
        };
        tracing::trace!(?trace_id, task = task.id, "task started");

        // An audit helper waits for the task's outcome, with the first values of its payload to
        // report a failure with. Its sender is parked in `in_flight` until the task is done...
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
        let outcome = process_with(task, self.data_size, self.problems);
        let elapsed = started.elapsed();
        if self.has(Problem::Churn) {
            record(ctx, &task, &outcome, elapsed);
        } else if let Some(handles) = &worker.handles {
            handles.record(task.operation, &outcome, elapsed);
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
        // ...but a failed task returns here: its sender stays in `in_flight`, neither sent nor
        // dropped, for as long as the worker lives, and its helper waits all that time, holding
        // its sample. About one task in a hundred fails.
        // Shows in: `worker_active_goroutines` climbing with `worker_task_errors_total`, and
        // `worker_allocated_memory_bytes` creeping up; the goroutine profile's largest entry is
        // `bad::audit_on_completion`.
        let digest = outcome?;
        if let Some(done) = self.pending().remove(&task.id) {
            let _ = done.send(Ok(elapsed));
        }
        Ok(digest)
    }

    // ---- Lesson 4: a long CPU-bound step on a runtime thread ---------------------------------
    // The seal is called right here, inside the worker task's poll: for its milliseconds the
    // runtime thread runs nothing else. Every task queued on that thread waits, and when as
    // many workers seal at once as there are runtime threads, so does everything else, the
    // HTTP server included. Shows in: tokio's poll-time histogram and long polls, the busy
    // ratio, `worker_task_queue_delay_seconds`, p99 `worker_task_latency_seconds`, Prometheus'
    // `scrape_duration_seconds` for this worker; the CPU profile (`-peek 'task::seal'`) shows
    // `task::seal` called from `pool::work` on a runtime worker thread.
    async fn seal(&self, worker: &mut BadWorker, digest: u64, data_size: usize) -> u64 {
        if self.has(Problem::Blocking) {
            task::seal(digest, data_size)
        } else {
            seal_threads::off_runtime(&mut worker.seal, digest, data_size).await
        }
    }

    async fn finish_worker(&self, worker: BadWorker, ctx: &Context) {
        if !self.has(Problem::Leak)
            && let Some(slowest) = worker.slowest
        {
            ctx.audit.record(slowest);
        }
        if !self.has(Problem::Contention) {
            ctx.tally.lock().await.merge(&worker.tally);
        }
    }
}

impl Bad {
    fn pending(&self) -> std::sync::MutexGuard<'_, HashMap<u64, oneshot::Sender<Outcome>>> {
        self.in_flight.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// Logs the progress of one round, in a loop with no exit.
async fn progress_reporter(round: u64, ctx: Arc<Context>) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tick.tick().await;
        tracing::debug!(round, processed = ctx.metrics.processed_total(), "progress");
    }
}

/// Records a task's latency once the worker reports its outcome, or logs the failure with the
/// payload sample. No timeout, no cancellation: if the outcome never comes and its sender is
/// never dropped, this task never ends.
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

// ---- Lesson 3: metric label lookups per task --------------------------------------------------
// Every task turns its operation into a new String and looks the series up by label, hashing
// the label values each time. Shows in: allocations per task; `metrics::record` in the CPU
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

// ---- Lessons 2 and 3: the task itself ---------------------------------------------------------
// Shows in: `worker_task_allocations_total` (hundreds to thousands per task), the allocation
// rate and purge rate panels, and `go tool pprof -top .../debug/pprof/allocs` naming these
// functions. Functions are `inline(never)` in both workers so profiles name them alike.

/// Computes a task's digest with every problem; must agree with `optimized::process` for every
/// task.
pub fn process(task: TaskSpec, data_size: usize) -> Result<u64, TaskError> {
    process_with(task, data_size, Problems::ALL)
}

/// Computes a task's digest as this worker does; must agree with `optimized::process` for
/// every task.
pub fn process_with(
    task: TaskSpec,
    data_size: usize,
    problems: Problems,
) -> Result<u64, TaskError> {
    // Only the `capacity` and `churn` problems of `problems` change this part, never its result.
    if !problems.has(Problem::Capacity) && !problems.has(Problem::Churn) {
        return optimized::process_on_this_thread(&task, data_size);
    }
    let payload = generate(&task, data_size, problems);
    if problems.has(Problem::Churn) {
        // Lesson 3: the error context is formatted for every task, failing or not.
        let context = format!("task {} ({})", task.id, task.operation);
        task::validate(&payload).inspect_err(|err| tracing::debug!("{context}: {err}"))?;
    } else {
        task::validate(&payload)?;
    }
    Ok(if problems.has(Problem::Churn) {
        match task.operation {
            Operation::Stats => stats(payload.clone()),
            Operation::Sort => sort(&payload),
            Operation::Dedup => dedup(&payload, problems),
            Operation::Render => render(&payload, problems),
        }
    } else {
        // Only capacity: the fixed code, with collections that start empty.
        match task.operation {
            Operation::Stats => optimized::stats(&payload),
            Operation::Sort => optimized::sort(&payload, &mut Vec::new()),
            Operation::Dedup => optimized::dedup(&payload, &mut HashMap::new()),
            Operation::Render => optimized::render(&payload, &mut String::new()),
        }
    })
}

/// Lesson 2: no capacity, so the Vec reallocates about log2(n) times as it grows.
#[inline(never)]
fn generate(task: &TaskSpec, data_size: usize, problems: Problems) -> Vec<i64> {
    if !problems.has(Problem::Capacity) {
        return task.values(data_size).collect();
    }
    let mut payload = Vec::new();
    for value in task.values(data_size) {
        payload.push(value);
    }
    payload
}

/// Lesson 3: takes ownership of a clone, then sorts a second copy just to find the extremes.
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

/// Lesson 3: a fresh copy to sort, and another one to compute the checksum from.
#[inline(never)]
fn sort(payload: &[i64]) -> u64 {
    let mut sorted = payload.to_vec();
    sorted.sort();
    let median = sorted[sorted.len() / 2];
    let checksum = task::weighted_checksum(sorted.clone().into_iter());
    task::mix(&[median as u64, checksum])
}

/// Lessons 2 and 3: a map that starts empty every task, keyed by freshly formatted Strings,
/// then copied into a Vec and sorted to find the fullest bucket.
#[inline(never)]
fn dedup(payload: &[i64], problems: Problems) -> u64 {
    let mut counts: HashMap<String, u32> = if problems.has(Problem::Capacity) {
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

/// Lessons 2 and 3: a String per value, appended to a String that starts empty.
#[inline(never)]
fn render(payload: &[i64], problems: Problems) -> u64 {
    let mut text = if problems.has(Problem::Capacity) {
        String::new()
    } else {
        String::with_capacity(payload.len() * WIDEST_VALUE)
    };
    for value in payload {
        text = text + &value.to_string() + ",";
    }
    let mut hash = task::Fnv1a::default();
    hash.write(text.as_bytes());
    task::mix(&[hash.0, text.len() as u64])
}
