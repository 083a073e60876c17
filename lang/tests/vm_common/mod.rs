//! Setup the VM's integration tests share: a program compiled from Gate source and loaded the
//! way the server loads a bundle, claims by name, and a request for a named target.

#![allow(
    dead_code,
    reason = "each test crate that includes this module uses a different part of it"
)]

use portcullis_lang::bundle::Bundle;
use portcullis_lang::ir::PolicySet;
use portcullis_lang::schema::{ClaimType, ClaimValue, ProviderKind};
use portcullis_lang::vm::{Program, Request, TargetQuery};
use portcullis_lang::{SourceFile, compile, render};

/// Compiles `files`, and loads the program from the bytes of their bundle.
pub fn compiled(files: &[SourceFile]) -> (PolicySet, Program) {
    let set = compile(files).unwrap_or_else(|diags| panic!("{}", render(&diags, false)));
    let bytes = Bundle::from_policy_set(&set).unwrap().to_bytes();
    (set, Program::load(&bytes).unwrap())
}

pub fn program(files: &[SourceFile]) -> Program {
    compiled(files).1
}

/// The program of one file, `policy.gate`, holding `text`.
pub fn program_from_source(text: &str) -> Program {
    program(&[SourceFile::new("policy.gate", text)])
}

/// Claims of `kind`, indexed by claim id; a set of strings is given comma-separated.
pub fn claims(kind: ProviderKind, pairs: &[(&str, &str)]) -> Vec<Option<ClaimValue>> {
    let mut claims = vec![None; kind.claims().len()];
    for (name, value) in pairs {
        let (id, def) = kind.claim(name).unwrap();
        claims[usize::from(id.0)] = Some(match def.ty {
            ClaimType::StringSet => {
                ClaimValue::StringSet(value.split(',').map(str::to_owned).collect())
            }
            _ => ClaimValue::String((*value).to_owned()),
        });
    }
    claims
}

/// A request of a caller of `kind` for the target named `target`, at the Unix epoch, from no
/// known address.
pub fn request<'a>(
    kind: ProviderKind,
    claims: &'a [Option<ClaimValue>],
    target: &'a str,
    action: Option<&'a str>,
    resource: Option<&'a str>,
) -> Request<'a> {
    Request {
        kind,
        claims,
        target: TargetQuery::Named(target),
        action,
        resource,
        source_ip: None,
        time: Some(0),
    }
}
