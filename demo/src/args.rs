//! The command line every example takes.

use std::path::PathBuf;

/// What the user asked for.
#[derive(Debug, Clone, PartialEq)]
pub struct Args {
    /// How many new sagas to start.
    pub sagas: u64,
    /// The chance that a service call fails for good, 0 to 1.
    pub fail_rate: f64,
    /// Seeds the services' decisions, so a run can be repeated.
    pub seed: u64,
    /// The SQLite store; a fresh file in a temporary directory when absent.
    pub db: Option<PathBuf>,
    /// Finish the unfinished sagas of an existing store, starting none.
    pub resume: bool,
}

impl Default for Args {
    fn default() -> Self {
        Self {
            sagas: 5,
            fail_rate: 0.2,
            seed: 1,
            db: None,
            resume: false,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "options:
  --sagas N        how many sagas to start (default 5)
  --fail-rate P    the chance, 0 to 1, that a service call fails for good (default 0.2)
  --seed S         seeds the services' decisions (default 1)
  --db PATH        the SQLite store (default: a new file in a temporary directory)
  --resume         finish the unfinished sagas in --db without starting new ones";

impl Args {
    /// Parses `args` (without the program name).
    pub fn parse(args: impl IntoIterator<Item = String>) -> Result<Self, String> {
        let mut parsed = Self::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let mut value = |name: &str| args.next().ok_or_else(|| format!("{name} needs a value"));
            match arg.as_str() {
                "--sagas" => {
                    parsed.sagas = value("--sagas")?
                        .parse()
                        .map_err(|_| "--sagas takes a whole number".to_owned())?;
                }
                "--fail-rate" => {
                    let rate: f64 = value("--fail-rate")?
                        .parse()
                        .map_err(|_| "--fail-rate takes a number from 0 to 1".to_owned())?;
                    if !(0.0..=1.0).contains(&rate) {
                        return Err(format!("--fail-rate {rate} is outside 0 to 1"));
                    }
                    parsed.fail_rate = rate;
                }
                "--seed" => {
                    parsed.seed = value("--seed")?
                        .parse()
                        .map_err(|_| "--seed takes a whole number".to_owned())?
                }
                "--db" => parsed.db = Some(PathBuf::from(value("--db")?)),
                "--resume" => parsed.resume = true,
                "-h" | "--help" => return Err(USAGE.to_owned()),
                other => return Err(format!("unknown option `{other}`\n{USAGE}")),
            }
        }
        if parsed.resume && parsed.db.is_none() {
            return Err("--resume needs --db PATH: the store whose sagas to finish".into());
        }
        Ok(parsed)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &str) -> Result<Args, String> {
        Args::parse(line.split_whitespace().map(str::to_owned))
    }

    #[test]
    fn options_parse_and_default() {
        assert_eq!(parse(""), Ok(Args::default()));
        let args = parse("--sagas 200 --fail-rate 0.5 --seed 9 --db /tmp/x.db --resume").unwrap();
        assert_eq!(
            (args.sagas, args.fail_rate, args.seed, args.resume),
            (200, 0.5, 9, true)
        );
    }

    #[test]
    fn bad_options_are_clear_errors() {
        assert!(
            parse("--fail-rate 2")
                .unwrap_err()
                .contains("outside 0 to 1")
        );
        assert!(parse("--sagas many").unwrap_err().contains("whole number"));
        assert!(parse("--resume").unwrap_err().contains("needs --db"));
        assert!(
            parse("--frobnicate")
                .unwrap_err()
                .contains("unknown option")
        );
        assert!(parse("--seed").unwrap_err().contains("needs a value"));
    }
}
