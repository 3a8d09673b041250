//! `training_free` (images): the flow v = K ⋆ s with K a skew-adjoint convolution (spec §7), so that
//! ∇·(p K∇log p) = 0 and the data distribution is stationary without any training.
//!
//! `kernel = "rotation"` is the paper's 1x1 channel rotation γ[[0,1],[-1,0]]/√2; `kernel = "spatial"` a
//! seeded random `size` x `size` skew kernel (K[o,i,d] = -K[i,o,-d], Frobenius norm 1). The stage writes the
//! kernel, draws it as the paper's Fig. 8 grid of K[o,i] slices, and draws the Δx/Δt map: v(x) at a held-out
//! pattern beside the true Gray-Scott (du/dt, dv/dt), with their cosine as a metric.

use super::image_common::{flow_map_figure, load_image_score_for, ImageData};
use super::{spread, StageContext};
use crate::config::{ParamSpec, Params};
use crate::io::write_json;
use crate::render::{scalar_map, Colormap, Figure, ImageGrid};
use crate::science::gray_scott::rhs;
use crate::science::skew_kernel::ConvKernel;
use crate::science::turing_eval::direct_cosine;

/// The image parameters of `training_free`.
pub fn params() -> Vec<ParamSpec> {
    vec![
        ParamSpec::choice(
            "kernel",
            &["rotation", "spatial", "channel_mixing"],
            "rotation",
            "(images) skew kernel: the paper's 1x1 channel `rotation` (2 channels), a random `spatial` size x size skew kernel, or a random 1x1 skew `channel_mixing` of all channels (the artificial-life flow: 3x3 over RGB)",
        ),
        ParamSpec::int("gamma", 1, "(images) rotation sign γ (+1 or -1)").min(-1.0).max(1.0),
        ParamSpec::int("size", 5, "(images) spatial kernel side (odd)").min(1.0).max(31.0),
    ]
}

/// Config-time checks of the image parameters.
pub fn check(p: &Params) -> Vec<(&'static str, String)> {
    let mut out = Vec::new();
    if p.int("gamma") == 0 {
        out.push(("gamma", "must be +1 or -1".to_string()));
    }
    if p.usize("size").is_multiple_of(2) {
        out.push(("size", format!("must be odd, got {}", p.usize("size"))));
    }
    out
}

/// The kernel a `training_free` stage with these parameters uses (2 channels: Gray-Scott).
pub fn kernel_of(p: &Params, seed: u64) -> ConvKernel {
    kernel_for(p, seed, 2)
}

/// The kernel a `training_free` stage with these parameters uses on fields of `channels` channels.
pub fn kernel_for(p: &Params, seed: u64, channels: usize) -> ConvKernel {
    match p.str("kernel") {
        "spatial" => ConvKernel::spatial(channels, p.usize("size"), seed),
        "channel_mixing" => ConvKernel::channel_mixing(channels, seed),
        _ => ConvKernel::rotation(p.int("gamma") as f32),
    }
}

/// The Fig. 8-style grid of K[o, i] slices (rows o, columns i) with a shared diverging colour bar.
pub fn kernel_figure(k: &ConvKernel, title: &str) -> anyhow::Result<Figure> {
    let m = k.data.iter().fold(0.0f32, |a, &b| a.max(b.abs())).max(1e-6) as f64;
    let names: &[&str] = if k.c_in == 3 {
        &["R", "G", "B"]
    } else {
        &["u", "v"]
    };
    let mut cells = Vec::new();
    for o in 0..k.c_out {
        for i in 0..k.c_in {
            let s = k.size;
            let slice = &k.data[(o * k.c_in + i) * s * s..(o * k.c_in + i + 1) * s * s];
            let (img, _) = scalar_map(slice, s, s, Colormap::Diverging, Some((-m, m)))?;
            cells.push(img.upscale((200 / s).max(1) as u32));
        }
    }
    let label = |c: usize| names.get(c).map(|n| n.to_string()).unwrap_or(c.to_string());
    Ok(ImageGrid::new(title, k.c_in, cells)
        .labels(
            (0..k.c_out).map(|o| format!("out {}", label(o))).collect(),
            (0..k.c_in).map(|i| format!("in {}", label(i))).collect(),
        )
        .colorbar(Colormap::Diverging, (-m, m), "K[o, i]")
        .into_figure(200))
}

/// Writes the kernel and its figures.
pub fn run(ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
    let p = ctx.params;
    let data = ImageData::open(ctx.input("data")?)?;
    if data.channels != 2 {
        return super::alife_common::training_free_icons(ctx, &data);
    }
    let model = load_image_score_for(ctx.input("score")?, ctx.device, data.h, data.w)?;
    let k = kernel_of(p, ctx.seed());
    let what = match p.str("kernel") {
        "spatial" => format!(
            "random spatial {0}x{0} skew kernel (seed {1})",
            k.size,
            ctx.seed()
        ),
        _ => format!("rotation γ = {:+}", p.int("gamma")),
    };
    write_json(
        &ctx.output("kernel.json"),
        &serde_json::json!({ "c_out": k.c_out, "c_in": k.c_in, "size": k.size, "data": k.data,
                             "kind": p.str("kernel"), "description": what }),
    )?;
    ctx.metric("skew_defect", k.skew_defect());
    ctx.metric("frobenius_norm", k.frobenius_norm());
    kernel_figure(&k, &format!("skew kernel K: {what}"))?.save_png(&ctx.output("kernel.png"))?;

    let (h, w) = (data.h, data.w);
    let pats = data.test_patterns(16)?;
    let np = pats.len() / data.item_len();
    let score = |x: &[f32], out: &mut [f32]| model.score(x, x.len() / (2 * h * w), h, w, out);
    let cos = direct_cosine(&data.params, pats, h, w, &k, &score);
    ctx.metric("direct_cosine", spread(&cos));
    ctx.log(format!(
        "{what}: cos(K s, Gray-Scott rhs) over {np} held-out patterns {:+.3} (positive on {}/{np})",
        cos.iter().sum::<f64>() / np as f64,
        cos.iter().filter(|&&c| c > 0.0).count()
    ));

    // The Δx/Δt map at the first held-out pattern.
    let x0 = &pats[..data.item_len()];
    let mut s = vec![0.0f32; x0.len()];
    model.score(x0, 1, h, w, &mut s);
    let mut v = vec![0.0f32; x0.len()];
    k.apply(&s, h, w, &mut v);
    let phys: Vec<f32> = x0.iter().map(|x| 0.5 * (x + 1.0)).collect();
    let r = rhs(&data.params, &phys, h, w);
    let c0 = crate::science::turing_eval::cosine(&v, &r);
    let title = format!(
        "Δx/Δt of a held-out {} pattern: v = K ⋆ s vs Gray-Scott (cos {c0:+.2})",
        data.preset
    );
    flow_map_figure(title, x0, &v, &r, h, w)?.save_png(&ctx.output("flow_map.png"))?;
    Ok(())
}
