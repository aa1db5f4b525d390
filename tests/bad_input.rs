//! Bad input never panics, hangs or is silently ignored: every flag and every query parameter of
//! every endpoint gets a clear error naming what is wrong and what is allowed.

mod support;

use std::process::Command;

use support::{Worker, worker_binary};

/// Runs a worker binary with `args` (and extra environment), expecting it to refuse to start.
fn refuse(kind: &str, args: &[&str], env: &[(&str, &str)]) -> String {
    let out = Command::new(worker_binary(kind))
        .args(args)
        .envs(env.iter().copied())
        .output()
        .expect("the worker binary runs");
    let stderr = String::from_utf8_lossy(&out.stderr).into_owned();
    assert_eq!(
        out.status.code(),
        Some(2),
        "{kind} {args:?} {env:?}: {stderr}"
    );
    assert!(!stderr.contains("panicked"), "{stderr}");
    stderr
}

#[test]
fn every_invalid_flag_value_exits_2_naming_the_flag_and_what_is_allowed() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--tasks", "0"], &["--tasks", "1..="]),
        (&["--tasks", "many"], &["--tasks", "many"]),
        (&["--workers", "0"], &["--workers", "1..=10000"]),
        (&["--workers", "10001"], &["--workers", "1..=10000"]),
        (&["--data-size", "0"], &["--data-size", "1..=1000000"]),
        (&["--duration", "0s"], &["--duration", "at least 1s"]),
        (&["--duration", "soon"], &["--duration", "30s, 10m or 48h"]),
        (&["--duration", "9999days"], &["--duration", "at most"]),
        (&["--rate", "0"], &["--rate", "1..=1000000"]),
        (&["--rate", "-5"], &["--rate", "-5", "1..=1000000"]),
        (&["--seed", "-1"], &["--seed"]),
        (&["--listen", "localhost"], &["--listen", "localhost"]),
        (&["--listen", "127.0.0.1:99999"], &["--listen"]),
        (
            &["--cpuprofile", "/nonexistent-dir/cpu.pb.gz"],
            &["--cpuprofile", "cannot create"],
        ),
        (
            &["--memprofile", "/nonexistent-dir/mem.pb.gz"],
            &["--memprofile", "cannot create"],
        ),
        (&["--threads", "4"], &["--threads", "unexpected argument"]),
    ];
    for kind in ["bad", "optimized"] {
        for (args, expected) in cases {
            let stderr = refuse(kind, args, &[]);
            for fragment in *expected {
                assert!(
                    stderr.contains(fragment),
                    "{kind} {args:?}: {fragment:?} not in {stderr}"
                );
            }
        }
    }
}

#[test]
fn invalid_environment_values_are_reported_like_flags() {
    let stderr = refuse("bad", &[], &[("LAB_WORKERS", "lots")]);
    assert!(
        stderr.contains("--workers") && stderr.contains("lots"),
        "{stderr}"
    );
    let stderr = refuse("optimized", &[], &[("LAB_DURATION", "-1s")]);
    assert!(stderr.contains("--duration"), "{stderr}");
}

#[test]
fn a_taken_port_is_a_clear_error() {
    let first = Worker::start("optimized", &[]);
    let out = Command::new(worker_binary("bad"))
        .args(["--listen", &first.addr.to_string()])
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(
        stderr.contains(&format!("cannot listen on {}", first.addr)) && stderr.contains("--listen"),
        "{stderr}"
    );
}

#[test]
fn help_lists_every_flag_with_its_environment_variable() {
    let out = Command::new(worker_binary("bad"))
        .arg("--help")
        .output()
        .unwrap();
    assert!(out.status.success());
    let help = String::from_utf8_lossy(&out.stdout);
    for (flag, env) in [
        ("--tasks", "LAB_TASKS"),
        ("--workers", "LAB_WORKERS"),
        ("--data-size", "LAB_DATA_SIZE"),
        ("--duration", "LAB_DURATION"),
        ("--rate", "LAB_RATE"),
        ("--seed", "LAB_SEED"),
        ("--listen", "LAB_LISTEN"),
        ("--cpuprofile", ""),
        ("--memprofile", ""),
    ] {
        assert!(
            help.contains(flag) && help.contains(env),
            "{flag} {env} missing:\n{help}"
        );
    }
    assert!(help.contains("Usage: worker-bad"), "{help}");
}

#[test]
fn every_endpoint_rejects_bad_query_parameters_with_a_400_naming_them() {
    let worker = Worker::start("optimized", &["--data-size", "100"]);
    let cases = [
        (
            "/metrics?format=json",
            "unknown query parameter \"format\" for /metrics; allowed: none",
        ),
        (
            "/healthz?verbose=1",
            "unknown query parameter \"verbose\" for /healthz",
        ),
        (
            "/debug/pprof/?x=1",
            "unknown query parameter \"x\" for /debug/pprof/",
        ),
        (
            "/debug/pprof/profile?seconds=0",
            "invalid value \"0\" for query parameter \"seconds\"",
        ),
        ("/debug/pprof/profile?seconds=301", "from 1 to 300"),
        (
            "/debug/pprof/profile?seconds=abc",
            "expected a whole number of seconds from 1 to 300",
        ),
        ("/debug/pprof/profile?seconds=-1", "\"-1\""),
        (
            "/debug/pprof/profile?seconds=1&seconds=2",
            "\"seconds\" given more than once",
        ),
        (
            "/debug/pprof/profile?second=5",
            "unknown query parameter \"second\" for /debug/pprof/profile; allowed: seconds",
        ),
        (
            "/debug/pprof/flamegraph?seconds=0",
            "for query parameter \"seconds\"",
        ),
        (
            "/debug/pprof/flamegraph?hz=99",
            "unknown query parameter \"hz\"",
        ),
        (
            "/debug/pprof/heap?debug=1",
            "unknown query parameter \"debug\" for /debug/pprof/heap",
        ),
        (
            "/debug/pprof/heap?seconds=10",
            "unknown query parameter \"seconds\"",
        ),
        (
            "/debug/pprof/allocs?gc=1",
            "unknown query parameter \"gc\" for /debug/pprof/allocs",
        ),
        (
            "/debug/pprof/goroutine?debug=3",
            "invalid value \"3\" for query parameter \"debug\"",
        ),
        (
            "/debug/pprof/goroutine?debug=x",
            "expected a whole number from 0 to 2",
        ),
        ("/debug/pprof/goroutine?second=1", "allowed: debug, seconds"),
        (
            "/debug/pprof/goroutine?seconds=0",
            "expected a whole number of seconds from 1 to 300",
        ),
        (
            "/debug/pprof/goroutine?seconds=5&debug=1",
            "cannot be combined",
        ),
    ];
    for (path, expected) in cases {
        let response = worker.get(path);
        assert_eq!(response.status, 400, "{path}: {}", response.text());
        assert!(
            response.text().contains(expected),
            "{path}: {:?} not in {}",
            expected,
            response.text()
        );
    }
    let missing = worker.get("/debug/pprof/trace");
    assert_eq!(missing.status, 404);
    assert!(
        missing
            .text()
            .contains("/metrics, /healthz and /debug/pprof/"),
        "{}",
        missing.text()
    );
    // Still healthy after all that.
    assert_eq!(worker.get("/healthz").text(), "ok\n");
}
