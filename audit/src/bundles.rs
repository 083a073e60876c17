//! The bundles the server has run, kept in the data directory so that SQL can join what
//! happened with what was configured.
//!
//! `DATA/bundles/HASH.bundle` holds the bytes of each bundle that took effect, named by its
//! content hash (lowercase hex), written once under a temporary name, synced and renamed.
//! `DATA/bundles/CURRENT` names the bundle in effect now. The query side
//! ([`crate::policy_state`]) reads them into the tables `bundles`, `workloads`, `targets`,
//! `credentials` and `rules`. Every `policy_change` event's `bundle_hash` is a file here, so
//! a bundle an event names can always be looked at again.

use std::fs::{self, File, OpenOptions};
use std::io::Write;
use std::path::{Path, PathBuf};

use crate::error::AuditError;

/// The directory of archived bundles in the data directory.
pub const BUNDLES_DIR: &str = "bundles";
/// The file naming the bundle in effect.
pub const CURRENT_FILE: &str = "CURRENT";
/// The suffix of an archived bundle's file name.
pub const BUNDLE_SUFFIX: &str = ".bundle";

/// Whether `hash` is a bundle content hash: 64 lowercase hex digits. Nothing else becomes a
/// file name.
pub fn is_bundle_hash(hash: &str) -> bool {
    hash.len() == 64
        && hash
            .bytes()
            .all(|b| b.is_ascii_digit() || (b'a'..=b'f').contains(&b))
}

/// Keeps the bytes of the bundle with content hash `hash`, unless they are kept already.
pub fn archive_bundle(data_dir: &Path, hash: &str, bytes: &[u8]) -> Result<PathBuf, AuditError> {
    let dir = bundles_dir(data_dir)?;
    let hash = checked_hash(hash)?;
    let path = dir.join(format!("{hash}{BUNDLE_SUFFIX}"));
    if path.is_file() {
        return Ok(path);
    }
    write_atomically(&dir, &path, bytes)?;
    Ok(path)
}

/// Records that the bundle with content hash `hash` is the one in effect.
pub fn set_current_bundle(data_dir: &Path, hash: &str) -> Result<(), AuditError> {
    let dir = bundles_dir(data_dir)?;
    let hash = checked_hash(hash)?;
    write_atomically(
        &dir,
        &dir.join(CURRENT_FILE),
        format!("{hash}\n").as_bytes(),
    )
}

/// The hash of the bundle in effect, as last recorded; none before the first.
pub fn current_bundle(data_dir: &Path) -> Option<String> {
    let text = fs::read_to_string(data_dir.join(BUNDLES_DIR).join(CURRENT_FILE)).ok()?;
    let hash = text.trim();
    is_bundle_hash(hash).then(|| hash.to_owned())
}

fn checked_hash(hash: &str) -> Result<&str, AuditError> {
    if is_bundle_hash(hash) {
        Ok(hash)
    } else {
        Err(AuditError::BadBundleHash {
            hash: hash.chars().take(80).collect(),
        })
    }
}

fn bundles_dir(data_dir: &Path) -> Result<PathBuf, AuditError> {
    let dir = data_dir.join(BUNDLES_DIR);
    if !dir.is_dir() {
        fs::create_dir_all(&dir).map_err(AuditError::io("create", &dir))?;
        sync(data_dir)?;
    }
    Ok(dir)
}

/// Writes `bytes` to `path` through a temporary file in `dir`, so a reader sees the old
/// content or the new, never part of it.
fn write_atomically(dir: &Path, path: &Path, bytes: &[u8]) -> Result<(), AuditError> {
    let name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned())
        .unwrap_or_default();
    let temporary = dir.join(format!(".{name}.tmp-{}", std::process::id()));
    let mut file = OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .open(&temporary)
        .map_err(AuditError::io("create", &temporary))?;
    file.write_all(bytes)
        .and_then(|()| file.sync_all())
        .map_err(AuditError::io("write", &temporary))?;
    drop(file);
    fs::rename(&temporary, path).map_err(AuditError::io("rename into place", path))?;
    sync(dir)
}

fn sync(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(AuditError::io("sync the directory", dir))
}
