//! Tests of the formatter, [`portcullis_lang::fmt`]: golden files in `corpus/fmt/` with their
//! snapshots, one-line cases, and for every file of the `ok` and `fmt` corpora and the example
//! policy set: formatting is idempotent, keeps every comment, and leaves the IR unchanged. A
//! property test re-spaces those files at random and checks that the layout does not depend on
//! the input's spacing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;

use common::{corpus_dir, examples_dir, lang_dir, snapshot_settings};
use portcullis_lang::fmt::{FormatError, MAX_WIDTH, comments, format_source};
use portcullis_lang::ir::PolicySet;
use portcullis_lang::lexer;
use portcullis_lang::source::{SourceFile, read_policy_path};
use portcullis_lang::{compile, render};
use proptest::prelude::*;

fn format(text: &str) -> String {
    match format_source("input.gate", text) {
        Ok(formatted) => formatted,
        Err(FormatError::Syntax { diagnostics, .. }) => {
            panic!("does not parse:\n{}", render(&diagnostics, false))
        }
        Err(error) => panic!("{error}"),
    }
}

/// Formats `input` and compares the result with `expected`, then checks that formatting the
/// result again changes nothing.
fn check(input: &str, expected: &str) {
    let formatted = format(input);
    assert_eq!(formatted, expected, "formatting\n{input}");
    assert_eq!(format(&formatted), formatted, "formatting twice");
}

fn compile_ok(files: &[SourceFile]) -> PolicySet {
    compile(files).unwrap_or_else(|diags| panic!("{}", render(&diags, false)))
}

/// The policy sets whose files are formatted in the tests: each `ok` and `fmt` corpus file on
/// its own, and the example policy set as a whole.
fn policy_sets() -> Vec<Vec<SourceFile>> {
    let mut sets = Vec::new();
    for corpus in ["ok", "fmt"] {
        sets.extend(
            read_policy_path(&corpus_dir(corpus))
                .unwrap()
                .into_iter()
                .map(|file| vec![file]),
        );
    }
    sets.push(read_policy_path(&examples_dir()).unwrap());
    sets
}

/// The set with its file `file_idx` replaced by `text`.
fn with_text(set: &[SourceFile], file_idx: usize, text: &str) -> Vec<SourceFile> {
    let mut files = set.to_vec();
    files[file_idx].text = text.to_owned();
    files
}

#[test]
fn golden_files() {
    let files = read_policy_path(&corpus_dir("fmt")).unwrap();
    assert!(
        files.len() >= 4,
        "the fmt corpus has only {} files",
        files.len()
    );
    for file in files {
        let path = Path::new(&file.name);
        let name = path.file_stem().unwrap().to_string_lossy().into_owned();
        let formatted = format(&file.text);
        assert_ne!(
            formatted, file.text,
            "{name} is already formatted; it tests nothing"
        );
        // A token longer than a line cannot be broken; a case with one is a `check` instead.
        for line in formatted.lines() {
            assert!(line.chars().count() <= MAX_WIDTH, "{name}: {line}");
        }
        snapshot_settings(path).bind(|| insta::assert_snapshot!(name, formatted));
    }
}

#[test]
fn formatting_is_idempotent_and_keeps_comments_and_meaning() {
    let sets = policy_sets();
    assert!(sets.len() >= 10, "only {} policy sets", sets.len());
    for set in sets {
        let before = compile_ok(&set);
        for (file_idx, file) in set.iter().enumerate() {
            let once = format(&file.text);
            assert_eq!(format(&once), once, "{} is not stable", file.name);
            assert_eq!(comments(&once), comments(&file.text), "{}", file.name);
            let after = compile_ok(&with_text(&set, file_idx, &once));
            assert_eq!(
                after, before,
                "formatting {} changed its meaning",
                file.name
            );
            assert!(once.is_empty() || once.ends_with('\n'), "{}", file.name);
            for line in once.lines() {
                assert_eq!(
                    line.trim_end(),
                    line,
                    "trailing whitespace in {}",
                    file.name
                );
            }
            assert!(!once.contains("\n\n\n"), "two blank lines in {}", file.name);
        }
    }
}

/// Checks that every policy file under `dir` is as `policyc fmt` writes it.
fn assert_formatted(dir: &Path) {
    for file in read_policy_path(dir).unwrap() {
        assert_eq!(
            format(&file.text),
            file.text,
            "run `policyc fmt` on {}",
            file.name
        );
    }
}

#[test]
fn example_policies_are_formatted() {
    assert_formatted(&examples_dir());
}

#[test]
fn declarations_are_multi_line_and_small_inner_blocks_stay_on_one_line() {
    check(
        "target t { http { host = \"h\" } } workload w { oidc { } kubernetes { namespace == \
         \"n\" } }",
        "target t {\n  http { host = \"h\" }\n}\n\nworkload w {\n  oidc { }\n  kubernetes { \
         namespace == \"n\" }\n}\n",
    );
    check(
        "target t { http { host = \"h\" port = 80 } }",
        "target t {\n  http {\n    host = \"h\"\n    port = 80\n  }\n}\n",
    );
    check(
        "permit p { workload w target t }",
        "permit p {\n  workload w\n  target t\n}\n",
    );
}

#[test]
fn test_corpus_is_formatted() {
    assert_formatted(&corpus_dir("test"));
}

#[test]
fn a_test_endpoint_keeps_its_protocol_on_its_line() {
    check(
        "test t { request { oidc { } endpoint https { host = \"a\" } } expect deny }",
        "test t {\n  request {\n    oidc { }\n    endpoint https { host = \"a\" }\n  }\n  \
         expect deny\n}\n",
    );
}

#[test]
fn clause_keywords_start_lines_but_not_inside_paths() {
    check(
        "permit p { workload any target any when target.port == 1 && target.host != \"x\" }",
        "permit p {\n  workload any\n  target any\n  when target.port == 1 && target.host != \
         \"x\"\n}\n",
    );
    check(
        "forbid f { workload any github }",
        "forbid f {\n  workload any github\n}\n",
    );
}

#[test]
fn operators_brackets_and_commas_are_spaced_canonically() {
    check(
        "condition c { ! ( a.b==\"x\" ) ||x in[ 1 ,2 ]&&y<=3&&z in 1 .. 5 }",
        "condition c {\n  !(a.b == \"x\") || x in [1, 2] && y <= 3 && z in 1..5\n}\n",
    );
}

#[test]
fn annotations_sit_on_their_own_lines_right_above_their_rule() {
    check(
        "@a(\"x\") @b( \"y\" )\n\npermit p { workload w target t }\n@c(\"z\") forbid f { }",
        "@a(\"x\")\n@b(\"y\")\npermit p {\n  workload w\n  target t\n}\n\n\
         @c(\"z\")\nforbid f { }\n",
    );
}

#[test]
fn long_conditions_break_at_the_loosest_chain() {
    let operand = "client.github.repository == \"acme/a-fairly-long-repository-name\"";
    let input = format!("forbid f {{ when {operand} && {operand} || {operand} }}");
    let expected =
        format!("forbid f {{\n  when {operand}\n      && {operand}\n    || {operand}\n}}\n");
    check(&input, &expected);
    let input = format!("forbid f {{ when {operand} && {operand} }}");
    let expected = format!("forbid f {{\n  when {operand}\n    && {operand}\n}}\n");
    check(&input, &expected);
}

#[test]
fn lines_fit_in_the_width_where_there_is_a_chain_to_break() {
    let operand = "repository == \"acme/billing\"";
    let chain = [operand; 8].join(" && ");
    let formatted = format(&format!("workload w {{ github {{ {chain} }} }}"));
    for line in formatted.lines() {
        assert!(line.chars().count() <= MAX_WIDTH, "{line}");
    }
    assert_eq!(formatted.lines().count(), 4 + 8);
}

#[test]
fn a_set_that_does_not_fit_has_one_element_per_line_and_a_trailing_comma() {
    let methods = [
        "GET", "HEAD", "OPTIONS", "PROPFIND", "REPORT", "SEARCH", "MKCOL", "LOCK", "UNLOCK",
        "COPY", "MOVE",
    ];
    let long_set = methods.map(|method| format!("\"{method}\"")).join(", ");
    let elements = methods
        .map(|method| format!("    \"{method}\",\n"))
        .concat();
    check(
        &format!("permit p {{ workload w target t when request.action in [{long_set}] }}"),
        &format!(
            "permit p {{\n  workload w\n  target t\n  when request.action in [\n{elements}  ]\n}}\n"
        ),
    );
    check(
        "credential c { postgres_role { grant = [\n\"a\",\n\"b\",\n] ttl = 15m } }",
        "credential c {\n  postgres_role {\n    grant = [\"a\", \"b\"]\n    ttl = 15m\n  }\n}\n",
    );
    check(
        "condition c { request.time within [mon, tue,] in \"UTC\" }",
        "condition c {\n  request.time within [mon, tue] in \"UTC\"\n}\n",
    );
}

#[test]
fn parentheses_that_do_not_fit_hold_their_condition_on_lines_of_their_own() {
    let operand = "client.github.repository == \"acme/a-fairly-long-repository-name\"";
    let input =
        format!("forbid f {{ when !({operand} || ({operand} && {operand})) && {operand} }}");
    let expected = format!(
        "forbid f {{\n  when !(\n    {operand}\n    || (\n      {operand}\n      && \
         {operand}\n    )\n  )\n    && {operand}\n}}\n"
    );
    check(&input, &expected);
}

#[test]
fn parentheses_around_parentheses_stay_together() {
    let operand = "client.github.repository == \"acme/a-fairly-long-repository-name\"";
    check(
        &format!("forbid f {{ when ((({operand} || {operand}))) }}"),
        &format!("forbid f {{\n  when (((\n    {operand}\n    || {operand}\n  )))\n}}\n"),
    );
}

#[test]
fn a_comment_inside_brackets_breaks_them() {
    check(
        "condition c { x in [1, // one\n 2] && !(y // why\n == 3) }",
        "condition c {\n  x in [\n    1, // one\n    2,\n  ] && !(\n    y // why\n      == 3\n  \
         )\n}\n",
    );
    check(
        "condition c { x in [1 // before the comma\n , 2 // last\n // at the end\n ] }",
        "condition c {\n  x in [\n    1, // before the comma\n    2, // last\n    // at the end\n  \
         ]\n}\n",
    );
}

#[test]
fn lines_fit_in_the_width_where_there_are_brackets_to_break() {
    for n_elements in 1..40 {
        let set: Vec<String> = (0..n_elements)
            .map(|n| format!("\"10.{n}.0.0/16\""))
            .collect();
        let set = set.join(", ");
        for input in [
            format!("forbid f {{ when has request.source_ip && request.source_ip in [{set}] }}"),
            format!("credential c {{ postgres_role {{ grant = [{set}] ttl = 15m }} }}"),
            format!(
                "forbid f {{ when !(request.source_ip in [{set}] || request.action == \"GET\") }}"
            ),
        ] {
            let formatted = format(&input);
            assert_eq!(format(&formatted), formatted, "formatting twice");
            for line in formatted.lines() {
                assert!(line.chars().count() <= MAX_WIDTH, "{line}");
            }
        }
    }
}

#[test]
fn a_string_longer_than_a_line_stays_whole() {
    let long = format!("\"/{}\"", "a".repeat(MAX_WIDTH));
    check(
        &format!("condition c {{ request.resource in [{long}] }}"),
        &format!("condition c {{\n  request.resource in [{long}]\n}}\n"),
    );
    check(
        &format!("condition c {{ request.resource in [{long}, \"/b\"] }}"),
        &format!("condition c {{\n  request.resource in [\n    {long},\n    \"/b\",\n  ]\n}}\n"),
    );
}

#[test]
fn blank_lines_are_collapsed_kept_between_items_and_dropped_elsewhere() {
    check(
        "\n\n// a\n\n\n\n// b\n\n\nworkload w {\n\n  github { }\n\n\n  oidc { }\n\n}\n\n\n",
        "// a\n\n// b\n\nworkload w {\n  github { }\n\n  oidc { }\n}\n",
    );
    check(
        "permit p {\n  workload w\n\n  target t\n  when a\n\n  && b\n}",
        "permit p {\n  workload w\n\n  target t\n  when a && b\n}\n",
    );
}

#[test]
fn comments_stay_where_they_are() {
    check("// only a comment   ", "// only a comment\n");
    check(
        "workload w { // the workload\n  github { } // an alternative\n  // the end\n}",
        "workload w { // the workload\n  github { } // an alternative\n  // the end\n}\n",
    );
    check(
        "condition c { a // first\n // between\n && b }",
        "condition c {\n  a // first\n    // between\n    && b\n}\n",
    );
}

#[test]
fn comments_before_an_opening_brace_move_inside_the_block() {
    check(
        "workload w // trailing\n{ github { } }",
        "workload w { // trailing\n  github { }\n}\n",
    );
    check(
        "workload w\n// own line\n{ github // inner\n{ } }",
        "workload w {\n  // own line\n  github { // inner\n  }\n}\n",
    );
}

#[test]
fn windows_line_endings_and_tabs_are_normalised() {
    check(
        "workload w {\r\n\tgithub { }\r\n} // done\r\n",
        "workload w {\n  github { }\n} // done\n",
    );
}

#[test]
fn an_empty_file_stays_empty() {
    check("", "");
    check(" \n\n\t", "");
}

#[test]
fn a_file_that_does_not_parse_is_refused_with_its_diagnostics() {
    let result = format_source("broken.gate", "workload w { github { repository == } }");
    let Err(FormatError::Syntax { name, diagnostics }) = result else {
        panic!("formatted a broken file: {result:?}")
    };
    assert_eq!(name, "broken.gate");
    let rendered = render(&diagnostics, false);
    assert!(rendered.contains("broken.gate:1:37"), "{rendered}");
    let error = format_source("lex.gate", "workload w { github { x == \"a } }").unwrap_err();
    assert_eq!(error.to_string(), "`lex.gate` does not parse");
}

#[test]
fn names_unknown_to_the_checker_are_formatted() {
    check(
        "permit p{workload nobody target nothing}",
        "permit p {\n  workload nobody\n  target nothing\n}\n",
    );
}

/// A small deterministic generator, so that a failing case is reproduced by its seed.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }

    fn horizontal(&mut self, min: u64) -> String {
        let n = min + self.below(4);
        (0..n)
            .map(|_| if self.below(4) == 0 { '\t' } else { ' ' })
            .collect()
    }
}

/// Tokens between which the formatter's spacing does not depend on the source, so that
/// whitespace may be inserted where there was none.
fn may_insert_space(left: &str, right: &str) -> bool {
    matches!(left, "." | ".." | "," | "(" | "[" | "!" | "@")
        || matches!(right, "." | ".." | "," | ")" | "]")
}

/// Rewrites the whitespace of `text` at random without changing its tokens, its comments or
/// its blank lines: lines are joined and split, spaces and tabs added, and blank lines doubled.
/// With `insert_comments`, a numbered comment is added at some line ends.
fn respace(text: &str, rng: &mut Rng, insert_comments: bool) -> String {
    let tokens = lexer::lex(text).tokens;
    let mut out = String::new();
    let mut prev_end = 0;
    let mut n_inserted = 0;
    for idx in 0..=tokens.len() {
        let (start, end) = tokens
            .get(idx)
            .map_or((text.len(), text.len()), |(s, _, e)| (*s, *e));
        let gap = &text[prev_end..start];
        let between_tokens = idx > 0 && idx < tokens.len();
        let mut rest = gap;
        let mut after_token = idx > 0;
        if gap.is_empty() && between_tokens {
            let left = &text[tokens[idx - 1].0..prev_end];
            if may_insert_space(left, &text[start..end]) && rng.below(2) == 0 {
                out.push_str(&rng.horizontal(1));
            }
        }
        while !rest.is_empty() {
            let comment_start = rest.find("//").unwrap_or(rest.len());
            let (space, after) = rest.split_at(comment_start);
            if !space.is_empty() {
                let newlines = space.matches('\n').count();
                let alone = between_tokens && comment_start == rest.len() && after_token;
                let insert = insert_comments && after_token && newlines > 0 && rng.below(3) == 0;
                if insert {
                    n_inserted += 1;
                    out.push_str(&format!(" // inserted-{n_inserted}"));
                }
                let n_newlines = match newlines {
                    0 if alone && rng.below(3) == 0 => 1,
                    0 => 0,
                    1 if alone && !insert && rng.below(3) == 0 => 0,
                    1 => 1,
                    _ => 2 + rng.below(2) as usize,
                };
                out.push_str(&rng.horizontal(u64::from(n_newlines == 0)));
                for _ in 0..n_newlines {
                    out.push('\n');
                    out.push_str(&rng.horizontal(0));
                }
            }
            let comment_end = after.find('\n').unwrap_or(after.len());
            out.push_str(&after[..comment_end]);
            rest = &after[comment_end..];
            after_token = false;
        }
        out.push_str(&text[start..end]);
        prev_end = end;
    }
    out
}

/// Removes the comments `respace` inserted from formatted text.
fn strip_inserted_comments(text: &str) -> String {
    let mut out = String::new();
    for line in text.lines() {
        if line.trim_start().starts_with("// inserted-") {
            continue;
        }
        let code = line.find(" // inserted-").map_or(line, |at| &line[..at]);
        out.push_str(code);
        out.push('\n');
    }
    out
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(96))]

    #[test]
    fn layout_does_not_depend_on_spacing(set_pick in any::<usize>(), seed in any::<u64>()) {
        let sets = policy_sets();
        let set = &sets[set_pick % sets.len()];
        let file_idx = (seed as usize) % set.len();
        let original = &set[file_idx].text;
        let mut rng = Rng(seed);
        let respaced = respace(original, &mut rng, false);
        prop_assert_eq!(comments(&respaced), comments(original));
        prop_assert_eq!(format(&respaced), format(original), "respaced:\n{}", respaced);
    }

    #[test]
    fn inserted_comments_are_kept_and_change_nothing_else(
        set_pick in any::<usize>(),
        seed in any::<u64>(),
    ) {
        let sets = policy_sets();
        let set = &sets[set_pick % sets.len()];
        let file_idx = (seed as usize) % set.len();
        let original = &set[file_idx].text;
        let mut rng = Rng(seed);
        let commented = respace(original, &mut rng, true);
        let formatted = format(&commented);
        prop_assert_eq!(format(&formatted), formatted.clone(), "commented:\n{}", commented);
        prop_assert_eq!(comments(&formatted), comments(&commented));
        let before = compile_ok(set);
        prop_assert_eq!(compile_ok(&with_text(set, file_idx, &formatted)), before);
        let stripped = format(&strip_inserted_comments(&formatted));
        prop_assert_eq!(stripped, format(original), "formatted:\n{}", formatted);
    }
}

#[test]
fn every_corpus_file_is_refused_as_broken_or_formats_stably() {
    let corpus = lang_dir().join("tests/corpus");
    let mut n_refused = 0;
    for entry in std::fs::read_dir(&corpus).unwrap() {
        for file in std::fs::read_dir(entry.unwrap().path()).unwrap() {
            let path = file.unwrap().path();
            let Ok(text) = String::from_utf8(std::fs::read(&path).unwrap()) else {
                continue;
            };
            let name = path.display().to_string();
            match format_source(&name, &text) {
                Ok(once) => {
                    assert_eq!(format(&once), once, "{name} is not stable");
                    assert_eq!(comments(&once), comments(&text), "{name}");
                }
                Err(FormatError::Syntax { diagnostics, .. }) => {
                    assert!(!diagnostics.is_empty(), "{name}");
                    n_refused += 1;
                }
                Err(error) => panic!("{error}"),
            }
        }
    }
    assert!(n_refused >= 5, "only {n_refused} corpus files do not parse");
}
