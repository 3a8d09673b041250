//! Helpers shared by the low-dimensional (points) stage kinds: reading a `dataset` stage's points and
//! normalisation, loading score and flow checkpoints from upstream stages, seeded subsampling, and the
//! small figures every points stage draws (loss curves, streamlines over data).
//!
//! The points kinds (`train_score`, `train_dynamics`, `training_free`, `evaluate_flow`,
//! `evaluate_chaos`) take their data from a `dataset` stage; reading it through [`load_points`] checks
//! that, so wiring an image dataset into them fails with a clear message.

use std::path::Path;

use anyhow::{bail, Context};
use rand::seq::SliceRandom;

use super::InputArtifact;
use crate::io::read_tensors;
use crate::nn::points::{FlowModel, ScoreModel};
use crate::render::{FieldGrid, Figure, LinePlot, Panel, Series, StreamPlot};
use crate::science::points::{PointSet, Standardization};
use crate::science::rng;

/// The points of a `dataset` stage with their metadata.
pub struct PointsData {
    /// The (possibly standardised) points.
    pub points: PointSet,
    /// The dataset's name (`two_peaks`, `lorenz`, ...).
    pub name: String,
    /// The per-axis normalisation that was removed (identity if not standardised).
    pub norm: Standardization,
    /// The normalisation as JSON (kept in checkpoints' sidecars).
    pub norm_json: serde_json::Value,
}

/// Reads `data.safetensors` of a `dataset` stage.
pub fn load_points(input: &InputArtifact) -> anyhow::Result<PointsData> {
    if input.kind != "dataset" {
        bail!(
            "input `{}` is a `{}` stage; the points kinds need a `dataset` stage",
            input.stage,
            input.kind
        );
    }
    let f = read_tensors(&input.dir.join("data.safetensors"))?;
    let (shape, data) = f.f64("x", 2)?;
    let meta = f.metadata();
    let norm_json: serde_json::Value = meta
        .get("normalization")
        .map(|s| serde_json::from_str(s))
        .transpose()
        .context("dataset normalisation metadata")?
        .unwrap_or(serde_json::Value::Null);
    let d = shape[1];
    let vec_of = |k: &str, fill: f64| -> Vec<f64> {
        norm_json[k]
            .as_array()
            .map(|a| a.iter().map(|v| v.as_f64().unwrap_or(fill)).collect())
            .unwrap_or_else(|| vec![fill; d])
    };
    Ok(PointsData {
        points: PointSet::new(shape[0], d, data),
        name: meta.get("dataset").cloned().unwrap_or_default(),
        norm: Standardization {
            mean: vec_of("mean", 0.0),
            std: vec_of("std", 1.0),
        },
        norm_json,
    })
}

/// The score model of a `train_score` stage.
pub fn load_score(input: &InputArtifact) -> anyhow::Result<ScoreModel> {
    if input.kind != "train_score" {
        bail!(
            "input `{}` is a `{}` stage, not `train_score`",
            input.stage,
            input.kind
        );
    }
    Ok(ScoreModel::load(&input.dir.join("score.safetensors"))?.0)
}

/// The flow model of a `train_dynamics` stage and its sidecar `extra`.
pub fn load_flow(input: &InputArtifact) -> anyhow::Result<(FlowModel, serde_json::Value)> {
    if input.kind != "train_dynamics" {
        bail!(
            "input `{}` is a `{}` stage, not `train_dynamics`",
            input.stage,
            input.kind
        );
    }
    FlowModel::load(&input.dir.join("flow.safetensors"))
}

/// `m` rows of `pts` drawn without replacement from stream `name` of `seed` (all rows if `m >= n`).
pub fn subsample(pts: &PointSet, m: usize, seed: u64, name: &str) -> PointSet {
    if m >= pts.n {
        return pts.clone();
    }
    let mut idx: Vec<usize> = (0..pts.n).collect();
    idx.shuffle(&mut rng::stream(seed, name));
    idx.truncate(m);
    pts.select(&idx)
}

/// First two coordinates of every row.
pub fn xy(pts: &PointSet) -> Vec<[f64; 2]> {
    (0..pts.n).map(|i| [pts.row(i)[0], pts.row(i)[1]]).collect()
}

/// A loss-per-epoch panel (log y when every loss is positive).
pub fn loss_panel(title: &str, losses: &[f64]) -> Panel {
    let x: Vec<f64> = (1..=losses.len()).map(|e| e as f64).collect();
    let plot = LinePlot::new(title, "epoch", "mean batch loss").series(Series::new(
        "loss",
        x,
        losses.to_vec(),
    ));
    if losses.iter().all(|l| *l > 0.0) {
        plot.log_y().panel()
    } else {
        plot.panel()
    }
}

/// Writes a one-panel loss figure.
pub fn save_loss_figure(title: &str, losses: &[f64], path: &Path) -> anyhow::Result<()> {
    Figure::row(vec![loss_panel(title, losses)])
        .panel_size(700, 450)
        .save_png(path)?;
    Ok(())
}

/// The spec's streamline window: a 20x20 grid over [-3, 3]^2.
pub const GRID: ((f64, f64), (f64, f64), usize) = ((-3.0, 3.0), (-3.0, 3.0), 20);

/// Streamlines of a 2-D field `f` (evaluated at all grid points in one call) over `data` points.
pub fn stream_panel(
    title: &str,
    data: Vec<[f64; 2]>,
    f: impl Fn(&PointSet) -> PointSet,
) -> anyhow::Result<StreamPlot> {
    let (xr, yr, n) = GRID;
    let grid = FieldGrid::points(xr, yr, n, n);
    let pts = PointSet::new(
        grid.len(),
        2,
        grid.iter().flat_map(|p| [p[0], p[1]]).collect(),
    );
    let v = f(&pts);
    let field = FieldGrid::new(xr, yr, n, n, xy(&v))?;
    Ok(StreamPlot::new(title, field).data(data))
}
