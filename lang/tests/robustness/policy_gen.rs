//! Generators of Gate input for the robustness tests, the engine's robustness test and the
//! `check` benchmark: one place that lists the language's vocabulary and constructs.
//!
//! Everything is driven by [`Rng`], a small seeded generator, so the same seed gives the same
//! text in a test, a benchmark and a bug report. Extending the language means extending the
//! tables below ([`KEYWORDS`], [`PUNCTUATION`], [`PROTOCOLS`], …) and, for a new construct
//! that must compile, one arm in [`PolicyGen::condition_atom`] or a new declaration beside
//! [`PolicyGen::credential`] and [`PolicyGen::named_condition`].
//!
//! The engine's property tests also draw the claims and the target of each request from here
//! ([`random_claims`], [`OwnedQuery`]), and every property test its shapes ([`shapes_below`]).

#![allow(
    dead_code,
    reason = "each including target uses a different part of the generator"
)]

use portcullis_lang::reference::TargetQuery;
use portcullis_lang::schema::{ClaimType, ClaimValue, ProviderKind};
use portcullis_lang::source::SourceFile;
use proptest::strategy::Strategy;

/// SplitMix64: tiny, seedable, good enough to pick from tables.
#[derive(Debug, Clone)]
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Rng {
        Rng(seed)
    }

    pub fn next_u64(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }

    /// A number in `0..n`; `n` must be positive.
    pub fn below(&mut self, n: usize) -> usize {
        let n = n.max(1) as u64;
        usize::try_from(self.next_u64() % n).unwrap_or(0)
    }

    /// True with probability `percent` / 100.
    pub fn chance(&mut self, percent: usize) -> bool {
        self.below(100) < percent
    }

    pub fn pick<'a, T>(&mut self, items: &'a [T]) -> &'a T {
        &items[self.below(items.len())]
    }

    pub fn pick_str(&mut self, items: &[&'static str]) -> &'static str {
        items[self.below(items.len())]
    }
}

/// Reserved words, as the lexer knows them.
pub const KEYWORDS: &[&str] = &[
    "workload",
    "target",
    "credential",
    "condition",
    "permit",
    "forbid",
    "when",
    "any",
    "in",
    "like",
    "matches",
    "has",
    "within",
    "test",
    "true",
    "false",
];

/// Operators and delimiters.
pub const PUNCTUATION: &[&str] = &[
    "{", "}", "[", "]", "(", ")", ",", ".", "..", "==", "!=", "=", "!", "&&", "||", "<", "<=", ">",
    ">=", "@",
];

/// Identifiers that mean something somewhere in Gate, besides claim names.
pub const KNOWN_NAMES: &[&str] = &[
    "github",
    "kubernetes",
    "oidc",
    "gitlab",
    "client",
    "request",
    "action",
    "resource",
    "name",
    "protocol",
    "host",
    "port",
    "path_prefix",
    "database",
    "http",
    "https",
    "postgres",
    "grpc",
    "source_ip",
    "jwt",
    "static",
    "oauth_client_credentials",
    "postgres_role",
    "audience",
    "ttl",
    "grant",
    "token_url",
    "client_id",
    "scopes",
    "env",
    "file",
    "description",
    "severity",
];

/// Protocols a target may use, with the fields each accepts besides `host` and `port`.
pub const PROTOCOLS: &[(&str, &str)] = &[
    ("http", "path_prefix"),
    ("https", "path_prefix"),
    ("postgres", "database"),
];

/// String values policies compare claims and request facts with; some contain escapes.
pub const STRING_VALUES: &[&str] = &[
    "acme/billing",
    "acme/orders",
    "refs/heads/main",
    "refs/tags/v1.2.0",
    "push",
    "pull_request_target",
    "production",
    "billing",
    "release",
    "portcullis",
    "https://token.actions.githubusercontent.com",
    "platform",
    "GET",
    "POST",
    "/v1/deploy",
    "quote \" inside",
    "tab\tand\nnewline",
    "back\\slash",
    "ünïcødé ✓",
    "",
];

/// Glob patterns for `like`.
pub const GLOBS: &[&str] = &[
    "refs/tags/v*",
    "acme/*",
    "*",
    "?",
    "/v1/*",
    "*@example.com",
    "literal\\*star",
    "a?c*",
];

/// Regular expressions for `matches` (Rust `regex` syntax, as Gate text after unquoting).
pub const REGEXES: &[&str] = &[
    "^/v[0-9]+/",
    "^refs/heads/(main|release-.*)$",
    "billing",
    "^[a-z0-9-]+$",
    "\\d+",
    "(?i)^ACME/",
];

/// Addresses and CIDR ranges for `request.source_ip`.
pub const NETWORKS: &[&str] = &[
    "10.0.0.0/8",
    "192.0.2.7",
    "192.0.2.0/24",
    "2001:db8::/32",
    "::1",
    "0.0.0.0/0",
];

/// Duration literals, valid ones.
pub const DURATIONS: &[&str] = &["30s", "15m", "1h", "1h30m", "7d", "365d", "1d2h3m4s"];

/// Duration-like text the lexer must reject with a diagnostic.
pub const BAD_DURATIONS: &[&str] = &["15min", "0s", "366d", "1m1h", "99999999999999999999d"];

/// Request fields a `when` may read as strings: optional, no guard needed.
pub const REQUEST_FIELDS: &[&str] = &["action", "resource"];

/// Timestamp literals, `Z` and offsets, from the far past to the far future.
pub const TIMESTAMPS: &[&str] = &[
    "2026-12-04T10:00:00Z",
    "2027-01-01T00:59:59+01:00",
    "1970-01-01T00:00:00Z",
    "2026-03-29T02:30:00-05:00",
    "9999-12-30T22:00:00Z",
];

/// The days of a `within` window: none, one, a named set, a list with a range.
pub const WINDOW_DAYS: &[&str] = &["", "", "fri", "weekdays", "weekends", "[tue, thu..fri]"];

/// The times of a `within` window, some across midnight; empty for whole days.
pub const WINDOW_TIMES: &[&str] = &["", "08:00..18:00", "22:00..06:00", "00:00..23:59"];

/// IANA zones for `within`, with and without daylight saving time.
pub const ZONES: &[&str] = &["UTC", "Europe/Berlin", "America/New_York", "Asia/Tokyo"];

/// Values of `@severity`.
pub const SEVERITIES: &[&str] = &["low", "medium", "high", "critical"];

/// Target facts a `when` may read, with whether each is an integer.
pub const TARGET_FACTS: &[(&str, bool)] = &[
    ("name", false),
    ("protocol", false),
    ("host", false),
    ("port", true),
];

/// Gate's spelling of `text` as a string literal.
pub fn quote(text: &str) -> String {
    let mut out = String::with_capacity(text.len() + 2);
    out.push('"');
    for ch in text.chars() {
        match ch {
            '"' => out.push_str("\\\""),
            '\\' => out.push_str("\\\\"),
            '\n' => out.push_str("\\n"),
            '\t' => out.push_str("\\t"),
            other => out.push(other),
        }
    }
    out.push('"');
    out
}

/// One token of the vocabulary, valid or nearly so: the input of the token-sequence property.
pub fn random_token(rng: &mut Rng) -> String {
    match rng.below(10) {
        0 | 1 => (*rng.pick(KEYWORDS)).to_owned(),
        2 | 3 => (*rng.pick(PUNCTUATION)).to_owned(),
        4 => (*rng.pick(KNOWN_NAMES)).to_owned(),
        5 => {
            let kind = *rng.pick(&ProviderKind::ALL);
            rng.pick(kind.claims()).name.to_owned()
        }
        6 => match rng.below(4) {
            0 => rng.pick_str(TIMESTAMPS).to_owned(),
            1 => rng.pick_str(&["08:00", "23:59", "24:00", "7:5"]).to_owned(),
            _ => quote(rng.pick_str(STRING_VALUES)),
        },
        7 => match rng.below(4) {
            0 => "9223372036854775807".to_owned(),
            1 => "-9223372036854775808".to_owned(),
            2 => "99999999999999999999".to_owned(),
            _ => format!("{}", i64::try_from(rng.below(70_000)).unwrap_or(0) - 100),
        },
        8 => match rng.below(4) {
            0 => rng.pick_str(DURATIONS).to_owned(),
            1 => rng.pick_str(BAD_DURATIONS).to_owned(),
            2 => quote(rng.pick_str(NETWORKS)),
            _ => format!("name_{}", rng.below(8)),
        },
        _ => (*rng.pick(&[
            "\"unterminated",
            "\"bad \\q escape\"",
            "// comment\n",
            "@",
            "-",
        ]))
        .to_owned(),
    }
}

/// A sequence of `len` vocabulary tokens, separated by assorted whitespace (or none).
pub fn random_token_text(rng: &mut Rng, len: usize) -> String {
    let mut text = String::new();
    for _ in 0..len {
        text.push_str(&random_token(rng));
        text.push_str(rng.pick_str(&[" ", " ", "\n", "\t", ""]));
    }
    text
}

/// The shape of a generated policy set.
#[derive(Debug, Clone, Copy)]
pub struct PolicyShape {
    pub workloads: usize,
    pub targets: usize,
    pub rules: usize,
    pub files: usize,
    /// How deep `when` and alternative conditions may nest.
    pub max_depth: usize,
    pub credentials: usize,
    /// Named conditions; condition `i` reads only conditions declared before it, at most
    /// eight in a chain.
    pub conditions: usize,
}

impl PolicyShape {
    /// `test` declarations: one per ten rules, rounded up, when there is a target to name.
    pub fn tests(&self) -> usize {
        if self.targets == 0 {
            return 0;
        }
        self.rules.div_ceil(10)
    }
}

impl PolicyShape {
    /// The benchmark's proportions: a workload per four rules, a target per ten, a file per
    /// 250 rules, shallow conditions as people write them.
    pub fn realistic(rules: usize) -> PolicyShape {
        PolicyShape {
            workloads: (rules / 4).max(1),
            targets: (rules / 10).max(1),
            rules,
            files: rules.div_ceil(250).max(1),
            max_depth: 2,
            credentials: rules / 20,
            conditions: rules / 20,
        }
    }

    /// The engine's coverage tests: small enough to decide quickly, varied enough that random
    /// requests on a couple of hundred seeds reach every kind of decision.
    pub fn every_outcome() -> PolicyShape {
        PolicyShape {
            workloads: 3,
            targets: 3,
            rules: 10,
            files: 2,
            max_depth: 1,
            credentials: 2,
            conditions: 3,
        }
    }
}

/// Shapes for a property test: at least one workload, target and file, and each count below
/// the same count in `bound`.
pub fn shapes_below(bound: PolicyShape) -> impl Strategy<Value = PolicyShape> {
    (
        1..bound.workloads,
        1..bound.targets,
        0..bound.rules,
        1..bound.files,
        0..bound.max_depth,
        0..bound.credentials,
        0..bound.conditions,
    )
        .prop_map(
            |(workloads, targets, rules, files, max_depth, credentials, conditions)| PolicyShape {
                workloads,
                targets,
                rules,
                files,
                max_depth,
                credentials,
                conditions,
            },
        )
}

/// Generates well-formed, well-typed policy sets.
pub struct PolicyGen<'r> {
    rng: &'r mut Rng,
    shape: PolicyShape,
}

impl<'r> PolicyGen<'r> {
    pub fn new(rng: &'r mut Rng, shape: PolicyShape) -> PolicyGen<'r> {
        PolicyGen { rng, shape }
    }

    /// The policy set as `shape.files` files; declarations are spread round-robin, so names
    /// are used in files other than the one declaring them.
    pub fn files(&mut self) -> Vec<SourceFile> {
        let n_files = self.shape.files.max(1);
        let mut texts = vec![String::new(); n_files];
        for idx in 0..self.shape.workloads {
            let text = self.workload(idx);
            texts[idx % n_files].push_str(&text);
        }
        for idx in 0..self.shape.targets {
            let text = self.target(idx);
            texts[(idx + 1) % n_files].push_str(&text);
        }
        for idx in 0..self.shape.credentials {
            let text = self.credential(idx);
            texts[(idx + 3) % n_files].push_str(&text);
        }
        for idx in 0..self.shape.conditions {
            let text = self.named_condition(idx);
            texts[(idx + 4) % n_files].push_str(&text);
        }
        for idx in 0..self.shape.rules {
            let text = self.rule(idx);
            texts[(idx + 2) % n_files].push_str(&text);
        }
        for idx in 0..self.shape.tests() {
            let text = self.test(idx);
            texts[(idx + 5) % n_files].push_str(&text);
        }
        texts
            .into_iter()
            .enumerate()
            .map(|(idx, text)| SourceFile::new(format!("policies/part_{idx:04}.gate"), text))
            .collect()
    }

    fn workload(&mut self, idx: usize) -> String {
        let mut text = format!("workload wl_{idx} {{\n");
        for _ in 0..=self.rng.below(3) {
            let kind = *self.rng.pick(&ProviderKind::ALL);
            let mut body = if self.rng.chance(10) {
                String::new()
            } else {
                self.condition(Scope::Bare(kind), self.shape.max_depth)
            };
            // Most real workloads start by naming their repository, namespace or subject: the
            // shape the VM's index keys on. Half of the alternatives get such a key, mostly on
            // the kind's first string claim so that whole workloads are keyed.
            if self.rng.chance(50) {
                let key = self.key_test(kind);
                body = if body.is_empty() {
                    key
                } else {
                    format!("{key} && {body}")
                };
            }
            text.push_str(&format!("  {kind} {{ {body} }}\n"));
        }
        text.push_str("}\n");
        text
    }

    fn target(&mut self, idx: usize) -> String {
        let (protocol, extra) = *self.rng.pick(PROTOCOLS);
        let mut fields = format!("host = \"svc{idx}.internal.example\"");
        if self.rng.chance(50) {
            fields.push_str(&format!(" port = {}", 1 + self.rng.below(65_535)));
        }
        if self.rng.chance(60) {
            let value = if extra == "path_prefix" {
                "/v1/"
            } else {
                "main"
            };
            fields.push_str(&format!(" {extra} = {}", quote(value)));
        }
        format!("target tg_{idx} {{ {protocol} {{ {fields} }} }}\n")
    }

    fn credential(&mut self, idx: usize) -> String {
        let ttl = self.rng.pick_str(DURATIONS);
        let body = match self.rng.below(5) {
            0 => format!("jwt {{ audience = {} ttl = {ttl} }}", quote("svc")),
            1 => format!("postgres_role {{ grant = [\"app_rw\", \"app_ro\"] ttl = {ttl} }}"),
            2 => format!(
                "oauth_client_credentials {{ token_url = \"https://idp.example/token\" \
                 client_id = \"portcullis\" scopes = [\"read\"] ttl = {ttl} }}"
            ),
            3 => "static { env = \"LEGACY_TOKEN\" }".to_owned(),
            _ => format!("static {{ file = \"/run/secrets/legacy\" ttl = {ttl} }}"),
        };
        format!("credential cr_{idx} {{ {body} }}\n")
    }

    fn named_condition(&mut self, idx: usize) -> String {
        let body = self.condition(Scope::Condition(idx), self.shape.max_depth);
        format!("condition cd_{idx} {{ {body} }}\n")
    }

    fn annotations(&mut self) -> String {
        let mut text = String::new();
        if self.rng.chance(30) {
            let description = quote(self.rng.pick_str(STRING_VALUES));
            text.push_str(&format!("@description({description})\n"));
        }
        if self.rng.chance(30) {
            let severity = quote(self.rng.pick_str(SEVERITIES));
            text.push_str(&format!("@severity({severity})\n"));
        }
        text
    }

    fn rule(&mut self, idx: usize) -> String {
        let forbid = self.rng.chance(20);
        let keyword = if forbid { "forbid" } else { "permit" };
        let mut clauses = Vec::new();
        let workload = match self.rng.below(8) {
            0 => Some("workload any".to_owned()),
            1 => Some(format!(
                "workload any {}",
                self.rng.pick(&ProviderKind::ALL)
            )),
            2 if forbid => None,
            _ => Some(format!(
                "workload wl_{}",
                self.rng.below(self.shape.workloads)
            )),
        };
        clauses.extend(workload);
        let target = match self.rng.below(8) {
            0 => Some("target any".to_owned()),
            1 if forbid => None,
            _ => Some(format!("target tg_{}", self.rng.below(self.shape.targets))),
        };
        clauses.extend(target);
        if self.rng.chance(70) {
            let condition = self.condition(Scope::Rule, self.shape.max_depth);
            clauses.push(format!("when {condition}"));
        }
        if !forbid && self.shape.credentials > 0 && self.rng.chance(40) {
            let credential = self.rng.below(self.shape.credentials);
            clauses.push(format!("credential cr_{credential}"));
        }
        // Clause order does not matter in Gate; shuffle it now and then.
        if self.rng.chance(20) {
            clauses.reverse();
        }
        let body = clauses.join("\n  ");
        let annotations = self.annotations();
        format!("{annotations}{keyword} rule_{idx} {{\n  {body}\n}}\n")
    }

    /// A `test` declaration: a caller of a random kind with every required claim and some
    /// optional ones, a declared target, sometimes the request's details and time, and an
    /// expectation that the checker accepts, right or not (no test here is run).
    fn test(&mut self, idx: usize) -> String {
        let kind = *self.rng.pick(&ProviderKind::ALL);
        let mut claims = String::new();
        for def in kind.claims() {
            if def.required || self.rng.chance(30) {
                let value = self.claim_literal(def.ty);
                claims.push_str(&format!("      {} = {value}\n", def.name));
            }
        }
        let mut request = format!("    {kind} {{\n{claims}    }}\n");
        let target = self.rng.below(self.shape.targets);
        request.push_str(&format!("    target tg_{target}\n"));
        if self.rng.chance(60) {
            let action = self.rng.pick_str(&["GET", "POST", "DELETE"]);
            request.push_str(&format!("    action = {}\n", quote(action)));
        }
        if self.rng.chance(60) {
            let resource = self
                .rng
                .pick_str(&["/v1/deploy", "/v2/x", "/", "main/app", "other"]);
            request.push_str(&format!("    resource = {}\n", quote(resource)));
        }
        if self.rng.chance(40) {
            let ip = self.rng.pick_str(&["192.0.2.7", "10.1.2.3", "2001:db8::1"]);
            request.push_str(&format!("    source_ip = {}\n", quote(ip)));
        }
        if self.rng.chance(60) {
            let time = self.rng.pick_str(TIMESTAMPS);
            request.push_str(&format!("    time = {time}\n"));
        }
        let decision = self.rng.pick_str(&["allow", "deny"]);
        let mut expect = format!("expect {decision}");
        if self.shape.rules > 0 && self.rng.chance(50) {
            expect.push_str(&format!(" by rule_{}", self.rng.below(self.shape.rules)));
        }
        if decision == "allow" && self.shape.credentials > 0 && self.rng.chance(30) {
            let credential = self.rng.below(self.shape.credentials);
            expect.push_str(&format!(" with cr_{credential}"));
        }
        format!("test ts_{idx} {{\n  request {{\n{request}  }}\n  {expect}\n}}\n")
    }

    /// A literal of a claim's type, as a test request gives it.
    fn claim_literal(&mut self, ty: ClaimType) -> String {
        match ty {
            ClaimType::String => quote(self.rng.pick_str(STRING_VALUES)),
            ClaimType::Bool => self.rng.pick_str(&["true", "false"]).to_owned(),
            ClaimType::Int => (1 + self.rng.below(1000)).to_string(),
            ClaimType::StringSet if self.rng.chance(20) => quote(self.rng.pick_str(STRING_VALUES)),
            ClaimType::StringSet => self.string_set(),
        }
    }

    /// A boolean expression, well typed in `scope`, nesting at most `depth` connectives.
    pub fn condition(&mut self, scope: Scope, depth: usize) -> String {
        if depth == 0 || self.rng.chance(40) {
            return self.condition_atom(scope);
        }
        let lhs = self.condition(scope, depth - 1);
        let rhs = self.condition(scope, depth - 1);
        match self.rng.below(4) {
            0 => format!("{lhs} && {rhs}"),
            1 => format!("({lhs} || {rhs})"),
            2 => format!("!({lhs})"),
            _ => format!("({lhs})"),
        }
    }

    /// A comparison or `has`, parenthesized when it is a guarded pair, so that it can stand
    /// anywhere a boolean can.
    fn condition_atom(&mut self, scope: Scope) -> String {
        match scope {
            Scope::Bare(kind) => self.claim_test(kind, ""),
            Scope::Rule | Scope::Condition(_) => match self.rng.below(8) {
                0 => {
                    let kind = *self.rng.pick(&ProviderKind::ALL);
                    self.claim_test(kind, &format!("client.{kind}."))
                }
                1 => self.request_test(),
                2 => self.target_test(),
                3 => self.source_ip_test(),
                4 => match self.condition_reference(scope) {
                    Some(name) => name,
                    None => self.target_test(),
                },
                5 => {
                    let op = self.rng.pick_str(&["<", "<=", ">", ">=", "==", "!="]);
                    let lhs = self.rng.pick_str(DURATIONS);
                    format!("{lhs} {op} {}", self.rng.pick_str(DURATIONS))
                }
                6 => self.time_test(),
                _ => self.rng.pick_str(&["true", "false"]).to_owned(),
            },
        }
    }

    /// A test of `request.time`: ordered against a timestamp, or in a weekly window of local
    /// time with days, times or both.
    fn time_test(&mut self) -> String {
        let field = "request.time";
        if self.rng.chance(40) {
            let op = self.rng.pick_str(&["<", "<=", ">", ">="]);
            return format!("{field} {op} {}", self.rng.pick_str(TIMESTAMPS));
        }
        let days = self.rng.pick_str(WINDOW_DAYS);
        let mut times = self.rng.pick_str(WINDOW_TIMES);
        if days.is_empty() && times.is_empty() {
            times = "08:00..18:00";
        }
        let window = [days, times]
            .into_iter()
            .filter(|part| !part.is_empty())
            .collect::<Vec<_>>()
            .join(" ");
        let zone = quote(self.rng.pick_str(ZONES));
        format!("{field} within {window} in {zone}")
    }

    /// A named condition that `scope` may read without making a cycle or a chain deeper
    /// than eight: a rule reads any; condition `i` reads only `i - 1 - k` for `k < i % 8`.
    fn condition_reference(&mut self, scope: Scope) -> Option<String> {
        let n_conditions = self.shape.conditions;
        let referenced = match scope {
            Scope::Rule if n_conditions > 0 => self.rng.below(n_conditions),
            Scope::Condition(idx) if idx % 8 > 0 => idx - 1 - self.rng.below(idx % 8),
            _ => return None,
        };
        Some(format!("cd_{referenced}"))
    }

    fn source_ip_test(&mut self) -> String {
        let field = "request.source_ip";
        let test = match self.rng.below(3) {
            0 => format!(
                "{field} == {}",
                quote(self.rng.pick_str(&["192.0.2.7", "::1"]))
            ),
            1 => format!("{field} != {}", quote("10.1.2.3")),
            _ => {
                let items: Vec<String> = (0..=self.rng.below(3))
                    .map(|_| quote(self.rng.pick_str(NETWORKS)))
                    .collect();
                format!("{field} in [{}]", items.join(", "))
            }
        };
        if self.rng.chance(20) {
            return format!("has {field}");
        }
        format!("(has {field} && {test})")
    }

    /// A test of an integer: equality, order or a range.
    fn int_test(&mut self, lhs: &str, max: usize) -> String {
        let value = 1 + self.rng.below(max);
        match self.rng.below(4) {
            0 => format!("{lhs} {} {value}", self.rng.pick_str(&["==", "!="])),
            1 => format!(
                "{lhs} {} {value}",
                self.rng.pick_str(&["<", "<=", ">", ">="])
            ),
            2 => format!("{lhs} in {value}..{}", value + self.rng.below(max)),
            _ => format!("{lhs} in [{value}, {}]", 1 + self.rng.below(max)),
        }
    }

    /// A test of one claim of `kind`, spelled `{prefix}{claim}`; an optional claim is read
    /// only behind `has`.
    /// An equality test of a string claim with constants, as a workload's first test.
    fn key_test(&mut self, kind: ProviderKind) -> String {
        let strings: Vec<_> = kind
            .claims()
            .iter()
            .filter(|def| def.ty == ClaimType::String && def.required)
            .collect();
        let Some(first) = strings.first() else {
            return "true".to_owned();
        };
        let def = if self.rng.chance(70) {
            first
        } else {
            self.rng.pick(&strings)
        };
        let key = if self.rng.chance(70) {
            format!(
                "{} == {}",
                def.name,
                quote(self.rng.pick_str(STRING_VALUES))
            )
        } else {
            let values: Vec<String> = (0..1 + self.rng.below(3))
                .map(|_| quote(self.rng.pick_str(STRING_VALUES)))
                .collect();
            format!("{} in [{}]", def.name, values.join(", "))
        };
        // Often an organisation-like test comes first, shared by many workloads: the index
        // then keys on the later, more selective test and guards on this one.
        let other = strings.iter().find(|other| other.name != def.name);
        match other {
            Some(guard) if self.rng.chance(40) => {
                let shared = quote(self.rng.pick_str(&STRING_VALUES[..2]));
                format!("{} == {shared} && {key}", guard.name)
            }
            _ => key,
        }
    }

    fn claim_test(&mut self, kind: ProviderKind, prefix: &str) -> String {
        let def = self.rng.pick(kind.claims());
        let claim = format!("{prefix}{}", def.name);
        let test = match def.ty {
            ClaimType::String => self.string_test(&claim),
            ClaimType::Bool => format!("{claim} == {}", self.rng.pick(&["true", "false"])),
            ClaimType::Int => self.int_test(&claim, 1000),
            ClaimType::StringSet => format!("{claim} in {}", self.string_set()),
        };
        if def.required {
            return test;
        }
        if self.rng.chance(20) {
            return format!("has {claim}");
        }
        format!("(has {claim} && {test})")
    }

    fn request_test(&mut self) -> String {
        let field = format!("request.{}", self.rng.pick(REQUEST_FIELDS));
        if self.rng.chance(15) {
            return format!("has {field}");
        }
        self.string_test(&field)
    }

    fn target_test(&mut self) -> String {
        let (fact, is_int) = *self.rng.pick(TARGET_FACTS);
        if is_int {
            return self.int_test(&format!("target.{fact}"), 65_535);
        }
        self.string_test(&format!("target.{fact}"))
    }

    fn string_test(&mut self, lhs: &str) -> String {
        match self.rng.below(5) {
            0 => format!("{lhs} == {}", quote(self.rng.pick_str(STRING_VALUES))),
            1 => format!("{lhs} != {}", quote(self.rng.pick_str(STRING_VALUES))),
            2 => format!("{lhs} like {}", quote(self.rng.pick_str(GLOBS))),
            3 => format!("{lhs} matches {}", quote(self.rng.pick_str(REGEXES))),
            _ => format!("{lhs} in {}", self.string_set()),
        }
    }

    fn string_set(&mut self) -> String {
        let items: Vec<String> = (0..=self.rng.below(3))
            .map(|_| quote(self.rng.pick_str(STRING_VALUES)))
            .collect();
        format!("[{}]", items.join(", "))
    }
}

/// Where a condition is written, which decides how claims are named.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// Inside a workload alternative: bare claim names of that kind.
    Bare(ProviderKind),
    /// In a rule's `when`: `client.KIND.claim`, `request.*`, `target.*`, conditions.
    Rule,
    /// In the body of condition `cd_N`: as in a rule, reading only earlier conditions.
    Condition(usize),
}

/// The claims of a caller of `kind`, indexed by claim id: every required claim and about half
/// of the optional ones. In 5% of callers one claim is `misfit` instead, a value of the wrong
/// type for most claims, and in 3% the list is cut short: attestation never gives either, and
/// a decision must still come back.
pub fn random_claims(
    rng: &mut Rng,
    kind: ProviderKind,
    misfit: ClaimValue,
) -> Vec<Option<ClaimValue>> {
    let mut claims: Vec<Option<ClaimValue>> = kind
        .claims()
        .iter()
        .map(|def| (def.required || rng.chance(50)).then(|| random_claim(rng, def.ty)))
        .collect();
    if rng.chance(5) {
        let idx = rng.below(claims.len());
        claims[idx] = Some(misfit);
    }
    if rng.chance(3) {
        claims.truncate(rng.below(claims.len()));
    }
    claims
}

/// A value of type `ty`, strings from [`STRING_VALUES`].
pub fn random_claim(rng: &mut Rng, ty: ClaimType) -> ClaimValue {
    match ty {
        ClaimType::String => ClaimValue::String(rng.pick_str(STRING_VALUES).to_owned()),
        ClaimType::Int => ClaimValue::Int(i64::try_from(rng.below(1000)).unwrap_or(0)),
        ClaimType::Bool => ClaimValue::Bool(rng.chance(50)),
        ClaimType::StringSet => ClaimValue::StringSet(
            (0..rng.below(4))
                .map(|_| rng.pick_str(STRING_VALUES).to_owned())
                .collect(),
        ),
    }
}

/// The target of a generated request, owning its text; [`OwnedQuery::query`] lends it in the
/// form the VM and the reference evaluator both take.
pub enum OwnedQuery {
    Named(String),
    /// Protocol, host and port.
    Endpoint(String, String, u16),
}

impl OwnedQuery {
    pub fn query(&self) -> TargetQuery<'_> {
        match self {
            OwnedQuery::Named(name) => TargetQuery::Named(name),
            OwnedQuery::Endpoint(protocol, host, port) => TargetQuery::Endpoint {
                protocol,
                host,
                port: *port,
            },
        }
    }
}
