//! Metadata: one broker (node 0) leading every partition of every topic, with
//! leader epoch -1 (so clients never ask OffsetForLeaderEpoch).

use kafka_protocol::messages::metadata_request::MetadataRequest;
use kafka_protocol::messages::metadata_response::{
    MetadataResponse, MetadataResponseBroker, MetadataResponsePartition, MetadataResponseTopic,
};
use kafka_protocol::messages::{BrokerId, TopicName};
use kafka_protocol::protocol::StrBytes;

use super::{Broker, Request, code};
use crate::storage::TopicReader;

/// "No authorized operations reported" (Kafka's INT32 minimum).
const OPERATIONS_UNKNOWN: i32 = i32::MIN;

pub async fn answer(broker: &Broker, ctx: &Request<'_>, req: MetadataRequest) -> MetadataResponse {
    let all = match &req.topics {
        None => true,
        // v0 has no null: an empty list means every topic.
        Some(t) => t.is_empty() && ctx.version == 0,
    };
    // Producers (and consumers that allow it) may create a topic by asking for
    // it, within the collector's topic rules (topics.auto_create, max_topics).
    let create = ctx.version < 4 || req.allow_auto_topic_creation;
    let topics: Vec<MetadataResponseTopic> = if all {
        broker.store.topics().iter().map(described).collect()
    } else {
        let mut out = Vec::new();
        for t in req.topics.unwrap_or_default() {
            let name = t.name.map(|n| n.0.as_str().to_owned()).unwrap_or_default();
            let mut found = broker.store.topic(&name);
            if found.is_none() && create && broker.writer.create_topic(&name).await.is_ok() {
                found = broker.store.topic(&name);
            }
            out.push(match found {
                Some(topic) => described(&topic),
                None => missing(name),
            });
        }
        out
    };
    let s = &broker.settings;
    MetadataResponse::default()
        .with_brokers(vec![
            MetadataResponseBroker::default()
                .with_node_id(BrokerId(0))
                .with_host(StrBytes::from_string(s.advertised_host.clone()))
                .with_port(i32::from(s.advertised_port)),
        ])
        .with_cluster_id(Some(StrBytes::from_static_str("tributary")))
        .with_controller_id(BrokerId(0))
        .with_topics(topics)
        .with_cluster_authorized_operations(OPERATIONS_UNKNOWN)
}

fn described(t: &TopicReader) -> MetadataResponseTopic {
    let partitions = t
        .partitions()
        .iter()
        .map(|p| {
            MetadataResponsePartition::default()
                .with_error_code(code::NONE)
                .with_partition_index(i32::try_from(p.id()).unwrap_or(i32::MAX))
                .with_leader_id(BrokerId(0))
                .with_leader_epoch(-1)
                .with_replica_nodes(vec![BrokerId(0)])
                .with_isr_nodes(vec![BrokerId(0)])
        })
        .collect();
    MetadataResponseTopic::default()
        .with_error_code(code::NONE)
        .with_name(Some(TopicName(StrBytes::from_string(t.name().to_owned()))))
        .with_partitions(partitions)
        .with_topic_authorized_operations(OPERATIONS_UNKNOWN)
}

fn missing(name: String) -> MetadataResponseTopic {
    let error = if tributary_common::names::valid_topic_name(&name) {
        code::UNKNOWN_TOPIC_OR_PARTITION
    } else {
        code::INVALID_TOPIC_EXCEPTION
    };
    MetadataResponseTopic::default()
        .with_error_code(error)
        .with_name(Some(TopicName(StrBytes::from_string(name))))
        .with_topic_authorized_operations(OPERATIONS_UNKNOWN)
}
