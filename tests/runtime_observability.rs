//! The runtime's side on `/metrics` (tokio's runtime metrics, tokio-metrics' task monitors) and
//! `--console` (tokio-console's protocol), from real worker processes.

mod support;

use std::collections::BTreeMap;
use std::net::TcpListener;
use std::process::Command;
use std::time::Duration;

use support::{Worker, wait_for, worker_binary};

/// Every series of `name` in an exposition: its labels (as written) and value.
fn series(exposition: &str, name: &str) -> Vec<(String, f64)> {
    exposition
        .lines()
        .filter(|line| !line.starts_with('#'))
        .filter_map(|line| {
            let rest = line.strip_prefix(name)?;
            let (labels, value) = match rest.strip_prefix('{') {
                Some(rest) => {
                    let end = rest.find('}')?;
                    (&rest[..end], rest[end + 1..].trim())
                }
                None if rest.starts_with(' ') => ("", rest.trim()),
                None => return None,
            };
            Some((labels.to_owned(), value.parse().ok()?))
        })
        .collect()
}

/// The value of `label` in a series' label text.
fn label<'a>(labels: &'a str, label: &str) -> Option<&'a str> {
    let start = labels.find(&format!("{label}=\""))? + label.len() + 2;
    let len = labels[start..].find('"')?;
    Some(&labels[start..start + len])
}

/// `name`'s value per `thread` label.
fn per_thread(exposition: &str, name: &str) -> BTreeMap<String, f64> {
    series(exposition, name)
        .into_iter()
        .map(|(labels, value)| {
            let thread = label(&labels, "thread").unwrap_or_else(|| panic!("{name}{{{labels}}}"));
            (thread.to_owned(), value)
        })
        .collect()
}

const RUNTIME_METRICS: [&str; 16] = [
    "worker_runtime_thread_busy_seconds_total",
    "worker_runtime_thread_busy_ratio",
    "worker_runtime_thread_polls_total",
    "worker_runtime_thread_mean_poll_seconds",
    "worker_runtime_thread_parks_total",
    "worker_runtime_thread_steals_total",
    "worker_runtime_thread_local_queue_depth",
    "worker_runtime_poll_time_seconds_bucket",
    "worker_runtime_poll_time_seconds_count",
    "worker_runtime_long_polls_total",
    "worker_runtime_budget_forced_yields_total",
    "worker_runtime_blocking_threads",
    "worker_runtime_idle_blocking_threads",
    "worker_runtime_blocking_queue_depth",
    "worker_runtime_spawned_tasks_total",
    "worker_runtime_remote_schedules_total",
];

const TASK_METRICS: [&str; 15] = [
    "worker_task_instrumented_total",
    "worker_task_dropped_total",
    "worker_task_first_polls_total",
    "worker_task_first_poll_delay_seconds_total",
    "worker_task_scheduled_total",
    "worker_task_scheduled_seconds_total",
    "worker_task_mean_scheduled_seconds",
    "worker_task_long_delays_total",
    "worker_task_long_delay_seconds_total",
    "worker_task_polls_total",
    "worker_task_poll_seconds_total",
    "worker_task_mean_poll_seconds",
    "worker_task_slow_polls_total",
    "worker_task_slow_poll_seconds_total",
    "worker_task_idle_seconds_total",
];

#[test]
fn runtime_metrics_are_on_metrics_with_sane_values() {
    for kind in ["bad", "optimized"] {
        let worker = Worker::start(kind, &["--duration", "120s", "--rate", "500"]);
        let first = worker.metrics();
        // Let the workload run a while, with at least a second between the scrapes so that
        // the busy ratio's window moves.
        std::thread::sleep(Duration::from_millis(1500));
        let second = worker.metrics();

        for name in RUNTIME_METRICS.iter().chain(&TASK_METRICS) {
            let found = series(&second, name);
            assert!(!found.is_empty(), "worker-{kind}: no {name} in\n{second}");
            for (labels, value) in &found {
                assert_eq!(
                    label(labels, "worker_type"),
                    Some(kind),
                    "{name}{{{labels}}}"
                );
                assert!(
                    value.is_finite() && *value >= 0.0,
                    "{name}{{{labels}}} {value}"
                );
            }
            let family = name.trim_end_matches("_bucket").trim_end_matches("_count");
            assert!(
                second.contains(&format!("# HELP {family} ")),
                "worker-{kind}: {family} has no help"
            );
        }
        for name in TASK_METRICS {
            let kinds: Vec<_> = series(&second, name)
                .iter()
                .filter_map(|(labels, _)| label(labels, "kind").map(str::to_owned))
                .collect();
            assert_eq!(kinds, ["helper", "http", "observer", "worker"], "{name}");
        }

        // One series per runtime thread, polls growing, busy ratio a ratio.
        let threads = support::metric_value(&second, "worker_runtime_workers")
            .expect("worker_runtime_workers");
        let (polls_before, polls) = (
            per_thread(&first, "worker_runtime_thread_polls_total"),
            per_thread(&second, "worker_runtime_thread_polls_total"),
        );
        assert_eq!(polls.len() as f64, threads, "{polls:?}");
        let grown: f64 = polls.values().sum::<f64>() - polls_before.values().sum::<f64>();
        assert!(
            grown > 0.0,
            "worker-{kind}: polls did not grow: {polls_before:?} -> {polls:?}"
        );
        for (thread, ratio) in per_thread(&second, "worker_runtime_thread_busy_ratio") {
            assert!(
                (0.0..=1.0).contains(&ratio),
                "thread {thread}: busy ratio {ratio}"
            );
        }

        // The poll-time histogram: buckets cumulative and monotone, +Inf equal to the count,
        // long polls a part of it.
        let long = per_thread(&second, "worker_runtime_long_polls_total");
        for (thread, count) in per_thread(&second, "worker_runtime_poll_time_seconds_count") {
            let buckets: Vec<(f64, f64)> =
                series(&second, "worker_runtime_poll_time_seconds_bucket")
                    .into_iter()
                    .filter(|(labels, _)| label(labels, "thread") == Some(thread.as_str()))
                    .map(|(labels, value)| {
                        let le = label(&labels, "le").expect("le");
                        let le = if le == "+Inf" {
                            f64::INFINITY
                        } else {
                            le.parse().expect("le")
                        };
                        (le, value)
                    })
                    .collect();
            assert!(buckets.len() >= 10, "thread {thread}: {buckets:?}");
            for pair in buckets.windows(2) {
                assert!(pair[0].0 < pair[1].0, "bounds not increasing: {pair:?}");
                assert!(pair[0].1 <= pair[1].1, "counts not monotone: {pair:?}");
            }
            let (last_le, last) = buckets[buckets.len() - 1];
            assert_eq!(last_le, f64::INFINITY);
            assert_eq!(last, count);
            assert!(count > 0.0, "thread {thread} polled nothing");
            assert!(
                long[&thread] <= count,
                "thread {thread}: {} long of {count}",
                long[&thread]
            );
        }
        // Most polls are quick: a worker that has run a second has many under a millisecond.
        let quick: f64 = series(&second, "worker_runtime_poll_time_seconds_bucket")
            .iter()
            .filter(|(labels, _)| {
                label(labels, "le")
                    .and_then(|le| le.parse::<f64>().ok())
                    .is_some_and(|le| le < 1e-3)
            })
            .map(|(_, value)| *value)
            .fold(0.0, f64::max);
        assert!(quick > 0.0, "worker-{kind}: no poll under 1 ms");
        worker.terminate();
    }
}

/// The address the worker logged for tokio-console.
fn console_address(worker: &Worker) -> std::net::SocketAddr {
    wait_for(
        "the tokio-console address in the log",
        Duration::from_secs(10),
        || {
            let log = worker.log();
            let rest = &log[log.find("tokio-console: listening on ")? + 28..];
            rest[..rest.find(';')?].parse().ok()
        },
    )
}

/// The line of src/bad.rs that spawns the audit helpers (lesson 1's leak): tokio-console names
/// tasks by their spawn location, which `#[track_caller]` carries through the lab's spawn
/// functions to this line.
fn audit_helper_spawn_line() -> u32 {
    let source = std::fs::read_to_string(support::repo_root().join("src/bad.rs")).unwrap();
    let index = source
        .lines()
        .position(|line| line.contains("pool::spawn_helper(audit_on_completion("))
        .expect("src/bad.rs spawns audit_on_completion with pool::spawn_helper");
    index as u32 + 1
}

/// `observer`'s series of `name`, summed.
fn observer_value(exposition: &str, name: &str, observer: &str) -> f64 {
    series(exposition, name)
        .iter()
        .filter(|(labels, _)| label(labels, "observer") == Some(observer))
        .map(|(_, value)| value)
        .sum()
}

#[test]
fn console_serves_tokio_console_protocol_with_the_workers_tasks() {
    use console_api::instrument::InstrumentRequest;
    use console_api::instrument::instrument_client::InstrumentClient;

    let helper_line = audit_helper_spawn_line();
    let worker = Worker::start(
        "bad",
        &[
            "--duration",
            "1h",
            "--console",
            "--console-addr",
            "127.0.0.1:0",
        ],
    );
    let addr = console_address(&worker);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    // What tokio-console reads: the tasks it lists (with their spawn locations) and the
    // statistics that follow them (polls, busy time), update after update (one a second).
    let (tasks, polled_helpers) = rt.block_on(async {
        let mut client = InstrumentClient::connect(format!("http://{addr}"))
            .await
            .unwrap_or_else(|e| panic!("cannot connect to tokio-console's port {addr}: {e}"));
        let mut updates = client
            .watch_updates(InstrumentRequest {})
            .await
            .expect("watch_updates")
            .into_inner();
        let mut tasks = Vec::new();
        let mut helpers = std::collections::HashSet::new();
        let mut polled_helpers = std::collections::HashSet::new();
        // A bound on updates, not on time: a loaded machine only makes each one slower.
        for _ in 0..120 {
            let update = tokio::time::timeout(Duration::from_secs(60), updates.message())
                .await
                .expect("an update within 60 s")
                .expect("the stream stays open")
                .expect("an update");
            let Some(task_update) = update.task_update else {
                continue;
            };
            for task in task_update.new_tasks {
                let location = task.location.as_ref();
                let is_helper = location
                    .and_then(|l| l.file.as_deref())
                    .is_some_and(|f| f.ends_with("src/bad.rs"))
                    && location.and_then(|l| l.line) == Some(helper_line);
                if let (true, Some(id)) = (is_helper, &task.id) {
                    helpers.insert(id.id);
                }
                tasks.push(task);
            }
            polled_helpers.extend(
                task_update
                    .stats_update
                    .iter()
                    .filter(|(id, stats)| {
                        helpers.contains(*id)
                            && stats.poll_stats.as_ref().is_some_and(|p| p.polls > 0)
                    })
                    .map(|(id, _)| *id),
            );
            if polled_helpers.len() >= 3 {
                break;
            }
        }
        (tasks, polled_helpers.len())
    });
    // The audit helpers, named by their spawn site in src/bad.rs, with their polls counted:
    // what a learner looks for in tokio-console's task list.
    assert!(
        polled_helpers >= 3,
        "tokio-console saw {} tasks, {polled_helpers} polled audit helpers spawned at src/bad.rs:{helper_line}: {:?}",
        tasks.len(),
        tasks.iter().map(|t| &t.location).collect::<Vec<_>>()
    );
    // And the pool's worker tasks, spawned elsewhere in src/.
    assert!(
        tasks.iter().any(|t| t
            .location
            .as_ref()
            .and_then(|l| l.file.as_deref())
            .is_some_and(|f| f.contains("src/") && !f.ends_with("src/bad.rs"))),
        "no task spawned outside src/bad.rs"
    );

    // The console is an observer: its memory (two poll-time histograms per task, kept five
    // seconds after the task ends) is counted for it, not in the lesson's memory.
    let metrics = wait_for(
        "the console's memory in worker_observer_memory_bytes",
        Duration::from_secs(120),
        || {
            let metrics = worker.metrics();
            (observer_value(&metrics, "worker_observer_memory_bytes", "console")
                >= (8 << 20) as f64)
                .then_some(metrics)
        },
    );
    let console = observer_value(&metrics, "worker_observer_memory_bytes", "console");
    let lesson = series(&metrics, "worker_allocated_memory_bytes")[0].1;
    assert!(
        lesson * 2.0 < console,
        "the console's memory ({console} bytes) shows in the lesson's ({lesson} bytes)"
    );
    for counter in [
        "worker_observer_allocations_total",
        "worker_observer_cpu_seconds_total",
    ] {
        assert!(
            observer_value(&metrics, counter, "console") > 0.0,
            "{counter}{{observer=\"console\"}} is 0"
        );
    }

    // Without --console there is no console port, and no console cost.
    let plain = Worker::start("optimized", &["--duration", "1h"]);
    assert!(!plain.log().contains("tokio-console"), "{}", plain.log());
    let metrics = plain.metrics();
    assert_eq!(
        observer_value(&metrics, "worker_observer_allocations_total", "console"),
        0.0
    );
    plain.terminate();
    worker.terminate();
}

/// Allocation calls of the lesson and of the console, and tasks processed, in one exposition.
fn allocation_reading(exposition: &str) -> (f64, f64, f64) {
    let sum = |name| series(exposition, name).iter().map(|(_, v)| v).sum::<f64>();
    (
        sum("worker_allocations_total"),
        observer_value(exposition, "worker_observer_allocations_total", "console"),
        sum("worker_tasks_processed_total"),
    )
}

#[test]
fn the_consoles_allocations_are_not_the_lessons() {
    // The optimized worker's lesson is that it allocates nothing per task; the console makes
    // dozens of allocations per task (its statistics, its events), which before they were kept
    // apart showed as 62 per task in the lesson's own counter.
    let worker = Worker::start("optimized", &["--console", "--console-addr", "127.0.0.1:0"]);
    let reading = |at_least: f64| {
        wait_for(
            &format!("{at_least} tasks processed"),
            Duration::from_secs(180),
            || {
                let reading = allocation_reading(&worker.metrics());
                (reading.2 >= at_least).then_some(reading)
            },
        )
    };
    // From the 50th task, past the start-up's allocations, over 200 tasks.
    let first = reading(50.0);
    let second = reading(first.2 + 200.0);
    let tasks = second.2 - first.2;
    let lesson = (second.0 - first.0) / tasks;
    let console = (second.1 - first.1) / tasks;
    assert!(
        lesson < 16.0,
        "the optimized worker made {lesson:.1} allocations per task with --console"
    );
    assert!(
        console > 16.0,
        "the console made {console:.1} allocations per task"
    );
    worker.terminate();
}

/// Runs a worker binary expecting it to exit with `code` before serving; returns stderr.
fn exits(kind: &str, args: &[&str], env: &[(&str, &str)], code: i32) -> String {
    let out = Command::new(worker_binary(kind))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the worker binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(code),
        "{kind} {args:?} {env:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn bad_console_flags_are_refused_with_what_is_allowed() {
    /// Flags, environment, what the message must say.
    type Case<'a> = (&'a [&'a str], &'a [(&'a str, &'a str)], &'a [&'a str]);
    let cases: &[Case] = &[
        (
            &["--console", "--console-addr", "localhost:6669"],
            &[],
            &["--console-addr", "localhost:6669", "127.0.0.1:6669"],
        ),
        (
            &["--console", "--console-addr", "127.0.0.1:70000"],
            &[],
            &["--console-addr", "127.0.0.1:70000"],
        ),
        (&["--console-addr", "127.0.0.1:7000"], &[], &["--console"]),
        (&[], &[("LAB_CONSOLE", "maybe")], &["maybe", "--console"]),
        (
            &[
                "--console",
                "--listen",
                "127.0.0.1:7001",
                "--console-addr",
                "127.0.0.1:7001",
            ],
            &[],
            &["--console-addr 127.0.0.1:7001", "--listen"],
        ),
    ];
    for (args, env, expected) in cases {
        let stderr = exits("bad", args, env, 2);
        for fragment in *expected {
            assert!(
                stderr.contains(fragment),
                "{args:?} {env:?}: {fragment:?} not in {stderr}"
            );
        }
    }
    // A taken port: a clear error at start, not a panic in a background thread.
    let taken = TcpListener::bind("127.0.0.1:0").unwrap();
    let port = taken.local_addr().unwrap().to_string();
    let stderr = exits(
        "optimized",
        &[
            "--listen",
            "127.0.0.1:0",
            "--console",
            "--console-addr",
            &port,
        ],
        &[],
        1,
    );
    assert!(
        stderr.contains(&format!("cannot listen for tokio-console on {port}"))
            && stderr.contains("--console-addr"),
        "{stderr}"
    );
}

#[test]
fn lab_console_env_turns_the_console_on() {
    let worker = Worker::start("optimized", &["--duration", "120s"]);
    assert!(!worker.log().contains("tokio-console"));
    worker.terminate();
    // LAB_CONSOLE takes the usual spellings of yes.
    let mut command = Command::new(worker_binary("optimized"));
    command
        .args([
            "--listen",
            "127.0.0.1:0",
            "--duration",
            "120s",
            "--console-addr",
            "127.0.0.1:0",
        ])
        .env("LAB_CONSOLE", "yes");
    let process = profiling_lab::lab::procs::WorkerProcess::spawn_command(
        command,
        profiling_lab::WorkerKind::Optimized,
        None,
    )
    .unwrap_or_else(|e| panic!("{e}"));
    wait_for("the console's log line", Duration::from_secs(10), || {
        process
            .log()
            .contains("tokio-console: listening on")
            .then_some(())
    });
    process.terminate().unwrap();
}
