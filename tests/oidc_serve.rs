//! `portcullis serve` with a trust provider whose keys come from an issuer's discovery
//! document: an issuer this test runs on loopback rotates its keys while the server decides,
//! and the decision API follows without a restart. The issuer is the tests' HTTP stub,
//! answering the two documents an OIDC issuer publishes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{decide, http_stub, start_server_with, stop_server};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

type Handler = Box<dyn Fn(&http_stub::StubRequest) -> (u16, serde_json::Value) + Send>;

struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<Mutex<usize>>,
}

impl Issuer {
    fn start() -> Issuer {
        Issuer::start_on(http_stub::serve)
    }

    /// The issuer over `https`, its certificate signed by the tests' CA.
    fn start_tls() -> Issuer {
        Issuer::start_on(http_stub::serve_tls)
    }

    fn start_on(serve: fn(Handler) -> String) -> Issuer {
        let keys: Arc<Mutex<Vec<Jwk>>> = Arc::default();
        let fetches: Arc<Mutex<usize>> = Arc::default();
        let (served_keys, counted) = (Arc::clone(&keys), Arc::clone(&fetches));
        let own_url: Arc<Mutex<String>> = Arc::default();
        let named = Arc::clone(&own_url);
        let url = serve(Box::new(move |request| match request.path() {
            "/.well-known/openid-configuration" => {
                let url = named.lock().unwrap().clone();
                (
                    200,
                    json!({ "issuer": url, "jwks_uri": format!("{url}/jwks") }),
                )
            }
            "/jwks" => {
                *counted.lock().unwrap() += 1;
                let keys = served_keys.lock().unwrap().clone();
                (200, serde_json::to_value(JwkSet { keys }).unwrap())
            }
            _ => (404, json!({})),
        }));
        own_url.lock().unwrap().clone_from(&url);
        Issuer { url, keys, fetches }
    }

    fn publish(&self, names: &[&str]) {
        *self.keys.lock().unwrap() = names.iter().map(|name| public_jwk(name)).collect();
    }

    fn fetches(&self) -> usize {
        *self.fetches.lock().unwrap()
    }
}

fn encoding_key(name: &str) -> EncodingKey {
    let path = common::repo().join(format!("engine/tests/keys/{name}.key.pem"));
    EncodingKey::from_ec_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn public_jwk(name: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(name), Algorithm::ES256).unwrap();
    jwk.common.key_id = Some(name.to_owned());
    jwk
}

fn token(issuer: &str, key: &str) -> String {
    token_naming(issuer, key, key)
}

/// A token signed by `key` whose header names `kid`.
fn token_naming(issuer: &str, key: &str, kid: &str) -> String {
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    let claims = json!({
        "iss": issuer, "aud": "portcullis", "sub": "ci-runner", "iat": now, "exp": now + 300,
    });
    let mut header = Header::new(Algorithm::ES256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &encoding_key(key)).unwrap()
}

/// A configuration in `dir` whose one trust provider finds `issuer`'s keys by discovery, with
/// `extra` lines for that provider, and a policy that permits its `ci-runner`.
fn write_config(dir: &Path, issuer: &str, extra: &str) -> PathBuf {
    let policy_dir = dir.join("policy");
    if !policy_dir.exists() {
        std::fs::create_dir(&policy_dir).unwrap();
        std::fs::write(
            policy_dir.join("ci.gate"),
            "workload ci { oidc { sub == \"ci-runner\" } }\n\
             target api { https { host = \"api.internal\" } }\n\
             permit ci_api { workload ci target api }\n",
        )
        .unwrap();
    }
    let config = dir.join(format!("portcullis-{}.toml", common::rand_suffix()));
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[[trust_providers]]\nname = \"local-idp\"\n\
             kind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"portcullis\"]\n\
             jwks_discovery = true\njwks_refresh_min_s = 1\n{extra}",
            policy = policy_dir.to_str().unwrap(),
        ),
    )
    .unwrap();
    config
}

#[test]
fn the_server_follows_an_issuer_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::start();
    issuer.publish(&["p256"]);
    let config = write_config(tmp.path(), &issuer.url, "");
    let server = start_server_with(&config, &tmp.path().join("data"));
    assert_eq!(issuer.fetches(), 1, "the keys are fetched at start");
    let target = json!({ "name": "api" });

    let answer = decide(&server, &token(&issuer.url, "p256"), target.clone(), "GET");
    assert_eq!(answer["decision"], "allow", "{answer}");

    // The issuer publishes its next key beside the current one, and signs with it; a second
    // after the fetch at start, the least `jwks_refresh_min_s` allows.
    issuer.publish(&["p256", "p256-second"]);
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let answer = decide(
        &server,
        &token(&issuer.url, "p256-second"),
        target.clone(),
        "GET",
    );
    assert_eq!(answer["decision"], "allow", "{answer}");
    assert_eq!(issuer.fetches(), 2, "one fetch for the new key");
    let answer = decide(&server, &token(&issuer.url, "p256"), target.clone(), "GET");
    assert_eq!(
        answer["decision"], "allow",
        "the old key still verifies: {answer}"
    );

    // A key the issuer never published: denied with its own reason, after one more fetch.
    std::thread::sleep(std::time::Duration::from_millis(1100));
    let unknown = token_naming(&issuer.url, "p256", "never-published");
    let answer = decide(&server, &unknown, target, "GET");
    assert_eq!(answer["decision"], "deny", "{answer}");
    assert_eq!(answer["reason_code"], "unknown_key", "{answer}");

    assert_eq!(issuer.fetches(), 3);
    let fetched_at_start = server
        .startup
        .iter()
        .any(|line| line.contains("trust_provider_keys_fetched") && line.contains("local-idp"));
    assert!(fetched_at_start, "{:?}", server.startup);
    stop_server(server);
}

/// An issuer under a private CA (a cluster's, a company's): its keys are fetched over `https`
/// when `ca_file` names that CA, and not with the Mozilla roots or another CA, where every
/// caller is denied with `keys_unavailable` and the log says why.
#[test]
fn keys_are_fetched_over_https_only_from_an_issuer_whose_ca_is_trusted() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::start_tls();
    assert!(
        issuer.url.starts_with("https://127.0.0.1:"),
        "{}",
        issuer.url
    );
    issuer.publish(&["p256"]);
    let tls = common::repo().join("tests/fixtures/tls");
    let target = json!({ "name": "api" });

    let trusted = format!("ca_file = {:?}\n", tls.join("ca.pem").to_str().unwrap());
    let config = write_config(tmp.path(), &issuer.url, &trusted);
    let server = start_server_with(&config, &tmp.path().join("trusted"));
    assert_eq!(issuer.fetches(), 1, "the keys are fetched at start");
    let answer = decide(&server, &token(&issuer.url, "p256"), target.clone(), "GET");
    assert_eq!(answer["decision"], "allow", "{answer}");
    let mut health = ureq::get(&server.url("/healthz")).call().unwrap();
    let health: Value = serde_json::from_str(&health.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["status"], "ok", "{health}");
    assert!(
        health.get("trust_providers_without_keys").is_none(),
        "{health}"
    );
    stop_server(server);

    for (name, extra) in [
        ("mozilla", String::new()),
        (
            "other",
            format!(
                "ca_file = {:?}\n",
                tls.join("other-ca.pem").to_str().unwrap()
            ),
        ),
    ] {
        let config = write_config(tmp.path(), &issuer.url, &extra);
        let server = start_server_with(&config, &tmp.path().join(name));
        let refused = server.startup.iter().any(|line| {
            line.contains("trust_provider_keys_fetch_failed") && line.contains("certificate")
        });
        let hinted = server.startup.iter().any(|line| line.contains("`ca_file`"));
        assert!(
            hinted,
            "{name}: the log points at `ca_file`: {:?}",
            server.startup
        );
        assert!(refused, "{name}: {:?}", server.startup);
        let answer = decide(&server, &token(&issuer.url, "p256"), target.clone(), "GET");
        assert_eq!(answer["decision"], "deny", "{name}: {answer}");
        assert_eq!(
            answer["reason_code"], "keys_unavailable",
            "{name}: {answer}"
        );
        // The health check names the provider, and stays 200: other callers are served.
        let mut health = ureq::get(&server.url("/healthz")).call().unwrap();
        let health: Value =
            serde_json::from_str(&health.body_mut().read_to_string().unwrap()).unwrap();
        assert_eq!(health["status"], "degraded", "{name}: {health}");
        assert_eq!(health["trust_providers_without_keys"], json!(["local-idp"]));
        // Why is the server's business: its log and its event, not the caller's answer.
        let reason = answer["reason"].as_str().unwrap();
        assert!(
            reason.contains("the server's log") && !reason.contains("certificate"),
            "{name}: {answer}"
        );
        stop_server(server);
    }
    assert_eq!(
        issuer.fetches(),
        1,
        "no JWKS left the issuer without a trusted handshake"
    );
}
