//! The one error type of `keel-store`.

use keel_core::StreamId;

use crate::lock::{LockHolder, describe_holder};

/// Everything an event store can answer instead of doing what it was asked.
///
/// [`Error::is_unavailable`] sorts them in two: an [`Error::Unavailable`] store may take
/// the same operation later; every other error answers it for good.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// An append found the stream at another version than expected.
    #[error(
        "stream `{stream}` is at version {actual}, not the expected {expected}: reload and decide again"
    )]
    VersionConflict {
        /// The stream.
        stream: StreamId,
        /// What the append expected, as text (`no stream`, `any`, or a number).
        expected: String,
        /// The stream's actual version.
        actual: u64,
    },

    /// An append carries an event id the store already holds, but not as a repeat of
    /// the same append.
    #[error(
        "event {id} is already stored elsewhere: event ids must be unique; derive them from the intent (EventId::derived)"
    )]
    DuplicateEventId {
        /// The event id.
        id: String,
    },

    /// An append repeats an event id already stored at the same place (stream and
    /// version) but with other content: not a retry of that append, another event under
    /// its id.
    #[error(
        "event {id} is already stored in `{stream}` with other content: an event id names one event; derive ids from what makes the event (EventId::derived)"
    )]
    EventConflict {
        /// The first event id of the append whose stored content differs.
        id: String,
        /// The stream appended to.
        stream: StreamId,
    },

    /// Another holder has the store's writer lock
    /// ([`EventStore::lock_writer`](crate::EventStore::lock_writer)).
    #[error(
        "the store at `{location}` is locked by {}: stop the other orchestrator first; several workers on one store need PostgreSQL scale-out, not built yet",
        describe_holder(.holder)
    )]
    StoreLocked {
        /// The holder, if it has recorded itself yet.
        holder: Option<LockHolder>,
        /// The store: a path, a URL and schema, or `memory`.
        location: String,
    },

    /// Another runner advanced the projection since this one loaded it.
    #[error(
        "projection `{name}` is at checkpoint {actual}, not {expected}: another runner owns it; run one runner per projection"
    )]
    ProjectionConflict {
        /// The projection.
        name: String,
        /// The checkpoint this runner started from.
        expected: u64,
        /// The checkpoint stored.
        actual: u64,
    },

    /// The store could not be reached, or could not take the operation right now: the
    /// server is restarting or unreachable, the connection was lost, the disk or the
    /// server's memory is full, the database is busy or locked by another writer, a lock
    /// or statement timeout ran out. Trying the same operation again later may succeed
    /// ([`Error::is_unavailable`]).
    ///
    /// Nothing of the operation was stored, except when the connection was lost while
    /// its commit was in flight: then the commit may have happened, and the caller cannot
    /// tell. Appends are idempotent by event id, so trying the same append again is safe
    /// either way: it answers `deduplicated: true` if the lost commit happened.
    #[error(
        "the {backend} store is unavailable: {reason}; try the same operation again once it is back"
    )]
    Unavailable {
        /// `sqlite` or `postgres`.
        backend: &'static str,
        /// What the database reported.
        reason: String,
    },

    /// The database refused or failed the operation in a way that trying it again will
    /// not change: a constraint, a damaged or foreign database, a value that does not
    /// encode or decode, a writer that has stopped. Nothing of the failed operation was
    /// stored. What may pass by itself is [`Error::Unavailable`] instead.
    #[error("the {backend} store failed: {reason}")]
    Storage {
        /// `sqlite` or `postgres` (`outbox` for an outbox entry that does not encode).
        backend: &'static str,
        /// What the database reported.
        reason: String,
    },

    /// The database holds a keel schema newer than this build understands.
    #[error(
        "the store's schema is version {found}, newer than the {supported} this build of keel knows: upgrade keel"
    )]
    SchemaTooNew {
        /// The version found.
        found: u32,
        /// The newest version this build knows.
        supported: u32,
    },

    /// The file or database is not a keel store, or is damaged.
    #[error("`{location}` is not a usable keel store: {reason}")]
    NotAStore {
        /// The path or URL.
        location: String,
        /// What is wrong with it.
        reason: String,
    },

    /// One append carries more events or intents than a store takes at once
    /// ([`APPEND_EVENTS_MAX`](crate::APPEND_EVENTS_MAX)).
    #[error(
        "the append batch is full ({capacity} entries): split the append or raise the capacity"
    )]
    BatchTooLarge {
        /// The most entries of one kind an append may carry.
        capacity: usize,
    },

    /// The store has shut down (its writer or connection pool stopped, its head is no
    /// longer followed) and takes no new operations.
    #[error("the store is shut down: it takes no new operations; open it again")]
    ShutDown,

    /// An invalid configuration value, or a value the store cannot encode or decode for
    /// its caller (a snapshot's state, a projection's read model).
    #[error("invalid configuration `{setting}`: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },

    /// An error from `keel-core` (an invalid envelope, a payload too large).
    #[error(transparent)]
    Core(#[from] keel_core::Error),
}

impl Error {
    /// Whether trying the same operation again later may succeed: true for
    /// [`Error::Unavailable`] only. Every other error answers the operation for good (a
    /// conflict, a refusal, a damaged store), and repeating it gets the same answer.
    ///
    /// ```
    /// use keel_store::Error;
    ///
    /// let down = Error::Unavailable {
    ///     backend: "postgres",
    ///     reason: "could not connect to the server: connection refused".into(),
    /// };
    /// let refused = Error::Storage {
    ///     backend: "sqlite",
    ///     reason: "the event at position 7 is damaged".into(),
    /// };
    /// assert!(down.is_unavailable());
    /// assert!(!refused.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Unavailable { .. })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_store_is_worth_trying_again() {
        let unavailable = Error::Unavailable {
            backend: "sqlite",
            reason: "database is locked".to_owned(),
        };
        let storage = Error::Storage {
            backend: "sqlite",
            reason: "UNIQUE constraint failed".to_owned(),
        };
        assert!(unavailable.is_unavailable());
        for error in [
            storage,
            Error::ShutDown,
            Error::BatchTooLarge { capacity: 1 },
        ] {
            assert!(!error.is_unavailable(), "{error:?}");
        }
    }

    #[test]
    fn an_unavailable_store_says_to_try_again() {
        let error = Error::Unavailable {
            backend: "postgres",
            reason: "could not read the head: connection closed".to_owned(),
        };
        assert_eq!(
            error.to_string(),
            "the postgres store is unavailable: could not read the head: connection closed; \
             try the same operation again once it is back"
        );
    }
}
