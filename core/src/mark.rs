//! The mark a record carries for the store's index of instances.
//!
//! A store keeps, beside the logs, one row per instance: its type, its status and
//! whether it has ended, so that recovery reads only the logs of instances that have
//! not ended and a listing by type and status reads no log at all. The store learns
//! these from the records themselves: a writer marks the record that starts an instance
//! and every record that changes its status, with three CloudEvents extension
//! attributes ([`KIND`], [`STATUS`], [`FINISHED`]), and the store updates the row in the
//! same transaction as the append. The index is therefore never ahead of or behind the
//! logs, and it can be rebuilt from them.
//!
//! ```
//! use keel_core::mark::InstanceMark;
//! use keel_core::{CorrelationId, Envelope, EventId, EventType, Timestamp};
//!
//! let id = EventId::record(CorrelationId::of_name("equipment-pump-7"), 1);
//! let event_type = EventType::from_static("keel.instance.record");
//! let mut record = Envelope::builder(id, event_type, "keel/driver", Timestamp::UNIX_EPOCH)
//!     .build()
//!     .unwrap();
//! let mark = InstanceMark::new("equipment", "parked", false);
//! mark.apply(&mut record);
//! assert!(record.validate().is_ok(), "the keys are valid extension names");
//! assert_eq!(InstanceMark::of(&record), Some(mark));
//! ```

use crate::envelope::{Envelope, MetaValue};

/// The extension attribute that names the instance's type (`equipment`,
/// `order.fulfillment`).
pub const KIND: &str = "keelkind";

/// The extension attribute that holds the instance's status after the record
/// (`running`, `compensating`, `needs_intervention`, `completed`, ...).
pub const STATUS: &str = "keelstatus";

/// The extension attribute that says whether the instance has ended with the record:
/// nothing of it is left to do, so recovery need not read it.
pub const FINISHED: &str = "keelfinished";

/// What a record says of its instance for the store's index.
#[derive(Debug, Clone, PartialEq, Eq)]
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

    /// Puts the mark on `record`, replacing any other.
    pub fn apply(&self, record: &mut Envelope) {
        let metadata = &mut record.metadata;
        metadata.insert(KIND.to_owned(), MetaValue::Text(self.kind.clone()));
        metadata.insert(STATUS.to_owned(), MetaValue::Text(self.status.clone()));
        metadata.insert(FINISHED.to_owned(), MetaValue::Bool(self.finished));
    }

    /// The mark `record` carries, if it carries a whole one.
    pub fn of(record: &Envelope) -> Option<Self> {
        let text = |key| match record.metadata.get(key) {
            Some(MetaValue::Text(text)) => Some(text.clone()),
            _ => None,
        };
        let finished = match record.metadata.get(FINISHED) {
            Some(MetaValue::Bool(finished)) => *finished,
            _ => return None,
        };
        Some(Self {
            kind: text(KIND)?,
            status: text(STATUS)?,
            finished,
        })
    }
}
