//! The attestation and credential benchmark of issue #6: what verifying a caller's token costs
//! per signature algorithm, seen for the first time (`Attestor::attest_uncached`) and again
//! (`Attestor::attest`, answered from the verified tokens), and how many credentials each
//! provider issues per second on one thread. Prints markdown; see docs/attestation.md.
//!
//! The keys are the attestation tests' own (`engine/tests/keys/`); the `oauth_client_credentials`
//! line fetches once from a token endpoint this binary runs on loopback, then measures the
//! cached token being handed out.

use std::io::{BufRead as _, BufReader, Read as _, Write as _};
use std::net::TcpListener;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result};
use clap::Parser;
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use portcullis_bench::measure::{Timing, measure, timer_overhead};
use portcullis_bench::report::thousands;
use portcullis_engine::attest::{
    Attestor, DEFAULT_JWKS_MAX_AGE, DEFAULT_JWKS_REFRESH_MIN, TrustProvider, TrustProviderSpec,
};
use portcullis_engine::credentials::{
    CredentialIssuer, KeyRing, OAuthClient, Recipient, RotationPolicy,
};
use portcullis_engine::jwks::JwksSource;
use portcullis_engine::postgres_roles::PostgresRoles;
use portcullis_lang::ir::{Credential, CredentialKind, StaticSource};
use portcullis_lang::schema::ProviderKind;
use serde_json::json;

#[derive(Debug, Parser)]
#[command(
    about = "Attestation per signature algorithm, cold and cached, and credentials issued per \
             second per provider"
)]
struct Args {
    /// Time budget of each line, in seconds.
    #[arg(long, default_value_t = 1.0)]
    seconds: f64,
}

const ISSUER: &str = "https://bench-idp.example.invalid";

const CASES: [(&str, Algorithm); 7] = [
    ("rsa", Algorithm::RS256),
    ("rsa", Algorithm::RS384),
    ("rsa", Algorithm::RS512),
    ("rsa", Algorithm::PS256),
    ("p256", Algorithm::ES256),
    ("p384", Algorithm::ES384),
    ("ed25519", Algorithm::EdDSA),
];

fn main() -> Result<()> {
    let args = Args::parse();
    let budget = Duration::from_secs_f64(args.seconds);
    let overhead = timer_overhead();
    println!("## Attestation\n");
    println!(
        "One thread, {:.1} s per line. Cold: the token verified as if seen for the first time \
         (signature, claims, schema); cached: the same token again, answered from the verified \
         tokens by its SHA-256.\n",
        args.seconds
    );
    println!(
        "| algorithm | cold median | cold per second | cached median | cached per second \
         | cold ÷ cached |"
    );
    println!("| --- | ---: | ---: | ---: | ---: | ---: |");
    let attestor = attestor()?;
    for (key, algorithm) in CASES {
        let token = token(key, algorithm)?;
        attestor
            .attest(&token)
            .map_err(|rejected| anyhow::anyhow!("{algorithm:?}: {}", rejected.error))?;
        let cold = measure(budget, overhead, |_| {
            attestor.attest_uncached(&token).is_ok()
        });
        let cached = measure(budget, overhead, |_| attestor.attest(&token).is_ok());
        println!(
            "| {algorithm:?} | {} | {} | {} | {} | {:.0}× |",
            micros(&cold),
            per_second(&cold),
            micros(&cached),
            per_second(&cached),
            cold.median_ns / cached.median_ns.max(1.0)
        );
    }

    println!("\n## Credentials\n");
    println!("| provider | median | per second |");
    println!("| --- | ---: | ---: |");
    let dir = std::env::temp_dir().join(format!("portcullis-bench-attest-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;
    let outcome = credentials(&dir, budget, overhead);
    let _ = std::fs::remove_dir_all(&dir);
    outcome
}

fn credentials(dir: &std::path::Path, budget: Duration, overhead: f64) -> Result<()> {
    let secret = dir.join("static.secret");
    std::fs::write(&secret, "bench-static-secret\n")?;
    let token_url = token_endpoint()?;
    let ring = KeyRing::open(dir, RotationPolicy::default(), unix_now())?;
    let issuer = CredentialIssuer::new(
        ring,
        "https://portcullis.bench.invalid".to_owned(),
        vec![OAuthClient {
            token_url: token_url.clone(),
            client_id: "bench".to_owned(),
            secret: "bench-client-secret".to_owned().into(),
            ca: portcullis_engine::http::TrustRoots::default(),
        }],
        PostgresRoles::new(dir, Vec::new()),
    );
    let lines = [
        (
            "jwt (minted, EdDSA)",
            CredentialKind::Jwt {
                audience: "billing".to_owned(),
                copy_claims: Vec::new(),
            },
        ),
        (
            "static (file)",
            CredentialKind::Static(StaticSource::File(
                secret.to_str().context("a temporary path")?.to_owned(),
            )),
        ),
        (
            "oauth_client_credentials (cached token)",
            CredentialKind::OauthClientCredentials {
                token_url,
                client_id: "bench".to_owned(),
                scopes: vec!["invoices.read".to_owned()],
            },
        ),
    ];
    for (name, kind) in lines {
        let credential = Credential {
            name: "bench".to_owned(),
            kind,
            ttl_s: Some(900),
        };
        let to = Recipient {
            workload: Some("ci"),
            subject: "repo:acme/app:ref:refs/heads/main",
            trust_provider: "github",
            target: "billing",
            database: None,
            now: unix_now(),
            claims: &serde_json::Map::new(),
        };
        issuer
            .issue(&credential, &to)
            .map_err(|error| anyhow::anyhow!("{name}: {error}"))?;
        let timing = measure(budget, overhead, |_| issuer.issue(&credential, &to).is_ok());
        println!("| {name} | {} | {} |", micros(&timing), per_second(&timing));
    }
    Ok(())
}

fn micros(timing: &Timing) -> String {
    format!("{:.2} µs", timing.median_ns / 1000.0)
}

fn per_second(timing: &Timing) -> String {
    thousands(timing.per_second.round() as u64)
}

fn unix_now() -> i64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |since| since.as_secs() as i64)
}

fn key_pem(name: &str) -> Result<Vec<u8>> {
    let path = format!(
        "{}/../engine/tests/keys/{name}.key.pem",
        env!("CARGO_MANIFEST_DIR")
    );
    std::fs::read(&path).with_context(|| format!("cannot read {path}"))
}

fn encoding_key(name: &str, algorithm: Algorithm) -> Result<EncodingKey> {
    let pem = key_pem(name)?;
    Ok(match algorithm {
        Algorithm::ES256 | Algorithm::ES384 => EncodingKey::from_ec_pem(&pem)?,
        Algorithm::EdDSA => EncodingKey::from_ed_pem(&pem)?,
        _ => EncodingKey::from_rsa_pem(&pem)?,
    })
}

fn attestor() -> Result<Attestor> {
    let mut keys = Vec::new();
    for (name, algorithm) in [
        ("rsa", Algorithm::RS256),
        ("p256", Algorithm::ES256),
        ("p384", Algorithm::ES384),
        ("ed25519", Algorithm::EdDSA),
    ] {
        let mut jwk = Jwk::from_encoding_key(&encoding_key(name, algorithm)?, algorithm)?;
        jwk.common.key_id = Some(name.to_owned());
        // Unbound, so that the RSA key verifies all four RSA algorithms.
        jwk.common.key_algorithm = None;
        keys.push(jwk);
    }
    let provider = TrustProvider::new(TrustProviderSpec {
        name: "bench".to_owned(),
        kind: ProviderKind::Github,
        issuer: ISSUER.to_owned(),
        audiences: vec!["portcullis".to_owned()],
        jwks: JwksSource::Document(serde_json::to_string(&JwkSet { keys })?),
        jwks_refresh_min: DEFAULT_JWKS_REFRESH_MIN,
        jwks_max_age: DEFAULT_JWKS_MAX_AGE,
        leeway_s: 60,
        custom_claims: Vec::new(),
        trust_domain: None,
        ca: portcullis_engine::http::TrustRoots::default(),
        example_only: false,
    })?;
    Ok(Attestor::new(vec![provider])?)
}

/// A GitHub Actions token, shaped as the platform's, valid for an hour.
fn token(key: &str, algorithm: Algorithm) -> Result<String> {
    let now = unix_now();
    let claims = json!({
        "iss": ISSUER, "aud": "portcullis", "sub": "repo:acme/app:ref:refs/heads/main",
        "iat": now, "nbf": now, "exp": now + 3600, "jti": "bench",
        "repository": "acme/app", "repository_id": "123456", "repository_owner": "acme",
        "repository_owner_id": "7890", "repository_visibility": "private",
        "ref": "refs/heads/main", "ref_type": "branch", "ref_protected": "true",
        "sha": "0123456789abcdef0123456789abcdef01234567", "workflow": "deploy",
        "workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
        "job_workflow_ref": "acme/app/.github/workflows/deploy.yml@refs/heads/main",
        "event_name": "push", "actor": "octocat", "actor_id": "1", "run_id": "42",
        "run_number": "7", "run_attempt": "1", "runner_environment": "github-hosted",
        "environment": "production",
    });
    let mut header = Header::new(algorithm);
    header.kid = Some(key.to_owned());
    Ok(jsonwebtoken::encode(
        &header,
        &claims,
        &encoding_key(key, algorithm)?,
    )?)
}

/// A token endpoint on loopback that answers every request with a fresh hour-long token.
fn token_endpoint() -> Result<String> {
    let listener = TcpListener::bind("127.0.0.1:0")?;
    let url = format!("http://{}/token", listener.local_addr()?);
    std::thread::spawn(move || {
        for stream in listener.incoming() {
            let Ok(mut stream) = stream else { continue };
            let Ok(clone) = stream.try_clone() else {
                continue;
            };
            let mut reader = BufReader::new(clone);
            let mut line = String::new();
            let mut length = 0usize;
            while reader.read_line(&mut line).is_ok_and(|n| n > 2) {
                if let Some(value) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                    length = value.trim().parse().unwrap_or(0);
                }
                line.clear();
            }
            let mut body = vec![0; length];
            let _ = reader.read_exact(&mut body);
            let answer = json!({
                "access_token": "bench-access-token", "token_type": "Bearer", "expires_in": 3600,
            })
            .to_string();
            let _ = write!(
                stream,
                "HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\
                 connection: close\r\n\r\n{answer}",
                answer.len()
            );
        }
    });
    Ok(url)
}
