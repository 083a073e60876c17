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
    #[error("integer literal out of range")]
    IntegerOverflow,
}

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

    #[regex("[A-Za-z_][A-Za-z0-9_]*")]
    Ident(&'input str),
    #[token("\"", lex_string)]
    Str(String),
    #[regex("-?[0-9]+", |lex| lex.slice().parse::<i64>().map_err(|_| LexError::IntegerOverflow))]
    Int(i64),
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
        };
        f.write_str(text)
    }
}

/// Scans a string literal after its opening quote, unescaping as it goes. The span of an
/// unterminated string covers the rest of its line.
/// An invalid escape does not end the string: the scan goes on to the closing quote, so that
/// the rest of the line is not read as code.
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
            other => value.push(other),
        }
    }
    lex.bump(lex.remainder().len());
    Err(LexError::UnterminatedString)
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
        match result {
            Ok(token) => lexed.tokens.push((span.start, token, span.end)),
            Err(error) => {
                let substitute = match error {
                    LexError::UnterminatedString | LexError::InvalidEscape { .. } => {
                        Some(Token::Str(String::new()))
                    }
                    LexError::IntegerOverflow => Some(Token::Int(0)),
                    LexError::InvalidChar => None,
                };
                if let Some(token) = substitute {
                    lexed.tokens.push((span.start, token, span.end));
                }
                lexed.errors.push((error, span));
            }
        }
    }
    mark_declaration_keywords(&mut lexed.tokens);
    lexed
}

/// Turns `workload` and `target` into their declaration forms where they open a declaration:
/// outside any braces, or wherever they are followed by a name and `{` (so that a declaration
/// after a missing `}` is still recognised).
fn mark_declaration_keywords(tokens: &mut [Spanned<'_>]) {
    let mut depth = 0usize;
    for idx in 0..tokens.len() {
        let opens_block = matches!(
            (tokens.get(idx + 1), tokens.get(idx + 2)),
            (Some((_, Token::Ident(_), _)), Some((_, Token::LBrace, _)))
        );
        let Some((_, token, _)) = tokens.get_mut(idx) else {
            break;
        };
        match token {
            Token::LBrace => depth += 1,
            Token::RBrace => depth = depth.saturating_sub(1),
            Token::Permit | Token::Forbid => depth = 0,
            Token::Workload | Token::Target if depth == 0 || opens_block => {
                depth = 0;
                *token = match token {
                    Token::Workload => Token::DeclWorkload,
                    _ => Token::DeclTarget,
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
    fn declaration_after_missing_brace_is_recognised() {
        let tokens = kinds("workload a { github { } \n workload b { }");
        assert_eq!(
            tokens.iter().filter(|t| **t == Token::DeclWorkload).count(),
            2
        );
    }
}
