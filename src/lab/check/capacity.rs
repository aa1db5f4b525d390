//! Lesson 2, capacity: buffers that grow from empty, every task.
//!
//! Graded on reallocations per task, counted by the allocator around each task outside the
//! learner's code: a buffer sized once (and kept) never grows; one that starts empty grows
//! about log2(n) times per task. Measured on the default workload: bad 13.0 per task, the
//! capacity fix alone 2.2 (formatted strings growing, lesson 3's), optimized 0.

use super::{Grade, Hint, Runs, Status};

pub fn grade(runs: &Runs) -> Grade {
    let per_task = |run: &super::runs::Run| {
        run.ledger.totals.reallocations as f64 / run.ledger.totals.handled.max(1) as f64
    };
    let bytes = |run: &super::runs::Run| {
        run.ledger.totals.bytes as f64 / run.ledger.totals.handled.max(1) as f64
    };
    let (exercise, bad, optimized) = runs.per_task(per_task);
    // Within a quarter of the way from the optimized worker to the bad one. What is left below
    // that line is small strings outgrowing their first allocation (`format!` with several
    // arguments): those are lesson 3's, and they go with its fix. Unsized buffers that grow
    // every task make up the rest, most of the bad worker's count.
    let threshold = optimized + ((bad - optimized) * 0.25).max(0.5);
    let status = Status::from_figure(exercise, threshold, bad);
    let detail = format!(
        "{exercise:.1} reallocations per task (fixed at {threshold:.1} or fewer); {:.0} bytes \
         allocated per task (bad {:.0}, optimized {:.0})",
        bytes(&runs.exercise),
        bytes(&runs.bad),
        bytes(&runs.optimized)
    );
    Grade {
        status,
        measured: "reallocations per task (buffers growing)".to_owned(),
        unit: "per task",
        exercise,
        bad,
        optimized,
        detail,
        confidence: super::exact_allocator_counts(runs),
        hint: Hint::allocs(
            "rate(worker_task_allocated_bytes_total{worker_type=\"exercise\"}[1m]) / \
             rate(worker_tasks_processed_total[1m]): bytes per task",
        ),
    }
}
