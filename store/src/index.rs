//! The index of instances: which streams hold workflow instances, of what kind, in what
//! status, and whether they have ended, kept by every backend in the transaction of the
//! append that changes it.
//!
//! The mark lives on the record. A writer (the saga orchestrator, the durable driver)
//! puts an [`InstanceMark`] on an event it appends, as three envelope metadata entries
//! (CloudEvents extension attributes, so they travel with the event wherever it goes):
//! [`KIND_KEY`] (text), [`STATUS_KEY`] (text) and [`FINISHED_KEY`] (a boolean). When an
//! append carries marked events, the last marked one sets the stream's row of the index
//! ([`InstanceEntry`]); an append without marks leaves the row as it is, and an append
//! that is refused or deduplicated changes nothing. So the index is exactly what the
//! stored marks say, and recovery can read the unfinished instances
//! ([`EventStore::read_unfinished`]) instead of the whole history.
//!
//! Records written before the index existed carry no marks: their streams are absent
//! from it until a marked event is appended to them. Callers that must also see those
//! (an orchestrator opening a store written by an older keel) still read them with
//! [`EventStore::read_all`] once.
//!
//! ```
//! use keel_core::{Envelope, EventId, EventType, Timestamp};
//! use keel_store::index::InstanceMark;
//!
//! let mark = InstanceMark::new("saga", "compensating", false);
//! let event = mark
//!     .on(Envelope::builder(
//!         EventId::from_u128(1),
//!         EventType::from_static("order.payment.refused"),
//!         "orders",
//!         Timestamp::UNIX_EPOCH,
//!     ))
//!     .build()?;
//! assert_eq!(InstanceMark::of(&event), Some(mark));
//! # Ok::<(), keel_core::Error>(())
//! ```
//!
//! [`EventStore::read_unfinished`]: crate::EventStore::read_unfinished
//! [`EventStore::read_all`]: crate::EventStore::read_all

use keel_core::{Envelope, StreamId, Timestamp};
use serde::{Deserialize, Serialize};

use crate::READ_LIMIT_MAX;

pub use keel_core::mark::{FINISHED_KEY, InstanceMark, KIND_KEY, STATUS_KEY};

/// The last marked event of an append's `events`: its offset in the batch and its mark.
/// Only that one counts: the index keeps where an instance stands after the append.
pub(crate) fn last_mark<P>(events: &[Envelope<P>]) -> Option<(usize, InstanceMark)> {
    events
        .iter()
        .enumerate()
        .rev()
        .find_map(|(offset, event)| InstanceMark::of(event).map(|mark| (offset, mark)))
}

/// One stream's row of the index: what its last marked event said, and where it is.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct InstanceEntry {
    /// The stream holding the instance.
    pub stream: StreamId,
    /// Its kind, from the last marked event.
    pub kind: String,
    /// Its status, from the last marked event.
    pub status: String,
    /// Whether it has ended, from the last marked event.
    pub finished: bool,
    /// The version of the last marked event (later unmarked events do not move it).
    pub version: u64,
    /// The time of the last marked event, as its producer stated it.
    pub updated: Timestamp,
    /// The position of the last marked event.
    pub position: u64,
}

/// Which rows [`EventStore::instances`](crate::EventStore::instances) returns: a page of
/// the index, ordered by stream, filtered by kind, status and whether finished.
///
/// ```
/// use keel_store::index::InstanceQuery;
///
/// let page = InstanceQuery::unfinished().kind("saga").limit(1000);
/// let next = page.clone().after("saga-0042");
/// # let _ = next;
/// ```
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct InstanceQuery {
    /// Only instances of this kind.
    pub kind: Option<String>,
    /// Only instances in this status.
    pub status: Option<String>,
    /// Only finished (`Some(true)`) or unfinished (`Some(false)`) instances.
    pub finished: Option<bool>,
    /// Only streams ordered after this one (byte order): the last stream of the
    /// previous page, for keyset paging.
    pub after: Option<StreamId>,
    /// The most rows returned; capped at [`READ_LIMIT_MAX`].
    pub limit: usize,
}

impl Default for InstanceQuery {
    fn default() -> Self {
        Self::all()
    }
}

impl InstanceQuery {
    /// Every instance, finished or not, up to [`READ_LIMIT_MAX`] of them.
    pub fn all() -> Self {
        Self {
            kind: None,
            status: None,
            finished: None,
            after: None,
            limit: READ_LIMIT_MAX,
        }
    }

    /// Instances that have not ended.
    pub fn unfinished() -> Self {
        Self {
            finished: Some(false),
            ..Self::all()
        }
    }

    /// Instances that have ended.
    pub fn finished() -> Self {
        Self {
            finished: Some(true),
            ..Self::all()
        }
    }

    /// Only instances of `kind`.
    pub fn kind(mut self, kind: impl Into<String>) -> Self {
        self.kind = Some(kind.into());
        self
    }

    /// Only instances in `status`.
    pub fn status(mut self, status: impl Into<String>) -> Self {
        self.status = Some(status.into());
        self
    }

    /// Only streams after `stream`, in byte order.
    pub fn after(mut self, stream: impl Into<StreamId>) -> Self {
        self.after = Some(stream.into());
        self
    }

    /// At most `limit` rows (capped at [`READ_LIMIT_MAX`]).
    pub fn limit(mut self, limit: usize) -> Self {
        self.limit = limit;
        self
    }

    /// The limit as the backends apply it.
    pub(crate) fn capped_limit(&self) -> usize {
        self.limit.min(READ_LIMIT_MAX)
    }

    /// Whether `entry` passes the filters (not the paging): the rule the memory store
    /// applies, and the SQL of the durable ones spells out.
    pub fn matches(&self, entry: &InstanceEntry) -> bool {
        self.kind.as_ref().is_none_or(|kind| *kind == entry.kind)
            && self.status.as_ref().is_none_or(|s| *s == entry.status)
            && self
                .finished
                .is_none_or(|finished| finished == entry.finished)
            && self
                .after
                .as_ref()
                .is_none_or(|after| entry.stream > *after)
    }
}

/// The stream a purged event's id is kept under: the empty one, which no instance of
/// keel uses (do not give an instance an empty stream id). Its
/// content is gone, so a repeat of it cannot be told from a reuse of its id, and a
/// purged instance may not be started again as if it were still there: an append
/// carrying a purged id is refused with [`Error::DuplicateEventId`], never answered as
/// a repeat (a trimmed id, in contrast, is judged by its place).
///
/// [`Error::DuplicateEventId`]: crate::Error::DuplicateEventId
pub(crate) const PURGED_STREAM: &str = "";

/// How many events of history each unfinished instance must be set against for
/// recovery to read through the index: below one in this many, a plain pass over the
/// history in position order (sequential reads) is as fast as fetching each unfinished
/// log through the index (a seek per stream).
pub const HISTORY_PER_UNFINISHED: u64 = 8;

/// Whether a recovery should read the unfinished instances (of `kind`) through
/// [`EventStore::read_unfinished`] rather than the whole history with
/// [`EventStore::read_all`]: the store has kept its index from its first event
/// ([`EventStore::unindexed_head`] is 0), and the unfinished instances are fewer than
/// one per [`HISTORY_PER_UNFINISHED`] events. Both paths give the same recovery; this
/// picks the faster. Reads at most head ÷ [`HISTORY_PER_UNFINISHED`] index rows (an
/// empty store takes the plain pass, which reads nothing).
///
/// # Errors
///
/// As the store's reads.
///
/// [`EventStore::read_unfinished`]: crate::EventStore::read_unfinished
/// [`EventStore::read_all`]: crate::EventStore::read_all
/// [`EventStore::unindexed_head`]: crate::EventStore::unindexed_head
pub async fn recover_through_index(
    store: &dyn crate::EventStore,
    kind: Option<&str>,
) -> Result<bool, crate::Error> {
    if store.unindexed_head().await? > 0 {
        return Ok(false);
    }
    let head = store.head().await?;
    // The index pays when unfinished × HISTORY_PER_UNFINISHED < head: count up to the
    // first that breaks it, and no further.
    let enough = head.div_ceil(HISTORY_PER_UNFINISHED);
    let mut query = InstanceQuery::unfinished();
    query.kind = kind.map(str::to_owned);
    let mut counted = 0_u64;
    loop {
        let left = usize::try_from(enough - counted).unwrap_or(usize::MAX);
        query.limit = left.min(READ_LIMIT_MAX);
        if query.limit == 0 {
            return Ok(false);
        }
        let page = store.instances(&query).await?;
        counted += page.len() as u64;
        let Some(last) = page.last() else {
            return Ok(true);
        };
        query.after = Some(last.stream.clone());
    }
}

#[cfg(test)]
mod tests {
    use keel_core::{EventId, EventType};

    use super::*;

    fn event(id: u128) -> Envelope {
        Envelope::builder(
            EventId::from_u128(id),
            EventType::from_static("a.b"),
            "test",
            Timestamp::UNIX_EPOCH,
        )
        .build()
        .unwrap()
    }

    #[test]
    fn the_last_marked_event_of_a_batch_counts() {
        let mut batch = vec![event(1), event(2), event(3)];
        InstanceMark::new("saga", "running", false).apply(&mut batch[0]);
        InstanceMark::new("saga", "completed", true).apply(&mut batch[1]);
        let (offset, mark) = last_mark(&batch).unwrap();
        assert_eq!((offset, mark.status.as_str()), (1, "completed"));
        assert_eq!(last_mark(&[event(4)]), None);
    }

    #[test]
    fn a_query_filters_by_kind_status_finished_and_after() {
        let entry = InstanceEntry {
            stream: StreamId::from("s2"),
            kind: "saga".to_owned(),
            status: "running".to_owned(),
            finished: false,
            version: 1,
            updated: Timestamp::UNIX_EPOCH,
            position: 1,
        };
        assert!(InstanceQuery::unfinished().kind("saga").matches(&entry));
        assert!(
            InstanceQuery::all()
                .status("running")
                .after("s1")
                .matches(&entry)
        );
        assert!(!InstanceQuery::finished().matches(&entry));
        assert!(!InstanceQuery::all().kind("equipment").matches(&entry));
        assert!(!InstanceQuery::all().status("completed").matches(&entry));
        assert!(!InstanceQuery::all().after("s2").matches(&entry));
        assert_eq!(
            InstanceQuery::all().limit(usize::MAX).capped_limit(),
            READ_LIMIT_MAX
        );
    }
}
