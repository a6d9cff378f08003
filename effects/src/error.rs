//! The one error type of `keel-effects`.

/// Everything that can go wrong in the runtime itself (as opposed to an effect's
/// failure, which is a [`Failure`](crate::Failure) reported to the reducer).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// The runtime is shutting down or has shut down and takes no new actions.
    #[error("the runtime is shut down: it takes no new actions")]
    ShutDown,

    /// No instance with this id is running.
    #[error("no instance `{instance}` is running: start it with `Runtime::spawn` first")]
    UnknownInstance {
        /// The id that was asked for.
        instance: String,
    },

    /// An instance with this id is already running.
    #[error("instance `{instance}` is already running: pick another id or send to it")]
    DuplicateInstance {
        /// The id that was asked for.
        instance: String,
    },

    /// A bounded queue is full and the configured policy is to refuse.
    #[error(
        "the {queue} is full ({capacity} entries): slow the producer down or raise the capacity"
    )]
    QueueFull {
        /// Which queue.
        queue: &'static str,
        /// Its capacity.
        capacity: usize,
    },

    /// A reducer step emitted more intents than the configured bound.
    #[error(
        "instance `{instance}` emitted {emitted} intents in one step, over the limit of {limit}: split the work or raise `intents_per_step_max`"
    )]
    TooManyIntents {
        /// The instance.
        instance: String,
        /// How many it emitted.
        emitted: usize,
        /// The bound.
        limit: usize,
    },

    /// A request on the bus got no reply in time.
    #[error("no reply to `{request_type}` within {timeout_ms} ms")]
    ReplyTimeout {
        /// The request's type.
        request_type: String,
        /// The timeout that ran out.
        timeout_ms: u64,
    },

    /// A dead letter with this id does not exist (any more).
    #[error("no dead letter with id {id}: list them to see which remain")]
    UnknownDeadLetter {
        /// The id that was asked for.
        id: u64,
    },

    /// An invalid configuration value.
    #[error("invalid configuration `{setting}`: {reason}")]
    InvalidConfig {
        /// The setting.
        setting: &'static str,
        /// What is wrong and what would be right.
        reason: String,
    },

    /// An error from `keel-core` (an invalid envelope, topic or pattern).
    #[error(transparent)]
    Core(#[from] keel_core::Error),

    /// The event store failed (the runtime's outbox, or a store the caller handed in).
    #[error(transparent)]
    Store(#[from] keel_store::Error),
}

impl Error {
    /// Whether trying the same operation again later may succeed: true for a store that
    /// is [unavailable](keel_store::Error::is_unavailable) only. Every other error
    /// answers the operation for good, and repeating it gets the same answer.
    ///
    /// ```
    /// use keel_effects::Error;
    ///
    /// let down = Error::Store(keel_store::Error::Unavailable {
    ///     backend: "postgres",
    ///     reason: "could not connect to the server: connection refused".into(),
    /// });
    /// assert!(down.is_unavailable());
    /// assert!(!Error::ShutDown.is_unavailable());
    /// ```
    pub fn is_unavailable(&self) -> bool {
        matches!(self, Self::Store(store) if store.is_unavailable())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_an_unavailable_store_is_worth_trying_again() {
        let unavailable = Error::Store(keel_store::Error::Unavailable {
            backend: "sqlite",
            reason: "database is locked".to_owned(),
        });
        let storage = Error::Store(keel_store::Error::Storage {
            backend: "sqlite",
            reason: "UNIQUE constraint failed".to_owned(),
        });
        assert!(unavailable.is_unavailable());
        for error in [storage, Error::ShutDown, Error::UnknownDeadLetter { id: 1 }] {
            assert!(!error.is_unavailable(), "{error:?}");
        }
    }

    #[test]
    fn a_store_error_reads_as_the_store_wrote_it() {
        let store = keel_store::Error::Unavailable {
            backend: "postgres",
            reason: "could not read the head: connection closed".to_owned(),
        };
        assert_eq!(Error::from(store.clone()).to_string(), store.to_string());
    }
}
