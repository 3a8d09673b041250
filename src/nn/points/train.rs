//! Training of the flow network (spec §2): loss `mean (div v + v.s)^2` at noised data with the score
//! held fixed, divergence by Hutchinson probes or exactly, both through the tangent pass of [`super::tape`];
//! plus the pieces shared with score training (Adam, epoch batching).
//!
//! Batch-norm tangents. In training the output batch-norm couples the samples of a batch. With
//! Hutchinson probes (independent per sample) we differentiate the batched map exactly, terms through
//! the batch mean and variance included (`dy_i = (dh_i - mean dh)/s - y_i mean(y dh)/s`): that is what a
//! JVP of the batched PyTorch module gives; the cross-sample terms have zero mean over probes, so the
//! estimator still targets `tr dv_i/dx_i`. With [`Divergence::Exact`] the basis tangent `e_c` is shared
//! by all samples, so cross-sample terms would not cancel; there we use the exact per-sample diagonal
//! block `dy_i/dh_i = (1 - (1 + y_i^2)/n)/s`, whose trace is the quantity Hutchinson estimates.

use super::flow::{init_leaves, FlowModel};
use super::schedule::abar;
use super::tape::{divergence_loss, flow_forward, leaf_tensors, tensor2, BnMode, BnTangent, Real};
use super::{Arch, Network, ScoreModel, BN_MOMENTUM, HIDDEN};
use crate::nn::device::ComputeDevice;
use crate::science::points::PointSet;
use crate::science::rng::substream;
use anyhow::{bail, Result};
use dfdx::prelude::*;
use rand::seq::SliceRandom;
use rand_distr::{Distribution, StandardNormal};

/// How `div v` is computed in the loss.
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Divergence {
    /// Hutchinson's estimator with `probes` Gaussian probes per sample.
    Hutchinson,
    /// The exact trace with `d` basis-vector tangent passes (for `d <= 3`).
    Exact,
}

/// Settings of [`train_dynamics`] (defaults: spec §2, 2-D systems).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct DynamicsTrainConfig {
    /// Architecture.
    pub network: Network,
    /// Hutchinson probes per sample.
    pub probes: usize,
    /// Divergence method.
    pub divergence: Divergence,
    /// Noise time `t` at which data are noised and the score is taken (0.1 for 2-D, 0.2 for Lorenz).
    pub noise: f64,
    /// Full passes over the shuffled data.
    pub epochs: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay (added to the gradient).
    pub weight_decay: f64,
    /// Batch size.
    pub batch: usize,
    /// Seed of initialisation, shuffling, noise and probes.
    pub seed: u64,
}

impl Default for DynamicsTrainConfig {
    fn default() -> Self {
        Self {
            network: Network::Kernel,
            probes: 10,
            divergence: Divergence::Hutchinson,
            noise: 0.1,
            epochs: 1024,
            lr: 0.01,
            weight_decay: 1e-5,
            batch: 2048,
            seed: 0,
        }
    }
}

/// Adam with L2 weight decay added to the gradient (PyTorch `Adam(weight_decay=..)`), on f64 leaves.
pub(crate) struct Adam {
    m: Vec<Vec<f64>>,
    v: Vec<Vec<f64>>,
    t: i32,
    lr: f64,
    wd: f64,
}

impl Adam {
    pub fn new(leaves: &[Vec<f64>], lr: f64, wd: f64) -> Self {
        let z: Vec<Vec<f64>> = leaves.iter().map(|l| vec![0.0; l.len()]).collect();
        Self {
            m: z.clone(),
            v: z,
            t: 0,
            lr,
            wd,
        }
    }

    pub fn step(&mut self, leaves: &mut [Vec<f64>], grads: &[Vec<f64>]) {
        let (b1, b2, eps) = (0.9f64, 0.999f64, 1e-8);
        self.t += 1;
        let (c1, c2) = (1.0 - b1.powi(self.t), 1.0 - b2.powi(self.t));
        for (((p, g), m), v) in leaves
            .iter_mut()
            .zip(grads)
            .zip(&mut self.m)
            .zip(&mut self.v)
        {
            for i in 0..p.len() {
                let gi = g[i] + self.wd * p[i];
                m[i] = b1 * m[i] + (1.0 - b1) * gi;
                v[i] = b2 * v[i] + (1.0 - b2) * gi * gi;
                p[i] -= self.lr * (m[i] / c1) / ((v[i] / c2).sqrt() + eps);
            }
        }
    }
}

/// The batches of one epoch: a fresh permutation from `substream(seed, name, epoch)`, cut into
/// consecutive batches; a last partial batch with fewer than 2 points is dropped.
pub(crate) fn epoch_batches(
    n: usize,
    batch: usize,
    seed: u64,
    name: &str,
    epoch: usize,
) -> Vec<Vec<usize>> {
    let mut idx: Vec<usize> = (0..n).collect();
    idx.shuffle(&mut substream(seed, name, epoch as u64));
    idx.chunks(batch.max(2))
        .filter(|c| c.len() >= 2)
        .map(<[usize]>::to_vec)
        .collect()
}

/// Tangents for one batch: Hutchinson probes `[k, n, d]` ~ N(0, I), or the basis `e_c` shared by all samples.
pub(crate) fn tangents(
    div: Divergence,
    probes: usize,
    n: usize,
    d: usize,
    rng: &mut crate::science::rng::Rng,
) -> (usize, Vec<f64>, f64) {
    match div {
        Divergence::Hutchinson => {
            let z = (0..probes * n * d)
                .map(|_| StandardNormal.sample(rng))
                .collect();
            (probes, z, 1.0 / probes as f64)
        }
        Divergence::Exact => {
            let mut z = vec![0.0; d * n * d];
            for c in 0..d {
                for i in 0..n {
                    z[(c * n + i) * d + c] = 1.0;
                }
            }
            (d, z, 1.0)
        }
    }
}

/// One batch of the dynamics loss: the network, the noised points `x` `[n, d]`, the score at them,
/// the tangent directions `z` `[k, n, d]` with their count `k` and the divergence estimate's `scale`,
/// and how the output batch-norm is differentiated.
#[derive(Clone, Copy)]
pub(crate) struct DynamicsBatch<'a> {
    pub arch: &'a Arch,
    pub leaves: &'a [Vec<f64>],
    pub x: &'a [f64],
    pub score: &'a [f64],
    pub z: &'a [f64],
    pub k: usize,
    pub scale: f64,
    pub bn_tangent: BnTangent,
}

/// Output of one dynamics loss evaluation.
pub(crate) struct DynamicsStep {
    pub loss: f64,
    pub grads: Vec<Vec<f64>>,
    pub batch_mean: Vec<f64>,
    pub batch_var: Vec<f64>,
}

/// The dynamics loss and its leaf gradients on one batch in dtype `E` (batch-norm in training mode), on
/// the taped dfdx graph of [`super::tape`]: the reference that tests hold the hand-written training path
/// ([`super::fast::loss_and_grads_in`]) against.
/// Generic over the device: `eqflow device-check` runs it on `Cuda` against `Cpu`.
pub(crate) fn dynamics_loss_and_grads<E: Real, D: Device<E>>(
    dev: &D,
    batch: &DynamicsBatch,
) -> DynamicsStep {
    let (arch, z, k) = (batch.arch, batch.z, batch.k);
    let d = arch.d;
    let n = batch.x.len() / d;
    let lt = leaf_tensors::<E, D>(dev, batch.leaves);
    let xt = tensor2::<E, D>(dev, batch.x, n, d);
    let tt = tensor2::<E, D>(dev, z, k * n, d);
    let z3: Tensor<(usize, usize, usize), E, D> =
        dev.tensor_from_vec(z.iter().map(|&v| E::of(v)).collect(), (k, n, d));
    let s = tensor2::<E, D>(dev, batch.score, n, d);
    let pass = flow_forward(arch, &lt, &xt, &tt, k, &BnMode::Batch(batch.bn_tangent));
    let (batch_mean, batch_var) = pass
        .batch_stats
        .clone()
        .expect("batch mode returns statistics");
    let loss = divergence_loss(pass, &z3, &s, batch.scale);
    let value: f64 = Real::f64(loss.as_vec()[0]);
    let grads = loss.backward();
    let g = lt
        .iter()
        .map(|l| grads.get(l).as_vec().into_iter().map(|v| v.f64()).collect())
        .collect();
    DynamicsStep {
        loss: value,
        grads: g,
        batch_mean,
        batch_var,
    }
}

/// Where the flow loss and its gradient are computed: the CPU's hand-written pass, or the taped dfdx graph
/// on a GPU (the same loss: tests hold the two against each other and f64 finite differences).
enum LossPass {
    Cpu(super::fast::Workspace<f32>),
    #[cfg(feature = "cuda")]
    Cuda(Cuda),
}

impl LossPass {
    fn new(device: ComputeDevice, seed: u64) -> Result<Self> {
        match device {
            ComputeDevice::Cpu => Ok(LossPass::Cpu(super::fast::Workspace::default())),
            #[cfg(feature = "cuda")]
            ComputeDevice::Cuda => {
                crate::nn::device::probe_cuda()?;
                Cuda::try_build(0, seed).map(LossPass::Cuda).map_err(|e| {
                    anyhow::anyhow!(
                        "cannot open CUDA device 0: {}",
                        crate::nn::device::cuda_error(&e)
                    )
                })
            }
            #[cfg(not(feature = "cuda"))]
            ComputeDevice::Cuda => {
                let _ = seed;
                bail!("this eqflow was built without CUDA support (docs/gpu.md)")
            }
        }
    }

    fn run(&mut self, batch: &DynamicsBatch) -> DynamicsStep {
        match self {
            LossPass::Cpu(ws) => super::fast::loss_and_grads_in::<f32>(ws, batch),
            #[cfg(feature = "cuda")]
            LossPass::Cuda(dev) => dynamics_loss_and_grads::<f32, Cuda>(dev, batch),
        }
    }
}

/// Trains a flow network on `data` with the fixed `score` model (spec §2) on the CPU; calls
/// `on_epoch(epoch, mean loss)` after each epoch and returns the model (evaluation mode) and the
/// per-epoch losses. A NaN or infinite batch loss stops training with an error naming the epoch and value.
pub fn train_dynamics(
    data: &PointSet,
    score: &ScoreModel,
    cfg: &DynamicsTrainConfig,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> Result<(FlowModel, Vec<f64>)> {
    train_dynamics_on(ComputeDevice::Cpu, data, score, cfg, on_epoch)
}

/// [`train_dynamics`] with the loss and gradient on `device` (batches, noise, probes, the score and Adam
/// stay on the CPU in f64).
pub fn train_dynamics_on(
    device: ComputeDevice,
    data: &PointSet,
    score: &ScoreModel,
    cfg: &DynamicsTrainConfig,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> Result<(FlowModel, Vec<f64>)> {
    let d = data.d;
    if cfg.divergence == Divergence::Exact && d > 3 {
        bail!("exact divergence needs d <= 3 (got d = {d}); use Hutchinson probes");
    }
    if cfg.divergence == Divergence::Hutchinson && cfg.probes == 0 {
        bail!("Hutchinson divergence needs at least one probe");
    }
    if score.d != d {
        bail!(
            "score model is {}-dimensional but the data are {d}-dimensional",
            score.d
        );
    }
    let arch = Arch {
        network: cfg.network,
        d,
        hidden: HIDDEN,
    };
    let mut leaves = init_leaves(&arch, cfg.seed);
    let mut adam = Adam::new(&leaves, cfg.lr, cfg.weight_decay);
    let (mut rmean, mut rvar) = (vec![0.0; d], vec![1.0; d]);
    let a = abar(cfg.noise);
    let bn_tangent = match cfg.divergence {
        Divergence::Hutchinson => BnTangent::Batched,
        Divergence::Exact => BnTangent::SelfOnly,
    };
    let mut losses = Vec::with_capacity(cfg.epochs);
    let mut pass = LossPass::new(device, cfg.seed)?;
    let mut step = 0u64;
    for epoch in 0..cfg.epochs {
        let batches = epoch_batches(data.n, cfg.batch, cfg.seed, "flow/shuffle", epoch);
        let mut sum = 0.0;
        for idx in &batches {
            let n = idx.len();
            let mut rng = substream(cfg.seed, "flow/noise", step);
            let mut xt = PointSet::zeros(n, d);
            for (r, &i) in idx.iter().enumerate() {
                for c in 0..d {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    xt.row_mut(r)[c] = a.sqrt() * data.row(i)[c] + (1.0 - a).sqrt() * e;
                }
            }
            let s = score.score(&xt, cfg.noise);
            let (k, z, scale) = tangents(cfg.divergence, cfg.probes, n, d, &mut rng);
            let st = pass.run(&DynamicsBatch {
                arch: &arch,
                leaves: &leaves,
                x: &xt.data,
                score: &s.data,
                z: &z,
                k,
                scale,
                bn_tangent,
            });
            if !st.loss.is_finite() {
                bail!(
                    "dynamics training diverged at epoch {epoch}: loss {}",
                    st.loss
                );
            }
            adam.step(&mut leaves, &st.grads);
            let unbias = n as f64 / (n as f64 - 1.0);
            for c in 0..d {
                rmean[c] = (1.0 - BN_MOMENTUM) * rmean[c] + BN_MOMENTUM * st.batch_mean[c];
                rvar[c] = (1.0 - BN_MOMENTUM) * rvar[c] + BN_MOMENTUM * st.batch_var[c] * unbias;
            }
            sum += st.loss;
            step += 1;
        }
        let mean = sum / batches.len() as f64;
        losses.push(mean);
        on_epoch(epoch, mean);
    }
    Ok((FlowModel::from_leaves(&arch, &leaves, rmean, rvar), losses))
}
