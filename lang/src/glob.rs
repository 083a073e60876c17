//! Glob patterns for `like`: `*` matches any run of characters, `?` exactly one character,
//! and `\` makes the next character literal.
//!
//! In: the pattern text of a `like`. Out: a [`Glob`], the precompiled form the bundle stores,
//! which matches in time linear in the input for a given pattern: the pattern is split at its
//! stars into fixed-width segments; the first is anchored at the start, the last at the end,
//! and each one between is found at its leftmost place. No position is ever retried, so
//! `a*a*a*a*a*b` against a long run of `a` costs one pass per segment, never an exponential
//! search.

use std::fmt;

/// One element of a segment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum GlobItem {
    /// Characters that must appear as they are.
    Literal(String),
    /// `?`: exactly one character, whatever it is.
    AnyChar,
}

/// A run of the pattern between two stars: it always matches a fixed number of characters.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct Segment {
    pub items: Vec<GlobItem>,
}

/// A compiled glob: `segments.len()` is the number of stars plus one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Glob {
    segments: Vec<Segment>,
}

impl Glob {
    /// Compiles `pattern`. A `\` at the very end stands for itself.
    pub fn compile(pattern: &str) -> Glob {
        let mut segments = Vec::new();
        let mut current = Segment::default();
        let mut chars = pattern.chars();
        while let Some(ch) = chars.next() {
            match ch {
                '*' => segments.push(std::mem::take(&mut current)),
                '?' => current.items.push(GlobItem::AnyChar),
                '\\' => current.push_char(chars.next().unwrap_or('\\')),
                other => current.push_char(other),
            }
        }
        segments.push(current);
        Glob { segments }
    }

    /// Rebuilds a glob from its segments, as the bundle stores them. An empty list is the
    /// pattern that matches only the empty string.
    pub fn from_segments(segments: Vec<Segment>) -> Glob {
        if segments.is_empty() {
            return Glob {
                segments: vec![Segment::default()],
            };
        }
        Glob { segments }
    }

    pub fn segments(&self) -> &[Segment] {
        &self.segments
    }

    /// Whether `input` matches the whole pattern.
    pub fn is_match(&self, input: &str) -> bool {
        let (first, rest) = match self.segments.split_first() {
            Some(split) => split,
            None => return input.is_empty(),
        };
        let Some((last, middles)) = rest.split_last() else {
            return first.match_at(input, 0) == Some(input.len());
        };
        let Some(mut pos) = first.match_at(input, 0) else {
            return false;
        };
        for segment in middles {
            let Some(end) = segment.find_from(input, pos) else {
                return false;
            };
            pos = end;
        }
        last.matches_suffix(input, pos)
    }
}

impl fmt::Display for Glob {
    /// The pattern in Gate syntax, with the characters `*`, `?` and `\` escaped in literals.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        for (idx, segment) in self.segments.iter().enumerate() {
            if idx > 0 {
                f.write_str("*")?;
            }
            for item in &segment.items {
                match item {
                    GlobItem::AnyChar => f.write_str("?")?,
                    GlobItem::Literal(text) => {
                        for ch in text.chars() {
                            if matches!(ch, '*' | '?' | '\\') {
                                f.write_str("\\")?;
                            }
                            write!(f, "{ch}")?;
                        }
                    }
                }
            }
        }
        Ok(())
    }
}

impl Segment {
    fn push_char(&mut self, ch: char) {
        if let Some(GlobItem::Literal(text)) = self.items.last_mut() {
            text.push(ch);
        } else {
            self.items.push(GlobItem::Literal(ch.to_string()));
        }
    }

    /// How many characters this segment matches.
    fn char_len(&self) -> usize {
        self.items
            .iter()
            .map(|item| match item {
                GlobItem::Literal(text) => text.chars().count(),
                GlobItem::AnyChar => 1,
            })
            .sum()
    }

    /// Matches the segment at byte `start` of `input`; returns the byte just past the match.
    fn match_at(&self, input: &str, start: usize) -> Option<usize> {
        let mut pos = start;
        for item in &self.items {
            let rest = input.get(pos..)?;
            match item {
                GlobItem::Literal(text) => {
                    if !rest.starts_with(text.as_str()) {
                        return None;
                    }
                    pos += text.len();
                }
                GlobItem::AnyChar => pos += rest.chars().next()?.len_utf8(),
            }
        }
        Some(pos)
    }

    /// The end of the leftmost match that starts at or after byte `from`.
    fn find_from(&self, input: &str, from: usize) -> Option<usize> {
        let rest = input.get(from..)?;
        rest.char_indices()
            .map(|(offset, _)| from + offset)
            .chain(std::iter::once(input.len()))
            .find_map(|start| self.match_at(input, start))
    }

    /// Whether the segment matches the end of `input` without starting before byte `from`.
    fn matches_suffix(&self, input: &str, from: usize) -> bool {
        let Some(rest) = input.get(from..) else {
            return false;
        };
        let width = self.char_len();
        let start = if width == 0 {
            input.len()
        } else {
            match rest.char_indices().rev().nth(width - 1) {
                Some((offset, _)) => from + offset,
                None => return false,
            }
        };
        self.match_at(input, start) == Some(input.len())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn check(pattern: &str, input: &str, expected: bool) {
        let glob = Glob::compile(pattern);
        assert_eq!(
            glob.is_match(input),
            expected,
            "`{pattern}` against `{input}`"
        );
    }

    #[test]
    fn literals_match_exactly() {
        check("refs/heads/main", "refs/heads/main", true);
        check("refs/heads/main", "refs/heads/main2", false);
        check("refs/heads/main", "refs/heads/mai", false);
        check("", "", true);
        check("", "a", false);
    }

    #[test]
    fn star_matches_any_run() {
        check("refs/tags/v*", "refs/tags/v1.2.3", true);
        check("refs/tags/v*", "refs/tags/v", true);
        check("refs/tags/v*", "refs/heads/v1", false);
        check("*", "", true);
        check("*", "anything", true);
        check("acme/*-api", "acme/orders-api", true);
        check("acme/*-api", "acme/orders-api-v2", false);
        check("*.internal", "x.internal", true);
        check("*.internal", ".internal", true);
        check("*.internal", "internal", false);
        check("a*b*c", "abc", true);
        check("a*b*c", "aXbYc", true);
        check("a*b*c", "acb", false);
        check("**", "x", true);
    }

    #[test]
    fn prefix_and_suffix_do_not_overlap() {
        check("ab*ba", "aba", false);
        check("ab*ba", "abba", true);
        check("a*a", "a", false);
        check("a*a", "aa", true);
    }

    #[test]
    fn question_mark_matches_one_character() {
        check("v?", "v1", true);
        check("v?", "v", false);
        check("v?", "v12", false);
        check("?", "é", true);
        check("?é?", "aéb", true);
        check("*?", "", false);
        check("*?", "ü", true);
        check("x*?y", "xy", false);
        check("x*?y", "x€y", true);
    }

    #[test]
    fn backslash_escapes() {
        check(r"a\*b", "a*b", true);
        check(r"a\*b", "aXb", false);
        check(r"a\?", "a?", true);
        check(r"a\?", "ab", false);
        check(r"a\\b", r"a\b", true);
        check("a\\", "a\\", true);
    }

    #[test]
    fn pathological_pattern_is_fast() {
        let input = "a".repeat(200_000);
        check("a*a*a*a*a*b", &input, false);
        check("*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*a*b", &input, false);
        let mut with_b = input.clone();
        with_b.push('b');
        check("a*a*a*a*a*b", &with_b, true);
    }

    #[test]
    fn display_round_trips() {
        for pattern in ["refs/tags/v*", r"a\*b?c*", r"\\x", "", "*?*"] {
            let glob = Glob::compile(pattern);
            assert_eq!(Glob::compile(&glob.to_string()), glob, "`{pattern}`");
        }
    }
}
