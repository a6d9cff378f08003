//! The one error type of `keel-core`.
//!
//! Every variant names what was wrong and says what to do about it. Errors are values a
//! caller can match on; nothing in this crate panics on bad input.

/// Everything that can go wrong inside `keel-core`.
///
/// Decoding errors name the offending field so that a message from another system can be
/// fixed at its source; build-time errors of state machines and upcaster chains name the
/// state, event or version involved.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum Error {
    /// A required field is absent from an encoded envelope.
    #[error("field `{field}` is missing: every envelope must carry it")]
    MissingField {
        /// The field's name, as spelled in the encoded form.
        field: &'static str,
    },

    /// A field is present but its value is not acceptable.
    #[error("field `{field}` is invalid: {reason}")]
    InvalidField {
        /// The field's name, as spelled in the encoded form.
        field: &'static str,
        /// Why the value was refused, and what a valid one looks like.
        reason: String,
    },

    /// A payload or an encoded envelope is larger than the configured limit.
    #[error(
        "field `{field}` is {size_bytes} bytes, over the limit of {limit_bytes}: send a reference to the data instead, or raise the limit"
    )]
    TooLarge {
        /// The field that was measured (`data` for the payload, `envelope` for the whole).
        field: &'static str,
        /// The measured size.
        size_bytes: usize,
        /// The configured limit.
        limit_bytes: usize,
    },

    /// The input is not well-formed JSON, or not a JSON object where one is required.
    #[error("input is not a valid JSON object: {reason}")]
    Malformed {
        /// What the parser reported.
        reason: String,
    },

    /// A retry policy is out of bounds.
    #[error("retry policy is invalid: {reason}")]
    InvalidRetryPolicy {
        /// Which bound it broke, with the value given.
        reason: String,
    },

    /// An event type is not lowercase dotted segments.
    #[error(
        "event type `{value}` is invalid: use lowercase dotted segments such as `order.payment.completed` ({reason})"
    )]
    InvalidEventType {
        /// The rejected text.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A topic pattern cannot be compiled.
    #[error("topic pattern `{pattern}` is invalid: {reason}")]
    InvalidPattern {
        /// The rejected pattern.
        pattern: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// An intent id or another structured id could not be parsed from text.
    #[error("id `{value}` is invalid: {reason}")]
    InvalidId {
        /// The rejected text.
        value: String,
        /// What a valid id looks like.
        reason: &'static str,
    },

    /// A timestamp could not be parsed or lies outside the representable range.
    #[error(
        "timestamp `{value}` is invalid: {reason}; use RFC 3339 such as `2026-11-23T06:34:49Z`"
    )]
    InvalidTimestamp {
        /// The rejected text.
        value: String,
        /// Which rule it broke.
        reason: &'static str,
    },

    /// A reducer step emitted more intents than the configured bound.
    #[error(
        "one step emitted more than {limit} intents: split the work over several steps or raise the limit"
    )]
    TooManyIntents {
        /// The bound that was hit.
        limit: usize,
    },

    /// A timer queue held as many timers as its capacity; see
    /// [`QueueFull`](crate::timer::QueueFull), which also hands the timer back.
    #[error(
        "more than {limit} timers would be pending: cancel timers no longer needed or raise the limit"
    )]
    TooManyTimers {
        /// The capacity that was reached.
        limit: usize,
    },

    /// A state machine definition is inconsistent; see [`MachineDefect`](crate::machine::MachineDefect).
    #[error("state machine `{machine}` is invalid: {defect}")]
    InvalidMachine {
        /// The machine's name.
        machine: String,
        /// The first defect found.
        defect: crate::machine::MachineDefect,
    },

    /// An upcaster chain is inconsistent, or a stored version has no path to the current one.
    #[error("cannot upcast `{event_type}` from schema version {version}: {reason}")]
    Upcast {
        /// The event type being lifted.
        event_type: String,
        /// The stored schema version.
        version: u32,
        /// What is missing or what failed.
        reason: String,
    },

    /// A stored event could not be turned into the aggregate's event type.
    #[error("stored event `{event_type}` at version {version} cannot be decoded: {reason}")]
    EventDecode {
        /// The event type of the stored event.
        event_type: String,
        /// Its version in the stream.
        version: u64,
        /// What serde reported.
        reason: String,
    },

    /// Events of a stream were offered out of order or with a gap.
    #[error(
        "stream version gap: expected version {expected}, got {actual}; read the stream from the snapshot's version"
    )]
    VersionGap {
        /// The version that should have come next.
        expected: u64,
        /// The version that came.
        actual: u64,
    },

    /// An instance with this id is running already.
    #[error("instance `{instance}` exists already: pick another id, or send it an event instead")]
    InstanceExists {
        /// The instance's id.
        instance: String,
    },

    /// No instance with this id is held: it was never started, or it finished.
    #[error("instance `{instance}` is not running: it was never started, or it finished")]
    UnknownInstance {
        /// The instance's id.
        instance: String,
    },

    /// A record of an instance's log cannot be encoded or decoded.
    #[error("record {version} of instance `{instance}` is unreadable: {reason}")]
    RecordDecode {
        /// The instance's id.
        instance: String,
        /// The record's version in the instance's log.
        version: u64,
        /// What is wrong with it.
        reason: String,
    },

    /// Replaying an instance's log does not give what the live run recorded.
    #[error("replaying record {version} of instance `{instance}` diverges from the log: {reason}")]
    Diverged {
        /// The instance's id.
        instance: String,
        /// The first record that diverges.
        version: u64,
        /// How it diverges.
        reason: String,
    },
}

/// `Result` with [`Error`] as the error type.
pub type Result<T, E = Error> = std::result::Result<T, E>;
