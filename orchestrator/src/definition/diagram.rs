//! A saga definition as a diagram: Mermaid `flowchart` and Graphviz DOT.
//!
//! Forward edges are solid and run stage to stage; each compensated step has a dashed
//! edge to its undo node, and the undo nodes are chained in the order compensation runs
//! them (reverse), ending in `compensated`. The pivot is labelled.

use std::fmt::Write as _;

use super::SagaDefinition;

impl SagaDefinition {
    /// The saga as a Mermaid `flowchart LR`.
    pub fn to_mermaid(&self) -> String {
        let mut out =
            String::from("flowchart LR\n    start((start))\n    completed((completed))\n");
        for step in &self.steps {
            let label = if step.pivot {
                format!("{} (pivot)", step.name)
            } else {
                step.name.clone()
            };
            let _ = writeln!(out, "    {}[\"{}\"]", node(&step.name), label);
        }
        let undone = self.undo_chain();
        if !undone.is_empty() {
            out.push_str("    compensated((compensated))\n");
        }
        for step in &undone {
            let _ = writeln!(out, "    undo_{}[\"undo {}\"]", node(step), step);
        }
        for (from, to) in self.forward_edges() {
            let _ = writeln!(out, "    {from} --> {to}");
        }
        for step in &undone {
            let _ = writeln!(
                out,
                "    {} -. on failure .-> undo_{}",
                node(step),
                node(step)
            );
        }
        for pair in undone.windows(2) {
            let _ = writeln!(
                out,
                "    undo_{} -.-> undo_{}",
                node(pair[0]),
                node(pair[1])
            );
        }
        if let Some(last) = undone.last() {
            let _ = writeln!(out, "    undo_{} -.-> compensated", node(last));
        }
        out
    }

    /// The saga as a Graphviz `digraph`.
    pub fn to_dot(&self) -> String {
        let mut out = format!(
            "digraph \"{}\" {{\n    rankdir=LR;\n    start [shape=circle];\n    completed [shape=doublecircle];\n",
            self.saga_type
        );
        for step in &self.steps {
            let label = if step.pivot {
                format!("{} (pivot)", step.name)
            } else {
                step.name.clone()
            };
            let _ = writeln!(
                out,
                "    {} [shape=box, label=\"{}\"];",
                node(&step.name),
                label
            );
        }
        let undone = self.undo_chain();
        if !undone.is_empty() {
            out.push_str("    compensated [shape=doublecircle];\n");
        }
        for step in &undone {
            let _ = writeln!(
                out,
                "    undo_{} [shape=box, style=dashed, label=\"undo {}\"];",
                node(step),
                step
            );
        }
        for (from, to) in self.forward_edges() {
            let _ = writeln!(out, "    {from} -> {to};");
        }
        for step in &undone {
            let _ = writeln!(
                out,
                "    {} -> undo_{} [style=dashed, label=\"on failure\"];",
                node(step),
                node(step)
            );
        }
        for pair in undone.windows(2) {
            let _ = writeln!(
                out,
                "    undo_{} -> undo_{} [style=dashed];",
                node(pair[0]),
                node(pair[1])
            );
        }
        if let Some(last) = undone.last() {
            let _ = writeln!(
                out,
                "    undo_{} -> compensated [style=dashed];",
                node(last)
            );
        }
        out.push_str("}\n");
        out
    }

    /// Solid edges: start to the first stage, each stage to the next, the last to done.
    fn forward_edges(&self) -> Vec<(String, String)> {
        let mut edges = Vec::new();
        let mut previous = vec!["start".to_owned()];
        for stage in &self.stages {
            let current: Vec<String> = stage.steps().map(|i| node(&self.step(i).name)).collect();
            for from in &previous {
                for to in &current {
                    edges.push((from.clone(), to.clone()));
                }
            }
            previous = current;
        }
        for from in previous {
            edges.push((from, "completed".to_owned()));
        }
        edges
    }

    /// The compensated steps before the pivot, in the order compensation undoes them.
    fn undo_chain(&self) -> Vec<&str> {
        let before_pivot = self.pivot.map_or(self.steps.len(), usize::from);
        self.steps[..before_pivot]
            .iter()
            .rev()
            .filter(|step| step.compensation.is_some())
            .map(|step| step.name.as_str())
            .collect()
    }
}

/// A node id: step names may hold `-`, which neither format takes in a bare id.
fn node(name: &str) -> String {
    name.replace('-', "_")
}

#[cfg(test)]
mod tests {
    use crate::definition::{SagaDefinition, Step, StepAction};
    use serde_json::json;

    fn step(name: &str) -> Step {
        Step::new(name, |_| StepAction::custom("x.do", json!(null)))
    }

    fn saga() -> SagaDefinition {
        SagaDefinition::builder("order.fulfilment")
            .step(step("charge").compensate(|_| StepAction::custom("x.undo", json!(null))))
            .parallel([
                step("reserve-stock").compensate(|_| StepAction::custom("x.undo", json!(null))),
                step("label"),
            ])
            .step(step("ship").pivot())
            .build()
            .unwrap()
    }

    #[test]
    fn mermaid_shows_forward_edges_the_pivot_and_the_undo_chain_in_reverse() {
        let text = saga().to_mermaid();
        for line in [
            "start --> charge",
            "charge --> reserve_stock",
            "charge --> label",
            "label --> ship",
            "ship --> completed",
            "ship[\"ship (pivot)\"]",
            "undo_reserve_stock -.-> undo_charge",
            "undo_charge -.-> compensated",
        ] {
            assert!(text.contains(line), "missing `{line}` in\n{text}");
        }
        assert!(
            !text.contains("undo_label"),
            "a step without compensation has no undo node"
        );
    }

    #[test]
    fn dot_holds_the_same_graph() {
        let text = saga().to_dot();
        assert!(text.starts_with("digraph \"order.fulfilment\""));
        assert!(text.contains("undo_reserve_stock -> undo_charge [style=dashed];"));
        assert!(text.contains("reserve_stock -> ship;"));
        assert!(text.trim_end().ends_with('}'));
    }
}
