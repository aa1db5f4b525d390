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

use std::alloc::{GlobalAlloc, Layout};
use std::cell::Cell;
use std::sync::atomic::Ordering::{Acquire, Release};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering::Relaxed};

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

// SAFETY: every method forwards to jemalloc with the caller's arguments unchanged; the counting
// touches only atomics and a `const` thread-local without a destructor, and never allocates.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        // SAFETY: forwarded as is; the caller upholds `GlobalAlloc::alloc`'s contract.
        let ptr = unsafe { Jemalloc.alloc(layout) };
        if !ptr.is_null() {
            record(layout.size());
        }
        ptr
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let ptr = unsafe { Jemalloc.alloc_zeroed(layout) };
        if !ptr.is_null() {
            record(layout.size());
        }
        ptr
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: as for `alloc`.
        unsafe { Jemalloc.dealloc(ptr, layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // SAFETY: as for `alloc`.
        let new = unsafe { Jemalloc.realloc(ptr, layout, new_size) };
        if !new.is_null() {
            record(new_size);
            record_growth();
        }
        new
    }
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
