//! `evaluate_chaos` (points): is each learned flow chaotic? (spec §5, Fig. 2 right.)
//!
//! For every model of the `flows` list (a swept `train_dynamics` stage gives all its seeds): bounded starts
//! (N(0, I) candidates kept if they stay within `bound` for `steps` RK4 steps of `dt`), the largest Lyapunov
//! exponent by the two-trajectory method per time unit and per unit path length, the full spectrum by QR
//! from a few starts, and the Kaplan-Yorke dimension. All of it is plain f64 Rust over the trained weights
//! ([`crate::science::lyapunov`]), trajectories in parallel, one random stream per start, so results are
//! bitwise reproducible whatever the thread count. When the dataset is the Lorenz attractor, the true field
//! (in the same standardised units) is analysed the same way as a reference, with its own step (`ref_dt`)
//! and short renormalisation segments so the separation never saturates at the attractor's size.

use super::points_common::{load_flow, load_points, subsample};
use super::{spread, StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::write_json;
use crate::render::{projections_3d, Figure, Histogram, LinePlot, Series};
use crate::science::integrators::rk4_trajectory;
use crate::science::lorenz::LorenzParams;
use crate::science::lyapunov::{
    bounded_starts_of, kaplan_yorke, largest_exponents_of, spectrum_of, BatchField,
    LargestExponent, Pointwise, SpectrumConfig, StartSearch, TwoTrajectoryConfig,
};

/// The `evaluate_chaos` kind (points).
pub struct EvaluateChaos;

/// The paper's true-Lorenz largest exponent per time unit (spec §5).
pub const LORENZ_LAMBDA1: f64 = 0.906;

/// What one field's analysis gives.
struct Chaos {
    starts: usize,
    lambdas: Vec<LargestExponent>,
    spectra: Vec<Vec<f64>>,
}

impl Chaos {
    fn lambda1(&self) -> f64 {
        mean(&self.lambdas.iter().map(|l| l.per_time).collect::<Vec<_>>())
    }
    /// λ1 per unit path length: the model's mean λ1 per time over its mean speed. A ratio of means, not
    /// a mean of per-trajectory ratios: a trajectory that stalls at a fixed point has a speed near 0, and
    /// its ratio (about -10^12 once seen) would swamp every other trajectory of the model.
    fn lambda1_path(&self) -> f64 {
        let speeds: Vec<f64> = self.lambdas.iter().map(|l| l.mean_speed).collect();
        self.lambda1() / mean(&speeds)
    }
    fn spectrum(&self) -> Vec<f64> {
        let d = self.spectra.first().map(Vec::len).unwrap_or(0);
        (0..d)
            .map(|k| mean(&self.spectra.iter().map(|s| s[k]).collect::<Vec<_>>()))
            .collect()
    }
}

fn median(v: &[f64]) -> f64 {
    let mut s = v.to_vec();
    s.sort_by(f64::total_cmp);
    match s.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => s[n / 2],
        n => 0.5 * (s[n / 2 - 1] + s[n / 2]),
    }
}

fn mean(v: &[f64]) -> f64 {
    if v.is_empty() {
        f64::NAN
    } else {
        v.iter().sum::<f64>() / v.len() as f64
    }
}

#[allow(clippy::too_many_arguments)]
fn analyse<B: BatchField>(
    f: &B,
    count: usize,
    steps: usize,
    bound: f64,
    two: &TwoTrajectoryConfig,
    spec: &SpectrumConfig,
    spec_starts: usize,
    seed: u64,
) -> Chaos {
    let search = StartSearch {
        count,
        steps,
        dt: two.dt,
        bound,
        max_candidates: count * 16,
    };
    let starts = bounded_starts_of(f, &search, seed);
    let lambdas = largest_exponents_of(f, &starts, two, seed);
    use rayon::prelude::*;
    let spectra: Vec<Vec<f64>> = starts
        .par_iter()
        .take(spec_starts)
        .map(|x0| spectrum_of(f, x0, spec))
        .collect();
    Chaos {
        starts: starts.len(),
        lambdas,
        spectra,
    }
}

impl StageKind for EvaluateChaos {
    fn name(&self) -> &'static str {
        "evaluate_chaos"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "Points: largest Lyapunov exponent (two trajectories; per time and per path length), full spectrum (QR) \
         and Kaplan-Yorke dimension of every learned flow, with the true Lorenz field as reference."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input(
                "data",
                "the `dataset` stage (normalisation; data under the trajectory figure)",
            ),
            ParamSpec::inputs(
                "flows",
                "the `train_dynamics` stage(s); a swept stage gives all its seeds",
            ),
            ParamSpec::int("trajectories", 64, "bounded trajectories per model").positive(),
            ParamSpec::int("steps", 5000, "RK4 steps a start must stay bounded for").positive(),
            ParamSpec::float("dt", 0.1, "RK4 step of the learned flows").positive(),
            ParamSpec::float("bound", 4.0, "bounded: every |coordinate| below this").positive(),
            ParamSpec::float(
                "perturbation",
                1e-5,
                "initial separation of the two trajectories",
            )
            .positive(),
            ParamSpec::int("tau", 2500, "steps per renormalisation segment").positive(),
            ParamSpec::int("segments", 1, "renormalisation segments").positive(),
            ParamSpec::int("spectrum_starts", 4, "starts of the QR spectrum per model").min(0.0),
            ParamSpec::int("spectrum_steps", 2000, "QR steps per start").positive(),
            ParamSpec::choice(
                "reference",
                &["auto", "lorenz", "none"],
                "auto",
                "true field analysed as a reference (auto: lorenz if the dataset is)",
            ),
            ParamSpec::float("ref_dt", 0.01, "reference: RK4 step of the true field").positive(),
            ParamSpec::int(
                "ref_tau",
                100,
                "reference: steps per segment (short, so separations stay small)",
            )
            .positive(),
            ParamSpec::int("ref_segments", 200, "reference: segments").positive(),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("chaos.json", "per model: bounded starts, lambda_1 per trajectory (per time, per path length), spectrum, Kaplan-Yorke; and the reference"),
            ("separation.png", "mean separation of perturbed trajectories against time (log), first model and the true field"),
            ("trajectory.png", "3-D: x1-x2, x1-x3, x2-x3 projections of a learned trajectory over the data"),
            ("lambda_hist.png", "histograms of lambda_1 over models, per time and per path length"),
        ]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let seed = ctx.seed();
        let data = load_points(ctx.input("data")?)?;
        let d = data.points.d;
        let mut flows = Vec::new();
        for a in ctx.input_list("flows")? {
            flows.push((a.stage.clone(), load_flow(a)?.0));
        }
        let two = TwoTrajectoryConfig {
            dt: p.float("dt"),
            perturbation: p.float("perturbation"),
            tau: p.usize("tau"),
            segments: p.usize("segments"),
        };
        let spec = SpectrumConfig {
            dt: two.dt,
            transient: 0,
            steps: p.usize("spectrum_steps"),
        };
        let (count, steps, bound) = (p.usize("trajectories"), p.usize("steps"), p.float("bound"));
        let bar = ctx.progress(flows.len() as u64, "models");
        let mut results = Vec::new();
        for (label, flow) in &flows {
            let c = analyse(
                &flow.batched(),
                count,
                steps,
                bound,
                &two,
                &spec,
                p.usize("spectrum_starts"),
                seed,
            );
            ctx.log(format!(
                "{label}: {} bounded starts, lambda_1 {:.4} per time, {:.3} per path length, spectrum {:?}",
                c.starts, c.lambda1(), c.lambda1_path(), c.spectrum()
            ));
            results.push(c);
            bar.inc(1);
        }
        bar.finish();
        let analysed: Vec<(&String, &Chaos)> = flows
            .iter()
            .map(|f| &f.0)
            .zip(&results)
            .filter(|(_, c)| c.starts > 0)
            .collect();
        let l1: Vec<f64> = analysed.iter().map(|(_, c)| c.lambda1()).collect();
        let l1p: Vec<f64> = analysed.iter().map(|(_, c)| c.lambda1_path()).collect();
        let positive = l1.iter().filter(|l| **l > 0.0).count();
        ctx.metric("models", flows.len());
        ctx.metric("models_with_bounded_starts", analysed.len());
        ctx.metric(
            "bounded_starts",
            spread(&results.iter().map(|c| c.starts as f64).collect::<Vec<_>>()),
        );
        // Spreads over models with a finite lambda_1 (a collapsed model has -inf); the share counts all.
        let finite = |v: &[f64]| {
            v.iter()
                .copied()
                .filter(|x| x.is_finite())
                .collect::<Vec<_>>()
        };
        ctx.metric("lambda1_per_time", spread(&finite(&l1)));
        ctx.metric("lambda1_per_path_length", spread(&finite(&l1p)));
        ctx.metric("lambda1_median_all_models", median(&l1));
        ctx.metric(
            "share_lambda1_positive",
            if l1.is_empty() {
                0.0
            } else {
                positive as f64 / l1.len() as f64
            },
        );
        let specs: Vec<Vec<f64>> = analysed
            .iter()
            .map(|(_, c)| c.spectrum())
            .filter(|s| !s.is_empty())
            .collect();
        if !specs.is_empty() {
            let per_k: Vec<serde_json::Value> = (0..d)
                .map(|k| spread(&specs.iter().map(|s| s[k]).collect::<Vec<_>>()))
                .collect();
            ctx.metric("spectrum", per_k);
            ctx.metric(
                "kaplan_yorke",
                spread(&specs.iter().map(|s| kaplan_yorke(s)).collect::<Vec<_>>()),
            );
        }
        ctx.log(format!(
            "lambda_1 > 0 for {positive} of {} models",
            l1.len()
        ));

        let reference = match p.str("reference") {
            "auto" => data.name == "lorenz" && d == 3,
            "lorenz" => true,
            _ => false,
        };
        let truth = if reference {
            anyhow::ensure!(d == 3, "reference = \"lorenz\" needs 3-D data, got {d}-D");
            let lz = LorenzParams::default();
            let field = Pointwise {
                d,
                f: |x: &[f64], o: &mut [f64]| lz.field_standardized(&data.norm, x, o),
                jac: |x: &[f64], o: &mut [f64]| lz.jacobian_standardized(&data.norm, x, o),
            };
            let rt = TwoTrajectoryConfig {
                dt: p.float("ref_dt"),
                perturbation: 1e-8,
                tau: p.usize("ref_tau"),
                segments: p.usize("ref_segments"),
            };
            let rs = SpectrumConfig {
                dt: rt.dt,
                transient: 0,
                steps: rt.tau * rt.segments,
            };
            let c = analyse(
                &field,
                count,
                steps,
                bound,
                &rt,
                &rs,
                p.usize("spectrum_starts"),
                seed,
            );
            let lam: Vec<f64> = c.lambdas.iter().map(|l| l.per_time).collect();
            let sp = c.spectrum();
            let l1 = mean(&lam);
            ctx.log(format!("true Lorenz: lambda_1 {l1:.4} (paper {LORENZ_LAMBDA1}), spectrum {sp:?}, Kaplan-Yorke {:.3}", kaplan_yorke(&sp)));
            ctx.metric(
                "reference",
                serde_json::json!({
                    "lambda1_per_time": spread(&lam),
                    "lambda1_per_path_length": spread(&c.lambdas.iter().map(|l| l.per_path_length).collect::<Vec<_>>()),
                    "lambda1_rel_error_vs_0.906": (l1 - LORENZ_LAMBDA1).abs() / LORENZ_LAMBDA1,
                    "spectrum": sp,
                    "kaplan_yorke": if sp.is_empty() { f64::NAN } else { kaplan_yorke(&sp) },
                    "bounded_starts": c.starts,
                }),
            );
            Some(c)
        } else {
            None
        };
        let model_json: Vec<serde_json::Value> = flows
            .iter()
            .zip(&results)
            .map(|((label, _), c)| {
                serde_json::json!({
                    "model": label, "bounded_starts": c.starts,
                    "lambda1_per_time": c.lambdas.iter().map(|l| l.per_time).collect::<Vec<_>>(),
                    "lambda1_per_path_length": c.lambdas.iter().map(|l| l.per_path_length).collect::<Vec<_>>(),
                    "spectrum": c.spectrum(),
                })
            })
            .collect();
        write_json(
            &ctx.output("chaos.json"),
            &serde_json::json!({ "models": model_json }),
        )?;

        // Figures.
        let sep_panel = |title: String, c: &Chaos, dt: f64, pert: f64| {
            let n = c.lambdas.first().map(|l| l.log_growth.len()).unwrap_or(0);
            let x: Vec<f64> = (1..=n).map(|k| k as f64 * dt).collect();
            let y: Vec<f64> = (0..n)
                .map(|k| {
                    pert * mean(
                        &c.lambdas
                            .iter()
                            .map(|l| l.log_growth[k])
                            .collect::<Vec<_>>(),
                    )
                    .exp()
                })
                .collect();
            LinePlot::new(title, "time", "mean separation (geometric)")
                .series(Series::new(
                    format!("{} trajectories", c.lambdas.len()),
                    x,
                    y,
                ))
                .log_y()
                .panel()
        };
        let mut panels = Vec::new();
        if let Some(((label, _), c)) = flows.iter().zip(&results).find(|(_, c)| c.starts > 0) {
            panels.push(sep_panel(
                format!("learned flow {label}"),
                c,
                two.dt,
                two.perturbation,
            ));
        }
        if let Some(c) = &truth {
            panels.push(sep_panel(
                "true Lorenz (renormalised segments)".into(),
                c,
                p.float("ref_dt"),
                1e-8,
            ));
        }
        if !panels.is_empty() {
            Figure::row(panels)
                .panel_size(620, 440)
                .title("separation of perturbed trajectories")
                .save_png(&ctx.output("separation.png"))?;
        }
        if d == 3 {
            if let Some(c) = analysed.first().map(|(l, c)| (l, c)) {
                let flow = &flows
                    .iter()
                    .find(|f| &f.0 == *c.0)
                    .expect("analysed model is in the list")
                    .1;
                let search = StartSearch {
                    count: 1,
                    steps,
                    dt: two.dt,
                    bound,
                    max_candidates: count * 16,
                };
                let starts = bounded_starts_of(&flow.batched(), &search, seed);
                if let Some(x0) = starts.first() {
                    let traj = rk4_trajectory(
                        &|x: &[f64], o: &mut [f64]| flow.velocity_one(x, o),
                        x0,
                        two.dt,
                        steps,
                    );
                    let tri = |s: &crate::science::points::PointSet| -> Vec<[f64; 3]> {
                        (0..s.n)
                            .map(|i| [s.row(i)[0], s.row(i)[1], s.row(i)[2]])
                            .collect()
                    };
                    let shown = subsample(&data.points, 3000, seed, "evaluate_chaos/shown");
                    Figure::row(projections_3d(&tri(&shown), &tri(&traj), ["x1", "x2", "x3"]).into())
                        .panel_size(520, 480)
                        .title(format!("{}: a trajectory of the learned flow ({steps} RK4 steps of {}) over the data", c.0, two.dt))
                        .save_png(&ctx.output("trajectory.png"))?;
                }
            }
        }
        if !l1.is_empty() {
            let h1 = Histogram {
                bins: 15,
                ..Histogram::new(
                    format!(
                        "lambda_1 per time over {} models ({positive} > 0)",
                        l1.len()
                    ),
                    "lambda_1",
                )
            }
            .series("learned", finite(&l1))
            .ref_line(0.0, "0");
            let h2 = Histogram {
                bins: 15,
                ..Histogram::new("lambda_1 per unit path length", "lambda_1 / mean speed")
            }
            .series("learned", finite(&l1p))
            .ref_line(0.0, "0");
            Figure::row(vec![h1.panel(), h2.panel()])
                .panel_size(560, 420)
                .save_png(&ctx.output("lambda_hist.png"))?;
        }
        Ok(())
    }
}
