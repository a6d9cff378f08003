//! The order fulfilment example is killed with SIGKILL in the middle of a run; started
//! again with `--resume --db PATH`, it finishes every saga: unfinished=0 and
//! duplicate_effects=0 (the services' ledger survived the kill too, and keel sent every
//! retried step under the same idempotency key).

use std::io::{BufRead, BufReader};
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use crate::common::{EXAMPLE, TempDir, run, summary};

#[test]
fn a_killed_run_finishes_every_saga_on_resume_without_doubling_an_effect() {
    for delay_ms in [800, 400, 1_500] {
        let dir = TempDir::new("sigkill");
        let db = dir.db();
        let db_arg = db.to_str().expect("a UTF-8 path").to_owned();
        let mut child = Command::new(EXAMPLE)
            .args([
                "order_fulfillment",
                "--sagas",
                "3000",
                "--fail-rate",
                "0.3",
                "--db",
                &db_arg,
            ])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("the example starts");
        // Wait for it to announce its sagas (the store is open, services are up), then
        // let it work for a while before the kill.
        let stdout = child.stdout.take().expect("stdout");
        let mut lines = BufReader::new(stdout).lines();
        let deadline = Instant::now() + Duration::from_secs(60);
        for line in lines.by_ref() {
            let line = line.expect("a line");
            if line.starts_with("order_fulfillment:") {
                break;
            }
            assert!(Instant::now() < deadline, "the example never started");
        }
        std::thread::sleep(Duration::from_millis(delay_ms));
        child.kill().expect("SIGKILL");
        let status = child.wait().expect("the child ends");
        assert!(!status.success());

        let output = run(&["order_fulfillment", "--resume", "--db", &db_arg]);
        let text = String::from_utf8_lossy(&output.stdout);
        assert!(
            output.status.success(),
            "resume failed: {text}\n{}",
            String::from_utf8_lossy(&output.stderr)
        );
        let counts = summary(&output.stdout);
        assert_eq!(
            (counts.unfinished, counts.duplicate_effects),
            (0, 0),
            "{text}"
        );
        assert!(counts.sagas > 0, "{text}");
        let resumed = text
            .lines()
            .find_map(|line| line.strip_prefix("order_fulfillment: 0 new sagas, "))
            .and_then(|rest| rest.split(' ').next())
            .and_then(|n| n.parse::<u64>().ok())
            .unwrap_or(0);
        if resumed > 0 && counts.sagas < 3000 {
            return; // killed mid-run, with sagas in flight: the case this test is for
        }
        // The kill came before any saga started or after all ended: try another moment.
    }
    panic!("no kill landed in the middle of a run");
}
