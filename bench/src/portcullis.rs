//! The Portcullis side: Gate source compiled to a bundle and loaded into the VM, the typed IR
//! for the reference evaluator, and the sample's requests as both take them (claims typed and
//! indexed by claim id, as attestation produces them).

use anyhow::{Context as _, Result, anyhow};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::ir::PolicySet;
use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::vm::{Program, Request, TargetQuery};
use portcullis_lang::{SourceFile, compile, reference, render};

use crate::sample::{Claim, Req};

/// Parses and checks the policy set: Gate source to the typed IR.
pub fn check(files: &[SourceFile]) -> Result<PolicySet> {
    compile(files).map_err(|diagnostics| {
        anyhow!(
            "the generated Gate policy set does not compile:\n{}",
            render(&diagnostics, false)
        )
    })
}

/// The bundle file's bytes for a checked policy set.
pub fn bundle_bytes(set: &PolicySet) -> Result<Vec<u8>> {
    let bundle = Bundle::from_policy_set(set).context("building the bundle")?;
    Ok(bundle.to_bytes())
}

pub fn load(bytes: &[u8]) -> Result<Program> {
    Program::load(bytes).context("loading the bundle")
}

/// A request's owned parts, from which both evaluators borrow the [`Request`] they take.
#[derive(Debug)]
pub struct OwnedRequest {
    kind: ProviderKind,
    claims: Vec<Option<ClaimValue>>,
    target: String,
    action: &'static str,
    resource: String,
    time: i64,
}

impl OwnedRequest {
    pub fn new(req: &Req) -> Result<OwnedRequest> {
        let kind = req.caller.kind.provider();
        let mut claims = vec![None; kind.claims().len()];
        for (name, claim) in &req.caller.claims {
            let (id, _) = kind
                .claim(name)
                .with_context(|| format!("`{kind}` has no claim `{name}`"))?;
            let slot = claims
                .get_mut(usize::from(id.0))
                .with_context(|| format!("claim id of `{name}` out of range"))?;
            *slot = Some(match claim {
                Claim::Str(text) => ClaimValue::String(text.clone()),
                Claim::Set(items) => ClaimValue::StringSet(items.clone()),
            });
        }
        Ok(OwnedRequest {
            kind,
            claims,
            target: req.target.clone(),
            action: req.action,
            resource: req.resource.clone(),
            time: req.time,
        })
    }

    pub fn request(&self) -> Request<'_> {
        Request {
            kind: self.kind,
            claims: &self.claims,
            target: TargetQuery::Named(&self.target),
            action: Some(self.action),
            resource: Some(&self.resource),
            source_ip: None,
            time: Some(self.time),
        }
    }
}

/// What one evaluator decided, in the terms both share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Outcome {
    pub allow: bool,
    pub rule: Option<String>,
    pub credential: Option<String>,
    pub reason: &'static str,
}

pub fn vm_outcome(program: &Program, request: &Request<'_>) -> Outcome {
    let decision = program.decide(request);
    Outcome {
        allow: decision.allow,
        rule: decision.rule.map(str::to_owned),
        credential: decision.credential.map(|c| c.name.clone()),
        reason: decision.reason.code(),
    }
}

pub fn reference_outcome(set: &PolicySet, request: &Request<'_>) -> Outcome {
    let decision = reference::decide(set, request);
    let rule = decision.rule.and_then(|idx| set.rules.get(idx));
    let credential = decision
        .credential
        .and_then(|id| set.credentials.get(id.0 as usize));
    Outcome {
        allow: decision.allow,
        rule: rule.map(|rule| rule.name.clone()),
        credential: credential.map(|credential| credential.name.clone()),
        reason: decision.reason.code(),
    }
}
