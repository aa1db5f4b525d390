//! Every data link of the dashboard, followed to a running worker: the URL a learner opens by
//! clicking a worker's line in Grafana, built from the labels the real Prometheus puts on that
//! line.
//!
//! Both workers and a real Prometheus (the repository's config rendered for their ports by the
//! function `lab demo` uses) run on free loopback ports. Each lesson panel's queries are
//! evaluated by Prometheus: every series must carry the `instance` of its own worker, so that its
//! links point at that worker. Each link, resolved from those labels as Grafana resolves
//! `${__field.labels.NAME}`, must answer 200 with a body `go tool pprof` reads, or an SVG (flame
//! graphs), or for the alerts panel the HTML profile index. The dashboard's alert-rules link is
//! followed into the same Prometheus.
//!
//! Skips (or fails under LAB_REQUIRE_TOOLS=1) without `prometheus` or `go`.

mod support;

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Child;
use std::time::{Duration, Instant};

use profiling_lab::client;
use profiling_lab::lab::procs;
use profiling_lab::lab::stack::config::{self, PanelLink, PanelQuery, Ports};
use profiling_lab::lab::stack::layout::DataDir;
use profiling_lab::lab::stack::prometheus_api;
use profiling_lab::lab::stack::services;
use support::{Worker, go_pprof, repo_root, require_go, require_tool};

const DASHBOARD_JSON: &str = "grafana/dashboards/worker-performance.json";

/// A fast stream of small tasks: rates have data within two scrapes. Ten minutes, so the workers
/// outlive the slowest links (30 s deltas and CPU profiles on a loaded machine).
const FAST: &[&str] = &[
    "--rate",
    "1000",
    "--data-size",
    "500",
    "--tasks",
    "200",
    "--duration",
    "10m",
];

/// Metrics other branches add (CONTRACTS.md), not served by the workers on this branch yet: the
/// panels that show them are checked for their links, not for their series. The integrator
/// removes this list after merging `tasks` and `observer`.
const PENDING_METRICS: &[&str] = &[];

/// Profile endpoints other branches add (CONTRACTS.md). Until they land, these links may answer
/// 400 or 404; once they answer 200 they are checked like every other. The integrator removes
/// this list after merging `observer`.
const PENDING_ENDPOINTS: &[&str] = &[];

/// Grafana's proxy to the dashboard's datasource: the prefix of the alert-rules link.
const DATASOURCE_PROXY: &str = "/api/datasources/proxy/uid/${datasource}";

// ------------------------------------------------------------------------------------------
// a real Prometheus

struct Prometheus {
    child: Child,
    base: String,
    dir: PathBuf,
}

impl Prometheus {
    fn start(binary: &Path, ports: &Ports) -> Prometheus {
        let dir = std::env::temp_dir().join(format!(
            "profiling-lab-dashboard-links-{}",
            std::process::id()
        ));
        let _ = std::fs::remove_dir_all(&dir);
        std::fs::create_dir_all(&dir).expect("a temp dir");
        let data = DataDir::resolve(&dir).unwrap();
        let configs =
            config::write_configs(&data.config_dir(), &data.grafana_data(), ports).unwrap();
        let mut command = services::prometheus_command(binary, &configs, &data, ports, "1d");
        let child = procs::spawn_logged(&mut command, &dir.join("prometheus.log")).unwrap();
        let mut prometheus = Prometheus {
            child,
            base: ports.prometheus_url(),
            dir,
        };
        let ready = format!("{}/-/ready", prometheus.base);
        if let Err(e) = procs::wait_child_healthy(
            &ready,
            &mut prometheus.child,
            Duration::from_secs(30),
            &mut || false,
        ) {
            panic!("Prometheus did not start: {e}\n{}", prometheus.log());
        }
        prometheus
    }

    fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("prometheus.log")).unwrap_or_default()
    }
}

impl Drop for Prometheus {
    fn drop(&mut self) {
        let _ = procs::stop_child(&mut self.child, Duration::from_secs(10));
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("a free port")
        .port()
}

// ------------------------------------------------------------------------------------------
// what a link must answer

fn is_pending_query(query: &PanelQuery) -> bool {
    PENDING_METRICS.iter().any(|m| query.expr.contains(m))
}

/// The path and query of a worker URL (`http://ADDR/PATH?QUERY`).
fn path_of(url: &str) -> &str {
    let rest = url.strip_prefix("http://").unwrap_or(url);
    rest.find('/').map_or("/", |i| &rest[i..])
}

/// Whether `go tool pprof` parses `file`, without failing the test when it does not.
fn pprof_reads(go: &Path, file: &Path) -> bool {
    std::process::Command::new(go)
        .args(["tool", "pprof", "-raw"])
        .arg(file)
        .env("PPROF_TMPDIR", file.parent().unwrap())
        .output()
        .is_ok_and(|out| out.status.success())
}

fn is_svg(body: &[u8]) -> bool {
    let head = String::from_utf8_lossy(&body[..body.len().min(512)]).into_owned();
    let text = head.trim_start();
    (text.starts_with("<svg") || text.starts_with("<?xml")) && {
        let all = String::from_utf8_lossy(body);
        all.contains("<svg") && all.trim_end().ends_with("</svg>")
    }
}

/// GETs `url` and checks what a click on the link shows. Returns a line for the report, or
/// None for a pending endpoint that is not there yet.
fn check_link(go: &PathBuf, url: &str, scratch: &Path) -> Option<String> {
    let started = Instant::now();
    // A bound for a hung worker, not a speed target: a debug build symbolizes a 10 s CPU
    // profile in about a minute on a loaded 2-core machine.
    let response = client::get(url, Duration::from_secs(300)).unwrap_or_else(|e| panic!("{e}"));
    let answered_in = started.elapsed();
    let path = path_of(url);
    if response.status != 200 {
        if PENDING_ENDPOINTS.contains(&path) && matches!(response.status, 400 | 404) {
            eprintln!(
                "PENDING {url}: {} ({}) until the branch that adds it is merged",
                response.status,
                response.text().trim()
            );
            return None;
        }
        panic!(
            "data link {url} answered {}: {}",
            response.status,
            response.text()
        );
    }
    let kind = if path == "/debug/pprof/" {
        assert!(
            response.content_type.starts_with("text/html"),
            "{url}: the profile index should be HTML, is {}",
            response.content_type
        );
        "HTML index"
    } else if is_svg(&response.body) {
        "SVG"
    } else {
        // Anything else must be a profile `go tool pprof` reads as it is.
        let file = scratch.join(
            path.trim_start_matches('/')
                .replace(['/', '?', '=', '&'], "_"),
        );
        std::fs::write(&file, &response.body).unwrap();
        let text = response.text();
        if path.ends_with("debug=1") && !pprof_reads(go, &file) {
            // Go's debug=1 text is for people; pprof also reads it when each stack carries
            // addresses. Without them, Go's header is what a reader (and `lab`) relies on.
            assert!(
                text.starts_with("goroutine profile: total "),
                "{url}: neither go tool pprof nor a person reads it as Go's text task profile:\n{}",
                &text[..text.len().min(400)]
            );
            "text task profile in Go's format"
        } else {
            let raw = go_pprof(go, &["-raw", file.to_str().unwrap()]);
            assert!(
                raw.contains("Samples:"),
                "{url}: go tool pprof -raw:\n{raw}"
            );
            "profile go tool pprof reads"
        }
    };
    Some(format!(
        "{url}: 200, {} bytes, {kind}, in {:.1} s",
        response.body.len(),
        answered_in.as_secs_f64()
    ))
}

// ------------------------------------------------------------------------------------------
// the test

#[test]
fn every_data_link_opens_the_profile_of_the_worker_whose_line_was_clicked() {
    let Some(prometheus_binary) = require_tool(
        "prometheus",
        "apt-get install -y --no-install-recommends prometheus",
    ) else {
        return;
    };
    let Some(go) = require_go() else { return };

    let bad = Worker::start("bad", FAST);
    let optimized = Worker::start("optimized", FAST);
    let ports = Ports {
        bad: bad.addr.port(),
        optimized: optimized.addr.port(),
        prometheus: free_port(),
        grafana: free_port(),
        ..Ports::default()
    };
    let prometheus = Prometheus::start(&prometheus_binary, &ports);
    let expected: BTreeMap<&str, String> = [
        ("bad", bad.addr.to_string()),
        ("optimized", optimized.addr.to_string()),
    ]
    .into();

    let dashboard = std::fs::read_to_string(repo_root().join(DASHBOARD_JSON)).unwrap();
    let queries = config::panel_queries(&dashboard, config::GRAFANA_RATE_INTERVAL).unwrap();
    let links = config::panel_links(&dashboard).unwrap();

    // Each lesson panel's series carry their own worker's instance, for both workers: the link
    // on the bad worker's line opens the bad worker's profile.
    let deadline = Instant::now() + Duration::from_secs(60);
    let mut pending: Vec<&PanelQuery> = queries
        .iter()
        .filter(|q| !q.is_alerts() && !is_pending_query(q))
        .collect();
    for q in queries.iter().filter(|q| is_pending_query(q)) {
        eprintln!(
            "PENDING panel {:?} [{}]: its metric comes from another branch; only its links are checked",
            q.panel, q.ref_id
        );
    }
    while !pending.is_empty() {
        pending.retain(|q| {
            let Ok(samples) = prometheus_api::query(&prometheus.base, &q.expr) else {
                return true;
            };
            let mut seen = BTreeSet::new();
            for sample in &samples {
                let worker = sample.label("worker_type").unwrap_or("");
                let instance = sample.label("instance");
                assert_eq!(
                    instance,
                    expected.get(worker).map(String::as_str),
                    "panel {:?} [{}]: a {worker:?} series has instance {instance:?}, so its links \
                     would open another address than that worker's: {}",
                    q.panel,
                    q.ref_id,
                    q.expr
                );
                seen.insert(worker.to_owned());
            }
            seen.len() < 2
        });
        assert!(
            Instant::now() < deadline,
            "panels without series for both workers after 60 s: {:#?}\n{}",
            pending
                .iter()
                .map(|q| (&q.panel, &q.expr))
                .collect::<Vec<_>>(),
            prometheus.log()
        );
        std::thread::sleep(Duration::from_millis(500));
    }

    // Every link of every panel, for each worker's line, resolved as Grafana would.
    let mut by_worker: BTreeMap<&str, BTreeSet<String>> = BTreeMap::new();
    let mut panels_linked = BTreeSet::new();
    for link in &links {
        let worker_link = link.url.starts_with("http://${__field.labels.instance}/");
        if !worker_link {
            assert!(
                link.url.starts_with('/'),
                "{link:?} is neither a worker link nor a Grafana path"
            );
            continue;
        }
        for (worker, instance) in &expected {
            let labels = BTreeMap::from([
                ("instance".to_owned(), instance.clone()),
                ("worker_type".to_owned(), worker.to_string()),
                ("alertname".to_owned(), "WorkerTaskLeak".to_owned()),
            ]);
            let url = link.resolve(&labels).unwrap_or_else(|e| panic!("{e}"));
            assert!(
                url.starts_with(&format!("http://{instance}/")),
                "{link:?} resolves to {url}"
            );
            let title = PanelLink {
                url: link.title.clone(),
                ..link.clone()
            }
            .resolve(&labels)
            .unwrap();
            assert!(
                title.contains(worker),
                "link title {title:?} names no worker"
            );
            by_worker.entry(worker).or_default().insert(url);
        }
        panels_linked.insert(link.panel.clone());
    }
    let lesson_panels: BTreeSet<String> = queries
        .iter()
        .filter(|q| !q.is_alerts())
        .map(|q| q.panel.clone())
        .collect();
    let unlinked: Vec<_> = lesson_panels.difference(&panels_linked).collect();
    assert!(
        unlinked.is_empty(),
        "lesson panels without worker links: {unlinked:?}"
    );

    // Follow them all. Task profiles first, one at a time and with nothing else running: on
    // this branch they are still tokio task dumps, which can wedge a busy worker
    // (tokio-rs/tokio#7478; the `tasks` branch replaces them). Then CPU profiles one at a time
    // per worker (a worker runs one at a time), allocation deltas in a second thread and the
    // rest in a third, both workers at once.
    let scratch = std::env::temp_dir().join(format!(
        "profiling-lab-dashboard-links-bodies-{}",
        std::process::id()
    ));
    std::fs::create_dir_all(&scratch).unwrap();
    let group_of = |url: &str| {
        let path = path_of(url);
        if path.starts_with("/debug/pprof/goroutine") {
            0
        } else if path.starts_with("/debug/pprof/profile")
            || path.starts_with("/debug/pprof/flamegraph")
        {
            1
        } else if path.starts_with("/debug/pprof/allocs") {
            2
        } else {
            3
        }
    };
    let mut report: Vec<String> = by_worker
        .values()
        .flatten()
        .filter(|url| group_of(url) == 0)
        .filter_map(|url| check_link(&go, url, &scratch))
        .collect();
    report.extend(std::thread::scope(|scope| {
        let mut handles = Vec::new();
        for urls in by_worker.values() {
            for group in 1..=3 {
                let (go, scratch) = (&go, &scratch);
                let urls: Vec<&String> = urls.iter().filter(|u| group_of(u) == group).collect();
                handles.push(scope.spawn(move || {
                    urls.into_iter()
                        .filter_map(|url| check_link(go, url, scratch))
                        .collect::<Vec<_>>()
                }));
            }
        }
        handles
            .into_iter()
            .flat_map(|h| h.join().unwrap_or_else(|e| std::panic::resume_unwind(e)))
            .collect::<Vec<_>>()
    }));
    let _ = std::fs::remove_dir_all(&scratch);
    eprintln!("{}", report.join("\n"));
    let followed: usize = by_worker.values().map(BTreeSet::len).sum();
    let pending_now = followed - report.len();
    assert!(
        pending_now <= PENDING_ENDPOINTS.len() * expected.len(),
        "{pending_now} links not answered"
    );

    // The dashboard's alert-rules link goes through Grafana's proxy to this Prometheus' API,
    // which Prometheus 2.42 (Debian) and 3.x both serve; its UI pages differ between them.
    let dashboard_json: serde_json::Value = serde_json::from_str(&dashboard).unwrap();
    let rules_link = dashboard_json["links"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|l| l["url"].as_str())
        .find(|u| u.starts_with(DATASOURCE_PROXY))
        .expect("a dashboard link through the datasource proxy");
    let api = format!(
        "{}{}",
        prometheus.base,
        &rules_link[DATASOURCE_PROXY.len()..]
    );
    let response = client::get(&api, Duration::from_secs(10)).unwrap();
    assert_eq!(response.status, 200, "{api}: {}", response.text());
    let text = response.text();
    for alert in ["WorkerTaskLeak", "WorkerAllocationChurn"] {
        assert!(text.contains(alert), "{api} does not list {alert}: {text}");
    }
    drop(prometheus);
    let _ = (bad.terminate(), optimized.terminate());
}
