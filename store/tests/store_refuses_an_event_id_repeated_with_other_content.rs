//! Every backend tells a retried append from another event under a stored id: the same
//! events, at the same place and with the same content, are answered as before
//! (`deduplicated`); the same id at the same place with any field changed is
//! `Error::EventConflict`, and nothing of it is stored. Once trimmed, an event's content
//! is gone, and its repeat is judged by place alone.

use crate::common::stores;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::Error;
use keel_store::{Appended, Trim};
use serde_json::json;
use stores::Backend;

fn event(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("order.placed"),
        "shop",
        Timestamp::from_unix_nanos(1_700_000_000_000_000_001),
    )
    .subject("order-1")
    .payload(Payload::Json(json!({ "order": 1, "amount": 12.5 })))
    .build()
    .expect("a valid envelope")
}

/// `event(id)` with one field changed, each in its own way.
fn changed(id: u128) -> Vec<(&'static str, Envelope)> {
    let mut payload = event(id);
    payload.payload = Payload::Json(json!({ "order": 1, "amount": 13.5 }));
    let mut binary = event(id);
    binary.payload = Payload::Binary(br#"{"order":1,"amount":12.5}"#.to_vec());
    let mut event_type = event(id);
    event_type.event_type = EventType::from_static("order.cancelled");
    let mut time = event(id);
    time.time = Timestamp::from_unix_nanos(1_700_000_000_000_000_002);
    let mut subject = event(id);
    subject.subject = None;
    let mut metadata = event(id);
    metadata.metadata.insert("tenant".to_owned(), "acme".into());
    vec![
        ("payload", payload),
        ("payload kind", binary),
        ("type", event_type),
        ("time", time),
        ("subject", subject),
        ("metadata", metadata),
    ]
}

#[tokio::test]
async fn the_same_id_with_other_content_is_a_conflict_and_the_same_content_a_repeat() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let (name, store) = (test.name, &test.store);
        let stream = StreamId::from("orders");
        let batch = [event(1), event(2)];
        let first = store
            .append(&stream, ExpectedVersion::NoStream, &batch)
            .await
            .unwrap();
        for (field, other) in changed(2) {
            let error = store
                .append(&stream, ExpectedVersion::NoStream, &[event(1), other])
                .await
                .unwrap_err();
            assert_eq!(
                error,
                Error::EventConflict {
                    id: EventId::from_u128(2).to_string(),
                    stream: stream.clone()
                },
                "{name}: {field} changed"
            );
        }
        // Expecting the version the stream is at takes the insert path on SQLite (its
        // unique index trips), not the version-conflict path: both compare content.
        for expected in [ExpectedVersion::Exact(2), ExpectedVersion::Any] {
            let (_, other) = changed(1).remove(0);
            let error = store
                .append(&stream, expected, &[other, event(2)])
                .await
                .unwrap_err();
            assert!(
                matches!(&error, Error::EventConflict { id, .. }
                    if *id == EventId::from_u128(1).to_string()),
                "{name}: {error:?}"
            );
        }
        let again = store
            .append(&stream, ExpectedVersion::NoStream, &batch)
            .await
            .unwrap();
        let repeat = Appended {
            deduplicated: true,
            ..first
        };
        assert_eq!(again, repeat, "{name}");
        let stored = store.read_stream(&stream, 1, 10).await.unwrap();
        let envelopes: Vec<_> = stored.into_iter().map(|e| e.envelope).collect();
        assert_eq!(envelopes, batch, "{name}: nothing of a conflict is stored");
        assert_eq!(store.head().await.unwrap(), 2, "{name}");
        test.cleanup().await;
    }
}

#[tokio::test]
async fn a_trimmed_event_repeated_is_judged_by_its_place_alone() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let (name, store) = (test.name, &test.store);
        let stream = StreamId::from("log");
        store
            .append(&stream, ExpectedVersion::NoStream, &[event(1), event(2)])
            .await
            .unwrap();
        assert_eq!(store.trim(&stream, Trim::KeepLast(1)).await.unwrap(), 1);
        let (_, other) = changed(1).remove(0);
        let trimmed = store
            .append(&stream, ExpectedVersion::Any, &[other])
            .await
            .unwrap();
        assert!(trimmed.deduplicated, "{name}: its content is gone");
        let (_, other) = changed(2).remove(0);
        let error = store
            .append(&stream, ExpectedVersion::Any, &[event(1), other])
            .await
            .unwrap_err();
        assert!(
            matches!(&error, Error::EventConflict { id, .. }
                if *id == EventId::from_u128(2).to_string()),
            "{name}: the kept event still compares: {error:?}"
        );
        test.cleanup().await;
    }
}
