//! The compiled machine: tables indexed by position, plus introspection.
//!
//! States live in a `Vec` in declaration order. Every transition stores its target's
//! index and, precomputed, the whole list of effects firing it emits (the source's exit
//! effects, its own, the target's entry effects). Reducing an action is then a scan of
//! the states for the current one, a scan of its transitions, and one pass over that
//! list: no hashing, no allocation, no string work.

use std::fmt::Debug;

use serde::{Deserialize, Serialize};

use super::effect::{Effect, Guard};

/// A state machine checked and compiled by [`MachineBuilder::build`](super::MachineBuilder::build).
///
/// `S` labels the states, `E` is the event type and `C` the extended-state context
/// (counters, ids, anything the guards and updates read). The machine is a
/// [`Reducer`](crate::Reducer) over [`MachineState`] and [`Input<E>`](crate::Input);
/// see the [module docs](super) for its semantics.
#[derive(Debug, Clone)]
pub struct Machine<S, E, C = ()> {
    pub(super) name: String,
    /// Index of the initial state in `states`.
    pub(super) initial: usize,
    pub(super) states: Table<S, E, C>,
}

/// The state of one machine instance: the current state and the context.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct MachineState<S, C = ()> {
    /// The current state.
    pub state: S,
    /// The extended state that guards read and updates change.
    pub context: C,
}

/// One declared state. `T` is how transitions name their target: the label `S` while
/// building, a [`Target`] once compiled.
#[derive(Debug, Clone)]
pub(super) struct StateDef<S, T, E, C> {
    pub(super) label: S,
    pub(super) terminal: bool,
    pub(super) entry: Vec<Effect>,
    pub(super) exit: Vec<Effect>,
    pub(super) transitions: Vec<Transition<T, E, C>>,
}

/// The compiled states, in declaration order, with transitions naming a [`Target`].
pub(super) type Table<S, E, C> = Vec<StateDef<S, Target, E, C>>;

/// Where a compiled transition leads and what firing it emits.
#[derive(Debug, Clone)]
pub(super) struct Target {
    /// The target's index in the table.
    pub(super) index: usize,
    /// The source's exit effects, the transition's own effects, then the target's entry
    /// effects. Effects are templates that do not read the context, so emitting them in
    /// one pass, after the context updates, gives the documented order.
    pub(super) emits: Box<[Effect]>,
}

/// The index of the state labelled `state`, if it is declared.
pub(super) fn position<S: Eq, T, E, C>(states: &[StateDef<S, T, E, C>], state: S) -> Option<usize> {
    states.iter().position(|def| def.label == state)
}

/// One transition out of a state.
#[derive(Debug, Clone)]
pub(super) struct Transition<T, E, C> {
    pub(super) event: E,
    pub(super) guard: Option<Guard<C, E>>,
    pub(super) updates: Vec<fn(&mut C, &E)>,
    pub(super) effects: Vec<Effect>,
    pub(super) target: T,
    /// Declared with [`TransitionBuilder::stay`](super::TransitionBuilder::stay): the
    /// state is neither exited nor re-entered, so only the transition's own effects fire.
    pub(super) internal: bool,
}

impl<T, E, C> Transition<T, E, C> {
    /// The guard's name, `always` for an unguarded transition.
    pub(super) fn guard_name(&self) -> &'static str {
        self.guard.as_ref().map_or("always", Guard::name)
    }
}

impl<S, E, C> Machine<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    /// The machine's name, as given to [`Machine::builder`].
    pub fn name(&self) -> &str {
        &self.name
    }

    /// The state a new instance starts in.
    pub fn initial(&self) -> S {
        // `build` only creates machines whose initial index is in the table.
        self.states[self.initial].label
    }

    /// The declared states, in declaration order.
    pub fn states(&self) -> impl ExactSizeIterator<Item = S> + '_ {
        self.states.iter().map(|state| state.label)
    }

    /// Whether `state` is declared.
    pub fn contains(&self, state: S) -> bool {
        self.position(state).is_some()
    }

    /// Whether `state` is declared terminal; false for an undeclared state.
    pub fn is_terminal(&self, state: S) -> bool {
        self.position(state)
            .is_some_and(|index| self.states[index].terminal)
    }

    /// The state that `event` would lead to from `state`, or `None` if the event would
    /// be ignored. Guards are evaluated; nothing else runs.
    pub fn enabled(&self, state: &MachineState<S, C>, event: &E) -> Option<S> {
        let from = self.position(state.state)?;
        let transition = self.select(from, &state.context, event)?;
        Some(self.states[transition.target.index].label)
    }

    /// The state of a new instance: the initial state with `context`, without running
    /// the initial state's entry effects. Use [`Machine::start`] to run them.
    pub fn initial_state(&self, context: C) -> MachineState<S, C> {
        MachineState {
            state: self.initial(),
            context,
        }
    }

    /// The index of `state` in the table: a linear scan, which for the handful of
    /// states a workflow has beats hashing (and `S` need not be `Hash`).
    pub(super) fn position(&self, state: S) -> Option<usize> {
        position(&self.states, state)
    }

    /// The transition that `event` fires from the state at index `from`.
    pub(super) fn select(
        &self,
        from: usize,
        context: &C,
        event: &E,
    ) -> Option<&Transition<Target, E, C>> {
        self.states[from].transitions.iter().find(|transition| {
            transition.event == *event
                && transition
                    .guard
                    .as_ref()
                    .is_none_or(|guard| guard.allows(context, event))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::super::fixture::{Light, Road, Signal, traffic_light};
    use super::*;

    #[test]
    fn introspection_lists_states_in_declaration_order() {
        let machine = traffic_light();
        assert_eq!(machine.name(), "traffic_light");
        assert_eq!(machine.initial(), Light::Red);
        let states: Vec<Light> = machine.states().collect();
        assert_eq!(
            states,
            [Light::Red, Light::Green, Light::Yellow, Light::Off]
        );
        assert!(machine.is_terminal(Light::Off));
        assert!(!machine.is_terminal(Light::Red));
    }

    #[test]
    fn enabled_consults_guards_without_running_anything() {
        let machine = traffic_light();
        let mut state = MachineState {
            state: Light::Green,
            context: Road::default(),
        };
        assert_eq!(machine.enabled(&state, &Signal::Tick), Some(Light::Green));
        state.context.cars_waiting = 2;
        assert_eq!(machine.enabled(&state, &Signal::Tick), Some(Light::Yellow));
        assert_eq!(state.context.cycles, 0);
    }

    #[test]
    fn enabled_is_none_for_ignored_events_and_terminal_states() {
        let machine = traffic_light();
        let off = machine.initial_state(Road::default());
        let off = MachineState {
            state: Light::Off,
            ..off
        };
        assert_eq!(machine.enabled(&off, &Signal::Tick), None);
        assert_eq!(machine.enabled(&off, &Signal::PowerCut), None);
    }

    #[test]
    fn the_initial_state_carries_the_given_context() {
        let machine = traffic_light();
        let road = Road {
            cars_waiting: 3,
            cycles: 0,
        };
        let state = machine.initial_state(road.clone());
        assert_eq!(
            state,
            MachineState {
                state: Light::Red,
                context: road
            }
        );
    }
}
