//! Appends: one writer task per store commits concurrent appends together.
//!
//! Every append becomes a [`Request`] on a bounded channel. The writer takes what is
//! queued (up to [`GROUP_REQUESTS_MAX`] requests, [`APPEND_EVENTS_MAX`] events and
//! [`GROUP_BYTES_MAX`] bytes) and commits it as one transaction:
//!
//! 1. `BEGIN`, lock the `keel_head` row, look up the group's event ids and stream
//!    versions: pipelined, one round trip. The lock serialises writers of every process,
//!    and the lookups run after it is granted, so they see every earlier commit.
//! 2. [`plan`] decides each request in order, exactly as [`MemoryStore`] would (pure,
//!    unit-tested below): deduplicated, refused, or given versions and positions.
//! 3. One statement writes all accepted events, stream versions, intents, index rows
//!    (one per marked stream: its group's last marked event), the new head and a
//!    `pg_notify`; `COMMIT` follows in the same round trip.
//!
//! Positions are taken from the locked head, so they are gapless and committed in
//! order; an aborted transaction hands none out. Grouping is what makes this fast: the
//! lock is held for one fsync per group, not per append.
//!
//! [`MemoryStore`]: crate::MemoryStore

use std::borrow::Cow;
use std::collections::{HashMap, HashSet};
use std::sync::Arc;

use keel_core::{EventId, ExpectedVersion, StreamId};
use tokio::sync::{mpsc, oneshot, watch};
use tokio_postgres::types::ToSql;

use super::pool::Pool;
use super::{advance_head, from_i64, storage_error, to_i64};
use crate::error::Error;
use crate::repeat::{Held, earlier_append};
use crate::{APPEND_EVENTS_MAX, Appended, check_expected};

/// The most appends committed in one transaction.
pub(super) const GROUP_REQUESTS_MAX: usize = 256;

/// The most encoded bytes (envelopes and intents) a group carries, unless one append
/// alone is larger: PostgreSQL refuses messages over 1 GiB, and memory is finite.
pub(super) const GROUP_BYTES_MAX: usize = 64 << 20;

/// How many appends may wait for the writer; callers beyond it wait their turn.
pub(super) const QUEUE_REQUESTS_MAX: usize = 1024;

/// One append, already encoded, waiting for the writer.
#[derive(Debug)]
pub(super) struct Request {
    pub(super) stream: StreamId,
    pub(super) expected: ExpectedVersion,
    /// Each event's id and envelope JSON, in order.
    pub(super) events: Vec<(EventId, String)>,
    /// Each intent's id (its text form) and JSON.
    pub(super) intents: Vec<(String, String)>,
    /// The index row the append sets, from its last marked event.
    pub(super) mark: Option<MarkRow>,
    pub(super) reply: oneshot::Sender<Result<Appended, Error>>,
}

/// What an append's last marked event writes to `instances`.
#[derive(Debug)]
pub(super) struct MarkRow {
    /// The event's offset in the batch: its version and position follow from it.
    pub(super) offset: u64,
    pub(super) kind: String,
    pub(super) status: String,
    pub(super) finished: bool,
    pub(super) time_ns: i64,
}

/// An index row a group writes.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct InstanceRow<'a> {
    pub(super) kind: &'a str,
    pub(super) status: &'a str,
    pub(super) finished: bool,
    pub(super) version: i64,
    pub(super) updated_ns: i64,
    pub(super) position: i64,
}

impl Request {
    fn encoded_bytes(&self) -> usize {
        let events: usize = self.events.iter().map(|(_, text)| text.len()).sum();
        let intents: usize = self
            .intents
            .iter()
            .map(|(id, text)| id.len() + text.len())
            .sum();
        events + intents
    }
}

/// What the database holds for a group, read under the head lock (and, as the plan
/// goes, what the group's earlier requests add: their envelopes are borrowed).
#[derive(Debug, Default)]
pub(super) struct Found<'a> {
    pub(super) head: u64,
    /// Each already-stored id of the group.
    pub(super) ids: HashMap<EventId, Stored<'a>>,
    /// The version of each stream of the group that has one.
    pub(super) versions: HashMap<StreamId, u64>,
}

/// Where a stored event id is, and its envelope's text.
#[derive(Debug, Clone)]
pub(super) struct Stored<'a> {
    pub(super) stream: StreamId,
    pub(super) version: u64,
    pub(super) position: u64,
    /// The envelope as stored; `None` once trimmed. Read only for ids found stored, so
    /// an append of new ids reads no envelope back.
    pub(super) envelope: Option<Cow<'a, str>>,
}

/// The rows a group writes (borrowing the requests' text) and the answer to each
/// request.
#[derive(Debug, Default)]
pub(super) struct Plan<'a> {
    pub(super) results: Vec<Result<Appended, Error>>,
    pub(super) positions: Vec<i64>,
    pub(super) streams: Vec<&'a str>,
    pub(super) versions: Vec<i64>,
    pub(super) ids: Vec<String>,
    pub(super) envelopes: Vec<&'a str>,
    /// Each written stream's final version.
    pub(super) stream_versions: HashMap<StreamId, u64>,
    pub(super) intent_ids: Vec<&'a str>,
    pub(super) intents: Vec<&'a str>,
    /// Each marked stream's index row, from the group's last marked append to it: one
    /// upsert per stream, since one statement may not change a row twice.
    pub(super) instances: HashMap<StreamId, InstanceRow<'a>>,
    /// The head after the group.
    pub(super) head: u64,
}

impl Plan<'_> {
    fn writes_anything(&self) -> bool {
        !self.ids.is_empty() || !self.intent_ids.is_empty()
    }
}

/// Decides each request in order against what is stored and what the requests before
/// it in the group did, with the rules (and the order of checks) of `MemoryStore`.
pub(super) fn plan<'a>(requests: &'a [Request], mut found: Found<'a>) -> Plan<'a> {
    let mut plan = Plan {
        head: found.head,
        ..Plan::default()
    };
    for request in requests {
        let result = plan_one(request, &mut found, &mut plan);
        plan.results.push(result);
    }
    plan
}

fn plan_one<'a>(
    request: &'a Request,
    found: &mut Found<'a>,
    plan: &mut Plan<'a>,
) -> Result<Appended, Error> {
    let stream = &request.stream;
    let events = &request.events;
    let held = events.iter().map(|(id, envelope)| {
        let held = found.ids.get(id).map(|stored| Held {
            in_stream: stored.stream == *stream,
            version: stored.version,
            position: stored.position,
            same_content: stored.envelope.as_deref().map(|text| text == envelope),
        });
        Ok((*id, held))
    });
    if let Some(earlier) = earlier_append(stream, held)? {
        return Ok(earlier);
    }
    let version = found.versions.get(stream).copied().unwrap_or(0);
    check_expected(stream, request.expected, version)?;
    let mut batch_ids = HashSet::with_capacity(events.len());
    if let Some((id, _)) = events.iter().find(|(id, _)| found.ids.contains_key(id)) {
        return Err(Error::DuplicateEventId { id: id.to_string() });
    }
    if let Some((id, _)) = events.iter().find(|(id, _)| !batch_ids.insert(*id)) {
        return Err(Error::DuplicateEventId { id: id.to_string() });
    }
    let first_position = plan.head + 1;
    for (offset, (id, envelope)) in events.iter().enumerate() {
        let position = first_position + offset as u64;
        let event_version = version + 1 + offset as u64;
        let stored = Stored {
            stream: stream.clone(),
            version: event_version,
            position,
            envelope: Some(Cow::Borrowed(envelope)),
        };
        found.ids.insert(*id, stored);
        plan.positions.push(to_i64(position)?);
        plan.streams.push(stream.as_str());
        plan.versions.push(to_i64(event_version)?);
        plan.ids.push(id.to_string());
        plan.envelopes.push(envelope);
    }
    let last_version = version + events.len() as u64;
    if !events.is_empty() {
        found.versions.insert(stream.clone(), last_version);
        plan.stream_versions.insert(stream.clone(), last_version);
    }
    if let Some(mark) = &request.mark {
        let row = InstanceRow {
            kind: &mark.kind,
            status: &mark.status,
            finished: mark.finished,
            version: to_i64(version + 1 + mark.offset)?,
            updated_ns: mark.time_ns,
            position: to_i64(first_position + mark.offset)?,
        };
        plan.instances.insert(stream.clone(), row);
    }
    plan.head += events.len() as u64;
    for (id, intent) in &request.intents {
        plan.intent_ids.push(id);
        plan.intents.push(intent);
    }
    Ok(Appended {
        first_version: version + 1,
        last_version,
        first_position,
        deduplicated: false,
    })
}

/// Runs the writer until every sender (the store) is gone.
pub(super) async fn run_writer(
    pool: Arc<Pool>,
    head: Arc<watch::Sender<u64>>,
    channel: String,
    mut queue: mpsc::Receiver<Request>,
) {
    let mut carried: Option<Request> = None;
    loop {
        let first = match carried.take() {
            Some(request) => request,
            None => match queue.recv().await {
                Some(request) => request,
                None => return,
            },
        };
        let (mut events, mut bytes) = (first.events.len(), first.encoded_bytes());
        let mut group = vec![first];
        while group.len() < GROUP_REQUESTS_MAX {
            let Ok(request) = queue.try_recv() else { break };
            let request_bytes = request.encoded_bytes();
            if events + request.events.len() > APPEND_EVENTS_MAX
                || bytes + request_bytes > GROUP_BYTES_MAX
            {
                carried = Some(request);
                break;
            }
            events += request.events.len();
            bytes += request_bytes;
            group.push(request);
        }
        let results = match commit_group(&pool, &channel, &group).await {
            Ok(plan) => {
                advance_head(&head, plan.head);
                plan.results
            }
            Err(error) => vec![Err(error); group.len()],
        };
        for (request, result) in group.into_iter().zip(results) {
            // A caller that stopped waiting does not want the answer; its append stands.
            let _ = request.reply.send(result);
        }
    }
}

/// Commits one group in one transaction; on any failure nothing of it is stored.
async fn commit_group<'a>(
    pool: &Pool,
    channel: &str,
    group: &'a [Request],
) -> Result<Plan<'a>, Error> {
    let mut checkout = pool.checkout().await?;
    let conn = checkout.conn();
    let (client, statements) = (&conn.client, &conn.statements);
    let ids: Vec<String> = group
        .iter()
        .flat_map(|r| r.events.iter().map(|(id, _)| id.to_string()))
        .collect();
    let streams: Vec<&str> = group
        .iter()
        .map(|r| r.stream.as_str())
        .collect::<HashSet<_>>()
        .into_iter()
        .collect();
    let id_params: [&(dyn ToSql + Sync); 1] = [&ids];
    let stream_params: [&(dyn ToSql + Sync); 1] = [&streams];
    let read = async {
        // Pipelined: the server runs them in order, so the lookups start after the
        // lock is granted and see every append committed before this one.
        tokio::try_join!(
            client.batch_execute("BEGIN"),
            client.query_one(&statements.lock_head, &[]),
            client.query(&statements.find_ids, &id_params),
            client.query(&statements.stream_versions, &stream_params),
        )
    };
    let (_, head_row, id_rows, version_rows) = match read.await {
        Ok(rows) => rows,
        Err(error) => {
            checkout.discard();
            return Err(storage_error("lock the head and read the group", &error));
        }
    };
    let found = match decode_found(&head_row, &id_rows, &version_rows) {
        Ok(found) => found,
        Err(error) => {
            checkout.discard();
            return Err(error);
        }
    };
    let plan = plan(group, found);
    let written = if plan.writes_anything() {
        write(client, statements, channel, &plan).await
    } else {
        client
            .batch_execute("ROLLBACK")
            .await
            .map_err(|e| storage_error("end the transaction", &e))
    };
    if let Err(error) = written {
        // The transaction may be half-sent or the connection gone: do not reuse it.
        // The server rolls back whatever it did not commit.
        checkout.discard();
        return Err(error);
    }
    Ok(plan)
}

async fn write(
    client: &tokio_postgres::Client,
    statements: &super::pool::Statements,
    channel: &str,
    plan: &Plan<'_>,
) -> Result<(), Error> {
    let (streams, versions): (Vec<&str>, Vec<i64>) = plan
        .stream_versions
        .iter()
        .map(|(stream, version)| Ok((stream.as_str(), to_i64(*version)?)))
        .collect::<Result<Vec<_>, Error>>()?
        .into_iter()
        .unzip();
    let head = to_i64(plan.head)?;
    let payload = plan.head.to_string();
    let notify = !plan.ids.is_empty();
    let rows = plan.instances.len();
    let mut index = (
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
        Vec::with_capacity(rows),
    );
    for (stream, row) in &plan.instances {
        index.0.push(stream.as_str());
        index.1.push(row.kind);
        index.2.push(row.status);
        index.3.push(row.finished);
        index.4.push(row.version);
        index.5.push(row.updated_ns);
        index.6.push(row.position);
    }
    let params: [&(dyn ToSql + Sync); 20] = [
        &plan.positions,
        &plan.streams,
        &plan.versions,
        &plan.ids,
        &plan.envelopes,
        &streams,
        &versions,
        &plan.intent_ids,
        &plan.intents,
        &head,
        &channel,
        &payload,
        &notify,
        &index.0,
        &index.1,
        &index.2,
        &index.3,
        &index.4,
        &index.5,
        &index.6,
    ];
    // COMMIT is pipelined behind the write; if the write fails, the server answers the
    // COMMIT of the aborted transaction with a rollback, and the write's error is kept.
    tokio::try_join!(
        client.execute(&statements.write, &params),
        client.batch_execute("COMMIT"),
    )
    .map_err(|e| storage_error("write the group", &e))?;
    Ok(())
}

fn decode_found(
    head_row: &tokio_postgres::Row,
    id_rows: &[tokio_postgres::Row],
    version_rows: &[tokio_postgres::Row],
) -> Result<Found<'static>, Error> {
    let mut found = Found {
        head: from_i64(head_row.get(0), "head position")?,
        ..Found::default()
    };
    for row in id_rows {
        let text: &str = row.get(0);
        let id = text.parse::<EventId>().map_err(|e| Error::Storage {
            backend: "postgres",
            reason: format!("a stored event id does not parse: {e}"),
        })?;
        let stream: String = row.get(1);
        let version = from_i64(row.get(2), "event version")?;
        let position = from_i64(row.get(3), "event position")?;
        let envelope: Option<String> = row.get(4);
        let stored = Stored {
            stream: StreamId::from(stream),
            version,
            position,
            envelope: envelope.map(Cow::Owned),
        };
        found.ids.insert(id, stored);
    }
    for row in version_rows {
        let stream: String = row.get(0);
        let version = from_i64(row.get(1), "stream version")?;
        found.versions.insert(StreamId::from(stream), version);
    }
    Ok(found)
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use keel_core::{Cause, Envelope, Intent, IntentKind, TimerId};

    use super::super::PostgresStore;
    use super::super::testing::{event, fresh_store, raw_client};
    use super::*;
    use crate::EventStore;
    use crate::subscription::Subscription;

    fn request(stream: &str, expected: ExpectedVersion, ids: &[u128]) -> Request {
        let events = ids
            .iter()
            .map(|id| (EventId::from_u128(*id), format!("{{\"id\":{id}}}")))
            .collect();
        Request {
            stream: StreamId::from(stream.to_owned()),
            expected,
            events,
            intents: vec![("i".to_owned(), "{}".to_owned())],
            mark: None,
            reply: oneshot::channel().0,
        }
    }

    /// What the database would hold after `entries` were appended by [`request`]s.
    fn stored(entries: &[(u128, &str, u64, u64)]) -> Found<'static> {
        let mut found = Found::default();
        for (id, stream, version, position) in entries {
            let stored = Stored {
                stream: StreamId::from((*stream).to_owned()),
                version: *version,
                position: *position,
                envelope: Some(Cow::Owned(format!("{{\"id\":{id}}}"))),
            };
            found.ids.insert(EventId::from_u128(*id), stored);
            let known = found
                .versions
                .entry(StreamId::from((*stream).to_owned()))
                .or_default();
            *known = (*known).max(*version);
            found.head = found.head.max(*position);
        }
        found
    }

    #[test]
    fn requests_of_a_group_see_the_ones_before_them() {
        let group = [
            request("a", ExpectedVersion::NoStream, &[1, 2]),
            request("a", ExpectedVersion::Exact(2), &[3]),
            request("b", ExpectedVersion::NoStream, &[4]),
            request("a", ExpectedVersion::Exact(2), &[5]),
        ];
        let plan = plan(&group, Found::default());
        let ok = |i: usize| plan.results[i].clone().unwrap();
        assert_eq!((ok(0).first_version, ok(0).first_position), (1, 1));
        assert_eq!((ok(1).first_version, ok(1).first_position), (3, 3));
        assert_eq!((ok(2).first_version, ok(2).first_position), (1, 4));
        assert!(matches!(
            plan.results[3],
            Err(Error::VersionConflict { actual: 3, .. })
        ));
        assert_eq!(plan.positions, [1, 2, 3, 4]);
        assert_eq!(plan.head, 4);
        assert_eq!(plan.stream_versions[&StreamId::from("a")], 3);
        assert_eq!(
            plan.intent_ids.len(),
            3,
            "a refused append records no intents"
        );
    }

    #[test]
    fn a_repeated_batch_answers_with_the_stored_result_and_writes_nothing() {
        let found = stored(&[(1, "a", 1, 7), (2, "a", 2, 8)]);
        let group = [request("a", ExpectedVersion::NoStream, &[1, 2])];
        let plan = plan(&group, found);
        let again = plan.results[0].clone().unwrap();
        assert!(again.deduplicated);
        assert_eq!(
            (
                again.first_version,
                again.last_version,
                again.first_position
            ),
            (1, 2, 7)
        );
        assert!(
            !plan.writes_anything(),
            "a deduplicated append records no intents"
        );
    }

    #[test]
    fn a_repeated_batch_with_other_content_is_a_conflict_unless_trimmed() {
        let mut group = [request("a", ExpectedVersion::NoStream, &[1, 2])];
        group[0].events[1].1 = "{\"id\":2,\"changed\":true}".to_owned();
        let conflict = plan(&group, stored(&[(1, "a", 1, 7), (2, "a", 2, 8)]));
        assert_eq!(
            conflict.results[0],
            Err(Error::EventConflict {
                id: EventId::from_u128(2).to_string(),
                stream: StreamId::from("a")
            })
        );
        assert!(!conflict.writes_anything());
        let mut trimmed = stored(&[(1, "a", 1, 7), (2, "a", 2, 8)]);
        for stored in trimmed.ids.values_mut() {
            stored.envelope = None;
        }
        let plan = plan(&group, trimmed);
        assert!(plan.results[0].as_ref().is_ok_and(|a| a.deduplicated));
    }

    #[test]
    fn a_repeat_within_one_group_compares_the_content_of_the_first() {
        let mut group = [
            request("a", ExpectedVersion::NoStream, &[1]),
            request("a", ExpectedVersion::Any, &[1]),
            request("a", ExpectedVersion::Any, &[1]),
        ];
        group[2].events[0].1 = "{\"other\":1}".to_owned();
        let plan = plan(&group, Found::default());
        assert!(plan.results[1].as_ref().is_ok_and(|a| a.deduplicated));
        assert!(
            matches!(plan.results[2], Err(Error::EventConflict { .. })),
            "{:?}",
            plan.results[2]
        );
    }

    #[test]
    fn a_stored_id_in_another_place_is_a_duplicate() {
        let found = stored(&[(1, "a", 1, 1)]);
        for group in [
            request("b", ExpectedVersion::Any, &[1]),
            request("a", ExpectedVersion::Any, &[2, 1]),
            request("a", ExpectedVersion::Any, &[1, 3]),
            request("a", ExpectedVersion::Any, &[4, 4]),
        ] {
            let group = [group];
            let plan = plan(&group, stored(&[(1, "a", 1, 1)]));
            assert!(
                matches!(plan.results[0], Err(Error::DuplicateEventId { .. })),
                "{:?}",
                plan.results[0]
            );
        }
        assert_eq!(found.head, 1);
    }

    #[test]
    fn the_version_is_checked_before_the_ids() {
        let group = [request("a", ExpectedVersion::Exact(5), &[2, 1])];
        let plan = plan(&group, stored(&[(1, "a", 1, 1)]));
        assert!(matches!(
            plan.results[0],
            Err(Error::VersionConflict { actual: 1, .. })
        ));
    }

    #[test]
    fn an_empty_batch_checks_the_version_and_records_its_intents() {
        let group = [request("a", ExpectedVersion::NoStream, &[])];
        let plan = plan(&group, stored(&[(1, "b", 1, 1)]));
        let appended = plan.results[0].clone().unwrap();
        assert_eq!(
            (
                appended.first_version,
                appended.last_version,
                appended.first_position
            ),
            (1, 0, 2)
        );
        assert!(plan.ids.is_empty() && plan.stream_versions.is_empty());
        assert_eq!(plan.intent_ids, ["i"]);
    }

    fn intent(position: u32) -> Intent {
        Intent {
            id: Cause::root(9).intent_id(position),
            kind: IntentKind::CancelTimer {
                timer: TimerId::from_static("t"),
            },
        }
    }

    fn events(ids: std::ops::RangeInclusive<u128>) -> Vec<Envelope> {
        ids.map(event).collect()
    }

    #[tokio::test]
    async fn appends_read_back_in_order_with_versions_and_positions() {
        let Some((store, _, _)) = fresh_store().await else {
            return;
        };
        let (a, b) = (StreamId::from("a"), StreamId::from("b"));
        let first = store
            .append(&a, ExpectedVersion::NoStream, &events(1..=2))
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
        assert_eq!(all[0].envelope, event(2), "envelopes come back exactly");
        assert_eq!((all[1].stream.as_str(), all[1].version), ("b", 1));
        let tail = store.read_stream(&a, 2, 10).await.unwrap();
        assert_eq!(tail.iter().map(|e| e.version).collect::<Vec<_>>(), [2]);
        assert!(store.read_stream(&a, 1, 0).await.unwrap().is_empty());
        assert_eq!(store.stream_version(&a).await.unwrap(), 2);
        assert_eq!(store.stream_version(&"none".into()).await.unwrap(), 0);
        assert_eq!(store.head().await.unwrap(), 3);
        assert_eq!(*store.watch_head().borrow(), 3);
        let empty = store
            .append(&a, ExpectedVersion::Exact(2), &[])
            .await
            .unwrap();
        assert_eq!(
            (
                empty.first_version,
                empty.last_version,
                empty.first_position
            ),
            (3, 2, 4)
        );
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn a_version_conflict_names_the_actual_version_and_stores_nothing() {
        let Some((store, _, _)) = fresh_store().await else {
            return;
        };
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
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn repeating_an_append_answers_with_the_earlier_result_and_a_reused_id_is_refused() {
        let Some((store, _, _)) = fresh_store().await else {
            return;
        };
        let (a, b) = (StreamId::from("a"), StreamId::from("b"));
        let batch = events(1..=2);
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
        for (stream, batch) in [(&a, vec![event(3), event(1)]), (&b, vec![event(2)])] {
            let error = store
                .append(stream, ExpectedVersion::Any, &batch)
                .await
                .unwrap_err();
            assert!(matches!(error, Error::DuplicateEventId { .. }), "{error:?}");
        }
        assert_eq!(store.head().await.unwrap(), 2);
        store.drop_schema().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn concurrent_appenders_get_contiguous_positions_in_commit_order() {
        const WRITERS: u128 = 32;
        const APPENDS: u128 = 10;
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        // Two stores on one schema stand for two processes: they share only the database.
        let other = PostgresStore::connect(&url, config).await.unwrap();
        let mut follower = Subscription::new(std::sync::Arc::new(store.clone()), 1);
        let writers: Vec<_> = (0..WRITERS)
            .map(|writer| {
                let store = if writer % 2 == 0 {
                    store.clone()
                } else {
                    other.clone()
                };
                tokio::spawn(async move {
                    let stream = StreamId::from(format!("s{}", writer % 8));
                    let mut count = 0;
                    for append in 0..APPENDS {
                        let size = 1 + (writer + append) % 3;
                        let first = writer * 1000 + append * 10;
                        let batch = events(first..=first + size - 1);
                        store
                            .append(&stream, ExpectedVersion::Any, &batch)
                            .await
                            .unwrap();
                        count += size as u64;
                    }
                    count
                })
            })
            .collect();
        let mut total = 0;
        for writer in writers {
            total += writer.await.unwrap();
        }
        // The follower read while the writers wrote: it must never have skipped one.
        for expected in 1..=total {
            let next = tokio::time::timeout(Duration::from_secs(10), follower.next())
                .await
                .unwrap()
                .unwrap();
            assert_eq!(next.position, expected);
        }
        let all = store.read_all(1, 10_000).await.unwrap();
        let positions: Vec<u64> = all.iter().map(|e| e.position).collect();
        assert_eq!(positions, (1..=total).collect::<Vec<_>>());
        let mut versions: HashMap<&str, u64> = HashMap::new();
        for recorded in &all {
            let version = versions.entry(recorded.stream.as_str()).or_default();
            *version += 1;
            assert_eq!(
                recorded.version, *version,
                "versions are gapless per stream"
            );
        }
        assert_eq!(store.head().await.unwrap(), total);
        assert_eq!(other.head().await.unwrap(), total);
        store.drop_schema().await.unwrap();
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_connection_lost_mid_append_stores_nothing_and_the_store_reconnects() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let a = StreamId::from("a");
        store
            .append(&a, ExpectedVersion::NoStream, &[event(1)])
            .await
            .unwrap();
        // Hold stream `a`'s row, so the next append stops midway through its write.
        let mut blocker = raw_client(&url).await;
        let blocking = blocker.transaction().await.unwrap();
        blocking
            .query(
                &format!(
                    "SELECT * FROM \"{}\".streams WHERE stream = 'a' FOR UPDATE",
                    config.schema
                ),
                &[],
            )
            .await
            .unwrap();
        let appending = tokio::spawn({
            let store = store.clone();
            async move {
                let a = StreamId::from("a");
                store
                    .append(&a, ExpectedVersion::Exact(1), &events(2..=101))
                    .await
            }
        });
        let killer = raw_client(&url).await;
        let application = format!("keel:{}", config.schema);
        let mut killed = false;
        for _ in 0..200 {
            let rows = killer
                .query(
                    "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                     WHERE application_name = $1 AND wait_event_type = 'Lock'",
                    &[&application],
                )
                .await
                .unwrap();
            if !rows.is_empty() {
                killed = true;
                break;
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        assert!(killed, "the append never waited on the blocked row");
        let error = appending.await.unwrap().unwrap_err();
        // The server ends the session with 57P01 (admin shutdown), or the socket closes
        // first: either way the store is away for now, and the append may be tried again.
        assert!(matches!(error, Error::Unavailable { .. }), "{error:?}");
        blocking.rollback().await.unwrap();

        let fresh = PostgresStore::connect(&url, config).await.unwrap();
        assert_eq!(fresh.read_stream(&a, 1, 1000).await.unwrap().len(), 1);
        assert_eq!(fresh.head().await.unwrap(), 1);
        assert_eq!(fresh.stream_version(&a).await.unwrap(), 1);

        let retried = store
            .append(&a, ExpectedVersion::Exact(1), &events(2..=101))
            .await
            .unwrap();
        assert_eq!((retried.first_position, retried.last_version), (2, 101));

        // Every connection of the store killed while idle: the next calls reconnect.
        killer
            .query(
                "SELECT pg_terminate_backend(pid) FROM pg_stat_activity \
                 WHERE application_name = $1",
                &[&application],
            )
            .await
            .unwrap();
        tokio::time::sleep(Duration::from_millis(200)).await;
        assert_eq!(store.head().await.unwrap(), 101);
        let after = store
            .append(&a, ExpectedVersion::Exact(101), &[event(500)])
            .await
            .unwrap();
        assert_eq!(after.first_position, 102);
        fresh.drop_schema().await.unwrap();
    }
}
