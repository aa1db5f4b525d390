//! The profiles, read by the real `go tool pprof` exactly as the guide's commands read them.

mod support;

use std::time::Duration;

use support::{Worker, go_pprof, require_go, wait_for};

/// Enough load for CPU samples and heap samples in a couple of seconds, even in a debug build.
const LOADED: &[&str] = &["--rate", "1000", "--data-size", "1000", "--tasks", "500"];

fn warmed_up(kind: &'static str) -> Worker {
    let worker = Worker::start(kind, LOADED);
    wait_for("a thousand tasks", Duration::from_secs(30), || {
        (worker.metric("worker_tasks_processed_total") >= 1000.0).then_some(())
    });
    worker
}

#[test]
fn go_tool_pprof_reads_cpu_heap_allocs_and_goroutine_profiles() {
    let Some(go) = require_go() else { return };
    for kind in ["bad", "optimized"] {
        let worker = warmed_up(kind);
        let cpu = go_pprof(
            &go,
            &["-top", &worker.url("/debug/pprof/profile?seconds=2")],
        );
        assert!(cpu.contains("Type: cpu"), "worker-{kind} cpu:\n{cpu}");
        let heap = go_pprof(&go, &["-top", &worker.url("/debug/pprof/heap")]);
        assert!(
            heap.contains("Type: inuse_space"),
            "worker-{kind} heap:\n{heap}"
        );
        let allocs = go_pprof(&go, &["-top", &worker.url("/debug/pprof/allocs")]);
        assert!(
            allocs.contains("Type: alloc_space"),
            "worker-{kind} allocs:\n{allocs}"
        );
        let tasks = go_pprof(&go, &["-top", &worker.url("/debug/pprof/goroutine")]);
        assert!(
            tasks.contains("Type: goroutine"),
            "worker-{kind} goroutine:\n{tasks}"
        );
        assert!(
            tasks.contains("profiling_lab::pool::work"),
            "worker-{kind} goroutine:\n{tasks}"
        );

        if kind == "bad" {
            // Each profile points at the bad code that causes what the dashboard shows.
            assert!(
                cpu.contains("profiling_lab::bad::"),
                "bad cpu names no bad code:\n{cpu}"
            );
            assert!(
                allocs.contains("profiling_lab::bad::"),
                "bad allocs names no bad code:\n{allocs}"
            );
            assert!(
                tasks.contains("profiling_lab::bad::audit_on_completion"),
                "bad goroutine profile does not show the leaked helpers:\n{tasks}"
            );
        } else {
            assert!(
                !tasks.contains("audit_on_completion"),
                "optimized leaks?\n{tasks}"
            );
        }
    }
}

#[test]
fn heap_profiles_name_the_caller_not_the_allocator() {
    let Some(go) = require_go() else { return };
    let worker = warmed_up("bad");
    let allocs = go_pprof(&go, &["-top", &worker.url("/debug/pprof/allocs")]);
    // Rows of `-top` with flat bytes, largest first.
    let flat: Vec<&str> = allocs
        .lines()
        .skip_while(|l| !l.trim_start().starts_with("flat"))
        .skip(1)
        .filter(|l| !l.trim_start().starts_with('0'))
        .collect();
    assert!(!flat.is_empty(), "no rows:\n{allocs}");
    for row in &flat {
        for frame in [
            "__rust",
            "_rjem_",
            "prof_",
            "alloc::",
            "hashbrown::",
            "CountingAlloc",
        ] {
            assert!(
                !row.contains(frame),
                "allocator or std frame with flat bytes: {row}"
            );
        }
    }
    assert!(
        flat[0].contains("profiling_lab::bad::"),
        "top allocator is not bad code:\n{allocs}"
    );
}

#[test]
fn task_profiles_as_text_group_or_list_every_task() {
    let worker = warmed_up("bad");
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
    assert!(total > 10, "{total} tasks");
    assert!(grouped.contains("profiling_lab::bad::audit_on_completion"));
    assert!(
        grouped.contains("created by src/bad.rs:"),
        "spawn site missing:\n{grouped}"
    );

    let every = worker.get("/debug/pprof/goroutine?debug=2").text();
    let listed = every
        .lines()
        .filter(|l| l.starts_with("goroutine ") && l.ends_with("]:"))
        .count();
    // Tasks come and go between the two profiles; the leaked ones stay.
    assert!(
        listed * 2 > total,
        "debug=2 listed {listed} tasks, debug=1 counted {total}"
    );
}

#[test]
fn flamegraph_and_index_page() {
    let worker = warmed_up("bad");
    let svg = worker.get("/debug/pprof/flamegraph?seconds=2");
    assert_eq!(svg.status, 200, "{}", svg.text());
    assert_eq!(svg.content_type, "image/svg+xml");
    let svg = svg.text();
    assert!(
        svg.contains("<svg") && svg.contains("profiling_lab"),
        "not a flamegraph"
    );

    let index = worker.get("/debug/pprof/");
    assert_eq!(index.status, 200);
    assert!(index.content_type.starts_with("text/html"));
    let index = index.text();
    for link in [
        "allocs",
        "flamegraph",
        "goroutine",
        "goroutine?debug=2",
        "heap",
        "profile",
    ] {
        assert!(
            index.contains(&format!("href=\"{link}")),
            "index lacks {link}"
        );
    }
    assert_eq!(
        worker.get("/debug/pprof").status,
        200,
        "redirects to the index"
    );
}

#[test]
fn one_cpu_profile_at_a_time() {
    let worker = warmed_up("optimized");
    let url = worker.url("/debug/pprof/profile?seconds=3");
    let first = std::thread::spawn(move || {
        profiling_lab::client::get(&url, Duration::from_secs(30)).unwrap()
    });
    std::thread::sleep(Duration::from_millis(700));
    let second = worker.get("/debug/pprof/flamegraph?seconds=1");
    assert_eq!(second.status, 409, "{}", second.text());
    assert!(
        second
            .text()
            .contains("busy with a request for /debug/pprof/profile")
    );
    assert_eq!(first.join().unwrap().status, 200);
    // Released once the first finished.
    assert_eq!(worker.get("/debug/pprof/profile?seconds=1").status, 200);
}

#[test]
fn cpuprofile_and_memprofile_are_written_at_exit() {
    let Some(go) = require_go() else { return };
    let dir = std::env::temp_dir().join(format!("lab-profiles-{}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let cpu = dir.join("cpu.pb.gz");
    let mem = dir.join("mem.pb.gz");
    let args = [
        LOADED,
        &[
            "--duration",
            "3s",
            "--cpuprofile",
            cpu.to_str().unwrap(),
            "--memprofile",
            mem.to_str().unwrap(),
        ],
    ]
    .concat();
    let worker = Worker::start("bad", &args);
    // The whole-run profile holds the profiler: an HTTP profile must say so.
    let busy = worker.get("/debug/pprof/profile?seconds=1");
    assert_eq!(busy.status, 409);
    assert!(busy.text().contains("--cpuprofile"), "{}", busy.text());
    let (status, _) = worker.wait();
    assert!(status.success());
    let cpu_top = go_pprof(&go, &["-top", cpu.to_str().unwrap()]);
    assert!(
        cpu_top.contains("Type: cpu") && cpu_top.contains("profiling_lab::bad::"),
        "{cpu_top}"
    );
    let mem_top = go_pprof(&go, &["-top", mem.to_str().unwrap()]);
    assert!(mem_top.contains("Type: inuse_space"), "{mem_top}");
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn workers_exit_promptly_after_task_profiles() {
    // tokio's task dumps, which the task profile once used, could leave a runtime thread hung
    // (tokio-rs/tokio#7478, #8370) and the process deaf to SIGTERM; the registry cannot.
    for kind in ["bad", "optimized"] {
        let worker = warmed_up(kind);
        for _ in 0..5 {
            assert_eq!(worker.get("/debug/pprof/goroutine").status, 200);
            assert_eq!(worker.get("/debug/pprof/goroutine?debug=1").status, 200);
        }
        let stopped = worker.terminate_within(Duration::from_secs(15));
        assert!(!stopped.killed, "worker-{kind} hung after task profiles");
        assert!(
            stopped.status.success(),
            "worker-{kind}: {:?}",
            stopped.status
        );
        assert!(
            stopped.output.contains("terminated (SIGTERM)"),
            "{}",
            stopped.output
        );
    }
}
