//! One Fetch round trip and what its answer holds, partition by partition: the
//! request (bounded per answer and per partition), and [`read_partition`], which
//! turns a partition's bytes into the records at or after the position, skipping
//! control batches and aborted transactions, and [`prepare`], which turns those
//! into payloads ready to append (CPU work: run it off the runtime threads).

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record;
use tributary_common::kafka::decode::{BatchError, decode_batch, split_batches};
use tributary_common::kafka::{Conn, KafkaError};
use tributary_common::record::{self, PayloadSummary};

use super::translate::{Malformed, Origin, PayloadBuilder, translate};

/// Most record bytes asked for in one Fetch.
pub const FETCH_MAX_BYTES: i32 = 4 << 20;
/// Most record bytes asked for per partition (doubled, up to
/// [`MAX_PARTITION_BYTES`], for a partition whose next batch is larger).
pub const PARTITION_MAX_BYTES: i32 = 1 << 20;
pub const MAX_PARTITION_BYTES: i32 = 16 << 20;
/// The largest Fetch answer read: the limits above plus one batch larger than
/// them, which brokers send whole (KIP-74).
pub const MAX_RESPONSE: usize = 32 << 20;
/// How long a broker may hold a Fetch when it has nothing (brokers that honour it).
pub const MAX_WAIT_MS: i32 = 500;
/// The least time a round that brought nothing takes: some brokers answer an
/// empty Fetch at once whatever `max_wait_ms` says, so the source sleeps the
/// rest. This bounds the latency of a record arriving at an idle topic.
pub const IDLE_ROUND: Duration = Duration::from_millis(200);
/// A payload is appended once it reaches this many bytes.
const PAYLOAD_BYTES: usize = 8 << 20;

/// A partition to fetch, from where.
#[derive(Debug, Clone)]
pub struct Want {
    pub topic: String,
    pub partition: i32,
    pub offset: i64,
    pub max_bytes: i32,
}

/// Send one Fetch for `wants` (all led by the broker of `conn`).
pub async fn fetch(
    conn: &mut Conn,
    wants: &[Want],
    isolation_level: i8,
) -> Result<(FetchResponse, i16), KafkaError> {
    let v = conn.version::<FetchRequest>(4..=12)?;
    let mut topics: Vec<FetchTopic> = Vec::new();
    for w in wants {
        let p = FetchPartition::default()
            .with_partition(w.partition)
            .with_fetch_offset(w.offset)
            .with_partition_max_bytes(w.max_bytes);
        let p = if v >= 5 {
            p.with_log_start_offset(-1)
        } else {
            p
        };
        let p = if v >= 9 {
            p.with_current_leader_epoch(-1)
        } else {
            p
        };
        let p = if v >= 12 {
            p.with_last_fetched_epoch(-1)
        } else {
            p
        };
        match topics.iter_mut().find(|t| t.topic.0.as_str() == w.topic) {
            Some(t) => t.partitions.push(p),
            None => topics.push(
                FetchTopic::default()
                    .with_topic(TopicName(StrBytes::from_string(w.topic.clone())))
                    .with_partitions(vec![p]),
            ),
        }
    }
    let mut req = FetchRequest::default()
        .with_replica_id(BrokerId(-1))
        .with_max_wait_ms(MAX_WAIT_MS)
        .with_min_bytes(1)
        .with_max_bytes(FETCH_MAX_BYTES)
        .with_isolation_level(isolation_level)
        .with_topics(topics);
    if v >= 7 {
        // No fetch session: every request is a full one.
        req = req.with_session_id(0).with_session_epoch(-1);
    }
    let r: FetchResponse = conn.call_v(&req, v).await?;
    if v >= 7 && r.error_code != 0 {
        conn.check("Fetch", r.error_code, None)?;
    }
    Ok((r, v))
}

/// What one partition's answer holds from the position on.
#[derive(Debug, Default)]
pub struct PartitionRead {
    pub records: Vec<Record>,
    /// The offset to fetch next.
    pub next: i64,
    /// Batches that do not decode (damaged): skipped, each reported.
    pub skipped: Vec<BatchError>,
    /// A batch this build cannot read (codec, format): the partition stays at `next`.
    pub stuck: Option<BatchError>,
    /// Bytes came but no whole batch: the next batch is larger than asked for.
    pub too_small: bool,
}

/// Read `data` (one partition's record batches) from `position`. `aborted`:
/// (producer id, first offset) of the aborted transactions the broker listed
/// (read_committed).
pub fn read_partition(
    topic: &str,
    partition: i32,
    position: i64,
    data: Option<&Bytes>,
    aborted: &[(i64, i64)],
) -> PartitionRead {
    let mut out = PartitionRead {
        next: position,
        ..PartitionRead::default()
    };
    let Some(data) = data else {
        return out;
    };
    let (batches, rest) = split_batches(data);
    out.too_small = batches.is_empty() && rest;
    let mut aborted = aborted.to_vec();
    aborted.sort_by_key(|a| a.1);
    let mut pending = aborted.into_iter().peekable();
    let mut open_aborted: HashSet<i64> = HashSet::new();
    for b in batches {
        while let Some(a) = pending.next_if(|a| a.1 <= b.last_offset) {
            open_aborted.insert(a.0);
        }
        if b.is_control() {
            // A transaction marker ends its producer's transaction.
            open_aborted.remove(&b.producer_id);
            out.next = out.next.max(b.last_offset + 1);
            continue;
        }
        if b.last_offset < out.next {
            continue;
        }
        if b.is_transactional() && open_aborted.contains(&b.producer_id) {
            out.next = b.last_offset + 1;
            continue;
        }
        match decode_batch(&b, topic, partition) {
            Ok(records) => {
                out.records.extend(
                    records
                        .into_iter()
                        .filter(|r| r.offset >= out.next && !r.control),
                );
                out.next = b.last_offset + 1;
            }
            Err(e) if e.waits() => {
                out.stuck = Some(e);
                break;
            }
            Err(e) => {
                out.skipped.push(e);
                out.next = b.last_offset + 1;
            }
        }
    }
    out
}

/// One partition's answer made ready to append.
#[derive(Debug, Default)]
pub struct Prepared {
    pub read: PartitionRead,
    /// Payloads (validated, summarised) in offset order.
    pub payloads: Vec<(Vec<u8>, PayloadSummary)>,
    /// Records refused for their headers: Kafka offset and why.
    pub rejected: Vec<(i64, Malformed)>,
    /// Records read from Kafka (stored, duplicate or refused).
    pub consumed: u64,
}

/// Translate `read`'s records of `origin` into payloads of at most about
/// [`PAYLOAD_BYTES`], each checked as ingest checks a batch.
pub fn prepare(mut read: PartitionRead, origin: &Origin, now_ms: i64) -> Prepared {
    let records = std::mem::take(&mut read.records);
    let mut out = Prepared {
        read,
        consumed: records.len() as u64,
        ..Prepared::default()
    };
    let mut b = PayloadBuilder::default();
    let flush = |b: PayloadBuilder, out: &mut Prepared| {
        if b.is_empty() {
            return;
        }
        let payload = b.finish();
        match record::summarize(&payload) {
            Ok(s) => out.payloads.push((payload, s)),
            // Built here from checked parts: cannot happen; never store it.
            Err(e) => {
                tracing::error!(topic = %origin.topic, partition = origin.partition, error = %e, "a payload built from Kafka records does not validate; records skipped")
            }
        }
    };
    for r in &records {
        match translate(r, origin, now_ms) {
            Ok(t) => b.push(&t),
            Err(e) => out.rejected.push((r.offset, e)),
        }
        if b.len() >= PAYLOAD_BYTES {
            flush(std::mem::take(&mut b), &mut out);
        }
    }
    flush(b, &mut out);
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        Compression, NO_PARTITION_LEADER_EPOCH, RecordBatchEncoder, RecordEncodeOptions,
        TimestampType,
    };

    fn rec(offset: i64, producer: i64, txn: bool, control: bool) -> Record {
        Record {
            transactional: txn,
            control,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: producer,
            producer_epoch: 0,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: offset as i32,
            timestamp: 1000 + offset,
            key: control.then(|| Bytes::from_static(&[0, 0, 0, 0])),
            value: Some(Bytes::from(format!("v{offset}"))),
            headers: IndexMap::new(),
            delete_horizon: false,
        }
    }

    fn batch(records: &[Record]) -> Vec<u8> {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression: Compression::Lz4,
            },
            Some(tributary_common::kafka::compress),
        )
        .unwrap();
        buf.to_vec()
    }

    fn offsets(r: &PartitionRead) -> Vec<i64> {
        r.records.iter().map(|r| r.offset).collect()
    }

    #[test]
    fn records_from_the_position_on_without_control_or_aborted_ones() {
        let mut data = Vec::new();
        data.extend(batch(&[
            rec(0, -1, false, false),
            rec(1, -1, false, false),
            rec(2, -1, false, false),
        ]));
        // Producer 7's transaction (3, 4) is aborted; producer 8's (5) commits.
        data.extend(batch(&[rec(3, 7, true, false), rec(4, 7, true, false)]));
        data.extend(batch(&[rec(5, 8, true, false)]));
        data.extend(batch(&[rec(6, 7, true, true)]));
        data.extend(batch(&[rec(7, 8, true, true)]));
        data.extend(batch(&[rec(8, 7, true, false)]));
        let data = Bytes::from(data);

        let r = read_partition("t", 0, 1, Some(&data), &[(7, 3)]);
        assert_eq!(
            offsets(&r),
            vec![1, 2, 5, 8],
            "from 1; 3 and 4 aborted; markers skipped"
        );
        assert_eq!(r.next, 9);
        assert!(r.stuck.is_none() && r.skipped.is_empty() && !r.too_small);

        // Without the aborted list (read_uncommitted), only markers are skipped.
        let r = read_partition("t", 0, 0, Some(&data), &[]);
        assert_eq!(offsets(&r), vec![0, 1, 2, 3, 4, 5, 8]);

        // A cut answer: whole batches only; nothing whole means "ask for more".
        let cut = data.slice(..data.len() - 3);
        let r = read_partition("t", 0, 0, Some(&cut), &[]);
        assert_eq!(r.next, 8);
        let tiny = data.slice(..20);
        let r = read_partition("t", 0, 0, Some(&tiny), &[]);
        assert!(r.too_small && r.records.is_empty() && r.next == 0);
        let r = read_partition("t", 0, 4, None, &[]);
        assert_eq!((r.next, r.records.len()), (4, 0));
    }

    #[test]
    fn a_damaged_batch_is_skipped_and_an_unreadable_one_stops_the_partition() {
        let first = batch(&[rec(0, -1, false, false), rec(1, -1, false, false)]);
        let second = batch(&[rec(2, -1, false, false)]);
        let mut damaged = first.clone();
        let n = damaged.len();
        damaged[n - 1] ^= 0x55;
        let data = Bytes::from([damaged, second.clone()].concat());
        let r = read_partition("t", 3, 0, Some(&data), &[]);
        assert_eq!(offsets(&r), vec![2]);
        assert_eq!(r.skipped.len(), 1);
        assert!(r.skipped[0].to_string().contains("`t` partition 3"));

        // zstd (attributes & 7 = 4): the partition waits before it.
        let mut zstd = batch(&[rec(3, -1, false, false), rec(4, -1, false, false)]);
        zstd[22] = (zstd[22] & !7) | 4;
        let data = Bytes::from([second.clone(), zstd].concat());
        let r = read_partition("t", 3, 2, Some(&data), &[]);
        assert_eq!((offsets(&r), r.next), (vec![2], 3));
        assert!(r.stuck.unwrap().to_string().contains("zstd"));
    }

    #[test]
    fn prepare_makes_checked_payloads_and_counts_refusals() {
        let mut good = rec(0, -1, false, false);
        good.headers.insert(
            StrBytes::from_static_str("env"),
            Some(Bytes::from_static(b"prod")),
        );
        let mut bad = rec(1, -1, false, false);
        bad.headers.insert(
            StrBytes::from_static_str("tributary.offset"),
            Some(Bytes::from_static(b"x")),
        );
        let read = PartitionRead {
            records: vec![good, bad, rec(2, -1, false, false)],
            next: 3,
            ..PartitionRead::default()
        };
        let p = prepare(read, &Origin::new("t", 0, None), 0);
        assert_eq!(p.payloads.len(), 1);
        assert_eq!(p.payloads[0].1.records, 2);
        assert_eq!(p.rejected.len(), 1);
        assert_eq!(p.rejected[0].0, 1);
        assert_eq!((p.read.next, p.consumed), (3, 3));
    }
}
