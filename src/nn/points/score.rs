//! The DDPM score model for points (spec §3): training with dfdx, evaluation and DDIM sampling in plain
//! Rust f64, and the safetensors checkpoint helpers shared with the flow model.
//!
//! The network predicts the noise: `eps_hat(x, t) = MLP([x, 2t-1]) + x` (ReLU, 64-64), trained by MSE
//! against the true noise at `t ~ U(0,1)` under the cosine schedule of [`super::schedule`]. The score is
//! `s(x, t) = -eps_hat / sqrt(1 - abar_t)`.

use super::dense::Dense;
use super::schedule::{abar, abar_at, STEPS};
use super::tape::{leaf_tensors, score_forward, tensor2, Real};
use super::train::{epoch_batches, Adam};
use super::HIDDEN;
use crate::nn::device::ComputeDevice;
use crate::science::points::PointSet;
use crate::science::rng::{stream, substream};
use anyhow::{bail, Context, Result};
use dfdx::prelude::*;
use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;
use std::collections::HashMap;
use std::path::Path;

/// Settings of [`train_score`] (defaults: spec §3).
#[derive(Clone, Debug, PartialEq, serde::Serialize, serde::Deserialize)]
pub struct ScoreTrainConfig {
    /// Full passes over the shuffled data.
    pub epochs: usize,
    /// Batch size.
    pub batch: usize,
    /// Adam learning rate.
    pub lr: f64,
    /// L2 weight decay (added to the gradient).
    pub weight_decay: f64,
    /// Seed of initialisation, shuffling and noise.
    pub seed: u64,
}

impl Default for ScoreTrainConfig {
    fn default() -> Self {
        Self {
            epochs: 512,
            batch: 2048,
            lr: 1e-2,
            weight_decay: 1e-5,
            seed: 0,
        }
    }
}

/// The trained score MLP in f64.
#[derive(Clone, Debug, PartialEq)]
pub struct ScoreModel {
    /// Dimension of the points.
    pub d: usize,
    /// `[d+1 -> 64]`, `[64 -> 64]`, `[64 -> d]`, ReLU between.
    pub layers: Vec<Dense>,
}

/// Leaves (`[in, out]` flattened): Wx `[d,64]`, Wt `[1,64]`, b0, W1, b1, W2 `[64,d]`, b2.
fn score_leaf_shapes(d: usize) -> Vec<(usize, usize)> {
    let h = HIDDEN;
    vec![(d, h), (1, h), (1, h), (h, h), (1, h), (h, d), (1, d)]
}

impl ScoreModel {
    /// A PyTorch-default initialised model from `stream(seed, "score/init")`.
    pub fn init(d: usize, seed: u64) -> Self {
        let mut rng = stream(seed, "score/init");
        let layers = vec![
            Dense::init(d + 1, HIDDEN, &mut rng),
            Dense::init(HIDDEN, HIDDEN, &mut rng),
            Dense::init(HIDDEN, d, &mut rng),
        ];
        Self { d, layers }
    }

    pub(crate) fn to_leaves(&self) -> Vec<Vec<f64>> {
        let (d, h) = (self.d, HIDDEN);
        let tr = |l: &Dense, cols: std::ops::Range<usize>| {
            let mut v = Vec::with_capacity(cols.len() * l.out);
            for i in cols {
                for o in 0..l.out {
                    v.push(l.w[o * l.inp + i]);
                }
            }
            v
        };
        let l = &self.layers;
        vec![
            tr(&l[0], 0..d),
            tr(&l[0], d..d + 1),
            l[0].b.clone(),
            tr(&l[1], 0..h),
            l[1].b.clone(),
            tr(&l[2], 0..h),
            l[2].b.clone(),
        ]
    }

    pub(crate) fn from_leaves(d: usize, leaves: &[Vec<f64>]) -> Self {
        let h = HIDDEN;
        let mut w0 = vec![0.0; h * (d + 1)];
        for o in 0..h {
            for i in 0..d {
                w0[o * (d + 1) + i] = leaves[0][i * h + o];
            }
            w0[o * (d + 1) + d] = leaves[1][o];
        }
        let tr = |v: &[f64], inp: usize, out: usize| {
            let mut w = vec![0.0; inp * out];
            for i in 0..inp {
                for o in 0..out {
                    w[o * inp + i] = v[i * out + o];
                }
            }
            w
        };
        let layers = vec![
            Dense {
                inp: d + 1,
                out: h,
                w: w0,
                b: leaves[2].clone(),
            },
            Dense {
                inp: h,
                out: h,
                w: tr(&leaves[3], h, h),
                b: leaves[4].clone(),
            },
            Dense {
                inp: h,
                out: d,
                w: tr(&leaves[5], h, d),
                b: leaves[6].clone(),
            },
        ];
        Self { d, layers }
    }

    /// `eps_hat(x, t)` at one point.
    pub fn eps_one(&self, x: &[f64], t: f64, out: &mut [f64]) {
        let mut inp = x.to_vec();
        inp.push(2.0 * t - 1.0);
        let mut h1 = vec![0.0; HIDDEN];
        self.layers[0].apply(&inp, &mut h1);
        h1.iter_mut().for_each(|v| *v = v.max(0.0));
        let mut h2 = vec![0.0; HIDDEN];
        self.layers[1].apply(&h1, &mut h2);
        h2.iter_mut().for_each(|v| *v = v.max(0.0));
        self.layers[2].apply(&h2, out);
        for (o, xi) in out.iter_mut().zip(x) {
            *o += xi;
        }
    }

    /// `eps_hat(x, t)` at every point, in parallel.
    pub fn eps(&self, x: &PointSet, t: f64) -> PointSet {
        let mut out = PointSet::zeros(x.n, x.d);
        out.data
            .par_chunks_mut(x.d)
            .zip(x.data.par_chunks(x.d))
            .for_each(|(o, p)| self.eps_one(p, t, o));
        out
    }

    /// The score `s(x, t) = -eps_hat(x, t) / sqrt(1 - abar_t)` at one point.
    pub fn score_one(&self, x: &[f64], t: f64, out: &mut [f64]) {
        self.eps_one(x, t, out);
        let s = -1.0 / (1.0 - abar(t)).sqrt();
        out.iter_mut().for_each(|v| *v *= s);
    }

    /// The score at every point, in parallel.
    pub fn score(&self, x: &PointSet, t: f64) -> PointSet {
        let mut out = self.eps(x, t);
        let s = -1.0 / (1.0 - abar(t)).sqrt();
        out.data.iter_mut().for_each(|v| *v *= s);
        out
    }

    /// `n` samples by the deterministic DDIM reverse loop from `x_99 ~ N(0, I)` (stream
    /// `substream(seed, "score/sample", i)` per point): at each step `x0 = (x - sqrt(1-a_i) eps)/sqrt(a_i)`,
    /// `x = sqrt(a_{i-1}) x0 + sqrt(1 - a_{i-1}) eps`; the last step returns `x0`.
    pub fn sample(&self, n: usize, seed: u64) -> PointSet {
        let d = self.d;
        let mut out = PointSet::zeros(n, d);
        out.data.par_chunks_mut(d).enumerate().for_each(|(p, x)| {
            let mut rng = substream(seed, "score/sample", p as u64);
            x.iter_mut()
                .for_each(|v| *v = StandardNormal.sample(&mut rng));
            let mut e = vec![0.0; d];
            for i in (0..STEPS).rev() {
                let a = abar_at(i);
                self.eps_one(x, i as f64 / (STEPS - 1) as f64, &mut e);
                for c in 0..d {
                    let x0 = (x[c] - (1.0 - a).sqrt() * e[c]) / a.sqrt();
                    x[c] = if i == 0 {
                        x0
                    } else {
                        abar_at(i - 1).sqrt() * x0 + (1.0 - abar_at(i - 1)).sqrt() * e[c]
                    };
                }
            }
        });
        out
    }

    /// Writes the checkpoint (safetensors at `path`, JSON sidecar beside it); `extra` goes into the sidecar.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<()> {
        let mut tensors = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            tensors.push((
                format!("net.{}.weight", 2 * i),
                vec![l.out, l.inp],
                l.w.clone(),
            ));
            tensors.push((format!("net.{}.bias", 2 * i), vec![l.out], l.b.clone()));
        }
        let meta = serde_json::json!({
            "format": "eqflow.points.v1", "kind": "score", "d": self.d, "hidden": HIDDEN,
            "prediction": "eps = net([x, 2t-1]) + x", "schedule": "cosine100", "extra": extra,
        });
        write_checkpoint(path, &tensors, &meta)
    }

    /// Reads a checkpoint written by [`ScoreModel::save`]; returns the model and the sidecar's `extra`.
    pub fn load(path: &Path) -> Result<(Self, serde_json::Value)> {
        let (meta, tensors) = read_checkpoint(path)?;
        if meta["kind"] != "score" {
            bail!(
                "{} is not a score checkpoint (kind {})",
                path.display(),
                meta["kind"]
            );
        }
        let d = meta["d"].as_u64().context("sidecar lacks d")? as usize;
        let mut layers = Vec::new();
        for i in 0..3 {
            let (shape, w) = tensors
                .get(&format!("net.{}.weight", 2 * i))
                .cloned()
                .context("missing weight")?;
            let (_, b) = tensors
                .get(&format!("net.{}.bias", 2 * i))
                .cloned()
                .context("missing bias")?;
            layers.push(Dense {
                out: shape[0],
                inp: shape[1],
                w,
                b,
            });
        }
        Ok((Self { d, layers }, meta["extra"].clone()))
    }
}

fn sidecar(path: &Path) -> std::path::PathBuf {
    path.with_extension("json")
}

/// Writes F64 tensors to safetensors at `path` and `meta` to the JSON sidecar.
pub(crate) fn write_checkpoint(
    path: &Path,
    tensors: &[(String, Vec<usize>, Vec<f64>)],
    meta: &serde_json::Value,
) -> Result<()> {
    let bytes: Vec<(String, Vec<usize>, Vec<u8>)> = tensors
        .iter()
        .map(|(k, s, v)| {
            (
                k.clone(),
                s.clone(),
                v.iter().flat_map(|x| x.to_le_bytes()).collect(),
            )
        })
        .collect();
    let views: Vec<(String, ::safetensors::tensor::TensorView)> = bytes
        .iter()
        .map(|(k, s, b)| {
            let view =
                ::safetensors::tensor::TensorView::new(::safetensors::Dtype::F64, s.clone(), b)
                    .expect("shape and byte length agree by construction");
            (k.clone(), view)
        })
        .collect();
    ::safetensors::serialize_to_file(views, &None, path)
        .with_context(|| format!("writing {}", path.display()))?;
    std::fs::write(sidecar(path), serde_json::to_string_pretty(meta)?)
        .with_context(|| format!("writing {}", sidecar(path).display()))?;
    Ok(())
}

/// The sidecar JSON and every tensor (shape, f64 values); F32 tensors are widened.
pub(crate) type Tensors = HashMap<String, (Vec<usize>, Vec<f64>)>;

/// Reads a checkpoint written by [`write_checkpoint`].
pub(crate) fn read_checkpoint(path: &Path) -> Result<(serde_json::Value, Tensors)> {
    let meta: serde_json::Value = serde_json::from_str(
        &std::fs::read_to_string(sidecar(path))
            .with_context(|| format!("reading {}", sidecar(path).display()))?,
    )
    .with_context(|| format!("parsing {}", sidecar(path).display()))?;
    if meta["format"] != "eqflow.points.v1" {
        bail!(
            "{}: unknown checkpoint format {}",
            sidecar(path).display(),
            meta["format"]
        );
    }
    let raw = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let st = ::safetensors::SafeTensors::deserialize(&raw)
        .with_context(|| format!("parsing {}", path.display()))?;
    let mut out = HashMap::new();
    for (name, view) in st.tensors() {
        let vals: Vec<f64> = match view.dtype() {
            ::safetensors::Dtype::F64 => view
                .data()
                .chunks_exact(8)
                .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                .collect(),
            ::safetensors::Dtype::F32 => view
                .data()
                .chunks_exact(4)
                .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
                .collect(),
            other => bail!(
                "{}: tensor {name} has unsupported dtype {other:?}",
                path.display()
            ),
        };
        out.insert(name, (view.shape().to_vec(), vals));
    }
    Ok((meta, out))
}

/// One score-model loss and its leaf gradients on a batch, in dtype `E`.
pub(crate) fn score_loss_and_grads<E: Real, D: Device<E>>(
    dev: &D,
    d: usize,
    leaves: &[Vec<f64>],
    xt: &[f64],
    tfeat: &[f64],
    eps: &[f64],
) -> (f64, Vec<Vec<f64>>) {
    let n = tfeat.len();
    let lt = leaf_tensors::<E, D>(dev, leaves);
    let x = tensor2::<E, D>(dev, xt, n, d);
    let tf = tensor2::<E, D>(dev, tfeat, n, 1);
    let target = tensor2::<E, D>(dev, eps, n, d);
    let pred = score_forward(d, HIDDEN, &lt, &x, &tf);
    let loss = (pred - target).square().mean();
    let value: f64 = Real::f64(loss.as_vec()[0]);
    let grads = loss.backward();
    let g = lt
        .iter()
        .map(|l| grads.get(l).as_vec().into_iter().map(|v| v.f64()).collect())
        .collect();
    (value, g)
}

/// Trains the score model on `data` (spec §3) on the CPU; calls `on_epoch(epoch, mean loss)` after each
/// epoch and returns the model and the per-epoch losses. Training runs in f32 with f64 master weights.
pub fn train_score(
    data: &PointSet,
    cfg: &ScoreTrainConfig,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> Result<(ScoreModel, Vec<f64>)> {
    train_score_on(ComputeDevice::Cpu, data, cfg, on_epoch)
}

/// [`train_score`] with the forward and backward passes on `device` (batches, noise and Adam stay on the
/// CPU in f64, so only the f32 gradient arithmetic differs between devices).
pub fn train_score_on(
    device: ComputeDevice,
    data: &PointSet,
    cfg: &ScoreTrainConfig,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> Result<(ScoreModel, Vec<f64>)> {
    match device {
        ComputeDevice::Cpu => train_score_with(&Cpu::seed_from_u64(cfg.seed), data, cfg, on_epoch),
        #[cfg(feature = "cuda")]
        ComputeDevice::Cuda => {
            let dev = crate::nn::device::open_cuda(cfg.seed)?;
            train_score_with(&dev, data, cfg, on_epoch)
        }
        #[cfg(not(feature = "cuda"))]
        ComputeDevice::Cuda => bail!("this eqflow was built without CUDA support (docs/gpu.md)"),
    }
}

fn train_score_with<D: Device<f32>>(
    dev: &D,
    data: &PointSet,
    cfg: &ScoreTrainConfig,
    on_epoch: &mut dyn FnMut(usize, f64),
) -> Result<(ScoreModel, Vec<f64>)> {
    let d = data.d;
    let mut leaves = ScoreModel::init(d, cfg.seed).to_leaves();
    debug_assert_eq!(
        leaves.iter().map(Vec::len).collect::<Vec<_>>(),
        score_leaf_shapes(d)
            .iter()
            .map(|(a, b)| a * b)
            .collect::<Vec<_>>()
    );
    let mut adam = Adam::new(&leaves, cfg.lr, cfg.weight_decay);
    let mut losses = Vec::with_capacity(cfg.epochs);
    let mut step = 0u64;
    for epoch in 0..cfg.epochs {
        let mut sum = 0.0;
        let batches = epoch_batches(data.n, cfg.batch, cfg.seed, "score/shuffle", epoch);
        for idx in &batches {
            let mut rng = substream(cfg.seed, "score/noise", step);
            let n = idx.len();
            let (mut xt, mut eps, mut tf) = (
                Vec::with_capacity(n * d),
                Vec::with_capacity(n * d),
                Vec::with_capacity(n),
            );
            for &i in idx {
                let t: f64 = rng.gen();
                let a = abar(t);
                for c in 0..d {
                    let e: f64 = StandardNormal.sample(&mut rng);
                    xt.push(a.sqrt() * data.row(i)[c] + (1.0 - a).sqrt() * e);
                    eps.push(e);
                }
                tf.push(2.0 * t - 1.0);
            }
            let (loss, grads) = score_loss_and_grads::<f32, D>(dev, d, &leaves, &xt, &tf, &eps);
            if !loss.is_finite() {
                bail!("score training diverged at epoch {epoch}: loss {loss}");
            }
            adam.step(&mut leaves, &grads);
            sum += loss;
            step += 1;
        }
        let mean = sum / batches.len() as f64;
        losses.push(mean);
        on_epoch(epoch, mean);
    }
    Ok((ScoreModel::from_leaves(d, &leaves), losses))
}
