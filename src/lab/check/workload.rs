//! The fixed workload `lab check` runs every worker on, and what it must produce.
//!
//! Small enough to finish in seconds in a debug build, shaped so that each lesson's figure is a
//! count that does not depend on the machine's speed: several rounds (one progress reporter
//! each) and a handful of failing tasks (one parked audit helper each), in numbers far enough
//! apart to tell the two leaks apart.

use crate::optimized::{self, Scratch};
use crate::pool;
use crate::task::{self, Generator};

/// What every worker is run with.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Serialize)]
pub struct Workload {
    pub seed: u64,
    pub tasks: u64,
    pub tasks_per_round: u64,
    pub workers: u64,
    pub data_size: usize,
    /// Tasks per second: high, so that pacing costs little; throughput is not graded on it.
    pub rate: u32,
}

impl Workload {
    pub const DEFAULT: Workload = Workload {
        seed: 42,
        tasks: 600,
        tasks_per_round: 30,
        workers: 4,
        data_size: 2_000,
        rate: 2_000,
    };

    pub fn rounds(&self) -> u64 {
        self.tasks.div_ceil(self.tasks_per_round)
    }

    /// The worker flags for this workload.
    pub fn args(&self) -> Vec<String> {
        vec![
            format!("--seed={}", self.seed),
            format!("--max-tasks={}", self.tasks),
            format!("--tasks={}", self.tasks_per_round),
            format!("--workers={}", self.workers),
            format!("--data-size={}", self.data_size),
            format!("--rate={}", self.rate),
            // A cap, never reached by a worker that handles its tasks.
            "--duration=10m".to_owned(),
        ]
    }
}

/// What an honest worker's ledger holds after the workload.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Expected {
    pub handled: u64,
    pub failed: u64,
    pub checksum: u64,
}

/// Runs the task stream through the reference `optimized::process`, sealing the results of
/// sealed tasks with `task::seal` as `pool::complete` does before its ledger entry: a worker
/// that skips the seal (lesson 4 "fixed" by doing less) enters a different checksum.
///
/// `rejected` are the ids a worker's bounded queue shed: the producer offered as many more
/// tasks in their place, so the stream is read that much further and they are left out.
pub fn expected(workload: &Workload, rejected: &[u64]) -> Expected {
    let mut generator = Generator::new(workload.seed, workload.data_size);
    let mut scratch = Scratch::with_capacity(workload.data_size);
    let mut sums = Expected {
        handled: 0,
        failed: 0,
        checksum: 0,
    };
    let rejected: std::collections::HashSet<u64> = rejected.iter().copied().collect();
    for _ in 0..workload.tasks + rejected.len() as u64 {
        let task = generator.next_task();
        if rejected.contains(&task.id) {
            continue;
        }
        let result = optimized::process(&task, &mut scratch, workload.data_size).map(|digest| {
            if task.sealed() {
                task::seal(digest, workload.data_size)
            } else {
                digest
            }
        });
        sums.handled += 1;
        sums.failed += u64::from(result.is_err());
        sums.checksum = sums
            .checksum
            .wrapping_add(pool::ledger_entry(task.id, &result));
    }
    sums
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_two_leaks_leave_counts_far_apart() {
        let workload = Workload::DEFAULT;
        let failed = expected(&workload, &[]).failed;
        let rounds = workload.rounds();
        assert!(failed >= 3, "{failed} failing tasks");
        assert!(
            rounds.abs_diff(failed) >= 4,
            "{rounds} rounds, {failed} failures"
        );
    }
}
