//! The Kafka output's producer: batches → Kafka record batches on the partitions'
//! leaders, acknowledged with `acks=all`.
//!
//! A record becomes a Kafka record with key = its source's identity
//! (`HOST:SOURCE_ID`, so one source always hashes to one partition and keeps its
//! order there), value = the message, timestamp = the record's time, and headers
//! `host`, `source`, one per field (strings as they are, other values as JSON),
//! `partial` when the line was cut, and `tributary.source_id` +
//! `tributary.offset`, the keys a collector reading the topic deduplicates on.
//! Partitions are chosen as Kafka's own clients do for keyed records
//! (murmur2 of the key), so any producer keyed the same way agrees.
//!
//! Metadata (partitions, leaders, broker addresses) is cached per topic and
//! refreshed when a broker answers that leadership moved; a topic the brokers do
//! not have is an error naming it (the output never creates topics).

use std::collections::HashMap;

use bytes::Bytes;
use kafka_protocol::messages::{
    MetadataRequest, MetadataResponse, ProduceRequest, ProduceResponse, TopicName,
    metadata_request::MetadataRequestTopic,
    produce_request::{PartitionProduceData, TopicProduceData},
};
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Compression;
use tributary_common::kafka::conn::{error_name, retriable_code};
use tributary_common::kafka::{Conn, ConnSettings, KafkaError};

pub mod encode;

/// Kafka's partitioner hash for keyed records (murmur2, as in the Java client).
pub fn murmur2(data: &[u8]) -> i32 {
    const M: i32 = 0x5bd1_e995;
    let mut h: i32 = 0x9747_b28c_u32 as i32 ^ data.len() as i32;
    let mut chunks = data.chunks_exact(4);
    for c in &mut chunks {
        let mut k = i32::from_le_bytes([c[0], c[1], c[2], c[3]]);
        k = k.wrapping_mul(M);
        k ^= ((k as u32) >> 24) as i32;
        k = k.wrapping_mul(M);
        h = h.wrapping_mul(M);
        h ^= k;
    }
    let rest = chunks.remainder();
    if rest.len() == 3 {
        h ^= i32::from(rest[2]) << 16;
    }
    if rest.len() >= 2 {
        h ^= i32::from(rest[1]) << 8;
    }
    if !rest.is_empty() {
        h ^= i32::from(rest[0]);
        h = h.wrapping_mul(M);
    }
    h ^= ((h as u32) >> 13) as i32;
    h = h.wrapping_mul(M);
    h ^= ((h as u32) >> 15) as i32;
    h
}

/// The partition of `key` among `n` (Kafka's default for keyed records).
pub fn partition_of(key: &[u8], n: usize) -> usize {
    ((murmur2(key) & 0x7fff_ffff) as usize) % n.max(1)
}

/// What the producer knows of a topic: each partition's leader.
#[derive(Debug, Clone)]
struct TopicMeta {
    leaders: Vec<i32>,
}

/// A producer for one agent: connections by broker address, metadata by topic.
pub struct Producer {
    bootstrap: Vec<String>,
    settings: ConnSettings,
    compression: Compression,
    /// How long a broker may take to have every replica acknowledge (less than
    /// the connection's call timeout, so that the broker's answer arrives).
    pub ack_timeout_ms: i32,
    /// The largest record batch the brokers accept (`message.max.bytes`).
    pub max_message_bytes: usize,
    nodes: HashMap<i32, String>,
    topics: HashMap<String, TopicMeta>,
    conns: HashMap<String, Conn>,
}

/// Produce attempts for one batch before the caller is told (and retries later).
const ATTEMPTS: usize = 5;

impl Producer {
    pub fn new(bootstrap: Vec<String>, settings: ConnSettings, compression: Compression) -> Self {
        let ack_timeout_ms = i32::try_from(settings.timeout.as_millis() / 2)
            .unwrap_or(5_000)
            .max(1_000);
        Producer {
            bootstrap,
            settings,
            compression,
            ack_timeout_ms,
            max_message_bytes: 1_000_000,
            nodes: HashMap::new(),
            topics: HashMap::new(),
            conns: HashMap::new(),
        }
    }

    async fn conn(&mut self, addr: &str) -> Result<&mut Conn, KafkaError> {
        if !self.conns.contains_key(addr) {
            let c = Conn::open(addr, &self.settings).await?;
            self.conns.insert(addr.to_owned(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| KafkaError::Protocol {
                addr: addr.to_owned(),
                what: "connection vanished".into(),
            })
    }

    /// Ask the brokers (known ones first, then the bootstrap list) about `topic`.
    async fn refresh(&mut self, topic: &str) -> Result<(), KafkaError> {
        let mut candidates: Vec<String> = self.conns.keys().cloned().collect();
        candidates.extend(self.bootstrap.iter().cloned());
        let mut last = None;
        for addr in candidates {
            match self.metadata_from(&addr, topic).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    if !matches!(e, KafkaError::Broker { .. }) {
                        // The connection is in an unknown state: never reuse it.
                        self.conns.remove(&addr);
                    }
                    if !e.retriable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| KafkaError::Protocol {
            addr: "-".into(),
            what: "no brokers configured (output.kafka.brokers)".into(),
        }))
    }

    async fn metadata_from(&mut self, addr: &str, topic: &str) -> Result<(), KafkaError> {
        let conn = self.conn(addr).await?;
        let v = conn.version::<MetadataRequest>(1..=9)?;
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]))
            .with_allow_auto_topic_creation(false);
        let r: MetadataResponse = conn.call_v(&req, v).await?;
        let addr = conn.addr().to_owned();
        for b in &r.brokers {
            self.nodes
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        let Some(t) = r
            .topics
            .iter()
            .find(|t| t.name.as_ref().is_some_and(|n| n.0.as_str() == topic))
        else {
            return Err(KafkaError::Protocol {
                addr,
                what: format!("no metadata for topic `{topic}` in the answer"),
            });
        };
        if t.error_code == 3 {
            return Err(KafkaError::Protocol {
                addr,
                what: format!(
                    "topic `{topic}` does not exist: create it on the cluster (the Kafka output never creates topics)"
                ),
            });
        }
        if t.error_code != 0 {
            return Err(KafkaError::Broker {
                addr,
                api: "Metadata",
                code: t.error_code,
                name: error_name(t.error_code),
                message: format!(" for topic `{topic}`"),
            });
        }
        let mut leaders = vec![-1; t.partitions.len()];
        for p in &t.partitions {
            if let Some(slot) = usize::try_from(p.partition_index)
                .ok()
                .and_then(|i| leaders.get_mut(i))
            {
                *slot = if p.error_code == 0 { p.leader_id.0 } else { -1 };
            }
        }
        if leaders.is_empty() {
            return Err(KafkaError::Protocol {
                addr,
                what: format!("topic `{topic}` has no partitions"),
            });
        }
        self.topics.insert(topic.to_owned(), TopicMeta { leaders });
        Ok(())
    }

    /// Number of partitions of `topic` (metadata fetched when unknown).
    pub async fn partitions(&mut self, topic: &str) -> Result<usize, KafkaError> {
        if !self.topics.contains_key(topic) {
            self.refresh(topic).await?;
        }
        Ok(self.topics.get(topic).map_or(0, |t| t.leaders.len()))
    }

    /// Produce the records of `payload` (our record blocks, uncompressed) to
    /// `topic`, each to its key's partition (see [`encode`]), and return once every
    /// partition's leader acknowledged with `acks=all`. A partition's records go
    /// in batches of at most `max_message_bytes`, one per partition per request,
    /// in order; a record that alone exceeds it cannot be stored by the brokers
    /// and is left out (counted in [`Sent::too_large`]). Leadership changes are
    /// followed (metadata refreshed, the partitions not yet acknowledged sent
    /// again); what still fails after a few attempts is returned, and sending the
    /// same records again later may duplicate those that did arrive, which the
    /// collector reading the topic removes.
    pub async fn send(&mut self, topic: &str, payload: &[u8]) -> Result<Sent, SendError> {
        let n = self.partitions(topic).await?;
        let enc = self.encoder().encode(payload, n)?;
        Ok(self.send_encoded(topic, enc).await?)
    }

    /// Partitions of `topic` as last known, without asking the brokers.
    pub fn known_partitions(&self, topic: &str) -> Option<usize> {
        self.topics.get(topic).map(|t| t.leaders.len())
    }

    /// What turns payloads into this producer's batches, to run on another thread.
    pub fn encoder(&self) -> Encoder {
        Encoder {
            max_message_bytes: self.max_message_bytes,
            compression: self.compression,
        }
    }

    /// [`Producer::send`] of batches already encoded for the topic's current
    /// number of partitions.
    pub async fn send_encoded(
        &mut self,
        topic: &str,
        enc: encode::Encoded,
    ) -> Result<Sent, KafkaError> {
        let mut sent = Sent {
            requests: 0,
            records: enc.records,
            too_large: enc.too_large,
            too_large_bytes: enc.too_large_bytes,
        };
        for round in enc.rounds {
            self.produce_all(topic, round.into_iter().collect()).await?;
            sent.requests += 1;
        }
        Ok(sent)
    }

    /// Produce one batch per partition, following leader changes, until every
    /// partition acknowledged or the attempts are used up.
    async fn produce_all(
        &mut self,
        topic: &str,
        mut encoded: HashMap<i32, Bytes>,
    ) -> Result<(), KafkaError> {
        let mut last = None;
        for attempt in 0..ATTEMPTS {
            if encoded.is_empty() {
                return Ok(());
            }
            if attempt > 0 {
                tokio::time::sleep(std::time::Duration::from_millis(100 << attempt.min(4))).await;
                if let Err(e) = self.refresh(topic).await {
                    if !e.retriable() {
                        return Err(e);
                    }
                    last = Some(e);
                    continue;
                }
            }
            let leaders = self
                .topics
                .get(topic)
                .map(|t| t.leaders.clone())
                .unwrap_or_default();
            let mut by_leader: HashMap<i32, Vec<i32>> = HashMap::new();
            for p in encoded.keys() {
                let leader = leaders.get(*p as usize).copied().unwrap_or(-1);
                by_leader.entry(leader).or_default().push(*p);
            }
            for (leader, parts) in by_leader {
                let Some(addr) = self.nodes.get(&leader).cloned() else {
                    last = Some(KafkaError::Broker {
                        addr: format!("node {leader}"),
                        api: "Metadata",
                        code: 5,
                        name: error_name(5),
                        message: format!(" for topic `{topic}` partitions {parts:?}"),
                    });
                    continue;
                };
                match self.produce_to(&addr, topic, &parts, &encoded).await {
                    Ok(done) => {
                        for p in done.ok {
                            encoded.remove(&p);
                        }
                        if let Some(e) = done.failed {
                            if !e.retriable() {
                                return Err(e);
                            }
                            last = Some(e);
                        }
                    }
                    Err(e) => {
                        self.conns.remove(&addr);
                        if !e.retriable() {
                            return Err(e);
                        }
                        last = Some(e);
                    }
                }
            }
        }
        if encoded.is_empty() {
            return Ok(());
        }
        Err(last.unwrap_or_else(|| KafkaError::Protocol {
            addr: "-".into(),
            what: format!("could not produce to `{topic}`"),
        }))
    }

    async fn produce_to(
        &mut self,
        addr: &str,
        topic: &str,
        parts: &[i32],
        encoded: &HashMap<i32, Bytes>,
    ) -> Result<Produced, KafkaError> {
        let timeout_ms = self.ack_timeout_ms;
        let conn = self.conn(addr).await?;
        let v = conn.version::<ProduceRequest>(3..=9)?;
        let data = parts
            .iter()
            .map(|p| {
                PartitionProduceData::default()
                    .with_index(*p)
                    .with_records(encoded.get(p).cloned())
            })
            .collect();
        let req = ProduceRequest::default()
            .with_acks(-1)
            .with_timeout_ms(timeout_ms)
            .with_topic_data(vec![
                TopicProduceData::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partition_data(data),
            ]);
        let r: ProduceResponse = conn.call_v(&req, v).await?;
        let mut out = Produced {
            ok: Vec::new(),
            failed: None,
        };
        for t in &r.responses {
            for p in &t.partition_responses {
                if p.error_code == 0 {
                    out.ok.push(p.index);
                } else if out.failed.is_none() || !retriable_code(p.error_code) {
                    out.failed = Some(KafkaError::Broker {
                        addr: addr.to_owned(),
                        api: "Produce",
                        code: p.error_code,
                        name: error_name(p.error_code),
                        message: format!(" for `{topic}` partition {}", p.index),
                    });
                }
            }
        }
        Ok(out)
    }
}

struct Produced {
    ok: Vec<i32>,
    failed: Option<KafkaError>,
}

/// A producer's batch settings, detached from it (see [`Producer::encoder`]).
#[derive(Debug, Clone, Copy)]
pub struct Encoder {
    max_message_bytes: usize,
    compression: Compression,
}

impl Encoder {
    /// `payload` as batches for a topic of `partitions` partitions.
    pub fn encode(
        &self,
        payload: &[u8],
        partitions: usize,
    ) -> Result<encode::Encoded, encode::EncodeError> {
        encode::encode(
            payload,
            partitions,
            self.max_message_bytes,
            self.compression,
        )
    }
}

/// Why [`Producer::send`] did not deliver.
#[derive(Debug, thiserror::Error)]
pub enum SendError {
    /// The payload cannot become Kafka batches: sending it again will not help.
    #[error(transparent)]
    Encode(#[from] encode::EncodeError),
    #[error(transparent)]
    Kafka(#[from] KafkaError),
}

/// What [`Producer::send`] did besides delivering.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Sent {
    /// Produce requests it took.
    pub requests: u32,
    /// Records delivered.
    pub records: u32,
    /// Records larger than `max_message_bytes`, left out.
    pub too_large: u32,
    /// The largest of them (bytes, as encoded).
    pub too_large_bytes: usize,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn murmur2_matches_the_java_client() {
        // Vectors from Kafka's own partitioner tests.
        for (key, want) in [
            (&b"21"[..], -973_932_308),
            (b"foobar", -790_332_482),
            (b"a-little-bit-long-string", -985_981_536),
            (b"a-little-bit-longer-string", -1_486_304_829),
            (
                b"lkjh234lh9fiuh90y23oiuhsafujhadof229phr9h19h89h8",
                -58_897_971,
            ),
            (b"abc", 479_470_107),
        ] {
            assert_eq!(murmur2(key), want, "{}", String::from_utf8_lossy(key));
        }
        assert!((0..4).contains(&partition_of(b"web-01:00000000000000ff", 4)));
    }
}
