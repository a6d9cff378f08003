//! Measurements that need a process of their own: memory growth (a fresh heap) and
//! recovery (a real restart). The suite runs its own binary again as
//! `keel-bench --child <what> <args>`; the child prints one JSON object on stdout.

use std::process::Command;
use std::time::Duration;

use serde_json::Value;
use tokio::runtime::Runtime;

use crate::system::run;

/// The longest a child may take: 100,000 sagas on a slow disk, with room to spare.
const CHILD_LIMIT: Duration = Duration::from_secs(300);

/// The runtime every part uses: two workers, as on the 2-core reference machine.
pub(crate) fn runtime() -> Result<Runtime, String> {
    tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|error| format!("cannot start a tokio runtime: {error}"))
}

/// Runs `keel-bench --child args...` and returns what it printed.
pub(crate) fn spawn(args: &[&str]) -> Result<Value, String> {
    spawn_within(args, CHILD_LIMIT)
}

/// [`spawn`] with a time limit of its own, for a child with much to do.
pub(crate) fn spawn_within(args: &[&str], limit: Duration) -> Result<Value, String> {
    let exe = std::env::current_exe().map_err(|error| error.to_string())?;
    let done = run(Command::new(exe).arg("--child").args(args), limit, false)?;
    if !done.status.success() {
        return Err(format!(
            "the child `{}` exited with {}",
            args.join(" "),
            done.status
        ));
    }
    serde_json::from_str(done.stdout.trim())
        .map_err(|error| format!("the child `{}` printed no JSON: {error}", args.join(" ")))
}

/// The child's side: runs the measurement `args` names and prints its JSON.
pub(crate) fn main(args: &[String]) -> Result<(), String> {
    let (what, rest) = args.split_first().ok_or("--child needs a measurement")?;
    let answer = match what.as_str() {
        "idle" => crate::sagas::idle_child(rest)?,
        "recover" => crate::recovery::recover_child(rest)?,
        "history" => crate::recovery::history_child(rest)?,
        other => return Err(format!("unknown child measurement {other}")),
    };
    println!("{answer}");
    Ok(())
}
