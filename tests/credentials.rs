//! `POST /v1/credentials` on a running `portcullis serve`: a JWT minted for the target and
//! verified with the server's published keys, a static secret read from its file, a 403 with
//! the reason for everything that issues nothing, and the audit store holding a
//! `credential_issued` event per credential without any credential in it.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use common::issuing::{SECRET, server, token};
use common::{Server, audit_query, get_json, post_json, stop_server};
use jsonwebtoken::jwk::JwkSet;
use jsonwebtoken::{Algorithm, DecodingKey, Validation};
use serde_json::{Value, json};

fn ask(server: &Server, token: &str, target: &str) -> (u16, Value) {
    let body = json!({ "evidence": { "token": token }, "target": { "name": target } });
    post_json(server, "/v1/credentials", &body)
}

#[test]
fn credentials_are_issued_verified_refused_and_recorded_without_their_values() {
    let tmp = tempfile::tempdir().unwrap();
    let server = server(tmp.path());
    let caller = token("ci-runner", 300);

    // A JWT for the billing API, verified as the target would: with the published keys.
    let (status, answer) = ask(&server, &caller, "billing");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "allow");
    assert_eq!(answer["rule"], "ci_billing");
    let credential = &answer["credential"];
    assert_eq!(credential["kind"], "jwt");
    assert_eq!(credential["type"], "bearer");
    assert_eq!(credential["ttl_s"], 900);
    let minted = credential["value"].as_str().unwrap().to_owned();
    let (status, jwks) = get_json(&server, "/.well-known/jwks.json");
    assert_eq!(status, 200, "{jwks}");
    let (status, discovery) = get_json(&server, "/.well-known/openid-configuration");
    assert_eq!(status, 200, "{discovery}");
    assert_eq!(discovery["issuer"], format!("http://{}", server.addr));
    assert_eq!(
        discovery["jwks_uri"],
        format!("http://{}/.well-known/jwks.json", server.addr)
    );
    let jwks: JwkSet = serde_json::from_value(jwks).unwrap();
    let header = jsonwebtoken::decode_header(&minted).unwrap();
    assert_eq!(header.alg, Algorithm::EdDSA);
    let jwk = jwks.find(header.kid.as_deref().unwrap()).unwrap();
    let mut validation = Validation::new(Algorithm::EdDSA);
    validation.set_audience(&["billing"]);
    validation.set_issuer(&[format!("http://{}", server.addr)]);
    let verified =
        jsonwebtoken::decode::<Value>(&minted, &DecodingKey::from_jwk(jwk).unwrap(), &validation)
            .unwrap()
            .claims;
    assert_eq!(verified["sub"], "ci");
    assert_eq!(verified["portcullis"]["caller"], "ci-runner");
    assert_eq!(verified["portcullis"]["target"], "billing");
    // `copy_claims` names `team`, the provider's custom claim from `org.team` (not the
    // token's top-level `team`, which no policy reads), `email`, and `groups`, which the
    // caller does not carry; its `org` is not named.
    assert_eq!(verified["team"], "payments", "{verified}");
    assert_eq!(verified["email"], "ci@acme.example", "{verified}");
    assert!(verified.get("groups").is_none(), "{verified}");
    assert!(verified.get("org").is_none(), "{verified}");
    assert_eq!(
        verified["exp"].as_i64().unwrap() - verified["iat"].as_i64().unwrap(),
        900
    );
    let jti = verified["jti"].as_str().unwrap().to_owned();
    // The same token under another audience does not verify.
    let mut elsewhere = Validation::new(Algorithm::EdDSA);
    elsewhere.set_audience(&["payments"]);
    assert!(
        jsonwebtoken::decode::<Value>(&minted, &DecodingKey::from_jwk(jwk).unwrap(), &elsewhere)
            .is_err()
    );

    // A static secret, read from its file without the newline `echo` leaves.
    let (status, answer) = ask(&server, &caller, "legacy");
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["credential"]["type"], "secret");
    assert_eq!(answer["credential"]["value"], SECRET);
    assert_eq!(answer["credential"]["expires_at"], Value::Null);

    // Everything that issues nothing is a 403 with the reason, or a 503 when the allowed
    // credential cannot be had.
    let (status, answer) = ask(&server, &token("intruder", 300), "billing");
    assert_eq!(
        (status, answer["reason_code"].as_str()),
        (403, Some("no_permit")),
        "{answer}"
    );
    assert_eq!(answer["credential"], Value::Null);
    let (status, answer) = ask(&server, &caller, "docs");
    assert_eq!(
        (status, answer["reason_code"].as_str()),
        (403, Some("no_credential")),
        "{answer}"
    );
    let (status, answer) = ask(&server, &token("ci-runner", -600), "billing");
    assert_eq!(
        (status, answer["reason_code"].as_str()),
        (403, Some("token_expired")),
        "{answer}"
    );
    let (status, answer) = ask(&server, &caller, "gone");
    assert_eq!(
        (status, answer["reason_code"].as_str()),
        (503, Some("credential_unavailable")),
        "{answer}"
    );
    let reason = answer["reason"].as_str().unwrap();
    assert!(reason.contains("`gone_db` could not be issued"), "{answer}");
    assert!(
        !reason.contains("missing.secret"),
        "no server path reaches the caller: {answer}"
    );
    server.wait_for_log("missing.secret");
    assert_eq!(answer["credential"], Value::Null);
    let (status, answer) = ask(&server, &caller, "nowhere");
    assert_eq!(
        (status, answer["reason_code"].as_str()),
        (403, Some("unknown_target")),
        "{answer}"
    );
    let explained = json!({
        "evidence": { "token": caller }, "target": { "name": "billing" }, "explain": true,
    });
    let (status, answer) = post_json(&server, "/v1/credentials", &explained);
    assert_eq!(status, 400, "{answer}");

    stop_server(server);
    let data = tmp.path().join("data");
    let issued = audit_query(
        &data,
        "SELECT target, credential_provider, credential_ttl_s, credential_ref, workload, \
         subject FROM access_events WHERE kind = 'credential_issued' ORDER BY seq",
    );
    assert_eq!(issued.len(), 2, "{issued:?}");
    assert_eq!(issued[0]["target"], "billing");
    assert_eq!(issued[0]["credential_provider"], "jwt");
    assert_eq!(issued[0]["credential_ttl_s"], 900);
    assert_eq!(issued[0]["workload"], "ci");
    assert_eq!(issued[0]["subject"], "ci-runner");
    assert_eq!(issued[1]["credential_provider"], "static");
    for row in &issued {
        let reference = row["credential_ref"].as_str().unwrap();
        assert!(!reference.is_empty());
        assert!(!reference.contains(&jti) && !reference.contains(SECRET));
    }
    // No column of any event holds a credential.
    let everything = audit_query(&data, "SELECT * FROM access_events");
    let text = serde_json::to_string(&everything).unwrap();
    assert!(!text.contains(&minted), "a minted token is in the store");
    assert!(!text.contains(SECRET), "a static secret is in the store");
    let decisions = audit_query(
        &data,
        "SELECT reason_code, count(*) AS n FROM access_events \
         WHERE kind IN ('decision', 'attestation_failed') \
         GROUP BY reason_code ORDER BY reason_code",
    );
    let codes: Vec<(String, i64)> = decisions
        .iter()
        .map(|row| {
            (
                row["reason_code"].as_str().unwrap().to_owned(),
                row["n"].as_i64().unwrap(),
            )
        })
        .collect();
    // An allow that issued nothing carries the code the caller got, so that an auditor finds
    // the failed and the empty issuances by it.
    let expected = [
        ("credential_unavailable", 1),
        ("no_credential", 1),
        ("no_permit", 1),
        ("permitted", 2),
        ("token_expired", 1),
        ("unknown_target", 1),
    ];
    let expected: Vec<(String, i64)> = expected
        .iter()
        .map(|(code, n)| ((*code).to_owned(), *n))
        .collect();
    assert_eq!(codes, expected);
    // A target name that no target has is recorded as the request gave it.
    let unknown = audit_query(
        &data,
        "SELECT target FROM access_events WHERE reason_code = 'unknown_target'",
    );
    assert_eq!(unknown.len(), 1, "{unknown:?}");
    assert_eq!(unknown[0]["target"], "nowhere");
}

#[test]
fn credentials_the_server_cannot_issue_are_warned_about_at_start() {
    let tmp = tempfile::tempdir().unwrap();
    let jwks = common::issuing::write_jwks(tmp.path());
    let policy = tmp.path().join("policy");
    std::fs::create_dir(&policy).unwrap();
    std::fs::write(
        policy.join("mismatch.gate"),
        "workload ci { oidc { sub == \"ci-runner\" } }\n\
         target orders_db { postgres { host = \"orders.db.internal\" } }\n\
         target api { https { host = \"api.internal\" } }\n\
         credential orders_role { postgres_role { grant = [\"orders_rw\"] ttl = 5m } }\n\
         credential month_token { jwt { audience = \"api\" ttl = 30d } }\n\
         permit ci_orders { workload ci target orders_db credential orders_role }\n\
         permit ci_api { workload ci target api credential month_token }\n",
    )
    .unwrap();
    let config = tmp.path().join("portcullis.toml");
    std::fs::write(
        &config,
        format!(
            "[policy]\ndir = {policy:?}\n\n[[trust_providers]]\nname = \"ci-idp\"\n\
             kind = \"oidc\"\nissuer = \"{issuer}\"\naudiences = [\"portcullis\"]\n\
             jwks_file = {jwks:?}\n",
            policy = policy.to_str().unwrap(),
            issuer = common::issuing::ISSUER,
            jwks = jwks.to_str().unwrap(),
        ),
    )
    .unwrap();
    let server = common::start_server_with(&config, &tmp.path().join("data"));
    let warnings: Vec<&String> = server
        .startup
        .iter()
        .filter(|line| line.contains("credential_not_issuable"))
        .collect();
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("orders_db") && line.contains("[[credentials.postgres]]")),
        "{warnings:?}"
    );
    assert!(
        warnings
            .iter()
            .any(|line| line.contains("month_token") && line.contains("max_ttl_s")),
        "{warnings:?}"
    );
    stop_server(server);
}
