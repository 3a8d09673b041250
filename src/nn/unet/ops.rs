//! The UNet's building operations on dfdx 0.13's public API, generic over the device, the float type
//! and the tape: circular 3x3 convolutions (stride 1 and 2), nearest-neighbour upsampling, linear
//! layers, GroupNorm and SiLU.
//!
//! Activations live in the layout `[H*W, B, C]` (spatial axis first, channels last). dfdx has no
//! convolution on stable, and its CPU `slice` backward overwrites instead of adding, so both the
//! convolution and the upsampling are a `gather` of precomputed (wrapped) spatial indices along axis 0,
//! whose backward accumulates correctly on every device. The convolution gathers the 9 shifted copies
//! k-major (`[9 * P_out, B, C_in]`), which reshapes for free into a batch of 9 matrices, multiplies
//! them by the 9 weight slices `[9, C_in, C_out]` in one batched matmul and sums the 9 products: no
//! permute (strided copy) anywhere. Parameters are stored flat (`[n]`) and reshaped at use; a reshape of
//! a contiguous tensor keeps its id, so gradients land on the flat parameter.

use dfdx::prelude::*;

/// A flat parameter tensor.
pub type Flat<E, D> = Tensor<(usize,), E, D>;
/// An activation `[P, B, C]` (P = H*W positions).
pub type Act<E, D, T> = Tensor<(usize, usize, usize), E, D, T>;
/// A matrix `[rows, cols]`.
pub type Mat<E, D, T> = Tensor<(usize, usize), E, D, T>;

/// `x` as the float type `E`.
pub fn cst<E: Dtype>(x: f64) -> E {
    E::from_f64(x).expect("every f64 converts to f32/f64")
}

/// Source positions of a circular 3x3 convolution over an `h x w` grid with stride `stride`, k-major:
/// entry `k * P_out + p` is the input position read by tap `k = 3 (dy + 1) + (dx + 1)` for output
/// position `p = i * (w / stride) + j`, i.e. `((stride i + dy) mod h, (stride j + dx) mod w)` — PyTorch's
/// `Conv2d(3, stride, padding=1, padding_mode="circular")` alignment.
pub fn conv_indices(h: usize, w: usize, stride: usize) -> Vec<usize> {
    let (ho, wo) = (h / stride, w / stride);
    let mut idx = Vec::with_capacity(9 * ho * wo);
    for k in 0..9 {
        let (dy, dx) = (k / 3, k % 3);
        for i in 0..ho {
            let y = (stride * i + h + dy - 1) % h;
            for j in 0..wo {
                idx.push(y * w + (stride * j + w + dx - 1) % w);
            }
        }
    }
    idx
}

/// Source positions of a nearest-neighbour x2 upsampling from `h x w` to `2h x 2w`.
pub fn upsample_indices(h: usize, w: usize) -> Vec<usize> {
    (0..4 * h * w)
        .map(|p| {
            let (i, j) = (p / (2 * w), p % (2 * w));
            (i / 2) * w + j / 2
        })
        .collect()
}

/// The precomputed index tensors of one resolution level `h x w`.
#[derive(Clone, Debug)]
pub struct LevelGrid<D: Storage<usize>> {
    /// Height.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Stride-1 circular conv taps at this level.
    pub same: Tensor<(usize,), usize, D>,
    /// Stride-2 conv taps from this level down to the next (`None` at the last level).
    pub down: Option<Tensor<(usize,), usize, D>>,
    /// Upsampling from the next level up to this one (`None` at the last level).
    pub up: Option<Tensor<(usize,), usize, D>>,
}

/// The grids of `levels` resolution levels starting at `h x w` (each halves both sides).
pub fn level_grids<E: Dtype, D: Device<E>>(
    dev: &D,
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
                h: lh,
                w: lw,
                same: index(conv_indices(lh, lw, 1)),
                down: (!last).then(|| index(conv_indices(lh, lw, 2))),
                up: (!last).then(|| index(upsample_indices(lh / 2, lw / 2))),
            }
        })
        .collect()
}

/// A circular 3x3 convolution of `x` `[P, B, C_in]` with the taps `idx` (from [`conv_indices`], `9 P_out`
/// long), weight `[9, C_in, C_out]` and bias `[C_out]`: `[P_out, B, C_out]`.
pub fn conv3x3<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    idx: &Tensor<(usize,), usize, D>,
    weight: &Flat<E, D>,
    bias: &Flat<E, D>,
) -> Act<E, D, T> {
    let (_, b, cin) = *x.shape();
    let cout = bias.shape().0;
    let pout = idx.shape().0 / 9;
    let cols = x.gather(idx.clone()).reshape_like(&(9, pout * b, cin));
    let w = weight.clone().reshape_like(&(9, cin, cout));
    let y = cols.matmul(w).sum::<(usize, usize), Axis<0>>();
    let y = y + bias.clone().broadcast_like::<_, Axis<0>>(&(pout * b, cout));
    y.reshape_like(&(pout, b, cout))
}

/// Nearest-neighbour x2 upsampling of `[P, B, C]` with `idx` from [`upsample_indices`]: `[4P, B, C]`.
pub fn upsample<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    idx: &Tensor<(usize,), usize, D>,
) -> Act<E, D, T> {
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

/// [`linear`] applied at every position of an activation `[P, B, C_in]` (a 1x1 convolution).
pub fn linear_act<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    weight: &Flat<E, D>,
    bias: &Flat<E, D>,
) -> Act<E, D, T> {
    let (p, b, cin) = *x.shape();
    let cout = bias.shape().0;
    linear(x.reshape_like(&(p * b, cin)), weight, bias).reshape_like(&(p, b, cout))
}

/// SiLU `x σ(x)` (dfdx 0.13 has none). The sigmoid branch is a retaped copy, so the product's two
/// operands are different tensors (a binary op on one tensor id twice panics in backward).
pub fn silu<S: Shape, E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Tensor<S, E, D, T>,
) -> Tensor<S, E, D, T> {
    let s = x.retaped::<T>().sigmoid();
    x * s
}

/// GroupNorm of `[P, B, C]` over `groups` groups of channels (statistics per sample and group over all
/// positions and the group's channels, biased variance, `eps` 1e-5 as PyTorch), then the per-channel
/// affine `gamma`, `beta`.
pub fn group_norm<E: Dtype, D: Device<E>, T: Tape<E, D>>(
    x: Act<E, D, T>,
    groups: usize,
    gamma: &Flat<E, D>,
    beta: &Flat<E, D>,
) -> Act<E, D, T> {
    let (p, b, c) = *x.shape();
    let y = x
        .reshape_like(&(p, b, groups, c / groups))
        .normalize::<Axes2<0, 3>>(1e-5)
        .reshape_like(&(p, b, c));
    let g = gamma.clone().broadcast_like::<_, Axes2<0, 1>>(&(p, b, c));
    y * g + beta.clone().broadcast_like::<_, Axes2<0, 1>>(&(p, b, c))
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

/// Host fields `[n, c, h, w]` -> the activation layout `[h*w, n, c]`.
pub fn to_act_layout<E: Copy>(x: &[E], n: usize, c: usize, hw: usize) -> Vec<E> {
    let mut out = Vec::with_capacity(x.len());
    for p in 0..hw {
        for i in 0..n {
            out.extend((0..c).map(|ch| x[(i * c + ch) * hw + p]));
        }
    }
    out
}

/// The activation layout `[h*w, n, c]` -> host fields `[n, c, h, w]`.
pub fn from_act_layout<E: Copy>(y: &[E], n: usize, c: usize, hw: usize, out: &mut [E]) {
    for p in 0..hw {
        for i in 0..n {
            for ch in 0..c {
                out[(i * c + ch) * hw + p] = y[(p * n + i) * c + ch];
            }
        }
    }
}
