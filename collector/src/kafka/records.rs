//! Stored records → Kafka v2 record batches (what Fetch answers carry).
//!
//! A stored record becomes a Kafka record with timestamp = the record's timestamp,
//! key = its source, value = its message bytes, and headers `host`, `source`, one
//! per field (the block's static fields, then the record's own; strings as they
//! are, other values JSON-encoded) and `partial` (`"1"`) when the line was cut at
//! `max_line_bytes`. Records read together become one batch with CRC32C,
//! compressed with the configured codec: LZ4 frames of independent 64 KiB blocks
//! (`lz4_flex`), gzip (`flate2`), or none.

use bytes::{Bytes, BytesMut};
use kafka_protocol::indexmap::IndexMap;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::{
    Compression, NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, Record,
    RecordBatchEncoder, RecordEncodeOptions, TimestampType,
};
use tributary_common::record::FLAG_PARTIAL;
use tributary_store::StoredRecord;

/// The codec of the batches Fetch answers carry (`kafka.compression`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum FetchCompression {
    None,
    Gzip,
    #[default]
    Lz4,
}

impl FetchCompression {
    fn kafka(self) -> Compression {
        match self {
            FetchCompression::None => Compression::None,
            FetchCompression::Gzip => Compression::Gzip,
            FetchCompression::Lz4 => Compression::Lz4,
        }
    }
}

/// The Kafka record for a stored one.
pub fn to_kafka(r: &StoredRecord, base: u64) -> Record {
    let mut headers: IndexMap<StrBytes, Option<Bytes>> = IndexMap::new();
    headers.insert(
        StrBytes::from_static_str("host"),
        Some(Bytes::copy_from_slice(r.block.host.as_bytes())),
    );
    headers.insert(
        StrBytes::from_static_str("source"),
        Some(Bytes::copy_from_slice(r.block.source.as_bytes())),
    );
    for fields in [&r.block.fields[..], &r.fields[..]] {
        tributary_common::kafka::field_headers(&mut headers, fields);
    }
    // After the fields, so that no field can pass for the authenticated identity.
    if !r.block.agent.is_empty() {
        headers.insert(
            StrBytes::from_static_str("agent"),
            Some(Bytes::copy_from_slice(r.block.agent.as_bytes())),
        );
    }
    if r.flags & FLAG_PARTIAL != 0 {
        headers.insert(
            StrBytes::from_static_str("partial"),
            Some(Bytes::from_static(b"1")),
        );
    }
    let delta = r.offset.saturating_sub(base);
    Record {
        transactional: false,
        control: false,
        partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
        producer_id: NO_PRODUCER_ID,
        producer_epoch: NO_PRODUCER_EPOCH,
        timestamp_type: TimestampType::Creation,
        offset: i64::try_from(r.offset).unwrap_or(i64::MAX),
        // Base sequence -1 (no producer) with offsets and sequences moving
        // together, so that the encoder keeps every record in one batch.
        sequence: i32::try_from(delta).unwrap_or(i32::MAX).wrapping_sub(1),
        timestamp: r.timestamp_ms,
        key: Some(Bytes::copy_from_slice(r.block.source.as_bytes())),
        // A slice of the batch it was read from: not copied.
        value: Some(r.message.clone()),
        headers,
        delete_horizon: false,
    }
}

/// Why a batch could not be encoded (a bug: the inputs are our own records).
#[derive(Debug, thiserror::Error)]
#[error("cannot encode a record batch: {0}")]
pub struct EncodeError(String);

/// Encode `records` (consecutive offsets) as one v2 batch.
pub fn encode_batch(
    records: &[StoredRecord],
    compression: FetchCompression,
) -> Result<Bytes, EncodeError> {
    let Some(first) = records.first() else {
        return Ok(Bytes::new());
    };
    let kafka: Vec<Record> = records.iter().map(|r| to_kafka(r, first.offset)).collect();
    let mut buf = BytesMut::with_capacity(records.iter().map(|r| r.message.len() + 64).sum());
    let options = RecordEncodeOptions {
        version: 2,
        compression: compression.kafka(),
    };
    RecordBatchEncoder::encode_with_custom_compression(
        &mut buf,
        kafka.iter(),
        &options,
        Some(tributary_common::kafka::compress),
    )
    .map_err(|e| EncodeError(e.to_string()))?;
    Ok(buf.freeze())
}

#[cfg(test)]
mod tests {
    use std::sync::Arc;

    use kafka_protocol::records::RecordBatchDecoder;
    use tributary_store::Block;

    use super::*;

    fn stored(offset: u64, message: &str, fields: &str, flags: u8) -> StoredRecord {
        StoredRecord {
            offset,
            timestamp_ms: 1_795_600_000_000 + offset as i64,
            block: Arc::new(Block {
                host: "web-01".into(),
                source: "/var/log/app.log".into(),
                agent: String::new(),
                source_id: 7,
                fields: br#"{"env":"prod"}"#.to_vec(),
            }),
            source_offset: offset * 10,
            flags,
            fields: Bytes::copy_from_slice(fields.as_bytes()),
            message: Bytes::copy_from_slice(message.as_bytes()),
        }
    }

    fn decompress(data: &mut Bytes, codec: Compression) -> anyhow::Result<Bytes> {
        use std::io::Read;
        let mut out = Vec::new();
        match codec {
            Compression::None => out.extend_from_slice(data),
            Compression::Gzip => {
                flate2::read::GzDecoder::new(&data[..]).read_to_end(&mut out)?;
            }
            Compression::Lz4 => {
                lz4_flex::frame::FrameDecoder::new(&data[..]).read_to_end(&mut out)?;
            }
            other => anyhow::bail!("{other:?}"),
        }
        Ok(Bytes::from(out))
    }

    #[test]
    fn one_batch_per_read_with_every_codec_and_the_documented_mapping() {
        let records = vec![
            stored(41, "first line", "", 0),
            stored(42, "second", r#"{"severity":"err","pid":12}"#, 0),
            stored(43, "cut", "", FLAG_PARTIAL),
        ];
        for codec in [
            FetchCompression::None,
            FetchCompression::Gzip,
            FetchCompression::Lz4,
        ] {
            let mut bytes = encode_batch(&records, codec).unwrap();
            let set =
                RecordBatchDecoder::decode_with_custom_compression(&mut bytes, Some(decompress))
                    .unwrap();
            assert!(bytes.is_empty(), "{codec:?}: one batch");
            let got = &set.records;
            assert_eq!(got.len(), 3);
            assert_eq!(got[0].offset, 41);
            assert_eq!(got[2].offset, 43);
            assert_eq!(got[1].timestamp, 1_795_600_000_042);
            assert_eq!(got[1].value.as_deref(), Some(&b"second"[..]));
            assert_eq!(got[1].key.as_deref(), Some(&b"/var/log/app.log"[..]));
            let h = |i: usize, k: &str| {
                got[i]
                    .headers
                    .get(&StrBytes::from_string(k.to_owned()))
                    .cloned()
                    .flatten()
            };
            assert_eq!(h(1, "host").as_deref(), Some(&b"web-01"[..]));
            assert_eq!(h(1, "env").as_deref(), Some(&b"prod"[..]));
            assert_eq!(h(1, "severity").as_deref(), Some(&b"err"[..]));
            assert_eq!(h(1, "pid").as_deref(), Some(&b"12"[..]));
            assert_eq!(h(2, "partial").as_deref(), Some(&b"1"[..]));
            assert_eq!(h(0, "partial"), None);
        }
    }
}
