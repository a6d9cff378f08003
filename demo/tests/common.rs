//! Running the example programs and reading their summary line.

#![allow(dead_code, unreachable_pub)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// The `keel-example` binary cargo built for these tests.
pub const EXAMPLE: &str = env!("CARGO_BIN_EXE_keel-example");

/// A fresh directory under the system's temporary one, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("keel-test-{name}-{}-{nanos}", std::process::id()));
        std::fs::create_dir_all(&path).expect("a temporary directory");
        Self(path)
    }

    pub fn db(&self) -> PathBuf {
        self.0.join("keel.db")
    }
}

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Runs `keel-example` with `args`.
pub fn run(args: &[&str]) -> Output {
    Command::new(EXAMPLE)
        .args(args)
        .output()
        .expect("keel-example runs")
}

/// The counts of a summary line.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Summary {
    pub sagas: u64,
    pub completed: u64,
    pub compensated: u64,
    pub needs_intervention: u64,
    pub unfinished: u64,
    pub duplicate_effects: u64,
}

/// The summary line of `stdout`, which must be its last line.
pub fn summary(stdout: &[u8]) -> Summary {
    let text = String::from_utf8_lossy(stdout);
    let last = text.lines().last().unwrap_or_default();
    let rest = last
        .strip_prefix("summary: ")
        .unwrap_or_else(|| panic!("the last line is not a summary: {last:?}\n{text}"));
    let mut summary = Summary::default();
    let mut keys = Vec::new();
    for pair in rest.split(' ') {
        let (key, value) = pair
            .split_once('=')
            .unwrap_or_else(|| panic!("`{pair}` in {last:?}"));
        let value: u64 = value
            .parse()
            .unwrap_or_else(|_| panic!("`{pair}` in {last:?}"));
        keys.push(key.to_owned());
        match key {
            "sagas" => summary.sagas = value,
            "completed" => summary.completed = value,
            "compensated" => summary.compensated = value,
            "needs_intervention" => summary.needs_intervention = value,
            "unfinished" => summary.unfinished = value,
            "duplicate_effects" => summary.duplicate_effects = value,
            other => panic!("unknown key `{other}` in {last:?}"),
        }
    }
    assert_eq!(
        keys,
        [
            "sagas",
            "completed",
            "compensated",
            "needs_intervention",
            "unfinished",
            "duplicate_effects"
        ],
        "the summary line has its exact form"
    );
    summary
}

/// Whether `path` exists.
pub fn exists(path: &Path) -> bool {
    path.exists()
}
