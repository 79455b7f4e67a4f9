//! Expanded batches recently read, shared by every partition of a store.
//!
//! A stored batch is read whole and, when compressed at rest, decompressed whole,
//! while a consumer reading by offset takes a few thousand records at a time: a
//! 1 MiB lz4 batch of 150-byte lines holds ~7,000 records, so reads of 10,000
//! records would expand most batches twice, and reads of 100 records seventy
//! times. Reads keep what they expanded here instead, as [`Bytes`] that the
//! records they return borrow from, and the next read of the same batch (the same
//! consumer going on, other consumers on the same tail) finds it.
//!
//! Bounded by bytes (least recently used first out); a batch larger than an
//! eighth of the budget is not kept. A batch is identified by its segment (a key
//! unique in the store), its position and its CRC, so nothing read from a
//! different batch at the same place could ever be served from here. Records
//! handed out keep their batch alive after it leaves the cache; that memory is
//! bounded by the readers' own limits.

use std::collections::{BTreeMap, HashMap};
use std::sync::{Mutex, PoisonError};

use bytes::Bytes;

/// A stored batch: its segment's key, its byte position, its CRC.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub(crate) struct BatchKey {
    pub segment: u64,
    pub pos: u64,
    pub crc: u32,
}

pub(crate) struct BatchCache {
    budget: usize,
    inner: Mutex<Inner>,
}

#[derive(Default)]
struct Inner {
    entries: HashMap<BatchKey, (Bytes, u64)>,
    /// Last use → key, oldest first.
    lru: BTreeMap<u64, BatchKey>,
    bytes: usize,
    tick: u64,
}

impl BatchCache {
    /// A cache of at most `budget` bytes of expanded batches (0: none kept).
    pub(crate) fn new(budget: usize) -> BatchCache {
        BatchCache {
            budget,
            inner: Mutex::new(Inner::default()),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The batch if it is here (and now the most recently used).
    pub(crate) fn get(&self, key: &BatchKey) -> Option<Bytes> {
        if self.budget == 0 {
            return None;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        let (bytes, used) = inner.entries.get_mut(key)?;
        inner.lru.remove(used);
        *used = tick;
        inner.lru.insert(tick, *key);
        Some(bytes.clone())
    }

    /// Keep `bytes` as the expanded batch `key`, making room by dropping the
    /// least recently used; a batch over an eighth of the budget is not kept.
    pub(crate) fn insert(&self, key: BatchKey, bytes: Bytes) {
        let len = bytes.len();
        if len > self.budget / 8 {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        inner.tick += 1;
        let tick = inner.tick;
        if let Some((old, used)) = inner.entries.insert(key, (bytes, tick)) {
            inner.lru.remove(&used);
            inner.bytes -= old.len();
        }
        inner.lru.insert(tick, key);
        inner.bytes += len;
        while inner.bytes > self.budget {
            let Some((_, oldest)) = inner.lru.pop_first() else {
                break;
            };
            if let Some((b, _)) = inner.entries.remove(&oldest) {
                inner.bytes -= b.len();
            }
        }
    }

    /// Drop every batch of a segment (retention deleted it).
    pub(crate) fn forget_segment(&self, segment: u64) {
        if self.budget == 0 {
            return;
        }
        let mut g = self.lock();
        let inner = &mut *g;
        let mut freed = 0;
        inner.entries.retain(|k, (b, used)| {
            if k.segment != segment {
                return true;
            }
            inner.lru.remove(used);
            freed += b.len();
            false
        });
        inner.bytes -= freed;
    }

    /// Bytes kept now.
    pub(crate) fn bytes(&self) -> usize {
        self.lock().bytes
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(segment: u64, pos: u64) -> BatchKey {
        BatchKey {
            segment,
            pos,
            crc: 7,
        }
    }

    #[test]
    fn keeps_the_most_recently_used_within_the_budget() {
        let c = BatchCache::new(800);
        for pos in 0..8 {
            c.insert(key(1, pos), Bytes::from(vec![pos as u8; 100]));
        }
        assert_eq!(c.bytes(), 800);
        // Touch 0: 1 is now the oldest and goes first.
        assert_eq!(c.get(&key(1, 0)).unwrap()[0], 0);
        c.insert(key(1, 8), Bytes::from(vec![8; 100]));
        assert_eq!(c.bytes(), 800);
        assert!(c.get(&key(1, 1)).is_none());
        assert!(c.get(&key(1, 0)).is_some());
        assert!(c.get(&key(1, 8)).is_some());
        // Another CRC at the same place is another batch.
        assert!(
            c.get(&BatchKey {
                crc: 8,
                ..key(1, 0)
            })
            .is_none()
        );
    }

    #[test]
    fn refuses_batches_over_an_eighth_and_forgets_segments() {
        let c = BatchCache::new(800);
        c.insert(key(1, 0), Bytes::from(vec![0; 101]));
        assert_eq!(c.bytes(), 0);
        c.insert(key(1, 0), Bytes::from(vec![0; 100]));
        c.insert(key(2, 0), Bytes::from(vec![0; 50]));
        // The same batch again replaces, not adds.
        c.insert(key(2, 0), Bytes::from(vec![0; 60]));
        assert_eq!(c.bytes(), 160);
        c.forget_segment(1);
        assert_eq!(c.bytes(), 60);
        assert!(c.get(&key(1, 0)).is_none());
        assert!(c.get(&key(2, 0)).is_some());
        let none = BatchCache::new(0);
        none.insert(key(1, 0), Bytes::from_static(b"x"));
        assert!(none.get(&key(1, 0)).is_none());
    }
}
