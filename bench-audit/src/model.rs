//! The generated organisation whose access the benchmark records: workloads on five
//! platforms, the targets they reach with their credentials, and the rules that permit or
//! forbid it, in two versions of the policy (the second, put in effect part-way through the
//! history, adds and drops some rules).
//!
//! In: a seed and the counts. Out: an [`Org`], from which [`crate::gate`] writes the Gate
//! source of each version and [`crate::events`] draws the events, so that every rule, workload
//! and target an event names exists in the bundle that decided it.

use crate::rng::Rng;

/// The platforms workloads run on, each with its trust provider(s).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Platform {
    Github,
    Kubernetes,
    Gitlab,
    Terraform,
    Spiffe,
}

impl Platform {
    /// The trust provider kind, as Gate and the `claims` schemas name it.
    pub fn keyword(self) -> &'static str {
        match self {
            Platform::Github => "github",
            Platform::Kubernetes => "kubernetes",
            Platform::Gitlab => "gitlab",
            Platform::Terraform => "terraform",
            Platform::Spiffe => "spiffe",
        }
    }

    /// The prefix of the platform's workload names.
    fn prefix(self) -> &'static str {
        match self {
            Platform::Github => "gh",
            Platform::Kubernetes => "k8s",
            Platform::Gitlab => "gl",
            Platform::Terraform => "tf",
            Platform::Spiffe => "sp",
        }
    }

    /// Shares of the workloads: CI on GitHub most, then services in clusters.
    fn draw(rng: &mut Rng) -> Platform {
        match rng.below(100) {
            0..40 => Platform::Github,
            40..65 => Platform::Kubernetes,
            65..80 => Platform::Gitlab,
            80..90 => Platform::Terraform,
            _ => Platform::Spiffe,
        }
    }
}

/// A configured trust provider: its name in the `trust_provider` column and its issuer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Provider {
    pub name: &'static str,
    pub issuer: &'static str,
}

/// GitHub Actions' token service.
pub const GITHUB_ACTIONS: Provider = Provider {
    name: "github-actions",
    issuer: "https://token.actions.githubusercontent.com",
};

/// The trust providers of the organisation; Kubernetes workloads run in one of three clusters.
const PROVIDERS: [(Platform, Provider); 7] = [
    (Platform::Github, GITHUB_ACTIONS),
    (
        Platform::Kubernetes,
        Provider {
            name: "k8s-prod-eu-west-1",
            issuer: "https://oidc.eks.eu-west-1.amazonaws.com/id/7F3A9C1E0D5B4A6E8C2F1B3D5E7A9C0B",
        },
    ),
    (
        Platform::Kubernetes,
        Provider {
            name: "k8s-prod-us-east-1",
            issuer: "https://oidc.eks.us-east-1.amazonaws.com/id/2B8D4F6A1C3E5A7B9D0F2E4C6A8B0D1F",
        },
    ),
    (
        Platform::Kubernetes,
        Provider {
            name: "k8s-staging",
            issuer: concat!(
                "https://container.googleapis.com/v1/projects/acme-staging/",
                "locations/europe-west4/clusters/staging"
            ),
        },
    ),
    (
        Platform::Gitlab,
        Provider {
            name: "gitlab-acme",
            issuer: "https://gitlab.acme.example",
        },
    ),
    (
        Platform::Terraform,
        Provider {
            name: "hcp-terraform",
            issuer: "https://app.terraform.io",
        },
    ),
    (
        Platform::Spiffe,
        Provider {
            name: "spire-prod",
            issuer: "https://spire.prod.acme.example",
        },
    ),
];

/// A workload: who calls.
#[derive(Debug, Clone)]
pub struct Workload {
    pub name: String,
    pub platform: Platform,
    pub provider: Provider,
    pub team: usize,
    /// The service number, which names its repository, service account or workspace.
    pub service: usize,
    /// The `sub` values its tokens carry, the most frequent first.
    pub subjects: Vec<String>,
}

impl Workload {
    /// `svc-00042`.
    pub fn service_name(&self) -> String {
        format!("svc-{:05}", self.service)
    }

    /// `team-0012`.
    pub fn team_name(&self) -> String {
        format!("team-{:04}", self.team)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Protocol {
    Https,
    Http,
    Postgres,
}

impl Protocol {
    pub fn keyword(self) -> &'static str {
        match self {
            Protocol::Https => "https",
            Protocol::Http => "http",
            Protocol::Postgres => "postgres",
        }
    }
}

/// A target: what is reached.
#[derive(Debug, Clone)]
pub struct Target {
    pub name: String,
    pub protocol: Protocol,
    pub host: String,
    pub port: u16,
    pub path_prefix: Option<String>,
    pub database: Option<String>,
    /// The index of the credential its permits hand out, if any.
    pub credential: Option<usize>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CredentialKind {
    Jwt,
    PostgresRole,
    OauthClientCredentials,
    Static,
}

impl CredentialKind {
    /// The keyword Gate and the `credential_provider` column use.
    pub fn keyword(self) -> &'static str {
        match self {
            CredentialKind::Jwt => "jwt",
            CredentialKind::PostgresRole => "postgres_role",
            CredentialKind::OauthClientCredentials => "oauth_client_credentials",
            CredentialKind::Static => "static",
        }
    }
}

#[derive(Debug, Clone)]
pub struct Credential {
    pub name: String,
    pub kind: CredentialKind,
    /// Seconds; none for a static secret.
    pub ttl_s: Option<u64>,
    /// The audience, role or variable it names.
    pub source: String,
}

/// What a rule's `when` tests, by a named condition or none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    Always,
    Reads,
    Writes,
}

impl When {
    /// The named condition it reads, as the `conditions` column lists it.
    pub fn condition(self) -> Option<&'static str> {
        match self {
            When::Always => None,
            When::Reads => Some("reads"),
            When::Writes => Some("writes"),
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Severity {
    Low,
    Medium,
    High,
    Critical,
}

impl Severity {
    pub fn keyword(self) -> &'static str {
        match self {
            Severity::Low => "low",
            Severity::Medium => "medium",
            Severity::High => "high",
            Severity::Critical => "critical",
        }
    }
}

/// A permit of one workload on one target.
#[derive(Debug, Clone)]
pub struct Permit {
    pub name: String,
    pub workload: usize,
    pub target: usize,
    pub credential: Option<usize>,
    pub when: When,
    pub description: Option<String>,
    pub severity: Option<Severity>,
    /// Which policy versions hold it: some are added by the second, some dropped by it.
    pub in_first: bool,
    pub in_second: bool,
}

/// An organisation-wide forbid, on every workload of one platform.
#[derive(Debug, Clone)]
pub struct Forbid {
    pub name: &'static str,
    pub platform: Platform,
    /// The Gate `when` expression.
    pub when: &'static str,
    pub description: &'static str,
    pub severity: Severity,
}

/// The forbids of both versions, one per platform whose tokens can carry what they refuse.
pub const FORBIDS: [Forbid; 3] = [
    Forbid {
        name: "no_pull_request_target",
        platform: Platform::Github,
        when: "client.github.event_name == \"pull_request_target\"",
        description: "pull_request_target runs a fork's code with the base repository's secrets",
        severity: Severity::Critical,
    },
    Forbid {
        name: "no_unprotected_gitlab_refs",
        platform: Platform::Gitlab,
        when: "client.gitlab.ref_protected == \"false\"",
        description: "only protected refs reach anything",
        severity: Severity::High,
    },
    Forbid {
        name: "no_terraform_plan_writes",
        platform: Platform::Terraform,
        when: "client.terraform.terraform_run_phase == \"plan\" && writes",
        description: "plan runs read; only apply runs change things",
        severity: Severity::High,
    },
];

/// How big the organisation is.
#[derive(Debug, Clone, Copy)]
pub struct Sizes {
    pub workloads: usize,
    pub targets: usize,
}

/// The whole generated organisation.
#[derive(Debug, Clone)]
pub struct Org {
    pub workloads: Vec<Workload>,
    pub targets: Vec<Target>,
    pub credentials: Vec<Credential>,
    pub permits: Vec<Permit>,
    /// Per workload, the indices of its permits.
    pub permits_of: Vec<Vec<usize>>,
}

/// Targets every team uses, besides its own.
const SHARED_TARGETS: [(&str, Protocol, &str); 8] = [
    ("artifacts", Protocol::Https, "artifacts.acme.internal"),
    ("secrets_api", Protocol::Https, "secrets.acme.internal"),
    ("metrics_push", Protocol::Https, "metrics.acme.internal"),
    (
        "container_registry",
        Protocol::Https,
        "registry.acme.internal",
    ),
    ("config_db", Protocol::Postgres, "config.db.acme.internal"),
    ("feature_flags", Protocol::Https, "flags.acme.internal"),
    ("audit_sink", Protocol::Http, "audit-sink.acme.internal"),
    ("package_mirror", Protocol::Http, "mirror.acme.internal"),
];

/// Workloads per team, and so how many teams there are.
const WORKLOADS_PER_TEAM: usize = 10;

impl Org {
    pub fn generate(sizes: Sizes, rng: &mut Rng) -> Org {
        let mut targets = Vec::with_capacity(sizes.targets);
        let mut credentials = Vec::new();
        for (name, protocol, host) in SHARED_TARGETS.into_iter().take(sizes.targets) {
            let mut target = target(name.to_owned(), protocol, host.to_owned());
            target.credential = Some(credential_for(&target, &mut credentials, rng));
            targets.push(target);
        }
        while targets.len() < sizes.targets {
            let mut target = team_target(targets.len(), rng);
            if !(target.protocol == Protocol::Http && rng.chance(600)) {
                target.credential = Some(credential_for(&target, &mut credentials, rng));
            }
            targets.push(target);
        }
        let workloads: Vec<Workload> = (0..sizes.workloads).map(|idx| workload(idx, rng)).collect();
        let mut org = Org {
            permits_of: vec![Vec::new(); workloads.len()],
            workloads,
            targets,
            credentials,
            permits: Vec::new(),
        };
        for idx in 0..org.workloads.len() {
            org.add_permits(idx, rng);
        }
        org
    }

    /// The permits of `workload` in the given policy version.
    pub fn permits_in(&self, workload: usize, second: bool) -> impl Iterator<Item = &Permit> {
        self.permits_of
            .get(workload)
            .into_iter()
            .flatten()
            .filter_map(|&idx| self.permits.get(idx))
            .filter(move |permit| {
                if second {
                    permit.in_second
                } else {
                    permit.in_first
                }
            })
    }

    /// One to four permits: the team's own targets first, then shared ones.
    fn add_permits(&mut self, workload: usize, rng: &mut Rng) {
        let n_permits = 1 + rng.below(4);
        let team = self.workloads.get(workload).map_or(0, |w| w.team);
        let n_shared = SHARED_TARGETS.len().min(self.targets.len());
        let n_own = self.targets.len() - n_shared;
        let mut chosen: Vec<usize> = Vec::with_capacity(n_permits);
        for attempt in 0..n_permits * 3 {
            if chosen.len() == n_permits {
                break;
            }
            let target = if attempt == 0 || rng.chance(550) || n_shared == 0 {
                // A team's targets are a neighbourhood of the target list.
                n_shared + (team * 3 + rng.below(4)) % n_own.max(1)
            } else {
                rng.below(n_shared)
            };
            if target < self.targets.len() && !chosen.contains(&target) {
                chosen.push(target);
            }
        }
        for target in chosen {
            self.add_permit(workload, target, rng);
        }
    }

    fn add_permit(&mut self, workload: usize, target_idx: usize, rng: &mut Rng) {
        let (Some(caller), Some(target)) =
            (self.workloads.get(workload), self.targets.get(target_idx))
        else {
            return;
        };
        let when = match (target.protocol, rng.below(100)) {
            (Protocol::Postgres, _) | (_, 0..45) => When::Always,
            (_, 45..85) => When::Reads,
            _ => When::Writes,
        };
        let verb = match when {
            When::Always => "uses",
            When::Reads => "reads",
            When::Writes => "writes",
        };
        let name = format!("{}_{verb}_{}", caller.name, target.name);
        let credential = target.credential.filter(|_| rng.chance(850));
        let description = rng.chance(300).then(|| {
            format!(
                "{} of {} {verb} {}",
                caller.service_name(),
                caller.team_name(),
                target.name
            )
        });
        let severity = rng.chance(350).then(|| match rng.below(100) {
            0..40 => Severity::Low,
            40..75 => Severity::Medium,
            75..95 => Severity::High,
            _ => Severity::Critical,
        });
        // About 3 % of the permits come with the second version, 1 % leave with it.
        let (in_first, in_second) = match rng.below(100) {
            0..3 => (false, true),
            3..4 => (true, false),
            _ => (true, true),
        };
        let idx = self.permits.len();
        self.permits.push(Permit {
            name,
            workload,
            target: target_idx,
            credential,
            when,
            description,
            severity,
            in_first,
            in_second,
        });
        if let Some(list) = self.permits_of.get_mut(workload) {
            list.push(idx);
        }
    }
}

fn target(name: String, protocol: Protocol, host: String) -> Target {
    let port = match protocol {
        Protocol::Https => 443,
        Protocol::Http => 8080,
        Protocol::Postgres => 5432,
    };
    Target {
        name,
        protocol,
        host,
        port,
        path_prefix: None,
        database: None,
        credential: None,
    }
}

/// A team's API or database, half of them in production.
fn team_target(idx: usize, rng: &mut Rng) -> Target {
    let env = if rng.chance(500) { "prod" } else { "staging" };
    match rng.below(100) {
        0..60 => {
            let mut api = target(
                format!("api_{idx:04}"),
                Protocol::Https,
                format!("svc-{idx:04}.api.{env}.acme.internal"),
            );
            api.path_prefix = rng.chance(500).then(|| "/v1/".to_owned());
            api
        }
        60..90 => {
            let mut db = target(
                format!("db_{idx:04}"),
                Protocol::Postgres,
                format!("db-{idx:04}.{env}.acme.internal"),
            );
            db.database = Some(format!("app_{idx:04}"));
            db
        }
        _ => target(
            format!("web_{idx:04}"),
            Protocol::Http,
            format!("web-{idx:04}.{env}.acme.internal"),
        ),
    }
}

/// The credential a target's permits hand out: a short-lived token for an API, a role for a
/// database, now and then a partner's OAuth client or a legacy static secret.
fn credential_for(target: &Target, credentials: &mut Vec<Credential>, rng: &mut Rng) -> usize {
    let (suffix, kind, ttl_s, source) = match target.protocol {
        Protocol::Postgres => (
            "role",
            CredentialKind::PostgresRole,
            Some(*rng.pick(&[900, 1800, 3600]).unwrap_or(&900)),
            format!("{}_rw", target.name),
        ),
        Protocol::Https if rng.chance(60) => (
            "client",
            CredentialKind::OauthClientCredentials,
            Some(3600),
            "https://idp.partner.example/oauth2/token".to_owned(),
        ),
        Protocol::Https => (
            "token",
            CredentialKind::Jwt,
            Some(*rng.pick(&[300, 900, 900, 3600]).unwrap_or(&900)),
            target.name.clone(),
        ),
        Protocol::Http => (
            "key",
            CredentialKind::Static,
            None,
            format!("{}_KEY", target.name.to_uppercase()),
        ),
    };
    credentials.push(Credential {
        name: format!("{}_{suffix}", target.name),
        kind,
        ttl_s,
        source,
    });
    credentials.len() - 1
}

fn workload(idx: usize, rng: &mut Rng) -> Workload {
    let platform = Platform::draw(rng);
    let providers: Vec<Provider> = PROVIDERS
        .iter()
        .filter(|(kind, _)| *kind == platform)
        .map(|(_, provider)| *provider)
        .collect();
    let provider = rng.pick(&providers).copied().unwrap_or(GITHUB_ACTIONS);
    let mut workload = Workload {
        name: format!("{}_svc_{idx:05}", platform.prefix()),
        platform,
        provider,
        team: idx / WORKLOADS_PER_TEAM,
        service: idx,
        subjects: Vec::new(),
    };
    workload.subjects = subjects(&workload);
    workload
}

/// The `sub` values a workload's tokens carry, the most frequent first.
fn subjects(workload: &Workload) -> Vec<String> {
    let service = workload.service_name();
    let team = workload.team_name();
    match workload.platform {
        Platform::Github => vec![
            format!("repo:acme/{service}:ref:refs/heads/main"),
            format!("repo:acme/{service}:environment:production"),
            format!("repo:acme/{service}:pull_request"),
        ],
        Platform::Gitlab => vec![
            format!("project_path:acme/{team}/{service}:ref_type:branch:ref:main"),
            format!("project_path:acme/{team}/{service}:ref_type:tag:ref:release"),
        ],
        Platform::Kubernetes => vec![format!("system:serviceaccount:{team}:{service}")],
        Platform::Terraform => vec![
            format!("organization:acme:project:{team}:workspace:{service}:run_phase:apply"),
            format!("organization:acme:project:{team}:workspace:{service}:run_phase:plan"),
        ],
        Platform::Spiffe => vec![format!("spiffe://prod.acme.example/ns/{team}/sa/{service}")],
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn org() -> Org {
        Org::generate(
            Sizes {
                workloads: 200,
                targets: 40,
            },
            &mut Rng::new(5),
        )
    }

    #[test]
    fn every_workload_has_a_permit_in_each_version_or_close() {
        let org = org();
        assert_eq!(org.workloads.len(), 200);
        assert_eq!(org.targets.len(), 40);
        let with_permits = (0..200).filter(|&w| org.permits_in(w, true).count() > 0);
        assert!(with_permits.count() > 190);
    }

    #[test]
    fn names_are_unique() {
        let org = org();
        let mut names: Vec<&str> = org
            .workloads
            .iter()
            .map(|w| w.name.as_str())
            .chain(org.targets.iter().map(|t| t.name.as_str()))
            .chain(org.credentials.iter().map(|c| c.name.as_str()))
            .chain(org.permits.iter().map(|p| p.name.as_str()))
            .collect();
        let before = names.len();
        names.sort_unstable();
        names.dedup();
        assert_eq!(names.len(), before);
    }
}
