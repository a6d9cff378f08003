//! Running `keel` and keeping temporary stores.

#![allow(dead_code, unreachable_pub)]

use std::path::PathBuf;
use std::process::{Command, Output};

/// The `keel` binary cargo built for these tests.
pub const KEEL: &str = env!("CARGO_BIN_EXE_keel");

/// A fresh directory under the system's temporary one, removed when dropped.
#[derive(Debug)]
pub struct TempDir(pub PathBuf);

impl TempDir {
    pub fn new(name: &str) -> Self {
        let nanos = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .map_or(0, |d| d.as_nanos());
        let path =
            std::env::temp_dir().join(format!("keel-cli-{name}-{}-{nanos}", std::process::id()));
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

/// Runs `keel` with `args`; returns (exit code, stdout, stderr).
pub fn keel(args: &[&str]) -> (i32, String, String) {
    keel_with_env(args, &[])
}

/// Runs `keel` with `args` and the environment variables `env` set, without inheriting
/// `KEEL_STORE`; returns (exit code, stdout, stderr).
pub fn keel_with_env(args: &[&str], env: &[(&str, &str)]) -> (i32, String, String) {
    let mut command = Command::new(KEEL);
    command
        .args(args)
        .env_remove("KEEL_STORE")
        .envs(env.iter().copied());
    let Output {
        status,
        stdout,
        stderr,
    } = command.output().expect("keel runs");
    (
        status.code().unwrap_or(-1),
        String::from_utf8_lossy(&stdout).into_owned(),
        String::from_utf8_lossy(&stderr).into_owned(),
    )
}
