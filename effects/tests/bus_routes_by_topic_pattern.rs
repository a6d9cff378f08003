//! The bus delivers an envelope to every subscription whose topic pattern matches its
//! topic (`*` one segment, `**` the rest, literals exactly), and to no other.

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::notify::{Bus, SubscribeOptions, Subscription};

fn envelope(id: u128, event_type: &'static str) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static(event_type),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope")
}

fn subscribe(bus: &Bus, pattern: &str) -> Subscription {
    let pattern = pattern.parse().expect("a valid pattern");
    bus.subscribe(pattern, SubscribeOptions::default())
        .expect("room for a subscription")
}

fn received(subscription: &mut Subscription) -> Vec<String> {
    std::iter::from_fn(|| subscription.try_recv())
        .map(|e| e.event_type.to_string())
        .collect()
}

#[tokio::test]
async fn each_pattern_receives_exactly_the_topics_it_selects() {
    let bus = Bus::default();
    let mut one_segment = subscribe(&bus, "order.*");
    let mut rest = subscribe(&bus, "order.**");
    let mut literal = subscribe(&bus, "order.placed");
    let mut suffix = subscribe(&bus, "*.failed");
    let mut everything = subscribe(&bus, "**");

    for (id, topic) in [
        (1, "order.placed"),
        (2, "order.payment.failed"),
        (3, "payment.failed"),
        (4, "order"),
    ] {
        let topic = Topic::new(topic).unwrap();
        bus.publish(&topic, envelope(id, "x.y")).await.unwrap();
    }
    let ids = |s: &mut Subscription| -> Vec<u128> {
        std::iter::from_fn(|| s.try_recv())
            .map(|e| e.id.uuid().as_u128())
            .collect()
    };
    assert_eq!(ids(&mut one_segment), [1]);
    assert_eq!(ids(&mut rest), [1, 2]);
    assert_eq!(ids(&mut literal), [1]);
    assert_eq!(ids(&mut suffix), [3]);
    assert_eq!(ids(&mut everything), [1, 2, 3, 4]);
}

#[tokio::test]
async fn several_subscribers_of_one_topic_all_receive_the_same_shared_envelope() {
    let bus = Bus::default();
    let mut first = subscribe(&bus, "order.placed");
    let mut second = subscribe(&bus, "order.placed");
    let mut third = subscribe(&bus, "order.*");

    let topic = Topic::new("order.placed").unwrap();
    let delivery = bus
        .publish(&topic, envelope(1, "order.placed"))
        .await
        .unwrap();
    assert_eq!(delivery.delivered, 3);
    assert_eq!(delivery.dropped, 0);

    let a = first.recv().await.unwrap();
    let b = second.recv().await.unwrap();
    let c = third.recv().await.unwrap();
    // Fan-out shares one envelope instead of copying it.
    assert!(std::sync::Arc::ptr_eq(&a, &b) && std::sync::Arc::ptr_eq(&b, &c));
}

#[tokio::test]
async fn a_topic_nobody_subscribed_to_is_delivered_to_nobody() {
    let bus = Bus::default();
    let mut orders = subscribe(&bus, "order.*");
    let topic = Topic::new("invoice.sent").unwrap();
    let delivery = bus
        .publish(&topic, envelope(1, "invoice.sent"))
        .await
        .unwrap();
    assert_eq!(delivery.delivered, 0);
    assert!(received(&mut orders).is_empty());
}
