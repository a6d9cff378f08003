//! The in-process event bus: topics, patterns, filters, priorities, request-reply.
//!
//! A [`Bus`] routes each published envelope to the subscriptions whose
//! [`TopicPattern`](keel_core::TopicPattern) matches its topic (`*` one segment, `**` the
//! rest) and whose [`Filter`] (types, sources, since) it passes. Every subscription has
//! its own bounded queue:
//!
//! - **Isolation.** A subscriber's queue and lock are its own; its consumer runs on its
//!   own task. A failed consumer affects no other, and a dropped [`Subscription`] leaves
//!   the bus at once. The bus runs no user code on the publisher's task: filters are
//!   data. A *slow* consumer is isolated only under a drop [`Overflow`] policy; under
//!   backpressure (the default) its full queue makes publishers wait, which delays every
//!   other subscriber of its topics (see [`Overflow`]).
//! - **Priority.** A queue keeps one lane per [`Priority`](keel_core::Priority); `recv`
//!   takes the oldest envelope of the highest priority queued, so when a consumer is
//!   behind, `High` envelopes overtake queued `Normal` and `Low` ones.
//! - **Bounds.** A full queue applies its [`Overflow`] policy: make the publisher wait
//!   (the default, which loses nothing), drop the new envelope, or drop the oldest of the
//!   lowest priority. Memory never grows without bound; the subscriber and
//!   pending-request tables are bounded too ([`BusConfig`]).
//! - **Request-reply.** [`Bus::request`] publishes a request and waits, with a timeout,
//!   for the envelope that names it as its cause.
//!
//! [`NotifyHandler`] carries out `IntentKind::Notify` intents by publishing on a bus,
//! and `IntentKind::Request` intents by publishing and waiting for the reply.
//!
//! # Layout
//!
//! - `bus`: [`Bus`], [`BusConfig`], [`Delivery`]; publishing and subscribing.
//! - `subscription`: [`Subscription`], [`SubscribeOptions`], [`Overflow`].
//! - `lanes`: a subscriber's priority lanes and overflow policies, as pure logic.
//! - `queue`: those lanes behind the subscriber's lock, with wake-ups.
//! - `registry`: who subscribed to what, indexed for routing.
//! - `filter`: [`Filter`].
//! - `request`: request-reply.

mod bus;
mod filter;
mod lanes;
mod queue;
mod registry;
mod request;
mod subscription;

pub use bus::{Bus, BusConfig, Delivery};
pub use filter::Filter;
pub use subscription::{
    CAPACITY_DEFAULT, Overflow, SubscribeOptions, Subscription, SubscriptionId,
};

use keel_core::IntentKind;
use serde_json::json;

use crate::error::Error;
use crate::handler::{Call, Failure, Handler, HandlerFuture};

/// Carries out `IntentKind::Notify { topic, envelope }` by publishing on a [`Bus`].
///
/// Publishing waits while a subscriber with backpressure is full; wrap the handler in a
/// timeout layer to bound that wait. The value returned is
/// `{"delivered": n, "dropped": m, "evicted": k}` (see [`Delivery`]).
///
/// It also carries out `IntentKind::Request { topic, envelope, timeout_ms }` with
/// [`Bus::request`]: the value is the reply as CloudEvents JSON, and no reply in time is
/// a [`FailureKind::Timeout`](crate::FailureKind::Timeout). Any other intent fails
/// permanently.
///
/// A retried intent is published again: subscribers that must see each envelope once
/// deduplicate by envelope id, which a reducer derives deterministically.
///
/// ```
/// use keel_core::{CausationId, CorrelationId, Envelope, EventId, EventType, Intent, IntentId, IntentKind, Timestamp, Topic};
/// use keel_effects::notify::{Bus, NotifyHandler, SubscribeOptions};
/// use keel_effects::{Call, Handler, Metrics};
///
/// # #[tokio::main(flavor = "current_thread")]
/// # async fn main() -> Result<(), Box<dyn std::error::Error>> {
/// let bus = Bus::default();
/// let mut all = bus.subscribe("**".parse()?, SubscribeOptions::default())?;
/// let envelope = Envelope::builder(
///     EventId::from_u128(1),
///     EventType::from_static("order.placed"),
///     "shop",
///     Timestamp::from_unix_millis(0),
/// )
/// .build()?;
/// let intent = Intent {
///     id: IntentId::new(CorrelationId::from_u128(1), CausationId::from_u128(1), 0),
///     kind: IntentKind::Notify { topic: Topic::new("order.placed")?, envelope: Box::new(envelope) },
/// };
/// let handler = NotifyHandler::new(bus.clone());
/// let call = Call::new(intent, "order-1".into(), Metrics::default());
/// let value = handler.call(call).await.map_err(|failure| failure.to_string())?;
/// assert_eq!(value["delivered"], 1);
/// assert!(all.try_recv().is_some());
/// # Ok(())
/// # }
/// ```
#[derive(Debug, Clone)]
pub struct NotifyHandler {
    /// The bus to publish on.
    pub bus: Bus,
}

impl NotifyHandler {
    /// A handler publishing on `bus`.
    pub fn new(bus: Bus) -> Self {
        Self { bus }
    }
}

impl Handler for NotifyHandler {
    fn call(&self, call: Call) -> HandlerFuture {
        let bus = self.bus.clone();
        Box::pin(async move {
            if let IntentKind::Request {
                topic,
                envelope,
                timeout_ms,
            } = &call.intent.kind
            {
                let reply = bus
                    .request(topic, envelope.as_ref().clone(), *timeout_ms)
                    .await
                    .map_err(|e| match e {
                        Error::ReplyTimeout { .. } => Failure::timeout(e.to_string()),
                        other => Failure::transient(other.to_string()),
                    })?;
                return Ok(reply.to_cloudevent());
            }
            let IntentKind::Notify { topic, envelope } = &call.intent.kind else {
                return Err(Failure::permanent(format!(
                    "the notify handler cannot carry out a `{}` intent: route it to its own handler",
                    call.intent.kind.family()
                )));
            };
            // One copy per attempt: the intent is shared with layers that may retry it.
            let envelope = envelope.as_ref().clone();
            let delivery = bus
                .publish(topic, envelope)
                .await
                .map_err(|e| Failure::transient(e.to_string()))?;
            Ok(json!({
                "delivered": delivery.delivered,
                "dropped": delivery.dropped,
                "evicted": delivery.evicted,
            }))
        })
    }
}
