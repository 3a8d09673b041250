//! The UNet's building operations on dfdx 0.13's public API, generic over the device, the float type
//! and the tape: circular 3x3 convolutions (stride 1 and 2), nearest-neighbour upsampling, linear
//! layers, GroupNorm and SiLU.
//!
//! Activations are matrices `[B*P, C]` (row `b P + p` for sample `b` at position `p` = H*W grid index;
//! channels last). dfdx has no convolution on stable, and its CPU `slice` backward overwrites instead of
//! adding, so both the convolution and the upsampling are ONE `gather` of precomputed (wrapped) row
//! indices along axis 0, whose backward accumulates correctly on every device. The convolution gathers
//! the 9 taps of each output row next to each other (`[B*P_out*9, C_in]`), which is already the im2col
//! matrix `[B*P_out, 9*C_in]` after a free reshape, and multiplies it by the weight `[9*C_in, C_out]` in
//! one matmul: no permute (strided copy), no reduction. (A spatial-first `[P, B, C]` layout needs a
//! batched matmul and a sum over the 9 taps instead; this layout made the paper UNet's training step
//! 1.47x faster and its forward 1.27x, benches/unet.rs run interleaved on 2 cores.) Parameters are stored flat (`[n]`) and reshaped at use; a reshape of a
//! contiguous tensor keeps its id, so gradients land on the flat parameter.

use dfdx::prelude::*;

/// A flat parameter tensor.
pub type Flat<E, D> = Tensor<(usize,), E, D>;
/// An activation or any matrix: `[B*P, C]` (P = H*W positions) or `[rows, cols]`.
pub type Mat<E, D, T> = Tensor<(usize, usize), E, D, T>;
/// A row-index tensor for `gather`.
pub type Index<D> = Tensor<(usize,), usize, D>;

/// `x` as the float type `E`.
pub fn cst<E: Dtype>(x: f64) -> E {
    E::from_f64(x).expect("every f64 converts to f32/f64")
}

/// Source rows of a circular 3x3 convolution over `b` samples of an `h x w` grid with stride `stride`:
/// entry `(q * 9 + k)` for output row `q = s P_out + p` and tap `k = 3 (dy + 1) + (dx + 1)` is the input
/// row `s P + ((stride i + dy) mod h) w + (stride j + dx) mod w` where `p = i (w / stride) + j` —
/// PyTorch's `Conv2d(3, stride, padding=1, padding_mode="circular")` alignment.
pub fn conv_indices(b: usize, h: usize, w: usize, stride: usize) -> Vec<usize> {
    let (ho, wo) = (h / stride, w / stride);
    let mut idx = Vec::with_capacity(b * 9 * ho * wo);
    for s in 0..b {
        for i in 0..ho {
            for j in 0..wo {
                for k in 0..9 {
                    let (dy, dx) = (k / 3, k % 3);
                    let y = (stride * i + h + dy - 1) % h;
                    idx.push(s * h * w + y * w + (stride * j + w + dx - 1) % w);
                }
            }
        }
    }
    idx
}

/// Source rows of a nearest-neighbour x2 upsampling of `b` samples from `h x w` to `2h x 2w`.
pub fn upsample_indices(b: usize, h: usize, w: usize) -> Vec<usize> {
    (0..b)
        .flat_map(|s| {
            (0..4 * h * w).map(move |p| {
                let (i, j) = (p / (2 * w), p % (2 * w));
                s * h * w + (i / 2) * w + j / 2
            })
        })
        .collect()
}

/// The precomputed index tensors of one resolution level `h x w` for a batch of `b`.
#[derive(Clone, Debug)]
pub struct LevelGrid<D: Storage<usize>> {
    /// Samples in the batch.
    pub b: usize,
    /// Positions per sample (h * w).
    pub p: usize,
    /// Stride-1 circular conv taps at this level.
    pub same: Index<D>,
    /// Stride-2 conv taps from this level down to the next (`None` at the last level).
    pub down: Option<Index<D>>,
    /// Upsampling from the next level up to this one (`None` at the last level).
    pub up: Option<Index<D>>,
}

/// The grids of `levels` resolution levels starting at `h x w` (each halves both sides), batch `b`.
pub fn level_grids<E: Dtype, D: Device<E>>(
    dev: &D,
    b: usize,
    h: usize,
    w: usize,
    levels: usize,
) -> Vec<LevelGrid<D>> {
    let index = |v: Vec<usize>| {
        let n = v.len();
        dev.tensor_from_vec(v, (n,))
    };
    (0..levels)
        .map(|l| {
            let (lh, lw) = (h >> l, w >> l);
            let last = l + 1 == levels;
            LevelGrid {
                b,
                p: lh * lw,
                same: index(conv_indices(b, lh, lw, 1)),
                down: (!last).then(|| index(conv_indices(b, lh, lw, 2))),
                up: (!last).then(|| index(upsample_indices(b, lh / 2, lw / 2))),
            }
        })
        .collect()
}

/// A circular 3x3 convolution of `x` `[B*P, C_in]` with the taps `idx` (from [`conv_indices`], 9 per
/// output row), weight `[9, C_in, C_out]` and bias `[C_out]`: `[B*P_out, C_out]`.
pub fn conv3x3<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Mat<E, D, T>,
    idx: &Index<D>,
    weight: &Flat<E, D>,
    bias: &Flat<E, D>,
) -> Mat<E, D, T> {
    let cin = x.shape().1;
    let rows = idx.shape().0 / 9;
    let cols = x.gather(idx.clone()).reshape_like(&(rows, 9 * cin));
    linear(cols, weight, bias)
}

/// Nearest-neighbour x2 upsampling of `[B*P, C]` with `idx` from [`upsample_indices`]: `[B*4P, C]`.
pub fn upsample<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Mat<E, D, T>,
    idx: &Index<D>,
) -> Mat<E, D, T> {
    x.gather(idx.clone())
}

/// `x W + b` for rows `x` `[N, C_in]`, weight `[C_in, C_out]`, bias `[C_out]`.
pub fn linear<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Mat<E, D, T>,
    weight: &Flat<E, D>,
    bias: &Flat<E, D>,
) -> Mat<E, D, T> {
    let (n, cin) = *x.shape();
    let cout = bias.shape().0;
    let y = x.matmul(weight.clone().reshape_like(&(cin, cout)));
    y + bias.clone().broadcast_like::<_, Axis<0>>(&(n, cout))
}

/// SiLU `x σ(x)` (dfdx 0.13 has none). The sigmoid branch is a retaped copy, so the product's two
/// operands are different tensors (a binary op on one tensor id twice panics in backward).
pub fn silu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let s = x.retaped::<T>().sigmoid();
    x * s
}

/// GroupNorm of `[B*P, C]` over `groups` groups of channels (statistics per sample and group over all
/// `p` positions and the group's channels, biased variance, `eps` 1e-5 as PyTorch), then the per-channel
/// affine `gamma`, `beta`.
pub fn group_norm<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Mat<E, D, T>,
    p: usize,
    groups: usize,
    gamma: &Flat<E, D>,
    beta: &Flat<E, D>,
) -> Mat<E, D, T> {
    let (rows, c) = *x.shape();
    let y = x
        .reshape_like(&(rows / p, p, groups, c / groups))
        .normalize::<Axes2<1, 3>>(1e-5)
        .reshape_like(&(rows, c));
    let g = gamma.clone().broadcast_like::<_, Axis<0>>(&(rows, c));
    y * g + beta.clone().broadcast_like::<_, Axis<0>>(&(rows, c))
}

/// The sinusoidal timestep embedding (diffusers' `Timesteps(dim, flip_sin_to_cos=True, shift=0)`):
/// `[cos(t f_i), sin(t f_i)]` with `f_i = 10000^(-i / (dim/2))`, one row of `dim` per timestep.
pub fn timestep_embedding(ts: &[usize], dim: usize) -> Vec<f64> {
    let half = dim / 2;
    let mut out = Vec::with_capacity(ts.len() * dim);
    for &t in ts {
        let f = |i: usize| t as f64 * (-(10000f64.ln()) * i as f64 / half as f64).exp();
        out.extend((0..half).map(|i| f(i).cos()));
        out.extend((0..half).map(|i| f(i).sin()));
    }
    out
}

/// Host fields `[n, c, h, w]` -> the activation layout `[n*h*w, c]`.
pub fn to_act_layout<E: Copy>(x: &[E], n: usize, c: usize, hw: usize) -> Vec<E> {
    let mut out = Vec::with_capacity(x.len());
    for i in 0..n {
        for p in 0..hw {
            out.extend((0..c).map(|ch| x[(i * c + ch) * hw + p]));
        }
    }
    out
}

/// The activation layout `[n*h*w, c]` -> host fields `[n, c, h, w]`.
pub fn from_act_layout<E: Copy>(y: &[E], n: usize, c: usize, hw: usize, out: &mut [E]) {
    for i in 0..n {
        for p in 0..hw {
            for ch in 0..c {
                out[(i * c + ch) * hw + p] = y[(i * hw + p) * c + ch];
            }
        }
    }
}
