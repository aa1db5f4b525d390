//! `lab compare` end to end: both real workers, sampled for a few seconds, and the report,
//! files and exit status a CI job or a class gets from it.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;

use serde_json::Value;

/// A fast stream of small tasks: the leak and the allocations show within seconds.
const FAST: &[&str] = &[
    "--rate",
    "2000",
    "--data-size",
    "500",
    "--tasks",
    "200",
    "--interval",
    "500ms",
];

/// Every figure of the report, by JSON key, and the table's row labels.
const METRICS: &[(&str, &str)] = &[
    ("live_tasks_start", "live tasks at start"),
    ("live_tasks_end", "live tasks at end"),
    ("live_tasks_slope", "live-task slope (tasks/min)"),
    ("allocated_bytes_end", "allocated memory at end"),
    ("allocated_bytes_peak", "allocated memory, peak"),
    ("resident_bytes_end", "resident memory at end"),
    ("resident_bytes_peak", "resident memory, peak"),
    ("bytes_per_task", "bytes allocated per task"),
    ("allocations_per_task", "allocations per task"),
    ("gc_rate", "GC-analogue: purges/s"),
    ("tasks_processed", "tasks processed"),
    ("throughput", "throughput (tasks/s)"),
    ("latency_p50", "latency p50"),
    ("latency_p95", "latency p95"),
    ("latency_p99", "latency p99"),
    ("error_rate", "error rate"),
    ("cpu_per_task", "CPU per task"),
    // Lessons 4-6 (null from a worker without their metrics).
    ("poll_time_max", "task poll, max (bucket bound)"),
    ("poll_time_p99", "task poll p99"),
    ("metrics_latency_p99", "/metrics latency p99"),
    ("task_latency_p99", "enqueue-to-result p99"),
    ("lock_wait_per_task", "lock wait per task"),
    ("queue_depth_max", "tasks in queue, max"),
    ("queue_delay_p99", "enqueue-to-start p99"),
    ("tasks_rejected", "tasks rejected (shed)"),
];

/// The charts `--out` draws, by file stem.
const CHARTS: &[&str] = &[
    "live_tasks",
    "allocated_memory",
    "resident_memory",
    "allocations_per_task",
    "bytes_per_task",
    "allocation_rate",
    "gc_rate",
    "throughput",
    "latency_p50",
    "latency_p95",
    "cpu",
    "cpu_per_task",
    "tasks_in_queue",
];

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

fn lab(args: &[&str]) -> Outcome {
    let out = Command::new(env!("CARGO_BIN_EXE_lab"))
        .args(args)
        .output()
        .expect("lab runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn compare(extra: &[&str]) -> Outcome {
    lab(&[&["compare", "-q"], FAST, extra].concat())
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-compare-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn number(report: &Value, subject: &str, key: &str) -> f64 {
    report[subject][key]
        .as_f64()
        .unwrap_or_else(|| panic!("{subject}.{key} is not a number: {}", report[subject]))
}

#[test]
fn json_report_teaches_the_lesson_and_out_holds_samples_charts_and_html() {
    let dir = temp_dir("out");
    let run = compare(&[
        "--duration",
        "4s",
        "--json",
        "--out",
        dir.to_str().unwrap(),
        "--fail-if",
        "optimized.allocations_per_task>0",
        "--fail-if",
        "ratio.bytes_per_task<10",
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report: Value = serde_json::from_str(&run.stdout)
        .unwrap_or_else(|e| panic!("stdout is not JSON ({e}):\n{}", run.stdout));

    // Shape: settings, every metric for each worker and the ratio, units, summaries.
    assert_eq!(report["settings"]["rate"], 2000);
    assert_eq!(report["settings"]["data_size"], 500);
    assert_eq!(report["settings"]["interval_seconds"], 0.5);
    assert_eq!(report["settings"]["warmup_seconds"], 2.0);
    let samples = report["samples_per_worker"].as_u64().unwrap();
    assert!((8..=10).contains(&samples), "{samples} samples");
    for subject in ["bad", "optimized", "ratio", "units"] {
        let keys: Vec<&str> = report[subject]
            .as_object()
            .unwrap_or_else(|| panic!("no {subject} object"))
            .keys()
            .map(String::as_str)
            .collect();
        // serde_json's map is sorted by key; the report's own order is the table's.
        let mut expected: Vec<&str> = METRICS.iter().map(|m| m.0).collect();
        expected.sort_unstable();
        assert_eq!(keys, expected, "{subject}'s metrics");
    }
    assert_eq!(report["units"]["live_tasks_slope"], "tasks/min");
    assert!(
        report["exit_summaries"]["bad"]
            .as_str()
            .unwrap()
            .contains("=== worker-bad summary")
    );

    // The lesson: the bad worker leaks tasks and allocates per task, the optimized one does
    // neither, and both did the same work.
    let bad_slope = number(&report, "bad", "live_tasks_slope");
    let optimized_slope = number(&report, "optimized", "live_tasks_slope");
    assert!(bad_slope > 300.0, "bad worker's slope {bad_slope}/min");
    assert!(
        optimized_slope.abs() < 30.0,
        "optimized worker's slope {optimized_slope}/min"
    );
    assert!(number(&report, "bad", "live_tasks_end") > number(&report, "bad", "live_tasks_start"));
    assert!(number(&report, "bad", "allocations_per_task") > 50.0);
    assert_eq!(number(&report, "optimized", "allocations_per_task"), 0.0);
    assert_eq!(number(&report, "optimized", "bytes_per_task"), 0.0);
    assert!(number(&report, "bad", "bytes_per_task") > 1000.0);
    // An infinite ratio (optimized at 0) is null in JSON.
    assert!(report["ratio"]["allocations_per_task"].is_null());
    let (tb, to) = (
        number(&report, "bad", "throughput"),
        number(&report, "optimized", "throughput"),
    );
    assert!(
        (tb - to).abs() < 0.2 * tb.max(to) && tb > 1000.0,
        "throughput bad {tb}, optimized {to}"
    );
    assert!(number(&report, "bad", "latency_p99") >= number(&report, "bad", "latency_p50"));
    let thresholds = report["thresholds"].as_array().unwrap();
    assert_eq!(thresholds.len(), 2);
    assert!(
        thresholds.iter().all(|t| t["failed"] == false),
        "{thresholds:?}"
    );

    // --out: the same JSON, raw samples, charts and the HTML report.
    let saved: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    assert_eq!(saved, report);
    let csv = std::fs::read_to_string(dir.join("samples.csv")).unwrap();
    let mut rows = csv.lines();
    assert!(
        rows.next()
            .unwrap()
            .starts_with("worker,t_seconds,live_tasks,allocated_bytes,")
    );
    let rows: Vec<&str> = rows.collect();
    for worker in ["bad", "optimized"] {
        let n = rows
            .iter()
            .filter(|r| r.starts_with(&format!("{worker},")))
            .count();
        assert_eq!(n as u64, samples, "{worker} rows in samples.csv");
    }
    for chart in CHARTS {
        check_svg(&dir.join("charts").join(format!("{chart}.svg")));
        check_png(&dir.join("charts").join(format!("{chart}.png")));
    }
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.starts_with("<!DOCTYPE html>"));
    assert_eq!(html.matches("<svg").count(), CHARTS.len(), "inline charts");
    for (_, label) in METRICS {
        assert!(html.contains(label), "HTML report lacks the row {label:?}");
    }
    // Self-contained: no scripts, stylesheets or images fetched from anywhere.
    for external in ["<script", "<link", "<img", "src=\"http", "url(http"] {
        assert!(!html.contains(external), "HTML report loads {external}");
    }
    assert!(dir.join("bad.log").is_file() && dir.join("optimized.log").is_file());
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_threshold_that_holds_fails_the_run_and_the_table_says_which() {
    let run = compare(&[
        "--duration",
        "3s",
        "--fail-if",
        "bad.live_tasks_slope > 0",
        "--fail-if",
        "optimized.allocations_per_task>0",
    ]);
    assert_eq!(run.code, 3, "{}\n{}", run.stdout, run.stderr);
    for (_, label) in METRICS {
        let row = run
            .stdout
            .lines()
            .find(|l| l.starts_with(label))
            .unwrap_or_else(|| panic!("no row {label:?} in:\n{}", run.stdout));
        // label, bad, optimized, ratio
        assert!(row.len() > 60, "short row {row:?}");
    }
    assert!(
        run.stdout.contains("bad  ") && run.stdout.contains("bad/optimized"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("Task leak: worker-bad"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("FAILED  bad.live_tasks_slope > 0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout
            .contains("ok      optimized.allocations_per_task>0"),
        "{}",
        run.stdout
    );
    assert!(
        run.stdout.contains("LEAK:"),
        "exit summaries:\n{}",
        run.stdout
    );
    assert!(
        run.stderr
            .contains("1 of 2 thresholds failed: bad.live_tasks_slope > 0"),
        "{}",
        run.stderr
    );
}

#[test]
fn bad_arguments_are_rejected_before_any_worker_starts() {
    for (args, needles) in [
        (
            &["--fail-if", "bad.speed>1"][..],
            &[
                "bad.speed>1",
                "unknown metric \"speed\"",
                "allocations_per_task",
                "<=",
            ][..],
        ),
        (
            &["--fail-if", "optimized.throughput"],
            &["no comparison operator"],
        ),
        (&["--rate", "0"], &["--rate"]),
        (&["--duration", "ten"], &["--duration", "30s, 10m or 48h"]),
        (
            &["--interval", "30s", "--duration", "10s"],
            &["--interval", "half of --duration"],
        ),
        (&["--profiles"], &["--out"]),
    ] {
        let run = lab(&[&["compare"], args].concat());
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        for needle in needles {
            assert!(
                run.stderr.contains(needle),
                "{args:?}: no {needle:?} in:\n{}",
                run.stderr
            );
        }
    }
}

#[test]
fn profiles_flag_is_the_guides_benchmark_with_cpu_and_heap_profiles() {
    let dir = temp_dir("profiles");
    let run = compare(&[
        "--duration",
        "2s",
        "--profiles",
        "--out",
        dir.to_str().unwrap(),
    ]);
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    let report: Value =
        serde_json::from_str(&std::fs::read_to_string(dir.join("report.json")).unwrap()).unwrap();
    let profiles = report["profiles"].as_array().unwrap();
    assert_eq!(profiles.len(), 4, "{profiles:?}");
    for worker in ["bad", "optimized"] {
        for kind in ["cpu", "heap"] {
            let path = dir.join(format!("{worker}-{kind}.pb.gz"));
            let size = std::fs::metadata(&path).map(|m| m.len()).unwrap_or(0);
            assert!(size > 100, "{} is missing or empty", path.display());
            assert!(
                run.stdout
                    .contains(&format!("go tool pprof -top {}", path.display()))
            );
        }
    }
    let Some(go) = support::require_go() else {
        std::fs::remove_dir_all(&dir).unwrap();
        return;
    };
    let cpu = support::go_pprof(&go, &["-top", dir.join("bad-cpu.pb.gz").to_str().unwrap()]);
    assert!(
        cpu.contains("Type: cpu") && cpu.contains("profiling_lab::bad::"),
        "{cpu}"
    );
    let heap = support::go_pprof(
        &go,
        &["-top", dir.join("optimized-heap.pb.gz").to_str().unwrap()],
    );
    assert!(heap.contains("Type: inuse_space"), "{heap}");
    std::fs::remove_dir_all(&dir).unwrap();
}

/// Checks an SVG chart: well-formed XML (every element closed, in order), an `<svg>` root, and
/// both workers' lines and legend labels.
fn check_svg(path: &Path) {
    let svg = std::fs::read_to_string(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut open: Vec<String> = Vec::new();
    let mut rest = svg.as_str();
    let mut root = None;
    while let Some(start) = rest.find('<') {
        let end = rest[start..]
            .find('>')
            .unwrap_or_else(|| panic!("{}: unterminated tag", path.display()));
        let tag = &rest[start + 1..start + end];
        rest = &rest[start + end + 1..];
        if tag.starts_with('?') || tag.starts_with('!') {
            continue;
        }
        if let Some(name) = tag.strip_prefix('/') {
            let top = open.pop();
            assert_eq!(
                top.as_deref(),
                Some(name.trim()),
                "{}: mismatched </{name}>",
                path.display()
            );
            continue;
        }
        let name = tag
            .split_whitespace()
            .next()
            .unwrap_or("")
            .trim_end_matches('/');
        assert_eq!(
            tag.matches('"').count() % 2,
            0,
            "{}: unbalanced quotes in <{tag}>",
            path.display()
        );
        root.get_or_insert(name.to_owned());
        if !tag.ends_with('/') {
            open.push(name.to_owned());
        }
    }
    assert!(open.is_empty(), "{}: unclosed {open:?}", path.display());
    assert_eq!(root.as_deref(), Some("svg"), "{}", path.display());
    for needle in [
        "stroke=\"#F2495C\"",
        "stroke=\"#73BF69\"",
        "\nbad\n",
        "\noptimized\n",
        "time since start (s)",
    ] {
        assert!(svg.contains(needle), "{}: no {needle:?}", path.display());
    }
}

/// Checks a PNG chart: it decodes, has the charts' size and shows both workers' lines.
fn check_png(path: &Path) {
    let file = std::fs::File::open(path).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut reader = png::Decoder::new(std::io::BufReader::new(file))
        .read_info()
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let mut pixels = vec![0; reader.output_buffer_size().unwrap()];
    let info = reader.next_frame(&mut pixels).unwrap();
    assert_eq!((info.width, info.height), (900, 420), "{}", path.display());
    assert_eq!(info.color_type, png::ColorType::Rgb);
    // Below the title and legend strip (44 px), where only the plotted lines are coloured.
    let plot = &pixels[60 * 900 * 3..];
    for (name, rgb) in [("red", [0xF2, 0x49, 0x5C]), ("green", [0x73, 0xBF, 0x69])] {
        assert!(
            plot.chunks(3).filter(|p| *p == rgb).count() > 20,
            "{}: no {name} line",
            path.display()
        );
    }
}
