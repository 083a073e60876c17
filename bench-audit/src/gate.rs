//! The Gate source of one version of the generated policy, and its bundle: what the server
//! would have run, archived in the store so that the policy-state tables (`rules`, …) hold
//! the rules the events name.
//!
//! In: an [`Org`] and which version. Out: a [`PolicyBundle`], the bundle's bytes and content
//! hash, compiled by the real compiler, so that a generated rule the language would refuse
//! stops the benchmark instead of reaching the tables.

use std::fmt::Write as _;

use anyhow::{Result, anyhow};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::{SourceFile, compile, render};

use crate::model::{CredentialKind, FORBIDS, Org, Permit, Platform, Workload};

/// Rules per source file, which keeps each file well under the compiler's 1 MiB per file.
const RULES_PER_FILE: usize = 2_000;

/// A compiled policy version.
#[derive(Debug, Clone)]
pub struct PolicyBundle {
    pub bytes: Vec<u8>,
    /// The SHA-256 content hash, lowercase hex: what `bundle_hash` holds.
    pub hash: String,
    pub rules: usize,
    pub source_bytes: usize,
}

/// Compiles version one (`second == false`) or two of the organisation's policy.
pub fn build(org: &Org, second: bool) -> Result<PolicyBundle> {
    let files = source(org, second);
    let source_bytes = files.iter().map(|file| file.text.len()).sum();
    let set = compile(&files).map_err(|diagnostics| {
        anyhow!(
            "the generated Gate policy does not compile:\n{}",
            render(&diagnostics, false)
        )
    })?;
    let bundle = Bundle::from_policy_set(&set)
        .map_err(|error| anyhow!("cannot build the bundle of the generated policy: {error}"))?;
    Ok(PolicyBundle {
        bytes: bundle.to_bytes(),
        hash: bundle.hash_hex(),
        rules: set.rules.len(),
        source_bytes,
    })
}

/// The policy as Gate source files.
pub fn source(org: &Org, second: bool) -> Vec<SourceFile> {
    let mut files = vec![
        SourceFile::new("workloads.gate", workloads(org)),
        SourceFile::new("targets.gate", targets(org)),
    ];
    let permits: Vec<String> = org
        .permits
        .iter()
        .filter(|permit| {
            if second {
                permit.in_second
            } else {
                permit.in_first
            }
        })
        .map(|permit| permit_text(org, permit))
        .collect();
    let mut first_file = forbids();
    for (idx, chunk) in permits.chunks(RULES_PER_FILE).enumerate() {
        let mut text = std::mem::take(&mut first_file);
        for permit in chunk {
            text.push_str(permit);
        }
        files.push(SourceFile::new(format!("rules-{idx:02}.gate"), text));
    }
    files
}

fn workloads(org: &Org) -> String {
    let mut text = String::new();
    for workload in &org.workloads {
        let _ = writeln!(
            text,
            "workload {} {{\n  {} {{ {} }}\n}}\n",
            workload.name,
            workload.platform.keyword(),
            identity(workload)
        );
    }
    text
}

/// The claim tests that identify a workload on its platform.
fn identity(workload: &Workload) -> String {
    let service = workload.service_name();
    let team = workload.team_name();
    match workload.platform {
        Platform::Github => format!("repository == \"acme/{service}\""),
        Platform::Kubernetes => {
            format!("namespace == \"{team}\" && service_account == \"{service}\"")
        }
        Platform::Gitlab => format!("project_path == \"acme/{team}/{service}\""),
        Platform::Terraform => format!(
            "terraform_organization_name == \"acme\" && terraform_workspace_name == \"{service}\""
        ),
        Platform::Spiffe => {
            format!("trust_domain == \"prod.acme.example\" && path == \"/ns/{team}/sa/{service}\"")
        }
    }
}

fn targets(org: &Org) -> String {
    let mut text = String::new();
    for target in &org.targets {
        let mut fields = format!("host = \"{}\" port = {}", target.host, target.port);
        if let Some(prefix) = &target.path_prefix {
            let _ = write!(fields, " path_prefix = \"{prefix}\"");
        }
        if let Some(database) = &target.database {
            let _ = write!(fields, " database = \"{database}\"");
        }
        let _ = writeln!(
            text,
            "target {} {{ {} {{ {fields} }} }}",
            target.name,
            target.protocol.keyword()
        );
    }
    text.push('\n');
    for credential in &org.credentials {
        let ttl = credential
            .ttl_s
            .map(|ttl| format!(" ttl = {ttl}s"))
            .unwrap_or_default();
        let body = match credential.kind {
            CredentialKind::Jwt => format!("audience = \"{}\"{ttl}", credential.source),
            CredentialKind::PostgresRole => format!("grant = [\"{}\"]{ttl}", credential.source),
            CredentialKind::OauthClientCredentials => format!(
                "token_url = \"{}\" client_id = \"portcullis\"{ttl}",
                credential.source
            ),
            CredentialKind::Static => format!("env = \"{}\"{ttl}", credential.source),
        };
        let _ = writeln!(
            text,
            "credential {} {{ {} {{ {body} }} }}",
            credential.name,
            credential.kind.keyword()
        );
    }
    // The named conditions the rules read; HTTP-only, so that a database permit never reads
    // them (its action is `connect`).
    text.push_str(concat!(
        "\ncondition reads { request.action in [\"GET\", \"HEAD\"] }\n",
        "condition writes { request.action in [\"POST\", \"PUT\", \"PATCH\", \"DELETE\"] }\n",
    ));
    text
}

fn forbids() -> String {
    let mut text = String::new();
    for forbid in FORBIDS {
        let _ = writeln!(
            text,
            "@description(\"{}\")\n@severity(\"{}\")\nforbid {} {{\n  workload any {}\n  \
             when {}\n}}\n",
            forbid.description,
            forbid.severity.keyword(),
            forbid.name,
            forbid.platform.keyword(),
            forbid.when
        );
    }
    text
}

fn permit_text(org: &Org, permit: &Permit) -> String {
    let mut text = String::new();
    if let Some(description) = &permit.description {
        let _ = writeln!(text, "@description(\"{description}\")");
    }
    if let Some(severity) = permit.severity {
        let _ = writeln!(text, "@severity(\"{}\")", severity.keyword());
    }
    let workload = org
        .workloads
        .get(permit.workload)
        .map_or("", |w| w.name.as_str());
    let target = org.targets.get(permit.target);
    let _ = writeln!(
        text,
        "permit {} {{\n  workload {workload}\n  target {}",
        permit.name,
        target.map_or("", |t| t.name.as_str())
    );
    if let Some(condition) = permit.when.condition() {
        let _ = writeln!(text, "  when {condition}");
    }
    let credential = permit.credential.and_then(|idx| org.credentials.get(idx));
    if let Some(credential) = credential {
        let _ = writeln!(text, "  credential {}", credential.name);
    }
    text.push_str("}\n\n");
    text
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::Sizes;
    use crate::rng::Rng;

    #[test]
    fn both_versions_compile_and_differ() {
        let sizes = Sizes {
            workloads: 300,
            targets: 50,
        };
        let org = Org::generate(sizes, &mut Rng::new(9));
        let first = build(&org, false).unwrap();
        let second = build(&org, true).unwrap();
        assert_ne!(first.hash, second.hash);
        let permits = |second: bool| {
            org.permits
                .iter()
                .filter(|p| if second { p.in_second } else { p.in_first })
                .count()
        };
        assert_eq!(first.rules, permits(false) + FORBIDS.len());
        assert_eq!(second.rules, permits(true) + FORBIDS.len());
    }
}
