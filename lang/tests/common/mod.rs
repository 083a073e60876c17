//! Setup the front end's integration tests share: where the crate, its corpora and the example
//! policy set are, the snapshot settings of a corpus file, and running the built `policyc` as
//! a user does.

#![allow(
    dead_code,
    reason = "each test crate that includes this module uses a different part of it"
)]

use std::ffi::OsStr;
use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use portcullis_lang::source::SourceFile;

/// The crate directory, `lang/`: relative paths in the tests start there.
pub fn lang_dir() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

/// The example policy set, `examples/policies/`.
pub fn examples_dir() -> PathBuf {
    lang_dir().join("../examples/policies")
}

/// `tests/corpus/KIND/`: one corpus, such as `ok`, `err`, `lint` or `test`.
pub fn corpus_dir(kind: &str) -> PathBuf {
    lang_dir().join("tests/corpus").join(kind)
}

/// The names of the `.gate` files of `tests/corpus/KIND/`, without the extension, sorted.
pub fn corpus_names(kind: &str) -> Vec<String> {
    let mut names: Vec<String> = std::fs::read_dir(corpus_dir(kind))
        .unwrap()
        .map(|entry| entry.unwrap().path())
        .filter(|path| path.extension().is_some_and(|ext| ext == "gate"))
        .map(|path| path.file_stem().unwrap().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

/// `tests/corpus/KIND/NAME.gate`: its path, and the file named `corpus/KIND/NAME.gate` as its
/// diagnostics show it.
pub fn corpus_file(kind: &str, name: &str) -> (PathBuf, SourceFile) {
    let path = corpus_dir(kind).join(format!("{name}.gate"));
    let text = std::fs::read_to_string(&path).unwrap();
    (
        path,
        SourceFile::new(format!("corpus/{kind}/{name}.gate"), text),
    )
}

/// Snapshot settings that record `input` as the snapshot's source and name the snapshot
/// `TEST__NAME`, after the test crate. The caller binds them around its `assert_snapshot!`,
/// which must stay in the test crate for the snapshot to be found beside it.
pub fn snapshot_settings(input: &Path) -> insta::Settings {
    let mut settings = insta::Settings::clone_current();
    settings.set_input_file(input);
    settings.set_prepend_module_to_snapshot(true);
    settings
}

/// Runs the built `policyc` with `args` in the crate directory.
pub fn policyc<S: AsRef<OsStr>>(args: &[S]) -> Output {
    policyc_in(&lang_dir(), args)
}

/// Runs the built `policyc` with `args` in `dir`, with `NO_COLOR` set, and waits for it.
pub fn policyc_in<S: AsRef<OsStr>>(dir: &Path, args: &[S]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_policyc"))
        .args(args)
        .current_dir(dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap()
}

pub fn stdout(output: &Output) -> String {
    String::from_utf8(output.stdout.clone()).unwrap()
}

pub fn stderr(output: &Output) -> String {
    String::from_utf8(output.stderr.clone()).unwrap()
}

/// `path` as a command-line argument.
pub fn path_arg(path: &Path) -> &str {
    path.to_str().unwrap()
}
