//! With backpressure, several publishers on several threads flooding a tiny queue lose
//! nothing and hang nowhere, and each publisher's envelopes arrive in its own order.

use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::notify::{Bus, Overflow, SubscribeOptions};

const PUBLISHERS: u64 = 4;
const PER_PUBLISHER: u64 = 5_000;

fn envelope(publisher: u64, sequence: u64) -> Envelope {
    Envelope::builder(
        EventId::from_u128(u128::from(publisher) << 64 | u128::from(sequence)),
        EventType::from_static("order.placed"),
        format!("publisher-{publisher}"),
        Timestamp::UNIX_EPOCH,
    )
    .sequence(sequence)
    .build()
    .expect("a valid envelope")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_envelope_arrives_once_and_in_each_publishers_order() {
    let bus = Bus::default();
    let options = SubscribeOptions::default()
        .capacity(4)
        .overflow(Overflow::Backpressure);
    let mut subscription = bus.subscribe("order.*".parse().unwrap(), options).unwrap();
    let publishers: Vec<_> = (0..PUBLISHERS)
        .map(|publisher| {
            let bus = bus.clone();
            tokio::spawn(async move {
                let topic = Topic::from_static("order.placed");
                for sequence in 0..PER_PUBLISHER {
                    let delivery = bus.publish(&topic, envelope(publisher, sequence)).await;
                    assert_eq!(delivery.unwrap().delivered, 1);
                }
            })
        })
        .collect();

    let consume = async {
        let mut next = vec![0_u64; PUBLISHERS as usize];
        for _ in 0..PUBLISHERS * PER_PUBLISHER {
            let received = subscription.recv().await.unwrap();
            let publisher: usize = received.source["publisher-".len()..].parse().unwrap();
            assert_eq!(received.sequence, next[publisher]);
            next[publisher] += 1;
        }
        next
    };
    // A guard against a lost wake-up, which would otherwise hang the test run.
    let next = tokio::time::timeout(Duration::from_secs(60), consume)
        .await
        .expect("no lost wake-up");
    assert!(next.iter().all(|&n| n == PER_PUBLISHER));
    for publisher in publishers {
        publisher.await.unwrap();
    }
    assert!(subscription.try_recv().is_none());
    assert_eq!(subscription.dropped(), 0);
}
