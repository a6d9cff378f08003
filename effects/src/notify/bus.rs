//! The [`Bus`]: a registry of subscribers and the routing of each published envelope.
//!
//! Publishing takes only a read lock on the [`Registry`]; each subscriber has its own
//! queue and lock, so subscribers never wait on each other.

use std::fmt;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, PoisonError, RwLock, RwLockReadGuard, RwLockWriteGuard};

use keel_core::{Envelope, Topic, TopicPattern};
use tracing::debug;

use super::filter::Filter;
use super::lanes::Pushed;
use super::queue::Queue;
use super::registry::Registry;
use super::request::Pending;
use super::subscription::{SubscribeOptions, Subscriber, Subscription, SubscriptionId};
use crate::error::Error;

/// Limits of a [`Bus`].
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BusConfig {
    /// How many subscriptions may exist at once.
    pub subscriptions_max: usize,
    /// How many [`Bus::request`]s may wait for their reply at once.
    pub pending_requests_max: usize,
}

impl Default for BusConfig {
    fn default() -> Self {
        Self {
            subscriptions_max: 65_536,
            pending_requests_max: 4_096,
        }
    }
}

/// What became of one published envelope.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Delivery {
    /// Subscribers that queued it.
    pub delivered: usize,
    /// Subscribers that threw it away because their queue was full.
    pub dropped: usize,
    /// Older envelopes thrown away to make room for it (subscribers with
    /// [`Overflow::DropOldest`](super::Overflow::DropOldest)); each of those subscribers
    /// is also counted in `delivered`.
    pub evicted: usize,
}

impl Delivery {
    /// Counts one subscriber's outcome; `Full` and `Closed` count nowhere.
    fn record(&mut self, pushed: Pushed) {
        match pushed {
            Pushed::Queued => self.delivered += 1,
            Pushed::Evicted => {
                self.delivered += 1;
                self.evicted += 1;
            }
            Pushed::Refused => self.dropped += 1,
            Pushed::Full | Pushed::Closed => {}
        }
    }
}

/// An in-process event bus: publish envelopes to topics, subscribe with topic patterns.
///
/// Cheap to clone; clones share the subscribers. When the last clone is dropped, every
/// subscription's [`recv`](Subscription::recv) returns what is still queued, then `None`.
///
/// # Slow subscribers
///
/// Each subscriber has its own queue, so a consumer that fails or goes away affects no
/// other. Whether a *slow* one does depends on its [`Overflow`](super::Overflow) policy:
///
/// - Under a drop policy (`DropNewest`, `DropOldest`) it is isolated: its full queue
///   loses envelopes, and [`publish`](Self::publish) never waits for it.
/// - Under `Backpressure`, the default, it is coupled to the others: with its queue
///   full, `publish` waits for it, so nothing that publisher sends next reaches any
///   subscriber until it reads. One stalled subscriber then delays them all.
///
/// Backpressure stays the default because it never loses an envelope silently. Give a
/// drop policy to subscribers that may fall behind and must not hold up the rest.
///
/// ```
/// use keel_core::{Envelope, EventId, EventType, Priority, Timestamp, Topic};
/// use keel_effects::notify::{Bus, BusConfig, SubscribeOptions};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::new(BusConfig::default());
/// let mut orders = bus.subscribe("order.*".parse()?, SubscribeOptions::default())?;
///
/// let placed = Envelope::builder(
///     EventId::from_u128(1),
///     EventType::new("order.placed")?,
///     "shop",
///     Timestamp::from_unix_millis(0),
/// )
/// .priority(Priority::High)
/// .build()?;
/// let delivery = bus.publish(&Topic::new("order.placed")?, placed).await?;
/// assert_eq!(delivery.delivered, 1);
///
/// let received = orders.recv().await.ok_or("the bus is gone")?;
/// assert_eq!(received.event_type.as_str(), "order.placed");
/// # Ok(())
/// # }
/// ```
///
/// Request-reply: see [`Bus::request`].
#[derive(Clone)]
pub struct Bus {
    pub(crate) inner: Arc<BusInner>,
}

/// What the clones of a bus share.
pub(crate) struct BusInner {
    config: BusConfig,
    registry: RwLock<Registry>,
    next_id: AtomicU64,
    pub(crate) pending: Pending,
}

impl Bus {
    /// An empty bus.
    pub fn new(config: BusConfig) -> Self {
        Self {
            inner: Arc::new(BusInner {
                config,
                registry: RwLock::new(Registry::default()),
                next_id: AtomicU64::new(1),
                pending: Pending::new(config.pending_requests_max),
            }),
        }
    }

    /// Subscribes to the topics `pattern` selects, with `options`.
    ///
    /// Fails if `options.capacity` is 0 or the bus has
    /// [`subscriptions_max`](BusConfig::subscriptions_max) subscriptions already.
    pub fn subscribe(
        &self,
        pattern: TopicPattern,
        options: SubscribeOptions,
    ) -> Result<Subscription, Error> {
        if options.capacity == 0 {
            return Err(Error::InvalidConfig {
                setting: "capacity",
                reason: "a subscriber queue must hold at least 1 envelope (the default is 1024)"
                    .into(),
            });
        }
        let id = SubscriptionId::new(self.inner.next_id.fetch_add(1, Ordering::Relaxed));
        let subscriber = Arc::new(Subscriber {
            id,
            pattern,
            filter: options.filter,
            queue: Queue::new(options.capacity, options.overflow),
        });
        let mut registry = self.inner.write();
        if registry.len() >= self.inner.config.subscriptions_max {
            return Err(Error::QueueFull {
                queue: "subscription table",
                capacity: self.inner.config.subscriptions_max,
            });
        }
        registry.insert(Arc::clone(&subscriber));
        drop(registry);
        debug!(
            subscription = %id,
            pattern = %subscriber.pattern,
            capacity = options.capacity,
            overflow = ?options.overflow,
            "subscribed"
        );
        Ok(Subscription::new(subscriber, Arc::downgrade(&self.inner)))
    }

    /// Subscribes to every topic, keeping the envelopes that pass `filter`: a stream of,
    /// say, all `payment.*` events from `billing` since noon.
    pub fn stream(&self, filter: Filter) -> Result<Subscription, Error> {
        let everything = TopicPattern::new("**")?;
        self.subscribe(everything, SubscribeOptions::default().filter(filter))
    }

    /// Publishes `envelope` on `topic` to every subscriber whose pattern and filter
    /// match, and answers the [`request`](Self::request) it replies to, if any. Takes an
    /// `Envelope` or an `Arc<Envelope>`; subscribers share it either way.
    ///
    /// Subscribers with [`Overflow::Backpressure`](super::Overflow::Backpressure) and a
    /// full queue make this wait until they make room: that is how a slow consumer slows
    /// its producers instead of growing memory, and, through them, delays what every
    /// other subscriber receives next. The envelope is offered to every subscriber with
    /// room before the wait begins. Subscribers with a drop policy never make this wait;
    /// their full queue applies its policy. If the returned future is dropped while
    /// waiting, the subscribers already served keep the envelope and the waiting ones
    /// miss it. To refuse instead of waiting, use [`try_publish`](Self::try_publish); to
    /// bound the wait, wrap this in `tokio::time::timeout`.
    pub async fn publish(
        &self,
        topic: &Topic,
        envelope: impl Into<Arc<Envelope>>,
    ) -> Result<Delivery, Error> {
        let envelope = envelope.into();
        let mut delivery = Delivery::default();
        let full = self.inner.offer(topic, &envelope, &mut delivery);
        for subscriber in full {
            let pushed = subscriber.queue.push(&envelope).await;
            subscriber.log_overflow(pushed, &envelope);
            delivery.record(pushed);
        }
        Ok(delivery)
    }

    /// Publishes like [`publish`](Self::publish) but never waits.
    ///
    /// Fails with [`Error::QueueFull`] if a subscriber with backpressure is full; the
    /// envelope has then still been offered to every other matching subscriber.
    pub fn try_publish(
        &self,
        topic: &Topic,
        envelope: impl Into<Arc<Envelope>>,
    ) -> Result<Delivery, Error> {
        let envelope = envelope.into();
        let mut delivery = Delivery::default();
        let full = self.inner.offer(topic, &envelope, &mut delivery);
        match full.first() {
            Some(subscriber) => Err(Error::QueueFull {
                queue: "subscriber queue",
                capacity: subscriber.queue.capacity(),
            }),
            None => Ok(delivery),
        }
    }

    /// How many subscriptions exist now.
    pub fn subscriber_count(&self) -> usize {
        self.inner.read().len()
    }
}

impl BusInner {
    fn read(&self) -> RwLockReadGuard<'_, Registry> {
        // Poisoning is harmless: every change to the registry completes before its lock
        // is released, and no user code runs while it is held.
        self.registry.read().unwrap_or_else(PoisonError::into_inner)
    }

    fn write(&self) -> RwLockWriteGuard<'_, Registry> {
        self.registry
            .write()
            .unwrap_or_else(PoisonError::into_inner)
    }

    /// Offers `envelope` to every matching subscriber without waiting; returns those
    /// that are full under backpressure, for the caller to wait on or refuse.
    fn offer(
        &self,
        topic: &Topic,
        envelope: &Arc<Envelope>,
        delivery: &mut Delivery,
    ) -> Vec<Arc<Subscriber>> {
        self.pending.resolve(envelope);
        let mut full = Vec::new();
        let registry = self.read();
        for subscriber in registry.matching(topic.as_str()) {
            if !subscriber.filter.matches(envelope) {
                continue;
            }
            let pushed = subscriber.queue.try_push(envelope);
            subscriber.log_overflow(pushed, envelope);
            match pushed {
                Pushed::Full => full.push(Arc::clone(subscriber)),
                pushed => delivery.record(pushed),
            }
        }
        full
    }

    /// Takes `subscriber` out of the registry (called when its subscription is dropped).
    pub(crate) fn remove(&self, subscriber: &Subscriber) {
        if self.write().remove(subscriber) {
            debug!(subscription = %subscriber.id, "unsubscribed");
        }
    }
}

impl Drop for BusInner {
    fn drop(&mut self) {
        let registry = self
            .registry
            .get_mut()
            .unwrap_or_else(PoisonError::into_inner);
        for subscriber in registry.iter() {
            subscriber.queue.close();
        }
    }
}

impl Default for Bus {
    fn default() -> Self {
        Self::new(BusConfig::default())
    }
}

impl fmt::Debug for Bus {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Bus")
            .field("config", &self.inner.config)
            .field("subscriptions", &self.subscriber_count())
            .field("pending_requests", &self.inner.pending.len())
            .finish()
    }
}
