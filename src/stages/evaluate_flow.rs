//! `evaluate_flow` (points): how well learned flows preserve the data distribution, against baselines, and
//! (for Lorenz) how well they align with the true field (spec §6, Fig. 4, Fig. 7, Table 1).
//!
//! Takes a *list* of `train_dynamics` stages (`flows = ["dynamics"]`; a swept stage contributes every
//! seed's model), so each number carries its spread over models. Baselines are drawn here, `baselines`
//! of each, from seeds `seed + i`: the training-free flow D s (D from [`random_skew`], as the
//! `training_free` kind), an untrained network calibrated on data ([`FlowModel::random`]), and plain
//! score ascent s (one field).
//!
//! Distribution preservation: `points` data points pushed forward by RK4 (`dt`, `steps`); unbiased MMD^2
//! (RBF, `sigma`) between the start and every step. Alignment (when the truth is known: Lorenz): every
//! field evaluated on `align_points` data points scaled by sqrt(abar_t), flattened, |cos| with the true
//! field in standardised units. The uniqueness figure embeds these representations in 2-D by PCA (each
//! normalised to unit length and given the sign that makes its dot product with the truth non-negative,
//! as |cos| ignores the sign).

use super::points_common::{load_flow, load_points, load_score, subsample};
use super::{spread, StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::write_json;
use crate::nn::points::schedule::abar;
use crate::nn::points::{FlowModel, Network};
use crate::render::{
    Cell, Figure, Histogram, LinePlot, PointSet as Scatter, ScatterPlot, Series, Table,
};
use crate::science::integrators::rk4_batch_snapshots;
use crate::science::lorenz::LorenzParams;
use crate::science::mmd::mmd2_unbiased;
use crate::science::points::PointSet;
use crate::science::skew::{apply, random_skew};

/// The `evaluate_flow` kind (points).
pub struct EvaluateFlow;

/// A field over one point.
type Field<'a> = Box<dyn Fn(&[f64], &mut [f64]) + Sync + 'a>;

const METHODS: [&str; 4] = ["learned", "training_free", "random", "score"];

impl StageKind for EvaluateFlow {
    fn name(&self) -> &'static str {
        "evaluate_flow"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "Points: MMD^2 between data and its RK4 push-forward under learned flows and baselines (training-free \
         D s, untrained network, score ascent), and for Lorenz the |cos| alignment with the true field; \
         every number with its spread over models."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("data", "the `dataset` stage"),
            ParamSpec::input(
                "score",
                "the `train_score` stage (score ascent and training-free baselines)",
            ),
            ParamSpec::inputs(
                "flows",
                "the `train_dynamics` stage(s); a swept stage gives all its seeds",
            ),
            ParamSpec::float(
                "noise",
                0.1,
                "noise time t of the score in the baselines and of the alignment scaling",
            )
            .probability(),
            ParamSpec::int("points", 256, "data points pushed forward").min(4.0),
            ParamSpec::int("steps", 100, "RK4 steps").positive(),
            ParamSpec::float("dt", 0.1, "RK4 step").positive(),
            ParamSpec::float("sigma", 0.5, "RBF kernel bandwidth of the MMD").positive(),
            ParamSpec::int(
                "baselines",
                8,
                "draws of each random baseline (training-free D, untrained network)",
            )
            .positive(),
            ParamSpec::choice(
                "truth",
                &["auto", "lorenz", "none"],
                "auto",
                "true field for the alignment (auto: lorenz if the dataset is)",
            ),
            ParamSpec::int(
                "align_points",
                1024,
                "data points of the alignment representation",
            )
            .min(2.0),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "mmd.json",
                "MMD^2 per step: per method, per model/draw, and mean/std",
            ),
            (
                "mmd.png",
                "MMD^2 against step, mean ± std band per method (Fig. 7)",
            ),
            (
                "alignment.md / alignment.csv",
                "with a true field: |cos| with the truth per method, mean ± std (Table 1)",
            ),
            (
                "uniqueness.png",
                "with a true field: PCA of the field representations and |cos| histograms (Fig. 4)",
            ),
        ]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let seed = ctx.seed();
        let data = load_points(ctx.input("data")?)?;
        let score = load_score(ctx.input("score")?)?;
        let mut flows = Vec::new();
        for a in ctx.input_list("flows")? {
            flows.push((a.stage.clone(), load_flow(a)?.0));
        }
        let d = data.points.d;
        let t = p.float("noise");
        let nb = p.usize("baselines");
        let network = flows
            .first()
            .map(|f| f.1.network)
            .unwrap_or(Network::Kernel);
        let calib = subsample(&data.points, 2048, seed, "evaluate_flow/calibration");
        let skews: Vec<Vec<f64>> = (0..nb).map(|i| random_skew(d, seed + i as u64)).collect();
        let randoms: Vec<FlowModel> = (0..nb)
            .map(|i| FlowModel::random(network, d, seed + i as u64, Some(&calib)))
            .collect();
        let score_ref = &score;
        let mut fields: Vec<(&str, Field)> = Vec::new();
        for (_, f) in &flows {
            fields.push((
                "learned",
                Box::new(move |x: &[f64], o: &mut [f64]| f.velocity_one(x, o)),
            ));
        }
        for m in &skews {
            fields.push((
                "training_free",
                Box::new(move |x: &[f64], o: &mut [f64]| {
                    let mut s = vec![0.0; x.len()];
                    score_ref.score_one(x, t, &mut s);
                    apply(m, &s, o);
                }),
            ));
        }
        for r in &randoms {
            fields.push((
                "random",
                Box::new(move |x: &[f64], o: &mut [f64]| r.velocity_one(x, o)),
            ));
        }
        fields.push((
            "score",
            Box::new(move |x: &[f64], o: &mut [f64]| score_ref.score_one(x, t, o)),
        ));

        // Distribution preservation.
        let start = subsample(&data.points, p.usize("points"), seed, "evaluate_flow/start");
        let (steps, dt, sigma) = (p.usize("steps"), p.float("dt"), p.float("sigma"));
        let bar = ctx.progress(fields.len() as u64, "fields pushed forward");
        let curves: Vec<Vec<f64>> = fields
            .iter()
            .map(|(_, f)| {
                let snaps = rk4_batch_snapshots(f.as_ref(), &start, dt, steps);
                bar.inc(1);
                snaps
                    .iter()
                    .map(|s| {
                        if s.data.iter().all(|v| v.is_finite()) {
                            mmd2_unbiased(&start, s, sigma)
                        } else {
                            f64::NAN
                        }
                    })
                    .collect()
            })
            .collect();
        bar.finish();
        let mut mmd_json = serde_json::Map::new();
        let mut final_metrics = serde_json::Map::new();
        let mut plot = LinePlot::new(
            format!("{}: distribution preservation", data.name),
            "RK4 step",
            "MMD² to the start",
        );
        let xs: Vec<f64> = (0..=steps).map(|k| k as f64).collect();
        let mut finals = std::collections::BTreeMap::new();
        for (mi, m) in METHODS.iter().enumerate() {
            let rows: Vec<&Vec<f64>> = fields
                .iter()
                .zip(&curves)
                .filter(|(f, _)| f.0 == *m)
                .map(|(_, c)| c)
                .collect();
            if rows.is_empty() {
                continue;
            }
            let per_step: Vec<serde_json::Value> = (0..=steps)
                .map(|k| spread(&rows.iter().map(|r| r[k]).collect::<Vec<_>>()))
                .collect();
            let mean: Vec<f64> = per_step
                .iter()
                .map(|s| s["mean"].as_f64().unwrap_or(f64::NAN))
                .collect();
            let std: Vec<f64> = per_step
                .iter()
                .map(|s| s["std"].as_f64().unwrap_or(0.0))
                .collect();
            let last: Vec<f64> = rows.iter().map(|r| r[steps]).collect();
            finals.insert(*m, spread(&last)["mean"].as_f64().unwrap_or(f64::NAN));
            final_metrics.insert(m.to_string(), spread(&last));
            mmd_json.insert(
                m.to_string(),
                serde_json::json!({ "mean": mean, "std": std, "runs": rows }),
            );
            plot = plot.series(
                Series::new(format!("{m} (n={})", rows.len()), xs.clone(), mean)
                    .with_std(std)
                    .color(crate::render::PALETTE[mi]),
            );
        }
        write_json(
            &ctx.output("mmd.json"),
            &serde_json::Value::Object(mmd_json),
        )?;
        Figure::row(vec![plot.panel()])
            .panel_size(760, 480)
            .save_png(&ctx.output("mmd.png"))?;
        ctx.metric("mmd_final", serde_json::Value::Object(final_metrics));
        if let (Some(l), Some(r)) = (finals.get("learned"), finals.get("random")) {
            ctx.metric("mmd_final_random_over_learned", r / l);
            ctx.log(format!(
                "MMD^2 after {steps} steps: learned {l:.4}, random network {r:.4} ({:.1}x)",
                r / l
            ));
        }
        for (m, v) in &finals {
            ctx.log(format!("  {m}: MMD^2 at step {steps} = {v:.4}"));
        }

        // Alignment with the truth.
        let truth = match p.str("truth") {
            "auto" if data.name == "lorenz" => true,
            "lorenz" => true,
            _ => false,
        };
        if !truth {
            return Ok(());
        }
        if d != 3 {
            anyhow::bail!(
                "truth = \"lorenz\" needs 3-D data, got {d}-D `{}`",
                data.name
            );
        }
        let lorenz = LorenzParams::default();
        let mut pts = subsample(
            &data.points,
            p.usize("align_points"),
            seed,
            "evaluate_flow/align",
        );
        let scale = abar(t).sqrt();
        pts.data.iter_mut().for_each(|v| *v *= scale);
        let rep = |f: &(dyn Fn(&[f64], &mut [f64]) + Sync)| -> Vec<f64> {
            let mut out = PointSet::zeros(pts.n, d);
            for i in 0..pts.n {
                f(pts.row(i), out.row_mut(i));
            }
            out.data
        };
        let true_rep = rep(&|x: &[f64], o: &mut [f64]| lorenz.field_standardized(&data.norm, x, o));
        let reps: Vec<(&str, Vec<f64>)> =
            fields.iter().map(|(m, f)| (*m, rep(f.as_ref()))).collect();
        let cos = |a: &[f64], b: &[f64]| {
            let dot: f64 = a.iter().zip(b).map(|(x, y)| x * y).sum();
            let na = a.iter().map(|x| x * x).sum::<f64>().sqrt();
            let nb = b.iter().map(|x| x * x).sum::<f64>().sqrt();
            dot / (na * nb)
        };
        let mut table = Table::new([
            "method",
            "|cos| with the true Lorenz field",
            "n",
            "paper (mean ± std over 100)",
        ]);
        let paper = [
            ("learned", "0.257 ± 0.012"),
            ("training_free", "0.129 ± 0.077"),
            ("random", "0.045 ± 0.039"),
            ("score", "0.027"),
        ];
        let mut align = serde_json::Map::new();
        let mut hist = Histogram::new("|cos| with the true field", "|cos|");
        for (m, paper) in paper {
            let v: Vec<f64> = reps
                .iter()
                .filter(|r| r.0 == m)
                .map(|r| cos(&r.1, &true_rep).abs())
                .collect();
            if v.is_empty() {
                continue;
            }
            let s = spread(&v);
            table.push(vec![
                Cell::from(m),
                Cell::MeanStd {
                    mean: s["mean"].as_f64().unwrap_or(f64::NAN),
                    std: s["std"].as_f64().unwrap_or(0.0),
                    n: v.len(),
                    precision: 3,
                },
                Cell::Num(v.len() as f64, 0),
                Cell::from(paper),
            ]);
            ctx.log(format!(
                "alignment {m}: {:.3} ± {:.3} (n = {})",
                s["mean"].as_f64().unwrap_or(f64::NAN),
                s["std"].as_f64().unwrap_or(0.0),
                v.len()
            ));
            align.insert(m.to_string(), s);
            hist = hist.series(m, v);
        }
        let learned: Vec<&Vec<f64>> = reps
            .iter()
            .filter(|r| r.0 == "learned")
            .map(|r| &r.1)
            .collect();
        if learned.len() > 1 {
            let mut agree = Vec::new();
            for i in 0..learned.len() {
                for j in i + 1..learned.len() {
                    agree.push(cos(learned[i], learned[j]).abs());
                }
            }
            let s = spread(&agree);
            table.push(vec![
                Cell::from("learned vs learned (pairs)"),
                Cell::MeanStd {
                    mean: s["mean"].as_f64().unwrap_or(f64::NAN),
                    std: s["std"].as_f64().unwrap_or(0.0),
                    n: agree.len(),
                    precision: 4,
                },
                Cell::Num(agree.len() as f64, 0),
                Cell::from("0.9988"),
            ]);
            align.insert("learned_vs_learned".into(), s);
        }
        table.write(ctx.out_dir, "alignment")?;
        ctx.metric("alignment", serde_json::Value::Object(align));

        // Uniqueness figure: PCA of unit-normalised, sign-aligned representations.
        let mut all: Vec<(&str, Vec<f64>)> = reps;
        all.push(("true", true_rep.clone()));
        let unit: Vec<Vec<f64>> = all
            .iter()
            .map(|(_, r)| {
                let n = r.iter().map(|x| x * x).sum::<f64>().sqrt().max(1e-300);
                let sign = if cos(r, &true_rep) < 0.0 { -1.0 } else { 1.0 };
                r.iter().map(|x| sign * x / n).collect()
            })
            .collect();
        let emb = pca2(&unit);
        let mut sc = ScatterPlot::new("dynamics representations (PCA)", "PC1", "PC2");
        for (mi, m) in METHODS.iter().chain(["true"].iter()).enumerate() {
            let pts: Vec<[f64; 2]> = all
                .iter()
                .zip(&emb)
                .filter(|(a, _)| a.0 == *m)
                .map(|(_, e)| *e)
                .collect();
            if !pts.is_empty() {
                sc = sc.points(Scatter {
                    size: 6,
                    ..Scatter::new(*m, pts).color(crate::render::PALETTE[mi])
                });
            }
        }
        Figure::row(vec![sc.panel(), hist.panel()])
            .panel_size(620, 520)
            .title("uniqueness: learned flows agree with each other and align best with the true Lorenz field")
            .save_png(&ctx.output("uniqueness.png"))?;
        Ok(())
    }
}

/// Coordinates of `rows` on their top two principal components (Gram-matrix power iteration, deterministic).
fn pca2(rows: &[Vec<f64>]) -> Vec<[f64; 2]> {
    let n = rows.len();
    let dim = rows[0].len();
    let mean: Vec<f64> = (0..dim)
        .map(|j| rows.iter().map(|r| r[j]).sum::<f64>() / n as f64)
        .collect();
    let c: Vec<Vec<f64>> = rows
        .iter()
        .map(|r| r.iter().zip(&mean).map(|(a, m)| a - m).collect())
        .collect();
    let mut g = vec![0.0; n * n];
    for i in 0..n {
        for j in 0..n {
            g[i * n + j] = c[i].iter().zip(&c[j]).map(|(a, b)| a * b).sum();
        }
    }
    let mut out = vec![[0.0; 2]; n];
    for k in 0..2 {
        let mut v: Vec<f64> = (0..n).map(|i| 1.0 + (i as f64 * 0.37).sin()).collect();
        let mut lambda = 0.0;
        for _ in 0..500 {
            let w: Vec<f64> = (0..n)
                .map(|i| (0..n).map(|j| g[i * n + j] * v[j]).sum())
                .collect();
            let norm = w.iter().map(|x| x * x).sum::<f64>().sqrt();
            if norm < 1e-300 {
                break;
            }
            lambda = norm;
            v = w.iter().map(|x| x / norm).collect();
        }
        for (o, vi) in out.iter_mut().zip(&v) {
            o[k] = vi * lambda.sqrt();
        }
        // Deflate.
        for i in 0..n {
            for j in 0..n {
                g[i * n + j] -= lambda * v[i] * v[j];
            }
        }
    }
    out
}
