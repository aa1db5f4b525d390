//! The workers as a learner meets them: real binaries on loopback ports, observed through
//! `/metrics` and their exit summaries.

mod support;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, ExitStatus, Stdio};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::{Duration, Instant};

use support::{
    Worker, go_pprof, metric_value, require_go, require_promtool, wait_for, worker_binary,
};

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

/// The whole process, not just `handle`: one task in ten is sealed off the runtime (lesson 4),
/// a round starts every 100 tasks (lesson 1a) and `/metrics` is scraped about ten times a
/// second, and still the lesson's own allocation counter (`worker_allocations_total`, every
/// thread) stays flat, while the scrapes' allocations show in the observer's counter instead.
/// Before the seal threads, `spawn_blocking` made about 0.1 allocations per task here; before
/// the run's one reporter, a reporter per round made 6 allocations per round (0.06 per task
/// here).
#[test]
fn optimized_worker_allocates_nothing_per_task_process_wide_with_seals_rounds_and_scrapes() {
    // Short rounds: ten round starts in the thousand tasks measured.
    let optimized = Worker::start(
        "optimized",
        &["--rate", "200", "--data-size", "500", "--tasks", "100"],
    );
    // Warm-up: buffers at their size, the seal threads started, every worker's slot made.
    processed_at_least(&optimized, 200.0);
    let read = |text: &str, name: &str| metric_value(text, name).unwrap();
    let before = optimized.metrics();
    let tasks0 = read(&before, "worker_tasks_processed_total");
    // A count of tasks, scraped all along: a slow machine only takes longer.
    let mut scrapes = 0;
    let after = wait_for("1000 more tasks", PATIENCE, || {
        let text = optimized.metrics();
        scrapes += 1;
        (read(&text, "worker_tasks_processed_total") >= tasks0 + 1000.0).then_some(text)
    });
    let tasks = read(&after, "worker_tasks_processed_total") - tasks0;
    let delta = |name: &str| read(&after, name) - read(&before, name);
    let allocations = delta("worker_allocations_total");
    let per_task = allocations / tasks;
    let observer = |text: &str| {
        text.lines()
            .find(|l| {
                l.starts_with("worker_observer_allocations_total{")
                    && l.contains("observer=\"metrics\"")
            })
            .and_then(|l| l.rsplit(' ').next()?.parse::<f64>().ok())
            .unwrap()
    };
    let scrape_allocations = observer(&after) - observer(&before);
    eprintln!(
        "{tasks} tasks ({} sealed), {scrapes} scrapes: {allocations} lesson allocations \
         ({per_task:.4} per task), {scrape_allocations} in the metrics observer",
        (tasks / 10.0).floor()
    );
    // None at all in steady state. About 100 sealed tasks and 10 rounds: one allocation per
    // seal would make 100, one per round 10 (a reporter per round, 60), one per scrape about
    // as many as the scrapes.
    assert_eq!(
        allocations, 0.0,
        "worker-optimized made {allocations} allocations in {tasks} tasks ({per_task:.4} per \
         task) with seals, rounds and scrapes"
    );
    assert!(
        scrape_allocations >= scrapes as f64,
        "the scrapes' own allocations are not in the observer's counter: {scrape_allocations}"
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
    let bad_addr = bad.addr;
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
    // The command to see the leak, with the worker's real address.
    assert!(
        bad_out.contains(&format!(
            "go tool pprof -top http://{bad_addr}/debug/pprof/goroutine"
        )) && !bad_out.contains("HOST"),
        "{bad_out}"
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
    let worker = Worker::start("optimized", &["--duration", "48h"]);
    // The duration as it was typed, not humantime's "2days".
    assert!(worker.log().contains("running for 48h"), "{}", worker.log());
    processed_at_least(&worker, 10.0);
    let (status, out) = worker.terminate();
    assert!(status.success(), "exit status {status:?}");
    assert!(out.contains("terminated (SIGTERM)"), "{out}");
}

// --- Stopping: profile files, signals --------------------------------------------------------

/// A worker process this test signals itself, with everything it prints kept.
struct Proc {
    child: Child,
    addr: SocketAddr,
    stderr: Arc<Mutex<String>>,
    readers: Vec<JoinHandle<()>>,
    stdout: Arc<Mutex<String>>,
}

/// How a [`Proc`] ended.
struct Ended {
    status: ExitStatus,
    stdout: String,
    stderr: String,
}

impl Proc {
    /// Starts `worker-<kind>` with `args` on a free loopback port and waits until it serves.
    fn start(kind: &str, args: &[&str]) -> Proc {
        let mut child = Command::new(worker_binary(kind))
            .args(["--listen", "127.0.0.1:0"])
            .args(args)
            .env("RUST_LOG", "info")
            .stdin(Stdio::null())
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let stderr = Arc::new(Mutex::new(String::new()));
        let stdout = Arc::new(Mutex::new(String::new()));
        let copy = |from: Box<dyn Read + Send>, to: &Arc<Mutex<String>>| {
            let to = Arc::clone(to);
            std::thread::spawn(move || {
                for line in BufReader::new(from).lines().map_while(Result::ok) {
                    let mut text = to.lock().unwrap();
                    text.push_str(&line);
                    text.push('\n');
                }
            })
        };
        let readers = vec![
            copy(Box::new(child.stderr.take().unwrap()), &stderr),
            copy(Box::new(child.stdout.take().unwrap()), &stdout),
        ];
        let mut proc = Proc {
            child,
            addr: "127.0.0.1:0".parse().unwrap(),
            stderr,
            readers,
            stdout,
        };
        proc.addr = wait_for("the worker to serve", Duration::from_secs(60), || {
            let log = proc.log();
            let rest = &log[log.find("serving http://")? + "serving http://".len()..];
            rest[..rest.find('/')?].parse().ok()
        });
        wait_for("/healthz", Duration::from_secs(30), || {
            profiling_lab::client::get(&proc.url("/healthz"), Duration::from_secs(5))
                .ok()
                .filter(|r| r.status == 200)
        });
        proc
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn log(&self) -> String {
        self.stderr.lock().unwrap().clone()
    }

    fn signal(&self, signal: i32) {
        // SAFETY: kill(2) on our own child, which has not been waited for.
        assert_eq!(
            unsafe { libc::kill(self.child.id() as libc::pid_t, signal) },
            0
        );
    }

    /// Waits until the log holds `text`.
    fn wait_for_log(&self, text: &str) {
        wait_for(text, Duration::from_secs(60), || {
            self.log().contains(text).then_some(())
        });
    }

    /// Waits (at most a minute, then kills it and fails) for the process to exit.
    fn ended(mut self) -> Ended {
        let deadline = Instant::now() + Duration::from_secs(60);
        let status = loop {
            if let Some(status) = self.child.try_wait().unwrap() {
                break status;
            }
            if Instant::now() > deadline {
                let _ = self.child.kill();
                panic!("the worker did not exit within a minute:\n{}", self.log());
            }
            std::thread::sleep(Duration::from_millis(50));
        };
        for reader in self.readers.drain(..) {
            reader.join().unwrap();
        }
        Ended {
            status,
            stdout: self.stdout.lock().unwrap().clone(),
            stderr: self.log(),
        }
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// An empty directory of this test's own.
fn scratch_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-workers-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// True when `bytes` is a whole gzip stream holding something (a pprof profile is gzipped
/// protobuf; a cut one fails to decompress).
fn whole_gzip(bytes: &[u8]) -> bool {
    let mut inflated = Vec::new();
    bytes.len() > 2
        && bytes[..2] == [0x1f, 0x8b]
        && flate2::read::GzDecoder::new(bytes)
            .read_to_end(&mut inflated)
            .is_ok()
        && !inflated.is_empty()
}

fn text(path: &Path) -> &str {
    path.to_str().unwrap()
}

#[test]
fn a_profile_that_cannot_be_written_costs_neither_the_other_nor_the_summary() {
    let dir = scratch_dir("independent");
    let gone = dir.join("gone");
    std::fs::create_dir(&gone).unwrap();
    let cpu = gone.join("cpu.pb.gz");
    let mem = dir.join("mem.pb.gz");
    let worker = Proc::start(
        "bad",
        &[
            BUSY,
            &[
                "--duration",
                "1h",
                "--cpuprofile",
                text(&cpu),
                "--memprofile",
                text(&mem),
            ],
        ]
        .concat(),
    );
    std::fs::remove_dir_all(&gone).unwrap();
    worker.signal(libc::SIGTERM);
    let ended = worker.ended();
    // The failure is reported and sets the status...
    assert_eq!(ended.status.code(), Some(1), "{}", ended.stderr);
    assert!(
        ended.stderr.contains("the CPU profile was not saved") && ended.stderr.contains(text(&cpu)),
        "{}",
        ended.stderr
    );
    // ...but the summary is printed and the heap profile written, whole.
    assert!(
        ended
            .stdout
            .contains("=== worker-bad summary: stopped after")
            && ended.stdout.contains("terminated (SIGTERM)"),
        "{}",
        ended.stdout
    );
    assert!(
        ended.stderr.contains("wrote the heap profile"),
        "{}",
        ended.stderr
    );
    assert!(
        whole_gzip(&std::fs::read(&mem).unwrap()),
        "mem.pb.gz is not a whole profile"
    );
    if let Some(go) = require_go() {
        let top = go_pprof(&go, &["-top", text(&mem)]);
        assert!(top.contains("Type: inuse_space"), "{top}");
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigkill_after_sigterm_leaves_the_old_profiles_or_whole_new_ones() {
    let dir = scratch_dir("sigkill");
    let cpu = dir.join("cpu.pb.gz");
    let mem = dir.join("mem.pb.gz");
    let old = b"an earlier profile ".repeat(500);
    // The kill lands at different points of the shutdown: before, during or after the writes.
    // Any of them must leave each file either as it was or holding a whole new profile.
    let kill_after = [
        Some(Duration::ZERO),
        Some(Duration::from_millis(20)),
        Some(Duration::from_millis(200)),
        None, // once the CPU profile is written, while the heap profile is taken
    ];
    for delay in kill_after {
        std::fs::write(&cpu, &old).unwrap();
        std::fs::write(&mem, &old).unwrap();
        let worker = Proc::start(
            "optimized",
            &[
                BUSY,
                &[
                    "--duration",
                    "1h",
                    "--cpuprofile",
                    text(&cpu),
                    "--memprofile",
                    text(&mem),
                ],
            ]
            .concat(),
        );
        // Started, checked its profile paths, and left the files alone.
        for file in [&cpu, &mem] {
            assert_eq!(
                std::fs::read(file).unwrap(),
                old,
                "{} changed at start",
                file.display()
            );
        }
        worker.signal(libc::SIGTERM);
        match delay {
            Some(delay) => std::thread::sleep(delay),
            None => worker.wait_for_log("wrote the CPU profile"),
        }
        worker.signal(libc::SIGKILL);
        let ended = worker.ended();
        for file in [&cpu, &mem] {
            let now = std::fs::read(file).unwrap();
            assert!(
                now == old || whole_gzip(&now),
                "{} is neither the old file nor a whole profile ({} bytes) after a kill {delay:?} \
                 after SIGTERM:\n{}",
                file.display(),
                now.len(),
                ended.stderr
            );
        }
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_second_signal_stops_at_once_still_printing_the_summary_and_writing_profiles() {
    let dir = scratch_dir("second-signal");
    let cpu = dir.join("cpu.pb.gz");
    let mem = dir.join("mem.pb.gz");
    let worker = Proc::start(
        "bad",
        &[
            BUSY,
            &[
                "--duration",
                "1h",
                "--cpuprofile",
                text(&cpu),
                "--memprofile",
                text(&mem),
            ],
        ]
        .concat(),
    );
    // A client that never finishes its request holds the HTTP server's 5 s grace period.
    let mut slow_client = TcpStream::connect(worker.addr).unwrap();
    slow_client
        .write_all(b"GET /metrics HTTP/1.1\r\nHost: worker\r\n")
        .unwrap();
    worker.signal(libc::SIGINT);
    worker.wait_for_log("stopping: interrupted (Ctrl-C)");
    assert!(
        worker.log().contains("press Ctrl-C again to stop at once"),
        "{}",
        worker.log()
    );
    worker.signal(libc::SIGINT);
    let ended = worker.ended();
    assert!(
        ended.status.success(),
        "{:?}\n{}",
        ended.status,
        ended.stderr
    );
    assert!(
        ended.stderr.contains("Ctrl-C again: stopping at once"),
        "{}",
        ended.stderr
    );
    // It did not wait the grace period out for the slow client.
    assert!(
        !ended.stderr.contains("requests still open"),
        "the second Ctrl-C still waited for open requests:\n{}",
        ended.stderr
    );
    assert!(
        ended.stdout.contains("interrupted (Ctrl-C)"),
        "{}",
        ended.stdout
    );
    for file in [&cpu, &mem] {
        assert!(
            whole_gzip(&std::fs::read(file).unwrap()),
            "{} not written",
            file.display()
        );
    }
    drop(slow_client);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn sigterm_during_an_http_cpu_profile_sends_the_samples_taken_so_far() {
    let worker = Proc::start("bad", &[BUSY, &["--duration", "1h"]].concat());
    let url = worker.url("/debug/pprof/profile?seconds=120");
    let client =
        std::thread::spawn(move || profiling_lab::client::get(&url, Duration::from_secs(110)));
    // Give the request a moment to start sampling; if SIGTERM comes first, the 503 is the
    // right answer too.
    std::thread::sleep(Duration::from_secs(1));
    worker.signal(libc::SIGTERM);
    let response = client
        .join()
        .unwrap()
        .unwrap_or_else(|e| panic!("the profile request got no answer: {e}\n{}", worker.log()));
    match response.status {
        200 => {
            assert!(
                whole_gzip(&response.body),
                "the partial profile is not a whole profile"
            );
            if let Some(go) = require_go() {
                let path = std::env::temp_dir()
                    .join(format!("lab-partial-cpu-{}.pb.gz", std::process::id()));
                std::fs::write(&path, &response.body).unwrap();
                let top = go_pprof(&go, &["-top", text(&path)]);
                assert!(top.contains("Type: cpu"), "{top}");
                std::fs::remove_file(&path).unwrap();
            }
        }
        503 => assert!(
            response.text().contains("the worker is stopping"),
            "{}",
            response.text()
        ),
        other => panic!("status {other}: {}", response.text()),
    }
    let ended = worker.ended();
    assert!(ended.status.success(), "{}", ended.stderr);
}

#[test]
fn a_third_signal_exits_without_leaving_a_half_written_profile() {
    let dir = scratch_dir("third-signal");
    let cpu = dir.join("cpu.pb.gz");
    let mem = dir.join("mem.pb.gz");
    let old = b"an earlier profile ".repeat(500);
    std::fs::write(&cpu, &old).unwrap();
    std::fs::write(&mem, &old).unwrap();
    let worker = Proc::start(
        "bad",
        &[
            BUSY,
            &[
                "--duration",
                "1h",
                "--cpuprofile",
                text(&cpu),
                "--memprofile",
                text(&mem),
            ],
        ]
        .concat(),
    );
    worker.signal(libc::SIGINT);
    worker.wait_for_log("stopping: interrupted (Ctrl-C)");
    worker.signal(libc::SIGINT);
    worker.wait_for_log("Ctrl-C again: stopping at once");
    worker.signal(libc::SIGINT);
    let ended = worker.ended();
    // Exited on the third Ctrl-C (130), or had finished before it arrived (0).
    match ended.status.code() {
        Some(130) => assert!(
            ended.stderr.contains("Ctrl-C a third time: exiting now"),
            "{}",
            ended.stderr
        ),
        Some(0) => {}
        other => panic!("exit status {other:?}:\n{}", ended.stderr),
    }
    for file in [&cpu, &mem] {
        let now = std::fs::read(file).unwrap();
        assert!(
            now == old || whole_gzip(&now),
            "{} is neither the old file nor a whole profile ({} bytes)",
            file.display(),
            now.len()
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_run_of_max_tasks_says_it_ended_by_itself() {
    let worker = Worker::start("optimized", &["--max-tasks", "50", "--duration", "10m"]);
    let (status, out) = worker.wait();
    assert!(status.success(), "{out}");
    assert!(out.contains("(--max-tasks handled)"), "{out}");
    assert!(!out.contains("--duration elapsed"), "{out}");
}
