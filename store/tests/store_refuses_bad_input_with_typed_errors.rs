//! Every backend answers bad input with a typed error and stores nothing of it: a
//! payload over the 1 MiB limit, an envelope with an empty source, a batch reusing an
//! event id within itself.

use crate::common::stores;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::Error;
use serde_json::json;
use stores::Backend;

fn event(id: u128, payload: Payload) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("bad.input"),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .payload(payload)
    .build()
    .expect("a valid envelope")
}

#[tokio::test]
async fn a_payload_over_the_limit_is_refused_and_nothing_is_stored() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let stream = StreamId::from("big");
        let huge = Payload::Json(json!("x".repeat((1 << 20) + 1)));
        let batch = [event(1, Payload::Json(json!(1))), event(2, huge)];
        let error = test
            .store
            .append(&stream, ExpectedVersion::Any, &batch)
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Core(keel_core::Error::TooLarge { field: "data", .. })
            ),
            "{}: {error:?}",
            test.name
        );
        let binary = [event(3, Payload::Binary(vec![0; (1 << 20) + 1]))];
        let error = test
            .store
            .append(&stream, ExpectedVersion::Any, &binary)
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::Core(keel_core::Error::TooLarge { .. })),
            "{}: {error:?}",
            test.name
        );
        assert_eq!(
            test.store.stream_version(&stream).await.unwrap(),
            0,
            "{}",
            test.name
        );
        assert_eq!(test.store.head().await.unwrap(), 0, "{}", test.name);
        test.cleanup().await;
    }
}

#[tokio::test]
async fn an_invalid_envelope_or_a_batch_repeating_an_id_is_refused() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let stream = StreamId::from("bad");
        let mut no_source = event(1, Payload::Json(json!(null)));
        no_source.source.clear();
        let error = test
            .store
            .append(&stream, ExpectedVersion::Any, &[no_source])
            .await
            .unwrap_err();
        assert!(
            matches!(
                error,
                Error::Core(keel_core::Error::InvalidField {
                    field: "source",
                    ..
                })
            ),
            "{}: {error:?}",
            test.name
        );
        let twice = [
            event(5, Payload::Json(json!(1))),
            event(5, Payload::Json(json!(2))),
        ];
        let error = test
            .store
            .append(&stream, ExpectedVersion::Any, &twice)
            .await
            .unwrap_err();
        assert!(
            matches!(error, Error::DuplicateEventId { .. }),
            "{}: {error:?}",
            test.name
        );
        assert_eq!(test.store.head().await.unwrap(), 0, "{}", test.name);
        test.cleanup().await;
    }
}
