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

use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use common::{decide, http_stub, start_server_with, stop_server};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::json;

struct Issuer {
    url: String,
    keys: Arc<Mutex<Vec<Jwk>>>,
    fetches: Arc<Mutex<usize>>,
}

impl Issuer {
    fn start() -> Issuer {
        let keys: Arc<Mutex<Vec<Jwk>>> = Arc::default();
        let fetches: Arc<Mutex<usize>> = Arc::default();
        let (served_keys, counted) = (Arc::clone(&keys), Arc::clone(&fetches));
        let own_url: Arc<Mutex<String>> = Arc::default();
        let named = Arc::clone(&own_url);
        let url = http_stub::serve(move |request| match request.path() {
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
        });
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

#[test]
fn the_server_follows_an_issuer_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let issuer = Issuer::start();
    issuer.publish(&["p256"]);
    let policy_dir = tmp.path().join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::write(
        policy_dir.join("ci.gate"),
        "workload ci { oidc { sub == \"ci-runner\" } }\n\
         target api { https { host = \"api.internal\" } }\n\
         permit ci_api { workload ci target api }\n",
    )
    .unwrap();
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[[trust_providers]]\nname = \"local-idp\"\n\
             kind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"portcullis\"]\n\
             jwks_discovery = true\njwks_refresh_min_s = 1\n",
            policy = policy_dir.to_str().unwrap(),
            issuer = issuer.url,
        ),
    )
    .unwrap();
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
