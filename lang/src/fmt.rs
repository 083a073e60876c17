//! The Gate formatter behind `policyc fmt`: the text of one file in, the same file in canonical
//! layout out (the rules are listed in `docs/gate.md`, "Formatting").
//!
//! It works on the token stream of [`crate::lexer`] and the comments between tokens, not on the
//! syntax tree. It knows braces, brackets, parentheses, operators by their spelling, and the few
//! words that open a clause or a field; any other token is kept as written, with no space or one
//! space before it as in the source, so that the formatter keeps working as declarations and
//! operators are added.
//!
//! Within an item, a run of tokens becomes a tree of bracketed groups; a run that does not fit
//! on its line is broken at its `&&` / `||` chain first, then inside the groups of a part that
//! still does not fit, the outermost first.
//!
//! A file that does not parse is refused with its diagnostics. Before returning, the formatter
//! checks that its output lexes to the same tokens and the same comments as its input, but for
//! the comma after the last element of a set, which it writes when the set spans several lines
//! and drops when the set fits on one.

use std::mem;
use std::ops::Range;

use crate::diagnostic::{Diagnostic, Severity, Sources};
use crate::lexer;
use crate::parser;
use crate::source::SourceFile;

/// The widest line, in characters, that the formatter makes by joining; a longer line is broken
/// at the `&&` / `||` chain of its condition and inside its brackets where it has them.
pub const MAX_WIDTH: usize = 100;

/// Spaces per brace level.
const INDENT_WIDTH: usize = 2;

/// Words that open a clause inside a declaration, so they start a line there. The other items
/// of a `test` start a line as fields (`action = …`) and blocks (`request {`, `github {`) do.
const CLAUSE_KEYWORDS: &[&str] = &[
    "workload",
    "target",
    "credential",
    "when",
    "expect",
    "endpoint",
];

/// Words that expect an operand after them: a word after one of these continues its line.
const PREFIX_KEYWORDS: &[&str] = &[
    "endpoint",
    "workload",
    "target",
    "credential",
    "condition",
    "when",
    "permit",
    "forbid",
    "has",
    "in",
    "like",
    "matches",
];

/// Binary operators, written with one space on each side.
const SPACED_OPERATORS: &[&str] = &["==", "!=", "=", "&&", "||", "<", "<=", ">", ">="];

/// Why a file was not formatted.
#[derive(Debug, thiserror::Error)]
pub enum FormatError {
    /// The file has syntax errors; they are in `diagnostics`.
    #[error("`{name}` does not parse")]
    Syntax {
        name: String,
        diagnostics: Vec<Diagnostic>,
    },
    /// The formatted text would not lex to the same tokens and comments: a formatter bug, so the
    /// file is left alone.
    #[error("formatting `{name}` would change its tokens or comments, so it is left as it is")]
    Unstable { name: String },
}

/// Formats the text of one Gate file, `name` being how diagnostics name it. The result ends in a
/// newline unless the file holds nothing at all.
pub fn format_source(name: &str, text: &str) -> Result<String, FormatError> {
    let diagnostics = syntax_errors(name, text);
    if !diagnostics.is_empty() {
        return Err(FormatError::Syntax {
            name: name.to_owned(),
            diagnostics,
        });
    }
    let unstable = || FormatError::Unstable {
        name: name.to_owned(),
    };
    let source = Source::read(text).ok_or_else(unstable)?;
    let formatted = source.format().ok_or_else(unstable)?;
    if !same_tokens_and_comments(text, &formatted) {
        return Err(unstable());
    }
    Ok(formatted)
}

/// Every `//` comment of a file, in order, without trailing whitespace; `None` when the file
/// does not lex. The formatter keeps this list unchanged.
pub fn comments(text: &str) -> Option<Vec<&str>> {
    let source = Source::read(text)?;
    let mut all = Vec::new();
    for gap in &source.gaps {
        all.extend(gap.trailing);
        all.extend(gap.own_line.iter().map(|comment| comment.text));
    }
    Some(all)
}

/// The lexical and syntax errors of one file, in source order.
fn syntax_errors(name: &str, text: &str) -> Vec<Diagnostic> {
    let (_, mut reports) = parser::parse_file(0, text);
    reports.sort_by_key(|report| report.span().start);
    let sources = Sources::new(&[SourceFile::new(name, text)]);
    reports
        .into_iter()
        .map(|report| sources.finish(report))
        .filter(|diagnostic| diagnostic.severity() == Severity::Error)
        .collect()
}

fn same_tokens_and_comments(before: &str, after: &str) -> bool {
    significant_tokens(before) == significant_tokens(after)
        && comments(before).is_some()
        && comments(before) == comments(after)
}

/// The tokens of a file but for the comma after the last element of a set, which the formatter
/// writes when the set spans several lines and drops when it fits on one.
fn significant_tokens(text: &str) -> Vec<lexer::Token<'_>> {
    let tokens: Vec<lexer::Token<'_>> = lexer::lex(text)
        .tokens
        .into_iter()
        .map(|(_, token, _)| token)
        .collect();
    let is_trailing_comma = |pos: usize| {
        let before = pos.checked_sub(1).and_then(|prev| tokens.get(prev));
        matches!(tokens.get(pos), Some(lexer::Token::Comma))
            && matches!(tokens.get(pos + 1), Some(lexer::Token::RBracket))
            && !matches!(
                before,
                None | Some(lexer::Token::LBracket | lexer::Token::Comma)
            )
    };
    tokens
        .iter()
        .enumerate()
        .filter(|&(pos, _)| !is_trailing_comma(pos))
        .map(|(_, token)| token.clone())
        .collect()
}

/// A comment on a line of its own.
#[derive(Debug, Clone, Copy)]
struct Comment<'a> {
    text: &'a str,
    /// A blank line separates it from what comes before it.
    blank_before: bool,
}

/// What lies between two tokens (or before the first, or after the last).
#[derive(Debug, Default)]
struct Gap<'a> {
    /// A comment on the same line as the token before the gap.
    trailing: Option<&'a str>,
    /// Comments on lines of their own, in order.
    own_line: Vec<Comment<'a>>,
    /// A blank line separates the last comment (or the token before) from the token after.
    blank_after: bool,
}

impl Gap<'_> {
    /// Whether the source has a blank line before the first thing on its own line in this gap.
    fn blank_before_first(&self) -> bool {
        self.own_line
            .first()
            .map_or(self.blank_after, |comment| comment.blank_before)
    }
}

/// Reads the whitespace and comments between two tokens; `None` if anything else is there.
fn read_gap(text: &str, after_token: bool) -> Option<Gap<'_>> {
    let mut gap = Gap::default();
    let mut newlines = 0;
    let mut on_token_line = after_token;
    let mut rest = text;
    while let Some(ch) = rest.chars().next() {
        if rest.starts_with("//") {
            let end = rest.find('\n').unwrap_or(rest.len());
            let text = rest.get(..end)?.trim_end();
            if on_token_line {
                gap.trailing = Some(text);
            } else {
                gap.own_line.push(Comment {
                    text,
                    blank_before: newlines >= 2,
                });
            }
            on_token_line = false;
            newlines = 0;
            rest = rest.get(end..)?;
            continue;
        }
        if !ch.is_whitespace() {
            return None;
        }
        if ch == '\n' {
            newlines += 1;
            on_token_line = false;
        }
        rest = rest.get(ch.len_utf8()..)?;
    }
    gap.blank_after = newlines >= 2;
    Some(gap)
}

/// A file as the formatter sees it: token texts and the gaps around them. `gaps[i]` comes before
/// token `i`; there is one more gap than tokens.
struct Source<'a> {
    tokens: Vec<&'a str>,
    /// Whether the source has whitespace or a comment right before each token.
    spaced: Vec<bool>,
    gaps: Vec<Gap<'a>>,
}

/// A line-level unit of layout: a declaration, a clause, a field, an alternative, an annotation,
/// or the condition of a `condition` declaration.
#[derive(Debug, Default)]
struct Item {
    elems: Vec<Elem>,
}

#[derive(Debug)]
enum Elem {
    Token(usize),
    Block(Block),
}

/// A `{ … }`: the indices of its braces and the items between them.
#[derive(Debug)]
struct Block {
    open: usize,
    items: Vec<Item>,
    close: usize,
}

impl Item {
    fn first_token(&self) -> Option<usize> {
        match self.elems.first()? {
            Elem::Token(idx) => Some(*idx),
            Elem::Block(block) => Some(block.open),
        }
    }
}

impl<'a> Source<'a> {
    fn read(text: &'a str) -> Option<Source<'a>> {
        let lexed = lexer::lex(text);
        if !lexed.errors.is_empty() {
            return None;
        }
        let mut source = Source {
            tokens: Vec::with_capacity(lexed.tokens.len()),
            spaced: Vec::with_capacity(lexed.tokens.len()),
            gaps: Vec::with_capacity(lexed.tokens.len() + 1),
        };
        let mut prev_end = 0;
        for (start, _, end) in &lexed.tokens {
            let between = text.get(prev_end..*start)?;
            source
                .gaps
                .push(read_gap(between, !source.tokens.is_empty())?);
            source.spaced.push(!between.is_empty());
            source.tokens.push(text.get(*start..*end)?);
            prev_end = *end;
        }
        let rest = text.get(prev_end..)?;
        source.gaps.push(read_gap(rest, !source.tokens.is_empty())?);
        Some(source)
    }

    fn token(&self, idx: usize) -> &'a str {
        self.tokens.get(idx).copied().unwrap_or_default()
    }

    fn gap(&self, idx: usize) -> &Gap<'a> {
        const EMPTY: &Gap<'static> = &Gap {
            trailing: None,
            own_line: Vec::new(),
            blank_after: false,
        };
        self.gaps.get(idx).unwrap_or(EMPTY)
    }

    fn format(&self) -> Option<String> {
        let mut pos = 0;
        let items = self.build_items(&mut pos, true)?;
        if pos != self.tokens.len() {
            return None;
        }
        let mut printer = Printer {
            source: self,
            out: String::new(),
            line: Line::default(),
            comments_written: None,
            block_after: None,
        };
        let end = self.gap(self.tokens.len());
        printer.items(&items, 0, true, &[], &end.own_line);
        printer.finish_line();
        Some(printer.out)
    }

    /// Groups tokens from `pos` into items up to the `}` that closes the block (left unread) or,
    /// at the top level, the end of the file. `None` when the braces do not balance.
    fn build_items(&self, pos: &mut usize, top_level: bool) -> Option<Vec<Item>> {
        let mut items = Vec::new();
        let mut current = Item::default();
        let mut depth = 0usize;
        while *pos < self.tokens.len() {
            let idx = *pos;
            let elem = match self.token(idx) {
                "}" if top_level => return None,
                "}" => break,
                "{" => {
                    *pos += 1;
                    let inner = self.build_items(pos, false)?;
                    let close = *pos;
                    if self.tokens.get(close) != Some(&"}") {
                        return None;
                    }
                    *pos += 1;
                    Elem::Block(Block {
                        open: idx,
                        items: inner,
                        close,
                    })
                }
                _ => {
                    *pos += 1;
                    Elem::Token(idx)
                }
            };
            if self.starts_item(&current, &elem, depth, top_level) {
                items.push(mem::take(&mut current));
                depth = 0;
            }
            if let Elem::Token(idx) = elem {
                match self.token(idx) {
                    "(" | "[" => depth += 1,
                    ")" | "]" => depth = depth.saturating_sub(1),
                    _ => {}
                }
            }
            current.elems.push(elem);
        }
        if !top_level && *pos >= self.tokens.len() {
            return None;
        }
        if !current.elems.is_empty() {
            items.push(current);
        }
        Some(items)
    }

    /// Whether `elem` begins a new item after `current`, `depth` being the bracket depth reached
    /// inside `current`.
    fn starts_item(&self, current: &Item, elem: &Elem, depth: usize, top_level: bool) -> bool {
        let Some(last) = current.elems.last() else {
            return false;
        };
        if matches!(last, Elem::Block(_)) {
            return true;
        }
        let Elem::Token(idx) = *elem else {
            return false;
        };
        if depth > 0 {
            return false;
        }
        let text = self.token(idx);
        let prev = self.token(idx.wrapping_sub(1));
        let next = self.token(idx + 1);
        if text.starts_with('@') {
            return true;
        }
        let in_annotation = current
            .first_token()
            .is_some_and(|first| self.token(first).starts_with('@'));
        if in_annotation {
            return prev == ")" || (is_word(text) && is_word(prev));
        }
        !top_level
            && is_word(text)
            && ends_operand(prev)
            && next != "."
            && (CLAUSE_KEYWORDS.contains(&text) || next == "=" || next == "{")
    }

    /// Whether the formatter puts a space between tokens `idx - 1` and `idx` on one line.
    fn space_before(&self, idx: usize) -> bool {
        let left = self.token(idx.wrapping_sub(1));
        let right = self.token(idx);
        let in_source = self.spaced.get(idx).copied().unwrap_or(true);
        space_between(left, right, in_source)
    }

    /// The width of `tokens` written on one line, without the trailing comma of a set.
    fn flat_width(&self, tokens: impl IntoIterator<Item = usize>) -> usize {
        let mut width = 0;
        let mut first = true;
        for idx in tokens {
            if self.is_trailing_comma(idx) {
                continue;
            }
            let space = !first && self.space_before(idx);
            width += self.token(idx).chars().count() + usize::from(space);
            first = false;
        }
        width
    }

    /// Whether token `idx` is the comma after the last element of a set (or a list of days),
    /// which the formatter writes only when the set spans several lines.
    fn is_trailing_comma(&self, idx: usize) -> bool {
        let before = self.token(idx.wrapping_sub(1));
        self.token(idx) == "," && self.token(idx + 1) == "]" && !matches!(before, "[" | ",")
    }

    /// Whether a comment lies anywhere between the brackets of `group`.
    fn has_comments(&self, group: &Group) -> bool {
        (group.open + 1..=group.close).any(|idx| {
            let gap = self.gap(idx);
            gap.trailing.is_some() || !gap.own_line.is_empty()
        })
    }

    /// The tokens of `run` with each pair of matching brackets made into a group. A bracket
    /// without its match (which a file that parses does not have) stays a plain token.
    fn nodes(&self, run: &[usize]) -> Vec<Node> {
        let mut open_groups: Vec<(usize, Vec<Node>)> = Vec::new();
        let mut current = Vec::new();
        for &idx in run {
            let text = self.token(idx);
            if matches!(text, "(" | "[") {
                open_groups.push((idx, mem::take(&mut current)));
                continue;
            }
            let matching = |open: usize| match self.token(open) {
                "(" => text == ")",
                "[" => text == "]",
                _ => false,
            };
            match open_groups.pop() {
                Some((open, outer)) if matching(open) => {
                    let inner = mem::replace(&mut current, outer);
                    current.push(Node::Group(Group {
                        open,
                        inner,
                        close: idx,
                    }));
                }
                unmatched => {
                    open_groups.extend(unmatched);
                    current.push(Node::Token(idx));
                }
            }
        }
        while let Some((open, outer)) = open_groups.pop() {
            let inner = mem::replace(&mut current, outer);
            current.push(Node::Token(open));
            current.extend(inner);
        }
        current
    }
}

/// A token of a run, or a bracketed group of tokens.
#[derive(Debug)]
enum Node {
    Token(usize),
    Group(Group),
}

/// A `( … )` or a `[ … ]`: the indices of its brackets and what lies between them.
#[derive(Debug)]
struct Group {
    open: usize,
    inner: Vec<Node>,
    close: usize,
}

impl Node {
    fn first_token(&self) -> usize {
        match self {
            Node::Token(idx) => *idx,
            Node::Group(group) => group.open,
        }
    }

    fn last_token(&self) -> usize {
        match self {
            Node::Token(idx) => *idx,
            Node::Group(group) => group.close,
        }
    }

    fn is_token(&self, source: &Source<'_>, text: &str) -> bool {
        matches!(self, Node::Token(idx) if source.token(*idx) == text)
    }
}

/// The indices of the tokens of `nodes`, which follow each other in the file.
fn token_range(nodes: &[Node]) -> Range<usize> {
    match (nodes.first(), nodes.last()) {
        (Some(first), Some(last)) => first.first_token()..last.last_token() + 1,
        _ => 0..0,
    }
}

/// The elements of a `[ … ]`, each with the comma that follows it in the source, if any.
fn list_elements(source: &Source<'_>, inner: &[Node]) -> Vec<(Range<usize>, Option<usize>)> {
    let mut elements = Vec::new();
    let mut start = 0;
    for (pos, node) in inner.iter().enumerate() {
        if node.is_token(source, ",") {
            elements.push((start..pos, Some(node.first_token())));
            start = pos + 1;
        }
    }
    if start < inner.len() {
        elements.push((start..inner.len(), None));
    }
    elements
}

/// A word: a name, a keyword or a literal.
fn is_word(text: &str) -> bool {
    let mut chars = text.chars();
    match chars.next() {
        Some(first) if first.is_alphanumeric() || first == '_' || first == '"' => true,
        Some('-') => chars.next().is_some_and(|second| second.is_ascii_digit()),
        _ => false,
    }
}

/// Whether a token can end an operand, so that a clause or a field may start after it.
fn ends_operand(text: &str) -> bool {
    (is_word(text) && !PREFIX_KEYWORDS.contains(&text)) || text == ")" || text == "]"
}

/// The spacing rule between two tokens on one line; `in_source` decides between tokens the
/// formatter has no rule for.
fn space_between(left: &str, right: &str, in_source: bool) -> bool {
    if matches!(right, "," | ")" | "]") || matches!(left, "(" | "[" | "!" | "@") {
        return false;
    }
    if matches!(right, "{" | "}") || matches!(left, "{" | "}") {
        return true;
    }
    if left == "," {
        return true;
    }
    if matches!(left, "." | "..") || matches!(right, "." | "..") {
        return false;
    }
    let spaced_operator = |text: &str| SPACED_OPERATORS.contains(&text);
    if matches!(right, "(" | "[") {
        if spaced_operator(left) || PREFIX_KEYWORDS.contains(&left) {
            return true;
        }
        return in_source;
    }
    if spaced_operator(left) || spaced_operator(right) {
        return true;
    }
    let left_ends_operand = is_word(left) || matches!(left, ")" | "]");
    if left_ends_operand && (is_word(right) || right == "!") {
        return true;
    }
    in_source
}

/// The line being written: its indentation (in levels), its text and its trailing comment.
#[derive(Debug, Default)]
struct Line<'a> {
    level: usize,
    text: String,
    comment: Option<&'a str>,
}

struct Printer<'s, 'a> {
    source: &'s Source<'a>,
    out: String,
    line: Line<'a>,
    /// The first token of the run being written when its comments are already written, above
    /// its item.
    comments_written: Option<usize>,
    /// The last token of the run being written when a block follows it, so that the comment
    /// after the token moves into the block.
    block_after: Option<usize>,
}

impl<'a> Printer<'_, 'a> {
    fn finish_line(&mut self) {
        let line = mem::take(&mut self.line);
        if line.text.is_empty() && line.comment.is_none() {
            return;
        }
        self.indent(line.level);
        self.out.push_str(&line.text);
        if let Some(comment) = line.comment {
            if !line.text.is_empty() {
                self.out.push(' ');
            }
            self.out.push_str(comment);
        }
        self.out.push('\n');
    }

    fn indent(&mut self, level: usize) {
        self.out
            .extend(std::iter::repeat_n(' ', level * INDENT_WIDTH));
    }

    /// A blank line, unless at the start of the file or after another blank line.
    fn blank(&mut self) {
        self.finish_line();
        if !self.out.is_empty() && !self.out.ends_with("\n\n") {
            self.out.push('\n');
        }
    }

    fn comment_line(&mut self, level: usize, text: &str) {
        self.finish_line();
        self.indent(level);
        self.out.push_str(text);
        self.out.push('\n');
    }

    fn start_line(&mut self, level: usize) {
        self.finish_line();
        self.line.level = level;
    }

    fn line_width(&self) -> usize {
        self.line.level * INDENT_WIDTH + self.line.text.chars().count()
    }

    /// Writes the items of a block (or of the file, `top_level`) at `level`: first the comments
    /// `moved` there from around the opening brace, then each item with its own comments, then
    /// the comments `dangling` before the closing brace (or the end of the file).
    fn items(
        &mut self,
        items: &[Item],
        level: usize,
        top_level: bool,
        moved: &[&str],
        dangling: &[Comment<'_>],
    ) {
        for text in moved {
            self.comment_line(level, text);
        }
        let mut after_annotation = false;
        for (item_idx, item) in items.iter().enumerate() {
            let Some(first) = item.first_token() else {
                continue;
            };
            let gap = self.source.gap(first);
            let first_blank = match (item_idx, top_level) {
                (0, _) => false,
                (_, true) => !after_annotation,
                (_, false) => gap.blank_before_first(),
            };
            for (comment_idx, comment) in gap.own_line.iter().enumerate() {
                let blank = if comment_idx == 0 {
                    first_blank
                } else {
                    comment.blank_before
                };
                if blank {
                    self.blank();
                }
                self.comment_line(level, comment.text);
            }
            let token_blank = if gap.own_line.is_empty() {
                first_blank
            } else {
                gap.blank_after
            };
            if token_blank {
                self.blank();
            }
            self.item(item, level);
            after_annotation = self.source.token(first).starts_with('@');
        }
        let has_content = !items.is_empty() || !moved.is_empty();
        for (comment_idx, comment) in dangling.iter().enumerate() {
            if comment.blank_before && (comment_idx > 0 || has_content) {
                self.blank();
            }
            self.comment_line(level, comment.text);
        }
    }

    fn item(&mut self, item: &Item, level: usize) {
        self.start_line(level);
        let mut elems = item.elems.iter().peekable();
        let mut first_in_item = true;
        while elems.peek().is_some() {
            let mut run = Vec::new();
            while let Some(Elem::Token(idx)) = elems.peek() {
                run.push(*idx);
                elems.next();
            }
            let block = match elems.peek() {
                Some(Elem::Block(block)) => {
                    elems.next();
                    Some(block)
                }
                _ => None,
            };
            if !run.is_empty() {
                self.run(&run, level, first_in_item, block.is_some());
                first_in_item = false;
            }
            if let Some(block) = block {
                self.block(block, level, first_in_item);
                first_in_item = false;
            }
        }
        self.finish_line();
    }

    /// Writes consecutive tokens of an item at `level` as a [`Printer::chain`] whose operators
    /// lead lines one level deeper.
    fn run(&mut self, run: &[usize], level: usize, first_in_item: bool, block_follows: bool) {
        self.comments_written = run.first().copied().filter(|_| first_in_item);
        self.block_after = run.last().copied().filter(|_| block_follows);
        let nodes = self.source.nodes(run);
        let place = Place {
            first_break: None,
            tail: if block_follows { " {".len() } else { 0 },
        };
        self.chain(&nodes, level, level + 1, place);
    }

    /// Writes `nodes`, a condition or any other run of tokens, as an item at `level`. When they
    /// do not fit, they are broken before each `||` outside brackets, or else before each `&&`,
    /// the operator leading a line at `op_level`; an `||` operand that still does not fit is
    /// broken before its own `&&`s, one level deeper. Brackets in a part that still does not fit
    /// are broken by [`Printer::seq`].
    fn chain(&mut self, nodes: &[Node], level: usize, op_level: usize, place: Place) {
        let ors = self.operators(nodes, "||");
        let at_ors = !ors.is_empty();
        let cuts = if at_ors {
            ors
        } else {
            self.operators(nodes, "&&")
        };
        let cont = level + 1;
        if cuts.is_empty() || self.fits(nodes, place) {
            self.seq(nodes, cont, place);
            return;
        }
        for piece in place.split(nodes, &cuts, op_level) {
            if !at_ors || self.fits(piece.nodes, piece.place) {
                self.seq(piece.nodes, cont, piece.place);
                continue;
            }
            let ands = self.operators(piece.nodes, "&&");
            for operand in piece.place.split(piece.nodes, &ands, op_level + 1) {
                self.seq(operand.nodes, cont, operand.place);
            }
        }
    }

    /// The positions in `nodes` of the operator `text` outside brackets, but for the first.
    fn operators(&self, nodes: &[Node], text: &str) -> Vec<usize> {
        let is_operator = |node: &Node| node.is_token(self.source, text);
        (1..nodes.len())
            .filter(|&pos| nodes.get(pos).is_some_and(is_operator))
            .collect()
    }

    /// Whether `nodes` fit on one line where `place` puts them.
    fn fits(&self, nodes: &[Node], place: Place) -> bool {
        let range = token_range(nodes);
        let start = match place.first_break {
            Some(level) => level * INDENT_WIDTH,
            None => self.line_width() + self.lead_space(range.start),
        };
        start + self.source.flat_width(range) + place.tail <= MAX_WIDTH
    }

    /// The space the formatter writes before token `idx` if it continues the current line.
    fn lead_space(&self, idx: usize) -> usize {
        usize::from(!self.line.text.is_empty() && self.source.space_before(idx))
    }

    /// Writes `nodes` where `place` puts them, without breaking their chain, each group as
    /// [`Printer::group`] decides. A comment breaks the line, which goes on at the same level,
    /// and at least at `cont`.
    fn seq(&mut self, nodes: &[Node], cont: usize, place: Place) {
        let mut first_break = place.first_break;
        for (pos, node) in nodes.iter().enumerate() {
            self.break_before(node.first_token(), first_break.take(), cont);
            let Node::Group(group) = node else {
                self.emit(node.first_token());
                continue;
            };
            let rest = nodes.get(pos + 1..).unwrap_or_default();
            let rest_width = self.rest_width(rest) + place.tail;
            self.group(group, cont, rest_width);
        }
    }

    /// Writes `group` from the current line, followed on its last line by `rest_width` columns.
    /// It stays on the line when it holds no comment and fits there, or when it holds a single
    /// token, which breaking would not shorten; parentheses around nothing but parentheses stay
    /// next to them, `((` … `))`; any other group is broken.
    fn group(&mut self, group: &Group, cont: usize, rest_width: usize) {
        if self.stays_flat(group, rest_width) {
            self.flat_group(group);
        } else if self.hugs_its_group(group) {
            self.emit(group.open);
            let inner = Place {
                first_break: None,
                tail: ")".len() + rest_width,
            };
            self.seq(&group.inner, cont, inner);
            self.emit(group.close);
        } else if self.source.token(group.open) == "[" {
            self.broken_list(group);
        } else {
            self.broken_parens(group);
        }
    }

    /// The width of `rest` where it follows other tokens on a line.
    fn rest_width(&self, rest: &[Node]) -> usize {
        let rest = token_range(rest);
        if rest.is_empty() {
            return 0;
        }
        usize::from(self.source.space_before(rest.start)) + self.source.flat_width(rest)
    }

    /// Whether `group` is a `( … )` around nothing but another `( … )`, with no comment between
    /// the two, so that breaking it would only move the inner one down a line: its brackets stay
    /// next to those of the inner group, `((` and `))`.
    fn hugs_its_group(&self, group: &Group) -> bool {
        let source = self.source;
        let [Node::Group(inner)] = group.inner.as_slice() else {
            return false;
        };
        let no_comments = |idx: usize| {
            let gap = source.gap(idx);
            gap.trailing.is_none() && gap.own_line.is_empty()
        };
        source.token(group.open) == "("
            && source.token(inner.open) == "("
            && no_comments(inner.open)
            && no_comments(group.close)
    }

    /// Whether `group` stays on the current line, followed there by `rest_width` columns.
    fn stays_flat(&self, group: &Group, rest_width: usize) -> bool {
        let source = self.source;
        if source.has_comments(group) {
            return false;
        }
        let inside = group.open + 1..group.close;
        if inside.filter(|&idx| !source.is_trailing_comma(idx)).count() <= 1 {
            return true;
        }
        let width = source.flat_width(group.open..group.close + 1);
        self.line_width() + self.lead_space(group.open) + width + rest_width <= MAX_WIDTH
    }

    /// Writes `group`, which holds no comment, on the current line.
    fn flat_group(&mut self, group: &Group) {
        for idx in group.open..=group.close {
            if !self.source.is_trailing_comma(idx) {
                self.emit(idx);
            }
        }
    }

    /// Writes a `[ … ]` with one element per line, one level deeper than the line of its `[`,
    /// each element followed by a comma, and the `]` on a line of its own.
    fn broken_list(&mut self, group: &Group) {
        let level = self.line.level;
        self.emit(group.open);
        for (range, comma) in list_elements(self.source, &group.inner) {
            let element = group.inner.get(range).unwrap_or_default();
            let place = Place {
                first_break: Some(level + 1),
                tail: ",".len(),
            };
            self.seq(element, level + 2, place);
            match comma {
                Some(comma) => self.list_comma(comma, level + 1),
                None => self.line.text.push(','),
            }
        }
        self.close(group.close, level);
    }

    /// Writes the comma `comma` of a broken `[ … ]` right after its element, at `level`. The
    /// comments around it follow it: the first at the end of the line if it was there or the
    /// line has none, the others on lines of their own.
    fn list_comma(&mut self, comma: usize, level: usize) {
        let source = self.source;
        self.line.text.push(',');
        let own_line = &source.gap(comma).own_line;
        let after = source.gap(comma + 1).trailing;
        if own_line.is_empty() && self.line.comment.is_none() {
            self.line.comment = after;
            return;
        }
        for comment in own_line {
            self.comment_line(level, comment.text);
        }
        if let Some(text) = after {
            self.comment_line(level, text);
        }
    }

    /// Writes a `( … )` with the condition inside on lines of its own, one level deeper than the
    /// line of its `(`, the operators of its chain leading lines at that level too, and the `)`
    /// on a line of its own.
    fn broken_parens(&mut self, group: &Group) {
        let level = self.line.level;
        self.emit(group.open);
        let place = Place {
            first_break: Some(level + 1),
            tail: 0,
        };
        self.chain(&group.inner, level + 1, level + 1, place);
        self.close(group.close, level);
    }

    /// Writes the closing bracket of a broken group on a line at `level`. The comments on lines
    /// of their own before it stay with the group's contents, one level deeper.
    fn close(&mut self, close: usize, level: usize) {
        let source = self.source;
        self.finish_line();
        for comment in &source.gap(close).own_line {
            self.comment_line(level + 1, comment.text);
        }
        self.line.level = level;
        self.emit(close);
    }

    /// Starts a new line before token `idx` at `planned`, or, when a comment comes before the
    /// token, at the current line's level and at least `cont`. The comments on lines of their
    /// own before the token go between the lines.
    fn break_before(&mut self, idx: usize, planned: Option<usize>, cont: usize) {
        let source = self.source;
        let gap = source.gap(idx);
        let written = self.comments_written == Some(idx);
        let has_comments = !written && (gap.trailing.is_some() || !gap.own_line.is_empty());
        if planned.is_none() && !has_comments {
            return;
        }
        let level = planned.unwrap_or(self.line.level.max(cont));
        self.finish_line();
        if !written {
            for comment in &gap.own_line {
                self.comment_line(level, comment.text);
            }
        }
        self.line.level = level;
    }

    /// Writes token `idx` on the current line; the comment after it in the source ends the line.
    fn emit(&mut self, idx: usize) {
        self.push_token(idx);
        if self.block_after != Some(idx) {
            self.line.comment = self.source.gap(idx + 1).trailing;
        }
    }

    fn push_token(&mut self, idx: usize) {
        if !self.line.text.is_empty() && self.source.space_before(idx) {
            self.line.text.push(' ');
        }
        self.line.text.push_str(self.source.token(idx));
    }

    /// Writes a `{ … }` that follows the current line's tokens. The comments around its opening
    /// brace move inside it: a trailing one stays at the end of the brace's line, own-line ones
    /// open the block.
    fn block(&mut self, block: &Block, level: usize, first_in_item: bool) {
        let mut around_open: Vec<(&'a str, bool)> = Vec::new();
        if !first_in_item {
            let before = self.source.gap(block.open);
            around_open.extend(before.trailing.map(|text| (text, true)));
            around_open.extend(before.own_line.iter().map(|comment| (comment.text, false)));
        }
        let after = self.source.gap(block.open + 1);
        around_open.extend(after.trailing.map(|text| (text, true)));
        let open_comment = match around_open.first() {
            Some((text, true)) => Some(*text),
            _ => None,
        };
        let moved: Vec<&str> = around_open
            .iter()
            .skip(usize::from(open_comment.is_some()))
            .map(|(text, _)| *text)
            .collect();
        let dangling = &self.source.gap(block.close).own_line;
        if let Some(inline) = self.inline_item(block, level, around_open.is_empty()) {
            self.push_token(block.open);
            for idx in inline {
                if !self.source.is_trailing_comma(idx) {
                    self.push_token(idx);
                }
            }
            self.push_token(block.close);
            self.line.comment = self.source.gap(block.close + 1).trailing;
            return;
        }
        self.push_token(block.open);
        let empty = block.items.is_empty() && dangling.is_empty() && around_open.is_empty();
        if !empty {
            self.line.comment = open_comment;
            self.start_line(level + 1);
            self.items(&block.items, level + 1, false, &moved, dangling);
            self.start_line(level);
        }
        self.push_token(block.close);
        self.line.comment = self.source.gap(block.close + 1).trailing;
    }
}

impl Printer<'_, '_> {
    /// The tokens of a block that stays on its item's line: a block inside a declaration (not the
    /// declaration's own) whose one item holds no block and no comment, and that fits.
    fn inline_item(
        &self,
        block: &Block,
        level: usize,
        no_comment_before: bool,
    ) -> Option<Vec<usize>> {
        let [item] = block.items.as_slice() else {
            return None;
        };
        if level == 0 || !no_comment_before {
            return None;
        }
        let mut tokens = Vec::with_capacity(item.elems.len());
        for elem in &item.elems {
            let Elem::Token(idx) = elem else {
                return None;
            };
            tokens.push(*idx);
        }
        let commented = (block.open + 1..=block.close).any(|idx| {
            let gap = self.source.gap(idx);
            gap.trailing.is_some() || !gap.own_line.is_empty()
        });
        let width = self.line_width()
            + " { ".len()
            + self.source.flat_width(tokens.iter().copied())
            + " }".len();
        (!commented && width <= MAX_WIDTH).then_some(tokens)
    }
}

/// Where the formatter puts a run of nodes: on the current line or from a new line, and how
/// much room it leaves after it.
#[derive(Debug, Clone, Copy)]
struct Place {
    /// The level of the new line that the first token starts; `None` continues the current line.
    first_break: Option<usize>,
    /// The columns that follow the last token on its line (` {`, `,`).
    tail: usize,
}

/// A part of a chain broken by [`Place::split`], and where it goes.
struct Piece<'n> {
    nodes: &'n [Node],
    place: Place,
}

impl Place {
    /// `nodes` cut before each position in `cuts`, which are increasing: the first piece goes
    /// where `self` puts the whole, each of the others starts a line at `level`, and the last
    /// leaves the tail after it.
    fn split<'n>(self, nodes: &'n [Node], cuts: &[usize], level: usize) -> Vec<Piece<'n>> {
        let mut bounds = vec![0];
        bounds.extend(cuts);
        bounds.push(nodes.len());
        let n_pieces = cuts.len() + 1;
        bounds
            .windows(2)
            .enumerate()
            .filter_map(|(piece_idx, window)| {
                let [start, end] = *window else {
                    return None;
                };
                let first_break = if piece_idx == 0 {
                    self.first_break
                } else {
                    Some(level)
                };
                let tail = if piece_idx + 1 == n_pieces {
                    self.tail
                } else {
                    0
                };
                Some(Piece {
                    nodes: nodes.get(start..end).unwrap_or_default(),
                    place: Place { first_break, tail },
                })
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_trailing_comma_of_a_set_may_come_and_go() {
        let same = |before: &str, after: &str| same_tokens_and_comments(before, after);
        assert!(same("x in [1, 2,]", "x in [1, 2]"));
        assert!(same("x in [\n  1,\n  2,\n]", "x in [1, 2]"));
        assert!(!same("x in [1, 2]", "x in [1 2]"));
        assert!(!same("x in [,]", "x in []"));
        assert!(!same("x in [1,,]", "x in [1,]"));
        assert!(!same("x in [1] // a", "x in [1]"));
    }
}
