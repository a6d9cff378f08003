//! [`EventStore`] for [`PostgresStore`]: appends go to the writer task (see
//! [`append`](super::append)); everything else runs on a pooled connection.

use keel_core::{Envelope, ExpectedVersion, Intent, IntentId, StreamId, Timestamp};
use serde::Serialize;
use serde::de::DeserializeOwned;
use tokio::sync::{oneshot, watch};
use tokio_postgres::Row;

use super::append::{MarkRow, Request};
use super::{PostgresStore, clamp_i64, from_i64, storage, to_i64};
use crate::error::Error;
use crate::index::{InstanceEntry, InstanceQuery, last_mark};
use crate::{
    Appended, EventStore, LockHolder, ProjectionState, READ_LIMIT_MAX, RecordedEvent, StoreFuture,
    StoredSnapshot, Trim, WriterLock, check_append,
};

impl EventStore for PostgresStore {
    fn append_with_intents<'a>(
        &'a self,
        stream: &'a StreamId,
        expected: ExpectedVersion,
        events: &'a [Envelope],
        intents: &'a [Intent],
    ) -> StoreFuture<'a, Appended> {
        Box::pin(async move {
            check_append(events, intents)?;
            writable_stream(stream)?;
            let envelopes = events;
            // Encoding here, in the caller's task, keeps the single writer free for I/O.
            let events = events
                .iter()
                .map(|event| Ok((event.id, encode(event, "an event")?)))
                .collect::<Result<Vec<_>, Error>>()?;
            let intents = intents
                .iter()
                .map(|intent| Ok((intent.id.to_string(), encode(intent, "an intent")?)))
                .collect::<Result<Vec<_>, Error>>()?;
            let mark = last_mark(envelopes)
                .map(|(offset, mark)| {
                    // The index's columns are text, which cannot hold NUL (the
                    // envelope's JSON escapes it).
                    if mark.kind.contains('\0') || mark.status.contains('\0') {
                        return Err(nul_error("instance kinds and statuses"));
                    }
                    Ok(MarkRow {
                        offset: offset as u64,
                        kind: mark.kind,
                        status: mark.status,
                        finished: mark.finished,
                        time_ns: envelopes[offset].time.unix_nanos(),
                    })
                })
                .transpose()?;
            let (reply, answer) = oneshot::channel();
            let request = Request {
                stream: stream.clone(),
                expected,
                events,
                intents,
                mark,
                reply,
            };
            self.inner
                .writer
                .send(request)
                .await
                .map_err(|_| Error::ShutDown)?;
            answer.await.map_err(|_| Error::ShutDown)?
        })
    }

    fn read_stream<'a>(
        &'a self,
        stream: &'a StreamId,
        from: u64,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        Box::pin(async move {
            let limit = limit.min(READ_LIMIT_MAX);
            if limit == 0 || !storable(stream) {
                return Ok(Vec::new());
            }
            let rows = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&stream.as_str(), &clamp_i64(from), &clamp_i64(limit as u64)];
                conn.client
                    .query(&conn.statements.read_stream, &params)
                    .await
                    .map_err(storage("read a stream"))?
            };
            rows.iter()
                .map(|row| {
                    let position = from_i64(row.get(1), "event position")?;
                    Ok(RecordedEvent {
                        stream: stream.clone(),
                        version: from_i64(row.get(0), "event version")?,
                        position,
                        envelope: decode_event(row.get(2), position)?,
                    })
                })
                .collect()
        })
    }

    fn read_all(&self, from: u64, limit: usize) -> StoreFuture<'_, Vec<RecordedEvent>> {
        Box::pin(async move {
            let limit = limit.min(READ_LIMIT_MAX);
            if limit == 0 {
                return Ok(Vec::new());
            }
            let rows = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                conn.client
                    .query(
                        &conn.statements.read_all,
                        &[&clamp_i64(from), &clamp_i64(limit as u64)],
                    )
                    .await
                    .map_err(storage("read all streams"))?
            };
            rows.iter().map(recorded_event).collect()
        })
    }

    fn stream_version<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            if !storable(stream) {
                return Ok(0);
            }
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            let row = conn
                .client
                .query_opt(&conn.statements.stream_version, &[&stream.as_str()])
                .await
                .map_err(storage("read a stream's version"))?;
            row.map_or(Ok(0), |row| from_i64(row.get(0), "stream version"))
        })
    }

    fn head(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            let row = conn
                .client
                .query_one(&conn.statements.head, &[])
                .await
                .map_err(storage("read the head"))?;
            from_i64(row.get(0), "head position")
        })
    }

    fn unindexed_head(&self) -> StoreFuture<'_, u64> {
        Box::pin(async move {
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            let row = conn
                .client
                .query_one(&conn.statements.unindexed_head, &[])
                .await
                .map_err(storage("read the unindexed head"))?;
            from_i64(row.get(0), "unindexed head")
        })
    }

    fn watch_head(&self) -> watch::Receiver<u64> {
        self.inner.head.subscribe()
    }

    fn pending_intents(&self, limit: usize) -> StoreFuture<'_, Vec<Intent>> {
        Box::pin(async move {
            let limit = limit.min(READ_LIMIT_MAX);
            if limit == 0 {
                return Ok(Vec::new());
            }
            let rows = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                conn.client
                    .query(
                        &conn.statements.pending_intents,
                        &[&clamp_i64(limit as u64)],
                    )
                    .await
                    .map_err(storage("read pending intents"))?
            };
            rows.iter()
                .map(|row| decode(row.get(0), "a pending intent"))
                .collect()
        })
    }

    fn complete_intents<'a>(&'a self, ids: &'a [IntentId]) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if ids.is_empty() {
                return Ok(());
            }
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            // Bounded statements; each chunk commits alone, which is fine: completing
            // is idempotent, and a crash between chunks only redelivers.
            for chunk in ids.chunks(READ_LIMIT_MAX) {
                let texts: Vec<String> = chunk.iter().map(ToString::to_string).collect();
                conn.client
                    .execute(&conn.statements.complete_intents, &[&texts])
                    .await
                    .map_err(storage("complete intents"))?;
            }
            Ok(())
        })
    }

    fn save_snapshot<'a>(&'a self, snapshot: &'a StoredSnapshot) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            writable_stream(&snapshot.stream)?;
            let state = encode(&snapshot.state, "a snapshot")?;
            let version = to_i64(snapshot.version)?;
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            conn.client
                .execute(
                    &conn.statements.save_snapshot,
                    &[&snapshot.stream.as_str(), &version, &state],
                )
                .await
                .map_err(storage("save a snapshot"))?;
            Ok(())
        })
    }

    fn load_snapshot<'a>(
        &'a self,
        stream: &'a StreamId,
    ) -> StoreFuture<'a, Option<StoredSnapshot>> {
        Box::pin(async move {
            if !storable(stream) {
                return Ok(None);
            }
            let row = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                conn.client
                    .query_opt(&conn.statements.load_snapshot, &[&stream.as_str()])
                    .await
                    .map_err(storage("load a snapshot"))?
            };
            row.map(|row| {
                Ok(StoredSnapshot {
                    stream: stream.clone(),
                    version: from_i64(row.get(0), "snapshot version")?,
                    state: decode(row.get(1), "a snapshot")?,
                })
            })
            .transpose()
        })
    }

    fn set_metadata<'a>(
        &'a self,
        stream: &'a StreamId,
        metadata: &'a serde_json::Value,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            writable_stream(stream)?;
            let text = encode(metadata, "stream metadata")?;
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            conn.client
                .execute(&conn.statements.set_metadata, &[&stream.as_str(), &text])
                .await
                .map_err(storage("set stream metadata"))?;
            Ok(())
        })
    }

    fn metadata<'a>(&'a self, stream: &'a StreamId) -> StoreFuture<'a, Option<serde_json::Value>> {
        Box::pin(async move {
            if !storable(stream) {
                return Ok(None);
            }
            let row = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                conn.client
                    .query_opt(&conn.statements.metadata, &[&stream.as_str()])
                    .await
                    .map_err(storage("read stream metadata"))?
            };
            row.map(|row| decode(row.get(0), "stream metadata"))
                .transpose()
        })
    }

    fn trim<'a>(&'a self, stream: &'a StreamId, trim: Trim) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            if !storable(stream) {
                return Ok(0);
            }
            let mut checkout = self.inner.pool.checkout().await?;
            let super::pool::Conn { client, statements } = checkout.conn();
            // No transaction and no lock: the last statement moves the events in one go
            // (atomic by itself), and nothing before it needs to hold off an append. An
            // append only adds events above the version read here, and the bound never
            // passes it, so a trim removes only events that were there when it began;
            // appends meanwhile, to this stream or any other, neither wait for it nor
            // make it wait (no row either writes is the other's). It used to lock the
            // stream's row: an append to the stream then waited for the trim while
            // holding the head lock, and with it every append of every process.
            let Some(row) = client
                .query_opt(&statements.trim_bounds, &[&stream.as_str()])
                .await
                .map_err(storage("read a stream's version and first event"))?
            else {
                return Ok(0);
            };
            let version = from_i64(row.get(0), "stream version")?;
            let first: Option<i64> = row.get(1);
            let first_kept = match first {
                Some(first) => from_i64(first, "event version")?,
                None => version + 1,
            };
            // Within a stream positions grow with versions, so the events below a
            // position are those below the version of its first event at or after it.
            let first_at_position = match trim {
                Trim::BeforePosition(position) => {
                    let first_at: Option<i64> = client
                        .query_one(
                            &statements.first_version_from,
                            &[&stream.as_str(), &clamp_i64(position)],
                        )
                        .await
                        .map_err(storage("find where a trim by position ends"))?
                        .get(0);
                    first_at
                        .map(|first_at| from_i64(first_at, "event version"))
                        .transpose()?
                }
                Trim::KeepLast(_) | Trim::BeforeVersion(_) => None,
            };
            let before = version_bound(version, trim, first_at_position);
            let remove = trimmed_count(version, first_kept, before);
            if remove == 0 {
                return Ok(0);
            }
            let before = to_i64(first_kept + remove)?;
            let moved = client
                .execute(&statements.trim, &[&stream.as_str(), &before])
                .await
                .map_err(storage("trim a stream"))?;
            Ok(moved)
        })
    }

    fn instances<'a>(&'a self, query: &'a InstanceQuery) -> StoreFuture<'a, Vec<InstanceEntry>> {
        Box::pin(async move {
            let limit = query.capped_limit();
            let texts = [&query.kind, &query.status];
            let after = query.after.as_ref().map(StreamId::as_str);
            // Nothing stored holds NUL, and PostgreSQL text could not carry it.
            if limit == 0
                || texts
                    .iter()
                    .any(|t| t.as_ref().is_some_and(|t| t.contains('\0')))
                || after.is_some_and(|after| after.contains('\0'))
            {
                return Ok(Vec::new());
            }
            let mut sql = format!(
                "SELECT stream, kind, status, finished, version, updated_ns, position \
                 FROM {}.instances WHERE true",
                self.inner.schema.quoted()
            );
            let limit = clamp_i64(limit as u64);
            let mut params: Vec<&(dyn tokio_postgres::types::ToSql + Sync)> = Vec::new();
            // A literal, so that the planner may use the partial index of unfinished
            // streams (in stream order: no sort for a page).
            match query.finished {
                Some(false) => sql.push_str(" AND NOT finished"),
                Some(true) => sql.push_str(" AND finished"),
                None => {}
            }
            for (column, value) in [("kind", &query.kind), ("status", &query.status)] {
                if let Some(value) = value {
                    params.push(value);
                    sql.push_str(&format!(" AND {column} = ${}::text", params.len()));
                }
            }
            if let Some(after) = &after {
                params.push(after);
                sql.push_str(&format!(
                    " AND stream COLLATE \"C\" > ${}::text",
                    params.len()
                ));
            }
            params.push(&limit);
            let order = " ORDER BY stream COLLATE \"C\" LIMIT";
            sql.push_str(&format!("{order} ${}::int8", params.len()));
            let rows = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                conn.client
                    .query(&sql, &params)
                    .await
                    .map_err(storage("list instances"))?
            };
            rows.iter().map(instance_entry).collect()
        })
    }

    fn read_unfinished<'a>(
        &'a self,
        kind: Option<&'a str>,
        after: Option<(&'a StreamId, u64)>,
        limit: usize,
    ) -> StoreFuture<'a, Vec<RecordedEvent>> {
        Box::pin(async move {
            let limit = limit.min(READ_LIMIT_MAX);
            if limit == 0 || kind.is_some_and(|kind| kind.contains('\0')) {
                return Ok(Vec::new());
            }
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            let statements = &conn.statements;
            let mut rows = Vec::new();
            if let Some((stream, version)) = after {
                let (version, limit) = (clamp_i64(version), clamp_i64(limit as u64));
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&stream.as_str(), &version, &limit, &kind];
                rows = conn
                    .client
                    .query(&statements.read_unfinished_rest, &params)
                    .await
                    .map_err(storage("read the unfinished instances"))?;
            }
            let left = limit - rows.len();
            if left > 0 {
                let last = after.map_or("", |(stream, _)| stream.as_str());
                let left = clamp_i64(left as u64);
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] = [&last, &left, &kind];
                let next = conn
                    .client
                    .query(&statements.read_unfinished_next, &params)
                    .await
                    .map_err(storage("read the unfinished instances"))?;
                rows.extend(next);
            }
            rows.iter().map(recorded_event).collect()
        })
    }

    fn purge_finished<'a>(
        &'a self,
        kind: Option<&'a str>,
        updated_before: Timestamp,
        limit: usize,
    ) -> StoreFuture<'a, u64> {
        Box::pin(async move {
            let limit = limit.min(READ_LIMIT_MAX);
            if limit == 0 || kind.is_some_and(|kind| kind.contains('\0')) {
                return Ok(0);
            }
            let (before, limit) = (updated_before.unix_nanos(), clamp_i64(limit as u64));
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            let statements = &conn.statements;
            let row = match kind {
                Some(kind) => {
                    let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                        [&before, &limit, &kind];
                    conn.client
                        .query_one(&statements.purge_finished_kind, &params)
                        .await
                }
                None => {
                    conn.client
                        .query_one(&statements.purge_finished, &[&before, &limit])
                        .await
                }
            }
            .map_err(storage("purge finished instances"))?;
            from_i64(row.get(0), "count of purged instances")
        })
    }

    fn load_projection<'a>(&'a self, name: &'a str) -> StoreFuture<'a, Option<ProjectionState>> {
        Box::pin(async move {
            if name.contains('\0') {
                return Ok(None);
            }
            let row = {
                let mut checkout = self.inner.pool.checkout().await?;
                let conn = checkout.conn();
                conn.client
                    .query_opt(&conn.statements.load_projection, &[&name])
                    .await
                    .map_err(storage("load a projection"))?
            };
            row.map(|row| {
                Ok(ProjectionState {
                    checkpoint: from_i64(row.get(0), "projection checkpoint")?,
                    model: decode(row.get(1), "a projection's read model")?,
                })
            })
            .transpose()
        })
    }

    fn save_projection<'a>(
        &'a self,
        name: &'a str,
        expected: u64,
        state: &'a ProjectionState,
    ) -> StoreFuture<'a, ()> {
        Box::pin(async move {
            if name.contains('\0') {
                return Err(nul_error("projection names"));
            }
            let model = encode(&state.model, "a projection's read model")?;
            let checkpoint = to_i64(state.checkpoint)?;
            let mut checkout = self.inner.pool.checkout().await?;
            let conn = checkout.conn();
            // One statement compares and sets, so two runners cannot both succeed.
            let saved = if expected == 0 {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 3] =
                    [&name, &checkpoint, &model];
                conn.client
                    .execute(&conn.statements.insert_projection, &params)
                    .await
            } else {
                let params: [&(dyn tokio_postgres::types::ToSql + Sync); 4] =
                    [&name, &clamp_i64(expected), &checkpoint, &model];
                conn.client
                    .execute(&conn.statements.update_projection, &params)
                    .await
            }
            .map_err(storage("save a projection"))?;
            if saved == 1 {
                return Ok(());
            }
            let actual = conn
                .client
                .query_opt(&conn.statements.load_projection, &[&name])
                .await
                .map_err(storage("load a projection"))?
                .map_or(Ok(0), |row| from_i64(row.get(0), "projection checkpoint"))?;
            Err(Error::ProjectionConflict {
                name: name.to_owned(),
                expected,
                actual,
            })
        })
    }

    fn lock_writer<'a>(&'a self, holder: &'a LockHolder) -> StoreFuture<'a, WriterLock> {
        Box::pin(super::lock::lock(&self.inner, holder))
    }
}

/// The version below which `trim` removes the events of a stream at `version`.
/// `first_at_position` is, for [`Trim::BeforePosition`], the version of the stream's
/// first event at or after that position (`None` when it has none: all go).
fn version_bound(version: u64, trim: Trim, first_at_position: Option<u64>) -> u64 {
    match trim {
        Trim::KeepLast(keep) => version.saturating_sub(keep).saturating_add(1),
        Trim::BeforeVersion(before) => before,
        Trim::BeforePosition(_) => first_at_position.unwrap_or(version.saturating_add(1)),
    }
}

/// How many events a trim up to version `before` (exclusive) removes from a stream at
/// `version` whose first remaining event has version `first_kept` (`version + 1` when
/// none remain); as `MemoryStore`.
fn trimmed_count(version: u64, first_kept: u64, before: u64) -> u64 {
    // Saturating: `first_kept` comes from the same snapshot as `version` and is at
    // most `version + 1`, but a store damaged by hand must not panic here.
    let remaining = (version + 1).saturating_sub(first_kept);
    before.saturating_sub(first_kept).min(remaining)
}

/// PostgreSQL text cannot hold NUL characters, so no stored stream has one.
fn storable(stream: &StreamId) -> bool {
    !stream.as_str().contains('\0')
}

fn writable_stream(stream: &StreamId) -> Result<(), Error> {
    if storable(stream) {
        Ok(())
    } else {
        Err(nul_error("stream ids"))
    }
}

fn nul_error(what: &str) -> Error {
    Error::Storage {
        backend: "postgres",
        reason: format!("{what} cannot contain NUL characters in PostgreSQL: remove them"),
    }
}

fn recorded_event(row: &Row) -> Result<RecordedEvent, Error> {
    let stream: String = row.get(0);
    let position = from_i64(row.get(2), "event position")?;
    Ok(RecordedEvent {
        stream: StreamId::from(stream),
        version: from_i64(row.get(1), "event version")?,
        position,
        envelope: decode_event(row.get(3), position)?,
    })
}

/// A row of `instances`, in the column order `instances` selects.
fn instance_entry(row: &Row) -> Result<InstanceEntry, Error> {
    let stream: String = row.get(0);
    Ok(InstanceEntry {
        stream: StreamId::from(stream),
        kind: row.get(1),
        status: row.get(2),
        finished: row.get(3),
        version: from_i64(row.get(4), "instance version")?,
        updated: Timestamp::from_unix_nanos(row.get(5)),
        position: from_i64(row.get(6), "instance position")?,
    })
}

fn decode_event(text: &str, position: u64) -> Result<Envelope, Error> {
    serde_json::from_str(text).map_err(|e| Error::Storage {
        backend: "postgres",
        reason: format!("the event at position {position} does not decode: {e}"),
    })
}

fn encode(value: &impl Serialize, what: &str) -> Result<String, Error> {
    serde_json::to_string(value).map_err(|e| Error::Storage {
        backend: "postgres",
        reason: format!("could not encode {what} as JSON: {e}"),
    })
}

fn decode<T: DeserializeOwned>(text: &str, what: &str) -> Result<T, Error> {
    serde_json::from_str(text).map_err(|e| Error::Storage {
        backend: "postgres",
        reason: format!("{what} stored in the database does not decode: {e}"),
    })
}

#[cfg(test)]
mod tests {
    use keel_core::{Cause, IntentKind, TimerId};
    use serde_json::json;

    use super::super::testing::{event, fresh_store, raw_client};
    use super::*;

    #[test]
    fn trimming_counts_like_the_memory_store() {
        let count = |version, first_kept, trim, first_at_position| {
            trimmed_count(
                version,
                first_kept,
                version_bound(version, trim, first_at_position),
            )
        };
        // Stream at version 5 with versions 3..=5 left.
        assert_eq!(count(5, 3, Trim::KeepLast(1), None), 2);
        assert_eq!(count(5, 3, Trim::KeepLast(9), None), 0);
        assert_eq!(count(5, 3, Trim::BeforeVersion(2), None), 0);
        assert_eq!(count(5, 3, Trim::BeforeVersion(5), None), 2);
        assert_eq!(count(5, 3, Trim::BeforeVersion(u64::MAX), None), 3);
        assert_eq!(count(5, 6, Trim::KeepLast(0), None), 0);
        // By position: up to the first event at or after it, or everything.
        assert_eq!(count(5, 3, Trim::BeforePosition(40), Some(4)), 1);
        assert_eq!(count(5, 3, Trim::BeforePosition(2), Some(3)), 0);
        assert_eq!(count(5, 3, Trim::BeforePosition(99), None), 3);
        assert_eq!(count(5, 6, Trim::BeforePosition(99), None), 0);
    }

    fn intent(position: u32) -> Intent {
        Intent {
            id: Cause::root(9).intent_id(position),
            kind: IntentKind::CancelTimer {
                timer: TimerId::from_static("t"),
            },
        }
    }

    #[tokio::test]
    async fn the_outbox_survives_a_new_connection() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let a = StreamId::from("a");
        let intents = [intent(0), intent(1), intent(2)];
        store
            .append_with_intents(&a, ExpectedVersion::NoStream, &[event(1)], &intents)
            .await
            .unwrap();
        // A repeat records nothing twice; an intent already pending stays as it is.
        store
            .append_with_intents(&a, ExpectedVersion::Any, &[event(2)], &[intent(1)])
            .await
            .unwrap();
        store.complete_intents(&[intents[0].id]).await.unwrap();
        drop(store);

        let reopened = PostgresStore::connect(&url, config).await.unwrap();
        let pending = reopened.pending_intents(10).await.unwrap();
        assert_eq!(pending, intents[1..]);
        assert_eq!(reopened.pending_intents(1).await.unwrap(), intents[1..2]);
        reopened
            .complete_intents(&[intents[1].id, intents[2].id, intents[0].id])
            .await
            .unwrap();
        assert!(reopened.pending_intents(10).await.unwrap().is_empty());
        reopened.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn snapshots_and_metadata_are_replaced_and_read_back() {
        let Some((store, _, _)) = fresh_store().await else {
            return;
        };
        let a = StreamId::from("a");
        assert_eq!(store.load_snapshot(&a).await.unwrap(), None);
        assert_eq!(store.metadata(&a).await.unwrap(), None);
        for version in [3, 7] {
            let snapshot = StoredSnapshot {
                stream: a.clone(),
                version,
                state: json!({ "total": version, "exact": 0.1, "nul": "\u{0}" }),
            };
            store.save_snapshot(&snapshot).await.unwrap();
            assert_eq!(store.load_snapshot(&a).await.unwrap(), Some(snapshot));
            let metadata = json!({ "max_age_s": version });
            store.set_metadata(&a, &metadata).await.unwrap();
            assert_eq!(store.metadata(&a).await.unwrap(), Some(metadata));
        }
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn trimming_keeps_the_version_and_the_ids() {
        let Some((store, _, _)) = fresh_store().await else {
            return;
        };
        let (a, b) = (StreamId::from("a"), StreamId::from("b"));
        let batch = [event(1), event(2), event(3)];
        store
            .append(&a, ExpectedVersion::Any, &batch)
            .await
            .unwrap();
        store
            .append(&b, ExpectedVersion::Any, &[event(4)])
            .await
            .unwrap();
        assert_eq!(store.trim(&a, Trim::KeepLast(1)).await.unwrap(), 2);
        assert_eq!(store.stream_version(&a).await.unwrap(), 3);
        let left = store.read_stream(&a, 1, 10).await.unwrap();
        assert_eq!(left.iter().map(|e| e.version).collect::<Vec<_>>(), [3]);
        let all = store.read_all(1, 10).await.unwrap();
        assert_eq!(all.iter().map(|e| e.position).collect::<Vec<_>>(), [3, 4]);
        assert_eq!(store.trim(&a, Trim::BeforeVersion(3)).await.unwrap(), 0);
        assert_eq!(
            store.trim(&"none".into(), Trim::KeepLast(0)).await.unwrap(),
            0
        );
        // A trimmed append repeated is still the same append; its ids stay taken.
        let again = store
            .append(&a, ExpectedVersion::NoStream, &batch)
            .await
            .unwrap();
        assert!(again.deduplicated);
        assert_eq!((again.first_position, again.last_version), (1, 3));
        let error = store
            .append(&b, ExpectedVersion::Any, &[event(1)])
            .await
            .unwrap_err();
        assert!(matches!(error, Error::DuplicateEventId { .. }), "{error:?}");
        assert_eq!(store.trim(&a, Trim::BeforeVersion(99)).await.unwrap(), 1);
        assert!(store.read_stream(&a, 1, 10).await.unwrap().is_empty());
        let next = store
            .append(&a, ExpectedVersion::Exact(3), &[event(5)])
            .await
            .unwrap();
        assert_eq!((next.first_version, next.first_position), (4, 5));
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn projections_save_only_from_the_checkpoint_they_loaded() {
        let Some((store, _, _)) = fresh_store().await else {
            return;
        };
        let state = |checkpoint| ProjectionState {
            checkpoint,
            model: json!({ "seen": checkpoint }),
        };
        assert_eq!(store.load_projection("p").await.unwrap(), None);
        let conflict = store.save_projection("p", 4, &state(5)).await.unwrap_err();
        assert_eq!(
            conflict,
            Error::ProjectionConflict {
                name: "p".to_owned(),
                expected: 4,
                actual: 0
            }
        );
        store.save_projection("p", 0, &state(5)).await.unwrap();
        assert_eq!(store.load_projection("p").await.unwrap(), Some(state(5)));
        let stale = store.save_projection("p", 0, &state(6)).await.unwrap_err();
        assert!(
            matches!(stale, Error::ProjectionConflict { actual: 5, .. }),
            "{stale:?}"
        );
        store.save_projection("p", 5, &state(9)).await.unwrap();
        // A rebuild resets to 0, after which 0 is the checkpoint to start from.
        store.save_projection("p", 9, &state(0)).await.unwrap();
        store.save_projection("p", 0, &state(2)).await.unwrap();
        assert_eq!(store.load_projection("p").await.unwrap(), Some(state(2)));
        assert_eq!(store.load_projection("q").await.unwrap(), None);
        store.drop_schema().await.unwrap();
    }

    /// Events in the stream a test trims: enough that the trim (a delete and an insert
    /// of as many rows) runs for about a second here, far longer than an append.
    const LONG_TRIM_EVENTS: i64 = 300_000;

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_long_trim_holds_off_no_append_to_its_stream_or_another() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        // Written by hand, in one statement: through the store it would take minutes.
        let s = format!("\"{}\"", config.schema);
        let client = raw_client(&url).await;
        client
            .batch_execute(&format!(
                "INSERT INTO {s}.events (position, stream, version, id, envelope) \
                 SELECT g, 'long', g, gen_random_uuid(), repeat('x', 200) \
                 FROM generate_series(1, {LONG_TRIM_EVENTS}) g; \
                 INSERT INTO {s}.streams (stream, version) VALUES ('long', {LONG_TRIM_EVENTS}); \
                 UPDATE {s}.keel_head SET position = {LONG_TRIM_EVENTS}"
            ))
            .await
            .unwrap();
        let long = StreamId::from("long");
        let mut trim = tokio::spawn({
            let (store, long) = (store.clone(), long.clone());
            async move { store.trim(&long, Trim::KeepLast(0)).await }
        });
        // Wait (a bounded number of polls) until the trim's delete is running.
        let application = format!("keel:{}", config.schema);
        let mut running = false;
        for _ in 0..400 {
            let rows = client
                .query(
                    "SELECT 1 FROM pg_stat_activity WHERE application_name = $1 \
                     AND state = 'active' AND query LIKE '%DELETE FROM%'",
                    &[&application],
                )
                .await
                .unwrap();
            if !rows.is_empty() {
                running = true;
                break;
            }
            assert!(
                !trim.is_finished(),
                "the trim ended before it was seen running"
            );
            tokio::time::sleep(std::time::Duration::from_millis(5)).await;
        }
        assert!(running, "the trim was never seen running");
        // Joined, so the append to the trimmed stream is queued first: had it to wait
        // for the trim, the other stream's append would wait behind it.
        let other = StreamId::from("other");
        let (to_long, to_other) = ([event(1)], [event(2)]);
        let after_long = ExpectedVersion::Exact(LONG_TRIM_EVENTS as u64);
        let appends = async {
            tokio::join!(
                store.append(&long, after_long, &to_long),
                store.append(&other, ExpectedVersion::NoStream, &to_other),
            )
        };
        let (same, other_stream) = tokio::select! {
            // Checked first: an append finishing together with the trim has waited.
            trimmed = &mut trim => panic!("the trim ({trimmed:?}) finished before the appends"),
            appended = appends => appended,
        };
        assert_eq!(same.unwrap().first_version, LONG_TRIM_EVENTS as u64 + 1);
        assert_eq!(
            other_stream.unwrap().first_position,
            LONG_TRIM_EVENTS as u64 + 2
        );
        assert_eq!(trim.await.unwrap().unwrap(), LONG_TRIM_EVENTS as u64);
        // The append made while the trim ran is kept: the trim counts from the stream as
        // it was when it began.
        let left = store.read_stream(&long, 1, 10).await.unwrap();
        assert_eq!(
            left.iter().map(|e| e.version).collect::<Vec<_>>(),
            [LONG_TRIM_EVENTS as u64 + 1]
        );
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn reading_the_unfinished_streams_reads_only_their_events() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let (done, running) = (
            crate::InstanceMark::new("saga", "completed", true),
            crate::InstanceMark::new("saga", "running", false),
        );
        // Many finished streams, a few unfinished ones: the plan must not touch the
        // former's events, whatever the statistics.
        for stream in 0..200_u128 {
            let mut batch: Vec<Envelope> = (0..10).map(|n| event(stream * 100 + n)).collect();
            let mark = if stream % 50 == 0 { &running } else { &done };
            mark.apply(&mut batch[9]);
            let stream = StreamId::from(format!("s{stream:03}"));
            store
                .append(&stream, ExpectedVersion::NoStream, &batch)
                .await
                .unwrap();
        }
        let client = raw_client(&url).await;
        let schema = format!("\"{}\"", config.schema);
        client
            .batch_execute(&format!(
                "ANALYZE {schema}.events; ANALYZE {schema}.instances"
            ))
            .await
            .unwrap();
        let sql = &store.inner.sql;
        let limit = 100_i64;
        let version = 1_i64;
        for kind in [None, Some("saga")] {
            let rest = format!("EXPLAIN {}", sql.read_unfinished_rest);
            let rest = client.query(&rest, &[&"s1", &version, &limit, &kind]).await;
            let next = format!("EXPLAIN {}", sql.read_unfinished_next);
            let next = client.query(&next, &[&"s1", &limit, &kind]).await;
            for rows in [rest.unwrap(), next.unwrap()] {
                let plan: Vec<String> = rows.iter().map(|row| row.get(0)).collect();
                let plan = plan.join("\n");
                assert!(
                    !plan.contains("Seq Scan on events"),
                    "no scan of the events:\n{plan}"
                );
                assert!(
                    plan.contains("using events_stream_version_key on events"),
                    "each unfinished stream's events through its index:\n{plan}"
                );
            }
        }
        let read = store.read_unfinished(None, None, 100).await.unwrap();
        let streams: Vec<&str> = read.iter().map(|e| e.stream.as_str()).collect();
        assert_eq!(streams.len(), 40, "four streams of ten events: {streams:?}");
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn a_purge_skips_an_instance_an_append_is_changing_instead_of_waiting() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let done = crate::InstanceMark::new("saga", "completed", true);
        for (id, stream) in [(1, "a"), (2, "b")] {
            let mut envelope = event(id);
            done.apply(&mut envelope);
            store
                .append(
                    &StreamId::from(stream),
                    ExpectedVersion::NoStream,
                    &[envelope],
                )
                .await
                .unwrap();
        }
        // Another session holds `a`'s row, as an append's transaction would.
        let mut blocker = raw_client(&url).await;
        let blocking = blocker.transaction().await.unwrap();
        let lock = format!(
            "SELECT * FROM \"{}\".instances WHERE stream = 'a' FOR UPDATE",
            config.schema
        );
        blocking.query(&lock, &[]).await.unwrap();
        let forever = keel_core::Timestamp::from_unix_nanos(i64::MAX);
        let purge = store.purge_finished(None, forever, 10);
        let purged = tokio::time::timeout(std::time::Duration::from_secs(5), purge)
            .await
            .expect("the purge does not wait for the locked row");
        assert_eq!(purged.unwrap(), 1, "only `b` goes");
        blocking.rollback().await.unwrap();
        assert_eq!(store.purge_finished(None, forever, 10).await.unwrap(), 1);
        store.drop_schema().await.unwrap();
    }
}
