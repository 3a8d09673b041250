//! `dataset`: snapshots of a stationary distribution as points — the paper's 2-D sets, the Lorenz attractor,
//! or a user's own CSV / .npy file.

use std::collections::BTreeMap;

use anyhow::Context;

use super::{StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::{read_points, write_json, write_npy, write_tensors, Tensor};
use crate::render::{Figure, PointSet as Scatter, ScatterPlot};
use crate::science::lorenz::LorenzParams;
use crate::science::points::{self, PointSet, Standardization};

/// The `dataset` kind.
pub struct Dataset;

const NAMES: &[&str] = &["two_peaks", "ring", "two_moons", "lorenz", "points"];

impl StageKind for Dataset {
    fn name(&self) -> &'static str {
        "dataset"
    }
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "Point snapshots of a stationary distribution: two_peaks, ring, two_moons, lorenz, or `points` read from a \
         user's CSV (header optional) or .npy [N, d] file."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::choice("name", NAMES, "two_peaks", "which dataset"),
            ParamSpec::int("n", 0, "number of points (0: the dataset's default: 10,000; two_moons 5,000; lorenz runs x steps)").min(0.0),
            ParamSpec::seed(),
            ParamSpec::path("path", "points: the CSV or .npy file (relative to the pipeline file)").optional(),
            ParamSpec::float("std", 0.5, "two_peaks: standard deviation of each Gaussian").positive(),
            ParamSpec::float("center", 1.0, "two_peaks: the peaks sit at (-c,-c) and (c,c)").positive(),
            ParamSpec::float("r_inner", 1.0, "ring: inner radius").positive(),
            ParamSpec::float("r_outer", 2.0, "ring: outer radius").positive(),
            ParamSpec::float("noise", 0.1, "two_moons: Gaussian noise").min(0.0),
            ParamSpec::float("sigma", 10.0, "lorenz: sigma").positive(),
            ParamSpec::float("rho", 28.0, "lorenz: rho").positive(),
            ParamSpec::float("beta", 8.0 / 3.0, "lorenz: beta").positive(),
            ParamSpec::float("dt", 0.01, "lorenz: RK4 step").positive(),
            ParamSpec::int("runs", 10, "lorenz: independent runs from N(0, I)").positive(),
            ParamSpec::int("steps", 5000, "lorenz: steps kept per run").positive(),
            ParamSpec::int("transient", 0, "lorenz: steps dropped at the start of each run").min(0.0),
            ParamSpec::choice("standardize", &["auto", "yes", "no"], "auto", "standardise per axis (auto: two_moons, lorenz, points)"),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "data.safetensors",
                "tensor `x` [N, d] (f64); metadata: dataset name, normalisation",
            ),
            ("data.npy", "the same points for numpy"),
            (
                "normalization.json",
                "per-axis `mean` and `std` removed (zeros / ones if not standardised)",
            ),
            (
                "preview.png",
                "scatter of the points (first two axes; Lorenz: the three projections)",
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
        if p.str("name") == "points" && p.opt_str("path").is_none() {
            out.push((
                "path",
                "dataset \"points\" needs `path = \"your_points.csv\"` (CSV or .npy)".to_string(),
            ));
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let name = p.str("name");
        let seed = ctx.seed();
        let n_or = |default: usize| {
            if p.usize("n") == 0 {
                default
            } else {
                p.usize("n")
            }
        };
        let mut pts = match name {
            "two_peaks" => points::two_peaks(
                &points::TwoPeaksParams {
                    n: n_or(10_000),
                    center: p.float("center"),
                    std: p.float("std"),
                },
                seed,
            ),
            "ring" => points::ring(
                &points::RingParams {
                    n: n_or(10_000),
                    r_min: p.float("r_inner"),
                    r_max: p.float("r_outer"),
                },
                seed,
            ),
            "two_moons" => points::two_moons(
                &points::TwoMoonsParams {
                    n: n_or(5_000),
                    noise: p.float("noise"),
                    standardize: false,
                },
                seed,
            ),
            "lorenz" => {
                let params = points::LorenzDataParams {
                    system: LorenzParams {
                        sigma: p.float("sigma"),
                        rho: p.float("rho"),
                        beta: p.float("beta"),
                    },
                    runs: p.usize("runs"),
                    steps: p.usize("steps"),
                    transient: p.usize("transient"),
                    dt: p.float("dt"),
                };
                let all = points::lorenz(&params, seed);
                if p.usize("n") > 0 && p.usize("n") < all.n {
                    all.head(p.usize("n"))
                } else {
                    all
                }
            }
            _ => {
                let path = ctx.path_param("path");
                let f = read_points(&path)?;
                ctx.log(format!(
                    "read {} points in {}-D from {}",
                    f.n,
                    f.d,
                    path.display()
                ));
                PointSet::new(f.n, f.d, f.data)
            }
        };
        let standardize = match p.str("standardize") {
            "yes" => true,
            "no" => false,
            _ => matches!(name, "two_moons" | "lorenz" | "points"),
        };
        let norm = if standardize {
            points::standardize(&mut pts)
        } else {
            Standardization {
                mean: vec![0.0; pts.d],
                std: vec![1.0; pts.d],
            }
        };
        let moments = pts.moments();
        ctx.log(format!(
            "{name}: {} points in {}-D, standardised: {standardize} ({} compute threads)",
            pts.n,
            pts.d,
            rayon::current_num_threads()
        ));
        let norm_json =
            serde_json::json!({ "mean": norm.mean, "std": norm.std, "standardized": standardize });
        let mut meta = BTreeMap::new();
        meta.insert("dataset".into(), name.to_string());
        meta.insert("normalization".into(), norm_json.to_string());
        let x = Tensor::F64 {
            shape: vec![pts.n, pts.d],
            data: pts.data.clone(),
        };
        let mut ts = BTreeMap::new();
        ts.insert("x".to_string(), x.clone());
        write_tensors(&ctx.output("data.safetensors"), &ts, &meta)
            .context("writing the dataset")?;
        write_npy(&ctx.output("data.npy"), &x)?;
        write_json(&ctx.output("normalization.json"), &norm_json)?;
        preview(&pts, name, &ctx.output("preview.png"))?;
        ctx.metric("n", pts.n);
        ctx.metric("d", pts.d);
        ctx.metric("mean", moments.mean);
        ctx.metric("std", moments.std);
        Ok(())
    }
}

/// A scatter of (up to 4,000 of) the points: 2-D directly, 3-D as three projections.
fn preview(pts: &PointSet, name: &str, path: &std::path::Path) -> anyhow::Result<()> {
    let stride = pts.n.div_ceil(4000).max(1);
    let rows: Vec<&[f64]> = (0..pts.n).step_by(stride).map(|i| pts.row(i)).collect();
    let pairs: Vec<(usize, usize)> = match pts.d {
        1 => vec![(0, 0)],
        2 => vec![(0, 1)],
        _ => vec![(0, 1), (0, 2), (1, 2)],
    };
    let panels = pairs
        .iter()
        .map(|&(a, b)| {
            let xy: Vec<[f64; 2]> = rows.iter().map(|r| [r[a], r[b]]).collect();
            ScatterPlot::new(
                format!("{name}: x{} vs x{}", a + 1, b + 1),
                format!("x{}", a + 1),
                format!("x{}", b + 1),
            )
            .points(Scatter::new(format!("{} points", pts.n), xy))
            .panel()
        })
        .collect();
    Figure::row(panels)
        .panel_size(600, 600)
        .title(format!("dataset {name}"))
        .save_png(path)?;
    Ok(())
}
