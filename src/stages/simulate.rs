//! `simulate`: rolls held-out Turing patterns forward with the training-free flow (spec §7): the SDE
//! dx = (K + ηI) ⋆ s(x) dt + sqrt(2η dt) dW by stochastic Heun (one score pass per drift), batched over
//! patterns, from the clean pattern or from its noised version at the score's noise level.
//!
//! Outputs the subsampled states, their Tweedie-denoised frames and the EMA of those (what the paper shows),
//! with Gray-Scott run from the same patterns for comparison: the paper's Figure 3 for this preset (initial
//! / evolved by the flow / evolved by Gray-Scott), an animated GIF of the rollout beside Gray-Scott, and
//! pattern-preservation metrics (spectrum and histogram distances to the data) with their spread.
//!
//! With an `icons` dataset (artificial life, spec §8) the rollout starts from uniform noise on a larger
//! canvas instead and keeps the smoothed frames that creatures are tracked in: see `alife_simulate.rs`.

use std::collections::{BTreeMap, BTreeSet};

use rand_distr::{Distribution, StandardNormal};

use super::image_common::{load_image_score_for, load_kernel, paper_image_px, ImageData};
use super::{mean_or_zero, spread, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::{write_tensors, Tensor};
use crate::render::{side_by_side, write_gif, GifOptions, ImageGrid};
use crate::science::gray_scott::simulate as gs_simulate;
use crate::science::rng::stream;
use crate::science::sde::{heun_sde, FieldShape, FrameEma, FrameKind, SdeConfig};
use crate::science::turing_eval::{cosine, histogram_distance, spectrum_distance};

/// The `simulate` kind.
pub struct Simulate;

impl StageKind for Simulate {
    fn name(&self) -> &'static str {
        "simulate"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "Images: rolls held-out patterns forward with the training-free flow's SDE (stochastic Heun, \
         dx = (K + ηI) ⋆ s dt + sqrt(2η dt) dW, one score pass per drift), from clean or noised patterns; writes \
         frames, denoised frames and their EMA, Gray-Scott from the same patterns, Figure 3 and a GIF. \
         Creatures (an `icons` input): from uniform noise on a larger canvas, optionally after an annealed \
         start (annealed Langevin + DDIM steps of a noise-conditional score down to the flow's level)."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("data", "the `gray_scott` stage (held-out patterns, rates) or the `icons` stage (creatures)"),
            ParamSpec::input("score", "the `train_score` stage (images)"),
            ParamSpec::input("flow", "the `training_free` stage (images) whose kernel K drives the flow"),
            ParamSpec::input("score_high", "(icons) optional: a second noise-conditional score, trained from `score_split` up, that the annealed start uses above that level (an expert for the levels where creatures are placed)").optional(),
            ParamSpec::float("score_split", 0.6, "(icons) with `score_high`: the noise level σ above which the annealed start uses it").positive(),
            ParamSpec::int("patterns", 4, "held-out patterns rolled out together").positive(),
            ParamSpec::int("steps", 250, "SDE steps (paper's Figure 3: 250)").positive(),
            ParamSpec::float("eta", 0.1, "Langevin weight η").min(0.0),
            ParamSpec::float("dt", 0.01, "SDE time step").positive(),
            ParamSpec::choice("start", &["noised", "clean", "uniform"], "noised", "start from the clean pattern, from it noised at the score's level (paper's Turing runs: noised), or from uniform noise in [-1, 1] (creatures: `uniform`, the only start for an `icons` dataset)"),
            ParamSpec::int("canvas_scale", 1, "(icons) canvas side as a multiple of the training canvas (paper: 2, 128 -> 256)").positive(),
            ParamSpec::int("every", 5, "keep every this many steps as a frame").positive(),
            ParamSpec::float("ema", 0.9, "EMA decay of the denoised frames").probability(),
            ParamSpec::int("gs_steps", 50, "Gray-Scott steps shown for comparison over the same rollout (paper: 50)").min(0.0),
            ParamSpec::bool("clip_x0", false, "clip the denoised estimate to [-1, 1] inside the score (the reference does)"),
            ParamSpec::int("burn_in_levels", 0, "(icons) annealed start: noise levels from the score's `timestep_max` down to its flow level, before the flow's SDE (0: none; needs a noise-conditional score)").min(0.0),
            ParamSpec::int("burn_in_langevin", 3, "(icons) Langevin steps (score only, no K) at each burn-in level").min(0.0),
            ParamSpec::int("burn_in_top", 0, "(icons) extra Langevin steps at the top burn-in level, to forget the uniform start's mean and variance").min(0.0),
            ParamSpec::int("flow_timestep", 0, "(icons) DDPM timestep of the flow's noise level (0: the score's own; other levels need a noise-conditional score trained over them)").min(0.0).max(99.0),
            ParamSpec::choice("burn_in_spacing", &["geometric", "timesteps"], "geometric", "(icons) burn-in levels spaced geometrically in σ, or at evenly spaced DDPM timesteps (most levels near the top, where creatures are placed)"),
            ParamSpec::float("burn_in_eta", 0.0, "(icons) DDIM η of the steps between burn-in levels: 0 deterministic, 1 DDPM ancestral (fresh noise)").min(0.0).max(1.0),
            ParamSpec::float("burn_in_stochastic_below", 1.0, "(icons) `burn_in_eta` applies only to steps that end below this noise level σ").positive(),
            ParamSpec::float("burn_in_step", 0.2, "(icons) Langevin step size at a burn-in level as a share of its σ²").positive(),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "frames.safetensors",
                "`initial` [P, 2, H, W]; `states`, `denoised`, `ema`, `gray_scott` [T, P, 2, H, W] (model space)",
            ),
            ("figure3.png", "the paper's Figure 3 for this preset: initial / flow (EMA of denoised) / Gray-Scott"),
            ("rollout.gif", "the first pattern's rollout (EMA of denoised frames) beside Gray-Scott"),
            (
                "frames.safetensors (icons)",
                "`ema` [T, P, 3, H, W] EMA of denoised frames, `final_state` [P, 3, H, W], `reference` [R, 3, h, w] \
                 training canvases (what a creature looks like); metadata: frame interval, training canvas and density",
            ),
            ("final.png", "(icons) the last smoothed frame of every canvas"),
            ("icon.png", "(icons) the creature, passed on for insets"),
        ]
    }
    fn check_wiring(
        &self,
        p: &Params,
        explicit: &BTreeSet<String>,
        input_kinds: &BTreeMap<String, &'static str>,
    ) -> Vec<(&'static str, String)> {
        let Some(&kind) = input_kinds.get("data") else {
            return Vec::new();
        };
        let icons = kind == "icons";
        let mut out = Vec::new();
        if icons && p.str("start") != "uniform" {
            out.push((
                "start",
                "creatures emerge from noise: an `icons` dataset needs `start = \"uniform\"`"
                    .to_string(),
            ));
        }
        if !icons && p.str("start") == "uniform" {
            out.push((
                "start",
                format!(
                    "`uniform` starts are for creatures (`icons` data); `data` is a `{kind}` stage"
                ),
            ));
        }
        for key in [
            "canvas_scale",
            "burn_in_levels",
            "burn_in_langevin",
            "burn_in_step",
            "burn_in_top",
            "burn_in_eta",
            "burn_in_stochastic_below",
            "burn_in_spacing",
            "score_high",
            "score_split",
            "flow_timestep",
        ] {
            if !icons && explicit.contains(key) {
                out.push((
                    key,
                    format!("`{key}` only applies to `icons` inputs, but `data` is a `{kind}` stage; remove it"),
                ));
            }
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        if ctx.input("data")?.kind == "icons" {
            return super::alife_simulate::run(ctx);
        }
        let p = ctx.params;
        let data = ImageData::open(ctx.input("data")?)?;
        let model = load_image_score_for(ctx.input("score")?, ctx.device, data.h, data.w)?;
        let k = load_kernel(ctx.input("flow")?)?;
        let (h, w, len) = (data.h, data.w, data.item_len());
        let x0 = data.test_patterns(p.usize("patterns"))?.to_vec();
        let n = x0.len() / len;
        let (sig, a) = (model.sigma(), model.signal_scale());
        let mut x = x0.clone();
        if p.str("start") == "noised" {
            let mut rng = stream(ctx.seed(), "simulate/start");
            x.iter_mut().for_each(|v| {
                let z: f32 = StandardNormal.sample(&mut rng);
                *v = a * *v + sig * z;
            });
        }
        let steps = p.usize("steps");
        let every = p.usize("every");
        let gs_total = p.usize("gs_steps");
        let cfg = SdeConfig {
            eta: p.float("eta") as f32,
            dt: p.float("dt") as f32,
            steps,
            seed: ctx.seed(),
        };
        ctx.log(format!(
            "rolling out {n} `{}` patterns ({h}x{w}) for {steps} steps ({} start), η {} dt {}",
            data.preset,
            p.str("start"),
            cfg.eta,
            cfg.dt
        ));
        let kernels = vec![&k; n];
        let ids: Vec<u64> = (0..n as u64).collect();
        let clip = p.bool("clip_x0");
        let mut ema = FrameEma::new(
            p.float("ema") as f32,
            FrameKind::Denoised {
                sigma: sig,
                signal_scale: a,
            },
        );
        let (mut states, mut denoised, mut emas) = (Vec::new(), Vec::new(), Vec::new());
        let mut gs_frames = Vec::new();
        let mut gs_state: Vec<f32> = x0.iter().map(|v| 0.5 * (v + 1.0)).collect();
        let mut gs_done = 0usize;
        let bar = ctx.progress(steps as u64, "SDE steps");
        let mut finite = true;
        heun_sde(
            &mut x,
            FieldShape { n, c: 2, h, w },
            &kernels,
            &ids,
            &cfg,
            &mut |x, out| model.score_with(x, x.len() / len, h, w, clip, out),
            &mut |step, x, s| {
                ema.update(x, s);
                if step > 0 {
                    bar.inc(1);
                }
                if step % every == 0 || step == steps {
                    finite &= x.iter().all(|v| v.is_finite());
                    states.extend_from_slice(x);
                    let mut d = vec![0.0f32; x.len()];
                    crate::science::sde::denoise(x, s, sig, a, &mut d);
                    denoised.extend_from_slice(&d);
                    emas.extend_from_slice(&ema.ema);
                    let target = (step * gs_total + steps / 2) / steps;
                    gs_simulate(&data.params, &mut gs_state, h, w, target - gs_done);
                    gs_done = target;
                    gs_frames.extend(gs_state.iter().map(|v| 2.0 * v - 1.0));
                }
            },
        );
        bar.finish();
        if !finite {
            anyhow::bail!(
                "the rollout diverged (non-finite states): try a smaller dt than {}",
                cfg.dt
            );
        }
        let t = states.len() / (n * len);
        let shape = vec![t, n, 2, h, w];
        let tensors = BTreeMap::from([
            (
                "initial".to_string(),
                Tensor::F32 {
                    shape: vec![n, 2, h, w],
                    data: x0.clone(),
                },
            ),
            (
                "states".to_string(),
                Tensor::F32 {
                    shape: shape.clone(),
                    data: states,
                },
            ),
            (
                "denoised".to_string(),
                Tensor::F32 {
                    shape: shape.clone(),
                    data: denoised,
                },
            ),
            (
                "ema".to_string(),
                Tensor::F32 {
                    shape: shape.clone(),
                    data: emas.clone(),
                },
            ),
            (
                "gray_scott".to_string(),
                Tensor::F32 {
                    shape,
                    data: gs_frames.clone(),
                },
            ),
        ]);
        let meta = BTreeMap::from([
            ("preset".to_string(), data.preset.clone()),
            ("every".to_string(), every.to_string()),
            ("steps".to_string(), steps.to_string()),
        ]);
        write_tensors(&ctx.output("frames.safetensors"), &tensors, &meta)?;

        // Pattern preservation and displacement alignment of the final EMA frames.
        let last = &emas[(t - 1) * n * len..];
        let gs_last = &gs_frames[(t - 1) * n * len..];
        let reference = data.test()?;
        let item = |f: &[f32], i: usize| f[i * len..(i + 1) * len].to_vec();
        let spec: Vec<f64> = (0..n)
            .map(|i| spectrum_distance(&item(last, i), reference, 2, h, w))
            .collect();
        let hist: Vec<f64> = (0..n)
            .map(|i| histogram_distance(&item(last, i), reference, 2, h, w, 32))
            .collect();
        let spec_data: Vec<f64> = (0..n)
            .map(|i| spectrum_distance(&item(&x0, i), reference, 2, h, w))
            .collect();
        let cos: Vec<f64> = (0..n)
            .map(|i| {
                let e_flow: Vec<f32> = item(last, i)
                    .iter()
                    .zip(item(&x0, i))
                    .map(|(a, b)| a - b)
                    .collect();
                let e_gs: Vec<f32> = item(gs_last, i)
                    .iter()
                    .zip(item(&x0, i))
                    .map(|(a, b)| a - b)
                    .collect();
                cosine(&e_flow, &e_gs)
            })
            .collect();
        ctx.metric("spectrum_distance", spread(&spec));
        ctx.metric("spectrum_distance_initial", spread(&spec_data));
        ctx.metric("histogram_distance", spread(&hist));
        ctx.metric("displacement_cosine_vs_gray_scott", spread(&cos));
        ctx.metric("frames", t);
        ctx.log(format!(
            "final EMA frames: spectrum distance to data {:.3} (initial patterns {:.3}), histogram TV {:.3}; \
             cos(flow displacement, {gs_total} Gray-Scott steps) {:+.3}",
            mean_or_zero(&spec),
            mean_or_zero(&spec_data),
            mean_or_zero(&hist),
            mean_or_zero(&cos)
        ));

        // Figure 3: rows initial / flow / Gray-Scott; columns patterns.
        let px = 200;
        let mut cells = Vec::new();
        for row in [&x0[..], last, gs_last] {
            for i in 0..n {
                cells.push(paper_image_px(&item(row, i), h, w, px)?);
            }
        }
        ImageGrid::new(
            format!(
                "Turing patterns ({}): training-free flow vs Gray-Scott",
                data.preset
            ),
            n,
            cells,
        )
        .labels(
            vec![
                "initial pattern".into(),
                format!("flow, {steps} steps"),
                format!("Gray-Scott, {gs_total} steps"),
            ],
            (0..n).map(|i| format!("pattern {i}")).collect(),
        )
        .into_figure(px as u32)
        .save_png(&ctx.output("figure3.png"))?;

        // The GIF: the first pattern's EMA frames beside Gray-Scott.
        let (mut flow_seq, mut gs_seq) = (Vec::new(), Vec::new());
        for f in 0..t {
            let base = f * n * len;
            flow_seq.push(paper_image_px(&emas[base..base + len], h, w, 256)?);
            gs_seq.push(paper_image_px(&gs_frames[base..base + len], h, w, 256)?);
        }
        let frames = side_by_side(
            &[flow_seq, gs_seq],
            &["training-free flow (EMA of denoised)", "Gray-Scott"],
            256,
        )?;
        write_gif(
            &ctx.output("rollout.gif"),
            &frames,
            &GifOptions {
                delay_cs: 8,
                ..Default::default()
            },
        )?;
        Ok(())
    }
}
