//! `portcullis credential` as a CI job runs it: against a running server, with its evidence
//! from a fake GitHub Actions ID-token endpoint on loopback (shaped as the runner provides
//! it), from a GitLab `id_tokens` variable, from HCP Terraform's variable, or from a file; and
//! refused with the server's reason.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::process::Output;
use std::sync::{Arc, Mutex};

use common::issuing::{SECRET, server, token};
use common::{Server, http_stub, portcullis, stop_server};
use serde_json::{Value, json};

/// The bearer token the runner gives the job to ask for ID tokens.
const REQUEST_TOKEN: &str = "runner-request-token-77";

/// A fake of GitHub Actions' ID-token endpoint: answers `GET /token?api-version=2.0&audience=…`
/// with `{"value": TOKEN}` when the request carries the runner's bearer token, and records
/// the request lines it saw.
struct IdTokenEndpoint {
    url: String,
    seen: Arc<Mutex<Vec<String>>>,
}

impl IdTokenEndpoint {
    fn start(token: String) -> IdTokenEndpoint {
        let seen: Arc<Mutex<Vec<String>>> = Arc::default();
        let record = Arc::clone(&seen);
        let base = http_stub::serve(move |request| {
            record.lock().unwrap().push(request.line.clone());
            let expected = format!("bearer {REQUEST_TOKEN}");
            let authorized = request
                .header("authorization")
                .is_some_and(|value| value.eq_ignore_ascii_case(&expected));
            if authorized {
                (200, json!({ "count": 1, "value": token }))
            } else {
                (401, json!({ "message": "no" }))
            }
        });
        IdTokenEndpoint {
            url: format!("{base}/token?api-version=2.0"),
            seen,
        }
    }
}

/// `portcullis credential ARGS` with only `env` set among the variables it reads.
fn credential(server: &Server, args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut command = portcullis();
    command
        .arg("credential")
        .args(["--server", &server.url("")])
        .args(args);
    for variable in [
        "ACTIONS_ID_TOKEN_REQUEST_URL",
        "ACTIONS_ID_TOKEN_REQUEST_TOKEN",
        "GITLAB_CI",
        "PORTCULLIS_ID_TOKEN",
        "TFC_WORKLOAD_IDENTITY_TOKEN",
        "KUBERNETES_SERVICE_HOST",
        "PORTCULLIS_URL",
        "GITHUB_ACTIONS",
    ] {
        command.env_remove(variable);
    }
    command.envs(env.iter().copied());
    command.output().unwrap()
}

fn stdout(out: &Output) -> String {
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn a_ci_job_exchanges_its_platform_evidence_for_a_credential() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path());
    let endpoint = IdTokenEndpoint::start(token("ci-runner", 300));

    // GitHub Actions: the job asks the runner's endpoint for a token for the audience.
    let github = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", REQUEST_TOKEN),
    ];
    let out = credential(&server, &["--target", "legacy"], &github);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("PORTCULLIS_CREDENTIAL={SECRET}\n"));
    let seen = endpoint.seen.lock().unwrap().clone();
    assert_eq!(
        seen,
        vec!["GET /token?api-version=2.0&audience=portcullis HTTP/1.1".to_owned()]
    );

    // JSON, a JWT with its expiry, and another variable name.
    let out = credential(
        &server,
        &["--target", "billing", "--format", "json"],
        &github,
    );
    assert!(out.status.success(), "{}", stderr(&out));
    let issued: Value = serde_json::from_str(&stdout(&out)).unwrap();
    assert_eq!(issued["kind"], "jwt");
    assert_eq!(issued["type"], "bearer");
    assert!(issued["value"].as_str().unwrap().starts_with("ey"));
    let out = credential(
        &server,
        &["--target", "billing", "--env-name", "BILLING_TOKEN"],
        &github,
    );
    let text = stdout(&out);
    assert!(text.starts_with("BILLING_TOKEN=ey"), "{text}");
    assert!(text.contains("\nBILLING_TOKEN_EXPIRES_AT=20"), "{text}");
    assert!(!stderr(&out).contains("::add-mask::"), "{}", stderr(&out));

    // On a GitHub runner the value is masked in the job's log, by a command on standard error
    // so that standard output can still be appended to `$GITHUB_ENV` as it is.
    let on_runner = [github[0], github[1], ("GITHUB_ACTIONS", "true")];
    let out = credential(&server, &["--target", "legacy"], &on_runner);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), format!("PORTCULLIS_CREDENTIAL={SECRET}\n"));
    assert_eq!(stderr(&out), format!("::add-mask::{SECRET}\n"));

    // A runner token the endpoint does not accept.
    let wrong = [
        ("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url.as_str()),
        ("ACTIONS_ID_TOKEN_REQUEST_TOKEN", "not-the-runner's"),
    ];
    let out = credential(&server, &["--target", "legacy"], &wrong);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("GitHub Actions' ID-token request failed"),
        "{}",
        stderr(&out)
    );
    assert!(stderr(&out).contains("answered 401"), "{}", stderr(&out));

    // GitLab CI, HCP Terraform, and a file.
    let caller = token("ci-runner", 300);
    let gitlab = [
        ("GITLAB_CI", "true"),
        ("PORTCULLIS_ID_TOKEN", caller.as_str()),
    ];
    let out = credential(&server, &["--target", "legacy"], &gitlab);
    assert_eq!(
        stdout(&out),
        format!("PORTCULLIS_CREDENTIAL={SECRET}\n"),
        "{}",
        stderr(&out)
    );
    let out = credential(&server, &["--target", "legacy"], &[("GITLAB_CI", "true")]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("id_tokens"), "{}", stderr(&out));
    let terraform = [("TFC_WORKLOAD_IDENTITY_TOKEN", caller.as_str())];
    let out = credential(&server, &["--target", "legacy"], &terraform);
    assert!(out.status.success(), "{}", stderr(&out));
    let file = tmp.path().join("token");
    std::fs::write(&file, format!("{caller}\n")).unwrap();
    // A Kubernetes pod: the projected token file, named where the pod mounts it.
    let pod = [("KUBERNETES_SERVICE_HOST", "10.0.0.1")];
    let out = credential(
        &server,
        &[
            "--target",
            "legacy",
            "--kubernetes-token-file",
            file.to_str().unwrap(),
        ],
        &pod,
    );
    assert_eq!(
        stdout(&out),
        format!("PORTCULLIS_CREDENTIAL={SECRET}\n"),
        "{}",
        stderr(&out)
    );
    let missing = tmp.path().join("not-mounted");
    let out = credential(
        &server,
        &[
            "--target",
            "legacy",
            "--kubernetes-token-file",
            missing.to_str().unwrap(),
        ],
        &pod,
    );
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("projected service-account token"),
        "{}",
        stderr(&out)
    );
    let out = credential(
        &server,
        &["--target", "legacy", "--token-file", file.to_str().unwrap()],
        &[],
    );
    assert!(out.status.success(), "{}", stderr(&out));

    // Refusals: exit 2 with the server's reason, and nothing on standard output.
    let intruder = tmp.path().join("intruder");
    std::fs::write(&intruder, token("intruder", 300)).unwrap();
    let out = credential(
        &server,
        &[
            "--target",
            "legacy",
            "--token-file",
            intruder.to_str().unwrap(),
        ],
        &[],
    );
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stdout(&out).is_empty());
    assert!(stderr(&out).contains("(no_permit;"), "{}", stderr(&out));

    // Allowed, but the server cannot issue: a failure to retry (exit 1), not a refusal.
    let out = credential(
        &server,
        &["--target", "gone", "--token-file", file.to_str().unwrap()],
        &[],
    );
    assert_eq!(out.status.code(), Some(1), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("could not issue the credential"),
        "{}",
        stderr(&out)
    );
    // GitHub Actions without the request token: said so.
    let half = [("ACTIONS_ID_TOKEN_REQUEST_URL", endpoint.url.as_str())];
    let out = credential(&server, &["--target", "legacy"], &half);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("ACTIONS_ID_TOKEN_REQUEST_TOKEN is not"),
        "{}",
        stderr(&out)
    );

    // Nowhere to find evidence; a server over plain http elsewhere.
    let out = credential(&server, &["--target", "legacy"], &[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("no evidence found"),
        "{}",
        stderr(&out)
    );
    let out = portcullis()
        .args([
            "credential",
            "--target",
            "legacy",
            "--server",
            "http://ci.example.com",
        ])
        .args(["--token-file", file.to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(
        stderr(&out).contains("only from a loopback address"),
        "{}",
        stderr(&out)
    );
    stop_server(server);
}

/// A server under a company's own CA: `--ca-file` names that CA, and without it the handshake
/// fails with the reason. The server here is a stand-in answering `POST /v1/credentials` over
/// `https` with the tests' certificate; what is under test is the client's TLS.
#[test]
fn a_server_under_a_private_ca_is_reached_with_its_ca_file() {
    let tmp = tempfile::tempdir().unwrap();
    let token_file = tmp.path().join("token");
    std::fs::write(&token_file, "header.payload.signature").unwrap();
    let url = http_stub::serve_tls(|request| match request.path() {
        "/v1/credentials" => (
            200,
            json!({ "decision": "allow", "credential": {
                "name": "legacy_db", "kind": "static", "type": "secret", "value": "s3cret",
                "ttl_s": null, "expires_at": null } }),
        ),
        _ => (404, json!({})),
    });
    let ask = |extra: &[&str]| {
        portcullis()
            .args(["credential", "--target", "legacy", "--server", &url])
            .args(["--token-file", token_file.to_str().unwrap()])
            .args(extra)
            .env_remove("GITHUB_ACTIONS")
            .output()
            .unwrap()
    };
    let tls = common::repo().join("tests/fixtures/tls");
    let out = ask(&["--ca-file", tls.join("ca.pem").to_str().unwrap()]);
    assert!(out.status.success(), "{}", stderr(&out));
    assert_eq!(stdout(&out), "PORTCULLIS_CREDENTIAL=s3cret\n");

    let out = ask(&[]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("UnknownIssuer"), "{}", stderr(&out));
    assert!(stderr(&out).contains("in `--ca-file`"), "{}", stderr(&out));
    let out = ask(&["--ca-file", tls.join("localhost.key.pem").to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    assert!(stderr(&out).contains("--ca-file"), "{}", stderr(&out));
    assert!(
        stderr(&out).contains("other than certificates"),
        "{}",
        stderr(&out)
    );
}
