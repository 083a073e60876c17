//! The compiler benchmark: generated policy sets of 1,000, 10,000 and 100,000 rules, with
//! proportional workloads and targets spread over several files, timed phase by phase.
//!
//! `cargo bench -p portcullis-lang --bench check` (add sizes as arguments to pick others,
//! e.g. `-- 1000 10000`). Source text is generated in memory, so reading files is excluded.
//! Each phase reports the best of three runs: parse + check (`compile`), bundle build
//! (`Bundle::from_policy_set`), bundle load (`Bundle::from_bytes`, which validates it all).
//! The goal for issue #3: `compile` of 10,000 rules under one second in a release build.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a benchmark fails by panicking"
)]

#[path = "../tests/robustness/policy_gen.rs"]
mod policy_gen;

use std::hint::black_box;
use std::time::{Duration, Instant};

use policy_gen::{PolicyGen, PolicyShape, Rng};
use portcullis_lang::bundle::Bundle;
use portcullis_lang::{compile, render};

const DEFAULT_SIZES: [usize; 3] = [1_000, 10_000, 100_000];
const RUNS: usize = 3;

fn main() {
    let sizes: Vec<usize> = std::env::args()
        .skip(1)
        .filter_map(|arg| arg.replace('_', "").parse().ok())
        .collect();
    let sizes = if sizes.is_empty() {
        DEFAULT_SIZES.to_vec()
    } else {
        sizes
    };
    println!(
        "{:>8} {:>6} {:>8} {:>10} | {:>22} | {:>22} | {:>22}",
        "rules", "files", "workl.", "source", "compile", "bundle build", "bundle load"
    );
    for rules in sizes {
        bench_size(rules);
    }
}

fn bench_size(n_rules: usize) {
    let shape = PolicyShape::realistic(n_rules);
    let mut rng = Rng::new(0x6a7e_2026);
    let files = PolicyGen::new(&mut rng, shape).files();
    let source_bytes: usize = files.iter().map(|file| file.text.len()).sum();

    let (compile_time, set) = best_of(|| match compile(&files) {
        Ok(set) => set,
        Err(diags) => panic!("generated policy set fails:\n{}", render(&diags, false)),
    });
    assert_eq!(set.rules.len(), n_rules);
    let (build_time, bundle) = best_of(|| Bundle::from_policy_set(&set).unwrap());
    let bytes = bundle.to_bytes();
    let (load_time, loaded) = best_of(|| Bundle::from_bytes(&bytes).unwrap());
    assert_eq!(loaded.hash(), bundle.hash());

    println!(
        "{:>8} {:>6} {:>8} {:>8}KiB | {} | {} | {}",
        n_rules,
        files.len(),
        shape.workloads,
        source_bytes / 1024,
        phase(compile_time, n_rules),
        phase(build_time, n_rules),
        phase(load_time, n_rules),
    );
}

/// The shortest of [`RUNS`] runs of `work`, and the last run's result.
fn best_of<T>(mut work: impl FnMut() -> T) -> (Duration, T) {
    let mut best = Duration::MAX;
    let mut result = None;
    for _ in 0..RUNS {
        // The previous result is dropped outside the timed region.
        drop(result.take());
        let start = Instant::now();
        let value = black_box(work());
        best = best.min(start.elapsed());
        result = Some(value);
    }
    (best, result.expect("RUNS is positive"))
}

fn phase(time: Duration, n_rules: usize) -> String {
    let per_second = n_rules as f64 / time.as_secs_f64().max(1e-9);
    format!(
        "{:>8.1} ms {:>7.0}k r/s",
        time.as_secs_f64() * 1e3,
        per_second / 1e3
    )
}
