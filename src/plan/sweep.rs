//! Sweep expansion: `[sweep]` seeds, grid (cartesian) and zip axes become a list of points, each an ordinary
//! set of overrides. Points are plain parameter assignments, so stages they do not touch are shared.

use std::collections::BTreeMap;

use crate::config::{Diagnostic, Diagnostics, Located, Override, RawSweep, Source, Value};

/// One point of a sweep: the axis values (for labels and results) and the overrides that realise it.
#[derive(Debug, Clone, Default)]
pub struct SweepPoint {
    /// Axis name (`seed`, or the dotted key without `stages.`) -> value.
    pub coords: BTreeMap<String, Value>,
    /// The assignments.
    pub overrides: Vec<Override>,
}

/// The name of an axis as shown to people: the key without its `stages.` prefix.
pub fn axis_name(path: &str) -> String {
    path.strip_prefix("stages.").unwrap_or(path).to_string()
}

/// Applies `sweep.seeds`, `sweep.seed_key`, `sweep.grid.KEY` and `sweep.zip.KEY` overrides to the table.
pub fn apply_overrides(sweep: &mut RawSweep, overrides: &[Override]) -> Result<(), Diagnostics> {
    let mut diags = Diagnostics::default();
    for ov in overrides {
        let rest = ov.path.strip_prefix("sweep.").unwrap_or(&ov.path);
        let axis = |list: &mut Vec<Override>, key: &str| {
            // `sweep.grid."stages.a.n"` and `sweep.grid.stages.a.n` name the same axis.
            let key = key.trim_matches('"');
            let axis = Override {
                path: key.to_string(),
                value: ov.value.clone(),
            };
            match list.iter_mut().find(|a| a.path == key) {
                Some(existing) => *existing = axis,
                None => list.push(axis),
            }
        };
        if rest == "seeds" {
            sweep.seeds = Some(ov.value.clone());
        } else if rest == "seed_key" {
            sweep.seed_key = Some(ov.value.clone());
        } else if let Some(key) = rest.strip_prefix("grid.") {
            axis(&mut sweep.grid, key);
        } else if let Some(key) = rest.strip_prefix("zip.") {
            axis(&mut sweep.zip, key);
        } else {
            diags.push(
                Diagnostic::new(ov.value.source.clone(), Some(ov.path.clone()), "cannot override this sweep key")
                    .with_help("sweep keys: sweep.seeds, sweep.seed_key, sweep.grid.\"stages.NAME.KEY\", sweep.zip.\"stages.NAME.KEY\""),
            );
        }
    }
    diags.into_result(())
}

/// Expands the sweep (a single empty point when there is none).
pub fn expand(sweep: &RawSweep) -> Result<Vec<SweepPoint>, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut points = vec![SweepPoint::default()];
    let table_src = sweep.source.clone().unwrap_or(Source::Default);

    if let Some(seeds) = &sweep.seeds {
        let values: Vec<i64> = match &seeds.value {
            Value::Int(n) if *n >= 1 => (0..*n).collect(),
            Value::List(items) if !items.is_empty() => {
                let ints: Option<Vec<i64>> = items
                    .iter()
                    .map(|v| {
                        if let Value::Int(i) = v {
                            (*i >= 0).then_some(*i)
                        } else {
                            None
                        }
                    })
                    .collect();
                match ints {
                    Some(v) => v,
                    None => {
                        diags.push(Diagnostic::new(
                            seeds.source.clone(),
                            Some("sweep.seeds".into()),
                            "seeds must be non-negative integers",
                        ));
                        Vec::new()
                    }
                }
            }
            other => {
                diags.push(Diagnostic::new(
                    seeds.source.clone(),
                    Some("sweep.seeds".into()),
                    format!("expected a count >= 1 or a non-empty list of seeds, got {other}"),
                ));
                Vec::new()
            }
        };
        let key = match &sweep.seed_key {
            None => "pipeline.seed".to_string(),
            Some(Located {
                value: Value::Str(s),
                ..
            }) => s.clone(),
            Some(v) => {
                diags.push(Diagnostic::new(
                    v.source.clone(),
                    Some("sweep.seed_key".into()),
                    "must be a string such as \"stages.dynamics.seed\"",
                ));
                "pipeline.seed".to_string()
            }
        };
        let src = sweep
            .seed_key
            .as_ref()
            .map(|v| v.source.clone())
            .unwrap_or_else(|| seeds.source.clone());
        let axis = values.into_iter().map(Value::Int).collect::<Vec<_>>();
        points = product(points, &[("seed".to_string(), key, axis, src)]);
    } else if let Some(k) = &sweep.seed_key {
        diags.push(Diagnostic::new(
            k.source.clone(),
            Some("sweep.seed_key".into()),
            "seed_key without seeds",
        ));
    }

    for ov in &sweep.grid {
        match &ov.value.value {
            Value::List(items) if !items.is_empty() => {
                points = product(
                    points,
                    &[(
                        axis_name(&ov.path),
                        ov.path.clone(),
                        items.clone(),
                        ov.value.source.clone(),
                    )],
                );
            }
            Value::List(_) => diags.push(Diagnostic::new(
                ov.value.source.clone(),
                Some(format!("sweep.grid.{}", ov.path)),
                "empty axis: give at least one value",
            )),
            other => diags.push(Diagnostic::new(
                ov.value.source.clone(),
                Some(format!("sweep.grid.{}", ov.path)),
                format!("a sweep axis must be an array of values, got {other}"),
            )),
        }
    }

    if !sweep.zip.is_empty() {
        let mut len = None;
        let mut axes = Vec::new();
        for ov in &sweep.zip {
            let key = format!("sweep.zip.{}", ov.path);
            match &ov.value.value {
                Value::List(items) if !items.is_empty() => {
                    match len {
                        None => len = Some((items.len(), ov.path.clone())),
                        Some((n, ref first)) if n != items.len() => diags.push(Diagnostic::new(
                            ov.value.source.clone(),
                            Some(key),
                            format!("zip axes must have equal lengths: this one has {}, `{first}` has {n}", items.len()),
                        )),
                        _ => {}
                    }
                    axes.push((
                        axis_name(&ov.path),
                        ov.path.clone(),
                        items.clone(),
                        ov.value.source.clone(),
                    ));
                }
                Value::List(_) => diags.push(Diagnostic::new(
                    ov.value.source.clone(),
                    Some(key),
                    "empty axis: give at least one value",
                )),
                other => diags.push(Diagnostic::new(
                    ov.value.source.clone(),
                    Some(key),
                    format!("a sweep axis must be an array, got {other}"),
                )),
            }
        }
        if diags.0.is_empty() {
            points = product(points, &axes);
        }
    }
    let _ = table_src;
    diags.into_result(points)
}

/// Multiplies `points` by one axis group: a single axis (grid) or several walked together (zip).
fn product(
    points: Vec<SweepPoint>,
    axes: &[(String, String, Vec<Value>, Source)],
) -> Vec<SweepPoint> {
    let n = axes.first().map_or(0, |a| a.2.len());
    let mut out = Vec::with_capacity(points.len() * n);
    for p in &points {
        for i in 0..n {
            let mut q = p.clone();
            for (name, path, values, src) in axes {
                q.coords.insert(name.clone(), values[i].clone());
                q.overrides.push(Override {
                    path: path.clone(),
                    value: Located {
                        value: values[i].clone(),
                        source: src.clone(),
                    },
                });
            }
            out.push(q);
        }
    }
    out
}
