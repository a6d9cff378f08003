//! The report: sections of Markdown, the targets with a verdict each, charts beside it,
//! written as `BENCHMARKS.md` and SVG files into one directory.

use std::fmt::Write;
use std::path::Path;

use crate::stats::Summary;

/// Whether a target was reached.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Verdict {
    /// Reached.
    Met,
    /// Missed: the closing notes say why.
    Missed,
    /// Not measured in this run (a peer or a server was unavailable, or not selected).
    NotMeasured,
}

/// One of the targets and what this run found.
#[derive(Debug, Clone)]
pub(crate) struct Target {
    /// The target as the issue states it.
    pub(crate) wanted: String,
    /// The measured figure or ratio.
    pub(crate) measured: String,
    /// Reached or not.
    pub(crate) verdict: Verdict,
    /// For a miss: why, and what would close it.
    pub(crate) why: String,
}

/// A titled part of the report.
#[derive(Debug, Clone, Default)]
pub(crate) struct Section {
    title: String,
    body: String,
}

impl Section {
    /// A paragraph.
    pub(crate) fn para(&mut self, text: &str) {
        let _ = writeln!(self.body, "{text}\n");
    }

    /// A table; every row should have as many cells as `headers`.
    pub(crate) fn table(&mut self, headers: &[&str], rows: &[Vec<String>]) {
        let _ = writeln!(self.body, "| {} |", headers.join(" | "));
        let _ = writeln!(self.body, "|{}", " --- |".repeat(headers.len()));
        for row in rows {
            let _ = writeln!(self.body, "| {} |", row.join(" | "));
        }
        self.body.push('\n');
    }

    /// A chart already added to the report under `file`.
    pub(crate) fn image(&mut self, file: &str, alt: &str) {
        let _ = writeln!(self.body, "![{alt}]({file})\n");
    }
}

/// The whole report, built section by section as the suite runs.
#[derive(Debug, Default)]
pub(crate) struct Report {
    facts: Vec<(String, String)>,
    targets: Vec<Target>,
    sections: Vec<Section>,
    charts: Vec<(String, String)>,
    notes: Vec<String>,
}

impl Report {
    /// A line of the header's table (machine, versions, load).
    pub(crate) fn fact(&mut self, name: impl Into<String>, value: impl Into<String>) {
        self.facts.push((name.into(), value.into()));
    }

    /// Starts a section; later calls to the returned section add to it.
    pub(crate) fn section(&mut self, title: &str) -> &mut Section {
        self.sections.push(Section {
            title: title.to_owned(),
            body: String::new(),
        });
        let last = self.sections.len() - 1;
        &mut self.sections[last]
    }

    /// Records a target's verdict.
    pub(crate) fn target(&mut self, target: Target) {
        self.targets.push(target);
    }

    /// Adds a chart, written as `file` beside the report.
    pub(crate) fn chart(&mut self, file: &str, svg: String) {
        self.charts.push((file.to_owned(), svg));
    }

    /// A closing note (a caveat, something a reader would trip over).
    pub(crate) fn note(&mut self, text: impl Into<String>) {
        self.notes.push(text.into());
    }

    /// The report as Markdown.
    pub(crate) fn render(&self, title: &str, preamble: &str) -> String {
        let mut out = format!("# {title}\n\n{preamble}\n\n");
        out.push_str("| | |\n| --- | --- |\n");
        for (name, value) in &self.facts {
            let _ = writeln!(out, "| {name} | {value} |");
        }
        out.push_str("\n## Targets\n\n| target | measured | verdict |\n| --- | --- | --- |\n");
        for target in &self.targets {
            let verdict = match target.verdict {
                Verdict::Met => "met",
                Verdict::Missed => "**missed**",
                Verdict::NotMeasured => "not measured",
            };
            let _ = writeln!(
                out,
                "| {} | {} | {verdict} |",
                target.wanted, target.measured
            );
        }
        out.push('\n');
        for section in &self.sections {
            let _ = write!(out, "## {}\n\n{}", section.title, section.body);
        }
        let misses: Vec<&Target> = self
            .targets
            .iter()
            .filter(|t| t.verdict != Verdict::Met && !t.why.is_empty())
            .collect();
        if !misses.is_empty() || !self.notes.is_empty() {
            out.push_str("## Closing notes\n\n");
            for target in misses {
                let _ = writeln!(out, "- **{}** {}\n", target.wanted, target.why);
            }
            for note in &self.notes {
                let _ = writeln!(out, "- {note}\n");
            }
        }
        out
    }

    /// Writes `BENCHMARKS.md` and the charts into `dir`.
    pub(crate) fn write(&self, dir: &Path, title: &str, preamble: &str) -> std::io::Result<()> {
        std::fs::create_dir_all(dir)?;
        for (file, svg) in &self.charts {
            std::fs::write(dir.join(file), svg)?;
        }
        std::fs::write(dir.join("BENCHMARKS.md"), self.render(title, preamble))
    }
}

/// A count or rate with thousands separators (`4,120`), or three significant digits
/// below 100 (`42.5`, `0.812`).
pub(crate) fn grouped(value: f64) -> String {
    if !value.is_finite() {
        return "n/a".to_owned();
    }
    if value.abs() < 100.0 {
        let digits = if value.abs() >= 10.0 {
            1
        } else if value.abs() >= 1.0 {
            2
        } else {
            3
        };
        return format!("{value:.digits$}");
    }
    let digits = format!("{:.0}", value.abs());
    let mut out = String::new();
    for (i, digit) in digits.chars().enumerate() {
        if i > 0 && (digits.len() - i) % 3 == 0 {
            out.push(',');
        }
        out.push(digit);
    }
    if value < 0.0 { format!("-{out}") } else { out }
}

/// A whole count with thousands separators (`100,000`).
pub(crate) fn count(value: u64) -> String {
    if value < 100 {
        value.to_string()
    } else {
        grouped(value as f64)
    }
}

/// A duration given in nanoseconds, in the unit that reads best.
pub(crate) fn nanos(value: f64) -> String {
    match value {
        v if v >= 1e9 => format!("{} s", grouped(v / 1e9)),
        v if v >= 1e6 => format!("{} ms", grouped(v / 1e6)),
        v if v >= 1e3 => format!("{} µs", grouped(v / 1e3)),
        v => format!("{} ns", grouped(v)),
    }
}

/// `median (min–max)` with each figure formatted by `f`.
pub(crate) fn spread(summary: Option<Summary>, f: impl Fn(f64) -> String) -> String {
    match summary {
        Some(s) if s.runs > 1 => format!("{} ({}–{})", f(s.median), f(s.min), f(s.max)),
        Some(s) => format!("{} (1 run)", f(s.median)),
        None => "n/a".to_owned(),
    }
}

/// A ratio as `1,250×`, or `n/a`.
pub(crate) fn times(ratio: Option<f64>) -> String {
    ratio.map_or_else(|| "n/a".to_owned(), |r| format!("{}×", grouped(r)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn figures_read_well() {
        assert_eq!(grouped(4_120.4), "4,120");
        assert_eq!(grouped(1_234_567.0), "1,234,567");
        assert_eq!(grouped(42.54), "42.5");
        assert_eq!(grouped(0.8123), "0.812");
        assert_eq!(count(1), "1");
        assert_eq!(count(100_000), "100,000");
        assert_eq!(nanos(39.5), "39.5 ns");
        assert_eq!(nanos(52_377.0), "52.4 µs");
        assert_eq!(times(Some(1_250.0)), "1,250×");
        assert_eq!(times(None), "n/a");
    }

    #[test]
    fn a_missed_target_gets_a_closing_note() {
        let mut report = Report::default();
        report.target(Target {
            wanted: "fast".into(),
            measured: "slow".into(),
            verdict: Verdict::Missed,
            why: "because".into(),
        });
        report.section("One").para("text");
        let text = report.render("Title", "pre");
        assert!(text.contains("| fast | slow | **missed** |"));
        assert!(text.contains("## One\n\ntext"));
        assert!(text.contains("- **fast** because"));
    }
}
