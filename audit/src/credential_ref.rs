//! `credential_ref`: how an access event names an issued credential without holding it.
//!
//! An event keeps `hmac-sha256:HEX`, the HMAC-SHA-256 of the credential's identifier (a JWT's
//! `jti`, a role's name, a token's hash) under a 256-bit key of the store, never the
//! identifier itself: someone who holds the key (the store's operator) can check whether an
//! event names a credential they have in hand, and no one who reads only the events can
//! recover or guess one. The key lives in `DATA/keys/credential-ref.key` as 64 hex digits,
//! owner-only, created from the operating system's randomness when the store first opens.

use std::fs::{self, OpenOptions};
use std::io::{ErrorKind, Write};
use std::path::Path;

use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::manifest::ManifestError;
use crate::signing::{
    KEYS_DIR, create_dir_owner_only, read_key_file, sync_parent, warn_if_readable_by_others,
};

/// The key file's name in [`KEYS_DIR`].
pub const CREDENTIAL_REF_KEY_FILE: &str = "credential-ref.key";

/// The prefix of every reference, naming the function.
pub const PREFIX: &str = "hmac-sha256:";

const BLOCK: usize = 64;

/// The store's key for credential references.
pub struct CredentialRefKey {
    key: Zeroizing<[u8; 32]>,
}

impl std::fmt::Debug for CredentialRefKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("CredentialRefKey(…)")
    }
}

impl CredentialRefKey {
    /// Loads the key of the store in `data_dir`, creating it on first use.
    pub fn load_or_create(data_dir: &Path) -> Result<CredentialRefKey, AuditError> {
        let keys_dir = data_dir.join(KEYS_DIR);
        let path = keys_dir.join(CREDENTIAL_REF_KEY_FILE);
        if path.exists() {
            warn_if_readable_by_others(&path);
            return read(&path);
        }
        create_dir_owner_only(&keys_dir)?;
        Ok(create(&path)?)
    }

    /// The reference an event keeps for the credential with `identifier`.
    pub fn reference(&self, identifier: &str) -> String {
        format!(
            "{PREFIX}{}",
            hex::encode(hmac_sha256(&*self.key, identifier.as_bytes()))
        )
    }
}

/// HMAC (RFC 2104) with SHA-256.
fn hmac_sha256(key: &[u8], message: &[u8]) -> [u8; 32] {
    let mut block = Zeroizing::new([0u8; BLOCK]);
    if key.len() > BLOCK {
        block[..32].copy_from_slice(&Sha256::digest(key));
    } else {
        block[..key.len()].copy_from_slice(key);
    }
    let pad = |byte: u8| {
        let mut padded = Zeroizing::new([0u8; BLOCK]);
        for (out, key_byte) in padded.iter_mut().zip(block.iter()) {
            *out = key_byte ^ byte;
        }
        padded
    };
    let inner = Sha256::new()
        .chain_update(pad(0x36).as_slice())
        .chain_update(message)
        .finalize();
    Sha256::new()
        .chain_update(pad(0x5c).as_slice())
        .chain_update(inner)
        .finalize()
        .into()
}

fn read(path: &Path) -> Result<CredentialRefKey, AuditError> {
    let text = read_key_file(path)?;
    let mut key = Zeroizing::new([0u8; 32]);
    hex::decode_to_slice(text.trim(), key.as_mut_slice()).map_err(|_| AuditError::BadKey {
        path: path.to_owned(),
        reason: "it should hold 64 hex digits",
    })?;
    Ok(CredentialRefKey { key })
}

/// A new key, written owner-only under a temporary name, synced and renamed into place.
fn create(path: &Path) -> Result<CredentialRefKey, ManifestError> {
    let mut key = Zeroizing::new([0u8; 32]);
    getrandom::fill(key.as_mut_slice()).map_err(|error| ManifestError::Random {
        path: path.to_owned(),
        reason: error.to_string(),
    })?;
    let text = Zeroizing::new(format!("{}\n", hex::encode(*key)));
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
    file.write_all(text.as_bytes())
        .and_then(|()| file.sync_all())
        .map_err(ManifestError::io("write", &temp))?;
    fs::rename(&temp, path).map_err(ManifestError::io("rename", &temp))?;
    sync_parent(path)?;
    tracing::info!(path = %path.display(), "credential_ref_key_created");
    Ok(CredentialRefKey { key })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn hmac_matches_rfc_4231() {
        // Test cases 1 and 6 of RFC 4231: a short key, and a key longer than a block.
        let key = [0x0b; 20];
        assert_eq!(
            hex::encode(hmac_sha256(&key, b"Hi There")),
            "b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7"
        );
        let key = [0xaa; 131];
        assert_eq!(
            hex::encode(hmac_sha256(
                &key,
                b"Test Using Larger Than Block-Size Key - Hash Key First"
            )),
            "60e431591ee0b67f0d8a26aacbf5b77f8e0bc6213728c5140546040f0ee37f54"
        );
    }

    #[test]
    fn the_key_is_created_owner_only_and_kept() {
        let dir = tempfile::tempdir().unwrap();
        let first = CredentialRefKey::load_or_create(dir.path()).unwrap();
        let again = CredentialRefKey::load_or_create(dir.path()).unwrap();
        let reference = first.reference("jti-123");
        assert!(reference.starts_with(PREFIX));
        assert_eq!(reference.len(), PREFIX.len() + 64);
        assert_eq!(again.reference("jti-123"), reference);
        assert_ne!(first.reference("jti-124"), reference);
        assert!(!reference.contains("jti"));
        let other = tempfile::tempdir().unwrap();
        let foreign = CredentialRefKey::load_or_create(other.path()).unwrap();
        assert_ne!(foreign.reference("jti-123"), reference);
        #[cfg(unix)]
        {
            use std::os::unix::fs::PermissionsExt;
            let path = dir.path().join(KEYS_DIR).join(CREDENTIAL_REF_KEY_FILE);
            let mode = fs::metadata(path).unwrap().permissions().mode();
            assert_eq!(mode & 0o777, 0o600);
        }
        assert_eq!(format!("{first:?}"), "CredentialRefKey(…)");
    }
}
