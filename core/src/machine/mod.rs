//! Declarative state machines that compile into a [`Reducer`](crate::Reducer).

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
}
