//! Reading a pipeline file into raw, located values (the first of two passes; `resolve.rs` is the second).
//!
//! toml_edit keeps byte spans for every key and value, which is what lets every later error point at a line
//! and column. Nothing is typed here beyond TOML's own types: each stage kind's schema does that.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use toml_edit::Item;

use super::source::{suggest, Diagnostic, Diagnostics, Source, SourceFile};
use super::value::{Located, Value};

/// One `[stages.NAME]` table.
#[derive(Debug, Clone)]
pub struct RawStage {
    /// Its name.
    pub name: String,
    /// Where its header is.
    pub source: Source,
    /// Its keys (including `kind`), with the origins of their values.
    pub entries: BTreeMap<String, Located<Value>>,
    /// Where each key itself is written (for "unknown key" messages).
    pub keys: BTreeMap<String, Source>,
}

/// A dotted-path assignment (`stages.score.epochs = 5`) from a profile, `--set` or a sweep axis.
#[derive(Debug, Clone)]
pub struct Override {
    /// `pipeline.KEY` or `stages.NAME.KEY`.
    pub path: String,
    /// The value and where it was written.
    pub value: Located<Value>,
}

impl Override {
    /// Parses `KEY=VALUE` from the command line.
    pub fn parse_cli(arg: &str) -> Result<Override, String> {
        let (path, value) = arg.split_once('=').ok_or_else(|| {
            format!("`--set {arg}`: expected KEY=VALUE, e.g. --set stages.score.epochs=5")
        })?;
        let path = path.trim();
        if path.is_empty() {
            return Err(format!("`--set {arg}`: the key is empty"));
        }
        Ok(Override {
            path: path.to_string(),
            value: Located {
                value: Value::parse_cli(value.trim()),
                source: Source::Cli(format!("--set {arg}")),
            },
        })
    }
}

/// The `[sweep]` table, before expansion.
#[derive(Debug, Clone, Default)]
pub struct RawSweep {
    /// Where the table is.
    pub source: Option<Source>,
    /// `seeds = N` or `seeds = [..]`.
    pub seeds: Option<Located<Value>>,
    /// `seed_key = "stages.dynamics.seed"`: which key the seed axis sets (default `pipeline.seed`).
    pub seed_key: Option<Located<Value>>,
    /// `[sweep.grid]` axes: cartesian product.
    pub grid: Vec<Override>,
    /// `[sweep.zip]` axes: walked together.
    pub zip: Vec<Override>,
}

/// A parsed pipeline file.
#[derive(Debug, Clone)]
pub struct PipelineFile {
    /// The file.
    pub file: Arc<SourceFile>,
    /// `[pipeline]` entries.
    pub pipeline: BTreeMap<String, Located<Value>>,
    /// Where each `[pipeline]` key is written.
    pub pipeline_keys: BTreeMap<String, Source>,
    /// Stages in file order.
    pub stages: Vec<RawStage>,
    /// `[profiles.NAME]` overrides.
    pub profiles: BTreeMap<String, Vec<Override>>,
    /// `[sweep]`.
    pub sweep: RawSweep,
    /// `[slurm]`, flattened to dotted keys (`partition`, `dataset.cpus`); validated in `slurm.rs`.
    pub slurm: BTreeMap<String, Located<Value>>,
}

const TOP_KEYS: &[&str] = &["pipeline", "stages", "profiles", "sweep", "slurm"];

impl PipelineFile {
    /// Reads and parses `path`.
    pub fn load(path: &Path) -> Result<PipelineFile, Diagnostics> {
        let text = std::fs::read_to_string(path).map_err(|e| {
            let file = Arc::new(SourceFile {
                path: path.to_path_buf(),
                text: String::new(),
            });
            Diagnostics(vec![Diagnostic::new(
                Source::file(&file, None),
                None,
                format!("cannot read the pipeline file: {e}"),
            )])
        })?;
        Self::parse(path, text)
    }

    /// Parses `text` as if read from `path`.
    pub fn parse(path: &Path, text: String) -> Result<PipelineFile, Diagnostics> {
        let file = Arc::new(SourceFile {
            path: path.to_path_buf(),
            text,
        });
        let doc = toml_edit::ImDocument::parse(file.text.clone()).map_err(|e| {
            let msg = e.message().trim().to_string();
            Diagnostics(vec![Diagnostic::new(
                Source::file(&file, e.span()),
                None,
                format!("malformed TOML: {msg}"),
            )])
        })?;
        let mut diags = Diagnostics::default();
        let root = doc.as_table();
        let mut out = PipelineFile {
            file: Arc::clone(&file),
            pipeline: BTreeMap::new(),
            pipeline_keys: BTreeMap::new(),
            stages: Vec::new(),
            profiles: BTreeMap::new(),
            sweep: RawSweep::default(),
            slurm: BTreeMap::new(),
        };
        for (key, item) in root.iter() {
            let key_src = Source::file(&file, root.key(key).and_then(|k| k.span()));
            match key {
                "pipeline" => match item.as_table_like() {
                    Some(_) => {
                        (out.pipeline, out.pipeline_keys) =
                            leaf_entries(&file, item, key, &mut diags)
                    }
                    None => diags.push(Diagnostic::new(
                        key_src,
                        Some(key.into()),
                        "must be a table: [pipeline]",
                    )),
                },
                "stages" => match item.as_table() {
                    Some(stages) => {
                        for (name, st) in stages.iter() {
                            let src = Source::file(&file, stages.key(name).and_then(|k| k.span()));
                            if st.as_table_like().is_none() {
                                diags.push(Diagnostic::new(
                                    src,
                                    Some(format!("stages.{name}")),
                                    format!("must be a table: [stages.{name}]"),
                                ));
                                continue;
                            }
                            let (entries, keys) =
                                leaf_entries(&file, st, &format!("stages.{name}"), &mut diags);
                            out.stages.push(RawStage {
                                name: name.to_string(),
                                source: src,
                                entries,
                                keys,
                            });
                        }
                    }
                    None => diags.push(Diagnostic::new(
                        key_src,
                        Some(key.into()),
                        "must be a table of stages: [stages.NAME]",
                    )),
                },
                "profiles" => match item.as_table() {
                    Some(profiles) => {
                        for (name, p) in profiles.iter() {
                            let mut list = Vec::new();
                            flatten(&file, p, "", &mut list, &mut diags);
                            out.profiles.insert(name.to_string(), list);
                        }
                    }
                    None => diags.push(Diagnostic::new(
                        key_src,
                        Some(key.into()),
                        "must be a table: [profiles.NAME]",
                    )),
                },
                "sweep" => out.sweep = parse_sweep(&file, item, key_src, &mut diags),
                "slurm" => match item.as_table_like() {
                    Some(_) => {
                        let mut list = Vec::new();
                        flatten(&file, item, "", &mut list, &mut diags);
                        out.slurm = list.into_iter().map(|o| (o.path, o.value)).collect();
                    }
                    None => diags.push(Diagnostic::new(
                        key_src,
                        Some(key.into()),
                        "must be a table: [slurm]",
                    )),
                },
                other => {
                    let mut d = Diagnostic::new(
                        key_src,
                        Some(other.into()),
                        format!("unknown top-level table `{other}`"),
                    );
                    d = match suggest(other, TOP_KEYS.iter().copied()) {
                        Some(near) => d.with_help(format!("did you mean `{near}`?")),
                        None => d.with_help(format!("valid tables: {}", TOP_KEYS.join(", "))),
                    };
                    diags.push(d);
                }
            }
        }
        diags.into_result(out)
    }
}

type Entries = (BTreeMap<String, Located<Value>>, BTreeMap<String, Source>);

/// The leaf values of a table whose values must all be plain values (no nested tables), and key positions.
fn leaf_entries(
    file: &Arc<SourceFile>,
    item: &Item,
    prefix: &str,
    diags: &mut Diagnostics,
) -> Entries {
    let mut out = BTreeMap::new();
    let mut keys = BTreeMap::new();
    let Some(table) = item.as_table_like() else {
        return (out, keys);
    };
    for (key, value) in table.iter() {
        let span = table.get_key_value(key).and_then(|(k, _)| k.span());
        let src = Source::file(file, value.span().or(span.clone()));
        let key_src = Source::file(file, span);
        keys.insert(key.to_string(), key_src.clone());
        match value.as_value().and_then(Value::from_toml) {
            Some(v) => {
                out.insert(
                    key.to_string(),
                    Located {
                        value: v,
                        source: src,
                    },
                );
            }
            None => diags.push(Diagnostic::new(
                key_src,
                Some(format!("{prefix}.{key}")),
                "must be a plain value (number, string, boolean or array), not a table or date",
            )),
        }
    }
    (out, keys)
}

/// Flattens nested tables (and dotted keys) into `a.b.c = value` assignments.
fn flatten(
    file: &Arc<SourceFile>,
    item: &Item,
    prefix: &str,
    out: &mut Vec<Override>,
    diags: &mut Diagnostics,
) {
    if let Some(table) = item.as_table_like() {
        for (key, value) in table.iter() {
            let path = if prefix.is_empty() {
                key.to_string()
            } else {
                format!("{prefix}.{key}")
            };
            if value.is_table_like() {
                flatten(file, value, &path, out, diags);
            } else {
                let src = Source::file(
                    file,
                    value
                        .span()
                        .or_else(|| table.get_key_value(key).and_then(|(k, _)| k.span())),
                );
                match value.as_value().and_then(Value::from_toml) {
                    Some(v) => out.push(Override {
                        path,
                        value: Located {
                            value: v,
                            source: src,
                        },
                    }),
                    None => diags.push(Diagnostic::new(src, Some(path), "must be a plain value")),
                }
            }
        }
    }
}

fn parse_sweep(
    file: &Arc<SourceFile>,
    item: &Item,
    src: Source,
    diags: &mut Diagnostics,
) -> RawSweep {
    let mut sweep = RawSweep {
        source: Some(src.clone()),
        ..RawSweep::default()
    };
    let Some(table) = item.as_table_like() else {
        diags.push(Diagnostic::new(
            src,
            Some("sweep".into()),
            "must be a table: [sweep]",
        ));
        return sweep;
    };
    const SWEEP_KEYS: &[&str] = &["seeds", "seed_key", "grid", "zip"];
    for (key, value) in table.iter() {
        let key_src = Source::file(file, table.get_key_value(key).and_then(|(k, _)| k.span()));
        let val_src = Source::file(file, value.span().or_else(|| key_src_span(&key_src)));
        match key {
            "seeds" | "seed_key" => match value.as_value().and_then(Value::from_toml) {
                Some(v) => {
                    let located = Some(Located {
                        value: v,
                        source: val_src,
                    });
                    if key == "seeds" {
                        sweep.seeds = located;
                    } else {
                        sweep.seed_key = located;
                    }
                }
                None => diags.push(Diagnostic::new(
                    key_src,
                    Some(format!("sweep.{key}")),
                    "must be a plain value",
                )),
            },
            "grid" | "zip" => {
                let mut axes = Vec::new();
                flatten(file, value, "", &mut axes, diags);
                if key == "grid" {
                    sweep.grid = axes;
                } else {
                    sweep.zip = axes;
                }
            }
            other => {
                let mut d = Diagnostic::new(
                    key_src,
                    Some(format!("sweep.{other}")),
                    format!("unknown sweep key `{other}`"),
                );
                if let Some(near) = suggest(other, SWEEP_KEYS.iter().copied()) {
                    d = d.with_help(format!("did you mean `{near}`?"));
                } else {
                    d = d.with_help(format!("valid keys: {}", SWEEP_KEYS.join(", ")));
                }
                diags.push(d);
            }
        }
    }
    sweep
}

fn key_src_span(src: &Source) -> Option<std::ops::Range<usize>> {
    match src {
        Source::File { span, .. } => Some(span.clone()),
        _ => None,
    }
}
