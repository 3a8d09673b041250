//! Garbage collection: entries that no given pipeline reaches.

use std::collections::BTreeSet;

use super::entry::Cache;

/// An unreachable entry.
#[derive(Debug, Clone)]
pub struct GcEntry {
    /// Its key.
    pub key: String,
    /// The stage that made it (from its manifest, if readable).
    pub stage: String,
    /// Its size in bytes.
    pub size: u64,
}

/// Lists (and with `delete`, removes) every entry whose key is not in `keep`. Stale `tmp/` debris is
/// removed too when deleting.
pub fn collect_garbage(
    cache: &Cache,
    keep: &BTreeSet<String>,
    delete: bool,
) -> anyhow::Result<Vec<GcEntry>> {
    let mut out = Vec::new();
    for key in cache.keys()? {
        if keep.contains(&key) {
            continue;
        }
        let dir = cache.entry_dir(&key);
        let stage = std::fs::read_to_string(dir.join("manifest.json"))
            .ok()
            .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).ok())
            .and_then(|v| {
                Some(format!(
                    "{} ({})",
                    v.get("stage")?.as_str()?,
                    v.get("pipeline")?.as_str()?
                ))
            })
            .unwrap_or_else(|| "?".into());
        let size = cache.entry_size(&key);
        if delete {
            // Take the key's lock so that a concurrent run is not reading an entry we delete.
            let (lock, _) = cache.lock(&key)?;
            std::fs::remove_dir_all(&dir)?;
            drop(lock);
            let _ = std::fs::remove_file(cache.root().join("locks").join(format!("{key}.lock")));
        }
        out.push(GcEntry { key, stage, size });
    }
    Ok(out)
}
