//! Heap profiles from jemalloc's sampling profiler: `heap` (live memory) and `allocs` (all
//! memory ever allocated), both by allocation site.
//!
//! jemalloc samples about one allocation per 512 KiB and records its stack. A dump lists, per
//! stack, the sampled objects and bytes still live and, because the lab starts jemalloc with
//! `prof_accum`, those allocated since start. Samples are unbiased the way jeprof does, symbolized
//! in-process, and the allocator's and the standard library's frames are trimmed from the top of
//! each stack, so the leaf is the code that asked for memory, as in Go's profiles.

use std::collections::{HashMap, HashSet};
use std::io::{BufRead, BufReader};
use std::sync::Arc;

use axum::http::StatusCode;
use jemalloc_pprof::{JemallocProfCtl, PROF_CTL, StackProfile, WeightedStack};

use crate::http::ApiError;
use crate::pprof::encode;

/// Which numbers of the dump a profile shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum HeapView {
    /// Bytes in live allocations (Go's `inuse_space`): what the heap holds now.
    InUse,
    /// Bytes allocated since start, freed or not (Go's `alloc_space`): where churn comes from.
    Allocated,
}

impl HeapView {
    fn sample_type(self) -> (&'static str, &'static str) {
        match self {
            HeapView::InUse => ("inuse_space", "bytes"),
            HeapView::Allocated => ("alloc_space", "bytes"),
        }
    }
}

/// Dumps, symbolizes and encodes a heap profile without blocking the async threads.
pub async fn profile(view: HeapView) -> Result<Vec<u8>, ApiError> {
    let ctl = Arc::clone(controller()?).lock_owned().await;
    tokio::task::spawn_blocking(move || {
        let mut ctl = ctl;
        build(&mut ctl, view)
    })
    .await
    .map_err(|e| ApiError::internal("heap profile task", e))?
}

/// The same, for code that is not async (writing `--memprofile` at exit).
pub fn profile_blocking(view: HeapView) -> Result<Vec<u8>, ApiError> {
    build(&mut controller()?.blocking_lock(), view)
}

fn controller() -> Result<&'static Arc<tokio::sync::Mutex<JemallocProfCtl>>, ApiError> {
    PROF_CTL.as_ref().ok_or_else(|| {
        ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "heap profiling is off: jemalloc started without prof:true (does MALLOC_CONF set prof:false?)",
        )
    })
}

fn build(ctl: &mut JemallocProfCtl, view: HeapView) -> Result<Vec<u8>, ApiError> {
    if !ctl.activated() {
        return Err(ApiError::new(
            StatusCode::SERVICE_UNAVAILABLE,
            "heap profiling is inactive (prof_active:false); nothing has been sampled",
        ));
    }
    let file = ctl
        .dump()
        .map_err(|e| ApiError::internal("dumping the jemalloc heap profile", e))?;
    let stacks = parse(BufReader::new(file), view)
        .map_err(|e| ApiError::internal("reading the jemalloc heap profile", e))?;
    let gzipped = stacks.to_pprof(view.sample_type(), ("space", "bytes"), None);
    let mut profile =
        encode::gunzip_profile(&gzipped).map_err(|e| ApiError::internal("heap profile", e))?;
    trim_allocator_frames(&mut profile);
    // Every address was symbolized in-process; mappings without functions (libc, the vdso)
    // would make pprof look for those files locally and print warnings about them.
    for mapping in &mut profile.mapping {
        mapping.has_functions = true;
    }
    encode::release_symbol_cache();
    encode::gzip_profile(&profile).map_err(|e| ApiError::internal("heap profile", e))
}

/// Reads jemalloc's `heap_v2` dump. Each stack is a line `@ 0xleaf ... 0xroot` followed by
/// `t*: curobjs: curbytes [accumobjs: accumbytes]`, summed over threads.
fn parse(dump: impl BufRead, view: HeapView) -> Result<StackProfile, String> {
    let mut lines = dump.lines();
    let header = lines
        .next()
        .ok_or("empty dump")?
        .map_err(|e| e.to_string())?;
    let rate: f64 = header
        .strip_prefix("heap_v2/")
        .and_then(|r| r.trim().parse().ok())
        .ok_or_else(|| format!("unexpected header {header:?}"))?;
    let mut profile = StackProfile::default();
    let mut stack: Option<Vec<usize>> = None;
    for line in lines {
        let line = line.map_err(|e| e.to_string())?;
        let words: Vec<&str> = line.split_ascii_whitespace().collect();
        match words.as_slice() {
            ["@", addrs @ ..] => {
                let mut addrs = addrs
                    .iter()
                    .map(|a| usize::from_str_radix(a.trim_start_matches("0x"), 16))
                    .collect::<Result<Vec<_>, _>>()
                    .map_err(|e| format!("bad address in {line:?}: {e}"))?;
                addrs.reverse(); // root first, as StackProfile expects
                stack = Some(addrs);
            }
            ["t*:", cur_objs, cur_bytes, accum_objs, accum_bytes] => {
                let Some(addrs) = stack.take() else { continue }; // the totals line
                let number = |w: &str| -> Result<f64, String> {
                    w.trim_matches(|c| c == '[' || c == ']' || c == ':')
                        .parse()
                        .map_err(|e| format!("bad count in {line:?}: {e}"))
                };
                let (objs, bytes) = match view {
                    HeapView::InUse => (number(cur_objs)?, number(cur_bytes)?),
                    HeapView::Allocated => (number(accum_objs)?, number(accum_bytes)?),
                };
                if objs > 0.0 {
                    let weight = unbias(objs, bytes, rate);
                    profile.push_stack(WeightedStack { addrs, weight }, None);
                }
            }
            _ => {}
        }
    }
    if let Some(mappings) = mappings::MAPPINGS.as_deref() {
        for mapping in mappings {
            profile.push_mapping(mapping.clone());
        }
    }
    Ok(profile)
}

/// jemalloc samples an allocation of `s` bytes with probability `1 - exp(-s/rate)`; scaling by
/// its inverse estimates the true total (jeprof's `AdjustSamples`, per stack).
fn unbias(objs: f64, bytes: f64, rate: f64) -> f64 {
    let mean = bytes / objs;
    bytes / (1.0 - (-mean / rate).exp())
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
    let names: HashMap<u64, &str> = profile
        .function
        .iter()
        .map(|f| {
            let name = profile
                .string_table
                .get(f.name as usize)
                .map_or("", String::as_str);
            (f.id, name)
        })
        .collect();
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
