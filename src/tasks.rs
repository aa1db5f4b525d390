//! The registry of live tasks: every task the workers spawn goes through [`spawn`], which files
//! it under its [`TaskKind`] with the place it was spawned, the function it runs, whether it is
//! being polled right now, its age and how often it has been polled, and removes it when it ends.
//!
//! The task profile (`/debug/pprof/goroutine`), the `worker_live_tasks{kind}` metric and the
//! exit summary's LEAK line all read this registry, never tokio's runtime internals. That is the
//! point: reading it is a short walk over a few locked maps that never waits for a task, so a
//! worker with 100k leaked tasks can be looked at as often as a learner likes and never wedges.
//! tokio's own task dumps (`Handle::dump`) stop the runtime and poll every task in tracing mode;
//! on tokio 1.47-1.54 they can spin a worker thread forever (tokio-rs/tokio#7478) or leave it
//! blocked at their barrier (#8370), and no timeout around them can undo that. The lab does not
//! use them.
//!
//! What a learner needs from a goroutine profile is *what* a leaked task is (the function it
//! runs: `bad::audit_on_completion`), *where it was created* (Go's "created by": the line of
//! `bad.rs` that spawned it, from `#[track_caller]`), and how many there are. The function is
//! the spawned future's type name, which the compiler gives for free
//! (`profiling_lab::bad::audit_on_completion::{{closure}}` is the future of that `async fn`).
//!
//! Registering a task costs one small allocation and a lock on one of [`SHARDS`] maps, once per
//! spawn; each poll adds two relaxed atomic updates and a clock read. The optimized worker
//! spawns one helper for the whole run, so it pays nothing per task.

use std::any::type_name;
use std::collections::HashMap;
use std::future::Future;
use std::panic::Location;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, LazyLock, Mutex, MutexGuard};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Gauge, LabelPair, Metric, MetricFamily, MetricType};
use tokio::task::JoinHandle;

use crate::runtime_metrics::{self, Monitored};

/// Maps the registry is split into, so that spawns and exits on different threads rarely meet
/// on one lock, and a profile never holds one lock for long.
pub const SHARDS: usize = 32;

/// What a task is for; the label values of `worker_live_tasks{kind}` and of the task profile.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskKind {
    /// Tasks a lesson's code spawns: audit helpers, progress reporters. The ones that can leak.
    Helper,
    /// The pool's producer and worker tasks.
    Worker,
    /// HTTP connections (and the loop accepting them).
    Http,
    /// Profile, dump or scrape work spawned as a task.
    Observer,
}

impl TaskKind {
    pub const ALL: [TaskKind; 4] = [
        TaskKind::Helper,
        TaskKind::Worker,
        TaskKind::Http,
        TaskKind::Observer,
    ];

    pub fn label(self) -> &'static str {
        match self {
            TaskKind::Helper => "helper",
            TaskKind::Worker => "worker",
            TaskKind::Http => "http",
            TaskKind::Observer => "observer",
        }
    }

    pub(crate) fn index(self) -> usize {
        self as usize
    }
}

impl std::fmt::Display for TaskKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.label())
    }
}

/// Whether a task is being polled right now (Go's `running`) or waiting to be woken.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum TaskState {
    Running,
    Idle,
}

impl TaskState {
    pub fn label(self) -> &'static str {
        match self {
            TaskState::Running => "running",
            TaskState::Idle => "idle",
        }
    }
}

/// One live task, as a profile sees it.
#[derive(Debug, Clone, Copy)]
pub struct TaskInfo {
    /// Numbered from 1 in spawn order, like goroutines.
    pub id: u64,
    pub kind: TaskKind,
    /// The spawned future's type, e.g. `profiling_lab::bad::audit_on_completion::{{closure}}`.
    pub future: &'static str,
    /// Where [`spawn`] was called (through `#[track_caller]` callers such as
    /// `pool::spawn_helper`).
    pub spawned_at: &'static Location<'static>,
    pub state: TaskState,
    /// Time since it was spawned.
    pub age: Duration,
    /// Time since it last started or finished a poll: how long it has been waiting when idle.
    pub idle_for: Duration,
    pub polls: u64,
}

impl TaskInfo {
    /// The function the task runs, as a profile names it: the future's type without the
    /// `::{{closure}}` the compiler appends for an `async fn`'s body.
    pub fn function(&self) -> &'static str {
        function_name(self.future)
    }
}

/// `path::to::f::{{closure}}` -> `path::to::f`; a future run in an observer's scope
/// (`observer::Observed<F>`) is named for `F`, the function it runs, not for the wrapper.
pub fn function_name(future: &'static str) -> &'static str {
    let mut name = future;
    let observed = type_name::<crate::observer::Observed<()>>();
    let wrapper = observed.strip_suffix("()>").unwrap_or(observed);
    if let Some(inner) = name
        .strip_prefix(wrapper)
        .and_then(|rest| rest.strip_suffix('>'))
    {
        name = inner;
    }
    while let Some(outer) = name.strip_suffix("::{{closure}}") {
        name = outer;
    }
    name
}

/// What the registry keeps per task; shared between the registry and the task's own wrapper.
struct Entry {
    id: u64,
    kind: TaskKind,
    future: &'static str,
    spawned_at: &'static Location<'static>,
    spawned: Instant,
    running: AtomicBool,
    polls: AtomicU64,
    /// Nanoseconds since [`Registry::epoch`] when the task last started or finished a poll.
    changed: AtomicU64,
}

struct Registry {
    shards: [Mutex<HashMap<u64, Arc<Entry>>>; SHARDS],
    next_id: AtomicU64,
    live: [AtomicI64; TaskKind::ALL.len()],
    epoch: Instant,
}

static REGISTRY: LazyLock<Registry> = LazyLock::new(|| Registry {
    shards: std::array::from_fn(|_| Mutex::new(HashMap::new())),
    next_id: AtomicU64::new(1),
    live: std::array::from_fn(|_| AtomicI64::new(0)),
    epoch: Instant::now(),
});

impl Registry {
    fn shard(&self, id: u64) -> MutexGuard<'_, HashMap<u64, Arc<Entry>>> {
        // A panic while the lock is held cannot leave a map half-updated: insert and remove
        // are single calls.
        self.shards[id as usize % SHARDS]
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    fn now_nanos(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }
}

/// Spawns `future` on the current tokio runtime as a task of `kind`, registered until it ends
/// (finished, aborted or dropped with the runtime). The spawn site recorded is the caller's, or
/// the first caller up the stack that is not `#[track_caller]`.
///
/// # Panics
/// Outside a tokio runtime, as `tokio::spawn` does.
#[track_caller]
pub fn spawn<F>(kind: TaskKind, future: F) -> JoinHandle<F::Output>
where
    F: Future + Send + 'static,
    F::Output: Send + 'static,
{
    tokio::spawn(track(kind, future))
}

/// Wraps `future` so that it is registered as a task of `kind` from now until it is dropped.
/// [`spawn`] is this plus `tokio::spawn`; use this one to spawn on a specific handle or a
/// `JoinSet`.
#[track_caller]
pub fn track<F: Future>(kind: TaskKind, future: F) -> Tracked<F> {
    let registry = &*REGISTRY;
    let id = registry.next_id.fetch_add(1, Ordering::Relaxed);
    let entry = Arc::new(Entry {
        id,
        kind,
        future: type_name::<F>(),
        spawned_at: Location::caller(),
        spawned: Instant::now(),
        running: AtomicBool::new(false),
        polls: AtomicU64::new(0),
        changed: AtomicU64::new(registry.now_nanos()),
    });
    registry.shard(id).insert(id, Arc::clone(&entry));
    registry.live[kind.index()].fetch_add(1, Ordering::Relaxed);
    Tracked {
        // Every registered task is also measured by its kind's tokio-metrics task monitor
        // (scheduling delay, slow polls: `worker_task_*{kind}`).
        future: runtime_metrics::instrument(kind, future),
        registration: Registration(entry),
    }
}

pin_project_lite::pin_project! {
    /// A future registered in the task registry; see [`track`].
    pub struct Tracked<F> {
        // Declared first, so dropped first: the task counts as live until its future is gone.
        #[pin]
        future: Monitored<F>,
        registration: Registration,
    }
}

impl<F: Future> Future for Tracked<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let this = self.project();
        let entry = &this.registration.0;
        let registry = &*REGISTRY;
        entry.running.store(true, Ordering::Relaxed);
        entry.polls.fetch_add(1, Ordering::Relaxed);
        entry.changed.store(registry.now_nanos(), Ordering::Relaxed);
        // Marks the task idle again even if the poll panics (tokio catches task panics).
        let _idle = IdleOnExit(entry);
        this.future.poll(cx)
    }
}

struct IdleOnExit<'a>(&'a Entry);

impl Drop for IdleOnExit<'_> {
    fn drop(&mut self) {
        self.0.running.store(false, Ordering::Relaxed);
        self.0
            .changed
            .store(REGISTRY.now_nanos(), Ordering::Relaxed);
    }
}

/// Removes the task from the registry when dropped.
struct Registration(Arc<Entry>);

impl Drop for Registration {
    fn drop(&mut self) {
        let registry = &*REGISTRY;
        registry.shard(self.0.id).remove(&self.0.id);
        registry.live[self.0.kind.index()].fetch_sub(1, Ordering::Relaxed);
    }
}

/// Live tasks of `kind`.
pub fn live(kind: TaskKind) -> usize {
    REGISTRY.live[kind.index()].load(Ordering::Relaxed).max(0) as usize
}

/// Live tasks of every kind, in [`TaskKind::ALL`] order.
pub fn live_by_kind() -> [(TaskKind, usize); TaskKind::ALL.len()] {
    TaskKind::ALL.map(|kind| (kind, live(kind)))
}

/// Every live registered task, in no particular order.
///
/// Locks one shard at a time for as long as it takes to copy its entries, so spawns and exits
/// wait for at most a few milliseconds even with 100k tasks; never waits for a task. Call it
/// off the runtime's threads (`spawn_blocking`) when the registry may be large.
pub fn snapshot() -> Vec<TaskInfo> {
    let registry = &*REGISTRY;
    let total: i64 = registry
        .live
        .iter()
        .map(|n| n.load(Ordering::Relaxed))
        .sum();
    let mut tasks = Vec::with_capacity(total.max(0) as usize + 64);
    let now = Instant::now();
    let now_nanos = registry.now_nanos();
    for shard in &registry.shards {
        let shard = shard.lock().unwrap_or_else(|e| e.into_inner());
        tasks.extend(shard.values().map(|entry| {
            let changed = entry.changed.load(Ordering::Relaxed);
            TaskInfo {
                id: entry.id,
                kind: entry.kind,
                future: entry.future,
                spawned_at: entry.spawned_at,
                state: if entry.running.load(Ordering::Relaxed) {
                    TaskState::Running
                } else {
                    TaskState::Idle
                },
                age: now.saturating_duration_since(entry.spawned),
                idle_for: Duration::from_nanos(now_nanos.saturating_sub(changed)),
                polls: entry.polls.load(Ordering::Relaxed),
            }
        }));
    }
    tasks
}

/// `worker_live_tasks{kind}`, read from the registry when Prometheus scrapes.
pub struct LiveTasksCollector {
    desc: Desc,
}

/// The metric's name, for the dashboard and the tests.
pub const LIVE_TASKS_METRIC: &str = "worker_live_tasks";

impl Default for LiveTasksCollector {
    fn default() -> Self {
        LiveTasksCollector {
            desc: Desc::new(
                LIVE_TASKS_METRIC.to_owned(),
                LIVE_TASKS_HELP.to_owned(),
                vec!["kind".to_owned()],
                HashMap::new(),
            )
            .expect("valid metric"),
        }
    }
}

const LIVE_TASKS_HELP: &str = "Live tasks spawned through the task registry, by kind: helper (a lesson's helpers, \
     the ones that leak), worker (the pool), http (connections), observer (profile work).";

impl Collector for LiveTasksCollector {
    fn desc(&self) -> Vec<&Desc> {
        vec![&self.desc]
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics = live_by_kind()
            .into_iter()
            .map(|(kind, n)| {
                let mut label = LabelPair::default();
                label.set_name("kind".to_owned());
                label.set_value(kind.label().to_owned());
                let mut gauge = Gauge::default();
                gauge.set_value(n as f64);
                let mut metric = Metric::default();
                metric.set_label(vec![label]);
                metric.set_gauge(gauge);
                metric
            })
            .collect();
        let mut family = MetricFamily::default();
        family.set_name(LIVE_TASKS_METRIC.to_owned());
        family.set_help(LIVE_TASKS_HELP.to_owned());
        family.set_field_type(MetricType::GAUGE);
        family.set_metric(metrics);
        vec![family]
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn waits_forever(rx: tokio::sync::oneshot::Receiver<()>) {
        let _ = rx.await;
    }

    fn ours(line: u32) -> Vec<TaskInfo> {
        snapshot()
            .into_iter()
            .filter(|t| t.spawned_at.file() == file!() && t.spawned_at.line() == line)
            .collect()
    }

    #[test]
    fn registers_while_alive_and_forgets_when_done() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap();
        rt.block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel();
            let line = line!() + 1;
            let handle = spawn(TaskKind::Observer, waits_forever(rx));
            tokio::task::yield_now().await;
            let found = ours(line);
            assert_eq!(found.len(), 1, "{found:?}");
            let task = found[0];
            assert_eq!(task.kind, TaskKind::Observer);
            assert_eq!(task.state, TaskState::Idle);
            assert_eq!(task.polls, 1);
            assert_eq!(
                task.function(),
                "profiling_lab::tasks::tests::waits_forever"
            );
            assert!(live(TaskKind::Observer) >= 1);
            tx.send(()).unwrap();
            handle.await.unwrap();
            assert!(ours(line).is_empty(), "finished tasks leave the registry");

            let (_tx, rx) = tokio::sync::oneshot::channel::<()>();
            let line = line!() + 1;
            let handle = spawn(TaskKind::Observer, waits_forever(rx));
            tokio::task::yield_now().await;
            handle.abort();
            let _ = handle.await;
            assert!(ours(line).is_empty(), "aborted tasks leave the registry");
        });
    }

    #[test]
    fn a_task_sees_itself_running() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let line = line!() + 2;
        let state = rt.block_on(async {
            spawn(TaskKind::Observer, async move { ours(line)[0].state })
                .await
                .unwrap()
        });
        assert_eq!(state, TaskState::Running);
    }

    #[test]
    fn function_names_drop_the_closure_suffix() {
        assert_eq!(
            function_name("profiling_lab::bad::audit_on_completion::{{closure}}"),
            "profiling_lab::bad::audit_on_completion"
        );
        assert_eq!(
            function_name("profiling_lab::pool::work<profiling_lab::bad::Bad>::{{closure}}"),
            "profiling_lab::pool::work<profiling_lab::bad::Bad>"
        );
        assert_eq!(
            function_name(
                "profiling_lab::observer::Observed<profiling_lab::server::serve::{{closure}}>"
            ),
            "profiling_lab::server::serve"
        );
    }
}
