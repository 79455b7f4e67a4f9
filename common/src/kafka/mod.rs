//! The client side of the Kafka protocol, shared by the agent's Kafka output and
//! the collector's Kafka source: [`conn::Conn`] (one broker: TCP or TLS, SASL
//! PLAIN or SCRAM-SHA-256/512 ([`scram`]), version agreement, calls with timeouts
//! and size limits), [`settings`] (brokers, TLS and SASL as the configs write them) and
//! [`compress`], the codec hook of v2 record batches (lz4 frames from `lz4_flex`,
//! gzip from `flate2`: no C library). Message types and batch encoding come from
//! the `kafka-protocol` crate.

use std::borrow::Cow;
use std::io::Write;

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;

pub mod conn;
pub mod decode;
pub mod scram;
pub mod settings;

pub use conn::{Conn, ConnSettings, KafkaError, Sasl, SaslMechanism};

/// Each member of a record's fields (a JSON object, or empty) as a header: strings
/// as their text, other values as their JSON text. A later name replaces an
/// earlier one, as in the object.
pub fn field_headers(headers: &mut IndexMap<StrBytes, Option<Bytes>>, fields: &[u8]) {
    each_field(fields, |name, value| {
        headers.insert(
            StrBytes::from_string(name.into_owned()),
            Some(Bytes::from(value.into_owned().into_bytes())),
        );
    });
}

/// Each member of `fields` (a JSON object, or empty) as a header's name and
/// value: strings as their text, other values as their JSON text.
pub fn each_field(fields: &[u8], mut f: impl FnMut(Cow<'_, str>, Cow<'_, str>)) {
    let Ok(text) = std::str::from_utf8(fields) else {
        return;
    };
    let _ = crate::json::object_members(text, |m| {
        let name = match m.plain_key() {
            Some(k) => Cow::Borrowed(k),
            None => match serde_json::from_str::<String>(m.key) {
                Ok(k) => Cow::Owned(k),
                Err(_) => return,
            },
        };
        let value = match m.value.strip_prefix('"') {
            Some(s) if !s.contains('\\') => Cow::Borrowed(s.strip_suffix('"').unwrap_or(s)),
            Some(_) => Cow::Owned(
                serde_json::from_str::<String>(m.value).unwrap_or_else(|_| m.value.to_owned()),
            ),
            None => Cow::Borrowed(m.value),
        };
        f(name, value);
    });
}

/// Compress a batch's record bytes into `out` (the hook of
/// `RecordBatchEncoder::encode_with_custom_compression`): LZ4 frames of
/// independent 64 KiB blocks, gzip, or none.
pub fn compress(
    records: &mut BytesMut,
    out: &mut BytesMut,
    codec: Compression,
) -> anyhow::Result<()> {
    let mut v = Vec::new();
    compress_into(records, &mut v, codec)?;
    out.extend_from_slice(&v);
    Ok(())
}

/// [`compress`] from a slice into a `Vec`.
pub fn compress_into(records: &[u8], out: &mut Vec<u8>, codec: Compression) -> anyhow::Result<()> {
    match codec {
        Compression::None => out.extend_from_slice(records),
        Compression::Gzip => {
            let mut enc = flate2::write::GzEncoder::new(&mut *out, flate2::Compression::fast());
            enc.write_all(records)?;
            enc.finish()?;
        }
        Compression::Lz4 => {
            let info = lz4_flex::frame::FrameInfo::new()
                .block_size(lz4_flex::frame::BlockSize::Max64KB)
                .block_mode(lz4_flex::frame::BlockMode::Independent);
            let mut enc = lz4_flex::frame::FrameEncoder::with_frame_info(info, &mut *out);
            enc.write_all(records)?;
            enc.finish()?;
        }
        other => anyhow::bail!("{other:?} compression is not offered (lz4, gzip or none)"),
    }
    Ok(())
}
