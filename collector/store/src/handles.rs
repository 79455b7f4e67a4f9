//! The store's descriptor budget: segment files are opened on demand, so the
//! number of topics, partitions and segments on disk does not decide how many
//! descriptors the process holds.
//!
//! - **Read handles.** A segment does not own a descriptor. Reads (and the
//!   writer's log, shared with them) go through one store-wide cache of open
//!   `.log` handles, least recently used first out, of at most
//!   [`Budget::read_handles`]. A read holds its `Arc<File>` for its own duration,
//!   so an evicted or deleted segment stays readable until the read ends; the
//!   descriptor closes when the last holder drops it.
//! - **Writer files.** A partition opens its active segment's `.log`, `.index` and
//!   `.timeindex` at its first append, not at open. At most
//!   [`Budget::open_writers`] partitions keep them open: opening one more closes
//!   those of the least recently appended partition, after making its data
//!   durable, when its writer lock is free (a busy partition is skipped, so the
//!   budget is soft by the number of appends running at that moment).
//!
//! Open and recovery use descriptors only while they look at a file, so a store
//! of any number of topics opens under any descriptor limit that fits the budget.

use std::collections::HashMap;
use std::fs::File;
use std::path::Path;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError, Weak};

use crate::batchcache::BatchCache;
use crate::error::Error;
use crate::partition::Partition;

/// How many descriptors the store may keep open between calls.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Budget {
    /// Partitions whose active segment files (3 descriptors) stay open.
    pub open_writers: usize,
    /// Open `.log` handles cached for reads.
    pub read_handles: usize,
}

impl Budget {
    /// The smallest budget that still works (one writer, a few readers).
    pub const MIN: Budget = Budget {
        open_writers: 1,
        read_handles: 4,
    };

    /// Split `descriptors` between writers (three each) and read handles (a
    /// quarter).
    pub const fn of_descriptors(descriptors: usize) -> Budget {
        let read = descriptors / 4;
        let writers = (descriptors - read) / 3;
        Budget {
            open_writers: if writers < 1 { 1 } else { writers },
            read_handles: if read < 4 { 4 } else { read },
        }
    }

    /// Descriptors this budget allows at most (when no partition is busy).
    pub fn descriptors(&self) -> usize {
        self.open_writers * 3 + self.read_handles
    }
}

impl Default for Budget {
    fn default() -> Self {
        Budget::of_descriptors(1024)
    }
}

/// The cache and the writer registry shared by every segment and partition, and
/// the cache of expanded batches they read.
pub(crate) struct Handles {
    budget: Budget,
    pub(crate) batches: BatchCache,
    next_key: AtomicU64,
    tick: AtomicU64,
    read: Mutex<HashMap<u64, Cached>>,
    writers: Mutex<HashMap<u64, Weak<Partition>>>,
    opened: AtomicU64,
}

struct Cached {
    file: Arc<File>,
    used: u64,
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

impl Handles {
    pub(crate) fn new(budget: Budget, read_cache_bytes: usize) -> Arc<Handles> {
        Arc::new(Handles {
            batches: BatchCache::new(read_cache_bytes),
            budget: Budget {
                open_writers: budget.open_writers.max(Budget::MIN.open_writers),
                read_handles: budget.read_handles.max(Budget::MIN.read_handles),
            },
            next_key: AtomicU64::new(1),
            tick: AtomicU64::new(1),
            read: Mutex::new(HashMap::new()),
            writers: Mutex::new(HashMap::new()),
            opened: AtomicU64::new(0),
        })
    }

    /// A key for a new segment or partition, unique in this store.
    pub(crate) fn key(&self) -> u64 {
        self.next_key.fetch_add(1, Ordering::Relaxed)
    }

    /// A logical time for least-recently-used decisions.
    pub(crate) fn tick(&self) -> u64 {
        self.tick.fetch_add(1, Ordering::Relaxed)
    }

    /// The cached handle of segment `key`, opening `path` read-only on a miss.
    pub(crate) fn read_file(&self, key: u64, path: &Path) -> Result<Arc<File>, Error> {
        if let Some(c) = lock(&self.read).get_mut(&key) {
            c.used = self.tick();
            return Ok(c.file.clone());
        }
        // Opened without the lock: a slow open does not hold up other readers.
        let file = Arc::new(File::open(path).map_err(Error::io("open segment", path))?);
        self.opened.fetch_add(1, Ordering::Relaxed);
        Ok(self.insert(key, file, false))
    }

    /// Share `file` (the writer's handle of segment `key`) with readers, in place of
    /// a read-only handle cached before. Returns it.
    pub(crate) fn share(&self, key: u64, file: Arc<File>) -> Arc<File> {
        self.insert(key, file, true)
    }

    /// Cache `file` for segment `key`; an entry already there stays unless
    /// `replace`. Returns the cached handle.
    fn insert(&self, key: u64, file: Arc<File>, replace: bool) -> Arc<File> {
        let used = self.tick();
        let mut cache = lock(&self.read);
        let entry = cache.entry(key).or_insert_with(|| Cached {
            file: file.clone(),
            used,
        });
        entry.used = used;
        if replace {
            entry.file = file;
        }
        let file = entry.file.clone();
        while cache.len() > self.budget.read_handles {
            let Some(oldest) = cache.iter().min_by_key(|(_, c)| c.used).map(|(k, _)| *k) else {
                break;
            };
            cache.remove(&oldest);
        }
        file
    }

    /// Drop the cached handle of segment `key` (deleted or dropped segment); reads
    /// holding it finish with it.
    pub(crate) fn forget(&self, key: u64) {
        lock(&self.read).remove(&key);
    }

    /// Record that partition `key` opened its writer files. Returns the partitions
    /// whose files should close to stay within the budget, least recently used
    /// first.
    pub(crate) fn writer_opened(&self, key: u64, me: Weak<Partition>) -> Vec<Arc<Partition>> {
        let mut writers = lock(&self.writers);
        writers.insert(key, me);
        writers.retain(|_, w| w.strong_count() > 0);
        let excess = writers.len().saturating_sub(self.budget.open_writers);
        if excess == 0 {
            return Vec::new();
        }
        let mut others: Vec<Arc<Partition>> = writers
            .iter()
            .filter(|(k, _)| **k != key)
            .filter_map(|(_, w)| w.upgrade())
            .collect();
        drop(writers);
        others.sort_by_key(|p| p.last_used());
        others
    }

    /// Record that partition `key` closed its writer files.
    pub(crate) fn writer_closed(&self, key: u64) {
        lock(&self.writers).remove(&key);
    }

    /// How many partitions must still close their writer files to fit the budget.
    pub(crate) fn writers_over_budget(&self) -> usize {
        lock(&self.writers)
            .len()
            .saturating_sub(self.budget.open_writers)
    }

    /// What is open now.
    pub(crate) fn usage(&self) -> Usage {
        Usage {
            budget: self.budget,
            open_writers: lock(&self.writers).len(),
            read_handles: lock(&self.read).len(),
            read_opens: self.opened.load(Ordering::Relaxed),
        }
    }
}

/// The store's descriptor use at one moment (see [`crate::Store::descriptors`]).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    pub budget: Budget,
    /// Partitions with their active segment files open.
    pub open_writers: usize,
    /// Segment handles in the read cache.
    pub read_handles: usize,
    /// Read handles opened since the store was opened (cache misses).
    pub read_opens: u64,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn budget_split() {
        let b = Budget::of_descriptors(1024);
        assert_eq!(b.read_handles, 256);
        assert_eq!(b.open_writers, 256);
        assert!(b.descriptors() <= 1024);
        assert_eq!(Budget::of_descriptors(0), Budget::MIN);
    }

    #[test]
    fn the_read_cache_keeps_the_most_recently_used() {
        let dir = tempfile::tempdir().unwrap();
        let h = Handles::new(
            Budget {
                open_writers: 1,
                read_handles: 4,
            },
            0,
        );
        let paths: Vec<_> = (0..6)
            .map(|i| {
                let p = dir.path().join(format!("{i}.log"));
                std::fs::write(&p, b"x").unwrap();
                p
            })
            .collect();
        for (i, p) in paths.iter().enumerate().take(4) {
            h.read_file(i as u64, p).unwrap();
        }
        // Touch 0, then two more: 1 and 2 go, 0 stays.
        h.read_file(0, &paths[0]).unwrap();
        h.read_file(4, &paths[4]).unwrap();
        h.read_file(5, &paths[5]).unwrap();
        let cached: Vec<u64> = {
            let mut k: Vec<u64> = lock(&h.read).keys().copied().collect();
            k.sort_unstable();
            k
        };
        assert_eq!(cached, vec![0, 3, 4, 5]);
        assert_eq!(h.usage().read_opens, 6);
        // A held handle outlives its eviction and its file.
        let held = h.read_file(3, &paths[3]).unwrap();
        h.forget(3);
        std::fs::remove_file(&paths[3]).unwrap();
        let mut b = [0u8; 1];
        std::os::unix::fs::FileExt::read_exact_at(&*held, &mut b, 0).unwrap();
        assert_eq!(&b, b"x");
        assert!(h.read_file(3, &paths[3]).is_err());
    }
}
