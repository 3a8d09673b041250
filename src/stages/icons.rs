//! `icons`: the artificial-life dataset (spec §8) — a creature (a user's PNG with transparency, or one of the
//! built-ins `dot`, `dots`, `firefly`, `taiji`) pasted at random centres and rotations on white periodic RGB
//! canvases, never overlapping (pixel-exact), scaled to [-1, 1].
//!
//! The stage is thin: it resolves the icon (reading the PNG through `io::icon`, whose errors name the file;
//! the file is a `path` parameter, so its bytes are part of the cache key), draws the canvases with
//! `science::icons` in chunks streamed to `data.safetensors` (paper scale is 1.6 GB and never held in
//! memory), and records the density the flow should reproduce: icons per canvas and per 128² pixels, and
//! the share of the canvas they cover. A contact sheet and the icon itself (the figures' inset) are drawn.

use std::collections::BTreeMap;

use super::{spread, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::icon::read_icon;
use crate::io::write_f32_streamed;
use crate::render::{contact_sheet, rgb_canvas, FieldRange, RgbImage};
use crate::science::icons::{
    builtin_icon, generate_canvases, BuiltinIcon, CanvasConfig, Icon, IconSource, Sampling,
};

/// The `icons` kind.
pub struct Icons;

/// Canvases generated together (bounds memory: 64 x 3 x 128² f32 = 12 MiB).
const CHUNK: usize = 64;

/// Built-in icon names, in the order of spec §8.
pub const BUILTINS: &[&str] = &["dot", "dots", "firefly", "taiji"];

impl StageKind for Icons {
    fn name(&self) -> &'static str {
        "icons"
    }
    fn version(&self) -> u32 {
        1
    }
    fn about(&self) -> &'static str {
        "Artificial-life snapshots (spec §8): a creature icon (a user's PNG with transparency via `path`, or a \
         built-in: dot, dots, firefly, taiji) pasted at uniformly random centres and rotations on white periodic \
         RGB canvases with pixel-exact non-overlap, scaled to [-1, 1]; records the creature density."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::choice("icon", BUILTINS, "firefly", "the built-in creature (ignored when `path` is set)"),
            ParamSpec::path(
                "path",
                "a PNG with transparency to use as the creature (its alpha is its shape), relative to the pipeline file",
            )
            .optional(),
            ParamSpec::int("size", 128, "canvas side in pixels (paper: 128)").min(8.0),
            ParamSpec::int("icons_min", 7, "fewest icons per canvas (paper: 7)").min(1.0),
            ParamSpec::int("icons_max", 11, "most icons per canvas (paper: 11)").min(1.0),
            ParamSpec::int("icon_min", 12, "smallest icon side in pixels (paper: 12)").min(3.0),
            ParamSpec::int("icon_max", 22, "largest icon side in pixels (paper: 22)").min(3.0),
            ParamSpec::bool("rotate", true, "turn every icon by a uniform random angle"),
            ParamSpec::int("samples", 512, "training canvases (paper: 8,192)").positive(),
            ParamSpec::int("test_samples", 8, "held-out canvases").min(1.0),
            ParamSpec::seed(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "data.safetensors",
                "`x` [N, 3, H, W] training canvases and `test` [M, 3, H, W] held-out ones (f32 RGB in [-1, 1], white \
                 background = 1); metadata: icon, density",
            ),
            ("icon.png", "the creature over white (the figures' inset)"),
            ("samples.png", "contact sheet of the first training canvases"),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if p.usize("icons_min") > p.usize("icons_max") {
            out.push(("icons_min", "must not exceed `icons_max`".to_string()));
        }
        if p.usize("icon_min") > p.usize("icon_max") {
            out.push(("icon_min", "must not exceed `icon_max`".to_string()));
        }
        if p.usize("icon_max") > p.usize("size") {
            out.push(("icon_max", "must not exceed the canvas `size`".to_string()));
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let (source, name) = icon_source(ctx)?;
        let size = p.usize("size");
        let cfg = CanvasConfig {
            height: size,
            width: size,
            icons: (p.usize("icons_min"), p.usize("icons_max")),
            icon_size: (p.usize("icon_min"), p.usize("icon_max")),
            rotate: p.bool("rotate"),
            sampling: Sampling::Bilinear,
            max_tries: 200,
        };
        let (n_train, n_test) = (p.usize("samples"), p.usize("test_samples"));
        let total = n_train + n_test;
        let len = 3 * size * size;
        ctx.log(format!(
            "`{name}`: {n_train} + {n_test} canvases of {size}x{size}, {}-{} icons of {}-{} px, rotate {}",
            cfg.icons.0, cfg.icons.1, cfg.icon_size.0, cfg.icon_size.1, cfg.rotate
        ));
        // Canvas i of the seed's stream: test canvases are 0..n_test, training n_test.. (as `gray_scott`).
        let seed = ctx.seed();
        let mut placed = Vec::with_capacity(total);
        let mut coverage = Vec::with_capacity(total);
        let mut requested = 0usize;
        let mut shown: Vec<Vec<f32>> = Vec::new();
        let bar = ctx.progress(total as u64, "canvases");
        let meta_density = |placed: &[f64]| placed.iter().sum::<f64>() / placed.len().max(1) as f64;
        // Pass 1 for the statistics is the same generation as the write below; canvases are cheap, so the
        // metadata (density) is computed first and the canvases are regenerated while streaming.
        for start in (0..total).step_by(CHUNK) {
            let n = CHUNK.min(total - start);
            for c in generate_canvases(&source, &cfg, seed, start as u64, n) {
                placed.push(c.placed.len() as f64);
                requested += c.requested;
                coverage.push(
                    c.owner.iter().filter(|&&o| o != u16::MAX).count() as f64
                        / (size * size) as f64,
                );
                if placed.len() > n_test && shown.len() < 24 {
                    shown.push(c.data);
                }
            }
            bar.inc(n as u64);
        }
        bar.finish();
        let per_canvas = meta_density(&placed);
        let per_128 = per_canvas * (128.0 * 128.0) / (size * size) as f64;
        let meta = BTreeMap::from([
            ("icon".to_string(), name.clone()),
            ("icons_per_canvas".to_string(), format!("{per_canvas:.4}")),
            ("canvas".to_string(), size.to_string()),
            ("range".to_string(), "[-1, 1] RGB, white = 1".to_string()),
        ]);
        let tensors = vec![
            ("x".to_string(), vec![n_train, 3, size, size]),
            ("test".to_string(), vec![n_test, 3, size, size]),
        ];
        write_f32_streamed(
            &ctx.output("data.safetensors"),
            &tensors,
            &meta,
            &mut |tensor, write| {
                let (lo, hi) = if tensor == "x" {
                    (n_test, total)
                } else {
                    (0, n_test)
                };
                for start in (lo..hi).step_by(CHUNK) {
                    let n = CHUNK.min(hi - start);
                    for c in generate_canvases(&source, &cfg, seed, start as u64, n) {
                        debug_assert_eq!(c.data.len(), len);
                        write(&c.data)?;
                    }
                }
                Ok(())
            },
        )?;
        ctx.metric("icons_per_canvas", spread(&placed));
        ctx.metric("icons_per_128x128", per_128);
        ctx.metric("coverage", spread(&coverage));
        ctx.metric(
            "placed_share",
            placed.iter().sum::<f64>() / requested.max(1) as f64,
        );
        ctx.metric("train_samples", n_train);
        ctx.metric("test_samples", n_test);
        ctx.log(format!(
            "{per_canvas:.2} icons per canvas ({per_128:.2} per 128x128), covering {:.1} % of the canvas; {} of \
             {requested} requested icons placed",
            100.0 * coverage.iter().sum::<f64>() / coverage.len() as f64,
            placed.iter().sum::<f64>()
        ));
        icon_image(&source, 96).save_png(&ctx.output("icon.png"))?;
        let images: Vec<RgbImage> = shown
            .iter()
            .map(|f| {
                let img = rgb_canvas(f, size, size, FieldRange::MinusOneOne)?;
                Ok(img.upscale((128 / size).max(1) as u32))
            })
            .collect::<anyhow::Result<_>>()?;
        contact_sheet(&images, 6, 4, plotters::style::RGBColor(60, 60, 60))?
            .save_png(&ctx.output("samples.png"))?;
        Ok(())
    }
}

/// The creature of an `icons` stage's parameters, and its name (the built-in's, or the PNG's file name).
fn icon_source(ctx: &StageContext<'_>) -> anyhow::Result<(IconSource, String)> {
    let p = ctx.params;
    if p.opt_str("path").is_some() {
        let path = ctx.path_param("path");
        let icon = read_icon(&path)?;
        let name = path
            .file_stem()
            .map(|s| s.to_string_lossy().into_owned())
            .unwrap_or_else(|| "icon".into());
        Ok((IconSource::Image(icon), name))
    } else {
        let b =
            BuiltinIcon::from_name(p.str("icon")).expect("the schema allows built-in names only");
        Ok((IconSource::Builtin(b), b.name().to_string()))
    }
}

/// The creature drawn over white at `px` pixels, upright.
pub fn icon_image(source: &IconSource, px: usize) -> RgbImage {
    let icon: Icon = match source {
        IconSource::Builtin(b) => builtin_icon(*b, px, 0.0),
        IconSource::Image(_) => source.render(px, 0.0, Sampling::Bilinear),
    };
    rgb_canvas(
        &icon.over_white(),
        icon.height,
        icon.width,
        FieldRange::MinusOneOne,
    )
    .expect("an icon is a non-empty [3, h, w] image")
}
