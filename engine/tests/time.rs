//! ISO-8601 durations, date-times and cycles: table-driven valid and invalid inputs, calendar
//! arithmetic, round trips and a no-panic proptest.

use proptest::prelude::*;
use sluice_engine::time::{
    Cycle, IsoDuration, format_date_time, parse_cycle, parse_date_time, parse_duration,
};

const SECOND: i64 = 1_000;
const MINUTE: i64 = 60 * SECOND;
const HOUR: i64 = 60 * MINUTE;
const DAY: i64 = 24 * HOUR;

fn duration(months: i64, days: i64, millis: i64) -> IsoDuration {
    IsoDuration {
        months,
        days,
        millis,
    }
}

fn at(text: &str) -> i64 {
    parse_date_time(text).unwrap_or_else(|error| panic!("'{text}' should parse: {error}"))
}

fn assert_error(
    result: Result<impl std::fmt::Debug, sluice_engine::time::TimeError>,
    text: &str,
    expected: &str,
) {
    match result {
        Ok(value) => panic!("'{text}' should be rejected, got {value:?}"),
        Err(error) => assert!(
            error.message.contains(expected),
            "'{text}': '{}' should contain '{expected}'",
            error.message
        ),
    }
}

#[test]
fn durations() {
    let cases = [
        ("PT10S", duration(0, 0, 10 * SECOND)),
        ("PT0.5S", duration(0, 0, 500)),
        ("PT1.123456S", duration(0, 0, 1_123)),
        ("PT0,25S", duration(0, 0, 250)),
        ("PT1M", duration(0, 0, MINUTE)),
        ("PT2H30M", duration(0, 0, 2 * HOUR + 30 * MINUTE)),
        ("P1D", duration(0, 1, 0)),
        ("P1W", duration(0, 7, 0)),
        ("P2W3D", duration(0, 17, 0)),
        ("P1M", duration(1, 0, 0)),
        ("P1Y", duration(12, 0, 0)),
        (
            "P1Y2M3DT4H5M6.5S",
            duration(14, 3, 4 * HOUR + 5 * MINUTE + 6_500),
        ),
        ("-P1D", duration(0, -1, 0)),
        ("-PT1.5S", duration(0, 0, -1_500)),
        ("+PT1S", duration(0, 0, SECOND)),
        ("pt10s", duration(0, 0, 10 * SECOND)),
        ("PT0S", duration(0, 0, 0)),
        ("PT36H", duration(0, 0, 36 * HOUR)),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_duration(text), Ok(expected), "{text}");
    }
}

#[test]
fn invalid_durations() {
    let cases = [
        ("", "expected 'P' at the start"),
        ("10S", "expected 'P' at the start"),
        ("P", "no components"),
        ("PT", "'T' must be followed by"),
        ("P1DT", "'T' must be followed by"),
        ("P1S", "unexpected 'S' in the date part"),
        ("PT1D", "unexpected 'D' in the time part"),
        ("P1D1Y", "unexpected 'Y' in the date part"),
        ("PT1S1M", "unexpected 'M' in the time part"),
        ("P1.5D", "only seconds may have a fraction"),
        ("PT1.5M", "only seconds may have a fraction"),
        ("PT.5S", "is not a number"),
        ("PT5.S", "is not a number"),
        ("P1", "has no unit letter"),
        ("PD", "expected a number before 'D'"),
        ("P-1D", "expected a number before '-'"),
        ("P99999999999999999999D", "is not a number"),
        ("P2000000000000000000W", "too large"),
        ("PT1.1234567890S", "is not a number"),
        ("garbage", "invalid ISO-8601 duration 'garbage'"),
    ];
    for (text, expected) in cases {
        assert_error(parse_duration(text), text, expected);
    }
}

#[test]
fn date_times() {
    let cases = [
        ("1970-01-01T00:00:00Z", 0),
        ("1970-01-01T00:00:00.001Z", 1),
        ("1970-01-01T00:00:01.5Z", 1_500),
        ("1970-01-01T00:00:00.123456789Z", 123),
        ("1970-01-01T00:00Z", 0),
        ("1970-01-01t00:00:00z", 0),
        ("1970-01-01T01:00:00+01:00", 0),
        ("1970-01-01T01:00:00+0100", 0),
        ("1970-01-01T01:00:00+01", 0),
        ("1969-12-31T18:30:00-0530", 0),
        ("1969-12-31T23:59:59.999Z", -1),
        ("2000-03-01T00:00:00Z", 951_868_800_000),
        ("2024-02-29T12:00:00Z", 1_709_208_000_000),
        ("2026-12-05T10:15:30Z", 1_796_465_730_000),
        ("2026-12-05T10:15:30.123Z", 1_796_465_730_123),
        ("2026-12-05T11:15:30+01:00", 1_796_465_730_000),
        ("2026-12-05T10:15:30Z[UTC]", 1_796_465_730_000),
        ("2026-12-05T10:15:30@UTC", 1_796_465_730_000),
        ("0000-01-01T00:00:00Z", -62_167_219_200_000),
        ("9999-12-31T23:59:59.999Z", 253_402_300_799_999),
    ];
    for (text, expected) in cases {
        assert_eq!(parse_date_time(text), Ok(expected), "{text}");
    }
}

#[test]
fn invalid_date_times() {
    let cases = [
        (
            "2026-12-05T10:15:30",
            "has no offset; add Z for UTC or an offset",
        ),
        (
            "2026-12-05T10:15:30@Europe/Berlin",
            "zone ids are not supported; use an offset such as +01:00",
        ),
        (
            "2026-12-05T10:15:30[Europe/Berlin]",
            "zone ids are not supported",
        ),
        (
            "2026-12-05T10:15:30+01:00[Europe/Berlin]",
            "zone ids are not supported",
        ),
        (
            "2026-02-29T00:00:00Z",
            "day 29 does not exist in 2026-02, which has 28 days",
        ),
        ("1900-02-29T00:00:00Z", "day 29 does not exist"),
        ("2026-04-31T00:00:00Z", "day 31 does not exist"),
        ("2026-01-00T00:00:00Z", "day 0 does not exist"),
        ("2026-13-01T00:00:00Z", "the month must be 01 to 12"),
        ("2026-00-01T00:00:00Z", "the month must be 01 to 12"),
        ("2026-01-01T24:00:00Z", "the time must be within"),
        ("2026-01-01T23:60:00Z", "the time must be within"),
        ("2026-01-01T23:59:60Z", "the time must be within"),
        (
            "2026-01-01T10:00:00.Z",
            "the fraction of a second needs 1 to 9 digits",
        ),
        (
            "2026-01-01T10:00:00.1234567890Z",
            "the fraction of a second needs 1 to 9 digits",
        ),
        ("2026-01-01T10:00:00+19:00", "expected Z or an offset"),
        ("2026-01-01T10:00:00+01:60", "expected Z or an offset"),
        ("2026-01-01T10:00:00+1", "expected Z or an offset"),
        ("2026-01-01T10:00:00ZZ", "expected Z or an offset"),
        ("2026-01-01 10:00:00Z", "expected YYYY-MM-DDTHH:MM:SS"),
        ("2026-1-01T10:00:00Z", "expected YYYY-MM-DDTHH:MM:SS"),
        ("26-01-01T10:00:00Z", "expected YYYY-MM-DDTHH:MM:SS"),
        ("2026-01-01", "expected YYYY-MM-DDTHH:MM:SS"),
        ("2026-01-01T10", "expected YYYY-MM-DDTHH:MM:SS"),
        ("2026-01-01T10:00:0Z", "expected YYYY-MM-DDTHH:MM:SS"),
        ("", "invalid ISO-8601 date-time ''"),
    ];
    for (text, expected) in cases {
        assert_error(parse_date_time(text), text, expected);
    }
}

#[test]
fn leap_years() {
    for (year, leap) in [
        (2024, true),
        (2026, false),
        (2000, true),
        (1900, false),
        (2100, false),
        (2400, true),
    ] {
        let text = format!("{year}-02-29T00:00:00Z");
        assert_eq!(parse_date_time(&text).is_ok(), leap, "{text}");
    }
}

#[test]
fn adding_months_clamps_to_the_month_end() {
    let cases = [
        (
            "2026-01-31T10:00:00Z",
            duration(1, 0, 0),
            "2026-02-28T10:00:00.000Z",
        ),
        (
            "2024-01-31T10:00:00Z",
            duration(1, 0, 0),
            "2024-02-29T10:00:00.000Z",
        ),
        (
            "2024-03-31T00:00:00Z",
            duration(-1, 0, 0),
            "2024-02-29T00:00:00.000Z",
        ),
        (
            "2026-03-31T00:00:00Z",
            duration(1, 0, 0),
            "2026-04-30T00:00:00.000Z",
        ),
        (
            "2026-12-15T00:00:00Z",
            duration(1, 0, 0),
            "2027-01-15T00:00:00.000Z",
        ),
        (
            "2026-01-15T00:00:00Z",
            duration(-1, 0, 0),
            "2025-12-15T00:00:00.000Z",
        ),
        (
            "2024-02-29T00:00:00Z",
            duration(12, 0, 0),
            "2025-02-28T00:00:00.000Z",
        ),
        (
            "2024-02-29T00:00:00Z",
            duration(48, 0, 0),
            "2028-02-29T00:00:00.000Z",
        ),
        // Months first, then days, then the exact part.
        (
            "2026-01-31T00:00:00Z",
            duration(1, 1, 0),
            "2026-03-01T00:00:00.000Z",
        ),
        (
            "2026-01-31T23:00:00Z",
            duration(1, 0, 2 * HOUR),
            "2026-03-01T01:00:00.000Z",
        ),
        (
            "2026-12-05T10:15:30Z",
            duration(0, 1, 500),
            "2026-12-06T10:15:30.500Z",
        ),
        (
            "1969-12-31T23:59:59.999Z",
            duration(2, 0, 0),
            "1970-02-28T23:59:59.999Z",
        ),
        (
            "1969-01-31T00:00:00Z",
            duration(1, 0, 0),
            "1969-02-28T00:00:00.000Z",
        ),
    ];
    for (start, duration, expected) in cases {
        assert_eq!(
            format_date_time(duration.add_to(at(start))),
            expected,
            "{start} + {duration:?}"
        );
    }
}

#[test]
fn adding_saturates_instead_of_overflowing() {
    assert_eq!(duration(0, 0, 1).add_to(i64::MAX), i64::MAX);
    assert_eq!(duration(0, -1, 0).add_to(i64::MIN), i64::MIN);
    assert_eq!(duration(i64::MAX, i64::MAX, i64::MAX).add_to(0), i64::MAX);
    assert_eq!(duration(i64::MIN, 0, 0).add_to(0), i64::MIN);
    assert_eq!(duration(1, 0, 0).add_to(i64::MAX), i64::MAX);
}

#[test]
fn format_round_trips() {
    for text in [
        "1970-01-01T00:00:00.000Z",
        "2024-02-29T23:59:59.999Z",
        "2026-12-05T10:15:30.123Z",
        "1969-07-20T20:17:40.000Z",
        "0001-01-01T00:00:00.000Z",
        "9999-12-31T23:59:59.999Z",
    ] {
        assert_eq!(format_date_time(at(text)), text);
    }
    assert_eq!(format_date_time(i64::MAX), "+292278994-08-17T07:12:55.807Z");
    assert_eq!(format_date_time(i64::MIN), "-292275055-05-16T16:47:04.192Z");
}

#[test]
fn cycles() {
    let cases = [
        ("R5/PT10S", Some(5), None, duration(0, 0, 10 * SECOND)),
        ("R/PT1M", None, None, duration(0, 0, MINUTE)),
        ("R/P1D", None, None, duration(0, 1, 0)),
        ("R1/P1M", Some(1), None, duration(1, 0, 0)),
        (
            "R3/2026-12-05T10:00:00Z/PT1H",
            Some(3),
            Some(1_796_464_800_000),
            duration(0, 0, HOUR),
        ),
        (
            "R/2026-12-05T11:00:00+01:00/P1D",
            None,
            Some(1_796_464_800_000),
            duration(0, 1, 0),
        ),
    ];
    for (text, repetitions, start_ms, interval) in cases {
        let expected = Cycle {
            repetitions,
            start_ms,
            interval,
        };
        assert_eq!(parse_cycle(text), Ok(expected), "{text}");
    }
}

#[test]
fn invalid_cycles() {
    let cases = [
        ("0 0 9-17 * * MON-FRI", "cron cycles are not supported"),
        ("0 */5 * * * ?", "cron cycles are not supported"),
        ("PT10S", "expected R<count>/<duration>"),
        ("R", "expected R<count>/<duration> or"),
        ("R5", "expected R<count>/<duration> or"),
        ("R5/", "invalid ISO-8601 duration ''"),
        ("R0/PT1S", "R0 never fires"),
        ("R-1/PT1S", "must be a whole number"),
        ("Rx/PT1S", "must be a whole number"),
        ("R/PT0S", "must be positive"),
        ("R/-PT1S", "must be positive"),
        (
            "R/PT1H/2026-12-05T10:00:00Z",
            "an end date-time after the interval is not supported",
        ),
        ("R/2026-12-05T10:00:00/PT1H", "has no offset"),
        (
            "R/2026-12-05T10:00:00Z/PT1H/PT1H",
            "expected R<count>/<duration> or",
        ),
        ("R/P1X", "unexpected 'X'"),
    ];
    for (text, expected) in cases {
        assert_error(parse_cycle(text), text, expected);
    }
}

#[test]
fn driving_a_cycle() {
    let now = at("2026-01-31T00:00:00Z");
    let monthly = parse_cycle("R3/P1M").expect("valid cycle");
    let first = monthly.first_due_ms(now);
    assert_eq!(format_date_time(first), "2026-02-28T00:00:00.000Z");
    let second = monthly.next_due_ms(first);
    assert_eq!(format_date_time(second), "2026-03-28T00:00:00.000Z");

    let after_one = monthly.remaining_after_fire().expect("two firings remain");
    assert_eq!(after_one.repetitions, Some(2));
    let after_two = after_one
        .remaining_after_fire()
        .expect("one firing remains");
    assert_eq!(after_two.repetitions, Some(1));
    assert_eq!(after_two.remaining_after_fire(), None);

    let started = parse_cycle("R2/2026-12-05T10:00:00Z/PT1H").expect("valid cycle");
    assert_eq!(started.first_due_ms(now), at("2026-12-05T10:00:00Z"));
    assert_eq!(
        started.next_due_ms(started.first_due_ms(now)),
        at("2026-12-05T11:00:00Z")
    );
    let rest = started.remaining_after_fire().expect("one firing remains");
    assert_eq!(rest.start_ms, None);

    let forever = parse_cycle("R/PT10S").expect("valid cycle");
    assert_eq!(forever.first_due_ms(0), 10 * SECOND);
    assert_eq!(forever.remaining_after_fire(), Some(forever));
}

#[test]
fn long_texts_are_rejected() {
    let long = format!("PT{}S", "1".repeat(300));
    assert_error(
        parse_duration(&long),
        "long duration",
        "longer than 256 bytes",
    );
    assert_error(
        parse_date_time(&"9".repeat(300)),
        "long date-time",
        "longer than 256 bytes",
    );
    assert_error(
        parse_cycle(&"R".repeat(300)),
        "long cycle",
        "longer than 256 bytes",
    );
}

proptest! {
    #![proptest_config(ProptestConfig::with_cases(2000))]

    #[test]
    fn random_text_never_panics(text in "\\PC{0,40}") {
        let _ = parse_duration(&text);
        let _ = parse_date_time(&text);
        let _ = parse_cycle(&text);
    }

    #[test]
    fn time_shaped_text_never_panics(text in "[-+RPTWYMDHSZ0-9:.,/@\\[\\] ]{0,40}") {
        let _ = parse_duration(&text);
        let _ = parse_date_time(&text);
        let _ = parse_cycle(&text);
    }

    #[test]
    fn format_then_parse_round_trips(ms in -62_167_219_200_000_i64..253_402_300_800_000) {
        prop_assert_eq!(parse_date_time(&format_date_time(ms)), Ok(ms));
    }

    #[test]
    fn durations_never_panic_when_added(
        months in any::<i64>(), days in any::<i64>(), millis in any::<i64>(), start in any::<i64>()
    ) {
        let _ = duration(months, days, millis).add_to(start);
    }

    #[test]
    fn exact_durations_add_like_integers(days in -100_000_i64..100_000, millis in -DAY..DAY, start in -1_i64 << 50..1 << 50) {
        prop_assert_eq!(duration(0, days, millis).add_to(start), start + days * DAY + millis);
    }
}
