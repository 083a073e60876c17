//! `oauth_client_credentials` on a running `portcullis serve`: a token endpoint this test runs
//! on loopback checks the client's Basic authentication, the grant and the scopes, and counts
//! its requests, so that the server's cache (one fetch for many callers, a new one shortly
//! before expiry) and its refusals are seen from the outside.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use base64::Engine as _;
use base64::engine::general_purpose::STANDARD;
use common::issuing::{ISSUER, token, write_jwks};
use common::{Server, audit_query, http_stub, post_json, start_server_with, stop_server};
use serde_json::{Value, json};

const CLIENT_SECRET: &str = "s3cret+with/odd=chars";

/// What the endpoint saw and will answer.
#[derive(Default)]
struct EndpointState {
    requests: Vec<(Option<String>, String)>,
    expires_in: i64,
    issued: usize,
}

struct TokenEndpoint {
    url: String,
    state: Arc<Mutex<EndpointState>>,
}

impl TokenEndpoint {
    fn start(expires_in: i64) -> TokenEndpoint {
        let state = Arc::new(Mutex::new(EndpointState {
            expires_in,
            ..EndpointState::default()
        }));
        let shared = Arc::clone(&state);
        let expected = format!(
            "Basic {}",
            STANDARD.encode("portcullis:s3cret%2Bwith%2Fodd%3Dchars")
        );
        let base = http_stub::serve(move |request| {
            let authorization = request.header("authorization").map(str::to_owned);
            let mut state = shared.lock().unwrap();
            state
                .requests
                .push((authorization.clone(), request.body.clone()));
            if authorization.as_deref() != Some(expected.as_str()) {
                return (401, json!({ "error": "invalid_client" }));
            }
            if request.body != "grant_type=client_credentials&scope=invoices.read%20invoices.write"
            {
                return (400, json!({ "error": "invalid_scope" }));
            }
            state.issued += 1;
            let token = format!("partner-access-token-{}", state.issued);
            let expires_in = state.expires_in;
            (
                200,
                json!({ "access_token": token, "token_type": "Bearer", "expires_in": expires_in }),
            )
        });
        TokenEndpoint {
            url: format!("{base}/oauth2/token"),
            state,
        }
    }
}

fn server(dir: &Path, endpoint: &TokenEndpoint, secret: &str) -> Server {
    let jwks = write_jwks(dir);
    let secret_file = dir.join("partner.secret");
    std::fs::write(&secret_file, format!("{secret}\n")).unwrap();
    let policy = dir.join("policy");
    std::fs::create_dir_all(&policy).unwrap();
    std::fs::write(
        policy.join("partner.gate"),
        format!(
            "workload ci {{ oidc {{ sub == \"ci-runner\" || sub == \"release-bot\" }} }}\n\
             target partner {{ https {{ host = \"api.partner.example\" }} }}\n\
             credential partner_api {{ oauth_client_credentials {{ token_url = \"{url}\" \
             client_id = \"portcullis\" scopes = [\"invoices.write\", \"invoices.read\"] \
             ttl = 1h }} }}\n\
             permit ci_partner {{ workload ci target partner credential partner_api }}\n",
            url = endpoint.url
        ),
    )
    .unwrap();
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[[credentials.oauth_clients]]\ntoken_url = \"{url}\"\n\
             client_id = \"portcullis\"\nclient_secret_file = {secret:?}\n\n\
             [[trust_providers]]\nname = \"ci-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n",
            policy = policy.to_str().unwrap(),
            url = endpoint.url,
            secret = secret_file.to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    start_server_with(&config, &dir.join("data"))
}

fn ask(server: &Server, sub: &str) -> (u16, Value) {
    let body = json!({ "evidence": { "token": token(sub, 300) }, "target": { "name": "partner" } });
    post_json(server, "/v1/credentials", &body)
}

#[test]
fn an_access_token_is_fetched_once_and_shared_by_every_allowed_caller() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = TokenEndpoint::start(3600);
    let server = server(tmp.path(), &endpoint, CLIENT_SECRET);

    let (status, first) = ask(&server, "ci-runner");
    assert_eq!(status, 200, "{first}");
    assert_eq!(first["credential"]["kind"], "oauth_client_credentials");
    assert_eq!(first["credential"]["type"], "bearer");
    assert_eq!(first["credential"]["value"], "partner-access-token-1");
    // Another caller, and the first again: the same token, no new fetch.
    let (_, second) = ask(&server, "release-bot");
    assert_eq!(second["credential"]["value"], "partner-access-token-1");
    let (_, third) = ask(&server, "ci-runner");
    assert_eq!(third["credential"]["value"], "partner-access-token-1");
    assert_eq!(endpoint.state.lock().unwrap().requests.len(), 1);
    // A caller the policy does not allow gets nothing, and costs the endpoint nothing.
    let (status, denied) = ask(&server, "intruder");
    assert_eq!(status, 403, "{denied}");
    assert_eq!(endpoint.state.lock().unwrap().requests.len(), 1);

    stop_server(server);
    // The client secret never leaves for anywhere but the endpoint; the store holds HMACs.
    let rows = audit_query(&tmp.path().join("data"), "SELECT * FROM access_events");
    let text = serde_json::to_string(&rows).unwrap();
    assert!(!text.contains("partner-access-token-1"));
    assert!(!text.contains(CLIENT_SECRET));
    let issued = rows
        .iter()
        .filter(|row| row["kind"] == "credential_issued")
        .count();
    assert_eq!(issued, 3);
}

#[test]
fn a_short_lived_token_is_fetched_again_shortly_before_it_expires() {
    let tmp = tempfile::tempdir().unwrap();
    // Two seconds of life: a tenth of it (under a second) before its end, it is stale.
    let endpoint = TokenEndpoint::start(2);
    let server = server(tmp.path(), &endpoint, CLIENT_SECRET);
    let (_, first) = ask(&server, "ci-runner");
    assert_eq!(first["credential"]["value"], "partner-access-token-1");
    std::thread::sleep(std::time::Duration::from_millis(2100));
    let (_, later) = ask(&server, "ci-runner");
    assert_eq!(later["credential"]["value"], "partner-access-token-2");
    assert_eq!(endpoint.state.lock().unwrap().requests.len(), 2);
    stop_server(server);
}

#[test]
fn a_refused_client_is_a_503_naming_the_endpoints_error_and_no_secret() {
    let tmp = tempfile::tempdir().unwrap();
    let endpoint = TokenEndpoint::start(3600);
    let server = server(tmp.path(), &endpoint, "not-the-secret");
    let (status, answer) = ask(&server, "ci-runner");
    assert_eq!(status, 503, "{answer}");
    assert_eq!(answer["reason_code"], "credential_unavailable");
    let reason = answer["reason"].as_str().unwrap();
    assert!(
        reason.contains("`partner_api` could not be issued"),
        "{reason}"
    );
    assert!(!reason.contains("not-the-secret"), "{reason}");
    let logged = server.wait_for_log("credential_issue_failed");
    assert!(
        logged.contains("answered 401: `invalid_client`"),
        "{logged}"
    );
    assert!(!logged.contains("not-the-secret"), "{logged}");
    assert_eq!(answer["credential"], Value::Null);
    stop_server(server);
}
