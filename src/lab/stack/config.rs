//! The monitoring configuration `lab demo` runs with, rendered for its ports and data dir.
//!
//! The repository's files under `prometheus/` and `grafana/` are compiled into the binary, so an
//! installed `lab` works outside the repository. [`write_configs`] writes them into the data dir:
//! `prometheus.yml` with its three target addresses replaced textually (each appears exactly
//! once in the file, a rule `tests/monitoring_config.rs` enforces), the rule files beside it
//! (`rule_files` is relative to the config file), Grafana's provisioning files unchanged (they
//! read `${PROMETHEUS_URL}` and `${LAB_DASHBOARDS_DIR}` from the environment) with the
//! dashboard, a `grafana.ini` like the Nix demo's, and `grafana.env` with the variables Grafana
//! is started with. The end-to-end tests use the same functions, so they test what `lab demo`
//! writes.
//!
//! [`panel_queries`] turns the dashboard's panel expressions into PromQL that Prometheus can
//! evaluate on its own, replacing Grafana's interval macros the way Grafana would, and
//! [`panel_links`] lists the data links of its panels: what a click on a worker's line opens,
//! resolved from that series' labels the way Grafana resolves `${__field.labels.NAME}`.

use crate::kind::WorkerKind;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};
use serde_json::Value;

/// `prometheus/prometheus.yml` as committed.
pub const PROMETHEUS_YML: &str = include_str!("../../../prometheus/prometheus.yml");

/// The alert and recording rule files of `prometheus/rules/`, by file name. A rule file added
/// there must be added here too (tests/stack_e2e.rs compares this list with the directory).
pub const RULE_FILES: &[(&str, &str)] =
    &[("lab.yml", include_str!("../../../prometheus/rules/lab.yml"))];

/// The files of `grafana/provisioning/`, by path inside it (same rule as [`RULE_FILES`]).
pub const GRAFANA_PROVISIONING: &[(&str, &str)] = &[
    (
        "datasources/prometheus.yaml",
        include_str!("../../../grafana/provisioning/datasources/prometheus.yaml"),
    ),
    (
        "dashboards/lab.yaml",
        include_str!("../../../grafana/provisioning/dashboards/lab.yaml"),
    ),
];

/// The dashboards of `grafana/dashboards/`, by file name (same rule as [`RULE_FILES`]).
pub const DASHBOARDS: &[(&str, &str)] = &[(
    "worker-performance.json",
    include_str!("../../../grafana/dashboards/worker-performance.json"),
)];

/// The dashboard's uid (fixed in its JSON): Grafana serves it at `/d/worker-performance`.
pub const DASHBOARD_UID: &str = "worker-performance";

/// Grafana's login for the local lab, as in the guide and the Nix demo. Loopback only.
pub const GRAFANA_USER: &str = "admin";
pub const GRAFANA_PASSWORD: &str = "admin";

/// Everything binds here: the lab is for one person's machine.
pub const HOST: &str = "127.0.0.1";

/// The window Grafana substitutes for `$__rate_interval` on the lab's dashboard:
/// max(`$__interval` + scrape interval, 4 x scrape interval) with the datasource's
/// `timeInterval` of 2 s, and `$__interval` about 1 s for 15 minutes across a screen.
pub const GRAFANA_RATE_INTERVAL: &str = "8s";

/// The ports of the services.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct Ports {
    pub bad: u16,
    pub optimized: u16,
    pub prometheus: u16,
    pub grafana: u16,
    /// The learner's worker, when `lab demo --exercise` runs it (absent from the state file of
    /// a demo started before the flag existed: its default).
    #[serde(default = "default_exercise_port")]
    pub exercise: u16,
}

fn default_exercise_port() -> u16 {
    WorkerKind::Exercise.default_port()
}

impl Default for Ports {
    /// The guide's ports.
    fn default() -> Ports {
        Ports {
            bad: 9090,
            optimized: 9091,
            prometheus: 9092,
            grafana: 3000,
            exercise: default_exercise_port(),
        }
    }
}

impl Ports {
    pub fn prometheus_url(&self) -> String {
        format!("http://{HOST}:{}", self.prometheus)
    }

    pub fn grafana_url(&self) -> String {
        format!("http://{HOST}:{}", self.grafana)
    }

    pub fn dashboard_url(&self) -> String {
        format!("{}/d/{DASHBOARD_UID}", self.grafana_url())
    }
}

/// `prometheus.yml` with the three scrape targets moved to `ports`.
///
/// Each default address must appear exactly once: a second one (in a comment, say) would be
/// replaced too, or not, and the config would silently point somewhere else.
pub fn render_prometheus_config(template: &str, ports: &Ports) -> Result<String, String> {
    let defaults = Ports::default();
    let moves = [
        ("bad worker", defaults.bad, ports.bad),
        ("optimized worker", defaults.optimized, ports.optimized),
        ("Prometheus", defaults.prometheus, ports.prometheus),
    ];
    // Two passes through placeholders, so that moving the bad worker to 9091 does not then move
    // it again with the optimized worker.
    let mut text = template.to_owned();
    for (i, (what, from, _)) in moves.iter().enumerate() {
        let address = format!("{HOST}:{from}");
        let count = text.matches(&address).count();
        if count != 1 {
            return Err(format!(
                "prometheus.yml must name the {what}'s address {address} exactly once, \
                 found it {count} times"
            ));
        }
        text = text.replace(&address, &format!("\u{0}{i}\u{0}"));
    }
    for (i, (_, _, to)) in moves.iter().enumerate() {
        text = text.replace(&format!("\u{0}{i}\u{0}"), &format!("{HOST}:{to}"));
    }
    Ok(text)
}

/// Where [`write_configs`] put everything, all paths absolute.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Configs {
    /// `--config.file` for Prometheus; the rule files are in `rules/` beside it.
    pub prometheus_config: PathBuf,
    /// `--config` for Grafana.
    pub grafana_ini: PathBuf,
    /// Grafana's `paths.provisioning` (named in the ini).
    pub grafana_provisioning: PathBuf,
    /// `LAB_DASHBOARDS_DIR`: the dashboards' JSON files.
    pub dashboards_dir: PathBuf,
    /// The variables Grafana is started with (also written to `grafana.env`).
    pub grafana_env: Vec<(String, String)>,
    /// `grafana.env`, for starting Grafana by hand with the same variables.
    pub grafana_env_file: PathBuf,
}

/// The scrape job `lab demo --exercise` appends to `prometheus.yml`: the learner's worker on
/// `port` (`--exercise-port`), labelled `worker_type="exercise"` by the worker itself.
pub fn exercise_job(port: u16) -> String {
    format!(
        "
  # The learner's worker (`lab demo --exercise`): src/exercise.rs, worker_type=\"exercise\".
  - job_name: worker-exercise
    metrics_path: /metrics
    static_configs:
      - targets: [\"{HOST}:{port}\"]
"
    )
}

/// Appends [`exercise_job`] to the `prometheus.yml` that [`write_configs`] wrote (its scrape
/// jobs are the file's last list).
pub fn add_exercise_job(configs: &Configs, port: u16) -> Result<(), String> {
    let path = &configs.prometheus_config;
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("cannot read {}: {e}", path.display()))?;
    write(
        path,
        &format!("{}\n{}", text.trim_end(), exercise_job(port)),
    )
}

/// Writes the configs for `ports` under `config_dir` (absolute), with Grafana's own state in
/// `grafana_data_dir`. Rewritten at every start, so they always match the ports in use.
pub fn write_configs(
    config_dir: &Path,
    grafana_data_dir: &Path,
    ports: &Ports,
) -> Result<Configs, String> {
    let prometheus_dir = config_dir.join("prometheus");
    let prometheus_config = prometheus_dir.join("prometheus.yml");
    write(
        &prometheus_config,
        &render_prometheus_config(PROMETHEUS_YML, ports)?,
    )?;
    // Remove rule files left from an older `lab` so that only the current ones load.
    let rules_dir = prometheus_dir.join("rules");
    let _ = std::fs::remove_dir_all(&rules_dir);
    for (name, text) in RULE_FILES {
        write(&rules_dir.join(name), text)?;
    }

    let grafana_dir = config_dir.join("grafana");
    let grafana_provisioning = grafana_dir.join("provisioning");
    let _ = std::fs::remove_dir_all(&grafana_provisioning);
    for (name, text) in GRAFANA_PROVISIONING {
        write(&grafana_provisioning.join(name), text)?;
    }
    let dashboards_dir = grafana_dir.join("dashboards");
    let _ = std::fs::remove_dir_all(&dashboards_dir);
    for (name, text) in DASHBOARDS {
        write(&dashboards_dir.join(name), text)?;
    }
    let grafana_ini = grafana_dir.join("grafana.ini");
    write(
        &grafana_ini,
        &grafana_ini_text(ports, &grafana_provisioning, grafana_data_dir),
    )?;
    let grafana_env = grafana_env(ports, &dashboards_dir);
    let grafana_env_file = grafana_dir.join("grafana.env");
    write(&grafana_env_file, &env_file_text(&grafana_env))?;
    Ok(Configs {
        prometheus_config,
        grafana_ini,
        grafana_provisioning,
        dashboards_dir,
        grafana_env,
        grafana_env_file,
    })
}

/// The variables the provisioning files expand: where Prometheus is and where the dashboards are.
pub fn grafana_env(ports: &Ports, dashboards_dir: &Path) -> Vec<(String, String)> {
    vec![
        ("PROMETHEUS_URL".into(), ports.prometheus_url()),
        (
            "LAB_DASHBOARDS_DIR".into(),
            dashboards_dir.display().to_string(),
        ),
    ]
}

/// Grafana's settings, as the Nix demo has them (nix/demo.nix): loopback, admin/admin, the
/// provisioning directory, and no phoning home. Grafana reads this after its defaults.ini and
/// before `GF_*` variables, so a learner can still override anything from the environment.
fn grafana_ini_text(ports: &Ports, provisioning: &Path, data: &Path) -> String {
    format!(
        "; Written by `lab demo` at every start; edit the lab's sources, not this file.\n\
         [server]\n\
         http_addr = {HOST}\n\
         http_port = {port}\n\
         \n\
         [security]\n\
         admin_user = {GRAFANA_USER}\n\
         admin_password = {GRAFANA_PASSWORD}\n\
         \n\
         [paths]\n\
         provisioning = {provisioning}\n\
         data = {data}\n\
         logs = {logs}\n\
         plugins = {plugins}\n\
         \n\
         [analytics]\n\
         reporting_enabled = false\n\
         check_for_updates = false\n\
         check_for_plugin_updates = false\n\
         \n\
         [plugins]\n\
         preinstall_disabled = true\n\
         \n\
         [news]\n\
         news_feed_enabled = false\n",
        port = ports.grafana,
        provisioning = provisioning.display(),
        data = data.display(),
        logs = data.join("log").display(),
        plugins = data.join("plugins").display(),
    )
}

/// `NAME='value'` lines a shell can source (`set -a; . grafana.env; set +a`).
fn env_file_text(env: &[(String, String)]) -> String {
    let mut text = String::from(
        "# The environment `lab demo` starts Grafana with. To start Grafana by hand:\n\
         #   set -a; . ./grafana.env; set +a\n\
         #   grafana server --homepath <Grafana's home> --config ./grafana.ini\n",
    );
    for (name, value) in env {
        text.push_str(&format!("{name}='{}'\n", value.replace('\'', r"'\''")));
    }
    text
}

/// Reads a `grafana.env` written by [`write_configs`] back into name/value pairs.
pub fn parse_env_file(text: &str) -> Result<Vec<(String, String)>, String> {
    let mut env = Vec::new();
    for line in text
        .lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
    {
        let (name, quoted) = line
            .split_once('=')
            .ok_or_else(|| format!("not NAME='value': {line:?}"))?;
        let value = quoted
            .strip_prefix('\'')
            .and_then(|v| v.strip_suffix('\''))
            .ok_or_else(|| format!("value not in single quotes: {line:?}"))?
            .replace(r"'\''", "'");
        env.push((name.to_owned(), value));
    }
    Ok(env)
}

/// Expands `${NAME}` and `$NAME` (and `$$` to `$`) the way Grafana does in provisioning files,
/// except that an unknown name is an error rather than an empty string: an empty datasource URL
/// is exactly the mistake this is for finding. Comment lines are left alone.
pub fn expand_env(text: &str, env: &BTreeMap<String, String>) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    for line in text.split_inclusive('\n') {
        if line.trim_start().starts_with('#') {
            out.push_str(line);
            continue;
        }
        let mut rest = line;
        while let Some(at) = rest.find('$') {
            out.push_str(&rest[..at]);
            let after = &rest[at + 1..];
            let (name, tail) = if let Some(braced) = after.strip_prefix('{') {
                let end = braced
                    .find('}')
                    .ok_or_else(|| format!("unclosed ${{ in {line:?}"))?;
                (&braced[..end], &braced[end + 1..])
            } else if let Some(tail) = after.strip_prefix('$') {
                out.push('$');
                rest = tail;
                continue;
            } else {
                let end = after
                    .find(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
                    .unwrap_or(after.len());
                (&after[..end], &after[end..])
            };
            let value = env
                .get(name)
                .ok_or_else(|| format!("${{{name}}} is not set (in {:?})", line.trim()))?;
            out.push_str(value);
            rest = tail;
        }
        out.push_str(rest);
    }
    Ok(out)
}

/// One query of one dashboard panel, ready for Prometheus.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelQuery {
    pub panel: String,
    pub ref_id: String,
    pub expr: String,
}

impl PanelQuery {
    /// Queries of the ALERTS series return nothing while no alert fires, which is the normal
    /// state of a healthy lab: they only have to evaluate.
    pub fn is_alerts(&self) -> bool {
        self.expr.contains("ALERTS")
    }
}

/// Every panel expression of `dashboard_json`, in panel order, with Grafana's macros replaced:
/// `$__rate_interval` by `rate_interval`, `$__interval` by the 2 s scrape interval and
/// `$__range` by the dashboard's 15 minutes. A variable this does not know is an error, not a
/// query that silently fails.
pub fn panel_queries(dashboard_json: &str, rate_interval: &str) -> Result<Vec<PanelQuery>, String> {
    let dashboard: Value =
        serde_json::from_str(dashboard_json).map_err(|e| format!("dashboard JSON: {e}"))?;
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let macros = [
        ("__rate_interval", rate_interval.to_owned()),
        ("__interval_ms", "2000".to_owned()),
        ("__interval", "2s".to_owned()),
        ("__range_ms", "900000".to_owned()),
        ("__range_s", "900".to_owned()),
        ("__range", "15m".to_owned()),
    ];
    let mut queries = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)").to_owned();
        for target in panel["targets"].as_array().into_iter().flatten() {
            let Some(expr) = target["expr"].as_str().filter(|e| !e.trim().is_empty()) else {
                continue;
            };
            if target["hide"].as_bool() == Some(true) {
                continue;
            }
            let mut expr = expr.to_owned();
            for (name, value) in &macros {
                expr = expr.replace(&format!("${{{name}}}"), value);
                expr = expr.replace(&format!("${name}"), value);
            }
            if let Some(at) = expr.find('$') {
                let next = expr[at + 1..].chars().next();
                if next.is_some_and(|c| c == '{' || c == '_' || c.is_ascii_alphabetic()) {
                    return Err(format!(
                        "panel {title:?}: unknown dashboard variable in {expr:?}"
                    ));
                }
            }
            queries.push(PanelQuery {
                panel: title.clone(),
                ref_id: target["refId"].as_str().unwrap_or("?").to_owned(),
                expr,
            });
        }
    }
    if queries.is_empty() {
        return Err("the dashboard has no panel queries".into());
    }
    Ok(queries)
}

/// One data link of one dashboard panel (Grafana's `fieldConfig.defaults.links`): what a click on
/// a series opens, with `${__field.labels.NAME}` standing for that series' label values.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PanelLink {
    pub panel: String,
    pub title: String,
    pub url: String,
    /// Opens in a new tab, so the dashboard stays where it was.
    pub target_blank: bool,
}

impl PanelLink {
    /// The URL Grafana opens for a series with `labels`: each `${__field.labels.NAME}` replaced
    /// by the label's value, percent-encoded as Grafana's `uriencode` format does (an address
    /// such as `127.0.0.1:9090` passes unchanged). Any other `${...}` is an error: only field
    /// labels differ from one line to the next.
    pub fn resolve(&self, labels: &BTreeMap<String, String>) -> Result<String, String> {
        const FIELD: &str = "${__field.labels.";
        let mut out = String::with_capacity(self.url.len());
        let mut rest = self.url.as_str();
        while let Some(at) = rest.find("${") {
            out.push_str(&rest[..at]);
            let after = &rest[at..];
            let end = after
                .find('}')
                .ok_or_else(|| format!("link {:?}: unclosed ${{ in {}", self.title, self.url))?;
            let Some(name) = after[..end].strip_prefix(FIELD) else {
                return Err(format!(
                    "link {:?}: {} is not a field label (only ${{__field.labels.NAME}} varies by line)",
                    self.title,
                    &after[..=end]
                ));
            };
            let value = labels.get(name).ok_or_else(|| {
                format!(
                    "link {:?} of panel {:?} needs label {name:?}, the series has {:?}",
                    self.title,
                    self.panel,
                    labels.keys().collect::<Vec<_>>()
                )
            })?;
            out.push_str(&uri_encode(value));
            rest = &after[end + 1..];
        }
        out.push_str(rest);
        Ok(out)
    }
}

/// JavaScript's `encodeURI` with `[]!'()*` encoded too (Grafana's `encodeURIStrict`).
fn uri_encode(value: &str) -> String {
    let mut out = String::with_capacity(value.len());
    for byte in value.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-_.~;,/?:@&=+$#".contains(&byte);
        if keep {
            out.push(byte as char);
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

/// Every data link of every panel of `dashboard_json`, in panel order.
pub fn panel_links(dashboard_json: &str) -> Result<Vec<PanelLink>, String> {
    let dashboard: Value =
        serde_json::from_str(dashboard_json).map_err(|e| format!("dashboard JSON: {e}"))?;
    let mut panels = Vec::new();
    collect_panels(&dashboard["panels"], &mut panels);
    let mut links = Vec::new();
    for panel in panels {
        let title = panel["title"].as_str().unwrap_or("(untitled)");
        for link in panel["fieldConfig"]["defaults"]["links"]
            .as_array()
            .into_iter()
            .flatten()
        {
            links.push(PanelLink {
                panel: title.to_owned(),
                title: link["title"].as_str().unwrap_or_default().to_owned(),
                url: link["url"].as_str().unwrap_or_default().to_owned(),
                target_blank: link["targetBlank"].as_bool() == Some(true),
            });
        }
    }
    Ok(links)
}

/// Panels in order, those inside collapsed rows included.
fn collect_panels<'a>(panels: &'a Value, out: &mut Vec<&'a Value>) {
    for panel in panels.as_array().into_iter().flatten() {
        out.push(panel);
        collect_panels(&panel["panels"], out);
    }
}

fn write(path: &Path, text: &str) -> Result<(), String> {
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)
            .map_err(|e| format!("cannot create {}: {e}", dir.display()))?;
    }
    std::fs::write(path, text).map_err(|e| format!("cannot write {}: {e}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn moves_each_target_once_even_when_ports_swap() {
        let ports = Ports {
            bad: 9091,
            optimized: 9090,
            prometheus: 19092,
            grafana: 3000,
            exercise: 9093,
        };
        let text = render_prometheus_config(PROMETHEUS_YML, &ports).unwrap();
        let bad = text.find("job_name: worker-bad").unwrap();
        let optimized = text.find("job_name: worker-optimized").unwrap();
        assert!(text[bad..optimized].contains("127.0.0.1:9091"));
        assert!(text[optimized..].contains("127.0.0.1:9090"));
        assert!(text.contains("127.0.0.1:19092") && !text.contains("127.0.0.1:9092"));
        let twice = format!("{PROMETHEUS_YML}\n# 127.0.0.1:9090\n");
        assert!(
            render_prometheus_config(&twice, &ports)
                .unwrap_err()
                .contains("exactly once")
        );
    }

    #[test]
    fn the_exercise_job_scrapes_the_exercise_port() {
        let dir = std::env::temp_dir().join(format!("lab-exercise-job-{}", std::process::id()));
        let ports = Ports {
            exercise: 9193,
            ..Ports::default()
        };
        let configs = write_configs(&dir.join("config"), &dir.join("grafana"), &ports).unwrap();
        add_exercise_job(&configs, ports.exercise).unwrap();
        let text = std::fs::read_to_string(&configs.prometheus_config).unwrap();
        let _ = std::fs::remove_dir_all(&dir);
        let job = text
            .find("job_name: worker-exercise")
            .expect("the job is added");
        assert!(
            text[job..].contains("targets: [\"127.0.0.1:9193\"]"),
            "{text}"
        );
        assert!(!text.contains("127.0.0.1:9093"), "{text}");
    }

    #[test]
    fn expands_like_grafana_and_refuses_unknown_names() {
        let env = BTreeMap::from([("URL".to_owned(), "http://x:1".to_owned())]);
        assert_eq!(
            expand_env("url: ${URL}\n# ${NOPE}\nb: $URL/$$x\n", &env).unwrap(),
            "url: http://x:1\n# ${NOPE}\nb: http://x:1/$x\n"
        );
        assert!(expand_env("a: ${NOPE}", &env).unwrap_err().contains("NOPE"));
    }

    #[test]
    fn env_file_round_trips_awkward_paths() {
        let env = vec![("A".to_owned(), "/tmp/it's here".to_owned())];
        assert_eq!(parse_env_file(&env_file_text(&env)).unwrap(), env);
    }

    #[test]
    fn panel_queries_replace_grafanas_macros_and_refuse_unknown_variables() {
        let json = r#"{"panels": [{"type": "row", "title": "r", "panels": [
            {"title": "p", "targets": [
              {"refId": "A", "expr": "rate(x[$__rate_interval]) + rate(y[${__interval}])"},
              {"refId": "B", "expr": "hidden", "hide": true}]}]}]}"#;
        let queries = panel_queries(json, "8s").unwrap();
        assert_eq!(queries.len(), 1);
        assert_eq!(queries[0].expr, "rate(x[8s]) + rate(y[2s])");
        let unknown = r#"{"panels": [{"title": "p", "targets": [{"expr": "x{a=\"$job\"}"}]}]}"#;
        assert!(panel_queries(unknown, "8s").unwrap_err().contains("$job"));
        let fine = r#"{"panels": [{"title": "p", "targets": [{"expr": "label_replace(up, \"a\", \"$1\", \"job\", \"(.*)\")"}]}]}"#;
        assert!(panel_queries(fine, "8s").is_ok());
    }

    #[test]
    fn panel_links_resolve_field_labels_and_refuse_other_variables() {
        let json = r#"{"panels": [{"title": "p", "fieldConfig": {"defaults": {"links": [
            {"title": "t ${__field.labels.worker_type}", "targetBlank": true,
             "url": "http://${__field.labels.instance}/debug/pprof/heap"},
            {"title": "u", "url": "http://${datasource}/x"}]}}}]}"#;
        let links = panel_links(json).unwrap();
        assert_eq!(links.len(), 2);
        assert!(links[0].target_blank && !links[1].target_blank);
        let labels = BTreeMap::from([
            ("instance".to_owned(), "127.0.0.1:9090".to_owned()),
            ("worker_type".to_owned(), "bad".to_owned()),
        ]);
        assert_eq!(
            links[0].resolve(&labels).unwrap(),
            "http://127.0.0.1:9090/debug/pprof/heap"
        );
        assert!(
            links[1]
                .resolve(&labels)
                .unwrap_err()
                .contains("${datasource}")
        );
        let spaced = BTreeMap::from([("instance".to_owned(), "a b[1]".to_owned())]);
        assert_eq!(
            links[0].resolve(&spaced).unwrap(),
            "http://a%20b%5B1%5D/debug/pprof/heap"
        );
        assert!(
            links[0]
                .resolve(&BTreeMap::new())
                .unwrap_err()
                .contains("\"instance\"")
        );
    }

    #[test]
    fn the_embedded_dashboard_has_queries_and_no_unknown_variables() {
        let queries = panel_queries(DASHBOARDS[0].1, GRAFANA_RATE_INTERVAL).unwrap();
        assert!(queries.len() >= 20, "{}", queries.len());
        assert!(queries.iter().any(PanelQuery::is_alerts));
    }
}
