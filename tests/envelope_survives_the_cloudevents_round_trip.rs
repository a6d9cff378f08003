//! Law: an envelope survives the CloudEvents round trip, as a value and as text.

use crate::common;

use keel::Envelope;
use keel::cloudevents::DecodeLimits;
use proptest::prelude::*;

proptest! {
    #![proptest_config(ProptestConfig::with_cases(512))]

    #[test]
    fn encoding_then_decoding_gives_back_the_same_envelope(envelope in common::envelope()) {
        let text = envelope.to_cloudevent_json();
        let decoded = Envelope::from_cloudevent_slice(text.as_bytes(), &DecodeLimits::default());
        prop_assert_eq!(decoded, Ok(envelope));
    }

    #[test]
    fn decoding_then_encoding_a_keel_event_gives_back_the_same_json(envelope in common::envelope()) {
        let first = envelope.to_cloudevent();
        let decoded = Envelope::from_cloudevent(first.clone(), &DecodeLimits::default()).unwrap();
        prop_assert_eq!(decoded.to_cloudevent(), first);
    }

    #[test]
    fn the_encoding_is_valid_cloudevents_1_0(envelope in common::envelope()) {
        let event = envelope.to_cloudevent();
        prop_assert_eq!(&event["specversion"], "1.0");
        for required in ["id", "type", "source"] {
            prop_assert!(event[required].as_str().is_some_and(|s| !s.is_empty()), "{}", required);
        }
        // Attribute names are lowercase alphanumerics (data_base64 is the one exception).
        for name in event.as_object().unwrap().keys() {
            prop_assert!(name == "data_base64" || name.bytes().all(|b| b.is_ascii_lowercase() || b.is_ascii_digit()), "{}", name);
        }
    }

    #[test]
    fn the_serde_form_round_trips_too(envelope in common::envelope()) {
        let text = serde_json::to_string(&envelope).unwrap();
        prop_assert_eq!(serde_json::from_str::<Envelope>(&text).unwrap(), envelope);
    }
}
