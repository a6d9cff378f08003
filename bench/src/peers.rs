//! The peers measured beside keel: XState 5 under Node (`peers/xstate/`) and Python's
//! `eventsourcing` on SQLite (`peers/eventsourcing/`).
//!
//! Each is installed on first use (npm into its `node_modules`, pip into the virtualenv
//! `bench/.venv`) and run as a child process that prints one JSON object. Whatever goes
//! wrong (no node, no python, no registry, a crash) becomes an `Err` with the reason,
//! which the report prints as "peer skipped: ..."; the suite itself never fails on a
//! peer.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use serde_json::Value;

use crate::system::{self, run};

/// Installing a peer: generous, for a slow registry.
const INSTALL_LIMIT: Duration = Duration::from_secs(300);
/// One run of a peer's script.
const RUN_LIMIT: Duration = Duration::from_secs(240);

/// What the XState script measured.
#[derive(Debug, Clone)]
pub(crate) struct XstateRun {
    /// `node --version`.
    pub(crate) node: String,
    /// The installed xstate version.
    pub(crate) xstate: String,
    /// Nanoseconds per event of each run, by case (`traffic_light.transition`, ...).
    pub(crate) cases: BTreeMap<String, Vec<f64>>,
}

/// Installs the XState peer if needed and runs it: `runs` samples of about
/// `sample_ms` each per case.
pub(crate) fn xstate(root: &Path, runs: usize, sample_ms: u64) -> Result<XstateRun, String> {
    let dir = root.join("peers/xstate");
    let available = |program: &str| {
        run(
            Command::new(program).arg("--version"),
            Duration::from_secs(30),
            true,
        )
        .is_ok_and(|done| done.status.success())
    };
    if !available("node") || !available("npm") {
        return Err("npm not available".to_owned());
    }
    if !dir.join("node_modules/xstate/package.json").exists() {
        eprintln!(
            "  installing the XState peer (npm install in {})",
            dir.display()
        );
        let done = run(
            Command::new("npm")
                .args(["install", "--no-audit", "--no-fund", "--loglevel=error"])
                .current_dir(&dir),
            INSTALL_LIMIT,
            true,
        )
        .map_err(|error| format!("npm install failed: {error}"))?;
        if !done.status.success() {
            return Err(format!("npm install failed: {}", done.stderr_tail));
        }
    }
    let done = run(
        Command::new("node")
            .arg("bench.mjs")
            .args([
                "--runs",
                &runs.to_string(),
                "--sample-ms",
                &sample_ms.to_string(),
            ])
            .current_dir(&dir),
        RUN_LIMIT,
        false,
    )
    .map_err(|error| format!("the XState script failed: {error}"))?;
    if !done.status.success() {
        return Err(format!("the XState script exited with {}", done.status));
    }
    let json: Value = serde_json::from_str(done.stdout.trim())
        .map_err(|error| format!("the XState script printed no JSON: {error}"))?;
    let mut cases = BTreeMap::new();
    for (name, case) in json["cases"].as_object().into_iter().flatten() {
        cases.insert(name.clone(), numbers(&case["ns_per_event"]));
    }
    Ok(XstateRun {
        node: json["node"].as_str().unwrap_or("unknown").to_owned(),
        xstate: json["xstate"].as_str().unwrap_or("unknown").to_owned(),
        cases,
    })
}

/// The Python peer, ready to run.
#[derive(Debug, Clone)]
pub(crate) struct Eventsourcing {
    python: PathBuf,
    script: PathBuf,
}

/// What one run of the eventsourcing script measured.
#[derive(Debug, Clone)]
pub(crate) struct EventsourcingRun {
    /// Python, eventsourcing and SQLite versions, and the pragmas the recorder used.
    pub(crate) versions: String,
    /// Events per second, one event per commit.
    pub(crate) single: Vec<f64>,
    /// Events per second, a batch per commit.
    pub(crate) batched: Vec<f64>,
}

impl Eventsourcing {
    /// Creates the virtualenv `bench/.venv` and installs the pinned library into it,
    /// unless that is done already.
    pub(crate) fn prepare(root: &Path) -> Result<Self, String> {
        let venv = root.join(".venv");
        let python = venv.join("bin/python");
        let peer = root.join("peers/eventsourcing");
        let ready = |python: &Path| {
            run(
                Command::new(python).args(["-c", "import eventsourcing"]),
                Duration::from_secs(60),
                true,
            )
            .is_ok_and(|done| done.status.success())
        };
        if !ready(&python) {
            let version = system::tool_version("python3", &["--version"]);
            if version.contains("not available") {
                return Err("python3 not available".to_owned());
            }
            eprintln!(
                "  installing the eventsourcing peer (pip into {})",
                venv.display()
            );
            let created = run(
                Command::new("python3").arg("-m").arg("venv").arg(&venv),
                INSTALL_LIMIT,
                true,
            )
            .map_err(|error| format!("python3 -m venv failed: {error}"))?;
            if !created.status.success() {
                return Err(format!(
                    "python3 -m venv failed (is the venv module installed?): {}",
                    created.stderr_tail
                ));
            }
            let installed = run(
                Command::new(venv.join("bin/pip"))
                    .args(["install", "--quiet", "--disable-pip-version-check", "-r"])
                    .arg(peer.join("requirements.txt")),
                INSTALL_LIMIT,
                true,
            )
            .map_err(|error| format!("pip install failed: {error}"))?;
            if !installed.status.success() || !ready(&python) {
                return Err(format!("pip install failed: {}", installed.stderr_tail));
            }
        }
        Ok(Self {
            python,
            script: peer.join("bench.py"),
        })
    }

    /// Runs the script `runs` times per case, `seconds` each, in databases under `dir`.
    pub(crate) fn run(
        &self,
        dir: &Path,
        seconds: f64,
        batch: usize,
        runs: usize,
    ) -> Result<EventsourcingRun, String> {
        let done = run(
            Command::new(&self.python)
                .arg(&self.script)
                .arg("--dir")
                .arg(dir)
                .args(["--seconds", &seconds.to_string()])
                .args(["--batch", &batch.to_string()])
                .args(["--runs", &runs.to_string()]),
            RUN_LIMIT,
            false,
        )
        .map_err(|error| format!("the eventsourcing script failed: {error}"))?;
        if !done.status.success() {
            return Err(format!(
                "the eventsourcing script exited with {}",
                done.status
            ));
        }
        let json: Value = serde_json::from_str(done.stdout.trim())
            .map_err(|error| format!("the eventsourcing script printed no JSON: {error}"))?;
        let text = |key: &str| json[key].as_str().unwrap_or("unknown").to_owned();
        let synchronous = match json["pragmas"]["synchronous"].as_i64() {
            Some(2) => "FULL".to_owned(),
            Some(1) => "NORMAL".to_owned(),
            Some(other) => other.to_string(),
            None => "unknown".to_owned(),
        };
        Ok(EventsourcingRun {
            versions: format!(
                "Python {}, eventsourcing {}, SQLite {} (journal_mode={}, synchronous={synchronous})",
                text("python"),
                text("eventsourcing"),
                text("sqlite"),
                json["pragmas"]["journal_mode"]
                    .as_str()
                    .unwrap_or("unknown"),
            ),
            single: numbers(&json["single"]),
            batched: numbers(&json["batched"]),
        })
    }
}

fn numbers(value: &Value) -> Vec<f64> {
    value
        .as_array()
        .into_iter()
        .flatten()
        .filter_map(Value::as_f64)
        .collect()
}
