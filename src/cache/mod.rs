//! The content-addressed stage cache.
//!
//! An entry `<cache>/entries/<key>/` holds a stage's output files, `manifest.json` (what made it, with each
//! output's size and blake3), `log.txt` and `metrics.json`. Keys are blake3 over a canonical, versioned
//! encoding of everything that determines the outputs (`key.rs`). Entries are written into `tmp/` and
//! renamed into place only when complete (`entry.rs`); a per-key file lock (`locks/`) makes concurrent
//! runs compute each key once. `runs/` remembers the last key material of each stage of each pipeline, so
//! a rerun can say which parameter changed.

mod entry;
mod gc;
mod key;

pub use entry::{hash_file, Cache, FileRecord, KeyLock, Lookup, Manifest, Staging};
pub use gc::{collect_garbage, GcEntry};
pub use key::{Engine, KeyMaterial, SCHEMA_VERSION};
