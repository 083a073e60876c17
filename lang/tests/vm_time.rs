//! Time in decisions: `request.time` compared with timestamps, and `within` windows of local
//! time in a named zone, evaluated with the zone rules the bundle carries, across daylight
//! saving time changes.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

mod vm_common;

use portcullis_lang::schema::{ClaimValue, ProviderKind};
use portcullis_lang::time::parse_timestamp;
use portcullis_lang::vm::{EvalError, Program, Reason, Request};
use vm_common::program_from_source;

/// A program whose one permit holds when `condition` does.
fn program(condition: &str) -> Program {
    let text = format!(
        "target api {{ https {{ host = \"api.internal\" }} }}\n\
         permit timed {{ workload any target api when {condition} }}\n"
    );
    program_from_source(&text)
}

fn decide_at(program: &Program, unix_seconds: i64) -> Reason<'_> {
    let claims: Vec<Option<ClaimValue>> = vec![None; ProviderKind::Oidc.claims().len()];
    let request = Request {
        time: Some(unix_seconds),
        ..vm_common::request(ProviderKind::Oidc, &claims, "api", None, None)
    };
    program.decide(&request).reason
}

/// Checks each `(time, allowed)` pair against the window or comparison `condition`.
fn check(condition: &str, cases: &[(&str, bool)]) {
    let program = program(condition);
    for (time, expected) in cases {
        let at = parse_timestamp(time).unwrap();
        let reason = decide_at(&program, at);
        let allowed = matches!(reason, Reason::Permitted { .. });
        assert!(
            matches!(reason, Reason::Permitted { .. } | Reason::NoPermit),
            "{condition} at {time}: {reason:?}"
        );
        assert_eq!(allowed, *expected, "{condition} at {time}");
    }
}

#[test]
fn business_hours_in_berlin_winter_and_summer() {
    check(
        r#"request.time within weekdays 08:00..18:00 in "Europe/Berlin""#,
        &[
            // Friday 4 December 2026, CET (UTC+1).
            ("2026-12-04T06:59:59Z", false),
            ("2026-12-04T07:00:00Z", true),
            ("2026-12-04T16:59:59Z", true),
            ("2026-12-04T17:00:00Z", false),
            // Saturday and Sunday.
            ("2026-12-05T10:00:00Z", false),
            ("2026-12-06T10:00:00Z", false),
            // Monday 7 December; 07:00 local on Monday is still outside.
            ("2026-12-07T06:00:00Z", false),
            ("2026-12-07T07:00:00Z", true),
            // Wednesday 1 July 2026, CEST (UTC+2).
            ("2026-07-01T05:59:59Z", false),
            ("2026-07-01T06:00:00Z", true),
            ("2026-07-01T15:59:59Z", true),
            ("2026-07-01T16:00:00Z", false),
            // The same wall-clock hours either side of the spring change (29 March 2026).
            ("2026-03-27T06:30:00Z", false),
            ("2026-03-27T07:00:00Z", true),
            ("2026-03-30T05:30:00Z", false),
            ("2026-03-30T06:00:00Z", true),
        ],
    );
}

#[test]
fn berlin_spring_forward_skips_the_hour_and_fall_back_repeats_it() {
    check(
        r#"request.time within 02:00..03:00 in "Europe/Berlin""#,
        &[
            // 28 March: 02:30 CET exists.
            ("2026-03-28T01:30:00Z", true),
            // 29 March: 01:59:59 CET is followed by 03:00 CEST; no instant is 02:xx.
            ("2026-03-29T00:59:59Z", false),
            ("2026-03-29T01:00:00Z", false),
            ("2026-03-29T01:30:00Z", false),
            // 25 October: 02:00-02:59 CEST, then 02:00-02:59 CET again.
            ("2026-10-24T23:59:59Z", false),
            ("2026-10-25T00:00:00Z", true),
            ("2026-10-25T00:30:00Z", true),
            ("2026-10-25T01:30:00Z", true),
            ("2026-10-25T01:59:59Z", true),
            ("2026-10-25T02:00:00Z", false),
        ],
    );
}

#[test]
fn new_york_office_hours_and_the_repeated_hour() {
    check(
        r#"request.time within mon..fri 09:00..17:00 in "America/New_York""#,
        &[
            // Friday 6 March 2026, EST (UTC-5).
            ("2026-03-06T13:59:59Z", false),
            ("2026-03-06T14:00:00Z", true),
            // Monday 9 March, after the change of 8 March: EDT (UTC-4).
            ("2026-03-09T12:59:59Z", false),
            ("2026-03-09T13:00:00Z", true),
            ("2026-03-09T20:59:59Z", true),
            ("2026-03-09T21:00:00Z", false),
            // Monday 2 November, after the change of 1 November: EST again.
            ("2026-11-02T13:30:00Z", false),
            ("2026-11-02T14:00:00Z", true),
        ],
    );
    check(
        r#"request.time within 01:00..02:00 in "America/New_York""#,
        &[
            ("2026-11-01T04:59:59Z", false),
            // 01:30 EDT, then 01:30 EST an hour later.
            ("2026-11-01T05:30:00Z", true),
            ("2026-11-01T06:30:00Z", true),
            ("2026-11-01T07:00:00Z", false),
            // 8 March: 01:59:59 EST is followed by 03:00 EDT.
            ("2026-03-08T06:30:00Z", true),
            ("2026-03-08T07:00:00Z", false),
        ],
    );
}

#[test]
fn windows_wrap_past_midnight() {
    check(
        r#"request.time within 22:00..06:00 in "Asia/Tokyo""#,
        &[
            ("2026-12-04T12:59:59Z", false),
            ("2026-12-04T13:00:00Z", true),
            ("2026-12-04T20:59:59Z", true),
            ("2026-12-04T21:00:00Z", false),
        ],
    );
    // Friday night runs into Saturday morning; Thursday night is not in it.
    check(
        r#"request.time within fri 22:00..06:00 in "UTC""#,
        &[
            ("2026-12-03T23:00:00Z", false),
            ("2026-12-04T05:00:00Z", false),
            ("2026-12-04T21:59:59Z", false),
            ("2026-12-04T22:00:00Z", true),
            ("2026-12-05T05:59:59Z", true),
            ("2026-12-05T06:00:00Z", false),
            ("2026-12-05T22:00:00Z", false),
        ],
    );
    // An end at 00:00 is midnight at the end of the day, not a wrap.
    check(
        r#"request.time within sun 18:00..00:00 in "UTC""#,
        &[
            ("2026-12-06T17:59:59Z", false),
            ("2026-12-06T18:00:00Z", true),
            ("2026-12-06T23:59:59Z", true),
            ("2026-12-07T00:00:00Z", false),
        ],
    );
}

#[test]
fn day_lists_ranges_and_groups() {
    check(
        r#"request.time within [mon, wed..thu] in "UTC""#,
        &[
            ("2026-12-07T00:00:00Z", true),
            ("2026-12-08T12:00:00Z", false),
            ("2026-12-09T12:00:00Z", true),
            ("2026-12-10T23:59:59Z", true),
            ("2026-12-11T00:00:00Z", false),
        ],
    );
    check(
        r#"request.time within weekends in "UTC""#,
        &[
            ("2026-12-04T23:59:59Z", false),
            ("2026-12-05T00:00:00Z", true),
            ("2026-12-06T23:59:59Z", true),
            ("2026-12-07T00:00:00Z", false),
        ],
    );
    // A range of days may wrap past Sunday.
    check(
        r#"request.time within sat..mon in "UTC""#,
        &[
            ("2026-12-04T12:00:00Z", false),
            ("2026-12-05T12:00:00Z", true),
            ("2026-12-07T12:00:00Z", true),
            ("2026-12-08T12:00:00Z", false),
        ],
    );
}

#[test]
fn request_time_compares_with_timestamps() {
    check(
        "request.time < 2027-01-01T00:00:00Z",
        &[
            ("2026-12-31T23:59:59Z", true),
            ("2027-01-01T00:00:00Z", false),
        ],
    );
    check(
        "request.time >= 2026-12-31T23:00:00-01:00 && request.time <= 2027-01-01T00:00:00Z",
        &[
            ("2026-12-31T23:59:59Z", false),
            ("2027-01-01T00:00:00Z", true),
            ("2027-01-01T00:00:01Z", false),
        ],
    );
    check(
        "request.time == 2026-12-04T17:30:00Z || request.time != request.time",
        &[
            ("2026-12-04T18:30:00+01:00", true),
            ("2026-12-04T17:30:01Z", false),
        ],
    );
}

#[test]
fn a_time_no_zone_can_read_denies_with_an_error() {
    let windowed = program(r#"request.time within weekdays in "UTC""#);
    for unix_seconds in [i64::MAX, i64::MIN] {
        let reason = decide_at(&windowed, unix_seconds);
        assert_eq!(
            reason,
            Reason::EvaluationError {
                rule: "timed",
                error: EvalError::TimeOutOfRange { unix_seconds },
            }
        );
    }
    // Comparisons need no zone and hold for any time.
    let compared = program("request.time > 2026-01-01T00:00:00Z");
    assert!(matches!(
        decide_at(&compared, i64::MAX),
        Reason::Permitted { .. }
    ));
}

#[test]
fn a_request_without_a_time_cannot_read_it_and_is_denied() {
    let program = program("request.time < 2027-01-01T00:00:00Z");
    let claims: Vec<Option<ClaimValue>> = vec![None; ProviderKind::Oidc.claims().len()];
    let request = Request {
        time: None,
        ..vm_common::request(ProviderKind::Oidc, &claims, "api", None, None)
    };
    let decision = program.decide(&request);
    assert!(!decision.allow);
    assert_eq!(
        decision.reason,
        Reason::EvaluationError {
            rule: "timed",
            error: EvalError::AbsentRequestField { field: "time" }
        }
    );
}
