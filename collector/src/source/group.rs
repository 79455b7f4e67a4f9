//! Consumer group membership on the coordinator: JoinGroup (with the static
//! instance id, and MEMBER_ID_REQUIRED answered), the leader's range assignment
//! through SyncGroup, Heartbeat, OffsetFetch, OffsetCommit and LeaveGroup.
//! Requests go on the connection the caller holds to the coordinator; versions
//! are the newest both sides speak within modest ranges.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::join_group_request::JoinGroupRequestProtocol;
use kafka_protocol::messages::leave_group_request::MemberIdentity;
use kafka_protocol::messages::offset_commit_request::{
    OffsetCommitRequestPartition, OffsetCommitRequestTopic,
};
use kafka_protocol::messages::offset_fetch_request::OffsetFetchRequestTopic;
use kafka_protocol::messages::sync_group_request::SyncGroupRequestAssignment;
use kafka_protocol::messages::{
    GroupId, HeartbeatResponse, JoinGroupRequest, JoinGroupResponse, LeaveGroupRequest,
    LeaveGroupResponse, OffsetCommitRequest, OffsetCommitResponse, OffsetFetchRequest,
    OffsetFetchResponse, SyncGroupRequest, SyncGroupResponse, TopicName,
};
use kafka_protocol::protocol::StrBytes;
use tokio_util::sync::CancellationToken;
use tributary_common::error::report;
use tributary_common::kafka::conn::error_name;
use tributary_common::kafka::{Conn, ConnSettings, KafkaError};

use super::SourceError;
use super::assign::{self, Member};
use super::cluster::Cluster;
use super::settings::KafkaSource;

/// How long the coordinator waits for every member to join again in a
/// rebalance. The coordinator connection's timeout is longer than this, since
/// JoinGroup is answered only once the rebalance completes.
pub const REBALANCE_TIMEOUT: Duration = Duration::from_secs(30);

/// Group error codes that end a generation: join again.
pub const REBALANCE_IN_PROGRESS: i16 = 27;
pub const ILLEGAL_GENERATION: i16 = 22;
pub const UNKNOWN_MEMBER_ID: i16 = 25;
pub const MEMBER_ID_REQUIRED: i16 = 79;
pub const FENCED_INSTANCE_ID: i16 = 82;
const NOT_COORDINATOR: i16 = 16;
const COORDINATOR_NOT_AVAILABLE: i16 = 15;
const COORDINATOR_LOAD_IN_PROGRESS: i16 = 14;

/// Whether `code` means this member must join the group again.
pub fn ends_generation(code: i16) -> bool {
    matches!(
        code,
        REBALANCE_IN_PROGRESS
            | ILLEGAL_GENERATION
            | UNKNOWN_MEMBER_ID
            | FENCED_INSTANCE_ID
            | NOT_COORDINATOR
            | COORDINATOR_NOT_AVAILABLE
            | COORDINATOR_LOAD_IN_PROGRESS
    )
}

/// One generation of the group, as this member joined it.
#[derive(Debug, Clone)]
pub struct Generation {
    pub coordinator: String,
    pub member_id: String,
    pub id: i32,
    pub leader: bool,
    /// Ours: (topic, partition), sorted.
    pub assignment: Vec<(String, i32)>,
    /// Leader only: partitions per topic the assignment was computed from.
    pub counts: BTreeMap<String, i32>,
}

fn group_err(
    src: &KafkaSource,
    addr: &str,
    api: &'static str,
    code: i16,
    extra: &str,
) -> SourceError {
    if ends_generation(code) {
        return SourceError::Rejoin(format!(
            "{api} in group `{}` answered {} by {addr}",
            src.group,
            error_name(code)
        ));
    }
    SourceError::Kafka(KafkaError::Broker {
        addr: addr.to_owned(),
        api,
        code,
        name: error_name(code),
        message: format!(" in group `{}`{extra}", src.group),
    })
}

fn str_bytes(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

/// Join the group and get this member's assignment. `member_id` is kept across
/// generations (and set from MEMBER_ID_REQUIRED).
pub async fn join(
    conn: &mut Conn,
    cluster: &mut Cluster,
    src: &KafkaSource,
    member_id: &mut String,
) -> Result<Generation, SourceError> {
    let v = conn.version::<JoinGroupRequest>(1..=7)?;
    let addr = conn.addr().to_owned();
    let metadata = assign::subscription(&src.topics);
    let mut attempts = 0;
    let r: JoinGroupResponse = loop {
        attempts += 1;
        let mut req = JoinGroupRequest::default()
            .with_group_id(GroupId(str_bytes(&src.group)))
            .with_session_timeout_ms(src.session_timeout.as_millis() as i32)
            .with_rebalance_timeout_ms(REBALANCE_TIMEOUT.as_millis() as i32)
            .with_member_id(str_bytes(member_id))
            .with_protocol_type(StrBytes::from_static_str("consumer"))
            .with_protocols(vec![
                JoinGroupRequestProtocol::default()
                    .with_name(StrBytes::from_static_str(assign::RANGE))
                    .with_metadata(metadata.clone()),
            ]);
        if v >= 5 {
            req = req.with_group_instance_id(Some(str_bytes(&src.instance_id)));
        }
        let r: JoinGroupResponse = conn.call_v(&req, v).await?;
        match r.error_code {
            0 => break r,
            // KIP-394: the first join only learns its member id.
            MEMBER_ID_REQUIRED if attempts < 4 => *member_id = r.member_id.as_str().to_owned(),
            UNKNOWN_MEMBER_ID if attempts < 4 => member_id.clear(),
            26 => {
                return Err(SourceError::Kafka(KafkaError::Broker {
                    addr,
                    api: "JoinGroup",
                    code: 26,
                    name: "INVALID_SESSION_TIMEOUT",
                    message: format!(
                        ": the broker refuses session_timeout_ms {} ms for group `{}`: set {}.kafka.session_timeout_ms within the broker's group.min/max.session.timeout.ms",
                        src.session_timeout.as_millis(),
                        src.group,
                        src.name
                    ),
                }));
            }
            FENCED_INSTANCE_ID => {
                return Err(SourceError::Group(format!(
                    "coordinator {addr} fenced this collector out of group `{}`: another consumer joined with its instance id `{}` (another collector with the same host name and data_dir path?); give each collector its own data_dir or host name",
                    src.group, src.instance_id
                )));
            }
            code => return Err(group_err(src, &addr, "JoinGroup", code, "")),
        }
    };
    *member_id = r.member_id.as_str().to_owned();
    let leader = r.leader == r.member_id;
    if let Some(p) = &r.protocol_name
        && p.as_str() != assign::RANGE
    {
        return Err(SourceError::Group(format!(
            "group `{}` chose the assignor `{}`, not range: another kind of consumer shares this group name (give the source its own group)",
            src.group,
            p.as_str()
        )));
    }
    let mut counts = BTreeMap::new();
    let mut assignments = Vec::new();
    if leader {
        let mut members = Vec::new();
        for m in &r.members {
            let topics = match assign::parse_subscription(&m.metadata) {
                Ok(t) => t,
                Err(e) => {
                    tracing::warn!(group = %src.group, member = %m.member_id.as_str(), "member's subscription unreadable ({e}); it gets nothing");
                    Vec::new()
                }
            };
            members.push(Member {
                id: m.member_id.as_str().to_owned(),
                instance: m.group_instance_id.as_ref().map(|i| i.as_str().to_owned()),
                topics,
            });
        }
        let mut all: Vec<String> = members.iter().flat_map(|m| m.topics.clone()).collect();
        all.sort();
        all.dedup();
        cluster.refresh(&all).await?;
        for t in &all {
            if let Some(meta) = cluster.topics.get(t)
                && meta.missing.is_none()
            {
                counts.insert(t.clone(), meta.leaders.len() as i32);
            }
        }
        for (id, parts) in assign::range(&members, &counts) {
            assignments.push(
                SyncGroupRequestAssignment::default()
                    .with_member_id(str_bytes(&id))
                    .with_assignment(assign::assignment(&parts)),
            );
        }
    }
    let sv = conn.version::<SyncGroupRequest>(0..=5)?;
    let mut req = SyncGroupRequest::default()
        .with_group_id(GroupId(str_bytes(&src.group)))
        .with_generation_id(r.generation_id)
        .with_member_id(r.member_id.clone())
        .with_assignments(assignments);
    if sv >= 3 && v >= 5 {
        req = req.with_group_instance_id(Some(str_bytes(&src.instance_id)));
    }
    if sv >= 5 {
        req = req
            .with_protocol_type(Some(StrBytes::from_static_str("consumer")))
            .with_protocol_name(Some(StrBytes::from_static_str(assign::RANGE)));
    }
    let s: SyncGroupResponse = conn.call_v(&req, sv).await?;
    if s.error_code != 0 {
        return Err(group_err(src, &addr, "SyncGroup", s.error_code, ""));
    }
    let assignment: Vec<(String, i32)> = assign::parse_assignment(&s.assignment)
        .map_err(|e| SourceError::Group(format!("group `{}`: {e}", src.group)))?
        .into_iter()
        .filter(|(t, _)| src.topics.contains(t))
        .collect();
    Ok(Generation {
        coordinator: addr,
        member_id: member_id.clone(),
        id: r.generation_id,
        leader,
        assignment,
        counts,
    })
}

/// The committed offsets of `parts` (-1: none committed).
pub async fn committed(
    conn: &mut Conn,
    src: &KafkaSource,
    parts: &[(String, i32)],
) -> Result<BTreeMap<(String, i32), i64>, SourceError> {
    let v = conn.version::<OffsetFetchRequest>(1..=7)?;
    let addr = conn.addr().to_owned();
    let mut topics: BTreeMap<&str, Vec<i32>> = BTreeMap::new();
    for (t, p) in parts {
        topics.entry(t).or_default().push(*p);
    }
    let req = OffsetFetchRequest::default()
        .with_group_id(GroupId(str_bytes(&src.group)))
        .with_topics(Some(
            topics
                .iter()
                .map(|(t, ps)| {
                    OffsetFetchRequestTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partition_indexes(ps.clone())
                })
                .collect(),
        ));
    let r: OffsetFetchResponse = conn.call_v(&req, v).await?;
    if v >= 2 && r.error_code != 0 {
        return Err(group_err(src, &addr, "OffsetFetch", r.error_code, ""));
    }
    let mut out = BTreeMap::new();
    for t in &r.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(group_err(
                    src,
                    &addr,
                    "OffsetFetch",
                    p.error_code,
                    &format!(
                        " for `{}` partition {}",
                        t.name.0.as_str(),
                        p.partition_index
                    ),
                ));
            }
            out.insert(
                (t.name.0.as_str().to_owned(), p.partition_index),
                p.committed_offset,
            );
        }
    }
    Ok(out)
}

/// Commit `offsets` (the next offset to read, per partition) for `generation`.
pub async fn commit(
    conn: &mut Conn,
    src: &KafkaSource,
    generation: &Generation,
    offsets: &BTreeMap<(String, i32), i64>,
) -> Result<(), SourceError> {
    if offsets.is_empty() {
        return Ok(());
    }
    let v = conn.version::<OffsetCommitRequest>(2..=7)?;
    let addr = conn.addr().to_owned();
    let mut topics: BTreeMap<&str, Vec<OffsetCommitRequestPartition>> = BTreeMap::new();
    for ((t, p), o) in offsets {
        let mut part = OffsetCommitRequestPartition::default()
            .with_partition_index(*p)
            .with_committed_offset(*o)
            .with_committed_metadata(Some(StrBytes::from_static_str("")));
        if v >= 6 {
            part = part.with_committed_leader_epoch(-1);
        }
        topics.entry(t).or_default().push(part);
    }
    let mut req = OffsetCommitRequest::default()
        .with_group_id(GroupId(str_bytes(&src.group)))
        .with_generation_id_or_member_epoch(generation.id)
        .with_member_id(str_bytes(&generation.member_id))
        .with_topics(
            topics
                .into_iter()
                .map(|(t, ps)| {
                    OffsetCommitRequestTopic::default()
                        .with_name(TopicName(str_bytes(t)))
                        .with_partitions(ps)
                })
                .collect(),
        );
    if v <= 4 {
        // Keep the offsets as long as the broker's own retention says.
        req = req.with_retention_time_ms(-1);
    }
    if v >= 7 {
        req = req.with_group_instance_id(Some(str_bytes(&src.instance_id)));
    }
    let r: OffsetCommitResponse = conn.call_v(&req, v).await?;
    for t in &r.topics {
        for p in &t.partitions {
            if p.error_code != 0 {
                return Err(group_err(
                    src,
                    &addr,
                    "OffsetCommit",
                    p.error_code,
                    &format!(
                        " for `{}` partition {}",
                        t.name.0.as_str(),
                        p.partition_index
                    ),
                ));
            }
        }
    }
    Ok(())
}

/// One heartbeat for `generation`.
pub async fn heartbeat(
    conn: &mut Conn,
    src: &KafkaSource,
    generation: &Generation,
) -> Result<(), SourceError> {
    let v = conn.version::<HeartbeatRequest>(0..=4)?;
    let mut req = HeartbeatRequest::default()
        .with_group_id(GroupId(str_bytes(&src.group)))
        .with_generation_id(generation.id)
        .with_member_id(str_bytes(&generation.member_id));
    if v >= 3 {
        req = req.with_group_instance_id(Some(str_bytes(&src.instance_id)));
    }
    let r: HeartbeatResponse = conn.call_v(&req, v).await?;
    if r.error_code != 0 {
        return Err(group_err(src, conn.addr(), "Heartbeat", r.error_code, ""));
    }
    Ok(())
}

/// Leave the group (its partitions go to the other members at once).
pub async fn leave(conn: &mut Conn, src: &KafkaSource, member_id: &str) -> Result<(), SourceError> {
    let v = conn.version::<LeaveGroupRequest>(0..=4)?;
    let mut req = LeaveGroupRequest::default().with_group_id(GroupId(str_bytes(&src.group)));
    if v >= 3 {
        req = req.with_members(vec![
            MemberIdentity::default()
                .with_member_id(str_bytes(member_id))
                .with_group_instance_id(Some(str_bytes(&src.instance_id))),
        ]);
    } else {
        req = req.with_member_id(str_bytes(member_id));
    }
    let r: LeaveGroupResponse = conn.call_v(&req, v).await?;
    let code = if r.error_code != 0 {
        r.error_code
    } else {
        r.members
            .iter()
            .map(|m| m.error_code)
            .find(|c| *c != 0)
            .unwrap_or(0)
    };
    // Already gone (expired, or the group moved on): nothing to leave.
    if code != 0 && code != UNKNOWN_MEMBER_ID {
        return Err(group_err(src, conn.addr(), "LeaveGroup", code, ""));
    }
    Ok(())
}

/// Heartbeats for `generation` every third of the session timeout (at most every
/// 3 s), on their own connection, until aborted. When the group moves on
/// (rebalance, expiry) or no heartbeat got through for a whole session timeout,
/// it says why and cancels `over`.
pub async fn heartbeats(
    src: Arc<KafkaSource>,
    settings: ConnSettings,
    generation: Generation,
    over: CancellationToken,
    why: Arc<Mutex<String>>,
) {
    let interval = (src.session_timeout / 3).min(Duration::from_secs(3));
    let mut conn: Option<Conn> = None;
    let mut last_ok = Instant::now();
    let end = |text: String| {
        if let Ok(mut w) = why.lock() {
            *w = text;
        }
        over.cancel();
    };
    loop {
        tokio::time::sleep(interval).await;
        let result = async {
            if conn.is_none() {
                conn = Some(Conn::open(&generation.coordinator, &settings).await?);
            }
            match conn.as_mut() {
                Some(c) => heartbeat(c, &src, &generation).await,
                None => Ok(()),
            }
        }
        .await;
        match result {
            Ok(()) => last_ok = Instant::now(),
            Err(SourceError::Rejoin(text)) => return end(text),
            Err(e) => {
                conn = None;
                tracing::debug!(source = %src.name, "heartbeat failed: {}", report(&e));
                if last_ok.elapsed() >= src.session_timeout {
                    return end(format!(
                        "no heartbeat got through for {:?} (the session timeout): {}",
                        src.session_timeout,
                        report(&e)
                    ));
                }
            }
        }
    }
}
