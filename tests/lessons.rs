//! Lessons 4-6 as a learner meets them: each problem switched on alone in `worker-bad`
//! (`--problems`), seen in its metric within seconds and named in its profile by the real
//! `go tool pprof`, and absent from `worker-optimized`. Assertions are directions with wide
//! margins, never speeds: these run on a loaded 2-core machine in a debug build.

mod support;

use std::process::Command;
use std::time::{Duration, Instant};

use profiling_lab::client::histogram_buckets;
use support::{Worker, metric_value, require_go, wait_for, worker_binary};

/// `go tool pprof ARGS` with a fetch timeout for a loaded machine: symbolizing a debug build
/// there can take longer than pprof's default minute.
fn go_pprof(go: &std::path::PathBuf, args: &[&str]) -> String {
    let args = [&["-timeout", "300"], args].concat();
    support::go_pprof(go, &args)
}

/// The sum and count of histogram `name` in an exposition.
fn sum_count(text: &str, name: &str) -> (f64, f64) {
    (
        metric_value(text, &format!("{name}_sum")).unwrap_or_else(|| panic!("no {name}_sum")),
        metric_value(text, &format!("{name}_count")).unwrap_or_else(|| panic!("no {name}_count")),
    )
}

/// Mean of histogram `name` between two expositions.
fn mean_between(before: &str, after: &str, name: &str) -> f64 {
    let (s0, c0) = sum_count(before, name);
    let (s1, c1) = sum_count(after, name);
    assert!(c1 > c0, "no {name} observations in the interval");
    (s1 - s0) / (c1 - c0)
}

// ---- Lesson 4: blocking the runtime ---------------------------------------------------------

/// The demo's payload size at a light rate: two seals a second, each several times longer than
/// a task, so neither worker is ever short of threads.
const BLOCKING: &[&str] = &[
    "--problems",
    "blocking",
    "--rate",
    "20",
    "--data-size",
    "10000",
];

#[test]
fn blocking_keeps_the_runtime_threads_busy_in_the_bad_worker_only() {
    let bad = Worker::start("bad", BLOCKING);
    let optimized = Worker::start("optimized", BLOCKING);
    for w in [&bad, &optimized] {
        wait_for("sealed tasks", Duration::from_secs(30), || {
            (w.metric("worker_tasks_processed_total") >= 20.0).then_some(())
        });
    }
    let (bad0, opt0) = (bad.metrics(), optimized.metrics());
    std::thread::sleep(Duration::from_secs(8));
    let (bad1, opt1) = (bad.metrics(), optimized.metrics());
    // Time the runtime threads spent polling tasks, per task: the bad worker seals on them,
    // the optimized one on its seal threads, which this does not count. A loaded machine
    // stretches both alike, so the ratio holds where absolute times do not.
    let busy_per_task = |before: &str, after: &str| {
        let delta = |name| metric_value(after, name).unwrap() - metric_value(before, name).unwrap();
        delta("worker_runtime_busy_seconds_total") / delta("worker_tasks_processed_total")
    };
    let (bad_busy, opt_busy) = (busy_per_task(&bad0, &bad1), busy_per_task(&opt0, &opt1));
    let bad_delay = mean_between(&bad0, &bad1, "worker_task_queue_delay_seconds");
    let opt_delay = mean_between(&opt0, &opt1, "worker_task_queue_delay_seconds");
    eprintln!(
        "runtime busy per task: bad {bad_busy:.6} s, optimized {opt_busy:.6} s; \
         mean queueing delay: bad {bad_delay:.6} s, optimized {opt_delay:.6} s"
    );
    assert!(
        bad_busy > 1.3 * opt_busy,
        "runtime busy time per task: bad {bad_busy:.6} s, optimized {opt_busy:.6} s"
    );
}

#[test]
fn the_cpu_profile_shows_the_seal_on_a_runtime_thread_only_in_the_bad_worker() {
    let Some(go) = require_go() else { return };
    for kind in ["bad", "optimized"] {
        let worker = Worker::start(kind, BLOCKING);
        wait_for("sealed tasks", Duration::from_secs(30), || {
            (worker.metric("worker_tasks_processed_total") >= 20.0).then_some(())
        });
        // `-traces` prints every sampled stack; find those through the seal.
        let traces = go_pprof(
            &go,
            &["-traces", &worker.url("/debug/pprof/profile?seconds=3")],
        );
        let seals: Vec<&str> = traces
            .split("-----------+-------------------------------------------------------")
            .filter(|t| t.contains("profiling_lab::task::seal"))
            .collect();
        assert!(
            !seals.is_empty(),
            "worker-{kind}: no sample in task::seal:\n{traces}"
        );
        // A runtime thread's stacks go through its scheduler loop polling tasks; the optimized
        // worker's seal threads (`seal_threads::serve`) are threads of their own, not
        // `spawn_blocking` tasks, and their stacks have no scheduler frame.
        let on_runtime = seals
            .iter()
            .filter(|t| {
                t.contains("scheduler::multi_thread::worker")
                    && t.contains("profiling_lab::pool::work")
            })
            .count();
        let on_seal_threads = seals
            .iter()
            .filter(|t| {
                !t.contains("scheduler::multi_thread::worker")
                    && t.contains("profiling_lab::seal_threads::serve")
            })
            .count();
        if kind == "bad" {
            assert!(
                on_runtime > 0 && on_seal_threads == 0,
                "worker-bad: seal on runtime {on_runtime}, on seal threads {on_seal_threads}"
            );
        } else {
            assert!(
                on_runtime == 0 && on_seal_threads > 0,
                "worker-optimized: seal on runtime {on_runtime}, on seal threads {on_seal_threads}"
            );
        }
    }
}

// ---- Lesson 5: lock contention --------------------------------------------------------------

/// Four worker tasks on two runtime threads, with tasks arriving often enough that two are
/// often at work at once.
const CONTENDED: &[&str] = &[
    "--problems",
    "contention",
    "--workers",
    "4",
    "--rate",
    "500",
    "--data-size",
    "2000",
];

#[test]
fn contention_shows_as_lock_waits_in_the_bad_worker_only() {
    let bad = Worker::start("bad", CONTENDED);
    let optimized = Worker::start("optimized", CONTENDED);
    let waits = |w: &Worker| w.metric("worker_lock_wait_seconds_count");
    wait_for(
        "contended tally locks, and tasks done in both",
        Duration::from_secs(30),
        || {
            (waits(&bad) >= 20.0 && optimized.metric("worker_tasks_processed_total") > 100.0)
                .then_some(())
        },
    );
    let text = bad.metrics();
    assert!(
        metric_value(&text, "worker_lock_wait_seconds_sum").unwrap() > 0.0,
        "waits counted but no time waited"
    );
    assert!(
        text.contains("worker_lock_wait_seconds_count{lock=\"tally\""),
        "the lock is not named"
    );
    // Each optimized worker takes the tally's lock once, when it stops: never while running.
    assert_eq!(waits(&optimized), 0.0, "optimized worker waited for a lock");
    assert_eq!(
        optimized.metric("worker_lock_acquisitions_total"),
        0.0,
        "optimized worker took the shared lock while running"
    );
}

#[test]
fn go_tool_pprof_reads_the_mutex_profile_naming_the_waiter() {
    let Some(go) = require_go() else { return };
    let bad = Worker::start("bad", CONTENDED);
    wait_for("contended tally locks", Duration::from_secs(30), || {
        (bad.metric("worker_lock_wait_seconds_count") >= 20.0).then_some(())
    });
    let url = bad.url("/debug/pprof/mutex");
    let delay = go_pprof(&go, &["-top", &url]);
    assert!(delay.contains("Type: delay"), "{delay}");
    // The top row (the most delay, flat) is the code that waited, not the lock or the
    // profile's own capture.
    let top_row = delay
        .lines()
        .skip_while(|line| !line.trim_start().starts_with("flat"))
        .nth(1)
        .unwrap_or_default();
    assert!(
        top_row.contains("profiling_lab::bad::"),
        "the mutex profile's top row is not the bad code:\n{delay}"
    );
    let contentions = go_pprof(&go, &["-sample_index=contentions", "-top", &url]);
    assert!(contentions.contains("Type: contentions"), "{contentions}");
    // `-list` finds the line that takes the lock.
    let list = go_pprof(&go, &["-list", "bad::Bad.*run_task", &url]);
    assert!(list.contains("ctx.tally.lock()"), "{list}");
    // Go's delta profile: what happened during the next N seconds.
    let delta = go_pprof(&go, &["-seconds", "2", "-top", &url]);
    assert!(
        delta.contains("Type: delay") && delta.contains("Duration: 2"),
        "{delta}"
    );

    let optimized = Worker::start("optimized", CONTENDED);
    wait_for("tasks", Duration::from_secs(30), || {
        (optimized.metric("worker_tasks_processed_total") >= 500.0).then_some(())
    });
    let none = go_pprof(&go, &["-top", &optimized.url("/debug/pprof/mutex")]);
    assert!(
        none.contains("Type: delay") && !none.contains("profiling_lab::"),
        "optimized worker has contention:\n{none}"
    );
}

#[test]
fn the_mutex_endpoint_rejects_bad_parameters() {
    let worker = Worker::start("optimized", &[]);
    for (query, expected) in [
        ("seconds=0", "from 1 to 300"),
        ("seconds=301", "from 1 to 300"),
        ("seconds=soon", "\"soon\""),
        ("debug=1", "allowed: seconds"),
        ("seconds=1&seconds=2", "more than once"),
    ] {
        let response = worker.get(&format!("/debug/pprof/mutex?{query}"));
        assert_eq!(response.status, 400, "{query}");
        let text = response.text();
        assert!(text.contains(expected), "{query}: {text}");
    }
}

// ---- Lesson 6: overload without backpressure ------------------------------------------------

/// Big tasks on two worker tasks, and a burst of 50 times the rate from 2 s to 12 s: far above
/// what a debug build handles, and above what a release build does.
const BURST: &[&str] = &[
    "--problems",
    "backlog",
    "--workers",
    "2",
    "--data-size",
    "50000",
    "--rate",
    "200",
    "--burst",
    "50x:10s/12s",
];

#[test]
fn a_burst_grows_the_bad_workers_queue_while_the_optimized_one_sheds_it_visibly() {
    let bad = Worker::start("bad", BURST);
    let optimized = Worker::start("optimized", BURST);
    let memory = |w: &Worker| w.metric("worker_allocated_memory_bytes");
    let (bad_memory, opt_memory) = (memory(&bad), memory(&optimized));
    let started = Instant::now();
    let mut opt_deepest: f64 = 0.0;
    // The depth and the memory from one scrape: the backlog drains while the test reads.
    let (bad_deepest, bad_memory_deepest) = wait_for(
        "a backlog in the bad worker",
        Duration::from_secs(30),
        || {
            opt_deepest = opt_deepest.max(optimized.metric("worker_tasks_in_queue"));
            let text = bad.metrics();
            let depth = metric_value(&text, "worker_tasks_in_queue").unwrap();
            let memory = metric_value(&text, "worker_allocated_memory_bytes").unwrap();
            (depth >= 20_000.0).then_some((depth, memory))
        },
    );
    eprintln!("bad backlog {bad_deepest} after {:?}", started.elapsed());
    let (bad_text, opt_text) = (bad.metrics(), optimized.metrics());
    let rejected = |t: &str| metric_value(t, "worker_tasks_rejected_total").unwrap();
    assert_eq!(
        rejected(&bad_text),
        0.0,
        "the unbounded queue rejected tasks"
    );
    assert!(
        rejected(&opt_text) > 100.0,
        "optimized shed only {} tasks",
        rejected(&opt_text)
    );
    opt_deepest = opt_deepest.max(metric_value(&opt_text, "worker_tasks_in_queue").unwrap());
    // Two per worker in the queue, plus the one the producer holds while it waits for room,
    // plus one per worker for a task just taken off the queue but not yet counted out of the
    // gauge (a loaded machine can preempt a worker between the two).
    assert!(
        opt_deepest <= 7.0,
        "the bounded queue (2 per worker) held {opt_deepest}"
    );
    // Every queued task holds at least its spec and enqueue time (tens of bytes): a margin
    // of 24 bytes a task over a backlog of 20,000 or more, so the assertion is about the
    // backlog, not the allocator's noise (startup's short-lived allocations move the baseline
    // by about 100 KiB).
    assert!(
        bad_memory_deepest - bad_memory > bad_deepest * 24.0,
        "bad worker's memory did not grow with its backlog of {bad_deepest}: {bad_memory} -> \
         {bad_memory_deepest}"
    );
    assert!(
        memory(&optimized) - opt_memory < 4.0 * 1024.0 * 1024.0,
        "optimized worker's memory grew: {opt_memory} -> {}",
        memory(&optimized)
    );
    let delay = |t: &str| {
        let (sum, count) = sum_count(t, "worker_task_queue_delay_seconds");
        sum / count
    };
    // The optimized worker's delay is bounded by its queue (a few tasks' worth); the bad
    // worker's grows with its backlog.
    assert!(
        delay(&bad_text) > 2.0 * delay(&opt_text),
        "mean queueing delay: bad {}, optimized {}",
        delay(&bad_text),
        delay(&opt_text)
    );
    // The burst is on the producer's own gauge, in both workers alike.
    assert_eq!(
        metric_value(&opt_text, "worker_producer_rate").unwrap(),
        10_000.0
    );
    assert!(!histogram_buckets(&bad_text, "worker_task_latency_seconds").is_empty());
}

// ---- Switching problems ---------------------------------------------------------------------

#[test]
fn problems_show_on_metrics_and_the_optimized_worker_ignores_the_flag() {
    let bad = Worker::start("bad", &["--problems", "blocking,backlog"]);
    let text = bad.metrics();
    for (problem, on) in [
        ("leak", 0.0),
        ("capacity", 0.0),
        ("churn", 0.0),
        ("blocking", 1.0),
        ("contention", 0.0),
        ("backlog", 1.0),
    ] {
        let series = format!("worker_problem_enabled{{problem=\"{problem}\"");
        let line = text
            .lines()
            .find(|l| l.starts_with(&series))
            .unwrap_or_else(|| panic!("no {series}"));
        assert!(line.ends_with(&format!(" {on}")), "{line}");
    }
    let optimized = Worker::start("optimized", &["--problems", "all"]);
    let text = optimized.metrics();
    assert!(
        text.lines()
            .filter(|l| l.starts_with("worker_problem_enabled{"))
            .all(|l| l.ends_with(" 0")),
        "optimized claims a problem"
    );
    let optimized = Worker::start("optimized", &["--problems", "leak"]);
    std::thread::sleep(Duration::from_millis(300));
    assert!(
        optimized
            .log()
            .contains("worker-optimized has every fix and ignores it"),
        "{}",
        optimized.log()
    );
}

#[test]
fn without_leak_the_bad_worker_leaks_no_tasks() {
    let args = [
        "--problems",
        "capacity,churn",
        "--rate",
        "1000",
        "--data-size",
        "500",
        "--tasks",
        "200",
    ];
    let bad = Worker::start("bad", &args);
    wait_for("tasks", Duration::from_secs(30), || {
        (bad.metric("worker_tasks_processed_total") >= 500.0).then_some(())
    });
    let before = bad.metric("worker_active_goroutines");
    std::thread::sleep(Duration::from_secs(2));
    let after = bad.metric("worker_active_goroutines");
    assert!(
        (after - before).abs() <= 3.0,
        "live tasks went {before} -> {after} with leak off"
    );
}

#[test]
fn bad_problems_and_bursts_are_refused_with_what_is_allowed() {
    for (args, env, expected) in [
        (
            &["--problems", "leak,slow"][..],
            &[][..],
            &["--problems", "\"slow\"", "blocking"][..],
        ),
        (&["--problems", ""], &[], &["--problems", "empty list"]),
        (&["--problems", "all,leak"], &[], &["stands alone"]),
        (
            &[],
            &[("LAB_PROBLEMS", "lock")],
            &["\"lock\"", "contention"],
        ),
        (&["--burst", "2"], &[], &["--burst", "lacks its x"]),
        (
            &["--burst", "2x:30s/10s"],
            &[],
            &["--burst", "longer than ON"],
        ),
        (&[], &[("LAB_BURST", "1x")], &["from 2x"]),
        (
            &["--rate", "500000", "--burst", "4x"],
            &[],
            &["2000000 tasks/s", "at most 1000000"],
        ),
    ] {
        for kind in ["bad", "optimized"] {
            let out = Command::new(worker_binary(kind))
                .args(args)
                .envs(env.iter().copied())
                .output()
                .unwrap();
            let stderr = String::from_utf8_lossy(&out.stderr);
            assert_eq!(
                out.status.code(),
                Some(2),
                "{kind} {args:?} {env:?}: {stderr}"
            );
            for fragment in expected {
                assert!(
                    stderr.contains(fragment),
                    "{kind} {args:?}: {fragment:?} not in {stderr}"
                );
            }
        }
    }
}
