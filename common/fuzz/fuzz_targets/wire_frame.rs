//! Fuzz the agent protocol as the collector reads it: the length-prefixed frame
//! stream (`FrameCodec`), every frame kind's body, and a BATCH's payload through
//! `BatchFrame::open` (decompression with its size limit, CRC32C, record blocks).
//!
//! Input layout:
//! ```text
//! u8   read size seed: the stream is fed to the decoder in reads of 1 to 64 bytes,
//!      as a slow or fragmented sender would deliver it
//! ...  the byte stream (frames, back to back)
//! ```
//! Checked, beyond "no panic, no hang, no allocation beyond the limits":
//! - the frames and the error decoded do not depend on how the stream was cut into
//!   reads (fed whole vs. fed in small reads);
//! - `declared_batch_len` (what the collector peeks to reserve memory before it
//!   reads a frame) agrees with the decoded BATCH;
//! - every decoded frame encodes back to exactly the bytes it was decoded from
//!   (one encoding per frame: nothing is silently dropped or normalised), except
//!   the error code of REJECT and ERROR, where codes this build does not know are
//!   read as `Unknown` (0) by design; those frames decode back to themselves;
//! - a BATCH whose payload decompresses is also opened with its CRC corrected, so the
//!   record-block decoder is reached; when `open` accepts a payload, iterating its
//!   blocks with validation yields the counted records and the summary agrees;
//! - what `open` accepts survives a rebuild: `BatchFrame::build` with each codec
//!   then `open` gives back the same payload and summary.

#![no_main]

use bytes::BytesMut;
use libfuzzer_sys::fuzz_target;
use tokio_util::codec::{Decoder, Encoder};
use tributary_common::codec::{self, Compression};
use tributary_common::record;
use tributary_common::wire::{BATCH_HEAD_MAX, BatchFrame, Frame, FrameCodec, declared_batch_len};

/// Small limits so the fuzzer reaches them; the logic is the same at 16 MiB.
const MAX_FRAME: usize = 64 << 10;
const MAX_BATCH: usize = 256 << 10;

/// Decode `stream` fed in reads of `step` bytes (`None`: all at once). Returns the
/// frames with the bytes each came from, and the error that ended the stream.
fn decode_all(stream: &[u8], step: Option<usize>) -> (Vec<(Frame, Vec<u8>)>, Option<String>) {
    let mut codec = FrameCodec::new(MAX_FRAME);
    let mut buf = BytesMut::new();
    let mut frames = Vec::new();
    let mut fed = 0;
    let mut consumed = 0;
    loop {
        let eof = fed == stream.len();
        let before = buf.len();
        let r = if eof {
            codec.decode_eof(&mut buf)
        } else {
            codec.decode(&mut buf)
        };
        match r {
            Ok(Some(f)) => {
                let used = before - buf.len();
                frames.push((f, stream[consumed..consumed + used].to_vec()));
                consumed += used;
            }
            Ok(None) if eof => return (frames, None),
            Ok(None) => {
                let n = step.unwrap_or(stream.len()).min(stream.len() - fed);
                buf.extend_from_slice(&stream[fed..fed + n]);
                fed += n;
            }
            Err(e) => return (frames, Some(e.to_string())),
        }
    }
}

fn check_batch(b: &BatchFrame) {
    let opened = b.open(MAX_BATCH);
    if let Ok((data, summary)) = &opened {
        assert_eq!(data.len(), b.uncompressed_len as usize);
        check_payload(data, summary.records);
        for codec in [Compression::None, Compression::Lz4, Compression::Gzip] {
            let mut scratch = Vec::new();
            let again = BatchFrame::build(b.seq, &b.topic, codec, b.records, data, &mut scratch);
            let (data2, summary2) = again.open(MAX_BATCH).expect("a rebuilt batch opens");
            assert_eq!(&data2, data);
            assert_eq!(&summary2, summary);
        }
        return;
    }
    // Random bytes almost never carry the right CRC: correct it so the payload
    // decoder is reached too.
    if let Ok(data) = codec::decompress(b.codec, &b.payload, b.uncompressed_len as usize, MAX_BATCH)
    {
        assert!(data.len() <= MAX_BATCH);
        let mut fixed = b.clone();
        fixed.crc32c = crc32c::crc32c(&data);
        if let Ok((data2, summary)) = fixed.open(MAX_BATCH) {
            assert_eq!(data2, data);
            check_payload(&data2, summary.records);
        }
    }
}

/// A payload `open` accepted: its blocks iterate, validated, to `records` records.
fn check_payload(data: &[u8], records: u32) {
    let mut n = 0u32;
    for block in record::blocks(data, true) {
        let block = block.expect("an accepted payload iterates");
        let mut in_block = 0;
        for r in block.records() {
            r.expect("an accepted block iterates");
            in_block += 1;
        }
        assert_eq!(in_block, block.header.record_count);
        n += in_block;
    }
    assert_eq!(n, records);
}

fuzz_target!(|data: &[u8]| {
    let Some((&seed, stream)) = data.split_first() else {
        return;
    };
    let step = 1 + (seed as usize % 64);
    let (whole, whole_err) = decode_all(stream, None);
    let (pieces, pieces_err) = decode_all(stream, Some(step));
    assert_eq!(whole, pieces, "frames depend on how reads were cut");
    assert_eq!(
        whole_err, pieces_err,
        "the error depends on how reads were cut"
    );

    let mut codec = FrameCodec::new(MAX_FRAME);
    for (frame, bytes) in &whole {
        let mut out = BytesMut::new();
        codec
            .encode(frame.clone(), &mut out)
            .expect("a decoded frame encodes");
        if matches!(frame, Frame::Reject { .. } | Frame::Error { .. }) {
            let again = codec.decode(&mut out).expect("re-encoded frame decodes");
            assert_eq!(again.as_ref(), Some(frame));
        } else {
            assert_eq!(&out[..], &bytes[..], "{frame:?} re-encodes differently");
        }
        if let Frame::Batch(b) = frame {
            // What a reader peeks to reserve memory agrees with the decoded frame.
            let body = &bytes[4..];
            assert_eq!(
                declared_batch_len(&body[..body.len().min(BATCH_HEAD_MAX)]),
                Some(b.uncompressed_len)
            );
            check_batch(b);
        }
    }
});
