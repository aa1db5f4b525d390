//! `--console`: the worker serves tokio-console, which shows every task live: how long its
//! polls take (busy), how long it waits to be polled once woken (scheduled), how long it sits
//! idle, and warnings such as a task that never yields.
//!
//! It is console-subscriber, the tokio project's own: a `tracing` layer that turns tokio's task
//! spans (tokio's `tracing` feature and `--cfg tokio_unstable`) into the console's gRPC protocol.
//! The layer's work happens on the runtime threads, in every poll; its aggregation and the gRPC
//! server run on a thread of their own with their own small runtime, so they never take a turn
//! from the workload's tasks and never show in its runtime metrics.
//!
//! The console is an instrument, so its cost is kept apart (the lab's first rule): the whole
//! console thread and every call into the layer run in the [`Observer::Console`] scope, so what
//! they allocate (per task, two poll-time histograms and the aggregator's copy of its stats) is
//! counted in `worker_observer_*{observer="console"}`, not in the lesson's memory and allocation
//! metrics, and their CPU time in `worker_observer_cpu_seconds_total{observer="console"}`. What
//! is left in the lesson's figures is the `tracing` registry's slot for each live span (tokio
//! asks the registry, not the layer, to store it), and the CPU of creating and entering the
//! spans; docs/MONITORING.md measures both. It is why the console is off by default.

use std::net::{SocketAddr, TcpListener};
use std::time::Duration;

use console_subscriber::{ConsoleLayer, ServerParts};
use tokio_stream::wrappers::TcpListenerStream;
use tracing::Subscriber;
use tracing_subscriber::Layer;
use tracing_subscriber::filter::FilterFn;
use tracing_subscriber::registry::LookupSpan;

use crate::observer::{self, Observer};

mod scoped;

use scoped::Scoped;

/// How long the console keeps a finished task: console-subscriber's default is an hour, with
/// two poll-time histograms per task, which a long run of the bad worker's short-lived helper
/// tasks would pile up. Five seconds still shows what just ended.
const RETENTION: Duration = Duration::from_secs(5);

/// Binds `addr` and starts serving tokio-console on it from a thread of its own; returns the
/// layer to add to the subscriber and the address bound (port 0 picks a free port).
///
/// The address is bound here, before anything runs, so a taken port is an error at start rather
/// than a panic in a background thread (what `ConsoleLayer::builder().spawn()` does).
pub fn start<S>(addr: SocketAddr) -> Result<(impl Layer<S>, SocketAddr), String>
where
    S: Subscriber + for<'a> LookupSpan<'a>,
{
    let listener = TcpListener::bind(addr).map_err(|e| {
        format!(
            "cannot listen for tokio-console on {addr}: {e} (is another worker using the port? choose another with --console-addr)"
        )
    })?;
    let bound = listener.local_addr().map_err(|e| e.to_string())?;
    listener
        .set_nonblocking(true)
        .map_err(|e| format!("tokio-console listener: {e}"))?;
    // Everything the console sets up (its runtime, the layer's channel, the aggregator's
    // tables) is the console's memory.
    let layer = observer::scope(Observer::Console, || serve(listener))?;
    let layer = Scoped::new(Observer::Console, layer);
    Ok((layer.with_filter(FilterFn::new(console_spans)), bound))
}

/// Starts the console's thread, serving on `listener`; returns the layer that feeds it.
fn serve(listener: TcpListener) -> Result<ConsoleLayer, String> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_io()
        .enable_time()
        .build()
        .map_err(|e| format!("cannot start tokio-console's runtime: {e}"))?;

    let (layer, server) = ConsoleLayer::builder().retention(RETENTION).build();
    let ServerParts {
        instrument_server,
        aggregator,
        ..
    } = server.into_parts();
    std::thread::Builder::new()
        .name("tokio-console".into())
        .spawn(move || {
            // The console's own runtime and gRPC server must not trace themselves into the
            // console (or the log).
            let _quiet =
                tracing::subscriber::set_default(tracing::subscriber::NoSubscriber::default());
            // The whole thread is the console's: the scope charges its allocations, and the
            // scopes of the two futures below (nested, same observer) charge its CPU time at
            // each of their polls rather than only when the thread ends.
            observer::scope(Observer::Console, || {
                runtime.block_on(async move {
                    let listener = match tokio::net::TcpListener::from_std(listener) {
                        Ok(listener) => listener,
                        Err(err) => {
                            eprintln!("error: tokio-console listener: {err}");
                            return;
                        }
                    };
                    // console-subscriber's aggregator drains the layer's events without
                    // awaiting, through tokio's mpsc receiver, which stops at the task's coop
                    // budget: 128 events per wake-up, one wake-up a second. The bad worker makes
                    // far more (a spawn, a oneshot and its operations per task), so the console
                    // fell seconds behind, further every second, and tokio-console dropped
                    // finished tasks (kept 6 s) as soon as it heard of them: the audit helpers
                    // never showed. Unconstrained, each wake-up drains everything queued. It is
                    // the console's own thread and runtime: nothing of the workload waits on it.
                    let aggregate = tokio::spawn(observer::instrument(
                        Observer::Console,
                        tokio::task::unconstrained(aggregator.run()),
                    ));
                    let served = observer::instrument(
                        Observer::Console,
                        tonic::transport::Server::builder()
                            .add_service(instrument_server)
                            .serve_with_incoming(TcpListenerStream::new(listener)),
                    )
                    .await;
                    aggregate.abort();
                    if let Err(err) = served {
                        eprintln!("error: tokio-console server stopped: {err}");
                    }
                })
            })
        })
        .map_err(|e| format!("cannot start tokio-console's thread: {e}"))?;
    Ok(layer)
}

/// What the console layer listens to: tokio's task, resource and waker instrumentation, which is
/// all at TRACE level and which the log's `RUST_LOG` filter never sees.
fn console_spans(meta: &tracing::Metadata<'_>) -> bool {
    // The same selection as console-subscriber's `spawn()`: events have targets starting with
    // "runtime" or "tokio", spans have names starting with "runtime.".
    if meta.is_event() {
        meta.target().starts_with("runtime") || meta.target().starts_with("tokio")
    } else {
        meta.name().starts_with("runtime.") || meta.target().starts_with("tokio")
    }
}
