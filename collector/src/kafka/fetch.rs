//! Fetch and ListOffsets: reading partitions by offset and finding offsets by time.
//!
//! Fetch long-polls like the HTTP API: with less than `min_bytes` ready it waits for
//! new records until `max_wait_ms` (at most [`MAX_WAIT`]). Each partition answers one
//! v2 batch of the records read from its fetch offset, within the partition's and
//! the answer's byte limits (at most `kafka.max_fetch_bytes`), and always at least
//! one record for the first partition that has any, as Kafka does. An offset below
//! the retention start or past the end is `OFFSET_OUT_OF_RANGE` with the current
//! start and end, which clients use to reset.

use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::TopicName;
use kafka_protocol::messages::fetch_request::FetchRequest;
use kafka_protocol::messages::fetch_response::{
    FetchResponse, FetchableTopicResponse, PartitionData,
};
use kafka_protocol::messages::list_offsets_request::ListOffsetsRequest;
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsResponse, ListOffsetsTopicResponse,
};
use tokio::time::Instant;

use super::records::{FetchCompression, encode_batch};
use super::{Broker, Request, code};
use crate::storage::{PartitionReader, StoreReader};

/// The longest a Fetch waits for records, whatever the client asks.
pub const MAX_WAIT: Duration = Duration::from_secs(30);
/// Most records read for one partition of one Fetch.
const MAX_RECORDS: usize = 100_000;
/// Kafka's CORRUPT_MESSAGE: damaged data on disk.
const CORRUPT_MESSAGE: i16 = 2;

/// ListOffsets' special timestamps.
const LATEST: i64 = -1;
const EARLIEST: i64 = -2;
const MAX_TIMESTAMP: i64 = -3;

pub async fn list_offsets(
    broker: &Broker,
    _ctx: &Request<'_>,
    req: ListOffsetsRequest,
) -> ListOffsetsResponse {
    let mut topics = Vec::with_capacity(req.topics.len().min(1024));
    for t in req.topics {
        let topic = broker.store.topic(t.name.0.as_str());
        let mut partitions = Vec::new();
        for p in t.partitions {
            let answer = ListOffsetsPartitionResponse::default()
                .with_partition_index(p.partition_index)
                .with_leader_epoch(-1);
            let part = topic.as_ref().and_then(|t| {
                u32::try_from(p.partition_index)
                    .ok()
                    .and_then(|i| t.partition(i))
            });
            let Some(part) = part else {
                partitions.push(answer.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let (offset, timestamp, error) = lookup(&part, p.timestamp).await;
            partitions.push(
                answer
                    .with_error_code(error)
                    .with_offset(offset)
                    .with_timestamp(timestamp),
            );
        }
        topics.push(
            ListOffsetsTopicResponse::default()
                .with_name(t.name)
                .with_partitions(partitions),
        );
    }
    ListOffsetsResponse::default().with_topics(topics)
}

/// (offset, timestamp, error) for one ListOffsets partition.
async fn lookup(p: &PartitionReader, ts: i64) -> (i64, i64, i16) {
    let int = |o: u64| i64::try_from(o).unwrap_or(i64::MAX);
    match ts {
        LATEST => (int(p.end_offset()), -1, code::NONE),
        EARLIEST => (int(p.start_offset()), -1, code::NONE),
        MAX_TIMESTAMP => {
            // The newest record (records of one source arrive in time order).
            let end = p.end_offset();
            if end == p.start_offset() {
                return (-1, -1, code::NONE);
            }
            match p.read(end - 1, 1, 1).await {
                Ok(r) => match r.records.first() {
                    Some(rec) => (int(rec.offset), rec.timestamp_ms, code::NONE),
                    None => (-1, -1, code::NONE),
                },
                Err(_) => (-1, -1, code::UNKNOWN_SERVER_ERROR),
            }
        }
        ts if ts >= 0 => match p.offset_for_timestamp(ts).await {
            Ok(Some(found)) => (int(found.offset), found.timestamp_ms, code::NONE),
            // No record is that new: Kafka answers -1, clients go to the end.
            Ok(None) => (-1, -1, code::NONE),
            Err(e) => {
                tracing::warn!(partition = p.id(), error = %tributary_common::error::report(&e), "Kafka offset lookup failed");
                (-1, -1, code::UNKNOWN_SERVER_ERROR)
            }
        },
        _ => (-1, -1, code::UNKNOWN_SERVER_ERROR),
    }
}

pub async fn fetch(broker: &Broker, _ctx: &Request<'_>, req: FetchRequest) -> FetchResponse {
    let wait = Duration::from_millis(u64::try_from(req.max_wait_ms).unwrap_or(0)).min(MAX_WAIT);
    let deadline = Instant::now() + wait;
    let limit = usize::try_from(req.max_bytes)
        .unwrap_or(0)
        .clamp(1, broker.settings.max_fetch_bytes);
    let min_bytes = usize::try_from(req.min_bytes).unwrap_or(0);
    let mut changes = broker.store.subscribe();
    loop {
        changes.borrow_and_update();
        let (answer, bytes, errors) = fetch_once(broker, &req, limit).await;
        if bytes >= min_bytes.max(1) || errors || Instant::now() >= deadline {
            return answer;
        }
        tokio::select! {
            _ = StoreReader::wait_for_change(&mut changes, deadline - Instant::now()) => {}
            _ = broker.shutdown.cancelled() => return answer,
        }
    }
}

/// One pass over the requested partitions: the answer, its record bytes, and
/// whether any partition answered an error (which is answered at once).
async fn fetch_once(
    broker: &Broker,
    req: &FetchRequest,
    limit: usize,
) -> (FetchResponse, usize, bool) {
    let mut total = 0usize;
    let mut errors = false;
    let mut responses = Vec::with_capacity(req.topics.len().min(1024));
    for t in &req.topics {
        let topic = broker.store.topic(t.topic.0.as_str());
        let mut partitions = Vec::with_capacity(t.partitions.len().min(1024));
        for p in &t.partitions {
            let part = topic
                .as_ref()
                .and_then(|t| u32::try_from(p.partition).ok().and_then(|i| t.partition(i)));
            let answer = PartitionData::default()
                .with_partition_index(p.partition)
                .with_aborted_transactions(Some(Vec::new()));
            let Some(part) = part else {
                errors = true;
                partitions.push(answer.with_error_code(code::UNKNOWN_TOPIC_OR_PARTITION));
                continue;
            };
            let per_partition = usize::try_from(p.partition_max_bytes).unwrap_or(0);
            let budget = per_partition.min(limit.saturating_sub(total));
            // Nothing read yet in this answer: at least one record, whatever the limits.
            let budget = if total == 0 { budget.max(1) } else { budget };
            let read =
                read_partition(&part, p.fetch_offset, budget, broker.settings.compression).await;
            let (start, end) = (part.start_offset(), part.end_offset());
            let int = |o: u64| i64::try_from(o).unwrap_or(i64::MAX);
            let answer = answer
                .with_high_watermark(int(end))
                .with_last_stable_offset(int(end))
                .with_log_start_offset(int(start));
            match read {
                Ok(records) => {
                    total += records.len();
                    partitions.push(answer.with_records(Some(records)));
                }
                Err(error) => {
                    errors = true;
                    partitions.push(
                        answer
                            .with_error_code(error)
                            .with_records(Some(Bytes::new())),
                    );
                }
            }
        }
        responses.push(
            FetchableTopicResponse::default()
                .with_topic(TopicName(t.topic.0.clone()))
                .with_partitions(partitions),
        );
    }
    (
        FetchResponse::default()
            .with_error_code(code::NONE)
            .with_session_id(0)
            .with_responses(responses),
        total,
        errors,
    )
}

/// The encoded batch of one partition from `offset`, or a Kafka error code.
async fn read_partition(
    p: &PartitionReader,
    offset: i64,
    budget: usize,
    compression: FetchCompression,
) -> Result<Bytes, i16> {
    let (start, end) = (p.start_offset(), p.end_offset());
    let Ok(offset) = u64::try_from(offset) else {
        return Err(code::OFFSET_OUT_OF_RANGE);
    };
    if offset < start || offset > end {
        return Err(code::OFFSET_OUT_OF_RANGE);
    }
    if offset == end || budget == 0 {
        return Ok(Bytes::new());
    }
    let p = p.clone();
    let encoded = tokio::task::spawn_blocking(move || {
        let read = p.read_blocking(offset, MAX_RECORDS, budget)?;
        Ok::<_, tributary_store::Error>(encode_batch(&read.records, compression))
    })
    .await;
    match encoded {
        Ok(Ok(Ok(bytes))) => Ok(bytes),
        Ok(Ok(Err(e))) => {
            tracing::error!(error = %e, "Kafka fetch could not encode records");
            Err(code::UNKNOWN_SERVER_ERROR)
        }
        // Retention moved the start past the offset meanwhile.
        Ok(Err(tributary_store::Error::OffsetOutOfRange { .. })) => Err(code::OFFSET_OUT_OF_RANGE),
        Ok(Err(e @ tributary_store::Error::Corrupt { .. })) => {
            tracing::error!(error = %e, "Kafka fetch reached damaged data");
            Err(CORRUPT_MESSAGE)
        }
        Ok(Err(e)) => {
            tracing::error!(error = %e, "Kafka fetch failed");
            Err(code::UNKNOWN_SERVER_ERROR)
        }
        Err(e) => {
            tracing::error!(error = %e, "Kafka fetch task failed");
            Err(code::UNKNOWN_SERVER_ERROR)
        }
    }
}
