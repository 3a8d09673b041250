//! Where a configuration value came from, and how to point at it.
//!
//! Every value eqflow reads from a pipeline keeps its origin (a byte span in a file, a `--set` argument, a
//! profile, a sweep axis, or a built-in default) so that any error later on can name the file, line, column
//! and key, and show the offending line with a caret, as compilers do.

use std::fmt;
use std::ops::Range;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// A configuration file's path and text, shared by every span that points into it.
#[derive(Debug)]
pub struct SourceFile {
    /// The path as the user gave it (shown in messages).
    pub path: PathBuf,
    /// The whole text.
    pub text: String,
}

impl SourceFile {
    /// 1-based (line, column) of a byte offset.
    pub fn line_col(&self, offset: usize) -> (usize, usize) {
        let offset = offset.min(self.text.len());
        let before = &self.text[..offset];
        let line = before.matches('\n').count() + 1;
        let line_start = before.rfind('\n').map_or(0, |i| i + 1);
        let col = self.text[line_start..offset].chars().count() + 1;
        (line, col)
    }

    /// The text of a 1-based line.
    pub fn line_text(&self, line: usize) -> &str {
        self.text.lines().nth(line - 1).unwrap_or("")
    }
}

/// The origin of a value.
#[derive(Debug, Clone)]
pub enum Source {
    /// A span in a file.
    File {
        /// The file.
        file: Arc<SourceFile>,
        /// Byte range of the value (or key) in the file.
        span: Range<usize>,
    },
    /// A command-line argument (the whole text, e.g. `--set stages.score.epochs=5`).
    Cli(String),
    /// The kind's built-in default.
    Default,
}

impl Source {
    /// A span in `file`; `None` spans (values toml_edit could not place) point at the file start.
    pub fn file(file: &Arc<SourceFile>, span: Option<Range<usize>>) -> Source {
        Source::File {
            file: Arc::clone(file),
            span: span.unwrap_or(0..0),
        }
    }

    /// `path:line:col` or `--set ...` — the short location used in one-line messages.
    pub fn location(&self) -> String {
        match self {
            Source::File { file, span } => {
                let (l, c) = file.line_col(span.start);
                format!("{}:{l}:{c}", file.path.display())
            }
            Source::Cli(arg) => format!("command line `{arg}`"),
            Source::Default => "built-in default".to_string(),
        }
    }

    /// The path of the file, if any.
    pub fn path(&self) -> Option<&Path> {
        match self {
            Source::File { file, .. } => Some(&file.path),
            _ => None,
        }
    }

    /// A caret excerpt of the source line (empty for non-file origins).
    pub fn excerpt(&self) -> String {
        let Source::File { file, span } = self else {
            return String::new();
        };
        let (line, col) = file.line_col(span.start);
        let text = file.line_text(line);
        let width = file.text[span.clone()]
            .lines()
            .next()
            .map_or(1, |s| s.chars().count().max(1));
        let width = width.min(text.chars().count().saturating_sub(col - 1).max(1));
        let gutter = line.to_string().len();
        format!(
            "{:gutter$} |\n{line} | {text}\n{:gutter$} | {}{}",
            "",
            "",
            " ".repeat(col - 1),
            "^".repeat(width),
        )
    }
}

/// One problem in a pipeline's configuration.
#[derive(Debug, Clone)]
pub struct Diagnostic {
    /// Where it is.
    pub source: Source,
    /// The dotted key it concerns (`stages.score.epochs`), if any.
    pub key: Option<String>,
    /// What is wrong.
    pub message: String,
    /// How to fix it, when we know ("did you mean `epochs`?").
    pub help: Option<String>,
}

impl Diagnostic {
    /// A diagnostic at `source`.
    pub fn new(source: Source, key: Option<String>, message: impl Into<String>) -> Self {
        Diagnostic {
            source,
            key,
            message: message.into(),
            help: None,
        }
    }

    /// Adds a remedy.
    pub fn with_help(mut self, help: impl Into<String>) -> Self {
        self.help = Some(help.into());
        self
    }
}

impl fmt::Display for Diagnostic {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "error: {}: ", self.source.location())?;
        if let Some(key) = &self.key {
            write!(f, "key `{key}`: ")?;
        }
        write!(f, "{}", self.message)?;
        let excerpt = self.source.excerpt();
        if !excerpt.is_empty() {
            write!(f, "\n{excerpt}")?;
        }
        if let Some(help) = &self.help {
            write!(f, "\n  = help: {help}")?;
        }
        Ok(())
    }
}

/// All problems found in one pass; eqflow reports every one of them before running anything.
#[derive(Debug, Clone, Default)]
pub struct Diagnostics(pub Vec<Diagnostic>);

impl Diagnostics {
    /// Adds one.
    pub fn push(&mut self, d: Diagnostic) {
        self.0.push(d);
    }

    /// `Err(self)` if any problem was recorded.
    pub fn into_result<T>(self, value: T) -> Result<T, Diagnostics> {
        if self.0.is_empty() {
            Ok(value)
        } else {
            Err(self)
        }
    }
}

impl fmt::Display for Diagnostics {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (i, d) in self.0.iter().enumerate() {
            if i > 0 {
                writeln!(f)?;
            }
            writeln!(f, "{d}")?;
        }
        let n = self.0.len();
        write!(
            f,
            "{n} error{} in the pipeline; nothing was run",
            if n == 1 { "" } else { "s" }
        )
    }
}

impl std::error::Error for Diagnostics {}

/// The closest of `candidates` to `word`, if it is close enough to be a likely typo.
pub fn suggest<'a>(word: &str, candidates: impl IntoIterator<Item = &'a str>) -> Option<&'a str> {
    // Edit distance with transpositions catches `sdt` -> `std`; Jaro-Winkler catches dropped suffixes of
    // longer names (`warmup` -> `warmup_steps`). Closest by edit distance wins.
    let limit = (word.chars().count() / 3).max(1);
    candidates
        .into_iter()
        .filter_map(|c| {
            let d = strsim::damerau_levenshtein(word, c);
            (d <= limit || strsim::jaro_winkler(word, c) > 0.88).then_some((d, c))
        })
        .min_by_key(|(d, _)| *d)
        .map(|(_, c)| c)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn line_col_and_excerpt() {
        let file = Arc::new(SourceFile {
            path: "p.toml".into(),
            text: "a = 1\n[x]\nepoch = 5\n".into(),
        });
        let start = file.text.find("epoch").expect("present");
        let src = Source::file(&file, Some(start..start + 5));
        assert_eq!(src.location(), "p.toml:3:1");
        assert_eq!(src.excerpt(), "  |\n3 | epoch = 5\n  | ^^^^^");
    }

    #[test]
    fn suggestions() {
        assert_eq!(suggest("epoch", ["epochs", "lr", "batch"]), Some("epochs"));
        assert_eq!(suggest("zzz", ["epochs", "lr"]), None);
        assert_eq!(suggest("sdt", ["seed", "std", "n"]), Some("std"));
    }
}
