//! Lesson 4, blocking the runtime: the seal's milliseconds of CPU run on a runtime thread.
//!
//! Graded on the CPU time each sealed task's seal future uses inside `poll` on the worker task's
//! thread, which the pool measures poll by poll around `Strategy::seal` (outside the learner's
//! code; thread CPU time, so preemption on a loaded machine does not count): the whole seal
//! when it runs there, microseconds when it is handed to the blocking pool and awaited. The two differ a hundredfold or more on any machine, loaded or not, so the
//! line sits at a tenth of the bad worker's figure from the same run.

use super::{Grade, Hint, Runs, Status};

pub fn grade(runs: &Runs) -> Grade {
    let per_seal = |run: &super::runs::Run| {
        let lessons = &run.ledger.lessons;
        lessons.seal_poll_nanos as f64 / 1e6 / lessons.sealed.max(1) as f64
    };
    let (exercise, bad, optimized) = (
        per_seal(&runs.exercise),
        per_seal(&runs.bad),
        per_seal(&runs.optimized),
    );
    let threshold = optimized.max(bad / 10.0);
    let sealed = runs.exercise.ledger.lessons.sealed;
    let status = if sealed > 0 && exercise <= threshold {
        Status::Fixed
    } else {
        Status::NotYet
    };
    let separation = if optimized > 0.0 {
        bad / optimized
    } else {
        f64::INFINITY
    };
    Grade {
        status,
        measured: "CPU time a seal uses in poll on the worker task's thread".to_owned(),
        unit: "ms per sealed task",
        exercise,
        bad,
        optimized,
        detail: format!(
            "{exercise:.3} ms of CPU per seal ran inside the worker task's poll, over {sealed} sealed \
             tasks (fixed at {threshold:.3} ms or less)"
        ),
        confidence: if separation >= 10.0 {
            format!(
                "high: the bad worker's seals held the thread {separation:.0}x longer than the \
                 optimized worker's in this same run"
            )
        } else {
            format!(
                "low: the references differ only {separation:.1}x in this run (a very loaded \
                 machine); run `lab check blocking` again"
            )
        },
        hint: Hint {
            metric: "tokio's poll-time histogram and worker_runtime_busy_seconds_total for \
                     worker_type=\"exercise\": long polls while tasks are sealed"
                .to_owned(),
            command: "go tool pprof -peek 'task::seal' \
                      'http://127.0.0.1:9093/debug/pprof/profile?seconds=10'"
                .to_owned(),
        },
    }
}
