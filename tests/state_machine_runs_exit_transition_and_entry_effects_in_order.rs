//! When a transition fires, a state machine emits the source's exit effects, then the
//! transition's own effects (after its context updates), then the target's entry
//! effects, each intent with an id derived from the action's cause.

use keel::machine::{Effect, Machine, MachineState};
use keel::{
    CausationId, Cause, CorrelationId, EventType, Input, IntentId, IntentKind, Reducer, TimerId,
    Timestamp,
};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Payment {
    Pending,
    Authorised,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug)]
enum Event {
    Authorise,
    Retry,
}

#[derive(Clone, Debug, PartialEq, Default)]
struct Attempts {
    count: u32,
}

fn captured() -> IntentKind {
    IntentKind::Custom {
        name: EventType::from_static("payment.captured"),
        payload: json!({ "via": "machine" }),
    }
}

fn payment() -> Machine<Payment, Event, Attempts> {
    Machine::builder("payment", Payment::Pending)
        .state(Payment::Pending, |s| {
            s.on_entry(Effect::timer_after("payment-timeout", 60_000))
                .on_exit(Effect::cancel_timer("payment-timeout"))
                .on(Event::Retry)
                .update(|attempts: &mut Attempts, _| attempts.count += 1)
                .to(Payment::Pending)
                .on(Event::Authorise)
                .emit(Effect::intent(captured()))
                .to(Payment::Authorised)
        })
        .terminal_with(Payment::Authorised, |s| {
            s.on_entry(Effect::cancel_timer("reminder"))
        })
        .build()
        .expect("the machine is consistent")
}

fn timer(name: &'static str) -> TimerId {
    TimerId::from_static(name)
}

fn input(event: Event) -> Input<Event> {
    let cause = Cause::new(CorrelationId::from_u128(10), CausationId::from_u128(20));
    Input::new(cause, Timestamp::from_unix_millis(1_000), event)
}

#[test]
fn exit_then_transition_then_entry_effects_are_emitted() {
    let state = MachineState {
        state: Payment::Pending,
        context: Attempts::default(),
    };
    let (state, intents) = payment().reduce(state, input(Event::Authorise));
    assert_eq!(state.state, Payment::Authorised);
    let kinds: Vec<IntentKind> = intents.into_iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            IntentKind::CancelTimer {
                timer: timer("payment-timeout")
            },
            captured(),
            IntentKind::CancelTimer {
                timer: timer("reminder")
            },
        ]
    );
}

#[test]
fn intent_ids_are_correlation_causation_and_position() {
    let state = payment().initial_state(Attempts::default());
    let (_, intents) = payment().reduce(state, input(Event::Authorise));
    let ids: Vec<IntentId> = intents.iter().map(|i| i.id).collect();
    let expected: Vec<IntentId> = (0..3)
        .map(|position| {
            IntentId::new(
                CorrelationId::from_u128(10),
                CausationId::from_u128(20),
                position,
            )
        })
        .collect();
    assert_eq!(ids, expected);
}

#[test]
fn a_self_transition_exits_updates_and_re_enters() {
    let state = payment().initial_state(Attempts::default());
    let (state, intents) = payment().reduce(state, input(Event::Retry));
    assert_eq!(
        state,
        MachineState {
            state: Payment::Pending,
            context: Attempts { count: 1 }
        }
    );
    let kinds: Vec<IntentKind> = intents.into_iter().map(|i| i.kind).collect();
    assert_eq!(
        kinds,
        [
            IntentKind::CancelTimer {
                timer: timer("payment-timeout")
            },
            IntentKind::ScheduleTimer {
                timer: timer("payment-timeout"),
                due: Timestamp::from_unix_millis(61_000),
            },
        ]
    );
}

#[test]
fn starting_an_instance_arms_the_initial_state_entry_effects() {
    let cause = Cause::root(5);
    let (state, intents) = payment().start(
        Attempts::default(),
        Input::new(cause, Timestamp::from_unix_millis(500), ()),
    );
    assert_eq!(state, payment().initial_state(Attempts::default()));
    assert_eq!(intents.len(), 1);
    assert_eq!(intents[0].id, cause.intent_id(0));
    assert_eq!(
        intents[0].kind,
        IntentKind::ScheduleTimer {
            timer: timer("payment-timeout"),
            due: Timestamp::from_unix_millis(60_500),
        }
    );
}
