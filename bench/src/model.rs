//! The policy set every engine decides, as one model: workloads, targets, credentials and
//! rules, with only the kinds of condition that Gate, Cedar and Rego all state the same way.
//! The renderers ([`crate::gate`], [`crate::cedar`], [`crate::rego`]) turn the model into
//! source text, so the three policies cannot drift apart.
//!
//! [`Policy::generate`] builds a set of an exact rule count from a seed. Its shape is that of
//! a company with many services: workloads on GitHub Actions, Kubernetes, GitLab, HCP
//! Terraform and SPIFFE, each identified by equality on a claim (a repository, a namespace and
//! service account, a project path, a workspace id, a SPIFFE ID) and often one more condition
//! (a ref, a protected ref, an environment, a run phase); one target per team service (an
//! HTTPS API or a Postgres database) plus a few shared ones (artifacts, secrets, metrics, …)
//! that a quarter of all permits reach; one credential per target. Each workload gets one to
//! four permits, mostly with a `when` on the action, the path or an expiry; some workloads get
//! a forbid of their own; three organisation-wide forbids cover every target.

use std::collections::HashSet;

use portcullis_lang::schema::ProviderKind;

use crate::rng::Rng;

/// `request.time` of most requests: Friday 2026-12-04, 10:00 UTC.
pub const NOW: i64 = 1_796_378_400;
/// `request.time` of the others: 2027-01-15, 08:00 UTC, after the first expiry below.
pub const LATER: i64 = 1_800_000_000;
/// When temporary grants expire, in Unix seconds and as a Gate timestamp.
pub const EXPIRIES: [(i64, &str); 2] = [
    (1_798_761_600, "2027-01-01T00:00:00Z"),
    (1_806_537_600, "2027-04-01T00:00:00Z"),
];

pub const READS: &[&str] = &["GET", "HEAD"];
pub const WRITES: &[&str] = &["POST", "PUT", "PATCH"];
pub const CHANGES: &[&str] = &["POST", "PUT", "PATCH", "DELETE"];
pub const DELETES: &[&str] = &["DELETE"];
pub const CONNECT: &[&str] = &["connect"];
pub const HTTP_ACTIONS: &[&str] = &["GET", "HEAD", "POST", "PUT", "PATCH", "DELETE"];
pub const REPORTS_PREFIX: &str = "/v1/reports/";
/// What a prod host name holds, and so what `target.host like "*.prod.*"` looks for.
pub const PROD_MARK: &str = ".prod.";

/// The trust provider kinds the generated workloads use.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Github,
    Gitlab,
    Kubernetes,
    Terraform,
    Spiffe,
}

impl Kind {
    /// The Gate keyword, which is also the Rego input's `kind`.
    pub fn keyword(self) -> &'static str {
        match self {
            Kind::Github => "github",
            Kind::Gitlab => "gitlab",
            Kind::Kubernetes => "kubernetes",
            Kind::Terraform => "terraform",
            Kind::Spiffe => "spiffe",
        }
    }

    /// The Cedar entity type of a caller of this kind.
    pub fn entity_type(self) -> &'static str {
        match self {
            Kind::Github => "Github",
            Kind::Gitlab => "Gitlab",
            Kind::Kubernetes => "Kubernetes",
            Kind::Terraform => "Terraform",
            Kind::Spiffe => "Spiffe",
        }
    }

    pub fn provider(self) -> ProviderKind {
        match self {
            Kind::Github => ProviderKind::Github,
            Kind::Gitlab => ProviderKind::Gitlab,
            Kind::Kubernetes => ProviderKind::Kubernetes,
            Kind::Terraform => ProviderKind::Terraform,
            Kind::Spiffe => ProviderKind::Spiffe,
        }
    }
}

/// One conjunct of a workload alternative, on a bare claim of the alternative's kind.
#[derive(Debug, Clone)]
pub enum Test {
    /// `claim == "value"`, on a claim every caller of the kind carries.
    Eq(&'static str, String),
    /// `claim like "prefix*"`.
    Prefix(&'static str, String),
    /// `has claim && claim == "value"`, on an optional claim.
    PresentEq(&'static str, String),
}

/// Callers of `kind` whose claims pass every test.
#[derive(Debug, Clone)]
pub struct Alternative {
    pub kind: Kind,
    pub tests: Vec<Test>,
}

#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub alternatives: Vec<Alternative>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Https,
    Postgres,
}

#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    pub host: String,
    pub database: Option<String>,
    /// The credential its permits name, an index into [`Policy::credentials`].
    pub credential: usize,
}

impl Target {
    pub fn protocol_keyword(&self) -> &'static str {
        match self.protocol {
            Protocol::Https => "https",
            Protocol::Postgres => "postgres",
        }
    }

    pub fn port(&self) -> u16 {
        match self.protocol {
            Protocol::Https => 443,
            Protocol::Postgres => 5432,
        }
    }

    /// The actions a request to this target carries.
    pub fn actions(&self) -> &'static [&'static str] {
        match self.protocol {
            Protocol::Https => HTTP_ACTIONS,
            Protocol::Postgres => CONNECT,
        }
    }
}

#[derive(Debug, Clone)]
pub enum Grant {
    Jwt { audience: String },
    PostgresRole { role: String },
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub name: String,
    pub grant: Grant,
}

/// One conjunct of a rule's `when`.
#[derive(Debug, Clone)]
pub enum Cond {
    /// `request.action in [...]`.
    ActionIn(&'static [&'static str]),
    /// `request.resource like "prefix*"`.
    ResourcePrefix(&'static str),
    /// `request.time < EXPIRIES[i]`.
    Before(usize),
    /// `client.KIND.claim == "value"`, on a claim every caller of the kind carries. Only in
    /// rules whose workload is of that kind alone, so that it is never read for another kind.
    ClaimEq(Kind, &'static str, &'static str),
    /// `!(has client.KIND.claim && client.KIND.claim == "value")`, on an optional claim; the
    /// same restriction as [`Cond::ClaimEq`].
    NotPresentEq(Kind, &'static str, &'static str),
    /// `target.host like "*text*"`.
    HostContains(&'static str),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Effect {
    Permit,
    Forbid,
}

/// Which callers a rule covers.
#[derive(Debug, Clone, Copy)]
pub enum Scope {
    /// A declared workload, an index into [`Policy::workloads`].
    Workload(usize),
    /// Every caller of a kind (`workload any KIND`).
    AnyOf(Kind),
}

#[derive(Debug, Clone)]
pub struct Rule {
    pub name: String,
    pub effect: Effect,
    pub scope: Scope,
    /// An index into [`Policy::targets`]; `None` covers every target (forbids only).
    pub target: Option<usize>,
    pub when: Vec<Cond>,
    /// An index into [`Policy::credentials`]; permits only.
    pub credential: Option<usize>,
}

impl Rule {
    /// The actions the rule's `when` admits, if it limits them.
    pub fn actions(&self) -> Option<&'static [&'static str]> {
        self.when.iter().find_map(|cond| match cond {
            Cond::ActionIn(actions) => Some(*actions),
            _ => None,
        })
    }

    pub fn resource_prefix(&self) -> Option<&'static str> {
        self.when.iter().find_map(|cond| match cond {
            Cond::ResourcePrefix(prefix) => Some(*prefix),
            _ => None,
        })
    }
}

#[derive(Debug, Clone, Default)]
pub struct Policy {
    pub workloads: Vec<Workload>,
    pub targets: Vec<Target>,
    pub credentials: Vec<Credential>,
    /// In declaration order: the organisation-wide forbids first.
    pub rules: Vec<Rule>,
    /// How many of the first targets are the shared ones.
    pub shared_targets: usize,
    /// How many of the first rules are organisation-wide forbids.
    pub global_forbids: usize,
}

/// Shared services: (target name, protocol, host).
const SHARED: [(&str, Protocol, &str); 8] = [
    (
        "artifacts_api",
        Protocol::Https,
        "artifacts.prod.acme.internal",
    ),
    ("secrets_api", Protocol::Https, "vault.prod.acme.internal"),
    ("metrics_api", Protocol::Https, "metrics.prod.acme.internal"),
    (
        "registry_api",
        Protocol::Https,
        "registry.prod.acme.internal",
    ),
    (
        "config_db",
        Protocol::Postgres,
        "config.db.prod.acme.internal",
    ),
    ("audit_api", Protocol::Https, "audit.prod.acme.internal"),
    ("flags_api", Protocol::Https, "flags.staging.acme.internal"),
    (
        "billing_db",
        Protocol::Postgres,
        "billing.db.prod.acme.internal",
    ),
];

/// Percent of permits that reach a shared target.
const SHARED_PERMITS: usize = 25;

/// Rules per team target: the team targets grow with the policy set.
const RULES_PER_TEAM_TARGET: usize = 16;

impl Policy {
    /// A policy set of exactly `n_rules` rules, the same for the same seed.
    pub fn generate(n_rules: usize, seed: u64) -> Policy {
        let mut generator = Generator {
            rng: Rng::new(seed),
            n_rules,
            policy: Policy::default(),
            rule_names: HashSet::new(),
        };
        generator.targets();
        generator.global_forbids();
        while generator.policy.rules.len() < n_rules {
            generator.workload();
        }
        generator.policy
    }

    /// Permits, as indexes into [`Policy::rules`].
    pub fn permits(&self) -> Vec<usize> {
        (0..self.rules.len())
            .filter(|idx| {
                self.rules
                    .get(*idx)
                    .is_some_and(|r| r.effect == Effect::Permit)
            })
            .collect()
    }
}

struct Generator {
    rng: Rng,
    n_rules: usize,
    policy: Policy,
    rule_names: HashSet<String>,
}

impl Generator {
    fn full(&self) -> bool {
        self.policy.rules.len() >= self.n_rules
    }

    fn targets(&mut self) {
        let n_shared = (self.n_rules / 100).clamp(1, SHARED.len());
        for (name, protocol, host) in SHARED.into_iter().take(n_shared) {
            let database = (protocol == Protocol::Postgres).then(|| name.replace("_db", ""));
            self.add_target(name.to_owned(), protocol, host.to_owned(), database);
        }
        self.policy.shared_targets = n_shared;
        for idx in 0..(self.n_rules / RULES_PER_TEAM_TARGET).max(2) {
            let env = if self.rng.chance(50) {
                "prod"
            } else {
                "staging"
            };
            if self.rng.chance(60) {
                let name = format!("svc_{idx:05}_api_{env}");
                let host = format!("svc-{idx:05}.api.{env}.acme.internal");
                self.add_target(name, Protocol::Https, host, None);
            } else {
                let name = format!("svc_{idx:05}_db_{env}");
                let host = format!("svc-{idx:05}.db.{env}.acme.internal");
                let database = Some(format!("svc_{idx:05}"));
                self.add_target(name, Protocol::Postgres, host, database);
            }
        }
    }

    fn add_target(&mut self, name: String, protocol: Protocol, host: String, db: Option<String>) {
        let grant = match &db {
            Some(database) => Grant::PostgresRole {
                role: format!("{database}_rw"),
            },
            None => Grant::Jwt {
                audience: host.clone(),
            },
        };
        let suffix = if db.is_some() { "role" } else { "token" };
        self.policy.credentials.push(Credential {
            name: format!("{name}_{suffix}"),
            grant,
        });
        self.policy.targets.push(Target {
            name,
            protocol,
            host,
            database: db,
            credential: self.policy.credentials.len() - 1,
        });
    }

    /// Guardrails of the whole organisation; a small set of them reaches every target.
    fn global_forbids(&mut self) {
        let forbids = [
            (
                "no_pull_request_target",
                Kind::Github,
                vec![Cond::ClaimEq(
                    Kind::Github,
                    "event_name",
                    "pull_request_target",
                )],
            ),
            (
                "unprotected_gitlab_refs_stay_off_prod",
                Kind::Gitlab,
                vec![
                    Cond::HostContains(PROD_MARK),
                    Cond::ClaimEq(Kind::Gitlab, "ref_protected", "false"),
                ],
            ),
            (
                "terraform_plans_change_nothing",
                Kind::Terraform,
                vec![
                    Cond::ClaimEq(Kind::Terraform, "terraform_run_phase", "plan"),
                    Cond::ActionIn(CHANGES),
                ],
            ),
        ];
        let n_forbids = if self.n_rules >= 100 {
            forbids.len()
        } else {
            1
        };
        for (name, kind, when) in forbids.into_iter().take(n_forbids) {
            self.add_rule(
                name.to_owned(),
                Effect::Forbid,
                Scope::AnyOf(kind),
                None,
                when,
                None,
            );
        }
        self.policy.global_forbids = self.policy.rules.len();
    }

    fn workload(&mut self) {
        let idx = self.policy.workloads.len();
        let kind = match self.rng.below(100) {
            0..40 => Kind::Github,
            40..65 => Kind::Kubernetes,
            65..80 => Kind::Gitlab,
            80..90 => Kind::Terraform,
            _ => Kind::Spiffe,
        };
        let mut alternatives = vec![self.alternative(kind, idx)];
        // A service built by CI that also runs in a cluster.
        if kind == Kind::Github && self.rng.chance(15) {
            alternatives.push(self.alternative(Kind::Kubernetes, idx));
        }
        let prefix = match kind {
            Kind::Github => "gh",
            Kind::Gitlab => "gl",
            Kind::Kubernetes => "k8s",
            Kind::Terraform => "tf",
            Kind::Spiffe => "spiffe",
        };
        self.policy.workloads.push(Workload {
            name: format!("{prefix}_svc_{idx:06}"),
            alternatives,
        });
        let mut permitted = Vec::new();
        for _ in 0..1 + self.rng.below(4) {
            if self.full() {
                return;
            }
            permitted.push(self.permit(idx));
        }
        if !self.full() {
            self.own_forbid(idx, &permitted);
        }
    }

    /// How the caller of workload `idx` is recognised on `kind`; the claim values match those
    /// that [`crate::sample`] gives the workload's callers.
    fn alternative(&mut self, kind: Kind, idx: usize) -> Alternative {
        let ids = Identity::of(idx);
        let mut tests = Vec::new();
        match kind {
            Kind::Github => {
                tests.push(Test::Eq("repository", ids.repository));
                match self.rng.below(100) {
                    0..40 => tests.push(Test::Eq("ref", "refs/heads/main".to_owned())),
                    40..65 => tests.push(Test::Prefix("ref", "refs/tags/v".to_owned())),
                    65..90 => tests.push(Test::PresentEq("environment", "production".to_owned())),
                    _ => {}
                }
            }
            Kind::Kubernetes => {
                tests.push(Test::Eq("namespace", ids.namespace));
                tests.push(Test::Eq("service_account", ids.service_account));
            }
            Kind::Gitlab => {
                tests.push(Test::Eq("project_path", ids.project_path));
                tests.push(Test::Eq("ref_protected", "true".to_owned()));
                if self.rng.chance(50) {
                    tests.push(Test::Eq("ref", "main".to_owned()));
                }
            }
            Kind::Terraform => {
                tests.push(Test::Eq("terraform_organization_name", "acme".to_owned()));
                tests.push(Test::Eq("terraform_workspace_id", ids.workspace_id));
                if self.rng.chance(50) {
                    tests.push(Test::Eq("terraform_run_phase", "apply".to_owned()));
                }
            }
            Kind::Spiffe => tests.push(Test::Eq("spiffe_id", ids.spiffe_id)),
        }
        Alternative { kind, tests }
    }

    /// A permit of workload `workload` on a random target; gives the target.
    fn permit(&mut self, workload: usize) -> usize {
        let n_shared = self.policy.shared_targets;
        let target_idx = if self.rng.chance(SHARED_PERMITS) {
            self.rng.below(n_shared)
        } else {
            n_shared + self.rng.below(self.policy.targets.len() - n_shared)
        };
        let Some(target) = self.policy.targets.get(target_idx) else {
            return target_idx;
        };
        let (verb, when) = match target.protocol {
            Protocol::Https => match self.rng.below(100) {
                0..35 => ("reads", vec![Cond::ActionIn(READS)]),
                35..55 => ("writes", vec![Cond::ActionIn(WRITES)]),
                55..70 => (
                    "reads_reports",
                    vec![Cond::ActionIn(READS), Cond::ResourcePrefix(REPORTS_PREFIX)],
                ),
                70..80 => ("calls_until", vec![Cond::Before(self.rng.below(2))]),
                _ => ("calls", Vec::new()),
            },
            Protocol::Postgres => match self.rng.below(100) {
                0..40 => ("uses", Vec::new()),
                40..80 => ("connects", vec![Cond::ActionIn(CONNECT)]),
                _ => ("uses_until", vec![Cond::Before(self.rng.below(2))]),
            },
        };
        let credential = self.rng.chance(85).then_some(target.credential);
        let name = self.unique_name(workload, verb, target_idx);
        let scope = Scope::Workload(workload);
        self.add_rule(
            name,
            Effect::Permit,
            scope,
            Some(target_idx),
            when,
            credential,
        );
        target_idx
    }

    /// Sometimes a forbid for one workload on one of the targets it was permitted: a GitHub
    /// repository reaches prod only from its `production` environment; a cluster service
    /// never deletes.
    fn own_forbid(&mut self, workload: usize, permitted: &[usize]) {
        let Some(alternatives) = self.policy.workloads.get(workload).map(|w| &w.alternatives)
        else {
            return;
        };
        let [alternative] = alternatives.as_slice() else {
            return;
        };
        let tests_environment = alternative
            .tests
            .iter()
            .any(|test| matches!(test, Test::PresentEq("environment", _)));
        let (verb, when, candidates): (_, _, Vec<usize>) = match alternative.kind {
            Kind::Github if !tests_environment && self.rng.chance(30) => (
                "needs_production_environment_on",
                vec![Cond::NotPresentEq(
                    Kind::Github,
                    "environment",
                    "production",
                )],
                self.filter_targets(permitted, |t| t.host.contains(PROD_MARK)),
            ),
            Kind::Kubernetes if self.rng.chance(15) => (
                "never_deletes_on",
                vec![Cond::ActionIn(DELETES)],
                self.filter_targets(permitted, |t| t.protocol == Protocol::Https),
            ),
            _ => return,
        };
        let Some(&target_idx) = self.rng.pick(&candidates) else {
            return;
        };
        let name = self.unique_name(workload, verb, target_idx);
        let scope = Scope::Workload(workload);
        self.add_rule(name, Effect::Forbid, scope, Some(target_idx), when, None);
    }

    fn filter_targets(&self, targets: &[usize], keep: impl Fn(&Target) -> bool) -> Vec<usize> {
        let kept = targets.iter().copied();
        kept.filter(|idx| self.policy.targets.get(*idx).is_some_and(&keep))
            .collect()
    }

    fn unique_name(&mut self, workload: usize, verb: &str, target: usize) -> String {
        let workload = self
            .policy
            .workloads
            .get(workload)
            .map_or("", |w| w.name.as_str());
        let target = self
            .policy
            .targets
            .get(target)
            .map_or("", |t| t.name.as_str());
        let base = format!("{workload}_{verb}_{target}");
        let mut name = base.clone();
        let mut n = 2;
        while self.rule_names.contains(&name) {
            name = format!("{base}_{n}");
            n += 1;
        }
        name
    }

    fn add_rule(
        &mut self,
        name: String,
        effect: Effect,
        scope: Scope,
        target: Option<usize>,
        when: Vec<Cond>,
        credential: Option<usize>,
    ) {
        self.rule_names.insert(name.clone());
        self.policy.rules.push(Rule {
            name,
            effect,
            scope,
            target,
            when,
            credential,
        });
    }
}

/// The claim values that identify workload `idx` on each platform, and callers that are no
/// workload at all when `idx` is past the last workload.
#[derive(Debug, Clone)]
pub struct Identity {
    pub repository: String,
    pub namespace: String,
    pub service_account: String,
    pub project_path: String,
    pub workspace_id: String,
    pub spiffe_id: String,
}

impl Identity {
    pub fn of(idx: usize) -> Identity {
        let team = idx / 8;
        Identity {
            repository: format!("acme/svc-{idx:06}"),
            namespace: format!("team-{team:05}"),
            service_account: format!("svc-{idx:06}"),
            project_path: format!("acme/platform/proj-{idx:06}"),
            workspace_id: format!("ws-{idx:06}"),
            spiffe_id: format!("spiffe://prod.acme.example/ns/team-{team:05}/sa/svc-{idx:06}"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn sets_have_the_size_asked_for_and_repeat_with_the_seed() {
        for n_rules in [1, 10, 999] {
            let policy = Policy::generate(n_rules, 7);
            assert_eq!(policy.rules.len(), n_rules);
            let again = Policy::generate(n_rules, 7);
            let names = |p: &Policy| p.rules.iter().map(|r| r.name.clone()).collect::<Vec<_>>();
            assert_eq!(names(&policy), names(&again));
        }
    }
}
