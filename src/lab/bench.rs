//! `lab bench`: the figures the lab promises, measured in one run on this machine.
//!
//! - what a task costs in each worker: CPU time, allocation calls and bytes, and their ratios;
//! - what the instrumentation (metrics, allocation counting, heap sampling) costs the optimized
//!   worker, whose fast path leaves little room to hide it;
//! - how `/metrics` and the task profile behave when the bad worker has leaked 100k tasks;
//! - the task profile under a storm of requests (mixed `debug=0/1/2`, several at once) against
//!   both workers at default settings and against the workers' HTTP server with 100k leaked
//!   tasks: no hang, no error besides the deliberate 409 of a request that waited too long for
//!   its turn, `/metrics` answering throughout, and the worker still stopping on SIGTERM.
//! - what the runtime metrics (poll-time histogram, task monitors) cost the optimized worker
//!   running flat out ([`runtime_metrics`]).
//! - what lesson 5's lock costs a worker running flat out ([`contention`]).
//! - whether observing the optimized worker changes its lesson metrics (see
//!   [`observer_bench`](crate::lab::observer_bench)).
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
use crate::lab::procs;
use crate::memory::MemoryStats;
use crate::metrics::Metrics;
use crate::optimized::{self, Optimized, Scratch};
use crate::pool::{self, Context, RunConfig, Strategy};
use crate::pprof::tasks::{self, TaskFormat};
use crate::server::{self, AppState};
use crate::summary::bytes;
use crate::task::{Generator, TaskSpec};
use crate::{bad, runtime};

pub mod contention;
pub mod flat_out;
pub mod runtime_metrics;

#[derive(Debug, clap::Args)]
pub struct BenchArgs {
    /// Integers in each task's payload (the workers' --data-size)
    #[arg(long, default_value_t = 10_000, value_parser = crate::cli::data_size_range())]
    pub data_size: u64,

    /// Time spent on each timed comparison, split into alternating rounds: 500ms, 2s, ...
    #[arg(long, default_value = "2s", allow_hyphen_values = true, value_parser = parse_case_time)]
    pub time_per_case: Duration,

    /// Leaked tasks for the /metrics and task-profile measurements
    #[arg(long, default_value_t = 100_000, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(1u64, 2_000_000))]
    pub leaked_tasks: u64,

    /// Task-profile requests per storm target (0 skips the storms)
    #[arg(long, default_value_t = 10_000, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(0u64, 1_000_000))]
    pub profile_requests: u64,

    /// Task-profile requests in flight at once during a storm
    #[arg(long, default_value_t = 4, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(1u64, 64))]
    pub profile_concurrency: u64,

    /// Length of the CPU profile the observer section takes of a running worker-optimized
    #[arg(long, default_value_t = 30, allow_negative_numbers = true,
          value_parser = crate::cli::whole_number(1u64, 300))]
    pub observer_seconds: u64,

    /// Measure only these sections (comma-separated); all of them by default
    #[arg(long, value_enum, value_delimiter = ',', default_values_t = Section::ALL)]
    pub only: Vec<Section>,

    /// Print the figures as JSON instead of a table
    #[arg(long)]
    pub json: bool,
}

/// The sections of `lab bench`, which `--only` selects.
#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum, Serialize)]
#[serde(rename_all = "kebab-case")]
pub enum Section {
    /// What a task costs in each worker.
    Tasks,
    /// What the instrumentation costs the optimized worker.
    Instrumentation,
    /// `/metrics` and the task profile with `--leaked-tasks` leaked tasks.
    Leaked,
    /// Task-profile storms against both workers and against the server with the leaked tasks.
    Storms,
    /// What the runtime metrics cost the optimized worker running flat out.
    RuntimeMetrics,
    /// What lesson 5's lock costs a worker running flat out.
    Contention,
    /// Whether profiling and scraping the optimized worker moves its lesson metrics.
    Observer,
}

impl Section {
    pub const ALL: [Section; 7] = [
        Section::Tasks,
        Section::Instrumentation,
        Section::Leaked,
        Section::Storms,
        Section::RuntimeMetrics,
        Section::Contention,
        Section::Observer,
    ];
}

impl std::fmt::Display for Section {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        use clap::ValueEnum as _;
        let value = self.to_possible_value().expect("no section is skipped");
        f.write_str(value.get_name())
    }
}

/// Everything `lab bench` measures.
#[derive(Debug, Clone, Serialize)]
/// Sections left out with `--only` are `None`.
pub struct BenchReport {
    pub data_size: usize,
    pub bad: Option<TaskCost>,
    pub optimized: Option<TaskCost>,
    pub instrumentation: Option<Instrumentation>,
    pub leaked: Option<LeakedTasks>,
    pub storms: Vec<Storm>,
    pub runtime_metrics: Option<runtime_metrics::RuntimeMetricsCost>,
    pub contention: Option<contention::Contention>,
    pub observer: Option<crate::lab::observer_bench::ObserverEffect>,
}

/// A storm of task-profile requests against one server, and what `/metrics` did meanwhile.
#[derive(Debug, Clone, Serialize)]
pub struct Storm {
    pub target: String,
    /// Tasks in the task profile when the storm started (`goroutine profile: total N`).
    pub tasks: u64,
    pub requests: u64,
    pub concurrency: u64,
    pub ok: u64,
    /// 409: the request waited its turn too long (one task profile at a time).
    pub conflicts: u64,
    /// Any other status.
    pub other_status: u64,
    /// No answer within the client's timeout, or a broken connection.
    pub hangs: u64,
    pub seconds: f64,
    /// Slowest request per `debug` level (0, 1, 2), milliseconds.
    pub slowest_millis: [f64; 3],
    /// Slowest profile per `debug` level as the server made it (its `Server-Timing` render
    /// time, without the wait for its turn or the transfer), milliseconds.
    pub slowest_render_millis: [f64; 3],
    pub render_p99_millis: f64,
    pub p50_millis: f64,
    pub p99_millis: f64,
    pub metrics_scrapes: u64,
    pub metrics_p99_millis: f64,
    pub metrics_max_millis: f64,
    /// For a worker process: it exited with its summary within 15 s of SIGTERM afterwards.
    pub stopped_cleanly: Option<bool>,
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
    pub every_task_text_millis: f64,
    /// Spawning and joining an empty task with `tokio::spawn`, and through the task registry
    /// (`tasks::spawn`), with the leaked tasks in the registry.
    pub plain_spawn_nanos: f64,
    pub registered_spawn_nanos: f64,
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
    let wanted = |section| args.only.contains(&section);

    let (mut bad, mut optimized) = (None, None);
    if wanted(Section::Tasks) {
        eprintln!("measuring what a task costs in each worker...");
        let (b, o) = task_costs(&tasks, data_size, round);
        (bad, optimized) = (Some(b), Some(o));
    }
    let instrumentation = if wanted(Section::Instrumentation) {
        eprintln!("measuring the instrumentation's cost...");
        Some(instrumentation(&tasks, data_size, round)?)
    } else {
        None
    };
    let storming = wanted(Section::Storms) && args.profile_requests > 0;
    let (leaked, leaked_storm) = if wanted(Section::Leaked) || storming {
        eprintln!(
            "leaking {} tasks and timing /metrics and the task profile...",
            args.leaked_tasks
        );
        let (leaked, storm) = leaked_tasks(args.leaked_tasks, storming, &args)?;
        (wanted(Section::Leaked).then_some(leaked), storm)
    } else {
        (None, None)
    };
    let mut storms = Vec::new();
    if storming {
        for kind in [WorkerKind::Bad, WorkerKind::Optimized] {
            eprintln!(
                "{} task-profile requests against worker-{kind} at default settings...",
                args.profile_requests
            );
            storms.push(worker_storm(kind, &args)?);
        }
    }
    storms.extend(leaked_storm);
    let runtime_metrics = if wanted(Section::RuntimeMetrics) {
        eprintln!("measuring the runtime metrics' cost on the optimized worker flat out...");
        Some(runtime_metrics::measure(data_size, round, ROUNDS)?)
    } else {
        None
    };
    let contention = if wanted(Section::Contention) {
        eprintln!("measuring lesson 5 (contention) with each worker flat out...");
        Some(contention::measure(data_size, round, ROUNDS)?)
    } else {
        None
    };
    let observer = if wanted(Section::Observer) {
        eprintln!(
            "profiling and scraping a running worker-optimized ({} s CPU profile)...",
            args.observer_seconds
        );
        Some(crate::lab::observer_bench::measure(args.observer_seconds)?)
    } else {
        None
    };

    let report = BenchReport {
        data_size,
        bad,
        optimized,
        instrumentation,
        leaked,
        storms,
        runtime_metrics,
        contention,
        observer,
    };
    if args.json {
        let json = serde_json::to_string_pretty(&report).map_err(|e| e.to_string())?;
        println!("{json}");
    } else {
        print!("{}", table(&report));
        if let Some(cost) = &report.runtime_metrics {
            print!("{}", runtime_metrics::table(cost));
        }
        if let Some(contention) = &report.contention {
            print!("{}", contention::table(contention));
        }
    }
    Ok(ExitCode::SUCCESS)
}

fn parse_case_time(value: &str) -> Result<Duration, String> {
    crate::cli::duration_in(
        Duration::from_millis(100),
        Duration::from_secs(600),
        "500ms or 2s",
    )(value)
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
/// kept but never used), then times `/metrics` and the task profile, and storms the workers'
/// HTTP server with task-profile requests while they are there.
fn leaked_tasks(
    count: u64,
    storming: bool,
    args: &BenchArgs,
) -> Result<(LeakedTasks, Option<Storm>), String> {
    let rt = runtime::build(runtime::DEFAULT_THREADS).map_err(|e| e.to_string())?;
    let metrics = Arc::new(Metrics::new(WorkerKind::Bad, rt.handle().clone()));
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

    let time = |format: TaskFormat| -> Result<f64, String> {
        let start = Instant::now();
        std::hint::black_box(tasks::render(format).map_err(|e| e.message)?);
        Ok(start.elapsed().as_secs_f64() * 1e3)
    };
    time(TaskFormat::Profile)?;
    let task_profile_millis = time(TaskFormat::Profile)?;
    let task_text_millis = time(TaskFormat::Grouped)?;
    let every_task_text_millis = time(TaskFormat::EveryTask)?;
    let [plain_spawn_nanos, registered_spawn_nanos] = spawn_costs(&rt);

    let storm = if storming {
        eprintln!(
            "{} task-profile requests against the workers' HTTP server with {count} leaked tasks...",
            args.profile_requests
        );
        let stop = CancellationToken::new();
        let (listener, addr) = rt.block_on(async {
            let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("cannot listen on 127.0.0.1: {e}"))?;
            let addr = listener.local_addr().map_err(|e| e.to_string())?;
            Ok::<_, String>((listener, addr))
        })?;
        let state = AppState {
            metrics: Arc::clone(&metrics),
            runtime: rt.handle().clone(),
            stopping: CancellationToken::new(),
        };
        let server = rt.spawn(server::serve(
            listener,
            state,
            stop.clone(),
            Duration::from_secs(5),
        ));
        let storm = storm(
            &format!("HTTP server with {count} leaked tasks"),
            &format!("http://{addr}"),
            args,
        );
        stop.cancel();
        let _ = rt.block_on(server);
        Some(storm)
    } else {
        None
    };
    drop(senders);
    Ok((
        LeakedTasks {
            tasks: count,
            metrics_render_micros: render_times[render_times.len() / 2],
            metrics_bytes: size,
            task_profile_millis,
            task_text_millis,
            every_task_text_millis,
            plain_spawn_nanos,
            registered_spawn_nanos,
            bytes_per_leaked_task,
        },
        storm,
    ))
}

/// Nanoseconds to spawn and join an empty task, with `tokio::spawn` and with `tasks::spawn`,
/// in alternating rounds (medians).
fn spawn_costs(rt: &tokio::runtime::Runtime) -> [f64; 2] {
    const SPAWNS: u32 = 20_000;
    let mut samples = [Vec::new(), Vec::new()];
    for _ in 0..ROUNDS {
        for (registered, samples) in [false, true].into_iter().zip(&mut samples) {
            let nanos = rt.block_on(async {
                let start = Instant::now();
                for _ in 0..SPAWNS {
                    let handle = if registered {
                        crate::tasks::spawn(crate::tasks::TaskKind::Observer, async {})
                    } else {
                        tokio::spawn(async {})
                    };
                    let _ = handle.await;
                }
                start.elapsed().as_nanos() as f64 / f64::from(SPAWNS)
            });
            samples.push(nanos);
        }
    }
    samples.map(|mut s| {
        s.sort_by(f64::total_cmp);
        s[s.len() / 2]
    })
}

/// Storms a worker process started at default settings, then stops it with SIGTERM.
fn worker_storm(kind: WorkerKind, args: &BenchArgs) -> Result<Storm, String> {
    let binary = procs::sibling_binary(kind.binary())?;
    let worker = procs::WorkerProcess::spawn(
        &binary,
        kind,
        std::net::SocketAddr::from(([127, 0, 0, 1], 0)),
        // Long enough to outlast the storm; it is stopped with SIGTERM afterwards.
        &["--duration".to_owned(), "10h".to_owned()],
        None,
    )?;
    // Let it leak a little (the bad worker) before the storm.
    std::thread::sleep(Duration::from_secs(3));
    let mut result = storm(
        &format!("worker-{kind}, default settings"),
        &worker.url(""),
        args,
    );
    worker.begin_terminate();
    let stopped = worker.wait_within(Duration::from_secs(15))?;
    result.stopped_cleanly =
        Some(!stopped.killed && stopped.status.success() && stopped.output.contains("summary"));
    Ok(result)
}

/// One task-profile request of a storm: its debug level, milliseconds until the whole answer
/// arrived, outcome (0 ok, 1 conflict, 2 other status, 3 hang) and the server's render time.
type Answer = (usize, f64, u8, Option<f64>);

/// Sends `args.profile_requests` task-profile requests to `base`, `args.profile_concurrency` at
/// a time, cycling through `debug=0`, `1` and `2`, while another thread scrapes `/metrics`.
fn storm(target: &str, base: &str, args: &BenchArgs) -> Storm {
    use std::sync::Mutex;
    use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};

    const TIMEOUT: Duration = Duration::from_secs(60);
    let tasks = crate::client::get(&format!("{base}/debug/pprof/goroutine?debug=1"), TIMEOUT)
        .ok()
        .and_then(|r| {
            r.text()
                .lines()
                .next()
                .and_then(|l| l.strip_prefix("goroutine profile: total "))
                .and_then(|n| n.trim().parse().ok())
        })
        .unwrap_or(0);
    let next = AtomicU64::new(0);
    let done = AtomicBool::new(false);
    let results: Mutex<Vec<Answer>> = Mutex::new(Vec::new());
    let mut scrapes: Vec<f64> = Vec::new();
    let started = Instant::now();
    std::thread::scope(|scope| {
        let prober = scope.spawn(|| {
            let mut times = Vec::new();
            while !done.load(Ordering::Relaxed) {
                let start = Instant::now();
                let ok = crate::client::get(&format!("{base}/metrics"), TIMEOUT)
                    .is_ok_and(|r| r.status == 200);
                times.push(if ok {
                    start.elapsed().as_secs_f64() * 1e3
                } else {
                    f64::INFINITY
                });
                std::thread::sleep(Duration::from_millis(20));
            }
            times
        });
        let clients: Vec<_> = (0..args.profile_concurrency)
            .map(|_| {
                scope.spawn(|| {
                    let mut mine = Vec::new();
                    loop {
                        let i = next.fetch_add(1, Ordering::Relaxed);
                        if i >= args.profile_requests {
                            break;
                        }
                        let debug = (i % 3) as usize;
                        let url = format!("{base}/debug/pprof/goroutine?debug={debug}");
                        let start = Instant::now();
                        let (outcome, render) = match timed_get(&url, TIMEOUT) {
                            Ok((200, render)) => (0, render),
                            Ok((409, _)) => (1, None),
                            Ok(_) => (2, None),
                            Err(_) => (3, None),
                        };
                        mine.push((debug, start.elapsed().as_secs_f64() * 1e3, outcome, render));
                    }
                    results
                        .lock()
                        .unwrap_or_else(|e| e.into_inner())
                        .extend(mine);
                })
            })
            .collect();
        for client in clients {
            let _ = client.join();
        }
        done.store(true, Ordering::Relaxed);
        scrapes = prober.join().unwrap_or_default();
    });
    let seconds = started.elapsed().as_secs_f64();
    let results = results.into_inner().unwrap_or_else(|e| e.into_inner());
    let count = |outcome| results.iter().filter(|r| r.2 == outcome).count() as u64;
    let mut slowest_millis = [0.0f64; 3];
    let mut slowest_render_millis = [0.0f64; 3];
    for &(debug, millis, _, render) in &results {
        slowest_millis[debug] = slowest_millis[debug].max(millis);
        slowest_render_millis[debug] = slowest_render_millis[debug].max(render.unwrap_or(0.0));
    }
    let mut renders: Vec<f64> = results.iter().filter_map(|r| r.3).collect();
    renders.sort_by(f64::total_cmp);
    let mut times: Vec<f64> = results.iter().map(|r| r.1).collect();
    times.sort_by(f64::total_cmp);
    scrapes.sort_by(f64::total_cmp);
    Storm {
        target: target.to_owned(),
        tasks,
        requests: results.len() as u64,
        concurrency: args.profile_concurrency,
        ok: count(0),
        conflicts: count(1),
        other_status: count(2),
        hangs: count(3),
        seconds,
        slowest_millis,
        slowest_render_millis,
        render_p99_millis: quantile(&renders, 0.99),
        p50_millis: quantile(&times, 0.5),
        p99_millis: quantile(&times, 0.99),
        metrics_scrapes: scrapes.len() as u64,
        metrics_p99_millis: quantile(&scrapes, 0.99),
        metrics_max_millis: scrapes.last().copied().unwrap_or(0.0),
        stopped_cleanly: None,
    }
}

/// GETs `url` and reads the whole body; returns the status and the `render` duration of the
/// `Server-Timing` header (milliseconds), which task profiles send.
fn timed_get(url: &str, timeout: Duration) -> Result<(u16, Option<f64>), String> {
    let response = crate::client::get(url, timeout)?;
    Ok((response.status, render_millis(&response.server_timing)))
}

/// The `render` entry's duration in a `Server-Timing` header: `wait;dur=0.1, render;dur=52.3`.
fn render_millis(header: &str) -> Option<f64> {
    header
        .split(',')
        .map(str::trim)
        .find_map(|metric| metric.strip_prefix("render;dur="))
        .and_then(|d| d.parse().ok())
}

/// The `q` quantile of sorted `values` (0 when empty).
fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    sorted[((sorted.len() - 1) as f64 * q).round() as usize]
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
    if let (Some(bad), Some(optimized)) = (&r.bad, &r.optimized) {
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
            micros(bad.nanos_per_task),
            micros(optimized.nanos_per_task),
            ratio(bad.nanos_per_task, optimized.nanos_per_task)
        );
        let _ = writeln!(
            out,
            "{:<34}{:>14.1}{:>14.1}{:>20}",
            "  heap allocations",
            bad.allocations_per_task,
            optimized.allocations_per_task,
            ratio(bad.allocations_per_task, optimized.allocations_per_task)
        );
        let _ = writeln!(
            out,
            "{:<34}{:>14}{:>14}{:>20}",
            "  bytes allocated",
            bytes(bad.bytes_per_task as u64),
            bytes(optimized.bytes_per_task as u64),
            ratio(bad.bytes_per_task, optimized.bytes_per_task)
        );
    }
    if let Some(i) = &r.instrumentation {
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
    }
    if let Some(l) = &r.leaked {
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
            "  grouped text (debug=1)          {:.0} ms",
            l.task_text_millis
        );
        let _ = writeln!(
            out,
            "  every task as text (debug=2)    {:.0} ms",
            l.every_task_text_millis
        );
        let _ = writeln!(
            out,
            "  spawn and join an empty task    {:.1} µs through the task registry, {:.1} µs with tokio::spawn",
            l.registered_spawn_nanos / 1e3,
            l.plain_spawn_nanos / 1e3
        );
        let _ = writeln!(
            out,
            "  memory per leaked task          {:.0} B (an idle task and its channel)",
            l.bytes_per_leaked_task
        );
    }
    for storm in &r.storms {
        let _ = writeln!(out);
        let _ = writeln!(
            out,
            "task-profile storm: {} ({} tasks; goals: 0 hangs, only 200 and 409, /metrics p99 under 50 ms)",
            storm.target, storm.tasks
        );
        let _ = writeln!(
            out,
            "  requests                        {} in {:.1} s, {} at a time, debug=0/1/2 in turn",
            storm.requests, storm.seconds, storm.concurrency
        );
        let _ = writeln!(
            out,
            "  answers                         {} ok, {} 409 (waited too long for its turn), {} other, {} hangs",
            storm.ok, storm.conflicts, storm.other_status, storm.hangs
        );
        let _ = writeln!(
            out,
            "  latency                         p50 {:.1} ms, p99 {:.1} ms; slowest debug=0 {:.0} ms, debug=1 {:.0} ms, debug=2 {:.0} ms",
            storm.p50_millis,
            storm.p99_millis,
            storm.slowest_millis[0],
            storm.slowest_millis[1],
            storm.slowest_millis[2]
        );
        let _ = writeln!(
            out,
            "  making each profile             p99 {:.1} ms; slowest debug=0 {:.0} ms, debug=1 {:.0} ms, debug=2 {:.0} ms (goal: under 1 s)",
            storm.render_p99_millis,
            storm.slowest_render_millis[0],
            storm.slowest_render_millis[1],
            storm.slowest_render_millis[2]
        );
        let _ = writeln!(
            out,
            "  /metrics meanwhile              {} scrapes, p99 {:.1} ms, slowest {:.1} ms",
            storm.metrics_scrapes, storm.metrics_p99_millis, storm.metrics_max_millis
        );
        if let Some(clean) = storm.stopped_cleanly {
            let _ = writeln!(
                out,
                "  SIGTERM afterwards              {}",
                if clean {
                    "exited with its summary"
                } else {
                    "DID NOT exit cleanly within 15 s"
                }
            );
        }
    }
    if let Some(observer) = &r.observer {
        let _ = writeln!(out);
        out.push_str(&crate::lab::observer_bench::table(observer));
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn reads_the_render_time_of_a_server_timing_header() {
        assert_eq!(render_millis("wait;dur=0.1, render;dur=52.3"), Some(52.3));
        assert_eq!(render_millis("wait;dur=0.1"), None);
    }
}
