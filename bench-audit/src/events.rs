//! Access events as the decision API would record them for the generated organisation.
//!
//! In: an [`Org`], the two bundles' hashes, a seed, and for each event the time of its
//! request (claims carry `iat`/`exp` around it). Out: [`NewEvent`]s filled the way
//! `engine/src/api.rs` fills them — reason text and code, rule and its annotations, caller,
//! verified claims as JSON, target, credential, source address, named conditions, latency —
//! in a realistic mix: most requests follow a permit, some are forbidden, some name a target
//! their workload has no permit for or no declared target at all, a few come from callers that
//! are no workload, and a few tokens fail attestation.
//!
//! Traffic is skewed: a few busy workloads make most requests. Requests of one workload in
//! the same half hour share a CI job or pod (its commit, run id, token hash, address), as they
//! do in life, which is what makes the `claims` column compress the way it really does.

use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};

use portcullis_audit::{ConditionOutcome, Decision, EventKind, NewEvent};

use crate::model::{
    FORBIDS, Forbid, GITHUB_ACTIONS, Org, Permit, Platform, Protocol, Target, When, Workload,
};
use crate::rng::Rng;

/// How a generated request ended, for the report's mix.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Outcome {
    Permitted,
    Forbidden,
    NoPermit,
    UnknownTarget,
    PathOutsidePrefix,
    AttestationFailed,
    PolicyChange,
}

impl Outcome {
    pub const ALL: [Outcome; 7] = [
        Outcome::Permitted,
        Outcome::Forbidden,
        Outcome::NoPermit,
        Outcome::UnknownTarget,
        Outcome::PathOutsidePrefix,
        Outcome::AttestationFailed,
        Outcome::PolicyChange,
    ];

    /// The `reason_code` family it stands for.
    pub fn label(self) -> &'static str {
        match self {
            Outcome::Permitted => "permitted",
            Outcome::Forbidden => "forbidden",
            Outcome::NoPermit => "no_permit",
            Outcome::UnknownTarget => "unknown_target",
            Outcome::PathOutsidePrefix => "path_outside_prefix",
            Outcome::AttestationFailed => "attestation failures",
            Outcome::PolicyChange => "policy_change",
        }
    }
}

/// Counts of each outcome, and the bytes of the `claims` text, over what was generated.
#[derive(Debug, Clone, Default)]
pub struct Mix {
    pub counts: [u64; Outcome::ALL.len()],
    pub claims_bytes: u64,
    pub events: u64,
}

impl Mix {
    fn add(&mut self, outcome: Outcome, event: &NewEvent) {
        if let Some(slot) = Outcome::ALL
            .iter()
            .position(|known| *known == outcome)
            .and_then(|idx| self.counts.get_mut(idx))
        {
            *slot += 1;
        }
        self.claims_bytes += event
            .claims
            .as_ref()
            .map_or(0, |claims| claims.len() as u64);
        self.events += 1;
    }
}

/// Callers that are no workload: repositories nobody wrote a workload for.
const STRANGERS: usize = 50;
/// Target names nobody declared: old clients still asking for retired services.
const RETIRED_TARGETS: usize = 20;
/// Requests of one workload within this many seconds share a job (commit, run, token).
const JOB_SECONDS: i64 = 1_800;

/// Draws events for the organisation.
#[derive(Debug)]
pub struct EventGen<'a> {
    org: &'a Org,
    rng: Rng,
    seed: u64,
    hashes: [String; 2],
    /// Whether the second policy version is in effect.
    second: bool,
    strangers: Vec<Workload>,
    pub mix: Mix,
}

impl<'a> EventGen<'a> {
    pub fn new(org: &'a Org, hashes: [String; 2], seed: u64) -> EventGen<'a> {
        let strangers = (0..STRANGERS)
            .map(|idx| {
                let service = 90_000 + idx;
                Workload {
                    name: String::new(),
                    platform: Platform::Github,
                    provider: GITHUB_ACTIONS,
                    team: 9_000 + idx,
                    service,
                    subjects: vec![format!("repo:acme/svc-{service:05}:ref:refs/heads/main")],
                }
            })
            .collect();
        EventGen {
            org,
            rng: Rng::new(seed),
            seed,
            hashes,
            second: false,
            strangers,
            mix: Mix::default(),
        }
    }

    /// Puts the second policy version in effect (or the first back).
    pub fn use_second(&mut self, second: bool) {
        self.second = second;
    }

    fn bundle_hash(&self) -> String {
        let [first, second] = &self.hashes;
        if self.second { second } else { first }.clone()
    }

    /// The `policy_change` event of the version now in effect, as the server records it at
    /// startup (first version) or on a reload that replaced it (second).
    pub fn policy_change(&mut self) -> NewEvent {
        let [first, second] = &self.hashes;
        let (code, reason, action) = if self.second {
            let reason = format!("bundle sha256:{second} replaced sha256:{first}");
            ("policy_replaced", reason, "watch")
        } else {
            let reason = format!("bundle sha256:{first} took effect at startup");
            ("policy_loaded", reason, "startup")
        };
        let event = NewEvent {
            kind: EventKind::PolicyChange,
            reason: Some(reason),
            reason_code: Some(code.to_owned()),
            bundle_hash: Some(self.bundle_hash()),
            action: Some(action.to_owned()),
            resource: Some("/etc/portcullis/policies".to_owned()),
            ..NewEvent::default()
        };
        self.mix.add(Outcome::PolicyChange, &event);
        event
    }

    /// One request's event, for a request made at `unix_s`.
    pub fn next(&mut self, unix_s: i64) -> NewEvent {
        if self.rng.chance(15) {
            let event = self.attestation_failure(unix_s);
            self.mix.add(Outcome::AttestationFailed, &event);
            return event;
        }
        let (outcome, event) = if self.rng.chance(30) {
            self.stranger(unix_s)
        } else {
            self.workload_request(unix_s)
        };
        self.mix.add(outcome, &event);
        event
    }

    /// A request by a caller the policy knows.
    fn workload_request(&mut self, unix_s: i64) -> (Outcome, NewEvent) {
        let org = self.org;
        let idx = self.rng.skewed(org.workloads.len());
        let Some(workload) = org.workloads.get(idx) else {
            return self.stranger(unix_s);
        };
        let permits: Vec<&Permit> = org.permits_in(idx, self.second).collect();
        let draw = self.rng.below(1000);
        let permit = match self.rng.pick(&permits) {
            Some(permit) if draw >= 110 => *permit,
            _ if draw < 40 => return self.unknown_target(workload, idx, unix_s),
            _ => return self.other_target(workload, idx, &permits, unix_s),
        };
        let Some(target) = org.targets.get(permit.target) else {
            return self.unknown_target(workload, idx, unix_s);
        };
        let mut event = self.caller_event(workload, idx, unix_s, target, permit.when);
        if target.path_prefix.is_some() && self.rng.chance(12) {
            return (Outcome::PathOutsidePrefix, outside_prefix(event, target));
        }
        if let Some(forbid) = self.forbid_for(workload, &event) {
            return (Outcome::Forbidden, forbidden(event, forbid));
        }
        self.permitted(&mut event, permit);
        (Outcome::Permitted, event)
    }

    /// Fills what a permit that decided adds: the rule, its annotations and conditions, and the
    /// credential it hands out.
    fn permitted(&mut self, event: &mut NewEvent, permit: &Permit) {
        event.decision = Some(Decision::Allow);
        event.reason = Some(format!("permitted by rule `{}`", permit.name));
        event.reason_code = Some("permitted".to_owned());
        event.rule = Some(permit.name.clone());
        event.rule_description = permit.description.clone();
        event.rule_severity = permit.severity.map(|s| s.keyword().to_owned());
        if let Some(name) = permit.when.condition() {
            event.conditions.push(ConditionOutcome {
                name: name.to_owned(),
                result: true,
            });
        }
        let credential = permit
            .credential
            .and_then(|idx| self.org.credentials.get(idx));
        if let Some(credential) = credential {
            event.credential_provider = Some(credential.kind.keyword().to_owned());
            event.credential_ttl_s = credential.ttl_s;
            event.credential_ref = Some(format!("hmac-sha256:{}", self.rng.hex(64)));
        }
    }

    /// Now and then a request that an organisation-wide forbid stops: a pull_request_target
    /// run, an unprotected GitLab ref, a Terraform plan run that writes.
    fn forbid_for(&mut self, workload: &Workload, event: &NewEvent) -> Option<&'static Forbid> {
        let forbid = FORBIDS.iter().find(|f| f.platform == workload.platform)?;
        let claims = event.claims.as_deref().unwrap_or_default();
        let applies = match workload.platform {
            Platform::Github => claims.contains("\"event_name\":\"pull_request_target\""),
            Platform::Gitlab => claims.contains("\"ref_protected\":\"false\""),
            Platform::Terraform => {
                claims.contains("\"terraform_run_phase\":\"plan\"")
                    && matches!(
                        event.action.as_deref(),
                        Some("POST" | "PUT" | "PATCH" | "DELETE")
                    )
            }
            Platform::Kubernetes | Platform::Spiffe => false,
        };
        applies.then_some(forbid)
    }

    /// The workload on a target it has no permit for (or, by chance, one it has).
    fn other_target(
        &mut self,
        workload: &Workload,
        idx: usize,
        permits: &[&Permit],
        unix_s: i64,
    ) -> (Outcome, NewEvent) {
        let org = self.org;
        let target_idx = self.rng.below(org.targets.len());
        let Some(target) = org.targets.get(target_idx) else {
            return self.unknown_target(workload, idx, unix_s);
        };
        let mut event = self.caller_event(workload, idx, unix_s, target, When::Always);
        if let Some(permit) = permits.iter().find(|p| p.target == target_idx) {
            self.permitted(&mut event, permit);
            return (Outcome::Permitted, event);
        }
        event.decision = Some(Decision::Deny);
        event.reason = Some(format!(
            "no permit rule allows workload `{}` on target `{}`",
            workload.name, target.name
        ));
        event.reason_code = Some("no_permit".to_owned());
        (Outcome::NoPermit, event)
    }

    fn unknown_target(
        &mut self,
        workload: &Workload,
        idx: usize,
        unix_s: i64,
    ) -> (Outcome, NewEvent) {
        let retired = format!("legacy_api_{:02}", self.rng.below(RETIRED_TARGETS));
        let mut event = NewEvent {
            workload: Some(workload.name.clone()),
            ..NewEvent::default()
        };
        self.describe_caller(&mut event, workload, idx, unix_s);
        event.decision = Some(Decision::Deny);
        event.reason = Some("the request names no declared target".to_owned());
        event.reason_code = Some("unknown_target".to_owned());
        event.target = Some(retired);
        event.action = Some("GET".to_owned());
        event.resource = Some("/".to_owned());
        (Outcome::UnknownTarget, event)
    }

    /// A caller whose token verified but who is no workload: denied with no rule.
    fn stranger(&mut self, unix_s: i64) -> (Outcome, NewEvent) {
        let org = self.org;
        let stranger_idx = self.rng.below(self.strangers.len());
        let target = self.rng.pick(&org.targets);
        let (Some(stranger), Some(target)) = (self.strangers.get(stranger_idx).cloned(), target)
        else {
            return (Outcome::NoPermit, NewEvent::default());
        };
        let job_key = org.workloads.len() + stranger_idx;
        let mut event = self.caller_event(&stranger, job_key, unix_s, target, When::Always);
        event.workload = None;
        event.decision = Some(Decision::Deny);
        event.reason = Some(format!(
            "no permit rule allows this caller on target `{}`",
            target.name
        ));
        event.reason_code = Some("no_permit".to_owned());
        (Outcome::NoPermit, event)
    }

    /// A token that did not verify: no identity, only what it said about itself.
    fn attestation_failure(&mut self, unix_s: i64) -> NewEvent {
        let org = self.org;
        let idx = self.rng.skewed(org.workloads.len());
        let workload = org.workloads.get(idx);
        let target = self.rng.pick(&org.targets);
        let (code, reason, provider) = match self.rng.below(100) {
            0..60 => ("token_expired", "the token has expired".to_owned(), true),
            60..75 => (
                "wrong_audience",
                "the token's audience is not one this trust provider accepts".to_owned(),
                true,
            ),
            75..85 => (
                "untrusted_issuer",
                "no trust provider is configured for issuer \
                 `https://token.actions.example-fork.invalid`"
                    .to_owned(),
                false,
            ),
            85..95 => (
                "bad_signature",
                "the token's signature does not verify".to_owned(),
                true,
            ),
            _ => (
                "missing_claim",
                "the token lacks the required claim `repository`".to_owned(),
                true,
            ),
        };
        let (issuer, subject) = match (workload, provider) {
            (Some(w), true) => (w.provider.issuer, w.subjects.first().cloned()),
            _ => ("https://token.actions.example-fork.invalid", None),
        };
        let subject = subject.unwrap_or_else(|| "repo:someone/fork:pull_request".to_owned());
        let mut job = self.job(idx, unix_s);
        NewEvent {
            kind: EventKind::AttestationFailed,
            decision: Some(Decision::Deny),
            reason: Some(format!("attestation failed: {reason}")),
            reason_code: Some(code.to_owned()),
            bundle_hash: Some(self.bundle_hash()),
            trust_provider: workload
                .filter(|_| provider)
                .map(|w| w.provider.name.to_owned()),
            claims: Some(format!(
                "{{\"iss\":\"{issuer}\",\"sub\":\"{subject}\",\"unverified\":true}}"
            )),
            target: target.map(|t| t.name.clone()),
            action: Some("GET".to_owned()),
            resource: Some("/".to_owned()),
            source_ip: Some(IpAddr::V4(Ipv4Addr::new(
                198,
                51,
                100,
                job.below(250) as u8 + 1,
            ))),
            latency_ns: Some(self.rng.between(8_000, 60_000)),
            evidence_sha256: Some(job.hex(64)),
            ..NewEvent::default()
        }
    }

    /// The event of `workload` calling `target`, before the decision: caller, claims, target
    /// and the request's action and resource.
    fn caller_event(
        &mut self,
        workload: &Workload,
        idx: usize,
        unix_s: i64,
        target: &Target,
        when: When,
    ) -> NewEvent {
        let mut event = NewEvent {
            workload: Some(workload.name.clone()),
            target: Some(target.name.clone()),
            protocol: Some(target.protocol.keyword().to_owned()),
            host: Some(target.host.clone()),
            port: Some(target.port),
            ..NewEvent::default()
        };
        self.describe_caller(&mut event, workload, idx, unix_s);
        let (action, resource) = self.request(target, when);
        event.action = Some(action.to_owned());
        event.resource = Some(resource);
        event
    }

    fn describe_caller(&mut self, event: &mut NewEvent, workload: &Workload, idx: usize, t: i64) {
        let subject_idx = match self.rng.below(100) {
            0..70 => 0,
            70..92 => 1,
            _ => 2,
        };
        let subject = workload
            .subjects
            .get(subject_idx)
            .or_else(|| workload.subjects.first())
            .cloned()
            .unwrap_or_default();
        let mut job = self.job(idx, t);
        let claims = claims(workload, &subject, t, &mut job, &mut self.rng);
        event.bundle_hash = Some(self.bundle_hash());
        event.trust_provider = Some(workload.provider.name.to_owned());
        event.issuer = Some(workload.provider.issuer.to_owned());
        event.subject = Some(subject);
        event.claims = Some(claims);
        event.source_ip = Some(source_ip(workload, &mut job));
        // One token per job: its uses share the hash.
        event.evidence_sha256 = Some(job.hex(64));
        event.latency_ns = Some(self.rng.between(15_000, 250_000));
    }

    /// What the request asks: an HTTP method and path, or `connect` and a database.
    fn request(&mut self, target: &Target, when: When) -> (&'static str, String) {
        if target.protocol == Protocol::Postgres {
            let database = target.database.clone().unwrap_or_else(|| "app".to_owned());
            return ("connect", database);
        }
        let method = match (when, self.rng.below(100)) {
            (When::Reads, 0..85) | (When::Always, 0..70) => "GET",
            (When::Reads, _) => "HEAD",
            (When::Writes | When::Always, 0..80) => "POST",
            (When::Writes | When::Always, 80..92) => "PUT",
            (When::Writes | When::Always, 92..97) => "PATCH",
            (When::Writes | When::Always, _) => "DELETE",
        };
        const NOUNS: [&str; 8] = [
            "orders",
            "invoices",
            "reports",
            "artifacts",
            "builds",
            "users",
            "flags",
            "metrics",
        ];
        let noun = self.rng.pick(&NOUNS).copied().unwrap_or("orders");
        let prefix = target.path_prefix.as_deref().unwrap_or("/api/");
        let path = format!("{prefix}{noun}/{}", self.rng.below(100_000));
        (method, path)
    }

    /// The generator of one job: the same for every request of a workload in the same half
    /// hour.
    fn job(&self, workload: usize, unix_s: i64) -> Rng {
        let slot = unix_s.div_euclid(JOB_SECONDS) as u64;
        let key = (workload as u64).wrapping_mul(0x9e37_79b9) ^ slot.wrapping_mul(0x85eb_ca6b);
        Rng::new(self.seed ^ key)
    }
}

fn outside_prefix(mut event: NewEvent, target: &Target) -> NewEvent {
    let prefix = target.path_prefix.as_deref().unwrap_or("/");
    event.decision = Some(Decision::Deny);
    event.reason = Some(format!(
        "the resource is outside the path prefix `{prefix}` of target `{}`",
        target.name
    ));
    event.reason_code = Some("path_outside_prefix".to_owned());
    event.resource = Some("/admin/config".to_owned());
    event
}

fn forbidden(mut event: NewEvent, forbid: &Forbid) -> NewEvent {
    event.decision = Some(Decision::Deny);
    event.reason = Some(format!("forbidden by rule `{}`", forbid.name));
    event.reason_code = Some("forbidden".to_owned());
    event.rule = Some(forbid.name.to_owned());
    event.rule_description = Some(forbid.description.to_owned());
    event.rule_severity = Some(forbid.severity.keyword().to_owned());
    event
}

/// The caller's address: a hosted runner's public address, a pod's, a private runner's.
fn source_ip(workload: &Workload, job: &mut Rng) -> IpAddr {
    let octet = |rng: &mut Rng| rng.below(254) as u8 + 1;
    match workload.platform {
        Platform::Github => IpAddr::V4(Ipv4Addr::new(20, octet(job), octet(job), octet(job))),
        Platform::Gitlab => IpAddr::V4(Ipv4Addr::new(10, 200, octet(job), octet(job))),
        Platform::Kubernetes => IpAddr::V4(Ipv4Addr::new(
            10,
            (workload.team % 200) as u8 + 20,
            octet(job),
            octet(job),
        )),
        Platform::Terraform => IpAddr::V4(Ipv4Addr::new(52, 86, octet(job), octet(job))),
        Platform::Spiffe => IpAddr::V6(Ipv6Addr::new(
            0xfd00,
            0xac3e,
            0,
            workload.team as u16,
            0,
            0,
            job.below(0xffff) as u16,
            job.below(0xffff) as u16,
        )),
    }
}

/// The verified claims as the attestor hands them to the event: the token's payload as
/// compact JSON with its keys sorted (as `serde_json` writes a map).
fn claims(workload: &Workload, subject: &str, t: i64, job: &mut Rng, rng: &mut Rng) -> String {
    let iat = t - rng.between(1, 240) as i64;
    let jti = uuid_text(rng);
    let service = workload.service_name();
    let team = workload.team_name();
    let iss = workload.provider.issuer;
    match workload.platform {
        Platform::Github => github_claims(workload, subject, iat, &jti, job),
        Platform::Gitlab => gitlab_claims(workload, subject, iat, &jti, job),
        Platform::Kubernetes => {
            let pod = format!("{service}-{}-{}", job.hex(9), job.hex(5));
            let node = format!(
                "ip-10-{}-{}-{}.ec2.internal",
                job.below(250),
                job.below(250),
                7
            );
            format!(
                "{{\"aud\":[\"portcullis\"],\"exp\":{},\"iat\":{iat},\"iss\":\"{iss}\",\
                 \"jti\":\"{jti}\",\"kubernetes.io\":{{\"namespace\":\"{team}\",\"node\":\
                 {{\"name\":\"{node}\",\"uid\":\"{}\"}},\"pod\":{{\"name\":\"{pod}\",\"uid\":\
                 \"{}\"}},\"serviceaccount\":{{\"name\":\"{service}\",\"uid\":\"{}\"}}}},\
                 \"nbf\":{iat},\"sub\":\"{subject}\"}}",
                iat + 3600,
                uuid_text(job),
                uuid_text(job),
                uuid_text(&mut Rng::new(workload.service as u64)),
            )
        }
        Platform::Terraform => {
            let phase = if subject.ends_with(":plan") {
                "plan"
            } else {
                "apply"
            };
            format!(
                "{{\"aud\":\"aws.workload.identity\",\"exp\":{},\"iat\":{iat},\"iss\":\"{iss}\",\
                 \"jti\":\"{jti}\",\"nbf\":{iat},\"sub\":\"{subject}\",\
                 \"terraform_full_workspace\":\"organization:acme:project:{team}:workspace:\
                 {service}\",\"terraform_organization_id\":\"org-Wq3CzG7kT1bN5x8v\",\
                 \"terraform_organization_name\":\"acme\",\"terraform_project_id\":\"prj-{}\",\
                 \"terraform_project_name\":\"{team}\",\"terraform_run_id\":\"run-{}\",\
                 \"terraform_run_phase\":\"{phase}\",\"terraform_workspace_id\":\"ws-{}\",\
                 \"terraform_workspace_name\":\"{service}\"}}",
                iat + 1200,
                Rng::new(workload.team as u64).hex(16),
                job.hex(16),
                Rng::new(workload.service as u64).hex(16),
            )
        }
        Platform::Spiffe => format!(
            "{{\"aud\":[\"portcullis\"],\"exp\":{},\"iat\":{iat},\"iss\":\"{iss}\",\
             \"sub\":\"{subject}\"}}",
            iat + 300
        ),
    }
}

fn github_claims(workload: &Workload, subject: &str, iat: i64, jti: &str, job: &mut Rng) -> String {
    let service = workload.service_name();
    let iss = workload.provider.issuer;
    let (event_name, git_ref, environment) = if subject.ends_with(":pull_request") {
        let event = if job.chance(150) {
            "pull_request_target"
        } else {
            "pull_request"
        };
        (
            event,
            format!("refs/pull/{}/merge", job.below(5_000)),
            String::new(),
        )
    } else if subject.contains(":environment:") {
        (
            "push",
            "refs/heads/main".to_owned(),
            "\"environment\":\"production\",".to_owned(),
        )
    } else {
        ("push", "refs/heads/main".to_owned(), String::new())
    };
    let sha = job.hex(40);
    let workflow_sha = job.hex(40);
    let run_id = job.between(9_000_000_000, 9_999_999_999);
    let actor = job.below(400);
    format!(
        "{{\"actor\":\"dev-{actor}\",\"actor_id\":\"{}\",\"aud\":\"portcullis\",\"base_ref\":\"\",\
         {environment}\"event_name\":\"{event_name}\",\"exp\":{},\"head_ref\":\"\",\"iat\":{iat},\
         \"iss\":\"{iss}\",\"job_workflow_ref\":\"acme/{service}/.github/workflows/deploy.yml@\
         refs/heads/main\",\"job_workflow_sha\":\"{workflow_sha}\",\"jti\":\"{jti}\",\
         \"nbf\":{},\"ref\":\"{git_ref}\",\"ref_protected\":\"true\",\"ref_type\":\"branch\",\
         \"repository\":\"acme/{service}\",\"repository_id\":\"{}\",\"repository_owner\":\
         \"acme\",\"repository_owner_id\":\"4000\",\"repository_visibility\":\"private\",\
         \"run_attempt\":\"1\",\"run_id\":\"{run_id}\",\"run_number\":\"{}\",\
         \"runner_environment\":\"github-hosted\",\"sha\":\"{sha}\",\"sub\":\"{subject}\",\
         \"workflow\":\"deploy\",\"workflow_ref\":\"acme/{service}/.github/workflows/\
         deploy.yml@refs/heads/main\",\"workflow_sha\":\"{workflow_sha}\"}}",
        5_000_000 + actor,
        iat + 300,
        iat - 5,
        700_000_000 + workload.service,
        job.below(3_000),
    )
}

fn gitlab_claims(workload: &Workload, subject: &str, iat: i64, jti: &str, job: &mut Rng) -> String {
    let service = workload.service_name();
    let team = workload.team_name();
    let iss = workload.provider.issuer;
    let (git_ref, ref_type) = if subject.ends_with(":ref:main") {
        ("main", "branch")
    } else {
        ("release", "tag")
    };
    let protected = if job.chance(30) { "false" } else { "true" };
    let sha = job.hex(40);
    let user = job.below(300);
    format!(
        "{{\"aud\":\"portcullis\",\"ci_config_ref_uri\":\"gitlab.acme.example/acme/{team}/\
         {service}//.gitlab-ci.yml@refs/heads/main\",\"ci_config_sha\":\"{sha}\",\"exp\":{},\
         \"iat\":{iat},\"iss\":\"{iss}\",\"job_id\":\"{}\",\"jti\":\"{jti}\",\
         \"namespace_id\":\"{}\",\"namespace_path\":\"acme/{team}\",\"nbf\":{},\
         \"pipeline_id\":\"{}\",\"pipeline_source\":\"push\",\"project_id\":\"{}\",\
         \"project_path\":\"acme/{team}/{service}\",\"project_visibility\":\"internal\",\
         \"ref\":\"{git_ref}\",\"ref_path\":\"refs/heads/{git_ref}\",\
         \"ref_protected\":\"{protected}\",\"ref_type\":\"{ref_type}\",\
         \"runner_environment\":\"self-hosted\",\"runner_id\":{},\"sha\":\"{sha}\",\
         \"sub\":\"{subject}\",\"user_access_level\":\"developer\",\
         \"user_email\":\"dev-{user}@acme.example\",\"user_id\":\"{}\",\
         \"user_login\":\"dev-{user}\"}}",
        iat + 300,
        job.between(800_000_000, 899_999_999),
        10_000 + workload.team,
        iat - 5,
        job.between(100_000_000, 199_999_999),
        20_000 + workload.service,
        job.below(40),
        30_000 + user,
    )
}

/// A random UUID in its hyphenated text form.
fn uuid_text(rng: &mut Rng) -> String {
    let hex = rng.hex(32);
    let part = |range: std::ops::Range<usize>| hex.get(range).unwrap_or_default().to_owned();
    format!(
        "{}-{}-{}-{}-{}",
        part(0..8),
        part(8..12),
        part(12..16),
        part(16..20),
        part(20..32)
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sizes;

    #[test]
    fn events_are_realistic_and_valid_json() {
        let org = Org::generate(
            Sizes {
                workloads: 500,
                targets: 60,
            },
            &mut Rng::new(11),
        );
        let hashes = ["a".repeat(64), "b".repeat(64)];
        let mut events = EventGen::new(&org, hashes, 4);
        let mut allowed = 0;
        for idx in 0..20_000 {
            let event = events.next(1_790_000_000 + idx);
            if let Some(claims) = &event.claims {
                serde_json::from_str::<serde_json::Value>(claims).unwrap();
            }
            if event.decision == Some(Decision::Allow) {
                allowed += 1;
                assert!(event.rule.is_some());
            }
        }
        // Mostly allowed, with a real share of denials.
        assert!((14_000..19_500).contains(&allowed), "{allowed}");
        let mix = &events.mix;
        assert_eq!(mix.events, 20_000);
        assert!(mix.counts.iter().filter(|&&n| n > 0).count() >= 6);
        let average_claims = mix.claims_bytes / mix.events;
        assert!((300..1_500).contains(&average_claims), "{average_claims}");
    }
}
