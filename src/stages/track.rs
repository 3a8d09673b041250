//! `track`: finds the creatures in a creature rollout's smoothed frames and follows them over time (spec §8).
//!
//! Each frame (EMA of Tweedie-denoised states, as the paper displays them) is searched for blobs that are
//! clearly not white background (`science::tracking::detect`: periodic connected components, holes filled,
//! an area window), and detections are linked frame to frame by nearest periodic neighbours within
//! `max_disp` pixels, with positions unwrapped so a creature crossing an edge moves continuously. Every
//! canvas of the rollout is tracked separately. Outputs the tracks with their velocities, the paper's panel
//! (the last smoothed frame with the tracks' recent paths and the creature as an inset) and an animated GIF
//! of the rollout with the tracks growing.

use anyhow::Context;

use super::alife_common::{drawn_tracks, frame_with_tracks, read_png, Rollout};
use super::{mean_or_zero, spread, StageContext, StageKind};
use crate::config::{ParamSpec, Params};
use crate::io::write_json;
use crate::render::{write_gif, Corner, Figure, GifOptions, ImagePanel};
use crate::science::tracking::{track_frames, DetectConfig, LinkConfig, Track};

/// The `track` kind.
pub struct TrackKind;

impl StageKind for TrackKind {
    fn name(&self) -> &'static str {
        "track"
    }
    fn version(&self) -> u32 {
        3
    }
    fn about(&self) -> &'static str {
        "Artificial life: detects creatures (blobs clearly not white, periodic, holes filled) in a creature \
         rollout's smoothed frames and links them frame to frame by nearest periodic neighbours with positions \
         unwrapped across edges; writes tracks with velocities, the paper's panel and a GIF with tracks."
    }
    fn params(&self) -> Vec<ParamSpec> {
        vec![
            ParamSpec::input("rollout", "the `simulate` stage on an `icons` dataset"),
            ParamSpec::float("threshold", 0.25, "creature-ness (distance from white, 0-1) above which a pixel belongs to a creature").probability(),
            ParamSpec::int("min_area", 8, "smallest blob kept, pixels (smaller: noise specks)").positive(),
            ParamSpec::int("max_area", 1000, "largest blob kept, pixels (larger: merged clumps or unresolved noise)").positive(),
            ParamSpec::float("max_disp", 6.0, "largest displacement per frame when linking, pixels").positive(),
            ParamSpec::int("max_gap", 2, "frames a track may go undetected before it is closed").min(0.0),
            ParamSpec::int("tail", 25, "frames of each track's recent path drawn in the panel and the GIF").positive(),
            ParamSpec::int("gif_frames", 120, "most frames in the GIF (frames are subsampled evenly)").positive(),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "tracks.json",
                "per canvas: detections per frame and tracks (frames, unwrapped positions (x, y) px, velocities px/frame, \
                 areas); with the frame interval and the training density",
            ),
            ("panel.png", "the paper's panel: last smoothed frame with tracks and the creature inset"),
            ("tracks.gif", "the first canvas's rollout with the tracks growing"),
        ]
    }
    fn check(&self, p: &Params) -> Vec<(&'static str, String)> {
        let mut out = Vec::new();
        if p.usize("min_area") > p.usize("max_area") {
            out.push(("min_area", "must not exceed `max_area`".to_string()));
        }
        out
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let input = ctx.input("rollout")?;
        let r = Rollout::open(input)?;
        let icon = read_png(&input.dir.join("icon.png")).ok();
        let det = DetectConfig {
            threshold: p.float("threshold") as f32,
            min_area: p.usize("min_area"),
            max_area: p.usize("max_area"),
        };
        let link = LinkConfig {
            max_disp: p.float("max_disp"),
            max_gap: p.usize("max_gap"),
        };
        let (h, w, t) = (r.h, r.w, r.frames);
        let mut canvases = Vec::new();
        let mut all_tracks: Vec<Vec<Track>> = Vec::new();
        let (mut n_tracks, mut last_counts, mut long) = (Vec::new(), Vec::new(), Vec::new());
        // The shape check: blobs with the training creatures' colour and size (science::tracking::CreatureLook).
        let (look, reference_count) = r.creature_reference(&det);
        let (mut last_like, mut last_share) = (Vec::new(), Vec::new());
        let min_long = (t / 10).max(5);
        for c in 0..r.canvases {
            let frames: Vec<Vec<f32>> = (0..t).map(|f| r.frame(f, c).to_vec()).collect();
            let (dets, tracks) = track_frames(&frames, h, w, &det, &link);
            let counts: Vec<usize> = dets.iter().map(Vec::len).collect();
            n_tracks.push(tracks.len() as f64);
            long.push(tracks.iter().filter(|tr| tr.len() >= min_long).count() as f64);
            last_counts.push(*counts.last().expect("at least one frame") as f64);
            let like: Vec<usize> = dets
                .iter()
                .map(|d| match &look {
                    Some(look) => d.iter().filter(|b| look.matches(b)).count(),
                    None => 0,
                })
                .collect();
            let (n_like, n_all) = (
                *like.last().expect("a frame"),
                *counts.last().expect("a frame"),
            );
            last_like.push(n_like as f64);
            if n_all > 0 {
                last_share.push(n_like as f64 / n_all as f64);
            }
            let json_tracks: Vec<serde_json::Value> = tracks
                .iter()
                .map(|tr| {
                    serde_json::json!({
                        "frames": tr.frames, "positions": tr.positions, "areas": tr.areas,
                        "velocities": tr.velocities(),
                    })
                })
                .collect();
            canvases.push(serde_json::json!({
                "detections": counts, "icon_like": like, "tracks": json_tracks,
            }));
            all_tracks.push(tracks);
        }
        let expected = r.expected_count();
        write_json(
            &ctx.output("tracks.json"),
            &serde_json::json!({
                "icon": r.icon, "height": h, "width": w, "frames": t, "every": r.every, "dt": r.dt,
                "burn_in_frames": r.burn_in_frames,
                "train_size": r.train_size, "train_icons_per_canvas": r.train_icons,
                "expected_count": expected, "reference_count": reference_count, "look": look,
                "detect": det, "link": link, "canvases": canvases,
            }),
        )?;
        if look.is_none() {
            ctx.log(format!(
                "warning: no creature found on the {} training canvases with threshold {} and areas {}-{}: the \
                 shape check counts nothing",
                r.reference_canvases, det.threshold, det.min_area, det.max_area
            ));
        }
        ctx.metric("tracks", spread(&n_tracks));
        ctx.metric("tracks_long", spread(&long));
        ctx.metric("count_last_frame", spread(&last_counts));
        ctx.metric("expected_count", expected);
        ctx.metric("reference_count", reference_count);
        ctx.metric("icon_like_last_frame", spread(&last_like));
        ctx.metric("icon_like_share", spread(&last_share));
        ctx.log(format!(
            "`{}`: {} tracks per canvas ({} with at least {min_long} detections); {} creatures in the last frame, \
             {} of them with the training creatures' colour and size (training density predicts {expected:.1} on \
             {h}x{w}; the detector finds {reference_count:.1} on training canvases at that scale)",
            r.icon,
            mean_or_zero(&n_tracks),
            mean_or_zero(&long),
            mean_or_zero(&last_counts),
            mean_or_zero(&last_like),
        ));

        // The paper's panel: the last smoothed frame of each canvas (up to 4) with tracks and the inset.
        let tail = p.usize("tail");
        let shown = r.canvases.min(4);
        let panels = (0..shown)
            .map(|c| {
                let rgb = r.frame(t - 1, c);
                let img =
                    crate::render::rgb_canvas(rgb, h, w, crate::render::FieldRange::MinusOneOne)?;
                let mut panel = ImagePanel::new(
                    format!(
                        "{}: t = {:.0}, {} creatures",
                        r.icon,
                        r.time_of(t - 1),
                        all_tracks[c]
                            .iter()
                            .filter(|tr| tr.frames.last() == Some(&(t - 1)))
                            .count()
                    ),
                    img,
                )
                .tracks(drawn_tracks(&all_tracks[c], h, w, t - 1, tail));
                if let Some(icon) = &icon {
                    panel = panel.inset(icon.clone(), Corner::TopRight);
                }
                Ok(panel.panel())
            })
            .collect::<anyhow::Result<Vec<_>>>()?;
        Figure::row(panels)
            .panel_size(620, 660)
            .title(format!(
                "`{}` from noise (tracks: last {tail} frames)",
                r.icon
            ))
            .save_png(&ctx.output("panel.png"))
            .context("drawing the panel")?;

        // The GIF of the first canvas.
        let scale = (384 / h.max(w)).max(1) as u32;
        let n_gif = p.usize("gif_frames").min(t);
        let mut gif = Vec::with_capacity(n_gif);
        for k in 0..n_gif {
            let f = if n_gif > 1 {
                k * (t - 1) / (n_gif - 1)
            } else {
                t - 1
            };
            let mut img = frame_with_tracks(r.frame(f, 0), h, w, &all_tracks[0], f, tail, scale)?;
            if let Some(icon) = &icon {
                let target = (img.width / 6).max(8);
                crate::render::paste_inset(
                    &mut img,
                    &icon.fit(target, target),
                    Corner::TopRight,
                    4,
                );
            }
            gif.push(img);
        }
        write_gif(
            &ctx.output("tracks.gif"),
            &gif,
            &GifOptions {
                delay_cs: 8,
                ..Default::default()
            },
        )?;
        Ok(())
    }
}
