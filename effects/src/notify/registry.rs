//! Who subscribed to what: the subscribers of a bus, indexed for routing.
//!
//! Most subscriptions name one topic; those are found with one hash lookup. Only the
//! patterns with wildcards are tried one by one. The bus keeps the registry behind a
//! read-write lock, so publishers route concurrently and only (un)subscribing writes.

use std::collections::HashMap;
use std::sync::Arc;

use super::subscription::Subscriber;

/// The subscribers of one bus.
#[derive(Debug, Default)]
pub(crate) struct Registry {
    /// Patterns without wildcards, by the one topic they match.
    literal: HashMap<Box<str>, Vec<Arc<Subscriber>>>,
    /// Patterns with wildcards.
    wildcard: Vec<Arc<Subscriber>>,
    len: usize,
}

impl Registry {
    /// Adds `subscriber`.
    pub(crate) fn insert(&mut self, subscriber: Arc<Subscriber>) {
        if subscriber.pattern.is_literal() {
            let topic: Box<str> = subscriber.pattern.to_string().into();
            self.literal.entry(topic).or_default().push(subscriber);
        } else {
            self.wildcard.push(subscriber);
        }
        self.len += 1;
    }

    /// Takes `subscriber` out; whether it was there.
    pub(crate) fn remove(&mut self, subscriber: &Subscriber) -> bool {
        let id = subscriber.id;
        let removed = if subscriber.pattern.is_literal() {
            let topic = subscriber.pattern.to_string();
            let Some(list) = self.literal.get_mut(topic.as_str()) else {
                return false;
            };
            let before = list.len();
            list.retain(|s| s.id != id);
            let removed = list.len() < before;
            if list.is_empty() {
                self.literal.remove(topic.as_str());
            }
            removed
        } else {
            let before = self.wildcard.len();
            self.wildcard.retain(|s| s.id != id);
            self.wildcard.len() < before
        };
        if removed {
            self.len -= 1;
        }
        removed
    }

    /// The subscribers whose pattern matches `topic`: literal ones first, then wildcard
    /// ones, each in order of subscribing.
    pub(crate) fn matching<'a>(
        &'a self,
        topic: &'a str,
    ) -> impl Iterator<Item = &'a Arc<Subscriber>> {
        let literal = self.literal.get(topic).map_or(&[][..], Vec::as_slice);
        let wildcard = self
            .wildcard
            .iter()
            .filter(move |s| s.pattern.matches(topic));
        literal.iter().chain(wildcard)
    }

    /// Every subscriber.
    pub(crate) fn iter(&self) -> impl Iterator<Item = &Arc<Subscriber>> {
        self.literal.values().flatten().chain(&self.wildcard)
    }

    pub(crate) fn len(&self) -> usize {
        self.len
    }
}

#[cfg(test)]
mod tests {
    use super::super::filter::Filter;
    use super::super::queue::Queue;
    use super::super::subscription::{Overflow, SubscriptionId};
    use super::*;

    fn subscriber(id: u64, pattern: &str) -> Arc<Subscriber> {
        Arc::new(Subscriber {
            id: SubscriptionId::new(id),
            pattern: pattern.parse().unwrap(),
            filter: Filter::new(),
            queue: Queue::new(1, Overflow::Backpressure),
        })
    }

    fn ids(registry: &Registry, topic: &str) -> Vec<u64> {
        registry.matching(topic).map(|s| s.id.as_u64()).collect()
    }

    #[test]
    fn literal_and_wildcard_patterns_are_both_found() {
        let mut registry = Registry::default();
        for (id, pattern) in [
            (1, "order.*"),
            (2, "order.placed"),
            (3, "**"),
            (4, "order.placed"),
        ] {
            registry.insert(subscriber(id, pattern));
        }
        assert_eq!(ids(&registry, "order.placed"), [2, 4, 1, 3]);
        assert_eq!(ids(&registry, "order.shipped"), [1, 3]);
        assert_eq!(ids(&registry, "invoice"), [3]);
        assert_eq!(registry.len(), 4);
    }

    #[test]
    fn removing_leaves_the_others_and_happens_once() {
        let mut registry = Registry::default();
        let literal = subscriber(1, "order.placed");
        let wildcard = subscriber(2, "order.*");
        registry.insert(Arc::clone(&literal));
        registry.insert(Arc::clone(&wildcard));
        registry.insert(subscriber(3, "order.placed"));

        assert!(registry.remove(&literal));
        assert!(!registry.remove(&literal));
        assert!(registry.remove(&wildcard));
        assert_eq!(ids(&registry, "order.placed"), [3]);
        assert_eq!(registry.len(), 1);
        assert_eq!(registry.iter().count(), 1);
    }
}
