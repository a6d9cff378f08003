//! The store's tables, their versioned migrations, and the SQL of every statement.
//!
//! Every table lives in one PostgreSQL schema named by [`PostgresConfig::schema`], so
//! several stores (or tests) share a database without seeing each other. The schema's
//! `keel_meta` row records which migration it is at; `connect` brings it up to
//! [`SCHEMA_VERSION`] under an advisory lock, so processes starting together migrate once.
//!
//! [`PostgresConfig::schema`]: super::PostgresConfig::schema

use std::collections::HashMap;

use tokio_postgres::Client;

use super::{location_error, storage, storage_error};
use crate::error::Error;

/// The schema version this build creates and understands.
pub(super) const SCHEMA_VERSION: u32 = 3;

/// The first key of the advisory lock taken while migrating ("keel" in ASCII); the
/// second is the hash of the schema name, so stores in other schemas do not wait.
const MIGRATION_LOCK_KEY: i32 = 0x6B65_656C;

/// The first key of the writer lock, a session-level advisory lock ("kwrt" in ASCII:
/// keel's writer); the second is the hash of the schema name, as for migrations.
pub(super) const WRITER_LOCK_KEY: i32 = 0x6B77_7274;

/// Takes the writer lock if it is free, without waiting: `true` if taken.
pub(super) const TRY_LOCK_WRITER: &str =
    "SELECT pg_try_advisory_lock($1::int4, hashtext($2::text))";

/// Releases the writer lock this session holds.
pub(super) const UNLOCK_WRITER: &str = "SELECT pg_advisory_unlock($1::int4, hashtext($2::text))";

/// The longest identifier PostgreSQL keeps (`NAMEDATALEN - 1`); longer ones are cut.
const IDENTIFIER_BYTES_MAX: usize = 63;

/// Migration `n` (from 1) takes the schema from version `n - 1` to `n`. `{s}` stands
/// for the quoted schema name. Never edit one that has shipped: add the next.
///
/// Envelopes, intents and JSON documents are stored as the text serde_json wrote, not
/// as JSONB: the text comes back byte for byte (JSONB rewrites numbers and refuses
/// `\u0000`), and writing it costs no parse. Cast to `jsonb` to query inside them.
const MIGRATIONS: [&str; 3] = [
    r#"
CREATE TABLE {s}.keel_meta (
    id smallint PRIMARY KEY CHECK (id = 1),
    schema_version integer NOT NULL
);
INSERT INTO {s}.keel_meta (id, schema_version) VALUES (1, 0);

-- The last position handed out. Every append locks this row first: that serialises
-- appends, so positions are gapless and become visible in order.
CREATE TABLE {s}.keel_head (
    id smallint PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
INSERT INTO {s}.keel_head (id, position) VALUES (1, 0);

CREATE TABLE {s}.events (
    position bigint PRIMARY KEY,
    stream text NOT NULL,
    version bigint NOT NULL,
    id uuid NOT NULL UNIQUE,
    envelope text NOT NULL,
    UNIQUE (stream, version)
);

-- A stream's version survives trimming, so it lives here, not in max(events.version).
CREATE TABLE {s}.streams (
    stream text PRIMARY KEY,
    version bigint NOT NULL
);

-- Where trimmed events were: an event id is never reused, and repeating a trimmed
-- append still answers with its earlier result.
CREATE TABLE {s}.trimmed_event_ids (
    id uuid PRIMARY KEY,
    stream text NOT NULL,
    version bigint NOT NULL,
    position bigint NOT NULL
);

-- Pending intents only: completing one deletes it.
CREATE TABLE {s}.outbox (
    sequence bigint GENERATED ALWAYS AS IDENTITY PRIMARY KEY,
    id text NOT NULL UNIQUE,
    intent text NOT NULL
);

CREATE TABLE {s}.snapshots (
    stream text PRIMARY KEY,
    version bigint NOT NULL,
    state text NOT NULL
);

CREATE TABLE {s}.stream_metadata (
    stream text PRIMARY KEY,
    metadata text NOT NULL
);

CREATE TABLE {s}.projections (
    name text PRIMARY KEY,
    checkpoint bigint NOT NULL,
    model text NOT NULL
);
"#,
    r#"
-- Who holds the writer lock (a session-level advisory lock), written by each holder
-- once it has the lock so that a refused locker can name it. The holder's backend pid
-- tells the current holder's row from one left by a holder whose session has ended.
CREATE TABLE {s}.keel_writer (
    id smallint PRIMARY KEY CHECK (id = 1),
    backend_pid integer NOT NULL,
    holder text NOT NULL
);
"#,
    r#"
-- The index of instances: one row per stream whose events carry a mark (keelkind,
-- keelstatus, keelfinished), from its last marked event, set by the append that stores
-- it. Listing sorts streams in byte order ("C"), as the other backends do, for keyset
-- paging; the column keeps the collation of events.stream, so that joining the two
-- by stream can use the events' (stream, version) index.
CREATE TABLE {s}.instances (
    stream text PRIMARY KEY,
    kind text NOT NULL,
    status text NOT NULL,
    finished boolean NOT NULL,
    version bigint NOT NULL,
    updated_ns bigint NOT NULL,
    position bigint NOT NULL
);
-- Listing pages in byte order; filters by kind and status apply to the rows passed
-- (each index more costs every start and end of an instance a b-tree change).
CREATE INDEX instances_by_stream ON {s}.instances (stream COLLATE "C");
-- The unfinished streams only, in byte order: what recovery walks.
CREATE INDEX instances_unfinished ON {s}.instances (stream COLLATE "C") WHERE NOT finished;

-- Filled from the marks already stored by `backfill_instances`, in Rust: PostgreSQL's
-- json parsing refuses a \u0000 anywhere in an envelope, which keel stores.

-- The head when the index began: events up to it may carry no mark (an older keel
-- wrote them). 0 for a schema created with the index (migration 1 just set the head).
CREATE TABLE {s}.keel_unindexed (
    id smallint PRIMARY KEY CHECK (id = 1),
    position bigint NOT NULL
);
INSERT INTO {s}.keel_unindexed (id, position) SELECT 1, position FROM {s}.keel_head;
"#,
];

/// A schema name that is safe to put into SQL: `[a-z_][a-z0-9_]{0,62}`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(super) struct SchemaName(String);

impl SchemaName {
    /// Checks `name`; it is interpolated into SQL, so nothing else is accepted.
    pub(super) fn parse(name: &str) -> Result<Self, Error> {
        let mut chars = name.chars();
        let first_ok = chars
            .next()
            .is_some_and(|c| c.is_ascii_lowercase() || c == '_');
        let rest_ok = chars.all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '_');
        if !first_ok || !rest_ok || name.len() > IDENTIFIER_BYTES_MAX {
            return Err(Error::InvalidConfig {
                setting: "schema",
                reason: format!(
                    "`{name}` is not a plain schema name: use 1 to 63 characters of a-z, 0-9 \
                     and _, not starting with a digit"
                ),
            });
        }
        Ok(Self(name.to_owned()))
    }

    pub(super) fn as_str(&self) -> &str {
        &self.0
    }

    /// The name quoted as an SQL identifier (so reserved words work too).
    pub(super) fn quoted(&self) -> String {
        format!("\"{}\"", self.0)
    }

    /// The LISTEN/NOTIFY channel announcing new heads: `keel_head_<schema>`.
    ///
    /// PostgreSQL cuts identifiers at 63 bytes, which would let two long schema names
    /// share a channel and read each other's heads; a long name is therefore shortened
    /// with a stable hash of the whole name instead.
    pub(super) fn channel(&self) -> String {
        let channel = format!("keel_head_{}", self.0);
        if channel.len() <= IDENTIFIER_BYTES_MAX {
            return channel;
        }
        // The name is ASCII, so any byte index is a char boundary.
        format!(
            "keel_head_{}_{:016x}",
            &self.0[..36],
            fnv1a(self.0.as_bytes())
        )
    }
}

/// FNV-1a, 64 bits: stable across builds and processes, unlike std's hashers.
fn fnv1a(bytes: &[u8]) -> u64 {
    bytes.iter().fold(0xCBF2_9CE4_8422_2325, |hash, byte| {
        (hash ^ u64::from(*byte)).wrapping_mul(0x0100_0000_01B3)
    })
}

/// The SQL of every statement the store prepares, with the schema filled in.
#[derive(Debug, Clone)]
pub(super) struct Sql {
    pub(super) lock_head: String,
    pub(super) head: String,
    pub(super) unindexed_head: String,
    pub(super) find_ids: String,
    pub(super) stream_versions: String,
    pub(super) write: String,
    pub(super) read_stream: String,
    pub(super) read_all: String,
    pub(super) stream_version: String,
    pub(super) pending_intents: String,
    pub(super) complete_intents: String,
    pub(super) save_snapshot: String,
    pub(super) load_snapshot: String,
    pub(super) set_metadata: String,
    pub(super) metadata: String,
    pub(super) trim_bounds: String,
    pub(super) first_version_from: String,
    pub(super) trim: String,
    pub(super) read_unfinished_rest: String,
    pub(super) read_unfinished_next: String,
    pub(super) purge_finished: String,
    pub(super) purge_finished_kind: String,
    pub(super) load_projection: String,
    pub(super) insert_projection: String,
    pub(super) update_projection: String,
    /// The holder recorded by the session that holds the writer lock, if it has; run
    /// unprepared on the locker's own connection, as is `record_writer`.
    pub(super) writer_holder: String,
    pub(super) record_writer: String,
}

impl Sql {
    pub(super) fn new(schema: &SchemaName) -> Self {
        let s = schema.quoted();
        Self {
            lock_head: format!("SELECT position FROM {s}.keel_head WHERE id = 1 FOR UPDATE"),
            head: format!("SELECT position FROM {s}.keel_head WHERE id = 1"),
            unindexed_head: format!("SELECT position FROM {s}.keel_unindexed WHERE id = 1"),
            // The envelope too, to tell a repeat from a conflict: only ids already
            // stored have rows, so an append of new events reads none back.
            find_ids: format!(
                "SELECT id::text, stream, version, position, envelope FROM {s}.events \
                 WHERE id = ANY($1::text[]::uuid[]) \
                 UNION ALL \
                 SELECT id::text, stream, version, position, NULL::text \
                 FROM {s}.trimmed_event_ids WHERE id = ANY($1::text[]::uuid[])"
            ),
            stream_versions: format!(
                "SELECT stream, version FROM {s}.streams WHERE stream = ANY($1::text[])"
            ),
            // One statement writes a whole group of appends: its data-modifying CTEs all
            // run, in one snapshot, and the notification goes out only at commit.
            write: format!(
                "WITH new_events AS ( \
                     INSERT INTO {s}.events (position, stream, version, id, envelope) \
                     SELECT * FROM unnest($1::int8[], $2::text[], $3::int8[], \
                                          $4::text[]::uuid[], $5::text[]) \
                 ), new_versions AS ( \
                     INSERT INTO {s}.streams (stream, version) \
                     SELECT * FROM unnest($6::text[], $7::int8[]) \
                     ON CONFLICT (stream) DO UPDATE SET version = EXCLUDED.version \
                 ), new_intents AS ( \
                     INSERT INTO {s}.outbox (id, intent) \
                     SELECT id, intent FROM unnest($8::text[], $9::text[]) \
                         WITH ORDINALITY AS t (id, intent, n) \
                     ORDER BY n \
                     ON CONFLICT (id) DO NOTHING \
                 ), new_head AS ( \
                     UPDATE {s}.keel_head SET position = $10::int8 WHERE id = 1 \
                 ), new_instances AS ( \
                     INSERT INTO {s}.instances \
                         (stream, kind, status, finished, version, updated_ns, position) \
                     SELECT * FROM unnest($14::text[], $15::text[], $16::text[], \
                                          $17::bool[], $18::int8[], $19::int8[], $20::int8[]) \
                     ON CONFLICT (stream) DO UPDATE SET kind = EXCLUDED.kind, \
                         status = EXCLUDED.status, finished = EXCLUDED.finished, \
                         version = EXCLUDED.version, updated_ns = EXCLUDED.updated_ns, \
                         position = EXCLUDED.position \
                 ) \
                 SELECT pg_notify($11::text, $12::text) WHERE $13::bool"
            ),
            read_stream: format!(
                "SELECT version, position, envelope FROM {s}.events \
                 WHERE stream = $1::text AND version >= $2::int8 \
                 ORDER BY version LIMIT $3::int8"
            ),
            read_all: format!(
                "SELECT stream, version, position, envelope FROM {s}.events \
                 WHERE position >= $1::int8 ORDER BY position LIMIT $2::int8"
            ),
            stream_version: format!("SELECT version FROM {s}.streams WHERE stream = $1::text"),
            pending_intents: format!(
                "SELECT intent FROM {s}.outbox ORDER BY sequence LIMIT $1::int8"
            ),
            complete_intents: format!("DELETE FROM {s}.outbox WHERE id = ANY($1::text[])"),
            save_snapshot: format!(
                "INSERT INTO {s}.snapshots (stream, version, state) \
                 VALUES ($1::text, $2::int8, $3::text) \
                 ON CONFLICT (stream) DO UPDATE \
                 SET version = EXCLUDED.version, state = EXCLUDED.state"
            ),
            load_snapshot: format!(
                "SELECT version, state FROM {s}.snapshots WHERE stream = $1::text"
            ),
            set_metadata: format!(
                "INSERT INTO {s}.stream_metadata (stream, metadata) VALUES ($1::text, $2::text) \
                 ON CONFLICT (stream) DO UPDATE SET metadata = EXCLUDED.metadata"
            ),
            metadata: format!("SELECT metadata FROM {s}.stream_metadata WHERE stream = $1::text"),
            // One statement, so one snapshot: the first event is never above the version.
            trim_bounds: format!(
                "SELECT version, \
                     (SELECT min(version) FROM {s}.events WHERE stream = $1::text) \
                 FROM {s}.streams WHERE stream = $1::text"
            ),
            first_version_from: format!(
                "SELECT min(version) FROM {s}.events \
                 WHERE stream = $1::text AND position >= $2::int8"
            ),
            trim: format!(
                "WITH moved AS ( \
                     DELETE FROM {s}.events WHERE stream = $1::text AND version < $2::int8 \
                     RETURNING id, stream, version, position \
                 ) \
                 INSERT INTO {s}.trimmed_event_ids (id, stream, version, position) \
                 SELECT id, stream, version, position FROM moved"
            ),
            read_unfinished_rest: read_unfinished_rest(&s),
            read_unfinished_next: read_unfinished_next(&s),
            purge_finished: purge_finished(&s, ""),
            purge_finished_kind: purge_finished(&s, "AND kind = $3::text"),
            load_projection: format!(
                "SELECT checkpoint, model FROM {s}.projections WHERE name = $1::text"
            ),
            // Expected checkpoint 0: no row yet, or a row reset to 0 by a rebuild.
            insert_projection: format!(
                "INSERT INTO {s}.projections AS p (name, checkpoint, model) \
                 VALUES ($1::text, $2::int8, $3::text) \
                 ON CONFLICT (name) DO UPDATE \
                 SET checkpoint = EXCLUDED.checkpoint, model = EXCLUDED.model \
                 WHERE p.checkpoint = 0"
            ),
            update_projection: format!(
                "UPDATE {s}.projections SET checkpoint = $3::int8, model = $4::text \
                 WHERE name = $1::text AND checkpoint = $2::int8"
            ),
            // Two-key advisory locks show in pg_locks as classid, objid, objsubid 2.
            writer_holder: format!(
                "SELECT w.holder FROM {s}.keel_writer w \
                 WHERE w.id = 1 AND w.backend_pid = ( \
                     SELECT l.pid FROM pg_locks l \
                     WHERE l.locktype = 'advisory' AND l.granted AND l.objsubid = 2 \
                     AND l.database = (SELECT oid FROM pg_database \
                                       WHERE datname = current_database()) \
                     AND l.classid = $1::int4::oid AND l.objid = hashtext($2::text)::oid \
                     LIMIT 1)"
            ),
            record_writer: format!(
                "INSERT INTO {s}.keel_writer (id, backend_pid, holder) \
                 VALUES (1, pg_backend_pid(), $1::text) \
                 ON CONFLICT (id) DO UPDATE \
                 SET backend_pid = EXCLUDED.backend_pid, holder = EXCLUDED.holder"
            ),
        }
    }
}

/// The rest of one unfinished stream's events after a version (`$1` stream, `$2`
/// version, `$3` limit, `$4` kind or NULL): the stream a page of
/// [`EventStore::read_unfinished`](crate::EventStore::read_unfinished) stopped in.
fn read_unfinished_rest(s: &str) -> String {
    format!(
        "SELECT e.stream, e.version, e.position, e.envelope FROM {s}.events e \
         WHERE e.stream = $1::text AND e.version > $2::int8 AND EXISTS ( \
             SELECT 1 FROM {s}.instances i WHERE i.stream = $1::text AND NOT i.finished \
             AND ($4::text IS NULL OR i.kind = $4::text)) \
         ORDER BY e.version LIMIT $3::int8"
    )
}

/// The events of the unfinished streams after a stream (`$1`, byte order), by stream
/// then version (`$2` limit, `$3` kind or NULL). The subquery walks the partial index
/// of unfinished rows in stream order and stops after `$2` streams that hold an event
/// (a stream trimmed empty is passed over, or a run of them would end the pages
/// early); the lateral one reads only those streams' events, through the
/// `events (stream, version)` index. Finished streams are never read.
fn read_unfinished_next(s: &str) -> String {
    format!(
        "SELECT e.stream, e.version, e.position, e.envelope FROM ( \
             SELECT stream FROM {s}.instances u \
             WHERE NOT finished AND stream COLLATE \"C\" > $1::text COLLATE \"C\" \
             AND ($3::text IS NULL OR kind = $3::text) \
             AND EXISTS (SELECT 1 FROM {s}.events y WHERE y.stream = u.stream) \
             ORDER BY stream COLLATE \"C\" LIMIT $2::int8 \
         ) i CROSS JOIN LATERAL ( \
             SELECT x.stream, x.version, x.position, x.envelope FROM {s}.events x \
             WHERE x.stream = i.stream ORDER BY x.version LIMIT $2::int8 \
         ) e \
         ORDER BY i.stream COLLATE \"C\", e.version LIMIT $2::int8"
    )
}

/// Removes up to `$2` finished instances updated before `$1` (ns), smallest streams
/// first, with `kind` (`$3`) as an extra condition; answers how many.
///
/// One statement, so one snapshot and one transaction: events move to
/// `trimmed_event_ids` as a trim moves them, and the snapshot, metadata and index row
/// go; `streams` keeps the version.
///
/// The chosen rows are locked first, `SKIP LOCKED`: a row an append is changing is
/// left for a later purge rather than waited for, so a purge never waits for an
/// append and the two cannot deadlock (an append's group upserts several rows, in no
/// set order). A row an append changed and committed before the lock is read again
/// by PostgreSQL, and kept if it is no longer finished.
fn purge_finished(s: &str, kind: &str) -> String {
    format!(
        "WITH chosen AS ( \
             SELECT stream FROM {s}.instances \
             WHERE finished AND updated_ns < $1::int8 {kind} \
             ORDER BY stream COLLATE \"C\" LIMIT $2::int8 \
             FOR UPDATE SKIP LOCKED \
         ), gone AS ( \
             DELETE FROM {s}.instances x USING chosen c WHERE x.stream = c.stream \
             RETURNING x.stream \
         ), moved AS ( \
             DELETE FROM {s}.events e USING gone g WHERE e.stream = g.stream \
             RETURNING e.id, e.stream, e.version, e.position \
         ), trimmed AS ( \
             INSERT INTO {s}.trimmed_event_ids (id, stream, version, position) \
             SELECT id, '', version, position FROM moved \
         ), snapshots AS ( \
             DELETE FROM {s}.snapshots x USING gone g WHERE x.stream = g.stream \
         ), metadata AS ( \
             DELETE FROM {s}.stream_metadata x USING gone g WHERE x.stream = g.stream \
         ) \
         SELECT count(*) FROM gone"
    )
}

/// Creates the schema if absent and brings it to [`SCHEMA_VERSION`], in one transaction
/// under an advisory lock. `location` names the store in errors.
pub(super) async fn migrate(
    client: &mut Client,
    schema: &SchemaName,
    location: &str,
) -> Result<(), Error> {
    let transaction = client
        .transaction()
        .await
        .map_err(storage("begin the migration"))?;
    transaction
        .execute(
            "SELECT pg_advisory_xact_lock($1::int4, hashtext($2::text))",
            &[&MIGRATION_LOCK_KEY, &schema.as_str()],
        )
        .await
        .map_err(storage("take the migration lock"))?;
    // Read only after the lock is held: each statement sees what committed before it.
    let found = transaction
        .query_one(
            "SELECT \
                 EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = $1::text), \
                 EXISTS (SELECT 1 FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                         WHERE n.nspname = $1::text AND c.relname = 'keel_meta'), \
                 (SELECT count(*) FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace \
                  WHERE n.nspname = $1::text AND c.relkind IN ('r', 'p', 'v', 'm', 'f', 'S'))",
            &[&schema.as_str()],
        )
        .await
        .map_err(storage("inspect the schema"))?;
    let (schema_exists, has_meta, relations): (bool, bool, i64) =
        (found.get(0), found.get(1), found.get(2));
    let current = if has_meta {
        stored_version(&transaction, schema, location).await?
    } else if schema_exists && relations > 0 {
        return Err(location_error(
            location,
            format!(
                "schema `{}` holds {relations} tables or views but no keel_meta: it belongs to \
                 something else; pick another schema name",
                schema.as_str()
            ),
        ));
    } else {
        0
    };
    if current > SCHEMA_VERSION {
        return Err(Error::SchemaTooNew {
            found: current,
            supported: SCHEMA_VERSION,
        });
    }
    if current == SCHEMA_VERSION {
        // Nothing to change: end the transaction quietly (releasing the lock).
        return transaction
            .commit()
            .await
            .map_err(storage("end the migration"));
    }
    let quoted = schema.quoted();
    transaction
        .batch_execute(&format!("CREATE SCHEMA IF NOT EXISTS {quoted}"))
        .await
        .map_err(storage("create the schema"))?;
    for (index, migration) in MIGRATIONS.iter().enumerate().skip(current as usize) {
        transaction
            .batch_execute(&migration.replace("{s}", &quoted))
            .await
            .map_err(|e| storage_error(&format!("run migration {}", index + 1), &e))?;
        if index + 1 == INSTANCES_MIGRATION {
            backfill_instances(&transaction, &quoted).await?;
        }
    }
    let version = i32::try_from(SCHEMA_VERSION).unwrap_or(i32::MAX);
    transaction
        .execute(
            &format!("UPDATE {quoted}.keel_meta SET schema_version = $1::int4 WHERE id = 1"),
            &[&version],
        )
        .await
        .map_err(storage("record the schema version"))?;
    transaction
        .commit()
        .await
        .map_err(storage("commit the migration"))
}

/// The migration that creates `instances`.
const INSTANCES_MIGRATION: usize = 3;

/// Events a backfill decodes per round trip.
const BACKFILL_PAGE: i64 = 1_000;

/// Fills `instances` from the marks already stored: the last marked event of each
/// stream, read with [`InstanceMark::of`] as an append reads it. Only envelopes naming
/// the key are read back, a page at a time; stores written before marks existed have
/// none, so their index starts empty. A mark whose text holds NUL (which the index's
/// text columns cannot) is left out, as if absent.
///
/// [`InstanceMark::of`]: crate::InstanceMark::of
async fn backfill_instances(
    transaction: &tokio_postgres::Transaction<'_>,
    quoted: &str,
) -> Result<(), Error> {
    let select = format!(
        "SELECT stream, version, position, envelope FROM {quoted}.events \
         WHERE position > $1::int8 AND envelope LIKE '%\"keelfinished\"%' \
         ORDER BY position LIMIT $2::int8"
    );
    let mut last: HashMap<String, (crate::InstanceMark, i64, i64, i64)> = HashMap::new();
    let mut after = 0_i64;
    loop {
        let rows = transaction
            .query(&select, &[&after, &BACKFILL_PAGE])
            .await
            .map_err(storage("read the marked events"))?;
        for row in &rows {
            let (stream, version, position): (String, i64, i64) =
                (row.get(0), row.get(1), row.get(2));
            after = position;
            let envelope: keel_core::Envelope =
                serde_json::from_str(row.get(3)).map_err(|e| Error::Storage {
                    backend: "postgres",
                    reason: format!("the event at position {position} does not decode: {e}"),
                })?;
            let Some(mark) = crate::InstanceMark::of(&envelope) else {
                continue;
            };
            if mark.kind.contains('\0') || mark.status.contains('\0') {
                continue;
            }
            let updated = envelope.time.unix_nanos();
            last.insert(stream, (mark, version, updated, position));
        }
        if rows.len() < BACKFILL_PAGE as usize {
            break;
        }
    }
    let insert = format!(
        "INSERT INTO {quoted}.instances \
         (stream, kind, status, finished, version, updated_ns, position) \
         SELECT * FROM unnest($1::text[], $2::text[], $3::text[], $4::bool[], $5::int8[], \
                              $6::int8[], $7::int8[])"
    );
    let rows: Vec<_> = last.into_iter().collect();
    for chunk in rows.chunks(BACKFILL_PAGE as usize) {
        let streams: Vec<&str> = chunk.iter().map(|(s, _)| s.as_str()).collect();
        let kinds: Vec<&str> = chunk.iter().map(|(_, m)| m.0.kind.as_str()).collect();
        let statuses: Vec<&str> = chunk.iter().map(|(_, m)| m.0.status.as_str()).collect();
        let finished: Vec<bool> = chunk.iter().map(|(_, m)| m.0.finished).collect();
        let versions: Vec<i64> = chunk.iter().map(|(_, m)| m.1).collect();
        let updated: Vec<i64> = chunk.iter().map(|(_, m)| m.2).collect();
        let positions: Vec<i64> = chunk.iter().map(|(_, m)| m.3).collect();
        transaction
            .execute(
                &insert,
                &[
                    &streams, &kinds, &statuses, &finished, &versions, &updated, &positions,
                ],
            )
            .await
            .map_err(storage("fill the index of instances"))?;
    }
    Ok(())
}

async fn stored_version(
    transaction: &tokio_postgres::Transaction<'_>,
    schema: &SchemaName,
    location: &str,
) -> Result<u32, Error> {
    let rows = transaction
        .query(
            &format!("SELECT schema_version FROM {}.keel_meta", schema.quoted()),
            &[],
        )
        .await
        .map_err(storage("read the schema version"))?;
    let [row] = rows.as_slice() else {
        return Err(location_error(
            location,
            format!(
                "keel_meta holds {} rows, not one: the store is damaged",
                rows.len()
            ),
        ));
    };
    let version: i32 = row.get(0);
    u32::try_from(version).map_err(|_| {
        location_error(
            location,
            format!("keel_meta records schema version {version}: the store is damaged"),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::super::testing::{fresh_store, raw_client, unique_config, url};
    use super::super::{PostgresConfig, PostgresStore};
    use super::*;
    use crate::{EventStore, LockHolder};

    #[test]
    fn only_plain_lowercase_schema_names_are_accepted() {
        for good in ["keel", "_x", "keel_test_0123", &"a".repeat(63)] {
            assert!(SchemaName::parse(good).is_ok(), "{good}");
        }
        for bad in [
            "",
            "Keel",
            "1keel",
            "keel-x",
            "a\"; DROP",
            "k l",
            &"a".repeat(64),
        ] {
            let error = SchemaName::parse(bad).unwrap_err();
            assert!(
                matches!(
                    error,
                    Error::InvalidConfig {
                        setting: "schema",
                        ..
                    }
                ),
                "{bad}: {error:?}"
            );
        }
    }

    #[test]
    fn channels_fit_in_an_identifier_and_keep_long_names_apart() {
        let short = SchemaName::parse("keel").unwrap();
        assert_eq!(short.channel(), "keel_head_keel");
        let long_a = SchemaName::parse(&format!("{}a", "x".repeat(60))).unwrap();
        let long_b = SchemaName::parse(&format!("{}b", "x".repeat(60))).unwrap();
        assert_eq!(long_a.channel().len(), 63);
        assert_ne!(long_a.channel(), long_b.channel());
        assert_eq!(long_a.channel(), long_a.channel());
    }

    #[tokio::test]
    async fn a_schema_newer_than_this_build_is_refused() {
        let Some((store, url, config)) = fresh_store().await else {
            return;
        };
        let client = raw_client(&url).await;
        client
            .execute(
                &format!(
                    "UPDATE \"{}\".keel_meta SET schema_version = 999",
                    config.schema
                ),
                &[],
            )
            .await
            .unwrap();
        let error = PostgresStore::connect(&url, config).await.unwrap_err();
        assert_eq!(
            error,
            Error::SchemaTooNew {
                found: 999,
                supported: SCHEMA_VERSION
            }
        );
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn a_schema_of_an_older_version_is_migrated_and_keeps_what_it_holds() {
        let Some(url) = url() else { return };
        let config = unique_config();
        let quoted = format!("\"{}\"", config.schema);
        let client = raw_client(&url).await;
        // Version 1 as an older keel left it, with a stream in it.
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {quoted}; {} \
                 UPDATE {quoted}.keel_meta SET schema_version = 1; \
                 INSERT INTO {quoted}.streams VALUES ('a', 1); \
                 UPDATE {quoted}.keel_head SET position = 1;",
                MIGRATIONS[0].replace("{s}", &quoted)
            ))
            .await
            .unwrap();
        let store = PostgresStore::connect(&url, config.clone()).await.unwrap();
        let row = client
            .query_one(
                &format!("SELECT schema_version FROM {quoted}.keel_meta"),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0) as u32, SCHEMA_VERSION);
        assert_eq!(store.head().await.unwrap(), 1);
        assert_eq!(
            store.unindexed_head().await.unwrap(),
            1,
            "its events may be unmarked"
        );
        assert_eq!(store.stream_version(&"a".into()).await.unwrap(), 1);
        let holder = LockHolder {
            pid: 1,
            host: "h".to_owned(),
            since: keel_core::Timestamp::UNIX_EPOCH,
        };
        drop(store.lock_writer(&holder).await.unwrap());
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn a_version_2_schema_gets_an_index_filled_from_its_marked_events() {
        let Some(url) = url() else { return };
        let config = unique_config();
        let quoted = format!("\"{}\"", config.schema);
        let client = raw_client(&url).await;
        let mark = crate::InstanceMark::new("saga", "needs_intervention", false);
        let mut marked = super::super::testing::event(2);
        marked.time = keel_core::Timestamp::from_unix_nanos(1_700_000_000_123_456_000);
        mark.apply(&mut marked);
        let rows = [
            ("a", 1_i64, super::super::testing::event(1)),
            ("b", 1, marked),
            ("b", 2, super::super::testing::event(3)),
        ];
        client
            .batch_execute(&format!(
                "CREATE SCHEMA {quoted}; {} {} \
                 UPDATE {quoted}.keel_meta SET schema_version = 2; \
                 UPDATE {quoted}.keel_head SET position = 3; \
                 INSERT INTO {quoted}.streams VALUES ('a', 1), ('b', 2);",
                MIGRATIONS[0].replace("{s}", &quoted),
                MIGRATIONS[1].replace("{s}", &quoted),
            ))
            .await
            .unwrap();
        for (position, (stream, version, envelope)) in (1_i64..).zip(&rows) {
            let text = serde_json::to_string(envelope).unwrap();
            client
                .execute(
                    &format!(
                        "INSERT INTO {quoted}.events VALUES \
                         ($1::int8, $2::text, $3::int8, $4::text::uuid, $5::text)"
                    ),
                    &[&position, stream, version, &envelope.id.to_string(), &text],
                )
                .await
                .unwrap();
        }
        let store = PostgresStore::connect(&url, config.clone()).await.unwrap();
        let index = store.instances(&crate::InstanceQuery::all()).await.unwrap();
        assert_eq!(index.len(), 1, "{index:?}");
        let row = &index[0];
        assert_eq!(
            (row.stream.as_str(), row.status.as_str()),
            ("b", "needs_intervention")
        );
        assert_eq!((row.version, row.position, row.finished), (1, 2, false));
        assert_eq!(row.updated, rows[1].2.time);
        assert_eq!(store.unindexed_head().await.unwrap(), 3);
        let unfinished = store.read_unfinished(None, None, 10).await.unwrap();
        let positions: Vec<u64> = unfinished.iter().map(|e| e.position).collect();
        assert_eq!(positions, [2, 3]);
        assert_eq!(
            unfinished[0].envelope, rows[1].2,
            "events are kept as they were"
        );
        store.drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn a_schema_holding_other_tables_is_not_a_store() {
        let Some(url) = url() else { return };
        let config = unique_config();
        let client = raw_client(&url).await;
        client
            .batch_execute(&format!(
                "CREATE SCHEMA \"{0}\"; CREATE TABLE \"{0}\".orders (id int)",
                config.schema
            ))
            .await
            .unwrap();
        let error = PostgresStore::connect(&url, config.clone())
            .await
            .unwrap_err();
        client
            .batch_execute(&format!("DROP SCHEMA \"{}\" CASCADE", config.schema))
            .await
            .unwrap();
        let Error::NotAStore { location, reason } = &error else {
            panic!("{error:?}");
        };
        assert!(location.contains(&config.schema), "{location}");
        assert!(reason.contains("no keel_meta"), "{reason}");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn stores_connecting_at_once_migrate_once() {
        let Some(url) = url() else { return };
        let config = PostgresConfig {
            connections: 1,
            ..unique_config()
        };
        let connecting: Vec<_> = (0..4)
            .map(|_| {
                let (url, config) = (url.clone(), config.clone());
                tokio::spawn(async move { PostgresStore::connect(&url, config).await })
            })
            .collect();
        let mut stores = Vec::new();
        for task in connecting {
            stores.push(task.await.unwrap().unwrap());
        }
        let client = raw_client(&url).await;
        let row = client
            .query_one(
                &format!("SELECT schema_version FROM \"{}\".keel_meta", config.schema),
                &[],
            )
            .await
            .unwrap();
        assert_eq!(row.get::<_, i32>(0) as u32, SCHEMA_VERSION);
        stores[0].drop_schema().await.unwrap();
    }

    #[tokio::test]
    async fn a_bad_url_is_a_storage_error() {
        let error = PostgresStore::connect("not a url", PostgresConfig::default())
            .await
            .unwrap_err();
        let Error::Storage { backend, reason } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*backend, "postgres");
        assert!(reason.contains("does not parse"), "{reason}");
    }

    #[tokio::test]
    async fn a_server_nobody_listens_for_is_unavailable() {
        // Port 1 (tcpmux) has no listener here: the connection is refused at once.
        let url = "postgres://postgres@127.0.0.1:1/test";
        let error = PostgresStore::connect(url, PostgresConfig::default())
            .await
            .unwrap_err();
        let Error::Unavailable { backend, reason } = &error else {
            panic!("{error:?}");
        };
        assert_eq!(*backend, "postgres");
        assert!(reason.contains("connect to the server"), "{reason}");
        assert!(error.is_unavailable());
    }

    #[tokio::test]
    async fn a_refused_login_is_a_storage_error() {
        let Some(url) = url() else { return };
        let (_, address) = url.split_once("://").unwrap();
        let address = address.rsplit_once('@').map_or(address, |(_, host)| host);
        let refused = format!("postgres://keel_no_such_role@{address}");
        let error = PostgresStore::connect(&refused, PostgresConfig::default())
            .await
            .unwrap_err();
        // 28000 (invalid authorization) or 28P01: the same login fails the same way.
        assert!(
            matches!(&error, Error::Storage { reason, .. } if reason.contains("28")),
            "{error:?}"
        );
    }

    #[tokio::test]
    async fn bad_settings_are_refused_before_connecting() {
        let bad_schema = PostgresConfig {
            schema: "Robert'); DROP TABLE students;--".to_owned(),
            ..PostgresConfig::default()
        };
        let no_connections = PostgresConfig {
            connections: 0,
            ..PostgresConfig::default()
        };
        for (config, setting) in [(bad_schema, "schema"), (no_connections, "connections")] {
            let error = PostgresStore::connect("postgres://nowhere.invalid/x", config)
                .await
                .unwrap_err();
            assert!(
                matches!(&error, Error::InvalidConfig { setting: s, .. } if *s == setting),
                "{error:?}"
            );
        }
    }
}
