//! Real stores for the tests: SQLite files in the temporary directory, removed when the
//! test ends, and schemas of their own on the PostgreSQL server named by `KEEL_PG_URL`.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use keel_store::EventStore;
use keel_store::postgres::{PostgresConfig, PostgresStore};
use keel_store::sqlite::{SqliteConfig, SqliteStore};

/// The environment variable naming the PostgreSQL server: `postgres://user@host/db`.
pub(crate) const PG_URL_VAR: &str = "KEEL_PG_URL";

/// How long connecting to PostgreSQL may take.
const PG_CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A SQLite database file of one test, removed (with its journal files) when dropped.
#[derive(Debug)]
pub(crate) struct SqliteFile {
    path: PathBuf,
}

impl SqliteFile {
    /// A path for a new database in the temporary directory; nothing is created yet.
    pub(crate) fn new() -> Self {
        let path = std::env::temp_dir().join(format!("{}.db", super::unique("keel-orch-")));
        Self { path }
    }

    /// Opens the store in the file (creating it the first time), as a process starting
    /// on it would.
    pub(crate) fn open(&self) -> Arc<dyn EventStore> {
        match SqliteStore::open(&self.path, SqliteConfig::default()) {
            Ok(store) => Arc::new(store),
            Err(e) => panic!("opening the SQLite store at {}: {e}", self.path.display()),
        }
    }

    /// The file.
    pub(crate) fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for SqliteFile {
    fn drop(&mut self) {
        for suffix in ["", "-wal", "-shm", "-journal"] {
            let mut file = self.path.as_os_str().to_owned();
            file.push(suffix);
            let _ = std::fs::remove_file(PathBuf::from(file));
        }
    }
}

/// The PostgreSQL URL, if `KEEL_PG_URL` is set; prints why the test is skipped if not.
pub(crate) fn postgres_url() -> Option<String> {
    match std::env::var(PG_URL_VAR) {
        Ok(url) => Some(url),
        Err(_) => {
            say_skipped(&format!("skipped postgres: {PG_URL_VAR} not set"));
            None
        }
    }
}

/// A schema of one test run on the PostgreSQL server; [`PgSchema::drop_schema`]
/// removes it at the end.
#[derive(Debug)]
pub(crate) struct PgSchema {
    url: String,
    schema: String,
    dropped: bool,
}

impl PgSchema {
    /// A schema named for this run (nothing is created until [`PgSchema::open`]).
    pub(crate) fn new(url: String) -> Self {
        Self {
            url,
            schema: super::unique("keel_orch_t_"),
            dropped: false,
        }
    }

    /// Connects a new store to the schema (creating it the first time), as a process
    /// starting on it would.
    pub(crate) async fn open(&self) -> Arc<dyn EventStore> {
        Arc::new(self.connect().await)
    }

    async fn connect(&self) -> PostgresStore {
        let config = PostgresConfig {
            schema: self.schema.clone(),
            ..PostgresConfig::default()
        };
        // The URL may hold a password: name the variable, not its value.
        match tokio::time::timeout(
            PG_CONNECT_TIMEOUT,
            PostgresStore::connect(&self.url, config),
        )
        .await
        {
            Ok(Ok(store)) => store,
            Ok(Err(e)) => panic!("connecting to {PG_URL_VAR}, schema {}: {e}", self.schema),
            Err(_) => panic!("connecting to {PG_URL_VAR} took over {PG_CONNECT_TIMEOUT:?}"),
        }
    }

    /// Drops the schema and everything in it.
    pub(crate) async fn drop_schema(mut self) {
        self.dropped = true;
        if let Err(e) = self.connect().await.drop_schema().await {
            eprintln!("could not drop the test schema {}: {e}", self.schema);
        }
    }
}

impl Drop for PgSchema {
    fn drop(&mut self) {
        if self.dropped {
            return;
        }
        // A test that panicked before dropping its schema: drop it from a thread of its
        // own, since this may run inside a runtime that must not block on another.
        let (url, schema) = (self.url.clone(), self.schema.clone());
        let dropped = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime for cleaning up");
            runtime.block_on(async {
                let schema = PgSchema {
                    url,
                    schema,
                    dropped: false,
                };
                schema.drop_schema().await;
            });
        })
        .join();
        if dropped.is_err() {
            eprintln!("could not clean up the test schema {}", self.schema);
        }
    }
}

/// Says (once per test binary and line) that some cases are skipped, on the process's
/// real stderr: libtest captures `eprintln!` of passing tests, and this line is for the
/// person running `cargo test` on a machine without the server.
pub(crate) fn say_skipped(line: &str) {
    use std::io::Write as _;
    static SAID: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    let mut said = SAID
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    if said.iter().any(|l| l == line) {
        return;
    }
    said.push(line.to_owned());
    let _ = writeln!(
        std::io::stderr(),
        "{line} (every such case of this test binary)"
    );
}
