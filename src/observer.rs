//! The observer effect, kept apart: work done to *observe* the worker (rendering `/metrics`,
//! CPU and heap profiles, task dumps, serving HTTP) runs in an observer scope, and what it
//! allocates and the CPU it burns are counted for that observer instead of for the lesson.
//!
//! The lab's first rule is that an instrument must not change what it shows. Before this
//! module, one CPU profile made the optimized worker's heap grow 66-fold (pprof-rs keeps an
//! 86 MB sample table), heap profiles showed mostly the profiler's own buckets, and each
//! `/metrics` scrape added 745 allocations to the allocation rate it reported. Inside a scope:
//!
//! - the counting allocator sends every allocation to a jemalloc arena of that observer's own,
//!   and counts it in the observer's counters, not in the lesson's (see [`crate::alloc`]);
//! - jemalloc's heap sampling is off for the thread, so heap and allocs profiles never show
//!   the observers' stacks;
//! - the thread's CPU time (`CLOCK_THREAD_CPUTIME_ID`) is added to the observer's.
//!
//! The lesson metrics (`worker_allocated_memory_bytes`, `worker_resident_memory_bytes`,
//! `worker_allocations_total`, ...) are the process's totals minus the observers' arenas and
//! counters; the observers' own figures are `worker_observer_*{observer}` (see
//! [`crate::metrics`]). Scopes nest: the innermost observer is charged.

use std::cell::Cell;
use std::future::Future;
use std::pin::Pin;
use std::sync::OnceLock;
use std::sync::atomic::{AtomicU64, Ordering::Relaxed};
use std::task::{Context, Poll};

use crate::alloc::{self, AllocCounts};
use crate::memory;

/// Who is observing. The label values are the `observer` label of the `worker_observer_*`
/// metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Observer {
    /// Rendering `/metrics`.
    Metrics,
    /// CPU profiles and CPU flamegraphs: the sampler, its sample table, symbolization.
    CpuProfile,
    /// Heap and allocs profiles: jemalloc's dump, parsing, symbolization.
    HeapProfile,
    /// Task profiles (`/debug/pprof/goroutine`).
    TaskProfile,
    /// Serving HTTP: connections, request parsing, responses.
    Http,
    /// The lock profile (`/debug/pprof/mutex`): stacks captured at contended call sites and
    /// their symbolization.
    MutexProfile,
    /// tokio-console (`--console`): console-subscriber's layer in every poll, its aggregator and
    /// gRPC server on their own thread (see [`crate::console`]).
    Console,
}

impl Observer {
    /// Every observer, in the order of their index.
    pub const ALL: [Observer; alloc::OBSERVERS] = [
        Observer::Metrics,
        Observer::CpuProfile,
        Observer::HeapProfile,
        Observer::TaskProfile,
        Observer::Http,
        Observer::MutexProfile,
        Observer::Console,
    ];

    /// The `observer` label value.
    pub fn label(self) -> &'static str {
        match self {
            Observer::Metrics => "metrics",
            Observer::CpuProfile => "cpu_profile",
            Observer::HeapProfile => "heap_profile",
            Observer::TaskProfile => "task_profile",
            Observer::Http => "http",
            Observer::MutexProfile => "mutex_profile",
            Observer::Console => "console",
        }
    }

    fn index(self) -> usize {
        self as usize
    }
}

/// Runs `f` as `observer`'s work: its allocations, heap samples and CPU time are the observer's.
pub fn scope<T>(observer: Observer, f: impl FnOnce() -> T) -> T {
    let _entered = Entered::enter(observer);
    f()
}

/// [`scope`] for work too short and too frequent to read the thread's CPU clock around each
/// time: a `tracing` layer's callbacks, dozens per task (see [`crate::console`]). Allocations
/// and heap samples are kept apart exactly as in [`scope`]. The CPU time is sampled, as a
/// profiler samples: one call in [`BRIEF_SAMPLING`], picked at random, is timed with the
/// thread's CPU clock (less the clock's own cost) and counts for [`BRIEF_SAMPLING`] calls, an
/// estimate at 1/64th of the clock's cost (a system call, 2.5 µs measured in the lab's sandbox,
/// where reading it twice per callback would cost more than the callbacks). The wall clock,
/// cheap as it is, would not do: on a machine short of cores it also counts the time the thread
/// waits to run again, and read several times too high there. Inside another scope it is timed
/// exactly, as [`scope`] is.
pub fn brief_scope<T>(observer: Observer, f: impl FnOnce() -> T) -> T {
    if alloc::observer().is_some() {
        return scope(observer, f);
    }
    let _entered = Brief::enter(observer);
    f()
}

/// One [`brief_scope`] in this many is timed.
pub const BRIEF_SAMPLING: u64 = 64;

/// The CPU mark while an untimed brief scope runs: a scope entered inside it then charges
/// nothing to the brief scope's observer (`now - UNTIMED` saturates to 0).
const UNTIMED: u64 = u64::MAX;

thread_local! {
    /// xorshift32 state for picking the brief scopes to time; any non-zero seed will do.
    static PICK: Cell<u32> = const { Cell::new(0x9E37_79B9) };
}

/// Whether to time this brief scope: true one time in [`BRIEF_SAMPLING`], at random (a fixed
/// stride could fall in step with a pattern of calls, such as enter and exit alternating).
fn pick() -> bool {
    PICK.with(|state| {
        let mut x = state.get();
        x ^= x << 13;
        x ^= x >> 17;
        x ^= x << 5;
        state.set(x);
        u64::from(x) % BRIEF_SAMPLING == 0
    })
}

/// What two back-to-back readings of the thread's CPU clock differ by: the part of the system
/// call that falls between the readings (0.5 µs in the lab's sandbox), which a timed brief scope
/// would otherwise count, 64-fold, as the observer's. Measured once: the median of 31 pairs.
fn clock_overhead() -> u64 {
    static OVERHEAD: OnceLock<u64> = OnceLock::new();
    *OVERHEAD.get_or_init(|| {
        let mut pairs = [0u64; 31];
        for pair in &mut pairs {
            let first = thread_cpu_nanos();
            *pair = thread_cpu_nanos().saturating_sub(first);
        }
        pairs.sort_unstable();
        pairs[pairs.len() / 2]
    })
}

/// An entered [`brief_scope`] (outside any other scope); leaving returns to the lesson and, if
/// it was timed, charges its observer.
struct Brief {
    observer: Observer,
    timed: bool,
}

impl Brief {
    fn enter(observer: Observer) -> Brief {
        alloc::set_observer(Some(observer.index()));
        let timed = pick();
        let mark = if timed { thread_cpu_nanos() } else { UNTIMED };
        CPU_MARK.with(|m| m.set(mark));
        Brief { observer, timed }
    }
}

impl Drop for Brief {
    fn drop(&mut self) {
        alloc::set_observer(None);
        if self.timed {
            let now = thread_cpu_nanos();
            let mark = CPU_MARK.with(Cell::get);
            let spent = now.saturating_sub(mark).saturating_sub(clock_overhead());
            CPU_NANOS[self.observer.index()].fetch_add(spent * BRIEF_SAMPLING, Relaxed);
        }
    }
}

/// Wraps `fut` so that every poll of it runs in `observer`'s scope.
pub fn instrument<F: Future>(observer: Observer, fut: F) -> Observed<F> {
    Observed { observer, fut }
}

/// A future whose polls run in an observer scope (see [`instrument`]).
#[derive(Debug)]
pub struct Observed<F> {
    observer: Observer,
    fut: F,
}

impl<F: Future> Future for Observed<F> {
    type Output = F::Output;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let observer = self.observer;
        let _entered = Entered::enter(observer);
        // SAFETY: `fut` is structurally pinned: it is never moved out of `Observed`, and
        // `Observed` has no `Drop` impl and is not `Unpin` unless `F` is.
        unsafe { self.map_unchecked_mut(|s| &mut s.fut) }.poll(cx)
    }
}

/// What an observer has cost so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct ObserverCost {
    /// Bytes of the observer's arena in live allocations.
    pub memory_bytes: u64,
    /// Resident bytes of the observer's arena.
    pub resident_bytes: u64,
    /// Allocation calls and bytes made in the observer's scopes.
    pub allocations: AllocCounts,
    /// CPU time of the threads while in the observer's scopes.
    pub cpu_seconds: f64,
}

/// The cost of each observer, in the order of [`Observer::ALL`]. Advances jemalloc's
/// statistics epoch (see [`memory::MemoryStats::read`]).
pub fn costs() -> [(Observer, ObserverCost); alloc::OBSERVERS] {
    let arenas = memory::observer_arenas();
    Observer::ALL.map(|observer| {
        let i = observer.index();
        (
            observer,
            ObserverCost {
                memory_bytes: arenas[i].allocated,
                resident_bytes: arenas[i].resident,
                allocations: alloc::observer_counts(i),
                cpu_seconds: CPU_NANOS[i].load(Relaxed) as f64 / 1e9,
            },
        )
    })
}

/// Nanoseconds of thread CPU time charged to each observer.
static CPU_NANOS: [AtomicU64; alloc::OBSERVERS] = [const { AtomicU64::new(0) }; alloc::OBSERVERS];

thread_local! {
    /// The thread's CPU clock when the current observer was entered.
    static CPU_MARK: Cell<u64> = const { Cell::new(0) };
}

/// An entered scope; leaving restores the observer that was current before.
struct Entered {
    previous: Option<usize>,
}

impl Entered {
    fn enter(observer: Observer) -> Entered {
        let previous = alloc::set_observer(Some(observer.index()));
        charge(previous);
        Entered { previous }
    }
}

impl Drop for Entered {
    fn drop(&mut self) {
        let current = alloc::set_observer(self.previous);
        charge(current);
    }
}

/// Charges the CPU time since the last switch to `outgoing` (if an observer was running) and
/// starts a new mark.
fn charge(outgoing: Option<usize>) {
    let now = thread_cpu_nanos();
    let mark = CPU_MARK.with(|m| m.replace(now));
    if let Some(i) = outgoing {
        CPU_NANOS[i].fetch_add(now.saturating_sub(mark), Relaxed);
    }
}

/// The calling thread's CPU time. A system call on Linux (the vDSO serves only the wall
/// clocks), 2.5 µs measured in the lab's sandbox: cheap next to the work a scope wraps, too dear
/// for every one of a `tracing` layer's callbacks (see [`brief_scope`]).
fn thread_cpu_nanos() -> u64 {
    let mut ts = libc::timespec {
        tv_sec: 0,
        tv_nsec: 0,
    };
    // SAFETY: clock_gettime writes the timespec it is given; CLOCK_THREAD_CPUTIME_ID always
    // exists on Linux and the BSDs. On failure the timespec stays zero and nothing is charged.
    unsafe { libc::clock_gettime(libc::CLOCK_THREAD_CPUTIME_ID, &mut ts) };
    ts.tv_sec as u64 * 1_000_000_000 + ts.tv_nsec as u64
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn allocations_in_a_scope_are_the_observers_not_the_threads() {
        let before_thread = alloc::thread_counts().unwrap();
        let before_observer = alloc::observer_counts(Observer::Metrics.index());
        let kept = scope(Observer::Metrics, || vec![7u8; 4096]);
        let after_thread = alloc::thread_counts().unwrap();
        let after_observer = alloc::observer_counts(Observer::Metrics.index());
        assert_eq!(after_thread.since(before_thread), AllocCounts::default());
        let made = after_observer.since(before_observer);
        assert!(made.allocations >= 1 && made.bytes >= 4096, "{made:?}");
        // Freed outside the scope: jemalloc finds the arena from the pointer.
        drop(kept);
    }

    #[test]
    fn scopes_nest_and_restore() {
        scope(Observer::Http, || {
            assert_eq!(alloc::observer(), Some(Observer::Http.index()));
            scope(Observer::Metrics, || {
                assert_eq!(alloc::observer(), Some(Observer::Metrics.index()));
            });
            assert_eq!(alloc::observer(), Some(Observer::Http.index()));
        });
        assert_eq!(alloc::observer(), None);
    }

    #[test]
    fn observer_memory_is_not_lesson_memory() {
        let before = memory::MemoryStats::read();
        let block = scope(Observer::CpuProfile, || vec![1u8; 32 << 20]);
        let during = memory::MemoryStats::read();
        let cost = costs()[Observer::CpuProfile.index()].1;
        assert!(cost.memory_bytes >= 32 << 20, "{cost:?}");
        // Other tests allocate concurrently; 8 MiB is far below the block.
        assert!(
            during.allocated < before.allocated + (8 << 20),
            "{before:?} -> {during:?}"
        );
        drop(block);
    }

    #[test]
    fn brief_scopes_allocate_as_the_observer_and_charge_a_sample_of_its_time() {
        let index = Observer::Console.index();
        let http = Observer::Http.index();
        let before = alloc::observer_counts(index);
        let cpu_before = CPU_NANOS[index].load(Relaxed);
        let http_before = CPU_NANOS[http].load(Relaxed);
        let mut kept = Vec::new();
        // Enough calls that some are timed: about 2,000 / 64.
        for _ in 0..2_000 {
            kept.push(brief_scope(Observer::Console, || {
                assert_eq!(alloc::observer(), Some(index));
                // Scopes nest either way, each restoring the one it was entered in.
                let kept = scope(Observer::Http, || {
                    let kept = brief_scope(Observer::Console, || vec![3u8; 64]);
                    assert_eq!(alloc::observer(), Some(http));
                    kept
                });
                assert_eq!(alloc::observer(), Some(index));
                kept
            }));
        }
        assert_eq!(alloc::observer(), None);
        let made = alloc::observer_counts(index).since(before);
        assert!(
            made.allocations >= 2_000 && made.bytes >= 2_000 * 64,
            "{made:?}"
        );
        assert!(CPU_NANOS[index].load(Relaxed) > cpu_before);
        // The regular scope inside charged its own short time, never one measured from the
        // mark of an untimed brief scope (other tests charge Http concurrently, ms at most).
        let http_charged = CPU_NANOS[http].load(Relaxed) - http_before;
        assert!(http_charged < 1_000_000_000, "{http_charged} ns");
        drop(kept);
    }

    #[test]
    fn instrumented_futures_allocate_as_the_observer() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let before = alloc::observer_counts(Observer::TaskProfile.index());
        let len = rt.block_on(instrument(Observer::TaskProfile, async {
            tokio::task::yield_now().await;
            vec![0u64; 1000].len()
        }));
        assert_eq!(len, 1000);
        let made = alloc::observer_counts(Observer::TaskProfile.index()).since(before);
        assert!(made.bytes >= 8000, "{made:?}");
    }
}
