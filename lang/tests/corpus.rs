//! Corpus tests: every `corpus/ok/*.gate` file and the example policy set compile without
//! diagnostics; every `corpus/err/*.gate` file fails with exactly the diagnostics rendered in
//! its snapshot.

#![allow(
    clippy::unwrap_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use common::{corpus_dir, corpus_file, corpus_names, examples_dir, snapshot_settings};
use portcullis_lang::source::{SourceFile, read_policy_path};
use portcullis_lang::{compile, render};

/// Compiles `corpus/err/NAME.gate` and compares its rendered diagnostics with the snapshot
/// `snapshots/corpus__NAME.snap`.
fn check_err(name: &str) {
    let (path, file) = corpus_file("err", name);
    let Err(diags) = compile(&[file]) else {
        panic!("{} compiled without errors", path.display())
    };
    snapshot_settings(&path).bind(|| insta::assert_snapshot!(name, render(&diags, false)));
}

fn check_ok(files: &[SourceFile]) -> portcullis_lang::ir::PolicySet {
    match compile(files) {
        Ok(set) => set,
        Err(diags) => panic!("unexpected diagnostics:\n{}", render(&diags, false)),
    }
}

#[test]
fn err_corpus() {
    let names = corpus_names("err");
    assert!(
        names.len() >= 12,
        "the err corpus has only {} files",
        names.len()
    );
    for name in names {
        check_err(&name);
    }
}

#[test]
fn ok_corpus() {
    let mut n_files = 0;
    for file in read_policy_path(&corpus_dir("ok")).unwrap() {
        check_ok(std::slice::from_ref(&file));
        n_files += 1;
    }
    assert!(n_files >= 3, "the ok corpus has only {n_files} files");
}

#[test]
fn example_policy_set_compiles() {
    let set = check_ok(&read_policy_path(&examples_dir()).unwrap());
    assert_eq!(set.workloads.len(), 6);
    assert_eq!(set.targets.len(), 3);
    assert_eq!(set.rules.len(), 8);
}

#[test]
fn errors_in_several_files_are_all_reported_in_file_order() {
    let files = [
        SourceFile::new("a.gate", "workload a { github { repo == \"x\" } }\n"),
        SourceFile::new(
            "b.gate",
            "target t { http { port = 80 } }\npermit p { workload a }\n",
        ),
    ];
    let diags = compile(&files).unwrap_err();
    let summary: Vec<_> = diags
        .iter()
        .map(|diag| (diag.file_name().to_owned(), diag.code().as_str()))
        .collect();
    assert_eq!(
        summary,
        vec![
            ("a.gate".to_owned(), "gate::E0201"),
            ("b.gate".to_owned(), "gate::E0401"),
            ("b.gate".to_owned(), "gate::E0501"),
        ]
    );
}

/// E0012 needs more than a million declarations, too many for a corpus file: the input is
/// built here, spread over files of 50,000 declarations each, under the file size bound.
#[test]
fn too_many_declarations_is_an_error() {
    let per_file = 50_000;
    let n_files = portcullis_lang::check::MAX_DECLARATIONS / per_file + 1;
    let files: Vec<SourceFile> = (0..n_files)
        .map(|file_idx| {
            let text = (0..per_file).map(|idx| format!("permit p{idx} {{}}\n"));
            SourceFile::new(
                format!("generated/{file_idx}.gate"),
                text.collect::<String>(),
            )
        })
        .collect();
    let diags = compile(&files).unwrap_err();
    insta::assert_snapshot!("too_many_declarations", render(&diags, false));
}

/// E0011 needs a string of more than 64 KiB on one line, too long for a corpus file that the
/// truncation test below cuts at every character: the input is built here, and the string is
/// shortened in the snapshot.
#[test]
fn string_longer_than_the_bound_is_an_error() {
    let long = "a".repeat(portcullis_lang::lexer::MAX_STRING_BYTES + 1);
    let text = format!("workload w {{\n  github {{ repository == \"{long}\" }}\n}}\n");
    let diags = compile(&[SourceFile::new("generated.gate", text)]).unwrap_err();
    let rendered = render(&diags, false).replace(&long, "aaa…");
    insta::assert_snapshot!("string_too_long", rendered);
}

#[test]
fn duplicate_across_files_points_at_both() {
    let files = [
        SourceFile::new("a.gate", "target t { http { host = \"a\" } }\n"),
        SourceFile::new("b.gate", "target t { http { host = \"b\" } }\n"),
    ];
    let diags = compile(&files).unwrap_err();
    let rendered = render(&diags, false);
    assert!(rendered.contains("[b.gate:1:8]"), "{rendered}");
    assert!(rendered.contains("[a.gate:1:8]"), "{rendered}");
    assert!(rendered.contains("first declared here"), "{rendered}");
}

/// Every file of both corpora and of the examples, as (name, text).
fn all_corpus_texts() -> Vec<SourceFile> {
    let mut files = read_policy_path(&corpus_dir("ok")).unwrap();
    files.extend(read_policy_path(&corpus_dir("err")).unwrap());
    files.extend(read_policy_path(&examples_dir()).unwrap());
    files
}

/// Compiles and renders `text`; a panic anywhere fails the test. A successful compile must
/// produce no diagnostics, a failed one at least one.
fn compile_and_render(name: &str, text: &str) {
    match compile(&[SourceFile::new(name, text)]) {
        Ok(_) => {}
        Err(diags) => {
            assert!(!diags.is_empty());
            let rendered = render(&diags, false);
            assert!(
                rendered.contains("gate::E"),
                "{name}: nothing rendered for {text:?}"
            );
        }
    }
}

#[test]
fn truncated_and_damaged_inputs_never_panic() {
    for file in all_corpus_texts() {
        let boundaries: Vec<usize> = file.text.char_indices().map(|(idx, _)| idx).collect();
        for &cut in &boundaries {
            compile_and_render(&file.name, &file.text[..cut]);
        }
        for window in boundaries.windows(2).step_by(2) {
            let (start, end) = (window[0], window[1]);
            let damaged = format!("{}{}", &file.text[..start], &file.text[end..]);
            compile_and_render(&file.name, &damaged);
        }
    }
}
