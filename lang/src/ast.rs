//! The Gate syntax tree, as the parser builds it.
//!
//! In: the parser ([`crate::parser`]). Out: the checker ([`crate::check`]), which resolves names
//! and types against the claim schemas and lowers it to [`crate::ir`]. Every node keeps its
//! [`Span`] so that the checker can point at the source; nothing is resolved here, so a name is
//! still just text.

/// A byte range in one file of the policy set; `file` indexes the compiled file list.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Default)]
pub struct Span {
    pub file: usize,
    pub start: usize,
    pub end: usize,
}

impl Span {
    pub fn new(file: usize, start: usize, end: usize) -> Span {
        Span { file, start, end }
    }

    /// The smallest span covering both, which must lie in the same file.
    pub fn to(self, other: Span) -> Span {
        Span {
            file: self.file,
            start: self.start.min(other.start),
            end: self.end.max(other.end),
        }
    }

    /// Whether the two spans share a byte; an empty span counts as the byte it sits before.
    pub fn overlaps(self, other: Span) -> bool {
        let end = |span: Span| span.end.max(span.start + 1);
        self.file == other.file && self.start < end(other) && other.start < end(self)
    }

    pub fn len(self) -> usize {
        self.end.saturating_sub(self.start)
    }

    pub fn is_empty(self) -> bool {
        self.len() == 0
    }
}

/// A name as written, with where it was written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Ident {
    pub name: String,
    pub span: Span,
}

/// One source file: its declarations in order.
#[derive(Debug, Clone, PartialEq, Default)]
pub struct File {
    pub decls: Vec<Decl>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum Decl {
    Workload(WorkloadDecl),
    Target(TargetDecl),
    Rule(RuleDecl),
    Credential(CredentialDecl),
    Condition(ConditionDecl),
    Test(TestDecl),
    /// A declaration the parser could not read; its name, when the parser got that far, is
    /// still declared so that references to it raise no follow-up errors.
    Broken(Option<Ident>),
}

/// `workload NAME { ALTERNATIVE* }`.
#[derive(Debug, Clone, PartialEq)]
pub struct WorkloadDecl {
    pub name: Ident,
    pub alternatives: Vec<Alternative>,
    pub span: Span,
}

/// `KIND { EXPR? }` inside a workload.
#[derive(Debug, Clone, PartialEq)]
pub struct Alternative {
    pub kind: Ident,
    pub condition: Option<Expr>,
    pub span: Span,
}

/// `target NAME { PROTOCOL { FIELD* } }`; the grammar accepts any number of protocol blocks
/// so that the checker can explain a wrong count.
#[derive(Debug, Clone, PartialEq)]
pub struct TargetDecl {
    pub name: Ident,
    pub endpoints: Vec<Endpoint>,
    pub span: Span,
}

/// `PROTOCOL { FIELD* }`.
#[derive(Debug, Clone, PartialEq)]
pub struct Endpoint {
    pub protocol: Ident,
    pub fields: Vec<Field>,
    pub span: Span,
}

/// `credential NAME { KIND { FIELD* } }`; like a target, any number of kind blocks parse so
/// that the checker can explain a wrong count.
#[derive(Debug, Clone, PartialEq)]
pub struct CredentialDecl {
    pub name: Ident,
    pub blocks: Vec<Endpoint>,
    pub span: Span,
}

/// `condition NAME { EXPR }`.
#[derive(Debug, Clone, PartialEq)]
pub struct ConditionDecl {
    pub name: Ident,
    pub body: Expr,
    pub span: Span,
}

/// `test NAME { request { … } expect … }`. Both parts are optional in the grammar so that the
/// checker can say which one is missing.
#[derive(Debug, Clone, PartialEq)]
pub struct TestDecl {
    pub name: Ident,
    pub request: Option<TestRequest>,
    pub expect: Option<TestExpect>,
    pub span: Span,
}

/// `request { ITEM* }` in a test; `keyword` is the word written before `{`, which the checker
/// requires to be `request`.
#[derive(Debug, Clone, PartialEq)]
pub struct TestRequest {
    pub keyword: Ident,
    pub items: Vec<TestRequestItem>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum TestRequestItem {
    /// `KIND { CLAIM = LITERAL … }`: the caller's trust provider kind and claims.
    Claims(Endpoint),
    /// `target NAME`; `span` covers the keyword and the name.
    Target { name: Ident, span: Span },
    /// `endpoint PROTOCOL { host = "…" port = … }`: the target as a proxy asks for it, by the
    /// endpoint it connects to; `word` is `endpoint` when well written.
    Endpoint {
        word: Ident,
        endpoint: Endpoint,
        span: Span,
    },
    /// `action = "POST"`, `resource = "/v1/x"`, `source_ip = "10.1.2.3"`,
    /// `time = 2026-12-04T10:00:00Z`.
    Field(Field),
}

/// `expect DECISION (WORD NAME)*`: `expect allow by RULE with CREDENTIAL`. The words are plain
/// names in the grammar; the checker reads them.
#[derive(Debug, Clone, PartialEq)]
pub struct TestExpect {
    pub keyword: Ident,
    pub decision: Ident,
    /// `by RULE`, `with CREDENTIAL`, in source order.
    pub parts: Vec<(Ident, Ident)>,
    pub span: Span,
}

/// `@NAME("value")` before a rule.
#[derive(Debug, Clone, PartialEq)]
pub struct Annotation {
    pub name: Ident,
    pub value: String,
    /// The string literal, quotes included.
    pub value_span: Span,
    pub span: Span,
}

/// `KEY = LITERAL` or `KEY = [ LITERAL, … ]` inside an endpoint or a credential.
#[derive(Debug, Clone, PartialEq)]
pub struct Field {
    pub key: Ident,
    pub value: Expr,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Forbid,
}

/// `permit NAME { CLAUSE* }` or `forbid NAME { CLAUSE* }`.
#[derive(Debug, Clone, PartialEq)]
pub struct RuleDecl {
    pub annotations: Vec<Annotation>,
    pub effect: Effect,
    /// The `permit` or `forbid` keyword.
    pub keyword: Span,
    pub name: Ident,
    pub clauses: Vec<Clause>,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Clause {
    pub kind: ClauseKind,
    /// The whole clause, keyword included.
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ClauseKind {
    Workload(WorkloadSelector),
    Target(TargetSelector),
    When(Expr),
    /// `credential NAME`.
    Credential(Ident),
}

impl ClauseKind {
    pub fn keyword(&self) -> &'static str {
        match self {
            ClauseKind::Workload(_) => "workload",
            ClauseKind::Target(_) => "target",
            ClauseKind::When(_) => "when",
            ClauseKind::Credential(_) => "credential",
        }
    }
}

/// `workload NAME` | `workload any KIND` | `workload any`.
#[derive(Debug, Clone, PartialEq)]
pub enum WorkloadSelector {
    Named(Ident),
    AnyOfKind(Ident),
    Any,
}

/// `target NAME` | `target any`.
#[derive(Debug, Clone, PartialEq)]
pub enum TargetSelector {
    Named(Ident),
    Any,
}

#[derive(Debug, Clone, PartialEq)]
pub struct Expr {
    pub kind: ExprKind,
    pub span: Span,
}

#[derive(Debug, Clone, PartialEq)]
pub enum ExprKind {
    Str(String),
    Int(i64),
    Bool(bool),
    /// A duration literal, in seconds.
    Duration(u64),
    /// `LOW..HIGH`, both integers, both included; only on the right of `in`.
    Range(i64, i64),
    /// `[ LITERAL, … ]`.
    Set(Vec<Expr>),
    /// `name` or `a.b.c`: a claim, a request or target field; resolved by the checker.
    Path(Vec<Ident>),
    /// `has PATH`.
    Has(Vec<Ident>),
    Not(Box<Expr>),
    And(Box<Expr>, Box<Expr>),
    Or(Box<Expr>, Box<Expr>),
    Compare(Box<Expr>, CompareOp, Box<Expr>),
    /// A timestamp literal as written (`2026-12-31T23:59:59Z`); the checker reads it.
    Timestamp(String),
    /// `EXPR within WINDOW`.
    Within(Box<Expr>, Window),
}

/// `[DAYS] [HH:MM..HH:MM] in "ZONE"` after `within`; at least one of days and times.
#[derive(Debug, Clone, PartialEq)]
pub struct Window {
    /// `weekdays`, `mon..fri`, `[mon, wed..thu]`; empty when the window names no days.
    pub days: Vec<DayItem>,
    /// `08:00..18:00`, as written.
    pub times: Option<(TimeOfDay, TimeOfDay)>,
    pub zone: String,
    /// The zone's string literal, quotes included.
    pub zone_span: Span,
    pub span: Span,
}

/// A day name, a group (`weekdays`, `weekends`), or a range of day names `first..last`.
#[derive(Debug, Clone, PartialEq)]
pub struct DayItem {
    pub first: Ident,
    pub last: Option<Ident>,
    pub span: Span,
}

/// A time-of-day literal as written (`08:00`); the checker reads it.
#[derive(Debug, Clone, PartialEq)]
pub struct TimeOfDay {
    pub text: String,
    pub span: Span,
}

/// A comparison operator. `Assign` is a single `=` written where `==` was meant: the parser
/// accepts it so that the checker can say so and go on checking it as `==`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CompareOp {
    Eq,
    Ne,
    In,
    Like,
    /// `matches "regex"`.
    Matches,
    Lt,
    Le,
    Gt,
    Ge,
    Assign {
        op: Span,
    },
}

impl CompareOp {
    pub fn symbol(self) -> &'static str {
        match self {
            CompareOp::Eq => "==",
            CompareOp::Ne => "!=",
            CompareOp::In => "in",
            CompareOp::Like => "like",
            CompareOp::Matches => "matches",
            CompareOp::Lt => "<",
            CompareOp::Le => "<=",
            CompareOp::Gt => ">",
            CompareOp::Ge => ">=",
            CompareOp::Assign { .. } => "=",
        }
    }
}
