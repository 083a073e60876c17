//! The reference evaluator: decides a request by walking the typed IR directly.
//!
//! In: an [`ir::PolicySet`] and a [`Request`]. Out: a [`Decision`]. This is the executable
//! form of the semantics in `docs/gate.md`, written for clarity rather than speed: the VM
//! ([`crate::vm`]) must reach the same decision, deciding rule and credential for every
//! request (`lang/tests/reference_agrees.rs` compares them on generated policy sets), and
//! `policyc test` runs a policy set's `test` declarations with it.
//!
//! A decision, step by step:
//!
//! 1. The target is resolved by name, or by protocol (any ASCII case), host (any ASCII case)
//!    and port, the first declared target that fits; no target denies.
//! 2. An `http`/`https` target with a path prefix denies a resource outside the prefix.
//! 3. The rules for the target (`target NAME` naming it, or `target any`) are considered,
//!    forbids first, then permits, each in declaration order. A rule applies when its workload
//!    matches and its `when` holds. The first applying forbid denies; an evaluation error in
//!    a considered rule denies; the first applying permit allows with its credential.
//! 4. When no rule applies, the request is denied.
//!
//! A workload matches when one of its alternatives of the caller's kind holds, tried in order
//! like `||`. Reading a claim of another kind, an absent claim or an absent request field is an
//! evaluation error; `has` never fails. No I/O, no logging, no panics.

use std::net::IpAddr;

use crate::bundle::compile_regex;
use crate::glob::Glob;
use crate::ir::{
    self, CredentialId, Effect, Expr, PolicySet, Protocol, RequestField, TargetField, TargetRef,
    Value, WorkloadId, WorkloadRef,
};
use crate::schema::{ClaimId, ClaimType, ClaimValue, ProviderKind};
use crate::time::{self, TimeError, Window};

/// How a request names its target.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum TargetQuery<'a> {
    Named(&'a str),
    Endpoint {
        protocol: &'a str,
        host: &'a str,
        port: u16,
    },
}

/// One request: an attested caller, the target it asks for, and what it does there.
#[derive(Debug, Clone, Copy)]
pub struct Request<'a> {
    pub kind: ProviderKind,
    /// Indexed by the claim ids of `kind`; a missing entry is an absent claim.
    pub claims: &'a [Option<ClaimValue>],
    pub target: TargetQuery<'a>,
    pub action: Option<&'a str>,
    pub resource: Option<&'a str>,
    pub source_ip: Option<IpAddr>,
    /// `request.time`, Unix seconds: when the decision began. The VM always has it; a policy
    /// test may leave it out, and then reading it is an evaluation error.
    pub time: Option<i64>,
}

/// The outcome of one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allow: bool,
    /// The deciding rule, an index into [`PolicySet::rules`].
    pub rule: Option<usize>,
    /// The resolved target, an index into [`PolicySet::targets`].
    pub target: Option<usize>,
    /// The deciding permit's credential; never set on a deny.
    pub credential: Option<CredentialId>,
    pub reason: Reason,
}

/// Why a decision came out as it did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reason {
    Permitted,
    Forbidden,
    /// No rule applies.
    NoPermit,
    /// The request names no declared target.
    UnknownTarget,
    /// An `http`/`https` target with a path prefix, and a resource outside it.
    PathOutsidePrefix,
    /// A `postgres` target with a database, and a resource that names another one.
    DatabaseMismatch,
    /// The deciding rule could not be evaluated.
    EvaluationError(EvalError),
}

impl Reason {
    /// The stable code of the reason, as the VM and access events spell it.
    pub fn code(&self) -> &'static str {
        match self {
            Reason::Permitted => "permitted",
            Reason::Forbidden => "forbidden",
            Reason::NoPermit => "no_permit",
            Reason::UnknownTarget => "unknown_target",
            Reason::PathOutsidePrefix => "path_outside_prefix",
            Reason::DatabaseMismatch => "database_mismatch",
            Reason::EvaluationError(_) => "evaluation_error",
        }
    }
}

/// Why a rule could not be evaluated. Every one denies.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EvalError {
    #[error("claim `{claim}` is absent")]
    AbsentClaim { claim: String },
    #[error("the rule reads a claim of `{expected}`, but the caller was attested by `{actual}`")]
    WrongKind {
        expected: ProviderKind,
        actual: ProviderKind,
    },
    #[error("claim `{claim}` is not a {expected}")]
    ClaimType { claim: String, expected: ClaimType },
    #[error("`request.{field}` is absent")]
    AbsentRequestField { field: &'static str },
    #[error("{0}")]
    Time(TimeError),
    /// An expression whose operands do not fit its operator, or a dangling id: the checker
    /// never builds one, but a hand-built policy set can hold it.
    #[error("the policy set is inconsistent: {what}")]
    Inconsistent { what: &'static str },
}

/// The first declared workload the caller is, which a decision reports when its deciding rule
/// names none; a workload whose evaluation fails is not one the caller is.
pub fn first_matching_workload(set: &PolicySet, request: &Request<'_>) -> Option<WorkloadId> {
    let mut eval = Eval {
        set,
        request,
        target: None,
        conditions: vec![None; set.conditions.len()],
    };
    (0u32..)
        .take(set.workloads.len())
        .map(WorkloadId)
        .find(|id| eval.workload(*id) == Ok(true))
}

/// Whether the caller of `request` is workload `id`; an error where its evaluation fails.
pub fn workload_matches(
    set: &PolicySet,
    request: &Request<'_>,
    id: WorkloadId,
) -> Result<bool, EvalError> {
    let mut eval = Eval {
        set,
        request,
        target: None,
        conditions: vec![None; set.conditions.len()],
    };
    eval.workload(id)
}

/// Decides `request` against `set`.
pub fn decide(set: &PolicySet, request: &Request<'_>) -> Decision {
    let Some(target_idx) = resolve_target(set, &request.target) else {
        return deny(Reason::UnknownTarget, None, None);
    };
    let Some(target) = set.targets.get(target_idx) else {
        return deny(Reason::UnknownTarget, None, None);
    };
    if !within_prefix(target, request.resource) {
        return deny(Reason::PathOutsidePrefix, None, Some(target_idx));
    }
    if !names_database(target, request.resource) {
        return deny(Reason::DatabaseMismatch, None, Some(target_idx));
    }
    let mut eval = Eval {
        set,
        request,
        target: Some(target),
        conditions: vec![None; set.conditions.len()],
    };
    for effect in [Effect::Forbid, Effect::Permit] {
        for (rule_idx, rule) in set.rules.iter().enumerate() {
            let for_target = match rule.target {
                TargetRef::Any => true,
                TargetRef::Named(id) => id.0 as usize == target_idx,
            };
            if rule.effect != effect || !for_target {
                continue;
            }
            let reason = match (eval.applies(rule), effect) {
                (Ok(false), _) => continue,
                (Ok(true), Effect::Forbid) => Reason::Forbidden,
                (Ok(true), Effect::Permit) => Reason::Permitted,
                (Err(error), _) => Reason::EvaluationError(error),
            };
            let allow = reason == Reason::Permitted;
            return Decision {
                allow,
                rule: Some(rule_idx),
                target: Some(target_idx),
                credential: rule.credential.filter(|_| allow),
                reason,
            };
        }
    }
    deny(Reason::NoPermit, None, Some(target_idx))
}

impl Decision {
    /// One lowercase sentence that says why, naming rules as the policy set does.
    pub fn reason_text(&self, set: &PolicySet) -> String {
        let rule = self
            .rule
            .and_then(|idx| set.rules.get(idx))
            .map_or("", |rule| rule.name.as_str());
        let declared = self.target.and_then(|idx| set.targets.get(idx));
        let target = declared.map_or("", |target| target.name.as_str());
        let prefix = declared
            .and_then(|target| target.path_prefix.as_deref())
            .unwrap_or("");
        match &self.reason {
            Reason::Permitted => format!("permitted by rule `{rule}`"),
            Reason::Forbidden => format!("forbidden by rule `{rule}`"),
            Reason::NoPermit => format!("no rule applies to this caller on target `{target}`"),
            Reason::UnknownTarget => "the request names no declared target".to_owned(),
            Reason::PathOutsidePrefix => {
                format!(
                    "the request names no resource under the path prefix `{prefix}` of target \
                     `{target}`"
                )
            }
            Reason::DatabaseMismatch => {
                let database = declared
                    .and_then(|target| target.database.as_deref())
                    .unwrap_or("");
                format!("the request does not name database `{database}` of target `{target}`")
            }
            Reason::EvaluationError(error) => format!("evaluation error in rule `{rule}`: {error}"),
        }
    }
}

fn deny(reason: Reason, rule: Option<usize>, target: Option<usize>) -> Decision {
    Decision {
        allow: false,
        rule,
        target,
        credential: None,
        reason,
    }
}

/// The position of the target the request names: by name, or the first declared target at
/// the endpoint.
fn resolve_target(set: &PolicySet, query: &TargetQuery<'_>) -> Option<usize> {
    match *query {
        TargetQuery::Named(name) => set.targets.iter().position(|target| target.name == name),
        TargetQuery::Endpoint {
            protocol,
            host,
            port,
        } => set.targets.iter().position(|target| {
            target.protocol.keyword().eq_ignore_ascii_case(protocol)
                && target.host.eq_ignore_ascii_case(host)
                && target.port == port
        }),
    }
}

/// Whether the resource stays inside an `http`/`https` target's path prefix: its path (up to
/// `?` or `#`) starts with the prefix and has no `.` or `..` segment and no percent-encoded
/// dot, slash or backslash. A target without a prefix, or of another protocol, takes any.
fn within_prefix(target: &ir::Target, resource: Option<&str>) -> bool {
    let Some(prefix) = target.path_prefix.as_deref() else {
        return true;
    };
    if !matches!(target.protocol, Protocol::Http | Protocol::Https) {
        return true;
    }
    let Some(resource) = resource else {
        return false;
    };
    let path = resource.split(['?', '#']).next().unwrap_or_default();
    let lower = path.to_ascii_lowercase();
    let encoded = ["%2e", "%2f", "%5c"]
        .iter()
        .any(|escape| lower.contains(escape));
    let dot_segment = path
        .split(['/', '\\'])
        .any(|segment| matches!(segment, "." | ".."));
    path.starts_with(prefix) && !encoded && !dot_segment
}

/// Whether the resource names a `postgres` target's database: `DATABASE/USER` or `DATABASE`,
/// the database exactly. A target without a database, or of another protocol, takes any.
fn names_database(target: &ir::Target, resource: Option<&str>) -> bool {
    let Some(database) = target.database.as_deref() else {
        return true;
    };
    if target.protocol != Protocol::Postgres {
        return true;
    }
    let named = match resource {
        Some(resource) => resource
            .split_once('/')
            .map_or(resource, |(first, _)| first),
        None => return false,
    };
    named == database
}

/// A value during evaluation; strings borrow from the policy set or the request.
#[derive(Debug, Clone, Copy)]
enum Val<'v> {
    Bool(bool),
    Int(i64),
    Str(&'v str),
    Set(&'v [String]),
    Ip(IpAddr),
}

/// The state of one decision: each condition is evaluated at most once.
struct Eval<'s, 'r> {
    set: &'s PolicySet,
    request: &'r Request<'r>,
    /// None only while finding the caller's workload, which cannot read the target.
    target: Option<&'s ir::Target>,
    conditions: Vec<Option<Result<bool, EvalError>>>,
}

impl<'s: 'r, 'r> Eval<'s, 'r> {
    fn applies(&mut self, rule: &'s ir::Rule) -> Result<bool, EvalError> {
        let matched = match rule.workload {
            WorkloadRef::Any => true,
            WorkloadRef::AnyOfKind(kind) => kind == self.request.kind,
            WorkloadRef::Named(id) => self.workload(id)?,
        };
        match &rule.when {
            Some(when) if matched => self.truth(when),
            _ => Ok(matched),
        }
    }

    fn workload(&mut self, id: WorkloadId) -> Result<bool, EvalError> {
        let set = self.set;
        let workload = set
            .workloads
            .get(id.0 as usize)
            .ok_or(EvalError::Inconsistent {
                what: "a rule names a workload that does not exist",
            })?;
        for alternative in &workload.alternatives {
            if alternative.kind == self.request.kind && self.truth(&alternative.condition)? {
                return Ok(true);
            }
        }
        Ok(false)
    }

    fn condition(&mut self, idx: usize) -> Result<bool, EvalError> {
        if let Some(Some(known)) = self.conditions.get(idx) {
            return known.clone();
        }
        let set = self.set;
        let condition = set.conditions.get(idx).ok_or(EvalError::Inconsistent {
            what: "an expression reads a condition that does not exist",
        })?;
        let result = self.truth(&condition.body);
        if let Some(slot) = self.conditions.get_mut(idx) {
            *slot = Some(result.clone());
        }
        result
    }

    fn truth(&mut self, expr: &'s Expr) -> Result<bool, EvalError> {
        match self.value(expr)? {
            Val::Bool(value) => Ok(value),
            _ => Err(inconsistent("a condition is not a bool")),
        }
    }

    fn value(&mut self, expr: &'s Expr) -> Result<Val<'r>, EvalError> {
        Ok(match expr {
            Expr::Const(value) => constant(value)?,
            Expr::Claim { kind, claim } => self.claim(*kind, *claim)?,
            Expr::HasClaim { kind, claim } => Val::Bool(
                self.request.kind == *kind
                    && self
                        .request
                        .claims
                        .get(usize::from(claim.0))
                        .is_some_and(Option::is_some),
            ),
            Expr::Request(field) => {
                self.request_field(*field)
                    .ok_or(EvalError::AbsentRequestField {
                        field: field.keyword(),
                    })?
            }
            Expr::HasRequest(field) => Val::Bool(self.request_field(*field).is_some()),
            Expr::Target(field) => self.target_field(*field)?,
            Expr::Condition(id) => Val::Bool(self.condition(id.0 as usize)?),
            Expr::Not(operand) => Val::Bool(!self.truth(operand)?),
            Expr::And(left, right) => Val::Bool(self.truth(left)? && self.truth(right)?),
            Expr::Or(left, right) => Val::Bool(self.truth(left)? || self.truth(right)?),
            Expr::Eq(left, right) => Val::Bool(self.equal(left, right)?),
            Expr::Ne(left, right) => Val::Bool(!self.equal(left, right)?),
            Expr::In(operand, values) => Val::Bool(member(self.value(operand)?, values)?),
            Expr::Like(operand, pattern) => {
                let text = string(self.value(operand)?)?;
                Val::Bool(Glob::compile(pattern).is_match(text))
            }
            Expr::Matches(operand, pattern) => {
                let text = string(self.value(operand)?)?;
                let regex = compile_regex(pattern)
                    .map_err(|_| inconsistent("a `matches` pattern does not compile"))?;
                Val::Bool(regex.is_match(text))
            }
            Expr::Order(op, left, right) => {
                let left = integer(self.value(left)?)?;
                let right = integer(self.value(right)?)?;
                Val::Bool(op.holds(left, right))
            }
            Expr::InRange(operand, low, high) => {
                Val::Bool((*low..=*high).contains(&integer(self.value(operand)?)?))
            }
            Expr::InNetworks(operand, networks) => match self.value(operand)? {
                Val::Ip(addr) => Val::Bool(networks.iter().any(|net| net.contains(addr))),
                _ => return Err(inconsistent("an address test on something else")),
            },
            Expr::Within(operand, window, zone) => {
                let instant = integer(self.value(operand)?)?;
                Val::Bool(within(*window, zone, instant)?)
            }
        })
    }

    fn equal(&mut self, left: &'s Expr, right: &'s Expr) -> Result<bool, EvalError> {
        match (self.value(left)?, self.value(right)?) {
            (Val::Bool(a), Val::Bool(b)) => Ok(a == b),
            (Val::Int(a), Val::Int(b)) => Ok(a == b),
            (Val::Str(a), Val::Str(b)) => Ok(a == b),
            _ => Err(inconsistent("an equality of values of different types")),
        }
    }

    /// A claim of the caller, which must be of `kind`, carry it, and carry it with the type
    /// of the claim schema.
    fn claim(&self, kind: ProviderKind, claim: ClaimId) -> Result<Val<'r>, EvalError> {
        let request = self.request;
        if request.kind != kind {
            return Err(EvalError::WrongKind {
                expected: kind,
                actual: request.kind,
            });
        }
        let claims = &self.set.custom_claims;
        let name = claims.claim_name(kind, claim).unwrap_or("?").to_owned();
        let expected = claims.claim_type(kind, claim).ok_or(inconsistent(
            "an expression reads a claim its kind does not have",
        ))?;
        let Some(value) = request
            .claims
            .get(usize::from(claim.0))
            .and_then(Option::as_ref)
        else {
            return Err(EvalError::AbsentClaim { claim: name });
        };
        match (expected, value) {
            (ClaimType::String, ClaimValue::String(text)) => Ok(Val::Str(text)),
            (ClaimType::Int, ClaimValue::Int(number)) => Ok(Val::Int(*number)),
            (ClaimType::Bool, ClaimValue::Bool(flag)) => Ok(Val::Bool(*flag)),
            (ClaimType::StringSet, ClaimValue::StringSet(items)) => Ok(Val::Set(items)),
            _ => Err(EvalError::ClaimType {
                claim: name,
                expected,
            }),
        }
    }

    fn request_field(&self, field: RequestField) -> Option<Val<'r>> {
        let request = self.request;
        match field {
            RequestField::Action => request.action.map(Val::Str),
            RequestField::Resource => request.resource.map(Val::Str),
            RequestField::SourceIp => request.source_ip.map(Val::Ip),
            RequestField::Time => request.time.map(Val::Int),
        }
    }

    fn target_field(&self, field: TargetField) -> Result<Val<'s>, EvalError> {
        let target = self.target.ok_or(EvalError::Inconsistent {
            what: "a workload reads the target",
        })?;
        Ok(match field {
            TargetField::Name => Val::Str(&target.name),
            TargetField::Protocol => Val::Str(target.protocol.keyword()),
            TargetField::Host => Val::Str(&target.host),
            TargetField::Port => Val::Int(i64::from(target.port)),
        })
    }
}

/// Whether `instant` (Unix seconds) falls in `window`, read as local time in the zone `zone`
/// of the compiler's time zone database.
fn within(window: Window, zone: &str, instant: i64) -> Result<bool, EvalError> {
    let (name, tzif) =
        time::lookup_zone(zone).ok_or(inconsistent("a window names an unknown time zone"))?;
    let zone = time::load_zone(name, tzif).map_err(EvalError::Time)?;
    window.contains(&zone, instant).map_err(EvalError::Time)
}

fn inconsistent(what: &'static str) -> EvalError {
    EvalError::Inconsistent { what }
}

fn constant(value: &Value) -> Result<Val<'_>, EvalError> {
    match value {
        Value::String(text) => Ok(Val::Str(text)),
        Value::Int(number) => Ok(Val::Int(*number)),
        Value::Bool(flag) => Ok(Val::Bool(*flag)),
        Value::Set(_) => Err(inconsistent("a set outside `in`")),
    }
}

fn string(value: Val<'_>) -> Result<&str, EvalError> {
    match value {
        Val::Str(text) => Ok(text),
        _ => Err(inconsistent("a string operator on something else")),
    }
}

fn integer(value: Val<'_>) -> Result<i64, EvalError> {
    match value {
        Val::Int(number) => Ok(number),
        _ => Err(inconsistent("an integer operator on something else")),
    }
}

/// Membership in a constant set; for a set claim, whether the two sets share an element. An
/// empty set holds nothing, whatever the operand's type.
fn member(value: Val<'_>, values: &[Value]) -> Result<bool, EvalError> {
    let found = match value {
        Val::Str(text) => values
            .iter()
            .any(|item| matches!(item, Value::String(s) if s == text)),
        Val::Int(number) => values.contains(&Value::Int(number)),
        Val::Bool(flag) => values.contains(&Value::Bool(flag)),
        Val::Set(items) => items.iter().any(|text| {
            values
                .iter()
                .any(|item| matches!(item, Value::String(s) if s == text))
        }),
        Val::Ip(_) => return Err(inconsistent("an address in a set of values")),
    };
    Ok(found)
}
