//! From a network's predicted noise ε̂ to the score of the noised density, shared by every image score
//! model (the local convolutional score and the UNet) so that they form it by the same arithmetic.

use rayon::prelude::*;

/// Turns ε̂ in `out` into the score s = -ε̂/σ in place.
pub fn eps_to_score(sigma: f32, out: &mut [f32]) {
    let k = -1.0 / sigma;
    out.iter_mut().for_each(|v| *v *= k);
}

/// Turns ε̂ in `out` (predicted at `x`) into the score with the reference's clipping, in place: the
/// denoised (Tweedie) estimate x̂0 = (x - σ ε̂) / a is clamped to the data's range [-1, 1] before forming
/// s = -(x - a · x̂0) / σ², where `a` is the signal scale at level σ. Identical to [`eps_to_score`] where
/// nothing clips; outside the data's range it gives the score a restoring force.
pub fn eps_to_clipped_score(x: &[f32], sigma: f32, a: f32, out: &mut [f32]) {
    out.par_iter_mut().zip(x.par_iter()).for_each(|(o, &x)| {
        let x0 = ((x - sigma * *o) / a).clamp(-1.0, 1.0);
        *o = -(x - a * x0) / (sigma * sigma);
    });
}
