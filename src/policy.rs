//! Where the running policy comes from: a directory of Gate sources compiled in process, or a
//! bundle file that `policyc build` wrote, admitted only with the configured public key's
//! signature when one is configured. In: the `[policy]` configuration and the custom claims of
//! the trust providers; out: a [`Program`], or why not. The same load runs at start and at
//! every reload, so a reload checks exactly what the start checked.
//!
//! A signed bundle carries its signing time. With a public key and a data directory, the
//! loader refuses a bundle signed before the newest one the server has admitted
//! (`DATA/bundles/SIGNED`): without that, anyone who can replace the bundle file could put
//! back any policy the key ever signed, such as one from before a grant was revoked. Going
//! back to an older policy on purpose means signing it again.

use std::collections::HashSet;
use std::fmt;
use std::fs;
use std::path::{Path, PathBuf};
use std::time::SystemTime;

use anyhow::{Context, Result, anyhow, bail};
use portcullis_audit::bundles::{NewestSigned, newest_signed, record_newest_signed};
use portcullis_engine::vm::Program;
use portcullis_lang::Diagnostic;
use portcullis_lang::bundle::{Bundle, BundleError, MAX_BUNDLE_FILE_BYTES, VerifyingKey, signing};
use portcullis_lang::diagnostic::Severity;
use portcullis_lang::schema::CustomClaims;

use crate::config::PolicySource;

/// Public key files larger than this are refused unread; a PEM ed25519 key takes 113 bytes.
const MAX_PUBLIC_KEY_BYTES: u64 = 64 * 1024;

/// Loads the configured policy set, as often as asked.
#[derive(Debug)]
pub struct PolicyLoader {
    source: Source,
    /// The data directory whose record of the newest admitted signed bundle guards against
    /// rollbacks; see the module documentation.
    rollback_guard: Option<PathBuf>,
}

#[derive(Debug)]
#[expect(
    clippy::large_enum_variant,
    reason = "one per server, built once; boxing the key would buy nothing"
)]
enum Source {
    /// A directory of `*.gate` files, or one file.
    Sources(PathBuf),
    /// A bundle file, and the public key that must have signed it, if one is configured.
    Bundle {
        path: PathBuf,
        public_key: Option<PublicKey>,
    },
}

/// The configured `[policy] public_key` and the file it came from. Read once, at start.
#[derive(Debug)]
struct PublicKey {
    path: PathBuf,
    key: VerifyingKey,
}

/// Why the policy set did not become a program.
#[derive(Debug)]
pub enum LoadError {
    /// The sources do not compile.
    Invalid {
        path: PathBuf,
        diagnostics: Vec<Diagnostic>,
    },
    /// The files could not be read, or the bundle was refused or does not fit the
    /// configuration.
    Refused(anyhow::Error),
}

impl PolicyLoader {
    /// Reads the public key, if one is configured; the policy set itself is read by
    /// [`PolicyLoader::load`].
    pub fn new(source: PolicySource) -> Result<PolicyLoader> {
        let source = match source {
            PolicySource::Sources(path) => Source::Sources(path),
            PolicySource::Bundle { path, public_key } => Source::Bundle {
                path,
                public_key: public_key.map(|key| read_public_key(&key)).transpose()?,
            },
        };
        Ok(PolicyLoader {
            source,
            rollback_guard: None,
        })
    }

    /// Refuses signed bundles older than the newest that `data_dir` records as admitted; see
    /// [`PolicyLoader::admitted`]. Only with a public key: unchecked signatures prove nothing.
    pub fn with_rollback_guard(mut self, data_dir: &Path) -> PolicyLoader {
        self.rollback_guard = Some(data_dir.to_owned());
        self
    }

    /// Records that `program` is in effect, so that no bundle signed before it is admitted
    /// later, by this server or the next one started on `data_dir`. Does nothing without a
    /// public key, or for a policy compiled from sources.
    pub fn admitted(&self, data_dir: &Path, program: &Program) -> Result<()> {
        let Some(newest) = self.signed_record(program) else {
            return Ok(());
        };
        record_newest_signed(data_dir, &newest).with_context(|| {
            format!(
                "cannot record bundle sha256:{} as the newest signed bundle admitted",
                program.hash_hex()
            )
        })
    }

    /// The record [`PolicyLoader::admitted`] would write for `program`, when it moves the
    /// record forward: the bundle is signed later than the bundle last admitted (the running
    /// policy signed again). None when admitting it changes nothing or no key is configured.
    pub fn supersedes(&self, data_dir: &Path, program: &Program) -> Result<Option<NewestSigned>> {
        let Some(newest) = self.signed_record(program) else {
            return Ok(None);
        };
        let recorded = newest_signed(data_dir)
            .context("cannot read the record of the newest signed bundle admitted")?;
        Ok(recorded
            .is_none_or(|recorded| recorded.signed_at < newest.signed_at)
            .then_some(newest))
    }

    /// What admitting `program` records: its signing time, key and hash; none without a
    /// public key, for a policy compiled from sources, or for a bundle signed without a time.
    fn signed_record(&self, program: &Program) -> Option<NewestSigned> {
        let Source::Bundle {
            public_key: Some(_),
            ..
        } = &self.source
        else {
            return None;
        };
        let signature = program.bundle().signature()?;
        Some(NewestSigned {
            signed_at: signature.signed_at()?,
            key_id: signature.key_id(),
            hash: program.hash_hex().to_owned(),
        })
    }

    /// The policy directory or file, or the bundle file.
    pub fn path(&self) -> &Path {
        match &self.source {
            Source::Sources(path) | Source::Bundle { path, .. } => path,
        }
    }

    /// Compiles the sources, or reads and checks the bundle, with the configuration's custom
    /// claims.
    pub fn load(&self, custom_claims: &CustomClaims) -> Result<Program, LoadError> {
        match &self.source {
            Source::Sources(path) => compile_policy_set(path, custom_claims),
            Source::Bundle { path, public_key } => {
                let guard = public_key.as_ref().and(self.rollback_guard.as_deref());
                load_bundle(path, public_key.as_ref(), guard, custom_claims)
                    .map_err(LoadError::Refused)
            }
        }
    }

    /// The files a load reads, with their sizes and modification times, found as the load
    /// finds them. Cheap enough to take every second.
    pub fn fingerprint(&self) -> Fingerprint {
        let mut files = Vec::new();
        match &self.source {
            Source::Bundle { path, .. } => files.push((path.clone(), stamp(path))),
            Source::Sources(path) => match fs::metadata(path) {
                Ok(metadata) if metadata.is_dir() => {
                    stamp_gate_files(path, &mut HashSet::new(), &mut files);
                }
                _ => files.push((path.clone(), stamp(path))),
            },
        }
        Fingerprint(files)
    }
}

impl LoadError {
    /// The compiler's report, for sources that do not compile.
    pub fn rendered_diagnostics(&self, color: bool) -> Option<String> {
        match self {
            LoadError::Invalid { diagnostics, .. } => {
                Some(portcullis_lang::render(diagnostics, color))
            }
            LoadError::Refused(_) => None,
        }
    }

    /// What went wrong on one line, with the first error of sources that do not compile.
    pub fn summary(&self) -> String {
        let LoadError::Invalid { diagnostics, .. } = self else {
            return self.to_string();
        };
        let first = diagnostics
            .iter()
            .find(|diagnostic| diagnostic.severity() == Severity::Error);
        match first {
            Some(first) => format!(
                "{self}; the first, in `{}`: {} {}",
                first.file_name(),
                first.code().as_str(),
                first.message()
            ),
            None => self.to_string(),
        }
    }

    /// The error for a server that cannot start: the compiler's report goes to stderr first,
    /// in colour on a terminal, as `policyc check` shows it.
    pub fn into_startup_error(self) -> anyhow::Error {
        if let Some(report) = self.rendered_diagnostics(color_on_stderr()) {
            eprint!("{report}");
        }
        match self {
            LoadError::Refused(error) => error,
            invalid @ LoadError::Invalid { .. } => anyhow!("{invalid}"),
        }
    }
}

impl fmt::Display for LoadError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            LoadError::Invalid { path, diagnostics } => {
                let errors = portcullis_lang::diagnostic::count(diagnostics, Severity::Error);
                let noun = if errors == 1 { "error" } else { "errors" };
                write!(f, "the policy set `{}` has {errors} {noun}", path.display())
            }
            LoadError::Refused(error) => f.write_str(&crate::error_chain(error)),
        }
    }
}

fn color_on_stderr() -> bool {
    std::io::IsTerminal::is_terminal(&std::io::stderr()) && std::env::var_os("NO_COLOR").is_none()
}

fn compile_policy_set(path: &Path, custom_claims: &CustomClaims) -> Result<Program, LoadError> {
    let files = portcullis_lang::source::read_policy_path(path)
        .with_context(|| format!("cannot read the policy set `{}`", path.display()))
        .map_err(LoadError::Refused)?;
    let set =
        portcullis_lang::compile_with_claims(&files, custom_claims).map_err(|diagnostics| {
            LoadError::Invalid {
                path: path.to_owned(),
                diagnostics,
            }
        })?;
    if set.rules.is_empty() {
        tracing::warn!(
            policy = %path.display(),
            "the policy set has no rules; every decision will deny"
        );
    }
    let program = Bundle::from_policy_set(&set)
        .context("cannot build the bundle")
        .and_then(|bundle| Program::from_bundle(bundle).context("cannot load the bundle"))
        .map_err(LoadError::Refused)?;
    tracing::info!(
        policy = %path.display(),
        files = files.len(),
        rules = set.rules.len(),
        bundle = %format!("sha256:{}", program.hash_hex()),
        "policy_set_compiled"
    );
    Ok(program)
}

fn read_public_key(path: &Path) -> Result<PublicKey> {
    let text = crate::config::read_bounded(path, MAX_PUBLIC_KEY_BYTES)
        .with_context(|| format!("cannot read the public key `{}`", path.display()))?;
    let key = signing::verifying_key_from_pem(&text)
        .with_context(|| format!("cannot use the public key `{}`", path.display()))?;
    Ok(PublicKey {
        path: path.to_owned(),
        key,
    })
}

/// Loads a prebuilt bundle, which must have been compiled with the custom claims that the
/// configuration declares: the claim ids in its code are theirs. With a public key, it must
/// also carry that key's signature over its bytes, checked before its sections are read.
fn load_bundle(
    path: &Path,
    public_key: Option<&PublicKey>,
    rollback_guard: Option<&Path>,
    custom_claims: &CustomClaims,
) -> Result<Program> {
    let cannot_read = || format!("cannot read the bundle `{}`", path.display());
    let size = fs::metadata(path).with_context(cannot_read)?.len();
    if size > MAX_BUNDLE_FILE_BYTES {
        bail!(
            "the bundle `{}` is {size} bytes; the limit is {MAX_BUNDLE_FILE_BYTES}",
            path.display()
        );
    }
    let bytes = fs::read(path).with_context(cannot_read)?;
    let bundle = read_bundle(path, &bytes, public_key)?;
    if let Some(data_dir) = rollback_guard {
        refuse_rollback(path, &bundle, data_dir)?;
    }
    let program = Program::from_bundle(bundle)
        .with_context(|| format!("cannot load the bundle `{}`", path.display()))?;
    if let Some(mismatch) = program.custom_claims().mismatch(custom_claims) {
        bail!(
            "the bundle `{}` does not fit this configuration: {mismatch}; build it again with \
             `policyc build --claims` and the configuration's custom claims",
            path.display()
        );
    }
    tracing::info!(
        bundle_file = %path.display(),
        bundle = %format!("sha256:{}", program.hash_hex()),
        "bundle_loaded"
    );
    Ok(program)
}

/// Reads a bundle file's bytes; with a public key, only if that key signed them.
fn read_bundle(path: &Path, bytes: &[u8], public_key: Option<&PublicKey>) -> Result<Bundle> {
    let cannot_load = || format!("cannot load the bundle `{}`", path.display());
    let Some(public_key) = public_key else {
        let bundle = Bundle::from_bytes(bytes).with_context(cannot_load)?;
        if let Some(signature) = bundle.signature() {
            tracing::warn!(
                bundle_file = %path.display(),
                key = %signature.key_id(),
                "the bundle is signed, but no `public_key` is configured to check the signature"
            );
        }
        return Ok(bundle);
    };
    let bundle = match Bundle::from_bytes_verified(bytes, &public_key.key) {
        Ok(bundle) => bundle,
        Err(BundleError::Signature(error)) => bail!(
            "refusing the bundle `{}`: {error}; the public key `{}` (key {}) admits only \
             bundles signed with its private key (`policyc build --sign`)",
            path.display(),
            public_key.path.display(),
            signing::key_id(&public_key.key)
        ),
        Err(error) => return Err(error).with_context(cannot_load),
    };
    let signed_at = bundle
        .signature()
        .and_then(|signature| signature.signed_at())
        .map(signing::signing_time_text);
    tracing::info!(
        bundle_file = %path.display(),
        key = %signing::key_id(&public_key.key),
        signed_at = signed_at.as_deref().unwrap_or("unknown"),
        "bundle_signature_verified"
    );
    Ok(bundle)
}

/// How far past this server's clock a signing time may be: clocks differ a little.
const MAX_SIGNING_CLOCK_SKEW_S: u64 = 300;

/// Refuses a verified bundle signed before the newest one `data_dir` records as admitted, and
/// one that says it was signed in the future: admitted, it would refuse every update signed
/// before that time.
fn refuse_rollback(path: &Path, bundle: &Bundle, data_dir: &Path) -> Result<()> {
    let now = SystemTime::now()
        .duration_since(SystemTime::UNIX_EPOCH)
        .map_or(0, |since| since.as_secs());
    // A verified bundle always has a time: `from_bytes_verified` refuses one without.
    let signed_at = bundle
        .signature()
        .and_then(|signature| signature.signed_at())
        .unwrap_or(0);
    if signed_at > now.saturating_add(MAX_SIGNING_CLOCK_SKEW_S) {
        bail!(
            "refusing the bundle `{}` (sha256:{}): it says it was signed at {}, later than this \
             server's clock ({}) by more than {MAX_SIGNING_CLOCK_SKEW_S} s; the clock of the \
             machine that signed it, or of this one, is wrong. Put the clock right and sign it \
             again",
            path.display(),
            bundle.hash_hex(),
            signing::signing_time_text(signed_at),
            signing::signing_time_text(now)
        );
    }
    let newest = newest_signed(data_dir).with_context(|| {
        format!(
            "refusing the bundle `{}`: the record of the newest signed bundle admitted cannot \
             be read, so a rollback could not be told; remove the file only if no bundle \
             older than the one in effect can reach this server",
            path.display()
        )
    })?;
    let Some(newest) = newest else {
        return Ok(());
    };
    // Within one second, only the recorded bundle itself: times have no finer grain, so
    // another bundle signed in the same second could be the older of the two.
    let same_second_other = signed_at == newest.signed_at && bundle.hash_hex() != newest.hash;
    if same_second_other {
        bail!(
            "refusing the bundle `{}` (sha256:{}): it was signed at {}, the same second as \
             bundle sha256:{}, which this server already admitted, so it cannot be told whether \
             it is the newer of the two; sign it again (`policyc build --sign`)",
            path.display(),
            bundle.hash_hex(),
            signing::signing_time_text(signed_at),
            newest.hash,
        );
    }
    if signed_at < newest.signed_at {
        bail!(
            "refusing the bundle `{}` (sha256:{}): it was signed at {}, before bundle \
             sha256:{}, signed at {} by key {}, which this server already admitted; putting an \
             older signed policy back is refused as a rollback. To return to it on purpose, \
             sign it again (`policyc build --sign`)",
            path.display(),
            bundle.hash_hex(),
            signing::signing_time_text(signed_at),
            newest.hash,
            signing::signing_time_text(newest.signed_at),
            newest.key_id
        );
    }
    Ok(())
}

/// The files a load reads, each with its size, modification time and identity, or `None`
/// where it could not be read. Two fingerprints differ when a file was added, removed,
/// written or replaced.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Fingerprint(Vec<(PathBuf, Option<FileStamp>)>);

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FileStamp {
    len: u64,
    modified: Option<SystemTime>,
    /// Device, inode and status-change time: a file renamed over another (how editors and
    /// deploy tools replace files) is a new inode even when it has the old one's size and
    /// modification time, which `cp -p`, `rsync -t` and archive extraction keep.
    identity: (u64, u64, i64, i64),
}

impl FileStamp {
    fn of(metadata: &fs::Metadata) -> FileStamp {
        #[cfg(unix)]
        let identity = {
            use std::os::unix::fs::MetadataExt as _;
            (
                metadata.dev(),
                metadata.ino(),
                metadata.ctime(),
                metadata.ctime_nsec(),
            )
        };
        #[cfg(not(unix))]
        let identity = (0, 0, 0, 0);
        FileStamp {
            len: metadata.len(),
            modified: metadata.modified().ok(),
            identity,
        }
    }
}

fn stamp(path: &Path) -> Option<FileStamp> {
    fs::metadata(path)
        .ok()
        .map(|metadata| FileStamp::of(&metadata))
}

/// The `*.gate` files below `dir` as `read_policy_path` finds them: hidden entries skipped,
/// links followed, each directory once, sorted, at most `MAX_FILES` of them (the load refuses
/// more anyway).
fn stamp_gate_files(
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<(PathBuf, Option<FileStamp>)>,
) {
    let entries = fs::canonicalize(dir).and_then(|canonical| {
        if !visited.insert(canonical) {
            return Ok(Vec::new());
        }
        fs::read_dir(dir)?
            .map(|entry| entry.map(|entry| entry.path()))
            .collect::<std::io::Result<Vec<_>>>()
    });
    let Ok(mut entries) = entries else {
        out.push((dir.to_owned(), None));
        return;
    };
    entries.sort();
    for entry in entries {
        if out.len() > portcullis_lang::source::MAX_FILES {
            return;
        }
        let hidden = entry
            .file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'));
        if hidden {
            continue;
        }
        let is_gate = entry.extension().is_some_and(|ext| ext == "gate");
        match fs::metadata(&entry) {
            Ok(metadata) if metadata.is_dir() => stamp_gate_files(&entry, visited, out),
            Ok(metadata) if is_gate => out.push((entry, Some(FileStamp::of(&metadata)))),
            // A link to nowhere, or a file that went away between listing and looking.
            Err(_) if is_gate => out.push((entry, None)),
            Ok(_) | Err(_) => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn fingerprints_change_when_a_policy_file_is_added_written_or_removed() {
        let tmp = tempfile::tempdir().unwrap();
        let dir = tmp.path();
        std::fs::write(dir.join("a.gate"), "// a\n").unwrap();
        std::fs::write(dir.join("notes.txt"), "not policy").unwrap();
        std::fs::create_dir(dir.join(".git")).unwrap();
        std::fs::write(dir.join(".git/b.gate"), "// hidden\n").unwrap();
        let loader = PolicyLoader::new(PolicySource::Sources(dir.to_owned())).unwrap();
        let first = loader.fingerprint();
        assert_eq!(first.0.len(), 1, "{first:?}");

        std::fs::write(dir.join("notes.txt"), "still not policy").unwrap();
        std::fs::write(dir.join(".git/b.gate"), "// still hidden\n").unwrap();
        assert_eq!(
            loader.fingerprint(),
            first,
            "only visible `*.gate` files count"
        );

        std::fs::create_dir(dir.join("more")).unwrap();
        std::fs::write(dir.join("more/c.gate"), "// c\n").unwrap();
        let added = loader.fingerprint();
        assert_ne!(added, first);
        std::fs::write(dir.join("more/c.gate"), "// c, longer\n").unwrap();
        let written = loader.fingerprint();
        assert_ne!(written, added);
        std::fs::remove_file(dir.join("more/c.gate")).unwrap();
        assert_eq!(loader.fingerprint().0, first.0);

        // A file renamed over another with the same size and modification time, as `cp -p`
        // then `mv` would leave it, is a change too.
        let before = loader.fingerprint();
        let old_time = std::fs::metadata(dir.join("a.gate"))
            .unwrap()
            .modified()
            .unwrap();
        let old_len = std::fs::metadata(dir.join("a.gate")).unwrap().len();
        let replacement = dir.join(".a.gate.new");
        let text = "x".repeat(old_len as usize);
        std::fs::write(&replacement, text).unwrap();
        std::fs::File::options()
            .write(true)
            .open(&replacement)
            .unwrap()
            .set_modified(old_time)
            .unwrap();
        std::fs::rename(&replacement, dir.join("a.gate")).unwrap();
        let metadata = std::fs::metadata(dir.join("a.gate")).unwrap();
        assert_eq!(
            (metadata.len(), metadata.modified().unwrap()),
            (old_len, old_time)
        );
        assert_ne!(
            loader.fingerprint(),
            before,
            "a replaced file counts as changed"
        );

        std::fs::remove_dir_all(dir).unwrap();
        let gone = loader.fingerprint();
        assert_eq!(gone.0, vec![(dir.to_owned(), None)]);
    }
}
