//! What a source knows of a Kafka cluster: one connection per broker address,
//! the brokers by node id, and the subscribed topics' partitions and leaders
//! (Metadata, refreshed when a broker says leadership moved). Also the two
//! lookups of a partition or group: ListOffsets (earliest offset) and
//! FindCoordinator.

use std::collections::{BTreeMap, HashMap};

use kafka_protocol::messages::{
    FindCoordinatorRequest, FindCoordinatorResponse, ListOffsetsRequest, ListOffsetsResponse,
    MetadataRequest, MetadataResponse, TopicName,
    list_offsets_request::{ListOffsetsPartition, ListOffsetsTopic},
    metadata_request::MetadataRequestTopic,
};
use kafka_protocol::protocol::StrBytes;
use tributary_common::kafka::conn::error_name;
use tributary_common::kafka::{Conn, ConnSettings, KafkaError};

/// A topic as Metadata describes it.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct TopicMeta {
    /// Partition → leader node (-1: none now).
    pub leaders: BTreeMap<i32, i32>,
    /// The topic id (Kafka 2.8+), when the brokers give one.
    pub id: Option<[u8; 16]>,
    /// Why the brokers do not serve it, when they do not.
    pub missing: Option<String>,
}

/// Connections and metadata of one cluster.
pub struct Cluster {
    pub bootstrap: Vec<String>,
    pub settings: ConnSettings,
    conns: HashMap<String, Conn>,
    nodes: HashMap<i32, String>,
    pub topics: BTreeMap<String, TopicMeta>,
}

/// ListOffsets' timestamp for the earliest offset.
const EARLIEST: i64 = -2;

fn protocol(addr: &str, what: String) -> KafkaError {
    KafkaError::Protocol {
        addr: addr.to_owned(),
        what,
    }
}

impl Cluster {
    pub fn new(bootstrap: Vec<String>, settings: ConnSettings) -> Cluster {
        Cluster {
            bootstrap,
            settings,
            conns: HashMap::new(),
            nodes: HashMap::new(),
            topics: BTreeMap::new(),
        }
    }

    /// The open connection to `addr`, opened now if there is none.
    pub async fn conn(&mut self, addr: &str) -> Result<&mut Conn, KafkaError> {
        if !self.conns.contains_key(addr) {
            let c = Conn::open(addr, &self.settings).await?;
            self.conns.insert(addr.to_owned(), c);
        }
        self.conns
            .get_mut(addr)
            .ok_or_else(|| protocol(addr, "connection vanished".into()))
    }

    /// Forget the connection to `addr` (after an error on it).
    pub fn drop_conn(&mut self, addr: &str) {
        self.conns.remove(addr);
    }

    /// Forget every connection (the cluster went away).
    pub fn drop_all(&mut self) {
        self.conns.clear();
    }

    /// The address of node `id`.
    pub fn node(&self, id: i32) -> Option<&str> {
        self.nodes.get(&id).map(String::as_str)
    }

    /// The address of the leader of `topic`/`partition`, if known.
    pub fn leader(&self, topic: &str, partition: i32) -> Option<&str> {
        let id = *self.topics.get(topic)?.leaders.get(&partition)?;
        self.node(id)
    }

    /// Brokers to ask about the cluster: those connected first, then bootstrap.
    fn candidates(&self) -> Vec<String> {
        let mut v: Vec<String> = self.conns.keys().cloned().collect();
        for b in &self.bootstrap {
            if !v.contains(b) {
                v.push(b.clone());
            }
        }
        v
    }

    /// Refresh the metadata of `topics` from the first broker that answers.
    pub async fn refresh(&mut self, topics: &[String]) -> Result<(), KafkaError> {
        let mut last = None;
        for addr in self.candidates() {
            match self.metadata_from(&addr, topics).await {
                Ok(()) => return Ok(()),
                Err(e) => {
                    self.drop_conn(&addr);
                    if !e.retriable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| protocol("-", "no brokers configured".into())))
    }

    async fn metadata_from(&mut self, addr: &str, topics: &[String]) -> Result<(), KafkaError> {
        let conn = self.conn(addr).await?;
        let v = conn.version::<MetadataRequest>(1..=12)?;
        let mut req = MetadataRequest::default().with_topics(Some(
            topics
                .iter()
                .map(|t| {
                    MetadataRequestTopic::default()
                        .with_name(Some(TopicName(StrBytes::from_string(t.clone()))))
                })
                .collect(),
        ));
        if v >= 4 {
            req = req.with_allow_auto_topic_creation(false);
        }
        let r: MetadataResponse = conn.call_v(&req, v).await?;
        let from = conn.addr().to_owned();
        self.nodes.clear();
        for b in &r.brokers {
            self.nodes
                .insert(b.node_id.0, format!("{}:{}", b.host.as_str(), b.port));
        }
        for t in topics {
            let Some(m) = r
                .topics
                .iter()
                .find(|m| m.name.as_ref().is_some_and(|n| n.0.as_str() == t))
            else {
                self.topics.insert(
                    t.clone(),
                    TopicMeta {
                        missing: Some(format!("broker {from} did not describe topic `{t}`")),
                        ..TopicMeta::default()
                    },
                );
                continue;
            };
            let missing = match m.error_code {
                0 => None,
                3 => Some(format!(
                    "topic `{t}` does not exist on the Kafka cluster (asked {from}): create it, or fix sources[].kafka.topics"
                )),
                code => Some(format!(
                    "broker {from} answered Metadata for topic `{t}` with error {code} ({})",
                    error_name(code)
                )),
            };
            let id = (!m.topic_id.is_nil()).then(|| *m.topic_id.as_bytes());
            let leaders = m
                .partitions
                .iter()
                .map(|p| {
                    let leader = if p.error_code == 0 || p.error_code == 9 {
                        p.leader_id.0
                    } else {
                        -1
                    };
                    (p.partition_index, leader)
                })
                .collect();
            self.topics.insert(
                t.clone(),
                TopicMeta {
                    leaders,
                    id,
                    missing,
                },
            );
        }
        Ok(())
    }

    /// The address of the coordinator of `group`.
    pub async fn coordinator(&mut self, group: &str) -> Result<String, KafkaError> {
        let mut last = None;
        for addr in self.candidates() {
            match self.coordinator_from(&addr, group).await {
                Ok(a) => return Ok(a),
                Err(e) => {
                    if matches!(e, KafkaError::Io { .. } | KafkaError::Timeout { .. }) {
                        self.drop_conn(&addr);
                    }
                    if !e.retriable() {
                        return Err(e);
                    }
                    last = Some(e);
                }
            }
        }
        Err(last.unwrap_or_else(|| protocol("-", "no brokers configured".into())))
    }

    async fn coordinator_from(&mut self, addr: &str, group: &str) -> Result<String, KafkaError> {
        let conn = self.conn(addr).await?;
        let v = conn.version::<FindCoordinatorRequest>(0..=3)?;
        let mut req =
            FindCoordinatorRequest::default().with_key(StrBytes::from_string(group.into()));
        if v >= 1 {
            req = req.with_key_type(0);
        }
        let r: FindCoordinatorResponse = conn.call_v(&req, v).await?;
        conn.check(
            "FindCoordinator",
            r.error_code,
            r.error_message.as_ref().map(|m| m.as_str()),
        )?;
        if r.port <= 0 || r.host.is_empty() {
            return Err(protocol(
                addr,
                format!("FindCoordinator for group `{group}` named no broker"),
            ));
        }
        Ok(format!("{}:{}", r.host.as_str(), r.port))
    }

    /// The earliest offset of `topic`/`partition`, from its leader.
    pub async fn earliest(&mut self, topic: &str, partition: i32) -> Result<i64, KafkaError> {
        let Some(addr) = self.leader(topic, partition).map(str::to_owned) else {
            return Err(KafkaError::Broker {
                addr: "-".into(),
                api: "Metadata",
                code: 5,
                name: error_name(5),
                message: format!(": no leader known for `{topic}` partition {partition}"),
            });
        };
        let conn = match self.conn(&addr).await {
            Ok(c) => c,
            Err(e) => {
                self.drop_conn(&addr);
                return Err(e);
            }
        };
        let v = conn.version::<ListOffsetsRequest>(1..=7)?;
        let mut req = ListOffsetsRequest::default()
            .with_replica_id(kafka_protocol::messages::BrokerId(-1))
            .with_topics(vec![
                ListOffsetsTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_partitions(vec![
                        ListOffsetsPartition::default()
                            .with_partition_index(partition)
                            .with_timestamp(EARLIEST),
                    ]),
            ]);
        if v >= 2 {
            req = req.with_isolation_level(1);
        }
        let result: Result<ListOffsetsResponse, KafkaError> = conn.call_v(&req, v).await;
        let r = match result {
            Ok(r) => r,
            Err(e) => {
                self.drop_conn(&addr);
                return Err(e);
            }
        };
        let p = r
            .topics
            .iter()
            .filter(|t| t.name.0.as_str() == topic)
            .flat_map(|t| t.partitions.iter())
            .find(|p| p.partition_index == partition)
            .ok_or_else(|| {
                protocol(
                    &addr,
                    format!("ListOffsets did not answer for `{topic}` partition {partition}"),
                )
            })?;
        if p.error_code != 0 {
            return Err(KafkaError::Broker {
                addr,
                api: "ListOffsets",
                code: p.error_code,
                name: error_name(p.error_code),
                message: format!(" for `{topic}` partition {partition}"),
            });
        }
        Ok(p.offset.max(0))
    }
}
