//! Reading the record batches of a Fetch answer (the collector's Kafka source):
//! [`split_batches`] cuts the bytes into whole v2 batches from their headers alone
//! (a broker may end an answer with part of a batch), and [`decode_batch`] decodes
//! one with [`decompress`], the decompression hook of
//! `RecordBatchDecoder::decode_with_custom_compression` (the counterpart of
//! [`super::compress`]: lz4 frames through `lz4_flex`, gzip through `flate2`, or
//! none; no C library).
//!
//! Nothing here trusts a length or a count: a batch's declared length is checked
//! against the bytes there are, no batch decompresses to more than
//! [`MAX_DECOMPRESSED`] (a decompression bomb is an error, never an allocation),
//! and before `kafka-protocol` decodes a single record, [`check_records`] walks
//! the (decompressed) records once, without allocating, and refuses a batch
//! whose record count, header counts or lengths claim more than the bytes hold:
//! `kafka-protocol` reserves memory for a count before it reads what is counted
//! (a 61-byte batch can ask for hundreds of gigabytes, and a refused allocation
//! aborts the process), so what it reserves is then always backed by bytes that
//! are there. Snappy and zstd are refused with an error naming the codec, the
//! topic and the partition.

use std::cell::Cell;
use std::io::Read;

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

/// Most bytes one batch may decompress to.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

/// The smallest v2 record: its length, attributes, timestamp delta, offset
/// delta, key length, value length and header count, one byte each.
pub const MIN_RECORD_LEN: usize = 7;
/// The smallest record header: its key length and value length, one byte each.
pub const MIN_HEADER_LEN: usize = 2;

/// Bytes of a v2 batch header up to and including the record count.
pub const BATCH_HEADER_LEN: usize = 61;
/// `base_offset` (8) + `batch_length` (4): the part `batch_length` does not count.
const LOG_OVERHEAD: usize = 12;

/// Why a batch's records could not be decompressed.
#[derive(Debug, thiserror::Error)]
pub enum DecompressError {
    #[error(
        "{codec} compression is not supported (none, gzip and lz4 are): have the producers set compression.type to lz4, gzip or none"
    )]
    Unsupported { codec: &'static str },
    #[error(
        "the records decompress to more than {limit} bytes: refused (a decompression bomb, or a batch far larger than any producer sends)"
    )]
    TooLarge { limit: usize },
    #[error("{codec} data does not decompress: {source}")]
    Corrupt {
        codec: &'static str,
        #[source]
        source: std::io::Error,
    },
}

/// The name of a codec, for messages.
pub fn codec_name(codec: Compression) -> &'static str {
    match codec {
        Compression::None => "none",
        Compression::Gzip => "gzip",
        Compression::Snappy => "snappy",
        Compression::Lz4 => "lz4",
        Compression::Zstd => "zstd",
    }
}

/// Decompress `data` (one batch's records) into at most `limit` bytes.
pub fn decompress_limited(
    data: &[u8],
    codec: Compression,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    let mut out = Vec::new();
    let cap = limit as u64 + 1;
    let read = match codec {
        Compression::None => {
            if data.len() > limit {
                return Err(DecompressError::TooLarge { limit });
            }
            return Ok(Bytes::copy_from_slice(data));
        }
        Compression::Gzip => flate2::read::MultiGzDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out),
        Compression::Lz4 => lz4_flex::frame::FrameDecoder::new(data)
            .take(cap)
            .read_to_end(&mut out),
        other => {
            return Err(DecompressError::Unsupported {
                codec: codec_name(other),
            });
        }
    };
    read.map_err(|source| DecompressError::Corrupt {
        codec: codec_name(codec),
        source,
    })?;
    if out.len() > limit {
        return Err(DecompressError::TooLarge { limit });
    }
    Ok(Bytes::from(out))
}

/// [`decompress_limited`] for records already in a `Bytes`: uncompressed ones are
/// handed on as they are, not copied.
fn decompress_bytes(
    data: &Bytes,
    codec: Compression,
    limit: usize,
) -> Result<Bytes, DecompressError> {
    match codec {
        Compression::None if data.len() > limit => Err(DecompressError::TooLarge { limit }),
        Compression::None => Ok(data.clone()),
        _ => decompress_limited(data, codec, limit),
    }
}

/// The decompression hook of `RecordBatchDecoder::decode_with_custom_compression`,
/// bounded by [`MAX_DECOMPRESSED`]. It does not look at the records: call
/// [`check_records`] on what it gives before `kafka-protocol` decodes them
/// ([`decode_batch`] does).
pub fn decompress(data: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    Ok(decompress_bytes(data, codec, MAX_DECOMPRESSED)?)
}

/// One whole record batch of a Fetch answer, as its header describes it.
#[derive(Debug, Clone)]
pub struct RawBatch {
    pub base_offset: i64,
    /// `base_offset + last_offset_delta`: the next batch starts after it, even
    /// when compaction removed records.
    pub last_offset: i64,
    pub magic: i8,
    pub attributes: i16,
    pub producer_id: i64,
    /// The whole batch, header included.
    pub bytes: Bytes,
}

impl RawBatch {
    pub fn compression(&self) -> Compression {
        match self.attributes & 0x7 {
            1 => Compression::Gzip,
            2 => Compression::Snappy,
            3 => Compression::Lz4,
            4 => Compression::Zstd,
            _ => Compression::None,
        }
    }

    /// A control batch (transaction markers): no data records.
    pub fn is_control(&self) -> bool {
        self.attributes & (1 << 5) != 0
    }

    pub fn is_transactional(&self) -> bool {
        self.attributes & (1 << 4) != 0
    }
}

/// The whole batches at the start of `data`, and whether bytes were left over (a
/// batch the broker cut at the size limit; it comes whole in the next answer).
/// Stops at anything that is not a batch header (the rest is left over).
pub fn split_batches(data: &Bytes) -> (Vec<RawBatch>, bool) {
    let mut out = Vec::new();
    let mut at = 0usize;
    while data.len() - at >= LOG_OVERHEAD {
        let head = &data[at..];
        let base_offset = i64::from_be_bytes(head[0..8].try_into().unwrap_or_default());
        let length = i32::from_be_bytes(head[8..12].try_into().unwrap_or_default());
        let Ok(length) = usize::try_from(length) else {
            break;
        };
        let Some(total) = length.checked_add(LOG_OVERHEAD) else {
            break;
        };
        if total > head.len() {
            break;
        }
        // magic sits at the same place in every format (byte 16).
        let magic = if total > 16 { head[16] as i8 } else { -1 };
        let (attributes, last_offset, producer_id) = if magic == 2 && total >= BATCH_HEADER_LEN {
            let be16 = |r: std::ops::Range<usize>| {
                i16::from_be_bytes(head[r].try_into().unwrap_or_default())
            };
            let be32 = |r: std::ops::Range<usize>| {
                i32::from_be_bytes(head[r].try_into().unwrap_or_default())
            };
            let be64 = |r: std::ops::Range<usize>| {
                i64::from_be_bytes(head[r].try_into().unwrap_or_default())
            };
            (
                be16(21..23),
                base_offset.saturating_add(i64::from(be32(23..27).max(0))),
                be64(43..51),
            )
        } else {
            (0, base_offset, -1)
        };
        out.push(RawBatch {
            base_offset,
            last_offset,
            magic,
            attributes,
            producer_id,
            bytes: data.slice(at..at + total),
        });
        at += total;
    }
    (out, at < data.len())
}

/// The fields of a v2 batch header that its records are read against.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct BatchHead {
    pub base_offset: i64,
    /// The batch's first timestamp: each record's timestamp is it plus a delta.
    pub first_timestamp: i64,
    /// How many records the header says follow (bytes 57..61).
    pub record_count: i32,
}

impl BatchHead {
    /// The header at the start of `batch` (a whole v2 batch, from its base
    /// offset on); `None` when it is shorter than [`BATCH_HEADER_LEN`].
    pub fn read(batch: &[u8]) -> Option<BatchHead> {
        let head = batch.get(..BATCH_HEADER_LEN)?;
        let be64 = |at: usize| {
            let mut b = [0u8; 8];
            b.copy_from_slice(&head[at..at + 8]);
            i64::from_be_bytes(b)
        };
        let mut count = [0u8; 4];
        count.copy_from_slice(&head[57..61]);
        Some(BatchHead {
            base_offset: be64(0),
            first_timestamp: be64(27),
            record_count: i32::from_be_bytes(count),
        })
    }
}

/// What a batch's records hold, as [`check_records`] counted them.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct RecordsShape {
    pub records: usize,
    /// Headers of all the records together.
    pub headers: usize,
    /// The records' (decompressed) bytes.
    pub bytes: usize,
}

impl RecordsShape {
    /// About how much memory the records take once decoded: their bytes (the
    /// decoded keys, values and headers point into them) plus one
    /// `kafka_protocol::records::Record` per record and one header map entry
    /// (with its share of the map's index) per header. At most about 50 times
    /// [`bytes`](Self::bytes), for records of nothing but empty headers (2 bytes
    /// each, about 100 decoded); about 26 times for empty records (7 bytes each).
    pub fn decoded_size(&self) -> usize {
        const RECORD: usize = std::mem::size_of::<Record>();
        const HEADER: usize = std::mem::size_of::<(usize, StrBytes, Option<Bytes>)>()
            + 3 * std::mem::size_of::<usize>();
        self.bytes
            .saturating_add(self.records.saturating_mul(RECORD))
            .saturating_add(self.headers.saturating_mul(HEADER))
    }
}

/// Why a batch's records do not hold what they declare ([`check_records`]).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum RecordsError {
    #[error(
        "the batch header counts {count} records, but its {len} bytes of records hold at most {max}"
    )]
    TooManyRecords { count: i32, len: usize, max: usize },
    #[error("record {index} declares {count} headers, but only {left} bytes of it are left")]
    TooManyHeaders {
        index: usize,
        count: i32,
        left: usize,
    },
    #[error("record {index}: {what}")]
    Malformed { index: usize, what: &'static str },
    #[error("record {index}: its {what} is out of range (the batch's plus the record's delta)")]
    Overflow { index: usize, what: &'static str },
}

impl RecordsError {
    /// Whether `kafka-protocol` refuses these records too, by itself, before it
    /// allocates more than they hold: true for [`RecordsError::Malformed`] (it
    /// runs out of bytes or reads a negative length at the same place); false
    /// for a count beyond the bytes (it reserves room for the count first) and
    /// for an offset or timestamp out of range (it overflows).
    pub fn decoder_refuses_too(&self) -> bool {
        matches!(self, RecordsError::Malformed { .. })
    }
}

/// A cursor over record bytes, reading what `kafka-protocol` reads the way it
/// reads it (its varints included: at most 5 bytes for an int, 10 for a long,
/// bits beyond the type dropped).
struct Walk<'a> {
    b: &'a [u8],
    at: usize,
}

impl<'a> Walk<'a> {
    fn left(&self) -> usize {
        self.b.len() - self.at
    }

    fn u8(&mut self) -> Option<u8> {
        let v = *self.b.get(self.at)?;
        self.at += 1;
        Some(v)
    }

    fn unsigned(&mut self, max_bytes: u32) -> Option<u64> {
        let mut value = 0u64;
        for i in 0..max_bytes {
            let b = self.u8()?;
            value |= u64::from(b & 0x7f) << (i * 7);
            if b < 0x80 {
                break;
            }
        }
        Some(value)
    }

    fn varint(&mut self) -> Option<i32> {
        let z = self.unsigned(5)? as u32;
        Some(((z >> 1) as i32) ^ -((z & 1) as i32))
    }

    fn varlong(&mut self) -> Option<i64> {
        let z = self.unsigned(10)?;
        Some(((z >> 1) as i64) ^ -((z & 1) as i64))
    }

    fn take(&mut self, n: usize) -> Option<&'a [u8]> {
        let end = self.at.checked_add(n).filter(|&e| e <= self.b.len())?;
        let s = &self.b[self.at..end];
        self.at = end;
        Some(s)
    }
}

/// Walk `records` (a batch's records section, decompressed) once, as the v2
/// record layout reads: for each of the `head.record_count` records its length
/// (varint), attributes, timestamp delta (varlong), offset delta (varint), key
/// and value (varint length, -1 for none, then the bytes), header count
/// (varint), and each header's key and value the same way. Refused: a record
/// count beyond what the bytes can hold ([`MIN_RECORD_LEN`] each), a header
/// count beyond what is left of its record ([`MIN_HEADER_LEN`] each), a length
/// that is negative or runs past its end, and an offset or timestamp out of
/// range. Linear in the bytes, and allocates nothing.
///
/// What passes is what `kafka-protocol` reads the same way (header keys are
/// checked for UTF-8 by it alone), so every count it reserves memory for is
/// backed by bytes that are there; bytes after the records, or after a
/// record's last header within its length, are ignored as it ignores them.
pub fn check_records(records: &[u8], head: &BatchHead) -> Result<RecordsShape, RecordsError> {
    let count = head.record_count;
    let max = records.len() / MIN_RECORD_LEN;
    let Ok(n) = usize::try_from(count) else {
        return Err(RecordsError::Malformed {
            index: 0,
            what: "the batch header counts a negative number of records",
        });
    };
    if n > max {
        return Err(RecordsError::TooManyRecords {
            count,
            len: records.len(),
            max,
        });
    }
    let mut shape = RecordsShape {
        records: n,
        headers: 0,
        bytes: records.len(),
    };
    let mut w = Walk { b: records, at: 0 };
    for index in 0..n {
        let bad = |what| RecordsError::Malformed { index, what };
        let len = w.varint().ok_or(bad("its length is cut short"))?;
        let len = usize::try_from(len).map_err(|_| bad("its length is negative"))?;
        let body = w
            .take(len)
            .ok_or(bad("it runs past the end of the records"))?;
        let mut r = Walk { b: body, at: 0 };
        r.u8().ok_or(bad("its attributes are missing"))?;
        let ts = r.varlong().ok_or(bad("its timestamp delta is cut short"))?;
        if head.first_timestamp.checked_add(ts).is_none() {
            return Err(RecordsError::Overflow {
                index,
                what: "timestamp",
            });
        }
        let off = r.varint().ok_or(bad("its offset delta is cut short"))?;
        if head.base_offset.checked_add(i64::from(off)).is_none() {
            return Err(RecordsError::Overflow {
                index,
                what: "offset",
            });
        }
        for (what_len, what_neg, what_past) in [
            (
                "its key length is cut short",
                "its key length is negative",
                "its key runs past its end",
            ),
            (
                "its value length is cut short",
                "its value length is negative",
                "its value runs past its end",
            ),
        ] {
            let l = r.varint().ok_or(bad(what_len))?;
            if l < -1 {
                return Err(bad(what_neg));
            }
            if l >= 0 {
                r.take(l as usize).ok_or(bad(what_past))?;
            }
        }
        let headers = r.varint().ok_or(bad("its header count is cut short"))?;
        let h = usize::try_from(headers).map_err(|_| bad("its header count is negative"))?;
        if h > r.left() / MIN_HEADER_LEN {
            return Err(RecordsError::TooManyHeaders {
                index,
                count: headers,
                left: r.left(),
            });
        }
        for _ in 0..h {
            let k = r.varint().ok_or(bad("a header key length is cut short"))?;
            let k = usize::try_from(k).map_err(|_| bad("a header key length is negative"))?;
            r.take(k).ok_or(bad("a header key runs past its end"))?;
            let v = r
                .varint()
                .ok_or(bad("a header value length is cut short"))?;
            if v < -1 {
                return Err(bad("a header value length is negative"));
            }
            if v >= 0 {
                r.take(v as usize)
                    .ok_or(bad("a header value runs past its end"))?;
            }
        }
        shape.headers += h;
    }
    Ok(shape)
}

/// Why a batch of one topic-partition could not be read.
#[derive(Debug, thiserror::Error)]
pub enum BatchError {
    #[error(
        "Kafka topic `{topic}` partition {partition}: the record batch at offsets {base}..={last} is {codec}-compressed, which this collector cannot read (it reads none, gzip and lz4): have the producers set compression.type to lz4, gzip or none; this partition waits here until then"
    )]
    UnsupportedCodec {
        topic: String,
        partition: i32,
        base: i64,
        last: i64,
        codec: &'static str,
    },
    #[error(
        "Kafka topic `{topic}` partition {partition}: the batch at offset {base} is in message format v{magic}; only v2 (Kafka 0.11 and later) is read"
    )]
    OldFormat {
        topic: String,
        partition: i32,
        base: i64,
        magic: i8,
    },
    #[error(
        "Kafka topic `{topic}` partition {partition}: the record batch at offsets {base}..={last} does not decode: {reason}"
    )]
    Corrupt {
        topic: String,
        partition: i32,
        base: i64,
        last: i64,
        reason: String,
    },
}

impl BatchError {
    /// Whether reading it again can never succeed with this build, so that the
    /// partition must wait (an unsupported codec or format) rather than skip
    /// the batch (damaged data).
    pub fn waits(&self) -> bool {
        !matches!(self, BatchError::Corrupt { .. })
    }
}

/// Decode one whole v2 batch of `topic`/`partition` (checked: CRC32C, lengths,
/// counts ([`check_records`]), decompressed size).
pub fn decode_batch(
    batch: &RawBatch,
    topic: &str,
    partition: i32,
) -> Result<Vec<Record>, BatchError> {
    decode_batch_limited(batch, topic, partition, MAX_DECOMPRESSED)
}

/// [`decode_batch`] with another bound on the decompressed size.
pub fn decode_batch_limited(
    batch: &RawBatch,
    topic: &str,
    partition: i32,
    limit: usize,
) -> Result<Vec<Record>, BatchError> {
    Ok(
        decode_batch_within(batch, topic, partition, limit, usize::MAX)?
            .map(|d| d.records)
            .unwrap_or_default(),
    )
}

/// A batch decoded, and what its records hold.
#[derive(Debug)]
pub struct Decoded {
    pub records: Vec<Record>,
    pub shape: RecordsShape,
}

/// [`decode_batch_limited`] within `room`: `Ok(None)`, with nothing decoded,
/// when the batch's records would take more than `room` bytes decoded
/// ([`RecordsShape::decoded_size`]; decompression stops past `room`). A batch
/// larger than `limit` is damaged whatever `room` is, but only said to be when
/// `room` is not smaller than `limit` (`Ok(None)` until then), so that a
/// caller that gives a batch all the room there is (`usize::MAX`) always learns
/// what it is.
pub fn decode_batch_within(
    batch: &RawBatch,
    topic: &str,
    partition: i32,
    limit: usize,
    room: usize,
) -> Result<Option<Decoded>, BatchError> {
    if batch.magic != 2 {
        return Err(BatchError::OldFormat {
            topic: topic.to_owned(),
            partition,
            base: batch.base_offset,
            magic: batch.magic,
        });
    }
    let codec = batch.compression();
    if matches!(codec, Compression::Snappy | Compression::Zstd) {
        return Err(BatchError::UnsupportedCodec {
            topic: topic.to_owned(),
            partition,
            base: batch.base_offset,
            last: batch.last_offset,
            codec: codec_name(codec),
        });
    }
    let head = BatchHead::read(&batch.bytes);
    let over = Cell::new(false);
    let shape = Cell::new(RecordsShape::default());
    // Called by kafka-protocol once the header and the CRC32C are checked, and
    // before it reserves anything for the records.
    let hook = |data: &mut Bytes, codec: Compression| -> anyhow::Result<Bytes> {
        let out = match decompress_bytes(data, codec, limit.min(room)) {
            Err(DecompressError::TooLarge { .. }) if room < limit => {
                over.set(true);
                anyhow::bail!("the records take more than the {room} bytes of room left");
            }
            out => out?,
        };
        let Some(head) = head else {
            anyhow::bail!("the batch header is cut short");
        };
        let s = check_records(&out, &head)?;
        if s.decoded_size() > room {
            over.set(true);
            anyhow::bail!("the records take more than the {room} bytes of room left");
        }
        shape.set(s);
        Ok(out)
    };
    let mut bytes = batch.bytes.clone();
    match RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(hook)) {
        Ok(set) => Ok(Some(Decoded {
            records: set.records,
            shape: shape.get(),
        })),
        Err(_) if over.get() => Ok(None),
        Err(e) => Err(BatchError::Corrupt {
            topic: topic.to_owned(),
            partition,
            base: batch.base_offset,
            last: batch.last_offset,
            reason: format!("{e:#}"),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::BytesMut;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, RecordBatchEncoder,
        RecordEncodeOptions, TimestampType,
    };

    fn record(offset: i64, value: &str) -> Record {
        Record {
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset,
            // Constant offset - sequence: the encoder keeps them in one batch.
            sequence: offset as i32,
            timestamp: 1_700_000_000_000 + offset,
            key: None,
            value: Some(Bytes::copy_from_slice(value.as_bytes())),
            headers: IndexMap::new(),
            delete_horizon: false,
        }
    }

    fn encode(records: &[Record], compression: Compression) -> Bytes {
        let mut buf = BytesMut::new();
        RecordBatchEncoder::encode_with_custom_compression(
            &mut buf,
            records.iter(),
            &RecordEncodeOptions {
                version: 2,
                compression,
            },
            Some(super::super::compress),
        )
        .unwrap();
        buf.freeze()
    }

    fn zigzag(v: i64) -> Vec<u8> {
        let mut n = ((v << 1) ^ (v >> 63)) as u64;
        let mut out = Vec::new();
        while n >= 0x80 {
            out.push((n as u8) | 0x80);
            n >>= 7;
        }
        out.push(n as u8);
        out
    }

    /// One v2 record: attributes 0, the deltas, key, value and headers (a
    /// header count other than the headers' when `count` says so).
    fn raw_record(
        offset_delta: i64,
        key: Option<&[u8]>,
        value: Option<&[u8]>,
        headers: &[(&[u8], Option<&[u8]>)],
        count: Option<i64>,
    ) -> Vec<u8> {
        let bytes = |b: Option<&[u8]>| match b {
            None => zigzag(-1),
            Some(b) => [zigzag(b.len() as i64), b.to_vec()].concat(),
        };
        let mut body = vec![0u8];
        body.extend(zigzag(0));
        body.extend(zigzag(offset_delta));
        body.extend(bytes(key));
        body.extend(bytes(value));
        body.extend(zigzag(count.unwrap_or(headers.len() as i64)));
        for (k, v) in headers {
            body.extend(bytes(Some(k)));
            body.extend(bytes(*v));
        }
        [zigzag(body.len() as i64), body].concat()
    }

    /// A whole v2 batch around `records` (compressed with `codec`), its header
    /// counting `count` records, CRC32C correct.
    fn raw_batch(base: i64, count: i32, records: &[u8], codec: Compression) -> Bytes {
        let mut packed = Vec::new();
        super::super::compress_into(records, &mut packed, codec).unwrap();
        let mut b = Vec::new();
        b.extend_from_slice(&base.to_be_bytes());
        b.extend_from_slice(
            &((BATCH_HEADER_LEN - LOG_OVERHEAD + packed.len()) as i32).to_be_bytes(),
        );
        b.extend_from_slice(&(-1i32).to_be_bytes()); // partition leader epoch
        b.push(2);
        b.extend_from_slice(&[0; 4]); // CRC32C, below
        let bits: i16 = match codec {
            Compression::Gzip => 1,
            Compression::Lz4 => 3,
            _ => 0,
        };
        b.extend_from_slice(&bits.to_be_bytes());
        b.extend_from_slice(&(count.max(1) - 1).to_be_bytes()); // last offset delta
        b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        b.extend_from_slice(&1_700_000_000_000i64.to_be_bytes());
        b.extend_from_slice(&(-1i64).to_be_bytes()); // producer id
        b.extend_from_slice(&(-1i16).to_be_bytes());
        b.extend_from_slice(&(-1i32).to_be_bytes());
        b.extend_from_slice(&count.to_be_bytes());
        assert_eq!(b.len(), BATCH_HEADER_LEN);
        b.extend_from_slice(&packed);
        let crc = crc32c::crc32c(&b[21..]);
        b[17..21].copy_from_slice(&crc.to_be_bytes());
        Bytes::from(b)
    }

    fn one(data: &Bytes) -> RawBatch {
        let (batches, rest) = split_batches(data);
        assert!(!rest && batches.len() == 1);
        batches[0].clone()
    }

    #[test]
    fn a_record_count_beyond_the_bytes_is_refused_before_decoding() {
        // 61 bytes asking for i32::MAX records: kafka-protocol reserves room for
        // them all (hundreds of gigabytes: the allocator aborts) before reading one.
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let data = raw_batch(40, i32::MAX, b"", codec);
            let e = decode_batch(&one(&data), "app", 3).unwrap_err();
            assert!(!e.waits(), "damaged: skipped");
            let msg = e.to_string();
            assert!(
                msg.contains("`app` partition 3") && msg.contains("counts 2147483647 records"),
                "{msg}"
            );
            // One record's bytes, counted as more than they can hold.
            let rec = raw_record(0, None, Some(b"v"), &[], None);
            let data = raw_batch(40, 2, &rec, codec);
            let e = decode_batch(&one(&data), "app", 3).unwrap_err().to_string();
            assert!(e.contains("counts 2 records"), "{e}");
            let data = raw_batch(40, 1, &rec, codec);
            assert_eq!(decode_batch(&one(&data), "app", 3).unwrap().len(), 1);
        }
        // The bound is exact: 7 bytes is the smallest record.
        let least = raw_record(0, None, None, &[], None);
        assert_eq!(least.len(), MIN_RECORD_LEN);
        let head = |count| BatchHead {
            base_offset: 0,
            first_timestamp: 0,
            record_count: count,
        };
        let three = least.repeat(3);
        assert_eq!(check_records(&three, &head(3)).unwrap().records, 3);
        assert!(matches!(
            check_records(&three, &head(4)),
            Err(RecordsError::TooManyRecords { max: 3, .. })
        ));
        // Fewer records than counted, within the bound: refused as the decoder does.
        let e = check_records(
            &[three.clone(), vec![20, 0, 0, 0, 0, 0, 0]].concat(),
            &head(4),
        )
        .unwrap_err();
        assert!(e.decoder_refuses_too(), "{e}");
    }

    #[test]
    fn a_header_count_beyond_the_record_is_refused_before_decoding() {
        // 2^31 - 1 headers in a 7-byte record: kafka-protocol sizes the map for
        // them first (gigabytes).
        let rec = raw_record(0, None, Some(b"v"), &[], Some(i32::MAX.into()));
        for codec in [Compression::None, Compression::Lz4] {
            let data = raw_batch(9, 1, &rec, codec);
            let e = decode_batch(&one(&data), "app", 0).unwrap_err();
            assert!(!e.waits());
            let msg = e.to_string();
            assert!(
                msg.contains("9..=9") && msg.contains("declares 2147483647 headers"),
                "{msg}"
            );
        }
        let head = BatchHead {
            base_offset: 0,
            first_timestamp: 0,
            record_count: 1,
        };
        // As many headers as the bytes left can hold (2 bytes each) pass; one more does not.
        let two: &[(&[u8], Option<&[u8]>)] = &[(b"", Some(b"")), (b"", None)];
        let ok = raw_record(0, None, None, two, None);
        assert_eq!(check_records(&ok, &head).unwrap().headers, 2);
        let e = check_records(&raw_record(0, None, None, two, Some(3)), &head).unwrap_err();
        assert!(
            matches!(
                e,
                RecordsError::TooManyHeaders {
                    count: 3,
                    left: 4,
                    ..
                }
            ),
            "{e}"
        );
        assert!(!e.decoder_refuses_too());
        // Offsets and timestamps out of range are damage too.
        let far = BatchHead {
            base_offset: i64::MAX - 1,
            ..head
        };
        assert!(check_records(&raw_record(1, None, None, &[], None), &far).is_ok());
        let e = check_records(&raw_record(2, None, None, &[], None), &far).unwrap_err();
        assert!(
            matches!(e, RecordsError::Overflow { what: "offset", .. }),
            "{e}"
        );
    }

    #[test]
    fn check_records_reads_what_the_decoder_reads() {
        let recs: Vec<Vec<u8>> = vec![
            raw_record(
                0,
                Some(b"k"),
                Some(b"value"),
                &[(b"host", Some(b"web-01"))],
                None,
            ),
            raw_record(
                1,
                None,
                None,
                &[(b"a", None), (b"b", Some(b"")), (b"", Some(b"x"))],
                None,
            ),
            raw_record(2, Some(b""), Some(&[7; 300]), &[], None),
        ];
        let records = recs.concat();
        let head = BatchHead {
            base_offset: 100,
            first_timestamp: 1_700_000_000_000,
            record_count: 3,
        };
        let shape = check_records(&records, &head).unwrap();
        assert_eq!(
            (shape.records, shape.headers, shape.bytes),
            (3, 4, records.len())
        );
        assert!(shape.decoded_size() > records.len() + 3 * std::mem::size_of::<Record>());
        let got = decode_batch(
            &one(&raw_batch(100, 3, &records, Compression::Gzip)),
            "t",
            0,
        )
        .unwrap();
        assert_eq!(got.len(), 3);
        assert_eq!(got[1].headers.len(), 3);
        assert_eq!(got[2].value.as_ref().map(|v| v.len()), Some(300));

        // Every byte changed, and every cut: whenever check_records says the
        // decoder would refuse too, it does (and it is never asked to decode what
        // it would reserve too much for); what passes decodes the same.
        let plain = |d: &mut Bytes, _: Compression| -> anyhow::Result<Bytes> { Ok(d.clone()) };
        let mut variants: Vec<Vec<u8>> =
            (0..=records.len()).map(|n| records[..n].to_vec()).collect();
        for at in 0..records.len() {
            for x in [0x01u8, 0x80, 0xff, 0x7e] {
                let mut r = records.clone();
                r[at] ^= x;
                variants.push(r);
            }
        }
        for r in variants {
            let data = raw_batch(100, 3, &r, Compression::None);
            let ours = decode_batch(&one(&data), "t", 0);
            match check_records(&r, &head) {
                Ok(_) => {
                    let theirs = RecordBatchDecoder::decode_with_custom_compression(
                        &mut data.clone(),
                        Some(plain),
                    );
                    match (&ours, &theirs) {
                        (Ok(a), Ok(b)) => assert_eq!(a, &b.records),
                        (Err(_), Err(_)) => {}
                        (a, b) => panic!("{r:?}: ours {a:?}, the decoder's {b:?}"),
                    }
                }
                Err(e) if e.decoder_refuses_too() => {
                    let theirs = RecordBatchDecoder::decode_with_custom_compression(
                        &mut data.clone(),
                        Some(plain),
                    );
                    assert!(
                        theirs.is_err(),
                        "{r:?}: refused ({e}) but the decoder reads it"
                    );
                    assert!(ours.is_err());
                }
                Err(_) => assert!(ours.is_err()),
            }
        }
    }

    #[test]
    fn decoding_within_room_gives_way_to_the_next_round() {
        let big = [7u8; 4096];
        let recs: Vec<u8> = (0..4)
            .map(|i| raw_record(i, None, Some(&big), &[], None))
            .collect::<Vec<_>>()
            .concat();
        for codec in [Compression::None, Compression::Lz4] {
            let b = one(&raw_batch(0, 4, &recs, codec));
            let all = decode_batch_within(&b, "t", 0, MAX_DECOMPRESSED, usize::MAX)
                .unwrap()
                .unwrap();
            let size = all.shape.decoded_size();
            assert_eq!(all.records.len(), 4);
            assert!(size > recs.len());
            let exact = decode_batch_within(&b, "t", 0, MAX_DECOMPRESSED, size)
                .unwrap()
                .unwrap();
            assert_eq!(exact.records, all.records);
            // Less room than its records decompress to, or than they take decoded.
            for room in [1, recs.len() - 1, size - 1] {
                assert!(
                    decode_batch_within(&b, "t", 0, MAX_DECOMPRESSED, room)
                        .unwrap()
                        .is_none()
                );
            }
            // Larger than the limit: said so only when given all the room there is.
            assert!(
                decode_batch_within(&b, "t", 0, 1024, 100)
                    .unwrap()
                    .is_none()
            );
            let e = decode_batch_within(&b, "t", 0, 1024, usize::MAX).unwrap_err();
            assert!(e.to_string().contains("more than 1024 bytes"), "{e}");
        }
    }

    #[test]
    fn batches_round_trip_through_split_and_decode() {
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let first: Vec<Record> = (10..13).map(|o| record(o, &format!("m{o}"))).collect();
            let second: Vec<Record> = (13..15).map(|o| record(o, &format!("m{o}"))).collect();
            let mut data = BytesMut::new();
            data.extend_from_slice(&encode(&first, codec));
            data.extend_from_slice(&encode(&second, codec));
            let data = data.freeze();
            let (batches, rest) = split_batches(&data);
            assert!(!rest, "{codec:?}");
            assert_eq!(batches.len(), 2);
            assert_eq!((batches[0].base_offset, batches[0].last_offset), (10, 12));
            assert_eq!((batches[1].base_offset, batches[1].last_offset), (13, 14));
            assert_eq!(batches[0].compression(), codec);
            assert!(!batches[0].is_control());
            let got = decode_batch(&batches[1], "t", 0).unwrap();
            assert_eq!(got.len(), 2);
            assert_eq!(got[1].offset, 14);
            assert_eq!(got[1].value.as_deref(), Some(&b"m14"[..]));

            // A batch cut short at the end is left over, at every cut.
            for cut in 1..batches[1].bytes.len() {
                let short = data.slice(..batches[0].bytes.len() + cut);
                let (b, rest) = split_batches(&short);
                assert_eq!(b.len(), 1, "cut at {cut}");
                assert!(rest);
            }
        }
    }

    #[test]
    fn damaged_batches_are_errors_never_panics() {
        let data = encode(&[record(0, "hello"), record(1, "world")], Compression::Lz4);
        let (batches, _) = split_batches(&data);
        let mut bytes = data.to_vec();
        let last = bytes.len() - 1;
        bytes[last] ^= 0xff;
        let damaged = RawBatch {
            bytes: Bytes::from(bytes),
            ..batches[0].clone()
        };
        let e = decode_batch(&damaged, "app", 3).unwrap_err();
        assert!(!e.waits());
        let msg = e.to_string();
        assert!(
            msg.contains("`app` partition 3") && msg.contains("0..=1"),
            "{msg}"
        );
        // Headers of every length: never a panic.
        for n in 0..data.len() {
            let (b, _) = split_batches(&data.slice(..n));
            assert!(b.is_empty());
        }
    }

    #[test]
    fn snappy_and_zstd_name_the_codec_and_the_partition() {
        let data = encode(&[record(5, "x")], Compression::None);
        let (batches, _) = split_batches(&data);
        for (bits, name) in [(2i16, "snappy"), (4, "zstd")] {
            let b = RawBatch {
                attributes: bits,
                ..batches[0].clone()
            };
            let e = decode_batch(&b, "logs", 7).unwrap_err();
            assert!(e.waits());
            let msg = e.to_string();
            assert!(
                msg.contains(name) && msg.contains("`logs` partition 7"),
                "{msg}"
            );
            let mut raw = Bytes::from_static(b"abc");
            let codec = if bits == 2 {
                Compression::Snappy
            } else {
                Compression::Zstd
            };
            let e = decompress(&mut raw, codec).unwrap_err().to_string();
            assert!(e.contains(name), "{e}");
        }
    }

    #[test]
    fn decompression_is_bounded() {
        let zeros = vec![0u8; 4 << 20];
        for codec in [Compression::Gzip, Compression::Lz4] {
            let mut packed = BytesMut::new();
            super::super::compress(&mut BytesMut::from(&zeros[..]), &mut packed, codec).unwrap();
            assert!(packed.len() < zeros.len() / 100, "{codec:?} packs zeros");
            let got = decompress_limited(&packed, codec, zeros.len()).unwrap();
            assert_eq!(got.len(), zeros.len());
            let e = decompress_limited(&packed, codec, zeros.len() - 1).unwrap_err();
            assert!(matches!(e, DecompressError::TooLarge { .. }), "{e}");
            let e = decompress_limited(&packed[..packed.len() / 2], codec, usize::MAX - 1);
            assert!(e.is_err(), "{codec:?}: a cut stream is an error");
        }
        let e = decompress_limited(&zeros, Compression::None, 1024).unwrap_err();
        assert!(matches!(e, DecompressError::TooLarge { limit: 1024 }));

        // A whole batch over the bound is a decode error naming the partition.
        let big: Vec<Record> = (0..64).map(|o| record(o, &"z".repeat(64 << 10))).collect();
        let data = encode(&big, Compression::Lz4);
        let (batches, _) = split_batches(&data);
        let e = decode_batch_limited(&batches[0], "app", 1, 1 << 20).unwrap_err();
        let msg = e.to_string();
        assert!(msg.contains("more than 1048576 bytes"), "{msg}");
        assert_eq!(decode_batch(&batches[0], "app", 1).unwrap().len(), 64);
    }
}
