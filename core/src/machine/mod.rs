//! Declarative state machines that compile into a [`Reducer`](crate::Reducer).
//!
//! A workflow author declares states, the events each one reacts to, optional guards
//! and context updates, and the [`Effect`]s to emit on entry, on exit and on a
//! transition. [`MachineBuilder::build`] checks the definition once and compiles it into
//! a [`Machine`], which is a [`Reducer`](crate::Reducer) over
//! [`MachineState`]`{ state, context }` and [`Input`](crate::Input)`<E>`.
//!
//! # Semantics
//!
//! - On an event, the current state's transitions on that event are tried in declaration
//!   order; the first whose guard passes, or that has no guard, fires. Guarded
//!   transitions therefore come first and the unguarded fallback last; the build rejects
//!   a guarded transition declared after an unguarded one, since it could never fire.
//! - Firing emits, in this order: the exit effects of the source, the transition's own
//!   effects (after its context updates have run), the entry effects of the target. A
//!   self-transition declared with `.to(same_state)` exits and re-enters its state; one
//!   declared with [`.stay()`](TransitionBuilder::stay) is internal: only its updates
//!   and own effects run.
//! - An event with no enabled transition, or arriving in a terminal state, changes
//!   nothing and emits nothing. So does any event when the state is not one the machine
//!   declares (a hand-built or stale [`MachineState`]): reducing is total.
//! - Intent ids come from the action's [`Cause`](crate::Cause), numbered from zero
//!   within the step.
//! - A new instance starts with [`Machine::start`], which runs the initial state's entry
//!   effects; [`Machine::initial_state`] gives the same state without them.
//!
//! # Checks at build time
//!
//! [`MachineBuilder::build`] returns the first [`MachineDefect`] found, searching in a
//! fixed order: a state declared twice; an initial state, then transition targets,
//! never declared; a terminal state with a transition; two transitions on the same
//! event under the same guard; a shadowed transition; a state unreachable from the
//! initial one. Within each check, states and transitions are visited in declaration
//! order.
//!
//! # Example
//!
//! ```
//! use keel_core::machine::{Effect, Guard, Machine};
//! use keel_core::{Cause, Input, IntentKind, Reducer, TimerId, Timestamp};
//!
//! #[derive(Clone, Copy, PartialEq, Eq, Debug)]
//! enum Light { Red, Green, Yellow, Off }
//!
//! #[derive(Clone, Copy, PartialEq, Eq, Debug)]
//! enum Signal { Tick, PowerCut }
//!
//! #[derive(Clone, Debug, PartialEq, Default)]
//! struct Road { cars_waiting: u32, cycles: u32 }
//!
//! let machine: Machine<Light, Signal, Road> = Machine::builder("traffic_light", Light::Red)
//!     .state(Light::Red, |s| s
//!         .on_entry(Effect::timer_after("tick", 30_000))
//!         .on_exit(Effect::cancel_timer("tick"))
//!         .on(Signal::Tick).to(Light::Green)
//!         .on(Signal::PowerCut).to(Light::Off))
//!     .state(Light::Green, |s| s
//!         .on(Signal::Tick)
//!             .when(Guard::new("cars_waiting", |road: &Road, _| road.cars_waiting > 0))
//!             .to(Light::Yellow)
//!         .on(Signal::Tick).to(Light::Green)
//!         .on(Signal::PowerCut).to(Light::Off))
//!     .state(Light::Yellow, |s| s
//!         .on(Signal::Tick).update(|road: &mut Road, _| road.cycles += 1).to(Light::Red)
//!         .on(Signal::PowerCut).to(Light::Off))
//!     .terminal(Light::Off)
//!     .build()?;
//!
//! // Creating the instance runs Red's entry effect: the first tick is armed.
//! let start = Input::new(Cause::root(1), Timestamp::from_unix_millis(0), ());
//! let (state, intents) = machine.start(Road::default(), start);
//! assert_eq!(state.state, Light::Red);
//! assert_eq!(intents[0].kind, IntentKind::ScheduleTimer {
//!     timer: TimerId::from_static("tick"),
//!     due: Timestamp::from_unix_millis(30_000),
//! });
//!
//! // The timer fires: Red exits (cancelling "tick") and Green is entered.
//! let tick = Input::new(Cause::root(2), Timestamp::from_unix_millis(30_000), Signal::Tick);
//! let (state, intents) = machine.reduce(state, tick);
//! assert_eq!((state.state, intents.len()), (Light::Green, 1));
//!
//! // Off is terminal: once there, every event is ignored.
//! let cut = Input::new(Cause::root(3), Timestamp::from_unix_millis(31_000), Signal::PowerCut);
//! let (state, _) = machine.reduce(state, cut);
//! assert!(machine.is_terminal(state.state));
//! assert!(machine.to_mermaid().contains("Green --> Yellow : Tick [cars_waiting]"));
//! # Ok::<(), keel_core::Error>(())
//! ```

use std::fmt::Debug;

mod build;
mod check;
mod compiled;
mod durable;
mod effect;
mod export;
#[cfg(test)]
mod fixture;
mod reduce;

pub use build::{MachineBuilder, StateBuilder, TransitionBuilder};
pub use compiled::{Machine, MachineState};
pub use durable::{DurableMachine, DurableMachineState, MachineInput};
pub use effect::{Effect, Guard};

/// A defect found when a state machine definition is built.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[non_exhaustive]
pub enum MachineDefect {
    /// A transition names a state that was never declared.
    #[error("state `{state}` is used but never declared: declare it with `.state(..)`")]
    UnknownState {
        /// The undeclared state.
        state: String,
    },
    /// The same state is declared twice.
    #[error("state `{state}` is declared twice: merge the two declarations")]
    DuplicateState {
        /// The state.
        state: String,
    },
    /// No chain of transitions leads from the initial state to this one.
    #[error(
        "state `{state}` cannot be reached from the initial state `{initial}`: add a transition into it or remove it"
    )]
    UnreachableState {
        /// The unreachable state.
        state: String,
        /// The initial state.
        initial: String,
    },
    /// Two transitions leave the same state on the same event under the same guard, so
    /// which one fires would be ambiguous.
    #[error(
        "state `{state}` has two transitions on `{event}` with guard `{guard}`: give them different guards"
    )]
    AmbiguousTransition {
        /// The source state.
        state: String,
        /// The event.
        event: String,
        /// The guard's name, or `always` for unguarded transitions.
        guard: String,
    },
    /// A state marked terminal has an outgoing transition.
    #[error(
        "terminal state `{state}` has a transition on `{event}`: a terminal state must have none"
    )]
    TerminalWithTransitions {
        /// The terminal state.
        state: String,
        /// The event of the offending transition.
        event: String,
    },
    /// A guarded transition is declared after an unguarded one on the same event, which
    /// always fires first, so the guarded one could never fire.
    #[error(
        "state `{state}` has a transition on `{event}` with guard `{guard}` after an unguarded one, so it can never fire: declare it before the unguarded transition"
    )]
    ShadowedTransition {
        /// The source state.
        state: String,
        /// The event.
        event: String,
        /// The name of the guard that can never be consulted.
        guard: String,
    },
}

/// How a state or event is named in messages and exports: its `Debug` form, without the
/// quotes that `&'static str` labels would otherwise carry.
fn label(value: &dyn Debug) -> String {
    let text = format!("{value:?}");
    match text
        .strip_prefix('"')
        .and_then(|inner| inner.strip_suffix('"'))
    {
        // An empty string keeps its quotes, so that every label is visible.
        Some(inner) if !inner.is_empty() => inner.to_owned(),
        _ => text,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn enum_labels_are_their_debug_form() {
        assert_eq!(label(&Some(2)), "Some(2)");
        assert_eq!(label(&Option::<u8>::None), "None");
    }

    #[test]
    fn string_labels_lose_their_quotes_unless_empty() {
        assert_eq!(label(&"payment_pending"), "payment_pending");
        assert_eq!(label(&""), "\"\"");
    }

    #[test]
    fn defect_messages_say_what_to_do() {
        let defect = MachineDefect::ShadowedTransition {
            state: "Green".into(),
            event: "Tick".into(),
            guard: "cars_waiting".into(),
        };
        assert!(
            defect
                .to_string()
                .ends_with("before the unguarded transition")
        );
    }
}
