//! What the report says about the machine: CPU, memory, load, disk, tool versions; and
//! the process helpers the sections share (resident memory, scratch directories,
//! running a child with a time limit).

use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitStatus, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

/// The 1, 5 and 15 minute load averages, from `/proc/loadavg` (Linux only).
pub(crate) fn load_average() -> Option<[f64; 3]> {
    let text = std::fs::read_to_string("/proc/loadavg").ok()?;
    let mut fields = text.split_whitespace().map(str::parse::<f64>);
    Some([
        fields.next()?.ok()?,
        fields.next()?.ok()?,
        fields.next()?.ok()?,
    ])
}

/// The load averages as the report prints them, or `unknown`.
pub(crate) fn load_text() -> String {
    load_average().map_or_else(
        || "unknown".to_owned(),
        |[one, five, fifteen]| format!("{one:.2} / {five:.2} / {fifteen:.2}"),
    )
}

/// This process' resident memory in bytes, from `/proc/self/status` (0 elsewhere).
pub(crate) fn resident_bytes() -> u64 {
    let status = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    status
        .lines()
        .find_map(|line| line.strip_prefix("VmRSS:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or(0, |kib| kib * 1024)
}

/// The CPU time this process has used so far (all threads, user and system), in
/// seconds, from `/proc/self/stat`; `None` elsewhere. Beside a wall-clock figure it
/// tells a run bound by the CPU from one waiting on the disk.
pub(crate) fn cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    // The command name may hold spaces: the fields that follow start after its `)`.
    let rest = &stat[stat.rfind(')')? + 2..];
    let mut fields = rest.split_whitespace().skip(11);
    let user: f64 = fields.next()?.parse().ok()?;
    let system: f64 = fields.next()?.parse().ok()?;
    // Clock ticks: USER_HZ is 100 on every Linux architecture keel runs on.
    Some((user + system) / 100.0)
}

/// CPU seconds used so far by each of this process' threads named `name`, by thread id,
/// from `/proc/self/task/*/schedstat` (Linux only; empty elsewhere).
pub(crate) fn thread_cpu(name: &str) -> Vec<(u64, f64)> {
    let Ok(tasks) = std::fs::read_dir("/proc/self/task") else {
        return Vec::new();
    };
    // Threads come and go while this reads: skip whatever vanished.
    tasks
        .flatten()
        .filter_map(|task| {
            let path = task.path();
            let comm = std::fs::read_to_string(path.join("comm")).ok()?;
            if comm.trim_end() != name {
                return None;
            }
            let tid = task.file_name().to_str()?.parse().ok()?;
            let schedstat = std::fs::read_to_string(path.join("schedstat")).ok()?;
            let nanos: f64 = schedstat.split_whitespace().next()?.parse().ok()?;
            Some((tid, nanos / 1e9))
        })
        .collect()
}

/// The CPU seconds threads spent between two [`thread_cpu`] readings: threads present
/// in both count their difference, threads born in between all of theirs.
pub(crate) fn thread_cpu_between(before: &[(u64, f64)], after: &[(u64, f64)]) -> f64 {
    after
        .iter()
        .map(|(tid, now)| {
            let earlier = before
                .iter()
                .find(|(t, _)| t == tid)
                .map_or(0.0, |(_, v)| *v);
            (now - earlier).max(0.0)
        })
        .sum()
}

/// The machine, one line per fact, for the report's header.
pub(crate) fn describe_machine(scratch: &Path) -> Vec<(String, String)> {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let cpu = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .map(|rest| rest.trim_start_matches([' ', '\t', ':']).to_owned())
        .unwrap_or_else(|| "unknown".to_owned());
    let cores = std::thread::available_parallelism().map_or(0, std::num::NonZero::get);
    let meminfo = std::fs::read_to_string("/proc/meminfo").unwrap_or_default();
    let memory = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| {
            rest.trim()
                .trim_end_matches("kB")
                .trim()
                .parse::<u64>()
                .ok()
        })
        .map_or_else(
            || "unknown".to_owned(),
            |kib| format!("{:.1} GiB", kib as f64 / 1024.0 / 1024.0),
        );
    let kernel = std::fs::read_to_string("/proc/sys/kernel/osrelease")
        .map_or_else(|_| "unknown".to_owned(), |text| text.trim().to_owned());
    vec![
        ("CPU".into(), format!("{cpu}, {cores} cores available")),
        ("memory".into(), memory),
        ("kernel".into(), format!("Linux {kernel}")),
        (
            "scratch directory (databases, fsync file)".into(),
            format!("{} on {}", scratch.display(), mount_of(scratch)),
        ),
        ("rustc".into(), tool_version("rustc", &["--version"])),
    ]
}

/// The device and filesystem holding `path`, from `/proc/mounts` (longest match).
fn mount_of(path: &Path) -> String {
    let mounts = std::fs::read_to_string("/proc/mounts").unwrap_or_default();
    mounts
        .lines()
        .filter_map(|line| {
            let mut fields = line.split_whitespace();
            let (device, point, kind) = (fields.next()?, fields.next()?, fields.next()?);
            path.starts_with(point)
                .then(|| (point.len(), format!("{device} ({kind})")))
        })
        .max_by_key(|(length, _)| *length)
        .map_or_else(|| "an unknown device".to_owned(), |(_, text)| text)
}

/// The first line `program args` prints, or why it could not run.
pub(crate) fn tool_version(program: &str, args: &[&str]) -> String {
    match run(
        Command::new(program).args(args),
        Duration::from_secs(20),
        true,
    ) {
        Ok(done) if done.status.success() => done.stdout.lines().next().unwrap_or("").to_owned(),
        Ok(_) | Err(_) => format!("{program} not available"),
    }
}

/// The commit the suite ran on, marked when the tree had changes.
pub(crate) fn git_commit(root: &Path) -> String {
    let head = run(
        Command::new("git")
            .args(["rev-parse", "--short", "HEAD"])
            .current_dir(root),
        Duration::from_secs(20),
        true,
    );
    let Ok(head) = head else {
        return "unknown (git not available)".to_owned();
    };
    let dirty = run(
        Command::new("git")
            .args(["status", "--porcelain"])
            .current_dir(root),
        Duration::from_secs(20),
        true,
    )
    .is_ok_and(|status| !status.stdout.trim().is_empty());
    let head = head.stdout.trim().to_owned();
    if dirty {
        format!("{head} with uncommitted changes")
    } else {
        head
    }
}

/// Now, as `YYYY-MM-DD HH:MM UTC`: the date is all the report needs, and a date crate
/// for one line is not worth its build.
pub(crate) fn utc_now() -> String {
    let seconds = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    let (days, rest) = (seconds / 86_400, seconds % 86_400);
    // Howard Hinnant's days-to-civil algorithm.
    let z = days as i64 + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1_460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02} UTC",
        rest / 3_600,
        rest % 3_600 / 60
    )
}

/// A directory of its own, removed on drop.
#[derive(Debug)]
pub(crate) struct Scratch(PathBuf);

impl Scratch {
    /// Creates `keel-bench-<pid>` under the system's temp dir (or `KEEL_BENCH_DIR`, to
    /// measure another disk).
    pub(crate) fn create() -> std::io::Result<Self> {
        let base =
            std::env::var_os("KEEL_BENCH_DIR").map_or_else(std::env::temp_dir, PathBuf::from);
        let path = base.join(format!("keel-bench-{}", std::process::id()));
        std::fs::create_dir_all(&path)?;
        Ok(Self(path))
    }

    /// The directory.
    pub(crate) fn path(&self) -> &Path {
        &self.0
    }

    /// A fresh path inside it named `name` (an earlier file of that name is removed).
    pub(crate) fn file(&self, name: &str) -> PathBuf {
        self.remove(name);
        self.0.join(name)
    }

    /// Removes the file `name` and, for a SQLite database, its WAL and shared memory.
    pub(crate) fn remove(&self, name: &str) {
        for suffix in ["", "-wal", "-shm"] {
            let _ = std::fs::remove_file(self.0.join(format!("{name}{suffix}")));
        }
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// What a finished child left.
#[derive(Debug)]
pub(crate) struct Finished {
    /// How it ended.
    pub(crate) status: ExitStatus,
    /// Everything it wrote to stdout.
    pub(crate) stdout: String,
    /// The end of what it wrote to stderr, when `quiet` captured it.
    pub(crate) stderr_tail: String,
}

/// Runs `command` to the end or until `limit`, when it is killed: a hung peer must not
/// hang the suite. Stdout is captured; stderr is captured when `quiet` (for installers'
/// chatter) and passed through otherwise (for a peer's progress lines).
pub(crate) fn run(command: &mut Command, limit: Duration, quiet: bool) -> Result<Finished, String> {
    command.stdin(Stdio::null()).stdout(Stdio::piped());
    command.stderr(if quiet {
        Stdio::piped()
    } else {
        Stdio::inherit()
    });
    let mut child = command.spawn().map_err(|error| error.to_string())?;
    // Read both pipes on threads: a child blocked on a full pipe would never exit.
    let drain = |pipe: Option<Box<dyn Read + Send>>| {
        std::thread::spawn(move || {
            let mut text = String::new();
            if let Some(mut pipe) = pipe {
                let _ = pipe.read_to_string(&mut text);
            }
            text
        })
    };
    let stdout = drain(
        child
            .stdout
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let stderr = drain(
        child
            .stderr
            .take()
            .map(|p| Box::new(p) as Box<dyn Read + Send>),
    );
    let deadline = Instant::now() + limit;
    let status = loop {
        match child.try_wait() {
            Ok(Some(status)) => break status,
            Ok(None) if Instant::now() < deadline => {
                std::thread::sleep(Duration::from_millis(20));
            }
            Ok(None) => {
                let _ = child.kill();
                let _ = child.wait();
                return Err(format!("did not finish within {} s", limit.as_secs()));
            }
            Err(error) => return Err(error.to_string()),
        }
    };
    let stdout = stdout.join().unwrap_or_default();
    let stderr = stderr.join().unwrap_or_default();
    let tail: Vec<&str> = stderr.lines().rev().take(5).collect();
    Ok(Finished {
        status,
        stdout,
        stderr_tail: tail.into_iter().rev().collect::<Vec<_>>().join(" / "),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn thread_cpu_counts_only_what_was_spent_in_between() {
        let before = [(1, 2.0), (2, 5.0)];
        let after = [(1, 2.5), (3, 1.0)];
        assert!((thread_cpu_between(&before, &after) - 1.5).abs() < 1e-9);
    }

    #[test]
    fn the_date_is_formatted_in_utc() {
        let now = utc_now();
        assert_eq!(now.len(), "2025-01-31 12:00 UTC".len());
        assert!(now.ends_with(" UTC") && now.starts_with("20"));
    }
}
