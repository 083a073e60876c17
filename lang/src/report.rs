//! Machine-readable reports of `policyc check`: a JSON document of its own, and SARIF 2.1.0 for
//! code-scanning tools such as GitHub's.
//!
//! In: the diagnostics of each policy set checked, and the paths that could not be read. Out:
//! the text of one document. Pure: the caller reads the files and passes the working directory
//! that SARIF locations are made relative to. The SARIF rule of each code takes its name and
//! descriptions from `docs/diagnostics.md`, built in at compile time, so the documentation and
//! the report cannot drift apart.
//!
//! Positions: lines are 1-based. JSON columns are 1-based and count characters (Unicode scalar
//! values); SARIF columns are 1-based and count UTF-16 code units, SARIF's default
//! `columnKind`. Both end columns are exclusive: the column just after the last character.

use std::collections::BTreeMap;
use std::path::{Component, Path};

use serde_json::{Value, json};

use crate::diagnostic::{self, Code, Diagnostic, Label, Severity};

/// The version of the JSON document's layout; it changes only when a field changes meaning or
/// goes away.
pub const JSON_FORMAT_VERSION: u32 = 1;

/// The SARIF schema the document declares.
pub const SARIF_SCHEMA: &str =
    "https://docs.oasis-open.org/sarif/sarif/v2.1.0/errata01/os/schemas/sarif-schema-2.1.0.json";

const DIAGNOSTICS_DOC: &str = include_str!("../../docs/diagnostics.md");

/// Where the diagnostics documentation lives, relative to the repository root.
const DIAGNOSTICS_DOC_PATH: &str = "docs/diagnostics.md";

/// One policy set that was read and checked.
#[derive(Debug, Clone, Copy)]
pub struct CheckedSet<'a> {
    /// The path given on the command line.
    pub path: &'a str,
    pub n_files: usize,
    pub diagnostics: &'a [Diagnostic],
}

/// A path that could not be read, with why.
#[derive(Debug, Clone)]
pub struct Unreadable<'a> {
    pub path: &'a str,
    pub message: String,
}

/// Everything one run of `policyc check` found.
#[derive(Debug, Clone)]
pub struct CheckRun<'a> {
    /// The version of `policyc`.
    pub tool_version: &'a str,
    pub sets: Vec<CheckedSet<'a>>,
    pub unreadable: Vec<Unreadable<'a>>,
}

impl CheckRun<'_> {
    fn diagnostics(&self) -> impl Iterator<Item = (&str, &Diagnostic)> {
        self.sets
            .iter()
            .flat_map(|set| set.diagnostics.iter().map(move |diag| (set.path, diag)))
    }

    /// How many diagnostics of `severity` the run found, over every policy set.
    pub fn count(&self, severity: Severity) -> usize {
        diagnostic::count(self.diagnostics().map(|(_, diag)| diag), severity)
    }
}

/// A position in a file: 1-based line, 1-based columns in characters and in UTF-16 code units.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Position {
    pub line: usize,
    pub column: usize,
    pub column_utf16: usize,
}

/// The position of byte `offset` in `text`; an offset inside a character or past the end is
/// taken as the start of that character or the end of the text.
pub fn position(text: &str, offset: usize) -> Position {
    let mut offset = offset.min(text.len());
    while !text.is_char_boundary(offset) {
        offset -= 1;
    }
    let before = text.get(..offset).unwrap_or("");
    let line_start = before.rfind('\n').map_or(0, |idx| idx + 1);
    let line_text = before.get(line_start..).unwrap_or("");
    Position {
        line: before.matches('\n').count() + 1,
        column: line_text.chars().count() + 1,
        column_utf16: line_text.encode_utf16().count() + 1,
    }
}

/// The JSON document: every diagnostic with its positions, and a summary.
pub fn to_json(run: &CheckRun<'_>) -> String {
    let diagnostics: Vec<Value> = run
        .diagnostics()
        .map(|(set_path, diag)| json_diagnostic(set_path, diag))
        .collect();
    let sets: Vec<Value> = run
        .sets
        .iter()
        .map(|set| {
            let count = |severity| diagnostic::count(set.diagnostics, severity);
            json!({
                "path": set.path,
                "files": set.n_files,
                "errors": count(Severity::Error),
                "warnings": count(Severity::Warning),
            })
        })
        .collect();
    let unreadable: Vec<Value> = run
        .unreadable
        .iter()
        .map(|entry| json!({ "path": entry.path, "message": entry.message }))
        .collect();
    let document = json!({
        "version": JSON_FORMAT_VERSION,
        "tool": { "name": "policyc", "version": run.tool_version },
        "policy_sets": sets,
        "diagnostics": diagnostics,
        "unreadable": unreadable,
        "summary": {
            "policy_sets": run.sets.len(),
            "files": run.sets.iter().map(|set| set.n_files).sum::<usize>(),
            "errors": run.count(Severity::Error),
            "warnings": run.count(Severity::Warning),
            "unreadable": run.unreadable.len(),
        },
    });
    pretty(&document)
}

/// One diagnostic as the JSON document lists it; `policyc test`'s document lists them alike.
pub(crate) fn json_diagnostic(set_path: &str, diag: &Diagnostic) -> Value {
    let spans = diag.spans();
    let primary = spans.first().map(json_span);
    let labels: Vec<Value> = spans
        .iter()
        .map(|label| {
            let mut value = json_span(label);
            if let Value::Object(fields) = &mut value {
                fields.insert("message".to_owned(), json!(label.message));
            }
            value
        })
        .collect();
    let mut value = json!({
        "policy_set": set_path,
        "code": diag.code().as_str(),
        "severity": diag.severity().as_str(),
        "message": diag.message(),
        "file": diag.file_name(),
        "labels": labels,
        "help": diag.help_text(),
    });
    if let (Value::Object(fields), Some(Value::Object(primary))) = (&mut value, primary) {
        for (key, field) in primary {
            if key != "file" {
                fields.insert(key, field);
            }
        }
    }
    value
}

fn json_span(label: &Label<'_>) -> Value {
    let start = position(label.file_text, label.start);
    let end = position(label.file_text, label.end);
    json!({
        "file": label.file_name,
        "line": start.line,
        "column": start.column,
        "end_line": end.line,
        "end_column": end.column,
    })
}

/// The SARIF 2.1.0 log: one run of `policyc`, a rule for every code that occurs, a result for
/// every diagnostic. File locations are relative to `working_dir` when they lie below it, with
/// `%SRCROOT%` as their base.
pub fn to_sarif(run: &CheckRun<'_>, working_dir: Option<&Path>) -> String {
    let mut codes: Vec<Code> = Vec::new();
    for (_, diag) in run.diagnostics() {
        if !codes.contains(&diag.code()) {
            codes.push(diag.code());
        }
    }
    codes.sort_by_key(|code| code.as_str());
    let docs = DocIndex::parse(DIAGNOSTICS_DOC);
    let rules: Vec<Value> = codes.iter().map(|code| sarif_rule(*code, &docs)).collect();
    let results: Vec<Value> = run
        .diagnostics()
        .map(|(_, diag)| {
            let rule_index = codes.iter().position(|code| *code == diag.code());
            sarif_result(diag, rule_index.unwrap_or(0), working_dir)
        })
        .collect();
    let notifications: Vec<Value> = run
        .unreadable
        .iter()
        .map(|entry| {
            json!({
                "level": "error",
                "message": { "text": entry.message },
                "locations": [{
                    "physicalLocation": { "artifactLocation": artifact(entry.path, working_dir) },
                }],
            })
        })
        .collect();
    let document = json!({
        "$schema": SARIF_SCHEMA,
        "version": "2.1.0",
        "runs": [{
            "tool": {
                "driver": {
                    "name": "policyc",
                    "version": run.tool_version,
                    "rules": rules,
                },
            },
            "invocations": [{
                "executionSuccessful": run.unreadable.is_empty(),
                "toolExecutionNotifications": notifications,
            }],
            "columnKind": "utf16CodeUnits",
            "results": results,
        }],
    });
    pretty(&document)
}

fn sarif_level(severity: Severity) -> &'static str {
    match severity {
        Severity::Error => "error",
        Severity::Warning => "warning",
    }
}

fn sarif_rule(code: Code, docs: &DocIndex<'_>) -> Value {
    let short_code = code.as_str().trim_start_matches("gate::");
    let entry = docs.entry(short_code);
    let name = entry.map_or_else(|| short_code.to_owned(), |entry| pascal_case(entry.title));
    let short = entry.map_or("see the diagnostics reference", |entry| entry.summary);
    let full = entry
        .and_then(|entry| entry.description.clone())
        .unwrap_or_else(|| sentence(short));
    let link = match entry {
        Some(entry) => format!("{DIAGNOSTICS_DOC_PATH}#{}", entry.anchor),
        None => DIAGNOSTICS_DOC_PATH.to_owned(),
    };
    json!({
        "id": code.as_str(),
        "name": name,
        "shortDescription": { "text": sentence(short) },
        "fullDescription": { "text": full },
        "help": {
            "text": format!("{full} See {link}."),
            "markdown": format!("{full}\n\nSee `{link}` in the Portcullis repository."),
        },
        "defaultConfiguration": { "level": sarif_level(code.severity()) },
    })
}

fn sarif_result(diag: &Diagnostic, rule_index: usize, working_dir: Option<&Path>) -> Value {
    let spans = diag.spans();
    let mut text = diag.message().to_owned();
    if let Some(help) = diag.help_text() {
        text.push_str("\nhelp: ");
        text.push_str(help);
    }
    let locations: Vec<Value> = spans
        .first()
        .map(|label| sarif_location(label, working_dir, None))
        .into_iter()
        .collect();
    let related: Vec<Value> = spans
        .iter()
        .skip(1)
        .enumerate()
        .map(|(idx, label)| sarif_location(label, working_dir, Some(idx)))
        .collect();
    let mut result = json!({
        "ruleId": diag.code().as_str(),
        "ruleIndex": rule_index,
        "level": sarif_level(diag.severity()),
        "message": { "text": text },
        "locations": locations,
    });
    if let (Value::Object(fields), false) = (&mut result, related.is_empty()) {
        fields.insert("relatedLocations".to_owned(), Value::Array(related));
    }
    result
}

fn sarif_location(label: &Label<'_>, working_dir: Option<&Path>, id: Option<usize>) -> Value {
    let start = position(label.file_text, label.start);
    let end = position(label.file_text, label.end);
    let mut location = json!({
        "physicalLocation": {
            "artifactLocation": artifact(label.file_name, working_dir),
            "region": {
                "startLine": start.line,
                "startColumn": start.column_utf16,
                "endLine": end.line,
                "endColumn": end.column_utf16,
            },
        },
    });
    if let Value::Object(fields) = &mut location {
        if let Some(id) = id {
            fields.insert("id".to_owned(), json!(id));
        }
        if let Some(message) = label.message {
            fields.insert("message".to_owned(), json!({ "text": message }));
        }
    }
    location
}

/// An artifact location: relative to `%SRCROOT%` (the working directory) when it can be, an
/// absolute `file:` URI otherwise.
fn artifact(file_name: &str, working_dir: Option<&Path>) -> Value {
    let path = Path::new(file_name);
    let relative = if path.is_absolute() {
        working_dir.and_then(|dir| path.strip_prefix(dir).ok())
    } else {
        Some(path)
    };
    match relative {
        Some(relative) => json!({
            "uri": encode_uri_path(&path_segments(relative)),
            "uriBaseId": "%SRCROOT%",
        }),
        None => json!({ "uri": format!("file://{}", encode_uri_path(&path_segments(path))) }),
    }
}

/// The components of a path joined with `/`, without `.` components; an absolute path keeps
/// its leading `/`.
fn path_segments(path: &Path) -> String {
    let mut out = String::new();
    for component in path.components() {
        match component {
            Component::RootDir => out.push('/'),
            Component::CurDir | Component::Prefix(_) => {}
            Component::ParentDir => push_segment(&mut out, ".."),
            Component::Normal(name) => push_segment(&mut out, &name.to_string_lossy()),
        }
    }
    out
}

fn push_segment(out: &mut String, segment: &str) {
    if !out.is_empty() && !out.ends_with('/') {
        out.push('/');
    }
    out.push_str(segment);
}

/// Percent-encodes every byte of `path` that may not stand in a URI path as it is.
fn encode_uri_path(path: &str) -> String {
    let mut out = String::new();
    for byte in path.bytes() {
        let keep = byte.is_ascii_alphanumeric() || b"-._~/!$&'()*+,;=:@".contains(&byte);
        if keep {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

pub(crate) fn pretty(document: &Value) -> String {
    let mut text = serde_json::to_string_pretty(document).unwrap_or_else(|_| "{}".to_owned());
    text.push('\n');
    text
}

/// `unknown claim` → `UnknownClaim`, for SARIF rule names.
fn pascal_case(title: &str) -> String {
    title
        .split(|ch: char| !ch.is_ascii_alphanumeric())
        .filter(|word| !word.is_empty())
        .map(|word| {
            let mut chars = word.chars();
            chars.next().map_or_else(String::new, |first| {
                first.to_ascii_uppercase().to_string() + chars.as_str()
            })
        })
        .collect()
}

/// A summary as a sentence: capitalised, with a final period.
fn sentence(text: &str) -> String {
    let mut chars = text.chars();
    let mut out: String = chars
        .next()
        .map(|first| first.to_uppercase().collect::<String>() + chars.as_str())
        .unwrap_or_default();
    if !out.ends_with('.') {
        out.push('.');
    }
    out
}

/// What `docs/diagnostics.md` says about one code.
#[derive(Debug, Clone, PartialEq, Eq)]
pub(crate) struct DocEntry<'a> {
    /// The heading's words after the code: `unknown claim`.
    title: &'a str,
    /// The index table's second column.
    summary: &'a str,
    /// The anchor of the code's section.
    anchor: &'a str,
    /// The first paragraph of prose in the code's section, if it has one.
    description: Option<String>,
}

/// The codes that `docs/diagnostics.md` documents: its index table and its sections.
pub(crate) struct DocIndex<'a> {
    entries: BTreeMap<&'a str, DocEntry<'a>>,
}

impl<'a> DocIndex<'a> {
    /// Reads the index rows `| [E0001](#e0001-unexpected-token) | summary |` and the sections
    /// `### E0001 unexpected token`.
    pub(crate) fn parse(doc: &'a str) -> DocIndex<'a> {
        let mut entries = BTreeMap::new();
        for line in doc.lines() {
            let Some(row) = line.strip_prefix("| [") else {
                continue;
            };
            let Some((code, rest)) = row.split_once("](#") else {
                continue;
            };
            let Some((anchor, rest)) = rest.split_once(')') else {
                continue;
            };
            let summary = rest
                .trim()
                .trim_start_matches('|')
                .trim()
                .trim_end_matches('|');
            let entry = DocEntry {
                title: code,
                summary: summary.trim(),
                anchor,
                description: None,
            };
            entries.insert(code, entry);
        }
        let lines: Vec<&str> = doc.lines().collect();
        for (idx, line) in lines.iter().enumerate() {
            let Some(heading) = line.strip_prefix("### ") else {
                continue;
            };
            let Some((code, title)) = heading.split_once(' ') else {
                continue;
            };
            if let Some(entry) = entries.get_mut(code) {
                entry.title = title.trim();
                entry.description = first_paragraph(lines.get(idx + 1..).unwrap_or(&[]));
            }
        }
        DocIndex { entries }
    }

    pub(crate) fn entry(&self, code: &str) -> Option<&DocEntry<'a>> {
        self.entries.get(code)
    }

    /// The codes documented, `E0001` …, in order.
    pub(crate) fn codes(&self) -> impl Iterator<Item = &'a str> + '_ {
        self.entries.keys().copied()
    }
}

/// The first paragraph of prose after a heading, joined into one line; `None` when a code
/// block or the next heading comes first.
fn first_paragraph(lines: &[&str]) -> Option<String> {
    let mut words: Vec<&str> = Vec::new();
    for line in lines {
        let line = line.trim();
        if line.starts_with("```") || line.starts_with('#') {
            break;
        }
        if line.is_empty() {
            if words.is_empty() {
                continue;
            }
            break;
        }
        words.push(line);
    }
    (!words.is_empty()).then(|| words.join(" "))
}

/// The codes `docs/diagnostics.md` documents, for tests that every code is documented.
pub fn documented_codes() -> Vec<String> {
    DocIndex::parse(DIAGNOSTICS_DOC)
        .codes()
        .map(|code| format!("gate::{code}"))
        .collect()
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    #[test]
    fn positions_count_lines_characters_and_utf16_units() {
        let text = "ab\nx😀é = 1\n";
        assert_eq!(
            position(text, 0),
            Position {
                line: 1,
                column: 1,
                column_utf16: 1
            }
        );
        let equals = text.find('=').unwrap();
        assert_eq!(
            position(text, equals),
            Position {
                line: 2,
                column: 5,
                column_utf16: 6
            }
        );
        // Inside the emoji: taken as its start.
        assert_eq!(position(text, 5).column, 2);
        assert_eq!(position(text, 1000).line, 3);
    }

    #[test]
    fn the_docs_index_has_titles_summaries_and_descriptions() {
        let docs = DocIndex::parse(DIAGNOSTICS_DOC);
        let entry = docs.entry("E0001").unwrap();
        assert_eq!(entry.title, "unexpected token");
        assert_eq!(entry.anchor, "e0001-unexpected-token");
        assert_eq!(entry.summary, "a token the grammar does not allow here");
        assert!(
            entry
                .description
                .as_deref()
                .unwrap()
                .starts_with("The parser names")
        );
        assert_eq!(pascal_case(entry.title), "UnexpectedToken");
    }

    #[test]
    fn paths_become_relative_uris_with_forward_slashes() {
        let dir = Path::new("/work/repo");
        assert_eq!(
            artifact("/work/repo/policies/a b.gate", Some(dir)),
            json!({ "uri": "policies/a%20b.gate", "uriBaseId": "%SRCROOT%" })
        );
        assert_eq!(
            artifact("./policies/x.gate", Some(dir)),
            json!({ "uri": "policies/x.gate", "uriBaseId": "%SRCROOT%" })
        );
        assert_eq!(
            artifact("/elsewhere/x.gate", Some(dir)),
            json!({ "uri": "file:///elsewhere/x.gate" })
        );
    }
}
