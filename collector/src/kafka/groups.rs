//! Consumer groups over Kafka: this broker coordinates every group
//! (FindCoordinator), and committed offsets (OffsetCommit, OffsetFetch) are the
//! same store as the HTTP API's groups: a group committed here shows its lag in
//! `tributary groups`, and the other way round.

use std::collections::BTreeMap;

use kafka_protocol::messages::find_coordinator_request::FindCoordinatorRequest;
use kafka_protocol::messages::find_coordinator_response::{Coordinator, FindCoordinatorResponse};
use kafka_protocol::messages::offset_commit_request::OffsetCommitRequest;
use kafka_protocol::messages::offset_commit_response::{
    OffsetCommitResponse, OffsetCommitResponsePartition, OffsetCommitResponseTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequest;
use kafka_protocol::messages::offset_fetch_response::{
    OffsetFetchResponse, OffsetFetchResponseGroup, OffsetFetchResponsePartition,
    OffsetFetchResponsePartitions, OffsetFetchResponseTopic, OffsetFetchResponseTopics,
};
use kafka_protocol::messages::{BrokerId, GroupId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Request, code};
use crate::storage::ReadError;
use crate::storage::groups::{GroupError, GroupOffsets, valid_group_name};

/// Kafka's answer codes for group errors.
const GROUP_MAX_SIZE_REACHED: i16 = 81;
const KAFKA_STORAGE_ERROR: i16 = 56;

pub async fn find_coordinator(
    broker: &Broker,
    ctx: &Request<'_>,
    req: FindCoordinatorRequest,
) -> FindCoordinatorResponse {
    let s = &broker.settings;
    let host = StrBytes::from_string(s.advertised_host.clone());
    let port = i32::from(s.advertised_port);
    if ctx.version >= 4 {
        let coordinators = req
            .coordinator_keys
            .into_iter()
            .map(|key| {
                Coordinator::default()
                    .with_key(key)
                    .with_node_id(BrokerId(0))
                    .with_host(host.clone())
                    .with_port(port)
            })
            .collect();
        return FindCoordinatorResponse::default().with_coordinators(coordinators);
    }
    FindCoordinatorResponse::default()
        .with_node_id(BrokerId(0))
        .with_host(host)
        .with_port(port)
}

fn group_code(e: &ReadError) -> i16 {
    match e {
        ReadError::Groups(GroupError::InvalidName(_)) => code::INVALID_GROUP_ID,
        ReadError::Groups(GroupError::TooMany(_)) => GROUP_MAX_SIZE_REACHED,
        _ => KAFKA_STORAGE_ERROR,
    }
}

pub async fn offset_commit(
    broker: &Broker,
    _ctx: &Request<'_>,
    req: OffsetCommitRequest,
) -> OffsetCommitResponse {
    let group = req.group_id.0.as_str().to_owned();
    // Check every partition; commit the valid ones together, durable before the answer.
    let mut answers: Vec<(TopicName, Vec<(i32, i16)>)> = Vec::new();
    let mut commits = Vec::new();
    for t in &req.topics {
        let name = t.name.0.as_str();
        let topic = broker.store.topic(name);
        let mut parts = Vec::new();
        for p in &t.partitions {
            let known = topic.as_ref().is_some_and(|t| {
                u32::try_from(p.partition_index).is_ok_and(|i| t.partition(i).is_some())
            });
            match (known, u64::try_from(p.committed_offset)) {
                (true, Ok(offset)) => {
                    commits.push((name.to_owned(), p.partition_index as u32, offset));
                    parts.push((p.partition_index, code::NONE));
                }
                (true, Err(_)) => parts.push((p.partition_index, code::OFFSET_OUT_OF_RANGE)),
                (false, _) => parts.push((p.partition_index, code::UNKNOWN_TOPIC_OR_PARTITION)),
            }
        }
        answers.push((t.name.clone(), parts));
    }
    let member = req.member_id.as_str();
    let failed = if !valid_group_name(&group) {
        Some(code::INVALID_GROUP_ID)
    } else if let Some(e) =
        super::coordinator::check_commit(broker, &group, member, req.generation_id_or_member_epoch)
    {
        Some(e)
    } else if commits.is_empty() {
        None
    } else {
        let now = tributary_common::timefmt::now_ms();
        match broker.store.commit(&group, commits, now).await {
            Ok(()) => None,
            Err(e) => {
                tracing::warn!(%group, error = %tributary_common::error::report(&e), "Kafka offset commit failed");
                Some(group_code(&e))
            }
        }
    };
    let topics = answers
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|(index, error)| {
                    let error = match (error, failed) {
                        (code::NONE, Some(f)) => f,
                        (e, _) => e,
                    };
                    OffsetCommitResponsePartition::default()
                        .with_partition_index(index)
                        .with_error_code(error)
                })
                .collect();
            OffsetCommitResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetCommitResponse::default().with_topics(topics)
}

/// Committed offset of `topic`/`partition` in `offsets`, or -1 (none).
fn committed(offsets: &GroupOffsets, topic: &str, partition: i32) -> i64 {
    u32::try_from(partition)
        .ok()
        .and_then(|p| offsets.get(&(topic.to_owned(), p)))
        .map_or(-1, |c| i64::try_from(c.offset).unwrap_or(i64::MAX))
}

/// The committed partitions of a group, by topic (what a null topic list asks).
fn all_committed(offsets: &GroupOffsets) -> BTreeMap<String, Vec<i32>> {
    let mut by_topic: BTreeMap<String, Vec<i32>> = BTreeMap::new();
    for (topic, partition) in offsets.keys() {
        by_topic
            .entry(topic.clone())
            .or_default()
            .push(i32::try_from(*partition).unwrap_or(i32::MAX));
    }
    by_topic
}

pub async fn offset_fetch(
    broker: &Broker,
    ctx: &Request<'_>,
    req: OffsetFetchRequest,
) -> OffsetFetchResponse {
    if ctx.version >= 8 {
        let groups = req
            .groups
            .into_iter()
            .map(|g| {
                let offsets = broker.store.group_offsets(g.group_id.0.as_str());
                let wanted: Vec<(TopicName, Vec<i32>)> = match g.topics {
                    Some(topics) => topics
                        .into_iter()
                        .map(|t| (t.name, t.partition_indexes))
                        .collect(),
                    None => all_committed(&offsets)
                        .into_iter()
                        .map(|(t, p)| (TopicName(StrBytes::from_string(t)), p))
                        .collect(),
                };
                let topics = wanted
                    .into_iter()
                    .map(|(name, parts)| {
                        let partitions = parts
                            .into_iter()
                            .map(|p| {
                                OffsetFetchResponsePartitions::default()
                                    .with_partition_index(p)
                                    .with_committed_offset(committed(&offsets, name.0.as_str(), p))
                                    .with_committed_leader_epoch(-1)
                            })
                            .collect();
                        OffsetFetchResponseTopics::default()
                            .with_name(name)
                            .with_partitions(partitions)
                    })
                    .collect();
                OffsetFetchResponseGroup::default()
                    .with_group_id(g.group_id)
                    .with_topics(topics)
            })
            .collect();
        return OffsetFetchResponse::default().with_groups(groups);
    }
    let group: GroupId = req.group_id;
    let offsets = broker.store.group_offsets(group.0.as_str());
    let wanted: Vec<(TopicName, Vec<i32>)> = match req.topics {
        Some(topics) => topics
            .into_iter()
            .map(|t| (t.name, t.partition_indexes))
            .collect(),
        None => all_committed(&offsets)
            .into_iter()
            .map(|(t, p)| (TopicName(StrBytes::from_string(t)), p))
            .collect(),
    };
    let topics = wanted
        .into_iter()
        .map(|(name, parts)| {
            let partitions = parts
                .into_iter()
                .map(|p| {
                    OffsetFetchResponsePartition::default()
                        .with_partition_index(p)
                        .with_committed_offset(committed(&offsets, name.0.as_str(), p))
                        .with_committed_leader_epoch(-1)
                })
                .collect();
            OffsetFetchResponseTopic::default()
                .with_name(name)
                .with_partitions(partitions)
        })
        .collect();
    OffsetFetchResponse::default().with_topics(topics)
}
