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

use std::collections::HashMap;
use std::hash::{BuildHasherDefault, Hasher};

use crate::bundle::{Bundle, RuleEntry};
use crate::bytecode::{ConstSet, Instr, kind_code};
use crate::ir::{Effect, TargetRef, WorkloadRef};
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

    fn finish(&self) -> u64 {
        self.0
    }
}

type FastMap<K, V> = HashMap<K, V, BuildHasherDefault<FastHasher>>;

/// While building: a claim, its values to the workloads keyed on each, and all of those.
type KeyedWorkloads = (ClaimId, FastMap<String, Vec<u32>>, Vec<u32>);

/// While bounding: a claim, its values to the cost of their workloads on no target and what
/// each target adds, and the number of workloads keyed on it.
type KeyedCosts<'b> = (
    ClaimId,
    FastMap<&'b str, (usize, FastMap<usize, usize>)>,
    usize,
);

/// A run of positions in one of the index's flat lists.
#[derive(Debug, Clone, Copy, Default)]
struct Span {
    start: u32,
    len: u32,
}

/// The workloads a claim of one kind keys.
#[derive(Debug)]
struct ClaimKey {
    claim: ClaimId,
    /// A string value of the claim to the workloads keyed on it, in `workload_lists`.
    by_value: FastMap<Box<str>, Span>,
    /// Per target slot, the first rule to consider among those naming a workload keyed on the
    /// claim, as its [`order_key`]. For a caller without a string value for the claim, each of
    /// these rules is an evaluation error, so the first is the only one that can decide.
    first_rule: FastMap<u32, u64>,
}

/// The workloads of one trust provider kind.
#[derive(Debug, Default)]
struct KindIndex {
    /// Workloads with an alternative of this kind that no claim keys, ascending.
    unkeyed: Vec<u32>,
    keys: Vec<ClaimKey>,
}

/// The rules of one target slot (a target, or `target any`) that name no workload.
#[derive(Debug, Default)]
struct SlotRules {
    any_workload: Vec<u32>,
    by_kind: [Vec<u32>; KINDS],
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
    },
}

/// The index of one program. See the module documentation.
#[derive(Debug, Default)]
pub(crate) struct Index {
    kinds: [KindIndex; KINDS],
    /// Workload lists of every claim value, referred to by [`ClaimKey::by_value`].
    workload_lists: Vec<u32>,
    /// `(target slot, workload)` to the rules naming both, in `rule_lists`. The slot of
    /// `target any` is the number of targets.
    by_workload: FastMap<u64, Span>,
    rule_lists: Vec<u32>,
    slots: Vec<SlotRules>,
    /// The most instructions one decision can execute.
    bound: usize,
}

/// Scratch space of the index's lookups, kept between decisions so that a warm decision
/// allocates nothing.
#[derive(Debug, Default)]
pub(crate) struct Candidates {
    /// Candidate workloads, ascending.
    pub workloads: Vec<u32>,
    /// Candidate rules, in the order a decision considers them: forbids, then permits, each in
    /// declaration order; as `effect << 32 | rule`.
    pub rules: Vec<u64>,
    /// The claim keys (positions in the caller's kind's keys) the caller has no string for.
    keyless: Vec<usize>,
}

impl Candidates {
    /// The candidate rules' positions, in the order to consider them.
    pub fn rules(&self) -> impl Iterator<Item = u32> + '_ {
        self.rules.iter().map(|entry| *entry as u32)
    }
}

fn slot_key(slot: usize, workload: u32) -> u64 {
    ((slot as u64) << 32) | u64::from(workload)
}

fn order_key(rule: &RuleEntry, position: u32) -> u64 {
    let effect = match rule.effect {
        Effect::Forbid => 0u64,
        Effect::Permit => 1u64,
    };
    (effect << 32) | u64::from(position)
}

impl Index {
    pub fn build(bundle: &Bundle) -> Index {
        let mut index = Index::default();
        let n_targets = bundle.targets().len();
        let keys = workload_keys(bundle);
        // Per workload, the claim keys it is looked up by: (kind, position in the kind's keys).
        let mut keyed_in: Vec<Vec<(usize, usize)>> = vec![Vec::new(); bundle.workloads().len()];
        for (kind, per_workload) in ProviderKind::ALL.into_iter().zip(&keys) {
            let kind_index = &mut index.kinds[usize::from(kind_code(kind))];
            let mut by_claim: Vec<KeyedWorkloads> = Vec::new();
            for (workload, key) in (0u32..).zip(per_workload) {
                match key {
                    WorkloadKey::Absent => {}
                    WorkloadKey::Unkeyed => kind_index.unkeyed.push(workload),
                    WorkloadKey::Keyed { claim, values } => {
                        let position = match by_claim.iter().position(|(c, ..)| c == claim) {
                            Some(found) => found,
                            None => {
                                by_claim.push((*claim, FastMap::default(), Vec::new()));
                                by_claim.len() - 1
                            }
                        };
                        let (_, by_value, all) = &mut by_claim[position];
                        all.push(workload);
                        for value in values {
                            let list = by_value.entry(value.clone()).or_default();
                            if list.last() != Some(&workload) {
                                list.push(workload);
                            }
                        }
                    }
                }
            }
            for (claim, by_value, all) in by_claim {
                let position = kind_index.keys.len();
                for workload in all {
                    if let Some(keys) = keyed_in.get_mut(workload as usize) {
                        keys.push((usize::from(kind_code(kind)), position));
                    }
                }
                let mut key = ClaimKey {
                    claim,
                    by_value: FastMap::default(),
                    first_rule: FastMap::default(),
                };
                for (value, list) in by_value {
                    let span = push_span(&mut index.workload_lists, &list);
                    key.by_value.insert(value.into_boxed_str(), span);
                }
                kind_index.keys.push(key);
            }
        }

        index.slots = (0..=n_targets).map(|_| SlotRules::default()).collect();
        let mut by_workload: FastMap<u64, Vec<u32>> = FastMap::default();
        for (position, rule) in (0u32..).zip(bundle.rules()) {
            let slot = match rule.target {
                TargetRef::Named(target) => target.0 as usize,
                TargetRef::Any => n_targets,
            };
            let Some(slot_rules) = index.slots.get_mut(slot) else {
                continue;
            };
            match rule.workload {
                WorkloadRef::Any => slot_rules.any_workload.push(position),
                WorkloadRef::AnyOfKind(kind) => {
                    slot_rules.by_kind[usize::from(kind_code(kind))].push(position);
                }
                WorkloadRef::Named(workload) => {
                    let key = slot_key(slot, workload.0);
                    by_workload.entry(key).or_default().push(position);
                    let order = order_key(rule, position);
                    for (kind, key) in keyed_in.get(workload.0 as usize).into_iter().flatten() {
                        let Some(key) = index.kinds[*kind].keys.get_mut(*key) else {
                            continue;
                        };
                        let first = key.first_rule.entry(slot as u32).or_insert(order);
                        *first = (*first).min(order);
                    }
                }
            }
        }
        for (key, list) in by_workload {
            let span = push_span(&mut index.rule_lists, &list);
            index.by_workload.insert(key, span);
        }
        index.bound = bound(bundle, &keys, n_targets);
        index
    }

    /// The most instructions one decision can execute.
    pub fn bound(&self) -> usize {
        self.bound
    }

    /// Fills `out.workloads` with the workloads a caller of `kind` with `claims` could be.
    pub fn workloads(
        &self,
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
        for (position, key) in kind_index.keys.iter().enumerate() {
            let value = claims
                .get(usize::from(key.claim.0))
                .and_then(Option::as_ref);
            let found: &[u32] = match value {
                Some(ClaimValue::String(text)) => match key.by_value.get(text.as_str()) {
                    Some(span) => self.workload_span(*span),
                    None => &[],
                },
                // Every workload keyed on the claim fails for this caller, so none is one the
                // caller is; `rules` adds the first rule that names one.
                _ => {
                    out.keyless.push(position);
                    &[]
                }
            };
            if !found.is_empty() {
                out.workloads.extend_from_slice(found);
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
    pub fn rules(&self, bundle: &Bundle, slot: usize, kind: ProviderKind, out: &mut Candidates) {
        out.rules.clear();
        let any_slot = self.slots.len().saturating_sub(1);
        let rules = bundle.rules();
        let kind = usize::from(kind_code(kind));
        let keys = self.kinds.get(kind).map_or(&[][..], |k| k.keys.as_slice());
        for slot in [slot, any_slot] {
            let Some(slot_rules) = self.slots.get(slot) else {
                continue;
            };
            for key in out
                .keyless
                .iter()
                .filter_map(|position| keys.get(*position))
            {
                if let Some(order) = key.first_rule.get(&(slot as u32)) {
                    out.rules.push(*order);
                }
            }
            let lists = [
                slot_rules.any_workload.as_slice(),
                &slot_rules.by_kind[kind],
            ];
            for position in lists.into_iter().flatten() {
                if let Some(rule) = rules.get(*position as usize) {
                    out.rules.push(order_key(rule, *position));
                }
            }
            for workload in &out.workloads {
                let Some(span) = self.by_workload.get(&slot_key(slot, *workload)) else {
                    continue;
                };
                for position in self.rule_span(*span) {
                    if let Some(rule) = rules.get(*position as usize) {
                        out.rules.push(order_key(rule, *position));
                    }
                }
            }
            if slot == any_slot {
                break;
            }
        }
        out.rules.sort_unstable();
        out.rules.dedup();
    }

    fn workload_span(&self, span: Span) -> &[u32] {
        let start = span.start as usize;
        self.workload_lists
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }

    fn rule_span(&self, span: Span) -> &[u32] {
        let start = span.start as usize;
        self.rule_lists
            .get(start..start + span.len as usize)
            .unwrap_or_default()
    }
}

fn push_span(lists: &mut Vec<u32>, list: &[u32]) -> Span {
    let start = lists.len() as u32;
    lists.extend_from_slice(list);
    Span {
        start,
        len: list.len() as u32,
    }
}

/// Each workload's key for each kind, per kind in [`ProviderKind::ALL`] order.
fn workload_keys(bundle: &Bundle) -> Vec<Vec<WorkloadKey>> {
    ProviderKind::ALL
        .into_iter()
        .map(|kind| {
            bundle
                .workloads()
                .iter()
                .map(|workload| {
                    let mut key = WorkloadKey::Absent;
                    let alternatives = workload.alternatives.iter().filter(|alt| alt.kind == kind);
                    for alternative in alternatives {
                        let found = bundle
                            .block(alternative.block)
                            .and_then(|code| block_key(bundle, kind, code));
                        key = match (key, found) {
                            (WorkloadKey::Absent, Some((claim, values))) => {
                                WorkloadKey::Keyed { claim, values }
                            }
                            (WorkloadKey::Keyed { claim, mut values }, Some((other, more)))
                                if claim == other =>
                            {
                                values.extend(more);
                                WorkloadKey::Keyed { claim, values }
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

/// The claim and values a block of kind `kind` is keyed on, if it is: it starts by comparing a
/// string claim of `kind` with constant strings, and a false comparison returns false.
fn block_key(
    bundle: &Bundle,
    kind: ProviderKind,
    code: &[Instr],
) -> Option<(ClaimId, Vec<String>)> {
    let Some(Instr::PushClaim(claim_kind, claim)) = code.first() else {
        return None;
    };
    if *claim_kind != kind
        || bundle.custom_claims().claim_type(kind, *claim) != Some(ClaimType::String)
    {
        return None;
    }
    let (values, next) = match code.get(1..3) {
        Some([Instr::PushStr(idx), Instr::Eq]) => {
            (vec![bundle.strings().get(*idx as usize)?.clone()], 3)
        }
        _ => match code.get(1) {
            Some(Instr::InSet(set)) => match bundle.sets().get(*set as usize)? {
                ConstSet::Str(items) => (items.clone(), 2),
                _ => return None,
            },
            _ => return None,
        },
    };
    false_returns(code, next).then_some((*claim, values))
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
                WorkloadKey::Keyed { claim, values } => {
                    let position = match claims.iter().position(|(c, ..)| c == claim) {
                        Some(found) => found,
                        None => {
                            claims.push((*claim, FastMap::default(), 0));
                            claims.len() - 1
                        }
                    };
                    let (_, by_value, count) = &mut claims[position];
                    *count += 1;
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
            .map(|(_, by_value, count)| {
                // A caller without the claim runs the one instruction that fails.
                let mut plain = usize::from(*count > 0);
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
