//! Local processes: the callers of the server's Unix socket, attested from what the kernel
//! says about the other end of the connection rather than from a token.
//!
//! In: the peer credentials of the connection (`SO_PEERCRED`: pid, effective uid and gid, as
//! they were at `connect`). Out: the evidence of the `process` claim schema — the ids, the
//! user and group names, the supplementary groups, the executable's path and SHA-256 — read
//! from `/proc/PID` and the user and group databases.
//!
//! The executable is hashed through `/proc/PID/exe`, the file the process runs even if its
//! path was replaced or deleted since; hashes are remembered by the file's device, inode,
//! size and modification time, so that a large binary is read once, not per request.
//! FIXME(#6): a process that exits between `connect` and these reads could have its pid
//! reused; the uid of `/proc/PID/status` is checked against the peer credentials, which
//! catches a reuse by another user, not by the same one (a pidfd would close the gap).

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Mutex, PoisonError};

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The other end of a Unix-socket connection, as the kernel reported it at `connect`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PeerProcess {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
}

/// The largest `/proc` or database file read.
const MAX_SMALL_FILE_BYTES: u64 = 4 * 1024 * 1024;

/// Executable hashes remembered at most; past it, all are forgotten.
const MAX_REMEMBERED_HASHES: usize = 4096;

/// What identifies an executable file's content without reading it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
struct FileStamp {
    dev: u64,
    ino: u64,
    size: u64,
    mtime_ns: i128,
    ctime_ns: i128,
}

/// Reads process evidence; remembers executable hashes.
#[derive(Debug, Default)]
pub struct ProcessReader {
    hashes: Mutex<HashMap<FileStamp, String>>,
    /// Where `/proc`, `/etc/passwd` and `/etc/group` are; tests point elsewhere.
    root: Option<PathBuf>,
}

impl ProcessReader {
    /// The evidence of `peer` as the `process` schema's payload. Blocking I/O.
    pub fn evidence(&self, peer: &PeerProcess) -> Result<Map<String, Value>, String> {
        let pid = peer
            .pid
            .filter(|pid| *pid > 0)
            .ok_or("the kernel reported no process id for the connection")?;
        let proc_dir = self.path(&format!("proc/{pid}"));
        let status = read_small(&proc_dir.join("status"))
            .map_err(|error| format!("cannot read the status of process {pid}: {error}"))?;
        let effective_uid = status_ids(&status, "Uid:")
            .and_then(|ids| ids.get(1).copied())
            .ok_or_else(|| format!("process {pid} has no `Uid:` line in its status"))?;
        if effective_uid != peer.uid {
            return Err(format!(
                "process {pid} now runs as uid {effective_uid}, not the {} that connected; it \
                 may have exited",
                peer.uid
            ));
        }
        let groups = status_ids(&status, "Groups:").unwrap_or_default();
        let exe_link = proc_dir.join("exe");
        let exe = fs::read_link(&exe_link)
            .map_err(|error| format!("cannot read the executable of process {pid}: {error}"))?;
        let exe_sha256 = self
            .exe_hash(&exe_link)
            .map_err(|error| format!("cannot hash the executable of process {pid}: {error}"))?;
        let users = read_small(&self.path("etc/passwd")).unwrap_or_default();
        let group_db = read_small(&self.path("etc/group")).unwrap_or_default();
        let group_names: Vec<String> = groups
            .iter()
            .filter_map(|gid| name_of(&group_db, *gid))
            .collect();
        let mut payload = json!({
            "pid": pid,
            "uid": peer.uid,
            "gid": peer.gid,
            "groups": group_names,
            "exe": exe.to_string_lossy(),
            "exe_sha256": exe_sha256,
        });
        if let Some(user) = name_of(&users, peer.uid) {
            payload["user"] = json!(user);
        }
        if let Some(group) = name_of(&group_db, peer.gid) {
            payload["group"] = json!(group);
        }
        match payload {
            Value::Object(map) => Ok(map),
            _ => Err("the evidence is not an object".to_owned()),
        }
    }

    fn path(&self, relative: &str) -> PathBuf {
        match &self.root {
            Some(root) => root.join(relative),
            None => Path::new("/").join(relative),
        }
    }

    /// The SHA-256 of the file `/proc/PID/exe` opens, remembered by its stamp.
    fn exe_hash(&self, exe: &Path) -> std::io::Result<String> {
        let mut file = File::open(exe)?;
        let stamp = stamp(&file.metadata()?);
        if let Some(known) = self
            .hashes
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(&stamp)
        {
            return Ok(known.clone());
        }
        let mut hasher = Sha256::new();
        let mut buffer = vec![0u8; 1 << 20];
        loop {
            let read = file.read(&mut buffer)?;
            if read == 0 {
                break;
            }
            hasher.update(buffer.get(..read).unwrap_or_default());
        }
        let hash = hex::encode(hasher.finalize());
        let mut hashes = self.hashes.lock().unwrap_or_else(PoisonError::into_inner);
        if hashes.len() >= MAX_REMEMBERED_HASHES {
            hashes.clear();
        }
        hashes.insert(stamp, hash.clone());
        Ok(hash)
    }
}

#[cfg(unix)]
fn stamp(metadata: &fs::Metadata) -> FileStamp {
    use std::os::unix::fs::MetadataExt;
    FileStamp {
        dev: metadata.dev(),
        ino: metadata.ino(),
        size: metadata.size(),
        mtime_ns: i128::from(metadata.mtime()) * 1_000_000_000 + i128::from(metadata.mtime_nsec()),
        ctime_ns: i128::from(metadata.ctime()) * 1_000_000_000 + i128::from(metadata.ctime_nsec()),
    }
}

#[cfg(not(unix))]
fn stamp(metadata: &fs::Metadata) -> FileStamp {
    FileStamp {
        dev: 0,
        ino: 0,
        size: metadata.len(),
        mtime_ns: 0,
        ctime_ns: 0,
    }
}

fn read_small(path: &Path) -> std::io::Result<String> {
    let mut text = String::new();
    File::open(path)?
        .take(MAX_SMALL_FILE_BYTES)
        .read_to_string(&mut text)?;
    Ok(text)
}

/// The numbers after `key` on its line of `/proc/PID/status`.
fn status_ids(status: &str, key: &str) -> Option<Vec<u32>> {
    let line = status.lines().find(|line| line.starts_with(key))?;
    line.get(key.len()..)?
        .split_whitespace()
        .map(|id| id.parse().ok())
        .collect()
}

/// The name of `id` in a `passwd` or `group` database: `name:x:ID:…` lines.
fn name_of(database: &str, id: u32) -> Option<String> {
    database.lines().find_map(|line| {
        let mut fields = line.split(':');
        let name = fields.next()?;
        let _password = fields.next()?;
        let found: u32 = fields.next()?.parse().ok()?;
        (found == id && !name.is_empty()).then(|| name.to_owned())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn status_lines_and_databases_are_read() {
        let status =
            "Name:\tsh\nUid:\t1000\t1001\t1001\t1001\nGid:\t100\t100\t100\t100\nGroups:\t27 100 \n";
        assert_eq!(
            status_ids(status, "Uid:"),
            Some(vec![1000, 1001, 1001, 1001])
        );
        assert_eq!(status_ids(status, "Groups:"), Some(vec![27, 100]));
        assert_eq!(status_ids("Groups:\t\n", "Groups:"), Some(vec![]));
        let group = "root:x:0:\nsudo:x:27:alice\nusers:x:100:\n";
        assert_eq!(name_of(group, 27).as_deref(), Some("sudo"));
        assert_eq!(name_of(group, 5), None);
        assert_eq!(name_of("broken\n:x:9:\n", 9), None);
    }

    #[cfg(target_os = "linux")]
    #[test]
    fn this_process_is_its_own_evidence() {
        let status = read_small(Path::new("/proc/self/status")).unwrap();
        let ids = status_ids(&status, "Uid:").unwrap();
        let gids = status_ids(&status, "Gid:").unwrap();
        let peer = PeerProcess {
            pid: Some(i32::try_from(std::process::id()).unwrap()),
            uid: ids[1],
            gid: gids[1],
        };
        let reader = ProcessReader::default();
        let evidence = reader.evidence(&peer).unwrap();
        let exe = std::env::current_exe().unwrap();
        assert_eq!(evidence["exe"], exe.to_string_lossy().as_ref());
        let expected = hex::encode(Sha256::digest(fs::read(&exe).unwrap()));
        assert_eq!(evidence["exe_sha256"], expected.as_str());
        // Again, from the remembered hash.
        assert_eq!(
            reader.evidence(&peer).unwrap()["exe_sha256"],
            expected.as_str()
        );
        let other_user = PeerProcess {
            uid: ids[1].wrapping_add(1),
            ..peer
        };
        let error = reader.evidence(&other_user).unwrap_err();
        assert!(error.contains("may have exited"), "{error}");
    }
}
