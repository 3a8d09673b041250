//! `train_dynamics` (images): the trained local flow for Turing patterns (spec §2 and §7, issue 8), trained on
//! a `gray_scott` stage against the score of a `train_score` (images) stage.
//!
//! The network, loss and optimiser live in [`crate::nn::conv::flow`] (isotropic 3x3 stencil -> BN -> SiLU
//! -> 1x1 -> BN -> SiLU -> 1x1 -> BN without affine; loss mean(r1·r2)/mean|v|² with 2 + 2 Hutchinson probes
//! by exact tangents; AdamW with clipping, warm-up and cosine decay). This file only wires it: the noise
//! level is the score model's own (ā = 1 - σ², VP scaling as the score was trained), so the flow and the
//! score always agree. While training, at every validation step, it also measures the direct cosine between
//! v(x) (evaluation mode) and the true Gray-Scott rates at a few held-out patterns, so the figure shows
//! whether lowering the loss moves v toward the true dynamics. v -> -v leaves the loss unchanged, so a
//! trained model's sign is arbitrary: both the signed cosine and |cos| are reported.

use anyhow::Context;

use super::image_common::{flow_map_figure, load_image_score_for, ImageData};
use super::{spread, StageContext};
use crate::config::{ParamSpec, Params};
use crate::io::write_json;
use crate::nn::conv::{train_image_flow_observed, ImageFlow, ImageFlowArch, ImageFlowConfig};
use crate::render::{Figure, LinePlot, Series};
use crate::science::gray_scott::{rhs, GrayScottParams};
use crate::science::turing_eval::cosine;

/// The image parameters of `train_dynamics` (documented "(images)"; the shared ones are in the kind).
pub fn params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::int("iterations", 400, "(images) optimiser steps").positive(),
        ParamSpec::int(
            "crop",
            48,
            "(images) side of the random periodic crops trained on (0: whole fields)",
        )
        .min(0.0),
        ParamSpec::int("hidden", 32, "(images) hidden channels (paper: 32)").positive(),
        ParamSpec::bool(
            "isotropic",
            true,
            "(images) 3x3 stencil with one centre, edge and corner weight per channel pair (rotation- and reflection-equivariant)",
        ),
        ParamSpec::float(
            "warmup",
            0.05,
            "(images) share of the steps warming the learning rate up (then cosine decay)",
        )
        .probability(),
        ParamSpec::float(
            "grad_clip",
            1.0,
            "(images) clip the gradient norm to this (0: no clipping)",
        )
        .min(0.0),
        ParamSpec::int(
            "val_every",
            25,
            "(images) validate (loss in evaluation mode, cosine with the true rates) every this many steps",
        )
        .positive(),
        ParamSpec::int(
            "curve_patterns",
            4,
            "(images) held-out patterns of the cosine-over-training curve",
        )
        .positive(),
    ]
}

/// Config-time checks of the image parameters.
pub fn check(p: &Params) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    let c = p.usize("crop");
    if c != 0 && c < 8 {
        out.push((
            "crop",
            format!("must be 0 (whole fields) or at least 8, got {c}"),
        ));
    }
    out
}

/// The signed direct cosine, per pattern, between v(x) in evaluation mode and the Gray-Scott rates `r`.
pub fn flow_cosines(flow: &ImageFlow, pats: &[f32], r: &[f32], h: usize, w: usize) -> Vec<f64> {
    let len = 2 * h * w;
    let mut v = vec![0.0f32; pats.len()];
    flow.velocity(pats, pats.len() / len, h, w, &mut v);
    v.chunks(len)
        .zip(r.chunks(len))
        .map(|(a, b)| cosine(a, b))
        .collect()
}

/// The true rates (du/dt, dv/dt) at patterns in model space.
pub fn true_rates(gs: &GrayScottParams, pats: &[f32], h: usize, w: usize) -> Vec<f32> {
    let phys: Vec<f32> = pats.iter().map(|x| 0.5 * (x + 1.0)).collect();
    rhs(gs, &phys, h, w)
}

/// One point of the cosine-over-training curve.
#[derive(serde::Serialize)]
struct CurvePoint {
    step: usize,
    val_loss: f64,
    signed: Vec<f64>,
}

/// Trains the image flow.
pub fn run(ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    let p = ctx.params;
    let data = ImageData::open(ctx.input("data")?)?;
    let score_model = load_image_score_for(ctx.input("score")?, ctx.device, data.h, data.w)?;
    let (h, w) = (data.h, data.w);
    let train = data.train()?;
    let sigma = score_model.sigma();
    let crop = p.usize("crop");
    let clip = p.float("grad_clip");
    let cfg = ImageFlowConfig {
        arch: ImageFlowArch {
            channels: 2,
            hidden: p.usize("hidden"),
            isotropic: p.bool("isotropic"),
            bn_eps: 1e-5,
        },
        iterations: p.usize("iterations"),
        batch: if p.usize("batch") > 0 {
            p.usize("batch")
        } else {
            8
        },
        crop: (crop > 0).then_some(crop),
        lr: p.float_or_default("lr", 1e-2),
        weight_decay: if p.float("weight_decay") >= 0.0 {
            p.float("weight_decay")
        } else {
            0.01
        },
        warmup: p.float("warmup"),
        grad_clip: (clip > 0.0).then_some(clip),
        probes_per_estimate: if p.usize("probes") > 0 {
            p.usize("probes")
        } else {
            2
        },
        abar: 1.0 - sigma * sigma,
        vp_scaling: (score_model.signal_scale() - 1.0).abs() > 1e-6,
        val_every: p.usize("val_every"),
        seed: ctx.seed(),
        ..ImageFlowConfig::default()
    };
    if cfg.batch < 2 {
        anyhow::bail!(
            "`batch` must be at least 2 for the batch-norm, got {}",
            cfg.batch
        );
    }
    let curve_pats = data.test_patterns(p.usize("curve_patterns"))?;
    let curve_rates = true_rates(&data.params, curve_pats, h, w);
    ctx.log(format!(
        "training the local image flow on {} `{}` fields {h}x{w}: {} steps, batch {}, crop {:?}, hidden {}, \
         σ {sigma:.4} (the score's), {} + {} probes",
        train.len() / data.item_len(),
        data.preset,
        cfg.iterations,
        cfg.batch,
        cfg.crop,
        cfg.arch.hidden,
        cfg.probes_per_estimate,
        cfg.probes_per_estimate
    ));
    let score = |x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]| {
        score_model.score(x, n, h, w, out)
    };
    let bar = ctx.progress(cfg.iterations as u64, "steps");
    let mut curve: Vec<CurvePoint> = Vec::new();
    let (flow, log) =
        train_image_flow_observed(train, h, w, &score, &cfg, &mut |it, loss, val, flow| {
            bar.inc(1);
            if let Some(v) = val {
                let signed = flow_cosines(flow, curve_pats, &curve_rates, h, w);
                let m = signed.iter().sum::<f64>() / signed.len() as f64;
                bar.message(format!("loss {loss:.3} val {v:.3} cos {m:+.3}"));
                curve.push(CurvePoint {
                    step: it + 1,
                    val_loss: v,
                    signed,
                });
            }
        })
        .with_context(|| format!("{}: image flow training failed", ctx.label))?;
    bar.finish();
    ctx.log(format!(
        "{:.3} s per training step on {} threads (batch {}, crop {:?})",
        log.secs_per_iter,
        rayon::current_num_threads(),
        cfg.batch,
        cfg.crop
    ));
    flow.save(&ctx.output("flow.safetensors"))?;

    // Direct cosine on the held-out patterns (as `training_free` reports it for K ⋆ s).
    let pats = data.test_patterns(16)?;
    let rates = true_rates(&data.params, pats, h, w);
    let cos = flow_cosines(&flow, pats, &rates, h, w);
    let abs: Vec<f64> = cos.iter().map(|c| c.abs()).collect();
    let tail = &log.train[log.train.len().saturating_sub(log.train.len().div_ceil(10))..];
    ctx.metric("loss_first", log.train[0]);
    ctx.metric("loss_final", *log.train.last().expect("at least one step"));
    ctx.metric("loss_last10pct", spread(tail));
    if let Some((_, v)) = log.val.last() {
        ctx.metric("val_loss_final", *v);
    }
    ctx.metric("iterations", log.train.len());
    ctx.metric("direct_cosine", spread(&cos));
    ctx.metric("direct_cosine_abs", spread(&abs));
    ctx.log(format!(
        "cos(v, Gray-Scott rates) over {} held-out patterns: signed {:+.3}, |cos| {:.3} (positive on {}/{})",
        cos.len(),
        cos.iter().sum::<f64>() / cos.len() as f64,
        abs.iter().sum::<f64>() / abs.len() as f64,
        cos.iter().filter(|&&c| c > 0.0).count(),
        cos.len()
    ));
    write_json(
        &ctx.output("training.json"),
        &serde_json::json!({
            "preset": data.preset, "size": [h, w], "config": cfg, "train_loss": log.train,
            "val_loss": log.val, "cosine_curve": curve, "direct_cosine": cos,
        }),
    )?;
    curves_figure(&data.preset, &log.train, &curve)?.save_png(&ctx.output("curves.png"))?;
    flow_map(
        &data,
        &flow,
        &pats[..data.item_len()],
        &rates[..data.item_len()],
    )?
    .save_png(&ctx.output("flow_map.png"))?;
    Ok(())
}

/// Loss (training per step, validation) and the direct cosine over training (mean ± std over patterns).
fn curves_figure(preset: &str, train: &[f64], curve: &[CurvePoint]) -> anyhow::Result<Figure> {
    // The first 5 % of the steps (the initial loss is orders of magnitude above the rest) are left out so
    // the scale shows the training that matters; a running mean over 10 % of the steps makes it readable.
    let skip = (train.len() / 20).min(train.len() - 1);
    let steps: Vec<f64> = (skip + 1..=train.len()).map(|s| s as f64).collect();
    let win = (train.len() / 10).max(1);
    let smooth: Vec<f64> = (skip..train.len())
        .map(|i| {
            let lo = i.saturating_sub(win - 1);
            train[lo..=i].iter().sum::<f64>() / (i + 1 - lo) as f64
        })
        .collect();
    let train = &train[skip..];
    let xs: Vec<f64> = curve.iter().map(|c| c.step as f64).collect();
    let loss = LinePlot::new(
        format!(
            "{preset}: loss mean(r1·r2)/mean|v|² (from step {})",
            skip + 1
        ),
        "step",
        "loss",
    )
    .series(Series::new(
        "train (per step)",
        steps.clone(),
        train.to_vec(),
    ))
    .series(Series::new(
        format!("train (running mean of {win})"),
        steps,
        smooth,
    ))
    .series(
        Series::new(
            "validation (evaluation mode)",
            xs.clone(),
            curve.iter().map(|c| c.val_loss).collect(),
        )
        .markers(),
    );
    let stat = |f: &dyn Fn(f64) -> f64| -> (Vec<f64>, Vec<f64>) {
        curve
            .iter()
            .map(|c| {
                let v: Vec<f64> = c.signed.iter().map(|&x| f(x)).collect();
                let s = spread(&v);
                (
                    s["mean"].as_f64().unwrap_or(f64::NAN),
                    s["std"].as_f64().unwrap_or(0.0),
                )
            })
            .unzip()
    };
    let (sm, ss) = stat(&|x| x);
    let (am, asd) = stat(&|x| x.abs());
    let n = curve.first().map_or(0, |c| c.signed.len());
    let cos = LinePlot::new(
        format!("cos(v, true Gray-Scott rates), mean ± std over {n} held-out patterns"),
        "step",
        "cosine",
    )
    .series(Series::new("signed", xs.clone(), sm).with_std(ss).markers())
    .series(Series::new("|cos|", xs, am).with_std(asd).markers());
    Ok(Figure::row(vec![loss.panel(), cos.panel()])
        .panel_size(620, 440)
        .title(format!("train_dynamics (images) on {preset}")))
}

/// The Δx/Δt map of the trained flow at one held-out pattern beside the true rates.
fn flow_map(data: &ImageData, flow: &ImageFlow, x0: &[f32], r: &[f32]) -> anyhow::Result<Figure> {
    let (h, w) = (data.h, data.w);
    let mut v = vec![0.0f32; x0.len()];
    flow.velocity(x0, 1, h, w, &mut v);
    let title = format!(
        "Δx/Δt of a held-out {} pattern: trained v vs Gray-Scott (cos {:+.2}; the sign of v is arbitrary)",
        data.preset,
        cosine(&v, r)
    );
    flow_map_figure(title, x0, &v, r, h, w)
}
