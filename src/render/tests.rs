//! End-to-end figure tests: every figure kind is rendered to a PNG (or GIF) that must decode with the
//! expected size and not be blank; copies land in `$TMPDIR/render-samples/` for people to look at.

use std::f64::consts::PI;

use plotters::style::RGBColor;

use super::testutil::{check_png, tmp};
use super::*;

/// Deterministic pseudo-random numbers (SplitMix64) so the tests need no RNG crate state.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> f64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        ((z ^ (z >> 31)) >> 11) as f64 / (1u64 << 53) as f64
    }
    fn normal(&mut self) -> f64 {
        let (u, v) = (self.next().max(1e-12), self.next());
        (-2.0 * u.ln()).sqrt() * (2.0 * PI * v).cos()
    }
}

fn two_peaks(n: usize, rng: &mut Rng) -> Vec<[f64; 2]> {
    (0..n)
        .map(|i| {
            let c = if i % 2 == 0 { -1.5 } else { 1.5 };
            [c + 0.5 * rng.normal(), c + 0.5 * rng.normal()]
        })
        .collect()
}

/// Score of the two-peaks mixture (equal weights, isotropic sigma 0.5).
fn score(p: [f64; 2]) -> [f64; 2] {
    let s2 = 0.25;
    let w = |c: f64| (-((p[0] - c).powi(2) + (p[1] - c).powi(2)) / (2.0 * s2)).exp();
    let (a, b) = (w(-1.5), w(1.5));
    let z = (a + b).max(1e-300);
    let m = (a * -1.5 + b * 1.5) / z;
    [(m - p[0]) / s2, (m - p[1]) / s2]
}

#[test]
fn line_plots_with_bands_log_and_markers() {
    let dir = tmp();
    let steps: Vec<f64> = (0..200).map(|i| i as f64 * 10.0).collect();
    let loss = |a: f64| {
        steps
            .iter()
            .map(|s| a * (-s / 500.0).exp() + 0.02)
            .collect::<Vec<_>>()
    };
    let mmd = |base: f64, grow: f64| -> (Vec<f64>, Vec<f64>) {
        let m: Vec<f64> = steps.iter().map(|s| base + grow * s / 2000.0).collect();
        let sd = m.iter().map(|v| 0.15 * v + 0.002).collect();
        (m, sd)
    };
    let mut mmd_plot = LinePlot::new("MMD² over rollout steps", "step", "MMD²");
    for (name, b, g) in [
        ("learned", 0.01, 0.01),
        ("training-free", 0.012, 0.02),
        ("random", 0.01, 0.12),
        ("score", 0.015, 0.0),
    ] {
        let (m, s) = mmd(b, g);
        mmd_plot = mmd_plot.series(Series::new(name, steps.clone(), m).with_std(s));
    }
    mmd_plot.legend = Corner::TopLeft;
    let sep: Vec<f64> = (0..300).map(|i| i as f64 * 0.01).collect();
    let sep_y: Vec<f64> = sep
        .iter()
        .map(|t| 1e-6 * (0.9 * t * 5.0).exp().min(3e4))
        .collect();
    let sweep = vec![0.05, 0.1, 0.25, 0.5, 1.0];
    let fig = Figure::new(2, 2)
        .title("Training and evaluation curves")
        .push(
            LinePlot::new("Training loss", "step", "loss")
                .log_y()
                .series(Series::new("train", steps.clone(), loss(1.0)))
                .series(Series::new("validation", steps.clone(), loss(1.2)))
                .panel(),
        )
        .push(mmd_plot.panel())
        .push(
            LinePlot::new(
                "Separation of perturbed trajectories",
                "time",
                "mean separation",
            )
            .log_y()
            .series(Series::new("learned", sep.clone(), sep_y.clone()))
            .series(Series::new(
                "true Lorenz",
                sep,
                sep_y.iter().map(|v| v * 1.3).collect(),
            ))
            .panel(),
        )
        .push(
            LinePlot::new("Alignment vs eta", "eta", "|cos|")
                .series(
                    Series::new("flow", sweep.clone(), vec![0.2, 0.25, 0.28, 0.26, 0.2])
                        .with_std(vec![0.05; 5])
                        .markers(),
                )
                .series(
                    Series::new("baseline", sweep, vec![0.03, 0.02, 0.04, 0.03, 0.03]).markers(),
                )
                .panel(),
        );
    let p = dir.path().join("lines.png");
    fig.save_png(&p).expect("render lines");
    check_png(&p, 1600, 1200 + 56);
    // Determinism: same input, same bytes.
    let p2 = dir.path().join("lines2.png");
    fig.save_png(&p2).expect("render again");
    assert_eq!(
        std::fs::read(&p).expect("read"),
        std::fs::read(&p2).expect("read")
    );
}

#[test]
fn scatter_streamlines_and_paths() {
    let dir = tmp();
    let mut rng = Rng(7);
    let data = two_peaks(256, &mut rng);
    let samples = two_peaks(256, &mut rng);
    let scatter = Figure::row(vec![
        ScatterPlot::new("Data", "x1", "x2")
            .points(PointSet::new("data", data.clone()))
            .ranges((-3.5, 3.5), (-3.5, 3.5))
            .panel(),
        ScatterPlot::new("Diffusion samples", "x1", "x2")
            .points(PointSet::new("samples", samples).color(color::palette(1)))
            .ranges((-3.5, 3.5), (-3.5, 3.5))
            .panel(),
    ])
    .title("two_peaks: data vs samples")
    .panel_size(600, 600);
    let p = dir.path().join("scatter.png");
    scatter.save_png(&p).expect("scatter");
    check_png(&p, 1200, 656);

    let r = (-3.0, 3.0);
    let score_f = FieldGrid::from_fn(r, r, 20, 20, score).expect("grid");
    let flow = |p: [f64; 2]| {
        let s = score(p);
        // A skew (rotation) of the score: keeps the mixture stationary.
        [-s[1] * 0.3, s[0] * 0.3]
    };
    let flow_f = FieldGrid::from_fn(r, r, 20, 20, flow).expect("grid");
    let drift = |p: [f64; 2]| {
        let (v, s) = (flow(p), score(p));
        [v[0] + 0.25 * s[0], v[1] + 0.25 * s[1]]
    };
    let drift_f = FieldGrid::from_fn(r, r, 20, 20, drift).expect("grid");
    let mut paths = Vec::new();
    for (k, start) in [[2.0, 2.0], [-2.0, 2.0], [2.0, -2.0], [-2.0, -2.0]]
        .into_iter()
        .enumerate()
    {
        let mut x = start;
        let mut pts = vec![x];
        for _ in 0..500 {
            let d = drift(x);
            let sd = (2.0f64 * 0.25 * 0.01).sqrt();
            x = [
                x[0] + d[0] * 0.01 + sd * rng.normal(),
                x[1] + d[1] * 0.01 + sd * rng.normal(),
            ];
            pts.push(x);
        }
        let label = if k == 0 { "SDE paths" } else { "" };
        paths.push(Polyline::new(label, pts).color(RGBColor(214, 39, 40)));
    }
    let mut sde = StreamPlot::new("v + 0.25 s with SDE paths", drift_f).data(data.clone());
    sde.paths = paths;
    let fig = Figure::row(vec![
        StreamPlot::new("Score (t = 0.1)", score_f)
            .data(data.clone())
            .panel(),
        StreamPlot::new("Learned flow", flow_f).data(data).panel(),
        sde.panel(),
    ])
    .title("two_peaks: score, flow and SDE")
    .panel_size(640, 640);
    let p = dir.path().join("streamlines.png");
    fig.save_png(&p).expect("streams");
    check_png(&p, 1920, 696);
}

fn lorenz(n: usize, dt: f64) -> Vec<[f64; 3]> {
    let mut x = [1.0, 1.0, 1.0];
    let f = |x: [f64; 3]| {
        [
            10.0 * (x[1] - x[0]),
            x[0] * (28.0 - x[2]) - x[1],
            x[0] * x[1] - 8.0 / 3.0 * x[2],
        ]
    };
    let mut out = Vec::with_capacity(n);
    for i in 0..n + 500 {
        let k1 = f(x);
        let y = [x[0] + dt * k1[0], x[1] + dt * k1[1], x[2] + dt * k1[2]];
        let k2 = f(y);
        for c in 0..3 {
            x[c] += 0.5 * dt * (k1[c] + k2[c]);
        }
        if i >= 500 {
            out.push(x);
        }
    }
    out
}

#[test]
fn projections_and_histograms() {
    let dir = tmp();
    let data: Vec<[f64; 3]> = lorenz(20000, 0.005).into_iter().step_by(20).collect();
    let traj: Vec<[f64; 3]> = lorenz(4000, 0.004).into_iter().skip(1000).collect();
    let fig = Figure::row(projections_3d(&data, &traj, ["x1", "x2", "x3"]).into())
        .title("Lorenz: learned trajectory over data")
        .panel_size(600, 520);
    let p = dir.path().join("lorenz_projections.png");
    fig.save_png(&p).expect("proj");
    check_png(&p, 1800, 576);

    let mut rng = Rng(3);
    let lambdas: Vec<f64> = (0..40).map(|_| 0.9 + 0.08 * rng.normal()).collect();
    let cos = |m: f64, s: f64, rng: &mut Rng| -> Vec<f64> {
        (0..400)
            .map(|_| (m + s * rng.normal()).abs().min(1.0))
            .collect()
    };
    let fig = Figure::row(vec![
        Histogram::new("λ₁ over models", "λ₁")
            .series("learned models", lambdas)
            .ref_line(0.906, "true Lorenz λ₁")
            .panel(),
        Histogram {
            density: true,
            ..Histogram::new("|cos| to the true Lorenz field", "|cos|")
                .series("learned", cos(0.8, 0.1, &mut rng))
                .series("training-free", cos(0.5, 0.2, &mut rng))
                .series("random", cos(0.0, 0.3, &mut rng))
        }
        .panel(),
    ])
    .panel_size(700, 520);
    let p = dir.path().join("histograms.png");
    fig.save_png(&p).expect("hist");
    check_png(&p, 1400, 520);
}

/// A small Gray-Scott run (the spec's scheme) for realistic Turing pictures; returns [2,n,n] in [0,1].
fn gray_scott(n: usize, f: f32, k: f32, steps: usize, seed: u64) -> Vec<f32> {
    let (du, dv) = (0.16f32, 0.08f32);
    let mut u = vec![1.0f32; n * n];
    let mut v = vec![0.0f32; n * n];
    let mut rng = Rng(seed);
    for _ in 0..5 {
        let (cx, cy, r) = (
            (rng.next() * n as f64) as i64,
            (rng.next() * n as f64) as i64,
            3 + (rng.next() * 5.0) as i64,
        );
        for dy in -r..=r {
            for dx in -r..=r {
                if dx * dx + dy * dy <= r * r {
                    let i = ((cy + dy).rem_euclid(n as i64) as usize) * n
                        + (cx + dx).rem_euclid(n as i64) as usize;
                    u[i] = 0.5;
                    v[i] = 0.25;
                }
            }
        }
    }
    let (mut u2, mut v2) = (u.clone(), v.clone());
    for _ in 0..steps {
        for y in 0..n {
            for x in 0..n {
                let i = y * n + x;
                let nb = |a: &[f32]| {
                    a[y * n + (x + 1) % n]
                        + a[y * n + (x + n - 1) % n]
                        + a[((y + 1) % n) * n + x]
                        + a[((y + n - 1) % n) * n + x]
                        - 4.0 * a[i]
                };
                let uvv = u[i] * v[i] * v[i];
                u2[i] = (u[i] + du * nb(&u) - uvv + f * (1.0 - u[i])).clamp(0.0, 1.0);
                v2[i] = (v[i] + dv * nb(&v) + uvv - (f + k) * v[i]).clamp(0.0, 1.0);
            }
        }
        std::mem::swap(&mut u, &mut u2);
        std::mem::swap(&mut v, &mut v2);
    }
    u.extend(v);
    u
}

#[test]
fn turing_grid_scalar_map_and_sheet() {
    let dir = tmp();
    let n = 64;
    let presets = [
        ("life", 0.006, 0.045),
        ("waves", 0.018, 0.049),
        ("spirals", 0.007, 0.028),
        ("maze", 0.029, 0.057),
    ];
    let colors = TuringColors::default();
    let mut rows: [Vec<RgbImage>; 3] = Default::default();
    let mut last = Vec::new();
    for (i, (_, f, k)) in presets.iter().enumerate() {
        let a = gray_scott(n, *f, *k, 2500, i as u64 + 1);
        let b = gray_scott(n, *f, *k, 2600, i as u64 + 1);
        let c = gray_scott(n, *f, *k, 2550, i as u64 + 1);
        for (row, fld) in rows.iter_mut().zip([&a, &b, &c]) {
            row.push(turing_image(fld, n, n, FieldRange::ZeroOne, &colors).expect("turing"));
        }
        last = a;
    }
    let cells: Vec<RgbImage> = rows.into_iter().flatten().collect();
    let grid = ImageGrid::new("Turing patterns", 4, cells.clone())
        .labels(
            vec![
                "initial".into(),
                "evolved by flow".into(),
                "Gray-Scott 50 steps".into(),
            ],
            presets.iter().map(|p| p.0.to_string()).collect(),
        )
        .into_figure(192);
    let p = dir.path().join("turing_grid.png");
    grid.save_png(&p).expect("grid");
    let (w, h) = grid.size();
    check_png(&p, w, h);

    // Δx/Δt map and kernel slices with a diverging colormap.
    let dv: Vec<f32> = last[..n * n]
        .iter()
        .zip(&last[n * n..])
        .map(|(u, v)| v - 0.5 * (1.0 - u))
        .collect();
    let (map, range) = scalar_map(&dv, n, n, Colormap::Diverging, None).expect("map");
    let canvas: Vec<f32> = (0..3 * 48 * 48)
        .map(|i| ((i % 48) as f32 / 24.0 - 1.0) * if i / (48 * 48) == 1 { -1.0 } else { 1.0 })
        .collect();
    let fig = Figure::row(vec![
        ImagePanel::new("Turing sample (maze)", cells[3].clone()).panel(),
        ImagePanel::new("Δx/Δt (v channel)", map)
            .colorbar(Colormap::Diverging, range, "Δv/Δt")
            .panel(),
        ImagePanel::new(
            "RGB canvas",
            rgb_canvas(&canvas, 48, 48, FieldRange::MinusOneOne).expect("rgb"),
        )
        .panel(),
    ])
    .panel_size(600, 560);
    let p = dir.path().join("image_panels.png");
    fig.save_png(&p).expect("panels");
    check_png(&p, 1800, 560);

    let mut rng = Rng(11);
    let mut kernels = Vec::new();
    for o in 0..2 {
        for i in 0..2 {
            let k: Vec<f32> = (0..25)
                .map(|_| if o == i { 0.0 } else { rng.normal() as f32 })
                .collect();
            kernels.push(
                scalar_map(&k, 5, 5, Colormap::Diverging, Some((-2.0, 2.0)))
                    .expect("k")
                    .0,
            );
        }
    }
    let fig = ImageGrid::new("Skew kernel slices K[o,i]", 2, kernels)
        .labels(
            vec!["o = u".into(), "o = v".into()],
            vec!["i = u".into(), "i = v".into()],
        )
        .colorbar(Colormap::Diverging, (-2.0, 2.0), "K[o,i]")
        .into_figure(160);
    let p = dir.path().join("kernels.png");
    fig.save_png(&p).expect("kernels");
    let (w, h) = fig.size();
    check_png(&p, w, h);

    let sheet = contact_sheet(&cells, 6, 4, RGBColor(255, 255, 255))
        .expect("sheet")
        .upscale(2);
    let p = dir.path().join("contact_sheet.png");
    sheet.save_png(&p).expect("sheet");
    check_png(&p, sheet.width, sheet.height);
}

fn blob_canvas(n: usize, t: f64) -> (RgbImage, Vec<[f64; 2]>) {
    let mut img = RgbImage::new(n as u32, n as u32, RGBColor(250, 250, 250));
    let mut centres = Vec::new();
    for k in 0..5 {
        let a = k as f64 * 1.3 + t * 0.05;
        let c = [
            ((20.0 + 18.0 * k as f64 + 40.0 * t / 60.0) % n as f64),
            (n as f64 / 2.0 + 30.0 * a.sin()),
        ];
        centres.push(c);
        for dy in -4i64..=4 {
            for dx in -4i64..=4 {
                if dx * dx + dy * dy <= 16 {
                    let x = (c[0] as i64 + dx).rem_euclid(n as i64);
                    let y = (c[1] as i64 + dy).rem_euclid(n as i64);
                    img.put(
                        x,
                        y,
                        if dx < 0 {
                            RGBColor(40, 200, 220)
                        } else {
                            RGBColor(220, 60, 60)
                        },
                    );
                }
            }
        }
    }
    (img, centres)
}

#[test]
fn tracks_inset_and_gif() {
    let dir = tmp();
    let n = 128;
    let mut frames = Vec::new();
    let mut tracks = vec![Vec::new(); 5];
    for t in 0..120 {
        let (img, cs) = blob_canvas(n, t as f64);
        for (tr, c) in tracks.iter_mut().zip(cs) {
            tr.push(c);
        }
        frames.push(img);
    }
    let mut icon = RgbImage::new(16, 16, RGBColor(255, 255, 255));
    for y in 0..16i64 {
        for x in 0..16i64 {
            if (x - 8).pow(2) + (y - 8).pow(2) <= 36 {
                icon.put(
                    x,
                    y,
                    if x < 8 {
                        RGBColor(40, 200, 220)
                    } else {
                        RGBColor(220, 60, 60)
                    },
                );
            }
        }
    }
    let panel = ImagePanel::new("dots: tracks", frames.last().expect("frame").clone())
        .tracks(
            tracks
                .into_iter()
                .map(|points| Track {
                    points,
                    color: None,
                })
                .collect(),
        )
        .inset(icon, Corner::TopRight);
    let fig = Figure::row(vec![panel.panel()]).panel_size(640, 640);
    let p = dir.path().join("tracks.png");
    fig.save_png(&p).expect("tracks");
    check_png(&p, 640, 640);

    let other: Vec<RgbImage> = frames.iter().map(|f| f.upscale(1)).rev().collect();
    let composed = side_by_side(
        &[frames.clone(), other],
        &["learned flow", "Gray-Scott"],
        256,
    )
    .expect("compose");
    let g = dir.path().join("rollout.gif");
    write_gif(&g, &composed[..40], &GifOptions::default()).expect("gif");
    let g2 = dir.path().join("rollout2.gif");
    write_gif(&g2, &composed[..40], &GifOptions::default()).expect("gif");
    assert_eq!(
        std::fs::read(&g).expect("read"),
        std::fs::read(&g2).expect("read")
    );
    let mut dec = gif::DecodeOptions::new();
    dec.set_color_output(gif::ColorOutput::RGBA);
    let mut d = dec
        .read_info(std::fs::File::open(&g).expect("open"))
        .expect("gif header");
    assert_eq!(
        (d.width() as u32, d.height() as u32),
        (composed[0].width, composed[0].height)
    );
    let mut count = 0;
    while d.read_next_frame().expect("frame").is_some() {
        count += 1;
    }
    assert_eq!(count, 40);
    let _ = std::fs::copy(&g, super::testutil::sample_path("rollout.gif"));
    write_gif(
        &dir.path().join("fixed.gif"),
        &composed[..3],
        &GifOptions {
            palette: anim::GifPalette::Fixed,
            ..Default::default()
        },
    )
    .expect("fixed");
    assert!(write_gif(&dir.path().join("none.gif"), &[], &GifOptions::default()).is_err());
}

/// A statistic that is undefined (NaN) over some frames — speeds before any creature exists — is drawn
/// exactly as if those frames were left out: no line or band squashed onto the plot's edge.
#[test]
fn undefined_values_leave_gaps_instead_of_lines_at_the_edge() {
    let dir = tmp();
    let x: Vec<f64> = (0..20).map(f64::from).collect();
    let y: Vec<f64> = x
        .iter()
        .map(|&t| {
            if t < 4.0 || (9.0..11.0).contains(&t) {
                f64::NAN
            } else {
                0.5 + 0.02 * t
            }
        })
        .collect();
    let sd = vec![0.05; 20];
    let blue = RGBColor(31, 119, 180);
    let save = |series: Vec<Series>, path: &std::path::Path| {
        let mut plot = LinePlot::new("speed", "time", "px/frame");
        plot.x_range = Some((0.0, 19.0));
        plot.y_range = Some((0.0, 1.0));
        for s in series {
            plot = plot.series(s);
        }
        Figure::new(1, 1)
            .push(plot.panel())
            .save_png(path)
            .expect("render");
    };
    // All frames in one series, NaNs included...
    let whole = dir.path().join("gaps.png");
    save(
        vec![Series::new("mean ± std", x.clone(), y.clone())
            .with_std(sd.clone())
            .color(blue)],
        &whole,
    );
    // ... against only the defined runs, as separate series (the label on the first).
    let parts = dir.path().join("parts.png");
    save(
        [4..9usize, 11..20]
            .into_iter()
            .enumerate()
            .map(|(k, r)| {
                Series::new(
                    if k == 0 { "mean ± std" } else { "" },
                    x[r.clone()].to_vec(),
                    y[r.clone()].to_vec(),
                )
                .with_std(sd[r].to_vec())
                .color(blue)
            })
            .collect(),
        &parts,
    );
    assert_eq!(
        std::fs::read(&whole).unwrap(),
        std::fs::read(&parts).unwrap()
    );
}
