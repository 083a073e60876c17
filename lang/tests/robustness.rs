//! Property tests of the Gate front end: whatever the input, `compile` returns a policy set or
//! at least one diagnostic, never panics, and every diagnostic renders; every well-formed
//! policy set the generator writes compiles cleanly and its bundle round-trips.
//!
//! 256 cases per property by default, so that `cargo test` stays fast. For a long run:
//! `PROPTEST_CASES=100000 cargo test -p portcullis-lang --release --test robustness`.
//! A failing case prints its seed and its source text; proptest keeps the seed in
//! `proptest-regressions/` so the next run tries it first.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

#[path = "robustness/policy_gen.rs"]
mod policy_gen;

use policy_gen::{PolicyGen, PolicyShape, Rng, Scope, random_token_text, shapes_below};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::diagnostic::Severity;
use portcullis_lang::ir::PolicySet;
use portcullis_lang::schema::ProviderKind;
use portcullis_lang::{Diagnostic, LintOptions, SourceFile, analyze, compile, render};
use proptest::prelude::*;

/// Compiles `files` and checks the front end's contract: a policy set whose bundle builds and
/// round-trips, or at least one diagnostic, each pointing into its file and each renderable.
fn compile_any(files: &[SourceFile]) -> Result<PolicySet, Vec<Diagnostic>> {
    let result = compile(files);
    match &result {
        Ok(set) => {
            round_trip(set, files);
            lint_clean_of_errors(files);
        }
        Err(diags) => check_diagnostics(diags, files),
    }
    result
}

/// What `policyc check` runs on a set that compiles: the lints add warnings, never errors,
/// and every warning renders.
fn lint_clean_of_errors(files: &[SourceFile]) {
    let outcome = analyze(files, &LintOptions::default());
    assert!(outcome.set.is_some(), "analyze lost the policy set");
    assert_eq!(
        outcome.count(Severity::Error),
        0,
        "{}",
        render(&outcome.diagnostics, false)
    );
    for diag in &outcome.diagnostics {
        assert!(!render(std::slice::from_ref(diag), false).is_empty());
    }
}

fn check_diagnostics(diags: &[Diagnostic], files: &[SourceFile]) {
    assert!(!diags.is_empty(), "Err without diagnostics");
    for diag in diags {
        let file = files
            .iter()
            .find(|file| file.name == diag.file_name())
            .unwrap_or_else(|| panic!("{}: unknown file `{}`", diag.code(), diag.file_name()));
        assert!(
            diag.offset() <= file.text.len(),
            "{}: offset {} past the end of `{}` ({} bytes)",
            diag.code(),
            diag.offset(),
            file.name,
            file.text.len()
        );
        assert!(!diag.message().is_empty(), "{}: empty message", diag.code());
    }
    // Each diagnostic renders as at least its message.
    let rendered = render(diags, false);
    assert!(rendered.lines().count() >= diags.len());
    render(&diags[..1], true);
}

/// A compiled set either builds a bundle that loads back byte for byte, or fails with a typed
/// error (a limit of the emitter); it never panics.
fn round_trip(set: &PolicySet, files: &[SourceFile]) {
    let Ok(bundle) = Bundle::from_policy_set(set) else {
        return;
    };
    let bytes = bundle.to_bytes();
    let loaded = Bundle::from_bytes(&bytes)
        .unwrap_or_else(|error| panic!("bundle does not load back: {error}\n{}", text(files)));
    assert_eq!(loaded.hash(), bundle.hash(), "hash changed on load");
    assert_eq!(loaded.to_bytes(), bytes, "bytes changed on load");
}

fn text(files: &[SourceFile]) -> String {
    files
        .iter()
        .map(|file| format!("// {}\n{}", file.name, file.text))
        .collect()
}

/// Splits `text` into up to three files at char boundaries chosen by `cuts`.
fn split_files(text: &str, cuts: &[usize]) -> Vec<SourceFile> {
    let mut bounds: Vec<usize> = cuts
        .iter()
        .map(|cut| {
            let mut at = cut % (text.len() + 1);
            while !text.is_char_boundary(at) {
                at -= 1;
            }
            at
        })
        .collect();
    bounds.push(0);
    bounds.push(text.len());
    bounds.sort_unstable();
    bounds
        .windows(2)
        .enumerate()
        .map(|(idx, pair)| SourceFile::new(format!("f{idx}.gate"), &text[pair[0]..pair[1]]))
        .collect()
}

/// A small well-formed policy set from `seed`.
fn generated(seed: u64, shape: PolicyShape) -> Vec<SourceFile> {
    let mut rng = Rng::new(seed);
    PolicyGen::new(&mut rng, shape).files()
}

fn small_shape() -> impl Strategy<Value = PolicyShape> {
    shapes_below(PolicyShape {
        workloads: 6,
        targets: 6,
        rules: 12,
        files: 4,
        max_depth: 5,
        credentials: 4,
        conditions: 10,
    })
}

proptest! {
    /// (a) Arbitrary bytes, read as lossy UTF-8, in one to three files.
    #[test]
    fn arbitrary_bytes_never_panic(
        bytes in proptest::collection::vec(any::<u8>(), 0..2000),
        cuts in proptest::collection::vec(any::<usize>(), 0..3),
    ) {
        let text = String::from_utf8_lossy(&bytes);
        let _ = compile_any(&split_files(&text, &cuts));
    }

    /// (a) Arbitrary text made of characters the lexer cares about, which reaches the parser
    /// far more often than random bytes do.
    #[test]
    fn arbitrary_gate_characters_never_panic(
        text in "[a-z_{}()\\[\\]=!&|.,@<>\"\\\\ \n0-9-]{0,400}",
    ) {
        let _ = compile_any(&[SourceFile::new("chars.gate", text)]);
    }

    /// (b) Sequences of real tokens: keywords, claim names, strings, integers, operators.
    #[test]
    fn token_sequences_never_panic(seed in any::<u64>(), len in 0usize..200) {
        let mut rng = Rng::new(seed);
        let text = random_token_text(&mut rng, len);
        let _ = compile_any(&[SourceFile::new("tokens.gate", text)]);
    }

    /// The formatter, on the same token sequences, formats or refuses; it never panics.
    #[test]
    fn token_sequences_never_panic_the_formatter(seed in any::<u64>(), len in 0usize..200) {
        let mut rng = Rng::new(seed);
        let text = random_token_text(&mut rng, len);
        let _ = portcullis_lang::fmt::format_source("tokens.gate", &text);
    }

    /// (b) A well-formed policy set with a run of random tokens spliced in: errors deep inside
    /// otherwise valid declarations, where recovery and the checker both have work to do.
    #[test]
    fn spliced_tokens_never_panic(
        seed in any::<u64>(),
        shape in small_shape(),
        at in any::<usize>(),
        len in 1usize..12,
    ) {
        let mut files = generated(seed, shape);
        let mut rng = Rng::new(seed ^ 0x5eed);
        let noise = random_token_text(&mut rng, len);
        let n_files = files.len();
        let file = &mut files[at % n_files];
        let mut cut = at % (file.text.len() + 1);
        while !file.text.is_char_boundary(cut) {
            cut -= 1;
        }
        file.text.insert_str(cut, &noise);
        let _ = compile_any(&files);
    }

    /// (c) Generated well-formed policy sets compile without diagnostics, and their bundles
    /// round-trip with the same hash.
    #[test]
    fn generated_policy_sets_compile(seed in any::<u64>(), shape in small_shape()) {
        let files = generated(seed, shape);
        let set = match compile(&files) {
            Ok(set) => set,
            Err(diags) => panic!("{}\n{}", render(&diags, false), text(&files)),
        };
        prop_assert_eq!(set.workloads.len(), shape.workloads);
        prop_assert_eq!(set.targets.len(), shape.targets);
        prop_assert_eq!(set.rules.len(), shape.rules);
        let bundle = Bundle::from_policy_set(&set)
            .unwrap_or_else(|error| panic!("{error}\n{}", text(&files)));
        let loaded = Bundle::from_bytes(&bundle.to_bytes()).unwrap();
        prop_assert_eq!(loaded.hash(), bundle.hash());
        let again = Bundle::from_policy_set(&compile(&files).unwrap()).unwrap();
        prop_assert_eq!(again.hash(), bundle.hash(), "compilation is not deterministic");
        lint_clean_of_errors(&files);
    }

    /// (c) Every condition the generator writes type-checks in both of its scopes, at depths
    /// beyond what the policy-set property reaches.
    #[test]
    fn generated_conditions_check(seed in any::<u64>(), depth in 0usize..8) {
        let mut rng = Rng::new(seed);
        let kind = *rng.pick(&ProviderKind::ALL);
        let mut generator = PolicyGen::new(&mut rng, PolicyShape::realistic(1));
        let bare = generator.condition(Scope::Bare(kind), depth);
        let when = generator.condition(Scope::Rule, depth);
        let source = format!(
            "workload w {{ {kind} {{ {bare} }} }}\ntarget t {{ http {{ host = \"h\" }} }}\n\
             permit p {{ workload w target t when {when} }}\n"
        );
        let files = [SourceFile::new("condition.gate", source)];
        if let Err(diags) = compile(&files) {
            panic!("{}\n{}", render(&diags, false), text(&files));
        }
    }
}

/// The stack the nesting tests run on: 2 MiB, the default for spawned threads, test threads
/// and tokio workers, where the compiler must run in a debug build too. The parser's operator
/// limit bounds every recursion below it (`corpus/crash/` holds inputs that once overflowed).
const NESTING_STACK: usize = 2 * 1024 * 1024;

/// Runs `work` on a thread with [`NESTING_STACK`] bytes of stack.
fn on_large_stack(work: impl FnOnce() + Send + 'static) {
    std::thread::Builder::new()
        .stack_size(NESTING_STACK)
        .spawn(work)
        .unwrap()
        .join()
        .unwrap();
}

/// Nesting at and around the parser's operator limit and the emitter's nesting limit: a
/// diagnostic or a typed bundle error, never a panic.
#[test]
fn deep_nesting_is_bounded() {
    on_large_stack(|| {
        for depth in [10, 255, 256, 257, 300, 999, 1000, 1001, 5000, 50_000] {
            for (open, close) in [("!", ""), ("(", ")"), ("!(", ")")] {
                let condition = format!("{}true{}", open.repeat(depth), close.repeat(depth));
                let source = format!("forbid deep {{ when {condition} }}\n");
                let _ = compile_any(&[SourceFile::new("deep.gate", source)]);
            }
            let chain = vec!["true"; depth].join(" && ");
            let source = format!("forbid long {{ when {chain} }}\n");
            let _ = compile_any(&[SourceFile::new("long.gate", source)]);
        }
    });
}

/// Inputs that once crashed the front end (`corpus/crash/*.gate`): each compiles to a policy
/// set or diagnostics.
#[test]
fn crash_corpus_does_not_crash() {
    let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("tests/corpus/crash");
    let files = portcullis_lang::read_policy_path(&dir).unwrap();
    assert!(!files.is_empty());
    on_large_stack(move || {
        for file in files {
            let _ = compile_any(std::slice::from_ref(&file));
        }
    });
}

/// What `policyc check` passes, `policyc build` builds: nesting beyond the emitter's limit
/// (`bytecode::MAX_NESTING`) is refused by the checker with a located diagnostic, and the
/// deepest nesting it accepts builds.
#[test]
fn nesting_the_checker_accepts_always_builds() {
    let limit = portcullis_lang::bytecode::MAX_NESTING;
    let too_deep = format!("forbid deep {{ when {}true }}\n", "!".repeat(limit + 2));
    let diags = compile(&[SourceFile::new("deep.gate", too_deep)]).unwrap_err();
    assert_eq!(diags.len(), 1);
    assert_eq!(diags[0].code().as_str(), "gate::E0008");

    let deepest = portcullis_lang::parser::MAX_OPERATORS;
    let source = format!("forbid deep {{ when {}true }}\n", "!".repeat(deepest));
    let set = compile(&[SourceFile::new("deep.gate", source)]).unwrap();
    assert!(Bundle::from_policy_set(&set).is_ok());
}

/// The generator's realistic shape, as the benchmark uses it, compiles at a modest size.
#[test]
fn realistic_policy_set_compiles() {
    let files = generated(7, PolicyShape::realistic(600));
    assert_eq!(files.len(), 3);
    let set = compile(&files).unwrap_or_else(|diags| panic!("{}", render(&diags, false)));
    assert_eq!(set.rules.len(), 600);
    assert_eq!(set.workloads.len(), 150);
    assert_eq!(set.targets.len(), 60);
    Bundle::from_policy_set(&set).unwrap();
}

/// A file of garbage gets at most 50 reports and one that counts the rest, so that reporting
/// stays linear in the file's size.
#[test]
fn a_garbage_file_gets_a_bounded_number_of_reports() {
    let garbage: String = (0..60_000)
        .map(|i| if i % 2 == 0 { '$' } else { '\n' })
        .collect();
    let diags = compile(&[SourceFile::new("garbage.gate", garbage)]).unwrap_err();
    assert_eq!(diags.len(), 51);
    let last = diags.last().unwrap();
    assert_eq!(last.code().as_str(), "gate::E0010");
    assert!(
        last.message().starts_with("29950 more errors"),
        "{}",
        last.message()
    );
}
