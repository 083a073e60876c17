//! Time in the compiler and the bundle: timestamps and `within` windows lower to the IR, the
//! rules of each zone a window names travel in the bundle's `time zones` section, and a
//! damaged zone or window is refused when the bundle loads.

#![allow(
    clippy::unwrap_used,
    clippy::expect_used,
    clippy::panic,
    reason = "a test fails by panicking"
)]

use portcullis_lang::bundle::{Bundle, BundleError};
use portcullis_lang::ir::{Expr, RequestField, Value};
use portcullis_lang::time::{Days, Window};
use portcullis_lang::{SourceFile, compile};
use sha2::{Digest, Sha256};

const POLICY: &str = r#"
condition business_hours { request.time within weekdays 08:00..18:00 in "Europe/Berlin" }
condition weekend_nights { request.time within weekends 22:00..06:00 in "Europe/Berlin" }
condition tokyo { request.time within 09:00..17:00 in "Asia/Tokyo" }
target api { https { host = "api.internal" } }
permit office {
  workload any
  target api
  when business_hours || weekend_nights || tokyo || request.time < 2027-01-01T00:00:00Z
}
"#;

fn codes(text: &str) -> Vec<&'static str> {
    match compile(&[SourceFile::new("policy.gate", text)]) {
        Ok(_) => Vec::new(),
        Err(diagnostics) => diagnostics.iter().map(|d| d.code().as_str()).collect(),
    }
}

fn bundle_bytes(text: &str) -> Vec<u8> {
    let set = compile(&[SourceFile::new("policy.gate", text)]).unwrap();
    Bundle::from_policy_set(&set).unwrap().to_bytes()
}

/// Records the right hash after a deliberate change, so that the loader's later checks run.
fn rehash(bytes: &mut [u8]) {
    let body_len = bytes.len() - 32;
    let digest = Sha256::digest(&bytes[..body_len]);
    bytes[body_len..].copy_from_slice(&digest);
}

#[test]
fn windows_and_timestamps_lower_to_the_ir() {
    let set = compile(&[SourceFile::new("policy.gate", POLICY)]).unwrap();
    let business_hours = &set.conditions[0].body;
    let expected = Expr::Within(
        Box::new(Expr::Request(RequestField::Time)),
        Window::new(Days::WEEKDAYS, 8 * 60, 18 * 60).unwrap(),
        "Europe/Berlin".to_owned(),
    );
    assert_eq!(*business_hours, expected);
    let when = set.rules[0].when.as_ref().unwrap();
    let Expr::Or(_, deadline) = when else {
        panic!("{when:?}")
    };
    let Expr::Order(_, _, deadline) = deadline.as_ref() else {
        panic!("{deadline:?}")
    };
    assert_eq!(**deadline, Expr::Const(Value::Int(1_798_761_600)));
}

#[test]
fn the_bundle_carries_each_zone_once_and_round_trips() {
    let bytes = bundle_bytes(POLICY);
    let bundle = Bundle::from_bytes(&bytes).unwrap();
    let zones: Vec<&str> = bundle
        .zones()
        .iter()
        .map(|zone| zone.name.as_str())
        .collect();
    assert_eq!(zones, ["Europe/Berlin", "Asia/Tokyo"]);
    assert!(
        bundle
            .zones()
            .iter()
            .all(|zone| zone.tzif.starts_with(b"TZif"))
    );
    let windows: Vec<(u8, u16, u16, u32)> = bundle
        .windows()
        .iter()
        .map(|entry| {
            let window = entry.window;
            (
                window.days().bits(),
                window.start(),
                window.end(),
                entry.zone,
            )
        })
        .collect();
    assert_eq!(
        windows,
        [
            (0x1f, 480, 1080, 0),
            (0x60, 1320, 360, 0),
            (0x7f, 540, 1020, 1)
        ]
    );
    assert_eq!(bundle.to_bytes(), bytes);
    assert_eq!(Bundle::from_bytes(&bundle.to_bytes()).unwrap(), bundle);
    assert_eq!(
        bundle_bytes(POLICY),
        bytes,
        "the same policy set gives the same bytes"
    );
}

#[test]
fn a_policy_set_without_windows_has_no_time_sections() {
    let bytes = bundle_bytes(
        "target api { https { host = \"api.internal\" } }\n\
         permit p { workload any target api when request.time > 2026-01-01T00:00:00Z }\n",
    );
    let bundle = Bundle::from_bytes(&bytes).unwrap();
    assert!(bundle.zones().is_empty() && bundle.windows().is_empty());
    assert!(!bytes.windows(4).any(|window| window == b"TZif"));
}

#[test]
fn damaged_zone_data_is_refused_at_load() {
    let mut bytes = bundle_bytes(POLICY);
    let at = bytes
        .windows(4)
        .position(|window| window == b"TZif")
        .unwrap();
    bytes[at] = b'X';
    assert!(matches!(
        Bundle::from_bytes(&bytes),
        Err(BundleError::HashMismatch { .. })
    ));
    rehash(&mut bytes);
    let error = Bundle::from_bytes(&bytes).unwrap_err();
    assert!(
        matches!(error, BundleError::InvalidZone { index: 0, .. }),
        "{error:?}"
    );
}

#[test]
fn damaged_windows_are_refused_at_load() {
    let bytes = bundle_bytes(POLICY);
    // The `time windows` section comes last: its last entry is zone (4 bytes), days (1),
    // start (2), end (2), right before the 32-byte hash.
    let entry = bytes.len() - 32 - 9;
    let damage = |at: usize, value: &[u8]| {
        let mut damaged = bytes.clone();
        damaged[entry + at..entry + at + value.len()].copy_from_slice(value);
        rehash(&mut damaged);
        Bundle::from_bytes(&damaged).unwrap_err()
    };
    let zone = damage(0, &7u32.to_le_bytes());
    assert!(
        matches!(
            zone,
            BundleError::IndexOutOfRange {
                what: "time zone",
                index: 7,
                ..
            }
        ),
        "{zone:?}"
    );
    for days in [0u8, 0x80] {
        let error = damage(4, &[days]);
        assert!(
            matches!(error, BundleError::InvalidTag { what: "days", .. }),
            "{error:?}"
        );
    }
    for (at, minute) in [(5, 1440u16), (7, 0), (7, 1441), (7, 540)] {
        let error = damage(at, &minute.to_le_bytes());
        assert!(
            matches!(
                error,
                BundleError::InvalidTag {
                    what: "window minutes",
                    ..
                }
            ),
            "{error:?}"
        );
    }
}

#[test]
fn time_diagnostics() {
    let window = |tail: &str| format!("condition c {{ request.time within {tail} }}");
    assert_eq!(
        codes(&window(r#"weekdays in "Europe/Berln""#)),
        ["gate::E0703"]
    );
    assert_eq!(codes(&window(r#"08:00..25:00 in "UTC""#)), ["gate::E0702"]);
    assert_eq!(codes(&window(r#"08:00..08:00 in "UTC""#)), ["gate::E0704"]);
    assert_eq!(codes(&window(r#"weekday in "UTC""#)), ["gate::E0704"]);
    assert_eq!(
        codes(&window(r#"[mon, fri..sun] 09:00..10:30 in "UTC""#)),
        Vec::<&str>::new()
    );
    assert_eq!(
        codes("condition c { request.time < 2026-13-01T00:00:00Z }"),
        ["gate::E0701"]
    );
    assert_eq!(codes("condition c { request.time < 15m }"), ["gate::E0301"]);
    assert_eq!(codes("condition c { request.time < 42 }"), ["gate::E0301"]);
    assert_eq!(codes("condition c { has request.time }"), ["gate::E0304"]);
    assert_eq!(
        codes(r#"condition c { 2026-01-01T00:00:00Z within weekdays in "UTC" }"#),
        Vec::<&str>::new()
    );
    // A time of day is only written inside a window.
    assert_eq!(
        codes("condition c { request.time < 08:00 }"),
        ["gate::E0001"]
    );
}

#[test]
fn the_lexer_keeps_time_literals_whole() {
    use portcullis_lang::lexer::{Token, lex};
    let lexed = lex("request.time within [mon, fri] 08:00..18:00 in \"UTC\" 2026-12-31T23:59:59Z");
    assert!(lexed.errors.is_empty());
    let tokens: Vec<Token<'_>> = lexed
        .tokens
        .into_iter()
        .map(|(_, token, _)| token)
        .collect();
    assert_eq!(
        tokens[3..],
        [
            Token::Within,
            Token::LBracket,
            Token::Ident("mon"),
            Token::Comma,
            Token::Ident("fri"),
            Token::RBracket,
            Token::TimeOfDay("08:00"),
            Token::DotDot,
            Token::TimeOfDay("18:00"),
            Token::In,
            Token::Str("UTC".to_owned()),
            Token::Timestamp("2026-12-31T23:59:59Z"),
        ]
    );
    // A date and a malformed time stay one token each, for the checker to explain.
    let tokens: Vec<Token<'_>> = lex("2026-12-31 25:00:00 1h30m 2026")
        .tokens
        .into_iter()
        .map(|(_, token, _)| token)
        .collect();
    assert_eq!(
        tokens,
        [
            Token::Timestamp("2026-12-31"),
            Token::TimeOfDay("25:00:00"),
            Token::Duration(5400),
            Token::Int(2026),
        ]
    );
}
