//! `portcullis credential`: for CI jobs and scripts where no sidecar runs. Finds the evidence
//! the platform gives the job, exchanges it at `POST /v1/credentials`, and prints the
//! credential for the next step.
//!
//! Evidence, first found wins: `--token-file`; GitHub Actions' ID-token request
//! (`ACTIONS_ID_TOKEN_REQUEST_URL` and `ACTIONS_ID_TOKEN_REQUEST_TOKEN`, asked for
//! `--audience`); a GitLab CI `id_tokens` variable (`--gitlab-variable`); HCP Terraform's
//! `TFC_WORKLOAD_IDENTITY_TOKEN`; a Kubernetes projected service-account token file
//! (`--kubernetes-token-file`). The evidence is sent to the server only, over `https` or to
//! a loopback address.

use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, Result, bail};
use clap::{Args, ValueEnum};
use portcullis_engine::http::{
    TrustRoots, agent, agent_trusting, check_url, percent_encode, read_limited,
};
use serde_json::{Value, json};

use crate::config::read_bounded;

/// The largest answer read from the server or from an ID-token endpoint.
const MAX_ANSWER_BYTES: u64 = 1024 * 1024;

/// The largest token file read.
const MAX_TOKEN_FILE_BYTES: u64 = 64 * 1024;

/// How long one HTTP exchange may take.
const TIMEOUT: Duration = Duration::from_secs(30);

/// The exit status when the server refused: the reason is on standard error.
pub const REFUSED: u8 = 2;

#[derive(Debug, Args)]
pub struct CredentialArgs {
    /// The target to get a credential for, by name.
    #[arg(long)]
    target: String,
    /// The Portcullis server; default `PORTCULLIS_URL`, else http://127.0.0.1:8181.
    #[arg(long)]
    server: Option<String>,
    /// `env`: `NAME=value` lines, for `$GITHUB_ENV` or a `.env` file; `json`: the credential
    /// object.
    #[arg(long, value_enum, default_value_t = Output::Env)]
    format: Output,
    /// The variable `env` output names; its expiry goes in `NAME_EXPIRES_AT`.
    #[arg(long, default_value = "PORTCULLIS_CREDENTIAL")]
    env_name: String,
    /// Read the evidence token from this file instead of finding it.
    #[arg(long)]
    token_file: Option<PathBuf>,
    /// GitHub Actions: the audience to ask the ID-token endpoint for.
    #[arg(long, default_value = "portcullis")]
    audience: String,
    /// GitLab CI: the variable an `id_tokens` entry of the job defines.
    #[arg(long, default_value = "PORTCULLIS_ID_TOKEN")]
    gitlab_variable: String,
    /// Kubernetes: the projected service-account token file.
    #[arg(long, default_value = "/var/run/secrets/tokens/portcullis")]
    kubernetes_token_file: PathBuf,
    /// The request's action, for policies that read `request.action`.
    #[arg(long)]
    action: Option<String>,
    /// The request's resource: for policies that read `request.resource`, and for a `postgres`
    /// target that declares a `database`, which it must name (`DATABASE`).
    #[arg(long)]
    resource: Option<String>,
    /// A PEM file of the CAs the server's certificate must chain to, in place of the Mozilla
    /// roots: for a server under a company's own CA.
    #[arg(long)]
    ca_file: Option<PathBuf>,
}

#[derive(Debug, Clone, Copy, ValueEnum)]
enum Output {
    Env,
    Json,
}

/// What became of the request.
pub enum Outcome {
    Issued,
    /// The server answered with a refusal, printed.
    Refused,
}

pub fn run(args: &CredentialArgs) -> Result<Outcome> {
    let server = match &args.server {
        Some(server) => server.clone(),
        None => {
            std::env::var("PORTCULLIS_URL").unwrap_or_else(|_| "http://127.0.0.1:8181".to_owned())
        }
    };
    let server = server.trim_end_matches('/').to_owned();
    check_url(&server).context("the server's URL")?;
    if !valid_env_name(&args.env_name) {
        bail!(
            "`--env-name {}` is not a variable name: letters, digits and `_`, not starting \
             with a digit",
            args.env_name
        );
    }
    if args.ca_file.is_some() && server.starts_with("http://") {
        bail!("`--ca-file` is for a server reached over `https`; `{server}` is plain `http`");
    }
    let roots = match &args.ca_file {
        Some(path) => TrustRoots::from_pem_file(path)
            .map_err(anyhow::Error::msg)
            .context("--ca-file")?,
        None => TrustRoots::default(),
    };
    let (token, found_in) = evidence(args)?;
    let mut request = json!({
        "evidence": { "token": token },
        "target": { "name": args.target },
    });
    if args.action.is_some() || args.resource.is_some() {
        request["request"] = json!({ "action": args.action, "resource": args.resource });
    }
    let url = format!("{server}/v1/credentials");
    let (status, answer) = post(&url, &request, &roots).map_err(|error| {
        let hint = if format!("{error:#}").contains("UnknownIssuer") {
            " (a server under a private CA needs that CA in `--ca-file`)"
        } else {
            ""
        };
        error.context(format!(
            "asking {url} (with the evidence from {found_in}){hint}"
        ))
    })?;
    match status {
        200 => {
            print(args, &answer)?;
            Ok(Outcome::Issued)
        }
        403 => {
            let reason = answer["reason"].as_str().unwrap_or("no reason given");
            let code = answer["reason_code"].as_str().unwrap_or("unknown");
            eprintln!(
                "refused: {reason} ({code}; event {})",
                answer["event_id"].as_str().unwrap_or("none")
            );
            Ok(Outcome::Refused)
        }
        503 => {
            // Allowed, but the server could not issue or record: worth a retry, not a denial.
            let reason = answer["reason"].as_str().unwrap_or("no reason given");
            let code = answer["reason_code"].as_str().unwrap_or("unknown");
            bail!("the server could not issue the credential: {reason} ({code})")
        }
        _ => {
            let message = answer["error"]
                .as_str()
                .map_or_else(|| answer.to_string(), str::to_owned);
            bail!("the server answered {status}: {message}")
        }
    }
}

fn valid_env_name(name: &str) -> bool {
    let mut chars = name.chars();
    chars
        .next()
        .is_some_and(|first| first.is_ascii_alphabetic() || first == '_')
        && chars.all(|c| c.is_ascii_alphanumeric() || c == '_')
}

fn print(args: &CredentialArgs, answer: &Value) -> Result<()> {
    let credential = &answer["credential"];
    if std::env::var("GITHUB_ACTIONS").is_ok_and(|value| value == "true") {
        mask_in_github_log(credential);
    }
    match args.format {
        Output::Json => println!("{credential}"),
        Output::Env => {
            let value = credential["value"]
                .as_str()
                .context("the server's answer has no credential value")?;
            if value.contains(['\n', '\r']) {
                bail!(
                    "the credential spans lines, which `NAME=value` cannot hold; use --format json"
                );
            }
            println!("{}={value}", args.env_name);
            if let Some(expires_at) = credential["expires_at"].as_str() {
                println!("{}_EXPIRES_AT={expires_at}", args.env_name);
            }
        }
    }
    Ok(())
}

/// Asks the GitHub Actions runner to mask the credential in the job's log from here on, so
/// that a later step which prints it shows `***`. The runner reads workflow commands from
/// standard error as well as standard output; standard error keeps them out of `$GITHUB_ENV`
/// when standard output is appended to it.
fn mask_in_github_log(credential: &Value) {
    let Some(value) = credential["value"].as_str() else {
        return;
    };
    let mut secrets: Vec<&str> = value.lines().collect();
    // A step may print the password of a connection URI on its own.
    if let Some(password) = uri_password(value) {
        secrets.push(password);
    }
    for secret in secrets
        .into_iter()
        .filter(|secret| !secret.trim().is_empty())
    {
        eprintln!("::add-mask::{}", workflow_command_data(secret));
    }
}

/// `text` as the data of a workflow command: the runner turns `%25`, `%0D` and `%0A` back
/// into `%`, CR and LF, so a `%` of the value itself must be written `%25`, or the runner
/// would mask another string.
fn workflow_command_data(text: &str) -> String {
    text.replace('%', "%25")
        .replace('\r', "%0D")
        .replace('\n', "%0A")
}

/// The password of `scheme://user:password@host…`, if the value is such a URI.
fn uri_password(value: &str) -> Option<&str> {
    let (_, rest) = value.split_once("://")?;
    let authority = rest.split(['/', '?', '#']).next()?;
    let (userinfo, _) = authority.rsplit_once('@')?;
    let (_, password) = userinfo.split_once(':')?;
    Some(password)
}

/// The evidence token and where it came from.
fn evidence(args: &CredentialArgs) -> Result<(String, String)> {
    let var = |name: &str| std::env::var(name).ok().filter(|value| !value.is_empty());
    if let Some(path) = &args.token_file {
        return Ok((read_token(path)?, format!("`{}`", path.display())));
    }
    if let Some(url) = var("ACTIONS_ID_TOKEN_REQUEST_URL") {
        let Some(bearer) = var("ACTIONS_ID_TOKEN_REQUEST_TOKEN") else {
            bail!(
                "GitHub Actions: ACTIONS_ID_TOKEN_REQUEST_URL is set but \
                 ACTIONS_ID_TOKEN_REQUEST_TOKEN is not; give the job `permissions: id-token: write`"
            );
        };
        let token = github_token(&url, &bearer, &args.audience)
            .context("GitHub Actions' ID-token request failed")?;
        return Ok((token, "GitHub Actions' ID-token endpoint".to_owned()));
    }
    if var("GITLAB_CI").is_some() {
        let Some(token) = var(&args.gitlab_variable) else {
            bail!(
                "this is a GitLab CI job, but `{0}` is not set: give the job \
                 `id_tokens: {{ {0}: {{ aud: ... }} }}`, or name the variable with \
                 --gitlab-variable",
                args.gitlab_variable
            );
        };
        return Ok((token, format!("GitLab's `{}`", args.gitlab_variable)));
    }
    if let Some(token) = var("TFC_WORKLOAD_IDENTITY_TOKEN") {
        return Ok((token, "`TFC_WORKLOAD_IDENTITY_TOKEN`".to_owned()));
    }
    if var("KUBERNETES_SERVICE_HOST").is_some() {
        let path = &args.kubernetes_token_file;
        let token = read_token(path).with_context(|| {
            "this runs in a Kubernetes pod; mount a projected service-account token there, or \
             name it with --kubernetes-token-file"
        })?;
        return Ok((token, format!("`{}`", path.display())));
    }
    bail!(
        "no evidence found: not GitHub Actions with `id-token: write` \
         (ACTIONS_ID_TOKEN_REQUEST_URL), not GitLab CI (GITLAB_CI), not HCP Terraform \
         (TFC_WORKLOAD_IDENTITY_TOKEN), not a Kubernetes pod (KUBERNETES_SERVICE_HOST); \
         give --token-file"
    )
}

fn read_token(path: &Path) -> Result<String> {
    let text = read_bounded(path, MAX_TOKEN_FILE_BYTES)
        .with_context(|| format!("cannot read the token file `{}`", path.display()))?;
    let token = text.trim();
    if token.is_empty() {
        bail!("the token file `{}` is empty", path.display());
    }
    Ok(token.to_owned())
}

/// Asks GitHub Actions' ID-token endpoint for a token for `audience`.
fn github_token(url: &str, bearer: &str, audience: &str) -> Result<String> {
    check_url(url)?;
    let separator = if url.contains('?') { '&' } else { '?' };
    let url = format!("{url}{separator}audience={}", percent_encode(audience));
    let mut response = agent(TIMEOUT)
        .get(&url)
        .header("authorization", &format!("bearer {bearer}"))
        .header("accept", "application/json")
        .call()?;
    let status = response.status().as_u16();
    let text = read_limited(response.body_mut(), MAX_ANSWER_BYTES).map_err(anyhow::Error::msg)?;
    if status != 200 {
        bail!("the endpoint answered {status}");
    }
    let answer: Value = serde_json::from_str(&text).context("its answer is not JSON")?;
    answer["value"]
        .as_str()
        .map(str::to_owned)
        .context("its answer has no `value`")
}

fn post(url: &str, body: &Value, roots: &TrustRoots) -> Result<(u16, Value)> {
    let mut response = agent_trusting(TIMEOUT, roots)
        .post(url)
        .header("content-type", "application/json")
        .send(body.to_string().as_bytes())?;
    let status = response.status().as_u16();
    let text = read_limited(response.body_mut(), MAX_ANSWER_BYTES).map_err(anyhow::Error::msg)?;
    let answer = serde_json::from_str(&text)
        .with_context(|| format!("the server answered {status} with something that is not JSON"))?;
    Ok((status, answer))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_connection_uri_password_is_found_for_masking() {
        assert_eq!(
            uri_password("postgresql://portcullis_1a:s3cr%2Ft@db.internal:5432/orders"),
            Some("s3cr%2Ft")
        );
        assert_eq!(uri_password("postgresql://db.internal/orders"), None);
        assert_eq!(uri_password("eyJhbGciOiJFZERTQSJ9.e30.sig"), None);
    }

    #[test]
    fn mask_values_are_escaped_as_the_runner_unescapes_them() {
        assert_eq!(
            workflow_command_data("pa%25ss%0Aword"),
            "pa%2525ss%250Aword"
        );
        assert_eq!(workflow_command_data("a\rb"), "a%0Db");
        assert_eq!(workflow_command_data("plain-value"), "plain-value");
    }

    #[test]
    fn env_names_are_checked() {
        assert!(valid_env_name("PORTCULLIS_CREDENTIAL"));
        assert!(valid_env_name("_X1"));
        assert!(!valid_env_name("1X"));
        assert!(!valid_env_name("A-B"));
        assert!(!valid_env_name(""));
    }
}
