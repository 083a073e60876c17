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

/// The workloads a claim of one kind keys.
#[derive(Debug)]
struct ClaimKey {
    claim: ClaimId,
    /// A string value of the claim to the workloads keyed on it, in `workload_lists`.
    by_value: FastMap<Box<str>, Span>,
    /// Per target slot, the first rule to consider among those naming a workload keyed on the
    /// claim, as its [`order_key`]. For a caller without a string value for the claim, each of
    /// these rules is an evaluation error, so the first is the only one that can decide;
    /// unless the key has guards, which may be false first.
    first_rule: FastMap<u32, u64>,
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
        /// The claims the chain tests before the key; sound to skip only when the caller has
        /// each as a string.
        guards: Vec<ClaimId>,
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
                let mut key = ClaimKey {
                    claim,
                    by_value: FastMap::default(),
                    first_rule: FastMap::default(),
                    guards,
                    all,
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
        let string = |claim: ClaimId| match claims.get(usize::from(claim.0)) {
            Some(Some(ClaimValue::String(text))) => Some(text.as_str()),
            _ => None,
        };
        for (position, key) in kind_index.keys.iter().enumerate() {
            let guarded = !key.guards.is_empty();
            let found: &[u32] = match string(key.claim) {
                // A guard the caller lacks fails or is false in each workload: none can be
                // skipped.
                _ if key.guards.iter().any(|guard| string(*guard).is_none()) => &key.all,
                Some(text) => match key.by_value.get(text) {
                    Some(span) => self.workload_span(*span),
                    None => &[],
                },
                // Without the key, a guard may still be false first, so each must run.
                None if guarded => &key.all,
                // Every workload keyed on the claim fails for this caller, so none is one the
                // caller is; `rules` adds the first rule that names one.
                None => {
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
