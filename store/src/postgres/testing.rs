//! Helpers for the tests that need a PostgreSQL server, found through `KEEL_PG_URL`.
//! Without it those tests say so on stderr and pass.

use keel_core::{Envelope, EventId, EventType, Payload, Timestamp};
use tokio_postgres::NoTls;

use super::{PostgresConfig, PostgresStore};

/// What a test prints when it is skipped: the same line as the behaviour tests print,
/// which the README quotes.
const SKIPPED: &str = "skipped postgres: KEEL_PG_URL not set";

/// The server's URL, or `None` (after saying the test is skipped).
pub(super) fn url() -> Option<String> {
    match std::env::var("KEEL_PG_URL") {
        Ok(url) if !url.is_empty() => Some(url),
        _ => {
            say_skipped(SKIPPED);
            None
        }
    }
}

/// Says (once per test binary) that the PostgreSQL cases are skipped, on the process's
/// real stderr: libtest captures `eprintln!` of passing tests, and this line is for the
/// person running `cargo test` on a machine without the server.
fn say_skipped(line: &str) {
    use std::io::Write as _;
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let _ = writeln!(
            std::io::stderr(),
            "{line} (every PostgreSQL case of this test binary)"
        );
    });
}

#[test]
fn the_skip_line_is_the_one_the_readme_quotes() {
    let readme = include_str!("../../../README.md");
    assert!(readme.contains(&format!("`{SKIPPED}`")));
}

/// A configuration with a schema of its own, so tests run in parallel.
pub(super) fn unique_config() -> PostgresConfig {
    PostgresConfig {
        schema: format!("keel_test_{}", uuid::Uuid::new_v4().simple()),
        connections: 2,
    }
}

/// A store in a fresh schema, with its URL and configuration (to connect again).
pub(super) async fn fresh_store() -> Option<(PostgresStore, String, PostgresConfig)> {
    let url = url()?;
    let config = unique_config();
    let store = PostgresStore::connect(&url, config.clone()).await.unwrap();
    Some((store, url, config))
}

/// A plain client, for doing by hand what a store would not.
pub(super) async fn raw_client(url: &str) -> tokio_postgres::Client {
    let (client, connection) = tokio_postgres::connect(url, NoTls).await.unwrap();
    tokio::spawn(connection);
    client
}

pub(super) fn event(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("a.b"),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .payload(Payload::Json(
        serde_json::json!({ "n": id as u64, "f": 1.5, "s": "x\u{0}y" }),
    ))
    .build()
    .unwrap()
}
