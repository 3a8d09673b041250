//! `evaluate_behaviour`: what the creatures do (spec §8), over time and over seeds.
//!
//! Gathers every run of a `track` stage (a list input: under a seed sweep of the rollout it receives every
//! seed's instance) and computes, per run and frame, the number of creatures (emergence from noise), mean
//! speed, polarisation, mean nearest-neighbour distance and angular momentum about the centroid
//! (`science::behaviour`). Each run is summarised over its last half and judged in plain words; the runs
//! are then combined: every number is the mean over runs ± its spread (n runs), next to the count the
//! training density predicts and the 1/sqrt(n) baseline of random headings. Curves over time with bands
//! over runs make the figure.

use anyhow::Context;

use super::{spread, StageContext, StageKind};
use crate::config::ParamSpec;
use crate::io::{read_json, write_json};
use crate::render::{Figure, LinePlot, Series};
use crate::science::behaviour::{
    bands_over_seeds, behaviour_series, over_seeds, summarize_last_half, verdict, BehaviourConfig,
    BehaviourSeries, Stat, Summary, Thresholds,
};
use crate::science::tracking::Track;

/// The `evaluate_behaviour` kind.
pub struct EvaluateBehaviour;

/// One tracked canvas.
struct Run {
    label: String,
    series: BehaviourSeries,
}

impl StageKind for EvaluateBehaviour {
    fn name(&self) -> &'static str {
        "evaluate_behaviour"
    }
    fn version(&self) -> u32 {
        5
    }
    fn about(&self) -> &'static str {
        "Artificial life: per frame, the number of creatures, mean speed, polarisation, nearest-neighbour \
         distance and angular momentum about the centroid, from the tracks of every run (seeds of a sweep via a \
         list input); last-half summaries with their spread over runs, a verdict in plain words per run and over \
         runs, and curves with bands over runs."
    }
    fn params(&self) -> Vec<ParamSpec> {
        let th = Thresholds::default();
        let bc = BehaviourConfig::default();
        vec![
            ParamSpec::inputs(
                "tracks",
                "the `track` stage(s); a swept `track` stage gives every seed's run",
            ),
            ParamSpec::float(
                "min_speed",
                bc.min_speed,
                "speed (px/frame) below which a creature counts as still (left out of headings)",
            )
            .min(0.0),
            ParamSpec::int(
                "min_track_len",
                bc.min_track_len as i64,
                "tracks with fewer detections are counted but not used for motion",
            )
            .positive(),
            ParamSpec::float(
                "static_speed",
                th.static_speed,
                "mean speed (px/frame) below which a run is `static`",
            )
            .min(0.0),
            ParamSpec::float(
                "collective",
                th.collective,
                "least polarisation for `collective motion`",
            )
            .probability(),
            ParamSpec::float(
                "milling",
                th.milling,
                "least |angular momentum| for `milling`",
            )
            .probability(),
            ParamSpec::float(
                "factor",
                th.factor,
                "both must also exceed this many times the random baseline 1/sqrt(n)",
            )
            .min(0.0),
        ]
    }
    fn outputs(&self) -> Vec<(&'static str, &'static str)> {
        vec![
            (
                "behaviour.json",
                "per run: label, per-frame series, last-half summary and verdict; over runs: summary, verdict, bands",
            ),
            ("verdict.txt", "the verdicts in plain words with the numbers behind them"),
            ("behaviour.png", "the five statistics over time (mean ± std over runs)"),
        ]
    }
    fn run(&self, ctx: &mut StageContext<'_>) -> anyhow::Result<()> {
        let p = ctx.params;
        let cfg = BehaviourConfig {
            min_speed: p.float("min_speed"),
            min_track_len: p.usize("min_track_len"),
        };
        let th = Thresholds {
            static_speed: p.float("static_speed"),
            collective: p.float("collective"),
            milling: p.float("milling"),
            factor: p.float("factor"),
            ..Thresholds::default()
        };
        let mut runs = Vec::new();
        let (mut icon, mut expected, mut frame_time) = (String::new(), f64::NAN, 1.0);
        let mut reference = f64::NAN;
        let mut burn_in = 0;
        // Per run: creatures per frame that pass the tracker's shape check (colour and size of the
        // training creatures), when the tracks carry it.
        let mut like_series: Vec<Vec<f64>> = Vec::new();
        for a in ctx.input_list("tracks")? {
            if a.kind != "track" {
                anyhow::bail!(
                    "input `{}` is a `{}` stage; expected `track`",
                    a.stage,
                    a.kind
                );
            }
            let v: serde_json::Value = read_json(&a.dir.join("tracks.json"))?;
            let num = |k: &str| {
                v[k].as_f64()
                    .with_context(|| format!("tracks.json of `{}`: `{k}`", a.stage))
            };
            let (h, w, t) = (
                num("height")? as usize,
                num("width")? as usize,
                num("frames")? as usize,
            );
            icon = v["icon"].as_str().unwrap_or_default().to_string();
            expected = num("expected_count")?;
            reference = v["reference_count"].as_f64().unwrap_or(f64::NAN);
            frame_time = num("every")? * num("dt")?;
            burn_in = v["burn_in_frames"].as_u64().unwrap_or(0) as usize;
            let canvases = v["canvases"]
                .as_array()
                .context("tracks.json: `canvases`")?;
            for (c, canvas) in canvases.iter().enumerate() {
                let tracks: Vec<Track> = canvas["tracks"]
                    .as_array()
                    .context("tracks.json: `tracks`")?
                    .iter()
                    .map(|tr| {
                        Ok(Track {
                            frames: serde_json::from_value(tr["frames"].clone())?,
                            positions: serde_json::from_value(tr["positions"].clone())?,
                            areas: serde_json::from_value(tr["areas"].clone())?,
                        })
                    })
                    .collect::<anyhow::Result<_>>()?;
                let label = if canvases.len() > 1 {
                    format!("{} canvas {c}", a.stage)
                } else {
                    a.stage.clone()
                };
                if let Some(like) = canvas["icon_like"].as_array() {
                    like_series.push(like.iter().filter_map(serde_json::Value::as_f64).collect());
                }
                runs.push(Run {
                    label,
                    series: behaviour_series(&tracks, t, h, w, &cfg),
                });
            }
        }
        let summaries: Vec<Summary> = runs
            .iter()
            .map(|r| summarize_last_half(&r.series))
            .collect();
        let per_run: Vec<(String, crate::science::behaviour::Verdict)> = runs
            .iter()
            .zip(&summaries)
            .map(|(r, s)| (r.label.clone(), verdict(s, &th)))
            .collect();
        let all = over_seeds(&summaries);
        let overall = verdict(&all, &th);
        let n = runs.len();

        // Metrics: each statistic's last-half mean per run, with its spread over runs.
        let col = |f: fn(&Summary) -> f64| -> Vec<f64> {
            summaries.iter().map(f).filter(|x| x.is_finite()).collect()
        };
        let counts = col(|s| s.count.mean);
        // The shape check over the same last half of each run as the other statistics.
        let last_half_mean = |v: &[f64]| -> f64 {
            let tail = &v[v.len() / 2..];
            tail.iter().sum::<f64>() / tail.len().max(1) as f64
        };
        let like: Vec<f64> = like_series.iter().map(|v| last_half_mean(v)).collect();
        let like_share: Vec<f64> = like
            .iter()
            .zip(&counts)
            .filter(|(_, &c)| c > 0.0)
            .map(|(l, c)| l / c)
            .collect();
        ctx.metric("icon_like", spread(&like));
        ctx.metric("icon_like_share", spread(&like_share));
        ctx.metric("reference_count", reference);
        ctx.metric("runs", n);
        ctx.metric("count_start", spread(&col(|s| s.count_start.mean)));
        ctx.metric("count", spread(&counts));
        ctx.metric("expected_count", expected);
        ctx.metric(
            "count_vs_expected",
            spread(&counts.iter().map(|c| c / expected).collect::<Vec<_>>()),
        );
        ctx.metric("moving", spread(&col(|s| s.moving.mean)));
        ctx.metric("mean_speed", spread(&col(|s| s.mean_speed.mean)));
        ctx.metric("polarisation", spread(&col(|s| s.polarisation.mean)));
        ctx.metric("random_polarisation", all.random_baseline());
        ctx.metric("nn_distance", spread(&col(|s| s.nn_distance.mean)));
        ctx.metric("random_nn_distance", all.random_spacing());
        ctx.metric(
            "angular_momentum",
            spread(&col(|s| s.angular_momentum.mean)),
        );
        ctx.metric(
            "abs_angular_momentum",
            spread(&col(|s| s.angular_momentum.mean.abs())),
        );
        ctx.metric("verdict", overall.text.clone());
        ctx.metric("verdict_kind", serde_json::to_value(overall.kind)?);
        let kinds: Vec<serde_json::Value> = per_run
            .iter()
            .map(|(_, v)| serde_json::to_value(v.kind))
            .collect::<Result<_, _>>()?;
        ctx.metric("verdict_kinds", kinds);

        let shape = if like.is_empty() {
            String::new()
        } else {
            let (m, sd) = (Stat::of(&like), Stat::of(&like_share));
            format!(
                "\n  of them {} with the training creatures' colour and size ({} of all; the detector finds {reference:.1} \
                 on training canvases at this scale)",
                m.show(1),
                sd.show(2)
            )
        };
        let mut text = format!(
            "`{icon}` over {n} runs (last half of each run; ± over runs; frame = {frame_time} time units):\n  {}\n  \
             creatures {} per canvas (training density predicts {expected:.1}){shape}\n\nper run:\n",
            overall.text,
            all.count.show(1),
        );
        for (label, v) in &per_run {
            text += &format!("  {label}: {}\n", v.text);
        }
        std::fs::write(ctx.output("verdict.txt"), &text)?;
        ctx.log(text.trim_end());

        let bands = bands_over_seeds(&runs.iter().map(|r| r.series.clone()).collect::<Vec<_>>());
        write_json(
            &ctx.output("behaviour.json"),
            &serde_json::json!({
                "icon": icon, "frame_time": frame_time, "expected_count": expected, "config": cfg, "thresholds": th,
                "over_runs": { "summary": all, "verdict": overall, "bands": {
                    "count": bands[0], "mean_speed": bands[1], "polarisation": bands[2],
                    "nn_distance": bands[3], "angular_momentum": bands[4] } },
                "runs": runs.iter().zip(&summaries).zip(&per_run).map(|((r, s), (_, v))| serde_json::json!({
                    "label": r.label, "series": r.series, "summary": s, "verdict": v })).collect::<Vec<_>>(),
            }),
        )?;

        // Curves over time, mean ± std over runs.
        let len = bands[0].mean.len();
        let time: Vec<f64> = (0..len)
            .map(|f| super::alife_common::frame_time(f, burn_in, frame_time))
            .collect();
        let x_label = if burn_in > 0 {
            "SDE time (t <= 0: the annealed start from noise)"
        } else {
            "SDE time"
        };
        let band = |i: usize, label: &str| {
            Series::new(label, time.clone(), bands[i].mean.clone()).with_std(bands[i].std.clone())
        };
        let flat = |label: &str, y: f64| Series::new(label, time.clone(), vec![y; len]);
        let who = format!("mean ± std over {n} runs");
        let mut count = LinePlot::new("creatures (emergence)", x_label, "creatures per canvas")
            .series(band(0, &who));
        if like_series.len() == n && like_series.iter().all(|v| v.len() == len) {
            let mean: Vec<f64> = (0..len)
                .map(|f| like_series.iter().map(|v| v[f]).sum::<f64>() / n as f64)
                .collect();
            count = count.series(Series::new(
                "with the creature's colour and size",
                time.clone(),
                mean,
            ));
        }
        if expected.is_finite() {
            count = count.series(flat("training density", expected));
        }
        let mut pol = LinePlot::new("polarisation |mean unit velocity|", x_label, "polarisation")
            .series(band(2, &who));
        if all.random_baseline().is_finite() {
            pol = pol.series(flat("random headings 1/sqrt(n)", all.random_baseline()));
        }
        let mut nn =
            LinePlot::new("nearest-neighbour distance", x_label, "pixels").series(band(3, &who));
        if all.random_spacing().is_finite() {
            nn = nn.series(flat("random positions", all.random_spacing()));
        }
        let speed = LinePlot::new("mean speed", x_label, "pixels per frame").series(band(1, &who));
        let ang = LinePlot::new(
            "angular momentum about the centroid",
            x_label,
            "(r × v)/(|r||v|)",
        )
        .series(band(4, &who))
        .series(flat("zero", 0.0));
        Figure::new(2, 3)
            .push(count.panel())
            .push(speed.panel())
            .push(pol.panel())
            .push(nn.panel())
            .push(ang.panel())
            .panel_size(560, 400)
            .title(format!(
                "`{icon}` creatures: behaviour over time ({who}); {}",
                short(&overall.text)
            ))
            .save_png(&ctx.output("behaviour.png"))?;
        Ok(())
    }
}

/// The verdict's first clause (the figure's title has room for that much).
fn short(text: &str) -> &str {
    let end = text.find(" (").unwrap_or(text.len());
    &text[..end]
}
