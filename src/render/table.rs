//! Small result tables written as GitHub markdown (for the report) and CSV (for machines).
//!
//! Cells are typed so numbers are formatted once, consistently: plain numbers with a fixed precision,
//! and `mean ± std (n)` cells, because every number we print carries its spread and seed count. CSV
//! keeps full precision and splits `mean ± std (n)` into three columns.

use std::fmt::Write as _;
use std::path::Path;

use super::{RenderError, Result};

/// One table cell.
#[derive(Debug, Clone, PartialEq)]
pub enum Cell {
    /// Text, written as is (markdown pipes escaped, CSV quoted when needed).
    Text(String),
    /// A number shown with `precision` decimals.
    Num(f64, usize),
    /// Mean ± std over `n` runs, shown with `precision` decimals.
    MeanStd {
        /// Mean.
        mean: f64,
        /// Standard deviation.
        std: f64,
        /// Number of runs (seeds, patterns, ...).
        n: usize,
        /// Decimals shown.
        precision: usize,
    },
    /// An empty cell.
    Empty,
}

impl From<&str> for Cell {
    fn from(s: &str) -> Self {
        Cell::Text(s.to_string())
    }
}

impl From<String> for Cell {
    fn from(s: String) -> Self {
        Cell::Text(s)
    }
}

impl From<f64> for Cell {
    fn from(v: f64) -> Self {
        Cell::Num(v, 3)
    }
}

impl Cell {
    /// The markdown text of the cell.
    pub fn markdown(&self) -> String {
        match self {
            Cell::Text(s) => s.replace('|', "\\|").replace('\n', " "),
            Cell::Num(v, p) => format!("{v:.p$}"),
            Cell::MeanStd {
                mean,
                std,
                n,
                precision: p,
            } => format!("{mean:.p$} ± {std:.p$} (n={n})"),
            Cell::Empty => String::new(),
        }
    }

    fn is_mean_std(&self) -> bool {
        matches!(self, Cell::MeanStd { .. })
    }
}

/// A small table: a header row and rows of cells.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct Table {
    /// Column headers.
    pub headers: Vec<String>,
    /// Rows; each should have as many cells as there are headers.
    pub rows: Vec<Vec<Cell>>,
}

impl Table {
    /// A table with these headers and no rows.
    pub fn new<S: Into<String>>(headers: impl IntoIterator<Item = S>) -> Self {
        Table {
            headers: headers.into_iter().map(Into::into).collect(),
            rows: Vec::new(),
        }
    }

    /// Appends a row.
    pub fn push(&mut self, row: Vec<Cell>) -> &mut Self {
        self.rows.push(row);
        self
    }

    fn check(&self) -> Result<()> {
        if let Some((i, r)) = self
            .rows
            .iter()
            .enumerate()
            .find(|(_, r)| r.len() != self.headers.len())
        {
            return Err(RenderError::input(
                "Table",
                format!(
                    "row {i} has {} cells for {} columns",
                    r.len(),
                    self.headers.len()
                ),
            ));
        }
        Ok(())
    }

    /// GitHub-flavoured markdown with columns padded to equal width; numeric columns right-aligned.
    pub fn to_markdown(&self) -> Result<String> {
        self.check()?;
        let cells: Vec<Vec<String>> = self
            .rows
            .iter()
            .map(|r| r.iter().map(Cell::markdown).collect())
            .collect();
        let numeric: Vec<bool> = (0..self.headers.len())
            .map(|c| {
                !self.rows.is_empty() && self.rows.iter().all(|r| !matches!(r[c], Cell::Text(_)))
            })
            .collect();
        let headers: Vec<String> = self.headers.iter().map(|h| h.replace('|', "\\|")).collect();
        let width: Vec<usize> = (0..self.headers.len())
            .map(|c| {
                cells
                    .iter()
                    .map(|r| r[c].chars().count())
                    .chain([headers[c].chars().count(), 3])
                    .max()
                    .unwrap_or(3)
            })
            .collect();
        let mut out = String::new();
        let line = |out: &mut String, row: &[String]| {
            out.push('|');
            for (c, s) in row.iter().enumerate() {
                let pad = width[c] - s.chars().count();
                if numeric[c] {
                    let _ = write!(out, " {}{} |", " ".repeat(pad), s);
                } else {
                    let _ = write!(out, " {}{} |", s, " ".repeat(pad));
                }
            }
            out.push('\n');
        };
        line(&mut out, &headers);
        out.push('|');
        for (c, w) in width.iter().enumerate() {
            let dashes = "-".repeat(w.saturating_sub(1));
            if numeric[c] {
                let _ = write!(out, " {dashes}: |");
            } else {
                let _ = write!(out, " {dashes}- |");
            }
        }
        out.push('\n');
        for r in &cells {
            line(&mut out, r);
        }
        Ok(out)
    }

    /// CSV (RFC 4180 quoting); a column holding `mean ± std` cells becomes three columns
    /// `<name>_mean, <name>_std, <name>_n`; numbers keep full precision.
    pub fn to_csv(&self) -> Result<String> {
        self.check()?;
        let split: Vec<bool> = (0..self.headers.len())
            .map(|c| self.rows.iter().any(|r| r[c].is_mean_std()))
            .collect();
        let mut out = String::new();
        let mut head = Vec::new();
        for (c, h) in self.headers.iter().enumerate() {
            if split[c] {
                head.extend([format!("{h}_mean"), format!("{h}_std"), format!("{h}_n")]);
            } else {
                head.push(h.clone());
            }
        }
        out.push_str(
            &head
                .iter()
                .map(|s| csv_field(s))
                .collect::<Vec<_>>()
                .join(","),
        );
        out.push('\n');
        for r in &self.rows {
            let mut fields = Vec::new();
            for (c, cell) in r.iter().enumerate() {
                match cell {
                    Cell::Text(s) => fields.push(csv_field(s)),
                    Cell::Num(v, _) => fields.push(v.to_string()),
                    Cell::MeanStd { mean, std, n, .. } => {
                        fields.extend([mean.to_string(), std.to_string(), n.to_string()])
                    }
                    Cell::Empty => fields.push(String::new()),
                }
                if split[c] && !cell.is_mean_std() {
                    fields.extend([String::new(), String::new()]);
                }
            }
            out.push_str(&fields.join(","));
            out.push('\n');
        }
        Ok(out)
    }

    /// Writes `<dir>/<stem>.md` and `<dir>/<stem>.csv`.
    pub fn write(&self, dir: &Path, stem: &str) -> Result<()> {
        std::fs::create_dir_all(dir).map_err(|source| RenderError::Io {
            path: dir.to_path_buf(),
            source,
        })?;
        for (ext, text) in [("md", self.to_markdown()?), ("csv", self.to_csv()?)] {
            let path = dir.join(format!("{stem}.{ext}"));
            std::fs::write(&path, text).map_err(|source| RenderError::Io { path, source })?;
        }
        Ok(())
    }
}

fn csv_field(s: &str) -> String {
    if s.contains([',', '"', '\n', '\r']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn sample() -> Table {
        let mut t = Table::new(["preset", "|cos|", "baseline"]);
        t.push(vec![
            "spirals".into(),
            Cell::MeanStd {
                mean: 0.286,
                std: 0.116,
                n: 16,
                precision: 3,
            },
            Cell::Num(0.03, 3),
        ]);
        t.push(vec![
            "a, \"b\"".into(),
            Cell::MeanStd {
                mean: 0.281,
                std: 0.129,
                n: 16,
                precision: 3,
            },
            Cell::Empty,
        ]);
        t
    }

    #[test]
    fn markdown_and_csv() {
        let t = sample();
        let md = t.to_markdown().expect("md");
        assert_eq!(
            md,
            "| preset  |              \\|cos\\| | baseline |\n\
             | ------- | -------------------: | -------: |\n\
             | spirals | 0.286 ± 0.116 (n=16) |    0.030 |\n\
             | a, \"b\"  | 0.281 ± 0.129 (n=16) |          |\n"
        );
        let csv = t.to_csv().expect("csv");
        assert_eq!(
            csv,
            "preset,|cos|_mean,|cos|_std,|cos|_n,baseline\n\
             spirals,0.286,0.116,16,0.03\n\
             \"a, \"\"b\"\"\",0.281,0.129,16,\n"
        );
        let dir = tempfile::tempdir().expect("tmp");
        t.write(dir.path(), "align").expect("write");
        assert!(dir.path().join("align.md").exists() && dir.path().join("align.csv").exists());
        let mut bad = Table::new(["a"]);
        bad.push(vec![Cell::Empty, Cell::Empty]);
        assert!(bad.to_markdown().is_err());
    }
}
