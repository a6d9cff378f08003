//! Every upcaster chain that builds lifts every version from its lowest to its current
//! one to exactly the current version, applying each step once and in order; versions
//! outside that range, and chains with a hole, are typed errors.

use std::collections::BTreeMap;

use keel::upcast::{UpcastStep, UpcasterChain};
use keel::{Envelope, Error, EventId, EventType, Payload, Timestamp};
use proptest::prelude::*;
use serde_json::{Value, json};

/// The step that lifts version `FROM`: appends `FROM` to the payload's `markers`.
fn mark<const FROM: u32>(mut payload: Value) -> Result<Value, String> {
    let markers = payload["markers"]
        .as_array_mut()
        .ok_or("the payload has no `markers` list")?;
    markers.push(json!(FROM));
    Ok(payload)
}

/// `STEPS[v]` lifts version `v`; a function pointer cannot capture its version, so each
/// is a distinct instance of `mark`.
const STEPS: [UpcastStep; 9] = [
    mark::<0>, mark::<1>, mark::<2>, mark::<3>, mark::<4>, mark::<5>, mark::<6>, mark::<7>,
    mark::<8>,
];

/// One event type's declaration: its current version (1 to 8) and its lowest liftable
/// version (1 to current).
#[derive(Debug, Clone)]
struct Declared {
    current: u32,
    lowest: u32,
}

fn declared() -> impl Strategy<Value = Declared> {
    (1..=8_u32)
        .prop_flat_map(|current| (Just(current), 1..=current))
        .prop_map(|(current, lowest)| Declared { current, lowest })
}

/// Up to four types, each with a random range, with their steps registered in a random
/// order.
fn chains() -> impl Strategy<Value = (BTreeMap<String, Declared>, Vec<(String, u32)>)> {
    prop::collection::btree_map("[a-z]{1,6}\\.[a-z]{1,6}", declared(), 1..5).prop_flat_map(
        |types| {
            let steps: Vec<(String, u32)> = types
                .iter()
                .flat_map(|(name, d)| (d.lowest..d.current).map(move |v| (name.clone(), v)))
                .collect();
            (Just(types), Just(steps).prop_shuffle())
        },
    )
}

fn build(
    types: &BTreeMap<String, Declared>,
    steps: &[(String, u32)],
) -> Result<UpcasterChain, Error> {
    let mut builder = UpcasterChain::builder();
    for (name, d) in types {
        builder = builder.current(name.clone(), d.current);
    }
    for (name, from) in steps {
        // Versions past the table only occur in chains that must not build.
        let step = STEPS.get(*from as usize).copied().unwrap_or(mark::<99>);
        builder = builder.step(name.clone(), *from, step);
    }
    builder.build()
}

fn unmarked() -> Value {
    json!({ "markers": [] })
}

proptest! {
    #[test]
    fn every_known_version_lifts_to_the_current_one_with_each_step_in_order(
        (types, steps) in chains(),
    ) {
        let chain = build(&types, &steps).expect("a complete chain builds");
        prop_assert_eq!(chain.event_types().count(), types.len());
        for (name, d) in &types {
            let event_type = EventType::new(name.clone()).expect("valid");
            prop_assert_eq!(chain.versions(&event_type), Some(d.lowest..=d.current));
            prop_assert_eq!(chain.current_version(&event_type), Some(d.current));
            for version in d.lowest..=d.current {
                let (payload, reached) = chain
                    .upcast(&event_type, version, unmarked())
                    .expect("a known version lifts");
                let markers: Vec<u32> = (version..d.current).collect();
                prop_assert_eq!(reached, d.current);
                prop_assert_eq!(payload, json!({ "markers": markers }));

                let envelope = Envelope::builder(
                    EventId::from_u128(1),
                    event_type.clone(),
                    "test",
                    Timestamp::UNIX_EPOCH,
                )
                .schema_version(version)
                .payload(Payload::Json(unmarked()))
                .build()
                .expect("valid");
                let lifted = chain.upcast_envelope(envelope).expect("lifts");
                prop_assert_eq!(lifted.schema_version, d.current);
                prop_assert_eq!(lifted.payload, Payload::Json(json!({ "markers": markers })));
            }
        }
    }

    #[test]
    fn versions_outside_the_chain_are_typed_errors(
        (types, steps) in chains(),
        above in 1..=u32::MAX - 8,
    ) {
        let chain = build(&types, &steps).expect("a complete chain builds");
        for (name, d) in &types {
            let event_type = EventType::new(name.clone()).expect("valid");
            let too_high = d.current.saturating_add(above);
            for version in (0..d.lowest).chain([too_high]) {
                let err = chain.upcast(&event_type, version, unmarked()).unwrap_err();
                let expected = if version > d.current { "upgrade" } else { "unknown version" };
                prop_assert!(
                    matches!(&err, Error::Upcast { version: v, reason, .. } if *v == version && reason.contains(expected)),
                    "{:?}", err
                );
            }
        }
    }

    #[test]
    fn a_chain_with_a_missing_step_does_not_build(
        (types, steps) in chains(),
        pick in any::<prop::sample::Index>(),
    ) {
        // Only a step strictly above a type's lowest leaves a hole; removing the lowest
        // one just raises the lowest liftable version.
        let holes: Vec<usize> = steps
            .iter()
            .enumerate()
            .filter(|(_, (name, from))| *from > types[name].lowest)
            .map(|(i, _)| i)
            .collect();
        prop_assume!(!holes.is_empty());
        let mut steps = steps;
        let (name, missing) = steps.remove(holes[pick.index(holes.len())]);
        let err = build(&types, &steps).unwrap_err();
        prop_assert!(matches!(&err, Error::Upcast { .. }), "{:?}", err);
        // Every other type kept all its steps, so the hole reported is the one made.
        if let Error::Upcast { event_type, version, .. } = &err {
            prop_assert_eq!((event_type.as_str(), *version), (name.as_str(), missing));
        }
    }

    #[test]
    fn a_step_at_or_above_the_current_version_does_not_build(
        (types, steps) in chains(),
        extra in 0..4_u32,
    ) {
        let (name, d) = types.iter().next().expect("at least one type");
        let mut steps = steps;
        steps.push((name.clone(), d.current + extra));
        let err = build(&types, &steps).unwrap_err();
        prop_assert!(
            matches!(&err, Error::Upcast { reason, .. } if reason.contains("current version")),
            "{:?}", err
        );
    }
}

#[test]
fn a_type_never_registered_passes_through_at_any_version() {
    let chain = UpcasterChain::builder()
        .current("order.placed", 3)
        .step("order.placed", 2, STEPS[2])
        .build()
        .expect("builds");
    let other = EventType::from_static("order.paid");
    for version in [0, 1, 9, u32::MAX] {
        assert_eq!(
            chain.upcast(&other, version, unmarked()),
            Ok((unmarked(), version))
        );
    }
    assert_eq!(chain.versions(&other), None);
}
