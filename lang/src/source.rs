//! Reading a policy set from disk: one `*.gate` file, or every `*.gate` file under a
//! directory, sorted by path. The only I/O in this crate; the compiler itself takes
//! [`SourceFile`]s. Reads are bounded in file size and file count.

use std::collections::HashSet;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};

/// The largest policy file read, in bytes.
pub const MAX_FILE_BYTES: u64 = 1024 * 1024;

/// The most policy files read from one directory tree.
pub const MAX_FILES: usize = 10_000;

/// One policy file: its name as shown in diagnostics and its text.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SourceFile {
    pub name: String,
    pub text: String,
}

impl SourceFile {
    pub fn new(name: impl Into<String>, text: impl Into<String>) -> SourceFile {
        SourceFile {
            name: name.into(),
            text: text.into(),
        }
    }
}

/// A path as a message shows it, without characters that would act on a terminal.
fn shown(path: &Path) -> String {
    crate::diagnostic::printable(&path.display().to_string()).into_owned()
}

#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error("cannot read `{}`: {source}", shown(.path))]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("`{}` is larger than {MAX_FILE_BYTES} bytes", shown(.path))]
    TooLarge { path: PathBuf },
    #[error("`{}` holds more than {MAX_FILES} policy files", shown(.path))]
    TooManyFiles { path: PathBuf },
    #[error("`{}` is not valid UTF-8; Gate sources are UTF-8 text", shown(.path))]
    NotUtf8 { path: PathBuf },
    #[error("`{}` holds no `*.gate` files", shown(.path))]
    NoPolicyFiles { path: PathBuf },
    #[error("`{}` is not a regular file (a pipe or a device is never read)", shown(.path))]
    NotAFile { path: PathBuf },
}

/// Reads the policy set at `path`: the file itself, or every `*.gate` file below the directory,
/// recursively, sorted by path. Names are `path` joined with the path relative to it.
pub fn read_policy_path(path: &Path) -> Result<Vec<SourceFile>, SourceError> {
    let metadata = fs::metadata(path).map_err(|source| SourceError::Io {
        path: path.to_owned(),
        source,
    })?;
    if !metadata.is_dir() {
        return Ok(vec![read_file(path)?]);
    }
    let mut paths = Vec::new();
    let mut visited = HashSet::new();
    collect_gate_files(path, path, &mut visited, &mut paths)?;
    if paths.is_empty() {
        // An empty set would deny everything; far more often the path is wrong.
        return Err(SourceError::NoPolicyFiles {
            path: path.to_owned(),
        });
    }
    paths.sort();
    paths.iter().map(|file| read_file(file)).collect()
}

/// Collects the `.gate` files below `dir`, skipping hidden files and directories (`.git`) and
/// reading a directory or file reached again through a link only once, so that a link loop
/// ends and no file is read twice.
fn collect_gate_files(
    root: &Path,
    dir: &Path,
    visited: &mut HashSet<PathBuf>,
    out: &mut Vec<PathBuf>,
) -> Result<(), SourceError> {
    let io_error = |source| SourceError::Io {
        path: dir.to_owned(),
        source,
    };
    if !visited.insert(fs::canonicalize(dir).map_err(io_error)?) {
        return Ok(());
    }
    let mut entries = Vec::new();
    for entry in fs::read_dir(dir).map_err(io_error)? {
        entries.push(entry.map_err(io_error)?.path());
    }
    entries.sort();
    let hidden = |path: &Path| {
        path.file_name()
            .is_some_and(|name| name.to_string_lossy().starts_with('.'))
    };
    for entry in entries.into_iter().filter(|entry| !hidden(entry)) {
        let file_type = fs::metadata(&entry)
            .map_err(|source| SourceError::Io {
                path: entry.clone(),
                source,
            })?
            .file_type();
        if file_type.is_dir() {
            collect_gate_files(root, &entry, visited, out)?;
        } else if entry.extension().is_some_and(|ext| ext == "gate") {
            // A link to a file already in the set would declare everything in it twice.
            let canonical = fs::canonicalize(&entry).map_err(|source| SourceError::Io {
                path: entry.clone(),
                source,
            })?;
            if !visited.insert(canonical) {
                continue;
            }
            if out.len() >= MAX_FILES {
                return Err(SourceError::TooManyFiles {
                    path: root.to_owned(),
                });
            }
            out.push(entry);
        }
    }
    Ok(())
}

fn read_file(path: &Path) -> Result<SourceFile, SourceError> {
    let io_error = |source| SourceError::Io {
        path: path.to_owned(),
        source,
    };
    // Opening a pipe blocks until a writer comes, and reading a device may never end: a reload
    // would hang on it, and every later one behind it.
    if !fs::metadata(path).map_err(io_error)?.is_file() {
        return Err(SourceError::NotAFile {
            path: path.to_owned(),
        });
    }
    let file = fs::File::open(path).map_err(io_error)?;
    let mut bytes = Vec::new();
    file.take(MAX_FILE_BYTES + 1)
        .read_to_end(&mut bytes)
        .map_err(io_error)?;
    if bytes.len() as u64 > MAX_FILE_BYTES {
        return Err(SourceError::TooLarge {
            path: path.to_owned(),
        });
    }
    let mut text = String::from_utf8(bytes).map_err(|_| SourceError::NotUtf8 {
        path: path.to_owned(),
    })?;
    // A byte-order mark some editors write says nothing in UTF-8.
    if text.starts_with('\u{feff}') {
        text.drain(..'\u{feff}'.len_utf8());
    }
    Ok(SourceFile {
        name: path.display().to_string(),
        text,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[cfg(unix)]
    #[test]
    fn a_pipe_named_like_a_policy_file_is_refused_unread() {
        let dir = tempfile::tempdir().unwrap();
        fs::write(dir.path().join("a.gate"), "a").unwrap();
        let fifo = dir.path().join("zz.gate");
        let made = std::process::Command::new("mkfifo")
            .arg(&fifo)
            .status()
            .unwrap();
        assert!(made.success());
        let error = read_policy_path(dir.path()).unwrap_err();
        assert!(matches!(error, SourceError::NotAFile { .. }), "{error}");
        assert!(error.to_string().contains("zz.gate"), "{error}");
        let error = read_policy_path(&fifo).unwrap_err();
        assert!(matches!(error, SourceError::NotAFile { .. }), "{error}");
    }

    #[test]
    fn reads_a_directory_recursively_in_path_order() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("b.gate"), "b").unwrap();
        fs::write(dir.path().join("a.gate"), "a").unwrap();
        fs::write(dir.path().join("sub/c.gate"), "c").unwrap();
        fs::write(dir.path().join("notes.txt"), "skip").unwrap();
        let files = read_policy_path(dir.path()).unwrap();
        let texts: Vec<_> = files.iter().map(|file| file.text.as_str()).collect();
        assert_eq!(texts, vec!["a", "b", "c"]);
        let expected = dir.path().join("sub").join("c.gate").display().to_string();
        assert_eq!(files.last().map(|file| file.name.clone()), Some(expected));
    }

    #[test]
    fn skips_hidden_entries_and_reads_a_linked_directory_once() {
        let dir = tempfile::tempdir().unwrap();
        fs::create_dir_all(dir.path().join(".git/refs")).unwrap();
        fs::write(dir.path().join(".git/refs/old.gate"), "hidden").unwrap();
        fs::write(dir.path().join(".draft.gate"), "hidden").unwrap();
        fs::create_dir(dir.path().join("sub")).unwrap();
        fs::write(dir.path().join("sub/a.gate"), "a").unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path(), dir.path().join("sub/loop")).unwrap();
        #[cfg(unix)]
        std::os::unix::fs::symlink(dir.path().join("sub/a.gate"), dir.path().join("b.gate"))
            .unwrap();
        let files = read_policy_path(dir.path()).unwrap();
        let texts: Vec<_> = files.iter().map(|file| file.text.as_str()).collect();
        assert_eq!(texts, vec!["a"]);
    }

    #[test]
    fn reads_a_single_file() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("one.gate");
        fs::write(&path, "text").unwrap();
        let files = read_policy_path(&path).unwrap();
        assert_eq!(
            files,
            vec![SourceFile::new(path.display().to_string(), "text")]
        );
    }

    #[test]
    fn missing_path_is_an_error_naming_it() {
        let error = read_policy_path(Path::new("/nonexistent/policies")).unwrap_err();
        assert!(
            error.to_string().contains("`/nonexistent/policies`"),
            "{error}"
        );
    }

    #[test]
    fn oversized_and_non_utf8_files_are_errors() {
        let dir = tempfile::tempdir().unwrap();
        let big = dir.path().join("big.gate");
        fs::write(&big, vec![b' '; MAX_FILE_BYTES as usize + 1]).unwrap();
        assert!(
            matches!(read_policy_path(&big), Err(SourceError::TooLarge { path }) if path == big)
        );
        let bad = dir.path().join("bad.gate");
        fs::write(&bad, [0xff, 0xfe]).unwrap();
        assert!(
            matches!(read_policy_path(&bad), Err(SourceError::NotUtf8 { path }) if path == bad)
        );
    }
}
