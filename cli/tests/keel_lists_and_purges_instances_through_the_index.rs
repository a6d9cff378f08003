//! `keel instances` lists the store's index of instances (sagas and durable reducers
//! alike) with filters, and `keel instances purge --older-than` deletes the logs of the
//! instances that ended before then, and no others; a bad period is a clear error.
//! `keel instances show` rebuilds a durable reducer's instance as of any record.

use keel_demo::Example;
use keel_demo::args::Args;
use serde_json::Value;

use crate::common::{TempDir, keel};

fn json(out: &str) -> Value {
    serde_json::from_str(out).expect("JSON")
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_lists_the_index_and_purges_what_ended_before_the_retention() {
    let dir = TempDir::new("instances");
    let args = Args {
        sagas: 8,
        fail_rate: 0.3,
        seed: 7,
        db: Some(dir.db()),
        resume: false,
    };
    let code = keel_demo::run::run(Example::OrderFulfillment, args)
        .await
        .expect("the example runs");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let db = dir.db().to_str().expect("a UTF-8 path").to_owned();

    let (code, out, err) = keel(&["--db", &db, "--json", "instances", "list"]);
    assert_eq!(code, 0, "{err}");
    let all = json(&out);
    let all = all.as_array().expect("a list");
    assert_eq!(all.len(), 8, "{all:?}");
    assert!(
        all.iter().all(|e| e["kind"] == "order.fulfillment"),
        "{all:?}"
    );
    let ended = all.iter().filter(|e| e["finished"] == true).count();
    assert!(ended > 0, "seed 7 ends some sagas: {all:?}");
    let (code, out, _) = keel(&["--db", &db, "--json", "instances", "list", "--unfinished"]);
    assert_eq!(code, 0);
    let open = json(&out).as_array().expect("a list").len();
    assert_eq!(open + ended, 8);
    let (code, table, _) = keel(&[
        "--db",
        &db,
        "instances",
        "list",
        "--finished",
        "--limit",
        "2",
    ]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("STREAM")
            && table
                .trim_end()
                .ends_with(&format!("{} instances", ended.min(2))),
        "{table}"
    );

    // Nothing ended an hour ago; everything that ended, ended before now.
    let (code, out, err) = keel(&[
        "--db",
        &db,
        "--json",
        "instances",
        "purge",
        "--older-than",
        "1h",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["purged"], 0);
    let (code, out, err) = keel(&[
        "--db",
        &db,
        "--json",
        "instances",
        "purge",
        "--older-than",
        "0s",
    ]);
    assert_eq!(code, 0, "{err}");
    assert_eq!(json(&out)["purged"], ended);
    let (code, out, _) = keel(&["--db", &db, "--json", "instances", "list"]);
    assert_eq!(code, 0);
    let left = json(&out);
    let left = left.as_array().expect("a list");
    assert_eq!(left.len(), open);
    assert!(left.iter().all(|e| e["finished"] == false), "{left:?}");
    let (code, out, _) = keel(&["--db", &db, "--json", "sagas", "list"]);
    assert_eq!(code, 0);
    assert_eq!(
        json(&out).as_array().expect("a list").len(),
        open,
        "purged sagas are gone"
    );

    let (code, _, err) = keel(&["--db", &db, "instances", "purge", "--older-than", "soon"]);
    assert_ne!(code, 0);
    assert!(err.contains("--older-than"), "{err}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_shows_a_durable_instance_as_of_any_record() {
    let dir = TempDir::new("show");
    let args = Args {
        sagas: 3,
        fail_rate: 0.0,
        seed: 3,
        db: Some(dir.db()),
        resume: false,
    };
    let code = keel_demo::monitoring_run::run(args)
        .await
        .expect("the example runs");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    let db = dir.db().to_str().expect("a UTF-8 path").to_owned();
    let (code, out, err) = keel(&[
        "--db",
        &db,
        "--json",
        "instances",
        "list",
        "--kind",
        "equipment",
    ]);
    assert_eq!(code, 0, "{err}");
    let listed = json(&out);
    let stream = listed[0]["stream"].as_str().expect("a stream").to_owned();

    let (code, out, err) = keel(&["--db", &db, "--json", "instances", "show", &stream]);
    assert_eq!(code, 0, "{err}");
    let now = json(&out);
    let version = now["version"].as_u64().expect("a version");
    assert!(version > 2, "{now}");
    assert_eq!(now["status"], "finished", "{now}");
    assert_eq!(
        now["steps"].as_array().expect("steps").len() as u64,
        version
    );
    let (code, out, err) = keel(&[
        "--db",
        &db,
        "--json",
        "instances",
        "show",
        &stream,
        "--as-of",
        "1",
    ]);
    assert_eq!(code, 0, "{err}");
    let then = json(&out);
    assert_eq!(
        (then["version"].as_u64(), then["status"].as_str()),
        (Some(1), Some("running"))
    );
    // Commissioning was out after the first record: the rebuild says so.
    let in_flight = then["rebuilt"]["in_flight"].as_array().expect("in flight");
    assert_eq!(in_flight.len(), 1, "{then}");
    assert_ne!(then["rebuilt"]["state"], now["rebuilt"]["state"]);

    let (code, table, _) = keel(&["--db", &db, "instances", "show", &stream, "--as-of", "2"]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("RECORD") && table.contains("as of record 2"),
        "{table}"
    );
    let (code, _, err) = keel(&["--db", &db, "instances", "show", "saga-nothing"]);
    assert_ne!(code, 0);
    assert!(err.contains("no stream saga-nothing"), "{err}");
}
