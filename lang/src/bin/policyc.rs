//! `policyc`, the Gate compiler on the command line: `check` policy sets and report every error
//! and warning (for a person, as JSON, or as SARIF for code scanning), or `build` one into a
//! bundle file, signed with `--sign` by a key that `keygen` made.
//!
//! Exit status: 0 on success, warnings alone included; 1 when a policy set has errors (or
//! warnings, under `--deny-warnings`); 2 on a usage error or when a file cannot be read or
//! written. Only the report goes to stdout; diagnostics and summaries go to stderr, in colour
//! only on a terminal and never when `NO_COLOR` is set.
//!
//! `policyc test` compiles policy sets and runs their `test` declarations: one line per test on
//! stdout, the differences of the failures, a summary line and the rules no test exercises; or
//! one JSON or JUnit XML document for CI.

use std::fmt;
use std::fs;
use std::io::{IsTerminal, Write};
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};
use portcullis_lang::bundle::signing::{
    self, KeyError, SigningKey, Zeroizing, signing_key_from_pem, signing_key_to_pem,
    verifying_key_from_pem, verifying_key_to_pem,
};
use portcullis_lang::bundle::{Bundle, BundleError, FORMAT_VERSION, MAX_BUNDLE_FILE_BYTES};
use portcullis_lang::claims_file::{MAX_CLAIMS_FILE_BYTES, parse_claims_file};
use portcullis_lang::diagnostic::{self, Code, Diagnostic, Severity, printable, render};
use portcullis_lang::ir::PolicySet;
use portcullis_lang::lexer::{self, DurationError};
use portcullis_lang::lint::{CheckOutcome, LintOptions, analyze_with_claims};
use portcullis_lang::policy_test::{self, TestRun, TestSuite};
use portcullis_lang::report::{CheckRun, CheckedSet, Unreadable, to_json, to_sarif};
use portcullis_lang::request_file::{MAX_REQUEST_FILE_BYTES, RequestFile};
use portcullis_lang::schema::CustomClaims;
use portcullis_lang::source::{SourceError, SourceFile, read_policy_path};
use portcullis_lang::test_report::{self, SetResult, TestReport, TestedSet};
use portcullis_lang::vm::Program;

const EXIT_STATUS_HELP: &str = "\
Exit status:
  0  no errors; warnings alone do not fail
  1  errors, or warnings under `check --deny-warnings`; files `fmt --check` would change;
     a bundle that cannot be built; a `test` that fails
  2  a usage error, or a path that cannot be read or written

Examples:
  policyc check examples/policies
  policyc check --format sarif policies/ > policyc.sarif
  policyc fmt --check policies/
  policyc test examples/policies
  policyc test --format junit policies/ > policy-tests.xml
  policyc build examples/policies -o policies.bundle
  policyc keygen --out bundle-signing.key
  policyc build examples/policies -o policies.bundle --sign bundle-signing.key";

const CHECK_HELP: &str = "\
Each PATH is one policy set: a `.gate` file, or a directory whose `.gate` files, found
recursively, are compiled together. Lints run on a policy set without errors.

Output: with `--format human`, diagnostics and a summary go to stderr and one `ok:` line per
clean policy set to stdout. With `json` or `sarif`, stdout carries only the document and
stderr a one-line summary. Colour only on a terminal, never when NO_COLOR is set.

Exit status: 0 no errors (warnings alone do not fail), 1 errors or, under --deny-warnings,
warnings, 2 a usage error or a path that cannot be read.

Examples:
  policyc check examples/policies
  policyc check team-a/policies team-b/policies --deny-warnings
  policyc check --format json policies/ | jq '.summary'
  policyc check --format sarif --max-ttl 30m policies/ > policyc.sarif
  policyc check --claims custom-claims.json policies/
  policyc check --deny-warnings --allow W0401 policies/";

const EXPLAIN_HELP: &str = "\
Compiles the policy set, decides the request the way the engine does, and prints the decision,
the rules the engine's index left to consider, each rule it considered in order with whether
its workload matched and its `when` held, and every workload and condition it evaluated.

The request file names claims as Gate does (docs/gate.md, section Explaining a decision):
  {\"kind\": \"github\",
   \"claims\": {\"repository\": \"acme/billing\", \"ref\": \"refs/heads/main\"},
   \"target\": \"billing_api\", \"action\": \"POST\", \"time\": \"2026-12-04T10:00:00Z\"}

Exit status: 0 allowed, 3 denied, 1 errors in the policy set, 2 a file that cannot be read or
used.

Examples:
  policyc explain examples/policies --request request.json
  policyc explain policies/ --request request.json --format json";

const INSPECT_HELP: &str = "\
Prints the bundle's content hash (the `bundle_hash` of its access events), size, what it
declares, the most instructions one decision can run, and who signed it when. With
--public-key, also checks the signature as `portcullis serve` with that `[policy] public_key`
does (a server also refuses a bundle signed before the newest it has run: docs/bundle-format.md,
\"Rollbacks\").

Exit status: 0 shown (and verified, with --public-key), 1 a file that is not a bundle or whose
signature is refused, 2 a file or key that cannot be read.

Examples:
  policyc inspect policies.bundle
  policyc inspect policies.bundle --public-key bundle-signing.key.pub";

const BUILD_HELP: &str = "\
With --sign KEYFILE, the bundle ends with an ed25519 signature by that private key (PKCS#8
PEM, as `policyc keygen` or `openssl genpkey -algorithm ed25519` writes it) over every byte
before the signature, which also covers the time of signing. The bundle's content hash is the
same signed or not. A server with `public_key` under `[policy]` serves only bundles that the
matching private key signed, and none signed before the newest it has run: to go back to an
older policy, build and sign it again (docs/bundle-format.md, \"Signature\").

Exit status: 0 written, 1 errors in the policy set or a bundle that cannot be built, 2 a path
or signing key that cannot be read or written.

Examples:
  policyc build examples/policies -o policies.bundle
  policyc build policies/billing.gate --output /etc/portcullis/billing.bundle
  policyc build policies/ --claims custom-claims.json -o policies.bundle
  policyc build policies/ -o policies.bundle --sign bundle-signing.key";

const KEYGEN_HELP: &str = "\
Writes a new ed25519 private key to PATH as PKCS#8 PEM, readable and writable by its owner
only (mode 0600), and its public key to PATH.pub as SPKI PEM. A file, link or directory that
already stands at either path is never replaced. `policyc build --sign PATH` signs bundles
with the private key; a server with `public_key = \"PATH.pub\"` under `[policy]` serves
only the bundles it signed. Keep the private key where bundles are built (a CI secret), and
only the public key beside the server.

Exit status: 0 written, 2 a path that exists or cannot be written.

Examples:
  policyc keygen --out bundle-signing.key
  policyc build policies/ -o policies.bundle --sign bundle-signing.key";

#[derive(Debug, Parser)]
#[command(
    name = "policyc",
    version,
    about = "Check and compile Gate policy sets",
    after_help = EXIT_STATUS_HELP
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check policy sets and report every error and warning
    #[command(after_help = CHECK_HELP)]
    Check(CheckArgs),
    /// Compile a policy set into a bundle file
    #[command(after_help = BUILD_HELP)]
    Build {
        /// A `.gate` file, or a directory whose `.gate` files form the policy set
        path: PathBuf,
        /// Where to write the bundle; replaced atomically
        #[arg(short, long)]
        output: PathBuf,
        #[command(flatten)]
        claims: ClaimsArg,
        /// Sign the bundle with this ed25519 private key (PKCS#8 PEM)
        #[arg(long, value_name = "KEYFILE")]
        sign: Option<PathBuf>,
    },
    /// Generate an ed25519 key pair for signing bundles
    #[command(after_help = KEYGEN_HELP)]
    Keygen {
        /// Where to write the private key; the public key goes to this path with `.pub`
        /// appended
        #[arg(short, long, value_name = "PATH")]
        out: PathBuf,
    },
    /// Format `.gate` files in place, or check that they are formatted
    #[command(after_help = FMT_HELP)]
    Fmt(FmtArgs),
    /// Run the `test` declarations of policy sets
    #[command(after_help = TEST_HELP)]
    Test(TestArgs),
    /// Show what a bundle file holds and who signed it when; check the signature with a key
    #[command(after_help = INSPECT_HELP)]
    Inspect {
        /// The bundle file, as `policyc build` wrote it
        bundle: PathBuf,
        /// Check the signature against this ed25519 public key (SPKI PEM), as a server with
        /// `[policy] public_key` does
        #[arg(long, value_name = "KEYFILE")]
        public_key: Option<PathBuf>,
    },
    /// Decide one request and show which rules were considered and why
    #[command(after_help = EXPLAIN_HELP)]
    Explain {
        /// A `.gate` file, or a directory whose `.gate` files form the policy set
        path: PathBuf,
        /// A JSON file with the request: kind, claims by name, target, action, resource,
        /// source_ip, time
        #[arg(long, value_name = "FILE")]
        request: PathBuf,
        /// How to show it: for a person, or as JSON (what the decision API answers)
        #[arg(long, value_enum, default_value_t = ExplainFormat::Text)]
        format: ExplainFormat,
        #[command(flatten)]
        claims: ClaimsArg,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum ExplainFormat {
    Text,
    Json,
}

#[derive(Debug, clap::Args)]
struct CheckArgs {
    /// Policy sets to check, each a `.gate` file or a directory [default: .]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// How to report: for a person on stderr, or a JSON or SARIF 2.1.0 document on stdout
    #[arg(long, value_enum, default_value_t = Format::Human)]
    format: Format,
    /// Fail (exit status 1) on warnings too
    #[arg(long)]
    deny_warnings: bool,
    /// Do not report this warning, such as `W0401` for a static secret the team has accepted;
    /// repeat for several
    #[arg(long = "allow", value_name = "CODE", value_parser = parse_warning)]
    allow: Vec<Code>,
    /// The longest credential `ttl` that passes without a warning, a Gate duration
    #[arg(long, value_name = "DURATION", default_value = "1h", value_parser = parse_duration)]
    max_ttl: u64,
    #[command(flatten)]
    claims: ClaimsArg,
}

/// `--claims FILE`, for every subcommand that compiles a policy set.
#[derive(Debug, clap::Args)]
struct ClaimsArg {
    /// A JSON file of the custom `oidc` claims the deployment's trust providers declare, in
    /// the shape of the configuration's `custom_claims` (docs/gate.md, "Custom claims")
    #[arg(long = "claims", value_name = "FILE")]
    file: Option<PathBuf>,
}

impl ClaimsArg {
    /// The custom claims the file declares; none without `--claims`.
    fn load(&self) -> Result<CustomClaims, Failure> {
        let Some(path) = &self.file else {
            return Ok(CustomClaims::default());
        };
        let failure = |message: String| Failure::Claims {
            path: path.clone(),
            message,
        };
        let text = read_small_file(path, MAX_CLAIMS_FILE_BYTES).map_err(failure)?;
        parse_claims_file(&text).map_err(|error| failure(error.to_string()))
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Format {
    Human,
    Json,
    Sarif,
}

/// Why a command failed; each kind has its exit status.
#[derive(Debug)]
enum Failure {
    Read(SourceError),
    Invalid(Vec<Diagnostic>),
    Bundle(BundleError),
    /// A `--claims` file that cannot be read or used.
    Claims {
        path: PathBuf,
        message: String,
    },
    /// A `--sign` key that cannot be read or used, or a new key that cannot be encoded.
    Key {
        path: PathBuf,
        message: String,
    },
    /// The operating system gave no randomness for a new key.
    Random(getrandom::Error),
    /// A bundle file that cannot be read (2), or that does not load or verify (1).
    Inspect {
        path: PathBuf,
        message: String,
        unreadable: bool,
    },
    /// A `--request` file that cannot be read or used.
    Request {
        path: PathBuf,
        message: String,
    },
    Write {
        path: PathBuf,
        error: std::io::Error,
    },
}

impl Failure {
    fn exit_code(&self) -> u8 {
        match self {
            Failure::Invalid(_) | Failure::Bundle(_) => 1,
            Failure::Inspect { unreadable, .. } => {
                if *unreadable {
                    2
                } else {
                    1
                }
            }
            Failure::Read(_)
            | Failure::Claims { .. }
            | Failure::Key { .. }
            | Failure::Random(_)
            | Failure::Request { .. }
            | Failure::Write { .. } => 2,
        }
    }
}

impl fmt::Display for Failure {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Failure::Read(error) => write!(f, "{error}"),
            Failure::Invalid(diags) => {
                let n = diagnostic::count(diags, Severity::Error);
                write!(f, "policy set has {}", count(n, "error"))
            }
            Failure::Bundle(error) => write!(f, "cannot build the bundle: {error}"),
            Failure::Claims { path, message } => {
                write!(
                    f,
                    "cannot use the claims file `{}`: {message}",
                    path.display()
                )
            }
            Failure::Key { path, message } => {
                write!(f, "cannot use the key `{}`: {message}", path.display())
            }
            Failure::Random(error) => write!(
                f,
                "cannot generate a key: the operating system gave no randomness: {error}"
            ),
            Failure::Inspect { path, message, .. } => {
                write!(f, "`{}`: {message}", path.display())
            }
            Failure::Request { path, message } => {
                write!(
                    f,
                    "cannot use the request file `{}`: {message}",
                    path.display()
                )
            }
            Failure::Write { path, error } => {
                write!(f, "cannot write `{}`: {error}", path.display())
            }
        }
    }
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let result = match &cli.command {
        Command::Check(args) => return check(args),
        Command::Build {
            path,
            output,
            claims,
            sign,
        } => claims.load().and_then(|claims| {
            let key = sign.as_deref().map(read_signing_key).transpose()?;
            build(path, output, &claims, key.as_ref())
        }),
        Command::Keygen { out } => keygen(out),
        Command::Inspect { bundle, public_key } => inspect(bundle, public_key.as_deref()),
        Command::Fmt(args) => return format_paths(args),
        Command::Test(args) => return run_tests(args),
        Command::Explain {
            path,
            request,
            format,
            claims,
        } => return explain(path, request, *format, claims),
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
        let _ = write!(stderr, "{}", render(diags, stderr_color()));
    }
    let _ = writeln!(stderr, "error: {failure}");
}

/// Colour on stderr: only on a terminal, and never when `NO_COLOR` is set to anything.
fn stderr_color() -> bool {
    let no_color = std::env::var_os("NO_COLOR").is_some_and(|value| !value.is_empty());
    std::io::stderr().is_terminal() && !no_color
}

/// A policy set that was read and checked.
struct Checked {
    path: String,
    n_files: usize,
    outcome: CheckOutcome,
}

fn check(args: &CheckArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let options = LintOptions {
        max_credential_ttl_s: args.max_ttl,
    };
    let custom_claims = match args.claims.load() {
        Ok(custom_claims) => custom_claims,
        Err(failure) => {
            report(&failure);
            return ExitCode::from(failure.exit_code());
        }
    };
    let mut checked = Vec::new();
    let mut unreadable = Vec::new();
    for path in &paths {
        let display = path.display().to_string();
        match read_policy_path(path) {
            Ok(files) => {
                let mut outcome = analyze_with_claims(&files, &options, &custom_claims);
                outcome
                    .diagnostics
                    .retain(|diag| !args.allow.contains(&diag.code()));
                checked.push(Checked {
                    path: display,
                    n_files: files.len(),
                    outcome,
                });
            }
            Err(error) => unreadable.push((display, error)),
        }
    }
    let run = CheckRun {
        tool_version: env!("CARGO_PKG_VERSION"),
        sets: checked
            .iter()
            .map(|set| CheckedSet {
                path: &set.path,
                n_files: set.n_files,
                diagnostics: &set.outcome.diagnostics,
            })
            .collect(),
        unreadable: unreadable
            .iter()
            .map(|(path, error)| Unreadable {
                path,
                message: error.to_string(),
            })
            .collect(),
    };
    let status = check_status(&run, args.deny_warnings);
    match args.format {
        Format::Human => report_human(&checked, &unreadable, args.deny_warnings),
        Format::Json => report_document(&to_json(&run), &run, status),
        Format::Sarif => {
            let working_dir = std::env::current_dir().ok();
            report_document(&to_sarif(&run, working_dir.as_deref()), &run, status);
        }
    }
    ExitCode::from(status)
}

/// 2 when a path could not be read, else 1 when something fails the check, else 0.
fn check_status(run: &CheckRun<'_>, deny_warnings: bool) -> u8 {
    if !run.unreadable.is_empty() {
        2
    } else if run.count(Severity::Error) > 0 || (deny_warnings && run.count(Severity::Warning) > 0)
    {
        1
    } else {
        0
    }
}

fn report_human(checked: &[Checked], unreadable: &[(String, SourceError)], deny_warnings: bool) {
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let prefix_paths = checked.len() + unreadable.len() > 1;
    for set in checked {
        let prefix = if prefix_paths {
            format!("{}: ", set.path)
        } else {
            String::new()
        };
        let diags = &set.outcome.diagnostics;
        let _ = write!(stderr, "{}", render(diags, stderr_color()));
        let n_errors = set.outcome.count(Severity::Error);
        let n_warnings = set.outcome.count(Severity::Warning);
        match &set.outcome.set {
            Some(policy_set) if n_errors == 0 && !(deny_warnings && n_warnings > 0) => {
                let warnings = if n_warnings > 0 {
                    format!(" ({})", count(n_warnings, "warning"))
                } else {
                    String::new()
                };
                let summary = ok_summary(set.n_files, policy_set);
                let _ = writeln!(stdout, "ok: {prefix}{summary}{warnings}");
            }
            _ => {
                let problems = match (n_errors, n_warnings) {
                    (0, n) => format!("{}, denied by --deny-warnings", count(n, "warning")),
                    (n, 0) => count(n, "error"),
                    (errors, warnings) => {
                        format!("{}, {}", count(errors, "error"), count(warnings, "warning"))
                    }
                };
                let _ = writeln!(stderr, "error: {prefix}policy set has {problems}");
            }
        }
    }
    for (_, error) in unreadable {
        let _ = writeln!(stderr, "error: {error}");
    }
}

/// Prints a JSON or SARIF document, and nothing else, on stdout, and a summary on stderr.
fn report_document(document: &str, run: &CheckRun<'_>, status: u8) {
    let _ = std::io::stdout().lock().write_all(document.as_bytes());
    let verdict = if status == 0 { "ok" } else { "error" };
    let mut summary = format!(
        "{verdict}: {}, {}, {}",
        count(run.sets.len(), "policy set"),
        count(run.count(Severity::Error), "error"),
        count(run.count(Severity::Warning), "warning"),
    );
    if !run.unreadable.is_empty() {
        summary.push_str(&format!(", {} unreadable", run.unreadable.len()));
    }
    let _ = writeln!(std::io::stderr().lock(), "{summary}");
}

fn ok_summary(n_files: usize, set: &PolicySet) -> String {
    format!(
        "{}, {}, {}, {}",
        count(n_files, "file"),
        count(set.workloads.len(), "workload"),
        count(set.targets.len(), "target"),
        count(set.rules.len(), "rule"),
    )
}

/// A warning code given to `--allow`: `W0401` or `gate::W0401`.
fn parse_warning(text: &str) -> Result<Code, String> {
    Code::warning(text).ok_or_else(|| {
        let codes: Vec<&str> = Code::WARNINGS
            .iter()
            .filter_map(|code| code.as_str().strip_prefix("gate::"))
            .collect();
        format!(
            "`{text}` is not a warning code; the warnings are {} (errors cannot be allowed)",
            codes.join(", ")
        )
    })
}

/// A Gate duration such as `1h`, `90m` or `1h30m`, in seconds, read as a policy reads it.
fn parse_duration(text: &str) -> Result<u64, String> {
    lexer::parse_duration(text).map_err(|error| {
        let what = match error {
            DurationError::Malformed => "is not a duration",
            DurationError::Zero => "is zero",
            DurationError::TooLong => "is longer than a year",
        };
        format!("`{text}` {what}; {}", error.help())
    })
}

fn build(
    path: &Path,
    output: &Path,
    custom_claims: &CustomClaims,
    signing_key: Option<&SigningKey>,
) -> Result<String, Failure> {
    let files = read_policy_path(path).map_err(Failure::Read)?;
    let outcome = analyze_with_claims(&files, &LintOptions::default(), custom_claims);
    let n_warnings = outcome.count(Severity::Warning);
    let Some(set) = outcome.set else {
        return Err(Failure::Invalid(outcome.diagnostics));
    };
    // Warnings never stop a build, but they are not kept from the person building either.
    if n_warnings > 0 {
        eprintln!(
            "note: the policy set has {}; `policyc check {}` shows them",
            count(n_warnings, "warning"),
            path.display()
        );
    }
    let mut bundle = Bundle::from_policy_set(&set).map_err(Failure::Bundle)?;
    if let Some(key) = signing_key {
        bundle = bundle.sign(key);
    }
    let bytes = bundle.to_bytes();
    let write_error = |error| Failure::Write {
        path: output.to_owned(),
        error,
    };
    let target = bundle_target(output, &files).map_err(write_error)?;
    write_atomically(&target, &bytes).map_err(write_error)?;
    let signed = match bundle.signature() {
        Some(signature) => {
            let at = signature
                .signed_at()
                .map(|seconds| format!(" at {}", signing::signing_time_text(seconds)))
                .unwrap_or_default();
            format!(", signed by key {}{at}", signature.key_id())
        }
        None => String::new(),
    };
    let hash = bundle.hash_hex();
    // The bound the engine computes when it loads this bundle, and runs each decision under.
    let bound = Program::from_bundle(bundle)
        .map_err(Failure::Bundle)?
        .instruction_bound();
    Ok(format!(
        "wrote {} ({} bytes, bundle sha256:{hash}{signed})\n\
         a decision runs at most {bound} instructions",
        output.display(),
        bytes.len(),
    ))
}

/// `policyc explain`: the decision and its trace on stdout; exit 0 for an allow, 3 for a deny.
fn explain(path: &Path, request: &Path, format: ExplainFormat, claims: &ClaimsArg) -> ExitCode {
    let decided = claims.load().and_then(|custom_claims| {
        let failure = |message: String| Failure::Request {
            path: request.to_owned(),
            message,
        };
        let text = read_small_file(request, MAX_REQUEST_FILE_BYTES).map_err(failure)?;
        let parsed = RequestFile::parse(&text, &custom_claims)
            .map_err(|error| failure(error.to_string()))?;
        let files = read_policy_path(path).map_err(Failure::Read)?;
        let outcome = analyze_with_claims(&files, &LintOptions::default(), &custom_claims);
        let Some(set) = outcome.set else {
            return Err(Failure::Invalid(outcome.diagnostics));
        };
        let bundle = Bundle::from_policy_set(&set).map_err(Failure::Bundle)?;
        let program = Program::from_bundle(bundle).map_err(Failure::Bundle)?;
        let explanation = program.explain(&parsed.request());
        let shown = match format {
            ExplainFormat::Text => explanation.to_text(),
            ExplainFormat::Json => format!("{:#}\n", explanation.to_json()),
        };
        Ok((explanation.decision.allow, shown))
    });
    match decided {
        Ok((allow, shown)) => {
            print!("{shown}");
            if allow {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(3)
            }
        }
        Err(failure) => {
            report(&failure);
            ExitCode::from(failure.exit_code())
        }
    }
}

/// Key files larger than this are refused unread; a PEM ed25519 key takes about 120 bytes.
const MAX_KEY_FILE_BYTES: u64 = 64 * 1024;

/// Reads a small UTF-8 file (a key, a request, a claims file): a regular file of at most
/// `limit` bytes, counted as it is read, so neither a pipe, a device nor a file that grows
/// meanwhile can make it read without end. The error is the problem alone, for the caller
/// to name the file.
fn read_small_file(path: &Path, limit: u64) -> Result<String, String> {
    let bytes = read_small_bytes(path, limit)?;
    String::from_utf8(bytes).map_err(|_| "it is not UTF-8 text".to_owned())
}

/// [`read_small_file`]'s bytes, whatever they are.
fn read_small_bytes(path: &Path, limit: u64) -> Result<Vec<u8>, String> {
    use std::io::Read as _;

    // Looked at before it is opened: opening a named pipe waits for a writer.
    if !fs::metadata(path)
        .map_err(|error| error.to_string())?
        .is_file()
    {
        return Err("it is not a regular file".to_owned());
    }
    let file = fs::File::open(path).map_err(|error| error.to_string())?;
    let metadata = file.metadata().map_err(|error| error.to_string())?;
    if !metadata.is_file() {
        return Err("it is not a regular file".to_owned());
    }
    // Refused before reading; the bounded read below still stops a file that grows meanwhile.
    if metadata.len() > limit {
        return Err(format!("the file is larger than {limit} bytes"));
    }
    let mut bytes = Vec::new();
    file.take(limit.saturating_add(1))
        .read_to_end(&mut bytes)
        .map_err(|error| error.to_string())?;
    if bytes.len() as u64 > limit {
        return Err(format!("the file is larger than {limit} bytes"));
    }
    Ok(bytes)
}

/// `policyc inspect`: the bundle's identity, size and signature; with a public key, whether a
/// server holding that key would admit it.
fn inspect(path: &Path, public_key: Option<&Path>) -> Result<String, Failure> {
    let failure = |message: String, unreadable: bool| Failure::Inspect {
        path: path.to_owned(),
        message,
        unreadable,
    };
    let bytes =
        read_small_bytes(path, MAX_BUNDLE_FILE_BYTES).map_err(|message| failure(message, true))?;
    let key = public_key
        .map(|key_path| {
            let text = read_small_file(key_path, MAX_KEY_FILE_BYTES)
                .and_then(|text| verifying_key_from_pem(&text).map_err(|error| error.to_string()));
            text.map_err(|message| Failure::Key {
                path: key_path.to_owned(),
                message,
            })
        })
        .transpose()?;
    let bundle = Bundle::from_bytes(&bytes).map_err(|error| failure(error.to_string(), false))?;
    let program =
        Program::from_bundle(bundle.clone()).map_err(|error| failure(error.to_string(), false))?;
    let mut lines = vec![
        format!(
            "bundle sha256:{} ({} bytes, format version {FORMAT_VERSION})",
            bundle.hash_hex(),
            bytes.len()
        ),
        format!(
            "{}, {}, {}, {}; at most {} per decision",
            count(bundle.rules().len(), "rule"),
            count(bundle.workloads().len(), "workload"),
            count(bundle.targets().len(), "target"),
            count(bundle.credentials().len(), "credential"),
            count(program.instruction_bound(), "instruction")
        ),
    ];
    lines.push(match bundle.signature() {
        None => "not signed".to_owned(),
        Some(signature) => match signature.signed_at() {
            Some(seconds) => format!(
                "signed by key {} at {}",
                signature.key_id(),
                signing::signing_time_text(seconds)
            ),
            None => format!(
                "signed by key {} without a signing time (algorithm 1): a server that checks \
                 signatures refuses it; sign it again",
                signature.key_id()
            ),
        },
    });
    if let (Some(key), Some(key_path)) = (&key, public_key) {
        Bundle::from_bytes_verified(&bytes, key).map_err(|error| {
            failure(
                format!(
                    "a server with the public key `{}` refuses it: {error}",
                    key_path.display()
                ),
                false,
            )
        })?;
        lines.push(format!(
            "the signature verifies with `{}` (key {})",
            key_path.display(),
            signing::key_id(key)
        ));
    }
    Ok(lines.join("\n"))
}

/// Reads the private key of `--sign`.
fn read_signing_key(path: &Path) -> Result<SigningKey, Failure> {
    let failure = |message: String| Failure::Key {
        path: path.to_owned(),
        message,
    };
    let text = Zeroizing::new(read_small_file(path, MAX_KEY_FILE_BYTES).map_err(failure)?);
    let key = signing_key_from_pem(&text).map_err(|error| failure(error.to_string()))?;
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt as _;
        if fs::metadata(path).is_ok_and(|metadata| metadata.permissions().mode() & 0o077 != 0) {
            eprintln!(
                "warning: the signing key `{}` can be read by other users; `chmod 600` it \
                 (`policyc keygen` makes keys readable by their owner only)",
                path.display()
            );
        }
    }
    Ok(key)
}

/// `policyc keygen`: a new key pair, the private key at `out` (owner only) and the public key
/// beside it. Neither file may exist; if the second cannot be written, the first is removed.
fn keygen(out: &Path) -> Result<String, Failure> {
    let public_path = public_key_path(out);
    for path in [out, public_path.as_path()] {
        if fs::symlink_metadata(path).is_ok() {
            return Err(Failure::Write {
                path: path.to_owned(),
                error: std::io::Error::other("refusing to replace it: it already exists"),
            });
        }
    }
    let mut seed = Zeroizing::new([0u8; 32]);
    getrandom::fill(seed.as_mut_slice()).map_err(Failure::Random)?;
    let key = SigningKey::from_bytes(&seed);
    let encode_failure = |error: KeyError| Failure::Key {
        path: out.to_owned(),
        message: error.to_string(),
    };
    let private_pem = signing_key_to_pem(&key).map_err(encode_failure)?;
    let public_pem = verifying_key_to_pem(&key.verifying_key()).map_err(encode_failure)?;
    let write_failure = |path: &Path, error| Failure::Write {
        path: path.to_owned(),
        error,
    };
    write_new_file(out, private_pem.as_bytes(), true).map_err(|error| write_failure(out, error))?;
    if let Err(error) = write_new_file(&public_path, public_pem.as_bytes(), false) {
        let _ = fs::remove_file(out);
        return Err(write_failure(&public_path, error));
    }
    Ok(format!(
        "wrote {} (private key, mode 0600) and {} (public key, key {})",
        out.display(),
        public_path.display(),
        signing::key_id(&key.verifying_key())
    ))
}

/// `PATH.pub`: the path with `.pub` appended to its file name.
fn public_key_path(private: &Path) -> PathBuf {
    let mut name = private.as_os_str().to_owned();
    name.push(".pub");
    PathBuf::from(name)
}

/// Creates a file that must not exist yet (a link standing there counts), readable and
/// writable by its owner only when `owner_only`, and flushes it to disk.
fn write_new_file(path: &Path, bytes: &[u8], owner_only: bool) -> std::io::Result<()> {
    let mut options = fs::OpenOptions::new();
    options.write(true).create_new(true);
    #[cfg(unix)]
    if owner_only {
        std::os::unix::fs::OpenOptionsExt::mode(&mut options, 0o600);
    }
    #[cfg(not(unix))]
    let _ = owner_only;
    let mut file = options.open(path)?;
    file.write_all(bytes)?;
    file.sync_all()
}

/// Where a bundle for `output` may be written: `output` itself, or the file a symlink there
/// points to. Anything else that already stands at that path (a directory, a device, a pipe)
/// or one of the policy set's own source files is refused, never replaced.
fn bundle_target(output: &Path, sources: &[SourceFile]) -> std::io::Result<PathBuf> {
    let refuse = |why: &str| std::io::Error::other(format!("refusing to replace it: {why}"));
    let Ok(metadata) = fs::symlink_metadata(output) else {
        return Ok(output.to_owned());
    };
    let target = if metadata.file_type().is_symlink() {
        fs::canonicalize(output)?
    } else {
        output.to_owned()
    };
    if !fs::metadata(&target)?.is_file() {
        return Err(refuse("it is not a regular file"));
    }
    let canonical = fs::canonicalize(&target)?;
    let is_source = sources
        .iter()
        .filter_map(|file| fs::canonicalize(&file.name).ok())
        .any(|source| source == canonical);
    if is_source {
        return Err(refuse("it is a source file of the policy set"));
    }
    Ok(target)
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

const FMT_HELP: &str = "\
Each PATH is a `.gate` file, or a directory whose `.gate` files, found recursively, are
formatted one by one. Without --check, each file that changes is replaced atomically and its
path printed on stdout; nothing else goes to stdout. A file that does not parse is reported on
stderr and left as it is. The layout is described in docs/gate.md, \"Formatting\".

Exit status: 0 every file formatted (with --check: already formatted), 1 a file that does not
parse or, with --check, a file that would change, 2 a usage error or a path that cannot be read
or written.

Examples:
  policyc fmt examples/policies
  policyc fmt --check policies/";

#[derive(Debug, clap::Args)]
struct FmtArgs {
    /// Files or directories to format [default: .]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// Change nothing: print the files that would change, and exit 1 if there are any
    #[arg(long)]
    check: bool,
}

/// `policyc fmt`: formats every file under `args.paths`, or with `--check` only names those that
/// are not formatted. Returns the exit status.
fn format_paths(args: &FmtArgs) -> ExitCode {
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let mut stdout = std::io::stdout().lock();
    let mut stderr = std::io::stderr().lock();
    let mut status = 0u8;
    let mut n_unformatted = 0usize;
    for path in &paths {
        let files = match read_policy_path(path) {
            Ok(files) => files,
            Err(error) => {
                let _ = writeln!(stderr, "error: {error}");
                status = 2;
                continue;
            }
        };
        for file in files {
            let formatted = match portcullis_lang::fmt::format_source(&file.name, &file.text) {
                Ok(formatted) if formatted == file.text => continue,
                Ok(formatted) => formatted,
                Err(error) => {
                    if let portcullis_lang::fmt::FormatError::Syntax { diagnostics, .. } = &error {
                        let _ = write!(stderr, "{}", render(diagnostics, stderr_color()));
                    }
                    let _ = writeln!(stderr, "error: {error}; it is left as it is");
                    status = status.max(1);
                    continue;
                }
            };
            if args.check {
                n_unformatted += 1;
                status = status.max(1);
            } else if let Err(error) = replace_file(Path::new(&file.name), &formatted) {
                let _ = writeln!(stderr, "error: cannot write `{}`: {error}", file.name);
                status = 2;
                continue;
            }
            let _ = writeln!(stdout, "{}", printable(&file.name));
        }
    }
    if n_unformatted > 0 {
        let files = count(n_unformatted, "file");
        let _ = writeln!(
            stderr,
            "error: {files} not formatted; `policyc fmt` rewrites them"
        );
    }
    ExitCode::from(status)
}

/// Replaces a policy file with its formatted text, atomically, keeping its permissions; a
/// symbolic link is followed, so the file it points to is the one replaced.
fn replace_file(path: &Path, text: &str) -> std::io::Result<()> {
    let target = fs::canonicalize(path)?;
    let permissions = fs::metadata(&target)?.permissions();
    write_atomically(&target, text.as_bytes())?;
    fs::set_permissions(&target, permissions)
}

const TEST_HELP: &str = "\
Each PATH is one policy set: a `.gate` file, or a directory whose `.gate` files, found
recursively, are compiled together. Every `test` declaration runs against its policy set with
the reference evaluator; `test` declarations never reach a bundle.

Output: with `--format human`, on stdout one line per test, then for each failure what was
expected and what was decided, a summary line `N passed; M failed`, and the rules that decide
no test; compile errors go to stderr. With `json` or `junit`, stdout carries only the document
(docs/gate.md, \"Tests\"), which holds compile errors too; stderr has the compile errors as a
person reads them and a one-line summary.

Exit status: 0 every test passes, 1 a test fails, a policy set has errors or declares no test,
2 a usage error or a path that cannot be read.

Examples:
  policyc test examples/policies
  policyc test --format json policies/ | jq '.summary'
  policyc test --format junit policies/ > policy-tests.xml
  policyc test --claims custom-claims.json policies/";

#[derive(Debug, clap::Args)]
struct TestArgs {
    /// Policy sets to test, each a `.gate` file or a directory [default: .]
    #[arg(value_name = "PATH")]
    paths: Vec<PathBuf>,
    /// How to report: for a person, or a JSON or JUnit XML document, on stdout
    #[arg(long, value_enum, default_value_t = TestFormat::Human)]
    format: TestFormat,
    #[command(flatten)]
    claims: ClaimsArg,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum)]
enum TestFormat {
    Human,
    Json,
    Junit,
}

/// One PATH of `policyc test`: its files, and its compiled tests or why there are none.
struct TestedPath {
    path: String,
    files: Vec<SourceFile>,
    compiled: Result<TestSuite, Failure>,
}

/// `policyc test`: compiles each policy set and runs its tests; the worst status wins.
fn run_tests(args: &TestArgs) -> ExitCode {
    let custom_claims = match args.claims.load() {
        Ok(claims) => claims,
        Err(failure) => {
            report(&failure);
            return ExitCode::from(failure.exit_code());
        }
    };
    let paths = if args.paths.is_empty() {
        vec![PathBuf::from(".")]
    } else {
        args.paths.clone()
    };
    let tested: Vec<TestedPath> = paths
        .iter()
        .map(|path| compile_tests(path, &custom_claims))
        .collect();
    // A run borrows its suite's tests, so the runs are made once every suite is compiled.
    let runs: Vec<Option<TestRun<'_>>> = tested
        .iter()
        .map(|tested| {
            let suite = tested.compiled.as_ref().ok()?;
            Some(policy_test::run(&suite.set, &suite.tests))
        })
        .collect();
    let mut status = 0;
    for (tested, run) in tested.iter().zip(&runs) {
        let code = report_tested_path(tested, run.as_ref(), args.format);
        status = status.max(code);
    }
    if args.format != TestFormat::Human {
        report_test_document(&tested, &runs, args.format, status);
    }
    ExitCode::from(status)
}

fn compile_tests(path: &Path, custom_claims: &CustomClaims) -> TestedPath {
    let (files, compiled) = match read_policy_path(path) {
        Ok(files) => {
            let compiled = policy_test::compile(&files, custom_claims).map_err(Failure::Invalid);
            (files, compiled)
        }
        Err(error) => (Vec::new(), Err(Failure::Read(error))),
    };
    TestedPath {
        path: path.display().to_string(),
        files,
        compiled,
    }
}

/// Prints what a person reads of one policy set's run: with `--format human` the run itself on
/// stdout; in every format its errors on stderr. Returns its exit status.
fn report_tested_path(tested: &TestedPath, run: Option<&TestRun<'_>>, format: TestFormat) -> u8 {
    let run = match (&tested.compiled, run) {
        (Ok(_), Some(run)) => run,
        (Err(failure), _) => {
            report(failure);
            return failure.exit_code();
        }
        (Ok(_), None) => return 1,
    };
    if run.outcomes.is_empty() {
        // No run to show: a summary of zero tests would read as a pass.
        eprintln!("error: {}", test_report::no_tests_message(&tested.path));
        return 1;
    }
    if format == TestFormat::Human {
        let mut stdout = std::io::stdout().lock();
        let _ = writeln!(stdout, "{}:", printable(&tested.path));
        let _ = write!(stdout, "{}", policy_test::render(run, &tested.files));
    }
    u8::from(run.n_failed() > 0)
}

/// Prints the JSON or JUnit document, and nothing else, on stdout, and a summary on stderr.
fn report_test_document(
    tested: &[TestedPath],
    runs: &[Option<TestRun<'_>>],
    format: TestFormat,
    status: u8,
) {
    let mut report = TestReport {
        tool_version: env!("CARGO_PKG_VERSION"),
        sets: Vec::new(),
        unreadable: Vec::new(),
    };
    for (tested, run) in tested.iter().zip(runs) {
        let result = match (&tested.compiled, run) {
            (Ok(suite), Some(run)) => SetResult::Ran { suite, run },
            (Err(Failure::Invalid(diagnostics)), _) => SetResult::Invalid(diagnostics),
            (Err(failure), _) => {
                let message = failure.to_string();
                report.unreadable.push(Unreadable {
                    path: &tested.path,
                    message,
                });
                continue;
            }
            (Ok(_), None) => continue,
        };
        report.sets.push(TestedSet {
            path: &tested.path,
            files: &tested.files,
            result,
        });
    }
    let document = match format {
        TestFormat::Junit => test_report::to_junit(&report),
        TestFormat::Json | TestFormat::Human => test_report::to_json(&report),
    };
    let _ = std::io::stdout().lock().write_all(document.as_bytes());
    let verdict = if status == 0 { "ok" } else { "error" };
    let mut summary = format!(
        "{verdict}: {}, {} passed, {} failed",
        count(report.sets.len(), "policy set"),
        report.n_passed(),
        report.n_failed(),
    );
    if report.n_errors() > 0 {
        summary.push_str(&format!(", {}", count(report.n_errors(), "error")));
    }
    if !report.unreadable.is_empty() {
        summary.push_str(&format!(", {} unreadable", report.unreadable.len()));
    }
    let _ = writeln!(std::io::stderr().lock(), "{summary}");
}
