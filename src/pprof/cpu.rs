//! CPU profiles: pprof-rs samples the stacks of every thread 100 times a second (as Go does);
//! the lab encodes the samples itself, as Go's runtime does, with the binary's mappings and
//! each frame's real address, so `go tool pprof -disasm` can show the hot instructions.
//!
//! The sampler is one per process (a signal handler and a timer), so one CPU profile runs at a
//! time: whoever holds it (an HTTP request, or `--cpuprofile` for the whole run) is named in the
//! 409 a second request gets. pprof-rs keeps a sample table of about 80 MB once it has run, and
//! symbolization parses the binary's debug information: all of it happens in the
//! `cpu_profile` observer's scope, so it shows in `worker_observer_memory_bytes`, not in the
//! lesson's memory or heap profile.

use std::collections::HashMap;
use std::mem::ManuallyDrop;
use std::sync::Mutex;
use std::time::{Duration, SystemTime};

use axum::http::StatusCode;
use pprof::protos::Profile;
use pprof::{ProfilerGuard, ProfilerGuardBuilder};

use crate::http::ApiError;
use crate::kind::WorkerKind;
use crate::observer::{self, Observer};
use crate::pprof::symbolize::{self, Stack};
use crate::pprof::{encode, flame};

/// Samples per second, Go's default.
const FREQUENCY: i32 = 100;

/// Who holds the profiler, if anyone.
static HOLDER: Mutex<Option<&'static str>> = Mutex::new(None);

/// A running CPU profile. Dropping it stops sampling and frees the profiler for the next one.
pub struct CpuSession {
    // Dropped by hand, in the observer's scope, before the claim is released: stopping
    // pprof-rs allocates a fresh sample table.
    guard: ManuallyDrop<ProfilerGuard<'static>>,
    _claim: Claim,
}

/// Starts sampling on behalf of `holder` (e.g. "a request for /debug/pprof/profile").
pub fn start(holder: &'static str) -> Result<CpuSession, ApiError> {
    let claim = Claim::take(holder)?;
    let guard = observer::scope(Observer::CpuProfile, || {
        ProfilerGuardBuilder::default()
            .frequency(FREQUENCY)
            // Unwinding through these libraries' frames can deadlock or crash in a signal handler.
            .blocklist(&["libc", "libgcc", "pthread", "vdso"])
            .build()
    })
    .map_err(|e| ApiError::internal("starting the CPU profiler", e))?;
    Ok(CpuSession {
        guard: ManuallyDrop::new(guard),
        _claim: claim,
    })
}

impl Drop for CpuSession {
    fn drop(&mut self) {
        // SAFETY: dropped once, here; `guard` is not used afterwards.
        observer::scope(Observer::CpuProfile, || unsafe {
            ManuallyDrop::drop(&mut self.guard)
        });
    }
}

impl CpuSession {
    /// Stops sampling and returns the gzipped pprof profile. Symbolizes, so call it off the
    /// async threads.
    pub fn into_pprof(self) -> Result<Vec<u8>, ApiError> {
        observer::scope(Observer::CpuProfile, || {
            let profile = self.into_profile()?;
            encode::gzip_profile(&profile).map_err(|e| ApiError::internal("CPU profile", e))
        })
    }

    /// Stops sampling and returns the samples as an SVG flamegraph whose title names the
    /// worker, the duration and the number of samples.
    pub fn into_flamegraph(self, kind: WorkerKind) -> Result<Vec<u8>, ApiError> {
        observer::scope(Observer::CpuProfile, || {
            let profile = self.into_profile()?;
            let samples: i64 = profile.sample.iter().filter_map(|s| s.value.first()).sum();
            let seconds = Duration::from_nanos(profile.duration_nanos as u64).as_secs_f64();
            let title = format!(
                "worker-{} CPU, {seconds:.0} s, {samples} samples at {FREQUENCY} Hz",
                kind.label()
            );
            flame::draw(&profile, 0, title, "samples")
                .map_err(|e| ApiError::internal("CPU flamegraph", e))?
                .ok_or_else(|| {
                    ApiError::new(
                        StatusCode::UNPROCESSABLE_ENTITY,
                        "no CPU samples were taken: the process was idle; profile for longer or under load",
                    )
                })
        })
    }

    /// Stops sampling, symbolizes the samples and encodes them as Go does: sample types
    /// `samples/count` and `cpu/nanoseconds`, a period of 10 ms.
    fn into_profile(self) -> Result<Profile, ApiError> {
        let report = self
            .guard
            .report()
            .build_unresolved()
            .map_err(|e| ApiError::internal("reading the CPU samples", e))?;
        drop(self); // stop sampling before the slow part
        let mut handler = HandlerFrames::default();
        let mut counts: HashMap<Stack, i64> = HashMap::new();
        for (frames, &count) in &report.data {
            let ips: Vec<usize> = frames.frames.iter().map(|f| f.ip() as usize).collect();
            let skip = handler.frames_to_skip(&ips);
            if skip >= ips.len() {
                continue;
            }
            let stack = Stack {
                addrs: ips[skip..].to_vec(),
                precise_leaf: true,
            };
            *counts.entry(stack).or_default() += count as i64;
        }
        let (stacks, counts): (Vec<Stack>, Vec<i64>) = counts.into_iter().unzip();
        let mut profile = symbolize::profile(&stacks)
            .map_err(|e| ApiError::internal("symbolizing the CPU profile", e))?;
        encode::release_symbol_cache();
        let period = 1_000_000_000 / i64::from(FREQUENCY);
        let mut strings =
            encode::StringTable::from_strings(std::mem::take(&mut profile.string_table));
        profile.sample_type = vec![
            strings.value_type("samples", "count"),
            strings.value_type("cpu", "nanoseconds"),
        ];
        profile.period_type = Some(strings.value_type("cpu", "nanoseconds")).into();
        profile.period = period;
        profile.string_table = strings.into_strings();
        for (sample, count) in profile.sample.iter_mut().zip(counts) {
            sample.value = vec![count, count * period];
        }
        let timing = &report.timing;
        profile.time_nanos = timing
            .start_time
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
        profile.duration_nanos = timing.duration.as_nanos() as i64;
        Ok(profile)
    }
}

/// Finds where the stack of the interrupted code starts in a sample: pprof-rs records the
/// signal handler's own frames first, then the kernel's signal trampoline.
#[derive(Default)]
struct HandlerFrames {
    is_handler: HashMap<usize, bool>,
}

impl HandlerFrames {
    /// Frames up to and including the handler and the trampoline after it.
    fn frames_to_skip(&mut self, ips: &[usize]) -> usize {
        // The handler is a few frames deep (backtrace's and pprof-rs's own functions).
        for (i, &ip) in ips.iter().enumerate().take(24) {
            let is_handler = *self.is_handler.entry(ip).or_insert_with(|| {
                let mut found = false;
                backtrace::resolve(ip as *mut std::ffi::c_void, |symbol| {
                    found |= symbol
                        .name()
                        .and_then(|n| n.as_str())
                        .is_some_and(|n| n.contains("perf_signal_handler"));
                });
                found
            });
            if is_handler {
                return i + 2;
            }
        }
        0
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
