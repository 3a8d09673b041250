//! File formats shared by stages: tensors in safetensors (and .npy for numpy users), JSON sidecars.

pub mod icon;
pub mod points_file;
pub mod tensors;

pub use icon::read_icon;
pub use points_file::{read_points, PointsFile};
pub use tensors::{read_tensors, write_f32_streamed, write_npy, write_tensors, Tensor, TensorFile};

/// Writes `value` as pretty JSON.
pub fn write_json(path: &std::path::Path, value: &impl serde::Serialize) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value)?;
    std::fs::write(path, text + "\n")
        .map_err(|e| anyhow::anyhow!("cannot write {}: {e}", path.display()))
}

/// Reads JSON.
pub fn read_json<T: serde::de::DeserializeOwned>(path: &std::path::Path) -> anyhow::Result<T> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| anyhow::anyhow!("cannot read {}: {e}", path.display()))?;
    serde_json::from_str(&text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}
