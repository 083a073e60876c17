//! The typed IR: a policy set after name resolution and type checking.
//!
//! In: the checker builds it from the AST once every name resolves and every expression has a
//! type. Out: the bytecode emitter compiles it into a bundle. Every expression here is well
//! typed by construction; no name is looked up again. Spans are gone: nothing after this stage
//! reports source diagnostics.

use crate::schema::{ClaimId, ProviderKind};

/// A whole policy set, declarations in source order (files sorted by path, then by position).
#[derive(Debug, Clone, PartialEq)]
pub struct PolicySet {
    pub workloads: Vec<Workload>,
    pub targets: Vec<Target>,
    pub rules: Vec<Rule>,
}

/// Index into [`PolicySet::workloads`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WorkloadId(pub u32);

/// Index into [`PolicySet::targets`].
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct TargetId(pub u32);

/// `workload NAME { ALTERNATIVE+ }`: a caller matches when any alternative matches.
#[derive(Debug, Clone, PartialEq)]
pub struct Workload {
    pub name: String,
    pub alternatives: Vec<Alternative>,
}

/// `KIND { EXPR }`: the caller was attested by a trust provider of `kind` and its claims
/// satisfy `condition`. An empty body is `Expr::Const(Value::Bool(true))`.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub kind: ProviderKind,
    pub condition: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Protocol {
    Http,
    Https,
    Postgres,
}

impl Protocol {
    pub fn keyword(self) -> &'static str {
        match self {
            Protocol::Http => "http",
            Protocol::Https => "https",
            Protocol::Postgres => "postgres",
        }
    }

    pub fn default_port(self) -> u16 {
        match self {
            Protocol::Http => 80,
            Protocol::Https => 443,
            Protocol::Postgres => 5432,
        }
    }
}

/// `target NAME { PROTOCOL { host = "…" port = N … } }`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    pub host: String,
    /// The protocol's default port when the source gives none.
    pub port: u16,
    /// `postgres` only.
    pub database: Option<String>,
    /// `http` and `https` only: the path every request must start with.
    pub path_prefix: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Effect {
    Permit,
    Forbid,
}

/// Which callers a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum WorkloadRef {
    Named(WorkloadId),
    /// `workload any KIND`: every caller attested by a trust provider of that kind.
    AnyOfKind(ProviderKind),
    /// `workload any`, or no `workload` clause in a `forbid`.
    Any,
}

/// Which targets a rule covers.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetRef {
    Named(TargetId),
    /// `target any`, or no `target` clause in a `forbid`.
    Any,
}

/// A `permit` or `forbid` declaration.
#[derive(Debug, Clone, PartialEq)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub workload: WorkloadRef,
    pub target: TargetRef,
    /// `when EXPR`; `None` when the rule has no condition.
    pub when: Option<Expr>,
}

/// A constant. Sets hold scalars of one type, deduplicated, in source order.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    String(String),
    Int(i64),
    Bool(bool),
    Set(Vec<Value>),
}

/// Facts of the request itself, readable in `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum RequestField {
    /// `request.action`, a string, optional: the HTTP method, `connect`, …
    Action,
    /// `request.resource`, a string, optional: the HTTP path, the database, …
    Resource,
}

/// Facts of the resolved target, readable in `when`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum TargetField {
    /// `target.name`, a string.
    Name,
    /// `target.protocol`, a string (`"https"`).
    Protocol,
    /// `target.host`, a string.
    Host,
    /// `target.port`, an integer.
    Port,
}

/// A typed expression; every one evaluates to a bool, a string, an integer or a set.
#[derive(Debug, Clone, PartialEq)]
pub enum Expr {
    Const(Value),
    /// A claim of the caller. Inside a workload alternative, `kind` is the alternative's kind;
    /// in `when`, it is the `KIND` of `client.KIND.claim`. Reading a claim the caller does not
    /// have (another kind, or an absent optional claim) is an evaluation error, which denies.
    Claim {
        kind: ProviderKind,
        claim: ClaimId,
    },
    /// `has CLAIM` / `has client.KIND.CLAIM`: true when the caller is of `kind` and carries it.
    HasClaim {
        kind: ProviderKind,
        claim: ClaimId,
    },
    Request(RequestField),
    /// `has request.action` / `has request.resource`.
    HasRequest(RequestField),
    Target(TargetField),
    Not(Box<Expr>),
    /// Short-circuits left to right.
    And(Box<Expr>, Box<Expr>),
    /// Short-circuits left to right.
    Or(Box<Expr>, Box<Expr>),
    /// Both sides have the same scalar type.
    Eq(Box<Expr>, Box<Expr>),
    Ne(Box<Expr>, Box<Expr>),
    /// Scalar `in` a constant set of the same scalar type; or, when the left side is a
    /// set-typed claim, true when the two sets share an element.
    In(Box<Expr>, Vec<Value>),
    /// String matches a glob: `*` any run of characters, `?` one character, `\` escapes.
    Like(Box<Expr>, String),
}
