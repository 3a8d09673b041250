//! End-to-end measurements of the Turing pipeline (ignored tests, run by hand with `--ignored --nocapture`):
//! speed of the score network, the SDE and training, and the alignment protocol on waves and spirals.

use std::time::Instant;

use crate::nn::conv::{train_local_score, LocalScore, LocalScoreArch, LocalScoreConfig};
use crate::science::gray_scott::{flat_mask, generate, preset, to_model_space};
use crate::science::sde::{heun_sde, FieldShape, SdeConfig};
use crate::science::skew_kernel::ConvKernel;
use crate::science::turing_eval::{alignment, direct_cosine, mean_std, AlignmentConfig, ScoreFn};

fn env(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

#[test]
#[ignore]
fn speed() {
    let arch = LocalScoreArch {
        channels: 2,
        width: env("WIDTH", 32),
        dilations: vec![1, 2, 4, 4, 2, 1],
        sigma: 0.235,
        signal_scale: 0.972,
        sigma_max: None,
        v_prediction: false,
        film_knots: 0,
    };
    let m = LocalScore::init(arch, 0);
    for size in [64usize, 128] {
        let n = 16;
        let x = vec![0.1f32; n * 2 * size * size];
        let mut out = vec![0.0f32; x.len()];
        m.score(&x, n, size, size, &mut out);
        let t = Instant::now();
        m.score(&x, n, size, size, &mut out);
        let f = t.elapsed().as_secs_f64();
        eprintln!(
            "width {} {size}x{size}: forward {:.2} ms per pattern (batch 16)",
            m.arch.width,
            1e3 * f / n as f64
        );
        let mut x = x.clone();
        let k = ConvKernel::rotation(1.0);
        let ks = vec![&k; n];
        let ids: Vec<u64> = (0..n as u64).collect();
        let t = Instant::now();
        let steps = 5;
        heun_sde(
            &mut x,
            FieldShape {
                n,
                c: 2,
                h: size,
                w: size,
            },
            &ks,
            &ids,
            &SdeConfig {
                steps,
                ..Default::default()
            },
            &mut |x, o| m.score(x, n, size, size, o),
            &mut |_, _, _| {},
        );
        eprintln!(
            "  SDE batch 16: {:.2} steps/s",
            steps as f64 / t.elapsed().as_secs_f64()
        );
    }
    let p = preset("waves").unwrap();
    let mut data = generate(&p, 64, 3000, 16, 1);
    to_model_space(&mut data);
    for crop in [48usize, 64] {
        let cfg = LocalScoreConfig {
            width: env("WIDTH", 32),
            iterations: 10,
            crop: Some(crop),
            ..Default::default()
        };
        let t = Instant::now();
        train_local_score(&data, 64, 64, 2, &cfg, &mut |_, _| {}).unwrap();
        eprintln!(
            "train width {} crop {crop} batch 16: {:.0} ms/iteration",
            cfg.width,
            1e3 * t.elapsed().as_secs_f64() / 10.0
        );
    }
}

/// The whole protocol for one preset; sizes from env: PRESET, SIZE, SAMPLES, ITERS, PATTERNS, WIDTH, CROP.
#[test]
#[ignore]
fn alignment_end_to_end() {
    let name = std::env::var("PRESET").unwrap_or_else(|_| "waves".into());
    let size = env("SIZE", 64);
    let samples = env("SAMPLES", 512);
    let patterns = env("PATTERNS", 16);
    let p = preset(&name).unwrap();
    let t0 = Instant::now();
    let mut data = generate(&p, size, env("GS_STEPS", 10_000), samples + patterns, 7);
    let flat = flat_mask(&data, size, size, 1e-3);
    eprintln!(
        "{name} {size}^2: generated {} samples in {:.1}s, {} flat",
        samples + patterns,
        t0.elapsed().as_secs_f64(),
        flat.iter().filter(|&&f| f).count()
    );
    to_model_space(&mut data);
    let len = 2 * size * size;
    let alive: Vec<usize> = (0..samples + patterns).filter(|&i| !flat[i]).collect();
    let (train_idx, eval_idx) = alive.split_at(alive.len().saturating_sub(patterns));
    let train: Vec<f32> = train_idx
        .iter()
        .flat_map(|&i| data[i * len..(i + 1) * len].to_vec())
        .collect();
    let eval: Vec<f32> = eval_idx
        .iter()
        .flat_map(|&i| data[i * len..(i + 1) * len].to_vec())
        .collect();
    let cfg = LocalScoreConfig {
        width: env("WIDTH", 32),
        iterations: env("ITERS", 500),
        crop: Some(env("CROP", 64).min(size)),
        ..Default::default()
    };
    let t1 = Instant::now();
    let (model, losses) = train_local_score(&train, size, size, 2, &cfg, &mut |_, _| {}).unwrap();
    eprintln!(
        "trained {} its in {:.1}s; loss {:.4} -> {:.4}",
        cfg.iterations,
        t1.elapsed().as_secs_f64(),
        losses[..10].iter().sum::<f64>() / 10.0,
        losses[losses.len() - 10..].iter().sum::<f64>() / 10.0
    );
    let np = eval.len() / len;
    let score = |x: &[f32], out: &mut [f32]| model.score(x, x.len() / len, size, size, out);
    let sf = ScoreFn {
        score: &score,
        sigma: model.sigma(),
        signal_scale: model.signal_scale(),
    };
    let rot = vec![ConvKernel::rotation(1.0), ConvKernel::rotation(-1.0)];
    let sp = ConvKernel::spatial(2, 5, 1);
    let spatial = vec![sp.clone(), sp.scaled(-1.0)];
    let mut flows = vec![rot, spatial, vec![ConvKernel::zero(2)]];
    let draws = env("DRAWS", 2);
    for d in 0..draws {
        let b = ConvKernel::random_nonskew(2, 100 + d as u64);
        flows.push(vec![b.clone(), b.scaled(-1.0)]);
    }
    let t2 = Instant::now();
    let acfg = AlignmentConfig {
        seeds: 1,
        denoised: env("DENOISED", 1) == 1,
        ..Default::default()
    };
    let res = alignment(&p, &eval, size, size, &flows, &sf, &acfg);
    let names = [
        "rotation (max ±γ)",
        "spatial 5x5 skew (max ±)",
        "Langevin only (K=0)",
    ];
    eprintln!(
        "alignment of {np} patterns x {} flows in {:.1}s",
        flows.len(),
        t2.elapsed().as_secs_f64()
    );
    for (i, r) in res.iter().enumerate() {
        let (m, s) = r.summary();
        let (m0, s0) = mean_std(&r.per_variant[0]);
        let label = names
            .get(i)
            .map(|s| s.to_string())
            .unwrap_or(format!("random non-skew draw {} (max ±k)", i - 3));
        eprintln!("  {label}: {m:.3} ± {s:.3}   (first variant alone {m0:.3} ± {s0:.3})");
    }
    let mut base_best = Vec::new();
    for r in &res[3..] {
        base_best.extend_from_slice(&r.best);
    }
    let (bm, bs) = mean_std(&base_best);
    eprintln!("  random non-skew, pooled over {draws} draws: {bm:.3} ± {bs:.3}");
    for (label, k) in [
        ("rotation γ=+1", ConvKernel::rotation(1.0)),
        ("spatial 5x5", sp),
        ("non-skew draw 0", ConvKernel::random_nonskew(2, 100)),
    ] {
        let c = direct_cosine(&p, &eval, size, size, &k, &score);
        let (m, s) = mean_std(&c);
        eprintln!(
            "  direct cos(K s, GS rhs) {label}: {m:+.3} ± {s:.3}, positive on {}/{}",
            c.iter().filter(|&&v| v > 0.0).count(),
            c.len()
        );
    }
    eprintln!("total {:.1}s", t0.elapsed().as_secs_f64());
}
