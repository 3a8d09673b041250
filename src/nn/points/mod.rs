//! Point models: the DDPM score MLP of spec §3 and the flow networks of spec §2, trained with dfdx and
//! evaluated in plain Rust f64.
//!
//! Training needs autodiff, so it runs on dfdx tensors ([`tape`]); the divergence in the flow loss is an
//! exact forward-mode tangent pass built from ordinary taped ops. The flow network's training step runs
//! the same loss and exact gradient through a hand-written forward + reverse pass (module `fast`: gemm and
//! rayon, ~5-10x faster than the taped graph on CPU), which tests hold against the dfdx graph and f64
//! finite differences; with `device = "cuda"` the taped graph runs on the GPU instead (`train_*_on`). Inference (rollouts, Jacobians,
//! Lyapunov exponents) needs millions of tiny per-point evaluations and no autodiff, so trained weights
//! are copied out into [`ScoreModel`] and [`FlowModel`], which are plain `Vec<f64>` networks.
//!
//! Conventions (all seeded through [`crate::science::rng`], bit-reproducible on CPU for a seed):
//! - an **epoch** is one pass over the dataset shuffled afresh (stream `"<model>/shuffle"`, index = epoch)
//!   in consecutive batches of `batch`; a last partial batch is used if it has at least 2 points
//!   (batch-norm needs 2), otherwise dropped; the per-epoch loss reported is the mean batch loss;
//! - optimiser: Adam (beta 0.9, 0.999, eps 1e-8) with L2 weight decay added to the gradient, as
//!   PyTorch's `Adam(weight_decay=..)`; master weights are f64, the forward/backward runs in f32;
//! - initialisation: PyTorch's `nn.Linear` default, `U(-1/sqrt(fan_in), 1/sqrt(fan_in))`.
//!
//! # Checkpoint layout (safetensors + JSON sidecar)
//!
//! `save(path)` writes `path` (safetensors, every tensor F64, PyTorch `[out, in]` weights) and
//! `path.with_extension("json")`. Keys mirror a PyTorch `nn.Sequential` called `net`:
//!
//! | model | keys |
//! |---|---|
//! | score (`"kind": "score"`) | `net.0.weight [64, d+1]` (input `[x, 2t-1]`), `net.0.bias`, `net.2.weight [64,64]`, `net.2.bias`, `net.4.weight [d,64]`, `net.4.bias`; output = net(..) + x |
//! | flow kernel | `net.0.weight [64, 9d]`, `net.0.bias`, `net.2.*`, `net.4.weight [d,64]`, `net.4.bias`, `net.5.running_mean [d]`, `net.5.running_var [d]` |
//! | flow mlp | `net.0.weight [64, d]`, `net.2.*`, `net.4.*` (64x64), `net.6.weight [d,64]`, `net.6.bias`, `net.7.running_mean`, `net.7.running_var` |
//!
//! Activations: score ReLU, flow SiLU, between the linear layers. The kernel network's input encoding is
//! `[x, sin(x), cos(x), sin(2x), cos(2x), sin(4x), cos(4x), sin(8x), cos(8x)]` (each block `d` wide,
//! in that order). The output batch-norm has no affine parameters, eps 1e-5, and in evaluation computes
//! `(h - running_mean) / sqrt(running_var + eps)`. The sidecar JSON holds
//! `{"format": "eqflow.points.v1", "kind", "network", "d", "hidden", "bn_eps", "encoding", "extra"}`,
//! where `extra` is any value the caller passes (e.g. the data normalisation).

pub mod dense;
mod fast;
mod flow;
pub mod schedule;
mod score;
mod tape;
mod train;

pub mod check;

#[cfg(test)]
mod tests;

pub use flow::{BatchedFlow, FlowModel};
pub use score::{train_score, train_score_on, ScoreModel, ScoreTrainConfig};
pub use tape::Real;
pub use train::{train_dynamics, train_dynamics_on, Divergence, DynamicsTrainConfig};

/// Width of every hidden layer.
pub const HIDDEN: usize = 64;
/// Frequencies of the kernel network's positional encoding (`2^i`, i = 0..3).
pub const ENCODING_FREQUENCIES: [f64; 4] = [1.0, 2.0, 4.0, 8.0];
/// Batch-norm epsilon (PyTorch's default).
pub const BN_EPS: f64 = 1e-5;
/// Batch-norm running-statistics momentum (PyTorch's default).
pub const BN_MOMENTUM: f64 = 0.1;

/// Which flow architecture (spec §2).
#[derive(Clone, Copy, Debug, PartialEq, Eq, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Network {
    /// Positional encoding, two SiLU hidden layers of 64, output batch-norm (the paper's default).
    Kernel,
    /// Three SiLU hidden layers of 64, output batch-norm.
    Mlp,
}

impl Network {
    /// The name used in configs and checkpoints.
    pub fn name(self) -> &'static str {
        match self {
            Network::Kernel => "kernel",
            Network::Mlp => "mlp",
        }
    }
}

/// Architecture of a flow network.
#[derive(Clone, Copy, Debug, PartialEq)]
pub(crate) struct Arch {
    pub network: Network,
    pub d: usize,
    pub hidden: usize,
}

impl Arch {
    /// Shapes `[in, out]` (or `[len]` for biases) of the training leaves, in leaf order:
    /// kernel: 9 encoding blocks `[d, 64]`, b0, W1, b1, W2 `[64, d]`, b2; mlp: W0, b0, .., W3, b3.
    pub fn leaf_shapes(&self) -> Vec<(usize, usize)> {
        let (d, h) = (self.d, self.hidden);
        match self.network {
            Network::Kernel => {
                let mut v = vec![(d, h); 9];
                v.extend([(1, h), (h, h), (1, h), (h, d), (1, d)]);
                v
            }
            Network::Mlp => vec![
                (d, h),
                (1, h),
                (h, h),
                (1, h),
                (h, h),
                (1, h),
                (h, d),
                (1, d),
            ],
        }
    }
}
