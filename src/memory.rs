//! What the allocator knows about memory: jemalloc's own statistics.
//!
//! These stand in for Go's `runtime.MemStats`: `allocated` for `Alloc` (bytes in live
//! allocations), `resident` for `Sys` (physically resident pages the allocator holds), and the
//! purge counters for `NumGC`. Rust has no garbage collector; what rises with allocation churn is
//! jemalloc handing freed pages back to the operating system, one purge sweep at a time.
//!
//! `allocated` and `resident` are the lesson's: the arenas of the observers (profilers,
//! `/metrics`, HTTP; see [`crate::observer`]) are subtracted, and read apart with
//! [`observer_arenas`]. So is what jemalloc keeps for its own bookkeeping, which grows when a
//! thread or an arena appears, whoever made it, and never with what the workload holds. It was
//! all of what the optimized worker's figures gained from a CPU, a heap, an allocs and a task
//! profile (`lab bench`'s observer section: 90 to 150 KiB allocated, 450 to 600 KiB resident,
//! from the threads that serve profiles and the observers' arenas, made on first use):
//!
//! - free regions parked in the threads' caches (`stats.arenas.<i>.tcache_bytes`). jemalloc
//!   counts a region as allocated from the moment a thread cache takes it from its arena, and
//!   a cache takes many regions of a size class at a time: a thread's first 48-byte allocation
//!   moves a hundred of them. Every thread that starts (a blocking-pool thread encoding a CPU
//!   profile, the task profile's thread) begins with empty caches that fill, and the runtime's
//!   threads' caches swing by 100 KiB as jemalloc trims them. Go's `HeapAlloc` counts only
//!   objects in use, not the free slots of its per-thread caches.
//! - jemalloc's own allocations (`stats.arenas.<i>.internal`): each thread's cache (its bins'
//!   stacks, about 28 KiB for every thread that allocates, in arena 0) and the heap profiler's
//!   records (per-thread `prof_tdata`, the stacks of sampled allocations). jemalloc counts them
//!   twice, in `stats.allocated` and in `stats.metadata`; Go keeps its profiling buckets out of
//!   `HeapAlloc` too (in `BuckHashSys`).
//! - jemalloc's base metadata (`stats.arenas.<i>.base`): each arena's own structure (about
//!   90 KiB, made when a new thread is given an arena of its own), extent headers, the
//!   statistics `mallctl` keeps per arena, and the radix tree of the address space
//!   (`stats.metadata_rtree`), which counts 2 MiB for each leaf, one per GiB-wide region of
//!   address space ever mapped: the CPU profiler's 84 MB table adds one. Go counts these apart
//!   from the heap as well (`MSpanSys`, `MCacheSys`, `OtherSys`).
//!
//! So `allocated` is what the workload's code holds, and `resident` the workload's heap pages:
//! pages of its arenas holding allocations or free regions, and freed pages not yet returned
//! (`pactive + pdirty + pmuzzy`), less jemalloc's own allocations among them. The bookkeeping
//! left out is reported in [`MemoryStats::thread_caches`] and
//! [`MemoryStats::allocator_metadata`]; `process_resident_memory_bytes` (the kernel's count)
//! includes all of it.

use std::sync::OnceLock;

use tikv_jemalloc_ctl::{epoch, raw, stats};

use crate::alloc;

/// A consistent snapshot of jemalloc's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in live allocations of the workload: `stats.allocated` without the observers'
    /// arenas, the free regions in thread caches and jemalloc's own metadata (see the module
    /// comment).
    pub allocated: u64,
    /// Bytes in the workload's heap pages: active, dirty and muzzy pages of the arenas other
    /// than the observers', less jemalloc's own allocations in them (see the module comment).
    pub resident: u64,
    /// Purge sweeps over dirty and muzzy pages, summed over all arenas.
    pub purges: u64,
    /// Free regions held in the threads' caches (`stats.arenas.<all>.tcache_bytes`), which
    /// `stats.allocated` counts and `allocated` leaves out.
    pub thread_caches: u64,
    /// jemalloc's internal metadata allocations (`stats.arenas.<all>.internal`): thread caches'
    /// bins and the heap profiler's records, which `stats.allocated` counts and `allocated`
    /// and `resident` leave out. Its base metadata (`stats.metadata` less this) is outside
    /// the heap pages `resident` counts.
    pub allocator_metadata: u64,
}

impl MemoryStats {
    /// Reads the counters. jemalloc caches its statistics until the epoch advances; advancing
    /// costs about 13 µs, cheap enough for every scrape.
    pub fn read() -> MemoryStats {
        // Reading can only fail if jemalloc was built without statistics, which Cargo.toml rules
        // out; zeros are then the honest answer rather than a crash of the metrics endpoint.
        let _ = epoch::advance();
        let mibs = Mibs::get();
        let observers = read_observer_arenas(mibs);
        let allocated = stats::allocated::read().map_or(0, |v| v as u64);
        let page = mibs.page.unwrap_or(4096);
        let heap_pages = arena_pages(mibs, ALL_ARENAS)
            .saturating_sub(observers.iter().map(|a| a.heap_pages).sum::<u64>());
        let thread_caches = mibs.read_size(&mibs.tcache_bytes);
        let allocator_metadata = mibs.read_size(&mibs.internal);
        MemoryStats {
            // A region of an observer's arena freed by a lesson thread outside any scope may sit
            // in that thread's cache and be subtracted twice; `saturating_sub` keeps that a
            // small undercount, never a wrap.
            allocated: allocated
                .saturating_sub(observers.iter().map(|a| a.allocated).sum::<u64>())
                .saturating_sub(thread_caches)
                .saturating_sub(allocator_metadata),
            resident: (heap_pages * page).saturating_sub(allocator_metadata),
            purges: mibs.read(&mibs.dirty_npurge) + mibs.read(&mibs.muzzy_npurge),
            thread_caches,
            allocator_metadata,
        }
    }
}

/// One observer arena's memory.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ArenaMemory {
    /// Bytes in live allocations (`stats.arenas.<i>.small.allocated` + `large.allocated`).
    pub allocated: u64,
    /// Resident bytes (`stats.arenas.<i>.resident`), the arena's own metadata included.
    pub resident: u64,
    /// Pages of the arena's extents: active, dirty and muzzy.
    pub heap_pages: u64,
}

/// The memory of each observer's arena, by observer index (zeros for an arena not yet created).
/// Advances the statistics epoch.
pub fn observer_arenas() -> [ArenaMemory; alloc::OBSERVERS] {
    let _ = epoch::advance();
    read_observer_arenas(Mibs::get())
}

fn read_observer_arenas(mibs: &Mibs) -> [ArenaMemory; alloc::OBSERVERS] {
    std::array::from_fn(|i| {
        alloc::observer_arena_index(i).map_or_else(ArenaMemory::default, |arena| ArenaMemory {
            allocated: arena_stat(&mibs.small_allocated, arena)
                + arena_stat(&mibs.large_allocated, arena),
            resident: arena_stat(&mibs.resident, arena),
            heap_pages: arena_pages(mibs, arena),
        })
    })
}

/// jemalloc's `MALLCTL_ARENAS_ALL`: the statistics of all arenas merged.
const ALL_ARENAS: u32 = 4096;

/// Pages of `arena`'s extents (`pactive + pdirty + pmuzzy`): holding allocations or free
/// regions, or freed and not yet returned to the OS. Not the arena's base metadata.
fn arena_pages(mibs: &Mibs, arena: u32) -> u64 {
    arena_stat(&mibs.pactive, arena)
        + arena_stat(&mibs.pdirty, arena)
        + arena_stat(&mibs.pmuzzy, arena)
}

/// Per-arena counters exist only through raw names; `4096` is jemalloc's `MALLCTL_ARENAS_ALL`,
/// all arenas merged (a single arena index fails for arenas that were never initialised).
/// Looking a name up is a string parse, so it is done once and the numeric path (MIB) kept.
/// Reads a `size_t` statistic of `arena` through a MIB looked up for arena 0 (component 2 is
/// the arena index).
fn arena_stat<const N: usize>(mib: &Option<[usize; N]>, arena: u32) -> u64 {
    mib.and_then(|mut mib| {
        mib[2] = arena as usize;
        // SAFETY: the statistics read this way are `size_t`.
        unsafe { raw::read_mib::<usize>(&mib) }.ok()
    })
    .map_or(0, |v| v as u64)
}

struct Mibs {
    /// jemalloc's page size (`arenas.page`), read once.
    page: Option<u64>,
    tcache_bytes: Option<[usize; 4]>,
    internal: Option<[usize; 4]>,
    dirty_npurge: Option<[usize; 4]>,
    muzzy_npurge: Option<[usize; 4]>,
    small_allocated: Option<[usize; 5]>,
    large_allocated: Option<[usize; 5]>,
    resident: Option<[usize; 4]>,
    pactive: Option<[usize; 4]>,
    pdirty: Option<[usize; 4]>,
    pmuzzy: Option<[usize; 4]>,
}

impl Mibs {
    fn get() -> &'static Mibs {
        static MIBS: OnceLock<Mibs> = OnceLock::new();
        MIBS.get_or_init(|| Mibs {
            // SAFETY: `arenas.page` is a `size_t`.
            page: unsafe { raw::read::<usize>(b"arenas.page\0") }
                .ok()
                .map(|p| p as u64),
            tcache_bytes: Self::lookup(b"stats.arenas.4096.tcache_bytes\0"),
            internal: Self::lookup(b"stats.arenas.4096.internal\0"),
            dirty_npurge: Self::lookup(b"stats.arenas.4096.dirty_npurge\0"),
            muzzy_npurge: Self::lookup(b"stats.arenas.4096.muzzy_npurge\0"),
            small_allocated: Self::lookup(b"stats.arenas.0.small.allocated\0"),
            large_allocated: Self::lookup(b"stats.arenas.0.large.allocated\0"),
            resident: Self::lookup(b"stats.arenas.0.resident\0"),
            pactive: Self::lookup(b"stats.arenas.0.pactive\0"),
            pdirty: Self::lookup(b"stats.arenas.0.pdirty\0"),
            pmuzzy: Self::lookup(b"stats.arenas.0.pmuzzy\0"),
        })
    }

    fn lookup<const N: usize>(name: &[u8]) -> Option<[usize; N]> {
        let mut mib = [0usize; N];
        raw::name_to_mib(name, &mut mib).ok().map(|()| mib)
    }

    fn read_size<const N: usize>(&self, mib: &Option<[usize; N]>) -> u64 {
        // SAFETY: `tcache_bytes` and `internal` are `size_t` statistics.
        mib.and_then(|mib| unsafe { raw::read_mib::<usize>(&mib) }.ok())
            .map_or(0, |v| v as u64)
    }

    fn read(&self, mib: &Option<[usize; 4]>) -> u64 {
        // SAFETY: both names are documented as `uint64_t` statistics.
        mib.and_then(|mib| unsafe { raw::read_mib::<u64>(&mib) }.ok())
            .unwrap_or(0)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocated_follows_a_large_allocation() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let before = MemoryStats::read();
        let block = vec![1u8; 64 << 20];
        let during = MemoryStats::read();
        assert!(
            during.allocated >= before.allocated + (60 << 20),
            "{before:?} -> {during:?}"
        );
        assert!(during.resident >= 60 << 20);
        drop(block);
    }

    #[test]
    fn free_regions_in_thread_caches_are_not_lesson_memory() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        let before = MemoryStats::read();
        let (filled_tx, filled_rx) = std::sync::mpsc::channel();
        let (done_tx, done_rx) = std::sync::mpsc::channel::<()>();
        // A thread allocates and frees 256 regions of each size class up to 32 KiB, four per
        // doubling as jemalloc's classes go: its cache keeps up to 200 of each small class
        // and 20 of each large one, free, and jemalloc counts them in `stats.allocated`.
        let filler = std::thread::spawn(move || {
            for lg in 3..15 {
                for quarter in 0..4 {
                    let size = (1usize << lg) + quarter * (1 << lg) / 4;
                    let regions: Vec<Vec<u8>> =
                        (0..256).map(|_| Vec::with_capacity(size)).collect();
                    drop(std::hint::black_box(regions));
                }
            }
            filled_tx.send(()).unwrap();
            let _ = done_rx.recv();
        });
        filled_rx.recv().unwrap();
        let during = MemoryStats::read();
        done_tx.send(()).unwrap();
        filler.join().unwrap();
        let cached = during.thread_caches.saturating_sub(before.thread_caches);
        assert!(cached >= 1 << 20, "{before:?} -> {during:?}");
        // Other tests allocate meanwhile; a quarter of what the thread caches holds is far
        // more than they keep, and far less than the cache itself.
        assert!(
            during.allocated < before.allocated + cached / 4,
            "{before:?} -> {during:?}"
        );
    }

    /// The tests here read process-wide figures; one large allocation at a time.
    static ONE_AT_A_TIME: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn the_address_space_map_is_not_lesson_memory() {
        let _one = ONE_AT_A_TIME.lock().unwrap_or_else(|e| e.into_inner());
        // SAFETY: `stats.metadata_rtree` is a `size_t` statistic.
        let rtree = || unsafe { raw::read::<usize>(b"stats.metadata_rtree\0") }.unwrap_or(0);
        let before = MemoryStats::read();
        let map_before = rtree();
        // 1.5 GiB of address space for an observer, never touched: its last page lies in a
        // GiB-wide region jemalloc's radix tree has no leaf for yet, and a new leaf counts
        // 2 MiB in arena 0, a lesson arena.
        let reserved: Vec<u8> =
            crate::observer::scope(crate::observer::Observer::CpuProfile, || {
                Vec::with_capacity(3 << 29)
            });
        let during = MemoryStats::read();
        let map_during = rtree();
        drop(reserved);
        assert!(map_during >= map_before, "{map_before} -> {map_during}");
        assert!(
            during.resident < before.resident + (1 << 20),
            "{before:?} -> {during:?} (radix tree {map_before} -> {map_during})"
        );
    }
}
