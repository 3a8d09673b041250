//! `train_score` (images): the score of Turing-pattern fields (a `gray_scott` stage) or of creature
//! canvases (an `icons` stage, 3 RGB channels) at the single noise level the flow uses (DDPM timestep 10,
//! σ = 0.235), trained by denoising score matching.
//!
//! `model = "local"` is the CPU model of spec §7b ([`crate::nn::conv::LocalScore`]: circular dilated 3x3
//! convolutions, ε-prediction, random periodic crops with the square's symmetries). Batches are sampled
//! straight from the memory-mapped dataset, so nothing is copied whatever its size. `model = "unet"` is the
//! paper's UNet ([`crate::nn::unet`]) trained as a DDPM with v-prediction on whole fields, on the
//! pipeline's device (GPU work at paper scale; slow but correct on the CPU), with a 10 % validation split.
//! Both write `score.safetensors`, which [`crate::nn::ImageScore`] loads for every downstream stage.
//! A non-finite loss fails the stage (nothing is cached).
//! With `timestep_max` the local model is noise-conditional (σ as an input channel), for the annealed
//! start of creature rollouts.

use anyhow::Context;

use super::image_common::{abar, ImageData};
use super::points_common::loss_panel;
use super::{spread, StageContext};
use crate::config::{ParamSpec, Params};
use crate::io::write_json;
use crate::nn::conv::{train_local_score, LocalScoreConfig};
use crate::nn::device::ComputeDevice;
use crate::nn::unet::{train_unet, Unet, UnetArch, UnetTrainConfig, UnetTrainLog};
use crate::nn::ImageScore;
use crate::render::{Figure, ImageGrid};
use crate::science::rng::stream;

/// Parameters that only the image implementation reads (documented "(images)").
pub const IMAGE_ONLY: &[&str] = &[
    "model",
    "iterations",
    "crop",
    "width",
    "dilations",
    "timestep",
    "warmup",
    "grad_clip",
    "unet_channels",
    "res_blocks",
    "heads",
    "validation",
    "timestep_max",
    "prediction",
    "level_sampling",
    "film_knots",
    "base_share",
];

/// The image parameters of `train_score`.
pub fn params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::choice(
            "model",
            &["local", "unet"],
            "local",
            "(images) score network: `local` (CPU: dilated circular convolutions, one noise level) or `unet` (the paper's DDPM UNet, v-prediction; GPU scale)",
        ),
        ParamSpec::int("iterations", 500, "(images) optimiser steps").positive(),
        ParamSpec::int("crop", 48, "(images, local) side of the random periodic crops trained on (0: whole fields; the UNet always trains on whole fields)").min(0.0),
        ParamSpec::int("width", 32, "(images, local) hidden channels of the local model").positive(),
        ParamSpec::floats(
            "dilations",
            &[1.0, 2.0, 4.0, 4.0, 2.0, 1.0],
            "(images, local) dilation of each 3x3 convolution, input to output (receptive field 1 + 2 Σ d)",
        ),
        ParamSpec::floats(
            "unet_channels",
            &[16.0, 32.0, 64.0],
            "(images, unet) channels per resolution level (paper: 16, 32, 64; field sides must be multiples of 2^(levels-1))",
        ),
        ParamSpec::int("res_blocks", 2, "(images, unet) res-blocks per level down (one more up; paper 2)").positive(),
        ParamSpec::int("heads", 8, "(images, unet) attention heads in the middle block (paper 8; GroupNorm has 8 groups)").positive(),
        ParamSpec::float("validation", 0.1, "(images, unet) share of the fields held out for the validation loss").probability(),
        ParamSpec::int("timestep", 10, "(images) DDPM timestep of the noise level (10: ā 0.94478, σ 0.235)").min(0.0).max(99.0),
        ParamSpec::float("warmup", 0.1, "(images) share of the steps warming the learning rate up (then cosine decay)").probability(),
        ParamSpec::float("grad_clip", 1.0, "(images) clip the gradient norm to this (0: no clipping)").min(0.0),
        ParamSpec::int("timestep_max", 0, "(images) local: 0 trains the score at `timestep` only; above it, a noise-conditional score (σ as an input channel) from `timestep` up to this DDPM timestep, for an annealed start from noise (creatures: 99, σ 0.997). unet: 0 trains on all 100 timesteps (the paper); above `timestep`, on `timestep` to this one only (an expert for the top levels of an annealed start)").min(0.0).max(99.0),
        ParamSpec::choice(
            "prediction",
            &["eps", "v"],
            "eps",
            "(images, local) what the network predicts: the noise ε, or v = sqrt(ā) ε - σ x0, which weights the clean image's error alike at every level (for noise-conditional models; the UNet always predicts v)",
        ),
        ParamSpec::choice(
            "level_sampling",
            &["log_sigma", "timesteps"],
            "log_sigma",
            "(images, local, noise-conditional) how half of every batch picks its noise level above `timestep`: log-uniform in σ (crowds towards the flow's level), or uniform over the DDPM timesteps up to `timestep_max` as DDPM trains (crowds towards the top: 50 of timesteps 11-99 have σ > 0.85)",
        ),
        ParamSpec::float("base_share", 0.5, "(images, local, noise-conditional) share of every batch trained at `timestep` itself; the rest at the levels above it (`level_sampling`). An expert for the top levels only (`score_high` of the alife pipelines) has no use for its bottom level: 0").probability(),
        ParamSpec::int("film_knots", 0, "(images, local, noise-conditional) 0: σ reaches the network only as an input channel; K >= 2: also a learnt per-channel scale and shift of every SiLU's input, interpolated in ln σ between K knots over the trained range (FiLM), so each layer can compute a different function at each noise level").min(0.0),
    ]
}

/// Config-time checks of the image parameters.
pub fn check(p: &Params) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if p.str("model") == "unet" {
        let c = p.floats("unet_channels");
        if c.is_empty() || c.iter().any(|&x| x < 1.0 || x.fract() != 0.0) {
            out.push((
                "unet_channels",
                "must be a non-empty list of positive integers".to_string(),
            ));
        } else if let Err(e) = unet_arch(p, 2).validate() {
            let msg = format!("{e:#}");
            out.push((
                if msg.contains("heads") {
                    "heads"
                } else {
                    "unet_channels"
                },
                msg,
            ));
        }
    }
    let (t, t_max) = (p.usize("timestep"), p.usize("timestep_max"));
    if t_max > 0 && t_max <= t {
        out.push((
            "timestep_max",
            format!(
                "must exceed `timestep` ({t}) for a noise-conditional score, or be 0 for one level"
            ),
        ));
    }
    let film = p.usize("film_knots");
    if film == 1 {
        out.push((
            "film_knots",
            "must be 0 (off) or at least 2 (one knot cannot vary with σ)".to_string(),
        ));
    } else if film > 0 && p.str("model") == "unet" {
        out.push((
            "film_knots",
            "is the local model's noise conditioning; the UNet has its own (a time embedding): set 0"
                .to_string(),
        ));
    } else if film > 0 && t_max <= t {
        out.push((
            "film_knots",
            format!("needs a noise-conditional score: set `timestep_max` above `timestep` ({t})"),
        ));
    }
    let d = p.floats("dilations");
    if d.is_empty() || d.iter().any(|&x| x < 1.0 || x.fract() != 0.0) {
        out.push((
            "dilations",
            "must be a non-empty list of positive integers".to_string(),
        ));
    }
    out
}

/// The UNet architecture the parameters ask for, for `channels` image channels.
fn unet_arch(p: &Params, channels: usize) -> UnetArch {
    UnetArch {
        channels: p
            .floats("unet_channels")
            .iter()
            .map(|&c| c as usize)
            .collect(),
        res_blocks: p.usize("res_blocks"),
        heads: p.usize("heads"),
        timestep: p.usize("timestep"),
        timestep_max: match p.usize("timestep_max") {
            0 => None,
            top => Some(top),
        },
        ..UnetArch::paper(channels)
    }
}

/// Trains the image score model.
pub fn run(ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    let data = ImageData::open(ctx.input("data")?)?;
    let losses = if ctx.params.str("model") == "unet" {
        run_unet(ctx, &data)?
    } else {
        run_local(ctx, &data)?
    };
    let model = ImageScore::load(&ctx.output("score.safetensors"), ctx.device)?;
    check_and_draw(ctx, &data, &model, &losses)
}

/// `model = "unet"`: DDPM training of the paper's UNet on the pipeline's device.
fn run_unet(ctx: &mut StageContext<'_>, data: &ImageData) -> anyhow::Result<Vec<f64>> {
    let p = ctx.params;
    let (h, w) = (data.h, data.w);
    let train = data.train()?;
    let n = train.len() / data.item_len();
    let arch = unet_arch(p, data.channels);
    let cfg = UnetTrainConfig {
        iterations: p.usize("iterations"),
        batch: p.float_or_default("batch", 16.0) as usize,
        lr: p.float_or_default("lr", 1e-3),
        weight_decay: 0.01,
        warmup: p.float("warmup"),
        grad_clip: (p.float("grad_clip") > 0.0).then(|| p.float("grad_clip")),
        validation: p.float("validation"),
        seed: ctx.seed(),
    };
    let per_epoch = (n - (n as f64 * cfg.validation).round() as usize)
        .max(1)
        .div_ceil(cfg.batch);
    ctx.log(format!(
        "training the UNet (channels {:?}, {} res-blocks, {} heads) on {} on {n} {h}x{w} `{}` fields: \
         {} steps of batch {} (≈ {:.1} epochs), lr {}, v-prediction on DDPM timesteps {:?}",
        arch.channels, arch.res_blocks, arch.heads, ctx.device.name(), data.preset, cfg.iterations, cfg.batch,
        cfg.iterations as f64 / per_epoch as f64, cfg.lr, arch.trained_timesteps()
    ));
    let bar = ctx.progress(cfg.iterations as u64, "steps");
    let mut on_step = |_: usize, loss: f64| {
        bar.inc(1);
        bar.message(format!("loss {loss:.4}"));
    };
    let path = ctx.output("score.safetensors");
    let (params, log) = match ctx.device {
        #[cfg(feature = "cuda")]
        ComputeDevice::Cuda => {
            let dev = crate::nn::device::open_cuda(cfg.seed)?;
            let (model, log) = train_unet::<f32, _>(train, h, w, arch, &cfg, &dev, &mut on_step)
                .with_context(|| format!("{}: UNet training failed", ctx.label))?;
            model.save(&path)?;
            (model.param_count(), log)
        }
        #[cfg(not(feature = "cuda"))]
        ComputeDevice::Cuda => {
            anyhow::bail!("this eqflow was built without CUDA support (docs/gpu.md)")
        }
        ComputeDevice::Cpu => {
            let dev = dfdx::prelude::Cpu::default();
            let (model, log): (Unet<f32, _>, UnetTrainLog) =
                train_unet(train, h, w, arch, &cfg, &dev, &mut on_step)
                    .with_context(|| format!("{}: UNet training failed", ctx.label))?;
            model.save(&path)?;
            (model.param_count(), log)
        }
    };
    bar.finish();
    write_json(
        &ctx.output("score.json"),
        &serde_json::json!({ "model": "unet", "preset": data.preset, "train": cfg, "parameters": params,
                             "device": ctx.device.name(), "validation": log.validation,
                             "train_fields": log.train_fields, "validation_fields": log.validation_fields }),
    )?;
    if let Some(&(_, v)) = log.validation.last() {
        ctx.metric("validation_loss", v);
    }
    ctx.metric("epochs", cfg.iterations as f64 / per_epoch as f64);
    Ok(log.losses)
}

/// `model = "local"`: the CPU score at one noise level (spec §7b).
fn run_local(ctx: &mut StageContext<'_>, data: &ImageData) -> anyhow::Result<Vec<f64>> {
    let p = ctx.params;
    let train = data.train()?;
    let (h, w) = (data.h, data.w);
    let n = train.len() / data.item_len();
    let crop = p.usize("crop");
    let cfg = LocalScoreConfig {
        width: p.usize("width"),
        dilations: p.floats("dilations").iter().map(|&d| d as usize).collect(),
        abar: abar(p.usize("timestep")),
        vp_scaling: true,
        iterations: p.usize("iterations"),
        batch: p.float_or_default("batch", 16.0) as usize,
        crop: (crop > 0).then_some(crop),
        lr: p.float_or_default("lr", 3e-3),
        warmup: p.float("warmup"),
        grad_clip: (p.float("grad_clip") > 0.0).then(|| p.float("grad_clip")),
        seed: ctx.seed(),
        sigma_max: (p.usize("timestep_max") > p.usize("timestep"))
            .then(|| (1.0 - abar(p.usize("timestep_max"))).sqrt()),
        v_prediction: p.str("prediction") == "v",
        upper_levels: (p.str("level_sampling") == "timesteps"
            && p.usize("timestep_max") > p.usize("timestep"))
        .then(|| {
            (p.usize("timestep") + 1..=p.usize("timestep_max"))
                .map(|t| (1.0 - abar(t)).sqrt())
                .collect()
        }),
        base_share: p.float("base_share"),
        film_knots: p.usize("film_knots"),
    };
    ctx.log(format!(
        "training the local score ({} channels, dilations {:?}) on {n} {}x{} `{}` fields: {} steps of batch {}, crop {:?}, σ {:.4}",
        cfg.width, cfg.dilations, h, w, data.preset, cfg.iterations, cfg.batch, cfg.crop, (1.0 - cfg.abar).sqrt()
    ));
    let bar = ctx.progress(cfg.iterations as u64, "steps");
    let (model, losses) = train_local_score(train, h, w, data.channels, &cfg, &mut |_, loss| {
        bar.inc(1);
        bar.message(format!("loss {loss:.4}"));
    })
    .with_context(|| format!("{}: score training failed", ctx.label))?;
    bar.finish();
    model.save(&ctx.output("score.safetensors"))?;
    write_json(
        &ctx.output("score.json"),
        &serde_json::json!({ "model": "local", "preset": data.preset, "train": cfg,
                             "parameters": model.params.len(), "receptive_field": model.arch.receptive_field() }),
    )?;
    Ok(losses)
}

/// Metrics, the held-out denoising check and the training figure, for either model.
fn check_and_draw(
    ctx: &mut StageContext<'_>,
    data: &ImageData,
    model: &ImageScore,
    losses: &[f64],
) -> anyhow::Result<()> {
    let (h, w) = (data.h, data.w);
    write_json(&ctx.output("losses.json"), &losses)?;
    let k = (losses.len() / 10).max(1);
    ctx.metric("loss_first", spread(&losses[..k]));
    ctx.metric("loss_last", spread(&losses[losses.len() - k..]));
    ctx.metric("loss_final", *losses.last().expect("at least one step"));
    ctx.metric("iterations", losses.len());
    ctx.metric("parameters", model.param_count());

    // Denoising check on held-out patterns: noise them at the model's level and denoise (Tweedie).
    let test = data.test_patterns(4)?;
    let m = test.len() / data.item_len();
    let (sig, a) = (model.sigma(), model.signal_scale());
    let mut rng = stream(ctx.seed(), "train_score/denoise-check");
    let noisy: Vec<f32> = test
        .iter()
        .map(|&x| {
            let z: f32 = rand_distr::Distribution::sample(&rand_distr::StandardNormal, &mut rng);
            a * x + sig * z
        })
        .collect();
    let mut s = vec![0.0f32; noisy.len()];
    model.score(&noisy, m, h, w, &mut s);
    let mut den = vec![0.0f32; noisy.len()];
    crate::science::sde::denoise(&noisy, &s, sig, a, &mut den);
    let errs: Vec<f64> = (0..m)
        .map(|i| {
            let r = i * data.item_len()..(i + 1) * data.item_len();
            let mse = den[r.clone()]
                .iter()
                .zip(&test[r])
                .map(|(d, x)| ((d - x) as f64).powi(2))
                .sum::<f64>();
            (mse / data.item_len() as f64).sqrt()
        })
        .collect();
    ctx.metric("denoise_rmse", spread(&errs));
    ctx.log(format!(
        "final loss {:.4} ({} model); held-out denoising RMSE {:.4} (noise σ {sig:.3})",
        losses.last().expect("steps > 0"),
        model.kind(),
        errs.iter().sum::<f64>() / m as f64
    ));
    let mut cells = Vec::new();
    for row in [test, noisy.as_slice(), den.as_slice()] {
        for i in 0..m {
            let f = &row[i * data.item_len()..(i + 1) * data.item_len()];
            let f: Vec<f32> = f.iter().map(|v| v.clamp(-1.0, 1.0)).collect();
            cells.push(data.image_px(&f, 160)?);
        }
    }
    let grid = ImageGrid::new(
        "held-out patterns: clean, noised (σ = 0.235), denoised",
        m,
        cells,
    )
    .labels(
        vec!["clean".into(), "noised x_t".into(), "denoised".into()],
        (0..m).map(|i| format!("pattern {i}")).collect(),
    );
    Figure::row(vec![
        grid.panel(),
        loss_panel(
            match model.kind() {
                "unet" => "score loss (DDPM, v-MSE)",
                _ => "score loss (DSM, ε-MSE)",
            },
            losses,
        ),
    ])
    .panel_size(820, 560)
    .title(format!("train_score on {}", data.preset))
    .save_png(&ctx.output("training.png"))?;
    Ok(())
}
