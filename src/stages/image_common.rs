//! Helpers shared by the image (Turing) stage kinds: reading a `gray_scott` stage's fields memory-mapped,
//! loading the score checkpoint and the flow kernel of upstream stages, the DDPM noise level of a timestep,
//! and the paper's colouring of Gray-Scott fields.
//!
//! The image kinds read their data through [`ImageData::open`], which checks that the input is a
//! `gray_scott` stage and keeps the file mapped: training samples batches straight from the map, so a
//! paper-scale dataset (1 GB) is never copied into memory. An `icons` stage (artificial life, spec §8) is
//! an image dataset too: 3 RGB channels instead of (u, v), no Gray-Scott rates, drawn as plain RGB.

use anyhow::{bail, Context};

use super::InputArtifact;
use crate::io::{read_tensors, TensorFile};
use crate::nn::device::ComputeDevice;
use crate::nn::ImageScore;
use crate::render::{
    scalar_map, turing_image, Colormap, FieldRange, Figure, ImageGrid, RgbImage, TuringColors,
};
use crate::science::gray_scott::{preset, GrayScottParams};
use crate::science::skew_kernel::ConvKernel;

/// The input kinds that carry image fields.
pub const IMAGE_KINDS: &[&str] = &["gray_scott", "icons"];

/// Whether an input of kind `kind` carries images (as opposed to points).
pub fn is_image_kind(kind: &str) -> bool {
    IMAGE_KINDS.contains(&kind)
}

/// A `gray_scott` stage's dataset, memory-mapped.
pub struct ImageData {
    file: TensorFile,
    /// Gray-Scott rates the fields were generated with.
    pub params: GrayScottParams,
    /// The preset's name.
    pub preset: String,
    /// Height and width.
    pub h: usize,
    /// Width.
    pub w: usize,
    /// Channels per field: 2 (u, v) for `gray_scott`, 3 (RGB) for `icons`.
    pub channels: usize,
}

impl ImageData {
    /// Opens `data.safetensors` of a `gray_scott` stage.
    pub fn open(input: &InputArtifact) -> anyhow::Result<Self> {
        if !is_image_kind(&input.kind) {
            bail!(
                "input `{}` is a `{}` stage; the image kinds need a `gray_scott` stage",
                input.stage,
                input.kind
            );
        }
        let file = read_tensors(&input.dir.join("data.safetensors"))?;
        let meta = file.metadata();
        let rates: [f32; 4] = if input.kind == "icons" {
            [0.0; 4]
        } else {
            serde_json::from_str(
                meta.get("rates")
                    .context("dataset metadata has no `rates`")?,
            )
            .context("parsing `rates` metadata")?
        };
        let preset = meta
            .get("preset")
            .or_else(|| meta.get("icon"))
            .cloned()
            .unwrap_or_default();
        let (shape, _) = file.f32_view("x", 4)?;
        Ok(Self {
            params: GrayScottParams {
                du: rates[0],
                dv: rates[1],
                f: rates[2],
                k: rates[3],
            },
            preset,
            h: shape[2],
            w: shape[3],
            channels: shape[1],
            file,
        })
    }

    /// The training fields `[N, 2, H, W]` in model space, borrowed from the map.
    pub fn train(&self) -> anyhow::Result<&[f32]> {
        Ok(self.file.f32_view("x", 4)?.1)
    }

    /// The held-out fields `[M, 2, H, W]` (never flat) for evaluation.
    pub fn test(&self) -> anyhow::Result<&[f32]> {
        Ok(self.file.f32_view("test", 4)?.1)
    }

    /// Values per field.
    pub fn item_len(&self) -> usize {
        self.channels * self.h * self.w
    }

    /// One field drawn for figures, `px` pixels on its longer side: the paper's Turing colours for
    /// `gray_scott` fields ([`paper_image_px`]), plain RGB for `icons` canvases.
    pub fn image_px(&self, field: &[f32], px: usize) -> anyhow::Result<RgbImage> {
        if self.channels == 3 {
            let img = crate::render::rgb_canvas(field, self.h, self.w, FieldRange::MinusOneOne)?;
            let m = self.h.max(self.w);
            Ok(img.resize_nearest((px * self.w / m) as u32, (px * self.h / m) as u32))
        } else {
            paper_image_px(field, self.h, self.w, px)
        }
    }

    /// The first `n` held-out fields (all of them if fewer), with a clear error when there are none.
    pub fn test_patterns(&self, n: usize) -> anyhow::Result<&[f32]> {
        let test = self.test()?;
        let have = test.len() / self.item_len();
        if have == 0 {
            bail!(
                "the dataset has no living held-out patterns (all died to the flat state): use a larger \
                 `size` or more `test_samples` in the `gray_scott` stage"
            );
        }
        Ok(&test[..n.min(have) * self.item_len()])
    }
}

/// The preset parameters, or an error naming the preset.
pub fn preset_params(name: &str) -> anyhow::Result<GrayScottParams> {
    preset(name).with_context(|| format!("unknown Gray-Scott preset `{name}`"))
}

/// ā_t of the DDPM schedule the paper uses (100 steps, β linear from 1e-4 to 0.1): ∏_{i ≤ t} (1 - β_i),
/// in the f32 the local model works in ([`crate::science::ddpm_schedule`]). Timestep 10 gives 0.94478
/// (σ = sqrt(1 - ā) = 0.2350).
pub fn abar(timestep: usize) -> f32 {
    crate::science::ddpm_schedule::ddpm_abar(timestep) as f32
}

/// Loads the score checkpoint of a `train_score` (images) stage (the local model or the UNet, which goes
/// onto the pipeline's `device`).
pub fn load_image_score(
    input: &InputArtifact,
    device: ComputeDevice,
) -> anyhow::Result<ImageScore> {
    if input.kind != "train_score" {
        bail!(
            "input `{}` is a `{}` stage; expected a `train_score` stage",
            input.stage,
            input.kind
        );
    }
    ImageScore::load(&input.dir.join("score.safetensors"), device).with_context(|| {
        format!(
            "input `{}` holds no image score model (was it trained on points?)",
            input.stage
        )
    })
}

/// [`load_image_score`] for fields of `h x w`, checking that they fit the model.
pub fn load_image_score_for(
    input: &InputArtifact,
    device: ComputeDevice,
    h: usize,
    w: usize,
) -> anyhow::Result<ImageScore> {
    let model = load_image_score(input, device)?;
    model
        .check_size(h, w)
        .with_context(|| format!("score of input `{}`", input.stage))?;
    Ok(model)
}

/// Loads the kernel of a `training_free` (images) stage.
pub fn load_kernel(input: &InputArtifact) -> anyhow::Result<ConvKernel> {
    if input.kind != "training_free" {
        bail!(
            "input `{}` is a `{}` stage; expected a `training_free` stage",
            input.stage,
            input.kind
        );
    }
    let v: serde_json::Value = crate::io::read_json(&input.dir.join("kernel.json"))
        .with_context(|| format!("input `{}` holds no image kernel", input.stage))?;
    let get = |k: &str| -> anyhow::Result<usize> {
        v[k].as_u64()
            .map(|x| x as usize)
            .with_context(|| format!("kernel.json: missing `{k}`"))
    };
    let data: Vec<f32> =
        serde_json::from_value(v["data"].clone()).context("kernel.json: `data`")?;
    let (c_out, c_in, size) = (get("c_out")?, get("c_in")?, get("size")?);
    if size % 2 == 0 || data.len() != c_out * c_in * size * size {
        bail!(
            "kernel.json: {c_out}x{c_in}x{size}x{size} kernel with {} weights",
            data.len()
        );
    }
    Ok(ConvKernel::new(c_out, c_in, size, data))
}

/// Colours one field `[2, H, W]` in model space as the paper's Figure 3 does: background `#9BE1E1` where
/// there is no pattern (the flat state u = 1, v = 0), white where u is depleted, blue `#628FCE` where v is
/// present. (`render::TuringColors` blends u itself, which paints the flat state white; here u's depletion
/// takes its place, stretched over the field's own range of u so that low-feed presets such as spirals,
/// whose u is depleted everywhere, keep their contrast; a flat field stays background.)
pub fn paper_image(field: &[f32], h: usize, w: usize) -> anyhow::Result<RgbImage> {
    let hw = h * w;
    let u: Vec<f32> = field[..hw].iter().map(|x| 0.5 * (x + 1.0)).collect();
    let (lo, hi) = u
        .iter()
        .fold((f32::INFINITY, f32::NEG_INFINITY), |(a, b), &x| {
            (a.min(x), b.max(x))
        });
    // Depletion below the field's highest u, scaled so its most depleted point is 1 (at most x4).
    let top = hi;
    let span = (top - lo).max(0.25);
    let mut shown = vec![0.0f32; 2 * hw];
    for i in 0..hw {
        shown[i] = ((top - u[i]) / span).clamp(0.0, 1.0);
        shown[hw + i] = (0.5 * (field[hw + i] + 1.0)).clamp(0.0, 1.0);
    }
    Ok(turing_image(
        &shown,
        h,
        w,
        FieldRange::ZeroOne,
        &TuringColors::default(),
    )?)
}

/// [`paper_image`] scaled (nearest neighbour, so pixels stay crisp) to `px` pixels on its longer side.
pub fn paper_image_px(field: &[f32], h: usize, w: usize, px: usize) -> anyhow::Result<RgbImage> {
    let img = paper_image(field, h, w)?;
    let m = h.max(w);
    Ok(img.resize_nearest((px * w / m) as u32, (px * h / m) as u32))
}

/// The Δx/Δt map (the paper's Fig. 1 Turing panel): pattern `x0`, then the flow's `v` and the true
/// Gray-Scott rates `r` per channel (u, v), on a diverging colour map; shared by every flow kind.
pub fn flow_map_figure(
    title: String,
    x0: &[f32],
    v: &[f32],
    r: &[f32],
    h: usize,
    w: usize,
) -> anyhow::Result<Figure> {
    let hw = h * w;
    let px = 220;
    let mut cells = vec![paper_image_px(x0, h, w, px)?];
    for (field, ch) in [(v, 0), (v, 1), (r, 0), (r, 1)] {
        let (img, _) = scalar_map(
            &field[ch * hw..(ch + 1) * hw],
            h,
            w,
            Colormap::Diverging,
            None,
        )?;
        cells.push(img.resize_nearest(px as u32, px as u32));
    }
    let labels = [
        "pattern",
        "flow: du/dt",
        "flow: dv/dt",
        "Gray-Scott: du/dt",
        "Gray-Scott: dv/dt",
    ];
    Ok(ImageGrid::new(title, 5, cells)
        .labels(Vec::new(), labels.iter().map(|l| l.to_string()).collect())
        .into_figure(px as u32))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// spec §7: ā_10 = 0.94478 for the linear schedule 1e-4 -> 0.1 over 100 steps.
    #[test]
    fn abar_of_timestep_10_matches_the_spec() {
        assert!((abar(10) - 0.94478).abs() < 5e-5, "{}", abar(10));
    }
}
