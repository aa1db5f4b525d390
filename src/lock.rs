//! The lab's instrumented lock: a `std::sync::Mutex` that measures how long callers wait for it.
//!
//! Lesson 5 (lock contention) needs to be seen, and a plain `std::sync::Mutex` says nothing about
//! who waited or for how long. This one does, at almost no cost when nobody waits:
//!
//! - `lock()` first tries to take the lock without waiting (`try_lock`). Only when that fails,
//!   the acquisition is *contended*: it is timed from then until the lock is acquired.
//! - Every contended acquisition adds its wait to `worker_lock_wait_seconds{lock}` (a histogram:
//!   `_count` is contentions, `_sum` the total time spent waiting) and to the mutex profile
//!   (`/debug/pprof/mutex`, [`crate::pprof::mutex`]), filed under the call site of `lock()`.
//! - Every acquisition counts in `worker_lock_acquisitions_total{lock}`.
//!
//! The wait is recorded when the guard is dropped, after the lock is released, so recording it
//! never lengthens the critical section it measures.
//!
//! Waiting blocks the thread, as `std::sync::Mutex` does: that is the realistic first version of
//! a shared tally in async code, and part of what lesson 5 shows.

use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::sync::{MutexGuard, TryLockError};
use std::time::{Duration, Instant};

use prometheus::{Histogram, IntCounter};

use crate::pprof::mutex;

/// The metric handles of one named lock (see `metrics::LessonMetrics::lock_stats`).
#[derive(Clone)]
pub struct LockStats {
    pub wait: Histogram,
    pub acquisitions: IntCounter,
}

/// A mutual-exclusion lock that reports contention.
pub struct Mutex<T> {
    inner: std::sync::Mutex<T>,
    stats: LockStats,
}

impl<T> Mutex<T> {
    pub fn new(value: T, stats: LockStats) -> Mutex<T> {
        Mutex {
            inner: std::sync::Mutex::new(value),
            stats,
        }
    }

    /// Acquires the lock, blocking the thread while another holder has it. A panic while
    /// holding it does not poison it for others: the lab's locks guard plain tallies.
    #[track_caller]
    pub fn lock(&self) -> Guard<'_, T> {
        self.stats.acquisitions.inc();
        match self.inner.try_lock() {
            Ok(guard) => return self.guard(guard, None),
            Err(TryLockError::Poisoned(poisoned)) => {
                return self.guard(poisoned.into_inner(), None);
            }
            Err(TryLockError::WouldBlock) => {}
        }
        let site = Location::caller();
        // The first contention at a call site captures its stack, once; later ones only count.
        mutex::note_site(site);
        let started = Instant::now();
        let guard = self.inner.lock().unwrap_or_else(|e| e.into_inner());
        self.guard(guard, Some((site, started.elapsed())))
    }

    /// The value, for the one who owns the lock outright (no one else can be waiting).
    pub fn into_inner(self) -> T {
        self.inner.into_inner().unwrap_or_else(|e| e.into_inner())
    }

    fn guard<'a>(
        &'a self,
        guard: MutexGuard<'a, T>,
        contention: Option<(&'static Location<'static>, Duration)>,
    ) -> Guard<'a, T> {
        Guard {
            guard: Some(guard),
            contention,
            stats: &self.stats,
        }
    }
}

/// Access to the value while the lock is held; releasing it records the wait, if there was one.
pub struct Guard<'a, T> {
    guard: Option<MutexGuard<'a, T>>,
    contention: Option<(&'static Location<'static>, Duration)>,
    stats: &'a LockStats,
}

impl<T> Deref for Guard<'_, T> {
    type Target = T;

    fn deref(&self) -> &T {
        self.guard.as_ref().expect("held until dropped")
    }
}

impl<T> DerefMut for Guard<'_, T> {
    fn deref_mut(&mut self) -> &mut T {
        self.guard.as_mut().expect("held until dropped")
    }
}

impl<T> Drop for Guard<'_, T> {
    fn drop(&mut self) {
        // Release first: what follows is the instrument's work, not the critical section's.
        drop(self.guard.take());
        if let Some((site, waited)) = self.contention {
            self.stats.wait.observe(waited.as_secs_f64());
            mutex::record(site, waited);
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use prometheus::HistogramOpts;

    use super::*;

    fn stats() -> LockStats {
        LockStats {
            wait: Histogram::with_opts(HistogramOpts::new("w", "w")).unwrap(),
            acquisitions: IntCounter::new("a", "a").unwrap(),
        }
    }

    #[test]
    fn uncontended_locks_count_but_record_no_wait() {
        let lock = Mutex::new(0u32, stats());
        for _ in 0..10 {
            *lock.lock() += 1;
        }
        assert_eq!(*lock.lock(), 10);
        assert_eq!(lock.stats.acquisitions.get(), 11);
        assert_eq!(lock.stats.wait.get_sample_count(), 0);
    }

    #[test]
    fn a_waiter_records_its_wait() {
        let lock = Arc::new(Mutex::new(0u32, stats()));
        let held = lock.lock();
        let waiter = {
            let lock = Arc::clone(&lock);
            std::thread::spawn(move || *lock.lock() += 1)
        };
        std::thread::sleep(Duration::from_millis(50));
        drop(held);
        waiter.join().unwrap();
        assert_eq!(lock.stats.wait.get_sample_count(), 1);
        assert!(lock.stats.wait.get_sample_sum() > 0.01);
    }
}
