//! `policyc`, the Gate compiler on the command line: `check` a policy set and report every
//! error, or `build` it into a bundle file.
//!
//! Exit status: 0 on success, 1 when the policy set has errors, 2 when a file cannot be read or
//! written.
//!
//! FIXME(#3): `policyc test`, `policyc fmt`, lints as warnings, and `check --format sarif`.

use std::fmt;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use portcullis_lang::bundle::{Bundle, BundleError};
use portcullis_lang::diagnostic::{Diagnostic, render};
use portcullis_lang::ir::PolicySet;
use portcullis_lang::source::{SourceError, SourceFile, read_policy_path};

#[derive(Debug, Parser)]
#[command(
    name = "policyc",
    version,
    about = "Check and compile Gate policy sets"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check a policy set (a `.gate` file or a directory) and report every error
    Check {
        /// A `.gate` file, or a directory whose `.gate` files form the policy set
        path: PathBuf,
    },
    /// Compile a policy set into a bundle file
    Build {
        /// A `.gate` file, or a directory whose `.gate` files form the policy set
        path: PathBuf,
        /// Where to write the bundle; replaced atomically
        #[arg(short, long)]
        output: PathBuf,
    },
}

/// Why a command failed; each kind has its exit status.
#[derive(Debug)]
enum Failure {
    Read(SourceError),
    Invalid(Vec<Diagnostic>),
    Bundle(BundleError),
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Invalid(_) | Failure::Bundle(_) => 1,
            Failure::Read(_) | Failure::Write { .. } => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Read(error) => write!(f, "{error}"),
            Failure::Invalid(diags) => {
                let n = diags.len();
                write!(
                    f,
                    "policy set has {n} {}",
                    if n == 1 { "error" } else { "errors" }
                )
            }
            Failure::Bundle(error) => write!(f, "cannot build the bundle: {error}"),
            Failure::Write { path, error } => {
                write!(f, "cannot write `{}`: {error}", path.display())
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check { path } => check(path),
        Command::Build { path, output } => build(path, output),
    };
    match result {
        Ok(summary) => {
            println!("{summary}");
            ExitCode::SUCCESS
        }
        Err(failure) => {
            report(&failure);
            ExitCode::from(failure.exit_code())
        }
    }
}

fn report(failure: &Failure) {
    let mut stderr = std::io::stderr().lock();
    if let Failure::Invalid(diags) = failure {
        let color = std::io::stderr().is_terminal() && std::env::var_os("NO_COLOR").is_none();
        let _ = write!(stderr, "{}", render(diags, color));
    }
    let _ = writeln!(stderr, "error: {failure}");
}

fn compile(path: &Path) -> Result<(Vec<SourceFile>, PolicySet), Failure> {
    let files = read_policy_path(path).map_err(Failure::Read)?;
    let set = portcullis_lang::compile(&files).map_err(Failure::Invalid)?;
    Ok((files, set))
}

fn check(path: &Path) -> Result<String, Failure> {
    let (files, set) = compile(path)?;
    Ok(format!(
        "ok: {}, {}, {}, {}",
        count(files.len(), "file"),
        count(set.workloads.len(), "workload"),
        count(set.targets.len(), "target"),
        count(set.rules.len(), "rule"),
    ))
}

fn build(path: &Path, output: &Path) -> Result<String, Failure> {
    let (_, set) = compile(path)?;
    let bundle = Bundle::from_policy_set(&set).map_err(Failure::Bundle)?;
    let bytes = bundle.to_bytes();
    write_atomically(output, &bytes).map_err(|error| Failure::Write {
        path: output.to_owned(),
        error,
    })?;
    Ok(format!(
        "wrote {} ({} bytes, bundle sha256:{})",
        output.display(),
        bytes.len(),
        bundle.hash_hex()
    ))
}

/// Writes `bytes` to a temporary file beside `path`, then renames it over `path`, so that a
/// reader sees the old bundle or the new one, never half of one.
fn write_atomically(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = match path.parent() {
        Some(parent) if !parent.as_os_str().is_empty() => parent.to_owned(),
        _ => PathBuf::from("."),
    };
    let file_name = path
        .file_name()
        .map(|name| name.to_string_lossy().into_owned());
    let temp = dir.join(format!(
        ".{}.{}.tmp",
        file_name.as_deref().unwrap_or("bundle"),
        std::process::id()
    ));
    let written = fs::File::create(&temp).and_then(|mut file| {
        file.write_all(bytes)?;
        file.sync_all()
    });
    let renamed = written.and_then(|()| fs::rename(&temp, path));
    if renamed.is_err() {
        let _ = fs::remove_file(&temp);
    }
    renamed
}

fn count(n: usize, noun: &str) -> String {
    if n == 1 {
        format!("1 {noun}")
    } else {
        format!("{n} {noun}s")
    }
}
