//! Integration tests of the artificial-life stage kinds: a tiny version of the shipped `alife_firefly`
//! pipeline (32x32 canvases, a few steps of everything, two seeds, via `--set`) through the real binary,
//! asserting real outputs; the user-PNG pipeline `alife_my_icon` (whose icon this file draws); and the
//! errors for a missing and an alpha-less PNG.

mod common;

use std::path::{Path, PathBuf};

use common::{metrics, Project};

/// Shrinks an alife pipeline to seconds.
const TINY: &[&str] = &[
    "--set",
    "stages.data.size=32",
    "--set",
    "stages.data.icons_min=2",
    "--set",
    "stages.data.icons_max=3",
    "--set",
    "stages.data.icon_min=8",
    "--set",
    "stages.data.icon_max=10",
    "--set",
    "stages.data.samples=12",
    "--set",
    "stages.data.test_samples=2",
    "--set",
    "stages.score.iterations=8",
    "--set",
    "stages.score.crop=24",
    "--set",
    "stages.score.width=8",
    "--set",
    "stages.score_high.iterations=8",
    "--set",
    "stages.score_high.crop=24",
    "--set",
    "stages.score_high.width=8",
    "--set",
    "stages.simulate.steps=16",
    "--set",
    "stages.simulate.every=2",
    "--set",
    "stages.simulate.burn_in_levels=4",
    "--set",
    "stages.simulate.burn_in_langevin=1",
    "--set",
    "stages.simulate.burn_in_top=2",
    "--set",
    "sweep.seeds=2",
];

fn args<'a>(first: &[&'a str]) -> Vec<&'a str> {
    let mut v = first.to_vec();
    v.extend_from_slice(TINY);
    v
}

fn show(p: &Project, file: &str, stage: &str) -> PathBuf {
    show_with(p, file, stage, &[])
}

/// [`show`] with more `--set`s after the tiny ones (the settings the stage was run with).
fn show_with(p: &Project, file: &str, stage: &str, extra: &[&str]) -> PathBuf {
    let mut a = args(&["show", file, stage]);
    a.extend_from_slice(extra);
    let r = p.run(&a);
    assert!(r.ok(), "show failed: {}", r.stderr);
    PathBuf::from(r.stdout.trim().lines().next().expect("a path"))
}

/// Runs the tiny pipeline's `simulate` with `extra` settings and returns its first canvas's smoothed frames.
fn rollout_ema(p: &Project, file: &str, extra: &[&str]) -> Vec<f32> {
    let mut a = args(&["run", file, "simulate"]);
    a.extend_from_slice(extra);
    p.run(&a).assert_ok();
    let dir = show_with(p, file, "simulate", extra);
    let t = eqflow::io::read_tensors(&dir.join("frames.safetensors")).expect("frames");
    t.f32("ema", 5).expect("ema").1
}

fn assert_png(path: &Path) {
    let decoder = png::Decoder::new(std::fs::File::open(path).expect("png exists"));
    let reader = decoder.read_info().expect("png decodes");
    assert!(
        reader.info().width > 16 && reader.info().height > 16,
        "{}",
        path.display()
    );
}

/// The shipped user icon: a 32x32 orange "squid" (an ellipse body with a dark eye at the front and three
/// tentacles behind) on a transparent background, drawn deterministically with the `png` crate.
fn draw_my_icon() -> Vec<u8> {
    let n = 32usize;
    let mut rgba = vec![0u8; n * n * 4];
    for y in 0..n {
        for x in 0..n {
            let (u, v) = (
                (x as f64 + 0.5) / n as f64 * 2.0 - 1.0,
                (y as f64 + 0.5) / n as f64 * 2.0 - 1.0,
            );
            let body = ((u - 0.15) / 0.7).powi(2) + (v / 0.45).powi(2) <= 1.0;
            let tentacle =
                u < -0.4 && u > -0.95 && [-0.3, 0.0, 0.3].iter().any(|c| (v - c).abs() < 0.08);
            let eye = (u - 0.5).powi(2) + (v + 0.1).powi(2) <= 0.02;
            let px = if eye {
                [30, 20, 60, 255]
            } else if body {
                [245, 140, 30, 255]
            } else if tentacle {
                [150, 60, 170, 255]
            } else {
                [0, 0, 0, 0]
            };
            rgba[(y * n + x) * 4..(y * n + x + 1) * 4].copy_from_slice(&px);
        }
    }
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, n as u32, n as u32);
        enc.set_color(png::ColorType::Rgba);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("png header");
        w.write_image_data(&rgba).expect("png data");
    }
    out
}

/// `pipelines/assets/my_icon.png` is this drawing (`EQFLOW_BLESS=1` rewrites it).
#[test]
fn shipped_user_icon_is_the_drawn_one() {
    let path = Path::new(env!("CARGO_MANIFEST_DIR")).join("pipelines/assets/my_icon.png");
    let drawn = draw_my_icon();
    if std::env::var_os("EQFLOW_BLESS").is_some() || !path.exists() {
        std::fs::write(&path, &drawn).expect("write the icon");
    }
    assert_eq!(
        std::fs::read(&path).expect("icon"),
        drawn,
        "run with EQFLOW_BLESS=1 to redraw"
    );
    let icon = eqflow::io::icon::read_icon(&path).expect("the shipped icon reads");
    assert_eq!((icon.height, icon.width), (32, 32));
}

#[test]
fn tiny_alife_pipeline_produces_every_output() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    p.run(&args(&["run", &f])).assert_ok();

    let data = show(&p, &f, "data");
    let file = eqflow::io::read_tensors(&data.join("data.safetensors")).expect("dataset decodes");
    let (shape, x) = file.f32_view("x", 4).expect("x");
    assert_eq!(shape, vec![12, 3, 32, 32]);
    assert!(x.iter().all(|v| (-1.0..=1.0).contains(v)));
    // White background dominates, creatures are there.
    assert!(x.iter().filter(|&&v| v == 1.0).count() > x.len() / 2);
    assert!(x.iter().any(|&v| v < 0.0));
    assert_png(&data.join("samples.png"));
    assert_png(&data.join("icon.png"));
    let m = metrics(&data);
    assert!(m["icons_per_canvas"]["mean"].as_f64().expect("density") >= 1.0);

    let flow = show(&p, &f, "flow");
    let k: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(flow.join("kernel.json")).expect("kernel"))
            .expect("json");
    assert_eq!((k["c_in"].as_u64(), k["size"].as_u64()), (Some(3), Some(1)));
    assert!(metrics(&flow)["skew_defect"].as_f64().expect("defect") < 1e-6);

    let sim = show(&p, &f, "simulate");
    let m = metrics(&sim);
    assert_eq!(m["burn_in_frames"].as_u64(), Some(5), "{m}");
    assert_eq!(m["frames"].as_u64(), Some(13), "{m}");

    let r = p.run(&args(&["show", &f, "track"]));
    assert!(r.ok(), "{}", r.stderr);
    let tracks: Vec<PathBuf> = r.stdout.lines().map(PathBuf::from).collect();
    assert_eq!(tracks.len(), 2, "one track stage per seed: {}", r.stdout);
    for t in &tracks {
        let v: serde_json::Value =
            serde_json::from_str(&std::fs::read_to_string(t.join("tracks.json")).expect("tracks"))
                .expect("json");
        assert_eq!(
            v["width"].as_u64(),
            Some(64),
            "the rollout canvas is twice the training side"
        );
        // 5 burn-in frames (annealing steps 0, 2, .., 8 of 10: 2 + 4 Langevin steps and 3 DDIM steps after the
        // start) then 8 SDE frames (steps 2..16).
        assert_eq!(
            v["canvases"][0]["detections"]
                .as_array()
                .expect("per frame")
                .len(),
            13
        );
        // The shape check: measured on the 12 training canvases (32x32, 2-3 fireflies of 8-10 px, rarely
        // touching), the detector finds about the dataset's density (over all its canvases) at the rollout's
        // scale (x4), and the look is a firefly's:
        // its red and cyan halves average out in every channel (pure red would be (1, -1, -1)).
        let reference = v["reference_count"].as_f64().expect("reference count");
        let expected = v["expected_count"].as_f64().expect("expected count");
        assert!(
            (0.8 * expected..1.1 * expected).contains(&reference),
            "{reference} vs {expected}"
        );
        let colour: Vec<f64> = v["look"]["colour"]
            .as_array()
            .expect("look colour")
            .iter()
            .map(|c| c.as_f64().expect("number"))
            .collect();
        assert!(colour.iter().all(|c| c.abs() < 0.5), "{colour:?}");
        let like = v["canvases"][0]["icon_like"].as_array().expect("per frame");
        let all = v["canvases"][0]["detections"]
            .as_array()
            .expect("per frame");
        assert_eq!(like.len(), all.len());
        assert!(like.iter().zip(all).all(|(l, a)| l.as_u64() <= a.as_u64()));
        assert_png(&t.join("panel.png"));
        assert!(std::fs::read(t.join("tracks.gif"))
            .expect("gif")
            .starts_with(b"GIF89a"));
    }

    let b = show(&p, &f, "behaviour");
    let m = metrics(&b);
    assert_eq!(m["runs"].as_u64(), Some(2));
    for key in ["count", "count_start", "count_vs_expected", "icon_like"] {
        for s in ["mean", "std", "n"] {
            assert!(m[key][s].is_number(), "{key} lacks {s}: {m}");
        }
    }
    assert!(
        m["nn_distance"]["n"].is_number(),
        "undefined statistics still say how many runs they have"
    );
    assert!(m["verdict"].as_str().expect("verdict").len() > 10);
    let text = std::fs::read_to_string(b.join("verdict.txt")).expect("verdict.txt");
    assert!(
        text.contains("firefly")
            && text.contains("per run")
            && text.contains("with the training creatures' colour and size"),
        "{text}"
    );
    assert_png(&b.join("behaviour.png"));
}

/// The annealed start needs a noise-conditional score: with a single-level one the rollout fails, saying
/// which parameter to set, and caches nothing for the rollout.
#[test]
fn burn_in_without_a_noise_conditional_score_is_a_clear_error() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    let mut a = args(&["run", &f, "simulate"]);
    a.extend_from_slice(&[
        "--set",
        "stages.score.timestep_max=0",
        "--set",
        "sweep.seeds=1",
    ]);
    let r = p.run(&a);
    assert!(!r.ok(), "a burn-in on a single-level score must fail");
    assert!(
        r.stderr.contains("burn_in_levels") && r.stderr.contains("timestep_max"),
        "the error names the parameters: {}",
        r.stderr
    );
}

/// FiLM through the pipeline: both scores train with the knots the TOML asks for (the tables learn, so
/// they are no longer zero) and the annealed start and flow run on them.
#[test]
fn film_scores_train_and_roll_out() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    let film = [
        "--set",
        "stages.score.film_knots=3",
        "--set",
        "stages.score_high.model=local",
        "--set",
        "stages.score_high.film_knots=3",
    ];
    let mut a = args(&["run", &f, "simulate"]);
    a.extend_from_slice(&film);
    p.run(&a).assert_ok();
    for stage in ["score", "score_high"] {
        let dir = show_with(&p, &f, stage, &film);
        let m = eqflow::nn::conv::LocalScore::load(&dir.join("score.safetensors")).expect("load");
        assert_eq!(m.arch.film_knots, 3, "{stage}");
        let tables = &m.params[m.arch.conv_param_len()..];
        assert_eq!(tables.len(), m.arch.film_param_len());
        assert!(
            tables.iter().any(|&v| v != 0.0),
            "{stage}: FiLM tables never trained"
        );
    }
}

/// FiLM needs a noise-conditional score and at least two knots: each misuse stops the run before anything
/// trains, naming where the value came from and the key, and saying what to change.
#[test]
fn film_knots_misuse_is_a_config_error() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    for (set, says) in [
        ("stages.score.film_knots=1", "at least 2"),
        (
            "stages.score.timestep_max=0",
            "needs a noise-conditional score",
        ),
        ("stages.score.model=unet", "the local model's"),
    ] {
        let mut a = args(&["run", &f, "score"]);
        a.extend_from_slice(&["--set", "stages.score.film_knots=4", "--set", set]);
        let r = p.run(&a);
        assert!(!r.ok(), "{set} must be refused");
        assert!(
            r.stderr.contains("--set stages.score.")
                && r.stderr.contains("key `stages.score.film_knots`")
                && r.stderr.contains(says),
            "{set}: {}",
            r.stderr
        );
        assert!(
            !r.stderr.contains("training the local score"),
            "nothing may train: {}",
            r.stderr
        );
    }
}

/// The high-noise expert: trained from above `score_split` it is refused, naming both; and it is used —
/// moving the split up past every burn-in level (so only `score` runs) changes the rollout.
#[test]
fn score_high_is_checked_and_used_above_the_split() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    let run = |extra: &[&str]| {
        let mut a = args(&["run", &f, "simulate"]);
        a.extend_from_slice(&["--set", "sweep.seeds=1"]);
        a.extend_from_slice(extra);
        p.run(&a)
    };
    let r = run(&["--set", "stages.simulate.score_split=0.5"]);
    assert!(!r.ok(), "score_high starts at σ 0.616, above the split");
    assert!(
        r.stderr.contains("score_high") && r.stderr.contains("score_split"),
        "{}",
        r.stderr
    );
    let ema = |split: &str| {
        let set = format!("stages.simulate.score_split={split}");
        rollout_ema(&p, &f, &["--set", "sweep.seeds=1", "--set", &set])
    };
    // 0.9972: just above the top level (timestep 99, σ 0.99719), which `score` reaches too.
    assert_ne!(
        ema("0.62"),
        ema("0.9972"),
        "score_high must drive the top levels"
    );
}

/// The UNet as the flow's score (trained on every DDPM timestep) also serves the annealed start, at the
/// levels of its timesteps; geometric spacing, whose levels fall between them, stops the rollout naming the
/// key to set, and nothing is cached for it.
#[test]
fn unet_score_serves_the_annealed_start() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    let unet = [
        "--set",
        "stages.score.model=unet",
        "--set",
        "stages.score.unet_channels=[8,8,8]",
        "--set",
        "stages.score.res_blocks=1",
        "--set",
        "stages.score.heads=2",
        "--set",
        "stages.score.batch=4",
        // Past the top level: `score` (the UNet) runs the whole start.
        "--set",
        "stages.simulate.score_split=0.9972",
        "--set",
        "sweep.seeds=1",
    ];
    assert!(rollout_ema(&p, &f, &unet).iter().all(|v| v.is_finite()));
    let dir = show_with(&p, &f, "simulate", &unet);
    let log = std::fs::read_to_string(dir.join("log.txt")).expect("log");
    assert!(log.contains("annealed start"), "{log}");

    let mut a = args(&["run", &f, "simulate"]);
    a.extend_from_slice(&unet);
    a.extend_from_slice(&["--set", "stages.simulate.burn_in_spacing=geometric"]);
    let r = p.run(&a);
    assert!(!r.ok(), "a UNet between its timesteps must be refused");
    assert!(
        r.stderr.contains("burn_in_spacing = \"timesteps\"") && r.stderr.contains("unet"),
        "{}",
        r.stderr
    );
}

/// A UNet expert for the top levels (`score_high` trained on timesteps 30-99 only) places the creatures
/// and the local `score` finishes them: the rollout runs, and the expert is really used (it differs from
/// the local expert's rollout).
#[test]
fn unet_expert_for_the_top_levels_rolls_out() {
    let p = Project::new();
    let f = p.copy_shipped("alife_firefly.toml");
    let expert = [
        "--set",
        "stages.score_high.model=unet",
        "--set",
        "stages.score_high.unet_channels=[8,8,8]",
        "--set",
        "stages.score_high.res_blocks=1",
        "--set",
        "stages.score_high.heads=2",
        "--set",
        "stages.score_high.batch=4",
        "--set",
        "sweep.seeds=1",
    ];
    let with_unet = rollout_ema(&p, &f, &expert);
    assert!(with_unet.iter().all(|v| v.is_finite()));
    let score = show_with(&p, &f, "score_high", &expert);
    let json = std::fs::read_to_string(score.join("score.json")).expect("score.json");
    assert!(json.contains("\"model\": \"unet\""), "{json}");
    let log = std::fs::read_to_string(score.join("log.txt")).expect("log");
    assert!(log.contains("timesteps 30..100"), "{log}");
    assert_ne!(
        with_unet,
        rollout_ema(&p, &f, &["--set", "sweep.seeds=1"]),
        "the UNet expert must drive the top levels"
    );
}

#[test]
fn user_png_pipeline_uses_the_icon() {
    let p = Project::new();
    let f = p.copy_shipped("alife_my_icon.toml");
    std::fs::create_dir_all(p.path().join("pipelines/assets")).expect("mkdir");
    std::fs::write(
        p.path().join("pipelines/assets/my_icon.png"),
        draw_my_icon(),
    )
    .expect("icon");
    p.run(&args(&["run", &f, "data"])).assert_ok();
    let data = show(&p, &f, "data");
    let file = eqflow::io::read_tensors(&data.join("data.safetensors")).expect("dataset");
    assert_eq!(
        file.metadata().get("icon").map(String::as_str),
        Some("my_icon")
    );
    let (_, x) = file.f32_view("x", 4).expect("x");
    // Orange (R high, B low) pixels come from the icon.
    let n = 32 * 32;
    let orange = (0..n)
        .filter(|&i| x[i] > 0.8 && x[2 * n + i] < -0.5)
        .count();
    assert!(orange > 10, "no orange icon pixels in the first canvas");
}

fn icon_pipeline(p: &Project, png_name: &str) -> String {
    p.pipeline(
        "mine.toml",
        &format!(
            "[pipeline]\nname = \"mine\"\nseed = 0\n\n[stages.data]\nkind = \"icons\"\npath = \"{png_name}\"\nsize = 32\n\
             icons_min = 1\nicons_max = 2\nicon_min = 8\nicon_max = 10\nsamples = 4\ntest_samples = 1\n"
        ),
    )
}

#[test]
fn missing_png_is_a_clear_error_and_nothing_is_cached() {
    let p = Project::new();
    let f = icon_pipeline(&p, "no_such_icon.png");
    let r = p.run(&["run", &f]);
    assert!(!r.ok(), "a missing icon must fail");
    assert!(
        r.stderr.contains("no_such_icon.png"),
        "the error names the file: {}",
        r.stderr
    );
    assert!(p.entries().is_empty(), "nothing cached: {:?}", p.entries());
}

#[test]
fn alpha_less_png_is_refused_naming_the_file() {
    let p = Project::new();
    let mut out = Vec::new();
    {
        let mut enc = png::Encoder::new(&mut out, 8, 8);
        enc.set_color(png::ColorType::Rgb);
        enc.set_depth(png::BitDepth::Eight);
        let mut w = enc.write_header().expect("header");
        w.write_image_data(&[200u8; 8 * 8 * 3]).expect("data");
    }
    std::fs::write(p.path().join("pipelines/opaque.png"), out).expect("write");
    let f = icon_pipeline(&p, "opaque.png");
    let r = p.run(&["run", &f]);
    assert!(!r.ok(), "an icon without alpha must fail");
    assert!(
        r.stderr.contains("opaque.png"),
        "the error names the file: {}",
        r.stderr
    );
    assert!(
        r.stderr.contains("transparen"),
        "the error says what to do: {}",
        r.stderr
    );
    assert!(p.entries().is_empty(), "nothing cached: {:?}", p.entries());
}
