//! The checks a definition must pass to become a [`Machine`].
//!
//! Each check visits states and transitions in declaration order and the checks run in
//! a fixed order, so the same definition always reports the same first defect.

use std::fmt::Debug;

use super::compiled::{Machine, StateDef, Table, Target, Transition, position};
use super::effect::Effect;
use super::{MachineDefect, label};
use crate::error::Error;

/// Checks a definition and compiles it: transition targets become indices.
pub(super) fn compile<S, E, C>(
    name: String,
    initial: S,
    states: Vec<StateDef<S, S, E, C>>,
) -> Result<Machine<S, E, C>, Error>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    match checked(initial, states) {
        Ok((initial, states)) => Ok(Machine {
            name,
            initial,
            states,
        }),
        Err(defect) => Err(Error::InvalidMachine {
            machine: name,
            defect,
        }),
    }
}

/// Runs every check in order; returns the initial state's index and the table.
fn checked<S, E, C>(
    initial: S,
    states: Vec<StateDef<S, S, E, C>>,
) -> Result<(usize, Table<S, E, C>), MachineDefect>
where
    S: Copy + Eq + Debug,
    E: Copy + Eq + Debug,
{
    for (index, def) in states.iter().enumerate() {
        if position(&states, def.label) != Some(index) {
            return Err(MachineDefect::DuplicateState {
                state: label(&def.label),
            });
        }
    }
    let initial = position(&states, initial).ok_or_else(|| unknown(initial))?;
    let states = resolve(states)?;
    for def in states.iter().filter(|def| def.terminal) {
        if let Some(transition) = def.transitions.first() {
            return Err(MachineDefect::TerminalWithTransitions {
                state: label(&def.label),
                event: label(&transition.event),
            });
        }
    }
    for def in &states {
        check_transitions(def)?;
    }
    let reachable = reachable_from(initial, &states);
    if let Some((def, _)) = states.iter().zip(&reachable).find(|(_, seen)| !**seen) {
        return Err(MachineDefect::UnreachableState {
            state: label(&def.label),
            initial: label(&states[initial].label),
        });
    }
    Ok((initial, states))
}

fn unknown<S: Debug>(state: S) -> MachineDefect {
    MachineDefect::UnknownState {
        state: label(&state),
    }
}

/// Resolves each transition's target label to a [`Target`], or names the first target
/// that was never declared.
fn resolve<S, E, C>(states: Vec<StateDef<S, S, E, C>>) -> Result<Table<S, E, C>, MachineDefect>
where
    S: Copy + Eq + Debug,
{
    let labels: Vec<S> = states.iter().map(|def| def.label).collect();
    let entries: Vec<Vec<Effect>> = states.iter().map(|def| def.entry.clone()).collect();
    let find = |state: S| {
        labels
            .iter()
            .position(|l| *l == state)
            .ok_or_else(|| unknown(state))
    };
    let mut table = Vec::with_capacity(states.len());
    for def in states {
        let mut transitions = Vec::with_capacity(def.transitions.len());
        for t in def.transitions {
            let index = find(t.target)?;
            let emits = if t.internal {
                t.effects.clone().into_boxed_slice()
            } else {
                (def.exit.iter())
                    .chain(&t.effects)
                    .chain(&entries[index])
                    .cloned()
                    .collect()
            };
            transitions.push(Transition {
                event: t.event,
                guard: t.guard,
                updates: t.updates,
                effects: t.effects,
                target: Target { index, emits },
                internal: t.internal,
            });
        }
        table.push(StateDef {
            label: def.label,
            terminal: def.terminal,
            entry: def.entry,
            exit: def.exit,
            transitions,
        });
    }
    Ok(table)
}

/// Finds two transitions on the same event under one guard, then a guarded transition
/// behind an unguarded one on the same event.
fn check_transitions<S, T, E, C>(def: &StateDef<S, T, E, C>) -> Result<(), MachineDefect>
where
    S: Debug,
    E: Eq + Debug,
{
    let on_same_event = |index: usize| {
        let later = &def.transitions[index];
        def.transitions[..index]
            .iter()
            .filter(move |earlier| earlier.event == later.event)
    };
    for (index, later) in def.transitions.iter().enumerate() {
        if on_same_event(index).any(|earlier| earlier.guard_name() == later.guard_name()) {
            return Err(MachineDefect::AmbiguousTransition {
                state: label(&def.label),
                event: label(&later.event),
                guard: later.guard_name().to_owned(),
            });
        }
    }
    for (index, later) in def.transitions.iter().enumerate() {
        if later.guard.is_some() && on_same_event(index).any(|earlier| earlier.guard.is_none()) {
            return Err(MachineDefect::ShadowedTransition {
                state: label(&def.label),
                event: label(&later.event),
                guard: later.guard_name().to_owned(),
            });
        }
    }
    Ok(())
}

/// Which states a chain of transitions leads to from `initial`, guards ignored.
fn reachable_from<S, E, C>(initial: usize, states: &Table<S, E, C>) -> Vec<bool> {
    let mut seen = vec![false; states.len()];
    seen[initial] = true;
    let mut pending = vec![initial];
    while let Some(index) = pending.pop() {
        for transition in &states[index].transitions {
            let target = transition.target.index;
            if !seen[target] {
                seen[target] = true;
                pending.push(target);
            }
        }
    }
    seen
}

#[cfg(test)]
mod tests {
    use super::super::{Guard, MachineBuilder};
    use super::*;

    type Builder = MachineBuilder<&'static str, &'static str>;

    fn defect(builder: Builder) -> MachineDefect {
        match builder.build() {
            Err(Error::InvalidMachine { machine, defect }) => {
                assert_eq!(machine, "door");
                defect
            }
            other => panic!("expected a defect, got {other:?}"),
        }
    }

    fn door() -> Builder {
        Machine::builder("door", "closed")
            .state("closed", |s| s.on("open").to("open"))
            .state("open", |s| s.on("close").to("closed"))
    }

    fn ajar(_: &(), _: &&str) -> bool {
        true
    }

    #[test]
    fn a_state_declared_twice_is_rejected_even_once_as_terminal() {
        let duplicate = |state: &str| MachineDefect::DuplicateState {
            state: state.into(),
        };
        assert_eq!(defect(door().state("open", |s| s)), duplicate("open"));
        assert_eq!(defect(door().terminal("closed")), duplicate("closed"));
    }

    #[test]
    fn an_undeclared_initial_state_or_target_is_rejected() {
        let locked: Builder = Machine::builder("door", "locked").state("closed", |s| s);
        assert_eq!(defect(locked), unknown("locked"));
        let jammed = door().state("jammed", |s| s.on("kick").to("broken"));
        assert_eq!(defect(jammed), unknown("broken"));
    }

    #[test]
    fn a_terminal_state_with_a_transition_is_rejected() {
        let builder = Machine::builder("door", "closed")
            .state("closed", |s| s.on("weld").to("welded"))
            .terminal_with("welded", |s| s.on("cut").to("closed"));
        let expected = MachineDefect::TerminalWithTransitions {
            state: "welded".into(),
            event: "cut".into(),
        };
        assert_eq!(defect(builder), expected);
    }

    #[test]
    fn two_unguarded_transitions_on_one_event_are_ambiguous() {
        let builder = door().state("ajar", |s| s.on("push").to("open").on("push").to("closed"));
        let expected = MachineDefect::AmbiguousTransition {
            state: "ajar".into(),
            event: "push".into(),
            guard: "always".into(),
        };
        assert_eq!(defect(builder), expected);
    }

    #[test]
    fn two_transitions_under_one_guard_name_are_ambiguous() {
        let builder: Builder = Machine::builder("door", "closed").state("closed", |s| {
            s.on("push")
                .when(Guard::new("ajar", ajar))
                .to("closed")
                .on("push")
                .when(Guard::new("ajar", |_, _| false))
                .to("closed")
        });
        let expected = MachineDefect::AmbiguousTransition {
            state: "closed".into(),
            event: "push".into(),
            guard: "ajar".into(),
        };
        assert_eq!(defect(builder), expected);
    }

    #[test]
    fn a_guarded_transition_behind_an_unguarded_one_is_shadowed() {
        let builder: Builder = Machine::builder("door", "closed").state("closed", |s| {
            s.on("push")
                .to("closed")
                .on("push")
                .when(Guard::new("ajar", ajar))
                .to("closed")
        });
        let expected = MachineDefect::ShadowedTransition {
            state: "closed".into(),
            event: "push".into(),
            guard: "ajar".into(),
        };
        assert_eq!(defect(builder), expected);
    }

    #[test]
    fn a_state_no_transition_leads_to_is_unreachable_even_if_it_leads_elsewhere() {
        let builder = door().state("attic", |s| s.on("climb").to("open"));
        let expected = MachineDefect::UnreachableState {
            state: "attic".into(),
            initial: "closed".into(),
        };
        assert_eq!(defect(builder), expected);
    }

    #[test]
    fn a_state_behind_a_guard_counts_as_reachable() {
        let builder: Builder = Machine::builder("door", "closed")
            .state("closed", |s| {
                s.on("push").when(Guard::new("ajar", ajar)).to("open")
            })
            .terminal("open");
        assert!(builder.build().is_ok());
    }
}
