//! Requests to decide, sampled from a [`Policy`] with a seed: mostly callers that are one of
//! the workloads, asking for a target one of their permits names, so that a sample mixes
//! allows, forbids and requests that no permit covers.
//!
//! Of every hundred requests, about: 55 follow a permit (its workload's caller, target,
//! usually an action and path it admits, usually before it expires); 20 are a workload's
//! caller on any target; 10 follow a permit with a caller that a forbid stops or that no
//! longer matches (a `pull_request_target` event, no environment, an unprotected ref, a plan
//! run); 10 come from callers that are no workload; 5 name a target that does not exist.

use crate::model::{Alternative, Effect, Identity, Kind, LATER, NOW, Policy, Scope, Test};
use crate::rng::Rng;

/// A claim value as a token carries it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    Str(String),
    Set(Vec<String>),
}

/// An attested caller: its kind and its claims, by name.
#[derive(Debug, Clone)]
pub struct Caller {
    pub kind: Kind,
    pub claims: Vec<(&'static str, Claim)>,
}

impl Caller {
    /// The claims every caller of `kind` carries, for the identity of workload `idx`.
    fn base(kind: Kind, idx: usize) -> Caller {
        let ids = Identity::of(idx);
        let pairs: Vec<(&'static str, String)> = match kind {
            Kind::Github => vec![
                (
                    "iss",
                    "https://token.actions.githubusercontent.com".to_owned(),
                ),
                (
                    "sub",
                    format!("repo:{}:ref:refs/heads/main", ids.repository),
                ),
                ("repository", ids.repository),
                ("repository_owner", "acme".to_owned()),
                ("ref", "refs/heads/main".to_owned()),
                ("sha", "8f2a3c4d5e6f708192a3b4c5d6e7f8091a2b3c4d".to_owned()),
                ("event_name", "push".to_owned()),
            ],
            Kind::Gitlab => vec![
                ("iss", "https://gitlab.acme.example".to_owned()),
                (
                    "sub",
                    format!("project_path:{}:ref_type:branch:ref:main", ids.project_path),
                ),
                ("project_path", ids.project_path),
                ("namespace_path", "acme/platform".to_owned()),
                ("ref", "main".to_owned()),
                ("ref_protected", "true".to_owned()),
                ("pipeline_source", "push".to_owned()),
            ],
            Kind::Kubernetes => vec![
                ("iss", "https://kubernetes.default.svc".to_owned()),
                (
                    "sub",
                    format!(
                        "system:serviceaccount:{}:{}",
                        ids.namespace, ids.service_account
                    ),
                ),
                ("namespace", ids.namespace),
                ("service_account", ids.service_account),
            ],
            Kind::Terraform => vec![
                ("iss", "https://app.terraform.io".to_owned()),
                (
                    "sub",
                    format!("organization:acme:workspace:{}", ids.workspace_id),
                ),
                ("terraform_organization_name", "acme".to_owned()),
                ("terraform_workspace_id", ids.workspace_id),
                ("terraform_run_phase", "apply".to_owned()),
            ],
            Kind::Spiffe => {
                let path = ids
                    .spiffe_id
                    .trim_start_matches("spiffe://prod.acme.example")
                    .to_owned();
                vec![
                    ("sub", ids.spiffe_id.clone()),
                    ("spiffe_id", ids.spiffe_id),
                    ("trust_domain", "prod.acme.example".to_owned()),
                    ("path", path),
                ]
            }
        };
        let mut claims: Vec<_> = pairs
            .into_iter()
            .map(|(name, value)| (name, Claim::Str(value)))
            .collect();
        claims.push(("aud", Claim::Set(vec!["portcullis".to_owned()])));
        Caller { kind, claims }
    }

    /// A caller that passes every test of `alternative` (of workload `idx`).
    fn matching(alternative: &Alternative, idx: usize) -> Caller {
        let mut caller = Caller::base(alternative.kind, idx);
        for test in &alternative.tests {
            match test {
                Test::Eq(claim, value) | Test::PresentEq(claim, value) => {
                    caller.set(claim, value.clone());
                }
                Test::Prefix(claim, prefix) => caller.set(claim, format!("{prefix}1.4.2")),
            }
        }
        caller
    }

    pub fn set(&mut self, name: &'static str, value: String) {
        self.remove(name);
        self.claims.push((name, Claim::Str(value)));
    }

    pub fn remove(&mut self, name: &str) {
        self.claims.retain(|(claim, _)| *claim != name);
    }

    fn has(&self, name: &str) -> bool {
        self.claims.iter().any(|(claim, _)| *claim == name)
    }
}

/// One request of the sample.
#[derive(Debug, Clone)]
pub struct Req {
    pub caller: Caller,
    /// The target's name; a few name no target.
    pub target: String,
    pub action: &'static str,
    pub resource: String,
    pub time: i64,
}

/// `count` requests sampled from `policy`, the same for the same seed.
pub fn requests(policy: &Policy, count: usize, seed: u64) -> Vec<Req> {
    let mut sampler = Sampler {
        rng: Rng::new(seed),
        policy,
        permits: policy.permits(),
    };
    (0..count).map(|_| sampler.request()).collect()
}

struct Sampler<'p> {
    rng: Rng,
    policy: &'p Policy,
    permits: Vec<usize>,
}

impl Sampler<'_> {
    fn request(&mut self) -> Req {
        match self.rng.below(100) {
            0..55 => self.following_permit(false),
            55..75 => {
                let workload = self.rng.below(self.policy.workloads.len());
                let target = self.rng.below(self.policy.targets.len());
                let caller = self.caller_of(workload);
                self.plain(caller, target)
            }
            75..85 => self.following_permit(true),
            85..95 => {
                let kind = *self.rng.pick(&KINDS).unwrap_or(&Kind::Github);
                // Identities past every workload's: the same claims, other values.
                let stranger = Caller::base(kind, 900_000 + self.rng.below(99_999));
                let target = self.rng.below(self.policy.targets.len());
                self.plain(stranger, target)
            }
            _ => {
                let workload = self.rng.below(self.policy.workloads.len());
                let caller = self.caller_of(workload);
                let mut request = self.plain(caller, 0);
                request.target = format!("unknown_{:05}", self.rng.below(100_000));
                request
            }
        }
    }

    /// A request that a permit covers, unless `spoiled`: then its caller carries what a
    /// forbid stops or what its workload does not accept.
    fn following_permit(&mut self, spoiled: bool) -> Req {
        let Some(rule) = self
            .rng
            .pick(&self.permits)
            .and_then(|idx| self.policy.rules.get(*idx))
        else {
            return self.plain(Caller::base(Kind::Github, 0), 0);
        };
        debug_assert_eq!(rule.effect, Effect::Permit);
        let (Scope::Workload(workload), Some(target_idx)) = (rule.scope, rule.target) else {
            return self.plain(Caller::base(Kind::Github, 0), 0);
        };
        let caller = self.caller_of(workload);
        let mut request = self.plain(caller, target_idx);
        if let Some(actions) = rule.actions().filter(|_| self.rng.chance(85)) {
            request.action = self.rng.pick(actions).copied().unwrap_or("GET");
        }
        if let Some(prefix) = rule.resource_prefix().filter(|_| self.rng.chance(85)) {
            request.resource = format!("{prefix}2026-q4.csv");
        }
        if spoiled {
            self.spoil(&mut request.caller);
        }
        request
    }

    fn spoil(&mut self, caller: &mut Caller) {
        match caller.kind {
            Kind::Github if self.rng.chance(50) => {
                caller.set("event_name", "pull_request_target".to_owned());
            }
            Kind::Github => caller.remove("environment"),
            Kind::Gitlab => caller.set("ref_protected", "false".to_owned()),
            Kind::Terraform => caller.set("terraform_run_phase", "plan".to_owned()),
            Kind::Kubernetes => caller.set("service_account", "default".to_owned()),
            Kind::Spiffe => caller.set("trust_domain", "dev.acme.example".to_owned()),
        }
    }

    /// A request of `caller` for the target at `target_idx`, with an action, path and time
    /// drawn at random.
    fn plain(&mut self, caller: Caller, target_idx: usize) -> Req {
        let target = self.policy.targets.get(target_idx);
        let actions = target.map_or(&["GET"][..], |t| t.actions());
        let resource = match target.and_then(|t| t.database.clone()) {
            Some(database) => database,
            None => format!("/v1/items/{}", self.rng.below(10_000)),
        };
        Req {
            caller,
            target: target.map(|t| t.name.clone()).unwrap_or_default(),
            action: self.rng.pick(actions).copied().unwrap_or("GET"),
            resource,
            time: if self.rng.chance(85) { NOW } else { LATER },
        }
    }

    /// A caller that is workload `idx`, through one of its alternatives, with the optional
    /// claims a real token of that kind may or may not carry.
    fn caller_of(&mut self, idx: usize) -> Caller {
        let Some(alternative) = self
            .policy
            .workloads
            .get(idx)
            .and_then(|w| self.rng.pick(&w.alternatives))
        else {
            return Caller::base(Kind::Github, idx);
        };
        let mut caller = Caller::matching(alternative, idx);
        match caller.kind {
            Kind::Github if !caller.has("environment") => match self.rng.below(100) {
                0..30 => caller.set("environment", "production".to_owned()),
                30..50 => caller.set("environment", "staging".to_owned()),
                _ => {}
            },
            Kind::Terraform if self.rng.chance(30) => {
                caller.set("terraform_run_phase", "plan".to_owned());
            }
            _ => {}
        }
        caller
    }
}

const KINDS: [Kind; 5] = [
    Kind::Github,
    Kind::Gitlab,
    Kind::Kubernetes,
    Kind::Terraform,
    Kind::Spiffe,
];
