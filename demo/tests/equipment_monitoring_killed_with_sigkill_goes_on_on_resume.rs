//! The equipment monitoring example, a user's own reducer on the durable driver, is
//! killed with SIGKILL in the middle of a run; started again with `--resume --db PATH`,
//! it brings every instance to rest (finished, or parked with an alarm):
//! unfinished=0 and duplicate_effects=0, counted from the store and from the services'
//! ledger, which survived the kill too.

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{EXAMPLE, TempDir, run};

/// The counts of the example's summary line, which must be its last line.
fn summary(stdout: &str) -> BTreeMap<String, u64> {
    let last = stdout.lines().last().unwrap_or_default();
    let rest = last
        .strip_prefix("summary: ")
        .unwrap_or_else(|| panic!("the last line is not a summary: {last:?}\n{stdout}"));
    let counts: BTreeMap<String, u64> = rest
        .split(' ')
        .map(|pair| {
            let (key, value) = pair.split_once('=').expect("key=value");
            (key.to_owned(), value.parse().expect("a count"))
        })
        .collect();
    let keys: Vec<&str> = counts.keys().map(String::as_str).collect();
    assert_eq!(
        keys,
        [
            "duplicate_effects",
            "finished",
            "instances",
            "parked",
            "unfinished"
        ]
    );
    counts
}

#[test]
fn a_fresh_run_brings_every_instance_to_rest() {
    let output = run(&[
        "equipment_monitoring",
        "--instances",
        "20",
        "--fail-rate",
        "0.3",
    ]);
    let text = String::from_utf8_lossy(&output.stdout);
    assert!(output.status.success(), "{text}");
    let counts = summary(&text);
    assert_eq!(counts["instances"], 20, "{text}");
    assert_eq!(
        (counts["unfinished"], counts["duplicate_effects"]),
        (0, 0),
        "{text}"
    );
    assert_eq!(counts["finished"] + counts["parked"], 20, "{text}");
    assert!(
        counts["finished"] > 0 && counts["parked"] > 0,
        "both ends reached: {text}"
    );
}

#[test]
fn a_killed_run_goes_on_with_every_instance_on_resume_without_doubling_a_call() {
    for delay_ms in [700, 300, 1_500] {
        let dir = TempDir::new("monitoring-sigkill");
        let db = dir.db();
        let db_arg = db.to_str().expect("a UTF-8 path").to_owned();
        let mut child = Command::new(EXAMPLE)
            .args([
                "equipment_monitoring",
                "--instances",
                "3000",
                "--fail-rate",
                "0.3",
            ])
            .args(["--db", &db_arg])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example starts");
        // Wait for it to announce its instances (the store is open, services are up),
        // then let it work for a while before the kill.
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in lines.by_ref() {
            if line.expect("a line").starts_with("equipment_monitoring:") {
                break;
            }
            assert!(Instant::now() < deadline, "the example never started");
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        assert!(!child.wait().expect("the child ends").success());

        let output = run(&["equipment_monitoring", "--resume", "--db", &db_arg]);
        let text = String::from_utf8_lossy(&output.stdout);
        let errors = String::from_utf8_lossy(&output.stderr);
        assert!(output.status.success(), "resume failed: {text}\n{errors}");
        let counts = summary(&text);
        assert_eq!(
            (counts["unfinished"], counts["duplicate_effects"]),
            (0, 0),
            "{text}"
        );
        let resumed = text
            .lines()
            .find_map(|line| line.strip_prefix("equipment_monitoring: 0 new instances, "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        let in_flight_sent_again = text.contains("calls in flight sent again");
        if resumed > 0 && in_flight_sent_again {
            assert!(counts["instances"] > 0, "{text}");
            return; // killed mid-run, with instances in flight: the case this test is for
        }
        // The kill came before any instance started or after all came to rest.
    }
    panic!("no kill landed in the middle of a run");
}
