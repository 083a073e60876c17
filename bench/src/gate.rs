//! The model as Gate source: targets and credentials in one file, then workloads and rules
//! in files of [`PER_FILE`] declarations, named so that path order is declaration order.

use std::fmt::Write as _;

use portcullis_lang::SourceFile;

use crate::model::{
    Alternative, Cond, EXPIRIES, Effect, Grant, Policy, Protocol, Rule, Scope, Test,
};

/// Declarations per file, which keeps each file far below Gate's 1 MiB limit.
pub const PER_FILE: usize = 1_000;

/// Every file of the policy set.
pub fn files(policy: &Policy) -> Vec<SourceFile> {
    let mut files = vec![SourceFile::new("targets.gate", targets(policy))];
    for (chunk_idx, chunk) in policy.workloads.chunks(PER_FILE).enumerate() {
        let mut text = String::new();
        for workload in chunk {
            let _ = writeln!(text, "workload {} {{", workload.name);
            for alternative in &workload.alternatives {
                let _ = writeln!(text, "  {}", self::alternative(alternative));
            }
            text.push_str("}\n\n");
        }
        files.push(SourceFile::new(
            format!("workloads-{chunk_idx:04}.gate"),
            text,
        ));
    }
    for (chunk_idx, chunk) in policy.rules.chunks(PER_FILE).enumerate() {
        let mut text = String::new();
        for rule in chunk {
            self::rule(&mut text, policy, rule);
        }
        files.push(SourceFile::new(format!("rules-{chunk_idx:04}.gate"), text));
    }
    files
}

fn targets(policy: &Policy) -> String {
    let mut text = String::new();
    for target in &policy.targets {
        let fields = match (&target.protocol, &target.database) {
            (Protocol::Postgres, Some(database)) => {
                format!("host = \"{}\" database = \"{database}\"", target.host)
            }
            _ => format!("host = \"{}\"", target.host),
        };
        let protocol = target.protocol_keyword();
        let _ = writeln!(
            text,
            "target {} {{\n  {protocol} {{ {fields} }}\n}}\n",
            target.name
        );
    }
    for credential in &policy.credentials {
        let block = match &credential.grant {
            Grant::Jwt { audience } => format!("jwt {{ audience = \"{audience}\" ttl = 15m }}"),
            Grant::PostgresRole { role } => {
                format!("postgres_role {{ grant = [\"{role}\"] ttl = 15m }}")
            }
        };
        let _ = writeln!(text, "credential {} {{\n  {block}\n}}\n", credential.name);
    }
    text
}

fn alternative(alternative: &Alternative) -> String {
    let tests: Vec<String> = alternative
        .tests
        .iter()
        .map(|test| match test {
            Test::Eq(claim, value) => format!("{claim} == \"{value}\""),
            Test::Prefix(claim, prefix) => format!("{claim} like \"{prefix}*\""),
            Test::PresentEq(claim, value) => {
                format!("has {claim} && {claim} == \"{value}\"")
            }
        })
        .collect();
    format!(
        "{} {{ {} }}",
        alternative.kind.keyword(),
        tests.join(" && ")
    )
}

fn rule(text: &mut String, policy: &Policy, rule: &Rule) {
    let keyword = match rule.effect {
        Effect::Permit => "permit",
        Effect::Forbid => "forbid",
    };
    let _ = writeln!(text, "{keyword} {} {{", rule.name);
    match rule.scope {
        Scope::Workload(idx) => {
            let name = policy.workloads.get(idx).map_or("", |w| w.name.as_str());
            let _ = writeln!(text, "  workload {name}");
        }
        Scope::AnyOf(kind) => {
            let _ = writeln!(text, "  workload any {}", kind.keyword());
        }
    }
    if let Some(target) = rule.target.and_then(|idx| policy.targets.get(idx)) {
        let _ = writeln!(text, "  target {}", target.name);
    }
    if !rule.when.is_empty() {
        let conds: Vec<String> = rule.when.iter().map(cond).collect();
        let _ = writeln!(text, "  when {}", conds.join(" && "));
    }
    if let Some(credential) = rule.credential.and_then(|idx| policy.credentials.get(idx)) {
        let _ = writeln!(text, "  credential {}", credential.name);
    }
    text.push_str("}\n\n");
}

fn cond(cond: &Cond) -> String {
    match cond {
        Cond::ActionIn(actions) => {
            let quoted: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
            format!("request.action in [{}]", quoted.join(", "))
        }
        Cond::ResourcePrefix(prefix) => format!("request.resource like \"{prefix}*\""),
        Cond::Before(idx) => {
            let timestamp = EXPIRIES.get(*idx).map_or("", |(_, text)| *text);
            format!("request.time < {timestamp}")
        }
        Cond::ClaimEq(kind, claim, value) => {
            format!("client.{}.{claim} == \"{value}\"", kind.keyword())
        }
        Cond::NotPresentEq(kind, claim, value) => {
            let read = format!("client.{}.{claim}", kind.keyword());
            format!("!(has {read} && {read} == \"{value}\")")
        }
        Cond::HostContains(text) => format!("target.host like \"*{text}*\""),
    }
}
