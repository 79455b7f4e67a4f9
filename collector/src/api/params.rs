//! The API's URL parameters, checked: pure functions from the strings a client
//! sent to typed requests or a 400 naming the parameter. Everything here is
//! attacker-controlled, so it is the HTTP target of the fuzzer
//! (`collector/fuzz`, `http_params`).

use std::time::Duration;

use axum::http::StatusCode;
use serde::Deserialize;

use super::ApiError;

/// Records per read when `max` is not given, and the most a read may ask for.
pub const DEFAULT_MAX: usize = 100;
pub const MAX_MAX: usize = 10_000;
/// Longest long-poll.
pub const MAX_WAIT: Duration = Duration::from_secs(30);

/// `GET /v1/topics/{topic}/partitions/{partition}/records?offset&max&wait_ms`, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct ReadParams {
    pub offset: Option<String>,
    pub max: Option<String>,
    pub wait_ms: Option<String>,
}

/// Where a read starts.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum StartAt {
    Earliest,
    Latest,
    Offset(u64),
}

/// A checked read.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ReadRequest {
    pub start: StartAt,
    /// 1 to [`MAX_MAX`].
    pub max: usize,
    /// At most [`MAX_WAIT`].
    pub wait: Duration,
}

impl ReadParams {
    /// Check the parameters: numbers are numbers, `max` and `wait_ms` are clamped.
    pub fn check(&self) -> Result<ReadRequest, ApiError> {
        let max = parse_num::<usize>("max", self.max.as_deref())?
            .unwrap_or(DEFAULT_MAX)
            .clamp(1, MAX_MAX);
        let wait = Duration::from_millis(
            parse_num::<u64>("wait_ms", self.wait_ms.as_deref())?.unwrap_or(0),
        )
        .min(MAX_WAIT);
        let start = match self.offset.as_deref() {
            None | Some("") | Some("earliest") => StartAt::Earliest,
            Some("latest") => StartAt::Latest,
            Some(s) => StartAt::Offset(s.parse::<u64>().map_err(|_| {
                ApiError(
                    StatusCode::BAD_REQUEST,
                    format!("offset must be a number, `earliest` or `latest`, got `{s}`"),
                )
            })?),
        };
        Ok(ReadRequest { start, max, wait })
    }
}

/// `GET …/offset?timestamp=`, as sent.
#[derive(Debug, Default, Deserialize)]
pub struct OffsetParams {
    pub timestamp: Option<String>,
}

/// Parse `timestamp=`: RFC 3339 or epoch milliseconds. A `+` of a UTC offset that
/// was not percent-encoded arrives as a space; it is taken back.
pub fn parse_timestamp(raw: Option<&str>) -> Result<i64, ApiError> {
    let bad = |msg: String| ApiError(StatusCode::BAD_REQUEST, msg);
    let s = raw.map(str::trim).filter(|s| !s.is_empty()).ok_or_else(|| {
        bad("`timestamp` is required: RFC 3339 (e.g. 2026-11-25T14:01:34Z) or epoch milliseconds".into())
    })?;
    crate::api::query::parse_absolute(s).map_err(|e| bad(format!("bad `timestamp`: {e}")))
}

/// A partition number from the path.
pub fn parse_partition(s: &str) -> Result<u32, ApiError> {
    s.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("partition must be a number, got `{s}`"),
        )
    })
}

fn parse_num<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, ApiError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("`{name}` must be a number, got `{s}`"),
            )
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn timestamps_are_parsed_or_refused() {
        assert_eq!(
            parse_timestamp(Some("1795615294123")).ok(),
            Some(1_795_615_294_123)
        );
        assert_eq!(
            parse_timestamp(Some("2026-11-25T14:01:34.123Z")).ok(),
            Some(1_795_615_294_123)
        );
        assert_eq!(
            parse_timestamp(Some("2026-11-25T15:01:34.123 01:00")).ok(),
            Some(1_795_615_294_123),
            "an unencoded + arrives as a space"
        );
        for bad in [
            None,
            Some(""),
            Some("  "),
            Some("yesterday"),
            Some("2026-13-01T00:00:00Z"),
            // Byte 10 inside a character: this panicked before.
            Some("2026-01-0\u{e9}x"),
            Some("2026-01-01\u{e9}"),
        ] {
            let e = parse_timestamp(bad).expect_err("refused");
            assert_eq!(e.0, StatusCode::BAD_REQUEST, "{bad:?}");
            assert!(e.1.contains("timestamp"), "{}", e.1);
        }
    }

    #[test]
    fn reads_are_checked_and_clamped() {
        let p = |offset: &str, max: &str, wait: &str| ReadParams {
            offset: Some(offset.into()),
            max: Some(max.into()),
            wait_ms: Some(wait.into()),
        };
        assert_eq!(
            ReadParams::default().check().ok(),
            Some(ReadRequest {
                start: StartAt::Earliest,
                max: DEFAULT_MAX,
                wait: Duration::ZERO
            })
        );
        assert_eq!(
            p("latest", "0", "99999999").check().ok(),
            Some(ReadRequest {
                start: StartAt::Latest,
                max: 1,
                wait: MAX_WAIT
            })
        );
        assert_eq!(
            p("7", "123456", "5").check().ok().map(|r| (r.start, r.max)),
            Some((StartAt::Offset(7), MAX_MAX))
        );
        for (o, m, w, name) in [
            ("-1", "", "", "offset"),
            ("1", "x", "", "max"),
            ("1", "", "-5", "wait_ms"),
        ] {
            let e = p(o, m, w).check().expect_err("refused");
            assert_eq!(e.0, StatusCode::BAD_REQUEST);
            assert!(e.1.contains(name), "{}", e.1);
        }
    }
}
