//! Decoding one Kafka request (after its size prefix): the API and version, the
//! header, and the body of every API this broker answers. Pure: no I/O, no state,
//! so it is fuzzed on its own (`collector/fuzz`, target `kafka_request`).

use bytes::Bytes;
use kafka_protocol::messages::{
    ApiKey, DescribeGroupsRequest, FetchRequest, FindCoordinatorRequest, HeartbeatRequest,
    InitProducerIdRequest, JoinGroupRequest, LeaveGroupRequest, ListGroupsRequest,
    ListOffsetsRequest, MetadataRequest, OffsetCommitRequest, OffsetFetchRequest, ProduceRequest,
    RequestHeader, SaslAuthenticateRequest, SaslHandshakeRequest, SyncGroupRequest,
};
use kafka_protocol::protocol::Decodable;

use super::{KafkaError, versions};

/// A request this broker answers, decoded.
pub enum Body {
    ApiVersions,
    Metadata(MetadataRequest),
    ListOffsets(ListOffsetsRequest),
    Fetch(FetchRequest),
    Produce(ProduceRequest),
    InitProducerId(InitProducerIdRequest),
    FindCoordinator(FindCoordinatorRequest),
    OffsetCommit(OffsetCommitRequest),
    OffsetFetch(OffsetFetchRequest),
    JoinGroup(JoinGroupRequest),
    SyncGroup(SyncGroupRequest),
    Heartbeat(HeartbeatRequest),
    LeaveGroup(LeaveGroupRequest),
    ListGroups(ListGroupsRequest),
    DescribeGroups(DescribeGroupsRequest),
    SaslHandshake(SaslHandshakeRequest),
    SaslAuthenticate(SaslAuthenticateRequest),
}

/// What the bytes of one request are.
pub enum Decoded {
    Request {
        api: ApiKey,
        version: i16,
        correlation: i32,
        client: String,
        body: Box<Body>,
    },
    /// ApiVersions newer than offered: answered in v0 shape with the ranges.
    NewerApiVersions { correlation: i32 },
    /// An unknown API, or a version not offered.
    Unsupported {
        key: i16,
        version: i16,
        correlation: i32,
    },
}

/// Decode one request; `body` holds at least the 8 bytes of key, version and
/// correlation id (the connection checks the size first).
pub fn decode(mut body: Bytes) -> Result<Decoded, KafkaError> {
    if body.len() < 8 {
        return Err(KafkaError::TooShort(body.len() as i64));
    }
    let key = i16::from_be_bytes([body[0], body[1]]);
    let version = i16::from_be_bytes([body[2], body[3]]);
    let correlation = i32::from_be_bytes([body[4], body[5], body[6], body[7]]);
    let api = match ApiKey::try_from(key) {
        Ok(api) if versions::supports(api, version) => api,
        Ok(ApiKey::ApiVersions) => return Ok(Decoded::NewerApiVersions { correlation }),
        _ => {
            return Ok(Decoded::Unsupported {
                key,
                version,
                correlation,
            });
        }
    };
    let malformed = |source| KafkaError::Malformed {
        api,
        version,
        source,
    };
    let header =
        RequestHeader::decode(&mut body, api.request_header_version(version)).map_err(malformed)?;
    let client = header
        .client_id
        .as_ref()
        .map(|c| c.as_str().to_owned())
        .unwrap_or_default();
    fn de<T: Decodable>(b: &mut Bytes, v: i16) -> anyhow::Result<T> {
        T::decode(b, v)
    }
    let b = &mut body;
    let v = version;
    let body = match api {
        // Its body (client name and version in v3) is not needed.
        ApiKey::ApiVersions => Body::ApiVersions,
        ApiKey::Metadata => Body::Metadata(de(b, v).map_err(malformed)?),
        ApiKey::ListOffsets => Body::ListOffsets(de(b, v).map_err(malformed)?),
        ApiKey::Fetch => Body::Fetch(de(b, v).map_err(malformed)?),
        ApiKey::Produce => Body::Produce(de(b, v).map_err(malformed)?),
        ApiKey::InitProducerId => Body::InitProducerId(de(b, v).map_err(malformed)?),
        ApiKey::FindCoordinator => Body::FindCoordinator(de(b, v).map_err(malformed)?),
        ApiKey::OffsetCommit => Body::OffsetCommit(de(b, v).map_err(malformed)?),
        ApiKey::OffsetFetch => Body::OffsetFetch(de(b, v).map_err(malformed)?),
        ApiKey::JoinGroup => Body::JoinGroup(de(b, v).map_err(malformed)?),
        ApiKey::SyncGroup => Body::SyncGroup(de(b, v).map_err(malformed)?),
        ApiKey::Heartbeat => Body::Heartbeat(de(b, v).map_err(malformed)?),
        ApiKey::LeaveGroup => Body::LeaveGroup(de(b, v).map_err(malformed)?),
        ApiKey::ListGroups => Body::ListGroups(de(b, v).map_err(malformed)?),
        ApiKey::DescribeGroups => Body::DescribeGroups(de(b, v).map_err(malformed)?),
        ApiKey::SaslHandshake => Body::SaslHandshake(de(b, v).map_err(malformed)?),
        ApiKey::SaslAuthenticate => Body::SaslAuthenticate(de(b, v).map_err(malformed)?),
        _ => {
            return Ok(Decoded::Unsupported {
                key,
                version,
                correlation,
            });
        }
    };
    Ok(Decoded::Request {
        api,
        version,
        correlation,
        client,
        body: Box::new(body),
    })
}
