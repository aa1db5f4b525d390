//! What the charts plot: each series over time, per worker, derived from consecutive samples the
//! way the dashboard's panels derive theirs (gauges as read, counters as `rate()`, per-task
//! figures as a ratio of two rates, latency with `histogram_quantile`).

use super::sample::Sample;
use super::stats::{bucket_increase, histogram_quantile};
use crate::kind::WorkerKind;

const MIB: f64 = 1024.0 * 1024.0;

/// How a chart's values come from the samples.
#[derive(Clone, Copy)]
enum Derive {
    /// A gauge, scaled.
    Gauge(fn(&Sample) -> f64, f64),
    /// A counter's increase per second between consecutive samples, scaled.
    Rate(fn(&Sample) -> f64, f64),
    /// A counter's increase per task processed between consecutive samples, scaled.
    PerTask(fn(&Sample) -> f64, f64),
    /// A latency quantile of the tasks finished between consecutive samples, scaled.
    Quantile(f64, f64),
}

/// One chart: its file name, title, y-axis label (with the unit) and how its values are made.
struct Spec {
    name: &'static str,
    title: &'static str,
    y_label: &'static str,
    derive: Derive,
}

const SPECS: [Spec; 13] = [
    Spec {
        name: "live_tasks",
        title: "Live tokio tasks (worker_active_goroutines)",
        y_label: "live tasks",
        derive: Derive::Gauge(|s| s.live_tasks, 1.0),
    },
    Spec {
        name: "allocated_memory",
        title: "Allocated memory (worker_allocated_memory_bytes)",
        y_label: "allocated (MiB)",
        derive: Derive::Gauge(|s| s.allocated_bytes, 1.0 / MIB),
    },
    Spec {
        name: "resident_memory",
        title: "Resident memory (worker_resident_memory_bytes)",
        y_label: "resident (MiB)",
        derive: Derive::Gauge(|s| s.resident_bytes, 1.0 / MIB),
    },
    Spec {
        name: "allocations_per_task",
        title: "Allocations per task (worker_task_allocations_total)",
        y_label: "allocations per task",
        derive: Derive::PerTask(|s| s.task_allocations, 1.0),
    },
    Spec {
        name: "bytes_per_task",
        title: "Bytes allocated per task (worker_task_allocated_bytes_total)",
        y_label: "allocated per task (KiB)",
        derive: Derive::PerTask(|s| s.task_allocated_bytes, 1.0 / 1024.0),
    },
    Spec {
        name: "allocation_rate",
        title: "Allocation rate (worker_total_allocations_bytes)",
        y_label: "allocated (MiB/s)",
        derive: Derive::Rate(|s| s.total_allocated_bytes, 1.0 / MIB),
    },
    Spec {
        name: "gc_rate",
        title: "GC-analogue: allocator purges (worker_gc_runs_total)",
        y_label: "purges per second",
        derive: Derive::Rate(|s| s.gc_runs, 1.0),
    },
    Spec {
        name: "throughput",
        title: "Task processing rate (worker_tasks_processed_total)",
        y_label: "tasks per second",
        derive: Derive::Rate(|s| s.processed, 1.0),
    },
    Spec {
        name: "latency_p50",
        title: "Task processing duration p50",
        y_label: "p50 duration (ms)",
        derive: Derive::Quantile(0.50, 1e3),
    },
    Spec {
        name: "latency_p95",
        title: "Task processing duration p95",
        y_label: "p95 duration (ms)",
        derive: Derive::Quantile(0.95, 1e3),
    },
    Spec {
        name: "cpu",
        title: "CPU usage (process_cpu_seconds_total)",
        y_label: "CPU (% of one core)",
        derive: Derive::Rate(|s| s.cpu_seconds, 100.0),
    },
    Spec {
        name: "cpu_per_task",
        title: "CPU time per task",
        y_label: "CPU per task (µs)",
        derive: Derive::PerTask(|s| s.cpu_seconds, 1e6),
    },
    Spec {
        name: "tasks_in_queue",
        title: "Tasks in queue (worker_tasks_in_queue)",
        y_label: "tasks waiting",
        derive: Derive::Gauge(|s| s.queue, 1.0),
    },
];

/// One worker's line on a chart: `(seconds since start, value)`.
#[derive(Debug, Clone)]
pub struct Line {
    pub worker: WorkerKind,
    pub points: Vec<(f64, f64)>,
}

/// A chart's data, both workers on it.
#[derive(Debug, Clone)]
pub struct Chart {
    /// File stem: `live_tasks` -> `live_tasks.svg`, `live_tasks.png`.
    pub name: &'static str,
    pub title: &'static str,
    pub y_label: &'static str,
    pub lines: Vec<Line>,
}

/// Every chart of a run.
pub fn charts(runs: &[(WorkerKind, &[Sample])]) -> Vec<Chart> {
    SPECS
        .iter()
        .map(|spec| Chart {
            name: spec.name,
            title: spec.title,
            y_label: spec.y_label,
            lines: runs
                .iter()
                .map(|&(worker, samples)| Line {
                    worker,
                    points: points(spec.derive, samples),
                })
                .collect(),
        })
        .collect()
}

fn points(derive: Derive, samples: &[Sample]) -> Vec<(f64, f64)> {
    if let Derive::Gauge(value, scale) = derive {
        return samples.iter().map(|s| (s.t, value(s) * scale)).collect();
    }
    // Interval figures are drawn at the end of their interval, as `rate()` is.
    samples
        .windows(2)
        .filter_map(|pair| {
            let (a, b) = (&pair[0], &pair[1]);
            let value = match derive {
                Derive::Gauge(..) => None,
                Derive::Rate(counter, scale) => {
                    let dt = b.t - a.t;
                    (dt > 0.0).then(|| (counter(b) - counter(a)) / dt * scale)
                }
                Derive::PerTask(counter, scale) => {
                    let tasks = b.processed - a.processed;
                    (tasks > 0.0).then(|| (counter(b) - counter(a)) / tasks * scale)
                }
                Derive::Quantile(q, scale) => {
                    histogram_quantile(q, &bucket_increase(&b.latency_buckets, &a.latency_buckets))
                        .map(|v| v * scale)
                }
            };
            value.map(|v| (b.t, v))
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample(t: f64, processed: f64) -> Sample {
        Sample {
            t,
            live_tasks: t,
            allocated_bytes: MIB,
            resident_bytes: MIB,
            total_allocated_bytes: 0.0,
            allocations: 0.0,
            task_allocations: 3.0 * processed,
            task_allocated_bytes: 0.0,
            processed,
            errors: 0.0,
            gc_runs: 0.0,
            queue: 0.0,
            cpu_seconds: 0.0,
            latency_buckets: vec![(0.01, processed), (f64::INFINITY, processed)],
            lessons: Default::default(),
        }
    }

    #[test]
    fn gauges_rates_and_per_task_series() {
        let samples = [sample(0.0, 0.0), sample(2.0, 100.0), sample(4.0, 100.0)];
        let charts = charts(&[(WorkerKind::Bad, &samples)]);
        let line = |name: &str| {
            charts.iter().find(|c| c.name == name).unwrap().lines[0]
                .points
                .clone()
        };
        assert_eq!(line("live_tasks"), vec![(0.0, 0.0), (2.0, 2.0), (4.0, 4.0)]);
        assert_eq!(line("allocated_memory")[0], (0.0, 1.0));
        assert_eq!(line("throughput"), vec![(2.0, 50.0), (4.0, 0.0)]);
        // No task in the second interval: no per-task point, no latency point.
        assert_eq!(line("allocations_per_task"), vec![(2.0, 3.0)]);
        assert_eq!(line("latency_p50"), vec![(2.0, 5.0)]);
    }
}
