//! `/debug/pprof/`: the profiles Go's `net/http/pprof` serves, made from Rust's equivalents, in
//! the format `go tool pprof` and `pprof` read as they are.
//!
//! | endpoint | what | made by |
//! |---|---|---|
//! | `profile?seconds=N` | CPU samples, with the binary's mappings and addresses | pprof-rs |
//! | `flamegraph?seconds=N` | the same, as an SVG flamegraph | pprof-rs + inferno |
//! | `heap` | live memory by allocation site; Go's four sample types | jemalloc's sampling profiler |
//! | `allocs` | the same profile, showing memory allocated since start | the same |
//! | `allocs_flamegraph?seconds=N` | bytes allocated, as an SVG flamegraph | the same + inferno |
//! | `goroutine?debug=0/1/2` | live tasks by function and spawn site | the task registry ([`crate::tasks`]) |
//! | `mutex` | contended lock acquisitions and the time waited, by stack | the lab's lock ([`crate::lock`]) |
//! | `symbol`, `cmdline` | address to function name; the command line | backtrace, std |
//!
//! `heap` and `allocs` take `?seconds=N` (Go's delta profile: what changed over N seconds) and
//! `?debug=1` (Go's text format). All of it runs in observer scopes (see [`crate::observer`]),
//! so profiling never shows in the lesson's metrics or in the next profile.
//!
//! No profile starts once the worker has begun to stop (503); one in progress ends early and
//! answers with what it has. `HEAD` answers headers only and never makes a profile.

pub mod background;
pub mod cpu;
pub mod encode;
pub mod flame;
pub mod heap;
pub mod mutex;
pub mod symbolize;
pub mod tasks;

use std::fmt::Write as _;
use std::time::Duration;

use axum::Router;
use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{Html, IntoResponse, Redirect, Response};
use axum::routing::get;

use axum::http::StatusCode;
use tokio::sync::{Semaphore, SemaphorePermit};
use tokio_util::sync::CancellationToken;

use crate::http::{ApiError, Params};
use crate::observer::{self, Observer};
use crate::server::AppState;
use heap::HeapView;

/// Longest CPU profile, flamegraph or delta profile a request may ask for.
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
        .route("/debug/pprof/allocs_flamegraph", get(allocs_flamegraph))
        .route("/debug/pprof/symbol", get(symbol_get).post(symbol_post))
        .route("/debug/pprof/cmdline", get(cmdline))
        .route_layer(axum::middleware::from_fn(head_without_profiling))
}

/// `HEAD` on a profile endpoint answers 200 with the `Content-Type` a `GET` would have and no
/// body, without making the profile: left to axum, a `HEAD` runs the `GET` handler and drops
/// its body, so `curl -I .../profile?seconds=30` would hold the CPU profiler for 30 s and
/// `HEAD .../heap` would dump and symbolize the whole heap for nothing.
async fn head_without_profiling(
    request: axum::extract::Request,
    next: axum::middleware::Next,
) -> Response {
    if request.method() != axum::http::Method::HEAD {
        return next.run(request).await;
    }
    let path = request.uri().path();
    let text = request.uri().query().is_some_and(|q| q.contains("debug="));
    let content_type = match path {
        "/debug/pprof/" => "text/html; charset=utf-8",
        "/debug/pprof" => return next.run(request).await,
        p if p.ends_with("flamegraph") => "image/svg+xml",
        "/debug/pprof/symbol" | "/debug/pprof/cmdline" => "text/plain; charset=utf-8",
        _ if text => "text/plain; charset=utf-8",
        _ => "application/octet-stream",
    };
    ([(header::CONTENT_TYPE, content_type)], ()).into_response()
}

async fn cpu_profile(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let seconds = seconds("/debug/pprof/profile", query)?;
    refuse_when_stopping(&state.stopping)?;
    let session = cpu::start("a request for /debug/pprof/profile")?;
    sample_for(seconds, &state.stopping).await;
    let body = blocking(move || session.into_pprof()).await?;
    Ok(profile_response(body, "profile.pb.gz"))
}

async fn flamegraph(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let seconds = seconds("/debug/pprof/flamegraph", query)?;
    refuse_when_stopping(&state.stopping)?;
    let session = cpu::start("a request for /debug/pprof/flamegraph")?;
    sample_for(seconds, &state.stopping).await;
    let kind = state.metrics.kind();
    let svg = blocking(move || session.into_flamegraph(kind)).await?;
    Ok(svg_response(svg))
}

async fn heap_profile(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    memory_profile(
        "/debug/pprof/heap",
        HeapView::InUse,
        query,
        "heap.pb.gz",
        &state.stopping,
    )
    .await
}

async fn allocs_profile(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    memory_profile(
        "/debug/pprof/allocs",
        HeapView::Allocated,
        query,
        "allocs.pb.gz",
        &state.stopping,
    )
    .await
}

/// `heap` and `allocs`: `?debug=0` (pprof) or `1` (Go's text), `?seconds=N` for a delta.
async fn memory_profile(
    path: &'static str,
    view: HeapView,
    query: Option<String>,
    filename: &str,
    stopping: &CancellationToken,
) -> Result<Response, ApiError> {
    let params = Params::parse(path, query.as_deref(), &["debug", "seconds"])?;
    let debug = params.integer("debug", 0..=1, 0, "")?;
    let seconds = optional_seconds(&params)?;
    let request = heap::Request { view, seconds };
    Ok(if debug == 1 {
        text_response(heap::text(request, stopping).await?)
    } else {
        profile_response(heap::pprof(request, stopping).await?, filename)
    })
}

async fn allocs_flamegraph(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    let params = Params::parse(
        "/debug/pprof/allocs_flamegraph",
        query.as_deref(),
        &["seconds"],
    )?;
    let seconds = optional_seconds(&params)?;
    let svg = heap::allocs_flamegraph(state.metrics.kind(), seconds, &state.stopping).await?;
    Ok(svg_response(svg))
}

/// Go's `/debug/pprof/symbol`: `num_symbols: 1` says symbols are available; addresses joined
/// by `+` (in a POST body, or the query string of a GET) are answered one per line as
/// `0xADDR name`, unknown addresses left out, as Go does.
async fn symbol_get(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    symbols(query.unwrap_or_default().as_bytes()).await
}

async fn symbol_post(body: axum::body::Bytes) -> Result<Response, ApiError> {
    symbols(&body).await
}

async fn symbols(input: &[u8]) -> Result<Response, ApiError> {
    let input = std::str::from_utf8(input).map_err(|_| {
        ApiError::bad_request(
            "/debug/pprof/symbol: the addresses are not text; send hexadecimal addresses joined by '+', e.g. 0x4a3f20+0x4a3f88",
        )
    })?;
    let addresses = input
        .split('+')
        .map(str::trim)
        .filter(|word| !word.is_empty())
        .map(|word| {
            let digits = word
                .strip_prefix("0x")
                .or_else(|| word.strip_prefix("0X"))
                .unwrap_or(word);
            u64::from_str_radix(digits, 16).map_err(|_| {
                ApiError::bad_request(format!(
                    "/debug/pprof/symbol: {word:?} is not an address; send hexadecimal addresses joined by '+', e.g. 0x4a3f20+0x4a3f88"
                ))
            })
        })
        .collect::<Result<Vec<u64>, ApiError>>()?;
    let text = blocking(move || {
        Ok(observer::scope(Observer::CpuProfile, || {
            let mut out = String::from("num_symbols: 1\n");
            for address in addresses {
                let mut name = None;
                let runtime = symbolize::runtime_address(address);
                backtrace::resolve(runtime as usize as *mut std::ffi::c_void, |symbol| {
                    // The outermost function at this address, as Go's FuncForPC names it.
                    if let Some(n) = symbol.name() {
                        name = Some(format!("{n:#}"));
                    }
                });
                if let Some(name) = name {
                    let _ = writeln!(out, "{address:#x} {name}");
                }
            }
            encode::release_symbol_cache();
            out
        }))
    })
    .await?;
    Ok(text_response(text))
}

/// Go's `/debug/pprof/cmdline`: the command line, arguments separated by NUL bytes.
async fn cmdline(RawQuery(query): RawQuery) -> Result<Response, ApiError> {
    Params::parse("/debug/pprof/cmdline", query.as_deref(), &[])?;
    let args: Vec<String> = std::env::args_os()
        .map(|a| a.to_string_lossy().into_owned())
        .collect();
    Ok(text_response(args.join("\0")))
}

fn seconds(path: &'static str, query: Option<String>) -> Result<Duration, ApiError> {
    let params = Params::parse(path, query.as_deref(), &["seconds"])?;
    let seconds = params.integer("seconds", 1..=MAX_SECONDS, 30, " of seconds")?;
    Ok(Duration::from_secs(seconds))
}

/// `?seconds=N` of a delta profile; absent means since start.
fn optional_seconds(params: &Params) -> Result<Option<Duration>, ApiError> {
    // 0 is outside the allowed range, so it can only be the default: the parameter is absent.
    let seconds = params.integer("seconds", 1..=MAX_SECONDS, 0, " of seconds")?;
    Ok((seconds > 0).then(|| Duration::from_secs(seconds)))
}

/// 503 for a profile asked for once the worker has begun to stop: no profiler starts after
/// shutdown began, so none is left running when the process exits.
pub(crate) fn refuse_when_stopping(stopping: &CancellationToken) -> Result<(), ApiError> {
    if stopping.is_cancelled() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "the worker is stopping; profile it again once it has restarted",
        ));
    }
    Ok(())
}

/// Waits out a profile's `?seconds=N`, or less if the worker is told to stop meanwhile: the
/// request then gets what was sampled so far rather than a connection closed at the end of
/// the shutdown grace period.
pub(crate) async fn sample_for(seconds: Duration, stopping: &CancellationToken) {
    tokio::select! {
        () = tokio::time::sleep(seconds) => {}
        () = stopping.cancelled() => {}
    }
}

/// One profile of a kind at a time (the task profile, the heap and allocs dumps): a request
/// that finds another one running waits up to [`WAIT_FOR_TURN`], then gets 409 saying so,
/// rather than queueing without limit behind it.
pub(crate) struct OneAtATime {
    permits: Semaphore,
}

/// How long a request waits for another profile of its kind to finish before it is refused.
pub const WAIT_FOR_TURN: Duration = Duration::from_secs(2);

impl OneAtATime {
    pub(crate) const fn new() -> OneAtATime {
        OneAtATime {
            permits: Semaphore::const_new(1),
        }
    }

    /// Waits for this kind's turn; `what` names the profile in the 409's message.
    pub(crate) async fn turn(&self, what: &str) -> Result<SemaphorePermit<'_>, ApiError> {
        match tokio::time::timeout(WAIT_FOR_TURN, self.permits.acquire()).await {
            Ok(Ok(permit)) => Ok(permit),
            _ => Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "another {what} is being made; they are made one at a time and this \
                     request waited {} s for its turn. Retry when it is done.",
                    WAIT_FOR_TURN.as_secs()
                ),
            )),
        }
    }
}

/// Runs CPU-heavy CPU-profile work (symbolization, compression) off the async threads, on the
/// CPU profile's own thread, in its observer's scope. Not on tokio's blocking pool: a pool
/// thread started for a profile filled its jemalloc cache in a lesson arena before the work
/// entered the scope, and showed in the runtime's blocking-thread count (see
/// [`background::Background`]).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static WORK: background::Background =
        background::Background::new("cpu-profile", Observer::CpuProfile);
    WORK.run(work).await
}

fn svg_response(svg: Vec<u8>) -> Response {
    ([(header::CONTENT_TYPE, "image/svg+xml")], svg).into_response()
}

fn text_response(text: String) -> Response {
    ([(header::CONTENT_TYPE, "text/plain; charset=utf-8")], text).into_response()
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
    // Stacks in each memory profile, as Go counts records; shown empty if profiling is off.
    let (heap, allocs) = heap::counts()
        .await
        .map_or((String::new(), String::new()), |(h, a)| {
            (h.to_string(), a.to_string())
        });
    let mutex = mutex::site_count();
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
<tr><td class="count">{allocs}</td><td><a href="allocs">allocs</a></td><td>Bytes allocated since start by allocation site, freed or not (default sample type <code>alloc_space</code>; also <code>alloc_objects</code>, <code>inuse_space</code>, <code>inuse_objects</code>): where allocation churn comes from. jemalloc samples about one allocation per 512 KiB, as Go does. <code>?seconds=N</code>: only the last N seconds; <a href="allocs?debug=1">debug=1</a>: text.</td></tr>
<tr><td></td><td><a href="allocs_flamegraph">allocs_flamegraph</a></td><td>Bytes allocated as an SVG flamegraph, since start or over <a href="allocs_flamegraph?seconds=30"><code>?seconds=N</code></a>.</td></tr>
<tr><td></td><td><a href="cmdline">cmdline</a></td><td>The worker's command line, arguments separated by NUL bytes.</td></tr>
<tr><td></td><td><a href="flamegraph?seconds=10">flamegraph</a></td><td>CPU samples as an SVG flamegraph. <code>?seconds=N</code>, 1 to {MAX_SECONDS}, default 30.</td></tr>
<tr><td class="count">{tasks}</td><td><a href="goroutine">goroutine</a></td><td>Live tasks (Go's goroutines) by the function they run and the line that spawned them, labelled by kind (helper, worker, http, observer). <code>?seconds=N</code>: what changed over N seconds. <a href="goroutine?debug=1">debug=1</a>: grouped text; <a href="goroutine?debug=2">debug=2</a>: every task.</td></tr>
<tr><td class="count">{heap}</td><td><a href="heap">heap</a></td><td>Bytes in live allocations by allocation site (default sample type <code>inuse_space</code>; the same four types as allocs). <code>?seconds=N</code>: the change over N seconds; <a href="heap?debug=1">debug=1</a>: text.</td></tr>
<tr><td class="count">{mutex}</td><td><a href="mutex">mutex</a></td><td>Where threads waited for a contended lab lock (<code>crate::lock</code>), by stack (sample types <code>contentions/count</code> and <code>delay/nanoseconds</code>): what lock contention costs. <code>?seconds=N</code>: only the last N seconds.</td></tr>
<tr><td></td><td><a href="profile?seconds=10">profile</a></td><td>CPU profile sampled at 100 Hz, with the binary's mappings, so <code>go tool pprof -disasm</code> works. <code>?seconds=N</code>, 1 to {MAX_SECONDS}, default 30. One CPU profile runs at a time.</td></tr>
<tr><td></td><td><a href="symbol">symbol</a></td><td>Function names of addresses (<code>POST</code> them joined by <code>+</code>), as <code>go tool pprof</code> asks for them.</td></tr>
</tbody>
</table>
<p>Counts and rates over time are at <a href="/metrics">/metrics</a>: <code>worker_active_goroutines</code>
(live tasks), <code>worker_task_allocations_total</code> (allocations made by tasks) and more.
What profiling and scraping cost is shown apart, in <code>worker_observer_*{{observer}}</code>, and never counted in the lesson's figures.</p>
</body>
</html>
"#
    )))
}
