//! Observer work on a thread of its own, started on first use, running one job at a time in
//! its observer's scope.
//!
//! The task profile, and the encoding of CPU and heap profiles, used tokio's blocking pool. A
//! pool thread is started for a request when none is idle and exits after ten idle seconds;
//! what a thread allocates as it starts (tokio's and std's thread-locals, the tracing
//! registry's per-thread slab) happens before any observer scope, so it was the lesson's
//! memory, its jemalloc cache filled from the lesson's slabs, and the threads came and went
//! with the profiles, in the runtime's blocking-thread count. One long-lived thread per
//! observer, in the observer's scope from its first job and with its jemalloc cache off (its
//! scopes bypass the cache anyway), keeps all of it apart.
//!
//! It runs at the normal priority, on purpose. At nice 10 a storm of task profiles on 100,000
//! tasks made `/metrics` slower, not faster (p99 39 and 44 ms against 29 and 17 ms at nice 0,
//! alternating runs on the same loaded machine; slowest scrape 140-167 ms against 32-38 ms):
//! the profile locks the task registry's shards one at a time to copy them, and every new
//! connection, `/metrics` scrapes included, registers in the registry; a low-priority thread
//! preempted while holding a shard made the accept loop wait for it (priority inversion).

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::http::ApiError;
use crate::observer::{self, Observer};

type Job = Box<dyn FnOnce() + Send>;

/// A lazily started thread for one observer's work.
pub struct Background {
    name: &'static str,
    observer: Observer,
    jobs: OnceLock<Option<mpsc::Sender<Job>>>,
}

impl Background {
    pub const fn new(name: &'static str, observer: Observer) -> Background {
        Background {
            name,
            observer,
            jobs: OnceLock::new(),
        }
    }

    /// Runs `work` on the thread, in the observer's scope, and waits for its result without
    /// blocking the runtime. Falls back to tokio's blocking pool if the thread cannot be
    /// started. A panic in `work` is answered with a 500 and leaves the thread
    /// serving the next job.
    pub async fn run<T: Send + 'static>(
        &'static self,
        work: impl FnOnce() -> Result<T, ApiError> + Send + 'static,
    ) -> Result<T, ApiError> {
        let (tx, rx) = tokio::sync::oneshot::channel();
        let observer = self.observer;
        let job = move || {
            let result = std::panic::catch_unwind(AssertUnwindSafe(work)).unwrap_or_else(|_| {
                Err(ApiError::internal(
                    self.name,
                    "the work panicked; see the worker's log",
                ))
            });
            let _ = tx.send(result);
        };
        let job: Job = Box::new(job);
        let unsent = match self.sender() {
            Some(jobs) => jobs.send(job).err().map(|mpsc::SendError(job)| job),
            None => Some(job),
        };
        if let Some(job) = unsent {
            // No thread (it could not be started): the blocking pool.
            tokio::task::spawn_blocking(move || observer::scope(observer, job))
                .await
                .map_err(|e| ApiError::internal(self.name, e))?;
        }
        rx.await
            .map_err(|_| ApiError::internal(self.name, "the work was dropped unfinished"))?
    }

    fn sender(&'static self) -> Option<&'static mpsc::Sender<Job>> {
        self.jobs
            .get_or_init(|| {
                let (tx, rx) = mpsc::channel::<Job>();
                let observer = self.observer;
                std::thread::Builder::new()
                    .name(self.name.to_owned())
                    .spawn(move || {
                        // Its cache would hold only what the thread's start-up put there.
                        crate::alloc::drop_thread_cache();
                        // Everything the thread allocates is the observer's, from its first job on.
                        observer::scope(observer, || {
                            for job in rx {
                                job();
                            }
                        });
                    })
                    .map_err(|e| tracing::warn!("cannot start the {} thread: {e}", self.name))
                    .ok()
                    .map(|_| tx)
            })
            .as_ref()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    static TEST: Background = Background::new("background-test", Observer::TaskProfile);

    #[test]
    fn runs_work_in_the_observers_scope_and_survives_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let (name, observer) = rt
            .block_on(TEST.run(|| {
                let name = std::thread::current().name().map(str::to_owned);
                Ok((name, crate::alloc::observer()))
            }))
            .unwrap();
        assert_eq!(name.as_deref(), Some("background-test"));
        assert_eq!(observer, Some(Observer::TaskProfile as usize));
        let panicked = rt.block_on(TEST.run(|| -> Result<(), ApiError> { panic!("on purpose") }));
        assert_eq!(
            panicked.unwrap_err().status,
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(rt.block_on(TEST.run(|| Ok(7))).unwrap(), 7);
    }
}
