//! The write-ahead log: every event is appended and synced here before `record` returns, and
//! stays until it is sealed into a Parquet segment.
//!
//! Layout: a 12-byte header (the magic bytes [`WAL_MAGIC`] and a little-endian `u32` format
//! version), then records. A log of an older version ([`OLDEST_WAL_VERSION`] or later) is read
//! with that version's encoding; once its events are sealed it starts again at
//! [`WAL_VERSION`], and nothing is appended to it before. A record is a little-endian `u32` payload length, the CRC32 of the
//! payload, and the payload: one event in the encoding of `codec`.
//!
//! On open the whole log is checked. A torn tail is what a crash in the middle of an append
//! leaves behind: within the size of one record, the last record cut short (its bytes a prefix
//! of an event), or failing its checksum, or zeros. It is reported and truncated. Anything
//! else is damage, and opening stops with the file and the offset.

use std::fs::{File, OpenOptions};
use std::io::{Read, Write};
use std::path::{Path, PathBuf};

use crate::codec;
use crate::error::{AuditError, DecodeError, RecordProblem};
use crate::event::AccessEvent;

/// The first bytes of every write-ahead log file.
pub const WAL_MAGIC: [u8; 8] = *b"PCLSWAL\0";
/// The format version this build writes.
pub const WAL_VERSION: u32 = 2;
/// The oldest format version this build still reads.
pub const OLDEST_WAL_VERSION: u32 = 1;
/// The size of the file header.
pub const HEADER_LEN: u64 = 12;
/// The largest payload of one record; an event over it is refused.
pub const MAX_RECORD_BYTES: usize = 1 << 20;

const RECORD_HEADER_LEN: usize = 8;

/// An open write-ahead log file.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    file: File,
    /// The length of the file's valid content; an append that fails is cut back to it.
    len: u64,
    /// Set after a failed append: the file's state is unknown, so nothing more is written.
    stopped: bool,
    /// The format version of the file's header and records.
    version: u32,
    scratch: Vec<u8>,
}

/// What [`Wal::open`] found in the log.
#[derive(Debug, Default)]
pub struct WalContents {
    /// The events in the log, in the order they were appended.
    pub events: Vec<AccessEvent>,
    /// How many bytes of a torn tail were truncated.
    pub torn_bytes: u64,
}

impl Wal {
    /// Opens the log at `path`, creating it if missing, checks every record and truncates a
    /// torn tail.
    // FIXME(#5): stream the records instead of reading the file whole; while seals succeed it
    // holds at most `seal_after_events` events.
    pub fn open(path: &Path) -> Result<(Wal, WalContents), AuditError> {
        let mut file = OpenOptions::new()
            .read(true)
            .append(true)
            .create(true)
            .open(path)
            .map_err(AuditError::io("open", path))?;
        let mut bytes = Vec::new();
        file.read_to_end(&mut bytes)
            .map_err(AuditError::io("read", path))?;

        let mut wal = Wal {
            path: path.to_owned(),
            file,
            len: 0,
            stopped: false,
            version: WAL_VERSION,
            scratch: Vec::new(),
        };
        if bytes.len() < HEADER_LEN as usize {
            return wal.start_fresh(&bytes);
        }
        wal.version = check_header(path, &bytes)?;

        let scan = scan_records(path, &bytes, wal.version)?;
        wal.len = scan.valid_len;
        let torn_bytes = bytes.len() as u64 - scan.valid_len;
        if torn_bytes > 0 {
            wal.truncate(scan.valid_len)?;
            tracing::warn!(path = %path.display(), torn_bytes, "wal_torn_tail_truncated");
        }
        if wal.version != WAL_VERSION && scan.events.is_empty() {
            wal.restart_at_current_version()?;
        }
        Ok((
            wal,
            WalContents {
                events: scan.events,
                torn_bytes,
            },
        ))
    }

    /// The file this log writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// True after a failed write: the log refuses appends until it is reopened.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Appends `event` and syncs it to disk.
    ///
    /// After a failed write or sync the log refuses every later append, because what reached
    /// the disk is unknown; reopening the store checks and repairs the file.
    // FIXME(#5): group commit: one sync for the events of all waiting callers.
    pub fn append(&mut self, event: &AccessEvent) -> Result<(), AuditError> {
        if self.stopped {
            return Err(AuditError::Stopped);
        }
        if self.version != WAL_VERSION {
            return Err(AuditError::WalNotSealed {
                path: self.path.clone(),
                version: self.version,
            });
        }
        let record = encode_record(event, &mut self.scratch)?;
        let written = self
            .file
            .write_all(record)
            .and_then(|()| self.file.sync_data());
        match written {
            Ok(()) => {
                self.len += record.len() as u64;
                Ok(())
            }
            Err(source) => {
                self.stopped = true;
                if let Err(cut_error) = self.file.set_len(self.len) {
                    tracing::error!(path = %self.path.display(), %cut_error, "wal_cut_back_failed");
                }
                Err(AuditError::Io {
                    action: "append to",
                    path: self.path.clone(),
                    source,
                })
            }
        }
    }

    /// Empties the log, keeping its header; called once its events are sealed.
    pub fn reset(&mut self) -> Result<(), AuditError> {
        if self.stopped {
            return Err(AuditError::Stopped);
        }
        if self.version != WAL_VERSION {
            return self.restart_at_current_version();
        }
        self.truncate(HEADER_LEN)
    }

    /// Empties a log of an older format version and gives it the current version's header.
    fn restart_at_current_version(&mut self) -> Result<(), AuditError> {
        self.truncate(0)?;
        self.file
            .write_all(&header_bytes())
            .map_err(AuditError::io("write", &self.path))?;
        self.file
            .sync_all()
            .map_err(AuditError::io("sync", &self.path))?;
        self.len = HEADER_LEN;
        self.version = WAL_VERSION;
        Ok(())
    }

    fn truncate(&mut self, len: u64) -> Result<(), AuditError> {
        self.file
            .set_len(len)
            .map_err(AuditError::io("truncate", &self.path))?;
        self.file
            .sync_all()
            .map_err(AuditError::io("sync", &self.path))?;
        self.len = len;
        Ok(())
    }

    /// A file shorter than the header: new, or cut short while it was being created.
    fn start_fresh(mut self, bytes: &[u8]) -> Result<(Wal, WalContents), AuditError> {
        let header = header_bytes();
        if !header.starts_with(bytes) {
            return Err(AuditError::WalMagic { path: self.path });
        }
        self.truncate(0)?;
        self.file
            .write_all(&header)
            .map_err(AuditError::io("write", &self.path))?;
        self.file
            .sync_all()
            .map_err(AuditError::io("sync", &self.path))?;
        if let Some(dir) = self.path.parent() {
            sync_dir(dir)?;
        }
        self.len = HEADER_LEN;
        let torn_bytes = bytes.len() as u64;
        Ok((
            self,
            WalContents {
                events: Vec::new(),
                torn_bytes,
            },
        ))
    }
}

/// Syncs a directory, so that the files created or renamed in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(AuditError::io("sync the directory", dir))
}

fn header_bytes() -> [u8; HEADER_LEN as usize] {
    let mut header = [0; HEADER_LEN as usize];
    header[..8].copy_from_slice(&WAL_MAGIC);
    header[8..].copy_from_slice(&WAL_VERSION.to_le_bytes());
    header
}

/// Checks the magic bytes and gives the format version, one this build reads.
fn check_header(path: &Path, bytes: &[u8]) -> Result<u32, AuditError> {
    let Some((magic, rest)) = bytes.split_first_chunk::<8>() else {
        return Err(AuditError::WalMagic {
            path: path.to_owned(),
        });
    };
    if *magic != WAL_MAGIC {
        return Err(AuditError::WalMagic {
            path: path.to_owned(),
        });
    }
    let version = rest.first_chunk::<4>().map(|v| u32::from_le_bytes(*v));
    match version {
        Some(found @ OLDEST_WAL_VERSION..=WAL_VERSION) => Ok(found),
        Some(found) => Err(AuditError::WalVersion {
            path: path.to_owned(),
            found,
            oldest: OLDEST_WAL_VERSION,
            newest: WAL_VERSION,
        }),
        None => Err(AuditError::WalMagic {
            path: path.to_owned(),
        }),
    }
}

/// Encodes `event` as a whole record (length, checksum, payload) into `scratch`.
fn encode_record<'a>(
    event: &AccessEvent,
    scratch: &'a mut Vec<u8>,
) -> Result<&'a [u8], AuditError> {
    scratch.clear();
    scratch.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    codec::encode(event, scratch);
    let size = scratch.len() - RECORD_HEADER_LEN;
    let length = u32::try_from(size)
        .ok()
        .filter(|_| size <= MAX_RECORD_BYTES);
    let Some(length) = length else {
        return Err(AuditError::EventTooLarge {
            size,
            limit: MAX_RECORD_BYTES,
        });
    };
    let checksum = crc32fast::hash(&scratch[RECORD_HEADER_LEN..]);
    scratch[..4].copy_from_slice(&length.to_le_bytes());
    scratch[4..RECORD_HEADER_LEN].copy_from_slice(&checksum.to_le_bytes());
    Ok(scratch)
}

struct Scan {
    events: Vec<AccessEvent>,
    /// Where the valid records end; anything after is a torn tail.
    valid_len: u64,
}

fn scan_records(path: &Path, bytes: &[u8], version: u32) -> Result<Scan, AuditError> {
    let mut offset = HEADER_LEN as usize;
    let mut events: Vec<AccessEvent> = Vec::new();
    while offset < bytes.len() {
        let damaged = |problem| AuditError::DamagedRecord {
            path: path.to_owned(),
            offset: offset as u64,
            problem,
        };
        match read_record(&bytes[offset..], version).map_err(damaged)? {
            None => break,
            Some((event, record_len)) => {
                if let Some(previous) = events.last() {
                    let expected = previous.seq + 1;
                    if event.seq != expected {
                        return Err(damaged(RecordProblem::SeqGap {
                            expected,
                            found: event.seq,
                        }));
                    }
                }
                events.push(event);
                offset += record_len;
            }
        }
    }
    Ok(Scan {
        events,
        valid_len: offset as u64,
    })
}

/// Reads the record at the start of `rest`, the bytes from its offset to the end of the file:
/// its event and length, or `None` for a torn tail.
fn read_record(rest: &[u8], version: u32) -> Result<Option<(AccessEvent, usize)>, RecordProblem> {
    // Records are appended and synced one at a time, so a crash can tear at most the last one.
    let could_be_torn = rest.len() <= RECORD_HEADER_LEN + MAX_RECORD_BYTES;
    let torn_or = |problem| {
        if could_be_torn {
            Ok(None)
        } else {
            Err(problem)
        }
    };

    if rest.iter().all(|byte| *byte == 0) {
        return torn_or(RecordProblem::Empty);
    }
    let Some((header, body)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
        return torn_or(RecordProblem::PastEnd);
    };
    let [l0, l1, l2, l3, c0, c1, c2, c3] = *header;
    let length = u32::from_le_bytes([l0, l1, l2, l3]);
    let checksum = u32::from_le_bytes([c0, c1, c2, c3]);
    let size = length as usize;
    if size == 0 {
        return Err(RecordProblem::Empty);
    }
    let Some(payload) = body.get(..size) else {
        let problem = if size > MAX_RECORD_BYTES {
            RecordProblem::TooLong {
                length: u64::from(length),
            }
        } else {
            RecordProblem::PastEnd
        };
        // What a torn append leaves is a prefix of one event's encoding. Bytes that hold a
        // whole event, or are no event at all, mean the length is damaged and good records
        // may follow.
        return match codec::decode_version(body, version) {
            Err(DecodeError::Truncated) => torn_or(problem),
            _ => Err(problem),
        };
    };
    if size > MAX_RECORD_BYTES {
        return Err(RecordProblem::TooLong {
            length: u64::from(length),
        });
    }
    let is_last = body.len() == size;
    if crc32fast::hash(payload) != checksum {
        return if is_last {
            torn_or(RecordProblem::Checksum)
        } else {
            Err(RecordProblem::Checksum)
        };
    }
    let event = codec::decode_version(payload, version)?;
    Ok(Some((event, RECORD_HEADER_LEN + size)))
}
