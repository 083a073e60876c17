//! What the tests that start the real `portcullis` binary share: starting and stopping the
//! server on a free loopback port, minting tokens with the example-only keys, asking for
//! decisions, and reading the audit store with `portcullis audit query`.

#![allow(dead_code, reason = "each test binary uses some of the helpers")]

pub mod dashboard;
pub mod http_stub;
pub mod issuing;
pub mod postgres;

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use serde_json::{Value, json};

pub const GITHUB_KEY: &str = "examples/dev/example-github-issuer.key.pem";
pub const KUBERNETES_KEY: &str = "examples/dev/example-kubernetes-issuer.key.pem";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn portcullis() -> Command {
    let mut command = Command::new(env!("CARGO_BIN_EXE_portcullis"));
    command.current_dir(repo());
    command
}

/// The running server; killed if a test fails before stopping it.
pub struct Server {
    pub child: Child,
    pub addr: String,
    pub log: mpsc::Receiver<String>,
    /// What the server logged up to and including `listening`.
    pub startup: Vec<String>,
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Server {
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    /// Reads the server's log until a line holds `needle`, and returns that line.
    pub fn wait_for_log(&self, needle: &str) -> String {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let left = deadline.saturating_duration_since(Instant::now());
            match self.log.recv_timeout(left) {
                Ok(line) if line.contains(needle) => return line,
                Ok(_) => {}
                Err(_) => panic!("the server never logged `{needle}`"),
            }
        }
    }
}

pub fn start_server(data_dir: &Path) -> Server {
    start_server_with(&repo().join("examples/portcullis.toml"), data_dir)
}

pub fn start_server_with(config: &Path, data_dir: &Path) -> Server {
    let mut child = portcullis()
        .arg("serve")
        .arg("--config")
        .arg(config)
        .args(["--listen", "127.0.0.1:0"])
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stderr = child.stderr.take().unwrap();
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            eprintln!("[server] {line}");
            if tx.send(line).is_err() {
                break;
            }
        }
    });
    let mut startup = Vec::new();
    let addr = loop {
        let line = rx
            .recv_timeout(Duration::from_secs(120))
            .expect("server never listened");
        startup.push(line.clone());
        if line.contains("listening") {
            assert!(
                line.contains("bundle=sha256:"),
                "no bundle hash in `{line}`"
            );
            let addr = line
                .split("listen=")
                .nth(1)
                .unwrap()
                .split_whitespace()
                .next()
                .unwrap();
            break addr.to_owned();
        }
    };
    Server {
        child,
        addr,
        log: rx,
        startup,
    }
}

/// Sends `signal` (`INT`, `HUP`, …) to the server.
pub fn signal(server: &Server, signal: &str) {
    let pid = server.child.id().to_string();
    let status = Command::new("kill")
        .args([&format!("-{signal}"), &pid])
        .status()
        .unwrap();
    assert!(status.success());
}

/// Stops the server with SIGINT, as Ctrl-C; returns the rest of its log.
pub fn stop_server(mut server: Server) -> Vec<String> {
    signal(&server, "INT");
    let exit = server.child.wait().unwrap();
    assert!(exit.success(), "server exited with {exit}");
    // The reader thread ends at the end of the server's stderr.
    let mut log = Vec::new();
    while let Ok(line) = server.log.recv_timeout(Duration::from_secs(10)) {
        log.push(line);
    }
    assert!(
        log.iter().any(|line| line.contains("audit_log_sealed")),
        "{log:#?}"
    );
    log
}

pub fn mint(key: &str, claims: &Value, dir: &Path) -> String {
    let path = dir.join(format!("claims-{}.json", rand_suffix()));
    std::fs::write(&path, claims.to_string()).unwrap();
    let out = portcullis()
        .args(["dev", "mint-token", "--key", key, "--claims"])
        .arg(&path)
        .output();
    let out = out.unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).unwrap().trim().to_owned()
}

/// The events of the store in `data_dir` that `filter` (an SQL condition) selects, in order,
/// each as its `columns` joined by spaces, `-` for an empty one.
pub fn event_rows(data_dir: &Path, columns: &[&str], filter: &str) -> Vec<String> {
    let sql = format!(
        "SELECT {} FROM access_events WHERE {filter} ORDER BY seq",
        columns.join(", ")
    );
    audit_query(data_dir, &sql)
        .iter()
        .map(|row| {
            columns
                .iter()
                .map(|column| row[*column].as_str().unwrap_or("-"))
                .collect::<Vec<_>>()
                .join(" ")
        })
        .collect()
}

/// A port nothing listens on just now, on loopback.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

pub fn rand_suffix() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_nanos()
}

pub fn example_claims(name: &str) -> Value {
    let path = repo().join("examples/dev/claims").join(name);
    serde_json::from_str(&std::fs::read_to_string(path).unwrap()).unwrap()
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into()
}

/// The status and the JSON body (or the text, when it is not JSON) of a response.
fn status_and_body(mut response: ureq::http::Response<ureq::Body>) -> (u16, Value) {
    let status = response.status().as_u16();
    let text = response.body_mut().read_to_string().unwrap();
    (
        status,
        serde_json::from_str(&text).unwrap_or(Value::String(text)),
    )
}

/// `POST path` with the JSON `body`.
pub fn post_json(server: &Server, path: &str, body: &Value) -> (u16, Value) {
    let request = agent()
        .post(&server.url(path))
        .header("content-type", "application/json");
    status_and_body(request.send(body.to_string().as_bytes()).unwrap())
}

/// `GET path`.
pub fn get_json(server: &Server, path: &str) -> (u16, Value) {
    status_and_body(agent().get(&server.url(path)).call().unwrap())
}

pub fn post(server: &Server, body: &[u8]) -> (u16, Value) {
    post_with(server, body, None)
}

/// `POST /v1/decide`, with `authorization` when given.
pub fn post_with(server: &Server, body: &[u8], authorization: Option<&str>) -> (u16, Value) {
    let mut request = agent()
        .post(&server.url("/v1/decide"))
        .header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    status_and_body(request.send(body).unwrap())
}

/// `POST /v1/audit/query` with `body`, and `authorization` when given.
pub fn audit_query_http(
    server: &Server,
    body: &Value,
    authorization: Option<&str>,
) -> (u16, Value) {
    audit_query_at(&server.url("/v1/audit/query"), body, authorization)
}

/// `POST` of `body` to `url`, an audit query endpoint, from any thread.
pub fn audit_query_at(url: &str, body: &Value, authorization: Option<&str>) -> (u16, Value) {
    let mut request = agent().post(url).header("content-type", "application/json");
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    status_and_body(request.send(body.to_string().as_bytes()).unwrap())
}

/// `POST /v1/admin/reload`, with `authorization` when given.
pub fn admin_reload(server: &Server, authorization: Option<&str>) -> (u16, Value) {
    let mut request = agent().post(&server.url("/v1/admin/reload"));
    if let Some(value) = authorization {
        request = request.header("authorization", value);
    }
    status_and_body(request.send_empty().unwrap())
}

pub fn decide(server: &Server, token: &str, target: Value, action: &str) -> Value {
    decide_on(server, token, target, action, "/v1/deploy")
}

/// `decide` with `resource` as the request's resource.
pub fn decide_on(
    server: &Server,
    token: &str,
    target: Value,
    action: &str,
    resource: &str,
) -> Value {
    let body = json!({
        "evidence": { "token": token },
        "target": target,
        "request": { "action": action, "resource": resource },
    });
    let (status, answer) = post(server, body.to_string().as_bytes());
    assert_eq!(status, 200, "{answer}");
    answer
}

pub fn healthz_bundle(server: &Server) -> String {
    let mut response = ureq::get(&server.url("/healthz")).call().unwrap();
    let health: Value =
        serde_json::from_str(&response.body_mut().read_to_string().unwrap()).unwrap();
    assert_eq!(health["status"], "ok");
    health["bundle"].as_str().unwrap().to_owned()
}

/// Asks `check` again every 50 ms until it gives a value; fails after 60 s.
pub fn eventually<T>(what: &str, mut check: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Some(value) = check() {
            return value;
        }
        assert!(Instant::now() < deadline, "timed out waiting until {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The rows of `sql` over the sealed events, as JSON objects.
pub fn audit_query(data_dir: &Path, sql: &str) -> Vec<Value> {
    let out = portcullis()
        .args(["audit", "query", sql, "--format", "json", "--data-dir"])
        .arg(data_dir)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let text = String::from_utf8(out.stdout).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty())
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// The example configuration, written to `dir/name`, with `policy` in place of its
/// `dir = "policies"` line, `server` added to its `[server]` table, and its JWKS files read
/// from the repository.
pub fn example_config(dir: &Path, name: &str, policy: &str, server: &str) -> PathBuf {
    let example = std::fs::read_to_string(repo().join("examples/portcullis.toml")).unwrap();
    let config = example
        .replace("dir = \"policies\"", policy)
        .replace(
            "[server]\n",
            &format!(
                "[server]\n{server}{}",
                if server.is_empty() { "" } else { "\n" }
            ),
        )
        .replace(
            "jwks_file = \"",
            &format!("jwks_file = \"{}/examples/", repo().display()),
        );
    let path = dir.join(name);
    std::fs::write(&path, config).unwrap();
    path
}

/// The project's Python, with the independent readers and validators `scripts/test` installs.
pub fn python() -> String {
    std::env::var("PORTCULLIS_TEST_PYTHON").unwrap_or_else(|_| {
        panic!(
            "PORTCULLIS_TEST_PYTHON is not set: run the tests with `scripts/test`, which \
             installs DuckDB, pyarrow and compliance-trestle for the interoperability checks"
        )
    })
}

/// What `portcullis serve` with `config` on `data_dir` printed when it refused to start.
pub fn refused_start(config: &Path, data_dir: &Path) -> String {
    let out = portcullis()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(config)
        .arg("--data-dir")
        .arg(data_dir)
        .env("NO_COLOR", "1")
        .output()
        .unwrap();
    let err = String::from_utf8_lossy(&out.stderr).into_owned();
    assert!(!out.status.success(), "{err}");
    err
}
