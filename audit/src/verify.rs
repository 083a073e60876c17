//! `portcullis audit verify`: recomputes everything the manifest claims and either confirms it
//! or names the first entry, checkpoint or segment that does not match, and why.
//!
//! In: a data directory and the public key to trust (pinned by the caller, or the one in
//! `DATA/keys/`). Checked in this order: every line of `chain.log` (canonical form, index,
//! the hash of the line before, what a segment or retention entry may say), every line of
//! `checkpoints.log` (key, signature, the entry and hash it signs) and that the last one signs
//! the newest entry, then every segment the chain holds and retention did not remove (SHA-256,
//! size, and read back: rows, `seq` range, time range), then that no other segment file is in
//! `events/`. Out: a [`Report`], or the first [`VerifyError`].
//!
//! It only reads, and takes no lock, so it runs beside a server that holds the store. What a
//! server is doing meanwhile (a segment renamed but not chained yet, an entry not signed yet)
//! looks like a problem for an instant; such a problem is reported only when the manifest has
//! not grown after a short wait.

use std::collections::{BTreeSet, HashMap, HashSet};
use std::fs;
use std::io;
use std::path::{Path, PathBuf};
use std::time::Duration;

use chrono::{DateTime, NaiveDate, Utc};

use arrow::array::{Array as _, AsArray as _};
use arrow::datatypes::Int64Type;
use parquet::arrow::ProjectionMask;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use sha2::{Digest as _, Sha256};

use crate::bundles::{ArchivedFile, BUNDLE_SUFFIX, BUNDLES_DIR, archived_files, is_bundle_hash};
use crate::event::EventKind;
use crate::manifest::{
    CHAIN_FILE, CHECKPOINTS_FILE, Chained, Checkpoint, Entry, EntryBody, FORMAT_VERSION, Hash,
    KeyEra, LineProblem, MANIFEST_DIR, RetentionRecord, RotationProblem, SegmentRecord, Via,
    ZERO_HASH, era_of, key_eras, line_hash, missing_rotation_checkpoints, retention_cutoff_holds,
    signing_era, split_lines,
};
use crate::retention::removed_indices;
use crate::segment::{
    SegmentReadError, file_sha256, parse_segment_file_name, read_segment, relative_segment_path,
};
use crate::signing::{self, KeyError, VerifyingKey};
use crate::store::EVENTS_DIR;

/// How long to wait for a writer to finish the step it is in before reporting a problem.
const WRITER_WAIT: Duration = Duration::from_millis(250);
/// How many times to read the manifest again while it keeps growing.
const MAX_ATTEMPTS: u32 = 5;

/// Where the trusted public key came from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeySource {
    /// Given by the caller (`--public-key`).
    Pinned(PathBuf),
    /// The store's own `keys/audit-signing.key.pub`, which proves only that the manifest is
    /// consistent with the key stored beside it.
    DataDir(PathBuf),
}

/// How far verification has come, for a progress display.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct Progress {
    pub segments_done: u64,
    pub segments_total: u64,
    pub bytes_done: u64,
    pub bytes_total: u64,
}

/// What a successful verification confirmed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Report {
    /// Entries in `chain.log`, the genesis entry included.
    pub entries: u64,
    /// The newest entry's hash.
    pub head_hash: Hash,
    /// The segments present and checked.
    pub segments: u64,
    pub events: u64,
    /// The lowest and highest `seq` of the segments present.
    pub seq_range: Option<(u64, u64)>,
    /// The earliest and latest event time of the segments present.
    pub time_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
    pub checkpoints: u64,
    /// The newest checkpoint, which signs the newest entry.
    pub last_checkpoint: Checkpoint,
    pub key_id: String,
    pub key_source: KeySource,
    /// Rotations of the signing key the chain records.
    pub rotations: u64,
    /// The entry from which the trusted key signs: 0 when it is the key the manifest was
    /// started with; else the entry of the rotation that named it, whose checkpoint by the
    /// trusted key vouches, through the hash chain, for every entry before it.
    pub trusted_from: u64,
    /// Segments removed under retention, per the manifest; `None` when none were.
    pub removed: Option<RemovedSummary>,
    /// Segments chained by recovery after a crash, and when the store was upgraded.
    pub recovered_segments: u64,
    pub upgraded_segments: u64,
    /// Files of removed segments still present (a removal a crash interrupted; the next open
    /// deletes them). They are not checked.
    pub leftover_files: Vec<String>,
    /// The kept bundles checked ([`check_bundles`]): each file's content has the hash its name
    /// says, and every bundle a `policy_change` event put in effect is kept.
    pub bundles: BundlesChecked,
    /// The recorded entry the store was shown to extend ([`verify_extending`]).
    pub extends: Option<Anchor>,
}

/// An entry of the chain and its hash, as `verify` reports the newest one: kept by an auditor
/// outside the store, it shows later that the store still extends the history it saw then.
/// Written `ENTRY:HASH` (the hash as 64 hex digits).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Anchor {
    pub entry: u64,
    pub hash: Hash,
}

impl std::str::FromStr for Anchor {
    type Err = String;

    fn from_str(text: &str) -> Result<Anchor, String> {
        let wrong = || format!("`{text}` is not ENTRY:HASH (an entry number, `:`, 64 hex digits)");
        let (entry, hash) = text.trim().split_once(':').ok_or_else(wrong)?;
        let entry = entry.parse::<u64>().map_err(|_| wrong())?;
        let mut bytes = [0_u8; 32];
        if hash.len() != 64 {
            return Err(wrong());
        }
        hex::decode_to_slice(hash, &mut bytes).map_err(|_| wrong())?;
        Ok(Anchor { entry, hash: bytes })
    }
}

impl std::fmt::Display for Anchor {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}:{}", self.entry, hex::encode(self.hash))
    }
}

/// What the check of the kept bundles found.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct BundlesChecked {
    /// Bundle files in `DATA/bundles/`, each with the content its name says.
    pub kept: u64,
    /// Distinct bundles named by the `policy_change` events of the segments present.
    pub named: u64,
}

/// What retention removed, per the manifest.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RemovedSummary {
    pub removals: u64,
    pub segments: u64,
    pub events: u64,
    /// The `seq` range of the removed segments.
    pub seq_range: (u64, u64),
    /// The newest removal: its time, `retention_days` and cutoff date.
    pub last_time: DateTime<Utc>,
    pub last_retention_days: u64,
    pub last_before: NaiveDate,
}

/// Why verification failed: the first thing found that does not match.
#[derive(Debug, thiserror::Error)]
pub enum VerifyError {
    #[error("no audit store at `{path}`")]
    NoStore { path: PathBuf },

    /// A directory that is not (yet) a store: a server creates the manifest when it first
    /// opens the store. Worded as [`VerifyError::NoStore`] is, with what is missing.
    #[error(
        "no audit store at `{}`: it has no integrity manifest (`{}` does not exist; a server \
         creates it when it first opens the store)",
        .path.parent().and_then(Path::parent).unwrap_or(.path).display(),
        .path.display()
    )]
    NoManifest { path: PathBuf },

    #[error(
        "no public key to check the checkpoints with: `{path}` does not exist; pass \
         --public-key"
    )]
    NoPublicKey { path: PathBuf },

    #[error("the public key `{path}` is not usable: {problem}")]
    Key { path: PathBuf, problem: KeyError },

    #[error("cannot {action} `{path}`: {source}")]
    Io {
        action: &'static str,
        path: PathBuf,
        #[source]
        source: io::Error,
    },

    #[error("manifest entry {entry} (line {line} of `{path}`) fails: {problem}")]
    Entry {
        path: PathBuf,
        line: u64,
        entry: u64,
        problem: EntryFailure,
    },

    #[error("the checkpoint on line {line} of `{path}` fails: {problem}")]
    Checkpoint {
        path: PathBuf,
        line: u64,
        problem: CheckpointFailure,
    },

    #[error(
        "`{path}` holds no checkpoint, so nothing signs the manifest's {entries} entries: the \
         file was emptied or removed"
    )]
    NoCheckpoint { path: PathBuf, entries: u64 },

    #[error(
        "{} not signed by any checkpoint: the writer stopped between chaining and signing \
         (its next open signs), or checkpoints were removed from the end of `{path}`",
        entries_phrase(*.first, *.last)
    )]
    Unsigned {
        path: PathBuf,
        first: u64,
        last: u64,
    },

    #[error("segment `{path}` (manifest entry {entry}) fails: {problem}")]
    Segment {
        path: String,
        entry: u64,
        problem: Box<SegmentFailure>,
    },

    #[error(
        "segment `{path}` is not in the manifest: it was added to the store, or the manifest \
         lost its entry{}",
        unchained_hint(.after_head)
    )]
    Unchained { path: String, after_head: bool },

    #[error("kept bundle `{path}` fails: {problem}")]
    Bundle {
        path: PathBuf,
        problem: BundleFailure,
    },

    #[error(
        "the store does not extend the recorded entry {}: the manifest ends at entry {last}, \
         so entries were cut from its end (with their segments and checkpoints)",
        .anchor.entry
    )]
    CutBefore { anchor: Anchor, last: u64 },

    #[error(
        "the store does not extend the recorded entry {}: that entry now hashes to {found}, \
         not {}: the history up to it was rewritten",
        .anchor.entry,
        hex::encode(.anchor.hash)
    )]
    Rewritten { anchor: Anchor, found: String },
}

/// Why a kept bundle fails. Bundles are named by their content hash, which the events record,
/// and the events are in the chain: so the chain vouches for the bundles it names.
#[derive(Debug, thiserror::Error)]
pub enum BundleFailure {
    #[error(
        "it is missing, but the `policy_change` event with `seq` {seq} put it in effect: it \
         was deleted"
    )]
    Missing { seq: u64 },
    #[error("cannot read it: {0}")]
    Io(io::Error),
    #[error("it is not a bundle: {0}")]
    NotABundle(&'static str),
    #[error(
        "its content hashes to {found}, not to the hash its name says: it was altered or \
         replaced"
    )]
    Hash { found: String },
}

/// Why an entry of `chain.log` fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EntryFailure {
    #[error("the file ends inside this entry: the manifest was cut short")]
    CutShort,
    #[error("{0}")]
    Line(LineProblem),
    #[error("its index is {found}, but it is entry {expected}: entries were removed or inserted")]
    Index { found: u64, expected: u64 },
    #[error(
        "it records the hash {recorded} for entry {before}, which hashes to {actual}: entry \
         {before} was altered, or entries were removed or inserted"
    )]
    Prev {
        before: u64,
        recorded: String,
        actual: String,
    },
    #[error("the first entry is not the genesis entry")]
    NoGenesis,
    #[error("a genesis entry appears after the first entry")]
    LateGenesis,
    #[error("manifest format {found} is not one this build reads (it reads {FORMAT_VERSION})")]
    Format { found: u64 },
    #[error("the manifest was started with key {started}, not with the trusted key {trusted}")]
    GenesisKey { started: String, trusted: String },
    #[error(
        "the trusted key {trusted} is none of the manifest's signing keys ({keys}): the \
         manifest was started, or its key rotated, with other keys"
    )]
    UnknownKey { trusted: String, keys: String },
    #[error("its key rotation does not follow: {0}")]
    Rotation(RotationProblem),
    #[error(
        "no checkpoint by key {key_id} signs this key rotation, which both the key before it \
         (vouching for the new key) and the key it names (taking on the chain) sign: the \
         rotation was not made by the store"
    )]
    RotationUnsigned { key_id: String },
    #[error("its path is not `{expected}`, which its `seq` range and date call for")]
    Path { expected: String },
    #[error("its counts or ranges do not agree: {reason}")]
    Range { reason: &'static str },
    #[error(
        "it starts at `seq` {found}, but the segment before ended at `seq` {previous_last}: \
         events are missing from the chain or counted twice"
    )]
    SeqGap { found: u64, previous_last: u64 },
    #[error("its removal of entry {removed} is invalid: {reason}")]
    Retention { removed: u64, reason: &'static str },
    #[error(
        "its cutoff {before} is not at least its `retention_days` ({days}) before its own time: \
         it removes segments that retention keeps"
    )]
    RetentionCutoff { before: NaiveDate, days: u64 },
    #[error("its totals do not match the entries it removes: {reason}")]
    RetentionTotals { reason: &'static str },
}

/// Why a line of `checkpoints.log` fails.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CheckpointFailure {
    #[error("the file ends inside this checkpoint: it was cut short")]
    CutShort,
    #[error("{0}")]
    Line(LineProblem),
    #[error("it is signed by key {found}, not by key {trusted}, which signs that entry")]
    OtherKey { found: String, trusted: String },
    #[error("its signature does not match its contents: it was altered or forged")]
    Signature,
    #[error(
        "it signs entry {entry}, but the manifest ends at entry {last}: entries were cut from \
         the manifest's end"
    )]
    PastEnd { entry: u64, last: u64 },
    #[error(
        "it signs entry {entry} with hash {signed}, but that entry hashes to {actual}: the entry \
         or one before it was altered"
    )]
    Hash {
        entry: u64,
        signed: String,
        actual: String,
    },
    #[error("it signs entry {entry}, before entry {previous} that the checkpoint before signs")]
    Backwards { entry: u64, previous: u64 },
}

/// Why a segment file fails.
#[derive(Debug, thiserror::Error)]
pub enum SegmentFailure {
    #[error("the file is missing")]
    Missing,
    #[error("cannot read it: {0}")]
    Io(io::Error),
    #[error(
        "its SHA-256 is {found} ({found_bytes} bytes), but the manifest recorded {recorded} \
         ({recorded_bytes} bytes){}",
        same_bytes_hint(.same_as)
    )]
    Hash {
        found: String,
        found_bytes: u64,
        recorded: String,
        recorded_bytes: u64,
        same_as: Option<(u64, String)>,
    },
    #[error("{0}")]
    Unreadable(SegmentReadError),
    #[error("it holds {found} events, but the manifest recorded {recorded}")]
    Rows { found: u64, recorded: u64 },
    #[error("it holds `seq` {found}, but the manifest recorded {recorded}")]
    Seq { found: String, recorded: String },
    #[error("its events span {found}, but the manifest recorded {recorded}")]
    Time { found: String, recorded: String },
}

fn entries_phrase(first: u64, last: u64) -> String {
    if first == last {
        format!("manifest entry {first} is")
    } else {
        format!("manifest entries {first}..={last} are")
    }
}

fn unchained_hint(after_head: &bool) -> &'static str {
    if *after_head {
        " (entries were cut from the manifest's end, or a writer died before chaining it)"
    } else {
        ""
    }
}

fn same_bytes_hint(same_as: &Option<(u64, String)>) -> String {
    match same_as {
        Some((entry, path)) => format!(
            "; these are the bytes of entry {entry}, `{path}`: segments were swapped or copied"
        ),
        None => String::new(),
    }
}

impl VerifyError {
    /// Whether a writer in the middle of a seal or a removal could cause this, so that it is
    /// worth reading the manifest again.
    fn may_be_a_writer_at_work(&self) -> bool {
        match self {
            VerifyError::Entry { problem, .. } => *problem == EntryFailure::CutShort,
            VerifyError::Checkpoint { problem, .. } => matches!(
                problem,
                CheckpointFailure::CutShort | CheckpointFailure::PastEnd { .. }
            ),
            VerifyError::Unsigned { .. } => true,
            VerifyError::Unchained { after_head, .. } => *after_head,
            VerifyError::Segment { problem, .. } => matches!(**problem, SegmentFailure::Missing),
            _ => false,
        }
    }
}

/// Verifies the store in `data_dir` against `public_key` (SPKI PEM), or against the store's own
/// public key when `None`. `progress` hears how far it has come, after every chunk read.
pub fn verify(
    data_dir: &Path,
    public_key: Option<&Path>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, VerifyError> {
    verify_extending(data_dir, public_key, None, progress)
}

/// [`verify`], and also that the chain still holds `anchor`, an entry and hash recorded from
/// an earlier verification: what shows that no entry was cut from the manifest's end since,
/// which the chain alone cannot (its newest entries, segments and checkpoints can be removed
/// together, leaving a shorter chain that verifies).
pub fn verify_extending(
    data_dir: &Path,
    public_key: Option<&Path>,
    anchor: Option<Anchor>,
    progress: &mut dyn FnMut(&Progress),
) -> Result<Report, VerifyError> {
    if !data_dir.is_dir() {
        return Err(VerifyError::NoStore {
            path: data_dir.to_owned(),
        });
    }
    let chain_path = data_dir.join(MANIFEST_DIR).join(CHAIN_FILE);
    if !chain_path.exists() {
        return Err(VerifyError::NoManifest { path: chain_path });
    }
    let (key, key_source) = trusted_key(data_dir, public_key)?;
    let mut checked = HashMap::new();
    let mut attempt = 1;
    loop {
        let mut run = Run {
            data_dir,
            key: &key,
            key_source: &key_source,
            anchor,
            checked: &mut checked,
            read_lengths: (0, 0),
        };
        let error = match run.verify(progress) {
            Ok(report) => return Ok(report),
            Err(error) => error,
        };
        let read_lengths = run.read_lengths;
        if attempt >= MAX_ATTEMPTS || !error.may_be_a_writer_at_work() {
            return Err(error);
        }
        std::thread::sleep(WRITER_WAIT);
        if manifest_lengths(data_dir) == read_lengths {
            return Err(error);
        }
        attempt += 1;
    }
}

fn trusted_key(
    data_dir: &Path,
    public_key: Option<&Path>,
) -> Result<(VerifyingKey, KeySource), VerifyError> {
    let (path, source) = match public_key {
        Some(path) => (path.to_owned(), KeySource::Pinned(path.to_owned())),
        None => {
            let path = signing::public_key_path(data_dir);
            if !path.exists() {
                return Err(VerifyError::NoPublicKey { path });
            }
            (path.clone(), KeySource::DataDir(path))
        }
    };
    let text = fs::read_to_string(&path).map_err(|source| VerifyError::Io {
        action: "read",
        path: path.clone(),
        source,
    })?;
    let key = signing::public_key_from_pem(&text)
        .map_err(|problem| VerifyError::Key { path, problem })?;
    Ok((key, source))
}

fn manifest_lengths(data_dir: &Path) -> (u64, u64) {
    let dir = data_dir.join(MANIFEST_DIR);
    let length = |name| fs::metadata(dir.join(name)).map_or(0, |metadata| metadata.len());
    (length(CHAIN_FILE), length(CHECKPOINTS_FILE))
}

/// One pass over the store.
struct Run<'a> {
    data_dir: &'a Path,
    key: &'a VerifyingKey,
    key_source: &'a KeySource,
    /// The recorded entry the chain must still hold.
    anchor: Option<Anchor>,
    /// Segments an earlier pass found intact, by path, with their recorded hash.
    checked: &'a mut HashMap<String, Hash>,
    /// The lengths of `chain.log` and `checkpoints.log` this pass read.
    read_lengths: (u64, u64),
}

impl Run<'_> {
    fn verify(&mut self, progress: &mut dyn FnMut(&Progress)) -> Result<Report, VerifyError> {
        let dir = self.data_dir.join(MANIFEST_DIR);
        let chain_path = dir.join(CHAIN_FILE);
        let checkpoints_path = dir.join(CHECKPOINTS_FILE);
        let (chain_bytes, checkpoint_bytes) = (read(&chain_path)?, read(&checkpoints_path)?);
        let Some(chain_bytes) = chain_bytes else {
            return Err(VerifyError::NoManifest { path: chain_path });
        };
        let checkpoint_bytes = checkpoint_bytes.unwrap_or_default();
        self.read_lengths = (chain_bytes.len() as u64, checkpoint_bytes.len() as u64);

        let key_id = signing::key_id(self.key);
        let chain = check_chain(&chain_path, &chain_bytes)?;
        let (eras, trusted_from) = check_keys(&chain_path, &chain, self.key)?;
        if let Some(anchor) = self.anchor {
            check_anchor(&chain, anchor)?;
        }
        let Checkpoints {
            last: last_checkpoint,
            count: checkpoints,
            signed,
        } = check_checkpoints(
            &checkpoints_path,
            &checkpoint_bytes,
            &chain,
            &eras,
            self.key,
        )?;
        check_rotations_signed(&chain_path, &signed, &eras)?;
        head_signed(&checkpoints_path, &chain, &last_checkpoint)?;
        let removed = removed_indices(&chain);
        let on_disk = list_segment_files(&self.data_dir.join(EVENTS_DIR))?;
        let totals = self.check_segments(&chain, &removed, &on_disk, progress)?;
        check_no_other_files(&chain, &on_disk)?;
        let bundles = self.check_bundles(&chain, &removed)?;

        let head = chain.last().map_or(ZERO_HASH, |head| head.hash);
        Ok(Report {
            entries: chain.len() as u64,
            head_hash: head,
            segments: totals.segments,
            events: totals.events,
            seq_range: totals.seq_range,
            time_range: totals.time_range,
            checkpoints,
            last_checkpoint,
            key_id,
            key_source: self.key_source.clone(),
            rotations: eras.len().saturating_sub(1) as u64,
            trusted_from,
            removed: removed_summary(&chain, &removed),
            recovered_segments: count_via(&chain, Via::Recovery),
            upgraded_segments: count_via(&chain, Via::Upgrade),
            leftover_files: totals.leftover_files,
            bundles,
            extends: self.anchor,
        })
    }

    /// Checks the kept bundles: every file in `DATA/bundles/` named `HASH.bundle` must have
    /// that content hash, and every bundle named by a `policy_change` event of a segment
    /// present must be kept. A bundle no remaining event names (its events removed under
    /// retention) may stay; a bundle file is never required by a decision event alone, whose
    /// bundle was put in effect by a `policy_change` event that names it.
    fn check_bundles(
        &self,
        chain: &[Chained],
        removed: &BTreeSet<u64>,
    ) -> Result<BundlesChecked, VerifyError> {
        let mut kept = HashSet::new();
        let files = archived_files(self.data_dir).map_err(|(path, source)| VerifyError::Io {
            action: "list",
            path,
            source,
        })?;
        for ArchivedFile { hash, path, .. } in files {
            let failed = |problem| VerifyError::Bundle {
                path: path.clone(),
                problem,
            };
            let bytes = fs::read(&path).map_err(|error| failed(BundleFailure::Io(error)))?;
            let found = bundle_content_hash(&bytes)
                .map_err(|why| failed(BundleFailure::NotABundle(why)))?;
            if found != hash {
                return Err(failed(BundleFailure::Hash { found }));
            }
            kept.insert(hash.to_owned());
        }
        let mut named = BTreeSet::new();
        for (index, segment) in segments(chain) {
            if removed.contains(&index) {
                continue;
            }
            let path = self.data_dir.join(&segment.path);
            let changes = policy_changes(&path).map_err(|problem| VerifyError::Segment {
                path: segment.path.clone(),
                entry: index,
                problem: Box::new(SegmentFailure::Unreadable(problem)),
            })?;
            for (seq, hash) in changes {
                if !kept.contains(&hash) {
                    return Err(VerifyError::Bundle {
                        path: self
                            .data_dir
                            .join(BUNDLES_DIR)
                            .join(format!("{hash}{BUNDLE_SUFFIX}")),
                        problem: BundleFailure::Missing { seq },
                    });
                }
                named.insert(hash);
            }
        }
        Ok(BundlesChecked {
            kept: kept.len() as u64,
            named: named.len() as u64,
        })
    }

    /// Checks every segment the chain holds and retention did not remove, in chain order.
    fn check_segments(
        &mut self,
        chain: &[Chained],
        removed: &BTreeSet<u64>,
        on_disk: &HashSet<String>,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<Totals, VerifyError> {
        // Every segment present, and every one that should be: a removed segment's file that
        // is still there (a removal a crash cut short) must still be the file it was.
        let to_check: Vec<(u64, &SegmentRecord)> = segments(chain)
            .filter(|(index, segment)| !removed.contains(index) || on_disk.contains(&segment.path))
            .collect();
        let by_hash: HashMap<Hash, (u64, &str)> = segments(chain)
            .map(|(index, segment)| (segment.sha256, (index, segment.path.as_str())))
            .collect();
        let mut done = Progress {
            segments_total: to_check.len() as u64,
            bytes_total: to_check.iter().map(|(_, segment)| segment.bytes).sum(),
            ..Progress::default()
        };
        progress(&done);
        let mut totals = Totals::default();
        for (index, segment) in to_check {
            let failed = |problem| VerifyError::Segment {
                path: segment.path.clone(),
                entry: index,
                problem: Box::new(problem),
            };
            if !on_disk.contains(&segment.path) {
                return Err(failed(SegmentFailure::Missing));
            }
            if self.checked.get(&segment.path) != Some(&segment.sha256) {
                self.check_segment(segment, &by_hash, &mut done, progress)
                    .map_err(failed)?;
                self.checked.insert(segment.path.clone(), segment.sha256);
            } else {
                done.bytes_done += segment.bytes;
            }
            done.segments_done += 1;
            progress(&done);
            if removed.contains(&index) {
                totals.leftover_files.push(segment.path.clone());
            } else {
                totals.add(segment);
            }
        }
        Ok(totals)
    }

    fn check_segment(
        &self,
        segment: &SegmentRecord,
        by_hash: &HashMap<Hash, (u64, &str)>,
        done: &mut Progress,
        progress: &mut dyn FnMut(&Progress),
    ) -> Result<(), SegmentFailure> {
        let path = self.data_dir.join(&segment.path);
        let (sha256, bytes) = file_sha256(&path, &mut |chunk| {
            done.bytes_done += chunk;
            progress(done);
        })
        .map_err(|error| match error.kind() {
            io::ErrorKind::NotFound => SegmentFailure::Missing,
            _ => SegmentFailure::Io(error),
        })?;
        if sha256 != segment.sha256 || bytes != segment.bytes {
            return Err(SegmentFailure::Hash {
                found: hex::encode(sha256),
                found_bytes: bytes,
                recorded: hex::encode(segment.sha256),
                recorded_bytes: segment.bytes,
                same_as: by_hash
                    .get(&sha256)
                    .map(|(entry, path)| (*entry, (*path).to_owned())),
            });
        }
        let contents = read_segment(&path, false).map_err(SegmentFailure::Unreadable)?;
        if contents.rows != segment.events {
            return Err(SegmentFailure::Rows {
                found: contents.rows,
                recorded: segment.events,
            });
        }
        if (contents.first_seq, contents.last_seq) != (segment.first_seq, segment.last_seq)
            || !contents.consecutive
        {
            return Err(SegmentFailure::Seq {
                found: format!(
                    "{}..={}{}",
                    contents.first_seq,
                    contents.last_seq,
                    if contents.consecutive {
                        ""
                    } else {
                        " with gaps"
                    }
                ),
                recorded: format!("{}..={}", segment.first_seq, segment.last_seq),
            });
        }
        if (contents.min_time, contents.max_time) != (segment.min_time, segment.max_time) {
            return Err(SegmentFailure::Time {
                found: time_span(contents.min_time, contents.max_time),
                recorded: time_span(segment.min_time, segment.max_time),
            });
        }
        Ok(())
    }
}

#[derive(Default)]
struct Totals {
    leftover_files: Vec<String>,
    segments: u64,
    events: u64,
    seq_range: Option<(u64, u64)>,
    time_range: Option<(DateTime<Utc>, DateTime<Utc>)>,
}

impl Totals {
    fn add(&mut self, segment: &SegmentRecord) {
        self.segments += 1;
        self.events += segment.events;
        self.seq_range = Some(match self.seq_range {
            None => (segment.first_seq, segment.last_seq),
            Some((first, last)) => (first.min(segment.first_seq), last.max(segment.last_seq)),
        });
        self.time_range = Some(match self.time_range {
            None => (segment.min_time, segment.max_time),
            Some((min, max)) => (min.min(segment.min_time), max.max(segment.max_time)),
        });
    }
}

/// Whether `chain` holds `anchor`'s entry with `anchor`'s hash.
fn check_anchor(chain: &[Chained], anchor: Anchor) -> Result<(), VerifyError> {
    let entry = usize::try_from(anchor.entry)
        .ok()
        .and_then(|index| chain.get(index));
    match entry {
        None => Err(VerifyError::CutBefore {
            anchor,
            last: (chain.len() as u64).saturating_sub(1),
        }),
        Some(chained) if chained.hash != anchor.hash => Err(VerifyError::Rewritten {
            anchor,
            found: hex::encode(chained.hash),
        }),
        Some(_) => Ok(()),
    }
}

/// The content hash of a bundle's bytes, as lowercase hex, checked against the hash the
/// bundle carries (docs/bundle-format.md: the `u32` total length at offset 12, and the
/// SHA-256 of every byte before the last 32 of that length). Only the header is read, so a
/// bundle of any format version can be checked.
fn bundle_content_hash(bytes: &[u8]) -> Result<String, &'static str> {
    const MAGIC: &[u8] = b"GATEBNDL";
    if !bytes.starts_with(MAGIC) {
        return Err("it does not start with the bundle magic `GATEBNDL`");
    }
    let length = bytes
        .get(12..16)
        .and_then(|field| <[u8; 4]>::try_from(field).ok())
        .map(|field| u32::from_le_bytes(field) as usize)
        .ok_or("it ends inside its header")?;
    if length < 16 + 32 || length > bytes.len() {
        return Err("its header gives a length the file does not have");
    }
    let (content, carried) = bytes[..length].split_at(length - 32);
    let computed = Sha256::digest(content);
    if computed.as_slice() != carried {
        return Err("its content does not hash to the hash it carries");
    }
    Ok(hex::encode(computed))
}

/// The `seq` and bundle hash of each `policy_change` event of the segment at `path` that
/// names a bundle.
fn policy_changes(path: &Path) -> Result<Vec<(u64, String)>, SegmentReadError> {
    let builder = ParquetRecordBatchReaderBuilder::try_new(fs::File::open(path)?)?;
    let mask = ProjectionMask::columns(builder.parquet_schema(), ["seq", "kind", "bundle_hash"]);
    let mut changes = Vec::new();
    for batch in builder.with_projection(mask).build()? {
        let batch = batch?;
        let seqs = batch
            .column_by_name("seq")
            .and_then(|column| column.as_primitive_opt::<Int64Type>())
            .ok_or(SegmentReadError::Column {
                column: "seq",
                expected: "64-bit integers",
            })?;
        let text = |column: &'static str| {
            batch
                .column_by_name(column)
                .and_then(|array| array.as_string_opt::<i32>())
                .ok_or(SegmentReadError::Column {
                    column,
                    expected: "text",
                })
        };
        let (kinds, hashes) = (text("kind")?, text("bundle_hash")?);
        for row in 0..batch.num_rows() {
            if kinds.is_valid(row)
                && kinds.value(row) == EventKind::PolicyChange.as_str()
                && hashes.is_valid(row)
                && is_bundle_hash(hashes.value(row))
            {
                let seq = u64::try_from(seqs.value(row))
                    .map_err(|_| SegmentReadError::Value { column: "seq" })?;
                changes.push((seq, hashes.value(row).to_owned()));
            }
        }
    }
    Ok(changes)
}

fn time_span(min: DateTime<Utc>, max: DateTime<Utc>) -> String {
    use crate::manifest::format_time;
    format!("{} to {}", format_time(&min), format_time(&max))
}

/// A file's bytes, `None` when it does not exist.
fn read(path: &Path) -> Result<Option<Vec<u8>>, VerifyError> {
    match fs::read(path) {
        Ok(bytes) => Ok(Some(bytes)),
        Err(error) if error.kind() == io::ErrorKind::NotFound => Ok(None),
        Err(source) => Err(VerifyError::Io {
            action: "read",
            path: path.to_owned(),
            source,
        }),
    }
}

/// The segment entries of a chain, with their indices.
fn segments(chain: &[Chained]) -> impl Iterator<Item = (u64, &SegmentRecord)> {
    chain
        .iter()
        .filter_map(|chained| match &chained.entry.body {
            EntryBody::Segment(segment) => Some((chained.entry.index, segment)),
            _ => None,
        })
}

fn count_via(chain: &[Chained], via: Via) -> u64 {
    segments(chain)
        .filter(|(_, segment)| segment.via == via)
        .count() as u64
}

// ---------------------------------------------------------------------------------------------
// The chain.

/// The chain's signing keys, each rotation checked against the key before it, and the entry
/// from which the trusted key signs, which must be one of them.
fn check_keys(
    path: &Path,
    chain: &[Chained],
    trusted: &VerifyingKey,
) -> Result<(Vec<KeyEra>, u64), VerifyError> {
    let fail = |entry: u64, problem| VerifyError::Entry {
        path: path.to_owned(),
        line: entry + 1,
        entry,
        problem,
    };
    let key_id = signing::key_id(trusted);
    let eras =
        key_eras(chain).map_err(|(entry, problem)| fail(entry, EntryFailure::Rotation(problem)))?;
    // By its bytes where the chain holds them, not only by its id.
    let trusted_from = eras
        .iter()
        .find(|era| era.key_id == key_id && era.key.is_none_or(|key| key == *trusted))
        .map(|era| era.from_entry);
    if let Some(from) = trusted_from {
        return Ok((eras, from));
    }
    let problem = match eras.as_slice() {
        [genesis] => EntryFailure::GenesisKey {
            started: genesis.key_id.clone(),
            trusted: key_id.clone(),
        },
        _ => EntryFailure::UnknownKey {
            trusted: key_id.clone(),
            keys: eras
                .iter()
                .map(|era| era.key_id.as_str())
                .collect::<Vec<_>>()
                .join(", "),
        },
    };
    Err(fail(0, problem))
}

/// Every rotation must be signed by two checkpoints of its own entry: one made with the key
/// before it, which so vouches for the new key, and one with the new key, which so takes on the
/// chain. Without the second, anyone could name a key of the store as the successor of a key of
/// their own, and a verifier pinned to the store's key would vouch for their history.
fn check_rotations_signed(
    path: &Path,
    signed: &HashSet<(u64, String)>,
    eras: &[KeyEra],
) -> Result<(), VerifyError> {
    match missing_rotation_checkpoints(eras, signed).first() {
        Some((entry, key_id)) => Err(VerifyError::Entry {
            path: path.to_owned(),
            line: entry + 1,
            entry: *entry,
            problem: EntryFailure::RotationUnsigned {
                key_id: (*key_id).to_owned(),
            },
        }),
        None => Ok(()),
    }
}

/// Parses and checks every line of `chain.log`.
fn check_chain(path: &Path, bytes: &[u8]) -> Result<Vec<Chained>, VerifyError> {
    let fail = |line: usize, problem| VerifyError::Entry {
        path: path.to_owned(),
        line: line as u64,
        entry: line.saturating_sub(1) as u64,
        problem,
    };
    let split =
        split_lines(bytes).map_err(|(line, problem)| fail(line, EntryFailure::Line(problem)))?;
    if split.torn_bytes > 0 {
        return Err(fail(split.lines.len() + 1, EntryFailure::CutShort));
    }
    let mut chain: Vec<Chained> = Vec::with_capacity(split.lines.len());
    let mut removed = BTreeSet::new();
    let mut last_segment: Option<&SegmentRecord> = None;
    for (position, line) in split.lines.iter().enumerate() {
        let entry = Entry::parse(line)
            .map_err(|problem| fail(position + 1, EntryFailure::Line(problem)))?;
        let prev = chain.last().map_or(ZERO_HASH, |before| before.hash);
        check_entry(&entry, position as u64, &prev, &chain, &mut removed)
            .map_err(|problem| fail(position + 1, problem))?;
        chain.push(Chained {
            hash: line_hash(line),
            entry,
        });
    }
    // Segment `seq` ranges follow each other without gap or overlap.
    for (position, chained) in chain.iter().enumerate() {
        let EntryBody::Segment(segment) = &chained.entry.body else {
            continue;
        };
        if let Some(before) = last_segment
            && before.last_seq.checked_add(1) != Some(segment.first_seq)
        {
            return Err(fail(
                position + 1,
                EntryFailure::SeqGap {
                    found: segment.first_seq,
                    previous_last: before.last_seq,
                },
            ));
        }
        last_segment = Some(segment);
    }
    if chain.is_empty() {
        return Err(fail(1, EntryFailure::NoGenesis));
    }
    Ok(chain)
}

/// Checks one entry against its position, the entry before and the entries before.
fn check_entry(
    entry: &Entry,
    position: u64,
    prev: &Hash,
    before: &[Chained],
    removed: &mut BTreeSet<u64>,
) -> Result<(), EntryFailure> {
    if entry.index != position {
        return Err(EntryFailure::Index {
            found: entry.index,
            expected: position,
        });
    }
    if entry.prev != *prev {
        return Err(EntryFailure::Prev {
            before: position.saturating_sub(1),
            recorded: hex::encode(entry.prev),
            actual: hex::encode(prev),
        });
    }
    match (&entry.body, position) {
        // The genesis key is checked against the trusted key in `check_keys`.
        (EntryBody::Genesis { format, .. }, 0) => {
            if *format != FORMAT_VERSION {
                return Err(EntryFailure::Format { found: *format });
            }
            Ok(())
        }
        (EntryBody::Genesis { .. }, _) => Err(EntryFailure::LateGenesis),
        (_, 0) => Err(EntryFailure::NoGenesis),
        (EntryBody::Segment(segment), _) => check_segment_entry(segment),
        (EntryBody::Retention(record), _) => {
            if !retention_cutoff_holds(record, &entry.time) {
                return Err(EntryFailure::RetentionCutoff {
                    before: record.before,
                    days: record.retention_days,
                });
            }
            check_retention_entry(record, before, removed)
        }
        // Checked against the key before it in `check_keys`.
        (EntryBody::Key(_), _) => Ok(()),
    }
}

fn check_segment_entry(segment: &SegmentRecord) -> Result<(), EntryFailure> {
    let range = |reason| Err(EntryFailure::Range { reason });
    if segment.first_seq > segment.last_seq {
        return range("its first `seq` is after its last");
    }
    if segment.last_seq - segment.first_seq + 1 != segment.events {
        return range("its event count is not the size of its `seq` range");
    }
    if segment.min_time > segment.max_time {
        return range("its earliest time is after its latest");
    }
    let date = segment.min_time.date_naive();
    if segment.max_time.date_naive() != date {
        return range("its events are of more than one date");
    }
    let expected = relative_segment_path(date, segment.first_seq, segment.last_seq);
    if segment.path != expected {
        return Err(EntryFailure::Path { expected });
    }
    Ok(())
}

/// Checks a retention entry against the entries before it, of which `removed` were removed
/// already; adds its own removals to `removed`.
fn check_retention_entry(
    record: &RetentionRecord,
    before: &[Chained],
    removed: &mut BTreeSet<u64>,
) -> Result<(), EntryFailure> {
    let mut removed_now = BTreeSet::new();
    let mut segments = 0;
    let mut events = 0;
    let mut highest: Option<&Chained> = None;
    for &(first, last) in &record.removed {
        for index in first..=last {
            let invalid = |reason| EntryFailure::Retention {
                removed: index,
                reason,
            };
            let position = usize::try_from(index).unwrap_or(usize::MAX);
            let Some(chained) = before.get(position) else {
                return Err(invalid("there is no such entry before it"));
            };
            let EntryBody::Segment(segment) = &chained.entry.body else {
                return Err(invalid("it is not a segment entry"));
            };
            if removed.contains(&index) || removed_now.contains(&index) {
                return Err(invalid("it was removed already"));
            }
            if segment.min_time.date_naive() >= record.before {
                return Err(invalid("its date is not before the cutoff"));
            }
            segments += 1;
            events += segment.events;
            if highest.is_none_or(|highest| highest.entry.index < index) {
                highest = Some(chained);
            }
            removed_now.insert(index);
        }
    }
    let totals = |reason| Err(EntryFailure::RetentionTotals { reason });
    if segments != record.segments {
        return totals("`segments` is not the number of removed entries");
    }
    if events != record.events {
        return totals("`events` is not the sum of the removed segments' events");
    }
    if highest.map(|chained| chained.hash) != Some(record.last_removed_hash) {
        return totals("`last_removed_hash` is not the hash of the last removed entry");
    }
    removed.extend(removed_now);
    Ok(())
}

fn removed_summary(chain: &[Chained], removed: &BTreeSet<u64>) -> Option<RemovedSummary> {
    let last = chain
        .iter()
        .rev()
        .find_map(|chained| match &chained.entry.body {
            EntryBody::Retention(record) => Some((chained.entry.time, record)),
            _ => None,
        })?;
    let removed_segments: Vec<&SegmentRecord> = segments(chain)
        .filter(|(index, _)| removed.contains(index))
        .map(|(_, segment)| segment)
        .collect();
    let first_seq = removed_segments.iter().map(|s| s.first_seq).min()?;
    let last_seq = removed_segments.iter().map(|s| s.last_seq).max()?;
    let removals = chain
        .iter()
        .filter(|chained| matches!(chained.entry.body, EntryBody::Retention(_)))
        .count();
    Some(RemovedSummary {
        removals: removals as u64,
        segments: removed_segments.len() as u64,
        events: removed_segments.iter().map(|segment| segment.events).sum(),
        seq_range: (first_seq, last_seq),
        last_time: last.0,
        last_retention_days: last.1.retention_days,
        last_before: last.1.before,
    })
}

// ---------------------------------------------------------------------------------------------
// The checkpoints.

/// The checkpoints, checked.
struct Checkpoints {
    last: Checkpoint,
    count: u64,
    /// The entries signed, each with the id of the key that signed it.
    signed: HashSet<(u64, String)>,
}

/// Checks every checkpoint against the entry it signs and a key that signs that entry.
fn check_checkpoints(
    path: &Path,
    bytes: &[u8],
    chain: &[Chained],
    eras: &[KeyEra],
    trusted: &VerifyingKey,
) -> Result<Checkpoints, VerifyError> {
    let fail = |line: usize, problem| VerifyError::Checkpoint {
        path: path.to_owned(),
        line: line as u64,
        problem,
    };
    let split = split_lines(bytes)
        .map_err(|(line, problem)| fail(line, CheckpointFailure::Line(problem)))?;
    if split.torn_bytes > 0 {
        return Err(fail(split.lines.len() + 1, CheckpointFailure::CutShort));
    }
    let trusted_id = signing::key_id(trusted);
    let mut signed = HashSet::new();
    let mut last: Option<Checkpoint> = None;
    for (position, line) in split.lines.iter().enumerate() {
        let checkpoint = Checkpoint::parse(line)
            .map_err(|problem| fail(position + 1, CheckpointFailure::Line(problem)))?;
        // A key that signs the checkpoint's entry: the trusted key itself, or one the chain
        // names. A rotation entry is signed by the key before it and by the key it names.
        let era = signing_era(eras, checkpoint.entry, &checkpoint.key_id)
            .or_else(|| era_of(eras, checkpoint.entry));
        let key_id = era.map_or(trusted_id.as_str(), |era| era.key_id.as_str());
        let key = match era {
            Some(era) if era.key_id != trusted_id => era.key.as_ref(),
            _ => Some(trusted),
        };
        check_checkpoint(&checkpoint, last.as_ref(), chain, key, key_id)
            .map_err(|problem| fail(position + 1, problem))?;
        signed.insert((checkpoint.entry, checkpoint.key_id.clone()));
        last = Some(checkpoint);
    }
    let Some(last) = last else {
        return Err(VerifyError::NoCheckpoint {
            path: path.to_owned(),
            entries: chain.len() as u64,
        });
    };
    Ok(Checkpoints {
        last,
        count: split.lines.len() as u64,
        signed,
    })
}

/// The newest entry must be signed.
fn head_signed(path: &Path, chain: &[Chained], last: &Checkpoint) -> Result<(), VerifyError> {
    let head = chain.len().saturating_sub(1) as u64;
    if last.entry < head {
        return Err(VerifyError::Unsigned {
            path: path.to_owned(),
            first: last.entry + 1,
            last: head,
        });
    }
    Ok(())
}

fn check_checkpoint(
    checkpoint: &Checkpoint,
    previous: Option<&Checkpoint>,
    chain: &[Chained],
    key: Option<&VerifyingKey>,
    key_id: &str,
) -> Result<(), CheckpointFailure> {
    if checkpoint.key_id != key_id {
        return Err(CheckpointFailure::OtherKey {
            found: checkpoint.key_id.clone(),
            trusted: key_id.to_owned(),
        });
    }
    let signed = key.is_some_and(|key| {
        signing::verify_signature(key, &checkpoint.message(), &checkpoint.signature)
    });
    if !signed {
        return Err(CheckpointFailure::Signature);
    }
    let position = usize::try_from(checkpoint.entry).unwrap_or(usize::MAX);
    let Some(entry) = chain.get(position) else {
        return Err(CheckpointFailure::PastEnd {
            entry: checkpoint.entry,
            last: chain.len().saturating_sub(1) as u64,
        });
    };
    if entry.hash != checkpoint.entry_hash {
        return Err(CheckpointFailure::Hash {
            entry: checkpoint.entry,
            signed: hex::encode(checkpoint.entry_hash),
            actual: hex::encode(entry.hash),
        });
    }
    if let Some(previous) = previous
        && checkpoint.entry < previous.entry
    {
        return Err(CheckpointFailure::Backwards {
            entry: checkpoint.entry,
            previous: previous.entry,
        });
    }
    Ok(())
}

// ---------------------------------------------------------------------------------------------
// The files.

/// The segment files under `events/`, as paths relative to the data directory.
fn list_segment_files(events_dir: &Path) -> Result<HashSet<String>, VerifyError> {
    let mut files = HashSet::new();
    let list = |dir: &Path| {
        fs::read_dir(dir)
            .and_then(|entries| entries.collect::<Result<Vec<_>, _>>())
            .map_err(|source| VerifyError::Io {
                action: "list",
                path: dir.to_owned(),
                source,
            })
    };
    if !events_dir.is_dir() {
        return Ok(files);
    }
    for partition in list(events_dir)? {
        let partition_name = partition.file_name().to_string_lossy().into_owned();
        if !partition_name.starts_with("date=") || !partition.path().is_dir() {
            continue;
        }
        for file in list(&partition.path())? {
            let name = file.file_name().to_string_lossy().into_owned();
            if parse_segment_file_name(&name).is_some() {
                files.insert(format!("{EVENTS_DIR}/{partition_name}/{name}"));
            }
        }
    }
    Ok(files)
}

/// Fails on a segment file the chain does not hold.
fn check_no_other_files(chain: &[Chained], on_disk: &HashSet<String>) -> Result<(), VerifyError> {
    let chained: HashSet<&str> = segments(chain)
        .map(|(_, segment)| segment.path.as_str())
        .collect();
    let head_seq = segments(chain)
        .map(|(_, segment)| segment.last_seq)
        .max()
        .unwrap_or(0);
    let mut unchained: Vec<&String> = on_disk
        .iter()
        .filter(|path| !chained.contains(path.as_str()))
        .collect();
    unchained.sort();
    let Some(path) = unchained.first() else {
        return Ok(());
    };
    let name = path.rsplit('/').next().unwrap_or_default();
    let first = parse_segment_file_name(name).map_or(0, |(first, _)| first);
    Err(VerifyError::Unchained {
        path: (*path).clone(),
        after_head: first > head_seq,
    })
}
