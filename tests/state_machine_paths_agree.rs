//! For any sequence of events, a state machine's two reducer paths agree: `reduce` (by
//! value, fresh `Vec`) and `reduce_into` (in place, reused buffer, cleared or not) give
//! the same states and intents; and the same inputs give byte-identical JSON, also
//! when the state goes through a JSON round trip between steps.

use keel::machine::{Effect, Guard, Machine, MachineState};
use keel::{
    CausationId, Cause, CorrelationId, EventType, Input, Intent, IntentKind, Reducer, Timestamp,
};
use proptest::prelude::*;
use serde::{Deserialize, Serialize};
use serde_json::json;

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum Turnstile {
    Idle,
    Active,
    Paused,
    Done,
}

#[derive(Clone, Copy, PartialEq, Eq, Debug, Serialize, Deserialize)]
enum Event {
    Coin,
    Push,
    Pause,
    Resume,
    Finish,
}

const EVENTS: [Event; 5] = [
    Event::Coin,
    Event::Push,
    Event::Pause,
    Event::Resume,
    Event::Finish,
];

#[derive(Clone, Debug, PartialEq, Default, Serialize, Deserialize)]
struct Ctx {
    credit: u32,
    pushes: u32,
}

type State = MachineState<Turnstile, Ctx>;

fn turnstile() -> Machine<Turnstile, Event, Ctx> {
    Machine::builder("turnstile", Turnstile::Idle)
        .state(Turnstile::Idle, |s| {
            s.on_entry(Effect::cancel_timer("idle"))
                .on(Event::Coin)
                .update(|ctx: &mut Ctx, _| ctx.credit += 2)
                .emit(Effect::timer_after("idle", 60_000))
                .to(Turnstile::Active)
        })
        .state(Turnstile::Active, |s| {
            s.on(Event::Push)
                .when(Guard::new("has_credit", |ctx: &Ctx, _| ctx.credit > 0))
                .update(|ctx, _| ctx.credit -= 1)
                .update(|ctx, _| ctx.pushes += 1)
                .to(Turnstile::Active)
                .on(Event::Push)
                .to(Turnstile::Idle)
                .on(Event::Coin)
                .update(|ctx, _| ctx.credit += 2)
                .to(Turnstile::Active)
                .on(Event::Pause)
                .to(Turnstile::Paused)
                .on(Event::Finish)
                .when(Guard::new("enough_pushes", |ctx, _| ctx.pushes >= 3))
                .to(Turnstile::Done)
        })
        .state(Turnstile::Paused, |s| {
            s.on_entry(Effect::timer_after("resume", 5_000))
                .on_exit(Effect::cancel_timer("resume"))
                .on(Event::Resume)
                .to(Turnstile::Active)
                .on(Event::Coin)
                .update(|ctx, _| ctx.credit += 2)
                .to(Turnstile::Paused)
        })
        .terminal_with(Turnstile::Done, |s| {
            s.on_entry(Effect::intent(IntentKind::Custom {
                name: EventType::from_static("turnstile.done"),
                payload: json!({ "reason": "enough pushes" }),
            }))
        })
        .build()
        .expect("the machine is consistent")
}

/// One step: which event, and how many milliseconds after the previous step.
type Step = (usize, u32);

fn inputs(correlation: u128, steps: &[Step]) -> Vec<Input<Event>> {
    let mut now = Timestamp::from_unix_millis(1_700_000_000_000);
    let mut inputs = Vec::with_capacity(steps.len());
    for (index, (event, delay_ms)) in steps.iter().enumerate() {
        now = now.plus_millis(u64::from(*delay_ms));
        let cause = Cause::new(
            CorrelationId::from_u128(correlation),
            CausationId::from_u128(index as u128 + 1),
        );
        inputs.push(Input::new(cause, now, EVENTS[*event]));
    }
    inputs
}

/// The by-value path: every state after each step, and each step's intents.
fn by_value(
    machine: &Machine<Turnstile, Event, Ctx>,
    start: State,
    inputs: &[Input<Event>],
) -> (Vec<State>, Vec<Vec<Intent>>) {
    let mut state = start;
    let (mut states, mut intents) = (Vec::new(), Vec::new());
    for input in inputs {
        let (next, step) = machine.reduce(state, input.clone());
        states.push(next.clone());
        intents.push(step);
        state = next;
    }
    (states, intents)
}

proptest! {
    #[test]
    fn reduce_and_reduce_into_agree_and_are_deterministic(
        correlation in any::<u128>(),
        credit in 0_u32..4,
        steps in prop::collection::vec((0..EVENTS.len(), 0_u32..120_000), 0..64),
    ) {
        let machine = turnstile();
        let start = machine.initial_state(Ctx { credit, pushes: 0 });
        let inputs = inputs(correlation, &steps);
        let (states, intents) = by_value(&machine, start.clone(), &inputs);

        // In place, buffer cleared before each step.
        let mut state = start.clone();
        let mut buffer = Vec::new();
        for (index, input) in inputs.iter().enumerate() {
            buffer.clear();
            machine.reduce_into(&mut state, input.clone(), &mut buffer);
            prop_assert_eq!(&state, &states[index]);
            prop_assert_eq!(&buffer, &intents[index]);
        }

        // In place, buffer never cleared: it holds every step's intents in order.
        let mut state = start.clone();
        let mut buffer = Vec::new();
        for input in &inputs {
            machine.reduce_into(&mut state, input.clone(), &mut buffer);
        }
        prop_assert_eq!(states.last().unwrap_or(&start), &state);
        prop_assert_eq!(&buffer, &intents.concat());

        // Same inputs, fresh machine: byte-identical JSON.
        let (again_states, again_intents) = by_value(&turnstile(), start.clone(), &inputs);
        prop_assert_eq!(
            serde_json::to_string(&states).unwrap(),
            serde_json::to_string(&again_states).unwrap()
        );
        prop_assert_eq!(
            serde_json::to_string(&intents).unwrap(),
            serde_json::to_string(&again_intents).unwrap()
        );

        // A JSON round trip of the state between steps changes nothing.
        let mut state = start;
        for (index, input) in inputs.iter().enumerate() {
            let text = serde_json::to_string(&state).unwrap();
            let restored: State = serde_json::from_str(&text).unwrap();
            let (next, step) = machine.reduce(restored, input.clone());
            prop_assert_eq!(&next, &states[index]);
            prop_assert_eq!(&step, &intents[index]);
            state = next;
        }
    }
}

#[test]
fn the_property_machine_can_reach_its_terminal_state() {
    // Guards the property against testing only trivial paths.
    let machine = turnstile();
    let steps: Vec<Step> = [0, 1, 1, 0, 1, 4]
        .into_iter()
        .map(|event| (event, 10))
        .collect();
    let (states, intents) = by_value(
        &machine,
        machine.initial_state(Ctx::default()),
        &inputs(1, &steps),
    );
    assert_eq!(states.last().map(|s| s.state), Some(Turnstile::Done));
    assert!(matches!(
        intents.last().and_then(|step| step.last()).map(|i| &i.kind),
        Some(IntentKind::Custom { .. })
    ));
}
