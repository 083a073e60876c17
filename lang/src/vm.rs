//! The decision VM: runs a loaded bundle against one request and returns the decision.
//!
//! In: a [`Program`] (a bundle whose code the loader has verified) and a [`Request`] (the
//! caller's kind and typed claims, the target it asks for, the request details). Out: a
//! [`Decision`] that names the deciding rule and the reason. No I/O, no logging, no clock.
//!
//! The order of a decision, which the reference semantics in `docs/gate.md` defines:
//!
//! 1. The target is resolved by name or by (protocol, host, port); an unknown target denies.
//! 2. An `http`/`https` target with a path prefix denies a resource outside the prefix.
//! 3. The index (`vm/index.rs`) narrows the rules before any bytecode runs: to those on the
//!    target or on `target any` whose workload the caller could be, found by the caller's kind
//!    and the claims workloads test for equality. Forbids are considered first, then permits,
//!    each in declaration order; a rule applies when its workload matches and its `when`
//!    holds. The first applying forbid denies; an evaluation error in a rule that is
//!    considered denies with the error; the first applying permit allows; when nothing
//!    applies the request is denied. Every rule the index leaves out would find its workload
//!    false, so the outcome is the one considering every rule would give, which the
//!    reference evaluator does.
//!
//! A workload matches when one of its alternatives of the caller's kind returns true, tried
//! in order like `||`: an error in an earlier alternative is an error of the workload. Each
//! workload and condition is evaluated at most once per decision, and blocks only jump
//! forward, so the index can bound the instructions of the worst decision statically
//! ([`Program::instruction_bound`], which `policyc build` prints). That bound is each
//! decision's budget; running past it is [`EvalError::BudgetExceeded`], a deny.
//!
//! A decision allocates nothing once its thread's [`Scratch`] has grown to the program's
//! size; only the reason for a target that does not exist is built as a new string.
//!
//! The bundle stays as loaded, for what the program reports; decisions run on a copy laid out
//! for the cache (`vm/code.rs`, and the index's records and tables), because at 100,000 rules
//! the time of a decision is the cache lines it reads that no recent decision read.

mod code;
mod explain;
mod index;
mod targets;

pub use explain::{Explanation, RuleStep};

use std::borrow::Cow;
use std::cell::RefCell;
use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;

use crate::bundle::{BlockId, Bundle, BundleError};
use crate::bytecode::{ConstSet, MAX_STACK, kind_code};
use crate::ir::{Annotations, Effect, Protocol, RequestField, TargetField};
use crate::schema::{ClaimId, ClaimType, ClaimValue, CustomClaims, ProviderKind};
use code::{Code, OP_WORDS, Op};
use index::{Candidates, Index, NO_WHEN, RuleRef, RuleWorkload};
use targets::{TargetSlot, TargetTable};

/// String sets up to this size are scanned; larger ones are looked up in a hash set.
const SCANNED_SET: usize = 16;

/// The longest piece of a request that a reason text quotes.
const MAX_QUOTED: usize = 200;

/// A loaded bundle, ready to decide. Immutable; share it across threads.
#[derive(Debug)]
pub struct Program {
    bundle: Bundle,
    hash_hex: String,
    targets: Vec<TargetInfo>,
    /// Target names to their positions.
    by_name: TargetTable,
    /// Lowercase host to the targets on it: (protocol, port, target position).
    by_host: HashMap<String, Vec<(Protocol, u16, usize)>>,
    /// The candidate workloads and rules of a request.
    index: Index,
    /// Every block, laid out for decisions.
    code: Code,
    /// String sets of more than [`SCANNED_SET`] items, hashed; by set position.
    hashed_sets: Vec<Option<HashSet<Box<str>>>>,
    /// The most instructions one decision may run: the index's static bound.
    budget: usize,
}

/// A declared target, as decisions report it.
pub use crate::ir::Target as TargetInfo;

/// A declared credential (name, kind and its settings, TTL), as an allow reports it.
pub use crate::ir::Credential as CredentialInfo;

/// How a request names its target: the same type the reference evaluator takes.
pub use crate::reference::TargetQuery;

/// One request to decide: the same type the reference evaluator takes. `claims` are indexed by
/// the claim ids of `kind`'s schema: the built-in claims, then, for `oidc`, the custom claims
/// in the bundle's order ([`Program::custom_claims`]). The API always sets `time` from the
/// system clock (the VM reads no clock); a request without one cannot read `request.time`.
pub use crate::reference::Request;

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision<'p> {
    pub allow: bool,
    /// The deciding rule.
    pub rule: Option<&'p str>,
    /// The deciding rule's named workload when the caller is that workload, else the first
    /// declared workload the caller matches, else none. A rule that fails while evaluating
    /// its workload reports the latter: the caller was not shown to be the rule's workload.
    pub workload: Option<&'p str>,
    /// The resolved target; none when the request names no declared target.
    pub target: Option<&'p TargetInfo>,
    /// The credential to issue: the deciding permit's, for an allow; never for a deny.
    pub credential: Option<&'p CredentialInfo>,
    /// The deciding rule's annotations (`@description`, `@severity`); none without a rule.
    pub annotations: Option<&'p Annotations>,
    pub reason: Reason<'p>,
    /// How the request named a target that does not exist, already quoted for the reason text.
    unknown_target: Option<String>,
    /// The program's custom claims, to name one in the reason for an evaluation error.
    custom_claims: Option<&'p CustomClaims>,
    /// The request named no resource; said in the reason for a target that restricts it.
    no_resource: bool,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reason<'p> {
    Permitted {
        rule: &'p str,
    },
    Forbidden {
        rule: &'p str,
    },
    /// Nothing permits this workload on this target.
    NoPermit,
    /// The request names no declared target.
    UnknownTarget,
    /// An `http`/`https` target with a path prefix, and a resource outside it.
    PathOutsidePrefix,
    /// A `postgres` target with a database, and a resource that names another one.
    DatabaseMismatch,
    EvaluationError {
        rule: &'p str,
        error: EvalError,
    },
}

impl Reason<'_> {
    /// A stable code for access events and API answers.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Permitted { .. } => "permitted",
            Reason::Forbidden { .. } => "forbidden",
            Reason::NoPermit => "no_permit",
            Reason::UnknownTarget => "unknown_target",
            Reason::PathOutsidePrefix => "path_outside_prefix",
            Reason::DatabaseMismatch => "database_mismatch",
            Reason::EvaluationError { .. } => "evaluation_error",
        }
    }
}

/// Why a rule could not be evaluated. Every one denies.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("claim `{claim}` is absent")]
    AbsentClaim {
        kind: ProviderKind,
        claim: &'static str,
    },
    #[error("the rule reads a claim of `{expected}`, but the caller was attested by `{actual}`")]
    WrongKind {
        expected: ProviderKind,
        actual: ProviderKind,
    },
    #[error("claim `{claim}` is not a {expected}")]
    ClaimType {
        kind: ProviderKind,
        claim: &'static str,
        expected: ClaimType,
    },
    /// A custom `oidc` claim is absent; [`Decision::reason_text`] names it.
    #[error("custom claim {} is absent", .claim.0)]
    AbsentCustomClaim { claim: ClaimId },
    /// A custom `oidc` claim has another type; [`Decision::reason_text`] names it.
    #[error("custom claim {} is not a {expected}", .claim.0)]
    CustomClaimType { claim: ClaimId, expected: ClaimType },
    #[error("`request.{field}` is absent")]
    AbsentRequestField { field: &'static str },
    /// `request.time` is beyond the years a time zone can read (-9999 to 9999).
    #[error("`request.time` ({unix_seconds} Unix seconds) is out of range")]
    TimeOutOfRange { unix_seconds: i64 },
    #[error("the rule reads the target, but the request names no declared target")]
    NoTarget,
    #[error("the decision ran past its instruction budget")]
    BudgetExceeded,
    #[error("the program is inconsistent at instruction {pc}")]
    InvalidProgram { pc: usize },
}

impl Program {
    /// Loads and verifies a bundle file's bytes.
    pub fn load(bytes: &[u8]) -> Result<Program, BundleError> {
        Program::from_bundle(Bundle::from_bytes(bytes)?)
    }

    pub fn from_bundle(bundle: Bundle) -> Result<Program, BundleError> {
        let targets: Vec<TargetInfo> = bundle.targets().to_vec();
        let mut by_host: HashMap<String, Vec<_>> = HashMap::new();
        for (position, target) in targets.iter().enumerate() {
            let on_host = by_host.entry(target.host.to_ascii_lowercase()).or_default();
            on_host.push((target.protocol, target.port, position));
        }
        let mut code = Code::build(&bundle);
        let index = Index::build(&bundle, &mut code);
        code.finish();
        let by_name = TargetTable::build(&targets, restricts_resource);
        let hashed_sets = bundle
            .sets()
            .iter()
            .map(|set| match set {
                ConstSet::Str(items) if items.len() > SCANNED_SET => {
                    Some(items.iter().map(|item| item.as_str().into()).collect())
                }
                _ => None,
            })
            .collect();
        Ok(Program {
            hash_hex: bundle.hash_hex(),
            budget: index.bound(),
            index,
            code,
            hashed_sets,
            bundle,
            targets,
            by_name,
            by_host,
        })
    }

    /// The bundle's content hash, lowercase hex.
    pub fn hash_hex(&self) -> &str {
        &self.hash_hex
    }

    pub fn bundle(&self) -> &Bundle {
        &self.bundle
    }

    /// The custom `oidc` claims the bundle was compiled with, which attestation must produce
    /// at the same ids.
    pub fn custom_claims(&self) -> &CustomClaims {
        self.bundle.custom_claims()
    }

    /// The declared target called `name`.
    pub fn target(&self, name: &str) -> Option<&TargetInfo> {
        let slot = self.by_name.get(name, &self.targets)?;
        self.targets.get(slot.position as usize)
    }

    /// The declared target at an endpoint; the host compares without regard to ASCII case.
    pub fn target_at(&self, protocol: &str, host: &str, port: u16) -> Option<&TargetInfo> {
        let position = self.endpoint_position(protocol, host, port)?;
        self.targets.get(position)
    }

    /// The position of the declared target at an endpoint.
    fn endpoint_position(&self, protocol: &str, host: &str, port: u16) -> Option<usize> {
        let protocol = Protocol::from_keyword(protocol)?;
        let host: Cow<'_, str> = if host.bytes().any(|byte| byte.is_ascii_uppercase()) {
            Cow::Owned(host.to_ascii_lowercase())
        } else {
            Cow::Borrowed(host)
        };
        let on_host = self.by_host.get(host.as_ref())?;
        let (_, _, position) = on_host
            .iter()
            .find(|(p, found_port, _)| *p == protocol && *found_port == port)?;
        Some(*position)
    }

    /// Decides `request`. Never panics; anything unexpected denies. Uses this thread's
    /// [`Scratch`], so that a warm thread decides without allocating.
    pub fn decide(&self, request: &Request<'_>) -> Decision<'_> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.decide_traced(request, &mut scratch, &mut NoTrace),
            Err(_) => self.decide_traced(request, &mut Scratch::new(), &mut NoTrace),
        })
    }

    /// Decides `request` with this thread's scratch space, telling `trace` what it evaluates.
    pub fn decide_with<T: Trace>(&self, request: &Request<'_>, trace: &mut T) -> Decision<'_> {
        SCRATCH.with(|cell| match cell.try_borrow_mut() {
            Ok(mut scratch) => self.decide_traced(request, &mut scratch, trace),
            Err(_) => self.decide_traced(request, &mut Scratch::new(), trace),
        })
    }

    /// Decides `request` with the caller's scratch space.
    pub fn decide_in(&self, request: &Request<'_>, scratch: &mut Scratch) -> Decision<'_> {
        self.decide_traced(request, scratch, &mut NoTrace)
    }

    /// Decides `request`, telling `trace` what it evaluates.
    pub fn decide_traced<T: Trace>(
        &self,
        request: &Request<'_>,
        scratch: &mut Scratch,
        trace: &mut T,
    ) -> Decision<'_> {
        let slot = match request.target {
            TargetQuery::Named(name) => self.by_name.get(name, &self.targets),
            TargetQuery::Endpoint {
                protocol,
                host,
                port,
            } => self
                .endpoint_position(protocol, host, port)
                .and_then(|position| {
                    let target = self.targets.get(position)?;
                    Some(TargetSlot {
                        position: u32::try_from(position).ok()?,
                        restricts_resource: restricts_resource(target),
                    })
                }),
        };
        let position = slot.map(|slot| slot.position as usize);
        let target = position.and_then(|position| self.targets.get(position));
        let Scratch { memos, candidates } = scratch;
        memos.start(
            self.bundle.workloads().len(),
            self.bundle.conditions().len(),
        );
        self.index
            .workloads(&self.code, request.kind, request.claims, candidates);
        // Only a target that restricts the resource is read here: most decisions need no more
        // of it than its position.
        let refused = match (slot, target) {
            (Some(slot), Some(target)) if slot.restricts_resource => {
                resource_refused(target, request.resource)
            }
            _ => None,
        };
        match position {
            Some(position) if refused.is_none() => {
                self.index
                    .rules(&self.code, position, request.kind, candidates);
            }
            _ => candidates.rules.clear(),
        }
        let mut run = Run {
            program: self,
            request,
            target,
            memos,
            candidates,
            budget: self.budget,
            trace,
        };
        let (Some(_), Some(target)) = (position, target) else {
            let workload = run.first_matching_workload();
            let mut decision = deny(Reason::UnknownTarget, None, workload, None);
            decision.unknown_target = Some(describe_query(&request.target));
            return decision;
        };
        if let Some(reason) = refused {
            let workload = run.first_matching_workload();
            let mut decision = deny(reason, None, workload, Some(target));
            decision.no_resource = request.resource.is_none();
            return decision;
        }
        run.rules()
    }

    /// The most instructions one decision of this program can execute, which is also the
    /// budget each decision runs under.
    pub fn instruction_bound(&self) -> usize {
        self.budget
    }
}

impl Decision<'_> {
    /// One lowercase sentence that says why.
    pub fn reason_text(&self) -> String {
        let target = self.target.map_or("", |target| target.name.as_str());
        match self.reason {
            Reason::Permitted { rule } => format!("permitted by rule `{rule}`"),
            Reason::Forbidden { rule } => format!("forbidden by rule `{rule}`"),
            Reason::NoPermit => match self.workload {
                Some(workload) => {
                    format!("no permit rule allows workload `{workload}` on target `{target}`")
                }
                None => format!("no permit rule allows this caller on target `{target}`"),
            },
            Reason::UnknownTarget => match &self.unknown_target {
                Some(described) => described.clone(),
                None => "the request names no declared target".to_owned(),
            },
            Reason::PathOutsidePrefix => {
                let prefix = self
                    .target
                    .and_then(|t| t.path_prefix.as_deref())
                    .unwrap_or("");
                if self.no_resource {
                    format!(
                        "the request names no resource, and target `{target}` only allows paths \
                         under `{prefix}`"
                    )
                } else {
                    format!(
                        "the resource is outside the path prefix `{prefix}` of target `{target}`"
                    )
                }
            }
            Reason::DatabaseMismatch => {
                let database = self
                    .target
                    .and_then(|t| t.database.as_deref())
                    .unwrap_or("");
                if self.no_resource {
                    format!(
                        "the request names no resource, and target `{target}` only allows \
                         database `{database}`"
                    )
                } else {
                    format!(
                        "the resource names a database other than `{database}` of target \
                         `{target}`"
                    )
                }
            }
            Reason::EvaluationError { rule, error } => {
                let detail = error_text(self.custom_claims, error);
                format!("evaluation error in rule `{rule}`: {detail}")
            }
        }
    }
}

/// An evaluation error in words, with a custom claim called by its name.
fn error_text(custom_claims: Option<&CustomClaims>, error: EvalError) -> String {
    let custom_name =
        |claim| custom_claims.and_then(|claims| claims.claim_name(ProviderKind::Oidc, claim));
    let named = match error {
        EvalError::AbsentCustomClaim { claim } => {
            custom_name(claim).map(|name| format!("claim `{name}` is absent"))
        }
        EvalError::CustomClaimType { claim, expected } => {
            custom_name(claim).map(|name| format!("claim `{name}` is not a {expected}"))
        }
        _ => None,
    };
    named.unwrap_or_else(|| error.to_string())
}

fn deny<'p>(
    reason: Reason<'p>,
    rule: Option<&'p str>,
    workload: Option<&'p str>,
    target: Option<&'p TargetInfo>,
) -> Decision<'p> {
    Decision {
        allow: false,
        rule,
        workload,
        target,
        credential: None,
        annotations: None,
        reason,
        unknown_target: None,
        custom_claims: None,
        no_resource: false,
    }
}

/// The reason text for a target that does not exist, with the request's text made safe to
/// print: control characters escaped and the length bounded.
fn describe_query(query: &TargetQuery<'_>) -> String {
    match *query {
        TargetQuery::Named(name) => format!("unknown target `{}`", quote(name)),
        TargetQuery::Endpoint {
            protocol,
            host,
            port,
        } => {
            format!(
                "no target is declared for {}://{}:{port}",
                quote(protocol),
                quote(host)
            )
        }
    }
}

fn quote(text: &str) -> String {
    let mut out = String::new();
    for ch in text.chars().take(MAX_QUOTED) {
        if ch == '`' {
            out.push_str("\\`");
        } else if ch.is_control() {
            let _ = write!(out, "{}", ch.escape_default());
        } else {
            out.push(ch);
        }
    }
    if text.chars().nth(MAX_QUOTED).is_some() {
        out.push('…');
    }
    out
}

/// Whether [`resource_refused`] can refuse a resource for this target: an `http`/`https`
/// target with a path prefix, or a `postgres` target with a database.
fn restricts_resource(target: &TargetInfo) -> bool {
    match target.protocol {
        Protocol::Http | Protocol::Https => target.path_prefix.is_some(),
        Protocol::Postgres => target.database.is_some(),
    }
}

/// Why the target refuses the request's resource before any rule, if it does.
fn resource_refused(target: &TargetInfo, resource: Option<&str>) -> Option<Reason<'static>> {
    match target.protocol {
        Protocol::Http | Protocol::Https => {
            (!within_prefix(target, resource)).then_some(Reason::PathOutsidePrefix)
        }
        Protocol::Postgres => {
            (!within_database(target, resource)).then_some(Reason::DatabaseMismatch)
        }
    }
}

/// Whether the resource names a `postgres` target's database: the resource up to its first
/// `/` (the proxy sends `DATABASE/USER`), or all of it, is the database, compared exactly as
/// PostgreSQL compares names in a startup message. A target without a database takes any.
fn within_database(target: &TargetInfo, resource: Option<&str>) -> bool {
    let Some(database) = target.database.as_deref() else {
        return true;
    };
    resource.is_some_and(|resource| resource.split('/').next() == Some(database))
}

/// Whether the resource stays inside an `http`/`https` target's path prefix. The path (the
/// resource up to `?` or `#`) must start with the prefix and have no `.` or `..` segment and
/// no percent-encoded dot, slash or backslash, which a server could resolve outside it.
fn within_prefix(target: &TargetInfo, resource: Option<&str>) -> bool {
    if !matches!(target.protocol, Protocol::Http | Protocol::Https) {
        return true;
    }
    let Some(prefix) = target.path_prefix.as_deref() else {
        return true;
    };
    let Some(resource) = resource else {
        return false;
    };
    let path = resource.split(['?', '#']).next().unwrap_or_default();
    if !path.starts_with(prefix) {
        return false;
    }
    let encoded = path.as_bytes().windows(3).any(|escape| {
        escape[0] == b'%'
            && matches!(
                [escape[1], escape[2].to_ascii_lowercase()],
                [b'2', b'e' | b'f'] | [b'5', b'c']
            )
    });
    let dot_segment = path
        .split(['/', '\\'])
        .any(|segment| segment == "." || segment == "..");
    !encoded && !dot_segment
}

/// The cached result of one workload or condition within one decision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Memo {
    Unknown,
    Matched(bool),
    Failed(EvalError),
}

impl Memo {
    fn of(result: Result<bool, EvalError>) -> Memo {
        match result {
            Ok(value) => Memo::Matched(value),
            Err(error) => Memo::Failed(error),
        }
    }
}

/// Workload and condition results of the current decision. Each slot carries the number of
/// the decision that wrote it, so that a new decision starts empty without clearing anything.
/// A slot is eight bytes, so that the table of a large program stays in the cache: its result
/// is false, true, or an error kept in `errors`, which each decision starts empty.
///
/// The first [`RECENT`] workloads a decision evaluates are also kept in a short list, read
/// before the table: most decisions evaluate a handful, and the list is in the cache where a
/// random slot of a large program's table is not. Only a decision that evaluates more reads and
/// writes the table.
#[derive(Debug, Default)]
struct MemoStore {
    decision: u32,
    workloads: Vec<MemoSlot>,
    conditions: Vec<MemoSlot>,
    errors: Vec<EvalError>,
    /// The workloads of this decision so far, as (workload id, result), up to [`RECENT`].
    recent: [(u32, u32); RECENT],
    n_recent: usize,
}

/// The workloads a decision remembers without the table.
const RECENT: usize = 16;

/// The decision that wrote the slot, and its result: 0 false, 1 true, `2 + n` the error at
/// `n` in [`MemoStore::errors`].
type MemoSlot = (u32, u32);

const MEMO_FALSE: u32 = 0;
const MEMO_TRUE: u32 = 1;
const MEMO_ERRORS: u32 = 2;

impl MemoStore {
    /// Starts a decision of a program with these many workloads and conditions; allocates
    /// only the first time a program this large is seen.
    fn start(&mut self, n_workloads: usize, n_conditions: usize) {
        self.decision = self.decision.wrapping_add(1);
        if self.decision == 0 {
            self.workloads.fill((0, MEMO_FALSE));
            self.conditions.fill((0, MEMO_FALSE));
            self.decision = 1;
        }
        if self.workloads.len() < n_workloads {
            self.workloads.resize(n_workloads, (0, MEMO_FALSE));
        }
        if self.conditions.len() < n_conditions {
            self.conditions.resize(n_conditions, (0, MEMO_FALSE));
        }
        self.n_recent = 0;
        // Each workload and condition fails at most once per decision.
        self.errors.clear();
        self.errors.reserve(n_workloads + n_conditions);
    }

    fn read(&self, slot: Option<&MemoSlot>) -> Memo {
        match slot {
            Some((decision, state)) if *decision == self.decision => match *state {
                MEMO_FALSE => Memo::Matched(false),
                MEMO_TRUE => Memo::Matched(true),
                error => self
                    .errors
                    .get((error - MEMO_ERRORS) as usize)
                    .map_or(Memo::Unknown, |error| Memo::Failed(*error)),
            },
            _ => Memo::Unknown,
        }
    }

    fn state(&mut self, memo: Memo) -> u32 {
        match memo {
            Memo::Matched(false) | Memo::Unknown => MEMO_FALSE,
            Memo::Matched(true) => MEMO_TRUE,
            Memo::Failed(error) => {
                self.errors.push(error);
                MEMO_ERRORS + self.errors.len() as u32 - 1
            }
        }
    }

    fn workload(&self, id: usize) -> Memo {
        let recent = self.recent.get(..self.n_recent).unwrap_or_default();
        if let Some((_, state)) = recent
            .iter()
            .find(|(recent_id, _)| *recent_id as usize == id)
        {
            return self.read(Some(&(self.decision, *state)));
        }
        if self.n_recent < RECENT {
            // Every workload of this decision so far is in the list.
            return Memo::Unknown;
        }
        self.read(self.workloads.get(id))
    }

    fn condition(&self, id: usize) -> Memo {
        self.read(self.conditions.get(id))
    }

    fn set_workload(&mut self, id: usize, memo: Memo) {
        let Ok(recent_id) = u32::try_from(id) else {
            return;
        };
        if id >= self.workloads.len() {
            return;
        }
        let state = self.state(memo);
        if let Some(free) = self.recent.get_mut(self.n_recent) {
            *free = (recent_id, state);
            self.n_recent += 1;
        } else if let Some(slot) = self.workloads.get_mut(id) {
            *slot = (self.decision, state);
        }
    }

    fn set_condition(&mut self, id: usize, memo: Memo) {
        if id < self.conditions.len() {
            let slot = (self.decision, self.state(memo));
            if let Some(old) = self.conditions.get_mut(id) {
                *old = slot;
            }
        }
    }
}

/// Working memory of decisions: the index's candidate lists and the memo tables. A thread
/// that keeps one decides without allocating once the tables have grown to the program's size.
/// [`Program::decide`] keeps one per thread; [`Program::decide_in`] takes one from the caller.
#[derive(Debug, Default)]
pub struct Scratch {
    memos: MemoStore,
    candidates: Candidates,
}

impl Scratch {
    pub fn new() -> Scratch {
        Scratch::default()
    }
}

thread_local! {
    static SCRATCH: RefCell<Scratch> = RefCell::new(Scratch::new());
}

/// A value on the stack; strings borrow from the program or the request.
#[derive(Debug, Clone, Copy)]
enum Val<'v> {
    Bool(bool),
    Int(i64),
    Str(&'v str),
    Set(&'v [String]),
    Ip(std::net::IpAddr),
}

/// The value stack of one block: a fixed array, as deep as the verifier allows.
struct Stack<'v> {
    values: [Val<'v>; MAX_STACK],
    len: usize,
}

impl<'v> Stack<'v> {
    fn new() -> Stack<'v> {
        Stack {
            values: [Val::Bool(false); MAX_STACK],
            len: 0,
        }
    }

    fn push(&mut self, value: Val<'v>, pc: usize) -> Result<(), EvalError> {
        let slot = self
            .values
            .get_mut(self.len)
            .ok_or(EvalError::InvalidProgram { pc })?;
        *slot = value;
        self.len += 1;
        Ok(())
    }

    fn pop(&mut self, pc: usize) -> Result<Val<'v>, EvalError> {
        let top = self
            .len
            .checked_sub(1)
            .ok_or(EvalError::InvalidProgram { pc })?;
        let value = self
            .values
            .get(top)
            .copied()
            .ok_or(EvalError::InvalidProgram { pc })?;
        self.len = top;
        Ok(value)
    }

    fn pop_bool(&mut self, pc: usize) -> Result<bool, EvalError> {
        match self.pop(pc)? {
            Val::Bool(value) => Ok(value),
            _ => Err(EvalError::InvalidProgram { pc }),
        }
    }

    fn peek_bool(&self, pc: usize) -> Result<bool, EvalError> {
        let top = self.len.checked_sub(1).and_then(|top| self.values.get(top));
        match top {
            Some(Val::Bool(value)) => Ok(*value),
            _ => Err(EvalError::InvalidProgram { pc }),
        }
    }
}

/// What a decision reports as it goes, for `explain`. The VM's own decisions use [`NoTrace`],
/// whose empty methods compile away.
pub trait Trace {
    /// A workload was evaluated (once per decision; later reads use the memo).
    fn workload(&mut self, _workload: u32, _result: Result<bool, EvalError>) {}
    /// A named condition was evaluated.
    fn condition(&mut self, _condition: u32, _result: Result<bool, EvalError>) {}
    /// A candidate rule was considered: whether its workload matched, and its `when` if it
    /// ran.
    fn rule(
        &mut self,
        _rule: u32,
        _workload: Result<bool, EvalError>,
        _when: Option<Result<bool, EvalError>>,
    ) {
    }
}

/// The trace of a decision nobody asked to explain.
#[derive(Debug, Clone, Copy, Default)]
pub struct NoTrace;

impl Trace for NoTrace {}

/// The state of one decision.
struct Run<'p, 'r, 's, T: Trace> {
    program: &'p Program,
    request: &'r Request<'r>,
    target: Option<&'p TargetInfo>,
    memos: &'s mut MemoStore,
    candidates: &'s Candidates,
    budget: usize,
    trace: &'s mut T,
}

impl<'p, 'r, T: Trace> Run<'p, 'r, '_, T> {
    /// Steps 3 and 4 of a decision, for a resolved target: the candidate rules, forbids first.
    fn rules(&mut self) -> Decision<'p> {
        let program = self.program;
        let target = self.target;
        let rules = program.bundle.rules();
        let candidates = self.candidates;
        for candidate in &candidates.rules {
            let outcome = self.applies(candidate);
            if outcome == Ok(false) {
                continue;
            }
            // Only the deciding rule's details are read: from its workload's record, which
            // the decision has just read, unless it names no workload.
            let report = index::report(&program.code, candidate);
            let Some(rule) = rules.get(candidate.position() as usize) else {
                continue;
            };
            let name = match report {
                Some(report) => report.name,
                None => rule.name.as_str(),
            };
            let reason = match (outcome, candidate.effect()) {
                (Ok(false), _) => continue,
                (Ok(true), Effect::Forbid) => Reason::Forbidden { rule: name },
                (Ok(true), Effect::Permit) => Reason::Permitted { rule: name },
                (Err(error), _) => Reason::EvaluationError { rule: name, error },
            };
            // The rule's workload when the caller is it; a rule that failed while telling
            // whether the caller is its workload does not make the caller that workload.
            let workload = match (report, candidate.workload) {
                (Some(report), _) if outcome.is_ok() => Some(report.workload),
                (Some(report), RuleWorkload::Record(record))
                    if self.workload(record) == Ok(true) =>
                {
                    Some(report.workload)
                }
                _ => self.first_matching_workload(),
            };
            let allow = matches!(reason, Reason::Permitted { .. });
            let credential = match report {
                Some(report) => report.credential,
                None => rule.credential,
            };
            let credential = credential
                .filter(|_| allow)
                .and_then(|id| program.bundle.credential(id));
            return Decision {
                allow,
                rule: Some(name),
                workload,
                target,
                credential,
                annotations: Some(&rule.annotations),
                reason,
                unknown_target: None,
                custom_claims: Some(program.custom_claims()),
                no_resource: false,
            };
        }
        let workload = self.first_matching_workload();
        deny(Reason::NoPermit, None, workload, target)
    }

    fn applies(&mut self, rule: &RuleRef) -> Result<bool, EvalError> {
        let matched = match rule.workload {
            RuleWorkload::Any => Ok(true),
            RuleWorkload::AnyOfKind(kind) => Ok(kind == self.request.kind),
            RuleWorkload::Record(record) => self.workload(record),
        };
        let when = match (matched, rule.when) {
            (Ok(true), when) if when != NO_WHEN => Some(self.run_block(when)),
            _ => None,
        };
        self.trace.rule(rule.position(), matched, when);
        match when {
            Some(result) => result,
            None => matched,
        }
    }

    /// The first declared workload the caller is; a workload that fails to evaluate is not.
    /// Only candidates can be: every other workload is false for this caller.
    fn first_matching_workload(&mut self) -> Option<&'p str> {
        let program = self.program;
        let candidates = self.candidates;
        let record = candidates
            .workloads
            .iter()
            .find(|record| self.workload(**record) == Ok(true))?;
        index::workload_name(&program.code, *record)
    }

    /// Whether the caller is the workload of the index's record at `record`.
    fn workload(&mut self, record: u32) -> Result<bool, EvalError> {
        let id = index::record_id(&self.program.code, record)
            .ok_or(EvalError::InvalidProgram { pc: 0 })?;
        let result = match self.memos.workload(id as usize) {
            Memo::Matched(matched) => return Ok(matched),
            Memo::Failed(error) => return Err(error),
            Memo::Unknown => self.evaluate_workload(record),
        };
        self.memos.set_workload(id as usize, Memo::of(result));
        self.trace.workload(id, result);
        result
    }

    /// A condition's value, from the memo or by running its block. The loader has checked that
    /// conditions read each other without a cycle and at most `MAX_CONDITION_DEPTH` deep,
    /// which bounds this recursion.
    fn condition(&mut self, idx: u32, pc: usize) -> Result<bool, EvalError> {
        match self.memos.condition(idx as usize) {
            Memo::Matched(value) => return Ok(value),
            Memo::Failed(error) => return Err(error),
            Memo::Unknown => {}
        }
        let program = self.program;
        let Some(condition) = program.bundle.conditions().get(idx as usize) else {
            return Err(EvalError::InvalidProgram { pc });
        };
        let result = self.block(condition.block);
        self.memos.set_condition(idx as usize, Memo::of(result));
        self.trace.condition(idx, result);
        result
    }

    fn evaluate_workload(&mut self, record: u32) -> Result<bool, EvalError> {
        let program = self.program;
        let kind = u32::from(kind_code(self.request.kind));
        for [alternative_kind, start] in index::record_alternatives(&program.code, record) {
            if *alternative_kind == kind && self.run_block(*start)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    /// Runs one verified block to its boolean result.
    fn block(&mut self, block: BlockId) -> Result<bool, EvalError> {
        let start = self
            .program
            .code
            .start(block)
            .ok_or(EvalError::InvalidProgram { pc: 0 })?;
        self.run_block(start)
    }

    /// Runs the block that starts at `start` in the program's code.
    fn run_block(&mut self, start: u32) -> Result<bool, EvalError> {
        let program = self.program;
        let code = &program.code;
        let mut stack = Stack::new();
        let mut pc = start as usize;
        loop {
            self.budget = self
                .budget
                .checked_sub(1)
                .ok_or(EvalError::BudgetExceeded)?;
            // Errors name the position within the block, as the bundle numbers it.
            let at = pc.saturating_sub(start as usize) / OP_WORDS;
            let op = code.op(pc).ok_or(EvalError::InvalidProgram { pc: at })?;
            pc += OP_WORDS;
            let value = match op {
                Op::Return => return stack.pop_bool(at),
                Op::JumpIfFalseOrPop(to) | Op::JumpIfTrueOrPop(to) => {
                    let keep_on = matches!(op, Op::JumpIfTrueOrPop(_));
                    if stack.peek_bool(at)? == keep_on {
                        pc = to as usize;
                    } else {
                        stack.pop(at)?;
                    }
                    continue;
                }
                Op::Not => Val::Bool(!stack.pop_bool(at)?),
                Op::Eq | Op::Ne => {
                    let right = stack.pop(at)?;
                    let left = stack.pop(at)?;
                    let equal = equal(left, right).ok_or(EvalError::InvalidProgram { pc: at })?;
                    Val::Bool(equal == matches!(op, Op::Eq))
                }
                Op::InSet(set_idx) => {
                    let set = program.bundle.sets().get(set_idx as usize);
                    let value = stack.pop(at)?;
                    let hashed = program.hashed_sets.get(set_idx as usize);
                    let found = match (hashed, value) {
                        (Some(Some(hashed)), Val::Str(text)) => Some(hashed.contains(text)),
                        _ => set.and_then(|set| contains(set, value)),
                    };
                    Val::Bool(found.ok_or(EvalError::InvalidProgram { pc: at })?)
                }
                Op::Like(glob) => {
                    let glob = program.bundle.globs().get(glob as usize);
                    let matched = match (glob, stack.pop(at)?) {
                        (Some(glob), Val::Str(text)) => glob.is_match(text),
                        _ => return Err(EvalError::InvalidProgram { pc: at }),
                    };
                    Val::Bool(matched)
                }
                Op::Matches(regex) => {
                    let regex = program.bundle.regexes().get(regex as usize);
                    let matched = match (regex, stack.pop(at)?) {
                        (Some(compiled), Val::Str(text)) => compiled.regex.is_match(text),
                        _ => return Err(EvalError::InvalidProgram { pc: at }),
                    };
                    Val::Bool(matched)
                }
                Op::Order(order) => {
                    let right = stack.pop(at)?;
                    let left = stack.pop(at)?;
                    match (left, right) {
                        (Val::Int(left), Val::Int(right)) => Val::Bool(order.holds(left, right)),
                        _ => return Err(EvalError::InvalidProgram { pc: at }),
                    }
                }
                Op::InNetworks(set) => {
                    let set = program.bundle.network_sets().get(set as usize);
                    let found = match (set, stack.pop(at)?) {
                        (Some(set), Val::Ip(addr)) => set.iter().any(|net| net.contains(addr)),
                        _ => return Err(EvalError::InvalidProgram { pc: at }),
                    };
                    Val::Bool(found)
                }
                Op::InRange(range) => match (code.ranges.get(range as usize), stack.pop(at)?) {
                    (Some((low, high)), Val::Int(value)) => {
                        Val::Bool((*low..=*high).contains(&value))
                    }
                    _ => return Err(EvalError::InvalidProgram { pc: at }),
                },
                Op::Within(idx) => {
                    let bundle = &program.bundle;
                    let entry = bundle.windows().get(idx as usize);
                    let zone = entry.and_then(|entry| bundle.zones().get(entry.zone as usize));
                    let (Some(entry), Some(zone), Val::Int(time)) = (entry, zone, stack.pop(at)?)
                    else {
                        return Err(EvalError::InvalidProgram { pc: at });
                    };
                    let inside = entry.window.contains(&zone.zone, time);
                    Val::Bool(inside.map_err(|_| EvalError::TimeOutOfRange { unix_seconds: time })?)
                }
                Op::Condition(idx) => Val::Bool(self.condition(idx, at)?),
                other => self.push_value(other, at)?,
            };
            stack.push(value, at)?;
        }
    }

    /// The value an instruction that reads something pushes.
    fn push_value<'v>(&self, op: Op, pc: usize) -> Result<Val<'v>, EvalError>
    where
        'p: 'v,
        'r: 'v,
    {
        let request = self.request;
        let program = self.program;
        Ok(match op {
            Op::PushBool(value) => Val::Bool(value),
            Op::PushInt(idx) => match program.code.ints.get(idx as usize) {
                Some(value) => Val::Int(*value),
                None => return Err(EvalError::InvalidProgram { pc }),
            },
            Op::PushStr { len, start } => match program.code.text(start, len) {
                Some(text) => Val::Str(text),
                None => return Err(EvalError::InvalidProgram { pc }),
            },
            Op::PushLongStr(idx) => match program.bundle.strings().get(idx as usize) {
                Some(text) => Val::Str(text),
                None => return Err(EvalError::InvalidProgram { pc }),
            },
            Op::PushClaim(kind, claim) => {
                claim_value(request, self.program.custom_claims(), kind, claim)?
            }
            Op::HasClaim(kind, claim) => Val::Bool(
                request.kind == kind
                    && request
                        .claims
                        .get(usize::from(claim.0))
                        .is_some_and(Option::is_some),
            ),
            Op::PushRequest(field) => match request_field(request, field) {
                Some(value) => value,
                None => {
                    let field = field.keyword();
                    return Err(EvalError::AbsentRequestField { field });
                }
            },
            Op::HasRequest(field) => Val::Bool(request_field(request, field).is_some()),
            Op::PushTarget(field) => {
                let target = self.target.ok_or(EvalError::NoTarget)?;
                match field {
                    TargetField::Name => Val::Str(&target.name),
                    TargetField::Protocol => Val::Str(target.protocol.keyword()),
                    TargetField::Host => Val::Str(&target.host),
                    TargetField::Port => Val::Int(i64::from(target.port)),
                }
            }
            _ => return Err(EvalError::InvalidProgram { pc }),
        })
    }
}

fn request_field<'r>(request: &Request<'r>, field: RequestField) -> Option<Val<'r>> {
    match field {
        RequestField::Action => request.action.map(Val::Str),
        RequestField::Resource => request.resource.map(Val::Str),
        RequestField::SourceIp => request.source_ip.map(Val::Ip),
        RequestField::Time => request.time.map(Val::Int),
    }
}

/// Reads a claim, checking the caller's kind, presence, and the schema type; a claim id
/// beyond the built-in ones of `oidc` is one of the bundle's `custom_claims`.
fn claim_value<'r>(
    request: &'r Request<'_>,
    custom_claims: &CustomClaims,
    kind: ProviderKind,
    claim: ClaimId,
) -> Result<Val<'r>, EvalError> {
    if request.kind != kind {
        return Err(EvalError::WrongKind {
            expected: kind,
            actual: request.kind,
        });
    }
    let builtin = kind.claims().get(usize::from(claim.0));
    let Some(ty) = custom_claims.claim_type(kind, claim) else {
        return Err(EvalError::InvalidProgram { pc: 0 });
    };
    let value = request
        .claims
        .get(usize::from(claim.0))
        .and_then(Option::as_ref);
    let Some(value) = value else {
        return Err(match builtin {
            Some(def) => EvalError::AbsentClaim {
                kind,
                claim: def.name,
            },
            None => EvalError::AbsentCustomClaim { claim },
        });
    };
    match (ty, value) {
        (ClaimType::String, ClaimValue::String(text)) => Ok(Val::Str(text)),
        (ClaimType::Int, ClaimValue::Int(number)) => Ok(Val::Int(*number)),
        (ClaimType::Bool, ClaimValue::Bool(flag)) => Ok(Val::Bool(*flag)),
        (ClaimType::StringSet, ClaimValue::StringSet(items)) => Ok(Val::Set(items)),
        (expected, _) => Err(match builtin {
            Some(def) => EvalError::ClaimType {
                kind,
                claim: def.name,
                expected,
            },
            None => EvalError::CustomClaimType { claim, expected },
        }),
    }
}

/// Equality of two scalars of the same type; none for values the verifier keeps apart.
fn equal(left: Val<'_>, right: Val<'_>) -> Option<bool> {
    match (left, right) {
        (Val::Bool(a), Val::Bool(b)) => Some(a == b),
        (Val::Int(a), Val::Int(b)) => Some(a == b),
        (Val::Str(a), Val::Str(b)) => Some(a == b),
        _ => None,
    }
}

/// Membership in a constant set; for a claim's set, whether the two sets meet.
fn contains(set: &ConstSet, value: Val<'_>) -> Option<bool> {
    match (set, value) {
        (ConstSet::Str(items), Val::Str(text)) => Some(items.iter().any(|item| item == text)),
        (ConstSet::Str(items), Val::Set(values)) => {
            Some(values.iter().any(|value| items.contains(value)))
        }
        (ConstSet::Int(items), Val::Int(number)) => Some(items.contains(&number)),
        (ConstSet::Bool(items), Val::Bool(flag)) => Some(items.contains(&flag)),
        (ConstSet::Str(items), _) if items.is_empty() => Some(false),
        (ConstSet::Int(items), _) if items.is_empty() => Some(false),
        (ConstSet::Bool(items), _) if items.is_empty() => Some(false),
        _ => None,
    }
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;
    use crate::ir::{
        self, Alternative, Expr, PolicySet, Rule, Target, TargetRef, Value, Workload, WorkloadId,
        WorkloadRef,
    };

    fn github_claim(name: &str) -> ClaimId {
        ProviderKind::Github.claim(name).unwrap().0
    }

    fn program() -> Program {
        let repository = Expr::Claim {
            kind: ProviderKind::Github,
            claim: github_claim("repository"),
        };
        let set = PolicySet {
            workloads: vec![Workload {
                name: "ci".to_owned(),
                alternatives: vec![Alternative {
                    kind: ProviderKind::Github,
                    condition: Expr::Eq(
                        Box::new(repository),
                        Box::new(Expr::Const(Value::String("acme/x".to_owned()))),
                    ),
                }],
            }],
            targets: vec![Target {
                name: "api".to_owned(),
                protocol: Protocol::Https,
                host: "api.internal".to_owned(),
                port: 443,
                database: None,
                path_prefix: None,
            }],
            rules: vec![Rule {
                name: "ci_calls_api".to_owned(),
                effect: Effect::Permit,
                workload: WorkloadRef::Named(WorkloadId(0)),
                target: TargetRef::Named(ir::TargetId(0)),
                when: None,
                credential: None,
                annotations: ir::Annotations::default(),
            }],
            credentials: Vec::new(),
            conditions: Vec::new(),
            custom_claims: Default::default(),
        };
        Program::from_bundle(Bundle::from_policy_set(&set).unwrap()).unwrap()
    }

    fn claims() -> Vec<Option<ClaimValue>> {
        let mut claims = vec![None; ProviderKind::Github.claims().len()];
        claims[github_claim("repository").0 as usize] =
            Some(ClaimValue::String("acme/x".to_owned()));
        claims
    }

    fn request(claims: &[Option<ClaimValue>]) -> Request<'_> {
        Request {
            kind: ProviderKind::Github,
            claims,
            target: TargetQuery::Named("api"),
            action: None,
            resource: None,
            source_ip: None,
            time: Some(0),
        }
    }

    #[test]
    fn budget_bounds_a_decision() {
        let claims = claims();
        let mut program = program();
        assert_eq!(program.budget, 4);
        assert!(program.decide(&request(&claims)).allow);
        program.budget = 2;
        let decision = program.decide(&request(&claims));
        assert!(!decision.allow);
        assert_eq!(
            decision.reason,
            Reason::EvaluationError {
                rule: "ci_calls_api",
                error: EvalError::BudgetExceeded
            }
        );
    }

    #[test]
    fn prefix_check_refuses_escapes() {
        let mut target = program().targets[0].clone();
        target.path_prefix = Some("/v1/".to_owned());
        for (resource, inside) in [
            (Some("/v1/invoices"), true),
            (Some("/v1/"), true),
            (Some("/v1/a?next=/admin"), true),
            (Some("/v2/invoices"), false),
            (Some("/v1"), false),
            (Some("/v1/../admin"), false),
            (Some("/v1/./x"), false),
            (Some("/v1/%2E%2E/admin"), false),
            (Some("/v1/a%2fb"), false),
            (None, false),
        ] {
            assert_eq!(within_prefix(&target, resource), inside, "{resource:?}");
        }
    }

    #[test]
    fn quoting_escapes_control_characters() {
        assert_eq!(quote("a\nb`c"), "a\\nb\\`c");
        assert_eq!(quote(&"x".repeat(300)).chars().count(), MAX_QUOTED + 1);
    }

    #[test]
    fn program_is_send_and_sync() {
        fn assert_send_sync<T: Send + Sync>() {}
        assert_send_sync::<Program>();
    }
}
