//! Diagrams of a machine: Mermaid `stateDiagram-v2` and Graphviz DOT.
//!
//! Both list states and transitions in declaration order, so the same machine always
//! gives the same text. Labels are escaped so that the output parses whatever the
//! `Debug` forms and guard names contain.

use std::fmt::{self, Debug, Display};

use super::compiled::Machine;
use super::label;

impl<S, E, C> Machine<S, E, C>
where
    S: Copy + Eq + Debug + 'static,
    E: Copy + Eq + Debug + 'static,
{
    /// The machine as a Mermaid `stateDiagram-v2`: `[*] --> Red` for the initial state,
    /// `Green --> Yellow : Tick [cars_waiting]` for a guarded transition, `Off --> [*]`
    /// for a terminal state.
    ///
    /// A state whose label is not a plain identifier (or is one Mermaid reserves) gets
    /// the id `s<index>` and a `state "label" as s<index>` line; characters Mermaid
    /// would misread are written as entity codes such as `#58;`.
    pub fn to_mermaid(&self) -> String {
        Mermaid(self).to_string()
    }

    /// The machine as a Graphviz digraph laid out left to right: states are nodes
    /// `s<index>` labelled with their names, terminal ones drawn as double circles, the
    /// initial state pointed at from a dot, and edges labelled `Tick [cars_waiting]`.
    pub fn to_dot(&self) -> String {
        Dot(self).to_string()
    }
}

struct Mermaid<'a, S, E, C>(&'a Machine<S, E, C>);

impl<S: Copy + Eq + Debug + 'static, E: Copy + Eq + Debug + 'static, C> Display
    for Mermaid<'_, S, E, C>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let machine = self.0;
        let labels: Vec<String> = machine.states.iter().map(|s| label(&s.label)).collect();
        let mut ids: Vec<String> = Vec::with_capacity(labels.len());
        for (index, text) in labels.iter().enumerate() {
            // Plain ids never look like `s<digits>`, so generated ids cannot collide.
            let id = if is_plain_mermaid_id(text) && !ids.contains(text) {
                text.clone()
            } else {
                format!("s{index}")
            };
            ids.push(id);
        }
        writeln!(f, "stateDiagram-v2")?;
        for (id, text) in ids.iter().zip(&labels) {
            if id != text {
                writeln!(f, "    state \"{}\" as {id}", mermaid_text(text))?;
            }
        }
        writeln!(f, "    [*] --> {}", ids[machine.initial])?;
        for (id, state) in ids.iter().zip(&machine.states) {
            for transition in &state.transitions {
                let event = mermaid_text(&label(&transition.event));
                write!(f, "    {id} --> {} : {event}", ids[transition.target.index])?;
                match transition.guard {
                    Some(guard) => writeln!(f, " [{}]", mermaid_text(guard.name()))?,
                    None => writeln!(f)?,
                }
            }
            if state.terminal {
                writeln!(f, "    {id} --> [*]")?;
            }
        }
        Ok(())
    }
}

/// Whether Mermaid's lexer reads `text` as one state id, and nothing else.
fn is_plain_mermaid_id(text: &str) -> bool {
    // Keywords Mermaid's state-diagram lexer matches before ids (case-insensitively,
    // and some as prefixes), which would turn a state into a statement.
    const RESERVED: [&str; 6] = ["state", "note", "class", "classdef", "scale", "direction"];
    const RESERVED_PREFIXES: [&str; 4] = ["default", "acctitle", "accdescr", "statediagram"];
    let mut chars = text.chars();
    let plain = chars.next().is_some_and(|c| c.is_ascii_alphabetic())
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_');
    let lower = text.to_ascii_lowercase();
    let generated =
        lower.len() > 1 && lower.starts_with('s') && lower[1..].bytes().all(|b| b.is_ascii_digit());
    plain
        && !generated
        && !RESERVED.contains(&lower.as_str())
        && !RESERVED_PREFIXES.iter().any(|p| lower.starts_with(p))
}

/// `text` with what Mermaid would misread replaced by entity codes, which Mermaid
/// decodes when it renders.
fn mermaid_text(text: &str) -> String {
    if text.is_empty() {
        return "#32;".to_owned();
    }
    let mut out = String::with_capacity(text.len());
    for (at, c) in text.char_indices() {
        // `direction LR` anywhere on a line is read as a layout statement.
        let word = text.get(at..at + "direction".len());
        if word.is_some_and(|w| w.eq_ignore_ascii_case("direction")) {
            out.push_str(if c == 'D' { "#68;" } else { "#100;" });
            continue;
        }
        match c {
            '#' => out.push_str("#35;"),
            ':' => out.push_str("#58;"),
            ';' => out.push_str("#59;"),
            '"' => out.push_str("#quot;"),
            '<' => out.push_str("#lt;"),
            '>' => out.push_str("#gt;"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

struct Dot<'a, S, E, C>(&'a Machine<S, E, C>);

impl<S: Copy + Eq + Debug + 'static, E: Copy + Eq + Debug + 'static, C> Display
    for Dot<'_, S, E, C>
{
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let machine = self.0;
        writeln!(f, "digraph \"{}\" {{", dot_text(&machine.name))?;
        writeln!(f, "    rankdir=LR;")?;
        writeln!(f, "    node [shape=box, style=rounded];")?;
        writeln!(f, "    start [shape=point];")?;
        for (index, state) in machine.states.iter().enumerate() {
            let shape = if state.terminal {
                ", shape=doublecircle"
            } else {
                ""
            };
            writeln!(
                f,
                "    s{index} [label=\"{}\"{shape}];",
                dot_text(&label(&state.label))
            )?;
        }
        writeln!(f, "    start -> s{};", machine.initial)?;
        for (index, state) in machine.states.iter().enumerate() {
            for transition in &state.transitions {
                let event = label(&transition.event);
                let text = match transition.guard {
                    Some(guard) => format!("{event} [{}]", guard.name()),
                    None => event,
                };
                writeln!(
                    f,
                    "    s{index} -> s{} [label=\"{}\"];",
                    transition.target.index,
                    dot_text(&text)
                )?;
            }
        }
        writeln!(f, "}}")
    }
}

/// `text` as the inside of a DOT quoted string used as a label.
fn dot_text(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for c in text.chars() {
        match c {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            c if c.is_control() => out.push(' '),
            c => out.push(c),
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::super::fixture::traffic_light;
    use super::super::{Guard, Machine};
    use super::*;

    #[test]
    fn mermaid_lists_initial_transitions_guards_and_terminals_in_order() {
        let expected = "\
stateDiagram-v2
    [*] --> Red
    Red --> Green : Tick
    Red --> Off : PowerCut
    Green --> Yellow : Tick [cars_waiting]
    Green --> Green : Tick
    Green --> Off : PowerCut
    Yellow --> Red : Tick
    Yellow --> Off : PowerCut
    Off --> [*]
";
        assert_eq!(traffic_light().to_mermaid(), expected);
    }

    #[test]
    fn dot_draws_terminals_as_double_circles_and_the_start_as_a_point() {
        let expected = "\
digraph \"traffic_light\" {
    rankdir=LR;
    node [shape=box, style=rounded];
    start [shape=point];
    s0 [label=\"Red\"];
    s1 [label=\"Green\"];
    s2 [label=\"Yellow\"];
    s3 [label=\"Off\", shape=doublecircle];
    start -> s0;
    s0 -> s1 [label=\"Tick\"];
    s0 -> s3 [label=\"PowerCut\"];
    s1 -> s2 [label=\"Tick [cars_waiting]\"];
    s1 -> s1 [label=\"Tick\"];
    s1 -> s3 [label=\"PowerCut\"];
    s2 -> s0 [label=\"Tick\"];
    s2 -> s3 [label=\"PowerCut\"];
}
";
        assert_eq!(traffic_light().to_dot(), expected);
    }

    fn awkward() -> Machine<&'static str, &'static str> {
        Machine::builder("say \"hi\"\\", "state")
            .state("state", |s| {
                s.on("a: b; #c")
                    .when(Guard::new("x<y>", |_, _| true))
                    .to("two words")
            })
            .state("two words", |s| s.on("change direction LR").to("s1"))
            .terminal("s1")
            .build()
            .expect("labels do not affect consistency")
    }

    #[test]
    fn mermaid_gives_awkward_labels_generated_ids_and_entity_codes() {
        let expected = "\
stateDiagram-v2
    state \"state\" as s0
    state \"two words\" as s1
    state \"s1\" as s2
    [*] --> s0
    s0 --> s1 : a#58; b#59; #35;c [x#lt;y#gt;]
    s1 --> s2 : change #100;irection LR
    s2 --> [*]
";
        assert_eq!(awkward().to_mermaid(), expected);
    }

    #[test]
    fn dot_escapes_quotes_and_backslashes() {
        let dot = awkward().to_dot();
        assert!(
            dot.starts_with("digraph \"say \\\"hi\\\"\\\\\" {\n"),
            "{dot}"
        );
        assert!(
            dot.contains("s0 -> s1 [label=\"a: b; #c [x<y>]\"];"),
            "{dot}"
        );
    }

    #[test]
    fn plain_ids_exclude_keywords_and_generated_shapes() {
        for plain in ["Red", "payment_pending", "s", "sx1", "notes"] {
            assert!(is_plain_mermaid_id(plain), "{plain}");
        }
        for not_plain in [
            "s12",
            "S3",
            "Default_state",
            "note",
            "2fast",
            "a-b",
            "",
            "é",
        ] {
            assert!(!is_plain_mermaid_id(not_plain), "{not_plain}");
        }
    }

    #[test]
    fn control_characters_never_break_a_line() {
        assert_eq!(mermaid_text("a\nb\tc"), "a b c");
        assert_eq!(dot_text("a\nb\tc"), "a\\nb c");
        assert_eq!(mermaid_text(""), "#32;");
    }
}
