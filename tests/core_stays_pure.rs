//! keel-core is sans-IO: its manifest lists only serde, serde_json, thiserror and uuid.
//!
//! `.ci/run` checks the whole resolved tree with `cargo tree`; this test catches the
//! mistake earlier, in every developer's `cargo test`.

use std::collections::BTreeSet;

const ALLOWED: [&str; 4] = ["serde", "serde_json", "thiserror", "uuid"];

/// The names of the crates in one `[section]` of a Cargo manifest.
fn dependencies(manifest: &str, section: &str) -> BTreeSet<String> {
    let header = format!("[{section}]");
    manifest
        .lines()
        .skip_while(|line| line.trim() != header)
        .skip(1)
        .take_while(|line| !line.trim_start().starts_with('['))
        .filter_map(|line| {
            let line = line.split('#').next()?.trim();
            let name = line.split(['=', '.']).next()?.trim();
            (!name.is_empty()).then(|| name.to_owned())
        })
        .collect()
}

#[test]
fn keel_core_depends_only_on_pure_crates() {
    let manifest = include_str!("../core/Cargo.toml");
    let names = dependencies(manifest, "dependencies");
    assert!(
        !names.is_empty(),
        "the [dependencies] section was not found"
    );
    let impure: Vec<_> = names
        .iter()
        .filter(|n| !ALLOWED.contains(&n.as_str()))
        .collect();
    assert!(
        impure.is_empty(),
        "keel-core must stay sans-IO, but depends on {impure:?}"
    );
    assert!(
        !manifest.contains("[target."),
        "keel-core must not add platform-specific dependencies"
    );
}

#[test]
fn keel_core_enables_no_uuid_feature_that_draws_randomness() {
    let workspace = include_str!("../Cargo.toml");
    let uuid_line = workspace
        .lines()
        .find(|line| line.starts_with("uuid"))
        .expect("uuid is a workspace dependency");
    for feature in ["\"v4\"", "\"v7\"", "\"fast-rng\"", "\"rng\""] {
        assert!(
            !uuid_line.contains(feature),
            "uuid feature {feature} brings a random source"
        );
    }
}
