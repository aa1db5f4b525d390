//! `lab bench`: the figures the lab promises, measured in one run on this machine.
//!
//! - what a task costs in each worker: CPU time, allocation calls and bytes, and their ratios;
//! - what the instrumentation (metrics, allocation counting, heap sampling) costs the optimized
//!   worker, whose fast path leaves little room to hide it;
//! - how `/metrics` and the task profile behave when the bad worker has leaked 100k tasks.
//!
//! Timings alternate between the variants being compared and report medians, so a burst of
//! noise from the rest of the machine lands on both sides instead of skewing one.

use std::fmt::Write as _;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::Serialize;
use tokio::sync::oneshot;
use tokio_util::sync::CancellationToken;

use crate::alloc::{self, AllocCounts, CountingAlloc};
use crate::kind::WorkerKind;
use crate::memory::MemoryStats;
use crate::metrics::Metrics;
use crate::optimized::{self, Optimized, Scratch};
use crate::pool::{self, Context, RunConfig, Strategy};
use crate::pprof::tasks::{self, TaskFormat};
use crate::summary::bytes;
use crate::task::{Generator, TaskSpec};
use crate::{bad, runtime};

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Integers in each task's payload (the workers' --data-size)
    #[arg(long, default_value_t = 10_000, value_parser = crate::cli::data_size_range())]
    pub data_size: u64,

    /// Time spent on each timed comparison, split into alternating rounds: 500ms, 2s, ...
    #[arg(long, default_value = "2s", value_parser = parse_case_time)]
    pub time_per_case: Duration,

    /// Leaked tasks for the /metrics and task-profile measurements
    #[arg(long, default_value_t = 100_000, value_parser = clap::value_parser!(u64).range(1..=2_000_000))]
    pub leaked_tasks: u64,

    /// Print the figures as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// Everything `lab bench` measures.
#[derive(Debug, Clone, Serialize)]
pub struct BenchReport {
    pub data_size: usize,
    pub bad: TaskCost,
    pub optimized: TaskCost,
    pub instrumentation: Instrumentation,
    pub leaked: LeakedTasks,
}

/// What one task costs, averaged.
#[derive(Debug, Clone, Copy, Serialize)]
pub struct TaskCost {
    pub nanos_per_task: f64,
    pub allocations_per_task: f64,
    pub bytes_per_task: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct Instrumentation {
    /// `optimized::process` alone.
    pub bare_nanos_per_task: f64,
    /// The same task the way a worker handles it: timing, metrics, the allocation window.
    pub instrumented_nanos_per_task: f64,
    pub overhead_percent: f64,
    /// An alloc/free pair through jemalloc directly, and through the counting allocator.
    pub jemalloc_nanos_per_allocation: f64,
    pub counting_nanos_per_allocation: f64,
}

#[derive(Debug, Clone, Copy, Serialize)]
pub struct LeakedTasks {
    pub tasks: u64,
    pub metrics_render_micros: f64,
    pub metrics_bytes: usize,
    pub task_profile_millis: f64,
    pub task_text_millis: f64,
    /// jemalloc's allocated bytes per leaked (idle, channel-waiting) task.
    pub bytes_per_leaked_task: f64,
}

/// Rounds each timed comparison is split into.
const ROUNDS: u32 = 7;
/// Distinct tasks cycled through, so payload generation does not hit one cached input.
const DISTINCT_TASKS: usize = 256;

pub fn run(args: BenchArgs) -> Result<ExitCode, String> {
    let data_size = args.data_size as usize;
    let mut generator = Generator::new(42, data_size);
    let tasks: Vec<TaskSpec> = (0..DISTINCT_TASKS).map(|_| generator.next_task()).collect();
    let round = args.time_per_case / ROUNDS;

    eprintln!("measuring what a task costs in each worker...");
    let (bad, optimized) = task_costs(&tasks, data_size, round);
    eprintln!("measuring the instrumentation's cost...");
    let instrumentation = instrumentation(&tasks, data_size, round)?;
    eprintln!(
        "leaking {} tasks and timing /metrics and the task profile...",
        args.leaked_tasks
    );
    let leaked = leaked_tasks(args.leaked_tasks)?;

    let report = BenchReport {
        data_size,
        bad,
        optimized,
        instrumentation,
        leaked,
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", table(&report));
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_case_time(value: &str) -> Result<Duration, String> {
    let time = humantime::parse_duration(value)
        .map_err(|e| format!("{e}; expected a duration such as 500ms or 2s"))?;
    if !(Duration::from_millis(100)..=Duration::from_secs(600)).contains(&time) {
        return Err("must be from 100ms to 10m".to_owned());
    }
    Ok(time)
}

/// Times `variants` in alternating rounds of about `round` each; returns the median
/// nanoseconds per call of each.
fn alternate<const N: usize>(round: Duration, variants: &mut [&mut dyn FnMut(); N]) -> [f64; N] {
    let mut samples: [Vec<f64>; N] = std::array::from_fn(|_| Vec::new());
    for _ in 0..ROUNDS {
        for (variant, samples) in variants.iter_mut().zip(&mut samples) {
            let start = Instant::now();
            let mut calls = 0u64;
            while start.elapsed() < round || calls == 0 {
                variant();
                calls += 1;
            }
            samples.push(start.elapsed().as_nanos() as f64 / calls as f64);
        }
    }
    samples.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    })
}

/// Cost per task of `bad::process` and `optimized::process`, on this thread.
fn task_costs(tasks: &[TaskSpec], data_size: usize, round: Duration) -> (TaskCost, TaskCost) {
    let mut scratch = Scratch::with_capacity(data_size);
    let (mut next_bad, mut next_optimized) = (0, 0);
    let (mut bad_allocs, mut optimized_allocs) = (AllocCounts::default(), AllocCounts::default());
    let (mut bad_tasks, mut optimized_tasks) = (0u64, 0u64);
    let mut run_bad = || {
        let task = tasks[next_bad % tasks.len()];
        next_bad += 1;
        let before = alloc::thread_counts().unwrap_or_default();
        let _ = std::hint::black_box(bad::process(task, data_size));
        add(
            &mut bad_allocs,
            alloc::thread_counts().unwrap_or_default().since(before),
        );
        bad_tasks += 1;
    };
    let mut run_optimized = || {
        let task = &tasks[next_optimized % tasks.len()];
        next_optimized += 1;
        let before = alloc::thread_counts().unwrap_or_default();
        let _ = std::hint::black_box(optimized::process(task, &mut scratch, data_size));
        add(
            &mut optimized_allocs,
            alloc::thread_counts().unwrap_or_default().since(before),
        );
        optimized_tasks += 1;
    };
    let [bad_nanos, optimized_nanos] = alternate(round, &mut [&mut run_bad, &mut run_optimized]);
    let cost = |nanos, counts: AllocCounts, tasks: u64| TaskCost {
        nanos_per_task: nanos,
        allocations_per_task: counts.allocations as f64 / tasks as f64,
        bytes_per_task: counts.bytes as f64 / tasks as f64,
    };
    (
        cost(bad_nanos, bad_allocs, bad_tasks),
        cost(optimized_nanos, optimized_allocs, optimized_tasks),
    )
}

fn add(total: &mut AllocCounts, more: AllocCounts) {
    total.allocations += more.allocations;
    total.bytes += more.bytes;
}

/// The optimized worker's per-task path with and without its instrumentation, and the
/// counting allocator against plain jemalloc.
fn instrumentation(
    tasks: &[TaskSpec],
    data_size: usize,
    round: Duration,
) -> Result<Instrumentation, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .build()
        .map_err(|e| e.to_string())?;
    let config = RunConfig {
        tasks_per_round: 1,
        workers: 1,
        data_size,
        rate: 1,
        seed: 42,
        max_tasks: None,
    };
    let metrics = Arc::new(Metrics::new(WorkerKind::Optimized, rt.handle().clone()));
    let ctx = Arc::new(Context::new(
        config.clone(),
        metrics,
        CancellationToken::new(),
    ));
    let strategy = Optimized::new(&config);
    let mut worker = strategy.worker(&ctx);
    let mut scratch = Scratch::with_capacity(data_size);
    let (mut next_bare, mut next_instrumented) = (0, 0);
    let mut bare = || {
        let task = &tasks[next_bare % tasks.len()];
        next_bare += 1;
        let _ = std::hint::black_box(optimized::process(task, &mut scratch, data_size));
    };
    let mut instrumented = || {
        let task = tasks[next_instrumented % tasks.len()];
        next_instrumented += 1;
        let _ = std::hint::black_box(pool::handle_counted(&strategy, &mut worker, task, &ctx));
    };
    let [bare_nanos, instrumented_nanos] = alternate(round, &mut [&mut bare, &mut instrumented]);

    let layout = std::alloc::Layout::from_size_align(64, 8).expect("valid layout");
    let pair = |allocator: &dyn std::alloc::GlobalAlloc| {
        // SAFETY: a fresh allocation of `layout`, freed with the same allocator and layout.
        unsafe {
            let ptr = allocator.alloc(layout);
            std::hint::black_box(ptr);
            allocator.dealloc(ptr, layout);
        }
    };
    let [jemalloc, counting] = alternate(
        round / 4,
        &mut [&mut || pair(&tikv_jemallocator::Jemalloc), &mut || {
            pair(&CountingAlloc)
        }],
    );
    Ok(Instrumentation {
        bare_nanos_per_task: bare_nanos,
        instrumented_nanos_per_task: instrumented_nanos,
        overhead_percent: 100.0 * (instrumented_nanos - bare_nanos) / bare_nanos,
        jemalloc_nanos_per_allocation: jemalloc,
        counting_nanos_per_allocation: counting,
    })
}

/// Leaks `count` tasks the way the bad worker does (each waiting on a channel whose sender is
/// kept but never used), then times `/metrics` and the task profile.
fn leaked_tasks(count: u64) -> Result<LeakedTasks, String> {
    let rt = runtime::build().map_err(|e| e.to_string())?;
    let metrics = Metrics::new(WorkerKind::Bad, rt.handle().clone());
    let before = MemoryStats::read().allocated;
    let senders: Vec<oneshot::Sender<()>> = rt.block_on(async {
        (0..count)
            .map(|_| {
                let (tx, rx) = oneshot::channel::<()>();
                pool::spawn_helper(async move {
                    let _ = rx.await;
                });
                tx
            })
            .collect()
    });
    // Let every task reach its first await.
    rt.block_on(async { tokio::time::sleep(Duration::from_millis(200)).await });
    let bytes_per_leaked_task =
        MemoryStats::read().allocated.saturating_sub(before) as f64 / count as f64;

    let mut render_times = Vec::new();
    let mut size = 0;
    for _ in 0..201 {
        let start = Instant::now();
        size = std::hint::black_box(metrics.render()).len();
        render_times.push(start.elapsed().as_secs_f64() * 1e6);
    }
    render_times.sort_by(f64::total_cmp);

    let handle = rt.handle().clone();
    let time = |format: TaskFormat| -> Result<f64, String> {
        let start = Instant::now();
        rt.block_on(tasks::render(&handle, format))
            .map_err(|e| e.message)?;
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    // The first dump parses the binary's debug information; time the second of each.
    time(TaskFormat::Profile)?;
    let task_profile_millis = time(TaskFormat::Profile)?;
    let task_text_millis = time(TaskFormat::Grouped)?;
    drop(senders);
    Ok(LeakedTasks {
        tasks: count,
        metrics_render_micros: render_times[render_times.len() / 2],
        metrics_bytes: size,
        task_profile_millis,
        task_text_millis,
        bytes_per_leaked_task,
    })
}

fn ratio(bad: f64, optimized: f64) -> String {
    if optimized == 0.0 {
        if bad == 0.0 {
            "-".into()
        } else {
            "∞ (optimized: 0)".into()
        }
    } else {
        format!("{:.1}x", bad / optimized)
    }
}

fn table(r: &BenchReport) -> String {
    let mut out = String::new();
    let micros = |nanos: f64| format!("{:.1} µs", nanos / 1e3);
    let _ = writeln!(
        out,
        "lab bench: payloads of {} values, medians of {ROUNDS} alternating rounds",
        r.data_size
    );
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "{:<34}{:>14}{:>14}{:>20}",
        "per task", "bad", "optimized", "bad/optimized"
    );
    let _ = writeln!(
        out,
        "{:<34}{:>14}{:>14}{:>20}",
        "  CPU time (one thread)",
        micros(r.bad.nanos_per_task),
        micros(r.optimized.nanos_per_task),
        ratio(r.bad.nanos_per_task, r.optimized.nanos_per_task)
    );
    let _ = writeln!(
        out,
        "{:<34}{:>14.1}{:>14.1}{:>20}",
        "  heap allocations",
        r.bad.allocations_per_task,
        r.optimized.allocations_per_task,
        ratio(r.bad.allocations_per_task, r.optimized.allocations_per_task)
    );
    let _ = writeln!(
        out,
        "{:<34}{:>14}{:>14}{:>20}",
        "  bytes allocated",
        bytes(r.bad.bytes_per_task as u64),
        bytes(r.optimized.bytes_per_task as u64),
        ratio(r.bad.bytes_per_task, r.optimized.bytes_per_task)
    );
    let i = &r.instrumentation;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "instrumentation on the optimized worker (goal: at most 2%)"
    );
    let _ = writeln!(
        out,
        "  processing alone                {}/task",
        micros(i.bare_nanos_per_task)
    );
    let _ = writeln!(
        out,
        "  as a worker handles it          {}/task ({:+.2}%: timing, metrics, allocation window)",
        micros(i.instrumented_nanos_per_task),
        i.overhead_percent
    );
    let _ = writeln!(
        out,
        "  counting allocator              {:.1} ns per alloc+free vs {:.1} ns for jemalloc alone",
        i.counting_nanos_per_allocation, i.jemalloc_nanos_per_allocation
    );
    let _ = writeln!(
        out,
        "                                  (the optimized worker allocates nothing per task)"
    );
    let l = &r.leaked;
    let _ = writeln!(out);
    let _ = writeln!(
        out,
        "with {} leaked tasks (goals: /metrics under 1 ms, task profile under 1 s)",
        l.tasks
    );
    let _ = writeln!(
        out,
        "  /metrics render                 {:.0} µs (median of 201, {})",
        l.metrics_render_micros,
        bytes(l.metrics_bytes as u64)
    );
    let _ = writeln!(
        out,
        "  task profile (goroutine)        {:.0} ms",
        l.task_profile_millis
    );
    let _ = writeln!(
        out,
        "  task dump as text (debug=1)     {:.0} ms",
        l.task_text_millis
    );
    let _ = writeln!(
        out,
        "  memory per leaked task          {:.0} B (an idle task and its channel)",
        l.bytes_per_leaked_task
    );
    out
}
