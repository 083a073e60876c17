//! `portcullis-bench`: decides generated policy sets of several sizes with the Portcullis VM,
//! the reference evaluator, Cedar and regorus, on one thread, and prints a markdown report
//! (docs/benchmarks.md holds one, with the method). Exits with status 1 when the engines
//! disagree on a request, naming the first such request.

use std::process::ExitCode;
use std::time::Duration;

use anyhow::{Context as _, Result, bail};
use clap::Parser;
use portcullis_bench::report::{self, SizeReport};
use portcullis_bench::run::{self, Options};
use portcullis_bench::{Engine, measure, memory};

#[derive(Debug, Parser)]
#[command(
    name = "portcullis-bench",
    about = "Decision latency and throughput of the Portcullis VM against its reference \
             evaluator, Cedar and regorus, on generated policy sets"
)]
struct Args {
    /// Policy set sizes, in rules.
    #[arg(long, value_delimiter = ',', default_value = "10,1000,10000,100000")]
    sizes: Vec<usize>,
    /// Time budget of each engine at each size, in seconds.
    #[arg(long, default_value_t = 2.0)]
    seconds: f64,
    /// Requests on which every engine must decide alike, at each size.
    #[arg(long, default_value_t = 1_000)]
    agree: usize,
    /// Seconds after which the agreement check of a slow engine may stop, once it has checked
    /// 10 requests.
    #[arg(long, default_value_t = 30.0)]
    agree_seconds: f64,
    /// Seed of the generated policies and requests.
    #[arg(long, default_value_t = 2026)]
    seed: u64,
    /// Engines to build and time: `vm`, `reference`, `cedar`, `regorus`, `regorus-rvm`. The
    /// VM and the reference evaluator always check their agreement.
    #[arg(
        long,
        value_delimiter = ',',
        default_value = "vm,reference,cedar,regorus,regorus-rvm"
    )]
    engines: Vec<String>,
}

fn main() -> ExitCode {
    match bench(&Args::parse()) {
        Ok(()) => ExitCode::SUCCESS,
        Err(error) => {
            eprintln!("error: {error:#}");
            ExitCode::FAILURE
        }
    }
}

fn bench(args: &Args) -> Result<()> {
    for (flag, seconds) in [
        ("--seconds", args.seconds),
        ("--agree-seconds", args.agree_seconds),
    ] {
        if !(seconds.is_finite() && seconds > 0.0) {
            bail!("{flag} must be a positive number of seconds");
        }
    }
    let engines = args
        .engines
        .iter()
        .map(|key| {
            Engine::from_key(key).with_context(|| {
                format!("unknown engine `{key}`: vm, reference, cedar, regorus or regorus-rvm")
            })
        })
        .collect::<Result<Vec<_>>>()?;
    let options = Options {
        engines,
        budget: Duration::from_secs_f64(args.seconds),
        agree: args.agree,
        agree_budget: Duration::from_secs_f64(args.agree_seconds),
        seed: args.seed,
        timer_overhead_ns: measure::timer_overhead(),
    };
    let command = std::iter::once("portcullis-bench".to_owned())
        .chain(std::env::args().skip(1))
        .collect::<Vec<_>>()
        .join(" ");
    report::header(
        &command,
        &machine(),
        options.timer_overhead_ns,
        args.seconds,
    );
    // The scaling target compares the smallest and the largest size: their VMs are kept, to be
    // timed again in turns once every size has run.
    let smallest = args.sizes.iter().min().copied();
    let largest = args.sizes.iter().max().copied();
    let (mut small_vm, mut large_vm) = (None, None);
    let mut reports = Vec::new();
    for &n_rules in &args.sizes {
        let (result, vm) = run::run_size(n_rules, &options)?;
        if smallest < largest {
            if Some(n_rules) == largest {
                large_vm = Some(vm);
            } else if Some(n_rules) == smallest {
                small_vm = Some(vm);
            }
        }
        eprintln!("[{n_rules} rules] measuring the heap in a child process");
        let memory = memory::measure_in_child(n_rules, args.seed, &options.engines)
            .map_err(|e| format!("{e:#}"));
        let size_report = SizeReport { result, memory };
        report::size(&size_report);
        reports.push(size_report);
    }
    let alternation = match (&small_vm, &large_vm) {
        (Some(small), Some(large)) => Some(run::alternate([small, large], &options)),
        _ => None,
    };
    report::summary(&reports, alternation.as_ref());
    Ok(())
}

/// The processor, the number of logical CPUs, memory, kernel and load, from `/proc`.
fn machine() -> String {
    let read = |path: &str| std::fs::read_to_string(path).unwrap_or_default();
    let cpuinfo = read("/proc/cpuinfo");
    let model = cpuinfo
        .lines()
        .find_map(|line| line.strip_prefix("model name"))
        .and_then(|rest| rest.split_once(':'))
        .map_or("unknown processor", |(_, name)| name.trim());
    let cpus = std::thread::available_parallelism().map_or(0, usize::from);
    let meminfo = read("/proc/meminfo");
    let memory_kib: f64 = meminfo
        .lines()
        .find_map(|line| line.strip_prefix("MemTotal:"))
        .and_then(|rest| rest.trim().trim_end_matches("kB").trim().parse().ok())
        .unwrap_or(0.0);
    let kernel = read("/proc/sys/kernel/osrelease");
    // Other work on the machine slows every engine alike but blurs the figures: say so.
    let loadavg = read("/proc/loadavg");
    let load = loadavg.split_whitespace().next().unwrap_or("unknown");
    format!(
        "{model}, {cpus} logical CPUs, {:.1} GiB memory, Linux {}; load average {load} at the \
         start",
        memory_kib / 1_048_576.0,
        kernel.trim()
    )
}
