//! The HTTP API on `api.listen`: topics, reads by offset (with long-poll), offset
//! lookup by timestamp, `/healthz` and `/metrics`. Errors are JSON
//! `{"error": "..."}` with a fitting status: 400 for bad parameters, 404 for unknown
//! topics and partitions, 416 for offsets outside the stored range (deleted by
//! retention), 500 with file and byte for damaged data.

use std::sync::Arc;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tributary_store::StoredRecord;

use crate::metrics::Metrics;
use crate::storage::groups::GroupError;
use crate::storage::{PartitionReader, ReadError, StoreReader};

pub mod auth;
pub mod params;
pub mod produce;
pub mod query;
pub mod server;

use params::{OffsetParams, ReadParams, StartAt, parse_partition, parse_timestamp};

/// Message bytes per read answer (at least one record is always returned).
const MAX_READ_BYTES: usize = 8 << 20;

#[derive(Clone)]
struct Api {
    store: StoreReader,
    metrics: Arc<Metrics>,
}

/// Build the router. The API reads through `store`: it cannot append records.
pub fn router(store: StoreReader, metrics: Arc<Metrics>) -> Router {
    build(store, None, metrics)
}

/// [`router`] plus `POST /v1/topics/{topic}/records` ([`produce`]), the one route
/// that appends, through `writer`.
pub fn router_with_produce(
    store: StoreReader,
    writer: Arc<crate::storage::Storage>,
    metrics: Arc<Metrics>,
) -> Router {
    build(store, Some(writer), metrics)
}

fn build(
    store: StoreReader,
    writer: Option<Arc<crate::storage::Storage>>,
    metrics: Arc<Metrics>,
) -> Router {
    let reads = Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/topics", get(topics))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(records),
        )
        .route(
            "/v1/topics/{topic}/partitions/{partition}/offset",
            get(offset_for_timestamp),
        )
        .route("/v1/query", get(query))
        .route("/v1/histogram", get(histogram))
        .route("/v1/agents", get(agents))
        .route("/v1/tail", get(tail))
        .route("/v1/context", get(context))
        .route("/v1/groups", get(groups_list))
        .route(
            "/v1/groups/{group}/offsets",
            get(group_offsets).post(commit_offsets),
        )
        .with_state(Api {
            store,
            metrics: metrics.clone(),
        });
    let reads = reads.merge(crate::console::routes());
    let all = match writer {
        Some(w) => reads.merge(produce::routes(w, metrics)),
        None => reads,
    };
    all.fallback(not_found)
        .method_not_allowed_fallback(server::method_not_allowed)
        .pipe(server::harden)
}

/// `x.pipe(f)` = `f(x)`, to keep the builder chain readable.
trait Pipe: Sized {
    fn pipe<T>(self, f: impl FnOnce(Self) -> T) -> T {
        f(self)
    }
}

impl<T> Pipe for T {}

/// A JSON error answer.
#[derive(Debug)]
pub struct ApiError(StatusCode, String);

impl ApiError {
    pub fn status(&self) -> StatusCode {
        self.0
    }
    pub fn message(&self) -> &str {
        &self.1
    }
}

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

/// 200 `{"status":"ok"}` while every partition takes writes and every Kafka
/// source works; else 503 `degraded` naming the partitions that do not and why,
/// and the sources' problems. With sources configured, `sources` lists each one's
/// state (assigned partitions, lag, error).
async fn healthz(State(api): State<Api>) -> Response {
    let problems = api.store.problems();
    api.metrics.partitions_unwritable.set(problems.len() as i64);
    let (sources, sources_degraded) = api.metrics.sources.report();
    if problems.is_empty() && !sources_degraded {
        if sources.is_empty() {
            return axum::Json(json!({"status": "ok"})).into_response();
        }
        return axum::Json(json!({"status": "ok", "sources": sources})).into_response();
    }
    let parts: Vec<_> = problems
        .iter()
        .map(|(t, p, why)| json!({"topic": t, "partition": p, "error": why}))
        .collect();
    let mut errors = Vec::new();
    if !problems.is_empty() {
        errors.push(format!(
            "{} partition(s) cannot take writes: {}",
            problems.len(),
            problems
                .iter()
                .map(|(t, p, why)| format!("{t}/{p}: {why}"))
                .collect::<Vec<_>>()
                .join("; ")
        ));
    }
    errors.extend(api.metrics.sources.problems());
    let mut body = json!({"status": "degraded", "error": errors.join("; "), "partitions": parts});
    if !sources.is_empty() {
        body["sources"] = json!(sources);
    }
    (StatusCode::SERVICE_UNAVAILABLE, axum::Json(body)).into_response()
}

async fn metrics_text(State(api): State<Api>) -> impl IntoResponse {
    api.metrics.http_requests.inc();
    let m = &api.metrics;
    m.partitions_unwritable
        .set(api.store.problems().len() as i64);
    let gauge = |n: Option<usize>| n.map_or(-1, |n| i64::try_from(n).unwrap_or(i64::MAX));
    m.descriptor_limit
        .set(gauge(crate::descriptors::soft_limit()));
    m.descriptors_open
        .set(gauge(crate::descriptors::open_now()));
    let usage = api.store.descriptors();
    m.store_open_writers.set(gauge(Some(usage.open_writers)));
    m.store_read_handles.set(gauge(Some(usage.read_handles)));
    m.store_read_cache_bytes
        .set(gauge(Some(api.store.read_cache_bytes())));
    (
        [(
            header::CONTENT_TYPE,
            "text/plain; version=0.0.4; charset=utf-8",
        )],
        api.metrics.render(),
    )
}

#[derive(Serialize)]
struct PartitionInfo {
    partition: u32,
    start_offset: u64,
    end_offset: u64,
    bytes: u64,
}

#[derive(Serialize)]
struct TopicInfo {
    name: String,
    partitions: Vec<PartitionInfo>,
}

async fn topics(State(api): State<Api>) -> impl IntoResponse {
    api.metrics.http_requests.inc();
    let list: Vec<TopicInfo> = api
        .store
        .topics()
        .iter()
        .map(|t| TopicInfo {
            name: t.name().to_owned(),
            partitions: t
                .partitions()
                .iter()
                .map(|p| PartitionInfo {
                    partition: p.id(),
                    start_offset: p.start_offset(),
                    end_offset: p.end_offset(),
                    bytes: p.size_bytes(),
                })
                .collect(),
        })
        .collect();
    axum::Json(list)
}

/// The answer of a read by offset.
#[derive(Serialize)]
struct ReadAnswer<'a> {
    records: Vec<RecordJson<'a>>,
    next_offset: u64,
    end_offset: u64,
}

/// One record as the API shows it.
#[derive(Serialize)]
pub struct RecordJson<'a> {
    pub topic: &'a str,
    pub partition: u32,
    pub offset: u64,
    pub timestamp: String,
    pub host: &'a str,
    pub source: &'a str,
    pub message: std::borrow::Cow<'a, str>,
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// The sender's certificate identity (mutual TLS), when there is one.
    #[serde(skip_serializing_if = "str::is_empty")]
    pub agent: &'a str,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl<'a> RecordJson<'a> {
    pub fn from_stored(topic: &'a str, partition: u32, r: &'a StoredRecord) -> Self {
        let mut fields = parse_object(&r.block.fields);
        for (k, v) in parse_object(&r.fields) {
            fields.insert(k, v);
        }
        RecordJson {
            topic,
            partition,
            offset: r.offset,
            timestamp: tributary_common::timefmt::format_ms(r.timestamp_ms),
            host: &r.block.host,
            source: &r.block.source,
            message: String::from_utf8_lossy(&r.message),
            fields,
            agent: &r.block.agent,
            partial: r.flags & tributary_common::record::FLAG_PARTIAL != 0,
            truncated: r.flags & tributary_common::record::FLAG_TRUNCATED != 0,
        }
    }
}

fn parse_object(b: &[u8]) -> serde_json::Map<String, serde_json::Value> {
    if b.is_empty() {
        return serde_json::Map::new();
    }
    match serde_json::from_slice(b) {
        Ok(serde_json::Value::Object(m)) => m,
        _ => serde_json::Map::new(),
    }
}

/// The 404 for a topic that does not exist, naming the ones that do.
fn no_topic(api: &Api, topic: &str) -> ApiError {
    let mut names: Vec<String> = api
        .store
        .topics()
        .iter()
        .map(|t| t.name().to_owned())
        .collect();
    names.sort();
    let known = match names.len() {
        0 => "there are no topics yet: agents create them when they ship".to_owned(),
        n if n <= 20 => format!("topics: {}", names.join(", ")),
        n => format!("{n} topics, among them {}", names[..20].join(", ")),
    };
    ApiError(
        StatusCode::NOT_FOUND,
        format!("topic `{topic}` does not exist ({known})"),
    )
}

/// The partition `partition` of `topic`, or the 404/400 answer.
fn partition_of(api: &Api, topic: &str, partition: &str) -> Result<PartitionReader, ApiError> {
    let t = api.store.topic(topic).ok_or_else(|| no_topic(api, topic))?;
    let pnum = parse_partition(partition)?;
    t.partition(pnum).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!(
                "topic `{topic}` has partitions 0..{}, not {pnum}",
                t.partition_count()
            ),
        )
    })
}

fn out_of_range(topic: &str, pnum: u32, offset: u64, start: u64, end: u64) -> ApiError {
    ApiError(
        StatusCode::RANGE_NOT_SATISFIABLE,
        format!(
            "offset {offset} is out of range: partition {pnum} of `{topic}` holds offsets {start}..{end}"
        ),
    )
}

/// The answer for a failed read of partition `pnum` of `topic`.
fn read_error(e: ReadError, topic: &str, pnum: u32) -> ApiError {
    use tributary_store::Error as E;
    let internal = |m: String| ApiError(StatusCode::INTERNAL_SERVER_ERROR, m);
    match e {
        // A read that raced a retention pass.
        ReadError::Store(E::OffsetOutOfRange { offset, start, end }) => {
            out_of_range(topic, pnum, offset, start, end)
        }
        ReadError::Store(e @ E::Corrupt { .. }) => {
            internal(format!("partition {pnum} of `{topic}`: {e}"))
        }
        ReadError::Store(e) => internal(e.to_string()),
        ReadError::Groups(e) => group_error(e),
        ReadError::Task(e) => task_failed(e),
    }
}

fn task_failed(e: tokio::task::JoinError) -> ApiError {
    tracing::error!(error = %e, "storage task failed");
    ApiError(
        StatusCode::INTERNAL_SERVER_ERROR,
        format!("storage task failed: {e}"),
    )
}

fn group_error(e: GroupError) -> ApiError {
    let status = match e {
        GroupError::TooMany(_) => StatusCode::TOO_MANY_REQUESTS,
        GroupError::InvalidName(_) => StatusCode::BAD_REQUEST,
        GroupError::Io { .. } => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError(status, e.to_string())
}

async fn records(
    State(api): State<Api>,
    Path((topic, partition)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    let p = partition_of(&api, &topic, &partition)?;
    let pnum = p.id();
    let req = q.check()?;
    let offset = match req.start {
        StartAt::Earliest => p.start_offset(),
        StartAt::Latest => p.end_offset(),
        StartAt::Offset(o) => o,
    };
    let (max, wait) = (req.max, req.wait);
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = api.store.subscribe();
    loop {
        let (start, end) = (p.start_offset(), p.end_offset());
        if offset < start || offset > end {
            return Err(out_of_range(&topic, pnum, offset, start, end));
        }
        if offset < end || tokio::time::Instant::now() >= deadline {
            break;
        }
        changes.borrow_and_update();
        if p.end_offset() > offset {
            break;
        }
        StoreReader::wait_for_change(&mut changes, deadline - tokio::time::Instant::now()).await;
    }
    let result = p
        .read(offset, max, MAX_READ_BYTES)
        .await
        .map_err(|e| read_error(e, &topic, pnum))?;
    let records: Vec<RecordJson> = result
        .records
        .iter()
        .map(|r| RecordJson::from_stored(&topic, pnum, r))
        .collect();
    Ok(axum::Json(ReadAnswer {
        records,
        next_offset: result.next_offset,
        end_offset: p.end_offset(),
    })
    .into_response())
}

/// The answer of an offset lookup by timestamp.
#[derive(Serialize)]
struct OffsetAnswer {
    /// The first offset whose record timestamp is at least the one asked for; the
    /// end offset when no record is that new.
    offset: u64,
    /// That record's timestamp; `null` when `offset` is the end offset.
    timestamp: Option<String>,
}

async fn offset_for_timestamp(
    State(api): State<Api>,
    Path((topic, partition)): Path<(String, String)>,
    Query(q): Query<OffsetParams>,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    let p = partition_of(&api, &topic, &partition)?;
    let ts = parse_timestamp(q.timestamp.as_deref())?;
    // The end before the lookup: whatever the lookup sees is at least this much,
    // so when it finds nothing, no record below this end is that new.
    let end = p.end_offset();
    let found = p
        .offset_for_timestamp(ts)
        .await
        .map_err(|e| read_error(e, &topic, p.id()))?;
    let answer = match found {
        Some(f) => OffsetAnswer {
            offset: f.offset,
            timestamp: Some(tributary_common::timefmt::format_ms(f.timestamp_ms)),
        },
        None => OffsetAnswer {
            offset: end,
            timestamp: None,
        },
    };
    Ok(axum::Json(answer).into_response())
}

/// `GET /v1/query`: see [`crate::api::query`].
/// The agents connected now: host, certificate identity, address, version,
/// connected since, last batch, totals and records/s.
async fn agents(State(api): State<Api>) -> Response {
    api.metrics.http_requests.inc();
    axum::Json(api.metrics.agents.list()).into_response()
}

/// `/v1/tail`: the query filters, where the previous answer stopped, how long
/// to wait for new records, and how many at most.
#[derive(Deserialize)]
struct TailParams {
    #[serde(flatten)]
    query: query::QueryParams,
    cursor: Option<String>,
    wait_ms: Option<String>,
}

/// Most records one tail answer carries.
const MAX_TAIL: usize = 1000;

/// Follow a topic: the records after `cursor` (`P:OFFSET,…`, from the previous
/// answer; none = from now) that match the query filters, oldest first, waiting
/// up to `wait_ms` (≤ 30 s) for some to arrive. The answer's `cursor` continues
/// after every record read, matching or not.
async fn tail(State(api): State<Api>, Query(p): Query<TailParams>) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let now = tributary_common::timefmt::now_ms();
    let q = query::Query::parse(&p.query, now).map_err(|e| bad(e.to_string()))?;
    let limit = q.limit.min(MAX_TAIL);
    let topic = api
        .store
        .topic(&q.topic)
        .ok_or_else(|| no_topic(&api, &q.topic))?;
    let parts = topic.partitions();
    let mut cursor: Vec<(PartitionReader, u64)> =
        match p.cursor.as_deref().filter(|c| !c.is_empty()) {
            None => parts
                .into_iter()
                .map(|x| {
                    let e = x.end_offset();
                    (x, e)
                })
                .collect(),
            Some(c) => {
                let mut at: std::collections::HashMap<u32, u64> = std::collections::HashMap::new();
                for item in c.split(',') {
                    let (pn, off) = item
                        .split_once(':')
                        .and_then(|(a, b)| Some((a.parse::<u32>().ok()?, b.parse::<u64>().ok()?)))
                        .ok_or_else(|| {
                            bad(format!("bad `cursor` item {item:?}: PARTITION:OFFSET"))
                        })?;
                    at.insert(pn, off);
                }
                // A partition the cursor does not name starts at its start; an offset
                // retention deleted, at the start; one past the end, at the end.
                parts
                    .into_iter()
                    .map(|x| {
                        let o = at.get(&x.id()).copied().unwrap_or(0);
                        let o = o.clamp(x.start_offset(), x.end_offset());
                        (x, o)
                    })
                    .collect()
            }
        };
    let wait = p
        .wait_ms
        .as_deref()
        .and_then(|s| s.parse::<u64>().ok())
        .map_or(std::time::Duration::ZERO, |ms| {
            std::time::Duration::from_millis(ms.min(30_000))
        });
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = api.store.subscribe();
    let mut found: Vec<(u32, StoredRecord)> = Vec::new();
    loop {
        changes.borrow_and_update();
        let mut read_any = false;
        for (part, at) in cursor.iter_mut() {
            if found.len() >= limit || *at >= part.end_offset() {
                continue;
            }
            let r = match part
                .read(*at, limit - found.len(), MAX_READ_BYTES / 4)
                .await
            {
                Ok(r) => r,
                // Deleted by retention meanwhile: go on from the start.
                Err(ReadError::Store(tributary_store::Error::OffsetOutOfRange {
                    start, ..
                })) => {
                    *at = start;
                    continue;
                }
                Err(e) => return Err(read_error(e, &q.topic, part.id())),
            };
            read_any |= !r.records.is_empty();
            *at = r.next_offset;
            let pid = part.id();
            found.extend(
                r.records
                    .into_iter()
                    .filter(|x| q.filter.matches(x))
                    .map(|x| (pid, x)),
            );
        }
        if !found.is_empty() || tokio::time::Instant::now() >= deadline {
            break;
        }
        if !read_any {
            StoreReader::wait_for_change(&mut changes, deadline - tokio::time::Instant::now())
                .await;
        }
    }
    found.sort_by_key(|(p, r)| (r.timestamp_ms, *p, r.offset));
    let records: Vec<RecordJson<'_>> = found
        .iter()
        .map(|(p, r)| RecordJson::from_stored(&q.topic, *p, r))
        .collect();
    let next: Vec<String> = cursor
        .iter()
        .map(|(part, at)| format!("{}:{at}", part.id()))
        .collect();
    Ok(axum::Json(json!({ "records": records, "cursor": next.join(",") })).into_response())
}

/// `/v1/context`: a record and its neighbours from the same source.
#[derive(Deserialize)]
struct ContextParams {
    topic: Option<String>,
    partition: Option<String>,
    offset: Option<String>,
    before: Option<String>,
    after: Option<String>,
}

/// The record at `partition`/`offset` of `topic` and up to `before` and `after`
/// records of the same source (host and source) around it, in offset order.
async fn context(
    State(api): State<Api>,
    Query(p): Query<ContextParams>,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let topic = p
        .topic
        .filter(|t| !t.is_empty())
        .ok_or_else(|| bad("`topic` is required".into()))?;
    let part = partition_of(&api, &topic, p.partition.as_deref().unwrap_or(""))?;
    let offset: u64 = p
        .offset
        .as_deref()
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| bad("`offset` must be a number".into()))?;
    let count = |v: &Option<String>, name: &str| -> Result<usize, ApiError> {
        match v.as_deref().filter(|s| !s.is_empty()) {
            None => Ok(10),
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| *n <= query::context::MAX_AROUND)
                .ok_or_else(|| {
                    bad(format!(
                        "bad `{name}` {s:?}: 0 to {}",
                        query::context::MAX_AROUND
                    ))
                }),
        }
    };
    let (before, after) = (count(&p.before, "before")?, count(&p.after, "after")?);
    let (start, end) = (part.start_offset(), part.end_offset());
    if offset < start || offset >= end {
        return Err(out_of_range(&topic, part.id(), offset, start, end));
    }
    let pid = part.id();
    let found =
        tokio::task::spawn_blocking(move || query::context::around(&part, offset, before, after))
            .await
            .map_err(task_failed)?
            .map_err(|e| {
                ApiError(
                    StatusCode::INTERNAL_SERVER_ERROR,
                    format!("context in `{topic}` partition {pid}: {e}"),
                )
            })?;
    let before: Vec<RecordJson<'_>> = found
        .before
        .iter()
        .map(|r| RecordJson::from_stored(&topic, pid, r))
        .collect();
    let after: Vec<RecordJson<'_>> = found
        .after
        .iter()
        .map(|r| RecordJson::from_stored(&topic, pid, r))
        .collect();
    Ok(axum::Json(json!({
        "record": RecordJson::from_stored(&topic, pid, &found.record),
        "before": before,
        "after": after,
        "complete": found.complete,
    }))
    .into_response())
}

/// `/v1/histogram`: the query filters, and how many buckets at most.
#[derive(Deserialize)]
struct HistogramParams {
    #[serde(flatten)]
    query: query::QueryParams,
    buckets: Option<String>,
}

/// Counts per time bucket for the query filters over `since..until` (default: the
/// last 24 hours), split by severity.
async fn histogram(
    State(api): State<Api>,
    Query(p): Query<HistogramParams>,
) -> Result<Response, ApiError> {
    use query::histogram::{self, Buckets};
    api.metrics.http_requests.inc();
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    let now = tributary_common::timefmt::now_ms();
    let q = query::Query::parse(&p.query, now).map_err(|e| bad(e.to_string()))?;
    let until = q.filter.until_ms.unwrap_or(now);
    let since = q.filter.since_ms.unwrap_or(until - 86_400_000);
    if since > until {
        return Err(bad(format!(
            "`since` ({}) is after `until` ({})",
            tributary_common::timefmt::format_ms(since),
            tributary_common::timefmt::format_ms(until)
        )));
    }
    let n = match p.buckets.as_deref().filter(|s| !s.is_empty()) {
        None => histogram::DEFAULT_BUCKETS,
        Some(s) => s
            .parse::<usize>()
            .ok()
            .filter(|n| (1..=histogram::MAX_BUCKETS).contains(n))
            .ok_or_else(|| {
                bad(format!(
                    "bad `buckets` {s:?}: 1 to {}",
                    histogram::MAX_BUCKETS
                ))
            })?,
    };
    let topic = api
        .store
        .topic(&q.topic)
        .ok_or_else(|| no_topic(&api, &q.topic))?;
    let mut filter = q.filter;
    filter.since_ms = Some(since);
    filter.until_ms = Some(until);
    let b = Buckets::new(since, until, n);
    let deadline = std::time::Instant::now() + query::DEFAULT_DEADLINE;
    let name = q.topic.clone();
    let h = tokio::task::spawn_blocking(move || histogram::run(&topic, &filter, b, deadline))
        .await
        .map_err(task_failed)?
        .map_err(|e| match e {
            query::QueryError::Store(e) => ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("histogram of `{name}`: {e}"),
            ),
            other => bad(other.to_string()),
        })?;
    let buckets: Vec<_> = h
        .counts
        .iter()
        .enumerate()
        .map(|(i, c)| {
            let start = b.start_ms + i as i64 * b.width_ms;
            let mut by = serde_json::Map::new();
            for (slot, &n) in c.iter().enumerate().filter(|(_, n)| **n > 0) {
                let name = if slot < 8 {
                    tributary_common::names::severity_name(slot as u8)
                } else {
                    "none"
                };
                by.insert(name.into(), n.into());
            }
            json!({
                "start": tributary_common::timefmt::format_ms(start),
                "start_ms": start,
                "count": c.iter().sum::<u64>(),
                "by_severity": by,
            })
        })
        .collect();
    Ok(axum::Json(json!({
        "topic": q.topic,
        "since": tributary_common::timefmt::format_ms(since),
        "until": tributary_common::timefmt::format_ms(until),
        "interval_ms": b.width_ms,
        "total": h.total(),
        "scanned_records": h.scanned_records,
        "complete": h.complete,
        "buckets": buckets,
    }))
    .into_response())
}

async fn query(
    State(api): State<Api>,
    Query(params): Query<query::QueryParams>,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    let bad = |e: query::QueryError| ApiError(StatusCode::BAD_REQUEST, e.to_string());
    let q = query::Query::parse(&params, tributary_common::timefmt::now_ms()).map_err(bad)?;
    let topic = api
        .store
        .topic(&q.topic)
        .ok_or_else(|| no_topic(&api, &q.topic))?;
    let deadline = std::time::Instant::now() + query::DEFAULT_DEADLINE;
    let name = q.topic.clone();
    let result = query::search(topic, q, deadline)
        .await
        .map_err(|e| match e {
            // The error names the segment file (and so the partition).
            query::QueryError::Store(e) => ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("query of `{name}`: {e}"),
            ),
            query::QueryError::Task(e) => task_failed(e),
            other => bad(other),
        })?;
    let records: Vec<RecordJson<'_>> = result
        .records
        .iter()
        .map(|(p, r)| RecordJson::from_stored(&name, *p, r))
        .collect();
    let end_offsets: Vec<_> = result
        .end_offsets
        .iter()
        .map(|(p, o)| json!({"partition": p, "offset": o}))
        .collect();
    Ok(axum::Json(json!({
        "records": records,
        "scanned_records": result.scanned_records,
        "scanned_bytes": result.scanned_bytes,
        "complete": result.complete,
        "end_offsets": end_offsets,
    }))
    .into_response())
}

/// A group's offsets with the partitions' end offsets and lag.
fn group_json(api: &Api, group: &str) -> serde_json::Value {
    let offsets: Vec<_> = api
        .store
        .group_offsets(group)
        .into_iter()
        .map(|((topic, partition), c)| {
            let end = api
                .store
                .topic(&topic)
                .and_then(|t| t.partition(partition).map(|p| p.end_offset()));
            json!({
                "topic": topic,
                "partition": partition,
                "offset": c.offset,
                "end_offset": end,
                "lag": end.map(|e| e.saturating_sub(c.offset)),
                "updated": tributary_common::timefmt::format_ms(c.updated_ms),
            })
        })
        .collect();
    json!({"group": group, "offsets": offsets})
}

fn check_group(group: &str) -> Result<(), ApiError> {
    if crate::storage::groups::valid_group_name(group) {
        Ok(())
    } else {
        Err(ApiError(
            StatusCode::BAD_REQUEST,
            GroupError::InvalidName(group.to_owned()).to_string(),
        ))
    }
}

/// `GET /v1/groups`: every group.
async fn groups_list(State(api): State<Api>) -> impl IntoResponse {
    api.metrics.http_requests.inc();
    let all: Vec<_> = api
        .store
        .group_names()
        .iter()
        .map(|g| group_json(&api, g))
        .collect();
    axum::Json(all)
}

/// `GET /v1/groups/{group}/offsets` (an unknown group has none).
async fn group_offsets(
    State(api): State<Api>,
    Path(group): Path<String>,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    check_group(&group)?;
    Ok(axum::Json(group_json(&api, &group)).into_response())
}

/// One commit: `{"topic","partition","offset"}`; a list of them commits together.
#[derive(Deserialize)]
struct CommitJson {
    topic: String,
    partition: u32,
    offset: u64,
}

#[derive(Deserialize)]
#[serde(untagged)]
enum CommitBody {
    One(CommitJson),
    Many(Vec<CommitJson>),
}

/// Largest commit body.
const MAX_COMMIT_BODY: usize = 1 << 20;

/// `POST /v1/groups/{group}/offsets`: durable before the answer.
async fn commit_offsets(
    State(api): State<Api>,
    Path(group): Path<String>,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    check_group(&group)?;
    let bad = |m: String| ApiError(StatusCode::BAD_REQUEST, m);
    if body.len() > MAX_COMMIT_BODY {
        return Err(bad(format!("commit body over {MAX_COMMIT_BODY} bytes")));
    }
    let commits = match serde_json::from_slice::<CommitBody>(&body) {
        Ok(CommitBody::One(c)) => vec![c],
        Ok(CommitBody::Many(v)) => v,
        Err(e) => {
            return Err(bad(format!(
                "body must be {{\"topic\",\"partition\",\"offset\"}} or a list of them: {e}"
            )));
        }
    };
    let mut checked = Vec::with_capacity(commits.len());
    for c in commits {
        let p = partition_of(&api, &c.topic, &c.partition.to_string())?;
        let end = p.end_offset();
        if c.offset > end {
            return Err(bad(format!(
                "offset {} is past the end of {} partition {} (end offset {end})",
                c.offset, c.topic, c.partition
            )));
        }
        checked.push((c.topic, c.partition, c.offset));
    }
    api.store
        .commit(&group, checked, tributary_common::timefmt::now_ms())
        .await
        .map_err(|e| match e {
            ReadError::Groups(e) => group_error(e),
            ReadError::Task(e) => task_failed(e),
            ReadError::Store(e) => ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()),
        })?;
    Ok(axum::Json(group_json(&api, &group)).into_response())
}
