//! The tokio runtime the workers run on.

use tokio::runtime::{Builder, Runtime};

use crate::{alloc, runtime_metrics};

/// Worker threads when `--runtime-threads` is not given.
pub const DEFAULT_THREADS: usize = 2;

/// Most worker threads `--runtime-threads` accepts.
pub const MAX_THREADS: usize = 256;

/// A multi-threaded runtime with `threads` worker threads, plus tokio's blocking pool (profiles
/// are made on observer threads of their own, see [`crate::pprof::background`]).
///
/// The lab once ran a single worker thread, because tokio's task dumps (then behind the task
/// profile) could leave a runtime with several threads hung at their barrier
/// (tokio-rs/tokio#8370). The task profile now reads the lab's own registry
/// ([`crate::tasks`]) and no longer stops the runtime, so the runtime has its threads back: two
/// by default, as many as a learner likes with `--runtime-threads`. With two, a task that
/// blocks its thread (lesson: blocking) stalls half the runtime rather than all of it, and
/// `/metrics` stays responsive while a profile is being made.
///
/// Threads give their allocation-counter slot back when they stop, so the blocking pool's
/// short-lived threads never run out of slots.
pub fn build(threads: usize) -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(threads.clamp(1, MAX_THREADS))
        .enable_all()
        // Poll times for `worker_runtime_poll_time_seconds` and the long-poll counter: two
        // clock reads per poll (see `lab bench` for what it costs).
        .enable_metrics_poll_time_histogram()
        .metrics_poll_time_histogram_configuration(runtime_metrics::poll_time_histogram())
        .on_thread_stop(alloc::release_thread_slot)
        .build()
}
