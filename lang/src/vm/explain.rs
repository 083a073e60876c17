//! `explain`: one decision with what the VM evaluated on the way, as text for a person and as
//! JSON for the decision API and tools.
//!
//! The trace comes from the same run that decides ([`Program::decide_traced`]), so it shows
//! what the engine did, not a second evaluation that could differ: the candidates the index
//! found, each rule in the order it was considered with its workload's result and its `when`,
//! every workload and condition evaluated, and the decision.

use std::fmt::Write as _;

use serde_json::{Value, json};

use super::{Decision, EvalError, Program, Request, Scratch, Trace, error_text};
use crate::ir::{Effect, WorkloadRef};

/// A rule the decision considered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RuleStep {
    /// Position in the bundle's rules.
    pub rule: u32,
    /// Whether the caller is the rule's workload.
    pub workload: Result<bool, EvalError>,
    /// The rule's `when`, when it ran: only after the workload matched.
    pub when: Option<Result<bool, EvalError>>,
}

impl RuleStep {
    /// Whether the rule applied, or why it could not be evaluated.
    pub fn outcome(&self) -> Result<bool, EvalError> {
        self.when.unwrap_or(self.workload)
    }
}

/// A decision and how it was reached.
#[derive(Debug, Clone)]
pub struct Explanation<'p> {
    program: &'p Program,
    pub decision: Decision<'p>,
    /// Rules the index left to consider for this caller and target, and all rules.
    pub candidate_rules: usize,
    pub total_rules: usize,
    /// Workloads the caller could be, by the index, and all workloads.
    pub candidate_workloads: usize,
    pub total_workloads: usize,
    /// The rules considered, in order; the last one decided, unless none applied.
    pub rules: Vec<RuleStep>,
    /// Workloads evaluated, in the order they were first needed.
    pub workloads: Vec<(u32, Result<bool, EvalError>)>,
    /// Named conditions evaluated, in the order they were first needed.
    pub conditions: Vec<(u32, Result<bool, EvalError>)>,
    /// The most instructions a decision of this program may run.
    pub instruction_bound: usize,
}

/// The trace being recorded.
#[derive(Default)]
struct Recorder {
    rules: Vec<RuleStep>,
    workloads: Vec<(u32, Result<bool, EvalError>)>,
    conditions: Vec<(u32, Result<bool, EvalError>)>,
}

impl Trace for Recorder {
    fn workload(&mut self, workload: u32, result: Result<bool, EvalError>) {
        self.workloads.push((workload, result));
    }

    fn condition(&mut self, condition: u32, result: Result<bool, EvalError>) {
        self.conditions.push((condition, result));
    }

    fn rule(
        &mut self,
        rule: u32,
        workload: Result<bool, EvalError>,
        when: Option<Result<bool, EvalError>>,
    ) {
        self.rules.push(RuleStep {
            rule,
            workload,
            when,
        });
    }
}

impl Program {
    /// Decides `request` and records how. Allocates, unlike [`Program::decide`]; for people
    /// and tools, not the hot path.
    pub fn explain(&self, request: &Request<'_>) -> Explanation<'_> {
        let mut scratch = Scratch::new();
        let mut recorder = Recorder::default();
        let decision = self.decide_traced(request, &mut scratch, &mut recorder);
        Explanation {
            program: self,
            decision,
            candidate_rules: scratch.candidates.rules.len(),
            total_rules: self.bundle.rules().len(),
            candidate_workloads: scratch.candidates.workloads.len(),
            total_workloads: self.bundle.workloads().len(),
            rules: recorder.rules,
            workloads: recorder.workloads,
            conditions: recorder.conditions,
            instruction_bound: self.budget,
        }
    }
}

impl Explanation<'_> {
    fn rule_name(&self, rule: u32) -> &str {
        self.program
            .bundle
            .rules()
            .get(rule as usize)
            .map_or("?", |rule| rule.name.as_str())
    }

    fn workload_name(&self, workload: u32) -> &str {
        self.program
            .bundle
            .workloads()
            .get(workload as usize)
            .map_or("?", |workload| workload.name.as_str())
    }

    fn condition_name(&self, condition: u32) -> &str {
        self.program
            .bundle
            .conditions()
            .get(condition as usize)
            .map_or("?", |condition| condition.name.as_str())
    }

    /// How a rule names its workload, as written.
    fn rule_workload(&self, rule: u32) -> String {
        let Some(entry) = self.program.bundle.rules().get(rule as usize) else {
            return "?".to_owned();
        };
        match entry.workload {
            WorkloadRef::Named(id) => self.workload_name(id.0).to_owned(),
            WorkloadRef::AnyOfKind(kind) => format!("any {kind}"),
            WorkloadRef::Any => "any".to_owned(),
        }
    }

    fn effect(&self, rule: u32) -> &'static str {
        match self
            .program
            .bundle
            .rules()
            .get(rule as usize)
            .map(|r| r.effect)
        {
            Some(Effect::Forbid) => "forbid",
            _ => "permit",
        }
    }

    fn error(&self, error: EvalError) -> String {
        error_text(Some(self.program.custom_claims()), error)
    }

    fn result_text(&self, result: Result<bool, EvalError>) -> String {
        match result {
            Ok(value) => value.to_string(),
            Err(error) => format!("error: {}", self.error(error)),
        }
    }

    fn result_json(&self, result: Result<bool, EvalError>) -> Value {
        match result {
            Ok(value) => Value::Bool(value),
            Err(error) => json!({ "error": self.error(error) }),
        }
    }

    /// The explanation for a person: the decision first, then the steps.
    pub fn to_text(&self) -> String {
        let decision = &self.decision;
        let mut out = String::new();
        let verdict = if decision.allow { "allow" } else { "deny" };
        let _ = writeln!(out, "decision: {verdict} ({})", decision.reason.code());
        let _ = writeln!(out, "reason:   {}", decision.reason_text());
        if let Some(target) = decision.target {
            // What the target admits of a resource: an `http` path prefix, a database.
            let within = match (&target.path_prefix, &target.database) {
                (Some(prefix), _) => prefix.clone(),
                (None, Some(database)) => format!("/{database}"),
                (None, None) => String::new(),
            };
            let _ = writeln!(
                out,
                "target:   {} ({}://{}:{}{within})",
                target.name,
                target.protocol.keyword(),
                target.host,
                target.port
            );
        }
        if let Some(workload) = decision.workload {
            let _ = writeln!(out, "workload: {workload}");
        }
        if let Some(credential) = decision.credential {
            let _ = writeln!(out, "credential: {}", credential.name);
        }
        let _ = writeln!(
            out,
            "index:    {} of {} rules and {} of {} workloads could apply to this caller",
            self.candidate_rules, self.total_rules, self.candidate_workloads, self.total_workloads
        );
        if self.rules.is_empty() {
            let _ = writeln!(out, "\nno rule was considered");
        } else {
            let _ = writeln!(out, "\nrules, in the order considered (forbids first):");
        }
        let decided = decision.rule.is_some();
        for (n, step) in self.rules.iter().enumerate() {
            let workload = self.rule_workload(step.rule);
            let mut line = format!(
                "  {} {}: workload {workload} {}",
                self.effect(step.rule),
                self.rule_name(step.rule),
                match step.workload {
                    Ok(true) => "matches".to_owned(),
                    Ok(false) => "does not match".to_owned(),
                    Err(error) => format!("fails ({})", self.error(error)),
                }
            );
            if let Some(when) = step.when {
                let _ = write!(line, "; when is {}", self.result_text(when));
            }
            let last = n + 1 == self.rules.len();
            let verdict = match step.outcome() {
                Ok(true) => "applies",
                Ok(false) => "does not apply",
                Err(_) => "cannot be evaluated, which denies",
            };
            let _ = write!(line, " -> {verdict}");
            if last && decided {
                line.push_str(" (decides)");
            }
            let _ = writeln!(out, "{line}");
        }
        if !self.workloads.is_empty() {
            let _ = writeln!(out, "\nworkloads evaluated:");
            for (workload, result) in &self.workloads {
                let name = self.workload_name(*workload);
                let result = match result {
                    Ok(true) => "matches".to_owned(),
                    Ok(false) => "does not match".to_owned(),
                    Err(error) => format!("fails ({})", self.error(*error)),
                };
                let _ = writeln!(out, "  {name}: {result}");
            }
        }
        if !self.conditions.is_empty() {
            let _ = writeln!(out, "\nconditions evaluated:");
            for (condition, result) in &self.conditions {
                let name = self.condition_name(*condition);
                let _ = writeln!(out, "  {name}: {}", self.result_text(*result));
            }
        }
        out
    }

    /// The explanation as JSON: what the decision API answers under `explanation`.
    pub fn to_json(&self) -> Value {
        let decision = &self.decision;
        let rules: Vec<Value> = self
            .rules
            .iter()
            .map(|step| {
                let outcome = match step.outcome() {
                    Ok(true) => "applies",
                    Ok(false) => "does_not_apply",
                    Err(_) => "error",
                };
                json!({
                    "rule": self.rule_name(step.rule),
                    "effect": self.effect(step.rule),
                    "workload": self.rule_workload(step.rule),
                    "workload_matched": self.result_json(step.workload),
                    "when": step.when.map(|when| self.result_json(when)),
                    "outcome": outcome,
                })
            })
            .collect();
        let workloads: Vec<Value> = self
            .workloads
            .iter()
            .map(|(id, result)| {
                json!({ "workload": self.workload_name(*id), "matched": self.result_json(*result) })
            })
            .collect();
        let conditions: Vec<Value> = self
            .conditions
            .iter()
            .map(|(id, result)| {
                json!({ "condition": self.condition_name(*id), "value": self.result_json(*result) })
            })
            .collect();
        json!({
            "decision": if decision.allow { "allow" } else { "deny" },
            "reason": decision.reason.code(),
            "reason_text": decision.reason_text(),
            "rule": decision.rule,
            "workload": decision.workload,
            "target": decision.target.map(|target| target.name.as_str()),
            "credential": decision.credential.map(|credential| credential.name.as_str()),
            "candidates": {
                "rules": self.candidate_rules,
                "of_rules": self.total_rules,
                "workloads": self.candidate_workloads,
                "of_workloads": self.total_workloads,
            },
            "instruction_bound": self.instruction_bound,
            "rules": rules,
            "workloads": workloads,
            "conditions": conditions,
        })
    }
}
