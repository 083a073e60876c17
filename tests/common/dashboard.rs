//! What the dashboard's tests share: a server whose dashboard listens on a fresh loopback
//! port, a store filled with decisions (one of them carrying markup in its subject), and
//! `GET` of a page with its status, headers and text.

use std::path::{Path, PathBuf};

use serde_json::json;

use super::*;

/// What an attacker puts in a claim: it must show as text, never run.
pub const HOSTILE_SUBJECT: &str = "<script>alert(1)</script>";

/// The example configuration in `dir` with `server` in `[server]` and `dashboard` in a
/// `[dashboard]` table that listens on a fresh loopback port.
pub fn dashboard_config(dir: &Path, server: &str, dashboard: &str) -> PathBuf {
    let policy = format!(
        "dir = \"{}\"\nwatch_interval_ms = 0",
        repo().join("examples/policies").display()
    );
    let path = example_config(dir, "portcullis.toml", &policy, server);
    let mut text = std::fs::read_to_string(&path).unwrap();
    text.push_str(&format!(
        "\n[dashboard]\nlisten = \"127.0.0.1:0\"\n{dashboard}\n"
    ));
    std::fs::write(&path, text).unwrap();
    path
}

/// The server and the base URL of its dashboard.
pub fn start_with_dashboard(config: &Path, data_dir: &Path) -> (Server, String) {
    let server = start_server_with(config, data_dir);
    let line = server.wait_for_log("dashboard_listening");
    let addr = line
        .split("listen=")
        .nth(1)
        .and_then(|rest| rest.split_whitespace().next())
        .unwrap_or_else(|| panic!("no address in `{line}`"));
    (server, format!("http://{addr}"))
}

/// Decisions of every shape the pages show: allowed deploys whose subject is markup, denied
/// documentation publishers, and tokens that fail attestation.
pub fn generate_decisions(server: &Server, dir: &Path) {
    let mut release = example_claims("billing-release.json");
    release["sub"] = json!(HOSTILE_SUBJECT);
    let release = mint(GITHUB_KEY, &release, dir);
    let docs = mint(GITHUB_KEY, &example_claims("docs-main.json"), dir);
    let billing_api = json!({ "name": "billing_api" });
    for _ in 0..3 {
        let answer = decide(server, &release, billing_api.clone(), "POST");
        assert_eq!(answer["decision"], "allow", "{answer}");
        let answer = decide(server, &docs, billing_api.clone(), "POST");
        assert_eq!(answer["decision"], "deny", "{answer}");
    }
    for _ in 0..2 {
        let body = json!({
            "evidence": { "token": "not-a-token" },
            "target": billing_api,
            "request": { "action": "GET", "resource": "/v1/x" },
        });
        let (_, answer) = post(server, body.to_string().as_bytes());
        assert_eq!(answer["reason_code"], "token_malformed", "{answer}");
    }
}

/// A page's status, its headers (names lowercase) and its text.
pub struct Fetched {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: String,
}

impl Fetched {
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(key, _)| key == name)
            .map(|(_, value)| value.as_str())
    }
}

/// `GET url`, with `authorization` when given.
pub fn fetch(url: &str, authorization: Option<&str>) -> Fetched {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut request = agent.get(url);
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    let mut response = request.call().unwrap();
    let headers = response
        .headers()
        .iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                value.to_str().unwrap_or_default().to_owned(),
            )
        })
        .collect();
    Fetched {
        status: response.status().as_u16(),
        headers,
        body: response.body_mut().read_to_string().unwrap(),
    }
}

/// The pages every dashboard serves, and a phrase each must show.
pub fn pages() -> Vec<(&'static str, &'static str)> {
    vec![
        ("/", "Decisions in the last 7 days"),
        ("/controls", "Controls"),
        ("/events", "Access log"),
        ("/events?decision=deny", "docs_publisher"),
        ("/inventory", "Grants no one used"),
    ]
}

/// The path of the stylesheet that `page` links to.
pub fn stylesheet_of(page: &str) -> String {
    let start =
        page.find("rel=\"stylesheet\" href=\"").unwrap() + "rel=\"stylesheet\" href=\"".len();
    page[start..].split('"').next().unwrap().to_owned()
}
