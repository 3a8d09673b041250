//! The trained flow network in plain Rust f64: batch velocities (evaluation mode), per-point Jacobians by
//! a tangent pass, untrained baselines, and safetensors checkpoints (layout in the module docs of
//! [`crate::nn::points`]).
//!
//! Evaluation uses the output batch-norm's running statistics, so the field is a per-point map and its
//! Jacobian is `diag(1/sqrt(running_var + eps)) J_h`.

use super::dense::{silu, silu_prime, Dense};
use super::{Arch, Network, BN_EPS, ENCODING_FREQUENCIES, HIDDEN};
use crate::science::lyapunov::BatchField;
use crate::science::points::PointSet;
use crate::science::rng::stream;
use anyhow::{bail, Context, Result};
use rayon::prelude::*;
use std::path::Path;

/// A flow network `v(x)` in f64, evaluation mode.
#[derive(Clone, Debug, PartialEq)]
pub struct FlowModel {
    /// Architecture.
    pub network: Network,
    /// Dimension of the points.
    pub d: usize,
    /// Linear layers in order (SiLU between them, none after the last).
    pub layers: Vec<Dense>,
    /// Output batch-norm running mean.
    pub running_mean: Vec<f64>,
    /// Output batch-norm running variance.
    pub running_var: Vec<f64>,
}

impl FlowModel {
    pub(crate) fn arch(&self) -> Arch {
        Arch {
            network: self.network,
            d: self.d,
            hidden: HIDDEN,
        }
    }

    /// Builds the plain model from training leaves (`[in, out]` flattened, see [`Arch::leaf_shapes`]).
    pub(crate) fn from_leaves(
        arch: &Arch,
        leaves: &[Vec<f64>],
        running_mean: Vec<f64>,
        running_var: Vec<f64>,
    ) -> Self {
        let shapes = arch.leaf_shapes();
        let dense = |wi: usize, bi: usize| {
            let (inp, out) = shapes[wi];
            let mut w = vec![0.0; inp * out];
            for i in 0..inp {
                for o in 0..out {
                    w[o * inp + i] = leaves[wi][i * out + o];
                }
            }
            Dense {
                inp,
                out,
                w,
                b: leaves[bi].clone(),
            }
        };
        let layers = match arch.network {
            Network::Kernel => {
                let (d, h) = (arch.d, arch.hidden);
                let mut w = vec![0.0; h * 9 * d];
                for blk in 0..9 {
                    for c in 0..d {
                        for o in 0..h {
                            w[o * 9 * d + blk * d + c] = leaves[blk][c * h + o];
                        }
                    }
                }
                vec![
                    Dense {
                        inp: 9 * d,
                        out: h,
                        w,
                        b: leaves[9].clone(),
                    },
                    dense(10, 11),
                    dense(12, 13),
                ]
            }
            Network::Mlp => vec![dense(0, 1), dense(2, 3), dense(4, 5), dense(6, 7)],
        };
        Self {
            network: arch.network,
            d: arch.d,
            layers,
            running_mean,
            running_var,
        }
    }

    /// The training leaves of this model (inverse of [`FlowModel::from_leaves`]).
    pub(crate) fn to_leaves(&self) -> Vec<Vec<f64>> {
        let arch = self.arch();
        let shapes = arch.leaf_shapes();
        let mut leaves: Vec<Vec<f64>> = shapes.iter().map(|(i, o)| vec![0.0; i * o]).collect();
        let mut put = |wi: usize, bi: usize, l: &Dense| {
            for i in 0..l.inp {
                for o in 0..l.out {
                    leaves[wi][i * l.out + o] = l.w[o * l.inp + i];
                }
            }
            leaves[bi] = l.b.clone();
        };
        match self.network {
            Network::Kernel => {
                let (d, h) = (self.d, HIDDEN);
                put(10, 11, &self.layers[1]);
                put(12, 13, &self.layers[2]);
                let l0 = &self.layers[0];
                for (blk, leaf) in leaves.iter_mut().enumerate().take(9) {
                    for c in 0..d {
                        for o in 0..h {
                            leaf[c * h + o] = l0.w[o * 9 * d + blk * d + c];
                        }
                    }
                }
                leaves[9] = l0.b.clone();
            }
            Network::Mlp => {
                for j in 0..4 {
                    put(2 * j, 2 * j + 1, &self.layers[j]);
                }
            }
        }
        leaves
    }

    /// A freshly initialised (untrained) network, PyTorch default init from `stream(seed, "flow/init")`.
    ///
    /// Its output batch-norm statistics: with `calibration` points, the running mean and (biased) variance
    /// are set to the pre-norm output's statistics on them, so the baseline, like a trained model, outputs
    /// unit-variance components on data; without, they are PyTorch's fresh values (mean 0, var 1).
    pub fn random(network: Network, d: usize, seed: u64, calibration: Option<&PointSet>) -> Self {
        let arch = Arch {
            network,
            d,
            hidden: HIDDEN,
        };
        let mut m = Self::from_leaves(&arch, &init_leaves(&arch, seed), vec![0.0; d], vec![1.0; d]);
        if let Some(data) = calibration {
            let pre: Vec<Vec<f64>> = (0..data.n)
                .map(|i| m.forward_point(data.row(i), false).0)
                .collect();
            let n = data.n as f64;
            for c in 0..d {
                let mean = pre.iter().map(|p| p[c]).sum::<f64>() / n;
                let var = pre.iter().map(|p| (p[c] - mean).powi(2)).sum::<f64>() / n;
                m.running_mean[c] = mean;
                m.running_var[c] = var;
            }
        }
        m
    }

    /// Pre-norm output at one point and optionally its Jacobian `[d, d]` row-major.
    fn forward_point(&self, x: &[f64], want_jac: bool) -> (Vec<f64>, Option<Vec<f64>>) {
        let d = self.d;
        // input and its Jacobian w.r.t. x, stored as d tangents: tan[c * width + j] = d a_j / d x_c
        let (mut a, mut tan) = match self.network {
            Network::Kernel => {
                let mut e = Vec::with_capacity(9 * d);
                let mut te = vec![0.0; d * 9 * d];
                e.extend_from_slice(x);
                for c in 0..d {
                    te[c * 9 * d + c] = 1.0;
                }
                for (i, f) in ENCODING_FREQUENCIES.iter().enumerate() {
                    for c in 0..d {
                        e.push((f * x[c]).sin());
                        te[c * 9 * d + (1 + 2 * i) * d + c] = f * (f * x[c]).cos();
                    }
                    for c in 0..d {
                        e.push((f * x[c]).cos());
                        te[c * 9 * d + (2 + 2 * i) * d + c] = -f * (f * x[c]).sin();
                    }
                }
                (e, te)
            }
            Network::Mlp => {
                let mut t = vec![0.0; d * d];
                for c in 0..d {
                    t[c * d + c] = 1.0;
                }
                (x.to_vec(), t)
            }
        };
        let last = self.layers.len() - 1;
        for (li, l) in self.layers.iter().enumerate() {
            let mut h = vec![0.0; l.out];
            l.apply(&a, &mut h);
            let mut th = vec![0.0; if want_jac { d * l.out } else { 0 }];
            if want_jac {
                l.apply_tangents(&tan, d, &mut th);
            }
            if li < last {
                if want_jac {
                    for c in 0..d {
                        for j in 0..l.out {
                            th[c * l.out + j] *= silu_prime(h[j]);
                        }
                    }
                }
                h.iter_mut().for_each(|v| *v = silu(*v));
            }
            a = h;
            tan = th;
        }
        let jac = want_jac.then(|| {
            let mut j = vec![0.0; d * d];
            for r in 0..d {
                for c in 0..d {
                    j[r * d + c] = tan[c * d + r];
                }
            }
            j
        });
        (a, jac)
    }

    /// `v(x)` at one point (evaluation mode), written into `out`; usable as an integrator field.
    pub fn velocity_one(&self, x: &[f64], out: &mut [f64]) {
        let (h, _) = self.forward_point(x, false);
        for c in 0..self.d {
            out[c] = (h[c] - self.running_mean[c]) / (self.running_var[c] + BN_EPS).sqrt();
        }
    }

    /// `v` at every point (evaluation mode), points in parallel.
    pub fn velocity(&self, x: &PointSet) -> PointSet {
        assert_eq!(x.d, self.d, "point dimension must match the model");
        let mut out = PointSet::zeros(x.n, x.d);
        out.data
            .par_chunks_mut(self.d)
            .zip(x.data.par_chunks(self.d))
            .for_each(|(o, p)| self.velocity_one(p, o));
        out
    }

    /// The Jacobian `J[i][j] = d v_i / d x_j` at one point, row-major `d x d` (evaluation mode).
    pub fn jacobian(&self, x: &[f64]) -> Vec<f64> {
        let (_, j) = self.forward_point(x, true);
        let mut j = j.expect("requested the Jacobian");
        for r in 0..self.d {
            let s = 1.0 / (self.running_var[r] + BN_EPS).sqrt();
            j[r * self.d..(r + 1) * self.d]
                .iter_mut()
                .for_each(|v| *v *= s);
        }
        j
    }

    /// [`FlowModel::jacobian`] in the closure form the Lyapunov code takes.
    pub fn jacobian_into(&self, x: &[f64], out: &mut [f64]) {
        out.copy_from_slice(&self.jacobian(x));
    }

    /// Writes the checkpoint (safetensors at `path`, JSON sidecar beside it); `extra` goes into the sidecar.
    pub fn save(&self, path: &Path, extra: serde_json::Value) -> Result<()> {
        let n = self.layers.len();
        let mut tensors: Vec<(String, Vec<usize>, Vec<f64>)> = Vec::new();
        for (i, l) in self.layers.iter().enumerate() {
            tensors.push((
                format!("net.{}.weight", 2 * i),
                vec![l.out, l.inp],
                l.w.clone(),
            ));
            tensors.push((format!("net.{}.bias", 2 * i), vec![l.out], l.b.clone()));
        }
        let bn = 2 * (n - 1) + 1;
        tensors.push((
            format!("net.{bn}.running_mean"),
            vec![self.d],
            self.running_mean.clone(),
        ));
        tensors.push((
            format!("net.{bn}.running_var"),
            vec![self.d],
            self.running_var.clone(),
        ));
        let meta = serde_json::json!({
            "format": "eqflow.points.v1", "kind": "flow", "network": self.network.name(), "d": self.d,
            "hidden": HIDDEN, "bn_eps": BN_EPS, "encoding": if self.network == Network::Kernel {
                "[x, sin(x), cos(x), sin(2x), cos(2x), sin(4x), cos(4x), sin(8x), cos(8x)]" } else { "x" },
            "extra": extra,
        });
        super::score::write_checkpoint(path, &tensors, &meta)
    }

    /// Reads a checkpoint written by [`FlowModel::save`]; returns the model and the sidecar's `extra`.
    pub fn load(path: &Path) -> Result<(Self, serde_json::Value)> {
        let (meta, tensors) = super::score::read_checkpoint(path)?;
        if meta["kind"] != "flow" {
            bail!(
                "{} is not a flow checkpoint (kind {})",
                path.display(),
                meta["kind"]
            );
        }
        let network = match meta["network"].as_str() {
            Some("kernel") => Network::Kernel,
            Some("mlp") => Network::Mlp,
            other => bail!("{}: unknown flow network {other:?}", path.display()),
        };
        let d = meta["d"].as_u64().context("sidecar lacks d")? as usize;
        let nl = if network == Network::Kernel { 3 } else { 4 };
        let get = |k: &str| {
            tensors
                .get(k)
                .cloned()
                .with_context(|| format!("{}: missing tensor {k}", path.display()))
        };
        let mut layers = Vec::new();
        for i in 0..nl {
            let (shape, w) = get(&format!("net.{}.weight", 2 * i))?;
            let (_, b) = get(&format!("net.{}.bias", 2 * i))?;
            layers.push(Dense {
                out: shape[0],
                inp: shape[1],
                w,
                b,
            });
        }
        let bn = 2 * (nl - 1) + 1;
        let (_, running_mean) = get(&format!("net.{bn}.running_mean"))?;
        let (_, running_var) = get(&format!("net.{bn}.running_var"))?;
        Ok((
            Self {
                network,
                d,
                layers,
                running_mean,
                running_var,
            },
            meta["extra"].clone(),
        ))
    }
}

/// A [`FlowModel`] prepared for evaluation on blocks of points (trajectories of the Lyapunov protocol):
/// each layer's weights are transposed to `[in, out]`, so a layer is, per point, a sum over inputs of the
/// input times a contiguous weight row, vectorised over the outputs. Every output still accumulates its
/// products in input order, then adds the bias, exactly as [`FlowModel::velocity_one`] does, so the
/// values are bit-identical to it (no reassociation; Rust never fuses multiply-adds).
pub struct BatchedFlow<'a> {
    model: &'a FlowModel,
    /// Per layer, `w_t[i * out + o] = w[o * inp + i]`.
    w_t: Vec<Vec<f64>>,
}

impl FlowModel {
    /// This model as a [`BatchField`] for the Lyapunov code.
    pub fn batched(&self) -> BatchedFlow<'_> {
        let w_t = self
            .layers
            .iter()
            .map(|l| {
                let mut t = vec![0.0; l.inp * l.out];
                for o in 0..l.out {
                    for i in 0..l.inp {
                        t[i * l.out + o] = l.w[o * l.inp + i];
                    }
                }
                t
            })
            .collect();
        BatchedFlow { model: self, w_t }
    }
}

impl BatchedFlow<'_> {
    /// The forward pass over the row-major points `x`; inlined into a baseline and an AVX2 build.
    #[inline(always)]
    fn forward_block(&self, x: &[f64], out: &mut [f64]) {
        let m = self.model;
        let d = m.d;
        let n = x.len() / d;
        let mut a = match m.network {
            Network::Kernel => {
                let w = 9 * d;
                let mut e = vec![0.0; n * w];
                for (p, ep) in x.chunks_exact(d).zip(e.chunks_exact_mut(w)) {
                    ep[..d].copy_from_slice(p);
                    for (i, f) in ENCODING_FREQUENCIES.iter().enumerate() {
                        for c in 0..d {
                            ep[(1 + 2 * i) * d + c] = (f * p[c]).sin();
                            ep[(2 + 2 * i) * d + c] = (f * p[c]).cos();
                        }
                    }
                }
                e
            }
            Network::Mlp => x.to_vec(),
        };
        let last = m.layers.len() - 1;
        for (li, (l, w_t)) in m.layers.iter().zip(&self.w_t).enumerate() {
            let mut h = vec![0.0; n * l.out];
            match l.out {
                HIDDEN => dense_rows::<HIDDEN>(w_t, &l.b, l.inp, &a, &mut h),
                2 => dense_rows::<2>(w_t, &l.b, l.inp, &a, &mut h),
                3 => dense_rows::<3>(w_t, &l.b, l.inp, &a, &mut h),
                _ => dense_rows_any(w_t, &l.b, l.inp, l.out, &a, &mut h),
            }
            if li < last {
                h.iter_mut().for_each(|v| *v = silu(*v));
            }
            a = h;
        }
        for (o, h) in out.chunks_exact_mut(d).zip(a.chunks_exact(d)) {
            for c in 0..d {
                o[c] = (h[c] - m.running_mean[c]) / (m.running_var[c] + BN_EPS).sqrt();
            }
        }
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx2")]
    fn forward_block_avx2(&self, x: &[f64], out: &mut [f64]) {
        self.forward_block(x, out)
    }

    #[cfg(target_arch = "x86_64")]
    #[target_feature(enable = "avx512f")]
    fn forward_block_avx512(&self, x: &[f64], out: &mut [f64]) {
        self.forward_block(x, out)
    }
}

/// `h[p] = b + sum_i a[p][i] w_t[i]` for every point `p`, `OUT` outputs, each product added in input
/// order (the order of [`Dense::apply`], so the bits are the same). Two points and 16 outputs at a time:
/// four independent accumulator chains that stay in registers, each weight load used twice.
#[inline(always)]
fn dense_rows<const OUT: usize>(w_t: &[f64], b: &[f64], inp: usize, a: &[f64], h: &mut [f64]) {
    const W: usize = 16;
    let b: &[f64; OUT] = b.try_into().expect("bias has OUT entries");
    if !OUT.is_multiple_of(W) {
        for (ap, hp) in a.chunks_exact(inp).zip(h.chunks_exact_mut(OUT)) {
            let mut acc = [-0.0f64; OUT];
            for (ai, row) in ap.iter().zip(w_t.chunks_exact(OUT)) {
                for o in 0..OUT {
                    acc[o] += row[o] * ai;
                }
            }
            for o in 0..OUT {
                hp[o] = b[o] + acc[o];
            }
        }
        return;
    }
    let mut a_pairs = a.chunks_exact(2 * inp);
    let mut h_pairs = h.chunks_exact_mut(2 * OUT);
    for (ap, hp) in (&mut a_pairs).zip(&mut h_pairs) {
        let (a0, a1) = ap.split_at(inp);
        for c in (0..OUT).step_by(W) {
            let mut acc0 = [-0.0f64; W];
            let mut acc1 = [-0.0f64; W];
            for i in 0..inp {
                let w: &[f64; W] = w_t[i * OUT + c..i * OUT + c + W]
                    .try_into()
                    .expect("W weights");
                let (x0, x1) = (a0[i], a1[i]);
                for l in 0..W {
                    acc0[l] += w[l] * x0;
                    acc1[l] += w[l] * x1;
                }
            }
            for l in 0..W {
                hp[c + l] = b[c + l] + acc0[l];
                hp[OUT + c + l] = b[c + l] + acc1[l];
            }
        }
    }
    let (ar, hr) = (a_pairs.remainder(), h_pairs.into_remainder());
    if !ar.is_empty() {
        for c in (0..OUT).step_by(W) {
            let mut acc = [-0.0f64; W];
            for i in 0..inp {
                for l in 0..W {
                    acc[l] += w_t[i * OUT + c + l] * ar[i];
                }
            }
            for l in 0..W {
                hr[c + l] = b[c + l] + acc[l];
            }
        }
    }
}

/// [`dense_rows`] for a width known only at run time.
fn dense_rows_any(w_t: &[f64], b: &[f64], inp: usize, out: usize, a: &[f64], h: &mut [f64]) {
    for (ap, hp) in a.chunks_exact(inp).zip(h.chunks_exact_mut(out)) {
        hp.fill(-0.0);
        for (ai, row) in ap.iter().zip(w_t.chunks_exact(out)) {
            for (hv, wv) in hp.iter_mut().zip(row) {
                *hv += wv * ai;
            }
        }
        for (hv, bv) in hp.iter_mut().zip(b) {
            *hv += bv; // bv + hv: addition commutes bit for bit
        }
    }
}

impl BatchField for BatchedFlow<'_> {
    fn dim(&self) -> usize {
        self.model.d
    }
    fn eval_block(&self, x: &[f64], out: &mut [f64]) {
        // The same arithmetic in wider registers where the CPU has them (no FMA: it would change bits).
        #[cfg(target_arch = "x86_64")]
        {
            if std::arch::is_x86_feature_detected!("avx512f") {
                // SAFETY: the CPU supports AVX-512F (checked just above).
                return unsafe { self.forward_block_avx512(x, out) };
            }
            if std::arch::is_x86_feature_detected!("avx2") {
                // SAFETY: the CPU supports AVX2 (checked just above).
                return unsafe { self.forward_block_avx2(x, out) };
            }
        }
        self.forward_block(x, out)
    }
    fn jacobian(&self, x: &[f64], out: &mut [f64]) {
        self.model.jacobian_into(x, out)
    }
}

/// PyTorch-default initial leaves for an architecture (kernel: fan-in of the first layer is `9d`).
pub(crate) fn init_leaves(arch: &Arch, seed: u64) -> Vec<Vec<f64>> {
    let mut rng = stream(seed, "flow/init");
    let (d, h) = (arch.d, arch.hidden);
    let layers: Vec<Dense> = match arch.network {
        Network::Kernel => vec![
            Dense::init(9 * d, h, &mut rng),
            Dense::init(h, h, &mut rng),
            Dense::init(h, d, &mut rng),
        ],
        Network::Mlp => vec![
            Dense::init(d, h, &mut rng),
            Dense::init(h, h, &mut rng),
            Dense::init(h, h, &mut rng),
            Dense::init(h, d, &mut rng),
        ],
    };
    FlowModel {
        network: arch.network,
        d,
        layers,
        running_mean: vec![0.0; d],
        running_var: vec![1.0; d],
    }
    .to_leaves()
}
