//! The CPU "local" score model (spec §7b, engine.md "A cheaper score model for CPU"): a fully convolutional
//! stack of circular dilated 3x3 convolutions with SiLU and residual connections that predicts the noise ε
//! at one noise level, trained by denoising score matching, plus its checkpoint format.
//!
//! Architecture for dilations `[d0, d1, ..., dL]` and hidden width C (channels c of the data):
//! `a0 = conv_d0(x)` (c -> C); `a_l = a_{l-1} + conv_dl(silu(a_{l-1}))` (C -> C) for the middle dilations;
//! `ε̂ = conv_dL(silu(a_{L-1}))` (C -> c). With `[1,2,4,4,2,1]` the receptive field is 29 px and, at C = 32,
//! there are 38k parameters. Forward and backward are hand-written (one sample at a time, rayon over the
//! batch) and generic over f32/f64 so the whole network's gradient is checked by finite differences in f64.
//!
//! Noise convention (decided here): we follow the DDPM forward process at timestep 10, so training inputs
//! are `x_t = sqrt(ā) x0 + σ ε` with ā = 0.94478 and σ = sqrt(1 - ā) = 0.2350 ("VP scaling"; a config flag
//! turns the sqrt(ā) factor off). The score of the noised density at any state x is then
//! `s(x) = -ε̂(x) / σ`, and Tweedie's denoised estimate is `x̂0 = (x + σ² s(x)) / sqrt(ā)`
//! ([`LocalScore::signal_scale`] is that sqrt(ā), or 1 without VP scaling).

use std::path::Path;

use anyhow::{bail, Result};
use gemm::Parallelism;
use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use serde::{Deserialize, Serialize};

use super::layer::{conv_backward, conv_forward, ConvShape, Real};
use crate::nn::denoise::{eps_to_clipped_score, eps_to_score};
use crate::science::rng::{stream, substream};

/// The architecture and noise level of a [`LocalScore`] (stored as JSON in checkpoints).
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalScoreArch {
    /// Data channels (2 for Gray-Scott, 3 for RGB).
    pub channels: usize,
    /// Hidden width C.
    pub width: usize,
    /// Dilation of each 3x3 convolution, first (input) to last (output); at least 2 entries.
    pub dilations: Vec<usize>,
    /// The noise level σ = sqrt(1 - ā) the model was trained at.
    pub sigma: f32,
    /// The factor on clean data in the training inputs: sqrt(ā) with VP scaling, else 1.
    pub signal_scale: f32,
    /// Noise-conditional models only: the largest noise level trained on. The model then takes the noise
    /// level as one more input channel (a constant map of ln σ) and is valid for σ in [`Self::sigma`,
    /// `sigma_max`]; `None` is the single-level model (whose checkpoints do not carry the key).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f32>,
    /// The network predicts v = a ε - σ x0 (a = signal scale) instead of ε; ε̂ = a v̂ + σ x. Why: with ε as
    /// the target, x̂0 = (x - σ ε̂)/a multiplies the network's error by σ/a (2.4 at σ 0.92), so at the high
    /// levels a noise-conditional model barely learns the clean image, and an annealed start from noise
    /// gets the creatures' density wrong; v weights every level's x̂0 error alike (Salimans & Ho 2022).
    /// Needs VP scaling. `false` (ε) is not written, so older checkpoints read unchanged.
    #[serde(default, skip_serializing_if = "is_false")]
    pub v_prediction: bool,
    /// Noise-conditional models only: FiLM knots. 0 (not written) is off. K >= 2 modulates every SiLU's
    /// input per channel by the noise level, `silu(a (1 + γ(σ)) + β(σ))`, with γ and β interpolated linearly
    /// in ln σ between K knots spread evenly over [`Self::sigma`, `sigma_max`] (one learnt `[C]` scale and
    /// shift per knot and SiLU; zero at initialisation). Why: with σ only as an input channel, the first
    /// convolution turns it into a constant offset of the residual stream, so every layer applies nearly the
    /// same function at every level; a creature's placement at σ 0.9 and its edges at σ 0.235 need different
    /// ones (two separate networks for the two ends measured better than one). Measured on the alife
    /// firefly defaults (2 seeds): training loss 6-10 % lower, creature counts unchanged, and one rollout
    /// whose flow-level FiLM score let a clump blow up; so an option, not a default.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub film_knots: usize,
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero(k: &usize) -> bool {
    *k == 0
}

fn half() -> f64 {
    0.5
}

fn is_half(v: &f64) -> bool {
    *v == 0.5
}

impl LocalScoreArch {
    /// The convolution shapes, input to output.
    pub fn shapes(&self) -> Vec<ConvShape> {
        let l = self.dilations.len();
        self.dilations
            .iter()
            .enumerate()
            .map(|(i, &d)| ConvShape {
                c_in: if i == 0 {
                    self.input_channels()
                } else {
                    self.width
                },
                c_out: if i + 1 == l {
                    self.channels
                } else {
                    self.width
                },
                dilation: d,
            })
            .collect()
    }

    /// Channels of the network's input: the data's, plus the noise-level map if noise-conditional.
    pub fn input_channels(&self) -> usize {
        self.channels + usize::from(self.sigma_max.is_some())
    }

    /// The factor on clean data at noise level σ: sqrt(1 - σ²) with VP scaling (ā + σ² = 1), else 1.
    pub fn signal_scale_at(&self, sigma: f32) -> f32 {
        if sigma == self.sigma {
            self.signal_scale
        } else if self.signal_scale < 1.0 {
            (1.0 - sigma * sigma).max(0.0).sqrt()
        } else {
            1.0
        }
    }

    /// The number of convolution parameters (they come first in [`LocalScore::params`]).
    pub fn conv_param_len(&self) -> usize {
        self.shapes().iter().map(ConvShape::param_len).sum()
    }

    /// The number of FiLM parameters (after the convolutions'): per modulated SiLU (one before every
    /// convolution but the first), a `[C, K]` scale table then a `[C, K]` shift table.
    pub fn film_param_len(&self) -> usize {
        (self.dilations.len() - 1) * 2 * self.width * self.film_knots
    }

    /// The total number of parameters.
    pub fn param_len(&self) -> usize {
        self.conv_param_len() + self.film_param_len()
    }

    /// The FiLM interpolation weights of level `sigma` over the K knots (hat functions in ln σ, clamped to
    /// the trained range; empty without FiLM). At most two are nonzero and they sum to 1.
    pub fn film_weights(&self, sigma: f32) -> Vec<f32> {
        let k = self.film_knots;
        let Some(top) = self.sigma_max.filter(|_| k >= 2) else {
            return Vec::new();
        };
        let (lo, hi) = (self.sigma.ln() as f64, top.ln() as f64);
        let t = ((sigma.ln() as f64 - lo) / (hi - lo)).clamp(0.0, 1.0) * (k - 1) as f64;
        (0..k)
            .map(|j| (1.0 - (t - j as f64).abs()).max(0.0) as f32)
            .collect()
    }

    /// The receptive field in pixels (1 + 2 Σ dilations).
    pub fn receptive_field(&self) -> usize {
        1 + 2 * self.dilations.iter().sum::<usize>()
    }

    fn validate(&self) -> Result<()> {
        if self.dilations.len() < 2
            || self.dilations.contains(&0)
            || self.width == 0
            || self.channels == 0
            || self
                .sigma_max
                .is_some_and(|m| !(m >= self.sigma && m < 1.0))
            || (self.v_prediction && self.signal_scale >= 1.0)
            || (self.film_knots > 0 && (self.film_knots < 2 || self.sigma_max.is_none()))
        {
            bail!("invalid local score architecture {self:?}: need >= 2 positive dilations, positive widths, sigma_max in [sigma, 1), VP scaling for v-prediction, and FiLM (>= 2 knots) only on a noise-conditional model");
        }
        Ok(())
    }
}

/// A trained (or randomly initialised) local score model.
#[derive(Clone, Debug)]
pub struct LocalScore {
    /// Architecture and noise level.
    pub arch: LocalScoreArch,
    /// All parameters, layer by layer: weights `[c_out, c_in, 3, 3]` then bias `[c_out]`.
    pub params: Vec<f32>,
}

/// Settings of [`train_local_score`]. `Default` gives the CPU defaults of spec §7b.
#[derive(Clone, Debug, PartialEq, Serialize, Deserialize)]
pub struct LocalScoreConfig {
    /// Hidden width C.
    pub width: usize,
    /// Dilations of the convolutions, input to output.
    pub dilations: Vec<usize>,
    /// ā of the noise level (0.94478 = DDPM timestep 10 of linear β 1e-4 -> 0.1); σ = sqrt(1 - ā).
    pub abar: f32,
    /// Scale clean data by sqrt(ā) in training inputs, as the DDPM forward process does.
    pub vp_scaling: bool,
    /// Optimiser steps.
    pub iterations: usize,
    /// Samples per step.
    pub batch: usize,
    /// Side of the random periodic square crops trained on; `None` trains on whole fields.
    pub crop: Option<usize>,
    /// Peak learning rate of Adam.
    pub lr: f64,
    /// Fraction of the steps spent warming the learning rate up (linearly from lr/25), followed by a cosine
    /// decay to 0 (a one-cycle shape).
    pub warmup: f64,
    /// Clip the global gradient norm to this value.
    pub grad_clip: Option<f64>,
    /// Seed of initialisation, batches, augmentation and noise.
    pub seed: u64,
    /// Train a noise-conditional model over σ in [σ(ā), `sigma_max`] (see [`LocalScoreArch::sigma_max`]):
    /// half of every batch at the flow's level σ(ā), half at log-uniform levels up to `sigma_max`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub sigma_max: Option<f32>,
    /// Predict v instead of ε (see [`LocalScoreArch::v_prediction`]).
    #[serde(default, skip_serializing_if = "is_false")]
    pub v_prediction: bool,
    /// Noise-conditional models: the levels the upper half of every batch draws from, uniformly (DDPM's
    /// uniform timesteps: their σ, which crowd towards the top); `None` draws σ log-uniformly up to
    /// `sigma_max`, which crowds towards the flow's level instead.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper_levels: Option<Vec<f32>>,
    /// Noise-conditional models: the share of every batch trained at the model's own level σ(ā) (the
    /// flow's level, 0.5); the rest draws from the levels above. An expert for the top levels only
    /// (`score_high`) has no use for its bottom level and can set 0.
    #[serde(default = "half", skip_serializing_if = "is_half")]
    pub base_share: f64,
    /// FiLM knots of a noise-conditional model (see [`LocalScoreArch::film_knots`]); 0 is off.
    #[serde(default, skip_serializing_if = "is_zero")]
    pub film_knots: usize,
}

impl Default for LocalScoreConfig {
    fn default() -> Self {
        Self {
            width: 32,
            dilations: vec![1, 2, 4, 4, 2, 1],
            abar: 0.94478,
            vp_scaling: true,
            iterations: 500,
            batch: 16,
            crop: Some(64),
            lr: 3e-3,
            warmup: 0.1,
            grad_clip: Some(1.0),
            seed: 0,
            sigma_max: None,
            v_prediction: false,
            upper_levels: None,
            base_share: 0.5,
            film_knots: 0,
        }
    }
}

#[inline]
fn sigmoid<T: Real>(a: T) -> T {
    T::from_f64(1.0) / (T::from_f64(1.0) + (-a).exp())
}

/// The noise-level feature a noise-conditional model sees as its extra input channel.
fn noise_feature(sigma: f32) -> f32 {
    sigma.ln()
}

/// `x` `[c, h, w]` with a constant channel of `value` appended: `[c + 1, h, w]`.
fn with_constant_channel<T: Real>(x: &[T], hw: usize, value: T) -> Vec<T> {
    let mut out = Vec::with_capacity(x.len() + hw);
    out.extend_from_slice(x);
    out.extend(std::iter::repeat_n(value, hw));
    out
}

/// The network as the forward and backward passes see it: convolution shapes, all parameters (convolutions
/// then FiLM tables), and the FiLM knot weights of the sample's noise level (empty: no FiLM).
struct Net<'a, T> {
    shapes: &'a [ConvShape],
    params: &'a [T],
    film: &'a [T],
}

impl<T: Real> Net<'_, T> {
    fn conv_len(&self) -> usize {
        self.shapes.iter().map(ConvShape::param_len).sum()
    }

    /// Offset of SiLU `j`'s `[C, K]` scale table in `params` (its shift table follows).
    fn film_offset(&self, j: usize) -> usize {
        self.conv_len() + j * 2 * self.shapes[0].c_out * self.film.len()
    }

    /// Per-channel (multiplier 1 + γ, shift β) of SiLU `j` (the one before convolution `j + 1`).
    fn modulation(&self, j: usize) -> (Vec<T>, Vec<T>) {
        let (c, k) = (self.shapes[0].c_out, self.film.len());
        if k == 0 {
            return (vec![T::from_f64(1.0); c], vec![T::default(); c]);
        }
        let o = self.film_offset(j);
        let interp = |table: &[T], ch: usize| -> T {
            table[ch * k..(ch + 1) * k]
                .iter()
                .zip(self.film)
                .fold(T::default(), |acc, (&g, &f)| acc + g * f)
        };
        let (scale, shift) = self.params[o..o + 2 * c * k].split_at(c * k);
        (
            (0..c)
                .map(|ch| T::from_f64(1.0) + interp(scale, ch))
                .collect(),
            (0..c).map(|ch| interp(shift, ch)).collect(),
        )
    }
}

/// `silu(a m + b)` per channel of `a` `[C, hw]`.
fn modulated_silu<T: Real>(a: &[T], hw: usize, (m, b): &(Vec<T>, Vec<T>), z: &mut [T]) {
    for (ch, (zc, ac)) in z.chunks_mut(hw).zip(a.chunks(hw)).enumerate() {
        for (z, &a) in zc.iter_mut().zip(ac) {
            let u = a * m[ch] + b[ch];
            *z = u * sigmoid(u);
        }
    }
}

/// Forward pass of one sample `[c, h, w]`; returns ε̂ and, if `keep`, the residual-stream activations
/// `a_0 .. a_{L-2}` for the backward pass.
fn forward_sample<T: Real>(
    net: &Net<'_, T>,
    x: &[T],
    h: usize,
    w: usize,
    keep: bool,
    par: Parallelism,
) -> (Vec<T>, Vec<Vec<T>>) {
    let (shapes, params) = (net.shapes, net.params);
    let hw = h * w;
    let width = shapes[0].c_out;
    let max_k = shapes
        .iter()
        .map(|s| s.c_in * 9)
        .max()
        .expect("at least one layer");
    let mut col = vec![T::default(); max_k * hw];
    let mut acts = Vec::new();
    let mut a = vec![T::default(); width * hw];
    let mut off = 0;
    conv_forward(&shapes[0], &params[off..], x, h, w, &mut a, &mut col, par);
    off += shapes[0].param_len();
    let mut z = vec![T::default(); width * hw];
    let mut t = vec![T::default(); width * hw];
    let l = shapes.len();
    for (j, s) in shapes[1..l - 1].iter().enumerate() {
        modulated_silu(&a, hw, &net.modulation(j), &mut z);
        conv_forward(s, &params[off..], &z, h, w, &mut t, &mut col, par);
        off += s.param_len();
        let next: Vec<T> = a.iter().zip(&t).map(|(&a, &t)| a + t).collect();
        if keep {
            acts.push(std::mem::replace(&mut a, next));
        } else {
            a = next;
        }
    }
    modulated_silu(&a, hw, &net.modulation(l - 2), &mut z);
    let last = &shapes[l - 1];
    let mut y = vec![T::default(); last.c_out * hw];
    conv_forward(last, &params[off..], &z, h, w, &mut y, &mut col, par);
    if keep {
        acts.push(a);
    }
    (y, acts)
}

/// Backward through SiLU `j`'s modulated SiLU at input `a`, given dL/dz = `dz`: returns dL/da and adds the
/// FiLM tables' gradient into `grad`.
fn modulated_silu_backward<T: Real>(
    net: &Net<'_, T>,
    j: usize,
    a: &[T],
    hw: usize,
    dz: &[T],
    grad: &mut [T],
) -> Vec<T> {
    let (m, b) = net.modulation(j);
    let one = T::from_f64(1.0);
    let c = m.len();
    let mut da = vec![T::default(); a.len()];
    let (mut dm, mut db) = (vec![T::default(); c], vec![T::default(); c]);
    for ch in 0..c {
        let r = ch * hw..(ch + 1) * hw;
        for ((d, &g), &a) in da[r.clone()].iter_mut().zip(&dz[r.clone()]).zip(&a[r]) {
            let u = a * m[ch] + b[ch];
            let s = sigmoid(u);
            // Grouped as g times the SiLU derivative, as before FiLM: an unmodulated model trains
            // bit-identically to earlier versions.
            let du = g * (s * (one + u * (one - s)));
            *d = du * m[ch];
            dm[ch] += du * a;
            db[ch] += du;
        }
    }
    let k = net.film.len();
    if k > 0 {
        let o = net.film_offset(j);
        let (gs, gb) = grad[o..o + 2 * c * k].split_at_mut(c * k);
        for ch in 0..c {
            for (i, &f) in net.film.iter().enumerate() {
                gs[ch * k + i] += dm[ch] * f;
                gb[ch * k + i] += db[ch] * f;
            }
        }
    }
    da
}

/// Backward pass of one sample: adds dL/dparams into `grad` given dL/dε̂ = `dy`.
fn backward_sample<T: Real>(
    net: &Net<'_, T>,
    x: &[T],
    acts: &[Vec<T>],
    h: usize,
    w: usize,
    dy: &[T],
    grad: &mut [T],
) {
    let (shapes, params) = (net.shapes, net.params);
    let hw = h * w;
    let par = Parallelism::None;
    let max_k = shapes
        .iter()
        .map(|s| s.c_in * 9)
        .max()
        .expect("at least one layer");
    let mut col = vec![T::default(); max_k * hw];
    let mut offs = vec![0usize];
    for s in shapes {
        offs.push(offs.last().expect("nonempty") + s.param_len());
    }
    let l = shapes.len();
    // Output layer.
    let a_last = &acts[l - 2];
    let mut dz = vec![T::default(); a_last.len()];
    let mut z = vec![T::default(); a_last.len()];
    modulated_silu(a_last, hw, &net.modulation(l - 2), &mut z);
    let (o0, o1) = (offs[l - 1], offs[l]);
    conv_backward(
        &shapes[l - 1],
        &params[o0..o1],
        &z,
        h,
        w,
        dy,
        &mut grad[o0..o1],
        Some(&mut dz),
        &mut col,
        par,
    );
    let mut da = modulated_silu_backward(net, l - 2, a_last, hw, &dz, grad);
    // Residual layers, last to first: a_i = a_{i-1} + conv_i(silu(a_{i-1})).
    for i in (1..l - 1).rev() {
        let a_prev = &acts[i - 1];
        modulated_silu(a_prev, hw, &net.modulation(i - 1), &mut z);
        dz.iter_mut().for_each(|v| *v = T::default());
        let (o0, o1) = (offs[i], offs[i + 1]);
        conv_backward(
            &shapes[i],
            &params[o0..o1],
            &z,
            h,
            w,
            &da,
            &mut grad[o0..o1],
            Some(&mut dz),
            &mut col,
            par,
        );
        let through = modulated_silu_backward(net, i - 1, a_prev, hw, &dz, grad);
        da.iter_mut().zip(&through).for_each(|(d, &g)| *d += g);
    }
    conv_backward(
        &shapes[0],
        &params[..offs[1]],
        x,
        h,
        w,
        &da,
        &mut grad[..offs[1]],
        None,
        &mut col,
        par,
    );
}

/// Sum over one sample of (ε̂ - ε)² and its parameter gradient (added into `grad`).
fn sample_loss_grad<T: Real>(
    net: &Net<'_, T>,
    x: &[T],
    eps: &[T],
    h: usize,
    w: usize,
    grad: &mut [T],
) -> f64 {
    let (y, acts) = forward_sample(net, x, h, w, true, Parallelism::None);
    let dy: Vec<T> = y
        .iter()
        .zip(eps)
        .map(|(&a, &b)| T::from_f64(2.0) * (a - b))
        .collect();
    backward_sample(net, x, &acts, h, w, &dy, grad);
    y.iter()
        .zip(eps)
        .map(|(&a, &b)| (a - b).to_f64().powi(2))
        .sum()
}

impl LocalScore {
    /// A freshly initialised model (PyTorch-style uniform ±1/sqrt(fan_in) weights, zero bias; the output
    /// layer scaled by 0.1 so training starts near ε̂ = 0).
    pub fn init(arch: LocalScoreArch, seed: u64) -> Self {
        let mut rng = stream(seed, "local-score/init");
        let shapes = arch.shapes();
        let mut params = Vec::with_capacity(arch.param_len());
        for (i, s) in shapes.iter().enumerate() {
            let bound =
                1.0 / ((s.c_in * 9) as f32).sqrt() * if i + 1 == shapes.len() { 0.1 } else { 1.0 };
            params.extend((0..s.weight_len()).map(|_| rng.gen_range(-bound..bound)));
            params.extend(std::iter::repeat_n(0.0, s.c_out));
        }
        // FiLM starts as the identity (γ = β = 0): the network begins as the unmodulated one.
        params.extend(std::iter::repeat_n(0.0, arch.film_param_len()));
        Self { arch, params }
    }

    /// The paper's baseline: the same architecture with all weights randomly redrawn from `seed`.
    pub fn randomized(&self, seed: u64) -> Self {
        Self::init(self.arch.clone(), seed)
    }

    /// The noise level σ the model was trained at.
    pub fn sigma(&self) -> f32 {
        self.arch.sigma
    }

    /// The factor on clean data in training inputs (sqrt(ā) with VP scaling, else 1); Tweedie's estimate
    /// is `x̂0 = (x + σ² s(x)) / signal_scale`.
    pub fn signal_scale(&self) -> f32 {
        self.arch.signal_scale
    }

    /// The predicted noise ε̂ for a batch `x` of `n` fields `[n, c, h, w]`, written to `out` (same shape),
    /// at the model's own noise level.
    pub fn predict_eps(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        self.predict_eps_at(x, n, h, w, self.arch.sigma, out);
    }

    /// [`LocalScore::predict_eps`] at noise level `sigma` (only a noise-conditional model can take another
    /// level than its own; a single-level model panics).
    pub fn predict_eps_at(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        sigma: f32,
        out: &mut [f32],
    ) {
        let len = self.arch.channels * h * w;
        assert_eq!(x.len(), n * len, "x must be [n, c, h, w]");
        assert_eq!(out.len(), n * len, "out must be [n, c, h, w]");
        let conditional = self.arch.sigma_max.is_some();
        assert!(
            conditional || sigma == self.arch.sigma,
            "a single-level score model has no noise level {sigma} (only {})",
            self.arch.sigma
        );
        let feature = conditional.then(|| noise_feature(sigma));
        let input = |xi: &[f32]| -> Vec<f32> {
            match feature {
                Some(f) => with_constant_channel(xi, h * w, f),
                None => xi.to_vec(),
            }
        };
        let shapes = self.arch.shapes();
        let film = self.arch.film_weights(sigma);
        let net = Net {
            shapes: &shapes,
            params: &self.params,
            film: &film,
        };
        if n >= rayon::current_num_threads() {
            out.par_chunks_mut(len)
                .zip(x.par_chunks(len))
                .for_each(|(o, xi)| {
                    let xi = input(xi);
                    o.copy_from_slice(&forward_sample(&net, &xi, h, w, false, Parallelism::None).0)
                });
        } else {
            let par = Parallelism::Rayon(0);
            for (o, xi) in out.chunks_mut(len).zip(x.chunks(len)) {
                let xi = input(xi);
                o.copy_from_slice(&forward_sample(&net, &xi, h, w, false, par).0);
            }
        }
        if self.arch.v_prediction {
            let a = self.arch.signal_scale_at(sigma);
            out.par_iter_mut()
                .zip(x.par_iter())
                .for_each(|(o, &x)| *o = a * *o + sigma * x);
        }
    }

    /// The score s(x, σ) = -ε̂(x, σ)/σ of the density noised at level `sigma` (a noise-conditional model;
    /// see [`LocalScore::predict_eps_at`]), for a batch `[n, c, h, w]`, written to `out`.
    pub fn score_at(&self, x: &[f32], n: usize, h: usize, w: usize, sigma: f32, out: &mut [f32]) {
        self.predict_eps_at(x, n, h, w, sigma, out);
        eps_to_score(sigma, out);
    }

    /// The score s(x) = -ε̂(x)/σ of the noised density for a batch `[n, c, h, w]`, written to `out`.
    pub fn score(&self, x: &[f32], n: usize, h: usize, w: usize, out: &mut [f32]) {
        self.score_at(x, n, h, w, self.arch.sigma, out);
    }

    /// The score like [`LocalScore::score`], optionally with the reference's clipping of the denoised
    /// estimate to [-1, 1] ([`eps_to_clipped_score`]; identical to `score` when nothing clips).
    pub fn score_with(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        clip_x0: bool,
        out: &mut [f32],
    ) {
        self.score_at_with(x, n, h, w, self.arch.sigma, clip_x0, out);
    }

    /// [`LocalScore::score_with`] at noise level `sigma` (see [`LocalScore::score_at`]). Clipping gives the
    /// score a restoring force outside the data's range [-1, 1], where the network never saw data.
    #[expect(
        clippy::too_many_arguments,
        reason = "batch shape, level and option of one call"
    )]
    pub fn score_at_with(
        &self,
        x: &[f32],
        n: usize,
        h: usize,
        w: usize,
        sigma: f32,
        clip_x0: bool,
        out: &mut [f32],
    ) {
        if !clip_x0 {
            return self.score_at(x, n, h, w, sigma, out);
        }
        self.predict_eps_at(x, n, h, w, sigma, out);
        eps_to_clipped_score(x, sigma, self.arch.signal_scale_at(sigma), out);
    }

    /// Saves to a safetensors file: one f32 tensor per layer, `layers.{i}.weight` `[c_out, c_in, 3, 3]`
    /// (PyTorch Conv2d layout) and `layers.{i}.bias` `[c_out]`, with the [`LocalScoreArch`] as JSON under
    /// the metadata key `"arch"` (the only metadata key, so that the bytes are deterministic).
    pub fn save(&self, path: &Path) -> Result<()> {
        let mut tensors = Vec::new();
        let mut off = 0;
        for (i, s) in self.arch.shapes().iter().enumerate() {
            let weight = self.params[off..off + s.weight_len()].to_vec();
            off += s.weight_len();
            let bias = self.params[off..off + s.c_out].to_vec();
            off += s.c_out;
            tensors.push((
                format!("layers.{i}.weight"),
                vec![s.c_out, s.c_in, 3, 3],
                weight,
            ));
            tensors.push((format!("layers.{i}.bias"), vec![s.c_out], bias));
        }
        let (c, k) = (self.arch.width, self.arch.film_knots);
        for j in 0..self.arch.dilations.len() - 1 {
            if k == 0 {
                break;
            }
            for name in ["scale", "shift"] {
                tensors.push((
                    format!("film.{j}.{name}"),
                    vec![c, k],
                    self.params[off..off + c * k].to_vec(),
                ));
                off += c * k;
            }
        }
        super::checkpoint::save(path, &tensors, &self.arch, "local score")
    }

    /// Loads a checkpoint written by [`LocalScore::save`], checking names, shapes and dtype.
    pub fn load(path: &Path) -> Result<Self> {
        let (arch, file): (LocalScoreArch, _) = super::checkpoint::load(path, "local score")?;
        arch.validate()?;
        let mut params = Vec::with_capacity(arch.param_len());
        for (i, s) in arch.shapes().iter().enumerate() {
            params.extend(file.tensor(&format!("layers.{i}.weight"), &[s.c_out, s.c_in, 3, 3])?);
            params.extend(file.tensor(&format!("layers.{i}.bias"), &[s.c_out])?);
        }
        let (c, k) = (arch.width, arch.film_knots);
        for j in 0..arch.dilations.len() - 1 {
            if k == 0 {
                break;
            }
            for name in ["scale", "shift"] {
                params.extend(file.tensor(&format!("film.{j}.{name}"), &[c, k])?);
            }
        }
        Ok(Self { arch, params })
    }
}

/// Cuts a random periodic `s x s` crop (random offset = periodic shift) of one `[c, h, w]` field and applies
/// one of the 8 symmetries of the square (transposes only when the crop is square, which crops always are).
pub(super) fn augment(
    field: &[f32],
    c: usize,
    h: usize,
    w: usize,
    s: usize,
    rng: &mut impl rand::Rng,
) -> Vec<f32> {
    let (oy, ox) = (rng.gen_range(0..h), rng.gen_range(0..w));
    let t: u8 = rng.gen_range(0..8);
    let mut out = vec![0.0f32; c * s * s];
    for ch in 0..c {
        for y in 0..s {
            for x in 0..s {
                let (mut yy, mut xx) = if t & 4 != 0 { (x, y) } else { (y, x) };
                if t & 1 != 0 {
                    yy = s - 1 - yy;
                }
                if t & 2 != 0 {
                    xx = s - 1 - xx;
                }
                out[(ch * s + y) * s + x] = field[(ch * h + (yy + oy) % h) * w + (xx + ox) % w];
            }
        }
    }
    out
}

/// The learning rate at step `it`: linear warm-up from lr/25, then cosine decay to 0.
fn lr_at(cfg: &LocalScoreConfig, it: usize) -> f64 {
    let warm = ((cfg.iterations as f64 * cfg.warmup).ceil() as usize).max(1);
    if it < warm {
        cfg.lr * (0.04 + 0.96 * it as f64 / warm as f64)
    } else {
        let p = (it - warm) as f64 / (cfg.iterations - warm).max(1) as f64;
        cfg.lr * 0.5 * (1.0 + (std::f64::consts::PI * p).cos())
    }
}

/// Trains a local score model by denoising score matching at one noise level on `data` `[n, c, h, w]`
/// (model space [-1, 1]): loss = mean (ε̂(sqrt(ā)·x0 + σε) - ε)² over random periodic crops with random
/// square symmetries, Adam with warm-up + cosine learning rate. Calls `on_iter(step, loss)` after every step
/// and returns the model with the loss history. Fails, naming the step, if the loss stops being finite.
pub fn train_local_score(
    data: &[f32],
    h: usize,
    w: usize,
    c: usize,
    cfg: &LocalScoreConfig,
    on_iter: &mut dyn FnMut(usize, f64),
) -> Result<(LocalScore, Vec<f64>)> {
    let n = data.len() / (c * h * w);
    if n == 0 || data.len() != n * c * h * w {
        bail!(
            "training data has {} values, not a nonempty [n, {c}, {h}, {w}] batch",
            data.len()
        );
    }
    let s = cfg.crop.unwrap_or(h.min(w)).min(h).min(w);
    let sigma = (1.0 - cfg.abar).sqrt();
    let scale = if cfg.vp_scaling { cfg.abar.sqrt() } else { 1.0 };
    let arch = LocalScoreArch {
        channels: c,
        width: cfg.width,
        dilations: cfg.dilations.clone(),
        sigma,
        signal_scale: scale,
        sigma_max: cfg.sigma_max,
        v_prediction: cfg.v_prediction,
        film_knots: cfg.film_knots,
    };
    arch.validate()?;
    let shapes = arch.shapes();
    let mut model = LocalScore::init(arch, cfg.seed);
    let p = model.params.len();
    let (mut m, mut v) = (vec![0.0f64; p], vec![0.0f64; p]);
    let (b1, b2, eps_adam) = (0.9f64, 0.999f64, 1e-8f64);
    let count = (cfg.batch * c * s * s) as f64;
    let mut losses = Vec::with_capacity(cfg.iterations);
    for it in 0..cfg.iterations {
        let per: Vec<(f64, Vec<f32>)> = (0..cfg.batch)
            .into_par_iter()
            .map(|b| {
                let mut rng = substream(cfg.seed, "local-score/batch", (it * cfg.batch + b) as u64);
                let idx = rng.gen_range(0..n);
                let x0 = augment(
                    &data[idx * c * h * w..(idx + 1) * c * h * w],
                    c,
                    h,
                    w,
                    s,
                    &mut rng,
                );
                let eps: Vec<f32> = (0..x0.len())
                    .map(|_| StandardNormal.sample(&mut rng))
                    .collect();
                let level = training_level(cfg, sigma, b, &mut rng);
                let a = model.arch.signal_scale_at(level);
                let xt: Vec<f32> = x0
                    .iter()
                    .zip(&eps)
                    .map(|(&x, &e)| a * x + level * e)
                    .collect();
                let xt = if cfg.sigma_max.is_some() {
                    with_constant_channel(&xt, s * s, noise_feature(level))
                } else {
                    xt
                };
                let target: Vec<f32> = if cfg.v_prediction {
                    eps.iter()
                        .zip(&x0)
                        .map(|(&e, &x)| a * e - level * x)
                        .collect()
                } else {
                    eps
                };
                let film = model.arch.film_weights(level);
                let net = Net {
                    shapes: &shapes,
                    params: &model.params,
                    film: &film,
                };
                let mut g = vec![0.0f32; p];
                let l = sample_loss_grad(&net, &xt, &target, s, s, &mut g);
                (l, g)
            })
            .collect();
        let mut grad = vec![0.0f64; p];
        let mut loss = 0.0;
        for (l, g) in &per {
            loss += l;
            grad.iter_mut().zip(g).for_each(|(a, &b)| *a += b as f64);
        }
        loss /= count;
        grad.iter_mut().for_each(|g| *g /= count);
        if !loss.is_finite() || grad.iter().any(|g| !g.is_finite()) {
            bail!("local score training diverged: loss {loss} at iteration {it} (try a lower lr than {})", cfg.lr);
        }
        if let Some(clip) = cfg.grad_clip {
            let norm = grad.iter().map(|g| g * g).sum::<f64>().sqrt();
            if norm > clip {
                grad.iter_mut().for_each(|g| *g *= clip / norm);
            }
        }
        let lr = lr_at(cfg, it);
        let t = (it + 1) as i32;
        let (c1, c2) = (1.0 - b1.powi(t), 1.0 - b2.powi(t));
        for j in 0..p {
            m[j] = b1 * m[j] + (1.0 - b1) * grad[j];
            v[j] = b2 * v[j] + (1.0 - b2) * grad[j] * grad[j];
            model.params[j] -= (lr * (m[j] / c1) / ((v[j] / c2).sqrt() + eps_adam)) as f32;
        }
        losses.push(loss);
        on_iter(it, loss);
    }
    Ok((model, losses))
}

/// The noise level of batch item `b`: the flow's level σ for a single-level model; for a noise-conditional
/// one, a share [`LocalScoreConfig::base_share`] of the items (spread evenly over the batch: the even items
/// at the default 0.5) sits at σ and the rest draw from [`LocalScoreConfig::upper_levels`], or
/// log-uniformly in [σ, `sigma_max`].
fn training_level(cfg: &LocalScoreConfig, sigma: f32, b: usize, rng: &mut impl rand::Rng) -> f32 {
    // Item b is "upper" when b·q and (b+1)·q straddle an integer, q = 1 - base_share: exactly the odd items
    // at q = 1/2, every item at q = 1, none at q = 0.
    let q = 1.0 - cfg.base_share;
    let upper = (b as f64 * q).floor() != ((b + 1) as f64 * q).floor();
    match (cfg.sigma_max, &cfg.upper_levels) {
        (Some(_), Some(levels)) if upper && !levels.is_empty() => {
            levels[rng.gen_range(0..levels.len())]
        }
        (Some(top), _) if upper => (sigma.ln() + rng.gen::<f32>() * (top.ln() - sigma.ln())).exp(),
        _ => sigma,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A small VP-scaled single-level architecture, dilations [1, 2, 1], at the flow's level σ 0.235.
    fn tiny_arch(channels: usize, width: usize) -> LocalScoreArch {
        LocalScoreArch {
            channels,
            width,
            dilations: vec![1, 2, 1],
            sigma: 0.235,
            signal_scale: 0.972,
            sigma_max: None,
            v_prediction: false,
            film_knots: 0,
        }
    }

    /// Half of a noise-conditional batch at the flow's level (by default), half above it: log-uniformly in σ
    /// (median at the geometric mean of the range), or uniformly over the given levels (each drawn about
    /// equally often); other shares at the flow's level spread evenly over the batch.
    #[test]
    fn training_levels_split_the_batch_and_follow_the_chosen_sampling() {
        let (sigma, top) = (0.235f32, 0.997f32);
        let mut cfg = LocalScoreConfig {
            sigma_max: Some(top),
            ..LocalScoreConfig::default()
        };
        let mut rng = stream(3, "levels");
        let draw = |cfg: &LocalScoreConfig, rng: &mut crate::science::rng::Rng| -> Vec<f32> {
            (0..4000)
                .map(|b| training_level(cfg, sigma, b, rng))
                .collect()
        };
        let log = draw(&cfg, &mut rng);
        assert!(log.iter().step_by(2).all(|&l| l == sigma));
        let mut upper: Vec<f32> = log.iter().skip(1).step_by(2).copied().collect();
        assert!(upper.iter().all(|&l| l >= sigma && l <= top));
        upper.sort_by(f32::total_cmp);
        let median = upper[upper.len() / 2];
        assert!(
            (median / (sigma * top).sqrt() - 1.0).abs() < 0.05,
            "median {median}"
        );
        cfg.upper_levels = Some(vec![0.5, 0.9, 0.99]);
        let listed = draw(&cfg, &mut rng);
        assert!(listed.iter().step_by(2).all(|&l| l == sigma));
        for want in [0.5f32, 0.9, 0.99] {
            let k = listed
                .iter()
                .skip(1)
                .step_by(2)
                .filter(|&&l| l == want)
                .count();
            assert!(
                (600..734).contains(&k),
                "level {want} drawn {k} of 2000 times"
            );
        }
        // Other shares: an expert with none at its own level; a quarter, every fourth item.
        cfg.upper_levels = None;
        cfg.base_share = 0.0;
        assert!(draw(&cfg, &mut rng).iter().all(|&l| l != sigma));
        cfg.base_share = 0.25;
        let quarter = draw(&cfg, &mut rng);
        let base: Vec<usize> = (0..quarter.len())
            .filter(|&b| quarter[b] == sigma)
            .collect();
        assert_eq!(base.len(), 1000);
        assert!(base.windows(2).all(|p| p[1] - p[0] == 4), "evenly spread");
        cfg.sigma_max = None;
        assert!(
            draw(&cfg, &mut rng).iter().all(|&l| l == sigma),
            "single-level model"
        );
    }

    /// Saves `m` to a checkpoint and loads it back: the same architecture and the same parameters.
    fn assert_checkpoint_roundtrip(m: &LocalScore) {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("score.safetensors");
        m.save(&path).unwrap();
        let back = LocalScore::load(&path).unwrap();
        assert_eq!(back.arch, m.arch);
        assert_eq!(back.params, m.params);
    }

    /// f64 inputs of a gradient check, drawn in this order from `rng`: the model's parameters each moved by
    /// up to ±0.3 (nonzero biases and FiLM tables, so every path matters), then a data field and a target
    /// `[channels, h, w]` uniform in [-1, 1].
    fn gradient_check_inputs(
        model: &LocalScore,
        mut rng: crate::science::rng::Rng,
        h: usize,
        w: usize,
    ) -> (Vec<f64>, Vec<f64>, Vec<f64>) {
        let params = model
            .params
            .iter()
            .map(|&v| v as f64 + rng.gen_range(-0.3..0.3))
            .collect();
        let n = model.arch.channels * h * w;
        let x = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let eps = (0..n).map(|_| rng.gen_range(-1.0..1.0)).collect();
        (params, x, eps)
    }

    /// Central differences in f64 of one sample's loss |ε̂(x) - ε|² against the hand-written backward
    /// pass, on every parameter.
    fn assert_loss_gradient_matches_finite_differences(
        shapes: &[ConvShape],
        params: &[f64],
        film: &[f64],
        x: &[f64],
        eps: &[f64],
        h: usize,
        w: usize,
    ) {
        let mut g = vec![0.0; params.len()];
        fn net<'a>(shapes: &'a [ConvShape], params: &'a [f64], film: &'a [f64]) -> Net<'a, f64> {
            Net {
                shapes,
                params,
                film,
            }
        }
        sample_loss_grad(&net(shapes, params, film), x, eps, h, w, &mut g);
        let loss = |p: &[f64]| {
            let (y, _) = forward_sample(&net(shapes, p, film), x, h, w, false, Parallelism::None);
            y.iter().zip(eps).map(|(a, b)| (a - b).powi(2)).sum::<f64>()
        };
        let e = 1e-6;
        for j in 0..params.len() {
            let (mut a, mut b) = (params.to_vec(), params.to_vec());
            a[j] += e;
            b[j] -= e;
            let fd = (loss(&a) - loss(&b)) / (2.0 * e);
            assert!(
                (fd - g[j]).abs() < 1e-6 * (1.0 + fd.abs()),
                "param {j}: fd {fd} vs {}",
                g[j]
            );
        }
    }

    /// Central differences in f64 of the whole network's loss against the hand-written backward pass,
    /// on every parameter of a small net with wrapping dilations.
    #[test]
    fn network_gradient_matches_finite_differences() {
        let arch = LocalScoreArch {
            channels: 2,
            width: 3,
            dilations: vec![1, 2, 3, 1],
            sigma: 0.235,
            signal_scale: 1.0,
            sigma_max: None,
            v_prediction: false,
            film_knots: 0,
        };
        let shapes = arch.shapes();
        let model = LocalScore::init(arch, 3);
        let mut params: Vec<f64> = model.params.iter().map(|&v| v as f64).collect();
        // Nonzero biases and a larger output layer so every path matters.
        let mut rng = stream(4, "gc");
        params
            .iter_mut()
            .for_each(|v| *v += rng.gen_range(-0.3..0.3));
        let (h, w) = (5, 6);
        let x: Vec<f64> = (0..2 * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        let eps: Vec<f64> = (0..2 * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
        assert_loss_gradient_matches_finite_differences(&shapes, &params, &[], &x, &eps, h, w);
    }

    #[test]
    fn clipped_score_matches_plain_score_when_nothing_clips() {
        let arch = tiny_arch(2, 4);
        let m = LocalScore::init(arch, 1);
        let x: Vec<f32> = (0..2 * 8 * 8)
            .map(|i| 0.3 * ((i as f32) * 0.37).sin())
            .collect();
        let (mut a, mut b) = (vec![0.0; x.len()], vec![0.0; x.len()]);
        m.score(&x, 1, 8, 8, &mut a);
        m.score_with(&x, 1, 8, 8, true, &mut b);
        assert!(a
            .iter()
            .zip(&b)
            .all(|(p, q)| (p - q).abs() < 1e-3 * (1.0 + p.abs())));
    }

    #[test]
    fn save_load_roundtrip() {
        let arch = tiny_arch(2, 4);
        let m = LocalScore::init(arch, 1);
        assert_checkpoint_roundtrip(&m);
        assert_ne!(m.randomized(2).params, m.params);
    }

    /// A short training run on generated waves fields: the loss falls well below its starting value.
    #[test]
    fn training_on_waves_reduces_loss() {
        let p = crate::science::gray_scott::preset("waves").unwrap();
        let mut data = crate::science::gray_scott::generate(&p, 32, 1500, 8, 1);
        crate::science::gray_scott::to_model_space(&mut data);
        let cfg = LocalScoreConfig {
            width: 8,
            dilations: vec![1, 2, 2, 1],
            iterations: 60,
            batch: 8,
            crop: Some(24),
            lr: 5e-3,
            ..Default::default()
        };
        let (_, losses) = train_local_score(&data, 32, 32, 2, &cfg, &mut |_, _| {}).unwrap();
        let first: f64 = losses[..5].iter().sum::<f64>() / 5.0;
        let last: f64 = losses[losses.len() - 5..].iter().sum::<f64>() / 5.0;
        assert!(last < 0.6 * first, "loss {first} -> {last}");
    }

    /// A noise-conditional network (one more input channel: the constant map of ln σ): the hand-written
    /// gradient of the loss at a level σ ≠ the model's matches central differences in f64 on every
    /// parameter, including the noise channel's weights; and the conditioning changes the output.
    #[test]
    fn conditional_network_gradient_matches_finite_differences() {
        let arch = LocalScoreArch {
            sigma_max: Some(0.9),
            ..tiny_arch(2, 3)
        };
        assert_eq!(arch.input_channels(), 3);
        assert!((arch.signal_scale_at(0.6) - 0.8).abs() < 1e-6);
        let shapes = arch.shapes();
        let model = LocalScore::init(arch, 5);
        let (h, w) = (5, 4);
        let (params, x, eps) = gradient_check_inputs(&model, stream(6, "gc"), h, w);
        let xin = with_constant_channel(&x, h * w, noise_feature(0.6) as f64);
        assert_loss_gradient_matches_finite_differences(&shapes, &params, &[], &xin, &eps, h, w);
        // score = score_at(own level); another level gives another score.
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let (mut a, mut b, mut c) = (
            vec![0.0; xf.len()],
            vec![0.0; xf.len()],
            vec![0.0; xf.len()],
        );
        model.score(&xf, 1, h, w, &mut a);
        model.score_at(&xf, 1, h, w, 0.235, &mut b);
        model.score_at(&xf, 1, h, w, 0.6, &mut c);
        assert_eq!(a, b);
        assert!(a.iter().zip(&c).any(|(p, q)| (p - q).abs() > 1e-3));
    }

    /// FiLM: the hand-written gradient at a level between two knots matches central differences in f64 on
    /// every parameter, the FiLM tables included (random, so every modulation matters); the knot weights
    /// are a partition of unity that picks one knot at each end and clamps outside the range; zero tables
    /// (the initialisation) give exactly the unmodulated network; and the tables round-trip a checkpoint.
    #[test]
    fn film_network_gradient_matches_finite_differences() {
        let plain = LocalScoreArch {
            sigma_max: Some(0.9),
            ..tiny_arch(2, 3)
        };
        let arch = LocalScoreArch {
            film_knots: 4,
            ..plain.clone()
        };
        assert_eq!(arch.film_param_len(), 2 * 2 * 3 * 4);
        assert_eq!(arch.param_len(), plain.param_len() + 48);
        for (sigma, want) in [
            (0.235f32, vec![1.0, 0.0, 0.0, 0.0]),
            (0.9, vec![0.0, 0.0, 0.0, 1.0]),
            (0.1, vec![1.0, 0.0, 0.0, 0.0]),
            (0.99, vec![0.0, 0.0, 0.0, 1.0]),
        ] {
            let got = arch.film_weights(sigma);
            assert!(
                got.iter().zip(&want).all(|(a, b)| (a - b).abs() < 1e-5),
                "σ {sigma}: {got:?}"
            );
        }
        let mid = arch.film_weights(0.5);
        assert!((mid.iter().sum::<f32>() - 1.0).abs() < 1e-6);
        assert_eq!(mid.iter().filter(|&&v| v > 0.0).count(), 2, "{mid:?}");
        assert!(plain.film_weights(0.5).is_empty());

        let shapes = arch.shapes();
        let model = LocalScore::init(arch.clone(), 5);
        let film: Vec<f64> = mid.iter().map(|&v| v as f64).collect();
        let (h, w) = (4, 5);
        let (params, x, eps) = gradient_check_inputs(&model, stream(7, "gc film"), h, w);
        let xin = with_constant_channel(&x, h * w, noise_feature(0.5) as f64);
        assert_loss_gradient_matches_finite_differences(&shapes, &params, &film, &xin, &eps, h, w);

        // Zero tables: the same outputs as the unmodulated network with the same convolutions.
        let base = LocalScore::init(plain, 5);
        assert_eq!(model.params[..base.params.len()], base.params[..]);
        let xf: Vec<f32> = x.iter().map(|&v| v as f32).collect();
        let (mut a, mut b) = (vec![0.0; xf.len()], vec![0.0; xf.len()]);
        model.score_at(&xf, 1, h, w, 0.5, &mut a);
        base.score_at(&xf, 1, h, w, 0.5, &mut b);
        assert_eq!(a, b);

        let trained = LocalScore {
            params: params.iter().map(|&v| v as f32).collect(),
            arch,
        };
        assert_checkpoint_roundtrip(&trained);
        let (mut c, mut d) = (vec![0.0; xf.len()], vec![0.0; xf.len()]);
        trained.score_at(&xf, 1, h, w, 0.3, &mut c);
        trained.score_at(&xf, 1, h, w, 0.8, &mut d);
        assert!(c.iter().zip(&d).any(|(p, q)| (p - q).abs() > 1e-3));
    }

    /// v-prediction: the network's output is read as v̂ and turned into ε̂ = a v̂ + σ x. With a zero
    /// output layer (v̂ = 0) that is exactly ε̂ = σ x, i.e. Tweedie's x̂0 = (x - σ ε̂)/a = a x, at every
    /// level; the flag round-trips through a checkpoint and is absent from an ε model's JSON; and a short
    /// v-training on icons denoises the top level better than the identical ε-training (what it is for).
    #[test]
    fn v_prediction_reads_output_as_v_and_learns_the_clean_image_at_high_noise() {
        let arch = LocalScoreArch {
            sigma_max: Some(0.92),
            v_prediction: true,
            ..tiny_arch(3, 4)
        };
        let mut m = LocalScore::init(arch.clone(), 3);
        let last = m.arch.shapes().last().unwrap().param_len();
        let len = m.params.len();
        m.params[len - last..].iter_mut().for_each(|p| *p = 0.0);
        let (h, w) = (6, 5);
        let mut rng = stream(8, "v");
        let x: Vec<f32> = (0..3 * h * w).map(|_| rng.gen_range(-2.0..2.0)).collect();
        for sigma in [0.235f32, 0.6, 0.92] {
            let mut eps = vec![0.0; x.len()];
            m.predict_eps_at(&x, 1, h, w, sigma, &mut eps);
            for (e, &xi) in eps.iter().zip(&x) {
                assert!(
                    (e - sigma * xi).abs() < 1e-6,
                    "σ {sigma}: ε̂ {e} vs σx {}",
                    sigma * xi
                );
            }
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("v.safetensors");
        m.save(&path).unwrap();
        assert!(LocalScore::load(&path).unwrap().arch.v_prediction);
        let eps_arch = LocalScoreArch {
            v_prediction: false,
            ..arch
        };
        assert!(!serde_json::to_string(&eps_arch)
            .unwrap()
            .contains("v_prediction"));

        // Both targets, same data, seed and steps: Tweedie's x̂0 at σ 0.92 on held-out canvases.
        use crate::science::icons::{generate_canvases, BuiltinIcon, CanvasConfig, IconSource};
        let canvas = CanvasConfig {
            height: 24,
            width: 24,
            icons: (2, 3),
            icon_size: (8, 10),
            ..Default::default()
        };
        let source = IconSource::Builtin(BuiltinIcon::Firefly);
        let flat = |first: u64, count: usize| -> Vec<f32> {
            generate_canvases(&source, &canvas, 1, first, count)
                .into_iter()
                .flat_map(|c| c.data)
                .collect()
        };
        let (train, held) = (flat(0, 48), flat(1000, 8));
        let top = 0.92f32;
        let a = (1.0 - top * top).sqrt();
        let mut nrng = stream(9, "held-out noise");
        let noised: Vec<f32> = held
            .iter()
            .map(|&x| {
                a * x
                    + top * {
                        let z: f32 = StandardNormal.sample(&mut nrng);
                        z
                    }
            })
            .collect();
        let x0_rmse = |v_prediction: bool| -> f64 {
            let cfg = LocalScoreConfig {
                width: 8,
                dilations: vec![1, 2, 2, 1],
                iterations: 200,
                batch: 8,
                crop: None,
                sigma_max: Some(top),
                v_prediction,
                ..Default::default()
            };
            let (model, _) = train_local_score(&train, 24, 24, 3, &cfg, &mut |_, _| {}).unwrap();
            let mut s = vec![0.0; noised.len()];
            model.score_at(&noised, 8, 24, 24, top, &mut s);
            let mut x0 = vec![0.0; noised.len()];
            crate::science::sde::denoise(&noised, &s, top, a, &mut x0);
            (x0.iter()
                .zip(&held)
                .map(|(p, q)| ((p - q) as f64).powi(2))
                .sum::<f64>()
                / held.len() as f64)
                .sqrt()
        };
        let (eps_err, v_err) = (x0_rmse(false), x0_rmse(true));
        assert!(
            v_err < 0.9 * eps_err,
            "x̂0 RMSE at σ {top}: v {v_err} vs ε {eps_err}"
        );
    }

    /// A conditional checkpoint round-trips with its range; a single-level one keeps its old bytes (no
    /// `sigma_max` key), so existing Turing checkpoints stay bit-identical.
    #[test]
    fn conditional_checkpoint_roundtrip_and_single_level_json_unchanged() {
        let mut arch = tiny_arch(3, 4);
        assert!(!serde_json::to_string(&arch).unwrap().contains("sigma_max"));
        arch.sigma_max = Some(0.92);
        let m = LocalScore::init(arch, 1);
        assert_checkpoint_roundtrip(&m);
    }
}
