//! Lesson 6, overload without backpressure: an unbounded queue turns overload into backlog.
//!
//! Graded on the queue itself, which the pool builds from `Strategy::queue` and records in the
//! ledger: its bound, and the most tasks that waited in it at once. The workload offers more
//! than a debug build handles, so an unbounded queue's depth climbs towards the whole workload
//! while a bounded one stays at its bound and sheds the excess (the ledger lists the shed
//! tasks, and the digest check reads the task stream past them). A bound far above the
//! optimized worker's is no bound: the line is four times its bound.

use super::{Grade, Hint, Runs, Status};

pub fn grade(runs: &Runs) -> Grade {
    let depth = |run: &super::runs::Run| run.ledger.lessons.queue_depth_max as f64;
    let (exercise, bad, optimized) = (
        depth(&runs.exercise),
        depth(&runs.bad),
        depth(&runs.optimized),
    );
    let reference = runs.optimized.ledger.lessons.queue_bound.unwrap_or(1);
    let limit = reference * 4;
    let bound = runs.exercise.ledger.lessons.queue_bound;
    let rejected = runs.exercise.ledger.rejected_ids.len();
    // The depth is counted as the producer enqueues: a task a worker has just taken off is
    // still counted for a moment, one per worker, and the one being sent.
    let slack = runs.workload.workers + 1;
    let status = match bound {
        Some(bound) if bound <= limit && exercise <= (bound + slack) as f64 => Status::Fixed,
        Some(_) => Status::Partial,
        None => Status::NotYet,
    };
    let detail = match bound {
        Some(bound) if bound <= limit => format!(
            "a queue of {bound}: at most {exercise:.0} tasks waited, {rejected} were shed and \
             counted in worker_tasks_rejected_total"
        ),
        Some(bound) => format!(
            "a queue of {bound}, more than {limit} (four times the optimized worker's {reference}): \
             at most {exercise:.0} tasks waited; a bound that large lets the backlog grow all the same"
        ),
        None => format!(
            "an unbounded queue: {exercise:.0} tasks waited at once (the bad worker {bad:.0}, the \
             optimized {optimized:.0})"
        ),
    };
    Grade {
        status,
        measured: "most tasks waiting in the queue at once".to_owned(),
        unit: "tasks",
        exercise,
        bad,
        optimized,
        detail,
        confidence: format!(
            "high: the queue's bound is read from the pool, and its depth counted at every \
             enqueue over all {} tasks",
            runs.workload.tasks
        ),
        hint: Hint {
            metric: "worker_tasks_in_queue{worker_type=\"exercise\"} through a burst \
                     (`lab demo --exercise --burst ...`), and worker_tasks_rejected_total"
                .to_owned(),
            command: "go tool pprof -sample_index=inuse_space -top \
                      http://127.0.0.1:9093/debug/pprof/heap"
                .to_owned(),
        },
    }
}
