//! A small builder that runs the real `eqflow` binary in a temporary directory (ripgrep's `TestCommand`).
#![allow(dead_code)]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

/// A scratch project: a temp dir with `pipelines/` and its own cache.
pub struct Project {
    pub dir: tempfile::TempDir,
}

impl Default for Project {
    fn default() -> Self {
        Self::new()
    }
}

impl Project {
    pub fn new() -> Project {
        let dir = tempfile::tempdir().expect("tempdir");
        std::fs::create_dir_all(dir.path().join("pipelines")).expect("mkdir");
        Project { dir }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    pub fn cache(&self) -> PathBuf {
        self.path().join("cache")
    }

    /// Copies a pipeline shipped in the repository's `pipelines/` into the project.
    pub fn copy_shipped(&self, name: &str) -> String {
        let text =
            std::fs::read_to_string(format!("{}/pipelines/{name}", env!("CARGO_MANIFEST_DIR")))
                .expect("read pipeline");
        self.pipeline(name, &text)
    }

    /// Writes `pipelines/NAME` and returns its path relative to the project.
    pub fn pipeline(&self, name: &str, text: &str) -> String {
        std::fs::write(self.path().join("pipelines").join(name), text).expect("write pipeline");
        format!("pipelines/{name}")
    }

    pub fn cmd(&self, args: &[&str]) -> Command {
        let mut c = Command::new(env!("CARGO_BIN_EXE_eqflow"));
        c.current_dir(self.path())
            .args(args)
            .env_remove("EQFLOW_CACHE")
            .env("EQFLOW_THREADS", "2")
            .env_remove("RUST_LOG");
        c
    }

    pub fn run(&self, args: &[&str]) -> Run {
        Run::from(self.cmd(args).output().expect("spawn eqflow"))
    }

    /// Cache entry directories.
    pub fn entries(&self) -> Vec<PathBuf> {
        let dir = self.cache().join("entries");
        let mut v: Vec<PathBuf> = match std::fs::read_dir(dir) {
            Ok(rd) => rd.map(|e| e.expect("entry").path()).collect(),
            Err(_) => Vec::new(),
        };
        v.sort();
        v
    }

    /// The entry directory of a stage, via `eqflow show`.
    pub fn show(&self, file: &str, stage: &str) -> PathBuf {
        self.show_with(file, stage, &[])
    }

    /// The output folder of `stage` when the pipeline runs with `overrides` (`--set` flags, profiles).
    pub fn show_with(&self, file: &str, stage: &str, overrides: &[&str]) -> PathBuf {
        let r = self.run(&with_overrides(&["show", file, stage], overrides, &[]));
        assert!(r.ok(), "show failed: {}", r.stderr);
        PathBuf::from(r.stdout.trim())
    }
}

/// A command line: `first`, then the overrides a test shrinks a shipped pipeline with, then `extra`.
pub fn with_overrides<'a>(
    first: &[&'a str],
    overrides: &[&'a str],
    extra: &[&'a str],
) -> Vec<&'a str> {
    [first, overrides, extra].concat()
}

pub struct Run {
    pub code: i32,
    pub stdout: String,
    pub stderr: String,
}

impl From<Output> for Run {
    fn from(o: Output) -> Run {
        Run {
            code: o.status.code().unwrap_or(-1),
            stdout: String::from_utf8_lossy(&o.stdout).into_owned(),
            stderr: String::from_utf8_lossy(&o.stderr).into_owned(),
        }
    }
}

impl Run {
    pub fn ok(&self) -> bool {
        self.code == 0
    }

    /// Labels of the stages that ran (from the summary table).
    pub fn ran(&self) -> Vec<String> {
        self.rows("ran")
    }

    pub fn cached(&self) -> Vec<String> {
        self.rows("cached")
    }

    fn rows(&self, status: &str) -> Vec<String> {
        let mut v: Vec<String> = self
            .stdout
            .lines()
            .filter_map(|l| {
                let cols: Vec<&str> = l.split_whitespace().collect();
                (cols.len() >= 3 && cols[2] == status).then(|| cols[0].to_string())
            })
            .collect();
        v.sort();
        v
    }

    pub fn assert_ok(&self) -> &Run {
        assert!(
            self.ok(),
            "eqflow failed ({}):\nstdout:\n{}\nstderr:\n{}",
            self.code,
            self.stdout,
            self.stderr
        );
        self
    }
}

/// The `metrics.json` of a cache entry directory.
pub fn metrics(dir: &Path) -> serde_json::Value {
    serde_json::from_str(&std::fs::read_to_string(dir.join("metrics.json")).expect("metrics"))
        .expect("json")
}

/// Asserts that a metric carries its spread (`mean`, `std`, `n`).
pub fn assert_spread(v: &serde_json::Value, what: &str) {
    for k in ["mean", "std", "n"] {
        assert!(v[k].is_number(), "{what} lacks `{k}`: {v}");
    }
}
