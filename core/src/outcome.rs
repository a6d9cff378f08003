//! Outcomes: what became of an intent, fed back to the reducer as an action.
//!
//! The driver performs an intent and reports its [`Outcome`] to the same reducer
//! instance. The outcome's [`Cause`] is derived from the intent's id, so the action it
//! becomes (and every intent that action emits) gets the same ids on every replay.

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
    /// The effect failed for good: it was refused, or retries were used up.
    Failed {
        /// What went wrong, for the reducer to decide on and for people to read.
        reason: String,
    },
    /// The effect did not finish in time (after any retries).
    TimedOut,
    /// A scheduled timer came due.
    TimerFired {
        /// The timer's name.
        timer: TimerId,
    },
}

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
}
