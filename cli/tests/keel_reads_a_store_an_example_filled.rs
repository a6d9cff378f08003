//! `keel` lists, shows, tails and draws what the order fulfilment example left in its
//! store, as tables and as JSON, and answers a missing file, an unknown id or a command
//! that does not apply with a clear error.

use keel_demo::Example;
use keel_demo::args::Args;
use serde_json::Value;

use crate::common::{TempDir, keel};

async fn filled(dir: &TempDir) -> String {
    let args = Args {
        sagas: 6,
        fail_rate: 0.3,
        seed: 5,
        db: Some(dir.db()),
        resume: false,
    };
    let code = keel_demo::run::run(Example::OrderFulfillment, args)
        .await
        .expect("the example runs");
    assert_eq!(code, std::process::ExitCode::SUCCESS);
    dir.db().to_str().expect("a UTF-8 path").to_owned()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_lists_shows_tails_and_draws_what_an_example_left() {
    let dir = TempDir::new("read");
    let db = filled(&dir).await;

    let (code, out, err) = keel(&["--db", &db, "--json", "sagas", "list"]);
    assert_eq!(code, 0, "{err}");
    let sagas: Vec<Value> = serde_json::from_str(&out).expect("JSON");
    assert_eq!(sagas.len(), 6);
    let completed = sagas
        .iter()
        .filter(|s| s["status"]["status"] == "completed")
        .count();
    let (code, out, _) = keel(&[
        "--db",
        &db,
        "--json",
        "sagas",
        "list",
        "--status",
        "completed",
    ]);
    assert_eq!(code, 0);
    let only: Vec<Value> = serde_json::from_str(&out).expect("JSON");
    assert_eq!(only.len(), completed);

    let (code, table, _) = keel(&["--db", &db, "sagas", "list", "--type", "order.fulfillment"]);
    assert_eq!(code, 0);
    assert!(
        table.starts_with("SAGA")
            && table.contains("order-1 ")
            && table.trim_end().ends_with("6 sagas"),
        "{table}"
    );

    let (code, shown, _) = keel(&["--db", &db, "sagas", "show", "order-1"]);
    assert_eq!(code, 0);
    assert!(
        shown.starts_with("order-1  order.fulfillment") && shown.contains("place-order: started"),
        "{shown}"
    );
    let (code, timeline, _) = keel(&["--db", &db, "--json", "sagas", "show", "order-1"]);
    assert_eq!(code, 0);
    let timeline: Value = serde_json::from_str(&timeline).expect("JSON");
    assert_eq!(timeline["steps"][0], "place-order");

    let (code, tail, _) = keel(&[
        "--db",
        &db,
        "--json",
        "events",
        "tail",
        "--from",
        "1",
        "--limit",
        "4",
        "--types",
        "keel.saga.**",
    ]);
    assert_eq!(code, 0);
    let events: Vec<Value> = tail
        .lines()
        .map(|line| serde_json::from_str(line).expect("one JSON document per line"))
        .collect();
    assert_eq!(events.len(), 4);
    assert!(
        events
            .windows(2)
            .all(|w| w[0]["position"].as_u64() < w[1]["position"].as_u64())
    );
    assert!(events.iter().all(|e| e["type"] == "keel.saga.recorded"));

    let (code, stream, _) = keel(&["--db", &db, "--json", "streams", "show", "saga-order-1"]);
    assert_eq!(code, 0);
    let records: Vec<Value> = serde_json::from_str(&stream).expect("JSON");
    assert_eq!(records[0]["data"]["event"]["event"], "started");

    let (code, dot, _) = keel(&["diagram", "order_fulfillment", "--format", "dot"]);
    assert_eq!(code, 0);
    assert!(
        dot.contains("undo_charge_payment -> undo_place_order [style=dashed];"),
        "{dot}"
    );
    let (code, mermaid, _) = keel(&["diagram", "traffic_light"]);
    assert_eq!(code, 0);
    assert!(mermaid.starts_with("stateDiagram-v2"), "{mermaid}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn keel_answers_mistakes_with_clear_errors() {
    let dir = TempDir::new("errors");
    let db = filled(&dir).await;
    let (code, _, err) = keel(&["--db", "/nonexistent/keel.db", "sagas", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no store at /nonexistent/keel.db"), "{err}");
    let (code, _, err) = keel(&["sagas", "list"]);
    assert_eq!(code, 1);
    assert!(err.contains("no store: pass --store"), "{err}");
    let (code, _, err) = keel(&["--db", &db, "sagas", "show", "order-999"]);
    assert_eq!(code, 1);
    assert!(err.contains("no saga `order-999`"), "{err}");
    let (code, _, err) = keel(&["--db", &db, "sagas", "retry", "order-1"]);
    assert_eq!(code, 1);
    assert!(err.contains("not needs_intervention"), "{err}");
    let (code, _, err) = keel(&["--db", &db, "sagas", "list", "--status", "happy"]);
    assert_eq!(code, 1);
    assert!(err.contains("unknown status `happy`"), "{err}");
    let (code, _, err) = keel(&["--db", &db, "streams", "show", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("no stream `nope`"), "{err}");
    let (code, _, err) = keel(&["--db", &db, "dead-letters", "replay", "7"]);
    assert_eq!(code, 1);
    assert!(err.contains("no dead letter 7"), "{err}");
    let (code, _, err) = keel(&["diagram", "nope"]);
    assert_eq!(code, 1);
    assert!(err.contains("use one of order_fulfillment"), "{err}");
    let (code, _, err) = keel(&[
        "--db",
        "postgres://nobody@127.0.0.1:1/none",
        "sagas",
        "list",
    ]);
    assert_eq!(code, 1);
    assert!(err.contains("cannot open the PostgreSQL store"), "{err}");
}
