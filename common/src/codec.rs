//! Batch compression: none, gzip (flate2) and lz4 (lz4_flex block format).
//!
//! The sender states the uncompressed length in the batch frame; the receiver
//! refuses a stated length above its limit before decompressing anything, and
//! refuses output that does not come out at exactly the stated length. A
//! decompression bomb therefore costs at most `limit` bytes of memory.

use std::io::Read;

use serde::Deserialize;
use thiserror::Error;

/// Compression codec of a batch, as named in the agent config and coded on the wire.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum Compression {
    None,
    Gzip,
    #[default]
    Lz4,
}

impl Compression {
    /// Wire code (stable; never reuse a retired number).
    pub fn code(self) -> u8 {
        match self {
            Compression::None => 0,
            Compression::Gzip => 1,
            Compression::Lz4 => 2,
        }
    }

    pub fn from_code(code: u8) -> Option<Self> {
        match code {
            0 => Some(Compression::None),
            1 => Some(Compression::Gzip),
            2 => Some(Compression::Lz4),
            _ => None,
        }
    }

    pub fn name(self) -> &'static str {
        match self {
            Compression::None => "none",
            Compression::Gzip => "gzip",
            Compression::Lz4 => "lz4",
        }
    }
}

#[derive(Debug, Error, PartialEq, Eq)]
pub enum CodecError {
    #[error("declared uncompressed size {declared} exceeds the limit of {limit} bytes")]
    TooLarge { declared: usize, limit: usize },
    #[error("{codec} data decompressed to {actual} bytes, but {declared} were declared")]
    LengthMismatch {
        codec: &'static str,
        declared: usize,
        actual: usize,
    },
    #[error("{codec} data is corrupt: {reason}")]
    Corrupt { codec: &'static str, reason: String },
}

/// Compress `input` using `out` as the buffer and return the compressed bytes (the
/// start of `out`). `out` is a scratch buffer to reuse: for lz4 it keeps its
/// length (the codec's worst case) between calls, so a reused buffer is not
/// zeroed again for every batch, and a new one comes zeroed from the allocator.
pub fn compress<'a>(codec: Compression, input: &[u8], out: &'a mut Vec<u8>) -> &'a [u8] {
    match codec {
        Compression::None => {
            out.clear();
            out.extend_from_slice(input);
            out
        }
        Compression::Lz4 => {
            let max = lz4_flex::block::get_maximum_output_size(input.len());
            if out.capacity() == 0 {
                *out = vec![0u8; max];
            } else if out.len() < max {
                out.resize(max, 0);
            }
            // The buffer is at least the crate's own bound, so this cannot fail.
            let n = lz4_flex::block::compress_into(input, out).unwrap_or(0);
            &out[..n]
        }
        Compression::Gzip => {
            use std::io::Write;
            out.clear();
            let mut enc =
                flate2::write::GzEncoder::new(std::mem::take(out), flate2::Compression::fast());
            // Writing into a Vec cannot fail.
            let _ = enc.write_all(input);
            *out = enc.finish().unwrap_or_default();
            out
        }
    }
}

/// [`decompress`] into `out`, a buffer kept from call to call (readers expanding
/// batch after batch): returns the `declared` bytes, which start `out`. `out`'s
/// length only grows, so a reused buffer is not zeroed again.
pub fn decompress_into<'a>(
    codec: Compression,
    input: &[u8],
    declared: usize,
    limit: usize,
    out: &'a mut Vec<u8>,
) -> Result<&'a [u8], CodecError> {
    if declared > limit {
        return Err(CodecError::TooLarge { declared, limit });
    }
    let n = match codec {
        Compression::Lz4 => {
            if out.len() < declared {
                out.resize(declared, 0);
            }
            // Exactly `declared` bytes of room: a block that would expand to more
            // fails here instead of growing anything.
            lz4_flex::block::decompress_into(input, &mut out[..declared]).map_err(|e| {
                CodecError::Corrupt {
                    codec: "lz4",
                    reason: e.to_string(),
                }
            })?
        }
        Compression::None | Compression::Gzip => {
            *out = decompress(codec, input, declared, limit)?;
            declared
        }
    };
    if n != declared {
        return Err(CodecError::LengthMismatch {
            codec: codec.name(),
            declared,
            actual: n,
        });
    }
    Ok(&out[..declared])
}

/// Decompress `input`, which must expand to exactly `declared` bytes, at most `limit`.
pub fn decompress(
    codec: Compression,
    input: &[u8],
    declared: usize,
    limit: usize,
) -> Result<Vec<u8>, CodecError> {
    if declared > limit {
        return Err(CodecError::TooLarge { declared, limit });
    }
    let out = match codec {
        Compression::None => input.to_vec(),
        // Into `declared` bytes of room, not zeroed first: a block that would
        // expand to more fails instead of growing anything.
        Compression::Lz4 => {
            lz4_flex::block::decompress(input, declared).map_err(|e| CodecError::Corrupt {
                codec: "lz4",
                reason: e.to_string(),
            })?
        }
        Compression::Gzip => {
            let mut out = Vec::with_capacity(declared);
            // Read one byte past the declared size so an overlong stream is detected
            // without ever holding more than declared + 1 bytes.
            flate2::read::GzDecoder::new(input)
                .take(declared as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| CodecError::Corrupt {
                    codec: "gzip",
                    reason: e.to_string(),
                })?;
            out
        }
    };
    if out.len() != declared {
        return Err(CodecError::LengthMismatch {
            codec: codec.name(),
            declared,
            actual: out.len(),
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    const ALL: [Compression; 3] = [Compression::None, Compression::Gzip, Compression::Lz4];

    #[test]
    fn roundtrip_every_codec() {
        let input: Vec<u8> = (0..100_000u32)
            .flat_map(|i| (i % 251).to_le_bytes())
            .collect();
        for c in ALL {
            let mut z = Vec::new();
            let small = compress(c, &input[..1000], &mut z).to_vec();
            assert_eq!(
                decompress(c, &small, 1000, 1 << 20).unwrap(),
                &input[..1000]
            );
            // Declared longer than it expands: an error, never bytes the decoder
            // did not write.
            assert!(
                matches!(
                    decompress(c, &small, 1001, 1 << 20),
                    Err(CodecError::LengthMismatch { actual: 1000, .. })
                ),
                "{c:?}"
            );
            // The buffer reused, shorter and longer inputs.
            let big = compress(c, &input, &mut z).to_vec();
            let back = decompress(c, &big, input.len(), 1 << 20).unwrap();
            assert_eq!(back, input, "{c:?}");
            let again = compress(c, &input[..1000], &mut z);
            assert_eq!(
                again,
                &small[..],
                "{c:?}: the same bytes from a used buffer"
            );
            assert_eq!(Compression::from_code(c.code()), Some(c));
        }
        assert_eq!(Compression::from_code(9), None);
    }

    #[test]
    fn bombs_are_refused() {
        let zeros = vec![0u8; 8 << 20];
        for c in [Compression::Gzip, Compression::Lz4] {
            let mut buf = Vec::new();
            let z = compress(c, &zeros, &mut buf).to_vec();
            assert!(z.len() < 100_000, "{c:?} compresses zeros well");
            // Honest declaration above the limit: refused before any work.
            assert_eq!(
                decompress(c, &z, zeros.len(), 1 << 20),
                Err(CodecError::TooLarge {
                    declared: zeros.len(),
                    limit: 1 << 20
                })
            );
            // Lying declaration under the limit: refused, memory stays bounded.
            assert!(matches!(
                decompress(c, &z, 1000, 1 << 20),
                Err(CodecError::LengthMismatch { .. } | CodecError::Corrupt { .. })
            ));
        }
    }

    #[test]
    fn garbage_is_an_error() {
        let garbage: Vec<u8> = (0..1000u32).map(|i| (i * 7919 % 256) as u8).collect();
        for c in [Compression::Gzip, Compression::Lz4] {
            assert!(decompress(c, &garbage, 5000, 1 << 20).is_err(), "{c:?}");
        }
        assert!(decompress(Compression::None, &garbage, 999, 1 << 20).is_err());
    }

    proptest::proptest! {
        #[test]
        fn random_input_never_panics(data in proptest::collection::vec(proptest::prelude::any::<u8>(), 0..2048), declared in 0usize..10_000) {
            for c in ALL {
                let _ = decompress(c, &data, declared, 8192);
            }
        }
    }
}
