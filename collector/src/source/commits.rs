//! When a source commits its offsets (pure: the caller does the I/O). A
//! position is committed only once everything before it is durable.
//!
//! With `fsync: always` the source waits for the fsync before it moves a
//! position, so what moved is committed right after the round that moved it: one
//! OffsetCommit per round that stored new data (or stepped past what it cannot
//! store), none in a round that moved nothing (idle rounds cost nothing). That
//! keeps what a collector killed between its fsync and its commit leaves behind
//! to one round: the records the next owner of its partitions reads again, into
//! a store of its own that cannot recognise them.
//!
//! With `fsync: interval` a position is held back until the flush interval (plus
//! a margin) has passed since it was reached, looked at most once a
//! [`COMMIT_INTERVAL`]; or everything is flushed first when a commit is forced
//! (rebalance, shutdown).
//!
//! After a commit that failed, the next (unless forced) waits a
//! [`COMMIT_INTERVAL`]: the positions wait meanwhile, the store's deduplication
//! is the record of what was stored (the commit is a resume hint).

use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// A Kafka topic-partition.
pub type Tp = (String, i32);

/// With `fsync: interval`, positions are looked at this often; after a failed
/// commit, the next waits this long (forced commits excepted).
pub const COMMIT_INTERVAL: Duration = Duration::from_secs(1);

/// The commit schedule of one generation.
pub struct Commits {
    last: Instant,
    /// `fsync: interval`: how long a position waits before it is committed.
    delay: Option<Duration>,
    pending: Option<(Instant, BTreeMap<Tp, i64>)>,
    /// No commit but a forced one before this (a commit failed).
    retry_at: Option<Instant>,
}

impl Commits {
    /// `flush_interval`: `durability.interval_ms` with `fsync: interval`, else
    /// `None`.
    pub fn new(flush_interval: Option<Duration>, now: Instant) -> Commits {
        Commits {
            last: now,
            delay: flush_interval.map(|d| d + Duration::from_millis(200)),
            pending: None,
            retry_at: None,
        }
    }

    /// Whether a forced commit must flush the store first.
    pub fn flush_before_forced(&self) -> bool {
        self.delay.is_some()
    }

    /// The commit [`Commits::due`] gave at `now` failed: the positions are
    /// offered again (they still differ from the committed ones), not before a
    /// [`COMMIT_INTERVAL`].
    pub fn failed(&mut self, now: Instant) {
        self.retry_at = Some(now + COMMIT_INTERVAL);
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
            self.retry_at = None;
            self.last = now;
            return (!moved.is_empty()).then_some(moved);
        }
        if self.retry_at.is_some_and(|at| now < at) {
            return None;
        }
        self.retry_at = None;
        let Some(delay) = self.delay else {
            // Durable already: at once, when something moved.
            if moved.is_empty() {
                return None;
            }
            self.last = now;
            return Some(moved);
        };
        if now.duration_since(self.last) < COMMIT_INTERVAL {
            return None;
        }
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
    fn always_commits_after_every_round_that_moved_and_never_when_idle() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Commits::new(None, t0);
        assert!(!c.flush_before_forced());
        // Each round that stored something commits it right away, however
        // close together the rounds are.
        assert_eq!(c.due(at(0, 5), false, t0 + ms(3)), Some(at(0, 5)));
        assert_eq!(c.due(at(0, 9), false, t0 + ms(6)), Some(at(0, 9)));
        let two = BTreeMap::from([(("t".to_string(), 0), 12), (("t".to_string(), 1), 4)]);
        assert_eq!(c.due(two.clone(), false, t0 + ms(8)), Some(two));
        // Idle rounds (nothing differs from the last commit): no commit, ever.
        for i in 0..100 {
            assert_eq!(c.due(BTreeMap::new(), false, t0 + ms(10 + i)), None);
        }
        // Forced: at once, whatever moved.
        let t = t0 + ms(200);
        assert_eq!(c.due(at(1, 2), true, t), Some(at(1, 2)));
        assert_eq!(c.due(BTreeMap::new(), true, t), None);
    }

    #[test]
    fn a_failed_commit_is_retried_a_commit_interval_later() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Commits::new(None, t0);
        assert_eq!(c.due(at(0, 5), false, t0), Some(at(0, 5)));
        c.failed(t0 + ms(2));
        // Rounds go on (with data or without): no commit until the interval.
        assert_eq!(c.due(at(0, 7), false, t0 + ms(10)), None);
        assert_eq!(c.due(at(0, 7), false, t0 + ms(900)), None);
        assert_eq!(c.due(at(0, 7), false, t0 + ms(1002)), Some(at(0, 7)));
        assert_eq!(c.due(at(0, 8), false, t0 + ms(1003)), Some(at(0, 8)));
        // A forced commit does not wait.
        c.failed(t0 + ms(1004));
        assert_eq!(c.due(at(0, 9), true, t0 + ms(1005)), Some(at(0, 9)));
        assert_eq!(c.due(at(0, 10), false, t0 + ms(1006)), Some(at(0, 10)));
    }

    #[test]
    fn interval_holds_positions_back_until_flushed() {
        let t0 = Instant::now();
        let ms = Duration::from_millis;
        let mut c = Commits::new(Some(ms(1000)), t0);
        assert!(c.flush_before_forced());
        // Looked at most once a second.
        assert_eq!(c.due(at(0, 5), false, t0 + ms(500)), None);
        // Reached at 1 s: held (not flushed yet for sure).
        assert_eq!(c.due(at(0, 5), false, t0 + ms(1000)), None);
        // 1 s later it may not be flushed yet (interval + margin = 1.2 s).
        assert_eq!(c.due(at(0, 7), false, t0 + ms(2000)), None);
        // Then it is committed, and the newer position is held in turn.
        assert_eq!(c.due(at(0, 7), false, t0 + ms(3000)), Some(at(0, 5)));
        assert_eq!(c.due(at(0, 7), false, t0 + ms(3500)), None);
        assert_eq!(c.due(at(0, 7), false, t0 + ms(4300)), Some(at(0, 7)));
        assert_eq!(c.due(BTreeMap::new(), false, t0 + ms(5400)), None);
        // Forced (after a flush): everything now.
        assert_eq!(c.due(at(0, 9), true, t0 + ms(5500)), Some(at(0, 9)));
    }
}
