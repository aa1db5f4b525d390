//! CPU profiles: pprof-rs samples the stacks of every thread 100 times a second (as Go does) and
//! reports them as a pprof profile or a flamegraph.
//!
//! The sampler is one per process (a signal handler and a timer), so one CPU profile runs at a
//! time: whoever holds it (an HTTP request, or `--cpuprofile` for the whole run) is named in the
//! 409 a second request gets. Its first use allocates tens of megabytes for unwinding tables
//! that are never freed; both workers pay the same, and the docs say so.

use std::sync::Mutex;

use axum::http::StatusCode;
use pprof::{ProfilerGuard, ProfilerGuardBuilder};

use crate::http::ApiError;
use crate::pprof::encode;

/// Samples per second, Go's default.
const FREQUENCY: i32 = 100;

/// Who holds the profiler, if anyone.
static HOLDER: Mutex<Option<&'static str>> = Mutex::new(None);

/// A running CPU profile. Dropping it stops sampling and frees the profiler for the next one.
pub struct CpuSession {
    // Declared first so sampling stops before the claim is released.
    guard: ProfilerGuard<'static>,
    _claim: Claim,
}

/// Starts sampling on behalf of `holder` (e.g. "a request for /debug/pprof/profile").
pub fn start(holder: &'static str) -> Result<CpuSession, ApiError> {
    let claim = Claim::take(holder)?;
    let guard = ProfilerGuardBuilder::default()
        .frequency(FREQUENCY)
        // Unwinding through these libraries' frames can deadlock or crash in a signal handler.
        .blocklist(&["libc", "libgcc", "pthread", "vdso"])
        .build()
        .map_err(|e| ApiError::internal("starting the CPU profiler", e))?;
    Ok(CpuSession {
        guard,
        _claim: claim,
    })
}

impl CpuSession {
    /// Stops sampling and returns the gzipped pprof profile. Symbolizes, so call it off the
    /// async threads.
    pub fn into_pprof(self) -> Result<Vec<u8>, ApiError> {
        let profile = self
            .into_report()?
            .pprof()
            .map_err(|e| ApiError::internal("converting the CPU report", e))?;
        encode::gzip_profile(&profile).map_err(|e| ApiError::internal("CPU profile", e))
    }

    /// Stops sampling and returns the samples as an SVG flamegraph.
    pub fn into_flamegraph(self) -> Result<Vec<u8>, ApiError> {
        let report = self.into_report()?;
        let mut svg = Vec::new();
        report
            .flamegraph(&mut svg)
            .map_err(|e| ApiError::internal("drawing the flamegraph", e))?;
        if svg.is_empty() {
            // inferno writes nothing for zero samples; an idle process deserves an answer.
            return Err(ApiError::new(
                StatusCode::UNPROCESSABLE_ENTITY,
                "no CPU samples were taken: the process was idle; profile for longer or under load",
            ));
        }
        Ok(svg)
    }

    /// Stops sampling and symbolizes the samples.
    fn into_report(self) -> Result<pprof::Report, ApiError> {
        let report = self
            .guard
            .report()
            .build()
            .map_err(|e| ApiError::internal("building the CPU report", e))?;
        encode::release_symbol_cache();
        Ok(report)
    }
}

struct Claim;

impl Claim {
    fn take(holder: &'static str) -> Result<Claim, ApiError> {
        let mut current = HOLDER.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(busy) = *current {
            return Err(ApiError::new(
                StatusCode::CONFLICT,
                format!(
                    "the CPU profiler is busy with {busy}; it profiles the whole process, so only \
                     one CPU profile or flamegraph runs at a time: retry when that one ends"
                ),
            ));
        }
        *current = Some(holder);
        Ok(Claim)
    }
}

impl Drop for Claim {
    fn drop(&mut self) {
        *HOLDER.lock().unwrap_or_else(|e| e.into_inner()) = None;
    }
}
