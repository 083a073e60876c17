//! The instruction set of the decision VM, its binary encoding, the emitter that compiles IR
//! expressions into it, and the verifier that proves a block safe to run.
//!
//! In: typed [`Expr`]s (a workload alternative's condition, a rule's `when`). Out: blocks of
//! [`Instr`], one per expression, each ending in [`Instr::Return`]. The machine is a stack of
//! typed values; jumps only go forward, so a block runs each instruction at most once. The
//! verifier ([`verify_block`]) checks every operand index, jump target and stack type before a
//! bundle is accepted, so that the VM never meets an instruction it cannot execute.
//! `docs/bundle-format.md` lists the encoding of every instruction.

use std::collections::{BTreeMap, HashMap};

use crate::glob::Glob;
use crate::ir::{Expr, Network, OrderOp, RequestField, TargetField, Value};
use crate::schema::{ClaimId, ClaimType, CustomClaims, ProviderKind};
use crate::time::Window;

/// The deepest value stack a block may need; the VM keeps a fixed array of this size.
pub const MAX_STACK: usize = 32;

/// The deepest expression nesting the emitter accepts.
pub const MAX_NESTING: usize = 256;

/// Index into the bundle's string table.
pub type StringIdx = u32;
/// Index into the bundle's constant sets.
pub type SetIdx = u32;
/// Index into the bundle's glob patterns.
pub type GlobIdx = u32;
/// Index into the bundle's regular expressions.
pub type RegexIdx = u32;
/// Index into the bundle's conditions.
pub type ConditionIdx = u32;
/// Index into the bundle's network sets.
pub type NetworksIdx = u32;
/// Index into the bundle's time windows.
pub type WindowIdx = u32;

/// The deepest chain of conditions that read conditions; bounds the VM's recursion. The
/// checker and the bundle loader both enforce it.
pub const MAX_CONDITION_DEPTH: usize = 32;

/// One instruction. Jump targets are instruction positions within the same block.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Instr {
    PushBool(bool),
    PushInt(i64),
    PushStr(StringIdx),
    /// Pushes the caller's claim; an evaluation error when the caller is of another kind or
    /// does not carry it.
    PushClaim(ProviderKind, ClaimId),
    /// Pushes whether the caller is of this kind and carries the claim.
    HasClaim(ProviderKind, ClaimId),
    /// Pushes `request.action` or `request.resource`; an evaluation error when absent.
    PushRequest(RequestField),
    HasRequest(RequestField),
    PushTarget(TargetField),
    Not,
    Eq,
    Ne,
    /// Pops a scalar (or a claim's set) and pushes whether it is in (meets) the constant set.
    InSet(SetIdx),
    /// Pops a string and pushes whether it matches the glob.
    Like(GlobIdx),
    /// Pops a string and pushes whether the regular expression matches somewhere in it.
    Matches(RegexIdx),
    /// Pops two integers and pushes whether `left OP right`.
    Order(OrderOp),
    /// Pops an integer and pushes whether it lies within `low..=high`.
    InRange(i64, i64),
    /// Pops an IP address and pushes whether it lies in any network of the set.
    InNetworks(NetworksIdx),
    /// Pops a timestamp (Unix seconds) and pushes whether it lies in the time window, read in
    /// the window's zone; an evaluation error when the time is beyond what a zone can read.
    Within(WindowIdx),
    /// Pushes a named condition's value, evaluated at most once per decision; an evaluation
    /// error inside it is an error here.
    Condition(ConditionIdx),
    /// If the top is false, jump and keep it; otherwise pop it. Compiles `&&`.
    JumpIfFalseOrPop(u32),
    /// If the top is true, jump and keep it; otherwise pop it. Compiles `||`.
    JumpIfTrueOrPop(u32),
    /// Pops the block's boolean result; always the last instruction of a block.
    Return,
}

/// Opcodes, one byte each, followed by the operands little-endian.
mod op {
    pub const PUSH_BOOL: u8 = 0x01;
    pub const PUSH_INT: u8 = 0x02;
    pub const PUSH_STR: u8 = 0x03;
    pub const PUSH_CLAIM: u8 = 0x04;
    pub const HAS_CLAIM: u8 = 0x05;
    pub const PUSH_REQUEST: u8 = 0x06;
    pub const HAS_REQUEST: u8 = 0x07;
    pub const PUSH_TARGET: u8 = 0x08;
    pub const NOT: u8 = 0x09;
    pub const EQ: u8 = 0x0a;
    pub const NE: u8 = 0x0b;
    pub const IN_SET: u8 = 0x0c;
    pub const LIKE: u8 = 0x0d;
    pub const JUMP_IF_FALSE_OR_POP: u8 = 0x0e;
    pub const JUMP_IF_TRUE_OR_POP: u8 = 0x0f;
    pub const RETURN: u8 = 0x10;
    pub const LT: u8 = 0x11;
    pub const LE: u8 = 0x12;
    pub const GT: u8 = 0x13;
    pub const GE: u8 = 0x14;
    pub const IN_RANGE: u8 = 0x15;
    pub const MATCHES: u8 = 0x16;
    pub const CONDITION: u8 = 0x17;
    pub const IN_NETWORKS: u8 = 0x18;
    pub const WITHIN: u8 = 0x19;
}

/// The byte that encodes a trust provider kind in code and tables.
pub fn kind_code(kind: ProviderKind) -> u8 {
    match kind {
        ProviderKind::Github => 0,
        ProviderKind::Kubernetes => 1,
        ProviderKind::Oidc => 2,
        ProviderKind::Gitlab => 3,
        ProviderKind::Terraform => 4,
        ProviderKind::Spiffe => 5,
        ProviderKind::Process => 6,
    }
}

pub fn kind_from_code(code: u8) -> Option<ProviderKind> {
    ProviderKind::ALL
        .into_iter()
        .find(|kind| kind_code(*kind) == code)
}

fn request_field_code(field: RequestField) -> u8 {
    match field {
        RequestField::Action => 0,
        RequestField::Resource => 1,
        RequestField::SourceIp => 2,
        RequestField::Time => 3,
    }
}

fn request_field_from_code(code: u8) -> Option<RequestField> {
    match code {
        0 => Some(RequestField::Action),
        1 => Some(RequestField::Resource),
        2 => Some(RequestField::SourceIp),
        3 => Some(RequestField::Time),
        _ => None,
    }
}

fn target_field_code(field: TargetField) -> u8 {
    match field {
        TargetField::Name => 0,
        TargetField::Protocol => 1,
        TargetField::Host => 2,
        TargetField::Port => 3,
    }
}

fn target_field_from_code(code: u8) -> Option<TargetField> {
    match code {
        0 => Some(TargetField::Name),
        1 => Some(TargetField::Protocol),
        2 => Some(TargetField::Host),
        3 => Some(TargetField::Port),
        _ => None,
    }
}

impl Instr {
    /// Appends the encoding of this instruction to `out`.
    pub fn encode(&self, out: &mut Vec<u8>) {
        match *self {
            Instr::PushBool(value) => out.extend([op::PUSH_BOOL, u8::from(value)]),
            Instr::PushInt(value) => {
                out.push(op::PUSH_INT);
                out.extend(value.to_le_bytes());
            }
            Instr::PushStr(idx) => encode_u32(out, op::PUSH_STR, idx),
            Instr::PushClaim(kind, claim) => encode_claim(out, op::PUSH_CLAIM, kind, claim),
            Instr::HasClaim(kind, claim) => encode_claim(out, op::HAS_CLAIM, kind, claim),
            Instr::PushRequest(field) => out.extend([op::PUSH_REQUEST, request_field_code(field)]),
            Instr::HasRequest(field) => out.extend([op::HAS_REQUEST, request_field_code(field)]),
            Instr::PushTarget(field) => out.extend([op::PUSH_TARGET, target_field_code(field)]),
            Instr::Not => out.push(op::NOT),
            Instr::Eq => out.push(op::EQ),
            Instr::Ne => out.push(op::NE),
            Instr::InSet(idx) => encode_u32(out, op::IN_SET, idx),
            Instr::Like(idx) => encode_u32(out, op::LIKE, idx),
            Instr::JumpIfFalseOrPop(to) => encode_u32(out, op::JUMP_IF_FALSE_OR_POP, to),
            Instr::JumpIfTrueOrPop(to) => encode_u32(out, op::JUMP_IF_TRUE_OR_POP, to),
            Instr::Return => out.push(op::RETURN),
            Instr::Matches(idx) => encode_u32(out, op::MATCHES, idx),
            Instr::Order(order) => out.push(match order {
                OrderOp::Lt => op::LT,
                OrderOp::Le => op::LE,
                OrderOp::Gt => op::GT,
                OrderOp::Ge => op::GE,
            }),
            Instr::InRange(low, high) => {
                out.push(op::IN_RANGE);
                out.extend(low.to_le_bytes());
                out.extend(high.to_le_bytes());
            }
            Instr::Condition(idx) => encode_u32(out, op::CONDITION, idx),
            Instr::InNetworks(idx) => encode_u32(out, op::IN_NETWORKS, idx),
            Instr::Within(idx) => encode_u32(out, op::WITHIN, idx),
        }
    }

    /// Decodes the instruction at the start of `bytes`; returns it and its encoded length.
    pub fn decode(bytes: &[u8]) -> Result<(Instr, usize), DecodeError> {
        let (&opcode, operands) = bytes.split_first().ok_or(DecodeError::Truncated)?;
        let byte = |at: usize| operands.get(at).copied().ok_or(DecodeError::Truncated);
        let word = || read_u32(operands).ok_or(DecodeError::Truncated);
        let invalid = |value: u8| DecodeError::InvalidOperand { opcode, value };
        let instr = match opcode {
            op::PUSH_BOOL => match byte(0)? {
                0 => (Instr::PushBool(false), 2),
                1 => (Instr::PushBool(true), 2),
                other => return Err(invalid(other)),
            },
            op::PUSH_INT => (Instr::PushInt(read_i64(operands, 0)?), 9),
            op::IN_RANGE => {
                let range = Instr::InRange(read_i64(operands, 0)?, read_i64(operands, 8)?);
                (range, 17)
            }
            op::LT => (Instr::Order(OrderOp::Lt), 1),
            op::LE => (Instr::Order(OrderOp::Le), 1),
            op::GT => (Instr::Order(OrderOp::Gt), 1),
            op::GE => (Instr::Order(OrderOp::Ge), 1),
            op::MATCHES => (Instr::Matches(word()?), 5),
            op::CONDITION => (Instr::Condition(word()?), 5),
            op::IN_NETWORKS => (Instr::InNetworks(word()?), 5),
            op::WITHIN => (Instr::Within(word()?), 5),
            op::PUSH_STR => (Instr::PushStr(word()?), 5),
            op::PUSH_CLAIM | op::HAS_CLAIM => {
                let code = byte(0)?;
                let kind = kind_from_code(code).ok_or_else(|| invalid(code))?;
                let claim = ClaimId(u16::from_le_bytes([byte(1)?, byte(2)?]));
                let instr = match opcode {
                    op::PUSH_CLAIM => Instr::PushClaim(kind, claim),
                    _ => Instr::HasClaim(kind, claim),
                };
                (instr, 4)
            }
            op::PUSH_REQUEST | op::HAS_REQUEST => {
                let code = byte(0)?;
                let field = request_field_from_code(code).ok_or_else(|| invalid(code))?;
                let instr = match opcode {
                    op::PUSH_REQUEST => Instr::PushRequest(field),
                    _ => Instr::HasRequest(field),
                };
                (instr, 2)
            }
            op::PUSH_TARGET => {
                let code = byte(0)?;
                let field = target_field_from_code(code).ok_or_else(|| invalid(code))?;
                (Instr::PushTarget(field), 2)
            }
            op::NOT => (Instr::Not, 1),
            op::EQ => (Instr::Eq, 1),
            op::NE => (Instr::Ne, 1),
            op::IN_SET => (Instr::InSet(word()?), 5),
            op::LIKE => (Instr::Like(word()?), 5),
            op::JUMP_IF_FALSE_OR_POP => (Instr::JumpIfFalseOrPop(word()?), 5),
            op::JUMP_IF_TRUE_OR_POP => (Instr::JumpIfTrueOrPop(word()?), 5),
            op::RETURN => (Instr::Return, 1),
            other => return Err(DecodeError::InvalidOpcode(other)),
        };
        Ok(instr)
    }
}

fn encode_u32(out: &mut Vec<u8>, opcode: u8, operand: u32) {
    out.push(opcode);
    out.extend(operand.to_le_bytes());
}

fn encode_claim(out: &mut Vec<u8>, opcode: u8, kind: ProviderKind, claim: ClaimId) {
    out.extend([opcode, kind_code(kind)]);
    out.extend(claim.0.to_le_bytes());
}

fn read_i64(bytes: &[u8], at: usize) -> Result<i64, DecodeError> {
    let raw = bytes.get(at..at + 8).ok_or(DecodeError::Truncated)?;
    let mut le = [0u8; 8];
    le.copy_from_slice(raw);
    Ok(i64::from_le_bytes(le))
}

fn read_u32(bytes: &[u8]) -> Option<u32> {
    let raw = bytes.get(..4)?;
    Some(u32::from_le_bytes([raw[0], raw[1], raw[2], raw[3]]))
}

/// Why one instruction could not be decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum DecodeError {
    #[error("the instruction is cut off by the end of its block")]
    Truncated,
    #[error("opcode 0x{0:02x} does not exist")]
    InvalidOpcode(u8),
    #[error("opcode 0x{opcode:02x} has the invalid operand {value}")]
    InvalidOperand { opcode: u8, value: u8 },
}

/// Decodes a whole block; the error carries the byte position of the bad instruction.
pub fn decode_block(bytes: &[u8]) -> Result<Vec<Instr>, (usize, DecodeError)> {
    let mut instrs = Vec::new();
    let mut pos = 0;
    while let Some(rest) = bytes.get(pos..).filter(|rest| !rest.is_empty()) {
        let (instr, len) = Instr::decode(rest).map_err(|error| (pos, error))?;
        instrs.push(instr);
        pos += len;
    }
    Ok(instrs)
}

/// Encodes a whole block.
pub fn encode_block(block: &[Instr]) -> Vec<u8> {
    let mut out = Vec::new();
    for instr in block {
        instr.encode(&mut out);
    }
    out
}

/// The type of a value on the VM's stack.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StackType {
    Bool,
    Int,
    Str,
    /// A claim that is a set of strings.
    StrSet,
    /// An IP address.
    Ip,
}

impl StackType {
    fn of_claim(ty: ClaimType) -> StackType {
        match ty {
            ClaimType::String => StackType::Str,
            ClaimType::Int => StackType::Int,
            ClaimType::Bool => StackType::Bool,
            ClaimType::StringSet => StackType::StrSet,
        }
    }
}

/// A constant set, as `in` tests against it.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub enum ConstSet {
    Str(Vec<String>),
    Int(Vec<i64>),
    Bool(Vec<bool>),
}

impl ConstSet {
    /// Whether `ty` may be tested for membership in this set.
    fn accepts(&self, ty: StackType) -> bool {
        match (self, ty) {
            (ConstSet::Str(_), StackType::Str | StackType::StrSet) => true,
            (ConstSet::Int(_), StackType::Int) | (ConstSet::Bool(_), StackType::Bool) => true,
            (ConstSet::Str(items), _) => items.is_empty(),
            (ConstSet::Int(items), _) => items.is_empty() && ty != StackType::StrSet,
            (ConstSet::Bool(items), _) => items.is_empty() && ty != StackType::StrSet,
        }
    }
}

/// What the verifier needs to know about the tables a block refers to.
#[derive(Debug, Clone, Copy)]
pub struct Tables<'a> {
    pub n_strings: usize,
    pub sets: &'a [ConstSet],
    pub n_globs: usize,
    pub n_regexes: usize,
    pub n_conditions: usize,
    pub n_network_sets: usize,
    pub n_windows: usize,
    /// The custom `oidc` claims the bundle records, which give the types of claim ids beyond
    /// the built-in ones.
    pub custom_claims: &'a CustomClaims,
}

/// Why a block is not safe to run.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VerifyError {
    #[error("the block is empty")]
    Empty,
    #[error("the block does not end with `return`")]
    NoReturn,
    #[error("jump to {target} leaves the block or does not go forward")]
    BadJump { target: u32 },
    #[error("{what} index {index} is out of range")]
    IndexOutOfRange { what: &'static str, index: u32 },
    #[error("expected {expected} on the stack")]
    TypeMismatch { expected: &'static str },
    #[error("the stack would grow beyond {MAX_STACK} values")]
    StackTooDeep,
    #[error("the two paths that join here leave different stacks")]
    StackMismatch,
}

/// Checks that `block` runs without ever failing inside the VM, whatever the request: every
/// index in range, every jump forward and inside the block, every operand of the right type,
/// the stack within [`MAX_STACK`], and exactly one boolean left for the final `return`.
/// The error carries the position of the offending instruction.
pub fn verify_block(block: &[Instr], tables: &Tables<'_>) -> Result<(), (usize, VerifyError)> {
    if block.is_empty() {
        return Err((0, VerifyError::Empty));
    }
    let mut stack: Vec<StackType> = Vec::new();
    // The stack each pending forward jump brings to its target, by target position.
    let mut joins: BTreeMap<usize, Vec<StackType>> = BTreeMap::new();
    for (pc, instr) in block.iter().enumerate() {
        if joins.remove(&pc).is_some_and(|incoming| incoming != stack) {
            return Err((pc, VerifyError::StackMismatch));
        }
        let is_last = pc + 1 == block.len();
        if (*instr == Instr::Return) != is_last {
            return Err((pc, VerifyError::NoReturn));
        }
        step(instr, pc, block.len(), tables, &mut stack, &mut joins).map_err(|e| (pc, e))?;
        if stack.len() > MAX_STACK {
            return Err((pc, VerifyError::StackTooDeep));
        }
    }
    Ok(())
}

fn step(
    instr: &Instr,
    pc: usize,
    len: usize,
    tables: &Tables<'_>,
    stack: &mut Vec<StackType>,
    joins: &mut BTreeMap<usize, Vec<StackType>>,
) -> Result<(), VerifyError> {
    match *instr {
        Instr::PushBool(_) | Instr::HasClaim(..) | Instr::HasRequest(_) => {
            if let Instr::HasClaim(kind, claim) = *instr {
                claim_type(tables, kind, claim)?;
            }
            stack.push(StackType::Bool);
        }
        Instr::PushInt(_) => stack.push(StackType::Int),
        Instr::Condition(idx) => {
            in_range("condition", idx, tables.n_conditions)?;
            stack.push(StackType::Bool);
        }
        Instr::Matches(idx) => {
            in_range("regex", idx, tables.n_regexes)?;
            pop(stack, StackType::Str, "a string")?;
            stack.push(StackType::Bool);
        }
        Instr::InRange(..) => {
            pop(stack, StackType::Int, "an integer")?;
            stack.push(StackType::Bool);
        }
        Instr::Order(_) => {
            pop(stack, StackType::Int, "an integer")?;
            pop(stack, StackType::Int, "an integer")?;
            stack.push(StackType::Bool);
        }
        Instr::PushStr(idx) => {
            in_range("string", idx, tables.n_strings)?;
            stack.push(StackType::Str);
        }
        Instr::PushClaim(kind, claim) => {
            stack.push(StackType::of_claim(claim_type(tables, kind, claim)?));
        }
        Instr::PushRequest(RequestField::SourceIp) => stack.push(StackType::Ip),
        Instr::PushRequest(RequestField::Time) => stack.push(StackType::Int),
        Instr::Within(idx) => {
            in_range("time window", idx, tables.n_windows)?;
            pop(stack, StackType::Int, "a timestamp")?;
            stack.push(StackType::Bool);
        }
        Instr::PushRequest(_) => stack.push(StackType::Str),
        Instr::InNetworks(idx) => {
            in_range("network set", idx, tables.n_network_sets)?;
            pop(stack, StackType::Ip, "an IP address")?;
            stack.push(StackType::Bool);
        }
        Instr::PushTarget(field) => stack.push(match field {
            TargetField::Port => StackType::Int,
            _ => StackType::Str,
        }),
        Instr::Not => {
            pop(stack, StackType::Bool, "a bool")?;
            stack.push(StackType::Bool);
        }
        Instr::Eq | Instr::Ne => {
            let right = stack.pop().ok_or(VerifyError::TypeMismatch {
                expected: "a value",
            })?;
            if matches!(right, StackType::StrSet | StackType::Ip) {
                return Err(VerifyError::TypeMismatch {
                    expected: "a scalar",
                });
            }
            pop(stack, right, "two values of the same type")?;
            stack.push(StackType::Bool);
        }
        Instr::InSet(idx) => {
            in_range("constant set", idx, tables.sets.len())?;
            let set = tables.sets.get(idx as usize);
            let ty = stack.pop().ok_or(VerifyError::TypeMismatch {
                expected: "a value",
            })?;
            if !set.is_some_and(|set| set.accepts(ty)) {
                return Err(VerifyError::TypeMismatch {
                    expected: "a value of the set's type",
                });
            }
            stack.push(StackType::Bool);
        }
        Instr::Like(idx) => {
            in_range("glob", idx, tables.n_globs)?;
            pop(stack, StackType::Str, "a string")?;
            stack.push(StackType::Bool);
        }
        Instr::JumpIfFalseOrPop(target) | Instr::JumpIfTrueOrPop(target) => {
            let to = target as usize;
            if to <= pc || to >= len {
                return Err(VerifyError::BadJump { target });
            }
            if stack.last() != Some(&StackType::Bool) {
                return Err(VerifyError::TypeMismatch { expected: "a bool" });
            }
            match joins.get(&to) {
                Some(incoming) if *incoming != *stack => return Err(VerifyError::StackMismatch),
                Some(_) => {}
                None => {
                    joins.insert(to, stack.clone());
                }
            }
            stack.pop();
        }
        Instr::Return => {
            pop(stack, StackType::Bool, "a bool")?;
            if !stack.is_empty() {
                return Err(VerifyError::TypeMismatch {
                    expected: "exactly one value",
                });
            }
        }
    }
    Ok(())
}

fn claim_type(
    tables: &Tables<'_>,
    kind: ProviderKind,
    claim: ClaimId,
) -> Result<ClaimType, VerifyError> {
    match tables.custom_claims.claim_type(kind, claim) {
        Some(ty) => Ok(ty),
        None => Err(VerifyError::IndexOutOfRange {
            what: "claim",
            index: u32::from(claim.0),
        }),
    }
}

fn in_range(what: &'static str, index: u32, len: usize) -> Result<(), VerifyError> {
    if (index as usize) < len {
        Ok(())
    } else {
        Err(VerifyError::IndexOutOfRange { what, index })
    }
}

fn pop(
    stack: &mut Vec<StackType>,
    want: StackType,
    expected: &'static str,
) -> Result<(), VerifyError> {
    match stack.pop() {
        Some(ty) if ty == want => Ok(()),
        _ => Err(VerifyError::TypeMismatch { expected }),
    }
}

/// Why an expression could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EmitError {
    #[error("expression nests deeper than {MAX_NESTING} levels")]
    TooDeep,
    #[error("a set constant can only appear on the right of `in`")]
    SetOutsideIn,
    #[error("a set constant holds values of more than one type")]
    MixedSet,
    #[error("a set constant holds another set")]
    NestedSet,
    #[error("the policy set has more than {} {what}", u32::MAX)]
    TooMany { what: &'static str },
}

/// The tables that the emitted code refers to, filled as expressions are compiled. Each
/// string, set and glob is stored once, at the position of its first use, so the same policy
/// set always gives the same tables.
#[derive(Debug, Default)]
pub struct Emitter {
    strings: Vec<String>,
    string_ids: HashMap<String, StringIdx>,
    sets: Vec<ConstSet>,
    set_ids: HashMap<ConstSet, SetIdx>,
    globs: Vec<Glob>,
    glob_ids: HashMap<String, GlobIdx>,
    regexes: Vec<String>,
    regex_ids: HashMap<String, RegexIdx>,
    network_sets: Vec<Vec<Network>>,
    network_set_ids: HashMap<Vec<Network>, NetworksIdx>,
    windows: Vec<(Window, String)>,
}

impl Emitter {
    pub fn new() -> Emitter {
        Emitter::default()
    }

    pub fn strings(&self) -> &[String] {
        &self.strings
    }

    pub fn sets(&self) -> &[ConstSet] {
        &self.sets
    }

    pub fn globs(&self) -> &[Glob] {
        &self.globs
    }

    /// The network sets of `in` on IP addresses, in order of first use.
    pub fn network_sets(&self) -> &[Vec<Network>] {
        &self.network_sets
    }

    /// The windows of `within` and the names of their zones, in order of first use.
    pub fn windows(&self) -> &[(Window, String)] {
        &self.windows
    }

    /// The patterns of `matches`, in order of first use.
    pub fn regexes(&self) -> &[String] {
        &self.regexes
    }

    /// The index of `text` in the string table, adding it when new.
    pub fn intern(&mut self, text: &str) -> Result<StringIdx, EmitError> {
        if let Some(&idx) = self.string_ids.get(text) {
            return Ok(idx);
        }
        let idx = to_u32(self.strings.len(), "strings")?;
        self.strings.push(text.to_owned());
        self.string_ids.insert(text.to_owned(), idx);
        Ok(idx)
    }

    /// Compiles `expr` into a block that returns its value.
    pub fn block(&mut self, expr: &Expr) -> Result<Vec<Instr>, EmitError> {
        let mut code = Vec::new();
        self.expr(expr, &mut code, 0)?;
        code.push(Instr::Return);
        Ok(code)
    }

    fn expr(&mut self, expr: &Expr, code: &mut Vec<Instr>, depth: usize) -> Result<(), EmitError> {
        if depth > MAX_NESTING {
            return Err(EmitError::TooDeep);
        }
        let depth = depth + 1;
        match expr {
            Expr::Const(value) => code.push(self.constant(value)?),
            Expr::Claim { kind, claim } => code.push(Instr::PushClaim(*kind, *claim)),
            Expr::HasClaim { kind, claim } => code.push(Instr::HasClaim(*kind, *claim)),
            Expr::Request(field) => code.push(Instr::PushRequest(*field)),
            Expr::HasRequest(field) => code.push(Instr::HasRequest(*field)),
            Expr::Target(field) => code.push(Instr::PushTarget(*field)),
            Expr::Not(inner) => {
                self.expr(inner, code, depth)?;
                code.push(Instr::Not);
            }
            Expr::And(left, right) | Expr::Or(left, right) => {
                self.expr(left, code, depth)?;
                let jump_at = code.len();
                code.push(Instr::Return);
                self.expr(right, code, depth)?;
                let to = to_u32(code.len(), "instructions in one expression")?;
                let jump = match expr {
                    Expr::And(..) => Instr::JumpIfFalseOrPop(to),
                    _ => Instr::JumpIfTrueOrPop(to),
                };
                if let Some(slot) = code.get_mut(jump_at) {
                    *slot = jump;
                }
            }
            Expr::Eq(left, right) | Expr::Ne(left, right) => {
                self.expr(left, code, depth)?;
                self.expr(right, code, depth)?;
                code.push(if matches!(expr, Expr::Eq(..)) {
                    Instr::Eq
                } else {
                    Instr::Ne
                });
            }
            Expr::In(left, values) => {
                self.expr(left, code, depth)?;
                let set = self.set(values)?;
                code.push(Instr::InSet(set));
            }
            Expr::Like(left, pattern) => {
                self.expr(left, code, depth)?;
                let glob = self.glob(pattern)?;
                code.push(Instr::Like(glob));
            }
            Expr::Matches(left, pattern) => {
                self.expr(left, code, depth)?;
                let regex = self.regex(pattern)?;
                code.push(Instr::Matches(regex));
            }
            Expr::Order(order, left, right) => {
                self.expr(left, code, depth)?;
                self.expr(right, code, depth)?;
                code.push(Instr::Order(*order));
            }
            Expr::InRange(left, low, high) => {
                self.expr(left, code, depth)?;
                code.push(Instr::InRange(*low, *high));
            }
            Expr::Condition(id) => code.push(Instr::Condition(id.0)),
            Expr::InNetworks(left, networks) => {
                self.expr(left, code, depth)?;
                let idx = match self.network_set_ids.get(networks) {
                    Some(&found) => found,
                    None => {
                        let idx = to_u32(self.network_sets.len(), "network sets")?;
                        self.network_sets.push(networks.clone());
                        self.network_set_ids.insert(networks.clone(), idx);
                        idx
                    }
                };
                code.push(Instr::InNetworks(idx));
            }
            Expr::Within(left, window, zone) => {
                self.expr(left, code, depth)?;
                let entry = (*window, zone.clone());
                let idx = match self.windows.iter().position(|known| *known == entry) {
                    Some(found) => to_u32(found, "time windows")?,
                    None => {
                        self.intern(zone)?;
                        self.windows.push(entry);
                        to_u32(self.windows.len() - 1, "time windows")?
                    }
                };
                code.push(Instr::Within(idx));
            }
        }
        Ok(())
    }

    fn constant(&mut self, value: &Value) -> Result<Instr, EmitError> {
        match value {
            Value::String(text) => Ok(Instr::PushStr(self.intern(text)?)),
            Value::Int(number) => Ok(Instr::PushInt(*number)),
            Value::Bool(flag) => Ok(Instr::PushBool(*flag)),
            Value::Set(_) => Err(EmitError::SetOutsideIn),
        }
    }

    fn set(&mut self, values: &[Value]) -> Result<SetIdx, EmitError> {
        let set = match values.first() {
            None | Some(Value::String(_)) => ConstSet::Str(collect(values, |value| match value {
                Value::String(text) => Some(text.clone()),
                _ => None,
            })?),
            Some(Value::Int(_)) => ConstSet::Int(collect(values, |value| match value {
                Value::Int(number) => Some(*number),
                _ => None,
            })?),
            Some(Value::Bool(_)) => ConstSet::Bool(collect(values, |value| match value {
                Value::Bool(flag) => Some(*flag),
                _ => None,
            })?),
            Some(Value::Set(_)) => return Err(EmitError::NestedSet),
        };
        if let Some(&found) = self.set_ids.get(&set) {
            return Ok(found);
        }
        let idx = to_u32(self.sets.len(), "constant sets")?;
        if let ConstSet::Str(items) = &set {
            for item in items {
                self.intern(item)?;
            }
        }
        self.set_ids.insert(set.clone(), idx);
        self.sets.push(set);
        Ok(idx)
    }

    fn regex(&mut self, pattern: &str) -> Result<RegexIdx, EmitError> {
        if let Some(&idx) = self.regex_ids.get(pattern) {
            return Ok(idx);
        }
        let idx = to_u32(self.regexes.len(), "regular expressions")?;
        self.intern(pattern)?;
        self.regexes.push(pattern.to_owned());
        self.regex_ids.insert(pattern.to_owned(), idx);
        Ok(idx)
    }

    fn glob(&mut self, pattern: &str) -> Result<GlobIdx, EmitError> {
        if let Some(&idx) = self.glob_ids.get(pattern) {
            return Ok(idx);
        }
        let idx = to_u32(self.globs.len(), "glob patterns")?;
        let glob = Glob::compile(pattern);
        for segment in glob.segments() {
            for item in &segment.items {
                if let crate::glob::GlobItem::Literal(text) = item {
                    self.intern(text)?;
                }
            }
        }
        self.globs.push(glob);
        self.glob_ids.insert(pattern.to_owned(), idx);
        Ok(idx)
    }
}

fn collect<T>(values: &[Value], pick: impl Fn(&Value) -> Option<T>) -> Result<Vec<T>, EmitError> {
    values
        .iter()
        .map(|value| pick(value).ok_or(EmitError::MixedSet))
        .collect()
}

/// Converts a count or position to the `u32` the format stores.
pub fn to_u32(value: usize, what: &'static str) -> Result<u32, EmitError> {
    u32::try_from(value).map_err(|_| EmitError::TooMany { what })
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::ir::Expr;

    fn claim(name: &str) -> Expr {
        let (claim, _) = ProviderKind::Github.claim(name).unwrap();
        Expr::Claim {
            kind: ProviderKind::Github,
            claim,
        }
    }

    fn string(text: &str) -> Expr {
        Expr::Const(Value::String(text.to_owned()))
    }

    static NO_CUSTOM_CLAIMS: CustomClaims = CustomClaims::new();

    fn tables(emitter: &Emitter) -> Tables<'_> {
        Tables {
            n_strings: emitter.strings().len(),
            sets: emitter.sets(),
            n_globs: emitter.globs().len(),
            n_regexes: emitter.regexes().len(),
            n_conditions: 0,
            n_network_sets: emitter.network_sets().len(),
            n_windows: emitter.windows().len(),
            custom_claims: &NO_CUSTOM_CLAIMS,
        }
    }

    #[test]
    fn and_jumps_past_its_right_side() {
        let mut emitter = Emitter::new();
        let expr = Expr::And(
            Box::new(Expr::Eq(
                Box::new(claim("repository")),
                Box::new(string("acme/x")),
            )),
            Box::new(Expr::Like(Box::new(claim("ref")), "refs/tags/*".to_owned())),
        );
        let block = emitter.block(&expr).unwrap();
        assert_eq!(
            block,
            vec![
                Instr::PushClaim(ProviderKind::Github, ClaimId(4)),
                Instr::PushStr(0),
                Instr::Eq,
                Instr::JumpIfFalseOrPop(6),
                Instr::PushClaim(ProviderKind::Github, ClaimId(9)),
                Instr::Like(0),
                Instr::Return,
            ]
        );
        assert_eq!(verify_block(&block, &tables(&emitter)), Ok(()));
    }

    #[test]
    fn encoding_round_trips() {
        let block = vec![
            Instr::PushBool(true),
            Instr::PushInt(-42),
            Instr::PushStr(7),
            Instr::PushClaim(ProviderKind::Oidc, ClaimId(8)),
            Instr::HasClaim(ProviderKind::Kubernetes, ClaimId(6)),
            Instr::PushRequest(RequestField::Resource),
            Instr::HasRequest(RequestField::Action),
            Instr::PushTarget(TargetField::Port),
            Instr::Not,
            Instr::Eq,
            Instr::Ne,
            Instr::InSet(3),
            Instr::Like(2),
            Instr::JumpIfFalseOrPop(5),
            Instr::JumpIfTrueOrPop(9),
            Instr::Matches(4),
            Instr::Order(OrderOp::Lt),
            Instr::Order(OrderOp::Le),
            Instr::Order(OrderOp::Gt),
            Instr::Order(OrderOp::Ge),
            Instr::InRange(-3, i64::MAX),
            Instr::Condition(6),
            Instr::InNetworks(8),
            Instr::PushRequest(RequestField::SourceIp),
            Instr::Return,
        ];
        assert_eq!(decode_block(&encode_block(&block)).unwrap(), block);
    }

    #[test]
    fn decoding_rejects_bad_bytes() {
        assert_eq!(
            decode_block(&[0x00]),
            Err((0, DecodeError::InvalidOpcode(0)))
        );
        assert_eq!(
            decode_block(&[0x09, 0x03, 1, 0]),
            Err((1, DecodeError::Truncated))
        );
        assert_eq!(
            decode_block(&[0x01, 2]),
            Err((
                0,
                DecodeError::InvalidOperand {
                    opcode: 0x01,
                    value: 2
                }
            ))
        );
        assert_eq!(
            decode_block(&[0x04, 9, 0, 0]),
            Err((
                0,
                DecodeError::InvalidOperand {
                    opcode: 0x04,
                    value: 9
                }
            ))
        );
    }

    #[test]
    fn verifier_rejects_unsafe_blocks() {
        let sets = [ConstSet::Int(vec![1])];
        let tables = Tables {
            n_strings: 1,
            sets: &sets,
            n_globs: 0,
            n_regexes: 0,
            n_conditions: 1,
            n_network_sets: 1,
            n_windows: 0,
            custom_claims: &NO_CUSTOM_CLAIMS,
        };
        let check = |block: &[Instr], expected: (usize, VerifyError)| {
            assert_eq!(verify_block(block, &tables), Err(expected), "{block:?}");
        };
        check(&[], (0, VerifyError::Empty));
        check(&[Instr::PushBool(true)], (0, VerifyError::NoReturn));
        check(
            &[Instr::PushStr(1), Instr::Return],
            (
                0,
                VerifyError::IndexOutOfRange {
                    what: "string",
                    index: 1,
                },
            ),
        );
        check(
            &[Instr::PushStr(0), Instr::Return],
            (1, VerifyError::TypeMismatch { expected: "a bool" }),
        );
        check(
            &[Instr::PushStr(0), Instr::InSet(0), Instr::Return],
            (
                1,
                VerifyError::TypeMismatch {
                    expected: "a value of the set's type",
                },
            ),
        );
        check(
            &[
                Instr::PushBool(true),
                Instr::JumpIfFalseOrPop(0),
                Instr::Return,
            ],
            (1, VerifyError::BadJump { target: 0 }),
        );
        check(
            &[
                Instr::PushBool(true),
                Instr::JumpIfFalseOrPop(3),
                Instr::Return,
            ],
            (1, VerifyError::BadJump { target: 3 }),
        );
        check(
            &[Instr::PushBool(true), Instr::PushBool(true), Instr::Return],
            (
                2,
                VerifyError::TypeMismatch {
                    expected: "exactly one value",
                },
            ),
        );
        check(
            &[
                Instr::PushClaim(ProviderKind::Github, ClaimId(400)),
                Instr::Return,
            ],
            (
                0,
                VerifyError::IndexOutOfRange {
                    what: "claim",
                    index: 400,
                },
            ),
        );
        check(&[Instr::Return, Instr::Return], (0, VerifyError::NoReturn));
        check(
            &[Instr::Condition(1), Instr::Return],
            (
                0,
                VerifyError::IndexOutOfRange {
                    what: "condition",
                    index: 1,
                },
            ),
        );
        check(
            &[Instr::PushStr(0), Instr::Matches(0), Instr::Return],
            (
                1,
                VerifyError::IndexOutOfRange {
                    what: "regex",
                    index: 0,
                },
            ),
        );
        check(
            &[
                Instr::PushInt(1),
                Instr::PushStr(0),
                Instr::Order(OrderOp::Lt),
                Instr::Return,
            ],
            (
                2,
                VerifyError::TypeMismatch {
                    expected: "an integer",
                },
            ),
        );
        check(
            &[Instr::PushStr(0), Instr::InNetworks(0), Instr::Return],
            (
                1,
                VerifyError::TypeMismatch {
                    expected: "an IP address",
                },
            ),
        );
        check(
            &[
                Instr::PushRequest(RequestField::SourceIp),
                Instr::PushRequest(RequestField::SourceIp),
                Instr::Eq,
                Instr::Return,
            ],
            (
                2,
                VerifyError::TypeMismatch {
                    expected: "a scalar",
                },
            ),
        );
        check(
            &[Instr::PushStr(0), Instr::InRange(1, 2), Instr::Return],
            (
                1,
                VerifyError::TypeMismatch {
                    expected: "an integer",
                },
            ),
        );
        // A jump whose target sees a stack of another shape than the fall-through path.
        check(
            &[
                Instr::PushBool(true),
                Instr::JumpIfTrueOrPop(3),
                Instr::PushInt(1),
                Instr::PushBool(true),
                Instr::Return,
            ],
            (3, VerifyError::StackMismatch),
        );
        let deep: Vec<Instr> = std::iter::repeat_n(Instr::PushBool(true), MAX_STACK + 1)
            .chain([Instr::Return])
            .collect();
        check(&deep, (MAX_STACK, VerifyError::StackTooDeep));
    }

    #[test]
    fn emitter_refuses_nesting_beyond_the_limit() {
        let mut expr = Expr::Const(Value::Bool(true));
        for _ in 0..MAX_NESTING + 1 {
            expr = Expr::Not(Box::new(expr));
        }
        assert_eq!(Emitter::new().block(&expr), Err(EmitError::TooDeep));
    }

    #[test]
    fn tables_are_shared() {
        let mut emitter = Emitter::new();
        let set = || vec![Value::String("a".to_owned()), Value::String("b".to_owned())];
        let expr = Expr::Or(
            Box::new(Expr::In(Box::new(claim("actor")), set())),
            Box::new(Expr::In(Box::new(claim("aud")), set())),
        );
        let block = emitter.block(&expr).unwrap();
        assert_eq!(emitter.sets().len(), 1);
        assert_eq!(emitter.strings(), ["a", "b"]);
        assert_eq!(verify_block(&block, &tables(&emitter)), Ok(()));
    }

    #[test]
    fn sets_and_network_sets_are_numbered_in_order_of_first_use() {
        let mut emitter = Emitter::new();
        let source_ip = || Box::new(Expr::Request(RequestField::SourceIp));
        let networks = |text: &str| vec![Network::parse(text).unwrap()];
        let ints = |n: i64| vec![Value::Int(n)];
        let exprs = [
            Expr::InNetworks(source_ip(), networks("10.0.0.0/8")),
            Expr::InNetworks(source_ip(), networks("192.0.2.0/24")),
            Expr::InNetworks(source_ip(), networks("10.0.0.0/8")),
            Expr::In(Box::new(Expr::Target(TargetField::Port)), ints(443)),
            Expr::In(Box::new(Expr::Target(TargetField::Port)), ints(80)),
            Expr::In(Box::new(Expr::Target(TargetField::Port)), ints(443)),
        ];
        let blocks: Vec<Vec<Instr>> = exprs
            .iter()
            .map(|expr| emitter.block(expr).unwrap())
            .collect();
        let operand = |block: &[Instr]| match block.get(1) {
            Some(Instr::InNetworks(idx) | Instr::InSet(idx)) => *idx,
            other => panic!("{other:?}"),
        };
        let indices: Vec<u32> = blocks.iter().map(|block| operand(block)).collect();
        assert_eq!(indices, [0, 1, 0, 0, 1, 0]);
        assert_eq!(emitter.network_sets().len(), 2);
        assert_eq!(
            emitter.sets(),
            [ConstSet::Int(vec![443]), ConstSet::Int(vec![80])]
        );
    }
}
