//! A `tracing` layer whose every callback runs in an observer scope.
//!
//! console-subscriber's layer does its work inside tokio's task spans, on the runtime threads,
//! in the middle of the workload's polls: a task's spawn allocates its console statistics (two
//! poll-time histograms), each poll and wake records into them, and each event is queued for the
//! console's aggregator. Without a scope all of that would be charged to the lesson. [`Scoped`]
//! wraps the layer and enters [`crate::observer::brief_scope`] around each call into it, so the
//! allocations go to the observer's arena and counters and the time to the observer's CPU. (A
//! brief scope times the call with the monotonic clock: reading the thread's CPU clock, a system
//! call, around each of several calls per poll would cost more than the calls.)
//!
//! It delegates every method of tracing-subscriber's `Layer` trait (0.3.23; the list is the one
//! `Box<dyn Layer>` forwards), so the wrapped layer behaves exactly as if it were unwrapped:
//! per-layer filtering (`on_layer`, `downcast_raw`) included. It belongs *inside* a
//! `with_filter`, so that spans the filter turns away never pay for a scope.

use std::any::TypeId;

use tracing::level_filters::LevelFilter;
use tracing::subscriber::Interest;
use tracing::{Dispatch, Event, Metadata, Subscriber, span};
use tracing_subscriber::Layer;
use tracing_subscriber::layer::Context;

use crate::observer::{self, Observer};

/// `inner`, with each of its callbacks run as `observer`'s work.
#[derive(Debug)]
pub struct Scoped<L> {
    observer: Observer,
    inner: L,
}

impl<L> Scoped<L> {
    pub fn new(observer: Observer, inner: L) -> Scoped<L> {
        Scoped { observer, inner }
    }

    fn run<T>(&self, f: impl FnOnce(&L) -> T) -> T {
        observer::brief_scope(self.observer, || f(&self.inner))
    }
}

impl<S, L> Layer<S> for Scoped<L>
where
    S: Subscriber,
    L: Layer<S>,
{
    fn on_register_dispatch(&self, subscriber: &Dispatch) {
        self.run(|l| l.on_register_dispatch(subscriber))
    }

    fn on_layer(&mut self, subscriber: &mut S) {
        let observer = self.observer;
        observer::brief_scope(observer, || self.inner.on_layer(subscriber))
    }

    fn register_callsite(&self, metadata: &'static Metadata<'static>) -> Interest {
        self.run(|l| l.register_callsite(metadata))
    }

    fn enabled(&self, metadata: &Metadata<'_>, ctx: Context<'_, S>) -> bool {
        self.run(|l| l.enabled(metadata, ctx))
    }

    fn on_new_span(&self, attrs: &span::Attributes<'_>, id: &span::Id, ctx: Context<'_, S>) {
        self.run(|l| l.on_new_span(attrs, id, ctx))
    }

    // A constant of the layer's configuration, read once when the subscriber is built and
    // whenever callsite interest is rebuilt: nothing to charge.
    fn max_level_hint(&self) -> Option<LevelFilter> {
        self.inner.max_level_hint()
    }

    fn on_record(&self, span: &span::Id, values: &span::Record<'_>, ctx: Context<'_, S>) {
        self.run(|l| l.on_record(span, values, ctx))
    }

    fn on_follows_from(&self, span: &span::Id, follows: &span::Id, ctx: Context<'_, S>) {
        self.run(|l| l.on_follows_from(span, follows, ctx))
    }

    fn event_enabled(&self, event: &Event<'_>, ctx: Context<'_, S>) -> bool {
        self.run(|l| l.event_enabled(event, ctx))
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        self.run(|l| l.on_event(event, ctx))
    }

    fn on_enter(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.run(|l| l.on_enter(id, ctx))
    }

    fn on_exit(&self, id: &span::Id, ctx: Context<'_, S>) {
        self.run(|l| l.on_exit(id, ctx))
    }

    fn on_close(&self, id: span::Id, ctx: Context<'_, S>) {
        self.run(|l| l.on_close(id, ctx))
    }

    fn on_id_change(&self, old: &span::Id, new: &span::Id, ctx: Context<'_, S>) {
        self.run(|l| l.on_id_change(old, new, ctx))
    }

    // tracing-subscriber finds layers and its per-layer-filter markers through this: answer for
    // the wrapper itself, and let the wrapped layer answer for itself and what it holds.
    #[doc(hidden)]
    unsafe fn downcast_raw(&self, id: TypeId) -> Option<*const ()> {
        if id == TypeId::of::<Self>() {
            Some(self as *const Self as *const ())
        } else {
            // SAFETY: forwarded as is; the caller upholds `downcast_raw`'s contract.
            unsafe { self.inner.downcast_raw(id) }
        }
    }
}

#[cfg(test)]
mod tests {
    use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};

    use tracing_subscriber::layer::SubscriberExt;

    use super::*;
    use crate::alloc;

    /// A layer that records, for each callback, whether it ran in the console's scope.
    #[derive(Default)]
    struct Probe {
        in_scope: AtomicUsize,
        outside: AtomicUsize,
    }

    impl Probe {
        fn note(&self) {
            if alloc::observer() == Some(Observer::Console as usize) {
                self.in_scope.fetch_add(1, Relaxed);
            } else {
                self.outside.fetch_add(1, Relaxed);
            }
        }
    }

    impl<S: Subscriber> Layer<S> for &'static Probe {
        fn register_callsite(&self, _: &'static Metadata<'static>) -> Interest {
            self.note();
            Interest::always()
        }
        fn enabled(&self, _: &Metadata<'_>, _: Context<'_, S>) -> bool {
            self.note();
            true
        }
        fn on_new_span(&self, _: &span::Attributes<'_>, _: &span::Id, _: Context<'_, S>) {
            self.note()
        }
        fn on_record(&self, _: &span::Id, _: &span::Record<'_>, _: Context<'_, S>) {
            self.note()
        }
        fn on_follows_from(&self, _: &span::Id, _: &span::Id, _: Context<'_, S>) {
            self.note()
        }
        fn event_enabled(&self, _: &Event<'_>, _: Context<'_, S>) -> bool {
            self.note();
            true
        }
        fn on_event(&self, _: &Event<'_>, _: Context<'_, S>) {
            self.note()
        }
        fn on_enter(&self, _: &span::Id, _: Context<'_, S>) {
            self.note()
        }
        fn on_exit(&self, _: &span::Id, _: Context<'_, S>) {
            self.note()
        }
        fn on_close(&self, _: span::Id, _: Context<'_, S>) {
            self.note()
        }
    }

    /// tracing caches each callsite's interest process-wide, across dispatchers: two of these
    /// tests at once in one test process (`cargo test` runs tests on threads) could see each
    /// other's filters. Each holds this while its dispatcher is set.
    static ONE_DISPATCHER: std::sync::Mutex<()> = std::sync::Mutex::new(());

    #[test]
    fn every_callback_runs_in_the_observers_scope() {
        let _one = ONE_DISPATCHER.lock().unwrap_or_else(|e| e.into_inner());
        let probe: &'static Probe = Box::leak(Box::default());
        let subscriber = tracing_subscriber::registry().with(
            Scoped::new(Observer::Console, probe)
                .with_filter(tracing_subscriber::filter::LevelFilter::TRACE),
        );
        tracing::subscriber::with_default(subscriber, || {
            let span = tracing::trace_span!("probe", field = tracing::field::Empty);
            let other = tracing::trace_span!("other");
            span.record("field", 1);
            span.follows_from(&other);
            span.in_scope(|| tracing::trace!("event"));
        });
        assert_eq!(probe.outside.load(Relaxed), 0);
        // Two callsites, two spans with enter and exit, a record, a follows-from, an event
        // (with its `enabled` and `event_enabled`), two closes.
        assert!(
            probe.in_scope.load(Relaxed) >= 12,
            "{}",
            probe.in_scope.load(Relaxed)
        );
    }

    #[test]
    fn the_wrapper_is_transparent_to_filters_and_lookups() {
        let _one = ONE_DISPATCHER.lock().unwrap_or_else(|e| e.into_inner());
        // Interest cached for another test's dispatcher must not decide for this one.
        tracing::callsite::rebuild_interest_cache();
        let probe: &'static Probe = Box::leak(Box::default());
        let subscriber = tracing_subscriber::registry().with(
            Scoped::new(Observer::Console, probe)
                .with_filter(tracing_subscriber::filter::LevelFilter::INFO),
        );
        tracing::subscriber::with_default(subscriber, || {
            // The per-layer filter still decides: nothing below INFO reaches the layer.
            let span = tracing::trace_span!("filtered out");
            span.in_scope(|| tracing::trace!("filtered out too"));
            assert!(span.is_disabled());
            // Lookups by type (how tracing-subscriber finds layers and its filters' markers)
            // reach the wrapped layer.
            tracing::dispatcher::get_default(|dispatch| {
                assert!(dispatch.downcast_ref::<&'static Probe>().is_some());
                assert!(dispatch.downcast_ref::<Scoped<&'static Probe>>().is_some());
            });
        });
        assert_eq!(probe.in_scope.load(Relaxed), 0);
        assert_eq!(probe.outside.load(Relaxed), 0);
    }
}
