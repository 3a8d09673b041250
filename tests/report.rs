//! The HTML report, checked in a real browser: headless Chromium renders it offline from the file system,
//! every image must load and the page must raise no errors; a screenshot is taken.

mod common;

use common::Project;

fn chromium() -> Option<std::path::PathBuf> {
    ["/usr/bin/chromium", "/usr/bin/chromium-browser"]
        .iter()
        .map(std::path::PathBuf::from)
        .find(|p| p.exists())
}

const FLAGS: &[&str] = &[
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
];

#[test]
fn report_renders_in_a_browser_with_every_image_loaded() {
    let p = Project::new();
    let f = p.pipeline(
        "sw.toml",
        "[stages.fixed]\nkind = \"dataset\"\nname = \"ring\"\nn = 400\n[stages.noisy]\nkind = \"dataset\"\nname = \"two_peaks\"\nn = 300\n\
         [sweep]\nseeds = 2\nseed_key = \"stages.noisy.seed\"\n[sweep.grid]\n\"stages.noisy.std\" = [0.25, 0.5]\n",
    );
    p.run(&["run", &f]).assert_ok();
    let out = p.path().join("report.html");
    let r = p.run(&["report", &f, "-o", out.to_str().expect("utf-8 path")]);
    r.assert_ok();
    assert!(
        r.stderr.contains("5 instance(s) with results"),
        "{}",
        r.stderr
    );
    let html = std::fs::read_to_string(&out).expect("report");
    for needle in [
        "<svg",
        "noisy[noisy.std=0.25,seed=1]",
        "Across seeds",
        "made by fixed",
        "data:image/png;base64,",
    ] {
        assert!(html.contains(needle), "report lacks {needle}");
    }
    assert!(
        !html.contains("src=\"http"),
        "the report must be self-contained"
    );

    let Some(browser) = chromium() else {
        assert!(
            std::env::var_os("CI").is_none(),
            "CI must install chromium (.ci/run does)"
        );
        eprintln!(
            "chromium is not installed: browser check skipped (run .ci/run, which installs it)"
        );
        return;
    };
    let profile = tempfile::tempdir().expect("profile dir");
    let url = format!("file://{}", out.display());
    let dom = std::process::Command::new(&browser)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--enable-logging=stderr",
            "--v=0",
            "--virtual-time-budget=5000",
            "--dump-dom",
            &url,
        ])
        .output()
        .expect("run chromium");
    let dom_text = String::from_utf8_lossy(&dom.stdout);
    let stderr = String::from_utf8_lossy(&dom.stderr);
    let body = dom_text
        .split("<body")
        .nth(1)
        .and_then(|s| s.split('>').next())
        .unwrap_or("");
    let images = body
        .split("data-images=\"")
        .nth(1)
        .and_then(|s| s.split('"').next())
        .expect("the page's load check ran");
    let (ok, total) = images.split_once('/').expect("n/m");
    assert!(total.parse::<usize>().expect("count") >= 5, "{images}");
    assert_eq!(ok, total, "every image loads: {images}");
    assert!(body.contains("data-errors=\"0\""), "page errors: {body}");
    let console_errors: Vec<&str> = stderr
        .lines()
        .filter(|l| l.contains("CONSOLE") && (l.contains("ERROR") || l.contains("Uncaught")))
        .collect();
    assert!(
        console_errors.is_empty(),
        "console errors: {console_errors:?}"
    );

    let shot = p.path().join("shot.png");
    let status = std::process::Command::new(&browser)
        .args(FLAGS)
        .arg(format!("--user-data-dir={}", profile.path().display()))
        .args([
            "--window-size=1280,2000",
            &format!("--screenshot={}", shot.display()),
            &url,
        ])
        .output()
        .expect("run chromium");
    assert!(
        status.status.success(),
        "{}",
        String::from_utf8_lossy(&status.stderr)
    );
    let png = std::fs::read(&shot).expect("screenshot");
    assert!(
        png.len() > 20_000 && png.starts_with(b"\x89PNG"),
        "screenshot is a real picture"
    );
}
