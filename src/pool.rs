//! The run loop both workers share: a producer paces tasks into a queue, `--workers` tasks take
//! them off and hand each to the worker's [`Strategy`], and a cancellation token stops it all.
//!
//! Everything here is the same for both workers, so that the difference a learner sees on the
//! dashboard comes only from `bad.rs` versus `optimized.rs`. The strategy decides the things the
//! lessons are about: the kind of queue (lesson 6), what starts with the run and with each round
//! of tasks (lesson 1), how one task is handled (lessons 1-3), where its result is sealed
//! (lesson 4) and what is held while both happen (lesson 5).
//!
//! The measurements every lesson needs are taken here, alike for both: each task carries the
//! time it was enqueued, so `worker_task_queue_delay_seconds` (enqueue to a worker taking it)
//! and `worker_task_latency_seconds` (enqueue to result) mean the same in both workers, and the
//! producer offers the same load (`--rate`, `--burst`) to both and counts what a bounded queue
//! sheds in `worker_tasks_rejected_total`.

use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use tokio::sync::{Mutex as AsyncMutex, mpsc};
use tokio::task::{JoinHandle, JoinSet};
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;

use crate::alloc::{self, AllocCounts};
use crate::burst::Burst;
use crate::cpu_time;
use crate::lock;
use crate::metrics::Metrics;
use crate::task::{self, Generator, Operation, TaskError, TaskSpec};
use crate::tasks::{self, TaskKind};

/// What one run does; the flags of both workers map onto it.
#[derive(Debug, Clone, PartialEq)]
pub struct RunConfig {
    /// Tasks per round; rounds repeat until the run is stopped.
    pub tasks_per_round: u64,
    /// Concurrent worker tasks taking tasks off the queue.
    pub workers: usize,
    /// Elements in each task's payload.
    pub data_size: usize,
    /// Tasks produced per second.
    pub rate: u32,
    /// Seed of the task stream; the same seed gives both workers the same tasks.
    pub seed: u64,
    /// Produce exactly this many tasks, then close the queue: the run ends once all are
    /// handled (`--max-tasks`, so that `lab check` grades every worker on the same tasks).
    pub max_tasks: Option<u64>,
}

/// What every part of a run shares.
pub struct Context {
    pub config: RunConfig,
    pub metrics: Arc<Metrics>,
    /// Cancelled when the run must stop (duration elapsed, Ctrl-C, SIGTERM).
    pub shutdown: CancellationToken,
    /// The slowest task seen, for the exit summary.
    pub audit: Audit,
    /// Every handled task's result and allocations, kept outside the strategy (`lab check`).
    pub ledger: Ledger,
    /// Lesson 5: tasks and digests by operation, for the whole run, behind the lab's
    /// instrumented lock (`worker_lock_wait_seconds{lock="tally"}`, `/debug/pprof/mutex`).
    pub tally: lock::Mutex<Tally>,
    /// Lesson 6: the producer's bursts (`--burst`), if any.
    pub burst: Option<Burst>,
}

impl Context {
    pub fn new(config: RunConfig, metrics: Arc<Metrics>, shutdown: CancellationToken) -> Context {
        let tally = lock::Mutex::new(Tally::default(), metrics.lessons.lock_stats("tally"));
        Context {
            config,
            metrics,
            shutdown,
            audit: Audit::default(),
            ledger: Ledger::default(),
            tally,
            burst: None,
        }
    }

    /// The same context with the producer bursting as `burst` says.
    pub fn with_burst(mut self, burst: Option<Burst>) -> Context {
        self.burst = burst;
        self
    }
}

/// Tasks and the digests of their results, by operation. Digests are combined with XOR, which
/// does not depend on order, so tallies kept per worker and merged at the end equal one kept in
/// one place: lesson 5's fix is free to choose.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Tally {
    pub tasks: [u64; 4],
    pub failed: [u64; 4],
    pub digests: [u64; 4],
}

impl Tally {
    pub fn add(&mut self, operation: Operation, outcome: &Result<u64, TaskError>) {
        let i = operation.index();
        self.tasks[i] += 1;
        match outcome {
            Ok(digest) => self.digests[i] ^= digest,
            Err(_) => self.failed[i] += 1,
        }
    }

    pub fn merge(&mut self, other: &Tally) {
        for i in 0..Operation::ALL.len() {
            self.tasks[i] += other.tasks[i];
            self.failed[i] += other.failed[i];
            self.digests[i] ^= other.digests[i];
        }
    }

    /// Tasks tallied, all operations.
    pub fn total(&self) -> u64 {
        self.tasks.iter().sum()
    }
}

/// A task in the queue, with the time it was put there: queueing delay and end-to-end latency
/// are measured from it.
#[derive(Debug, Clone, Copy)]
pub struct Queued {
    pub task: TaskSpec,
    pub enqueued: Instant,
}

impl Queued {
    /// `task`, enqueued now.
    pub fn now(task: TaskSpec) -> Queued {
        Queued {
            task,
            enqueued: Instant::now(),
        }
    }
}

/// How tasks wait between the producer and the workers.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum QueueKind {
    /// The producer never waits; a backlog grows without limit when workers fall behind.
    Unbounded,
    /// At most this many tasks wait: backpressure. When the queue is full the producer waits
    /// for room until its next task is due, then sheds the task it holds and counts it in
    /// `worker_tasks_rejected_total`: the offered load stays on schedule, the excess is refused
    /// where everyone can see it instead of piling up where no one looks.
    Bounded(usize),
}

/// The part of a worker that `bad.rs` and `optimized.rs` each implement, section by section.
pub trait Strategy: Send + Sync + Sized + 'static {
    /// State each worker task keeps between tasks.
    type Worker: Send + 'static;
    /// What the strategy keeps for the whole run (lesson 1a: its helpers), from
    /// [`start_run`](Strategy::start_run) to [`finish_run`](Strategy::finish_run).
    type Run: Send + 'static;

    fn queue(&self, config: &RunConfig) -> QueueKind;

    fn worker(&self, ctx: &Context) -> Self::Worker;

    /// Called once, before the first round starts.
    fn start_run(&self, ctx: &Arc<Context>) -> Self::Run;

    /// Called before the first task of each round is produced. Once per `--tasks` tasks, on the
    /// producer's path: what it allocates shows per task in `worker_allocations_total`.
    fn start_round(&self, round: u64, run: &mut Self::Run, ctx: &Arc<Context>);

    /// Called once when the run ends (shutdown, or `--max-tasks` produced and handled), after
    /// the worker tasks have stopped: the place to stop and join what the run started.
    fn finish_run(&self, run: Self::Run) -> impl Future<Output = ()> + Send;

    /// Works on one task from dequeue to final result: calls [`handle_and_seal`] once, and
    /// tallies the result in the run's tally (lesson 5). What it holds around that call is the
    /// lesson: the tally's lock for the whole task, or nothing.
    fn run_task(
        &self,
        worker: &mut Self::Worker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> impl Future<Output = Completed> + Send;

    /// Handles one task, metrics included (lessons 1-3). Synchronous on purpose: it runs on one
    /// thread, so the allocations it makes can be counted exactly.
    fn handle(
        &self,
        worker: &mut Self::Worker,
        task: TaskSpec,
        ctx: &Arc<Context>,
    ) -> Result<u64, TaskError>;

    /// Seals a result that asks for it (`task::seal`, lesson 4): a long CPU-bound step. It gets
    /// the worker task's state for what a fix keeps from one seal to the next.
    fn seal(
        &self,
        worker: &mut Self::Worker,
        digest: u64,
        data_size: usize,
    ) -> impl Future<Output = u64> + Send;

    /// Called once when a worker task stops.
    fn finish_worker(&self, worker: Self::Worker, ctx: &Context)
    -> impl Future<Output = ()> + Send;
}

/// What a run did, for the summary.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RunTotals {
    pub rounds_started: u64,
    pub tasks_produced: u64,
    /// Produced but never handled, because the run stopped first.
    pub tasks_abandoned: u64,
    /// Offered but shed because the bounded queue stayed full (not in `tasks_produced`).
    pub tasks_rejected: u64,
}

/// Runs `strategy` until `ctx.shutdown` is cancelled, then waits for its worker tasks.
pub async fn run<S: Strategy>(strategy: Arc<S>, ctx: Arc<Context>) -> RunTotals {
    let kind = strategy.queue(&ctx.config);
    ctx.ledger.set_queue(kind);
    let (tx, rx) = queue(kind);
    let rx = Arc::new(AsyncMutex::new(rx));
    let mut run = strategy.start_run(&ctx);
    let mut workers = JoinSet::new();
    for _ in 0..ctx.config.workers {
        workers.spawn(tasks::track(
            TaskKind::Worker,
            work(Arc::clone(&strategy), Arc::clone(&ctx), Arc::clone(&rx)),
        ));
    }
    let mut totals = produce(&*strategy, &ctx, tx, &mut run).await;
    while let Some(joined) = workers.join_next().await {
        if let Err(err) = joined {
            tracing::error!("worker task failed: {err}");
        }
    }
    strategy.finish_run(run).await;
    let tally = *ctx.tally.lock().await;
    tracing::info!(
        tasks = tally.total(),
        failed = tally.failed.iter().sum::<u64>(),
        digest = format_args!("{:016x}", tally.digests.iter().fold(0, |a, d| a ^ d)),
        "run tally"
    );
    // What is still queued was produced and will never be handled; say so instead of hiding it.
    let mut rx = rx.lock().await;
    while rx.try_recv().is_ok() {
        totals.tasks_abandoned += 1;
        ctx.metrics.tasks_in_queue.dec();
    }
    totals
}

/// Spawns a helper task: registered as [`TaskKind::Helper`], with the line of the lesson's code
/// that called this as its spawn site, so the task profile (`/debug/pprof/goroutine`) names both
/// the function a leaked helper runs and where it was created.
#[track_caller]
pub fn spawn_helper<F>(future: F) -> JoinHandle<()>
where
    F: Future<Output = ()> + Send + 'static,
{
    tasks::spawn(TaskKind::Helper, future)
}

/// The slowest task a run has seen.
#[derive(Debug, Default)]
pub struct Audit {
    slowest: Mutex<Option<Slowest>>,
}

/// One task's latency, as the audit keeps it.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Slowest {
    pub task: u64,
    pub operation: Operation,
    pub elapsed: Duration,
}

impl Slowest {
    /// The slower of two records, either of which may be missing.
    pub fn max(a: Option<Slowest>, b: Option<Slowest>) -> Option<Slowest> {
        match (a, b) {
            (Some(a), Some(b)) => Some(if b.elapsed > a.elapsed { b } else { a }),
            (a, b) => a.or(b),
        }
    }
}

impl Audit {
    pub fn record(&self, entry: Slowest) {
        let mut slowest = self.slowest.lock().unwrap_or_else(|e| e.into_inner());
        *slowest = Slowest::max(*slowest, Some(entry));
    }

    pub fn slowest(&self) -> Option<Slowest> {
        *self.slowest.lock().unwrap_or_else(|e| e.into_inner())
    }
}

/// What the handled tasks add up to, recorded by the pool in [`complete`] for every task with its
/// final result (after the seal, for a sealed task): the strategy cannot skip, forge or hide an
/// entry. `lab check` compares the checksum with the one
/// it computes itself from `optimized::process`, and grades allocations per task from it.
#[derive(Debug, Default)]
pub struct Ledger {
    handled: AtomicU64,
    failed: AtomicU64,
    /// Wrapping sum of [`ledger_entry`] over the handled tasks: the order workers finish in
    /// does not matter, a missing, extra or different result does.
    checksum: AtomicU64,
    allocations: AtomicU64,
    bytes: AtomicU64,
    reallocations: AtomicU64,
    /// Ids of the tasks a bounded queue shed (lesson 6): never handled, so `lab check` leaves
    /// them out of the checksum it expects. The producer, not the strategy, records them, and
    /// only in a run of `--max-tasks`, which bounds them.
    rejected: Mutex<Vec<u64>>,
    /// Lesson 4: sealed tasks, and the time their seal future spent inside `poll` on the
    /// worker task's thread: the whole seal when it runs there, microseconds when it is
    /// handed to another thread.
    sealed: AtomicU64,
    seal_poll_nanos: AtomicU64,
    /// Lesson 6: the bound of the queue the strategy chose (0: unbounded), and the most tasks
    /// that waited in it at once.
    queue_bound: AtomicU64,
    queue_depth_max: AtomicU64,
}

/// What the ledger saw of lessons 4-6.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerLessons {
    pub sealed: u64,
    pub seal_poll_nanos: u64,
    /// `None`: an unbounded queue.
    pub queue_bound: Option<u64>,
    pub queue_depth_max: u64,
}

/// The ledger's totals at one moment.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct LedgerTotals {
    pub handled: u64,
    pub failed: u64,
    /// As a hex string: JSON readers lose precision above 2^53.
    #[serde(with = "hex_u64")]
    pub checksum: u64,
    pub allocations: u64,
    pub bytes: u64,
    pub reallocations: u64,
}

/// One task's contribution to the ledger's checksum: its id and its result (digest, or where
/// it failed validation).
pub fn ledger_entry(id: u64, result: &Result<u64, TaskError>) -> u64 {
    match result {
        Ok(digest) => task::mix(&[id, 0, *digest]),
        Err(TaskError::CorruptValue { index }) => task::mix(&[id, 1, *index as u64]),
        Err(TaskError::EmptyPayload) => task::mix(&[id, 2]),
    }
}

impl Ledger {
    fn record(&self, id: u64, result: &Result<u64, TaskError>, made: Option<(AllocCounts, u64)>) {
        self.handled.fetch_add(1, Relaxed);
        if result.is_err() {
            self.failed.fetch_add(1, Relaxed);
        }
        self.checksum.fetch_add(ledger_entry(id, result), Relaxed);
        if let Some((made, reallocations)) = made {
            self.allocations.fetch_add(made.allocations, Relaxed);
            self.bytes.fetch_add(made.bytes, Relaxed);
            self.reallocations.fetch_add(reallocations, Relaxed);
        }
    }

    fn record_seal(&self, polled: std::time::Duration) {
        self.sealed.fetch_add(1, Relaxed);
        self.seal_poll_nanos
            .fetch_add(polled.as_nanos().min(u128::from(u64::MAX)) as u64, Relaxed);
    }

    fn set_queue(&self, kind: QueueKind) {
        let bound = match kind {
            QueueKind::Unbounded => 0,
            QueueKind::Bounded(bound) => bound as u64,
        };
        self.queue_bound.store(bound, Relaxed);
    }

    fn observe_depth(&self, depth: i64) {
        self.queue_depth_max.fetch_max(depth.max(0) as u64, Relaxed);
    }

    pub fn lessons(&self) -> LedgerLessons {
        let bound = self.queue_bound.load(Relaxed);
        LedgerLessons {
            sealed: self.sealed.load(Relaxed),
            seal_poll_nanos: self.seal_poll_nanos.load(Relaxed),
            queue_bound: (bound > 0).then_some(bound),
            queue_depth_max: self.queue_depth_max.load(Relaxed),
        }
    }

    fn reject(&self, id: u64) {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(id);
    }

    /// Ids of the tasks the queue shed, in the order they were offered.
    pub fn rejected(&self) -> Vec<u64> {
        self.rejected
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn totals(&self) -> LedgerTotals {
        LedgerTotals {
            handled: self.handled.load(Relaxed),
            failed: self.failed.load(Relaxed),
            checksum: self.checksum.load(Relaxed),
            allocations: self.allocations.load(Relaxed),
            bytes: self.bytes.load(Relaxed),
            reallocations: self.reallocations.load(Relaxed),
        }
    }
}

mod hex_u64 {
    use serde::{Deserialize, Deserializer, Serializer};

    pub fn serialize<S: Serializer>(value: &u64, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&format!("{value:016x}"))
    }

    pub fn deserialize<'de, D: Deserializer<'de>>(deserializer: D) -> Result<u64, D::Error> {
        let text = String::deserialize(deserializer)?;
        u64::from_str_radix(&text, 16).map_err(serde::de::Error::custom)
    }
}

enum Sender {
    Unbounded(mpsc::UnboundedSender<Queued>),
    Bounded(mpsc::Sender<Queued>),
}

enum Receiver {
    Unbounded(mpsc::UnboundedReceiver<Queued>),
    Bounded(mpsc::Receiver<Queued>),
}

/// What became of a task the producer offered.
enum Sent {
    Queued,
    /// The bounded queue stayed full until the next task was due.
    Rejected,
    /// Every receiver is gone.
    Closed,
}

fn queue(kind: QueueKind) -> (Sender, Receiver) {
    match kind {
        QueueKind::Unbounded => {
            let (tx, rx) = mpsc::unbounded_channel();
            (Sender::Unbounded(tx), Receiver::Unbounded(rx))
        }
        QueueKind::Bounded(capacity) => {
            let (tx, rx) = mpsc::channel(capacity.max(1));
            (Sender::Bounded(tx), Receiver::Bounded(rx))
        }
    }
}

impl Sender {
    /// Enqueues `task`; a full bounded queue is waited on until `due` (when the producer's next
    /// task is due), then the task is shed.
    async fn send(&self, task: Queued, due: Instant) -> Sent {
        match self {
            Sender::Unbounded(tx) => match tx.send(task) {
                Ok(()) => Sent::Queued,
                Err(_) => Sent::Closed,
            },
            Sender::Bounded(tx) => match tx.try_send(task) {
                Ok(()) => Sent::Queued,
                Err(mpsc::error::TrySendError::Closed(_)) => Sent::Closed,
                Err(mpsc::error::TrySendError::Full(task)) => {
                    match tokio::time::timeout_at(due, tx.send(task)).await {
                        Ok(Ok(())) => Sent::Queued,
                        Ok(Err(_)) => Sent::Closed,
                        Err(_) => Sent::Rejected,
                    }
                }
            },
        }
    }
}

impl Receiver {
    async fn recv(&mut self) -> Option<Queued> {
        match self {
            Receiver::Unbounded(rx) => rx.recv().await,
            Receiver::Bounded(rx) => rx.recv().await,
        }
    }

    fn try_recv(&mut self) -> Result<Queued, mpsc::error::TryRecvError> {
        match self {
            Receiver::Unbounded(rx) => rx.try_recv(),
            Receiver::Bounded(rx) => rx.try_recv(),
        }
    }
}

/// Produces tasks at `--rate` (times the burst factor during a burst), round after round,
/// until shutdown.
async fn produce<S: Strategy>(
    strategy: &S,
    ctx: &Arc<Context>,
    tx: Sender,
    run: &mut S::Run,
) -> RunTotals {
    let config = &ctx.config;
    let metrics = &ctx.metrics;
    let mut generator = Generator::new(config.seed, config.data_size);
    let start = Instant::now();
    // When the next task is due. Deadlines advance by the rate of the moment; a producer that
    // fell behind (tokio's timer has 1 ms resolution, a busy thread is late) catches up at once,
    // so the offered load over any second is what the flags say.
    let mut due = start;
    let mut totals = RunTotals::default();
    let limit = config.max_tasks.unwrap_or(u64::MAX);
    for round in 0.. {
        if totals.tasks_produced >= limit {
            // `--max-tasks` reached: dropping the sender lets the workers drain the queue and stop.
            return totals;
        }
        totals.rounds_started += 1;
        strategy.start_round(round, run, ctx);
        for _ in 0..config.tasks_per_round.min(limit - totals.tasks_produced) {
            tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => return totals,
                () = tokio::time::sleep_until(due) => {}
            }
            let rate = Burst::rate_at(ctx.burst.as_ref(), config.rate, due - start);
            metrics.lessons.producer_rate.set(rate);
            due += Duration::from_secs_f64(1.0 / rate);
            metrics.tasks_in_queue.inc();
            let task = Queued::now(generator.next_task());
            let id = task.task.id;
            let sent = tokio::select! {
                biased;
                () = ctx.shutdown.cancelled() => Sent::Closed,
                sent = tx.send(task, due) => sent,
            };
            match sent {
                Sent::Queued => {
                    totals.tasks_produced += 1;
                    ctx.ledger.observe_depth(metrics.tasks_in_queue.get());
                }
                Sent::Rejected => {
                    // Kept only for a run of `--max-tasks` (what `lab check` grades), so at most
                    // that many: a worker shedding for days must not grow a list of what it shed.
                    if config.max_tasks.is_some() {
                        ctx.ledger.reject(id);
                    }
                    metrics.tasks_in_queue.dec();
                    metrics.lessons.tasks_rejected.inc();
                    totals.tasks_rejected += 1;
                }
                Sent::Closed => {
                    metrics.tasks_in_queue.dec();
                    return totals;
                }
            }
        }
    }
    unreachable!("rounds repeat until shutdown")
}

/// One worker task: takes tasks off the queue until shutdown.
async fn work<S: Strategy>(strategy: Arc<S>, ctx: Arc<Context>, rx: Arc<AsyncMutex<Receiver>>) {
    let mut worker = strategy.worker(&ctx);
    loop {
        let next = tokio::select! {
            biased;
            () = ctx.shutdown.cancelled() => None,
            task = async { rx.lock().await.recv().await } => task,
        };
        let Some(queued) = next else { break };
        ctx.metrics.tasks_in_queue.dec();
        ctx.metrics
            .lessons
            .queue_delay
            .observe(queued.enqueued.elapsed().as_secs_f64());
        let _ = complete(&*strategy, &mut worker, queued, &ctx).await;
    }
    strategy.finish_worker(worker, &ctx).await;
}

/// Everything a worker task does with one task: has the strategy work on it
/// ([`Strategy::run_task`]), records the time from enqueue to result in
/// `worker_task_latency_seconds`, and enters the final result (sealed, for a sealed task) in the
/// ledger `lab check` grades.
pub async fn complete<S: Strategy>(
    strategy: &S,
    worker: &mut S::Worker,
    queued: Queued,
    ctx: &Arc<Context>,
) -> Result<u64, TaskError> {
    let completed = strategy.run_task(worker, queued.task, ctx).await;
    ctx.metrics
        .lessons
        .task_latency
        .observe(queued.enqueued.elapsed().as_secs_f64());
    // The entry is made from what `handle_and_seal` measured, which the strategy can pass on
    // but not make: a strategy that skips the seal enters a different checksum, so skipping
    // lesson 4's work cannot pass for fixing it, and one that skips the call enters nothing.
    ctx.ledger
        .record(completed.task, &completed.result, completed.made);
    completed.result
}

/// A task handled and, if it asks for it, sealed, as [`handle_and_seal`] made it. Its fields are
/// the pool's: a strategy reads the result and passes it on, it cannot make one.
#[derive(Debug)]
pub struct Completed {
    task: u64,
    result: Result<u64, TaskError>,
    made: Option<(AllocCounts, u64)>,
}

impl Completed {
    /// The task's final result: its digest (sealed, for a sealed task), or why it failed.
    pub fn result(&self) -> &Result<u64, TaskError> {
        &self.result
    }
}

/// What every [`Strategy::run_task`] calls once per task: the strategy's `handle`, with the
/// allocations it makes counted, then, for a task that asks for it, the strategy's `seal`, with
/// the CPU time it spends on this worker task's thread measured (lesson 4).
pub async fn handle_and_seal<S: Strategy>(
    strategy: &S,
    worker: &mut S::Worker,
    task: TaskSpec,
    ctx: &Arc<Context>,
) -> Completed {
    let (handled, made) = handle_measured(strategy, worker, task, ctx);
    let result = match handled {
        Ok(digest) if task.sealed() => {
            // Timed poll by poll: the CPU the seal costs the thread this worker task runs on
            // (CPU time, so a loaded machine's preemptions do not count).
            let mut seal = std::pin::pin!(strategy.seal(worker, digest, ctx.config.data_size));
            let mut polled = Duration::ZERO;
            let sealed = std::future::poll_fn(|cx| {
                let started = cpu_time::thread();
                let poll = seal.as_mut().poll(cx);
                polled += cpu_time::thread().saturating_sub(started);
                poll
            })
            .await;
            ctx.ledger.record_seal(polled);
            Ok(sealed)
        }
        outcome => outcome,
    };
    Completed {
        task: task.id,
        result,
        made,
    }
}

/// Handles one task and adds the allocations it made to `worker_task_allocations_total`: what a
/// worker task does for every task it takes (`lab bench` measures this path too).
pub fn handle_counted<S: Strategy>(
    strategy: &S,
    worker: &mut S::Worker,
    task: TaskSpec,
    ctx: &Arc<Context>,
) -> Result<u64, TaskError> {
    handle_measured(strategy, worker, task, ctx).0
}

/// [`handle_counted`], also returning what `handle` allocated and how often it grew a buffer
/// (`None` when this thread shares the allocator's overflow slot). The counts are taken around
/// `handle` alone, which runs on one thread; the seal may move between threads.
fn handle_measured<S: Strategy>(
    strategy: &S,
    worker: &mut S::Worker,
    task: TaskSpec,
    ctx: &Arc<Context>,
) -> (Result<u64, TaskError>, Option<(AllocCounts, u64)>) {
    let before = alloc::thread_counts().zip(alloc::thread_reallocations());
    let result = strategy.handle(worker, task, ctx);
    let after = alloc::thread_counts().zip(alloc::thread_reallocations());
    let made = before
        .zip(after)
        .map(|((before, grown), (after, grown_after))| (after.since(before), grown_after - grown));
    if let Some((made, _)) = made {
        ctx.metrics.task_allocations.inc_by(made.allocations);
        ctx.metrics.task_allocated_bytes.inc_by(made.bytes);
    }
    (result, made)
}
