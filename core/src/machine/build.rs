//! The builders a machine is declared with.
//!
//! Declaring never fails: the builders only record what was written, and
//! [`MachineBuilder::build`] checks the whole definition at once, so the first defect is
//! reported the same way wherever it was written.

use std::fmt::Debug;

use super::check;
use super::compiled::{Machine, StateDef, Transition};
use super::effect::{Effect, Guard};
use crate::error::Error;

/// Declares a [`Machine`]: its name, its initial state and its states.
///
/// Start one with [`Machine::builder`]; see the [module docs](super) for an example.
#[derive(Debug)]
#[must_use = "a builder does nothing until `.build()` is called"]
pub struct MachineBuilder<S, E, C = ()> {
    name: String,
    initial: S,
    states: Vec<StateDef<S, S, E, C>>,
}

/// Declares one state: its entry and exit effects and its transitions.
#[derive(Debug)]
#[must_use = "return the builder from the closure so the declaration is kept"]
pub struct StateBuilder<S, E, C = ()> {
    def: StateDef<S, S, E, C>,
}

/// Declares one transition, started with [`StateBuilder::on`] and finished with
/// [`TransitionBuilder::to`].
#[derive(Debug)]
#[must_use = "finish the transition with `.to(target)`"]
pub struct TransitionBuilder<S, E, C = ()> {
    state: StateBuilder<S, E, C>,
    transition: Transition<(), E, C>,
}

impl<S, E, C> Machine<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    /// Starts declaring a machine called `name` whose instances start in `initial`.
    pub fn builder(name: impl Into<String>, initial: S) -> MachineBuilder<S, E, C> {
        MachineBuilder {
            name: name.into(),
            initial,
            states: Vec::new(),
        }
    }
}

impl<S, E, C> MachineBuilder<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    /// Declares `state`, letting `define` add its effects and transitions.
    pub fn state(
        self,
        state: S,
        define: impl FnOnce(StateBuilder<S, E, C>) -> StateBuilder<S, E, C>,
    ) -> Self {
        self.declare(state, false, define)
    }

    /// Declares `state` as terminal: once there, an instance ignores every event.
    pub fn terminal(self, state: S) -> Self {
        self.declare(state, true, |s| s)
    }

    /// Declares `state` as terminal with entry effects (a final notification, a
    /// cancelled timer). Adding a transition to it is a build error.
    pub fn terminal_with(
        self,
        state: S,
        define: impl FnOnce(StateBuilder<S, E, C>) -> StateBuilder<S, E, C>,
    ) -> Self {
        self.declare(state, true, define)
    }

    /// Checks the definition and compiles it, or returns
    /// [`Error::InvalidMachine`] with the first [`MachineDefect`](super::MachineDefect)
    /// found, in the order the [module docs](super) give.
    pub fn build(self) -> Result<Machine<S, E, C>, Error> {
        check::compile(self.name, self.initial, self.states)
    }

    fn declare(
        mut self,
        label: S,
        terminal: bool,
        define: impl FnOnce(StateBuilder<S, E, C>) -> StateBuilder<S, E, C>,
    ) -> Self {
        let blank = StateBuilder {
            def: StateDef {
                label,
                terminal,
                entry: Vec::new(),
                exit: Vec::new(),
                transitions: Vec::new(),
            },
        };
        self.states.push(define(blank).def);
        self
    }
}

impl<S, E, C> StateBuilder<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    /// Adds an effect emitted each time the state is entered, after earlier ones.
    pub fn on_entry(mut self, effect: Effect) -> Self {
        self.def.entry.push(effect);
        self
    }

    /// Adds an effect emitted each time the state is left, after earlier ones.
    pub fn on_exit(mut self, effect: Effect) -> Self {
        self.def.exit.push(effect);
        self
    }

    /// Starts a transition taken on `event`.
    pub fn on(self, event: E) -> TransitionBuilder<S, E, C> {
        TransitionBuilder {
            state: self,
            transition: Transition {
                event,
                guard: None,
                updates: Vec::new(),
                effects: Vec::new(),
                target: (),
                internal: false,
            },
        }
    }
}

impl<S, E, C> TransitionBuilder<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    /// Lets the transition fire only when `guard` allows it. A transition has at most
    /// one guard, and a later call replaces an earlier one: combine conditions inside
    /// one guard, whose name then says what it checks.
    pub fn when(mut self, guard: Guard<C, E>) -> Self {
        self.transition.guard = Some(guard);
        self
    }

    /// Adds a context update run when the transition fires, after earlier ones.
    pub fn update(mut self, update: fn(&mut C, &E)) -> Self {
        self.transition.updates.push(update);
        self
    }

    /// Adds an effect emitted when the transition fires, between the source's exit
    /// effects and the target's entry effects.
    pub fn emit(mut self, effect: Effect) -> Self {
        self.transition.effects.push(effect);
        self
    }

    /// Finishes the transition: it leads to `target`. When `target` is the state itself,
    /// the state is exited and re-entered, so its exit and entry effects fire (restarting
    /// its timers, say); use [`stay`](Self::stay) to avoid that.
    pub fn to(self, target: S) -> StateBuilder<S, E, C> {
        self.finish(target, false)
    }

    /// Finishes the transition as an internal one: the machine stays in the current
    /// state without exiting or re-entering it, so only the transition's updates and own
    /// effects run. This is how a state counts or records something without restarting
    /// its entry timers.
    pub fn stay(self) -> StateBuilder<S, E, C> {
        let target = self.state.def.label;
        self.finish(target, true)
    }

    fn finish(self, target: S, internal: bool) -> StateBuilder<S, E, C> {
        let Self {
            mut state,
            transition,
        } = self;
        state.def.transitions.push(Transition {
            event: transition.event,
            guard: transition.guard,
            updates: transition.updates,
            effects: transition.effects,
            target,
            internal,
        });
        state
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn builders_record_declarations_in_order() {
        let builder: MachineBuilder<&str, &str> = Machine::builder("door", "closed")
            .state("closed", |s| {
                s.on_exit(Effect::cancel_timer("auto_close"))
                    .on("open")
                    .emit(Effect::timer_after("auto_close", 10))
                    .to("open")
            })
            .terminal("open");
        assert_eq!(builder.states.len(), 2);
        assert_eq!(builder.states[0].transitions[0].target, "open");
        assert_eq!(builder.states[0].transitions[0].effects.len(), 1);
        assert!(builder.states[1].terminal);
    }

    #[test]
    fn a_later_guard_replaces_an_earlier_one() {
        let state: StateBuilder<u8, u8, u8> = StateBuilder {
            def: StateDef {
                label: 0,
                terminal: false,
                entry: Vec::new(),
                exit: Vec::new(),
                transitions: Vec::new(),
            },
        };
        let state = state
            .on(1)
            .when(Guard::new("first", |_, _| true))
            .when(Guard::new("second", |_, _| true))
            .to(1);
        assert_eq!(state.def.transitions[0].guard_name(), "second");
    }
}
