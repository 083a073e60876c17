//! Numbers, times and links as the pages show them.

use chrono::{DateTime, SecondsFormat, Timelike, Utc};

/// `2026-03-01 14:30:05 UTC` would repeat the zone on every row: the footer says times are UTC.
pub(crate) fn time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S").to_string()
}

/// A time to the microsecond, as an event's own page shows it.
pub(crate) fn precise_time(time: DateTime<Utc>) -> String {
    time.format("%Y-%m-%d %H:%M:%S%.6f").to_string()
}

/// A time as a `datetime-local` field holds it: to the minute, or to the second or the
/// millisecond when it has them (the field's `step` lets the browser keep them).
pub(crate) fn field_time(time: DateTime<Utc>) -> String {
    let format = if time.nanosecond() != 0 {
        "%Y-%m-%dT%H:%M:%S%.3f"
    } else if time.second() != 0 {
        "%Y-%m-%dT%H:%M:%S"
    } else {
        "%Y-%m-%dT%H:%M"
    };
    time.format(format).to_string()
}

/// A time in a link, whole: RFC 3339 with as many fractional digits as it has.
pub(crate) fn link_time(time: DateTime<Utc>) -> String {
    time.to_rfc3339_opts(SecondsFormat::AutoSi, true)
}

/// `1234567` as `1,234,567`.
pub(crate) fn count(number: u64) -> String {
    let digits = number.to_string();
    let mut out = String::with_capacity(digits.len() + digits.len() / 3);
    for (idx, digit) in digits.chars().enumerate() {
        if idx > 0 && (digits.len() - idx).is_multiple_of(3) {
            out.push(',');
        }
        out.push(digit);
    }
    out
}

/// `path` with `pairs` (those with a value) as its query string, each percent-encoded.
pub(crate) fn link(path: &str, pairs: &[(&str, Option<String>)]) -> String {
    let mut query = form_urlencoded::Serializer::new(String::new());
    let mut any = false;
    for (name, value) in pairs {
        if let Some(value) = value {
            query.append_pair(name, value);
            any = true;
        }
    }
    if !any {
        return path.to_owned();
    }
    format!("{path}?{}", query.finish())
}

/// One path segment, percent-encoded (a control's identifier, say).
pub(crate) fn segment(text: &str) -> String {
    let mut out = String::with_capacity(text.len());
    for byte in text.bytes() {
        if byte.is_ascii_alphanumeric() || matches!(byte, b'-' | b'.' | b'_' | b'~') {
            out.push(char::from(byte));
        } else {
            out.push_str(&format!("%{byte:02X}"));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_have_thousands_separators() {
        assert_eq!(count(0), "0");
        assert_eq!(count(999), "999");
        assert_eq!(count(1000), "1,000");
        assert_eq!(count(10_000_000), "10,000,000");
    }

    #[test]
    fn links_encode_every_value() {
        assert_eq!(
            link(
                "/events",
                &[
                    ("workload", Some("a&b=c <x>".to_owned())),
                    ("target", None),
                    ("before", Some("12".to_owned())),
                ]
            ),
            "/events?workload=a%26b%3Dc+%3Cx%3E&before=12"
        );
        assert_eq!(link("/events", &[("target", None)]), "/events");
        assert_eq!(segment("CC6.1"), "CC6.1");
        assert_eq!(segment("a/b c"), "a%2Fb%20c");
    }
}
