//! The integrity manifest: a hash chain over every sealed segment, and signed checkpoints of it.
//!
//! `DATA/manifest/chain.log` is append-only, one entry per line: the genesis entry, then one
//! entry per sealed segment and one per retention removal. Each line is a JSON object in one
//! canonical form (fixed field order, no spaces), and carries the SHA-256 of the line before
//! it; an entry's hash is the SHA-256 of its line's bytes. `DATA/manifest/checkpoints.log`
//! holds, one per line, ed25519 signatures over (entry index, entry hash, time), made with the
//! key of [`crate::signing`]. A line is written and synced before the step that depends on it
//! counts as done. `docs/audit-schema.md`, "Integrity", is the reference for both files.
//!
//! In: the segments [`crate::segment::write_segments`] wrote and the removals of
//! [`crate::retention`]. Out: the lines, and for [`crate::verify`] their parsed form.

use std::fmt::Write as _;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};

use chrono::{DateTime, NaiveDate, Utc};
use ed25519_dalek::{SigningKey, VerifyingKey};
use serde_json::{Map, Value};
use sha2::{Digest, Sha256};

use crate::error::AuditError;
use crate::signing::{self, KeyError};

/// The manifest's directory in the data directory.
pub const MANIFEST_DIR: &str = "manifest";
/// The hash chain's file name in [`MANIFEST_DIR`].
pub const CHAIN_FILE: &str = "chain.log";
/// The checkpoints' file name in [`MANIFEST_DIR`].
pub const CHECKPOINTS_FILE: &str = "checkpoints.log";
/// The format version the genesis entry records.
pub const FORMAT_VERSION: u64 = 1;
/// The first line of every signed checkpoint message.
pub const CHECKPOINT_CONTEXT: &str = "portcullis audit checkpoint v1";

/// A SHA-256 digest.
pub type Hash = [u8; 32];
/// The `prev` of the genesis entry.
pub const ZERO_HASH: Hash = [0; 32];

/// One line of `chain.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Entry {
    /// The line's position, from 0.
    pub index: u64,
    /// The hash of the entry before, [`ZERO_HASH`] for the genesis entry.
    pub prev: Hash,
    /// When the entry was written.
    pub time: DateTime<Utc>,
    pub body: EntryBody,
}

/// What an entry records.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum EntryBody {
    /// The first entry: the format and the key that signs the checkpoints.
    Genesis { format: u64, key_id: String },
    /// A sealed segment.
    Segment(SegmentRecord),
    /// Segments removed under `retention_days`.
    Retention(RetentionRecord),
    /// The signing key replaced: checkpoints of later entries are signed with the new key.
    Key(KeyRotation),
}

/// A rotation of the signing key as the manifest records it. Two checkpoints sign this entry:
/// one made with the previous key, which so vouches for its successor, and one with the new
/// key, which so takes on the chain as it stands.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyRotation {
    /// The public key that signed the checkpoints before (raw ed25519, 32 bytes).
    pub previous: [u8; 32],
    /// The [`signing::key_id`] of `public_key`.
    pub key_id: String,
    /// The public key that signs the checkpoints after.
    pub public_key: [u8; 32],
}

/// The key that signs the checkpoints of a run of entries: the genesis entry's, then one per
/// rotation.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KeyEra {
    /// The entry that named the key: 0 for the genesis entry, else its rotation entry. The key
    /// signs the checkpoints of that entry and of the entries after it, up to and including the
    /// next rotation entry.
    pub from_entry: u64,
    pub key_id: String,
    /// The public key, when the chain holds it: a rotated key always; the genesis key, which
    /// the genesis entry names only by id, once a rotation names it as `previous`.
    pub key: Option<VerifyingKey>,
}

/// Why the chain's rotations do not follow each other.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RotationProblem {
    #[error("its `previous` key is {found}, but the key in use before it is {expected}")]
    Previous { found: String, expected: String },
    #[error("its `key_id` is not the id of its `public_key` ({actual})")]
    KeyId { actual: String },
    #[error(
        "its `{field}` is not an ed25519 public key in canonical form, or is a weak \
         (small-order) key, under which anyone can forge a signature"
    )]
    NotAKey { field: &'static str },
    #[error("it rotates to the key already in use")]
    SameKey,
}

/// The keys of a chain, in order, each rotation checked against the key before it; on failure,
/// the index of the rotation entry that does not follow.
pub fn key_eras(entries: &[Chained]) -> Result<Vec<KeyEra>, (u64, RotationProblem)> {
    let mut eras: Vec<KeyEra> = Vec::new();
    for chained in entries {
        let index = chained.entry.index;
        match &chained.entry.body {
            EntryBody::Genesis { key_id, .. } => eras.push(KeyEra {
                from_entry: index,
                key_id: key_id.clone(),
                key: None,
            }),
            EntryBody::Key(rotation) => {
                let fail = |problem| (index, problem);
                let previous = strong_key(&rotation.previous)
                    .ok_or_else(|| fail(RotationProblem::NotAKey { field: "previous" }))?;
                let next = strong_key(&rotation.public_key).ok_or_else(|| {
                    fail(RotationProblem::NotAKey {
                        field: "public_key",
                    })
                })?;
                let actual = signing::key_id(&next);
                if actual != rotation.key_id {
                    return Err(fail(RotationProblem::KeyId { actual }));
                }
                let Some(current) = eras.last_mut() else {
                    // Without a genesis entry there is no chain; its own check says so.
                    continue;
                };
                let found = signing::key_id(&previous);
                if found != current.key_id {
                    return Err(fail(RotationProblem::Previous {
                        found,
                        expected: current.key_id.clone(),
                    }));
                }
                if rotation.public_key == rotation.previous {
                    return Err(fail(RotationProblem::SameKey));
                }
                current.key.get_or_insert(previous);
                eras.push(KeyEra {
                    from_entry: index,
                    key_id: actual,
                    key: Some(next),
                });
            }
            EntryBody::Segment(_) | EntryBody::Retention(_) => {}
        }
    }
    Ok(eras)
}

/// Whether a retention entry written at `time` removes only what its `retention_days` allows:
/// at least one day, and a cutoff no later than that many days before the entry's own date.
pub fn retention_cutoff_holds(record: &RetentionRecord, time: &DateTime<Utc>) -> bool {
    record.retention_days >= 1
        && record
            .before
            .checked_add_days(chrono::Days::new(record.retention_days))
            .is_some_and(|day| day <= time.date_naive())
}

/// An ed25519 public key from its 32 bytes: only a point in canonical encoding, and not one of
/// small order.
fn strong_key(bytes: &[u8; 32]) -> Option<VerifyingKey> {
    VerifyingKey::from_bytes(bytes)
        .ok()
        .filter(|key| key.to_bytes() == *bytes && !key.is_weak())
}

/// The era whose key signs the checkpoints of `entry`: the last that began before it (the
/// genesis entry's own checkpoint is the genesis key's).
pub fn era_of(eras: &[KeyEra], entry: u64) -> Option<&KeyEra> {
    eras.iter()
        .rev()
        .find(|era| era.from_entry < entry)
        .or_else(|| eras.first())
}

/// The era of the key named `key_id` that may sign a checkpoint of `entry`: [`era_of`]'s, or,
/// for a rotation entry, the era it begins.
pub fn signing_era<'e>(eras: &'e [KeyEra], entry: u64, key_id: &str) -> Option<&'e KeyEra> {
    let begun = eras.iter().skip(1).find(|era| era.from_entry == entry);
    [era_of(eras, entry), begun]
        .into_iter()
        .flatten()
        .find(|era| era.key_id == key_id)
}

/// The checkpoints every rotation needs and `signed` lacks, as (entry, key id), in chain order:
/// for each rotation entry, one by the key before it and one by its own key.
pub fn missing_rotation_checkpoints<'e>(
    eras: &'e [KeyEra],
    signed: &std::collections::HashSet<(u64, String)>,
) -> Vec<(u64, &'e str)> {
    let mut missing = Vec::new();
    for pair in eras.windows(2) {
        let [before, era] = pair else { continue };
        for key_id in [before.key_id.as_str(), era.key_id.as_str()] {
            if !signed.contains(&(era.from_entry, key_id.to_owned())) {
                missing.push((era.from_entry, key_id));
            }
        }
    }
    missing
}

/// A sealed segment as the manifest records it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SegmentRecord {
    /// Relative to the data directory, with `/`: `events/date=…/seg-…parquet`.
    pub path: String,
    pub sha256: Hash,
    pub bytes: u64,
    pub events: u64,
    pub first_seq: u64,
    pub last_seq: u64,
    pub min_time: DateTime<Utc>,
    pub max_time: DateTime<Utc>,
    pub via: Via,
}

/// How a segment came into the chain.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Via {
    /// Chained by the seal that wrote it.
    Seal,
    /// Written by a seal that died before chaining it, and chained at the next open after
    /// matching the write-ahead log's events.
    Recovery,
    /// Present when the store was first opened by a build that keeps a manifest.
    Upgrade,
}

impl Via {
    pub const fn as_str(self) -> &'static str {
        match self {
            Via::Seal => "seal",
            Via::Recovery => "recovery",
            Via::Upgrade => "upgrade",
        }
    }

    fn parse(text: &str) -> Option<Via> {
        [Via::Seal, Via::Recovery, Via::Upgrade]
            .into_iter()
            .find(|via| via.as_str() == text)
    }
}

/// A retention removal as the manifest records it, before the files are deleted.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetentionRecord {
    pub retention_days: u64,
    /// Segments of dates before this one are removed.
    pub before: NaiveDate,
    /// The removed segments' entry indices, as ascending, disjoint, inclusive ranges.
    pub removed: Vec<(u64, u64)>,
    pub segments: u64,
    pub events: u64,
    /// The hash of the highest removed entry.
    pub last_removed_hash: Hash,
}

/// One line of `checkpoints.log`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Checkpoint {
    /// The index of the signed entry.
    pub entry: u64,
    /// Its hash.
    pub entry_hash: Hash,
    pub time: DateTime<Utc>,
    /// The [`signing::key_id`] of the signing key.
    pub key_id: String,
    pub signature: [u8; 64],
}

/// An entry with the hash of its line.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Chained {
    pub entry: Entry,
    pub hash: Hash,
}

/// Why a line of `chain.log` or `checkpoints.log` is not an entry or a checkpoint.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LineProblem {
    #[error("it is not a JSON object: {reason}")]
    NotJson { reason: String },
    #[error("field `{field}` is missing")]
    Missing { field: &'static str },
    #[error("field `{field}` is not {expected}")]
    Invalid {
        field: &'static str,
        expected: &'static str,
    },
    #[error("unknown kind `{kind}`")]
    UnknownKind { kind: String },
    #[error("it is not in the canonical form (field order, spacing, an unknown field)")]
    NotCanonical,
    #[error("it is not UTF-8")]
    NotUtf8,
}

/// A problem of the manifest's writer. Converted to [`AuditError`] at the crate's API.
#[derive(Debug, thiserror::Error)]
pub(crate) enum ManifestError {
    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },
    #[error("line {line} is damaged: {problem}")]
    Damaged {
        path: PathBuf,
        line: usize,
        problem: LineProblem,
    },
    #[error("line {line} has index {found} where {line_index} was expected")]
    WrongIndex {
        path: PathBuf,
        line: usize,
        found: u64,
        line_index: u64,
    },
    /// An entry whose `prev` is not the hash of the line before it: a line was changed,
    /// removed or inserted after it was written.
    #[error(
        "line {line} does not follow line {}: its `prev` is not that line's hash, so one of \
         the two was changed, or lines were removed or inserted between them, after they were \
         written; `portcullis audit verify` names what differs, and the store stays closed \
         until the manifest is restored",
        .line - 1
    )]
    Unlinked { path: PathBuf, line: usize },
    /// A checkpoint that does not sign the chain as it is now.
    #[error(
        "its checkpoint on line {line} {problem}: the manifest was changed after it was \
         signed; `portcullis audit verify` names what differs, and the store stays closed \
         until the manifest is restored"
    )]
    Unsigned {
        path: PathBuf,
        line: usize,
        problem: &'static str,
    },
    #[error("{problem}")]
    Key { path: PathBuf, problem: KeyError },
    #[error("there is no signing key; the store creates it when it is first opened")]
    NoKey { path: PathBuf },
    #[error(
        "the file is missing, but `{checkpoints}` holds checkpoints signed with it; restore it \
         (a new key would leave those checkpoints unverifiable)"
    )]
    KeyLost { path: PathBuf, checkpoints: PathBuf },
    #[error(
        "it holds key {found}, but the manifest's newest key is {expected} (named by its genesis \
         entry or by its newest `key` entry), and this is not a rotation cut short (which leaves \
         that `key` entry the newest entry, signed by both keys, and the new key in \
         `audit-signing.key.next`); restore the key file of {expected}"
    )]
    KeyMismatch {
        path: PathBuf,
        found: String,
        expected: String,
    },
    /// A rotation entry that does not follow the key before it.
    #[error(
        "the key rotation on line {line} does not follow: {problem}; the manifest was changed \
         after it was written, and the store stays closed until it is restored"
    )]
    Rotation {
        path: PathBuf,
        line: usize,
        problem: RotationProblem,
    },
    #[error(
        "no checkpoint by key {key_id} signs the key rotation of entry {entry}, which both the \
         key before it and the key it names sign; the manifest was changed after it was written: \
         `portcullis audit verify` names what differs, and the store stays closed until the \
         manifest is restored"
    )]
    RotationUnsigned {
        path: PathBuf,
        entry: u64,
        key_id: String,
    },
    /// An unsigned segment entry whose events the write-ahead log does not hold.
    #[error(
        "the segment entry {entry} (`seq` {first} to {last}) is not signed, and the write-ahead \
         log does not hold its events, as it would after a crash between chaining and signing: \
         a seal of this store did not write it as it stands; the store stays closed until the \
         manifest is restored"
    )]
    UnvouchedSegment {
        path: PathBuf,
        entry: u64,
        first: u64,
        last: u64,
    },
    /// An unsigned retention entry that is not what the store's retention wrote before a crash.
    #[error(
        "the retention entry {entry} is not signed, and {problem}: the store did not write it as \
         it stands; nothing was deleted, and the store stays closed until the manifest is \
         restored"
    )]
    UnsignedRemoval {
        path: PathBuf,
        entry: u64,
        problem: &'static str,
    },
    #[error("the operating system's randomness failed: {reason}")]
    Random { path: PathBuf, reason: String },
    #[error("{problem}")]
    Segment { path: PathBuf, problem: String },
    #[error("an earlier write failed; reopen the store")]
    Stopped { path: PathBuf },
}

impl ManifestError {
    /// An I/O error on `path` while doing `action` (a verb phrase: "open", "sync", …).
    pub(crate) fn io(
        action: &'static str,
        path: impl Into<PathBuf>,
    ) -> impl FnOnce(io::Error) -> ManifestError {
        let path = path.into();
        move |source| ManifestError::Io {
            action,
            path,
            source,
        }
    }

    /// What was being done, for the message of the [`AuditError`].
    fn action(&self) -> &'static str {
        match self {
            ManifestError::Io { action, .. } => action,
            ManifestError::Damaged { .. }
            | ManifestError::WrongIndex { .. }
            | ManifestError::Unlinked { .. }
            | ManifestError::Unsigned { .. }
            | ManifestError::Rotation { .. }
            | ManifestError::RotationUnsigned { .. }
            | ManifestError::UnsignedRemoval { .. }
            | ManifestError::UnvouchedSegment { .. } => "read",
            ManifestError::Key { .. }
            | ManifestError::NoKey { .. }
            | ManifestError::KeyLost { .. }
            | ManifestError::KeyMismatch { .. } => "use the signing key",
            ManifestError::Random { .. } => "create the signing key",
            ManifestError::Segment { .. } => "chain the segment",
            ManifestError::Stopped { .. } => "append to",
        }
    }

    fn path(&self) -> &Path {
        match self {
            ManifestError::Io { path, .. }
            | ManifestError::Damaged { path, .. }
            | ManifestError::WrongIndex { path, .. }
            | ManifestError::Unlinked { path, .. }
            | ManifestError::Unsigned { path, .. }
            | ManifestError::Rotation { path, .. }
            | ManifestError::RotationUnsigned { path, .. }
            | ManifestError::UnsignedRemoval { path, .. }
            | ManifestError::UnvouchedSegment { path, .. }
            | ManifestError::Key { path, .. }
            | ManifestError::NoKey { path }
            | ManifestError::KeyLost { path, .. }
            | ManifestError::KeyMismatch { path, .. }
            | ManifestError::Random { path, .. }
            | ManifestError::Segment { path, .. }
            | ManifestError::Stopped { path } => path,
        }
    }
}

impl From<ManifestError> for AuditError {
    fn from(error: ManifestError) -> AuditError {
        match error {
            ManifestError::Io {
                action,
                path,
                source,
            } => AuditError::Io {
                action,
                path,
                source,
            },
            other => AuditError::Io {
                action: other.action(),
                path: other.path().to_owned(),
                source: io::Error::new(io::ErrorKind::InvalidData, other),
            },
        }
    }
}

// ---------------------------------------------------------------------------------------------
// The canonical encoding.

/// A time as the manifest writes it: RFC 3339, UTC, exactly six fractional digits, `Z`.
pub fn format_time(time: &DateTime<Utc>) -> String {
    time.format("%Y-%m-%dT%H:%M:%S%.6fZ").to_string()
}

fn hex32(hash: &Hash) -> String {
    hex::encode(hash)
}

impl Entry {
    /// The entry's line, without the newline.
    pub fn encode(&self) -> String {
        let mut line = format!(
            r#"{{"index":{},"prev":"{}","time":"{}","kind":"#,
            self.index,
            hex32(&self.prev),
            format_time(&self.time)
        );
        // Writing to a String cannot fail.
        let _ = match &self.body {
            EntryBody::Genesis { format, key_id } => {
                write!(line, r#""genesis","format":{format},"key_id":"{key_id}"}}"#)
            }
            EntryBody::Segment(segment) => write!(
                line,
                concat!(
                    r#""segment","path":"{}","sha256":"{}","bytes":{},"events":{},"#,
                    r#""first_seq":{},"last_seq":{},"min_time":"{}","max_time":"{}","via":"{}"}}"#
                ),
                segment.path,
                hex32(&segment.sha256),
                segment.bytes,
                segment.events,
                segment.first_seq,
                segment.last_seq,
                format_time(&segment.min_time),
                format_time(&segment.max_time),
                segment.via.as_str()
            ),
            EntryBody::Key(rotation) => write!(
                line,
                r#""key","previous":"{}","key_id":"{}","public_key":"{}"}}"#,
                hex32(&rotation.previous),
                rotation.key_id,
                hex32(&rotation.public_key)
            ),
            EntryBody::Retention(retention) => {
                let removed: Vec<String> = retention
                    .removed
                    .iter()
                    .map(|(first, last)| format!("[{first},{last}]"))
                    .collect();
                write!(
                    line,
                    concat!(
                        r#""retention","retention_days":{},"before":"{}","removed":[{}],"#,
                        r#""segments":{},"events":{},"last_removed_hash":"{}"}}"#
                    ),
                    retention.retention_days,
                    retention.before.format("%Y-%m-%d"),
                    removed.join(","),
                    retention.segments,
                    retention.events,
                    hex32(&retention.last_removed_hash)
                )
            }
        };
        line
    }

    /// Parses a line of `chain.log` (without its newline); the line must be exactly the
    /// canonical encoding of what it holds.
    pub fn parse(line: &str) -> Result<Entry, LineProblem> {
        let object = Fields::parse(line)?;
        let kind = object.text("kind")?;
        let body = match kind {
            "genesis" => EntryBody::Genesis {
                format: object.number("format")?,
                key_id: object.key_id("key_id")?,
            },
            "segment" => EntryBody::Segment(SegmentRecord {
                path: object.segment_path("path")?,
                sha256: object.hash("sha256")?,
                bytes: object.number("bytes")?,
                events: object.number("events")?,
                first_seq: object.number("first_seq")?,
                last_seq: object.number("last_seq")?,
                min_time: object.time("min_time")?,
                max_time: object.time("max_time")?,
                via: Via::parse(object.text("via")?).ok_or(LineProblem::Invalid {
                    field: "via",
                    expected: "`seal`, `recovery` or `upgrade`",
                })?,
            }),
            "retention" => EntryBody::Retention(RetentionRecord {
                retention_days: object.number("retention_days")?,
                before: object.date("before")?,
                removed: object.ranges("removed")?,
                segments: object.number("segments")?,
                events: object.number("events")?,
                last_removed_hash: object.hash("last_removed_hash")?,
            }),
            "key" => EntryBody::Key(KeyRotation {
                previous: object.public_key("previous")?,
                key_id: object.key_id("key_id")?,
                public_key: object.public_key("public_key")?,
            }),
            other => {
                return Err(LineProblem::UnknownKind {
                    kind: other.to_owned(),
                });
            }
        };
        let entry = Entry {
            index: object.number("index")?,
            prev: object.hash("prev")?,
            time: object.time("time")?,
            body,
        };
        if entry.encode() != line {
            return Err(LineProblem::NotCanonical);
        }
        Ok(entry)
    }
}

/// The SHA-256 of an entry's line (without the newline): the entry's hash.
pub fn line_hash(line: &str) -> Hash {
    Sha256::digest(line.as_bytes()).into()
}

impl Checkpoint {
    /// The bytes the signature covers.
    pub fn signed_message(
        entry: u64,
        entry_hash: &Hash,
        time: &DateTime<Utc>,
        key_id: &str,
    ) -> Vec<u8> {
        format!(
            "{CHECKPOINT_CONTEXT}\nentry={entry}\nentry_hash={}\ntime={}\nkey_id={key_id}\n",
            hex32(entry_hash),
            format_time(time)
        )
        .into_bytes()
    }

    /// This checkpoint's signed message.
    pub fn message(&self) -> Vec<u8> {
        Checkpoint::signed_message(self.entry, &self.entry_hash, &self.time, &self.key_id)
    }

    /// The checkpoint's line, without the newline.
    pub fn encode(&self) -> String {
        format!(
            r#"{{"entry":{},"entry_hash":"{}","time":"{}","key_id":"{}","signature":"{}"}}"#,
            self.entry,
            hex32(&self.entry_hash),
            format_time(&self.time),
            self.key_id,
            hex::encode(self.signature)
        )
    }

    /// Parses a line of `checkpoints.log`, which must be in canonical form.
    pub fn parse(line: &str) -> Result<Checkpoint, LineProblem> {
        let object = Fields::parse(line)?;
        let signature = object.hex("signature", "128 lowercase hex digits")?;
        let checkpoint = Checkpoint {
            entry: object.number("entry")?,
            entry_hash: object.hash("entry_hash")?,
            time: object.time("time")?,
            key_id: object.key_id("key_id")?,
            signature: signature.try_into().map_err(|_| LineProblem::Invalid {
                field: "signature",
                expected: "128 lowercase hex digits",
            })?,
        };
        if checkpoint.encode() != line {
            return Err(LineProblem::NotCanonical);
        }
        Ok(checkpoint)
    }
}

/// The fields of one JSON line.
struct Fields(Map<String, Value>);

impl Fields {
    fn parse(line: &str) -> Result<Fields, LineProblem> {
        serde_json::from_str(line)
            .map(Fields)
            .map_err(|error| LineProblem::NotJson {
                reason: error.to_string(),
            })
    }

    fn get(&self, field: &'static str) -> Result<&Value, LineProblem> {
        self.0.get(field).ok_or(LineProblem::Missing { field })
    }

    fn number(&self, field: &'static str) -> Result<u64, LineProblem> {
        self.get(field)?.as_u64().ok_or(LineProblem::Invalid {
            field,
            expected: "a whole number",
        })
    }

    fn text(&self, field: &'static str) -> Result<&str, LineProblem> {
        self.get(field)?.as_str().ok_or(LineProblem::Invalid {
            field,
            expected: "a string",
        })
    }

    fn hex(&self, field: &'static str, expected: &'static str) -> Result<Vec<u8>, LineProblem> {
        let text = self.text(field)?;
        hex::decode(text).map_err(|_| LineProblem::Invalid { field, expected })
    }

    fn hash(&self, field: &'static str) -> Result<Hash, LineProblem> {
        let expected = "a SHA-256 in 64 lowercase hex digits";
        self.hex(field, expected)?
            .try_into()
            .map_err(|_| LineProblem::Invalid { field, expected })
    }

    fn public_key(&self, field: &'static str) -> Result<[u8; 32], LineProblem> {
        let expected = "an ed25519 public key in 64 lowercase hex digits";
        self.hex(field, expected)?
            .try_into()
            .map_err(|_| LineProblem::Invalid { field, expected })
    }

    fn key_id(&self, field: &'static str) -> Result<String, LineProblem> {
        let text = self.text(field)?;
        let valid = text.len() == 16 && text.bytes().all(|b| b.is_ascii_hexdigit());
        if !valid {
            return Err(LineProblem::Invalid {
                field,
                expected: "a key id of 16 hex digits",
            });
        }
        Ok(text.to_owned())
    }

    fn time(&self, field: &'static str) -> Result<DateTime<Utc>, LineProblem> {
        DateTime::parse_from_rfc3339(self.text(field)?)
            .map(|time| time.with_timezone(&Utc))
            .map_err(|_| LineProblem::Invalid {
                field,
                expected: "an RFC 3339 time",
            })
    }

    fn date(&self, field: &'static str) -> Result<NaiveDate, LineProblem> {
        NaiveDate::parse_from_str(self.text(field)?, "%Y-%m-%d").map_err(|_| LineProblem::Invalid {
            field,
            expected: "a date YYYY-MM-DD",
        })
    }

    /// A segment path: only the characters a segment path has, so that it needs no escaping
    /// and cannot leave the data directory.
    fn segment_path(&self, field: &'static str) -> Result<String, LineProblem> {
        let text = self.text(field)?;
        let allowed = |b: u8| b.is_ascii_alphanumeric() || b"=/._-".contains(&b);
        if text.is_empty() || !text.bytes().all(allowed) || text.contains("..") {
            return Err(LineProblem::Invalid {
                field,
                expected: "a segment path under `events/`",
            });
        }
        Ok(text.to_owned())
    }

    fn ranges(&self, field: &'static str) -> Result<Vec<(u64, u64)>, LineProblem> {
        let invalid = LineProblem::Invalid {
            field,
            expected: "a list of [first, last] index pairs",
        };
        let Some(items) = self.get(field)?.as_array() else {
            return Err(invalid);
        };
        items
            .iter()
            .map(|item| match item.as_array().map(Vec::as_slice) {
                Some([first, last]) => first.as_u64().zip(last.as_u64()).ok_or(invalid.clone()),
                _ => Err(invalid.clone()),
            })
            .collect()
    }
}

/// The complete lines of a file, and the length of a last line without its newline (a torn
/// append).
pub(crate) struct Lines {
    pub lines: Vec<String>,
    pub torn_bytes: u64,
}

/// Splits a manifest file into lines. A line that is not UTF-8 is refused with its number
/// (from 1).
pub(crate) fn split_lines(bytes: &[u8]) -> Result<Lines, (usize, LineProblem)> {
    let complete_len = bytes
        .iter()
        .rposition(|byte| *byte == b'\n')
        .map_or(0, |at| at + 1);
    let (complete, torn) = bytes.split_at(complete_len);
    let mut pieces: Vec<&[u8]> = complete.split(|byte| *byte == b'\n').collect();
    // What follows the last newline: nothing, since the torn tail was split off.
    pieces.pop();
    let mut lines = Vec::with_capacity(pieces.len());
    for (idx, line) in pieces.into_iter().enumerate() {
        let text = std::str::from_utf8(line).map_err(|_| (idx + 1, LineProblem::NotUtf8))?;
        lines.push(text.to_owned());
    }
    Ok(Lines {
        lines,
        torn_bytes: torn.len() as u64,
    })
}

// ---------------------------------------------------------------------------------------------
// The writer.

/// The manifest of a store open for writing: appends entries and signs checkpoints. Only the
/// [`crate::segment::SealedIndex`] that the store's seal step holds has one, so one writer
/// appends.
#[derive(Debug)]
pub(crate) struct Manifest {
    chain: AppendLog,
    checkpoints: AppendLog,
    key: SigningKey,
    key_id: String,
    next_index: u64,
    head_hash: Hash,
    /// The highest entry index a checkpoint signs.
    signed_through: Option<u64>,
}

/// What [`Manifest::open`] found.
#[derive(Debug)]
pub(crate) struct Opened {
    pub manifest: Manifest,
    /// Every entry, in order.
    pub entries: Vec<Chained>,
    /// True when the manifest did not exist and was started now.
    pub created: bool,
}

impl Manifest {
    /// Opens the manifest of the store in `data_dir`, starting it (and the signing key) when
    /// there is none. A torn last line is cut and reported; any other damage stops the open.
    pub(crate) fn open(data_dir: &Path) -> Result<Opened, ManifestError> {
        let dir = data_dir.join(MANIFEST_DIR);
        create_dir(&dir)?;
        let chain_path = dir.join(CHAIN_FILE);
        let checkpoints_path = dir.join(CHECKPOINTS_FILE);

        // Nothing is written until every check has passed: a start that refuses the store
        // leaves its files as it found them, for `verify` and the people reading its report.
        let chain = read_lines(&chain_path)?;
        let entries = parse_entries(&chain_path, &chain.lines)?;
        let checkpoints = read_lines(&checkpoints_path)?;
        let checkpoint_lines = &checkpoints.lines;

        let eras = key_eras(&entries).map_err(|(index, problem)| ManifestError::Rotation {
            path: chain_path.clone(),
            line: index as usize + 1,
            problem,
        })?;
        let may_create_key = entries.is_empty() && checkpoint_lines.is_empty();
        let key = match signing::load_or_create(data_dir, may_create_key) {
            Err(ManifestError::NoKey { path }) => {
                return Err(ManifestError::KeyLost {
                    path,
                    checkpoints: checkpoints_path,
                });
            }
            other => other?,
        };
        let key_id = signing::key_id(&key.verifying_key());
        let signed = check_checkpoints(
            &checkpoints_path,
            checkpoint_lines,
            &entries,
            &eras,
            &key.verifying_key(),
        )?;
        // A rotation the process died in leaves its new key in `.next` (see
        // [`Manifest::rotate_key`]). When its entry is the newest, the key file still holds the
        // key before it, and the entry lacks a signature, the rotation never completed: its
        // entry and the checkpoints of it are cut, and the new key deleted. When both keys
        // signed it, only the rename is left to do. Nothing is signed here that the keys did
        // not sign before: a key entry or key someone else put there is undone, or refused.
        let next = signing::read_next_key(data_dir)?;
        let head_index = entries.last().map_or(0, |head| head.entry.index);
        let waiting = match eras.as_slice() {
            [.., before, newest]
                if newest.from_entry == head_index
                    && before.key_id == key_id
                    && next.as_ref().is_some_and(|next| {
                        signing::key_id(&next.verifying_key()) == newest.key_id
                    }) =>
            {
                Some(newest)
            }
            _ => None,
        };
        let missing = missing_rotation_checkpoints(&eras, &signed.pairs);
        if let Some(era) = waiting
            && missing.iter().any(|(entry, _)| *entry == era.from_entry)
        {
            undo_rotation(
                &chain_path,
                &chain,
                &checkpoints_path,
                &checkpoints,
                head_index,
            )?;
            signing::remove_next_key(data_dir)?;
            tracing::warn!(entry = head_index, "audit_rotation_undone_at_open");
            return Manifest::open(data_dir);
        }
        if let Some((entry, signer)) = missing.first() {
            return Err(ManifestError::RotationUnsigned {
                path: checkpoints_path,
                entry: *entry,
                key_id: (*signer).to_owned(),
            });
        }
        // The checkpoints first: a key file that is not the newest era's is a lost or swapped
        // key only when the chain itself holds.
        let finish = waiting.is_some();
        match eras.last() {
            Some(current) if current.key_id != key_id && !finish => {
                return Err(ManifestError::KeyMismatch {
                    path: signing::signing_key_path(data_dir),
                    found: key_id,
                    expected: current.key_id.clone(),
                });
            }
            // A rotation that died before its entry was written leaves only the new key.
            _ if !finish && next.is_some() => {
                signing::remove_next_key(data_dir)?;
                tracing::warn!("audit_rotation_undone_at_open");
            }
            _ => {}
        }
        let chain_len = cut_torn_tail(&chain_path, &chain)?;
        let checkpoints_len = cut_torn_tail(&checkpoints_path, &checkpoints)?;

        let head = entries.last();
        let mut manifest = Manifest {
            chain: AppendLog::open(&chain_path, chain_len)?,
            checkpoints: AppendLog::open(&checkpoints_path, checkpoints_len)?,
            next_index: head.map_or(0, |head| head.entry.index + 1),
            head_hash: head.map_or(ZERO_HASH, |head| head.hash),
            key,
            key_id,
            signed_through: signed.newest,
        };
        if let Some(next) = next.filter(|_| finish) {
            tracing::warn!(entry = head_index, "audit_rotation_finished_at_open");
            manifest.take_key(data_dir, next)?;
        }
        let created = entries.is_empty();
        let entries = if created {
            let genesis = EntryBody::Genesis {
                format: FORMAT_VERSION,
                key_id: manifest.key_id.clone(),
            };
            vec![manifest.append(genesis)?]
        } else {
            entries
        };
        Ok(Opened {
            manifest,
            entries,
            created,
        })
    }

    /// Appends `body` as the next entry and syncs it.
    pub(crate) fn append(&mut self, body: EntryBody) -> Result<Chained, ManifestError> {
        let entry = Entry {
            index: self.next_index,
            prev: self.head_hash,
            time: Utc::now(),
            body,
        };
        let line = entry.encode();
        self.chain.append_line(&line)?;
        let hash = line_hash(&line);
        self.next_index += 1;
        self.head_hash = hash;
        Ok(Chained { entry, hash })
    }

    /// The newest entry a checkpoint signs.
    pub(crate) fn signed_through(&self) -> Option<u64> {
        self.signed_through
    }

    /// The newest entry, when no checkpoint signs it.
    pub(crate) fn unsigned_head(&self) -> Option<u64> {
        let head = self.next_index.checked_sub(1)?;
        (self.signed_through != Some(head)).then_some(head)
    }

    /// Signs the newest entry, unless a checkpoint already does.
    pub(crate) fn checkpoint(&mut self) -> Result<(), ManifestError> {
        let Some(head) = self.unsigned_head() else {
            return Ok(());
        };
        self.sign(head, self.head_hash)
    }

    /// Appends a checkpoint of `entry`, whose hash is `hash`, signed with the key in use.
    fn sign(&mut self, entry: u64, hash: Hash) -> Result<(), ManifestError> {
        let key = self.key.clone();
        let key_id = self.key_id.clone();
        self.sign_with(&key, &key_id, entry, hash)
    }

    /// Appends a checkpoint of `entry`, whose hash is `hash`, signed with `key`.
    fn sign_with(
        &mut self,
        key: &SigningKey,
        key_id: &str,
        entry: u64,
        hash: Hash,
    ) -> Result<(), ManifestError> {
        let time = Utc::now();
        let message = Checkpoint::signed_message(entry, &hash, &time, key_id);
        let checkpoint = Checkpoint {
            entry,
            entry_hash: hash,
            time,
            key_id: key_id.to_owned(),
            signature: signing::sign(key, &message),
        };
        self.checkpoints.append_line(&checkpoint.encode())?;
        self.signed_through = Some(entry);
        tracing::debug!(entry, "audit_checkpoint_signed");
        Ok(())
    }

    /// Replaces the signing key with a new one: the old key signs the chain as it is, then a
    /// rotation entry naming the new key, which the new key (still waiting in `.next`) signs
    /// too; then the new key takes the old one's place and signs every later checkpoint. Each
    /// step is synced before the next; [`Manifest::open`] undoes a rotation a crash cut short
    /// before both keys signed, and finishes one cut short after.
    /// Returns the old and the new key's ids, and the rotation's entry.
    pub(crate) fn rotate_key(
        &mut self,
        data_dir: &Path,
    ) -> Result<(String, String, u64), ManifestError> {
        self.checkpoint()?;
        let next = signing::create_next_key(data_dir)?;
        let rotation = KeyRotation {
            previous: self.key.verifying_key().to_bytes(),
            key_id: signing::key_id(&next.verifying_key()),
            public_key: next.verifying_key().to_bytes(),
        };
        let appended = self.append(EntryBody::Key(rotation))?;
        self.checkpoint()?;
        let next_id = signing::key_id(&next.verifying_key());
        self.sign_with(&next, &next_id, appended.entry.index, appended.hash)?;
        let old = self.key_id.clone();
        self.take_key(data_dir, next)?;
        Ok((old, self.key_id.clone(), appended.entry.index))
    }

    /// Puts the waiting next key in the old one's place, and signs with it from now on.
    fn take_key(&mut self, data_dir: &Path, next: SigningKey) -> Result<(), ManifestError> {
        signing::promote_next_key(data_dir, &next)?;
        let old = std::mem::replace(&mut self.key_id, signing::key_id(&next.verifying_key()));
        self.key = next;
        tracing::info!(old_key = %old, new_key = %self.key_id, "audit_signing_key_rotated");
        Ok(())
    }
}

/// A manifest file as read: its complete lines, their length and the bytes after them.
struct FileLines {
    lines: Vec<String>,
    valid_len: u64,
    torn_bytes: u64,
}

/// A manifest file's complete lines; a torn last line is left for [`cut_torn_tail`].
fn read_lines(path: &Path) -> Result<FileLines, ManifestError> {
    let bytes = match fs::read(path) {
        Ok(bytes) => bytes,
        Err(error) if error.kind() == io::ErrorKind::NotFound => Vec::new(),
        Err(error) => return Err(ManifestError::io("read", path)(error)),
    };
    let split = split_lines(&bytes).map_err(|(line, problem)| ManifestError::Damaged {
        path: path.to_owned(),
        line,
        problem,
    })?;
    Ok(FileLines {
        valid_len: bytes.len() as u64 - split.torn_bytes,
        torn_bytes: split.torn_bytes,
        lines: split.lines,
    })
}

/// Cuts the torn last line a crash during an append leaves, once the store is known to open;
/// the length of what is left.
fn cut_torn_tail(path: &Path, file: &FileLines) -> Result<u64, ManifestError> {
    if file.torn_bytes > 0 {
        let handle = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(ManifestError::io("open", path))?;
        handle
            .set_len(file.valid_len)
            .and_then(|()| handle.sync_all())
            .map_err(ManifestError::io("truncate", path))?;
        tracing::warn!(
            path = %path.display(),
            torn_bytes = file.torn_bytes,
            "manifest_torn_tail_truncated"
        );
    }
    Ok(file.valid_len)
}

/// The entries of the chain's lines, each checked to follow the one before it, so that a
/// store whose manifest was changed is not opened (and its next entry, and the checkpoint
/// that would sign it, never vouch for the change).
fn parse_entries(path: &Path, lines: &[String]) -> Result<Vec<Chained>, ManifestError> {
    let mut entries: Vec<Chained> = Vec::with_capacity(lines.len());
    for (position, line) in lines.iter().enumerate() {
        let entry = Entry::parse(line).map_err(|problem| ManifestError::Damaged {
            path: path.to_owned(),
            line: position + 1,
            problem,
        })?;
        if entry.index != position as u64 {
            return Err(ManifestError::WrongIndex {
                path: path.to_owned(),
                line: position + 1,
                found: entry.index,
                line_index: position as u64,
            });
        }
        if entry.prev != entries.last().map_or(ZERO_HASH, |before| before.hash) {
            return Err(ManifestError::Unlinked {
                path: path.to_owned(),
                line: position + 1,
            });
        }
        entries.push(Chained {
            hash: line_hash(line),
            entry,
        });
    }
    Ok(entries)
}

/// Cuts the newest entry, a rotation that was never completed, from `chain.log`, and its
/// checkpoints, the last lines, from `checkpoints.log`: nothing else signs them, since a
/// checkpoint signs only an entry already written.
fn undo_rotation(
    chain_path: &Path,
    chain: &FileLines,
    checkpoints_path: &Path,
    checkpoints: &FileLines,
    entry: u64,
) -> Result<(), ManifestError> {
    let line_len = |line: &String| line.len() as u64 + 1;
    let cut = |path: &Path, len: u64| -> Result<(), ManifestError> {
        let handle = OpenOptions::new()
            .write(true)
            .open(path)
            .map_err(ManifestError::io("open", path))?;
        handle
            .set_len(len)
            .and_then(|()| handle.sync_all())
            .map_err(ManifestError::io("truncate", path))
    };
    let of_entry = checkpoints
        .lines
        .iter()
        .rev()
        .take_while(|line| Checkpoint::parse(line).is_ok_and(|c| c.entry == entry))
        .map(line_len)
        .sum::<u64>();
    cut(checkpoints_path, checkpoints.valid_len - of_entry)?;
    let last = chain.lines.last().map_or(0, line_len);
    cut(chain_path, chain.valid_len - last)
}

/// The checkpoints as read at open: the entries they sign with the id of the key that signed,
/// and the newest of those entries.
struct Signed {
    pairs: std::collections::HashSet<(u64, String)>,
    newest: Option<u64>,
}

/// Each checkpoint must sign an entry the chain holds, with that entry's hash, under a key that
/// signs that entry (see [`signing_era`]): a checkpoint is written only after the entry it signs
/// is synced, so one that does not parse, names an entry the chain does not hold, holds another
/// hash for it or is not signed by that key means the manifest was changed, and the open fails.
/// `current` is the key file's key, which the genesis era's checks use until a rotation names
/// the genesis key in full.
fn check_checkpoints(
    path: &Path,
    lines: &[String],
    entries: &[Chained],
    eras: &[KeyEra],
    current: &VerifyingKey,
) -> Result<Signed, ManifestError> {
    let mut signed = Signed {
        pairs: std::collections::HashSet::new(),
        newest: None,
    };
    let current_id = signing::key_id(current);
    for (position, line) in lines.iter().enumerate() {
        let number = position + 1;
        let checkpoint = Checkpoint::parse(line).map_err(|problem| ManifestError::Damaged {
            path: path.to_owned(),
            line: number,
            problem,
        })?;
        let unsigned = |problem| ManifestError::Unsigned {
            path: path.to_owned(),
            line: number,
            problem,
        };
        let entry = usize::try_from(checkpoint.entry)
            .ok()
            .and_then(|index| entries.get(index))
            .ok_or_else(|| unsigned("signs an entry the chain does not hold"))?;
        if entry.hash != checkpoint.entry_hash {
            return Err(unsigned("signs another hash of its entry"));
        }
        let Some(era) = signing_era(eras, checkpoint.entry, &checkpoint.key_id) else {
            return Err(unsigned("is not signed by the store's key for its entry"));
        };
        // Unless the genesis key is neither in the chain nor the key file's, which the key
        // check after this names.
        let key = era
            .key
            .as_ref()
            .or((era.key_id == current_id).then_some(current));
        if let Some(key) = key
            && !signing::verify_signature(key, &checkpoint.message(), &checkpoint.signature)
        {
            return Err(unsigned("is not signed by the store's key for its entry"));
        }
        if signed
            .newest
            .is_some_and(|newest| checkpoint.entry < newest)
        {
            return Err(unsigned(
                "signs an earlier entry than the checkpoint before it",
            ));
        }
        signed
            .pairs
            .insert((checkpoint.entry, checkpoint.key_id.clone()));
        signed.newest = Some(checkpoint.entry);
    }
    Ok(signed)
}

fn create_dir(dir: &Path) -> Result<(), ManifestError> {
    if dir.is_dir() {
        return Ok(());
    }
    fs::create_dir_all(dir).map_err(ManifestError::io("create", dir))?;
    match dir.parent() {
        Some(parent) => sync_dir(parent),
        None => Ok(()),
    }
}

fn sync_dir(dir: &Path) -> Result<(), ManifestError> {
    // The parent of a relative path of one component is the empty path: the current directory.
    let dir = if dir.as_os_str().is_empty() {
        Path::new(".")
    } else {
        dir
    };
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(ManifestError::io("sync the directory", dir))
}

/// An append-only file of lines, each synced before `append_line` returns.
#[derive(Debug)]
struct AppendLog {
    path: PathBuf,
    file: File,
    /// The length of the valid content; a failed append is cut back to it.
    len: u64,
    /// Set when a failed append could not be cut back: nothing more is written.
    stopped: bool,
}

impl AppendLog {
    fn open(path: &Path, len: u64) -> Result<AppendLog, ManifestError> {
        let existed = path.exists();
        let file = OpenOptions::new()
            .append(true)
            .create(true)
            .open(path)
            .map_err(ManifestError::io("open", path))?;
        if !existed && let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(AppendLog {
            path: path.to_owned(),
            file,
            len,
            stopped: false,
        })
    }

    fn append_line(&mut self, line: &str) -> Result<(), ManifestError> {
        if self.stopped {
            return Err(ManifestError::Stopped {
                path: self.path.clone(),
            });
        }
        let mut bytes = Vec::with_capacity(line.len() + 1);
        bytes.extend_from_slice(line.as_bytes());
        bytes.push(b'\n');
        let written = self
            .file
            .write_all(&bytes)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += bytes.len() as u64;
                Ok(())
            }
            Err(source) => {
                if let Err(cut_error) = self.file.set_len(self.len) {
                    self.stopped = true;
                    tracing::error!(
                        path = %self.path.display(),
                        %cut_error,
                        "manifest_cut_back_failed"
                    );
                }
                Err(ManifestError::Io {
                    action: "append to",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn time(text: &str) -> DateTime<Utc> {
        DateTime::parse_from_rfc3339(text)
            .unwrap()
            .with_timezone(&Utc)
    }

    fn segment_entry() -> Entry {
        Entry {
            index: 1,
            prev: [0xab; 32],
            time: time("2026-03-02T00:00:01.5Z"),
            body: EntryBody::Segment(SegmentRecord {
                path: "events/date=2026-03-01/seg-00000000000000000001-00000000000000000002\
                       .parquet"
                    .to_owned(),
                sha256: [0x01; 32],
                bytes: 4096,
                events: 2,
                first_seq: 1,
                last_seq: 2,
                min_time: time("2026-03-01T10:00:00Z"),
                max_time: time("2026-03-01T10:00:00.000001Z"),
                via: Via::Seal,
            }),
        }
    }

    #[test]
    fn entries_round_trip_in_canonical_form() {
        let retention = Entry {
            index: 7,
            prev: [0x11; 32],
            time: time("2026-04-01T00:00:00Z"),
            body: EntryBody::Retention(RetentionRecord {
                retention_days: 30,
                before: NaiveDate::from_ymd_opt(2026, 3, 2).unwrap(),
                removed: vec![(1, 3), (5, 5)],
                segments: 4,
                events: 40,
                last_removed_hash: [0x22; 32],
            }),
        };
        let genesis = Entry {
            index: 0,
            prev: ZERO_HASH,
            time: time("2026-03-01T00:00:00Z"),
            body: EntryBody::Genesis {
                format: 1,
                key_id: "0123456789abcdef".to_owned(),
            },
        };
        for entry in [segment_entry(), retention, genesis] {
            let line = entry.encode();
            assert_eq!(Entry::parse(&line).unwrap(), entry, "{line}");
        }
        let line = segment_entry().encode();
        assert!(line.starts_with(r#"{"index":1,"prev":"abab"#), "{line}");
        assert!(
            line.contains(r#""min_time":"2026-03-01T10:00:00.000000Z""#),
            "{line}"
        );
    }

    #[test]
    fn a_line_out_of_canonical_form_is_refused() {
        let line = segment_entry().encode();
        let spaced = line.replace(r#","bytes""#, r#", "bytes""#);
        assert_eq!(Entry::parse(&spaced), Err(LineProblem::NotCanonical));
        let upper = line.replace("abab", "ABAB");
        assert!(Entry::parse(&upper).is_err());
        let extra = line.replace(r#"{"index""#, r#"{"x":1,"index""#);
        assert_eq!(Entry::parse(&extra), Err(LineProblem::NotCanonical));
        let escaped = line.replace("events/", "..\\/events/");
        assert!(Entry::parse(&escaped).is_err());
    }

    #[test]
    fn lines_and_a_torn_tail() {
        let split = split_lines(b"a\nb\nhalf").unwrap();
        assert_eq!(split.lines, vec!["a", "b"]);
        assert_eq!(split.torn_bytes, 4);
        let split = split_lines(b"").unwrap();
        assert!(split.lines.is_empty());
        assert_eq!(split.torn_bytes, 0);
        let split = split_lines(b"a\n").unwrap();
        assert_eq!(split.lines, vec!["a"]);
    }
}
