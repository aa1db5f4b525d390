//! The tokio runtime the workers run on.

use tokio::runtime::{Builder, Runtime};

use crate::alloc;

/// A multi-threaded runtime, one worker thread per core. Threads give their allocation-counter
/// slot back when they stop, so the blocking pool's short-lived threads never run out of slots.
pub fn build() -> std::io::Result<Runtime> {
    Builder::new_multi_thread()
        .enable_all()
        .on_thread_stop(alloc::release_thread_slot)
        .build()
}
