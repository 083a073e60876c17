//! The model as Rego (package `portcullis`, Rego v1), and the sample's requests as inputs.
//!
//! The mapping keeps Gate's structure rule for rule: each workload is a boolean rule
//! `workload_NAME` with one body per alternative; each permit is one body of the rule
//! `permit` and each forbid one body of `forbid`, holding the target test, the workload (a
//! reference to its rule, or `input.kind == "…"` for `workload any KIND`) and each `when`
//! conjunct as one expression; `allow` holds when `permit` does and `forbid` does not.
//! Targets are the data document `data.targets`, which `target.host like "*.prod.*"` reads as
//! `contains(data.targets[input.target].host, ".prod.")`. `like "prefix*"` is
//! `startswith(…)`; `has c && c == v` is `input.claims.c == v`, which is undefined, and so
//! false, when the claim is absent; `!(has c && c == v)` is `not input.claims.c == v`.
//!
//! The input is `{"kind", "claims", "target", "action", "resource", "time"}`.

use std::fmt::Write as _;

use anyhow::{Result, anyhow, bail};
use regorus::languages::rego::compiler::Compiler;
use regorus::rvm::RegoVM;
use regorus::{CompiledPolicy, Engine, Value};
use serde_json::json;

use crate::model::{Alternative, Cond, EXPIRIES, Effect, Policy, Rule, Scope, Test};
use crate::sample::{Claim, Req};

/// The rule that decides.
pub const ENTRY_POINT: &str = "data.portcullis.allow";

/// Rules per module: regorus refuses a file of more than 20,000 lines by default.
const PER_MODULE: usize = 1_000;

const HEADER: &str = "package portcullis\n\nimport rego.v1\n\n";

/// Every module of the policy: (file name, Rego text).
pub fn modules(policy: &Policy) -> Vec<(String, String)> {
    let mut main = HEADER.to_owned();
    main.push_str("default allow := false\n\nallow if {\n\tpermit\n\tnot forbid\n}\n");
    let mut modules = vec![("allow.rego".to_owned(), main)];
    for (chunk_idx, chunk) in policy.workloads.chunks(PER_MODULE).enumerate() {
        let mut text = HEADER.to_owned();
        for workload in chunk {
            let _ = writeln!(text, "# workload {}", workload.name);
            for alternative in &workload.alternatives {
                let _ = writeln!(text, "workload_{} if {{", workload.name);
                self::alternative(&mut text, alternative);
                text.push_str("}\n\n");
            }
        }
        modules.push((format!("workloads-{chunk_idx:04}.rego"), text));
    }
    for (chunk_idx, chunk) in policy.rules.chunks(PER_MODULE).enumerate() {
        let mut text = HEADER.to_owned();
        for rule in chunk {
            self::rule(&mut text, policy, rule);
        }
        modules.push((format!("rules-{chunk_idx:04}.rego"), text));
    }
    modules
}

fn alternative(text: &mut String, alternative: &Alternative) {
    let _ = writeln!(text, "\tinput.kind == \"{}\"", alternative.kind.keyword());
    for test in &alternative.tests {
        let _ = match test {
            Test::Eq(claim, value) | Test::PresentEq(claim, value) => {
                writeln!(text, "\tinput.claims.{claim} == \"{value}\"")
            }
            Test::Prefix(claim, prefix) => {
                writeln!(text, "\tstartswith(input.claims.{claim}, \"{prefix}\")")
            }
        };
    }
}

fn rule(text: &mut String, policy: &Policy, rule: &Rule) {
    let (comment, head) = match rule.effect {
        Effect::Permit => ("permit", "permit"),
        Effect::Forbid => ("forbid", "forbid"),
    };
    let _ = writeln!(text, "# {comment} {}\n{head} if {{", rule.name);
    if let Some(target) = rule.target.and_then(|idx| policy.targets.get(idx)) {
        let _ = writeln!(text, "\tinput.target == \"{}\"", target.name);
    }
    let _ = match rule.scope {
        Scope::Workload(idx) => {
            let name = policy.workloads.get(idx).map_or("", |w| w.name.as_str());
            writeln!(text, "\tworkload_{name}")
        }
        Scope::AnyOf(kind) => writeln!(text, "\tinput.kind == \"{}\"", kind.keyword()),
    };
    for cond in &rule.when {
        let _ = writeln!(text, "\t{}", self::cond(cond));
    }
    text.push_str("}\n\n");
}

fn cond(cond: &Cond) -> String {
    match cond {
        Cond::ActionIn(actions) => {
            let quoted: Vec<String> = actions.iter().map(|a| format!("\"{a}\"")).collect();
            format!("input.action in {{{}}}", quoted.join(", "))
        }
        Cond::ResourcePrefix(prefix) => format!("startswith(input.resource, \"{prefix}\")"),
        Cond::Before(idx) => {
            let seconds = EXPIRIES.get(*idx).map_or(0, |(seconds, _)| *seconds);
            format!("input.time < {seconds}")
        }
        Cond::ClaimEq(_, claim, value) => format!("input.claims.{claim} == \"{value}\""),
        Cond::NotPresentEq(_, claim, value) => format!("not input.claims.{claim} == \"{value}\""),
        Cond::HostContains(text) => {
            format!("contains(data.targets[input.target].host, \"{text}\")")
        }
    }
}

/// The data document: the declared targets by name.
pub fn data(policy: &Policy) -> Result<Value> {
    let targets: serde_json::Map<String, serde_json::Value> = policy
        .targets
        .iter()
        .map(|target| {
            let facts = json!({
                "host": target.host,
                "protocol": target.protocol_keyword(),
                "port": target.port(),
            });
            (target.name.clone(), facts)
        })
        .collect();
    let text = json!({ "targets": targets }).to_string();
    Value::from_json_str(&text).map_err(|error| anyhow!("rego data: {error}"))
}

/// The input document of one request.
pub fn input(req: &Req) -> Result<Value> {
    let claims: serde_json::Map<String, serde_json::Value> = req
        .caller
        .claims
        .iter()
        .map(|(name, claim)| {
            let value = match claim {
                Claim::Str(text) => json!(text),
                Claim::Set(items) => json!(items),
            };
            ((*name).to_owned(), value)
        })
        .collect();
    let input = json!({
        "kind": req.caller.kind.keyword(),
        "claims": claims,
        "target": req.target,
        "action": req.action,
        "resource": req.resource,
        "time": req.time,
    });
    Value::from_json_str(&input.to_string()).map_err(|error| anyhow!("rego input: {error}"))
}

/// Parses the modules and data and compiles them for [`ENTRY_POINT`], the way regorus
/// prepares a policy for repeated evaluation.
pub fn compile(modules: &[(String, String)], data: Value) -> Result<CompiledPolicy> {
    let mut engine = Engine::new();
    for (name, text) in modules {
        engine
            .add_policy(name.clone(), text.clone())
            .map_err(|error| anyhow!("rego module {name}: {error}"))?;
    }
    engine
        .add_data(data)
        .map_err(|error| anyhow!("rego data: {error}"))?;
    engine
        .compile_with_entrypoint(&ENTRY_POINT.into())
        .map_err(|error| anyhow!("rego compile: {error}"))
}

/// Compiles a compiled policy on to regorus's bytecode VM (RVM), with the data loaded.
pub fn rvm(compiled: &CompiledPolicy, data: Value) -> Result<RegoVM> {
    let program = Compiler::compile_from_policy(compiled, &[ENTRY_POINT])
        .map_err(|error| anyhow!("rvm compile: {error}"))?;
    let mut vm = RegoVM::new();
    vm.load_program(program);
    // The default limit of 25,000 instructions per evaluation is too few for a large set.
    vm.set_max_instructions(usize::MAX);
    vm.set_data(data)
        .map_err(|error| anyhow!("rvm data: {error}"))?;
    Ok(vm)
}

fn allowed(value: &Value) -> Result<bool> {
    match value {
        Value::Bool(allow) => Ok(*allow),
        other => bail!("`allow` is {other}, not a bool"),
    }
}

/// regorus's interpreter, fed the sample's inputs.
pub struct Interpreter {
    compiled: CompiledPolicy,
    inputs: Vec<Value>,
}

impl Interpreter {
    pub fn new(compiled: CompiledPolicy, sample: &[Req]) -> Result<Interpreter> {
        let inputs = sample.iter().map(input).collect::<Result<_>>()?;
        Ok(Interpreter { compiled, inputs })
    }

    /// Decides sample request `idx` (modulo the sample's size).
    pub fn decide(&self, idx: usize) -> Result<bool> {
        let Some(input) = self.inputs.get(idx % self.inputs.len().max(1)) else {
            bail!("no requests");
        };
        let value = self
            .compiled
            .eval_with_input(input.clone())
            .map_err(|error| anyhow!("regorus: {error}"))?;
        allowed(&value)
    }
}

/// regorus's RVM, fed the sample's inputs.
pub struct Rvm {
    vm: RegoVM,
    inputs: Vec<Value>,
}

impl Rvm {
    pub fn new(vm: RegoVM, sample: &[Req]) -> Result<Rvm> {
        let inputs = sample.iter().map(input).collect::<Result<_>>()?;
        Ok(Rvm { vm, inputs })
    }

    /// Decides sample request `idx` (modulo the sample's size).
    pub fn decide(&mut self, idx: usize) -> Result<bool> {
        let Some(input) = self.inputs.get(idx % self.inputs.len().max(1)) else {
            bail!("no requests");
        };
        self.vm.set_input(input.clone());
        let value = self
            .vm
            .execute()
            .map_err(|error| anyhow!("regorus rvm: {error}"))?;
        allowed(&value)
    }
}
