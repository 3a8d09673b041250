//! `gray_scott`: snapshots of Turing patterns (spec §7) — the paper's initial condition (u = 1, v = 0 plus
//! 5 discs) run for `steps` explicit Euler steps of the periodic Gray-Scott system, for any of the 15
//! presets with any rate overridden.
//!
//! Samples are generated in chunks (rayon inside a chunk, one seeded sub-stream per sample, so the bytes do
//! not depend on the thread count) and streamed to `data.safetensors`, so even the paper's 8,192 x 128²
//! dataset is never held in memory. Samples that died to the flat state carry no pattern: their share is a
//! metric, they are dropped from training by default (`drop_flat`), and never used as held-out patterns.

use std::collections::BTreeMap;

use anyhow::bail;

use super::image_common::{paper_image_px, preset_params};
use super::{spread, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::write_f32_streamed;
use crate::render::{contact_sheet, RgbImage};
use crate::science::gray_scott::{initial_condition, is_flat, simulate, to_model_space};
use crate::science::rng::substream;

/// The `gray_scott` kind.
pub struct GrayScott;

/// Preset names, in the order of spec §7 (checked against `science::gray_scott::preset_names` in a test).
pub const PRESETS: &[&str] = &[
    "life",
    "waves",
    "spirals",
    "maze",
    "spots",
    "dots",
    "stripes",
    "holes",
    "chaos",
    "bubbles",
    "worms",
    "solitons",
    "pulsating_solitons",
    "u_skate",
    "fingerprints",
];

/// Samples simulated together (bounds memory: 64 x 2 x 128² f32 = 8 MiB).
const CHUNK: usize = 64;

impl StageKind for GrayScott {
    fn name(&self) -> &'static str {
        "gray_scott"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "Turing-pattern snapshots (spec §7): the paper's initial condition run `steps` Euler steps of the periodic \
         Gray-Scott system (5-point Laplacian, dt 1, clamped to [0, 1]); final (u, v) scaled to [-1, 1]. Any of \
         the 15 presets, any rate overridden. Flat (dead) samples are counted and dropped by default."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::choice(
                "preset",
                PRESETS,
                "spirals",
                "the Gray-Scott preset (rates of spec §7)",
            ),
            ParamSpec::float("du", 0.0, "diffusion rate of u (0: the preset's)").min(0.0),
            ParamSpec::float("dv", 0.0, "diffusion rate of v (0: the preset's)").min(0.0),
            ParamSpec::float("f", 0.0, "feed rate F (0: the preset's)").min(0.0),
            ParamSpec::float("k", 0.0, "kill rate k (0: the preset's)").min(0.0),
            ParamSpec::int(
                "size",
                128,
                "side of the square periodic domain in pixels (paper: 128; spirals die below 128)",
            )
            .min(8.0),
            ParamSpec::int(
                "steps",
                10_000,
                "Euler steps from the initial condition (paper: 10,000)",
            )
            .min(0.0),
            ParamSpec::int("samples", 256, "training samples generated (paper: 8,192)").positive(),
            ParamSpec::int(
                "test_samples",
                16,
                "held-out samples generated for evaluation (flat ones are discarded)",
            )
            .min(0.0),
            ParamSpec::bool(
                "drop_flat",
                true,
                "drop flat (dead) samples from the training set",
            ),
            ParamSpec::float(
                "flat_tol",
                1e-3,
                "a sample is flat when the range of both u and v is below this (physical units)",
            )
            .positive(),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "data.safetensors",
                "`x` [N, 2, H, W] training fields and `test` [M, 2, H, W] held-out living fields (f32, u then v, \
                 scaled to [-1, 1]); metadata: preset, rates, steps",
            ),
            ("samples.png", "contact sheet of the first training samples in the paper's colours"),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if !p.bool("drop_flat") && p.usize("samples") == 0 {
            out.push(("samples", "must be positive".to_string()));
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let name = p.str("preset");
        let mut rates = preset_params(name)?;
        for (key, slot) in [
            ("du", &mut rates.du),
            ("dv", &mut rates.dv),
            ("f", &mut rates.f),
            ("k", &mut rates.k),
        ] {
            if p.float(key) > 0.0 {
                *slot = p.float(key) as f32;
            }
        }
        let size = p.usize("size");
        let steps = p.usize("steps");
        let (n_train, n_test) = (p.usize("samples"), p.usize("test_samples"));
        let tol = p.float("flat_tol") as f32;
        let seed = ctx.seed();
        let len = 2 * size * size;
        ctx.log(format!(
            "{name}: Du {} Dv {} F {} k {}; {n_train} + {n_test} samples of {size}x{size}, {steps} steps",
            rates.du, rates.dv, rates.f, rates.k
        ));

        // Pass 1: which samples are flat (test samples are indices 0..n_test, training n_test..). Generating
        // twice would double the cost, so the living samples are spooled to a raw file and streamed into the
        // safetensors file afterwards; only one chunk is ever in memory.
        let total = n_train + n_test;
        let spool_path = ctx.output("fields.spool");
        let mut spool = std::io::BufWriter::new(std::fs::File::create(&spool_path)?);
        let mut flat = Vec::with_capacity(total);
        let bar = ctx.progress(total as u64, "samples");
        let mut shown: Vec<Vec<f32>> = Vec::new();
        for start in (0..total).step_by(CHUNK) {
            let n = CHUNK.min(total - start);
            let mut fields = vec![0.0f32; n * len];
            for (j, s) in fields.chunks_mut(len).enumerate() {
                let mut rng = substream(seed, "gray-scott/init", (start + j) as u64);
                initial_condition(s, size, size, &mut rng);
            }
            simulate(&rates, &mut fields, size, size, steps);
            for (j, s) in fields.chunks_mut(len).enumerate() {
                let dead = is_flat(s, tol);
                flat.push(dead);
                to_model_space(s);
                let keep = !dead || (start + j >= n_test && !p.bool("drop_flat"));
                if keep {
                    use std::io::Write;
                    for v in s.iter() {
                        spool.write_all(&v.to_le_bytes())?;
                    }
                    if start + j >= n_test && shown.len() < 24 {
                        shown.push(s.to_vec());
                    }
                }
            }
            bar.inc(n as u64);
        }
        bar.finish();
        drop(spool);
        let kept_test = (0..n_test).filter(|&i| !flat[i]).count();
        let kept_train = (n_test..total)
            .filter(|&i| !flat[i] || !p.bool("drop_flat"))
            .count();
        let dead: Vec<f64> = flat.iter().map(|&f| if f { 1.0 } else { 0.0 }).collect();
        ctx.metric("flat_share", spread(&dead));
        ctx.metric("flat_samples", flat.iter().filter(|&&f| f).count());
        ctx.metric("train_samples", kept_train);
        ctx.metric("test_samples", kept_test);
        ctx.log(format!(
            "{} of {total} samples died to the flat state ({:.1} %); kept {kept_train} for training, {kept_test} held out",
            flat.iter().filter(|&&f| f).count(),
            100.0 * dead.iter().sum::<f64>() / total as f64
        ));
        if kept_train == 0 {
            bail!(
                "every training sample of `{name}` at {size}x{size} died to the flat state: use a larger `size` \
                 (spirals need 128) or set `drop_flat = false`"
            );
        }

        // Pass 2: the spool holds test fields first, then training fields; write them as `x` then `test`.
        let meta = BTreeMap::from([
            ("preset".to_string(), name.to_string()),
            (
                "rates".to_string(),
                serde_json::to_string(&[rates.du, rates.dv, rates.f, rates.k])?,
            ),
            ("steps".to_string(), steps.to_string()),
            (
                "range".to_string(),
                "[-1, 1] = 2 * physical - 1".to_string(),
            ),
        ]);
        let tensors = vec![
            ("x".to_string(), vec![kept_train, 2, size, size]),
            ("test".to_string(), vec![kept_test, 2, size, size]),
        ];
        let mut spool = std::fs::File::open(&spool_path)?;
        let mut buf = vec![0u8; len * 4];
        let mut vals = vec![0.0f32; len];
        write_f32_streamed(
            &ctx.output("data.safetensors"),
            &tensors,
            &meta,
            &mut |tensor, write| {
                let (lo, hi) = if tensor == "x" {
                    (kept_test, kept_test + kept_train)
                } else {
                    (0, kept_test)
                };
                use std::io::{Read, Seek, SeekFrom};
                spool.seek(SeekFrom::Start((lo * len * 4) as u64))?;
                for _ in lo..hi {
                    spool.read_exact(&mut buf)?;
                    for (v, b) in vals.iter_mut().zip(buf.chunks_exact(4)) {
                        *v = f32::from_le_bytes([b[0], b[1], b[2], b[3]]);
                    }
                    write(&vals)?;
                }
                Ok(())
            },
        )?;
        drop(spool);
        std::fs::remove_file(&spool_path)?;

        let images: Vec<RgbImage> = shown
            .iter()
            .map(|f| paper_image_px(f, size, size, 128))
            .collect::<anyhow::Result<_>>()?;
        if !images.is_empty() {
            contact_sheet(&images, 6, 4, plotters::style::RGBColor(255, 255, 255))?
                .save_png(&ctx.output("samples.png"))?;
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    #[test]
    fn preset_list_matches_the_science_module() {
        assert_eq!(
            super::PRESETS.to_vec(),
            crate::science::gray_scott::preset_names()
        );
    }
}
