//! The metrics every worker exposes at `/metrics`: the original lab's eight, with its names, and
//! the Rust extras a learner needs to see the same problems from the runtime's side.
//!
//! Every series carries `worker_type`, set once as a registry label so that no code path can
//! forget it. Task counters are updated as tasks finish; everything about the runtime and the
//! allocator is read when Prometheus scrapes (`RuntimeCollector`), so a quiet worker costs
//! nothing between scrapes.
//!
//! The allocator and memory figures are the lesson's: what the observers (this very rendering,
//! profiles, HTTP) cost is subtracted and shown in the `worker_observer_*{observer}` metrics
//! instead (see [`crate::observer`]).

use std::collections::HashMap;

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Counter, Gauge, Metric, MetricFamily, MetricType};
use prometheus::{
    Encoder, Gauge as GaugeMetric, Histogram, HistogramOpts, HistogramVec, IntCounter,
    IntCounterVec, IntGauge, IntGaugeVec, Opts, Registry, TextEncoder,
};
use tokio::runtime::Handle;

use crate::alloc;
use crate::kind::WorkerKind;
use crate::lock::LockStats;
use crate::memory::MemoryStats;
use crate::observer::{self, Observer};
use crate::problems::{Problem, Problems};
use crate::task::Operation;

/// Prometheus text exposition format 0.0.4. Prometheus 3 refuses a scrape without it.
pub const CONTENT_TYPE: &str = "text/plain; version=0.0.4; charset=utf-8";

/// Task durations run from microseconds (optimized, small payloads) to tens of milliseconds
/// (bad, large payloads, busy machine); these bounds keep p50/p95 readable across that range.
const DURATION_BUCKETS: [f64; 17] = [
    5e-6, 1e-5, 2.5e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1,
    0.25, 0.5, 1.0,
];

/// The task-level metrics; the runtime-level ones are read at scrape time by `RuntimeCollector`.
pub struct Metrics {
    registry: Registry,
    kind: WorkerKind,
    /// `worker_tasks_processed_total{operation}`: tasks finished, failed ones included.
    pub tasks_processed: IntCounterVec,
    /// `worker_task_errors_total{operation}`: tasks that failed validation.
    pub task_errors: IntCounterVec,
    /// `worker_task_processing_duration_seconds{operation}`: time from dequeue to result.
    pub task_duration: HistogramVec,
    /// `worker_tasks_in_queue`: tasks produced and not yet picked up by a worker.
    pub tasks_in_queue: IntGauge,
    /// `worker_task_allocations_total`: allocation calls made while handling tasks.
    pub task_allocations: IntCounter,
    /// `worker_task_allocated_bytes_total`: bytes allocated while handling tasks.
    pub task_allocated_bytes: IntCounter,
    /// Lessons 4-6: queueing, latency, rejections, lock waits (see [`LessonMetrics`]).
    pub lessons: LessonMetrics,
}

impl Metrics {
    /// Builds the registry for one worker. `runtime` is the tokio runtime whose tasks
    /// `worker_active_goroutines` counts.
    ///
    /// The registry is the `/metrics` instrument's own memory (about 100 KiB of descriptors,
    /// series and label maps), so it is built in that observer's scope: otherwise it would stay
    /// in the lesson's `worker_allocated_memory_bytes` and show as `prometheus::` frames in
    /// every heap profile.
    pub fn new(kind: WorkerKind, runtime: Handle) -> Metrics {
        observer::scope(Observer::Metrics, || Self::build(kind, runtime))
    }

    fn build(kind: WorkerKind, runtime: Handle) -> Metrics {
        let labels = HashMap::from([("worker_type".to_owned(), kind.label().to_owned())]);
        let registry = Registry::new_custom(None, Some(labels)).expect("static registry labels");
        let metrics = Metrics {
            tasks_processed: IntCounterVec::new(
                Opts::new("worker_tasks_processed_total", "Tasks finished, failed ones included."),
                &["operation"],
            )
            .expect("valid metric"),
            task_errors: IntCounterVec::new(
                Opts::new("worker_task_errors_total", "Tasks that failed validation."),
                &["operation"],
            )
            .expect("valid metric"),
            task_duration: HistogramVec::new(
                HistogramOpts::new(
                    "worker_task_processing_duration_seconds",
                    "Time from taking a task off the queue to its result.",
                )
                .buckets(DURATION_BUCKETS.to_vec()),
                &["operation"],
            )
            .expect("valid metric"),
            tasks_in_queue: IntGauge::new(
                "worker_tasks_in_queue",
                "Tasks produced and not yet taken by a worker.",
            )
            .expect("valid metric"),
            task_allocations: IntCounter::new(
                "worker_task_allocations_total",
                "Heap allocation calls made while handling tasks (divide by tasks processed for allocations per task).",
            )
            .expect("valid metric"),
            task_allocated_bytes: IntCounter::new(
                "worker_task_allocated_bytes_total",
                "Bytes allocated while handling tasks.",
            )
            .expect("valid metric"),
            lessons: LessonMetrics::new(),
            registry,
            kind,
        };
        // Create every labelled series up front so both workers show all of them from the first
        // scrape, instead of series appearing as each operation first runs.
        for op in Operation::ALL {
            metrics.tasks_processed.with_label_values(&[op.name()]);
            metrics.task_errors.with_label_values(&[op.name()]);
            metrics.task_duration.with_label_values(&[op.name()]);
        }
        let tokio = Box::new(crate::runtime_metrics::TokioCollector::new(&runtime));
        metrics
            .registry
            .register(tokio)
            .expect("unique metric names");
        let collectors: [Box<dyn Collector>; 7] = [
            Box::new(metrics.tasks_processed.clone()),
            Box::new(metrics.task_errors.clone()),
            Box::new(metrics.task_duration.clone()),
            Box::new(metrics.tasks_in_queue.clone()),
            Box::new(metrics.task_allocations.clone()),
            Box::new(metrics.task_allocated_bytes.clone()),
            Box::new(RuntimeCollector::new(runtime)),
        ];
        for collector in collectors {
            metrics
                .registry
                .register(collector)
                .expect("unique metric names");
        }
        metrics
            .registry
            .register(Box::new(crate::tasks::LiveTasksCollector::default()))
            .expect("unique metric names");
        metrics.lessons.register(&metrics.registry);
        #[cfg(target_os = "linux")]
        metrics
            .registry
            .register(Box::new(ProcessCollector::default()))
            .expect("unique metric names");
        metrics
            .registry
            .register(Box::new(ObserverCollector::new()))
            .expect("unique metric names");
        metrics
    }

    pub fn kind(&self) -> WorkerKind {
        self.kind
    }

    /// The exposition text Prometheus scrapes. Rendering is an observer: its allocations and
    /// CPU time show in `worker_observer_*{observer="metrics"}`, not in the lesson's figures.
    pub fn render(&self) -> Vec<u8> {
        observer::scope(Observer::Metrics, || {
            let mut out = Vec::with_capacity(16 * 1024);
            TextEncoder::new()
                .encode(&self.registry.gather(), &mut out)
                .expect("text encoding into a Vec cannot fail");
            out
        })
    }

    /// Tasks processed so far, all operations.
    pub fn processed_total(&self) -> u64 {
        Self::sum(&self.tasks_processed)
    }

    /// Tasks failed so far, all operations.
    pub fn errors_total(&self) -> u64 {
        Self::sum(&self.task_errors)
    }

    fn sum(vec: &IntCounterVec) -> u64 {
        Operation::ALL
            .iter()
            .map(|op| vec.with_label_values(&[op.name()]).get())
            .sum()
    }
}

/// Reads the runtime and the allocator at scrape time.
struct RuntimeCollector {
    runtime: Handle,
    descs: Vec<Desc>,
}

/// Name, help and type of each metric `RuntimeCollector` produces, in the order it produces them.
const RUNTIME_METRICS: [(&str, &str, MetricType); 9] = [
    (
        "worker_active_goroutines",
        "Live tokio tasks (the guide's goroutines): spawned and not yet finished.",
        MetricType::GAUGE,
    ),
    (
        "worker_allocated_memory_bytes",
        "Bytes in live heap allocations of the workload (jemalloc stats.allocated minus the observers' arenas, the free regions in thread caches and jemalloc's own metadata).",
        MetricType::GAUGE,
    ),
    (
        "worker_total_allocations_bytes",
        "Bytes ever allocated on the heap by the workload, observers excluded (counting allocator); a counter despite the guide's name.",
        MetricType::COUNTER,
    ),
    (
        "worker_gc_runs_total",
        "jemalloc purge sweeps returning freed pages to the OS: Rust has no GC, this is what rises with churn.",
        MetricType::COUNTER,
    ),
    (
        "worker_allocations_total",
        "Heap allocation calls of the workload, observers excluded (counting allocator).",
        MetricType::COUNTER,
    ),
    (
        "worker_resident_memory_bytes",
        "Bytes in the workload's heap pages: jemalloc's active, dirty and muzzy pages of every arena but the observers', less its internal allocations; its base metadata (arenas, extent headers, radix tree) left out.",
        MetricType::GAUGE,
    ),
    (
        "worker_runtime_busy_seconds_total",
        "Time tokio worker threads spent running tasks, summed over threads.",
        MetricType::COUNTER,
    ),
    (
        "worker_runtime_workers",
        "tokio worker threads.",
        MetricType::GAUGE,
    ),
    (
        "worker_runtime_global_queue_depth",
        "Tasks waiting in tokio's global run queue.",
        MetricType::GAUGE,
    ),
];

impl RuntimeCollector {
    fn new(runtime: Handle) -> RuntimeCollector {
        let descs = RUNTIME_METRICS
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    vec![],
                    HashMap::new(),
                )
                .expect("valid metric")
            })
            .collect();
        RuntimeCollector { runtime, descs }
    }
}

impl Collector for RuntimeCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let runtime = self.runtime.metrics();
        let memory = MemoryStats::read();
        let counts = alloc::process_counts();
        let busy: f64 = (0..runtime.num_workers())
            .map(|w| runtime.worker_total_busy_duration(w).as_secs_f64())
            .sum();
        let values = [
            runtime.num_alive_tasks() as f64,
            memory.allocated as f64,
            counts.bytes as f64,
            memory.purges as f64,
            counts.allocations as f64,
            memory.resident as f64,
            busy,
            runtime.num_workers() as f64,
            runtime.global_queue_depth() as f64,
        ];
        RUNTIME_METRICS
            .iter()
            .zip(values)
            .map(|(&(name, help, kind), value)| family(name, help, kind, value))
            .collect()
    }
}

fn family(name: &str, help: &str, kind: MetricType, value: f64) -> MetricFamily {
    labelled_family(name, help, kind, vec![(None, value)])
}

/// A family with one series per value, each with an optional `(label, value)` pair.
fn labelled_family(
    name: &str,
    help: &str,
    kind: MetricType,
    series: Vec<(Option<(&str, &str)>, f64)>,
) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(
        series
            .into_iter()
            .map(|(label, value)| {
                let mut metric = series_metric(kind, value);
                if let Some((name, value)) = label {
                    let mut pair = prometheus::proto::LabelPair::default();
                    pair.set_name(name.to_owned());
                    pair.set_value(value.to_owned());
                    metric.set_label(vec![pair]);
                }
                metric
            })
            .collect(),
    );
    family
}

fn series_metric(kind: MetricType, value: f64) -> Metric {
    let mut metric = Metric::default();
    set_value(&mut metric, kind, value);
    metric
}

/// Gives `metric` `value` as a counter or a gauge, as `kind` says.
pub(crate) fn set_value(metric: &mut Metric, kind: MetricType, value: f64) {
    if kind == MetricType::COUNTER {
        let mut counter = Counter::default();
        counter.set_value(value);
        metric.set_counter(counter);
    } else {
        let mut gauge = Gauge::default();
        gauge.set_value(value);
        metric.set_gauge(gauge);
    }
}

/// What the observers cost, read at scrape time: the observer effect, shown apart from the
/// lesson's figures.
struct ObserverCollector {
    descs: Vec<Desc>,
}

/// Name, help and type of each metric `ObserverCollector` produces, each with an `observer`
/// label (metrics, cpu_profile, heap_profile, task_profile, http).
const OBSERVER_METRICS: [(&str, &str, MetricType); 4] = [
    (
        "worker_observer_memory_bytes",
        "Bytes in live heap allocations made by an observer (profiler, /metrics, HTTP), kept out of worker_allocated_memory_bytes.",
        MetricType::GAUGE,
    ),
    (
        "worker_observer_allocations_total",
        "Heap allocation calls made by an observer, kept out of worker_allocations_total.",
        MetricType::COUNTER,
    ),
    (
        "worker_observer_allocated_bytes_total",
        "Bytes allocated by an observer, kept out of worker_total_allocations_bytes.",
        MetricType::COUNTER,
    ),
    (
        "worker_observer_cpu_seconds_total",
        "Thread CPU time spent by an observer (included in process_cpu_seconds_total).",
        MetricType::COUNTER,
    ),
];

impl ObserverCollector {
    fn new() -> ObserverCollector {
        let descs = OBSERVER_METRICS
            .iter()
            .map(|(name, help, _)| {
                Desc::new(
                    (*name).to_owned(),
                    (*help).to_owned(),
                    vec!["observer".to_owned()],
                    HashMap::new(),
                )
                .expect("valid metric")
            })
            .collect();
        ObserverCollector { descs }
    }
}

impl Collector for ObserverCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let costs = observer::costs();
        let values = |value: fn(&observer::ObserverCost) -> f64| {
            costs
                .iter()
                .map(|(o, cost)| (Some(("observer", o.label())), value(cost)))
                .collect()
        };
        let series: [Vec<_>; 4] = [
            values(|c| c.memory_bytes as f64),
            values(|c| c.allocations.allocations as f64),
            values(|c| c.allocations.bytes as f64),
            values(|c| c.cpu_seconds),
        ];
        OBSERVER_METRICS
            .iter()
            .zip(series)
            .map(|(&(name, help, kind), series)| labelled_family(name, help, kind, series))
            .collect()
    }
}

/// The standard `process_*` metrics, with `process_cpu_seconds_total` to the microsecond.
///
/// The prometheus crate counts CPU time in whole seconds, so a worker busy 5% of the time
/// shows a rate that jumps between 0 and 1/30 instead of a flat 0.05; `getrusage` is exact.
#[cfg(target_os = "linux")]
struct ProcessCollector {
    inner: prometheus::process_collector::ProcessCollector,
}

#[cfg(target_os = "linux")]
impl Default for ProcessCollector {
    fn default() -> Self {
        ProcessCollector {
            inner: prometheus::process_collector::ProcessCollector::for_self(),
        }
    }
}

#[cfg(target_os = "linux")]
impl Collector for ProcessCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.inner.desc()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let mut families = self.inner.collect();
        let seconds = cpu_seconds();
        for family in &mut families {
            if family.name() == "process_cpu_seconds_total" {
                for metric in family.mut_metric() {
                    let mut counter = Counter::default();
                    counter.set_value(seconds);
                    metric.set_counter(counter);
                }
            }
        }
        families
    }
}

/// User plus system CPU time of the whole process.
#[cfg(target_os = "linux")]
pub fn cpu_seconds() -> f64 {
    let mut usage = std::mem::MaybeUninit::<libc::rusage>::zeroed();
    // SAFETY: getrusage fills the struct it is given; RUSAGE_SELF cannot fail on Linux.
    let usage = unsafe {
        libc::getrusage(libc::RUSAGE_SELF, usage.as_mut_ptr());
        usage.assume_init()
    };
    let seconds = |t: libc::timeval| t.tv_sec as f64 + t.tv_usec as f64 / 1e6;
    seconds(usage.ru_utime) + seconds(usage.ru_stime)
}

/// Queueing delays run from microseconds (a worker free) to tens of seconds (a backlog after a
/// burst): the buckets cover both ends.
const QUEUE_BUCKETS: [f64; 19] = [
    1e-5, 5e-5, 1e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 5e-2, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
    10.0, 30.0, 60.0,
];

/// Lock waits run from a microsecond (a short critical section) to tens of milliseconds (a
/// lock held across a task on a busy machine).
const LOCK_WAIT_BUCKETS: [f64; 14] = [
    1e-6, 5e-6, 1e-5, 5e-5, 1e-4, 2.5e-4, 5e-4, 1e-3, 2.5e-3, 5e-3, 1e-2, 2.5e-2, 0.1, 1.0,
];

/// The metrics of lessons 4 (blocking), 5 (contention) and 6 (overload), and which problems a
/// worker has. Recorded by the shared run loop (`pool.rs`) and the instrumented lock
/// (`lock.rs`), so both workers measure them the same way.
pub struct LessonMetrics {
    /// `worker_task_queue_delay_seconds`: from enqueue to a worker taking the task (lessons 4, 6).
    pub queue_delay: Histogram,
    /// `worker_task_latency_seconds`: from enqueue to the task's result, seal included: what a
    /// client of the worker would wait (lessons 4, 5, 6).
    pub task_latency: Histogram,
    /// `worker_tasks_rejected_total`: tasks shed because the bounded queue stayed full (lesson 6).
    pub tasks_rejected: IntCounter,
    /// `worker_producer_rate`: tasks per second offered right now, bursts included (lesson 6).
    pub producer_rate: GaugeMetric,
    /// `worker_lock_wait_seconds{lock}`: waits of contended acquisitions (lesson 5).
    pub lock_wait: HistogramVec,
    /// `worker_lock_acquisitions_total{lock}`: every acquisition, waiting or not (lesson 5).
    pub lock_acquisitions: IntCounterVec,
    /// `worker_problem_enabled{problem}`: 1 for each problem this worker has, else 0.
    pub problem_enabled: IntGaugeVec,
}

impl LessonMetrics {
    fn new() -> LessonMetrics {
        LessonMetrics {
            queue_delay: Histogram::with_opts(
                HistogramOpts::new(
                    "worker_task_queue_delay_seconds",
                    "Time from enqueuing a task to a worker taking it.",
                )
                .buckets(QUEUE_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            task_latency: Histogram::with_opts(
                HistogramOpts::new(
                    "worker_task_latency_seconds",
                    "Time from enqueuing a task to its result: queueing, handling and sealing.",
                )
                .buckets(QUEUE_BUCKETS.to_vec()),
            )
            .expect("valid metric"),
            tasks_rejected: IntCounter::new(
                "worker_tasks_rejected_total",
                "Tasks shed because the bounded queue stayed full (backpressure).",
            )
            .expect("valid metric"),
            producer_rate: GaugeMetric::new(
                "worker_producer_rate",
                "Tasks per second the producer offers now, bursts included.",
            )
            .expect("valid metric"),
            lock_wait: HistogramVec::new(
                HistogramOpts::new(
                    "worker_lock_wait_seconds",
                    "Time spent waiting for a lab lock, per contended acquisition (_count: contentions, _sum: total wait).",
                )
                .buckets(LOCK_WAIT_BUCKETS.to_vec()),
                &["lock"],
            )
            .expect("valid metric"),
            lock_acquisitions: IntCounterVec::new(
                Opts::new(
                    "worker_lock_acquisitions_total",
                    "Acquisitions of a lab lock, contended or not.",
                ),
                &["lock"],
            )
            .expect("valid metric"),
            problem_enabled: IntGaugeVec::new(
                Opts::new(
                    "worker_problem_enabled",
                    "1 for each problem this worker has (--problems), else 0.",
                ),
                &["problem"],
            )
            .expect("valid metric"),
        }
    }

    fn register(&self, registry: &Registry) {
        let collectors: [Box<dyn Collector>; 7] = [
            Box::new(self.queue_delay.clone()),
            Box::new(self.task_latency.clone()),
            Box::new(self.tasks_rejected.clone()),
            Box::new(self.producer_rate.clone()),
            Box::new(self.lock_wait.clone()),
            Box::new(self.lock_acquisitions.clone()),
            Box::new(self.problem_enabled.clone()),
        ];
        for collector in collectors {
            registry.register(collector).expect("unique metric names");
        }
    }

    /// The handles of the lab lock named `lock`; its series exist from the first scrape on.
    /// Creating a series allocates in the registry: the `/metrics` observer's memory.
    pub fn lock_stats(&self, lock: &str) -> LockStats {
        observer::scope(Observer::Metrics, || LockStats {
            wait: self.lock_wait.with_label_values(&[lock]),
            acquisitions: self.lock_acquisitions.with_label_values(&[lock]),
        })
    }

    /// Sets `worker_problem_enabled` for every problem.
    pub fn set_problems(&self, problems: Problems) {
        // As in `lock_stats`: the series are the `/metrics` observer's memory.
        observer::scope(Observer::Metrics, || {
            for problem in Problem::ALL {
                self.problem_enabled
                    .with_label_values(&[problem.name()])
                    .set(i64::from(problems.has(problem)));
            }
        })
    }
}
