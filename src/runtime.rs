//! The tokio runtime the workers run on.

use tokio::runtime::{Builder, Runtime};

use crate::{alloc, runtime_metrics};

/// A multi-threaded runtime with one worker thread, plus tokio's blocking pool (profiles are
/// symbolized there).
///
/// One worker thread, because a task dump on a runtime with several would risk hanging it:
/// tokio 1.54 gathers the worker threads at a barrier whose timed-out waits are not undone
/// (tokio-rs/tokio#8370), so a thread that is slow to arrive once can leave another blocked
/// forever, and the process unable to exit. With one thread there is no one to wait for. The
/// workload needs a few percent of a core at the lab's settings, so nothing is lost.
///
/// Threads give their allocation-counter slot back when they stop, so the blocking pool's
/// short-lived threads never run out of slots.
pub fn build() -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        // Poll times for `worker_runtime_poll_time_seconds` and the long-poll counter: two
        // clock reads per poll (see `lab bench` for what it costs).
        .enable_metrics_poll_time_histogram()
        .metrics_poll_time_histogram_configuration(runtime_metrics::poll_time_histogram())
        .on_thread_stop(alloc::release_thread_slot)
        .build()
}
