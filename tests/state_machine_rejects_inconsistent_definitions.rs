//! A state machine definition is checked once, when built: each kind of inconsistency
//! is its own typed defect, named in an error that says what to do.

use keel::Error;
use keel::machine::{Guard, Machine, MachineBuilder, MachineDefect};

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Order {
    Placed,
    Paid,
    Shipped,
    Cancelled,
    Refunded,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    Pay,
    Ship,
    Cancel,
}

type Builder = MachineBuilder<Order, Event, u32>;

fn builder() -> Builder {
    Machine::builder("order", Order::Placed)
}

fn defect_of(builder: Builder) -> MachineDefect {
    match builder.build() {
        Err(Error::InvalidMachine { machine, defect }) => {
            assert_eq!(machine, "order");
            defect
        }
        Ok(_) => panic!("an inconsistent definition was accepted"),
        Err(other) => panic!("expected InvalidMachine, got {other}"),
    }
}

fn paid_in_full(amount_due: &u32, _: &Event) -> bool {
    *amount_due == 0
}

#[test]
fn a_consistent_definition_builds() {
    let machine = builder()
        .state(Order::Placed, |s| {
            s.on(Event::Pay)
                .when(Guard::new("paid_in_full", paid_in_full))
                .to(Order::Paid)
                .on(Event::Cancel)
                .to(Order::Cancelled)
        })
        .state(Order::Paid, |s| s.on(Event::Ship).to(Order::Shipped))
        .terminal(Order::Shipped)
        .terminal(Order::Cancelled)
        .build()
        .unwrap();
    assert_eq!(machine.states().len(), 4);
}

#[test]
fn a_target_that_was_never_declared_is_an_unknown_state() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| s.on(Event::Pay).to(Order::Paid))
            .state(Order::Paid, |s| s.on(Event::Cancel).to(Order::Refunded)),
    );
    assert_eq!(
        defect,
        MachineDefect::UnknownState {
            state: "Refunded".into()
        }
    );
}

#[test]
fn an_initial_state_that_was_never_declared_is_an_unknown_state() {
    let defect = defect_of(Machine::builder("order", Order::Cancelled).terminal(Order::Placed));
    assert_eq!(
        defect,
        MachineDefect::UnknownState {
            state: "Cancelled".into()
        }
    );
}

#[test]
fn a_state_declared_twice_is_a_duplicate() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| s.on(Event::Pay).to(Order::Paid))
            .terminal(Order::Paid)
            .state(Order::Paid, |s| s),
    );
    assert_eq!(
        defect,
        MachineDefect::DuplicateState {
            state: "Paid".into()
        }
    );
}

#[test]
fn a_state_without_a_path_from_the_initial_one_is_unreachable() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| s.on(Event::Pay).to(Order::Paid))
            .terminal(Order::Paid)
            .state(Order::Refunded, |s| s.on(Event::Pay).to(Order::Paid)),
    );
    assert_eq!(
        defect,
        MachineDefect::UnreachableState {
            state: "Refunded".into(),
            initial: "Placed".into()
        }
    );
}

#[test]
fn two_transitions_on_one_event_under_one_guard_are_ambiguous() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| {
                s.on(Event::Pay)
                    .when(Guard::new("paid_in_full", paid_in_full))
                    .to(Order::Paid)
                    .on(Event::Pay)
                    .when(Guard::new("paid_in_full", |due, _| *due < 10))
                    .to(Order::Cancelled)
            })
            .terminal(Order::Paid)
            .terminal(Order::Cancelled),
    );
    assert_eq!(
        defect,
        MachineDefect::AmbiguousTransition {
            state: "Placed".into(),
            event: "Pay".into(),
            guard: "paid_in_full".into()
        }
    );
}

#[test]
fn two_unguarded_transitions_on_one_event_are_ambiguous_under_always() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| {
                s.on(Event::Pay)
                    .to(Order::Paid)
                    .on(Event::Pay)
                    .to(Order::Placed)
            })
            .terminal(Order::Paid),
    );
    assert!(matches!(
        defect,
        MachineDefect::AmbiguousTransition { guard, .. } if guard == "always"
    ));
}

#[test]
fn a_guarded_transition_declared_after_the_fallback_is_shadowed() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| {
                s.on(Event::Pay)
                    .to(Order::Placed)
                    .on(Event::Pay)
                    .when(Guard::new("paid_in_full", paid_in_full))
                    .to(Order::Paid)
            })
            .terminal(Order::Paid),
    );
    assert_eq!(
        defect,
        MachineDefect::ShadowedTransition {
            state: "Placed".into(),
            event: "Pay".into(),
            guard: "paid_in_full".into()
        }
    );
}

#[test]
fn a_terminal_state_with_a_transition_is_rejected() {
    let defect = defect_of(
        builder()
            .state(Order::Placed, |s| s.on(Event::Cancel).to(Order::Cancelled))
            .terminal_with(Order::Cancelled, |s| s.on(Event::Pay).to(Order::Placed)),
    );
    assert_eq!(
        defect,
        MachineDefect::TerminalWithTransitions {
            state: "Cancelled".into(),
            event: "Pay".into()
        }
    );
}

#[test]
fn the_first_defect_in_a_fixed_order_is_reported_every_time() {
    // Unknown target, unreachable state and a duplicate at once: duplicates come first.
    let broken = || {
        builder()
            .state(Order::Placed, |s| s.on(Event::Pay).to(Order::Refunded))
            .state(Order::Shipped, |s| s)
            .state(Order::Placed, |s| s)
    };
    let first = defect_of(broken());
    assert_eq!(
        first,
        MachineDefect::DuplicateState {
            state: "Placed".into()
        }
    );
    assert_eq!(defect_of(broken()), first);
}

#[test]
fn the_error_message_names_the_machine_the_state_and_the_fix() {
    let error = builder()
        .state(Order::Placed, |s| s.on(Event::Pay).to(Order::Paid))
        .terminal(Order::Paid)
        .terminal(Order::Shipped)
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "state machine `order` is invalid: state `Shipped` cannot be reached from the \
         initial state `Placed`: add a transition into it or remove it"
    );
}

#[test]
fn string_labels_are_named_without_their_quotes() {
    let error = Machine::<&str, &str>::builder("door", "closed")
        .state("closed", |s| s.on("open").to("opne"))
        .build()
        .map(|_| ())
        .unwrap_err();
    assert_eq!(
        error.to_string(),
        "state machine `door` is invalid: state `opne` is used but never declared: declare \
         it with `.state(..)`"
    );
}
