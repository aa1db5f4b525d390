//! The optimized worker: `bad.rs` with each problem fixed, section by section.
//!
//! 1. Task leaks: every helper has an exit path (a cancellation token) and is joined; the
//!    progress reporter is started once for the run, not once per round, and told each round.
//! 2. Capacity: buffers sized once per runtime thread and reused, cleared, for every task.
//! 3. Allocation in hot paths: borrow instead of clone, write into reused buffers, resolve
//!    metric handles once.
//! 4. Blocking the runtime: the long CPU-bound step (sealing a result) runs on threads of its
//!    own (`seal_threads.rs`); the runtime threads stay free to poll other tasks.
//!    `spawn_blocking` is the first fix, but it allocates per call; the seal threads' queue is
//!    allocated once.
//! 5. Lock contention: each worker keeps its own tally and merges it into the shared one once,
//!    when it stops; the shared lock is taken once per worker, not held through every task.
//! 6. Overload: a bounded queue; when it stays full the producer sheds the task and counts it.
//!
//! In steady state a task makes no heap allocation at all, sealed or not, and neither does a
//! round: `worker_task_allocations_total` stays flat once the buffers have reached their size,
//! and so does the process-wide `worker_allocations_total`, `/metrics` scrapes included (their
//! allocations are the observer's, `worker_observer_allocations_total`). The tests hold both
//! to that.

use std::cell::RefCell;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::future::Future;
use std::sync::Arc;
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter, IntCounterVec};
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::metrics::Metrics;
use crate::pool::{self, Completed, Context, QueueKind, RunConfig, Slowest, Strategy, Tally};
use crate::seal_threads;
use crate::task::{self, BUCKETS, Operation, TaskError, TaskSpec, VALUE_RANGE};

/// How often the run's progress reporter logs.
const PROGRESS_EVERY: Duration = Duration::from_secs(5);

/// The optimized worker's strategy.
pub struct Optimized {
    data_size: usize,
}

impl Optimized {
    pub fn new(config: &RunConfig) -> Optimized {
        Optimized {
            data_size: config.data_size,
        }
    }
}

/// What each worker task keeps between tasks.
pub struct OptimizedWorker {
    handles: Handles,
    /// The slowest task this worker has seen; merged into the run's audit when it stops.
    slowest: Option<Slowest>,
    /// Lesson 5: this worker's own tally; merged into the run's when it stops.
    tally: Tally,
    /// Lesson 4: where this worker's seals come back; made once, reused by every seal.
    seal: seal_threads::Slot,
}

impl Strategy for Optimized {
    type Worker = OptimizedWorker;
    /// The run's progress reporter.
    type Run = Reporter;

    // ---- Lesson 6: the queue ------------------------------------------------------------------
    // Bounded: when workers fall behind, the producer waits for room until its next task is
    // due, then sheds the task, counted. Shows in: `worker_tasks_in_queue` never above
    // 2 x --workers, `worker_tasks_rejected_total` rising during a burst instead of the queue,
    // `worker_task_queue_delay_seconds` staying short, memory flat.
    fn queue(&self, config: &RunConfig) -> QueueKind {
        queue(config)
    }

    // ---- Per-worker state ------------------------------------------------------------------
    // Lesson 2: metric handles are made once per worker; buffers once per runtime thread (see
    // `SCRATCH`), sized for the work before the first task where possible.
    fn worker(&self, ctx: &Context) -> OptimizedWorker {
        SCRATCH.with_borrow_mut(|scratch| scratch.reserve(self.data_size));
        OptimizedWorker {
            handles: Handles::resolve(&ctx.metrics),
            slowest: None,
            tally: Tally::default(),
            seal: seal_threads::Slot::default(),
        }
    }

    // ---- Lesson 1a: one helper for the run, with an exit path --------------------------------
    // One progress reporter for the whole run, with a child of the shutdown token: the run
    // cancels it when it ends and waits for it, so exactly one reporter is alive and shutdown
    // leaves none behind. A round only tells it its number, through a watch channel that
    // overwrites one value in place: no task, token or timer per round, so a round allocates
    // nothing (a reporter per round, even one that exits, costs 6 allocations every round).
    // Shows in: `worker_active_goroutines` flat round after round, one helper in
    // `worker_live_tasks{kind="helper"}`; the goroutine profile lists one
    // `optimized::progress_reporter`; `worker_allocations_total` flat as rounds go by.
    fn start_run(&self, ctx: &Arc<Context>) -> Reporter {
        Reporter::start(ctx)
    }

    fn start_round(&self, round: u64, reporter: &mut Reporter, _ctx: &Arc<Context>) {
        reporter.round(round);
    }

    async fn finish_run(&self, reporter: Reporter) {
        reporter.stop().await;
    }

    // ---- Lesson 5: no lock held across the task ----------------------------------------------
    // Each worker tallies its own results; nobody waits for anybody. (A shorter critical
    // section, the lock taken only around `add`, is the other fix: a moment per task instead
    // of a whole task.) Shows in: `worker_lock_wait_seconds{lock="tally"}` at zero waits,
    // throughput growing with the runtime's threads; `/debug/pprof/mutex` has no samples.
    async fn run_task(
        &self,
        worker: &mut OptimizedWorker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Completed {
        let completed = pool::handle_and_seal(self, worker, task, ctx).await;
        worker.tally.add(task.operation, completed.result());
        completed
    }

    // ---- Lesson 1b: no helper per task ------------------------------------------------------
    fn handle(
        &self,
        worker: &mut OptimizedWorker,
        task: TaskSpec,
        _ctx: &Arc<Context>,
    ) -> Result<u64, TaskError> {
        // Lesson 3: tracing fields are formatted only when the event is enabled.
        tracing::trace!(
            task = task.id,
            operation = task.operation.name(),
            "task started"
        );

        let started = Instant::now();
        let outcome = process_on_this_thread(&task, self.data_size);
        let elapsed = started.elapsed();
        worker.handles.record(task.operation, &outcome, elapsed);

        // The audit happens right here, on every path, failures included: there is no helper
        // to signal, so there is nothing to forget to signal.
        worker.slowest = Slowest::max(
            worker.slowest,
            Some(Slowest {
                task: task.id,
                operation: task.operation,
                elapsed,
            }),
        );
        outcome
    }

    // ---- Lesson 4: the long CPU-bound step off the runtime ------------------------------------
    // A seal thread runs it (`seal_threads.rs`); this task waits for the result without
    // holding a runtime thread, so the HTTP server and the other workers keep being polled.
    // (For work that can be split, `tokio::task::yield_now` between pieces is the other fix; a
    // seal is one long hash, so it moves.) `tokio::task::spawn_blocking` would move it too, but
    // allocates a task per call; the seal threads' queue and this worker's slot are made once,
    // so a sealed task allocates nothing (lesson 3's point, applied here). Shows in: tokio's
    // poll times and `worker_runtime_busy_seconds_total` staying low,
    // `worker_task_queue_delay_seconds` and `/metrics` latency unaffected,
    // `worker_allocations_total` flat; the CPU profile shows `task::seal` under
    // `seal_threads::serve` on a `seal` thread, not under `pool::work`.
    fn seal(
        &self,
        worker: &mut OptimizedWorker,
        digest: u64,
        data_size: usize,
    ) -> impl Future<Output = u64> + Send {
        seal_threads::off_runtime(&mut worker.seal, digest, data_size)
    }

    async fn finish_worker(&self, worker: OptimizedWorker, ctx: &Context) {
        if let Some(slowest) = worker.slowest {
            ctx.audit.record(slowest);
        }
        // Lesson 5: the shared tally's lock, once per worker.
        ctx.tally.lock().await.merge(&worker.tally);
    }
}

/// Lesson 6's fix: a queue of at most two tasks per worker.
pub(crate) fn queue(config: &RunConfig) -> QueueKind {
    QueueKind::Bounded(config.workers * 2)
}

/// Lesson 1a's fix: the run's one progress reporter, the channel that tells it each round and
/// the token that stops it.
pub struct Reporter {
    round: watch::Sender<u64>,
    stop: CancellationToken,
    task: JoinHandle<()>,
}

impl Reporter {
    /// Spawns the run's reporter. Its token is a child of the shutdown token, so it stops with
    /// the run even if [`stop`](Reporter::stop) is never reached.
    pub(crate) fn start(ctx: &Arc<Context>) -> Reporter {
        let (round, rounds) = watch::channel(0);
        let stop = ctx.shutdown.child_token();
        let task = pool::spawn_helper(progress_reporter(rounds, Arc::clone(ctx), stop.clone()));
        Reporter { round, stop, task }
    }

    /// Tells the reporter a new round has started. `send_replace` writes the value in place
    /// (and works whether or not the reporter is still there to read it): no allocation.
    pub(crate) fn round(&self, round: u64) {
        self.round.send_replace(round);
    }

    /// Stops the reporter and waits for it to end.
    pub(crate) async fn stop(self) {
        self.stop.cancel();
        if let Err(err) = self.task.await {
            tracing::error!("progress reporter failed: {err}");
        }
    }
}

/// Computes a task with this runtime thread's reused buffers (lessons 2 and 3 fixed).
pub(crate) fn process_on_this_thread(task: &TaskSpec, data_size: usize) -> Result<u64, TaskError> {
    SCRATCH.with_borrow_mut(|scratch| {
        // A no-op once this thread's buffers have their size.
        scratch.reserve(data_size);
        process(task, scratch, data_size)
    })
}

/// Sizes this runtime thread's buffers before the first task.
pub(crate) fn reserve_scratch(data_size: usize) {
    SCRATCH.with_borrow_mut(|scratch| scratch.reserve(data_size));
}

/// Logs the progress of the run, with the round it is in, until the run stops it.
async fn progress_reporter(
    rounds: watch::Receiver<u64>,
    ctx: Arc<Context>,
    stop: CancellationToken,
) {
    let mut tick = tokio::time::interval(PROGRESS_EVERY);
    loop {
        tokio::select! {
            () = stop.cancelled() => return,
            _ = tick.tick() => {}
        }
        let round = *rounds.borrow();
        tracing::debug!(round, processed = ctx.metrics.processed_total(), "progress");
    }
}

// ---- Lesson 3: metric handles resolved once --------------------------------------------------
// One lookup per operation when the worker starts; per task, only atomic updates.
pub(crate) struct Handles {
    duration: [Histogram; 4],
    processed: [IntCounter; 4],
    errors: [IntCounter; 4],
}

impl Handles {
    pub(crate) fn resolve(metrics: &Metrics) -> Handles {
        let counters =
            |vec: &IntCounterVec| Operation::ALL.map(|op| vec.with_label_values(&[op.name()]));
        Handles {
            duration: Operation::ALL
                .map(|op| metrics.task_duration.with_label_values(&[op.name()])),
            processed: counters(&metrics.tasks_processed),
            errors: counters(&metrics.task_errors),
        }
    }

    pub(crate) fn record(
        &self,
        operation: Operation,
        outcome: &Result<u64, TaskError>,
        elapsed: Duration,
    ) {
        let i = operation.index();
        self.duration[i].observe(elapsed.as_secs_f64());
        self.processed[i].inc();
        if outcome.is_err() {
            self.errors[i].inc();
        }
    }
}

// ---- Lessons 2 and 3: the task itself ---------------------------------------------------------

thread_local! {
    /// The buffers of the runtime thread a task is handled on. Handling a task never awaits, so
    /// from start to end it has the thread, and these buffers, to itself: fifty worker tasks on
    /// two threads need two sets of buffers, not fifty.
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::with_capacity(0));
}

/// Buffers reused for every task. `clear()` keeps a collection's capacity, so once they have
/// grown to fit the largest task, no task allocates again.
pub struct Scratch {
    payload: Vec<i64>,
    sorted: Vec<i64>,
    counts: HashMap<usize, u32>,
    text: String,
}

impl Scratch {
    /// Buffers sized for payloads of `data_size` values.
    pub fn with_capacity(data_size: usize) -> Scratch {
        Scratch {
            payload: Vec::with_capacity(data_size),
            sorted: Vec::with_capacity(data_size),
            counts: HashMap::with_capacity(BUCKETS),
            text: String::with_capacity(data_size * WIDEST_VALUE),
        }
    }

    /// Grows the buffers to fit payloads of `data_size` values; does nothing once they do.
    /// (`reserve` counts from the current length, and the buffers still hold the last task.)
    pub fn reserve(&mut self, data_size: usize) {
        self.payload
            .reserve(data_size.saturating_sub(self.payload.len()));
        self.sorted
            .reserve(data_size.saturating_sub(self.sorted.len()));
        self.counts
            .reserve(BUCKETS.saturating_sub(self.counts.len()));
        let text = data_size * WIDEST_VALUE;
        self.text.reserve(text.saturating_sub(self.text.len()));
    }
}

/// Bytes of the widest rendered value: a sign, the digits of `VALUE_RANGE` and a comma.
pub(crate) const WIDEST_VALUE: usize = VALUE_RANGE.ilog10() as usize + 3;

/// Computes a task's digest; must agree with `bad::process` for every task.
pub fn process(task: &TaskSpec, scratch: &mut Scratch, data_size: usize) -> Result<u64, TaskError> {
    generate(task, data_size, &mut scratch.payload);
    // Lesson 3: the error carries the index; context is formatted only if it is reported.
    task::validate(&scratch.payload)?;
    Ok(match task.operation {
        Operation::Stats => stats(&scratch.payload),
        Operation::Sort => sort(&scratch.payload, &mut scratch.sorted),
        Operation::Dedup => dedup(&scratch.payload, &mut scratch.counts),
        Operation::Render => render(&scratch.payload, &mut scratch.text),
    })
}

/// Lesson 2: fills the reused buffer; `extend` from an exact-size iterator reserves once.
#[inline(never)]
fn generate(task: &TaskSpec, data_size: usize, payload: &mut Vec<i64>) {
    payload.clear();
    payload.extend(task.values(data_size));
}

/// Lesson 3: one pass over the borrowed payload, no copies.
#[inline(never)]
pub(crate) fn stats(payload: &[i64]) -> u64 {
    let (sum, min, max) = payload
        .iter()
        .fold((0i64, i64::MAX, i64::MIN), |(sum, min, max), &v| {
            (sum.wrapping_add(v), min.min(v), max.max(v))
        });
    task::mix(&[sum as u64, min as u64, max as u64])
}

/// Lesson 3: one copy into the reused buffer; the checksum reads it in place.
#[inline(never)]
pub(crate) fn sort(payload: &[i64], sorted: &mut Vec<i64>) -> u64 {
    sorted.clear();
    sorted.extend_from_slice(payload);
    // Integers have no identity beyond their value, so an unstable sort gives the same order.
    sorted.sort_unstable();
    let median = sorted[sorted.len() / 2];
    let checksum = task::weighted_checksum(sorted.iter().copied());
    task::mix(&[median as u64, checksum])
}

/// Lessons 2 and 3: a map with room for every bucket, cleared and refilled, keyed by the
/// bucket number itself; the fullest bucket is found in one pass, no Vec, no sort.
#[inline(never)]
pub(crate) fn dedup(payload: &[i64], counts: &mut HashMap<usize, u32>) -> u64 {
    counts.clear();
    for &value in payload {
        *counts.entry(task::bucket(value)).or_insert(0) += 1;
    }
    let (top_bucket, top_count) = counts
        .iter()
        .map(|(&bucket, &count)| (bucket, count))
        .max_by(|a, b| a.1.cmp(&b.1).then(b.0.cmp(&a.0)))
        .expect("a validated payload is not empty");
    task::mix(&[counts.len() as u64, top_bucket as u64, u64::from(top_count)])
}

/// Lessons 2 and 3: every value is written straight into one reused String.
#[inline(never)]
pub(crate) fn render(payload: &[i64], text: &mut String) -> u64 {
    text.clear();
    for value in payload {
        write!(text, "{value},").expect("writing to a String cannot fail");
    }
    let mut hash = task::Fnv1a::default();
    hash.write(text.as_bytes());
    task::mix(&[hash.0, text.len() as u64])
}
