//! `lab profile` against real workers: the profile is fetched, saved under a timestamped name
//! that `go tool pprof` reads, and summarized with or without Go; mistakes get clear errors.

mod support;

use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use support::{Worker, go_pprof, require_go, wait_for};

/// Enough load for heap samples within a second or two, even in a debug build.
const LOADED: &[&str] = &["--rate", "1000", "--data-size", "1000", "--tasks", "500"];

struct Outcome {
    code: i32,
    stdout: String,
    stderr: String,
}

/// Runs `lab ARGS`, with PATH replaced when `path` is given.
fn lab(args: &[&str], path: Option<&Path>) -> Outcome {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command.args(args);
    if let Some(path) = path {
        command.env("PATH", path);
    }
    let out = command.output().expect("lab runs");
    Outcome {
        code: out.status.code().unwrap_or(-1),
        stdout: String::from_utf8_lossy(&out.stdout).into_owned(),
        stderr: String::from_utf8_lossy(&out.stderr).into_owned(),
    }
}

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("lab-profile-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    dir
}

fn warmed_up(kind: &'static str) -> Worker {
    let worker = Worker::start(kind, LOADED);
    // Only a failure waits this long: a loaded CI machine is slow, not broken.
    wait_for("a thousand tasks", Duration::from_secs(120), || {
        (worker.metric("worker_tasks_processed_total") >= 1000.0).then_some(())
    });
    worker
}

/// The one file in `dir` named `PREFIX-...SUFFIX`; checks the timestamp in its name.
fn saved(dir: &Path, prefix: &str, suffix: &str) -> PathBuf {
    let files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| {
            let name = p.file_name().unwrap().to_string_lossy();
            name.starts_with(&format!("{prefix}-")) && name.ends_with(suffix)
        })
        .collect();
    assert_eq!(files.len(), 1, "{files:?}");
    let name = files[0].file_name().unwrap().to_string_lossy().into_owned();
    // PREFIX-YYYYMMDDTHHMMSSZ.SUFFIX
    let stamp = name
        .strip_prefix(prefix)
        .and_then(|rest| rest.strip_suffix(suffix))
        .unwrap_or_else(|| panic!("unexpected name {name}"));
    assert!(
        stamp.len() == 17
            && stamp.starts_with('-')
            && stamp.as_bytes()[9] == b'T'
            && stamp.ends_with('Z'),
        "not a timestamp: {stamp:?} in {name}"
    );
    files[0].clone()
}

/// Runs `lab profile KIND bad --url URL --dir DIR EXTRA...`, which must succeed.
fn profile_bad(kind: &str, url: &str, dir: &Path, extra: &[&str]) -> Outcome {
    let mut args = vec![
        "profile",
        kind,
        "bad",
        "--url",
        url,
        "--dir",
        dir.to_str().unwrap(),
    ];
    args.extend_from_slice(extra);
    let run = lab(&args, None);
    assert_eq!(
        run.code,
        0,
        "lab {}:\n{}\n{}",
        args.join(" "),
        run.stdout,
        run.stderr
    );
    run
}

/// Checks that `go tool pprof` reads the profile saved as `PREFIX-....pb.gz` in `dir` as a
/// profile of `sample_type`; returns the file.
fn go_reads(go: &PathBuf, dir: &Path, prefix: &str, sample_type: &str) -> PathBuf {
    let file = saved(dir, prefix, ".pb.gz");
    let top = go_pprof(go, &["-top", file.to_str().unwrap()]);
    assert!(top.contains(&format!("Type: {sample_type}")), "{top}");
    file
}

#[test]
fn profiles_are_saved_with_timestamps_and_go_tool_pprof_reads_them() {
    let Some(go) = require_go() else { return };
    let worker = warmed_up("bad");
    let url = worker.url("");
    let dir = temp_dir("go");

    let allocs = profile_bad("allocs", &url, &dir, &["--top", "5"]);
    let file = go_reads(&go, &dir, "bad-allocs", "alloc_space");
    assert!(
        allocs.stdout.contains(&format!("saved {}", file.display())),
        "{}",
        allocs.stdout
    );
    assert!(
        allocs.stdout.contains("by go tool pprof -top -nodecount=5"),
        "{}",
        allocs.stdout
    );
    assert!(
        allocs.stdout.contains("profiling_lab::bad::"),
        "{}",
        allocs.stdout
    );

    // Tasks: the profile and the grouped text, ranked by cum so the leaking helper shows.
    let tasks = profile_bad("tasks", &url, &dir, &[]);
    go_reads(&go, &dir, "bad-tasks", "goroutine");
    let text = std::fs::read_to_string(saved(&dir, "bad-tasks", ".txt")).unwrap();
    assert!(text.starts_with("goroutine profile: total "), "{text}");
    assert!(tasks.stdout.contains("-top -cum"), "{}", tasks.stdout);
    assert!(
        tasks
            .stdout
            .contains("profiling_lab::bad::audit_on_completion"),
        "{}",
        tasks.stdout
    );

    profile_bad("cpu", &url, &dir, &["--seconds", "1"]);
    go_reads(&go, &dir, "bad-cpu", "cpu");

    profile_bad("flamegraph", &url, &dir, &["--seconds", "1"]);
    let svg = std::fs::read_to_string(saved(&dir, "bad-flamegraph", ".svg")).unwrap();
    assert!(
        svg.contains("<svg") && svg.contains("profiling_lab"),
        "not a flamegraph"
    );
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn without_go_the_labs_own_summary_names_the_bad_code() {
    // A PATH with nothing on it: no go, no pprof. The worker binary is found next to `lab`.
    let empty = temp_dir("empty-path");
    std::fs::create_dir_all(&empty).unwrap();
    let dir = temp_dir("builtin");
    let run = lab(
        &[
            "profile",
            "allocs",
            "bad",
            "--start",
            "--warmup",
            "2s",
            "--dir",
            dir.to_str().unwrap(),
            "--top",
            "8",
            "--",
            "--rate",
            "500",
            "--data-size",
            "2000",
        ],
        Some(&empty),
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stderr.contains("started worker-bad on 127.0.0.1:"),
        "{}",
        run.stderr
    );
    assert!(
        run.stdout.contains("by the lab's own summary"),
        "{}",
        run.stdout
    );
    assert!(run.stdout.contains("Type: alloc_space"), "{}", run.stdout);
    assert!(
        run.stdout
            .contains("      flat  flat%   sum%        cum   cum%"),
        "{}",
        run.stdout
    );
    // The first row (largest flat) is one of the bad worker's functions.
    let first_row = run
        .stdout
        .lines()
        .skip_while(|l| !l.contains("flat%"))
        .nth(1)
        .unwrap_or_default();
    assert!(first_row.contains("profiling_lab::bad::"), "{}", run.stdout);
    saved(&dir, "bad-allocs", ".pb.gz");

    // --viewer go without Go is an error, not a silent fallback.
    let forced = lab(&["profile", "heap", "bad", "--viewer", "go"], Some(&empty));
    assert_eq!(forced.code, 1, "{}", forced.stderr);
    assert!(
        forced.stderr.contains("`go` is not on PATH"),
        "{}",
        forced.stderr
    );
    std::fs::remove_dir_all(&dir).unwrap();
    std::fs::remove_dir_all(&empty).unwrap();
}

#[test]
fn unreachable_and_busy_workers_get_clear_errors() {
    let run = lab(
        &[
            "profile",
            "heap",
            "bad",
            "--url",
            "http://127.0.0.1:1",
            "--viewer",
            "lab",
        ],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    for needle in [
        "worker-bad is not reachable at http://127.0.0.1:1",
        "lab demo",
        "lab profile heap bad --start",
    ] {
        assert!(
            run.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            run.stderr
        );
    }

    // A worker profiling its whole run holds the CPU profiler: 409.
    let dir = temp_dir("busy");
    std::fs::create_dir_all(&dir).unwrap();
    let whole_run = dir.join("whole-run.pb.gz");
    let worker = Worker::start("optimized", &["--cpuprofile", whole_run.to_str().unwrap()]);
    let url = worker.url("");
    let busy = lab(
        &[
            "profile",
            "cpu",
            "optimized",
            "--url",
            &url,
            "--seconds",
            "1",
            "--dir",
            dir.to_str().unwrap(),
        ],
        None,
    );
    assert_eq!(busy.code, 1, "{}", busy.stderr);
    assert!(
        busy.stderr.contains("(409)") && busy.stderr.contains("--cpuprofile"),
        "{}",
        busy.stderr
    );
    drop(worker);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn bad_arguments_exit_2_and_name_the_value() {
    for (args, needles) in [
        (
            &["profile", "memory", "bad"][..],
            &[
                "'memory'",
                "cpu",
                "heap",
                "allocs",
                "tasks",
                "flamegraph",
                "mutex",
            ][..],
        ),
        (
            &["profile", "cpu", "worst"],
            &["'worst'", "bad", "optimized"],
        ),
        (
            &["profile", "mutex", "bad", "--seconds", "0"],
            &["--seconds", "0"],
        ),
        (
            &["profile", "cpu", "bad", "--seconds", "0"],
            &["--seconds", "0"],
        ),
        (
            &["profile", "cpu", "bad", "--url", "localhost:9090"],
            &["localhost:9090", "http://"],
        ),
        (
            &[
                "profile",
                "cpu",
                "bad",
                "--url",
                "http://127.0.0.1:9",
                "--start",
            ],
            &["--start", "--url"],
        ),
        (
            &["profile", "cpu", "bad", "--", "--rate", "5"],
            &["need --start"],
        ),
        (
            &["profile", "heap", "bad", "--warmup", "1s"],
            &["--warmup needs --start"],
        ),
        (
            &["profile", "heap", "bad", "--url", "http://127.0.0.1:99999"],
            &["--url", "99999", "1..=65535"],
        ),
        (
            &["profile", "heap", "bad", "--url", "http://127.0.0.1"],
            &["--url", "with a port"],
        ),
        // A flag the started worker rejects: its own message and exit status.
        (
            &["profile", "heap", "bad", "--start", "--", "--rate", "0"],
            &["--rate", "1..=1000000"],
        ),
    ] {
        let run = lab(args, None);
        assert_eq!(run.code, 2, "{args:?}: {}", run.stderr);
        for needle in needles {
            assert!(
                run.stderr.contains(needle),
                "{args:?}: no {needle:?} in:\n{}",
                run.stderr
            );
        }
    }
}

#[test]
fn profile_checks_the_worker_it_asks_and_says_when_a_started_one_exits() {
    let dir = temp_dir("checks");
    let dir_arg = dir.to_str().unwrap();
    // --url at the other worker: refused, nothing saved under the wrong name.
    let optimized = Worker::start("optimized", &[]);
    let run = lab(
        &[
            "profile",
            "heap",
            "bad",
            "--url",
            &optimized.url(""),
            "--dir",
            dir_arg,
        ],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    assert!(
        run.stderr.contains(
            "is worker-optimized, not worker-bad (its /metrics say worker_type=\"optimized\")"
        ),
        "{}",
        run.stderr
    );
    assert!(!dir.exists(), "saved something for the wrong worker");
    drop(optimized);

    // A started worker whose own --duration ends during the warm-up: that is what is said.
    let run = lab(
        &[
            "profile",
            "heap",
            "bad",
            "--start",
            "--warmup",
            "30s",
            "--dir",
            dir_arg,
            "--",
            "--duration",
            "1s",
        ],
        None,
    );
    assert_eq!(run.code, 1, "{}", run.stderr);
    for needle in [
        "worker-bad exited during the warm-up",
        "its --duration ended it",
        "=== worker-bad summary",
    ] {
        assert!(
            run.stderr.contains(needle),
            "no {needle:?} in:\n{}",
            run.stderr
        );
    }
    assert!(!run.stderr.contains("not reachable"), "{}", run.stderr);

    // --viewer lab says it was asked for, not that Go is missing.
    let run = lab(
        &[
            "profile", "heap", "bad", "--start", "--warmup", "1s", "--viewer", "lab", "--dir",
            dir_arg,
        ],
        None,
    );
    assert_eq!(run.code, 0, "{}\n{}", run.stdout, run.stderr);
    assert!(
        run.stdout
            .contains("by the lab's own summary (--viewer lab)"),
        "{}",
        run.stdout
    );
    assert!(!run.stdout.contains("no go or pprof"), "{}", run.stdout);
    std::fs::remove_dir_all(&dir).unwrap();
}

#[test]
fn seconds_gives_a_delta_of_tasks_and_locks() {
    let Some(go) = require_go() else { return };
    let worker = warmed_up("bad");
    let url = worker.url("");
    let dir = temp_dir("delta");

    let tasks = profile_bad("tasks", &url, &dir, &["--seconds", "2"]);
    assert!(
        tasks.stderr.contains("/debug/pprof/goroutine?seconds=2"),
        "{}",
        tasks.stderr
    );
    go_reads(&go, &dir, "bad-tasks", "goroutine");

    profile_bad("mutex", &url, &dir, &["--seconds", "1"]);
    go_reads(&go, &dir, "bad-mutex", "delay");
    drop(worker);
    std::fs::remove_dir_all(&dir).unwrap();
}
