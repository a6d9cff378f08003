//! Fuzz-style law: whatever bytes or JSON reach the envelope decoder, it returns an
//! envelope or a typed error, never a panic, and respects its size limits.

use crate::common;

use keel::cloudevents::DecodeLimits;
use keel::{Envelope, Error};
use proptest::prelude::*;
use serde_json::{Value, json};

/// Keys the decoder gives meaning to, so that random objects often hit real code paths.
const KNOWN_KEYS: [&str; 16] = [
    "specversion",
    "id",
    "type",
    "source",
    "time",
    "subject",
    "correlationid",
    "causationid",
    "target",
    "sequence",
    "schemaversion",
    "priority",
    "data",
    "data_base64",
    "datacontenttype",
    "x",
];

fn attribute_value() -> impl Strategy<Value = Value> {
    prop_oneof![
        common::json_value(),
        Just(json!("1.0")),
        Just(json!("67e55044-10b1-426f-9247-bb680e5fe0c8")),
        Just(json!("2026-11-23T06:34:49Z")),
        common::dotted_name().prop_map(Value::String),
        Just(json!("AAEC")),
    ]
}

fn cloudevent_like_object() -> impl Strategy<Value = Value> {
    prop::collection::btree_map(
        prop_oneof![3 => prop::sample::select(KNOWN_KEYS.to_vec()).prop_map(str::to_owned), 1 => "\\PC{0,24}"],
        attribute_value(),
        0..12,
    )
    .prop_map(|map| Value::Object(map.into_iter().collect()))
}

fn assert_typed(result: Result<Envelope, Error>) {
    // Any `Err` is, by the signature, a typed `Error`; reaching here means no panic.
    // Every error must also render a message (Display must not panic either).
    if let Err(error) = result {
        assert!(!error.to_string().is_empty());
    }
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2048))]

    #[test]
    fn arbitrary_bytes_give_a_typed_error(bytes in prop::collection::vec(any::<u8>(), 0..256)) {
        assert_typed(Envelope::from_cloudevent_slice(&bytes, &DecodeLimits::default()));
    }

    #[test]
    fn arbitrary_json_gives_a_typed_error_or_a_valid_envelope(value in prop_oneof![common::json_value(), cloudevent_like_object()]) {
        let result = Envelope::from_cloudevent(value, &DecodeLimits::default());
        if let Ok(envelope) = &result {
            prop_assert_eq!(envelope.validate(), Ok(()));
        }
        assert_typed(result);
    }

    #[test]
    fn a_mutated_valid_event_never_panics(envelope in common::envelope(), cut in any::<prop::sample::Index>(), byte in any::<u8>()) {
        let mut text = envelope.to_cloudevent_json().into_bytes();
        let at = cut.index(text.len());
        text[at] = byte;
        assert_typed(Envelope::from_cloudevent_slice(&text, &DecodeLimits::default()));
        assert_typed(Envelope::from_cloudevent_slice(&text[..at], &DecodeLimits::default()));
    }
}

#[test]
fn input_over_the_envelope_limit_is_refused_before_parsing() {
    let limits = DecodeLimits::with_payload_bytes_max(1024);
    let text = vec![b' '; limits.envelope_bytes_max + 1];
    let error = Envelope::from_cloudevent_slice(&text, &limits).unwrap_err();
    assert!(
        matches!(
            error,
            Error::TooLarge {
                field: "envelope",
                ..
            }
        ),
        "{error:?}"
    );
}

#[test]
fn deeply_nested_json_is_a_typed_error_not_a_stack_overflow() {
    let text = format!("{}{}", "[".repeat(100_000), "]".repeat(100_000));
    let error =
        Envelope::from_cloudevent_slice(text.as_bytes(), &DecodeLimits::default()).unwrap_err();
    assert!(matches!(error, Error::Malformed { .. }), "{error:?}");
}

#[test]
fn the_default_payload_limit_is_one_mebibyte() {
    let limits = DecodeLimits::default();
    assert_eq!(limits.payload_bytes_max, 1 << 20);
    let event = json!({
        "specversion": "1.0", "id": "67e55044-10b1-426f-9247-bb680e5fe0c8", "type": "a",
        "source": "s", "time": "2026-11-23T06:34:49Z", "data": "x".repeat(1 << 20),
    });
    let error = Envelope::from_cloudevent(event, &limits).unwrap_err();
    assert!(
        matches!(error, Error::TooLarge { field: "data", .. }),
        "{error:?}"
    );
}
