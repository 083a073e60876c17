//! The policy state as SQL tables, read from the bundles the server archived
//! ([`crate::bundles`]): what was configured, beside `access_events`, what happened.
//!
//! Every table has the column `bundle_hash`, and covers every archived bundle, so a question
//! about the past joins on the bundle an event names; `bundles.current` marks the bundle in
//! effect now, for questions about the present:
//!
//! ```sql
//! SELECT r.rule, count(e.event_id) AS hits
//! FROM rules r JOIN bundles b ON b.bundle_hash = r.bundle_hash AND b.current
//! LEFT JOIN access_events e ON e.rule = r.rule AND e.bundle_hash = r.bundle_hash
//! GROUP BY r.rule
//! ```
//!
//! A file in the archive that is not a bundle this build reads is an error naming it, not a
//! table that is silently short.

use std::fs;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

use arrow::array::{
    ArrayRef, BooleanArray, RecordBatch, StringArray, TimestampMicrosecondArray, UInt16Array,
    UInt64Array,
};
use arrow::datatypes::{DataType, Field, Schema, TimeUnit};
use datafusion::datasource::MemTable;
use datafusion::prelude::SessionContext;
use portcullis_lang::bundle::Bundle;
use portcullis_lang::ir::{CredentialKind, Effect, StaticSource, TargetRef, WorkloadRef};

use crate::bundles::{ArchivedFile as ArchiveFile, archived_files, current_bundle};
use crate::query::QueryError;

/// Archived bundles larger than this are refused unread.
const MAX_BUNDLE_BYTES: u64 = 256 * 1024 * 1024;

/// The names of the policy-state tables.
pub const TABLES: [&str; 5] = ["bundles", "workloads", "targets", "credentials", "rules"];

/// Why the policy state cannot be read.
#[derive(Debug, thiserror::Error)]
pub enum PolicyStateError {
    #[error("cannot read the bundle archive `{path}`: {source}")]
    Io {
        path: PathBuf,
        #[source]
        source: std::io::Error,
    },
    #[error("the archived bundle `{path}` cannot be read: {error}")]
    Bundle { path: PathBuf, error: String },
    #[error("the archived bundle `{path}` has content hash {actual}, not the one its name says")]
    HashMismatch { path: PathBuf, actual: String },
    #[error("cannot build the table: {0}")]
    Table(String),
}

/// One archived bundle, decoded.
struct Archived {
    hash: String,
    size: u64,
    bundle: Bundle,
}

/// Registers the policy-state tables of `data_dir` in `ctx`; empty tables before the first
/// bundle is archived.
///
/// Decoding the archive is the fixed cost of every query (tens of milliseconds for bundles of
/// ten thousand rules), so the tables last built are kept for the next query of the same data
/// directory, as long as the archive lists the same files with the same sizes and
/// modification times and the same bundle is current. Archived bundles are never rewritten in
/// place (a bundle's file name is its content hash), so that check is enough to notice any
/// change the server makes; a file changed behind its back is noticed too unless its size and
/// time are restored with it.
pub fn register(ctx: &SessionContext, data_dir: &Path) -> Result<(), QueryError> {
    let files = list_archive(data_dir)?;
    let current = current_bundle(data_dir);
    let key = ArchiveKey {
        data_dir: data_dir.to_owned(),
        files,
        current,
    };
    let tables = match cached_tables(&key) {
        Some(tables) => tables,
        None => {
            let archived = read_archive(&key.files)?;
            let current = key.current.as_deref();
            let tables = Arc::new([
                bundles_batch(&archived, current)?,
                workloads_batch(&archived)?,
                targets_batch(&archived)?,
                credentials_batch(&archived)?,
                rules_batch(&archived)?,
            ]);
            remember_tables(key, Arc::clone(&tables));
            tables
        }
    };
    for (name, batch) in TABLES.into_iter().zip(tables.iter()) {
        let table = MemTable::try_new(batch.schema(), vec![vec![batch.clone()]])?;
        ctx.register_table(name, Arc::new(table))?;
    }
    Ok(())
}

/// What the cached tables were built from.
#[derive(Debug, Clone, PartialEq, Eq)]
struct ArchiveKey {
    data_dir: PathBuf,
    files: Vec<ArchiveFile>,
    current: Option<String>,
}

type Tables = Arc<[RecordBatch; 5]>;

/// The tables last built, for one data directory (a process serves one).
static LAST_BUILT: Mutex<Option<(ArchiveKey, Tables)>> = Mutex::new(None);

fn cached_tables(key: &ArchiveKey) -> Option<Tables> {
    let last = LAST_BUILT.lock().unwrap_or_else(PoisonError::into_inner);
    match &*last {
        Some((built_from, tables)) if built_from == key => Some(Arc::clone(tables)),
        _ => None,
    }
}

fn remember_tables(key: ArchiveKey, tables: Tables) {
    *LAST_BUILT.lock().unwrap_or_else(PoisonError::into_inner) = Some((key, tables));
}

/// The archived bundles' files, by hash.
fn list_archive(data_dir: &Path) -> Result<Vec<ArchiveFile>, PolicyStateError> {
    archived_files(data_dir).map_err(|(path, source)| PolicyStateError::Io { path, source })
}

fn read_archive(files: &[ArchiveFile]) -> Result<Vec<Archived>, PolicyStateError> {
    let mut archived = Vec::with_capacity(files.len());
    for file in files {
        let path = &file.path;
        if file.size > MAX_BUNDLE_BYTES {
            return Err(PolicyStateError::Bundle {
                path: path.clone(),
                error: format!("it is larger than {MAX_BUNDLE_BYTES} bytes"),
            });
        }
        let bytes = fs::read(path).map_err(|source| PolicyStateError::Io {
            path: path.clone(),
            source,
        })?;
        let bundle = Bundle::from_bytes(&bytes).map_err(|error| PolicyStateError::Bundle {
            path: path.clone(),
            error: error.to_string(),
        })?;
        if bundle.hash_hex() != file.hash {
            return Err(PolicyStateError::HashMismatch {
                path: path.clone(),
                actual: bundle.hash_hex(),
            });
        }
        archived.push(Archived {
            hash: file.hash.clone(),
            size: file.size,
            bundle,
        });
    }
    Ok(archived)
}

fn text(name: &str, nullable: bool) -> Field {
    Field::new(name, DataType::Utf8, nullable)
}

fn batch(fields: Vec<Field>, columns: Vec<ArrayRef>) -> Result<RecordBatch, QueryError> {
    RecordBatch::try_new(Arc::new(Schema::new(fields)), columns)
        .map_err(|error| QueryError::PolicyState(PolicyStateError::Table(error.to_string())))
}

fn strings<'a>(values: impl IntoIterator<Item = &'a str>) -> ArrayRef {
    Arc::new(StringArray::from_iter_values(values))
}

fn optional_strings<'a>(values: impl IntoIterator<Item = Option<&'a str>>) -> ArrayRef {
    Arc::new(values.into_iter().collect::<StringArray>())
}

fn bundles_batch(archived: &[Archived], current: Option<&str>) -> Result<RecordBatch, QueryError> {
    let count = |f: fn(&Bundle) -> usize| -> ArrayRef {
        Arc::new(UInt64Array::from_iter_values(
            archived.iter().map(|a| f(&a.bundle) as u64),
        ))
    };
    let key_ids: Vec<Option<String>> = archived
        .iter()
        .map(|a| a.bundle.signature().map(|signature| signature.key_id()))
        .collect();
    // The time the archived copy's signature gives (the first signature of the bundle the
    // server admitted); null when unsigned or signed without a time.
    let signed_at: TimestampMicrosecondArray = archived
        .iter()
        .map(|a| {
            a.bundle
                .signature()
                .and_then(|signature| signature.signed_at())
                .and_then(|seconds| i64::try_from(seconds).ok())
                .and_then(|seconds| seconds.checked_mul(1_000_000))
        })
        .collect();
    let signed_at = signed_at.with_timezone(crate::schema::TIME_ZONE);
    batch(
        vec![
            text("bundle_hash", false),
            Field::new("current", DataType::Boolean, false),
            Field::new("size_bytes", DataType::UInt64, false),
            text("signing_key_id", true),
            Field::new(
                "signed_at",
                DataType::Timestamp(TimeUnit::Microsecond, Some(crate::schema::TIME_ZONE.into())),
                true,
            ),
            Field::new("workloads", DataType::UInt64, false),
            Field::new("targets", DataType::UInt64, false),
            Field::new("credentials", DataType::UInt64, false),
            Field::new("rules", DataType::UInt64, false),
        ],
        vec![
            strings(archived.iter().map(|a| a.hash.as_str())),
            Arc::new(BooleanArray::from_iter(
                archived
                    .iter()
                    .map(|a| Some(Some(a.hash.as_str()) == current)),
            )),
            Arc::new(UInt64Array::from_iter_values(
                archived.iter().map(|a| a.size),
            )),
            optional_strings(key_ids.iter().map(Option::as_deref)),
            Arc::new(signed_at),
            count(|b| b.workloads().len()),
            count(|b| b.targets().len()),
            count(|b| b.credentials().len()),
            count(|b| b.rules().len()),
        ],
    )
}

fn workloads_batch(archived: &[Archived]) -> Result<RecordBatch, QueryError> {
    let mut hashes = Vec::new();
    let mut names = Vec::new();
    let mut kinds = Vec::new();
    for archive in archived {
        for workload in archive.bundle.workloads() {
            let mut own: Vec<&str> = workload
                .alternatives
                .iter()
                .map(|alternative| alternative.kind.keyword())
                .collect();
            own.dedup();
            hashes.push(archive.hash.as_str());
            names.push(workload.name.as_str());
            kinds.push(own.join(","));
        }
    }
    batch(
        vec![
            text("bundle_hash", false),
            text("workload", false),
            text("trust_provider_kinds", false),
        ],
        vec![
            strings(hashes),
            strings(names),
            strings(kinds.iter().map(String::as_str)),
        ],
    )
}

fn targets_batch(archived: &[Archived]) -> Result<RecordBatch, QueryError> {
    let targets: Vec<(&str, &portcullis_lang::ir::Target)> = archived
        .iter()
        .flat_map(|a| a.bundle.targets().iter().map(|t| (a.hash.as_str(), t)))
        .collect();
    batch(
        vec![
            text("bundle_hash", false),
            text("target", false),
            text("protocol", false),
            text("host", false),
            Field::new("port", DataType::UInt16, false),
            text("database", true),
            text("path_prefix", true),
        ],
        vec![
            strings(targets.iter().map(|(hash, _)| *hash)),
            strings(targets.iter().map(|(_, t)| t.name.as_str())),
            strings(targets.iter().map(|(_, t)| t.protocol.keyword())),
            strings(targets.iter().map(|(_, t)| t.host.as_str())),
            Arc::new(UInt16Array::from_iter_values(
                targets.iter().map(|(_, t)| t.port),
            )),
            optional_strings(targets.iter().map(|(_, t)| t.database.as_deref())),
            optional_strings(targets.iter().map(|(_, t)| t.path_prefix.as_deref())),
        ],
    )
}

fn credentials_batch(archived: &[Archived]) -> Result<RecordBatch, QueryError> {
    let credentials: Vec<(&str, &portcullis_lang::ir::Credential)> = archived
        .iter()
        .flat_map(|a| a.bundle.credentials().iter().map(|c| (a.hash.as_str(), c)))
        .collect();
    // Where a credential comes from, never the secret: an audience, a token URL, an
    // environment variable's name or a file's path, the roles granted.
    let sources: Vec<String> = credentials
        .iter()
        .map(|(_, credential)| match &credential.kind {
            CredentialKind::Jwt {
                audience,
                copy_claims,
            } if copy_claims.is_empty() => format!("audience {audience}"),
            CredentialKind::Jwt {
                audience,
                copy_claims,
            } => format!("audience {audience}; copy_claims {}", copy_claims.join(",")),
            CredentialKind::Static(StaticSource::Env(name)) => format!("env {name}"),
            CredentialKind::Static(StaticSource::File(path)) => format!("file {path}"),
            CredentialKind::OauthClientCredentials { token_url, .. } => {
                format!("token_url {token_url}")
            }
            CredentialKind::PostgresRole { grant } => format!("grant {}", grant.join(",")),
        })
        .collect();
    batch(
        vec![
            text("bundle_hash", false),
            text("credential", false),
            text("kind", false),
            Field::new("ttl_s", DataType::UInt64, true),
            Field::new("static_secret", DataType::Boolean, false),
            text("source", false),
        ],
        vec![
            strings(credentials.iter().map(|(hash, _)| *hash)),
            strings(credentials.iter().map(|(_, c)| c.name.as_str())),
            strings(credentials.iter().map(|(_, c)| c.kind.keyword())),
            Arc::new(
                credentials
                    .iter()
                    .map(|(_, c)| c.ttl_s)
                    .collect::<UInt64Array>(),
            ),
            Arc::new(BooleanArray::from_iter(
                credentials
                    .iter()
                    .map(|(_, c)| Some(matches!(c.kind, CredentialKind::Static(_)))),
            )),
            strings(sources.iter().map(String::as_str)),
        ],
    )
}

fn rules_batch(archived: &[Archived]) -> Result<RecordBatch, QueryError> {
    let mut hashes = Vec::new();
    let mut names = Vec::new();
    let mut effects = Vec::new();
    let mut workloads = Vec::new();
    let mut targets = Vec::new();
    let mut credentials = Vec::new();
    let mut conditional = Vec::new();
    let mut descriptions = Vec::new();
    let mut severities = Vec::new();
    for archive in archived {
        let bundle = &archive.bundle;
        for rule in bundle.rules() {
            hashes.push(archive.hash.as_str());
            names.push(rule.name.as_str());
            effects.push(match rule.effect {
                Effect::Permit => "permit",
                Effect::Forbid => "forbid",
            });
            workloads.push(match rule.workload {
                WorkloadRef::Named(id) => bundle
                    .workloads()
                    .get(id.0 as usize)
                    .map_or_else(String::new, |w| w.name.clone()),
                WorkloadRef::AnyOfKind(kind) => format!("any {kind}"),
                WorkloadRef::Any => "any".to_owned(),
            });
            targets.push(match rule.target {
                TargetRef::Named(id) => bundle
                    .targets()
                    .get(id.0 as usize)
                    .map_or_else(String::new, |t| t.name.clone()),
                TargetRef::Any => "any".to_owned(),
            });
            credentials.push(
                rule.credential
                    .and_then(|id| bundle.credential(id))
                    .map(|c| c.name.as_str()),
            );
            conditional.push(Some(rule.when.is_some()));
            descriptions.push(rule.annotations.description.as_deref());
            severities.push(rule.annotations.severity.map(|s| s.keyword()));
        }
    }
    batch(
        vec![
            text("bundle_hash", false),
            text("rule", false),
            text("effect", false),
            text("workload", false),
            text("target", false),
            text("credential", true),
            Field::new("has_when", DataType::Boolean, false),
            text("description", true),
            text("severity", true),
        ],
        vec![
            strings(hashes),
            strings(names),
            strings(effects),
            strings(workloads.iter().map(String::as_str)),
            strings(targets.iter().map(String::as_str)),
            optional_strings(credentials),
            Arc::new(BooleanArray::from_iter(conditional)),
            optional_strings(descriptions),
            optional_strings(severities),
        ],
    )
}
