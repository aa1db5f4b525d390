//! Bad input never panics, hangs or is silently ignored: every flag and every query parameter of
//! every endpoint gets a clear error naming what is wrong and what is allowed.

mod support;

use std::process::Command;

use support::{Worker, worker_binary};

/// An empty directory of this test's own under the system's temporary directory.
fn scratch_dir(name: &str) -> std::path::PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-bad-input-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

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
    let dir = scratch_dir("flags");
    let dir_path = dir.to_str().unwrap();
    let missing = dir.join("missing/cpu.pb.gz");
    let cases: &[(&[&str], &[&str])] = &[
        (&["--tasks", "0"], &["--tasks", "1..="]),
        (&["--tasks", "many"], &["--tasks", "many", "1..=1000000000"]),
        (&["--tasks", "-1"], &["--tasks", "-1", "1..=1000000000"]),
        (&["--tasks", ""], &["--tasks", "''", "1..=1000000000"]),
        (&["--workers", "0"], &["--workers", "1..=10000"]),
        (&["--workers", "10001"], &["--workers", "1..=10000"]),
        (&["--workers", "-1"], &["--workers", "-1", "1..=10000"]),
        (&["--workers", "abc"], &["--workers", "abc", "1..=10000"]),
        (&["--workers", ""], &["--workers", "''", "1..=10000"]),
        (&["--data-size", "0"], &["--data-size", "1..=1000000"]),
        (
            &["--data-size", "-1"],
            &["--data-size", "-1", "1..=1000000"],
        ),
        (
            &["--data-size", "abc"],
            &["--data-size", "abc", "1..=1000000"],
        ),
        (&["--data-size", ""], &["--data-size", "''", "1..=1000000"]),
        (&["--duration", "0s"], &["--duration", "at least 1s"]),
        (&["--duration", "soon"], &["--duration", "30s, 10m or 48h"]),
        (&["--duration", "9999days"], &["--duration", "at most"]),
        (
            &["--duration", "-5s"],
            &["--duration", "-5s", "cannot be negative", "30s"],
        ),
        (
            &["--duration", " 10s"],
            &["--duration", "' 10s'", "spaces", "30s"],
        ),
        (&["--duration", "10s "], &["--duration", "spaces"]),
        (&["--rate", "0"], &["--rate", "1..=1000000"]),
        (&["--rate", "-5"], &["--rate", "-5", "1..=1000000"]),
        (
            &["--seed", "-1"],
            &["--seed", "-1", "0..=18446744073709551615"],
        ),
        (
            &["--listen", "localhost"],
            &["--listen", "localhost", "IP:PORT"],
        ),
        (
            &["--listen", "localhost:9090"],
            &["--listen", "localhost:9090", "host names", "127.0.0.1:9090"],
        ),
        (
            &["--listen", "127.0.0.1:99999"],
            &["--listen", "99999", "0..=65535"],
        ),
        (
            &["--cpuprofile", missing.to_str().unwrap()],
            &["--cpuprofile", "does not exist"],
        ),
        (
            &["--memprofile", "/nonexistent-dir/mem.pb.gz"],
            &["--memprofile", "/nonexistent-dir", "does not exist"],
        ),
        // Looks like a regular file, but nothing can be created or renamed in /proc.
        (
            &["--memprofile", "/proc/version"],
            &[
                "--memprofile",
                "/proc/version",
                "cannot create files in /proc",
            ],
        ),
        (
            &["--cpuprofile", "/dev/null"],
            &["--cpuprofile", "not a regular file"],
        ),
        (
            &["--cpuprofile", dir_path],
            &["--cpuprofile", "is a directory"],
        ),
        (
            &["--memprofile", ""],
            &["--memprofile", "expected the path of a file"],
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
    // Nothing was left behind by the checks.
    assert_eq!(std::fs::read_dir(&dir).unwrap().count(), 0);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn invalid_environment_values_are_reported_under_the_variables_name() {
    let cases: &[(&str, &str, &[&str])] = &[
        ("LAB_RATE", "0", &["LAB_RATE=0", "--rate", "1..=1000000"]),
        (
            "LAB_WORKERS",
            "lots",
            &["LAB_WORKERS=lots", "--workers", "1..=10000"],
        ),
        (
            "LAB_TASKS",
            "-1",
            &["LAB_TASKS=-1", "--tasks", "1..=1000000000"],
        ),
        (
            "LAB_DURATION",
            "-1s",
            &["LAB_DURATION=-1s", "--duration", "negative"],
        ),
        (
            "LAB_LISTEN",
            "localhost:9090",
            &["LAB_LISTEN=localhost:9090", "host names"],
        ),
    ];
    for (name, value, expected) in cases {
        let stderr = refuse("bad", &[], &[(name, value)]);
        for fragment in *expected {
            assert!(
                stderr.contains(fragment),
                "{name}={value}: {fragment:?} not in {stderr}"
            );
        }
    }
    // A flag on the command line overrides the variable, and is what a bad value is named by.
    let stderr = refuse("optimized", &["--rate", "0"], &[("LAB_RATE", "100")]);
    assert!(
        stderr.contains("'--rate <RATE>'") && !stderr.contains("LAB_RATE="),
        "{stderr}"
    );
}

#[test]
fn both_profiles_in_one_file_are_refused_naming_both_flags() {
    let dir = scratch_dir("same");
    std::fs::create_dir(dir.join("sub")).unwrap();
    for (cpu, mem) in [
        ("p.pb.gz", "p.pb.gz"),
        ("p.pb.gz", "./p.pb.gz"),
        ("sub/../p.pb.gz", "p.pb.gz"),
    ] {
        let out = Command::new(worker_binary("bad"))
            .args(["--cpuprofile", cpu, "--memprofile", mem])
            .current_dir(&dir)
            .output()
            .unwrap();
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{cpu} {mem}: {stderr}");
        assert!(
            stderr.contains(&format!("--cpuprofile {cpu}"))
                && stderr.contains(&format!("--memprofile {mem}"))
                && stderr.contains("same file"),
            "{stderr}"
        );
    }
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn a_refused_start_leaves_existing_profiles_untouched() {
    let dir = scratch_dir("untouched");
    let cpu = dir.join("cpu.pb.gz");
    let mem = dir.join("mem.pb.gz");
    let old = b"an earlier profile ".repeat(500);
    std::fs::write(&cpu, &old).unwrap();
    std::fs::write(&mem, &old).unwrap();
    let profiles = [
        "--cpuprofile",
        cpu.to_str().unwrap(),
        "--memprofile",
        mem.to_str().unwrap(),
    ];
    // A bad flag after the profile flags.
    refuse("bad", &[&profiles[..], &["--workers", "0"]].concat(), &[]);
    // A taken port.
    let first = Worker::start("optimized", &[]);
    let out = Command::new(worker_binary("bad"))
        .args(profiles)
        .args(["--listen", &first.addr.to_string()])
        .output()
        .unwrap();
    assert_eq!(
        out.status.code(),
        Some(1),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    for file in [&cpu, &mem] {
        assert_eq!(
            std::fs::read(file).unwrap(),
            old,
            "{} changed",
            file.display()
        );
    }
    let mut names: Vec<_> = std::fs::read_dir(&dir)
        .unwrap()
        .map(|e| e.unwrap().file_name())
        .collect();
    names.sort();
    assert_eq!(names, ["cpu.pb.gz", "mem.pb.gz"]);
    std::fs::remove_dir_all(&dir).unwrap();
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
        stderr.contains(&format!("cannot listen on {} (--listen)", first.addr))
            && stderr.contains("in use by another process"),
        "{stderr}"
    );
}

#[test]
fn an_address_this_machine_lacks_is_a_bad_flag_not_a_taken_port() {
    // Binding is local: no packet goes to 192.0.2.1 (TEST-NET-1, never assigned to a host).
    for (args, env, origin) in [
        (&["--listen", "192.0.2.1:9090"][..], None, "(--listen)"),
        (
            &[][..],
            Some(("LAB_LISTEN", "192.0.2.1:9090")),
            "(LAB_LISTEN=192.0.2.1:9090)",
        ),
    ] {
        let stderr = refuse("optimized", args, env.as_slice());
        assert!(
            stderr.contains(&format!("cannot listen on 192.0.2.1:9090 {origin}"))
                && stderr.contains("not an address of this machine")
                && stderr.contains("127.0.0.1:9090")
                && !stderr.contains("another process"),
            "{stderr}"
        );
    }
}

#[test]
fn help_says_which_worker_is_which() {
    let help = |kind| {
        let out = Command::new(worker_binary(kind))
            .arg("--help")
            .output()
            .unwrap();
        assert!(out.status.success());
        String::from_utf8_lossy(&out.stdout).into_owned()
    };
    let (bad, optimized) = (help("bad"), help("optimized"));
    assert!(bad.contains("deliberately bad worker"), "{bad}");
    assert!(
        bad.contains("task leaks") && bad.contains("worker-optimized"),
        "{bad}"
    );
    assert!(optimized.contains("optimized worker"), "{optimized}");
    assert!(
        optimized.contains("problems fixed") && optimized.contains("worker-bad"),
        "{optimized}"
    );
    assert!(!optimized.contains("deliberately"), "{optimized}");
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
            "/debug/pprof/heap?debug=2",
            "expected a whole number from 0 to 1",
        ),
        (
            "/debug/pprof/heap?seconds=0",
            "expected a whole number of seconds from 1 to 300",
        ),
        (
            "/debug/pprof/heap?gc=1",
            "unknown query parameter \"gc\" for /debug/pprof/heap",
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

#[test]
fn signs_spaces_huge_numbers_and_misplaced_addresses_are_named() {
    let cases: &[(&[&str], &[&str])] = &[
        (&["--tasks", "+5"], &["--tasks", "+5", "1..=1000000000"]),
        (
            &["--tasks", "99999999999999999999999"],
            &["--tasks", "is not in 1..=1000000000"],
        ),
        (&["--burst", "-2x"], &["--burst", "-2x", "from 2x to"]),
        (&["--burst", " 20x"], &["--burst", "spaces"]),
        (&["--burst", "20x:1s/ 2s"], &["--burst", "spaces"]),
        (&["--problems", " all"], &["--problems", "spaces"]),
        (&["--problems", "leak, churn"], &["--problems", "spaces"]),
        (&["--duration", "1 s"], &["--duration", "spaces"]),
        (
            &["--cpuprofile", "-x"],
            &["--cpuprofile", "needs the path", "./-x"],
        ),
        (&["--listen", ""], &["--listen", "empty", "IP:PORT"]),
        (&["--listen", ":19199"], &["--listen", "127.0.0.1:19199"]),
        (
            &["--listen", "http://127.0.0.1:19199"],
            &["--listen", "URL", "127.0.0.1:19199"],
        ),
    ];
    for (args, expected) in cases {
        let stderr = refuse("bad", args, &[]);
        for fragment in *expected {
            assert!(
                stderr.contains(fragment),
                "{args:?}: {fragment:?} not in {stderr}"
            );
        }
    }
    // The temporary file a profile path is checked with is not the user's business.
    let stderr = refuse("bad", &["--cpuprofile", "/proc/self/status"], &[]);
    assert!(!stderr.contains(".tmp"), "{stderr}");
    // A burst too fast for the cap names what set it: here, the environment.
    let stderr = refuse("bad", &[], &[("LAB_RATE", "100000"), ("LAB_BURST", "20x")]);
    assert!(
        stderr.contains("LAB_RATE=100000") && stderr.contains("LAB_BURST=20x"),
        "{stderr}"
    );
}

#[test]
fn lab_flags_refuse_negative_values_and_spaces_naming_the_range() {
    let cases: &[(&[&str], &[&str])] = &[
        (
            &["compare", "--duration", "-5s"],
            &["--duration", "negative"],
        ),
        (
            &["compare", "--interval", "-1s"],
            &["--interval", "100ms to 1h"],
        ),
        (&["compare", "--interval", "1 s"], &["--interval", "spaces"]),
        (&["compare", "--warmup", "-1s"], &["--warmup", "0s to 1h"]),
        (&["compare", "--seed", "-1"], &["--seed", "-1", "0..="]),
        (&["stop", "--timeout", "-1s"], &["--timeout", "negative"]),
        (
            &["profile", "cpu", "bad", "--seconds", "-1"],
            &["--seconds", "1..=300"],
        ),
        (
            &["profile", "cpu", "bad", "--top", "-1"],
            &["--top", "1..="],
        ),
        (
            &["bench", "--time-per-case", "-1s"],
            &["--time-per-case", "100ms to 10m"],
        ),
        (
            &["bench", "--leaked-tasks", "-1"],
            &["--leaked-tasks", "1..=2000000"],
        ),
        (&["logs", "-n", "-1"], &["--lines", "0..=10000000"]),
        (&["logs", "-n", "abc"], &["--lines", "abc", "0..=10000000"]),
        // Checked before any worker is sampled or started.
        (
            &["profile", "cpu", "bad", "--dir", "/dev/null"],
            &["--dir", "/dev/null", "is not a directory"],
        ),
        (
            &["compare", "--out", "/dev/null"],
            &["--out", "/dev/null", "is not a directory"],
        ),
    ];
    for (args, expected) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_lab"))
            .args(*args)
            .output()
            .expect("lab runs");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert_eq!(out.status.code(), Some(2), "{args:?}: {stderr}");
        for fragment in *expected {
            assert!(
                stderr.contains(fragment),
                "{args:?}: {fragment:?} not in {stderr}"
            );
        }
    }
}
