//! The checkpoint format shared by the image networks: f32 tensors in a safetensors file whose only
//! metadata key, `"arch"`, holds the architecture as JSON (safetensors keeps metadata in a HashMap, so a
//! second key would be written in a different order from run to run and identical models would give
//! different bytes — which would defeat the cache's early cutoff).

use std::path::Path;

use anyhow::{bail, Context, Result};
use safetensors::{tensor::Dtype, tensor::TensorView, SafeTensors};

/// A named f32 tensor: name, shape, row-major values.
pub type NamedTensor = (String, Vec<usize>, Vec<f32>);

/// Writes `tensors` with `arch` (serialised to JSON) as the metadata; `what` names the model in errors.
pub fn save<A: serde::Serialize>(
    path: &Path,
    tensors: &[NamedTensor],
    arch: &A,
    what: &str,
) -> Result<()> {
    let bytes: Vec<Vec<u8>> = tensors
        .iter()
        .map(|(_, _, v)| v.iter().flat_map(|x| x.to_le_bytes()).collect())
        .collect();
    let views = tensors
        .iter()
        .zip(&bytes)
        .map(|((n, shape, _), b)| Ok((n.clone(), TensorView::new(Dtype::F32, shape.clone(), b)?)))
        .collect::<Result<Vec<_>, safetensors::SafeTensorError>>()
        .context("building safetensors views")?;
    let meta =
        std::collections::HashMap::from([("arch".to_string(), serde_json::to_string(arch)?)]);
    safetensors::serialize_to_file(views, &Some(meta), path)
        .with_context(|| format!("writing {what} checkpoint {}", path.display()))
}

/// A checkpoint read back: its architecture and tensors, checked by name, dtype and shape on access.
pub struct Loaded {
    path: std::path::PathBuf,
    bytes: Vec<u8>,
}

/// Reads a checkpoint and parses its `"arch"` metadata as `A`.
pub fn load<A: serde::de::DeserializeOwned>(path: &Path, what: &str) -> Result<(A, Loaded)> {
    let bytes = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
    let (_, meta) = SafeTensors::read_metadata(&bytes).context("parsing safetensors header")?;
    let arch_json = meta
        .metadata()
        .as_ref()
        .and_then(|m| m.get("arch"))
        .with_context(|| {
            format!(
                "{} has no \"arch\" metadata: not a {what} checkpoint",
                path.display()
            )
        })?;
    let arch: A = serde_json::from_str(arch_json).context("parsing \"arch\" metadata")?;
    SafeTensors::deserialize(&bytes).context("parsing safetensors")?;
    Ok((
        arch,
        Loaded {
            path: path.to_path_buf(),
            bytes,
        },
    ))
}

impl Loaded {
    /// Tensor `name`, which must be F32 of exactly `shape`.
    pub fn tensor(&self, name: &str, shape: &[usize]) -> Result<Vec<f32>> {
        let st = SafeTensors::deserialize(&self.bytes).expect("validated when loaded");
        let t = st
            .tensor(name)
            .with_context(|| format!("{}: missing tensor {name}", self.path.display()))?;
        if t.dtype() != Dtype::F32 || t.shape() != shape {
            bail!(
                "{}: tensor {name} is {:?} {:?}, expected F32 {shape:?}",
                self.path.display(),
                t.dtype(),
                t.shape()
            );
        }
        Ok(t.data()
            .chunks_exact(4)
            .map(|b| f32::from_le_bytes([b[0], b[1], b[2], b[3]]))
            .collect())
    }
}
