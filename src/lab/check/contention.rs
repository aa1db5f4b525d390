//! Lesson 5, lock contention: the run's tally behind one lock held for the whole of each task.
//!
//! Graded on the acquisitions of that lock that had to wait (`worker_lock_wait_seconds{lock=
//! "tally"}`'s count, kept by the lab's instrumented lock outside the learner's code), per
//! task. With four workers on the runtime's threads, a lock held across the work makes a large
//! share of acquisitions wait; one taken for a moment, or per-worker tallies merged at the end,
//! almost none. A count, not a time: it does not depend on the machine's speed.

use super::{Grade, Hint, Runs, Status};

pub fn grade(runs: &Runs) -> Grade {
    let per_task = |run: &super::runs::Run| {
        run.ledger.tally_lock.contended as f64 / run.ledger.totals.handled.max(1) as f64
    };
    let (exercise, bad, optimized) = (
        per_task(&runs.exercise),
        per_task(&runs.bad),
        per_task(&runs.optimized),
    );
    // A tenth of the bad worker's share, and never below 2 waits per 100 tasks: a brief lock
    // that is sometimes busy is not the problem.
    let threshold = optimized.max(bad / 10.0).max(0.02);
    let status = if exercise <= threshold {
        Status::Fixed
    } else if exercise < bad * 0.5 {
        Status::Partial
    } else {
        Status::NotYet
    };
    let lock = &runs.exercise.ledger.tally_lock;
    Grade {
        status,
        measured: "contended acquisitions of the tally lock".to_owned(),
        unit: "per task",
        exercise,
        bad,
        optimized,
        detail: format!(
            "{} of {} acquisitions waited, {:.3} s in all ({exercise:.3} per task; fixed at \
             {threshold:.3} or fewer)",
            lock.contended, lock.acquisitions, lock.wait_seconds
        ),
        confidence: format!(
            "high when the bad worker's share is far above the line: it is {bad:.3} per task \
             in this run, {} workers on the runtime's threads",
            runs.workload.workers
        ),
        hint: Hint {
            metric: "rate(worker_lock_wait_seconds_sum{worker_type=\"exercise\",lock=\"tally\"}\
                     [1m]) / rate(worker_tasks_processed_total[1m]): lock wait per task"
                .to_owned(),
            command: "go tool pprof -top http://127.0.0.1:9093/debug/pprof/mutex".to_owned(),
        },
    }
}
