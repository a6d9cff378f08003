//! The mark a record carries for the store's index of instances.
//!
//! A store keeps, beside the logs, one row per instance: its type, its status and
//! whether it has ended, so that recovery reads only the logs of instances that have
//! not ended and a listing by type and status reads no log at all. The store learns
//! these from the records themselves: a writer (the durable driver, the saga
//! orchestrator) marks the record that starts an instance and every record that changes
//! its status, with three CloudEvents extension attributes ([`KIND_KEY`],
//! [`STATUS_KEY`], [`FINISHED_KEY`]), and the store updates the row in the same
//! transaction as the append (see `keel_store::index`). The index is therefore never
//! ahead of or behind the logs, and it can be rebuilt from them.
//!
//! ```
//! use keel_core::mark::InstanceMark;
//! use keel_core::{CorrelationId, Envelope, EventId, EventType, Timestamp};
//!
//! let id = EventId::record(CorrelationId::of_name("equipment-pump-7"), 1);
//! let event_type = EventType::from_static("keel.instance.record");
//! let mark = InstanceMark::new("equipment", "parked", false);
//! let record = mark
//!     .on(Envelope::builder(id, event_type, "keel/driver", Timestamp::UNIX_EPOCH))
//!     .build()?;
//! assert_eq!(InstanceMark::of(&record), Some(mark));
//! # Ok::<(), keel_core::Error>(())
//! ```

use serde::{Deserialize, Serialize};

use crate::envelope::{Envelope, EnvelopeBuilder, MetaValue};

/// The extension attribute that names the instance's type (`equipment`,
/// `order.fulfillment`).
pub const KIND_KEY: &str = "keelkind";

/// The extension attribute that holds the instance's status after the record
/// (`running`, `compensating`, `needs_intervention`, `completed`, ...).
pub const STATUS_KEY: &str = "keelstatus";

/// The extension attribute that says whether the instance has ended with the record:
/// nothing of it is left to do, so recovery need not read it.
pub const FINISHED_KEY: &str = "keelfinished";

/// What a record says of its instance for the store's index.
#[derive(Debug, Clone, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct InstanceMark {
    /// The instance's type.
    pub kind: String,
    /// Its status after the record, as a lowercase name.
    pub status: String,
    /// Whether it has ended: nothing of it is left to perform.
    pub finished: bool,
}

impl InstanceMark {
    /// A mark of an instance of `kind` in `status`.
    pub fn new(kind: impl Into<String>, status: impl Into<String>, finished: bool) -> Self {
        Self {
            kind: kind.into(),
            status: status.into(),
            finished,
        }
    }

    /// The mark `envelope` carries; `None` unless all three attributes are there, the
    /// kind and status as text and the end as a boolean (or as the text `true` or
    /// `false`, the way CloudEvents' binary mode carries every attribute).
    pub fn of<P>(envelope: &Envelope<P>) -> Option<Self> {
        let metadata = &envelope.metadata;
        let (Some(MetaValue::Text(kind)), Some(MetaValue::Text(status))) =
            (metadata.get(KIND_KEY), metadata.get(STATUS_KEY))
        else {
            return None;
        };
        let finished = match metadata.get(FINISHED_KEY)? {
            MetaValue::Bool(finished) => *finished,
            MetaValue::Text(text) if text == "true" => true,
            MetaValue::Text(text) if text == "false" => false,
            _ => return None,
        };
        Some(Self::new(kind.clone(), status.clone(), finished))
    }

    /// Puts the mark on `envelope`, replacing any mark it had.
    pub fn apply<P>(&self, envelope: &mut Envelope<P>) {
        let metadata = &mut envelope.metadata;
        metadata.insert(KIND_KEY.to_owned(), MetaValue::Text(self.kind.clone()));
        metadata.insert(STATUS_KEY.to_owned(), MetaValue::Text(self.status.clone()));
        metadata.insert(FINISHED_KEY.to_owned(), MetaValue::Bool(self.finished));
    }

    /// `builder` with the mark on the envelope it builds.
    pub fn on<P>(&self, builder: EnvelopeBuilder<P>) -> EnvelopeBuilder<P> {
        builder
            .meta(KIND_KEY, self.kind.as_str())
            .meta(STATUS_KEY, self.status.as_str())
            .meta(FINISHED_KEY, self.finished)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::{EventId, EventType, Timestamp};

    fn event(id: u128) -> Envelope {
        let event_type = EventType::from_static("a.b");
        Envelope::builder(
            EventId::from_u128(id),
            event_type,
            "test",
            Timestamp::UNIX_EPOCH,
        )
        .build()
        .unwrap()
    }

    #[test]
    fn a_mark_put_on_an_envelope_reads_back_and_passes_validation() {
        let mark = InstanceMark::new("saga", "needs_intervention", false);
        let mut envelope = event(1);
        mark.apply(&mut envelope);
        assert_eq!(InstanceMark::of(&envelope), Some(mark.clone()));
        // The keys must be valid CloudEvents extension names in keel-core's rules.
        envelope.validate().unwrap();
        let built = mark.on(Envelope::builder(
            EventId::from_u128(2),
            EventType::from_static("a.b"),
            "test",
            Timestamp::UNIX_EPOCH,
        ));
        assert_eq!(InstanceMark::of(&built.build().unwrap()), Some(mark));
    }

    #[test]
    fn a_mark_missing_an_attribute_or_of_the_wrong_type_is_no_mark() {
        let mut envelope = event(1);
        InstanceMark::new("saga", "running", true).apply(&mut envelope);
        let mut text = envelope.clone();
        let mut set = |value: &str| {
            let value = MetaValue::Text(value.to_owned());
            text.metadata.insert(FINISHED_KEY.to_owned(), value);
            InstanceMark::of(&text).map(|mark| mark.finished)
        };
        // As CloudEvents' binary mode brings it back.
        assert_eq!(set("true"), Some(true));
        assert_eq!(set("false"), Some(false));
        assert_eq!(set("yes"), None);
        let mut missing = envelope.clone();
        missing.metadata.remove(STATUS_KEY);
        assert_eq!(InstanceMark::of(&missing), None);
        let mut number = envelope;
        number
            .metadata
            .insert(KIND_KEY.to_owned(), MetaValue::Integer(1));
        assert_eq!(InstanceMark::of(&number), None);
    }
}
