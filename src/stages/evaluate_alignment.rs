//! `evaluate_alignment`: how well the training-free Turing flow reproduces the true Gray-Scott dynamics,
//! against the paper's baselines, with every number as mean ± std over held-out patterns and noise seeds.
//!
//! Three measures (spec §7): the paper's protocol (|cos| between the flow's displacement — the EMA of
//! denoised frames after 200 SDE steps minus x0 — and 20 Gray-Scott steps' displacement, max over the
//! kernel's sign ±K, i.e. over γ for the rotation); the direct cosine between v(x) = K ⋆ s(x) and the true
//! (du/dt, dv/dt) at the patterns; and "the pattern is preserved": radially averaged power-spectrum and
//! value-histogram distances between the rolled-out frames and the data. Baselines: random non-skew 1x1
//! kernels (max over ±k) and the score network with randomly redrawn weights (driven by the same K). All
//! runs are paired: the same patterns and, per (pattern, seed), the same Brownian noise for every flow.

use super::image_common::{load_kernel, load_local_score, ImageData};
use super::{spread, StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::write_json;
use crate::nn::conv::LocalScore;
use crate::render::{Cell, Table};
use crate::science::gray_scott::GrayScottParams;
use crate::science::sde::{heun_sde, FieldShape, FrameEma, FrameKind, SdeConfig};
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
        1
    }
    fn about(&self) -> &'static str {
        "Images: alignment of the training-free flow with the true Gray-Scott dynamics — the paper's protocol \
         (|cos| of 200-step SDE vs 20-step Gray-Scott displacements, max over ±K) and the direct cosine of \
         v = K ⋆ s with (du/dt, dv/dt) — plus pattern preservation (spectrum and histogram distances), for the \
         flow and the paper's paired baselines, as mean ± std over patterns and seeds; writes the table."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("data", "the `gray_scott` stage (held-out patterns, rates)"),
            ParamSpec::input("score", "the `train_score` stage (images)"),
            ParamSpec::input(
                "flow",
                "the `training_free` stage (images): its kernel K, evaluated as max over ±K",
            ),
            ParamSpec::int("patterns", 16, "held-out patterns evaluated").positive(),
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
        let model = load_local_score(ctx.input("score")?)?;
        let k = load_kernel(ctx.input("flow")?)?;
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
        let both = |k: &ConvKernel| vec![k.clone(), k.scaled(-1.0)];
        let mut flows = vec![FlowSpec {
            name: "training-free flow (max over ±K)".into(),
            group: "flow",
            variants: both(&k),
            model: 0,
        }];
        for d in 0..p.usize("nonskew_draws") {
            flows.push(FlowSpec {
                name: format!("random non-skew kernel #{d} (max over ±k)"),
                group: "random non-skew kernel",
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
                group: "score with random weights",
                variants: both(&k),
                model: m,
            });
        }
        if p.bool("langevin") {
            flows.push(FlowSpec {
                name: "Langevin only (K = 0)".into(),
                group: "Langevin only (K = 0)",
                variants: vec![ConvKernel::zero(2)],
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
            &cfg,
            &mut |n| bar.inc(n),
        );
        bar.finish();

        // Direct cosines (signed, per pattern) with each flow's first variant.
        let direct: Vec<Vec<f64>> = flows
            .iter()
            .map(|f| {
                let m = &models[f.model];
                let score = |x: &[f32], out: &mut [f32]| m.score(x, x.len() / len, h, w, out);
                direct_cosine(&data.params, patterns, h, w, &f.variants[0], &score)
            })
            .collect();

        // Pool by group (draws of one baseline together).
        let groups: Vec<&str> = {
            let mut g: Vec<&str> = flows.iter().map(|f| f.group).collect();
            g.dedup();
            g
        };
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
        for g in &groups {
            let best = pool(g, &|i| results[i].best.clone());
            let dc = pool(g, &|i| direct[i].clone());
            let sd = pool(g, &|i| results[i].spectrum.clone());
            let hd = pool(g, &|i| results[i].histogram.clone());
            let paper_val = paper.map(|r| match *g {
                "flow" => r.1,
                "random non-skew kernel" => r.2,
                "score with random weights" => r.3,
                _ => f64::NAN,
            });
            table.push(vec![
                Cell::Text(g.to_string()),
                ms(&best, 3),
                match paper_val {
                    Some(v) if v.is_finite() => Cell::Num(v, 3),
                    _ => Cell::Empty,
                },
                ms(&dc, 3),
                ms(&sd, 3),
                ms(&hd, 3),
            ]);
            let key = g.replace([' ', '-'], "_").replace(['(', ')', '='], "");
            let key = key.trim_end_matches('_').replace("__", "_");
            summary.insert(
                key.clone(),
                serde_json::json!({
                    "alignment": spread(&best), "direct_cosine": spread(&dc),
                    "spectrum_distance": spread(&sd), "histogram_distance": spread(&hd),
                    "paper": paper_val,
                }),
            );
            ctx.metric(&format!("alignment/{key}"), spread(&best));
            ctx.metric(&format!("direct_cosine/{key}"), spread(&dc));
            ctx.metric(&format!("spectrum_distance/{key}"), spread(&sd));
            ctx.metric(&format!("histogram_distance/{key}"), spread(&hd));
        }
        // Paired differences: flow minus each baseline on the same (pattern, seed) and noise.
        let flow_best = &results[0].best;
        for g in groups.iter().skip(1) {
            let diffs: Vec<f64> = (0..flows.len())
                .filter(|&i| flows[i].group == *g)
                .flat_map(|i| {
                    results[i]
                        .best
                        .iter()
                        .zip(flow_best)
                        .map(|(b, f)| f - b)
                        .collect::<Vec<_>>()
                })
                .collect();
            let wins = diffs.iter().filter(|&&d| d > 0.0).count();
            let key = g.replace([' ', '-'], "_").replace(['(', ')', '='], "");
            let key = key.trim_end_matches('_').replace("__", "_");
            ctx.metric(&format!("paired_flow_minus/{key}"), spread(&diffs));
            ctx.metric(
                &format!("paired_flow_wins/{key}"),
                format!("{wins}/{}", diffs.len()),
            );
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
                "steps": cfg.sde.steps, "gs_steps": cfg.gs_steps, "summary": summary, "flows": json_flows,
            }),
        )?;
        ctx.log(format!("\n{}", table.to_markdown()?));
        Ok(())
    }
}

/// One evaluated flow: kernel variants (max taken over them) driven by score model `model`.
struct FlowSpec {
    name: String,
    group: &'static str,
    variants: Vec<ConvKernel>,
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
    models: &[LocalScore],
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
            let kernels: Vec<&ConvKernel> = chunk
                .iter()
                .map(|&(f, v, _, _)| &flows[f].variants[v])
                .collect();
            let ids: Vec<u64> = chunk
                .iter()
                .map(|&(_, _, pat, s)| (pat * cfg.seeds + s) as u64)
                .collect();
            let mut ema = FrameEma::new(cfg.ema, kind);
            heun_sde(
                &mut x,
                FieldShape { n, c: 2, h, w },
                &kernels,
                &ids,
                &cfg.sde,
                &mut |x, o| model.score(x, x.len() / len, h, w, o),
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
