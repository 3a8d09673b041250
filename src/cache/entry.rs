//! Cache entries: lookup with verification, per-key locks, staging directories and atomic commit.

use std::collections::BTreeMap;
use std::fs::{self, File};
use std::io;
use std::path::{Path, PathBuf};
use std::time::UNIX_EPOCH;

use anyhow::Context;
use serde::{Deserialize, Serialize};

use super::key::KeyMaterial;

/// Files every entry has that are not outputs (their contents vary from run to run).
const BOOKKEEPING: &[&str] = &["manifest.json", "log.txt"];

/// One output file as recorded in the manifest.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FileRecord {
    /// Size in bytes.
    pub size: u64,
    /// blake3, hex.
    pub blake3: String,
    /// Modification time (ns since the epoch) when committed: unchanged size and mtime skip rehashing.
    pub mtime_ns: u128,
}

/// `manifest.json` of an entry.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Manifest {
    /// The cache key.
    pub key: String,
    /// The stage instance that made it (first maker; entries are shared between pipelines).
    pub stage: String,
    /// The pipeline it was made for.
    pub pipeline: String,
    /// Everything the key was computed from.
    pub material: KeyMaterial,
    /// Output files (relative paths) with sizes and hashes.
    pub outputs: BTreeMap<String, FileRecord>,
    /// blake3 over the outputs' names and hashes: what downstream keys use.
    pub output_hash: String,
    /// Start time (RFC 3339, UTC).
    pub started: String,
    /// End time (RFC 3339, UTC).
    pub finished: String,
    /// Wall-clock seconds.
    pub duration_s: f64,
    /// Host name.
    pub host: String,
    /// Compute threads the stage had.
    pub threads: usize,
}

/// The state of a key in the cache.
#[derive(Debug)]
pub enum Lookup {
    /// No entry.
    Missing,
    /// A complete, verified entry.
    Valid(Box<Manifest>),
    /// An entry that fails verification, and why.
    Corrupt(String),
}

/// A cache directory.
#[derive(Debug, Clone)]
pub struct Cache {
    root: PathBuf,
}

/// An exclusive per-key lock, released on drop (or by the kernel if the process dies).
pub struct KeyLock {
    _file: File,
}

/// A temporary directory a stage writes into; removed on drop unless committed.
pub struct Staging {
    dir: PathBuf,
    key: String,
    committed: bool,
}

impl Staging {
    /// The directory to write outputs into.
    pub fn dir(&self) -> &Path {
        &self.dir
    }
}

impl Drop for Staging {
    fn drop(&mut self) {
        if !self.committed {
            let _ = fs::remove_dir_all(&self.dir);
        }
    }
}

impl Cache {
    /// A cache rooted at `root` (nothing is created until something is written).
    pub fn new(root: impl Into<PathBuf>) -> Cache {
        Cache { root: root.into() }
    }

    /// The root directory.
    pub fn root(&self) -> &Path {
        &self.root
    }

    /// The directory of entry `key`.
    pub fn entry_dir(&self, key: &str) -> PathBuf {
        self.root.join("entries").join(key)
    }

    /// All entry keys present.
    pub fn keys(&self) -> io::Result<Vec<String>> {
        let dir = self.root.join("entries");
        if !dir.exists() {
            return Ok(Vec::new());
        }
        let mut keys: Vec<String> = fs::read_dir(dir)?
            .filter_map(|e| e.ok())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Looks `key` up and verifies its files against the manifest.
    pub fn lookup(&self, key: &str) -> Lookup {
        let dir = self.entry_dir(key);
        if !dir.exists() {
            return Lookup::Missing;
        }
        let manifest: Manifest = match fs::read_to_string(dir.join("manifest.json"))
            .map_err(|e| e.to_string())
            .and_then(|t| serde_json::from_str(&t).map_err(|e| e.to_string()))
        {
            Ok(m) => m,
            Err(e) => return Lookup::Corrupt(format!("unreadable manifest.json ({e})")),
        };
        if manifest.key != key {
            return Lookup::Corrupt(format!("manifest names key {}", manifest.key));
        }
        for (name, rec) in &manifest.outputs {
            let path = dir.join(name);
            let meta = match fs::metadata(&path) {
                Ok(m) => m,
                Err(_) => return Lookup::Corrupt(format!("output `{name}` is missing")),
            };
            if meta.len() != rec.size {
                return Lookup::Corrupt(format!(
                    "output `{name}` has {} bytes, manifest says {}",
                    meta.len(),
                    rec.size
                ));
            }
            if mtime_ns(&meta) == Some(rec.mtime_ns) {
                continue;
            }
            match hash_file(&path) {
                Ok(h) if h == rec.blake3 => {}
                Ok(_) => {
                    return Lookup::Corrupt(format!(
                        "output `{name}` does not match its blake3 in the manifest"
                    ))
                }
                Err(e) => return Lookup::Corrupt(format!("output `{name}` unreadable: {e}")),
            }
        }
        Lookup::Valid(Box::new(manifest))
    }

    /// Takes the lock of `key`, waiting for another process that holds it. Returns whether it had to wait.
    pub fn lock(&self, key: &str) -> anyhow::Result<(KeyLock, bool)> {
        let dir = self.root.join("locks");
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        let path = dir.join(format!("{key}.lock"));
        let file = File::options()
            .create(true)
            .truncate(false)
            .write(true)
            .open(&path)
            .with_context(|| format!("cannot open lock {}", path.display()))?;
        match file.try_lock() {
            Ok(()) => Ok((KeyLock { _file: file }, false)),
            Err(fs::TryLockError::WouldBlock) => {
                file.lock()
                    .with_context(|| format!("cannot lock {}", path.display()))?;
                Ok((KeyLock { _file: file }, true))
            }
            Err(fs::TryLockError::Error(e)) => {
                Err(e).with_context(|| format!("cannot lock {}", path.display()))
            }
        }
    }

    /// A fresh staging directory for `key` (the caller holds its lock); leftovers of killed runs are removed.
    pub fn stage(&self, key: &str, _lock: &KeyLock) -> anyhow::Result<Staging> {
        let tmp = self.root.join("tmp");
        fs::create_dir_all(&tmp).with_context(|| format!("cannot create {}", tmp.display()))?;
        // Only a process holding this key's lock writes `tmp/<key>.*`, and we hold it: anything there is
        // debris from a run that was killed.
        if let Ok(rd) = fs::read_dir(&tmp) {
            for e in rd.flatten() {
                if e.file_name()
                    .to_string_lossy()
                    .starts_with(&format!("{key}."))
                {
                    let _ = fs::remove_dir_all(e.path());
                }
            }
        }
        let dir = tmp.join(format!("{key}.{}", std::process::id()));
        fs::create_dir_all(&dir).with_context(|| format!("cannot create {}", dir.display()))?;
        Ok(Staging {
            dir,
            key: key.to_string(),
            committed: false,
        })
    }

    /// Records the outputs of a finished stage in `manifest` and renames the staging directory into place.
    pub fn commit(&self, mut staging: Staging, manifest: &mut Manifest) -> anyhow::Result<PathBuf> {
        let mut outputs = BTreeMap::new();
        collect_files(staging.dir(), staging.dir(), &mut outputs)?;
        manifest.outputs = outputs;
        manifest.output_hash = output_hash(&manifest.outputs);
        let text = serde_json::to_string_pretty(&manifest)?;
        fs::write(staging.dir().join("manifest.json"), text + "\n")?;
        sync_dir(staging.dir());
        let dest = self.entry_dir(&staging.key);
        fs::create_dir_all(self.root.join("entries"))?;
        if dest.exists() {
            // A corrupt entry being replaced: move it aside first so the rename below is atomic.
            let trash =
                self.root
                    .join("tmp")
                    .join(format!("{}.trash.{}", staging.key, std::process::id()));
            fs::rename(&dest, &trash)
                .with_context(|| format!("cannot move aside {}", dest.display()))?;
            let _ = fs::remove_dir_all(&trash);
        }
        fs::rename(staging.dir(), &dest)
            .with_context(|| format!("cannot commit {}", dest.display()))?;
        staging.committed = true;
        sync_dir(&self.root.join("entries"));
        Ok(dest)
    }

    fn runs_path(&self, pipeline: &str, label: &str) -> PathBuf {
        let safe = |s: &str| {
            s.chars()
                .map(|c| {
                    if c.is_ascii_alphanumeric() || "-_.=,".contains(c) {
                        c
                    } else {
                        '_'
                    }
                })
                .collect::<String>()
        };
        self.root
            .join("runs")
            .join(safe(pipeline))
            .join(format!("{}.json", safe(label)))
    }

    /// The key material of the last successful run of `label` in `pipeline`.
    pub fn last_run(&self, pipeline: &str, label: &str) -> Option<KeyMaterial> {
        let text = fs::read_to_string(self.runs_path(pipeline, label)).ok()?;
        serde_json::from_str(&text).ok()
    }

    /// Remembers `material` as the last run of `label` (atomically: write then rename).
    pub fn record_run(
        &self,
        pipeline: &str,
        label: &str,
        material: &KeyMaterial,
    ) -> anyhow::Result<()> {
        let path = self.runs_path(pipeline, label);
        let dir = path.parent().expect("runs path has a parent");
        fs::create_dir_all(dir)?;
        let tmp = dir.join(format!(
            ".{}.{}",
            path.file_name().expect("file name").to_string_lossy(),
            std::process::id()
        ));
        fs::write(&tmp, serde_json::to_string_pretty(material)?)?;
        fs::rename(&tmp, &path)?;
        Ok(())
    }

    /// Total size in bytes of an entry.
    pub fn entry_size(&self, key: &str) -> u64 {
        dir_size(&self.entry_dir(key))
    }
}

/// blake3 of a file (memory-mapped and multi-threaded for large files).
pub fn hash_file(path: &Path) -> io::Result<String> {
    let mut h = blake3::Hasher::new();
    let len = fs::metadata(path)?.len();
    if len > 1 << 20 {
        h.update_mmap_rayon(path)?;
    } else {
        h.update(&fs::read(path)?);
    }
    Ok(h.finalize().to_hex().to_string())
}

fn output_hash(outputs: &BTreeMap<String, FileRecord>) -> String {
    let mut h = blake3::Hasher::new();
    for (name, rec) in outputs {
        h.update(name.as_bytes());
        h.update(&[0]);
        h.update(rec.blake3.as_bytes());
        h.update(&[0]);
    }
    h.finalize().to_hex()[..32].to_string()
}

fn mtime_ns(meta: &fs::Metadata) -> Option<u128> {
    meta.modified()
        .ok()?
        .duration_since(UNIX_EPOCH)
        .ok()
        .map(|d| d.as_nanos())
}

fn collect_files(
    base: &Path,
    dir: &Path,
    out: &mut BTreeMap<String, FileRecord>,
) -> anyhow::Result<()> {
    for e in fs::read_dir(dir)? {
        let e = e?;
        let path = e.path();
        let rel = path
            .strip_prefix(base)
            .expect("under base")
            .to_string_lossy()
            .replace('\\', "/");
        if e.file_type()?.is_dir() {
            collect_files(base, &path, out)?;
        } else if !BOOKKEEPING.contains(&rel.as_str()) {
            // fsync so that a crash right after the rename cannot leave a committed entry with empty files.
            File::open(&path)?.sync_all()?;
            let meta = fs::metadata(&path)?;
            out.insert(
                rel,
                FileRecord {
                    size: meta.len(),
                    blake3: hash_file(&path)?,
                    mtime_ns: mtime_ns(&meta).unwrap_or(0),
                },
            );
        }
    }
    Ok(())
}

fn sync_dir(dir: &Path) {
    if let Ok(f) = File::open(dir) {
        let _ = f.sync_all();
    }
}

fn dir_size(dir: &Path) -> u64 {
    let Ok(rd) = fs::read_dir(dir) else { return 0 };
    rd.flatten()
        .map(|e| match e.file_type() {
            Ok(t) if t.is_dir() => dir_size(&e.path()),
            _ => e.metadata().map(|m| m.len()).unwrap_or(0),
        })
        .sum()
}
