//! A command the aggregate refuses yields its typed rejection, changes nothing else and
//! emits no intent; the next accepted command clears the rejection.

use crate::common::aggregate_order as order;

use keel::Reducer;
use keel::aggregate::{Aggregate, AggregateState, Refusal};
use order::{Order, OrderCommand, OrderRejection, bytes, input, reducer, run_live, stream};
use proptest::prelude::*;

fn place(total_cents: u64) -> OrderCommand {
    OrderCommand::Place {
        total_cents,
        currency: "EUR".into(),
    }
}

#[test]
fn paying_twice_is_rejected_as_already_paid_and_emits_nothing() {
    let (state, _) = run_live(&[place(250), OrderCommand::Pay { cents: 250 }]);
    let before = bytes(state.versioned());

    let (state, intents) = reducer().reduce(state, input(2, OrderCommand::Pay { cents: 250 }));

    assert_eq!(state.rejection(), Some(&OrderRejection::AlreadyPaid));
    assert!(intents.is_empty());
    assert_eq!(bytes(state.versioned()), before);
}

#[test]
fn an_underpayment_is_rejected_with_the_amounts_involved() {
    let (state, intents) = run_live(&[place(250), OrderCommand::Pay { cents: 100 }]);
    assert_eq!(
        state.refusal(),
        Some(&Refusal::Rejected(OrderRejection::Underpaid {
            expected: 250,
            offered: 100
        }))
    );
    assert_eq!(intents.len(), 1, "only the placement was persisted");
    assert_eq!(state.version(), 1);
}

#[test]
fn the_next_accepted_command_clears_the_rejection() {
    let (state, _) = run_live(&[
        place(250),
        OrderCommand::Ship {
            carrier: "dhl".into(),
        },
    ]);
    assert_eq!(state.rejection(), Some(&OrderRejection::NotPaid));
    let (mut state, intents) = reducer().reduce(state, input(2, OrderCommand::Pay { cents: 250 }));
    assert_eq!(intents.len(), 1);
    assert_eq!(state.take_refusal(), None);
}

#[test]
fn decide_alone_returns_the_rejection_as_a_value() {
    let order = Order::default();
    assert_eq!(
        order.decide(&OrderCommand::Pay { cents: 1 }),
        Err(OrderRejection::NotPlaced)
    );
    assert_eq!(order.decide(&place(0)), Err(OrderRejection::ZeroAmount));
}

proptest! {
    #[test]
    fn any_rejected_command_leaves_the_aggregate_and_its_version_untouched(
        commands in prop::collection::vec(order::command(), 0..30),
        last in order::command(),
    ) {
        let (state, _) = run_live(&commands);
        let before = bytes(state.versioned());
        let expected = state.aggregate().decide(&last).err();

        let (state, intents): (AggregateState<Order>, _) =
            reducer().reduce(state, input(commands.len(), last));

        prop_assert_eq!(state.rejection(), expected.as_ref());
        if expected.is_some() {
            prop_assert!(intents.is_empty());
            prop_assert_eq!(bytes(state.versioned()), before);
        } else {
            prop_assert_eq!(intents.len(), 1);
        }
    }
}

#[test]
fn the_stream_is_the_subject_of_every_persisted_event() {
    let (_, intents) = run_live(&[place(100), OrderCommand::Pay { cents: 400 }]);
    let events = order::persisted(&intents);
    assert_eq!(events.len(), 3, "placed, paid, refunded");
    assert!(
        events
            .iter()
            .all(|e| e.subject.as_deref() == Some(stream().as_str()))
    );
}
