//! The lab's instrumented lock: a `tokio::sync::Mutex` that measures how long callers wait for
//! it.
//!
//! Lesson 5 (lock contention) needs to be seen, and a plain mutex says nothing about who waited
//! or for how long. This one does, at almost no cost when nobody waits:
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
//! Why tokio's mutex: lesson 5's bad worker holds the tally's lock across the whole task, and
//! the task awaits (its seal, lesson 4). `std::sync::MutexGuard` cannot be held across an
//! `.await` (the future would not be `Send`, and a thread blocked on it could be the one the
//! holder needs to resume on), so async code that wants a lock for the whole of a task reaches
//! for `tokio::sync::Mutex`: a waiter yields its runtime thread instead of blocking it. The
//! threads stay free; the *work* is what is serialized, which is what lesson 5 shows.

use std::future::Future;
use std::ops::{Deref, DerefMut};
use std::panic::Location;
use std::time::{Duration, Instant};

use tokio::sync::MutexGuard;

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
    inner: tokio::sync::Mutex<T>,
    stats: LockStats,
}

impl<T: Send> Mutex<T> {
    pub fn new(value: T, stats: LockStats) -> Mutex<T> {
        Mutex {
            inner: tokio::sync::Mutex::new(value),
            stats,
        }
    }

    /// Acquires the lock; while another holder has it, the calling task waits without holding
    /// its thread. Waiters are served in the order they came (tokio's mutex is fair). Nothing
    /// is poisoned: a panicking holder just releases it.
    ///
    /// Not an `async fn`, so that `#[track_caller]` names the line that calls `lock()`.
    #[track_caller]
    pub fn lock(&self) -> impl Future<Output = Guard<'_, T>> + Send {
        let site = Location::caller();
        async move {
            self.stats.acquisitions.inc();
            if let Ok(guard) = self.inner.try_lock() {
                return self.guard(guard, None);
            }
            // The first contention at a call site captures its stack, once (here, inside the
            // caller's poll, so the stack is the waiting task's); later ones only count.
            mutex::note_site(site);
            let started = Instant::now();
            let guard = self.inner.lock().await;
            self.guard(guard, Some((site, started.elapsed())))
        }
    }

    /// The value, for the one who owns the lock outright (no one else can be waiting).
    pub fn into_inner(self) -> T {
        self.inner.into_inner()
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

    #[tokio::test]
    async fn uncontended_locks_count_but_record_no_wait() {
        let lock = Mutex::new(0u32, stats());
        for _ in 0..10 {
            *lock.lock().await += 1;
        }
        assert_eq!(*lock.lock().await, 10);
        assert_eq!(lock.stats.acquisitions.get(), 11);
        assert_eq!(lock.stats.wait.get_sample_count(), 0);
    }

    #[tokio::test]
    async fn a_waiter_records_its_wait_without_holding_a_thread() {
        // One runtime thread: if the waiter blocked it, the holder could never release.
        let lock = Arc::new(Mutex::new(0u32, stats()));
        let held = lock.lock().await;
        let waiter = {
            let lock = Arc::clone(&lock);
            tokio::spawn(async move { *lock.lock().await += 1 })
        };
        tokio::time::sleep(Duration::from_millis(50)).await;
        drop(held);
        waiter.await.unwrap();
        assert_eq!(*lock.lock().await, 1);
        assert_eq!(lock.stats.wait.get_sample_count(), 1);
        assert!(lock.stats.wait.get_sample_sum() > 0.01);
    }
}
