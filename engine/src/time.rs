//! ISO-8601 durations, date-times and repeating intervals for timers.
//!
//! Everything here is a pure function of its arguments: the engine passes the current time in
//! (`now_ms`) and gets due times back, all as milliseconds since the Unix epoch in UTC.
//!
//! - [`parse_duration`]: `PT10S`, `P1DT2H`, `P1W`, `PT0.5S`, `-P1D` (`timeDuration`).
//! - [`parse_date_time`]: `2026-12-05T10:15:30Z`, `2026-12-05T10:15:30.123+01:00`
//!   (`timeDate`). Zone ids such as `[Europe/Berlin]` are rejected: resolving them needs the
//!   tz database, and its version would change results between brokers.
//! - [`parse_cycle`]: `R5/PT10S`, `R/PT1M`, `R3/2026-12-05T10:00:00Z/PT1H` (`timeCycle`).
//!   Drive a cycle with [`Cycle::first_due_ms`], then [`Cycle::next_due_ms`] from the previous
//!   due time (not from the firing time, so a late firing does not shift the schedule), and
//!   [`Cycle::remaining_after_fire`] to learn whether another firing follows.
//! - [`format_date_time`]: RFC 3339 in UTC with milliseconds, for records.
//!
//! Calendar arithmetic uses the proleptic Gregorian calendar in UTC; months are added first
//! (clamping the day to the month's end, so Jan 31 + `P1M` is Feb 28 or 29), then days, then the
//! exact part. Fractions below a millisecond are truncated.

use thiserror::Error;

/// Why a time text could not be parsed.
#[derive(Debug, Clone, PartialEq, Eq, Error)]
#[error("{message}")]
pub struct TimeError {
    pub message: String,
}

/// `P1Y2M3DT4H5M6.5S`: calendar part and exact part kept apart.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct IsoDuration {
    pub months: i64,
    pub days: i64,
    pub millis: i64,
}

/// `R5/PT10S`, `R/PT1M`, `R3/2026-01-01T00:00:00Z/PT1H`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Cycle {
    /// `None` repeats forever.
    pub repetitions: Option<u32>,
    /// The first firing, when the cycle names one.
    pub start_ms: Option<i64>,
    pub interval: IsoDuration,
}

const MS_PER_SECOND: i64 = 1_000;
const MS_PER_MINUTE: i64 = 60 * MS_PER_SECOND;
const MS_PER_HOUR: i64 = 60 * MS_PER_MINUTE;
const MS_PER_DAY: i64 = 24 * MS_PER_HOUR;

/// Longest text any parser here looks at; longer texts are rejected before parsing.
const TEXT_BYTES_MAX: usize = 256;

fn error(kind: &str, text: &str, reason: impl std::fmt::Display) -> TimeError {
    let shown: String = text.chars().take(80).collect();
    let ellipsis = if shown.len() < text.len() { "..." } else { "" };
    TimeError {
        message: format!("invalid ISO-8601 {kind} '{shown}{ellipsis}': {reason}"),
    }
}

fn check_length(kind: &str, text: &str) -> Result<(), TimeError> {
    if text.len() > TEXT_BYTES_MAX {
        return Err(error(
            kind,
            text,
            format!("longer than {TEXT_BYTES_MAX} bytes"),
        ));
    }
    Ok(())
}

/// Parses `PnYnMnWnDTnHnMnS` (each part optional but at least one present; only seconds may
/// have a fraction), with an optional leading `-` that negates every part. Letters may be lower
/// case.
pub fn parse_duration(text: &str) -> Result<IsoDuration, TimeError> {
    const KIND: &str = "duration";
    check_length(KIND, text)?;
    let fail = |reason: &str| {
        error(
            KIND,
            text,
            format!("{reason}; write e.g. PT10S, P1DT2H or P1W"),
        )
    };
    let (negative, unsigned) = match text.strip_prefix('-') {
        Some(rest) => (true, rest),
        None => (false, text.strip_prefix('+').unwrap_or(text)),
    };
    let Some(body) = unsigned
        .strip_prefix('P')
        .or_else(|| unsigned.strip_prefix('p'))
    else {
        return Err(fail("expected 'P' at the start"));
    };
    let (date_part, time_part) = match body.find(['T', 't']) {
        Some(t) => (&body[..t], Some(&body[t + 1..])),
        None => (body, None),
    };
    let mut duration = IsoDuration {
        months: 0,
        days: 0,
        millis: 0,
    };
    let mut components = 0;
    let overflow = || fail("a component is too large");
    // Units in the order they must appear.
    let mut units: &[char] = &['Y', 'M', 'W', 'D'];
    for (number, unit) in components_of(date_part).map_err(|reason| fail(&reason))? {
        let Some(position) = units.iter().position(|u| *u == unit) else {
            return Err(fail(&format!("unexpected '{unit}' in the date part")));
        };
        units = &units[position + 1..];
        let Number::Whole(n) = number else {
            return Err(fail("only seconds may have a fraction"));
        };
        components += 1;
        let (field, factor) = match unit {
            'Y' => (&mut duration.months, 12),
            'M' => (&mut duration.months, 1),
            'W' => (&mut duration.days, 7),
            _ => (&mut duration.days, 1),
        };
        *field = n
            .checked_mul(factor)
            .and_then(|n| field.checked_add(n))
            .ok_or_else(overflow)?;
    }
    if let Some(time_part) = time_part {
        if time_part.is_empty() {
            return Err(fail("'T' must be followed by hours, minutes or seconds"));
        }
        let mut units: &[char] = &['H', 'M', 'S'];
        for (number, unit) in components_of(time_part).map_err(|reason| fail(&reason))? {
            let Some(position) = units.iter().position(|u| *u == unit) else {
                return Err(fail(&format!("unexpected '{unit}' in the time part")));
            };
            units = &units[position + 1..];
            components += 1;
            let millis = match (number, unit) {
                (Number::Whole(n), 'H') => n.checked_mul(MS_PER_HOUR),
                (Number::Whole(n), 'M') => n.checked_mul(MS_PER_MINUTE),
                (Number::Whole(n), _) => n.checked_mul(MS_PER_SECOND),
                (Number::Seconds(ms), 'S') => Some(ms),
                (Number::Seconds(_), _) => {
                    return Err(fail("only seconds may have a fraction"));
                }
            };
            duration.millis = millis
                .and_then(|ms| duration.millis.checked_add(ms))
                .ok_or_else(overflow)?;
        }
    }
    if components == 0 {
        return Err(fail("no components"));
    }
    if negative {
        duration = IsoDuration {
            months: -duration.months,
            days: -duration.days,
            millis: -duration.millis,
        };
    }
    Ok(duration)
}

enum Number {
    Whole(i64),
    /// A number with a fraction, already in milliseconds (only valid for seconds).
    Seconds(i64),
}

/// Splits `1Y2M` into `(1, 'Y'), (2, 'M')`, units upper-cased.
fn components_of(part: &str) -> Result<Vec<(Number, char)>, String> {
    let mut components = Vec::new();
    let mut rest = part;
    while !rest.is_empty() {
        let digits = rest
            .find(|c: char| !c.is_ascii_digit() && c != '.' && c != ',')
            .ok_or_else(|| format!("'{rest}' has no unit letter"))?;
        let (number, after) = rest.split_at(digits);
        let mut chars = after.chars();
        let unit = chars.next().map_or('?', |c| c.to_ascii_uppercase());
        rest = chars.as_str();
        if number.is_empty() {
            return Err(format!("expected a number before '{unit}'"));
        }
        components.push((parse_component(number, unit)?, unit));
    }
    Ok(components)
}

fn parse_component(number: &str, unit: char) -> Result<Number, String> {
    let bad = || format!("'{number}{unit}' is not a number followed by a unit");
    match number.split_once(['.', ',']) {
        None => number.parse().map(Number::Whole).map_err(|_| bad()),
        Some((whole, fraction)) => {
            if whole.is_empty()
                || fraction.is_empty()
                || !fraction.bytes().all(|b| b.is_ascii_digit())
                || fraction.len() > 9
            {
                return Err(bad());
            }
            let seconds: i64 = whole.parse().map_err(|_| bad())?;
            let millis = fraction_millis(fraction);
            seconds
                .checked_mul(MS_PER_SECOND)
                .and_then(|ms| ms.checked_add(millis))
                .map(Number::Seconds)
                .ok_or_else(bad)
        }
    }
}

/// The whole milliseconds of a decimal fraction given by its digits (`"5"` is 500).
fn fraction_millis(fraction: &str) -> i64 {
    fraction
        .bytes()
        .chain(std::iter::repeat(b'0'))
        .take(3)
        .fold(0, |ms, digit| ms * 10 + i64::from(digit - b'0'))
}

/// Parses `YYYY-MM-DDTHH:MM[:SS[.fff]]` followed by `Z`, `±HH:MM`, `±HHMM` or `±HH`, into
/// milliseconds since the epoch.
pub fn parse_date_time(text: &str) -> Result<i64, TimeError> {
    const KIND: &str = "date-time";
    check_length(KIND, text)?;
    let fail = |reason: &str| error(KIND, text, reason);
    // A zone id after the offset, or instead of it.
    let (main, zone) = match text.find(['[', '@']) {
        Some(at) => (&text[..at], Some(&text[at..])),
        None => (text, None),
    };
    let zone_is_utc = match zone {
        None => false,
        Some(zone) => {
            let id = zone
                .trim_start_matches('@')
                .trim_start_matches('[')
                .trim_end_matches(']');
            if !matches!(id, "UTC" | "Z" | "GMT" | "Etc/UTC" | "Etc/GMT") {
                return Err(fail(
                    "zone ids are not supported; use an offset such as +01:00 or Z",
                ));
            }
            true
        }
    };
    let bytes = main.as_bytes();
    let digits = |from: usize, count: usize| -> Option<u32> {
        let slice = bytes.get(from..from + count)?;
        slice
            .iter()
            .all(u8::is_ascii_digit)
            .then(|| slice.iter().fold(0, |n, d| n * 10 + u32::from(d - b'0')))
    };
    let separator =
        |at: usize, expected: &[u8]| bytes.get(at).is_some_and(|b| expected.contains(b));
    let shape = "expected YYYY-MM-DDTHH:MM:SS followed by Z or an offset such as +01:00";
    let (Some(year), Some(month), Some(day)) = (digits(0, 4), digits(5, 2), digits(8, 2)) else {
        return Err(fail(shape));
    };
    if !separator(4, b"-") || !separator(7, b"-") || !separator(10, b"Tt") {
        return Err(fail(shape));
    }
    let (Some(hour), Some(minute)) = (digits(11, 2), digits(14, 2)) else {
        return Err(fail(shape));
    };
    if !separator(13, b":") {
        return Err(fail(shape));
    }
    let mut at = 16;
    let mut second = 0;
    let mut millis = 0;
    if separator(at, b":") {
        second = digits(at + 1, 2).ok_or_else(|| fail(shape))?;
        at += 3;
        if separator(at, b".,") {
            let fraction_len = bytes[at + 1..]
                .iter()
                .take_while(|b| b.is_ascii_digit())
                .count();
            if fraction_len == 0 || fraction_len > 9 {
                return Err(fail("the fraction of a second needs 1 to 9 digits"));
            }
            millis = fraction_millis(&main[at + 1..at + 1 + fraction_len]);
            at += 1 + fraction_len;
        }
    }
    let offset_ms = match &main[at..] {
        "" if zone_is_utc => 0,
        "" => {
            return Err(fail(
                "the date-time has no offset; add Z for UTC or an offset such as +01:00",
            ));
        }
        "Z" | "z" => 0,
        offset => parse_offset(offset).ok_or_else(|| {
            fail("expected Z or an offset such as +01:00, -0530 or +02 after the time")
        })?,
    };
    if !(1..=12).contains(&month) {
        return Err(fail("the month must be 01 to 12"));
    }
    let last_day = days_in_month(i128::from(year), month);
    if day == 0 || day > last_day {
        return Err(fail(&format!(
            "day {day} does not exist in {year:04}-{month:02}, which has {last_day} days"
        )));
    }
    if hour > 23 || minute > 59 || second > 59 {
        return Err(fail("the time must be within 00:00:00 and 23:59:59"));
    }
    let days = days_from_civil(i128::from(year), month, day);
    let ms = days * i128::from(MS_PER_DAY)
        + i128::from(hour) * i128::from(MS_PER_HOUR)
        + i128::from(minute) * i128::from(MS_PER_MINUTE)
        + i128::from(second) * i128::from(MS_PER_SECOND)
        + i128::from(millis)
        - i128::from(offset_ms);
    i64::try_from(ms).map_err(|_| fail("out of range"))
}

/// `+01:00`, `-0530` or `+02` as milliseconds east of UTC; at most 18 hours, as in Java.
fn parse_offset(offset: &str) -> Option<i64> {
    let (sign, rest) = match offset.as_bytes().first()? {
        b'+' => (1, &offset[1..]),
        b'-' => (-1, &offset[1..]),
        _ => return None,
    };
    let two = |part: &str| -> Option<i64> {
        (part.len() == 2 && part.bytes().all(|b| b.is_ascii_digit()))
            .then(|| part.parse().ok())
            .flatten()
    };
    let (hours, minutes) = match rest.len() {
        2 => (two(rest)?, 0),
        4 => (two(&rest[..2])?, two(&rest[2..])?),
        5 if rest.as_bytes()[2] == b':' => (two(&rest[..2])?, two(&rest[3..])?),
        _ => return None,
    };
    if minutes > 59 || hours * 60 + minutes > 18 * 60 {
        return None;
    }
    Some(sign * (hours * MS_PER_HOUR + minutes * MS_PER_MINUTE))
}

/// Parses `R[n]/<duration>` or `R[n]/<start date-time>/<duration>`. `R` without a count
/// repeats forever; the interval must be positive.
pub fn parse_cycle(text: &str) -> Result<Cycle, TimeError> {
    const KIND: &str = "cycle";
    check_length(KIND, text)?;
    let fail = |reason: &str| error(KIND, text, reason);
    let Some(rest) = text.strip_prefix(['R', 'r']) else {
        if text.contains(char::is_whitespace) || text.contains(['*', '?']) {
            return Err(fail(
                "cron cycles are not supported; use an ISO-8601 repeating interval such as R/PT1H",
            ));
        }
        return Err(fail("expected R<count>/<duration>, e.g. R5/PT10S or R/P1D"));
    };
    let mut parts = rest.split('/');
    let count = parts.next().unwrap_or_default();
    let repetitions = if count.is_empty() {
        None
    } else {
        let count: u32 = count
            .parse()
            .map_err(|_| fail("the repetition count after 'R' must be a whole number"))?;
        if count == 0 {
            return Err(fail(
                "R0 never fires; use R1 or more, or R/ to repeat forever",
            ));
        }
        Some(count)
    };
    let parts: Vec<&str> = parts.collect();
    let (start_ms, interval_text) = match parts.as_slice() {
        [interval] => (None, *interval),
        [start, interval] if !start.starts_with(['P', 'p', '-']) => {
            let start = parse_date_time(start).map_err(|e| fail(&e.message))?;
            (Some(start), *interval)
        }
        [_, _] => {
            return Err(fail(
                "an end date-time after the interval is not supported; \
                 use R<count>/<start>/<interval>",
            ));
        }
        _ => {
            return Err(fail(
                "expected R<count>/<duration> or R<count>/<start>/<duration>",
            ));
        }
    };
    let interval = parse_duration(interval_text).map_err(|e| fail(&e.message))?;
    let IsoDuration {
        months,
        days,
        millis,
    } = interval;
    if months < 0 || days < 0 || millis < 0 || (months, days, millis) == (0, 0, 0) {
        return Err(fail("the interval of a cycle must be positive"));
    }
    Ok(Cycle {
        repetitions,
        start_ms,
        interval,
    })
}

impl Cycle {
    /// When the first firing is due: the start when the cycle names one (even if it has
    /// passed, so the engine fires at once), else one interval after `now_ms`.
    #[must_use]
    pub fn first_due_ms(&self, now_ms: i64) -> i64 {
        self.start_ms
            .unwrap_or_else(|| self.interval.add_to(now_ms))
    }

    /// When the firing after the one due at `previous_due_ms` is due.
    #[must_use]
    pub fn next_due_ms(&self, previous_due_ms: i64) -> i64 {
        self.interval.add_to(previous_due_ms)
    }

    /// The cycle left after one firing, `None` when that firing was the last. The remaining
    /// cycle has no start: follow it with [`Cycle::next_due_ms`] from the last due time.
    #[must_use]
    pub fn remaining_after_fire(&self) -> Option<Cycle> {
        let repetitions = match self.repetitions {
            None => None,
            Some(count) if count <= 1 => return None,
            Some(count) => Some(count - 1),
        };
        Some(Cycle {
            repetitions,
            start_ms: None,
            interval: self.interval,
        })
    }
}

impl IsoDuration {
    /// `epoch_ms` plus this duration (months and days on the UTC calendar), saturating at the
    /// ends of `i64`.
    #[must_use]
    pub fn add_to(&self, epoch_ms: i64) -> i64 {
        let day_ms = i128::from(MS_PER_DAY);
        let mut ms = i128::from(epoch_ms);
        if self.months != 0 {
            let (year, month, day) = civil_from_days(ms.div_euclid(day_ms));
            let months = year * 12 + i128::from(month) - 1 + i128::from(self.months);
            let (year, month) = (months.div_euclid(12), month_of(months.rem_euclid(12)));
            let day = day.min(days_in_month(year, month));
            ms = days_from_civil(year, month, day) * day_ms + ms.rem_euclid(day_ms);
        }
        ms += i128::from(self.days) * day_ms + i128::from(self.millis);
        i64::try_from(ms).unwrap_or(if ms < 0 { i64::MIN } else { i64::MAX })
    }
}

/// The month number (1 to 12) for a remainder 0 to 11.
fn month_of(remainder: i128) -> u32 {
    u32::try_from(remainder + 1).unwrap_or(1)
}

/// Formats as RFC 3339 in UTC with milliseconds: `2026-12-05T10:15:30.123Z`. Years outside
/// 0000 to 9999 get a sign, as in Java.
#[must_use]
pub fn format_date_time(epoch_ms: i64) -> String {
    let ms = i128::from(epoch_ms);
    let day_ms = i128::from(MS_PER_DAY);
    let (year, month, day) = civil_from_days(ms.div_euclid(day_ms));
    let of_day = ms.rem_euclid(day_ms);
    let hour = of_day / i128::from(MS_PER_HOUR);
    let minute = of_day / i128::from(MS_PER_MINUTE) % 60;
    let second = of_day / i128::from(MS_PER_SECOND) % 60;
    let millis = of_day % 1000;
    let year = match year {
        0..=9999 => format!("{year:04}"),
        10_000.. => format!("+{year}"),
        _ => format!("-{:04}", -year),
    };
    format!("{year}-{month:02}-{day:02}T{hour:02}:{minute:02}:{second:02}.{millis:03}Z")
}

fn is_leap_year(year: i128) -> bool {
    year % 4 == 0 && (year % 100 != 0 || year % 400 == 0)
}

fn days_in_month(year: i128, month: u32) -> u32 {
    match month {
        2 if is_leap_year(year) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (Howard Hinnant's `days_from_civil`).
fn days_from_civil(year: i128, month: u32, day: u32) -> i128 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let year_of_era = year - era * 400;
    let month = i128::from(month);
    let day_of_year =
        (153 * (if month > 2 { month - 3 } else { month + 9 }) + 2) / 5 + i128::from(day) - 1;
    let day_of_era = year_of_era * 365 + year_of_era / 4 - year_of_era / 100 + day_of_year;
    era * 146_097 + day_of_era - 719_468
}

/// The proleptic Gregorian date of a day count since 1970-01-01 (`civil_from_days`).
fn civil_from_days(days: i128) -> (i128, u32, u32) {
    let days = days + 719_468;
    let era = days.div_euclid(146_097);
    let day_of_era = days - era * 146_097;
    let year_of_era =
        (day_of_era - day_of_era / 1460 + day_of_era / 36_524 - day_of_era / 146_096) / 365;
    let day_of_year = day_of_era - (365 * year_of_era + year_of_era / 4 - year_of_era / 100);
    let shifted_month = (5 * day_of_year + 2) / 153;
    let day = day_of_year - (153 * shifted_month + 2) / 5 + 1;
    let month = if shifted_month < 10 {
        shifted_month + 3
    } else {
        shifted_month - 9
    };
    let year = year_of_era + era * 400 + i128::from(month <= 2);
    (
        year,
        u32::try_from(month).unwrap_or(1),
        u32::try_from(day).unwrap_or(1),
    )
}
