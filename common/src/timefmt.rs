//! Timestamps: Unix epoch milliseconds in records, RFC 3339 (UTC, millisecond
//! precision) for people.

use time::OffsetDateTime;
use time::format_description::well_known::Rfc3339;

/// Milliseconds since the Unix epoch, now.
pub fn now_ms() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_millis() as i64)
        .unwrap_or(0)
}

/// `2026-11-25T14:01:34.123Z`. Out-of-range values are clamped to the supported years.
pub fn format_ms(ms: i64) -> String {
    let nanos = (ms as i128) * 1_000_000;
    let t = OffsetDateTime::from_unix_timestamp_nanos(nanos).unwrap_or(if ms < 0 {
        OffsetDateTime::UNIX_EPOCH
    } else {
        OffsetDateTime::UNIX_EPOCH + time::Duration::days(365 * 8000)
    });
    let (y, mo, d) = (t.year(), t.month() as u8, t.day());
    format!(
        "{y:04}-{mo:02}-{d:02}T{:02}:{:02}:{:02}.{:03}Z",
        t.hour(),
        t.minute(),
        t.second(),
        t.millisecond()
    )
}

/// Parse RFC 3339 (any offset) or a plain number of epoch milliseconds.
pub fn parse_ms(s: &str) -> Result<i64, String> {
    let s = s.trim();
    if let Ok(ms) = s.parse::<i64>() {
        return Ok(ms);
    }
    if let Some(ms) = parse_plain_rfc3339(s.as_bytes()) {
        return Ok(ms);
    }
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            format!(
                "`{s}` is not a time: use RFC 3339 (2026-12-04T10:00:00Z) or epoch milliseconds"
            )
        })
}

/// The common shape `YYYY-MM-DDTHH:MM:SS[.fraction](Z|±HH:MM)` read directly
/// (a JSON log line's time is parsed once per line); `None` for anything else,
/// which [`parse_ms`] leaves to the `time` crate. Milliseconds are truncated
/// toward zero, as there.
fn parse_plain_rfc3339(b: &[u8]) -> Option<i64> {
    fn num(b: &[u8]) -> Option<i64> {
        b.iter().try_fold(0i64, |n, c| {
            c.is_ascii_digit().then(|| n * 10 + i64::from(c - b'0'))
        })
    }
    if b.len() < 20
        || b[4] != b'-'
        || b[7] != b'-'
        || b[10] != b'T'
        || b[13] != b':'
        || b[16] != b':'
    {
        return None;
    }
    let (y, mo, d) = (num(&b[0..4])?, num(&b[5..7])?, num(&b[8..10])?);
    let (h, mi, sec) = (num(&b[11..13])?, num(&b[14..16])?, num(&b[17..19])?);
    let leap = y % 4 == 0 && (y % 100 != 0 || y % 400 == 0);
    let days_in_month = match mo {
        2 if leap => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        1..=12 => 31,
        _ => return None,
    };
    if d < 1 || d > days_in_month || h > 23 || mi > 59 || sec > 59 {
        return None;
    }
    let mut rest = &b[19..];
    let mut nanos = 0i64;
    if let Some(frac) = rest.strip_prefix(b".") {
        let digits = frac.iter().take_while(|c| c.is_ascii_digit()).count();
        if digits == 0 || digits > 9 {
            return None;
        }
        nanos = num(&frac[..digits])? * 10i64.pow((9 - digits) as u32);
        rest = &frac[digits..];
    }
    let offset_s = match rest {
        b"Z" => 0,
        [sign @ (b'+' | b'-'), oh @ .., b':', om1, om2] if oh.len() == 2 => {
            let (oh, om) = (num(oh)?, num(&[*om1, *om2])?);
            if oh > 23 || om > 59 {
                return None;
            }
            let s = oh * 3600 + om * 60;
            if *sign == b'-' { -s } else { s }
        }
        _ => return None,
    };
    // Days from 1970-01-01 in the proleptic Gregorian calendar.
    let (yy, mm) = if mo <= 2 {
        (y - 1, mo + 9)
    } else {
        (y, mo - 3)
    };
    let era = yy.div_euclid(400);
    let yoe = yy - era * 400;
    let doy = (153 * mm + 2) / 5 + d - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    let days = era * 146_097 + doe - 719_468;
    let secs = days * 86_400 + h * 3600 + mi * 60 + sec - offset_s;
    Some(((i128::from(secs) * 1_000_000_000 + i128::from(nanos)) / 1_000_000) as i64)
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    proptest! {
        #![proptest_config(ProptestConfig::with_cases(5000))]
        #[test]
        fn the_direct_reading_agrees_with_the_time_crate(
            y in 0u32..10_000, mo in 0u32..14, d in 0u32..33, h in 0u32..25, mi in 0u32..61,
            s in 0u32..61, frac in prop::option::of("[0-9]{1,10}"),
            off in prop::sample::select(vec!["Z", "z", "+00:00", "-07:30", "+23:59", "+24:00", "+05", "-00:60"]),
        ) {
            let frac = frac.map(|f| format!(".{f}")).unwrap_or_default();
            let text = format!("{y:04}-{mo:02}-{d:02}T{h:02}:{mi:02}:{s:02}{frac}{off}");
            let slow = OffsetDateTime::parse(&text, &Rfc3339)
                .ok()
                .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64);
            if let Some(fast) = parse_plain_rfc3339(text.as_bytes()) {
                prop_assert_eq!(Some(fast), slow, "{}", text);
            }
            prop_assert_eq!(parse_ms(&text).ok(), slow, "{}", text);
        }
    }

    #[test]
    fn format_and_parse() {
        assert_eq!(format_ms(0), "1970-01-01T00:00:00.000Z");
        assert_eq!(format_ms(1_795_615_294_123), "2026-11-25T14:01:34.123Z");
        assert_eq!(parse_ms("2026-11-25T14:01:34.123Z"), Ok(1_795_615_294_123));
        assert_eq!(
            parse_ms("2026-11-25T15:01:34.123+01:00"),
            Ok(1_795_615_294_123)
        );
        assert_eq!(parse_ms("1795615294123"), Ok(1_795_615_294_123));
        assert!(parse_ms("yesterday").is_err());
        assert_eq!(format_ms(-1), "1969-12-31T23:59:59.999Z");
    }
}
