//! A full subscriber queue makes `publish` wait (backpressure, the default), makes
//! `try_publish` refuse, or applies the configured drop policy; memory stays bounded.

use keel_core::{Envelope, EventId, EventType, Priority, Timestamp, Topic};
use keel_effects::Error;
use keel_effects::notify::{Bus, Overflow, SubscribeOptions, Subscription};

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

fn ids(subscription: &mut Subscription) -> Vec<u128> {
    std::iter::from_fn(|| subscription.try_recv())
        .map(|e| e.id.uuid().as_u128())
        .collect()
}

fn subscribe(bus: &Bus, capacity: usize, overflow: Overflow) -> Subscription {
    let options = SubscribeOptions::default()
        .capacity(capacity)
        .overflow(overflow);
    bus.subscribe("order.*".parse().expect("a valid pattern"), options)
        .expect("a valid capacity")
}

#[tokio::test]
async fn publish_waits_until_the_subscriber_reads() {
    let bus = Bus::default();
    let mut subscriber = subscribe(&bus, 2, Overflow::Backpressure);
    bus.publish(&topic(), envelope(1)).await.unwrap();
    bus.publish(&topic(), envelope(2)).await.unwrap();

    let publisher = {
        let bus = bus.clone();
        tokio::spawn(async move { bus.publish(&topic(), envelope(3)).await })
    };
    for _ in 0..10 {
        tokio::task::yield_now().await;
    }
    assert!(!publisher.is_finished(), "publish must wait for room");
    assert_eq!(subscriber.queued(), 2);

    assert_eq!(subscriber.recv().await.unwrap().id, EventId::from_u128(1));
    let delivery = publisher.await.unwrap().unwrap();
    assert_eq!(delivery.delivered, 1);
    assert_eq!(ids(&mut subscriber), [2, 3]);
    assert_eq!(subscriber.dropped(), 0);
}

#[tokio::test]
async fn try_publish_refuses_with_queue_full_instead_of_waiting() {
    let bus = Bus::default();
    let mut subscriber = subscribe(&bus, 1, Overflow::Backpressure);
    bus.try_publish(&topic(), envelope(1)).unwrap();
    let refused = bus.try_publish(&topic(), envelope(2)).unwrap_err();
    assert!(
        matches!(refused, Error::QueueFull { capacity: 1, .. }),
        "{refused}"
    );
    assert_eq!(ids(&mut subscriber), [1]);
    bus.try_publish(&topic(), envelope(3)).unwrap();
    assert_eq!(ids(&mut subscriber), [3]);
}

#[tokio::test]
async fn drop_oldest_keeps_the_newest_envelopes() {
    let bus = Bus::default();
    let mut subscriber = subscribe(&bus, 3, Overflow::DropOldest);
    for id in 1..=7 {
        bus.try_publish(&topic(), envelope(id)).unwrap();
    }
    assert_eq!(subscriber.dropped(), 4);
    assert_eq!(ids(&mut subscriber), [5, 6, 7]);
}

#[tokio::test]
async fn drop_oldest_sacrifices_low_priority_envelopes_first() {
    let bus = Bus::default();
    let mut subscriber = subscribe(&bus, 2, Overflow::DropOldest);
    let with = |id, priority| {
        let mut envelope = envelope(id);
        envelope.priority = priority;
        envelope
    };
    bus.try_publish(&topic(), with(1, Priority::High)).unwrap();
    bus.try_publish(&topic(), with(2, Priority::Low)).unwrap();
    let delivery = bus
        .try_publish(&topic(), with(3, Priority::Normal))
        .unwrap();
    assert_eq!((delivery.delivered, delivery.evicted), (1, 1));
    let delivery = bus.try_publish(&topic(), with(4, Priority::Low)).unwrap();
    assert_eq!((delivery.delivered, delivery.dropped), (0, 1));
    assert_eq!(ids(&mut subscriber), [1, 3]);
}

#[tokio::test]
async fn drop_newest_keeps_the_oldest_envelopes() {
    let bus = Bus::default();
    let mut subscriber = subscribe(&bus, 3, Overflow::DropNewest);
    for id in 1..=7 {
        bus.publish(&topic(), envelope(id)).await.unwrap();
    }
    assert_eq!(subscriber.dropped(), 4);
    assert_eq!(ids(&mut subscriber), [1, 2, 3]);
}

#[tokio::test]
async fn a_queue_without_room_is_refused_at_subscribe() {
    let bus = Bus::default();
    let options = SubscribeOptions::default().capacity(0);
    let refused = bus
        .subscribe("order.*".parse().unwrap(), options)
        .unwrap_err();
    assert!(matches!(
        refused,
        Error::InvalidConfig {
            setting: "capacity",
            ..
        }
    ));
}
