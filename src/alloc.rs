//! The counting global allocator: jemalloc underneath, with per-thread allocation counters on top.
//!
//! Go's `runtime.MemStats` counts every allocation for free; Rust has no such thing, so the lab
//! wraps jemalloc and counts `alloc`/`realloc` calls and bytes. The counters have to be cheap
//! enough to leave on in production: one shared atomic costs about 10x an allocation (every
//! thread fights over one cache line), so each thread owns a padded slot it updates with a plain
//! load and store, and readers sum all slots (see `shared/notes/profiling.md`).
//!
//! The same file configures jemalloc through its `malloc_conf` symbol: heap profiling on (sampled
//! every 512 KiB, with cumulative counts for the `allocs` profile) and a short dirty-page decay
//! with a background thread, so that purges happen when a program churns memory. Those purges
//! are what `worker_gc_runs_total` counts, the closest honest analogue of Go's GC cycles.
//!
//! Observers (profilers, `/metrics`, HTTP; see [`crate::observer`]) must not show up in what
//! they observe. While a thread is in an observer scope, the allocator sends its allocations to
//! a jemalloc arena of that observer's own, bypassing the thread cache so that no region of an
//! observer arena is handed back to the lesson's code, and counts them in the observer's
//! counters. jemalloc finds a region's arena from its address, so memory may be freed or grown
//! in any scope.

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::Mutex;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU32, AtomicU64, Ordering::Relaxed};

use tikv_jemalloc_sys as ffi;
use tikv_jemallocator::Jemalloc;

/// jemalloc's start-up options. `MALLOC_CONF` in the environment is applied after these, so a
/// learner can still experiment (e.g. `MALLOC_CONF=lg_prof_sample:17`).
///
/// - `prof`, `prof_active`, `lg_prof_sample:19`: sample one allocation per 512 KiB for heap
///   profiles; smaller intervals inflate memory (see the notes).
/// - `prof_accum`: keep cumulative counts per stack, which `/debug/pprof/allocs` serves.
/// - `background_thread`, `dirty_decay_ms:1000`, `muzzy_decay_ms:0`: freed pages are handed back
///   to the OS about a second after they become unused; each sweep is a purge we count.
#[used]
#[cfg_attr(target_os = "linux", unsafe(export_name = "malloc_conf"))]
#[cfg_attr(not(target_os = "linux"), unsafe(export_name = "_rjem_malloc_conf"))]
pub static MALLOC_CONF: &[u8; 121] = b"prof:true,prof_active:true,prof_accum:true,lg_prof_sample:19,background_thread:true,dirty_decay_ms:1000,muzzy_decay_ms:0\0";

/// The global allocator of every binary that links this crate.
#[global_allocator]
static GLOBAL: CountingAlloc = CountingAlloc;

/// Allocation counts: calls to `alloc`/`alloc_zeroed`/`realloc` and the bytes they asked for.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct AllocCounts {
    pub allocations: u64,
    pub bytes: u64,
}

impl AllocCounts {
    /// Counts since `earlier` (counters only grow).
    pub fn since(self, earlier: AllocCounts) -> AllocCounts {
        AllocCounts {
            allocations: self.allocations.wrapping_sub(earlier.allocations),
            bytes: self.bytes.wrapping_sub(earlier.bytes),
        }
    }
}

/// Counts for the whole process: every thread's slot plus the shared overflow slot.
pub fn process_counts() -> AllocCounts {
    SLOTS
        .iter()
        .chain(std::iter::once(&OVERFLOW))
        .fold(AllocCounts::default(), |acc, slot| AllocCounts {
            allocations: acc.allocations + slot.allocations.load(Relaxed),
            bytes: acc.bytes + slot.bytes.load(Relaxed),
        })
}

/// Counts of the calling thread's own slot, or `None` when it shares the overflow slot (then a
/// before/after difference would include other threads' allocations).
///
/// Between two `.await`s a task stays on one thread, so the difference of two calls around
/// synchronous code is exactly what that code allocated.
pub fn thread_counts() -> Option<AllocCounts> {
    let slot = own_slot();
    (!std::ptr::eq(slot, &OVERFLOW)).then(|| AllocCounts {
        allocations: slot.allocations.load(Relaxed),
        bytes: slot.bytes.load(Relaxed),
    })
}

/// The calling thread's `realloc` calls (also counted in [`thread_counts`]), or `None` when it
/// shares the overflow slot. `lab check` grades the capacity lesson on them: a buffer sized
/// once never grows.
pub fn thread_reallocations() -> Option<u64> {
    let slot = own_slot();
    (!std::ptr::eq(slot, &OVERFLOW)).then(|| slot.reallocations.load(Relaxed))
}

/// Gives the calling thread's slot back to the pool, keeping its counts.
///
/// tokio calls this from `on_thread_stop` (see `runtime.rs`), so the blocking pool's short-lived
/// threads do not use up the slots. Allocations the thread makes afterwards, while it unwinds,
/// go to the overflow slot.
pub fn release_thread_slot() {
    MY_SLOT.with(|mine| {
        let index = mine.get();
        if (index as usize) < SLOT_COUNT {
            SLOTS[index as usize].owned.store(false, Release);
        }
        mine.set(RETIRED);
    });
}

/// jemalloc with counting. Counting happens after a successful call so failed allocations are
/// not counted; `realloc` counts as one allocation of the new size, as Go counts a grown slice.
pub struct CountingAlloc;

// SAFETY: every method forwards to jemalloc with the caller's arguments unchanged (inside an
// observer scope: to `mallocx`/`rallocx`/`sdallocx` with the same size and alignment, plus an
// arena and no thread cache); the counting touches only atomics and `const` thread-locals
// without destructors, and never allocates or panics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if let Some((observer, arena)) = observer_arena() {
            // SAFETY: `layout` has a non-zero size (the caller's contract), the flags name an
            // arena `arenas.create` returned.
            let ptr = unsafe { ffi::mallocx(layout.size(), arena | align_flags(layout)) };
            if !ptr.is_null() {
                record_observer(observer, layout.size());
            }
            return ptr.cast();
        }
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { Jemalloc.alloc(layout) };
        if !ptr.is_null() {
            record(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if let Some((observer, arena)) = observer_arena() {
            // SAFETY: as for `alloc`.
            let ptr = unsafe {
                ffi::mallocx(
                    layout.size(),
                    arena | align_flags(layout) | ffi::MALLOCX_ZERO,
                )
            };
            if !ptr.is_null() {
                record_observer(observer, layout.size());
            }
            return ptr.cast();
        }
        // SAFETY: as for `alloc`.
        let ptr = unsafe { Jemalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        if observer().is_some() {
            // Straight back to the region's arena, not into this thread's cache, from which
            // the lesson's next allocation could take it.
            // SAFETY: `ptr` was allocated by this allocator with `layout` (caller's contract).
            unsafe {
                ffi::sdallocx(
                    ptr.cast(),
                    layout.size(),
                    align_flags(layout) | ffi::MALLOCX_TCACHE_NONE,
                )
            };
            return;
        }
        // SAFETY: as for `alloc`.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if let Some((observer, arena)) = observer_arena() {
            let new_layout = Layout::from_size_align(new_size, layout.align());
            let flags = arena | new_layout.map_or(0, align_flags);
            // SAFETY: `ptr` is live and was allocated with `layout`, `new_size` is non-zero
            // (the caller's contract).
            let new = unsafe { ffi::rallocx(ptr.cast(), new_size, flags) };
            if !new.is_null() {
                record_observer(observer, new_size);
            }
            return new.cast();
        }
        // SAFETY: as for `alloc`.
        let new = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            record(new_size);
            record_growth();
        }
        new
    }
}

/// jemalloc's alignment flag, as `tikv-jemallocator` computes it: none when the natural
/// alignment of the size class suffices.
#[inline]
fn align_flags(layout: Layout) -> i32 {
    const ALIGNOF_MAX_ALIGN_T: usize = if cfg!(any(
        target_arch = "x86",
        target_arch = "arm",
        target_arch = "mips",
        target_arch = "powerpc"
    )) {
        8
    } else {
        16
    };
    if layout.align() <= ALIGNOF_MAX_ALIGN_T && layout.align() <= layout.size() {
        0
    } else {
        ffi::MALLOCX_ALIGN(layout.align())
    }
}

/// Number of observers; [`crate::observer::Observer`] has one variant per index.
pub const OBSERVERS: usize = 7;
const NO_ARENA: u32 = u32::MAX;
/// Index + 1 of the observer whose scope the thread is in; 0 outside any scope.
const LESSON: u8 = 0;

/// Each observer's jemalloc arena, created on its first scope.
static ARENAS: [AtomicU32; OBSERVERS] = [const { AtomicU32::new(NO_ARENA) }; OBSERVERS];
/// Allocations made in each observer's scopes. Observers allocate rarely next to the lesson,
/// so shared atomics are cheap enough here.
static OBSERVER_SLOTS: [Slot; OBSERVERS] = [const { Slot::new() }; OBSERVERS];

thread_local! {
    static OBSERVING: Cell<u8> = const { Cell::new(LESSON) };
}

/// The observer whose scope the calling thread is in, by index.
pub fn observer() -> Option<usize> {
    match OBSERVING.with(Cell::get) {
        LESSON => None,
        n => Some(n as usize - 1),
    }
}

/// The observer's index and the `mallocx` flags for its arena, when in a scope whose arena exists.
#[inline]
fn observer_arena() -> Option<(usize, i32)> {
    let observer = observer()?;
    let arena = ARENAS.get(observer)?.load(Relaxed);
    (arena != NO_ARENA).then(|| {
        (
            observer,
            ffi::MALLOCX_ARENA(arena as usize) | ffi::MALLOCX_TCACHE_NONE,
        )
    })
}

/// Puts the calling thread in `observer`'s scope (`None`: the lesson's), returning the scope it
/// was in. Creates the observer's arena on first use, and switches jemalloc's heap sampling off
/// for the thread while it observes. Used by [`crate::observer`], which pairs every call.
pub(crate) fn set_observer(observer: Option<usize>) -> Option<usize> {
    // An index out of range would make the allocator index past its tables: treat it as none.
    let observer = observer.filter(|&i| i < OBSERVERS);
    if let Some(i) = observer {
        ensure_arena(i);
    }
    let previous = self::observer();
    OBSERVING.with(|o| o.set(observer.map_or(LESSON, |i| i as u8 + 1)));
    if previous.is_some() != observer.is_some() {
        set_thread_sampling(observer.is_none());
    }
    previous
}

/// Allocation counts of observer `index`'s scopes.
pub fn observer_counts(index: usize) -> AllocCounts {
    OBSERVER_SLOTS
        .get(index)
        .map_or_else(AllocCounts::default, |slot| AllocCounts {
            allocations: slot.allocations.load(Relaxed),
            bytes: slot.bytes.load(Relaxed),
        })
}

/// The jemalloc arena of observer `index`, once it has been created.
pub fn observer_arena_index(index: usize) -> Option<u32> {
    ARENAS
        .get(index)
        .map(|a| a.load(Relaxed))
        .filter(|&a| a != NO_ARENA)
}

fn ensure_arena(index: usize) {
    static CREATING: Mutex<()> = Mutex::new(());
    if ARENAS[index].load(Relaxed) != NO_ARENA {
        return;
    }
    let _creating = CREATING.lock().unwrap_or_else(|e| e.into_inner());
    if ARENAS[index].load(Relaxed) != NO_ARENA {
        return;
    }
    // SAFETY: `arenas.create` returns the new arena's index as an `unsigned`.
    // On failure (arena limit reached) the observer keeps using the default arenas and is
    // still counted apart; only its memory then shows in the lesson's figures.
    if let Ok(arena) = unsafe { tikv_jemalloc_ctl::raw::read::<u32>(b"arenas.create\0") } {
        ARENAS[index].store(arena, Relaxed);
    }
}

/// Turns jemalloc's cache off for the calling thread, for good, handing what it holds back to
/// the arenas and freeing the cache itself (about 28 KiB of jemalloc's metadata in arena 0).
/// For a thread that only ever does observer work (see [`crate::pprof::background`]): its
/// allocations bypass the cache anyway, so the cache would keep only what the thread's
/// start-up (std's and glibc's, before any scope) filled it with, in the pages of a lesson
/// arena. Fails quietly, as switching the thread's heap sampling does: the cache then stays.
pub fn drop_thread_cache() {
    // SAFETY: `thread.tcache.enabled` is a `bool`.
    let _ = unsafe { tikv_jemalloc_ctl::raw::write(b"thread.tcache.enabled\0", false) };
}

/// Turns jemalloc's heap sampling on or off for the calling thread (`thread.prof.active`).
/// Fails quietly when jemalloc runs without profiling: then there is nothing to keep apart.
fn set_thread_sampling(active: bool) {
    static MIB: std::sync::OnceLock<Option<[usize; 3]>> = std::sync::OnceLock::new();
    let mib = MIB.get_or_init(|| {
        let mut mib = [0usize; 3];
        tikv_jemalloc_ctl::raw::name_to_mib(b"thread.prof.active\0", &mut mib)
            .ok()
            .map(|()| mib)
    });
    if let Some(mib) = mib {
        // SAFETY: `thread.prof.active` is a `bool`.
        let _ = unsafe { tikv_jemalloc_ctl::raw::write_mib(mib, active) };
    }
}

#[inline]
fn record_observer(observer: usize, size: usize) {
    let Some(slot) = OBSERVER_SLOTS.get(observer) else {
        return;
    };
    slot.allocations.fetch_add(1, Relaxed);
    slot.bytes.fetch_add(size as u64, Relaxed);
}

/// Enough for tokio's worker threads, its blocking pool and the main thread; a thread that finds
/// none free falls back to the overflow slot, which stays correct but pays for an atomic add.
const SLOT_COUNT: usize = 256;
const UNCLAIMED: u16 = u16::MAX;
const RETIRED: u16 = u16::MAX - 1;

/// One thread's counters, on a cache line of its own so that threads never share one.
#[repr(align(128))]
struct Slot {
    owned: AtomicBool,
    allocations: AtomicU64,
    bytes: AtomicU64,
    /// `realloc` calls alone: a collection growing because it was not sized (lesson 2).
    reallocations: AtomicU64,
}

impl Slot {
    const fn new() -> Self {
        Slot {
            owned: AtomicBool::new(false),
            allocations: AtomicU64::new(0),
            bytes: AtomicU64::new(0),
            reallocations: AtomicU64::new(0),
        }
    }
}

static SLOTS: [Slot; SLOT_COUNT] = [const { Slot::new() }; SLOT_COUNT];
static OVERFLOW: Slot = Slot::new();

thread_local! {
    // `const` and `Copy`: no lazy initialisation and no destructor, so reading it from inside
    // the allocator can neither allocate nor fail during thread teardown.
    static MY_SLOT: Cell<u16> = const { Cell::new(UNCLAIMED) };
}

fn own_slot() -> &'static Slot {
    MY_SLOT.with(|mine| {
        let mut index = mine.get();
        if index == UNCLAIMED {
            index = claim_slot();
            mine.set(index);
        }
        SLOTS.get(index as usize).unwrap_or(&OVERFLOW)
    })
}

fn claim_slot() -> u16 {
    SLOTS
        .iter()
        .position(|slot| {
            slot.owned
                .compare_exchange(false, true, Acquire, Relaxed)
                .is_ok()
        })
        .map_or(RETIRED, |index| index as u16)
}

#[inline]
fn record(size: usize) {
    let slot = own_slot();
    if std::ptr::eq(slot, &OVERFLOW) {
        slot.allocations.fetch_add(1, Relaxed);
        slot.bytes.fetch_add(size as u64, Relaxed);
    } else {
        // Only the owning thread writes its slot, so load-then-store loses nothing and avoids
        // the locked read-modify-write that makes shared counters slow.
        slot.allocations
            .store(slot.allocations.load(Relaxed) + 1, Relaxed);
        slot.bytes
            .store(slot.bytes.load(Relaxed) + size as u64, Relaxed);
    }
}

#[inline]
fn record_growth() {
    let slot = own_slot();
    if std::ptr::eq(slot, &OVERFLOW) {
        slot.reallocations.fetch_add(1, Relaxed);
    } else {
        // As in `record`: only the owning thread writes its slot.
        slot.reallocations
            .store(slot.reallocations.load(Relaxed) + 1, Relaxed);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_this_threads_allocations_exactly() {
        let before = thread_counts().expect("test threads get a slot of their own");
        let v: Vec<u64> = Vec::with_capacity(100);
        let after = thread_counts().unwrap();
        drop(v);
        assert_eq!(
            after.since(before),
            AllocCounts {
                allocations: 1,
                bytes: 800
            }
        );
    }

    #[test]
    fn realloc_counts_as_one_allocation_of_the_new_size() {
        let mut v: Vec<u8> = Vec::with_capacity(16);
        let before = thread_counts().unwrap();
        v.reserve_exact(64);
        let after = thread_counts().unwrap();
        assert_eq!(
            after.since(before),
            AllocCounts {
                allocations: 1,
                bytes: 64
            }
        );
    }

    #[test]
    fn released_slots_keep_their_counts_and_are_reused() {
        let worker = std::thread::spawn(|| {
            let counts = thread_counts().unwrap();
            let kept = Box::new(7u64);
            release_thread_slot();
            assert!(
                thread_counts().is_none(),
                "a retired thread uses the overflow slot"
            );
            (counts, Box::into_raw(kept) as usize)
        });
        let (counts, leaked) = worker.join().unwrap();
        // SAFETY: the pointer came from `Box::into_raw` in the thread above.
        drop(unsafe { Box::from_raw(leaked as *mut u64) });
        assert!(process_counts().allocations > counts.allocations);
    }
}
