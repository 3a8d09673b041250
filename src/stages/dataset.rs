//! `dataset`: snapshots of a stationary distribution as points — the paper's 2-D sets, the Lorenz attractor,
//! or a user's own CSV / .npy file.

use std::collections::BTreeMap;

use anyhow::Context;
use rand::Rng as _;
use rand_distr::{Distribution, StandardNormal};

use super::{StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::{write_json, write_npy, write_tensors, Tensor};

/// The `dataset` kind.
pub struct Dataset;

const NAMES: &[&str] = &["two_peaks", "ring", "two_moons", "lorenz", "points"];

impl StageKind for Dataset {
    fn name(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "Point snapshots of a stationary distribution: two_peaks, ring, two_moons, lorenz, or `points` from a file."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::choice("name", NAMES, "two_peaks", "which dataset"),
            ParamSpec::int("n", 0, "number of points (0: the dataset's own default)").min(0.0),
            ParamSpec::seed(),
            ParamSpec::float("std", 0.5, "two_peaks: standard deviation of each Gaussian")
                .positive(),
            ParamSpec::float("r_inner", 1.0, "ring: inner radius").positive(),
            ParamSpec::float("r_outer", 2.0, "ring: outer radius").positive(),
            ParamSpec::float("noise", 0.1, "two_moons: Gaussian noise").min(0.0),
            ParamSpec::choice(
                "standardize",
                &["auto", "yes", "no"],
                "auto",
                "standardise per axis (auto: two_moons, lorenz, points)",
            ),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "data.safetensors",
                "tensor `x` [N, d] (f64), metadata: dataset, normalisation",
            ),
            ("data.npy", "the same points for numpy"),
            (
                "normalization.json",
                "per-axis mean and std that were removed (zeros/ones if none)",
            ),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if p.float("r_inner") >= p.float("r_outer") {
            out.push((
                "r_outer",
                format!("must exceed r_inner ({})", p.float("r_inner")),
            ));
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let name = p.str("name");
        let mut rng = ctx.rng("points");
        let n_or = |default: usize| {
            if p.usize("n") == 0 {
                default
            } else {
                p.usize("n")
            }
        };
        let (d, mut data): (usize, Vec<f64>) = match name {
            "two_peaks" => {
                let n = n_or(10_000);
                let s = p.float("std");
                let mut v = Vec::with_capacity(2 * n);
                for i in 0..n {
                    let c = if i < n / 2 { -1.0 } else { 1.0 };
                    for _ in 0..2 {
                        let z: f64 = StandardNormal.sample(&mut rng);
                        v.push(c + s * z);
                    }
                }
                (2, v)
            }
            "ring" => {
                let n = n_or(10_000);
                let (a, b) = (p.float("r_inner"), p.float("r_outer"));
                let mut v = Vec::with_capacity(2 * n);
                for _ in 0..n {
                    let r = (a * a + (b * b - a * a) * rng.gen::<f64>()).sqrt();
                    let th = std::f64::consts::TAU * rng.gen::<f64>();
                    v.extend([r * th.cos(), r * th.sin()]);
                }
                (2, v)
            }
            other => anyhow::bail!("dataset `{other}` is not available yet"),
        };
        let standardize = match p.str("standardize") {
            "yes" => true,
            "no" => false,
            _ => matches!(name, "two_moons" | "lorenz" | "points"),
        };
        let n = data.len() / d;
        let (mut mean, mut std) = (vec![0.0; d], vec![1.0; d]);
        if standardize {
            for k in 0..d {
                let m = (0..n).map(|i| data[i * d + k]).sum::<f64>() / n as f64;
                let s =
                    ((0..n).map(|i| (data[i * d + k] - m).powi(2)).sum::<f64>() / n as f64).sqrt();
                mean[k] = m;
                std[k] = if s > 0.0 { s } else { 1.0 };
                for i in 0..n {
                    data[i * d + k] = (data[i * d + k] - m) / std[k];
                }
            }
        }
        ctx.log(format!(
            "{name}: {n} points in {d}-D, standardised: {standardize}"
        ));
        let norm = serde_json::json!({ "mean": mean, "std": std, "standardized": standardize });
        let mut meta = BTreeMap::new();
        meta.insert("dataset".into(), name.to_string());
        meta.insert("normalization".into(), norm.to_string());
        let x = Tensor::F64 {
            shape: vec![n, d],
            data,
        };
        let mut ts = BTreeMap::new();
        ts.insert("x".to_string(), x.clone());
        write_tensors(&ctx.output("data.safetensors"), &ts, &meta)
            .context("writing the dataset")?;
        write_npy(&ctx.output("data.npy"), &x)?;
        write_json(&ctx.output("normalization.json"), &norm)?;
        ctx.metric("n", n);
        ctx.metric("d", d);
        Ok(())
    }
}
