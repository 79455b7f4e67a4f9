//! The ingest protocol between agent and collector: framed, versioned, pipelined.
//!
//! A pure codec: no sockets, no async. `docs/PROTOCOL.md` describes it byte by
//! byte; in short, after the TLS handshake:
//!
//! ```text
//! frame := u32 length  (bytes after this field: type + body; at most max_frame_bytes)
//!          u8  type
//!          body
//!
//! agent → collector   HELLO  magic "TRIB", u16 version, u16+host, u16+agent version
//! collector → agent   WELCOME u16 version, u32 max_frame_bytes, u32 max_batch_bytes
//! agent → collector   BATCH  u64 seq, u8 codec, u8+topic, u32 records,
//!                            u32 uncompressed_len, u32 crc32c(uncompressed), payload
//! collector → agent   ACK    u64 seq                (only after durable append)
//! collector → agent   REJECT u64 seq, u16 code, u16+message  (batch refused, connection stays)
//! either way          ERROR  u16 code, u16+message  (fatal; the sender closes)
//! ```
//! The agent may have many batches in flight; the collector acknowledges them in
//! the order it received them. Every length is checked against a limit before
//! anything is allocated.

mod frame;

pub use frame::{
    BATCH_HEAD_MAX, BatchError, BatchFrame, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_FRAME_BYTES,
    ErrorCode, Frame, FrameCodec, MAGIC, PROTOCOL_VERSION, WireError, declared_batch_len,
    decode_frame,
};
