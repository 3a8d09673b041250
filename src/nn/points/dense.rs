//! Plain-Rust dense layers in f64, the shared building block of the inference-side point models.
//!
//! Training runs on dfdx tensors, but rollouts, Lyapunov exponents and Jacobians need thousands of tiny
//! per-point evaluations and no autodiff, so the trained weights are copied out into these `Vec<f64>`
//! layers. Weights are PyTorch-shaped, `[out, in]` row-major, which is also the checkpoint layout.

use crate::science::rng::Rng;
use rand::Rng as _;

/// One affine layer `y = W x + b`, `W` stored `[out, in]` row-major.
#[derive(Clone, Debug, PartialEq)]
pub struct Dense {
    /// Input width.
    pub inp: usize,
    /// Output width.
    pub out: usize,
    /// Weights, `out * inp` values, row `o` holds the weights into output `o`.
    pub w: Vec<f64>,
    /// Biases, `out` values.
    pub b: Vec<f64>,
}

impl Dense {
    /// PyTorch's default `nn.Linear` initialisation: weights and biases `U(-1/sqrt(in), 1/sqrt(in))`.
    pub fn init(inp: usize, out: usize, rng: &mut Rng) -> Self {
        let k = 1.0 / (inp as f64).sqrt();
        let w = (0..inp * out).map(|_| rng.gen_range(-k..k)).collect();
        let b = (0..out).map(|_| rng.gen_range(-k..k)).collect();
        Self { inp, out, w, b }
    }

    /// `y = W x + b`.
    pub fn apply(&self, x: &[f64], y: &mut [f64]) {
        for ((yo, row), b) in y.iter_mut().zip(self.w.chunks_exact(self.inp)).zip(&self.b) {
            *yo = b + row.iter().zip(x).map(|(a, b)| a * b).sum::<f64>();
        }
    }

    /// Tangents: `ty[k] = W tx[k]` for `k` tangents stored `[k, in]` -> `[k, out]`.
    pub fn apply_tangents(&self, tx: &[f64], k: usize, ty: &mut [f64]) {
        for j in 0..k {
            let t = &tx[j * self.inp..(j + 1) * self.inp];
            for o in 0..self.out {
                let row = &self.w[o * self.inp..(o + 1) * self.inp];
                ty[j * self.out + o] = row.iter().zip(t).map(|(a, b)| a * b).sum::<f64>();
            }
        }
    }
}

/// SiLU `h * sigmoid(h)`.
pub fn silu(h: f64) -> f64 {
    h / (1.0 + (-h).exp())
}

/// Derivative of SiLU: `s (1 + h (1 - s))`, `s = sigmoid(h)`.
pub fn silu_prime(h: f64) -> f64 {
    let s = 1.0 / (1.0 + (-h).exp());
    s * (1.0 + h * (1.0 - s))
}
