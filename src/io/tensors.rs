//! Named f32/f64 tensors in safetensors files (memory-mapped on read, so a 1 GB dataset is never held twice),
//! and `.npy` export for numpy users.

use std::collections::{BTreeMap, HashMap};
use std::path::Path;

use anyhow::{bail, Context};
use safetensors::{tensor::TensorView, Dtype, SafeTensors};

/// An owned tensor: shape and row-major data.
#[derive(Debug, Clone, PartialEq)]
pub enum Tensor {
    /// 32-bit floats.
    F32 {
        /// Shape.
        shape: Vec<usize>,
        /// Row-major data.
        data: Vec<f32>,
    },
    /// 64-bit floats.
    F64 {
        /// Shape.
        shape: Vec<usize>,
        /// Row-major data.
        data: Vec<f64>,
    },
}

impl Tensor {
    /// The shape.
    pub fn shape(&self) -> &[usize] {
        match self {
            Tensor::F32 { shape, .. } | Tensor::F64 { shape, .. } => shape,
        }
    }

    fn bytes(&self) -> Vec<u8> {
        match self {
            Tensor::F32 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
            Tensor::F64 { data, .. } => data.iter().flat_map(|x| x.to_le_bytes()).collect(),
        }
    }

    fn dtype(&self) -> Dtype {
        match self {
            Tensor::F32 { .. } => Dtype::F32,
            Tensor::F64 { .. } => Dtype::F64,
        }
    }

    /// The data as f64 (converting from f32 if needed).
    pub fn to_f64(&self) -> Vec<f64> {
        match self {
            Tensor::F32 { data, .. } => data.iter().map(|&x| x as f64).collect(),
            Tensor::F64 { data, .. } => data.clone(),
        }
    }

    /// The data as f32 (converting from f64 if needed).
    pub fn to_f32(&self) -> Vec<f32> {
        match self {
            Tensor::F32 { data, .. } => data.clone(),
            Tensor::F64 { data, .. } => data.iter().map(|&x| x as f32).collect(),
        }
    }
}

const METADATA_KEY: &str = "eqflow";

/// Writes `tensors` with string `metadata` to `path`.
pub fn write_tensors(
    path: &Path,
    tensors: &BTreeMap<String, Tensor>,
    metadata: &BTreeMap<String, String>,
) -> anyhow::Result<()> {
    let bytes: Vec<(String, Vec<u8>)> = tensors
        .iter()
        .map(|(k, t)| (k.clone(), t.bytes()))
        .collect();
    let views: Vec<(String, TensorView<'_>)> = tensors
        .iter()
        .zip(&bytes)
        .map(|((k, t), (_, b))| {
            Ok((
                k.clone(),
                TensorView::new(t.dtype(), t.shape().to_vec(), b)?,
            ))
        })
        .collect::<Result<_, safetensors::SafeTensorError>>()?;
    // safetensors keeps metadata in a HashMap, whose order varies from process to process: store one key
    // holding canonical JSON so that identical tensors always give identical bytes.
    let mut meta: HashMap<String, String> = HashMap::new();
    meta.insert(
        METADATA_KEY.to_string(),
        serde_json::to_string(metadata).expect("string map serialises"),
    );
    safetensors::serialize_to_file(views, &Some(meta), path)
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// A memory-mapped safetensors file.
pub struct TensorFile {
    path: std::path::PathBuf,
    map: memmap2::Mmap,
}

/// Fills one tensor of [`write_f32_streamed`]: `fill(name, write)` calls `write` with consecutive values.
pub type TensorFiller<'a> =
    dyn FnMut(&str, &mut dyn FnMut(&[f32]) -> anyhow::Result<()>) -> anyhow::Result<()> + 'a;

/// Writes a safetensors file whose F32 tensors are streamed from `chunks` instead of held in memory: each
/// `(name, shape)` of `tensors` is filled, in order, by calling `fill(name, write)` which must write exactly
/// `shape.iter().product()` values. The bytes are those [`write_tensors`] would write for the same data.
pub fn write_f32_streamed(
    path: &Path,
    tensors: &[(String, Vec<usize>)],
    metadata: &BTreeMap<String, String>,
    fill: &mut TensorFiller<'_>,
) -> anyhow::Result<()> {
    use std::io::Write;
    let mut header = serde_json::Map::new();
    header.insert(
        "__metadata__".into(),
        serde_json::json!({ METADATA_KEY: serde_json::to_string(metadata).expect("string map serialises") }),
    );
    let mut off = 0usize;
    for (name, shape) in tensors {
        let n = shape.iter().product::<usize>() * 4;
        header.insert(
            name.clone(),
            serde_json::json!({ "dtype": "F32", "shape": shape, "data_offsets": [off, off + n] }),
        );
        off += n;
    }
    let mut text = serde_json::to_string(&header).expect("header serialises");
    while !text.len().is_multiple_of(8) {
        text.push(' ');
    }
    let file =
        std::fs::File::create(path).with_context(|| format!("cannot write {}", path.display()))?;
    let mut out = std::io::BufWriter::new(file);
    out.write_all(&(text.len() as u64).to_le_bytes())?;
    out.write_all(text.as_bytes())?;
    for (name, shape) in tensors {
        let want = shape.iter().product::<usize>();
        let mut written = 0usize;
        fill(name, &mut |vals: &[f32]| {
            written += vals.len();
            for v in vals {
                out.write_all(&v.to_le_bytes())?;
            }
            Ok(())
        })?;
        if written != want {
            bail!("tensor `{name}`: {written} values written, shape {shape:?} needs {want}");
        }
    }
    out.flush()
        .with_context(|| format!("cannot write {}", path.display()))?;
    Ok(())
}

/// Opens `path` (memory-mapped).
pub fn read_tensors(path: &Path) -> anyhow::Result<TensorFile> {
    let file =
        std::fs::File::open(path).with_context(|| format!("cannot open {}", path.display()))?;
    // SAFETY: cache entries are immutable once committed; nothing writes to a mapped file.
    let map = unsafe { memmap2::Mmap::map(&file) }
        .with_context(|| format!("cannot map {}", path.display()))?;
    SafeTensors::deserialize(&map)
        .with_context(|| format!("{} is not a valid safetensors file", path.display()))?;
    Ok(TensorFile {
        path: path.to_path_buf(),
        map,
    })
}

impl TensorFile {
    fn parsed(&self) -> SafeTensors<'_> {
        SafeTensors::deserialize(&self.map).expect("validated when opened")
    }

    /// The string metadata.
    pub fn metadata(&self) -> BTreeMap<String, String> {
        let (_, meta) = SafeTensors::read_metadata(&self.map).expect("validated when opened");
        let raw: BTreeMap<String, String> = meta
            .metadata()
            .clone()
            .map(|m| m.into_iter().collect())
            .unwrap_or_default();
        match raw
            .get(METADATA_KEY)
            .and_then(|j| serde_json::from_str(j).ok())
        {
            Some(m) => m,
            None => raw,
        }
    }

    /// Tensor `name`, whatever its float dtype.
    pub fn get(&self, name: &str) -> anyhow::Result<Tensor> {
        let st = self.parsed();
        let view = st
            .tensor(name)
            .with_context(|| format!("{} has no tensor `{name}`", self.path.display()))?;
        let shape = view.shape().to_vec();
        let data = view.data();
        Ok(match view.dtype() {
            Dtype::F32 => Tensor::F32 {
                shape,
                data: data
                    .chunks_exact(4)
                    .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")))
                    .collect(),
            },
            Dtype::F64 => Tensor::F64 {
                shape,
                data: data
                    .chunks_exact(8)
                    .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
                    .collect(),
            },
            other => bail!(
                "{}: tensor `{name}` has dtype {other:?}; eqflow reads F32 and F64",
                self.path.display()
            ),
        })
    }

    /// Tensor `name` (F32) borrowed straight from the mapped file, without copying: the way large image
    /// datasets are read (a 1 GB dataset is never held twice). Fails for other dtypes or ranks.
    pub fn f32_view(&self, name: &str, rank: usize) -> anyhow::Result<(Vec<usize>, &[f32])> {
        let (shape, offset, len) = {
            let st = self.parsed();
            let view = st
                .tensor(name)
                .with_context(|| format!("{} has no tensor `{name}`", self.path.display()))?;
            if view.dtype() != Dtype::F32 || view.shape().len() != rank {
                bail!(
                    "{}: tensor `{name}` is {:?} {:?}, expected F32 with {rank} axes",
                    self.path.display(),
                    view.dtype(),
                    view.shape()
                );
            }
            let data = view.data();
            let offset = data.as_ptr() as usize - self.map.as_ptr() as usize;
            (view.shape().to_vec(), offset, data.len())
        };
        let bytes = &self.map[offset..offset + len];
        // SAFETY: f32 has no invalid bit patterns; `align_to` only yields the correctly aligned middle part,
        // and we accept the view only when there is no unaligned prefix or suffix.
        let (pre, mid, post) = unsafe { bytes.align_to::<f32>() };
        if !pre.is_empty() || !post.is_empty() || cfg!(target_endian = "big") {
            bail!(
                "{}: tensor `{name}` is not 4-byte aligned little-endian data; rewrite the file with eqflow",
                self.path.display()
            );
        }
        Ok((shape, mid))
    }

    /// Tensor `name` as f32 data, with its shape checked to have `rank` axes.
    pub fn f32(&self, name: &str, rank: usize) -> anyhow::Result<(Vec<usize>, Vec<f32>)> {
        let t = self.get(name)?;
        if t.shape().len() != rank {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {rank} axes",
                self.path.display(),
                t.shape()
            );
        }
        Ok((t.shape().to_vec(), t.to_f32()))
    }

    /// Tensor `name` as f64 data, with its shape checked to have `rank` axes.
    pub fn f64(&self, name: &str, rank: usize) -> anyhow::Result<(Vec<usize>, Vec<f64>)> {
        let t = self.get(name)?;
        if t.shape().len() != rank {
            bail!(
                "{}: tensor `{name}` has shape {:?}, expected {rank} axes",
                self.path.display(),
                t.shape()
            );
        }
        Ok((t.shape().to_vec(), t.to_f64()))
    }
}

/// Writes a tensor as a numpy `.npy` file (format version 1.0, little-endian, C order).
pub fn write_npy(path: &Path, tensor: &Tensor) -> anyhow::Result<()> {
    let descr = match tensor {
        Tensor::F32 { .. } => "<f4",
        Tensor::F64 { .. } => "<f8",
    };
    let shape = tensor.shape();
    let shape_txt = match shape.len() {
        1 => format!("({},)", shape[0]),
        _ => format!(
            "({})",
            shape
                .iter()
                .map(|s| s.to_string())
                .collect::<Vec<_>>()
                .join(", ")
        ),
    };
    let mut header =
        format!("{{'descr': '{descr}', 'fortran_order': False, 'shape': {shape_txt}, }}");
    // Pad so that the data starts on a 64-byte boundary, as numpy does.
    let total = 10 + header.len() + 1;
    header.push_str(&" ".repeat((64 - total % 64) % 64));
    header.push('\n');
    let mut out = Vec::with_capacity(10 + header.len() + tensor.bytes().len());
    out.extend_from_slice(b"\x93NUMPY\x01\x00");
    out.extend_from_slice(&(header.len() as u16).to_le_bytes());
    out.extend_from_slice(header.as_bytes());
    out.extend_from_slice(&tensor.bytes());
    std::fs::write(path, out).with_context(|| format!("cannot write {}", path.display()))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn round_trip_with_metadata() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.safetensors");
        let mut ts = BTreeMap::new();
        ts.insert(
            "x".to_string(),
            Tensor::F64 {
                shape: vec![2, 2],
                data: vec![1.0, 2.0, 3.0, 4.5],
            },
        );
        ts.insert(
            "y".to_string(),
            Tensor::F32 {
                shape: vec![3],
                data: vec![0.5, -1.0, 2.0],
            },
        );
        let mut meta = BTreeMap::new();
        meta.insert("kind".to_string(), "points".to_string());
        write_tensors(&path, &ts, &meta).expect("write");
        let f = read_tensors(&path).expect("read");
        assert_eq!(f.get("x").expect("x"), ts["x"]);
        assert_eq!(f.f32("y", 1).expect("y").1, vec![0.5, -1.0, 2.0]);
        assert_eq!(f.metadata()["kind"], "points");
        assert!(f
            .f64("x", 3)
            .unwrap_err()
            .to_string()
            .contains("expected 3 axes"));
    }

    #[test]
    fn npy_header_is_aligned() {
        let dir = tempfile::tempdir().expect("tempdir");
        let path = dir.path().join("t.npy");
        write_npy(
            &path,
            &Tensor::F32 {
                shape: vec![2, 3],
                data: vec![0.0; 6],
            },
        )
        .expect("write");
        let bytes = std::fs::read(&path).expect("read");
        let header_len = u16::from_le_bytes([bytes[8], bytes[9]]) as usize;
        assert_eq!((10 + header_len) % 64, 0);
        assert_eq!(bytes.len(), 10 + header_len + 24);
        assert!(String::from_utf8_lossy(&bytes[10..10 + header_len]).contains("'shape': (2, 3)"));
    }
}
