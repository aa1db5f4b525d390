//! `lab bench`'s runtime-metrics section: what tokio's poll-time histogram, the task monitors
//! and the scrapes that read them cost the optimized worker running flat out (goal: at most 2%).
//!
//! The same pool, strategy and task stream run on two runtimes with the same threads: one
//! plain, with task monitoring off; one as the workers build it ([`runtime::build`]), with task
//! monitoring on and `/metrics` rendered every 2 s, as the lab's Prometheus scrapes. Rounds
//! alternate between the two and the medians are compared.

use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::runtime::Runtime;

use super::flat_out::{self, SCRAPE_INTERVAL, median};
use crate::alloc;
use crate::kind::WorkerKind;
use crate::optimized::Optimized;
use crate::pool::RunConfig;
use crate::runtime;
use crate::runtime_metrics;

/// Worker tasks, as the workers' default `--workers`.
const WORKERS: usize = 10;

#[derive(Debug, Clone, Copy, Serialize)]
pub struct RuntimeMetricsCost {
    pub runtime_threads: usize,
    /// Tasks per second without the runtime metrics.
    pub plain_tasks_per_second: f64,
    /// Tasks per second with them, scrapes included.
    pub monitored_tasks_per_second: f64,
    /// Throughput lost to them, in percent (negative: within noise, faster).
    pub overhead_percent: f64,
    /// Task polls per task, from the monitors: what the per-poll costs multiply by.
    pub polls_per_task: f64,
    /// A poll of a task that only yields, on the plain runtime and as monitored: the cost the
    /// histogram and a task monitor add to each poll, measured apart from the workload's noise.
    pub plain_nanos_per_poll: f64,
    pub monitored_nanos_per_poll: f64,
    /// That added cost per poll times polls per task, over the time a task takes: the
    /// overhead the throughput comparison cannot resolve under machine noise.
    pub per_poll_overhead_percent: f64,
    /// One collection of the runtime metrics alone (the rest of `/metrics` excluded), median.
    pub collect_micros: f64,
    /// Heap allocations and bytes of one such collection (the observer's, not the workload's).
    pub collect_allocations: u64,
    pub collect_bytes: u64,
}

/// Runs the comparison; `round` is the time of each of the `rounds` rounds per variant.
pub fn measure(
    data_size: usize,
    round: Duration,
    rounds: u32,
) -> Result<RuntimeMetricsCost, String> {
    let config = flat_out::config(data_size, WORKERS);
    let monitored = runtime::build(runtime::DEFAULT_THREADS).map_err(|e| e.to_string())?;
    let threads = monitored.metrics().num_workers();
    let plain = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(threads)
        .enable_all()
        .on_thread_stop(alloc::release_thread_slot)
        .build()
        .map_err(|e| e.to_string())?;

    let polls_before = runtime_metrics::monitor(crate::tasks::TaskKind::Worker).cumulative();
    let (mut plain_rates, mut monitored_rates) = (Vec::new(), Vec::new());
    let mut monitored_tasks = 0;
    for _ in 0..rounds {
        runtime_metrics::set_task_monitoring(false);
        plain_rates.push(run_flat_out(&plain, &config, round, false).0);
        runtime_metrics::set_task_monitoring(true);
        let (rate, tasks) = run_flat_out(&monitored, &config, round, true);
        monitored_rates.push(rate);
        monitored_tasks += tasks;
    }
    let polls = runtime_metrics::monitor(crate::tasks::TaskKind::Worker)
        .cumulative()
        .total_poll_count
        - polls_before.total_poll_count;

    let (mut plain_polls, mut monitored_polls) = (Vec::new(), Vec::new());
    for _ in 0..rounds {
        plain_polls.push(nanos_per_poll(&plain, false));
        monitored_polls.push(nanos_per_poll(&monitored, true));
    }
    let (plain_poll, monitored_poll) = (median(plain_polls), median(monitored_polls));

    let collector = runtime_metrics::TokioCollector::new(monitored.handle());
    let mut collect_times: Vec<f64> = (0..201)
        .map(|_| {
            let start = Instant::now();
            std::hint::black_box(prometheus::core::Collector::collect(&collector));
            start.elapsed().as_secs_f64() * 1e6
        })
        .collect();
    collect_times.sort_by(f64::total_cmp);
    let before = alloc::thread_counts().unwrap_or_default();
    std::hint::black_box(prometheus::core::Collector::collect(&collector));
    let collect_allocs = alloc::thread_counts().unwrap_or_default().since(before);

    let (plain_rate, monitored_rate) = (median(plain_rates), median(monitored_rates));
    let polls_per_task = if monitored_tasks == 0 {
        0.0
    } else {
        polls as f64 / monitored_tasks as f64
    };
    let nanos_per_task = 1e9 / plain_rate * threads as f64;
    Ok(RuntimeMetricsCost {
        runtime_threads: threads,
        plain_tasks_per_second: plain_rate,
        monitored_tasks_per_second: monitored_rate,
        overhead_percent: 100.0 * (plain_rate - monitored_rate) / plain_rate,
        polls_per_task,
        plain_nanos_per_poll: plain_poll,
        monitored_nanos_per_poll: monitored_poll,
        per_poll_overhead_percent: 100.0 * (monitored_poll - plain_poll) * polls_per_task
            / nanos_per_task,
        collect_micros: collect_times[collect_times.len() / 2],
        collect_allocations: collect_allocs.allocations,
        collect_bytes: collect_allocs.bytes,
    })
}

/// Runs the optimized pool on `rt` for `time`; returns tasks per second and tasks processed.
fn run_flat_out(rt: &Runtime, config: &RunConfig, time: Duration, scrape: bool) -> (f64, u64) {
    let run = flat_out::run(
        rt,
        WorkerKind::Optimized,
        Optimized::new(config),
        config,
        time,
        scrape,
    );
    (run.tasks_per_second, run.processed)
}

/// Nanoseconds per poll of a task that yields 100,000 times, wrapped in the worker monitor or
/// not.
fn nanos_per_poll(rt: &Runtime, monitored: bool) -> f64 {
    const POLLS: u32 = 100_000;
    runtime_metrics::set_task_monitoring(monitored);
    let start = Instant::now();
    rt.block_on(async {
        let yielder = runtime_metrics::instrument(crate::tasks::TaskKind::Worker, async {
            for _ in 0..POLLS {
                tokio::task::yield_now().await;
            }
        });
        let _ = tokio::spawn(yielder).await;
    });
    runtime_metrics::set_task_monitoring(true);
    start.elapsed().as_nanos() as f64 / f64::from(POLLS)
}

/// The section of the `lab bench` table.
pub fn table(cost: &RuntimeMetricsCost) -> String {
    format!(
        "\nruntime metrics on the optimized worker flat out ({threads} runtime threads, {WORKERS} worker tasks; goal: at most 2%)\n\
         \x20 without (plain runtime)         {plain:.0} tasks/s\n\
         \x20 with poll-time histogram, task  {monitored:.0} tasks/s ({overhead:+.2}%)\n\
         \x20   monitors, a scrape every {scrape}s\n\
         \x20 worker-task polls per task      {polls:.2}\n\
         \x20 one poll (a task that yields)   {plain_poll:.0} ns plain, {monitored_poll:.0} ns monitored: \
         {per_poll:+.3}% of a task\n\
         \x20 runtime metrics collection      {collect:.0} µs per scrape (median of 201), \
         {allocs} allocations, {bytes}\n",
        threads = cost.runtime_threads,
        plain = cost.plain_tasks_per_second,
        monitored = cost.monitored_tasks_per_second,
        overhead = cost.overhead_percent,
        scrape = SCRAPE_INTERVAL.as_secs(),
        polls = cost.polls_per_task,
        plain_poll = cost.plain_nanos_per_poll,
        monitored_poll = cost.monitored_nanos_per_poll,
        per_poll = cost.per_poll_overhead_percent,
        collect = cost.collect_micros,
        allocs = cost.collect_allocations,
        bytes = crate::summary::bytes(cost.collect_bytes),
    )
}
