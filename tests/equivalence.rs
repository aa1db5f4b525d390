//! The bad and the optimized worker compute the same thing; only how they do it differs.

use profiling_lab::alloc;
use profiling_lab::optimized::Scratch;
use profiling_lab::task::{Generator, Operation, TaskError, TaskSpec};
use profiling_lab::{bad, optimized};
use proptest::prelude::*;

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
