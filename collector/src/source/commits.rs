//! When a source commits its offsets (pure: the caller does the I/O). A
//! position is committed only once everything before it is durable: with
//! `fsync: always` that is as soon as it is reached (the source waits for the
//! fsync before it moves a position); with `fsync: interval` a position is held
//! back until the flush interval (plus a margin) has passed since it was
//! reached, or everything is flushed first when a commit is forced (rebalance,
//! shutdown). Commits are at most one a [`COMMIT_INTERVAL`]: they are a resume
//! hint, the store's deduplication is the record of what was stored.

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A Kafka topic-partition.
pub type Tp = (String, i32);

/// Offsets are committed at most this often (and always before leaving or
/// rejoining).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The commit schedule of one generation.
pub struct Commits {
    last: Instant,
    /// `fsync: interval`: how long a position waits before it is committed.
    delay: Option<Duration>,
    pending: Option<(Instant, BTreeMap<Tp, i64>)>,
}

impl Commits {
    /// `flush_interval`: `durability.interval_ms` with `fsync: interval`, else
    /// `None`.
    pub fn new(flush_interval: Option<Duration>, now: Instant) -> Commits {
        Commits {
            last: now,
            delay: flush_interval.map(|d| d + Duration::from_millis(200)),
            pending: None,
        }
    }

    /// Whether a forced commit must flush the store first.
    pub fn flush_before_forced(&self) -> bool {
        self.delay.is_some()
    }

    /// What to commit at `now`, given the positions that `moved` (next offset
    /// per partition, where it differs from the last commit). `force`: now,
    /// everything (after a flush when [`Commits::flush_before_forced`]).
    pub fn due(
        &mut self,
        moved: BTreeMap<Tp, i64>,
        force: bool,
        now: Instant,
    ) -> Option<BTreeMap<Tp, i64>> {
        if force {
            self.pending = None;
            self.last = now;
            return (!moved.is_empty()).then_some(moved);
        }
        if now.duration_since(self.last) < COMMIT_INTERVAL {
            return None;
        }
        let Some(delay) = self.delay else {
            if moved.is_empty() {
                return None;
            }
            self.last = now;
            return Some(moved);
        };
        self.last = now;
        let ready = self
            .pending
            .as_ref()
            .is_some_and(|(at, _)| now.duration_since(*at) >= delay);
        let out = if ready {
            self.pending.take().map(|(_, m)| m)
        } else {
            None
        };
        if self.pending.is_none() && !moved.is_empty() {
            self.pending = Some((now, moved));
        }
        out.filter(|m| !m.is_empty())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn at(p: i32, o: i64) -> BTreeMap<Tp, i64> {
        BTreeMap::from([(("t".to_string(), p), o)])
    }

    #[test]
    fn always_commits_what_moved_at_most_once_a_second() {
        let t0 = Instant::now();
        let mut c = Commits::new(None, t0);
        assert!(!c.flush_before_forced());
        assert_eq!(
            c.due(at(0, 5), false, t0 + Duration::from_millis(500)),
            None
        );
        assert_eq!(
            c.due(at(0, 5), false, t0 + Duration::from_secs(1)),
            Some(at(0, 5))
        );
        assert_eq!(
            c.due(at(0, 9), false, t0 + Duration::from_millis(1500)),
            None
        );
        assert_eq!(
            c.due(BTreeMap::new(), false, t0 + Duration::from_secs(3)),
            None
        );
        // Forced: at once, whatever the interval.
        let t = t0 + Duration::from_millis(3100);
        assert_eq!(c.due(at(1, 2), true, t), Some(at(1, 2)));
        assert_eq!(c.due(BTreeMap::new(), true, t), None);
    }

    #[test]
    fn interval_holds_positions_back_until_flushed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Commits::new(Some(ms(1000)), t0);
        assert!(c.flush_before_forced());
        // Reached at 1 s: held (not flushed yet for sure).
        assert_eq!(c.due(at(0, 5), false, t0 + ms(1000)), None);
        // 1 s later it may not be flushed yet (interval + margin = 1.2 s).
        assert_eq!(c.due(at(0, 7), false, t0 + ms(2000)), None);
        // Then it is committed, and the newer position is held in turn.
        assert_eq!(c.due(at(0, 7), false, t0 + ms(3000)), Some(at(0, 5)));
        assert_eq!(c.due(at(0, 7), false, t0 + ms(4300)), Some(at(0, 7)));
        // Forced (after a flush): everything now.
        assert_eq!(c.due(at(0, 9), true, t0 + ms(4400)), Some(at(0, 9)));
    }
}
