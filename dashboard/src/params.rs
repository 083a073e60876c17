//! The query strings of the dashboard's forms and links, read strictly: a bounded size, only
//! the names a page knows, each at most once, every value checked by parsing it into its type
//! before it goes near SQL. An empty value counts as absent, as a form sends an empty field.

use std::collections::HashMap;

use chrono::{DateTime, Datelike as _, Duration, NaiveDate, NaiveDateTime, TimeZone as _, Utc};

use crate::PageError;

/// The longest query string read; the dashboard's own forms need a fraction of it.
pub(crate) const MAX_QUERY_BYTES: usize = 4096;

/// The longest text filter, in characters: names, reason codes and words of reasons are far
/// shorter.
pub(crate) const MAX_TEXT_CHARS: usize = 200;

/// The longest window a page looks back over: a little over a year.
pub(crate) const MAX_WINDOW_DAYS: i64 = 400;

/// The years a time may fall in: the store's SQL times are nanoseconds from 1970, which end
/// in 2262.
const YEARS: std::ops::RangeInclusive<i32> = 1970..=2200;

/// The parameters of one request, by name.
#[derive(Debug)]
pub(crate) struct Params {
    values: HashMap<&'static str, String>,
}

impl Params {
    /// Reads `raw`, allowing only the names in `allowed`.
    pub(crate) fn parse(raw: Option<&str>, allowed: &[&'static str]) -> Result<Params, PageError> {
        let raw = raw.unwrap_or_default();
        if raw.len() > MAX_QUERY_BYTES {
            return Err(bad(format!(
                "the query string is {} bytes long; at most {MAX_QUERY_BYTES} are read",
                raw.len()
            )));
        }
        let mut values = HashMap::new();
        for (name, value) in form_urlencoded::parse(raw.as_bytes()) {
            let Some(known) = allowed.iter().find(|known| **known == name) else {
                if allowed.is_empty() {
                    return Err(bad(format!(
                        "unknown parameter `{}`; this page takes no parameters",
                        shorten(&name)
                    )));
                }
                return Err(bad(format!(
                    "unknown parameter `{}`; this page takes {}",
                    shorten(&name),
                    allowed
                        .iter()
                        .map(|name| format!("`{name}`"))
                        .collect::<Vec<_>>()
                        .join(", ")
                )));
            };
            if values.contains_key(known) {
                return Err(bad(format!("parameter `{known}` is given more than once")));
            }
            let value = value.trim();
            if !value.is_empty() {
                values.insert(*known, value.to_owned());
            }
        }
        Ok(Params { values })
    }

    /// A text filter: at most [`MAX_TEXT_CHARS`] characters, none of them a control character.
    pub(crate) fn text(&self, name: &str) -> Result<Option<&str>, PageError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        let chars = value.chars().count();
        if chars > MAX_TEXT_CHARS {
            return Err(bad(format!(
                "`{name}` is {chars} characters long; at most {MAX_TEXT_CHARS} are allowed"
            )));
        }
        if value.chars().any(char::is_control) {
            return Err(bad(format!("`{name}` holds a control character")));
        }
        Ok(Some(value))
    }

    /// One of `choices`.
    pub(crate) fn choice(
        &self,
        name: &str,
        choices: &[&'static str],
    ) -> Result<Option<&'static str>, PageError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        match choices.iter().find(|choice| **choice == value.as_str()) {
            Some(choice) => Ok(Some(choice)),
            None => Err(bad(format!(
                "`{name}` is `{}`; expected one of {}",
                shorten(value),
                choices.join(", ")
            ))),
        }
    }

    /// A whole number in `range`.
    pub(crate) fn number(
        &self,
        name: &str,
        range: std::ops::RangeInclusive<i64>,
    ) -> Result<Option<i64>, PageError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        match value.parse::<i64>() {
            Ok(number) if range.contains(&number) => Ok(Some(number)),
            _ => Err(bad(format!(
                "`{name}` is `{}`; expected a whole number from {} to {}",
                shorten(value),
                range.start(),
                range.end()
            ))),
        }
    }

    /// A point in time, UTC: `2026-03-01`, `2026-03-01T14:30` (what a `datetime-local` field
    /// sends), with seconds, or RFC 3339 with an offset.
    pub(crate) fn time(&self, name: &str) -> Result<Option<DateTime<Utc>>, PageError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        parse_time(value)
            .filter(|time| YEARS.contains(&time.year()))
            .map(Some)
            .ok_or_else(|| {
                bad(format!(
                    "`{name}` is `{}`; expected a UTC time from the year {} to {}, such as \
                     `2026-03-01`, `2026-03-01T14:30` or `2026-03-01T14:30:00Z`",
                    shorten(value),
                    YEARS.start(),
                    YEARS.end()
                ))
            })
    }

    /// A window to look back over: a number and `h` or `d` (`24h`, `30d`), at most
    /// [`MAX_WINDOW_DAYS`] days.
    pub(crate) fn window(&self, name: &str) -> Result<Option<Window>, PageError> {
        let Some(value) = self.values.get(name) else {
            return Ok(None);
        };
        Window::parse(value).map(Some).ok_or_else(|| {
            bad(format!(
                "`{name}` is `{}`; expected hours or days such as `24h` or `30d`, from 1h to \
                 {MAX_WINDOW_DAYS}d",
                shorten(value)
            ))
        })
    }
}

/// How far back a page looks, as the user wrote it.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub(crate) struct Window {
    pub(crate) amount: i64,
    pub(crate) days: bool,
}

impl Window {
    pub(crate) const fn days(amount: i64) -> Window {
        Window { amount, days: true }
    }

    fn parse(text: &str) -> Option<Window> {
        let (number, days) = match text.strip_suffix('d') {
            Some(number) => (number, true),
            None => (text.strip_suffix('h')?, false),
        };
        if number.is_empty() || !number.bytes().all(|byte| byte.is_ascii_digit()) {
            return None;
        }
        let amount: i64 = number.parse().ok()?;
        let hours = if days {
            amount.checked_mul(24)?
        } else {
            amount
        };
        (1..=MAX_WINDOW_DAYS * 24)
            .contains(&hours)
            .then_some(Window { amount, days })
    }

    pub(crate) fn duration(self) -> Duration {
        if self.days {
            Duration::days(self.amount)
        } else {
            Duration::hours(self.amount)
        }
    }

    /// As the query string writes it: `30d`.
    pub(crate) fn as_param(self) -> String {
        format!("{}{}", self.amount, if self.days { "d" } else { "h" })
    }

    /// For people: `30 days`.
    pub(crate) fn describe(self) -> String {
        let unit = match (self.days, self.amount) {
            (true, 1) => "day",
            (true, _) => "days",
            (false, 1) => "hour",
            (false, _) => "hours",
        };
        format!("{} {unit}", self.amount)
    }
}

fn parse_time(text: &str) -> Option<DateTime<Utc>> {
    if let Ok(time) = DateTime::parse_from_rfc3339(text) {
        return Some(time.with_timezone(&Utc));
    }
    for format in [
        "%Y-%m-%dT%H:%M",
        "%Y-%m-%dT%H:%M:%S%.f",
        "%Y-%m-%d %H:%M:%S%.f",
    ] {
        if let Ok(time) = NaiveDateTime::parse_from_str(text, format) {
            return Some(Utc.from_utc_datetime(&time));
        }
    }
    let date = NaiveDate::parse_from_str(text, "%Y-%m-%d").ok()?;
    Some(Utc.from_utc_datetime(&date.and_hms_opt(0, 0, 0)?))
}

fn bad(message: String) -> PageError {
    PageError::BadRequest(message)
}

/// A value quoted back in a message: at most 40 characters of it.
fn shorten(value: &str) -> String {
    match value.char_indices().nth(40) {
        Some((end, _)) => format!("{}…", &value[..end]),
        None => value.to_owned(),
    }
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used, reason = "a test fails by panicking")]

    use super::*;

    fn parse(raw: &str) -> Result<Params, PageError> {
        Params::parse(
            Some(raw),
            &["workload", "from", "limit", "window", "decision"],
        )
    }

    fn message(result: Result<impl std::fmt::Debug, PageError>) -> String {
        result.unwrap_err().to_string()
    }

    #[test]
    fn names_are_known_and_given_once_and_empty_values_are_absent() {
        let params = parse("workload=a%27b&from=&limit=20").unwrap();
        assert_eq!(params.text("workload").unwrap(), Some("a'b"));
        assert_eq!(params.time("from").unwrap(), None);
        assert_eq!(params.number("limit", 1..=200).unwrap(), Some(20));
        assert_eq!(
            message(parse("target=x")),
            "unknown parameter `target`; this page takes `workload`, `from`, `limit`, \
             `window`, `decision`"
        );
        assert_eq!(
            message(parse("limit=1&limit=2")),
            "parameter `limit` is given more than once"
        );
        let long = format!("workload={}", "x".repeat(MAX_QUERY_BYTES));
        assert!(message(parse(&long)).contains("at most 4096 are read"));
    }

    #[test]
    fn values_are_checked_by_parsing() {
        let params = parse("limit=201&decision=maybe&from=yesterday&window=0d").unwrap();
        let far = parse("from=2999-01-01").unwrap();
        assert!(message(far.time("from")).contains("from the year 1970 to 2200"));
        assert_eq!(
            message(params.number("limit", 1..=200)),
            "`limit` is `201`; expected a whole number from 1 to 200"
        );
        assert!(message(params.choice("decision", &["allow", "deny"])).contains("allow, deny"));
        assert!(message(params.time("from")).contains("`yesterday`"));
        assert!(message(params.window("window")).contains("from 1h to 400d"));
        let long = format!("workload={}", "é".repeat(MAX_TEXT_CHARS + 1));
        assert!(
            message(parse(&long).unwrap().text("workload"))
                .contains("201 characters long; at most 200")
        );
        assert!(message(parse("workload=a%0Ab").unwrap().text("workload")).contains("control"));
    }

    #[test]
    fn times_are_utc_in_the_forms_browsers_send() {
        let at = |text: &str| parse_time(text).map(|time| time.to_rfc3339());
        assert_eq!(at("2026-03-01").unwrap(), "2026-03-01T00:00:00+00:00");
        assert_eq!(at("2026-03-01T14:30").unwrap(), "2026-03-01T14:30:00+00:00");
        assert_eq!(
            at("2026-03-01T14:30:00+02:00").unwrap(),
            "2026-03-01T12:30:00+00:00"
        );
        assert_eq!(at("2026-02-30"), None);
        assert_eq!(at("2026-03-01'; DROP"), None);
        // What the pages write back, in links and in the form's fields, reads as the same time.
        for text in [
            "2026-12-05T16:48:08.3Z",
            "2026-12-05T16:48:08Z",
            "2026-12-05T16:48:00Z",
        ] {
            let time = parse_time(text).unwrap();
            assert_eq!(parse_time(&crate::format::link_time(time)), Some(time));
            assert_eq!(parse_time(&crate::format::field_time(time)), Some(time));
        }
    }

    #[test]
    fn windows_are_hours_or_days_within_bounds() {
        assert_eq!(Window::parse("30d"), Some(Window::days(30)));
        assert_eq!(
            Window::parse("24h").unwrap().duration(),
            Duration::hours(24)
        );
        assert_eq!(Window::parse("400d").unwrap().describe(), "400 days");
        for bad in [
            "401d",
            "0h",
            "d",
            "-1d",
            "+3d",
            "3w",
            "9999999999999999999d",
        ] {
            assert_eq!(Window::parse(bad), None, "{bad}");
        }
    }
}
