//! Request-reply over the bus, matched by correlation and causation ids.
//!
//! A request is an ordinary envelope published on a topic. Its reply is any envelope
//! published afterwards, on any topic, that continues the request's transaction (same
//! correlation id) and names the request as its cause (causation id = the request's
//! id): exactly what [`EnvelopeBuilder::caused_by`](keel_core::EnvelopeBuilder::caused_by)
//! produces. The waiting requests sit in a bounded table that every publish consults;
//! when no request waits, that costs one atomic load.

use std::collections::HashMap;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use keel_core::{CausationId, CorrelationId, Envelope, Topic};
use tokio::sync::oneshot;

use super::bus::{Bus, Delivery};
use crate::error::Error;

/// A request as its reply names it.
type ReplyKey = (CorrelationId, CausationId);

/// The requests waiting for their reply.
#[derive(Debug)]
pub(crate) struct Pending {
    waiting: Mutex<HashMap<ReplyKey, oneshot::Sender<Arc<Envelope>>>>,
    /// `waiting.len()`, readable without the lock.
    len: AtomicUsize,
    max: usize,
}

impl Pending {
    pub(crate) fn new(max: usize) -> Self {
        Self {
            waiting: Mutex::new(HashMap::new()),
            len: AtomicUsize::new(0),
            max,
        }
    }

    fn lock(&self) -> MutexGuard<'_, HashMap<ReplyKey, oneshot::Sender<Arc<Envelope>>>> {
        // Each change is one insert or remove, complete before the lock is released.
        self.waiting.lock().unwrap_or_else(PoisonError::into_inner)
    }

    pub(crate) fn len(&self) -> usize {
        self.len.load(Ordering::Acquire)
    }

    /// Registers `request` as waiting for its reply.
    fn register(&self, request: &Envelope) -> Result<Registered<'_>, Error> {
        let key = (request.correlation_id, CausationId::from(request.id));
        let mut waiting = self.lock();
        if waiting.len() >= self.max {
            return Err(Error::QueueFull {
                queue: "pending request table",
                capacity: self.max,
            });
        }
        if waiting.contains_key(&key) {
            return Err(Error::Core(keel_core::Error::InvalidField {
                field: "id",
                reason: "a request with this id already waits for its reply; give each request a fresh id"
                    .into(),
            }));
        }
        let (sender, receiver) = oneshot::channel();
        waiting.insert(key, sender);
        self.len.store(waiting.len(), Ordering::Release);
        Ok(Registered {
            pending: self,
            key,
            receiver,
        })
    }

    /// Hands `envelope` to the request it replies to, if one waits.
    pub(crate) fn resolve(&self, envelope: &Arc<Envelope>) {
        let Some(causation) = envelope.causation_id else {
            return;
        };
        if self.len() == 0 {
            return;
        }
        let mut waiting = self.lock();
        let Some(sender) = waiting.remove(&(envelope.correlation_id, causation)) else {
            return;
        };
        self.len.store(waiting.len(), Ordering::Release);
        drop(waiting);
        // The requester may have given up in the meantime; then nobody wants the reply.
        let _ = sender.send(Arc::clone(envelope));
    }

    fn forget(&self, key: &ReplyKey) {
        let mut waiting = self.lock();
        if waiting.remove(key).is_some() {
            self.len.store(waiting.len(), Ordering::Release);
        }
    }
}

/// A waiting request; leaves the table when dropped, whether it got its reply, timed
/// out, or its caller stopped waiting.
struct Registered<'a> {
    pending: &'a Pending,
    key: ReplyKey,
    receiver: oneshot::Receiver<Arc<Envelope>>,
}

impl Drop for Registered<'_> {
    fn drop(&mut self) {
        self.pending.forget(&self.key);
    }
}

impl Bus {
    /// Publishes `request` on `topic` and waits for its reply, at most `timeout_ms`
    /// milliseconds (publishing included).
    ///
    /// The reply is the first envelope published afterwards, on any topic, whose
    /// correlation id is the request's and whose causation id is the request's id; it
    /// also goes to the subscribers of its topic as usual. A responder builds it with
    /// [`caused_by`](keel_core::EnvelopeBuilder::caused_by) and publishes it, or hands it
    /// to [`reply`](Self::reply). Fails with [`Error::ReplyTimeout`] when time runs out,
    /// and with [`Error::QueueFull`] when
    /// [`pending_requests_max`](super::BusConfig::pending_requests_max) requests wait.
    ///
    /// ```
    /// use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
    /// use keel_effects::notify::{Bus, SubscribeOptions};
    ///
    /// # #[tokio::main(flavor = "current_thread")]
    /// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
    /// let bus = Bus::default();
    /// let mut questions = bus.subscribe("stock.query".parse()?, SubscribeOptions::default())?;
    /// let responder = bus.clone();
    /// tokio::spawn(async move {
    ///     while let Some(question) = questions.recv().await {
    ///         let answer = Envelope::builder(
    ///             EventId::from_u128(2),
    ///             EventType::from_static("stock.answered"),
    ///             "warehouse",
    ///             Timestamp::from_unix_millis(1),
    ///         )
    ///         .build()?;
    ///         responder.reply(&question, answer).await?;
    ///     }
    ///     Ok::<(), Box<dyn std::error::Error + Send + Sync>>(())
    /// });
    ///
    /// let question = Envelope::builder(
    ///     EventId::from_u128(1),
    ///     EventType::from_static("stock.query"),
    ///     "shop",
    ///     Timestamp::from_unix_millis(0),
    /// )
    /// .build()?;
    /// let answer = bus.request(&Topic::new("stock.query")?, question, 1_000).await?;
    /// assert_eq!(answer.source, "warehouse");
    /// # Ok(())
    /// # }
    /// ```
    pub async fn request(
        &self,
        topic: &Topic,
        request: Envelope,
        timeout_ms: u64,
    ) -> Result<Arc<Envelope>, Error> {
        let request = Arc::new(request);
        let timed_out = || Error::ReplyTimeout {
            request_type: request.event_type.to_string(),
            timeout_ms,
        };
        // Registered before publishing, so a reply that comes at once is not missed.
        let mut registered = self.inner.pending.register(&request)?;
        let exchange = async {
            self.publish(topic, Arc::clone(&request)).await?;
            // The sender lives in the table until a reply takes it or this request
            // leaves; it is never dropped while this receiver waits.
            (&mut registered.receiver).await.map_err(|_| timed_out())
        };
        match tokio::time::timeout(Duration::from_millis(timeout_ms), exchange).await {
            Ok(reply) => reply,
            Err(_elapsed) => Err(timed_out()),
        }
    }

    /// Publishes `reply` as the answer to `request`: sets its correlation id to the
    /// request's and its causation id to the request's id, then publishes it on the topic
    /// named by its own type.
    pub async fn reply(&self, request: &Envelope, mut reply: Envelope) -> Result<Delivery, Error> {
        reply.correlation_id = request.correlation_id;
        reply.causation_id = Some(request.id.into());
        let topic = Topic::from(reply.event_type.clone());
        self.publish(&topic, reply).await
    }
}
