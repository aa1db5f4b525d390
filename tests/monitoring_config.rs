//! Checks of the monitoring configuration: prometheus/, grafana/ and their agreement.
//!
//! - `promtool check config`, `promtool check rules` and `promtool test rules` on the real files
//!   (skipped with a message when promtool is missing, failing under LAB_REQUIRE_TOOLS=1);
//! - every rule has `for:`, a severity and annotations, and every alert has a unit test that
//!   fires and one that does not;
//! - the dashboard's structure (ids, grid, datasource uids, units from Grafana's list) and its
//!   PromQL (rate windows, no increase() on a gauge, worker_type kept), with every expression
//!   parsed by promtool;
//! - the provisioning files use the runners' environment variables and agree with prometheus.yml;
//! - docs/MONITORING.md names every panel and alert.
//!
//! The lint functions return a list of problems; `lints_catch_broken_configs` feeds them broken
//! copies so each check is shown to be able to fail.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

const INSTALL_PROMTOOL: &str = "apt-get install -y --no-install-recommends prometheus";
const PROMETHEUS_YML: &str = "prometheus/prometheus.yml";
const RULES_DIR: &str = "prometheus/rules";
const RULE_TESTS_DIR: &str = "prometheus/tests";
const DATASOURCE_YAML: &str = "grafana/provisioning/datasources/prometheus.yaml";
const PROVIDER_YAML: &str = "grafana/provisioning/dashboards/lab.yaml";
const DASHBOARD_JSON: &str = "grafana/dashboards/worker-performance.json";
const MONITORING_MD: &str = "docs/MONITORING.md";

/// Gauges among the lab's metrics (contract): read with deriv()/delta(), never rate()/increase().
const GAUGES: &[&str] = &[
    "worker_active_goroutines",
    "worker_allocated_memory_bytes",
    "worker_tasks_in_queue",
    "worker_resident_memory_bytes",
    "worker_runtime_workers",
    "worker_runtime_global_queue_depth",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
    "up",
];

/// Counters whose names do not end in `_total`: the guide named this one so.
const COUNTERS_WITHOUT_TOTAL: &[&str] = &["worker_total_allocations_bytes"];

/// Unit ids from Grafana's list (grafana/grafana
/// packages/grafana-data/src/valueFormats/categories.ts): Misc, Data (IEC and metric), Data rate,
/// Time and Throughput, the categories a dashboard about a process can need.
#[rustfmt::skip]
const GRAFANA_UNITS: &[&str] = &[
    // Misc
    "none", "string", "short", "percent", "percentunit", "hex0x", "hex", "sci", "locale",
    // Data (IEC)
    "bits", "bytes", "kbytes", "mbytes", "gbytes", "tbytes", "pbytes",
    // Data (metric)
    "decbits", "decbytes", "deckbytes", "decmbytes", "decgbytes", "dectbytes", "decpbytes",
    // Data rate
    "pps", "bps", "Bps", "KBs", "Kbits", "MBs", "Mbits", "GBs", "Gbits", "TBs", "Tbits", "PBs",
    "Pbits",
    // Time
    "hertz", "ns", "µs", "ms", "s", "m", "h", "d", "dtdurationms", "dtdurations", "dthms",
    "dtdhms", "timeticks", "clockms", "clocks",
    // Throughput
    "cps", "ops", "reqps", "rps", "wps", "iops", "cpm", "opm", "rpm", "wpm",
];

/// Panels the original guide lists, by (part of) their title.
const GUIDE_PANELS: &[&str] = &[
    "Active Goroutines",
    "Allocated Memory",
    "Task Processing Rate",
    "GC-analogue",
    "Task Processing Duration p50",
    "Task Processing Duration p95",
];

// ------------------------------------------------------------------------------------------
// helpers

fn path(rel: &str) -> PathBuf {
    support::repo_root().join(rel)
}

fn read(rel: &str) -> String {
    std::fs::read_to_string(path(rel)).unwrap_or_else(|e| panic!("reading {rel}: {e}"))
}

fn promtool() -> Option<PathBuf> {
    support::require_tool("promtool", INSTALL_PROMTOOL)
}

fn run_promtool(promtool: &Path, args: &[&str]) -> Output {
    Command::new(promtool)
        .args(args)
        .current_dir(support::repo_root())
        .output()
        .unwrap_or_else(|e| panic!("running promtool {args:?}: {e}"))
}

fn output_text(out: &Output) -> String {
    format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    )
}

fn assert_promtool_ok(promtool: &Path, args: &[&str]) -> String {
    let out = run_promtool(promtool, args);
    let text = output_text(&out);
    assert!(out.status.success(), "promtool {args:?} failed:\n{text}");
    text
}

/// The `.yml` files of a directory, relative to the repository root, sorted.
fn yml_files(dir: &str) -> Vec<String> {
    let mut files: Vec<String> = std::fs::read_dir(path(dir))
        .unwrap_or_else(|e| panic!("listing {dir}: {e}"))
        .map(|e| {
            e.expect("directory entry")
                .file_name()
                .to_string_lossy()
                .into_owned()
        })
        .filter(|name| name.ends_with(".yml"))
        .map(|name| format!("{dir}/{name}"))
        .collect();
    files.sort();
    files
}

/// A scratch directory under the system temp dir, unique to this process and test.
fn scratch_dir(test: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("profiling-lab-{test}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("creating a scratch directory");
    dir
}

/// The values of `key:` in a small YAML file, read line by line: enough for the flat keys of our
/// provisioning files and prometheus.yml (no YAML crate among the dependencies). Comment lines
/// and trailing comments are ignored, a leading `- ` is allowed, quotes are removed.
fn yaml_values(text: &str, key: &str) -> Vec<String> {
    text.lines()
        .map(|line| line.trim())
        .filter(|line| !line.starts_with('#'))
        .map(|line| line.strip_prefix("- ").unwrap_or(line))
        .filter_map(|line| line.strip_prefix(key)?.strip_prefix(':'))
        .map(|value| {
            let value = match value.find(" #") {
                Some(i) => &value[..i],
                None => value,
            };
            value.trim().trim_matches('"').trim_matches('\'').to_owned()
        })
        .collect()
}

fn yaml_value(text: &str, key: &str, file: &str) -> String {
    let values = yaml_values(text, key);
    assert_eq!(
        values.len(),
        1,
        "{file}: expected one `{key}:`, found {values:?}"
    );
    values.into_iter().next().unwrap()
}

/// A Prometheus duration such as `2s`, `1m`, `1m30s`, `500ms`, in milliseconds.
fn duration_ms(text: &str) -> Option<u64> {
    let mut total = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit())
            .unwrap_or(rest.len());
        let number: u64 = rest[..digits].parse().ok()?;
        rest = &rest[digits..];
        let unit_len = rest
            .find(|c: char| c.is_ascii_digit())
            .unwrap_or(rest.len());
        let factor = match &rest[..unit_len] {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "w" => 604_800_000,
            "y" => 31_536_000_000,
            _ => return None,
        };
        total += number * factor;
        rest = &rest[unit_len..];
    }
    (!text.is_empty()).then_some(total)
}

fn scrape_interval_ms() -> u64 {
    let text = read(PROMETHEUS_YML);
    let value = yaml_value(&text, "scrape_interval", PROMETHEUS_YML);
    duration_ms(&value).unwrap_or_else(|| panic!("bad scrape_interval {value:?}"))
}

/// The arguments of every call of `func` in `expr` (`rate` does not match inside `irate`).
fn call_args<'a>(expr: &'a str, func: &str) -> Vec<&'a str> {
    let pattern = format!("{func}(");
    let mut args = Vec::new();
    for (start, _) in expr.match_indices(&pattern) {
        let before = expr[..start].chars().next_back();
        if before.is_some_and(|c| c.is_ascii_alphanumeric() || c == '_' || c == ':') {
            continue;
        }
        let open = start + pattern.len();
        let mut depth = 1;
        for (i, c) in expr[open..].char_indices() {
            match c {
                '(' => depth += 1,
                ')' => depth -= 1,
                _ => {}
            }
            if depth == 0 {
                args.push(&expr[open..open + i]);
                break;
            }
        }
    }
    args
}

/// The first metric name in a PromQL fragment such as `worker_x_total{a="b"}[5m]`.
fn first_metric(fragment: &str) -> &str {
    let fragment = fragment.trim_start();
    let end = fragment
        .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_' || c == ':'))
        .unwrap_or(fragment.len());
    &fragment[..end]
}

/// The contents of every `[...]` range selector in `expr`.
fn ranges(expr: &str) -> Vec<&str> {
    expr.match_indices('[')
        .filter_map(|(i, _)| expr[i + 1..].find(']').map(|j| &expr[i + 1..i + 1 + j]))
        .collect()
}

fn is_counter(metric: &str) -> bool {
    metric.ends_with("_total")
        || metric.ends_with("_bucket")
        || metric.ends_with("_count")
        || metric.ends_with("_sum")
        || COUNTERS_WITHOUT_TOTAL.contains(&metric)
}

/// Problems with the PromQL of one expression: rate()/irate()/increase() only on counters and
/// over `allowed_rate_window` (or, in rule files, any window of at least 4 scrape intervals);
/// no window shorter than 4 scrape intervals anywhere.
fn promql_problems(
    expr: &str,
    allowed_rate_window: Option<&str>,
    min_window_ms: u64,
) -> Vec<String> {
    let mut problems = Vec::new();
    for func in ["rate", "irate", "increase"] {
        for arg in call_args(expr, func) {
            let metric = first_metric(arg);
            if GAUGES.contains(&metric) || !is_counter(metric) {
                problems.push(format!(
                    "{func}({metric}...) on a gauge (use deriv() or delta()): {expr}"
                ));
            }
            let window = ranges(arg).last().copied().unwrap_or("");
            if let Some(allowed) = allowed_rate_window
                && window != allowed
            {
                problems.push(format!(
                    "{func}() window [{window}] is not [{allowed}]: {expr}"
                ));
            }
        }
    }
    for window in ranges(expr) {
        if window.starts_with("$__rate_interval") {
            continue;
        }
        match duration_ms(window) {
            Some(ms) if ms >= min_window_ms => {}
            Some(_) => problems.push(format!(
                "window [{window}] is shorter than 4 scrape intervals ({min_window_ms} ms): {expr}"
            )),
            None => problems.push(format!("window [{window}] is not a fixed duration: {expr}")),
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// dashboard lint

/// Every panel, with the panels of collapsed rows.
fn all_panels(dashboard: &Value) -> Vec<&Value> {
    let mut out = Vec::new();
    for panel in dashboard["panels"].as_array().into_iter().flatten() {
        out.push(panel);
        out.extend(panel["panels"].as_array().into_iter().flatten());
    }
    out
}

fn is_row(panel: &Value) -> bool {
    panel["type"] == "row"
}

fn title(panel: &Value) -> String {
    panel["title"].as_str().unwrap_or("<untitled>").to_owned()
}

fn targets(panel: &Value) -> Vec<&Value> {
    panel["targets"].as_array().into_iter().flatten().collect()
}

/// Structural problems: identity, ids, grid, datasources, units, descriptions, colours.
fn dashboard_structure_problems(dashboard: &Value, datasource_uid: &str) -> Vec<String> {
    let mut problems = Vec::new();
    let expect = |problems: &mut Vec<String>, ok: bool, what: &str| {
        if !ok {
            problems.push(what.to_owned());
        }
    };
    expect(
        &mut problems,
        dashboard["uid"] == "worker-performance",
        "uid must be worker-performance",
    );
    expect(
        &mut problems,
        dashboard["title"] == "Worker Performance Comparison",
        "title must be \"Worker Performance Comparison\"",
    );
    expect(
        &mut problems,
        dashboard["schemaVersion"] == 41,
        "schemaVersion must be 41",
    );
    expect(
        &mut problems,
        dashboard["refresh"] == "5s",
        "refresh must be 5s",
    );
    expect(
        &mut problems,
        dashboard["time"]["from"] == "now-15m",
        "time.from must be now-15m",
    );
    expect(
        &mut problems,
        dashboard["graphTooltip"] == 1,
        "graphTooltip must be 1 (shared crosshair)",
    );
    expect(
        &mut problems,
        dashboard["id"].is_null(),
        "id must be null or absent (Grafana assigns it)",
    );
    expect(
        &mut problems,
        dashboard["tags"].as_array().is_some_and(|t| !t.is_empty()),
        "tags must not be empty",
    );

    let panels = all_panels(dashboard);
    expect(&mut problems, !panels.is_empty(), "no panels");
    let mut ids = BTreeSet::new();
    let mut boxes: Vec<(String, i64, i64, i64, i64)> = Vec::new();
    for panel in &panels {
        let name = title(panel);
        match panel["id"].as_i64() {
            Some(id) if ids.insert(id) => {}
            Some(id) => problems.push(format!("panel {name:?}: duplicate id {id}")),
            None => problems.push(format!("panel {name:?}: id is not an integer")),
        }
        let grid = &panel["gridPos"];
        let [h, w, x, y] = ["h", "w", "x", "y"].map(|k| grid[k].as_i64().unwrap_or(-1));
        if h <= 0 || w <= 0 || x < 0 || y < 0 || x + w > 24 {
            problems.push(format!(
                "panel {name:?}: gridPos {grid} is not inside the 24-column grid"
            ));
        } else {
            boxes.push((name.clone(), x, y, w, h));
        }
        if is_row(panel) {
            continue;
        }
        let datasource = &panel["datasource"];
        if datasource["type"] != "prometheus" || datasource["uid"] != datasource_uid {
            problems.push(format!(
                "panel {name:?}: datasource {datasource} is not {{type: prometheus, uid: {datasource_uid}}}"
            ));
        }
        for target in targets(panel) {
            let ds = &target["datasource"];
            if ds["type"] != "prometheus" || ds["uid"] != datasource_uid {
                problems.push(format!(
                    "panel {name:?}: target datasource {ds} is not uid {datasource_uid}"
                ));
            }
        }
        if targets(panel).is_empty() {
            problems.push(format!("panel {name:?}: no targets"));
        }
        if panel["description"]
            .as_str()
            .is_none_or(|d| d.trim().len() < 40)
        {
            problems.push(format!(
                "panel {name:?}: needs a description saying what to look for"
            ));
        }
        let mut units = vec![&panel["fieldConfig"]["defaults"]["unit"]];
        for o in panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
        {
            for p in o["properties"].as_array().into_iter().flatten() {
                if p["id"] == "unit" {
                    units.push(&p["value"]);
                }
            }
        }
        for unit in units {
            match unit.as_str() {
                Some(u) if GRAFANA_UNITS.contains(&u) => {}
                _ => problems.push(format!(
                    "panel {name:?}: unit {unit} is not from Grafana's list"
                )),
            }
        }
        if matches!(panel["type"].as_str(), Some("timeseries" | "stat")) {
            let overrides = panel["fieldConfig"]["overrides"].to_string();
            for (who, colour) in [("bad", "red"), ("optimized", "green")] {
                let has = panel["fieldConfig"]["overrides"]
                    .as_array()
                    .into_iter()
                    .flatten()
                    .any(|o| {
                        o["matcher"]["options"]
                            .as_str()
                            .is_some_and(|m| m.starts_with(who))
                            && o["properties"]
                                .to_string()
                                .contains(&format!("\"{colour}\""))
                    });
                if !has {
                    problems.push(format!(
                        "panel {name:?}: no override colouring {who} {colour}: {overrides}"
                    ));
                }
            }
        }
    }
    for (i, a) in boxes.iter().enumerate() {
        for b in &boxes[i + 1..] {
            let overlap = a.1 < b.1 + b.3 && b.1 < a.1 + a.3 && a.2 < b.2 + b.4 && b.2 < a.2 + a.4;
            if overlap {
                problems.push(format!("panels {:?} and {:?} overlap", a.0, b.0));
            }
        }
    }
    problems
}

/// Query problems: expr and refId present, the lab's PromQL rules, worker_type kept.
fn dashboard_query_problems(dashboard: &Value, scrape_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in all_panels(dashboard).into_iter().filter(|p| !is_row(p)) {
        let name = title(panel);
        let mut ref_ids = BTreeSet::new();
        for target in targets(panel) {
            let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                problems.push(format!("panel {name:?}: a target has no expr"));
                continue;
            };
            match target["refId"].as_str() {
                Some(r) if !r.is_empty() && ref_ids.insert(r.to_owned()) => {}
                other => problems.push(format!(
                    "panel {name:?}: refId {other:?} missing or repeated"
                )),
            }
            for p in promql_problems(expr, Some("$__rate_interval"), 4 * scrape_ms) {
                problems.push(format!("panel {name:?}: {p}"));
            }
            let legend = target["legendFormat"].as_str().unwrap_or("");
            if !legend.contains("{{worker_type}}") {
                problems.push(format!(
                    "panel {name:?}: legendFormat {legend:?} does not show {{{{worker_type}}}}"
                ));
            }
            for (i, _) in expr.match_indices(" by (") {
                let grouping = &expr[i..i + expr[i..].find(')').unwrap_or(0)];
                if !grouping.contains("worker_type") {
                    problems.push(format!(
                        "panel {name:?}: `{grouping})` drops worker_type: {expr}"
                    ));
                }
            }
            let ungrouped = [
                "sum", "avg", "min", "max", "count", "topk", "bottomk", "quantile",
            ]
            .iter()
            .any(|agg| !call_args(expr, agg).is_empty());
            if expr.contains("without") || ungrouped {
                problems.push(format!(
                    "panel {name:?}: aggregate with `by (..., worker_type)`: {expr}"
                ));
            }
            // Prometheus scrapes itself and has process_* metrics too, without worker_type.
            for (i, _) in expr.match_indices("process_") {
                if !expr[i..]
                    .trim_start_matches(|c: char| c.is_ascii_alphanumeric() || c == '_')
                    .starts_with("{worker_type!=\"\"")
                {
                    problems.push(format!(
                        "panel {name:?}: select process_* metrics with {{worker_type!=\"\"}} to leave out Prometheus' own: {expr}"
                    ));
                }
            }
            if expr.contains("histogram_quantile")
                && !expr.contains("sum by (le, worker_type) (rate(")
            {
                problems.push(format!(
                    "panel {name:?}: histogram_quantile must be over sum by (le, worker_type) (rate(...)): {expr}"
                ));
            }
        }
    }
    problems
}

fn load_dashboard() -> Value {
    serde_json::from_str(&read(DASHBOARD_JSON))
        .unwrap_or_else(|e| panic!("{DASHBOARD_JSON} is not valid JSON: {e}"))
}

fn provisioned_datasource_uid() -> String {
    yaml_value(&read(DATASOURCE_YAML), "uid", DATASOURCE_YAML)
}

fn assert_no_problems(what: &str, problems: Vec<String>) {
    assert!(problems.is_empty(), "{what}:\n  {}", problems.join("\n  "));
}

// ------------------------------------------------------------------------------------------
// rule-file lint

/// Alert names and, for each, the text of its rule (up to the next rule).
fn alerts(rules_text: &str) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    let mut current: Option<(String, String)> = None;
    for line in rules_text.lines() {
        let trimmed = line.trim();
        if trimmed.starts_with("- alert:")
            || trimmed.starts_with("- record:")
            || trimmed.starts_with("- name:")
        {
            if let Some((name, body)) = current.take() {
                out.insert(name, body);
            }
            if let Some(name) = trimmed.strip_prefix("- alert:") {
                current = Some((name.trim().to_owned(), String::new()));
            }
        } else if let Some((_, body)) = current.as_mut() {
            body.push_str(line);
            body.push('\n');
        }
    }
    if let Some((name, body)) = current {
        out.insert(name, body);
    }
    out
}

fn rule_file_problems(rules_text: &str, scrape_ms: u64) -> Vec<String> {
    let mut problems = Vec::new();
    let found = alerts(rules_text);
    if found.is_empty() {
        problems.push("no alerts found".to_owned());
    }
    for (name, body) in &found {
        for key in ["for:", "severity:", "summary:", "description:"] {
            if !body.contains(key) {
                problems.push(format!("alert {name}: no `{key}`"));
            }
        }
    }
    let code: String = rules_text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    problems.extend(promql_problems(&code, None, 4 * scrape_ms));
    problems
}

/// For each alert named in the rule-test files: (has a case expecting it to fire,
/// has a case expecting nothing).
fn alert_test_cases(test_texts: &[String]) -> BTreeMap<String, (bool, bool)> {
    let mut cases: BTreeMap<String, (bool, bool)> = BTreeMap::new();
    for text in test_texts {
        let lines: Vec<&str> = text.lines().map(str::trim).collect();
        for (i, line) in lines.iter().enumerate() {
            let line = line.strip_prefix("- ").unwrap_or(line);
            let Some(name) = line.strip_prefix("alertname:") else {
                continue;
            };
            let next = lines[i + 1..]
                .iter()
                .find(|l| !l.is_empty() && !l.starts_with('#'));
            let entry = cases.entry(name.trim().to_owned()).or_default();
            match next {
                Some(&"exp_alerts: []") => entry.1 = true,
                Some(&"exp_alerts:") => entry.0 = true,
                _ => {}
            }
        }
    }
    cases
}

// ------------------------------------------------------------------------------------------
// tests

#[test]
fn prometheus_config_is_valid_for_promtool() {
    let text = read(PROMETHEUS_YML);
    let config: Vec<&str> = text
        .lines()
        .filter(|l| !l.trim_start().starts_with('#'))
        .collect();
    let config = config.join("\n");
    // Shape the runners rely on (they substitute these addresses textually).
    for (job, target) in [
        ("worker-bad", "127.0.0.1:9090"),
        ("worker-optimized", "127.0.0.1:9091"),
        ("prometheus", "127.0.0.1:9092"),
    ] {
        assert!(
            yaml_values(&config, "job_name").contains(&job.to_owned()),
            "{PROMETHEUS_YML}: no job {job}"
        );
        assert_eq!(
            text.matches(target).count(),
            1,
            "{PROMETHEUS_YML}: {target} must appear once"
        );
    }
    assert_eq!(yaml_value(&config, "scrape_interval", PROMETHEUS_YML), "2s");
    assert_eq!(
        yaml_value(&config, "evaluation_interval", PROMETHEUS_YML),
        "2s"
    );
    assert!(
        config.contains("- rules/*.yml"),
        "{PROMETHEUS_YML}: rule_files must load rules/*.yml"
    );
    // Metrics carry worker_type; a target label would become exported_worker_type.
    assert!(
        !config.contains("worker_type"),
        "{PROMETHEUS_YML}: do not add a worker_type label"
    );
    // Fields Prometheus 2.42 rejects (3.x only).
    for field in [
        "scrape_protocols",
        "fallback_scrape_protocol",
        "enable_compression",
        "scrape_config_files",
        "always_scrape_classic_histograms",
        "convert_classic_histograms_to_nhcb",
        "metric_name_validation_scheme",
    ] {
        assert!(
            !config.contains(field),
            "{PROMETHEUS_YML}: `{field}` breaks Prometheus 2.42"
        );
    }

    let Some(promtool) = promtool() else { return };
    let out = assert_promtool_ok(&promtool, &["check", "config", PROMETHEUS_YML]);
    let rule_files = yml_files(RULES_DIR).len();
    assert!(
        out.contains(&format!("{rule_files} rule files found")),
        "promtool did not load the {rule_files} files of {RULES_DIR}:\n{out}"
    );
}

#[test]
fn alert_rules_are_valid_and_complete() {
    let files = yml_files(RULES_DIR);
    assert!(!files.is_empty(), "no rule files in {RULES_DIR}");
    let scrape_ms = scrape_interval_ms();
    let mut names = BTreeSet::new();
    for file in &files {
        let text = read(file);
        assert_no_problems(file, rule_file_problems(&text, scrape_ms));
        names.extend(alerts(&text).into_keys());
    }
    for lesson in [
        "WorkerTaskLeak",
        "WorkerAllocationChurn",
        "WorkerHighErrorRatio",
        "WorkerTargetDown",
    ] {
        assert!(
            names.contains(lesson),
            "missing alert {lesson}; have {names:?}"
        );
    }

    let Some(promtool) = promtool() else { return };
    let mut args = vec!["check", "rules"];
    args.extend(files.iter().map(String::as_str));
    assert_promtool_ok(&promtool, &args);
}

#[test]
fn every_alert_has_unit_tests_firing_and_not_firing() {
    let mut alert_names = BTreeSet::new();
    for file in yml_files(RULES_DIR) {
        alert_names.extend(alerts(&read(&file)).into_keys());
    }
    let test_files = yml_files(RULE_TESTS_DIR);
    assert!(
        !test_files.is_empty(),
        "no promtool tests in {RULE_TESTS_DIR}"
    );
    let cases = alert_test_cases(&test_files.iter().map(|f| read(f)).collect::<Vec<_>>());
    for name in &alert_names {
        let (fires, silent) = cases.get(name).copied().unwrap_or_default();
        assert!(fires, "{name}: no promtool test case where it fires");
        assert!(
            silent,
            "{name}: no promtool test case where it does not fire"
        );
    }

    let Some(promtool) = promtool() else { return };
    let mut args = vec!["test", "rules"];
    args.extend(test_files.iter().map(String::as_str));
    let out = assert_promtool_ok(&promtool, &args);
    assert_eq!(
        out.matches("SUCCESS").count(),
        test_files.len(),
        "expected SUCCESS for each of {test_files:?}:\n{out}"
    );
}

#[test]
fn dashboard_structure_is_sound() {
    let dashboard = load_dashboard();
    let uid = provisioned_datasource_uid();
    assert_eq!(uid, "lab-prometheus");
    assert_no_problems(
        DASHBOARD_JSON,
        dashboard_structure_problems(&dashboard, &uid),
    );
}

#[test]
fn dashboard_queries_follow_the_labs_promql_rules() {
    let dashboard = load_dashboard();
    assert_no_problems(
        DASHBOARD_JSON,
        dashboard_query_problems(&dashboard, scrape_interval_ms()),
    );
}

#[test]
fn dashboard_has_the_guides_panels_and_the_lessons() {
    let dashboard = load_dashboard();
    let panels = all_panels(&dashboard);
    let titles: Vec<String> = panels.iter().map(|p| title(p)).collect();
    for wanted in GUIDE_PANELS {
        assert!(
            titles.iter().any(|t| t.contains(wanted)),
            "no panel {wanted:?} in {titles:?}"
        );
    }
    let exprs: String = panels
        .iter()
        .flat_map(|p| targets(p))
        .filter_map(|t| t["expr"].as_str())
        .collect::<Vec<_>>()
        .join("\n");
    for metric in [
        "worker_active_goroutines",
        "worker_allocated_memory_bytes",
        "worker_total_allocations_bytes",
        "worker_gc_runs_total",
        "worker_tasks_processed_total",
        "worker_tasks_in_queue",
        "worker_task_processing_duration_seconds_bucket",
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
    ] {
        assert!(exprs.contains(metric), "no panel shows {metric}");
    }
    for quantile in ["histogram_quantile(0.5,", "histogram_quantile(0.95,"] {
        assert!(exprs.contains(quantile), "no {quantile}...) panel");
    }
    let kinds: BTreeSet<&str> = panels.iter().filter_map(|p| p["type"].as_str()).collect();
    for kind in ["row", "timeseries", "stat", "gauge"] {
        assert!(kinds.contains(kind), "no {kind} panel");
    }

    // Panel titles quoted in alert descriptions must exist, or the learner looks in vain.
    let mut quoted = BTreeSet::new();
    for file in yml_files(RULES_DIR) {
        let text = read(&file);
        for piece in text.split('"').skip(1).step_by(2) {
            if piece.starts_with(|c: char| c.is_ascii_uppercase()) && !piece.contains('\n') {
                quoted.insert(piece.to_owned());
            }
        }
    }
    assert!(
        !quoted.is_empty(),
        "alert descriptions should name the panels to look at"
    );
    for panel in &quoted {
        assert!(
            titles.contains(panel),
            "alert text names panel {panel:?}, not in {titles:?}"
        );
    }
}

#[test]
fn dashboard_expressions_parse_as_promql() {
    let dashboard = load_dashboard();
    let mut rules = String::from("groups:\n  - name: dashboard-expressions\n    rules:\n");
    let mut count = 0;
    for panel in all_panels(&dashboard) {
        for target in targets(panel) {
            let Some(expr) = target["expr"].as_str() else {
                continue;
            };
            let expr = expr
                .replace("$__rate_interval", "1m")
                .replace("$__interval", "15s")
                .replace("$__range", "1h");
            let id = panel["id"].as_i64().unwrap_or(0);
            let ref_id = target["refId"].as_str().unwrap_or("X");
            rules.push_str(&format!(
                "      - record: lab_dashboard_panel_{id}_{ref_id}\n        expr: |\n"
            ));
            for line in expr.lines() {
                rules.push_str(&format!("          {line}\n"));
            }
            count += 1;
        }
    }
    assert!(count > 0, "no expressions in {DASHBOARD_JSON}");

    let Some(promtool) = promtool() else { return };
    let dir = scratch_dir("dashboard-exprs");
    let file = dir.join("dashboard.rules.yml");
    std::fs::write(&file, &rules).expect("writing the scratch rules file");
    let out = assert_promtool_ok(&promtool, &["check", "rules", file.to_str().unwrap()]);
    assert!(
        out.contains(&format!("{count} rules found")),
        "{out}\n{rules}"
    );

    // The same check rejects a broken expression, so a pass above means something.
    std::fs::write(
        &file,
        "groups:\n  - name: broken\n    rules:\n      - record: lab_broken\n        expr: sum by (worker_type (rate(x_total[1m]))\n",
    )
    .unwrap();
    let out = run_promtool(&promtool, &["check", "rules", file.to_str().unwrap()]);
    assert!(
        !out.status.success(),
        "promtool accepted a broken expression"
    );
    let _ = std::fs::remove_dir_all(&dir);
}

#[test]
fn provisioning_uses_the_runners_variables_and_the_scrape_interval() {
    let datasource = read(DATASOURCE_YAML);
    let value = |key: &str| yaml_value(&datasource, key, DATASOURCE_YAML);
    assert_eq!(value("apiVersion"), "1");
    assert_eq!(value("name"), "Prometheus");
    assert_eq!(value("uid"), "lab-prometheus");
    assert_eq!(value("type"), "prometheus");
    assert_eq!(value("access"), "proxy");
    assert_eq!(value("url"), "${PROMETHEUS_URL}");
    assert_eq!(value("isDefault"), "true");
    assert_eq!(value("editable"), "false");
    let time_interval = value("timeInterval");
    let scrape = yaml_value(&read(PROMETHEUS_YML), "scrape_interval", PROMETHEUS_YML);
    assert_eq!(
        duration_ms(&time_interval),
        duration_ms(&scrape),
        "timeInterval {time_interval} must equal prometheus.yml's scrape_interval {scrape}"
    );

    let provider = read(PROVIDER_YAML);
    let value = |key: &str| yaml_value(&provider, key, PROVIDER_YAML);
    assert_eq!(value("apiVersion"), "1");
    assert_eq!(value("type"), "file");
    assert_eq!(value("path"), "${LAB_DASHBOARDS_DIR}");
    assert_eq!(value("allowUiUpdates"), "true");
    assert!(
        value("updateIntervalSeconds")
            .parse::<u32>()
            .is_ok_and(|s| s > 0)
    );
    assert!(!value("folder").is_empty());
    assert!(
        path(DASHBOARD_JSON).is_file(),
        "the provider's directory must hold {DASHBOARD_JSON}"
    );

    // Grafana expands $NAME in provisioning values: no other `$` may appear outside comments.
    for (file, text, var) in [
        (DATASOURCE_YAML, &datasource, "${PROMETHEUS_URL}"),
        (PROVIDER_YAML, &provider, "${LAB_DASHBOARDS_DIR}"),
    ] {
        for line in text.lines().filter(|l| !l.trim_start().starts_with('#')) {
            assert!(
                line.replace(var, "").find('$').is_none(),
                "{file}: unexpected `$` (Grafana would expand it): {line}"
            );
        }
    }
}

#[test]
fn monitoring_guide_names_every_panel_and_alert() {
    let guide = read(MONITORING_MD);
    let dashboard = load_dashboard();
    for panel in all_panels(&dashboard).into_iter().filter(|p| !is_row(p)) {
        let name = title(panel);
        assert!(
            guide.contains(&name),
            "{MONITORING_MD} does not describe panel {name:?}"
        );
    }
    for file in yml_files(RULES_DIR) {
        for alert in alerts(&read(&file)).into_keys() {
            assert!(
                guide.contains(&alert),
                "{MONITORING_MD} does not describe alert {alert}"
            );
        }
    }
}

#[test]
fn lints_catch_broken_configs() {
    let scrape_ms = scrape_interval_ms();
    let good = load_dashboard();
    let uid = provisioned_datasource_uid();
    assert_no_problems(
        "the real dashboard",
        dashboard_structure_problems(&good, &uid),
    );

    // Each mutation must be reported; the message must name the problem.
    type Mutation = (&'static str, fn(&mut Value));
    let structural: &[Mutation] = &[
        ("duplicate id", |d| {
            d["panels"][3]["id"] = d["panels"][2]["id"].clone()
        }),
        ("24-column", |d| d["panels"][2]["gridPos"]["x"] = 22.into()),
        ("overlap", |d| {
            d["panels"][2]["gridPos"] = d["panels"][3]["gridPos"].clone()
        }),
        ("datasource", |d| {
            d["panels"][2]["datasource"]["uid"] = "other".into()
        }),
        ("target datasource", |d| {
            d["panels"][2]["targets"][0]["datasource"]["uid"] = "x".into()
        }),
        ("Grafana's list", |d| {
            d["panels"][2]["fieldConfig"]["defaults"]["unit"] = "tasks".into()
        }),
        ("description", |d| d["panels"][2]["description"] = "".into()),
        ("colouring bad red", |d| {
            d["panels"][2]["fieldConfig"]["overrides"] = Value::Array(vec![])
        }),
        ("uid must be", |d| d["uid"] = "other".into()),
    ];
    for (needle, mutate) in structural {
        let mut broken = good.clone();
        mutate(&mut broken);
        let problems = dashboard_structure_problems(&broken, &uid);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "mutation {needle:?} not caught: {problems:?}"
        );
    }

    assert_no_problems(
        "the real dashboard",
        dashboard_query_problems(&good, scrape_ms),
    );
    let queries: &[(&str, &str, &str)] = &[
        (
            "rate(worker_tasks_processed_total[1s])",
            "{{worker_type}}",
            "window [1s]",
        ),
        (
            "rate(worker_gc_runs_total[1m])",
            "{{worker_type}}",
            "is not [$__rate_interval]",
        ),
        (
            "increase(worker_active_goroutines[$__rate_interval])",
            "{{worker_type}}",
            "on a gauge",
        ),
        (
            "rate(worker_tasks_in_queue[$__rate_interval])",
            "{{worker_type}}",
            "on a gauge",
        ),
        (
            "sum(rate(worker_gc_runs_total[$__rate_interval]))",
            "{{worker_type}}",
            "aggregate with",
        ),
        (
            "sum by (operation) (rate(worker_gc_runs_total[$__rate_interval]))",
            "{{operation}}",
            "drops worker_type",
        ),
        ("worker_tasks_in_queue", "{{instance}}", "does not show"),
        (
            "process_resident_memory_bytes",
            "{{worker_type}}",
            "Prometheus' own",
        ),
        (
            "histogram_quantile(0.95, rate(worker_task_processing_duration_seconds_bucket[$__rate_interval]))",
            "{{worker_type}}",
            "histogram_quantile must be",
        ),
    ];
    for (expr, legend, needle) in queries {
        let mut broken = good.clone();
        broken["panels"][2]["targets"][0]["expr"] = (*expr).into();
        broken["panels"][2]["targets"][0]["legendFormat"] = (*legend).into();
        let problems = dashboard_query_problems(&broken, scrape_ms);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "{expr} with legend {legend}: expected {needle:?} in {problems:?}"
        );
    }

    // Rule files: an alert without `for:` and increase() on a gauge are reported.
    let rules = "groups:\n  - name: g\n    rules:\n      - alert: X\n        expr: increase(worker_active_goroutines[1h]) > 0\n        labels:\n          severity: warning\n        annotations:\n          summary: s\n          description: d\n";
    let problems = rule_file_problems(rules, scrape_ms);
    assert!(
        problems.iter().any(|p| p.contains("no `for:`")),
        "{problems:?}"
    );
    assert!(
        problems.iter().any(|p| p.contains("on a gauge")),
        "{problems:?}"
    );

    // Alert tests: an alert tested only firing is reported as lacking a silent case.
    let cases = alert_test_cases(&[
        "  - alertname: X\n    exp_alerts:\n      - exp_labels: {}\n".to_owned(),
    ]);
    assert_eq!(cases.get("X"), Some(&(true, false)));

    assert_eq!(duration_ms("1m30s"), Some(90_000));
    assert_eq!(duration_ms("$__rate_interval"), None);
}
