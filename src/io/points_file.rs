//! A user's own snapshots: points from CSV (header optional) or `.npy` of shape [N, d].
//!
//! "From snapshots" is the point of the method, so reading them must not be a guessing game: every problem
//! (ragged rows, non-numbers, NaN/Inf, wrong dtype or rank, too few rows) names the file and the row.

use std::path::Path;

use anyhow::{bail, Context};

/// Points read from a file: n rows of d values, row-major.
#[derive(Debug, Clone, PartialEq)]
pub struct PointsFile {
    /// Rows.
    pub n: usize,
    /// Columns.
    pub d: usize,
    /// Row-major values.
    pub data: Vec<f64>,
    /// Column names, if the CSV had a header.
    pub columns: Option<Vec<String>>,
}

/// Reads `.csv` / `.txt` or `.npy` by extension.
pub fn read_points(path: &Path) -> anyhow::Result<PointsFile> {
    let ext = path
        .extension()
        .map(|e| e.to_string_lossy().to_lowercase())
        .unwrap_or_default();
    let pts = match ext.as_str() {
        "npy" => read_npy_points(path)?,
        "csv" | "txt" | "tsv" => read_csv_points(path)?,
        other => bail!(
            "{}: unsupported points file type `.{other}` (use .csv or .npy)",
            path.display()
        ),
    };
    if pts.n < 2 {
        bail!(
            "{}: needs at least 2 points, found {}",
            path.display(),
            pts.n
        );
    }
    Ok(pts)
}

fn read_csv_points(path: &Path) -> anyhow::Result<PointsFile> {
    let text =
        std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let mut data = Vec::new();
    let mut d = 0usize;
    let mut n = 0usize;
    let mut columns = None;
    let mut first = true;
    for (i, line) in text.lines().enumerate() {
        let row = i + 1;
        let line = line.trim();
        if line.is_empty() || line.starts_with('#') {
            continue;
        }
        let sep = if line.contains(',') {
            ','
        } else if line.contains('\t') {
            '\t'
        } else {
            ' '
        };
        let fields: Vec<&str> = line
            .split(sep)
            .map(str::trim)
            .filter(|f| !(sep == ' ' && f.is_empty()))
            .collect();
        let parsed: Vec<Result<f64, &str>> = fields
            .iter()
            .map(|f| f.parse::<f64>().map_err(|_| *f))
            .collect();
        if first {
            first = false;
            if parsed.iter().any(Result::is_err) {
                if parsed.iter().all(Result::is_err) {
                    columns = Some(fields.iter().map(|s| s.to_string()).collect());
                    d = fields.len();
                    continue;
                }
            }
        }
        if d == 0 {
            d = fields.len();
        }
        if fields.len() != d {
            bail!(
                "{}: row {row} has {} values, expected {d} (like the first row)",
                path.display(),
                fields.len()
            );
        }
        for (c, v) in parsed.into_iter().enumerate() {
            match v {
                Ok(x) if x.is_finite() => data.push(x),
                Ok(x) => bail!(
                    "{}: row {row}, column {}: {x} is not a finite number",
                    path.display(),
                    c + 1
                ),
                Err(f) => bail!(
                    "{}: row {row}, column {}: `{f}` is not a number",
                    path.display(),
                    c + 1
                ),
            }
        }
        n += 1;
    }
    if d == 0 {
        bail!("{}: no data rows", path.display());
    }
    Ok(PointsFile {
        n,
        d,
        data,
        columns,
    })
}

fn read_npy_points(path: &Path) -> anyhow::Result<PointsFile> {
    let bytes = std::fs::read(path).with_context(|| format!("cannot read {}", path.display()))?;
    if bytes.len() < 10 || &bytes[..6] != b"\x93NUMPY" {
        bail!("{}: not a .npy file (bad magic)", path.display());
    }
    let (header_len, start) = match bytes[6] {
        1 => (u16::from_le_bytes([bytes[8], bytes[9]]) as usize, 10),
        2 | 3 => {
            if bytes.len() < 12 {
                bail!("{}: truncated .npy header", path.display());
            }
            (
                u32::from_le_bytes([bytes[8], bytes[9], bytes[10], bytes[11]]) as usize,
                12,
            )
        }
        v => bail!("{}: unsupported .npy version {v}", path.display()),
    };
    let header = std::str::from_utf8(
        bytes
            .get(start..start + header_len)
            .context("truncated .npy header")?,
    )
    .with_context(|| format!("{}: .npy header is not text", path.display()))?;
    let field = |name: &str| -> Option<&str> {
        let i = header.find(&format!("'{name}'"))?;
        let rest = header[i + name.len() + 2..]
            .trim_start()
            .strip_prefix(':')?
            .trim_start();
        Some(rest)
    };
    let descr = field("descr")
        .and_then(|r| r.strip_prefix('\''))
        .and_then(|r| r.split('\'').next())
        .unwrap_or("");
    let size = match descr {
        "<f8" => 8,
        "<f4" => 4,
        other => bail!("{}: dtype `{other}` is not supported; save the points as float32 or float64 (little-endian)", path.display()),
    };
    if field("fortran_order").is_some_and(|r| r.starts_with("True")) {
        bail!(
            "{}: Fortran-ordered arrays are not supported; save with np.ascontiguousarray",
            path.display()
        );
    }
    let shape_txt = field("shape")
        .and_then(|r| r.strip_prefix('('))
        .and_then(|r| r.split(')').next())
        .unwrap_or("");
    let shape: Vec<usize> = shape_txt
        .split(',')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .map(|s| s.parse::<usize>())
        .collect::<Result<_, _>>()
        .with_context(|| format!("{}: cannot read the shape `({shape_txt})`", path.display()))?;
    if shape.len() != 2 {
        bail!(
            "{}: expected an array of rank 2 (points x dimensions), found shape {shape:?}",
            path.display()
        );
    }
    let (n, d) = (shape[0], shape[1]);
    let body = &bytes[start + header_len..];
    if body.len() < n * d * size {
        bail!(
            "{}: file is truncated: {} bytes of data for shape {shape:?}",
            path.display(),
            body.len()
        );
    }
    let data: Vec<f64> = if size == 8 {
        body.chunks_exact(8)
            .take(n * d)
            .map(|c| f64::from_le_bytes(c.try_into().expect("8 bytes")))
            .collect()
    } else {
        body.chunks_exact(4)
            .take(n * d)
            .map(|c| f32::from_le_bytes(c.try_into().expect("4 bytes")) as f64)
            .collect()
    };
    if let Some(i) = data.iter().position(|x| !x.is_finite()) {
        bail!(
            "{}: row {} (0-based {}), column {}: value {} is not finite",
            path.display(),
            i / d + 1,
            i / d,
            i % d + 1,
            data[i]
        );
    }
    Ok(PointsFile {
        n,
        d,
        data,
        columns: None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::io::{write_npy, Tensor};

    fn write(dir: &Path, name: &str, text: &str) -> std::path::PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).expect("write");
        p
    }

    #[test]
    fn csv_with_and_without_header() {
        let dir = tempfile::tempdir().expect("tempdir");
        let a = read_points(&write(dir.path(), "a.csv", "x,y\n1,2\n3.5,-4\n")).expect("a");
        assert_eq!(
            (a.n, a.d, a.data.clone()),
            (2, 2, vec![1.0, 2.0, 3.5, -4.0])
        );
        assert_eq!(a.columns, Some(vec!["x".into(), "y".into()]));
        let b = read_points(&write(dir.path(), "b.csv", "1 2 3\n4 5 6\n")).expect("b");
        assert_eq!((b.n, b.d), (2, 3));
    }

    #[test]
    fn csv_errors_name_file_and_row() {
        let dir = tempfile::tempdir().expect("tempdir");
        let e = read_points(&write(dir.path(), "r.csv", "1,2\n3,4,5\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("r.csv: row 2 has 3 values, expected 2"), "{e}");
        let e = read_points(&write(dir.path(), "n.csv", "1,2\n3,abc\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("n.csv: row 2, column 2: `abc` is not a number"),
            "{e}"
        );
        let e = read_points(&write(dir.path(), "i.csv", "1,2\n3,inf\n"))
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("row 2, column 2: inf is not a finite number"),
            "{e}"
        );
        let e = read_points(&write(dir.path(), "o.csv", "1,2\n"))
            .unwrap_err()
            .to_string();
        assert!(e.contains("needs at least 2 points, found 1"), "{e}");
    }

    #[test]
    fn npy_round_trip_and_errors() {
        let dir = tempfile::tempdir().expect("tempdir");
        let p = dir.path().join("p.npy");
        write_npy(
            &p,
            &Tensor::F32 {
                shape: vec![3, 2],
                data: vec![1.0, 2.0, 3.0, 4.0, 5.0, 6.0],
            },
        )
        .expect("write");
        let r = read_points(&p).expect("read");
        assert_eq!((r.n, r.d, r.data[5]), (3, 2, 6.0));
        let q = dir.path().join("q.npy");
        write_npy(
            &q,
            &Tensor::F64 {
                shape: vec![6],
                data: vec![0.0; 6],
            },
        )
        .expect("write");
        assert!(read_points(&q).unwrap_err().to_string().contains("rank 2"));
        let z = dir.path().join("z.npy");
        write_npy(
            &z,
            &Tensor::F64 {
                shape: vec![2, 2],
                data: vec![0.0, f64::NAN, 1.0, 1.0],
            },
        )
        .expect("write");
        assert!(read_points(&z)
            .unwrap_err()
            .to_string()
            .contains("row 1 (0-based 0), column 2"));
        let mut bytes = std::fs::read(&p).expect("read");
        let pos = bytes.windows(3).position(|w| w == b"<f4").expect("descr");
        bytes[pos + 1] = b'i';
        std::fs::write(&q, bytes).expect("write");
        assert!(read_points(&q)
            .unwrap_err()
            .to_string()
            .contains("dtype `<i4` is not supported"));
    }
}
