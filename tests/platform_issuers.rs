//! Tokens shaped exactly like each platform's — GitHub Actions, GitLab CI, Kubernetes, HCP
//! Terraform — signed by issuers this test runs on loopback, found by `portcullis serve`
//! through their discovery documents, decided by a policy that reads each platform's own
//! claims, and still accepted after every issuer rotates its signing key mid-test.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use common::{decide, example_claims, http_stub, repo, start_server_with, stop_server};
use jsonwebtoken::jwk::{Jwk, JwkSet};
use jsonwebtoken::{Algorithm, EncodingKey, Header};
use serde_json::{Value, json};

const PLATFORMS: [&str; 4] = ["github", "gitlab", "kubernetes", "terraform"];

/// Four issuers behind one loopback server, each under its own path (`/github`, …) as a
/// self-managed GitLab or a GitHub Enterprise Server issuer is: a discovery document, a JWKS,
/// and a count of the JWKS fetches.
struct Issuers {
    base: String,
    keys: Arc<Mutex<HashMap<String, Vec<Jwk>>>>,
    fetches: Arc<Mutex<HashMap<String, usize>>>,
}

impl Issuers {
    fn start() -> Issuers {
        let keys: Arc<Mutex<HashMap<String, Vec<Jwk>>>> = Arc::default();
        let fetches: Arc<Mutex<HashMap<String, usize>>> = Arc::default();
        let (served, counted) = (Arc::clone(&keys), Arc::clone(&fetches));
        let own_url: Arc<Mutex<String>> = Arc::default();
        let named = Arc::clone(&own_url);
        let base = http_stub::serve(move |request| {
            let path = request.path().trim_start_matches('/');
            let Some((platform, document)) = path.split_once('/') else {
                return (404, json!({}));
            };
            let issuer = format!("{}/{platform}", named.lock().unwrap());
            match document {
                ".well-known/openid-configuration" => (
                    200,
                    json!({ "issuer": issuer, "jwks_uri": format!("{issuer}/jwks") }),
                ),
                "jwks" => {
                    *counted
                        .lock()
                        .unwrap()
                        .entry(platform.to_owned())
                        .or_default() += 1;
                    let keys = served
                        .lock()
                        .unwrap()
                        .get(platform)
                        .cloned()
                        .unwrap_or_default();
                    (200, serde_json::to_value(JwkSet { keys }).unwrap())
                }
                _ => (404, json!({})),
            }
        });
        own_url.lock().unwrap().clone_from(&base);
        Issuers {
            base,
            keys,
            fetches,
        }
    }

    fn url(&self, platform: &str) -> String {
        format!("{}/{platform}", self.base)
    }

    /// Publishes `(kid, key file)` pairs as `platform`'s JWKS.
    fn publish(&self, platform: &str, keys: &[(&str, &str)]) {
        let jwks = keys.iter().map(|(kid, key)| public_jwk(kid, key)).collect();
        self.keys.lock().unwrap().insert(platform.to_owned(), jwks);
    }

    fn fetches(&self, platform: &str) -> usize {
        self.fetches
            .lock()
            .unwrap()
            .get(platform)
            .copied()
            .unwrap_or(0)
    }
}

fn encoding_key(key: &str) -> EncodingKey {
    let path = repo().join(format!("engine/tests/keys/{key}.key.pem"));
    EncodingKey::from_rsa_pem(&std::fs::read(path).unwrap()).unwrap()
}

fn public_jwk(kid: &str, key: &str) -> Jwk {
    let mut jwk = Jwk::from_encoding_key(&encoding_key(key), Algorithm::RS256).unwrap();
    jwk.common.key_id = Some(kid.to_owned());
    jwk
}

/// The platform's token, as its issuer would sign it: the recorded claims of a real run with
/// this issuer's `iss` and a fresh lifetime, RS256 as every one of these platforms signs.
fn platform_token(
    issuers: &Issuers,
    platform: &str,
    kid: &str,
    key: &str,
    patch: &Value,
) -> String {
    let mut claims = match platform {
        "github" => example_claims("billing-release.json"),
        "kubernetes" => example_claims("orders-api-pod.json"),
        other => {
            let path = repo().join(format!(
                "tests/fixtures/claims/{other}-{}.json",
                match other {
                    "gitlab" => "release",
                    _ => "apply",
                }
            ));
            serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
        }
    };
    let now = SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs();
    claims["iss"] = json!(issuers.url(platform));
    claims["iat"] = json!(now);
    claims["nbf"] = json!(now);
    claims["exp"] = json!(now + 300);
    if platform == "kubernetes" {
        // A projected token is bound to its pod and expires with it.
        claims["kubernetes.io"]["warnafter"] = json!(now + 240);
    }
    for (name, value) in patch.as_object().unwrap() {
        claims[name] = value.clone();
    }
    let mut header = Header::new(Algorithm::RS256);
    header.kid = Some(kid.to_owned());
    jsonwebtoken::encode(&header, &claims, &encoding_key(key)).unwrap()
}

const POLICY: &str = "\
workload billing_tag_github {
  github { repository == \"acme/billing\" && ref like \"refs/tags/v*\" && event_name == \"push\" }
}
workload billing_tag_gitlab {
  gitlab { project_path == \"acme/billing\" && ref_type == \"tag\" && ref_protected == \"true\" }
}
workload orders_api_pod {
  kubernetes { namespace == \"orders\" && service_account == \"api\" && has pod }
}
workload billing_apply {
  terraform { terraform_workspace_name == \"billing-prod\" && terraform_run_phase == \"apply\" }
}
target api { https { host = \"api.internal\" } }
permit github_deploys { workload billing_tag_github target api }
permit gitlab_deploys { workload billing_tag_gitlab target api }
permit pod_calls { workload orders_api_pod target api }
permit terraform_applies { workload billing_apply target api }
";

/// A claim each platform's workload depends on, changed so that the workload no longer
/// matches: the typed claims reached the policy, not only the signature check.
fn unmatched(platform: &str) -> Value {
    match platform {
        "github" => json!({ "ref": "refs/heads/feature" }),
        "gitlab" => json!({ "ref_protected": "false" }),
        "kubernetes" => json!({ "kubernetes.io": { "namespace": "orders",
            "serviceaccount": { "name": "migrations", "uid": "u-1" } } }),
        _ => json!({ "terraform_run_phase": "plan" }),
    }
}

fn rule_of(platform: &str) -> &'static str {
    match platform {
        "github" => "github_deploys",
        "gitlab" => "gitlab_deploys",
        "kubernetes" => "pod_calls",
        _ => "terraform_applies",
    }
}

#[test]
fn every_platform_token_is_verified_through_discovery_across_a_key_rotation() {
    let tmp = tempfile::tempdir().unwrap();
    let issuers = Issuers::start();
    for platform in PLATFORMS {
        issuers.publish(platform, &[(&format!("{platform}-1"), "rsa")]);
    }
    let policy_dir = tmp.path().join("policy");
    std::fs::create_dir(&policy_dir).unwrap();
    std::fs::write(policy_dir.join("platforms.gate"), POLICY).unwrap();
    let mut config = format!("[policy]\ndir = {:?}\n", policy_dir.to_str().unwrap());
    for platform in PLATFORMS {
        config.push_str(&format!(
            "\n[[trust_providers]]\nname = \"{platform}-issuer\"\nkind = \"{platform}\"\n\
             issuer = \"{}\"\naudiences = [\"portcullis\"]\njwks_discovery = true\n\
             jwks_refresh_min_s = 1\n",
            issuers.url(platform)
        ));
    }
    let config_path = tmp.path().join("portcullis.toml");
    std::fs::write(&config_path, config).unwrap();
    let server = start_server_with(&config_path, &tmp.path().join("data"));
    let target = json!({ "name": "api" });

    for platform in PLATFORMS {
        assert_eq!(
            issuers.fetches(platform),
            1,
            "{platform}: keys fetched at start"
        );
        let kid = format!("{platform}-1");
        let token = platform_token(&issuers, platform, &kid, "rsa", &json!({}));
        let answer = decide(&server, &token, target.clone(), "POST");
        assert_eq!(answer["decision"], "allow", "{platform}: {answer}");
        assert_eq!(answer["rule"], rule_of(platform), "{platform}: {answer}");
        let token = platform_token(&issuers, platform, &kid, "rsa", &unmatched(platform));
        let answer = decide(&server, &token, target.clone(), "POST");
        assert_eq!(answer["decision"], "deny", "{platform}: {answer}");
        assert_eq!(answer["reason_code"], "no_permit", "{platform}: {answer}");
    }

    // Every issuer publishes its next key beside the current one and signs with it, a second
    // after the fetch at start (the least `jwks_refresh_min_s` allows).
    for platform in PLATFORMS {
        let (old, new) = (format!("{platform}-1"), format!("{platform}-2"));
        issuers.publish(platform, &[(&old, "rsa"), (&new, "rsa-second")]);
    }
    std::thread::sleep(Duration::from_millis(1100));
    for platform in PLATFORMS {
        let new = format!("{platform}-2");
        let token = platform_token(&issuers, platform, &new, "rsa-second", &json!({}));
        let answer = decide(&server, &token, target.clone(), "POST");
        assert_eq!(
            answer["decision"], "allow",
            "{platform} after rotation: {answer}"
        );
        assert_eq!(
            issuers.fetches(platform),
            2,
            "{platform}: one fetch for the new key"
        );
        // A token signed before the rotation still verifies with the key kept beside.
        let old = format!("{platform}-1");
        let token = platform_token(&issuers, platform, &old, "rsa", &json!({}));
        let answer = decide(&server, &token, target.clone(), "POST");
        assert_eq!(answer["decision"], "allow", "{platform} old key: {answer}");
        // The new key's id on a token the old key signed: the signature does not verify.
        let forged = platform_token(&issuers, platform, &new, "rsa", &json!({}));
        let answer = decide(&server, &forged, target.clone(), "POST");
        assert_eq!(answer["decision"], "deny", "{platform}: {answer}");
        assert_eq!(
            answer["reason_code"], "bad_signature",
            "{platform}: {answer}"
        );
    }
    stop_server(server);
}
