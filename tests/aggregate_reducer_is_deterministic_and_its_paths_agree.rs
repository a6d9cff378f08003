//! Determinism of an aggregate run as a reducer: the same commands give byte-identical
//! states and intents (envelope ids included) on every run and after a serde round trip
//! of the state, and `reduce` agrees with `reduce_into` on a reused, non-empty buffer.

use crate::common::aggregate_order as order;

use keel::aggregate::AggregateState;
use keel::{Intent, Reducer};
use order::{Order, OrderCommand, bytes, command, input, reducer, run_live, stream};
use proptest::prelude::*;

/// Every state and intent of a run, serialised step by step.
fn trace(commands: &[OrderCommand]) -> Vec<(Vec<u8>, Vec<u8>)> {
    let reducer = reducer();
    let mut state = AggregateState::<Order>::new(stream());
    let mut steps = Vec::new();
    for (step, command) in commands.iter().enumerate() {
        let (next, intents) = reducer.reduce(state, input(step, command.clone()));
        steps.push((bytes(&next), bytes(&intents)));
        state = next;
    }
    steps
}

proptest! {
    #[test]
    fn the_same_commands_give_byte_identical_states_and_intents(
        commands in prop::collection::vec(command(), 0..40),
    ) {
        prop_assert_eq!(trace(&commands), trace(&commands));
        let (first, first_intents) = run_live(&commands);
        let (second, second_intents) = run_live(&commands);
        prop_assert_eq!(bytes(&first), bytes(&second));
        prop_assert_eq!(bytes(&first_intents), bytes(&second_intents));
    }

    #[test]
    fn reduce_and_reduce_into_agree_on_a_reused_buffer(
        commands in prop::collection::vec(command(), 0..40),
    ) {
        let reducer = reducer();
        let mut by_value = AggregateState::<Order>::new(stream());
        let mut in_place = AggregateState::<Order>::new(stream());
        // A buffer that already holds intents of other steps, as a driver's would.
        let mut buffer: Vec<Intent> = run_live(&commands).1;
        for (step, command) in commands.iter().enumerate() {
            let (next, intents) = reducer.reduce(by_value, input(step, command.clone()));
            by_value = next;
            let start = buffer.len();
            reducer.reduce_into(&mut in_place, input(step, command.clone()), &mut buffer);
            prop_assert_eq!(bytes(&by_value), bytes(&in_place));
            prop_assert_eq!(&buffer[start..], intents.as_slice());
        }
    }

    #[test]
    fn a_state_that_went_through_json_continues_identically(
        commands in prop::collection::vec(command(), 0..40),
        cut in any::<prop::sample::Index>(),
    ) {
        let cut = cut.index(commands.len() + 1);
        let reducer = reducer();
        let (straight, straight_intents) = run_live(&commands);

        let (before, mut intents) = run_live(&commands[..cut]);
        let text = serde_json::to_string(&before).expect("states serialise");
        let mut state: AggregateState<Order> = serde_json::from_str(&text).expect("and decode");
        for (step, command) in commands.iter().enumerate().skip(cut) {
            reducer.reduce_into(&mut state, input(step, command.clone()), &mut intents);
        }
        prop_assert_eq!(bytes(&state), bytes(&straight));
        prop_assert_eq!(bytes(&intents), bytes(&straight_intents));
    }
}
