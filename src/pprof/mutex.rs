//! `/debug/pprof/mutex`: where tasks waited for the lab's instrumented locks ([`crate::lock`]),
//! in the format of Go's mutex profile.
//!
//! Two sample types, as Go has them: `contentions/count` (acquisitions that had to wait) and
//! `delay/nanoseconds` (the time they waited, the default). One stack per call site of
//! `lock()`, captured the first time a caller there has to wait, so `go tool pprof -top` names
//! the function that takes the contended lock and `-list` its line. Cumulative since start;
//! `?seconds=N` gives what happened during the next N seconds (Go's delta profile).
//!
//! Unlike Go's, it covers only the lab's instrumented locks, not every `std`/`tokio` lock or
//! the runtime's own; it records every contended acquisition (Go samples one in
//! `SetMutexProfileFraction`, off by default); and it files the wait under the stack of the
//! *waiter*, where Go files it under the goroutine that unlocked (the end of the holder's
//! critical section). docs/PROFILING.md says what that means when reading it.

use std::collections::HashMap;
use std::panic::Location;
use std::sync::{Arc, LazyLock, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use axum::extract::{RawQuery, State};
use axum::http::header;
use axum::response::{IntoResponse, Response};
use pprof::protos;

use super::MAX_SECONDS;
use super::encode::{self, StringTable};
use crate::http::{ApiError, Params};
use crate::observer::{self, Observer};
use crate::server::AppState;

/// Frames kept per stack, like Go's 32-deep profiles with room for async machinery.
const MAX_DEPTH: usize = 64;

/// What the profile knows about one call site of `lock()`.
struct Site {
    stack: Vec<backtrace::Frame>,
    contentions: u64,
    delay_ns: u64,
}

/// The resolved stack of each call site: debug info is parsed once per site, not per request.
type Resolved = Vec<(u64, Vec<Function>)>;
static RESOLVED: LazyLock<Mutex<HashMap<&'static Location<'static>, Arc<Resolved>>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

/// Every call site where a caller has waited, since start. Touched only on contention, never
/// on an uncontended acquisition.
static SITES: LazyLock<Mutex<HashMap<&'static Location<'static>, Site>>> =
    LazyLock::new(|| Mutex::new(HashMap::new()));

fn sites() -> std::sync::MutexGuard<'static, HashMap<&'static Location<'static>, Site>> {
    SITES.lock().unwrap_or_else(|e| e.into_inner())
}

/// Called by a waiter before it waits: captures the stack of `site` the first time. Later
/// waits at the same site cost one map lookup.
#[inline(never)]
pub(crate) fn note_site(site: &'static Location<'static>) {
    let mut sites = sites();
    if sites.contains_key(site) {
        return;
    }
    // The capture is the lock profile's work, not the lesson's: it must not show up as the
    // waiting task's allocations.
    let stack = observer::scope(Observer::MutexProfile, || {
        let mut stack = Vec::with_capacity(MAX_DEPTH);
        backtrace::trace(|frame| {
            stack.push(frame.clone());
            stack.len() < MAX_DEPTH
        });
        stack
    });
    observer::scope(Observer::MutexProfile, || {
        sites.insert(
            site,
            Site {
                stack,
                contentions: 0,
                delay_ns: 0,
            },
        )
    });
}

/// Adds one contended acquisition at `site` that waited `waited`.
pub(crate) fn record(site: &'static Location<'static>, waited: Duration) {
    let mut sites = sites();
    let entry = sites.entry(site).or_insert_with(|| Site {
        stack: Vec::new(),
        contentions: 0,
        delay_ns: 0,
    });
    entry.contentions += 1;
    entry.delay_ns = entry
        .delay_ns
        .saturating_add(u64::try_from(waited.as_nanos()).unwrap_or(u64::MAX));
}

/// One site's stack and totals at one moment.
struct Snapshot {
    site: &'static Location<'static>,
    stack: Vec<backtrace::Frame>,
    contentions: u64,
    delay_ns: u64,
}

fn snapshot() -> Vec<Snapshot> {
    sites()
        .iter()
        .map(|(&site, s)| Snapshot {
            site,
            stack: s.stack.clone(),
            contentions: s.contentions,
            delay_ns: s.delay_ns,
        })
        .collect()
}

/// Lock sites with a contended acquisition so far: the index page's count, as Go counts records.
pub fn site_count() -> usize {
    sites().len()
}

/// Contended acquisitions and wait so far, all sites (for tests and the lab tool).
pub fn totals() -> (u64, Duration) {
    let sites = sites();
    let contentions = sites.values().map(|s| s.contentions).sum();
    let delay = sites.values().map(|s| s.delay_ns).sum();
    (contentions, Duration::from_nanos(delay))
}

/// `GET /debug/pprof/mutex[?seconds=N]`.
pub async fn handler(
    State(state): State<AppState>,
    RawQuery(query): RawQuery,
) -> Result<Response, ApiError> {
    const PATH: &str = "/debug/pprof/mutex";
    let params = Params::parse(PATH, query.as_deref(), &["seconds"])?;
    // Absent means the cumulative profile (0 is never a valid value: the range starts at 1).
    let seconds = params.integer("seconds", 1..=MAX_SECONDS, 0, " of seconds")?;
    let started = SystemTime::now();
    let (sites, duration) = if seconds == 0 {
        (snapshot(), None)
    } else {
        super::refuse_when_stopping(&state.stopping)?;
        let before: HashMap<_, _> = snapshot()
            .into_iter()
            .map(|s| (s.site, (s.contentions, s.delay_ns)))
            .collect();
        let start = std::time::Instant::now();
        super::sample_for(Duration::from_secs(seconds), &state.stopping).await;
        let mut sites = snapshot();
        for s in &mut sites {
            let (contentions, delay_ns) = before.get(s.site).copied().unwrap_or((0, 0));
            s.contentions -= contentions;
            s.delay_ns -= delay_ns;
        }
        sites.retain(|s| s.contentions > 0);
        // Stopped early: the profile covers the time that passed.
        (sites, Some(start.elapsed()))
    };
    // Symbolizing reads debug info: tens of milliseconds of CPU, off the runtime's threads.
    let body = tokio::task::spawn_blocking(move || {
        observer::scope(Observer::MutexProfile, || {
            encode_profile(&sites, started, duration)
        })
    })
    .await
    .map_err(|e| ApiError::internal("mutex profile", e))?
    .map_err(|e| ApiError::internal("mutex profile", e))?;
    Ok((
        [
            (header::CONTENT_TYPE, "application/octet-stream"),
            (
                header::CONTENT_DISPOSITION,
                "attachment; filename=\"mutex.pb.gz\"",
            ),
        ],
        body,
    )
        .into_response())
}

/// One function of a resolved frame (several when calls were inlined), innermost first.
struct Function {
    raw: String,
    name: String,
    file: String,
    line: u32,
}

/// The functions at each frame of `stack`, with the lock's and the stack capture's own frames
/// removed, so the innermost frame left is the caller of `lock()`.
fn resolve(stack: &[backtrace::Frame]) -> Resolved {
    let mut frames: Vec<(u64, Vec<Function>)> = stack
        .iter()
        .map(|frame| {
            let mut functions = Vec::new();
            backtrace::resolve_frame(frame, |symbol| {
                let raw = symbol
                    .name()
                    .map(|n| String::from_utf8_lossy(n.as_bytes()).into_owned())
                    .unwrap_or_else(|| format!("{:#x}", frame.ip() as usize));
                functions.push(Function {
                    name: encode::demangle(&raw),
                    raw,
                    file: symbol
                        .filename()
                        .map(|f| f.display().to_string())
                        .unwrap_or_default(),
                    line: symbol.lineno().unwrap_or(0),
                });
            });
            (frame.ip() as u64, functions)
        })
        .collect();
    // Leading instrument frames go, function by function (lock() may be inlined into its
    // caller, sharing a frame with it).
    while let Some((_, functions)) = frames.first_mut() {
        while functions.first().is_some_and(|f| is_instrument(&f.name)) {
            functions.remove(0);
        }
        if !functions.is_empty() {
            break;
        }
        frames.remove(0);
    }
    frames
}

fn is_instrument(name: &str) -> bool {
    // The capture runs in an observer scope (`note_site`), so the scope and the closure-call
    // shims it goes through sit between the capture and `lock()`.
    name.starts_with("profiling_lab::observer::")
        || name.starts_with("core::ops::function::")
        || name.starts_with("backtrace::")
        || name.starts_with("<backtrace::")
        || name.starts_with("profiling_lab::pprof::mutex::")
        || name.starts_with("profiling_lab::lock::")
        || name.starts_with("<profiling_lab::lock::")
}

fn encode_profile(
    sites: &[Snapshot],
    started: SystemTime,
    duration: Option<Duration>,
) -> Result<Vec<u8>, String> {
    let mut strings = StringTable::default();
    let mut profile = protos::Profile {
        sample_type: vec![
            strings.value_type("contentions", "count"),
            strings.value_type("delay", "nanoseconds"),
        ],
        period_type: Some(strings.value_type("contentions", "count")).into(),
        period: 1,
        time_nanos: started
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64),
        duration_nanos: duration.map_or(0, |d| d.as_nanos() as i64),
        ..Default::default()
    };
    let mut locations: HashMap<u64, u64> = HashMap::new();
    let mut functions: HashMap<String, u64> = HashMap::new();
    let mut symbolized = false;
    for site in sites {
        let cached = RESOLVED
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .get(site.site)
            .cloned();
        let stack = cached.unwrap_or_else(|| {
            symbolized = true;
            let stack = Arc::new(resolve(&site.stack));
            RESOLVED
                .lock()
                .unwrap_or_else(|e| e.into_inner())
                .insert(site.site, Arc::clone(&stack));
            stack
        });
        let mut location_id = Vec::new();
        for (address, frame_functions) in stack.iter() {
            let address = *address;
            let id = match locations.get(&address) {
                Some(&id) => id,
                None => {
                    let id = profile.location.len() as u64 + 1;
                    let line = frame_functions
                        .iter()
                        .map(|f| protos::Line {
                            function_id: function_id(&mut profile, &mut functions, &mut strings, f),
                            line: i64::from(f.line),
                            ..Default::default()
                        })
                        .collect();
                    profile.location.push(protos::Location {
                        id,
                        address,
                        line,
                        ..Default::default()
                    });
                    locations.insert(address, id);
                    id
                }
            };
            location_id.push(id);
        }
        profile.sample.push(protos::Sample {
            location_id,
            value: vec![
                i64::try_from(site.contentions).unwrap_or(i64::MAX),
                i64::try_from(site.delay_ns).unwrap_or(i64::MAX),
            ],
            ..Default::default()
        });
    }
    if symbolized {
        // The parsed debug info is tens of megabytes; what this profile needs is kept above.
        encode::release_symbol_cache();
    }
    profile.string_table = strings.into_strings();
    encode::gzip_profile(&profile)
}

fn function_id(
    profile: &mut protos::Profile,
    functions: &mut HashMap<String, u64>,
    strings: &mut StringTable,
    f: &Function,
) -> u64 {
    if let Some(&id) = functions.get(&f.raw) {
        return id;
    }
    let id = profile.function.len() as u64 + 1;
    profile.function.push(protos::Function {
        id,
        name: strings.intern(&f.name),
        system_name: strings.intern(&f.raw),
        filename: strings.intern(&f.file),
        ..Default::default()
    });
    functions.insert(f.raw.clone(), id);
    id
}
