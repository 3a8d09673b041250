//! The paper's DDPM noise schedule (100 steps, β linear from 1e-4 to 0.1; ā_t = ∏_{i ≤ t} (1 - β_i)), shared
//! by the UNet's training, the local score's noise levels and the annealed start's level spacing.

/// Timesteps of the schedule.
pub const DDPM_STEPS: usize = 100;

/// ā_t (timestep 10: 0.94478, σ = sqrt(1 - ā) = 0.2350); timesteps past the end read the last one.
pub fn ddpm_abar(t: usize) -> f64 {
    (0..=t.min(DDPM_STEPS - 1))
        .map(|i| 1.0 - (1e-4 + (0.1 - 1e-4) * i as f64 / (DDPM_STEPS - 1) as f64))
        .product()
}

/// The noise level σ_t = sqrt(1 - ā_t) of timestep `t`, in the f32 the image models work in.
pub fn ddpm_sigma(t: usize) -> f32 {
    (1.0 - ddpm_abar(t) as f32).sqrt()
}

/// `levels` noise levels from `top` down to `bottom` at evenly spaced DDPM timesteps (as DDIM skips
/// timesteps), which puts most of them near the top, where σ changes slowly per timestep and where the
/// creatures' places and shapes are decided; the ends are the timesteps whose σ are nearest `top` and
/// `bottom`, and repeated timesteps (more levels than timesteps) are kept once.
pub fn timestep_levels(top: f32, bottom: f32, levels: usize) -> Vec<f32> {
    let nearest = |s: f32| {
        (0..DDPM_STEPS)
            .min_by(|&a, &b| {
                (ddpm_sigma(a) - s)
                    .abs()
                    .total_cmp(&(ddpm_sigma(b) - s).abs())
            })
            .expect("timesteps")
    };
    let (t_top, t_bottom) = (nearest(top), nearest(bottom));
    let mut ts: Vec<usize> = (0..levels)
        .map(|k| {
            let u = k as f64 / (levels.max(2) - 1) as f64;
            (t_top as f64 + u * (t_bottom as f64 - t_top as f64)).round() as usize
        })
        .collect();
    ts.dedup();
    let mut out: Vec<f32> = ts.into_iter().map(ddpm_sigma).collect();
    // The ends are the model's own levels exactly (the top it was trained to, the flow's level).
    if let Some(first) = out.first_mut() {
        *first = top;
    }
    if let Some(last) = out.last_mut() {
        *last = bottom;
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::science::sde::anneal_levels;

    #[test]
    fn schedule_matches_the_papers_flow_level() {
        assert!((ddpm_abar(10) - 0.94478).abs() < 1e-5);
        assert!((ddpm_sigma(10) - 0.2350).abs() < 1e-4);
        assert!((ddpm_sigma(99) - 0.99719).abs() < 1e-4);
        assert_eq!(ddpm_abar(150), ddpm_abar(99));
    }

    #[test]
    fn timestep_spacing_crowds_the_levels_near_the_top_and_keeps_the_ends() {
        // The score's levels: DDPM timesteps 99 (σ 0.997) and 10 (σ 0.235).
        let (top, bottom) = (ddpm_sigma(99), ddpm_sigma(10));
        let ts = timestep_levels(top, bottom, 40);
        assert_eq!(ts.len(), 40);
        assert_eq!((ts[0], ts[39]), (top, bottom));
        assert!(ts.windows(2).all(|p| p[1] < p[0]), "decreasing: {ts:?}");
        let above = |v: &[f32]| v.iter().filter(|&&s| s > 0.85).count();
        // Geometric spacing gives the top (σ > 0.85) 5 of 40 levels; timesteps 50 of 90 -> ~22 of 40.
        assert_eq!(above(&anneal_levels(top, bottom, 40)), 5);
        assert!((20..=24).contains(&above(&ts)), "{}", above(&ts));
        // More levels than timesteps 10..=99: each timestep once.
        assert_eq!(timestep_levels(top, bottom, 200).len(), 90);
    }
}
