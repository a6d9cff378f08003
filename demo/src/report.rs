//! What the examples print: timelines, a progress line, the summary.

use std::fmt::Write as _;

use keel_orchestrator::SagaStatus;
use keel_orchestrator::query::{SagaSummary, Timeline};
use keel_orchestrator::saga::{SagaEvent, Transition};

/// A saga's timeline as text, one line per transition, times relative to its start.
pub fn timeline_text(timeline: &Timeline) -> String {
    let summary = &timeline.summary;
    let took = summary.updated_at.millis_since(summary.started_at);
    let mut out = format!(
        "{}  {}  {}  ({took} ms)\n",
        summary.id,
        summary.saga_type,
        status_text(&summary.status)
    );
    for entry in &timeline.entries {
        let at = entry.time.millis_since(summary.started_at);
        if let SagaEvent::Operator { command } = &entry.event {
            let _ = writeln!(out, "  {at:>6} ms  operator: {}", command.name());
        }
        for transition in &entry.transitions {
            let name = |step: &u16| timeline.step_name(*step);
            let line = match transition {
                Transition::Started => "started".to_owned(),
                Transition::StepStarted { step, attempt: 1 } => format!("{}: started", name(step)),
                Transition::StepStarted { step, attempt } => {
                    format!("{}: attempt {attempt}", name(step))
                }
                Transition::StepCompleted { step } => format!("{}: completed", name(step)),
                Transition::StepFailed {
                    step,
                    reason,
                    retry_in_ms: Some(ms),
                    ..
                } => {
                    format!(
                        "{}: failed ({}), retrying in {ms} ms",
                        name(step),
                        short(reason)
                    )
                }
                Transition::StepFailed {
                    step,
                    reason,
                    retry_in_ms: None,
                    ..
                } => {
                    format!("{}: failed for good ({})", name(step), short(reason))
                }
                Transition::Compensating { reason } => format!("compensating: {}", short(reason)),
                Transition::CompensationStarted { step, attempt: 1 } => {
                    format!("{}: undoing", name(step))
                }
                Transition::CompensationStarted { step, attempt } => {
                    format!("{}: undoing, attempt {attempt}", name(step))
                }
                Transition::StepCompensated { step } => format!("{}: undone", name(step)),
                Transition::CompensationFailed { step, reason, .. } => {
                    format!("{}: undo failed ({})", name(step), short(reason))
                }
                Transition::Completed => "completed".to_owned(),
                Transition::Compensated => "compensated".to_owned(),
                Transition::NeedsIntervention { reason } => {
                    format!("needs intervention: {}", short(reason))
                }
                Transition::Resumed { by } => format!("resumed by {by}"),
                Transition::Recovered { steps } => {
                    let names: Vec<String> = steps.iter().map(|s| timeline.step_name(*s)).collect();
                    format!(
                        "recovered after a restart; sending again: {}",
                        names.join(", ")
                    )
                }
                Transition::Resolved { note } => format!("resolved: {note}"),
            };
            let _ = writeln!(out, "  {at:>6} ms  {line}");
        }
    }
    out
}

/// The status in a word or two.
pub fn status_text(status: &SagaStatus) -> String {
    match status {
        SagaStatus::NeedsIntervention { .. } => "NEEDS INTERVENTION".to_owned(),
        other => other.name().to_uppercase(),
    }
}

/// A reason cut to one readable line.
fn short(reason: &str) -> String {
    let line = reason.lines().next().unwrap_or_default();
    if line.chars().count() > 110 {
        format!("{}…", line.chars().take(110).collect::<String>())
    } else {
        line.to_owned()
    }
}

/// A progress line: `[#####.....]  523/1000 sagas at rest, 1234 sagas/s`.
pub fn progress_line(done: u64, total: u64, rate: f64) -> String {
    const WIDTH: u64 = 30;
    let filled = (done.min(total) * WIDTH)
        .checked_div(total)
        .map_or(WIDTH, |f| f.min(WIDTH));
    // Both at most WIDTH.
    let (filled, empty) = (filled as usize, (WIDTH - filled) as usize);
    format!(
        "[{}{}] {done:>7}/{total} sagas at rest, {rate:>8.0} sagas/s",
        "#".repeat(filled),
        ".".repeat(empty)
    )
}

/// Counts of a list of sagas by how they stand.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Counts {
    /// Every saga.
    pub sagas: u64,
    /// Completed.
    pub completed: u64,
    /// Compensated.
    pub compensated: u64,
    /// Waiting for an operator.
    pub needs_intervention: u64,
    /// Still running or compensating.
    pub unfinished: u64,
    /// Closed by an operator.
    pub resolved: u64,
}

impl Counts {
    /// Counts `sagas`.
    pub fn of(sagas: &[SagaSummary]) -> Self {
        let mut counts = Self {
            sagas: sagas.len() as u64,
            ..Self::default()
        };
        for saga in sagas {
            match saga.status {
                SagaStatus::Completed => counts.completed += 1,
                SagaStatus::Compensated { .. } => counts.compensated += 1,
                SagaStatus::NeedsIntervention { .. } => counts.needs_intervention += 1,
                SagaStatus::Resolved { .. } => counts.resolved += 1,
                _ => counts.unfinished += 1,
            }
        }
        counts
    }
}

/// The last line every example prints, in the exact form tests and scripts read.
pub fn summary_line(counts: Counts, duplicate_effects: u64) -> String {
    format!(
        "summary: sagas={} completed={} compensated={} needs_intervention={} unfinished={} duplicate_effects={duplicate_effects}",
        counts.sagas,
        counts.completed,
        counts.compensated,
        counts.needs_intervention,
        counts.unfinished
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_summary_line_has_the_exact_form() {
        let counts = Counts {
            sagas: 5,
            completed: 3,
            compensated: 1,
            needs_intervention: 1,
            unfinished: 0,
            resolved: 0,
        };
        assert_eq!(
            summary_line(counts, 0),
            "summary: sagas=5 completed=3 compensated=1 needs_intervention=1 unfinished=0 duplicate_effects=0"
        );
    }

    #[test]
    fn progress_fills_with_the_count() {
        assert!(progress_line(5, 10, 100.0).starts_with("[###############..............."));
        assert!(progress_line(0, 0, 0.0).starts_with("[##############################]"));
    }
}
