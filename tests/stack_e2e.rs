//! The stack end to end, with real processes on free loopback ports:
//!
//! - the real workers and a real Prometheus (Debian's 2.42 in CI) run with the repository's
//!   config rendered for their ports by the same function `lab demo` uses; every expression of
//!   every dashboard panel, evaluated by Prometheus, returns series for both workers, and the
//!   lab's lessons show in the numbers;
//! - the alert and recording rules load and evaluate in that Prometheus;
//! - `lab demo` with Prometheus and without Grafana (not installable here): ready output, targets
//!   UP, the Grafana provisioning it writes expands to a datasource that reaches its Prometheus
//!   and a dashboard folder holding the repository's JSON; `lab logs`, `lab grafana`, `lab stop`
//!   (summaries printed and saved, ports released) and `lab clean`;
//! - `lab demo` with a stand-in Grafana (a script that records how it was started, while the
//!   test answers Grafana's health check): its command line and environment, the dashboard URL,
//!   and `lab grafana` opening it;
//! - taken ports, foreign data dirs and bad flags are refused with messages that name them.
//!
//! Tests that need Prometheus skip (or fail under LAB_REQUIRE_TOOLS=1) without it. Every process
//! and temporary directory is stopped or deleted by a guard, also when an assertion fails.

mod support;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Output, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use profiling_lab::lab::procs;
use profiling_lab::lab::stack::config::{self, PanelQuery, Ports};
use profiling_lab::lab::stack::layout::DataDir;
use profiling_lab::lab::stack::prometheus_api::{self, Sample};
use profiling_lab::lab::stack::services;
use support::{Worker, repo_root, require_tool, wait_for};

const INSTALL_PROMETHEUS: &str = "apt-get install -y --no-install-recommends prometheus";
const LAB: &str = env!("CARGO_BIN_EXE_lab");
const DASHBOARD_JSON: &str = "grafana/dashboards/worker-performance.json";

/// A stream of small tasks in short rounds: rates have data within two scrapes, the leak (a
/// reporter per round) shows in seconds. A tenth of what a debug-built worker sustains, so a
/// loaded 2-core CI machine keeps up.
const FAST: &[&str] = &["--rate", "200", "--data-size", "500", "--tasks", "20"];

/// How long a test waits for something that takes a second or two on an idle machine. Only a
/// failure waits this long; a loaded CI machine must never be mistaken for a broken lab.
const PATIENCE: Duration = Duration::from_secs(120);

/// Dashboard metrics other branches add (CONTRACTS.md), not served on this branch yet: panels
/// showing them only have to evaluate. The integrator removes this list after merging `tasks`
/// (worker_live_tasks) and `observer` (worker_observer_*).
const PENDING_METRICS: &[&str] = &[];

fn prometheus_bin() -> Option<PathBuf> {
    require_tool("prometheus", INSTALL_PROMETHEUS)
}

// ------------------------------------------------------------------------------------------
// guards and helpers

/// A fresh directory under the system temp dir, deleted when dropped.
struct TempDir(PathBuf);

impl TempDir {
    fn new(name: &str) -> TempDir {
        let test = std::thread::current()
            .name()
            .unwrap_or("test")
            .replace("::", "-");
        let dir = std::env::temp_dir().join(format!(
            "profiling-lab-{name}-{test}-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("creating a temp dir");
        TempDir(dir)
    }

    fn path(&self) -> &Path {
        &self.0
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// `N` different ports nothing listens on right now.
fn free_ports<const N: usize>() -> [u16; N] {
    let listeners: Vec<TcpListener> = (0..N)
        .map(|_| TcpListener::bind("127.0.0.1:0").expect("a free port"))
        .collect();
    std::array::from_fn(|i| listeners[i].local_addr().unwrap().port())
}

fn port_is_free(port: u16) -> bool {
    TcpListener::bind(("127.0.0.1", port)).is_ok()
}

/// A real Prometheus with the repository's config rendered for `ports`, started with the
/// command line `lab demo` uses. Stopped, and its directory deleted, when dropped.
struct Prometheus {
    child: Child,
    base: String,
    dir: TempDir,
}

impl Prometheus {
    fn start(binary: &Path, ports: &Ports) -> Prometheus {
        let dir = TempDir::new("prometheus");
        let data = DataDir::resolve(dir.path()).unwrap();
        let configs =
            config::write_configs(&data.config_dir(), &data.grafana_data(), ports).unwrap();
        let mut command = services::prometheus_command(binary, &configs, &data, ports, "1d");
        let log = dir.path().join("prometheus.log");
        let child = procs::spawn_logged(&mut command, &log).unwrap();
        let mut prometheus = Prometheus {
            child,
            base: ports.prometheus_url(),
            dir,
        };
        let url = format!("{}/-/ready", prometheus.base);
        if let Err(e) =
            procs::wait_child_healthy(&url, &mut prometheus.child, PATIENCE, &mut || false)
        {
            panic!("Prometheus did not start: {e}\n{}", prometheus.log());
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("prometheus.log")).unwrap_or_default()
    }

    /// Waits until every target is UP; returns them.
    fn wait_targets_up(&self) -> Vec<prometheus_api::Target> {
        let deadline = Instant::now() + PATIENCE;
        loop {
            let targets = prometheus_api::targets(&self.base).unwrap_or_default();
            if targets.len() == 3 && targets.iter().all(|t| t.is_up()) {
                return targets;
            }
            assert!(
                Instant::now() < deadline,
                "targets not all UP after {PATIENCE:?}: {targets:#?}\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(200));
        }
    }

    fn query(&self, expr: &str) -> Vec<Sample> {
        prometheus_api::query(&self.base, expr).unwrap_or_else(|e| panic!("{e}"))
    }

    /// The value of `expr` for one worker, if it has a series.
    fn value(&self, expr: &str, worker_type: &str) -> Option<f64> {
        self.query(expr)
            .iter()
            .find(|s| s.label("worker_type") == Some(worker_type))
            .map(|s| s.value)
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = procs::stop_child(&mut self.child, Duration::from_secs(10));
    }
}

/// `lab` with `args` in `dir`, with `PATH` set to `path` when given; waits at most
/// [`PATIENCE`].
fn lab(args: &[&str], dir: &Path, path: Option<&Path>) -> Output {
    let mut command = Command::new(LAB);
    command.args(args).current_dir(dir);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let mut child = command
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .expect("lab runs");
    let (stdout, stderr) = (child.stdout.take().unwrap(), child.stderr.take().unwrap());
    let read = |mut pipe: Box<dyn Read + Send>| {
        std::thread::spawn(move || {
            let mut bytes = Vec::new();
            let _ = pipe.read_to_end(&mut bytes);
            bytes
        })
    };
    let (out, err) = (read(Box::new(stdout)), read(Box::new(stderr)));
    let (status, killed) = procs::finish_within(&mut child, PATIENCE).expect("waiting for lab");
    assert!(!killed, "lab {args:?} did not finish within {PATIENCE:?}");
    Output {
        status,
        stdout: out.join().unwrap(),
        stderr: err.join().unwrap(),
    }
}

fn text(bytes: &[u8]) -> String {
    String::from_utf8_lossy(bytes).into_owned()
}

/// Asserts `lab` exited with `code` and its combined output contains every fragment.
fn expect(out: &Output, code: i32, fragments: &[&str], what: &str) -> String {
    let all = format!("{}{}", text(&out.stdout), text(&out.stderr));
    assert_eq!(out.status.code(), Some(code), "{what}: {all}");
    assert!(!all.contains("panicked"), "{what}: {all}");
    for fragment in fragments {
        assert!(
            all.contains(fragment),
            "{what}: {fragment:?} not in:\n{all}"
        );
    }
    all
}

/// A running `lab demo`: its output collected as it comes, stopped (SIGTERM, then kill) when
/// dropped so that its services never outlive a failed test.
struct Demo {
    child: Option<Child>,
    output: Arc<Mutex<String>>,
}

impl Demo {
    fn start(args: &[String], dir: &Path, path: &Path) -> Demo {
        let mut child = Command::new(LAB)
            .arg("demo")
            .args(args)
            .current_dir(dir)
            .env("PATH", path)
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .expect("lab demo starts");
        let output = Arc::new(Mutex::new(String::new()));
        for pipe in [
            Box::new(child.stdout.take().unwrap()) as Box<dyn Read + Send>,
            Box::new(child.stderr.take().unwrap()),
        ] {
            let sink = Arc::clone(&output);
            std::thread::spawn(move || {
                for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                    let mut out = sink.lock().unwrap_or_else(|e| e.into_inner());
                    out.push_str(&line);
                    out.push('\n');
                }
            });
        }
        Demo {
            child: Some(child),
            output,
        }
    }

    fn output(&self) -> String {
        self.output
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Waits until the output contains `needle`; fails early if the demo exits.
    fn wait_for_output(&mut self, needle: &str, timeout: Duration) -> Duration {
        let start = Instant::now();
        loop {
            if self.output().contains(needle) {
                return start.elapsed();
            }
            let child = self.child.as_mut().unwrap();
            if let Ok(Some(status)) = child.try_wait() {
                std::thread::sleep(Duration::from_millis(200)); // let the readers finish
                panic!(
                    "lab demo exited ({status}) before printing {needle:?}:\n{}",
                    self.output()
                );
            }
            assert!(
                start.elapsed() < timeout,
                "lab demo did not print {needle:?} within {timeout:?}:\n{}",
                self.output()
            );
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Waits for the demo to exit by itself (after `lab stop`); returns its status and output.
    fn wait(mut self, timeout: Duration) -> (ExitStatus, String) {
        let mut child = self.child.take().unwrap();
        let status = procs::wait_timeout(&mut child, timeout)
            .unwrap()
            .unwrap_or_else(|| {
                let _ = procs::stop_child(&mut child, Duration::from_secs(15));
                panic!(
                    "lab demo still running {timeout:?} after `lab stop`:\n{}",
                    self.output()
                )
            });
        std::thread::sleep(Duration::from_millis(200)); // let the readers finish
        (status, self.output())
    }
}

impl Drop for Demo {
    fn drop(&mut self) {
        if let Some(child) = &mut self.child {
            let _ = procs::stop_child(child, Duration::from_secs(20));
        }
    }
}

/// A directory to use as PATH holding only the given programs (symlinks), so that the test
/// controls what `lab demo` finds: no Grafana a developer may have installed, for instance.
fn bin_dir(root: &Path, programs: &[(&str, &Path)]) -> PathBuf {
    let dir = root.join("bin");
    std::fs::create_dir_all(&dir).unwrap();
    for (name, target) in programs {
        #[cfg(unix)]
        std::os::unix::fs::symlink(target, dir.join(name)).unwrap();
    }
    dir
}

#[cfg(unix)]
fn write_script(path: &Path, body: &str) {
    use std::os::unix::fs::PermissionsExt;
    // `lab demo` runs it with a PATH of the test's bin dir only: give the script the test's own
    // PATH back (not /usr/bin:/bin, which the Nix build sandbox does not have).
    let path_var = std::env::var("PATH").unwrap_or_default();
    std::fs::write(path, format!("#!/bin/sh\nPATH='{path_var}'\n{body}")).unwrap();
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o755)).unwrap();
}

fn demo_args(data: &Path, ports: &Ports, extra: &[&str]) -> Vec<String> {
    let mut args: Vec<String> = vec![
        "--data-dir".into(),
        data.display().to_string(),
        "--bad-port".into(),
        ports.bad.to_string(),
        "--optimized-port".into(),
        ports.optimized.to_string(),
        "--prometheus-port".into(),
        ports.prometheus.to_string(),
        "--grafana-port".into(),
        ports.grafana.to_string(),
    ];
    args.extend(FAST.iter().map(|s| s.to_string()));
    args.extend(extra.iter().map(|s| s.to_string()));
    args
}

fn ports_from([bad, optimized, prometheus, grafana]: [u16; 4]) -> Ports {
    Ports {
        bad,
        optimized,
        prometheus,
        grafana,
        ..Ports::default()
    }
}

/// The `- name:` of each group in a rules file, with its number of rules.
fn rule_groups_in(text: &str) -> BTreeMap<String, usize> {
    let mut groups = BTreeMap::new();
    let mut current = None;
    for line in text.lines().map(str::trim) {
        if let Some(name) = line.strip_prefix("- name:") {
            current = Some(name.trim().to_owned());
            groups.insert(name.trim().to_owned(), 0);
        } else if line.starts_with("- alert:") || line.starts_with("- record:") {
            *groups
                .get_mut(current.as_ref().expect("a rule outside a group"))
                .unwrap() += 1;
        }
    }
    groups
}

/// A `key = value` of a small ini file.
fn ini_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .filter_map(|l| l.split_once('='))
        .find(|(k, _)| k.trim() == key)
        .map(|(_, v)| v.trim().to_owned())
}

/// The value of `key:` in one of the provisioning files (flat keys only).
fn yaml_value(text: &str, key: &str) -> Option<String> {
    text.lines()
        .map(str::trim)
        .filter(|l| !l.starts_with('#'))
        .find_map(|l| l.strip_prefix(&format!("{key}:")))
        .map(|v| v.trim().to_owned())
}

// ------------------------------------------------------------------------------------------
// the dashboard against a real Prometheus

#[test]
fn every_dashboard_panel_has_data_for_both_workers_and_shows_the_lessons() {
    let Some(binary) = prometheus_bin() else {
        return;
    };
    let start = Instant::now();
    let bad = Worker::start("bad", FAST);
    let optimized = Worker::start("optimized", FAST);
    let [prometheus_port, grafana_port] = free_ports();
    let ports = Ports {
        bad: bad.addr.port(),
        optimized: optimized.addr.port(),
        prometheus: prometheus_port,
        grafana: grafana_port,
        ..Ports::default()
    };
    let prometheus = Prometheus::start(&binary, &ports);

    // The rendered config points each job at the right process.
    let targets = prometheus.wait_targets_up();
    for (job, port) in [
        ("worker-bad", ports.bad),
        ("worker-optimized", ports.optimized),
        ("prometheus", ports.prometheus),
    ] {
        let target = targets.iter().find(|t| t.job == job).expect(job);
        assert!(
            target.scrape_url.contains(&format!("127.0.0.1:{port}/")),
            "{job} scrapes {}, expected port {port}",
            target.scrape_url
        );
    }
    let all_up = start.elapsed();

    let dashboard = std::fs::read_to_string(repo_root().join(DASHBOARD_JSON)).unwrap();
    let queries = config::panel_queries(&dashboard, config::GRAFANA_RATE_INTERVAL).unwrap();
    assert!(queries.len() >= 20, "only {} panel queries", queries.len());
    let answers = |q: &PanelQuery| {
        let result = prometheus_api::query(&prometheus.base, &q.expr);
        if q.is_alerts() || PENDING_METRICS.iter().any(|m| q.expr.contains(m)) {
            // Empty while no alert fires (the lab has run for seconds): it must evaluate.
            return result.is_ok();
        }
        let Ok(samples) = result else {
            return false;
        };
        ["bad", "optimized"]
            .iter()
            .all(|w| samples.iter().any(|s| s.label("worker_type") == Some(*w)))
    };
    let deadline = Instant::now() + PATIENCE;
    let mut pending: Vec<&PanelQuery> = queries.iter().collect();
    while !pending.is_empty() {
        pending.retain(|q| !answers(q));
        if pending.is_empty() {
            break;
        }
        if Instant::now() >= deadline {
            let report: Vec<String> = pending
                .iter()
                .map(|q| {
                    format!(
                        "{} [{}]: {}\n  -> {:?}",
                        q.panel,
                        q.ref_id,
                        q.expr,
                        prometheus_api::query(&prometheus.base, &q.expr)
                    )
                })
                .collect();
            panic!(
                "panel queries without data for both workers:\n{}",
                report.join("\n")
            );
        }
        std::thread::sleep(Duration::from_millis(500));
    }
    let all_panels = start.elapsed();
    eprintln!(
        "{} panel queries answered for both workers: targets UP after {all_up:.1?}, \
         every panel after {all_panels:.1?}",
        queries.len()
    );

    // Lesson 1: the bad worker leaks tasks, so it has more live tasks, and more over time.
    let live = "worker_active_goroutines";
    let bad_live = prometheus.value(live, "bad").unwrap();
    let optimized_live = prometheus.value(live, "optimized").unwrap();
    assert!(
        bad_live > optimized_live,
        "live tasks: bad {bad_live}, optimized {optimized_live}"
    );
    wait_for(
        "the bad worker's live tasks to grow in Prometheus",
        PATIENCE,
        || (prometheus.value(live, "bad").unwrap() >= bad_live + 10.0).then_some(()),
    );
    let optimized_now = prometheus.value(live, "optimized").unwrap();
    assert!(
        (optimized_now - optimized_live).abs() <= 3.0,
        "optimized live tasks moved {optimized_live} -> {optimized_now}"
    );

    // Lessons 2 and 3: the dashboard's own per-task queries. Optimized reaches 0 once its
    // warm-up leaves the rate window; bad allocates many times and many bytes per task.
    let per_task = |title: &str| {
        queries
            .iter()
            .find(|q| q.panel == title)
            .unwrap_or_else(|| panic!("no panel {title:?}"))
            .expr
            .clone()
    };
    let allocations = per_task("Allocations per task");
    let bytes = per_task("Bytes allocated per task");
    wait_for("optimized allocations per task to be 0", PATIENCE, || {
        (prometheus.value(&allocations, "optimized") == Some(0.0)).then_some(())
    });
    assert_eq!(prometheus.value(&bytes, "optimized"), Some(0.0));
    let bad_allocations = prometheus.value(&allocations, "bad").unwrap();
    let bad_bytes = prometheus.value(&bytes, "bad").unwrap();
    assert!(
        bad_allocations > 50.0,
        "bad worker: only {bad_allocations} allocations per task"
    );
    assert!(
        bad_bytes > 10_000.0,
        "bad worker: only {bad_bytes} bytes allocated per task"
    );

    // `lab profile` checks what answers: Prometheus is not a worker, and one worker is not the
    // other.
    let here = std::env::temp_dir();
    let out = lab(
        &["profile", "heap", "bad", "--url", &prometheus.base],
        &here,
        None,
    );
    expect(
        &out,
        1,
        &["is Prometheus, not worker-bad"],
        "profile Prometheus",
    );
    let out = lab(
        &["profile", "heap", "bad", "--url", &optimized.url("")],
        &here,
        None,
    );
    expect(
        &out,
        1,
        &[
            "is worker-optimized, not worker-bad",
            "lab profile heap optimized",
        ],
        "profile the wrong worker",
    );
}

#[test]
fn alert_and_recording_rules_load_and_evaluate_in_prometheus() {
    let Some(binary) = prometheus_bin() else {
        return;
    };
    // No workers needed: rules over missing series evaluate to nothing, without error.
    let ports = ports_from(free_ports());
    let prometheus = Prometheus::start(&binary, &ports);
    let mut expected = BTreeMap::new();
    for (name, text) in config::RULE_FILES {
        for (group, count) in rule_groups_in(text) {
            expected.insert(group, (name.to_string(), count));
        }
    }
    assert!(expected.len() >= 2, "{expected:?}");
    let groups = wait_for("every rule to be evaluated", PATIENCE, || {
        let groups = prometheus_api::rule_groups(&prometheus.base).ok()?;
        let evaluated = groups
            .iter()
            .flat_map(|g| &g.rules)
            .all(|r| r.health != "unknown");
        (evaluated && !groups.is_empty()).then_some(groups)
    });
    let loaded: BTreeMap<String, (String, usize)> = groups
        .iter()
        .map(|g| {
            let file = Path::new(&g.file).file_name().unwrap().to_string_lossy();
            (g.name.clone(), (file.into_owned(), g.rules.len()))
        })
        .collect();
    assert_eq!(
        loaded, expected,
        "rule groups loaded vs in prometheus/rules"
    );
    for rule in groups.iter().flat_map(|g| &g.rules) {
        assert_eq!(
            (rule.health.as_str(), rule.last_error.as_str()),
            ("ok", ""),
            "rule {} ({})",
            rule.name,
            rule.kind
        );
    }
}

#[test]
fn the_embedded_configs_are_the_repositorys_files() {
    let root = repo_root();
    let read = |rel: &str| std::fs::read_to_string(root.join(rel)).unwrap();
    assert_eq!(config::PROMETHEUS_YML, read("prometheus/prometheus.yml"));
    // Every file of each directory is embedded, unchanged: a new rule file or dashboard must
    // be added to src/lab/stack/config.rs too, or `lab demo` would silently run without it.
    let files = |dir: &str| -> BTreeMap<String, String> {
        let base = root.join(dir);
        let mut found = BTreeMap::new();
        let mut stack = vec![base.clone()];
        while let Some(d) = stack.pop() {
            for entry in std::fs::read_dir(&d).unwrap() {
                let path = entry.unwrap().path();
                if path.is_dir() {
                    stack.push(path);
                } else {
                    let rel = path
                        .strip_prefix(&base)
                        .unwrap()
                        .to_string_lossy()
                        .into_owned();
                    found.insert(rel, std::fs::read_to_string(&path).unwrap());
                }
            }
        }
        found
    };
    let embedded = |list: &[(&str, &str)]| -> BTreeMap<String, String> {
        list.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    };
    for (list, dir) in [
        (config::RULE_FILES, "prometheus/rules"),
        (config::GRAFANA_PROVISIONING, "grafana/provisioning"),
        (config::DASHBOARDS, "grafana/dashboards"),
    ] {
        let (embedded, on_disk) = (embedded(list), files(dir));
        assert_eq!(
            embedded.keys().collect::<Vec<_>>(),
            on_disk.keys().collect::<Vec<_>>(),
            "files embedded in src/lab/stack/config.rs vs in {dir}/"
        );
        for (name, text) in &embedded {
            assert!(
                text == &on_disk[name],
                "{dir}/{name} differs from its embedded copy"
            );
        }
    }
}

// ------------------------------------------------------------------------------------------
// `lab demo` and its friends

#[test]
fn lab_demo_runs_with_prometheus_says_grafana_is_missing_and_stops_cleanly() {
    let Some(prometheus) = prometheus_bin() else {
        return;
    };
    let root = TempDir::new("demo");
    // PATH holds Prometheus and nothing else: no Grafana, whatever this machine has.
    let path = bin_dir(root.path(), &[("prometheus", &prometheus)]);
    let data = root.path().join("data");
    let ports = ports_from(free_ports());
    let args = demo_args(&data, &ports, &[]);
    let mut demo = Demo::start(&args, root.path(), &path);
    let ready = demo.wait_for_output("lab demo: ready in", PATIENCE);
    eprintln!("lab demo ready (all targets UP) after {ready:.1?}");
    let output = demo.output();

    // Grafana: why it is missing, how to install it, what works without it.
    for fragment in [
        "Grafana not found",
        "--grafana-bin",
        "https://grafana.com/grafana/download",
        "brew install grafana",
        "Without it everything else works",
        &format!("http://127.0.0.1:{}/graph", ports.prometheus),
    ] {
        assert!(output.contains(fragment), "{fragment:?} not in:\n{output}");
    }
    // The guide's access URLs and pprof commands, for these ports.
    for fragment in [
        "target worker-bad UP",
        "target worker-optimized UP",
        "target prometheus UP",
        &format!("http://127.0.0.1:{}/metrics", ports.bad),
        &format!("http://127.0.0.1:{}/debug/pprof/", ports.optimized),
        &format!(
            "go tool pprof http://127.0.0.1:{}/debug/pprof/heap",
            ports.bad
        ),
        // ./data of the current directory is the default: no --data-dir in the hints.
        "Stop: Ctrl-C here, or `lab stop` from another terminal",
        "`lab logs [SERVICE] [--follow]`",
        // No Grafana: no suggestion to open its dashboard.
        "No dashboard without Grafana",
    ] {
        assert!(output.contains(fragment), "{fragment:?} not in:\n{output}");
    }
    assert!(!output.contains("Open the dashboard"), "{output}");
    // Every Prometheus page it prints is one this Prometheus serves (Debian's 2.42 keeps
    // targets and alerts under /classic/).
    let line = output
        .lines()
        .find(|l| l.trim_start().starts_with("Prometheus ") && l.contains("targets"))
        .unwrap_or_else(|| panic!("no Prometheus line in:\n{output}"));
    for page in ["graph", "targets", "alerts"] {
        let url = line
            .split([' ', ','])
            .find(|w| w.starts_with("http://") && w.ends_with(&format!("/{page}")))
            .unwrap_or_else(|| panic!("no {page} page in {line:?}"));
        let status = profiling_lab::client::get(url, Duration::from_secs(10))
            .map(|r| r.status)
            .unwrap_or(0);
        assert_eq!(status, 200, "{url} printed by lab demo answers {status}");
    }

    // Its Prometheus scrapes both workers.
    let base = ports.prometheus_url();
    let targets = prometheus_api::targets(&base).unwrap();
    assert_eq!(targets.len(), 3, "{targets:#?}");
    assert!(targets.iter().all(|t| t.is_up()), "{targets:#?}");

    // Grafana's inputs: the variables it would get, expanded in the provisioning files.
    let grafana_dir = data.join("config/grafana");
    let env_text = std::fs::read_to_string(grafana_dir.join("grafana.env")).unwrap();
    let env: BTreeMap<String, String> = config::parse_env_file(&env_text)
        .unwrap()
        .into_iter()
        .collect();
    let ini = std::fs::read_to_string(grafana_dir.join("grafana.ini")).unwrap();
    assert_eq!(ini_value(&ini, "http_addr").as_deref(), Some("127.0.0.1"));
    assert_eq!(
        ini_value(&ini, "http_port"),
        Some(ports.grafana.to_string())
    );
    assert_eq!(ini_value(&ini, "admin_user").as_deref(), Some("admin"));
    assert_eq!(ini_value(&ini, "admin_password").as_deref(), Some("admin"));
    let provisioning = PathBuf::from(ini_value(&ini, "provisioning").unwrap());
    assert_eq!(provisioning, grafana_dir.join("provisioning"));
    let datasource = config::expand_env(
        &std::fs::read_to_string(provisioning.join("datasources/prometheus.yaml")).unwrap(),
        &env,
    )
    .unwrap();
    let url = yaml_value(&datasource, "url").unwrap();
    assert_eq!(url, base);
    assert!(
        prometheus_api::ready(&url),
        "the datasource URL {url} does not reach the demo's Prometheus"
    );
    let provider = config::expand_env(
        &std::fs::read_to_string(provisioning.join("dashboards/lab.yaml")).unwrap(),
        &env,
    )
    .unwrap();
    let dashboards = PathBuf::from(yaml_value(&provider, "path").unwrap());
    assert!(dashboards.is_absolute(), "{}", dashboards.display());
    assert_eq!(
        std::fs::read(dashboards.join("worker-performance.json")).unwrap(),
        std::fs::read(repo_root().join(DASHBOARD_JSON)).unwrap(),
        "the dashboard Grafana would load is not the repository's"
    );

    // A second demo on the same data dir is refused, naming the first.
    let other = ports_from(free_ports());
    let second = lab(
        &[
            "demo",
            "--data-dir",
            data.to_str().unwrap(),
            "--no-prometheus",
            "--no-grafana",
            "--bad-port",
            &other.bad.to_string(),
            "--optimized-port",
            &other.optimized.to_string(),
            "--prometheus-port",
            &other.prometheus.to_string(),
            "--grafana-port",
            &other.grafana.to_string(),
        ],
        root.path(),
        Some(&path),
    );
    expect(
        &second,
        1,
        &["is already running", "`lab stop`"],
        "second demo",
    );

    // Logs: every service's lines, prefixed; one service's, plain.
    let data_arg = data.to_str().unwrap();
    let logs = lab(&["logs", "--data-dir", data_arg], root.path(), None);
    let all = expect(
        &logs,
        0,
        &[
            "worker-bad       | ",
            &format!("serving http://127.0.0.1:{}/metrics", ports.bad),
            &format!("serving http://127.0.0.1:{}/metrics", ports.optimized),
            "prometheus       | ",
            "Server is ready to receive web requests",
        ],
        "lab logs",
    );
    assert!(!all.contains("grafana          |"), "{all}");
    let one = lab(
        &[
            "logs",
            "worker-optimized",
            "-n",
            "5",
            "--data-dir",
            data_arg,
        ],
        root.path(),
        None,
    );
    let one = expect(
        &one,
        0,
        &["worker-optimized serving"],
        "lab logs worker-optimized",
    );
    assert!(!one.contains(" | "), "{one}");
    // Following, while the demo runs and until it stops.
    let mut follow = Command::new(LAB)
        .args([
            "logs",
            "worker-bad",
            "--follow",
            "-n",
            "1",
            "--data-dir",
            data_arg,
        ])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();

    // No Grafana to open; no cleaning while it runs.
    let grafana = lab(&["grafana", "--data-dir", data_arg], root.path(), None);
    let said = expect(
        &grafana,
        1,
        &["has no Grafana", "/graph", "grafana.com/grafana/download"],
        "lab grafana",
    );
    // The demo's message went to its terminal, not its logs: do not send users there.
    assert!(!said.contains("lab logs"), "{said}");
    let clean = lab(&["clean", "--data-dir", data_arg], root.path(), None);
    expect(
        &clean,
        1,
        &["stop it first", "lab stop", "--force"],
        "lab clean while running",
    );
    assert!(data.join("prometheus").is_dir());

    // Stop: `lab stop` returns once the demo has stopped every service; the demo prints and
    // saves both summaries and exits 0.
    let stop = lab(&["stop", "--data-dir", data_arg], root.path(), None);
    expect(&stop, 0, &["stopped the demo"], "lab stop");
    assert!(
        !data.join("lab-demo.json").exists(),
        "state file left behind"
    );
    for port in [ports.bad, ports.optimized, ports.prometheus] {
        assert!(port_is_free(port), "port {port} still taken after lab stop");
    }
    let (status, output) = demo.wait(PATIENCE);
    assert!(status.success(), "lab demo exited with {status}:\n{output}");
    for fragment in [
        "SIGTERM: stopping everything",
        "prometheus stopped",
        "=== worker-bad summary",
        "=== worker-optimized summary",
        "LEAK:",
        "lab demo: stopped after",
    ] {
        assert!(output.contains(fragment), "{fragment:?} not in:\n{output}");
    }
    for kind in ["bad", "optimized"] {
        let summary =
            std::fs::read_to_string(data.join(format!("logs/worker-{kind}.summary.txt"))).unwrap();
        assert!(
            summary.contains(&format!("=== worker-{kind} summary")),
            "{summary}"
        );
    }
    let followed = procs::wait_timeout(&mut follow, PATIENCE).unwrap();
    let mut followed_text = String::new();
    follow
        .stdout
        .take()
        .unwrap()
        .read_to_string(&mut followed_text)
        .unwrap();
    if followed.is_none() {
        let _ = follow.kill();
        panic!("lab logs --follow did not end with the demo:\n{followed_text}");
    }
    assert!(
        followed_text.contains("stopping: terminated (SIGTERM)"),
        "lab logs --follow missed the lines written while it ran:\n{followed_text}"
    );

    // Stopping again is harmless; clean deletes everything.
    let again = lab(&["stop", "--data-dir", data_arg], root.path(), None);
    expect(&again, 0, &["nothing to stop"], "second lab stop");
    let clean = lab(&["clean", "--data-dir", data_arg], root.path(), None);
    expect(&clean, 0, &["deleted"], "lab clean");
    assert!(!data.exists(), "lab clean left {}", data.display());
    let logs = lab(&["logs", "--data-dir", data_arg], root.path(), None);
    expect(&logs, 1, &["no logs in"], "lab logs after clean");
}

/// Answers every HTTP request with 200 and a Grafana-like health body, until dropped.
struct FakeGrafanaHealth {
    stop: Arc<AtomicBool>,
}

impl FakeGrafanaHealth {
    fn serve(port: u16) -> FakeGrafanaHealth {
        let listener = TcpListener::bind(("127.0.0.1", port)).expect("binding Grafana's port");
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let done = Arc::clone(&stop);
        std::thread::spawn(move || {
            while !done.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((mut stream, _)) => {
                        let _ = stream.set_nonblocking(false);
                        let _ = stream.set_read_timeout(Some(Duration::from_secs(1)));
                        let mut request = [0; 4096];
                        let _ = stream.read(&mut request);
                        let body = r#"{"database": "ok", "version": "stand-in"}"#;
                        let _ = write!(
                            stream,
                            "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n\
                             Content-Length: {}\r\nConnection: close\r\n\r\n{body}",
                            body.len()
                        );
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(20)),
                }
            }
        });
        FakeGrafanaHealth { stop }
    }
}

impl Drop for FakeGrafanaHealth {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

#[cfg(unix)]
#[test]
fn lab_demo_starts_grafana_with_the_provisioning_and_lab_grafana_opens_the_dashboard() {
    let root = TempDir::new("grafana");
    let dir = root.path();
    // A stand-in Grafana in the layout of Grafana's packages: bin/grafana and
    // share/grafana/conf/defaults.ini, which `lab demo` must find as the home path. It records
    // its arguments, environment and pid, then idles until stopped.
    let bin = dir.join("bin");
    std::fs::create_dir_all(&bin).unwrap();
    let home = dir.join("share/grafana");
    std::fs::create_dir_all(home.join("conf")).unwrap();
    std::fs::write(home.join("conf/defaults.ini"), "; stand-in\n").unwrap();
    let record = dir.join("grafana-run");
    write_script(
        &bin.join("grafana"),
        &format!(
            "for a in \"$@\"; do echo \"$a\"; done > '{r}.args.partial'\n\
             env > '{r}.env'\necho $$ > '{r}.pid'\nmv '{r}.args.partial' '{r}.args'\n\
             echo 'stand-in grafana started'\nexec sleep 600\n",
            r = record.display()
        ),
    );
    let opened = dir.join("opened-url");
    write_script(
        &bin.join("xdg-open"),
        &format!("echo \"$1\" > '{}'\n", opened.display()),
    );

    // Not the default ./data: the commands the demo suggests must name it.
    let data = dir.join("lab state");
    let ports = ports_from(free_ports());
    let args = demo_args(&data, &ports, &["--no-prometheus"]);
    let mut demo = Demo::start(&args, dir, &bin);
    // Once the stand-in has started, answer Grafana's health check on its port.
    let args_file = record.with_extension("args");
    wait_for("the stand-in Grafana to start", PATIENCE, || {
        args_file.exists().then_some(())
    });
    let _health = FakeGrafanaHealth::serve(ports.grafana);
    demo.wait_for_output("lab demo: ready in", PATIENCE);
    let output = demo.output();
    for fragment in [
        "Prometheus: not started (--no-prometheus)",
        "grafana healthy",
        &format!("http://127.0.0.1:{}/d/worker-performance", ports.grafana),
        "(user admin, password admin)",
        &format!("`lab stop --data-dir '{}'`", data.display()),
        &format!("`lab grafana --data-dir '{}'`", data.display()),
    ] {
        assert!(output.contains(fragment), "{fragment:?} not in:\n{output}");
    }

    // How Grafana was started: home found from the binary, the rendered ini, the env that
    // grafana.env documents.
    let grafana_dir = data.join("config/grafana");
    let argv: Vec<String> = std::fs::read_to_string(&args_file)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect();
    let canonical = |p: &Path| std::fs::canonicalize(p).unwrap();
    assert_eq!(argv.len(), 5, "{argv:?}");
    assert_eq!(argv[0], "server");
    assert_eq!(argv[1], "--homepath");
    assert_eq!(canonical(Path::new(&argv[2])), canonical(&home));
    assert_eq!(argv[3], "--config");
    assert_eq!(Path::new(&argv[4]), grafana_dir.join("grafana.ini"));
    let env = std::fs::read_to_string(record.with_extension("env")).unwrap();
    let documented =
        config::parse_env_file(&std::fs::read_to_string(grafana_dir.join("grafana.env")).unwrap())
            .unwrap();
    assert_eq!(documented.len(), 2);
    for (name, value) in &documented {
        assert!(
            env.lines().any(|l| l == format!("{name}={value}")),
            "{name}={value} not in Grafana's environment:\n{env}"
        );
    }
    assert!(env.contains(&format!(
        "PROMETHEUS_URL=http://127.0.0.1:{}\n",
        ports.prometheus
    )));
    assert!(env.contains(&format!(
        "LAB_DASHBOARDS_DIR={}\n",
        grafana_dir.join("dashboards").display()
    )));

    // `lab grafana` opens the dashboard with xdg-open; --print only prints it.
    let data_arg = data.to_str().unwrap();
    let url = format!("http://127.0.0.1:{}/d/worker-performance", ports.grafana);
    let open = lab(&["grafana", "--data-dir", data_arg], dir, Some(&bin));
    expect(&open, 0, &["opened", &url], "lab grafana");
    assert_eq!(std::fs::read_to_string(&opened).unwrap().trim(), url);
    let print = lab(
        &["grafana", "--print", "--data-dir", data_arg],
        dir,
        Some(&bin),
    );
    assert_eq!(expect(&print, 0, &[], "lab grafana --print").trim(), url);
    let logs = lab(&["logs", "grafana", "--data-dir", data_arg], dir, None);
    expect(&logs, 0, &["stand-in grafana started"], "lab logs grafana");

    let pid: u32 = std::fs::read_to_string(record.with_extension("pid"))
        .unwrap()
        .trim()
        .parse()
        .unwrap();
    let stop = lab(&["stop", "--data-dir", data_arg], dir, None);
    expect(&stop, 0, &["stopped the demo"], "lab stop");
    let (status, output) = demo.wait(PATIENCE);
    assert!(status.success(), "lab demo exited with {status}:\n{output}");
    assert!(output.contains("grafana stopped"), "{output}");
    assert!(
        !procs::process_alive(pid),
        "the stand-in Grafana outlived the demo"
    );
}

#[test]
fn lab_demo_refuses_taken_ports_naming_the_port_and_the_flag() {
    let root = TempDir::new("ports");
    let data = root.path().join("data");
    let held = TcpListener::bind("127.0.0.1:0").unwrap();
    let held_port = held.local_addr().unwrap().port();
    let worker = Worker::start("optimized", &[]);
    let worker_port = worker.addr.port();
    let [a, b, c, d] = free_ports();

    let run = |bad: u16, optimized: u16| {
        lab(
            &[
                "demo",
                "--data-dir",
                data.to_str().unwrap(),
                "--no-prometheus",
                "--no-grafana",
                "--bad-port",
                &bad.to_string(),
                "--optimized-port",
                &optimized.to_string(),
                "--prometheus-port",
                &c.to_string(),
                "--grafana-port",
                &d.to_string(),
            ],
            root.path(),
            None,
        )
    };
    let out = run(held_port, b);
    expect(
        &out,
        1,
        &[
            &format!("port {held_port} (worker-bad) is already in use"),
            "--bad-port PORT",
        ],
        "bad port taken",
    );
    // Taken by a lab worker: probably a demo still running.
    let out = run(a, worker_port);
    expect(
        &out,
        1,
        &[
            &format!("port {worker_port} (worker-optimized) is already in use"),
            "a lab worker answers there",
            "lab stop",
            "--optimized-port PORT",
        ],
        "optimized port taken by a worker",
    );
    // The learner's worker's port has a flag too (`--exercise-port`), and a taken one names it.
    let mut exercise = vec![
        "demo".to_owned(),
        "--data-dir".to_owned(),
        data.to_str().unwrap().to_owned(),
        "--no-prometheus".to_owned(),
        "--no-grafana".to_owned(),
        "--exercise".to_owned(),
        "--exercise-port".to_owned(),
        held_port.to_string(),
    ];
    for (flag, port) in [
        ("--bad-port", a),
        ("--optimized-port", b),
        ("--prometheus-port", c),
        ("--grafana-port", d),
    ] {
        exercise.extend([flag.to_owned(), port.to_string()]);
    }
    let exercise: Vec<&str> = exercise.iter().map(String::as_str).collect();
    let out = lab(&exercise, root.path(), None);
    expect(
        &out,
        1,
        &[
            &format!("port {held_port} (worker-exercise) is already in use"),
            "--exercise-port PORT",
        ],
        "exercise port taken",
    );
    assert!(!data.exists(), "a refused demo created {}", data.display());
    drop(held);
}

#[test]
fn stack_commands_refuse_foreign_directories_and_explain_an_absent_demo() {
    let root = TempDir::new("absent");
    let dir = root.path();
    let data = dir.join("data");
    let out = lab(&["stop"], dir, None);
    expect(
        &out,
        0,
        &["no `lab demo` is running", "nothing to stop"],
        "stop",
    );
    let out = lab(&["grafana"], dir, None);
    expect(
        &out,
        1,
        &["no `lab demo` is running", "lab demo"],
        "grafana",
    );
    let out = lab(&["logs"], dir, None);
    expect(&out, 1, &["no logs in", "lab demo"], "logs");
    let out = lab(&["clean"], dir, None);
    expect(&out, 0, &["does not exist; nothing to clean"], "clean");

    // A directory `lab demo` did not make is neither used nor deleted.
    std::fs::create_dir_all(&data).unwrap();
    std::fs::write(data.join("thesis.tex"), "precious").unwrap();
    let out = lab(&["clean"], dir, None);
    expect(
        &out,
        1,
        &["was not made by `lab demo`", "not deleting"],
        "clean foreign",
    );
    let ports = ports_from(free_ports());
    let args = demo_args(&data, &ports, &["--no-prometheus", "--no-grafana"]);
    let mut demo_args: Vec<&str> = vec!["demo"];
    demo_args.extend(args.iter().map(String::as_str));
    let out = lab(&demo_args, dir, None);
    expect(
        &out,
        1,
        &["not made by `lab demo`", "--data-dir"],
        "demo in foreign dir",
    );
    assert_eq!(
        std::fs::read_to_string(data.join("thesis.tex")).unwrap(),
        "precious"
    );
}

#[test]
fn every_new_flag_rejects_bad_values_with_exit_2_naming_it() {
    let root = TempDir::new("flags");
    let dir = root.path();
    let not_executable = dir.join("plain-file");
    std::fs::write(&not_executable, "").unwrap();
    let ne = not_executable.to_str().unwrap();
    let cases: &[(&[&str], &[&str])] = &[
        (&["demo", "--bad-port", "0"], &["--bad-port", "1..=65535"]),
        (
            &["demo", "--optimized-port", "65536"],
            &["--optimized-port", "65536"],
        ),
        (
            &["demo", "--prometheus-port", "http"],
            &["--prometheus-port", "http"],
        ),
        (&["demo", "--grafana-port", "-1"], &["--grafana-port", "-1"]),
        (
            &["demo", "--exercise", "--exercise-port", "70000"],
            &["--exercise-port", "70000", "1..=65535"],
        ),
        (
            &["demo", "--exercise-port", "9193"],
            &["--exercise-port", "--exercise"],
        ),
        (
            &[
                "demo",
                "--exercise",
                "--exercise-port",
                "9300",
                "--bad-port",
                "9300",
            ],
            &["--bad-port", "--exercise-port", "9300", "a port of its own"],
        ),
        (
            &["demo", "--bad-port", "9300", "--grafana-port", "9300"],
            &["--bad-port", "--grafana-port", "9300", "a port of its own"],
        ),
        (
            &["demo", "--prometheus-bin", "/nonexistent/prometheus"],
            &["--prometheus-bin", "/nonexistent/prometheus"],
        ),
        (
            &["demo", "--prometheus-bin", ne],
            &["--prometheus-bin", "not executable"],
        ),
        (
            &["demo", "--grafana-bin", "/nonexistent/grafana"],
            &["--grafana-bin"],
        ),
        (
            &["demo", "--grafana-homepath", "/"],
            &["--grafana-homepath", "conf/defaults.ini"],
        ),
        (
            &["demo", "--no-grafana", "--grafana-bin", "/bin/sh"],
            &["--no-grafana", "--grafana-bin"],
        ),
        (
            &["demo", "--no-prometheus", "--prometheus-bin", "/bin/sh"],
            &["--no-prometheus", "--prometheus-bin"],
        ),
        (
            &["demo", "--retention", "forever"],
            &["--retention", "15d, 12h or 1w2d"],
        ),
        (
            &["demo", "--retention", "0d"],
            &["--retention", "at least 1m"],
        ),
        (&["demo", "--data-dir", ""], &["--data-dir"]),
        (&["demo", "--tasks", "0"], &["--tasks", "1..="]),
        (&["demo", "--workers", "10001"], &["--workers", "1..=10000"]),
        (
            &["demo", "--duration", "soon"],
            &["--duration", "30s, 10m or 48h"],
        ),
        (
            &["demo", "--data-size", "0"],
            &["--data-size", "1..=1000000"],
        ),
        (&["demo", "--rate", "0"], &["--rate", "1..=1000000"]),
        (
            &["stop", "--timeout", "never"],
            &["--timeout", "30s, 10m or 48h"],
        ),
        (
            &["logs", "nginx"],
            &[
                "nginx",
                "worker-bad",
                "worker-optimized",
                "prometheus",
                "grafana",
            ],
        ),
        (&["logs", "--lines", "-3"], &["--lines", "-3"]),
        (&["grafana", "--open"], &["--open", "unexpected argument"]),
        (
            &["clean", "--everything"],
            &["--everything", "unexpected argument"],
        ),
    ];
    for (args, fragments) in cases {
        let out = lab(args, dir, None);
        let stderr = text(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "lab {args:?}: {stderr}");
        assert!(!stderr.contains("panicked"), "lab {args:?}: {stderr}");
        for fragment in *fragments {
            assert!(
                stderr.contains(fragment),
                "lab {args:?}: {fragment:?} not in {stderr}"
            );
        }
    }
    // Nothing was started or written.
    assert!(!dir.join("data").exists());
}

#[test]
fn lab_stop_finds_a_demo_by_its_lock_when_its_state_file_is_gone_or_damaged() {
    for damage in ["deleted", "damaged"] {
        let root = TempDir::new(&format!("lock-{damage}"));
        let dir = root.path();
        let data = dir.join("data");
        let data_arg = data.to_str().unwrap();
        let ports = ports_from(free_ports());
        let args = demo_args(&data, &ports, &["--no-prometheus", "--no-grafana"]);
        let mut demo = Demo::start(&args, dir, &bin_dir(dir, &[]));
        demo.wait_for_output("lab demo: ready in", PATIENCE);
        let state = data.join("lab-demo.json");
        if damage == "deleted" {
            std::fs::remove_file(&state).unwrap();
        } else {
            std::fs::write(&state, "{ not json").unwrap();
        }

        // Another demo on the same data dir is refused, naming the running one.
        let mut again = vec!["demo"];
        again.extend(args.iter().map(String::as_str));
        let second = lab(&again, dir, None);
        let all = expect(&second, 1, &["lab-demo.lock", "lab stop"], "second demo");
        assert!(!all.contains("delete it"), "{damage}: {all}");
        // Commands that need its ports say what they know, not "no demo".
        let grafana = lab(&["grafana", "--data-dir", data_arg], dir, None);
        let all = expect(&grafana, 1, &["lab-demo.lock", "lab stop"], "grafana");
        assert!(!all.contains("delete it"), "{damage}: {all}");

        let stop = lab(&["stop", "--data-dir", data_arg], dir, None);
        let all = expect(&stop, 0, &["stopped the demo"], "lab stop");
        assert!(!all.contains("nothing to stop"), "{damage}: {all}");
        for port in [ports.bad, ports.optimized] {
            assert!(port_is_free(port), "{damage}: port {port} still taken");
        }
        let (status, output) = demo.wait(PATIENCE);
        assert!(status.success(), "{damage}: {status}\n{output}");
        // Stopped: now there is nothing to stop, and it says so.
        let stop = lab(&["stop", "--data-dir", data_arg], dir, None);
        assert!(
            text(&stop.stdout).contains("no `lab demo` is running")
                || text(&stop.stderr).contains("no `lab demo` is running"),
            "{damage}: {}{}",
            text(&stop.stdout),
            text(&stop.stderr)
        );
    }
}

#[test]
fn lab_clean_on_a_symlink_deletes_nothing_and_names_the_real_directory() {
    let root = TempDir::new("clean-link");
    let dir = root.path();
    let real = dir.join("real");
    DataDir::resolve(&real).unwrap().prepare().unwrap();
    std::fs::write(real.join("logs").join("worker-bad.log"), "kept").unwrap();
    let link = dir.join("link");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = lab(&["clean", "--data-dir", link.to_str().unwrap()], dir, None);
    let target = real.canonicalize().unwrap();
    expect(
        &out,
        1,
        &[
            "symbolic link",
            &format!("lab clean --data-dir {}", target.display()),
        ],
        "clean a link",
    );
    assert!(
        !text(&out.stdout).contains("deleted"),
        "{}",
        text(&out.stdout)
    );
    assert!(link.exists() && real.join("logs").join("worker-bad.log").exists());
    // Through the real path it is deleted, as before.
    let out = lab(
        &["clean", "--data-dir", target.to_str().unwrap()],
        dir,
        None,
    );
    expect(&out, 0, &["deleted"], "clean the real directory");
    assert!(!real.exists());
}
