//! `eqflow results`: every cached stage instance's parameters and metrics, and for sweeps the metrics of
//! each stage aggregated over seeds (mean ± std with n).
//!
//! The JSON form is a stable interface (documented in docs/pipeline-reference.md):
//! `{"pipeline", "file", "instances": [{"label","stage","kind","key","coords","params","metrics","duration_s"}],
//!   "aggregates": [{"stage","coords","n","metrics": {name: {"mean","std","n"}}}]}`.

use std::collections::BTreeMap;
use std::fmt::Write as _;

use serde::Serialize;

use crate::cache::{Cache, Lookup};
use crate::exec::{self, RunOptions, Status};
use crate::plan::Plan;

/// Output format.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ResultsFormat {
    /// Aligned text.
    Table,
    /// CSV (one row per instance).
    Csv,
    /// JSON (stable).
    Json,
}

/// One instance's results.
#[derive(Debug, Clone, Serialize)]
pub struct ResultRow {
    /// Instance label.
    pub label: String,
    /// Stage name.
    pub stage: String,
    /// Kind.
    pub kind: String,
    /// Cache key.
    pub key: String,
    /// Sweep coordinates.
    pub coords: BTreeMap<String, serde_json::Value>,
    /// Resolved parameters.
    pub params: serde_json::Value,
    /// Flattened numeric metrics (`a.b.mean` style keys for nested objects).
    pub metrics: BTreeMap<String, f64>,
    /// Seconds the stage took when it ran.
    pub duration_s: f64,
}

/// Metrics of a stage aggregated over seed axes.
#[derive(Debug, Clone, Serialize)]
pub struct Aggregate {
    /// Stage name.
    pub stage: String,
    /// Non-seed coordinates of the group.
    pub coords: BTreeMap<String, serde_json::Value>,
    /// Number of instances.
    pub n: usize,
    /// Metric -> mean, std, n.
    pub metrics: BTreeMap<String, serde_json::Value>,
}

fn is_seed_axis(axis: &str) -> bool {
    axis == "seed" || axis.ends_with(".seed")
}

fn flatten(prefix: &str, v: &serde_json::Value, out: &mut BTreeMap<String, f64>) {
    match v {
        serde_json::Value::Number(n) => {
            if let Some(x) = n.as_f64() {
                out.insert(prefix.to_string(), x);
            }
        }
        serde_json::Value::Object(m) => {
            for (k, v) in m {
                let key = if prefix.is_empty() {
                    k.clone()
                } else {
                    format!("{prefix}.{k}")
                };
                flatten(&key, v, out);
            }
        }
        _ => {}
    }
}

/// Rows for every cached instance of `plan`.
pub fn collect_results(plan: &Plan, cache: &Cache) -> anyhow::Result<Vec<ResultRow>> {
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
    let mut rows = Vec::new();
    for (o, n) in summary.outcomes.iter().zip(&plan.order) {
        if o.status != Status::Cached {
            continue;
        }
        let key = o.key.clone().expect("cached outcomes have keys");
        let Lookup::Valid(manifest) = cache.lookup(&key) else {
            continue;
        };
        let inst = &plan.graph[*n];
        let mut metrics = BTreeMap::new();
        if let Ok(v) =
            crate::io::read_json::<serde_json::Value>(&cache.entry_dir(&key).join("metrics.json"))
        {
            flatten("", &v, &mut metrics);
        }
        rows.push(ResultRow {
            label: inst.label.clone(),
            stage: inst.stage.clone(),
            kind: inst.kind.name().into(),
            key,
            coords: inst
                .coords
                .iter()
                .map(|(k, v)| {
                    (
                        k.clone(),
                        serde_json::to_value(v).expect("values serialise"),
                    )
                })
                .collect(),
            params: serde_json::to_value(&inst.params).expect("params serialise"),
            metrics,
            duration_s: manifest.duration_s,
        });
    }
    Ok(rows)
}

/// Instances grouped by (stage, non-seed coordinates).
type Groups<'a> =
    BTreeMap<(String, String), (BTreeMap<String, serde_json::Value>, Vec<&'a ResultRow>)>;

fn aggregate(rows: &[ResultRow]) -> Vec<Aggregate> {
    let mut groups: Groups<'_> = BTreeMap::new();
    for r in rows {
        let coords: BTreeMap<String, serde_json::Value> = r
            .coords
            .iter()
            .filter(|(k, _)| !is_seed_axis(k))
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        let has_seed = r.coords.keys().any(|k| is_seed_axis(k));
        if !has_seed {
            continue;
        }
        let id = (
            r.stage.clone(),
            serde_json::to_string(&coords).expect("serialise"),
        );
        groups
            .entry(id)
            .or_insert_with(|| (coords, Vec::new()))
            .1
            .push(r);
    }
    groups
        .into_iter()
        .map(|((stage, _), (coords, members))| {
            let mut names: Vec<&String> = members.iter().flat_map(|r| r.metrics.keys()).collect();
            names.sort();
            names.dedup();
            let metrics = names
                .into_iter()
                .map(|m| {
                    let vals: Vec<f64> = members
                        .iter()
                        .filter_map(|r| r.metrics.get(m).copied())
                        .collect();
                    (m.clone(), crate::stages::spread(&vals))
                })
                .collect();
            Aggregate {
                stage,
                coords,
                n: members.len(),
                metrics,
            }
        })
        .collect()
}

/// The results in `format`.
pub fn results_table(plan: &Plan, cache: &Cache, format: ResultsFormat) -> anyhow::Result<String> {
    let rows = collect_results(plan, cache)?;
    let aggs = aggregate(&rows);
    let mut out = String::new();
    match format {
        ResultsFormat::Json => {
            let doc = serde_json::json!({
                "pipeline": plan.name,
                "file": plan.path.display().to_string(),
                "instances": rows,
                "aggregates": aggs,
            });
            out = serde_json::to_string_pretty(&doc)? + "\n";
        }
        ResultsFormat::Csv => {
            let mut metric_names: Vec<&String> =
                rows.iter().flat_map(|r| r.metrics.keys()).collect();
            metric_names.sort();
            metric_names.dedup();
            let mut param_names: Vec<String> = rows
                .iter()
                .flat_map(|r| {
                    r.params
                        .as_object()
                        .map(|o| o.keys().cloned().collect::<Vec<_>>())
                        .unwrap_or_default()
                })
                .collect();
            param_names.sort();
            param_names.dedup();
            let header: Vec<String> = ["label", "stage", "kind", "key"]
                .iter()
                .map(|s| s.to_string())
                .chain(param_names.iter().map(|p| format!("param.{p}")))
                .chain(metric_names.iter().map(|m| format!("metric.{m}")))
                .collect();
            let _ = writeln!(out, "{}", header.join(","));
            for r in &rows {
                let mut cells = vec![
                    csv(&r.label),
                    r.stage.clone(),
                    r.kind.clone(),
                    r.key.clone(),
                ];
                for p in &param_names {
                    cells.push(
                        r.params
                            .get(p)
                            .map(|v| {
                                csv(&match v {
                                    serde_json::Value::String(s) => s.clone(),
                                    other => other.to_string(),
                                })
                            })
                            .unwrap_or_default(),
                    );
                }
                for m in &metric_names {
                    cells.push(
                        r.metrics
                            .get(*m)
                            .map(|v| format!("{v}"))
                            .unwrap_or_default(),
                    );
                }
                let _ = writeln!(out, "{}", cells.join(","));
            }
        }
        ResultsFormat::Table => {
            if rows.is_empty() {
                let _ = writeln!(
                    out,
                    "no cached results for {} yet; run `eqflow run {}`",
                    plan.name,
                    plan.path.display()
                );
            }
            for r in &rows {
                if r.metrics.is_empty() {
                    continue;
                }
                let _ = writeln!(out, "{} ({})", r.label, r.kind);
                for (k, v) in &r.metrics {
                    let _ = writeln!(out, "    {k:<40} {}", fmt_num(*v));
                }
            }
            if !aggs.is_empty() {
                let _ = writeln!(out, "\nacross seeds (mean ± std, n):");
                for a in &aggs {
                    let coords = a
                        .coords
                        .iter()
                        .map(|(k, v)| format!("{k}={v}"))
                        .collect::<Vec<_>>()
                        .join(", ");
                    let _ = writeln!(out, "{} [{}] n={}", a.stage, coords, a.n);
                    for (k, v) in &a.metrics {
                        let (m, s, n) = (
                            v["mean"].as_f64().unwrap_or(f64::NAN),
                            v["std"].as_f64().unwrap_or(f64::NAN),
                            v["n"].as_u64().unwrap_or(0),
                        );
                        let _ =
                            writeln!(out, "    {k:<40} {} ± {} (n={n})", fmt_num(m), fmt_num(s));
                    }
                }
            }
        }
    }
    Ok(out)
}

fn csv(s: &str) -> String {
    if s.contains([',', '"', '\n']) {
        format!("\"{}\"", s.replace('"', "\"\""))
    } else {
        s.to_string()
    }
}

fn fmt_num(v: f64) -> String {
    if v == 0.0 || (v.abs() >= 1e-3 && v.abs() < 1e6) {
        format!("{v:.4}")
    } else {
        format!("{v:.3e}")
    }
}
