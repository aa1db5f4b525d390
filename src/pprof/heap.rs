//! Heap profiles from jemalloc's sampling profiler: `heap` (live memory) and `allocs` (all
//! memory ever allocated), both by allocation site, with Go's four sample types.
//!
//! jemalloc samples about one allocation per 512 KiB (Go's `MemProfileRate` is the same) and
//! records its stack. A dump lists, per stack, the sampled objects and bytes still live and,
//! because the lab starts jemalloc with `prof_accum`, those allocated since start. Samples are
//! unbiased the way jeprof does, symbolized in-process, and the allocator's and the standard
//! library's frames are trimmed from the top of each stack, so the leaf is the code that asked
//! for memory, as in Go's profiles.
//!
//! As in Go, `heap` and `allocs` are one profile with four sample types (`alloc_objects`,
//! `alloc_space`, `inuse_objects`, `inuse_space`) and a different default; `?seconds=N` takes
//! two dumps N seconds apart and serves their difference; `?debug=1` is Go's text format.
//! Dumping and symbolizing run in the `heap_profile` observer's scope: they neither count in
//! the lesson's memory nor appear in the next heap profile.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::io::{BufRead, BufReader};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use axum::http::StatusCode;
use jemalloc_pprof::{JemallocProfCtl, PROF_CTL};
use pprof::protos::Profile;
use tokio_util::sync::CancellationToken;

use crate::http::ApiError;
use crate::kind::WorkerKind;
use crate::memory::MemoryStats;
use crate::observer::{self, Observer};
use crate::pprof::background::Background;
use crate::pprof::symbolize::{self, Stack};
use crate::pprof::{OneAtATime, encode, flame};

/// Which sample type a profile shows by default.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapView {
    /// Bytes in live allocations (Go's `inuse_space`): what the heap holds now.
    InUse,
    /// Bytes allocated since start, freed or not (Go's `alloc_space`): where churn comes from.
    Allocated,
}

impl HeapView {
    fn default_sample_type(self) -> &'static str {
        match self {
            HeapView::InUse => "inuse_space",
            HeapView::Allocated => "alloc_space",
        }
    }
}

/// Go's sample types, in Go's order: the index of each in a record's values.
const SAMPLE_TYPES: [(&str, &str); 4] = [
    ("alloc_objects", "count"),
    ("alloc_space", "bytes"),
    ("inuse_objects", "count"),
    ("inuse_space", "bytes"),
];
const ALLOC_SPACE: usize = 1;

/// One dump of jemalloc's profile: per stack (leaf first), the unbiased values in the order of
/// Go's sample types (`alloc_objects`, `alloc_space`, `inuse_objects`, `inuse_space`).
#[derive(Debug, Clone, Default)]
pub struct Snapshot {
    /// jemalloc's mean sampling interval in bytes.
    pub interval: u64,
    pub records: HashMap<Vec<usize>, Record>,
    pub taken: Option<SystemTime>,
}

#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Record {
    pub values: [f64; 4],
    /// Allocations jemalloc actually sampled (since start) at this stack.
    pub sampled: f64,
}

impl Snapshot {
    /// `self` minus `earlier`, stack by stack (Go's delta profile: `inuse_*` may be negative).
    fn since(mut self, earlier: &Snapshot) -> Snapshot {
        for (stack, old) in &earlier.records {
            let record = self.records.entry(stack.clone()).or_default();
            for (value, old) in record.values.iter_mut().zip(old.values) {
                *value -= old;
            }
            record.sampled -= old.sampled;
        }
        self.records
            .retain(|_, r| r.values.iter().any(|&v| v.round() != 0.0));
        self
    }
}

/// What a request for a heap profile asks for.
#[derive(Debug, Clone, Copy)]
pub struct Request {
    pub view: HeapView,
    /// A delta over this many seconds instead of since start.
    pub seconds: Option<Duration>,
}

/// Dumps, symbolizes and encodes a heap profile (since start) without blocking the async
/// threads.
pub async fn profile(view: HeapView) -> Result<Vec<u8>, ApiError> {
    let (snapshot, duration) = snapshots(
        Request {
            view,
            seconds: None,
        },
        &CancellationToken::new(),
    )
    .await?;
    blocking(move || encode_profile(&snapshot, view, duration)).await
}

/// The same, for code that is not async (writing `--memprofile` at exit).
pub fn profile_blocking(view: HeapView) -> Result<Vec<u8>, ApiError> {
    observer::scope(Observer::HeapProfile, || {
        let snapshot = dump(&mut controller()?.blocking_lock())?;
        encode_profile(&snapshot, view, None)
    })
}

/// A profile as pprof's gzipped protobuf (`debug=0`).
pub async fn pprof(request: Request, stopping: &CancellationToken) -> Result<Vec<u8>, ApiError> {
    let (snapshot, duration) = requested(request, stopping).await?;
    blocking(move || encode_profile(&snapshot, request.view, duration)).await
}

/// A profile in Go's `debug=1` text format.
pub async fn text(request: Request, stopping: &CancellationToken) -> Result<String, ApiError> {
    let (snapshot, duration) = requested(request, stopping).await?;
    blocking(move || text_profile(&snapshot, duration)).await
}

/// An SVG flamegraph of bytes allocated, since start or over `seconds`.
pub async fn allocs_flamegraph(
    kind: WorkerKind,
    seconds: Option<Duration>,
    stopping: &CancellationToken,
) -> Result<Vec<u8>, ApiError> {
    let request = Request {
        view: HeapView::Allocated,
        seconds,
    };
    let (snapshot, duration) = requested(request, stopping).await?;
    blocking(move || {
        let sampled: f64 = snapshot.records.values().map(|r| r.sampled).sum();
        let profile = symbolized(&snapshot, HeapView::Allocated, duration)?;
        let bytes: i64 = profile
            .sample
            .iter()
            .filter_map(|s| s.value.get(ALLOC_SPACE))
            .sum();
        // The seconds asked for: the dumps themselves add a little to the measured span.
        let span = seconds.map_or_else(
            || "since start".to_owned(),
            |s| format!("{} s", s.as_secs()),
        );
        let title = format!(
            "worker-{} allocs, {span}: {} allocated, {} samples (one per 512 KiB)",
            kind.label(),
            crate::summary::bytes(bytes.max(0) as u64),
            sampled.round() as i64
        );
        let drawn = flame::draw(&profile, ALLOC_SPACE, title.clone(), "bytes")
            .map_err(|e| ApiError::internal("allocs flamegraph", e))?;
        // Nothing sampled is an answer, not an error: the worker allocated less than jemalloc's
        // sampling interval in the window (the optimized worker allocates nothing per task).
        Ok(drawn.unwrap_or_else(|| {
            flame::empty(
                &title,
                "No allocation was sampled: jemalloc samples one allocation per 512 KiB, so this \
                 worker allocated less than that here. Ask for more seconds to see rarer ones.",
            )
        }))
    })
    .await
}

/// Stacks in the heap (live) and allocs (since start) profiles, for the index page.
pub async fn counts() -> Result<(usize, usize), ApiError> {
    let (snapshot, _) = snapshots(
        Request {
            view: HeapView::InUse,
            seconds: None,
        },
        &CancellationToken::new(),
    )
    .await?;
    let inuse = snapshot
        .records
        .values()
        .filter(|r| r.values[3] > 0.0)
        .count();
    Ok((inuse, snapshot.records.len()))
}

/// One heap or allocs profile at a time: each dump writes and reads a file of every sampled
/// stack, and a crowd of them would queue without limit behind the controller's lock.
static TURN: OneAtATime = OneAtATime::new();

/// A profile asked for over HTTP: one at a time (others wait for their turn, then get 409);
/// no delta starts once the worker has begun to stop.
async fn requested(
    request: Request,
    stopping: &CancellationToken,
) -> Result<(Snapshot, Option<Duration>), ApiError> {
    if request.seconds.is_some() {
        super::refuse_when_stopping(stopping)?;
    }
    let _turn = TURN.turn("heap or allocs profile").await?;
    snapshots(request, stopping).await
}

/// One dump, or two `seconds` apart and their difference; with the time between them. A delta
/// cut short by the worker stopping covers the time that passed.
async fn snapshots(
    request: Request,
    stopping: &CancellationToken,
) -> Result<(Snapshot, Option<Duration>), ApiError> {
    observer::instrument(Observer::HeapProfile, async move {
        let first = dump_async().await?;
        let Some(seconds) = request.seconds else {
            return Ok((first, None));
        };
        let start = Instant::now();
        super::sample_for(seconds, stopping).await;
        let second = dump_async().await?;
        Ok((second.since(&first), Some(start.elapsed())))
    })
    .await
}

async fn dump_async() -> Result<Snapshot, ApiError> {
    let ctl = Arc::clone(controller()?).lock_owned().await;
    blocking(move || {
        let mut ctl = ctl;
        dump(&mut ctl)
    })
    .await
}

/// Runs heap-profile work off the async threads, on the heap profile's own thread, in the
/// observer's scope. Not on tokio's blocking pool: a pool thread started for a profile filled
/// its jemalloc cache in a lesson arena before the work entered the scope, and showed in the
/// runtime's blocking-thread count (see [`Background`]).
async fn blocking<T: Send + 'static>(
    work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
) -> Result<T, ApiError> {
    static WORK: Background = Background::new("heap-profile", Observer::HeapProfile);
    WORK.run(work).await
}

fn controller() -> Result<&'static Arc<tokio::sync::Mutex<JemallocProfCtl>>, ApiError> {
    PROF_CTL.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "heap profiling is off: jemalloc started without prof:true (does MALLOC_CONF set prof:false?)",
        )
    })
}

fn dump(ctl: &mut JemallocProfCtl) -> Result<Snapshot, ApiError> {
    if !ctl.activated() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "heap profiling is inactive (prof_active:false); nothing has been sampled",
        ));
    }
    let file = ctl
        .dump()
        .map_err(|e| ApiError::internal("dumping the jemalloc heap profile", e))?;
    parse(BufReader::new(file))
        .map_err(|e| ApiError::internal("reading the jemalloc heap profile", e))
}

/// Symbolizes a snapshot into a profile with Go's sample types, period and default.
fn symbolized(
    snapshot: &Snapshot,
    view: HeapView,
    duration: Option<Duration>,
) -> Result<Profile, ApiError> {
    let (stacks, records): (Vec<Stack>, Vec<Record>) = snapshot
        .records
        .iter()
        .map(|(addrs, record)| {
            (
                Stack {
                    addrs: addrs.clone(),
                    precise_leaf: false,
                },
                *record,
            )
        })
        .unzip();
    let mut profile =
        symbolize::profile(&stacks).map_err(|e| ApiError::internal("heap profile", e))?;
    encode::release_symbol_cache();
    let mut strings = encode::StringTable::from_strings(std::mem::take(&mut profile.string_table));
    profile.sample_type = SAMPLE_TYPES
        .iter()
        .map(|(ty, unit)| strings.value_type(ty, unit))
        .collect();
    profile.period_type = Some(strings.value_type("space", "bytes")).into();
    profile.period = snapshot.interval as i64;
    profile.default_sample_type = strings.intern(view.default_sample_type());
    profile.string_table = strings.into_strings();
    for (sample, record) in profile.sample.iter_mut().zip(records) {
        sample.value = record.values.iter().map(|v| v.round() as i64).collect();
    }
    if let Some(taken) = snapshot.taken {
        profile.time_nanos = taken
            .duration_since(SystemTime::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos() as i64);
    }
    profile.duration_nanos = duration.map_or(0, |d| d.as_nanos() as i64);
    trim_allocator_frames(&mut profile);
    Ok(profile)
}

fn encode_profile(
    snapshot: &Snapshot,
    view: HeapView,
    duration: Option<Duration>,
) -> Result<Vec<u8>, ApiError> {
    let profile = symbolized(snapshot, view, duration)?;
    encode::gzip_profile(&profile).map_err(|e| ApiError::internal("heap profile", e))
}

/// Go's `debug=1` heap text: a header with the totals, one record per stack with its
/// addresses, then each frame as `#\taddress\tfunction\tfile:line`, and the allocator's
/// statistics at the end (Go's `runtime.MemStats`).
fn text_profile(snapshot: &Snapshot, duration: Option<Duration>) -> Result<String, ApiError> {
    let profile = symbolized(snapshot, HeapView::InUse, duration)?;
    let strings = &profile.string_table;
    let string = |i: i64| strings.get(i as usize).map_or("", String::as_str);
    let functions: HashMap<u64, &pprof::protos::Function> =
        profile.function.iter().map(|f| (f.id, f)).collect();
    let locations: HashMap<u64, &pprof::protos::Location> =
        profile.location.iter().map(|l| (l.id, l)).collect();
    let mut samples: Vec<&pprof::protos::Sample> = profile.sample.iter().collect();
    // Largest live bytes first, then largest allocated, as Go sorts by in-use bytes.
    samples.sort_by_key(|s| std::cmp::Reverse((s.value[3], s.value[1])));
    let total = |i: usize| -> i64 { samples.iter().map(|s| s.value[i]).sum() };
    let mut out = String::new();
    let _ = writeln!(
        out,
        "heap profile: {}: {} [{}: {}] @ heap/{}",
        total(2),
        total(3),
        total(0),
        total(1),
        2 * snapshot.interval
    );
    for sample in &samples {
        let v = &sample.value;
        let _ = write!(out, "{}: {} [{}: {}] @", v[2], v[3], v[0], v[1]);
        for id in &sample.location_id {
            if let Some(location) = locations.get(id) {
                let _ = write!(out, " {:#x}", location.address);
            }
        }
        out.push('\n');
        for id in &sample.location_id {
            let Some(location) = locations.get(id) else {
                continue;
            };
            for line in &location.line {
                let Some(function) = functions.get(&line.function_id) else {
                    continue;
                };
                let _ = writeln!(
                    out,
                    "#\t{:#x}\t{}\t{}:{}",
                    location.address,
                    string(function.name),
                    string(function.filename),
                    line.line
                );
            }
        }
        out.push('\n');
    }
    let memory = MemoryStats::read();
    let _ = writeln!(
        out,
        "\n# jemalloc statistics of the workload (Go: runtime.MemStats)"
    );
    let _ = writeln!(out, "# Alloc = {}", memory.allocated);
    let _ = writeln!(out, "# Sys = {}", memory.resident);
    let _ = writeln!(out, "# NumPurges = {}", memory.purges);
    let _ = writeln!(
        out,
        "# Observers' live bytes (kept out of the figures above and of this profile):"
    );
    for (observer, cost) in observer::costs() {
        let _ = writeln!(out, "#   {} = {}", observer.label(), cost.memory_bytes);
    }
    Ok(out)
}

/// Reads jemalloc's `heap_v2` dump. Each stack is a line `@ 0xleaf ... 0xroot` followed by
/// `t*: curobjs: curbytes [accumobjs: accumbytes]`, summed over threads.
fn parse(dump: impl BufRead) -> Result<Snapshot, String> {
    let mut lines = dump.lines();
    let header = lines
        .next()
        .ok_or("empty dump")?
        .map_err(|e| e.to_string())?;
    let rate: f64 = header
        .strip_prefix("heap_v2/")
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| format!("unexpected header {header:?}"))?;
    let mut snapshot = Snapshot {
        interval: rate as u64,
        records: HashMap::new(),
        taken: Some(SystemTime::now()),
    };
    let mut stack: Option<Vec<usize>> = None;
    for line in lines {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["@", addrs @ ..] => {
                let addrs = addrs
                    .iter()
                    .map(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("bad address in {line:?}: {e}"))?;
                stack = Some(addrs);
            }
            ["t*:", cur_objs, cur_bytes, accum_objs, accum_bytes] => {
                let Some(addrs) = stack.take() else { continue }; // the totals line
                let number = |w: &str| -> Result<f64, String> {
                    w.trim_matches(|c| c == '[' || c == ']' || c == ':')
                        .parse()
                        .map_err(|e| format!("bad count in {line:?}: {e}"))
                };
                let (cur_objs, cur_bytes) = (number(cur_objs)?, number(cur_bytes)?);
                let (accum_objs, accum_bytes) = (number(accum_objs)?, number(accum_bytes)?);
                if accum_objs <= 0.0 && cur_objs <= 0.0 {
                    continue;
                }
                let [inuse_objs, inuse_bytes] = unbias(cur_objs, cur_bytes, rate);
                let [alloc_objs, alloc_bytes] = unbias(accum_objs, accum_bytes, rate);
                let record = snapshot.records.entry(addrs).or_default();
                record.values = [alloc_objs, alloc_bytes, inuse_objs, inuse_bytes];
                record.sampled = accum_objs;
            }
            _ => {}
        }
    }
    Ok(snapshot)
}

/// jemalloc samples an allocation of `s` bytes with probability `1 - exp(-s/rate)`; scaling
/// objects and bytes by its inverse estimates the true totals (jeprof's `AdjustSamples`, per
/// stack).
fn unbias(objs: f64, bytes: f64, rate: f64) -> [f64; 2] {
    if objs <= 0.0 || bytes <= 0.0 {
        return [0.0, 0.0];
    }
    let mean = bytes / objs;
    let scale = 1.0 / (1.0 - (-mean / rate).exp());
    [objs * scale, bytes * scale]
}

/// Frames of jemalloc and of the counting allocator, by name prefix.
const ALLOCATOR_FRAMES: &[&str] = &[
    "prof_",
    "_rjem_",
    "je_",
    "imalloc",
    "ialloc",
    "malloc",
    "calloc",
    "realloc",
    "rallocx",
    "irallocx",
    "mallocx",
    "do_rallocx",
    "posix_memalign",
    "aligned_alloc",
    "__rustc::",
    "__rust_alloc",
    "__rust_realloc",
    "__rdl_",
    "__rg_",
    "tikv_jemallocator::",
    "profiling_lab::alloc::",
];

/// Crates of the standard library, whose collection and formatting internals are folded into
/// the code that called them, as Go's pprof folds `runtime.growslice` into its caller.
const STD_CRATES: &[&str] = &["alloc::", "core::", "std::", "hashbrown::"];

/// Whether a frame belongs to the allocator or the standard library. Trimming these from the
/// leaf end of a stack leaves on top the first function of the program (or of a dependency)
/// that asked for memory: `bad::render`, not `Vec::reserve`.
fn is_allocator_frame(name: &str) -> bool {
    let path = name
        .trim_start_matches(['<', '&'])
        .trim_start_matches("mut ");
    // `<T as alloc::string::ToString>::to_string`, `<i64 as ...>`: the trait's crate decides.
    let path = match path.split_once(" as ") {
        Some((ty, rest)) if !ty.contains("::") => rest,
        _ => path,
    };
    let path = path
        .trim_start_matches(['<', '&'])
        .trim_start_matches("mut ");
    ALLOCATOR_FRAMES
        .iter()
        .any(|prefix| path.starts_with(prefix))
        || STD_CRATES.iter().any(|prefix| path.starts_with(prefix))
}

/// Drops allocator and standard-library frames from the leaf end of every sample: whole
/// locations, and the inlined lines at the top of the first location that is not all of them.
pub fn trim_allocator_frames(profile: &mut pprof::protos::Profile) {
    let names = crate::pprof::symbolize::function_names(profile);
    // Per location: (leading allocator lines, all lines).
    let leading: HashMap<u64, (usize, usize)> = profile
        .location
        .iter()
        .map(|loc| {
            let n = loc
                .line
                .iter()
                .take_while(|line| {
                    names
                        .get(&line.function_id)
                        .is_some_and(|n| is_allocator_frame(n))
                })
                .count();
            (loc.id, (n, loc.line.len()))
        })
        .collect();
    let mut tops = HashSet::new();
    for sample in &mut profile.sample {
        let whole = sample
            .location_id
            .iter()
            .take_while(|id| matches!(leading.get(id), Some(&(n, all)) if n == all))
            .count();
        // Keep at least one frame: a stack that is all allocator still deserves a name.
        let drop = whole.min(sample.location_id.len().saturating_sub(1));
        sample.location_id.drain(..drop);
        tops.extend(sample.location_id.first().copied());
    }
    for loc in &mut profile.location {
        if let (true, Some(&(n, all))) = (tops.contains(&loc.id), leading.get(&loc.id))
            && n < all
        {
            loc.line.drain(..n);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::is_allocator_frame;

    #[test]
    fn allocator_and_std_frames_are_trimmed_program_frames_kept() {
        for frame in [
            "_rjem_je_prof_backtrace",
            "__rustc::__rust_alloc",
            "<tikv_jemallocator::Jemalloc as core::alloc::global::GlobalAlloc>::alloc",
            "<profiling_lab::alloc::CountingAlloc as core::alloc::global::GlobalAlloc>::alloc",
            "alloc::raw_vec::RawVecInner<A>::reserve",
            "alloc::vec::Vec<T,A>::push_mut",
            "<T as alloc::string::ToString>::to_string",
            "<&mut alloc::string::String as core::fmt::Write::write_fmt::SpecWriteFmt>::spec_write_fmt",
            "<alloc::string::String as core::ops::arith::Add<&str>>::add",
            "hashbrown::raw::alloc::inner::do_alloc",
        ] {
            assert!(is_allocator_frame(frame), "{frame} should be trimmed");
        }
        for frame in [
            "profiling_lab::bad::render",
            "<profiling_lab::bad::Bad as profiling_lab::pool::Strategy>::handle",
            "hyper::proto::h1::io::WriteBuf<B>::new",
            "<hyper::proto::h1::conn::Conn<I,B,T> as core::fmt::Debug>::fmt",
        ] {
            assert!(!is_allocator_frame(frame), "{frame} should be kept");
        }
    }
}
