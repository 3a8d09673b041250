//! Cache keys: one serialisable struct, `BTreeMap`s only, a schema version, hashed with blake3.
//!
//! Never Rust's `Hash` (unstable across versions and platforms): the key is blake3 over the canonical JSON
//! of `KeyMaterial` (struct fields in declaration order, map keys sorted, floats in shortest round-trip form).

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

/// Bump when the encoding below changes meaning: every old entry stops matching.
pub const SCHEMA_VERSION: u32 = 1;

/// The compute engine, part of every key: outputs computed on another device or engine version are not reused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Engine {
    /// eqflow's version.
    pub eqflow: String,
    /// The tensor engine (dfdx) version.
    pub dfdx: String,
    /// `cpu` or `cuda` (with the GPU name and compute capability when known).
    pub device: String,
    /// Working float type.
    pub dtype: String,
}

impl Engine {
    /// The engine for `device`.
    pub fn for_device(device: &str) -> Engine {
        Engine {
            eqflow: env!("CARGO_PKG_VERSION").to_string(),
            dfdx: "0.13.0".to_string(),
            device: device.to_string(),
            dtype: "f32".to_string(),
        }
    }
}

/// Everything that determines a stage's outputs.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct KeyMaterial {
    /// [`SCHEMA_VERSION`].
    pub schema: u32,
    /// Stage kind.
    pub kind: String,
    /// The kind's implementation version.
    pub kind_version: u32,
    /// Resolved parameters (path parameters replaced by their content hash; inputs left out: see `inputs`).
    pub params: BTreeMap<String, serde_json::Value>,
    /// Input parameter -> the upstream entry's *output* hash (early cutoff).
    pub inputs: BTreeMap<String, String>,
    /// The engine.
    pub engine: Engine,
}

impl KeyMaterial {
    /// The cache key: 32 hex digits of blake3 over the canonical encoding.
    pub fn key(&self) -> String {
        let bytes = serde_json::to_vec(self).expect("key material always serialises");
        blake3::hash(&bytes).to_hex()[..32].to_string()
    }

    /// Human-readable reasons why `self` differs from `old` (empty when identical).
    pub fn differences(&self, old: &KeyMaterial) -> Vec<String> {
        let mut out = Vec::new();
        if self.kind != old.kind {
            out.push(format!("kind changed: {} -> {}", old.kind, self.kind));
        }
        if self.kind_version != old.kind_version || self.schema != old.schema {
            out.push(format!(
                "implementation of `{}` changed (v{} -> v{})",
                self.kind, old.kind_version, self.kind_version
            ));
        }
        for (k, v) in &self.params {
            match old.params.get(k) {
                Some(o) if o == v => {}
                Some(o) => out.push(format!("{k}: {o} -> {v}")),
                None => out.push(format!("{k}: (unset) -> {v}")),
            }
        }
        for (k, o) in &old.params {
            if !self.params.contains_key(k) {
                out.push(format!("{k}: {o} -> (unset)"));
            }
        }
        for (k, v) in &self.inputs {
            if old.inputs.get(k) != Some(v) {
                out.push(format!("input `{k}` changed"));
            }
        }
        if self.engine != old.engine {
            out.push(format!(
                "engine changed: {} {} {} -> {} {} {}",
                old.engine.eqflow,
                old.engine.device,
                old.engine.dtype,
                self.engine.eqflow,
                self.engine.device,
                self.engine.dtype
            ));
        }
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn material(lr: f64) -> KeyMaterial {
        let mut params = BTreeMap::new();
        params.insert("lr".to_string(), serde_json::json!(lr));
        params.insert("epochs".to_string(), serde_json::json!(5));
        KeyMaterial {
            schema: SCHEMA_VERSION,
            kind: "train".into(),
            kind_version: 1,
            params,
            inputs: BTreeMap::new(),
            engine: Engine::for_device("cpu"),
        }
    }

    #[test]
    fn key_is_stable_and_sensitive() {
        assert_eq!(material(0.01).key(), material(0.01).key());
        assert_ne!(material(0.01).key(), material(0.02).key());
        assert_eq!(material(0.01).key().len(), 32);
        assert_eq!(
            material(0.02).differences(&material(0.01)),
            vec!["lr: 0.01 -> 0.02".to_string()]
        );
    }
}
