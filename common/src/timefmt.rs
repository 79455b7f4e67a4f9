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
    OffsetDateTime::parse(s, &Rfc3339)
        .map(|t| (t.unix_timestamp_nanos() / 1_000_000) as i64)
        .map_err(|_| {
            format!(
                "`{s}` is not a time: use RFC 3339 (2026-12-04T10:00:00Z) or epoch milliseconds"
            )
        })
}

#[cfg(test)]
mod tests {
    use super::*;

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
