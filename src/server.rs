//! The HTTP server every worker runs: `/metrics`, `/healthz` and `/debug/pprof/*`.

use std::future::IntoFuture;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::{StatusCode, Uri, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use tokio::net::TcpListener;
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::http::{ApiError, Params};
use crate::metrics::{self, Metrics};
use crate::pprof;

/// What the handlers share.
#[derive(Clone)]
pub struct AppState {
    pub metrics: Arc<Metrics>,
    /// The runtime whose tasks `/debug/pprof/goroutine` dumps.
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
        .with_state(state)
}

/// Serves until `stop` is cancelled, then lets open requests finish for up to `grace`.
pub async fn serve(
    listener: TcpListener,
    state: AppState,
    stop: CancellationToken,
    grace: Duration,
) -> std::io::Result<()> {
    let stopped = stop.clone();
    let server = axum::serve(listener, router(state))
        .with_graceful_shutdown(async move { stopped.cancelled().await })
        .into_future();
    tokio::pin!(server);
    tokio::select! {
        result = &mut server => result,
        () = async { stop.cancelled().await; tokio::time::sleep(grace).await } => {
            tracing::warn!("requests still open {} s after shutdown; closing them", grace.as_secs());
            Ok(())
        }
    }
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
