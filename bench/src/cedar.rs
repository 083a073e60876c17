//! The model as Cedar policies, and the sample's requests as Cedar requests.
//!
//! The mapping: a caller is a principal entity whose type is its kind (`Github`, …) and whose
//! attributes are its claims; a target is a `Target` entity with `host`, `protocol` and `port`
//! attributes; the request's action is an `Action` entity of the same name; `resource` (the
//! path) and `time` (Unix seconds) are in the context. Cedar has no named workloads, so each
//! rule carries its workload's condition: `principal is KIND` in the scope for a workload of
//! one kind, else `(principal is KIND && …) || …` in a `when`. `request.action in [...]`
//! becomes `action in [Action::"…"]` in the scope, `workload any KIND` becomes
//! `principal is KIND`, and the other conditions become one `when` each; `target.host` is
//! guarded by `resource has host`, since an undeclared target has no entity. Gate's checker
//! guards optional claims with `has`, and so does the Cedar text, so no policy ever fails to
//! evaluate; [`CedarEngine::decide`] reports it if one does.

use std::collections::{HashMap, HashSet};
use std::fmt::Write as _;
use std::str::FromStr;

use anyhow::{Context as _, Result, bail};
use cedar_policy::{
    Authorizer, Context, Decision, Entities, Entity, EntityId, EntityTypeName, EntityUid,
    PolicySet, Request, RestrictedExpression,
};

use crate::model::{Alternative, Cond, EXPIRIES, Effect, Policy, Rule, Scope, Target, Test};
use crate::sample::{Claim, Req};

/// The policy set as Cedar text, one policy per rule, in the same order, each with its Gate
/// name as `@id`.
pub fn policies(policy: &Policy) -> String {
    let mut text = String::new();
    for rule in &policy.rules {
        self::rule(&mut text, policy, rule);
    }
    text
}

fn rule(text: &mut String, policy: &Policy, rule: &Rule) {
    let effect = match rule.effect {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    };
    let mut whens = Vec::new();
    let principal = match rule.scope {
        Scope::AnyOf(kind) => format!("principal is {}", kind.entity_type()),
        Scope::Workload(idx) => match policy.workloads.get(idx).map(|w| &w.alternatives[..]) {
            Some([alternative]) => {
                whens.push(tests(alternative));
                format!("principal is {}", alternative.kind.entity_type())
            }
            Some(alternatives) => {
                let each: Vec<String> = alternatives
                    .iter()
                    .map(|alternative| {
                        let kind = alternative.kind.entity_type();
                        format!("(principal is {kind} && {})", tests(alternative))
                    })
                    .collect();
                whens.push(each.join(" || "));
                "principal".to_owned()
            }
            None => "principal".to_owned(),
        },
    };
    let mut action = "action".to_owned();
    for cond in &rule.when {
        match cond {
            Cond::ActionIn(actions) => action = action_in(actions),
            other => whens.push(self::cond(other)),
        }
    }
    let resource = match rule.target.and_then(|idx| policy.targets.get(idx)) {
        Some(target) => format!("resource == Target::\"{}\"", target.name),
        None => "resource".to_owned(),
    };
    let _ = writeln!(text, "@id(\"{}\")", rule.name);
    let _ = write!(
        text,
        "{effect} (\n  {principal},\n  {action},\n  {resource}\n)"
    );
    for when in whens {
        let _ = write!(text, "\nwhen {{ {when} }}");
    }
    text.push_str(";\n\n");
}

fn action_in(actions: &[&str]) -> String {
    let uids: Vec<String> = actions.iter().map(|a| format!("Action::\"{a}\"")).collect();
    format!("action in [{}]", uids.join(", "))
}

fn tests(alternative: &Alternative) -> String {
    let tests: Vec<String> = alternative
        .tests
        .iter()
        .map(|test| match test {
            Test::Eq(claim, value) => format!("principal.{claim} == \"{value}\""),
            Test::Prefix(claim, prefix) => format!("principal.{claim} like \"{prefix}*\""),
            Test::PresentEq(claim, value) => {
                format!("principal has {claim} && principal.{claim} == \"{value}\"")
            }
        })
        .collect();
    tests.join(" && ")
}

fn cond(cond: &Cond) -> String {
    match cond {
        // [`rule`] puts it in the scope instead; as a condition it reads the same.
        Cond::ActionIn(actions) => action_in(actions),
        Cond::ResourcePrefix(prefix) => format!("context.resource like \"{prefix}*\""),
        Cond::Before(idx) => {
            let seconds = EXPIRIES.get(*idx).map_or(0, |(seconds, _)| *seconds);
            format!("context.time < {seconds}")
        }
        Cond::ClaimEq(_, claim, value) => format!("principal.{claim} == \"{value}\""),
        Cond::NotPresentEq(_, claim, value) => {
            format!("!(principal has {claim} && principal.{claim} == \"{value}\")")
        }
        // A request for an undeclared target has no `Target` entity, which `has` allows for.
        Cond::HostContains(text) => {
            format!("resource has host && resource.host like \"*{text}*\"")
        }
    }
}

/// Cedar's policy set and authorizer, with the sample's requests already in Cedar's form,
/// as an attestation layer in front of Cedar would build them.
pub struct CedarEngine {
    policies: PolicySet,
    authorizer: Authorizer,
    requests: Vec<(Request, Entities)>,
}

impl CedarEngine {
    pub fn new(policies: PolicySet, policy: &Policy, sample: &[Req]) -> Result<CedarEngine> {
        let targets: HashMap<&str, &Target> = policy
            .targets
            .iter()
            .map(|t| (t.name.as_str(), t))
            .collect();
        let requests = sample
            .iter()
            .map(|req| request(req, &targets))
            .collect::<Result<_>>()?;
        Ok(CedarEngine {
            policies,
            authorizer: Authorizer::new(),
            requests,
        })
    }

    /// Decides sample request `idx` (modulo the sample's size). An evaluation error in any
    /// policy is an error here: the mapping is meant never to produce one.
    pub fn decide(&self, idx: usize) -> Result<bool> {
        let Some((request, entities)) = self.requests.get(idx % self.requests.len().max(1)) else {
            bail!("no requests");
        };
        let response = self
            .authorizer
            .is_authorized(request, &self.policies, entities);
        if let Some(error) = response.diagnostics().errors().next() {
            bail!("cedar: {error}");
        }
        Ok(response.decision() == Decision::Allow)
    }
}

/// Parses Cedar policy text.
pub fn parse(text: &str) -> Result<PolicySet> {
    PolicySet::from_str(text).map_err(|errors| anyhow::anyhow!("cedar policies: {errors}"))
}

fn uid(entity_type: &str, id: &str) -> Result<EntityUid> {
    let entity_type = EntityTypeName::from_str(entity_type)
        .with_context(|| format!("cedar entity type `{entity_type}`"))?;
    Ok(EntityUid::from_type_name_and_id(
        entity_type,
        EntityId::new(id),
    ))
}

fn request(req: &Req, targets: &HashMap<&str, &Target>) -> Result<(Request, Entities)> {
    let caller = &req.caller;
    let subject = caller
        .claims
        .iter()
        .find_map(|(name, claim)| match (name, claim) {
            (&"sub", Claim::Str(value)) => Some(value.as_str()),
            _ => None,
        })
        .unwrap_or("anonymous");
    let principal = uid(caller.kind.entity_type(), subject)?;
    let attributes: HashMap<String, RestrictedExpression> = caller
        .claims
        .iter()
        .map(|(name, claim)| {
            let value = match claim {
                Claim::Str(text) => RestrictedExpression::new_string(text.clone()),
                Claim::Set(items) => RestrictedExpression::new_set(
                    items.iter().cloned().map(RestrictedExpression::new_string),
                ),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    let mut entities = vec![Entity::new(principal.clone(), attributes, HashSet::new())?];
    let resource = uid("Target", &req.target)?;
    if let Some(target) = targets.get(req.target.as_str()) {
        let attributes = HashMap::from([
            (
                "host".to_owned(),
                RestrictedExpression::new_string(target.host.clone()),
            ),
            (
                "protocol".to_owned(),
                RestrictedExpression::new_string(target.protocol_keyword().to_owned()),
            ),
            (
                "port".to_owned(),
                RestrictedExpression::new_long(i64::from(target.port())),
            ),
        ]);
        entities.push(Entity::new(resource.clone(), attributes, HashSet::new())?);
    }
    let context = Context::from_pairs([
        (
            "resource".to_owned(),
            RestrictedExpression::new_string(req.resource.clone()),
        ),
        ("time".to_owned(), RestrictedExpression::new_long(req.time)),
    ])?;
    let action = uid("Action", req.action)?;
    let request = Request::new(principal, action, resource, context, None)?;
    Ok((request, Entities::from_entities(entities, None)?))
}
