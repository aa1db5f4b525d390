//! The server's connection limit, counted by what a connection costs the worker: a request in
//! flight, not a socket.
//!
//! Every connection holds one of [`MAX_CONNECTIONS`](super::MAX_CONNECTIONS) slots, and each
//! slot says what its connection is doing:
//!
//! - **new**: accepted, not polled yet (microseconds): never closed to make room, or a burst of
//!   connections could close one another before any sends its request;
//! - **idle**: waiting for a request and none of it received (a keep-alive connection between
//!   requests, or a client that connected and said nothing);
//! - **head**: part of a request head received, the rest not yet (hyper parses a head as soon
//!   as it is whole, so a connection stays here only while its client is slow to send it);
//! - **busy**: a request in flight, from the moment hyper hands it to the router until its
//!   response body has been written; **responding** once the router has produced the response
//!   and hyper is writing it (before that, nothing of the answer has been sent).
//!
//! When every slot is taken and a connection arrives, [`Connections::admit`] picks a connection
//! to close in its place, as nginx and Go's servers reuse idle keep-alive connections under
//! pressure: the one idle the longest, or, when none is idle, the one that has waited the
//! longest for the rest of a head. The new connection waits for that slot (an idle connection closes at
//! once). Only when every connection is new or busy is the new one refused with a 503.
//!
//! So the limit still bounds sockets and tasks, but idle or half-sent connections cannot keep
//! Prometheus' scrape out: they are the cheapest thing to close, and nothing is lost by closing
//! them (an idle client reconnects, as HTTP clients do when a server closes an idle connection).
//! A connection with a request in flight is never closed to make room: that would throw away
//! work already under way (a 30 s profile) to start other work.
//!
//! Admission runs in the accept loop, so it allocates nothing: the slots are an array of
//! atomics made once, scanned in place.

use std::pin::Pin;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU8, AtomicU64, Ordering};
use std::task::{Context, Poll};
use std::time::{Duration, Instant};

use hyper::body::{Body, Frame, SizeHint};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::sync::{Notify, Semaphore};

/// What a slot's connection is doing (see the module's comment).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
pub enum Phase {
    Free = 0,
    New = 1,
    Idle = 2,
    Head = 3,
    Busy = 4,
    Responding = 5,
}

impl Phase {
    fn from_u8(value: u8) -> Phase {
        match value {
            1 => Phase::New,
            2 => Phase::Idle,
            3 => Phase::Head,
            4 => Phase::Busy,
            5 => Phase::Responding,
            _ => Phase::Free,
        }
    }
}

struct Slot {
    /// A [`Phase`]; written only by the connection's own task (and by [`Connections::admit`]
    /// while the slot is free), read by the accept loop.
    phase: AtomicU8,
    /// In nanoseconds since [`Connections::epoch`]: when the connection began waiting for its
    /// next request (accepted, or its last response written), for the new, idle and head
    /// phases; when its request arrived, for busy. The oldest is closed first.
    since: AtomicU64,
    /// Set by the accept loop when it picks this connection to close; cleared on admission.
    evict: AtomicBool,
    /// Wakes the connection's task when `evict` is set.
    close: Notify,
}

/// The slots of one server.
pub struct Connections {
    slots: Box<[Slot]>,
    /// One permit per free slot: the new connections waiting for an evicted connection's slot
    /// queue here, first come first served, and shutdown waits here for every slot to be free.
    free: Semaphore,
    epoch: Instant,
}

/// What [`Connections::admit`] decided for a new connection.
pub enum Admission {
    /// A free slot: serve it.
    Admitted(Lease),
    /// No free slot, but a connection was told to close: wait for its slot with
    /// [`Connections::after_eviction`].
    Evicting,
    /// Every connection has a request in flight (or has just been accepted): refuse.
    Full,
}

impl Connections {
    pub fn new(max: usize) -> Arc<Connections> {
        let slots = (0..max)
            .map(|_| Slot {
                phase: AtomicU8::new(Phase::Free as u8),
                since: AtomicU64::new(0),
                evict: AtomicBool::new(false),
                close: Notify::new(),
            })
            .collect();
        Arc::new(Connections {
            slots,
            free: Semaphore::new(max),
            epoch: Instant::now(),
        })
    }

    fn now(&self) -> u64 {
        self.epoch.elapsed().as_nanos() as u64
    }

    /// Admits a new connection: a free slot if there is one, else closes the connection idle
    /// the longest (or, with none idle, the one that has waited the longest for the rest of a
    /// head) to make room. Allocates nothing.
    pub fn admit(self: &Arc<Connections>) -> Admission {
        if let Ok(permit) = self.free.try_acquire() {
            permit.forget();
            return match self.take_free_slot() {
                Some(lease) => Admission::Admitted(lease),
                None => Admission::Full,
            };
        }
        match self.victim() {
            Some(index) => {
                let slot = &self.slots[index];
                slot.evict.store(true, Ordering::Release);
                slot.close.notify_one();
                Admission::Evicting
            }
            None => Admission::Full,
        }
    }

    /// Waits up to `wait` for a slot after [`Admission::Evicting`]: an idle connection closes
    /// at once; one that received the rest of its request just before it was picked finishes
    /// that request first, and may take longer than `wait`.
    pub async fn after_eviction(self: &Arc<Connections>, wait: Duration) -> Option<Lease> {
        let permit = tokio::time::timeout(wait, self.free.acquire())
            .await
            .ok()?
            .ok()?;
        permit.forget();
        self.take_free_slot()
    }

    /// Waits up to `grace` for every connection to close; whether they all did.
    pub async fn all_closed(&self, grace: Duration) -> bool {
        let all = self.slots.len() as u32;
        tokio::time::timeout(grace, self.free.acquire_many(all))
            .await
            .is_ok()
    }

    /// A free slot, for a caller holding a permit (so one is free).
    fn take_free_slot(self: &Arc<Connections>) -> Option<Lease> {
        let now = self.now();
        let index = self.slots.iter().position(|slot| {
            slot.phase
                .compare_exchange(
                    Phase::Free as u8,
                    Phase::New as u8,
                    Ordering::AcqRel,
                    Ordering::Relaxed,
                )
                .is_ok()
        });
        let Some(index) = index else {
            // Cannot happen (a permit is a free slot); give the permit back rather than leak it.
            self.free.add_permits(1);
            return None;
        };
        let slot = &self.slots[index];
        slot.since.store(now, Ordering::Relaxed);
        slot.evict.store(false, Ordering::Release);
        Some(Lease {
            slot: SlotRef {
                connections: Arc::clone(self),
                index,
            },
        })
    }

    /// The connection to close to make room: idle the longest, else mid-head the longest (both
    /// counted from when the connection began waiting for its request).
    fn victim(&self) -> Option<usize> {
        let mut oldest_idle: Option<(u64, usize)> = None;
        let mut oldest_head: Option<(u64, usize)> = None;
        for (index, slot) in self.slots.iter().enumerate() {
            if slot.evict.load(Ordering::Acquire) {
                continue; // already closing
            }
            let oldest = match Phase::from_u8(slot.phase.load(Ordering::Acquire)) {
                Phase::Idle => &mut oldest_idle,
                Phase::Head => &mut oldest_head,
                Phase::Free | Phase::New | Phase::Busy | Phase::Responding => continue,
            };
            let since = slot.since.load(Ordering::Relaxed);
            if oldest.is_none_or(|(oldest_since, _)| since < oldest_since) {
                *oldest = Some((since, index));
            }
        }
        oldest_idle.or(oldest_head).map(|(_, index)| index)
    }
}

/// A connection's slot, as the pieces of its connection see it.
#[derive(Clone)]
pub struct SlotRef {
    connections: Arc<Connections>,
    index: usize,
}

impl SlotRef {
    fn slot(&self) -> &Slot {
        &self.connections.slots[self.index]
    }

    pub fn phase(&self) -> Phase {
        Phase::from_u8(self.slot().phase.load(Ordering::Acquire))
    }

    fn enter(&self, phase: Phase) {
        let slot = self.slot();
        slot.since.store(self.connections.now(), Ordering::Relaxed);
        slot.phase.store(phase as u8, Ordering::Release);
    }

    /// How long the connection has been waiting for its request (in the new, idle and head
    /// phases), or handling it (busy, responding).
    pub fn waiting_for(&self) -> Duration {
        let since = self.slot().since.load(Ordering::Relaxed);
        Duration::from_nanos(self.connections.now().saturating_sub(since))
    }

    /// Resolves when the accept loop picks this connection to close.
    pub async fn evicted(&self) {
        loop {
            // Registered before the check, so a notification between the two is not lost; a
            // permit left by the slot's previous connection is told apart by `evict`.
            let notified = self.slot().close.notified();
            if self.slot().evict.load(Ordering::Acquire) {
                return;
            }
            notified.await;
        }
    }

    /// Marks a request in flight until the returned guard is dropped.
    fn begin_request(&self) -> RequestInFlight {
        self.enter(Phase::Busy);
        RequestInFlight { slot: self.clone() }
    }

    /// Called as the connection's bytes are read.
    fn on_read(&self, received: bool) {
        // `since` is left as it is: a head's age counts from when the connection began waiting
        // for it (accepted, or its last response written), not from when the server happened
        // to poll it, which on a busy runtime says more about the scheduler than the client.
        let phase = match (self.phase(), received) {
            (Phase::New | Phase::Idle, true) => Phase::Head,
            (Phase::New, false) => Phase::Idle,
            _ => return,
        };
        self.slot().phase.store(phase as u8, Ordering::Release);
    }
}

/// A connection's hold on its slot, freed when dropped.
pub struct Lease {
    slot: SlotRef,
}

impl Lease {
    pub fn slot(&self) -> &SlotRef {
        &self.slot
    }
}

impl Drop for Lease {
    fn drop(&mut self) {
        let slot = self.slot.slot();
        slot.phase.store(Phase::Free as u8, Ordering::Release);
        // After the slot is free: whoever gets the permit finds it.
        self.slot.connections.free.add_permits(1);
    }
}

/// A request in flight on a connection; its connection is idle again when this is dropped
/// (hyper drops the response body once it has written it, or when the connection ends).
pub struct RequestInFlight {
    slot: SlotRef,
}

impl RequestInFlight {
    fn responding(&self) {
        if self.slot.phase() == Phase::Busy {
            self.slot.enter(Phase::Responding);
        }
    }
}

impl Drop for RequestInFlight {
    fn drop(&mut self) {
        if matches!(self.slot.phase(), Phase::Busy | Phase::Responding) {
            self.slot.enter(Phase::Idle);
        }
    }
}

/// A connection's socket, reporting to its slot when bytes of a request arrive.
pub struct TrackedIo<S> {
    inner: S,
    slot: SlotRef,
}

impl<S> TrackedIo<S> {
    pub fn new(inner: S, slot: SlotRef) -> TrackedIo<S> {
        TrackedIo { inner, slot }
    }
}

impl<S: AsyncRead + Unpin> AsyncRead for TrackedIo<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<std::io::Result<()>> {
        let before = buf.filled().len();
        let result = Pin::new(&mut self.inner).poll_read(cx, buf);
        match &result {
            Poll::Ready(Ok(())) => self.slot.on_read(buf.filled().len() > before),
            Poll::Pending => self.slot.on_read(false),
            Poll::Ready(Err(_)) => {}
        }
        result
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for TrackedIo<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[std::io::IoSlice<'_>],
    ) -> Poll<std::io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}

/// A hyper service that marks its connection busy from a request's arrival until its response
/// body has been written.
pub struct TrackedService<S> {
    inner: S,
    slot: SlotRef,
}

impl<S> TrackedService<S> {
    pub fn new(inner: S, slot: SlotRef) -> TrackedService<S> {
        TrackedService { inner, slot }
    }
}

impl<S, R, B> hyper::service::Service<R> for TrackedService<S>
where
    S: hyper::service::Service<R, Response = axum::http::Response<B>>,
{
    type Response = axum::http::Response<TrackedBody<B>>;
    type Error = S::Error;
    type Future = TrackedFuture<S::Future>;

    fn call(&self, request: R) -> Self::Future {
        let in_flight = self.slot.begin_request();
        TrackedFuture {
            inner: self.inner.call(request),
            in_flight: Some(in_flight),
        }
    }
}

pin_project_lite::pin_project! {
    /// The router's future for one request, handing its in-flight mark to the response body.
    pub struct TrackedFuture<F> {
        #[pin]
        inner: F,
        in_flight: Option<RequestInFlight>,
    }
}

impl<F, B, E> Future for TrackedFuture<F>
where
    F: Future<Output = Result<axum::http::Response<B>, E>>,
{
    type Output = Result<axum::http::Response<TrackedBody<B>>, E>;

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Self::Output> {
        let this = self.project();
        let response = std::task::ready!(this.inner.poll(cx))?;
        let in_flight = this.in_flight.take();
        if let Some(in_flight) = &in_flight {
            in_flight.responding();
        }
        Poll::Ready(Ok(response.map(|body| TrackedBody {
            inner: body,
            _in_flight: in_flight,
        })))
    }
}

pin_project_lite::pin_project! {
    /// A response body that keeps its request in flight until hyper drops it.
    pub struct TrackedBody<B> {
        #[pin]
        inner: B,
        _in_flight: Option<RequestInFlight>,
    }
}

impl<B: Body> Body for TrackedBody<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Self::Data>, Self::Error>>> {
        self.project().inner.poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn lease(connections: &Arc<Connections>) -> Lease {
        match connections.admit() {
            Admission::Admitted(lease) => lease,
            _ => panic!("expected a free slot"),
        }
    }

    #[test]
    fn evicts_the_longest_idle_then_the_oldest_head_never_a_busy_one() {
        let connections = Connections::new(3);
        let (a, b, c) = (
            lease(&connections),
            lease(&connections),
            lease(&connections),
        );
        // All new: nothing to close.
        assert!(matches!(connections.admit(), Admission::Full));
        a.slot().on_read(false); // idle first
        c.slot().on_read(false); // idle second
        let _request = b.slot().begin_request();
        assert!(matches!(connections.admit(), Admission::Evicting));
        assert!(
            a.slot().slot().evict.load(Ordering::Acquire),
            "a: idle longest"
        );
        assert!(matches!(connections.admit(), Admission::Evicting));
        assert!(c.slot().slot().evict.load(Ordering::Acquire));
        // a and c are already closing, b is busy.
        assert!(matches!(connections.admit(), Admission::Full));
        drop(a);
        let d = lease(&connections);
        d.slot().on_read(true); // mid-head
        assert!(matches!(connections.admit(), Admission::Evicting));
        assert!(d.slot().slot().evict.load(Ordering::Acquire), "d: mid-head");
    }

    #[test]
    fn a_request_ends_idle_and_a_freed_slot_is_reused_clean() {
        let connections = Connections::new(1);
        let a = lease(&connections);
        a.slot().on_read(true);
        assert_eq!(a.slot().phase(), Phase::Head);
        let request = a.slot().begin_request();
        assert_eq!(a.slot().phase(), Phase::Busy);
        drop(request);
        assert_eq!(a.slot().phase(), Phase::Idle);
        assert!(matches!(connections.admit(), Admission::Evicting));
        drop(a);
        let b = lease(&connections);
        assert_eq!(b.slot().phase(), Phase::New);
        assert!(!b.slot().slot().evict.load(Ordering::Acquire));
    }
}
