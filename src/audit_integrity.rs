//! `portcullis audit verify` and `portcullis audit key`: the integrity manifest from the
//! command line. Verification is the audit crate's; this prints its report, its first failure,
//! and its progress (on stderr, only when stderr is a terminal).

use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use anyhow::{Context, Result};
use clap::Args;
use portcullis_audit::manifest::format_time;
use portcullis_audit::signing;
use portcullis_audit::verify::{self, Anchor, KeySource, Progress, Report};

use crate::config;

/// How often the progress line is redrawn.
const PROGRESS_EVERY: Duration = Duration::from_millis(100);

/// Which store: `--data-dir`, else the configuration's, else the default.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The audit data directory (default: the configuration's, else `portcullis-data`).
    #[arg(long)]
    data_dir: Option<PathBuf>,
    /// Read the data directory from this configuration file.
    #[arg(long)]
    config: Option<PathBuf>,
}

impl StoreArgs {
    fn data_dir(&self) -> Result<PathBuf> {
        let data_dir = match (&self.data_dir, &self.config) {
            (Some(dir), _) => dir.clone(),
            (None, Some(config)) => config::Config::load(config)?.data_dir(None),
            (None, None) => PathBuf::from(config::DEFAULT_DATA_DIR),
        };
        check_store_dir(&data_dir)?;
        Ok(data_dir)
    }
}

/// Refuses a path that is not an audit store, so that a command pointed at the wrong
/// directory says so rather than answering for an empty store: a store holds at least one of
/// `manifest/`, `events/` and `wal/`, which a server creates when it first opens it.
pub fn check_store_dir(data_dir: &Path) -> Result<()> {
    if data_dir.exists() && !data_dir.is_dir() {
        anyhow::bail!(
            "`{}` is a file, not an audit store (a directory); pass --data-dir or --config to \
             name one",
            data_dir.display()
        );
    }
    if !data_dir.is_dir() {
        // A relative default (`portcullis-data`) is looked for where the command runs.
        let here = if data_dir.is_relative() {
            std::env::current_dir()
                .map(|dir| format!(" (in `{}`)", dir.display()))
                .unwrap_or_default()
        } else {
            String::new()
        };
        anyhow::bail!(
            "no audit store at `{}`{here}; pass --data-dir, or --config naming a configuration \
             whose `[audit] data_dir` is the store",
            data_dir.display()
        );
    }
    let parts = ["manifest", "events", "wal"];
    if !parts.iter().any(|part| data_dir.join(part).is_dir()) {
        anyhow::bail!(
            "no audit store at `{}`: it holds none of `manifest/`, `events/` and `wal/`, which \
             a server creates when it first opens a store; pass --data-dir or --config to name \
             one",
            data_dir.display()
        );
    }
    Ok(())
}

/// `portcullis audit verify`: prints what was confirmed, or fails naming the first mismatch.
pub fn verify(store: &StoreArgs, public_key: Option<&Path>, extends: Option<Anchor>) -> Result<()> {
    let data_dir = store.data_dir()?;
    let mut progress = ProgressLine::new(std::io::stderr().is_terminal());
    let outcome = verify::verify_extending(&data_dir, public_key, extends, &mut |done| {
        progress.show(done)
    });
    progress.clear();
    let report = outcome.context("verification failed")?;
    let log = check_write_ahead_log(&data_dir)?;
    print!("{}", summary(&data_dir, &report));
    if log.events > 0 {
        println!(
            "write-ahead log: {} events not yet sealed, each record's checksum checked; they \
             are chained and signed when they are sealed",
            log.events
        );
    }
    if let Some((path, bytes)) = &log.torn {
        println!(
            "write-ahead log: `{}` ends in {bytes} bytes that do not pass their checks — a \
             record a crash cut short, or damage to the last one; the server drops them when it \
             opens the store",
            path.display()
        );
    }
    Ok(())
}

/// What the write-ahead log holds.
struct LogChecked {
    events: u64,
    /// The newest file and the bytes at its end that form no whole, valid record.
    torn: Option<(PathBuf, u64)>,
}

/// Reads every record of the write-ahead log, as the server does when it opens the store
/// (a torn tail of the newest file allowed, damage anywhere else not), and gives how many
/// events it holds and the torn tail. A damaged record fails the verification, naming the
/// file and offset, since the server will not open the store either.
fn check_write_ahead_log(data_dir: &Path) -> Result<LogChecked> {
    use portcullis_audit::wal::{TornTail, WalReader, list_logs};
    let logs = list_logs(&data_dir.join(portcullis_audit::store::WAL_DIR))
        .context("verification failed")?;
    let mut events = 0_u64;
    let mut torn = None;
    for (idx, path) in logs.iter().enumerate() {
        let torn_tail = if idx + 1 == logs.len() {
            TornTail::Allowed
        } else {
            TornTail::Refused
        };
        let damaged = |error| {
            anyhow::Error::new(error).context(
                "verification failed: the write-ahead log is damaged, and the server will not \
                 open the store",
            )
        };
        let mut reader = WalReader::open(path, torn_tail).map_err(damaged)?;
        while reader.next_event().map_err(damaged)?.is_some() {
            events += 1;
        }
        if reader.torn_bytes() > 0 {
            torn = Some((path.clone(), reader.torn_bytes()));
        }
    }
    Ok(LogChecked { events, torn })
}

/// `portcullis audit key`: the public key that signs the checkpoints, as SPKI PEM on stdout.
pub fn key(store: &StoreArgs) -> Result<()> {
    let data_dir = store.data_dir()?;
    let key = signing::store_public_key(&data_dir)?;
    let pem = signing::public_key_to_pem(&key)?;
    print!("{pem}");
    eprintln!("key {} of `{}`", signing::key_id(&key), data_dir.display());
    Ok(())
}

/// `portcullis audit rotate-key`: a new signing key, vouched for by the old one in the chain.
pub fn rotate_key(store: &StoreArgs) -> Result<()> {
    let data_dir = store.data_dir()?;
    let rotated = portcullis_audit::store::rotate_signing_key(&data_dir).with_context(|| {
        format!(
            "cannot rotate the signing key of `{}` (a server using the store must be \
                 stopped first)",
            data_dir.display()
        )
    })?;
    if rotated.recovery.events_sealed > 0 {
        println!(
            "sealed {} events the write-ahead log still held, under the old key",
            rotated.recovery.events_sealed
        );
    }
    println!(
        "rotated the signing key of `{}`: entry {} names key {} as the successor of key {}, \
         and both keys signed it; key {} signs every checkpoint after it, and the old private \
         key file is replaced",
        data_dir.display(),
        rotated.entry,
        rotated.new_key_id,
        rotated.old_key_id,
        rotated.new_key_id
    );
    println!(
        "a verifier pinned to an earlier key still verifies the store; keep a copy of the new \
         public key too (`portcullis audit key`)"
    );
    Ok(())
}

/// The report as lines for people.
fn summary(data_dir: &Path, report: &Report) -> String {
    let mut lines = vec![
        format!(
            "verified `{}`: every segment matches its manifest entry, and the chain and its \
             signed checkpoints hold",
            data_dir.display()
        ),
        format!(
            "manifest: {}, {}",
            count(report.entries, "entry", "entries"),
            count(report.checkpoints, "checkpoint", "checkpoints")
        ),
    ];
    let seq = report.seq_range.map_or("none".to_owned(), |(first, last)| {
        format!("{first}..={last}")
    });
    lines.push(format!(
        "segments: {}, events: {}, seq {seq}",
        report.segments, report.events
    ));
    if let Some((min, max)) = report.time_range {
        lines.push(format!(
            "time: {} to {}",
            format_time(&min),
            format_time(&max)
        ));
    }
    lines.push(format!(
        "bundles: {} kept, each with the content its name says; {}",
        report.bundles.kept,
        match report.bundles.named {
            0 => "no policy_change event in the store names one".to_owned(),
            1 => "the one that policy_change events put in effect is among them".to_owned(),
            named => format!("all {named} that policy_change events put in effect are among them"),
        }
    ));
    if let Some(removed) = &report.removed {
        lines.push(format!(
            "removed under retention: {} with {}, seq {}..={}, in {}; the last at {}, \
             retention_days = {}, dates before {}",
            count(removed.segments, "segment", "segments"),
            count(removed.events, "event", "events"),
            removed.seq_range.0,
            removed.seq_range.1,
            count(removed.removals, "removal", "removals"),
            format_time(&removed.last_time),
            removed.last_retention_days,
            removed.last_before
        ));
    }
    if report.recovered_segments + report.upgraded_segments > 0 {
        lines.push(format!(
            "chained after the fact: {} after a crash (matched to the write-ahead log), {} \
             present when the store first got a manifest",
            count(report.recovered_segments, "segment", "segments"),
            count(report.upgraded_segments, "segment", "segments")
        ));
    }
    if !report.leftover_files.is_empty() {
        lines.push(format!(
            "note: {} of removed segments still present (a removal was cut short; the next \
             open deletes them); they match their entries",
            count(report.leftover_files.len() as u64, "file", "files")
        ));
    }
    let checkpoint = &report.last_checkpoint;
    lines.push(format!(
        "last checkpoint: entry {} (sha256 {}), signed at {} by key {}",
        checkpoint.entry,
        hex_prefix(&checkpoint.entry_hash),
        format_time(&checkpoint.time),
        checkpoint.key_id
    ));
    if let Some(anchor) = &report.extends {
        lines.push(format!(
            "extends the recorded entry {}: nothing before it was cut or rewritten",
            anchor.entry
        ));
    }
    let anchor = Anchor {
        entry: checkpoint.entry,
        hash: checkpoint.entry_hash,
    };
    lines.push(format!(
        "anchor: {anchor} (keep it outside the store; `--extends {anchor}` later shows no \
         entry was cut from the end since)"
    ));
    lines.push(match &report.key_source {
        KeySource::Pinned(path) => format!("key: pinned, `{}`", path.display()),
        KeySource::DataDir(path) => format!(
            "key: the store's own `{}`; this shows the store agrees with the key kept beside \
             it; pass --public-key with a copy kept elsewhere (`portcullis audit key`) to show \
             it was not rewritten with another key",
            path.display()
        ),
    });
    if report.rotations > 0 {
        lines.push(if report.trusted_from == 0 {
            format!(
                "key rotations: {}, each signed by the key before it, back to the trusted key",
                report.rotations
            )
        } else {
            format!(
                "key rotations: {}; the trusted key was named by the rotation of entry {}, \
                 which it signed, so vouching through the hash chain for every entry up to \
                 there; the keys before it were checked as the manifest names them",
                report.rotations, report.trusted_from
            )
        });
    }
    let mut text = lines.join("\n");
    text.push('\n');
    text
}

fn count(n: u64, one: &str, many: &str) -> String {
    format!("{n} {}", if n == 1 { one } else { many })
}

fn hex_prefix(hash: &[u8; 32]) -> String {
    hash.iter()
        .take(8)
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// A progress line on stderr, redrawn in place at most every [`PROGRESS_EVERY`].
struct ProgressLine {
    enabled: bool,
    last_drawn: Option<Instant>,
    width: usize,
}

impl ProgressLine {
    fn new(enabled: bool) -> ProgressLine {
        ProgressLine {
            enabled,
            last_drawn: None,
            width: 0,
        }
    }

    fn show(&mut self, progress: &Progress) {
        if !self.enabled
            || self
                .last_drawn
                .is_some_and(|at| at.elapsed() < PROGRESS_EVERY)
        {
            return;
        }
        let mib = |bytes: u64| bytes as f64 / f64::from(1 << 20);
        let line = format!(
            "verifying: {}/{} segments, {:.1} of {:.1} MiB",
            progress.segments_done,
            progress.segments_total,
            mib(progress.bytes_done),
            mib(progress.bytes_total)
        );
        self.width = self.width.max(line.len());
        let mut stderr = std::io::stderr().lock();
        // A progress line that cannot be drawn is not worth failing the verification for.
        let _ = write!(stderr, "\r{line:<width$}", width = self.width);
        let _ = stderr.flush();
        self.last_drawn = Some(Instant::now());
    }

    fn clear(&mut self) {
        if self.enabled && self.width > 0 {
            eprint!("\r{:width$}\r", "", width = self.width);
        }
    }
}
