//! One Kafka source at work: the loop of group generations, and in each the
//! rounds of Fetch → translate → append → durable → commit (see the module docs
//! of [`super`] for why this is exactly once).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, Hasher};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use bytes::Bytes;
use tokio_util::sync::CancellationToken;
use tributary_common::error::report;
use tributary_common::kafka::conn::error_name;
use tributary_common::kafka::{Conn, ConnSettings, KafkaError};

use super::SourceError;
use super::cluster::Cluster;
use super::commits::{Commits, Tp};
use super::fetch::{self, IDLE_ROUND, MAX_PARTITION_BYTES, PARTITION_MAX_BYTES, Prepared, Want};
use super::group::{self, Generation, REBALANCE_TIMEOUT};
use super::health::{CLUSTER, SourceHealth, State, TOPIC};
use super::settings::KafkaSource;
use super::translate::Origin;
use crate::config::FsyncMode;
use crate::metrics::{Metrics, SourceLabels};
use crate::storage::{Appended, Storage};

/// Metadata is refreshed this often (the leader rejoins when partitions were
/// added), and more often while a subscribed topic is missing.
const METADATA_INTERVAL: Duration = Duration::from_secs(60);
const METADATA_MISSING_INTERVAL: Duration = Duration::from_secs(10);
/// Bounds of the pause after an error.
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);
/// The last commit and LeaveGroup at shutdown must each end within this.
const SHUTDOWN_STEP: Duration = Duration::from_secs(4);
/// Read committed: aborted transactions never reach the store.
const ISOLATION_LEVEL: i8 = 1;

/// Retry pauses: doubling from [`BACKOFF_MIN`] to [`BACKOFF_MAX`], each a random
/// time between half and all of the step.
struct Backoff {
    next: Duration,
}

impl Backoff {
    fn reset(&mut self) {
        self.next = BACKOFF_MIN;
    }

    fn step(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(BACKOFF_MAX);
        let random = std::collections::hash_map::RandomState::new()
            .build_hasher()
            .finish();
        let half = d / 2;
        half + Duration::from_nanos(random % (half.as_nanos() as u64).max(1))
    }
}

/// Where the source stands in one assigned partition.
struct Part {
    /// The next offset to read: everything before it is durably stored.
    next: i64,
    /// The offset last committed to the group (or found committed).
    committed: i64,
    origin: Origin,
    max_bytes: i32,
    high_watermark: Option<i64>,
}

/// How a generation ended.
enum End {
    Shutdown,
    Rejoin(String),
}

/// One source's consumer.
pub struct Consumer {
    src: Arc<KafkaSource>,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    health: Arc<SourceHealth>,
    labels: SourceLabels,
    cluster: Cluster,
    /// The connection to the group coordinator (its timeout outlasts a rebalance).
    coord: Option<Conn>,
    member_id: String,
    backoff: Backoff,
}

impl Consumer {
    pub fn new(src: Arc<KafkaSource>, storage: Arc<Storage>, metrics: Arc<Metrics>) -> Consumer {
        let health = metrics.sources.register(&src.name, &src.group, &src.topics);
        Consumer {
            cluster: Cluster::new(src.brokers.clone(), src.conn.clone()),
            labels: SourceLabels {
                source: src.name.clone(),
            },
            src,
            storage,
            metrics,
            health,
            coord: None,
            member_id: String::new(),
            backoff: Backoff { next: BACKOFF_MIN },
        }
    }

    /// Run until `shutdown`: join, consume, rejoin after rebalances, retry after
    /// errors; then commit, leave the group and return.
    pub async fn run(mut self, shutdown: CancellationToken) {
        tracing::info!(
            source = %self.src.name,
            group = %self.src.group,
            topics = ?self.src.topics,
            brokers = ?self.src.brokers,
            instance = %self.src.instance_id,
            "Kafka source starting"
        );
        while !shutdown.is_cancelled() {
            let started = Instant::now();
            match self.session(&shutdown).await {
                Ok(End::Shutdown) => break,
                Ok(End::Rejoin(why)) | Err(SourceError::Rejoin(why)) => {
                    tracing::info!(source = %self.src.name, group = %self.src.group, "joining the group again: {why}");
                    // A generation that ends at once again and again is paced.
                    if started.elapsed() < Duration::from_secs(5) {
                        self.pause(&shutdown, None).await;
                    } else {
                        self.backoff.reset();
                    }
                }
                Err(e) => {
                    self.coord = None;
                    if matches!(
                        e,
                        SourceError::Kafka(KafkaError::Io { .. } | KafkaError::Timeout { .. })
                    ) {
                        self.cluster.drop_all();
                    }
                    self.fail(CLUSTER, "group", &e);
                    self.pause(&shutdown, None).await;
                }
            }
        }
        self.health.set_state(State::Stopped);
        tracing::info!(source = %self.src.name, group = %self.src.group, "Kafka source stopped");
    }

    /// Report a problem: health (under `scope`), metrics (`kind`), log.
    fn fail(&self, scope: &str, kind: &str, e: &SourceError) {
        let text = format!("{}; retrying", report(e));
        self.metrics.source_error(&self.src.name, kind);
        tracing::warn!(source = %self.src.name, group = %self.src.group, "Kafka source: {text}");
        self.health.problem(scope, text);
    }

    async fn pause(&mut self, shutdown: &CancellationToken, over: Option<&CancellationToken>) {
        let d = self.backoff.step();
        let over = async {
            match over {
                Some(o) => o.cancelled().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = tokio::time::sleep(d) => {}
            _ = shutdown.cancelled() => {}
            _ = over => {}
        }
    }

    /// Settings of the coordinator connection: JoinGroup is answered only when
    /// the rebalance completes.
    fn coord_settings(&self) -> ConnSettings {
        let mut s = self.src.conn.clone();
        s.timeout = REBALANCE_TIMEOUT + Duration::from_secs(10);
        s
    }

    /// The coordinator connection, to `addr`.
    async fn coord_conn(&mut self, addr: &str) -> Result<&mut Conn, KafkaError> {
        if self.coord.as_ref().is_none_or(|c| c.addr() != addr) {
            self.coord = None;
            self.coord = Some(Conn::open(addr, &self.coord_settings()).await?);
        }
        self.coord.as_mut().ok_or_else(|| KafkaError::Protocol {
            addr: addr.to_owned(),
            what: "connection vanished".into(),
        })
    }

    /// One generation: join, resume, consume until it ends.
    async fn session(&mut self, shutdown: &CancellationToken) -> Result<End, SourceError> {
        self.health.set_state(State::Joining);
        let addr = tokio::select! {
            r = self.cluster.coordinator(&self.src.group) => r?,
            _ = shutdown.cancelled() => return Ok(End::Shutdown),
        };
        let joined = tokio::select! {
            r = async {
                self.coord_conn(&addr).await?;
                let Some(conn) = self.coord.as_mut() else {
                    return Err(SourceError::Group("no coordinator connection".into()));
                };
                group::join(conn, &mut self.cluster, &self.src, &mut self.member_id).await
            } => r,
            _ = shutdown.cancelled() => {
                // Cut mid-request: the connection is no longer usable.
                self.coord = None;
                return Ok(End::Shutdown);
            }
        };
        let generation = joined.map_err(|e| match e {
            SourceError::Kafka(KafkaError::Timeout { addr, .. }) => SourceError::Group(format!(
                "group `{}` did not complete a rebalance on coordinator {addr} within {:?}: a member that does not join again holds it up (Kafka drops such a member after its session timeout; some brokers never do: stop that consumer or use another group)",
                self.src.group,
                REBALANCE_TIMEOUT + Duration::from_secs(10)
            )),
            e => e,
        })?;
        self.health
            .set_assignment(generation.id, &generation.assignment);
        self.health.healed(CLUSTER);
        tracing::info!(
            source = %self.src.name,
            group = %self.src.group,
            generation = generation.id,
            leader = generation.leader,
            assigned = ?generation.assignment,
            "joined the Kafka consumer group"
        );
        if !generation.leader {
            self.cluster.refresh(&self.src.topics).await?;
        }
        self.note_missing_topics();
        let mut parts = self.resume(&generation).await?;

        let over = CancellationToken::new();
        let why = Arc::new(Mutex::new(String::new()));
        let heartbeat = tokio::spawn(group::heartbeats(
            self.src.clone(),
            self.src.conn.clone(),
            generation.clone(),
            over.clone(),
            why.clone(),
        ));
        self.health.set_state(State::Consuming);
        let end = self
            .consume(&generation, &mut parts, shutdown, &over, &why)
            .await;
        heartbeat.abort();
        let _ = heartbeat.await;
        if let Ok(End::Shutdown) = end {
            let member = self.member_id.clone();
            let left = tokio::time::timeout(SHUTDOWN_STEP, async {
                let src = self.src.clone();
                let conn = self.coord_conn(&generation.coordinator).await?;
                group::leave(conn, &src, &member).await
            })
            .await;
            match left {
                Ok(Ok(())) => {
                    tracing::info!(source = %self.src.name, group = %self.src.group, "left the Kafka consumer group")
                }
                Ok(Err(e)) => {
                    tracing::warn!(source = %self.src.name, group = %self.src.group, "could not leave the group: {}", report(&e))
                }
                Err(_) => {
                    tracing::warn!(source = %self.src.name, group = %self.src.group, "could not leave the group within {SHUTDOWN_STEP:?}")
                }
            }
        }
        end
    }

    /// Health problems for subscribed topics the brokers do not have.
    fn note_missing_topics(&self) {
        for t in &self.src.topics {
            let scope = format!("{TOPIC}{t}");
            match self.cluster.topics.get(t).and_then(|m| m.missing.clone()) {
                Some(why) => {
                    if !self.health.is_degraded() {
                        tracing::warn!(source = %self.src.name, "{why}");
                    }
                    self.health.problem(&scope, why);
                }
                None => self.health.healed(&scope),
            }
        }
    }

    /// Where to start in each assigned partition: the committed offset, else the
    /// earliest.
    async fn resume(&mut self, generation: &Generation) -> Result<BTreeMap<Tp, Part>, SourceError> {
        let mut parts = BTreeMap::new();
        if generation.assignment.is_empty() {
            return Ok(parts);
        }
        let src = self.src.clone();
        let conn = self.coord_conn(&generation.coordinator).await?;
        let committed = group::committed(conn, &src, &generation.assignment).await?;
        for (t, p) in &generation.assignment {
            let c = committed.get(&(t.clone(), *p)).copied().unwrap_or(-1);
            let next = if c >= 0 {
                c
            } else {
                match self.cluster.earliest(t, *p).await {
                    Ok(o) => o,
                    Err(e) => {
                        // Fetching from 0 answers OFFSET_OUT_OF_RANGE if that is gone,
                        // which asks again.
                        tracing::debug!(topic = %t, partition = p, "earliest offset unknown ({e}); starting at 0");
                        0
                    }
                }
            };
            let id = self.cluster.topics.get(t).and_then(|m| m.id);
            parts.insert(
                (t.clone(), *p),
                Part {
                    next,
                    committed: c,
                    origin: Origin::new(t, *p, id),
                    max_bytes: PARTITION_MAX_BYTES,
                    high_watermark: None,
                },
            );
        }
        tracing::info!(
            source = %self.src.name,
            positions = ?parts.iter().map(|((t, p), s)| format!("{t}/{p}@{}", s.next)).collect::<Vec<_>>(),
            "resuming"
        );
        Ok(parts)
    }

    /// Consume `parts` until shutdown or the end of the generation.
    async fn consume(
        &mut self,
        generation: &Generation,
        parts: &mut BTreeMap<Tp, Part>,
        shutdown: &CancellationToken,
        over: &CancellationToken,
        why: &Mutex<String>,
    ) -> Result<End, SourceError> {
        let mut stale = false;
        let mut last_meta = Instant::now();
        let config = self.storage.config();
        let flush_interval = (config.fsync == FsyncMode::Interval).then_some(config.fsync_interval);
        let mut commits = Commits::new(flush_interval, Instant::now());
        loop {
            if shutdown.is_cancelled() || over.is_cancelled() {
                let r = tokio::time::timeout(
                    SHUTDOWN_STEP,
                    self.commit(generation, parts, &mut commits, true),
                )
                .await;
                match r {
                    Ok(Err(SourceError::Rejoin(_))) | Ok(Ok(())) => {}
                    Ok(Err(e)) => {
                        tracing::warn!(source = %self.src.name, "last commit failed: {}", report(&e))
                    }
                    Err(_) => {
                        tracing::warn!(source = %self.src.name, "last commit did not finish within {SHUTDOWN_STEP:?}")
                    }
                }
                if shutdown.is_cancelled() {
                    return Ok(End::Shutdown);
                }
                let why = why.lock().map(|w| w.clone()).unwrap_or_default();
                return Ok(End::Rejoin(why));
            }
            let missing = self.src.topics.iter().any(|t| {
                self.cluster
                    .topics
                    .get(t)
                    .is_none_or(|m| m.missing.is_some())
            });
            let due = if missing {
                METADATA_MISSING_INTERVAL
            } else {
                METADATA_INTERVAL
            };
            if stale || last_meta.elapsed() >= due {
                let topics = if generation.leader {
                    generation
                        .counts
                        .keys()
                        .cloned()
                        .chain(self.src.topics.iter().cloned())
                        .collect::<Vec<_>>()
                } else {
                    self.src.topics.clone()
                };
                let r = tokio::select! {
                    r = self.cluster.refresh(&topics) => r,
                    _ = shutdown.cancelled() => continue,
                };
                last_meta = Instant::now();
                if let Err(e) = r {
                    self.fail(CLUSTER, "broker", &e.into());
                    self.pause(shutdown, Some(over)).await;
                    continue;
                }
                stale = false;
                self.note_missing_topics();
                if generation.leader && self.partition_counts_changed(generation) {
                    over.cancel();
                    if let Ok(mut w) = why.lock() {
                        *w = "the subscribed topics' partitions changed".into();
                    }
                    continue;
                }
            }
            if parts.is_empty() {
                tokio::select! {
                    _ = tokio::time::sleep(Duration::from_secs(1)) => {}
                    _ = shutdown.cancelled() => {}
                    _ = over.cancelled() => {}
                }
                continue;
            }
            let started = Instant::now();
            let mut troubled = false;
            let (answers, error) = self
                .fetch_round(parts, &mut stale, &mut troubled, shutdown)
                .await;
            let fetched: usize = answers
                .iter()
                .map(|a| a.records.as_ref().map_or(0, Bytes::len))
                .sum();
            let stored = self.store(parts, answers).await;
            self.update_lag(parts);
            match self.commit(generation, parts, &mut commits, false).await {
                Ok(()) => {}
                Err(SourceError::Rejoin(w)) => {
                    if let Ok(mut g) = why.lock() {
                        *g = w;
                    }
                    over.cancel();
                    continue;
                }
                Err(e) => {
                    self.coord = None;
                    commits.failed(Instant::now());
                    self.metrics.source_error(&self.src.name, "commit");
                    tributary_common::ratelimit::warn(
                        "source_commit",
                        format_args!(
                            "{} (group {}): committing offsets failed (retried; the store keeps what it holds): {}",
                            self.src.name,
                            self.src.group,
                            report(&e)
                        ),
                    );
                }
            }
            if let Err(e @ SourceError::Durable(_)) = &stored {
                self.fail(CLUSTER, "store", e);
            } else if let Some(e) = &error {
                self.fail(CLUSTER, "broker", e);
            } else {
                self.health.healed(CLUSTER);
            }
            if error.is_some() || stored.is_err() || troubled {
                self.pause(shutdown, Some(over)).await;
            } else {
                self.backoff.reset();
                if fetched == 0 {
                    let rest = IDLE_ROUND.saturating_sub(started.elapsed());
                    tokio::select! {
                        _ = tokio::time::sleep(rest) => {}
                        _ = shutdown.cancelled() => {}
                        _ = over.cancelled() => {}
                    }
                }
            }
        }
    }

    fn partition_counts_changed(&self, generation: &Generation) -> bool {
        let mut now = BTreeMap::new();
        for t in generation.counts.keys().chain(self.src.topics.iter()) {
            if let Some(m) = self.cluster.topics.get(t)
                && m.missing.is_none()
            {
                now.insert(t.clone(), m.leaders.len() as i32);
            }
        }
        now != generation.counts
    }

    /// Fetch once from the leader of every assigned partition. Returns each
    /// partition's answer (bytes, aborted transactions) and the first error of
    /// a broker; `troubled`: a partition answered an error (under its scope).
    async fn fetch_round(
        &mut self,
        parts: &mut BTreeMap<Tp, Part>,
        stale: &mut bool,
        troubled: &mut bool,
        shutdown: &CancellationToken,
    ) -> (Vec<Answer>, Option<SourceError>) {
        let mut by_leader: BTreeMap<String, Vec<Want>> = BTreeMap::new();
        for ((t, p), s) in parts.iter() {
            match self.cluster.leader(t, *p) {
                Some(addr) => by_leader.entry(addr.to_owned()).or_default().push(Want {
                    topic: t.clone(),
                    partition: *p,
                    offset: s.next,
                    max_bytes: s.max_bytes,
                }),
                None => *stale = true,
            }
        }
        let mut answers = Vec::new();
        let mut error = None;
        for (addr, wants) in by_leader {
            let r = tokio::select! {
                r = async {
                    let conn = self.cluster.conn(&addr).await?;
                    fetch::fetch(conn, &wants, ISOLATION_LEVEL).await
                } => r,
                _ = shutdown.cancelled() => {
                    self.cluster.drop_all();
                    break;
                }
            };
            let resp = match r {
                Ok((resp, _)) => resp,
                Err(e) => {
                    self.cluster.drop_conn(&addr);
                    *stale = true;
                    error.get_or_insert(SourceError::Kafka(e));
                    continue;
                }
            };
            for t in resp.responses {
                let topic = t.topic.0.as_str().to_owned();
                for pd in t.partitions {
                    let tp = (topic.clone(), pd.partition_index);
                    let Some(part) = parts.get_mut(&tp) else {
                        continue;
                    };
                    let scope = format!("{}/{}", tp.0, tp.1);
                    match pd.error_code {
                        0 => {
                            part.high_watermark = Some(pd.high_watermark);
                            let aborted = pd
                                .aborted_transactions
                                .unwrap_or_default()
                                .iter()
                                .map(|a| (a.producer_id.0, a.first_offset))
                                .collect();
                            answers.push(Answer {
                                tp,
                                records: pd.records,
                                aborted,
                            });
                        }
                        1 => {
                            // OFFSET_OUT_OF_RANGE: retention removed it (or the log
                            // was cut): go on from the earliest offset there is.
                            match self.cluster.earliest(&tp.0, tp.1).await {
                                Ok(earliest) => {
                                    tracing::warn!(
                                        source = %self.src.name,
                                        topic = %tp.0,
                                        partition = tp.1,
                                        "offset {} is out of range on the broker (deleted by retention before it was read, or the topic was recreated): going on from the earliest offset, {earliest}",
                                        part.next
                                    );
                                    self.metrics
                                        .source_error(&self.src.name, "offset_out_of_range");
                                    part.next = earliest;
                                }
                                Err(e) => {
                                    *stale = true;
                                    error.get_or_insert(SourceError::Kafka(e));
                                }
                            }
                        }
                        code if tributary_common::kafka::conn::retriable_code(code)
                            || code == 100 =>
                        {
                            // Leadership moved, or the topic is being created: ask
                            // again (after a pause: it may last).
                            *stale = true;
                            *troubled = true;
                            let e = SourceError::Kafka(KafkaError::Broker {
                                addr: addr.clone(),
                                api: "Fetch",
                                code,
                                name: error_name(code),
                                message: format!(
                                    " for `{}` partition {} (metadata is asked again)",
                                    tp.0, tp.1
                                ),
                            });
                            self.fail(&scope, "broker", &e);
                        }
                        code => {
                            *troubled = true;
                            let e = SourceError::Kafka(KafkaError::Broker {
                                addr: addr.clone(),
                                api: "Fetch",
                                code,
                                name: error_name(code),
                                message: format!(" for `{}` partition {}", tp.0, tp.1),
                            });
                            self.fail(&scope, "broker", &e);
                        }
                    }
                }
            }
        }
        (answers, error)
    }

    /// Translate, append and make durable what `answers` hold; move each
    /// partition's position past what was stored.
    async fn store(
        &mut self,
        parts: &mut BTreeMap<Tp, Part>,
        answers: Vec<Answer>,
    ) -> Result<(), SourceError> {
        if answers.is_empty() {
            return Ok(());
        }
        let now = tributary_common::timefmt::now_ms();
        let inputs: Vec<(Answer, i64, Origin)> = answers
            .into_iter()
            .filter_map(|a| {
                let part = parts.get(&a.tp)?;
                Some((a, part.next, part.origin.clone()))
            })
            .collect();
        let prepared: Vec<(Tp, Prepared)> = tokio::task::spawn_blocking(move || {
            inputs
                .into_iter()
                .map(|(a, next, origin)| {
                    let read = fetch::read_partition(
                        &a.tp.0,
                        a.tp.1,
                        next,
                        a.records.as_ref(),
                        &a.aborted,
                    );
                    (a.tp, fetch::prepare(read, &origin, now))
                })
                .collect()
        })
        .await
        .map_err(|e| SourceError::Group(format!("preparing records failed: {e}")))?;

        let mut first_error = None;
        let mut appended: Vec<Appended> = Vec::new();
        let mut done: Vec<(Tp, i64)> = Vec::new();
        for (tp, p) in prepared {
            let scope = format!("{}/{}", tp.0, tp.1);
            self.account(&tp, &p);
            if let Some(part) = parts.get_mut(&tp) {
                if p.read.too_small {
                    part.max_bytes = (part.max_bytes * 2).min(MAX_PARTITION_BYTES);
                } else if !p.payloads.is_empty() {
                    part.max_bytes = PARTITION_MAX_BYTES;
                }
            }
            let topic = self.src.store_topic(&tp.0).to_owned();
            let mut ok = true;
            for (payload, summary) in p.payloads {
                match self.storage.append(&topic, payload, summary).await {
                    Ok(a) => appended.push(a),
                    Err(source) => {
                        let e = SourceError::Store {
                            kafka_topic: tp.0.clone(),
                            partition: tp.1,
                            topic: topic.clone(),
                            source,
                        };
                        self.fail(&scope, "store", &e);
                        first_error.get_or_insert(e);
                        ok = false;
                        break;
                    }
                }
            }
            if !ok {
                continue;
            }
            match &p.read.stuck {
                Some(e) => {
                    self.health.problem(&scope, e.to_string());
                    tributary_common::ratelimit::warn(
                        "source_stuck",
                        format_args!("{} (group {}): {e}", self.src.name, self.src.group),
                    );
                }
                None => self.health.healed(&scope),
            }
            done.push((tp, p.read.next));
        }
        for a in &appended {
            if let Err(source) = self.storage.make_durable(a).await {
                return Err(SourceError::Durable(source));
            }
        }
        for a in &appended {
            self.metrics
                .source_stored
                .get_or_create(&self.labels)
                .inc_by(a.records);
            self.metrics
                .source_duplicates
                .get_or_create(&self.labels)
                .inc_by(a.duplicates);
        }
        for (tp, next) in done {
            if let Some(part) = parts.get_mut(&tp) {
                part.next = part.next.max(next);
            }
        }
        first_error.map_or(Ok(()), Err)
    }

    /// Metrics and logs of one prepared partition.
    fn account(&self, tp: &Tp, p: &Prepared) {
        self.metrics
            .source_consumed
            .get_or_create(&self.labels)
            .inc_by(p.consumed);
        if !p.rejected.is_empty() {
            self.metrics
                .source_rejected
                .get_or_create(&self.labels)
                .inc_by(p.rejected.len() as u64);
            let (offset, why) = &p.rejected[0];
            tributary_common::ratelimit::warn(
                "source_rejected",
                format_args!(
                    "{} (group {}): refused {} record(s) of Kafka topic `{}` partition {}, first at offset {offset}: {why} (skipped; fix the producer)",
                    self.src.name,
                    self.src.group,
                    p.rejected.len(),
                    tp.0,
                    tp.1
                ),
            );
        }
        for e in &p.read.skipped {
            self.metrics.source_error(&self.src.name, "batch_skipped");
            tracing::error!(source = %self.src.name, group = %self.src.group, "{e}: skipped");
        }
    }

    fn update_lag(&self, parts: &BTreeMap<Tp, Part>) {
        let mut lag = 0i64;
        let mut known = false;
        for p in parts.values() {
            if let Some(hw) = p.high_watermark {
                lag += (hw - p.next).max(0);
                known = true;
            }
        }
        let lag = known.then_some(lag);
        self.metrics
            .source_lag
            .get_or_create(&self.labels)
            .set(lag.unwrap_or(0));
        self.health.set_lag(lag);
    }

    /// Commit the positions that moved, when due (`force`: now, everything
    /// durable; see [`Commits`]). Called after every round: with `fsync: always`
    /// a round that moved a position commits it at once, an idle round sends
    /// nothing.
    async fn commit(
        &mut self,
        generation: &Generation,
        parts: &mut BTreeMap<Tp, Part>,
        commits: &mut Commits,
        force: bool,
    ) -> Result<(), SourceError> {
        let moved: BTreeMap<Tp, i64> = parts
            .iter()
            .filter(|(_, p)| p.next != p.committed && p.next >= 0)
            .map(|(tp, p)| (tp.clone(), p.next))
            .collect();
        if force && commits.flush_before_forced() {
            self.storage.flush_all().await;
        }
        let Some(offsets) = commits.due(moved, force, Instant::now()) else {
            return Ok(());
        };
        let src = self.src.clone();
        let conn = self.coord_conn(&generation.coordinator).await?;
        group::commit(conn, &src, generation, &offsets).await?;
        for (tp, o) in offsets {
            if let Some(p) = parts.get_mut(&tp) {
                p.committed = o;
            }
        }
        tracing::debug!(source = %self.src.name, "offsets committed");
        Ok(())
    }
}

/// One partition's answer to a Fetch.
struct Answer {
    tp: Tp,
    records: Option<Bytes>,
    /// (producer id, first offset) of aborted transactions (read_committed).
    aborted: Vec<(i64, i64)>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_with_jitter_up_to_its_cap() {
        let mut b = Backoff { next: BACKOFF_MIN };
        let mut step = BACKOFF_MIN;
        for _ in 0..20 {
            let d = b.step();
            assert!(d >= step / 2 && d <= step, "{d:?} within half of {step:?}");
            step = (step * 2).min(BACKOFF_MAX);
        }
        assert_eq!(b.next, BACKOFF_MAX);
        b.reset();
        assert!(b.step() <= BACKOFF_MIN);
    }
}
