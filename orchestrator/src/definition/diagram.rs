//! A saga definition as a diagram: Mermaid `flowchart` and Graphviz DOT.
//!
//! Forward edges are solid and run stage to stage; each compensated step has a dashed
//! edge to its undo node, and the undo nodes are chained in the order compensation runs
//! them (reverse), ending in `compensated`. The pivot is labelled.

use std::fmt::Write as _;

use super::SagaDefinition;

/// A node's shape.
#[derive(Clone, Copy, PartialEq)]
enum Shape {
    /// `start`.
    Circle,
    /// `completed`, `compensated`.
    End,
    /// A step.
    Step,
    /// An undo.
    Undo,
}

/// One diagram, before it is written in either language.
struct Graph {
    /// (id, label, shape).
    nodes: Vec<(String, String, Shape)>,
    /// (from, to, dashed, label).
    edges: Vec<(String, String, bool, Option<&'static str>)>,
}

impl SagaDefinition {
    /// The saga as a Mermaid `flowchart LR`.
    pub fn to_mermaid(&self) -> String {
        let graph = self.graph();
        let mut out = String::from("flowchart LR\n");
        for (id, label, shape) in &graph.nodes {
            let _ = match shape {
                Shape::Circle | Shape::End => writeln!(out, "    {id}(({label}))"),
                Shape::Step | Shape::Undo => writeln!(out, "    {id}[\"{label}\"]"),
            };
        }
        for (from, to, dashed, label) in &graph.edges {
            let _ = match (dashed, label) {
                (false, _) => writeln!(out, "    {from} --> {to}"),
                (true, Some(label)) => writeln!(out, "    {from} -. {label} .-> {to}"),
                (true, None) => writeln!(out, "    {from} -.-> {to}"),
            };
        }
        out
    }

    /// The saga as a Graphviz `digraph`.
    pub fn to_dot(&self) -> String {
        let graph = self.graph();
        let mut out = format!("digraph \"{}\" {{\n    rankdir=LR;\n", self.saga_type);
        for (id, label, shape) in &graph.nodes {
            let _ = match shape {
                Shape::Circle => writeln!(out, "    {id} [shape=circle];"),
                Shape::End => writeln!(out, "    {id} [shape=doublecircle];"),
                Shape::Step => writeln!(out, "    {id} [shape=box, label=\"{label}\"];"),
                Shape::Undo => writeln!(
                    out,
                    "    {id} [shape=box, style=dashed, label=\"{label}\"];"
                ),
            };
        }
        for (from, to, dashed, label) in &graph.edges {
            let _ = match (dashed, label) {
                (false, _) => writeln!(out, "    {from} -> {to};"),
                (true, Some(label)) => {
                    writeln!(out, "    {from} -> {to} [style=dashed, label=\"{label}\"];")
                }
                (true, None) => writeln!(out, "    {from} -> {to} [style=dashed];"),
            };
        }
        out.push_str("}\n");
        out
    }

    /// The nodes and edges both languages draw.
    fn graph(&self) -> Graph {
        let mut nodes = vec![
            ("start".to_owned(), "start".to_owned(), Shape::Circle),
            ("completed".to_owned(), "completed".to_owned(), Shape::End),
        ];
        for step in &self.steps {
            let label = if step.pivot {
                format!("{} (pivot)", step.name)
            } else {
                step.name.clone()
            };
            nodes.push((node(&step.name), label, Shape::Step));
        }
        let undone = self.undo_chain();
        if !undone.is_empty() {
            nodes.push((
                "compensated".to_owned(),
                "compensated".to_owned(),
                Shape::End,
            ));
        }
        for step in &undone {
            nodes.push((
                format!("undo_{}", node(step)),
                format!("undo {step}"),
                Shape::Undo,
            ));
        }
        let mut edges: Vec<_> = self
            .forward_edges()
            .into_iter()
            .map(|(from, to)| (from, to, false, None))
            .collect();
        for step in &undone {
            edges.push((
                node(step),
                format!("undo_{}", node(step)),
                true,
                Some("on failure"),
            ));
        }
        for pair in undone.windows(2) {
            edges.push((
                format!("undo_{}", node(pair[0])),
                format!("undo_{}", node(pair[1])),
                true,
                None,
            ));
        }
        if let Some(last) = undone.last() {
            edges.push((
                format!("undo_{}", node(last)),
                "compensated".to_owned(),
                true,
                None,
            ));
        }
        Graph { nodes, edges }
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
