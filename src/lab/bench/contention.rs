//! `lab bench`'s lesson-5 section: what one lock held across the whole task costs a worker
//! running flat out.
//!
//! `worker-bad --problems contention` (every other section fixed) and `worker-optimized` run the
//! same task stream in turn, each alone on the machine, on a runtime of two threads with four
//! worker tasks (the setting), in alternating rounds. The bad worker's tasks all take
//! the run's tally lock for the whole task, seal included; the waiters yield their threads, but
//! only one task is worked on at a time: two threads (and the seal threads) do the work of
//! one. The fixed worker keeps a tally per worker task and takes the lock once, when it stops.
//!
//! Both workers cannot be compared this way side by side (`lab compare`): on two cores, two
//! workers flat out would split the cores between them and neither could use two threads.

use std::time::Duration;

use serde::Serialize;

use super::flat_out::{self, median};
use crate::bad::Bad;
use crate::kind::WorkerKind;
use crate::optimized::Optimized;
use crate::problems::{Problem, Problems};
use crate::runtime;

/// Worker tasks in each worker.
pub const WORKERS: usize = 4;
/// Runtime threads of each worker: the workers' default `--runtime-threads`.
pub const THREADS: usize = runtime::DEFAULT_THREADS;

/// Lesson 5 flat out, medians of the rounds.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct Contention {
    pub runtime_threads: usize,
    pub workers: usize,
    pub bad_tasks_per_second: f64,
    pub optimized_tasks_per_second: f64,
    /// Of the bad worker's acquisitions of the tally lock, the fraction that had to wait.
    pub bad_contended_fraction: f64,
    /// Time waited for the lock, per task (per acquisition: the bad worker takes it once a
    /// task; the fixed one once per worker task, at the end).
    pub bad_lock_wait_micros_per_task: f64,
    pub optimized_lock_wait_micros_per_task: f64,
    /// CPU each worker used, in cores: the bad worker's lock leaves the machine idle.
    pub bad_cpu_cores: f64,
    pub optimized_cpu_cores: f64,
}

/// Runs the comparison, `rounds` rounds of `round` per worker.
pub fn measure(data_size: usize, round: Duration, rounds: u32) -> Result<Contention, String> {
    let config = flat_out::config(data_size, WORKERS);
    let bad_rt = runtime::build(THREADS).map_err(|e| e.to_string())?;
    let optimized_rt = runtime::build(THREADS).map_err(|e| e.to_string())?;
    let (mut bad_rates, mut optimized_rates) = (Vec::new(), Vec::new());
    let (mut bad_contended, mut bad_waits, mut optimized_waits) =
        (Vec::new(), Vec::new(), Vec::new());
    let (mut bad_cpu, mut optimized_cpu) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        let bad = flat_out::run(
            &bad_rt,
            WorkerKind::Bad,
            Bad::with_problems(&config, Problems::NONE.with(Problem::Contention)),
            &config,
            round,
            true,
        );
        let optimized = flat_out::run(
            &optimized_rt,
            WorkerKind::Optimized,
            Optimized::new(&config),
            &config,
            round,
            true,
        );
        bad_rates.push(bad.tasks_per_second);
        bad_cpu.push(bad.cpu_cores);
        optimized_cpu.push(optimized.cpu_cores);
        optimized_rates.push(optimized.tasks_per_second);
        bad_contended.push(per(bad.lock_contentions as f64, bad.lock_acquisitions));
        bad_waits.push(per(
            bad.lock_wait.as_secs_f64() * 1e6,
            bad.lock_acquisitions,
        ));
        optimized_waits.push(per(
            optimized.lock_wait.as_secs_f64() * 1e6,
            optimized.processed,
        ));
    }
    Ok(Contention {
        runtime_threads: THREADS,
        workers: WORKERS,
        bad_tasks_per_second: median(bad_rates),
        optimized_tasks_per_second: median(optimized_rates),
        bad_contended_fraction: median(bad_contended),
        bad_lock_wait_micros_per_task: median(bad_waits),
        optimized_lock_wait_micros_per_task: median(optimized_waits),
        bad_cpu_cores: median(bad_cpu),
        optimized_cpu_cores: median(optimized_cpu),
    })
}

fn per(value: f64, count: u64) -> f64 {
    if count == 0 {
        0.0
    } else {
        value / count as f64
    }
}

/// The section of the `lab bench` table.
pub fn table(c: &Contention) -> String {
    format!(
        "\nlesson 5 flat out: worker-bad --problems contention against worker-optimized, each alone\n\
         ({threads} runtime threads, {workers} worker tasks, a scrape every {scrape}s)\n\
         \x20                                        bad     optimized       bad/optimized\n\
         \x20 throughput                   {bad_rate:>9.0} /s {opt_rate:>9.0} /s {rate_ratio:>18.2}x\n\
         \x20 CPU used                     {bad_cpu:>6.2} cores {opt_cpu:>6.2} cores\n\
         \x20 lock wait per task           {bad_wait:>9.1} µs {opt_wait:>9.1} µs\n\
         \x20 lock acquisitions that waited {contended:>7.1}%\n",
        threads = c.runtime_threads,
        workers = c.workers,
        scrape = flat_out::SCRAPE_INTERVAL.as_secs(),
        bad_rate = c.bad_tasks_per_second,
        opt_rate = c.optimized_tasks_per_second,
        rate_ratio = c.bad_tasks_per_second / c.optimized_tasks_per_second.max(f64::MIN_POSITIVE),
        bad_cpu = c.bad_cpu_cores,
        opt_cpu = c.optimized_cpu_cores,
        bad_wait = c.bad_lock_wait_micros_per_task,
        opt_wait = c.optimized_lock_wait_micros_per_task,
        contended = 100.0 * c.bad_contended_fraction,
    )
}
