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
/// The file recording the newest signing time of a bundle the server admitted under its
/// `[policy] public_key`; see [`newest_signed`].
pub const SIGNED_FILE: &str = "SIGNED";

/// The bundle file [`SIGNED_FILE`] names: a server that checks signatures refuses a bundle
/// signed before it, which is how a rollback to an older signed policy is told from an update.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NewestSigned {
    /// Seconds since the Unix epoch, as the bundle's signature says.
    pub signed_at: u64,
    /// The key id of the key that signed it.
    pub key_id: String,
    /// Its content hash, in lowercase hex.
    pub hash: String,
}

/// One archived bundle's file, as listed by [`archived_files`].
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ArchivedFile {
    /// The content hash its name says.
    pub hash: String,
    pub path: PathBuf,
    pub size: u64,
    pub modified: Option<std::time::SystemTime>,
}

/// The files of `DATA/bundles/` named `HASH.bundle`, by hash; files of other names are not
/// bundles and are left alone, and a store without the directory has none. On failure, the
/// path that could not be listed or looked at, and why.
pub fn archived_files(data_dir: &Path) -> Result<Vec<ArchivedFile>, (PathBuf, std::io::Error)> {
    let dir = data_dir.join(BUNDLES_DIR);
    let entries = match fs::read_dir(&dir) {
        Ok(entries) => entries,
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
        Err(error) => return Err((dir, error)),
    };
    let mut files = Vec::new();
    for entry in entries {
        let entry = entry.map_err(|error| (dir.clone(), error))?;
        let name = entry.file_name().to_string_lossy().into_owned();
        let Some(hash) = name.strip_suffix(BUNDLE_SUFFIX) else {
            continue;
        };
        if !is_bundle_hash(hash) {
            continue;
        }
        let path = entry.path();
        let metadata = match entry.metadata() {
            Ok(metadata) => metadata,
            Err(error) => return Err((path, error)),
        };
        files.push(ArchivedFile {
            hash: hash.to_owned(),
            size: metadata.len(),
            modified: metadata.modified().ok(),
            path,
        });
    }
    files.sort_by(|a, b| a.hash.cmp(&b.hash));
    Ok(files)
}

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

/// The newest signed bundle admitted from this data directory, as last recorded; none before
/// the first. A file that does not read as one [`record_newest_signed`] wrote is an error,
/// never "none": a server that cannot tell what it last admitted must not admit an older one.
pub fn newest_signed(data_dir: &Path) -> Result<Option<NewestSigned>, AuditError> {
    let path = data_dir.join(BUNDLES_DIR).join(SIGNED_FILE);
    let text = match fs::read(&path) {
        Ok(bytes) if bytes.len() <= MAX_SIGNED_FILE_BYTES => bytes,
        Ok(_) => return Err(bad_signed_file(&path, "it is longer than a record")),
        Err(error) if error.kind() == std::io::ErrorKind::NotFound => return Ok(None),
        Err(error) => return Err(AuditError::io("read", &path)(error)),
    };
    let text = String::from_utf8(text).map_err(|_| bad_signed_file(&path, "it is not UTF-8"))?;
    let mut fields = text.trim_end_matches('\n').split(' ');
    let mut field = |name: &str| {
        fields
            .next()
            .and_then(|field| field.strip_prefix(name))
            .and_then(|value| value.strip_prefix('='))
    };
    let signed_at = field("signed_at").and_then(|value| value.parse::<u64>().ok());
    let key_id = field("key").filter(|key| {
        !key.is_empty()
            && key
                .bytes()
                .all(|b| b.is_ascii_hexdigit() && !b.is_ascii_uppercase())
    });
    let hash = field("bundle")
        .and_then(|value| value.strip_prefix("sha256:"))
        .filter(|hash| is_bundle_hash(hash));
    match (signed_at, key_id, hash, fields.next()) {
        (Some(signed_at), Some(key_id), Some(hash), None) => Ok(Some(NewestSigned {
            signed_at,
            key_id: key_id.to_owned(),
            hash: hash.to_owned(),
        })),
        _ => Err(bad_signed_file(
            &path,
            "it is not one line `signed_at=SECONDS key=KEYID bundle=sha256:HASH`",
        )),
    }
}

/// Records `newest` as the newest signed bundle admitted, unless one signed later is already
/// recorded.
pub fn record_newest_signed(data_dir: &Path, newest: &NewestSigned) -> Result<(), AuditError> {
    if newest_signed(data_dir)?.is_some_and(|recorded| recorded.signed_at > newest.signed_at) {
        return Ok(());
    }
    let dir = bundles_dir(data_dir)?;
    let hash = checked_hash(&newest.hash)?;
    let line = format!(
        "signed_at={} key={} bundle=sha256:{hash}\n",
        newest.signed_at, newest.key_id
    );
    write_atomically(&dir, &dir.join(SIGNED_FILE), line.as_bytes())
}

/// Longer than any line [`record_newest_signed`] writes.
const MAX_SIGNED_FILE_BYTES: usize = 512;

fn bad_signed_file(path: &Path, reason: &'static str) -> AuditError {
    AuditError::BadStateFile {
        path: path.to_owned(),
        reason,
    }
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
