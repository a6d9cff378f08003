//! Aligned text tables for the terminal.

use std::fmt;

/// Rows of cells under a header, printed with each column as wide as its widest cell.
#[derive(Debug)]
pub(crate) struct Table {
    rows: Vec<Vec<String>>,
}

/// The widest a cell is printed; longer text is cut with `…`.
const CELL_CHARS_MAX: usize = 80;

impl Table {
    pub(crate) fn new<const N: usize>(header: [&str; N]) -> Self {
        Self {
            rows: vec![header.iter().map(|cell| (*cell).to_owned()).collect()],
        }
    }

    pub(crate) fn row<const N: usize>(&mut self, cells: [String; N]) {
        self.rows.push(cells.into_iter().map(cut).collect());
    }
}

fn cut(cell: String) -> String {
    let cell = cell.lines().next().unwrap_or_default().to_owned();
    if cell.chars().count() > CELL_CHARS_MAX {
        format!(
            "{}…",
            cell.chars().take(CELL_CHARS_MAX - 1).collect::<String>()
        )
    } else {
        cell
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let columns = self.rows.first().map_or(0, Vec::len);
        let widths: Vec<usize> = (0..columns)
            .map(|c| {
                self.rows
                    .iter()
                    .map(|row| row.get(c).map_or(0, |cell| cell.chars().count()))
                    .max()
                    .unwrap_or(0)
            })
            .collect();
        for row in &self.rows {
            let mut line = String::new();
            for (c, cell) in row.iter().enumerate() {
                if c + 1 == row.len() {
                    line.push_str(cell);
                } else {
                    line.push_str(&format!("{cell:<width$}  ", width = widths[c]));
                }
            }
            writeln!(f, "{}", line.trim_end())?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn columns_line_up_and_long_cells_are_cut() {
        let mut table = Table::new(["A", "LONGER"]);
        table.row(["wide cell".to_owned(), "x".repeat(100)]);
        let text = table.to_string();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines[0], "A          LONGER");
        assert!(lines[1].starts_with("wide cell  xxx"));
        assert!(lines[1].ends_with('…'));
    }
}
