//! # tributary-store
//!
//! Tributary's storage engine: partitioned, append-only, offset-addressed logs.
//! Synchronous (std + bytes + crc32c); it knows nothing about frames, HTTP or
//! tokio. The collector calls it from `spawn_blocking`; every type is `Send + Sync`
//! and every method takes `&self`.
//!
//! ## Brief overview
//! - [`Store`]: a data directory; opens and recovers every topic at start-up.
//! - [`Topic`]: a named set of partitions with a fixed [`TopicConfig`].
//! - [`Partition`]: [`append`](Partition::append), group-commit
//!   [`sync_to`](Partition::sync_to), [`read`](Partition::read) by offset,
//!   [`offset_for_timestamp`](Partition::offset_for_timestamp) and
//!   [`enforce_retention`](Partition::enforce_retention).
//!
//! ## On-disk layout
//! ```text
//! <dir>/.lock                                           flock: one store per directory
//! <dir>/topics/<topic>/topic.json                       {"version":1,"partitions":N,"segment_bytes":B}
//! <dir>/topics/<topic>/<p>/<base offset:020>.log        segment: batches, back to back
//! <dir>/topics/<topic>/<p>/<base offset:020>.index      sparse index: (u32 rel offset, u32 position)*
//! <dir>/topics/<topic>/<p>/<base offset:020>.timeindex  time index: (i64 max timestamp so far, u32 rel offset)*,
//!                                                       one entry per .index entry
//! <dir>/topics/<topic>/<p>/<offset:020>.sources         deduplication table for the offsets below
//!                                                       <offset>, written when the segment at <offset>
//!                                                       was created (see `dedup/snapshot.rs`)
//! ```
//! A batch on disk (all integers little-endian; see [`batch`]):
//! ```text
//! u64 base_offset | u32 length | u32 crc32c | u8 version=2 | u8 attributes (codec)
//! | u32 record_count | i64 append_ms (collector clock) | i64 last_timestamp_ms (max)
//! | payload ([attributes bit 0x10: u16 length, identity to stamp on every block]
//!            codec 0: record blocks, tributary_common::record;
//!            1 gzip / 2 lz4: u32 uncompressed length, then the blocks compressed)
//! ```
//! `length` counts the bytes after itself; the CRC32C covers every byte after the
//! CRC field, as stored (compressed). A `length` above 64 MiB or below the fixed
//! header is corruption, and so is a compressed payload that does not expand to
//! its stated length of at most 64 MiB. Each batch names its codec
//! ([`Topic::set_compression`]), so segments may mix them.
//!
//! ## Invariants
//! - Offsets are per partition, are dense (record `i` of a batch has
//!   `base_offset + i`) and never change or repeat. They start at 0; retention
//!   deletes whole segments from the front, which moves the start offset on.
//! - A segment is named by the base offset of its first batch; segments are
//!   contiguous: each starts where the previous one ends.
//! - Only the last segment is written. A segment is fsynced (log and both indexes)
//!   before the next one is created, so after a crash only the last one can have a
//!   torn tail. At open that tail is validated and truncated at the first bad batch
//!   (see `recovery.rs`); damage in older segments is reported by reads
//!   ([`Error::Corrupt`]), never skipped, and reads of offsets after a damaged
//!   range still work (`walk.rs` resyncs on the next batch whose CRC checks out).
//! - A segment rolls by size (`segment_bytes`) and by age
//!   ([`Topic::set_segment_age`], by append time, at most one roll per age; see
//!   `partition/roll.rs`). Retention deletes the oldest segments by append time,
//!   never the active one (`partition/retention.rs`).
//! - Descriptors are bounded ([`Budget`]): closed segments hold none (reads go
//!   through a store-wide LRU of handles, `handles.rs`) and idle partitions close
//!   their active files (`partition/files.rs`).
//! - The `.index` and `.timeindex` are accelerators rebuilt from the log whenever
//!   they do not check out (`rebuild.rs`). The log is the truth.
//! - A `.sources` snapshot is written after the segment it covers was fsynced; at
//!   open the newest valid one is loaded and only the segments after it are
//!   scanned (`dedup/`). A missing or damaged snapshot only means a longer scan.
//! - `topic.json` is written atomically (temp file, fsync, rename, fsync dir); a
//!   topic directory without one is an interrupted creation and is ignored.
//! - With [`StoreOptions::publish_on_sync`] readers see only fsynced offsets, so an
//!   offset a consumer saw is never reused after a crash.

pub mod batch;
mod batchcache;
pub use tributary_common::codec::Compression;
mod dedup;
mod error;
mod handles;
pub mod index;
mod partition;
mod rebuild;
mod records;
mod recovery;
mod segment;
pub mod timeindex;
mod walk;

use std::collections::BTreeMap;
use std::fs::{self, File, OpenOptions};
use std::io::ErrorKind;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, PoisonError, RwLock};
use std::time::Duration;

use serde::{Deserialize, Serialize};
use tracing::warn;

pub use error::Error;
pub use handles::{Budget, Usage};
pub use partition::{
    AppendResult, Deleted, Partition, Prepared, RetentionPolicy, Sent, TimestampOffset,
};
pub use records::{Block, ReadResult, StoredRecord};
pub use tributary_common::record::PayloadSummary;

use partition::PartitionOptions;

/// Most partitions a topic may have.
pub const MAX_PARTITIONS: u32 = 10_000;

/// Store-wide behaviour.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct StoreOptions {
    /// Readers see only offsets made durable by [`Partition::sync_to`] /
    /// [`Partition::sync`] (collector `fsync: always`). Otherwise every append is
    /// visible at once.
    pub publish_on_sync: bool,
    /// Write a sparse index entry after at least this many log bytes.
    pub index_interval_bytes: u32,
    /// Descriptors the store keeps open between calls (see [`Budget`]).
    pub budget: Budget,
    /// Bytes of expanded (decompressed) batches kept for the reads that come
    /// back for them, store-wide (see `batchcache.rs`); 0 keeps none.
    pub read_cache_bytes: usize,
}

impl StoreOptions {
    /// The defaults, usable in constants.
    pub const DEFAULT: StoreOptions = StoreOptions {
        publish_on_sync: false,
        index_interval_bytes: 4096,
        budget: Budget::of_descriptors(1024),
        read_cache_bytes: 64 << 20,
    };
}

impl Default for StoreOptions {
    fn default() -> Self {
        StoreOptions::DEFAULT
    }
}

/// A topic's shape, fixed when it is created.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicConfig {
    /// 1..=[`MAX_PARTITIONS`].
    pub partitions: u32,
    /// Roll to a new segment before one grows past this (1..=4 GiB - 1). A batch
    /// larger than this gets a segment of its own.
    pub segment_bytes: u64,
}

/// The codec batches are stored with until [`Topic::set_compression`] says otherwise.
pub const DEFAULT_COMPRESSION: Compression = Compression::Lz4;

/// The segment age a topic rolls at until [`Topic::set_segment_age`] says otherwise.
pub const DEFAULT_SEGMENT_AGE: Duration = Duration::from_secs(86_400);

impl Default for TopicConfig {
    fn default() -> Self {
        TopicConfig {
            partitions: 4,
            segment_bytes: 128 << 20,
        }
    }
}

impl TopicConfig {
    fn check(&self, topic: &str) -> Result<(), Error> {
        let bad = |reason: String| {
            Err(Error::InvalidConfig {
                topic: topic.to_owned(),
                reason,
            })
        };
        if self.partitions == 0 || self.partitions > MAX_PARTITIONS {
            return bad(format!(
                "partitions must be 1..={MAX_PARTITIONS}, not {}",
                self.partitions
            ));
        }
        if self.segment_bytes == 0 || self.segment_bytes > u64::from(u32::MAX) {
            return bad(format!(
                "segment_bytes must be 1..={}, not {}",
                u32::MAX,
                self.segment_bytes
            ));
        }
        Ok(())
    }
}

/// `topic.json`. Tolerant of unknown fields: later versions may add some.
#[derive(Debug, Serialize, Deserialize)]
struct TopicMeta {
    version: u32,
    partitions: u32,
    segment_bytes: u64,
}

const TOPIC_META_VERSION: u32 = 1;

pub use tributary_common::names::valid_topic_name;

/// A topic: a name, a config, and its partitions.
pub struct Topic {
    name: String,
    config: TopicConfig,
    partitions: Vec<Arc<Partition>>,
}

impl Topic {
    pub fn name(&self) -> &str {
        &self.name
    }

    pub fn config(&self) -> TopicConfig {
        self.config
    }

    /// All partitions, indexed by partition number.
    pub fn partitions(&self) -> &[Arc<Partition>] {
        &self.partitions
    }

    pub fn partition(&self, p: u32) -> Option<&Arc<Partition>> {
        self.partitions.get(usize::try_from(p).ok()?)
    }

    /// Roll a partition's active segment when a batch's newest record is this much
    /// newer than the newest record of the segment's first batch (see
    /// [`Partition::set_segment_age`]). A policy, like retention: not stored, so
    /// the owner sets it after every open; [`DEFAULT_SEGMENT_AGE`] until then.
    pub fn set_segment_age(&self, age: Duration) {
        for p in &self.partitions {
            p.set_segment_age(age);
        }
    }

    /// Compress the batches appended from now on with `codec` (see
    /// [`Partition::set_compression`]). A policy, not stored: segments hold
    /// batches of any codec, each saying its own; [`DEFAULT_COMPRESSION`] until set.
    pub fn set_compression(&self, codec: Compression) {
        for p in &self.partitions {
            p.set_compression(codec);
        }
    }
}

/// A data directory of topics.
pub struct Store {
    dir: PathBuf,
    opts: StoreOptions,
    topics: RwLock<BTreeMap<String, Arc<Topic>>>,
    create_lock: Mutex<()>,
    dir_lock: Arc<File>,
    handles: Arc<handles::Handles>,
}

impl Store {
    /// Open the data directory `dir` (created when missing), take its lock, and
    /// open and recover every topic in it.
    pub fn open(dir: &Path, opts: StoreOptions) -> Result<Store, Error> {
        let topics_dir = dir.join("topics");
        fs::create_dir_all(&topics_dir).map_err(Error::io("create directory", &topics_dir))?;
        segment::sync_dir(dir)?;
        let lock_path = dir.join(".lock");
        let lock_file = OpenOptions::new()
            .read(true)
            .write(true)
            .create(true)
            .truncate(false)
            .open(&lock_path)
            .map_err(Error::io("open lock file", &lock_path))?;
        match lock_file.try_lock() {
            Ok(()) => {}
            Err(fs::TryLockError::WouldBlock) => return Err(Error::Locked { path: lock_path }),
            Err(fs::TryLockError::Error(e)) => return Err(Error::io("lock", &lock_path)(e)),
        }
        let store = Store {
            dir: dir.to_owned(),
            opts,
            topics: RwLock::new(BTreeMap::new()),
            create_lock: Mutex::new(()),
            dir_lock: Arc::new(lock_file),
            handles: handles::Handles::new(opts.budget, opts.read_cache_bytes),
        };
        let mut names = Vec::new();
        for entry in fs::read_dir(&topics_dir).map_err(Error::io("list directory", &topics_dir))? {
            let entry = entry.map_err(Error::io("list directory", &topics_dir))?;
            let path = entry.path();
            match entry.file_name().to_str() {
                Some(name) if valid_topic_name(name) && path.is_dir() => {
                    names.push(name.to_owned())
                }
                _ => {
                    warn!(path = %path.display(), "ignoring unexpected entry in the topics directory")
                }
            }
        }
        let mut topics = BTreeMap::new();
        for name in names {
            let meta_path = store.topic_dir(&name).join("topic.json");
            let bytes = match fs::read(&meta_path) {
                Ok(b) => b,
                Err(e) if e.kind() == ErrorKind::NotFound => {
                    warn!(path = %meta_path.display(), "topic directory without topic.json (interrupted creation); ignoring it");
                    continue;
                }
                Err(e) => return Err(Error::io("read", &meta_path)(e)),
            };
            let meta: TopicMeta =
                serde_json::from_slice(&bytes).map_err(|source| Error::TopicMeta {
                    path: meta_path.clone(),
                    source,
                })?;
            if meta.version != TOPIC_META_VERSION {
                return Err(Error::BadTopicMeta {
                    path: meta_path,
                    reason: format!("unknown version {}", meta.version),
                });
            }
            let config = TopicConfig {
                partitions: meta.partitions,
                segment_bytes: meta.segment_bytes,
            };
            config.check(&name).map_err(|e| Error::BadTopicMeta {
                path: meta_path.clone(),
                reason: e.to_string(),
            })?;
            let topic = store.open_topic(&name, config)?;
            topics.insert(name, Arc::new(topic));
        }
        *store.topics.write().unwrap_or_else(PoisonError::into_inner) = topics;
        Ok(store)
    }

    /// The data directory.
    pub fn dir(&self) -> &Path {
        &self.dir
    }

    /// The options the store was opened with.
    pub fn options(&self) -> StoreOptions {
        self.opts
    }

    fn topic_dir(&self, name: &str) -> PathBuf {
        self.dir.join("topics").join(name)
    }

    fn open_topic(&self, name: &str, config: TopicConfig) -> Result<Topic, Error> {
        let dir = self.topic_dir(name);
        let opts = PartitionOptions {
            segment_bytes: config.segment_bytes,
            index_interval_bytes: self.opts.index_interval_bytes,
            publish_on_sync: self.opts.publish_on_sync,
        };
        let partitions = (0..config.partitions)
            .map(|p| {
                Partition::open(
                    dir.join(p.to_string()),
                    p,
                    opts,
                    self.handles.clone(),
                    self.dir_lock.clone(),
                )
            })
            .collect::<Result<Vec<_>, _>>()?;
        segment::sync_dir(&dir)?;
        Ok(Topic {
            name: name.to_owned(),
            config,
            partitions,
        })
    }

    /// The topic called `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<Arc<Topic>> {
        self.topics
            .read()
            .unwrap_or_else(PoisonError::into_inner)
            .get(name)
            .cloned()
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<Arc<Topic>> {
        let topics = self.topics.read().unwrap_or_else(PoisonError::into_inner);
        topics.values().cloned().collect()
    }

    /// The descriptors the store holds now, against its budget.
    pub fn descriptors(&self) -> Usage {
        self.handles.usage()
    }

    /// Bytes of expanded batches the read cache keeps now (at most
    /// [`StoreOptions::read_cache_bytes`]).
    pub fn read_cache_bytes(&self) -> usize {
        self.handles.batches.bytes()
    }

    /// Close the active segment files of partitions with no append since
    /// `idle_before` (epoch ms). Returns how many partitions closed them.
    pub fn release_idle(&self, idle_before: i64) -> usize {
        self.topics()
            .iter()
            .flat_map(|t| t.partitions().iter())
            .filter(|p| p.release_idle(idle_before))
            .count()
    }

    /// Create a topic, or return the existing one unchanged (its stored config wins
    /// over `cfg`).
    pub fn create_topic(&self, name: &str, cfg: TopicConfig) -> Result<Arc<Topic>, Error> {
        if !valid_topic_name(name) {
            return Err(Error::InvalidTopicName {
                name: name.to_owned(),
            });
        }
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        cfg.check(name)?;
        let _creating = self
            .create_lock
            .lock()
            .unwrap_or_else(PoisonError::into_inner);
        if let Some(t) = self.topic(name) {
            return Ok(t);
        }
        let dir = self.topic_dir(name);
        fs::create_dir_all(&dir).map_err(Error::io("create directory", &dir))?;
        write_topic_meta(&dir, &cfg)?;
        segment::sync_dir(&self.dir.join("topics"))?;
        let topic = Arc::new(self.open_topic(name, cfg)?);
        self.topics
            .write()
            .unwrap_or_else(PoisonError::into_inner)
            .insert(name.to_owned(), topic.clone());
        tracing::info!(topic = name, partitions = cfg.partitions, "created topic");
        Ok(topic)
    }
}

/// Write `topic.json` atomically: temp file, fsync, rename, fsync the directory.
fn write_topic_meta(dir: &Path, cfg: &TopicConfig) -> Result<(), Error> {
    let meta = TopicMeta {
        version: TOPIC_META_VERSION,
        partitions: cfg.partitions,
        segment_bytes: cfg.segment_bytes,
    };
    let path = dir.join("topic.json");
    let mut bytes = serde_json::to_vec(&meta).map_err(|source| Error::TopicMeta {
        path: path.clone(),
        source,
    })?;
    bytes.push(b'\n');
    Ok(tributary_common::fs::write_atomic(&path, &bytes)?)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn topic_config_bounds() {
        let c = |partitions, segment_bytes| TopicConfig {
            partitions,
            segment_bytes,
        };
        assert!(c(1, 1).check("t").is_ok());
        assert!(c(MAX_PARTITIONS, u64::from(u32::MAX)).check("t").is_ok());
        assert!(c(0, 1024).check("t").is_err());
        assert!(c(MAX_PARTITIONS + 1, 1024).check("t").is_err());
        assert!(c(1, 0).check("t").is_err());
        assert!(c(1, u64::from(u32::MAX) + 1).check("t").is_err());
        assert!(TopicConfig::default().check("t").is_ok());
    }
}
