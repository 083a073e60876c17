//! One size of the benchmark from start to end: generate, compile for every engine (timed),
//! check that every engine decides the sample alike, then time each engine's decisions.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use anyhow::{Result, bail};
use portcullis_lang::ir::PolicySet;
use portcullis_lang::vm::{Program, Request};
use portcullis_lang::{SourceFile, reference};

use crate::cedar::{self, CedarEngine};
use crate::measure::{self, Timing};
use crate::model::Policy;
use crate::portcullis::{self, Outcome, OwnedRequest};
use crate::rego;
use crate::sample::{self, Req};
use crate::{Engine, gate};

/// Requests sampled per size; the agreement check uses the first ones, timing cycles through
/// all of them.
pub const SAMPLE_SIZE: usize = 4_096;

/// Requests every engine is checked on, whatever its speed.
pub const MIN_AGREE: usize = 10;

#[derive(Debug, Clone)]
pub struct Options {
    /// The engines to build and time. The VM is always built and checked against the
    /// reference evaluator; the others only when listed.
    pub engines: Vec<Engine>,
    /// Time budget of one engine at one size.
    pub budget: Duration,
    /// Requests on which every engine must agree.
    pub agree: usize,
    /// Time after which a slow engine's agreement check may stop, once it has checked
    /// [`MIN_AGREE`] requests.
    pub agree_budget: Duration,
    pub seed: u64,
    /// [`measure::timer_overhead`].
    pub timer_overhead_ns: f64,
}

/// The shape of one generated policy set and its Gate source.
#[derive(Debug, Clone, Default)]
pub struct Shape {
    pub rules: usize,
    pub workloads: usize,
    pub targets: usize,
    pub shared_targets: usize,
    pub global_forbids: usize,
    pub files: usize,
    pub source_bytes: usize,
}

impl Shape {
    pub fn of(policy: &Policy, files: &[SourceFile]) -> Shape {
        Shape {
            rules: policy.rules.len(),
            workloads: policy.workloads.len(),
            targets: policy.targets.len(),
            shared_targets: policy.shared_targets,
            global_forbids: policy.global_forbids,
            files: files.len(),
            source_bytes: files.iter().map(|file| file.text.len()).sum(),
        }
    }
}

/// How long each engine took to get ready, and the bundle's size.
#[derive(Debug, Clone, Default)]
pub struct Builds {
    /// Gate source to the typed IR (parse and check): also all the reference evaluator needs.
    pub gate_check: Duration,
    /// Typed IR to bundle bytes.
    pub gate_bundle: Duration,
    /// Bundle bytes to a loaded [`portcullis_lang::vm::Program`].
    pub vm_load: Duration,
    pub bundle_bytes: usize,
    pub cedar_parse: Duration,
    /// Parsing the modules and compiling them for the entry point.
    pub regorus_compile: Duration,
    /// The compiled policy on to RVM bytecode, on top of `regorus_compile`; `None` when the
    /// RVM could not take the policy.
    pub rvm_compile: Option<Duration>,
}

#[derive(Debug, Clone, Default)]
pub struct SizeResult {
    pub shape: Shape,
    pub builds: Builds,
    /// The requests of the agreement check, by the VM's reason code.
    pub outcomes: BTreeMap<&'static str, usize>,
    /// How many requests each engine was checked on: the first ones of the sample.
    pub agreed: Vec<(Engine, usize)>,
    pub timings: Vec<(Engine, Timing)>,
    /// Engines that could not take the policy set, and why.
    pub left_out: Vec<(Engine, String)>,
    /// The engines this run was asked for.
    pub engines: Vec<Engine>,
}

impl SizeResult {
    pub fn timing(&self, engine: Engine) -> Option<&Timing> {
        self.timings
            .iter()
            .find(|(measured, _)| *measured == engine)
            .map(|(_, timing)| timing)
    }
}

/// Progress goes to stderr, so that stdout holds the report alone.
fn progress(n_rules: usize, step: &str) {
    eprintln!("[{n_rules} rules] {step}");
}

fn timed<T>(run: impl FnOnce() -> Result<T>) -> Result<(T, Duration)> {
    let started = Instant::now();
    let value = run()?;
    Ok((value, started.elapsed()))
}

/// The VM as one size loaded it, with its sample's requests: what [`alternate`] times, the
/// same program that was checked against the reference evaluator.
#[derive(Debug)]
pub struct LoadedVm {
    pub rules: usize,
    program: Program,
    owned: Vec<OwnedRequest>,
}

/// Runs one size; gives what it measured and the VM it loaded.
pub fn run_size(n_rules: usize, options: &Options) -> Result<(SizeResult, LoadedVm)> {
    progress(n_rules, "generating");
    let policy = Policy::generate(n_rules, options.seed);
    let sample = sample::requests(&policy, SAMPLE_SIZE, options.seed ^ 0x5eed);
    let files = gate::files(&policy);
    let mut result = SizeResult {
        shape: Shape::of(&policy, &files),
        engines: options.engines.clone(),
        ..SizeResult::default()
    };
    let mut engines = Engines::build(&policy, files, &sample, &options.engines, &mut result)?;
    let owned = sample
        .iter()
        .map(OwnedRequest::new)
        .collect::<Result<Vec<_>>>()?;
    let requests: Vec<_> = owned.iter().map(OwnedRequest::request).collect();

    progress(n_rules, "checking that every engine decides alike");
    engines.check_agreement(&sample, &requests, options, &mut result)?;
    result.timings = engines.time_each(&requests, n_rules, options);
    drop(requests);
    let vm = LoadedVm {
        rules: n_rules,
        program: engines.program,
        owned,
    };
    Ok((result, vm))
}

/// Turns of [`alternate`]: each size's budget is cut into this many slices.
pub const TURNS: usize = 10;

/// The VM's throughput at two sizes measured in turns, so that their ratio is not the
/// machine's speed changing between two sizes timed a minute apart.
#[derive(Debug, Clone, Default)]
pub struct Alternation {
    pub sizes: [usize; 2],
    /// Per turn, decisions per second at each size.
    pub turns: Vec<[f64; 2]>,
}

impl Alternation {
    /// The median over the turns of the first size's throughput ÷ the second's.
    pub fn median_ratio(&self) -> Option<f64> {
        let mut ratios: Vec<f64> = self
            .turns
            .iter()
            .filter(|[_, large]| *large > 0.0)
            .map(|[small, large]| small / large)
            .collect();
        ratios.sort_unstable_by(f64::total_cmp);
        median(&ratios)
    }

    /// The median throughput of one of the two sizes.
    pub fn median_rate(&self, which: usize) -> Option<f64> {
        let mut rates: Vec<f64> = self
            .turns
            .iter()
            .filter_map(|t| t.get(which))
            .copied()
            .collect();
        rates.sort_unstable_by(f64::total_cmp);
        median(&rates)
    }
}

fn median(sorted: &[f64]) -> Option<f64> {
    let mid = sorted.len() / 2;
    match sorted.len() {
        0 => None,
        n if n % 2 == 1 => sorted.get(mid).copied(),
        _ => Some((sorted.get(mid - 1)? + sorted.get(mid)?) / 2.0),
    }
}

/// Times the VM's throughput at two sizes in [`TURNS`] turns, each size a slice of a tenth of
/// the budget per turn, the two taking turns; each goes on through its own sample where its
/// last slice stopped.
pub fn alternate(loaded: [&LoadedVm; 2], options: &Options) -> Alternation {
    let sizes = loaded.map(|vm| vm.rules);
    let slice = options.budget / TURNS as u32;
    let mut next = [0usize; 2];
    let mut alternation = Alternation {
        sizes,
        turns: Vec::with_capacity(TURNS),
    };
    let requests = loaded.map(|vm| {
        vm.owned
            .iter()
            .map(OwnedRequest::request)
            .collect::<Vec<_>>()
    });
    let [small, large] = sizes;
    eprintln!("[{small} and {large} rules] timing the VM in turns");
    for _ in 0..TURNS {
        let mut turn = [0.0; 2];
        let sides = loaded.iter().zip(&requests);
        for ((rate, next), (vm, requests)) in turn.iter_mut().zip(&mut next).zip(sides) {
            let request = |idx: usize| requests.get(idx % requests.len());
            *rate = measure::throughput_slice(slice, next, |idx| {
                request(idx).is_some_and(|request| vm.program.decide(request).allow)
            });
        }
        alternation.turns.push(turn);
    }
    alternation
}

/// Every engine asked for, ready to decide the sample; the VM and the reference evaluator
/// always.
struct Engines {
    set: PolicySet,
    program: Program,
    cedar: Option<CedarEngine>,
    regorus: Option<rego::Interpreter>,
    /// `None` when not asked for or when the RVM cannot take the policy set.
    rvm: Option<rego::Rvm>,
    timed: Vec<Engine>,
}

impl Engines {
    /// Compiles the policy for every engine, recording the times in `result`.
    fn build(
        policy: &Policy,
        files: Vec<SourceFile>,
        sample: &[Req],
        engines: &[Engine],
        result: &mut SizeResult,
    ) -> Result<Engines> {
        let n_rules = policy.rules.len();
        let builds = &mut result.builds;
        progress(n_rules, "compiling Gate");
        let (set, gate_check) = timed(|| portcullis::check(&files))?;
        drop(files);
        let (bytes, gate_bundle) = timed(|| portcullis::bundle_bytes(&set))?;
        let (program, vm_load) = timed(|| portcullis::load(&bytes))?;
        (builds.gate_check, builds.gate_bundle, builds.vm_load) =
            (gate_check, gate_bundle, vm_load);
        builds.bundle_bytes = bytes.len();

        let cedar = if engines.contains(&Engine::Cedar) {
            Some(Engines::cedar(policy, sample, builds)?)
        } else {
            None
        };
        let wants_rvm = engines.contains(&Engine::RegorusRvm);
        let (regorus, rvm) = if engines.contains(&Engine::Regorus) || wants_rvm {
            Engines::rego(policy, sample, wants_rvm, result)?
        } else {
            (None, None)
        };
        let regorus = regorus.filter(|_| engines.contains(&Engine::Regorus));
        Ok(Engines {
            set,
            program,
            cedar,
            regorus,
            rvm,
            timed: engines.to_vec(),
        })
    }

    fn cedar(policy: &Policy, sample: &[Req], builds: &mut Builds) -> Result<CedarEngine> {
        progress(policy.rules.len(), "parsing Cedar");
        let cedar_text = cedar::policies(policy);
        let (cedar_policies, cedar_parse) = timed(|| cedar::parse(&cedar_text))?;
        builds.cedar_parse = cedar_parse;
        drop(cedar_text);
        CedarEngine::new(cedar_policies, policy, sample)
    }

    /// regorus's interpreter and, when asked for and able to take the policy set, its RVM.
    fn rego(
        policy: &Policy,
        sample: &[Req],
        wants_rvm: bool,
        result: &mut SizeResult,
    ) -> Result<(Option<rego::Interpreter>, Option<rego::Rvm>)> {
        progress(policy.rules.len(), "compiling Rego");
        let modules = rego::modules(policy);
        let (compiled, regorus_compile) = timed(|| rego::compile(&modules, rego::data(policy)?))?;
        result.builds.regorus_compile = regorus_compile;
        drop(modules);
        // The RVM holds at most 65,535 instructions, so it cannot take the larger policy sets;
        // the report then says why it was left out.
        let rvm = match wants_rvm.then(|| timed(|| rego::rvm(&compiled, rego::data(policy)?))) {
            None => None,
            Some(Ok((vm, rvm_compile))) => {
                result.builds.rvm_compile = Some(rvm_compile);
                Some(rego::Rvm::new(vm, sample)?)
            }
            Some(Err(error)) => {
                let why = format!("{error:#}");
                result.left_out.push((Engine::RegorusRvm, why));
                None
            }
        };
        Ok((Some(rego::Interpreter::new(compiled, sample)?), rvm))
    }

    /// Requires the VM and the reference evaluator to reach the same outcome (decision,
    /// deciding rule, credential, reason) on the first [`Options::agree`] requests, and every
    /// peer to reach the same decision on as many of them as its budget allows.
    fn check_agreement(
        &mut self,
        sample: &[Req],
        requests: &[Request<'_>],
        options: &Options,
        result: &mut SizeResult,
    ) -> Result<()> {
        let mut by_vm = Vec::new();
        for (idx, (req, request)) in sample.iter().zip(requests).take(options.agree).enumerate() {
            let vm_outcome = portcullis::vm_outcome(&self.program, request);
            let reference_outcome = portcullis::reference_outcome(&self.set, request);
            if vm_outcome != reference_outcome {
                bail!(disagreement(idx, req, &vm_outcome, &Ok(reference_outcome)));
            }
            *result.outcomes.entry(vm_outcome.reason).or_default() += 1;
            by_vm.push(vm_outcome);
        }
        result.agreed.push((Engine::Vm, by_vm.len()));
        result.agreed.push((Engine::Reference, by_vm.len()));
        let mut agree = |engine, decide: &mut dyn FnMut(usize) -> Result<bool>| {
            let checked = agree_with_vm(engine, options, sample, &by_vm, decide)?;
            result.agreed.push((engine, checked));
            anyhow::Ok(())
        };
        if let Some(cedar) = self.cedar.as_mut() {
            agree(Engine::Cedar, &mut |idx| cedar.decide(idx))?;
        }
        if let Some(regorus) = self.regorus.as_mut() {
            agree(Engine::Regorus, &mut |idx| regorus.decide(idx))?;
        }
        if let Some(rvm) = self.rvm.as_mut() {
            agree(Engine::RegorusRvm, &mut |idx| rvm.decide(idx))?;
        }
        Ok(())
    }

    fn time_each(
        &mut self,
        requests: &[Request<'_>],
        n_rules: usize,
        options: &Options,
    ) -> Vec<(Engine, Timing)> {
        let request = |idx: usize| requests.get(idx % requests.len());
        let (set, program) = (&self.set, &self.program);
        let timed = &self.timed;
        let mut timings = vec![time(n_rules, options, Engine::Vm, |idx| {
            request(idx).is_some_and(|request| program.decide(request).allow)
        })];
        if timed.contains(&Engine::Reference) {
            timings.push(time(n_rules, options, Engine::Reference, |idx| {
                request(idx).is_some_and(|request| reference::decide(set, request).allow)
            }));
        }
        if let Some(cedar) = self.cedar.as_mut() {
            timings.push(time(n_rules, options, Engine::Cedar, |idx| {
                cedar.decide(idx).unwrap_or(false)
            }));
        }
        if let Some(regorus) = self.regorus.as_mut() {
            timings.push(time(n_rules, options, Engine::Regorus, |idx| {
                regorus.decide(idx).unwrap_or(false)
            }));
        }
        if let Some(rvm) = self.rvm.as_mut() {
            timings.push(time(n_rules, options, Engine::RegorusRvm, |idx| {
                rvm.decide(idx).unwrap_or(false)
            }));
        }
        timings
    }
}

/// Times one engine; a generic function, so that no engine pays for a dynamic call.
fn time(
    n_rules: usize,
    options: &Options,
    engine: Engine,
    decide: impl FnMut(usize) -> bool,
) -> (Engine, Timing) {
    progress(n_rules, &format!("timing {}", engine.label()));
    let timing = measure::measure(options.budget, options.timer_overhead_ns, decide);
    (engine, timing)
}

/// Checks that `decide` allows exactly the requests the VM allowed (`by_vm`, outcomes of the
/// first requests of `sample`), stopping early once it has spent [`Options::agree_budget`] on
/// at least [`MIN_AGREE`] requests; gives how many it checked.
fn agree_with_vm(
    engine: Engine,
    options: &Options,
    sample: &[Req],
    by_vm: &[Outcome],
    decide: &mut dyn FnMut(usize) -> Result<bool>,
) -> Result<usize> {
    let started = Instant::now();
    for (idx, (vm_outcome, req)) in by_vm.iter().zip(sample).enumerate() {
        if idx >= MIN_AGREE && started.elapsed() >= options.agree_budget {
            return Ok(idx);
        }
        let peer = decide(idx);
        if !peer.as_ref().is_ok_and(|allow| *allow == vm_outcome.allow) {
            let peer = peer.map(|allow| Outcome {
                allow,
                rule: None,
                credential: None,
                reason: engine.label(),
            });
            bail!(disagreement(idx, req, vm_outcome, &peer));
        }
    }
    Ok(by_vm.len())
}

/// The first request on which an engine disagrees with the VM, what the VM decided, and what
/// the other engine did.
fn disagreement(idx: usize, req: &Req, by_vm: &Outcome, other: &Result<Outcome>) -> String {
    let describe = |outcome: &Outcome| {
        let verdict = if outcome.allow { "allow" } else { "deny" };
        let rule = outcome.rule.as_deref().unwrap_or("-");
        let credential = outcome.credential.as_deref().unwrap_or("-");
        format!("{verdict} by {rule} with {credential} ({})", outcome.reason)
    };
    let other = match other {
        Ok(outcome) => describe(outcome),
        Err(error) => format!("error: {error:#}"),
    };
    format!(
        "engines disagree on request {idx}: {req:?}\n  Portcullis VM: {}\n  other: {other}",
        describe(by_vm)
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The ratio of the turns is the median of each turn's ratio, not the ratio of the
    /// medians: a turn in which the machine was slow counts as one turn.
    #[test]
    fn median_ratio_is_taken_turn_by_turn() {
        let alternation = Alternation {
            sizes: [10, 100_000],
            turns: vec![[4.0, 2.0], [1.0, 1.0], [9.0, 3.0], [8.0, 0.0]],
        };
        assert_eq!(alternation.median_ratio(), Some(2.0));
        assert_eq!(alternation.median_rate(0), Some(6.0));
        assert_eq!(alternation.median_rate(1), Some(1.5));
        assert_eq!(Alternation::default().median_ratio(), None);
    }

    /// The three renderings of one model decide alike, and every engine gets timed.
    #[test]
    fn engines_agree_on_a_small_set() -> Result<()> {
        let options = Options {
            engines: Engine::ALL.to_vec(),
            budget: Duration::from_millis(20),
            agree: 400,
            agree_budget: Duration::from_secs(60),
            seed: 11,
            timer_overhead_ns: 0.0,
        };
        let (result, _) = run_size(300, &options)?;
        assert_eq!(result.shape.rules, 300);
        assert_eq!(result.agreed.len(), Engine::ALL.len());
        assert!(result.agreed.iter().all(|(_, checked)| *checked == 400));
        for reason in ["forbidden", "no_permit", "permitted", "unknown_target"] {
            assert!(
                result.outcomes.contains_key(reason),
                "no {reason} in the sample"
            );
        }
        assert_eq!(result.timings.len(), Engine::ALL.len());
        Ok(())
    }
}
