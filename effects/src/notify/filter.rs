//! Which envelopes a subscriber wants, beyond the topic: a filter on the envelope.
//!
//! A filter is data, not a closure: the bus evaluates it on the publisher's task, and a
//! value that can only compare types, sources and times cannot block, panic or slow a
//! publisher down. It serialises, so a subscription can be configured from a file.

use keel_core::{Envelope, Timestamp, TopicPattern};
use serde::{Deserialize, Serialize};

/// Conditions on an envelope's type, source and time; every condition given must hold.
///
/// An empty filter (the default) lets every envelope through.
///
/// ```
/// use keel_core::{Envelope, EventId, EventType, Timestamp};
/// use keel_effects::notify::Filter;
///
/// let filter = Filter::new()
///     .types(["order.*".parse()?])
///     .sources(["shop"])
///     .since(Timestamp::from_unix_millis(1_000));
///
/// let placed = Envelope::builder(
///     EventId::from_u128(1),
///     EventType::new("order.placed")?,
///     "shop",
///     Timestamp::from_unix_millis(2_000),
/// )
/// .build()?;
/// assert!(filter.matches(&placed));
/// # Ok::<(), keel_core::Error>(())
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(default)]
pub struct Filter {
    types: Vec<TopicPattern>,
    sources: Vec<String>,
    since: Option<Timestamp>,
}

impl Filter {
    /// A filter that lets every envelope through.
    pub fn new() -> Self {
        Self::default()
    }

    /// Also requires the envelope's type to match one of `patterns` (as a topic pattern
    /// matches a topic: `order.*`, `payment.**`). Adds to the patterns given before.
    #[must_use]
    pub fn types(mut self, patterns: impl IntoIterator<Item = TopicPattern>) -> Self {
        self.types.extend(patterns);
        self
    }

    /// Also requires the envelope's source to equal one of `sources` exactly. Adds to the
    /// sources given before.
    #[must_use]
    pub fn sources<S: Into<String>>(mut self, sources: impl IntoIterator<Item = S>) -> Self {
        self.sources.extend(sources.into_iter().map(Into::into));
        self
    }

    /// Also requires the envelope's time to be at or after `time` (the producer's time,
    /// not the time of publishing). Replaces an earlier bound.
    #[must_use]
    pub fn since(mut self, time: Timestamp) -> Self {
        self.since = Some(time);
        self
    }

    /// Whether `envelope` passes every condition.
    pub fn matches(&self, envelope: &Envelope) -> bool {
        // Cheapest test first: the publisher pays for this on every matching subscriber.
        if self.since.is_some_and(|since| envelope.time < since) {
            return false;
        }
        if !self.sources.is_empty() && !self.sources.contains(&envelope.source) {
            return false;
        }
        self.types.is_empty()
            || self
                .types
                .iter()
                .any(|pattern| pattern.matches(envelope.event_type.as_str()))
    }

    /// Whether the filter lets every envelope through.
    pub fn is_empty(&self) -> bool {
        self.types.is_empty() && self.sources.is_empty() && self.since.is_none()
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{EventId, EventType};

    use super::*;

    fn envelope(event_type: &'static str, source: &str, millis: i64) -> Envelope {
        Envelope::builder(
            EventId::from_u128(1),
            EventType::from_static(event_type),
            source,
            Timestamp::from_unix_millis(millis),
        )
        .build()
        .unwrap()
    }

    #[test]
    fn an_empty_filter_lets_everything_through() {
        assert!(Filter::new().is_empty());
        assert!(Filter::new().matches(&envelope("a.b", "x", 0)));
    }

    #[test]
    fn every_given_condition_must_hold() {
        let filter = Filter::new()
            .types(["order.**".parse().unwrap()])
            .sources(["shop", "admin"])
            .since(Timestamp::from_unix_millis(10));
        assert!(filter.matches(&envelope("order.payment.failed", "admin", 10)));
        assert!(!filter.matches(&envelope("payment.failed", "admin", 10)));
        assert!(!filter.matches(&envelope("order.placed", "billing", 10)));
        assert!(!filter.matches(&envelope("order.placed", "shop", 9)));
    }

    #[test]
    fn a_filter_round_trips_through_json() {
        let filter = Filter::new()
            .types(["order.*".parse().unwrap()])
            .since(Timestamp::from_unix_millis(5));
        let json = serde_json::to_string(&filter).unwrap();
        assert_eq!(serde_json::from_str::<Filter>(&json).unwrap(), filter);
        assert_eq!(serde_json::from_str::<Filter>("{}").unwrap(), Filter::new());
    }
}
