//! Random skew-symmetric matrices for the training-free flow `v = D s` (spec §6).
//!
//! For skew `D`, `div(p D grad log p) = div(D grad p) = 0`, so `v = D s` keeps `p` stationary for any
//! scale of `D`. We normalise to unit Frobenius norm (`|D|_F = 1`): in 2-D this gives exactly
//! `±[[0, 1], [-1, 0]] / sqrt(2)`, the same convention as the Turing channel rotation of spec §7.

use crate::science::rng::stream;
use rand_distr::{Distribution, StandardNormal};

/// A seeded random `d x d` skew matrix `D = (P - P^T) / |P - P^T|_F`, `P` with i.i.d. N(0,1) entries;
/// row-major.
pub fn random_skew(d: usize, seed: u64) -> Vec<f64> {
    let mut rng = stream(seed, "skew");
    let p: Vec<f64> = (0..d * d)
        .map(|_| StandardNormal.sample(&mut rng))
        .collect();
    let mut m = vec![0.0; d * d];
    for i in 0..d {
        for j in 0..d {
            m[i * d + j] = p[i * d + j] - p[j * d + i];
        }
    }
    let norm = m.iter().map(|v| v * v).sum::<f64>().sqrt();
    m.iter_mut().for_each(|v| *v /= norm);
    m
}

/// `out = D x` for a row-major `d x d` matrix.
pub fn apply(matrix: &[f64], x: &[f64], out: &mut [f64]) {
    let d = x.len();
    for i in 0..d {
        out[i] = (0..d).map(|j| matrix[i * d + j] * x[j]).sum();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn skew_unit_norm_and_seeded() {
        let m = random_skew(3, 5);
        for i in 0..3 {
            for j in 0..3 {
                assert_eq!(m[i * 3 + j], -m[j * 3 + i]);
            }
        }
        assert!((m.iter().map(|v| v * v).sum::<f64>() - 1.0).abs() < 1e-12);
        assert_eq!(m, random_skew(3, 5));
        assert_ne!(m, random_skew(3, 6));
        let m2 = random_skew(2, 1);
        assert!((m2[1].abs() - 0.5f64.sqrt()).abs() < 1e-12);
    }
}
