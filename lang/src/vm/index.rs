//! The decision index: which workloads and rules one request could possibly meet, found before
//! any bytecode runs, and the static bound on the instructions a decision executes.
//!
//! The index is derived from the loaded bundle's code when a [`super::Program`] is built, not
//! read from the file, so it cannot disagree with the code it stands for.
//!
//! **Workloads.** A workload alternative is *keyed* on claim `c` of kind `K` when its block
//! begins by testing `c` for equality with a string (`c == "v"`, or `c in ["v", "w"]`) and a
//! false result there leads straight to the block's `return`: for a caller of kind `K` whose
//! claim `c` is a string outside those values, the alternative is false without an error. A
//! workload whose alternatives of kind `K` are all keyed on the same claim is looked up by the
//! caller's value of that claim; every other workload with an alternative of kind `K` is a
//! candidate for every caller of that kind. For a caller whose claim `c` is absent or of
//! another type, every workload keyed on `c` is an evaluation error: none of them is a workload
//! the caller is, and every rule naming one fails. Such a failure must not be skipped, but only
//! the first of those rules in decision order can decide, so the index keeps that one per
//! target.
//!
//! **Rules.** A rule is a candidate when it names the request's target or `target any`, and
//! names `workload any`, `workload any K` of the caller's kind, or a candidate workload. Every
//! other rule would find its workload false and so cannot apply or fail.
//!
//! **Bound.** A decision evaluates each candidate workload, each candidate rule's `when` and
//! each condition at most once, and a block runs each of its instructions at most once, since
//! its jumps go forward. [`Index::bound`] sums those blocks for the worst request: per target
//! and kind, the unkeyed workloads, the heaviest value of each keyed claim (an absent claim
//! costs the one instruction that fails), the rules they bring, and every condition.
//!
//! **Layout.** At 100,000 rules the index is tens of megabytes, and each decision reads a few
//! places in it that no recent decision read, each a trip to main memory or the last-level
//! cache. The tables are shaped so that a decision reads as few cache lines as possible: a
//! claim value is found in an open-addressed [`ValueTable`] whose slot holds the answer (the
//! first workload keyed on the value), with the value's text in the code's text, where the
//! workload's block compares it again; a candidate workload is one record, just before its
//! code, that holds where its alternatives start, its rules (target, order, `when`,
//! credential) and the names a decision reports; and the candidate rules carry what running
//! them needs, so that no rule table is read until one decides. Target names have a table of
//! their own (`vm/targets.rs`).

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use super::code::{Code, RECORD_ALTERNATIVE, RECORD_HEAD, RECORD_RULE};
use crate::bundle::{Bundle, RuleEntry};
use crate::bytecode::{ConstSet, Instr, kind_code};
use crate::ir::{CredentialId, Effect, TargetRef, WorkloadRef};
use crate::schema::{ClaimId, ClaimType, ClaimValue, ProviderKind};

/// The number of trust provider kinds, which [`kind_code`] numbers from 0.
const KINDS: usize = ProviderKind::ALL.len();

/// A hasher for the index's tables. Their keys come from the policy set, which the tables are
/// built from; a request only looks keys up, so it cannot lengthen a probe sequence beyond what
/// the policy set already made, and a keyed hash would only cost time on the hot path.
#[derive(Default, Clone, Copy)]
pub(crate) struct FastHasher(u64);

const SEED: u64 = 0x51_7c_c1_b7_27_22_0a_95;

impl FastHasher {
    fn add(&mut self, word: u64) {
        self.0 = (self.0.rotate_left(5) ^ word).wrapping_mul(SEED);
    }
}

impl Hasher for FastHasher {
    fn write(&mut self, bytes: &[u8]) {
        let mut chunks = bytes.chunks_exact(8);
        for chunk in &mut chunks {
            let mut word = [0u8; 8];
            word.copy_from_slice(chunk);
            self.add(u64::from_le_bytes(word));
        }
        let rest = chunks.remainder();
        if !rest.is_empty() {
            let mut word = [0u8; 8];
            word[..rest.len()].copy_from_slice(rest);
            self.add(u64::from_le_bytes(word));
        }
    }

    fn write_u8(&mut self, value: u8) {
        self.add(u64::from(value));
    }

    fn write_u32(&mut self, value: u32) {
        self.add(u64::from(value));
    }

    fn write_u64(&mut self, value: u64) {
        self.add(value);
    }

    fn write_usize(&mut self, value: usize) {
        self.add(value as u64);
    }

    /// The state, mixed so that every input bit reaches the low bits, which pick a table's
    /// slot: the multiply in [`FastHasher::add`] only carries bits upwards, and keys that
    /// differ in their last bytes (`svc-000121`, `svc-000122`) would otherwise share slots.
    fn finish(&self) -> u64 {
        let mut hash = self.0;
        hash ^= hash >> 32;
        hash = hash.wrapping_mul(0x9e37_79b9_7f4a_7c15);
        hash ^ (hash >> 29)
    }
}

pub(crate) type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// While building: a claim, its values to the workloads keyed on each, all of those, and the
/// claims they test before it.
type KeyedWorkloads = (ClaimId, FastMap<String, Vec<u32>>, Vec<u32>, Vec<ClaimId>);

/// While bounding: a claim, its values to the cost of their workloads on no target and what
/// each target adds, and what a caller without a key or guard costs.
type KeyedCosts<'b> = (
    ClaimId,
    FastMap<&'b str, (usize, FastMap<usize, usize>)>,
    KeylessCost,
);

/// What the workloads keyed on one claim cost a caller without a string for the key or a
/// guard.
#[derive(Debug, Default, Clone, Copy)]
struct KeylessCost {
    workloads: usize,
    guarded: bool,
    /// The instructions of all their alternatives of the kind: with guards, each runs, and
    /// none can be true (a guard or the key fails, or an earlier test is false), so no
    /// rule's `when` runs.
    alternatives: usize,
}

/// A run of positions in one of the index's flat lists.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

/// The workloads a claim of one kind keys. Workloads are named by their records' offsets.
#[derive(Debug)]
struct ClaimKey {
    claim: ClaimId,
    /// A string value of the claim to the workloads keyed on it.
    values: ValueTable,
    /// Per target slot, the first rule to consider among those naming a workload keyed on the
    /// claim. For a caller without a string value for the claim, each of these rules is an
    /// evaluation error, so the first is the only one that can decide; unless the key has
    /// guards, which may be false first.
    first_rule: FastMap<u32, RuleRef>,
    /// The claims tested before the key by any workload keyed on it. A caller without a string
    /// for one of them, or (with guards) for the key itself, meets every workload in `all`.
    guards: Vec<ClaimId>,
    all: Vec<u32>,
}

/// The workloads of one trust provider kind.
#[derive(Debug, Default)]
struct KindIndex {
    /// Workloads with an alternative of this kind that no claim keys, ascending.
    unkeyed: Vec<u32>,
    keys: Vec<ClaimKey>,
}

/// A candidate rule, with what a decision needs to run it, so that it reads no rule table.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct RuleRef {
    /// The order of consideration: forbids before permits ([`PERMIT_BIT`] set), each in
    /// declaration order; without that bit, the rule's position in the bundle.
    pub order: u32,
    /// Where the rule's `when` starts in the program's code, or [`NO_WHEN`].
    pub when: u32,
    pub workload: RuleWorkload,
    /// Where the rule's entry in its workload's record is, which holds what a decision by
    /// the rule reports; [`NO_WHEN`] for a rule that names no workload.
    pub entry: u32,
}

/// What a decision reports about the rule that decided it, from the rule's workload's record.
#[derive(Debug, Clone, Copy)]
pub(crate) struct RuleReport<'i> {
    pub name: &'i str,
    pub credential: Option<CredentialId>,
    pub workload: &'i str,
}

/// Set in [`RuleRef::order`] for a permit.
pub(crate) const PERMIT_BIT: u32 = 1 << 31;

/// [`RuleRef::when`] of a rule without a `when`.
pub(crate) const NO_WHEN: u32 = u32::MAX;

/// The workload of a candidate rule.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum RuleWorkload {
    Any,
    AnyOfKind(ProviderKind),
    /// A named workload, by the offset of its record.
    Record(u32),
}

impl RuleRef {
    /// The rule's position in the bundle's rules.
    pub fn position(&self) -> u32 {
        self.order & !PERMIT_BIT
    }

    pub fn effect(&self) -> Effect {
        if self.order & PERMIT_BIT == 0 {
            Effect::Forbid
        } else {
            Effect::Permit
        }
    }
}

/// How the index found one workload for one kind.
#[derive(Debug, Clone, PartialEq, Eq)]
enum WorkloadKey {
    /// No alternative of the kind: never matches a caller of it.
    Absent,
    Unkeyed,
    Keyed {
        claim: ClaimId,
        values: Vec<String>,
        /// The claims the chain tests before the key; sound to skip only when the caller has
        /// each as a string.
        guards: Vec<ClaimId>,
    },
}

/// The index of one program. See the module documentation.
///
/// Each workload has a *record* in `records`, which holds what a decision reads about it, so
/// that a candidate workload costs one place in memory rather than one per table: its id, the
/// number of its alternatives and of its rules, its name (start and length in the code's
/// text, after the strings of its code), then
/// per alternative its kind's code and the start of its block, then per rule naming it the
/// rule's target slot, [`RuleRef::order`], [`RuleRef::when`], credential ([`NO_WHEN`] for
/// none) and name. Records are in workload order, so that ordering offsets orders workloads.
/// The index's workload lists hold record offsets.
#[derive(Debug, Default)]
pub(crate) struct Index {
    kinds: [KindIndex; KINDS],
    /// Workload lists of every claim value, referred to by [`ClaimKey::by_value`].
    workload_lists: Vec<u32>,
    /// Per target slot (the slot of `target any` is the number of targets), its rules that
    /// name no workload, in `slot_lists`: `None` for `workload any`, else the kind.
    slots: Vec<Span>,
    slot_lists: Vec<(Option<ProviderKind>, RuleRef)>,
    /// The most instructions one decision can execute.
    bound: usize,
}

/// Scratch space of the index's lookups, kept between decisions so that a warm decision
/// allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    /// Candidate workloads, ascending, by their records' offsets.
    pub workloads: Vec<u32>,
    /// Candidate rules, in the order a decision considers them: forbids, then permits, each in
    /// declaration order.
    pub rules: Vec<RuleRef>,
    /// The claim keys (positions in the caller's kind's keys) the caller has no string for.
    keyless: Vec<usize>,
}

fn order_key(rule: &RuleEntry, position: u32) -> u32 {
    match rule.effect {
        Effect::Forbid => position,
        Effect::Permit => position | PERMIT_BIT,
    }
}

impl Index {
    pub fn build(bundle: &Bundle, code: &mut Code) -> Index {
        let mut index = Index::default();
        let n_targets = bundle.targets().len();
        let keys = workload_keys(bundle);
        // Per claim key, its values' workloads, until the records exist.
        let mut values_of: Vec<(usize, usize, FastMap<String, Vec<u32>>)> = Vec::new();
        // Per workload, the claim keys it is looked up by: (kind, position in the kind's keys).
        let mut keyed_in: Vec<Vec<(usize, usize)>> = vec![Vec::new(); bundle.workloads().len()];
        for (kind, per_workload) in ProviderKind::ALL.into_iter().zip(&keys) {
            let kind_index = &mut index.kinds[usize::from(kind_code(kind))];
            let mut by_claim: Vec<KeyedWorkloads> = Vec::new();
            for (workload, key) in (0u32..).zip(per_workload) {
                match key {
                    WorkloadKey::Absent => {}
                    WorkloadKey::Unkeyed => kind_index.unkeyed.push(workload),
                    WorkloadKey::Keyed {
                        claim,
                        values,
                        guards,
                    } => {
                        let position = match by_claim.iter().position(|(c, ..)| c == claim) {
                            Some(found) => found,
                            None => {
                                let empty = (*claim, FastMap::default(), Vec::new(), Vec::new());
                                by_claim.push(empty);
                                by_claim.len() - 1
                            }
                        };
                        let (_, by_value, all, key_guards) = &mut by_claim[position];
                        all.push(workload);
                        for guard in guards {
                            if !key_guards.contains(guard) {
                                key_guards.push(*guard);
                            }
                        }
                        for value in values {
                            let list = by_value.entry(value.clone()).or_default();
                            if list.last() != Some(&workload) {
                                list.push(workload);
                            }
                        }
                    }
                }
            }
            for (claim, by_value, all, guards) in by_claim {
                let position = kind_index.keys.len();
                for &workload in &all {
                    if let Some(keys) = keyed_in.get_mut(workload as usize) {
                        keys.push((usize::from(kind_code(kind)), position));
                    }
                }
                let key = ClaimKey {
                    claim,
                    values: ValueTable::default(),
                    first_rule: FastMap::default(),
                    guards,
                    all,
                };
                values_of.push((usize::from(kind_code(kind)), position, by_value));
                kind_index.keys.push(key);
            }
        }

        let when_start =
            |code: &Code, rule: &RuleEntry| rule.when.and_then(|block| code.start(block));
        // Per workload, the rules naming it: (slot, order, when). Per slot, the rules naming
        // no workload.
        let mut rules_of: Vec<Vec<(u32, u32, u32, &RuleEntry)>> =
            vec![Vec::new(); bundle.workloads().len()];
        let mut slot_rules: Vec<Vec<(Option<ProviderKind>, RuleRef)>> =
            vec![Vec::new(); n_targets + 1];
        let mut first_rules: Vec<(usize, usize, u32, u32, u32)> = Vec::new();
        for (position, rule) in (0u32..).zip(bundle.rules()) {
            let slot = match rule.target {
                TargetRef::Named(target) => target.0 as usize,
                TargetRef::Any => n_targets,
            };
            let order = order_key(rule, position);
            let when = when_start(code, rule).unwrap_or(NO_WHEN);
            let (kind, workload) = match rule.workload {
                WorkloadRef::Any => (None, RuleWorkload::Any),
                WorkloadRef::AnyOfKind(kind) => (Some(kind), RuleWorkload::AnyOfKind(kind)),
                WorkloadRef::Named(workload) => {
                    let Some(rules) = rules_of.get_mut(workload.0 as usize) else {
                        continue;
                    };
                    rules.push((slot as u32, order, when, rule));
                    for (kind, key) in keyed_in.get(workload.0 as usize).into_iter().flatten() {
                        first_rules.push((*kind, *key, slot as u32, workload.0, order));
                    }
                    continue;
                }
            };
            if let Some(list) = slot_rules.get_mut(slot) {
                let entry = NO_WHEN;
                list.push((
                    kind,
                    RuleRef {
                        order,
                        when,
                        workload,
                        entry,
                    },
                ));
            }
        }
        for list in slot_rules {
            let span = push_span(&mut index.slot_lists, &list);
            index.slots.push(span);
        }

        // Fill in the records the code has room for, and turn every workload list from ids
        // into record offsets.
        let record_at = code.record_at.clone();
        for ((id, workload), rules) in (0u32..).zip(bundle.workloads()).zip(&rules_of) {
            let name = code
                .workload_names
                .get(id as usize)
                .copied()
                .unwrap_or_default();
            let (n_alternatives, n_rules) = (workload.alternatives.len(), rules.len());
            let mut record = vec![id, n_alternatives as u32, n_rules as u32, name.0, name.1];
            for alt in &workload.alternatives {
                let start = code.start(alt.block).unwrap_or(NO_WHEN);
                record.extend([u32::from(kind_code(alt.kind)), start]);
            }
            for (slot, order, when, rule) in rules {
                let credential = rule.credential.map_or(NO_WHEN, |id| id.0);
                let position = (order & !PERMIT_BIT) as usize;
                let name = code.rule_names.get(position).copied().unwrap_or_default();
                record.extend([*slot, *order, *when, credential, name.0, name.1]);
            }
            let at = record_at.get(id as usize).copied().unwrap_or(u32::MAX) as usize;
            if let Some(room) = code.words.get_mut(at..at + record.len()) {
                room.copy_from_slice(&record);
            }
        }
        let offset = |id: &mut u32| *id = record_at.get(*id as usize).copied().unwrap_or(u32::MAX);
        for kind_index in &mut index.kinds {
            kind_index.unkeyed.iter_mut().for_each(offset);
            for key in &mut kind_index.keys {
                key.all.iter_mut().for_each(offset);
            }
        }
        for (kind, key, slot, workload, order) in first_rules {
            let Some(rule) = bundle.rules().get((order & !PERMIT_BIT) as usize) else {
                continue;
            };
            let record = record_at
                .get(workload as usize)
                .copied()
                .unwrap_or(u32::MAX);
            let candidate = RuleRef {
                order,
                when: when_start(code, rule).unwrap_or(NO_WHEN),
                workload: RuleWorkload::Record(record),
                entry: rule_entry(code, record, order),
            };
            let Some(key) = index.kinds[kind].keys.get_mut(key) else {
                continue;
            };
            let first = key.first_rule.entry(slot).or_insert(candidate);
            if candidate.order < first.order {
                *first = candidate;
            }
        }
        let texts = code.texts(bundle);
        for (kind, key, by_value) in values_of {
            let mut values = by_value.into_iter().collect::<Vec<_>>();
            for (_, list) in &mut values {
                list.iter_mut().for_each(offset);
            }
            let table = ValueTable::build(values, &texts, code, &mut index.workload_lists);
            if let Some(key) = index.kinds[kind].keys.get_mut(key) {
                key.values = table;
            }
        }
        index.bound = bound(bundle, &keys, n_targets);
        index.workload_lists.shrink_to_fit();
        index.slot_lists.shrink_to_fit();
        index
    }

    /// The most instructions one decision can execute.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Fills `out.workloads` with the workloads a caller of `kind` with `claims` could be.
    pub fn workloads(
        &self,
        code: &Code,
        kind: ProviderKind,
        claims: &[Option<ClaimValue>],
        out: &mut Candidates,
    ) {
        out.workloads.clear();
        out.keyless.clear();
        let Some(kind_index) = self.kinds.get(usize::from(kind_code(kind))) else {
            return;
        };
        out.workloads.extend_from_slice(&kind_index.unkeyed);
        let mut sources = usize::from(!kind_index.unkeyed.is_empty());
        let string = |claim: ClaimId| match claims.get(usize::from(claim.0)) {
            Some(Some(ClaimValue::String(text))) => Some(text.as_str()),
            _ => None,
        };
        for (position, key) in kind_index.keys.iter().enumerate() {
            let guarded = !key.guards.is_empty();
            let (first, rest): (Option<u32>, &[u32]) = match string(key.claim) {
                // A guard the caller lacks fails or is false in each workload: none can be
                // skipped.
                _ if key.guards.iter().any(|guard| string(*guard).is_none()) => (None, &key.all),
                Some(text) => match key.values.get(text, &code.text) {
                    Some((first, rest)) => (Some(first), self.workload_span(rest)),
                    None => (None, &[]),
                },
                // Without the key, a guard may still be false first, so each must run.
                None if guarded => (None, &key.all),
                // Every workload keyed on the claim fails for this caller, so none is one the
                // caller is; `rules` adds the first rule that names one.
                None => {
                    out.keyless.push(position);
                    (None, &[])
                }
            };
            if first.is_some() || !rest.is_empty() {
                out.workloads.extend(first);
                out.workloads.extend_from_slice(rest);
                sources += 1;
            }
        }
        if sources > 1 {
            out.workloads.sort_unstable();
            out.workloads.dedup();
        }
    }

    /// Fills `out.rules` with the rules to consider for a caller of `kind` on the target at
    /// `slot`, given the candidate workloads and claim keys `workloads` left in `out`.
    pub fn rules(&self, code: &Code, slot: usize, kind: ProviderKind, out: &mut Candidates) {
        out.rules.clear();
        let any_slot = self.slots.len().saturating_sub(1);
        let keys = self
            .kinds
            .get(usize::from(kind_code(kind)))
            .map_or(&[][..], |k| k.keys.as_slice());
        for slot in [slot, any_slot] {
            for key in out
                .keyless
                .iter()
                .filter_map(|position| keys.get(*position))
            {
                if let Some(rule) = key.first_rule.get(&(slot as u32)) {
                    out.rules.push(*rule);
                }
            }
            let list = self.slots.get(slot).map_or(&[][..], |span| {
                let start = span.start as usize;
                self.slot_lists
                    .get(start..start + span.len as usize)
                    .unwrap_or_default()
            });
            for (rule_kind, rule) in list {
                if rule_kind.is_none_or(|rule_kind| rule_kind == kind) {
                    out.rules.push(*rule);
                }
            }
            if slot == any_slot {
                break;
            }
        }
        let (slot, any_slot) = (slot as u32, any_slot as u32);
        for &record in &out.workloads {
            let (rules_at, rules) = record_rules(code, record);
            for (entry, [rule_slot, order, when, ..]) in
                (rules_at..).step_by(RECORD_RULE).zip(rules)
            {
                if *rule_slot == slot || *rule_slot == any_slot {
                    out.rules.push(RuleRef {
                        order: *order,
                        when: *when,
                        workload: RuleWorkload::Record(record),
                        entry,
                    });
                }
            }
        }
        out.rules.sort_unstable_by_key(|rule| rule.order);
        out.rules.dedup_by_key(|rule| rule.order);
    }

    fn workload_span(&self, span: Span) -> &[u32] {
        let start = span.start as usize;
        self.workload_lists
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }
}

/// A claim key's values to their workloads: an open-addressed table, probed linearly, whose
/// keys are texts in the program's code text. A value the code compares the claim with is the
/// same text that the code pushes, so that the block that runs after the lookup finds it in the
/// cache. A slot is 16 bytes, so that none straddles two cache lines.
#[derive(Debug, Default)]
struct ValueTable {
    /// A power of two in length, at most half full.
    slots: Vec<ValueSlot>,
    /// By slot, the workloads keyed on its value after the first, in
    /// [`Index::workload_lists`]; empty when no value has more than one.
    rests: Vec<Span>,
}

#[derive(Debug, Clone, Copy)]
struct ValueSlot {
    hash: u32,
    /// Where the value is in the code text; [`EMPTY`] for a free slot.
    text: u32,
    /// The value's length; [`MORE`] set when more than one workload is keyed on it.
    len: u32,
    /// The first workload keyed on the value, by its record.
    first: u32,
}

/// [`ValueSlot::text`] of a free slot.
const EMPTY: u32 = u32::MAX;

/// Set in [`ValueSlot::len`] when the value keys more workloads, in [`ValueTable::rests`].
const MORE: u32 = 1 << 31;

impl ValueTable {
    /// `values` are each value's workloads, as record offsets; `texts` are the texts the code
    /// already holds, and other values are added to it.
    fn build(
        values: Vec<(String, Vec<u32>)>,
        texts: &FastMap<&str, (u32, u32)>,
        code: &mut Code,
        lists: &mut Vec<u32>,
    ) -> ValueTable {
        let capacity = (values.len() * 2).next_power_of_two().max(2);
        let free = ValueSlot {
            hash: 0,
            text: EMPTY,
            len: 0,
            first: 0,
        };
        let mut table = ValueTable {
            slots: vec![free; capacity],
            rests: Vec::new(),
        };
        for (value, list) in values {
            let Some((first, rest)) = list.split_first() else {
                continue;
            };
            let at = texts.get(value.as_str()).copied();
            let Some((text, len)) = at.or_else(|| code.push_text(&value)) else {
                continue;
            };
            if len >= MORE {
                continue;
            }
            let hash = text_hash(&value);
            let mask = capacity - 1;
            let mut at = hash as usize & mask;
            while table.slots.get(at).is_some_and(|taken| taken.text != EMPTY) {
                at = (at + 1) & mask;
            }
            let more = if rest.is_empty() { 0 } else { MORE };
            if let Some(free) = table.slots.get_mut(at) {
                *free = ValueSlot {
                    hash,
                    text,
                    len: len | more,
                    first: *first,
                };
            }
            if !rest.is_empty() {
                table.rests.resize(capacity, Span::default());
                if let Some(slot) = table.rests.get_mut(at) {
                    *slot = push_span(lists, rest);
                }
            }
        }
        table
    }

    /// The workloads keyed on `value`: the first, and where the others are; `text` is the
    /// code text.
    fn get(&self, value: &str, text: &str) -> Option<(u32, Span)> {
        let mask = self.slots.len().checked_sub(1)?;
        let hash = text_hash(value);
        let mut at = hash as usize & mask;
        // The table is never full, so a free slot ends every probe; the count is a backstop.
        for _ in 0..self.slots.len() {
            let slot = self.slots.get(at)?;
            if slot.text == EMPTY {
                return None;
            }
            if slot.hash == hash && (slot.len & !MORE) as usize == value.len() {
                let start = slot.text as usize;
                if text.get(start..start + value.len()) == Some(value) {
                    let rest = if slot.len & MORE == 0 {
                        Span::default()
                    } else {
                        self.rests.get(at).copied().unwrap_or_default()
                    };
                    return Some((slot.first, rest));
                }
            }
            at = (at + 1) & mask;
        }
        None
    }
}

fn text_hash(value: &str) -> u32 {
    let mut hasher = FastHasher::default();
    hasher.write(value.as_bytes());
    (hasher.finish() >> 32) as u32
}

/// The workload id of a record.
pub(crate) fn record_id(code: &Code, record: u32) -> Option<u32> {
    code.words.get(record as usize).copied()
}

/// A record's alternatives: the code of each one's kind, and where its block starts.
pub(crate) fn record_alternatives(code: &Code, record: u32) -> &[[u32; RECORD_ALTERNATIVE]] {
    let (alternatives, ..) = record_parts(code, record);
    alternatives
}

/// Where a record's rules start in the code's words, and the rules.
fn record_rules(code: &Code, record: u32) -> (u32, &[[u32; RECORD_RULE]]) {
    let (_, rules_at, rules) = record_parts(code, record);
    (rules_at as u32, rules)
}

type RecordParts<'c> = (
    &'c [[u32; RECORD_ALTERNATIVE]],
    usize,
    &'c [[u32; RECORD_RULE]],
);

fn record_parts(code: &Code, record: u32) -> RecordParts<'_> {
    let words = &code.words;
    let start = record as usize;
    let Some([_, n_alternatives, n_rules, ..]) = words.get(start..start + RECORD_HEAD) else {
        return (&[], 0, &[]);
    };
    let alternatives_at = start + RECORD_HEAD;
    let rules_at = alternatives_at + RECORD_ALTERNATIVE * *n_alternatives as usize;
    let alternatives = words.get(alternatives_at..rules_at).unwrap_or_default();
    let rules = words
        .get(rules_at..rules_at + RECORD_RULE * *n_rules as usize)
        .unwrap_or_default();
    (alternatives.as_chunks().0, rules_at, rules.as_chunks().0)
}

/// The entry of the rule with this order in a record; [`NO_WHEN`] if there is none.
fn rule_entry(code: &Code, record: u32, order: u32) -> u32 {
    let (rules_at, rules) = record_rules(code, record);
    (rules_at..)
        .step_by(RECORD_RULE)
        .zip(rules)
        .find(|(_, rule)| rule[1] == order)
        .map_or(NO_WHEN, |(entry, _)| entry)
}

/// What a decision by `rule` reports, from its workload's record; none for a rule that names
/// no workload.
pub(crate) fn report<'c>(code: &'c Code, rule: &RuleRef) -> Option<RuleReport<'c>> {
    let RuleWorkload::Record(record) = rule.workload else {
        return None;
    };
    let at = rule.entry as usize;
    let entry = code.words.get(at..at + RECORD_RULE)?;
    let [_, _, _, credential, name_start, name_len] =
        *entry.as_chunks::<RECORD_RULE>().0.first()?;
    Some(RuleReport {
        name: code.name((name_start, name_len))?,
        credential: (credential != NO_WHEN).then_some(CredentialId(credential)),
        workload: workload_name(code, record)?,
    })
}

/// The name of the workload of a record.
pub(crate) fn workload_name(code: &Code, record: u32) -> Option<&str> {
    let at = record as usize;
    let head = code.words.get(at..at + RECORD_HEAD)?;
    let [_, _, _, start, len] = *head.as_chunks::<RECORD_HEAD>().0.first()?;
    code.name((start, len))
}

fn push_span<T: Copy>(lists: &mut Vec<T>, list: &[T]) -> Span {
    let start = lists.len() as u32;
    lists.extend_from_slice(list);
    Span {
        start,
        len: list.len() as u32,
    }
}

/// One test of a block's leading chain: `claim == "v"` or `claim in [...]`.
struct ChainTest {
    claim: ClaimId,
    values: Vec<String>,
}

/// Each workload's key for each kind, per kind in [`ProviderKind::ALL`] order.
///
/// An alternative may be keyed on any test of its leading chain; the tests before it become
/// its guards. Of the chain's claims, the one with the most distinct values among the kind's
/// alternatives is taken (the earliest on a tie): `organization == "acme" && workspace ==
/// "ws-1"` is looked up by workspace, which tells workloads apart, not by organization.
fn workload_keys(bundle: &Bundle) -> Vec<Vec<WorkloadKey>> {
    ProviderKind::ALL
        .into_iter()
        .map(|kind| {
            // The chains of every alternative of this kind, per workload.
            let chains: Vec<Vec<Vec<ChainTest>>> = bundle
                .workloads()
                .iter()
                .map(|workload| {
                    workload
                        .alternatives
                        .iter()
                        .filter(|alt| alt.kind == kind)
                        .map(|alt| {
                            bundle
                                .block(alt.block)
                                .map(|code| block_chain(bundle, kind, code))
                                .unwrap_or_default()
                        })
                        .collect()
                })
                .collect();
            let mut distinct: FastMap<ClaimId, std::collections::HashSet<&str>> =
                FastMap::default();
            for test in chains.iter().flatten().flatten() {
                let values = distinct.entry(test.claim).or_default();
                values.extend(test.values.iter().map(String::as_str));
            }
            let selectivity = |claim: ClaimId| distinct.get(&claim).map_or(0, |v| v.len());
            chains
                .iter()
                .map(|alternatives| {
                    let mut key = WorkloadKey::Absent;
                    for chain in alternatives {
                        let chosen = (0..chain.len())
                            .max_by_key(|&k| (selectivity(chain[k].claim), std::cmp::Reverse(k)));
                        let found = chosen.map(|k| {
                            let guards: Vec<ClaimId> =
                                chain[..k].iter().map(|test| test.claim).collect();
                            (chain[k].claim, chain[k].values.clone(), guards)
                        });
                        key = match (key, found) {
                            (WorkloadKey::Absent, Some((claim, values, guards))) => {
                                WorkloadKey::Keyed {
                                    claim,
                                    values,
                                    guards,
                                }
                            }
                            (
                                WorkloadKey::Keyed {
                                    claim,
                                    mut values,
                                    mut guards,
                                },
                                Some((other, more, more_guards)),
                            ) if claim == other => {
                                values.extend(more);
                                guards.extend(more_guards);
                                WorkloadKey::Keyed {
                                    claim,
                                    values,
                                    guards,
                                }
                            }
                            _ => WorkloadKey::Unkeyed,
                        };
                    }
                    key
                })
                .collect()
        })
        .collect()
}

/// The leading chain of a block of kind `kind`: the tests `c == "v"` / `c in [...]` of string
/// claims of `kind` that it starts with, joined by `&&`, each of which returns false from
/// the block when it is false.
fn block_chain(bundle: &Bundle, kind: ProviderKind, code: &[Instr]) -> Vec<ChainTest> {
    let mut chain = Vec::new();
    let mut pc = 0;
    while let Some((test, end)) = chain_test(bundle, kind, code, pc) {
        if !false_returns(code, end) {
            break;
        }
        chain.push(test);
        // A true test is popped by the `&&` jump after it, and the next test follows.
        match code.get(end) {
            Some(Instr::JumpIfFalseOrPop(_)) => pc = end + 1,
            _ => break,
        }
    }
    chain
}

/// The test at `pc`, and the position just after it.
fn chain_test(
    bundle: &Bundle,
    kind: ProviderKind,
    code: &[Instr],
    pc: usize,
) -> Option<(ChainTest, usize)> {
    let Some(Instr::PushClaim(claim_kind, claim)) = code.get(pc) else {
        return None;
    };
    if *claim_kind != kind
        || bundle.custom_claims().claim_type(kind, *claim) != Some(ClaimType::String)
    {
        return None;
    }
    let (values, end) = match code.get(pc + 1..pc + 3) {
        Some([Instr::PushStr(idx), Instr::Eq]) => {
            (vec![bundle.strings().get(*idx as usize)?.clone()], pc + 3)
        }
        _ => match code.get(pc + 1) {
            Some(Instr::InSet(set)) => match bundle.sets().get(*set as usize)? {
                ConstSet::Str(items) => (items.clone(), pc + 2),
                _ => return None,
            },
            _ => return None,
        },
    };
    Some((
        ChainTest {
            claim: *claim,
            values,
        },
        end,
    ))
}

/// Whether a false value on top of the stack at `pc` is returned: `pc` is `return`, or a
/// chain of `&&` jumps that ends in one.
fn false_returns(code: &[Instr], mut pc: usize) -> bool {
    for _ in 0..code.len() {
        match code.get(pc) {
            Some(Instr::Return) => return true,
            Some(Instr::JumpIfFalseOrPop(to)) if (*to as usize) > pc => pc = *to as usize,
            _ => return false,
        }
    }
    false
}

/// The instruction bound; see the module documentation.
fn bound(bundle: &Bundle, keys: &[Vec<WorkloadKey>], n_targets: usize) -> usize {
    let block_len = |block| bundle.block(block).map_or(0, <[Instr]>::len);
    let when_len = |rule: &RuleEntry| rule.when.map_or(0, block_len);
    let conditions: usize = bundle.conditions().iter().map(|c| block_len(c.block)).sum();
    let any_slot = n_targets;
    let n_workloads = bundle.workloads().len();

    // The `when` blocks of each workload's rules: on `target any`, and per named target.
    let mut any_whens = vec![0usize; n_workloads];
    let mut target_whens: Vec<FastMap<usize, usize>> = vec![FastMap::default(); n_workloads];
    // The `when` blocks of the rules that name no workload, per slot and kind (index KINDS
    // holds `workload any`).
    let mut slot_whens = vec![[0usize; KINDS + 1]; n_targets + 1];
    for rule in bundle.rules() {
        let slot = match rule.target {
            TargetRef::Named(target) => target.0 as usize,
            TargetRef::Any => any_slot,
        };
        let len = when_len(rule);
        match rule.workload {
            WorkloadRef::Named(workload) => {
                let w = workload.0 as usize;
                if slot == any_slot {
                    if let Some(sum) = any_whens.get_mut(w) {
                        *sum += len;
                    }
                } else if let Some(map) = target_whens.get_mut(w) {
                    *map.entry(slot).or_default() += len;
                }
            }
            WorkloadRef::AnyOfKind(kind) => {
                if let Some(sums) = slot_whens.get_mut(slot) {
                    sums[usize::from(kind_code(kind))] += len;
                }
            }
            WorkloadRef::Any => {
                if let Some(sums) = slot_whens.get_mut(slot) {
                    sums[KINDS] += len;
                }
            }
        }
    }

    let mut worst = 0usize;
    for (kind, per_workload) in ProviderKind::ALL.into_iter().zip(keys) {
        let k = usize::from(kind_code(kind));
        let alternatives_len = |w: usize| -> usize {
            bundle.workloads().get(w).map_or(0, |workload| {
                workload
                    .alternatives
                    .iter()
                    .filter(|alt| alt.kind == kind)
                    .map(|alt| block_len(alt.block))
                    .sum()
            })
        };
        // Cost of a workload on no particular target, and what each target adds.
        let base_cost = |w: usize| alternatives_len(w) + any_whens.get(w).copied().unwrap_or(0);

        // Unkeyed workloads: all of them are candidates together.
        let mut unkeyed = 0usize;
        let mut unkeyed_per_target: FastMap<usize, usize> = FastMap::default();
        // Keyed claims: per claim, the heaviest value without a target, per target the
        // heaviest value with it, and the count of workloads keyed on the claim.
        let mut claims: Vec<KeyedCosts<'_>> = Vec::new();
        for (w, key) in per_workload.iter().enumerate() {
            match key {
                WorkloadKey::Absent => {}
                WorkloadKey::Unkeyed => {
                    unkeyed += base_cost(w);
                    for (target, len) in target_whens.get(w).into_iter().flatten() {
                        *unkeyed_per_target.entry(*target).or_default() += len;
                    }
                }
                WorkloadKey::Keyed {
                    claim,
                    values,
                    guards,
                } => {
                    let position = match claims.iter().position(|(c, ..)| c == claim) {
                        Some(found) => found,
                        None => {
                            claims.push((*claim, FastMap::default(), KeylessCost::default()));
                            claims.len() - 1
                        }
                    };
                    let (_, by_value, keyless) = &mut claims[position];
                    keyless.workloads += 1;
                    keyless.guarded |= !guards.is_empty();
                    keyless.alternatives += alternatives_len(w);
                    let mut seen: Vec<&str> = Vec::new();
                    for value in values {
                        if seen.contains(&value.as_str()) {
                            continue;
                        }
                        seen.push(value);
                        let (cost, per_target) = by_value.entry(value.as_str()).or_default();
                        *cost += base_cost(w);
                        for (target, len) in target_whens.get(w).into_iter().flatten() {
                            *per_target.entry(*target).or_default() += len;
                        }
                    }
                }
            }
        }
        let any_slot_whens = slot_whens.get(any_slot).map_or(0, |s| s[k] + s[KINDS]);
        // Per keyed claim: the heaviest value on no particular target, and per target.
        let claim_worst: Vec<(usize, FastMap<usize, usize>)> = claims
            .iter()
            .map(|(_, by_value, keyless)| {
                // A caller without the claim runs the one instruction that fails; with guards,
                // every workload keyed on it runs.
                let mut plain = if keyless.guarded {
                    keyless.alternatives
                } else {
                    usize::from(keyless.workloads > 0)
                };
                let mut per_target: FastMap<usize, usize> = FastMap::default();
                for (cost, targets) in by_value.values() {
                    plain = plain.max(*cost);
                    for (target, extra) in targets {
                        let entry = per_target.entry(*target).or_default();
                        *entry = (*entry).max(cost + extra);
                    }
                }
                (plain, per_target)
            })
            .collect();
        for slot in 0..=n_targets {
            let own = if slot == any_slot {
                // No target: only workloads are evaluated.
                0
            } else {
                slot_whens.get(slot).map_or(0, |s| s[k] + s[KINDS])
                    + unkeyed_per_target.get(&slot).copied().unwrap_or(0)
            };
            let keyed: usize = claim_worst
                .iter()
                .map(|(plain, per_target)| {
                    (*plain).max(per_target.get(&slot).copied().unwrap_or(0))
                })
                .sum();
            let total = conditions + unkeyed + keyed + own + any_slot_whens;
            worst = worst.max(total);
        }
    }
    worst
}
