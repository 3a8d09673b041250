//! `simulate` on creatures (spec §8): the training-free flow's SDE dx = (K + ηI) ⋆ s(x) dt + sqrt(2η dt) dW
//! (stochastic Heun, one score pass per drift) started from uniform noise in [-1, 1] on a canvas
//! `canvas_scale` times the training canvas's side — the score network is fully convolutional and circular,
//! so it runs on any periodic canvas — for `patterns` canvases at once.
//!
//! Annealed start (`burn_in_levels` > 0): a score trained at one small noise level is valid only near the
//! data blurred at that level, and uniform noise is far from it — the SDE then settles into a texture, not
//! creatures. So with a noise-conditional score (σ as an input, `train_score.timestep_max`) the uniform
//! noise is first brought to the data noised at the flow's level by annealed Langevin dynamics
//! (`science::sde::annealed_start`: score only, K plays no part) from the score's top level down; then the
//! flow's SDE runs at its fixed level as before. The burn-in's smoothed frames come first in the frame
//! stream (metadata `burn_in_frames`), so the creature count is seen rising out of noise.
//!
//! Only the display frames are kept: the Tweedie-denoised frames smoothed by an EMA, every `every` steps,
//! which is what creatures are tracked in. The metadata carries what the tracker and the behaviour
//! evaluation need (frame interval, the training canvas and its creature density), the first training
//! canvases (`reference`: what a creature should look like, for the tracker's shape check), and the
//! creature's picture (`icon.png`) is passed on for the figures' inset.

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use rand::Rng as _;

use super::image_common::{load_image_score_for, load_kernel, ImageData};
use super::StageContext;
use crate::io::{read_tensors, write_tensors, Tensor};
use crate::render::{contact_sheet, rgb_canvas, FieldRange};
use crate::science::ddpm_schedule::timestep_levels;
use crate::science::rng::stream;
use crate::science::sde::{
    anneal_levels, annealed_start, heun_sde, AnnealConfig, FieldShape, FrameEma, FrameKind,
    SdeConfig,
};

/// Training canvases passed on as `reference` (64 canvases of 64x64 hold ~250 creatures).
const REFERENCE_CANVASES: usize = 64;

/// Rolls creatures out of noise.
pub fn run(ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    let p = ctx.params;
    let input = ctx.input("data")?.clone();
    let data = ImageData::open(&input)?;
    let meta = read_tensors(&input.dir.join("data.safetensors"))?.metadata();
    let train_icons: f64 = meta
        .get("icons_per_canvas")
        .context("icons metadata has no `icons_per_canvas`")?
        .parse()
        .context("icons metadata `icons_per_canvas`")?;
    let model = load_image_score_for(ctx.input("score")?, ctx.device, data.h, data.w)?;
    let k = load_kernel(ctx.input("flow")?)?;
    if k.c_in != data.channels || model.channels() != data.channels {
        bail!(
            "the flow's kernel has {} channels and the score {}, but the creatures have {}: were they made from \
             another dataset?",
            k.c_in,
            model.channels(),
            data.channels
        );
    }
    let scale = p.usize("canvas_scale");
    let (h, w) = (data.h * scale, data.w * scale);
    let n = p.usize("patterns");
    let len = 3 * h * w;
    let mut rng = stream(ctx.seed(), "simulate/uniform");
    let mut x: Vec<f32> = (0..n * len).map(|_| rng.gen_range(-1.0f32..1.0)).collect();
    let (steps, every) = (p.usize("steps"), p.usize("every"));
    let cfg = SdeConfig {
        eta: p.float("eta") as f32,
        dt: p.float("dt") as f32,
        steps,
        seed: ctx.seed(),
    };
    ctx.log(format!(
        "rolling `{}` creatures out of uniform noise: {n} canvas(es) of {h}x{w} ({scale}x the training side), \
         {steps} steps, η {} dt {}, a frame every {every} steps",
        data.preset, cfg.eta, cfg.dt
    ));
    let (sig, a) = match p.usize("flow_timestep") {
        0 => (model.sigma(), model.signal_scale()),
        t => {
            let level = (1.0 - super::image_common::abar(t)).sqrt();
            match model.sigma_max() {
                Some(top) if level >= model.sigma() - 1e-6 && level <= top + 1e-6 => {
                    (level, model.signal_scale_at(level))
                }
                _ => bail!(
                    "`flow_timestep` {t} (σ {level:.3}) is outside the noise levels the score `{}` was trained on \
                     (σ {:.3}{}); use 0 (the score's own level) or train it with `timestep_max`",
                    ctx.input("score")?.stage,
                    model.sigma(),
                    model.sigma_max().map(|m| format!(" to {m:.3}")).unwrap_or_default()
                ),
            }
        }
    };
    let mut ema = FrameEma::new(
        p.float("ema") as f32,
        FrameKind::Denoised {
            sigma: sig,
            signal_scale: a,
        },
    );
    let clip = p.bool("clip_x0");
    let kernels = vec![&k; n];
    let ids: Vec<u64> = (0..n as u64).collect();
    let mut emas = Vec::new();
    let mut finite = true;
    let levels = p.usize("burn_in_levels");
    let mut burn_in_frames = 0;
    if levels > 0 {
        let high = match ctx.opt_input("score_high") {
            Some(input) => Some(load_image_score_for(input, ctx.device, data.h, data.w)?),
            None => None,
        };
        let split = p.float("score_split") as f32;
        if let Some(hm) = &high {
            if hm.channels() != data.channels
                || hm.sigma_max().is_none()
                || hm.sigma() > split + 1e-4
            {
                bail!(
                    "`score_high` must be a noise-conditional score for these creatures trained from at most \
                     `score_split` ({split}) up; it has {} channels and levels σ {:.3} to {:?}",
                    hm.channels(),
                    hm.sigma(),
                    hm.sigma_max()
                );
            }
        }
        // `score` runs every level up to the split (or all of them without `score_high`).
        let Some(score_top) = model.sigma_max() else {
            bail!(
                "`burn_in_levels` needs a noise-conditional score, but `{}` was trained at one level: set \
                 `timestep_max` on that `train_score` stage (creatures: 99)",
                ctx.input("score")?.stage
            );
        };
        if high.is_some() && score_top < split.min(1.0) - 1e-4 {
            bail!(
                "`score` is trained up to σ {score_top:.3} only, below `score_split` ({split}) where \
                 `score_high` takes over: raise `timestep_max` on `{}` or lower `score_split`",
                ctx.input("score")?.stage
            );
        }
        let top = high
            .as_ref()
            .and_then(|hm| hm.sigma_max())
            .unwrap_or(score_top);
        let sigmas = match p.str("burn_in_spacing") {
            "timesteps" => timestep_levels(top, sig, levels),
            _ => anneal_levels(top, sig, levels),
        };
        // The score serving each level, and its input's name: `score_high` above the split.
        let serving = |level: f32| match &high {
            Some(hm) if level > split => (hm, "score_high"),
            _ => (&model, "score"),
        };
        // The UNet knows the levels of its DDPM timesteps only (the local models any level in their range).
        for &level in &sigmas {
            let (m, name) = serving(level);
            if !m.reads_level(level) {
                bail!(
                    "the annealed start reads `{name}` at σ {level:.4}, which the {} model `{}` does not know: \
                     a UNet is read at DDPM timesteps only (set `burn_in_spacing = \"timesteps\"`)",
                    m.kind(),
                    ctx.input(name)?.stage
                );
            }
        }
        let acfg = AnnealConfig {
            langevin_steps: p.usize("burn_in_langevin"),
            top_steps: p.usize("burn_in_top"),
            step_ratio: p.float("burn_in_step") as f32,
            ddim_eta: p.float("burn_in_eta") as f32,
            stochastic_below: p.float("burn_in_stochastic_below") as f32,
            seed: ctx.seed(),
        };
        ctx.log(format!(
            "annealed start: {} levels σ {top:.3} -> {sig:.3} ({} spacing), {} Langevin steps each (α = {} σ²), {} \
             more at the top, DDIM η {}{}",
            sigmas.len(),
            p.str("burn_in_spacing"),
            acfg.langevin_steps,
            acfg.step_ratio,
            acfg.top_steps,
            acfg.ddim_eta,
            match &high {
                Some(_) => format!("; `score_high` above σ {split}"),
                None => String::new(),
            }
        ));
        annealed_start(
            &mut x,
            FieldShape { n, c: 3, h, w },
            &ids,
            &sigmas,
            &|s| model.signal_scale_at(s),
            &acfg,
            &mut |x, sigma, out| {
                serving(sigma)
                    .0
                    .score_at_with(x, x.len() / len, h, w, sigma, clip, out)
            },
            &mut |step, sigma, x, s| {
                ema.kind = FrameKind::Denoised {
                    sigma,
                    signal_scale: model.signal_scale_at(sigma),
                };
                ema.update(x, s);
                if step % every == 0 {
                    emas.extend_from_slice(&ema.ema);
                    burn_in_frames += 1;
                }
            },
        );
        ema.kind = FrameKind::Denoised {
            sigma: sig,
            signal_scale: a,
        };
        finite &= x.iter().all(|v| v.is_finite());
    }
    let bar = ctx.progress(steps as u64, "SDE steps");
    heun_sde(
        &mut x,
        FieldShape { n, c: 3, h, w },
        &kernels,
        &ids,
        &cfg,
        &mut |x, out| model.score_at_with(x, x.len() / len, h, w, sig, clip, out),
        &mut |step, x, s| {
            ema.update(x, s);
            if step > 0 {
                bar.inc(1);
            }
            if (step % every == 0 && (step > 0 || burn_in_frames == 0)) || step == steps {
                finite &= x.iter().all(|v| v.is_finite());
                emas.extend_from_slice(&ema.ema);
            }
        },
    );
    bar.finish();
    if !finite {
        bail!(
            "the rollout diverged (non-finite states): try a smaller dt than {}",
            cfg.dt
        );
    }
    let t = emas.len() / (n * len);
    let last = emas[(t - 1) * n * len..].to_vec();
    // What the creatures should look like, for the tracker's shape check: the first training canvases.
    let train = data.train()?;
    let n_ref = (train.len() / data.item_len()).min(REFERENCE_CANVASES);
    let tensors = BTreeMap::from([
        (
            "reference".to_string(),
            Tensor::F32 {
                shape: vec![n_ref, 3, data.h, data.w],
                data: train[..n_ref * data.item_len()].to_vec(),
            },
        ),
        (
            "ema".to_string(),
            Tensor::F32 {
                shape: vec![t, n, 3, h, w],
                data: emas,
            },
        ),
        (
            "final_state".to_string(),
            Tensor::F32 {
                shape: vec![n, 3, h, w],
                data: x,
            },
        ),
    ]);
    let meta = BTreeMap::from([
        ("data_kind".to_string(), "icons".to_string()),
        ("preset".to_string(), data.preset.clone()),
        ("every".to_string(), every.to_string()),
        ("steps".to_string(), steps.to_string()),
        ("burn_in_frames".to_string(), burn_in_frames.to_string()),
        ("dt".to_string(), cfg.dt.to_string()),
        ("train_size".to_string(), data.h.to_string()),
        (
            "train_icons_per_canvas".to_string(),
            train_icons.to_string(),
        ),
    ]);
    write_tensors(&ctx.output("frames.safetensors"), &tensors, &meta)?;
    ctx.metric("frames", t);
    ctx.metric("burn_in_frames", burn_in_frames);
    ctx.metric("canvas", h);
    let icon = input.dir.join("icon.png");
    if icon.exists() {
        std::fs::copy(&icon, ctx.output("icon.png"))?;
    }
    let images = last
        .chunks(len)
        .map(|f| {
            Ok(rgb_canvas(f, h, w, FieldRange::MinusOneOne)?
                .upscale((512 / h.max(w)).max(1) as u32))
        })
        .collect::<anyhow::Result<Vec<_>>>()?;
    contact_sheet(&images, 4, 4, plotters::style::RGBColor(60, 60, 60))?
        .save_png(&ctx.output("final.png"))?;
    Ok(())
}
