//! Hot reload of the policy, end to end: the real `portcullis` binary serves a policy set from
//! a temporary directory on a free loopback port; the policy files change, a SIGHUP or an
//! admin call asks for a reload; decisions flip when, and only when, a good policy set was put
//! in effect, and every change and every refused change is a `policy_change` event.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::{Path, PathBuf};

use portcullis_lang::SourceFile;
use portcullis_lang::bundle::{Bundle, SigningKey, signing};
use serde_json::{Value, json};

use common::*;

/// Denies the example release workload everything on `billing_api`.
const FREEZE: &str =
    "forbid releases_frozen {\n  workload billing_release\n  target billing_api\n}\n";

/// A declaration cut short: the policy set no longer compiles.
const BROKEN: &str = "permit half_written {\n";

const ADMIN_TOKEN: &str = "test-admin-token-0123456789abcdef";

/// A copy of the example policy set in `dir/policies`.
fn copy_example_policies(dir: &Path) -> PathBuf {
    let policies = dir.join("policies");
    std::fs::create_dir(&policies).unwrap();
    for entry in std::fs::read_dir(repo().join("examples/policies")).unwrap() {
        let path = entry.unwrap().path();
        std::fs::copy(&path, policies.join(path.file_name().unwrap())).unwrap();
    }
    policies
}

/// The release workload asking to deploy through the billing API: allowed by the example
/// policy set, denied once `FREEZE` is in it.
struct Release {
    token: String,
}

impl Release {
    fn new(dir: &Path) -> Release {
        let claims = example_claims("billing-release.json");
        Release {
            token: mint(GITHUB_KEY, &claims, dir),
        }
    }

    fn decide(&self, server: &Server) -> Value {
        decide(
            server,
            &self.token,
            json!({ "name": "billing_api" }),
            "POST",
        )
    }

    /// Decides until the answer is `decision`, and returns that answer.
    fn decide_until(&self, server: &Server, decision: &str) -> Value {
        eventually(&format!("the release is answered `{decision}`"), || {
            let answer = self.decide(server);
            (answer["decision"] == decision).then_some(answer)
        })
    }
}

/// The `policy_change` events, in order, with the old bundle hash taken from `reason` by the
/// query that docs/audit-schema.md gives.
fn policy_changes(data_dir: &Path) -> Vec<Value> {
    let sql = "SELECT event_id, reason_code, action, bundle_hash, resource, source_ip, reason, \
               decision, CASE WHEN reason_code = 'policy_replaced' THEN right(reason, 64) END \
               AS old_bundle_hash \
               FROM access_events WHERE kind = 'policy_change' ORDER BY seq";
    audit_query(data_dir, sql)
}

fn hash(bundle: &Value) -> &str {
    bundle.as_str().unwrap().strip_prefix("sha256:").unwrap()
}

/// Checks one `policy_change` event: what it is, what asked for it, the bundle in effect
/// after it, and for a replacement the bundle it replaced.
fn check_change(event: &Value, reason_code: &str, action: &str, bundle: &str, old: Option<&str>) {
    assert_eq!(event["reason_code"], reason_code, "{event}");
    assert_eq!(event["action"], action, "{event}");
    assert_eq!(event["bundle_hash"], bundle, "{event}");
    assert_eq!(event["old_bundle_hash"].as_str(), old, "{event}");
    assert!(
        event["decision"].is_null(),
        "a change decides nothing: {event}"
    );
}

#[test]
fn the_watcher_reloads_a_changed_policy_directory_and_keeps_a_good_bundle() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = copy_example_policies(tmp.path());
    let policy = "dir = \"policies\"\nwatch_interval_ms = 100";
    let config = example_config(tmp.path(), "portcullis.toml", policy, "");
    let data_dir = tmp.path().join("data");
    let release = Release::new(tmp.path());
    let server = start_server_with(&config, &data_dir);

    let allowed = release.decide(&server);
    assert_eq!(allowed["decision"], "allow", "{allowed}");
    let first = allowed["bundle"].clone();

    // A file added: the decision flips once the watcher has put the new bundle in effect.
    std::fs::write(policies.join("freeze.gate"), FREEZE).unwrap();
    let denied = release.decide_until(&server, "deny");
    assert_eq!(denied["rule"], "releases_frozen", "{denied}");
    let frozen = denied["bundle"].clone();
    assert_ne!(frozen, first);
    assert_eq!(healthz_bundle(&server), frozen);

    // A file that does not compile: the running bundle stays, and the failure is logged with
    // the file and the compiler's first error.
    std::fs::write(policies.join("broken.gate"), BROKEN).unwrap();
    let failure = server.wait_for_log("policy_reload_failed");
    assert!(failure.contains("broken.gate"), "{failure}");
    assert!(failure.contains("E0002"), "{failure}");
    let still_denied = release.decide(&server);
    assert_eq!(still_denied["decision"], "deny", "{still_denied}");
    assert_eq!(still_denied["bundle"], frozen);

    // A later change is picked up again: both files removed, the first bundle is back.
    std::fs::remove_file(policies.join("broken.gate")).unwrap();
    std::fs::remove_file(policies.join("freeze.gate")).unwrap();
    let allowed_again = release.decide_until(&server, "allow");
    assert_eq!(allowed_again["bundle"], first);
    stop_server(server);

    let changes = policy_changes(&data_dir);
    assert_eq!(changes.len(), 4, "{changes:#?}");
    let (first, frozen) = (hash(&first), hash(&frozen));
    check_change(&changes[0], "policy_loaded", "startup", first, None);
    check_change(&changes[1], "policy_replaced", "watch", frozen, Some(first));
    check_change(&changes[2], "policy_reload_failed", "watch", frozen, None);
    check_change(&changes[3], "policy_replaced", "watch", first, Some(frozen));
    let reason = changes[2]["reason"].as_str().unwrap();
    assert!(
        reason.contains(&format!("sha256:{frozen} stays")),
        "{reason}"
    );
    assert!(reason.contains("broken.gate"), "{reason}");
    assert!(reason.contains("E0002"), "{reason}");
    for change in &changes {
        assert_eq!(change["resource"], policies.to_str().unwrap(), "{change}");
        assert!(change["source_ip"].is_null(), "{change}");
    }

    // Every decision records the bundle that made it.
    let sql = "SELECT decision, bundle_hash FROM access_events WHERE kind = 'decision'";
    for row in audit_query(&data_dir, sql) {
        let expected = if row["decision"] == "allow" {
            first
        } else {
            frozen
        };
        assert_eq!(row["bundle_hash"], expected, "{row}");
    }
}

#[test]
fn sighup_reloads_when_watching_is_off() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = copy_example_policies(tmp.path());
    let policy = "dir = \"policies\"\nwatch_interval_ms = 0";
    let config = example_config(tmp.path(), "portcullis.toml", policy, "");
    let data_dir = tmp.path().join("data");
    let release = Release::new(tmp.path());
    let server = start_server_with(&config, &data_dir);
    let first = release.decide(&server)["bundle"].clone();

    std::fs::write(policies.join("freeze.gate"), FREEZE).unwrap();
    assert_eq!(release.decide(&server)["decision"], "allow", "not watched");
    signal(&server, "HUP");
    let replaced = server.wait_for_log("policy_replaced");
    assert!(replaced.contains("sighup"), "{replaced}");
    let denied = release.decide(&server);
    assert_eq!(denied["decision"], "deny", "{denied}");

    // Nothing changed since: the next SIGHUP leaves the bundle, and records nothing.
    signal(&server, "HUP");
    let unchanged = server.wait_for_log("policy_unchanged");
    assert!(unchanged.contains(hash(&denied["bundle"])), "{unchanged}");
    stop_server(server);

    let changes = policy_changes(&data_dir);
    assert_eq!(changes.len(), 2, "{changes:#?}");
    let (first, frozen) = (hash(&first), hash(&denied["bundle"]));
    check_change(&changes[0], "policy_loaded", "startup", first, None);
    check_change(
        &changes[1],
        "policy_replaced",
        "sighup",
        frozen,
        Some(first),
    );
}

#[test]
fn admin_reload_takes_the_configured_token_and_answers_with_the_outcome() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, policies) = admin_config(tmp.path());
    let data_dir = tmp.path().join("data");
    let release = Release::new(tmp.path());
    let server = start_server_with(&config, &data_dir);
    let first = healthz_bundle(&server);

    let bearer = |token: &str| format!("Bearer {token}");
    for authorization in [
        None,
        Some(bearer("wrong-token-0123456789")),
        Some(ADMIN_TOKEN.into()),
    ] {
        let (status, answer) = admin_reload(&server, authorization.as_deref());
        assert_eq!(status, 401, "{authorization:?}: {answer}");
        let error = answer["error"].as_str().unwrap();
        assert!(error.contains("admin token"), "{error}");
    }
    assert_eq!(healthz_bundle(&server), first);

    let right = bearer(ADMIN_TOKEN);
    let (status, answer) = admin_reload(&server, Some(&right));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "unchanged", "{answer}");
    assert_eq!(answer["old_bundle"], first.as_str());
    assert_eq!(answer["new_bundle"], first.as_str());

    std::fs::write(policies.join("freeze.gate"), FREEZE).unwrap();
    let (status, answer) = admin_reload(&server, Some(&right));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "replaced", "{answer}");
    assert_eq!(answer["old_bundle"], first.as_str());
    let frozen = answer["new_bundle"].as_str().unwrap().to_owned();
    assert_ne!(frozen, first);
    assert_eq!(healthz_bundle(&server), frozen);
    let denied = release.decide(&server);
    assert_eq!(denied["decision"], "deny", "{denied}");
    assert_eq!(denied["bundle"], frozen.as_str());

    std::fs::write(policies.join("broken.gate"), BROKEN).unwrap();
    let (status, answer) = admin_reload(&server, Some(&right));
    assert_eq!(status, 422, "{answer}");
    assert_eq!(answer["outcome"], "failed", "{answer}");
    assert_eq!(answer["old_bundle"], frozen.as_str());
    assert!(answer["new_bundle"].is_null(), "{answer}");
    let diagnostics = answer["diagnostics"].as_str().unwrap();
    assert!(diagnostics.contains("broken.gate"), "{diagnostics}");
    assert!(diagnostics.contains("E0002"), "{diagnostics}");
    assert!(!diagnostics.contains('\u{1b}'), "no colour: {diagnostics}");
    assert!(
        answer["error"].as_str().unwrap().contains("1 error"),
        "{answer}"
    );
    assert_eq!(healthz_bundle(&server), frozen, "the running bundle stays");

    let get = ureq::get(&server.url("/v1/admin/reload"))
        .config()
        .http_status_as_error(false);
    assert_eq!(get.build().call().unwrap().status().as_u16(), 405);

    let log = stop_server(server);
    assert!(
        !log.iter().any(|line| line.contains(ADMIN_TOKEN)),
        "the token never reaches the log"
    );

    let changes = policy_changes(&data_dir);
    assert_eq!(changes.len(), 3, "{changes:#?}");
    let (first, frozen) = (&first["sha256:".len()..], &frozen["sha256:".len()..]);
    check_change(&changes[0], "policy_loaded", "startup", first, None);
    check_change(&changes[1], "policy_replaced", "admin", frozen, Some(first));
    check_change(&changes[2], "policy_reload_failed", "admin", frozen, None);
    assert_eq!(changes[1]["source_ip"], "127.0.0.1");
    assert_eq!(changes[2]["source_ip"], "127.0.0.1");
}

#[cfg(unix)]
fn restrict_to_owner(path: &Path) {
    use std::os::unix::fs::PermissionsExt;
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(0o600)).unwrap();
}

#[cfg(not(unix))]
fn restrict_to_owner(_path: &Path) {}

#[test]
fn the_admin_api_is_off_without_a_token_and_refuses_a_weak_one() {
    let tmp = tempfile::tempdir().unwrap();
    let server = start_server(&tmp.path().join("data"));
    let (status, answer) = admin_reload(&server, Some(&format!("Bearer {ADMIN_TOKEN}")));
    assert_eq!(status, 404, "{answer}");
    let error = answer["error"].as_str().unwrap();
    assert!(error.contains("admin endpoints are disabled"), "{error}");
    assert!(error.contains("admin_token_file"), "{error}");
    stop_server(server);

    let short = "short-token";
    std::fs::write(tmp.path().join("admin.token"), short).unwrap();
    let server_table = "admin_token_file = \"admin.token\"";
    let config = example_config(tmp.path(), "weak.toml", "dir = \"policies\"", server_table);
    copy_example_policies(tmp.path());
    let err = refused_start(&config, &tmp.path().join("refused"));
    assert!(err.contains("is 11 characters long; at least 16"), "{err}");
    assert!(!err.contains(short), "the token is never shown: {err}");
}

/// The example policy set copied into `dir`, served with the admin token from a file beside
/// it and watching off: the configuration's path, and the policy directory's.
fn admin_config(dir: &Path) -> (PathBuf, PathBuf) {
    let policies = copy_example_policies(dir);
    let token_file = dir.join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    restrict_to_owner(&token_file);
    let policy = "dir = \"policies\"\nwatch_interval_ms = 0";
    let server_table = "admin_token_file = \"admin.token\"";
    let config = example_config(dir, "portcullis.toml", policy, server_table);
    (config, policies)
}

/// The example policy set, with `extra` beside it, compiled.
fn example_bundle_with(extra: &str) -> Bundle {
    let mut files =
        portcullis_lang::source::read_policy_path(&repo().join("examples/policies")).unwrap();
    files.push(SourceFile::new("extra.gate", extra));
    let set = portcullis_lang::compile(&files).unwrap();
    Bundle::from_policy_set(&set).unwrap()
}

/// A configuration in `dir` serving the bundle file `policy.bundle`, written with `bundle`,
/// under `key`'s public key, and watching it every 100 ms: the configuration's path and the
/// bundle file's.
fn signed_bundle_config(dir: &Path, key: &SigningKey, bundle: &Bundle) -> (PathBuf, PathBuf) {
    let public_key = dir.join("bundle-signing.key.pub");
    let public_pem = signing::verifying_key_to_pem(&key.verifying_key()).unwrap();
    std::fs::write(&public_key, public_pem).unwrap();
    let bundle_path = dir.join("policy.bundle");
    std::fs::write(&bundle_path, bundle.to_bytes()).unwrap();
    let policy = format!(
        "bundle = {:?}\npublic_key = {:?}\nwatch_interval_ms = 100",
        bundle_path.to_str().unwrap(),
        public_key.to_str().unwrap()
    );
    let config = example_config(dir, "portcullis.toml", &policy, "");
    (config, bundle_path)
}

#[test]
fn a_signed_bundle_is_replaced_only_by_one_its_key_signed() {
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let first = example_bundle_with("");
    let frozen = example_bundle_with(FREEZE);
    let (config, bundle_path) =
        signed_bundle_config(tmp.path(), &key, &first.sign_at(&key, 1_796_428_800));
    let data_dir = tmp.path().join("data");
    let release = Release::new(tmp.path());
    let server = start_server_with(&config, &data_dir);
    let first_bundle = format!("sha256:{}", first.hash_hex());
    assert_eq!(healthz_bundle(&server), first_bundle);

    // An unsigned bundle is refused as at start, and the signed one keeps deciding.
    std::fs::write(&bundle_path, frozen.to_bytes()).unwrap();
    let failure = server.wait_for_log("policy_reload_failed");
    assert!(failure.contains("the bundle is not signed"), "{failure}");
    assert_eq!(healthz_bundle(&server), first_bundle);
    assert_eq!(release.decide(&server)["decision"], "allow");

    std::fs::write(&bundle_path, frozen.sign_at(&key, 1_796_428_801).to_bytes()).unwrap();
    let denied = release.decide_until(&server, "deny");
    assert_eq!(denied["bundle"], format!("sha256:{}", frozen.hash_hex()));
    stop_server(server);

    let changes = policy_changes(&data_dir);
    assert_eq!(changes.len(), 3, "{changes:#?}");
    let (first, frozen) = (first.hash_hex(), frozen.hash_hex());
    check_change(&changes[0], "policy_loaded", "startup", &first, None);
    check_change(&changes[1], "policy_reload_failed", "watch", &first, None);
    check_change(
        &changes[2],
        "policy_replaced",
        "watch",
        &frozen,
        Some(&first),
    );
    let reason = changes[1]["reason"].as_str().unwrap();
    assert!(reason.contains("the bundle is not signed"), "{reason}");
    assert_eq!(changes[2]["resource"], bundle_path.to_str().unwrap());
}

/// The running bundle signed again, reloaded by the admin call: decisions are unchanged, but
/// the answer says the signing time moved and names the event that records it.
#[test]
fn an_admin_reload_of_the_running_bundle_signed_again_answers_resigned() {
    const T: u64 = 1_796_428_800;
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let open = example_bundle_with("");
    let (_, bundle_path) = signed_bundle_config(tmp.path(), &key, &open.sign_at(&key, T));
    let token_file = tmp.path().join("admin.token");
    std::fs::write(&token_file, format!("{ADMIN_TOKEN}\n")).unwrap();
    restrict_to_owner(&token_file);
    let policy = format!(
        "bundle = {:?}\npublic_key = {:?}\nwatch_interval_ms = 0",
        bundle_path.to_str().unwrap(),
        tmp.path().join("bundle-signing.key.pub").to_str().unwrap()
    );
    let config = example_config(
        tmp.path(),
        "admin.toml",
        &policy,
        "admin_token_file = \"admin.token\"",
    );
    let data_dir = tmp.path().join("data");
    let server = start_server_with(&config, &data_dir);
    let bearer = format!("Bearer {ADMIN_TOKEN}");

    let (status, answer) = admin_reload(&server, Some(&bearer));
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("unchanged")),
        "{answer}"
    );
    assert!(answer["event_id"].is_null(), "{answer}");

    std::fs::write(&bundle_path, open.sign_at(&key, T + 5).to_bytes()).unwrap();
    let (status, answer) = admin_reload(&server, Some(&bearer));
    assert_eq!(
        (status, answer["outcome"].as_str()),
        (200, Some("resigned")),
        "{answer}"
    );
    let hash = format!("sha256:{}", open.hash_hex());
    assert_eq!(answer["new_bundle"], hash.as_str(), "{answer}");
    let event_id = answer["event_id"].as_str().unwrap().to_owned();

    // Reloading the same file again changes nothing more.
    let (_, answer) = admin_reload(&server, Some(&bearer));
    assert_eq!(answer["outcome"], "unchanged", "{answer}");
    stop_server(server);

    let changes = policy_changes(&data_dir);
    let resigned: Vec<&Value> = changes
        .iter()
        .filter(|change| change["reason_code"] == "policy_resigned")
        .collect();
    assert_eq!(resigned.len(), 1, "{changes:#?}");
    assert_eq!(resigned[0]["event_id"], event_id.as_str(), "{changes:#?}");
    assert_eq!(resigned[0]["action"], "admin", "{changes:#?}");
}

/// A bundle signed before the newest one the server admitted is a rollback: refused on reload
/// and at the next start, until it is signed again.
#[test]
fn an_older_signed_bundle_is_refused_as_a_rollback() {
    const T: u64 = 1_796_428_800;
    let tmp = tempfile::tempdir().unwrap();
    let key = SigningKey::from_bytes(&[7; 32]);
    let open = example_bundle_with("");
    let frozen = example_bundle_with(FREEZE);
    let (config, bundle_path) = signed_bundle_config(tmp.path(), &key, &open.sign_at(&key, T));
    let data_dir = tmp.path().join("data");
    let release = Release::new(tmp.path());
    let server = start_server_with(&config, &data_dir);
    let signed_file = data_dir.join("bundles/SIGNED");
    let (open_hash, frozen_hash) = (open.hash_hex(), frozen.hash_hex());
    assert_eq!(
        std::fs::read_to_string(&signed_file).unwrap(),
        format!(
            "signed_at={T} key={} bundle=sha256:{open_hash}\n",
            signing::key_id(&key.verifying_key())
        )
    );

    // The freeze, signed later, replaces it.
    std::fs::write(&bundle_path, frozen.sign_at(&key, T + 10).to_bytes()).unwrap();
    release.decide_until(&server, "deny");

    // Putting the earlier file back is refused, and the freeze keeps deciding.
    std::fs::write(&bundle_path, open.sign_at(&key, T).to_bytes()).unwrap();
    let failure = server.wait_for_log("policy_reload_failed");
    assert!(failure.contains("rollback"), "{failure}");
    assert!(
        failure.contains("signed at 2026-12-05T00:00:00Z, before bundle"),
        "{failure}"
    );
    assert!(
        failure.contains(&format!(
            "sha256:{frozen_hash}, signed at 2026-12-05T00:00:10Z"
        )),
        "{failure}"
    );
    assert_eq!(healthz_bundle(&server), format!("sha256:{frozen_hash}"));
    assert_eq!(release.decide(&server)["decision"], "deny");

    // Signed again, the same policy is an update.
    std::fs::write(&bundle_path, open.sign_at(&key, T + 20).to_bytes()).unwrap();
    let allowed = release.decide_until(&server, "allow");
    assert_eq!(allowed["bundle"], format!("sha256:{open_hash}"));

    // Another bundle signed in the same second cannot be ordered against it: refused.
    std::fs::write(&bundle_path, frozen.sign_at(&key, T + 20).to_bytes()).unwrap();
    let failure = server.wait_for_log("policy_reload_failed");
    assert!(failure.contains("the same second as"), "{failure}");
    assert_eq!(healthz_bundle(&server), format!("sha256:{open_hash}"));

    // The running policy signed again is no change to decisions, but it supersedes every
    // bundle signed before it: the freeze signed at T + 22 is now a rollback too.
    std::fs::write(&bundle_path, open.sign_at(&key, T + 25).to_bytes()).unwrap();
    eventually("the record to move to the new signature", || {
        let record = std::fs::read_to_string(&signed_file).unwrap();
        record
            .starts_with(&format!("signed_at={} ", T + 25))
            .then_some(())
    });
    std::fs::write(&bundle_path, frozen.sign_at(&key, T + 22).to_bytes()).unwrap();
    let failure = server.wait_for_log("policy_reload_failed");
    assert!(failure.contains("refused as a rollback"), "{failure}");
    assert_eq!(release.decide(&server)["decision"], "allow");
    stop_server(server);
    assert!(
        std::fs::read_to_string(&signed_file)
            .unwrap()
            .starts_with(&format!("signed_at={} ", T + 25))
    );

    let changes = policy_changes(&data_dir);
    assert_eq!(changes.len(), 7, "{changes:#?}");
    let started = changes[0]["reason"].as_str().unwrap();
    assert!(
        started.contains("took effect at startup; signed at 2026-12-05T00:00:00Z by key"),
        "{started}"
    );
    // Signing the running policy again changed which bundles are admitted: on the record,
    // once (the reloads that found the same signature recorded nothing).
    let resigned: Vec<&Value> = changes
        .iter()
        .filter(|change| change["reason_code"] == "policy_resigned")
        .collect();
    assert_eq!(resigned.len(), 1, "{changes:#?}");
    assert_eq!(
        resigned[0]["bundle_hash"],
        open_hash.as_str(),
        "{changes:#?}"
    );
    let reason = resigned[0]["reason"].as_str().unwrap();
    assert!(
        reason.contains("signed again at 2026-12-05T00:00:25Z"),
        "{reason}"
    );
    check_change(
        &changes[2],
        "policy_reload_failed",
        "watch",
        &frozen_hash,
        None,
    );
    let reason = changes[2]["reason"].as_str().unwrap();
    assert!(reason.contains("rollback"), "{reason}");

    // A new server on the same data directory refuses the freeze's file, older than the
    // bundle last admitted, and starts with nothing.
    std::fs::write(&bundle_path, frozen.sign_at(&key, T + 10).to_bytes()).unwrap();
    let err = refused_start(&config, &data_dir);
    assert!(err.contains("refused as a rollback"), "{err}");
    assert_eq!(policy_changes(&data_dir).len(), 7, "nothing recorded");

    // A bundle from the future would refuse every update until then: refused itself.
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .unwrap()
        .as_secs();
    std::fs::write(&bundle_path, open.sign_at(&key, now + 3600).to_bytes()).unwrap();
    let err = refused_start(&config, &data_dir);
    assert!(err.contains("later than this server's clock"), "{err}");

    // A record that cannot be read stops the start too, rather than admitting anything.
    std::fs::write(&signed_file, "garbage\n").unwrap();
    std::fs::write(&bundle_path, open.sign_at(&key, T + 30).to_bytes()).unwrap();
    let err = refused_start(&config, &data_dir);
    assert!(err.contains("bundles/SIGNED"), "{err}");
    assert!(
        err.contains("signed_at=SECONDS key=KEYID bundle=sha256:HASH"),
        "{err}"
    );
}

/// `"explain": true` on a decide call answers with the decision's trace, as `policyc explain
/// --format json` prints it; since the trace shows rules beyond the deciding one, it takes the
/// admin token, and a server without one refuses it.
#[test]
fn explain_through_the_decision_api_takes_the_admin_token() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, _) = admin_config(tmp.path());
    let release = Release::new(tmp.path());
    let body = json!({
        "evidence": { "token": release.token },
        "target": { "name": "billing_api" },
        "request": { "action": "POST", "resource": "/v1/deploy" },
        "explain": true,
    })
    .to_string();
    let server = start_server_with(&config, &tmp.path().join("data"));

    let (status, answer) = post_with(&server, body.as_bytes(), None);
    assert_eq!(status, 401, "{answer}");
    let wrong = format!("Bearer not-{ADMIN_TOKEN}");
    let (status, answer) = post_with(&server, body.as_bytes(), Some(&wrong));
    assert_eq!(status, 401, "{answer}");

    let right = format!("Bearer {ADMIN_TOKEN}");
    let (status, answer) = post_with(&server, body.as_bytes(), Some(&right));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "allow");
    let explanation = &answer["explanation"];
    assert_eq!(explanation["rule"], answer["rule"]);
    assert_eq!(explanation["decision"], "allow");
    let rules = explanation["rules"].as_array().unwrap();
    assert_eq!(rules[0]["effect"], "forbid", "{explanation}");
    assert_eq!(rules.last().unwrap()["rule"], answer["rule"]);
    assert_eq!(rules.last().unwrap()["outcome"], "applies");
    // Without the flag, no trace.
    assert!(release.decide(&server).get("explanation").is_none());
    // Evidence that does not attest: no rule was considered, and the explanation says why.
    let forged = json!({
        "evidence": { "token": "eyJhbGciOiJub25lIn0.e30." },
        "target": { "name": "billing_api" },
        "explain": true,
    })
    .to_string();
    let (status, answer) = post_with(&server, forged.as_bytes(), Some(&right));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["decision"], "deny", "{answer}");
    let explanation = &answer["explanation"];
    assert_eq!(
        explanation["attestation"]["outcome"], "rejected",
        "{answer}"
    );
    assert_eq!(explanation["reason"], answer["reason_code"], "{answer}");
    assert_eq!(explanation["rules"].as_array().map(Vec::len), Some(0));
    assert_eq!(explanation["candidates"]["rules"], 0, "{answer}");
    let log = stop_server(server).join("\n");
    assert!(!log.contains(ADMIN_TOKEN), "the token reached the log");

    // A server without an admin token refuses to explain.
    let policy = "dir = \"policies\"\nwatch_interval_ms = 0";
    let plain = example_config(tmp.path(), "plain.toml", policy, "");
    let server = start_server_with(&plain, &tmp.path().join("data-plain"));
    let (status, answer) = post_with(&server, body.as_bytes(), Some(&right));
    assert_eq!(status, 403, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("admin_token_file"),
        "{answer}"
    );
    stop_server(server);
}

/// The server runs two audit queries at once; a third is refused at once with 503 rather than
/// queued behind them, and is answered once one has finished.
#[test]
fn a_third_concurrent_audit_query_is_refused_until_one_finishes() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, _) = admin_config(tmp.path());
    let text = std::fs::read_to_string(&config).unwrap();
    std::fs::write(
        &config,
        text.replace("[audit]\n", "[audit]\nquery_timeout_s = 4\n"),
    )
    .unwrap();
    let server = start_server_with(&config, &tmp.path().join("data"));
    let url = server.url("/v1/audit/query");
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let endless = json!({ "sql": "SELECT count(*) AS n FROM generate_series(1, 100000000000)" });
    let slow: Vec<_> = (0..2)
        .map(|_| {
            let (url, endless, bearer) = (url.clone(), endless.clone(), bearer.clone());
            std::thread::spawn(move || audit_query_at(&url, &endless, Some(&bearer)))
        })
        .collect();
    std::thread::sleep(std::time::Duration::from_millis(1500));
    let quick = json!({ "sql": "SELECT 1 AS one" });
    let started = std::time::Instant::now();
    let (status, answer) = audit_query_http(&server, &quick, Some(&bearer));
    assert_eq!(status, 503, "{answer}");
    assert!(
        started.elapsed() < std::time::Duration::from_secs(2),
        "refused at once"
    );
    let message = answer["error"].as_str().unwrap();
    assert!(
        message.contains("2 audit queries are running already"),
        "{message}"
    );
    for query in slow {
        let (status, answer) = query.join().unwrap();
        assert_eq!(status, 503, "{answer}");
        assert!(
            answer["error"].as_str().unwrap().contains("limit of 4 s"),
            "{answer}"
        );
    }
    let (status, answer) = audit_query_http(&server, &quick, Some(&bearer));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"][0]["one"], 1);
    server.wait_for_log("audit_query_refused_busy");

    // Callers who hang up do not free their place: the queries run on until their limit, and
    // are logged when it stops them.
    let body = endless.to_string();
    for _ in 0..2 {
        let mut stream = std::net::TcpStream::connect(&server.addr).unwrap();
        let request = format!(
            "POST /v1/audit/query HTTP/1.1\r\nhost: {}\r\nauthorization: {bearer}\r\n\
             content-type: application/json\r\ncontent-length: {}\r\n\r\n{body}",
            server.addr,
            body.len()
        );
        std::io::Write::write_all(&mut stream, request.as_bytes()).unwrap();
        std::thread::sleep(std::time::Duration::from_millis(300));
        drop(stream);
    }
    let (status, answer) = audit_query_http(&server, &quick, Some(&bearer));
    assert_eq!(status, 503, "the hung-up queries still run: {answer}");
    // Four stops in the log: the two queries above, then the two whose callers hung up.
    for _ in 0..4 {
        server.wait_for_log("audit_query_stopped");
    }
    let (status, answer) = audit_query_http(&server, &quick, Some(&bearer));
    assert_eq!(status, 200, "{answer}");
    stop_server(server);
}

/// `POST /v1/audit/query` answers read-only SQL over the events and the policy state, behind
/// the admin token; the policy-state tables follow a reload.
#[test]
fn sql_over_http_sees_the_policy_state_and_follows_a_reload() {
    let tmp = tempfile::tempdir().unwrap();
    let (config, policies) = admin_config(tmp.path());
    let data_dir = tmp.path().join("data");
    let server = start_server_with(&config, &data_dir);
    let bearer = format!("Bearer {ADMIN_TOKEN}");
    let current_rules = json!({
        "sql": "SELECT count(*) AS n FROM rules r JOIN bundles b USING (bundle_hash) \
                WHERE b.current",
    });

    let (status, answer) = audit_query_http(&server, &current_rules, None);
    assert_eq!(status, 401, "{answer}");
    let (status, answer) = audit_query_http(&server, &current_rules, Some(&bearer));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["rows"][0]["n"], 8, "{answer}");
    assert_eq!(answer["truncated"], false);

    // One rule fewer (and the tests that name it), reloaded: the current bundle has 7, and
    // both bundles are kept.
    std::fs::remove_file(policies.join("tests.gate")).unwrap();
    let rules = policies.join("rules.gate");
    let text = std::fs::read_to_string(&rules).unwrap();
    let start = text.find("permit docs_publishing {").unwrap();
    let end = start + text[start..].find("}\n").unwrap() + 2;
    std::fs::write(&rules, format!("{}{}", &text[..start], &text[end..])).unwrap();
    let (status, answer) = admin_reload(&server, Some(&bearer));
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["outcome"], "replaced", "{answer}");
    let (_, answer) = audit_query_http(&server, &current_rules, Some(&bearer));
    assert_eq!(answer["rows"][0]["n"], 7, "{answer}");
    let bundles = json!({ "sql": "SELECT count(*) AS n FROM bundles", "format": "csv" });
    let (status, answer) = audit_query_http(&server, &bundles, Some(&bearer));
    assert_eq!((status, answer), (200, Value::String("n\n2\n".to_owned())));

    // Anything but one query is refused, and says why.
    let drop = json!({ "sql": "DROP TABLE access_events" });
    let (status, answer) = audit_query_http(&server, &drop, Some(&bearer));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("only a single SELECT"),
        "{answer}"
    );
    let unknown = json!({ "sql": "SELECT nope FROM rules" });
    let (status, answer) = audit_query_http(&server, &unknown, Some(&bearer));
    assert_eq!(status, 400, "{answer}");
    assert!(
        answer["error"].as_str().unwrap().contains("nope"),
        "{answer}"
    );
    stop_server(server);

    // The same tables from the command line, after the server stopped.
    let rows = audit_query(
        &data_dir,
        "SELECT b.current, count(r.rule) AS n FROM bundles b JOIN rules r USING (bundle_hash) \
         GROUP BY b.current ORDER BY n",
    );
    assert_eq!(
        rows,
        [
            json!({"current": true, "n": 7}),
            json!({"current": false, "n": 8})
        ]
    );
}

/// The audit token reads the audit store and does nothing else: no reload, no explained
/// decisions; and a configuration that gives auditors the admin token is refused.
#[test]
fn the_audit_token_reads_the_store_and_nothing_else() {
    const AUDIT_TOKEN: &str = "test-audit-token-fedcba9876543210";
    let tmp = tempfile::tempdir().unwrap();
    copy_example_policies(tmp.path());
    for (name, token) in [("admin.token", ADMIN_TOKEN), ("audit.token", AUDIT_TOKEN)] {
        let path = tmp.path().join(name);
        std::fs::write(&path, format!("{token}\n")).unwrap();
        restrict_to_owner(&path);
    }
    let policy = "dir = \"policies\"\nwatch_interval_ms = 0";
    let both = "admin_token_file = \"admin.token\"\naudit_token_file = \"audit.token\"";
    let config = example_config(tmp.path(), "both.toml", policy, both);
    let server = start_server_with(&config, &tmp.path().join("data"));
    let count = json!({ "sql": "SELECT count(*) AS n FROM bundles" });
    let auditor = format!("Bearer {AUDIT_TOKEN}");
    let admin = format!("Bearer {ADMIN_TOKEN}");
    for bearer in [&auditor, &admin] {
        let (status, answer) = audit_query_http(&server, &count, Some(bearer));
        assert_eq!(status, 200, "{answer}");
        assert_eq!(answer["rows"][0]["n"], 1, "{answer}");
    }
    let (status, answer) = audit_query_http(&server, &count, Some("Bearer wrong-token-0000000000"));
    assert_eq!(status, 401, "{answer}");
    assert!(
        answer["error"]
            .as_str()
            .unwrap()
            .contains("audit or admin token")
    );
    let (status, answer) = admin_reload(&server, Some(&auditor));
    assert_eq!(status, 401, "the audit token reloads nothing: {answer}");
    let release = Release::new(tmp.path());
    let explain = json!({
        "evidence": { "token": release.token },
        "target": { "name": "billing_api" },
        "explain": true,
    })
    .to_string();
    let (status, answer) = post_with(&server, explain.as_bytes(), Some(&auditor));
    assert_eq!(status, 401, "the audit token explains nothing: {answer}");
    let log = stop_server(server).join("\n");
    assert!(!log.contains(AUDIT_TOKEN), "the token reached the log");

    // An audit token alone turns on the query endpoint, not the admin API.
    let alone = example_config(
        tmp.path(),
        "alone.toml",
        policy,
        "audit_token_file = \"audit.token\"",
    );
    let server = start_server_with(&alone, &tmp.path().join("data-alone"));
    let (status, answer) = audit_query_http(&server, &count, Some(&auditor));
    assert_eq!(status, 200, "{answer}");
    let (status, _) = admin_reload(&server, Some(&auditor));
    assert_eq!(status, 404);
    stop_server(server);

    // Auditors must not hold the admin token.
    let same = "admin_token_file = \"admin.token\"\naudit_token_file = \"admin.token\"";
    let config = example_config(tmp.path(), "same.toml", policy, same);
    let err = refused_start(&config, &tmp.path().join("refused"));
    assert!(err.contains("is the admin token"), "{err}");
    assert!(
        !err.contains(ADMIN_TOKEN),
        "the token is never shown: {err}"
    );
}
