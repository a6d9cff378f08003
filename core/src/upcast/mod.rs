//! Upcasters: lift stored payloads from any known schema version to the current one.
//!
//! An event written years ago keeps the schema it was written with; the code that reads
//! it knows only the current one. An [`UpcasterChain`] closes the gap: per event type it
//! knows the current schema version and one pure step per older version, each lifting a
//! JSON payload from version `n` to `n + 1`. Reading applies the steps in order, so a
//! version-1 payload passes through every step to reach the current version.
//!
//! The chain is checked once, when built: every step belongs to a declared type, lies
//! below that type's current version, is registered once, and the steps leave no gap. A
//! chain that builds therefore lifts every version from a type's lowest step to its
//! current version, which `tests/upcast_chains_reach_the_current_version.rs` checks on
//! random chains.
//!
//! ```
//! use keel_core::upcast::UpcasterChain;
//! use keel_core::EventType;
//! use serde_json::{Value, json};
//!
//! /// Version 2 split the amount into cents and a currency.
//! fn v2_to_v3(mut v: Value) -> Result<Value, String> {
//!     let euros = v["total"].as_f64().ok_or("`total` is not a number")?;
//!     v["total_cents"] = json!((euros * 100.0).round() as u64);
//!     v["currency"] = json!("EUR");
//!     Ok(v)
//! }
//!
//! let chain = UpcasterChain::builder()
//!     .current("order.placed", 3)
//!     .step("order.placed", 1, |mut v: Value| -> Result<Value, String> {
//!         v["channel"] = json!("web"); // version 1 knew only the web shop
//!         Ok(v)
//!     })
//!     .step("order.placed", 2, v2_to_v3)
//!     .build()?;
//!
//! let placed = EventType::from_static("order.placed");
//! let (payload, version) = chain.upcast(&placed, 1, json!({ "total": 42.0 }))?;
//! assert_eq!(version, 3);
//! assert_eq!(payload, json!({ "total": 42.0, "channel": "web", "total_cents": 4200, "currency": "EUR" }));
//! assert!(chain.upcast(&placed, 4, json!({})).is_err()); // written by a newer program
//! # Ok::<(), keel_core::Error>(())
//! ```

use std::borrow::Cow;
use std::collections::BTreeMap;
use std::ops::RangeInclusive;

use serde_json::Value;

use crate::envelope::{Envelope, EventType, Payload};
use crate::error::Error;

mod builder;

pub use builder::UpcasterChainBuilder;

/// One pure step that lifts a payload from schema version `n` to `n + 1`, or says why it
/// cannot.
///
/// A plain function pointer, not a closure: a step must not capture state, so lifting the
/// same payload always gives the same result. A closure that captures nothing coerces to
/// it.
pub type UpcastStep = fn(Value) -> Result<Value, String>;

/// Lifts stored payloads of each registered event type to its current schema version.
///
/// Build one with [`UpcasterChain::builder`]. Event types that were never registered pass
/// through unchanged, whatever their stored version: the chain only has an opinion about
/// the types it was told about. The default chain registers nothing.
#[derive(Debug, Clone, Default)]
pub struct UpcasterChain {
    types: BTreeMap<EventType, Lift>,
}

/// The checked steps of one event type.
#[derive(Debug, Clone)]
struct Lift {
    current: u32,
    /// The lowest version that can be lifted: the lowest step's, or `current`.
    lowest: u32,
    /// `steps[i]` lifts version `lowest + i` to `lowest + i + 1`; there are exactly
    /// `current - lowest` of them.
    steps: Box<[UpcastStep]>,
}

impl UpcasterChain {
    /// Starts declaring a chain.
    pub fn builder() -> UpcasterChainBuilder {
        UpcasterChainBuilder::default()
    }

    /// Lifts `payload`, stored as `event_type` at schema `version`, to the current
    /// version; returns it with the version it now has.
    ///
    /// A payload already at the current version, or of an unregistered type, comes back
    /// unchanged. A version below the lowest one the chain can lift (including 0), or
    /// above the current one, is an [`Error::Upcast`], as is a step that fails.
    pub fn upcast(
        &self,
        event_type: &EventType,
        version: u32,
        payload: Value,
    ) -> Result<(Value, u32), Error> {
        let (steps, target) = self.plan(event_type, version)?;
        Ok((run(event_type, version, steps, payload)?, target))
    }

    /// Like [`upcast`](Self::upcast), but borrows the payload and clones it only when a
    /// step has to change it, so reading events that are already current copies nothing.
    pub fn upcast_ref<'a>(
        &self,
        event_type: &EventType,
        version: u32,
        payload: &'a Value,
    ) -> Result<(Cow<'a, Value>, u32), Error> {
        let (steps, target) = self.plan(event_type, version)?;
        if steps.is_empty() {
            return Ok((Cow::Borrowed(payload), target));
        }
        let lifted = run(event_type, version, steps, payload.clone())?;
        Ok((Cow::Owned(lifted), target))
    }

    /// Lifts the payload of a stored envelope and sets its schema version accordingly.
    ///
    /// Binary payloads cannot be lifted: one that is already current (or of an
    /// unregistered type) passes through, an older one is an [`Error::Upcast`].
    pub fn upcast_envelope(&self, mut envelope: Envelope) -> Result<Envelope, Error> {
        let version = envelope.schema_version;
        let (steps, target) = self.plan(&envelope.event_type, version)?;
        if steps.is_empty() {
            return Ok(envelope);
        }
        envelope.payload = match std::mem::take(&mut envelope.payload) {
            Payload::Json(value) => {
                Payload::Json(run(&envelope.event_type, version, steps, value)?)
            }
            Payload::Binary(_) => {
                return Err(Error::Upcast {
                    event_type: envelope.event_type.to_string(),
                    version,
                    reason: "the payload is binary, and upcasters lift JSON only".into(),
                });
            }
        };
        envelope.schema_version = target;
        Ok(envelope)
    }

    /// The current schema version of `event_type`, or `None` if it is not registered.
    pub fn current_version(&self, event_type: &EventType) -> Option<u32> {
        self.types.get(event_type).map(|lift| lift.current)
    }

    /// The stored versions of `event_type` that the chain can lift, lowest to current, or
    /// `None` if the type is not registered.
    pub fn versions(&self, event_type: &EventType) -> Option<RangeInclusive<u32>> {
        self.types
            .get(event_type)
            .map(|lift| lift.lowest..=lift.current)
    }

    /// The registered event types, in lexicographic order.
    pub fn event_types(&self) -> impl Iterator<Item = &EventType> {
        self.types.keys()
    }

    /// The steps that lift `version` of `event_type`, and the version they reach.
    fn plan(&self, event_type: &EventType, version: u32) -> Result<(&[UpcastStep], u32), Error> {
        let Some(lift) = self.types.get(event_type) else {
            return Ok((&[], version));
        };
        let refuse = |reason: String| Error::Upcast {
            event_type: event_type.to_string(),
            version,
            reason,
        };
        let (lowest, current) = (lift.lowest, lift.current);
        if version > current {
            return Err(refuse(format!(
                "written by a newer version (this program reads up to {current}); upgrade this program"
            )));
        }
        if version < lowest {
            return Err(refuse(format!(
                "unknown version: this program lifts versions {lowest} to {current}"
            )));
        }
        // In bounds: `lowest <= version <= current` and `steps.len() == current - lowest`.
        let first = (version - lowest) as usize;
        Ok((&lift.steps[first..], current))
    }
}

/// Applies `steps` to a payload stored at `version`, naming the step that fails.
fn run(
    event_type: &EventType,
    version: u32,
    steps: &[UpcastStep],
    payload: Value,
) -> Result<Value, Error> {
    let mut from = version;
    steps.iter().try_fold(payload, |value, step| {
        let lifted = step(value).map_err(|reason| Error::Upcast {
            event_type: event_type.to_string(),
            version,
            reason: format!(
                "the step from version {from} to {} failed: {reason}",
                from + 1
            ),
        })?;
        from += 1;
        Ok(lifted)
    })
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;
    use crate::id::EventId;
    use crate::time::Timestamp;

    fn placed() -> EventType {
        EventType::from_static("order.placed")
    }

    fn push(mut v: Value, marker: u32) -> Result<Value, String> {
        let markers = v["markers"].as_array_mut().ok_or("no markers")?;
        markers.push(json!(marker));
        Ok(v)
    }

    fn chain() -> UpcasterChain {
        UpcasterChain::builder()
            .current("order.placed", 4)
            .step("order.placed", 3, |v| push(v, 3))
            .step("order.placed", 2, |v| push(v, 2))
            .current("order.paid", 1)
            .build()
            .unwrap()
    }

    fn reason(err: Error) -> String {
        match err {
            Error::Upcast { reason, .. } => reason,
            other => panic!("expected an upcast error, got {other:?}"),
        }
    }

    #[test]
    fn an_old_payload_passes_through_every_step_in_order() {
        let (payload, version) = chain()
            .upcast(&placed(), 2, json!({ "markers": [] }))
            .unwrap();
        assert_eq!((payload, version), (json!({ "markers": [2, 3] }), 4));
    }

    #[test]
    fn a_current_payload_is_borrowed_not_copied() {
        let payload = json!({ "markers": [] });
        let (lifted, version) = chain().upcast_ref(&placed(), 4, &payload).unwrap();
        assert!(matches!(lifted, Cow::Borrowed(_)));
        assert_eq!(version, 4);
    }

    #[test]
    fn versions_outside_the_chain_are_refused_with_what_to_do() {
        let chain = chain();
        assert_eq!(chain.versions(&placed()), Some(2..=4));
        for version in [0, 1] {
            let err = chain.upcast(&placed(), version, json!({})).unwrap_err();
            assert!(reason(err).starts_with("unknown version"));
        }
        let err = chain.upcast(&placed(), 5, json!({})).unwrap_err();
        assert!(reason(err).contains("upgrade"));
    }

    #[test]
    fn unregistered_types_pass_through_unchanged() {
        let other = EventType::from_static("invoice.sent");
        let (payload, version) = chain().upcast(&other, 7, json!(1)).unwrap();
        assert_eq!((payload, version), (json!(1), 7));
        assert_eq!(chain().versions(&other), None);
    }

    #[test]
    fn a_failing_step_is_an_error_naming_the_step() {
        let err = chain()
            .upcast(&placed(), 2, json!({ "no": "markers" }))
            .unwrap_err();
        assert_eq!(
            reason(err),
            "the step from version 2 to 3 failed: no markers"
        );
    }

    #[test]
    fn an_envelope_gets_its_payload_lifted_and_its_version_set() {
        let envelope = Envelope::builder(
            EventId::from_u128(1),
            placed(),
            "shop",
            Timestamp::UNIX_EPOCH,
        )
        .schema_version(3)
        .payload(Payload::Json(json!({ "markers": [] })))
        .build()
        .unwrap();
        let lifted = chain().upcast_envelope(envelope).unwrap();
        assert_eq!(lifted.schema_version, 4);
        assert_eq!(lifted.payload, Payload::Json(json!({ "markers": [3] })));
    }

    #[test]
    fn an_old_binary_payload_cannot_be_lifted() {
        let envelope = Envelope::builder(
            EventId::from_u128(1),
            placed(),
            "shop",
            Timestamp::UNIX_EPOCH,
        )
        .schema_version(3)
        .payload(Payload::Binary(vec![1]))
        .build()
        .unwrap();
        assert!(reason(chain().upcast_envelope(envelope).unwrap_err()).contains("binary"));
    }
}
