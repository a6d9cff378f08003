//! A service's durable ledger: every effect it applied (or refused for good), by
//! idempotency key, in its own SQLite file beside the store.
//!
//! This is what a well-behaved service does with an `Idempotency-Key`: the first request
//! with a key decides and records; every repeat answers from the record. The ledger
//! commits (`synchronous=FULL`) before the service answers, so it survives a SIGKILL of
//! the whole program, and counting what it holds tells whether keel ever made a service
//! apply one step twice.

use std::path::Path;
use std::sync::{Arc, Mutex, PoisonError};

use rusqlite::{Connection, OptionalExtension, params};

/// A recorded answer.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The HTTP status answered.
    pub status: u16,
    /// The body answered.
    pub body: String,
}

/// One effect to record.
#[derive(Debug, Clone, Copy)]
pub struct Effect<'a> {
    /// The idempotency key.
    pub key: &'a str,
    /// `payments`, `inventory`, ...
    pub service: &'a str,
    /// `charge`, `refund`, ...
    pub operation: &'a str,
    /// The saga it is for.
    pub saga: &'a str,
    /// Whether the effect happened (false: refused for good).
    pub applied: bool,
}

/// The ledger of every service of one example program.
#[derive(Debug, Clone)]
pub struct Ledger {
    connection: Arc<Mutex<Connection>>,
}

impl Ledger {
    /// Opens (or creates) the ledger at `path`.
    pub fn open(path: &Path) -> Result<Self, String> {
        let connection =
            Connection::open(path).map_err(|e| format!("ledger {}: {e}", path.display()))?;
        connection
            .execute_batch(
                "PRAGMA journal_mode=WAL;
                 PRAGMA synchronous=FULL;
                 CREATE TABLE IF NOT EXISTS effects (
                     key TEXT PRIMARY KEY,
                     service TEXT NOT NULL,
                     operation TEXT NOT NULL,
                     saga TEXT NOT NULL,
                     applied INTEGER NOT NULL,
                     status INTEGER NOT NULL,
                     body TEXT NOT NULL
                 );
                 CREATE INDEX IF NOT EXISTS effects_by_step ON effects (saga, service, operation);",
            )
            .map_err(|e| format!("ledger {}: {e}", path.display()))?;
        Ok(Self {
            connection: Arc::new(Mutex::new(connection)),
        })
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&Connection) -> rusqlite::Result<T> + Send + 'static,
    ) -> Result<T, String> {
        let connection = Arc::clone(&self.connection);
        tokio::task::spawn_blocking(move || {
            // A statement either ran or failed; nothing half-done survives a panic.
            let connection = connection.lock().unwrap_or_else(PoisonError::into_inner);
            f(&connection).map_err(|e| format!("ledger: {e}"))
        })
        .await
        .map_err(|e| format!("ledger task: {e}"))?
    }

    /// The answer recorded for `key`, if any.
    pub async fn lookup(&self, key: &str) -> Result<Option<Entry>, String> {
        let key = key.to_owned();
        self.with(move |c| {
            c.query_row(
                "SELECT status, body FROM effects WHERE key = ?1",
                params![key],
                |row| {
                    Ok(Entry {
                        status: row.get(0)?,
                        body: row.get(1)?,
                    })
                },
            )
            .optional()
        })
        .await
    }

    /// Records `effect` with its answer, unless its key was recorded meanwhile (two
    /// deliveries racing); returns the answer that stands.
    pub async fn record(&self, effect: Effect<'_>, answer: Entry) -> Result<Entry, String> {
        let (key, service, operation, saga) = (
            effect.key.to_owned(),
            effect.service.to_owned(),
            effect.operation.to_owned(),
            effect.saga.to_owned(),
        );
        let applied = effect.applied;
        self.with(move |c| {
            c.execute(
                "INSERT OR IGNORE INTO effects (key, service, operation, saga, applied, status, body) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)",
                params![key, service, operation, saga, applied, answer.status, answer.body],
            )?;
            c.query_row("SELECT status, body FROM effects WHERE key = ?1", params![key], |row| {
                Ok(Entry { status: row.get(0)?, body: row.get(1)? })
            })
        })
        .await
    }

    /// Steps whose effect was applied more than once: the same saga and operation under
    /// more than one key. keel gives every attempt of a step one key, so this is 0.
    pub fn duplicate_effects(&self) -> Result<u64, String> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        connection
            .query_row(
                "SELECT COUNT(*) FROM (SELECT 1 FROM effects WHERE applied = 1 GROUP BY saga, service, operation HAVING COUNT(*) > 1)",
                [],
                |row| row.get(0),
            )
            .map_err(|e| format!("ledger: {e}"))
    }

    /// How many effects were applied, by operation: `[("payments.charge", 12), ...]`.
    pub fn applied(&self) -> Result<Vec<(String, u64)>, String> {
        let connection = self
            .connection
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        let mut statement = connection
            .prepare("SELECT service || '.' || operation, COUNT(*) FROM effects WHERE applied = 1 GROUP BY 1 ORDER BY 1")
            .map_err(|e| format!("ledger: {e}"))?;
        let rows = statement
            .query_map([], |row| Ok((row.get(0)?, row.get(1)?)))
            .map_err(|e| format!("ledger: {e}"))?;
        rows.collect::<Result<_, _>>()
            .map_err(|e| format!("ledger: {e}"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn a_key_is_recorded_once_and_answered_from_the_record() {
        let dir = std::env::temp_dir().join(format!("keel-ledger-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let ledger = Ledger::open(&dir.join("ledger.db")).unwrap();
        let effect = Effect {
            key: "k1",
            service: "payments",
            operation: "charge",
            saga: "order-1",
            applied: true,
        };
        let first = ledger
            .record(
                effect,
                Entry {
                    status: 200,
                    body: "a".into(),
                },
            )
            .await
            .unwrap();
        let again = ledger
            .record(
                effect,
                Entry {
                    status: 200,
                    body: "b".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!((first.body.as_str(), again.body.as_str()), ("a", "a"));
        assert_eq!(ledger.lookup("k1").await.unwrap(), Some(first));
        assert_eq!(ledger.duplicate_effects().unwrap(), 0);
        let other_key = Effect {
            key: "k2",
            ..effect
        };
        ledger
            .record(
                other_key,
                Entry {
                    status: 200,
                    body: "c".into(),
                },
            )
            .await
            .unwrap();
        assert_eq!(
            ledger.duplicate_effects().unwrap(),
            1,
            "one step applied under two keys"
        );
        std::fs::remove_dir_all(&dir).unwrap();
    }
}
