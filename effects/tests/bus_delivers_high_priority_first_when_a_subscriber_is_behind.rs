//! When a subscriber is behind, queued `High` envelopes overtake `Normal` and `Low`
//! ones; within one priority, delivery keeps the order of publishing.

use keel_core::{Envelope, EventId, EventType, Priority, Timestamp, Topic};
use keel_effects::notify::{Bus, SubscribeOptions, Subscription};
use proptest::prelude::*;

fn envelope(id: u128, priority: Priority) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("order.placed"),
        "shop",
        Timestamp::UNIX_EPOCH,
    )
    .priority(priority)
    .build()
    .expect("a valid envelope")
}

fn ids(subscription: &mut Subscription) -> Vec<u128> {
    std::iter::from_fn(|| subscription.try_recv())
        .map(|e| e.id.uuid().as_u128())
        .collect()
}

#[tokio::test]
async fn a_high_envelope_published_last_is_received_first() {
    let bus = Bus::default();
    let mut behind = bus
        .subscribe("order.*".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let topic = Topic::new("order.placed").unwrap();
    for id in 1..=3 {
        bus.publish(&topic, envelope(id, Priority::Normal))
            .await
            .unwrap();
    }
    bus.publish(&topic, envelope(4, Priority::High))
        .await
        .unwrap();

    let first = behind.recv().await.unwrap();
    assert_eq!(first.priority, Priority::High);
    assert_eq!(ids(&mut behind), [1, 2, 3]);
}

#[tokio::test]
async fn low_envelopes_wait_for_every_queued_normal_and_high_one() {
    let bus = Bus::default();
    let mut behind = bus
        .subscribe("**".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let topic = Topic::new("order.placed").unwrap();
    let published = [
        (1, Priority::Low),
        (2, Priority::Normal),
        (3, Priority::Low),
        (4, Priority::High),
        (5, Priority::Normal),
    ];
    for (id, priority) in published {
        bus.publish(&topic, envelope(id, priority)).await.unwrap();
    }
    assert_eq!(ids(&mut behind), [4, 2, 5, 1, 3]);
}

fn priority() -> impl Strategy<Value = Priority> {
    prop_oneof![
        Just(Priority::Low),
        Just(Priority::Normal),
        Just(Priority::High)
    ]
}

proptest! {
    #[test]
    fn received_order_is_a_stable_sort_by_priority_of_published_order(
        priorities in proptest::collection::vec(priority(), 0..200),
    ) {
        let runtime = tokio::runtime::Builder::new_current_thread().build().unwrap();
        let received = runtime.block_on(async {
            let bus = Bus::default();
            let options = SubscribeOptions::default().capacity(priorities.len().max(1));
            let mut behind = bus.subscribe("**".parse().unwrap(), options).unwrap();
            let topic = Topic::new("order.placed").unwrap();
            for (id, priority) in priorities.iter().enumerate() {
                bus.publish(&topic, envelope(id as u128, *priority)).await.unwrap();
            }
            ids(&mut behind)
        });

        let mut expected: Vec<(u128, Priority)> = priorities
            .iter()
            .enumerate()
            .map(|(id, priority)| (id as u128, *priority))
            .collect();
        // `sort_by_key` is stable: equal priorities keep their publishing order.
        expected.sort_by_key(|(_, priority)| std::cmp::Reverse(*priority));
        let expected: Vec<u128> = expected.into_iter().map(|(id, _)| id).collect();
        prop_assert_eq!(received, expected);
    }
}
