//! The runtime's side of the lessons on `/metrics`: tokio's own runtime metrics and
//! tokio-metrics' task monitors, read when Prometheus scrapes.
//!
//! Blocking the runtime (lesson 4) does not show in the workload's own metrics until it is bad;
//! it shows first as polls that take long (`worker_runtime_poll_time_seconds`,
//! `worker_runtime_long_polls_total`), as busy runtime threads
//! (`worker_runtime_thread_busy_ratio`), and as time other tasks wait to be polled once woken
//! (`worker_task_scheduled_seconds_total`). These are the tools tokio ships for it:
//!
//! - [`tokio::runtime::RuntimeMetrics`] keeps cumulative counters per runtime thread (polls, busy
//!   time, the poll-time histogram...), exactly what Prometheus wants: they are read as they are.
//!   tokio-metrics' `RuntimeMonitor` is not used: it turns the same counters into deltas between
//!   two calls, and Prometheus' `rate()` already does that without a scrape resetting another's
//!   interval.
//! - [`tokio_metrics::TaskMonitor`] measures what the runtime does not: for the tasks it wraps,
//!   how long they waited to be polled after being woken (the scheduling delay), how long their
//!   polls took, and how long they sat idle. The lessons wrap their tasks with [`instrument`];
//!   there is one monitor per [`TaskKind`], process-wide.
//!
//! Reading all of it costs the same with 10 tasks or 100,000: the runtime's counters are per
//! thread and the monitors' are per group, so a scrape does not grow with a leak.

use std::collections::HashMap;
use std::future::Future;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{LazyLock, Mutex};
use std::time::{Duration, Instant};

use prometheus::core::{Collector, Desc};
use prometheus::proto::{Bucket, Histogram, LabelPair, Metric, MetricFamily, MetricType};
use tokio::runtime::{Handle, HistogramConfiguration, LogHistogram, RuntimeMetrics};
use tokio_metrics::{Instrumented, TaskMetrics, TaskMonitor};
use tokio_util::either::Either;

use crate::metrics::set_value;
use crate::tasks::TaskKind;

/// A poll at least this long counts as long: `worker_runtime_long_polls_total`, and the task
/// monitors' slow polls. Tokio's guidance is 10-100 µs between awaits; a millisecond is ten
/// times the upper end, so the lab's own tasks stay under it and a blocking call does not. It is
/// 2^20 ns so that it is a bound of the poll-time histogram, whose buckets double.
pub const LONG_POLL: Duration = Duration::from_nanos(1 << 20);

/// A task woken and left waiting at least this long before its poll counts as a long delay
/// (`worker_task_long_delays_total`): the same millisecond as [`LONG_POLL`], since a task waits
/// that long when the poll before it took that long.
pub const LONG_DELAY: Duration = LONG_POLL;

/// The shortest window the `*_ratio` and `*_mean_*` gauges average over; scrapes closer together
/// than this share a window, so a second scraper (a `curl`) cannot make the gauges jumpy.
const MIN_WINDOW: Duration = Duration::from_secs(1);

/// The poll-time histogram the runtime keeps (set in [`crate::runtime::build`]): buckets that
/// double from 1 µs to 1 s, so each is one `le` line a learner can read, and [`LONG_POLL`] is
/// one of their bounds.
pub fn poll_time_histogram() -> HistogramConfiguration {
    HistogramConfiguration::log(
        LogHistogram::builder()
            .precision_exact(0)
            .min_value(Duration::from_micros(1))
            .max_value(Duration::from_secs(1)),
    )
}

/// One monitor per group, shared by every runtime in the process (a worker process has one).
static MONITORS: LazyLock<[TaskMonitor; 4]> = LazyLock::new(|| {
    TaskKind::ALL.map(|_| {
        let mut builder = TaskMonitor::builder();
        builder
            .with_slow_poll_threshold(LONG_POLL)
            .with_long_delay_threshold(LONG_DELAY);
        builder.build()
    })
});

/// Whether [`instrument`] wraps futures; on unless `lab bench` turns it off to measure its cost.
static MONITORING: AtomicBool = AtomicBool::new(true);

/// The task monitor of `group`, for code that wants tokio-metrics' API itself.
pub fn monitor(group: TaskKind) -> &'static TaskMonitor {
    &MONITORS[group.index()]
}

/// A future as [`instrument`] returns it: monitored, or as it was when monitoring is off.
pub type Monitored<F> = Either<Instrumented<F>, F>;

/// Wraps the future of one task so that its group's monitor measures it; spawn the result:
/// `tokio::spawn(runtime_metrics::instrument(TaskKind::Worker, work(..)))`.
///
/// Wrap the whole task (what is spawned), not a future inside it: the monitor measures the
/// scheduling delay through the waker the runtime gives the task. It costs two clock reads and
/// a few atomic adds per poll.
pub fn instrument<F: Future>(group: TaskKind, future: F) -> Monitored<F> {
    if MONITORING.load(Ordering::Relaxed) {
        Either::Left(monitor(group).instrument(future))
    } else {
        Either::Right(future)
    }
}

/// Turns [`instrument`] on or off for tasks wrapped from now on. Only `lab bench` turns it off,
/// to measure what it costs; the workers never do.
pub fn set_task_monitoring(on: bool) {
    MONITORING.store(on, Ordering::Relaxed);
}

/// What the collector produces per runtime thread (`thread` label), per task group (`kind`
/// label), or once for the runtime.
#[derive(Clone, Copy, PartialEq)]
enum Scope {
    Thread,
    Runtime,
    Group,
}

/// One metric family: name, help, type, scope. The order is the order `collect` fills values in.
type Family = (&'static str, &'static str, MetricType, Scope);

const THREAD_FAMILIES: [Family; 7] = [
    (
        "worker_runtime_thread_busy_seconds_total",
        "Time this tokio runtime thread spent running tasks (not parked); rate() of it is the thread's busy ratio.",
        MetricType::COUNTER,
        Scope::Thread,
    ),
    (
        "worker_runtime_thread_busy_ratio",
        "Fraction of wall time this runtime thread was busy, 0 to 1, over the time since the previous scrape (at least 1 s). Near 1 with little work done: something blocks the thread.",
        MetricType::GAUGE,
        Scope::Thread,
    ),
    (
        "worker_runtime_thread_polls_total",
        "Task polls this runtime thread has made.",
        MetricType::COUNTER,
        Scope::Thread,
    ),
    (
        "worker_runtime_thread_mean_poll_seconds",
        "Mean time of this runtime thread's task polls: tokio's exponentially weighted moving average (multi-thread runtime only; 0 otherwise).",
        MetricType::GAUGE,
        Scope::Thread,
    ),
    (
        "worker_runtime_thread_parks_total",
        "Times this runtime thread ran out of work and parked.",
        MetricType::COUNTER,
        Scope::Thread,
    ),
    (
        "worker_runtime_thread_steals_total",
        "Tasks this runtime thread stole from another thread's queue.",
        MetricType::COUNTER,
        Scope::Thread,
    ),
    (
        "worker_runtime_thread_local_queue_depth",
        "Tasks ready to run in this runtime thread's local queue, waiting for a poll.",
        MetricType::GAUGE,
        Scope::Thread,
    ),
];

const POLL_TIME: &str = "worker_runtime_poll_time_seconds";
const POLL_TIME_HELP: &str = "Duration of task polls on this runtime thread (tokio's poll-time histogram, buckets doubling from 1 µs). _sum is the thread's busy time: tokio keeps no exact sum, and busy time is every poll plus the scheduler's work between them.";
const LONG_POLLS: &str = "worker_runtime_long_polls_total";
const LONG_POLLS_HELP: &str = "Task polls on this runtime thread that took 1.05 ms (2^20 ns) or more: a task that blocked the thread, every other task on it waiting. Counted from the poll-time histogram.";

const RUNTIME_FAMILIES: [Family; 6] = [
    (
        "worker_runtime_budget_forced_yields_total",
        "Times tokio's cooperative budget forced a task to yield (it ran 128 ready operations in one poll): a task that would otherwise hog the thread.",
        MetricType::COUNTER,
        Scope::Runtime,
    ),
    (
        "worker_runtime_blocking_threads",
        "Threads in tokio's blocking pool (spawn_blocking), idle ones included.",
        MetricType::GAUGE,
        Scope::Runtime,
    ),
    (
        "worker_runtime_idle_blocking_threads",
        "Blocking-pool threads waiting for work.",
        MetricType::GAUGE,
        Scope::Runtime,
    ),
    (
        "worker_runtime_blocking_queue_depth",
        "spawn_blocking calls waiting for a blocking-pool thread.",
        MetricType::GAUGE,
        Scope::Runtime,
    ),
    (
        "worker_runtime_spawned_tasks_total",
        "Tasks spawned on the runtime since it started.",
        MetricType::COUNTER,
        Scope::Runtime,
    ),
    (
        "worker_runtime_remote_schedules_total",
        "Tasks woken from outside the runtime's threads (a timer, I/O, another thread), through the global queue.",
        MetricType::COUNTER,
        Scope::Runtime,
    ),
];

const GROUP_FAMILIES: [Family; 15] = [
    (
        "worker_task_instrumented_total",
        "Tasks of this kind wrapped in a tokio-metrics TaskMonitor; minus worker_task_dropped_total, the live ones.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_dropped_total",
        "Monitored tasks of this kind that finished or were cancelled.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_first_polls_total",
        "Monitored tasks of this kind polled at least once.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_first_poll_delay_seconds_total",
        "Time monitored tasks of this kind waited from spawn to their first poll.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_scheduled_total",
        "Times a monitored task of this kind was woken and then polled.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_scheduled_seconds_total",
        "Time monitored tasks of this kind waited to be polled after being woken (scheduling delay); divide its rate by worker_task_scheduled_total's for the mean.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_mean_scheduled_seconds",
        "Mean scheduling delay of monitored tasks of this kind (woken to polled) over the time since the previous scrape (at least 1 s); 0 with no wake-ups.",
        MetricType::GAUGE,
        Scope::Group,
    ),
    (
        "worker_task_long_delays_total",
        "Times a monitored task of this kind waited 1.05 ms (2^20 ns) or more to be polled after being woken.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_long_delay_seconds_total",
        "Time spent in those long scheduling delays.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_polls_total",
        "Polls of monitored tasks of this kind.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_poll_seconds_total",
        "Time spent polling monitored tasks of this kind.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_mean_poll_seconds",
        "Mean poll time of monitored tasks of this kind over the time since the previous scrape (at least 1 s); 0 with no polls.",
        MetricType::GAUGE,
        Scope::Group,
    ),
    (
        "worker_task_slow_polls_total",
        "Polls of monitored tasks of this kind that took 1.05 ms (2^20 ns) or more.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_slow_poll_seconds_total",
        "Time spent in those slow polls.",
        MetricType::COUNTER,
        Scope::Group,
    ),
    (
        "worker_task_idle_seconds_total",
        "Time monitored tasks of this kind sat idle, waiting for something to wake them.",
        MetricType::COUNTER,
        Scope::Group,
    ),
];

/// The runtime and task-monitor metrics, read at scrape time. Register one per registry:
/// `registry.register(Box::new(TokioCollector::new(&handle)))`.
pub struct TokioCollector {
    runtime: Handle,
    descs: Vec<Desc>,
    /// `thread` label values, "0".."n-1", made once.
    threads: Vec<String>,
    /// The poll-time histogram's layout, when the runtime keeps one.
    poll_buckets: Option<PollBuckets>,
    window: Mutex<Window>,
}

/// Where the runtime's poll-time histogram puts its bucket bounds.
struct PollBuckets {
    /// Upper bound in seconds of every bucket but the last, which is open-ended (`+Inf`).
    upper_bounds: Vec<f64>,
    /// The first bucket of polls at least [`LONG_POLL`] long.
    first_long: usize,
}

impl TokioCollector {
    pub fn new(runtime: &Handle) -> TokioCollector {
        let metrics = runtime.metrics();
        let poll_buckets = metrics.poll_time_histogram_enabled().then(|| {
            let buckets = metrics.poll_time_histogram_num_buckets();
            let ranges: Vec<_> = (0..buckets)
                .map(|b| metrics.poll_time_histogram_bucket_range(b))
                .collect();
            PollBuckets {
                upper_bounds: ranges[..buckets - 1]
                    .iter()
                    .map(|r| r.end.as_secs_f64())
                    .collect(),
                first_long: ranges
                    .iter()
                    .position(|r| r.start >= LONG_POLL)
                    .unwrap_or(buckets),
            }
        });
        let mut descs = Vec::new();
        let mut describe = |name: &str, help: &str, label: Option<&str>| {
            let labels = label.map(|l| vec![l.to_owned()]).unwrap_or_default();
            descs.push(
                Desc::new(name.to_owned(), help.to_owned(), labels, HashMap::new())
                    .expect("valid metric"),
            );
        };
        for (name, help, _, scope) in THREAD_FAMILIES
            .iter()
            .chain(&RUNTIME_FAMILIES)
            .chain(&GROUP_FAMILIES)
        {
            let label = match scope {
                Scope::Thread => Some("thread"),
                Scope::Runtime => None,
                Scope::Group => Some("kind"),
            };
            describe(name, help, label);
        }
        if poll_buckets.is_some() {
            describe(POLL_TIME, POLL_TIME_HELP, Some("thread"));
            describe(LONG_POLLS, LONG_POLLS_HELP, Some("thread"));
        }
        let first = Sample::take(&metrics);
        TokioCollector {
            runtime: runtime.clone(),
            descs,
            threads: (0..metrics.num_workers()).map(|w| w.to_string()).collect(),
            poll_buckets,
            window: Mutex::new(Window {
                baseline: first.clone(),
                latest: first,
            }),
        }
    }

    fn thread_values(&self, metrics: &RuntimeMetrics, ratios: &[f64]) -> [Vec<f64>; 7] {
        let per_thread = |f: &dyn Fn(usize) -> f64| (0..self.threads.len()).map(f).collect();
        [
            per_thread(&|w| metrics.worker_total_busy_duration(w).as_secs_f64()),
            ratios.to_vec(),
            per_thread(&|w| metrics.worker_poll_count(w) as f64),
            per_thread(&|w| metrics.worker_mean_poll_time(w).as_secs_f64()),
            per_thread(&|w| metrics.worker_park_count(w) as f64),
            per_thread(&|w| metrics.worker_steal_count(w) as f64),
            per_thread(&|w| metrics.worker_local_queue_depth(w) as f64),
        ]
    }

    fn poll_histograms(
        &self,
        metrics: &RuntimeMetrics,
        buckets: &PollBuckets,
    ) -> [MetricFamily; 2] {
        let mut histograms = Vec::with_capacity(self.threads.len());
        let mut long_polls = Vec::with_capacity(self.threads.len());
        for (w, thread) in self.threads.iter().enumerate() {
            let counts: Vec<u64> = (0..=buckets.upper_bounds.len())
                .map(|b| metrics.poll_time_histogram_bucket_count(w, b))
                .collect();
            let mut histogram = Histogram::default();
            let mut cumulative = 0;
            let le_buckets = counts
                .iter()
                .zip(&buckets.upper_bounds)
                .map(|(&count, &upper_bound)| {
                    cumulative += count;
                    let mut bucket = Bucket::default();
                    bucket.set_upper_bound(upper_bound);
                    bucket.set_cumulative_count(cumulative);
                    bucket
                })
                .collect();
            histogram.set_bucket(le_buckets);
            let total: u64 = counts.iter().sum();
            histogram.set_sample_count(total);
            histogram.set_sample_sum(metrics.worker_total_busy_duration(w).as_secs_f64());
            let mut metric = labelled("thread", thread);
            metric.set_histogram(histogram);
            histograms.push(metric);
            let long: u64 = counts[buckets.first_long.min(counts.len())..].iter().sum();
            long_polls.push(value_metric(
                "thread",
                thread,
                MetricType::COUNTER,
                long as f64,
            ));
        }
        [
            family(POLL_TIME, POLL_TIME_HELP, MetricType::HISTOGRAM, histograms),
            family(LONG_POLLS, LONG_POLLS_HELP, MetricType::COUNTER, long_polls),
        ]
    }
}

impl Collector for TokioCollector {
    fn desc(&self) -> Vec<&Desc> {
        self.descs.iter().collect()
    }

    fn collect(&self) -> Vec<MetricFamily> {
        let metrics = self.runtime.metrics();
        let now = Sample::take(&metrics);
        let (ratios, tasks_window) = {
            let mut window = self.window.lock().unwrap_or_else(|e| e.into_inner());
            window.advance(&now)
        };
        let mut families = Vec::with_capacity(
            THREAD_FAMILIES.len() + RUNTIME_FAMILIES.len() + GROUP_FAMILIES.len() + 2,
        );

        for (&(name, help, kind, _), values) in THREAD_FAMILIES
            .iter()
            .zip(self.thread_values(&metrics, &ratios))
        {
            let series = self
                .threads
                .iter()
                .zip(values)
                .map(|(thread, value)| value_metric("thread", thread, kind, value))
                .collect();
            families.push(family(name, help, kind, series));
        }
        if let Some(buckets) = &self.poll_buckets {
            families.extend(self.poll_histograms(&metrics, buckets));
        }

        let runtime_values = [
            metrics.budget_forced_yield_count() as f64,
            metrics.num_blocking_threads() as f64,
            metrics.num_idle_blocking_threads() as f64,
            metrics.blocking_queue_depth() as f64,
            metrics.spawned_tasks_count() as f64,
            metrics.remote_schedule_count() as f64,
        ];
        for (&(name, help, kind, _), value) in RUNTIME_FAMILIES.iter().zip(runtime_values) {
            let mut metric = Metric::default();
            set_value(&mut metric, kind, value);
            families.push(family(name, help, kind, vec![metric]));
        }

        let group_values = |g: usize| -> [f64; 15] {
            let t = &now.tasks[g];
            let (scheduled_mean, poll_mean) = tasks_window[g];
            [
                t.instrumented_count as f64,
                t.dropped_count as f64,
                t.first_poll_count as f64,
                t.total_first_poll_delay.as_secs_f64(),
                t.total_scheduled_count as f64,
                t.total_scheduled_duration.as_secs_f64(),
                scheduled_mean,
                t.total_long_delay_count as f64,
                t.total_long_delay_duration.as_secs_f64(),
                t.total_poll_count as f64,
                t.total_poll_duration.as_secs_f64(),
                poll_mean,
                t.total_slow_poll_count as f64,
                t.total_slow_poll_duration.as_secs_f64(),
                t.total_idle_duration.as_secs_f64(),
            ]
        };
        let values: Vec<[f64; 15]> = (0..TaskKind::ALL.len()).map(group_values).collect();
        for (i, &(name, help, kind, _)) in GROUP_FAMILIES.iter().enumerate() {
            let series = TaskKind::ALL
                .iter()
                .zip(&values)
                .map(|(group, values)| value_metric("kind", group.label(), kind, values[i]))
                .collect();
            families.push(family(name, help, kind, series));
        }
        families
    }
}

/// The cumulative counters the windowed gauges are computed from.
#[derive(Clone)]
struct Sample {
    at: Instant,
    busy: Vec<Duration>,
    tasks: [TaskMetrics; 4],
}

impl Sample {
    fn take(metrics: &RuntimeMetrics) -> Sample {
        Sample {
            at: Instant::now(),
            busy: (0..metrics.num_workers())
                .map(|w| metrics.worker_total_busy_duration(w))
                .collect(),
            tasks: TaskKind::ALL.map(|g| monitor(g).cumulative()),
        }
    }
}

/// Two samples at least [`MIN_WINDOW`] apart: the gauges are averaged from `baseline` to now.
struct Window {
    baseline: Sample,
    latest: Sample,
}

impl Window {
    /// Moves the window to end at `now`; returns each thread's busy ratio and each group's mean
    /// scheduling delay and mean poll time, in seconds, over it.
    fn advance(&mut self, now: &Sample) -> (Vec<f64>, [(f64, f64); 4]) {
        if now.at.duration_since(self.latest.at) >= MIN_WINDOW {
            self.baseline = std::mem::replace(&mut self.latest, now.clone());
        }
        let base = &self.baseline;
        let elapsed = now.at.duration_since(base.at).as_secs_f64();
        let ratios = now
            .busy
            .iter()
            .zip(&base.busy)
            .map(|(now, then)| {
                if elapsed > 0.0 {
                    // Busy time is counted in batches, so a short window can overshoot a little.
                    (now.saturating_sub(*then).as_secs_f64() / elapsed).clamp(0.0, 1.0)
                } else {
                    0.0
                }
            })
            .collect();
        let means = std::array::from_fn(|g| {
            let (now, then) = (&now.tasks[g], &base.tasks[g]);
            (
                mean(
                    now.total_scheduled_duration
                        .saturating_sub(then.total_scheduled_duration),
                    now.total_scheduled_count
                        .saturating_sub(then.total_scheduled_count),
                ),
                mean(
                    now.total_poll_duration
                        .saturating_sub(then.total_poll_duration),
                    now.total_poll_count.saturating_sub(then.total_poll_count),
                ),
            )
        });
        (ratios, means)
    }
}

fn mean(total: Duration, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        total.as_secs_f64() / count as f64
    }
}

fn labelled(label: &str, value: &str) -> Metric {
    let mut pair = LabelPair::default();
    pair.set_name(label.to_owned());
    pair.set_value(value.to_owned());
    let mut metric = Metric::default();
    metric.set_label(vec![pair]);
    metric
}

fn value_metric(label: &str, label_value: &str, kind: MetricType, value: f64) -> Metric {
    let mut metric = labelled(label, label_value);
    set_value(&mut metric, kind, value);
    metric
}

fn family(name: &str, help: &str, kind: MetricType, metrics: Vec<Metric>) -> MetricFamily {
    let mut family = MetricFamily::default();
    family.set_name(name.to_owned());
    family.set_help(help.to_owned());
    family.set_field_type(kind);
    family.set_metric(metrics);
    family
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn long_poll_is_a_histogram_bound() {
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(1)
            .enable_metrics_poll_time_histogram()
            .metrics_poll_time_histogram_configuration(poll_time_histogram())
            .build()
            .unwrap();
        let metrics = rt.handle().metrics();
        let ranges: Vec<_> = (0..metrics.poll_time_histogram_num_buckets())
            .map(|b| metrics.poll_time_histogram_bucket_range(b))
            .collect();
        assert!(ranges.iter().any(|r| r.start == LONG_POLL), "{ranges:?}");
        assert!(ranges[0].end <= Duration::from_micros(1), "{ranges:?}");
        assert!(ranges.len() <= 24, "{} buckets", ranges.len());
    }

    /// The sum of `name`'s series whose labels include `label`.
    fn value(families: &[MetricFamily], name: &str, label: (&str, &str)) -> f64 {
        let family = families.iter().find(|f| f.name() == name).expect(name);
        family
            .get_metric()
            .iter()
            .filter(|m| {
                label.0.is_empty()
                    || m.get_label()
                        .iter()
                        .any(|l| l.name() == label.0 && l.value() == label.1)
            })
            .map(|m| {
                if family.get_field_type() == MetricType::COUNTER {
                    m.get_counter().get_value()
                } else {
                    m.get_gauge().get_value()
                }
            })
            .sum()
    }

    /// Lesson 4 in miniature: a task that blocks its thread shows as a long poll, and a task it
    /// woke waits at least as long to be polled.
    #[test]
    fn a_blocked_thread_shows_as_long_polls_and_scheduling_delay() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .enable_metrics_poll_time_histogram()
            .metrics_poll_time_histogram_configuration(poll_time_histogram())
            .build()
            .unwrap();
        let collector = TokioCollector::new(rt.handle());
        let helper = ("kind", "helper");
        let before = collector.collect();
        let block = Duration::from_millis(30);
        rt.block_on(async {
            let (tx, rx) = tokio::sync::oneshot::channel::<()>();
            let waiter = tokio::spawn(instrument(TaskKind::Helper, async move {
                let _ = rx.await;
            }));
            let blocker = tokio::spawn(async move {
                // Wakes the waiter, then keeps the only runtime thread from polling it.
                let _ = tx.send(());
                std::thread::sleep(block);
            });
            let _ = tokio::join!(waiter, blocker);
        });
        let after = collector.collect();
        let delta = |name, label| value(&after, name, label) - value(&before, name, label);
        assert!(delta("worker_runtime_long_polls_total", ("", "")) >= 1.0);
        assert!(delta("worker_task_polls_total", helper) >= 2.0);
        assert!(delta("worker_task_scheduled_total", helper) >= 1.0);
        assert!(delta("worker_task_scheduled_seconds_total", helper) >= block.as_secs_f64());
        assert!(delta("worker_task_long_delays_total", helper) >= 1.0);
        assert!(delta("worker_runtime_thread_polls_total", ("thread", "0")) >= 3.0);
    }

    #[test]
    fn means_and_ratios_come_from_the_window() {
        let base = Sample {
            at: Instant::now(),
            busy: vec![Duration::ZERO],
            tasks: [TaskMetrics::default(); 4],
        };
        let mut window = Window {
            baseline: base.clone(),
            latest: base.clone(),
        };
        let mut later = base.clone();
        later.at += Duration::from_secs(2);
        later.busy = vec![Duration::from_millis(500)];
        later.tasks[1].total_scheduled_count = 4;
        later.tasks[1].total_scheduled_duration = Duration::from_millis(8);
        let (ratios, means) = window.advance(&later);
        assert_eq!(ratios, vec![0.25]);
        assert_eq!(means[1].0, 0.002);
        assert_eq!(means[0], (0.0, 0.0));
        // The window moved: a scrape right after averages from `later`'s predecessor...
        let mut soon = later.clone();
        soon.at += Duration::from_millis(10);
        let (ratios, _) = window.advance(&soon);
        assert!((ratios[0] - 0.5 / 2.01).abs() < 1e-9, "{ratios:?}");
    }
}
