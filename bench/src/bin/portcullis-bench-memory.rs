//! `portcullis-bench-memory`: the heap each engine holds once its policy is loaded, for one
//! generated policy set; `portcullis-bench` runs it once per size (see its `memory` module).
//! Prints `KEY BYTES` per engine: bytes allocated and not freed while the engine was built;
//! an engine that cannot take the policy set has no line.

use std::alloc::System;
use std::process::ExitCode;

use anyhow::Result;
use clap::Parser;
use portcullis_bench::model::Policy;
use portcullis_bench::{Engine, cedar, gate, portcullis, rego};
use stats_alloc::{INSTRUMENTED_SYSTEM, Region, StatsAlloc};

#[global_allocator]
static GLOBAL: &StatsAlloc<System> = &INSTRUMENTED_SYSTEM;

#[derive(Debug, Parser)]
#[command(name = "portcullis-bench-memory")]
struct Args {
    /// Size of the policy set, in rules.
    #[arg(long)]
    rules: usize,
    /// Seed of the generated policies, as given to `portcullis-bench`.
    #[arg(long)]
    seed: u64,
    /// The engines to measure, by key; the VM and the reference evaluator always.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vm,reference,cedar,regorus,regorus-rvm"
    )]
    engines: Vec<String>,
}

fn main() -> ExitCode {
    match heap_held(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn heap_held(args: &Args) -> Result<()> {
    let policy = Policy::generate(args.rules, args.seed);
    let files = gate::files(&policy);

    let (set, reference) = held(|| portcullis::check(&files))?;
    let bytes = portcullis::bundle_bytes(&set)?;
    drop(set);
    let (program, vm) = held(|| portcullis::load(&bytes))?;
    drop((program, bytes, files));
    let wants = |engine: Engine| args.engines.iter().any(|key| key == engine.key());
    let mut held_by = vec![(Engine::Vm, vm), (Engine::Reference, reference)];

    if wants(Engine::Cedar) {
        held_by.push((Engine::Cedar, cedar_heap(&policy)?));
    }
    if wants(Engine::Regorus) || wants(Engine::RegorusRvm) {
        held_by.extend(rego_heap(&policy, wants(Engine::RegorusRvm))?);
    }
    for (engine, live) in held_by {
        println!("{} {live}", engine.key());
    }
    Ok(())
}

fn cedar_heap(policy: &Policy) -> Result<i64> {
    let text = cedar::policies(policy);
    let (policies, cedar) = held(|| cedar::parse(&text))?;
    drop((policies, text));
    Ok(cedar)
}

/// The interpreter's heap and, when asked for and able to take the policy set, the RVM's.
fn rego_heap(policy: &Policy, wants_rvm: bool) -> Result<Vec<(Engine, i64)>> {
    let modules = rego::modules(policy);
    let (compiled, regorus) = held(|| rego::compile(&modules, rego::data(policy)?))?;
    drop(compiled);
    let mut figures = vec![(Engine::Regorus, regorus)];
    if !wants_rvm {
        return Ok(figures);
    }
    // An RVM that cannot take the policy set is left out, as the timed binary leaves it out.
    let rvm = held(|| {
        let compiled = rego::compile(&modules, rego::data(policy)?)?;
        rego::rvm(&compiled, rego::data(policy)?)
    });
    if let Ok((rvm_vm, live)) = rvm {
        drop(rvm_vm);
        figures.push((Engine::RegorusRvm, live));
    }
    Ok(figures)
}

/// Builds a value, and the bytes allocated and not freed meanwhile: what the value holds,
/// its temporaries gone.
fn held<T>(build: impl FnOnce() -> Result<T>) -> Result<(T, i64)> {
    let region = Region::new(GLOBAL);
    let value = build()?;
    let change = region.change();
    let allocated = i64::try_from(change.bytes_allocated).unwrap_or(i64::MAX);
    let freed = i64::try_from(change.bytes_deallocated).unwrap_or(i64::MAX);
    let reallocated = i64::try_from(change.bytes_reallocated).unwrap_or(i64::MAX);
    Ok((value, allocated - freed + reallocated))
}
