//! The comparison's figures: what each worker did over the run, the bad/optimized ratio of each,
//! and the JSON form of the whole report.
//!
//! Every figure is computed over the sampling window, from the first sample to the last, the
//! way a Prometheus query over the run would: counters as increases (so start-up costs before
//! the first sample do not count), gauges as read, latency quantiles from the histogram's
//! increase with `histogram_quantile`'s interpolation.

use serde::Serialize;
use serde::ser::{SerializeMap, Serializer};

use super::sample::Sample;
use super::stats::{bucket_increase, histogram_quantile, slope};

/// One figure of the report; its key is what JSON and `--fail-if` call it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    LiveTasksStart,
    LiveTasksEnd,
    LiveTasksSlope,
    AllocatedBytesEnd,
    AllocatedBytesPeak,
    ResidentBytesEnd,
    ResidentBytesPeak,
    BytesPerTask,
    AllocationsPerTask,
    GcRate,
    TasksProcessed,
    Throughput,
    LatencyP50,
    LatencyP95,
    LatencyP99,
    ErrorRate,
    CpuPerTask,
    // Lesson 4: blocking the runtime.
    PollTimeMax,
    PollTimeP99,
    MetricsLatencyP99,
    TaskLatencyP99,
    // Lesson 5: lock contention.
    LockWaitPerTask,
    // Lesson 6: overload without backpressure.
    QueueDepthMax,
    QueueDelayP99,
    TasksRejected,
}

impl Metric {
    /// In the order the table shows them.
    pub const ALL: [Metric; 25] = [
        Metric::LiveTasksStart,
        Metric::LiveTasksEnd,
        Metric::LiveTasksSlope,
        Metric::AllocatedBytesEnd,
        Metric::AllocatedBytesPeak,
        Metric::ResidentBytesEnd,
        Metric::ResidentBytesPeak,
        Metric::BytesPerTask,
        Metric::AllocationsPerTask,
        Metric::GcRate,
        Metric::TasksProcessed,
        Metric::Throughput,
        Metric::LatencyP50,
        Metric::LatencyP95,
        Metric::LatencyP99,
        Metric::ErrorRate,
        Metric::CpuPerTask,
        Metric::PollTimeMax,
        Metric::PollTimeP99,
        Metric::MetricsLatencyP99,
        Metric::TaskLatencyP99,
        Metric::LockWaitPerTask,
        Metric::QueueDepthMax,
        Metric::QueueDelayP99,
        Metric::TasksRejected,
    ];

    /// The name in JSON and in `--fail-if`.
    pub fn key(self) -> &'static str {
        self.info().0
    }

    /// The row's name in the table.
    pub fn label(self) -> &'static str {
        self.info().1
    }

    /// The unit of the value in JSON and in `--fail-if` (the table may scale it).
    pub fn unit(self) -> &'static str {
        self.info().2
    }

    pub fn from_key(key: &str) -> Option<Metric> {
        Metric::ALL.into_iter().find(|m| m.key() == key)
    }

    fn info(self) -> (&'static str, &'static str, &'static str) {
        match self {
            Metric::LiveTasksStart => ("live_tasks_start", "live tasks at start", "tasks"),
            Metric::LiveTasksEnd => ("live_tasks_end", "live tasks at end", "tasks"),
            Metric::LiveTasksSlope => (
                "live_tasks_slope",
                "live-task slope (tasks/min)",
                "tasks/min",
            ),
            Metric::AllocatedBytesEnd => {
                ("allocated_bytes_end", "allocated memory at end", "bytes")
            }
            Metric::AllocatedBytesPeak => {
                ("allocated_bytes_peak", "allocated memory, peak", "bytes")
            }
            Metric::ResidentBytesEnd => ("resident_bytes_end", "resident memory at end", "bytes"),
            Metric::ResidentBytesPeak => ("resident_bytes_peak", "resident memory, peak", "bytes"),
            Metric::BytesPerTask => ("bytes_per_task", "bytes allocated per task", "bytes"),
            Metric::AllocationsPerTask => (
                "allocations_per_task",
                "allocations per task",
                "allocations",
            ),
            Metric::GcRate => ("gc_rate", "GC-analogue: purges/s", "purges/s"),
            Metric::TasksProcessed => ("tasks_processed", "tasks processed", "tasks"),
            Metric::Throughput => ("throughput", "throughput (tasks/s)", "tasks/s"),
            Metric::LatencyP50 => ("latency_p50", "latency p50", "seconds"),
            Metric::LatencyP95 => ("latency_p95", "latency p95", "seconds"),
            Metric::LatencyP99 => ("latency_p99", "latency p99", "seconds"),
            Metric::ErrorRate => ("error_rate", "error rate", "fraction of tasks"),
            Metric::CpuPerTask => ("cpu_per_task", "CPU per task", "seconds"),
            // The poll-time histogram's buckets double: its max is the bound of the highest
            // bucket any poll reached, not an exact duration.
            Metric::PollTimeMax => ("poll_time_max", "task poll, max (bucket bound)", "seconds"),
            Metric::PollTimeP99 => ("poll_time_p99", "task poll p99", "seconds"),
            Metric::MetricsLatencyP99 => ("metrics_latency_p99", "/metrics latency p99", "seconds"),
            Metric::TaskLatencyP99 => ("task_latency_p99", "enqueue-to-result p99", "seconds"),
            Metric::LockWaitPerTask => ("lock_wait_per_task", "lock wait per task", "seconds"),
            Metric::QueueDepthMax => ("queue_depth_max", "tasks in queue, max", "tasks"),
            Metric::QueueDelayP99 => ("queue_delay_p99", "enqueue-to-start p99", "seconds"),
            Metric::TasksRejected => ("tasks_rejected", "tasks rejected (shed)", "tasks"),
        }
    }
}

/// One value per [`Metric`]; `None` where the run gives none (no tasks processed, say).
#[derive(Debug, Clone, PartialEq)]
pub struct Figures([Option<f64>; Metric::ALL.len()]);

impl Figures {
    pub fn get(&self, metric: Metric) -> Option<f64> {
        self.0[metric as usize]
    }

    fn set(&mut self, metric: Metric, value: Option<f64>) {
        self.0[metric as usize] = value.filter(|v| !v.is_nan());
    }

    /// A worker's figures from its samples, in time order.
    pub fn from_samples(samples: &[Sample]) -> Figures {
        let mut figures = Figures([None; Metric::ALL.len()]);
        let (Some(first), Some(last)) = (samples.first(), samples.last()) else {
            return figures;
        };
        let seconds = last.t - first.t;
        let processed = last.processed - first.processed;
        let per_second = |increase: f64| (seconds > 0.0).then(|| increase / seconds);
        let per_task = |increase: f64| (processed > 0.0).then(|| increase / processed);
        let peak = |value: fn(&Sample) -> f64| samples.iter().map(value).reduce(f64::max);
        let live: Vec<(f64, f64)> = samples.iter().map(|s| (s.t / 60.0, s.live_tasks)).collect();
        let latency = bucket_increase(&last.latency_buckets, &first.latency_buckets);

        use Metric::*;
        figures.set(LiveTasksStart, Some(first.live_tasks));
        figures.set(LiveTasksEnd, Some(last.live_tasks));
        figures.set(LiveTasksSlope, slope(&live));
        figures.set(AllocatedBytesEnd, Some(last.allocated_bytes));
        figures.set(AllocatedBytesPeak, peak(|s| s.allocated_bytes));
        figures.set(ResidentBytesEnd, Some(last.resident_bytes));
        figures.set(ResidentBytesPeak, peak(|s| s.resident_bytes));
        figures.set(
            BytesPerTask,
            per_task(last.task_allocated_bytes - first.task_allocated_bytes),
        );
        figures.set(
            AllocationsPerTask,
            per_task(last.task_allocations - first.task_allocations),
        );
        figures.set(GcRate, per_second(last.gc_runs - first.gc_runs));
        figures.set(TasksProcessed, Some(processed));
        figures.set(Throughput, per_second(processed));
        figures.set(LatencyP50, histogram_quantile(0.50, &latency));
        figures.set(LatencyP95, histogram_quantile(0.95, &latency));
        figures.set(LatencyP99, histogram_quantile(0.99, &latency));
        figures.set(ErrorRate, per_task(last.errors - first.errors));
        figures.set(CpuPerTask, per_task(last.cpu_seconds - first.cpu_seconds));

        // Lessons 4-6: `None` where the worker does not serve the metric.
        let (l0, l1) = (&first.lessons, &last.lessons);
        let increase = |a: Option<f64>, b: Option<f64>| Some(b? - a?);
        let poll = bucket_increase(&l1.poll_buckets, &l0.poll_buckets);
        figures.set(PollTimeMax, histogram_quantile(1.0, &poll));
        figures.set(PollTimeP99, histogram_quantile(0.99, &poll));
        let scrapes: Vec<f64> = samples
            .iter()
            .filter_map(|s| s.lessons.scrape_seconds)
            .collect();
        figures.set(MetricsLatencyP99, nearest_rank(0.99, scrapes));
        figures.set(
            TaskLatencyP99,
            histogram_quantile(
                0.99,
                &bucket_increase(&l1.task_latency_buckets, &l0.task_latency_buckets),
            ),
        );
        figures.set(
            LockWaitPerTask,
            increase(l0.lock_wait_seconds, l1.lock_wait_seconds).and_then(per_task),
        );
        figures.set(QueueDepthMax, peak(|s| s.queue));
        figures.set(
            QueueDelayP99,
            histogram_quantile(
                0.99,
                &bucket_increase(&l1.queue_delay_buckets, &l0.queue_delay_buckets),
            ),
        );
        figures.set(TasksRejected, increase(l0.rejected, l1.rejected));
        figures
    }

    /// bad / optimized for each metric. Infinite when only the optimized value is 0 (the
    /// lesson: "optimized makes no allocations"), `None` when both are 0 or one is missing.
    pub fn ratio(bad: &Figures, optimized: &Figures) -> Figures {
        let mut ratio = Figures([None; Metric::ALL.len()]);
        for metric in Metric::ALL {
            let value = match (bad.get(metric), optimized.get(metric)) {
                (Some(b), Some(o)) if o != 0.0 => Some(b / o),
                (Some(b), Some(_)) if b != 0.0 => Some(f64::INFINITY.copysign(b)),
                _ => None,
            };
            ratio.set(metric, value);
        }
        ratio
    }
}

/// The `q` quantile (0 to 1) of `values` by the nearest-rank method: an observed value, never an
/// interpolated one (`lab compare`'s own scrape timings are a few dozen values, not a
/// histogram). `None` without values.
pub fn nearest_rank(q: f64, mut values: Vec<f64>) -> Option<f64> {
    if values.is_empty() || !(0.0..=1.0).contains(&q) {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = (q * values.len() as f64).ceil() as usize;
    Some(values[rank.clamp(1, values.len()) - 1])
}

/// A JSON object keyed by metric, in table order. JSON has no infinity: an infinite ratio is
/// written as `null`, like an undefined one, and the table says which it was.
impl Serialize for Figures {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Metric::ALL.len()))?;
        for metric in Metric::ALL {
            map.serialize_entry(metric.key(), &self.get(metric).filter(|v| v.is_finite()))?;
        }
        map.end()
    }
}

/// The unit of every metric, so that a machine reading the JSON need not guess.
#[derive(Debug, Clone, Copy)]
pub struct Units;

impl Serialize for Units {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        let mut map = serializer.serialize_map(Some(Metric::ALL.len()))?;
        for metric in Metric::ALL {
            map.serialize_entry(metric.key(), metric.unit())?;
        }
        map.end()
    }
}

/// The flags both workers ran with, and how they were sampled.
#[derive(Debug, Clone, Serialize)]
pub struct Settings {
    /// How long both workers ran before the first sample.
    pub warmup_seconds: f64,
    pub duration_seconds: f64,
    pub interval_seconds: f64,
    pub rate: u32,
    pub data_size: u64,
    pub tasks: u64,
    pub workers: u64,
    pub seed: u64,
}

impl Settings {
    /// The worker flags, as a command line would show them.
    pub fn worker_flags(&self) -> String {
        format!(
            "--rate {} --data-size {} --tasks {} --workers {} --seed {}",
            self.rate, self.data_size, self.tasks, self.workers, self.seed
        )
    }
}

/// How one `--fail-if` threshold came out.
#[derive(Debug, Clone, Serialize)]
pub struct ThresholdResult {
    pub expression: String,
    /// The value it was checked against (`null` when the run has none).
    pub value: Option<f64>,
    /// Whether the expression held, so the run fails.
    pub failed: bool,
}

/// A profile a worker wrote at exit (`--profiles`).
#[derive(Debug, Clone, Serialize)]
pub struct ProfileFile {
    pub worker: String,
    /// `cpu` or `heap`.
    pub kind: String,
    pub path: String,
}

/// What the workers printed when they stopped.
#[derive(Debug, Clone, Serialize)]
pub struct ExitSummaries {
    pub bad: String,
    pub optimized: String,
}

/// The whole comparison, as `--json` prints it and `--out` saves it.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub settings: Settings,
    /// Seconds from the first sample to the last.
    pub elapsed_seconds: f64,
    pub samples_per_worker: usize,
    pub units: Units,
    pub bad: Figures,
    pub optimized: Figures,
    /// bad / optimized per metric.
    pub ratio: Figures,
    pub thresholds: Vec<ThresholdResult>,
    pub profiles: Vec<ProfileFile>,
    pub exit_summaries: ExitSummaries,
}

impl Report {
    pub fn new(
        settings: Settings,
        bad: &[Sample],
        optimized: &[Sample],
        exit_summaries: ExitSummaries,
    ) -> Report {
        let bad_figures = Figures::from_samples(bad);
        let optimized_figures = Figures::from_samples(optimized);
        let elapsed = |s: &[Sample]| match (s.first(), s.last()) {
            (Some(first), Some(last)) => last.t - first.t,
            _ => 0.0,
        };
        Report {
            settings,
            elapsed_seconds: elapsed(bad).max(elapsed(optimized)),
            samples_per_worker: bad.len().min(optimized.len()),
            units: Units,
            ratio: Figures::ratio(&bad_figures, &optimized_figures),
            bad: bad_figures,
            optimized: optimized_figures,
            thresholds: Vec::new(),
            profiles: Vec::new(),
            exit_summaries,
        }
    }

    pub fn to_json(&self) -> String {
        serde_json::to_string_pretty(self).expect("the report serializes")
    }
}

#[cfg(test)]
mod tests {
    use super::super::sample::LessonSample;
    use super::*;

    fn sample(t: f64, live: f64, processed: f64, task_allocations: f64) -> Sample {
        Sample {
            t,
            live_tasks: live,
            allocated_bytes: 100.0 * t,
            resident_bytes: 1000.0,
            total_allocated_bytes: 0.0,
            allocations: 0.0,
            task_allocations,
            task_allocated_bytes: task_allocations * 8.0,
            processed,
            errors: processed / 100.0,
            gc_runs: t,
            queue: 0.0,
            cpu_seconds: processed * 1e-4,
            latency_buckets: vec![(0.001, processed), (f64::INFINITY, processed)],
            lessons: LessonSample::default(),
        }
    }

    #[test]
    fn figures_are_increases_over_the_window() {
        // 120 tasks/s; 10 live tasks more per second; 5 allocations per task; warm-up
        // allocations before the first sample do not count.
        let samples: Vec<Sample> = (0..=10)
            .map(|i| {
                let t = i as f64;
                sample(t, 10.0 + 10.0 * t, 120.0 * t, 1000.0 + 600.0 * t)
            })
            .collect();
        let f = Figures::from_samples(&samples);
        assert_eq!(f.get(Metric::LiveTasksStart), Some(10.0));
        assert_eq!(f.get(Metric::LiveTasksEnd), Some(110.0));
        assert!((f.get(Metric::LiveTasksSlope).unwrap() - 600.0).abs() < 1e-9);
        assert_eq!(f.get(Metric::Throughput), Some(120.0));
        assert_eq!(f.get(Metric::AllocationsPerTask), Some(5.0));
        assert_eq!(f.get(Metric::BytesPerTask), Some(40.0));
        assert_eq!(f.get(Metric::AllocatedBytesPeak), Some(1000.0));
        assert_eq!(f.get(Metric::GcRate), Some(1.0));
        assert_eq!(f.get(Metric::ErrorRate), Some(0.01));
        assert!((f.get(Metric::CpuPerTask).unwrap() - 1e-4).abs() < 1e-12);
        // Every observation is in the first bucket: p50 is half its bound.
        assert!((f.get(Metric::LatencyP50).unwrap() - 0.0005).abs() < 1e-12);
    }

    /// Lessons 4-6 as a bad worker shows them over 10 s: 2 s waited for locks over 1200
    /// tasks, 1% of polls in the 4-8 ms bucket, a queue 500 deep at its deepest, 30 tasks shed.
    #[test]
    fn lesson_figures_come_from_the_lesson_metrics() {
        let mut samples: Vec<Sample> = (0..=10)
            .map(|i| {
                let t = i as f64;
                let mut s = sample(t, 10.0, 120.0 * t, 0.0);
                s.queue = if i == 5 { 500.0 } else { 3.0 };
                s.lessons = LessonSample {
                    poll_buckets: vec![
                        (0.004, 990.0 * t),
                        (0.008, 1000.0 * t),
                        (f64::INFINITY, 1000.0 * t),
                    ],
                    task_latency_buckets: vec![(0.5, 100.0 * t), (f64::INFINITY, 120.0 * t)],
                    queue_delay_buckets: vec![(0.01, 120.0 * t), (f64::INFINITY, 120.0 * t)],
                    lock_wait_seconds: Some(0.2 * t),
                    rejected: Some(3.0 * t),
                    scrape_seconds: Some(0.001 * (i + 1) as f64),
                };
                s
            })
            .collect();
        let f = Figures::from_samples(&samples);
        assert_eq!(f.get(Metric::PollTimeMax), Some(0.008));
        // Rank 9900 of 10000 is the top of the 0-4 ms bucket.
        assert!((f.get(Metric::PollTimeP99).unwrap() - 0.004).abs() < 1e-12);
        assert!((f.get(Metric::LockWaitPerTask).unwrap() - 2.0 / 1200.0).abs() < 1e-12);
        assert_eq!(f.get(Metric::QueueDepthMax), Some(500.0));
        assert_eq!(f.get(Metric::TasksRejected), Some(30.0));
        // 20 of 120 tasks a second took more than 0.5 s: the p99 is the highest finite bound.
        assert_eq!(f.get(Metric::TaskLatencyP99), Some(0.5));
        assert!((f.get(Metric::QueueDelayP99).unwrap() - 0.0099).abs() < 1e-12);
        // The slowest of 11 scrapes is the p99 by nearest rank.
        assert_eq!(f.get(Metric::MetricsLatencyP99), Some(0.011));

        // A worker without the lesson metrics: no figure, not a zero.
        for s in &mut samples {
            s.lessons = LessonSample::default();
        }
        let f = Figures::from_samples(&samples);
        for metric in [
            Metric::PollTimeMax,
            Metric::PollTimeP99,
            Metric::MetricsLatencyP99,
            Metric::TaskLatencyP99,
            Metric::LockWaitPerTask,
            Metric::QueueDelayP99,
            Metric::TasksRejected,
        ] {
            assert_eq!(f.get(metric), None, "{}", metric.key());
        }
        assert_eq!(f.get(Metric::QueueDepthMax), Some(500.0));
    }

    #[test]
    fn nearest_rank_picks_an_observed_value() {
        let values: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(nearest_rank(0.99, values.clone()), Some(99.0));
        assert_eq!(nearest_rank(1.0, values.clone()), Some(100.0));
        assert_eq!(nearest_rank(0.0, values), Some(1.0));
        assert_eq!(nearest_rank(0.99, vec![3.0]), Some(3.0));
        assert_eq!(nearest_rank(0.99, Vec::new()), None);
    }

    #[test]
    fn no_tasks_means_no_per_task_figures() {
        let samples = [sample(0.0, 5.0, 0.0, 0.0), sample(1.0, 5.0, 0.0, 0.0)];
        let f = Figures::from_samples(&samples);
        assert_eq!(f.get(Metric::AllocationsPerTask), None);
        assert_eq!(f.get(Metric::LatencyP50), None);
        assert_eq!(f.get(Metric::LiveTasksSlope), Some(0.0));
    }

    #[test]
    fn ratios_of_zero_are_infinite_or_undefined() {
        let mut bad = Figures([Some(1.0); Metric::ALL.len()]);
        let mut optimized = Figures([Some(2.0); Metric::ALL.len()]);
        bad.set(Metric::AllocationsPerTask, Some(300.0));
        optimized.set(Metric::AllocationsPerTask, Some(0.0));
        bad.set(Metric::ErrorRate, Some(0.0));
        optimized.set(Metric::ErrorRate, Some(0.0));
        let ratio = Figures::ratio(&bad, &optimized);
        assert_eq!(ratio.get(Metric::Throughput), Some(0.5));
        assert_eq!(ratio.get(Metric::AllocationsPerTask), Some(f64::INFINITY));
        assert_eq!(ratio.get(Metric::ErrorRate), None);
        let json = serde_json::to_value(&ratio).unwrap();
        assert_eq!(json["throughput"], 0.5);
        assert!(json["allocations_per_task"].is_null());
    }

    #[test]
    fn metric_keys_round_trip() {
        for metric in Metric::ALL {
            assert_eq!(Metric::from_key(metric.key()), Some(metric));
        }
        assert_eq!(Metric::from_key("nope"), None);
    }
}
