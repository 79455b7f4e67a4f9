//! Produce and InitProducerId: Kafka producers write logs in.
//!
//! Each Kafka record becomes a stored record: timestamp = the record's (its
//! arrival time when it has none), host = its `host` header if present, else the
//! client's address, source = `kafka://CLIENT_ID`, message = its value, and its
//! key (as `key`) and other headers as fields. A partition's batches are checked
//! (CRC32C, decompression of none, gzip, lz4 or zstd within [`MAX_DECOMPRESSED`]), appended to the partition
//! the producer chose, and acknowledged only once durable, like agents' batches;
//! `acks=0` gets no answer, as in Kafka.
//!
//! Idempotent producers (the default of kafka-python and confluent-kafka) get a
//! producer id from InitProducerId; per producer and partition the last five
//! batches' sequence ranges are kept, so a batch sent again after a lost answer is
//! answered with its first offsets instead of being stored twice.

use std::collections::{HashMap, VecDeque};
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::sync::atomic::{AtomicI64, Ordering};

use bytes::Bytes;
use kafka_protocol::messages::ProducerId;
use kafka_protocol::messages::init_producer_id_request::InitProducerIdRequest;
use kafka_protocol::messages::init_producer_id_response::InitProducerIdResponse;
use kafka_protocol::messages::produce_request::ProduceRequest;
use kafka_protocol::messages::produce_response::{
    PartitionProduceResponse, ProduceResponse, TopicProduceResponse,
};
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};
use serde_json::{Map, Value};
use tributary_common::record::{BlockWriter, summarize};

use super::{Broker, Request, code};
use crate::storage::StorageError;

/// Most bytes one batch may decompress to.
pub const MAX_DECOMPRESSED: usize = 64 << 20;
/// Largest zstd window accepted (what producers use at any level is far smaller).
const ZSTD_WINDOW: u64 = 8 << 20;
/// Batches remembered per producer and partition (Kafka's in-flight limit with
/// idempotence).
const REMEMBERED: usize = 5;
/// Producer/partition pairs remembered; the oldest are forgotten beyond this.
const MAX_PRODUCERS: usize = 100_000;

/// Kafka error codes of Produce.
const CORRUPT_MESSAGE: i16 = 2;
const INVALID_TOPIC: i16 = 17;
const RECORD_LIST_TOO_LARGE: i16 = 18;
const NOT_ENOUGH_REPLICAS: i16 = 19;
const INVALID_REQUIRED_ACKS: i16 = 21;
const OUT_OF_ORDER_SEQUENCE_NUMBER: i16 = 45;
const TRANSACTIONAL_ID_AUTHORIZATION_FAILED: i16 = 53;
const KAFKA_STORAGE_ERROR: i16 = 56;

/// One remembered batch: its sequence range and the offset it was stored at.
#[derive(Clone, Copy)]
struct Sent {
    first_seq: i32,
    last_seq: i32,
    base_offset: i64,
}

/// (producer id, topic, partition).
type ProducerKey = (i64, String, u32);

/// The batches remembered per key, and the keys in the order they were first seen
/// (the oldest are forgotten first).
#[derive(Default)]
struct Remembered {
    batches: HashMap<ProducerKey, VecDeque<Sent>>,
    order: VecDeque<ProducerKey>,
}

/// Producer ids handed out, and what each producer sent last per partition.
pub struct Producers {
    next_id: AtomicI64,
    sent: Mutex<Remembered>,
}

impl Default for Producers {
    fn default() -> Self {
        // Ids unique across restarts: milliseconds since the epoch, shifted.
        let start = tributary_common::timefmt::now_ms().max(1) << 8;
        Producers {
            next_id: AtomicI64::new(start),
            sent: Mutex::new(Remembered::default()),
        }
    }
}

/// What to do with a batch from an idempotent producer.
enum Sequence {
    /// New: store it (and remember it once stored).
    Store,
    /// Already stored at this offset.
    Duplicate(i64),
    /// A gap or a reordering: refused, the producer resends in order.
    OutOfOrder,
}

impl Producers {
    fn check(&self, key: &ProducerKey, first_seq: i32, last_seq: i32) -> Sequence {
        let sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let Some(batches) = sent.batches.get(key) else {
            return Sequence::Store;
        };
        if let Some(b) = batches
            .iter()
            .find(|b| b.first_seq == first_seq && b.last_seq == last_seq)
        {
            return Sequence::Duplicate(b.base_offset);
        }
        match batches.back() {
            Some(last) if first_seq != last.last_seq.wrapping_add(1) => Sequence::OutOfOrder,
            _ => Sequence::Store,
        }
    }

    fn remember(&self, key: ProducerKey, batch: Sent) {
        let mut sent = self.sent.lock().unwrap_or_else(|e| e.into_inner());
        let Remembered {
            batches: map,
            order,
        } = &mut *sent;
        if !map.contains_key(&key) {
            if map.len() >= MAX_PRODUCERS
                && let Some(old) = order.pop_front()
            {
                map.remove(&old);
            }
            order.push_back(key.clone());
        }
        let batches = map.entry(key).or_default();
        if batches.len() >= REMEMBERED {
            batches.pop_front();
        }
        batches.push_back(batch);
    }
}

pub async fn init_producer_id(
    broker: &Broker,
    _ctx: &Request<'_>,
    req: InitProducerIdRequest,
) -> InitProducerIdResponse {
    if req.transactional_id.is_some() {
        return InitProducerIdResponse::default()
            .with_error_code(TRANSACTIONAL_ID_AUTHORIZATION_FAILED)
            .with_producer_id(ProducerId(-1))
            .with_producer_epoch(-1);
    }
    let id = broker.producers.next_id.fetch_add(1, Ordering::Relaxed);
    InitProducerIdResponse::default()
        .with_producer_id(ProducerId(id))
        .with_producer_epoch(0)
}

/// Decompress one batch's records, refusing more than [`MAX_DECOMPRESSED`] bytes.
fn decompress(data: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    let limit = MAX_DECOMPRESSED as u64 + 1;
    let mut out = Vec::new();
    match codec {
        Compression::None => return Ok(data.clone()),
        Compression::Gzip => {
            flate2::read::MultiGzDecoder::new(&data[..])
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Lz4 => {
            lz4_flex::frame::FrameDecoder::new(&data[..])
                .take(limit)
                .read_to_end(&mut out)?;
        }
        Compression::Zstd => {
            // Frame after frame; each with a window of at most ZSTD_WINDOW.
            let mut input: &[u8] = &data[..];
            while !input.is_empty() && out.len() <= MAX_DECOMPRESSED {
                let left = limit - out.len() as u64;
                ruzstd::decoding::StreamingDecoder::new_with_max_window_size(
                    &mut input,
                    ZSTD_WINDOW,
                )
                .map_err(|e| anyhow::anyhow!("zstd: {e}"))?
                .take(left)
                .read_to_end(&mut out)?;
            }
        }
        other => anyhow::bail!("{other:?} compression is not accepted (none, gzip, lz4, zstd)"),
    }
    if out.len() > MAX_DECOMPRESSED {
        anyhow::bail!("a batch decompresses to more than {MAX_DECOMPRESSED} bytes");
    }
    Ok(Bytes::from(out))
}

/// The batches of one partition's records, decoded and checked.
pub fn decode_batches(mut data: Bytes) -> Result<Vec<Vec<Record>>, String> {
    let mut batches = Vec::new();
    while !data.is_empty() {
        let set = RecordBatchDecoder::decode_with_custom_compression(&mut data, Some(decompress))
            .map_err(|e| e.to_string())?;
        batches.push(set.records);
    }
    Ok(batches)
}

/// Encode Kafka records as one payload of record blocks (one block per host),
/// stamped with the token name the connection authenticated with (`agent`), if any.
fn to_payload(
    records: &[Record],
    client: &str,
    agent: &str,
    peer: SocketAddr,
    now_ms: i64,
) -> Vec<u8> {
    let source = format!("kafka://{client}");
    let peer_host = peer.ip().to_string();
    let mut payload = Vec::new();
    let mut block: Option<(String, BlockWriter)> = None;
    for r in records {
        let mut fields = Map::new();
        let mut host = None;
        if let Some(k) = &r.key {
            fields.insert(
                "key".into(),
                Value::String(String::from_utf8_lossy(k).into_owned()),
            );
        }
        for (name, value) in &r.headers {
            let v = value
                .as_ref()
                .map(|v| Value::String(String::from_utf8_lossy(v).into_owned()))
                .unwrap_or(Value::Null);
            if name.as_str() == "host" {
                if let Value::String(h) = v {
                    host = Some(h);
                }
                continue;
            }
            fields.insert(name.as_str().to_owned(), v);
        }
        let host = host.unwrap_or_else(|| peer_host.clone());
        let fields = if fields.is_empty() {
            Vec::new()
        } else {
            serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
        };
        if block.as_ref().is_none_or(|(h, _)| *h != host) {
            if let Some((_, b)) = block.take() {
                b.finish(&mut payload);
            }
            block = Some((
                host.clone(),
                BlockWriter::begin_as(&mut payload, &host, &source, agent, 0, b""),
            ));
        }
        let ts = if r.timestamp >= 0 {
            r.timestamp
        } else {
            now_ms
        };
        let value = r.value.as_deref().unwrap_or_default();
        if let Some((_, b)) = block.as_mut() {
            b.push(&mut payload, 0, ts, 0, &fields, value);
        }
    }
    if let Some((_, b)) = block {
        b.finish(&mut payload);
    }
    payload
}

/// `topics.allow` does not let this writer write to the topic.
const TOPIC_AUTHORIZATION_FAILED: i16 = 29;

pub async fn produce(broker: &Broker, ctx: &Request<'_>, req: ProduceRequest) -> ProduceResponse {
    let mut responses = Vec::with_capacity(req.topic_data.len().min(1024));
    for t in &req.topic_data {
        let topic = t.name.0.as_str();
        let mut partitions = Vec::with_capacity(t.partition_data.len().min(1024));
        for p in &t.partition_data {
            let answer = PartitionProduceResponse::default()
                .with_index(p.index)
                .with_base_offset(-1)
                .with_log_append_time_ms(-1)
                .with_log_start_offset(-1);
            let (error, base) = if req.transactional_id.is_some() {
                (TRANSACTIONAL_ID_AUTHORIZATION_FAILED, -1)
            } else if !broker.writer.config().topic_acl.allows(ctx.writer, topic) {
                broker.metrics.error("topic_forbidden");
                (TOPIC_AUTHORIZATION_FAILED, -1)
            } else if !matches!(req.acks, -1..=1) {
                (INVALID_REQUIRED_ACKS, -1)
            } else {
                produce_partition(broker, ctx, topic, p.index, p.records.clone()).await
            };
            partitions.push(answer.with_error_code(error).with_base_offset(base));
        }
        responses.push(
            TopicProduceResponse::default()
                .with_name(t.name.clone())
                .with_partition_responses(partitions),
        );
    }
    ProduceResponse::default().with_responses(responses)
}

/// Store one partition's records: (error code, base offset).
async fn produce_partition(
    broker: &Broker,
    ctx: &Request<'_>,
    topic: &str,
    index: i32,
    records: Option<Bytes>,
) -> (i16, i64) {
    let Ok(partition) = u32::try_from(index) else {
        return (code::UNKNOWN_TOPIC_OR_PARTITION, -1);
    };
    let data = records.unwrap_or_default();
    let batches = match tokio::task::spawn_blocking(move || decode_batches(data)).await {
        Ok(Ok(b)) => b,
        Ok(Err(why)) => {
            tributary_common::ratelimit::warn(
                "kafka_produce_corrupt",
                format_args!("Kafka produce from {} refused: {why}", ctx.peer),
            );
            return (CORRUPT_MESSAGE, -1);
        }
        Err(_) => return (code::UNKNOWN_SERVER_ERROR, -1),
    };
    let mut first_base = None;
    for batch in batches {
        let Some(first) = batch.first() else { continue };
        let pid = first.producer_id;
        let key = (pid, topic.to_owned(), partition);
        let (first_seq, last_seq) = (
            first.sequence,
            first
                .sequence
                .wrapping_add(i32::try_from(batch.len()).unwrap_or(i32::MAX) - 1),
        );
        if pid >= 0 {
            match broker.producers.check(&key, first_seq, last_seq) {
                Sequence::Store => {}
                Sequence::Duplicate(base) => {
                    first_base.get_or_insert(base);
                    continue;
                }
                Sequence::OutOfOrder => return (OUT_OF_ORDER_SEQUENCE_NUMBER, -1),
            }
        }
        let now = tributary_common::timefmt::now_ms();
        let payload = to_payload(&batch, ctx.client, ctx.writer, ctx.peer, now);
        let summary = match summarize(&payload) {
            Ok(s) => s,
            Err(e) => {
                tracing::error!(error = %e, "Kafka produce built an invalid payload");
                return (code::UNKNOWN_SERVER_ERROR, -1);
            }
        };
        if payload.len() > MAX_DECOMPRESSED {
            return (RECORD_LIST_TOO_LARGE, -1);
        }
        let appended = match broker
            .writer
            .append_partition(topic, partition, payload, summary)
            .await
        {
            Ok(a) => a,
            Err(e) => return (storage_code(&e), -1),
        };
        if let Err(e) = broker.writer.make_durable(&appended).await {
            tracing::error!(error = %tributary_common::error::report(&e), "Kafka produce: fsync failed");
            return (KAFKA_STORAGE_ERROR, -1);
        }
        let end = appended.parts.first().map_or(0, |(_, end)| *end);
        let base = i64::try_from(end.saturating_sub(appended.records)).unwrap_or(i64::MAX);
        broker.metrics.records_in.inc_by(appended.records);
        if pid >= 0 {
            broker.producers.remember(
                key,
                Sent {
                    first_seq,
                    last_seq,
                    base_offset: base,
                },
            );
        }
        first_base.get_or_insert(base);
    }
    (code::NONE, first_base.unwrap_or(-1))
}

fn storage_code(e: &StorageError) -> i16 {
    match e {
        StorageError::InvalidTopic(_) => INVALID_TOPIC,
        StorageError::TopicRefused(_) | StorageError::UnknownPartition(_) => {
            code::UNKNOWN_TOPIC_OR_PARTITION
        }
        other => {
            tracing::error!(error = %tributary_common::error::report(other), "Kafka produce: append failed");
            NOT_ENOUGH_REPLICAS
        }
    }
}
