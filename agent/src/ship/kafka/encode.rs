//! Our payloads (record blocks) → Kafka v2 record batches, written directly.
//!
//! A block's records share a key (`HOST:SOURCE_ID`, so one partition) and most of
//! their headers (`host`, `source`, the block's fields), so those are worked out
//! once per block and copied per record; a record adds its own fields, `partial`,
//! and `tributary.source_id` + `tributary.offset` last. A record field named like a
//! block field replaces it, as fields do in the collector. A field named like one
//! of our own headers (`host`, `source`, `partial`, `tributary.*`) travels as
//! `field.NAME`, which the collector's Kafka source reads back as NAME, so no
//! field can pass for the record's host or its exactly-once keys. Each partition's
//! records are cut into batches of at most `limit` bytes before compression (the
//! brokers' `message.max.bytes` bounds a batch after compression, so this is on
//! the safe side); a record that alone exceeds it is counted and left out.
//!
//! The format is Kafka's (KIP-98 "message format v2"): varints are zigzag, the
//! CRC32C covers everything from the attributes on.

use bytes::Bytes;
use kafka_protocol::records::Compression;
use tributary_common::kafka::{compress_into, each_field};
use tributary_common::record::{self, FLAG_PARTIAL};

use super::partition_of;

/// A payload as Kafka batches.
#[derive(Debug, Default)]
pub struct Encoded {
    /// Request after request: in each, at most one batch per partition, so a
    /// partition's batches go in order.
    pub rounds: Vec<Vec<(i32, Bytes)>>,
    /// Records encoded.
    pub records: u32,
    /// Records larger than `limit`, left out, and the largest size seen.
    pub too_large: u32,
    pub too_large_bytes: usize,
}

/// Why a payload could not be encoded.
#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("the batch's records do not decode: {0}")]
    Decode(#[from] record::DecodeError),
    #[error("cannot compress a Kafka batch: {0}")]
    Compress(String),
}

/// The records of one future batch.
struct Chunk {
    records: Vec<u8>,
    count: i32,
    base_ts: i64,
    max_ts: i64,
}

/// Size of a v2 batch header, up to and including the record count.
const BATCH_HEADER: usize = 61;

/// Encode `payload` for a topic of `partitions` partitions.
pub fn encode(
    payload: &[u8],
    partitions: usize,
    limit: usize,
    codec: Compression,
) -> Result<Encoded, EncodeError> {
    // The brokers bound a batch after compression. Log lines compress well, so
    // cut at a multiple of the limit before compression and check after; when a
    // batch still comes out too large (text that does not compress), start again
    // with a smaller multiple, down to the limit itself, which always fits.
    let factors: &[usize] = if codec == Compression::None {
        &[1]
    } else {
        &[4, 2, 1]
    };
    let mut last = Encoded::default();
    for &factor in factors {
        last = encode_cut(payload, partitions, limit, factor, codec)?;
        let fits = last.rounds.iter().flatten().all(|(_, b)| b.len() <= limit);
        if fits {
            break;
        }
    }
    Ok(last)
}

/// [`encode`] with batches cut at `limit × factor` bytes before compression
/// (single records at `limit`).
fn encode_cut(
    payload: &[u8],
    partitions: usize,
    record_limit: usize,
    factor: usize,
    codec: Compression,
) -> Result<Encoded, EncodeError> {
    let record_limit = record_limit.saturating_sub(BATCH_HEADER).max(1);
    let limit = record_limit.saturating_mul(factor);
    let mut out = Encoded::default();
    // What each partition's records will take, estimated from the blocks (the
    // message bytes plus, per record, its key and headers), so that a chunk is
    // allocated once at about its final size: neither grown by copies nor
    // reserved far beyond what it holds.
    let mut estimate = vec![0usize; partitions.max(1)];
    for block in record::blocks(payload, false) {
        let block = block?;
        let h = &block.header;
        let key = format!("{}:{:016x}", h.host, h.source_id);
        let per_record = 2 * key.len() + h.host.len() + h.source.len() + h.fields.len() + 96;
        estimate[partition_of(key.as_bytes(), partitions)] +=
            block.bytes.len() + h.record_count as usize * per_record;
    }
    let mut placed = vec![0usize; partitions.max(1)];
    // Per partition, its chunks in order.
    let mut parts: Vec<Vec<Chunk>> = (0..partitions.max(1)).map(|_| Vec::new()).collect();
    let mut body = Vec::with_capacity(512);
    let mut block_headers = Vec::with_capacity(256);
    let mut block_names: Vec<String> = Vec::new();
    for block in record::blocks(payload, false) {
        let block = block?;
        let h = &block.header;
        let key = format!("{}:{:016x}", h.host, h.source_id);
        let p = partition_of(key.as_bytes(), partitions);
        let source_id = h.source_id.to_string();
        block_headers.clear();
        block_names.clear();
        let mut block_count = 0usize;
        let mut add = |buf: &mut Vec<u8>, names: &mut Vec<String>, name: &str, value: &[u8]| {
            header(buf, name.as_bytes(), value);
            names.push(name.to_owned());
            block_count += 1;
        };
        add(
            &mut block_headers,
            &mut block_names,
            "host",
            h.host.as_bytes(),
        );
        add(
            &mut block_headers,
            &mut block_names,
            "source",
            h.source.as_bytes(),
        );
        each_field(h.fields, |name, value| {
            add(
                &mut block_headers,
                &mut block_names,
                &field_header_name(&name),
                value.as_bytes(),
            );
        });
        let chunks = &mut parts[p];
        for r in block.records() {
            let r = r?;
            let mut fresh = chunks.is_empty();
            loop {
                let (base, offset_delta) = match chunks.last() {
                    Some(c) if !fresh => (c.base_ts, c.count),
                    _ => (r.timestamp_ms, 0),
                };
                body.clear();
                body.push(0); // attributes
                varlong(&mut body, r.timestamp_ms.wrapping_sub(base));
                varint(&mut body, offset_delta);
                varint(&mut body, key.len() as i32);
                body.extend_from_slice(key.as_bytes());
                varint(&mut body, r.message.len() as i32);
                body.extend_from_slice(r.message);
                record_headers(
                    &mut body,
                    &block_headers,
                    &block_names,
                    block_count,
                    &r,
                    &source_id,
                );
                let size = body.len() + 5;
                if size > record_limit {
                    out.too_large += 1;
                    out.too_large_bytes = out.too_large_bytes.max(size);
                    break;
                }
                match chunks.last_mut() {
                    Some(c) if !fresh && c.records.len() - BATCH_HEADER + size <= limit => {
                        varint(&mut c.records, body.len() as i32);
                        c.records.extend_from_slice(&body);
                        c.count += 1;
                        c.max_ts = c.max_ts.max(r.timestamp_ms);
                        placed[p] += size;
                        out.records += 1;
                        break;
                    }
                    _ if fresh => {
                        // Room for the batch header, filled in by `finish`; sized for
                        // what is left of the partition's estimate.
                        let left = estimate[p].saturating_sub(placed[p]);
                        let mut records = Vec::with_capacity(left.min(limit) + BATCH_HEADER + 4096);
                        records.resize(BATCH_HEADER, 0);
                        varint(&mut records, body.len() as i32);
                        records.extend_from_slice(&body);
                        chunks.push(Chunk {
                            records,
                            count: 1,
                            base_ts: r.timestamp_ms,
                            max_ts: r.timestamp_ms,
                        });
                        placed[p] += size;
                        out.records += 1;
                        break;
                    }
                    // Does not fit: again, as the first record of a new chunk.
                    _ => fresh = true,
                }
            }
        }
    }
    let rounds = parts.iter().map(Vec::len).max().unwrap_or(0);
    out.rounds = (0..rounds).map(|_| Vec::new()).collect();
    for (p, chunks) in parts.into_iter().enumerate() {
        for (round, c) in chunks.into_iter().enumerate() {
            let bytes = if codec == Compression::None {
                let mut b = c.records;
                finish(&mut b, c.count, c.base_ts, c.max_ts, codec);
                b
            } else {
                let mut b = Vec::with_capacity(BATCH_HEADER + c.records.len() / 3);
                b.resize(BATCH_HEADER, 0);
                compress_into(&c.records[BATCH_HEADER..], &mut b, codec)
                    .map_err(|e| EncodeError::Compress(e.to_string()))?;
                finish(&mut b, c.count, c.base_ts, c.max_ts, codec);
                b
            };
            out.rounds[round].push((p as i32, Bytes::from(bytes)));
        }
    }
    Ok(out)
}

/// The headers of one record: the block's (unless the record's fields replace
/// some), the record's fields, `partial`, then ours.
fn record_headers(
    body: &mut Vec<u8>,
    block_headers: &[u8],
    block_names: &[String],
    block_count: usize,
    r: &record::RecordRef<'_>,
    source_id: &str,
) {
    let partial = r.flags & FLAG_PARTIAL != 0;
    let ours = 2 + usize::from(partial);
    if r.fields.is_empty() {
        varint(body, (block_count + ours) as i32);
        body.extend_from_slice(block_headers);
    } else {
        let mut own: Vec<(String, String)> = Vec::new();
        each_field(r.fields, |n, v| {
            own.push((field_header_name(&n).into_owned(), v.into_owned()))
        });
        if own.iter().any(|(n, _)| block_names.contains(n)) {
            // A record field replaces the block's header of that name: rebuild the
            // block's headers in order with the replacements.
            let mut merged: Vec<(&str, Vec<u8>)> = Vec::new();
            let mut rest = block_headers;
            for name in block_names {
                let (value, after) = skip_header(rest);
                rest = after;
                merged.push((name, value.to_vec()));
            }
            for (n, v) in &own {
                match merged.iter_mut().find(|(m, _)| m == n) {
                    Some(slot) => slot.1 = v.as_bytes().to_vec(),
                    None => merged.push((n, v.as_bytes().to_vec())),
                }
            }
            varint(body, (merged.len() + ours) as i32);
            for (n, v) in &merged {
                header(body, n.as_bytes(), v);
            }
        } else {
            varint(body, (block_count + own.len() + ours) as i32);
            body.extend_from_slice(block_headers);
            for (n, v) in &own {
                header(body, n.as_bytes(), v.as_bytes());
            }
        }
    }
    if partial {
        header(body, b"partial", b"1");
    }
    header(body, b"tributary.source_id", source_id.as_bytes());
    header(
        body,
        b"tributary.offset",
        r.source_offset.to_string().as_bytes(),
    );
}

/// The header a field travels in: its name, or `field.NAME` when the name is
/// one of the headers that say where a record comes from.
pub fn field_header_name(name: &str) -> std::borrow::Cow<'_, str> {
    if matches!(name, "host" | "source" | "partial") || name.starts_with("tributary.") {
        std::borrow::Cow::Owned(format!("field.{name}"))
    } else {
        std::borrow::Cow::Borrowed(name)
    }
}

/// The value of the header at the start of `buf` (written by [`header`]) and what
/// follows it.
fn skip_header(buf: &[u8]) -> (&[u8], &[u8]) {
    let (klen, rest) = read_varint(buf);
    let rest = rest.get(klen..).unwrap_or(&[]);
    let (vlen, rest) = read_varint(rest);
    (
        rest.get(..vlen).unwrap_or(&[]),
        rest.get(vlen..).unwrap_or(&[]),
    )
}

fn read_varint(buf: &[u8]) -> (usize, &[u8]) {
    let mut v = 0u64;
    for (i, b) in buf.iter().enumerate().take(10) {
        v |= u64::from(b & 0x7f) << (7 * i);
        if b & 0x80 == 0 {
            let n = ((v >> 1) as i64) ^ -((v & 1) as i64);
            return (usize::try_from(n).unwrap_or(0), &buf[i + 1..]);
        }
    }
    (0, &[])
}

fn header(buf: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    varint(buf, name.len() as i32);
    buf.extend_from_slice(name);
    varint(buf, value.len() as i32);
    buf.extend_from_slice(value);
}

/// Fill in the v2 batch header at the start of `b`, whose records (compressed
/// with `codec` already) follow it.
fn finish(b: &mut [u8], count: i32, base_ts: i64, max_ts: i64, codec: Compression) {
    let attributes: i16 = match codec {
        Compression::Gzip => 1,
        Compression::Snappy => 2,
        Compression::Lz4 => 3,
        Compression::Zstd => 4,
        Compression::None => 0,
    };
    let length = (b.len() - 12) as i32;
    let mut h = Vec::with_capacity(BATCH_HEADER);
    h.extend_from_slice(&0i64.to_be_bytes()); // base offset
    h.extend_from_slice(&length.to_be_bytes());
    h.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
    h.push(2); // magic
    h.extend_from_slice(&[0; 4]); // crc, below
    h.extend_from_slice(&attributes.to_be_bytes());
    h.extend_from_slice(&(count - 1).to_be_bytes()); // last offset delta
    h.extend_from_slice(&base_ts.to_be_bytes());
    h.extend_from_slice(&max_ts.to_be_bytes());
    h.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
    h.extend_from_slice(&(-1i16).to_be_bytes()); // producer epoch
    h.extend_from_slice(&(-1i32).to_be_bytes()); // base sequence
    h.extend_from_slice(&count.to_be_bytes());
    b[..BATCH_HEADER].copy_from_slice(&h);
    let crc = crc32c::crc32c(&b[21..]);
    b[17..21].copy_from_slice(&crc.to_be_bytes());
}

fn varint(buf: &mut Vec<u8>, v: i32) {
    varlong(buf, i64::from(v));
}

fn varlong(buf: &mut Vec<u8>, v: i64) {
    let mut z = ((v << 1) ^ (v >> 63)) as u64;
    while z >= 0x80 {
        buf.push((z as u8) | 0x80);
        z >>= 7;
    }
    buf.push(z as u8);
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::records::RecordBatchDecoder;
    use tributary_common::record::BlockWriter;

    fn payload() -> Vec<u8> {
        let mut buf = Vec::new();
        for s in 0..3u64 {
            let source = format!("/var/log/app{s}.log");
            let mut w = BlockWriter::begin(
                &mut buf,
                "web-01",
                &source,
                100 + s,
                br#"{"env":"prod","team":"a"}"#,
            );
            for i in 0..40u64 {
                let (flags, fields) = match i % 4 {
                    1 => (FLAG_PARTIAL, &br#"{"severity":"err","pid":42}"#[..]),
                    2 => (0, &br#"{"env":"dev"}"#[..]),
                    3 => (0, &br#"{"host":"web-07","tributary.offset":"5"}"#[..]),
                    _ => (0, &b""[..]),
                };
                let message = format!("source {s} line {i}");
                w.push(
                    &mut buf,
                    flags,
                    1_796_000_000_000 + (i as i64) * 7 - 100,
                    i * 100 + 99,
                    fields,
                    message.as_bytes(),
                );
            }
            w.finish(&mut buf);
        }
        buf
    }

    fn decode_all(enc: &Encoded) -> Vec<(i32, kafka_protocol::records::Record)> {
        let mut out = Vec::new();
        for round in &enc.rounds {
            for (p, b) in round {
                let mut bytes = b.clone();
                let set = RecordBatchDecoder::decode_with_custom_compression(
                    &mut bytes,
                    Some(
                        |buf: &mut bytes::Bytes, c: Compression| -> anyhow::Result<bytes::Bytes> {
                            use std::io::Read;
                            let mut v = Vec::new();
                            match c {
                                Compression::None => v.extend_from_slice(buf),
                                Compression::Lz4 => {
                                    lz4_flex::frame::FrameDecoder::new(&buf[..])
                                        .read_to_end(&mut v)?;
                                }
                                Compression::Gzip => {
                                    flate2::read::GzDecoder::new(&buf[..]).read_to_end(&mut v)?;
                                }
                                _ => anyhow::bail!("codec"),
                            }
                            Ok(bytes::Bytes::from(v))
                        },
                    ),
                )
                .expect("kafka-protocol decodes our batch (CRC and all)");
                for r in set.records {
                    out.push((*p, r));
                }
            }
        }
        out
    }

    #[test]
    fn batches_decode_with_kafka_protocol_and_match_the_records() {
        for codec in [Compression::None, Compression::Lz4, Compression::Gzip] {
            let enc = encode(&payload(), 4, 1 << 20, codec).unwrap();
            assert_eq!(enc.records, 120);
            assert_eq!(enc.rounds.len(), 1);
            let got = decode_all(&enc);
            assert_eq!(got.len(), 120);
            let mut per_key: std::collections::BTreeMap<String, Vec<i64>> = Default::default();
            for (p, r) in &got {
                let key = std::str::from_utf8(r.key.as_deref().unwrap())
                    .unwrap()
                    .to_owned();
                assert_eq!(*p as usize, partition_of(key.as_bytes(), 4));
                let hs: Vec<(String, String)> = r
                    .headers
                    .iter()
                    .map(|(k, v)| {
                        (
                            k.to_string(),
                            String::from_utf8(v.as_ref().unwrap().to_vec()).unwrap(),
                        )
                    })
                    .collect();
                let get = |n: &str| hs.iter().find(|(k, _)| k == n).map(|(_, v)| v.as_str());
                let sid: u64 = get("tributary.source_id").unwrap().parse().unwrap();
                assert_eq!(key, format!("web-01:{sid:016x}"));
                let off: u64 = get("tributary.offset").unwrap().parse().unwrap();
                let i = (off - 99) / 100;
                assert_eq!(
                    std::str::from_utf8(r.value.as_deref().unwrap()).unwrap(),
                    format!("source {} line {i}", sid - 100)
                );
                assert_eq!(r.timestamp, 1_796_000_000_000 + (i as i64) * 7 - 100);
                assert_eq!(get("host"), Some("web-01"));
                assert_eq!(
                    get("source"),
                    Some(format!("/var/log/app{}.log", sid - 100).as_str())
                );
                assert_eq!(get("team"), Some("a"));
                let names: Vec<&str> = hs.iter().map(|(k, _)| k.as_str()).collect();
                match i % 4 {
                    1 => {
                        assert_eq!(get("partial"), Some("1"));
                        assert_eq!(get("severity"), Some("err"));
                        assert_eq!(get("pid"), Some("42"));
                        assert_eq!(get("env"), Some("prod"));
                    }
                    2 => {
                        assert_eq!(
                            get("env"),
                            Some("dev"),
                            "the record's field replaces the block's"
                        );
                        assert_eq!(names.iter().filter(|n| **n == "env").count(), 1);
                    }
                    3 => {
                        assert_eq!(get("host"), Some("web-01"), "no field passes for the host");
                        assert_eq!(get("field.host"), Some("web-07"));
                        assert_eq!(get("field.tributary.offset"), Some("5"));
                        assert_eq!(
                            names.iter().filter(|n| **n == "tributary.offset").count(),
                            1
                        );
                    }
                    _ => assert!(get("partial").is_none() && get("severity").is_none()),
                }
                assert_eq!(
                    &names[names.len() - 2..],
                    ["tributary.source_id", "tributary.offset"]
                );
                per_key.entry(key).or_default().push(r.offset);
            }
            assert_eq!(per_key.len(), 3);
        }
    }

    /// 100 records of 1 KiB from one source (text as `filler` makes it) and one
    /// of 40 KiB in the middle.
    fn big(filler: impl Fn(u64) -> String) -> Vec<u8> {
        let mut buf = Vec::new();
        let mut w = BlockWriter::begin(&mut buf, "h", "/big.log", 7, b"");
        for i in 0..101u64 {
            let m = if i == 50 {
                "x".repeat(40 << 10)
            } else {
                format!("{i:04} {}", filler(i))
            };
            w.push(&mut buf, 0, 1_796_000_000_000, i * 2000, b"", m.as_bytes());
        }
        w.finish(&mut buf);
        buf
    }

    /// Text that lz4 cannot shrink: hex of a pseudo-random sequence.
    fn noise(seed: u64) -> String {
        let mut x = seed.wrapping_mul(0x9E37_79B9_7F4A_7C15) | 1;
        (0..1019)
            .map(|_| {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                char::from(
                    b"0123456789abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ+/"
                        [(x % 64) as usize],
                )
            })
            .collect()
    }

    #[test]
    fn partitions_are_cut_at_the_limit_and_oversized_records_left_out() {
        let limit = 16 << 10;
        let repetitive = big(|_| "y".repeat(1019));
        let random = big(noise);
        for (buf, codec, min_rounds) in [
            (&repetitive, Compression::None, 7),
            (&repetitive, Compression::Lz4, 2),
            (&random, Compression::Lz4, 7),
            (&random, Compression::Gzip, 7),
        ] {
            let enc = encode(buf, 1, limit, codec).unwrap();
            assert_eq!(enc.too_large, 1);
            assert!(enc.too_large_bytes > 40 << 10);
            assert_eq!(enc.records, 100);
            assert!(
                enc.rounds.len() >= min_rounds,
                "{codec:?}: {}",
                enc.rounds.len()
            );
            for round in &enc.rounds {
                assert_eq!(round.len(), 1, "one batch per partition per request");
                assert!(
                    round[0].1.len() <= limit,
                    "{codec:?}: a batch of {}",
                    round[0].1.len()
                );
            }
            let got = decode_all(&enc);
            let values: Vec<String> = got
                .iter()
                .map(|(_, r)| String::from_utf8(r.value.as_ref().unwrap()[..4].to_vec()).unwrap())
                .collect();
            let want: Vec<String> = (0..101)
                .filter(|i| *i != 50)
                .map(|i| format!("{i:04}"))
                .collect();
            assert_eq!(
                values, want,
                "{codec:?}: every record but the oversized one, in order"
            );
        }
        // Repetitive text compresses: fewer, fuller batches than without compression.
        assert!(
            encode(&repetitive, 1, limit, Compression::Lz4)
                .unwrap()
                .rounds
                .len()
                < encode(&repetitive, 1, limit, Compression::None)
                    .unwrap()
                    .rounds
                    .len()
        );
    }
}
