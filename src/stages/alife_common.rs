//! Helpers shared by the artificial-life stage kinds (spec §8): the training-free flow on creature
//! canvases (a random 1x1 skew channel-mixing kernel over RGB), reading a rollout's smoothed frames, and
//! drawing frames with tracks and the creature inset.
//!
//! The kinds themselves stay generic (`training_free` and `simulate` dispatch here when their data input is
//! an `icons` stage); the per-run files (`frames.safetensors` of `simulate`, `tracks.json` of `track`) are
//! read only through this module, so their layout is written down once.

use std::path::Path;

use anyhow::{bail, Context};

use super::image_common::ImageData;
use super::image_flow::{kernel_figure, kernel_for};
use super::{InputArtifact, StageContext};
use crate::io::{read_tensors, write_json};
use crate::render::{draw_tracks, rgb_canvas, FieldRange, RgbImage, Track as DrawnTrack, PALETTE};
use crate::science::tracking::{detect, CreatureLook, DetectConfig, Track};

/// `training_free` on an `icons` dataset: writes the skew channel-mixing kernel over the RGB channels.
pub fn training_free_icons(ctx: &mut StageContext<'_>, data: &ImageData) -> anyhow::Result<()> {
    let p = ctx.params;
    if p.str("kernel") == "rotation" {
        bail!(
            "the `rotation` kernel mixes 2 channels, but `{}` has {} (RGB): use `kernel = \"channel_mixing\"` \
             (the paper's artificial-life flow) or `\"spatial\"`",
            ctx.input("data")?.stage,
            data.channels
        );
    }
    super::image_common::load_image_score(
        ctx.input("score")?,
        crate::nn::device::ComputeDevice::Cpu,
    )?;
    let k = kernel_for(p, ctx.seed(), data.channels);
    let what = match p.str("kernel") {
        "spatial" => format!(
            "random spatial {0}x{0} skew kernel over RGB (seed {1})",
            k.size,
            ctx.seed()
        ),
        _ => format!(
            "random skew {0}x{0} channel mixing over RGB (seed {1})",
            data.channels,
            ctx.seed()
        ),
    };
    write_json(
        &ctx.output("kernel.json"),
        &serde_json::json!({ "c_out": k.c_out, "c_in": k.c_in, "size": k.size, "data": k.data,
                             "kind": p.str("kernel"), "description": what }),
    )?;
    ctx.metric("skew_defect", k.skew_defect());
    ctx.metric("frobenius_norm", k.frobenius_norm());
    ctx.log(format!("{what}: K = {:?}", k.data));
    kernel_figure(&k, &format!("skew kernel K: {what}"))?.save_png(&ctx.output("kernel.png"))?;
    Ok(())
}

/// The smoothed frames of one `simulate` stage on creatures.
pub struct Rollout {
    /// EMA of the denoised frames, `[T, P, 3, H, W]` flattened.
    pub ema: Vec<f32>,
    /// Frames T.
    pub frames: usize,
    /// Canvases rolled out together P.
    pub canvases: usize,
    /// Canvas height.
    pub h: usize,
    /// Canvas width.
    pub w: usize,
    /// SDE steps between frames.
    pub every: usize,
    /// SDE time step.
    pub dt: f64,
    /// The creature's name.
    pub icon: String,
    /// The training canvas side (for the density reference).
    pub train_size: usize,
    /// Training creatures per canvas.
    pub train_icons: f64,
    /// Training canvases `[R, 3, train_size, train_size]`, flat.
    pub reference: Vec<f32>,
    /// R.
    pub reference_canvases: usize,
    /// The first frames come from the annealed start (noise levels, not SDE time); 0 without one.
    pub burn_in_frames: usize,
}

impl Rollout {
    /// Reads `frames.safetensors` of a `simulate` stage on an `icons` dataset.
    pub fn open(input: &InputArtifact) -> anyhow::Result<Self> {
        if input.kind != "simulate" {
            bail!(
                "input `{}` is a `{}` stage; expected a `simulate` stage",
                input.stage,
                input.kind
            );
        }
        let file = read_tensors(&input.dir.join("frames.safetensors"))?;
        let meta = file.metadata();
        if meta.get("data_kind").map(String::as_str) != Some("icons") {
            bail!(
                "input `{}` rolled out a `{}` dataset; tracking needs creatures (an `icons` dataset)",
                input.stage,
                meta.get("preset").cloned().unwrap_or_default()
            );
        }
        let num = |k: &str| -> anyhow::Result<f64> {
            meta.get(k)
                .with_context(|| format!("frames metadata has no `{k}`"))?
                .parse::<f64>()
                .with_context(|| format!("frames metadata `{k}`"))
        };
        let (shape, ema) = file.f32("ema", 5)?;
        let (ref_shape, reference) = file.f32("reference", 4).with_context(|| {
            format!(
                "input `{}` has no training canvases (`reference`): rerun it with this version of eqflow",
                input.stage
            )
        })?;
        Ok(Self {
            ema,
            frames: shape[0],
            canvases: shape[1],
            h: shape[3],
            w: shape[4],
            every: num("every")? as usize,
            dt: num("dt")?,
            icon: meta.get("preset").cloned().unwrap_or_default(),
            train_size: num("train_size")? as usize,
            train_icons: num("train_icons_per_canvas")?,
            reference,
            reference_canvases: ref_shape[0],
            burn_in_frames: meta
                .get("burn_in_frames")
                .map(|v| v.parse::<usize>())
                .transpose()
                .context("frames metadata `burn_in_frames`")?
                .unwrap_or(0),
        })
    }

    /// The training creatures as the detector `det` sees them, from one pass over the training canvases:
    /// their look (`None` if none was found there: a detector setting that misses the creatures) and the
    /// blobs per training canvas scaled to this canvas — the count a perfect rollout would show (below
    /// [`Self::expected_count`] where touching icons merge).
    pub fn creature_reference(&self, det: &DetectConfig) -> (Option<CreatureLook>, f64) {
        let side = self.train_size;
        let blobs: Vec<_> = self
            .reference
            .chunks(3 * side * side)
            .take(self.reference_canvases)
            .flat_map(|c| detect(c, side, side, det))
            .collect();
        let per_canvas = blobs.len() as f64 / self.reference_canvases.max(1) as f64;
        (
            CreatureLook::from_blobs(&blobs),
            per_canvas * (self.h * self.w) as f64 / (side * side) as f64,
        )
    }

    /// Frame `t` of canvas `p`, `[3, H, W]`.
    pub fn frame(&self, t: usize, p: usize) -> &[f32] {
        let len = 3 * self.h * self.w;
        let i = (t * self.canvases + p) * len;
        &self.ema[i..i + len]
    }

    /// The SDE time of frame `f` (see [`frame_time`]).
    pub fn time_of(&self, f: usize) -> f64 {
        frame_time(f, self.burn_in_frames, self.every as f64 * self.dt)
    }

    /// Creatures per canvas the training density predicts on this (larger) canvas.
    pub fn expected_count(&self) -> f64 {
        self.train_icons * (self.h * self.w) as f64 / (self.train_size * self.train_size) as f64
    }
}

/// The time of frame `f` in a creature rollout whose first `burn_in` frames come from the annealed start,
/// frames `interval` time units apart: the flow's frames count SDE time from the end of the burn-in (its
/// first frame is at one interval: the SDE's start is the burn-in's last state), and the burn-in's frames,
/// which are noise levels rather than SDE time, sit at t <= 0 with the same spacing, ending at 0.
pub fn frame_time(f: usize, burn_in: usize, interval: f64) -> f64 {
    if burn_in == 0 {
        f as f64 * interval
    } else {
        (f as f64 + 1.0 - burn_in as f64) * interval
    }
}

/// One canvas's frame drawn `scale` times enlarged, with each track's positions up to `frame` (the last
/// `tail` frames of it) drawn on top.
pub fn frame_with_tracks(
    rgb: &[f32],
    h: usize,
    w: usize,
    tracks: &[Track],
    frame: usize,
    tail: usize,
    scale: u32,
) -> anyhow::Result<RgbImage> {
    let mut img = rgb_canvas(rgb, h, w, FieldRange::MinusOneOne)?.upscale(scale);
    let drawn = drawn_tracks(tracks, h, w, frame, tail);
    draw_tracks(&mut img, &drawn, scale as f64, 2.0);
    Ok(img)
}

/// Tracks seen at `frame` as drawable polylines of their last `tail` frames (wrapped into the canvas;
/// `draw_tracks` breaks the line where it wraps). The colour follows the track's index, so it is stable
/// over an animation.
pub fn drawn_tracks(
    tracks: &[Track],
    h: usize,
    w: usize,
    frame: usize,
    tail: usize,
) -> Vec<DrawnTrack> {
    tracks
        .iter()
        .enumerate()
        .filter(|(_, t)| {
            let (a, b) = t.span();
            a <= frame && b + 1 >= frame && t.len() >= 2
        })
        .map(|(k, t)| {
            let wrapped = t.wrapped(h, w);
            let points: Vec<[f64; 2]> = t
                .frames
                .iter()
                .zip(wrapped)
                .filter(|(&f, _)| f <= frame && f + tail >= frame)
                .map(|(_, p)| p)
                .collect();
            DrawnTrack {
                points,
                color: Some(PALETTE[k % PALETTE.len()]),
            }
        })
        .filter(|t| !t.points.is_empty())
        .collect()
}

/// Reads a PNG (the creature inset) written by an upstream stage.
pub fn read_png(path: &Path) -> anyhow::Result<RgbImage> {
    let decoder = png::Decoder::new(std::io::BufReader::new(
        std::fs::File::open(path).with_context(|| format!("opening {}", path.display()))?,
    ));
    let mut reader = decoder.read_info()?;
    let mut buf = vec![0; reader.output_buffer_size()];
    let info = reader.next_frame(&mut buf)?;
    let ch = info.color_type.samples();
    let mut rgb = Vec::with_capacity((info.width * info.height * 3) as usize);
    for px in buf[..info.buffer_size()].chunks(ch) {
        match ch {
            1 | 2 => rgb.extend_from_slice(&[px[0], px[0], px[0]]),
            _ => rgb.extend_from_slice(&px[..3]),
        }
    }
    Ok(RgbImage::from_raw(info.width, info.height, rgb)?)
}

#[cfg(test)]
mod tests {
    use super::frame_time;

    #[test]
    fn burn_in_frames_sit_at_non_positive_times_and_the_flow_counts_from_its_end() {
        // No burn-in: frame f is f intervals of SDE time.
        assert_eq!(frame_time(0, 0, 0.25), 0.0);
        assert_eq!(frame_time(4, 0, 0.25), 1.0);
        // 3 burn-in frames: at -0.5, -0.25, 0; the flow's first frame (one interval in) at 0.25.
        let t: Vec<f64> = (0..5).map(|f| frame_time(f, 3, 0.25)).collect();
        assert_eq!(t, vec![-0.5, -0.25, 0.0, 0.25, 0.5]);
    }
}
