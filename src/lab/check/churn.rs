//! Lesson 3, allocation churn: clones, formatted strings and label lookups in the hot path.
//!
//! Graded on fresh allocations per task (reallocations are lesson 2's), counted by the
//! allocator around each task outside the learner's code. The bad worker makes thousands per
//! task; a fixed one a handful at most, the optimized one none.

use super::{Grade, Hint, Runs, Status};

pub fn grade(runs: &Runs) -> Grade {
    let per_task = |run: &super::runs::Run| {
        let totals = &run.ledger.totals;
        totals.allocations.saturating_sub(totals.reallocations) as f64
            / totals.handled.max(1) as f64
    };
    let (exercise, bad, optimized) = runs.per_task(per_task);
    // Within 2% of the way from the optimized worker to the bad one, and at least 4 per task
    // of slack: a buffer or two still made per task is not churn.
    let threshold = optimized + ((bad - optimized) * 0.02).max(4.0);
    let status = Status::from_figure(exercise, threshold, bad);
    Grade {
        status,
        measured: "allocations per task (reallocations not counted)".to_owned(),
        unit: "per task",
        exercise,
        bad,
        optimized,
        detail: format!("{exercise:.1} allocations per task (fixed at {threshold:.1} or fewer)"),
        confidence: super::exact_allocator_counts(runs),
        hint: Hint::allocs(
            "rate(worker_task_allocations_total{worker_type=\"exercise\"}[1m]) / \
             rate(worker_tasks_processed_total[1m]): allocations per task",
        ),
    }
}
