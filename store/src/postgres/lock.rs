//! The writer lock of a PostgreSQL store: a session-level advisory lock, held by a
//! connection of its own for as long as the guard lives, and a row naming the holder.
//!
//! The lock belongs to the session, so it ends with it: a holder that crashes, or whose
//! connection is lost, holds nothing any more once the server has noticed (at once for
//! a closed socket, within the TCP keepalive time for a vanished host). That cuts both
//! ways: a lost connection loses the lock while its guard lives on, so it is a lock,
//! not a fence.
//!
//! The holder's row carries its session's backend pid; a refused locker names the row
//! only if that session is the one `pg_locks` shows holding the lock, so a row left by
//! a holder that died is never named.

use std::sync::{Arc, Mutex, PoisonError};

use tokio::runtime::Handle;
use tokio::task::JoinHandle;
use tokio_postgres::Client;

use super::schema::{TRY_LOCK_WRITER, UNLOCK_WRITER, WRITER_LOCK_KEY};
use super::{Inner, pool, storage};
use crate::error::Error;
use crate::{LockHolder, WriterLock};

/// The unlock of the last guard dropped, until it has run: this store's next lock waits
/// for it, so that dropping a guard and locking again never finds the lock still held.
pub(super) type Releasing = Arc<Mutex<Option<JoinHandle<()>>>>;

/// Takes the writer lock of the store `inner`, or names who has it.
pub(super) async fn lock(inner: &Inner, holder: &LockHolder) -> Result<WriterLock, Error> {
    let pending = inner
        .releasing
        .lock()
        .unwrap_or_else(PoisonError::into_inner)
        .take();
    if let Some(pending) = pending {
        // Its failure (a lost connection) released the lock as well.
        let _ = pending.await;
    }
    let schema = inner.schema.as_str().to_owned();
    let client = pool::connect_client(&inner.pg).await?;
    let locked: bool = client
        .query_one(TRY_LOCK_WRITER, &[&WRITER_LOCK_KEY, &schema])
        .await
        .map_err(storage("try the writer lock"))?
        .get(0);
    if !locked {
        let row = client
            .query_opt(&inner.sql.writer_holder, &[&WRITER_LOCK_KEY, &schema])
            .await
            .map_err(storage("read who holds the writer lock"))?;
        let holder = row.and_then(|row| serde_json::from_str(row.get(0)).ok());
        return Err(Error::StoreLocked {
            holder,
            location: inner.location.clone(),
        });
    }
    let text = serde_json::to_string(holder).map_err(|e| Error::Storage {
        backend: "postgres",
        reason: format!("could not encode the lock's holder: {e}"),
    })?;
    // On failure the client is dropped, its session ends and the lock with it.
    client
        .execute(&inner.sql.record_writer, &[&text])
        .await
        .map_err(storage("record the writer lock's holder"))?;
    let held = HeldSession {
        client: Some(client),
        schema,
        runtime: Handle::current(),
        releasing: Arc::clone(&inner.releasing),
    };
    Ok(WriterLock::new(
        holder.clone(),
        inner.location.clone(),
        held,
    ))
}

/// The session holding the lock; dropping it unlocks and closes it.
#[derive(Debug)]
struct HeldSession {
    client: Option<Client>,
    schema: String,
    /// The runtime the store runs on, to unlock from a `Drop` that may run elsewhere.
    runtime: Handle,
    releasing: Releasing,
}

impl Drop for HeldSession {
    fn drop(&mut self) {
        let Some(client) = self.client.take() else {
            return;
        };
        let schema = std::mem::take(&mut self.schema);
        // Unlocking explicitly rather than only closing the connection gives the store
        // a task to wait for (see `Releasing`); closing follows when the task drops the
        // client. Others see the lock free once the server has run the unlock.
        let unlock = self.runtime.spawn(async move {
            let _ = client
                .execute(UNLOCK_WRITER, &[&WRITER_LOCK_KEY, &schema])
                .await;
        });
        *self
            .releasing
            .lock()
            .unwrap_or_else(PoisonError::into_inner) = Some(unlock);
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_core::Timestamp;

    use super::super::PostgresStore;
    use super::super::testing::{fresh_store, raw_client};
    use super::*;
    use crate::EventStore;

    fn holder(pid: u32) -> LockHolder {
        LockHolder {
            pid,
            host: "h".to_owned(),
            since: Timestamp::UNIX_EPOCH,
        }
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_holder_whose_session_ends_holds_nothing_and_is_not_named() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let schema = config.schema.clone();
        let crashed = store.lock_writer(&holder(1)).await.unwrap();
        let raw = raw_client(&url).await;
        // The holder's session dies, as with a crashed process.
        let terminated = raw
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_locks \
                 WHERE locktype = 'advisory' AND granted AND objsubid = 2 \
                 AND classid = $1::int4::oid AND objid = hashtext($2::text)::oid",
                &[&WRITER_LOCK_KEY, &schema],
            )
            .await
            .unwrap();
        assert_eq!(terminated.len(), 1, "one session holds the lock");
        // The server frees the lock once the session is gone (a bounded wait for it).
        let mut taken = false;
        for _ in 0..400 {
            let row = raw
                .query_one(TRY_LOCK_WRITER, &[&WRITER_LOCK_KEY, &schema])
                .await
                .unwrap();
            taken = row.get(0);
            if taken {
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(taken, "the dead session's lock was never freed");
        // Held now by a session that recorded nobody: the dead holder's row stays
        // unnamed.
        let other = PostgresStore::connect(&url, config).await.unwrap();
        let error = other.lock_writer(&holder(2)).await.unwrap_err();
        assert!(
            matches!(&error, Error::StoreLocked { holder: None, .. }),
            "{error:?}"
        );
        raw.query_one(UNLOCK_WRITER, &[&WRITER_LOCK_KEY, &schema])
            .await
            .unwrap();
        let lock = other.lock_writer(&holder(2)).await.unwrap();
        let error = store.lock_writer(&holder(3)).await.unwrap_err();
        assert!(
            matches!(&error, Error::StoreLocked { holder: Some(h), .. } if h.pid == 2),
            "{error:?}"
        );
        drop((crashed, lock));
        store.drop_schema().await.unwrap();
    }
}
