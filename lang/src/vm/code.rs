//! The code a decision runs, laid out for the cache: every block in one array of words, each
//! workload's record (which the index fills) just before its blocks, and the string constants
//! the blocks push in one text buffer beside it.
//!
//! In: a loaded [`Bundle`], whose blocks the loader has verified. Out: [`Code`], the same
//! blocks translated one instruction for one operation, so that the instruction bound and the
//! verifier's guarantees carry over unchanged. A bundle keeps each block in an allocation of
//! its own and each string behind a pointer; at 100,000 rules that puts every block, and every
//! string it compares with, in a cache line and a memory page no earlier decision touched.
//! Here a workload's alternatives are followed by the `when` blocks of its rules, and the
//! strings are stored in the order the code first pushes them, so that what one decision runs
//! sits together. Jumps become positions in the whole array; a block ends at its `return`.
//!
//! An operation is two words ([`OP_WORDS`]): a tag and a small operand in the first, a wide
//! operand in the second. Records and code share the array, so that a candidate workload's
//! record, its alternatives and the `when` blocks of its rules are one run of memory.

use super::index::FastMap;
use crate::bundle::{BlockId, Bundle, RuleEntry};
use crate::bytecode::{Instr, kind_code, kind_from_code};
use crate::ir::{OrderOp, RequestField, TargetField, WorkloadRef};
use crate::schema::{ClaimId, ProviderKind};

/// One operation: an [`Instr`] with its wide operands moved out of line, stored as
/// [`OP_WORDS`] words.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Op {
    PushBool(bool),
    /// An integer constant, by position in [`Code::ints`].
    PushInt(u32),
    /// A string constant: `len` bytes of [`Code::text`] from `start`.
    PushStr {
        len: u16,
        start: u32,
    },
    /// A string constant too long for [`Op::PushStr`], by position in the bundle's strings.
    PushLongStr(u32),
    PushClaim(ProviderKind, ClaimId),
    HasClaim(ProviderKind, ClaimId),
    PushRequest(RequestField),
    HasRequest(RequestField),
    PushTarget(TargetField),
    Not,
    Eq,
    Ne,
    InSet(u32),
    Like(u32),
    Matches(u32),
    Order(OrderOp),
    /// The bounds, by position in [`Code::ranges`].
    InRange(u32),
    InNetworks(u32),
    Within(u32),
    Condition(u32),
    /// Jumps go to positions in [`Code::words`].
    JumpIfFalseOrPop(u32),
    JumpIfTrueOrPop(u32),
    Return,
}

/// The words of one operation.
pub(super) const OP_WORDS: usize = 2;

/// A record's fixed fields: workload id, alternatives, rules, name start, name length.
pub(super) const RECORD_HEAD: usize = 5;

/// The words of one alternative in a record: its kind's code, where its block starts.
pub(super) const RECORD_ALTERNATIVE: usize = 2;

/// The words of one rule in a record: slot, order, when, credential, name start and length.
pub(super) const RECORD_RULE: usize = 6;

/// Every block of a program, translated; see the module documentation.
#[derive(Debug, Default)]
pub(super) struct Code {
    /// Records and operations.
    pub words: Vec<u32>,
    /// Where each workload's record starts in `words`, by workload id; the index fills it.
    pub record_at: Vec<u32>,
    /// The string constants that [`Op::PushStr`] points into.
    pub text: String,
    pub ints: Vec<i64>,
    pub ranges: Vec<(i64, i64)>,
    /// Where each block starts in `words`, by [`BlockId`].
    starts: Vec<u32>,
    /// Where each of the bundle's strings is in `text`, once the code pushes it.
    string_at: Vec<Option<(u32, u16)>>,
    /// Where each workload's name is in `text`, by workload id.
    pub workload_names: Vec<(u32, u32)>,
    /// Where the name of each rule that names a workload is in `text`, by rule position.
    pub rule_names: Vec<(u32, u32)>,
}

impl Code {
    pub fn build(bundle: &Bundle) -> Code {
        let mut code = Code {
            starts: vec![u32::MAX; bundle.blocks().len()],
            rule_names: vec![(0, 0); bundle.rules().len()],
            ..Code::default()
        };
        let mut placed = Placer {
            string_at: vec![None; bundle.strings().len()],
            code: &mut code,
        };
        let mut rules_of: Vec<Vec<(usize, &RuleEntry)>> =
            vec![Vec::new(); bundle.workloads().len()];
        for (position, rule) in bundle.rules().iter().enumerate() {
            if let WorkloadRef::Named(workload) = rule.workload
                && let Some(rules) = rules_of.get_mut(workload.0 as usize)
            {
                rules.push((position, rule));
            }
        }
        // A workload's record, its alternatives, the `when` of each rule naming it, then the
        // names a decision by one of those rules reports, after the strings of that code.
        for (workload, rules) in bundle.workloads().iter().zip(&rules_of) {
            let record_len = RECORD_HEAD
                + RECORD_ALTERNATIVE * workload.alternatives.len()
                + RECORD_RULE * rules.len();
            let words = &mut placed.code.words;
            placed.code.record_at.push(words.len() as u32);
            words.resize(words.len() + record_len, 0);
            for alternative in &workload.alternatives {
                placed.place(bundle, alternative.block);
            }
            for (_, rule) in rules {
                if let Some(when) = rule.when {
                    placed.place(bundle, when);
                }
            }
            let name = placed.code.push_text(&workload.name).unwrap_or_default();
            placed.code.workload_names.push(name);
            for (position, rule) in rules {
                let name = placed.code.push_text(&rule.name).unwrap_or_default();
                if let Some(slot) = placed.code.rule_names.get_mut(*position) {
                    *slot = name;
                }
            }
        }
        // Every other block: rules of `workload any`, conditions.
        for block in 0..bundle.blocks().len() as u32 {
            placed.place(bundle, BlockId(block));
        }
        code.string_at = placed.string_at;
        code
    }

    /// Drops what only the index's building reads, and the spare capacity of the rest.
    pub fn finish(&mut self) {
        self.string_at = Vec::new();
        self.workload_names = Vec::new();
        self.rule_names = Vec::new();
        self.words.shrink_to_fit();
        self.text.shrink_to_fit();
        self.ints.shrink_to_fit();
        self.ranges.shrink_to_fit();
    }

    /// A name [`Code::workload_names`] or [`Code::rule_names`] points to.
    pub fn name(&self, (start, len): (u32, u32)) -> Option<&str> {
        let start = start as usize;
        self.text.get(start..start + len as usize)
    }

    /// The strings the code pushes, and where each is in the text.
    pub fn texts<'b>(&self, bundle: &'b Bundle) -> FastMap<&'b str, (u32, u32)> {
        bundle
            .strings()
            .iter()
            .zip(&self.string_at)
            .filter_map(|(text, at)| {
                at.map(|(start, len)| (text.as_str(), (start, u32::from(len))))
            })
            .collect()
    }

    /// Appends a text that the code does not push; where it is, if the text is not too long.
    pub fn push_text(&mut self, value: &str) -> Option<(u32, u32)> {
        let start = u32::try_from(self.text.len()).ok()?;
        let len = u32::try_from(value.len()).ok()?;
        start.checked_add(len)?;
        self.text.push_str(value);
        Some((start, len))
    }

    /// Where a block starts in [`Code::words`]; none for a block the bundle does not have.
    pub fn start(&self, block: BlockId) -> Option<u32> {
        self.starts
            .get(block.0 as usize)
            .copied()
            .filter(|start| *start != u32::MAX)
    }

    /// The operation at `pc` in [`Code::words`].
    pub fn op(&self, pc: usize) -> Option<Op> {
        let [first, operand] = *self
            .words
            .get(pc..pc + OP_WORDS)?
            .as_chunks::<OP_WORDS>()
            .0
            .first()?;
        decode(first, operand)
    }

    /// The text of an [`Op::PushStr`].
    pub fn text(&self, start: u32, len: u16) -> Option<&str> {
        let start = start as usize;
        self.text.get(start..start + usize::from(len))
    }
}

/// Translates blocks into a [`Code`], each once, in the order asked.
struct Placer<'c> {
    /// Where each of the bundle's strings went in the text, once pushed.
    string_at: Vec<Option<(u32, u16)>>,
    code: &'c mut Code,
}

impl Placer<'_> {
    fn place(&mut self, bundle: &Bundle, block: BlockId) {
        let Some(instrs) = bundle.block(block) else {
            return;
        };
        let Some(slot) = self.code.starts.get_mut(block.0 as usize) else {
            return;
        };
        if *slot != u32::MAX {
            return;
        }
        let start = self.code.words.len() as u32;
        *slot = start;
        for instr in instrs {
            let op = self.op(bundle, *instr, start);
            self.code.words.extend(encode(op));
        }
    }

    fn op(&mut self, bundle: &Bundle, instr: Instr, start: u32) -> Op {
        match instr {
            Instr::PushBool(value) => Op::PushBool(value),
            Instr::PushInt(value) => {
                self.code.ints.push(value);
                Op::PushInt(self.code.ints.len() as u32 - 1)
            }
            Instr::PushStr(idx) => self.string(bundle, idx),
            Instr::PushClaim(kind, claim) => Op::PushClaim(kind, claim),
            Instr::HasClaim(kind, claim) => Op::HasClaim(kind, claim),
            Instr::PushRequest(field) => Op::PushRequest(field),
            Instr::HasRequest(field) => Op::HasRequest(field),
            Instr::PushTarget(field) => Op::PushTarget(field),
            Instr::Not => Op::Not,
            Instr::Eq => Op::Eq,
            Instr::Ne => Op::Ne,
            Instr::InSet(set) => Op::InSet(set),
            Instr::Like(glob) => Op::Like(glob),
            Instr::Matches(regex) => Op::Matches(regex),
            Instr::Order(order) => Op::Order(order),
            Instr::InRange(low, high) => {
                self.code.ranges.push((low, high));
                Op::InRange(self.code.ranges.len() as u32 - 1)
            }
            Instr::InNetworks(set) => Op::InNetworks(set),
            Instr::Within(window) => Op::Within(window),
            Instr::Condition(condition) => Op::Condition(condition),
            Instr::JumpIfFalseOrPop(to) => Op::JumpIfFalseOrPop(jump(start, to)),
            Instr::JumpIfTrueOrPop(to) => Op::JumpIfTrueOrPop(jump(start, to)),
            Instr::Return => Op::Return,
        }
    }

    /// A string constant, copied into the text the first time a block pushes it.
    fn string(&mut self, bundle: &Bundle, idx: u32) -> Op {
        if let Some(Some((start, len))) = self.string_at.get(idx as usize) {
            return Op::PushStr {
                len: *len,
                start: *start,
            };
        }
        let text = bundle
            .strings()
            .get(idx as usize)
            .map_or("", String::as_str);
        let (Ok(len), Ok(start)) = (
            u16::try_from(text.len()),
            u32::try_from(self.code.text.len()),
        ) else {
            return Op::PushLongStr(idx);
        };
        self.code.text.push_str(text);
        if let Some(slot) = self.string_at.get_mut(idx as usize) {
            *slot = Some((start, len));
        }
        Op::PushStr { len, start }
    }
}

/// Where a jump to instruction `to` of the block at `start` lands in the words.
fn jump(start: u32, to: u32) -> u32 {
    start.saturating_add(to.saturating_mul(OP_WORDS as u32))
}

const REQUEST_FIELDS: [RequestField; 4] = [
    RequestField::Action,
    RequestField::Resource,
    RequestField::SourceIp,
    RequestField::Time,
];
const TARGET_FIELDS: [TargetField; 4] = [
    TargetField::Name,
    TargetField::Protocol,
    TargetField::Host,
    TargetField::Port,
];
const ORDERS: [OrderOp; 4] = [OrderOp::Lt, OrderOp::Le, OrderOp::Gt, OrderOp::Ge];

fn position<T: PartialEq>(all: &[T], item: T) -> u32 {
    all.iter()
        .position(|known| *known == item)
        .unwrap_or_default() as u32
}

/// An operation as words: the tag in the low byte of the first, a small operand in the rest
/// of it, a wide operand in the second.
fn encode(op: Op) -> [u32; OP_WORDS] {
    let (tag, small, wide) = match op {
        Op::PushBool(value) => (1, u32::from(value), 0),
        Op::PushInt(idx) => (2, 0, idx),
        Op::PushStr { len, start } => (3, u32::from(len), start),
        Op::PushLongStr(idx) => (4, 0, idx),
        Op::PushClaim(kind, claim) => (5, u32::from(kind_code(kind)), u32::from(claim.0)),
        Op::HasClaim(kind, claim) => (6, u32::from(kind_code(kind)), u32::from(claim.0)),
        Op::PushRequest(field) => (7, position(&REQUEST_FIELDS, field), 0),
        Op::HasRequest(field) => (8, position(&REQUEST_FIELDS, field), 0),
        Op::PushTarget(field) => (9, position(&TARGET_FIELDS, field), 0),
        Op::Not => (10, 0, 0),
        Op::Eq => (11, 0, 0),
        Op::Ne => (12, 0, 0),
        Op::InSet(idx) => (13, 0, idx),
        Op::Like(idx) => (14, 0, idx),
        Op::Matches(idx) => (15, 0, idx),
        Op::Order(order) => (16, position(&ORDERS, order), 0),
        Op::InRange(idx) => (17, 0, idx),
        Op::InNetworks(idx) => (18, 0, idx),
        Op::Within(idx) => (19, 0, idx),
        Op::Condition(idx) => (20, 0, idx),
        Op::JumpIfFalseOrPop(to) => (21, 0, to),
        Op::JumpIfTrueOrPop(to) => (22, 0, to),
        Op::Return => (23, 0, 0),
    };
    [tag | (small << 8), wide]
}

/// The operation [`encode`] wrote; none for words that are not one.
fn decode(first: u32, wide: u32) -> Option<Op> {
    let small = first >> 8;
    let claim = || Some(ClaimId(u16::try_from(wide).ok()?));
    let kind = || kind_from_code(u8::try_from(small).ok()?);
    Some(match first & 0xff {
        1 => Op::PushBool(small != 0),
        2 => Op::PushInt(wide),
        3 => Op::PushStr {
            len: u16::try_from(small).ok()?,
            start: wide,
        },
        4 => Op::PushLongStr(wide),
        5 => Op::PushClaim(kind()?, claim()?),
        6 => Op::HasClaim(kind()?, claim()?),
        7 => Op::PushRequest(*REQUEST_FIELDS.get(small as usize)?),
        8 => Op::HasRequest(*REQUEST_FIELDS.get(small as usize)?),
        9 => Op::PushTarget(*TARGET_FIELDS.get(small as usize)?),
        10 => Op::Not,
        11 => Op::Eq,
        12 => Op::Ne,
        13 => Op::InSet(wide),
        14 => Op::Like(wide),
        15 => Op::Matches(wide),
        16 => Op::Order(*ORDERS.get(small as usize)?),
        17 => Op::InRange(wide),
        18 => Op::InNetworks(wide),
        19 => Op::Within(wide),
        20 => Op::Condition(wide),
        21 => Op::JumpIfFalseOrPop(wide),
        22 => Op::JumpIfTrueOrPop(wide),
        23 => Op::Return,
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn every_operation_survives_its_words() {
        let claim = ClaimId(513);
        let mut ops = vec![
            Op::PushBool(true),
            Op::PushBool(false),
            Op::PushInt(7),
            Op::PushStr {
                len: u16::MAX,
                start: u32::MAX - 1,
            },
            Op::PushLongStr(3),
            Op::Not,
            Op::Eq,
            Op::Ne,
            Op::InSet(1),
            Op::Like(2),
            Op::Matches(3),
            Op::InRange(4),
            Op::InNetworks(5),
            Op::Within(6),
            Op::Condition(7),
            Op::JumpIfFalseOrPop(8),
            Op::JumpIfTrueOrPop(9),
            Op::Return,
        ];
        for kind in ProviderKind::ALL {
            ops.extend([Op::PushClaim(kind, claim), Op::HasClaim(kind, claim)]);
        }
        for field in REQUEST_FIELDS {
            ops.extend([Op::PushRequest(field), Op::HasRequest(field)]);
        }
        ops.extend(TARGET_FIELDS.map(Op::PushTarget));
        ops.extend(ORDERS.map(Op::Order));
        for op in ops {
            let [first, wide] = encode(op);
            assert_eq!(decode(first, wide), Some(op));
        }
        assert_eq!(decode(0, 0), None);
    }
}
