//! The report as a person reads it: a side-by-side table, what it shows, the thresholds and the
//! workers' own exit summaries.

use std::fmt::Write as _;

use super::report::{Figures, Metric, Report};
use crate::summary::bytes;

/// Live tasks gained per minute above which a run counts as leaking. The optimized worker
/// wobbles by a task or two (an HTTP connection, a profile download).
pub const LEAK_SLOPE: f64 = 1.0;

/// The full text report.
pub fn render(report: &Report) -> String {
    let mut out = String::new();
    let s = &report.settings;
    let _ = writeln!(
        out,
        "worker-bad vs worker-optimized: {:.1}s after {}s of warm-up, {} samples each (every {}s)",
        report.elapsed_seconds,
        trim_float(s.warmup_seconds),
        report.samples_per_worker,
        trim_float(s.interval_seconds)
    );
    let _ = writeln!(out, "both ran with: {}\n", s.worker_flags());
    let _ = writeln!(
        out,
        "{:<30} {:>14} {:>14} {:>14}",
        "", "bad", "optimized", "bad/optimized"
    );
    for metric in Metric::ALL {
        let _ = writeln!(
            out,
            "{:<30} {:>14} {:>14} {:>14}",
            metric.label(),
            value(metric, report.bad.get(metric)),
            value(metric, report.optimized.get(metric)),
            ratio(report.ratio.get(metric)),
        );
    }
    out.push_str("\nWhat this shows:\n");
    for finding in findings(report) {
        let _ = writeln!(out, "- {finding}");
    }
    if !report.thresholds.is_empty() {
        out.push_str("\nThresholds (--fail-if):\n");
        for t in &report.thresholds {
            let shown = t.value.map_or_else(|| "no value".to_owned(), trim_float);
            let verdict = if t.failed { "FAILED" } else { "ok" };
            let _ = writeln!(out, "  {verdict:<7} {}   (value: {shown})", t.expression);
        }
    }
    if !report.profiles.is_empty() {
        out.push_str("\nProfiles written at exit:\n");
        for p in &report.profiles {
            let _ = writeln!(
                out,
                "  {:<10} {:<5} {}   (go tool pprof -top {})",
                p.worker, p.kind, p.path, p.path
            );
        }
    }
    out
}

/// The exit summaries, indented, for the end of the text report.
pub fn exit_summaries(report: &Report) -> String {
    let mut out = String::from("Exit summaries:\n");
    for text in [&report.exit_summaries.bad, &report.exit_summaries.optimized] {
        for line in text.lines() {
            let _ = writeln!(out, "  {line}");
        }
    }
    out
}

/// The lessons the numbers teach, each with the command that shows where it comes from.
pub fn findings(report: &Report) -> Vec<String> {
    let (b, o) = (&report.bad, &report.optimized);
    let mut out = Vec::new();
    let live = |f: &Figures| {
        format!(
            "{} -> {} ({} tasks/min)",
            value(Metric::LiveTasksStart, f.get(Metric::LiveTasksStart)),
            value(Metric::LiveTasksEnd, f.get(Metric::LiveTasksEnd)),
            value(Metric::LiveTasksSlope, f.get(Metric::LiveTasksSlope)),
        )
    };
    if b.get(Metric::LiveTasksSlope)
        .is_some_and(|s| s > LEAK_SLOPE)
    {
        out.push(format!(
            "Task leak: worker-bad's live tasks went {}; worker-optimized's {}. \
             Which tasks: `lab profile tasks bad --start`.",
            live(b),
            live(o)
        ));
        out.push(
            "Live tasks, two counts: the table reads worker_active_goroutines while the \
             workload runs (the pool's workers and producer, HTTP connections, and what leaked \
             in the warm-up); the exit summaries count before the pool started and after it \
             stopped, so their difference is the leak of the whole run, warm-up and shutdown \
             included."
                .to_owned(),
        );
    } else {
        out.push(format!(
            "No task leak visible: worker-bad's live tasks went {}; run longer or at a higher rate.",
            live(b)
        ));
    }
    let per_task = |f: &Figures| {
        format!(
            "{} allocations ({})",
            value(
                Metric::AllocationsPerTask,
                f.get(Metric::AllocationsPerTask)
            ),
            value(Metric::BytesPerTask, f.get(Metric::BytesPerTask)),
        )
    };
    out.push(format!(
        "Allocation churn: per task, worker-bad made {}, worker-optimized {}. \
         Where: `lab profile allocs bad --start`.",
        per_task(b),
        per_task(o)
    ));
    out.push(
        "Allocated memory: worker-optimized reserves each worker's reusable buffers (sized by \
         --data-size) when it starts, so early on it can sit above worker-bad, and stays flat; \
         worker-bad's grows with every task that leaks (and the payload sample it holds) and \
         passes it."
            .to_owned(),
    );
    out.push(format!(
        "CPU per task: worker-bad {}, worker-optimized {} ({}). Where: `lab profile cpu bad --start`.",
        value(Metric::CpuPerTask, b.get(Metric::CpuPerTask)),
        value(Metric::CpuPerTask, o.get(Metric::CpuPerTask)),
        ratio(report.ratio.get(Metric::CpuPerTask)),
    ));
    match (b.get(Metric::Throughput), o.get(Metric::Throughput)) {
        (Some(tb), Some(to)) if (tb - to).abs() <= 0.05 * tb.max(to) => out.push(format!(
            "Same load: both processed about {tb:.0} tasks/s, so the differences above are per \
             task, not per load."
        )),
        (Some(tb), Some(to)) => out.push(format!(
            "Throughput differs: worker-bad {tb:.1} tasks/s, worker-optimized {to:.1}: at this \
             rate one of them cannot keep up (its queue grows)."
        )),
        _ => {}
    }
    out.extend(lesson_findings(report));
    out
}

/// Lessons 4-6, for the workers that serve their metrics (`worker-bad --problems ...`): each
/// finding names the figures that show the problem and the profile that explains it.
fn lesson_findings(report: &Report) -> Vec<String> {
    let (b, o) = (&report.bad, &report.optimized);
    let both = |metric: Metric| {
        format!(
            "worker-bad {}, worker-optimized {} ({})",
            value(metric, b.get(metric)),
            value(metric, o.get(metric)),
            ratio(report.ratio.get(metric)),
        )
    };
    let served = |metric: Metric| b.get(metric).is_some() && o.get(metric).is_some();
    let mut out = Vec::new();
    if served(Metric::PollTimeP99) {
        out.push(format!(
            "Blocking the runtime: task poll p99 {}; longest poll up to {}; /metrics answered \
             in (p99) {}. A poll in milliseconds is synchronous work on a runtime thread. \
             Where: `lab profile cpu bad --start`, a blocking call under a tokio-runtime-worker \
             thread.",
            both(Metric::PollTimeP99),
            both(Metric::PollTimeMax),
            both(Metric::MetricsLatencyP99),
        ));
    }
    if served(Metric::LockWaitPerTask) {
        out.push(format!(
            "Lock contention: lock wait per task {}, throughput {}. Where: the bad worker's \
             /debug/pprof/mutex (`go tool pprof -top URL`) names the line that takes the lock.",
            both(Metric::LockWaitPerTask),
            both(Metric::Throughput),
        ));
    }
    if served(Metric::QueueDelayP99) && served(Metric::TasksRejected) {
        out.push(format!(
            "Overload: deepest queue {}, resident memory peak {}, enqueue-to-start p99 {}, \
             tasks shed {}. An unbounded queue turns overload into waiting and memory; a \
             bounded one sheds the excess, counted.",
            both(Metric::QueueDepthMax),
            both(Metric::ResidentBytesPeak),
            both(Metric::QueueDelayP99),
            both(Metric::TasksRejected),
        ));
    }
    out
}

/// A metric's value as the table shows it, with its unit where the label has none.
pub fn value(metric: Metric, value: Option<f64>) -> String {
    let Some(v) = value else {
        return "n/a".to_owned();
    };
    match metric {
        Metric::LiveTasksStart
        | Metric::LiveTasksEnd
        | Metric::TasksProcessed
        | Metric::QueueDepthMax
        | Metric::TasksRejected => {
            format!("{v:.0}")
        }
        Metric::LiveTasksSlope => format!("{v:+.1}"),
        Metric::AllocatedBytesEnd
        | Metric::AllocatedBytesPeak
        | Metric::ResidentBytesEnd
        | Metric::ResidentBytesPeak => bytes(v.max(0.0) as u64),
        Metric::BytesPerTask if v < 1024.0 => format!("{v:.1} B"),
        Metric::BytesPerTask => bytes(v as u64),
        Metric::AllocationsPerTask if v > 0.0 && v < 0.1 => format!("{v:.4}"),
        Metric::AllocationsPerTask => format!("{v:.1}"),
        Metric::GcRate => format!("{v:.2}"),
        Metric::Throughput => format!("{v:.1}"),
        Metric::LatencyP50
        | Metric::LatencyP95
        | Metric::LatencyP99
        | Metric::CpuPerTask
        | Metric::PollTimeMax
        | Metric::PollTimeP99
        | Metric::MetricsLatencyP99
        | Metric::TaskLatencyP99
        | Metric::LockWaitPerTask
        | Metric::QueueDelayP99 => seconds(v),
        Metric::ErrorRate => format!("{:.2}%", 100.0 * v),
    }
}

/// A bad/optimized ratio: `∞` when only the optimized value is 0, `n/a` when it is undefined.
pub fn ratio(value: Option<f64>) -> String {
    match value {
        None => "n/a".to_owned(),
        Some(v) if v.is_infinite() => if v > 0.0 { "∞" } else { "-∞" }.to_owned(),
        Some(v) if v.abs() >= 100.0 => format!("{v:.0}x"),
        Some(v) => format!("{v:.2}x"),
    }
}

/// A short duration in the unit that keeps it readable: 12.3 µs, 4.56 ms, 1.20 s.
pub fn seconds(v: f64) -> String {
    if v < 1e-3 {
        format!("{:.1} µs", v * 1e6)
    } else if v < 1.0 {
        format!("{:.2} ms", v * 1e3)
    } else {
        format!("{v:.2} s")
    }
}

/// A number without trailing zeros: 1, 0.5, 2.25.
pub fn trim_float(v: f64) -> String {
    let text = format!("{v:.6}");
    let text = text.trim_end_matches('0').trim_end_matches('.');
    if text == "-0" {
        "0".into()
    } else {
        text.into()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn values_carry_readable_units() {
        assert_eq!(value(Metric::LatencyP95, Some(0.00042)), "420.0 µs");
        assert_eq!(value(Metric::CpuPerTask, Some(0.0123)), "12.30 ms");
        assert_eq!(
            value(Metric::AllocatedBytesEnd, Some(3.0 * 1048576.0)),
            "3.0 MiB"
        );
        assert_eq!(value(Metric::BytesPerTask, Some(0.0)), "0.0 B");
        assert_eq!(value(Metric::ErrorRate, Some(0.0125)), "1.25%");
        assert_eq!(value(Metric::LiveTasksSlope, Some(12.0)), "+12.0");
        assert_eq!(value(Metric::Throughput, None), "n/a");
    }

    #[test]
    fn lesson_values_carry_units() {
        assert_eq!(value(Metric::PollTimeP99, Some(0.0084)), "8.40 ms");
        assert_eq!(value(Metric::LockWaitPerTask, Some(2.5e-5)), "25.0 µs");
        assert_eq!(value(Metric::QueueDepthMax, Some(12345.0)), "12345");
        assert_eq!(value(Metric::TasksRejected, Some(0.0)), "0");
        assert_eq!(value(Metric::QueueDelayP99, None), "n/a");
    }

    #[test]
    fn ratios() {
        assert_eq!(ratio(Some(f64::INFINITY)), "∞");
        assert_eq!(ratio(None), "n/a");
        assert_eq!(ratio(Some(1.234)), "1.23x");
        assert_eq!(ratio(Some(1234.0)), "1234x");
    }

    #[test]
    fn floats_lose_trailing_zeros() {
        assert_eq!(trim_float(1.0), "1");
        assert_eq!(trim_float(0.25), "0.25");
    }
}
