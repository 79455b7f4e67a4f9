//! ApiVersions, and the API versions this broker speaks.
//!
//! The answer never carries tagged fields (librdkafka up to 2.1 misreads
//! non-empty ones), and its header is always v0. A client asking with a newer
//! ApiVersions gets a v0-shaped answer with `UNSUPPORTED_VERSION` and the ranges,
//! and retries with a version from them.

use bytes::BytesMut;
use kafka_protocol::messages::ApiKey;
use kafka_protocol::messages::api_versions_response::{ApiVersion, ApiVersionsResponse};

use super::{KafkaError, Request, code};

/// (API, lowest, highest version) answered.
pub const SUPPORTED: &[(ApiKey, i16, i16)] = &[
    // librdkafka enables record batches v2 only when the broker lists Produce v3+.
    (ApiKey::Produce, 3, 9),
    (ApiKey::Fetch, 4, 12),
    (ApiKey::ListOffsets, 1, 7),
    (ApiKey::Metadata, 0, 12),
    (ApiKey::OffsetCommit, 2, 8),
    (ApiKey::OffsetFetch, 1, 8),
    (ApiKey::FindCoordinator, 0, 4),
    (ApiKey::JoinGroup, 0, 7),
    (ApiKey::SyncGroup, 0, 5),
    (ApiKey::Heartbeat, 0, 4),
    (ApiKey::LeaveGroup, 0, 5),
    (ApiKey::ListGroups, 0, 4),
    (ApiKey::DescribeGroups, 0, 5),
    (ApiKey::InitProducerId, 0, 4),
    (ApiKey::ApiVersions, 0, 3),
    // librdkafka looks for v0 to know the broker takes SASL at all; after a v0
    // handshake the PLAIN message comes unframed (see `sasl`).
    (ApiKey::SaslHandshake, 0, 1),
    (ApiKey::SaslAuthenticate, 0, 2),
];

/// Whether `api` is answered at `version`.
pub fn supports(api: ApiKey, version: i16) -> bool {
    SUPPORTED
        .iter()
        .any(|(a, lo, hi)| *a == api && (*lo..=*hi).contains(&version))
}

fn ranges() -> Vec<ApiVersion> {
    SUPPORTED
        .iter()
        .map(|(api, lo, hi)| {
            ApiVersion::default()
                .with_api_key(*api as i16)
                .with_min_version(*lo)
                .with_max_version(*hi)
        })
        .collect()
}

/// The ApiVersions answer.
pub fn answer(ctx: &Request<'_>) -> Result<BytesMut, KafkaError> {
    let body = ApiVersionsResponse::default()
        .with_error_code(code::NONE)
        .with_api_keys(ranges());
    super::frame(ctx, &body)
}

/// An ApiVersions request newer than v3: error 35 and the ranges, encoded as v0
/// (header v0), which every client can read.
pub fn unsupported_answer(correlation: i32) -> Result<BytesMut, KafkaError> {
    let ctx = Request {
        api: ApiKey::ApiVersions,
        version: 0,
        correlation,
        client: "",
        peer: std::net::SocketAddr::from(([0, 0, 0, 0], 0)),
        writer: "",
    };
    let body = ApiVersionsResponse::default()
        .with_error_code(code::UNSUPPORTED_VERSION)
        .with_api_keys(ranges());
    super::frame(&ctx, &body)
}

/// For an API or version we do not answer: a header v0 and `UNSUPPORTED_VERSION`
/// as the first field, after which the connection is closed.
pub fn error_only(correlation: i32) -> BytesMut {
    let mut out = BytesMut::with_capacity(10);
    out.extend_from_slice(&6i32.to_be_bytes());
    out.extend_from_slice(&correlation.to_be_bytes());
    out.extend_from_slice(&code::UNSUPPORTED_VERSION.to_be_bytes());
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(version: i16) -> Request<'static> {
        Request {
            api: ApiKey::ApiVersions,
            version,
            correlation: 7,
            client: "test",
            peer: std::net::SocketAddr::from(([127, 0, 0, 1], 1)),
            writer: "",
        }
    }

    #[test]
    fn v3_answer_has_a_v0_header_and_no_tagged_fields() {
        let a = answer(&ctx(3)).unwrap();
        let n = SUPPORTED.len();
        // size, correlation (header v0: no tagged fields), error, compact array of
        // (key, min, max, tags=0), throttle, tags=0.
        assert_eq!(a.len(), 4 + 4 + 2 + 1 + n * 7 + 4 + 1);
        assert_eq!(&a[4..8], &7i32.to_be_bytes());
        assert_eq!(&a[8..10], &0i16.to_be_bytes());
        assert_eq!(a[10] as usize, n + 1);
        assert_eq!(*a.last().unwrap(), 0, "no tagged fields");
        let size = i32::from_be_bytes([a[0], a[1], a[2], a[3]]) as usize;
        assert_eq!(size, a.len() - 4);
    }

    #[test]
    fn unsupported_versions_get_error_35_with_the_ranges_in_v0_shape() {
        let a = unsupported_answer(9).unwrap();
        assert_eq!(&a[4..8], &9i32.to_be_bytes());
        assert_eq!(&a[8..10], &35i16.to_be_bytes());
        // v0: INT32 array length, then (key, min, max) as INT16s.
        assert_eq!(&a[10..14], &(SUPPORTED.len() as i32).to_be_bytes());
        assert_eq!(a.len(), 4 + 4 + 2 + 4 + SUPPORTED.len() * 6);
        assert!(supports(ApiKey::Fetch, 12) && !supports(ApiKey::Fetch, 13));
        assert!(!supports(ApiKey::Produce, 2));
    }
}
