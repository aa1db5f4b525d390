//! `/debug/pprof/`: the profiles Go's `net/http/pprof` serves, made from Rust's equivalents, in
//! the format `go tool pprof` and `pprof` read as they are.
//!
//! | endpoint | what | made by |
//! |---|---|---|
//! | `profile?seconds=N` | CPU samples | pprof-rs |
//! | `flamegraph?seconds=N` | the same, as an SVG flamegraph | pprof-rs + inferno |
//! | `heap` | live memory by allocation site | jemalloc's sampling profiler |
//! | `allocs` | all memory allocated since start, by site | the same, cumulative counts |
//! | `goroutine?debug=0/1/2` | live tasks by function and spawn site | the task registry ([`crate::tasks`]) |

pub mod cpu;
pub mod encode;
pub mod heap;
pub mod mutex;
pub mod tasks;

use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use crate::http::{ApiError, Params};
use crate::server::AppState;
use heap::HeapView;

/// Longest CPU profile or flamegraph a request may ask for.
pub const MAX_SECONDS: u64 = 300;

pub fn router() -> Router<AppState> {
    Router::new()
        .route(
            "/debug/pprof",
            get(|| async { Redirect::permanent("/debug/pprof/") }),
        )
        .route("/debug/pprof/", get(index))
        .route("/debug/pprof/profile", get(cpu_profile))
        .route("/debug/pprof/flamegraph", get(flamegraph))
        .route("/debug/pprof/heap", get(heap_profile))
        .route("/debug/pprof/allocs", get(allocs_profile))
        .route(tasks::PATH, get(tasks::handler))
        .route("/debug/pprof/mutex", get(mutex::handler))
}

async fn cpu_profile(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let seconds = seconds("/debug/pprof/profile", query)?;
    if state.stopping.is_cancelled() {
        return Err(ApiError::new(
            axum::http::StatusCode::SERVICE_UNAVAILABLE,
            "the worker is stopping; profile it again once it has restarted",
        ));
    }
    let session = cpu::start("a request for /debug/pprof/profile")?;
    // A worker told to stop sends the samples taken so far rather than an empty reply.
    tokio::select! {
        () = tokio::time::sleep(seconds) => {}
        () = state.stopping.cancelled() => {}
    }
    let body = blocking(move || session.into_pprof()).await?;
    Ok(profile_response(body, "profile.pb.gz"))
}

async fn flamegraph(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    let seconds = seconds("/debug/pprof/flamegraph", query)?;
    let session = cpu::start("a request for /debug/pprof/flamegraph")?;
    tokio::time::sleep(seconds).await;
    let svg = blocking(move || session.into_flamegraph()).await?;
    Ok(([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response())
}

async fn heap_profile(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    Params::parse("/debug/pprof/heap", query.as_deref(), &[])?;
    Ok(profile_response(
        heap::profile(HeapView::InUse).await?,
        "heap.pb.gz",
    ))
}

async fn allocs_profile(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    Params::parse("/debug/pprof/allocs", query.as_deref(), &[])?;
    Ok(profile_response(
        heap::profile(HeapView::Allocated).await?,
        "allocs.pb.gz",
    ))
}

fn seconds(path: &'static str, query: Option<String>) -> Result<Duration, ApiError> {
    let params = Params::parse(path, query.as_deref(), &["seconds"])?;
    let seconds = params.integer("seconds", 1..=MAX_SECONDS, 30, " of seconds")?;
    Ok(Duration::from_secs(seconds))
}

/// Runs CPU-heavy profile work (symbolization, compression) off the async threads.
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    tokio::task::spawn_blocking(work)
        .await
        .map_err(|e| ApiError::internal("profile task", e))?
}

fn profile_response(body: Vec<u8>, filename: &str) -> Response {
    (
        [
            (header::CONTENT_TYPE, "application/octet-stream".to_owned()),
            (
                header::CONTENT_DISPOSITION,
                format!("attachment; filename=\"{filename}\""),
            ),
        ],
        body,
    )
        .into_response()
}

async fn index(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Html<String>, ApiError> {
    Params::parse("/debug/pprof/", query.as_deref(), &[])?;
    let tasks: usize = crate::tasks::live_by_kind().iter().map(|(_, n)| n).sum();
    let kind = state.metrics.kind();
    Ok(Html(format!(
        r#"<!DOCTYPE html>
<html lang="en">
<head><meta charset="utf-8"><title>/debug/pprof/ — worker-{kind}</title>
<style>
body {{ font-family: sans-serif; max-width: 60em; margin: 1em auto; }}
td, th {{ padding: 0.2em 0.8em; text-align: left; }}
.count {{ text-align: right; }}
code {{ background: #eee; padding: 0 0.2em; }}
</style></head>
<body>
<h1>/debug/pprof/ — worker-{kind}</h1>
<p>Profiles in the format <code>go tool pprof</code> and <code>pprof</code> read, e.g.
<code>go tool pprof -top http://HOST/debug/pprof/heap</code>.</p>
<table>
<thead><tr><th class="count">Count</th><th>Profile</th><th>What it shows</th></tr></thead>
<tbody>
<tr><td></td><td><a href="allocs">allocs</a></td><td>Bytes allocated since start by allocation site, freed or not (sample type <code>alloc_space</code>): where allocation churn comes from. jemalloc samples about one allocation per 512 KiB.</td></tr>
<tr><td></td><td><a href="flamegraph?seconds=10">flamegraph</a></td><td>CPU samples as an SVG flamegraph. <code>?seconds=N</code>, 1 to {MAX_SECONDS}, default 30.</td></tr>
<tr><td class="count">{tasks}</td><td><a href="goroutine">goroutine</a></td><td>Live tasks (Go's goroutines) by the function they run and the line that spawned them, labelled by kind (helper, worker, http, observer). <code>?seconds=N</code>: what changed over N seconds. <a href="goroutine?debug=1">debug=1</a>: grouped text; <a href="goroutine?debug=2">debug=2</a>: every task.</td></tr>
<tr><td></td><td><a href="heap">heap</a></td><td>Bytes in live allocations by allocation site (sample type <code>inuse_space</code>).</td></tr>
<tr><td></td><td><a href="profile?seconds=10">profile</a></td><td>CPU profile sampled at 100 Hz. <code>?seconds=N</code>, 1 to {MAX_SECONDS}, default 30. One CPU profile runs at a time.</td></tr>
</tbody>
</table>
<p>Counts and rates over time are at <a href="/metrics">/metrics</a>: <code>worker_active_goroutines</code>
(live tasks), <code>worker_task_allocations_total</code> (allocations made by tasks) and more.</p>
</body>
</html>
"#
    )))
}
