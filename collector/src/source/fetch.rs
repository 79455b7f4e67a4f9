//! One Fetch round trip and what its answer holds, partition by partition: the
//! request (bounded per answer and per partition), and [`read_partition`], which
//! turns a partition's bytes into the records at or after the position, skipping
//! control batches and aborted transactions, and [`prepare`], which turns those
//! into payloads ready to append (CPU work: run it off the runtime threads).
//!
//! ## Memory
//! An answer is at most [`MAX_RESPONSE`] bytes as it comes. Each batch in it
//! decompresses to at most [`MAX_DECOMPRESSED`] (64 MiB), and its counts are
//! checked against its bytes before it is decoded
//! ([`check_records`](tributary_common::kafka::decode::check_records)), so
//! decoding reserves nothing its bytes do not back. What one partition's answer
//! is decoded to in one round is bounded by [`ANSWER_BUDGET`] (64 MiB), counted
//! as the records' decompressed bytes plus their decoded structures
//! ([`RecordsShape::decoded_size`]): [`read_partition`] decodes batch by batch
//! and stops before the batch that would take it beyond the budget (that one is
//! decompressed at most to the room left, and nothing of it is kept); the
//! position stays there, and the next round fetches the rest again. The first
//! batch a round decodes is given all the room there is, so a partition always
//! moves on, even past a batch larger than the budget on its own: the records
//! of one partition's answer take at most the budget or that one batch (64 MiB
//! decompressed; decoded, up to about 50 times that for records of nothing but
//! empty headers, about 26 times for empty records). [`prepare`] then drops
//! the records as it turns them into payloads (about their size again).
//!
//! [`MAX_DECOMPRESSED`]: tributary_common::kafka::decode::MAX_DECOMPRESSED
//! [`RecordsShape::decoded_size`]: tributary_common::kafka::decode::RecordsShape::decoded_size

use std::collections::HashSet;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::fetch_request::{FetchPartition, FetchTopic};
use kafka_protocol::messages::{BrokerId, FetchRequest, FetchResponse, TopicName};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record;
use tributary_common::kafka::decode::{
    BatchError, MAX_DECOMPRESSED, decode_batch_within, split_batches,
};
use tributary_common::kafka::{Conn, KafkaError};
use tributary_common::record::{self, PayloadSummary};

use super::translate::{Malformed, Origin, PayloadBuilder, Translated, translate};

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
/// Most that one partition's answer is decoded to in one round (decompressed
/// bytes plus decoded records,
/// [`RecordsShape::decoded_size`](tributary_common::kafka::decode::RecordsShape::decoded_size)),
/// but for the first batch decoded, which may take more on its own: see the
/// module docs.
pub const ANSWER_BUDGET: usize = 64 << 20;

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
    /// The answer held more than [`ANSWER_BUDGET`] lets one round decode: the
    /// batches from `next` on were left for the next round (fetched again).
    pub deferred: bool,
}

/// Read `data` (one partition's record batches) from `position`. `aborted`:
/// (producer id, first offset) of the aborted transactions the broker listed
/// (read_committed). Decodes up to [`ANSWER_BUDGET`] (see the module docs).
pub fn read_partition(
    topic: &str,
    partition: i32,
    position: i64,
    data: Option<&Bytes>,
    aborted: &[(i64, i64)],
) -> PartitionRead {
    read_partition_within(topic, partition, position, data, aborted, ANSWER_BUDGET)
}

/// [`read_partition`] with another budget.
fn read_partition_within(
    topic: &str,
    partition: i32,
    position: i64,
    data: Option<&Bytes>,
    aborted: &[(i64, i64)],
    budget: usize,
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
    // What the batches decoded so far take (RecordsShape::decoded_size).
    let mut used = 0usize;
    for b in batches {
        // The position after the batch. A batch whose offsets reach i64::MAX
        // (or would go beyond it) is damaged, but no position lies past it to
        // skip to: the partition stops before it, visibly.
        let Some(after) = b.last_offset.checked_add(1) else {
            out.stuck = Some(BatchError::Corrupt {
                topic: topic.to_owned(),
                partition,
                base: b.base_offset,
                last: b.last_offset,
                reason: format!(
                    "its offsets reach {}, the largest a Kafka offset can be, so no position lies after it to skip to; this partition waits here",
                    i64::MAX
                ),
            });
            break;
        };
        while let Some(a) = pending.next_if(|a| a.1 <= b.last_offset) {
            open_aborted.insert(a.0);
        }
        if b.is_control() {
            // A transaction marker ends its producer's transaction.
            open_aborted.remove(&b.producer_id);
            out.next = out.next.max(after);
            continue;
        }
        if b.last_offset < out.next {
            continue;
        }
        if b.is_transactional() && open_aborted.contains(&b.producer_id) {
            out.next = after;
            continue;
        }
        // The first batch decoded gets all the room there is: the partition
        // moves on whatever its size.
        let room = if used == 0 {
            usize::MAX
        } else {
            budget.saturating_sub(used)
        };
        match decode_batch_within(&b, topic, partition, MAX_DECOMPRESSED, room) {
            Ok(Some(d)) => {
                used = used.saturating_add(d.shape.decoded_size());
                out.records.extend(
                    d.records
                        .into_iter()
                        .filter(|r| r.offset >= out.next && !r.control),
                );
                out.next = after;
            }
            Ok(None) => {
                out.deferred = true;
                break;
            }
            Err(e) if e.waits() => {
                out.stuck = Some(e);
                break;
            }
            Err(e) => {
                out.skipped.push(e);
                out.next = after;
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
/// [`PAYLOAD_BYTES`], each checked as ingest checks a batch. Every record read
/// ends up in a payload or in `rejected`: a payload that does not validate
/// (the translation builds only what does: a safety net) is made again record
/// by record, refusing only those that do not validate on their own.
pub fn prepare(mut read: PartitionRead, origin: &Origin, now_ms: i64) -> Prepared {
    let records = std::mem::take(&mut read.records);
    let mut out = Prepared {
        read,
        consumed: records.len() as u64,
        ..Prepared::default()
    };
    pack(&mut out, origin, records.len(), |i| {
        (records[i].offset, translate(&records[i], origin, now_ms))
    });
    out
}

/// The Kafka offset of one record and its translation.
type Item = (i64, Result<Translated, Malformed>);

/// [`prepare`]'s work on `n` records, `item(i)` translating the i-th (again
/// for the records of a payload that does not validate).
fn pack(out: &mut Prepared, origin: &Origin, n: usize, item: impl Fn(usize) -> Item) {
    let mut b = PayloadBuilder::default();
    // The payload being built: its first record, and where its refusals start.
    let (mut first, mut mark) = (0, out.rejected.len());
    for i in 0..n {
        match item(i) {
            (_, Ok(t)) => b.push(&t),
            (offset, Err(e)) => out.rejected.push((offset, e)),
        }
        if b.len() >= PAYLOAD_BYTES {
            seal(
                out,
                origin,
                std::mem::take(&mut b),
                first..i + 1,
                mark,
                &item,
            );
            (first, mark) = (i + 1, out.rejected.len());
        }
    }
    seal(out, origin, b, first..n, mark, &item);
}

/// Check and keep `b`, the payload of the records `range` (whose refusals start
/// at `out.rejected[mark]`). One that does not validate is made again from
/// those records, each first checked in a payload of its own: the ones that do
/// not validate alone are refused, the others stored.
fn seal(
    out: &mut Prepared,
    origin: &Origin,
    b: PayloadBuilder,
    range: std::ops::Range<usize>,
    mark: usize,
    item: &impl Fn(usize) -> Item,
) {
    if b.is_empty() {
        return;
    }
    let payload = b.finish();
    let e = match record::summarize(&payload) {
        Ok(s) => {
            out.payloads.push((payload, s));
            return;
        }
        Err(e) => e,
    };
    tracing::error!(topic = %origin.topic, partition = origin.partition, error = %e, "a payload built from Kafka records does not validate: its records are checked one by one, and those that do not validate are refused");
    out.rejected.truncate(mark);
    let mut b = PayloadBuilder::default();
    let mut kept = Vec::new();
    for i in range {
        let (offset, t) = item(i);
        let t = match t {
            Ok(t) => t,
            Err(e) => {
                out.rejected.push((offset, e));
                continue;
            }
        };
        let mut alone = PayloadBuilder::default();
        alone.push(&t);
        match record::summarize(&alone.finish()) {
            Ok(_) => {
                b.push(&t);
                kept.push(offset);
            }
            Err(e) => out
                .rejected
                .push((offset, Malformed::Invalid(e.to_string()))),
        }
    }
    if b.is_empty() {
        return;
    }
    let payload = b.finish();
    match record::summarize(&payload) {
        Ok(s) => out.payloads.push((payload, s)),
        // Valid one by one, so valid together; should they not be, each is
        // still refused explicitly, never dropped unaccounted.
        Err(e) => out.rejected.extend(
            kept.into_iter()
                .map(|o| (o, Malformed::Invalid(e.to_string()))),
        ),
    }
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

    #[test]
    fn a_deeply_nested_header_loses_no_record() {
        // A header value nested 127 deep: JSON to serde_json, one level too deep
        // inside a record's fields. It used to make the whole payload invalid,
        // dropped while the position moved on past its records.
        let mut good = rec(0, -1, false, false);
        good.headers.insert(
            StrBytes::from_static_str("x"),
            Some(Bytes::from_static(b"1")),
        );
        let mut deep = rec(1, -1, false, false);
        deep.headers.insert(
            StrBytes::from_static_str("h"),
            Some(Bytes::from(format!(
                "{}{}",
                "[".repeat(127),
                "]".repeat(127)
            ))),
        );
        let data = Bytes::from(batch(&[good, deep]));
        let read = read_partition("t", 0, 0, Some(&data), &[]);
        assert_eq!((offsets(&read), read.next), (vec![0, 1], 2));
        let p = prepare(read, &Origin::new("t", 0, None), 0);
        let stored: u32 = p.payloads.iter().map(|(_, s)| s.records).sum();
        assert_eq!((stored, p.rejected.len(), p.consumed), (2, 0, 2));
    }

    #[test]
    fn a_payload_that_does_not_validate_refuses_only_its_bad_records() {
        let origin = Origin::new("t", 0, None);
        let good = |offset: i64| Translated {
            host: "kafka".into(),
            source: origin.source.clone(),
            source_id: origin.source_id,
            flags: 0,
            timestamp_ms: 1000,
            source_offset: offset as u64 + 1,
            fields: br#"{"a":1}"#.to_vec(),
            message: Bytes::from_static(b"m"),
        };
        // Record 1 translates to fields no payload may hold (not an object).
        let item = |i: usize| -> Item {
            let offset = i as i64;
            match i {
                1 => (
                    offset,
                    Ok(Translated {
                        fields: b"[1]".to_vec(),
                        ..good(offset)
                    }),
                ),
                2 => (offset, Err(Malformed::Offset(-1))),
                _ => (offset, Ok(good(offset))),
            }
        };
        let mut out = Prepared::default();
        pack(&mut out, &origin, 5, item);
        assert_eq!(out.payloads.len(), 1);
        let stored: Vec<u64> = record::blocks(&out.payloads[0].0, true)
            .flat_map(|b| {
                b.unwrap()
                    .records()
                    .map(|r| r.unwrap().source_offset)
                    .collect::<Vec<_>>()
            })
            .collect();
        assert_eq!(stored, vec![1, 4, 5], "Kafka offsets 0, 3 and 4");
        assert_eq!(out.payloads[0].1.records, 3);
        let refused: Vec<i64> = out.rejected.iter().map(|(o, _)| *o).collect();
        assert_eq!(refused, vec![1, 2], "each once, in order");
        assert!(matches!(out.rejected[0].1, Malformed::Invalid(_)));
        assert!(out.rejected[0].1.to_string().contains("valid record"));
    }

    #[test]
    fn a_batch_at_the_top_offset_stops_the_partition_without_overflow() {
        let at = |base: i64, n: i64, control: bool| {
            let mut b = batch(
                &(0..n)
                    .map(|i| rec(i, if control { 7 } else { -1 }, control, control))
                    .collect::<Vec<_>>(),
            );
            // The base offset is not under the CRC32C.
            b[..8].copy_from_slice(&base.to_be_bytes());
            b
        };
        let first = batch(&[rec(0, -1, false, false), rec(1, -1, false, false)]);
        for top in [
            at(i64::MAX, 1, false),
            at(i64::MAX - 1, 2, false),
            at(i64::MAX, 1, true),
        ] {
            let data = Bytes::from([first.clone(), top].concat());
            let r = read_partition("t", 5, 0, Some(&data), &[]);
            assert_eq!((offsets(&r), r.next), (vec![0, 1], 2));
            assert!(r.skipped.is_empty());
            let e = r.stuck.expect("the partition waits before it").to_string();
            assert!(
                e.contains("`t` partition 5") && e.contains("..=9223372036854775807"),
                "{e}"
            );
        }
        // Just below the top, it reads.
        let data = Bytes::from(at(i64::MAX - 2, 2, false));
        let r = read_partition("t", 5, i64::MAX - 2, Some(&data), &[]);
        assert_eq!(offsets(&r), vec![i64::MAX - 2, i64::MAX - 1]);
        assert_eq!((r.next, r.stuck.is_none()), (i64::MAX, true));
    }

    #[test]
    fn one_answer_decodes_within_its_budget() {
        // Six batches of one 20 kB record each.
        let mut data = Vec::new();
        for o in 0..6 {
            let mut r = rec(o, -1, false, false);
            r.value = Some(Bytes::from(vec![b'a' + o as u8; 20_000]));
            data.extend(batch(&[r]));
        }
        let data = Bytes::from(data);
        let one = {
            let (b, _) = split_batches(&data);
            decode_batch_within(&b[0], "t", 0, MAX_DECOMPRESSED, usize::MAX)
                .unwrap()
                .unwrap()
                .shape
                .decoded_size()
        };
        assert!(one > 20_000);
        // Room for two batches and a half: two per round, the rest next round
        // from where it stopped.
        let budget = one * 5 / 2;
        let (mut position, mut seen, mut rounds) = (0, Vec::new(), 0);
        while position < 6 {
            let r = read_partition_within("t", 0, position, Some(&data), &[], budget);
            rounds += 1;
            assert_eq!(r.records.len(), 2, "round {rounds}");
            assert_eq!(r.deferred, r.next < 6);
            seen.extend(offsets(&r));
            position = r.next;
        }
        assert_eq!((seen, rounds), ((0..6).collect::<Vec<_>>(), 3));

        // A budget smaller than any one batch: one batch per round, never none.
        let (mut position, mut rounds) = (0, 0);
        while position < 6 {
            let r = read_partition_within("t", 0, position, Some(&data), &[], 1);
            assert_eq!(offsets(&r), vec![position]);
            position = r.next;
            rounds += 1;
        }
        assert_eq!(rounds, 6);

        // The default budget takes the whole answer.
        let r = read_partition("t", 0, 0, Some(&data), &[]);
        assert_eq!((r.records.len(), r.deferred), (6, false));
    }
}
