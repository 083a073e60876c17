//! `policyc build -o` writes a bundle to a regular file or through a symlink to one, and
//! refuses to replace anything else: a directory, a pipe, or a source of the policy set.
//! `policyc keygen` writes a key pair without ever replacing a file, and `build --sign` signs
//! with its private key.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::ffi::OsStr;
use std::path::Path;
use std::process::{Command, Output};

use common::{examples_dir, policyc};
use portcullis_lang::bundle::{Bundle, signing};

fn build(policies: &Path, output: &Path) -> Output {
    policyc(&[
        OsStr::new("build"),
        policies.as_os_str(),
        OsStr::new("-o"),
        output.as_os_str(),
    ])
}

fn keygen(out: &Path) -> Output {
    policyc(&[OsStr::new("keygen"), OsStr::new("--out"), out.as_os_str()])
}

fn build_signed(policies: &Path, output: &Path, key: &Path) -> Output {
    policyc(&[
        OsStr::new("build"),
        policies.as_os_str(),
        OsStr::new("-o"),
        output.as_os_str(),
        OsStr::new("--sign"),
        key.as_os_str(),
    ])
}

fn succeeded(out: &Output) -> String {
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout.clone()).unwrap()
}

fn refused(out: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(2), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}

#[test]
fn build_writes_regular_files_and_through_symlinks() {
    let tmp = tempfile::tempdir().unwrap();
    let plain = tmp.path().join("policy.bundle");
    let out = build(&examples_dir(), &plain);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let bytes = std::fs::read(&plain).unwrap();
    assert!(bytes.starts_with(b"GATEBNDL"));

    let real = tmp.path().join("real.bundle");
    std::fs::write(&real, b"old").unwrap();
    let link = tmp.path().join("link.bundle");
    std::os::unix::fs::symlink(&real, &link).unwrap();
    let out = build(&examples_dir(), &link);
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    assert!(
        std::fs::symlink_metadata(&link)
            .unwrap()
            .file_type()
            .is_symlink()
    );
    assert_eq!(std::fs::read(&real).unwrap(), bytes);
}

#[test]
fn build_refuses_to_replace_what_is_not_a_bundle_file() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path().join("a-directory");
    std::fs::create_dir(&dir).unwrap();
    refused(&build(&examples_dir(), &dir), "not a regular file");

    let fifo = tmp.path().join("a-pipe");
    make_fifo(&fifo);
    refused(&build(&examples_dir(), &fifo), "not a regular file");
    assert!(!std::fs::metadata(&fifo).unwrap().is_file());

    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    let source = policies.join("rules.gate");
    let text = std::fs::read_to_string(examples_dir().join("rules.gate")).unwrap();
    for name in ["workloads.gate", "targets.gate", "rules.gate", "tests.gate"] {
        std::fs::copy(examples_dir().join(name), policies.join(name)).unwrap();
    }
    refused(&build(&policies, &source), "source file of the policy set");
    assert_eq!(std::fs::read_to_string(&source).unwrap(), text);
}

#[test]
fn build_mentions_warnings_without_failing() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = tmp.path().join("policies");
    std::fs::create_dir(&policies).unwrap();
    std::fs::write(
        policies.join("broad.gate"),
        "workload anyone { oidc { } }\ntarget api { https { host = \"api.example\" } }\n\
         permit everyone { workload anyone target api }\n",
    )
    .unwrap();
    let out = build(&policies, &tmp.path().join("out.bundle"));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{stderr}");
    assert!(
        stderr.contains("1 warning;") && stderr.contains("policyc check"),
        "{stderr}"
    );
}

#[test]
fn test_without_any_test_declaration_fails() {
    let tmp = tempfile::tempdir().unwrap();
    std::fs::write(
        tmp.path().join("only.gate"),
        "target api { https { host = \"api.example\" } }\n",
    )
    .unwrap();
    let out = policyc(&[OsStr::new("test"), tmp.path().as_os_str()]);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains("declares no `test`"), "{stderr}");
    // No summary of zero tests that would read as a pass.
    assert!(
        out.stdout.is_empty(),
        "{}",
        String::from_utf8_lossy(&out.stdout)
    );
}

#[test]
fn keygen_writes_an_owner_only_private_key_and_never_overwrites() {
    use std::os::unix::fs::PermissionsExt;

    let tmp = tempfile::tempdir().unwrap();
    let private = tmp.path().join("signing.key");
    let public = tmp.path().join("signing.key.pub");
    let stdout = succeeded(&keygen(&private));
    let private_pem = std::fs::read_to_string(&private).unwrap();
    let public_pem = std::fs::read_to_string(&public).unwrap();
    assert!(private_pem.starts_with("-----BEGIN PRIVATE KEY-----\n"));
    assert!(public_pem.starts_with("-----BEGIN PUBLIC KEY-----\n"));
    let mode = std::fs::metadata(&private).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o600, "{mode:o}");
    let key = signing::verifying_key_from_pem(&public_pem).unwrap();
    let pair = signing::signing_key_from_pem(&private_pem).unwrap();
    assert_eq!(pair.verifying_key(), key);
    assert!(stdout.contains(&signing::key_id(&key)), "{stdout}");

    refused(&keygen(&private), "already exists");
    assert_eq!(std::fs::read_to_string(&private).unwrap(), private_pem);
    assert_eq!(std::fs::read_to_string(&public).unwrap(), public_pem);

    // A public key in the way stops the private one from being written at all.
    let lone = tmp.path().join("lone.key");
    std::fs::write(tmp.path().join("lone.key.pub"), "keep me").unwrap();
    refused(&keygen(&lone), "already exists");
    assert!(!lone.exists());
    let link = tmp.path().join("link.key");
    std::os::unix::fs::symlink(tmp.path().join("nowhere"), &link).unwrap();
    refused(&keygen(&link), "already exists");
    assert!(!tmp.path().join("nowhere").exists());
}

#[test]
fn build_signs_with_the_key_keygen_wrote() {
    let tmp = tempfile::tempdir().unwrap();
    let private = tmp.path().join("signing.key");
    succeeded(&keygen(&private));
    let public_pem = std::fs::read_to_string(tmp.path().join("signing.key.pub")).unwrap();
    let public = signing::verifying_key_from_pem(&public_pem).unwrap();

    let unsigned_path = tmp.path().join("unsigned.bundle");
    succeeded(&build(&examples_dir(), &unsigned_path));
    let signed_path = tmp.path().join("signed.bundle");
    let stdout = succeeded(&build_signed(&examples_dir(), &signed_path, &private));
    assert!(
        stdout.contains(&format!("signed by key {}", signing::key_id(&public))),
        "{stdout}"
    );
    let bytes = std::fs::read(&signed_path).unwrap();
    let signed = Bundle::from_bytes_verified(&bytes, &public).unwrap();
    let unsigned = Bundle::from_bytes(&std::fs::read(&unsigned_path).unwrap()).unwrap();
    assert_eq!(signed.hash(), unsigned.hash());
    assert!(stdout.contains(&signed.hash_hex()), "{stdout}");
    let signed_at = signed.signature().unwrap().signed_at().unwrap();
    let when = jiff::Timestamp::from_second(i64::try_from(signed_at).unwrap()).unwrap();
    assert!(stdout.contains(&format!(" at {when}")), "{stdout}");
    assert!(when.to_string().ends_with('Z'), "{when}");

    let not_written = tmp.path().join("not-written.bundle");
    let public_path = tmp.path().join("signing.key.pub");
    refused(
        &build_signed(&examples_dir(), &not_written, &public_path),
        "this is a public key, where the private key belongs",
    );
    refused(
        &build_signed(
            &examples_dir(),
            &not_written,
            &tmp.path().join("absent.key"),
        ),
        "cannot use the key",
    );
    assert!(!not_written.exists());
}

/// A `--sign` key that is a device or a pipe is refused unread, rather than read without end.
#[test]
fn build_refuses_a_signing_key_that_is_not_a_regular_file() {
    let tmp = tempfile::tempdir().unwrap();
    let out = tmp.path().join("policy.bundle");
    refused(
        &build_signed(&examples_dir(), &out, Path::new("/dev/zero")),
        "not a regular file",
    );
    assert!(!out.exists());
}

/// `out` failed with exit status 1, a bundle refused, saying `why`.
fn rejected(out: &Output, why: &str) {
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(out.status.code(), Some(1), "{stderr}");
    assert!(stderr.contains(why), "{stderr}");
}

fn inspect(bundle: &Path, key: Option<&Path>) -> Output {
    let mut args = vec![OsStr::new("inspect"), bundle.as_os_str()];
    if let Some(key) = key {
        args.extend([OsStr::new("--public-key"), key.as_os_str()]);
    }
    policyc(&args)
}

#[test]
fn inspect_shows_the_bundle_its_signer_and_time_and_checks_a_key() {
    let tmp = tempfile::tempdir().unwrap();
    let (private, other) = (tmp.path().join("k.key"), tmp.path().join("other.key"));
    succeeded(&keygen(&private));
    succeeded(&keygen(&other));
    let (public, other_public) = (
        tmp.path().join("k.key.pub"),
        tmp.path().join("other.key.pub"),
    );
    let unsigned_path = tmp.path().join("unsigned.bundle");
    succeeded(&build(&examples_dir(), &unsigned_path));
    let signed_path = tmp.path().join("signed.bundle");
    succeeded(&build_signed(&examples_dir(), &signed_path, &private));
    let signed = Bundle::from_bytes(&std::fs::read(&signed_path).unwrap()).unwrap();
    let signature = signed.signature().unwrap();
    let when = jiff::Timestamp::from_second(signature.signed_at().unwrap() as i64).unwrap();

    let shown = succeeded(&inspect(&unsigned_path, None));
    assert!(
        shown.contains(&format!("bundle sha256:{}", signed.hash_hex())),
        "{shown}"
    );
    assert!(shown.contains("8 rules, 6 workloads, 3 targets"), "{shown}");
    assert!(shown.contains("not signed"), "{shown}");
    let shown = succeeded(&inspect(&signed_path, Some(&public)));
    let signer = format!("signed by key {} at {when}", signature.key_id());
    assert!(shown.contains(&signer), "{shown}");
    assert!(shown.contains("the signature verifies with"), "{shown}");

    rejected(
        &inspect(&signed_path, Some(&other_public)),
        "is signed by key",
    );
    rejected(
        &inspect(&unsigned_path, Some(&public)),
        "the bundle is not signed",
    );
    let mut altered = std::fs::read(&signed_path).unwrap();
    let last = altered.len() - 1;
    altered[last] ^= 1;
    let altered_path = tmp.path().join("altered.bundle");
    std::fs::write(&altered_path, altered).unwrap();
    rejected(
        &inspect(&altered_path, Some(&public)),
        "does not match its bytes",
    );
    let junk = tmp.path().join("junk.bundle");
    std::fs::write(&junk, "junk").unwrap();
    rejected(&inspect(&junk, None), "this is not a policy bundle");
    let unreadable = inspect(tmp.path(), None);
    assert_eq!(unreadable.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&unreadable.stderr).contains("not a regular file"));

    // A file over the bundle limit is refused from its size, unread.
    let huge = tmp.path().join("huge.bundle");
    std::fs::File::create(&huge)
        .unwrap()
        .set_len(300 * 1024 * 1024)
        .unwrap();
    let refused = inspect(&huge, None);
    assert_eq!(refused.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&refused.stderr).contains("larger than"));

    // A named pipe is refused before it is opened, which would wait for a writer.
    let fifo = tmp.path().join("a-pipe.bundle");
    make_fifo(&fifo);
    let mut child = Command::new(env!("CARGO_BIN_EXE_policyc"))
        .arg("inspect")
        .arg(&fifo)
        .stdout(std::process::Stdio::piped())
        .stderr(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let mut finished = None;
    for _ in 0..200 {
        if let Some(status) = child.try_wait().unwrap() {
            finished = Some(status);
            break;
        }
        std::thread::sleep(std::time::Duration::from_millis(50));
    }
    if finished.is_none() {
        child.kill().unwrap();
        panic!("policyc inspect waited on a named pipe");
    }
    let output = child.wait_with_output().unwrap();
    assert_eq!(output.status.code(), Some(2));
    assert!(String::from_utf8_lossy(&output.stderr).contains("not a regular file"));
}

/// A named pipe at `path`.
fn make_fifo(path: &Path) {
    let made = Command::new("mkfifo").arg(path).status().unwrap();
    assert!(made.success(), "mkfifo {}", path.display());
}
