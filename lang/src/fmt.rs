//! The Gate formatter behind `policyc fmt`: the text of one file in, the same file in canonical
//! layout out (the rules are listed in `docs/gate.md`, "Formatting").
//!
//! It works on the token stream of [`crate::lexer`] and the comments between tokens, not on the
//! syntax tree. It knows braces, brackets, parentheses, operators by their spelling, and the few
//! words that open a clause or a field; any other token is kept as written, with no space or one
//! space before it as in the source, so that the formatter keeps working as declarations and
//! operators are added.
//!
//! A file that does not parse is refused with its diagnostics. Before returning, the formatter
//! checks that its output lexes to the same tokens and the same comments as its input.

use std::mem;

use crate::diagnostic::{Diagnostic, Severity, Sources};
use crate::lexer;
use crate::parser;
use crate::source::SourceFile;

/// The widest line, in characters, that the formatter makes by joining; a longer line is broken
/// at the `&&` / `||` chain of its condition where there is one.
pub const MAX_WIDTH: usize = 100;

/// Spaces per brace level.
const INDENT_WIDTH: usize = 2;

/// Words that open a clause inside a declaration, so they start a line there. The other items
/// of a `test` start a line as fields (`action = …`) and blocks (`request {`, `github {`) do.
const CLAUSE_KEYWORDS: &[&str] = &["workload", "target", "credential", "when", "expect"];

/// Words that expect an operand after them: a word after one of these continues its line.
const PREFIX_KEYWORDS: &[&str] = &[
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
    let tokens_before = lexer::lex(before).tokens;
    let tokens_after = lexer::lex(after).tokens;
    let same_tokens = tokens_before
        .iter()
        .map(|(_, token, _)| token)
        .eq(tokens_after.iter().map(|(_, token, _)| token));
    same_tokens && comments(before).is_some() && comments(before) == comments(after)
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

    /// The width of tokens `run` written on one line.
    fn flat_width(&self, run: &[usize]) -> usize {
        run.iter()
            .enumerate()
            .map(|(pos, &idx)| {
                let space = pos > 0 && self.space_before(idx);
                self.token(idx).chars().count() + usize::from(space)
            })
            .sum()
    }
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

    /// Writes consecutive tokens of an item, breaking lines at comments and, when the tokens do
    /// not fit, at their `&&` / `||` chain.
    fn run(&mut self, run: &[usize], level: usize, first_in_item: bool, block_follows: bool) {
        let breaks = self.chain_breaks(run, level, block_follows);
        for (pos, &idx) in run.iter().enumerate() {
            let gap = self.source.gap(idx);
            let has_comments = gap.trailing.is_some() || !gap.own_line.is_empty();
            let forced = has_comments && !(pos == 0 && first_in_item);
            let chain_level = breaks.get(pos).copied().flatten();
            if chain_level.is_some() || forced {
                let next_level = chain_level.unwrap_or(self.line.level.max(level + 1));
                self.finish_line();
                for comment in &gap.own_line {
                    self.comment_line(next_level, comment.text);
                }
                self.line.level = next_level;
            }
            self.push_token(idx);
            let is_last = pos + 1 == run.len();
            if !(is_last && block_follows) {
                self.line.comment = self.source.gap(idx + 1).trailing;
            }
        }
    }

    fn push_token(&mut self, idx: usize) {
        if !self.line.text.is_empty() && self.source.space_before(idx) {
            self.line.text.push(' ');
        }
        self.line.text.push_str(self.source.token(idx));
    }

    /// Where to break `run` when it does not fit on the current line: before each `||` outside
    /// brackets if there is one, else before each `&&`, one level deeper than `level`; an
    /// `||` operand that still does not fit breaks before its own `&&`s, two levels deeper.
    /// FIXME(#3): nothing breaks inside brackets, so a long set or parenthesised condition stays
    /// on one line past [`MAX_WIDTH`].
    fn chain_breaks(&self, run: &[usize], level: usize, block_follows: bool) -> Vec<Option<usize>> {
        let mut breaks = vec![None; run.len()];
        let start_width = self.line_width() + usize::from(!self.line.text.is_empty());
        let tail = if block_follows { 2 } else { 0 };
        if start_width + self.source.flat_width(run) + tail <= MAX_WIDTH {
            return breaks;
        }
        let mut depth = 0usize;
        let mut outer = Vec::new();
        for (pos, &idx) in run.iter().enumerate() {
            let text = self.source.token(idx);
            match text {
                "(" | "[" => depth += 1,
                ")" | "]" => depth = depth.saturating_sub(1),
                "&&" | "||" if depth == 0 && pos > 0 => outer.push((pos, text)),
                _ => {}
            }
        }
        let ors: Vec<usize> = outer
            .iter()
            .filter(|(_, text)| *text == "||")
            .map(|(pos, _)| *pos)
            .collect();
        if ors.is_empty() {
            for (pos, _) in &outer {
                set_break(&mut breaks, *pos, level + 1);
            }
            return breaks;
        }
        let mut bounds = vec![0];
        bounds.extend(&ors);
        bounds.push(run.len());
        for (segment_idx, window) in bounds.windows(2).enumerate() {
            let (start, end) = match window {
                [start, end] => (*start, *end),
                _ => continue,
            };
            if segment_idx > 0 {
                set_break(&mut breaks, start, level + 1);
            }
            let first_width = if segment_idx == 0 {
                start_width
            } else {
                (level + 1) * INDENT_WIDTH
            };
            let segment = run.get(start..end).unwrap_or_default();
            let segment_tail = if end == run.len() { tail } else { 0 };
            if first_width + self.source.flat_width(segment) + segment_tail <= MAX_WIDTH {
                continue;
            }
            let ands = outer
                .iter()
                .filter(|(pos, text)| *text == "&&" && *pos > start && *pos < end);
            for (pos, _) in ands {
                set_break(&mut breaks, *pos, level + 2);
            }
        }
        breaks
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
                self.push_token(idx);
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
        let width = self.line_width() + " { ".len() + self.source.flat_width(&tokens) + " }".len();
        (!commented && width <= MAX_WIDTH).then_some(tokens)
    }
}

fn set_break(breaks: &mut [Option<usize>], pos: usize, level: usize) {
    if let Some(slot) = breaks.get_mut(pos) {
        *slot = Some(level);
    }
}
