//! The `portcullis` command's behaviour on its own: the dev helpers agree with the shipped
//! example keys, and bad input of every kind ends with a clear error and a failing exit code.

#![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

use std::path::{Path, PathBuf};
use std::process::{Command, Output};

use serde_json::Value;

fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

fn portcullis(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_portcullis"))
        .current_dir(repo())
        .env("NO_COLOR", "1")
        .args(args)
        .output()
        .unwrap()
}

fn stderr(out: &Output) -> String {
    String::from_utf8_lossy(&out.stderr).into_owned()
}

#[test]
fn dev_jwks_matches_the_shipped_example_key_sets() {
    for issuer in ["github", "kubernetes"] {
        let key = format!("examples/dev/example-{issuer}-issuer.key.pem");
        let out = portcullis(&["dev", "jwks", "--key", &key]);
        assert!(out.status.success(), "{}", stderr(&out));
        let printed: Value = serde_json::from_slice(&out.stdout).unwrap();
        let shipped_path = repo().join(format!("examples/dev/example-{issuer}-issuer.jwks.json"));
        let shipped: Value =
            serde_json::from_str(&std::fs::read_to_string(shipped_path).unwrap()).unwrap();
        for field in ["kty", "kid", "crv", "x", "y", "n", "e", "alg"] {
            assert_eq!(
                printed["keys"][0][field], shipped["keys"][0][field],
                "{issuer}: {field}"
            );
        }
    }
}

#[test]
fn mint_token_refuses_what_is_not_a_key_or_claims() {
    let out = portcullis(&[
        "dev",
        "mint-token",
        "--key",
        "README.md",
        "--claims",
        "examples/dev/claims/docs-main.json",
    ]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("is not a PKCS#8 PEM"),
        "{}",
        stderr(&out)
    );

    let key = "examples/dev/example-github-issuer.key.pem";
    let out = portcullis(&["dev", "mint-token", "--key", key, "--claims", "Cargo.toml"]);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("are not valid JSON"),
        "{}",
        stderr(&out)
    );
}

fn query(data_dir: &Path, sql: &str) -> Output {
    portcullis(&[
        "audit",
        "query",
        sql,
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

#[test]
fn audit_query_is_read_only_and_names_a_missing_store() {
    let tmp = tempfile::tempdir().unwrap();
    let missing = query(&tmp.path().join("nowhere"), "SELECT 1");
    assert!(!missing.status.success());
    assert!(
        stderr(&missing).contains("no audit store at"),
        "{}",
        stderr(&missing)
    );

    // A directory that is no store says so, rather than answering for an empty one.
    let not_a_store = query(tmp.path(), "SELECT count(*) AS n FROM access_events");
    assert!(!not_a_store.status.success());
    assert!(
        stderr(&not_a_store).contains("it holds none of `manifest/`, `events/` and `wal/`"),
        "{}",
        stderr(&not_a_store)
    );

    std::fs::create_dir_all(tmp.path().join("events")).unwrap();
    let empty = query(tmp.path(), "SELECT count(*) AS n FROM access_events");
    assert!(empty.status.success(), "{}", stderr(&empty));
    assert!(String::from_utf8_lossy(&empty.stdout).contains('0'));

    for statement in [
        "DROP TABLE access_events",
        "CREATE TABLE t (a INT)",
        "SELECT 1; SELECT 2",
    ] {
        let out = query(tmp.path(), statement);
        assert!(!out.status.success(), "`{statement}` was accepted");
        assert!(
            stderr(&out).contains("only a single SELECT query"),
            "{}",
            stderr(&out)
        );
    }

    let syntax = query(tmp.path(), "SELEC 1");
    assert!(!syntax.status.success());
    let err = stderr(&syntax);
    assert!(err.contains("does not parse"), "{err}");
    assert_eq!(err.matches("SELEC").count(), 1, "said once: {err}");

    let typo = query(tmp.path(), "SELECT nope FROM access_events");
    assert!(!typo.status.success());
    let err = stderr(&typo);
    assert!(err.contains("nope"), "{err}");
    assert_eq!(err.matches("No field named").count(), 1, "said once: {err}");
}

fn write_config(dir: &Path, policy_dir: &str, extra: &str) -> PathBuf {
    let jwks = repo().join("examples/dev/example-github-issuer.jwks.json");
    let text = format!(
        "[policy]\ndir = \"{policy_dir}\"\n\n[[trust_providers]]\nname = \"gh\"\nkind = \"github\"\n\
         issuer = \"https://gh.invalid\"\naudiences = [\"portcullis\"]\njwks_file = \"{}\"\n\
         example_only = true\n{extra}",
        jwks.display()
    );
    let path = dir.join("portcullis.toml");
    std::fs::write(&path, text).unwrap();
    path
}

fn serve(config: &Path, data_dir: &Path) -> Output {
    portcullis(&[
        "serve",
        "--config",
        config.to_str().unwrap(),
        "--listen",
        "127.0.0.1:0",
        "--data-dir",
        data_dir.to_str().unwrap(),
    ])
}

#[test]
fn serve_refuses_a_policy_set_with_errors_and_shows_the_diagnostics() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = tmp.path().join("policies");
    std::fs::create_dir_all(&policies).unwrap();
    std::fs::write(
        policies.join("bad.gate"),
        "workload w { github { repositry == \"acme/x\" } }\n",
    )
    .unwrap();
    let config = write_config(tmp.path(), "policies", "");
    let out = serve(&config, &tmp.path().join("data"));
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("repositry") && err.contains("repository"),
        "{err}"
    );
    assert!(err.contains("bad.gate"), "{err}");
    assert!(
        err.contains("has 1 errors") || err.contains("has 1 error"),
        "{err}"
    );
    assert!(
        !tmp.path().join("data").exists(),
        "nothing is written before the policy compiles"
    );
}

#[test]
fn serve_refuses_bad_configuration_with_the_reason() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");

    let out = serve(&tmp.path().join("absent.toml"), &data);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("cannot read configuration"),
        "{}",
        stderr(&out)
    );

    let policies = repo().join("examples/policies");
    let config = write_config(
        tmp.path(),
        policies.to_str().unwrap(),
        "colour = \"blue\"\n",
    );
    let out = serve(&config, &data);
    assert!(!out.status.success());
    assert!(stderr(&out).contains("colour"), "{}", stderr(&out));

    let kind = write_config(tmp.path(), policies.to_str().unwrap(), "");
    let text = std::fs::read_to_string(&kind)
        .unwrap()
        .replace("\"github\"", "\"bitbucket\"");
    std::fs::write(&kind, &text).unwrap();
    let out = serve(&kind, &data);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("unknown kind `bitbucket`"),
        "{}",
        stderr(&out)
    );

    std::fs::write(&kind, text.replace("\"bitbucket\"", "\"process\"")).unwrap();
    let out = serve(&kind, &data);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("attested on the Unix socket (`server.local_socket`)"),
        "{}",
        stderr(&out)
    );
}

#[test]
fn serve_refuses_unsafe_or_ambiguous_trust_providers() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let policies = repo().join("examples/policies");
    let policies = policies.to_str().unwrap();

    let config = write_config(tmp.path(), policies, "leeway_s = 18446744073709551615\n");
    let out = serve(&config, &data);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("over the limit of 3600"),
        "{}",
        stderr(&out)
    );

    let jwks = repo().join("examples/dev/example-github-issuer.jwks.json");
    let twin = format!(
        "\n[[trust_providers]]\nname = \"gh\"\nkind = \"github\"\nissuer = \"https://other.invalid\"\n\
         audiences = [\"portcullis\"]\njwks_file = \"{}\"\nexample_only = true\n",
        jwks.display()
    );
    let config = write_config(tmp.path(), policies, &twin);
    let out = serve(&config, &data);
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("two trust providers are named `gh`"),
        "{}",
        stderr(&out)
    );
    assert!(!data.exists());
}

#[test]
fn serve_names_what_is_wrong_with_its_paths() {
    let tmp = tempfile::tempdir().unwrap();
    let empty = tmp.path().join("empty");
    std::fs::create_dir_all(&empty).unwrap();
    let config = write_config(tmp.path(), empty.to_str().unwrap(), "");
    let out = serve(&config, &tmp.path().join("data"));
    assert!(!out.status.success());
    assert!(
        stderr(&out).contains("holds no `*.gate` files"),
        "{}",
        stderr(&out)
    );

    let policies = repo().join("examples/policies");
    let config = write_config(tmp.path(), policies.to_str().unwrap(), "");
    let file = tmp.path().join("a-file");
    std::fs::write(&file, "not a directory").unwrap();
    let out = serve(&config, &file);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(err.contains("is not a directory"), "{err}");
    assert_eq!(
        err.matches("is not a directory").count(),
        1,
        "said once: {err}"
    );
}

#[test]
fn mint_token_refuses_an_absurd_lifetime() {
    let key = "examples/dev/example-github-issuer.key.pem";
    let claims = "examples/dev/claims/docs-main.json";
    let out = portcullis(&[
        "dev",
        "mint-token",
        "--key",
        key,
        "--claims",
        claims,
        "--ttl",
        "18446744073709551615",
    ]);
    assert_eq!(out.status.code(), Some(2), "{}", stderr(&out));
    assert!(stderr(&out).contains("--ttl"), "{}", stderr(&out));
}

#[test]
fn serve_refuses_a_body_limit_out_of_bounds() {
    let tmp = tempfile::tempdir().unwrap();
    let policies = repo().join("examples/policies");
    let config = write_config(tmp.path(), policies.to_str().unwrap(), "");
    let text = std::fs::read_to_string(&config).unwrap();
    for limit in ["0", "18446744073709551615"] {
        std::fs::write(
            &config,
            format!("[server]\nmax_body_bytes = {limit}\n{text}"),
        )
        .unwrap();
        let out = serve(&config, &tmp.path().join("data"));
        assert!(!out.status.success());
        assert!(stderr(&out).contains("max_body_bytes"), "{}", stderr(&out));
    }
}

/// A configuration like `write_config`'s, with `policy` as the body of `[policy]`.
fn write_policy_config(dir: &Path, policy: &str) -> PathBuf {
    let config = write_config(dir, "policies", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("dir = \"policies\"\n", policy);
    std::fs::write(&config, text).unwrap();
    config
}

#[test]
fn serve_refuses_a_public_key_it_cannot_use() {
    let tmp = tempfile::tempdir().unwrap();
    let data = tmp.path().join("data");
    let policies = repo().join("examples/policies");

    // Sources carry no signature, so a key beside `dir` would check nothing.
    let key = tmp.path().join("key.pub");
    let policy = format!("dir = {policies:?}\npublic_key = {key:?}\n");
    let out = serve(&write_policy_config(tmp.path(), &policy), &data);
    assert!(!out.status.success());
    let err = stderr(&out);
    assert!(
        err.contains("`[policy] public_key` checks the signature of a `bundle`"),
        "{err}"
    );

    // A private key where the public key belongs, and a file that is no key at all.
    let bundle = tmp.path().join("policy.bundle");
    std::fs::write(&bundle, b"never read").unwrap();
    let private = repo().join("tests/fixtures/untrusted-p256.key.pem");
    let not_a_key = repo().join("examples/portcullis.toml");
    for (key, why) in [
        (&private, "this is a private key"),
        (&not_a_key, "not an ed25519 public key"),
    ] {
        let policy = format!("bundle = {bundle:?}\npublic_key = {key:?}\n");
        let out = serve(&write_policy_config(tmp.path(), &policy), &data);
        assert!(!out.status.success());
        let err = stderr(&out);
        assert!(
            err.contains(&format!("cannot use the public key `{}`", key.display())),
            "{err}"
        );
        assert!(err.contains(why), "{err}");
    }
    assert!(!data.exists());
}
