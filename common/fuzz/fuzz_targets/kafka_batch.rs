//! Fuzz reading a Kafka Fetch answer's record batches the way the collector's
//! Kafka source reads them (`collector/src/source/fetch.rs`, `read_partition`):
//! `kafka::decode::split_batches` cuts one partition's bytes into whole v2
//! batches from their headers alone, and `decode_batch` decodes each with
//! `RecordBatchDecoder::decode_with_custom_compression` and the `decompress`
//! hook (none, gzip, lz4; bounded). What a broker answers is untrusted input.
//!
//! Input layout:
//! ```text
//! u8   mode: mode & 3
//!        0     the rest is one partition's records bytes, as they came;
//!        1     the same, with the CRC32C of every v2 batch corrected (so the
//!              decoder gets past it to the records);
//!        2, 3  one batch made here: the rest is its header (base offset, then
//!              partition leader epoch .. record count: 8 + 49 bytes, zeros
//!              when short; magic set to 2, the codec bits to the codec) and
//!              its records section, compressed with codec (mode >> 2) % 3
//!              (none, gzip, lz4), CRC32C correct: the decompressors and the
//!              record decoder get data that gets through
//! ```
//! Checked, beyond "no panic, no hang, no allocation beyond the limits":
//! - `split_batches` cuts the bytes into consecutive batches, each as long as
//!   its header says, and reports bytes left over exactly when there are some;
//! - no decompression ever gives more than its bound (`MAX_DECOMPRESSED` for
//!   `decompress`, the limit of `decompress_limited`): checked in the hook, on
//!   every batch, and directly on the raw bytes with every codec;
//! - `decode_batch` agrees with the decoder called with the `decompress` hook
//!   followed by `check_records` (as `decode_batch` runs them), and with
//!   `decode_batch_limited` under a small bound (the same records when both
//!   decode; the small bound refuses only what decompresses beyond it);
//! - `check_records` refuses only what the decoder cannot read: when it says
//!   the decoder refuses too (`decoder_refuses_too`), the decoder with the
//!   plain `decompress` hook does (the decoder is never run on records
//!   `check_records` refused otherwise: it would reserve memory for counts the
//!   bytes do not hold, which is what `check_records` is there to prevent);
//! - `decode_batch_within` keeps within its room: what it decodes under a
//!   small room is what `decode_batch` decodes, and takes at most that room;
//!   it gives way (`None`) only to records that take more; with all the room
//!   there is, it never gives way;
//! - a refusal is the right kind: old formats and snappy/zstd wait (the
//!   partition stays), anything else is damage (the batch is skipped), and the
//!   message names the topic and the partition;
//! - a decoded batch has as many records as its header counts, each with the
//!   batch's producer id and transactional and control flags.

#![no_main]

use std::cell::Cell;

use bytes::Bytes;
use kafka_protocol::records::{Compression, RecordBatchDecoder};
use libfuzzer_sys::fuzz_target;
use tributary_common::kafka::compress_into;
use tributary_common::kafka::decode::{
    BATCH_HEADER_LEN, BatchError, BatchHead, DecompressError, MAX_DECOMPRESSED, RawBatch,
    check_records, decode_batch, decode_batch_limited, decode_batch_within, decompress,
    decompress_limited, split_batches,
};

/// A bound small enough for the fuzzer to cross it.
const SMALL: usize = 2 << 10;
/// Where a v2 batch's CRC32C sits, and where what it covers starts.
const CRC_AT: usize = 17;
const CRC_FROM: usize = 21;
const MAGIC_AT: usize = 16;
const ATTRIBUTES_AT: usize = 21;

const TOPIC: &str = "fuzz";
const PARTITION: i32 = 7;

fn be_i32(b: &[u8]) -> i32 {
    i32::from_be_bytes(b[..4].try_into().unwrap())
}

/// Correct the CRC32C of every v2 batch `split_batches` finds in `data`.
fn fix_crcs(data: &[u8]) -> Vec<u8> {
    let (batches, _) = split_batches(&Bytes::copy_from_slice(data));
    let mut out = data.to_vec();
    let mut at = 0;
    for b in &batches {
        let n = b.bytes.len();
        if b.magic == 2 && n >= CRC_FROM {
            let crc = crc32c::crc32c(&out[at + CRC_FROM..at + n]);
            out[at + CRC_AT..at + CRC_FROM].copy_from_slice(&crc.to_be_bytes());
        }
        at += n;
    }
    out
}

/// One batch with a header from `input`, its records section compressed with
/// `codec`, and a correct CRC32C.
fn build_batch(input: &[u8], codec: Compression) -> Vec<u8> {
    let mut head = [0u8; 8 + 49];
    let n = input.len().min(head.len());
    head[..n].copy_from_slice(&input[..n]);
    let records = &input[n..];
    let mut packed = Vec::new();
    if compress_into(records, &mut packed, codec).is_err() {
        return Vec::new();
    }
    let mut batch = Vec::with_capacity(BATCH_HEADER_LEN + packed.len());
    batch.extend_from_slice(&head[..8]);
    let length = (BATCH_HEADER_LEN - 12 + packed.len()) as i32;
    batch.extend_from_slice(&length.to_be_bytes());
    batch.extend_from_slice(&head[8..]);
    batch.extend_from_slice(&packed);
    batch[MAGIC_AT] = 2;
    let bits = match codec {
        Compression::Gzip => 1,
        Compression::Lz4 => 3,
        _ => 0,
    };
    batch[ATTRIBUTES_AT + 1] = (batch[ATTRIBUTES_AT + 1] & !7) | bits;
    let crc = crc32c::crc32c(&batch[CRC_FROM..]);
    batch[CRC_AT..CRC_FROM].copy_from_slice(&crc.to_be_bytes());
    batch
}

/// The raw bytes through every codec, under both bounds.
fn check_decompressors(data: &[u8]) {
    for codec in [
        Compression::None,
        Compression::Gzip,
        Compression::Lz4,
        Compression::Snappy,
        Compression::Zstd,
    ] {
        let small = decompress_limited(data, codec, SMALL);
        let full = decompress(&mut Bytes::copy_from_slice(data), codec);
        match (&small, &full) {
            (Ok(s), Ok(f)) => {
                assert!(s.len() <= SMALL);
                assert!(f.len() <= MAX_DECOMPRESSED);
                assert_eq!(s, f, "{codec:?}: the bound changes what comes out");
            }
            (Ok(_), Err(e)) => {
                panic!("{codec:?}: fits {SMALL} bytes but not {MAX_DECOMPRESSED}: {e}")
            }
            (Err(DecompressError::TooLarge { limit }), Ok(f)) => {
                assert_eq!(*limit, SMALL);
                assert!(f.len() > SMALL && f.len() <= MAX_DECOMPRESSED);
            }
            (Err(e), Ok(f)) => panic!(
                "{codec:?}: refused under {SMALL} ({e}) but gives {} bytes",
                f.len()
            ),
            (Err(_), Err(_)) => {}
        }
        if matches!(codec, Compression::Snappy | Compression::Zstd) {
            assert!(matches!(small, Err(DecompressError::Unsupported { .. })));
        }
    }
}

fn check_batch(b: &RawBatch) {
    let real = decode_batch(b, TOPIC, PARTITION);
    let codec = b.compression();
    let readable = b.magic == 2 && !matches!(codec, Compression::Snappy | Compression::Zstd);
    match &real {
        Err(e @ BatchError::OldFormat { magic, .. }) => {
            assert!(b.magic != 2 && *magic == b.magic && e.waits());
        }
        Err(e @ BatchError::UnsupportedCodec { .. }) => {
            assert!(b.magic == 2 && !readable && e.waits());
        }
        Err(e @ BatchError::Corrupt { .. }) => assert!(readable && !e.waits()),
        Ok(_) => assert!(readable),
    }
    if let Err(e) = &real {
        let m = e.to_string();
        assert!(
            m.contains(&format!("`{TOPIC}` partition {PARTITION}")),
            "{m}"
        );
    }

    // The decoder with the source's hook and check, the bound checked in it.
    let decompressed = Cell::new(None);
    // Some(whether the decoder refuses too) when check_records refused.
    let refused = Cell::new(None);
    let head = BatchHead::read(&b.bytes);
    let hook = |data: &mut Bytes, codec: Compression| {
        let out = decompress(data, codec)?;
        assert!(out.len() <= MAX_DECOMPRESSED);
        decompressed.set(Some(out.len()));
        let head = head.expect("the decoder read the header");
        assert_eq!(
            i64::from(head.record_count),
            i64::from(be_i32(&b.bytes[57..]))
        );
        if let Err(e) = check_records(&out, &head) {
            refused.set(Some(e.decoder_refuses_too()));
            return Err(e.into());
        }
        Ok(out)
    };
    if readable {
        let mirror =
            RecordBatchDecoder::decode_with_custom_compression(&mut b.bytes.clone(), Some(hook));
        match (&real, &mirror) {
            (Ok(r), Ok(m)) => assert_eq!(*r, m.records),
            (Err(_), Err(_)) => {}
            (r, m) => panic!("decode_batch {r:?} but the decoder {m:?}"),
        }
        if refused.get() == Some(true) {
            let plain = RecordBatchDecoder::decode_with_custom_compression(
                &mut b.bytes.clone(),
                Some(decompress),
            );
            assert!(
                plain.is_err(),
                "check_records refused records the decoder reads"
            );
        }
    }

    // Within a small room, and within all the room there is.
    let full = decode_batch_within(b, TOPIC, PARTITION, MAX_DECOMPRESSED, usize::MAX);
    match (&real, &full) {
        (Ok(r), Ok(Some(f))) => {
            assert_eq!(*r, f.records);
            assert_eq!(f.shape.records, r.len());
            assert!(f.shape.decoded_size() >= f.shape.bytes);
        }
        (Err(_), Err(_)) => {}
        (r, f) => panic!("decode_batch {r:?} but with all the room {f:?}"),
    }
    match (
        &full,
        decode_batch_within(b, TOPIC, PARTITION, MAX_DECOMPRESSED, SMALL),
    ) {
        (Ok(Some(f)), Ok(Some(s))) => {
            assert_eq!(f.records, s.records);
            assert!(s.shape.decoded_size() <= SMALL);
        }
        (Ok(Some(f)), Ok(None)) => assert!(f.shape.decoded_size() > SMALL),
        (Err(_), Ok(None) | Err(_)) => {}
        (f, s) => panic!("with all the room {f:?}, within {SMALL} bytes {s:?}"),
    }

    let small = decode_batch_limited(b, TOPIC, PARTITION, SMALL);
    match (&real, &small) {
        (Ok(r), Ok(s)) => assert_eq!(r, s),
        (Ok(_), Err(e)) => {
            let len = decompressed.get().expect("decoded, so decompressed");
            assert!(
                len > SMALL,
                "{len} bytes refused under a bound of {SMALL}: {e}"
            );
            assert!(
                e.to_string().contains(&format!("more than {SMALL} bytes")),
                "{e}"
            );
        }
        (Err(_), Ok(_)) => panic!("decodes under {SMALL} bytes but not under {MAX_DECOMPRESSED}"),
        (Err(_), Err(_)) => {}
    }

    if let Ok(records) = &real {
        let count = be_i32(&b.bytes[BATCH_HEADER_LEN - 4..]);
        assert_eq!(records.len() as i64, i64::from(count));
        for r in records {
            assert_eq!(r.producer_id, b.producer_id);
            assert_eq!(r.control, b.is_control());
            assert_eq!(r.transactional, b.is_transactional());
        }
    }
}

fuzz_target!(|input: &[u8]| {
    let Some((&mode, rest)) = input.split_first() else {
        return;
    };
    let data = match mode & 3 {
        0 => rest.to_vec(),
        1 => fix_crcs(rest),
        _ => {
            let codec = [Compression::None, Compression::Gzip, Compression::Lz4]
                [usize::from(mode >> 2) % 3];
            build_batch(rest, codec)
        }
    };
    if mode & 3 < 2 {
        check_decompressors(&data);
    }
    let data = Bytes::from(data);
    let (batches, left) = split_batches(&data);
    let mut at = 0;
    for b in &batches {
        let n = b.bytes.len();
        assert!(n >= 12);
        assert_eq!(&b.bytes[..], &data[at..at + n]);
        assert_eq!(
            b.base_offset,
            i64::from_be_bytes(data[at..at + 8].try_into().unwrap())
        );
        assert_eq!(n - 12, be_i32(&data[at + 8..]) as usize);
        assert!(b.last_offset >= b.base_offset);
        at += n;
    }
    assert_eq!(left, at < data.len());
    for b in &batches {
        check_batch(b);
    }
});
