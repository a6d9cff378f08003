//! Every backend keeps an index of instances from the marks on the events it stores:
//! the last marked event of an append sets its stream's row (kind, status, finished,
//! version, time, position) in the append's own transaction, so a refused append
//! changes no row. `instances` filters and pages the rows; `read_unfinished` reads the
//! events of the unfinished streams only, in position order; `purge_finished` removes
//! old finished instances as a trim would (their ids stay taken, their version stays).

use crate::common::stores;

use keel_core::{Envelope, EventId, EventType, ExpectedVersion, Payload, StreamId, Timestamp};
use keel_store::{
    Error, EventStore, InstanceEntry, InstanceMark, InstanceQuery, RecordedEvent, StoredSnapshot,
};
use serde_json::json;
use stores::Backend;

/// An event at `second` seconds past a fixed time, marked if `mark` is given.
fn event(second: i64, mark: Option<&InstanceMark>) -> Envelope {
    let mut envelope = Envelope::builder(
        EventId::new(uuid::Uuid::new_v4()),
        EventType::from_static("test.happened"),
        "keel-tests",
        Timestamp::from_unix_millis(1_700_000_000_000 + second * 1000),
    )
    .payload(Payload::Json(json!({ "at": second })))
    .build()
    .expect("a valid test envelope");
    if let Some(mark) = mark {
        mark.apply(&mut envelope);
    }
    envelope
}

fn at(second: i64) -> Timestamp {
    Timestamp::from_unix_millis(1_700_000_000_000 + second * 1000)
}

fn running(kind: &str) -> InstanceMark {
    InstanceMark::new(kind, "running", false)
}

fn completed(kind: &str) -> InstanceMark {
    InstanceMark::new(kind, "completed", true)
}

fn positions(events: &[RecordedEvent]) -> Vec<u64> {
    events.iter().map(|e| e.position).collect()
}

fn streams(entries: &[InstanceEntry]) -> Vec<&str> {
    entries.iter().map(|e| e.stream.as_str()).collect()
}

async fn append(store: &dyn EventStore, stream: &str, events: &[Envelope]) {
    store
        .append(
            &StreamId::from(stream.to_owned()),
            ExpectedVersion::Any,
            events,
        )
        .await
        .expect("an append");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_last_marked_event_of_an_append_sets_its_streams_row() {
    for backend in Backend::available().await {
        let mut test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        let s = StreamId::from("saga-1");
        // A store created by this keel keeps the index from its first event.
        assert_eq!(store.unindexed_head().await.unwrap(), 0, "{name}");
        append(store, "other", &[event(0, None)]).await;
        // Marked, then the last marked one wins over an earlier one of the same batch;
        // an unmarked event after it does not move the row.
        let batch = [
            event(1, Some(&running("saga"))),
            event(2, Some(&InstanceMark::new("saga", "compensating", false))),
            event(3, None),
        ];
        append(store, "saga-1", &batch).await;
        let rows = store.instances(&InstanceQuery::all()).await.expect("rows");
        let want = InstanceEntry {
            stream: s.clone(),
            kind: "saga".to_owned(),
            status: "compensating".to_owned(),
            finished: false,
            version: 2,
            updated: at(2),
            position: 3,
        };
        assert_eq!(
            rows,
            std::slice::from_ref(&want),
            "[{name}] one row, from the last mark"
        );

        // An append without marks leaves the row alone.
        append(store, "saga-1", &[event(4, None)]).await;
        let rows = store.instances(&InstanceQuery::all()).await.expect("rows");
        assert_eq!(
            rows,
            std::slice::from_ref(&want),
            "[{name}] unmarked appends change nothing"
        );

        // A refused append (wrong version) changes no row, nor does a repeat.
        let refused = store
            .append(
                &s,
                ExpectedVersion::Exact(1),
                &[event(5, Some(&completed("saga")))],
            )
            .await;
        assert!(
            matches!(refused, Err(Error::VersionConflict { actual: 4, .. })),
            "[{name}] {refused:?}"
        );
        let repeat = store.append(&s, ExpectedVersion::Any, &batch).await;
        assert!(repeat.is_ok_and(|a| a.deduplicated), "[{name}] a repeat");
        // A batch that reuses an id is refused whole, and its mark with it.
        let reused = [event(6, Some(&completed("saga"))), batch[0].clone()];
        let error = store.append(&s, ExpectedVersion::Any, &reused).await;
        assert!(
            matches!(error, Err(Error::DuplicateEventId { .. })),
            "[{name}] {error:?}"
        );
        let rows = store.instances(&InstanceQuery::all()).await.expect("rows");
        assert_eq!(rows, [want], "[{name}] refused appends change no row");

        // Finishing: the latest mark wins, with its version and position.
        append(store, "saga-1", &[event(7, Some(&completed("saga")))]).await;
        for pass in ["before", "after"] {
            let rows = test.store.instances(&InstanceQuery::all()).await;
            let row = rows.expect("rows").pop().expect("a row");
            assert_eq!(
                (row.status.as_str(), row.finished, row.version, row.position),
                ("completed", true, 5, 6),
                "[{name}] {pass} a restart"
            );
            assert_eq!(row.updated, at(7), "[{name}] {pass} a restart");
            test.restart().await;
        }
        test.cleanup().await;
    }
}

/// Five instances: `e1` (equipment, running), `s1` (saga, completed), `s2` (saga,
/// needs_intervention), `s3` (saga, running), `s4` (saga, completed), and an unmarked
/// stream `log`, appended interleaved so that positions mix the streams.
async fn five_instances(store: &dyn EventStore) {
    let stuck = InstanceMark::new("saga", "needs_intervention", false);
    append(store, "s1", &[event(1, Some(&running("saga")))]).await;
    append(store, "log", &[event(2, None)]).await;
    append(store, "s2", &[event(3, Some(&running("saga")))]).await;
    append(store, "e1", &[event(4, Some(&running("equipment")))]).await;
    append(store, "s1", &[event(5, Some(&completed("saga")))]).await;
    append(
        store,
        "s3",
        &[event(6, Some(&running("saga"))), event(7, None)],
    )
    .await;
    append(store, "s2", &[event(8, None), event(9, Some(&stuck))]).await;
    append(store, "s4", &[event(10, Some(&running("saga")))]).await;
    append(store, "log", &[event(11, None)]).await;
    append(store, "s4", &[event(12, Some(&completed("saga")))]).await;
    append(store, "e1", &[event(13, None)]).await;
    // Positions: s1 1, 5; log 2, 11; s2 3, 8, 9; e1 4, 13; s3 6, 7; s4 10, 12.
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn instances_are_filtered_by_kind_status_and_finished_and_paged_by_stream() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        five_instances(store).await;
        let cases = [
            (InstanceQuery::all(), vec!["e1", "s1", "s2", "s3", "s4"]),
            (InstanceQuery::unfinished(), vec!["e1", "s2", "s3"]),
            (InstanceQuery::finished(), vec!["s1", "s4"]),
            (InstanceQuery::unfinished().kind("saga"), vec!["s2", "s3"]),
            (InstanceQuery::all().kind("equipment"), vec!["e1"]),
            (InstanceQuery::all().status("completed"), vec!["s1", "s4"]),
            (
                InstanceQuery::all()
                    .kind("saga")
                    .status("needs_intervention"),
                vec!["s2"],
            ),
            (InstanceQuery::all().kind("robot"), vec![]),
            (InstanceQuery::all().after("s1").limit(2), vec!["s2", "s3"]),
            (InstanceQuery::unfinished().after("s3"), vec![]),
            (InstanceQuery::all().limit(0), vec![]),
        ];
        for (query, want) in cases {
            let rows = store.instances(&query).await.expect("rows");
            assert_eq!(streams(&rows), want, "[{name}] {query:?}");
        }
        // Keyset paging walks every row once.
        let mut seen = Vec::new();
        let mut query = InstanceQuery::all().limit(2);
        loop {
            let page = store.instances(&query).await.expect("a page");
            let Some(last) = page.last() else { break };
            query = query.after(last.stream.clone());
            seen.extend(page.into_iter().map(|row| row.stream));
        }
        let seen: Vec<&str> = seen.iter().map(StreamId::as_str).collect();
        assert_eq!(seen, ["e1", "s1", "s2", "s3", "s4"], "[{name}] pages");
        let s2 = store
            .instances(&InstanceQuery::all().status("needs_intervention"))
            .await;
        let s2 = s2.expect("rows").pop().expect("s2");
        assert_eq!(
            (s2.version, s2.position, s2.updated),
            (3, 9, at(9)),
            "[{name}]"
        );
        test.cleanup().await;
    }
}

/// The events of `streams`, as `read_all` has them, ordered by stream then version.
async fn by_stream(store: &dyn EventStore, streams: &[&str]) -> Vec<RecordedEvent> {
    let mut events: Vec<RecordedEvent> = store
        .read_all(1, 100)
        .await
        .expect("read_all")
        .into_iter()
        .filter(|e| streams.contains(&e.stream.as_str()))
        .collect();
    events.sort_by(|a, b| (&a.stream, a.version).cmp(&(&b.stream, b.version)));
    events
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn read_unfinished_returns_the_unfinished_streams_events_by_stream_then_version() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        five_instances(store).await;
        // e1, s2 and s3 are unfinished: every event of theirs, one stream after the
        // other, nothing of s1, s4 or log.
        let all = store
            .read_unfinished(None, None, 100)
            .await
            .expect("a read");
        assert_eq!(positions(&all), [4, 13, 3, 8, 9, 6, 7], "[{name}]");
        let wanted = by_stream(store, &["e1", "s2", "s3"]).await;
        assert_eq!(all, wanted, "[{name}] as stored");
        let sagas = store
            .read_unfinished(Some("saga"), None, 100)
            .await
            .expect("sagas");
        assert_eq!(positions(&sagas), [3, 8, 9, 6, 7], "[{name}] of one kind");
        let none = store
            .read_unfinished(Some("robot"), None, 100)
            .await
            .expect("none");
        assert!(none.is_empty(), "[{name}] {none:?}");

        // Paging by the last event's stream and version, across and within streams.
        for limit in [1, 2, 3] {
            let mut paged = Vec::new();
            let mut after: Option<(StreamId, u64)> = None;
            loop {
                let cursor = after.as_ref().map(|(s, v)| (s, *v));
                let page = store
                    .read_unfinished(None, cursor, limit)
                    .await
                    .expect("a page");
                assert!(page.len() <= limit, "[{name}] the limit holds");
                let Some(last) = page.last() else { break };
                after = Some((last.stream.clone(), last.version));
                paged.extend(positions(&page));
            }
            assert_eq!(paged, [4, 13, 3, 8, 9, 6, 7], "[{name}] pages of {limit}");
        }
        let s2 = StreamId::from("s2");
        let tail = store.read_unfinished(None, Some((&s2, 1)), 100).await;
        assert_eq!(
            positions(&tail.expect("a tail")),
            [8, 9, 6, 7],
            "[{name}] after s2@1"
        );
        // After a finished stream: its rest is not read, the next streams are.
        let s1 = StreamId::from("s1");
        let on = store.read_unfinished(None, Some((&s1, 1)), 100).await;
        assert_eq!(
            positions(&on.expect("a read")),
            [3, 8, 9, 6, 7],
            "[{name}] after s1"
        );
        let zero = store.read_unfinished(None, None, 0).await.expect("zero");
        assert!(zero.is_empty());

        // Finishing s3 takes it out; marking s1 running again brings it back whole.
        append(store, "s3", &[event(20, Some(&completed("saga")))]).await;
        append(store, "s1", &[event(21, Some(&running("saga")))]).await;
        let after = store
            .read_unfinished(None, None, 100)
            .await
            .expect("a read");
        assert_eq!(positions(&after), [4, 13, 1, 5, 15, 3, 8, 9], "[{name}]");
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn purging_removes_old_finished_instances_only_and_keeps_their_ids_taken() {
    for backend in Backend::available().await {
        let mut test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        five_instances(store).await;
        // A late finished instance (updated at 30 s) and a finished equipment.
        let done_late = [event(30, Some(&completed("saga")))];
        append(store, "s5", &done_late).await;
        append(store, "e1", &[event(14, Some(&completed("equipment")))]).await;
        let s1 = StreamId::from("s1");
        let s1_events = store.read_stream(&s1, 1, 10).await.expect("s1");
        let snapshot = StoredSnapshot {
            stream: s1.clone(),
            version: 2,
            state: json!({ "done": true }),
        };
        store.save_snapshot(&snapshot).await.expect("a snapshot");
        store
            .set_metadata(&s1, &json!({ "owner": "x" }))
            .await
            .expect("metadata");

        // Of one kind, with a limit: s1 goes (smallest stream first), s4 stays.
        let purged = store.purge_finished(Some("saga"), at(20), 1).await;
        assert_eq!(purged.ok(), Some(1), "[{name}] the limit holds");
        let finished = store
            .instances(&InstanceQuery::finished())
            .await
            .expect("rows");
        assert_eq!(streams(&finished), ["e1", "s4", "s5"], "[{name}]");
        assert!(store.read_stream(&s1, 1, 10).await.expect("s1").is_empty());
        assert_eq!(store.load_snapshot(&s1).await.ok(), Some(None), "[{name}]");
        assert_eq!(store.metadata(&s1).await.ok(), Some(None), "[{name}]");
        assert_eq!(
            store.stream_version(&s1).await.ok(),
            Some(2),
            "[{name}] kept"
        );

        // The rest of the old ones: s4 and e1, not s5 (too recent), nor unfinished s2.
        let purged = store.purge_finished(None, at(20), 100).await;
        assert_eq!(purged.ok(), Some(2), "[{name}]");
        let left = store.instances(&InstanceQuery::all()).await.expect("rows");
        assert_eq!(streams(&left), ["s2", "s3", "s5"], "[{name}]");
        let all = store.read_all(1, 100).await.expect("read_all");
        let kept: Vec<&str> = all.iter().map(|e| e.stream.as_str()).collect();
        assert!(
            kept.iter().all(|s| ["log", "s2", "s3", "s5"].contains(s)),
            "[{name}] {kept:?}"
        );
        assert_eq!(
            all.len(),
            2 + 3 + 2 + 1,
            "[{name}] log, s2, s3, s5 stay whole"
        );
        assert_eq!(store.purge_finished(None, at(20), 100).await.ok(), Some(0));

        for pass in ["before", "after"] {
            let store = test.store.as_ref();
            let what = format!("[{name}] {pass} a restart");
            // A purged event's id stays taken: an append carrying it is refused, even
            // at its old place (a writer starting the instance again under the same
            // derived ids must not be told it had), and so is its use elsewhere; the
            // version does not go back.
            let again = store
                .append(
                    &s1,
                    ExpectedVersion::NoStream,
                    &[s1_events[0].envelope.clone()],
                )
                .await;
            assert!(
                matches!(again, Err(Error::DuplicateEventId { .. })),
                "{what}: {again:?}"
            );
            let elsewhere = store
                .append(
                    &"s9".into(),
                    ExpectedVersion::Any,
                    &[s1_events[1].envelope.clone()],
                )
                .await;
            assert!(
                matches!(elsewhere, Err(Error::DuplicateEventId { .. })),
                "{what}: {elsewhere:?}"
            );
            let fresh = store
                .append(&s1, ExpectedVersion::NoStream, &[event(40, None)])
                .await;
            assert!(
                matches!(fresh, Err(Error::VersionConflict { actual: 2, .. })),
                "{what}: {fresh:?}"
            );
            test.restart().await;
        }
        let store = test.store.as_ref();
        let next = store
            .append(
                &s1,
                ExpectedVersion::Exact(2),
                &[event(41, Some(&running("saga")))],
            )
            .await
            .expect("numbering goes on");
        assert_eq!(next.first_version, 3, "[{name}]");
        let sagas = store.read_unfinished(Some("saga"), None, 10).await;
        let sagas = sagas.expect("a read");
        let s1_now: Vec<&RecordedEvent> = sagas.iter().filter(|e| e.stream == s1).collect();
        assert_eq!(
            s1_now.len(),
            1,
            "[{name}] only the new event of the purged stream"
        );
        assert_eq!(s1_now[0].position, next.first_position);
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn recovery_goes_through_the_index_when_the_unfinished_are_few() {
    use keel_store::index::{HISTORY_PER_UNFINISHED, recover_through_index};
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        // Two unfinished instances (s2, s3) and an equipment (e1) in 13 events: three
        // in 13 is more than one in 8, so a pass over the history is as good.
        five_instances(store).await;
        assert!(
            !recover_through_index(store, None).await.unwrap(),
            "[{name}]"
        );
        // Sagas only: two, still more than one in 8 of 13.
        assert!(!recover_through_index(store, Some("saga")).await.unwrap());
        // A longer history of finished ones: now the index is the faster way.
        for n in 0..(3 * HISTORY_PER_UNFINISHED) {
            let stream = format!("done-{n}");
            append(
                store,
                &stream,
                &[event(100 + n as i64, Some(&completed("saga")))],
            )
            .await;
        }
        assert!(
            recover_through_index(store, None).await.unwrap(),
            "[{name}]"
        );
        assert!(recover_through_index(store, Some("robot")).await.unwrap());
        test.cleanup().await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_unfinished_stream_trimmed_empty_does_not_end_the_pages() {
    for backend in Backend::available().await {
        let test = backend.open().await;
        let name = test.name;
        let store = test.store.as_ref();
        // Three unfinished streams; the first two lose every event to a trim.
        for (n, stream) in ["a", "b", "c"].into_iter().enumerate() {
            append(
                store,
                stream,
                &[event(n as i64 + 1, Some(&running("saga")))],
            )
            .await;
        }
        for stream in ["a", "b"] {
            let stream = StreamId::from(stream);
            let trimmed = store.trim(&stream, keel_store::Trim::KeepLast(0)).await;
            assert_eq!(trimmed.expect("a trim"), 1, "[{name}]");
        }
        let page = store.read_unfinished(None, None, 1).await.expect("a page");
        let streams: Vec<&str> = page.iter().map(|e| e.stream.as_str()).collect();
        assert_eq!(streams, ["c"], "[{name}] the empty streams are passed over");
        test.cleanup().await;
    }
}
