//! `training_free` (points): the flow v = D s with D a random skew-symmetric matrix (unit Frobenius norm,
//! seeded), which keeps p stationary without any training (spec §6). It is a method in its own right and
//! the baseline `evaluate_flow` compares learned flows against (there it draws its own D per baseline seed
//! with the same function, [`crate::science::skew::random_skew`]).

use super::points_common::{load_points, load_score, stream_panel, subsample, xy};
use super::{StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::{write_json, write_npy, Tensor};
use crate::render::Figure;
use crate::science::skew::{apply, random_skew};

/// The `training_free` kind (points).
pub struct TrainingFree;

impl StageKind for TrainingFree {
    fn name(&self) -> &'static str {
        "training_free"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "Points: the training-free flow v = D s(x, t) with D a seeded random skew-symmetric matrix (|D|_F = 1); \
         writes D and, in 2-D, its streamlines."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("data", "the `dataset` stage (dimension, figure)"),
            ParamSpec::input("score", "the `train_score` stage"),
            ParamSpec::float("noise", 0.1, "noise time t at which the score is taken")
                .probability(),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("skew.json", "`{d, matrix (row-major d x d), noise}`"),
            ("skew.npy", "D as a [d, d] array"),
            (
                "streamlines.png",
                "2-D: streamlines of D s over 256 data points",
            ),
        ]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let data = load_points(ctx.input("data")?)?;
        let score = load_score(ctx.input("score")?)?;
        let d = data.points.d;
        let t = ctx.params.float("noise");
        let m = random_skew(d, ctx.seed());
        write_json(
            &ctx.output("skew.json"),
            &serde_json::json!({ "d": d, "matrix": m, "noise": t }),
        )?;
        write_npy(
            &ctx.output("skew.npy"),
            &Tensor::F64 {
                shape: vec![d, d],
                data: m.clone(),
            },
        )?;
        ctx.metric("d", d);
        ctx.metric("matrix", m.clone());
        if d == 2 {
            let shown = xy(&subsample(
                &data.points,
                256,
                ctx.seed(),
                "training_free/shown",
            ));
            let panel = stream_panel(&format!("training-free D s on {}", data.name), shown, |x| {
                let mut s = score.score(x, t);
                for i in 0..s.n {
                    let row = s.row(i).to_vec();
                    apply(&m, &row, s.row_mut(i));
                }
                s
            })?;
            Figure::row(vec![panel.panel()])
                .panel_size(640, 640)
                .save_png(&ctx.output("streamlines.png"))?;
        }
        Ok(())
    }
}
