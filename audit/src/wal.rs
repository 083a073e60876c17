//! The write-ahead log: every event is written here before `record` returns, and stays until
//! it is sealed into a Parquet segment.
//!
//! The log is a series of files in `DATA/wal/`, each named after the `seq` of the first event
//! it holds ([`log_file_name`]), so that names sort in `seq` order. Only the newest file is
//! written; the others are closed, complete and synced, waiting for the sealer. A data
//! directory of an earlier build may hold `wal/events.wal` ([`LEGACY_WAL_FILE`]); it is read
//! as the oldest file and never written again.
//!
//! Layout of a file: a 12-byte header (the magic bytes [`WAL_MAGIC`] and a little-endian `u32`
//! format version), then records. A record is a little-endian `u32` payload length, the CRC32
//! of the payload, and the payload: one event in the encoding of `codec`. Many records may be
//! written with one `write(2)` ([`Wal::write_records`]). A file of an older version
//! ([`OLDEST_WAL_VERSION`] or later) is read with that version's encoding.
//!
//! Reading ([`WalReader`]) streams the records and checks each one. A torn tail is what a
//! crash in the middle of a write leaves behind: the last record cut short (its bytes a prefix
//! of an event), or failing its checksum, or zeros to the end of the file. It is allowed only
//! at the end of the newest file ([`TornTail::Allowed`]), because a file is synced whole before
//! the next one is created. Anything else is damage, and reading stops with the file and the
//! offset.

use std::fs::{self, File, OpenOptions};
use std::io::{BufRead, BufReader, Read, Write};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::codec::{self, Stamp};
use crate::columns::EventColumns;
use crate::error::{AuditError, DecodeError, RecordProblem};
use crate::event::{AccessEvent, NewEvent};

/// The first bytes of every write-ahead log file.
pub const WAL_MAGIC: [u8; 8] = *b"PCLSWAL\0";
/// The format version this build writes.
pub const WAL_VERSION: u32 = 4;
/// The oldest format version this build still reads.
pub const OLDEST_WAL_VERSION: u32 = 1;
/// The size of the file header.
pub const HEADER_LEN: u64 = 12;
/// The largest payload of one record; an event over it is refused.
pub const MAX_RECORD_BYTES: usize = 1 << 20;
/// The single log file of builds before the log was split into files; read, never written.
pub const LEGACY_WAL_FILE: &str = "events.wal";

const RECORD_HEADER_LEN: usize = 8;
const LOG_SUFFIX: &str = ".wal";
/// The bytes after which the reader holds the rest of the file in memory: a torn record lies
/// within them.
const TAIL_WINDOW: u64 = (RECORD_HEADER_LEN + MAX_RECORD_BYTES) as u64;
const READ_BUFFER_BYTES: usize = 256 * 1024;

/// The file name of the log file whose first event has `seq` `first_seq`.
pub fn log_file_name(first_seq: u64) -> String {
    format!("{first_seq:020}{LOG_SUFFIX}")
}

/// The first `seq` of a log file name, or `None` for any other name.
pub fn parse_log_file_name(name: &str) -> Option<u64> {
    let digits = name.strip_suffix(LOG_SUFFIX)?;
    if digits.is_empty() || !digits.bytes().all(|b| b.is_ascii_digit()) {
        return None;
    }
    digits.parse().ok()
}

/// The log files in `wal_dir`, oldest first: the legacy file, then by first `seq`. Other
/// files are left alone.
pub fn list_logs(wal_dir: &Path) -> Result<Vec<PathBuf>, AuditError> {
    let entries = fs::read_dir(wal_dir).map_err(AuditError::io("list", wal_dir))?;
    let mut legacy = None;
    let mut numbered = Vec::new();
    for entry in entries {
        let entry = entry.map_err(AuditError::io("list", wal_dir))?;
        let Some(name) = entry.file_name().to_str().map(str::to_owned) else {
            continue;
        };
        if name == LEGACY_WAL_FILE {
            legacy = Some(entry.path());
        } else if let Some(first_seq) = parse_log_file_name(&name) {
            numbered.push((first_seq, entry.path()));
        }
    }
    numbered.sort();
    Ok(legacy
        .into_iter()
        .chain(numbered.into_iter().map(|(_, path)| path))
        .collect())
}

/// A log file open for appending.
#[derive(Debug)]
pub struct Wal {
    path: PathBuf,
    /// Shared with the flusher, which syncs it while the next records are written.
    file: Arc<File>,
    /// The length of the file's valid content; a write that fails is cut back to it.
    len: u64,
    /// Set after a failed write: the file's state is unknown, so nothing more is written.
    stopped: bool,
}

impl Wal {
    /// Creates the log file at `path`, which must not exist, with its header, and syncs the
    /// file and its directory, so that the file survives a power cut before any record is in it.
    pub fn create(path: &Path) -> Result<Wal, AuditError> {
        let mut file = OpenOptions::new()
            .append(true)
            .create_new(true)
            .open(path)
            .map_err(AuditError::io("create", path))?;
        file.write_all(&header_bytes())
            .and_then(|()| file.sync_all())
            .map_err(AuditError::io("write the header of", path))?;
        if let Some(dir) = path.parent() {
            sync_dir(dir)?;
        }
        Ok(Wal {
            path: path.to_owned(),
            file: Arc::new(file),
            len: HEADER_LEN,
            stopped: false,
        })
    }

    /// The file this log writes.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The bytes in the file: the header and every record written.
    pub fn len_bytes(&self) -> u64 {
        self.len
    }

    /// True after a failed write: the log refuses to write until the store is reopened.
    pub fn is_stopped(&self) -> bool {
        self.stopped
    }

    /// Writes whole records (as [`encode_record`] makes them) with one `write(2)`; once this
    /// returns they survive the process being killed, and [`Wal::sync`] makes them survive a
    /// power cut.
    ///
    /// After a failed write the file is cut back to its last whole record and the log refuses
    /// every later write, because what reached the disk is unknown; reopening the store checks
    /// and repairs the file.
    pub fn write_records(&mut self, records: &[u8]) -> Result<(), AuditError> {
        if self.stopped {
            return Err(AuditError::Stopped);
        }
        match (&*self.file).write_all(records) {
            Ok(()) => {
                self.len += records.len() as u64;
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

    /// Encodes `event` and writes its record; for tests and tools that write one at a time.
    pub fn append(&mut self, event: &AccessEvent) -> Result<(), AuditError> {
        let mut record = Vec::new();
        encode_record(event, &mut record)?;
        self.write_records(&record)
    }

    /// Syncs what was written to the disk (`fdatasync`).
    pub fn sync(&self) -> Result<(), AuditError> {
        self.file
            .sync_data()
            .map_err(AuditError::io("sync", &self.path))
    }

    /// A handle that syncs this file from another thread while records are written.
    pub(crate) fn sync_handle(&self) -> Arc<File> {
        Arc::clone(&self.file)
    }
}

/// Appends the whole record of `event` (length, checksum, payload) to `out`; on an error `out`
/// is left as it was.
pub fn encode_record(event: &AccessEvent, out: &mut Vec<u8>) -> Result<(), AuditError> {
    framed(out, |out| codec::encode(event, out))
}

/// [`encode_record`] of the event that `stamp` and `details` make.
pub(crate) fn encode_record_parts(
    stamp: &Stamp<'_>,
    details: &NewEvent,
    out: &mut Vec<u8>,
) -> Result<(), AuditError> {
    framed(out, |out| codec::encode_parts(stamp, details, out))
}

/// Appends a record whose payload `encode` writes.
fn framed(out: &mut Vec<u8>, encode: impl FnOnce(&mut Vec<u8>)) -> Result<(), AuditError> {
    let start = out.len();
    out.extend_from_slice(&[0; RECORD_HEADER_LEN]);
    encode(out);
    let payload_start = start + RECORD_HEADER_LEN;
    let size = out.len() - payload_start;
    let length = u32::try_from(size)
        .ok()
        .filter(|_| size <= MAX_RECORD_BYTES);
    let Some(length) = length else {
        out.truncate(start);
        return Err(AuditError::EventTooLarge {
            size,
            limit: MAX_RECORD_BYTES,
        });
    };
    let checksum = crc32fast::hash(&out[payload_start..]);
    out[start..start + 4].copy_from_slice(&length.to_le_bytes());
    out[start + 4..payload_start].copy_from_slice(&checksum.to_le_bytes());
    Ok(())
}

/// Syncs a directory, so that the files created or renamed in it survive a power cut.
pub(crate) fn sync_dir(dir: &Path) -> Result<(), AuditError> {
    File::open(dir)
        .and_then(|handle| handle.sync_all())
        .map_err(AuditError::io("sync the directory", dir))
}

/// Whether a log file may end in a torn tail.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TornTail {
    /// The newest file: a crash may have cut its last write short.
    Allowed,
    /// A closed file, synced whole before the next was created: a torn tail is damage.
    Refused,
}

/// Reads the events of one log file in order, checking each record, without holding the file
/// in memory (but for its last record's worth of bytes).
#[derive(Debug)]
pub struct WalReader {
    path: PathBuf,
    file: BufReader<File>,
    file_len: u64,
    /// Where the next record starts.
    offset: u64,
    version: u32,
    torn_tail: TornTail,
    /// The bytes from `tail_start` to the end of the file, read whole once the rest of the file
    /// fits within one record.
    tail: Option<(u64, Vec<u8>)>,
    last_seq: Option<u64>,
    torn_bytes: u64,
    done: bool,
    payload: Vec<u8>,
}

impl WalReader {
    /// Opens the log file at `path` and checks its header.
    pub fn open(path: &Path, torn_tail: TornTail) -> Result<WalReader, AuditError> {
        let file = File::open(path).map_err(AuditError::io("open", path))?;
        let file_len = file
            .metadata()
            .map_err(AuditError::io("read the length of", path))?
            .len();
        let mut reader = WalReader {
            path: path.to_owned(),
            file: BufReader::with_capacity(READ_BUFFER_BYTES, file),
            file_len,
            offset: HEADER_LEN,
            version: WAL_VERSION,
            torn_tail,
            tail: None,
            last_seq: None,
            torn_bytes: 0,
            done: false,
            payload: Vec::new(),
        };
        if file_len < HEADER_LEN {
            reader.short_header()?;
        } else {
            let mut header = [0; HEADER_LEN as usize];
            reader.read_exact(&mut header)?;
            reader.version = check_header(path, &header)?;
        }
        Ok(reader)
    }

    /// A file shorter than the header: a crash while the newest file was being created.
    fn short_header(&mut self) -> Result<(), AuditError> {
        let mut bytes = Vec::new();
        self.file
            .read_to_end(&mut bytes)
            .map_err(AuditError::io("read", &self.path))?;
        if !header_bytes().starts_with(&bytes) {
            return Err(AuditError::WalMagic {
                path: self.path.clone(),
            });
        }
        if self.torn_tail == TornTail::Refused {
            return Err(AuditError::DamagedRecord {
                path: self.path.clone(),
                offset: 0,
                problem: RecordProblem::HeaderCut,
            });
        }
        self.offset = 0;
        self.torn_bytes = bytes.len() as u64;
        self.done = true;
        Ok(())
    }

    /// The file being read.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// The format version of the file.
    pub fn version(&self) -> u32 {
        self.version
    }

    /// Where the next record starts; after the last event, where the valid records end.
    pub fn offset(&self) -> u64 {
        self.offset
    }

    /// After the last event: how many bytes of a torn tail follow the valid records.
    pub fn torn_bytes(&self) -> u64 {
        self.torn_bytes
    }

    /// Cuts the torn tail off the file and syncs it.
    pub fn cut_torn_tail(&self) -> Result<(), AuditError> {
        if self.torn_bytes == 0 {
            return Ok(());
        }
        let file = OpenOptions::new()
            .write(true)
            .open(&self.path)
            .map_err(AuditError::io("open", &self.path))?;
        file.set_len(self.offset)
            .map_err(AuditError::io("truncate", &self.path))?;
        file.sync_all().map_err(AuditError::io("sync", &self.path))
    }

    /// The next event, `None` at the end of the valid records (see [`WalReader::torn_bytes`]).
    pub fn next_event(&mut self) -> Result<Option<AccessEvent>, AuditError> {
        self.next_with(&mut |payload, version| {
            codec::decode_version(payload, version).map(|event| (event.seq, event))
        })
    }

    /// Appends the next event to `columns` and gives its `seq`; `None` at the end of the valid
    /// records. After an error `columns` is unusable.
    pub fn next_into(&mut self, columns: &mut EventColumns) -> Result<Option<u64>, AuditError> {
        self.next_with(&mut |payload, version| {
            columns.push_record(payload, version).map(|seq| (seq, seq))
        })
    }

    /// The next record, checked and handed to `decode`, which gives its `seq` and what the
    /// caller wants of it.
    fn next_with<T>(&mut self, decode: &mut Decode<'_, T>) -> Result<Option<T>, AuditError> {
        if self.done {
            return Ok(None);
        }
        let rest = self.file_len - self.offset;
        if rest == 0 {
            self.done = true;
            return Ok(None);
        }
        let read = if self.tail.is_none() && rest > TAIL_WINDOW {
            self.read_streamed(decode)
        } else {
            self.read_from_tail(decode)
        };
        let read = read.and_then(|found| match found {
            Ok(found) => Ok(found),
            Err(problem) => Err(self.damaged(problem)),
        });
        match read {
            Ok(Some(((seq, value), record_len))) => {
                self.check_seq(seq)?;
                self.offset += record_len as u64;
                Ok(Some(value))
            }
            Ok(None) => {
                self.done = true;
                self.torn_bytes = self.file_len - self.offset;
                Ok(None)
            }
            Err(error) => {
                self.done = true;
                Err(error)
            }
        }
    }

    fn check_seq(&mut self, seq: u64) -> Result<(), AuditError> {
        if let Some(previous) = self.last_seq {
            let expected = previous + 1;
            if seq != expected {
                self.done = true;
                return Err(self.damaged(RecordProblem::SeqGap {
                    expected,
                    found: seq,
                }));
            }
        }
        self.last_seq = Some(seq);
        Ok(())
    }

    fn damaged(&self, problem: RecordProblem) -> AuditError {
        AuditError::DamagedRecord {
            path: self.path.clone(),
            offset: self.offset,
            problem,
        }
    }

    /// A record more than one record's size before the end of the file: it cannot be torn,
    /// unless everything from it to the end is zeros (an append that was never written).
    fn read_streamed<T>(
        &mut self,
        decode: &mut Decode<'_, T>,
    ) -> Result<Result<Found<T>, RecordProblem>, AuditError> {
        let mut header = [0; RECORD_HEADER_LEN];
        self.read_exact(&mut header)?;
        let (length, checksum) = split_record_header(header);
        if length == 0 {
            let zeros_to_end = header.iter().all(|byte| *byte == 0) && self.rest_is_zero()?;
            return Ok(if zeros_to_end && self.torn_tail == TornTail::Allowed {
                Ok(None)
            } else {
                Err(RecordProblem::Empty)
            });
        }
        let size = length as usize;
        if size > MAX_RECORD_BYTES {
            return Ok(Err(RecordProblem::TooLong {
                length: u64::from(length),
            }));
        }
        // A record that lies whole in the read buffer, as nearly all do, is checked and decoded
        // where it lies; only one that straddles the buffer's end is copied out first.
        if let Some(payload) = self.file.buffer().get(..size) {
            let found = decode_payload(payload, checksum, self.version, decode);
            self.file.consume(size);
            return Ok(found.map(|value| Some((value, RECORD_HEADER_LEN + size))));
        }
        let mut payload = std::mem::take(&mut self.payload);
        payload.resize(size, 0);
        let read = self.read_exact(&mut payload);
        let found = read.map(|()| decode_payload(&payload, checksum, self.version, decode));
        self.payload = payload;
        Ok(found?.map(|value| Some((value, RECORD_HEADER_LEN + size))))
    }

    /// A record within one record's size of the end of the file, read from memory.
    fn read_from_tail<T>(
        &mut self,
        decode: &mut Decode<'_, T>,
    ) -> Result<Result<Found<T>, RecordProblem>, AuditError> {
        if self.tail.is_none() {
            let mut bytes = Vec::new();
            self.file
                .read_to_end(&mut bytes)
                .map_err(AuditError::io("read", &self.path))?;
            self.tail = Some((self.offset, bytes));
        }
        let Some((tail_start, bytes)) = &self.tail else {
            return Ok(Ok(None));
        };
        let start = usize::try_from(self.offset - tail_start).unwrap_or(usize::MAX);
        let rest = bytes.get(start..).unwrap_or_default();
        let torn_allowed = self.torn_tail == TornTail::Allowed;
        Ok(read_record(rest, self.version, torn_allowed, decode))
    }

    fn rest_is_zero(&mut self) -> Result<bool, AuditError> {
        let mut chunk = vec![0; READ_BUFFER_BYTES];
        loop {
            let n = self
                .file
                .read(&mut chunk)
                .map_err(AuditError::io("read", &self.path))?;
            if n == 0 {
                return Ok(true);
            }
            if chunk[..n].iter().any(|byte| *byte != 0) {
                return Ok(false);
            }
        }
    }

    fn read_exact(&mut self, buf: &mut [u8]) -> Result<(), AuditError> {
        self.file
            .read_exact(buf)
            .map_err(AuditError::io("read", &self.path))
    }
}

impl Iterator for WalReader {
    type Item = Result<AccessEvent, AuditError>;

    fn next(&mut self) -> Option<Self::Item> {
        self.next_event().transpose()
    }
}

/// Decodes a record's payload of a given format version: its `seq`, and what the reader's
/// caller wants of it.
type Decode<'a, T> = dyn FnMut(&[u8], u32) -> Result<(u64, T), DecodeError> + 'a;

/// A record's `seq` and decoded value, and its length, or `None` for a torn tail.
type Found<T> = Option<((u64, T), usize)>;

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

fn split_record_header(header: [u8; RECORD_HEADER_LEN]) -> (u32, u32) {
    let [l0, l1, l2, l3, c0, c1, c2, c3] = header;
    (
        u32::from_le_bytes([l0, l1, l2, l3]),
        u32::from_le_bytes([c0, c1, c2, c3]),
    )
}

fn decode_payload<T>(
    payload: &[u8],
    checksum: u32,
    version: u32,
    decode: &mut Decode<'_, T>,
) -> Result<(u64, T), RecordProblem> {
    if crc32fast::hash(payload) != checksum {
        return Err(RecordProblem::Checksum);
    }
    Ok(decode(payload, version)?)
}

/// Reads the record at the start of `rest`, the bytes from its offset to the end of the file:
/// its decoded value and length, or `None` for a torn tail (only when `torn_allowed`).
fn read_record<T>(
    rest: &[u8],
    version: u32,
    torn_allowed: bool,
    decode: &mut Decode<'_, T>,
) -> Result<Found<T>, RecordProblem> {
    // A crash can cut short only the last write; whatever it left past the last whole record is
    // within one record's size of the end, or zeros.
    let all_zero = rest.iter().all(|byte| *byte == 0);
    let could_be_torn = torn_allowed && (all_zero || rest.len() as u64 <= TAIL_WINDOW);
    let torn_or = |problem| {
        if could_be_torn {
            Ok(None)
        } else {
            Err(problem)
        }
    };

    if all_zero {
        return torn_or(RecordProblem::Empty);
    }
    let Some((header, body)) = rest.split_first_chunk::<RECORD_HEADER_LEN>() else {
        return torn_or(RecordProblem::PastEnd);
    };
    let (length, checksum) = split_record_header(*header);
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
        // What a torn write leaves is a prefix of one event's encoding. Bytes that hold a
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
    match decode_payload(payload, checksum, version, decode) {
        Err(RecordProblem::Checksum) if is_last => torn_or(RecordProblem::Checksum),
        Err(problem) => Err(problem),
        Ok(value) => Ok(Some((value, RECORD_HEADER_LEN + size))),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn log_names_round_trip_and_sort_by_seq() {
        let early = log_file_name(9);
        let late = log_file_name(10);
        assert_eq!(early, "00000000000000000009.wal");
        assert_eq!(parse_log_file_name(&early), Some(9));
        assert_eq!(parse_log_file_name(&late), Some(10));
        assert!(early < late);
        for name in [
            "events.wal",
            ".wal",
            "1.wal.tmp",
            "x1.wal",
            "00000000000000000001",
        ] {
            assert_eq!(parse_log_file_name(name), None, "{name}");
        }
    }
}
