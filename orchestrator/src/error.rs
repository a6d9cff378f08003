//! The one error type of `keel-orchestrator`.

/// What can go wrong when declaring, starting, steering or recovering sagas.
///
/// A step's failure is not an error: it is an answer the saga reacts to. These are
/// mistakes in a definition, requests the saga cannot honour, and store failures.
#[derive(Debug, Clone, PartialEq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A saga definition is inconsistent; the message names the part to fix.
    #[error("saga definition `{saga_type}` is invalid: {reason}")]
    InvalidDefinition {
        /// The saga type being defined.
        saga_type: String,
        /// What is wrong and how to fix it.
        reason: String,
    },

    /// A name (saga id, saga type, step name) is not acceptable.
    #[error("invalid {what} `{value}`: {reason}")]
    InvalidName {
        /// Which kind of name.
        what: &'static str,
        /// The value refused (cut to 80 characters).
        value: String,
        /// What a valid one looks like.
        reason: &'static str,
    },

    /// No definition is registered for this saga type.
    #[error("no saga type `{saga_type}` is registered: add its definition to the orchestrator")]
    UnknownSagaType {
        /// The type asked for.
        saga_type: String,
    },

    /// A saga with this id already exists (running or finished).
    #[error("saga `{saga}` already exists: saga ids are unique, pick another")]
    SagaExists {
        /// The id.
        saga: String,
    },

    /// No saga with this id is known (or, to an orchestrator, none is running).
    #[error("no saga `{saga}` is running or recorded here: check the id with `status` or `list`")]
    UnknownSaga {
        /// The id.
        saga: String,
    },

    /// The saga is not in a state where the request makes sense.
    #[error("saga `{saga}` cannot {request}: {reason}")]
    NotAllowed {
        /// The id.
        saga: String,
        /// What was asked (`cancel`, `retry`, `skip`, `resolve`).
        request: &'static str,
        /// Why not, and what would work instead.
        reason: String,
    },

    /// A stored saga record could not be read.
    #[error("saga log of `{saga}` is unreadable at version {version}: {reason}")]
    CorruptLog {
        /// The saga whose stream holds the record.
        saga: String,
        /// The record's version in that stream.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// A value is bigger than a saga record may hold.
    #[error(
        "the {what} takes {size_bytes} bytes as JSON, more than the {limit_bytes} a saga record holds for it: pass a reference to the data (an id, a URL) instead"
    )]
    TooLarge {
        /// What was too big: `saga input`.
        what: &'static str,
        /// Its size as compact JSON.
        size_bytes: u64,
        /// The most it may take.
        limit_bytes: u64,
    },

    /// The saga has not come to rest, and no orchestrator here runs it: waiting for it
    /// would never end.
    #[error(
        "saga `{saga}` is {status} in the store, but this orchestrator does not run it: it could not be rebuilt (see `Recovered::failed` and the log at start-up)"
    )]
    NotRunning {
        /// The id.
        saga: String,
        /// Its status as last recorded.
        status: &'static str,
    },

    /// The orchestrator has shut down and takes no new requests.
    #[error("the orchestrator is shut down: it takes no new requests")]
    ShutDown,

    /// A bounded table or queue is full.
    #[error("the {what} is full ({capacity} entries): wait for sagas to finish or raise the limit")]
    Full {
        /// Which one.
        what: &'static str,
        /// Its capacity.
        capacity: usize,
    },

    /// The event store failed ([`keel_store::Error::is_unavailable`] says whether
    /// trying again may help).
    #[error(transparent)]
    Store(#[from] keel_store::Error),

    /// A keel-core value was refused.
    #[error(transparent)]
    Core(#[from] keel_core::Error),
}
