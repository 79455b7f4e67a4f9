//! SASL/PLAIN on the Kafka listener, with the API's tokens (`api.auth`): the
//! username is the token's name, the password the token. Until a connection has
//! authenticated it may only ask ApiVersions, SaslHandshake and SaslAuthenticate;
//! afterwards each request needs a scope of its token: Produce and InitProducerId
//! `write`, reads (Fetch, ListOffsets, OffsetFetch, ListGroups, DescribeGroups)
//! `read`, group membership and commits `commit`; Metadata and FindCoordinator any
//! token. A request beyond the token's scopes gets the Kafka authorization error
//! for it (TOPIC_ / GROUP_ / CLUSTER_AUTHORIZATION_FAILED), as a broker with ACLs
//! answers, so clients report it instead of retrying.

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::describe_groups_response::DescribedGroup;
use kafka_protocol::messages::fetch_response::{FetchableTopicResponse, PartitionData};
use kafka_protocol::messages::list_offsets_response::{
    ListOffsetsPartitionResponse, ListOffsetsTopicResponse,
};
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_response::OffsetFetchResponseGroup;
use kafka_protocol::messages::produce_response::{PartitionProduceResponse, TopicProduceResponse};
use kafka_protocol::messages::{
    DescribeGroupsResponse, FetchResponse, HeartbeatResponse, InitProducerIdResponse,
    JoinGroupResponse, LeaveGroupResponse, ListGroupsResponse, ListOffsetsResponse,
    OffsetCommitResponse, OffsetFetchResponse, ProduceResponse, SaslAuthenticateRequest,
    SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse, SyncGroupResponse,
    TopicName,
};
use kafka_protocol::protocol::StrBytes;

use super::request::Body;
use super::{Broker, KafkaError, Request, frame};
use crate::api::auth::{Principal, Scope};

const TOPIC_AUTHORIZATION_FAILED: i16 = 29;
const GROUP_AUTHORIZATION_FAILED: i16 = 30;
const CLUSTER_AUTHORIZATION_FAILED: i16 = 31;
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
const ILLEGAL_SASL_STATE: i16 = 34;
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What one connection has proved.
#[derive(Debug, Default)]
pub struct Session {
    /// SaslHandshake chose PLAIN.
    plain: bool,
    /// A v0 handshake: the next frame is the bare PLAIN message, not a request.
    pub raw_next: bool,
    pub principal: Option<Principal>,
}

/// The scope `body` needs; `None`: any authenticated connection may ask.
pub fn required(body: &Body) -> Option<Scope> {
    Some(match body {
        Body::ApiVersions
        | Body::Metadata(_)
        | Body::FindCoordinator(_)
        | Body::SaslHandshake(_)
        | Body::SaslAuthenticate(_) => return None,
        Body::Produce(_) | Body::InitProducerId(_) => Scope::Write,
        Body::Fetch(_)
        | Body::ListOffsets(_)
        | Body::OffsetFetch(_)
        | Body::ListGroups(_)
        | Body::DescribeGroups(_) => Scope::Read,
        Body::OffsetCommit(_)
        | Body::JoinGroup(_)
        | Body::SyncGroup(_)
        | Body::Heartbeat(_)
        | Body::LeaveGroup(_) => Scope::Commit,
    })
}

/// SaslHandshake: PLAIN when tokens are configured, nothing otherwise.
pub fn handshake(
    broker: &Broker,
    session: &mut Session,
    req: &SaslHandshakeRequest,
    version: i16,
) -> SaslHandshakeResponse {
    if broker.auth.is_none() {
        return SaslHandshakeResponse::default().with_error_code(UNSUPPORTED_SASL_MECHANISM);
    }
    let plain = StrBytes::from_static_str("PLAIN");
    session.plain = req.mechanism.as_str() == "PLAIN" && session.principal.is_none();
    session.raw_next = session.plain && version == 0;
    SaslHandshakeResponse::default()
        .with_error_code(if session.plain {
            super::code::NONE
        } else {
            UNSUPPORTED_SASL_MECHANISM
        })
        .with_mechanisms(vec![plain])
}

/// Split PLAIN's `authzid NUL authcid NUL passwd`.
fn plain_parts(b: &[u8]) -> Option<(&str, &str)> {
    let mut parts = b.splitn(3, |&c| c == 0);
    let _authzid = parts.next()?;
    let user = std::str::from_utf8(parts.next()?).ok()?;
    let pass = std::str::from_utf8(parts.next()?).ok()?;
    Some((user, pass))
}

/// SaslAuthenticate: the answer, and the reason to close the connection after it
/// when authentication failed.
pub fn authenticate(
    broker: &Broker,
    session: &mut Session,
    req: &SaslAuthenticateRequest,
    peer: std::net::SocketAddr,
) -> (SaslAuthenticateResponse, Option<KafkaError>) {
    authenticate_bytes(broker, session, &req.auth_bytes, peer)
}

/// [`authenticate`] for the bare PLAIN message after a v0 handshake: `Ok` to
/// answer with an empty frame, `Err` to close.
pub fn authenticate_raw(
    broker: &Broker,
    session: &mut Session,
    message: &[u8],
    peer: std::net::SocketAddr,
) -> Result<(), KafkaError> {
    session.raw_next = false;
    match authenticate_bytes(broker, session, message, peer) {
        (_, Some(e)) => Err(e),
        (_, None) => Ok(()),
    }
}

fn authenticate_bytes(
    broker: &Broker,
    session: &mut Session,
    auth_bytes: &[u8],
    peer: std::net::SocketAddr,
) -> (SaslAuthenticateResponse, Option<KafkaError>) {
    let fail = |code: i16, why: String| {
        broker.metrics.error("kafka_sasl");
        (
            SaslAuthenticateResponse::default()
                .with_error_code(code)
                .with_error_message(Some(StrBytes::from_string(why.clone()))),
            Some(KafkaError::Sasl(why)),
        )
    };
    let Some(auth) = &broker.auth else {
        return fail(ILLEGAL_SASL_STATE, "this listener has no SASL".into());
    };
    if !session.plain || session.principal.is_some() {
        return fail(
            ILLEGAL_SASL_STATE,
            "SaslAuthenticate without a SaslHandshake for PLAIN".into(),
        );
    }
    let Some((user, pass)) = plain_parts(auth_bytes) else {
        return fail(
            SASL_AUTHENTICATION_FAILED,
            "SASL/PLAIN message is not `authzid NUL username NUL password`".into(),
        );
    };
    let tokens = auth.tokens.current();
    match tokens.find(pass) {
        Some(p) if p.name == user => {
            tracing::debug!(%peer, token = %p.name, "Kafka client authenticated");
            session.principal = Some(p.clone());
            (
                SaslAuthenticateResponse::default().with_auth_bytes(Bytes::new()),
                None,
            )
        }
        Some(_) => fail(
            SASL_AUTHENTICATION_FAILED,
            format!("the username must be the token's name (not `{user}`)"),
        ),
        None => fail(
            SASL_AUTHENTICATION_FAILED,
            "unknown or revoked token (the password must be a token from api.auth.tokens_file)"
                .into(),
        ),
    }
}

/// The answer to `body` for a token without the scope it needs: every topic,
/// partition or group in it gets the authorization error.
pub fn denied(ctx: &Request<'_>, body: Body) -> Result<BytesMut, KafkaError> {
    let topic_err = TOPIC_AUTHORIZATION_FAILED;
    let group_err = GROUP_AUTHORIZATION_FAILED;
    match body {
        Body::Produce(r) => {
            if r.acks == 0 {
                return Ok(BytesMut::new());
            }
            let responses = r
                .topic_data
                .iter()
                .map(|t| {
                    TopicProduceResponse::default()
                        .with_name(t.name.clone())
                        .with_partition_responses(
                            t.partition_data
                                .iter()
                                .map(|p| {
                                    PartitionProduceResponse::default()
                                        .with_index(p.index)
                                        .with_error_code(topic_err)
                                        .with_base_offset(-1)
                                        .with_log_append_time_ms(-1)
                                        .with_log_start_offset(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            frame(ctx, &ProduceResponse::default().with_responses(responses))
        }
        Body::InitProducerId(_) => frame(
            ctx,
            &InitProducerIdResponse::default()
                .with_error_code(CLUSTER_AUTHORIZATION_FAILED)
                .with_producer_id(kafka_protocol::messages::ProducerId(-1))
                .with_producer_epoch(-1),
        ),
        Body::Fetch(r) => {
            let responses = r
                .topics
                .iter()
                .map(|t| {
                    FetchableTopicResponse::default()
                        .with_topic(TopicName(t.topic.0.clone()))
                        .with_topic_id(t.topic_id)
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    PartitionData::default()
                                        .with_partition_index(p.partition)
                                        .with_error_code(topic_err)
                                        .with_high_watermark(-1)
                                        .with_last_stable_offset(-1)
                                        .with_log_start_offset(-1)
                                        .with_aborted_transactions(Some(Vec::new()))
                                        .with_records(Some(Bytes::new()))
                                })
                                .collect(),
                        )
                })
                .collect();
            frame(ctx, &FetchResponse::default().with_responses(responses))
        }
        Body::ListOffsets(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    ListOffsetsTopicResponse::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    ListOffsetsPartitionResponse::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(topic_err)
                                        .with_offset(-1)
                                        .with_timestamp(-1)
                                })
                                .collect(),
                        )
                })
                .collect();
            frame(ctx, &ListOffsetsResponse::default().with_topics(topics))
        }
        Body::OffsetCommit(r) => {
            let topics = r
                .topics
                .iter()
                .map(|t| {
                    OffsetCommitResponseTopic::default()
                        .with_name(t.name.clone())
                        .with_partitions(
                            t.partitions
                                .iter()
                                .map(|p| {
                                    OffsetCommitResponsePartition::default()
                                        .with_partition_index(p.partition_index)
                                        .with_error_code(group_err)
                                })
                                .collect(),
                        )
                })
                .collect();
            frame(ctx, &OffsetCommitResponse::default().with_topics(topics))
        }
        Body::OffsetFetch(r) => {
            let groups = r
                .groups
                .iter()
                .map(|g| {
                    OffsetFetchResponseGroup::default()
                        .with_group_id(g.group_id.clone())
                        .with_error_code(group_err)
                })
                .collect();
            frame(
                ctx,
                &OffsetFetchResponse::default()
                    .with_error_code(group_err)
                    .with_groups(groups),
            )
        }
        Body::JoinGroup(_) => frame(
            ctx,
            &JoinGroupResponse::default()
                .with_error_code(group_err)
                .with_generation_id(-1),
        ),
        Body::SyncGroup(_) => frame(
            ctx,
            &SyncGroupResponse::default().with_error_code(group_err),
        ),
        Body::Heartbeat(_) => frame(
            ctx,
            &HeartbeatResponse::default().with_error_code(group_err),
        ),
        Body::LeaveGroup(_) => frame(
            ctx,
            &LeaveGroupResponse::default().with_error_code(group_err),
        ),
        Body::ListGroups(_) => frame(
            ctx,
            &ListGroupsResponse::default().with_error_code(group_err),
        ),
        Body::DescribeGroups(r) => {
            let groups = r
                .groups
                .iter()
                .map(|g| {
                    DescribedGroup::default()
                        .with_group_id(g.clone())
                        .with_error_code(group_err)
                })
                .collect();
            frame(ctx, &DescribeGroupsResponse::default().with_groups(groups))
        }
        // Open to every authenticated client: never denied.
        Body::ApiVersions
        | Body::Metadata(_)
        | Body::FindCoordinator(_)
        | Body::SaslHandshake(_)
        | Body::SaslAuthenticate(_) => Err(KafkaError::Sasl(
            "internal: an open request was denied".into(),
        )),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plain_messages_split_in_three() {
        assert_eq!(plain_parts(b"\0etl\0trb_x"), Some(("etl", "trb_x")));
        assert_eq!(
            plain_parts(b"admin\0etl\0pass\0word"),
            Some(("etl", "pass\0word"))
        );
        assert_eq!(plain_parts(b"no-separators"), None);
        assert_eq!(plain_parts(b"\0only-user"), None);
        assert_eq!(plain_parts(b"\0\xff\0x"), None);
    }
}
