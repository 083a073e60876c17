//! The HTTP proxy in reverse mode, with a real upstream: `portcullis serve` with a listener
//! per target in front of HTTP servers this test runs on loopback (one over TLS under the
//! tests' CA) that record what they receive. The injected credential arrives, the client's
//! own credential and evidence do not, the client never sees the credential, a denied request
//! never reaches the upstream, and every request is an access event.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::Path;
use std::sync::{Arc, Mutex};

use common::http_stub::{self, StubRequest};
use common::issuing::{ISSUER, SECRET, token, write_jwks};
use common::{Server, event_rows, free_port, start_server_with, stop_server};
use serde_json::{Value, json};

/// What an upstream received: request line and headers of each request.
type Seen = Arc<Mutex<Vec<(String, Vec<(String, String)>)>>>;

fn recording(seen: &Seen) -> impl Fn(&StubRequest) -> (u16, Value) + Send + 'static {
    let seen = Arc::clone(seen);
    move |request| {
        seen.lock()
            .unwrap()
            .push((request.line.clone(), request.headers.clone()));
        (200, json!({ "invoices": [1, 2] }))
    }
}

struct Setup {
    server: Server,
    billing: u16,
    legacy: u16,
    gone: u16,
}

/// A server with three listeners: `billing` (a minted JWT as a bearer token, to a plain-http
/// upstream on loopback), `legacy` (a static secret in an API-key header, to an `https`
/// upstream under the tests' CA), `gone` (an upstream nobody listens on).
fn start(dir: &Path, billing_upstream: &str, legacy_upstream: &str) -> Setup {
    let jwks = write_jwks(dir);
    let secret = dir.join("legacy.secret");
    std::fs::write(&secret, format!("{SECRET}\n")).unwrap();
    let policy = dir.join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("proxy.gate"),
        format!(
            "workload ci {{ oidc {{ sub == \"ci-runner\" }} }}\n\
             target billing {{ https {{ host = \"billing.internal\" }} }}\n\
             target legacy {{ https {{ host = \"legacy.internal\" }} }}\n\
             target gone {{ https {{ host = \"gone.internal\" }} }}\n\
             credential billing_token {{ jwt {{ audience = \"billing\" ttl = 15m }} }}\n\
             credential legacy_key {{ static {{ file = {secret:?} }} }}\n\
             permit ci_reads_billing {{ workload ci target billing credential billing_token \
             when request.action == \"GET\" && request.resource like \"/v1/*\" }}\n\
             permit ci_legacy {{ workload ci target legacy credential legacy_key }}\n\
             permit ci_gone {{ workload ci target gone }}\n",
            secret = secret.to_str().unwrap(),
        ),
    )
    .unwrap();
    let (billing, legacy, gone) = (free_port(), free_port(), free_port());
    let ca = common::repo().join("tests/fixtures/tls/ca.pem");
    let config = dir.join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n\
             [[trust_providers]]\nname = \"ci-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n\n\
             [[proxy.http]]\ntarget = \"billing\"\nlisten = \"127.0.0.1:{billing}\"\n\
             upstream = \"{billing_upstream}/api\"\n\n\
             [[proxy.http]]\ntarget = \"legacy\"\nlisten = \"127.0.0.1:{legacy}\"\n\
             upstream = \"{legacy_upstream}\"\ninject = \"header\"\ncredential_reuse_s = 0\n\
             inject_name = \"x-api-key\"\nca_file = {ca:?}\n\n\
             [[proxy.http]]\ntarget = \"gone\"\nlisten = \"127.0.0.1:{gone}\"\n\
             upstream = \"http://127.0.0.1:{closed}\"\n",
            policy = policy.to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
            ca = ca.to_str().unwrap(),
            closed = free_port(),
        ),
    )
    .unwrap();
    let server = start_server_with(&config, &dir.join("data"));
    Setup {
        server,
        billing,
        legacy,
        gone,
    }
}

/// A request through the proxy on `port`: status, headers and body as the client sees them.
fn call(
    port: u16,
    method: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, Vec<(String, String)>, String) {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let url = format!("http://127.0.0.1:{port}{path}");
    let request = ureq::http::Request::builder().method(method).uri(&url);
    let request = headers.iter().fold(request, |request, (name, value)| {
        request.header(*name, *value)
    });
    let mut response = agent.run(request.body(()).unwrap()).unwrap();
    let status = response.status().as_u16();
    let seen_headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    let body = response.body_mut().read_to_string().unwrap();
    (status, seen_headers, body)
}

fn header<'h>(headers: &'h [(String, String)], name: &str) -> Option<&'h str> {
    headers
        .iter()
        .find(|(known, _)| known == name)
        .map(|(_, value)| value.as_str())
}

#[test]
fn requests_are_decided_injected_relayed_and_recorded() {
    let tmp = tempfile::tempdir().unwrap();
    let billing_seen: Seen = Arc::default();
    let legacy_seen: Seen = Arc::default();
    let billing_upstream = http_stub::serve(recording(&billing_seen));
    let legacy_upstream = http_stub::serve_tls(recording(&legacy_seen));
    let setup = start(tmp.path(), &billing_upstream, &legacy_upstream);
    let caller = token("ci-runner", 300);
    let evidence = format!("Bearer {caller}");

    // Allowed: the upstream gets the minted token, not the client's own credential or its
    // evidence, under the upstream's base path.
    let (status, headers, body) = call(
        setup.billing,
        "GET",
        "/v1/invoices?month=2026-11",
        &[
            ("x-portcullis-evidence", &evidence),
            ("authorization", "Bearer the-clients-own"),
        ],
    );
    assert_eq!(status, 200, "{body}");
    assert_eq!(body, r#"{"invoices":[1,2]}"#);
    let seen = billing_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 1);
    assert_eq!(seen[0].0, "GET /api/v1/invoices?month=2026-11 HTTP/1.1");
    let upstream_headers = &seen[0].1;
    let authorization = header(upstream_headers, "authorization").unwrap();
    let minted = authorization.strip_prefix("Bearer ").unwrap();
    assert_ne!(minted, "the-clients-own");
    let payload = minted.split('.').nth(1).unwrap();
    let claims: Value = serde_json::from_slice(
        &base64::Engine::decode(&base64::engine::general_purpose::URL_SAFE_NO_PAD, payload)
            .unwrap(),
    )
    .unwrap();
    assert_eq!(claims["aud"], "billing");
    assert_eq!(claims["sub"], "ci");
    assert!(header(upstream_headers, "x-portcullis-evidence").is_none());
    assert!(!format!("{upstream_headers:?}").contains(&caller));
    // The client sees nothing of the credential.
    assert!(!body.contains(minted) && !format!("{headers:?}").contains(minted));
    // The same caller's next request is decided again, with the credential it was issued.
    let (status, _, body) = call(
        setup.billing,
        "GET",
        "/v1/invoices/2",
        &[("x-portcullis-evidence", &evidence)],
    );
    assert_eq!(status, 200, "{body}");
    let seen = billing_seen.lock().unwrap().clone();
    assert_eq!(header(&seen[1].1, "authorization"), Some(authorization));

    // Denied: a 403 in the proxy's words, and the upstream is never asked.
    let (status, _, body) = call(
        setup.billing,
        "POST",
        "/v1/invoices",
        &[("x-portcullis-evidence", &evidence)],
    );
    assert_eq!(status, 403, "{body}");
    let refusal: Value = serde_json::from_str(&body).unwrap();
    assert_eq!(refusal["reason_code"], "no_permit", "{refusal}");
    assert!(
        refusal["event_id"]
            .as_str()
            .is_some_and(|id| !id.is_empty())
    );
    let (status, _, body) = call(setup.billing, "GET", "/v1/invoices", &[]);
    assert_eq!(status, 403, "{body}");
    let (status, _, body) = call(
        setup.billing,
        "GET",
        "/v1/invoices",
        &[("x-portcullis-evidence", "Bearer not-a-token")],
    );
    assert_eq!(status, 403, "{body}");
    // Two tokens, in either order, are no evidence: a 400 before any decision.
    for (first, second) in [
        (evidence.as_str(), "Bearer x"),
        ("Bearer x", evidence.as_str()),
    ] {
        let (status, _, body) = call(
            setup.billing,
            "GET",
            "/v1/invoices",
            &[
                ("x-portcullis-evidence", first),
                ("x-portcullis-evidence", second),
            ],
        );
        assert_eq!(status, 400, "{body}");
        assert!(body.contains("was sent more than once"), "{body}");
    }
    // A dot segment, as written or encoded, would take a resolving upstream out of the
    // listener's base path.
    for path in [
        "/v1/a/../../../admin",
        "/v1/%2e%2e/%2E%2e/admin",
        "/v1/..;/..;/admin",
    ] {
        let (status, _, body) = call(
            setup.billing,
            "GET",
            path,
            &[("x-portcullis-evidence", &evidence)],
        );
        assert_eq!(status, 400, "{path}: {body}");
        assert!(body.contains("`..` segment"), "{body}");
    }
    // A request target that is no path: nothing to put after the base path.
    let host = format!("host: 127.0.0.1:{}", setup.billing);
    let evidence_header = format!("x-portcullis-evidence: {evidence}");
    for line in ["OPTIONS * HTTP/1.1", "GET 127.0.0.1:80 HTTP/1.1"] {
        let (status, answer) =
            through_forward_proxy(setup.billing, line, &[&host, &evidence_header]);
        assert_eq!(status, 400, "{line}: {answer}");
    }
    assert_eq!(
        billing_seen.lock().unwrap().len(),
        2,
        "no refused request went upstream"
    );

    // A static secret in an API-key header, over TLS verified against the configured CA; the
    // client's own value of that header is replaced.
    // This listener reuses nothing: each request is an issuance.
    for _ in 0..2 {
        let (status, headers, body) = call(
            setup.legacy,
            "GET",
            "/reports",
            &[("x-portcullis-evidence", &caller), ("x-api-key", "mine")],
        );
        assert_eq!(status, 200, "{body}");
        assert!(!body.contains(SECRET) && !format!("{headers:?}").contains(SECRET));
    }
    let seen = legacy_seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 2);
    assert_eq!(header(&seen[0].1, "x-api-key"), Some(SECRET));

    // An upstream nobody listens on: a 502.
    let (status, _, body) = call(
        setup.gone,
        "GET",
        "/",
        &[("x-portcullis-evidence", &caller)],
    );
    assert_eq!(status, 502, "{body}");
    assert!(body.contains("could not be reached"), "{body}");

    // The counters of `GET /metrics` saw the same.
    let mut metrics = ureq::get(&setup.server.url("/metrics")).call().unwrap();
    let text = metrics.body_mut().read_to_string().unwrap();
    for line in [
        "portcullis_decisions_total{decision=\"allow\"} 5",
        "portcullis_decisions_total{decision=\"deny\"} 3",
        "portcullis_denials_total{reason=\"no_permit\"} 1",
        "portcullis_denials_total{reason=\"token_malformed\"} 2",
        "portcullis_proxy_upstream_errors_total{target=\"gone\"} 1",
        "portcullis_proxy_active_connections{protocol=\"http\"} 0",
        "portcullis_decision_seconds_count 8",
        // Every request, the seven refused before a decision too.
        "portcullis_proxy_seconds_count{protocol=\"http\"} 15",
    ] {
        assert!(text.lines().any(|l| l == line), "no `{line}` in:\n{text}");
    }

    let log = stop_server(setup.server);
    assert!(
        !log.iter()
            .any(|line| line.contains(SECRET) || line.contains(minted)),
        "a credential is in the log"
    );
    let rows = event_rows(
        &tmp.path().join("data"),
        &["kind", "target", "action", "resource", "reason_code"],
        "kind IN ('decision', 'attestation_failed', 'credential_issued')",
    );
    assert_eq!(
        rows,
        [
            "decision billing GET /v1/invoices permitted",
            "credential_issued billing GET /v1/invoices credential_issued",
            "decision billing GET /v1/invoices/2 permitted",
            "decision billing POST /v1/invoices no_permit",
            "attestation_failed billing GET /v1/invoices token_malformed",
            "attestation_failed billing GET /v1/invoices token_malformed",
            "decision legacy GET /reports permitted",
            "credential_issued legacy GET /reports credential_issued",
            "decision legacy GET /reports permitted",
            "credential_issued legacy GET /reports credential_issued",
            "decision gone GET / permitted",
        ],
        "{rows:#?}"
    );
}

/// One raw HTTP/1.1 exchange with the proxy on `port`, as a client configured with
/// `HTTP_PROXY` sends it: the request line in absolute form. The status and the whole answer.
fn through_forward_proxy(port: u16, request_line: &str, headers: &[&str]) -> (u16, String) {
    use std::io::{Read as _, Write as _};
    let mut stream = std::net::TcpStream::connect(("127.0.0.1", port)).unwrap();
    let mut request = format!("{request_line}\r\n");
    for header in headers {
        request.push_str(header);
        request.push_str("\r\n");
    }
    request.push_str("connection: close\r\n\r\n");
    stream.write_all(request.as_bytes()).unwrap();
    let mut answer = String::new();
    stream.read_to_string(&mut answer).unwrap();
    let status = answer
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .unwrap_or(0);
    (status, answer)
}

/// The explicit forward-proxy mode: a client names an `http://` target in its request, its
/// token in `Proxy-Authorization`; the proxy decides for whichever target the policy declares
/// at that endpoint, and forwards nowhere else.
#[test]
fn the_forward_proxy_reaches_declared_http_targets_only() {
    let tmp = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let upstream = http_stub::serve(recording(&seen));
    let upstream_port: u16 = upstream.rsplit(':').next().unwrap().parse().unwrap();
    let audits_seen: Seen = Arc::default();
    let audits = http_stub::serve(recording(&audits_seen));
    let audits_port: u16 = audits.rsplit(':').next().unwrap().parse().unwrap();
    // An upstream that takes connections and never answers.
    let silent = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let silent_port = silent.local_addr().unwrap().port();
    let jwks = write_jwks(tmp.path());
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("forward.gate"),
        format!(
            "workload ci {{ oidc {{ sub == \"ci-runner\" }} }}\n\
             target reports {{ http {{ host = \"127.0.0.1\" port = {upstream_port} }} }}\n\
             target audits {{ http {{ host = \"127.0.0.1\" port = {audits_port} }} }}\n\
             target silent {{ http {{ host = \"127.0.0.1\" port = {silent_port} }} }}\n\
             target faraway {{ http {{ host = \"reports.example.invalid\" }} }}\n\
             credential reports_token {{ jwt {{ audience = \"reports\" ttl = 15m }} }}\n\
             permit ci_reports {{ workload ci target reports credential reports_token }}\n\
             permit ci_audits {{ workload ci target audits credential reports_token }}\n\
             permit ci_silent {{ workload ci target silent credential reports_token }}\n\
             permit ci_faraway {{ workload ci target faraway credential reports_token }}\n"
        ),
    )
    .unwrap();
    let proxy_port = free_port();
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n\
             [[trust_providers]]\nname = \"ci-idp\"\nkind = \"oidc\"\nissuer = \"{ISSUER}\"\n\
             audiences = [\"portcullis\"]\njwks_file = {jwks:?}\n\n\
             [[proxy.http]]\nmode = \"forward\"\nlisten = \"127.0.0.1:{proxy_port}\"\n\
             upstream_timeout_s = 1\n",
            policy = policy.to_str().unwrap(),
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    let server = start_server_with(&config, &tmp.path().join("data"));
    let caller = token("ci-runner", 300);
    let evidence = format!("proxy-authorization: Bearer {caller}");
    let host = format!("host: 127.0.0.1:{upstream_port}");

    let line = format!("GET http://127.0.0.1:{upstream_port}/daily?day=3 HTTP/1.1");
    // The token in the usual evidence header too: it goes no further than the proxy either.
    let also = format!("x-portcullis-evidence: Bearer {caller}");
    let (status, answer) = through_forward_proxy(proxy_port, &line, &[&host, &evidence, &also]);
    assert_eq!(status, 200, "{answer}");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert_eq!(requests[0].0, "GET /daily?day=3 HTTP/1.1");
    let authorization = header(&requests[0].1, "authorization").unwrap();
    assert!(authorization.starts_with("Bearer ey"), "{authorization}");
    assert!(header(&requests[0].1, "proxy-authorization").is_none());
    assert!(header(&requests[0].1, "x-portcullis-evidence").is_none());
    assert!(!answer.contains(&authorization["Bearer ".len()..]));

    // Without evidence: 407, asking for it.
    let (status, answer) = through_forward_proxy(proxy_port, &line, &[&host]);
    assert_eq!(status, 407, "{answer}");
    assert!(
        answer.to_lowercase().contains("proxy-authenticate: bearer"),
        "{answer}"
    );
    // An endpoint no target declares: refused, never forwarded; nor a tunnel.
    let elsewhere = format!("GET http://127.0.0.1:{}/ HTTP/1.1", free_port());
    let (status, answer) = through_forward_proxy(proxy_port, &elsewhere, &[&evidence]);
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("unknown_target"), "{answer}");
    let connect = format!("CONNECT 127.0.0.1:{upstream_port} HTTP/1.1");
    let (status, _) = through_forward_proxy(proxy_port, &connect, &[&evidence]);
    assert_eq!(status, 405);
    let (status, answer) =
        through_forward_proxy(proxy_port, "GET /daily HTTP/1.1", &[&host, &evidence]);
    assert_eq!(status, 400, "{answer}");
    assert_eq!(
        seen.lock().unwrap().len(),
        1,
        "only the allowed request went upstream"
    );

    // Another target with the same credential: a credential of its own, not the first one's.
    let line = format!("GET http://127.0.0.1:{audits_port}/all HTTP/1.1");
    let audits_host = format!("host: 127.0.0.1:{audits_port}");
    let (status, answer) = through_forward_proxy(proxy_port, &line, &[&audits_host, &evidence]);
    assert_eq!(status, 200, "{answer}");
    let other = audits_seen.lock().unwrap()[0].1.clone();
    let other = header(&other, "authorization").unwrap().to_owned();
    assert_ne!(
        other, authorization,
        "a credential is reused for one target only"
    );

    // An upstream that never answers: 504 after `upstream_timeout_s`.
    let line = format!("GET http://127.0.0.1:{silent_port}/ HTTP/1.1");
    let (status, answer) = through_forward_proxy(proxy_port, &line, &[&evidence]);
    assert_eq!(status, 504, "{answer}");
    assert!(answer.contains("did not answer in time (1 s)"), "{answer}");
    drop(silent);

    // Plain `http` off loopback: the credential is not sent in the clear, nor anything asked.
    let line = "GET http://reports.example.invalid/daily HTTP/1.1";
    let (status, answer) = through_forward_proxy(
        proxy_port,
        line,
        &["host: reports.example.invalid", &evidence],
    );
    assert_eq!(status, 403, "{answer}");
    assert!(answer.contains("allow_plaintext"), "{answer}");

    let mut metrics = ureq::get(&server.url("/metrics")).call().unwrap();
    let text = metrics.body_mut().read_to_string().unwrap();
    assert!(
        text.lines()
            .any(|l| l == "portcullis_proxy_upstream_errors_total{target=\"silent\"} 1"),
        "{text}"
    );
    stop_server(server);
}

/// A reverse-mode listener on a Unix socket: the caller is the process at the other end,
/// attested by its connection, and needs no token.
#[test]
fn a_local_process_reaches_its_target_through_a_socket_listener() {
    use std::io::{Read as _, Write as _};
    let tmp = tempfile::tempdir().unwrap();
    let seen: Seen = Arc::default();
    let upstream = http_stub::serve(recording(&seen));
    let status = std::fs::read_to_string("/proc/self/status").unwrap();
    let uid: u32 = status
        .lines()
        .find_map(|line| line.strip_prefix("Uid:"))
        .and_then(|ids| ids.split_whitespace().nth(1))
        .and_then(|uid| uid.parse().ok())
        .unwrap();
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("local.gate"),
        format!(
            "workload this_test {{ process {{ uid == {uid} }} }}\n\
             target reports {{ https {{ host = \"reports.internal\" }} }}\n\
             credential reports_token {{ jwt {{ audience = \"reports\" ttl = 15m }} }}\n\
             permit this_test_reads {{ workload this_test target reports \
             credential reports_token when request.action == \"GET\" }}\n"
        ),
    )
    .unwrap();
    let socket = tmp.path().join("reports.sock");
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n\
             [[proxy.http]]\ntarget = \"reports\"\nlisten_socket = {socket:?}\n\
             upstream = \"{upstream}\"\n",
            policy = policy.to_str().unwrap(),
            socket = socket.to_str().unwrap(),
        ),
    )
    .unwrap();
    let server = start_server_with(&config, &tmp.path().join("data"));
    let ask = |method: &str| {
        let mut stream = std::os::unix::net::UnixStream::connect(&socket).unwrap();
        let request = format!(
            "{method} /daily HTTP/1.1\r\nhost: reports\r\nx-portcullis-evidence: forged\r\n\
             content-length: 0\r\nconnection: close\r\n\r\n"
        );
        stream.write_all(request.as_bytes()).unwrap();
        let mut answer = String::new();
        stream.read_to_string(&mut answer).unwrap();
        answer
    };
    let answer = ask("GET");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 1);
    assert!(header(&requests[0].1, "authorization").is_some_and(|v| v.starts_with("Bearer ey")));
    assert!(header(&requests[0].1, "x-portcullis-evidence").is_none());
    let answer = ask("POST");
    assert!(answer.starts_with("HTTP/1.1 403"), "{answer}");
    assert_eq!(seen.lock().unwrap().len(), 1);
    // The same process again, on a new connection: decided again, its credential (a JWT with
    // its own `jti`) reused rather than minted anew.
    let answer = ask("GET");
    assert!(answer.starts_with("HTTP/1.1 200"), "{answer}");
    let requests = seen.lock().unwrap().clone();
    assert_eq!(requests.len(), 2);
    assert_eq!(
        header(&requests[1].1, "authorization"),
        header(&requests[0].1, "authorization"),
        "the credential is reused for the same process"
    );
    stop_server(server);
    assert!(!socket.exists(), "the socket is removed at stop");
    let data = tmp.path().join("data");
    let decisions = event_rows(&data, &["decision"], "kind = 'decision'");
    assert_eq!(decisions, ["allow", "deny", "allow"]);
    let issued = event_rows(&data, &["kind"], "kind = 'credential_issued'");
    assert_eq!(issued.len(), 1, "{issued:?}");
}

/// A server that cannot start after it made a listener's Unix socket removes the socket: the
/// next start does not find a stale file in its way.
#[test]
fn a_failed_start_leaves_no_socket_behind() {
    let tmp = tempfile::tempdir().unwrap();
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("p.gate"),
        "target reports { https { host = \"reports.internal\" } }\n",
    )
    .unwrap();
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let taken_port = taken.local_addr().unwrap().port();
    let socket = tmp.path().join("reports.sock");
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n\
             [[proxy.http]]\ntarget = \"reports\"\nlisten_socket = {socket:?}\n\
             upstream = \"https://reports.internal\"\n\n\
             [[proxy.http]]\ntarget = \"reports\"\nlisten = \"127.0.0.1:{taken_port}\"\n\
             upstream = \"https://reports.internal\"\n",
            policy = policy.to_str().unwrap(),
            socket = socket.to_str().unwrap(),
        ),
    )
    .unwrap();
    let out = common::portcullis()
        .arg("serve")
        .arg("--config")
        .arg(&config)
        .args(["--listen", "127.0.0.1:0", "--data-dir"])
        .arg(tmp.path().join("data"))
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(!out.status.success(), "{stderr}");
    assert!(
        stderr.contains(&format!("127.0.0.1:{taken_port}")),
        "{stderr}"
    );
    assert!(!socket.exists(), "the socket is left behind: {stderr}");
    drop(taken);
}
