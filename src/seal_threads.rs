//! Lesson 4's fix without an allocation: threads of the lab's own that seal results off the
//! runtime, fed through a queue allocated once.
//!
//! `tokio::task::spawn_blocking` is the right first fix for a long CPU-bound step in an async
//! task: one line, and the runtime threads are free to poll everything else again
//! ([`on_blocking_pool`] is that fix, kept here). But it allocates a task for every call, the
//! task that carries the closure and its result to the `JoinHandle`: with one task in ten
//! sealed, the optimized worker was back to a tenth of an allocation per task, what lesson 3
//! had taken away. Lesson 3's point applies to lesson 4: on a hot path, make what you need
//! once and reuse it. So:
//!
//! - the seal threads (named `seal`, one per CPU: more would not seal faster) are started once,
//!   at the first seal, and wait for work for the rest of the process;
//! - seals travel to them through a bounded crossbeam channel, an array allocated when it is
//!   made: sending into it and receiving from it allocate nothing;
//! - each worker task has one [`Slot`], made with the worker, where its seals come back and
//!   which wakes it (a tokio `Notify`): a seal costs a reference count, not an allocation.
//!
//! Handing a seal over never blocks the runtime thread (`try_send`). When the queue is full,
//! which takes more than [`QUEUE`] worker tasks sealing at once, or when no seal thread could be
//! started, the seal goes to the blocking pool instead: it allocates, and it is still off the
//! runtime. A seal that panics panics in the worker task that waits for it, as with
//! `spawn_blocking`; the seal thread lives on.
//!
//! What it shows: the CPU profile has `task::seal` under `seal_threads::serve` on `seal`
//! threads, never under `pool::work`; `worker_allocations_total` of the optimized worker stays
//! flat however many tasks are sealed; tokio's blocking-pool metrics no longer move with the
//! seals.

use std::any::Any;
use std::num::NonZero;
use std::panic;
use std::sync::atomic::{AtomicBool, Ordering::Relaxed};
use std::sync::{Arc, Mutex, MutexGuard, OnceLock};

use crossbeam_channel::{Receiver, Sender, TrySendError};
use tokio::sync::Notify;

use crate::task;

/// Seals that can wait for a seal thread at once. A worker task waits for its seal, so at most
/// one per worker task is ever queued: 256 covers far more worker tasks than the lab runs
/// (`--workers` defaults to 10) in a few KiB allocated once. Beyond it, seals go to the blocking
/// pool (see the module's doc).
pub const QUEUE: usize = 256;

/// Where one worker task's seals come back: made once with the worker and reused for every
/// seal. `&mut` in [`off_runtime`] keeps it to one seal at a time.
#[derive(Default)]
pub struct Slot {
    shared: Arc<Shared>,
}

/// The part of a [`Slot`] a seal thread holds while it seals.
#[derive(Default)]
struct Shared {
    state: Mutex<State>,
    /// Wakes the worker task once the outcome is in. `notify_one` keeps a permit when nobody
    /// waits yet, so a seal that ends before its worker task waits is not missed.
    ready: Notify,
}

#[derive(Default)]
struct State {
    /// The seal the worker task waits for. An outcome for an earlier one (whose waiting future
    /// was dropped) is not this seal's and is dropped.
    ticket: u64,
    outcome: Option<Outcome>,
}

/// How a seal handed to the seal threads ended.
enum Outcome {
    Sealed(u64),
    /// The seal panicked: the panic continues in the worker task, as `spawn_blocking`'s
    /// `JoinHandle` would have it.
    Panicked(Box<dyn Any + Send>),
    /// No seal thread ran it (one died holding it): the worker task has it sealed elsewhere.
    Dropped,
}

/// One seal on its way to a seal thread. Whatever becomes of it, its slot hears: dropping it
/// unrun reports [`Outcome::Dropped`], so no worker task waits for ever.
struct Request {
    /// `None` once the outcome is delivered.
    slot: Option<Arc<Shared>>,
    ticket: u64,
    digest: u64,
    data_size: usize,
}

impl Request {
    /// Runs `seal` on this request and delivers how it ended. A panic is caught and handed
    /// over: the panic hook has already printed it with this thread's name.
    fn run(self, seal: impl FnOnce(u64, usize) -> u64 + panic::UnwindSafe) {
        let (digest, data_size) = (self.digest, self.data_size);
        let outcome = match panic::catch_unwind(move || seal(digest, data_size)) {
            Ok(sealed) => Outcome::Sealed(sealed),
            Err(payload) => Outcome::Panicked(payload),
        };
        self.deliver(outcome);
    }

    fn deliver(mut self, outcome: Outcome) {
        if let Some(slot) = self.slot.take() {
            slot.finish(self.ticket, outcome);
        }
    }
}

impl Drop for Request {
    fn drop(&mut self) {
        if let Some(slot) = self.slot.take() {
            slot.finish(self.ticket, Outcome::Dropped);
        }
    }
}

impl Shared {
    fn state(&self) -> MutexGuard<'_, State> {
        // Nothing panics while holding it; a poisoned lock still holds a consistent state.
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Starts a new seal: its ticket. An outcome still here is stale and goes.
    fn begin(&self) -> u64 {
        let mut state = self.state();
        state.ticket = state.ticket.wrapping_add(1);
        let stale = state.outcome.take();
        let ticket = state.ticket;
        drop(state);
        // Dropped outside the lock: a stale panic payload is arbitrary code to drop.
        drop(stale);
        ticket
    }

    /// A seal thread's outcome for seal `ticket`, kept if it is the one awaited.
    fn finish(&self, ticket: u64, outcome: Outcome) {
        let mut state = self.state();
        let stale = if state.ticket == ticket {
            state.outcome.replace(outcome)
        } else {
            Some(outcome)
        };
        drop(state);
        drop(stale);
        self.ready.notify_one();
    }

    fn take(&self) -> Option<Outcome> {
        self.state().outcome.take()
    }

    /// Waits for the outcome of the seal begun last.
    async fn outcome(&self) -> Outcome {
        loop {
            // Made before looking, so a notification in between is not lost (it would leave a
            // permit anyway). Creating and awaiting it allocates nothing: its place in the
            // queue of waiters is inside this future.
            let ready = self.ready.notified();
            if let Some(outcome) = self.take() {
                return outcome;
            }
            ready.await;
        }
    }
}

/// Lesson 4's fix: seals `digest` on a seal thread and waits for it without holding a runtime
/// thread, and without an allocation.
pub async fn off_runtime(slot: &mut Slot, digest: u64, data_size: usize) -> u64 {
    let ticket = slot.shared.begin();
    let request = Request {
        slot: Some(Arc::clone(&slot.shared)),
        ticket,
        digest,
        data_size,
    };
    match queue().try_send(request) {
        Ok(()) => {}
        // The refused request is dropped here: the `Dropped` it leaves in the slot is cleared
        // by the next seal's `begin`.
        Err(TrySendError::Full(_)) => {
            if !QUEUE_FULL_SAID.swap(true, Relaxed) {
                tracing::warn!(
                    "more than {QUEUE} seals waiting for a seal thread: the rest go to tokio's \
                     blocking pool, which allocates a task for each"
                );
            }
            return on_blocking_pool(digest, data_size).await;
        }
        // No seal thread is running; `start` said why.
        Err(TrySendError::Disconnected(_)) => return on_blocking_pool(digest, data_size).await,
    }
    match slot.shared.outcome().await {
        Outcome::Sealed(sealed) => sealed,
        Outcome::Panicked(payload) => panic::resume_unwind(payload),
        Outcome::Dropped => on_blocking_pool(digest, data_size).await,
    }
}

/// The first fix for lesson 4, and this module's fallback: seals on tokio's blocking pool.
/// Correct and off the runtime, but `spawn_blocking` allocates a task per call.
pub async fn on_blocking_pool(digest: u64, data_size: usize) -> u64 {
    match tokio::task::spawn_blocking(move || task::seal(digest, data_size)).await {
        Ok(sealed) => sealed,
        Err(err) if err.is_panic() => panic::resume_unwind(err.into_panic()),
        // The runtime is shutting down and cancelled it before it started: finish it here.
        Err(_) => task::seal(digest, data_size),
    }
}

/// Said once per process: the queue was full and seals went to the blocking pool.
static QUEUE_FULL_SAID: AtomicBool = AtomicBool::new(false);

/// The seal threads' queue, started at the first seal.
fn queue() -> &'static Sender<Request> {
    static QUEUE_TX: OnceLock<Sender<Request>> = OnceLock::new();
    QUEUE_TX.get_or_init(start)
}

/// Starts one seal thread per CPU. Only the threads hold the receiving end: if none could
/// start, the channel is disconnected at once and every seal goes to the blocking pool.
fn start() -> Sender<Request> {
    let (tx, rx) = crossbeam_channel::bounded(QUEUE);
    let threads = std::thread::available_parallelism().map_or(1, NonZero::get);
    let mut started = 0;
    for _ in 0..threads {
        let rx = rx.clone();
        match std::thread::Builder::new()
            .name("seal".to_owned())
            .spawn(move || serve(rx))
        {
            Ok(_) => started += 1,
            Err(err) => tracing::warn!("cannot start a seal thread: {err}"),
        }
    }
    if started == 0 {
        tracing::warn!("no seal thread: seals go to tokio's blocking pool");
    }
    tx
}

/// A seal thread: seals what comes, for as long as the process lives (the queue's sender is
/// never dropped).
fn serve(requests: Receiver<Request>) {
    for request in requests.iter() {
        // A closure rather than `task::seal` itself: the CPU profile then names the caller
        // `seal_threads::serve`, not `FnOnce::call_once`.
        #[allow(clippy::redundant_closure)]
        request.run(|digest, data_size| task::seal(digest, data_size));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn seals_like_the_seal_itself_on_a_seal_thread() {
        let mut slot = Slot::default();
        for digest in [0, 1, u64::MAX, 0x1234_5678] {
            assert_eq!(
                off_runtime(&mut slot, digest, 50).await,
                task::seal(digest, 50)
            );
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn many_worker_tasks_at_once_each_get_their_own_seal() {
        // More than the queue holds: the overflow goes to the blocking pool, still correct.
        let mut joins = tokio::task::JoinSet::new();
        for digest in 0..(QUEUE as u64 + 40) {
            joins.spawn(async move {
                let mut slot = Slot::default();
                let mut sealed = Vec::new();
                for round in 0..3 {
                    sealed.push((
                        off_runtime(&mut slot, digest + round, 20).await,
                        task::seal(digest + round, 20),
                    ));
                }
                sealed
            });
        }
        while let Some(joined) = joins.join_next().await {
            for (got, expected) in joined.unwrap() {
                assert_eq!(got, expected);
            }
        }
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_dropped_wait_does_not_confuse_the_next_seal() {
        let mut slot = Slot::default();
        // Start a seal and give up on it before it can finish...
        {
            let waiting = off_runtime(&mut slot, 7, 20_000);
            let _ = tokio::time::timeout(std::time::Duration::from_micros(1), waiting).await;
        }
        // ...the next one on the same slot gets its own outcome, not the stale one.
        assert_eq!(off_runtime(&mut slot, 8, 20).await, task::seal(8, 20));
    }

    #[test]
    fn a_request_dropped_unrun_says_so() {
        let shared = Arc::new(Shared::default());
        let ticket = shared.begin();
        drop(Request {
            slot: Some(Arc::clone(&shared)),
            ticket,
            digest: 1,
            data_size: 1,
        });
        assert!(matches!(shared.take(), Some(Outcome::Dropped)));
        // An outcome for an earlier seal is not kept.
        let old = shared.begin();
        let _new = shared.begin();
        shared.finish(old, Outcome::Sealed(3));
        assert!(shared.take().is_none());
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_panic_in_a_seal_reaches_the_waiting_worker_task() {
        let slot = Slot::default();
        let ticket = slot.shared.begin();
        let request = Request {
            slot: Some(Arc::clone(&slot.shared)),
            ticket,
            digest: 1,
            data_size: 1,
        };
        let waiter = tokio::spawn(async move {
            match slot.shared.outcome().await {
                Outcome::Panicked(payload) => panic::resume_unwind(payload),
                _ => 0,
            }
        });
        std::thread::spawn(move || request.run(|_, _| panic!("the seal failed")))
            .join()
            .unwrap();
        let err = waiter.await.unwrap_err();
        let payload = err.into_panic();
        assert_eq!(
            payload.downcast_ref::<&str>(),
            Some(&"the seal failed"),
            "the panic was lost"
        );
    }
}
