//! A worker process from flags to exit summary; `worker-bad` and `worker-optimized` are this
//! with a different [`WorkerKind`].

use std::any::Any;
use std::path::Path;
use std::process::ExitCode;
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::alloc;
use crate::bad::Bad;
use crate::cli::WorkerArgs;
use crate::kind::WorkerKind;
use crate::memory::MemoryStats;
use crate::metrics::Metrics;
use crate::optimized::Optimized;
use crate::pool::{self, Context, RunTotals, Strategy};
use crate::pprof::cpu;
use crate::pprof::heap::{self, HeapView};
use crate::server::{self, AppState};
use crate::summary::{StopReason, Summary};
use crate::{logging, runtime};

/// How long open HTTP requests (a CPU profile, say) may delay the exit.
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
    let runtime = match runtime::build() {
        Ok(runtime) => runtime,
        Err(err) => {
            eprintln!("error: cannot start the tokio runtime: {err}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(run(kind, args));
    // Work still running on the blocking pool (a profile being symbolized for a client that
    // is gone) must not hold up the exit.
    runtime.shutdown_timeout(SHUTDOWN_GRACE);
    match result {
        Ok(summary) => {
            print!("{summary}");
            ExitCode::SUCCESS
        }
        Err(err) => {
            eprintln!("error: {err}");
            ExitCode::FAILURE
        }
    }
}

/// Runs one worker until `--duration` elapses or a signal arrives; returns its summary.
pub async fn run(kind: WorkerKind, args: WorkerArgs) -> Result<Summary, String> {
    let whole_run_cpu = match &args.cpuprofile {
        Some(_) => {
            Some(cpu::start("--cpuprofile (it profiles the whole run)").map_err(|e| e.message)?)
        }
        None => None,
    };
    let metrics = Arc::new(Metrics::new(kind, Handle::current()));
    let listen = args.listen_addr(kind);
    let listener = TcpListener::bind(listen).await.map_err(|e| {
        format!("cannot listen on {listen}: {e} (is another process using the port? choose another with --listen)")
    })?;
    let local = listener.local_addr().map_err(|e| e.to_string())?;
    tracing::info!(
        "worker-{kind} serving http://{local}/metrics, /healthz and /debug/pprof/; running for {}",
        humantime::format_duration(args.duration)
    );
    let server_stop = CancellationToken::new();
    let state = AppState {
        metrics: Arc::clone(&metrics),
        runtime: Handle::current(),
    };
    let server = tokio::spawn(server::serve(
        listener,
        state,
        server_stop.clone(),
        SHUTDOWN_GRACE,
    ));

    let ctx = Arc::new(Context::new(
        args.run_config(),
        Arc::clone(&metrics),
        CancellationToken::new(),
    ));
    let started = Instant::now();
    let live_tasks_start = Handle::current().metrics().num_alive_tasks();
    // The strategy is kept until the summary is taken: what it holds (the bad worker's parked
    // senders) is part of what the summary reports.
    let (totals, reason, _strategy) = match kind {
        WorkerKind::Bad => drive(Bad::new(&ctx.config), &ctx, args.duration).await,
        WorkerKind::Optimized => drive(Optimized::new(&ctx.config), &ctx, args.duration).await,
    };
    let task_allocs = alloc::AllocCounts {
        allocations: metrics.task_allocations.get(),
        bytes: metrics.task_allocated_bytes.get(),
    };
    let summary = Summary {
        kind,
        elapsed: started.elapsed(),
        reason,
        totals,
        processed: metrics.processed_total(),
        errors: metrics.errors_total(),
        live_tasks_start,
        live_tasks_end: Handle::current().metrics().num_alive_tasks(),
        memory: MemoryStats::read(),
        process_allocs: alloc::process_counts(),
        task_allocs,
        slowest: ctx.audit.slowest(),
    };

    if let (Some(session), Some(path)) = (whole_run_cpu, &args.cpuprofile) {
        let profile = tokio::task::spawn_blocking(move || session.into_pprof())
            .await
            .map_err(|e| e.to_string())?
            .map_err(|e| e.message)?;
        write_profile(path, &profile, "CPU")?;
    }
    if let Some(path) = &args.memprofile {
        let profile = heap::profile(HeapView::InUse)
            .await
            .map_err(|e| e.message)?;
        write_profile(path, &profile, "heap")?;
    }
    server_stop.cancel();
    match server.await {
        Ok(Ok(())) => {}
        Ok(Err(err)) => tracing::warn!("HTTP server: {err}"),
        Err(err) => tracing::warn!("HTTP server task: {err}"),
    }
    Ok(summary)
}

/// Runs the workload under `strategy` until the duration elapses or a signal arrives.
async fn drive<S: Strategy>(
    strategy: S,
    ctx: &Arc<Context>,
    duration: Duration,
) -> (RunTotals, StopReason, Arc<dyn Any + Send + Sync>) {
    let strategy = Arc::new(strategy);
    let run = pool::run(Arc::clone(&strategy), Arc::clone(ctx));
    tokio::pin!(run);
    let reason = tokio::select! {
        reason = stop_signal(duration) => reason,
        // The pool only returns once shut down; if it ever returns early, report it as done.
        totals = &mut run => return (totals, StopReason::DurationElapsed, strategy),
    };
    tracing::info!("stopping: {reason}");
    ctx.shutdown.cancel();
    (run.await, reason, strategy)
}

/// Resolves when the run should stop, and says why.
async fn stop_signal(duration: Duration) -> StopReason {
    #[cfg(unix)]
    let terminate = async {
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(mut sigterm) => {
                sigterm.recv().await;
            }
            Err(err) => {
                tracing::warn!("cannot listen for SIGTERM: {err}");
                std::future::pending::<()>().await;
            }
        }
    };
    #[cfg(not(unix))]
    let terminate = std::future::pending::<()>();
    tokio::select! {
        () = tokio::time::sleep(duration) => StopReason::DurationElapsed,
        _ = tokio::signal::ctrl_c() => StopReason::Interrupted,
        () = terminate => StopReason::Terminated,
    }
}

fn write_profile(path: &Path, profile: &[u8], what: &str) -> Result<(), String> {
    std::fs::write(path, profile)
        .map_err(|e| format!("cannot write the {what} profile to {}: {e}", path.display()))?;
    eprintln!(
        "wrote the {what} profile to {} (read it with: go tool pprof -top {})",
        path.display(),
        path.display()
    );
    Ok(())
}
