//! Frame types and their `tokio_util` codec.

use bytes::{Buf, BufMut, Bytes, BytesMut};
use thiserror::Error;
use tokio_util::codec::{Decoder, Encoder};

use crate::codec::{self, CodecError, Compression};
use crate::record::{self, DecodeError, PayloadSummary};

/// First bytes of a HELLO body.
pub const MAGIC: &[u8; 4] = b"TRIB";
/// Protocol version spoken by this build.
pub const PROTOCOL_VERSION: u16 = 1;
/// Largest frame (compressed batch plus headers) a peer accepts by default.
pub const DEFAULT_MAX_FRAME_BYTES: usize = 16 << 20;
/// Largest uncompressed batch payload the collector accepts by default.
pub const DEFAULT_MAX_BATCH_BYTES: usize = 32 << 20;

const T_HELLO: u8 = 1;
const T_WELCOME: u8 = 2;
const T_BATCH: u8 = 3;
const T_ACK: u8 = 4;
const T_REJECT: u8 = 5;
const T_ERROR: u8 = 6;

/// Stable error codes on the wire. A retired code is never reused.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(u16)]
pub enum ErrorCode {
    Unknown = 0,
    MalformedFrame = 1,
    UnsupportedVersion = 2,
    FrameTooLarge = 3,
    BatchTooLarge = 4,
    BadChecksum = 5,
    BadCodec = 6,
    BadPayload = 7,
    InvalidTopic = 8,
    Storage = 9,
    ShuttingDown = 10,
    Timeout = 11,
    /// The agent's certificate does not allow what it sent (host, identity).
    Forbidden = 12,
}

impl ErrorCode {
    pub fn from_u16(v: u16) -> Self {
        match v {
            1 => Self::MalformedFrame,
            2 => Self::UnsupportedVersion,
            3 => Self::FrameTooLarge,
            4 => Self::BatchTooLarge,
            5 => Self::BadChecksum,
            6 => Self::BadCodec,
            7 => Self::BadPayload,
            8 => Self::InvalidTopic,
            9 => Self::Storage,
            10 => Self::ShuttingDown,
            11 => Self::Timeout,
            12 => Self::Forbidden,
            _ => Self::Unknown,
        }
    }

    /// Whether a batch refused with this code may succeed when sent again.
    pub fn is_retriable(self) -> bool {
        matches!(self, Self::Storage | Self::ShuttingDown | Self::Timeout)
    }
}

/// A batch of record blocks for one topic, as it travels.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct BatchFrame {
    pub seq: u64,
    pub codec: Compression,
    pub topic: String,
    pub records: u32,
    pub uncompressed_len: u32,
    /// CRC32C of the uncompressed payload: checks the codec and the wire end to end.
    pub crc32c: u32,
    /// Compressed payload.
    pub payload: Bytes,
}

/// Why a batch was refused after it was framed correctly.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum BatchError {
    #[error(transparent)]
    Codec(#[from] CodecError),
    #[error("checksum mismatch: frame says {expected:#010x}, payload has {actual:#010x}")]
    BadChecksum { expected: u32, actual: u32 },
    #[error("payload: {0}")]
    Payload(#[from] DecodeError),
    #[error("frame says {declared} records, payload holds {found}")]
    CountMismatch { declared: u32, found: u32 },
}

impl BatchError {
    pub fn code(&self) -> ErrorCode {
        match self {
            BatchError::Codec(CodecError::TooLarge { .. }) => ErrorCode::BatchTooLarge,
            BatchError::Codec(_) => ErrorCode::BadCodec,
            BatchError::BadChecksum { .. } => ErrorCode::BadChecksum,
            BatchError::Payload(_) | BatchError::CountMismatch { .. } => ErrorCode::BadPayload,
        }
    }
}

impl BatchFrame {
    /// Build a batch frame: compress `payload` with `codec` and checksum it.
    pub fn build(
        seq: u64,
        topic: &str,
        codec: Compression,
        records: u32,
        payload: &[u8],
        scratch: &mut Vec<u8>,
    ) -> BatchFrame {
        let compressed = codec::compress(codec, payload, scratch);
        let payload_bytes = Bytes::copy_from_slice(compressed);
        BatchFrame {
            seq,
            codec,
            topic: topic.to_owned(),
            records,
            uncompressed_len: payload.len() as u32,
            crc32c: crc32c::crc32c(payload),
            payload: payload_bytes,
        }
    }

    /// Decompress, verify the checksum and validate every record. `limit` bounds the
    /// uncompressed size (decompression bombs are refused before any work).
    pub fn open(&self, limit: usize) -> Result<(Vec<u8>, PayloadSummary), BatchError> {
        let data = codec::decompress(
            self.codec,
            &self.payload,
            self.uncompressed_len as usize,
            limit,
        )?;
        let actual = crc32c::crc32c(&data);
        if actual != self.crc32c {
            return Err(BatchError::BadChecksum {
                expected: self.crc32c,
                actual,
            });
        }
        let summary = record::summarize(&data)?;
        if summary.records != self.records {
            return Err(BatchError::CountMismatch {
                declared: self.records,
                found: summary.records,
            });
        }
        Ok((data, summary))
    }
}

/// One protocol frame.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Frame {
    Hello {
        version: u16,
        host: String,
        agent: String,
    },
    Welcome {
        version: u16,
        max_frame_bytes: u32,
        max_batch_bytes: u32,
    },
    Batch(BatchFrame),
    Ack {
        seq: u64,
    },
    Reject {
        seq: u64,
        code: ErrorCode,
        message: String,
    },
    Error {
        code: ErrorCode,
        message: String,
    },
}

impl Frame {
    /// The frame type as the protocol documentation spells it, for errors and logs.
    pub fn name(&self) -> &'static str {
        match self {
            Frame::Hello { .. } => "HELLO",
            Frame::Welcome { .. } => "WELCOME",
            Frame::Batch(_) => "BATCH",
            Frame::Ack { .. } => "ACK",
            Frame::Reject { .. } => "REJECT",
            Frame::Error { .. } => "ERROR",
        }
    }
}

/// Framing errors: the connection cannot continue after any of them.
#[derive(Debug, Error)]
pub enum WireError {
    #[error("frame of {len} bytes exceeds the limit of {limit}")]
    FrameTooLarge { len: usize, limit: usize },
    #[error("malformed {frame} frame: {reason}")]
    Malformed {
        frame: &'static str,
        reason: &'static str,
    },
    #[error("unknown frame type {0}")]
    UnknownType(u8),
    #[error("not a Tributary peer (bad magic)")]
    BadMagic,
    #[error("unknown compression codec {0}")]
    UnknownCodec(u8),
    #[error("connection closed in the middle of a frame")]
    TruncatedStream,
    #[error("i/o: {0}")]
    Io(#[from] std::io::Error),
}

impl WireError {
    pub fn code(&self) -> ErrorCode {
        match self {
            WireError::FrameTooLarge { .. } => ErrorCode::FrameTooLarge,
            WireError::UnknownCodec(_) => ErrorCode::BadCodec,
            _ => ErrorCode::MalformedFrame,
        }
    }
}

/// `tokio_util` codec for [`Frame`]s with a maximum frame size.
#[derive(Debug, Clone)]
pub struct FrameCodec {
    max_frame: usize,
}

impl FrameCodec {
    pub fn new(max_frame: usize) -> Self {
        FrameCodec { max_frame }
    }
}

struct Body {
    buf: Bytes,
    frame: &'static str,
}

impl Body {
    fn need(&self, n: usize) -> Result<(), WireError> {
        if self.buf.remaining() < n {
            Err(WireError::Malformed {
                frame: self.frame,
                reason: "body too short",
            })
        } else {
            Ok(())
        }
    }
    fn u8(&mut self) -> Result<u8, WireError> {
        self.need(1)?;
        Ok(self.buf.get_u8())
    }
    fn u16(&mut self) -> Result<u16, WireError> {
        self.need(2)?;
        Ok(self.buf.get_u16_le())
    }
    fn u32(&mut self) -> Result<u32, WireError> {
        self.need(4)?;
        Ok(self.buf.get_u32_le())
    }
    fn u64(&mut self) -> Result<u64, WireError> {
        self.need(8)?;
        Ok(self.buf.get_u64_le())
    }
    fn string(&mut self, len: usize) -> Result<String, WireError> {
        self.need(len)?;
        let b = self.buf.split_to(len);
        String::from_utf8(b.to_vec()).map_err(|_| WireError::Malformed {
            frame: self.frame,
            reason: "string is not UTF-8",
        })
    }
    fn str16(&mut self) -> Result<String, WireError> {
        let n = self.u16()? as usize;
        self.string(n)
    }
    fn end(self) -> Result<(), WireError> {
        if self.buf.has_remaining() {
            Err(WireError::Malformed {
                frame: self.frame,
                reason: "trailing bytes",
            })
        } else {
            Ok(())
        }
    }
}

/// Decode one frame body (the bytes after the length prefix: kind, then fields),
/// for readers that frame the stream themselves.
pub fn decode_frame(mut body: Bytes) -> Result<Frame, WireError> {
    if body.is_empty() {
        return Err(WireError::Malformed {
            frame: "any",
            reason: "empty frame",
        });
    }
    let kind = body.get_u8();
    decode_body(kind, body)
}

/// Bytes of a frame body a reader needs to see before [`declared_batch_len`] can
/// answer: type, seq, codec, topic length, the longest topic, records, size.
pub const BATCH_HEAD_MAX: usize = 1 + 8 + 1 + 1 + u8::MAX as usize + 4 + 4;

/// The uncompressed size a BATCH declares, from the first bytes of its frame body
/// (type byte first), so a reader can reserve memory for the frame and its
/// decompressed payload at once before reading the rest. `None`: not a BATCH, or
/// `head` is too short to tell (a frame that short is malformed anyway).
pub fn declared_batch_len(head: &[u8]) -> Option<u32> {
    if head.first() != Some(&T_BATCH) {
        return None;
    }
    let topic_len = *head.get(1 + 8 + 1)? as usize;
    let at = 1 + 8 + 1 + 1 + topic_len + 4;
    let b = head.get(at..at + 4)?;
    Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]))
}

fn decode_body(kind: u8, buf: Bytes) -> Result<Frame, WireError> {
    let name = match kind {
        T_HELLO => "HELLO",
        T_WELCOME => "WELCOME",
        T_BATCH => "BATCH",
        T_ACK => "ACK",
        T_REJECT => "REJECT",
        T_ERROR => "ERROR",
        other => return Err(WireError::UnknownType(other)),
    };
    let mut b = Body { buf, frame: name };
    let frame = match kind {
        T_HELLO => {
            b.need(4)?;
            if &b.buf[..4] != MAGIC {
                return Err(WireError::BadMagic);
            }
            b.buf.advance(4);
            Frame::Hello {
                version: b.u16()?,
                host: b.str16()?,
                agent: b.str16()?,
            }
        }
        T_WELCOME => Frame::Welcome {
            version: b.u16()?,
            max_frame_bytes: b.u32()?,
            max_batch_bytes: b.u32()?,
        },
        T_BATCH => {
            let seq = b.u64()?;
            let code = b.u8()?;
            let codec = Compression::from_code(code).ok_or(WireError::UnknownCodec(code))?;
            let topic_len = b.u8()? as usize;
            let topic = b.string(topic_len)?;
            let records = b.u32()?;
            let uncompressed_len = b.u32()?;
            let crc32c = b.u32()?;
            let payload = std::mem::take(&mut b.buf);
            Frame::Batch(BatchFrame {
                seq,
                codec,
                topic,
                records,
                uncompressed_len,
                crc32c,
                payload,
            })
        }
        T_ACK => Frame::Ack { seq: b.u64()? },
        T_REJECT => Frame::Reject {
            seq: b.u64()?,
            code: ErrorCode::from_u16(b.u16()?),
            message: b.str16()?,
        },
        _ => Frame::Error {
            code: ErrorCode::from_u16(b.u16()?),
            message: b.str16()?,
        },
    };
    b.end()?;
    Ok(frame)
}

impl Decoder for FrameCodec {
    type Item = Frame;
    type Error = WireError;

    fn decode(&mut self, src: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        if src.len() < 4 {
            return Ok(None);
        }
        let len = u32::from_le_bytes([src[0], src[1], src[2], src[3]]) as usize;
        if len > self.max_frame {
            return Err(WireError::FrameTooLarge {
                len,
                limit: self.max_frame,
            });
        }
        if len == 0 {
            return Err(WireError::Malformed {
                frame: "any",
                reason: "empty frame",
            });
        }
        if src.len() < 4 + len {
            src.reserve(4 + len - src.len());
            return Ok(None);
        }
        src.advance(4);
        let mut body = src.split_to(len).freeze();
        let kind = body.get_u8();
        decode_body(kind, body).map(Some)
    }

    fn decode_eof(&mut self, buf: &mut BytesMut) -> Result<Option<Frame>, WireError> {
        match self.decode(buf)? {
            Some(frame) => Ok(Some(frame)),
            None if buf.is_empty() => Ok(None),
            None => Err(WireError::TruncatedStream),
        }
    }
}

fn put_str16(dst: &mut BytesMut, s: &str) {
    let s = &s.as_bytes()[..s.len().min(u16::MAX as usize)];
    dst.put_u16_le(s.len() as u16);
    dst.put_slice(s);
}

impl Encoder<Frame> for FrameCodec {
    type Error = WireError;

    fn encode(&mut self, frame: Frame, dst: &mut BytesMut) -> Result<(), WireError> {
        let start = dst.len();
        dst.put_u32_le(0);
        match &frame {
            Frame::Hello {
                version,
                host,
                agent,
            } => {
                dst.put_u8(T_HELLO);
                dst.put_slice(MAGIC);
                dst.put_u16_le(*version);
                put_str16(dst, host);
                put_str16(dst, agent);
            }
            Frame::Welcome {
                version,
                max_frame_bytes,
                max_batch_bytes,
            } => {
                dst.put_u8(T_WELCOME);
                dst.put_u16_le(*version);
                dst.put_u32_le(*max_frame_bytes);
                dst.put_u32_le(*max_batch_bytes);
            }
            Frame::Batch(b) => {
                if b.topic.len() > u8::MAX as usize {
                    return Err(WireError::Malformed {
                        frame: "BATCH",
                        reason: "topic longer than 255 bytes",
                    });
                }
                dst.reserve(32 + b.topic.len() + b.payload.len());
                dst.put_u8(T_BATCH);
                dst.put_u64_le(b.seq);
                dst.put_u8(b.codec.code());
                dst.put_u8(b.topic.len() as u8);
                dst.put_slice(b.topic.as_bytes());
                dst.put_u32_le(b.records);
                dst.put_u32_le(b.uncompressed_len);
                dst.put_u32_le(b.crc32c);
                dst.put_slice(&b.payload);
            }
            Frame::Ack { seq } => {
                dst.put_u8(T_ACK);
                dst.put_u64_le(*seq);
            }
            Frame::Reject { seq, code, message } => {
                dst.put_u8(T_REJECT);
                dst.put_u64_le(*seq);
                dst.put_u16_le(*code as u16);
                put_str16(dst, message);
            }
            Frame::Error { code, message } => {
                dst.put_u8(T_ERROR);
                dst.put_u16_le(*code as u16);
                put_str16(dst, message);
            }
        }
        let len = dst.len() - start - 4;
        if len > self.max_frame {
            dst.truncate(start);
            return Err(WireError::FrameTooLarge {
                len,
                limit: self.max_frame,
            });
        }
        dst[start..start + 4].copy_from_slice(&(len as u32).to_le_bytes());
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::record::BlockWriter;

    fn roundtrip(frame: Frame) {
        let mut c = FrameCodec::new(1 << 20);
        let mut buf = BytesMut::new();
        c.encode(frame.clone(), &mut buf).unwrap();
        // Byte-by-byte feeding must give the same frame exactly once.
        let mut partial = BytesMut::new();
        let mut got = None;
        for b in buf.iter() {
            partial.put_u8(*b);
            if let Some(f) = c.decode(&mut partial).unwrap() {
                assert!(got.is_none());
                got = Some(f);
            }
        }
        assert_eq!(got.unwrap(), frame);
        assert!(partial.is_empty());
    }

    fn payload() -> (Vec<u8>, u32) {
        let mut buf = Vec::new();
        let mut b = BlockWriter::begin(&mut buf, "h", "/f", 1, b"");
        for i in 0..100u64 {
            b.push(&mut buf, 0, 5, i * 10, b"", b"line of text");
        }
        b.finish(&mut buf);
        (buf, 100)
    }

    #[test]
    fn a_batch_declares_its_size_in_its_first_bytes() {
        let (data, n) = payload();
        for topic in ["t".to_owned(), "x".repeat(255)] {
            let frame = BatchFrame::build(9, &topic, Compression::Lz4, n, &data, &mut Vec::new());
            let mut buf = BytesMut::new();
            FrameCodec::new(1 << 20)
                .encode(Frame::Batch(frame), &mut buf)
                .unwrap();
            let body = &buf[4..];
            let head = &body[..body.len().min(BATCH_HEAD_MAX)];
            assert_eq!(declared_batch_len(head), Some(data.len() as u32));
            // type, seq, compression, topic length, topic, count, raw length
            let need = 1 + 8 + 1 + 1 + topic.len() + 4 + 4;
            assert!(need <= BATCH_HEAD_MAX);
            assert_eq!(declared_batch_len(&head[..need]), Some(data.len() as u32));
            assert_eq!(declared_batch_len(&head[..need - 1]), None);
        }
        let mut ack = BytesMut::new();
        FrameCodec::new(64)
            .encode(Frame::Ack { seq: 1 }, &mut ack)
            .unwrap();
        assert_eq!(declared_batch_len(&ack[4..]), None);
        assert_eq!(declared_batch_len(&[]), None);
    }

    #[test]
    fn frames_roundtrip() {
        roundtrip(Frame::Hello {
            version: 1,
            host: "web-01".into(),
            agent: "0.1.0".into(),
        });
        roundtrip(Frame::Welcome {
            version: 1,
            max_frame_bytes: 5,
            max_batch_bytes: 6,
        });
        let (p, n) = payload();
        let mut scratch = Vec::new();
        roundtrip(Frame::Batch(BatchFrame::build(
            7,
            "app",
            Compression::Lz4,
            n,
            &p,
            &mut scratch,
        )));
        roundtrip(Frame::Ack { seq: u64::MAX });
        roundtrip(Frame::Reject {
            seq: 3,
            code: ErrorCode::InvalidTopic,
            message: "bad topic".into(),
        });
        roundtrip(Frame::Error {
            code: ErrorCode::BadChecksum,
            message: "x".into(),
        });
    }

    #[test]
    fn oversized_frame_is_refused_before_buffering() {
        let mut c = FrameCodec::new(1024);
        let mut buf = BytesMut::new();
        buf.put_u32_le(1025);
        buf.put_u8(T_BATCH);
        assert!(matches!(
            c.decode(&mut buf),
            Err(WireError::FrameTooLarge {
                len: 1025,
                limit: 1024
            })
        ));
    }

    #[test]
    fn malformed_frames_are_errors() {
        let mut c = FrameCodec::new(1024);
        for bytes in [
            &[1u8, 0, 0, 0, 99][..],                          // unknown type
            &[5, 0, 0, 0, T_HELLO, b'X', b'X', b'X', b'X'],   // bad magic
            &[3, 0, 0, 0, T_ACK, 1, 2],                       // short body
            &[0, 0, 0, 0],                                    // empty frame
            &[10, 0, 0, 0, T_ACK, 1, 2, 3, 4, 5, 6, 7, 8, 9], // trailing bytes
        ] {
            let mut buf = BytesMut::from(bytes);
            assert!(c.decode(&mut buf).is_err(), "{bytes:?} accepted");
        }
        let mut buf = BytesMut::from(&[9u8, 0, 0, 0, T_ACK][..]);
        assert!(matches!(
            c.decode_eof(&mut buf),
            Err(WireError::TruncatedStream)
        ));
    }

    #[test]
    fn batch_open_checks_crc_count_and_size() {
        let (p, n) = payload();
        let mut scratch = Vec::new();
        for codec in [Compression::None, Compression::Gzip, Compression::Lz4] {
            let b = BatchFrame::build(1, "app", codec, n, &p, &mut scratch);
            let (data, summary) = b.open(1 << 20).unwrap();
            assert_eq!(data, p);
            assert_eq!(summary.records, n);

            let mut bad = b.clone();
            bad.crc32c ^= 1;
            assert_eq!(
                bad.open(1 << 20).unwrap_err().code(),
                ErrorCode::BadChecksum
            );

            let mut bad = b.clone();
            bad.records += 1;
            assert_eq!(bad.open(1 << 20).unwrap_err().code(), ErrorCode::BadPayload);

            assert_eq!(b.open(100).unwrap_err().code(), ErrorCode::BatchTooLarge);
        }
        // A payload whose blocks are garbage but whose CRC matches is still refused.
        let garbage = vec![0xffu8; 64];
        let b = BatchFrame::build(1, "app", Compression::None, 1, &garbage, &mut scratch);
        assert_eq!(b.open(1 << 20).unwrap_err().code(), ErrorCode::BadPayload);
    }

    proptest::proptest! {
        #[test]
        fn random_bytes_never_panic(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..256)) {
            let mut c = FrameCodec::new(4096);
            let mut buf = BytesMut::from(&data[..]);
            while let Ok(Some(f)) = c.decode(&mut buf) {
                if let Frame::Batch(b) = f {
                    let _ = b.open(1 << 16);
                }
            }
        }
    }
}
