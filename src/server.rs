//! The HTTP server every worker runs: `/metrics`, `/healthz` and `/debug/pprof/*`, behind an
//! accept loop that stays up when clients misbehave.
//!
//! An instrument must not be the thing that falls over. So the server:
//! - gives every client [`HEADER_READ_TIMEOUT`] to send a request's head, then closes the
//!   connection: a client that sends half a request (or opens a keep-alive connection and goes
//!   quiet) cannot hold a task and a socket forever;
//! - serves at most [`MAX_CONNECTIONS`] connections at once and answers the next ones with a
//!   503 that says so, instead of running out of file descriptors;
//! - answers every error with a body naming the problem, hyper's own responses to unparsable
//!   requests included (see [`crate::http::ErrorBodies`]);
//! - spawns every connection through one function, [`spawn_connection`], as a
//!   [`TaskKind::Http`] task of the registry, so the task profile and `worker_live_tasks` show
//!   connections apart from the workload's tasks.
//!
//! `axum::serve` has neither a header timeout nor a connection limit, so the loop is written
//! here with hyper's HTTP/1 connection builder; the routes are still an axum `Router`.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::sync::{OwnedSemaphorePermit, Semaphore};
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{ApiError, ErrorBodies, Params};
use crate::metrics::{self, Metrics};
use crate::observer::{self, Observer};
use crate::pprof;
use crate::tasks::{self, TaskKind};

/// How long a client has to send a request's head (request line and headers), counted from the
/// moment the server starts waiting for it; also how long an idle keep-alive connection stays
/// open. Prometheus scrapes every few seconds and sends its request at once, so it never meets
/// this limit.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Prometheus needs one per worker, `go tool pprof` and a browser a
/// few more; a client that opens more is refused with a 503 rather than exhausting the process.
pub const MAX_CONNECTIONS: usize = 256;

/// hyper's read buffer for a request head (its default is about 400 KB): once this much is
/// buffered without a complete head, the request gets a 431. hyper checks between reads, and
/// one read may fill the buffer's spare capacity, so a head that arrives at once may pass at up
/// to about twice this size.
pub const MAX_REQUEST_HEAD: usize = 64 * 1024;

/// Most header lines in a request (hyper's default, set here so it is stated); more get a 431.
pub const MAX_HEADERS: usize = 100;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// The runtime the worker runs on (its metrics feed the index page and `/metrics`).
    pub runtime: Handle,
    /// Cancelled when the worker starts to stop: a CPU profile in progress ends early and
    /// sends the samples taken so far.
    pub stopping: CancellationToken,
}

pub fn router(state: AppState) -> Router {
    Router::new()
        .route("/metrics", get(metrics_text))
        .route("/healthz", get(healthz))
        .merge(pprof::router())
        .fallback(not_found)
        // After every route is registered: it applies to the routes present when it is called.
        .method_not_allowed_fallback(method_not_allowed)
        .with_state(state)
}

/// Serves until `stop` is cancelled, then lets open requests finish for up to `grace` and
/// closes whatever is still open.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let app = router(state);
    let slots = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    // Cancelled when the grace period is over: connections still open are dropped.
    let force = CancellationToken::new();
    loop {
        let stream = tokio::select! {
            () = stop.cancelled() => break,
            accepted = listener.accept() => match accepted {
                Ok((stream, _peer)) => stream,
                Err(err) => {
                    // Out of file descriptors, or a connection reset before it was accepted:
                    // keep serving, without spinning on an error that repeats.
                    tracing::warn!("accepting a connection: {err}");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
        };
        match Arc::clone(&slots).try_acquire_owned() {
            Ok(slot) => {
                spawn_connection(stream, app.clone(), slot, stop.clone(), force.clone());
            }
            Err(_) => refuse(stream),
        }
    }
    drop(listener);
    // Every connection holds a slot until it ends: all slots back means all connections done.
    let all = MAX_CONNECTIONS as u32;
    if tokio::time::timeout(grace, slots.acquire_many(all))
        .await
        .is_err()
    {
        tracing::warn!(
            "requests still open {} s after shutdown; closing them",
            grace.as_secs()
        );
        force.cancel();
    }
    Ok(())
}

/// Spawns the task serving one connection: the one place connections become tasks.
pub fn spawn_connection(
    stream: TcpStream,
    app: Router,
    slot: OwnedSemaphorePermit,
    stop: CancellationToken,
    force: CancellationToken,
) -> JoinHandle<()> {
    // The HTTP surface is an instrument, not the workload: everything a connection allocates
    // (hyper's buffers, the response) is charged to `worker_observer_*{observer="http"}`, and
    // what it serves inside (a scrape, a profile) to that observer in turn.
    tasks::spawn(
        TaskKind::Http,
        observer::instrument(Observer::Http, connection(stream, app, slot, stop, force)),
    )
}

/// Serves one connection's requests until the client closes it, it breaks a limit, or shutdown.
async fn connection(
    stream: TcpStream,
    app: Router,
    _slot: OwnedSemaphorePermit,
    stop: CancellationToken,
    force: CancellationToken,
) {
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(ErrorBodies::new(stream));
    let conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(io, TowerToHyperService::new(app));
    tokio::pin!(conn);
    let result = tokio::select! {
        result = conn.as_mut() => result,
        () = stop.cancelled() => {
            // Finish the request in flight, if any, then close; an idle connection closes now.
            conn.as_mut().graceful_shutdown();
            tokio::select! {
                result = conn.as_mut() => result,
                () = force.cancelled() => return,
            }
        }
    };
    if let Err(err) = result {
        // Timeouts, resets and malformed requests are the client's business; the client got
        // an answer if one was possible.
        tracing::debug!("HTTP connection closed: {err}");
    }
}

/// Answers a connection beyond [`MAX_CONNECTIONS`] without spawning anything for it.
fn refuse(stream: TcpStream) {
    let body = format!(
        "this worker is serving its limit of {MAX_CONNECTIONS} connections at once; close idle \
         ones or retry later\n"
    );
    let response = format!(
        "HTTP/1.1 503 Service Unavailable\r\ncontent-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nretry-after: 1\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    // One attempt, never a wait: a fresh socket's send buffer takes a few hundred bytes.
    let _ = stream.try_write(response.as_bytes());
}

async fn metrics_text(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    Params::parse("/metrics", query.as_deref(), &[])?;
    Ok((
        [(header::CONTENT_TYPE, metrics::CONTENT_TYPE)],
        state.metrics.render(),
    )
        .into_response())
}

async fn healthz(RawQuery(query): RawQuery) -> Result<&'static str, ApiError> {
    Params::parse("/healthz", query.as_deref(), &[])?;
    Ok("ok\n")
}

async fn not_found(uri: Uri) -> ApiError {
    ApiError::new(
        StatusCode::NOT_FOUND,
        format!(
            "no endpoint at {}; this worker serves /metrics, /healthz and /debug/pprof/",
            uri.path()
        ),
    )
}

async fn method_not_allowed(method: Method, uri: Uri) -> Response {
    (
        [(header::ALLOW, "GET, HEAD")],
        ApiError::new(
            StatusCode::METHOD_NOT_ALLOWED,
            format!(
                "method {method} is not allowed for {}; this worker's endpoints answer GET and HEAD",
                uri.path()
            ),
        ),
    )
        .into_response()
}
