//! A state machine tries a state's transitions in declaration order and fires the
//! first whose guard passes; an event with no enabled transition, an event in a
//! terminal state, or a state the machine does not declare changes nothing and emits
//! nothing.

use keel::machine::{Guard, Machine, MachineState};
use keel::{Cause, Input, Reducer, Timestamp};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Door {
    Closed,
    Open,
    Locked,
    Demolished,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    Push,
    Lock,
    Demolish,
}

#[derive(Clone, Debug, PartialEq)]
struct Keys {
    held: bool,
    strength: u8,
}

fn door() -> Machine<Door, Event, Keys> {
    Machine::builder("door", Door::Closed)
        .state(Door::Closed, |s| {
            s.on(Event::Push)
                .when(Guard::new("strong", |keys: &Keys, _| keys.strength > 5))
                .to(Door::Demolished)
                .on(Event::Push)
                .to(Door::Open)
                .on(Event::Lock)
                .when(Guard::new("key_held", |keys: &Keys, _| keys.held))
                .to(Door::Locked)
        })
        .state(Door::Open, |s| s.on(Event::Push).to(Door::Closed))
        .state(Door::Locked, |s| s.on(Event::Demolish).to(Door::Demolished))
        .terminal(Door::Demolished)
        .build()
        .expect("the machine is consistent")
}

fn in_state(state: Door, held: bool, strength: u8) -> MachineState<Door, Keys> {
    MachineState {
        state,
        context: Keys { held, strength },
    }
}

fn act(event: Event) -> Input<Event> {
    Input::new(Cause::root(1), Timestamp::UNIX_EPOCH, event)
}

#[test]
fn the_first_guard_that_passes_wins() {
    let (state, _) = door().reduce(in_state(Door::Closed, false, 9), act(Event::Push));
    assert_eq!(state.state, Door::Demolished);
}

#[test]
fn the_unguarded_fallback_fires_when_earlier_guards_fail() {
    let (state, _) = door().reduce(in_state(Door::Closed, false, 1), act(Event::Push));
    assert_eq!(state.state, Door::Open);
}

#[test]
fn an_event_whose_only_guard_fails_is_ignored() {
    let before = in_state(Door::Closed, false, 1);
    let (after, intents) = door().reduce(before.clone(), act(Event::Lock));
    assert_eq!((after, intents), (before.clone(), Vec::new()));
    assert_eq!(door().enabled(&before, &Event::Lock), None);
}

#[test]
fn an_event_the_state_does_not_handle_is_ignored() {
    let before = in_state(Door::Open, true, 1);
    let (after, intents) = door().reduce(before.clone(), act(Event::Lock));
    assert_eq!((after, intents), (before, Vec::new()));
}

#[test]
fn a_terminal_state_ignores_every_event() {
    let machine = door();
    let before = in_state(Door::Demolished, true, 9);
    assert!(machine.is_terminal(before.state));
    for event in [Event::Push, Event::Lock, Event::Demolish] {
        let (after, intents) = machine.reduce(before.clone(), act(event));
        assert_eq!((after, intents), (before.clone(), Vec::new()));
    }
}

#[test]
fn a_state_the_machine_does_not_declare_is_left_alone() {
    let machine: Machine<&str, &str> = Machine::builder("lamp", "off")
        .state("off", |s| s.on("flip").to("on"))
        .state("on", |s| s.on("flip").to("off"))
        .build()
        .unwrap();
    let stale = MachineState {
        state: "dimmed",
        context: (),
    };
    assert!(!machine.contains("dimmed"));
    let (after, intents) = machine.reduce(
        stale.clone(),
        Input::new(Cause::root(1), Timestamp::UNIX_EPOCH, "flip"),
    );
    assert_eq!((after, intents), (stale, Vec::new()));
}
