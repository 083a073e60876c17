//! The JSON and SARIF reports through the library: every lint code is documented (the SARIF
//! rules are read from `docs/diagnostics.md`), and labels in other files keep their own file.

#![allow(
    clippy::unwrap_used,
    clippy::indexing_slicing,
    reason = "a test fails by panicking"
)]

use std::path::Path;

use portcullis_lang::report::{CheckRun, CheckedSet, documented_codes, to_json, to_sarif};
use portcullis_lang::source::{SourceFile, read_policy_path};
use portcullis_lang::{LintOptions, analyze};
use serde_json::Value;

#[test]
fn every_lint_code_is_documented() {
    let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/lint");
    let documented = documented_codes();
    let mut n_codes = 0;
    for file in read_policy_path(&dir).unwrap() {
        let outcome = analyze(std::slice::from_ref(&file), &LintOptions::default());
        for diag in &outcome.diagnostics {
            let code = diag.code().as_str();
            assert!(
                documented.iter().any(|doc| doc == code),
                "{code} is not in docs/diagnostics.md"
            );
            n_codes += 1;
        }
    }
    assert!(n_codes >= 8);
}

fn two_file_run(files: &[SourceFile]) -> (Vec<portcullis_lang::Diagnostic>, usize) {
    let outcome = analyze(files, &LintOptions::default());
    (outcome.diagnostics, files.len())
}

#[test]
fn a_label_in_another_file_keeps_its_file() {
    let files = [
        SourceFile::new(
            "policies/a.gate",
            "workload w { github { repository == \"acme/app\" } }\n\
             target t { https { host = \"t\" } }\n\
             permit p { workload w target t }\n",
        ),
        SourceFile::new("policies/b.gate", "forbid f { target t }\n"),
    ];
    let (diagnostics, n_files) = two_file_run(&files);
    let run = CheckRun {
        tool_version: "0.0.0",
        sets: vec![CheckedSet {
            path: "policies",
            n_files,
            diagnostics: &diagnostics,
        }],
        unreadable: Vec::new(),
    };
    let json: Value = serde_json::from_str(&to_json(&run)).unwrap();
    let diag = &json["diagnostics"][0];
    assert_eq!(diag["code"], "gate::W0301");
    assert_eq!(diag["file"], "policies/a.gate");
    assert_eq!(
        (diag["line"].as_u64(), diag["column"].as_u64()),
        (Some(3), Some(8))
    );
    assert_eq!(diag["labels"][1]["file"], "policies/b.gate");
    assert_eq!(diag["labels"][1]["line"], 1);

    let sarif: Value = serde_json::from_str(&to_sarif(&run, Some(Path::new("/repo")))).unwrap();
    let result = &sarif["runs"][0]["results"][0];
    let uri = |location: &Value| location["physicalLocation"]["artifactLocation"]["uri"].clone();
    assert_eq!(uri(&result["locations"][0]), "policies/a.gate");
    assert_eq!(uri(&result["relatedLocations"][0]), "policies/b.gate");
}
