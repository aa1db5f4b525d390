//! A worker process from flags to exit summary; `worker-bad` and `worker-optimized` are this
//! with a different [`WorkerKind`].
//!
//! The end of a run is where data gets lost, so it is ordered by what matters most: the summary
//! is printed first, then each profile file is written on its own (one failing does not stop
//! the other), and only then are open HTTP requests given their grace period. How signals stop
//! the worker is in [`crate::shutdown`].

use std::any::Any;
use std::io::{self, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::alloc;
use crate::bad::Bad;
use crate::cli::{self, WorkerArgs};
use crate::exercise::Exercise;
use crate::kind::WorkerKind;
use crate::memory::MemoryStats;
use crate::metrics::Metrics;
use crate::observer::{self, Observer};
use crate::optimized::Optimized;
use crate::pool::{self, Context, RunTotals, Strategy};
use crate::pprof::cpu::{self, CpuSession};
use crate::pprof::heap::{self, HeapView};
use crate::problems::Problems;
use crate::profile_file::ProfilePath;
use crate::server::{self, AppState};
use crate::shutdown::Shutdown;
use crate::summary::Summary;
use crate::tasks::{self, TaskKind};
use crate::{logging, runtime};

/// How long open HTTP requests may delay the exit after the summary and profiles are done.
const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// The `main` of both worker binaries.
pub fn main(kind: WorkerKind) -> ExitCode {
    let args = WorkerArgs::parse_for(kind);
    let console = match args.console_addr(kind) {
        Ok(console) => console,
        Err(err) => {
            eprintln!("error: {err}");
            return ExitCode::from(2);
        }
    };
    if let Err(err) = logging::init_with_console(console) {
        eprintln!("error: {err}");
        return ExitCode::FAILURE;
    }
    let runtime = match runtime::build(args.runtime_threads as usize) {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let code = runtime.block_on(run(kind, args, Shutdown::new()));
    // Everything the run owes is done (the summary printed, the profiles written, open requests
    // given their grace); work still on the blocking pool (a profile symbolized for a client
    // that is gone) must not hold up the exit.
    runtime.shutdown_background();
    code
}

/// Runs one worker until `--duration` elapses or a signal arrives; prints the summary, writes
/// the profile files and returns the exit status: 0 when all went well, 1 when a profile could
/// not be written or the worker could not start, 2 when `--listen` names an address this
/// worker cannot use.
pub async fn run(kind: WorkerKind, args: WorkerArgs, shutdown: Shutdown) -> ExitCode {
    shutdown.listen_for_signals();
    let listen = args.listen_addr(kind);
    let listener = match TcpListener::bind(listen).await {
        Ok(listener) => listener,
        Err(err) => {
            let origin = format!("{listen} ({})", args.listen_origin(kind));
            let (message, code) = listen_error(&origin, listen, &err);
            eprintln!("error: {message}");
            return code;
        }
    };
    let local = match listener.local_addr() {
        Ok(local) => local,
        Err(err) => {
            eprintln!("error: cannot read the address the worker listens on: {err}");
            return ExitCode::FAILURE;
        }
    };
    let whole_run_cpu = match &args.cpuprofile {
        Some(_) => match cpu::start("--cpuprofile (it profiles the whole run)") {
            Ok(session) => Some(session),
            Err(err) => {
                eprintln!(
                    "error: cannot start the CPU profile for --cpuprofile: {}",
                    err.message
                );
                return ExitCode::FAILURE;
            }
        },
        None => None,
    };
    let metrics = Arc::new(Metrics::new(kind, Handle::current()));
    tracing::info!(
        "worker-{kind} serving http://{local}/metrics, /healthz and /debug/pprof/; running for {}",
        cli::format_duration(args.duration)
    );
    let server_stop = CancellationToken::new();
    let state = AppState {
        metrics: Arc::clone(&metrics),
        runtime: Handle::current(),
        stopping: shutdown.stopping().clone(),
    };
    // The accept loop spawns each connection's task: in the HTTP observer's scope, so that
    // what spawning costs is the observer's too.
    let mut server = tasks::spawn(
        TaskKind::Http,
        observer::instrument(
            Observer::Http,
            server::serve(listener, state, server_stop.clone(), SHUTDOWN_GRACE),
        ),
    );

    let ctx = Arc::new(
        Context::new(
            args.run_config(),
            Arc::clone(&metrics),
            CancellationToken::new(),
        )
        .with_burst(args.burst),
    );
    lessons_banner(kind, &args, &metrics);
    let started = Instant::now();
    let live_tasks_start = Handle::current().metrics().num_alive_tasks();
    // The strategy is kept until the summary is taken: what it holds (the bad worker's parked
    // senders) is part of what the summary reports.
    let (totals, reason, _strategy) = match kind {
        WorkerKind::Bad => {
            let bad = Bad::with_problems(&ctx.config, args.problems);
            drive(bad, &ctx, &shutdown, args.duration).await
        }
        WorkerKind::Optimized => {
            drive(Optimized::new(&ctx.config), &ctx, &shutdown, args.duration).await
        }
        WorkerKind::Exercise => {
            drive(Exercise::new(&ctx.config), &ctx, &shutdown, args.duration).await
        }
    };
    // With --max-tasks, what `lab check` grades: read after the run, before anything else
    // (the summary, profiles) can spawn or end tasks.
    let ledger = match ctx.config.max_tasks {
        Some(_) => Some(ledger_line(&ctx, live_tasks_start).await),
        None => None,
    };
    let task_allocs = alloc::AllocCounts {
        allocations: metrics.task_allocations.get(),
        bytes: metrics.task_allocated_bytes.get(),
    };
    let summary = Summary {
        kind,
        listen: local,
        elapsed: started.elapsed(),
        reason,
        totals,
        processed: metrics.processed_total(),
        errors: metrics.errors_total(),
        live_tasks_start,
        live_tasks_end: Handle::current().metrics().num_alive_tasks(),
        helpers_left: tasks::live(TaskKind::Helper),
        memory: MemoryStats::read(),
        process_allocs: alloc::process_counts(),
        task_allocs,
        slowest: ctx.audit.slowest(),
    };
    // First what the run was for; a closed stdout must not lose the profiles either.
    let mut stdout = io::stdout().lock();
    let _ = write!(stdout, "{summary}").and_then(|()| stdout.flush());
    if let Some(ledger) = ledger {
        let _ = writeln!(stdout, "{ledger}").and_then(|()| stdout.flush());
    }
    drop(stdout);

    // Each profile on its own: a CPU profile that cannot be written does not cost the heap one.
    let mut all_written = true;
    if let (Some(session), Some(path)) = (whole_run_cpu, &args.cpuprofile) {
        all_written &= report_write(path, "CPU", cpu_profile(session).await);
    }
    if let Some(path) = &args.memprofile {
        let profile = heap::profile(HeapView::InUse)
            .await
            .map_err(|e| format!("cannot take the heap profile: {}", e.message));
        all_written &= report_write(path, "heap", profile);
    }

    server_stop.cancel();
    tokio::select! {
        joined = &mut server => match joined {
            Ok(Ok(())) => {}
            Ok(Err(err)) => tracing::warn!("HTTP server: {err}"),
            Err(err) => tracing::warn!("HTTP server task: {err}"),
        },
        () = shutdown.forced().cancelled() => {
            server.abort();
            tracing::info!("not waiting for open HTTP requests: stopped at once");
        }
    }
    if all_written {
        ExitCode::SUCCESS
    } else {
        ExitCode::FAILURE
    }
}

/// Says which problems this worker has (log and `worker_problem_enabled`) and any burst.
fn lessons_banner(kind: WorkerKind, args: &WorkerArgs, metrics: &Metrics) {
    let problems = match kind {
        WorkerKind::Bad => Some(args.problems),
        WorkerKind::Optimized => Some(Problems::NONE),
        // The learner's code has whichever problems are left: only `lab check` can say which,
        // so `worker_problem_enabled` claims nothing for it.
        WorkerKind::Exercise => None,
    };
    if let Some(problems) = problems {
        metrics.lessons.set_problems(problems);
    }
    match kind {
        WorkerKind::Bad => tracing::info!("problems: {}", args.problems),
        WorkerKind::Optimized if args.problems != Problems::ALL => tracing::info!(
            "--problems {} is for worker-bad; worker-optimized has every fix and ignores it",
            args.problems
        ),
        WorkerKind::Exercise if args.problems != Problems::ALL => tracing::info!(
            "--problems {} is for worker-bad; worker-exercise has no switches and ignores it",
            args.problems
        ),
        WorkerKind::Optimized | WorkerKind::Exercise => {}
    }
    if let Some(burst) = &args.burst {
        tracing::info!(
            "bursts: {burst} ({} tasks/s for {} of every {})",
            u64::from(args.rate) * u64::from(burst.factor),
            crate::cli::format_duration(burst.on),
            crate::cli::format_duration(burst.every)
        );
    }
}

/// Runs the workload under `strategy` until the duration elapses or a signal arrives, then
/// lets it finish the tasks in hand, unless a second signal says not to wait.
async fn drive<S: Strategy>(
    strategy: S,
    ctx: &Arc<Context>,
    shutdown: &Shutdown,
    duration: Duration,
) -> (
    Option<RunTotals>,
    crate::summary::StopReason,
    Arc<dyn Any + Send + Sync>,
) {
    let strategy = Arc::new(strategy);
    let run = pool::run(Arc::clone(&strategy), Arc::clone(ctx));
    tokio::pin!(run);
    let reason = tokio::select! {
        reason = shutdown.wait(duration) => reason,
        // The pool returns by itself only when `--max-tasks` were produced and handled.
        totals = &mut run => {
            return (Some(totals), crate::summary::StopReason::MaxTasksDone, strategy);
        }
    };
    if reason == crate::summary::StopReason::DurationElapsed {
        tracing::info!("stopping: {reason} (press Ctrl-C to stop at once)");
    }
    ctx.shutdown.cancel();
    let totals = tokio::select! {
        totals = &mut run => Some(totals),
        () = shutdown.forced().cancelled() => None,
    };
    (totals, reason, strategy)
}

/// The `lab-ledger {json}` line `--max-tasks` prints after the summary: the pool's ledger and
/// the tasks the run left alive. It waits (up to 2 s) until the live-task count holds still,
/// so that helpers that were told to finish have had their last poll.
async fn ledger_line(ctx: &Context, live_tasks_start: usize) -> String {
    let alive = || Handle::current().metrics().num_alive_tasks();
    let (mut last, mut steady) = (alive(), 0);
    for _ in 0..40 {
        tokio::time::sleep(Duration::from_millis(50)).await;
        let now = alive();
        steady = if now == last { steady + 1 } else { 0 };
        last = now;
        if steady >= 4 {
            break;
        }
    }
    // The helpers still registered, by where they were spawned: a learner's renamed function
    // is still told apart by its spawn site.
    let mut helper_sites: Vec<HelperSite> = Vec::new();
    let registered = tokio::task::spawn_blocking(tasks::snapshot)
        .await
        .unwrap_or_default();
    for info in registered.iter().filter(|t| t.kind == TaskKind::Helper) {
        let site = format!("{}:{}", info.spawned_at.file(), info.spawned_at.line());
        let function = info.function();
        match helper_sites
            .iter_mut()
            .find(|s| s.site == site && s.function == function)
        {
            Some(found) => found.tasks += 1,
            None => helper_sites.push(HelperSite {
                function: function.to_owned(),
                site,
                tasks: 1,
            }),
        }
    }
    helper_sites.sort_by(|a, b| b.tasks.cmp(&a.tasks).then(a.site.cmp(&b.site)));
    let report = LedgerReport {
        totals: ctx.ledger.totals(),
        tasks_left_alive: last.saturating_sub(live_tasks_start) as u64,
        helpers_left: tasks::live(TaskKind::Helper) as u64,
        helper_sites,
        rejected_ids: ctx.ledger.rejected(),
        lessons: ctx.ledger.lessons(),
        tally_lock: {
            let stats = ctx.metrics.lessons.lock_stats("tally");
            TallyLock {
                acquisitions: stats.acquisitions.get(),
                contended: stats.wait.get_sample_count(),
                wait_seconds: stats.wait.get_sample_sum(),
            }
        },
        metrics_processed: ctx.metrics.processed_total(),
        metrics_errors: ctx.metrics.errors_total(),
        audited: ctx.audit.slowest().is_some(),
    };
    format!(
        "{LEDGER_PREFIX}{}",
        serde_json::to_string(&report).unwrap_or_default()
    )
}

/// What starts the ledger line on stdout.
pub const LEDGER_PREFIX: &str = "lab-ledger ";

/// The ledger line's JSON.
#[derive(Debug, Clone, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct LedgerReport {
    #[serde(flatten)]
    pub totals: pool::LedgerTotals,
    /// Live tokio tasks after the run beyond those before it: the tasks the strategy leaked
    /// (no HTTP client is connected while `lab check` runs a worker).
    pub tasks_left_alive: u64,
    /// Helper tasks still registered (`tasks::live(TaskKind::Helper)`, the exit figure of
    /// `worker_live_tasks{kind="helper"}`): what the leak lesson grades.
    #[serde(default)]
    pub helpers_left: u64,
    /// The same helpers by spawn site, most first.
    #[serde(default)]
    pub helper_sites: Vec<HelperSite>,
    /// Tasks the bounded queue shed, by id: not in `totals`, offered in their place.
    #[serde(default)]
    pub rejected_ids: Vec<u64>,
    /// Seals, their time on the worker task's thread, and the queue (lessons 4 and 6).
    #[serde(default)]
    pub lessons: pool::LedgerLessons,
    /// Lesson 5: the run tally's lock (`worker_lock_wait_seconds{lock="tally"}`).
    #[serde(default)]
    pub tally_lock: TallyLock,
    /// `worker_tasks_processed_total` and `worker_task_errors_total`, which the strategy
    /// records: an honest worker's match the ledger's counts.
    pub metrics_processed: u64,
    pub metrics_errors: u64,
    /// The audit saw at least one task (the summary's slowest task).
    pub audited: bool,
}

/// The run tally's lock over the run, as `worker_lock_*{lock="tally"}` count it.
#[derive(Debug, Clone, Copy, Default, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct TallyLock {
    pub acquisitions: u64,
    /// Acquisitions that had to wait for another holder.
    pub contended: u64,
    pub wait_seconds: f64,
}

/// Helper tasks left alive that were spawned at one place and run one function.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
pub struct HelperSite {
    /// The function the task runs, e.g. `profiling_lab::exercise::progress_reporter`.
    pub function: String,
    /// `file:line` of the `pool::spawn_helper` call.
    pub site: String,
    pub tasks: u64,
}

/// The whole-run CPU profile, symbolized off the async threads.
async fn cpu_profile(session: CpuSession) -> Result<Vec<u8>, String> {
    tokio::task::spawn_blocking(move || session.into_pprof())
        .await
        .map_err(|e| format!("the CPU profile task failed: {e}"))?
        .map_err(|e| format!("cannot take the CPU profile: {}", e.message))
}

/// Writes a profile if it could be taken and says what happened; true when it is on disk.
fn report_write(path: &ProfilePath, what: &str, profile: Result<Vec<u8>, String>) -> bool {
    let shown = path.given().display();
    let written = profile.and_then(|bytes| {
        path.write(&bytes)
            .map_err(|e| format!("cannot write it to {shown}: {e}"))
    });
    match written {
        Ok(()) => {
            eprintln!(
                "wrote the {what} profile to {shown} (read it with: go tool pprof -top {shown})"
            );
            true
        }
        Err(err) => {
            eprintln!(
                "error: the {what} profile was not saved: {err}; any earlier {shown} is unchanged"
            );
            false
        }
    }
}

/// What to say, and the exit status, when the worker cannot listen where it was told to.
/// A value that can never work (an address this machine lacks, a port needing privileges) is
/// a bad flag, status 2; a port another process holds right now is status 1.
fn listen_error(origin: &str, addr: SocketAddr, err: &io::Error) -> (String, ExitCode) {
    let port = addr.port();
    match err.kind() {
        io::ErrorKind::AddrInUse => (
            format!(
                "cannot listen on {origin}: port {port} is in use by another process (is another \
                 worker running?); stop it, or choose another port with --listen"
            ),
            ExitCode::FAILURE,
        ),
        io::ErrorKind::AddrNotAvailable => (
            format!(
                "cannot listen on {origin}: {} is not an address of this machine; use \
                 127.0.0.1:{port} (this machine only), 0.0.0.0:{port} (every interface) or one \
                 of this machine's addresses",
                addr.ip()
            ),
            ExitCode::from(2),
        ),
        io::ErrorKind::PermissionDenied => (
            format!(
                "cannot listen on {origin}: permission denied; ports below 1024 need root or \
                 CAP_NET_BIND_SERVICE, so choose a port from 1024 up with --listen"
            ),
            ExitCode::from(2),
        ),
        _ => (
            format!("cannot listen on {origin}: {err}; choose another address with --listen"),
            ExitCode::FAILURE,
        ),
    }
}
