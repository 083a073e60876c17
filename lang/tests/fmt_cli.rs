//! Runs `policyc fmt` the way a user or CI does: on a messy copy of a policy file, a file that
//! does not parse, and a path that does not exist.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::fs;

use common::{path_arg, policyc, stderr, stdout};
use portcullis_lang::fmt::format_source;

const MESSY: &str = "workload w{github{repository==\"acme/a\"}} // the workload\n\n\n\
                     target t{http{host=\"h\" port=80}}\n";

#[test]
fn check_names_a_messy_file_fmt_fixes_it_and_check_then_passes() {
    let dir = tempfile::tempdir().unwrap();
    let messy = dir.path().join("nested/messy.gate");
    let tidy = dir.path().join("tidy.gate");
    fs::create_dir(dir.path().join("nested")).unwrap();
    fs::write(&messy, MESSY).unwrap();
    let formatted = format_source("messy.gate", MESSY).unwrap();
    fs::write(&tidy, &formatted).unwrap();
    let dir_arg = path_arg(dir.path());

    let check = policyc(&["fmt", "--check", dir_arg]);
    assert_eq!(check.status.code(), Some(1), "{}", stderr(&check));
    assert_eq!(stdout(&check), format!("{}\n", messy.display()));
    assert!(
        stderr(&check).contains("1 file not formatted"),
        "{}",
        stderr(&check)
    );
    assert_eq!(
        fs::read_to_string(&messy).unwrap(),
        MESSY,
        "--check changed the file"
    );

    let fix = policyc(&["fmt", dir_arg]);
    assert_eq!(fix.status.code(), Some(0), "{}", stderr(&fix));
    assert_eq!(stdout(&fix), format!("{}\n", messy.display()));
    assert_eq!(stderr(&fix), "");
    assert_eq!(fs::read_to_string(&messy).unwrap(), formatted);
    let leftovers: Vec<_> = fs::read_dir(dir.path().join("nested")).unwrap().collect();
    assert_eq!(leftovers.len(), 1, "a temporary file was left behind");

    let recheck = policyc(&["fmt", "--check", dir_arg]);
    assert_eq!(recheck.status.code(), Some(0), "{}", stderr(&recheck));
    assert_eq!(stdout(&recheck), "");
}

#[cfg(unix)]
#[test]
fn fmt_keeps_the_permissions_of_the_file() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("policy.gate");
    fs::write(&file, MESSY).unwrap();
    fs::set_permissions(&file, fs::Permissions::from_mode(0o640)).unwrap();
    let output = policyc(&["fmt", path_arg(&file)]);
    assert_eq!(output.status.code(), Some(0), "{}", stderr(&output));
    let mode = fs::metadata(&file).unwrap().permissions().mode();
    assert_eq!(mode & 0o777, 0o640);
}

#[test]
fn a_file_that_does_not_parse_is_reported_and_left_untouched() {
    let dir = tempfile::tempdir().unwrap();
    let broken = dir.path().join("broken.gate");
    let text = "workload w { github { repository == } }\n";
    fs::write(&broken, text).unwrap();
    let messy = dir.path().join("messy.gate");
    fs::write(&messy, MESSY).unwrap();

    let output = policyc(&["fmt", path_arg(dir.path())]);
    assert_eq!(output.status.code(), Some(1));
    let err = stderr(&output);
    assert!(err.contains("gate::E0001"), "{err}");
    assert!(err.contains("broken.gate:1:37"), "{err}");
    assert!(err.contains("does not parse; it is left as it is"), "{err}");
    assert_eq!(fs::read_to_string(&broken).unwrap(), text);
    assert_eq!(
        stdout(&output),
        format!("{}\n", messy.display()),
        "the other file is fixed"
    );
}

#[test]
fn a_path_that_cannot_be_read_or_a_bad_flag_exits_2() {
    let dir = tempfile::tempdir().unwrap();
    let missing = dir.path().join("missing.gate");
    let output = policyc(&["fmt", path_arg(&missing)]);
    assert_eq!(output.status.code(), Some(2));
    assert!(
        stderr(&output).starts_with("error: cannot read `"),
        "{}",
        stderr(&output)
    );
    assert_eq!(stdout(&output), "");

    let output = policyc(&["fmt", "--frobnicate"]);
    assert_eq!(output.status.code(), Some(2));
}

#[test]
fn help_describes_fmt_with_examples() {
    let output = policyc(&["fmt", "--help"]);
    assert_eq!(output.status.code(), Some(0));
    let help = stdout(&output);
    assert!(help.contains("--check"), "{help}");
    assert!(help.contains("policyc fmt --check policies/"), "{help}");
}
