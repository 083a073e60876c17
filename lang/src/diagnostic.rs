//! Compiler diagnostics: what the lexer, parser and checker report about a policy set.
//!
//! A [`Diagnostic`] is a self-contained miette report: it carries the name and text of its file,
//! a stable [`Code`], a one-line message, labelled spans and, where a fix exists, `help`. A label
//! that points into another file (the first declaration of a duplicated name) becomes a related
//! note with its own source. [`render`] turns diagnostics into text for snapshots and the CLI.

use std::fmt;
use std::sync::Arc;

use miette::{GraphicalReportHandler, GraphicalTheme, LabeledSpan, NamedSource};

use crate::ast::Span;
use crate::source::SourceFile;

/// The stable code of each kind of diagnostic; `docs/diagnostics.md` lists them all.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Code {
    // Warnings, from the lints of `crate::lint`; `Code::severity` lists them.
    /// A `permit` without `when` on a workload that any caller of a kind can be.
    BroadPermit,
    /// A workload or target that no rule references.
    UnusedDeclaration,
    /// A literal compared with a claim that no real token can carry.
    ImpossibleClaimValue,
    /// A time zone known by a legacy alias of the IANA database (`US/Pacific`, `EST`).
    LegacyTimeZone,
    /// A `permit` that a `forbid` without `when` denies for every request.
    ShadowedPermit,
    /// A rule whose `when` can never hold.
    UnsatisfiableRule,
    /// A rule that reads one kind's claims unguarded where callers of other kinds reach it.
    OtherKindClaim,
    /// A `static` credential: a stored secret.
    StaticSecret,
    /// A credential whose `ttl` is longer than the configured maximum.
    LongCredentialTtl,
    /// Two permits without `when` for the same workload and target with different credentials.
    OverlappingCredentials,
    /// A `jwt` credential that permits issue for more than one target.
    SharedTokenCredential,
    // Errors.
    /// A token the grammar does not allow here.
    UnexpectedToken,
    /// The file ends in the middle of a declaration.
    UnexpectedEof,
    UnterminatedString,
    InvalidCharacter,
    IntegerOutOfRange,
    InvalidEscape,
    /// A single `=` where `==` was meant.
    AssignInsteadOfEq,
    /// A declaration with more operators than the compiler accepts.
    TooComplex,
    /// More errors in one file than are worth showing; the rest are counted.
    TooManyErrors,
    /// A string literal longer than [`crate::lexer::MAX_STRING_BYTES`].
    StringTooLong,
    /// A policy set with more declarations than [`crate::check::MAX_DECLARATIONS`].
    TooManyDeclarations,
    /// A workload or target name that no declaration declares.
    UnknownName,
    DuplicateName,
    /// A workload where a target is expected, or the reverse.
    WrongDeclarationKind,
    UnknownClaim,
    UnknownProviderKind,
    /// An unknown field of `request`, `target` or `client`.
    UnknownField,
    /// A name that cannot be read where it is written.
    MisplacedName,
    TypeMismatch,
    /// A set with elements of several types, or a set where a set is not allowed.
    InvalidSet,
    /// An optional claim read without a `has` guard.
    UnguardedOptionalClaim,
    /// `has` applied to something that is always present or never a value.
    InvalidHas,
    MissingHost,
    /// A target field that its protocol does not have, or a field given twice.
    InvalidTargetField,
    PortOutOfRange,
    /// An unknown protocol, or not exactly one protocol block in a target.
    InvalidEndpoint,
    /// A target field whose value is of the right type but not acceptable.
    InvalidFieldValue,
    /// A `permit` without its `workload` or `target` clause.
    MissingClause,
    DuplicateClause,
    /// A duration literal that is malformed, zero, or longer than a year.
    InvalidDuration,
    /// Conditions that refer to each other in a cycle.
    ConditionCycle,
    /// Conditions that refer to each other more than 32 levels deep.
    ConditionTooDeep,
    /// An unknown credential kind, or not exactly one kind block in a credential.
    InvalidCredential,
    /// A credential field its kind does not have, given twice, or with an unacceptable value.
    InvalidCredentialField,
    /// A credential without a field its kind requires.
    MissingCredentialField,
    /// A `credential` clause in a `forbid`.
    CredentialOnForbid,
    /// An unknown annotation, or an annotation with an unacceptable value.
    InvalidAnnotation,
    /// A `matches` pattern that is not a valid regular expression.
    InvalidRegex,
    /// A string that should be an IP address or a CIDR range and is not.
    InvalidAddress,
    /// An integer range whose start is after its end.
    InvalidRange,
    /// A timestamp literal that is malformed or names no instant.
    InvalidTimestamp,
    /// A time-of-day literal that is not `HH:MM` within `00:00`..`23:59`.
    InvalidTimeOfDay,
    /// A time zone name that the IANA database does not have.
    UnknownTimeZone,
    /// A `within` window with an unknown day name or that starts where it ends.
    InvalidWindow,
    /// A test whose request is malformed: no `request`, an unknown or repeated item, a claim
    /// given twice, no caller kind or target.
    InvalidTestRequest,
    /// A test request without claims that every token of its kind carries.
    MissingTestClaims,
    /// A test whose `expect` is missing or malformed.
    InvalidExpectation,
}

impl Code {
    /// The code as printed, `gate::E0101`.
    pub fn as_str(self) -> &'static str {
        match self {
            Code::BroadPermit => "gate::W0101",
            Code::UnusedDeclaration => "gate::W0102",
            Code::ImpossibleClaimValue => "gate::W0201",
            Code::LegacyTimeZone => "gate::W0202",
            Code::ShadowedPermit => "gate::W0301",
            Code::UnsatisfiableRule => "gate::W0302",
            Code::OtherKindClaim => "gate::W0303",
            Code::StaticSecret => "gate::W0401",
            Code::LongCredentialTtl => "gate::W0402",
            Code::OverlappingCredentials => "gate::W0403",
            Code::SharedTokenCredential => "gate::W0404",
            Code::UnexpectedToken => "gate::E0001",
            Code::UnexpectedEof => "gate::E0002",
            Code::UnterminatedString => "gate::E0003",
            Code::InvalidCharacter => "gate::E0004",
            Code::IntegerOutOfRange => "gate::E0005",
            Code::InvalidEscape => "gate::E0006",
            Code::AssignInsteadOfEq => "gate::E0007",
            Code::TooComplex => "gate::E0008",
            Code::TooManyErrors => "gate::E0010",
            Code::StringTooLong => "gate::E0011",
            Code::TooManyDeclarations => "gate::E0012",
            Code::UnknownName => "gate::E0101",
            Code::DuplicateName => "gate::E0102",
            Code::WrongDeclarationKind => "gate::E0103",
            Code::UnknownClaim => "gate::E0201",
            Code::UnknownProviderKind => "gate::E0202",
            Code::UnknownField => "gate::E0203",
            Code::MisplacedName => "gate::E0204",
            Code::TypeMismatch => "gate::E0301",
            Code::InvalidSet => "gate::E0302",
            Code::UnguardedOptionalClaim => "gate::E0303",
            Code::InvalidHas => "gate::E0304",
            Code::MissingHost => "gate::E0401",
            Code::InvalidTargetField => "gate::E0402",
            Code::PortOutOfRange => "gate::E0403",
            Code::InvalidEndpoint => "gate::E0404",
            Code::InvalidFieldValue => "gate::E0405",
            Code::MissingClause => "gate::E0501",
            Code::DuplicateClause => "gate::E0502",
            Code::InvalidDuration => "gate::E0009",
            Code::ConditionCycle => "gate::E0105",
            Code::ConditionTooDeep => "gate::E0106",
            Code::InvalidCredential => "gate::E0406",
            Code::InvalidCredentialField => "gate::E0407",
            Code::MissingCredentialField => "gate::E0408",
            Code::CredentialOnForbid => "gate::E0503",
            Code::InvalidAnnotation => "gate::E0504",
            Code::InvalidRegex => "gate::E0305",
            Code::InvalidAddress => "gate::E0306",
            Code::InvalidRange => "gate::E0307",
            Code::InvalidTimestamp => "gate::E0701",
            Code::InvalidTimeOfDay => "gate::E0702",
            Code::UnknownTimeZone => "gate::E0703",
            Code::InvalidWindow => "gate::E0704",
            Code::InvalidTestRequest => "gate::E0601",
            Code::MissingTestClaims => "gate::E0602",
            Code::InvalidExpectation => "gate::E0603",
        }
    }
}

impl Code {
    /// Every warning, the codes of [`crate::lint`]; every other code is an error.
    pub const WARNINGS: [Code; 11] = [
        Code::BroadPermit,
        Code::UnusedDeclaration,
        Code::ImpossibleClaimValue,
        Code::LegacyTimeZone,
        Code::ShadowedPermit,
        Code::UnsatisfiableRule,
        Code::OtherKindClaim,
        Code::StaticSecret,
        Code::LongCredentialTtl,
        Code::OverlappingCredentials,
        Code::SharedTokenCredential,
    ];

    /// Whether the code is an error, which fails the policy set, or a warning from a lint.
    pub fn severity(self) -> Severity {
        if Code::WARNINGS.contains(&self) {
            Severity::Warning
        } else {
            Severity::Error
        }
    }

    /// The warning `W0401` or `gate::W0401` names.
    pub fn warning(name: &str) -> Option<Code> {
        let name = name.strip_prefix("gate::").unwrap_or(name);
        Code::WARNINGS
            .into_iter()
            .find(|code| code.as_str().strip_prefix("gate::") == Some(name))
    }

    /// Whether the lexer reports it.
    pub fn is_lexical(self) -> bool {
        matches!(
            self,
            Code::UnterminatedString
                | Code::InvalidCharacter
                | Code::IntegerOutOfRange
                | Code::InvalidEscape
                | Code::InvalidDuration
                | Code::StringTooLong
        )
    }
}

/// How serious a diagnostic is: an error fails the policy set; a warning fails it only under
/// `policyc check --deny-warnings`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Severity {
    Warning,
    Error,
}

impl Severity {
    /// `error` or `warning`, as in JSON reports and summaries.
    pub fn as_str(self) -> &'static str {
        match self {
            Severity::Warning => "warning",
            Severity::Error => "error",
        }
    }
}

impl fmt::Display for Code {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// One error in a policy set, ready to render on its own.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
pub struct Diagnostic {
    code: Code,
    message: String,
    src: NamedSource<Shown>,
    labels: Vec<LabeledSpan>,
    help: Option<String>,
    notes: Vec<Note>,
    /// How many diagnostics this one counts for; see [`Diagnostic::stands_for`].
    stands_for: usize,
}

/// How many of `diags` have `severity`, each counting for what it stands for: a notice of errors
/// not shown counts for them.
pub fn count<'a>(diags: impl IntoIterator<Item = &'a Diagnostic>, severity: Severity) -> usize {
    diags
        .into_iter()
        .filter(|diag| diag.severity() == severity)
        .map(Diagnostic::stands_for)
        .sum()
}

impl Diagnostic {
    /// How many diagnostics this one counts for: one, or for the notice that closes a file's
    /// list when there are too many (E0010), the number of errors it stands for.
    pub fn stands_for(&self) -> usize {
        self.stands_for
    }

    pub fn code(&self) -> Code {
        self.code
    }

    pub fn message(&self) -> &str {
        &self.message
    }

    /// The name of the file the primary label points into.
    /// The file's name as given; a terminal shows it with [`printable`].
    pub fn file_name(&self) -> &str {
        self.src.inner().name()
    }

    pub fn help_text(&self) -> Option<&str> {
        self.help.as_deref()
    }

    /// The byte offset of the primary label in its file.
    pub fn offset(&self) -> usize {
        self.labels.first().map_or(0, |label| label.offset())
    }

    pub fn severity(&self) -> Severity {
        self.code.severity()
    }

    /// Every label, the primary one first, then those of the notes in other files.
    pub fn spans(&self) -> Vec<Label<'_>> {
        let here = self.labels.iter().map(|label| Label {
            file_name: self.src.inner().name(),
            file_text: self.src.inner().text(),
            start: label.offset(),
            end: label.offset() + label.len(),
            message: label.label(),
        });
        let notes = self.notes.iter().map(|note| Label {
            file_name: note.src.inner().name(),
            file_text: note.src.inner().text(),
            start: note.label.offset(),
            end: note.label.offset() + note.label.len(),
            message: note.label.label(),
        });
        here.chain(notes).collect()
    }
}

/// A labelled byte range of a diagnostic, with the file it lies in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Label<'a> {
    pub file_name: &'a str,
    pub file_text: &'a str,
    pub start: usize,
    pub end: usize,
    pub message: Option<&'a str>,
}

impl miette::Diagnostic for Diagnostic {
    fn code<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        match self.code.severity() {
            Severity::Error => Some(Box::new(format!("error[{}]", self.code.as_str()))),
            Severity::Warning => Some(Box::new(format!("warning[{}]", self.code.as_str()))),
        }
    }

    fn severity(&self) -> Option<miette::Severity> {
        match self.code.severity() {
            Severity::Error => Some(miette::Severity::Error),
            Severity::Warning => Some(miette::Severity::Warning),
        }
    }

    fn help<'a>(&'a self) -> Option<Box<dyn fmt::Display + 'a>> {
        self.help
            .as_ref()
            .map(|help| Box::new(help) as Box<dyn fmt::Display>)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(self.labels.iter().cloned()))
    }

    fn related<'a>(&'a self) -> Option<Box<dyn Iterator<Item = &'a dyn miette::Diagnostic> + 'a>> {
        if self.notes.is_empty() {
            return None;
        }
        Some(Box::new(
            self.notes
                .iter()
                .map(|note| note as &dyn miette::Diagnostic),
        ))
    }
}

/// A label in another file than its diagnostic's, shown as a related advice.
#[derive(Debug, Clone, thiserror::Error)]
#[error("{message}")]
struct Note {
    message: String,
    src: NamedSource<Shown>,
    label: LabeledSpan,
}

impl miette::Diagnostic for Note {
    fn severity(&self) -> Option<miette::Severity> {
        Some(miette::Severity::Advice)
    }

    fn source_code(&self) -> Option<&dyn miette::SourceCode> {
        Some(&self.src)
    }

    fn labels(&self) -> Option<Box<dyn Iterator<Item = LabeledSpan> + '_>> {
        Some(Box::new(std::iter::once(self.label.clone())))
    }
}

/// A diagnostic still in terms of [`Span`]s; [`Sources::finish`] attaches the file texts.
#[derive(Debug, Clone)]
pub(crate) struct Report {
    code: Code,
    message: String,
    labels: Vec<(Span, String)>,
    help: Option<String>,
    stands_for: usize,
}

impl Report {
    /// A report whose primary label is `label` at `span`.
    pub(crate) fn new(
        code: Code,
        message: impl Into<String>,
        span: Span,
        label: impl Into<String>,
    ) -> Report {
        Report {
            code,
            message: message.into(),
            labels: vec![(span, label.into())],
            help: None,
            stands_for: 1,
        }
    }

    /// A report that counts for `n` diagnostics: the notice of errors that are not shown.
    pub(crate) fn standing_for(mut self, n: usize) -> Report {
        self.stands_for = n;
        self
    }

    pub(crate) fn label(mut self, span: Span, label: impl Into<String>) -> Report {
        self.labels.push((span, label.into()));
        self
    }

    pub(crate) fn help(mut self, help: impl Into<String>) -> Report {
        self.help = Some(help.into());
        self
    }

    pub(crate) fn help_opt(mut self, help: Option<String>) -> Report {
        self.help = help;
        self
    }

    pub(crate) fn code(&self) -> Code {
        self.code
    }

    /// Where the primary label points.
    pub(crate) fn span(&self) -> Span {
        self.labels
            .first()
            .map_or_else(Span::default, |(span, _)| *span)
    }
}

/// `text` safe to print on a terminal: each control character but tab and line breaks becomes a
/// space and each bidirectional control `U+FFFD`, so that a policy file cannot send escape
/// sequences to whoever reads its diagnostics. A carriage return counts only before a line
/// feed; alone, it would move the cursor back over the line shown. Every replacement has the
/// byte length of what it replaces, so spans and columns stay valid.
fn displayable(text: &str) -> String {
    let mut chars = text.chars().peekable();
    let mut out = String::with_capacity(text.len());
    while let Some(ch) = chars.next() {
        out.push(match ch {
            '\r' if chars.peek() == Some(&'\n') => ch,
            '\t' | '\n' => ch,
            _ if ch.is_ascii_control() => ' ',
            // A mark of the same length in UTF-8: C1 controls and the no-break space are two
            // bytes, as is `¿`; tag characters four, as is `🚫`.
            _ if crate::lexer::is_hidden_control(ch) => match ch.len_utf8() {
                2 => '\u{BF}',
                4 => '\u{1F6AB}',
                _ => '\u{FFFD}',
            },
            _ => ch,
        });
    }
    out
}

/// A name from outside, such as a file path, safe to print on a terminal: control and
/// bidirectional characters become `U+FFFD`.
pub fn printable(text: &str) -> std::borrow::Cow<'_, str> {
    if !text.chars().any(crate::lexer::is_hidden_control) {
        return std::borrow::Cow::Borrowed(text);
    }
    let replace = |ch| {
        if crate::lexer::is_hidden_control(ch) {
            '\u{FFFD}'
        } else {
            ch
        }
    };
    std::borrow::Cow::Owned(text.chars().map(replace).collect())
}

/// The most bytes of source shown on either side of a label, so that a diagnostic on a very
/// long line (a minified or generated file) shows the part that matters, not the whole line.
const SHOWN_AROUND_LABEL: usize = 160;

/// A file's text as diagnostics show it: lines around a label are cut to
/// [`SHOWN_AROUND_LABEL`] bytes on either side of it; line numbers, columns and offsets stay
/// those of the whole file.
#[derive(Debug, Clone)]
pub(crate) struct Shown {
    text: Arc<str>,
    /// The file's name as given, for the JSON and SARIF reports; a terminal gets it printable.
    name: Arc<str>,
}

impl Shown {
    fn text(&self) -> &str {
        &self.text
    }

    fn name(&self) -> &str {
        &self.name
    }
}

impl miette::SourceCode for Shown {
    fn read_span<'a>(
        &'a self,
        span: &miette::SourceSpan,
        context_lines_before: usize,
        context_lines_after: usize,
    ) -> Result<Box<dyn miette::SpanContents<'a> + 'a>, miette::MietteError> {
        let whole =
            self.text
                .as_bytes()
                .read_span(span, context_lines_before, context_lines_after)?;
        let text = self.text();
        let data_start = whole.span().offset();
        let data_end = data_start + whole.span().len();
        let floor = |at: usize| {
            (0..=at)
                .rev()
                .find(|&at| text.is_char_boundary(at))
                .unwrap_or(0)
        };
        let ceil = |at: usize| (at..=text.len()).find(|&at| text.is_char_boundary(at));
        let start = floor(span.offset().saturating_sub(SHOWN_AROUND_LABEL)).max(data_start);
        let end = ceil(span.offset() + span.len() + SHOWN_AROUND_LABEL)
            .unwrap_or(text.len())
            .min(data_end);
        if start == data_start && end == data_end {
            return Ok(whole);
        }
        let skipped = text.get(data_start..start).unwrap_or_default();
        let line = whole.line() + skipped.matches('\n').count();
        let data = text.get(start..end).unwrap_or_default().as_bytes();
        Ok(Box::new(miette::MietteSpanContents::new(
            data,
            (start, end - start).into(),
            line,
            whole.column(),
            whole.line_count(),
        )))
    }
}

/// The files of a policy set, shared by every diagnostic about them.
pub(crate) struct Sources {
    files: Vec<NamedSource<Shown>>,
}

impl Sources {
    pub(crate) fn new(files: &[SourceFile]) -> Sources {
        let files = files
            .iter()
            .map(|file| {
                let shown = Shown {
                    text: Arc::from(displayable(&file.text)),
                    name: Arc::from(file.name.as_str()),
                };
                NamedSource::new(printable(&file.name), shown)
            })
            .collect();
        Sources { files }
    }

    fn source(&self, file: usize) -> NamedSource<Shown> {
        self.files.get(file).cloned().unwrap_or_else(|| {
            let shown = Shown {
                text: Arc::from(""),
                name: Arc::from(""),
            };
            NamedSource::new("", shown)
        })
    }

    pub(crate) fn finish(&self, report: Report) -> Diagnostic {
        let file = report.span().file;
        let mut labels = Vec::new();
        let mut notes = Vec::new();
        for (idx, (span, text)) in report.labels.into_iter().enumerate() {
            let source_span = (span.start, span.len());
            if span.file == file {
                let label = if idx == 0 {
                    LabeledSpan::new_primary_with_span(Some(text), source_span)
                } else {
                    LabeledSpan::new_with_span(Some(text), source_span)
                };
                labels.push(label);
            } else {
                let label = LabeledSpan::new_primary_with_span(Some(text.clone()), source_span);
                notes.push(Note {
                    message: text,
                    src: self.source(span.file),
                    label,
                });
            }
        }
        Diagnostic {
            code: report.code,
            message: report.message,
            src: self.source(file),
            labels,
            help: report.help,
            notes,
            stands_for: report.stands_for,
        }
    }
}

/// Renders diagnostics one after another with miette's graphical handler, 100 columns wide and
/// without terminal links; without colour when `color` is false, for snapshots and pipes.
pub fn render(diags: &[Diagnostic], color: bool) -> String {
    let theme = if color {
        GraphicalTheme::unicode()
    } else {
        GraphicalTheme::unicode_nocolor()
    };
    let handler = GraphicalReportHandler::new_themed(theme)
        .with_width(100)
        .with_links(false);
    let mut out = String::new();
    for diag in diags {
        // Labels in other files are rendered after their diagnostic, each as an advice of its
        // own, rather than as miette's related reports, whose header would read "Advice: ".
        let mut main = diag.clone();
        let notes = std::mem::take(&mut main.notes);
        if handler.render_report(&mut out, &main).is_err() {
            out.push_str(&format!("{}: {}\n", diag.code.as_str(), diag.message));
        }
        for note in &notes {
            out.push('\n');
            if handler.render_report(&mut out, note).is_err() {
                out.push_str(&format!(" {}\n", note.message));
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::check::compile;

    #[test]
    fn file_names_and_lone_carriage_returns_never_reach_a_terminal_raw() {
        let text = "workload w { github { repositry == \"a\" } }\n// a\rb\r\n";
        let diags = compile(&[SourceFile::new("x\u{1b}[31m.gate", text)]).unwrap_err();
        let rendered = render(&diags, false);
        assert!(!rendered.contains('\u{1b}'), "{rendered:?}");
        assert!(!rendered.contains("a\rb"), "{rendered:?}");
        assert!(rendered.contains("x\u{FFFD}[31m.gate"), "{rendered:?}");
        assert_eq!(printable("plain/path.gate"), "plain/path.gate");
    }

    #[test]
    fn hidden_characters_of_every_length_are_shown_as_marks_of_that_length() {
        // Two bytes (a no-break space), three (a zero-width space, a right-to-left override),
        // four (a tag character): each string is refused, and its line is shown with a mark in
        // the character's place, the label still under the string.
        for hidden in ['\u{A0}', '\u{200B}', '\u{202E}', '\u{E0041}'] {
            let text = format!("target t {{ https {{ host = \"a{hidden}b\" }} }}\n");
            let diags = compile(&[SourceFile::new("t.gate", &text)]).unwrap_err();
            let rendered = render(&diags, false);
            assert!(!rendered.contains(hidden), "{hidden:?}: {rendered}");
            assert!(rendered.contains("gate::E0004"), "{hidden:?}: {rendered}");
            let shown = displayable(&text);
            assert_eq!(shown.len(), text.len(), "{hidden:?}");
            assert!(!shown.contains(hidden), "{hidden:?}");
        }
    }

    #[test]
    fn a_label_on_a_very_long_line_shows_the_part_around_it_at_its_true_position() {
        let filler = "request.resource like \"/v1/orders/*\" || ".repeat(200);
        let text = format!("// first line\ncondition c {{ {filler}request.actoin == \"x\" }}\n");
        let diags = compile(&[SourceFile::new("long.gate", &text)]).unwrap_err();
        let rendered = render(&diags, false);
        assert!(rendered.len() < 2_000, "{} bytes", rendered.len());
        let column = text.lines().nth(1).unwrap().find("actoin").unwrap() + 1;
        assert!(
            rendered.contains(&format!("[long.gate:2:{column}]")),
            "{rendered}"
        );
        assert!(rendered.contains("request.actoin"), "{rendered}");
        // JSON and SARIF positions come from the whole text, not from what is shown.
        let labels = diags[0].spans();
        assert_eq!(labels[0].file_text, text);
    }
}
