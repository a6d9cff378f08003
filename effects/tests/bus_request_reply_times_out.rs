//! A request nobody answers fails with `ReplyTimeout` after its timeout, on tokio's
//! paused clock, and leaves no trace in the bounded table of pending requests.

use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, Timestamp, Topic};
use keel_effects::Error;
use keel_effects::notify::{Bus, BusConfig};

fn request(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("stock.query"),
        "shop",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope")
}

fn topic() -> Topic {
    Topic::from_static("stock.query")
}

#[tokio::test(start_paused = true)]
async fn a_request_nobody_answers_times_out_after_its_timeout() {
    let bus = Bus::default();
    let started = tokio::time::Instant::now();
    let refused = bus.request(&topic(), request(1), 250).await.unwrap_err();
    assert_eq!(
        refused,
        Error::ReplyTimeout {
            request_type: "stock.query".into(),
            timeout_ms: 250
        }
    );
    assert_eq!(started.elapsed(), Duration::from_millis(250));
}

#[tokio::test(start_paused = true)]
async fn a_reply_after_the_timeout_is_published_but_answers_nothing() {
    let bus = Bus::default();
    let asked = request(1);
    let refused = bus.request(&topic(), asked.clone(), 100).await.unwrap_err();
    assert!(matches!(refused, Error::ReplyTimeout { .. }));

    let late = Envelope::builder(
        EventId::from_u128(2),
        EventType::from_static("stock.answered"),
        "warehouse",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .unwrap();
    let delivery = bus.reply(&asked, late).await.unwrap();
    assert_eq!(delivery.delivered, 0);
}

#[tokio::test(start_paused = true)]
async fn pending_requests_are_bounded_and_freed_on_timeout() {
    let bus = Bus::new(BusConfig {
        pending_requests_max: 2,
        ..BusConfig::default()
    });
    let waiting: Vec<_> = (1..=2)
        .map(|id| {
            let bus = bus.clone();
            tokio::spawn(async move { bus.request(&topic(), request(id), 1_000).await })
        })
        .collect();
    tokio::time::sleep(Duration::from_millis(10)).await;

    let refused = bus.request(&topic(), request(3), 1_000).await.unwrap_err();
    assert!(
        matches!(
            refused,
            Error::QueueFull {
                queue: "pending request table",
                capacity: 2
            }
        ),
        "{refused}"
    );

    for request in waiting {
        assert!(matches!(
            request.await.unwrap(),
            Err(Error::ReplyTimeout { .. })
        ));
    }
    // Both entries left the table when they timed out: two new requests fit again.
    let topic = topic();
    let again = tokio::join!(
        bus.request(&topic, request(4), 10),
        bus.request(&topic, request(5), 10),
    );
    assert!(matches!(again.0, Err(Error::ReplyTimeout { .. })));
    assert!(matches!(again.1, Err(Error::ReplyTimeout { .. })));
}

#[tokio::test(start_paused = true)]
async fn a_cancelled_request_frees_its_place() {
    let bus = Bus::new(BusConfig {
        pending_requests_max: 1,
        ..BusConfig::default()
    });
    let cancelled = tokio::time::timeout(
        Duration::from_millis(5),
        bus.request(&topic(), request(1), 60_000),
    )
    .await;
    assert!(cancelled.is_err());
    let refused = bus.request(&topic(), request(2), 10).await.unwrap_err();
    assert!(matches!(refused, Error::ReplyTimeout { .. }), "{refused}");
}
