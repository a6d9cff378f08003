//! A store says whether a failed operation is worth trying again. A database that is
//! away for now is `Error::Unavailable`, and the same operation succeeds once it is
//! back: a SQLite file another connection holds the write lock of past the store's busy
//! timeout, a PostgreSQL session the server terminated while an operation waited in it
//! or while it sat idle in the pool. What the stored data makes fail is
//! `Error::Storage`, every time: a damaged SQLite row. (A PostgreSQL server nobody
//! listens for, a bad URL and a refused login are unit tests of the postgres module;
//! the classification tables are unit tests of each backend's `failure` module.)

use crate::common::stores;

use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, StreamId, Timestamp};
use keel_store::Error;
use stores::Backend;

fn event(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("outage.tested"),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope")
}

fn unavailable(error: &Error, backend: &str) {
    assert!(
        matches!(error, Error::Unavailable { backend: b, .. } if *b == backend),
        "{error:?}"
    );
    assert!(error.is_unavailable());
    assert!(
        error.to_string().contains("try the same operation again"),
        "{error}"
    );
}

/// A SQLite test store holding one event in a stream, the stream, and a plain
/// connection to its file; `None` if this build has no SQLite.
#[cfg(feature = "sqlite")]
async fn sqlite_store_with_one_event() -> Option<(stores::TestStore, StreamId, rusqlite::Connection)>
{
    let test = Backend::sqlite()?.open().await;
    let stream = StreamId::from("s");
    test.store
        .append(&stream, ExpectedVersion::NoStream, &[event(1)])
        .await
        .expect("a first append to a fresh store");
    let path = test.sqlite_path().expect("a SQLite test store has a file");
    let other = rusqlite::Connection::open(path).expect("a second connection to the file");
    Some((test, stream, other))
}

#[cfg(feature = "sqlite")]
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_file_another_writer_holds_past_the_busy_timeout_is_unavailable_until_released() {
    let Some((test, stream, other)) = sqlite_store_with_one_event().await else {
        return;
    };
    // Another process's writer, in effect: its write transaction holds the file's write
    // lock, so the store's `BEGIN IMMEDIATE` waits out its busy timeout (5 s), then
    // SQLite answers SQLITE_BUSY.
    other.execute_batch("BEGIN IMMEDIATE").unwrap();
    let error = test
        .store
        .append(&stream, ExpectedVersion::Exact(1), &[event(2)])
        .await
        .unwrap_err();
    unavailable(&error, "sqlite");
    assert!(error.to_string().contains("locked"), "{error}");
    // WAL lets readers on meanwhile; nothing of the failed append is there.
    assert_eq!(test.store.read_all(1, 10).await.unwrap().len(), 1);

    other.execute_batch("ROLLBACK").unwrap();
    let retried = test
        .store
        .append(&stream, ExpectedVersion::Exact(1), &[event(2)])
        .await
        .unwrap();
    assert_eq!((retried.first_position, retried.deduplicated), (2, false));
    drop(other);
    test.cleanup().await;
}

#[cfg(feature = "sqlite")]
#[tokio::test]
async fn a_damaged_sqlite_row_is_a_storage_error_every_time() {
    let Some((test, _, other)) = sqlite_store_with_one_event().await else {
        return;
    };
    other
        .execute_batch("UPDATE events SET payload = 'not json' WHERE position = 1")
        .unwrap();
    drop(other);
    for _ in 0..2 {
        let error = test.store.read_all(1, 10).await.unwrap_err();
        assert!(
            matches!(&error, Error::Storage { reason, .. } if reason.contains("damaged")),
            "{error:?}"
        );
        assert!(!error.is_unavailable());
    }
    test.cleanup().await;
}

#[cfg(feature = "postgres")]
mod postgres {
    use super::*;

    use keel_store::EventStore;
    use keel_store::postgres::{PostgresConfig, PostgresStore};
    use serde_json::json;

    /// How many times a test waits [`POLL`] for the server to do something.
    const POLLS_MAX: usize = 400;
    const POLL: Duration = Duration::from_millis(25);

    /// A store in a schema of its own with one pooled connection, so that which
    /// connection an operation uses is known; and a plain client beside it.
    async fn one_connection_store(url: &str) -> (PostgresStore, String, tokio_postgres::Client) {
        let schema = format!("keel_t_{}", uuid::Uuid::new_v4().simple());
        let config = PostgresConfig {
            schema: schema.clone(),
            connections: 1,
        };
        let store = PostgresStore::connect(url, config)
            .await
            .expect("the test server is reachable");
        let (client, connection) = tokio_postgres::connect(url, tokio_postgres::NoTls)
            .await
            .expect("a plain client connects");
        tokio::spawn(connection);
        (store, schema, client)
    }

    /// Terminates the store's sessions (`application_name` is `keel:<schema>`) that
    /// match `condition`, once at least one does; how many it terminated.
    async fn terminate(client: &tokio_postgres::Client, schema: &str, condition: &str) -> usize {
        let application = format!("keel:{schema}");
        for _ in 0..POLLS_MAX {
            let rows = client
                .query(
                    &format!(
                        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                         WHERE application_name = $1 AND {condition}"
                    ),
                    &[&application],
                )
                .await
                .expect("pg_stat_activity is readable");
            if !rows.is_empty() {
                return rows.len();
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("no session of the store matched {condition}");
    }

    /// Tries `operation` until it succeeds, [`POLL`] apart, checking that every failure
    /// on the way says the store is unavailable.
    async fn until_back<T, F>(mut operation: impl FnMut() -> F) -> T
    where
        F: Future<Output = Result<T, Error>>,
    {
        for _ in 0..POLLS_MAX {
            match operation().await {
                Ok(value) => return value,
                Err(error) => unavailable(&error, "postgres"),
            }
            tokio::time::sleep(POLL).await;
        }
        panic!("the store never came back");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_session_terminated_mid_operation_is_unavailable_until_the_pool_reconnects()
    {
        let Some(Backend::Postgres(url)) = Backend::postgres().await else {
            return;
        };
        let (store, schema, client) = one_connection_store(&url).await;
        let stream = StreamId::from("s");
        store
            .set_metadata(&stream, &json!({ "v": 1 }))
            .await
            .unwrap();
        // Hold the metadata row, so that the store's update waits in its session.
        client.batch_execute("BEGIN").await.unwrap();
        client
            .execute(
                &format!("SELECT * FROM \"{schema}\".stream_metadata FOR UPDATE"),
                &[],
            )
            .await
            .unwrap();
        let updating = tokio::spawn({
            let store = store.clone();
            let stream = stream.clone();
            async move { store.set_metadata(&stream, &json!({ "v": 2 })).await }
        });
        let terminated = terminate(&client, &schema, "wait_event_type = 'Lock'").await;
        assert_eq!(terminated, 1);
        let error = updating.await.unwrap().unwrap_err();
        // The server answers the waiting statement with 57P01 (admin shutdown) and
        // closes the session, or the client sees the socket close first: either way
        // the server may be back in a moment.
        unavailable(&error, "postgres");
        client.batch_execute("ROLLBACK").await.unwrap();

        // The same operation again: it works once the pool has noticed the connection
        // closed and replaced it. (A try right after the failure may still get the old
        // connection, and fail as unavailable too: "connection closed".)
        let update = json!({ "v": 2 });
        until_back(|| store.set_metadata(&stream, &update)).await;
        assert_eq!(
            store.metadata(&stream).await.unwrap(),
            Some(json!({ "v": 2 }))
        );
        store.drop_schema().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_postgres_store_whose_idle_sessions_are_terminated_recovers_by_itself() {
        let Some(Backend::Postgres(url)) = Backend::postgres().await else {
            return;
        };
        let (store, schema, client) = one_connection_store(&url).await;
        store.head().await.unwrap();
        // The pooled connection and the listener's, both idle.
        terminate(&client, &schema, "true").await;
        let application = format!("keel:{schema}");
        // The pool notices a lost connection at its next checkout, if its driver task
        // has seen the server close it by then; an operation that comes first fails
        // (with the server's 57P01, waiting on the socket). Either way the store works
        // again without being reopened.
        assert_eq!(until_back(|| store.head()).await, 0);
        let sessions = client
            .query(
                "SELECT 1 FROM pg_stat_activity WHERE application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        assert!(!sessions.is_empty(), "the store reconnected");
        store.drop_schema().await.unwrap();
    }
}
