//! `evaluate_alignment`: how well the Turing flows — training-free (v = K ⋆ s) and trained (a network v(x),
//! `train_dynamics` on images) — reproduce the true Gray-Scott dynamics, against the paper's baselines, with
//! every number as mean ± std over held-out patterns and noise seeds (and trained seeds / random draws).
//!
//! Three measures (spec §7): the paper's protocol (|cos| between the flow's displacement — the EMA of
//! denoised frames after 200 SDE steps minus x0 — and 20 Gray-Scott steps' displacement, max over the
//! flow's sign: ±K, i.e. γ for the rotation, and ±v for a trained network, whose loss cannot tell v from
//! -v); the direct cosine between v(x) and the true (du/dt, dv/dt) at the patterns — signed (+K, +v), |cos|
//! per pattern, and with one sign per model (chosen by its mean over the patterns, then kept); and
//! "the pattern is preserved": radially averaged power-spectrum and value-histogram distances between the
//! rolled-out frames and the data. The rollout is dx = (v + η s) dt + sqrt(2η) dW (stochastic Heun), with
//! v = K ⋆ s or the trained network (evaluation mode). Baselines: random non-skew 1x1 kernels (max over ±k),
//! the score network with randomly redrawn weights (driven by the same K), and — when trained flows are
//! given — untrained networks of the same architecture (random initialisations whose batch-norm running
//! statistics are calibrated on noised data, so only training differs). All runs are paired: the same
//! patterns and, per (pattern, seed), the same Brownian noise for every flow; paired differences (trained
//! minus untrained, trained minus training-free) are metrics.

use anyhow::Context;
use rand_distr::{Distribution, StandardNormal};
use rayon::prelude::*;

use super::image_common::{load_image_score_for, load_kernel, ImageData};
use super::image_dynamics::{flow_cosines, true_rates};
use super::{spread, InputArtifact, StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::write_json;
use crate::nn::conv::{ImageFlow, ImageFlowArch};
use crate::nn::ImageScore;
use crate::render::{Cell, Table};
use crate::science::gray_scott::GrayScottParams;
use crate::science::sde::{heun_sde_drift, FieldShape, FrameEma, FrameKind, SdeConfig};
use crate::science::skew_kernel::ConvKernel;
use crate::science::turing_eval::{
    cosine, direct_cosine, gray_scott_displacement, histogram_distance, spectrum_distance,
};

/// The `evaluate_alignment` kind.
pub struct EvaluateAlignment;

/// The paper's table (spec §7): (preset, flow, random non-skew kernel, UNet with random weights).
const PAPER: &[(&str, f64, f64, f64)] = &[
    ("life", 0.271, 0.021, 0.052),
    ("waves", 0.589, 0.182, 0.105),
    ("spirals", 0.250, 0.083, 0.180),
    ("maze", 0.270, 0.072, 0.031),
];

impl StageKind for EvaluateAlignment {
    fn name(&self) -> &'static str {
        "evaluate_alignment"
    }
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "Images: alignment of the training-free flows (v = K ⋆ s) and trained flows (`train_dynamics` on \
         images) with the true Gray-Scott dynamics — the paper's protocol (|cos| of 200-step SDE vs 20-step \
         Gray-Scott displacements, max over ±K or ±v) and the direct cosine of v with (du/dt, dv/dt), signed \
         and absolute — plus pattern preservation (spectrum and histogram distances), for the flows and the \
         paired baselines (random non-skew kernels, score with random weights, untrained networks), as \
         mean ± std over patterns and seeds; writes the table."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("data", "the `gray_scott` stage (held-out patterns, rates)"),
            ParamSpec::input("score", "the `train_score` stage (images)"),
            ParamSpec::input(
                "flow",
                "the `training_free` stage (images): its kernel K, evaluated as max over ±K",
            ),
            ParamSpec::inputs(
                "other_flows",
                "further `training_free` (images) stages evaluated beside `flow` (e.g. a spatial skew kernel)",
            )
            .optional(),
            ParamSpec::inputs(
                "trained",
                "`train_dynamics` (images) stages: trained flows v(x), each max over ±v; a sweep's seeds pool",
            )
            .optional(),
            ParamSpec::int(
                "untrained_draws",
                3,
                "with `trained`: randomly initialised networks of its architecture (baseline), max over ±v",
            )
            .min(0.0),
            ParamSpec::int("patterns", 16, "held-out patterns evaluated").positive(),
            ParamSpec::int(
                "direct_patterns",
                0,
                "held-out patterns of the direct cosine (cheap: one pass per flow, no SDE; 0: `patterns`)",
            )
            .min(0.0),
            ParamSpec::int("seeds", 1, "noise seeds per pattern").positive(),
            ParamSpec::int("steps", 200, "SDE steps of the protocol (paper: 200)").positive(),
            ParamSpec::int(
                "gs_steps",
                20,
                "Gray-Scott steps of the reference displacement (paper: 20)",
            )
            .positive(),
            ParamSpec::float("eta", 0.1, "Langevin weight η").min(0.0),
            ParamSpec::float("dt", 0.01, "SDE time step").positive(),
            ParamSpec::float("ema", 0.9, "EMA decay of the frames").probability(),
            ParamSpec::bool(
                "denoised",
                true,
                "average Tweedie-denoised frames (true) or raw SDE states",
            ),
            ParamSpec::int(
                "nonskew_draws",
                2,
                "random non-skew 1x1 kernels (baseline), each max over ±k",
            )
            .min(0.0),
            ParamSpec::int(
                "random_weight_draws",
                1,
                "score networks with redrawn weights (baseline), driven by ±K",
            )
            .min(0.0),
            ParamSpec::bool(
                "langevin",
                false,
                "also evaluate K = 0 (Langevin dynamics alone)",
            ),
            ParamSpec::int(
                "max_batch",
                32,
                "trajectories integrated together (bounds memory)",
            )
            .positive(),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "alignment.md",
                "the alignment table (markdown), with the paper's numbers",
            ),
            ("alignment.csv", "the same table as CSV"),
            (
                "alignment.json",
                "per flow: per-(pattern, seed) scores of every measure, and the settings",
            ),
        ]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let data = ImageData::open(ctx.input("data")?)?;
        let model = load_image_score_for(ctx.input("score")?, ctx.device, data.h, data.w)?;
        let (h, w, len) = (data.h, data.w, data.item_len());
        let patterns = data.test_patterns(p.usize("patterns"))?;
        let np = patterns.len() / len;
        let seeds = p.usize("seeds");
        let seed = ctx.seed();

        // The score models: index 0 trained, then the redrawn ones.
        let mut models = vec![model.clone()];
        for d in 0..p.usize("random_weight_draws") {
            models.push(model.randomized(seed.wrapping_mul(1000) + 7919 + d as u64));
        }
        let both = |k: &ConvKernel| vec![Drift::Kernel(k.clone()), Drift::Kernel(k.scaled(-1.0))];
        let main = ctx.input("flow")?;
        let mut flows = vec![FlowSpec {
            name: format!(
                "training-free `{}`: {}",
                main.stage,
                kernel_description(main)
            ),
            group: "flow".into(),
            label: format!(
                "training-free `{}`: {}",
                main.stage,
                kernel_description(main)
            ),
            variants: both(&load_kernel(main)?),
            model: 0,
        }];
        let k = load_kernel(main)?;
        for other in opt_list(ctx, "other_flows") {
            let label = format!(
                "training-free `{}`: {}",
                other.stage,
                kernel_description(other)
            );
            flows.push(FlowSpec {
                name: label.clone(),
                group: format!("training-free {}", other.stage),
                label,
                variants: both(&load_kernel(other)?),
                model: 0,
            });
        }
        // Trained networks, then their untrained twins (same architecture, calibrated batch-norm).
        let mut nets: Vec<ImageFlow> = Vec::new();
        let trained = opt_list(ctx, "trained");
        let pm = |net: usize| {
            vec![
                Drift::Net { net, sign: 1.0 },
                Drift::Net { net, sign: -1.0 },
            ]
        };
        for t in &trained {
            if t.kind != "train_dynamics" {
                anyhow::bail!(
                    "`trained` lists `{}`, a `{}` stage; expected `train_dynamics` (images)",
                    t.stage,
                    t.kind
                );
            }
            let net = ImageFlow::load(&t.dir.join("flow.safetensors")).with_context(|| {
                format!(
                    "`trained` stage `{}` holds no image flow (was it trained on points?)",
                    t.stage
                )
            })?;
            nets.push(net);
            flows.push(FlowSpec {
                name: format!("trained `{}` (max over ±v)", t.stage),
                group: "trained flow".into(),
                label: format!("trained flow ({} seeds, max over ±v)", trained.len()),
                variants: pm(nets.len() - 1),
                model: 0,
            });
        }
        let n_trained = trained.len();
        if n_trained > 0 {
            let arch: ImageFlowArch = nets[0].arch.clone();
            let calib = calibration_batch(&data, model.sigma(), model.signal_scale(), seed)?;
            let n_cal = calib.len() / len;
            for d in 0..p.usize("untrained_draws") {
                let mut net =
                    ImageFlow::init(arch.clone(), seed.wrapping_mul(1000) + 503 + d as u64);
                net.calibrate_running_stats(&calib, n_cal, h, w);
                nets.push(net);
                flows.push(FlowSpec {
                    name: format!("untrained network #{d} (max over ±v)"),
                    group: "untrained network".into(),
                    label: format!(
                        "untrained network ({} draws, calibrated batch-norm, max over ±v)",
                        p.usize("untrained_draws")
                    ),
                    variants: pm(nets.len() - 1),
                    model: 0,
                });
            }
        }
        for d in 0..p.usize("nonskew_draws") {
            flows.push(FlowSpec {
                name: format!("random non-skew kernel #{d} (max over ±k)"),
                group: "random non-skew kernel".into(),
                label: "random non-skew kernel".into(),
                variants: both(&ConvKernel::random_nonskew(
                    2,
                    seed.wrapping_mul(1000) + 101 + d as u64,
                )),
                model: 0,
            });
        }
        for m in 1..models.len() {
            flows.push(FlowSpec {
                name: format!("score with random weights #{} (max over ±K)", m - 1),
                group: "score with random weights".into(),
                label: "score with random weights".into(),
                variants: both(&k),
                model: m,
            });
        }
        if p.bool("langevin") {
            flows.push(FlowSpec {
                name: "Langevin only (K = 0)".into(),
                group: "Langevin only (K = 0)".into(),
                label: "Langevin only (K = 0)".into(),
                variants: vec![Drift::Kernel(ConvKernel::zero(2))],
                model: 0,
            });
        }
        let cfg = Protocol {
            sde: SdeConfig {
                eta: p.float("eta") as f32,
                dt: p.float("dt") as f32,
                steps: p.usize("steps"),
                seed,
            },
            gs_steps: p.usize("gs_steps"),
            ema: p.float("ema") as f32,
            denoised: p.bool("denoised"),
            seeds,
            max_batch: p.usize("max_batch"),
        };
        let trajectories: usize =
            flows.iter().map(|f| f.variants.len()).sum::<usize>() * np * seeds;
        ctx.log(format!(
            "`{}` {h}x{w}: {np} patterns x {seeds} seeds x {} flows ({trajectories} trajectories of {} steps)",
            data.preset,
            flows.len(),
            cfg.sde.steps
        ));
        let bar = ctx.progress((trajectories * cfg.sde.steps) as u64, "trajectory steps");
        let results = run_protocol(
            &data.params,
            patterns,
            data.test()?,
            h,
            w,
            &flows,
            &models,
            &nets,
            &cfg,
            &mut |n| bar.inc(n),
        );
        bar.finish();

        // Direct cosines (signed, per pattern) with each flow's first variant (+K, +v).
        let direct_pats = match p.usize("direct_patterns") {
            0 => patterns,
            n => data.test_patterns(n)?,
        };
        let rates = true_rates(&data.params, direct_pats, h, w);
        let direct: Vec<Vec<f64>> = flows
            .iter()
            .map(|f| match &f.variants[0] {
                Drift::Kernel(kernel) => {
                    let m = &models[f.model];
                    let score = |x: &[f32], out: &mut [f32]| m.score(x, x.len() / len, h, w, out);
                    direct_cosine(&data.params, direct_pats, h, w, kernel, &score)
                }
                Drift::Net { net, .. } => flow_cosines(&nets[*net], direct_pats, &rates, h, w),
            })
            .collect();
        let abs = |v: &[f64]| v.iter().map(|x| x.abs()).collect::<Vec<f64>>();
        // The sign a model would be given once (max over ±v of its mean over patterns), then kept for
        // every pattern: per-pattern |cos| also rewards a flow whose sign flips from pattern to pattern.
        let model_signed = |v: &[f64]| -> Vec<f64> {
            let sign = if v.iter().sum::<f64>() < 0.0 {
                -1.0
            } else {
                1.0
            };
            v.iter().map(|x| sign * x).collect()
        };
        let direct_model: Vec<Vec<f64>> = direct.iter().map(|d| model_signed(d)).collect();

        // Pool by group (draws / seeds of one flow together), in order of first appearance.
        let mut groups: Vec<(String, String)> = Vec::new();
        for f in &flows {
            if !groups.iter().any(|(g, _)| g == &f.group) {
                groups.push((f.group.clone(), f.label.clone()));
            }
        }
        let pool = |group: &str, pick: &dyn Fn(usize) -> Vec<f64>| -> Vec<f64> {
            (0..flows.len())
                .filter(|&i| flows[i].group == group)
                .flat_map(pick)
                .collect()
        };
        let paper = PAPER.iter().find(|r| r.0 == data.preset);
        let mut table = Table::new([
            "flow",
            "alignment |cos| (paper protocol)",
            "paper",
            "direct cos(v, GS rate)",
            "direct |cos|",
            "direct cos, sign per model",
            "spectrum distance",
            "histogram TV",
        ]);
        let ms = |v: &[f64], prec: usize| {
            let s = spread(v);
            Cell::MeanStd {
                mean: s["mean"].as_f64().unwrap_or(f64::NAN),
                std: s["std"].as_f64().unwrap_or(0.0),
                n: v.len(),
                precision: prec,
            }
        };
        let mut summary = serde_json::Map::new();
        let mut json_flows = Vec::new();
        for (g, label) in &groups {
            let best = pool(g, &|i| results[i].best.clone());
            let dc = pool(g, &|i| direct[i].clone());
            let sd = pool(g, &|i| results[i].spectrum.clone());
            let hd = pool(g, &|i| results[i].histogram.clone());
            let paper_val = paper.map(|r| match g.as_str() {
                "flow" => r.1,
                "random non-skew kernel" => r.2,
                "score with random weights" => r.3,
                _ => f64::NAN,
            });
            table.push(vec![
                Cell::Text(label.clone()),
                ms(&best, 3),
                match paper_val {
                    Some(v) if v.is_finite() => Cell::Num(v, 3),
                    _ => Cell::Empty,
                },
                ms(&dc, 3),
                ms(&abs(&dc), 3),
                ms(&pool(g, &|i| direct_model[i].clone()), 3),
                ms(&sd, 3),
                ms(&hd, 3),
            ]);
            let key = metric_key(g);
            summary.insert(
                key.clone(),
                serde_json::json!({
                    "label": label, "alignment": spread(&best), "direct_cosine": spread(&dc),
                    "direct_cosine_abs": spread(&abs(&dc)),
                    "direct_cosine_model_sign": spread(&pool(g, &|i| direct_model[i].clone())),
                    "spectrum_distance": spread(&sd), "histogram_distance": spread(&hd),
                    "paper": paper_val.filter(|v| v.is_finite()),
                }),
            );
            ctx.metric(&format!("alignment/{key}"), spread(&best));
            ctx.metric(&format!("direct_cosine/{key}"), spread(&dc));
            ctx.metric(&format!("direct_cosine_abs/{key}"), spread(&abs(&dc)));
            ctx.metric(
                &format!("direct_cosine_model_sign/{key}"),
                spread(&pool(g, &|i| direct_model[i].clone())),
            );
            ctx.metric(&format!("spectrum_distance/{key}"), spread(&sd));
            ctx.metric(&format!("histogram_distance/{key}"), spread(&hd));
        }
        // Paired differences on the same (pattern, seed) and noise: per (pattern, seed), the mean over a
        // group's members (seeds, draws) of one minus the other's.
        let group_mean = |g: &str, per: &[Vec<f64>]| -> Option<Vec<f64>> {
            let members: Vec<usize> = (0..flows.len()).filter(|&i| flows[i].group == g).collect();
            (!members.is_empty()).then(|| {
                let n = per[members[0]].len();
                (0..n)
                    .map(|j| members.iter().map(|&i| per[i][j]).sum::<f64>() / members.len() as f64)
                    .collect()
            })
        };
        let best_all: Vec<Vec<f64>> = results.iter().map(|r| r.best.clone()).collect();
        let direct_abs: Vec<Vec<f64>> = direct.iter().map(|d| abs(d)).collect();
        let mut pairs: Vec<(&str, &str)> = groups
            .iter()
            .skip(1)
            .filter(|(g, _)| g != "trained flow" && g != "untrained network")
            .map(|(g, _)| ("flow", g.as_str()))
            .collect();
        if n_trained > 0 {
            pairs.insert(0, ("trained flow", "flow"));
            if p.usize("untrained_draws") > 0 {
                pairs.insert(0, ("trained flow", "untrained network"));
            }
        }
        let mut paired_lines = Vec::new();
        for (a, b) in pairs {
            for (measure, per) in [
                ("", &best_all),
                ("direct_abs_", &direct_abs),
                ("direct_model_sign_", &direct_model),
            ] {
                let (Some(ma), Some(mb)) = (group_mean(a, per), group_mean(b, per)) else {
                    continue;
                };
                let diffs: Vec<f64> = ma.iter().zip(&mb).map(|(x, y)| x - y).collect();
                let wins = diffs.iter().filter(|&&d| d > 0.0).count();
                let (ka, kb) = (metric_key(a), metric_key(b));
                let tag = if ka == "flow" {
                    kb.clone()
                } else {
                    format!("{ka}_vs_{kb}")
                };
                let s = spread(&diffs);
                ctx.metric(&format!("paired_{measure}flow_minus/{tag}"), s.clone());
                ctx.metric(
                    &format!("paired_{measure}flow_wins/{tag}"),
                    format!("{wins}/{}", diffs.len()),
                );
                paired_lines.push(format!(
                    "{a} minus {b} ({}): {:+.3} ± {:.3}, ahead on {wins}/{}",
                    match measure {
                        "" => "alignment",
                        "direct_abs_" => "direct |cos|",
                        _ => "direct cos, sign per model",
                    },
                    s["mean"].as_f64().unwrap_or(f64::NAN),
                    s["std"].as_f64().unwrap_or(0.0),
                    diffs.len()
                ));
            }
        }
        // Reference for the preservation distances: held-out patterns against the rest of the held-out set.
        let reference = data.test()?;
        let spec_ref: Vec<f64> = (0..np)
            .map(|i| spectrum_distance(&patterns[i * len..(i + 1) * len], reference, 2, h, w))
            .collect();
        let hist_ref: Vec<f64> = (0..np)
            .map(|i| histogram_distance(&patterns[i * len..(i + 1) * len], reference, 2, h, w, 32))
            .collect();
        table.push(vec![
            Cell::Text("data itself (one pattern vs all held out)".into()),
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
            Cell::Empty,
            ms(&spec_ref, 3),
            ms(&hist_ref, 3),
        ]);
        ctx.metric("spectrum_distance/data", spread(&spec_ref));
        ctx.metric("histogram_distance/data", spread(&hist_ref));
        table.write(ctx.out_dir, "alignment")?;
        for (i, f) in flows.iter().enumerate() {
            json_flows.push(serde_json::json!({
                "name": f.name, "group": f.group, "best": results[i].best,
                "per_variant": results[i].per_variant, "direct_cosine": direct[i],
                "spectrum_distance": results[i].spectrum, "histogram_distance": results[i].histogram,
            }));
        }
        write_json(
            &ctx.output("alignment.json"),
            &serde_json::json!({
                "preset": data.preset, "size": [h, w], "patterns": np, "seeds": seeds,
                "direct_patterns": direct_pats.len() / len,
                "steps": cfg.sde.steps, "gs_steps": cfg.gs_steps, "summary": summary, "flows": json_flows,
                "paired": paired_lines,
            }),
        )?;
        ctx.log(format!(
            "\n{}\n{}",
            table.to_markdown()?,
            paired_lines.join("\n")
        ));
        Ok(())
    }
}

/// The metric key of a group: lower-case words joined by `_`.
fn metric_key(group: &str) -> String {
    let key = group.replace([' ', '-'], "_").replace(['(', ')', '='], "");
    key.trim_end_matches('_').replace("__", "_")
}

/// The upstream stages of an optional list input (empty when not wired).
fn opt_list<'a>(ctx: &'a StageContext<'_>, name: &str) -> Vec<&'a InputArtifact> {
    ctx.input_list(name).unwrap_or_default()
}

/// The `description` a `training_free` stage wrote into its kernel.json (empty if none).
fn kernel_description(input: &InputArtifact) -> String {
    crate::io::read_json::<serde_json::Value>(&input.dir.join("kernel.json"))
        .ok()
        .and_then(|v| v["description"].as_str().map(str::to_string))
        .unwrap_or_default()
}

/// Noised training fields (up to 16, the training distribution of the flows: a·x0 + σε) on which untrained
/// networks' batch-norm running statistics are calibrated.
fn calibration_batch(
    data: &ImageData,
    sigma: f32,
    scale: f32,
    seed: u64,
) -> anyhow::Result<Vec<f32>> {
    let train = data.train()?;
    let len = data.item_len();
    let n = (train.len() / len).min(16);
    let mut rng = crate::science::rng::stream(seed, "evaluate_alignment/calibration");
    Ok(train[..n * len]
        .iter()
        .map(|&x| {
            let e: f32 = StandardNormal.sample(&mut rng);
            scale * x + sigma * e
        })
        .collect())
}

/// The velocity part of a flow's drift (η s is added to every drift).
enum Drift {
    /// v = K ⋆ s.
    Kernel(ConvKernel),
    /// v = sign · net(x), network `net` in evaluation mode.
    Net { net: usize, sign: f32 },
}

/// One evaluated flow: variants (max taken over them) driven by score model `model`.
struct FlowSpec {
    name: String,
    /// Flows of one group (seeds, draws) are pooled in the table.
    group: String,
    /// The group's row label.
    label: String,
    variants: Vec<Drift>,
    model: usize,
}

/// Settings of the protocol.
struct Protocol {
    sde: SdeConfig,
    gs_steps: usize,
    ema: f32,
    denoised: bool,
    seeds: usize,
    max_batch: usize,
}

/// Scores of one flow, each indexed `pattern * seeds + seed` (preservation: pooled over variants).
struct FlowResult {
    per_variant: Vec<Vec<f64>>,
    best: Vec<f64>,
    spectrum: Vec<f64>,
    histogram: Vec<f64>,
}

/// drift_i = v_i + η s_i for a batch whose item i uses `drifts[i]`: kernels per item, networks batched over
/// their items.
#[expect(
    clippy::too_many_arguments,
    reason = "a flat numeric helper with one call site"
)]
fn batch_drift(
    drifts: &[&Drift],
    nets: &[ImageFlow],
    eta: f32,
    x: &[f32],
    s: &[f32],
    h: usize,
    w: usize,
    out: &mut [f32],
) {
    let len = 2 * h * w;
    out.par_chunks_mut(len)
        .zip(s.par_chunks(len))
        .zip(drifts.par_iter())
        .for_each(|((o, si), d)| {
            match d {
                Drift::Kernel(k) => k.apply_one(si, h, w, o),
                Drift::Net { .. } => o.fill(0.0),
            }
            o.iter_mut().zip(si).for_each(|(o, s)| *o += eta * s);
        });
    for (ni, net) in nets.iter().enumerate() {
        let items: Vec<(usize, f32)> = drifts
            .iter()
            .enumerate()
            .filter_map(|(j, d)| match d {
                Drift::Net { net, sign } if *net == ni => Some((j, *sign)),
                _ => None,
            })
            .collect();
        if items.is_empty() {
            continue;
        }
        let xb: Vec<f32> = items
            .iter()
            .flat_map(|&(j, _)| x[j * len..(j + 1) * len].iter().copied())
            .collect();
        let mut vb = vec![0.0f32; xb.len()];
        net.velocity(&xb, items.len(), h, w, &mut vb);
        for (b, &(j, sign)) in items.iter().enumerate() {
            out[j * len..(j + 1) * len]
                .iter_mut()
                .zip(&vb[b * len..(b + 1) * len])
                .for_each(|(o, v)| *o += sign * v);
        }
    }
}

/// The protocol for every flow: items (flow, variant, pattern, seed) grouped by score model and integrated
/// in batches; item noise ids depend only on (pattern, seed), so every flow sees the same Brownian paths.
#[expect(
    clippy::too_many_arguments,
    reason = "one call site; a struct would only rename them"
)]
fn run_protocol(
    gs: &GrayScottParams,
    patterns: &[f32],
    reference: &[f32],
    h: usize,
    w: usize,
    flows: &[FlowSpec],
    models: &[ImageScore],
    nets: &[ImageFlow],
    cfg: &Protocol,
    on_steps: &mut dyn FnMut(u64),
) -> Vec<FlowResult> {
    let len = 2 * h * w;
    let np = patterns.len() / len;
    let e_gs = gray_scott_displacement(gs, patterns, h, w, cfg.gs_steps);
    let mut out: Vec<FlowResult> = flows
        .iter()
        .map(|f| FlowResult {
            per_variant: vec![vec![0.0; np * cfg.seeds]; f.variants.len()],
            best: Vec::new(),
            spectrum: Vec::new(),
            histogram: Vec::new(),
        })
        .collect();
    for (mi, model) in models.iter().enumerate() {
        let mut items = Vec::new();
        for (f, spec) in flows.iter().enumerate().filter(|(_, s)| s.model == mi) {
            for v in 0..spec.variants.len() {
                for pat in 0..np {
                    for s in 0..cfg.seeds {
                        items.push((f, v, pat, s));
                    }
                }
            }
        }
        let kind = if cfg.denoised {
            FrameKind::Denoised {
                sigma: model.sigma(),
                signal_scale: model.signal_scale(),
            }
        } else {
            FrameKind::Raw
        };
        for chunk in items.chunks(cfg.max_batch.max(1)) {
            let n = chunk.len();
            let mut x = Vec::with_capacity(n * len);
            for &(_, _, pat, _) in chunk {
                x.extend_from_slice(&patterns[pat * len..(pat + 1) * len]);
            }
            let drifts: Vec<&Drift> = chunk
                .iter()
                .map(|&(f, v, _, _)| &flows[f].variants[v])
                .collect();
            let ids: Vec<u64> = chunk
                .iter()
                .map(|&(_, _, pat, s)| (pat * cfg.seeds + s) as u64)
                .collect();
            let mut ema = FrameEma::new(cfg.ema, kind);
            let eta = cfg.sde.eta;
            heun_sde_drift(
                &mut x,
                FieldShape { n, c: 2, h, w },
                &ids,
                &cfg.sde,
                &mut |x, o| model.score(x, x.len() / len, h, w, o),
                &mut |x, s, o| batch_drift(&drifts, nets, eta, x, s, h, w, o),
                &mut |step, x, s| {
                    ema.update(x, s);
                    if step > 0 {
                        on_steps(n as u64);
                    }
                },
            );
            for (j, &(f, v, pat, s)) in chunk.iter().enumerate() {
                let x0 = &patterns[pat * len..(pat + 1) * len];
                let fin = &ema.ema[j * len..(j + 1) * len];
                let e_flow: Vec<f32> = fin.iter().zip(x0).map(|(a, b)| a - b).collect();
                let c = cosine(&e_flow, &e_gs[pat * len..(pat + 1) * len]).abs();
                let c = if c.is_finite() { c } else { 0.0 };
                out[f].per_variant[v][pat * cfg.seeds + s] = c;
                out[f]
                    .spectrum
                    .push(spectrum_distance(fin, reference, 2, h, w));
                out[f]
                    .histogram
                    .push(histogram_distance(fin, reference, 2, h, w, 32));
            }
        }
    }
    for r in &mut out {
        r.best = (0..np * cfg.seeds)
            .map(|i| r.per_variant.iter().map(|pv| pv[i]).fold(0.0, f64::max))
            .collect();
    }
    out
}
