//! Stage kinds: the thin seam between the pipeline machinery and the science.
//!
//! A kind declares its parameter schema (validated before anything runs), an implementation version (bumped
//! when its semantics change, so old cache entries stop matching), and `run`, which reads its inputs'
//! files, calls into `science`/`nn`, and writes files into its output directory. One file per kind; the
//! registry (`registry.rs`) lists them in one place.

use std::collections::{BTreeMap, BTreeSet};
use std::fmt::Display;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use crate::config::{ParamSpec, Params};
use crate::science::rng;

pub mod registry;

pub mod alife_common;
pub mod alife_simulate;
pub mod dataset;
pub mod evaluate_alignment;
pub mod evaluate_behaviour;
pub mod evaluate_chaos;
pub mod evaluate_flow;
pub mod gray_scott;
pub mod icons;
pub mod image_common;
pub mod image_dynamics;
pub mod image_flow;
pub mod image_score;
pub mod points_common;
pub mod simulate;
pub mod track;
pub mod train_dynamics;
pub mod train_score;
pub mod training_free;

pub use registry::{all_kinds, find_kind};

/// One kind of stage (e.g. `dataset`, `train_score`).
pub trait StageKind: Send + Sync {
    /// The name used in `kind = "..."`.
    fn name(&self) -> &'static str;
    /// Implementation version, part of every cache key: bump it when outputs change for the same parameters.
    fn version(&self) -> u32;
    /// One paragraph for the documentation.
    fn about(&self) -> &'static str;
    /// The parameter schema (inputs are parameters of type `Input`).
    fn params(&self) -> Vec<ParamSpec>;
    /// The files it writes, with one line each, for the documentation.
    fn outputs(&self) -> Vec<(&'static str, &'static str)>;
    /// Checks between parameters that the schema cannot express: `(key, message)` pairs.
    fn check(&self, _params: &Params) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Checks that depend on how the stage is wired: the kinds of its inputs (input parameter -> upstream
    /// kind) and the keys the pipeline set explicitly (not defaults). Kinds that accept several input kinds
    /// (points vs images) reject here a parameter that only applies to the other one. `(key, message)` pairs.
    fn check_wiring(
        &self,
        _params: &Params,
        _explicit: &BTreeSet<String>,
        _input_kinds: &BTreeMap<String, &'static str>,
    ) -> Vec<(&'static str, String)> {
        Vec::new()
    }
    /// Does the work.
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()>;
}

/// An upstream stage's finished outputs.
#[derive(Debug, Clone)]
pub struct InputArtifact {
    /// The upstream stage instance.
    pub stage: String,
    /// Its kind.
    pub kind: String,
    /// Its committed cache entry directory.
    pub dir: PathBuf,
}

/// A live progress indicator for long work inside a stage.
pub trait Progress: Send {
    /// Advances by `n`.
    fn inc(&self, n: u64);
    /// Replaces the trailing message (e.g. the current loss).
    fn message(&self, msg: String);
    /// Ends the indicator.
    fn finish(&self);
}

/// Creates progress indicators; exec decides whether they are bars or plain lines.
pub trait ProgressFactory: Send + Sync {
    /// A new indicator for `total` units of `what` in `stage`.
    fn create(&self, stage: &str, total: u64, what: &str) -> Box<dyn Progress>;
}

/// What a running stage can see and do.
pub struct StageContext<'a> {
    /// The stage instance's label (`score`, or `dynamics[seed=3]` in a sweep).
    pub label: &'a str,
    /// Resolved parameters.
    pub params: &'a Params,
    /// Inputs by parameter name.
    pub inputs: &'a BTreeMap<String, InputArtifact>,
    /// The directory the stage writes into (a temporary directory, committed when `run` succeeds).
    pub out_dir: &'a Path,
    /// The directory of the pipeline file, against which path parameters are resolved.
    pub pipeline_dir: &'a Path,
    /// The kind's name (part of every RNG stream).
    pub kind: &'static str,
    /// Where dfdx tensor work runs (`[pipeline] device`); stages without dfdx work ignore it.
    pub device: crate::nn::device::ComputeDevice,
    pub(crate) log_lines: &'a Mutex<Vec<String>>,
    pub(crate) progress: &'a dyn ProgressFactory,
    pub(crate) metrics: serde_json::Map<String, serde_json::Value>,
}

impl<'a> StageContext<'a> {
    /// The committed directory of input `name`.
    pub fn input(&self, name: &str) -> anyhow::Result<&InputArtifact> {
        self.inputs
            .get(name)
            .ok_or_else(|| anyhow::anyhow!("stage `{}` has no input `{name}`", self.label))
    }

    /// Every upstream stage of list input `name` (see [`crate::config::ParamType::InputList`]), in order.
    pub fn input_list(&self, name: &str) -> anyhow::Result<Vec<&InputArtifact>> {
        let mut items: Vec<(usize, &InputArtifact)> = self
            .inputs
            .iter()
            .filter_map(|(k, a)| {
                crate::config::split_list_input_key(k)
                    .and_then(|(n, i)| (n == name).then_some((i, a)))
            })
            .collect();
        if items.is_empty() {
            anyhow::bail!("stage `{}` has no input list `{name}`", self.label);
        }
        items.sort_by_key(|(i, _)| *i);
        Ok(items.into_iter().map(|(_, a)| a).collect())
    }

    /// An optional input.
    pub fn opt_input(&self, name: &str) -> Option<&InputArtifact> {
        self.inputs.get(name)
    }

    /// A path inside the output directory.
    pub fn output(&self, file: &str) -> PathBuf {
        self.out_dir.join(file)
    }

    /// A path parameter resolved against the pipeline file's directory.
    pub fn path_param(&self, key: &str) -> PathBuf {
        self.pipeline_dir.join(self.params.str(key))
    }

    /// The stage's seed (`seed` parameter).
    pub fn seed(&self) -> u64 {
        self.params.u64("seed")
    }

    /// A random stream named `stream`, determined by the seed and the kind.
    pub fn rng(&self, stream: &str) -> rng::Rng {
        rng::stream(self.seed(), &format!("{}/{stream}", self.kind))
    }

    /// Writes a line to the stage's log (kept in the cache entry as `log.txt`) and to the terminal log.
    pub fn log(&self, msg: impl Display) {
        let line = msg.to_string();
        tracing::info!(stage = self.label, "{line}");
        self.log_lines.lock().expect("log lock poisoned").push(line);
    }

    /// Records a metric (saved in `metrics.json`). Values must be deterministic: no timings here.
    pub fn metric(&mut self, key: &str, value: impl Into<serde_json::Value>) {
        self.metrics.insert(key.to_string(), value.into());
    }

    /// A progress indicator for `total` units of `what`.
    pub fn progress(&self, total: u64, what: &str) -> Box<dyn Progress> {
        self.progress.create(self.label, total, what)
    }
}

/// The mean of `v`, 0 for an empty list (a frame with no creatures, a rollout with no frames).
pub(crate) fn mean_or_zero(v: &[f64]) -> f64 {
    v.iter().sum::<f64>() / v.len().max(1) as f64
}

/// Summary statistics of a metric over seeds or patterns, as every reported number must carry its spread.
pub fn spread(values: &[f64]) -> serde_json::Value {
    let n = values.len();
    if n == 0 {
        return serde_json::json!({ "n": 0 });
    }
    let mean = values.iter().sum::<f64>() / n as f64;
    let var = if n > 1 {
        values.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / (n - 1) as f64
    } else {
        0.0
    };
    let mut sorted = values.to_vec();
    sorted.sort_by(f64::total_cmp);
    let median = if n % 2 == 1 {
        sorted[n / 2]
    } else {
        0.5 * (sorted[n / 2 - 1] + sorted[n / 2])
    };
    serde_json::json!({
        "mean": mean, "std": var.sqrt(), "n": n, "min": sorted[0], "median": median, "max": sorted[n - 1],
    })
}
