//! Fuzz target over the whole Gate front end: lexer, parser, checker and lints, as
//! `policyc check` runs them.
//!
//! In: arbitrary bytes, read as lossy UTF-8 and split into up to three files at NUL
//! characters. Out: nothing; a panic, a stack overflow or a timeout is the finding. Every
//! diagnostic is rendered too, since rendering slices the source by the diagnostic's spans,
//! and whatever compiles is built into a bundle and loaded back.

#![no_main]

use libfuzzer_sys::fuzz_target;
use portcullis_lang::bundle::Bundle;
use portcullis_lang::{LintOptions, SourceFile, analyze, render};

fuzz_target!(|data: &[u8]| {
    let text = String::from_utf8_lossy(data);
    let files = split(&text);
    let outcome = analyze(&files, &LintOptions::default());
    let _ = render(&outcome.diagnostics, false);
    match outcome.set {
        Some(set) => {
            // A limit of the emitter is a typed error; only a panic counts.
            if let Ok(bundle) = Bundle::from_policy_set(&set) {
                let loaded = Bundle::from_bytes(&bundle.to_bytes());
                assert!(loaded.is_ok_and(|loaded| loaded.hash() == bundle.hash()));
            }
        }
        None => assert!(
            !outcome.diagnostics.is_empty(),
            "no policy set and no diagnostic"
        ),
    }
});

/// Splits at each NUL character, at most three files, so that the fuzzer can explore
/// declarations spread across files without a structured input format.
fn split(text: &str) -> Vec<SourceFile> {
    text.splitn(3, '\0')
        .enumerate()
        .map(|(idx, part)| SourceFile::new(format!("fuzz{idx}.gate"), part))
        .collect()
}
