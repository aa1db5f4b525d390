//! Runs a worker's pool flat out for a while, in this process: what `lab bench`'s throughput
//! sections share.
//!
//! The producer offers the highest rate `--rate` accepts, so it never waits for the clock, only
//! for the queue: the workers' throughput is what their code, the runtime's threads and the
//! machine allow.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::runtime::Runtime;
use tokio_util::sync::CancellationToken;

use crate::cpu_time;
use crate::kind::WorkerKind;
use crate::metrics::Metrics;
use crate::pool::{self, Context, RunConfig, Strategy};

/// The lab's Prometheus scrape interval (prometheus/prometheus.yml).
pub const SCRAPE_INTERVAL: Duration = Duration::from_secs(2);

/// A run configuration that keeps the workers busy: the highest rate the flag accepts and
/// rounds that never end.
pub fn config(data_size: usize, workers: usize) -> RunConfig {
    RunConfig {
        tasks_per_round: 1_000_000_000,
        workers,
        data_size,
        rate: 1_000_000,
        seed: 42,
        max_tasks: None,
    }
}

/// What one flat-out run did.
#[derive(Debug, Clone, Copy)]
pub struct FlatOut {
    pub tasks_per_second: f64,
    pub processed: u64,
    /// Acquisitions of the run's tally lock (lesson 5), the contended ones, and the time they
    /// waited; the tasks still in flight when the time is up are counted here too.
    pub lock_acquisitions: u64,
    pub lock_contentions: u64,
    pub lock_wait: Duration,
    /// CPU the process used per second of the run, in cores: the worker runs alone in it.
    pub cpu_cores: f64,
}

/// Runs `strategy`'s pool on `rt` for `time`, rendering `/metrics` every [`SCRAPE_INTERVAL`]
/// if `scrape`, as the lab's Prometheus would.
pub fn run<S: Strategy>(
    rt: &Runtime,
    kind: WorkerKind,
    strategy: S,
    config: &RunConfig,
    time: Duration,
    scrape: bool,
) -> FlatOut {
    let metrics = Arc::new(Metrics::new(kind, rt.handle().clone()));
    let ctx = Arc::new(Context::new(
        config.clone(),
        Arc::clone(&metrics),
        CancellationToken::new(),
    ));
    let strategy = Arc::new(strategy);
    let start = Instant::now();
    let cpu_start = cpu_time::process();
    let (processed, elapsed, cpu) = rt.block_on(async {
        let run = tokio::spawn(pool::run(strategy, Arc::clone(&ctx)));
        let scrapes = scrape.then(|| {
            let metrics = Arc::clone(&metrics);
            let stop = ctx.shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(SCRAPE_INTERVAL);
                loop {
                    tokio::select! {
                        () = stop.cancelled() => break,
                        _ = tick.tick() => { std::hint::black_box(metrics.render()); }
                    }
                }
            })
        });
        tokio::time::sleep(time).await;
        // Counted when the time is up; the tasks still in flight are not.
        let done = (
            metrics.processed_total(),
            start.elapsed(),
            cpu_time::process().saturating_sub(cpu_start),
        );
        ctx.shutdown.cancel();
        let _ = run.await;
        if let Some(scrapes) = scrapes {
            let _ = scrapes.await;
        }
        done
    });
    let wait = metrics.lessons.lock_wait.with_label_values(&["tally"]);
    FlatOut {
        tasks_per_second: processed as f64 / elapsed.as_secs_f64(),
        processed,
        lock_acquisitions: metrics
            .lessons
            .lock_acquisitions
            .with_label_values(&["tally"])
            .get(),
        lock_contentions: wait.get_sample_count(),
        lock_wait: Duration::from_secs_f64(wait.get_sample_sum()),
        cpu_cores: cpu.as_secs_f64() / elapsed.as_secs_f64(),
    }
}

/// The median of `values` (not empty).
pub fn median(mut values: Vec<f64>) -> f64 {
    values.sort_by(f64::total_cmp);
    values[values.len() / 2]
}
