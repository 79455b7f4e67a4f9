//! Reading the record batches of a Fetch answer (the collector's Kafka source):
//! [`split_batches`] cuts the bytes into whole v2 batches from their headers alone
//! (a broker may end an answer with part of a batch), and [`decode_batch`] decodes
//! one with [`decompress`], the decompression hook of
//! `RecordBatchDecoder::decode_with_custom_compression` (the counterpart of
//! [`super::compress`]: lz4 frames through `lz4_flex`, gzip through `flate2`, or
//! none; no C library).
//!
//! Nothing here trusts a length: a batch's declared length is checked against the
//! bytes there are, and no batch decompresses to more than [`MAX_DECOMPRESSED`]
//! (a decompression bomb is an error, never an allocation). Snappy and zstd are
//! refused with an error naming the codec, the topic and the partition.

use std::io::Read;

use bytes::Bytes;
use kafka_protocol::records::{Compression, Record, RecordBatchDecoder};

/// Most bytes one batch may decompress to.
pub const MAX_DECOMPRESSED: usize = 64 << 20;

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

/// The decompression hook of `RecordBatchDecoder::decode_with_custom_compression`,
/// bounded by [`MAX_DECOMPRESSED`].
pub fn decompress(data: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
    Ok(decompress_limited(data, codec, MAX_DECOMPRESSED)?)
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
/// decompressed size).
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
    let hook = |data: &mut Bytes, codec: Compression| -> anyhow::Result<Bytes> {
        Ok(decompress_limited(data, codec, limit)?)
    };
    let mut bytes = batch.bytes.clone();
    let set = RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(hook)).map_err(
        |e| BatchError::Corrupt {
            topic: topic.to_owned(),
            partition,
            base: batch.base_offset,
            last: batch.last_offset,
            reason: format!("{e:#}"),
        },
    )?;
    Ok(set.records)
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
