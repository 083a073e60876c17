//! The access log's keyset paging over a store larger than its first search window: sealed
//! segments and events still in the write-ahead log, a filter that matches a handful of events
//! spread over all of them, and pages in both directions. Every matching event must appear
//! once, in order, whatever the window the search needed.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use std::time::Duration;

use axum::body::Body;
use axum::http::Request;
use http_body_util::BodyExt as _;
use portcullis_audit::query::QueryLimits;
use portcullis_audit::{AuditLog, AuditOptions, Decision, NewEvent};
use portcullis_dashboard::{Dashboard, router};
use tower_service::Service as _;

const EVENTS: u64 = 40_000;
/// Every this many events, one is the rare workload's.
const RARE_EVERY: u64 = 6_007;

fn event(seq: u64) -> NewEvent {
    let rare = seq.is_multiple_of(RARE_EVERY);
    NewEvent {
        decision: Some(if rare {
            Decision::Deny
        } else {
            Decision::Allow
        }),
        reason_code: Some("permitted".to_owned()),
        workload: Some(if rare { "rare" } else { "common" }.to_owned()),
        target: Some("db".to_owned()),
        ..NewEvent::default()
    }
}

/// A store of [`EVENTS`] events, most of them sealed in segments of 4,000, the last few still
/// in the log (the returned log keeps them there).
fn store(dir: &std::path::Path) -> AuditLog {
    let options = AuditOptions {
        seal_after_events: 4_000,
        seal_interval: Duration::from_secs(3600),
        ..AuditOptions::default()
    };
    let (log, _) = AuditLog::open(dir, options).unwrap();
    let mut seq = 1;
    while seq <= EVENTS {
        let batch: Vec<NewEvent> = (seq..(seq + 1_000).min(EVENTS + 1)).map(event).collect();
        seq += batch.len() as u64;
        log.record_batch(batch).unwrap();
    }
    log
}

async fn page(app: &axum::Router, path: &str) -> String {
    let mut app = app.clone();
    std::future::poll_fn(|cx| {
        <axum::Router as tower_service::Service<Request<Body>>>::poll_ready(&mut app, cx)
    })
    .await
    .unwrap();
    let response = app
        .call(Request::get(path).body(Body::empty()).unwrap())
        .await
        .unwrap();
    let status = response.status();
    let body = response.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8(body.to_vec()).unwrap();
    assert!(status.is_success(), "{path}: {status} {body}");
    body
}

fn seqs(body: &str) -> Vec<u64> {
    body.split("<a href=\"/events/")
        .skip(1)
        .filter_map(|rest| rest.split('"').next()?.parse().ok())
        .collect()
}

fn link(body: &str, text: &str) -> Option<String> {
    let end = body.find(&format!("\">{text}</a>"))?;
    let start = body[..end].rfind("href=\"")? + "href=\"".len();
    Some(body[start..end].replace("&amp;", "&"))
}

/// Follows `text` links from `first`, collecting every page's `seq`s.
async fn walk(app: &axum::Router, first: &str, text: &str) -> Vec<u64> {
    let mut seen = Vec::new();
    let mut path = first.to_owned();
    for _ in 0..100 {
        let body = page(app, &path).await;
        seen.extend(seqs(&body));
        match link(&body, text) {
            Some(next) => path = next,
            None => return seen,
        }
    }
    panic!("more than 100 pages from {first}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn pages_hold_every_matching_event_once_in_order() {
    let dir = tempfile::tempdir().unwrap();
    let log = store(dir.path());
    let app = router(Dashboard::new(
        dir.path().to_owned(),
        QueryLimits::default(),
    ));
    let rare: Vec<u64> = (1..=EVENTS)
        .filter(|seq| seq.is_multiple_of(RARE_EVERY))
        .collect();
    let mut newest_first = rare.clone();
    newest_first.reverse();

    let older = walk(&app, "/events?workload=rare&limit=2", "Older →").await;
    assert_eq!(older, newest_first);
    let newer = walk(&app, "/events?workload=rare&limit=2&after=0", "← Newer").await;
    // Each page is newest first; the pages go from the oldest on.
    let mut expected: Vec<u64> = Vec::new();
    for pair in rare.chunks(2) {
        expected.extend(pair.iter().rev());
    }
    assert_eq!(newer, expected);

    let newest = seqs(&page(&app, "/events?limit=5").await);
    assert_eq!(newest, (EVENTS - 4..=EVENTS).rev().collect::<Vec<_>>());
    let middle = seqs(&page(&app, "/events?before=30000&limit=3").await);
    assert_eq!(middle, vec![29_999, 29_998, 29_997]);
    let start = seqs(&page(&app, "/events?after=10&limit=3").await);
    assert_eq!(start, vec![13, 12, 11]);
    let deny = seqs(&page(&app, "/events?decision=deny&before=12015&limit=200").await);
    assert_eq!(deny, vec![12_014, 6_007]);
    drop(log);
}
