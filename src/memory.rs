//! What the allocator knows about memory: jemalloc's own statistics.
//!
//! These stand in for Go's `runtime.MemStats`: `allocated` for `Alloc` (bytes in live
//! allocations), `resident` for `Sys` (physically resident pages the allocator holds), and the
//! purge counters for `NumGC`. Rust has no garbage collector; what rises with allocation churn is
//! jemalloc handing freed pages back to the operating system, one purge sweep at a time.

use std::sync::OnceLock;

use tikv_jemalloc_ctl::{epoch, raw, stats};

/// A consistent snapshot of jemalloc's counters.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct MemoryStats {
    /// Bytes in live allocations (`stats.allocated`).
    pub allocated: u64,
    /// Bytes in pages the allocator has touched and not returned (`stats.resident`).
    pub resident: u64,
    /// Purge sweeps over dirty and muzzy pages, summed over all arenas.
    pub purges: u64,
}

impl MemoryStats {
    /// Reads the counters. jemalloc caches its statistics until the epoch advances; advancing
    /// costs about 13 µs, cheap enough for every scrape.
    pub fn read() -> MemoryStats {
        // Reading can only fail if jemalloc was built without statistics, which Cargo.toml rules
        // out; zeros are then the honest answer rather than a crash of the metrics endpoint.
        let _ = epoch::advance();
        let mibs = Mibs::get();
        MemoryStats {
            allocated: stats::allocated::read().map_or(0, |v| v as u64),
            resident: stats::resident::read().map_or(0, |v| v as u64),
            purges: mibs.read(&mibs.dirty_npurge) + mibs.read(&mibs.muzzy_npurge),
        }
    }
}

/// Per-arena counters exist only through raw names; `4096` is jemalloc's `MALLCTL_ARENAS_ALL`,
/// all arenas merged (a single arena index fails for arenas that were never initialised).
/// Looking a name up is a string parse, so it is done once and the numeric path (MIB) kept.
struct Mibs {
    dirty_npurge: Option<[usize; 4]>,
    muzzy_npurge: Option<[usize; 4]>,
}

impl Mibs {
    fn get() -> &'static Mibs {
        static MIBS: OnceLock<Mibs> = OnceLock::new();
        MIBS.get_or_init(|| Mibs {
            dirty_npurge: Self::lookup(b"stats.arenas.4096.dirty_npurge\0"),
            muzzy_npurge: Self::lookup(b"stats.arenas.4096.muzzy_npurge\0"),
        })
    }

    fn lookup(name: &[u8]) -> Option<[usize; 4]> {
        let mut mib = [0usize; 4];
        raw::name_to_mib(name, &mut mib).ok().map(|()| mib)
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
}
