//! The optional signature of a bundle, and the PEM forms of the keys that make and check it.
//!
//! A signed bundle is the unsigned bundle, byte for byte, followed by a trailer: magic,
//! algorithm, the time of signing, the signer's public key and an ed25519 signature over every
//! byte of the file before the signature. The time lets a server refuse a bundle signed before
//! the one it already runs: a rollback to an older policy that the key once signed. The content hash does not change, so a policy set has one identity
//! signed or not. In, when loading: the bytes after the content hash, which are nothing or
//! exactly one trailer. Out: the [`BundleSignature`], which nothing trusts until
//! [`Bundle::verify_signature`](super::Bundle::verify_signature) or
//! [`Bundle::from_bytes_verified`](super::Bundle::from_bytes_verified) checks it against a
//! configured key. `docs/bundle-format.md`, "Signature", gives the layout for a verifier
//! written in another language.

use ed25519_dalek::pkcs8::spki::der::pem::LineEnding;
pub use ed25519_dalek::pkcs8::spki::der::zeroize::Zeroizing;
use ed25519_dalek::pkcs8::{
    DecodePrivateKey, DecodePublicKey, EncodePrivateKey, EncodePublicKey, KeypairBytes,
};
use ed25519_dalek::{Signature, Signer};
pub use ed25519_dalek::{SigningKey, VerifyingKey};
use sha2::{Digest, Sha256};

use super::BundleError;

/// The first eight bytes of a signature trailer.
pub const SIGNATURE_MAGIC: [u8; 8] = *b"GATESIGN";

/// Ed25519 as RFC 8032 defines it (pure, without prehash or context), without a signing time.
/// Still read; no longer written, and refused by a server that checks signatures, since a
/// rollback to such a bundle could not be told from an update.
pub const ALGORITHM_ED25519: u16 = 1;

/// Ed25519 as [`ALGORITHM_ED25519`], with the signing time in the trailer, under the signature.
pub const ALGORITHM_ED25519_TIMED: u16 = 2;

const PUBLIC_KEY_LEN: usize = 32;
const SIGNATURE_LEN: usize = 64;

/// Magic, algorithm, public key, signature: a trailer of [`ALGORITHM_ED25519`].
pub const UNTIMED_TRAILER_LEN: usize = SIGNATURE_MAGIC.len() + 2 + PUBLIC_KEY_LEN + SIGNATURE_LEN;

/// Magic, algorithm, signing time, public key, signature: a trailer of
/// [`ALGORITHM_ED25519_TIMED`], as `policyc build --sign` writes it.
pub const TRAILER_LEN: usize = UNTIMED_TRAILER_LEN + 8;

/// The bytes of SHA-256 over a public key that name it in messages.
const KEY_ID_LEN: usize = 8;

/// A bundle's signature as its trailer records it. Nothing about it is trusted until
/// [`crate::bundle::Bundle::verify_signature`] checks it against a configured key.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BundleSignature {
    /// Seconds since the Unix epoch, UTC, when the bundle was signed; `None` in a trailer of
    /// [`ALGORITHM_ED25519`].
    signed_at: Option<u64>,
    public_key: [u8; PUBLIC_KEY_LEN],
    signature: [u8; SIGNATURE_LEN],
}

impl BundleSignature {
    /// The public key the trailer names: the signer's, unless the trailer was forged.
    pub fn public_key(&self) -> &[u8; PUBLIC_KEY_LEN] {
        &self.public_key
    }

    /// When the signer says it signed, in seconds since the Unix epoch (UTC): covered by the
    /// signature, so as trustworthy as the key. `None` for a signature without a time.
    pub fn signed_at(&self) -> Option<u64> {
        self.signed_at
    }

    /// The [`key_id`] of the public key the trailer names.
    pub fn key_id(&self) -> String {
        key_id_of(&self.public_key)
    }

    /// The trailer's bytes, as they follow the content hash in the file.
    pub(super) fn trailer(&self) -> Vec<u8> {
        let mut trailer = signed_trailer_part(self.signed_at, &self.public_key);
        trailer.extend(self.signature);
        trailer
    }
}

/// Why a bundle's signature is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SignatureError {
    #[error("the bundle is not signed")]
    Unsigned,
    #[error("the bundle is signed by key {found}, not by key {expected}")]
    OtherKey { found: String, expected: String },
    #[error(
        "the bundle's signature does not match its bytes: the bundle or its signature was \
         altered after signing"
    )]
    Mismatch,
    #[error(
        "the bundle's signature carries no signing time (an older `policyc` signed it), so \
         a rollback to it could not be told from an update; sign it again with this \
         `policyc build --sign`"
    )]
    Untimed,
}

/// Why a key cannot be read or written.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum KeyError {
    #[error("not an ed25519 private key in PKCS#8 PEM (`BEGIN PRIVATE KEY`): {reason}")]
    NotPrivateKey { reason: String },
    #[error("not an ed25519 public key in SPKI PEM (`BEGIN PUBLIC KEY`): {reason}")]
    NotPublicKey { reason: String },
    #[error(
        "this is a private key, where the public key belongs; `policyc keygen` writes the public \
         key beside it, with `.pub` appended to its name"
    )]
    PrivateWherePublic,
    #[error("this is a public key, where the private key belongs")]
    PublicWherePrivate,
    #[error("cannot encode the key: {reason}")]
    Encode { reason: String },
}

/// A signing time (seconds since the Unix epoch) as messages show it: RFC 3339 in UTC, such as
/// `2026-12-05T00:00:00Z`; a time past what a calendar holds as a count of seconds.
pub fn signing_time_text(seconds: u64) -> String {
    i64::try_from(seconds)
        .ok()
        .and_then(|seconds| jiff::Timestamp::from_second(seconds).ok())
        .map_or_else(
            || format!("{seconds} s after the Unix epoch"),
            |time| time.to_string(),
        )
}

/// A short, stable name for a public key in messages and logs: the first 8 bytes of SHA-256
/// over its 32 raw bytes, in hex.
pub fn key_id(key: &VerifyingKey) -> String {
    key_id_of(key.as_bytes())
}

fn key_id_of(public_key: &[u8; PUBLIC_KEY_LEN]) -> String {
    let digest = Sha256::digest(public_key);
    hex::encode(digest.iter().take(KEY_ID_LEN).copied().collect::<Vec<u8>>())
}

/// Reads a private key from PKCS#8 PEM, as `policyc keygen` and `openssl genpkey -algorithm
/// ed25519` write it.
pub fn signing_key_from_pem(text: &str) -> Result<SigningKey, KeyError> {
    if text.contains("PUBLIC KEY-----") {
        return Err(KeyError::PublicWherePrivate);
    }
    if !text.contains("-----BEGIN ") {
        return Err(KeyError::NotPrivateKey {
            reason: "the file is not PEM: it has no `-----BEGIN` line".to_owned(),
        });
    }
    SigningKey::from_pkcs8_pem(text).map_err(|error| KeyError::NotPrivateKey {
        reason: error.to_string(),
    })
}

/// Reads a public key from SPKI PEM; a private key given in its place is named as such.
pub fn verifying_key_from_pem(text: &str) -> Result<VerifyingKey, KeyError> {
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

/// The private key as PKCS#8 PEM, in memory that is wiped when dropped. Version 1, without
/// the public key, as OpenSSL writes it: OpenSSL 3.0 and Python's `cryptography` refuse the
/// version 2 form that carries the public key too.
pub fn signing_key_to_pem(key: &SigningKey) -> Result<Zeroizing<String>, KeyError> {
    let private_only = KeypairBytes {
        secret_key: key.to_bytes(),
        public_key: None,
    };
    private_only
        .to_pkcs8_pem(LineEnding::LF)
        .map_err(|error| KeyError::Encode {
            reason: error.to_string(),
        })
}

/// The public key as SPKI PEM.
pub fn verifying_key_to_pem(key: &VerifyingKey) -> Result<String, KeyError> {
    key.to_public_key_pem(LineEnding::LF)
        .map_err(|error| KeyError::Encode {
            reason: error.to_string(),
        })
}

/// Signs a bundle's bytes (header through content hash, without a trailer), saying it was
/// signed at `signed_at` (seconds since the Unix epoch).
pub(super) fn sign(bundle: &[u8], key: &SigningKey, signed_at: u64) -> BundleSignature {
    let public_key = key.verifying_key().to_bytes();
    let signature = key.sign(&signed_message(bundle, Some(signed_at), &public_key));
    BundleSignature {
        signed_at: Some(signed_at),
        public_key,
        signature: signature.to_bytes(),
    }
}

/// Checks that `signature` names `key` and holds over `bundle` and the trailer before it.
/// Strict verification: a non-canonical signature or a small-order key is refused.
pub(super) fn verify(
    bundle: &[u8],
    signature: &BundleSignature,
    key: &VerifyingKey,
) -> Result<(), SignatureError> {
    if signature.public_key != key.to_bytes() {
        return Err(SignatureError::OtherKey {
            found: signature.key_id(),
            expected: key_id(key),
        });
    }
    let message = signed_message(bundle, signature.signed_at, &signature.public_key);
    key.verify_strict(&message, &Signature::from_bytes(&signature.signature))
        .map_err(|_| SignatureError::Mismatch)
}

/// What follows the content hash: nothing, or exactly one signature trailer. Bytes that do not
/// start like the trailer's magic are trailing garbage, as they always were.
pub(super) fn read_trailer(extra: &[u8]) -> Result<Option<BundleSignature>, BundleError> {
    if extra.is_empty() {
        return Ok(None);
    }
    let wrong_length = |expected| BundleError::SignatureLength {
        actual: extra.len(),
        expected,
    };
    let Some(rest) = extra.strip_prefix(&SIGNATURE_MAGIC) else {
        if SIGNATURE_MAGIC.starts_with(extra) {
            return Err(wrong_length(TRAILER_LEN));
        }
        return Err(BundleError::TrailingBytes { extra: extra.len() });
    };
    let Some((algorithm, rest)) = rest.split_first_chunk::<2>() else {
        return Err(wrong_length(TRAILER_LEN));
    };
    let algorithm = u16::from_le_bytes(*algorithm);
    let (signed_at, rest, expected) = match algorithm {
        ALGORITHM_ED25519 => (None, rest, UNTIMED_TRAILER_LEN),
        ALGORITHM_ED25519_TIMED => match rest.split_first_chunk::<8>() {
            Some((time, rest)) => (Some(u64::from_le_bytes(*time)), rest, TRAILER_LEN),
            None => return Err(wrong_length(TRAILER_LEN)),
        },
        _ => return Err(BundleError::SignatureAlgorithm { algorithm }),
    };
    let Some((public_key, rest)) = rest.split_first_chunk::<PUBLIC_KEY_LEN>() else {
        return Err(wrong_length(expected));
    };
    let Ok(signature) = <[u8; SIGNATURE_LEN]>::try_from(rest) else {
        return Err(wrong_length(expected));
    };
    Ok(Some(BundleSignature {
        signed_at,
        public_key: *public_key,
        signature,
    }))
}

/// Every byte of a signed file before the signature: the bundle, then the trailer's magic,
/// algorithm, signing time (when it has one) and public key.
fn signed_message(
    bundle: &[u8],
    signed_at: Option<u64>,
    public_key: &[u8; PUBLIC_KEY_LEN],
) -> Vec<u8> {
    let trailer = signed_trailer_part(signed_at, public_key);
    let mut message = Vec::with_capacity(bundle.len() + trailer.len());
    message.extend_from_slice(bundle);
    message.extend(trailer);
    message
}

fn signed_trailer_part(signed_at: Option<u64>, public_key: &[u8; PUBLIC_KEY_LEN]) -> Vec<u8> {
    let mut part = Vec::with_capacity(TRAILER_LEN);
    part.extend(SIGNATURE_MAGIC);
    match signed_at {
        Some(time) => {
            part.extend(ALGORITHM_ED25519_TIMED.to_le_bytes());
            part.extend(time.to_le_bytes());
        }
        None => part.extend(ALGORITHM_ED25519.to_le_bytes()),
    }
    part.extend(public_key);
    part
}
