//! The second pass: apply overrides (profile, `--set`, sweep point) to the raw file and type every value
//! against its stage kind's schema, collecting every problem before anything runs.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use super::load::{Override, PipelineFile, RawStage};
use super::schema::{list_input_key, DefaultValue, ParamType};
use super::slurm::{resolve_slurm, SlurmConfig, EXECUTORS};
use super::source::{suggest, Diagnostic, Diagnostics, Source};
use super::value::{Located, Params, Value};
use crate::stages::{all_kinds, find_kind, StageKind};

/// The compute device of a pipeline.
pub const DEVICES: &[&str] = &["cpu", "cuda"];
const PIPELINE_KEYS: &[&str] = &["name", "seed", "device", "description", "executor"];

/// A validated pipeline at one sweep point.
#[derive(Clone)]
pub struct Config {
    /// The pipeline file.
    pub path: PathBuf,
    /// Its directory (paths in parameters are relative to it).
    pub dir: PathBuf,
    /// `[pipeline] name` (default: the file stem).
    pub name: String,
    /// `[pipeline] seed`.
    pub seed: u64,
    /// `[pipeline] device`.
    pub device: String,
    /// Stages in file order.
    pub stages: Vec<StageConfig>,
    /// `[pipeline] executor`: `local` (default) or `slurm`.
    pub executor: String,
    /// `[slurm]`.
    pub slurm: SlurmConfig,
}

/// One validated stage.
#[derive(Clone)]
pub struct StageConfig {
    /// Its name.
    pub name: String,
    /// Its kind.
    pub kind: &'static dyn StageKind,
    /// Every schema key, resolved.
    pub params: Params,
    /// Input parameter name -> upstream stage name; item `i` of a list input `p` is under `p[i]`.
    pub inputs: BTreeMap<String, String>,
    /// Where each explicitly set key came from (for messages).
    pub sources: BTreeMap<String, Source>,
    /// The stage header's location.
    pub source: Source,
}

impl std::fmt::Debug for StageConfig {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("StageConfig")
            .field("name", &self.name)
            .field("kind", &self.kind.name())
            .field("params", &self.params)
            .field("inputs", &self.inputs)
            .finish()
    }
}

impl Config {
    /// The stage called `name`.
    pub fn stage(&self, name: &str) -> Option<&StageConfig> {
        self.stages.iter().find(|s| s.name == name)
    }
}

/// The overrides of profile `name`, or a diagnostic listing the profiles that exist.
pub fn profile_overrides(file: &PipelineFile, name: &str) -> Result<Vec<Override>, Diagnostics> {
    file.profiles.get(name).cloned().ok_or_else(|| {
        let known: Vec<&str> = file.profiles.keys().map(String::as_str).collect();
        let mut d = Diagnostic::new(
            Source::Cli(format!("--profile {name}")),
            None,
            format!("{} has no profile `{name}`", file.file.path.display()),
        );
        d = match suggest(name, known.iter().copied()) {
            Some(near) => d.with_help(format!("did you mean `{near}`?")),
            None if known.is_empty() => d.with_help("the file defines no [profiles.NAME] table"),
            None => d.with_help(format!("profiles in the file: {}", known.join(", "))),
        };
        Diagnostics(vec![d])
    })
}

/// Applies `overrides` in order and validates everything.
pub fn resolve(file: &PipelineFile, overrides: &[Override]) -> Result<Config, Diagnostics> {
    let mut diags = Diagnostics::default();
    let mut pipeline = file.pipeline.clone();
    let mut stages: Vec<RawStage> = file.stages.clone();
    let mut slurm = file.slurm.clone();
    for ov in overrides {
        if let Some(key) = ov.path.strip_prefix("slurm.") {
            slurm.insert(key.to_string(), ov.value.clone());
            continue;
        }
        apply_override(ov, &mut pipeline, &mut stages, &mut diags);
    }
    let slurm = resolve_slurm(&slurm, &mut diags);

    let path = file.file.path.clone();
    let dir = path.parent().map(Path::to_path_buf).unwrap_or_default();
    let dir = if dir.as_os_str().is_empty() {
        PathBuf::from(".")
    } else {
        dir
    };
    let stem = path
        .file_stem()
        .map(|s| s.to_string_lossy().into_owned())
        .unwrap_or_else(|| "pipeline".into());

    for (key, v) in &pipeline {
        if !PIPELINE_KEYS.contains(&key.as_str()) {
            let src = key_source(&file.pipeline_keys, key, &v.source);
            diags.push(unknown_key(
                &src,
                &format!("pipeline.{key}"),
                key,
                PIPELINE_KEYS,
            ));
        }
    }
    let name = match pipeline.get("name") {
        Some(Located {
            value: Value::Str(s),
            ..
        }) if !s.is_empty() => s.clone(),
        Some(v) => {
            diags.push(Diagnostic::new(
                v.source.clone(),
                Some("pipeline.name".into()),
                "must be a non-empty string",
            ));
            stem
        }
        None => stem,
    };
    let seed = match pipeline.get("seed") {
        Some(Located {
            value: Value::Int(i),
            ..
        }) if *i >= 0 => *i as u64,
        Some(v) => {
            diags.push(Diagnostic::new(
                v.source.clone(),
                Some("pipeline.seed".into()),
                format!("must be a non-negative integer, got {}", v.value),
            ));
            0
        }
        None => 0,
    };
    let device = match pipeline.get("device") {
        Some(Located {
            value: Value::Str(s),
            ..
        }) if DEVICES.contains(&s.as_str()) => s.clone(),
        Some(v) => {
            diags.push(Diagnostic::new(
                v.source.clone(),
                Some("pipeline.device".into()),
                format!("must be \"cpu\" or \"cuda\", got {}", v.value),
            ));
            "cpu".into()
        }
        None => "cpu".into(),
    };
    if device == "cuda" && !cfg!(feature = "cuda") {
        let src = pipeline
            .get("device")
            .map_or(Source::Default, |v| v.source.clone());
        diags.push(
            Diagnostic::new(src, Some("pipeline.device".into()), "this eqflow was built without CUDA support")
                .with_help("build with `cargo build --release --features cuda` on a machine with the CUDA toolkit, or use device = \"cpu\""),
        );
    }
    let executor = match pipeline.get("executor") {
        Some(Located {
            value: Value::Str(s),
            ..
        }) if EXECUTORS.contains(&s.as_str()) => s.clone(),
        Some(v) => {
            diags.push(Diagnostic::new(
                v.source.clone(),
                Some("pipeline.executor".into()),
                format!("must be \"local\" or \"slurm\", got {}", v.value),
            ));
            "local".into()
        }
        None => "local".into(),
    };

    let stage_names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
    let mut out = Vec::new();
    for raw in &stages {
        if let Some(sc) = resolve_stage(raw, seed, &dir, &stage_names, &mut diags) {
            out.push(sc);
        }
    }
    check_wiring(&out, &mut diags);
    if stages.is_empty() {
        diags.push(Diagnostic::new(
            Source::file(&file.file, Some(0..0)),
            None,
            "the pipeline has no stages: add a [stages.NAME] table with a `kind`",
        ));
    }
    diags.into_result(Config {
        path,
        dir,
        name,
        seed,
        device,
        stages: out,
        executor,
        slurm,
    })
}

fn apply_override(
    ov: &Override,
    pipeline: &mut BTreeMap<String, Located<Value>>,
    stages: &mut [RawStage],
    diags: &mut Diagnostics,
) {
    let parts: Vec<&str> = ov.path.split('.').collect();
    match parts.as_slice() {
        ["pipeline", key] => {
            pipeline.insert((*key).to_string(), ov.value.clone());
        }
        ["stages", stage, key] => match stages.iter_mut().find(|s| s.name == *stage) {
            Some(s) => {
                s.entries.insert((*key).to_string(), ov.value.clone());
            }
            None => {
                let names: Vec<&str> = stages.iter().map(|s| s.name.as_str()).collect();
                let mut d = Diagnostic::new(
                    ov.value.source.clone(),
                    Some(ov.path.clone()),
                    format!("there is no stage `{stage}`"),
                );
                if let Some(near) = suggest(stage, names.iter().copied()) {
                    d = d.with_help(format!("did you mean `stages.{near}.{key}`?"));
                }
                diags.push(d);
            }
        },
        _ => diags.push(
            Diagnostic::new(
                ov.value.source.clone(),
                Some(ov.path.clone()),
                "cannot override this key",
            )
            .with_help(
                "overridable keys look like `pipeline.seed`, `stages.NAME.KEY` or `slurm.KEY`",
            ),
        ),
    }
}

/// Where `key` is written in the file, unless its value came from elsewhere (`--set`, a profile).
fn key_source(keys: &BTreeMap<String, Source>, key: &str, value_source: &Source) -> Source {
    match (value_source, keys.get(key)) {
        (Source::File { .. }, Some(k)) => k.clone(),
        _ => value_source.clone(),
    }
}

fn unknown_key(source: &Source, full_key: &str, key: &str, valid: &[&str]) -> Diagnostic {
    let d = Diagnostic::new(
        source.clone(),
        Some(full_key.into()),
        format!("unknown key `{key}`"),
    );
    match suggest(key, valid.iter().copied()) {
        Some(near) => d.with_help(format!("did you mean `{near}`?")),
        None => d.with_help(format!("valid keys: {}", valid.join(", "))),
    }
}

fn resolve_stage(
    raw: &RawStage,
    pipeline_seed: u64,
    dir: &Path,
    stage_names: &[&str],
    diags: &mut Diagnostics,
) -> Option<StageConfig> {
    let prefix = format!("stages.{}", raw.name);
    let kind = match raw.entries.get("kind") {
        None => {
            diags.push(
                Diagnostic::new(
                    raw.source.clone(),
                    Some(format!("{prefix}.kind")),
                    "missing `kind`",
                )
                .with_help(format!(
                    "add `kind = \"...\"`; kinds: {}",
                    kind_names().join(", ")
                )),
            );
            return None;
        }
        Some(Located {
            value: Value::Str(k),
            source,
        }) => match find_kind(k) {
            Some(kind) => kind,
            None => {
                let mut d = Diagnostic::new(
                    source.clone(),
                    Some(format!("{prefix}.kind")),
                    format!("unknown stage kind \"{k}\""),
                );
                d = match suggest(k, kind_names()) {
                    Some(near) => d.with_help(format!("did you mean \"{near}\"?")),
                    None => d.with_help(format!("kinds: {}", kind_names().join(", "))),
                };
                diags.push(d);
                return None;
            }
        },
        Some(v) => {
            diags.push(Diagnostic::new(
                v.source.clone(),
                Some(format!("{prefix}.kind")),
                "must be a string",
            ));
            return None;
        }
    };
    let specs = kind.params();
    let valid: Vec<&str> = std::iter::once("kind")
        .chain(specs.iter().map(|s| s.name))
        .collect();
    let before = diags.0.len();
    for (key, v) in &raw.entries {
        if !valid.contains(&key.as_str()) {
            let d = unknown_key(
                &key_source(&raw.keys, key, &v.source),
                &format!("{prefix}.{key}"),
                key,
                &valid,
            );
            diags.push(Diagnostic {
                message: format!(
                    "unknown key `{key}` for a stage of kind \"{}\"",
                    kind.name()
                ),
                ..d
            });
        }
    }
    let mut params = BTreeMap::new();
    let mut inputs = BTreeMap::new();
    let mut sources = BTreeMap::new();
    for spec in &specs {
        let full = format!("{prefix}.{}", spec.name);
        let value = match raw.entries.get(spec.name) {
            Some(v) => {
                sources.insert(spec.name.to_string(), v.source.clone());
                match spec.check(&v.value) {
                    Ok(checked) => checked,
                    Err(msg) => {
                        diags.push(Diagnostic::new(v.source.clone(), Some(full), msg));
                        continue;
                    }
                }
            }
            None => match &spec.default {
                DefaultValue::Value(v) => v.clone(),
                DefaultValue::PipelineSeed => Value::Int(pipeline_seed as i64),
                DefaultValue::Absent => continue,
                DefaultValue::Required => {
                    diags.push(
                        Diagnostic::new(
                            raw.source.clone(),
                            Some(full.clone()),
                            format!("missing required key `{}`", spec.name),
                        )
                        .with_help(format!(
                            "{}: {} ({})",
                            spec.name,
                            spec.doc,
                            spec.type_doc()
                        )),
                    );
                    continue;
                }
            },
        };
        let src = sources
            .get(spec.name)
            .cloned()
            .unwrap_or_else(|| raw.source.clone());
        match spec.ty {
            ParamType::Input => {
                let Value::Str(target) = &value else { continue };
                if target.is_empty() && spec.default == DefaultValue::Absent {
                    continue;
                }
                if target == &raw.name {
                    diags.push(Diagnostic::new(
                        src,
                        Some(full),
                        format!("stage `{}` cannot read its own outputs", raw.name),
                    ));
                } else if !stage_names.contains(&target.as_str()) {
                    let mut d =
                        Diagnostic::new(src, Some(full), format!("no stage named `{target}`"));
                    if let Some(near) = suggest(target, stage_names.iter().copied()) {
                        d = d.with_help(format!("did you mean `{near}`?"));
                    } else {
                        d = d.with_help(format!("stages: {}", stage_names.join(", ")));
                    }
                    diags.push(d);
                } else {
                    inputs.insert(spec.name.to_string(), target.clone());
                }
            }
            ParamType::InputList => {
                let Value::List(items) = &value else { continue };
                for (i, item) in items.iter().enumerate() {
                    let Value::Str(target) = item else { continue };
                    if target == &raw.name {
                        diags.push(Diagnostic::new(
                            src.clone(),
                            Some(full.clone()),
                            format!("stage `{}` cannot read its own outputs", raw.name),
                        ));
                    } else if !stage_names.contains(&target.as_str()) {
                        let mut d = Diagnostic::new(
                            src.clone(),
                            Some(full.clone()),
                            format!("no stage named `{target}`"),
                        );
                        if let Some(near) = suggest(target, stage_names.iter().copied()) {
                            d = d.with_help(format!("did you mean `{near}`?"));
                        }
                        diags.push(d);
                    } else {
                        inputs.insert(list_input_key(spec.name, i), target.clone());
                    }
                }
            }
            ParamType::Path => {
                let Value::Str(p) = &value else { continue };
                if !dir.join(p).is_file() {
                    diags.push(Diagnostic::new(
                        src,
                        Some(full),
                        format!(
                            "file not found: {} (paths are relative to the pipeline file)",
                            dir.join(p).display()
                        ),
                    ));
                }
            }
            _ => {}
        }
        params.insert(spec.name.to_string(), value);
    }
    let params = Params(params);
    if diags.0.len() == before {
        for (key, msg) in kind.check(&params) {
            let src = sources
                .get(key)
                .cloned()
                .unwrap_or_else(|| raw.source.clone());
            diags.push(Diagnostic::new(src, Some(format!("{prefix}.{key}")), msg));
        }
    }
    Some(StageConfig {
        name: raw.name.clone(),
        kind,
        params,
        inputs,
        sources,
        source: raw.source.clone(),
    })
}

/// Runs every kind's [`StageKind::check_wiring`] with the kinds of its inputs and its explicitly set keys.
fn check_wiring(stages: &[StageConfig], diags: &mut Diagnostics) {
    for sc in stages {
        let input_kinds: BTreeMap<String, &'static str> = sc
            .inputs
            .iter()
            .filter_map(|(param, up)| {
                stages
                    .iter()
                    .find(|s| &s.name == up)
                    .map(|s| (param.clone(), s.kind.name()))
            })
            .collect();
        let explicit: std::collections::BTreeSet<String> = sc.sources.keys().cloned().collect();
        for (key, msg) in sc.kind.check_wiring(&sc.params, &explicit, &input_kinds) {
            let src = sc
                .sources
                .get(key)
                .cloned()
                .unwrap_or_else(|| sc.source.clone());
            diags.push(Diagnostic::new(
                src,
                Some(format!("stages.{}.{key}", sc.name)),
                msg,
            ));
        }
    }
}

fn kind_names() -> Vec<&'static str> {
    all_kinds().iter().map(|k| k.name()).collect()
}
