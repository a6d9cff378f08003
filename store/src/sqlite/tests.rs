//! The SQLite store's own behaviour: the contract cases the memory store's tests cover,
//! plus what only a file has: reopening, foreign files, schema versions, concurrency.

use std::path::PathBuf;
use std::sync::Arc;

use keel_core::{
    CausationId, Cause, CorrelationId, Envelope, EventId, EventType, ExpectedVersion, Intent,
    IntentKind, Payload, Priority, StreamId, TimerId, Timestamp,
};
use serde_json::json;

use super::{SCHEMA_VERSION, SqliteConfig, SqliteStore, schema};
use crate::error::Error;
use crate::{EventStore, ProjectionState, StoredSnapshot, Trim};

/// A directory of its own under the system's temp dir, removed on drop.
struct TempDir(PathBuf);

impl TempDir {
    fn new() -> Self {
        let path = std::env::temp_dir().join(format!("keel-test-{}", uuid::Uuid::new_v4()));
        std::fs::create_dir_all(&path).unwrap();
        Self(path)
    }

    fn file(&self) -> PathBuf {
        self.0.join("store.keel")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

fn open(dir: &TempDir) -> SqliteStore {
    SqliteStore::open(dir.file(), SqliteConfig::default()).unwrap()
}

fn event(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("a.b"),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .unwrap()
}

/// An envelope with every optional field set.
fn full_event(id: u128) -> Envelope {
    let mut envelope = Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("order.payment.completed"),
        "billing",
        Timestamp::from_unix_nanos(1_700_000_000_123_456_789),
    )
    .correlation_id(CorrelationId::from_u128(7))
    .causation_id(CausationId::from_u128(8))
    .target("shipping")
    .subject("order-42")
    .sequence(u64::MAX)
    .schema_version(3)
    .priority(Priority::High)
    .meta("tenant", "acme")
    .meta("attempt", 2_i64)
    .build()
    .unwrap();
    envelope.payload = Payload::Json(json!({"amount": 12.5, "lines": [1, "two", null]}));
    envelope
}

fn intent(position: u32) -> Intent {
    Intent {
        id: Cause::root(9).intent_id(position),
        kind: IntentKind::CancelTimer {
            timer: TimerId::from_static("t"),
        },
    }
}

fn ids(events: &[crate::RecordedEvent]) -> Vec<(u64, u64)> {
    events.iter().map(|e| (e.version, e.position)).collect()
}

#[tokio::test]
async fn appends_number_versions_per_stream_and_positions_globally() {
    let dir = TempDir::new();
    let store = open(&dir);
    let (a, b) = (StreamId::from("a"), StreamId::from("b"));
    let first = store
        .append(&a, ExpectedVersion::NoStream, &[event(1), event(2)])
        .await
        .unwrap();
    let second = store
        .append(&b, ExpectedVersion::NoStream, &[event(3)])
        .await
        .unwrap();
    assert_eq!(
        (
            first.first_version,
            first.last_version,
            first.first_position
        ),
        (1, 2, 1)
    );
    assert_eq!((second.first_version, second.first_position), (1, 3));
    let all = store.read_all(2, 10).await.unwrap();
    assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), [2, 3]);
    assert_eq!(all[1].stream, b);
    assert_eq!(ids(&store.read_stream(&a, 2, 10).await.unwrap()), [(2, 2)]);
    assert_eq!(store.head().await.unwrap(), 3);
    assert_eq!(*store.watch_head().borrow(), 3);
    assert_eq!(store.stream_version(&a).await.unwrap(), 2);
    assert_eq!(
        store.stream_version(&StreamId::from("none")).await.unwrap(),
        0
    );
}

#[tokio::test]
async fn every_envelope_field_and_both_payload_kinds_round_trip() {
    let dir = TempDir::new();
    let store = open(&dir);
    let json_event = full_event(1);
    let mut binary_event = full_event(2);
    binary_event.payload = Payload::Binary(vec![0, 159, 146, 150, 255]);
    let mut text_event = event(3);
    // A JSON payload that looks like a number must come back as JSON, not an integer.
    text_event.payload = Payload::Json(json!(7));
    let stream = StreamId::from("order-42");
    let batch = [json_event, binary_event, text_event];
    store
        .append(&stream, ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    let read = store.read_stream(&stream, 0, 10).await.unwrap();
    let envelopes: Vec<_> = read.into_iter().map(|e| e.envelope).collect();
    assert_eq!(envelopes, batch);
    let all: Vec<_> = store
        .read_all(1, 10)
        .await
        .unwrap()
        .into_iter()
        .map(|e| e.envelope)
        .collect();
    assert_eq!(all, batch);
}

#[tokio::test]
async fn a_version_conflict_names_the_actual_version_and_stores_nothing() {
    let dir = TempDir::new();
    let store = open(&dir);
    let a = StreamId::from("a");
    store
        .append(&a, ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap();
    let error = store
        .append_with_intents(&a, ExpectedVersion::Exact(0), &[event(2)], &[intent(0)])
        .await
        .unwrap_err();
    assert!(
        matches!(error, Error::VersionConflict { actual: 1, .. }),
        "{error:?}"
    );
    assert_eq!(store.stream_version(&a).await.unwrap(), 1);
    assert_eq!(store.head().await.unwrap(), 1);
    assert!(
        store.pending_intents(10).await.unwrap().is_empty(),
        "the outbox commits with the events"
    );
    let next = store
        .append(&a, ExpectedVersion::Exact(1), &[event(2)])
        .await
        .unwrap();
    assert_eq!((next.first_version, next.first_position), (2, 2));
}

#[tokio::test]
async fn repeating_an_append_answers_with_the_earlier_result() {
    let dir = TempDir::new();
    let store = open(&dir);
    let a = StreamId::from("a");
    store
        .append(&StreamId::from("other"), ExpectedVersion::Any, &[event(9)])
        .await
        .unwrap();
    let batch = [event(1), event(2)];
    let first = store
        .append(&a, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    let again = store
        .append(&a, ExpectedVersion::NoStream, &batch)
        .await
        .unwrap();
    assert!(again.deduplicated && !first.deduplicated);
    assert_eq!(
        (
            again.first_version,
            again.last_version,
            again.first_position
        ),
        (
            first.first_version,
            first.last_version,
            first.first_position
        )
    );
    // A suffix of the earlier batch is a repeat too.
    let tail = store
        .append(&a, ExpectedVersion::Any, &batch[1..])
        .await
        .unwrap();
    assert_eq!(
        (tail.first_version, tail.first_position, tail.deduplicated),
        (2, 3, true)
    );
    assert_eq!(store.stream_version(&a).await.unwrap(), 2);
    assert_eq!(store.head().await.unwrap(), 3);
}

#[tokio::test]
async fn an_event_id_reused_anywhere_else_is_refused() {
    let dir = TempDir::new();
    let store = open(&dir);
    let (a, b) = (StreamId::from("a"), StreamId::from("b"));
    store
        .append(&a, ExpectedVersion::NoStream, &[event(1)])
        .await
        .unwrap();
    let cases: [(&StreamId, Vec<Envelope>, u128); 4] = [
        (&a, vec![event(2), event(1)], 1),
        (&b, vec![event(1)], 1),
        (&b, vec![event(3), event(4), event(3)], 3),
        // A stored id is named before an id repeated within the batch, as in memory.
        (&b, vec![event(5), event(5), event(1)], 1),
    ];
    for (stream, batch, duplicate) in cases {
        let error = store
            .append(stream, ExpectedVersion::Any, &batch)
            .await
            .unwrap_err();
        let expected = EventId::from_u128(duplicate).to_string();
        assert!(
            matches!(&error, Error::DuplicateEventId { id } if *id == expected),
            "{error:?}"
        );
    }
    assert_eq!(store.head().await.unwrap(), 1);
    assert_eq!(store.stream_version(&b).await.unwrap(), 0);
}

#[tokio::test]
async fn pending_intents_stay_until_completed_and_survive_reopening() {
    let dir = TempDir::new();
    let a = StreamId::from("a");
    {
        let store = open(&dir);
        store
            .append_with_intents(
                &a,
                ExpectedVersion::Any,
                &[event(1)],
                &[intent(0), intent(1), intent(0)],
            )
            .await
            .unwrap();
        // An empty batch still records its intents; a recorded id is left as it is.
        let empty = store
            .append_with_intents(&a, ExpectedVersion::Exact(1), &[], &[intent(2), intent(1)])
            .await
            .unwrap();
        assert_eq!(
            (
                empty.first_version,
                empty.last_version,
                empty.first_position
            ),
            (2, 1, 2)
        );
    }
    let store = open(&dir);
    let pending = store.pending_intents(10).await.unwrap();
    assert_eq!(pending, [intent(0), intent(1), intent(2)]);
    store
        .complete_intents(&[pending[0].id, pending[2].id, Cause::root(1).intent_id(5)])
        .await
        .unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.pending_intents(10).await.unwrap(), [intent(1)]);
    assert_eq!(store.pending_intents(0).await.unwrap(), []);
}

#[tokio::test]
async fn snapshots_metadata_and_projections_are_kept() {
    let dir = TempDir::new();
    let store = open(&dir);
    let a = StreamId::from("a");
    assert_eq!(store.load_snapshot(&a).await.unwrap(), None);
    assert_eq!(store.metadata(&a).await.unwrap(), None);
    for version in [3, 5] {
        let snapshot = StoredSnapshot {
            stream: a.clone(),
            version,
            state: json!({"seen": version}),
        };
        store.save_snapshot(&snapshot).await.unwrap();
        assert_eq!(store.load_snapshot(&a).await.unwrap(), Some(snapshot));
    }
    store
        .set_metadata(&a, &json!({"max_age": 60}))
        .await
        .unwrap();
    assert_eq!(store.stream_version(&a).await.unwrap(), 0);
    assert_eq!(
        store.metadata(&a).await.unwrap(),
        Some(json!({"max_age": 60}))
    );

    let state = |checkpoint| ProjectionState {
        checkpoint,
        model: json!({"count": checkpoint}),
    };
    assert_eq!(store.load_projection("p").await.unwrap(), None);
    store.save_projection("p", 0, &state(4)).await.unwrap();
    let error = store.save_projection("p", 0, &state(6)).await.unwrap_err();
    assert_eq!(
        error,
        Error::ProjectionConflict {
            name: "p".to_owned(),
            expected: 0,
            actual: 4
        }
    );
    store.save_projection("p", 4, &state(6)).await.unwrap();
    drop(store);
    let store = open(&dir);
    assert_eq!(store.load_projection("p").await.unwrap(), Some(state(6)));
    assert_eq!(store.load_snapshot(&a).await.unwrap().unwrap().version, 5);
    assert_eq!(
        store.metadata(&a).await.unwrap(),
        Some(json!({"max_age": 60}))
    );
}

#[tokio::test]
async fn trimming_keeps_the_version_the_head_and_the_ids() {
    let dir = TempDir::new();
    let store = open(&dir);
    let (a, b) = (StreamId::from("a"), StreamId::from("b"));
    store
        .append(&b, ExpectedVersion::Any, &[event(10)])
        .await
        .unwrap();
    let batch = [event(1), event(2), event(3)];
    store
        .append(&a, ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    assert_eq!(store.trim(&a, Trim::KeepLast(1)).await.unwrap(), 2);
    assert_eq!(store.stream_version(&a).await.unwrap(), 3);
    assert_eq!(ids(&store.read_stream(&a, 1, 10).await.unwrap()), [(3, 4)]);
    assert_eq!(ids(&store.read_all(1, 10).await.unwrap()), [(1, 1), (3, 4)]);
    assert_eq!(store.trim(&a, Trim::BeforeVersion(3)).await.unwrap(), 0);
    assert_eq!(
        store
            .trim(&StreamId::from("none"), Trim::KeepLast(0))
            .await
            .unwrap(),
        0
    );

    // A repeat of the trimmed append still deduplicates; its ids stay taken.
    let again = store
        .append(&a, ExpectedVersion::Any, &batch)
        .await
        .unwrap();
    assert!(again.deduplicated);
    assert_eq!((again.first_version, again.first_position), (1, 2));
    for batch in [vec![event(1)], vec![event(20), event(2)]] {
        let error = store
            .append(&b, ExpectedVersion::Any, &batch)
            .await
            .unwrap_err();
        assert!(matches!(error, Error::DuplicateEventId { .. }), "{error:?}");
    }

    // Trimming the newest events lowers neither the version nor the head.
    assert_eq!(store.trim(&a, Trim::KeepLast(0)).await.unwrap(), 1);
    drop(store);
    let store = open(&dir);
    assert_eq!(store.head().await.unwrap(), 4);
    assert_eq!(store.stream_version(&a).await.unwrap(), 3);
    let next = store
        .append(&a, ExpectedVersion::Exact(3), &[event(4)])
        .await
        .unwrap();
    assert_eq!((next.first_version, next.first_position), (4, 5));
}

#[tokio::test]
async fn reopening_keeps_every_event_and_the_head() {
    let dir = TempDir::new();
    let streams: Vec<StreamId> = (0..3).map(|i| StreamId::from(format!("s{i}"))).collect();
    {
        let store = open(&dir);
        for round in 0..4_u128 {
            for (index, stream) in (0_u128..).zip(&streams) {
                store
                    .append(
                        stream,
                        ExpectedVersion::Any,
                        &[event(round * 10 + index + 1)],
                    )
                    .await
                    .unwrap();
            }
        }
    }
    let store = open(&dir);
    assert_eq!(*store.watch_head().borrow(), 12);
    let all = store.read_all(0, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=12).collect::<Vec<_>>()
    );
    for stream in &streams {
        assert_eq!(store.stream_version(stream).await.unwrap(), 4);
    }
    assert_eq!(store.path(), dir.file());
}

#[test]
fn a_file_of_garbage_is_not_a_store() {
    let dir = TempDir::new();
    let garbage: Vec<u8> = (0..8192_u32).map(|i| (i * 7 + 3) as u8).collect();
    std::fs::write(dir.file(), &garbage).unwrap();
    let error = SqliteStore::open(dir.file(), SqliteConfig::default()).unwrap_err();
    assert!(matches!(error, Error::NotAStore { .. }), "{error:?}");
    assert_eq!(std::fs::read(dir.file()).unwrap(), garbage);
}

#[test]
fn a_foreign_sqlite_database_is_not_a_store_and_stays_untouched() {
    let dir = TempDir::new();
    {
        let foreign = rusqlite::Connection::open(dir.file()).unwrap();
        foreign
            .execute_batch("CREATE TABLE customers (id INTEGER PRIMARY KEY, name TEXT);")
            .unwrap();
    }
    let before = std::fs::read(dir.file()).unwrap();
    let error = SqliteStore::open(dir.file(), SqliteConfig::default()).unwrap_err();
    assert!(matches!(error, Error::NotAStore { .. }), "{error:?}");
    assert_eq!(std::fs::read(dir.file()).unwrap(), before);
    assert!(!dir.0.join("store.keel-wal").exists(), "no switch to WAL");
}

#[test]
fn a_newer_schema_is_refused() {
    let dir = TempDir::new();
    drop(open(&dir));
    {
        let connection = rusqlite::Connection::open(dir.file()).unwrap();
        connection.pragma_update(None, "user_version", 999).unwrap();
    }
    let error = SqliteStore::open(dir.file(), SqliteConfig::default()).unwrap_err();
    assert_eq!(
        error,
        Error::SchemaTooNew {
            found: 999,
            supported: SCHEMA_VERSION
        }
    );
}

#[test]
fn a_keel_file_missing_a_table_is_damaged() {
    let dir = TempDir::new();
    drop(open(&dir));
    {
        let connection = rusqlite::Connection::open(dir.file()).unwrap();
        connection.execute_batch("DROP TABLE outbox").unwrap();
    }
    let error = SqliteStore::open(dir.file(), SqliteConfig::default()).unwrap_err();
    assert!(
        matches!(&error, Error::NotAStore { reason, .. } if reason.contains("outbox")),
        "{error:?}"
    );
}

#[test]
fn an_empty_file_becomes_a_store_and_a_missing_directory_is_unavailable() {
    let dir = TempDir::new();
    std::fs::write(dir.file(), b"").unwrap();
    drop(open(&dir));
    let connection = rusqlite::Connection::open(dir.file()).unwrap();
    let id: i32 = connection
        .pragma_query_value(None, "application_id", |row| row.get(0))
        .unwrap();
    assert_eq!(id, schema::APPLICATION_ID);
    let error =
        SqliteStore::open(dir.0.join("missing/store.keel"), SqliteConfig::default()).unwrap_err();
    // SQLITE_CANTOPEN: the directory may be a volume not mounted yet, so this is worth
    // trying again (see `failure::is_transient`), and the message names the path.
    assert!(
        matches!(&error, Error::Unavailable { reason, .. } if reason.contains("missing")),
        "{error:?}"
    );
}

#[test]
fn out_of_range_settings_are_refused() {
    let dir = TempDir::new();
    for config in [
        SqliteConfig {
            readers: 0,
            ..SqliteConfig::default()
        },
        SqliteConfig {
            group_commit_max: 0,
            ..SqliteConfig::default()
        },
    ] {
        let error = SqliteStore::open(dir.file(), config).unwrap_err();
        assert!(matches!(error, Error::InvalidConfig { .. }), "{error:?}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sixty_four_concurrent_writers_all_succeed_with_contiguous_positions() {
    let dir = TempDir::new();
    let store = Arc::new(open(&dir));
    let mut tasks = Vec::new();
    for writer in 0..64_u128 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::from(format!("writer-{writer}"));
            for round in 0..20_u128 {
                let appended = store
                    .append(
                        &stream,
                        ExpectedVersion::Exact(round as u64),
                        &[event(writer * 1000 + round + 1)],
                    )
                    .await
                    .unwrap();
                assert_eq!(appended.first_version, round as u64 + 1);
            }
        }));
    }
    for task in tasks {
        task.await.unwrap();
    }
    let all = store.read_all(1, 10_000).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=64 * 20).collect::<Vec<_>>()
    );
    assert_eq!(store.head().await.unwrap(), 64 * 20);
    for writer in 0..64 {
        let stream = StreamId::from(format!("writer-{writer}"));
        let events = store.read_stream(&stream, 1, 100).await.unwrap();
        assert_eq!(
            events.iter().map(|e| e.version).collect::<Vec<_>>(),
            (1..=20).collect::<Vec<_>>()
        );
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_conflicting_appends_have_one_winner_per_version() {
    let dir = TempDir::new();
    let store = Arc::new(open(&dir));
    let stream = StreamId::from("contended");
    for version in 0..10_u64 {
        let mut tasks = Vec::new();
        for contender in 0..16_u128 {
            let (store, stream) = (Arc::clone(&store), stream.clone());
            let id = u128::from(version) * 100 + contender + 1;
            tasks.push(tokio::spawn(async move {
                store
                    .append_with_intents(
                        &stream,
                        ExpectedVersion::Exact(version),
                        &[event(id)],
                        &[intent(id as u32)],
                    )
                    .await
            }));
        }
        let mut winners = 0;
        for task in tasks {
            match task.await.unwrap() {
                Ok(appended) => {
                    winners += 1;
                    assert_eq!(appended.first_version, version + 1);
                }
                Err(Error::VersionConflict { actual, .. }) => assert_eq!(actual, version + 1),
                Err(other) => panic!("unexpected {other:?}"),
            }
        }
        assert_eq!(winners, 1, "version {version}");
    }
    assert_eq!(store.stream_version(&stream).await.unwrap(), 10);
    assert_eq!(store.head().await.unwrap(), 10);
    assert_eq!(store.pending_intents(100).await.unwrap().len(), 10);
}

/// One-event appends run without a savepoint: a refused one in the middle of a group
/// must leave nothing behind and must not disturb the others.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn refused_one_event_appends_in_a_group_leave_the_others_whole() {
    let dir = TempDir::new();
    let store = Arc::new(open(&dir));
    store
        .append_with_intents(
            &StreamId::from("first"),
            ExpectedVersion::NoStream,
            &[event(1)],
            &[intent(1)],
        )
        .await
        .unwrap();
    let mut tasks = Vec::new();
    for writer in 0..64_u128 {
        let store = Arc::clone(&store);
        tasks.push(tokio::spawn(async move {
            let stream = StreamId::from(format!("writer-{writer}"));
            // A third reuse the stored id, a third expect a version the stream is not
            // at, and the rest append; each with an intent of its own.
            let (id, expected) = match writer % 3 {
                0 => (1, ExpectedVersion::NoStream),
                1 => (writer + 100, ExpectedVersion::Exact(5)),
                _ => (writer + 100, ExpectedVersion::NoStream),
            };
            let result = store
                .append_with_intents(
                    &stream,
                    expected,
                    &[event(id)],
                    &[intent(writer as u32 + 2)],
                )
                .await;
            (writer, result)
        }));
    }
    let mut stored = 0;
    for task in tasks {
        match task.await.unwrap() {
            (writer, Ok(appended)) => {
                assert_eq!(writer % 3, 2);
                assert_eq!(appended.first_version, 1);
                stored += 1;
            }
            (writer, Err(Error::DuplicateEventId { .. })) => assert_eq!(writer % 3, 0),
            (writer, Err(Error::VersionConflict { actual: 0, .. })) => assert_eq!(writer % 3, 1),
            (writer, Err(other)) => panic!("writer {writer}: unexpected {other:?}"),
        }
    }
    assert_eq!(stored, 21);
    let all = store.read_all(1, 100).await.unwrap();
    assert_eq!(
        all.iter().map(|e| e.position).collect::<Vec<_>>(),
        (1..=22).collect::<Vec<_>>()
    );
    assert_eq!(store.head().await.unwrap(), 22);
    assert_eq!(store.pending_intents(100).await.unwrap().len(), 22);
    for writer in (0..64).filter(|writer| writer % 3 != 2) {
        let stream = StreamId::from(format!("writer-{writer}"));
        assert_eq!(store.stream_version(&stream).await.unwrap(), 0);
    }
}

/// The write connection the store opens with its default configuration fsyncs every
/// commit: `synchronous=FULL`, which SQLite reads back as 2.
#[test]
fn the_writer_runs_with_synchronous_full_by_default() {
    let dir = TempDir::new();
    let config = SqliteConfig::default();
    let connection = schema::open_writer(&dir.file(), config.synchronous_full).unwrap();
    let level: i64 = connection
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .unwrap();
    assert_eq!(level, schema::SYNCHRONOUS_FULL);
    assert_eq!(level, 2);
    drop(connection);
    let relaxed = schema::open_writer(&dir.file(), false).unwrap();
    let level: i64 = relaxed
        .pragma_query_value(None, "synchronous", |row| row.get(0))
        .unwrap();
    assert_eq!(level, 1, "synchronous_full: false asks for NORMAL");
}

/// No connection memory-maps the file: with a map, an I/O error on the file is a SIGBUS
/// that kills the process instead of an error.
#[test]
fn neither_readers_nor_the_writer_memory_map_the_file() {
    let dir = TempDir::new();
    let writer = schema::open_writer(&dir.file(), true).unwrap();
    let reader = schema::open_reader(&dir.file()).unwrap();
    for (connection, name) in [(&reader, "reader"), (&writer, "writer")] {
        let mmap_size: i64 = connection
            .pragma_query_value(None, "mmap_size", |row| row.get(0))
            .unwrap();
        assert_eq!(mmap_size, 0, "the {name} maps {mmap_size} bytes");
    }
}

/// The writer lock is a file beside the database holding the holder as JSON; a second
/// path to the same database (through a symlink) shares it.
#[tokio::test]
async fn the_writer_lock_is_a_file_beside_the_database_naming_its_holder() {
    let dir = TempDir::new();
    let store = open(&dir);
    let holder = crate::LockHolder {
        pid: 12,
        host: "here".to_owned(),
        since: Timestamp::from_unix_nanos(3),
    };
    let lock = store.lock_writer(&holder).await.unwrap();
    let text = std::fs::read_to_string(dir.0.join("store.keel.lock")).unwrap();
    let recorded: crate::LockHolder = serde_json::from_str(&text).unwrap();
    assert_eq!(recorded, holder);
    let link = dir.0.join("link.keel");
    std::os::unix::fs::symlink(dir.file(), &link).unwrap();
    let through_link = SqliteStore::open(&link, SqliteConfig::default()).unwrap();
    let error = through_link.lock_writer(&holder).await.unwrap_err();
    assert!(
        matches!(&error, Error::StoreLocked { holder: Some(h), .. } if *h == holder),
        "{error:?}"
    );
    drop(lock);
    through_link.lock_writer(&holder).await.unwrap();
}

/// Appends made one after another commit one transaction each; appends made at once
/// share transactions (and so fsyncs).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn concurrent_appends_share_transactions() {
    const WRITERS: u64 = 64;
    let dir = TempDir::new();
    let store = Arc::new(open(&dir));
    for id in 1..=3 {
        store
            .append(&StreamId::from("alone"), ExpectedVersion::Any, &[event(id)])
            .await
            .unwrap();
    }
    assert_eq!(store.commits(), 3, "one transaction per append made alone");

    let start = Arc::new(tokio::sync::Barrier::new(WRITERS as usize));
    let mut tasks = Vec::new();
    for writer in 0..WRITERS {
        let (store, start) = (Arc::clone(&store), Arc::clone(&start));
        tasks.push(tokio::spawn(async move {
            start.wait().await;
            let stream = StreamId::from(format!("writer-{writer}"));
            store
                .append(
                    &stream,
                    ExpectedVersion::NoStream,
                    &[event(1_000 + u128::from(writer))],
                )
                .await
        }));
    }
    for task in tasks {
        task.await.unwrap().unwrap();
    }
    assert_eq!(store.head().await.unwrap(), 3 + WRITERS);
    let commits = store.commits() - 3;
    assert!(
        (1..WRITERS).contains(&commits),
        "{WRITERS} concurrent appends took {commits} transactions"
    );
}

#[tokio::test]
async fn the_head_watch_moves_after_each_commit() {
    let dir = TempDir::new();
    let store = open(&dir);
    let mut head = store.watch_head();
    assert_eq!(*head.borrow_and_update(), 0);
    store
        .append(
            &StreamId::from("a"),
            ExpectedVersion::Any,
            &[event(1), event(2)],
        )
        .await
        .unwrap();
    assert!(head.has_changed().unwrap());
    assert_eq!(*head.borrow_and_update(), 2);
    store
        .set_metadata(&StreamId::from("a"), &json!(1))
        .await
        .unwrap();
    assert!(!head.has_changed().unwrap(), "no event, no move");
    drop(store);
    assert!(
        head.has_changed().is_err(),
        "a dropped store closes the watch"
    );
}

/// A full disk, for real: `max_page_count` caps the file at the pages it has, so the
/// next write that needs a page fails with SQLITE_FULL. However much of the transaction
/// SQLite rolls back for it, the append fails as `Unavailable` (not as "no such
/// savepoint", which a rolled-back transaction would give), and succeeds once there is
/// room. Driven on the writer's own types, since the store's connection is private.
#[test]
fn a_full_disk_fails_an_append_as_unavailable_until_there_is_room() {
    use super::transaction::{Statements, Transaction};
    use super::writer::Op;

    let dir = TempDir::new();
    drop(open(&dir));
    let connection = schema::open_writer(&dir.file(), true).unwrap();
    let pages: i64 = connection
        .pragma_query_value(None, "page_count", |row| row.get(0))
        .unwrap();
    connection
        .pragma_update(None, "max_page_count", pages)
        .unwrap();
    let mut statements = Statements::prepare(&connection).unwrap();
    let stream = StreamId::from("full");
    // Several events, so the append runs inside a savepoint; large enough to need pages.
    let events: Vec<Envelope> = (1..=20)
        .map(|id| {
            let mut event = event(id);
            event.payload = Payload::Json(json!("x".repeat(8 << 10)));
            event
        })
        .collect();
    let op = Op::append(&stream, ExpectedVersion::NoStream, &events, &[]).unwrap();

    let mut transaction = Transaction::begin(&connection, &mut statements).unwrap();
    let error = match transaction.apply_isolated(&op) {
        // SQLite rolled the whole transaction back (what the bundled SQLite does for
        // SQLITE_FULL here): the group fails.
        Err(group) => group,
        // SQLite undid the statement only: the request's own answer.
        Ok(Err(request)) => request,
        Ok(Ok(answer)) => panic!("stored on a full disk: {answer:?}"),
    };
    transaction.abort();
    assert!(
        matches!(&error, Error::Unavailable { reason, .. } if reason.contains("full")),
        "{error:?}"
    );

    connection
        .pragma_update(None, "max_page_count", 1_u32 << 30)
        .unwrap();
    let mut transaction = Transaction::begin(&connection, &mut statements).unwrap();
    let answer = transaction.apply_isolated(&op).unwrap().unwrap();
    assert_eq!(transaction.commit().unwrap(), 20, "{answer:?}");
}

/// Stores `events` in a version-1 file as the writer of that version did: their rows,
/// the streams' versions and the head, but no index.
fn write_version_1(path: &std::path::Path, events: &[(&str, Envelope)]) {
    let connection = rusqlite::Connection::open(path).unwrap();
    connection.execute_batch(schema::SCHEMA_V1).unwrap();
    connection
        .pragma_update(None, "application_id", schema::APPLICATION_ID)
        .unwrap();
    connection.pragma_update(None, "user_version", 1).unwrap();
    let mut versions = std::collections::HashMap::new();
    for (position, (stream, envelope)) in (1_i64..).zip(events) {
        let version = versions.entry(*stream).or_insert(0_i64);
        *version += 1;
        let row = super::row::EventRow::encode(envelope).unwrap();
        let place: [&dyn rusqlite::ToSql; 3] = [&position, stream, &*version];
        connection
            .execute(
                "INSERT INTO events (position, stream, version, id, event_type, source, \
                 target, time_ns, correlation_id, causation_id, subject, sequence, \
                 schema_version, priority, metadata, payload) VALUES (?1, ?2, ?3, ?4, ?5, \
                 ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16)",
                rusqlite::params_from_iter(place.into_iter().chain(row.envelope_params())),
            )
            .unwrap();
        connection
            .execute(
                "INSERT INTO streams (stream, version) VALUES (?1, ?2) \
                 ON CONFLICT (stream) DO UPDATE SET version = excluded.version",
                rusqlite::params![stream, *version],
            )
            .unwrap();
    }
    connection
        .execute(
            "UPDATE keel_meta SET value = ?1 WHERE key = 'head'",
            [events.len() as i64],
        )
        .unwrap();
}

#[tokio::test]
async fn a_version_1_file_is_migrated_keeping_its_events_and_indexing_their_marks() {
    use crate::{InstanceMark, InstanceQuery};
    let dir = TempDir::new();
    let marked = |id: u128, status: &str, finished: bool| {
        let mut envelope = full_event(id);
        envelope.time = Timestamp::from_unix_nanos(1_000 + id as i64);
        InstanceMark::new("saga", status, finished).apply(&mut envelope);
        envelope
    };
    // An older keel wrote no marks (`a`); `b`'s marks stand for a writer that marked
    // before upgrading its store: the last marked event of each stream counts.
    let events = [
        ("a", full_event(1)),
        ("b", marked(2, "running", false)),
        ("a", event(3)),
        ("b", marked(4, "completed", true)),
        ("b", event(5)),
    ];
    write_version_1(&dir.file(), &events);

    let store = open(&dir);
    let stored: Vec<_> = store.read_all(1, 10).await.unwrap();
    let envelopes: Vec<&Envelope> = stored.iter().map(|e| &e.envelope).collect();
    let written: Vec<&Envelope> = events.iter().map(|(_, e)| e).collect();
    assert_eq!(envelopes, written, "every event is kept as it was");
    let rows = store.instances(&InstanceQuery::all()).await.unwrap();
    assert_eq!(rows.len(), 1, "unmarked streams have no row: {rows:?}");
    let row = &rows[0];
    assert_eq!(
        (row.stream.as_str(), row.status.as_str(), row.finished),
        ("b", "completed", true)
    );
    assert_eq!((row.version, row.position), (2, 4));
    assert_eq!(row.updated, Timestamp::from_unix_nanos(1_004));
    assert!(
        store
            .read_unfinished(None, None, 10)
            .await
            .unwrap()
            .is_empty()
    );
    // Readers learn that the events up to the old head may be unmarked.
    assert_eq!(store.unindexed_head().await.unwrap(), 5);
    // The migrated store goes on as any other: numbering, and the index.
    let next = store
        .append(
            &"a".into(),
            ExpectedVersion::Exact(2),
            &[marked(6, "running", false)],
        )
        .await
        .unwrap();
    assert_eq!((next.first_version, next.first_position), (3, 6));
    let unfinished = store.read_unfinished(None, None, 10).await.unwrap();
    assert_eq!(ids(&unfinished), [(1, 1), (2, 3), (3, 6)]);
    drop(store);

    let connection = rusqlite::Connection::open(dir.file()).unwrap();
    let version: u32 = connection
        .pragma_query_value(None, "user_version", |row| row.get(0))
        .unwrap();
    assert_eq!(version, SCHEMA_VERSION);
}

#[tokio::test]
async fn reading_the_unfinished_streams_never_scans_the_events() {
    let dir = TempDir::new();
    let store = open(&dir);
    let mark = crate::InstanceMark::new("saga", "running", false);
    for id in 1..=20 {
        let mut envelope = event(id);
        mark.apply(&mut envelope);
        let stream = StreamId::from(format!("s{id}"));
        store
            .append(&stream, ExpectedVersion::Any, &[envelope])
            .await
            .unwrap();
    }
    drop(store);
    let connection = rusqlite::Connection::open(dir.file()).unwrap();
    let plan = |sql: &str, params: &[&dyn rusqlite::ToSql]| {
        let mut explain = connection
            .prepare(&format!("EXPLAIN QUERY PLAN {sql}"))
            .unwrap();
        let mut rows = explain.query(params).unwrap();
        let mut plan = String::new();
        while let Some(row) = rows.next().unwrap() {
            plan.push_str(&row.get::<_, String>(3).unwrap());
            plan.push('\n');
        }
        plan
    };
    let no_kind: Option<&str> = None;
    for kind in [no_kind, Some("saga")] {
        // The partial index of unfinished rows in stream order first, then each one's
        // own stream's events through their index: no `SCAN` of `events`, ever.
        let next = plan(super::read::READ_UNFINISHED_NEXT, &[&"s1", &10, &kind]);
        assert!(
            next.contains("SEARCH i USING INDEX instances_unfinished (stream>?)"),
            "the unfinished rows are walked from the cursor:\n{next}"
        );
        let rest = plan(super::read::READ_UNFINISHED_REST, &[&"s1", &1, &10, &kind]);
        for plan in [next, rest] {
            assert!(
                plan.contains("SEARCH e USING INDEX sqlite_autoindex_events_")
                    || plan.contains("SEARCH events USING INDEX sqlite_autoindex_events_"),
                "each stream's events are found through their index:\n{plan}"
            );
            assert!(
                !plan
                    .lines()
                    .any(|line| line.contains("SCAN e") || line.contains("SCAN events")),
                "no event is read but the chosen ones:\n{plan}"
            );
        }
    }
}
