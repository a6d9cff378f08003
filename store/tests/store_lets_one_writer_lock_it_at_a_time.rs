//! Every backend lets one writer lock the store at a time: a second `lock_writer`, from
//! the same handle or another one on the same store (another process, for SQLite and
//! PostgreSQL), fails with `Error::StoreLocked` naming the first holder's pid, host and
//! since when; dropping the guard frees it. The lock stops nobody else: a second handle
//! reads and appends while it is held. On SQLite the operating system frees it when the
//! holding process dies: a child process takes it and is killed with SIGKILL.

use crate::common::child::ChildTest;
use crate::common::stores;

use std::path::Path;
use std::time::Duration;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, StreamId, Timestamp};
use keel_store::Error;
use keel_store::LockHolder;
use stores::Backend;

/// Names the database the child locks.
const CHILD_VAR: &str = "KEEL_LOCK_CHILD";
/// The longest wait for the child to say it holds the lock.
const CHILD_START_WAIT: Duration = Duration::from_secs(20);
/// How long the child holds the lock if nobody kills it: it must not outlive the test.
const CHILD_HOLDS_FOR: Duration = Duration::from_secs(60);

fn holder(pid: u32, host: &str) -> LockHolder {
    LockHolder {
        pid,
        host: host.to_owned(),
        since: Timestamp::from_unix_nanos(1_700_000_000_000_000_000),
    }
}

fn event(id: u128) -> Envelope {
    Envelope::builder(
        EventId::from_u128(id),
        EventType::from_static("lock.tested"),
        "test",
        Timestamp::UNIX_EPOCH,
    )
    .build()
    .expect("a valid envelope")
}

/// The holder a refusal names, after checking that its message names it too.
fn refused_holder(error: Error, backend: &str) -> Option<LockHolder> {
    let message = error.to_string();
    let Error::StoreLocked { holder, location } = error else {
        panic!("{backend}: not StoreLocked: {error:?}");
    };
    assert!(!location.is_empty(), "{backend}");
    if let Some(holder) = &holder {
        for part in [
            holder.pid.to_string(),
            holder.host.clone(),
            holder.since.to_string(),
        ] {
            assert!(message.contains(&part), "{backend}: {message}");
        }
    }
    assert!(message.contains("stop the other orchestrator"), "{message}");
    holder
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_second_lock_is_refused_with_the_first_holder_until_it_is_dropped() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let other = test.reopen().await;
        let (first, second) = (holder(4242, "first-host"), holder(7, "second-host"));
        let lock = test.store.lock_writer(&first).await.unwrap();
        assert_eq!(lock.holder(), &first, "{name}");
        for store in [&test.store, &other] {
            let error = store.lock_writer(&second).await.unwrap_err();
            assert_eq!(refused_holder(error, name), Some(first.clone()), "{name}");
        }
        drop(lock);
        let again = test.store.lock_writer(&second).await.unwrap();
        assert_eq!(again.holder(), &second, "{name}");
        let error = other.lock_writer(&first).await.unwrap_err();
        assert_eq!(refused_holder(error, name), Some(second), "{name}");
        drop(again);
        drop(other);
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn another_handle_reads_and_appends_while_the_lock_is_held() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let stream = StreamId::from("locked");
        test.store
            .append(&stream, ExpectedVersion::NoStream, &[event(1)])
            .await
            .unwrap();
        let lock = test.store.lock_writer(&holder(1, "h")).await.unwrap();
        // For SQLite a second SqliteStore on the file, for PostgreSQL other connections:
        // as the `keel` CLI would open it while an orchestrator runs.
        let other = test.reopen().await;
        let appended = other
            .append(&stream, ExpectedVersion::Exact(1), &[event(2)])
            .await
            .unwrap();
        assert_eq!(appended.last_version, 2, "{name}");
        let read = other.read_stream(&stream, 1, 10).await.unwrap();
        assert_eq!(read.len(), 2, "{name}");
        assert_eq!(other.head().await.unwrap(), 2, "{name}");
        test.store
            .append(&stream, ExpectedVersion::Exact(2), &[event(3)])
            .await
            .unwrap();
        drop(lock);
        drop(other);
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_sqlite_lock_is_freed_when_its_holder_process_is_killed() {
    let Some(sqlite) = Backend::sqlite() else {
        return;
    };
    let test = sqlite.open().await;
    let path = test.sqlite_path().expect("a SQLite file").to_path_buf();
    let child = ChildTest::spawn(
        "store_lets_one_writer_lock_it_at_a_time::child_holds_the_writer_lock",
        CHILD_VAR,
        &path,
    );
    if let Err(error) = child.wait_for("locked", CHILD_START_WAIT, |_| {}) {
        panic!("the child never took the lock: {error}");
    }
    let mine = LockHolder::this_process(Timestamp::UNIX_EPOCH);
    let error = test.store.lock_writer(&mine).await.unwrap_err();
    let named = refused_holder(error, "sqlite").expect("the child recorded itself");
    assert_eq!(named.pid, child.id(), "the child is named");
    assert_eq!(named.host, mine.host);
    child.kill();
    let lock = test.store.lock_writer(&mine).await.unwrap();
    assert_eq!(lock.holder().pid, std::process::id());
    drop(lock);
    test.cleanup().await;
}

/// The child of [`a_sqlite_lock_is_freed_when_its_holder_process_is_killed`]: locks the
/// store named by [`CHILD_VAR`], says `locked`, and holds it until killed (or for
/// [`CHILD_HOLDS_FOR`]). Does nothing without the variable.
#[test]
#[ignore = "run by the lock test as a child process"]
fn child_holds_the_writer_lock() {
    let Some(path) = std::env::var_os(CHILD_VAR) else {
        return;
    };
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .unwrap();
    runtime.block_on(async {
        let store = stores::open_sqlite(Path::new(&path));
        let holder = LockHolder::this_process(Timestamp::UNIX_EPOCH);
        let _lock = store.lock_writer(&holder).await.unwrap();
        println!("locked");
        tokio::time::sleep(CHILD_HOLDS_FOR).await;
    });
}
