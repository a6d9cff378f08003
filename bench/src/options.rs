//! Command-line flags and the sizes of a full or a quick run.

use std::path::PathBuf;

/// The parts of the suite, in the order they run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Part {
    /// Pure transitions: keel-core beside XState.
    Transitions,
    /// Durable appends: raw fsync, keel on SQLite, Python eventsourcing.
    Durable,
    /// Sagas end to end as concurrency grows, and memory per idle saga.
    Sagas,
    /// Recovery of unfinished sagas after a restart.
    Recovery,
    /// The durable figures on PostgreSQL (needs `KEEL_PG_URL`).
    Postgres,
}

impl Part {
    /// Every part, in running order.
    pub(crate) const ALL: [Self; 5] = [
        Self::Transitions,
        Self::Durable,
        Self::Sagas,
        Self::Recovery,
        Self::Postgres,
    ];

    /// The name `--only` takes.
    pub(crate) const fn name(self) -> &'static str {
        match self {
            Self::Transitions => "transitions",
            Self::Durable => "durable",
            Self::Sagas => "sagas",
            Self::Recovery => "recovery",
            Self::Postgres => "postgres",
        }
    }
}

/// What to run and where to write.
#[derive(Debug, Clone)]
pub(crate) struct Options {
    /// A smoke test of seconds, not figures to publish.
    pub(crate) quick: bool,
    /// The selected parts (all by default).
    pub(crate) parts: Vec<Part>,
    /// Where the report goes; `None` for the default.
    pub(crate) out: Option<PathBuf>,
}

/// The usage text for `--help` and for a bad flag.
pub(crate) const USAGE: &str = "\
usage: cargo run --release -p keel-bench -- [--quick] [--only PARTS] [--out DIR]

  --quick        a smoke test of about a minute, sizes far too small to publish
  --only PARTS   a comma-separated subset of: transitions, durable, sagas, recovery, postgres
  --out DIR      where to write BENCHMARKS.md and the charts (default: bench/results
                 for a full run of every part, bench/results/partial otherwise)

Environment: KEEL_PG_URL (PostgreSQL figures; skipped without it), KEEL_BENCH_DIR (the
directory for scratch databases, default the system temp dir).";

impl Options {
    /// Parses the flags after the program name.
    pub(crate) fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut options = Self {
            quick: false,
            parts: Part::ALL.to_vec(),
            out: None,
        };
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            match arg.as_str() {
                "--quick" => options.quick = true,
                "--only" => {
                    let list = args.next().ok_or("--only needs a list of parts")?;
                    options.parts = parse_parts(&list)?;
                }
                "--out" => options.out = Some(args.next().ok_or("--out needs a directory")?.into()),
                // `cargo bench` and `cargo test --benches` conventions, harmlessly ignored.
                "--bench" => {}
                other => return Err(format!("unknown flag {other}")),
            }
        }
        Ok(options)
    }

    /// Whether `part` runs.
    pub(crate) fn runs(&self, part: Part) -> bool {
        self.parts.contains(&part)
    }

    /// Whether this run produces figures fit to publish: every part, full sizes.
    pub(crate) fn is_full(&self) -> bool {
        !self.quick && self.parts.len() == Part::ALL.len()
    }

    /// The sizes for this run.
    pub(crate) fn sizes(&self) -> Sizes {
        if self.quick { QUICK } else { FULL }
    }
}

fn parse_parts(list: &str) -> Result<Vec<Part>, String> {
    let mut parts = Vec::new();
    for name in list.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        let part = Part::ALL
            .into_iter()
            .find(|part| part.name() == name)
            .ok_or_else(|| format!("unknown part {name}"))?;
        if !parts.contains(&part) {
            parts.push(part);
        }
    }
    // Keep the running order whatever order they were named in.
    parts.sort_by_key(|part| Part::ALL.iter().position(|p| p == part));
    if parts.is_empty() {
        return Err("--only names no part".to_owned());
    }
    Ok(parts)
}

/// How much each part does.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Sizes {
    /// Runs behind every figure (their median, min and max are reported).
    pub(crate) runs: usize,
    /// Runs behind the transition figures, which are cheap.
    pub(crate) transition_runs: usize,
    /// The length of one transition run, in milliseconds.
    pub(crate) transition_sample_ms: u64,
    /// The length of one durable-append run, in seconds.
    pub(crate) durable_seconds: f64,
    /// Events per commit in the batched appends.
    pub(crate) durable_batch: usize,
    /// The concurrency levels of the saga sweep (memory and SQLite).
    pub(crate) saga_levels: &'static [u64],
    /// How long a saga run keeps starting sagas, in seconds (at least one per client).
    pub(crate) saga_seconds: f64,
    /// Idle sagas held for the memory figure.
    pub(crate) idle_sagas: u64,
    /// The numbers of unfinished sagas recovered.
    pub(crate) recovery_levels: &'static [u64],
    /// Finished and unfinished sagas in the store of the long-history recovery.
    pub(crate) history: (u64, u64),
    /// The concurrency levels of the saga sweep on PostgreSQL.
    pub(crate) postgres_saga_levels: &'static [u64],
}

const FULL: Sizes = Sizes {
    runs: 3,
    transition_runs: 7,
    transition_sample_ms: 200,
    durable_seconds: 2.0,
    durable_batch: 1_000,
    saga_levels: &[1, 10, 100, 1_000, 10_000, 100_000],
    saga_seconds: 1.5,
    idle_sagas: 100_000,
    recovery_levels: &[1_000, 3_000, 10_000, 30_000, 100_000],
    history: (1_000_000, 10_000),
    postgres_saga_levels: &[1, 100, 1_000, 10_000],
};

const QUICK: Sizes = Sizes {
    runs: 2,
    transition_runs: 3,
    transition_sample_ms: 20,
    durable_seconds: 0.3,
    durable_batch: 1_000,
    saga_levels: &[1, 100, 1_000],
    saga_seconds: 0.3,
    idle_sagas: 2_000,
    recovery_levels: &[300, 1_000],
    history: (20_000, 1_000),
    postgres_saga_levels: &[1, 100],
};

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|a| (*a).to_owned()))
    }

    #[test]
    fn only_selects_parts_in_running_order() {
        let options = parse(&["--only", "durable,transitions", "--quick"]).expect("valid");
        assert_eq!(options.parts, [Part::Transitions, Part::Durable]);
        assert!(options.quick && !options.is_full());
    }

    #[test]
    fn no_flags_is_a_full_run_and_unknown_names_are_refused() {
        assert!(parse(&[]).expect("valid").is_full());
        assert!(parse(&["--only", "speed"]).is_err());
        assert!(parse(&["--fast"]).is_err());
    }
}
