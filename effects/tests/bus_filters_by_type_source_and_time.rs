//! A subscription's filter keeps only the envelopes whose type, source and time match,
//! and `Bus::stream` gives a filtered stream of every topic.

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::notify::{Bus, Filter, SubscribeOptions, Subscription};

fn envelope(id: u128, event_type: &'static str, source: &str, millis: i64) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static(event_type),
        source,
        Timestamp::from_unix_millis(millis),
    )
    .build()
    .expect("a valid envelope")
}

fn ids(subscription: &mut Subscription) -> Vec<u128> {
    std::iter::from_fn(|| subscription.try_recv())
        .map(|e| e.id.uuid().as_u128())
        .collect()
}

async fn publish_samples(bus: &Bus) {
    let samples = [
        envelope(1, "order.placed", "shop", 100),
        envelope(2, "order.payment.failed", "billing", 200),
        envelope(3, "payment.failed", "billing", 300),
        envelope(4, "order.shipped", "warehouse", 50),
    ];
    for sample in samples {
        let topic = Topic::from(sample.event_type.clone());
        bus.publish(&topic, sample)
            .await
            .expect("publish never fails");
    }
}

#[tokio::test]
async fn a_type_filter_matches_event_types_as_patterns() {
    let bus = Bus::default();
    let filter =
        Filter::new().types(["*.failed".parse().unwrap(), "order.placed".parse().unwrap()]);
    let mut subscription = bus
        .subscribe(
            "**".parse().unwrap(),
            SubscribeOptions::default().filter(filter),
        )
        .unwrap();
    publish_samples(&bus).await;
    assert_eq!(ids(&mut subscription), [1, 3]);
}

#[tokio::test]
async fn a_source_filter_matches_sources_exactly() {
    let bus = Bus::default();
    let mut subscription = bus
        .stream(Filter::new().sources(["billing", "warehouse"]))
        .unwrap();
    publish_samples(&bus).await;
    assert_eq!(ids(&mut subscription), [2, 3, 4]);
}

#[tokio::test]
async fn a_since_filter_keeps_envelopes_at_or_after_the_bound() {
    let bus = Bus::default();
    let mut subscription = bus
        .stream(Filter::new().since(Timestamp::from_unix_millis(200)))
        .unwrap();
    publish_samples(&bus).await;
    assert_eq!(ids(&mut subscription), [2, 3]);
}

#[tokio::test]
async fn every_condition_of_a_filter_must_hold_and_the_pattern_still_applies() {
    let bus = Bus::default();
    let filter = Filter::new()
        .types(["order.**".parse().unwrap()])
        .sources(["billing", "shop"])
        .since(Timestamp::from_unix_millis(150));
    let mut orders = bus
        .subscribe(
            "order.**".parse().unwrap(),
            SubscribeOptions::default().filter(filter.clone()),
        )
        .unwrap();
    let mut payments = bus
        .subscribe(
            "payment.*".parse().unwrap(),
            SubscribeOptions::default().filter(filter),
        )
        .unwrap();
    publish_samples(&bus).await;
    assert_eq!(ids(&mut orders), [2]);
    assert_eq!(ids(&mut payments), Vec::<u128>::new());
}
