//! UNet benchmarks (`cargo bench --bench unet`), on the CPU with 2 threads: one DDPM training step of the
//! paper's UNet (channels 16/32/64, 2 channels) at batch 16 on 32x32 fields, and one batch-1 forward at
//! 128x128. Reported as medians (with min and max), never asserted; references in
//! /work/shared/spec/engine.md: PyTorch 0.17 s, raw dfdx 1.35 s for the training step (0.48 M-parameter UNet).

use std::time::Instant;

use dfdx::prelude::Cpu;
use eqflow::nn::unet::{ddpm_batch, Trainer, Unet, UnetArch};
use eqflow::science::ddpm_schedule::DDPM_STEPS;
use eqflow::science::rng::stream;
use rand::Rng;

fn summary(mut v: Vec<f64>) -> String {
    v.sort_by(f64::total_cmp);
    format!(
        "median {:.3} s (min {:.3}, max {:.3}, n {})",
        v[v.len() / 2],
        v[0],
        v[v.len() - 1],
        v.len()
    )
}

fn main() {
    let threads: usize = std::env::var("EQFLOW_BENCH_THREADS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(2);
    rayon::ThreadPoolBuilder::new()
        .num_threads(threads)
        .build_global()
        .expect("rayon pool");
    let reps: usize = std::env::var("EQFLOW_BENCH_REPS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(7);
    let dev = Cpu::default();
    let model = Unet::<f32, Cpu>::init(UnetArch::paper(2), &dev, 0).expect("paper arch");
    println!(
        "UNet: {} parameters, {threads} threads",
        model.param_count()
    );

    // 1. One training step, batch 16, 32x32 (forward, backward, clipping, AdamW).
    let (h, w, b) = (32, 32, 16);
    let mut rng = stream(0, "bench/unet");
    let data: Vec<f32> = (0..b * 2 * h * w)
        .map(|_| rng.gen_range(-1.0..1.0))
        .collect();
    let ids: Vec<usize> = (0..b).collect();
    let mut trainer = Trainer::new(model.clone(), 0.01, Some(1.0));
    let mut times = Vec::new();
    for i in 0..=reps {
        let batch = ddpm_batch(&data, &ids, 2, h * w, 0..DDPM_STEPS, &mut rng);
        let t = Instant::now();
        trainer.step(&batch, h, w, 1e-3, i).expect("step");
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    println!("train step, batch 16, 32x32: {}", summary(times));

    // 2. Batch-1 forward at 128x128 (what a rollout pays per score evaluation).
    let (h, w) = (128, 128);
    let x: Vec<f32> = (0..2 * h * w).map(|_| rng.gen_range(-1.0..1.0)).collect();
    let mut out = vec![0.0; x.len()];
    let mut times = Vec::new();
    for i in 0..=reps.min(5) {
        let t = Instant::now();
        model
            .predict_eps(&x, 1, h, w, 1, &mut out)
            .expect("forward");
        if i > 0 {
            times.push(t.elapsed().as_secs_f64());
        }
    }
    println!("forward, batch 1, 128x128: {}", summary(times));
}
