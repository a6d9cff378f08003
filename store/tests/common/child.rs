//! A child process: this test binary again, running one `#[ignore]`d test that reads
//! its orders from an environment variable (and does nothing without it, as under a
//! plain `--include-ignored`). The parent reads what it prints, line by line, and kills
//! it with SIGKILL to see what a crash leaves behind.

#![allow(dead_code, unreachable_pub)] // Each test uses a different part.

use std::ffi::OsStr;
use std::io::BufRead;
use std::process::{Command, ExitStatus, Stdio};
use std::sync::mpsc::{Receiver, RecvTimeoutError};
use std::thread::JoinHandle;
use std::time::Duration;

/// A running child test; killed when dropped, if still running.
#[derive(Debug)]
pub struct ChildTest {
    process: std::process::Child,
    lines: Receiver<String>,
    reader: Option<JoinHandle<()>>,
}

impl ChildTest {
    /// Starts the test named `test` (its full path, `module::name`) in a child process,
    /// with `var` set to `value`.
    pub fn spawn(test: &str, var: &str, value: impl AsRef<OsStr>) -> Self {
        let exe = std::env::current_exe().expect("the test binary");
        let mut process = Command::new(exe)
            .args(["--exact", test, "--nocapture", "--include-ignored"])
            .env(var, value)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .expect("the child starts");
        let stdout = process.stdout.take().expect("the child's stdout");
        let (sender, lines) = std::sync::mpsc::channel::<String>();
        let reader = std::thread::spawn(move || {
            for line in std::io::BufReader::new(stdout).lines() {
                let Ok(line) = line else { break };
                if sender.send(line).is_err() {
                    break;
                }
            }
        });
        Self {
            process,
            lines,
            reader: Some(reader),
        }
    }

    /// The child's process id.
    pub fn id(&self) -> u32 {
        self.process.id()
    }

    /// The next line the child printed, waiting at most `within` for it.
    pub fn next_line(&self, within: Duration) -> Result<String, RecvTimeoutError> {
        self.lines.recv_timeout(within)
    }

    /// Waits at most `within` for a line starting with `prefix`, passing every line on
    /// the way (that one included) to `seen`; the error says what ended the wait.
    pub fn wait_for(
        &self,
        prefix: &str,
        within: Duration,
        mut seen: impl FnMut(&str),
    ) -> Result<String, RecvTimeoutError> {
        let deadline = std::time::Instant::now() + within;
        loop {
            let left = deadline.saturating_duration_since(std::time::Instant::now());
            let line = self.next_line(left)?;
            seen(&line);
            if line.starts_with(prefix) {
                return Ok(line);
            }
        }
    }

    /// How the child ended, if it has.
    pub fn exited(&mut self) -> Option<ExitStatus> {
        self.process.try_wait().expect("the child's status")
    }

    /// Kills the child with SIGKILL and reaps it: when this returns, the operating
    /// system has closed its files. Returns the lines it printed that were not taken.
    pub fn kill(mut self) -> Vec<String> {
        self.process.kill().expect("SIGKILL to the child");
        self.process.wait().expect("the killed child is reaped");
        if let Some(reader) = self.reader.take() {
            reader.join().expect("the reader thread");
        }
        self.lines.try_iter().collect()
    }
}

impl Drop for ChildTest {
    fn drop(&mut self) {
        if self.reader.is_some() {
            let _ = self.process.kill();
            let _ = self.process.wait();
        }
    }
}
