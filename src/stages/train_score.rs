//! `train_score` (points): the DDPM score model of spec §3 trained on a `dataset` stage's points.
//!
//! The stage is thin: it reads the points, calls [`crate::nn::points::train_score`] with a progress bar,
//! and writes the checkpoint (the data normalisation goes into its sidecar), the per-epoch losses, and a
//! figure of DDIM samples against the data, whose MMD^2 is a metric (how well the score model learned p).
//! A NaN loss fails the stage with the epoch, and a failed stage commits nothing to the cache.

use anyhow::Context;

use super::points_common::{load_points, loss_panel, subsample};
use super::{spread, StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::write_json;
use crate::nn::points::{train_score, ScoreTrainConfig};
use crate::render::{Figure, PointSet as Scatter, ScatterPlot};
use crate::science::mmd::mmd2_unbiased;

/// The `train_score` kind (points).
pub struct TrainScore;

impl StageKind for TrainScore {
    fn name(&self) -> &'static str {
        "train_score"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "Points: trains the DDPM score MLP of spec §3 ([x, 2t-1] -> 64 -> 64 -> d, ReLU, residual, 100-step \
         cosine schedule) on a `dataset` stage; s(x, t) = -eps_hat / sqrt(1 - abar_t)."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("data", "the `dataset` stage whose points are learned"),
            ParamSpec::int("epochs", 512, "passes over the shuffled data (paper: 512)").positive(),
            ParamSpec::int("batch", 2048, "batch size").min(2.0),
            ParamSpec::float("lr", 1e-2, "Adam learning rate").positive(),
            ParamSpec::float("weight_decay", 1e-5, "L2 weight decay").min(0.0),
            ParamSpec::int(
                "samples",
                2000,
                "DDIM samples drawn for the figure and the MMD check",
            )
            .positive(),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "score.safetensors",
                "the score MLP (F64, PyTorch layout; see nn::points)",
            ),
            (
                "score.json",
                "its sidecar; `extra` holds the dataset name and normalisation",
            ),
            ("losses.json", "mean batch loss per epoch"),
            (
                "samples.png",
                "DDIM samples against the data, and the loss curve",
            ),
        ]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let data = load_points(ctx.input("data")?)?;
        let cfg = ScoreTrainConfig {
            epochs: p.usize("epochs"),
            batch: p.usize("batch"),
            lr: p.float("lr"),
            weight_decay: p.float("weight_decay"),
            seed: ctx.seed(),
        };
        ctx.log(format!(
            "training the score on {} points in {}-D, {} epochs",
            data.points.n, data.points.d, cfg.epochs
        ));
        let bar = ctx.progress(cfg.epochs as u64, "epochs");
        let (model, losses) = train_score(&data.points, &cfg, &mut |_, loss| {
            bar.inc(1);
            bar.message(format!("loss {loss:.4}"));
        })
        .with_context(|| format!("{}: score training failed", ctx.label))?;
        bar.finish();
        let extra = serde_json::json!({ "dataset": data.name, "normalization": data.norm_json, "train": cfg });
        model.save(&ctx.output("score.safetensors"), extra)?;
        write_json(&ctx.output("losses.json"), &losses)?;

        let m = p.usize("samples");
        let samples = model.sample(m, ctx.seed());
        let reference = subsample(&data.points, m, ctx.seed(), "train_score/reference");
        let mmd = mmd2_unbiased(&samples, &reference, 0.5);
        let tail = &losses[losses.len().saturating_sub(10)..];
        ctx.metric("loss_final", *losses.last().expect("at least one epoch"));
        ctx.metric("loss_last10", spread(tail));
        ctx.metric("loss_first", losses[0]);
        ctx.metric("epochs", losses.len());
        ctx.metric("sample_mmd2", mmd);
        ctx.metric("sample_mean", samples.moments().mean);
        ctx.metric("sample_std", samples.moments().std);
        ctx.log(format!(
            "final loss {:.4}; MMD^2(samples, data) = {mmd:.5}",
            losses.last().expect("epochs > 0")
        ));

        let (a, b) = if data.points.d >= 3 {
            (0, 2)
        } else {
            (0, 1.min(data.points.d - 1))
        };
        let proj = |s: &crate::science::points::PointSet| -> Vec<[f64; 2]> {
            (0..s.n).map(|i| [s.row(i)[a], s.row(i)[b]]).collect()
        };
        let scatter = ScatterPlot::new(
            format!("{}: data vs {m} DDIM samples (MMD² {mmd:.4})", data.name),
            format!("x{}", a + 1),
            format!("x{}", b + 1),
        )
        .points(Scatter::background("data", proj(&reference)))
        .points(Scatter::new("samples", proj(&samples)))
        .panel();
        Figure::row(vec![scatter, loss_panel("score loss", &losses)])
            .panel_size(560, 500)
            .title(format!("train_score on {}", data.name))
            .save_png(&ctx.output("samples.png"))?;
        Ok(())
    }
}
