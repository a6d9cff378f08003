//! Each example, run with a few sagas and a fail rate, prints every saga's timeline and
//! ends with a summary counted from the store and the services' ledger: every saga ended
//! (completed or compensated), none is unfinished, no effect was applied twice, and the
//! exit code is 0.

use crate::common::{TempDir, run, summary};

fn runs_cleanly(name: &str) {
    let dir = TempDir::new(name);
    let db = dir.db();
    let output = run(&[
        name,
        "--sagas",
        "8",
        "--fail-rate",
        "0.2",
        "--seed",
        "3",
        "--db",
        db.to_str().expect("a UTF-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(
        output.status.success(),
        "{name} failed: {}\n{stdout}\n{}",
        output.status,
        String::from_utf8_lossy(&output.stderr)
    );
    let counts = summary(&output.stdout);
    assert_eq!(counts.sagas, 8, "{stdout}");
    assert_eq!(
        (counts.unfinished, counts.duplicate_effects),
        (0, 0),
        "{stdout}"
    );
    assert_eq!(
        counts.completed + counts.compensated + counts.needs_intervention,
        8,
        "{stdout}"
    );
    assert!(
        counts.completed > 0 && counts.compensated > 0,
        "a fail rate of 0.2 over 8 sagas (seed 3) gives both ends: {stdout}"
    );
    // A few sagas: each one's timeline is printed.
    for n in 1..=8 {
        assert!(
            stdout.contains(&format!("-{n}  ")),
            "no timeline for saga {n}:\n{stdout}"
        );
    }
    assert!(
        stdout.contains("compensating: step"),
        "a compensated saga's timeline says why:\n{stdout}"
    );
}

#[test]
fn order_fulfillment_ends_with_a_clean_summary() {
    runs_cleanly("order_fulfillment");
}

#[test]
fn equipment_commissioning_ends_with_a_clean_summary() {
    runs_cleanly("equipment_commissioning");
}

#[test]
fn deployment_governance_ends_with_a_clean_summary() {
    runs_cleanly("deployment_governance");
}

#[test]
fn many_sagas_show_progress_and_throughput_instead_of_timelines() {
    let dir = TempDir::new("many");
    let db = dir.db();
    let output = run(&[
        "order_fulfillment",
        "--sagas",
        "60",
        "--fail-rate",
        "0.2",
        "--db",
        db.to_str().expect("a UTF-8 path"),
    ]);
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{stdout}");
    assert!(
        stdout.contains("sagas at rest in") && stdout.contains("sagas/s"),
        "{stdout}"
    );
    assert!(
        !stdout.contains("place-order: started"),
        "no timelines for 60 sagas:\n{stdout}"
    );
    let counts = summary(&output.stdout);
    assert_eq!(
        (counts.sagas, counts.unfinished, counts.duplicate_effects),
        (60, 0, 0),
        "{stdout}"
    );
}

#[test]
fn bad_options_are_refused_with_the_usage() {
    let output = run(&["order_fulfillment", "--fail-rate", "7"]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("outside 0 to 1"));
    let output = run(&[
        "order_fulfillment",
        "--resume",
        "--db",
        "/nonexistent/keel.db",
    ]);
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("nothing to resume"));
}
