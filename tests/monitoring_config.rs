//! Checks of the monitoring configuration: prometheus/, grafana/ and their agreement.
//!
//! - `promtool check config`, `promtool check rules` and `promtool test rules` on the real files
//!   (skipped with a message when promtool is missing, failing under LAB_REQUIRE_TOOLS=1);
//! - every rule has `for:`, a severity and annotations, and every alert has a unit test that
//!   fires and one that does not;
//! - the dashboard's structure (ids, grid, units from Grafana's list) and its PromQL (rate
//!   windows, no increase() on a gauge, worker_type and instance kept), with every expression
//!   parsed by promtool;
//! - the rules of grafana/dashboard-linter that fit the lab (a templated `${datasource}` used by
//!   every panel and query, `$__rate_interval` in every rate, counters only under rate(), units,
//!   titles and descriptions, an `__inputs` section for importing), with the linter's rules the
//!   lab does not follow listed with their reason, as a `.lint` file would;
//! - data links: every lesson panel links each worker's line to the profile that explains it,
//!   built from the series' `instance` label and opening in a new tab (tests/dashboard_links.rs
//!   follows every link to a running worker);
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
    "worker_live_tasks",
    "worker_observer_memory_bytes",
    "process_resident_memory_bytes",
    "process_virtual_memory_bytes",
    "process_open_fds",
    "process_max_fds",
    "process_threads",
    "process_start_time_seconds",
    "up",
    "scrape_duration_seconds",
    // Lessons 4-6 (branches `lessons` and `rtobs`).
    "worker_producer_rate",
    "worker_problem_enabled",
    "worker_runtime_thread_busy_ratio",
    "worker_task_mean_scheduled_seconds",
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

/// The panels' and queries' datasource: the dashboard's `datasource` variable.
const DATASOURCE_VARIABLE: &str = "${datasource}";

/// Structural problems: identity, ids, grid, datasources, units, descriptions, colours.
/// `datasource_uid` is the provisioned datasource the `datasource` variable must resolve to.
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
    // Provisioned, the variable must pick the lab's datasource by uid, not whichever Prometheus
    // a host lists first (the NixOS module adds it beside the host's own, without isDefault).
    let current = &datasource_variables(dashboard)
        .first()
        .map(|v| v["current"]["value"].clone())
        .unwrap_or_default();
    if current != datasource_uid {
        problems.push(format!(
            "the datasource variable's current value {current} is not the provisioned uid {datasource_uid}"
        ));
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
            // worker_type names the line; instance is where its data links point.
            for (i, _) in expr.match_indices(" by (") {
                let grouping = &expr[i..i + expr[i..].find(')').unwrap_or(0)];
                for label in ["worker_type", "instance"] {
                    if !grouping.contains(label) {
                        problems.push(format!(
                            "panel {name:?}: `{grouping})` drops {label}: {expr}"
                        ));
                    }
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
                && !expr.contains("sum by (le, worker_type, instance) (rate(")
            {
                problems.push(format!(
                    "panel {name:?}: histogram_quantile must be over sum by (le, worker_type, instance) (rate(...)): {expr}"
                ));
            }
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// grafana/dashboard-linter's rules

/// Every rule of grafana/dashboard-linter (lint/rules.go, `NewRuleSet`) and what the lab does
/// with it: follows it here, follows it elsewhere, or leaves it out for a stated reason (what a
/// `.lint` file beside the dashboard would say). A rule added upstream must be placed here.
const LINTER_RULES: &[(&str, LintDecision)] = &[
    ("template-datasource-rule", LintDecision::Here),
    (
        "template-job-rule",
        LintDecision::Excluded(JOB_INSTANCE_REASON),
    ),
    (
        "template-instance-rule",
        LintDecision::Excluded(JOB_INSTANCE_REASON),
    ),
    (
        "template-label-promql-rule",
        LintDecision::Elsewhere(
            "the dashboard has no query variables; template_on_time_change_reload_rule refuses any",
        ),
    ),
    ("template-on-time-change-reload-rule", LintDecision::Here),
    ("panel-datasource-rule", LintDecision::Here),
    ("panel-title-description-rule", LintDecision::Here),
    ("panel-units-rule", LintDecision::Here),
    ("panel-no-targets-rule", LintDecision::Here),
    (
        "target-logql-rule",
        LintDecision::Elsewhere("no Loki queries"),
    ),
    (
        "target-logql-auto-rule",
        LintDecision::Elsewhere("no Loki queries"),
    ),
    (
        "target-promql-rule",
        LintDecision::Elsewhere(
            "dashboard_expressions_parse_as_promql parses every expression with promtool, Prometheus' own parser",
        ),
    ),
    ("target-rate-interval-rule", LintDecision::Here),
    (
        "target-job-rule",
        LintDecision::Excluded(JOB_INSTANCE_REASON),
    ),
    (
        "target-instance-rule",
        LintDecision::Excluded(JOB_INSTANCE_REASON),
    ),
    ("target-counter-agg-rule", LintDecision::Here),
    (
        "uneditable-dashboard",
        LintDecision::Excluded(
            "learners rearrange and edit panels while the lab runs (the provider sets allowUiUpdates); the JSON file stays the source of truth and replaces UI edits when it changes",
        ),
    ),
];

const JOB_INSTANCE_REASON: &str = "the dashboard exists to show the two workers side by side: a job or instance selector would let a learner hide one of them, and every series keeps its instance label anyway, for its data links";

enum LintDecision {
    /// Implemented in [`LINT_RULES`].
    Here,
    /// Covered by another check or not applicable, and why.
    Elsewhere(&'static str),
    /// Deliberately not followed, and why.
    Excluded(&'static str),
}

type LintRule = (&'static str, fn(&Value) -> Vec<String>);

/// The linter's rules the lab follows, by the linter's names, plus the lab's own import rule.
const LINT_RULES: &[LintRule] = &[
    ("template-datasource-rule", template_datasource_rule),
    (
        "template-on-time-change-reload-rule",
        template_on_time_change_reload_rule,
    ),
    ("panel-datasource-rule", panel_datasource_rule),
    ("panel-title-description-rule", panel_title_description_rule),
    ("panel-units-rule", panel_units_rule),
    ("panel-no-targets-rule", panel_no_targets_rule),
    ("target-rate-interval-rule", target_rate_interval_rule),
    ("target-counter-agg-rule", target_counter_agg_rule),
    ("lab-import-rule", import_rule),
];

fn lint_problems(dashboard: &Value) -> Vec<String> {
    LINT_RULES
        .iter()
        .flat_map(|(rule, check)| {
            check(dashboard)
                .into_iter()
                .map(move |p| format!("{rule}: {p}"))
        })
        .collect()
}

fn datasource_variables(dashboard: &Value) -> Vec<&Value> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "datasource")
        .collect()
}

/// Exactly one datasource variable, for Prometheus, named `datasource` and labelled "Data source".
fn template_datasource_rule(dashboard: &Value) -> Vec<String> {
    let variables = datasource_variables(dashboard);
    let [variable] = variables.as_slice() else {
        return vec![format!(
            "the dashboard needs exactly one templated data source, has {}",
            variables.len()
        )];
    };
    let mut problems = Vec::new();
    for (key, want) in [
        ("name", "datasource"),
        ("label", "Data source"),
        ("query", "prometheus"),
    ] {
        if variable[key] != want {
            problems.push(format!(
                "the data source variable's {key} is {}, should be {want:?}",
                variable[key]
            ));
        }
    }
    problems
}

/// Query variables refresh on time-range change (the lab has none; any added must).
fn template_on_time_change_reload_rule(dashboard: &Value) -> Vec<String> {
    dashboard["templating"]["list"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|v| v["type"] == "query" && v["refresh"] != 2)
        .map(|v| {
            format!(
                "variable {} must have refresh 2 (on time range change)",
                v["name"]
            )
        })
        .collect()
}

fn is_datasource_variable(datasource: &Value) -> bool {
    datasource["type"] == "prometheus"
        && (datasource["uid"] == DATASOURCE_VARIABLE || datasource["uid"] == "$datasource")
}

/// Every panel and every query use the templated data source (the linter checks panels; the
/// lab checks queries too, since Grafana runs a query with its own datasource when it has one).
fn panel_datasource_rule(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in all_panels(dashboard).into_iter().filter(|p| !is_row(p)) {
        let name = title(panel);
        if !is_datasource_variable(&panel["datasource"]) {
            problems.push(format!(
                "panel {name:?} uses {}, not {{type: prometheus, uid: {DATASOURCE_VARIABLE}}}",
                panel["datasource"]
            ));
        }
        for target in targets(panel) {
            if !is_datasource_variable(&target["datasource"]) {
                problems.push(format!(
                    "panel {name:?}: its target uses {}, not {DATASOURCE_VARIABLE}",
                    target["datasource"]
                ));
            }
        }
    }
    problems
}

fn panel_title_description_rule(dashboard: &Value) -> Vec<String> {
    all_panels(dashboard)
        .into_iter()
        .filter(|p| !is_row(p))
        .filter(|p| {
            p["title"].as_str().is_none_or(str::is_empty)
                || p["description"].as_str().is_none_or(str::is_empty)
        })
        .map(|p| format!("panel id {} has no title or no description", p["id"]))
        .collect()
}

/// A unit from Grafana's list, as the linter reads it: an override's unit first, else the default.
fn panel_units_rule(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in all_panels(dashboard).into_iter().filter(|p| !is_row(p)) {
        let overridden = panel["fieldConfig"]["overrides"]
            .as_array()
            .into_iter()
            .flatten()
            .flat_map(|o| o["properties"].as_array().into_iter().flatten())
            .filter(|p| p["id"] == "unit")
            .filter_map(|p| p["value"].as_str())
            .next_back();
        let unit = overridden.or(panel["fieldConfig"]["defaults"]["unit"].as_str());
        if !unit.is_some_and(|u| GRAFANA_UNITS.contains(&u)) {
            problems.push(format!(
                "panel {:?} has no or an invalid unit: {unit:?}",
                title(panel)
            ));
        }
    }
    problems
}

fn panel_no_targets_rule(dashboard: &Value) -> Vec<String> {
    all_panels(dashboard)
        .into_iter()
        .filter(|p| !is_row(p) && targets(p).is_empty())
        .map(|p| format!("panel {:?} has no targets", title(p)))
        .collect()
}

/// rate(), irate() and increase() over `$__rate_interval` (the linter checks rate and irate; its
/// documentation names increase too).
fn target_rate_interval_rule(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in all_panels(dashboard) {
        for expr in targets(panel).iter().filter_map(|t| t["expr"].as_str()) {
            for func in ["rate", "irate", "increase"] {
                for arg in call_args(expr, func) {
                    if ranges(arg).last() != Some(&"$__rate_interval") {
                        problems.push(format!(
                            "panel {:?}: {func}() should use $__rate_interval: {expr}",
                            title(panel)
                        ));
                    }
                }
            }
        }
    }
    problems
}

/// Where each `func(...)` argument lies in `expr`, as byte ranges.
fn call_arg_spans(expr: &str, func: &str) -> Vec<std::ops::Range<usize>> {
    call_args(expr, func)
        .into_iter()
        .map(|arg| {
            let start = arg.as_ptr() as usize - expr.as_ptr() as usize;
            start..start + arg.len()
        })
        .collect()
}

/// Words after which PromQL expects a list of label names in parentheses.
const PROMQL_LABEL_LISTS: &[&str] = &[
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
];

/// PromQL's keywords and aggregation operators, which look like metric names to a tokenizer.
const PROMQL_KEYWORDS: &[&str] = &[
    "sum",
    "avg",
    "min",
    "max",
    "count",
    "stddev",
    "stdvar",
    "topk",
    "bottomk",
    "quantile",
    "count_values",
    "group",
    "limitk",
    "limit_ratio",
    "by",
    "without",
    "on",
    "ignoring",
    "group_left",
    "group_right",
    "and",
    "or",
    "unless",
    "bool",
    "offset",
    "atan2",
    "inf",
    "nan",
];

/// The metric names in `expr` with their positions: identifiers outside quotes and outside
/// `{...}` matchers and `[...]` ranges, not followed by `(` (a function) and not grouping labels.
fn metric_names(expr: &str) -> Vec<(usize, &str)> {
    let bytes = expr.as_bytes();
    let mut names = Vec::new();
    let (mut i, mut braces, mut brackets) = (0, 0, 0);
    while i < bytes.len() {
        let c = bytes[i];
        match c {
            b'"' | b'\'' => {
                i += 1;
                while i < bytes.len() && bytes[i] != c {
                    i += if bytes[i] == b'\\' { 2 } else { 1 };
                }
            }
            b'{' => braces += 1,
            b'}' => braces -= 1,
            b'[' => brackets += 1,
            b']' => brackets -= 1,
            _ if (c.is_ascii_alphabetic() || c == b'_' || c == b':')
                && braces == 0
                && brackets == 0 =>
            {
                let start = i;
                while i < bytes.len()
                    && (bytes[i].is_ascii_alphanumeric() || bytes[i] == b'_' || bytes[i] == b':')
                {
                    i += 1;
                }
                let name = &expr[start..i];
                let next = expr[i..].trim_start().chars().next();
                // A label list: `by (a, b)`, `without (...)`, `on (...)`, `group_left (...)`.
                let grouping = expr[..start].trim_end().ends_with(['(', ',']) && {
                    let before = &expr[..start];
                    let open = before.rfind('(').unwrap_or(0);
                    let word = before[..open]
                        .trim_end()
                        .rsplit(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                        .next()
                        .unwrap_or("");
                    PROMQL_LABEL_LISTS.contains(&word)
                };
                if next != Some('(') && !grouping && !PROMQL_KEYWORDS.contains(&name) {
                    names.push((start, name));
                }
                continue;
            }
            _ => {}
        }
        i += 1;
    }
    names
}

/// A counter is only read through rate(), irate() or increase(): its raw value is the count
/// since the process started, which means nothing on a dashboard.
fn target_counter_agg_rule(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in all_panels(dashboard) {
        for expr in targets(panel).iter().filter_map(|t| t["expr"].as_str()) {
            let spans: Vec<_> = ["rate", "irate", "increase"]
                .iter()
                .flat_map(|f| call_arg_spans(expr, f))
                .collect();
            for (at, metric) in metric_names(expr) {
                let counter =
                    metric.ends_with("_total") || COUNTERS_WITHOUT_TOTAL.contains(&metric);
                if counter && !spans.iter().any(|s| s.contains(&at)) {
                    problems.push(format!(
                        "panel {:?}: counter {metric} is not inside rate(), irate() or increase(): {expr}",
                        title(panel)
                    ));
                }
            }
        }
    }
    problems
}

/// The lab's rule for importing the JSON into another Grafana (Dashboards > New > Import):
/// an `__inputs` entry for the Prometheus datasource, and `__requires` naming Grafana, the
/// Prometheus plugin and every panel type used, which the import page checks.
fn import_rule(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    let inputs = dashboard["__inputs"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let prometheus_inputs = inputs
        .iter()
        .filter(|i| i["type"] == "datasource" && i["pluginId"] == "prometheus")
        .count();
    if inputs.len() != 1
        || prometheus_inputs != 1
        || inputs[0]["name"].as_str().is_none_or(str::is_empty)
    {
        problems.push(format!(
            "__inputs must hold exactly one named Prometheus datasource input, has {}",
            dashboard["__inputs"]
        ));
    }
    let requires = dashboard["__requires"]
        .as_array()
        .cloned()
        .unwrap_or_default();
    let required =
        |kind: &str, id: &str| requires.iter().any(|r| r["type"] == kind && r["id"] == id);
    let mut wanted = vec![
        ("grafana", "grafana".to_owned()),
        ("datasource", "prometheus".to_owned()),
    ];
    let types: BTreeSet<String> = all_panels(dashboard)
        .into_iter()
        .filter(|p| !is_row(p))
        .filter_map(|p| p["type"].as_str().map(str::to_owned))
        .collect();
    wanted.extend(types.into_iter().map(|t| ("panel", t)));
    for (kind, id) in wanted {
        if !required(kind, &id) {
            problems.push(format!("__requires does not list the {kind} {id:?}"));
        }
    }
    problems
}

// ------------------------------------------------------------------------------------------
// data links

/// The profile that explains a lesson metric, and so the data links a panel showing it carries
/// (by URL path and query, after `http://${__field.labels.instance}`). A panel is judged by the
/// first metric of its first query. A new lesson metric must be added here, or its panel fails.
const PROFILE_FOR_METRIC: &[(&str, &[&str])] = &[
    ("worker_active_goroutines", TASK_PROFILE),
    ("worker_live_tasks", TASK_PROFILE),
    ("worker_task_allocations_total", ALLOCS_PROFILE),
    ("worker_task_allocated_bytes_total", ALLOCS_PROFILE),
    ("worker_total_allocations_bytes", ALLOCS_PROFILE),
    ("worker_allocations_total", ALLOCS_PROFILE),
    ("worker_gc_runs_total", ALLOCS_PROFILE),
    ("worker_allocated_memory_bytes", HEAP_PROFILE),
    ("worker_resident_memory_bytes", HEAP_PROFILE),
    ("worker_tasks_processed_total", CPU_PROFILE),
    (
        "worker_task_processing_duration_seconds_bucket",
        CPU_PROFILE,
    ),
    ("worker_task_errors_total", CPU_PROFILE),
    ("worker_tasks_in_queue", CPU_PROFILE),
    ("worker_runtime_busy_seconds_total", CPU_PROFILE),
    ("worker_runtime_global_queue_depth", CPU_PROFILE),
    ("process_cpu_seconds_total", CPU_PROFILE),
    ("worker_observer_memory_bytes", OBSERVER_PROFILE),
    ("worker_observer_allocations_total", OBSERVER_PROFILE),
    ("worker_observer_allocated_bytes_total", OBSERVER_PROFILE),
    ("worker_observer_cpu_seconds_total", OBSERVER_PROFILE),
    // Lesson 4, blocking the runtime: the blocking call shows in the CPU profile, on a runtime
    // thread. The runtime metrics come from `rtobs`, the task latency from `lessons`.
    ("worker_runtime_long_polls_total", CPU_PROFILE),
    ("worker_runtime_poll_time_seconds_bucket", CPU_PROFILE),
    ("worker_task_scheduled_seconds_total", CPU_PROFILE),
    ("worker_runtime_thread_busy_seconds_total", CPU_PROFILE),
    ("scrape_duration_seconds", CPU_PROFILE),
    ("worker_task_latency_seconds_bucket", CPU_PROFILE),
    // Lesson 5, lock contention: the lock profile names the line that takes the lock.
    ("worker_lock_wait_seconds_sum", MUTEX_PROFILE),
    ("worker_lock_wait_seconds_count", MUTEX_PROFILE),
    ("worker_lock_wait_seconds_bucket", MUTEX_PROFILE),
    ("worker_lock_acquisitions_total", MUTEX_PROFILE),
    // Lesson 6, overload: where the workers' time goes (and, for the backlog's memory, the
    // heap profile, which its panel links too).
    ("worker_producer_rate", CPU_PROFILE),
    ("worker_task_queue_delay_seconds_bucket", CPU_PROFILE),
    ("worker_tasks_rejected_total", CPU_PROFILE),
];
const TASK_PROFILE: &[&str] = &["/debug/pprof/goroutine?debug=1", "/debug/pprof/goroutine"];
const ALLOCS_PROFILE: &[&str] = &[
    "/debug/pprof/allocs_flamegraph?seconds=30",
    "/debug/pprof/allocs?seconds=30",
    "/debug/pprof/allocs",
];
const HEAP_PROFILE: &[&str] = &["/debug/pprof/heap"];
const CPU_PROFILE: &[&str] = &["/debug/pprof/flamegraph?seconds=10"];
/// Go's mutex profile of the lab's instrumented locks: the next 30 s, and since start.
const MUTEX_PROFILE: &[&str] = &["/debug/pprof/mutex?seconds=30", "/debug/pprof/mutex"];
/// The observers' cost is kept out of the profiles: the link shows the workload without it.
const OBSERVER_PROFILE: &[&str] = &["/debug/pprof/allocs_flamegraph?seconds=30"];

/// Where a worker's data link points: the series' own address, as Prometheus labels it.
const WORKER_LINK: &str = "http://${__field.labels.instance}/";

fn is_alerts_panel(panel: &Value) -> bool {
    targets(panel)
        .iter()
        .any(|t| t["expr"].as_str().is_some_and(|e| e.contains("ALERTS")))
}

fn panel_metric(panel: &Value) -> Option<&str> {
    let expr = targets(panel).first()?["expr"].as_str()?;
    metric_names(expr).first().map(|(_, m)| *m)
}

/// Every panel links each line to what explains it, from that line's own labels, in a new tab;
/// a lesson panel (all but the alerts panel) links the profiles of [`PROFILE_FOR_METRIC`] and
/// tells the learner to click.
fn data_link_problems(dashboard: &Value) -> Vec<String> {
    let mut problems = Vec::new();
    for panel in all_panels(dashboard).into_iter().filter(|p| !is_row(p)) {
        let name = title(panel);
        let links: Vec<&Value> = panel["fieldConfig"]["defaults"]["links"]
            .as_array()
            .into_iter()
            .flatten()
            .collect();
        if links.is_empty() {
            problems.push(format!("panel {name:?} has no data links"));
            continue;
        }
        for link in &links {
            let url = link["url"].as_str().unwrap_or("");
            let link_title = link["title"].as_str().unwrap_or("");
            if link["targetBlank"] != true {
                problems.push(format!(
                    "panel {name:?}: link {link_title:?} does not open in a new tab"
                ));
            }
            if url.starts_with(WORKER_LINK) {
                if !url.contains("/debug/pprof/") {
                    problems.push(format!("panel {name:?}: link {url} is not a profile"));
                }
                if !link_title.contains("${__field.labels.worker_type}") {
                    problems.push(format!(
                        "panel {name:?}: link {link_title:?} does not name the worker (${{__field.labels.worker_type}})"
                    ));
                }
            } else if !url.starts_with('/') || url.starts_with("//") {
                problems.push(format!(
                    "panel {name:?}: link {url} is neither {WORKER_LINK}... nor a Grafana path: a fixed address breaks when a runner moves ports"
                ));
            }
        }
        if is_alerts_panel(panel) {
            continue;
        }
        let description = panel["description"].as_str().unwrap_or("");
        if !description.contains("Click a worker's") {
            problems.push(format!(
                "panel {name:?}: the description does not tell the learner to click a worker's line"
            ));
        }
        let Some(metric) = panel_metric(panel) else {
            problems.push(format!("panel {name:?}: no metric in its first query"));
            continue;
        };
        let Some((_, wanted)) = PROFILE_FOR_METRIC.iter().find(|(m, _)| *m == metric) else {
            problems.push(format!(
                "panel {name:?}: no profile is known to explain {metric}; add it to PROFILE_FOR_METRIC"
            ));
            continue;
        };
        for suffix in *wanted {
            let url = format!("{}{}", WORKER_LINK.trim_end_matches('/'), suffix);
            if !links.iter().any(|l| l["url"] == url.as_str()) {
                problems.push(format!("panel {name:?} ({metric}) does not link {url}"));
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
        // Lesson 4: blocking the runtime.
        "worker_runtime_long_polls_total",
        "worker_runtime_poll_time_seconds_bucket",
        "worker_task_scheduled_seconds_total",
        "scrape_duration_seconds",
        "worker_task_latency_seconds_bucket",
        // Lesson 5: lock contention.
        "worker_lock_wait_seconds_sum",
        "worker_lock_acquisitions_total",
        // Lesson 6: overload without backpressure.
        "worker_producer_rate",
        "worker_task_queue_delay_seconds_bucket",
        "worker_tasks_rejected_total",
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
fn dashboard_follows_dashboard_linters_rules() {
    let dashboard = load_dashboard();
    assert_no_problems(DASHBOARD_JSON, lint_problems(&dashboard));
    // Each of the linter's rules is placed, and every implemented one is in LINT_RULES.
    for (rule, decision) in LINTER_RULES {
        match decision {
            LintDecision::Here => assert!(
                LINT_RULES.iter().any(|(name, _)| name == rule),
                "{rule} is said to be implemented but is not in LINT_RULES"
            ),
            LintDecision::Elsewhere(why) | LintDecision::Excluded(why) => {
                assert!(why.len() > 10, "{rule}: give the reason")
            }
        }
    }
}

#[test]
fn every_lesson_panel_links_each_workers_line_to_its_profile() {
    let dashboard = load_dashboard();
    assert_no_problems(DASHBOARD_JSON, data_link_problems(&dashboard));
    // Dashboard links follow the datasource (Grafana paths), never a fixed Prometheus address:
    // `lab demo --prometheus-port N`, the Nix demo and the NixOS module move Prometheus.
    let links = dashboard["links"].as_array().expect("dashboard links");
    assert!(!links.is_empty(), "no dashboard links");
    for link in links {
        let url = link["url"].as_str().unwrap_or("");
        assert!(
            url.starts_with('/') && !url.starts_with("//") && link["targetBlank"] == true,
            "dashboard link {link} must be a Grafana path opening in a new tab"
        );
    }
    let text = read(DASHBOARD_JSON);
    for fixed in ["localhost:", "127.0.0.1:", ":9090", ":9091", ":9092"] {
        assert!(
            !text.contains(fixed),
            "{DASHBOARD_JSON} names a fixed address ({fixed})"
        );
    }
    // Both workers' lines get their own links: every query keeps the labels the links use
    // (dashboard_query_problems checks the groupings), and every link resolves from them.
    let resolved = profiling_lab::lab::stack::config::panel_links(&text).unwrap();
    let labels = BTreeMap::from([
        ("instance".to_owned(), "127.0.0.1:19090".to_owned()),
        ("worker_type".to_owned(), "bad".to_owned()),
        ("alertname".to_owned(), "WorkerTaskLeak".to_owned()),
    ]);
    for link in &resolved {
        let url = link.resolve(&labels).unwrap_or_else(|e| panic!("{e}"));
        assert!(!url.contains('$'), "{url}");
    }
    assert!(resolved.len() >= 40, "only {} data links", resolved.len());
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
        ("panel-datasource-rule", |d| {
            d["panels"][2]["datasource"]["uid"] = "lab-prometheus".into()
        }),
        ("its target uses", |d| {
            d["panels"][2]["targets"][0]["datasource"]["uid"] = "x".into()
        }),
        ("not the provisioned uid", |d| {
            d["templating"]["list"][0]["current"]["value"] = "other".into()
        }),
        ("template-datasource-rule", |d| {
            d["templating"]["list"][0]["name"] = "ds".into()
        }),
        ("__inputs", |d| d["__inputs"] = Value::Array(vec![])),
        ("__requires", |d| {
            d["__requires"]
                .as_array_mut()
                .unwrap()
                .retain(|r| r["id"] != "gauge")
        }),
        ("target-counter-agg-rule", |d| {
            d["panels"][2]["targets"][0]["expr"] = "worker_tasks_processed_total".into()
        }),
        ("panel-title-description-rule", |d| {
            d["panels"][2]["title"] = "".into()
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
        let mut problems = dashboard_structure_problems(&broken, &uid);
        problems.extend(lint_problems(&broken));
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
        (
            "sum by (worker_type) (rate(worker_gc_runs_total[$__rate_interval]))",
            "{{worker_type}}",
            "drops instance",
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

    // Data links: a missing link, a fixed address, no new tab, a missing profile, no "click".
    type LinkMutation = (&'static str, fn(&mut Value));
    let link_mutations: &[LinkMutation] = &[
        ("has no data links", |d| {
            d["panels"][1]["fieldConfig"]["defaults"]["links"] = Value::Array(vec![])
        }),
        ("fixed address", |d| {
            d["panels"][1]["fieldConfig"]["defaults"]["links"][0]["url"] =
                "http://127.0.0.1:9090/debug/pprof/goroutine?debug=1".into()
        }),
        ("new tab", |d| {
            d["panels"][1]["fieldConfig"]["defaults"]["links"][0]["targetBlank"] = false.into()
        }),
        ("does not name the worker", |d| {
            d["panels"][1]["fieldConfig"]["defaults"]["links"][0]["title"] = "profile".into()
        }),
        ("does not tell the learner", |d| {
            d["panels"][1]["description"] =
                "Live tasks of each worker, without a word about clicking.".into()
        }),
        ("no profile is known", |d| {
            d["panels"][1]["targets"][0]["expr"] = "worker_something_new".into()
        }),
    ];
    assert_no_problems("the real dashboard", data_link_problems(&good));
    for (needle, mutate) in link_mutations {
        let mut broken = good.clone();
        mutate(&mut broken);
        let problems = data_link_problems(&broken);
        assert!(
            problems.iter().any(|p| p.contains(needle)),
            "link mutation {needle:?} not caught: {problems:?}"
        );
    }
    let mut broken = good.clone();
    broken["panels"][1]["fieldConfig"]["defaults"]["links"]
        .as_array_mut()
        .unwrap()
        .retain(|l| l["url"] != "http://${__field.labels.instance}/debug/pprof/goroutine");
    assert!(
        data_link_problems(&broken)
            .iter()
            .any(|p| p
                .contains("does not link http://${__field.labels.instance}/debug/pprof/goroutine")),
        "a missing task-profile link is not caught"
    );
    assert_eq!(
        metric_names("sum by (worker_type, instance) (rate(x_total{a=\"b_total\"}[5m])) / y"),
        vec![(37, "x_total"), (66, "y")]
    );

    assert_eq!(duration_ms("1m30s"), Some(90_000));
    assert_eq!(duration_ms("$__rate_interval"), None);
}
