//! Warnings a flood can trigger (failed handshakes, refused connections, accept
//! errors) are logged at most once per [`INTERVAL`] per kind, with the count of
//! those left out since the last one.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

/// At most one warning of a kind per this long.
pub const INTERVAL: Duration = Duration::from_secs(10);

static LAST: Mutex<Option<HashMap<&'static str, (Instant, u64)>>> = Mutex::new(None);

/// Log `message` as a warning unless one of `kind` was logged within [`INTERVAL`]
/// (then it is counted and the next one says how many were left out).
pub fn warn(kind: &'static str, message: std::fmt::Arguments<'_>) {
    if let Some(suppressed) = admit(kind, Instant::now()) {
        if suppressed > 0 {
            tracing::warn!(
                suppressed,
                "{message} ({suppressed} more like it in the last {}s not logged)",
                INTERVAL.as_secs()
            );
        } else {
            tracing::warn!("{message}");
        }
    }
}

/// `Some(suppressed since the last one)` when a warning of `kind` may be logged now.
fn admit(kind: &'static str, now: Instant) -> Option<u64> {
    let mut guard = LAST
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    let map = guard.get_or_insert_with(HashMap::new);
    match map.get_mut(kind) {
        Some((last, n)) if now.saturating_duration_since(*last) < INTERVAL => {
            *n += 1;
            None
        }
        Some((last, n)) => {
            let suppressed = *n;
            *last = now;
            *n = 0;
            Some(suppressed)
        }
        None => {
            map.insert(kind, (now, 0));
            Some(0)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_per_interval_with_the_count_of_the_rest() {
        let t0 = Instant::now();
        assert_eq!(admit("test-kind", t0), Some(0));
        for i in 1..=100 {
            assert_eq!(admit("test-kind", t0 + Duration::from_millis(i)), None);
        }
        assert_eq!(admit("other-kind", t0), Some(0));
        assert_eq!(admit("test-kind", t0 + INTERVAL), Some(100));
        assert_eq!(
            admit("test-kind", t0 + INTERVAL + Duration::from_secs(1)),
            None
        );
    }
}
