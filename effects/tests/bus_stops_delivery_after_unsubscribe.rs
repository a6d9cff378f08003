//! Unsubscribing stops delivery to that subscription only; a bus that is gone ends every
//! subscription after what is still queued.

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::Error;
use keel_effects::notify::{Bus, BusConfig, SubscribeOptions};

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

#[tokio::test]
async fn an_unsubscribed_subscription_receives_nothing_more() {
    let bus = Bus::default();
    let topic = Topic::from_static("order.placed");
    let leaving = bus
        .subscribe("order.*".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    let mut staying = bus
        .subscribe("order.*".parse().unwrap(), SubscribeOptions::default())
        .unwrap();
    bus.publish(&topic, envelope(1)).await.unwrap();

    leaving.unsubscribe();
    let delivery = bus.publish(&topic, envelope(2)).await.unwrap();
    assert_eq!(delivery.delivered, 1);
    assert_eq!(staying.recv().await.unwrap().id, EventId::from_u128(1));
    assert_eq!(staying.recv().await.unwrap().id, EventId::from_u128(2));
}

#[tokio::test]
async fn recv_drains_the_queue_then_ends_when_the_bus_is_gone() {
    let bus = Bus::default();
    let mut subscription = bus.stream(Default::default()).unwrap();
    bus.publish(&Topic::from_static("order.placed"), envelope(1))
        .await
        .unwrap();
    assert!(!subscription.is_closed());

    drop(bus);
    assert!(subscription.is_closed());
    assert_eq!(subscription.recv().await.unwrap().id, EventId::from_u128(1));
    assert!(subscription.recv().await.is_none());
}

#[tokio::test]
async fn a_waiting_recv_ends_when_the_bus_is_dropped() {
    let bus = Bus::default();
    let mut subscription = bus.stream(Default::default()).unwrap();
    let consumer = tokio::spawn(async move { subscription.recv().await });
    tokio::task::yield_now().await;
    drop(bus);
    assert!(consumer.await.unwrap().is_none());
}

#[tokio::test]
async fn the_number_of_subscriptions_is_bounded_and_freed_by_unsubscribing() {
    let bus = Bus::new(BusConfig {
        subscriptions_max: 2,
        ..BusConfig::default()
    });
    let first = bus.stream(Default::default()).unwrap();
    let _second = bus.stream(Default::default()).unwrap();
    let refused = bus.stream(Default::default()).unwrap_err();
    assert!(
        matches!(refused, Error::QueueFull { capacity: 2, .. }),
        "{refused}"
    );
    first.unsubscribe();
    assert!(bus.stream(Default::default()).is_ok());
}
