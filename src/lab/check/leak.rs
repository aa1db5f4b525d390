//! Lesson 1, task leaks: the tasks a run leaves alive, told apart by source.
//!
//! Two helpers leak in the bad worker: a progress reporter per round and an audit helper per
//! failed task. The workload has rounds and failures in numbers far apart, so the count left
//! alive says which source remains. Fixing one is half the lesson, and the check says so.
//!
//! The count is the task registry's (`tasks::live(TaskKind::Helper)`, the exit value of
//! `worker_live_tasks{kind="helper"}`), read by the pool's side of the worker: every task the
//! lesson's code spawns through `pool::spawn_helper` is in it, and nothing else is. The detail
//! names each spawn site still holding tasks, so a renamed helper is found all the same.

use super::{Grade, Hint, Runs, Status};

/// How many of each helper a run left alive: (per-round reporters, per-failure audits).
///
/// Splits the helpers left alive by the nearest mix of the two sources.
pub fn leak_sources(left_alive: u64, rounds: u64, failures: u64) -> (u64, u64) {
    let candidates = [(0, 0), (0, failures), (rounds, 0), (rounds, failures)];
    candidates
        .into_iter()
        .min_by_key(|(r, f)| left_alive.abs_diff(r + f))
        .unwrap_or((0, 0))
}

pub fn grade(runs: &Runs) -> Grade {
    let rounds = runs.workload.rounds();
    let failures = runs.expected.failed;
    let bad_failures = runs.bad.ledger.totals.failed;
    let left = |run: &super::runs::Run| run.ledger.helpers_left;
    let (exercise, bad, optimized) = (left(&runs.exercise), left(&runs.bad), left(&runs.optimized));
    let extra = exercise.saturating_sub(optimized);
    let (reporters, audits) = leak_sources(extra, rounds, failures);
    let status = match (reporters, audits) {
        (0, 0) if extra <= 1 => Status::Fixed,
        (0, _) | (_, 0) if extra <= rounds.max(failures) + 1 => Status::Partial,
        _ => Status::NotYet,
    };
    let sites: Vec<String> = runs
        .exercise
        .ledger
        .helper_sites
        .iter()
        .map(|s| format!("{} spawned at {}: {}", s.function, s.site, s.tasks))
        .collect();
    let detail = match (reporters > 0, audits > 0) {
        (false, false) => "no helper outlives its work".to_owned(),
        (true, false) => format!(
            "half fixed: no audit helper is left waiting, but {reporters} progress reporters \
             (one per round, {rounds} rounds) still run after their round"
        ),
        (false, true) => format!(
            "half fixed: no progress reporter is left running, but {audits} audit helpers (one \
             per failed task, {failures} failed) still wait for an outcome that never comes"
        ),
        (true, true) => format!(
            "{reporters} per-round helpers ({rounds} rounds) and {audits} per-failure helpers \
             ({failures} failed tasks) outlive their work"
        ),
    };
    let detail = if sites.is_empty() {
        detail
    } else {
        format!("{detail}; still alive: {}", sites.join(", "))
    };
    // The optimized worker leaks no helper, and the bad worker's excess over it must be
    // exactly its two leaks.
    let bad_expected = rounds + bad_failures;
    let bad_extra = bad.saturating_sub(optimized);
    let confidence = if bad_extra.abs_diff(bad_expected) <= 1 {
        format!(
            "high: exact task counts after all {} tasks; beyond the optimized worker's {optimized}, \
             the bad worker left {bad_extra} ({rounds} rounds + {bad_failures} failures)",
            runs.workload.tasks
        )
    } else {
        format!(
            "low: the bad worker left {bad_extra} more tasks than the optimized one where \
             {bad_expected} were expected; something else spawns tasks"
        )
    };
    Grade {
        status,
        measured: "helper tasks left alive after the run (task registry)".to_owned(),
        unit: "tasks",
        exercise: exercise as f64,
        bad: bad as f64,
        optimized: optimized as f64,
        detail,
        confidence,
        hint: Hint {
            metric: "worker_live_tasks{worker_type=\"exercise\",kind=\"helper\"}: does it climb \
                     round after round, or with worker_task_errors_total?"
                .to_owned(),
            command: "go tool pprof -top http://127.0.0.1:9093/debug/pprof/goroutine".to_owned(),
        },
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sources_are_told_apart() {
        assert_eq!(leak_sources(0, 20, 6), (0, 0));
        assert_eq!(leak_sources(6, 20, 6), (0, 6));
        assert_eq!(leak_sources(21, 20, 6), (20, 0));
        assert_eq!(leak_sources(26, 20, 6), (20, 6));
    }
}
