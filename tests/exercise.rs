//! `lab exercise` and `lab check` on temporary copies of the lab's tree.
//!
//! The grader is run for real: `lab check --json` builds the copy's workers and runs them. The
//! exercise slot (src/exercise.rs) is filled in turn with the start (the bad worker's code),
//! the optimized worker's code, versions that fix exactly one lesson (or half of one), and one
//! that "fixes" allocations by skipping work. Builds are the slow part, so all of them happen in
//! one copy, one after the other, in a target dir shared between runs (seeded once from this
//! build's own dependencies). Assertions are on statuses, counts and signs only.

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::OnceLock;

use serde_json::Value;

const MANIFEST_DIR: &str = env!("CARGO_MANIFEST_DIR");

/// A copy of the tree without its build output and history: the sources, the manifest and the
/// configs the `lab` binary embeds.
fn copy_tree() -> tempfile::TempDir {
    let dir = tempfile::tempdir().expect("temp dir");
    let root = Path::new(MANIFEST_DIR);
    for entry in std::fs::read_dir(root).expect("read the tree") {
        let name = entry.expect("tree entry").file_name();
        if name == "target" || name == ".git" {
            continue;
        }
        let status = Command::new("cp")
            .arg("-R")
            .arg(root.join(&name))
            .arg(dir.path().join(&name))
            .status()
            .expect("cp");
        assert!(status.success(), "copying {}", name.to_string_lossy());
    }
    dir
}

/// The target dir every copy builds into. The first time, it is seeded with this build's own
/// compiled dependencies, so no copy builds them cold.
fn shared_target() -> &'static Path {
    static TARGET: OnceLock<PathBuf> = OnceLock::new();
    TARGET.get_or_init(|| {
        let target = std::env::var_os("CARGO_TARGET_DIR")
            .map(PathBuf::from)
            .unwrap_or_else(|| Path::new(MANIFEST_DIR).join("target"));
        let shared = target.join("exercise-check");
        let profile = if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        };
        let ours = target.join(profile);
        if !shared.join(profile).join("deps").is_dir() && ours.join("deps").is_dir() {
            std::fs::create_dir_all(shared.join(profile)).expect("shared target dir");
            for sub in ["deps", "build", ".fingerprint"] {
                // Compiled artifacts as hard links: no second copy of gigabytes on disk; rustc
                // writes new artifacts to new files and cargo leaves fresh ones alone. Cargo's
                // fingerprints, which it rewrites in place, are copied. A plain copy where
                // links cannot be made.
                let link = if sub == ".fingerprint" { "-a" } else { "-al" };
                let linked = Command::new("cp")
                    .arg(link)
                    .arg(ours.join(sub))
                    .arg(shared.join(profile))
                    .status()
                    .is_ok_and(|s| s.success());
                if !linked {
                    let _ = Command::new("cp")
                        .arg("-a")
                        .arg(ours.join(sub))
                        .arg(shared.join(profile))
                        .status();
                }
            }
        }
        shared
    })
}

fn lab(tree: &Path, args: &[&str]) -> (i32, String, String) {
    let mut command = Command::new(env!("CARGO_BIN_EXE_lab"));
    command.args(args).current_dir(tree);
    // Only a check that gets as far as building needs the shared target dir.
    if args == ["check", "--json"] {
        command.env("CARGO_TARGET_DIR", shared_target());
    }
    let out = command.output().expect("run lab");
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `lab check --json` on `tree` with `exercise` as src/exercise.rs.
fn check(tree: &Path, exercise: &str) -> (i32, Value) {
    std::fs::write(tree.join("src/exercise.rs"), exercise).expect("write exercise");
    let (code, stdout, stderr) = lab(tree, &["check", "--json"]);
    let report = serde_json::from_str(&stdout)
        .unwrap_or_else(|e| panic!("no JSON report ({e}); status {code}\n{stdout}\n{stderr}"));
    (code, report)
}

fn statuses(report: &Value) -> Vec<(String, String)> {
    report["lessons"]
        .as_array()
        .expect("lessons")
        .iter()
        .map(|l| {
            (
                l["id"].as_str().unwrap().to_owned(),
                l["status"].as_str().unwrap().to_owned(),
            )
        })
        .collect()
}

fn status_of(report: &Value, lesson: &str) -> String {
    statuses(report)
        .into_iter()
        .find(|(id, _)| id == lesson)
        .unwrap_or_else(|| panic!("no lesson {lesson} in {report}"))
        .1
}

/// `text` with each `(from, to)` replaced; every `from` must be there.
fn patch(text: &str, edits: &[(&str, &str)]) -> String {
    let mut out = text.to_owned();
    for (from, to) in edits {
        assert!(
            out.contains(from),
            "`{from}` is not in the exercise any more"
        );
        out = out.replace(from, to);
    }
    out
}

const REPORTERS_STOP: (&str, &str) = (
    "pool::spawn_helper(progress_reporter(round, Arc::clone(ctx)));",
    "let _ = (round, ctx, progress_reporter);",
);
const AUDITS_RELEASED: (&str, &str) = (
    "let digest = outcome?;",
    "let digest = outcome.inspect_err(|_| drop(self.pending().remove(&task.id)))?;",
);

const CAPACITY_FIXED: &[(&str, &str)] = &[
    (
        "let mut payload = Vec::new();",
        "let mut payload = Vec::with_capacity(data_size);",
    ),
    (
        "let mut text = String::new();",
        "let mut text = String::with_capacity(payload.len() * 24);",
    ),
];

const CHURN_FIXED: &[(&str, &str)] = &[
    (
        "let trace_id = format!(\"{}-{}-{}\", ctx.metrics.kind(), task.id, task.operation);",
        "let trace_id = String::new();",
    ),
    (
        "let operation = task.operation.to_string();",
        "let operation = task.operation.name();",
    ),
    (
        ".with_label_values(&[&task.operation.to_string()])",
        ".with_label_values(&[task.operation.name()])",
    ),
    (
        "let context = format!(\"task {} ({})\", task.id, task.operation);\n    \
         task::validate(&payload).inspect_err(|err| tracing::debug!(\"{context}: {err}\"))?;",
        "task::validate(&payload)\n        \
         .inspect_err(|err| tracing::debug!(\"task {} ({}): {err}\", task.id, task.operation))?;",
    ),
    (
        "Operation::Stats => stats(payload.clone()),",
        "Operation::Stats => stats(payload),",
    ),
    (
        "let mut sorted = payload.clone();",
        "let mut sorted = payload;",
    ),
    (
        "task::weighted_checksum(sorted.clone().into_iter())",
        "task::weighted_checksum(sorted.into_iter())",
    ),
    (
        "let mut counts: HashMap<String, u32> = HashMap::new();",
        "let mut counts: HashMap<usize, u32> = HashMap::new();",
    ),
    (
        ".entry(format!(\"{}\", task::bucket(value)))",
        ".entry(task::bucket(value))",
    ),
    (
        ".map(|(bucket, &count)| (bucket.parse().expect(\"formatted from a usize\"), count))",
        ".map(|(&bucket, &count)| (bucket, count))",
    ),
    (
        "text = text + &value.to_string() + \",\";",
        "std::fmt::Write::write_fmt(&mut text, format_args!(\"{value},\")).unwrap();",
    ),
];

/// The first fix a learner reaches for, and a right one: the grader measures the seal's CPU on
/// the runtime thread, which `spawn_blocking` takes away. (It allocates a task per seal; the
/// optimized worker's seal threads do not, and pass too: the grader test runs optimized.rs.)
const BLOCKING_FIXED: (&str, &str) = (
    "task::seal(digest, data_size)",
    "tokio::task::spawn_blocking(move || task::seal(digest, data_size))\n            \
     .await\n            .expect(\"the seal does not panic\")",
);
const CONTENTION_FIXED: (&str, &str) = (
    "let mut tally = ctx.tally.lock().await;\n        \
     let completed = pool::handle_and_seal(self, worker, task, ctx).await;\n        \
     tally.add(task.operation, completed.result());",
    "let completed = pool::handle_and_seal(self, worker, task, ctx).await;\n        \
     ctx.tally.lock().await.add(task.operation, completed.result());",
);
const BACKLOG_FIXED: (&str, &str) = (
    "QueueKind::Unbounded",
    "QueueKind::Bounded(config.workers * 2)",
);

#[test]
fn unknown_lessons_are_named_with_the_allowed_ones() {
    let tree = copy_tree();
    let (code, _, stderr) = lab(tree.path(), &["check", "leaks"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(
        stderr.contains("`leaks`") && stderr.contains("leak, capacity, churn"),
        "{stderr}"
    );
    let (code, _, stderr) = lab(tree.path(), &["exercise", "reset", "nosuch"]);
    assert_eq!(code, 1, "{stderr}");
    assert!(stderr.contains("`nosuch`"), "{stderr}");
}

#[test]
fn start_refuses_to_clobber_changes_and_reset_restores_a_lesson() {
    let tree = copy_tree();
    let path = tree.path().join("src/exercise.rs");
    let start = std::fs::read_to_string(&path).unwrap();
    let (code, stdout, stderr) = lab(tree.path(), &["exercise", "start"]);
    assert_eq!(code, 0, "{stderr}");
    assert!(
        stdout.contains("src/exercise.rs") && stdout.contains("lab check"),
        "{stdout}"
    );

    let edited = patch(&patch(&start, &[REPORTERS_STOP]), CAPACITY_FIXED);
    std::fs::write(&path, &edited).unwrap();
    let (code, _, stderr) = lab(tree.path(), &["exercise", "start"]);
    assert_eq!(code, 1, "start must refuse: {stderr}");
    assert!(stderr.contains("--force"), "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), edited);

    let (code, diff, _) = lab(tree.path(), &["exercise", "diff"]);
    assert_eq!(code, 0);
    assert!(
        diff.contains("-        pool::spawn_helper(progress_reporter"),
        "{diff}"
    );
    assert!(
        diff.contains("+    let mut payload = Vec::with_capacity(data_size);"),
        "{diff}"
    );

    let (code, _, stderr) = lab(tree.path(), &["exercise", "reset", "leak"]);
    assert_eq!(code, 0, "{stderr}");
    let now = std::fs::read_to_string(&path).unwrap();
    assert!(now.contains("pool::spawn_helper(progress_reporter"));
    assert!(now.contains("Vec::with_capacity(data_size)"));

    let (code, _, _) = lab(tree.path(), &["exercise", "reset", "--all"]);
    assert_eq!(code, 1, "--all without --force keeps changes");
    let (code, _, stderr) = lab(tree.path(), &["exercise", "reset", "--all", "--force"]);
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(std::fs::read_to_string(&path).unwrap(), start);
}

/// The slow one: six builds and runs of the grader, lesson by lesson.
#[test]
fn the_grader_fails_the_bad_worker_passes_the_fixes_lesson_by_lesson() {
    let tree = copy_tree();
    let root = tree.path();
    let start = std::fs::read_to_string(root.join("src/exercise.rs")).unwrap();

    // The start is the bad worker: every lesson to do, nothing dishonest about it.
    let (code, report) = check(root, &start);
    assert_eq!(code, 1, "{report}");
    assert_eq!(report["problems"], serde_json::json!([]), "{report}");
    for (lesson, status) in statuses(&report) {
        assert_eq!(status, "not_yet", "{lesson} at the start: {report}");
    }
    let leak = &report["lessons"][0];
    assert!(
        leak["exercise"].as_f64() > leak["optimized"].as_f64(),
        "the start leaves more tasks alive than the optimized worker: {leak}"
    );

    // The optimized worker's code in the slot passes every lesson.
    let optimized = std::fs::read_to_string(root.join("src/optimized.rs"))
        .unwrap()
        .replace("pub struct Optimized ", "pub struct Exercise ")
        .replace("impl Optimized ", "impl Exercise ")
        .replace("for Optimized ", "for Exercise ")
        .replace("-> Optimized ", "-> Exercise ")
        .replace("Optimized {\n", "Exercise {\n");
    let (code, report) = check(root, &optimized);
    assert_eq!(code, 0, "{report}");
    assert!(
        statuses(&report).iter().all(|(_, s)| s == "fixed"),
        "{report}"
    );

    // One lesson fixed: that one passes, the others do not.
    let leak_fixed = patch(&start, &[REPORTERS_STOP, AUDITS_RELEASED]);
    let (code, report) = check(root, &leak_fixed);
    assert_eq!(code, 1);
    assert_eq!(status_of(&report, "leak"), "fixed", "{report}");
    assert_ne!(status_of(&report, "capacity"), "fixed", "{report}");
    assert_ne!(status_of(&report, "churn"), "fixed", "{report}");

    // Half the leak: partial credit, named.
    let half = patch(&start, &[AUDITS_RELEASED]);
    let (_, report) = check(root, &half);
    assert_eq!(status_of(&report, "leak"), "partial", "{report}");
    let detail = report["lessons"][0]["detail"].as_str().unwrap();
    assert!(detail.contains("progress reporters"), "{detail}");

    let (code, report) = check(root, &patch(&start, CAPACITY_FIXED));
    assert_eq!(code, 1);
    assert_eq!(status_of(&report, "capacity"), "fixed", "{report}");
    assert_ne!(status_of(&report, "leak"), "fixed", "{report}");
    assert_ne!(status_of(&report, "churn"), "fixed", "{report}");

    let (code, report) = check(root, &patch(&start, CHURN_FIXED));
    assert_eq!(code, 1);
    assert_eq!(status_of(&report, "churn"), "fixed", "{report}");
    assert_ne!(status_of(&report, "leak"), "fixed", "{report}");
    assert_ne!(status_of(&report, "capacity"), "fixed", "{report}");

    // Lessons 4-6, one at a time: exactly that lesson passes.
    for (lesson, edits) in [
        ("blocking", BLOCKING_FIXED),
        ("contention", CONTENTION_FIXED),
        ("backlog", BACKLOG_FIXED),
    ] {
        let (code, report) = check(root, &patch(&start, &[edits]));
        assert_eq!(code, 1, "{report}");
        assert_eq!(report["problems"], serde_json::json!([]), "{report}");
        for (other, status) in statuses(&report) {
            if other == lesson {
                assert_eq!(status, "fixed", "{lesson}: {report}");
            } else {
                assert_ne!(
                    status, "fixed",
                    "{other} with only {lesson} fixed: {report}"
                );
            }
        }
    }

    // Lesson 4 "fixed" by skipping the seal: the ledger holds the final results, so the digest
    // check catches it.
    let unsealed = patch(&start, &[("task::seal(digest, data_size)", "digest")]);
    let (code, report) = check(root, &unsealed);
    assert_eq!(code, 1, "{report}");
    assert!(
        report["problems"].to_string().contains("results differ"),
        "{report}"
    );

    // Fewer allocations by doing less: the digest check catches it, whatever the figures say.
    let skipping = patch(
        &optimized,
        &[(
            "let outcome = process_on_this_thread(&task, self.data_size);",
            "let outcome = if task.id % 2 == 0 {\n            Ok(task.id)\n        } else {\n            \
             process_on_this_thread(&task, self.data_size)\n        };",
        )],
    );
    let (code, report) = check(root, &skipping);
    assert_eq!(code, 1, "{report}");
    let problems = report["problems"].to_string();
    assert!(problems.contains("results differ"), "{report}");
    assert!(
        report["lessons"]
            .as_array()
            .unwrap()
            .iter()
            .all(|l| l["passed"] == Value::Bool(false))
    );
}
