//! The task profile (`/debug/pprof/goroutine`) is safe by construction: it reads the lab's task
//! registry, so hammering it never wedges a worker; it names a leaked helper and the line that
//! spawned it; it counts HTTP connections apart from the workload's tasks.

mod support;

use std::io::Read;
use std::time::Duration;

use support::{Worker, go_pprof, require_go, wait_for};

/// Many short rounds (a leaked progress reporter each) and enough failing tasks for the audit
/// helpers to pile up quickly, even in a debug build.
const LEAKY: &[&str] = &["--rate", "1000", "--data-size", "1000", "--tasks", "50"];

/// `worker_live_tasks{kind="KIND"}` from an exposition.
fn live_tasks(exposition: &str, kind: &str) -> f64 {
    let label = format!("kind=\"{kind}\"");
    exposition
        .lines()
        .find(|l| l.starts_with("worker_live_tasks{") && l.contains(&label))
        .and_then(|l| l.rsplit(' ').next())
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no worker_live_tasks{{{label}}} in:\n{exposition}"))
}

/// The line of `src/bad.rs` that spawns the audit helpers.
fn audit_spawn_line() -> usize {
    let source = std::fs::read_to_string(support::repo_root().join("src/bad.rs")).unwrap();
    source
        .lines()
        .position(|l| l.contains("pool::spawn_helper(audit_on_completion("))
        .expect("bad.rs spawns audit_on_completion")
        + 1
}

fn leaking_bad_worker(args: &[&str], helpers: f64) -> Worker {
    let worker = Worker::start("bad", args);
    wait_for("leaked helpers", Duration::from_secs(120), || {
        (live_tasks(&worker.metrics(), "helper") >= helpers).then_some(())
    });
    worker
}

#[test]
fn hammering_the_task_profile_never_wedges_the_bad_worker() {
    // On the one-thread runtime with tokio's task dumps, this hung the worker for good within a
    // minute (it then ignored SIGTERM). The registry cannot: nothing waits for a task.
    let worker = leaking_bad_worker(LEAKY, 20.0);
    let base = worker.url("");
    let statuses: Vec<u16> = std::thread::scope(|scope| {
        let clients: Vec<_> = (0..4)
            .map(|client| {
                let base = &base;
                scope.spawn(move || {
                    (0..45)
                        .map(|i| {
                            let url =
                                format!("{base}/debug/pprof/goroutine?debug={}", (client + i) % 3);
                            profiling_lab::client::get(&url, Duration::from_secs(120))
                                .unwrap_or_else(|e| panic!("{e}"))
                                .status
                        })
                        .collect::<Vec<u16>>()
                })
            })
            .collect();
        clients
            .into_iter()
            .flat_map(|c| c.join().unwrap())
            .collect()
    });
    assert_eq!(statuses.len(), 180);
    assert!(
        statuses.iter().all(|&s| s == 200 || s == 409),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    assert_eq!(worker.get("/healthz").status, 200, "still serving");
    let stopped = worker.terminate_within(Duration::from_secs(30));
    assert!(
        !stopped.killed,
        "worker-bad ignored SIGTERM after the storm"
    );
    assert!(stopped.status.success(), "{:?}", stopped.status);
    assert!(
        stopped.output.contains("terminated (SIGTERM)") && stopped.output.contains("LEAK:"),
        "{}",
        stopped.output
    );
}

#[test]
fn the_task_profile_names_the_leaked_helper_and_where_it_was_spawned() {
    // Long rounds: the audit helpers of failed tasks (about 1 in 100) are the bulk of the leak.
    let worker = leaking_bad_worker(
        &["--rate", "1000", "--data-size", "1000", "--tasks", "100000"],
        40.0,
    );
    let created_by = format!("created by src/bad.rs:{}:", audit_spawn_line());

    let grouped = worker.get("/debug/pprof/goroutine?debug=1");
    assert_eq!(grouped.status, 200);
    assert!(grouped.content_type.starts_with("text/plain"));
    let grouped = grouped.text();
    let total: usize = grouped
        .lines()
        .next()
        .and_then(|l| l.strip_prefix("goroutine profile: total "))
        .and_then(|n| n.parse().ok())
        .unwrap_or_else(|| panic!("no total line:\n{grouped}"));
    assert!(total >= 20, "{total} tasks");
    // The largest group: the audit helpers, idle, with where they were spawned.
    let first = grouped.split("\n\n").next().unwrap();
    assert!(
        first.contains("@ helper idle")
            && first.contains("#\tprofiling_lab::bad::audit_on_completion\n")
            && first.contains(&created_by)
            && first.contains("# labels: {\"kind\":\"helper\""),
        "{grouped}"
    );
    // The pool's worker tasks and the HTTP connection serving this request are listed too.
    assert!(grouped.contains("#\tprofiling_lab::pool::work<profiling_lab::bad::Bad>"));
    assert!(grouped.contains("@ http "), "{grouped}");

    let every = worker.get("/debug/pprof/goroutine?debug=2").text();
    let entries: Vec<&str> = every.split("\n\n").filter(|e| !e.is_empty()).collect();
    assert!(
        entries.len() * 2 > total,
        "{} entries, total {total}",
        entries.len()
    );
    for entry in &entries {
        let header = entry.lines().next().unwrap();
        assert!(
            header.starts_with("goroutine ") && header.ends_with("]:"),
            "{entry}"
        );
    }
    let audits = entries
        .iter()
        .filter(|e| e.contains("\nprofiling_lab::bad::audit_on_completion(...)\n"))
        .collect::<Vec<_>>();
    assert!(audits.len() >= 10, "{every}");
    assert!(
        audits
            .iter()
            .all(|e| e.contains(&created_by) && e.contains(" [idle"))
    );

    let Some(go) = require_go() else { return };
    let top = go_pprof(&go, &["-top", &worker.url("/debug/pprof/goroutine")]);
    assert!(top.contains("Type: goroutine"), "{top}");
    let first_row = top
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        first_row.contains("profiling_lab::bad::audit_on_completion"),
        "the largest entry is not the leaked helper:\n{top}"
    );
    let traces = go_pprof(&go, &["-traces", &worker.url("/debug/pprof/goroutine")]);
    assert!(traces.contains(&created_by), "{traces}");
    // Go's delta profile: what appeared over a second or two.
    let delta = go_pprof(
        &go,
        &[
            "-top",
            "-seconds",
            "2",
            &worker.url("/debug/pprof/goroutine"),
        ],
    );
    assert!(delta.contains("Type: goroutine"), "{delta}");
    let both = worker.get("/debug/pprof/goroutine?seconds=1&debug=1");
    assert_eq!(both.status, 400);
    assert!(
        both.text().contains("cannot be combined"),
        "{}",
        both.text()
    );
}

#[test]
fn one_task_profile_at_a_time() {
    let worker = Worker::start("bad", LEAKY);
    // A delta profile holds its turn for its whole span.
    let url = worker.url("/debug/pprof/goroutine?seconds=20");
    let delta = std::thread::spawn(move || {
        profiling_lab::client::get(&url, Duration::from_secs(120)).unwrap()
    });
    let refused = wait_for(
        "a request refused its turn",
        Duration::from_secs(20),
        || {
            let response = worker.get("/debug/pprof/goroutine?debug=1");
            assert!(
                response.status == 200 || response.status == 409,
                "{}",
                response.status
            );
            (response.status == 409).then_some(response.text())
        },
    );
    assert!(
        refused.contains("one at a time") && refused.contains("waited 2 s"),
        "{refused}"
    );
    assert_eq!(delta.join().unwrap().status, 200);
    assert_eq!(worker.get("/debug/pprof/goroutine?debug=1").status, 200);
}

#[test]
fn keep_alive_connections_are_not_a_leak() {
    let worker = Worker::start("optimized", &["--duration", "8s"]);
    let mut connections = worker.connect_sending(20, b"GET /healthz HTTP/1.1\r\nhost: lab\r\n\r\n");
    for stream in &mut connections {
        stream
            .set_read_timeout(Some(Duration::from_secs(60)))
            .unwrap();
        let mut buf = [0u8; 256];
        let n = stream.read(&mut buf).unwrap();
        assert!(buf[..n].starts_with(b"HTTP/1.1 200"), "{:?}", &buf[..n]);
    }
    // All twenty are open and counted as HTTP tasks (plus the scrape's own).
    let http = live_tasks(&worker.metrics(), "http");
    assert!(http >= 20.0, "{http} http tasks");
    // The optimized worker's one helper: the run's progress reporter.
    assert_eq!(live_tasks(&worker.metrics(), "helper"), 1.0);
    let (status, output) = worker.wait();
    assert!(status.success(), "{output}");
    assert!(output.contains("summary"), "{output}");
    assert!(
        !output.contains("LEAK"),
        "idle connections reported as a leak:\n{output}"
    );
    drop(connections);
}

#[test]
fn the_optimized_worker_lists_no_helpers_and_the_bad_one_says_leak() {
    let optimized = Worker::start("optimized", LEAKY);
    let bad = Worker::start("bad", &[LEAKY, &["--duration", "6s"]].concat());
    wait_for("tasks processed", Duration::from_secs(60), || {
        (optimized.metric("worker_tasks_processed_total") >= 500.0).then_some(())
    });
    let text = optimized.get("/debug/pprof/goroutine?debug=1").text();
    assert!(!text.contains("audit_on_completion"), "{text}");
    // Ten rounds of 50 tasks and more have passed: still the run's one reporter, nothing else.
    let helpers: Vec<&str> = text.lines().filter(|l| l.contains(" @ helper ")).collect();
    assert!(
        helpers.len() == 1
            && helpers[0].starts_with("1 @ helper ")
            && text.contains("optimized::progress_reporter"),
        "{text}"
    );
    assert_eq!(live_tasks(&optimized.metrics(), "helper"), 1.0);
    let (status, output) = bad.wait();
    assert!(status.success());
    assert!(
        output.contains("LEAK:") && output.contains("helper tasks outlived their work"),
        "{output}"
    );
}
