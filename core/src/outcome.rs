//! Outcomes: what became of an intent, fed back to the reducer as an action.
//!
//! The driver performs an intent and reports its [`Outcome`] to the same reducer
//! instance. The outcome's [`Cause`] is derived from the intent's id, so the action it
//! becomes (and every intent that action emits) gets the same ids on every replay.

use std::fmt;
use std::time::Duration;

use serde::{Deserialize, Serialize};

use crate::id::{CausationId, EventId, IntentId, TimerId};
use crate::reducer::Cause;

/// The index passed to [`EventId::derived`] to name an intent's outcome: far from the
/// small indices that name the envelopes an intent produces.
const OUTCOME_INDEX: u32 = u32::MAX;

/// What became of one intent.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Outcome {
    /// The intent this reports on.
    pub intent: IntentId,
    /// How many times the effect was attempted, retries included (0 for a fired timer).
    pub attempts: u32,
    /// The result.
    pub result: OutcomeResult,
}

/// The result part of an [`Outcome`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "result", rename_all = "snake_case")]
#[non_exhaustive]
pub enum OutcomeResult {
    /// The effect happened; `value` is what it returned (an HTTP response body, the
    /// stream version after an append, a custom handler's answer), or `null`.
    Succeeded {
        /// The handler's answer.
        value: serde_json::Value,
    },
    /// The effect failed for good: it was refused, or retries were used up. The
    /// failure's kind lets the reducer tell an effect that will never succeed
    /// ([`FailureKind::Permanent`]) from one worth trying again later.
    Failed(Failure),
    /// The effect did not finish in time (after any retries).
    TimedOut,
    /// A scheduled timer came due.
    TimerFired {
        /// The timer's name.
        timer: TimerId,
    },
}

/// Classes of failure: whether trying the effect again could help.
///
/// A handler classifies each [`Failure`] it answers, the [`RetryPolicy`](crate::RetryPolicy)
/// decides on the kind, and the failure reaches the reducer in [`OutcomeResult::Failed`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[non_exhaustive]
pub enum FailureKind {
    /// Might succeed if tried again: a 5xx, a 429, a refused or reset connection.
    Transient,
    /// Did not finish in time; might succeed if tried again. (The runtime reports a
    /// final timeout as [`OutcomeResult::TimedOut`], not as a failure of this class.)
    Timeout,
    /// Not attempted because a protection is engaged (an open circuit, a rate limit, a
    /// shutdown); worth trying again later.
    Unavailable,
    /// Will fail again however often it is tried: a 4xx, a refused address, bad input.
    Permanent,
}

impl FailureKind {
    /// Whether a retry could help.
    pub const fn is_retryable(self) -> bool {
        !matches!(self, Self::Permanent)
    }

    /// [`FailureKind::Permanent`], as a function for serde's `default`.
    const fn permanent() -> Self {
        Self::Permanent
    }
}

impl FailureKind {
    /// Whether the effect may have happened despite a failure of this kind: only a
    /// definite answer from the other side (success, or a permanent refusal) settles
    /// that. A transient failure or a timeout may have come after the effect applied.
    pub const fn is_ambiguous(self) -> bool {
        matches!(self, Self::Transient | Self::Timeout)
    }
}

/// Why an effect failed, and whether trying again could help: what a handler answers
/// instead of a value, what a retry policy decides on, and what a reducer is told.
///
/// Serialised as `{"kind", "reason", "retry_after_ms"?, "maybe_applied"?}`. A stored
/// failure without a kind reads as [`FailureKind::Permanent`] (it was reported as failed
/// for good), and one that names it `class` (saga logs written before the kind was
/// shared) reads as the same kind.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Failure {
    /// The class of failure, which the retry policy decides on.
    #[serde(default = "FailureKind::permanent", alias = "class")]
    pub kind: FailureKind,
    /// What went wrong, for the reducer and for people.
    pub reason: String,
    /// The earliest useful retry, when the other side said (`Retry-After`) or a circuit
    /// breaker knows. Kept to the millisecond when serialised.
    #[serde(
        default,
        rename = "retry_after_ms",
        with = "millis",
        skip_serializing_if = "Option::is_none"
    )]
    pub retry_after: Option<Duration>,
    /// Whether the effect may have happened despite the failure, beyond what `kind`
    /// says: a timeout or a transient failure always may, and so may a permanent one
    /// when the other side acted before it failed (a success too big to read, a
    /// redirect after a POST, a handler that panicked midway). A saga never takes such
    /// a failure as proof that nothing happened.
    #[serde(default, skip_serializing_if = "std::ops::Not::not")]
    pub maybe_applied: bool,
}

/// `Option<Duration>` as whole milliseconds (or `null`).
mod millis {
    use std::time::Duration;

    use serde::{Deserialize, Deserializer, Serializer};

    pub(super) fn serialize<S: Serializer>(
        value: &Option<Duration>,
        serializer: S,
    ) -> Result<S::Ok, S::Error> {
        match value {
            Some(delay) => {
                serializer.serialize_u64(u64::try_from(delay.as_millis()).unwrap_or(u64::MAX))
            }
            None => serializer.serialize_none(),
        }
    }

    pub(super) fn deserialize<'de, D: Deserializer<'de>>(
        deserializer: D,
    ) -> Result<Option<Duration>, D::Error> {
        Ok(Option::<u64>::deserialize(deserializer)?.map(Duration::from_millis))
    }
}

impl Failure {
    /// A failure that might go away: retryable.
    pub fn transient(reason: impl Into<String>) -> Self {
        Self::new(FailureKind::Transient, reason)
    }

    /// A failure that will not go away: not retried.
    pub fn permanent(reason: impl Into<String>) -> Self {
        Self::new(FailureKind::Permanent, reason)
    }

    /// The effect ran out of time.
    pub fn timeout(reason: impl Into<String>) -> Self {
        Self::new(FailureKind::Timeout, reason)
    }

    /// The effect was not attempted because a protection is engaged.
    pub fn unavailable(reason: impl Into<String>) -> Self {
        Self::new(FailureKind::Unavailable, reason)
    }

    /// A failure of `kind`.
    pub fn new(kind: FailureKind, reason: impl Into<String>) -> Self {
        Self {
            kind,
            reason: reason.into(),
            retry_after: None,
            maybe_applied: false,
        }
    }

    /// The same failure, marked as one after which the effect may have happened.
    #[must_use]
    pub fn maybe_applied(mut self) -> Self {
        self.maybe_applied = true;
        self
    }

    /// The same failure with a hint of when to retry.
    #[must_use]
    pub fn retry_after(mut self, delay: Duration) -> Self {
        self.retry_after = Some(delay);
        self
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{:?}: {}", self.kind, self.reason)
    }
}

impl std::error::Error for Failure {}

impl Outcome {
    /// The id of the action this outcome becomes: derived from the intent's id, so a
    /// replay gives it the same id.
    pub fn causation(&self) -> CausationId {
        EventId::derived(self.intent, OUTCOME_INDEX).into()
    }

    /// The cause of the step that reduces this outcome: same workflow, caused by the
    /// outcome.
    pub fn cause(&self) -> Cause {
        Cause::new(self.intent.correlation, self.causation())
    }

    /// Whether the effect succeeded (or the timer fired).
    pub fn is_success(&self) -> bool {
        matches!(
            self.result,
            OutcomeResult::Succeeded { .. } | OutcomeResult::TimerFired { .. }
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_outcome_is_caused_by_its_intent_and_stays_in_its_workflow() {
        let intent = Cause::root(3).intent_id(1);
        let outcome = Outcome {
            intent,
            attempts: 1,
            result: OutcomeResult::TimedOut,
        };
        assert_eq!(outcome.cause().correlation, intent.correlation);
        assert_eq!(outcome.causation(), outcome.clone().causation());
        let other = Outcome {
            intent: Cause::root(3).intent_id(2),
            ..outcome.clone()
        };
        assert_ne!(outcome.causation(), other.causation());
    }

    #[test]
    fn a_failed_outcome_carries_its_failure_kind_through_serde() {
        let outcome = Outcome {
            intent: Cause::root(3).intent_id(1),
            attempts: 4,
            result: OutcomeResult::Failed(Failure::transient("503")),
        };
        let json = serde_json::to_value(&outcome).expect("an outcome serialises");
        assert_eq!(json["result"]["kind"], "transient");
        let back: Outcome = serde_json::from_value(json).expect("and deserialises");
        assert_eq!(back, outcome);
    }

    #[test]
    fn a_failed_outcome_stored_without_a_kind_reads_as_permanent() {
        let intent = Cause::root(3).intent_id(1);
        let old = serde_json::json!({
            "intent": intent,
            "attempts": 1,
            "result": { "result": "failed", "reason": "card declined" },
        });
        let outcome: Outcome = serde_json::from_value(old).expect("an old outcome reads");
        assert_eq!(
            outcome.result,
            OutcomeResult::Failed(Failure::permanent("card declined"))
        );
    }

    #[test]
    fn a_failure_reads_the_shape_saga_logs_stored_before_it_was_shared() {
        let old = serde_json::json!({
            "class": "transient",
            "reason": "503",
            "retry_after_ms": 250,
        });
        let failure: Failure = serde_json::from_value(old).expect("an old failure reads");
        assert_eq!(
            failure,
            Failure::transient("503").retry_after(Duration::from_millis(250))
        );
        let unhinted =
            serde_json::json!({ "class": "timeout", "reason": "slow", "retry_after_ms": null });
        let failure: Failure = serde_json::from_value(unhinted).expect("a null hint reads");
        assert_eq!(failure, Failure::timeout("slow"));
        let json =
            serde_json::to_value(Failure::permanent("no").maybe_applied()).expect("serialises");
        assert_eq!(
            json,
            serde_json::json!({ "kind": "permanent", "reason": "no", "maybe_applied": true })
        );
    }
}
