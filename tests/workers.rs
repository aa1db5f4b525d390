//! The workers as a learner meets them: real binaries on loopback ports, observed through
//! `/metrics` and their exit summaries.

mod support;

use std::time::Duration;

use support::{Worker, metric_value, require_promtool, wait_for};

/// A stream of small tasks in short rounds: a round every 0.1 s, a failure every 0.5 s. A tenth
/// of what a debug-built worker sustains, so a loaded 2-core CI machine keeps up; the tests wait
/// for counts of tasks, never for an amount of time.
const BUSY: &[&str] = &["--rate", "200", "--data-size", "500", "--tasks", "20"];

/// How long a test waits for what takes a second or two on an idle machine; only a failure
/// waits this long.
const PATIENCE: Duration = Duration::from_secs(120);

fn live_tasks(worker: &Worker) -> f64 {
    worker.metric("worker_active_goroutines")
}

/// Waits until the worker has processed at least `n` tasks.
fn processed_at_least(worker: &Worker, n: f64) {
    wait_for("tasks to be processed", PATIENCE, || {
        (worker.metric("worker_tasks_processed_total") >= n).then_some(())
    });
}

#[test]
fn bad_worker_leaks_tasks_while_the_optimized_one_stays_flat() {
    let bad = Worker::start("bad", BUSY);
    let optimized = Worker::start("optimized", BUSY);
    processed_at_least(&bad, 200.0);
    processed_at_least(&optimized, 200.0);
    let (bad_before, optimized_before) = (live_tasks(&bad), live_tasks(&optimized));
    let processed_before = bad.metric("worker_tasks_processed_total");
    let purges = |w: &Worker| w.metric("worker_gc_runs_total");
    let (bad_purges, optimized_purges) = (purges(&bad), purges(&optimized));
    // 30 rounds of 20 tasks: each leaves a progress reporter behind, and ~1% of the tasks an
    // audit helper. Counted in tasks, not seconds, so a slow machine only takes longer.
    processed_at_least(&bad, processed_before + 600.0);
    // The GC analogue: jemalloc purges freed pages about every second when memory churns,
    // and the optimized worker does not churn.
    let (bad_purges, optimized_purges) = wait_for(
        "the bad worker to purge more than the optimized one",
        PATIENCE,
        || {
            let b = purges(&bad) - bad_purges;
            let o = purges(&optimized) - optimized_purges;
            (b > o).then_some((b, o))
        },
    );
    let (bad_after, optimized_after) = (live_tasks(&bad), live_tasks(&optimized));
    assert!(
        bad_after - bad_before >= 20.0,
        "bad worker's live tasks went {bad_before} -> {bad_after}; expected a leak"
    );
    assert!(
        (optimized_after - optimized_before).abs() <= 3.0,
        "optimized worker's live tasks went {optimized_before} -> {optimized_after}; expected flat"
    );
    assert!(bad_purges > optimized_purges);
}

#[test]
fn optimized_worker_makes_no_allocations_per_task_after_warm_up() {
    let optimized = Worker::start("optimized", BUSY);
    let bad = Worker::start("bad", BUSY);
    processed_at_least(&optimized, 200.0);
    processed_at_least(&bad, 200.0);
    let read = |w: &Worker| {
        let text = w.metrics();
        (
            metric_value(&text, "worker_tasks_processed_total").unwrap(),
            metric_value(&text, "worker_task_allocations_total").unwrap(),
            metric_value(&text, "worker_task_allocated_bytes_total").unwrap(),
        )
    };
    let (opt_tasks0, opt_allocs0, opt_bytes0) = read(&optimized);
    let (bad_tasks0, bad_allocs0, _) = read(&bad);
    // A count of tasks, not an amount of time: a slow machine only takes longer.
    processed_at_least(&optimized, opt_tasks0 + 300.0);
    processed_at_least(&bad, bad_tasks0 + 300.0);
    let (_, opt_allocs1, opt_bytes1) = read(&optimized);
    let (bad_tasks1, bad_allocs1, _) = read(&bad);

    assert_eq!(
        opt_allocs1 - opt_allocs0,
        0.0,
        "optimized worker allocated while handling tasks"
    );
    assert_eq!(opt_bytes1 - opt_bytes0, 0.0);
    let per_task = (bad_allocs1 - bad_allocs0) / (bad_tasks1 - bad_tasks0);
    assert!(
        per_task > 50.0,
        "bad worker made only {per_task:.1} allocations per task"
    );
}

/// Every metric a dashboard panel or the guide names, with the series both workers must have.
const METRICS: &[&str] = &[
    "worker_active_goroutines",
    "worker_allocated_memory_bytes",
    "worker_total_allocations_bytes",
    "worker_gc_runs_total",
    "worker_tasks_processed_total",
    "worker_tasks_in_queue",
    "worker_task_processing_duration_seconds_bucket",
    "worker_task_processing_duration_seconds_sum",
    "worker_task_processing_duration_seconds_count",
    "worker_task_errors_total",
    "worker_allocations_total",
    "worker_task_allocations_total",
    "worker_task_allocated_bytes_total",
    "worker_resident_memory_bytes",
    "worker_runtime_busy_seconds_total",
    "worker_runtime_workers",
    "worker_runtime_global_queue_depth",
    "process_cpu_seconds_total",
    "process_resident_memory_bytes",
    "process_open_fds",
    "process_threads",
];

#[test]
fn every_metric_is_exposed_with_its_worker_type() {
    for kind in ["bad", "optimized"] {
        let worker = Worker::start(kind, BUSY);
        let response = worker.get("/metrics");
        assert_eq!(response.status, 200);
        assert!(
            response
                .content_type
                .starts_with("text/plain; version=0.0.4"),
            "Prometheus 3 needs the 0.0.4 content type, got {:?}",
            response.content_type
        );
        let text = response.text();
        let label = format!("worker_type=\"{kind}\"");
        for name in METRICS {
            let series: Vec<&str> = text
                .lines()
                .filter(|l| l.starts_with(&format!("{name}{{")))
                .collect();
            assert!(!series.is_empty(), "worker-{kind} lacks {name}");
            assert!(
                series.iter().all(|s| s.contains(&label)),
                "worker-{kind}: a {name} series lacks {label}: {series:?}"
            );
        }
        for op in ["stats", "sort", "dedup", "render"] {
            let series = format!("worker_tasks_processed_total{{operation=\"{op}\",{label}}}");
            assert!(text.contains(&series), "worker-{kind} lacks {series}");
        }
    }
}

#[test]
fn promtool_accepts_the_exposition_but_for_the_guides_counter_name() {
    let Some(promtool) = require_promtool() else {
        return;
    };
    for kind in ["bad", "optimized"] {
        let worker = Worker::start(kind, BUSY);
        let text = worker.metrics();
        let mut child = std::process::Command::new(&promtool)
            .args(["check", "metrics"])
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        use std::io::Write;
        child
            .stdin
            .take()
            .unwrap()
            .write_all(text.as_bytes())
            .unwrap();
        let out = child.wait_with_output().unwrap();
        let report = format!(
            "{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
        let problems: Vec<&str> = report.lines().filter(|l| !l.trim().is_empty()).collect();
        // The guide named a counter `worker_total_allocations_bytes`; promtool wants `_total`.
        assert!(
            problems
                .iter()
                .all(|l| l.contains("worker_total_allocations_bytes")),
            "worker-{kind}: promtool check metrics found more than the guide's name:\n{report}"
        );
    }
}

#[test]
fn the_exit_summary_reports_memory_tasks_and_the_leak() {
    let bad = Worker::start("bad", &[BUSY, &["--duration", "3s"]].concat());
    let optimized = Worker::start("optimized", &[BUSY, &["--duration", "3s"]].concat());
    let (bad_status, bad_out) = bad.wait();
    let (optimized_status, optimized_out) = optimized.wait();
    assert!(bad_status.success() && optimized_status.success());
    for (kind, out) in [("bad", &bad_out), ("optimized", &optimized_out)] {
        for line in [
            &format!("=== worker-{kind} summary: stopped after"),
            "(--duration elapsed)",
            "tasks processed",
            "live tokio tasks",
            "allocated",
            "total allocated",
            "per task",
            "resident",
            "allocator purges",
        ] {
            assert!(
                out.contains(line),
                "worker-{kind} summary lacks {line:?}:\n{out}"
            );
        }
    }
    assert!(
        bad_out.contains("LEAK:"),
        "bad summary does not call out the leak:\n{bad_out}"
    );
    assert!(
        !optimized_out.contains("LEAK"),
        "optimized summary reports a leak:\n{optimized_out}"
    );
    // Warm-up may grow a thread's buffers once; per task that rounds to nothing.
    let per_task = |out: &str| -> f64 {
        let line = out
            .lines()
            .find(|l| l.trim_start().starts_with("per task"))
            .unwrap();
        line.split_whitespace().nth(2).unwrap().parse().unwrap()
    };
    assert!(
        per_task(&optimized_out) < 0.05,
        "optimized summary:\n{optimized_out}"
    );
    assert!(per_task(&bad_out) > 50.0, "bad summary:\n{bad_out}");
}

#[test]
fn sigterm_stops_a_worker_gracefully_with_its_summary() {
    let worker = Worker::start("optimized", &["--duration", "1h"]);
    processed_at_least(&worker, 10.0);
    let (status, out) = worker.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(out.contains("terminated (SIGTERM)"), "{out}");
}
