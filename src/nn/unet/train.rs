//! DDPM training of the UNet as the paper does it (spec §7): timesteps uniform over the 100-step schedule,
//! v-prediction target `sqrt(ā) ε - sqrt(1 - ā) x0`, MSE, AdamW (lr 1e-3, weight decay 0.01, decoupled as
//! PyTorch's), global gradient-norm clipping, linear warm-up then cosine decay of the learning rate, and a
//! held-out validation share whose loss is measured with fixed noise after every epoch.
//!
//! dfdx 0.13 has no schedules, clipping or optimiser over a flat parameter list, so the update is written
//! with tensor ops on the device; random draws (batches, timesteps, noise) are made on the host from
//! seeded streams, so a run is reproducible for a seed whatever the device.

use anyhow::{bail, Result};
use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand::Rng;
use rand_distr::StandardNormal;
use serde::Serialize;

use super::model::{ddpm_abar, Unet, UnetArch};
use super::ops::{cst, to_act_layout, Flat, Mat};
use crate::science::rng::stream;

/// Training settings.
#[derive(Clone, Debug, Serialize)]
pub struct UnetTrainConfig {
    /// Optimiser steps.
    pub iterations: usize,
    /// Fields per step (paper 64).
    pub batch: usize,
    /// Peak learning rate (paper 1e-3).
    pub lr: f64,
    /// AdamW decoupled weight decay (paper 0.01).
    pub weight_decay: f64,
    /// Share of the steps warming the learning rate up linearly (paper: 500 of ~11,500 steps).
    pub warmup: f64,
    /// Clip the global gradient norm to this (paper 1).
    pub grad_clip: Option<f64>,
    /// Share of the fields held out for the validation loss (paper 0.1).
    pub validation: f64,
    /// Seed of initialisation, batches, timesteps and noise.
    pub seed: u64,
}

/// What training produced besides the model.
#[derive(Clone, Debug, Default, Serialize)]
pub struct UnetTrainLog {
    /// Training loss per step.
    pub losses: Vec<f64>,
    /// Validation loss after each epoch (and at the end), with the step it was measured at.
    pub validation: Vec<(usize, f64)>,
    /// Fields trained on / held out.
    pub train_fields: usize,
    /// Fields held out.
    pub validation_fields: usize,
}

/// The learning rate at `step` of `total`: linear warm-up over `warmup` steps, then cosine decay to 0.
pub fn lr_at(step: usize, total: usize, warmup: usize, peak: f64) -> f64 {
    if step < warmup {
        return peak * (step + 1) as f64 / warmup as f64;
    }
    let progress = (step - warmup) as f64 / (total - warmup).max(1) as f64;
    peak * 0.5 * (1.0 + (std::f64::consts::PI * progress).cos())
}

/// One batch of the DDPM objective on the host: noised inputs and v-targets `[B*H*W, C]`, timesteps.
pub struct DdpmBatch {
    /// x_t = sqrt(ā) x0 + sqrt(1 - ā) ε.
    pub x: Vec<f32>,
    /// v = sqrt(ā) ε - sqrt(1 - ā) x0.
    pub v: Vec<f32>,
    /// t per field.
    pub t: Vec<usize>,
}

/// Draws timesteps (uniform over `timesteps`; the paper: all of them) and noise for the fields `items` of
/// `data` (`[N, c, h, w]`).
pub fn ddpm_batch(
    data: &[f32],
    items: &[usize],
    c: usize,
    hw: usize,
    timesteps: std::ops::Range<usize>,
    rng: &mut impl Rng,
) -> DdpmBatch {
    let len = c * hw;
    let mut x = Vec::with_capacity(items.len() * len);
    let mut v = Vec::with_capacity(items.len() * len);
    let mut t = Vec::with_capacity(items.len());
    for &i in items {
        let ti = rng.gen_range(timesteps.clone());
        let abar = ddpm_abar(ti);
        let (a, s) = (abar.sqrt() as f32, (1.0 - abar).sqrt() as f32);
        for &x0 in &data[i * len..(i + 1) * len] {
            let e: f32 = rng.sample(StandardNormal);
            x.push(a * x0 + s * e);
            v.push(a * e - s * x0);
        }
        t.push(ti);
    }
    let b = items.len();
    DdpmBatch {
        x: to_act_layout(&x, b, c, hw),
        v: to_act_layout(&v, b, c, hw),
        t,
    }
}

/// The batch's noised inputs and v-targets as `[B*H*W, C]` tensors on the model's device.
fn upload<E: Dtype, D: Device<E>>(
    model: &Unet<E, D>,
    batch: &DdpmBatch,
    h: usize,
    w: usize,
) -> (Mat<E, D, NoneTape>, Mat<E, D, NoneTape>) {
    let shape = (batch.t.len() * h * w, model.arch.in_channels);
    let up = |v: &[f32]| {
        let host = v.iter().map(|&x| cst::<E>(x as f64)).collect();
        model.device().tensor_from_vec(host, shape)
    };
    (up(&batch.x), up(&batch.v))
}

/// The mean squared v-error of `model` on a batch and its gradients (also the device check's case).
pub fn batch_loss<E: Dtype, D: Device<E>>(
    model: &Unet<E, D>,
    batch: &DdpmBatch,
    h: usize,
    w: usize,
) -> Result<(f64, Gradients<E, D>)> {
    let grids = model.grids(batch.t.len(), h, w)?;
    let (x, target) = upload(model, batch, h, w);
    let pred = model.forward(x.leaky_traced(), model.time_input(&batch.t), &grids);
    let loss = (pred - target).square().mean::<(), _>();
    let value = loss.as_vec()[0].to_f64().expect("float");
    Ok((value, loss.backward()))
}

/// The mean squared v-error without a tape.
fn eval_loss<E: Dtype, D: Device<E>>(
    model: &Unet<E, D>,
    batch: &DdpmBatch,
    h: usize,
    w: usize,
) -> Result<f64> {
    let grids = model.grids(batch.t.len(), h, w)?;
    let (x, target) = upload(model, batch, h, w);
    let pred = model.forward(x, model.time_input(&batch.t), &grids);
    Ok((pred - target).square().mean::<(), _>().as_vec()[0]
        .to_f64()
        .expect("float"))
}

/// One optimiser step at a time: the model, its AdamW state and the update rule (clipping included).
pub struct Trainer<E: Dtype, D: Device<E>> {
    /// The model being trained.
    pub model: Unet<E, D>,
    opt: AdamW<E, D>,
    weight_decay: f64,
    grad_clip: Option<f64>,
}

impl<E: Dtype, D: Device<E>> Trainer<E, D> {
    /// Starts training `model` with decoupled weight decay `weight_decay` and gradient-norm clip.
    pub fn new(model: Unet<E, D>, weight_decay: f64, grad_clip: Option<f64>) -> Self {
        Self {
            opt: AdamW::new(&model.params),
            model,
            weight_decay,
            grad_clip,
        }
    }

    /// One step on `batch` (fields `h x w`) at learning rate `lr`; returns the loss before the step, or
    /// an error naming `step` if it is not finite (the parameters are then left untouched).
    pub fn step(
        &mut self,
        batch: &DdpmBatch,
        h: usize,
        w: usize,
        lr: f64,
        step: usize,
    ) -> Result<f64> {
        let (loss, grads) = batch_loss(&self.model, batch, h, w)?;
        if !loss.is_finite() {
            bail!("UNet training diverged: loss {loss} at step {step}");
        }
        let g: Vec<Flat<E, D>> = self.model.params.iter().map(|p| grads.get(p)).collect();
        drop(grads);
        let scale = match self.grad_clip {
            Some(max) => {
                let norm = g
                    .iter()
                    .map(|gi| {
                        gi.clone().square().sum::<(), _>().as_vec()[0]
                            .to_f64()
                            .expect("float")
                    })
                    .sum::<f64>()
                    .sqrt();
                if norm > max {
                    max / (norm + 1e-6)
                } else {
                    1.0
                }
            }
            None => 1.0,
        };
        self.opt
            .step(&mut self.model.params, &g, lr, self.weight_decay, scale);
        Ok(loss)
    }
}

/// AdamW state over the flat parameter list.
struct AdamW<E: Dtype, D: Device<E>> {
    m: Vec<Flat<E, D>>,
    v: Vec<Flat<E, D>>,
    t: i32,
}

impl<E: Dtype, D: Device<E>> AdamW<E, D> {
    fn new(params: &[Flat<E, D>]) -> Self {
        let zeros: Vec<_> = params
            .iter()
            .map(|p| p.device().zeros_like(p.shape()))
            .collect();
        Self {
            m: zeros.clone(),
            v: zeros,
            t: 0,
        }
    }

    /// One step (PyTorch's AdamW: β 0.9/0.999, ε 1e-8, p ← p (1 - lr wd) - lr m̂ / (sqrt(v̂) + ε)) with the
    /// gradients scaled by `scale` (the clipping factor).
    fn step(
        &mut self,
        params: &mut [Flat<E, D>],
        grads: &[Flat<E, D>],
        lr: f64,
        wd: f64,
        scale: f64,
    ) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (i, g) in grads.iter().enumerate() {
            let g = g.clone() * cst::<E>(scale);
            self.m[i] = self.m[i].clone() * cst::<E>(b1) + g.clone() * cst::<E>(1.0 - b1);
            self.v[i] = self.v[i].clone() * cst::<E>(b2) + g.square() * cst::<E>(1.0 - b2);
            let denom = (self.v[i].clone() * cst::<E>(1.0 / c2)).sqrt() + cst::<E>(eps);
            let update = self.m[i].clone() * cst::<E>(lr / c1) / denom;
            params[i] = params[i].clone() * cst::<E>(1.0 - lr * wd) - update;
        }
    }
}

/// Trains a UNet of architecture `arch` on `data` (`[N, c, h, w]`, model space) on `dev`; `on_step` sees
/// (step, loss). A non-finite loss stops training with the step and the value.
pub fn train_unet<E: Dtype, D: Device<E>>(
    data: &[f32],
    h: usize,
    w: usize,
    arch: UnetArch,
    cfg: &UnetTrainConfig,
    dev: &D,
    on_step: &mut dyn FnMut(usize, f64),
) -> Result<(Unet<E, D>, UnetTrainLog)> {
    let c = arch.in_channels;
    let len = c * h * w;
    let n = data.len() / len;
    if n == 0 || data.len() != n * len {
        bail!(
            "UNet training needs whole fields [N, {c}, {h}, {w}], got {} values",
            data.len()
        );
    }
    let ts = arch.trained_timesteps();
    let model = Unet::<E, D>::init(arch, dev, cfg.seed)?;
    model.grids(1, h, w)?;
    let n_val = if n >= 2 {
        ((n as f64 * cfg.validation).round() as usize).min(n - 1)
    } else {
        0
    };
    let n_train = n - n_val;
    let mut order: Vec<usize> = (0..n).collect();
    order.shuffle(&mut stream(cfg.seed, "unet/split"));
    let (train_ids, val_ids) = order.split_at(n_train);
    let batch = cfg.batch.clamp(1, n_train);
    let per_epoch = n_train.div_ceil(batch);
    // Fixed noise for the validation loss, so epochs are compared on the same draws.
    let mut val_rng = stream(cfg.seed, "unet/validation");
    let val_batches: Vec<DdpmBatch> = val_ids
        .chunks(batch)
        .map(|ids| ddpm_batch(data, ids, c, h * w, ts.clone(), &mut val_rng))
        .collect();
    let validate = |m: &Unet<E, D>| -> Result<f64> {
        let mut sum = 0.0;
        for vb in &val_batches {
            sum += eval_loss(m, vb, h, w)? * vb.t.len() as f64;
        }
        Ok(sum / n_val.max(1) as f64)
    };

    let mut rng = stream(cfg.seed, "unet/batches");
    let mut trainer = Trainer::new(model, cfg.weight_decay, cfg.grad_clip);
    let warmup = (cfg.warmup * cfg.iterations as f64).round() as usize;
    let mut log = UnetTrainLog {
        train_fields: n_train,
        validation_fields: n_val,
        ..Default::default()
    };
    let mut epoch_order: Vec<usize> = Vec::new();
    for step in 0..cfg.iterations {
        if step % per_epoch == 0 {
            if step > 0 && n_val > 0 {
                log.validation.push((step, validate(&trainer.model)?));
            }
            epoch_order = train_ids.to_vec();
            epoch_order.shuffle(&mut rng);
        }
        let k = step % per_epoch;
        let ids = &epoch_order[k * batch..((k + 1) * batch).min(n_train)];
        let b = ddpm_batch(data, ids, c, h * w, ts.clone(), &mut rng);
        let lr = lr_at(step, cfg.iterations, warmup, cfg.lr);
        let loss = trainer.step(&b, h, w, lr, step)?;
        log.losses.push(loss);
        on_step(step, loss);
    }
    let model = trainer.model;
    if n_val > 0 {
        log.validation.push((cfg.iterations, validate(&model)?));
    }
    Ok((model, log))
}
