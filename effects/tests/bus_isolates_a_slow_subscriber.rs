//! Under a drop policy, one subscriber's full queue or slowness never stops delivery to
//! the others, and under any policy neither does its disappearance. (Under
//! backpressure a slow subscriber does hold the others up: see
//! `bus_isolates_a_stalled_subscriber_only_under_a_drop_policy`.)

use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::notify::{Bus, Overflow, SubscribeOptions};

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

#[tokio::test]
async fn a_full_drop_newest_subscriber_does_not_stop_another_from_receiving() {
    let bus = Bus::default();
    let slow = bus
        .subscribe(
            "order.*".parse().unwrap(),
            SubscribeOptions::default()
                .capacity(2)
                .overflow(Overflow::DropNewest),
        )
        .unwrap();
    let mut fast = bus
        .subscribe("order.placed".parse().unwrap(), SubscribeOptions::default())
        .unwrap();

    for id in 0..5 {
        let delivery = bus.publish(&topic(), envelope(id)).await.unwrap();
        let expected_dropped = usize::from(id >= 2);
        assert_eq!(delivery.dropped, expected_dropped, "publish {id}");
        assert_eq!(delivery.delivered, 2 - expected_dropped, "publish {id}");
        let received = fast.recv().await.unwrap();
        assert_eq!(received.id, EventId::from_u128(id));
    }
    assert_eq!(slow.queued(), 2);
    assert_eq!(slow.dropped(), 3);
}

#[tokio::test(start_paused = true)]
async fn a_consumer_that_takes_its_time_delays_only_itself() {
    let bus = Bus::default();
    let mut slow = bus
        .subscribe(
            "**".parse().unwrap(),
            SubscribeOptions::default()
                .capacity(4)
                .overflow(Overflow::DropOldest),
        )
        .unwrap();
    let mut fast = bus
        .subscribe("**".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let slow_consumer = tokio::spawn(async move {
        let mut seen = 0;
        while slow.recv().await.is_some() {
            tokio::time::sleep(Duration::from_secs(60)).await;
            seen += 1;
        }
        seen
    });

    for id in 0..100 {
        bus.publish(&topic(), envelope(id)).await.unwrap();
        assert_eq!(fast.recv().await.unwrap().id, EventId::from_u128(id));
    }
    drop(bus);
    // The slow consumer saw at most what its queue could hold besides the one in hand.
    let seen = slow_consumer.await.unwrap();
    assert!(seen <= 6, "{seen}");
}

#[tokio::test]
async fn a_dropped_subscription_is_removed_from_the_bus() {
    let bus = Bus::default();
    let gone = bus
        .subscribe("order.*".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let literal = bus
        .subscribe("order.placed".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let mut staying = bus
        .subscribe("order.*".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    assert_eq!(bus.subscriber_count(), 3);

    drop(gone);
    drop(literal);
    assert_eq!(bus.subscriber_count(), 1);
    let delivery = bus.publish(&topic(), envelope(1)).await.unwrap();
    assert_eq!(delivery.delivered, 1);
    assert!(staying.try_recv().is_some());
}

#[tokio::test]
async fn a_publisher_waiting_on_a_subscriber_that_goes_away_carries_on() {
    let bus = Bus::default();
    let full = bus
        .subscribe(
            "**".parse().unwrap(),
            SubscribeOptions::default().capacity(1),
        )
        .unwrap();
    bus.publish(&topic(), envelope(1)).await.unwrap();

    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(&topic(), envelope(2)).await })
    };
    tokio::task::yield_now().await;
    assert!(!publisher.is_finished());
    drop(full);
    let delivery = publisher.await.unwrap().unwrap();
    assert_eq!(delivery.delivered, 0);
}
