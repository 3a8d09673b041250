//! `training_free`: the flow v = (skew operator) s that keeps p stationary without training, for points (a
//! `dataset` input, this file) or images (a `gray_scott` input: a skew-adjoint convolution, `image_flow.rs`).
//!
//! Points: the flow v = D s with D a random skew-symmetric matrix (unit Frobenius norm,
//! seeded), which keeps p stationary without any training (spec §6). It is a method in its own right and
//! the baseline `evaluate_flow` compares learned flows against (there it draws its own D per baseline seed
//! with the same function, [`crate::science::skew::random_skew`]).

use super::points_common::{load_points, load_score, stream_panel, subsample, xy};
use std::collections::{BTreeMap, BTreeSet};

use super::image_common::is_image_kind;
use super::train_score::wrong_input_params;
use super::{image_flow, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::{write_json, write_npy, Tensor};
use crate::render::Figure;
use crate::science::skew::{apply, random_skew};

/// The `training_free` kind (points and images).
pub struct TrainingFree;

impl StageKind for TrainingFree {
    fn name(&self) -> &'static str {
        "training_free"
    }
    fn version(&self) -> u32 {
        2
    }
    fn about(&self) -> &'static str {
        "Points (a `dataset` input): the training-free flow v = D s(x, t) with D a seeded random skew-symmetric \
         matrix (|D|_F = 1); writes D and, in 2-D, its streamlines. Images (a `gray_scott` input): v = K ⋆ s \
         with K a skew-adjoint convolution (the paper's channel rotation, or a random spatial skew kernel); \
         writes K, its Fig. 8-style slices and the Δx/Δt map."
    }
    fn params(&self) -> Vec<ParamSpec> {
        let mut v = vec![
            ParamSpec::input(
                "data",
                "the `dataset` (points) or `gray_scott` (images) stage",
            ),
            ParamSpec::input("score", "the `train_score` stage"),
            ParamSpec::float(
                "noise",
                0.1,
                "(points) noise time t at which the score is taken",
            )
            .probability(),
            ParamSpec::seed(),
        ];
        v.extend(image_flow::params());
        v
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            ("skew.json", "(points) `{d, matrix (row-major d x d), noise}`"),
            ("skew.npy", "(points) D as a [d, d] array"),
            (
                "streamlines.png",
                "(points) 2-D: streamlines of D s over 256 data points",
            ),
            ("kernel.json", "(images) `{c_out, c_in, size, data [c_out, c_in, size, size]}`"),
            ("kernel.png", "(images) the kernel's K[o, i] slices (Fig. 8 style)"),
            (
                "flow_map.png",
                "(images) the Δx/Δt map: v = K ⋆ s at a held-out pattern beside the true Gray-Scott rates",
            ),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        image_flow::check(p)
    }
    fn check_wiring(
        &self,
        p: &Params,
        explicit: &BTreeSet<String>,
        input_kinds: &BTreeMap<String, &'static str>,
    ) -> Vec<(&'static str, String)> {
        let mut out = wrong_input_params(self.params(), explicit, input_kinds);
        if input_kinds.get("data") == Some(&"icons") && p.str("kernel") == "rotation" {
            out.push((
                "kernel",
                "the `rotation` kernel mixes 2 channels; creature canvases have 3 (RGB): use \
                 `kernel = \"channel_mixing\"` (the paper's artificial-life flow) or `\"spatial\"`"
                    .to_string(),
            ));
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        if is_image_kind(&ctx.input("data")?.kind) {
            return image_flow::run(ctx);
        }
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
