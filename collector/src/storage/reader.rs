//! The read side of the store, for every front door but ingest (the HTTP API now;
//! the Kafka protocol and the console next). A [`StoreReader`] lists topics, reads
//! partitions by offset, looks offsets up by time, waits for new records and keeps
//! consumer groups' offsets. It has no way to append: only
//! [`Storage`](super::Storage), which ingest holds, can. Its async methods run the
//! synchronous store on the blocking pool, so handlers never do.

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::watch;
use tokio::task::JoinError;
use tributary_store::{Partition, ReadResult, Store, TimestampOffset, Topic, Usage};

use super::groups::{GroupError, GroupOffsets, Groups};

/// Why a read, a lookup or a commit did not answer.
#[derive(Debug, Error)]
pub enum ReadError {
    #[error(transparent)]
    Store(#[from] tributary_store::Error),
    #[error(transparent)]
    Groups(#[from] GroupError),
    /// The blocking task panicked or was cancelled (a bug, or shutdown).
    #[error("storage task failed")]
    Task(#[from] JoinError),
}

/// Read-only handle on the store and the consumer groups; cheap to clone.
#[derive(Clone)]
pub struct StoreReader {
    store: Arc<Store>,
    groups: Arc<Groups>,
    changed: watch::Receiver<u64>,
}

impl StoreReader {
    pub(super) fn new(
        store: Arc<Store>,
        groups: Arc<Groups>,
        changed: watch::Receiver<u64>,
    ) -> StoreReader {
        StoreReader {
            store,
            groups,
            changed,
        }
    }

    /// All topics, sorted by name.
    pub fn topics(&self) -> Vec<TopicReader> {
        self.store.topics().into_iter().map(TopicReader).collect()
    }

    /// The topic called `name`, if it exists.
    pub fn topic(&self, name: &str) -> Option<TopicReader> {
        self.store.topic(name).map(TopicReader)
    }

    /// Partitions that cannot take writes now: (topic, partition, why).
    pub fn problems(&self) -> Vec<(String, u32, String)> {
        let mut out = Vec::new();
        for t in self.store.topics() {
            for p in t.partitions() {
                if let Some(why) = p.problem() {
                    out.push((t.name().to_owned(), p.id(), why));
                }
            }
        }
        out
    }

    /// The descriptors the store holds now, against its budget.
    pub fn descriptors(&self) -> Usage {
        self.store.descriptors()
    }

    /// Bytes of expanded batches the store's read cache keeps now.
    pub fn read_cache_bytes(&self) -> usize {
        self.store.read_cache_bytes()
    }

    /// A receiver that changes whenever new records become visible or a start
    /// offset moves on.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        let mut rx = self.changed.clone();
        rx.mark_unchanged();
        rx
    }

    /// Wait until something changes or `timeout` passes.
    pub async fn wait_for_change(rx: &mut watch::Receiver<u64>, timeout: Duration) {
        let _ = tokio::time::timeout(timeout, rx.changed()).await;
    }

    /// Names of the consumer groups.
    pub fn group_names(&self) -> Vec<String> {
        self.groups.names()
    }

    /// A group's committed offsets (none for an unknown group).
    pub fn group_offsets(&self, group: &str) -> GroupOffsets {
        self.groups.offsets(group)
    }

    /// Commit `(topic, partition, offset)`s for `group` together; durable on return.
    pub async fn commit(
        &self,
        group: &str,
        commits: Vec<(String, u32, u64)>,
        now_ms: i64,
    ) -> Result<(), ReadError> {
        let groups = self.groups.clone();
        let group = group.to_owned();
        tokio::task::spawn_blocking(move || groups.commit(&group, &commits, now_ms)).await??;
        Ok(())
    }
}

/// Read-only view of one topic.
#[derive(Clone)]
pub struct TopicReader(Arc<Topic>);

impl From<Arc<Topic>> for TopicReader {
    fn from(topic: Arc<Topic>) -> TopicReader {
        TopicReader(topic)
    }
}

impl TopicReader {
    pub fn name(&self) -> &str {
        self.0.name()
    }

    /// Its partitions, by id.
    pub fn partitions(&self) -> Vec<PartitionReader> {
        self.0
            .partitions()
            .iter()
            .map(|p| PartitionReader(p.clone()))
            .collect()
    }

    pub fn partition(&self, id: u32) -> Option<PartitionReader> {
        self.0.partition(id).map(|p| PartitionReader(p.clone()))
    }

    pub fn partition_count(&self) -> usize {
        self.0.partitions().len()
    }
}

/// Read-only view of one partition. It has no way to append:
///
/// ```compile_fail
/// # use tributary_collector::storage::PartitionReader;
/// fn write(p: &PartitionReader, payload: &[u8]) {
///     p.append(payload, &Default::default());
/// }
/// ```
#[derive(Clone)]
pub struct PartitionReader(Arc<Partition>);

impl PartitionReader {
    pub fn id(&self) -> u32 {
        self.0.id()
    }

    /// The first offset still stored (retention moves it on).
    pub fn start_offset(&self) -> u64 {
        self.0.start_offset()
    }

    /// The offset the next record will get: everything below is readable.
    pub fn end_offset(&self) -> u64 {
        self.0.end_offset()
    }

    /// Bytes on disk.
    pub fn size_bytes(&self) -> u64 {
        self.0.size_bytes()
    }

    /// Records from `offset`: at most `max_records`, about `max_bytes` of payload,
    /// always at least one when there is one.
    pub async fn read(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, ReadError> {
        let p = self.0.clone();
        Ok(tokio::task::spawn_blocking(move || p.read(offset, max_records, max_bytes)).await??)
    }

    /// The first record at or after `timestamp_ms` (`None`: no record is that new).
    pub async fn offset_for_timestamp(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, ReadError> {
        let p = self.0.clone();
        Ok(tokio::task::spawn_blocking(move || p.offset_for_timestamp(timestamp_ms)).await??)
    }

    /// [`PartitionReader::read`] on the calling thread, for engines that already
    /// run on the blocking pool (queries).
    pub fn read_blocking(
        &self,
        offset: u64,
        max_records: usize,
        max_bytes: usize,
    ) -> Result<ReadResult, tributary_store::Error> {
        self.0.read(offset, max_records, max_bytes)
    }

    /// Visit the records of `from..to` borrowed from the stored batches (see
    /// [`Partition::scan`](tributary_store::Partition::scan)), on the calling
    /// thread; returns where to continue.
    pub fn scan_blocking(
        &self,
        from: u64,
        to: u64,
        visit: impl FnMut(
            u64,
            &tributary_common::record::BlockHeader<'_>,
            &tributary_common::record::RecordRef<'_>,
        ) -> std::ops::ControlFlow<()>,
    ) -> Result<u64, tributary_store::Error> {
        self.0.scan(from, to, visit)
    }

    /// [`PartitionReader::offset_for_timestamp`] on the calling thread.
    pub fn offset_for_timestamp_blocking(
        &self,
        timestamp_ms: i64,
    ) -> Result<Option<TimestampOffset>, tributary_store::Error> {
        self.0.offset_for_timestamp(timestamp_ms)
    }
}
