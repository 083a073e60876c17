//! The dashboard in a real browser: Debian's headless Chromium, driven by its `chromedriver`
//! over the W3C WebDriver protocol (plain HTTP on loopback, spoken with ureq), loads every
//! page of a running `portcullis serve` with generated data at a laptop's and a phone's
//! window size, checks the text it rendered, saves a screenshot of each under
//! `target/dashboard-screenshots/`, and finds no error in the browser's console — a
//! Content-Security-Policy violation, a failed load or a script error would be one.
//!
//! `scripts/test` installs `chromium` and `chromium-driver`; without them this test fails and
//! says so, rather than pass having checked nothing.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use base64::Engine as _;
use serde_json::{Value, json};

use common::dashboard::*;
use common::*;

/// The window sizes every page is seen at.
const SIZES: [(&str, u32, u32); 2] = [("laptop", 1366, 900), ("phone", 390, 844)];

#[test]
fn chromium_renders_every_page_without_a_console_error() {
    let (chromium, chromedriver) = browser_programs();
    let tmp = tempfile::tempdir().unwrap();
    let config = dashboard_config(tmp.path(), "", "");
    let (server, base) = start_with_dashboard(&config, &tmp.path().join("data"));
    generate_decisions(&server, tmp.path());
    let event = first_event(&base);
    server.wait_for_log("compliance_evaluated");

    let driver = Driver::start(&chromedriver);
    let profile = tempfile::tempdir().unwrap();
    let session = driver.session(&chromium, profile.path());
    let shots = screenshot_dir();
    let mut pages: Vec<(String, String, &str)> = pages()
        .into_iter()
        .map(|(path, phrase)| (name_of(path), path.to_owned(), phrase))
        .collect();
    pages.push(("event".to_owned(), format!("/events/{event}"), "claims"));
    pages.push((
        "control".to_owned(),
        "/controls/soc2/CC6.1".to_owned(),
        "Evidence query",
    ));
    for (size, width, height) in SIZES {
        session.resize(width, height);
        for (name, path, phrase) in &pages {
            session.open(&format!("{base}{path}"));
            let text = session.text("body");
            assert!(
                text.contains(phrase),
                "{size} {path}: no `{phrase}` in {text}"
            );
            assert!(text.contains("Portcullis"), "{size} {path}: {text}");
            let file = shots.join(format!("{size}-{name}.png"));
            std::fs::write(&file, session.screenshot()).unwrap();
            let errors = session.console_errors();
            assert!(
                errors.is_empty(),
                "{size} {path}: console errors {errors:#?}"
            );
        }
    }
    // The console check sees errors: a page that answers 404 logs one.
    session.open(&format!("{base}/no-such-page"));
    let errors = session.console_errors();
    assert!(
        errors.iter().any(|entry| entry["message"]
            .as_str()
            .unwrap_or_default()
            .contains("404")),
        "{errors:#?}"
    );
    // The hostile subject is shown as text, not run.
    session.open(&format!("{base}/events/{event}"));
    assert!(session.text("body").contains(HOSTILE_SUBJECT));
    assert!(session.console_errors().is_empty());
    session.close();
    stop_server(server);
}

/// The paths of `chromium` and `chromedriver`, or a failure that says how to get them.
fn browser_programs() -> (PathBuf, PathBuf) {
    let find = |candidates: &[&str]| {
        candidates
            .iter()
            .map(PathBuf::from)
            .find(|path| path.is_file())
    };
    let chromium = find(&["/usr/lib/chromium/chromium", "/usr/bin/chromium"]);
    let chromedriver = find(&["/usr/bin/chromedriver", "/usr/lib/chromium/chromedriver"]);
    match (chromium, chromedriver) {
        (Some(chromium), Some(chromedriver)) => (chromium, chromedriver),
        _ => panic!(
            "this test needs Debian's `chromium` and `chromium-driver`, which `scripts/test` \
             installs (or: apt-get install chromium chromium-driver)"
        ),
    }
}

/// `target/dashboard-screenshots/`, made anew.
fn screenshot_dir() -> PathBuf {
    let target = Path::new(env!("CARGO_TARGET_TMPDIR")).parent().unwrap();
    let dir = target.join("dashboard-screenshots");
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).unwrap();
    dir
}

/// A file name for the page at `path`.
fn name_of(path: &str) -> String {
    let name: String = path
        .trim_start_matches('/')
        .chars()
        .map(|c| if c.is_ascii_alphanumeric() { c } else { '-' })
        .collect();
    if name.is_empty() {
        "overview".to_owned()
    } else {
        name
    }
}

/// The `seq` of an allowed decision, whose subject is the hostile one.
fn first_event(base: &str) -> u64 {
    let page = fetch(&format!("{base}/events?decision=allow&limit=1"), None);
    page.body
        .split("<a href=\"/events/")
        .nth(1)
        .and_then(|rest| rest.split('"').next()?.parse().ok())
        .expect("an allowed event")
}

/// A running `chromedriver` on a loopback port; killed when dropped.
struct Driver {
    child: Child,
    url: String,
}

impl Drop for Driver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Driver {
    fn start(program: &Path) -> Driver {
        let port = free_port();
        let child = Command::new(program)
            .arg(format!("--port={port}"))
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap();
        let driver = Driver {
            child,
            url: format!("http://127.0.0.1:{port}"),
        };
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let ready = call(&format!("{}/status", driver.url), None)
                .map(|status| status["value"]["ready"] == true)
                .unwrap_or(false);
            if ready {
                return driver;
            }
            assert!(Instant::now() < deadline, "chromedriver never became ready");
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// A headless Chromium session with a fresh profile in `profile`.
    fn session(&self, chromium: &Path, profile: &Path) -> Session {
        let capabilities = json!({
            "capabilities": { "alwaysMatch": {
                "browserName": "chrome",
                "goog:chromeOptions": {
                    "binary": chromium.to_str().unwrap(),
                    "args": [
                        "--headless", "--no-sandbox", "--disable-gpu", "--disable-quic",
                        "--no-first-run", "--disable-background-networking",
                        "--disable-component-update", "--disable-sync",
                        "--disable-dev-shm-usage",
                        format!("--user-data-dir={}", profile.display()),
                    ],
                },
                "goog:loggingPrefs": { "browser": "ALL" },
            }}
        });
        let answer = call(&format!("{}/session", self.url), Some(&capabilities))
            .unwrap_or_else(|error| panic!("no browser session: {error}"));
        let id = answer["value"]["sessionId"]
            .as_str()
            .unwrap_or_else(|| panic!("no session id in {answer}"));
        Session {
            url: format!("{}/session/{id}", self.url),
        }
    }
}

/// One browser session.
struct Session {
    url: String,
}

impl Session {
    fn command(&self, path: &str, body: Option<&Value>) -> Value {
        let answer = call(&format!("{}{path}", self.url), body)
            .unwrap_or_else(|error| panic!("WebDriver `{path}` failed: {error}"));
        answer["value"].clone()
    }

    fn resize(&self, width: u32, height: u32) {
        self.command(
            "/window/rect",
            Some(&json!({ "width": width, "height": height })),
        );
    }

    fn open(&self, url: &str) {
        self.command("/url", Some(&json!({ "url": url })));
    }

    /// The rendered text of the first element `css` selects.
    fn text(&self, css: &str) -> String {
        let element = self.command(
            "/element",
            Some(&json!({ "using": "css selector", "value": css })),
        );
        let (_, id) = element.as_object().unwrap().iter().next().unwrap();
        let text = self.command(&format!("/element/{}/text", id.as_str().unwrap()), None);
        text.as_str().unwrap().to_owned()
    }

    /// The window as PNG.
    fn screenshot(&self) -> Vec<u8> {
        let png = self.command("/screenshot", None);
        let bytes = base64::engine::general_purpose::STANDARD
            .decode(png.as_str().unwrap())
            .unwrap();
        assert!(bytes.starts_with(b"\x89PNG"), "not a PNG");
        bytes
    }

    /// The console's messages of level `SEVERE` since the last call.
    fn console_errors(&self) -> Vec<Value> {
        let log = self.command("/se/log", Some(&json!({ "type": "browser" })));
        log.as_array()
            .unwrap()
            .iter()
            .filter(|entry| entry["level"] == "SEVERE")
            .cloned()
            .collect()
    }

    fn close(self) {
        let agent = agent();
        let _ = agent.delete(&self.url).call();
    }
}

fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .timeout_global(Some(Duration::from_secs(120)))
        .build()
        .into()
}

/// `GET url`, or `POST` of `body`; the JSON answer, or what went wrong.
fn call(url: &str, body: Option<&Value>) -> Result<Value, String> {
    let agent = agent();
    let response = match body {
        Some(body) => agent
            .post(url)
            .header("content-type", "application/json")
            .send(body.to_string().as_bytes()),
        None => agent.get(url).call(),
    };
    let mut response = response.map_err(|error| error.to_string())?;
    let status = response.status().as_u16();
    let text = response
        .body_mut()
        .with_config()
        .limit(64 * 1024 * 1024)
        .read_to_string()
        .map_err(|error| error.to_string())?;
    let value: Value = serde_json::from_str(&text).map_err(|error| format!("{error}: {text}"))?;
    if status != 200 {
        return Err(format!("status {status}: {value}"));
    }
    Ok(value)
}
