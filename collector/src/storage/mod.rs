//! The async face of the synchronous store. [`Storage`] is the write side, held by
//! ingest (and retention): topic creation from config, routing a batch's blocks to
//! partitions, group-committed durability, and the change signal long-polling
//! readers wait on. [`StoreReader`] is the read side every other front door gets;
//! it cannot append. The only place where tokio meets the store.

use std::sync::Arc;

use bytes::Bytes;
use thiserror::Error;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tributary_common::codec::Compression;
use tributary_common::record::{self, PayloadSummary};
use tributary_store::{Partition, Store, StoreOptions, Topic, TopicConfig};

use crate::config::{CollectorConfig, FsyncMode};

pub mod clock;
pub mod groups;
pub mod reader;

pub use reader::{PartitionReader, ReadError, StoreReader, TopicReader};

#[derive(Debug, Error)]
pub enum StorageError {
    #[error("invalid topic name `{0}`")]
    InvalidTopic(String),
    /// The topic does not exist and may not be created now.
    #[error("{0}")]
    TopicRefused(String),
    #[error(transparent)]
    Store(#[from] tributary_store::Error),
    /// A batch that passed validation no longer decodes: a bug, never the
    /// sender's fault.
    #[error("internal error: {0}")]
    Internal(String),
    /// The blocking task panicked or was cancelled.
    #[error("storage task failed")]
    Task(#[from] tokio::task::JoinError),
    #[error(transparent)]
    Groups(#[from] groups::GroupError),
    /// The topic exists with fewer partitions.
    #[error("no partition {0} in this topic")]
    UnknownPartition(u32),
}

/// Where one batch landed: each touched partition and the end offset it reached.
pub struct Appended {
    pub parts: Vec<(Arc<Partition>, u64)>,
    /// Records stored by this append.
    pub records: u64,
    /// Records dropped because they were already stored (resends).
    pub duplicates: u64,
    /// Records whose timestamp was outside the clock skew window, given their
    /// arrival time (see `clock`).
    pub retimed: u64,
}

/// A batch's payload as its sender compressed it (see [`tributary_store::Sent`]):
/// `bytes` decompress with `codec` to `len` bytes, which are the payload once
/// stamped with `agent`. When the payload goes whole to one partition with the
/// topic's codec, these bytes are stored instead of compressing it again.
pub struct SentPayload {
    pub codec: Compression,
    pub bytes: Bytes,
    pub len: usize,
    pub agent: Option<Arc<str>>,
}

/// A batch routed to its partitions and compressed for them ([`Storage::prepare`]),
/// to be appended with [`Storage::commit`]. Preparing takes no lock, so a
/// connection prepares its next batch while the previous one is appended.
pub struct PreparedBatch {
    /// Per partition: its records (the whole payload when it all goes to one) and
    /// how they are stored.
    parts: Vec<(
        Arc<Partition>,
        Vec<u8>,
        PayloadSummary,
        tributary_store::Prepared,
    )>,
    retimed: u64,
    now_ms: i64,
}

/// Shared handle on the store.
pub struct Storage {
    store: Arc<Store>,
    config: Arc<CollectorConfig>,
    changed: watch::Sender<u64>,
    reader: StoreReader,
}

impl Storage {
    /// Open (and recover) the store under `config.data_dir`. Blocking; call at start-up.
    pub fn open(config: Arc<CollectorConfig>) -> Result<Storage, StorageError> {
        let store = Store::open(
            &config.data_dir,
            StoreOptions {
                publish_on_sync: config.fsync == FsyncMode::Always,
                budget: crate::descriptors::Plan::for_config(&config).store,
                ..StoreOptions::default()
            },
        )?;
        // Segment age and compression are policies, not stored with the topic:
        // apply the config's.
        for t in store.topics() {
            let settings = config.topic_settings(t.name());
            t.set_segment_age(settings.segment_age);
            t.set_compression(settings.compression);
        }
        let groups = groups::Groups::open(&config.data_dir)?;
        groups.set_max_groups(config.max_groups);
        let (changed, rx) = watch::channel(0);
        let (store, groups) = (Arc::new(store), Arc::new(groups));
        Ok(Storage {
            reader: StoreReader::new(store.clone(), groups.clone(), rx),
            store,
            config,
            changed,
        })
    }

    /// The read side, for the front doors that must not write.
    pub fn reader(&self) -> StoreReader {
        self.reader.clone()
    }

    pub fn store(&self) -> &Arc<Store> {
        &self.store
    }

    pub fn config(&self) -> &CollectorConfig {
        &self.config
    }

    /// Wake long-polling readers (new records, or a start offset that moved on).
    pub(crate) fn bump(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Append a validated payload to `topic`, creating the topic on first use. Each
    /// block goes to the partition of its source, so one source stays in order in
    /// one partition. Returns once the data is written (not yet durable).
    pub async fn append(
        &self,
        topic: &str,
        payload: Vec<u8>,
        summary: PayloadSummary,
    ) -> Result<Appended, StorageError> {
        let now = tributary_common::timefmt::now_ms();
        self.append_inner(topic, payload, summary, None, now).await
    }

    /// [`Storage::append`] arriving at `now_ms` (wall clock in production; tests
    /// replay days of arrivals in a moment). Segment rolls, retention and the clock
    /// skew window all measure from the arrival time.
    pub async fn append_at(
        &self,
        topic: &str,
        payload: Vec<u8>,
        summary: PayloadSummary,
        now_ms: i64,
    ) -> Result<Appended, StorageError> {
        self.append_inner(topic, payload, summary, None, now_ms)
            .await
    }

    async fn append_inner(
        &self,
        topic: &str,
        payload: Vec<u8>,
        summary: PayloadSummary,
        sent: Option<SentPayload>,
        now_ms: i64,
    ) -> Result<Appended, StorageError> {
        let (store, config) = (self.store.clone(), self.config.clone());
        let topic = topic.to_owned();
        let appended = tokio::task::spawn_blocking(move || {
            let prepared = prepare(&store, &config, &topic, payload, summary, sent, now_ms)?;
            commit_blocking(prepared)
        })
        .await??;
        if self.config.fsync == FsyncMode::Interval {
            self.bump();
        }
        Ok(appended)
    }

    /// The first half of an append at `now_ms`, blocking (call it on
    /// the blocking pool): admit and create the topic, retime what is outside the
    /// clock skew window, route the blocks to partitions and compress each part.
    /// Nothing is written; batches of one connection may be prepared ahead of
    /// their turn, and are committed in order.
    pub fn prepare(
        &self,
        topic: &str,
        payload: Vec<u8>,
        summary: PayloadSummary,
        sent: Option<SentPayload>,
        now_ms: i64,
    ) -> Result<PreparedBatch, StorageError> {
        prepare(
            &self.store,
            &self.config,
            topic,
            payload,
            summary,
            sent,
            now_ms,
        )
    }

    /// The second half of an append: append a batch [`Storage::prepare`] made.
    /// Returns once the data is written (not yet durable).
    pub async fn commit(&self, prepared: PreparedBatch) -> Result<Appended, StorageError> {
        let appended = tokio::task::spawn_blocking(move || commit_blocking(prepared)).await??;
        if self.config.fsync == FsyncMode::Interval {
            self.bump();
        }
        Ok(appended)
    }

    /// Create `topic` if it does not exist and may be created (see `append`).
    pub async fn create_topic(&self, topic: &str) -> Result<(), StorageError> {
        let (store, config) = (self.store.clone(), self.config.clone());
        let topic = topic.to_owned();
        tokio::task::spawn_blocking(move || open_topic(&store, &config, &topic).map(drop))
            .await??;
        Ok(())
    }

    /// Append a validated payload to one partition of `topic`, chosen by the
    /// sender (Kafka producers pick their partition), creating the topic on first
    /// use. `UnknownPartition` when the topic has fewer partitions.
    pub async fn append_partition(
        &self,
        topic: &str,
        partition: u32,
        payload: Vec<u8>,
        summary: PayloadSummary,
    ) -> Result<Appended, StorageError> {
        let (store, config) = (self.store.clone(), self.config.clone());
        let topic = topic.to_owned();
        let now_ms = tributary_common::timefmt::now_ms();
        let skew_ms = i64::try_from(self.config.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
        let appended = tokio::task::spawn_blocking(move || -> Result<Appended, StorageError> {
            let (payload, summary, retimed) =
                match crate::storage::clock::sanitize(&payload, &summary, now_ms, skew_ms) {
                    Ok(Some((p, s, n))) => (p, s, u64::from(n)),
                    Ok(None) => (payload, summary, 0),
                    Err(e) => {
                        return Err(StorageError::Internal(format!(
                            "payload changed after validation: {e}"
                        )));
                    }
                };
            let t = open_topic(&store, &config, &topic)?;
            let part = t
                .partition(partition)
                .ok_or(StorageError::UnknownPartition(partition))?;
            let r = part.append_at(&payload, &summary, now_ms)?;
            Ok(Appended {
                parts: vec![(part.clone(), r.next_offset)],
                records: u64::from(r.appended),
                duplicates: u64::from(r.duplicates),
                retimed,
            })
        })
        .await??;
        if self.config.fsync == FsyncMode::Interval {
            self.bump();
        }
        Ok(appended)
    }

    /// Wait until everything in `appended` is durable (`fsync: always`); concurrent
    /// callers share fsyncs (group commit). With `fsync: interval` this returns at once.
    pub async fn make_durable(&self, appended: &Appended) -> Result<(), StorageError> {
        if self.config.fsync == FsyncMode::Interval {
            return Ok(());
        }
        for (p, end) in &appended.parts {
            let p = p.clone();
            let end = *end;
            tokio::task::spawn_blocking(move || p.sync_to(end)).await??;
        }
        self.bump();
        Ok(())
    }

    /// With `fsync: interval`, flush every partition every `interval` until `shutdown`,
    /// then once more.
    pub async fn run_flusher(self: Arc<Self>, shutdown: CancellationToken) {
        if self.config.fsync != FsyncMode::Interval {
            return;
        }
        let mut tick = tokio::time::interval(self.config.fsync_interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            let stop = tokio::select! {
                _ = tick.tick() => false,
                _ = shutdown.cancelled() => true,
            };
            let store = self.store.clone();
            let r = tokio::task::spawn_blocking(move || sync_all(&store)).await;
            if let Ok(Err(e)) = r {
                tracing::error!(error = %e, "periodic fsync failed");
            }
            if stop {
                return;
            }
        }
    }

    /// Flush everything (used at shutdown).
    pub async fn flush_all(&self) {
        let store = self.store.clone();
        if let Ok(Err(e)) = tokio::task::spawn_blocking(move || sync_all(&store)).await {
            tracing::error!(error = %e, "final fsync failed");
        }
    }
}

/// Whether `topic` may be written: a valid name, and an existing topic or one
/// that may be created now (configured, or `topics.auto_create` within
/// `topics.max_topics`).
fn admit_topic(store: &Store, config: &CollectorConfig, topic: &str) -> Result<(), StorageError> {
    if !tributary_common::names::valid_topic_name(topic) {
        return Err(StorageError::InvalidTopic(topic.to_owned()));
    }
    if store.topic(topic).is_some() {
        return Ok(());
    }
    let configured = config.topics.contains_key(topic);
    if !config.auto_create && !configured {
        return Err(StorageError::TopicRefused(format!(
            "topic `{topic}` does not exist and topics.auto_create is off: add it under topics: in collector.yaml"
        )));
    }
    let n = store.topics().len();
    if n >= config.max_topics {
        return Err(StorageError::TopicRefused(format!(
            "topic `{topic}` would be topic {} of at most {} (topics.max_topics): raise it or ship to an existing topic",
            n + 1,
            config.max_topics
        )));
    }
    Ok(())
}

/// See [`Storage::prepare`].
fn prepare(
    store: &Store,
    config: &CollectorConfig,
    topic: &str,
    payload: Vec<u8>,
    summary: PayloadSummary,
    sent: Option<SentPayload>,
    now_ms: i64,
) -> Result<PreparedBatch, StorageError> {
    let t = open_topic(store, config, topic)?;
    let skew_ms = i64::try_from(config.max_clock_skew.as_millis()).unwrap_or(i64::MAX);
    let (payload, summary, retimed, sent) =
        match crate::storage::clock::sanitize(&payload, &summary, now_ms, skew_ms) {
            // Retimed: the bytes as sent no longer match the payload.
            Ok(Some((p, s, n))) => (p, s, u64::from(n), None),
            Ok(None) => (payload, summary, 0, sent),
            Err(e) => {
                return Err(StorageError::Internal(format!(
                    "payload changed after validation: {e}"
                )));
            }
        };
    let sent = sent.as_ref().map(|s| tributary_store::Sent {
        codec: s.codec,
        bytes: &s.bytes,
        len: s.len,
        agent: s.agent.as_deref().unwrap_or(""),
    });
    let (single, split) = split_by_partition(&t, payload, summary)?;
    // The bytes as sent match only a payload that goes whole to one partition.
    let sent = sent.filter(|_| single);
    let mut parts = Vec::with_capacity(split.len());
    for (p, bytes, summary) in split {
        let part = t
            .partition(p)
            .ok_or_else(|| StorageError::Internal(format!("partition {p} missing")))?;
        let prepared = part.prepare(&bytes, &summary, sent)?;
        parts.push((part.clone(), bytes, summary, prepared));
    }
    Ok(PreparedBatch {
        parts,
        retimed,
        now_ms,
    })
}

/// `topic`, created with its configured settings if it does not exist yet and
/// may be created ([`admit_topic`]). The check and the creation hold one lock, so
/// batches prepared at once (one connection's, or several connections') cannot
/// together create more topics than `topics.max_topics`.
fn open_topic(
    store: &Store,
    config: &CollectorConfig,
    topic: &str,
) -> Result<Arc<Topic>, StorageError> {
    static CREATING: std::sync::Mutex<()> = std::sync::Mutex::new(());
    if let Some(t) = store.topic(topic) {
        return Ok(t);
    }
    let _creating = CREATING
        .lock()
        .unwrap_or_else(std::sync::PoisonError::into_inner);
    admit_topic(store, config, topic)?;
    if let Some(t) = store.topic(topic) {
        return Ok(t);
    }
    let settings = config.topic_settings(topic);
    let t = store.create_topic(
        topic,
        TopicConfig {
            partitions: settings.partitions,
            segment_bytes: settings.segment_bytes,
        },
    )?;
    t.set_segment_age(settings.segment_age);
    t.set_compression(settings.compression);
    Ok(t)
}

fn sync_all(store: &Store) -> Result<(), tributary_store::Error> {
    for t in store.topics() {
        for p in t.partitions() {
            p.sync()?;
        }
    }
    Ok(())
}

/// The records of one batch that go to one partition.
type Part = (u32, Vec<u8>, PayloadSummary);

/// Split `payload` by partition. Most batches come from one source, so when every
/// block goes to one partition the payload is that one part as it is (and `true`).
fn split_by_partition(
    topic: &Topic,
    payload: Vec<u8>,
    summary: PayloadSummary,
) -> Result<(bool, Vec<Part>), StorageError> {
    let n = topic.partitions().len() as u32;
    let changed = |e: record::DecodeError| {
        StorageError::Internal(format!("payload changed after validation: {e}"))
    };
    // Block headers only, then the records of a payload that must be split.
    let mut blocks: Vec<(u32, record::BlockRef<'_>)> = Vec::new();
    for block in record::blocks(&payload, false) {
        let block = block.map_err(changed)?;
        blocks.push((record::partition_for_block(&block.header, n), block));
    }
    if blocks.windows(2).all(|w| w[0].0 == w[1].0) {
        let Some(&(p, _)) = blocks.first() else {
            return Ok((true, Vec::new()));
        };
        drop(blocks);
        return Ok((true, vec![(p, payload, summary)]));
    }
    let mut parts: Vec<Part> = Vec::new();
    for (p, block) in &blocks {
        let mut s = PayloadSummary::default();
        for (i, r) in block.records().enumerate() {
            s.add(r.map_err(changed)?.timestamp_ms, i == 0);
        }
        let idx = match parts.iter().position(|(q, _, _)| q == p) {
            Some(i) => i,
            None => {
                parts.push((*p, Vec::new(), PayloadSummary::default()));
                parts.len() - 1
            }
        };
        parts[idx].1.extend_from_slice(block.bytes);
        merge_summary(&mut parts[idx].2, &s);
    }
    Ok((false, parts))
}

/// See [`Storage::commit`].
fn commit_blocking(prepared: PreparedBatch) -> Result<Appended, StorageError> {
    let mut appended = Appended {
        parts: Vec::new(),
        records: 0,
        duplicates: 0,
        retimed: prepared.retimed,
    };
    for (part, payload, summary, stored) in &prepared.parts {
        let r = part.append_prepared(payload, summary, prepared.now_ms, stored)?;
        appended.records += u64::from(r.appended);
        appended.duplicates += u64::from(r.duplicates);
        appended.parts.push((part.clone(), r.next_offset));
    }
    Ok(appended)
}

fn merge_summary(into: &mut PayloadSummary, s: &PayloadSummary) {
    if into.records == 0 {
        *into = *s;
        return;
    }
    if s.records == 0 {
        return;
    }
    into.records += s.records;
    into.blocks += s.blocks;
    into.last_timestamp_ms = s.last_timestamp_ms;
    into.min_timestamp_ms = into.min_timestamp_ms.min(s.min_timestamp_ms);
    into.max_timestamp_ms = into.max_timestamp_ms.max(s.max_timestamp_ms);
}
