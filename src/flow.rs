//! Learned dynamics as a reusable artifact: load a flow that a pipeline made (a `train_dynamics` or a
//! `training_free` stage on points) and evaluate `v(x) = dx/dt` on your own points, or integrate
//! trajectories, from Rust — the same code `eqflow flow` uses.
//!
//! Units: flows are trained on the dataset as the `dataset` stage wrote it (standardised for lorenz,
//! two_moons and user files). [`Units::Data`] takes and returns points in the units of the original
//! snapshots (x_model = (x - mean) / std, dx/dt = std * v_model); [`Units::Model`] skips the conversion.
//!
//! ```no_run
//! use eqflow::flow::{PointFlow, Units};
//! // The directory printed by `eqflow show pipelines/two_peaks.toml dynamics`:
//! let flow = PointFlow::load_learned(std::path::Path::new("cache/entries/KEY/flow.safetensors")).unwrap();
//! let v = flow.velocity(&[0.5, -0.2, 1.0, 1.0], Units::Data).unwrap(); // two 2-D points
//! let path = flow.trajectory(&[0.5, -0.2], 100, 0.1, Units::Data).unwrap(); // 101 states
//! assert_eq!((v.len(), path.len()), (4, 202));
//! ```

use std::path::Path;

use anyhow::{bail, Context};

use crate::nn::points::{FlowModel, ScoreModel};
use crate::science::integrators::rk4_step;
use crate::science::points::Standardization;

/// The units of points given to and returned by a flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Units {
    /// The units of the original snapshots.
    Data,
    /// The standardised units the model works in.
    Model,
}

/// A velocity field on points.
pub enum PointFlow {
    /// A trained flow network (`train_dynamics`).
    Learned {
        /// The network.
        model: FlowModel,
        /// The dataset's normalisation.
        norm: Standardization,
    },
    /// `v = D s(x, t)` with a skew matrix D (`training_free`).
    Skew {
        /// Row-major d x d.
        matrix: Vec<f64>,
        /// The score model.
        score: ScoreModel,
        /// The noise level the score is taken at.
        t: f64,
        /// The dataset's normalisation.
        norm: Standardization,
    },
}

fn norm_from(extra: &serde_json::Value, d: usize) -> Standardization {
    let n = &extra["normalization"];
    let vec_of = |k: &str, default: f64| -> Vec<f64> {
        n[k].as_array()
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(default)).collect())
            .unwrap_or_else(|| vec![default; d])
    };
    Standardization {
        mean: vec_of("mean", 0.0),
        std: vec_of("std", 1.0),
    }
}

impl PointFlow {
    /// Loads a `train_dynamics` checkpoint (`flow.safetensors`, with its JSON sidecar beside it).
    pub fn load_learned(path: &Path) -> anyhow::Result<PointFlow> {
        let (model, extra) = FlowModel::load(path)?;
        let norm = norm_from(&extra, model.d);
        Ok(PointFlow::Learned { model, norm })
    }

    /// Loads a `training_free` flow: its entry directory (`skew.json`) and its score stage's entry directory.
    pub fn load_skew(entry: &Path, score_entry: &Path) -> anyhow::Result<PointFlow> {
        let skew: serde_json::Value = crate::io::read_json(&entry.join("skew.json"))?;
        let matrix: Vec<f64> = skew["matrix"]
            .as_array()
            .context("skew.json lacks `matrix`")?
            .iter()
            .filter_map(|v| v.as_f64())
            .collect();
        let t = skew["noise"].as_f64().context("skew.json lacks `noise`")?;
        let (score, extra) = ScoreModel::load(&score_entry.join("score.safetensors"))?;
        if matrix.len() != score.d * score.d {
            bail!(
                "{}: a {}x{} skew matrix does not fit a {}-D score model",
                entry.display(),
                skew["d"],
                skew["d"],
                score.d
            );
        }
        let norm = norm_from(&extra, score.d);
        Ok(PointFlow::Skew {
            matrix,
            score,
            t,
            norm,
        })
    }

    /// Loads the flow of a cache entry made by stage kind `kind`; `score_entry` is needed for `training_free`.
    pub fn from_entry(
        kind: &str,
        entry: &Path,
        score_entry: Option<&Path>,
    ) -> anyhow::Result<PointFlow> {
        match kind {
            "train_dynamics" => Self::load_learned(&entry.join("flow.safetensors")),
            "training_free" => Self::load_skew(entry, score_entry.context("a training_free flow needs its score stage")?),
            other => bail!("a `{other}` stage is not a flow on points (use a train_dynamics or training_free stage)"),
        }
    }

    /// The dimension of the points.
    pub fn dim(&self) -> usize {
        match self {
            PointFlow::Learned { model, .. } => model.d,
            PointFlow::Skew { score, .. } => score.d,
        }
    }

    fn norm(&self) -> &Standardization {
        match self {
            PointFlow::Learned { norm, .. } | PointFlow::Skew { norm, .. } => norm,
        }
    }

    /// `v` at one point in model units.
    pub fn velocity_model(&self, y: &[f64], out: &mut [f64]) {
        match self {
            PointFlow::Learned { model, .. } => model.velocity_one(y, out),
            PointFlow::Skew {
                matrix, score, t, ..
            } => {
                let d = score.d;
                let mut s = vec![0.0; d];
                score.score_one(y, *t, &mut s);
                for (i, o) in out.iter_mut().enumerate() {
                    *o = (0..d).map(|j| matrix[i * d + j] * s[j]).sum();
                }
            }
        }
    }

    /// `dx/dt` at one point in the given units.
    pub fn velocity_one(&self, x: &[f64], units: Units, out: &mut [f64]) {
        match units {
            Units::Model => self.velocity_model(x, out),
            Units::Data => {
                let norm = self.norm();
                let y: Vec<f64> = x
                    .iter()
                    .enumerate()
                    .map(|(k, v)| (v - norm.mean[k]) / norm.std[k])
                    .collect();
                self.velocity_model(&y, out);
                for (k, o) in out.iter_mut().enumerate() {
                    *o *= norm.std[k];
                }
            }
        }
    }

    fn check(&self, len: usize) -> anyhow::Result<usize> {
        let d = self.dim();
        if !len.is_multiple_of(d) {
            bail!("the points have {len} values, not a multiple of the flow's dimension {d}");
        }
        Ok(len / d)
    }

    /// `dx/dt` at a batch of points (row-major n x d, f64).
    pub fn velocity(&self, x: &[f64], units: Units) -> anyhow::Result<Vec<f64>> {
        use rayon::prelude::*;
        self.check(x.len())?;
        let d = self.dim();
        let mut out = vec![0.0; x.len()];
        out.par_chunks_mut(d)
            .zip(x.par_chunks(d))
            .for_each(|(o, p)| self.velocity_one(p, units, o));
        Ok(out)
    }

    /// `dx/dt` at a batch of f32 points (computed in f64).
    pub fn velocity_f32(&self, x: &[f32], units: Units) -> anyhow::Result<Vec<f32>> {
        let x64: Vec<f64> = x.iter().map(|&v| v as f64).collect();
        Ok(self
            .velocity(&x64, units)?
            .into_iter()
            .map(|v| v as f32)
            .collect())
    }

    /// RK4 trajectories from a batch of starts: `steps + 1` states of n x d each, row-major
    /// `[steps + 1, n, d]` (the first state is the start).
    pub fn trajectory(
        &self,
        x0: &[f64],
        steps: usize,
        dt: f64,
        units: Units,
    ) -> anyhow::Result<Vec<f64>> {
        use rayon::prelude::*;
        let n = self.check(x0.len())?;
        let d = self.dim();
        let field = |x: &[f64], out: &mut [f64]| self.velocity_one(x, units, out);
        let paths: Vec<Vec<f64>> = (0..n)
            .into_par_iter()
            .map(|i| {
                let mut x = x0[i * d..(i + 1) * d].to_vec();
                let mut next = vec![0.0; d];
                let mut path = Vec::with_capacity((steps + 1) * d);
                path.extend_from_slice(&x);
                for _ in 0..steps {
                    rk4_step(&field, &x, dt, &mut next);
                    std::mem::swap(&mut x, &mut next);
                    path.extend_from_slice(&x);
                }
                path
            })
            .collect();
        let mut out = vec![0.0; (steps + 1) * n * d];
        for (i, p) in paths.iter().enumerate() {
            for s in 0..=steps {
                out[(s * n + i) * d..(s * n + i + 1) * d].copy_from_slice(&p[s * d..(s + 1) * d]);
            }
        }
        Ok(out)
    }
}
