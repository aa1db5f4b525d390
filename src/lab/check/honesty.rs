//! The checks that come before any lesson: the learner's worker did all the work, right.
//!
//! Fewer allocations or fewer live tasks mean nothing if the worker skipped tasks, computed
//! something else, stopped recording metrics, or crawled. Each is read from what the pool and
//! the metrics record outside src/exercise.rs.

use std::time::Duration;

use super::runs::Run;
use super::workload::{self, Workload};

/// How much slower than the slower reference the learner's worker may be before the check says
/// so: wide, because the three run at once on a machine that may be busy.
const SLOWER_FACTOR: u32 = 4;
const SLOWER_SLACK: Duration = Duration::from_secs(10);

/// Why a run cannot be graded; empty when it can.
pub fn problems(
    run: &Run,
    reference: &Run,
    slowest_reference: Duration,
    workload: &Workload,
) -> Vec<String> {
    let ledger = &run.ledger;
    let expected = &workload::expected(workload, &ledger.rejected_ids);
    let totals = &ledger.totals;
    let mut problems = Vec::new();
    if totals.handled != expected.handled {
        problems.push(format!(
            "it handled {} of the {} tasks: every task must be handled, skipping work is not a fix",
            totals.handled, expected.handled
        ));
    }
    if totals.failed != expected.failed {
        problems.push(format!(
            "{} tasks failed where the reference fails {}: the same tasks must fail the same way",
            totals.failed, expected.failed
        ));
    }
    if totals.checksum != expected.checksum {
        problems.push(format!(
            "its results differ from the reference's for the same {} tasks (seed {}): each \
             task's digest must stay what `optimized::process` computes",
            workload.tasks, workload.seed
        ));
    }
    let want = &reference.ledger;
    if ledger.metrics_processed != totals.handled || ledger.metrics_errors != totals.failed {
        problems.push(format!(
            "its metrics count {} tasks processed and {} errors where it handled {} and {} \
             failed: `worker_tasks_processed_total` and `worker_task_errors_total` must still \
             be recorded",
            ledger.metrics_processed, ledger.metrics_errors, totals.handled, totals.failed
        ));
    }
    if want.audited && !ledger.audited {
        problems.push(
            "its audit recorded no task (the summary's slowest task): tasks must still be audited"
                .to_owned(),
        );
    }
    let limit = slowest_reference * SLOWER_FACTOR + SLOWER_SLACK;
    if run.elapsed > limit {
        problems.push(format!(
            "it took {:.1}s for the {} tasks, more than {SLOWER_FACTOR}x the slower reference \
             worker's {:.1}s: keep the throughput",
            run.elapsed.as_secs_f64(),
            workload.tasks,
            slowest_reference.as_secs_f64()
        ));
    }
    problems
}
