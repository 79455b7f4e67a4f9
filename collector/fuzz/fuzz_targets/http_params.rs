//! Fuzz the HTTP API's query strings the way a request reaches the handlers:
//! `serde_urlencoded` (what axum's `Query` extractor runs) into the parameter
//! structs, then their checks: `/v1/query` (`Query::parse`: times, durations,
//! severity, glob, regex with its size limits, limit, order), reads by offset
//! (`ReadParams::check`), offset lookups by timestamp and partition numbers.
//!
//! Input layout:
//! ```text
//! u8   which endpoint's parameters: query, read, offset by timestamp, partition
//! ...  the raw query string (after `?`), or the path segment for a partition
//! ```
//! Checked, beyond "no panic":
//! - every refusal is a 400 whose message names the parameter at fault;
//! - an accepted query is sane: `limit` in 1..=MAX_LIMIT, `since` ≤ `until`, and its
//!   filter can be run on records (matching never panics, whatever the pattern);
//! - an accepted read has `max` in 1..=MAX_MAX and a wait of at most MAX_WAIT;
//! - a timestamp accepted by the offset lookup is accepted as `since` and gives the
//!   same instant.

#![no_main]

use libfuzzer_sys::fuzz_target;
use tributary_collector::api::params::{
    MAX_MAX, MAX_WAIT, OffsetParams, ReadParams, parse_partition, parse_timestamp,
};
use tributary_collector::api::query::{MAX_LIMIT, Query, QueryParams};

/// 2026-11-25T14:01:34.123Z: relative times are anchored here.
const NOW_MS: i64 = 1_795_615_294_123;

fn check_query(raw: &[u8]) {
    let Ok(p) = serde_urlencoded::from_bytes::<QueryParams>(raw) else {
        return;
    };
    match Query::parse(&p, NOW_MS) {
        Ok(q) => {
            assert!((1..=MAX_LIMIT).contains(&q.limit));
            assert!(!q.topic.is_empty());
            if let (Some(s), Some(u)) = (q.filter.since_ms, q.filter.until_ms) {
                assert!(s <= u);
            }
            let fields = br#"{"severity":"err","appname":"app"}"#;
            for (ts, host, source, message) in [
                (
                    NOW_MS,
                    "web-01",
                    "/var/log/app.log",
                    &b"GET /index.html 200"[..],
                ),
                (0, "", "", &b""[..]),
                (
                    i64::MIN,
                    "h\u{e9}",
                    "syslog+udp://192.0.2.7",
                    &b"\xff\xfe\x00abc"[..],
                ),
            ] {
                q.filter
                    .matches_parts(ts, host, source, message, b"", fields);
                q.filter
                    .matches_parts(ts, host, source, message, fields, b"");
            }
        }
        Err(e) => {
            let m = e.to_string();
            assert!(
                [
                    "topic", "since", "until", "source", "severity", "regex", "limit", "order",
                ]
                .iter()
                .any(|name| m.contains(&format!("`{name}`"))),
                "a refusal names no parameter: {m}"
            );
        }
    }
}

fn check_read(raw: &[u8]) {
    let Ok(p) = serde_urlencoded::from_bytes::<ReadParams>(raw) else {
        return;
    };
    match p.check() {
        Ok(r) => {
            assert!((1..=MAX_MAX).contains(&r.max));
            assert!(r.wait <= MAX_WAIT);
        }
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400);
            let m = e.message();
            assert!(
                m.contains("offset") || m.contains("`max`") || m.contains("`wait_ms`"),
                "{m}"
            );
        }
    }
}

fn check_offset(raw: &[u8]) {
    let Ok(p) = serde_urlencoded::from_bytes::<OffsetParams>(raw) else {
        return;
    };
    match parse_timestamp(p.timestamp.as_deref()) {
        Ok(ms) => {
            // The same text as a query's `since` means the same instant (unless it is
            // a bare number of ms, which `since` also reads as ms).
            let since = QueryParams {
                topic: Some("t".into()),
                since: p.timestamp.clone(),
                ..QueryParams::default()
            };
            let q = Query::parse(&since, NOW_MS).expect("a timestamp is a valid `since`");
            assert_eq!(q.filter.since_ms, Some(ms));
        }
        Err(e) => {
            assert_eq!(e.status().as_u16(), 400);
            assert!(e.message().contains("timestamp"), "{}", e.message());
        }
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&which, raw)) = data.split_first() else {
        return;
    };
    match which % 4 {
        0 => check_query(raw),
        1 => check_read(raw),
        2 => check_offset(raw),
        _ => {
            if let Ok(s) = std::str::from_utf8(raw) {
                match parse_partition(s) {
                    Ok(n) => assert_eq!(n.to_string().parse::<u32>().ok(), Some(n)),
                    Err(e) => assert_eq!(e.status().as_u16(), 400),
                }
            }
        }
    }
});
