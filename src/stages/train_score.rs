//! `train_score`: the score model, for points (a `dataset` input) or images (a `gray_scott` input).
//!
//! Points: the DDPM score model of spec §3 trained on a `dataset` stage's points (this file). Images: the
//! single-noise-level score of Turing fields (`image_score.rs`); `run` dispatches on the input's kind, and
//! `check_wiring` rejects a parameter set for the other kind of input.
//!
//! The stage is thin: it reads the points, calls [`crate::nn::points::train_score_on`] (on `[pipeline] device`) with a progress bar,
//! and writes the checkpoint (the data normalisation goes into its sidecar), the per-epoch losses, and a
//! figure of DDIM samples against the data, whose MMD^2 is a metric (how well the score model learned p).
//! A NaN loss fails the stage with the epoch, and a failed stage commits nothing to the cache.

use anyhow::Context;

use super::points_common::{load_points, loss_panel, subsample};
use std::collections::{BTreeMap, BTreeSet};

use super::image_common::is_image_kind;
use super::{image_score, spread, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::write_json;
use crate::nn::points::{train_score_on, ScoreTrainConfig};
use crate::render::{Figure, PointSet as Scatter, ScatterPlot};
use crate::science::mmd::mmd2_unbiased;

/// The `train_score` kind (points and images).
pub struct TrainScore;

impl StageKind for TrainScore {
    fn name(&self) -> &'static str {
        "train_score"
    }
    fn version(&self) -> u32 {
        4
    }
    fn about(&self) -> &'static str {
        "Points (a `dataset` input): trains the DDPM score MLP of spec §3 ([x, 2t-1] -> 64 -> 64 -> d, ReLU, \
         residual, 100-step cosine schedule); s(x, t) = -eps_hat / sqrt(1 - abar_t). Images (a `gray_scott` \
         or `icons` input): `model = \"local\"` trains a fully convolutional score at the one noise level the flow \
         uses (DDPM timestep 10, σ 0.235) by denoising score matching (with `timestep_max`, noise-conditional: \
         σ as an input channel over the levels from `timestep` up, for annealed starts); `model = \"unet\"` \
         trains the paper's UNet as a 100-step DDPM with v-prediction and reads it at that timestep (an \
         annealed start also at the others); s = -eps_hat / σ."
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut v = vec![
            ParamSpec::input(
                "data",
                "the `dataset` (points) or `gray_scott` (images) stage whose samples are learned",
            ),
            ParamSpec::int(
                "epochs",
                512,
                "(points) passes over the shuffled data (paper: 512)",
            )
            .positive(),
            ParamSpec::int("batch", 0, "batch size (0: points 2048, images 16)").min(0.0),
            ParamSpec::float(
                "lr",
                0.0,
                "peak Adam learning rate (0: points 1e-2, images 3e-3)",
            )
            .min(0.0),
            ParamSpec::float("weight_decay", 1e-5, "(points) L2 weight decay").min(0.0),
            ParamSpec::int(
                "samples",
                2000,
                "(points) DDIM samples drawn for the figure and the MMD check",
            )
            .positive(),
            ParamSpec::seed(),
        ];
        v.extend(image_score::params());
        v
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "score.safetensors",
                "points: the score MLP (F64, PyTorch layout; see nn::points); images: the local score model \
                 or the UNet (F32 weights, architecture in the metadata)",
            ),
            (
                "score.json",
                "its sidecar (points: dataset and normalisation; images: preset and training settings)",
            ),
            ("losses.json", "points: mean batch loss per epoch; images: loss per step"),
            (
                "samples.png",
                "(points) DDIM samples against the data, and the loss curve",
            ),
            (
                "training.png",
                "(images) held-out patterns clean / noised / denoised, and the loss curve",
            ),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        image_score::check(p)
    }
    fn check_wiring(
        &self,
        _p: &Params,
        explicit: &BTreeSet<String>,
        input_kinds: &BTreeMap<String, &'static str>,
    ) -> Vec<(&'static str, String)> {
        wrong_input_params(self.params(), explicit, input_kinds)
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        if is_image_kind(&ctx.input("data")?.kind) {
            return image_score::run(ctx);
        }
        let p = ctx.params;
        let data = load_points(ctx.input("data")?)?;
        let cfg = ScoreTrainConfig {
            epochs: p.usize("epochs"),
            batch: p.float_or_default("batch", 2048.0) as usize,
            lr: p.float_or_default("lr", 1e-2),
            weight_decay: p.float("weight_decay"),
            seed: ctx.seed(),
        };
        ctx.log(format!(
            "training the score on {} points in {}-D, {} epochs",
            data.points.n, data.points.d, cfg.epochs
        ));
        let bar = ctx.progress(cfg.epochs as u64, "epochs");
        let (model, losses) = train_score_on(ctx.device, &data.points, &cfg, &mut |_, loss| {
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

/// The parameters set explicitly that only apply to the other kind of `data` input (docs prefixed
/// "(points)" or "(images)"), each with an error naming the input's kind. Nothing when `data` is not wired.
pub fn wrong_input_params(
    specs: Vec<ParamSpec>,
    explicit: &BTreeSet<String>,
    input_kinds: &BTreeMap<String, &'static str>,
) -> Vec<(&'static str, String)> {
    let Some(input_kind) = input_kinds.get("data") else {
        return Vec::new();
    };
    let images = is_image_kind(input_kind);
    let (other, this) = if images {
        ("(points)", "images")
    } else {
        ("(images)", "points")
    };
    specs
        .into_iter()
        .filter(|s| s.doc.starts_with(other) && explicit.contains(s.name))
        .map(|s| {
            (
                s.name,
                format!(
                    "`{}` only applies to {} inputs, but `data` is a `{input_kind}` stage ({this}); remove it",
                    s.name,
                    &other[1..other.len() - 1]
                ),
            )
        })
        .collect()
}
