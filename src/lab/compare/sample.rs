//! One scrape of a worker's `/metrics`, reduced to the numbers `lab compare` follows over time,
//! and the CSV form of a run's samples.

use std::fmt::Write as _;

use crate::client::{histogram_buckets, metric_value};
use crate::kind::WorkerKind;

/// The task latency histogram, summed over operations.
pub const LATENCY_HISTOGRAM: &str = "worker_task_processing_duration_seconds";

/// Lesson 4: tokio's poll-time histogram, summed over runtime threads.
pub const POLL_TIME_HISTOGRAM: &str = "worker_runtime_poll_time_seconds";
/// Lessons 4-6: time from enqueue to a task's result.
pub const TASK_LATENCY_HISTOGRAM: &str = "worker_task_latency_seconds";
/// Lesson 6: time from enqueue to a worker taking the task.
pub const QUEUE_DELAY_HISTOGRAM: &str = "worker_task_queue_delay_seconds";

/// A worker's metrics at one moment. Counters are totals since the worker started; gauges are
/// the value at the scrape.
#[derive(Debug, Clone, PartialEq)]
pub struct Sample {
    /// Seconds since sampling started (one clock for both workers).
    pub t: f64,
    /// `worker_active_goroutines`: live tokio tasks.
    pub live_tasks: f64,
    /// `worker_allocated_memory_bytes`: bytes in live allocations.
    pub allocated_bytes: f64,
    /// `worker_resident_memory_bytes`: pages jemalloc holds resident.
    pub resident_bytes: f64,
    /// `worker_total_allocations_bytes`: bytes ever allocated, whole process.
    pub total_allocated_bytes: f64,
    /// `worker_allocations_total`: allocation calls, whole process.
    pub allocations: f64,
    /// `worker_task_allocations_total`: allocation calls made while handling tasks.
    pub task_allocations: f64,
    /// `worker_task_allocated_bytes_total`: bytes allocated while handling tasks.
    pub task_allocated_bytes: f64,
    /// `worker_tasks_processed_total`, all operations.
    pub processed: f64,
    /// `worker_task_errors_total`, all operations.
    pub errors: f64,
    /// `worker_gc_runs_total`: allocator purge sweeps.
    pub gc_runs: f64,
    /// `worker_tasks_in_queue`.
    pub queue: f64,
    /// `process_cpu_seconds_total`.
    pub cpu_seconds: f64,
    /// `worker_task_processing_duration_seconds_bucket`, as `(le, cumulative count)`.
    pub latency_buckets: Vec<(f64, f64)>,
    /// What lessons 4-6 show; each part is absent from a worker that does not serve it.
    pub lessons: LessonSample,
}

/// The metrics of lessons 4 (blocking), 5 (contention) and 6 (overload) at one moment. A worker
/// built before these lessons lacks them: the report then shows `n/a` rather than refusing to
/// compare, so each is optional (an empty histogram, `None`).
#[derive(Debug, Clone, Default, PartialEq)]
pub struct LessonSample {
    /// `worker_runtime_poll_time_seconds_bucket`, summed over runtime threads.
    pub poll_buckets: Vec<(f64, f64)>,
    /// `worker_task_latency_seconds_bucket`: enqueue to result.
    pub task_latency_buckets: Vec<(f64, f64)>,
    /// `worker_task_queue_delay_seconds_bucket`: enqueue to start.
    pub queue_delay_buckets: Vec<(f64, f64)>,
    /// `worker_lock_wait_seconds_sum`, all locks: seconds waited for contended locks.
    pub lock_wait_seconds: Option<f64>,
    /// `worker_tasks_rejected_total`: tasks a bounded queue shed.
    pub rejected: Option<f64>,
    /// How long this scrape of `/metrics` took to answer, as `lab compare` timed it: the
    /// workers' HTTP server runs on the same runtime threads as their tasks (lesson 4).
    pub scrape_seconds: Option<f64>,
}

impl LessonSample {
    /// Reads what the exposition has of lessons 4-6.
    pub fn parse(text: &str) -> LessonSample {
        LessonSample {
            poll_buckets: histogram_buckets(text, POLL_TIME_HISTOGRAM),
            task_latency_buckets: histogram_buckets(text, TASK_LATENCY_HISTOGRAM),
            queue_delay_buckets: histogram_buckets(text, QUEUE_DELAY_HISTOGRAM),
            lock_wait_seconds: metric_value(text, "worker_lock_wait_seconds_sum"),
            rejected: metric_value(text, "worker_tasks_rejected_total"),
            scrape_seconds: None,
        }
    }
}

/// The CSV columns after `worker` and `t_seconds`: column name, Prometheus metric, value.
type Column = (&'static str, &'static str, fn(&Sample) -> f64);

const COLUMNS: [Column; 12] = [
    ("live_tasks", "worker_active_goroutines", |s| s.live_tasks),
    ("allocated_bytes", "worker_allocated_memory_bytes", |s| {
        s.allocated_bytes
    }),
    ("resident_bytes", "worker_resident_memory_bytes", |s| {
        s.resident_bytes
    }),
    (
        "total_allocated_bytes",
        "worker_total_allocations_bytes",
        |s| s.total_allocated_bytes,
    ),
    ("allocations", "worker_allocations_total", |s| s.allocations),
    ("task_allocations", "worker_task_allocations_total", |s| {
        s.task_allocations
    }),
    (
        "task_allocated_bytes",
        "worker_task_allocated_bytes_total",
        |s| s.task_allocated_bytes,
    ),
    ("tasks_processed", "worker_tasks_processed_total", |s| {
        s.processed
    }),
    ("task_errors", "worker_task_errors_total", |s| s.errors),
    ("gc_runs", "worker_gc_runs_total", |s| s.gc_runs),
    ("tasks_in_queue", "worker_tasks_in_queue", |s| s.queue),
    ("cpu_seconds", "process_cpu_seconds_total", |s| {
        s.cpu_seconds
    }),
];

impl Sample {
    /// Reads a sample taken at `t` from exposition `text`. Every metric must be there: a worker
    /// without one is not a worker of this lab (or of this version of it).
    pub fn parse(t: f64, text: &str) -> Result<Sample, String> {
        let value =
            |name: &str| metric_value(text, name).ok_or_else(|| format!("/metrics has no {name}"));
        let latency_buckets = histogram_buckets(text, LATENCY_HISTOGRAM);
        if latency_buckets.is_empty() {
            return Err(format!("/metrics has no {LATENCY_HISTOGRAM}_bucket"));
        }
        Ok(Sample {
            t,
            live_tasks: value("worker_active_goroutines")?,
            allocated_bytes: value("worker_allocated_memory_bytes")?,
            resident_bytes: value("worker_resident_memory_bytes")?,
            total_allocated_bytes: value("worker_total_allocations_bytes")?,
            allocations: value("worker_allocations_total")?,
            task_allocations: value("worker_task_allocations_total")?,
            task_allocated_bytes: value("worker_task_allocated_bytes_total")?,
            processed: value("worker_tasks_processed_total")?,
            errors: value("worker_task_errors_total")?,
            gc_runs: value("worker_gc_runs_total")?,
            queue: value("worker_tasks_in_queue")?,
            cpu_seconds: value("process_cpu_seconds_total")?,
            latency_buckets,
            lessons: LessonSample::parse(text),
        })
    }
}

/// Both workers' samples as CSV, one row per sample per worker. The latency histogram is left
/// out (17 buckets would drown the other columns); the report's quantiles come from it.
pub fn csv(runs: &[(WorkerKind, &[Sample])]) -> String {
    let mut out = String::from("worker,t_seconds");
    for (column, _, _) in COLUMNS {
        out.push(',');
        out.push_str(column);
    }
    out.push('\n');
    for (kind, samples) in runs {
        for sample in *samples {
            let _ = write!(out, "{kind},{:.3}", sample.t);
            for (_, _, value) in COLUMNS {
                let _ = write!(out, ",{}", value(sample));
            }
            out.push('\n');
        }
    }
    out
}

/// What each CSV column holds, for the report's list of files.
pub fn csv_columns() -> impl Iterator<Item = (&'static str, &'static str)> {
    COLUMNS.iter().map(|&(column, metric, _)| (column, metric))
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
worker_active_goroutines{worker_type=\"bad\"} 12
worker_allocated_memory_bytes{worker_type=\"bad\"} 1000
worker_resident_memory_bytes{worker_type=\"bad\"} 4096
worker_total_allocations_bytes{worker_type=\"bad\"} 5000
worker_allocations_total{worker_type=\"bad\"} 50
worker_task_allocations_total{worker_type=\"bad\"} 40
worker_task_allocated_bytes_total{worker_type=\"bad\"} 4000
worker_tasks_processed_total{operation=\"sort\",worker_type=\"bad\"} 3
worker_tasks_processed_total{operation=\"render\",worker_type=\"bad\"} 4
worker_task_errors_total{operation=\"sort\",worker_type=\"bad\"} 1
worker_gc_runs_total{worker_type=\"bad\"} 2
worker_tasks_in_queue{worker_type=\"bad\"} 0
process_cpu_seconds_total{worker_type=\"bad\"} 0.25
worker_task_processing_duration_seconds_bucket{operation=\"sort\",worker_type=\"bad\",le=\"0.001\"} 3
worker_task_processing_duration_seconds_bucket{operation=\"sort\",worker_type=\"bad\",le=\"+Inf\"} 7
";

    #[test]
    fn parses_every_field_and_sums_operations() {
        let sample = Sample::parse(1.5, TEXT).unwrap();
        assert_eq!(sample.processed, 7.0);
        assert_eq!(sample.live_tasks, 12.0);
        assert_eq!(sample.cpu_seconds, 0.25);
        assert_eq!(
            sample.latency_buckets,
            vec![(0.001, 3.0), (f64::INFINITY, 7.0)]
        );
        let csv = csv(&[(WorkerKind::Bad, &[sample])]);
        let mut lines = csv.lines();
        assert!(
            lines
                .next()
                .unwrap()
                .starts_with("worker,t_seconds,live_tasks,")
        );
        assert!(lines.next().unwrap().starts_with("bad,1.500,12,1000,4096,"));
    }

    #[test]
    fn lesson_metrics_are_read_when_served_and_optional() {
        assert_eq!(
            Sample::parse(0.0, TEXT).unwrap().lessons,
            LessonSample::default()
        );
        let text = format!(
            "{TEXT}\
worker_runtime_poll_time_seconds_bucket{{thread=\"0\",le=\"0.001\"}} 90
worker_runtime_poll_time_seconds_bucket{{thread=\"0\",le=\"+Inf\"}} 100
worker_runtime_poll_time_seconds_bucket{{thread=\"1\",le=\"0.001\"}} 10
worker_runtime_poll_time_seconds_bucket{{thread=\"1\",le=\"+Inf\"}} 10
worker_lock_wait_seconds_sum{{lock=\"tally\"}} 1.5
worker_tasks_rejected_total 7
"
        );
        let lessons = Sample::parse(0.0, &text).unwrap().lessons;
        // Summed over threads, as `sum by (le)` does.
        assert_eq!(
            lessons.poll_buckets,
            vec![(0.001, 100.0), (f64::INFINITY, 110.0)]
        );
        assert_eq!(lessons.lock_wait_seconds, Some(1.5));
        assert_eq!(lessons.rejected, Some(7.0));
        assert!(lessons.queue_delay_buckets.is_empty());
    }

    #[test]
    fn a_missing_metric_is_named() {
        let text = TEXT.replace("worker_gc_runs_total", "something_else");
        let err = Sample::parse(0.0, &text).unwrap_err();
        assert!(err.contains("worker_gc_runs_total"), "{err}");
    }
}
