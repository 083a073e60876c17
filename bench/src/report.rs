//! The benchmark's report, as markdown on stdout: a header (command, machine, method), one
//! section per size, then a summary across sizes and the targets of issue #4. Its headings
//! start at level 3, so that it pastes as it is under a heading of docs/benchmarks.md.

use std::fmt::Write as _;
use std::time::Duration;

use crate::Engine;
use crate::run::{Alternation, Builds, SizeResult, TURNS};

/// Everything measured at one size, with the heap figures of the memory child (or why there
/// are none).
#[derive(Debug)]
pub struct SizeReport {
    pub result: SizeResult,
    pub memory: Result<Vec<(Engine, i64)>, String>,
}

impl SizeReport {
    fn rate(&self, engine: Engine) -> Option<f64> {
        self.result.timing(engine).map(|timing| timing.per_second)
    }

    fn heap(&self, engine: Engine) -> String {
        match &self.memory {
            Ok(figures) => figures
                .iter()
                .find(|(measured, _)| *measured == engine)
                .map_or_else(|| "–".to_owned(), |(_, live)| bytes(*live)),
            Err(_) => "–".to_owned(),
        }
    }
}

pub fn header(command: &str, machine: &str, timer_overhead_ns: f64, seconds: f64) {
    let build = if cfg!(debug_assertions) {
        "**debug build: the numbers mean nothing, run with `--release`**"
    } else {
        "release build"
    };
    println!("- command: `{command}`");
    println!("- machine: {machine}");
    println!(
        "- {build}; one thread; {} per engine per size; a pair of `Instant::now()` reads \
         takes {}, subtracted from each latency",
        secs(seconds),
        nanos(timer_overhead_ns)
    );
    println!();
}

pub fn size(report: &SizeReport) {
    let result = &report.result;
    let shape = &result.shape;
    println!("### {} rules\n", thousands(shape.rules as u64));
    println!(
        "{} workloads, {} targets ({} shared), organisation-wide forbids: {}; Gate source: \
         {} in {} files.\n",
        thousands(shape.workloads as u64),
        thousands(shape.targets as u64),
        shape.shared_targets,
        shape.global_forbids,
        bytes(shape.source_bytes as i64),
        shape.files
    );
    builds(report, &result.builds);
    if let Err(why) = &report.memory {
        println!("No heap figures: {why}.\n");
    }
    for (engine, why) in &result.left_out {
        println!(
            "Not measured: {}, which cannot take this policy set ({why}).\n",
            engine.label()
        );
    }
    let outcomes: Vec<String> = result
        .outcomes
        .iter()
        .map(|(reason, count)| format!("{} {reason}", thousands(*count as u64)))
        .collect();
    let agreed: Vec<String> = result
        .agreed
        .iter()
        .map(|(engine, count)| format!("{} {}", engine.label(), thousands(*count as u64)))
        .collect();
    println!(
        "Every engine decides alike each request it is checked on, from the first of the \
         sample ({}): {}.\n",
        outcomes.join(", "),
        agreed.join(", ")
    );
    println!("| engine | decisions timed | median | p99 | decisions/s | VM's throughput ÷ it |");
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let vm_rate = report.rate(Engine::Vm);
    for (engine, timing) in &result.timings {
        println!(
            "| {} | {} | {} | {} | {} | {} |",
            engine.label(),
            thousands(timing.decisions()),
            nanos(timing.median_ns),
            nanos(timing.p99_ns),
            rate(timing.per_second),
            speedup(vm_rate, Some(timing.per_second))
        );
    }
    println!();
}

fn builds(report: &SizeReport, builds: &Builds) {
    let gate = builds.gate_check + builds.gate_bundle;
    let rows = [
        (
            Engine::Vm,
            gate,
            format!(
                "Gate source → bundle bytes (check {}, bundle {}); then load {}; bundle {}",
                duration(builds.gate_check),
                duration(builds.gate_bundle),
                duration(builds.vm_load),
                bytes(builds.bundle_bytes as i64)
            ),
        ),
        (
            Engine::Reference,
            builds.gate_check,
            "Gate source → typed IR".to_owned(),
        ),
        (
            Engine::Cedar,
            builds.cedar_parse,
            "`PolicySet::from_str`".to_owned(),
        ),
        (
            Engine::Regorus,
            builds.regorus_compile,
            "`add_policy`, `add_data`, `compile_with_entrypoint`".to_owned(),
        ),
    ];
    let rvm = builds.rvm_compile.map(|rvm_compile| {
        (
            Engine::RegorusRvm,
            builds.regorus_compile + rvm_compile,
            format!(
                "regorus's compile, then `Compiler::compile_from_policy` {}",
                duration(rvm_compile)
            ),
        )
    });
    println!("| engine | compile | of what | heap held |");
    println!("| --- | ---: | --- | ---: |");
    let asked = &report.result.engines;
    let rows = rows.into_iter().chain(rvm);
    // The VM's row also gives the check that the reference evaluator needs: always shown.
    for (engine, time, what) in rows.filter(|(engine, ..)| {
        matches!(engine, Engine::Vm | Engine::Reference) || asked.contains(engine)
    }) {
        let heap = report.heap(engine);
        println!(
            "| {} | {} | {what} | {heap} |",
            engine.label(),
            duration(time)
        );
    }
    println!();
}

pub fn summary(reports: &[SizeReport], alternation: Option<&Alternation>) {
    println!("### Summary\n");
    println!(
        "Decisions per second on one thread; in parentheses, the VM's throughput ÷ the \
         engine's.\n"
    );
    // The engines any size was asked for, in the usual order.
    let engines: Vec<Engine> = Engine::ALL
        .into_iter()
        .filter(|engine| reports.iter().any(|r| r.result.engines.contains(engine)))
        .collect();
    let mut head = String::from("| rules | VM median | VM p99 |");
    let mut rule = String::from("| ---: | ---: | ---: |");
    for &engine in &engines {
        let _ = write!(head, " {} |", engine.label());
        rule.push_str(" ---: |");
    }
    println!("{head}\n{rule}");
    for report in reports {
        let vm = report.result.timing(Engine::Vm);
        let mut line = format!(
            "| {} | {} | {} |",
            thousands(report.result.shape.rules as u64),
            vm.map_or_else(|| "–".to_owned(), |t| nanos(t.median_ns)),
            vm.map_or_else(|| "–".to_owned(), |t| nanos(t.p99_ns)),
        );
        for &engine in &engines {
            let cell = match (engine, report.rate(engine)) {
                (_, None) => "–".to_owned(),
                (Engine::Vm, Some(own)) => rate(own),
                (_, Some(own)) => {
                    let ratio = speedup(report.rate(Engine::Vm), Some(own));
                    format!("{} ({ratio})", rate(own))
                }
            };
            let _ = write!(line, " {cell} |");
        }
        println!("{line}");
    }
    println!();
    if let Some(alternation) = alternation {
        turns(alternation);
    }
    targets(reports, alternation);
}

/// The VM's throughput at the smallest and the largest size, timed in turns.
fn turns(alternation: &Alternation) {
    let [small, large] = alternation.sizes.map(|rules| thousands(rules as u64));
    println!("### The VM at {small} and {large} rules, taking turns\n");
    println!(
        "Both programs loaded at once; {TURNS} turns, each timing the VM's throughput at \
         {small} rules and then at {large} rules for a tenth of the budget each (after a \
         warm-up of a tenth of that), so that a change in the machine's speed meets both \
         sizes alike. The ratio of each turn is {small} rules' throughput ÷ {large} rules'.\n"
    );
    println!("| turn | {small} rules | {large} rules | ratio |");
    println!("| ---: | ---: | ---: | ---: |");
    for (number, [at_small, at_large]) in (1..).zip(&alternation.turns) {
        let ratio = speedup(Some(*at_small), Some(*at_large));
        println!(
            "| {number} | {} | {} | {ratio} |",
            rate(*at_small),
            rate(*at_large)
        );
    }
    let median = |which| {
        alternation
            .median_rate(which)
            .map_or_else(|| "–".to_owned(), rate)
    };
    let ratio = alternation
        .median_ratio()
        .map_or_else(|| "–".to_owned(), times);
    println!("| median | {} | {} | {ratio} |", median(0), median(1));
    println!();
}

/// The targets of issue #4, each judged on the sizes it names when they were run; the scaling
/// target on the turns when they were timed at 10 and 100,000 rules.
fn targets(reports: &[SizeReport], alternation: Option<&Alternation>) {
    let at = |rules: usize| reports.iter().find(|r| r.result.shape.rules == rules);
    println!("### Targets of issue #4\n");
    println!("| target | measured | met |");
    println!("| --- | --- | --- |");
    let row = |target: &str, measured: String, met: bool| {
        println!(
            "| {target} | {measured} | {} |",
            if met { "yes" } else { "**no**" }
        );
    };
    if let Some(vm) = at(10_000).and_then(|r| r.result.timing(Engine::Vm)) {
        let median = vm.median_ns;
        row(
            "VM median ≤ 1 µs at 10,000 rules",
            nanos(median),
            median <= 1_000.0,
        );
    }
    if let Some(report) = at(10_000) {
        let ratio = |engine| ratio(report.rate(Engine::Vm), report.rate(engine));
        if let Some(cedar) = ratio(Engine::Cedar) {
            row(
                "VM throughput ≥ 10× Cedar's at 10,000 rules",
                times(cedar),
                cedar >= 10.0,
            );
        }
        let target = "VM throughput ≥ 50× regorus's at 10,000 rules (its faster mode counts)";
        match (ratio(Engine::Regorus), ratio(Engine::RegorusRvm)) {
            (Some(regorus), Some(rvm)) => row(
                target,
                format!("{} the interpreter, {} the RVM", times(regorus), times(rvm)),
                regorus.min(rvm) >= 50.0,
            ),
            (Some(regorus), None) => row(
                target,
                format!(
                    "{} the interpreter (the RVM cannot take the set)",
                    times(regorus)
                ),
                regorus >= 50.0,
            ),
            _ => {}
        }
    }
    let vm_rate = |rules| at(rules).and_then(|report| report.rate(Engine::Vm));
    // In turns when they were timed, with the phases a minute apart beside them; else those.
    let apart = match (vm_rate(10), vm_rate(100_000)) {
        (Some(small), Some(large)) => Some((small / large.max(f64::MIN_POSITIVE), small, large)),
        _ => None,
    };
    let in_turns = alternation
        .filter(|alternation| alternation.sizes == [10, 100_000])
        .and_then(|alternation| {
            let slower = alternation.median_ratio()?;
            Some((
                slower,
                alternation.median_rate(0)?,
                alternation.median_rate(1)?,
            ))
        });
    let judged = match (in_turns, apart) {
        (Some(turns), Some((apart, ..))) => Some((
            turns,
            format!(
                " (median of {TURNS} turns; {} timed a size at a time)",
                times(apart)
            ),
        )),
        (Some(turns), None) => Some((turns, format!(" (median of {TURNS} turns)"))),
        (None, Some(apart)) => Some((apart, String::new())),
        (None, None) => None,
    };
    if let Some(((slower, small, large), how)) = judged {
        row(
            "VM throughput at 100,000 rules within 2× of that at 10 rules",
            format!(
                "{} vs {}: {} slower{how}",
                rate(large),
                rate(small),
                times(slower)
            ),
            slower <= 2.0,
        );
    }
    if let Some(report) = at(100_000) {
        let builds = &report.result.builds;
        let compile = builds.gate_check + builds.gate_bundle;
        row(
            "compiling 100,000 rules (Gate source → bundle bytes) < 5 s",
            duration(compile),
            compile < Duration::from_secs(5),
        );
    }
    println!();
}

fn ratio(vm: Option<f64>, other: Option<f64>) -> Option<f64> {
    let (vm, other) = (vm?, other?);
    (other > 0.0).then(|| vm / other)
}

fn speedup(vm: Option<f64>, other: Option<f64>) -> String {
    ratio(vm, other).map_or_else(|| "–".to_owned(), times)
}

/// A ratio with three significant digits or so: `0.96×`, `53.1×`, `6841×`.
fn times(ratio: f64) -> String {
    match ratio {
        ratio if ratio >= 100.0 => format!("{ratio:.0}×"),
        ratio if ratio >= 10.0 => format!("{ratio:.1}×"),
        ratio => format!("{ratio:.2}×"),
    }
}

/// `1234567` as `1,234,567`.
pub fn thousands(n: u64) -> String {
    let digits = n.to_string();
    let mut out = String::new();
    for (idx, digit) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

fn rate(per_second: f64) -> String {
    if per_second < 100.0 {
        format!("{per_second:.1}")
    } else {
        thousands(per_second.round() as u64)
    }
}

fn nanos(ns: f64) -> String {
    match ns {
        ns if ns < 1e3 => format!("{ns:.0} ns"),
        ns if ns < 1e6 => format!("{:.2} µs", ns / 1e3),
        ns if ns < 1e9 => format!("{:.2} ms", ns / 1e6),
        ns => format!("{:.2} s", ns / 1e9),
    }
}

fn duration(duration: Duration) -> String {
    nanos(duration.as_nanos() as f64)
}

fn secs(seconds: f64) -> String {
    format!("{seconds} s")
}

fn bytes(n: i64) -> String {
    let value = n as f64;
    match n.unsigned_abs() {
        0..1_024 => format!("{n} B"),
        1_024..1_048_576 => format!("{:.1} KiB", value / 1_024.0),
        1_048_576..1_073_741_824 => format!("{:.1} MiB", value / 1_048_576.0),
        _ => format!("{:.2} GiB", value / 1_073_741_824.0),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn numbers_read_well() {
        assert_eq!(thousands(0), "0");
        assert_eq!(thousands(999), "999");
        assert_eq!(thousands(1_000), "1,000");
        assert_eq!(thousands(1_234_567), "1,234,567");
        assert_eq!(nanos(182.4), "182 ns");
        assert_eq!(nanos(3_410.0), "3.41 µs");
        assert_eq!(bytes(2_048), "2.0 KiB");
    }
}
