//! Heap held by each engine once its policy is loaded, measured in a child process.
//!
//! Counting allocations takes a global allocator that updates counters on every allocation,
//! which would slow down the engines that allocate while deciding (Cedar, regorus, the
//! reference evaluator) and so bias the timings. The timed binary therefore keeps the system
//! allocator, and runs [`BINARY`], built from the same package with a counting allocator,
//! once per size. The child prints one line per engine, `KEY BYTES`: the bytes allocated and
//! not freed while the engine was built from its source (or, for the VM, from the bundle's
//! bytes), with everything else dropped.

use std::process::{Command, Stdio};

use anyhow::{Context as _, Result, bail};

use crate::Engine;

/// The memory child's binary, a sibling of the benchmark's.
pub const BINARY: &str = "portcullis-bench-memory";

/// Runs the child for `n_rules` and the engines asked for, and reads its answer.
pub fn measure_in_child(
    n_rules: usize,
    seed: u64,
    engines: &[Engine],
) -> Result<Vec<(Engine, i64)>> {
    let exe = std::env::current_exe().context("finding the benchmark binary")?;
    let child = exe.with_file_name(format!("{BINARY}{}", std::env::consts::EXE_SUFFIX));
    if !child.exists() {
        bail!("`{BINARY}` is not built; `cargo build --release -p portcullis-bench` builds it");
    }
    let output = Command::new(&child)
        .args(["--rules", &n_rules.to_string(), "--seed", &seed.to_string()])
        .arg("--engines")
        .arg(
            engines
                .iter()
                .map(|engine| engine.key())
                .collect::<Vec<_>>()
                .join(","),
        )
        .stderr(Stdio::inherit())
        .output()
        .with_context(|| format!("running {}", child.display()))?;
    if !output.status.success() {
        bail!("`{BINARY}` failed with {}", output.status);
    }
    let stdout = String::from_utf8_lossy(&output.stdout);
    stdout.lines().map(parse_line).collect()
}

fn parse_line(line: &str) -> Result<(Engine, i64)> {
    let mut words = line.split_whitespace();
    let (Some(key), Some(bytes)) = (words.next(), words.next()) else {
        bail!("unexpected line from `{BINARY}`: {line}");
    };
    let engine = Engine::from_key(key).with_context(|| format!("unknown engine `{key}`"))?;
    let bytes = bytes
        .parse()
        .with_context(|| format!("unexpected byte count in `{line}`"))?;
    Ok((engine, bytes))
}
