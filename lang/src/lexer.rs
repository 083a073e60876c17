//! The Gate lexer: source text in, tokens with byte spans out.
//!
//! Built with logos. Lexical errors (a bad character, an unterminated string, an integer out of
//! range) do not stop the lexer: [`lex`] reports each one and keeps going, substituting a token
//! where that lets the parser carry on without a cascade of follow-up errors.
//!
//! `workload` and `target` are both declaration keywords and clause keywords inside a rule.
//! [`lex`] tells them apart by brace depth and lookahead, so that the parser's error recovery can
//! resynchronise on the next declaration even inside a broken one.

use std::fmt;
use std::ops::Range;

use logos::Logos;

/// What went wrong while lexing; carried by the lexer's error results.
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
pub enum LexError {
    #[default]
    #[error("invalid character")]
    InvalidChar,
    #[error("unterminated string")]
    UnterminatedString,
    /// `offset` is where the backslash sits, in bytes from the opening quote.
    #[error("invalid escape `\\{escape}` in string")]
    InvalidEscape { escape: char, offset: usize },
    /// A control or bidirectional-override character inside a string, `offset` bytes from the
    /// opening quote: invisible in an editor, and able to change what a terminal shows.
    #[error("control character U+{:04X} in string", u32::from(*ch))]
    ControlInString { ch: char, offset: usize },
    #[error("integer literal out of range")]
    IntegerOverflow,
    #[error("invalid duration")]
    InvalidDuration(DurationError),
    /// A string literal whose value is longer than [`MAX_STRING_BYTES`].
    #[error("string literal longer than {MAX_STRING_BYTES} bytes")]
    StringTooLong,
    /// `/* … */`, which Gate does not have; the whole comment is one error.
    #[error("block comments are not supported")]
    BlockComment,
    /// `08:00-18:00`, `mon-fri`: a range written with `-` instead of `..`.
    #[error("a range written with `-`")]
    DashRange,
    /// `'text'`: a string between single quotes.
    #[error("a string between single quotes")]
    SingleQuoted,
}

/// Why a duration literal (`15m`, `1h30m`) was refused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DurationError {
    /// A unit other than `d`, `h`, `m`, `s`, units out of order, or a unit given twice.
    Malformed,
    /// `0s`: a duration is positive.
    Zero,
    /// Longer than [`MAX_DURATION_S`].
    TooLong,
}

impl DurationError {
    /// What is wrong, in a few words: the label of a diagnostic.
    pub fn label(self) -> &'static str {
        match self {
            DurationError::Malformed => "not a duration",
            DurationError::Zero => "zero",
            DurationError::TooLong => "longer than a year",
        }
    }

    /// How to write the duration instead.
    pub fn help(self) -> &'static str {
        match self {
            DurationError::Malformed => {
                "write digits and a unit, `d`, `h`, `m` or `s`, largest first: `15m`, `1h30m`"
            }
            DurationError::Zero => "a duration is positive: `1s` at least",
            DurationError::TooLong => "a duration is at most `365d`",
        }
    }
}

/// The longest value a string literal may hold, in bytes: 64 KiB, far above any claim, field
/// or pattern, and a bound on what one literal costs every later stage.
pub const MAX_STRING_BYTES: usize = 64 * 1024;

/// The longest duration a literal may state: 365 days, in seconds.
pub const MAX_DURATION_S: u64 = 365 * 24 * 60 * 60;

/// A Gate token. `DeclWorkload` and `DeclTarget` are never produced by logos itself: [`lex`]
/// turns `workload` and `target` into them when they open a declaration.
#[derive(Logos, Debug, Clone, PartialEq, Eq)]
#[logos(error = LexError)]
#[logos(skip r"[ \t\r\n\f]+")]
#[logos(skip(r"//[^\n]*", allow_greedy = true))]
pub enum Token<'input> {
    #[token("workload")]
    Workload,
    #[token("target")]
    Target,
    DeclWorkload,
    DeclTarget,
    #[token("permit")]
    Permit,
    #[token("forbid")]
    Forbid,
    #[token("when")]
    When,
    #[token("any")]
    Any,
    #[token("in")]
    In,
    #[token("like")]
    Like,
    #[token("has")]
    Has,
    #[token("credential")]
    Credential,
    DeclCredential,
    #[token("condition")]
    Condition,
    /// `test`, which opens a test declaration (docs/gate.md, "Tests").
    #[token("test")]
    Test,
    #[token("matches")]
    Matches,
    /// `within`, the weekday-window operator (`request.time within weekdays 08:00..18:00 …`).
    #[token("within")]
    Within,
    #[token("@")]
    At,
    #[token("true")]
    True,
    #[token("false")]
    False,

    #[token("{")]
    LBrace,
    #[token("}")]
    RBrace,
    #[token("[")]
    LBracket,
    #[token("]")]
    RBracket,
    #[token("(")]
    LParen,
    #[token(")")]
    RParen,
    #[token(",")]
    Comma,
    #[token(".")]
    Dot,
    #[token("==")]
    EqEq,
    #[token("!=")]
    NotEq,
    #[token("=")]
    Assign,
    #[token("!")]
    Bang,
    #[token("&&")]
    AndAnd,
    #[token("||")]
    OrOr,
    #[token("<")]
    Lt,
    #[token("<=")]
    Le,
    #[token(">")]
    Gt,
    #[token(">=")]
    Ge,
    #[token("..")]
    DotDot,

    #[regex("[A-Za-z_][A-Za-z0-9_]*")]
    Ident(&'input str),
    #[token("\"", lex_string)]
    Str(String),
    #[regex("-?[0-9]+", |lex| lex.slice().parse::<i64>().map_err(|_| LexError::IntegerOverflow))]
    Int(i64),
    /// A duration literal in seconds: digits and a unit, `d`, `h`, `m` or `s`, repeated from
    /// the largest unit to the smallest (`1h30m`). Digits followed by any other letters lex as
    /// an invalid duration, so that `15min` is reported as such.
    #[regex("[0-9]+[A-Za-z][A-Za-z0-9]*", lex_duration)]
    Duration(u64),
    /// A timestamp as written, `2026-12-31T23:59:59Z`; the checker reads it
    /// ([`crate::time::parse_timestamp`]), so that a malformed one is reported with its reason.
    /// A date followed by other letters and digits lexes as one bad timestamp.
    #[regex("[0-9][0-9][0-9][0-9]-[0-9][0-9]-[0-9][0-9][A-Za-z0-9:+-]*(\\.[0-9]+[A-Za-z0-9:+-]*)?")]
    Timestamp(&'input str),
    /// A time of day as written, `08:00`; the checker reads it
    /// ([`crate::time::parse_time_of_day`]).
    #[regex("[0-9]+:[0-9]+(:[0-9]+)?")]
    TimeOfDay(&'input str),
    /// Never produced: `08:00-18:00` or `mon-fri`, a range written with a dash, lexes as one
    /// error, and [`lex`] puts the `..` range in its place.
    #[regex("[0-9]+:[0-9]+-[0-9]+:[0-9]+", dash_range)]
    #[regex(
        "(?i)(mon|tue|wed|thu|fri|sat|sun)-(mon|tue|wed|thu|fri|sat|sun)",
        dash_range
    )]
    DashRange,
    /// Never produced: `'text'`, a string between single quotes, lexes as one error and a
    /// string in its place.
    #[regex("'[^'\n]*'", single_quoted)]
    SingleQuoted,
}

impl fmt::Display for Token<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let text = match self {
            Token::Workload | Token::DeclWorkload => "`workload`",
            Token::Target | Token::DeclTarget => "`target`",
            Token::Permit => "`permit`",
            Token::Forbid => "`forbid`",
            Token::When => "`when`",
            Token::Any => "`any`",
            Token::In => "`in`",
            Token::Like => "`like`",
            Token::Has => "`has`",
            Token::Credential | Token::DeclCredential => "`credential`",
            Token::Condition => "`condition`",
            Token::Test => "`test`",
            Token::Matches => "`matches`",
            Token::Within => "`within`",
            Token::At => "`@`",
            Token::Lt => "`<`",
            Token::Le => "`<=`",
            Token::Gt => "`>`",
            Token::Ge => "`>=`",
            Token::DotDot => "`..`",
            Token::True => "`true`",
            Token::False => "`false`",
            Token::LBrace => "`{`",
            Token::RBrace => "`}`",
            Token::LBracket => "`[`",
            Token::RBracket => "`]`",
            Token::LParen => "`(`",
            Token::RParen => "`)`",
            Token::Comma => "`,`",
            Token::Dot => "`.`",
            Token::EqEq => "`==`",
            Token::NotEq => "`!=`",
            Token::Assign => "`=`",
            Token::Bang => "`!`",
            Token::AndAnd => "`&&`",
            Token::OrOr => "`||`",
            Token::Ident(name) => return write!(f, "name `{name}`"),
            Token::Str(_) => "string",
            Token::Int(value) => return write!(f, "integer `{value}`"),
            Token::Duration(_) => "duration",
            Token::Timestamp(text) => return write!(f, "timestamp `{text}`"),
            Token::TimeOfDay(text) => return write!(f, "time of day `{text}`"),
            Token::DashRange => "range",
            Token::SingleQuoted => "string",
        };
        f.write_str(text)
    }
}

/// The units of a duration literal, largest first, and their seconds.
const DURATION_UNITS: [(char, u64); 4] = [('d', 86_400), ('h', 3_600), ('m', 60), ('s', 1)];

/// The seconds of one duration unit: `d`, `h`, `m` or `s`.
pub fn unit_seconds(unit: char) -> Option<u64> {
    DURATION_UNITS
        .iter()
        .find(|(name, _)| *name == unit)
        .map(|(_, seconds)| *seconds)
}

/// The seconds of a duration literal such as `1h30m`: digits and a unit, each unit at most
/// once, largest first; positive and at most [`MAX_DURATION_S`].
pub fn parse_duration(text: &str) -> Result<u64, DurationError> {
    let mut total: u64 = 0;
    let mut digits_start = 0;
    let mut last_unit = u64::MAX;
    for (idx, ch) in text.char_indices() {
        if ch.is_ascii_digit() {
            continue;
        }
        let unit = unit_seconds(ch).ok_or(DurationError::Malformed)?;
        let digits = text.get(digits_start..idx).unwrap_or_default();
        if digits.is_empty() || unit >= last_unit {
            return Err(DurationError::Malformed);
        }
        let amount: u64 = digits.parse().map_err(|_| DurationError::TooLong)?;
        let part = amount.checked_mul(unit).ok_or(DurationError::TooLong)?;
        total = total.checked_add(part).ok_or(DurationError::TooLong)?;
        last_unit = unit;
        digits_start = idx + 1;
    }
    if digits_start != text.len() {
        return Err(DurationError::Malformed);
    }
    match total {
        0 => Err(DurationError::Zero),
        seconds if seconds > MAX_DURATION_S => Err(DurationError::TooLong),
        seconds => Ok(seconds),
    }
}

/// A number of seconds as a Gate duration literal: `1h30m`, `45s`; `0s` for zero.
pub fn format_duration(seconds: u64) -> String {
    let mut rest = seconds;
    let mut out = String::new();
    for (unit, size) in DURATION_UNITS {
        if rest >= size {
            out.push_str(&format!("{}{unit}", rest / size));
            rest %= size;
        }
    }
    if out.is_empty() {
        out.push_str("0s");
    }
    out
}

/// Scans a string literal after its opening quote, unescaping as it goes. The span of an
/// unterminated string covers the rest of its line.
/// An invalid escape does not end the string: the scan goes on to the closing quote, so that
/// the rest of the line is not read as code. A value longer than [`MAX_STRING_BYTES`] is an
/// error too, once the string is read to its end.
fn lex_string<'input>(lex: &mut logos::Lexer<'input, Token<'input>>) -> Result<String, LexError> {
    let mut value = String::new();
    let mut invalid_escape = None;
    let mut chars = lex.remainder().char_indices();
    while let Some((offset, ch)) = chars.next() {
        match ch {
            '"' => {
                lex.bump(offset + 1);
                return match invalid_escape {
                    Some(error) => Err(error),
                    None if value.len() > MAX_STRING_BYTES => Err(LexError::StringTooLong),
                    None => Ok(value),
                };
            }
            '\n' => {
                lex.bump(offset);
                return Err(LexError::UnterminatedString);
            }
            '\\' => {
                let Some((_, escaped)) = chars.next() else {
                    break;
                };
                match escaped {
                    '"' => value.push('"'),
                    '\\' => value.push('\\'),
                    'n' => value.push('\n'),
                    't' => value.push('\t'),
                    escape => {
                        let error = LexError::InvalidEscape {
                            escape,
                            offset: offset + 1,
                        };
                        invalid_escape.get_or_insert(error);
                    }
                }
            }
            other if is_hidden_control(other) => {
                let error = LexError::ControlInString { ch: other, offset };
                invalid_escape.get_or_insert(error);
            }
            other => value.push(other),
        }
    }
    lex.bump(lex.remainder().len());
    Err(LexError::UnterminatedString)
}

/// Whether `ch` shows as something other than itself, or as nothing, so that two texts that
/// differ in it look alike: the controls; the bidirectional marks, embeddings, overrides and
/// isolates, with which `gnp\u{202e}.exe` shows as `exe.png`; whitespace other than the space
/// (a no-break space, the line separator); and the invisible format and default-ignorable
/// characters (zero-width spaces and joiners, the byte order mark, the soft hyphen, variation
/// selectors, tag characters, fillers, the blank braille pattern). Whatever shows text from
/// outside to people shows these escaped, and Gate refuses them in strings.
pub fn hides_in_text(ch: char) -> bool {
    ch.is_control()
        || (ch.is_whitespace() && ch != ' ')
        || matches!(
            ch,
            '\u{00AD}'
                | '\u{034F}'
                | '\u{0600}'..='\u{0605}'
                | '\u{061C}'
                | '\u{06DD}'
                | '\u{070F}'
                | '\u{0890}'..='\u{0891}'
                | '\u{08E2}'
                | '\u{115F}'..='\u{1160}'
                | '\u{17B4}'..='\u{17B5}'
                | '\u{180B}'..='\u{180F}'
                | '\u{200B}'..='\u{200F}'
                | '\u{202A}'..='\u{202E}'
                | '\u{2060}'..='\u{206F}'
                | '\u{2800}'
                | '\u{3164}'
                | '\u{FE00}'..='\u{FE0F}'
                | '\u{FEFF}'
                | '\u{FFA0}'
                | '\u{FFF0}'..='\u{FFFB}'
                | '\u{110BD}'
                | '\u{110CD}'
                | '\u{13430}'..='\u{1343F}'
                | '\u{1BCA0}'..='\u{1BCA3}'
                | '\u{1D173}'..='\u{1D17A}'
                | '\u{E0000}'..='\u{E0FFF}'
        )
}

/// Whether Gate refuses `ch` in a string: a [`hides_in_text`] character other than the tab,
/// which a reader does not see as written.
pub fn is_hidden_control(ch: char) -> bool {
    ch != '\t' && hides_in_text(ch)
}

/// A token and its byte range in the file.
pub type Spanned<'input> = (usize, Token<'input>, usize);

/// The result of lexing one file: every token the parser should see and every lexical error.
#[derive(Debug, Default)]
pub struct Lexed<'input> {
    pub tokens: Vec<Spanned<'input>>,
    pub errors: Vec<(LexError, Range<usize>)>,
}

/// Lexes a whole file. Never fails: errors are collected, an unterminated string still yields
/// a string token and an out-of-range integer yields `0`, so the parser sees a plausible shape.
pub fn lex(text: &str) -> Lexed<'_> {
    let mut lexed = Lexed::default();
    let mut lexer = Token::lexer(text);
    while let Some(result) = lexer.next() {
        let mut span = lexer.span();
        if let Err(LexError::InvalidEscape { escape, offset }) = &result {
            let start = span.start + offset;
            span = start..start + 1 + escape.len_utf8();
        }
        if let Err(LexError::ControlInString { ch, offset }) = &result {
            let start = span.start + 1 + offset;
            span = start..start + ch.len_utf8();
        }
        match result {
            Ok(token) => lexed.tokens.push((span.start, token, span.end)),
            Err(LexError::InvalidChar) if text.get(span.start..).is_some_and(is_block_open) => {
                // Skip to the end of the would-be comment, so its words are not read as Gate.
                let body = span.start + 2;
                let end = text
                    .get(body..)
                    .and_then(|rest| rest.find("*/"))
                    .map_or(text.len(), |at| body + at + 2);
                lexer.bump(end.saturating_sub(span.end));
                lexed.errors.push((LexError::BlockComment, span.start..end));
            }
            Err(error) => {
                let substitute = match error {
                    LexError::UnterminatedString
                    | LexError::InvalidEscape { .. }
                    | LexError::ControlInString { .. }
                    | LexError::SingleQuoted
                    | LexError::StringTooLong => Some(Token::Str(String::new())),
                    LexError::IntegerOverflow => Some(Token::Int(0)),
                    LexError::InvalidDuration(_) => Some(Token::Duration(1)),
                    LexError::InvalidChar | LexError::BlockComment | LexError::DashRange => None,
                };
                if let Some(token) = substitute {
                    lexed.tokens.push((span.start, token, span.end));
                }
                if error == LexError::DashRange {
                    lexed.tokens.extend(dotted_range(text, span.clone()));
                }
                if error == LexError::StringTooLong {
                    // The opening quote locates the string; underlining all of it would draw
                    // tens of thousands of columns.
                    span = span.start..span.start + 1;
                }
                lexed.errors.push((error, span));
            }
        }
    }
    mark_declaration_keywords(&mut lexed.tokens);
    lexed
}

fn lex_duration<'input>(lex: &mut logos::Lexer<'input, Token<'input>>) -> Result<u64, LexError> {
    parse_duration(lex.slice()).map_err(LexError::InvalidDuration)
}

fn single_quoted<'input>(_: &mut logos::Lexer<'input, Token<'input>>) -> Result<(), LexError> {
    Err(LexError::SingleQuoted)
}

fn dash_range<'input>(_: &mut logos::Lexer<'input, Token<'input>>) -> Result<(), LexError> {
    Err(LexError::DashRange)
}

/// The tokens of `FIRST..LAST` for a range written `FIRST-LAST`, so that parsing goes on as if
/// it had been written right.
fn dotted_range(text: &str, span: Range<usize>) -> Vec<Spanned<'_>> {
    fn part(part: &str) -> Token<'_> {
        if part.contains(':') {
            Token::TimeOfDay(part)
        } else {
            Token::Ident(part)
        }
    }
    let written = text.get(span.clone()).unwrap_or_default();
    let Some(dash) = written.find('-') else {
        return Vec::new();
    };
    let (first, last) = (&written[..dash], &written[dash + 1..]);
    let dash_at = span.start + dash;
    vec![
        (span.start, part(first), dash_at),
        (dash_at, Token::DotDot, dash_at + 1),
        (dash_at + 1, part(last), span.end),
    ]
}

fn is_block_open(rest: &str) -> bool {
    rest.starts_with("/*")
}

/// Turns `workload`, `target` and `credential` into their declaration forms where they open a
/// declaration: outside any braces, or wherever they are followed by a name and `{` (so that a
/// declaration after a missing `}` is still recognised). Between a rule's name and its first `{`
/// they stay clause keywords, so that a rule that lacks its `{` is one error, not three.
fn mark_declaration_keywords(tokens: &mut [Spanned<'_>]) {
    let mut depth = 0usize;
    let mut in_rule_header = false;
    for idx in 0..tokens.len() {
        let opens_block = matches!(
            (tokens.get(idx + 1), tokens.get(idx + 2)),
            (Some((_, Token::Ident(_), _)), Some((_, Token::LBrace, _)))
        );
        let Some((_, token, _)) = tokens.get_mut(idx) else {
            break;
        };
        match token {
            Token::LBrace => {
                depth += 1;
                in_rule_header = false;
            }
            Token::RBrace => depth = depth.saturating_sub(1),
            Token::Permit | Token::Forbid => {
                depth = 0;
                in_rule_header = true;
            }
            Token::Condition | Token::Test | Token::At => {
                depth = 0;
                in_rule_header = false;
            }
            Token::Workload | Token::Target | Token::Credential
                if opens_block || (depth == 0 && !in_rule_header) =>
            {
                depth = 0;
                in_rule_header = false;
                *token = match token {
                    Token::Workload => Token::DeclWorkload,
                    Token::Target => Token::DeclTarget,
                    _ => Token::DeclCredential,
                };
            }
            _ => {}
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn kinds(text: &str) -> Vec<Token<'_>> {
        lex(text)
            .tokens
            .into_iter()
            .map(|(_, token, _)| token)
            .collect()
    }

    #[test]
    fn lexes_an_alternative_with_spans() {
        let lexed = lex(r#"github { ref like "refs/tags/v*" }"#);
        assert!(lexed.errors.is_empty());
        let spans: Vec<_> = lexed
            .tokens
            .iter()
            .map(|(start, _, end)| (*start, *end))
            .collect();
        assert_eq!(
            spans,
            vec![(0, 6), (7, 8), (9, 12), (13, 17), (18, 32), (33, 34)]
        );
        assert_eq!(
            kinds(r#"github { ref like "refs/tags/v*" }"#),
            vec![
                Token::Ident("github"),
                Token::LBrace,
                Token::Ident("ref"),
                Token::Like,
                Token::Str("refs/tags/v*".to_owned()),
                Token::RBrace,
            ]
        );
    }

    #[test]
    fn operators_and_comments() {
        let tokens = kinds("a == b != c = !d && e || f // trailing == comment\n[1, -2]");
        assert_eq!(
            tokens,
            vec![
                Token::Ident("a"),
                Token::EqEq,
                Token::Ident("b"),
                Token::NotEq,
                Token::Ident("c"),
                Token::Assign,
                Token::Bang,
                Token::Ident("d"),
                Token::AndAnd,
                Token::Ident("e"),
                Token::OrOr,
                Token::Ident("f"),
                Token::LBracket,
                Token::Int(1),
                Token::Comma,
                Token::Int(-2),
                Token::RBracket,
            ]
        );
    }

    #[test]
    fn keywords_are_not_identifiers() {
        assert_eq!(kinds("in inside"), vec![Token::In, Token::Ident("inside")]);
        assert_eq!(kinds("has_x has"), vec![Token::Ident("has_x"), Token::Has]);
    }

    #[test]
    fn string_escapes_are_decoded() {
        assert_eq!(
            kinds(r#""a\"b\\c\nd\te""#),
            vec![Token::Str("a\"b\\c\nd\te".to_owned())]
        );
    }

    #[test]
    fn unterminated_string_stops_at_end_of_line() {
        let lexed = lex("x == \"abc\ny");
        assert_eq!(lexed.errors, vec![(LexError::UnterminatedString, 5..9)]);
        assert_eq!(
            lexed.tokens.last().map(|(_, token, _)| token.clone()),
            Some(Token::Ident("y"))
        );
    }

    #[test]
    fn control_characters_in_strings_are_errors_at_the_character() {
        let lexed = lex("a \"x\u{1b}[31m\" b");
        assert_eq!(
            lexed.errors,
            vec![(
                LexError::ControlInString {
                    ch: '\u{1b}',
                    offset: 1
                },
                4..5
            )]
        );
        assert_eq!(lexed.tokens.len(), 3, "the string still ends at its quote");
        // Bidirectional controls, invisible characters, whitespace other than the space: a
        // string that holds one looks like another string.
        for hidden in [
            '\u{202E}',
            '\u{200B}',
            '\u{FEFF}',
            '\u{A0}',
            '\u{180E}',
            '\u{E0041}',
        ] {
            let text = format!("\"orders{hidden}\"");
            assert_eq!(lex(&text).errors.len(), 1, "{hidden:?}");
        }
        assert!(lex("\"a\tb\"").errors.is_empty(), "a raw tab is allowed");
        assert!(lex("\"ünïcode ok\"").errors.is_empty());
    }

    #[test]
    fn string_longer_than_the_bound_is_reported_at_its_quote() {
        let longest = format!("x \"{}\" y", "a".repeat(MAX_STRING_BYTES));
        assert_eq!(lex(&longest).errors, vec![]);
        let too_long = format!("x \"{}\" y", "é".repeat(MAX_STRING_BYTES / 2 + 1));
        let lexed = lex(&too_long);
        assert_eq!(lexed.errors, vec![(LexError::StringTooLong, 2..3)]);
        assert_eq!(
            lexed.tokens.last().map(|(_, token, _)| token.clone()),
            Some(Token::Ident("y"))
        );
    }

    #[test]
    fn invalid_escape_is_reported() {
        let lexed = lex(r#"x "a\qb" y"#);
        let error = LexError::InvalidEscape {
            escape: 'q',
            offset: 2,
        };
        assert_eq!(lexed.errors, vec![(error, 4..6)]);
        assert_eq!(
            lexed.tokens.last().map(|(_, token, _)| token.clone()),
            Some(Token::Ident("y"))
        );
    }

    #[test]
    fn integer_bounds() {
        assert_eq!(kinds("9223372036854775807"), vec![Token::Int(i64::MAX)]);
        assert_eq!(kinds("-9223372036854775808"), vec![Token::Int(i64::MIN)]);
        let lexed = lex("9223372036854775808");
        assert_eq!(lexed.errors, vec![(LexError::IntegerOverflow, 0..19)]);
    }

    #[test]
    fn durations_are_seconds() {
        assert_eq!(
            kinds("30s 15m 1h 1h30m 7d 1d2h3m4s"),
            vec![
                Token::Duration(30),
                Token::Duration(900),
                Token::Duration(3600),
                Token::Duration(5400),
                Token::Duration(604_800),
                Token::Duration(93_784),
            ]
        );
        assert_eq!(kinds("365d"), vec![Token::Duration(MAX_DURATION_S)]);
        let malformed = LexError::InvalidDuration(DurationError::Malformed);
        for text in [
            "15min",
            "1m1h",
            "1h1h",
            "1x",
            "1h30",
            "99999999999999999999999s",
        ] {
            let lexed = lex(text);
            let expected = if text.starts_with("999") {
                LexError::InvalidDuration(DurationError::TooLong)
            } else {
                malformed.clone()
            };
            assert_eq!(lexed.errors, vec![(expected, 0..text.len())], "{text}");
        }
        let zero = LexError::InvalidDuration(DurationError::Zero);
        assert_eq!(lex("0s").errors, vec![(zero, 0..2)]);
        let too_long = LexError::InvalidDuration(DurationError::TooLong);
        assert_eq!(lex("366d").errors, vec![(too_long, 0..4)]);
    }

    #[test]
    fn new_operators_and_keywords() {
        assert_eq!(
            kinds("< <= > >= 1..10 matches @ condition"),
            vec![
                Token::Lt,
                Token::Le,
                Token::Gt,
                Token::Ge,
                Token::Int(1),
                Token::DotDot,
                Token::Int(10),
                Token::Matches,
                Token::At,
                Token::Condition,
            ]
        );
        let tokens = kinds("credential c { jwt { } } permit p { credential c }");
        assert_eq!(tokens.first(), Some(&Token::DeclCredential));
        assert!(tokens.contains(&Token::Credential));
    }

    #[test]
    fn invalid_characters_are_skipped_and_reported() {
        let lexed = lex("a $ b");
        assert_eq!(lexed.errors, vec![(LexError::InvalidChar, 2..3)]);
        assert_eq!(lexed.tokens.len(), 2);
    }

    #[test]
    fn declaration_keywords_are_told_apart_from_clauses() {
        let tokens = kinds("workload w { } permit p { workload w target t } target t { }");
        assert_eq!(tokens.first(), Some(&Token::DeclWorkload));
        assert!(tokens.contains(&Token::Workload));
        assert!(tokens.contains(&Token::Target));
        assert_eq!(
            tokens.iter().filter(|t| **t == Token::DeclTarget).count(),
            1
        );
    }

    #[test]
    fn clause_keywords_of_a_rule_without_its_brace_stay_clauses() {
        let tokens = kinds("permit q workload w target api }\nworkload x { }");
        assert_eq!(
            tokens.iter().filter(|t| **t == Token::DeclWorkload).count(),
            1
        );
        assert!(tokens.contains(&Token::Workload));
        assert!(tokens.contains(&Token::Target));
    }

    #[test]
    fn declaration_after_missing_brace_is_recognised() {
        let tokens = kinds("workload a { github { } \n workload b { }");
        assert_eq!(
            tokens.iter().filter(|t| **t == Token::DeclWorkload).count(),
            2
        );
    }
}
