//! The bad and the optimized worker compute the same thing, with any set of problems; only how
//! they do it differs.

use std::sync::Arc;

use profiling_lab::alloc;
use profiling_lab::bad::Bad;
use profiling_lab::metrics::Metrics;
use profiling_lab::optimized::{Optimized, Scratch};
use profiling_lab::pool::{self, Context, Queued, RunConfig, Strategy, Tally};
use profiling_lab::problems::Problems;
use profiling_lab::task::{Generator, Operation, TaskError, TaskSpec};
use profiling_lab::{WorkerKind, bad, optimized};
use proptest::prelude::*;
use tokio_util::sync::CancellationToken;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    /// Any task, any size: the same digest or the same error, whether the optimized worker's
    /// buffers are fresh or still hold the previous task's data.
    #[test]
    fn bad_and_optimized_agree_on_every_task(
        id in any::<u64>(),
        seed in any::<u64>(),
        size in 1usize..600,
        previous_seed in any::<u64>(),
        previous_size in 1usize..600,
    ) {
        let task = TaskSpec::new(id, seed, size);
        let expected = bad::process(task, size);

        let mut fresh = Scratch::with_capacity(size);
        prop_assert_eq!(optimized::process(&task, &mut fresh, size), expected);

        let mut reused = Scratch::with_capacity(previous_size);
        let previous = TaskSpec::new(id.wrapping_add(1), previous_seed, previous_size);
        let _ = optimized::process(&previous, &mut reused, previous_size);
        prop_assert_eq!(optimized::process(&task, &mut reused, size), expected);
    }

    /// Any task, any size, any set of problems: `--problems` changes how the bad worker
    /// computes, never what.
    #[test]
    fn bad_agrees_with_optimized_with_any_set_of_problems(
        id in any::<u64>(),
        seed in any::<u64>(),
        size in 1usize..400,
        bits in 0u8..64,
    ) {
        let problems = Problems::from_bits(bits);
        let task = TaskSpec::new(id, seed, size);
        let mut scratch = Scratch::with_capacity(size);
        prop_assert_eq!(
            bad::process_with(task, size, problems),
            optimized::process(&task, &mut scratch, size),
            "problems: {}", problems
        );
    }
}

/// Runs `tasks` through the whole path a worker task takes (handle, seal, tally) on a real
/// runtime; returns each result and the run's tally.
async fn run_tasks<S: Strategy>(
    strategy: S,
    config: &RunConfig,
    tasks: &[TaskSpec],
) -> (Vec<Result<u64, TaskError>>, Tally) {
    let metrics = Arc::new(Metrics::new(
        WorkerKind::Bad,
        tokio::runtime::Handle::current(),
    ));
    let ctx = Arc::new(Context::new(
        config.clone(),
        metrics,
        CancellationToken::new(),
    ));
    let mut worker = strategy.worker(&ctx);
    let mut results = Vec::new();
    for &task in tasks {
        results.push(pool::complete(&strategy, &mut worker, Queued::now(task), &ctx).await);
    }
    strategy.finish_worker(worker, &ctx).await;
    ctx.shutdown.cancel();
    let tally = *ctx.tally.lock().await;
    (results, tally)
}

#[test]
fn both_workers_give_the_same_results_and_tally_with_every_set_of_problems() {
    let config = RunConfig {
        tasks_per_round: 10,
        workers: 2,
        data_size: 64,
        rate: 100,
        seed: 1,
        max_tasks: None,
    };
    let mut generator = Generator::new(17, config.data_size);
    let mut tasks: Vec<TaskSpec> = (0..30).map(|_| generator.next_task()).collect();
    // A failing task that would be sealed, and one that is.
    tasks.push(TaskSpec {
        id: 39,
        operation: Operation::Render,
        seed: 3,
        corrupt_at: Some(5),
    });
    assert!(tasks.iter().filter(|t| t.sealed()).count() >= 3);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let expected = run_tasks(Optimized::new(&config), &config, &tasks).await;
        assert!(expected.0.iter().any(Result::is_err));
        for problems in Problems::every_set() {
            let got = run_tasks(Bad::with_problems(&config, problems), &config, &tasks).await;
            assert_eq!(got, expected, "problems: {problems}");
        }
    });
}

#[test]
fn every_operation_and_the_failure_path_are_exercised() {
    let mut generator = Generator::new(3, 64);
    let mut seen = [0usize; 4];
    let mut failures = 0;
    let mut scratch = Scratch::with_capacity(64);
    for _ in 0..2000 {
        let task = generator.next_task();
        seen[task.operation.index()] += 1;
        let result = optimized::process(&task, &mut scratch, 64);
        assert_eq!(result, bad::process(task, 64));
        if let Err(err) = result {
            assert!(
                matches!(err, TaskError::CorruptValue { index } if Some(index) == task.corrupt_at)
            );
            failures += 1;
        }
    }
    assert!(seen.iter().all(|&n| n > 300), "{seen:?}");
    assert!(failures > 5, "{failures} failures");
    // A single-element payload is the smallest valid one.
    let one = TaskSpec {
        id: 0,
        operation: Operation::Sort,
        seed: 9,
        corrupt_at: None,
    };
    assert_eq!(
        optimized::process(&one, &mut scratch, 1),
        bad::process(one, 1)
    );
}

#[test]
fn optimized_processing_allocates_nothing_once_warm_and_bad_processing_a_lot() {
    const SIZE: usize = 2000;
    let mut generator = Generator::new(11, SIZE);
    let tasks: Vec<TaskSpec> = (0..400).map(|_| generator.next_task()).collect();
    let mut scratch = Scratch::with_capacity(SIZE);
    // Warm-up: the dedup map settles its layout on first use.
    for task in &tasks[..20] {
        let _ = optimized::process(task, &mut scratch, SIZE);
    }
    let before = alloc::thread_counts().expect("test threads own a counter slot");
    for task in &tasks {
        let _ = optimized::process(task, &mut scratch, SIZE);
    }
    let optimized = alloc::thread_counts().unwrap().since(before);
    assert_eq!(
        optimized.allocations, 0,
        "optimized made {optimized:?} over 400 tasks"
    );

    let before = alloc::thread_counts().unwrap();
    for task in &tasks {
        let _ = bad::process(*task, SIZE);
    }
    let bad = alloc::thread_counts().unwrap().since(before);
    assert!(
        bad.allocations > 400 * 100,
        "bad made only {bad:?} over 400 tasks"
    );
}

#[test]
fn reserving_buffers_that_already_fit_allocates_nothing() {
    let mut scratch = Scratch::with_capacity(0);
    scratch.reserve(3000);
    let mut generator = Generator::new(5, 3000);
    let tasks: Vec<TaskSpec> = (0..50).map(|_| generator.next_task()).collect();
    let _ = optimized::process(&tasks[0], &mut scratch, 3000);
    let before = alloc::thread_counts().unwrap();
    for task in &tasks {
        scratch.reserve(3000);
        let _ = optimized::process(task, &mut scratch, 3000);
    }
    assert_eq!(alloc::thread_counts().unwrap().since(before).allocations, 0);
}
