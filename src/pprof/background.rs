//! Observer work that must yield the CPU to the workload and to `/metrics`: a thread of its
//! own, started on first use, running one job at a time in its observer's scope at a lower
//! scheduling priority (nice [`NICE`]).
//!
//! A task profile of 100,000 tasks is tens of milliseconds of CPU. A storm of them on a 2-core
//! machine competed with the runtime's threads on equal terms, and `/metrics` answered in 68 ms
//! at p99 while they ran. At nice 10 the kernel gives the profile about a tenth of a core that a
//! runtime thread also wants, and all of an idle one: the profile is as fast as before on an
//! idle machine, and the scrape comes first on a busy one.
//!
//! tokio's blocking pool is not used for this: its threads also run the workload's
//! `spawn_blocking` calls, and an unprivileged process may raise a thread's nice value but never
//! lower it again, so a niced pool thread would slow the lesson afterwards.

use std::panic::AssertUnwindSafe;
use std::sync::OnceLock;
use std::sync::mpsc;

use crate::http::ApiError;
use crate::observer::{self, Observer};

/// The nice value of the thread: 0 is the default, 19 the lowest priority.
pub const NICE: i32 = 10;

type Job = Box<dyn FnOnce() + Send>;

/// A lazily started low-priority thread for one observer's work.
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
    /// blocking the runtime. Falls back to tokio's blocking pool (at normal priority) if the
    /// thread cannot be started. A panic in `work` is answered with a 500 and leaves the thread
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
            // No thread (it could not be started): the blocking pool, at normal priority.
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
                        lower_priority();
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

/// Sets the calling thread's nice value to [`NICE`]. Linux schedules threads one by one, so this
/// leaves the rest of the process alone; elsewhere `setpriority` would change the whole
/// process, so nothing is done.
fn lower_priority() {
    #[cfg(target_os = "linux")]
    {
        // SAFETY: gettid has no preconditions; setpriority only reads its arguments. A failure
        // (a seccomp filter, say) leaves the thread at normal priority, which is still correct.
        let tid = unsafe { libc::gettid() };
        let result = unsafe { libc::setpriority(libc::PRIO_PROCESS, tid as libc::id_t, NICE) };
        if result != 0 {
            tracing::debug!(
                "cannot lower the priority of the observer thread: {}",
                std::io::Error::last_os_error()
            );
        }
    }
}

#[cfg(all(test, target_os = "linux"))]
mod tests {
    use super::*;

    static TEST: Background = Background::new("background-test", Observer::TaskProfile);

    #[test]
    fn runs_work_at_lower_priority_and_survives_a_panic() {
        let rt = tokio::runtime::Builder::new_current_thread()
            .build()
            .unwrap();
        let nice = rt
            .block_on(TEST.run(|| {
                // SAFETY: reads the calling thread's nice value.
                Ok(unsafe { libc::getpriority(libc::PRIO_PROCESS, libc::gettid() as libc::id_t) })
            }))
            .unwrap();
        assert_eq!(nice, NICE);
        let panicked = rt.block_on(TEST.run(|| -> Result<(), ApiError> { panic!("on purpose") }));
        assert_eq!(
            panicked.unwrap_err().status,
            axum::http::StatusCode::INTERNAL_SERVER_ERROR
        );
        assert_eq!(rt.block_on(TEST.run(|| Ok(7))).unwrap(), 7);
    }
}
