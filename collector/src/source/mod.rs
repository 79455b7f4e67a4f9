//! Sources: the collector consuming Kafka topics (`sources: - kafka: …` in
//! `collector.yaml`) into its own topics, exactly once, with agents that ship to
//! Kafka (`output.kafka`) and with any other producer.
//!
//! ## Flow
//! One task per source ([`consumer::Consumer`]): join the consumer group
//! (static membership, range assignment computed by the leader), read where the
//! group's committed offsets say (the earliest offset when none), then in rounds:
//! Fetch from each assigned partition's leader → decode the batches (bounded
//! decompression, control batches and aborted transactions skipped) → translate
//! each Kafka record into our record ([`translate`]) → append through
//! [`Storage::append`](crate::storage::Storage::append), exactly like an ingest
//! batch (routing by source, deduplication) → wait until durable (group-committed
//! fsync) → only then commit the next offsets to the group: with `fsync: always`
//! right after each round that moved a position (one OffsetCommit per round with
//! new data, none for idle rounds), so that a collector killed between its fsync
//! and its commit leaves at most that one round for the next owner of its
//! partitions to read again; with `fsync: interval` once the flush interval has
//! passed, looked at once a second ([`commits`]); and always before leaving or
//! rejoining. A heartbeat task keeps the membership and says when the group
//! rebalances.
//!
//! ## Exactly once: the Kafka offsets consumed are stored with the data
//! Every stored record carries a source identity and a source offset, and each
//! partition of the store keeps, durably with its log, the highest source offset
//! it holds per (host, source id), dropping any record at or below it
//! (`collector/store/src/dedup`). Agent records carry their own (from the
//! `tributary.source_id` and `tributary.offset` headers); every other record gets
//! the synthetic source of its Kafka topic-partition with Kafka offset + 1 as its
//! offset. So the store's deduplication table *is* the durable record of which
//! Kafka records were stored, written in the same fsync as the records
//! themselves. The group's committed offset is only a resume hint: a SIGKILL
//! between an append and its commit re-reads those records after the restart, and
//! the store drops them; an agent resending after its own crash (the same record
//! twice in Kafka) is dropped the same way. Nothing is committed before it is
//! durable, so nothing is skipped.
//!
//! Two collectors with separate stores in one group split the partitions; a
//! partition changes hands only after its previous owner committed what it
//! stored (on a rebalance and on SIGTERM, before LeaveGroup), so the union of the
//! stores holds each record once too. What the previous owner stored after its
//! last commit and then crashed with is read again by the new owner: exactly once
//! per store, at least once across stores in that case.
//!
//! ## Faults
//! Errors name the broker, topic and group; a source retries with backoff
//! (100 ms doubling to 30 s, with jitter) and shows as degraded in `/healthz`
//! meanwhile ([`health`]), and recovers by itself. A batch that does not decode is
//! skipped with an error naming its offsets; a batch this build cannot read
//! (snappy, zstd, old formats) stops its partition, visibly, until it can. A
//! record whose Tributary headers are malformed is refused with a warning and
//! counted. An empty Fetch is followed by a pause ([`fetch::IDLE_ROUND`]: the
//! idle latency bound), since some brokers answer at once whatever
//! `max_wait_ms` says.

use std::sync::Arc;

use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;
use tributary_common::kafka::KafkaError;

use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};

pub mod assign;
pub mod cluster;
pub mod commits;
pub mod consumer;
pub mod fetch;
pub mod group;
pub mod health;
pub mod settings;
pub mod translate;

pub use settings::{KafkaSource, KafkaSourceFile, SourceFile};

/// Why a source could not go on (it retries; `/healthz` shows it meanwhile).
#[derive(Debug, thiserror::Error)]
pub enum SourceError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("{0}")]
    Group(String),
    /// The group's generation ended (rebalance, expiry): join again. Not a fault.
    #[error("{0}")]
    Rejoin(String),
    #[error(
        "cannot store records of Kafka topic `{kafka_topic}` partition {partition} into topic `{topic}`: {source}"
    )]
    Store {
        kafka_topic: String,
        partition: i32,
        topic: String,
        #[source]
        source: StorageError,
    },
    /// fsync failed: nothing appended since the last durable point is committed.
    #[error("cannot make the records stored from Kafka durable: {0}")]
    Durable(#[source] StorageError),
}

/// Start every configured source; each stops (bounded) after `shutdown`.
pub fn spawn(
    sources: &[KafkaSource],
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> Vec<JoinHandle<()>> {
    sources
        .iter()
        .map(|s| {
            let c = consumer::Consumer::new(Arc::new(s.clone()), storage.clone(), metrics.clone());
            tokio::spawn(c.run(shutdown.clone()))
        })
        .collect()
}
