//! The dashboard over HTTP: the real `portcullis serve` with its dashboard on a fresh loopback
//! port, a store filled by real decisions, and every page read with ureq — its status, what
//! it shows, its security headers, the escaping of a hostile subject, paging, the refusal of
//! bad input, and the token when one is required.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod common;

use base64::Engine as _;

use common::dashboard::*;
use common::*;

const ESCAPED_SUBJECT: &str = "&lt;script&gt;alert(1)&lt;/script&gt;";

#[test]
fn every_page_shows_the_store_escaped_under_strict_headers() {
    let tmp = tempfile::tempdir().unwrap();
    let config = dashboard_config(tmp.path(), "", "");
    let data = tmp.path().join("data");
    let (server, base) = start_with_dashboard(&config, &data);
    generate_decisions(&server, tmp.path());

    for (path, phrase) in pages() {
        let page = fetch(&format!("{base}{path}"), None);
        assert_eq!(page.status, 200, "{path}: {}", page.body);
        assert!(page.body.contains(phrase), "{path} lacks `{phrase}`");
        assert_security_headers(&page, path);
        assert!(!page.body.contains("<script"), "{path} holds a script");
    }

    let overview = fetch(&format!("{base}/"), None);
    assert!(overview.body.contains("<svg"), "no chart");
    for shown in [
        "docs_publisher",
        "no_permit",
        "token_malformed",
        "(none: not attested)",
        // Three allowed, three denied, two that failed attestation.
        "<span class=\"big\">8</span> decisions, <span class=\"big\">5</span> denied",
    ] {
        assert!(
            overview.body.contains(shown),
            "the overview lacks `{shown}`"
        );
    }

    // The hostile subject is text wherever it shows.
    let allowed = fetch(&format!("{base}/events?decision=allow&limit=1"), None);
    let seq = first_seq(&allowed.body);
    let event = fetch(&format!("{base}/events/{seq}"), None);
    assert_eq!(event.status, 200);
    assert!(event.body.contains(ESCAPED_SUBJECT), "{}", event.body);
    assert!(!event.body.contains(HOSTILE_SUBJECT));
    assert!(event.body.contains("billing_release_deploys"));

    let inventory = fetch(&format!("{base}/inventory?window=30d"), None);
    let unused = section(&inventory.body, "id=\"unused\"");
    assert!(unused.contains("orders_api_uses_orders_db"), "{unused}");
    assert!(!unused.contains("billing_release_deploys"), "{unused}");
    for shown in [
        "billing_release",
        "orders_db",
        "billing_deploy_token",
        "sha256:",
    ] {
        assert!(
            inventory.body.contains(shown),
            "the inventory lacks `{shown}`"
        );
    }

    // The evaluation at start feeds the posture and the controls.
    server.wait_for_log("compliance_evaluated");
    let overview = fetch(&format!("{base}/"), None);
    assert!(overview.body.contains("passing"), "{}", overview.body);
    assert!(overview.body.contains("verified"), "{}", overview.body);
    let controls = fetch(&format!("{base}/controls"), None);
    for id in ["CC6.1", "CC8.1", "AC-6", "AU-9", "IA-5"] {
        assert!(controls.body.contains(id), "the controls lack `{id}`");
    }
    let soc2 = fetch(&format!("{base}/controls?framework=soc2"), None);
    assert!(!soc2.body.contains("AC-6"));
    for path in ["/controls/soc2/CC6.1", "/controls/nist-800-53/AC-6"] {
        let control = fetch(&format!("{base}{path}"), None);
        assert_eq!(control.status, 200, "{path}: {}", control.body);
        for section in ["Evidence query", "Remediation", "History", "SELECT"] {
            assert!(control.body.contains(section), "{path} lacks `{section}`");
        }
        assert_security_headers(&control, path);
    }
    let unknown = fetch(&format!("{base}/controls/soc2/CC99.9"), None);
    assert_eq!(unknown.status, 404);

    // An open dashboard answers only to loopback names (no DNS rebinding).
    let rebound = fetch_with_host(&format!("{base}/events"), "attacker.example");
    assert_eq!(rebound.status, 421, "{}", rebound.body);
    assert!(!rebound.body.contains("docs_publisher"));
    let localhost = base.replace("127.0.0.1", "localhost");
    assert_eq!(
        fetch_with_host(&format!("{base}/"), &localhost[7..]).status,
        200
    );

    let style = fetch(&format!("{base}{}", stylesheet_of(&overview.body)), None);
    assert_eq!(style.status, 200);
    assert!(
        style
            .header("content-type")
            .unwrap()
            .starts_with("text/css")
    );
    assert_eq!(fetch(&format!("{base}/nothing-here"), None).status, 404);
    stop_server(server);
}

#[test]
fn the_access_log_pages_by_seq_and_filters() {
    let tmp = tempfile::tempdir().unwrap();
    let config = dashboard_config(tmp.path(), "", "evaluate_every_s = 0");
    let (server, base) = start_with_dashboard(&config, &tmp.path().join("data"));
    generate_decisions(&server, tmp.path());

    // Every event once, newest first, two to a page, older pages by `before`.
    let mut seen = Vec::new();
    let mut url = format!("{base}/events?limit=2");
    for _ in 0..20 {
        let page = fetch(&url, None);
        assert_eq!(page.status, 200, "{url}: {}", page.body);
        let seqs = seqs(&page.body);
        assert!(seqs.len() <= 2, "{seqs:?}");
        seen.extend(seqs);
        match link(&page.body, "Older →") {
            Some(older) => url = format!("{base}{older}"),
            None => break,
        }
    }
    let mut sorted = seen.clone();
    sorted.sort_unstable_by(|a, b| b.cmp(a));
    sorted.dedup();
    assert_eq!(seen, sorted, "pages overlap or are out of order");
    // A policy change, six decisions, two attestation failures, three credentials issued.
    assert!(seen.len() >= 9, "{seen:?}");
    assert_eq!(seen.last(), Some(&1));

    // And back: the newer page of the last one.
    let last = fetch(&url, None);
    let newer = link(&last.body, "← Newer").expect("a link to newer events");
    let back = fetch(&format!("{base}{newer}"), None);
    let back_seqs = seqs(&back.body);
    assert!(back_seqs.iter().all(|seq| *seq > seen[seen.len() - 1]));

    // Filters combine, and keep to themselves on every page.
    let denied = fetch(
        &format!("{base}/events?decision=deny&workload=docs_publisher&limit=2"),
        None,
    );
    assert_eq!(seqs(&denied.body).len(), 2);
    assert!(!denied.body.contains("billing_release_deploys"));
    let older = link(&denied.body, "Older →").unwrap();
    assert!(older.contains("workload=docs_publisher"), "{older}");
    assert!(older.contains("decision=deny"), "{older}");
    let by_reason = fetch(&format!("{base}/events?reason=token_malformed"), None);
    assert_eq!(seqs(&by_reason.body).len(), 2);
    let by_words = fetch(&format!("{base}/events?reason=well-formed%20JWT"), None);
    assert_eq!(seqs(&by_words.body).len(), 2);
    let quoted = fetch(
        &format!("{base}/events?workload=x%27%20OR%20%271%27%3D%271"),
        None,
    );
    assert_eq!(quoted.status, 200);
    assert!(quoted.body.contains("No event matches"), "{}", quoted.body);
    let future = fetch(&format!("{base}/events?from=2199-01-01"), None);
    assert!(future.body.contains("No event matches"));
    stop_server(server);
}

#[test]
fn bad_input_is_refused_with_what_is_wrong() {
    let tmp = tempfile::tempdir().unwrap();
    let config = dashboard_config(tmp.path(), "", "evaluate_every_s = 0");
    let (server, base) = start_with_dashboard(&config, &tmp.path().join("data"));
    let long = "x".repeat(201);
    let cases = [
        (
            "/events?limit=500",
            400,
            "expected a whole number from 1 to 200",
        ),
        ("/events?limit=ten", 400, "`limit` is `ten`"),
        ("/events?from=yesterday", 400, "expected a UTC time"),
        ("/events?to=2999-01-01", 400, "from the year 1970 to 2200"),
        (
            "/events?from=2026-02-01&to=2026-01-01",
            400,
            "earlier than `to`",
        ),
        ("/events?decision=maybe", 400, "expected one of allow, deny"),
        ("/events?before=5&after=2", 400, "not both"),
        ("/events?sort=time", 400, "unknown parameter `sort`"),
        ("/events?limit=1&limit=2", 400, "more than once"),
        ("/events/abc", 400, "not an event's seq"),
        ("/events/999999", 404, "no event has seq 999999"),
        ("/inventory?window=2y", 400, "hours or days"),
        ("/?window=9999d", 400, "from 1h to 400d"),
        ("/controls/iso-27001/A.5", 404, "no framework"),
    ];
    for (path, status, message) in cases {
        let page = fetch(&format!("{base}{path}"), None);
        assert_eq!(page.status, status, "{path}: {}", page.body);
        assert!(page.body.contains(message), "{path}: {}", page.body);
        assert_security_headers(&page, path);
    }
    let page = fetch(&format!("{base}/events?workload={long}"), None);
    assert_eq!(page.status, 400);
    assert!(page.body.contains("201 characters long; at most 200"));
    let page = fetch(&format!("{base}/events?reason={}", "y".repeat(5000)), None);
    assert_eq!(page.status, 400);
    assert!(page.body.contains("at most 4096 are read"), "{}", page.body);
    // The last possible cursor is an empty page, not an overflow.
    let page = fetch(&format!("{base}/events?after={}", i64::MAX), None);
    assert_eq!(page.status, 200, "{}", page.body);
    let page = fetch(&format!("{base}/events/1?x=1"), None);
    assert_eq!(page.status, 400);
    assert!(
        page.body.contains("this page takes no parameters"),
        "{}",
        page.body
    );
    // Markup in a refused value is quoted back escaped.
    let page = fetch(&format!("{base}/events?kind=%3Cscript%3E"), None);
    assert_eq!(page.status, 400);
    assert!(page.body.contains("`&lt;script&gt;`"), "{}", page.body);
    stop_server(server);
}

#[test]
fn a_required_token_guards_every_page() {
    let tmp = tempfile::tempdir().unwrap();
    let admin = "admin-token-0123456789abcdef";
    let audit = "audit-token-0123456789abcdef";
    std::fs::write(tmp.path().join("admin.token"), admin).unwrap();
    std::fs::write(tmp.path().join("audit.token"), audit).unwrap();
    let server_table = "admin_token_file = \"admin.token\"\naudit_token_file = \"audit.token\"";
    let config = dashboard_config(tmp.path(), server_table, "require_token = true");
    let (server, base) = start_with_dashboard(&config, &tmp.path().join("data"));
    let basic = |password: &str| {
        let pair = format!("auditor:{password}");
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    };
    let overview = fetch(&format!("{base}/"), Some(&format!("Bearer {audit}")));
    let style = stylesheet_of(&overview.body);
    for path in [
        "/",
        "/events",
        "/inventory",
        "/controls",
        style.as_str(),
        "/x",
    ] {
        let url = format!("{base}{path}");
        for refused in [
            None,
            Some("Bearer wrong-token-0123456789".to_owned()),
            Some(basic("wrong-token-0123456789")),
            Some(format!("Bearer {admin}x")),
        ] {
            let page = fetch(&url, refused.as_deref());
            assert_eq!(page.status, 401, "{path} with {refused:?}");
            assert_eq!(
                page.header("www-authenticate"),
                Some("Basic realm=\"portcullis\", charset=\"UTF-8\"")
            );
            assert_security_headers(&page, path);
        }
        let expected = if path == "/x" { 404 } else { 200 };
        for admitted in [
            format!("Bearer {admin}"),
            format!("Bearer {audit}"),
            basic(admin),
            basic(audit),
        ] {
            assert_eq!(fetch(&url, Some(&admitted)).status, expected, "{path}");
        }
    }
    stop_server(server);
}

#[test]
fn a_dashboard_beyond_loopback_does_not_start_without_the_admin_token() {
    let tmp = tempfile::tempdir().unwrap();
    let config = dashboard_config(tmp.path(), "", "");
    let text = std::fs::read_to_string(&config)
        .unwrap()
        .replace("listen = \"127.0.0.1:0\"", "listen = \"0.0.0.0:0\"");
    std::fs::write(&config, text).unwrap();
    let out = portcullis()
        .args(["serve", "--listen", "127.0.0.1:0", "--config"])
        .arg(&config)
        .arg("--data-dir")
        .arg(tmp.path().join("data"))
        .output()
        .unwrap();
    assert!(!out.status.success());
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        stderr.contains("beyond loopback, which needs `[server] admin_token_file`"),
        "{stderr}"
    );
    assert!(
        !tmp.path().join("data").exists(),
        "a refused start made a store"
    );
}

/// `GET url` naming `host` in the `Host` header.
fn fetch_with_host(url: &str, host: &str) -> Fetched {
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .http_status_as_error(false)
        .build()
        .into();
    let mut response = agent.get(url).header("host", host).call().unwrap();
    Fetched {
        status: response.status().as_u16(),
        headers: Vec::new(),
        body: response.body_mut().read_to_string().unwrap(),
    }
}

fn assert_security_headers(page: &Fetched, path: &str) {
    let csp = page.header("content-security-policy").unwrap_or_default();
    assert!(
        csp.starts_with("default-src 'none'; style-src 'self'; img-src 'self' data:"),
        "{path}: {csp}"
    );
    assert!(!csp.contains("script-src"), "{path}: {csp}");
    assert_eq!(
        page.header("x-content-type-options"),
        Some("nosniff"),
        "{path}"
    );
    assert_eq!(page.header("x-frame-options"), Some("DENY"), "{path}");
    assert_eq!(
        page.header("referrer-policy"),
        Some("no-referrer"),
        "{path}"
    );
}

/// The `seq`s of the events a list page shows, in its order.
fn seqs(body: &str) -> Vec<u64> {
    body.split("<a href=\"/events/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

fn first_seq(body: &str) -> u64 {
    *seqs(body).first().expect("an event on the page")
}

/// The `href` of the link whose text is `text`, unescaped.
fn link(body: &str, text: &str) -> Option<String> {
    let end = body.find(&format!("\">{text}</a>"))?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    Some(body[start..end].replace("&amp;", "&"))
}

/// The page from the element with `marker` to the next `<h2`.
fn section<'a>(body: &'a str, marker: &str) -> &'a str {
    let start = body.find(marker).expect("the section");
    let rest = &body[start..];
    let end = rest[1..].find("<h2").map_or(rest.len(), |end| end + 1);
    &rest[..end]
}
