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
//!
//! A pid names a process only while it lives: once it exits, the kernel may hand the number to
//! another. So the connection's process is pinned with a pidfd — the one the kernel took when
//! the process connected (`SO_PEERPIDFD`), or on older kernels one opened by pid at accept —
//! and the evidence read from `/proc/PID` counts only if that process is still alive after the
//! reads: a live process keeps its pid, so what `/proc/PID` showed was its own. The uid of
//! `/proc/PID/status` is also checked against the peer credentials.

use std::collections::HashMap;
use std::fs::{self, File};
use std::io::Read as _;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError};

#[cfg(target_os = "linux")]
use std::os::fd::OwnedFd;

use serde_json::{Map, Value, json};
use sha2::{Digest, Sha256};

/// The other end of a Unix-socket connection, as the kernel reported it at `connect`.
#[derive(Debug, Clone)]
pub struct PeerProcess {
    pub pid: Option<i32>,
    pub uid: u32,
    pub gid: u32,
    /// The process itself, held from the connection's acceptance, or why it could not be.
    pub handle: Result<ProcessHandle, String>,
}

impl PeerProcess {
    /// The peer of `socket` with its process pinned: the pidfd the kernel took of the process
    /// that connected (`SO_PEERPIDFD`, Linux 6.5 and later), or, on an older kernel, a pidfd
    /// opened by its pid now. Call it as the connection is accepted.
    #[cfg(target_os = "linux")]
    pub fn of_connection(
        socket: &impl std::os::fd::AsFd,
        pid: Option<i32>,
        uid: u32,
        gid: u32,
    ) -> PeerProcess {
        match ProcessHandle::of_peer(socket) {
            Some(handle) => PeerProcess {
                pid,
                uid,
                gid,
                handle,
            },
            None => PeerProcess::pinned(pid, uid, gid),
        }
    }

    /// The peer with its process pinned by its pid, which names the process that connected
    /// only if it has not exited since: [`PeerProcess::of_connection`] where the kernel can
    /// tell.
    pub fn pinned(pid: Option<i32>, uid: u32, gid: u32) -> PeerProcess {
        let handle = match pid.filter(|pid| *pid > 0) {
            Some(pid) => ProcessHandle::open(pid),
            None => Err("the kernel reported no process id for the connection".to_owned()),
        };
        PeerProcess {
            pid,
            uid,
            gid,
            handle,
        }
    }
}

/// A pidfd: refers to one process, never to a later one that reuses its pid.
#[derive(Debug, Clone)]
pub struct ProcessHandle {
    #[cfg(target_os = "linux")]
    fd: Arc<OwnedFd>,
}

impl ProcessHandle {
    #[cfg(target_os = "linux")]
    pub fn open(pid: i32) -> Result<ProcessHandle, String> {
        let raw = rustix::process::Pid::from_raw(pid).ok_or("process id 0")?;
        match rustix::process::pidfd_open(raw, rustix::process::PidfdFlags::empty()) {
            Ok(fd) => Ok(ProcessHandle { fd: Arc::new(fd) }),
            Err(rustix::io::Errno::SRCH) => Err(format!(
                "process {pid} exited before its connection was accepted"
            )),
            Err(rustix::io::Errno::NOSYS) => Err(
                "this kernel has no pidfd_open (Linux 5.3 or later is needed to attest local \
                 processes)"
                    .to_owned(),
            ),
            Err(error) => Err(format!("cannot open a pidfd for process {pid}: {error}")),
        }
    }

    /// The kernel's pidfd of the process at the other end of `socket`, taken when it
    /// connected; `None` where the kernel has no `SO_PEERPIDFD`.
    #[cfg(target_os = "linux")]
    fn of_peer(socket: &impl std::os::fd::AsFd) -> Option<Result<ProcessHandle, String>> {
        use nix::errno::Errno;
        match nix::sys::socket::getsockopt(socket, nix::sys::socket::sockopt::PeerPidfd) {
            Ok(fd) => Some(Ok(ProcessHandle { fd: Arc::new(fd) })),
            Err(Errno::ENOPROTOOPT | Errno::EINVAL) => None,
            Err(Errno::ESRCH) => Some(Err(
                "the process that connected exited before its connection was accepted".to_owned(),
            )),
            Err(error) => Some(Err(format!(
                "cannot read the connection's peer pidfd: {error}"
            ))),
        }
    }

    #[cfg(not(target_os = "linux"))]
    pub fn open(_pid: i32) -> Result<ProcessHandle, String> {
        Err("local processes are attested on Linux only".to_owned())
    }

    /// Whether the process has exited (a zombie included): its pid may then be another's.
    #[cfg(target_os = "linux")]
    pub fn exited(&self) -> Result<bool, String> {
        use rustix::event::{PollFd, PollFlags, Timespec};
        let mut fds = [PollFd::new(&*self.fd, PollFlags::IN)];
        let now = Timespec {
            tv_sec: 0,
            tv_nsec: 0,
        };
        rustix::event::poll(&mut fds, Some(&now))
            .map_err(|error| format!("cannot poll the process's pidfd: {error}"))?;
        Ok(fds.first().is_some_and(|fd| !fd.revents().is_empty()))
    }

    #[cfg(not(target_os = "linux"))]
    pub fn exited(&self) -> Result<bool, String> {
        Err("local processes are attested on Linux only".to_owned())
    }
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
        let handle = peer.handle.as_ref().map_err(Clone::clone)?;
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
        // Checked after every read of `/proc/PID`: alive now, so alive throughout, so the
        // reads were of this process and not of one that took its pid after it exited.
        if handle.exited()? {
            return Err(format!(
                "process {pid} exited while it was attested; what /proc/{pid} showed may be \
                 another process's"
            ));
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
        let peer = PeerProcess::pinned(
            Some(i32::try_from(std::process::id()).unwrap()),
            ids[1],
            gids[1],
        );
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

    /// The kernel's own pidfd of a socket's peer pins this process, and its evidence reads.
    #[cfg(target_os = "linux")]
    #[test]
    fn a_socket_peer_is_pinned_by_the_kernels_pidfd() {
        let (ours, theirs) = std::os::unix::net::UnixStream::pair().unwrap();
        let status = read_small(Path::new("/proc/self/status")).unwrap();
        let uid = status_ids(&status, "Uid:").unwrap()[1];
        let gid = status_ids(&status, "Gid:").unwrap()[1];
        let pid = i32::try_from(std::process::id()).unwrap();
        let peer = PeerProcess::of_connection(&ours, Some(pid), uid, gid);
        let handle = peer.handle.as_ref().unwrap();
        assert!(!handle.exited().unwrap());
        let evidence = ProcessReader::default().evidence(&peer).unwrap();
        assert_eq!(evidence["pid"], pid);
        drop(theirs);
    }

    /// The process that connected exits, and its pid is another's by the time `/proc` is
    /// read: here, a `/proc` that shows this process under the pid of an exited child.
    #[cfg(target_os = "linux")]
    #[test]
    fn evidence_of_a_process_that_exited_is_refused_even_when_its_pid_looks_alive() {
        let mut child = std::process::Command::new("sleep")
            .arg("30")
            .spawn()
            .unwrap();
        let pid = i32::try_from(child.id()).unwrap();
        let status = read_small(Path::new("/proc/self/status")).unwrap();
        let uid = status_ids(&status, "Uid:").unwrap()[1];
        let gid = status_ids(&status, "Gid:").unwrap()[1];
        let peer = PeerProcess::pinned(Some(pid), uid, gid);
        assert!(!peer.handle.as_ref().unwrap().exited().unwrap());
        child.kill().unwrap();
        child.wait().unwrap();
        assert!(peer.handle.as_ref().unwrap().exited().unwrap());

        let root = tempfile::tempdir().unwrap();
        let proc_dir = root.path().join(format!("proc/{pid}"));
        fs::create_dir_all(&proc_dir).unwrap();
        fs::write(proc_dir.join("status"), &status).unwrap();
        std::os::unix::fs::symlink(std::env::current_exe().unwrap(), proc_dir.join("exe")).unwrap();
        let reader = ProcessReader {
            root: Some(root.path().to_owned()),
            ..ProcessReader::default()
        };
        let error = reader.evidence(&peer).unwrap_err();
        assert!(error.contains("exited while it was attested"), "{error}");

        // A process that was gone before the connection was accepted is not pinned at all.
        let gone = PeerProcess::pinned(Some(pid), uid, gid);
        let error = reader.evidence(&gone).unwrap_err();
        assert!(error.contains("exited before"), "{error}");
    }
}
