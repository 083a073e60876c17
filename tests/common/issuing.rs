//! A server that issues credentials, and tokens its trust provider accepts: shared by the
//! tests of `POST /v1/credentials` and of `portcullis credential`.

use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

use super::{Server, start_server_with};

pub const ISSUER: &str = "https://ci-idp.example.invalid";
pub const SECRET: &str = "legacy-db-password-3f9d1c";

fn key() -> EncodingKey {
    let path = super::repo().join("engine/tests/keys/p256.key.pem");
    EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap()
}

pub fn token(sub: &str, exp_in: i64) -> String {
    let now = i64::try_from(
        SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .unwrap()
            .as_secs(),
    )
    .unwrap();
    let claims = json!({
        "iss": ISSUER, "aud": "portcullis", "sub": sub, "iat": now, "exp": now + exp_in,
        "email": "ci@acme.example", "org": { "team": "payments" },
        // A top-level key named like the custom claim, which policies never read.
        "team": "root-admins",
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some("ci".to_owned());
    jsonwebtoken::encode(&header, &claims, &key()).unwrap()
}

/// Writes the JWKS that verifies [`token`]'s tokens into `dir`, and returns its path.
pub fn write_jwks(dir: &Path) -> PathBuf {
    let mut jwk = Jwk::from_encoding_key(&key(), Algorithm::ES256).unwrap();
    jwk.common.key_id = Some("ci".to_owned());
    let jwks = dir.join("ci.jwks.json");
    std::fs::write(
        &jwks,
        serde_json::to_string(&JwkSet { keys: vec![jwk] }).unwrap(),
    )
    .unwrap();
    jwks
}

/// A server whose policy names a JWT, a static secret in a file, a static secret whose file is
/// missing, and a target with no credential.
pub fn server(dir: &Path) -> Server {
    let jwks = write_jwks(dir);
    let secret = dir.join("legacy.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let policy = dir.join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("ci.gate"),
        format!(
            "workload ci {{ oidc {{ sub == \"ci-runner\" }} }}\n\
             target billing {{ https {{ host = \"billing.internal\" }} }}\n\
             target legacy {{ postgres {{ host = \"legacy.db.internal\" }} }}\n\
             target gone {{ postgres {{ host = \"gone.db.internal\" }} }}\n\
             target docs {{ https {{ host = \"docs.internal\" }} }}\n\
             credential billing_token {{ jwt {{ audience = \"billing\" \
             copy_claims = [\"team\", \"email\", \"groups\"] ttl = 15m }} }}\n\
             credential legacy_db {{ static {{ file = {secret:?} }} }}\n\
             credential gone_db {{ static {{ file = {gone:?} }} }}\n\
             permit ci_billing {{ workload ci target billing credential billing_token }}\n\
             permit ci_legacy {{ workload ci target legacy credential legacy_db }}\n\
             permit ci_gone {{ workload ci target gone credential gone_db }}\n\
             permit ci_docs {{ workload ci target docs }}\n",
            secret = secret.to_str().unwrap(),
            gone = dir.join("missing.secret").to_str().unwrap(),
        ),
    )
    .unwrap();
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[[trust_providers]]\nname = \"ci-idp\"\n\
             kind = \"oidc\"\nissuer = \"{ISSUER}\"\naudiences = [\"portcullis\"]\n\
             jwks_file = {jwks:?}\n\
             custom_claims = [{{ name = \"team\", path = \"org.team\", type = \"string\" }}]\n",
            policy = policy.to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    start_server_with(&config, &dir.join("data"))
}
