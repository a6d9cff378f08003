//! The reducer: `reduce(state, action) -> (state, Vec<Intent>)`.
//!
//! A workflow is a [`Reducer`]: a pure function from the current state and one action to
//! the next state and the intents to carry out. Two entry points compute the same thing:
//!
//! - [`Reducer::reduce`] takes the state by value and returns a fresh `Vec`: the shape to
//!   read, test and reason about;
//! - [`Reducer::reduce_into`] updates the state in place and pushes intents into a buffer
//!   the caller reuses, so a hot loop allocates nothing per action.
//!
//! Implementors write `reduce_into`; `reduce` is derived from it, so the two paths cannot
//! drift apart (a property test in `tests/` checks it for every reducer shipped).

use serde::{Deserialize, Serialize};

use crate::id::{CausationId, CorrelationId, IntentId};
use crate::intent::{Intent, IntentKind};
use crate::time::Timestamp;

/// A pure state machine over actions that emits intents.
///
/// Implementations must be deterministic: the same state and action give the same next
/// state and the same intents, with no clock, randomness or I/O. Everything that varies
/// (the time, ids) arrives inside the action.
///
/// ```
/// use keel_core::{Cause, Input, Intent, Reducer};
///
/// struct Counter;
///
/// impl Reducer for Counter {
///     type State = u64;
///     type Action = Input<u64>;
///
///     fn reduce_into(&self, state: &mut u64, action: Input<u64>, _intents: &mut Vec<Intent>) {
///         *state += action.body;
///     }
/// }
///
/// let (state, intents) = Counter.reduce(1, Input::new(Cause::root(7), Default::default(), 2));
/// assert_eq!((state, intents.len()), (3, 0));
/// ```
pub trait Reducer {
    /// The state the reducer evolves.
    type State;
    /// What it reacts to: commands, events, effect outcomes, fired timers.
    type Action;

    /// Applies `action` to `state` in place and appends the resulting intents to
    /// `intents`, leaving what the buffer already held untouched.
    fn reduce_into(&self, state: &mut Self::State, action: Self::Action, intents: &mut Vec<Intent>);

    /// Applies `action` to `state`, returning the next state and the intents it emitted.
    fn reduce(&self, state: Self::State, action: Self::Action) -> (Self::State, Vec<Intent>) {
        let mut state = state;
        let mut intents = Vec::new();
        self.reduce_into(&mut state, action, &mut intents);
        (state, intents)
    }
}

/// `reduce(state, action) -> (state, Vec<Intent>)` as a free function.
pub fn reduce<R: Reducer>(
    reducer: &R,
    state: R::State,
    action: R::Action,
) -> (R::State, Vec<Intent>) {
    reducer.reduce(state, action)
}

/// The ids of the step being reduced, from which every intent id of the step derives.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
pub struct Cause {
    /// The workflow the step belongs to.
    pub correlation: CorrelationId,
    /// The action being reduced (usually the id of its envelope).
    pub causation: CausationId,
}

impl Cause {
    /// The cause of a step whose action has id `causation` within `correlation`.
    pub const fn new(correlation: CorrelationId, causation: CausationId) -> Self {
        Self {
            correlation,
            causation,
        }
    }

    /// The first step of a workflow, whose correlation and causation ids are the same.
    pub const fn root(id: u128) -> Self {
        Self::new(CorrelationId::from_u128(id), CausationId::from_u128(id))
    }

    /// The id of the intent at `position` within this step.
    pub const fn intent_id(&self, position: u32) -> IntentId {
        IntentId::new(self.correlation, self.causation, position)
    }

    /// An [`Emitter`] that appends this step's intents to `intents`, numbering them from
    /// zero whatever the buffer already holds.
    pub fn emitter(self, intents: &mut Vec<Intent>) -> Emitter<'_> {
        let start = intents.len();
        Emitter {
            cause: self,
            intents,
            start,
        }
    }
}

/// An action together with what every action carries: its cause and the time it
/// happened.
///
/// Time is an input: a reducer reads `now` from here, never from a clock.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Input<T> {
    /// The ids the step's intents derive from.
    pub cause: Cause,
    /// The time of the action, as decided by the driver.
    pub now: Timestamp,
    /// The action itself.
    pub body: T,
}

impl<T> Input<T> {
    /// Wraps an action body with its cause and time.
    pub const fn new(cause: Cause, now: Timestamp, body: T) -> Self {
        Self { cause, now, body }
    }
}

/// Appends the intents of one step to a buffer, giving each its stable id.
///
/// Ids are numbered by position within the step, so the same step emits the same ids
/// whether the buffer was empty or reused.
#[derive(Debug)]
pub struct Emitter<'a> {
    cause: Cause,
    intents: &'a mut Vec<Intent>,
    start: usize,
}

impl Emitter<'_> {
    /// Appends an intent and returns its id.
    pub fn emit(&mut self, kind: impl Into<IntentKind>) -> IntentId {
        // A step emitting four billion intents is far past any bound the runtime
        // enforces; saturating keeps this total rather than panicking.
        let position = u32::try_from(self.intents.len() - self.start).unwrap_or(u32::MAX);
        let id = self.cause.intent_id(position);
        self.intents.push(Intent {
            id,
            kind: kind.into(),
        });
        id
    }

    /// How many intents this step has emitted so far.
    pub fn count(&self) -> usize {
        self.intents.len() - self.start
    }

    /// The cause the ids derive from.
    pub const fn cause(&self) -> Cause {
        self.cause
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::id::TimerId;

    struct Ticker;

    impl Reducer for Ticker {
        type State = u32;
        type Action = Input<()>;

        fn reduce_into(&self, state: &mut u32, action: Input<()>, intents: &mut Vec<Intent>) {
            *state += 1;
            let mut out = action.cause.emitter(intents);
            out.emit(IntentKind::ScheduleTimer {
                timer: TimerId::from_static("tick"),
                due: action.now.plus_millis(1_000),
            });
            out.emit(IntentKind::CancelTimer {
                timer: TimerId::from_static("tock"),
            });
        }
    }

    #[test]
    fn intent_ids_count_from_zero_within_each_step_even_in_a_reused_buffer() {
        let mut state = 0;
        let mut buffer = Vec::new();
        Ticker.reduce_into(
            &mut state,
            Input::new(Cause::root(1), Timestamp::UNIX_EPOCH, ()),
            &mut buffer,
        );
        Ticker.reduce_into(
            &mut state,
            Input::new(Cause::root(2), Timestamp::UNIX_EPOCH, ()),
            &mut buffer,
        );
        let positions: Vec<u32> = buffer.iter().map(|i| i.id.position).collect();
        assert_eq!(positions, [0, 1, 0, 1]);
        assert_eq!(buffer[2].id.causation, CausationId::from_u128(2));
    }

    #[test]
    fn both_paths_agree_on_a_simple_reducer() {
        let action = Input::new(Cause::root(5), Timestamp::from_unix_millis(10), ());
        let (state, intents) = Ticker.reduce(41, action.clone());
        let mut in_place = 41;
        let mut buffer = Vec::new();
        Ticker.reduce_into(&mut in_place, action, &mut buffer);
        assert_eq!((state, intents), (in_place, buffer));
    }
}
