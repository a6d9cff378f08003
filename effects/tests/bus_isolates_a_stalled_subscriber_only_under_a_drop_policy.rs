//! Whether a stalled subscriber holds up the others depends on its overflow policy: a
//! drop policy isolates it, so publishing never waits and the others receive at once;
//! backpressure (the default) couples it to them, so publishing waits for it and what
//! comes next reaches no one until it reads.
//!
//! The clock is paused, so each `timeout` below is virtual: it elapses only once nothing
//! else can run, whatever the machine's load.

use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::notify::{Bus, Overflow, SubscribeOptions, Subscription};
use tokio::time::timeout;

/// How long the test waits for something that should happen at once.
const PATIENCE: Duration = Duration::from_secs(1);

fn envelope(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("order.placed"),
        "shop",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope")
}

fn topic() -> Topic {
    Topic::from_static("order.placed")
}

fn subscribe(bus: &Bus, options: SubscribeOptions) -> Subscription {
    bus.subscribe("order.*".parse().expect("a valid pattern"), options)
        .expect("a valid capacity")
}

/// A subscriber that never reads, with room for one envelope.
fn stalled(bus: &Bus, overflow: Overflow) -> Subscription {
    subscribe(
        bus,
        SubscribeOptions::default().capacity(1).overflow(overflow),
    )
}

async fn next_id(subscription: &mut Subscription) -> Option<u128> {
    let envelope = timeout(PATIENCE, subscription.recv()).await.ok()??;
    Some(envelope.id.uuid().as_u128())
}

#[tokio::test(start_paused = true)]
async fn under_a_drop_policy_a_stalled_subscriber_does_not_delay_another() {
    for overflow in [Overflow::DropNewest, Overflow::DropOldest] {
        let bus = Bus::default();
        let stalled = stalled(&bus, overflow);
        let mut other = subscribe(&bus, SubscribeOptions::default());

        for id in 1..=10 {
            timeout(PATIENCE, bus.publish(&topic(), envelope(id)))
                .await
                .unwrap_or_else(|_| panic!("{overflow:?}: publish {id} waited"))
                .expect("published");
            assert_eq!(next_id(&mut other).await, Some(id), "{overflow:?}");
        }
        assert_eq!(stalled.queued(), 1, "{overflow:?}");
        assert_eq!(stalled.dropped(), 9, "{overflow:?}");
    }
}

#[tokio::test(start_paused = true)]
async fn under_backpressure_a_stalled_subscriber_makes_publishing_wait_and_delays_another() {
    let bus = Bus::default();
    let mut stalled = stalled(&bus, Overflow::Backpressure);
    let mut other = subscribe(&bus, SubscribeOptions::default());
    bus.publish(&topic(), envelope(1)).await.expect("published");
    assert_eq!(next_id(&mut other).await, Some(1));

    // The stalled queue is full now.
    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move {
            for id in [2, 3] {
                bus.publish(&topic(), envelope(id))
                    .await
                    .expect("published");
            }
        })
    };
    // 2 is offered to every subscriber with room before the publisher waits...
    assert_eq!(next_id(&mut other).await, Some(2));
    // ...but the publisher then waits on the stalled subscriber, so 3 reaches no one.
    assert_eq!(
        next_id(&mut other).await,
        None,
        "3 was published past a full subscriber under backpressure"
    );
    assert!(!publisher.is_finished());

    // Each read by the stalled subscriber lets the publisher on by one envelope.
    assert_eq!(next_id(&mut stalled).await, Some(1));
    assert_eq!(next_id(&mut other).await, Some(3));
    assert_eq!(next_id(&mut stalled).await, Some(2));
    timeout(PATIENCE, publisher)
        .await
        .expect("the publisher finishes once the stalled subscriber has room")
        .expect("the publisher did not panic");
    assert_eq!(next_id(&mut stalled).await, Some(3));
    assert_eq!((stalled.dropped(), other.dropped()), (0, 0));
}
