//! `train_dynamics`: learns a flow v with div v + v·s = 0 (spec §2), for points (a `dataset` input, this
//! file) or images (a `gray_scott` input: the trained local Turing flow, `image_dynamics.rs`); `run`
//! dispatches on the data input's kind and `check_wiring` rejects a parameter set for the other kind.
//!
//! Points: //! Writes the checkpoint (the dataset normalisation and the training settings in its sidecar), the losses,
//! and figures. For 2-D data: the flow's streamlines over 256 data points (Fig. 2) and the score / flow /
//! SDE three-panel figure of spec §9 (score at the training noise level, the learned flow, and
//! v + eta s with four Euler-Maruyama paths from (±2, ±2)).

use std::collections::{BTreeMap, BTreeSet};

use anyhow::Context;

use super::image_common::is_image_kind;
use super::image_dynamics;
use super::train_score::wrong_input_params;

use super::points_common::{
    load_points, load_score, save_loss_figure, stream_panel, subsample, xy,
};
use super::{spread, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::write_json;
use crate::nn::points::{train_dynamics_on, Divergence, DynamicsTrainConfig, Network};
use crate::render::{Figure, Polyline};
use crate::science::integrators::euler_maruyama;
use crate::science::points::PointSet;

/// The `train_dynamics` kind (points and images).
pub struct TrainDynamics;

impl StageKind for TrainDynamics {
    fn name(&self) -> &'static str {
        "train_dynamics"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "Points (a `dataset` input): trains a flow network v (kernel: positional encoding + 2 SiLU layers + \
         output batch-norm; or mlp) to minimise mean (div v + v·s)^2 on noised data, s from a `train_score` \
         stage (spec §2). Images (a `gray_scott` input): trains the local Turing flow (isotropic 3x3 stencil \
         2->C, BN, SiLU, 1x1, BN, SiLU, 1x1 C->2, BN without affine) on mean(r1·r2)/mean|v|² with 2 + 2 \
         Hutchinson probes at the score's noise level (spec §7), tracking its cosine with the true rates."
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut v = vec![
            ParamSpec::input(
                "data",
                "the `dataset` (points) or `gray_scott` (images) stage",
            ),
            ParamSpec::input("score", "the `train_score` stage trained on the same data"),
            ParamSpec::choice(
                "network",
                &["kernel", "mlp"],
                "kernel",
                "(points) flow architecture",
            ),
            ParamSpec::choice(
                "divergence",
                &["hutchinson", "exact"],
                "hutchinson",
                "(points) div v by Hutchinson probes, or exactly (d tangent passes; d <= 3)",
            ),
            ParamSpec::int(
                "probes",
                0,
                "Hutchinson probes (0: points 10 per sample; images 2 per estimate, two estimates)",
            )
            .min(0.0),
            ParamSpec::float(
                "noise",
                0.1,
                "(points) noise time t of the data and the score (2-D 0.1, Lorenz 0.2)",
            )
            .probability(),
            ParamSpec::int(
                "epochs",
                1024,
                "(points) passes over the shuffled data (paper: 1024 for 2-D, 512 for Lorenz)",
            )
            .positive(),
            ParamSpec::float("lr", 1e-2, "peak Adam(W) learning rate").positive(),
            ParamSpec::float(
                "weight_decay",
                -1.0,
                "weight decay (negative: points L2 1e-5, images AdamW 0.01)",
            ),
            ParamSpec::int("batch", 0, "batch size (0: points 2048, images 8 crops)").min(0.0),
            ParamSpec::float(
                "sde_eta",
                0.25,
                "(points) 2-D figure: eta of the SDE dx = (v + eta s) dt + sqrt(2 eta) dW",
            )
            .min(0.0),
            ParamSpec::seed(),
        ];
        v.extend(image_dynamics::params());
        v
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "flow.safetensors",
                "the flow network (points: F64, PyTorch layout; images: F32 conv weights, architecture in the \
                 metadata; both with running batch-norm statistics)",
            ),
            (
                "flow.json",
                "(points) its sidecar; `extra` holds dataset, normalisation and the training settings",
            ),
            ("losses.json", "(points) mean batch loss per epoch"),
            ("loss.png", "(points) the loss curve"),
            (
                "streamlines.png",
                "(points) 2-D: streamlines of v on a 20x20 grid over [-3,3]^2 over 256 data points",
            ),
            (
                "score_flow_sde.png",
                "(points) 2-D: streamlines of the score, of v, and of v + eta s with 4 SDE paths",
            ),
            (
                "flow.safetensors.json",
                "(images) the checkpoint's sidecar (architecture, tensor list); `flow.json` is points only",
            ),
            (
                "training.json",
                "(images) settings, loss per step, validation losses, the cosine curve, final cosines",
            ),
            (
                "curves.png",
                "(images) loss and cos(v, true rates) over training (mean ± std over held-out patterns)",
            ),
            (
                "flow_map.png",
                "(images) the Δx/Δt map: v at a held-out pattern beside the true Gray-Scott rates",
            ),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        let mut out = image_dynamics::check(p);
        if p.usize("batch") == 1 {
            out.push(("batch", "must be 0 (the default) or at least 2".to_string()));
        }
        out
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
            return image_dynamics::run(ctx);
        }
        let p = ctx.params;
        let data = load_points(ctx.input("data")?)?;
        let score = load_score(ctx.input("score")?)?;
        let cfg = DynamicsTrainConfig {
            network: if p.str("network") == "mlp" {
                Network::Mlp
            } else {
                Network::Kernel
            },
            probes: match p.usize("probes") {
                0 => 10,
                n => n,
            },
            divergence: if p.str("divergence") == "exact" {
                Divergence::Exact
            } else {
                Divergence::Hutchinson
            },
            noise: p.float("noise"),
            epochs: p.usize("epochs"),
            lr: p.float("lr"),
            weight_decay: match p.float("weight_decay") {
                d if d < 0.0 => 1e-5,
                d => d,
            },
            batch: match p.usize("batch") {
                0 => 2048,
                n => n,
            },
            seed: ctx.seed(),
        };
        // The data dimension is known only from the upstream dataset, so this is checked here, before
        // any training, rather than at config time.
        if cfg.divergence == Divergence::Exact && data.points.d > 3 {
            anyhow::bail!(
                "`divergence = \"exact\"` needs d <= 3 but dataset `{}` is {}-dimensional; use \"hutchinson\"",
                data.name,
                data.points.d
            );
        }
        ctx.log(format!(
            "training a {} flow on {} points in {}-D: {} epochs, batch {}, t = {}",
            cfg.network.name(),
            data.points.n,
            data.points.d,
            cfg.epochs,
            cfg.batch,
            cfg.noise
        ));
        let bar = ctx.progress(cfg.epochs as u64, "epochs");
        let (flow, losses) =
            train_dynamics_on(ctx.device, &data.points, &score, &cfg, &mut |_, loss| {
                bar.inc(1);
                bar.message(format!("loss {loss:.4}"));
            })
            .with_context(|| format!("{}: dynamics training failed", ctx.label))?;
        bar.finish();
        let extra = serde_json::json!({ "dataset": data.name, "normalization": data.norm_json, "train": cfg });
        flow.save(&ctx.output("flow.safetensors"), extra)?;
        write_json(&ctx.output("losses.json"), &losses)?;
        save_loss_figure(
            &format!("train_dynamics {}: (div v + v·s)²", data.name),
            &losses,
            &ctx.output("loss.png"),
        )?;

        let tail = &losses[losses.len().saturating_sub(10)..];
        ctx.metric("loss_final", *losses.last().expect("at least one epoch"));
        ctx.metric("loss_last10", spread(tail));
        ctx.metric("loss_first", losses[0]);
        ctx.metric("epochs", losses.len());
        let sample = subsample(&data.points, 1024, ctx.seed(), "train_dynamics/speed");
        let v = flow.velocity(&sample);
        let speeds: Vec<f64> = (0..v.n)
            .map(|i| v.row(i).iter().map(|x| x * x).sum::<f64>().sqrt())
            .collect();
        ctx.metric("speed_on_data", spread(&speeds));

        if data.points.d == 2 {
            let shown = xy(&subsample(
                &data.points,
                256,
                ctx.seed(),
                "train_dynamics/shown",
            ));
            let learned = stream_panel(
                &format!("learned flow on {}", data.name),
                shown.clone(),
                |x| flow.velocity(x),
            )?;
            Figure::row(vec![learned.clone().panel()])
                .panel_size(640, 640)
                .save_png(&ctx.output("streamlines.png"))?;
            let t = cfg.noise;
            let eta = p.float("sde_eta");
            let score_panel = stream_panel(&format!("score s(x, t={t})"), shown.clone(), |x| {
                score.score(x, t)
            })?;
            let drift = |x: &PointSet| {
                let (mut v, s) = (flow.velocity(x), score.score(x, t));
                v.data
                    .iter_mut()
                    .zip(&s.data)
                    .for_each(|(a, b)| *a += eta * b);
                v
            };
            let mut sde = stream_panel(
                &format!("v + {eta} s with Euler-Maruyama paths"),
                shown,
                drift,
            )?;
            let starts = PointSet::new(4, 2, vec![-2.0, -2.0, 2.0, -2.0, -2.0, 2.0, 2.0, 2.0]);
            let f = |x: &[f64], out: &mut [f64]| {
                let mut s = [0.0; 2];
                flow.velocity_one(x, out);
                score.score_one(x, t, &mut s);
                out[0] += eta * s[0];
                out[1] += eta * s[1];
            };
            let paths = euler_maruyama(&f, (2.0 * eta).sqrt(), &starts, 0.01, 500, ctx.seed());
            for (i, path) in paths.iter().enumerate() {
                let pts: Vec<[f64; 2]> = xy(path)
                    .into_iter()
                    .map(|p| [p[0].clamp(-3.0, 3.0), p[1].clamp(-3.0, 3.0)])
                    .collect();
                sde = sde.path(Polyline {
                    width: 2,
                    ..Polyline::new(if i == 0 { "SDE paths" } else { "" }, pts)
                        .color(crate::render::PALETTE[(i + 1) % crate::render::PALETTE.len()])
                });
            }
            Figure::row(vec![score_panel.panel(), learned.panel(), sde.panel()])
                .panel_size(560, 560)
                .title(format!(
                    "{}: score, learned flow, and SDE v + {eta} s (dt 0.01, 500 steps)",
                    data.name
                ))
                .save_png(&ctx.output("score_flow_sde.png"))?;
        }
        Ok(())
    }
}
