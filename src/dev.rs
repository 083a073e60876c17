//! `portcullis dev …`: mint tokens and print key sets with the example issuer keys, so that the
//! decision API can be tried without a real CI system or cluster. Never for production: anyone
//! holding a published example key can mint tokens its trust provider accepts.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use anyhow::{Context, Result, bail};
use clap::Subcommand;
use jsonwebtoken::jwk::{Jwk, JwkSet, ThumbprintHash};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Map, Value};

use crate::config::read_bounded;

const MAX_FILE_BYTES: u64 = 64 * 1024;

/// The longest lifetime `mint-token` gives: a year.
const MAX_TTL_S: u64 = 365 * 24 * 3600;

#[derive(Debug, Subcommand)]
pub enum DevCommand {
    /// Sign the claims in a JSON file into a token, as an OIDC issuer would.
    ///
    /// `iat` and `nbf` default to now and `exp` to now plus --ttl; the file's own values win.
    MintToken {
        /// PEM private key (PKCS#8), P-256 for ES256 or RSA for RS256.
        #[arg(long)]
        key: PathBuf,
        /// JSON object of claims.
        #[arg(long)]
        claims: PathBuf,
        /// Lifetime in seconds (at most a year).
        #[arg(
            long,
            default_value_t = 300,
            value_parser = clap::value_parser!(u64).range(1..=MAX_TTL_S)
        )]
        ttl: u64,
    },
    /// Print the JWKS that verifies tokens signed with a private key.
    Jwks {
        #[arg(long)]
        key: PathBuf,
    },
}

pub fn run(command: DevCommand) -> Result<()> {
    match command {
        DevCommand::MintToken { key, claims, ttl } => {
            let signer = Signer::load(&key)?;
            let claims = load_claims(&claims)?;
            println!("{}", signer.mint(claims, ttl)?);
        }
        DevCommand::Jwks { key } => {
            let signer = Signer::load(&key)?;
            let set = JwkSet {
                keys: vec![signer.jwk],
            };
            println!("{}", serde_json::to_string_pretty(&set)?);
        }
    }
    Ok(())
}

struct Signer {
    key: EncodingKey,
    algorithm: Algorithm,
    jwk: Jwk,
}

impl Signer {
    fn load(path: &Path) -> Result<Signer> {
        let pem = read_bounded(path, MAX_FILE_BYTES)
            .with_context(|| format!("cannot read key `{}`", path.display()))?;
        let candidates = [
            (EncodingKey::from_ec_pem(pem.as_bytes()), Algorithm::ES256),
            (EncodingKey::from_rsa_pem(pem.as_bytes()), Algorithm::RS256),
        ];
        for (key, algorithm) in candidates {
            let Ok(key) = key else { continue };
            let Ok(mut jwk) = Jwk::from_encoding_key(&key, algorithm) else {
                continue;
            };
            jwk.common.key_id = Some(jwk.thumbprint(ThumbprintHash::SHA256)?);
            jwk.common.public_key_use = Some(jsonwebtoken::jwk::PublicKeyUse::Signature);
            return Ok(Signer {
                key,
                algorithm,
                jwk,
            });
        }
        bail!(
            "`{}` is not a PKCS#8 PEM P-256 or RSA private key",
            path.display()
        )
    }

    fn mint(&self, mut claims: Map<String, Value>, ttl: u64) -> Result<String> {
        let now = SystemTime::now().duration_since(UNIX_EPOCH)?.as_secs();
        claims.entry("iat").or_insert(now.into());
        claims.entry("nbf").or_insert(now.into());
        let Some(exp) = now.checked_add(ttl) else {
            bail!("--ttl {ttl} is too large: the token would expire after the year 292277026596");
        };
        claims.entry("exp").or_insert(exp.into());
        let mut header = Header::new(self.algorithm);
        header.kid = self.jwk.common.key_id.clone();
        Ok(jsonwebtoken::encode(&header, &claims, &self.key)?)
    }
}

fn load_claims(path: &Path) -> Result<Map<String, Value>> {
    let text = read_bounded(path, MAX_FILE_BYTES)
        .with_context(|| format!("cannot read claims `{}`", path.display()))?;
    match serde_json::from_str(&text) {
        Ok(Value::Object(map)) => Ok(map),
        Ok(_) => bail!("claims `{}` must be a JSON object", path.display()),
        Err(err) => bail!("claims `{}` are not valid JSON: {err}", path.display()),
    }
}
