//! The Gray-Scott reaction-diffusion system (spec §7): presets, the paper's initial condition, a fused
//! periodic 5-point stencil stepped by explicit Euler (dt = 1, clamped to [0, 1]), the exact right-hand side,
//! and a detector for samples that died to the flat state.
//!
//! Shaped for speed and reproducibility: one sample is a `[2, H, W]` block (u then v) of an `[N, 2, H, W]`
//! row-major `Vec<f32>` in physical units [0, 1]; samples are independent, so `generate` runs one rayon job
//! per sample with its own seeded sub-stream (bit-identical whatever the thread count). The stencil is one
//! fused pass per step over two ping-pong buffers, with the wrap-around columns handled apart from a
//! branch-free interior that the compiler vectorises. As v decays, values become denormal floats, which are
//! about 15x slower (spec §7b); every job therefore runs under [`with_flush_denormals`], which sets
//! flush-to-zero / denormals-are-zero for the job and restores the caller's MXCSR afterwards.

use rayon::prelude::*;

use crate::science::rng::substream;

/// The four rates of a Gray-Scott preset.
#[derive(Clone, Copy, Debug, PartialEq)]
pub struct GrayScottParams {
    /// Diffusion rate of u.
    pub du: f32,
    /// Diffusion rate of v.
    pub dv: f32,
    /// Feed rate F.
    pub f: f32,
    /// Kill rate k.
    pub k: f32,
}

/// `(name, Du, Dv, F, k)` of every preset of spec §7.
const PRESETS: [(&str, f32, f32, f32, f32); 15] = [
    ("life", 0.16, 0.08, 0.006, 0.045),
    ("waves", 0.16, 0.08, 0.018, 0.049),
    ("spirals", 0.16, 0.08, 0.007, 0.028),
    ("maze", 0.16, 0.08, 0.029, 0.057),
    ("spots", 0.16, 0.08, 0.035, 0.065),
    ("dots", 0.16, 0.08, 0.04, 0.07),
    ("stripes", 0.16, 0.08, 0.035, 0.060),
    ("holes", 0.16, 0.08, 0.039, 0.058),
    ("chaos", 0.10, 0.05, 0.026, 0.051),
    ("bubbles", 0.16, 0.08, 0.090, 0.059),
    ("worms", 0.16, 0.08, 0.046, 0.063),
    ("solitons", 0.10, 0.05, 0.030, 0.060),
    ("pulsating_solitons", 0.10, 0.05, 0.025, 0.060),
    ("u_skate", 0.16, 0.08, 0.062, 0.061),
    ("fingerprints", 0.16, 0.08, 0.040, 0.064),
];

/// The names of all presets, in the order of spec §7.
pub fn preset_names() -> Vec<&'static str> {
    PRESETS.iter().map(|p| p.0).collect()
}

/// The parameters of a named preset, or `None` for an unknown name.
pub fn preset(name: &str) -> Option<GrayScottParams> {
    PRESETS
        .iter()
        .find(|p| p.0 == name)
        .map(|&(_, du, dv, f, k)| GrayScottParams { du, dv, f, k })
}

/// Runs `job` with flush-to-zero and denormals-are-zero set on the current thread, restoring the previous
/// floating-point control state afterwards (also on panic). A no-op wrapper on non-x86-64 targets.
pub fn with_flush_denormals<R>(job: impl FnOnce() -> R) -> R {
    let _guard = DenormalGuard::new();
    job()
}

/// Saves MXCSR, sets FTZ (bit 15) and DAZ (bit 6), restores on drop.
struct DenormalGuard {
    #[cfg(target_arch = "x86_64")]
    saved: u32,
}

impl DenormalGuard {
    fn new() -> Self {
        #[cfg(target_arch = "x86_64")]
        {
            let mut saved: u32 = 0;
            // SAFETY: stmxcsr/ldmxcsr only read/write the SSE control register (always present on x86-64)
            // and the 4-byte local we point them at.
            unsafe {
                std::arch::asm!("stmxcsr [{}]", in(reg) &mut saved as *mut u32, options(nostack));
                let new = saved | (1 << 15) | (1 << 6);
                std::arch::asm!("ldmxcsr [{}]", in(reg) &new as *const u32, options(nostack));
            }
            Self { saved }
        }
        #[cfg(not(target_arch = "x86_64"))]
        Self {}
    }
}

impl Drop for DenormalGuard {
    fn drop(&mut self) {
        #[cfg(target_arch = "x86_64")]
        // SAFETY: restores the value saved in `new`.
        unsafe {
            std::arch::asm!("ldmxcsr [{}]", in(reg) &self.saved as *const u32, options(nostack));
        }
    }
}

/// Writes the paper's initial condition into one `[2, h, w]` sample: u = 1, v = 0 everywhere, then 5 discs
/// (integer radius uniform in 3..=7 px, integer centre uniform on the grid, periodic distance) set to
/// u = 0.5, v = 0.25.
pub fn initial_condition(sample: &mut [f32], h: usize, w: usize, rng: &mut impl rand::Rng) {
    assert_eq!(sample.len(), 2 * h * w, "sample must be [2, h, w]");
    let (u, v) = sample.split_at_mut(h * w);
    u.fill(1.0);
    v.fill(0.0);
    for _ in 0..5 {
        let r: i64 = rng.gen_range(3..=7);
        let cy: i64 = rng.gen_range(0..h as i64);
        let cx: i64 = rng.gen_range(0..w as i64);
        for dy in -r..=r {
            for dx in -r..=r {
                if dy * dy + dx * dx <= r * r {
                    let y = (cy + dy).rem_euclid(h as i64) as usize;
                    let x = (cx + dx).rem_euclid(w as i64) as usize;
                    u[y * w + x] = 0.5;
                    v[y * w + x] = 0.25;
                }
            }
        }
    }
}

/// One cell update; shared by the vectorised interior and the wrap-around columns so both give the same bits.
/// Laplacian order: `((up + down) + (left + right)) - 4 c`.
#[inline(always)]
#[expect(
    clippy::too_many_arguments,
    reason = "one scalar per stencil tap keeps the interior loop vectorisable"
)]
#[expect(
    clippy::manual_clamp,
    reason = "max/min compile to branch-free vector instructions"
)]
fn cell(
    p: &GrayScottParams,
    u: f32,
    un: f32,
    us: f32,
    uw: f32,
    ue: f32,
    v: f32,
    vn: f32,
    vs: f32,
    vw: f32,
    ve: f32,
) -> (f32, f32) {
    let lu = ((un + us) + (uw + ue)) - 4.0 * u;
    let lv = ((vn + vs) + (vw + ve)) - 4.0 * v;
    let uvv = u * v * v;
    let du = p.du * lu - uvv + p.f * (1.0 - u);
    let dv = p.dv * lv + uvv - (p.f + p.k) * v;
    ((u + du).max(0.0).min(1.0), (v + dv).max(0.0).min(1.0))
}

/// One Euler step of one sample from `src` into `dst` (both `[2, h, w]`).
fn step_into(p: &GrayScottParams, src: &[f32], dst: &mut [f32], h: usize, w: usize) {
    assert!(h >= 3 && w >= 3, "grid must be at least 3x3");
    let hw = h * w;
    let (su, sv) = src.split_at(hw);
    let (du_, dv_) = dst.split_at_mut(hw);
    for y in 0..h {
        let yn = (y + h - 1) % h;
        let ys = (y + 1) % h;
        let row = |r: usize| r * w..(r + 1) * w;
        let (uc, un, us) = (&su[row(y)], &su[row(yn)], &su[row(ys)]);
        let (vc, vn, vs) = (&sv[row(y)], &sv[row(yn)], &sv[row(ys)]);
        let ou = &mut du_[y * w..(y + 1) * w];
        let ov = &mut dv_[y * w..(y + 1) * w];
        // Wrap-around columns.
        for x in [0, w - 1] {
            let xw = (x + w - 1) % w;
            let xe = (x + 1) % w;
            let (a, b) = cell(
                p, uc[x], un[x], us[x], uc[xw], uc[xe], vc[x], vn[x], vs[x], vc[xw], vc[xe],
            );
            ou[x] = a;
            ov[x] = b;
        }
        // Interior: equal-length slices so bounds checks vanish and the loop vectorises.
        let n = w - 2;
        let (ucw, ucc, uce) = (&uc[..n], &uc[1..n + 1], &uc[2..]);
        let (vcw, vcc, vce) = (&vc[..n], &vc[1..n + 1], &vc[2..]);
        let (unn, uss, vnn, vss) = (&un[1..n + 1], &us[1..n + 1], &vn[1..n + 1], &vs[1..n + 1]);
        let (ouu, ovv) = (&mut ou[1..n + 1], &mut ov[1..n + 1]);
        for i in 0..n {
            let (a, b) = cell(
                p, ucc[i], unn[i], uss[i], ucw[i], uce[i], vcc[i], vnn[i], vss[i], vcw[i], vce[i],
            );
            ouu[i] = a;
            ovv[i] = b;
        }
    }
}

/// Advances one `[2, h, w]` sample by `steps` Euler steps in place (no denormal handling; see [`simulate`]).
fn advance_sample(p: &GrayScottParams, sample: &mut [f32], h: usize, w: usize, steps: usize) {
    let mut other = vec![0.0f32; sample.len()];
    for s in 0..steps {
        if s % 2 == 0 {
            step_into(p, sample, &mut other, h, w);
        } else {
            step_into(p, &other, sample, h, w);
        }
    }
    if steps % 2 == 1 {
        sample.copy_from_slice(&other);
    }
}

/// Advances every sample of an `[n, 2, h, w]` batch (physical units) by `steps` steps in place, in parallel
/// over samples, with denormals flushed. Bitwise independent of the thread count.
pub fn simulate(p: &GrayScottParams, fields: &mut [f32], h: usize, w: usize, steps: usize) {
    assert_eq!(fields.len() % (2 * h * w), 0, "fields must be [n, 2, h, w]");
    fields
        .par_chunks_mut(2 * h * w)
        .for_each(|s| with_flush_denormals(|| advance_sample(p, s, h, w, steps)));
}

/// Generates `samples` independent samples of size `size x size`: the paper's initial condition (seeded by
/// `seed`, one sub-stream per sample), then `steps` Euler steps. Returns `[samples, 2, size, size]` in
/// physical units [0, 1]; see [`to_model_space`] for the [-1, 1] scaling the score model sees.
pub fn generate(
    p: &GrayScottParams,
    size: usize,
    steps: usize,
    samples: usize,
    seed: u64,
) -> Vec<f32> {
    let hw = size * size;
    let mut out = vec![0.0f32; samples * 2 * hw];
    out.par_chunks_mut(2 * hw).enumerate().for_each(|(i, s)| {
        let mut rng = substream(seed, "gray-scott/init", i as u64);
        initial_condition(s, size, size, &mut rng);
        with_flush_denormals(|| advance_sample(p, s, size, size, steps));
    });
    out
}

/// Maps physical [0, 1] values to the model's [-1, 1] (x -> 2x - 1), in place.
pub fn to_model_space(fields: &mut [f32]) {
    fields.iter_mut().for_each(|x| *x = 2.0 * *x - 1.0);
}

/// Maps model-space [-1, 1] values back to physical [0, 1] (x -> (x + 1) / 2), in place.
pub fn to_physical(fields: &mut [f32]) {
    fields.iter_mut().for_each(|x| *x = 0.5 * (*x + 1.0));
}

/// The exact right-hand side (du/dt, dv/dt) of every sample of an `[n, 2, h, w]` batch in physical units,
/// without clamping; same layout as the input.
pub fn rhs(p: &GrayScottParams, fields: &[f32], h: usize, w: usize) -> Vec<f32> {
    let hw = h * w;
    let mut out = vec![0.0f32; fields.len()];
    out.par_chunks_mut(2 * hw)
        .zip(fields.par_chunks(2 * hw))
        .for_each(|(o, s)| {
            let (u, v) = s.split_at(hw);
            for y in 0..h {
                for x in 0..w {
                    let i = y * w + x;
                    let nb = |a: &[f32]| {
                        let n = a[((y + h - 1) % h) * w + x] + a[((y + 1) % h) * w + x];
                        let e = a[y * w + (x + w - 1) % w] + a[y * w + (x + 1) % w];
                        (n + e) - 4.0 * a[i]
                    };
                    let uvv = u[i] * v[i] * v[i];
                    o[i] = p.du * nb(u) - uvv + p.f * (1.0 - u[i]);
                    o[hw + i] = p.dv * nb(v) + uvv - (p.f + p.k) * v[i];
                }
            }
        });
    out
}

/// Whether one `[2, h, w]` sample (any units) is flat: the range (max - min) of both u and v is below `tol`.
/// Flat samples decayed to the homogeneous state (u = 1, v = 0) and carry no pattern; 1e-3 is a good `tol`
/// in physical units.
pub fn is_flat(sample: &[f32], tol: f32) -> bool {
    let half = sample.len() / 2;
    let range = |a: &[f32]| {
        let (lo, hi) = a
            .iter()
            .fold((f32::INFINITY, f32::NEG_INFINITY), |(lo, hi), &x| {
                (lo.min(x), hi.max(x))
            });
        hi - lo
    };
    range(&sample[..half]) < tol && range(&sample[half..]) < tol
}

/// [`is_flat`] for every sample of an `[n, 2, h, w]` batch.
pub fn flat_mask(fields: &[f32], h: usize, w: usize, tol: f32) -> Vec<bool> {
    fields.chunks(2 * h * w).map(|s| is_flat(s, tol)).collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn presets_are_complete() {
        assert_eq!(preset_names().len(), 15);
        let s = preset("spirals").unwrap();
        assert_eq!((s.du, s.dv, s.f, s.k), (0.16, 0.08, 0.007, 0.028));
        assert_eq!(preset("chaos").unwrap().du, 0.10);
        assert!(preset("nope").is_none());
    }

    /// A 3x3 grid, u = 1 except u = 0.5 at the centre, v = 0.25 at the centre only. Hand-computed:
    /// centre: lap_u = 4*1 - 4*0.5 = 2, lap_v = -1; uvv = 0.5*0.0625 = 0.03125;
    ///   u' = 0.5 + 0.16*2 - 0.03125 + 0.018*0.5 = 0.79775; v' = 0.25 - 0.08 + 0.03125 - 0.067*0.25 = 0.18450.
    /// neighbour (0,1): lap_u = (0.5 + 1) + 2 - 4 = -0.5 (north wraps to row 2 = 1, south is the centre);
    ///   u' = 1 - 0.08 = 0.92; lap_v = 0.25, v' = 0.02.
    /// corner (0,0): all neighbours 1 -> unchanged u = 1, v = 0.
    #[test]
    fn hand_computed_single_step() {
        let p = preset("waves").unwrap();
        let mut s = vec![1.0f32; 9];
        s.extend(vec![0.0f32; 9]);
        s[4] = 0.5;
        s[9 + 4] = 0.25;
        simulate(&p, &mut s, 3, 3, 1);
        let close = |a: f32, b: f32| (a - b).abs() < 1e-6;
        assert!(close(s[4], 0.79775), "{}", s[4]);
        assert!(close(s[9 + 4], 0.1845), "{}", s[13]);
        assert!(close(s[1], 0.92), "{}", s[1]);
        assert!(close(s[9 + 1], 0.02), "{}", s[10]);
        assert_eq!((s[0], s[9]), (1.0, 0.0));
        // rhs agrees with the step where nothing clamps.
        let mut s0 = vec![1.0f32; 9];
        s0.extend(vec![0.0f32; 9]);
        s0[4] = 0.5;
        s0[13] = 0.25;
        let r = rhs(&p, &s0, 3, 3);
        assert!(close(s0[4] + r[4], 0.79775) && close(s0[13] + r[13], 0.1845));
    }

    #[test]
    fn bitwise_deterministic_across_thread_counts() {
        let p = preset("waves").unwrap();
        let run = |threads| {
            rayon::ThreadPoolBuilder::new()
                .num_threads(threads)
                .build()
                .unwrap()
                .install(|| generate(&p, 32, 300, 5, 11))
        };
        let a = run(1);
        let b = run(2);
        assert!(a.iter().zip(&b).all(|(x, y)| x.to_bits() == y.to_bits()));
        assert!(a.iter().all(|x| (0.0..=1.0).contains(x)));
    }

    /// The fused stencil agrees with `x + rhs(x)` clamped on a generated (non-trivial) state.
    #[test]
    fn step_matches_rhs() {
        let p = preset("spirals").unwrap();
        let x = generate(&p, 24, 500, 2, 5);
        let r = rhs(&p, &x, 24, 24);
        let mut y = x.clone();
        simulate(&p, &mut y, 24, 24, 1);
        let worst = (0..x.len())
            .map(|i| ((x[i] + r[i]).clamp(0.0, 1.0) - y[i]).abs())
            .fold(0.0f32, f32::max);
        assert!(worst < 1e-6, "{worst}");
        assert!(r.iter().any(|v| v.abs() > 1e-4));
    }

    #[test]
    fn flat_detector() {
        let mut flat = vec![1.0f32; 16];
        flat.extend(vec![0.0f32; 16]);
        assert!(is_flat(&flat, 1e-3));
        flat[20] = 0.1;
        assert!(!is_flat(&flat, 1e-3));
    }

    #[test]
    fn denormal_guard_restores_state() {
        let tiny = f32::MIN_POSITIVE / 4.0; // a denormal
        let inside =
            with_flush_denormals(|| std::hint::black_box(tiny) * std::hint::black_box(1.0));
        let outside = std::hint::black_box(tiny) * std::hint::black_box(1.0);
        assert_eq!(inside, 0.0);
        assert_eq!(outside, tiny);
    }

    /// Throughput report: `cargo test --release --lib gray_scott::tests::speed -- --ignored --nocapture`.
    #[test]
    #[ignore]
    fn speed() {
        let p = preset("spirals").unwrap();
        let t = std::time::Instant::now();
        let out = generate(&p, 128, 10000, 8, 1);
        let dt = t.elapsed().as_secs_f64();
        let updates = 8.0 * 10000.0 * 128.0 * 128.0;
        eprintln!(
            "gray-scott: {:.0} M cell-updates/s ({} flat)",
            updates / dt / 1e6,
            {
                flat_mask(&out, 128, 128, 1e-3)
                    .iter()
                    .filter(|&&f| f)
                    .count()
            }
        );
    }
}
