//! `eqflow report FILE`: one static, self-contained HTML page per pipeline — every figure (embedded as data
//! URIs, so the file opens offline from anywhere), the DAG (inline SVG), metric tables with spreads,
//! parameters, cache keys and timings, grouped by sweep point, and a plot of each metric against each
//! numeric swept parameter (mean ± std over seeds).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::{Path, PathBuf};

use base64::Engine as _;
use petgraph::visit::EdgeRef;

use super::results::{collect_results, ResultRow};
use crate::cache::{Cache, Lookup};
use crate::exec::{self, RunOptions, Status};
use crate::plan::Plan;
use crate::render::{Figure, LinePlot, Series};

/// What the report contains, for the caller's summary line.
#[derive(Debug, Clone)]
pub struct ReportSummary {
    /// Where it was written.
    pub path: PathBuf,
    /// Figures embedded.
    pub figures: usize,
    /// Instances with cached results.
    pub instances: usize,
    /// Instances not cached yet.
    pub missing: usize,
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

fn num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e5) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}

fn png_uri(bytes: &[u8]) -> String {
    format!(
        "data:image/png;base64,{}",
        base64::engine::general_purpose::STANDARD.encode(bytes)
    )
}

fn figures_in(dir: &Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        if let Ok(rd) = std::fs::read_dir(&d) {
            for e in rd.flatten() {
                let p = e.path();
                if p.is_dir() {
                    stack.push(p);
                } else if p.extension().is_some_and(|x| x == "png" || x == "gif") {
                    out.push(p);
                }
            }
        }
    }
    out.sort();
    out
}

/// The DAG as an SVG: stages in columns by depth, edges as curves.
fn dag_svg(plan: &Plan) -> String {
    let mut depth: BTreeMap<usize, usize> = BTreeMap::new();
    for &n in &plan.order {
        let d = plan
            .graph
            .edges_directed(n, petgraph::Direction::Incoming)
            .map(|e| depth[&e.source().index()] + 1)
            .max()
            .unwrap_or(0);
        depth.insert(n.index(), d);
    }
    let mut rows: BTreeMap<usize, usize> = BTreeMap::new();
    let mut pos: BTreeMap<usize, (f64, f64)> = BTreeMap::new();
    let (w, h, gx, gy) = (190.0, 44.0, 240.0, 62.0);
    for &n in &plan.order {
        let d = depth[&n.index()];
        let r = rows.entry(d).or_insert(0);
        pos.insert(n.index(), (20.0 + d as f64 * gx, 20.0 + *r as f64 * gy));
        *r += 1;
    }
    let width = 40.0 + (rows.len().max(1) as f64) * gx;
    let height = 40.0 + (*rows.values().max().unwrap_or(&1) as f64) * gy;
    let mut s = format!("<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" class=\"dag\">");
    for e in plan.graph.edge_references() {
        let (a, b) = (pos[&e.source().index()], pos[&e.target().index()]);
        let (x1, y1, x2, y2) = (a.0 + w, a.1 + h / 2.0, b.0, b.1 + h / 2.0);
        let _ = write!(
            s,
            "<path d=\"M{x1},{y1} C{},{y1} {},{y2} {x2},{y2}\" fill=\"none\" stroke=\"#889\" stroke-width=\"1.5\"/>",
            x1 + 30.0,
            x2 - 30.0
        );
    }
    for &n in &plan.order {
        let (x, y) = pos[&n.index()];
        let inst = &plan.graph[n];
        let _ = write!(
            s,
            "<g><rect x=\"{x}\" y=\"{y}\" width=\"{w}\" height=\"{h}\" rx=\"8\" fill=\"#eef4fb\" stroke=\"#628FCE\"/>\
             <text x=\"{}\" y=\"{}\" font-size=\"12\" text-anchor=\"middle\">{}</text>\
             <text x=\"{}\" y=\"{}\" font-size=\"10\" fill=\"#666\" text-anchor=\"middle\">{}</text></g>",
            x + w / 2.0,
            y + 18.0,
            esc(&inst.label),
            x + w / 2.0,
            y + 34.0,
            esc(inst.kind.name())
        );
    }
    s.push_str("</svg>");
    s
}

/// Plots of each metric against each numeric swept (non-seed) axis, mean ± std over the other points.
fn sweep_plots(rows: &[ResultRow]) -> Vec<(String, Vec<u8>)> {
    let mut out = Vec::new();
    let mut by_stage: BTreeMap<&str, Vec<&ResultRow>> = BTreeMap::new();
    for r in rows {
        by_stage.entry(r.stage.as_str()).or_default().push(r);
    }
    for (stage, members) in by_stage {
        let axes: Vec<String> = members[0]
            .coords
            .keys()
            .filter(|k| !(*k == "seed" || k.ends_with(".seed")))
            .cloned()
            .collect();
        for axis in axes {
            if !members.iter().all(|r| {
                r.coords
                    .get(&axis)
                    .is_some_and(serde_json::Value::is_number)
            }) {
                continue;
            }
            let mut metric_names: Vec<&String> =
                members.iter().flat_map(|r| r.metrics.keys()).collect();
            metric_names.sort();
            metric_names.dedup();
            for m in metric_names
                .into_iter()
                .filter(|m| !m.ends_with(".n") && !m.ends_with(".min") && !m.ends_with(".max"))
                .take(12)
            {
                let mut groups: BTreeMap<i64, (f64, Vec<f64>)> = BTreeMap::new();
                for r in &members {
                    let (Some(x), Some(y)) = (r.coords[&axis].as_f64(), r.metrics.get(m)) else {
                        continue;
                    };
                    groups
                        .entry((x * 1e9) as i64)
                        .or_insert((x, Vec::new()))
                        .1
                        .push(*y);
                }
                if groups.len() < 2 {
                    continue;
                }
                let xs: Vec<f64> = groups.values().map(|g| g.0).collect();
                let means: Vec<f64> = groups
                    .values()
                    .map(|g| g.1.iter().sum::<f64>() / g.1.len() as f64)
                    .collect();
                let stds: Vec<f64> = groups
                    .values()
                    .zip(&means)
                    .map(|(g, mu)| {
                        if g.1.len() > 1 {
                            (g.1.iter().map(|v| (v - mu).powi(2)).sum::<f64>()
                                / (g.1.len() - 1) as f64)
                                .sqrt()
                        } else {
                            0.0
                        }
                    })
                    .collect();
                let plot = LinePlot::new(format!("{stage}: {m}"), axis.clone(), m.clone()).series(
                    Series::new("mean ± std over seeds", xs, means)
                        .with_std(stds)
                        .markers(),
                );
                if let Ok(img) = Figure::row(vec![plot.panel()])
                    .panel_size(640, 420)
                    .render()
                {
                    let tmp = std::env::temp_dir().join(format!(
                        "eqflow-report-{}-{}.png",
                        std::process::id(),
                        out.len()
                    ));
                    if img.save_png(&tmp).is_ok() {
                        if let Ok(bytes) = std::fs::read(&tmp) {
                            out.push((format!("{stage}: {m} vs {axis}"), bytes));
                        }
                        let _ = std::fs::remove_file(&tmp);
                    }
                }
            }
        }
    }
    out
}

const STYLE: &str = "body{font-family:DejaVu Sans,Helvetica,Arial,sans-serif;margin:2em auto;max-width:1200px;color:#222;padding:0 1em}\
h1{font-weight:600}h2{border-bottom:2px solid #9BE1E1;padding-bottom:.2em;margin-top:2em}\
table{border-collapse:collapse;margin:.5em 0;font-size:14px}td,th{border:1px solid #ddd;padding:4px 8px;text-align:left}\
th{background:#f3f7fb}td.n{text-align:right;font-variant-numeric:tabular-nums}code{font-size:12px}\
.gallery{display:flex;flex-wrap:wrap;gap:16px}.gallery figure{margin:0;max-width:560px;border:1px solid #ddd;padding:6px;background:#fff}\
.gallery img{max-width:100%}figcaption{font-size:13px;color:#444}.point{background:#fafcfe;border:1px solid #e3e9ef;padding:.5em 1em;margin:1em 0;border-radius:6px}\
details{margin:.3em 0}.muted{color:#777}";

const CHECK_SCRIPT: &str = "<script>\
window.__errors=[];window.addEventListener('error',function(e){window.__errors.push(String(e.message||e));document.body.dataset.errors=window.__errors.length;},true);\
window.addEventListener('load',function(){var im=document.images,ok=0;for(var i=0;i<im.length;i++){if(im[i].complete&&im[i].naturalWidth>0)ok++;}\
document.body.dataset.images=ok+'/'+im.length;document.body.dataset.errors=window.__errors.length;});\
</script>";

/// Writes the report for `plan` to `out` (default `<cache>/reports/<pipeline>.html`).
pub fn write_report(
    plan: &Plan,
    cache: &Cache,
    out: Option<&Path>,
) -> anyhow::Result<ReportSummary> {
    let rows = collect_results(plan, cache)?;
    let summary = exec::run(
        plan,
        cache,
        &plan.order,
        &RunOptions {
            dry_run: true,
            jobs: 1,
            ..RunOptions::default()
        },
    );
    let path = out.map(Path::to_path_buf).unwrap_or_else(|| {
        cache
            .root()
            .join("reports")
            .join(format!("{}.html", plan.name))
    });
    let mut h = String::new();
    let _ = write!(
        h,
        "<!DOCTYPE html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>eqflow report: {name}</title><style>{STYLE}</style>{CHECK_SCRIPT}</head><body>\
         <h1>{name}</h1><p class=\"muted\">pipeline <code>{file}</code> · eqflow {ver} · device {dev} · generated {now}</p>",
        name = esc(&plan.name),
        file = esc(&plan.path.display().to_string()),
        ver = env!("CARGO_PKG_VERSION"),
        dev = esc(&plan.device),
        now = exec::rfc3339(std::time::SystemTime::now()),
    );
    // Stages and their state.
    let _ = write!(h, "<h2>Stages</h2>{}<table><tr><th>stage</th><th>kind</th><th>state</th><th>key</th><th>time</th><th>started</th><th>host</th></tr>", dag_svg(plan));
    let mut missing = 0;
    for o in &summary.outcomes {
        let (state, time, started, host) =
            match (&o.status, o.key.as_deref().map(|k| cache.lookup(k))) {
                (Status::Cached, Some(Lookup::Valid(m))) => (
                    "cached".to_string(),
                    format!("{:.1} s", m.duration_s),
                    m.started.clone(),
                    m.host.clone(),
                ),
                (Status::WouldRun(why), _) => {
                    missing += 1;
                    (
                        format!("not cached: {why}"),
                        String::new(),
                        String::new(),
                        String::new(),
                    )
                }
                (s, _) => (
                    format!("{s:?}"),
                    String::new(),
                    String::new(),
                    String::new(),
                ),
            };
        let _ = write!(
            h,
            "<tr><td>{}</td><td>{}</td><td>{}</td><td><code>{}</code></td><td class=\"n\">{}</td><td>{}</td><td>{}</td></tr>",
            esc(&o.label),
            esc(&o.kind),
            esc(&state),
            esc(o.key.as_deref().unwrap_or("-")),
            time,
            esc(&started),
            esc(&host)
        );
    }
    h.push_str("</table>");
    // Aggregates over seeds and metric-vs-parameter plots.
    let json = super::results::results_table(plan, cache, super::ResultsFormat::Json)?;
    let doc: serde_json::Value = serde_json::from_str(&json)?;
    if let Some(aggs) = doc["aggregates"].as_array().filter(|a| !a.is_empty()) {
        h.push_str("<h2>Across seeds</h2>");
        for a in aggs {
            let _ = write!(h, "<h3>{} <span class=\"muted\">{} · n = {}</span></h3><table><tr><th>metric</th><th>mean</th><th>std</th><th>n</th></tr>", esc(a["stage"].as_str().unwrap_or("")), esc(&a["coords"].to_string()), a["n"]);
            if let Some(ms) = a["metrics"].as_object() {
                for (k, v) in ms {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td><td class=\"n\">{}</td></tr>",
                        esc(k),
                        num(v["mean"].as_f64().unwrap_or(f64::NAN)),
                        num(v["std"].as_f64().unwrap_or(f64::NAN)),
                        v["n"]
                    );
                }
            }
            h.push_str("</table>");
        }
    }
    let plots = sweep_plots(&rows);
    let mut figures = 0;
    if !plots.is_empty() {
        h.push_str("<h2>Metrics against swept parameters</h2><div class=\"gallery\">");
        for (caption, bytes) in &plots {
            figures += 1;
            let _ = write!(
                h,
                "<figure><img alt=\"{c}\" src=\"{}\"><figcaption>{c}</figcaption></figure>",
                png_uri(bytes),
                c = esc(caption)
            );
        }
        h.push_str("</div>");
    }
    // Results grouped by sweep point.
    h.push_str("<h2>Results by sweep point</h2>");
    let mut groups: BTreeMap<String, Vec<&ResultRow>> = BTreeMap::new();
    for r in &rows {
        let point = if r.coords.is_empty() {
            "shared by every point".to_string()
        } else {
            r.coords
                .iter()
                .map(|(k, v)| format!("{k} = {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        groups.entry(point).or_default().push(r);
    }
    for (point, members) in &groups {
        let _ = write!(h, "<div class=\"point\"><h3>{}</h3>", esc(point));
        for r in members {
            let _ = write!(
                h,
                "<h4>{} <span class=\"muted\">({}, key <code>{}</code>, {:.1} s)</span></h4>",
                esc(&r.label),
                esc(&r.kind),
                esc(&r.key),
                r.duration_s
            );
            if !r.metrics.is_empty() {
                h.push_str("<table><tr><th>metric</th><th>value</th></tr>");
                for (k, v) in &r.metrics {
                    let _ = write!(
                        h,
                        "<tr><td>{}</td><td class=\"n\">{}</td></tr>",
                        esc(k),
                        num(*v)
                    );
                }
                h.push_str("</table>");
            }
            let _ = write!(
                h,
                "<details><summary>parameters</summary><pre>{}</pre></details>",
                esc(&serde_json::to_string_pretty(&r.params)?)
            );
            let figs = figures_in(&cache.entry_dir(&r.key));
            if !figs.is_empty() {
                h.push_str("<div class=\"gallery\">");
                for f in figs {
                    let bytes = std::fs::read(&f)?;
                    let mime = if f.extension().is_some_and(|x| x == "gif") {
                        "image/gif"
                    } else {
                        "image/png"
                    };
                    let uri = format!(
                        "data:{mime};base64,{}",
                        base64::engine::general_purpose::STANDARD.encode(&bytes)
                    );
                    let name = f
                        .file_name()
                        .map(|s| s.to_string_lossy().into_owned())
                        .unwrap_or_default();
                    let caption = format!("{name} — made by {} at {}", r.label, point);
                    figures += 1;
                    let _ = write!(h, "<figure><img alt=\"{c}\" src=\"{uri}\"><figcaption>{c}</figcaption></figure>", c = esc(&caption));
                }
                h.push_str("</div>");
            }
        }
        h.push_str("</div>");
    }
    h.push_str("</body></html>\n");
    if let Some(dir) = path.parent() {
        std::fs::create_dir_all(dir)?;
    }
    let tmp = path.with_extension("html.tmp");
    std::fs::write(&tmp, h)?;
    std::fs::rename(&tmp, &path)?;
    Ok(ReportSummary {
        path,
        figures,
        instances: rows.len(),
        missing,
    })
}
