//! The `portcullis` command: wiring only. Each subcommand reads its inputs, calls into the
//! engine, the audit store or the language crate, and prints the outcome.

mod audit_api;
mod audit_integrity;
mod compliance;
mod config;
mod credential;
mod dashboard;
mod dev;
mod policy;
mod reload;
mod serve;

use std::io::Write as _;
use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand, ValueEnum};

/// mimalloc for Rust's allocations and, through the workspace's `override` feature, for the
/// C libraries' `malloc` as well.
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

#[derive(Debug, Parser)]
#[command(
    name = "portcullis",
    version,
    about = "Workload access: decide, credential, audit"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run the decision API on the policy set named by the configuration.
    Serve {
        #[arg(long, default_value = "portcullis.toml")]
        config: PathBuf,
        /// Overrides `server.listen`.
        #[arg(long)]
        listen: Option<std::net::SocketAddr>,
        /// Overrides `audit.data_dir`.
        #[arg(long)]
        data_dir: Option<PathBuf>,
    },
    /// Get a credential for a target with the evidence this CI job or pod already has, and
    /// print it for the next step. Exits 2, with the reason, when the server refuses.
    Credential(credential::CredentialArgs),
    /// Work with the audit store.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
    /// Judge the built-in SOC 2 and NIST SP 800-53 controls against the audit store.
    Compliance {
        #[command(subcommand)]
        command: ComplianceCommand,
    },
    /// Helpers for trying Portcullis out locally; never for production.
    Dev {
        #[command(subcommand)]
        command: dev::DevCommand,
    },
}

#[derive(Debug, Subcommand)]
enum AuditCommand {
    /// Run one read-only SQL query over the access events (table `access_events`).
    Query {
        sql: String,
        #[arg(long, value_enum, default_value_t = Format::Table)]
        format: Format,
        /// The audit data directory (default: the configuration's, else `portcullis-data`).
        #[arg(long)]
        data_dir: Option<PathBuf>,
        /// Read the data directory from this configuration file.
        #[arg(long)]
        config: Option<PathBuf>,
    },
    /// Check the store's integrity: every segment against its manifest entry (SHA-256, events,
    /// seq and time range), the hash chain, and the signed checkpoints. Fails naming the first
    /// mismatch.
    Verify {
        #[command(flatten)]
        store: audit_integrity::StoreArgs,
        /// Check the checkpoints against this public key (SPKI PEM, as `portcullis audit key`
        /// prints it) instead of the one in the data directory.
        #[arg(long)]
        public_key: Option<PathBuf>,
        /// Also show that the store still extends this entry of an earlier verification
        /// (`ENTRY:HASH`, as the `anchor:` line of its output gives it): that no entry was cut
        /// from the manifest's end since.
        #[arg(long, value_name = "ENTRY:HASH")]
        extends: Option<portcullis_audit::verify::Anchor>,
    },
    /// Print the public key that signs the store's checkpoints (SPKI PEM), to pin it.
    Key {
        #[command(flatten)]
        store: audit_integrity::StoreArgs,
    },
    /// Replace the key that signs the store's checkpoints with a new one, which the old key
    /// vouches for in the chain. The server must be stopped.
    RotateKey {
        #[command(flatten)]
        store: audit_integrity::StoreArgs,
    },
}

#[derive(Debug, Subcommand)]
enum ComplianceCommand {
    /// Evaluate every control: pass, fail or not applicable, with the evidence counted and the
    /// failing rows. Exits 3 when a control fails or could not be judged.
    Report(compliance::ReportArgs),
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Format {
    Table,
    Csv,
    Json,
}

fn main() -> ExitCode {
    let cli = Cli::parse();
    let outcome = match cli.command {
        Command::Serve {
            config,
            listen,
            data_dir,
        } => serve::run(&config, listen, data_dir.as_deref()),
        Command::Audit {
            command:
                AuditCommand::Query {
                    sql,
                    format,
                    data_dir,
                    config,
                },
        } => audit_query(&sql, format, data_dir, config),
        Command::Audit {
            command:
                AuditCommand::Verify {
                    store,
                    public_key,
                    extends,
                },
        } => audit_integrity::verify(&store, public_key.as_deref(), extends),
        Command::Audit {
            command: AuditCommand::Key { store },
        } => audit_integrity::key(&store),
        Command::Audit {
            command: AuditCommand::RotateKey { store },
        } => audit_integrity::rotate_key(&store),
        Command::Compliance {
            command: ComplianceCommand::Report(args),
        } => match compliance::report(&args) {
            Ok(true) => Ok(()),
            Ok(false) => return ExitCode::from(compliance::FINDINGS),
            Err(err) => Err(err),
        },
        Command::Dev { command } => dev::run(command),
        Command::Credential(args) => match credential::run(&args) {
            Ok(credential::Outcome::Issued) => Ok(()),
            Ok(credential::Outcome::Refused) => return ExitCode::from(credential::REFUSED),
            Err(err) => Err(err),
        },
    };
    match outcome {
        Ok(()) => ExitCode::SUCCESS,
        Err(err) => {
            eprintln!("error: {}", error_chain(&err));
            ExitCode::FAILURE
        }
    }
}

/// The error and its causes on one line, each cause once: many library errors already repeat
/// their source in their own message.
fn error_chain(err: &anyhow::Error) -> String {
    let mut text = String::new();
    for cause in err.chain() {
        let message = cause.to_string();
        if text.contains(message.trim()) {
            continue;
        }
        if !text.is_empty() {
            text.push_str(": ");
        }
        text.push_str(message.trim());
    }
    text
}

fn audit_query(
    sql: &str,
    format: Format,
    data_dir: Option<PathBuf>,
    config: Option<PathBuf>,
) -> anyhow::Result<()> {
    // The configuration, when named, gives the store and the query limits.
    let config = config.map(|path| config::Config::load(&path)).transpose()?;
    let limits = config
        .as_ref()
        .map(|config| config.audit.query_limits())
        .unwrap_or_default();
    let data_dir = match (data_dir, &config) {
        (Some(dir), _) => dir,
        (None, Some(config)) => config.data_dir(None),
        (None, None) => PathBuf::from(config::DEFAULT_DATA_DIR),
    };
    audit_integrity::check_store_dir(&data_dir)?;
    let format = match format {
        Format::Table => portcullis_audit::OutputFormat::Table,
        Format::Csv => portcullis_audit::OutputFormat::Csv,
        Format::Json => portcullis_audit::OutputFormat::Json,
    };
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?;
    let batches = runtime.block_on(portcullis_audit::query::query_with_limits(
        &data_dir, sql, limits,
    ))?;
    let mut out = std::io::stdout().lock();
    let text = if std::io::IsTerminal::is_terminal(&out) {
        portcullis_audit::format_batches_for_terminal(&batches, format)?
    } else {
        portcullis_audit::format_batches(&batches, format)?
    };
    let newline = if text.ends_with('\n') || text.is_empty() {
        ""
    } else {
        "\n"
    };
    match write!(out, "{text}{newline}").and_then(|()| out.flush()) {
        // A reader that stopped early (`| head`) wanted no more.
        Err(error) if error.kind() == std::io::ErrorKind::BrokenPipe => Ok(()),
        other => Ok(other?),
    }
}
