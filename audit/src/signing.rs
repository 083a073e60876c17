//! The key that signs the manifest's checkpoints: an ed25519 key pair kept in `DATA/keys/`.
//!
//! The private key is `keys/audit-signing.key` (PKCS#8 PEM, mode 0600), created from the
//! operating system's randomness the first time the store is opened; the public key is
//! written beside it as `keys/audit-signing.key.pub` (SPKI PEM) so that a verifier never needs
//! the secret. The private key is never printed or logged; keys are named by their
//! [`key_id`]. `docs/audit-schema.md`, "Integrity", gives the signed message.

use std::fs::{self, File, OpenOptions};
use std::io::{ErrorKind, Read, Write};
use std::path::{Path, PathBuf};

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::manifest::ManifestError;

/// The directory of the key files in the data directory.
pub const KEYS_DIR: &str = "keys";
/// The private key's file name in [`KEYS_DIR`].
pub const SIGNING_KEY_FILE: &str = "audit-signing.key";
/// The public key's file name in [`KEYS_DIR`].
pub const PUBLIC_KEY_FILE: &str = "audit-signing.key.pub";

/// A rotation's new private key, in [`KEYS_DIR`] until it takes the old one's place.
pub const NEXT_KEY_FILE: &str = "audit-signing.key.next";

/// Key files larger than this are refused before they are read.
const MAX_KEY_FILE_BYTES: u64 = 16 * 1024;
/// The bytes of SHA-256 over a public key that name it.
const KEY_ID_LEN: usize = 8;

/// Why a key file does not hold the key it should.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an ed25519 private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`): {reason}")]
    NotPrivateKey { reason: String },
    #[error("not an ed25519 public key in SPKI PEM (`BEGIN PUBLIC KEY`): {reason}")]
    NotPublicKey { reason: String },
    #[error("this is a private key, where the public key belongs")]
    PrivateWherePublic,
    #[error("the file is larger than {MAX_KEY_FILE_BYTES} bytes")]
    TooLarge,
    #[error("cannot encode the key: {reason}")]
    Encode { reason: String },
}

/// The private key file of the store in `data_dir`.
pub fn signing_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEYS_DIR).join(SIGNING_KEY_FILE)
}

/// The public key file of the store in `data_dir`.
pub fn public_key_path(data_dir: &Path) -> PathBuf {
    data_dir.join(KEYS_DIR).join(PUBLIC_KEY_FILE)
}

/// A short, stable name for a public key: the first 8 bytes of SHA-256 over its 32 raw bytes,
/// in hex (as `policyc` names bundle keys).
pub fn key_id(key: &VerifyingKey) -> String {
    let digest = Sha256::digest(key.as_bytes());
    hex::encode(digest.get(..KEY_ID_LEN).unwrap_or_default())
}

/// The public key as SPKI PEM.
pub fn public_key_to_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|error| KeyError::Encode {
            reason: error.to_string(),
        })
}

/// Reads a public key from SPKI PEM; a private key given in its place is named as such.
pub fn public_key_from_pem(text: &str) -> Result<VerifyingKey, KeyError> {
    if text.contains("PRIVATE KEY-----") {
        return Err(KeyError::PrivateWherePublic);
    }
    if !text.contains("-----BEGIN ") {
        return Err(KeyError::NotPublicKey {
            reason: "the file is not PEM: it has no `-----BEGIN` line".to_owned(),
        });
    }
    VerifyingKey::from_public_key_pem(text).map_err(|error| KeyError::NotPublicKey {
        reason: error.to_string(),
    })
}

/// The public key of the private key in `data_dir`, for `portcullis audit key`. Fails when the
/// store has no key yet.
pub fn store_public_key(data_dir: &Path) -> Result<VerifyingKey, AuditError> {
    let path = signing_key_path(data_dir);
    if !path.exists() {
        return Err(ManifestError::NoKey { path }.into());
    }
    Ok(read_signing_key(&path)?.verifying_key())
}

/// Signs `message` with `key` (the checkpoints' signature; public for tests and tools).
pub fn sign(key: &SigningKey, message: &[u8]) -> [u8; 64] {
    key.sign(message).to_bytes()
}

/// Whether `signature` is `key`'s over `message`. Strict: a non-canonical signature or a
/// small-order key is refused.
pub fn verify_signature(key: &VerifyingKey, message: &[u8], signature: &[u8; 64]) -> bool {
    key.verify_strict(message, &Signature::from_bytes(signature))
        .is_ok()
}

/// Loads the store's signing key, or creates it when `may_create` (no checkpoint names an
/// earlier key). Makes sure the public key file matches it.
pub(crate) fn load_or_create(
    data_dir: &Path,
    may_create: bool,
) -> Result<SigningKey, ManifestError> {
    let keys_dir = data_dir.join(KEYS_DIR);
    let path = keys_dir.join(SIGNING_KEY_FILE);
    let key = if path.exists() {
        warn_if_readable_by_others(&path);
        read_signing_key(&path)?
    } else if may_create {
        create_dir_owner_only(&keys_dir)?;
        create_signing_key(&path)?
    } else {
        return Err(ManifestError::NoKey { path });
    };
    write_public_key(&keys_dir.join(PUBLIC_KEY_FILE), &key.verifying_key())?;
    Ok(key)
}

/// Creates a rotation's new key beside the one in use, owner-only and synced, in place of any
/// left by a rotation that did not get as far as its entry.
pub(crate) fn create_next_key(data_dir: &Path) -> Result<SigningKey, ManifestError> {
    let keys_dir = data_dir.join(KEYS_DIR);
    create_dir_owner_only(&keys_dir)?;
    remove_next_key(data_dir)?;
    create_signing_key(&keys_dir.join(NEXT_KEY_FILE))
}

/// The waiting new key of a rotation, if there is one.
pub(crate) fn read_next_key(data_dir: &Path) -> Result<Option<SigningKey>, ManifestError> {
    let path = data_dir.join(KEYS_DIR).join(NEXT_KEY_FILE);
    if !path.exists() {
        return Ok(None);
    }
    read_signing_key(&path).map(Some)
}

/// Removes a waiting new key that no rotation entry names.
pub(crate) fn remove_next_key(data_dir: &Path) -> Result<(), ManifestError> {
    let path = data_dir.join(KEYS_DIR).join(NEXT_KEY_FILE);
    match fs::remove_file(&path) {
        Ok(()) => sync_parent(&path),
        Err(error) if error.kind() == ErrorKind::NotFound => Ok(()),
        Err(error) => Err(ManifestError::io("remove", &path)(error)),
    }
}

/// Renames the waiting new key over the old one (whose file is so replaced, not kept), and
/// writes its public key file.
pub(crate) fn promote_next_key(data_dir: &Path, next: &SigningKey) -> Result<(), ManifestError> {
    let keys_dir = data_dir.join(KEYS_DIR);
    let from = keys_dir.join(NEXT_KEY_FILE);
    let to = keys_dir.join(SIGNING_KEY_FILE);
    fs::rename(&from, &to).map_err(ManifestError::io("rename", &from))?;
    sync_parent(&to)?;
    write_public_key(&keys_dir.join(PUBLIC_KEY_FILE), &next.verifying_key())
}

fn read_signing_key(path: &Path) -> Result<SigningKey, ManifestError> {
    let text = read_key_file(path)?;
    let key_problem = |problem| ManifestError::Key {
        path: path.to_owned(),
        problem,
    };
    if text.contains("PUBLIC KEY-----") || !text.contains("-----BEGIN ") {
        return Err(key_problem(KeyError::NotPrivateKey {
            reason: "the file holds no `-----BEGIN PRIVATE KEY-----` block".to_owned(),
        }));
    }
    SigningKey::from_pkcs8_pem(&text).map_err(|error| {
        key_problem(KeyError::NotPrivateKey {
            reason: error.to_string(),
        })
    })
}

/// The text of a key file, in memory that is wiped when dropped.
pub(crate) fn read_key_file(path: &Path) -> Result<Zeroizing<String>, ManifestError> {
    let mut file = File::open(path).map_err(ManifestError::io("open", path))?;
    let size = file
        .metadata()
        .map_err(ManifestError::io("read", path))?
        .len();
    if size > MAX_KEY_FILE_BYTES {
        return Err(ManifestError::Key {
            path: path.to_owned(),
            problem: KeyError::TooLarge,
        });
    }
    let mut text = Zeroizing::new(String::new());
    file.read_to_string(&mut text)
        .map_err(ManifestError::io("read", path))?;
    Ok(text)
}

/// A new key from the operating system's randomness, written owner-only under a temporary
/// name, synced and renamed into place, so a crash never leaves half a key at `path`.
fn create_signing_key(path: &Path) -> Result<SigningKey, ManifestError> {
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(|error| ManifestError::Random {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let key = SigningKey::from_bytes(&seed);
    let private_only = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    let pem = private_only
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| ManifestError::Key {
            path: path.to_owned(),
            problem: KeyError::Encode {
                reason: error.to_string(),
            },
        })?;

    let temp = path.with_extension("key.tmp");
    match fs::remove_file(&temp) {
        Ok(()) => {}
        Err(error) if error.kind() == ErrorKind::NotFound => {}
        Err(error) => return Err(ManifestError::io("remove", &temp)(error)),
    }
    let mut options = OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    let mut file = options
        .open(&temp)
        .map_err(ManifestError::io("create", &temp))?;
    file.write_all(pem.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(ManifestError::io("write", &temp))?;
    fs::rename(&temp, path).map_err(ManifestError::io("rename", &temp))?;
    sync_parent(path)?;
    tracing::info!(
        path = %path.display(),
        key_id = %key_id(&key.verifying_key()),
        "audit_signing_key_created"
    );
    Ok(key)
}

/// Writes the public key file unless it already holds `key`.
fn write_public_key(path: &Path, key: &VerifyingKey) -> Result<(), ManifestError> {
    let pem = public_key_to_pem(key).map_err(|problem| ManifestError::Key {
        path: path.to_owned(),
        problem,
    })?;
    if fs::read_to_string(path).is_ok_and(|existing| existing == pem) {
        return Ok(());
    }
    let temp = path.with_extension("pub.tmp");
    fs::write(&temp, pem.as_bytes())
        .and_then(|()| File::open(&temp)?.sync_all())
        .map_err(ManifestError::io("write", &temp))?;
    fs::rename(&temp, path).map_err(ManifestError::io("rename", &temp))?;
    sync_parent(path)
}

pub(crate) fn create_dir_owner_only(dir: &Path) -> Result<(), ManifestError> {
    if dir.is_dir() {
        return Ok(());
    }
    let mut builder = fs::DirBuilder::new();
    #[cfg(unix)]
    std::os::unix::fs::DirBuilderExt::mode(&mut builder, 0o700);
    builder
        .create(dir)
        .map_err(ManifestError::io("create", dir))?;
    sync_parent(dir)
}

pub(crate) fn sync_parent(path: &Path) -> Result<(), ManifestError> {
    let Some(parent) = path.parent().filter(|p| !p.as_os_str().is_empty()) else {
        return Ok(());
    };
    File::open(parent)
        .and_then(|handle| handle.sync_all())
        .map_err(ManifestError::io("sync the directory", parent))
}

#[cfg(unix)]
pub(crate) fn warn_if_readable_by_others(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    let mode = fs::metadata(path).map_or(0, |metadata| metadata.permissions().mode());
    if mode & 0o077 != 0 {
        tracing::warn!(
            path = %path.display(),
            mode = format!("{:o}", mode & 0o777),
            "audit_signing_key_readable_by_others"
        );
    }
}

#[cfg(not(unix))]
pub(crate) fn warn_if_readable_by_others(_path: &Path) {}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_created_key_is_owner_only_and_reloads() {
        let dir = tempfile::tempdir().unwrap();
        let key = load_or_create(dir.path(), true).unwrap();
        let again = load_or_create(dir.path(), false).unwrap();
        assert_eq!(key.verifying_key(), again.verifying_key());
        let text = fs::read_to_string(public_key_path(dir.path())).unwrap();
        let public = public_key_from_pem(&text).unwrap();
        assert_eq!(public, key.verifying_key());
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let mode = fs::metadata(signing_key_path(dir.path()))
                .unwrap()
                .permissions()
                .mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(key_id(&public).len(), 16);
    }
}
