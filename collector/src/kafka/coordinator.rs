//! Classic consumer-group membership: JoinGroup, SyncGroup, Heartbeat, LeaveGroup,
//! ListGroups, DescribeGroups.
//!
//! A group moves Empty → PreparingRebalance (members (re)join; those already in
//! learn of it from Heartbeat's `REBALANCE_IN_PROGRESS`) → CompletingRebalance (a
//! new generation; the leader, one of the members, computes the assignment from
//! every member's metadata) → Stable (SyncGroup relays each member its part). A
//! rebalance completes when every member has rejoined or its rebalance timeout
//! passes (the stragglers are dropped). A member that sends no heartbeat within its
//! session timeout, or leaves, starts a new rebalance. Membership lives in memory:
//! after a restart members rejoin (their next heartbeat answers
//! `UNKNOWN_MEMBER_ID`) and resume at the offsets committed in the store.

use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

use bytes::Bytes;
use kafka_protocol::messages::GroupId;
use kafka_protocol::messages::describe_groups_request::DescribeGroupsRequest;
use kafka_protocol::messages::describe_groups_response::{
    DescribeGroupsResponse, DescribedGroup, DescribedGroupMember,
};
use kafka_protocol::messages::heartbeat_request::HeartbeatRequest;
use kafka_protocol::messages::heartbeat_response::HeartbeatResponse;
use kafka_protocol::messages::join_group_request::JoinGroupRequest;
use kafka_protocol::messages::join_group_response::{JoinGroupResponse, JoinGroupResponseMember};
use kafka_protocol::messages::leave_group_request::LeaveGroupRequest;
use kafka_protocol::messages::leave_group_response::{LeaveGroupResponse, MemberResponse};
use kafka_protocol::messages::list_groups_request::ListGroupsRequest;
use kafka_protocol::messages::list_groups_response::{ListGroupsResponse, ListedGroup};
use kafka_protocol::messages::sync_group_request::SyncGroupRequest;
use kafka_protocol::messages::sync_group_response::SyncGroupResponse;
use kafka_protocol::protocol::StrBytes;
use tokio::sync::watch;
use tokio::time::Instant;

use super::{Broker, Request, code};
use crate::storage::groups::valid_group_name;

const ILLEGAL_GENERATION: i16 = 22;
const INCONSISTENT_GROUP_PROTOCOL: i16 = 23;
const UNKNOWN_MEMBER_ID: i16 = 25;
const INVALID_SESSION_TIMEOUT: i16 = 26;
const REBALANCE_IN_PROGRESS: i16 = 27;
const GROUP_MAX_SIZE_REACHED: i16 = 81;

/// Session timeouts accepted (Kafka's broker defaults).
const MIN_SESSION: Duration = Duration::from_secs(1);
const MAX_SESSION: Duration = Duration::from_secs(1800);
/// Most members per group, members in all groups, and groups with members at
/// once; most bytes of protocol metadata one member may register. Together they
/// bound what group membership can hold, whatever clients send.
const MAX_MEMBERS: usize = 1000;
const MAX_MEMBERS_TOTAL: usize = 20_000;
const MAX_ACTIVE_GROUPS: usize = 10_000;
const MAX_METADATA_BYTES: usize = 16 << 10;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum State {
    Empty,
    PreparingRebalance,
    CompletingRebalance,
    Stable,
}

impl State {
    fn name(self) -> &'static str {
        match self {
            State::Empty => "Empty",
            State::PreparingRebalance => "PreparingRebalance",
            State::CompletingRebalance => "CompletingRebalance",
            State::Stable => "Stable",
        }
    }
}

struct Member {
    client_id: String,
    client_host: String,
    session: Duration,
    rebalance: Duration,
    protocols: Vec<(String, Bytes)>,
    last_seen: Instant,
    /// Rejoined in the current rebalance.
    joined: bool,
    /// In a JoinGroup call now: counts as rejoined for any rebalance that starts.
    awaiting: bool,
    assignment: Bytes,
}

struct Group {
    state: State,
    generation: i32,
    protocol_type: String,
    protocol: Option<String>,
    leader: Option<String>,
    members: BTreeMap<String, Member>,
    /// When the current rebalance gives up on members that did not rejoin.
    deadline: Instant,
    /// Bumped on every state change; joins and syncs wait on it.
    changed: watch::Sender<u64>,
}

impl Group {
    fn new() -> Group {
        Group {
            state: State::Empty,
            generation: 0,
            protocol_type: String::new(),
            protocol: None,
            leader: None,
            members: BTreeMap::new(),
            deadline: Instant::now(),
            changed: watch::channel(0).0,
        }
    }

    fn notify(&self) {
        self.changed.send_modify(|v| *v = v.wrapping_add(1));
    }

    /// Start a rebalance: every member must join again.
    fn prepare(&mut self) {
        if self.state == State::PreparingRebalance {
            return;
        }
        self.state = State::PreparingRebalance;
        let longest = self
            .members
            .values()
            .map(|m| m.rebalance)
            .max()
            .unwrap_or(Duration::from_secs(60));
        self.deadline = Instant::now() + longest;
        for m in self.members.values_mut() {
            m.joined = m.awaiting;
        }
        self.notify();
    }

    /// Complete the rebalance when every member joined, or the deadline passed
    /// (dropping those that did not).
    fn try_complete(&mut self, now: Instant) {
        if self.state != State::PreparingRebalance {
            return;
        }
        let all = self.members.values().all(|m| m.joined);
        if !all && now < self.deadline {
            return;
        }
        self.members.retain(|_, m| m.joined);
        if self.members.is_empty() {
            self.state = State::Empty;
            self.leader = None;
            self.protocol = None;
            self.generation += 1;
            self.notify();
            return;
        }
        self.generation += 1;
        if self
            .leader
            .as_ref()
            .is_none_or(|l| !self.members.contains_key(l))
        {
            self.leader = self.members.keys().next().cloned();
        }
        // The leader's first protocol that every member speaks.
        let leader = self.leader.as_ref().and_then(|l| self.members.get(l));
        self.protocol = leader.and_then(|l| {
            l.protocols
                .iter()
                .map(|(name, _)| name)
                .find(|name| {
                    self.members
                        .values()
                        .all(|m| m.protocols.iter().any(|(n, _)| n == *name))
                })
                .cloned()
        });
        for m in self.members.values_mut() {
            m.assignment = Bytes::new();
            m.last_seen = now;
        }
        self.state = State::CompletingRebalance;
        self.notify();
    }

    /// Drop members whose session expired; a rebalance follows.
    fn expire(&mut self, now: Instant) {
        let before = self.members.len();
        self.members.retain(|_, m| {
            // A member waiting in a join is alive.
            (self.state == State::PreparingRebalance && m.joined) || now < m.last_seen + m.session
        });
        if self.members.len() != before {
            if self.members.is_empty() && self.state != State::PreparingRebalance {
                self.state = State::Empty;
                self.leader = None;
                self.notify();
            } else {
                self.prepare();
            }
        }
        self.try_complete(now);
    }
}

/// Every group with members, by name.
#[derive(Default)]
pub struct Coordinator {
    groups: Mutex<HashMap<String, Group>>,
    next_member: std::sync::atomic::AtomicU64,
}

impl Coordinator {
    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Group>> {
        self.groups.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// Expire sessions in every group (called periodically).
    pub fn tick(&self) {
        let now = Instant::now();
        let mut groups = self.lock();
        for g in groups.values_mut() {
            g.expire(now);
        }
        groups.retain(|_, g| !(g.state == State::Empty && g.members.is_empty()));
    }
}

fn text(s: &str) -> StrBytes {
    StrBytes::from_string(s.to_owned())
}

pub async fn join_group(
    broker: &Broker,
    ctx: &Request<'_>,
    req: JoinGroupRequest,
) -> JoinGroupResponse {
    let group_id = req.group_id.0.as_str().to_owned();
    let fail = |error: i16| {
        JoinGroupResponse::default()
            .with_error_code(error)
            .with_generation_id(-1)
            .with_member_id(req.member_id.clone())
    };
    if !valid_group_name(&group_id) {
        return fail(code::INVALID_GROUP_ID);
    }
    let session = Duration::from_millis(u64::try_from(req.session_timeout_ms).unwrap_or(0));
    if !(MIN_SESSION..=MAX_SESSION).contains(&session) {
        return fail(INVALID_SESSION_TIMEOUT);
    }
    let rebalance = Duration::from_millis(u64::try_from(req.rebalance_timeout_ms).unwrap_or(0))
        .max(session)
        .min(MAX_SESSION);
    let coordinator = &broker.coordinator;
    let (member_id, mut changed) = {
        let mut groups = coordinator.lock();
        if !groups.contains_key(&group_id) && groups.len() >= MAX_ACTIVE_GROUPS {
            return fail(GROUP_MAX_SIZE_REACHED);
        }
        let total: usize = groups.values().map(|g| g.members.len()).sum();
        let metadata: usize = req
            .protocols
            .iter()
            .map(|p| p.name.len() + p.metadata.len())
            .sum();
        if metadata > MAX_METADATA_BYTES {
            return fail(INCONSISTENT_GROUP_PROTOCOL);
        }
        let g = groups.entry(group_id.clone()).or_insert_with(Group::new);
        let mut member_id = req.member_id.as_str().to_owned();
        if !member_id.is_empty() && !g.members.contains_key(&member_id) {
            return fail(UNKNOWN_MEMBER_ID);
        }
        if member_id.is_empty() {
            if g.members.len() >= MAX_MEMBERS || total >= MAX_MEMBERS_TOTAL {
                return fail(GROUP_MAX_SIZE_REACHED);
            }
            let n = coordinator
                .next_member
                .fetch_add(1, std::sync::atomic::Ordering::Relaxed);
            member_id = format!("{}-{n}", ctx.client);
        }
        let protocols: Vec<(String, Bytes)> = req
            .protocols
            .iter()
            .map(|p| (p.name.as_str().to_owned(), p.metadata.clone()))
            .collect();
        let type_ok = g.members.is_empty() || g.protocol_type == req.protocol_type.as_str();
        let speaks_common = g.members.iter().all(|(id, m)| {
            *id == member_id
                || m.protocols
                    .iter()
                    .any(|(n, _)| protocols.iter().any(|(p, _)| p == n))
        });
        if !type_ok || !speaks_common || protocols.is_empty() {
            return fail(INCONSISTENT_GROUP_PROTOCOL);
        }
        g.protocol_type = req.protocol_type.as_str().to_owned();
        let now = Instant::now();
        let changed_metadata = g
            .members
            .get(&member_id)
            .is_none_or(|m| m.protocols != protocols);
        g.members.insert(
            member_id.clone(),
            Member {
                client_id: ctx.client.to_owned(),
                client_host: ctx.peer.ip().to_string(),
                session,
                rebalance,
                protocols,
                last_seen: now,
                joined: true,
                awaiting: true,
                assignment: Bytes::new(),
            },
        );
        // A new member or new metadata means a new assignment; a member of a
        // stable group rejoining with the same metadata also gets one (clients
        // rejoin when they want a rebalance).
        if g.state != State::PreparingRebalance || changed_metadata {
            g.prepare();
        }
        g.try_complete(now);
        (member_id, g.changed.subscribe())
    };
    // Wait for the rebalance to complete.
    loop {
        let deadline = {
            let mut groups = coordinator.lock();
            let Some(g) = groups.get_mut(&group_id) else {
                return fail(UNKNOWN_MEMBER_ID);
            };
            let now = Instant::now();
            g.try_complete(now);
            if g.state != State::PreparingRebalance {
                match g.members.get_mut(&member_id) {
                    Some(m) => m.awaiting = false,
                    None => return fail(UNKNOWN_MEMBER_ID),
                }
                let leader = g.leader.clone().unwrap_or_default();
                let protocol = g.protocol.clone().unwrap_or_default();
                let members = if leader == member_id {
                    g.members
                        .iter()
                        .map(|(id, m)| {
                            let metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == protocol)
                                .map(|(_, md)| md.clone())
                                .unwrap_or_default();
                            JoinGroupResponseMember::default()
                                .with_member_id(text(id))
                                .with_metadata(metadata)
                        })
                        .collect()
                } else {
                    Vec::new()
                };
                return JoinGroupResponse::default()
                    .with_generation_id(g.generation)
                    .with_protocol_type(Some(text(&g.protocol_type)))
                    .with_protocol_name(Some(text(&protocol)))
                    .with_leader(text(&leader))
                    .with_member_id(text(&member_id))
                    .with_members(members);
            }
            g.deadline
        };
        tokio::select! {
            _ = tokio::time::timeout_at(deadline, changed.changed()) => {}
            _ = broker.shutdown.cancelled() => return fail(code::COORDINATOR_NOT_AVAILABLE),
        }
    }
}

pub async fn sync_group(
    broker: &Broker,
    _ctx: &Request<'_>,
    req: SyncGroupRequest,
) -> SyncGroupResponse {
    let group_id = req.group_id.0.as_str().to_owned();
    let member_id = req.member_id.as_str().to_owned();
    let coordinator = &broker.coordinator;
    let mut changed = {
        let mut groups = coordinator.lock();
        let Some(g) = groups.get_mut(&group_id) else {
            return SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
        };
        if !g.members.contains_key(&member_id) {
            return SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
        }
        if req.generation_id != g.generation {
            return SyncGroupResponse::default().with_error_code(ILLEGAL_GENERATION);
        }
        if g.state == State::PreparingRebalance {
            return SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS);
        }
        if g.state == State::CompletingRebalance && g.leader.as_deref() == Some(&member_id) {
            for a in &req.assignments {
                if let Some(m) = g.members.get_mut(a.member_id.as_str()) {
                    m.assignment = a.assignment.clone();
                }
            }
            g.state = State::Stable;
            g.notify();
        }
        g.changed.subscribe()
    };
    let generation = req.generation_id;
    let deadline = Instant::now() + MAX_SESSION;
    loop {
        {
            let groups = coordinator.lock();
            let Some(g) = groups.get(&group_id) else {
                return SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
            };
            let Some(m) = g.members.get(&member_id) else {
                return SyncGroupResponse::default().with_error_code(UNKNOWN_MEMBER_ID);
            };
            if g.generation != generation || g.state == State::PreparingRebalance {
                return SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS);
            }
            if g.state == State::Stable {
                return SyncGroupResponse::default()
                    .with_protocol_type(Some(text(&g.protocol_type)))
                    .with_protocol_name(g.protocol.as_deref().map(text))
                    .with_assignment(m.assignment.clone());
            }
        }
        let woken = tokio::select! {
            r = tokio::time::timeout_at(deadline, changed.changed()) => r.is_ok(),
            _ = broker.shutdown.cancelled() => false,
        };
        if !woken {
            return SyncGroupResponse::default().with_error_code(REBALANCE_IN_PROGRESS);
        }
    }
}

pub async fn heartbeat(
    broker: &Broker,
    _ctx: &Request<'_>,
    req: HeartbeatRequest,
) -> HeartbeatResponse {
    let mut groups = broker.coordinator.lock();
    let now = Instant::now();
    let error = match groups.get_mut(req.group_id.0.as_str()) {
        None => UNKNOWN_MEMBER_ID,
        Some(g) => {
            g.expire(now);
            match g.members.get_mut(req.member_id.as_str()) {
                None => UNKNOWN_MEMBER_ID,
                Some(m) => {
                    m.last_seen = now;
                    if g.state == State::PreparingRebalance {
                        REBALANCE_IN_PROGRESS
                    } else if req.generation_id != g.generation {
                        ILLEGAL_GENERATION
                    } else {
                        code::NONE
                    }
                }
            }
        }
    };
    HeartbeatResponse::default().with_error_code(error)
}

pub async fn leave_group(
    broker: &Broker,
    ctx: &Request<'_>,
    req: LeaveGroupRequest,
) -> LeaveGroupResponse {
    let leaving: Vec<String> = if ctx.version >= 3 {
        req.members
            .iter()
            .map(|m| m.member_id.as_str().to_owned())
            .collect()
    } else {
        vec![req.member_id.as_str().to_owned()]
    };
    let mut groups = broker.coordinator.lock();
    let mut answers = Vec::new();
    let mut any = false;
    if let Some(g) = groups.get_mut(req.group_id.0.as_str()) {
        for id in &leaving {
            let gone = g.members.remove(id).is_some();
            any |= gone;
            answers.push(
                MemberResponse::default()
                    .with_member_id(text(id))
                    .with_error_code(if gone { code::NONE } else { UNKNOWN_MEMBER_ID }),
            );
        }
        if any {
            if g.members.is_empty() {
                g.state = State::Empty;
                g.leader = None;
                g.generation += 1;
                g.notify();
            } else {
                g.prepare();
                g.try_complete(Instant::now());
            }
        }
    }
    let error = if any || ctx.version >= 3 {
        code::NONE
    } else {
        UNKNOWN_MEMBER_ID
    };
    // v0-2 have no member list (the encoder refuses one).
    let answers = if ctx.version >= 3 {
        answers
    } else {
        Vec::new()
    };
    LeaveGroupResponse::default()
        .with_error_code(error)
        .with_members(answers)
}

pub async fn list_groups(
    broker: &Broker,
    _ctx: &Request<'_>,
    _req: ListGroupsRequest,
) -> ListGroupsResponse {
    let mut listed: BTreeMap<String, (String, &'static str)> = broker
        .store
        .group_names()
        .into_iter()
        .map(|g| (g, ("consumer".to_owned(), "Empty")))
        .collect();
    for (name, g) in broker.coordinator.lock().iter() {
        listed.insert(name.clone(), (g.protocol_type.clone(), g.state.name()));
    }
    let groups = listed
        .into_iter()
        .map(|(name, (ptype, state))| {
            ListedGroup::default()
                .with_group_id(GroupId(text(&name)))
                .with_protocol_type(text(&ptype))
                .with_group_state(text(state))
                .with_group_type(text("classic"))
        })
        .collect();
    ListGroupsResponse::default().with_groups(groups)
}

pub async fn describe_groups(
    broker: &Broker,
    _ctx: &Request<'_>,
    req: DescribeGroupsRequest,
) -> DescribeGroupsResponse {
    let groups = broker.coordinator.lock();
    let described = req
        .groups
        .into_iter()
        .map(|id| {
            let base = DescribedGroup::default()
                .with_group_id(id.clone())
                .with_authorized_operations(i32::MIN);
            match groups.get(id.0.as_str()) {
                None => base.with_group_state(text(State::Empty.name())),
                Some(g) => {
                    let protocol = g.protocol.clone().unwrap_or_default();
                    let members = g
                        .members
                        .iter()
                        .map(|(mid, m)| {
                            let metadata = m
                                .protocols
                                .iter()
                                .find(|(n, _)| *n == protocol)
                                .map(|(_, md)| md.clone())
                                .unwrap_or_default();
                            DescribedGroupMember::default()
                                .with_member_id(text(mid))
                                .with_client_id(text(&m.client_id))
                                .with_client_host(text(&m.client_host))
                                .with_member_metadata(metadata)
                                .with_member_assignment(m.assignment.clone())
                        })
                        .collect();
                    base.with_group_state(text(g.state.name()))
                        .with_protocol_type(text(&g.protocol_type))
                        .with_protocol_data(text(&protocol))
                        .with_members(members)
                }
            }
        })
        .collect();
    DescribeGroupsResponse::default().with_groups(described)
}

/// Whether `member` of `group` may commit for `generation` (-1: a commit outside
/// any group membership, always allowed): the error code otherwise.
pub fn check_commit(broker: &Broker, group: &str, member: &str, generation: i32) -> Option<i16> {
    if generation < 0 {
        return None;
    }
    let groups = broker.coordinator.lock();
    let Some(g) = groups.get(group) else {
        return Some(UNKNOWN_MEMBER_ID);
    };
    if !g.members.contains_key(member) {
        return Some(UNKNOWN_MEMBER_ID);
    }
    if g.generation != generation {
        return Some(ILLEGAL_GENERATION);
    }
    // As Kafka's coordinator: while the group prepares a rebalance, members of the
    // current generation may still commit (what they consumed, before they rejoin
    // and their partitions move); once the new generation is formed and waits for
    // its assignment, commits of the old one are refused.
    if g.state == State::CompletingRebalance {
        return Some(REBALANCE_IN_PROGRESS);
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    fn member(session_ms: u64, joined: bool, protocols: &[&str]) -> Member {
        Member {
            client_id: "c".into(),
            client_host: "127.0.0.1".into(),
            session: Duration::from_millis(session_ms),
            rebalance: Duration::from_millis(session_ms),
            protocols: protocols
                .iter()
                .map(|p| ((*p).to_owned(), Bytes::from_static(b"md")))
                .collect(),
            last_seen: Instant::now(),
            joined,
            awaiting: joined,
            assignment: Bytes::new(),
        }
    }

    #[test]
    fn a_rebalance_completes_when_everyone_rejoined_with_a_common_protocol() {
        let mut g = Group::new();
        g.members
            .insert("a".into(), member(10_000, true, &["range", "roundrobin"]));
        g.prepare();
        g.members
            .insert("b".into(), member(10_000, true, &["roundrobin"]));
        let now = Instant::now();
        g.try_complete(now);
        assert_eq!(g.state, State::CompletingRebalance);
        assert_eq!(g.generation, 1);
        assert_eq!(g.leader.as_deref(), Some("a"));
        assert_eq!(
            g.protocol.as_deref(),
            Some("roundrobin"),
            "the one both speak"
        );
    }

    #[test]
    fn members_that_do_not_rejoin_are_dropped_at_the_deadline() {
        let mut g = Group::new();
        g.members
            .insert("a".into(), member(10_000, false, &["range"]));
        g.members
            .insert("b".into(), member(10_000, false, &["range"]));
        g.prepare();
        if let Some(m) = g.members.get_mut("b") {
            m.joined = true;
        }
        let now = Instant::now();
        g.try_complete(now);
        assert_eq!(g.state, State::PreparingRebalance, "waits for `a`");
        g.try_complete(g.deadline + Duration::from_millis(1));
        assert_eq!(g.state, State::CompletingRebalance);
        assert!(g.members.contains_key("b") && !g.members.contains_key("a"));
        assert_eq!(g.leader.as_deref(), Some("b"));
    }

    #[test]
    fn an_expired_session_starts_a_rebalance_and_the_last_one_empties_the_group() {
        let mut g = Group::new();
        g.members
            .insert("a".into(), member(1_000, true, &["range"]));
        g.members
            .insert("b".into(), member(60_000, true, &["range"]));
        g.prepare();
        g.try_complete(Instant::now());
        g.state = State::Stable;
        for m in g.members.values_mut() {
            m.awaiting = false;
        }
        let later = Instant::now() + Duration::from_secs(2);
        g.expire(later);
        assert!(!g.members.contains_key("a"), "a's 1 s session expired");
        // `b` alone: the new rebalance waits for it to rejoin.
        assert_eq!(g.state, State::PreparingRebalance);
        g.members.clear();
        g.expire(later);
        assert_eq!(g.state, State::Empty);
    }
}
