//! Fuzz the Kafka source's translation of Kafka records into ours
//! (`source::translate`: `translate` and the `PayloadBuilder`) and, end to end,
//! one partition's Fetch answer through `source::fetch::read_partition` and
//! `prepare`. The records come from any producer: whatever they hold, what the
//! source appends must be a valid payload holding exactly the records it
//! accepted. The collector's global allocator is installed, as in the binary.
//!
//! Input layout:
//! ```text
//! u8   mode: bit 0 clear: records made here (below); set: a Fetch answer
//! records made here, drawn from the rest with `arbitrary::Unstructured`:
//!      the partition, an optional topic id, the time now, then records: each
//!      an offset (mostly the previous one plus a little, sometimes at or below
//!      it, sometimes anything), a timestamp (sometimes missing: -1), key,
//!      value, and headers: often a Tributary agent's (host, source,
//!      tributary.source_id, tributary.offset, sometimes partial), then names
//!      from a list of those that mean something or any name, with values from
//!      a list or any bytes, or null
//! a Fetch answer: i64 position, u8 count of aborted transactions (producer id,
//!      first offset: 2 × i64 each), then the partition's records bytes; with
//!      mode bit 1 the CRC32C of every v2 batch is corrected
//! ```
//! Checked, beyond "no panic, no out-of-memory":
//! - a record is refused only for a negative offset or, when it carries a
//!   `tributary.*` header, for its Tributary headers; a record without them
//!   takes the partition's synthetic source, with Kafka offset + 1;
//! - every accepted record has a non-zero source id (the store deduplicates
//!   it) and its timestamp (or now, when it has none), its value as message,
//!   fields that are empty or a JSON object;
//! - the payload built validates (`record::blocks(payload, true)`,
//!   `summarize`), holds as many records as were accepted, each exactly as
//!   translated and in order, with a new block exactly where the source
//!   changes or the offset does not grow (offsets grow within a block);
//! - a Fetch answer: the position never goes back, no record before it or of a
//!   control batch comes out, and `prepare` accounts for every record read:
//!   stored in a validated payload (its summary as `summarize` gives it) or
//!   refused.

#![no_main]

use bytes::Bytes;
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record, TimestampType,
};
use libfuzzer_sys::arbitrary::{Result, Unstructured};
use libfuzzer_sys::fuzz_target;
use tributary_collector::source::fetch::{prepare, read_partition};
use tributary_collector::source::translate::{
    HOST, Malformed, OFFSET, Origin, PARTIAL, PayloadBuilder, SOURCE, SOURCE_ID, Translated,
    translate,
};
use tributary_common::kafka::decode::split_batches;
use tributary_common::record::{self, FLAG_PARTIAL};

#[global_allocator]
static ALLOCATOR: tributary_collector::alloc::Allocator = tributary_collector::alloc::Allocator;

const TOPIC: &str = "app";
const MAX_RECORDS: usize = 64;

/// Header names that mean something to the translation.
const NAMES: &[&str] = &[
    HOST,
    SOURCE,
    PARTIAL,
    SOURCE_ID,
    OFFSET,
    "key",
    "field.host",
    "field.tributary.offset",
    "severity",
    "",
];

/// Header values that mean something to it.
const VALUES: &[&str] = &[
    "0",
    "1",
    "12",
    "77",
    "18446744073709551615",
    "18446744073709551616",
    "-1",
    "007",
    "",
    "web-01",
    "/var/log/app.log",
    "true",
    "null",
    "1.5",
    "1e400",
    "123456789012345678901234567890",
    "{\"a\":[1,{\"b\":null}]}",
    "[1,2",
    "\"quoted\"",
];

/// At most 300 bytes: room for JSON nested as deep as serde_json reads.
fn bytes(u: &mut Unstructured<'_>) -> Result<Bytes> {
    let n = u.int_in_range(0..=300)?;
    Ok(Bytes::copy_from_slice(u.bytes(n.min(u.len()))?))
}

fn header_value(u: &mut Unstructured<'_>) -> Result<Option<Bytes>> {
    Ok(match u.int_in_range(0..=9)? {
        0 => None,
        1..=5 => Some(Bytes::from_static(u.choose(VALUES)?.as_bytes())),
        _ => Some(bytes(u)?),
    })
}

fn record(u: &mut Unstructured<'_>, prev: i64, agent_offset: &mut u64) -> Result<Record> {
    let offset = match u.int_in_range(0..=9)? {
        0 => u.arbitrary::<i64>()?,
        1 => prev,
        2 => prev.saturating_sub(u.int_in_range(1..=3)?),
        _ => prev.saturating_add(u.int_in_range(1..=3)?),
    };
    let timestamp = match u.int_in_range(0..=5)? {
        0 => u.arbitrary::<i64>()?,
        1 => -1,
        _ => 1_700_000_000_000 + i64::from(u.arbitrary::<u16>()?),
    };
    let key = if u.arbitrary()? {
        Some(bytes(u)?)
    } else {
        None
    };
    let value = if u.ratio(7, 8)? {
        Some(bytes(u)?)
    } else {
        None
    };
    let mut headers: IndexMap<StrBytes, Option<Bytes>> = IndexMap::new();
    let put = |h: &mut IndexMap<StrBytes, Option<Bytes>>, k: &str, v: Option<Bytes>| {
        h.insert(StrBytes::from_string(k.to_owned()), v);
    };
    if u.arbitrary()? {
        // What an agent's Kafka output writes.
        let host = *u.choose(&["web-01", "db-02"])?;
        let source = *u.choose(&["/var/log/app.log", "syslog+udp://10.0.0.1"])?;
        let id = *u.choose(&[0u64, 5, 77])?;
        *agent_offset = match u.int_in_range(0..=3)? {
            0 => agent_offset.saturating_sub(u.int_in_range(0..=20)?),
            _ => agent_offset.saturating_add(u.int_in_range(1..=20)?),
        };
        put(
            &mut headers,
            HOST,
            Some(Bytes::from_static(host.as_bytes())),
        );
        put(
            &mut headers,
            SOURCE,
            Some(Bytes::from_static(source.as_bytes())),
        );
        if u.ratio(1, 4)? {
            put(&mut headers, PARTIAL, Some(Bytes::from_static(b"1")));
        }
        put(&mut headers, SOURCE_ID, Some(Bytes::from(id.to_string())));
        put(
            &mut headers,
            OFFSET,
            Some(Bytes::from(agent_offset.to_string())),
        );
    }
    for _ in 0..u.int_in_range(0..=4)? {
        let name = if u.ratio(2, 3)? {
            (*u.choose(NAMES)?).to_owned()
        } else {
            u.arbitrary::<String>()?
        };
        let v = header_value(u)?;
        put(&mut headers, &name, v);
    }
    Ok(Record {
        transactional: false,
        control: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset,
        sequence: -1,
        timestamp,
        key,
        value,
        headers,
        delete_horizon: false,
    })
}

fn has(r: &Record, name: &'static str) -> bool {
    r.headers.contains_key(&StrBytes::from_static_str(name))
}

/// What must hold of one record's translation, whatever it held.
fn check_translation(
    r: &Record,
    got: &std::result::Result<Translated, Malformed>,
    origin: &Origin,
    now_ms: i64,
) {
    let headered = has(r, SOURCE_ID) || has(r, OFFSET);
    let t = match got {
        Ok(t) => t,
        Err(e) => {
            assert!(
                r.offset < 0 || headered,
                "refused without tributary.* headers: {e:?}"
            );
            return;
        }
    };
    assert!(r.offset >= 0);
    assert_ne!(t.source_id, 0, "a record the store cannot deduplicate");
    let kafka_offset = r.offset as u64 + 1;
    if !headered {
        assert_eq!(
            (t.source.as_str(), t.source_id, t.source_offset, t.flags),
            (origin.source.as_str(), origin.source_id, kafka_offset, 0)
        );
    } else {
        // Accepted, so the headers are there and hold what they must.
        let text = |name: &'static str| {
            let v = r.headers[&StrBytes::from_static_str(name)]
                .as_ref()
                .unwrap();
            std::str::from_utf8(v).unwrap()
        };
        let id: u64 = text(SOURCE_ID).parse().unwrap();
        let offset: u64 = text(OFFSET).parse().unwrap();
        let want = if id == 0 {
            (origin.source_id, kafka_offset)
        } else {
            (id, offset)
        };
        assert_eq!((t.source_id, t.source_offset), want);
        assert_eq!(
            (t.host.as_str(), t.source.as_str()),
            (text(HOST), text(SOURCE))
        );
    }
    assert!(!t.host.is_empty());
    assert_eq!(t.flags & !FLAG_PARTIAL, 0);
    let ts = if r.timestamp >= 0 {
        r.timestamp
    } else {
        now_ms
    };
    assert_eq!(t.timestamp_ms, ts);
    assert_eq!(t.message, r.value.clone().unwrap_or_default());
    if !t.fields.is_empty() {
        let v: serde_json::Value = serde_json::from_slice(&t.fields).expect("fields are JSON");
        assert!(v.is_object(), "fields are an object");
    }
}

/// `host` or `source` as a block stores it: cut at 65,535 bytes.
fn cut(s: &str) -> &str {
    let mut end = s.len().min(u16::MAX as usize);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The payload the builder made of `accepted`: valid, and exactly those records.
fn check_payload(payload: &[u8], accepted: &[Translated]) {
    if accepted.is_empty() {
        assert!(payload.is_empty());
        return;
    }
    let summary = record::summarize(payload)
        .unwrap_or_else(|e| panic!("the payload built does not validate: {e}"));
    assert_eq!(summary.records as usize, accepted.len());
    let mut want_blocks = 0;
    for (i, t) in accepted.iter().enumerate() {
        let new = i == 0 || {
            let p = &accepted[i - 1];
            (&p.host, &p.source, p.source_id) != (&t.host, &t.source, t.source_id)
                || t.source_offset <= p.source_offset
        };
        want_blocks += usize::from(new);
    }
    let mut i = 0;
    let mut blocks = 0;
    for b in record::blocks(payload, true) {
        let b = b.expect("summarize validated it");
        blocks += 1;
        let h = b.header;
        assert!(h.fields.is_empty() && h.agent.is_empty());
        let mut last = None;
        for r in b.records() {
            let r = r.expect("validated");
            let t = &accepted[i];
            i += 1;
            assert_eq!(
                (h.host, h.source, h.source_id),
                (cut(&t.host), cut(&t.source), t.source_id)
            );
            assert_eq!(r.flags & !FLAG_PARTIAL & !record::FLAG_HAS_FIELDS, 0);
            assert_eq!(r.flags & FLAG_PARTIAL, t.flags);
            assert_eq!(
                (r.timestamp_ms, r.source_offset),
                (t.timestamp_ms, t.source_offset)
            );
            assert_eq!(r.fields, &t.fields[..]);
            assert_eq!(r.message, &t.message[..]);
            assert!(
                last.is_none_or(|l| l < r.source_offset),
                "offsets grow within a block"
            );
            last = Some(r.source_offset);
        }
    }
    assert_eq!(i, accepted.len());
    assert_eq!(blocks, want_blocks);
}

fn records_made_here(u: &mut Unstructured<'_>) -> Result<()> {
    let partition = u.int_in_range(0..=3)?;
    let topic_id = if u.arbitrary()? {
        Some(u.arbitrary::<[u8; 16]>()?)
    } else {
        None
    };
    let origin = Origin::new(TOPIC, partition, topic_id);
    let now_ms = u.arbitrary::<i64>()?;
    let mut records = Vec::new();
    let mut prev = u.int_in_range(0..=1000)?;
    let mut agent_offset = 0u64;
    while !u.is_empty() && records.len() < MAX_RECORDS {
        let Ok(r) = record(u, prev, &mut agent_offset) else {
            break;
        };
        prev = r.offset;
        records.push(r);
    }
    let mut b = PayloadBuilder::default();
    let mut accepted = Vec::new();
    for r in &records {
        let got = translate(r, &origin, now_ms);
        check_translation(r, &got, &origin, now_ms);
        if let Ok(t) = got {
            b.push(&t);
            accepted.push(t);
        }
    }
    assert_eq!(b.records() as usize, accepted.len());
    assert_eq!(b.is_empty(), accepted.is_empty());
    let len = b.len();
    let payload = b.finish();
    assert!(payload.len() >= len);
    check_payload(&payload, &accepted);
    Ok(())
}

fn fetch_answer(mode: u8, data: &[u8]) {
    let mut u = Unstructured::new(data);
    let (Ok(position), Ok(n)) = (u.arbitrary::<i64>(), u.int_in_range(0..=3u8)) else {
        return;
    };
    let mut aborted = Vec::new();
    for _ in 0..n {
        let (Ok(p), Ok(o)) = (u.arbitrary::<i64>(), u.arbitrary::<i64>()) else {
            return;
        };
        aborted.push((p, o));
    }
    let mut bytes = u.take_rest().to_vec();
    if mode & 2 != 0 {
        let (batches, _) = split_batches(&Bytes::copy_from_slice(&bytes));
        let mut at = 0;
        for b in &batches {
            let n = b.bytes.len();
            if b.magic == 2 && n >= 21 {
                let crc = crc32c::crc32c(&bytes[at + 21..at + n]);
                bytes[at + 17..at + 21].copy_from_slice(&crc.to_be_bytes());
            }
            at += n;
        }
    }
    let data = Bytes::from(bytes);
    let origin = Origin::new(TOPIC, 1, None);
    let read = read_partition(TOPIC, 1, position, Some(&data), &aborted);
    assert!(read.next >= position, "the position went back");
    for r in &read.records {
        assert!(r.offset >= position && !r.control);
    }
    let (batches, left) = split_batches(&data);
    assert_eq!(read.too_small, batches.is_empty() && left);
    let n = read.records.len();
    let records = read.records.clone();
    let p = prepare(read, &origin, 0);
    assert_eq!(p.consumed as usize, n);
    let stored: usize = p.payloads.iter().map(|(_, s)| s.records as usize).sum();
    assert_eq!(
        stored + p.rejected.len(),
        n,
        "every record read is stored or refused"
    );
    for (payload, summary) in &p.payloads {
        assert_eq!(record::summarize(payload).as_ref(), Ok(summary));
    }
    let refused: Vec<i64> = records
        .iter()
        .filter(|r| translate(r, &origin, 0).is_err())
        .map(|r| r.offset)
        .collect();
    let rejected: Vec<i64> = p.rejected.iter().map(|(o, _)| *o).collect();
    assert_eq!(rejected, refused);
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    if mode & 1 == 0 {
        let _ = records_made_here(&mut Unstructured::new(rest));
    } else {
        fetch_answer(mode, rest);
    }
});
