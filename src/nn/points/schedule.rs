//! The 100-step cosine noise schedule of the point score model (spec §3).
//!
//! `abar(i) = (cos(pi i / 99) (1 - 2e-3) + 1) / 2` for `i = floor(t * 99)`, `t` in [0, 1]. Kept apart so
//! the score model, the dynamics loss (which noises data at a fixed `t`) and the stages agree on it.

/// Number of discrete diffusion steps.
pub const STEPS: usize = 100;

/// The discrete step index of a continuous time `t` in [0, 1]: `floor(t * 99)`, clamped.
pub fn step_index(t: f64) -> usize {
    ((t * (STEPS - 1) as f64).floor().max(0.0) as usize).min(STEPS - 1)
}

/// `abar` at step `i` (0 = almost clean, 99 = almost pure noise).
pub fn abar_at(i: usize) -> f64 {
    ((std::f64::consts::PI * i as f64 / (STEPS - 1) as f64).cos() * (1.0 - 2e-3) + 1.0) / 2.0
}

/// `abar` at continuous time `t`.
pub fn abar(t: f64) -> f64 {
    abar_at(step_index(t))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn schedule_endpoints() {
        assert!((abar(0.0) - 0.999).abs() < 1e-12);
        assert!((abar(1.0) - 0.001).abs() < 1e-12);
        assert_eq!(step_index(0.1), 9);
        assert!(abar(0.2) < abar(0.1));
    }
}
