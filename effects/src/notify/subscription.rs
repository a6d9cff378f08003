//! One subscriber: its options, its identity, and the [`Subscription`] handle that
//! receives from its queue.

use std::fmt;
use std::sync::{Arc, Weak};

use keel_core::{Envelope, TopicPattern};
use tracing::debug;

use super::bus::BusInner;
use super::filter::Filter;
use super::lanes::Pushed;
use super::queue::{Popped, Queue};

/// The queue capacity of a subscription unless told otherwise.
pub const CAPACITY_DEFAULT: usize = 1024;

/// What the bus does with an envelope for a subscriber whose queue is full.
///
/// The policy also decides whether a slow subscriber can hold up the others:
///
/// - [`DropNewest`](Self::DropNewest) and [`DropOldest`](Self::DropOldest) **isolate**
///   the subscriber: when it falls behind, it loses envelopes (counted by
///   [`Subscription::dropped`]), and publishers, and so every other subscriber, carry
///   on as if it were not there.
/// - [`Backpressure`](Self::Backpressure), the default, **couples** the subscriber to
///   the others: once its queue is full, [`Bus::publish`] waits for it to make room. The
///   envelope being published still reaches every subscriber with room, but nothing the
///   waiting publisher sends next reaches anyone until the slow subscriber reads, so one
///   stalled subscriber delays every other subscriber of that publisher. Nothing is
///   lost, which is why it is the default.
///
/// Choose a drop policy for a subscriber that may fall behind (a dashboard, a log
/// shipper) when the others must not wait for it; keep backpressure for one that must
/// see every envelope, and bound the publisher's wait with a timeout.
///
/// [`Bus::publish`]: super::Bus::publish
/// [`Subscription::dropped`]: Subscription::dropped
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash)]
pub enum Overflow {
    /// The publisher waits until the subscriber makes room: nothing is lost, but a slow
    /// subscriber slows every publisher of its topics, and so delays every other
    /// subscriber of those publishers. [`Bus::try_publish`] refuses instead of waiting.
    ///
    /// [`Bus::try_publish`]: super::Bus::try_publish
    #[default]
    Backpressure,
    /// The new envelope is thrown away; the queued ones are kept. Never makes the
    /// publisher wait, so a slow subscriber delays no one else.
    DropNewest,
    /// The oldest envelope of the lowest priority queued is thrown away to make room; if
    /// the new envelope ranks below everything queued, it is thrown away instead. Never
    /// makes the publisher wait, so a slow subscriber delays no one else.
    DropOldest,
}

/// How to subscribe: which envelopes (beyond the topic), how many may queue, and what
/// happens when the queue is full.
///
/// The default overflow policy, [`Overflow::Backpressure`], loses nothing but couples
/// this subscriber to the others: when it falls behind and its queue fills, publishers
/// wait for it, and every other subscriber of those publishers waits with them. A drop
/// policy ([`Overflow::DropNewest`], [`Overflow::DropOldest`]) isolates it instead, at
/// the cost of the envelopes it had no room for. See [`Overflow`].
///
/// ```
/// use keel_effects::notify::{Filter, Overflow, SubscribeOptions};
/// let options = SubscribeOptions::default()
///     .filter(Filter::new().sources(["shop"]))
///     .capacity(64)
///     .overflow(Overflow::DropOldest);
/// assert_eq!(options.capacity, 64);
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SubscribeOptions {
    /// Conditions on the envelope; the default lets everything through.
    pub filter: Filter,
    /// How many envelopes may wait in the queue, all priorities together; at least 1.
    pub capacity: usize,
    /// What happens to an envelope when the queue is full, and so whether this
    /// subscriber falling behind holds up the others (backpressure) or not (a drop
    /// policy).
    pub overflow: Overflow,
}

impl Default for SubscribeOptions {
    fn default() -> Self {
        Self {
            filter: Filter::default(),
            capacity: CAPACITY_DEFAULT,
            overflow: Overflow::default(),
        }
    }
}

impl SubscribeOptions {
    /// The same options with `filter`.
    #[must_use]
    pub fn filter(mut self, filter: Filter) -> Self {
        self.filter = filter;
        self
    }

    /// The same options with a queue of `capacity` envelopes.
    #[must_use]
    pub fn capacity(mut self, capacity: usize) -> Self {
        self.capacity = capacity;
        self
    }

    /// The same options with the overflow policy `overflow`.
    #[must_use]
    pub fn overflow(mut self, overflow: Overflow) -> Self {
        self.overflow = overflow;
        self
    }
}

/// The id of a subscription, unique within its bus.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct SubscriptionId(u64);

impl SubscriptionId {
    pub(crate) const fn new(id: u64) -> Self {
        Self(id)
    }

    /// The id as a number.
    pub const fn as_u64(self) -> u64 {
        self.0
    }
}

impl fmt::Display for SubscriptionId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "sub-{}", self.0)
    }
}

/// A subscriber as the bus's registry holds it.
#[derive(Debug)]
pub(crate) struct Subscriber {
    pub(crate) id: SubscriptionId,
    pub(crate) pattern: TopicPattern,
    pub(crate) filter: Filter,
    pub(crate) queue: Queue,
}

impl Subscriber {
    /// Leaves a trace of an envelope lost to the overflow policy.
    pub(crate) fn log_overflow(&self, pushed: Pushed, envelope: &Envelope) {
        if matches!(pushed, Pushed::Refused | Pushed::Evicted) {
            debug!(
                subscription = %self.id,
                overflow = ?self.queue.overflow(),
                event_type = %envelope.event_type,
                evicted_older = pushed == Pushed::Evicted,
                "subscriber queue full: envelope dropped"
            );
        }
    }
}

/// Receives the envelopes of one subscription, highest priority first.
///
/// Dropping it unsubscribes, as does [`unsubscribe`](Self::unsubscribe). Envelopes are
/// shared with the other subscribers (`Arc<Envelope>`): fan-out never copies one.
pub struct Subscription {
    subscriber: Arc<Subscriber>,
    bus: Weak<BusInner>,
}

impl Subscription {
    pub(crate) fn new(subscriber: Arc<Subscriber>, bus: Weak<BusInner>) -> Self {
        Self { subscriber, bus }
    }

    /// The subscription's id.
    pub fn id(&self) -> SubscriptionId {
        self.subscriber.id
    }

    /// The topic pattern it was made with.
    pub fn pattern(&self) -> &TopicPattern {
        &self.subscriber.pattern
    }

    /// The filter it was made with.
    pub fn filter(&self) -> &Filter {
        &self.subscriber.filter
    }

    /// The next envelope: the oldest of the highest priority queued, waiting for one if
    /// none is. `None` once the bus is gone and the queue drained.
    pub async fn recv(&mut self) -> Option<Arc<Envelope>> {
        self.subscriber.queue.pop().await
    }

    /// The next envelope if one is queued now; never waits.
    pub fn try_recv(&mut self) -> Option<Arc<Envelope>> {
        match self.subscriber.queue.try_pop() {
            Popped::Envelope(envelope) => Some(envelope),
            Popped::Empty | Popped::Closed => None,
        }
    }

    /// Whether no more envelopes will arrive: the bus is gone (some may still be queued).
    pub fn is_closed(&self) -> bool {
        self.bus.strong_count() == 0
    }

    /// How many envelopes wait in the queue now.
    pub fn queued(&self) -> usize {
        self.subscriber.queue.len()
    }

    /// How many envelopes the queue may hold.
    pub fn capacity(&self) -> usize {
        self.subscriber.queue.capacity()
    }

    /// The overflow policy.
    pub fn overflow(&self) -> Overflow {
        self.subscriber.queue.overflow()
    }

    /// How many envelopes this subscription lost to its overflow policy so far.
    pub fn dropped(&self) -> u64 {
        self.subscriber.queue.dropped()
    }

    /// Stops delivery; envelopes still queued are discarded. Same as dropping it.
    pub fn unsubscribe(self) {
        drop(self);
    }
}

impl Drop for Subscription {
    fn drop(&mut self) {
        self.subscriber.queue.close();
        if let Some(bus) = self.bus.upgrade() {
            bus.remove(&self.subscriber);
        }
    }
}

impl fmt::Debug for Subscription {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Subscription")
            .field("id", &self.subscriber.id)
            .field("pattern", &self.subscriber.pattern.to_string())
            .field("queued", &self.queued())
            .field("capacity", &self.capacity())
            .field("overflow", &self.overflow())
            .field("dropped", &self.dropped())
            .finish_non_exhaustive()
    }
}
