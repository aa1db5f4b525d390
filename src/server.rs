//! The HTTP server every worker runs: `/metrics`, `/healthz` and `/debug/pprof/*`, behind an
//! accept loop that stays up when clients misbehave.
//!
//! An instrument must not be the thing that falls over. So the server:
//! - gives every client [`HEADER_READ_TIMEOUT`] to send a request's head, then closes the
//!   connection: a client that sends half a request (or opens a keep-alive connection and goes
//!   quiet) cannot hold a task and a socket forever. A client that had sent part of a head is
//!   answered 408 with a body saying so; an idle keep-alive connection closes without a word,
//!   as in Go and nginx (a 408 there would read as the answer to the client's next request);
//! - serves at most [`MAX_CONNECTIONS`] connections at once, and counts what matters: when
//!   they are all taken, a new connection closes an idle one (idle the longest) or, with none
//!   idle, one whose request head is still arriving, and takes its place; only when every
//!   connection has a request in flight is it answered 503 with a body that says so (see
//!   [`connections`]). Idle or half-sent connections cannot keep Prometheus' scrape out;
//! - answers every error with a body naming the problem, hyper's own responses to unparsable
//!   requests included (see [`crate::http::ErrorBodies`]);
//! - spawns every connection through one function, `spawn_connection`, as a
//!   [`TaskKind::Http`] task of the registry, so the task profile and `worker_live_tasks` show
//!   connections apart from the workload's tasks.
//!
//! `axum::serve` has neither a header timeout nor a connection limit, so the loop is written
//! here with hyper's HTTP/1 connection builder; the routes are still an axum `Router`.
//!
//! hyper's header-read timeout ends the connection future with an error and writes nothing.
//! The connection future is `Unpin` and still owns the socket then, so
//! `Connection::into_parts` gives back the socket and the bytes hyper had buffered: a non-empty
//! buffer is a head that began and did not end, and the 408 is written on that socket. No HTTP
//! is parsed here: hyper decided the head was incomplete.

pub mod connections;

use std::sync::{Arc, LazyLock};
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{Method, StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use hyper::server::conn::http1;
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use tokio::io::{AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::http::{ApiError, ErrorBodies, Params};
use crate::metrics::{self, Metrics};
use crate::observer::{self, Observer};
use crate::pprof;
use crate::tasks::{self, TaskKind};
use connections::{Admission, Connections, Lease, Phase, TrackedIo, TrackedService};

/// How long a client has to send a request's head (request line and headers), counted from the
/// moment the server starts waiting for it; also how long an idle keep-alive connection stays
/// open. Prometheus scrapes every few seconds and sends its request at once, so it never meets
/// this limit.
pub const HEADER_READ_TIMEOUT: Duration = Duration::from_secs(10);

/// Connections served at once. Prometheus needs one per worker, `go tool pprof` and a browser a
/// few more. Beyond it, a new connection takes the place of an idle or half-sent one; when all
/// have a request in flight it is refused with a 503 rather than exhausting the process.
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
    let connections = Connections::new(MAX_CONNECTIONS);
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
        let slot = match connections.admit() {
            Admission::Admitted(lease) => Slot::Leased(lease),
            Admission::Evicting => Slot::AfterEviction(Arc::clone(&connections)),
            Admission::Full => {
                refuse(&stream, &ALL_BUSY);
                continue;
            }
        };
        let shared = Shared {
            app: app.clone(),
            stop: stop.clone(),
            force: force.clone(),
            grace,
        };
        spawn_connection(stream, slot, shared);
    }
    drop(listener);
    if !connections.all_closed(grace).await {
        tracing::warn!(
            "requests still open {} s after shutdown; closing them",
            grace.as_secs()
        );
        force.cancel();
        // Each says why in one write (a request still being handled gets a 503), then closes.
        connections.all_closed(ANSWER_TIMEOUT).await;
    }
    Ok(())
}

/// How long a new connection waits for the slot of the connection closed to make room for it.
/// An idle connection closes at once; this bounds the wait when the one picked received the
/// rest of a request just before, and finishes it first.
pub const EVICTION_WAIT: Duration = Duration::from_secs(3);

/// A new connection's slot: its own, or the one a closing connection is about to free.
enum Slot {
    Leased(Lease),
    AfterEviction(Arc<Connections>),
}

/// What every connection's task shares with the server.
struct Shared {
    app: Router,
    /// The worker is stopping: finish the request in flight, then close.
    stop: CancellationToken,
    /// The shutdown grace period is over: close now.
    force: CancellationToken,
    /// How long open requests get once the worker stops taking connections.
    grace: Duration,
}

/// Spawns the task serving one connection: the one place connections become tasks.
fn spawn_connection(stream: TcpStream, slot: Slot, shared: Shared) -> JoinHandle<()> {
    // The HTTP surface is an instrument, not the workload: everything a connection allocates
    // (hyper's buffers, the response) is charged to `worker_observer_*{observer="http"}`, and
    // what it serves inside (a scrape, a profile) to that observer in turn.
    tasks::spawn(
        TaskKind::Http,
        observer::instrument(Observer::Http, connection(stream, slot, shared)),
    )
}

/// Why a connection's task stopped driving hyper before hyper was done.
enum Cut {
    /// Picked to make room while its request head was still arriving.
    EvictedMidHead,
    /// The shutdown grace period is over.
    Forced,
}

/// Serves one connection's requests until the client closes it, it breaks a limit, it is closed
/// to make room, or shutdown.
async fn connection(stream: TcpStream, slot: Slot, shared: Shared) {
    let lease = match slot {
        Slot::Leased(lease) => lease,
        Slot::AfterEviction(connections) => match connections.after_eviction(EVICTION_WAIT).await {
            Some(lease) => lease,
            None => {
                refuse(&stream, &EVICTION_TOO_SLOW);
                return;
            }
        },
    };
    let slot = lease.slot().clone();
    let _ = stream.set_nodelay(true);
    let io = TokioIo::new(ErrorBodies::new(TrackedIo::new(stream, slot.clone())));
    let service = TrackedService::new(TowerToHyperService::new(shared.app), slot.clone());
    // Declared after `lease`, so dropped before it (in every path, at the end of this function):
    // the slot is freed once nothing of the connection is left, its response body included,
    // and any last answer below has been written.
    let mut conn = http1::Builder::new()
        .timer(TokioTimer::new())
        .header_read_timeout(HEADER_READ_TIMEOUT)
        .max_buf_size(MAX_REQUEST_HEAD)
        .max_headers(MAX_HEADERS)
        .serve_connection(io, service);
    let (mut stopping, mut evicted) = (false, false);
    let outcome = loop {
        tokio::select! {
            // hyper first: a request that has arrived is read before a stop or an eviction
            // is looked at, so it is served, not dropped with an idle connection.
            biased;
            result = &mut conn => break Ok(result),
            () = shared.stop.cancelled(), if !stopping => {
                // Finish the request in flight, if any, then close; an idle connection
                // closes now.
                stopping = true;
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
            () = shared.force.cancelled(), if stopping => break Err(Cut::Forced),
            () = slot.evicted(), if !evicted => {
                evicted = true;
                if slot.phase() == Phase::Head {
                    break Err(Cut::EvictedMidHead);
                }
                // Idle: hyper closes it now. Busy (its request arrived after it was
                // picked): it finishes that request first.
                std::pin::Pin::new(&mut conn).graceful_shutdown();
            }
        }
    };
    match outcome {
        Ok(Ok(())) => {}
        Ok(Err(err)) if err.is_timeout() => {
            // hyper's header-read timeout. It closes without a word; when part of a head
            // had arrived, the client is told why.
            let parts = conn.into_parts();
            if !parts.read_buf.is_empty() {
                answer_and_close(parts.io.into_inner(), &HEAD_TIMED_OUT).await;
            }
        }
        // Resets and malformed requests are the client's business; the client got an
        // answer if one was possible.
        Ok(Err(err)) => tracing::debug!("HTTP connection closed: {err}"),
        Err(Cut::EvictedMidHead) => {
            let waited = slot.waiting_for();
            let body = format!(
                "request timeout: this worker was at its limit of {MAX_CONNECTIONS} \
                 connections and closed this one to serve another, because its request head was \
                 still incomplete {:.1} s after the connection began waiting for it; send the \
                 request line and headers at once\n",
                waited.as_secs_f64()
            );
            let response = plain_response("408 Request Timeout", "", &body);
            let parts = conn.into_parts();
            answer_and_close(parts.io.into_inner(), &response).await;
        }
        Err(Cut::Forced) => {
            // A request still being handled has sent nothing yet: say why it ends here.
            if slot.phase() == Phase::Busy {
                let body = format!(
                    "the worker is stopping: this request was still being handled {} s after \
                     the worker stopped taking connections, so it ends without its answer\n",
                    shared.grace.as_secs()
                );
                let response = plain_response("503 Service Unavailable", "", &body);
                let parts = conn.into_parts();
                answer_and_close(parts.io.into_inner(), &response).await;
            }
        }
    }
}

/// A complete response with a plain-text `body`, for answers written without hyper: the
/// connection is refused or abandoned before or after hyper has a request to answer.
fn plain_response(status: &str, headers: &str, body: &str) -> Vec<u8> {
    format!(
        "HTTP/1.1 {status}\r\n{headers}content-type: text/plain; charset=utf-8\r\n\
         content-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    )
    .into_bytes()
}

/// The 503 for a connection that arrives when every connection has a request in flight;
/// made once, so refusing allocates nothing in the accept loop.
static ALL_BUSY: LazyLock<Vec<u8>> = LazyLock::new(|| {
    plain_response(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        &format!(
            "this worker is serving its limit of {MAX_CONNECTIONS} connections, each with a \
             request in flight (idle connections are closed to make room, busy ones never); \
             retry in a moment\n"
        ),
    )
});

/// The 503 for a connection whose room, made by closing another, did not come in time.
static EVICTION_TOO_SLOW: LazyLock<Vec<u8>> = LazyLock::new(|| {
    plain_response(
        "503 Service Unavailable",
        "retry-after: 1\r\n",
        &format!(
            "this worker is serving its limit of {MAX_CONNECTIONS} connections; the one closed \
             to make room for this one still had a request in flight after {} s; retry in a \
             moment\n",
            EVICTION_WAIT.as_secs()
        ),
    )
});

/// The 408 for a request head that did not arrive within [`HEADER_READ_TIMEOUT`].
static HEAD_TIMED_OUT: LazyLock<Vec<u8>> = LazyLock::new(|| {
    plain_response(
        "408 Request Timeout",
        "",
        &format!(
            "request timeout: the request head (request line and headers, up to the blank line \
             that ends them) did not arrive within {} s; send it at once\n",
            HEADER_READ_TIMEOUT.as_secs()
        ),
    )
});

/// Answers a connection without spawning anything for it, in one attempt and never a wait: a
/// fresh socket's send buffer takes a few hundred bytes.
fn refuse(stream: &TcpStream, response: &[u8]) {
    let _ = stream.try_write(response);
}

/// Writes `response` on a connection hyper has given up, then closes it; a client that does not
/// read gets [`ANSWER_TIMEOUT`], not more.
async fn answer_and_close<S: AsyncWrite + Unpin>(mut io: S, response: &[u8]) {
    let _ = tokio::time::timeout(ANSWER_TIMEOUT, async {
        io.write_all(response).await?;
        io.shutdown().await
    })
    .await;
}

/// How long a closing connection's last answer may take to write.
const ANSWER_TIMEOUT: Duration = Duration::from_secs(5);

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
