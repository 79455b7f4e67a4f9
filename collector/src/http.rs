//! The HTTP API on `api.listen`: topics, reads by offset (with long-poll),
//! `/healthz` and `/metrics`. Errors are JSON `{"error": "..."}` with a fitting status.

use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::{Path, Query, State};
use axum::http::{StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use serde::{Deserialize, Serialize};
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;
use tributary_store::StoredRecord;

use crate::metrics::Metrics;
use crate::storage::Storage;

/// Records per read when `max` is not given, and the most a read may ask for.
const DEFAULT_MAX: usize = 100;
const MAX_MAX: usize = 10_000;
/// Message bytes per read answer (at least one record is always returned).
const MAX_READ_BYTES: usize = 8 << 20;
/// Longest long-poll.
const MAX_WAIT: Duration = Duration::from_secs(30);

#[derive(Clone)]
struct Api {
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
}

/// Build the router.
pub fn router(storage: Arc<Storage>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/healthz", get(healthz))
        .route("/metrics", get(metrics_text))
        .route("/v1/topics", get(topics))
        .route(
            "/v1/topics/{topic}/partitions/{partition}/records",
            get(records),
        )
        .fallback(not_found)
        .with_state(Api { storage, metrics })
}

/// Serve the API on `listener` until `shutdown`.
pub async fn serve(
    listener: TcpListener,
    router: Router,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    axum::serve(listener, router)
        .with_graceful_shutdown(async move { shutdown.cancelled().await })
        .await
}

/// A JSON error answer.
pub struct ApiError(StatusCode, String);

impl IntoResponse for ApiError {
    fn into_response(self) -> Response {
        (self.0, axum::Json(json!({ "error": self.1 }))).into_response()
    }
}

async fn not_found() -> ApiError {
    ApiError(StatusCode::NOT_FOUND, "no such endpoint".into())
}

async fn healthz() -> impl IntoResponse {
    axum::Json(json!({"status": "ok"}))
}

async fn metrics_text(State(api): State<Api>) -> impl IntoResponse {
    api.metrics.http_requests.inc();
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
        .storage
        .store()
        .topics()
        .iter()
        .map(|t| TopicInfo {
            name: t.name().to_owned(),
            partitions: t
                .partitions()
                .iter()
                .enumerate()
                .map(|(i, p)| PartitionInfo {
                    partition: i as u32,
                    start_offset: p.start_offset(),
                    end_offset: p.end_offset(),
                    bytes: p.size_bytes(),
                })
                .collect(),
        })
        .collect();
    axum::Json(list)
}

#[derive(Deserialize)]
struct ReadParams {
    offset: Option<String>,
    max: Option<String>,
    wait_ms: Option<String>,
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
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub partial: bool,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    pub truncated: bool,
}

impl<'a> RecordJson<'a> {
    pub fn from_stored(topic: &'a str, partition: u32, r: &'a StoredRecord) -> Self {
        let mut fields = parse_object(&r.block_fields);
        for (k, v) in parse_object(&r.fields) {
            fields.insert(k, v);
        }
        RecordJson {
            topic,
            partition,
            offset: r.offset,
            timestamp: tributary_common::timefmt::format_ms(r.timestamp_ms),
            host: &r.host,
            source: &r.source,
            message: String::from_utf8_lossy(&r.message),
            fields,
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

fn parse_num<T: std::str::FromStr>(name: &str, v: Option<&str>) -> Result<Option<T>, ApiError> {
    match v {
        None | Some("") => Ok(None),
        Some(s) => s.parse().map(Some).map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("`{name}` must be a number, got `{s}`"),
            )
        }),
    }
}

async fn records(
    State(api): State<Api>,
    Path((topic, partition)): Path<(String, String)>,
    Query(q): Query<ReadParams>,
) -> Result<Response, ApiError> {
    api.metrics.http_requests.inc();
    let t = api.storage.store().topic(&topic).ok_or_else(|| {
        ApiError(
            StatusCode::NOT_FOUND,
            format!("topic `{topic}` does not exist"),
        )
    })?;
    let pnum: u32 = partition.parse().map_err(|_| {
        ApiError(
            StatusCode::BAD_REQUEST,
            format!("partition must be a number, got `{partition}`"),
        )
    })?;
    let p = t
        .partition(pnum)
        .ok_or_else(|| {
            ApiError(
                StatusCode::NOT_FOUND,
                format!(
                    "topic `{topic}` has partitions 0..{}, not {pnum}",
                    t.partitions().len()
                ),
            )
        })?
        .clone();
    let max = parse_num::<usize>("max", q.max.as_deref())?
        .unwrap_or(DEFAULT_MAX)
        .clamp(1, MAX_MAX);
    let wait =
        Duration::from_millis(parse_num::<u64>("wait_ms", q.wait_ms.as_deref())?.unwrap_or(0))
            .min(MAX_WAIT);
    let offset = match q.offset.as_deref() {
        None | Some("") | Some("earliest") => p.start_offset(),
        Some("latest") => p.end_offset(),
        Some(s) => s.parse::<u64>().map_err(|_| {
            ApiError(
                StatusCode::BAD_REQUEST,
                format!("offset must be a number, `earliest` or `latest`, got `{s}`"),
            )
        })?,
    };
    let deadline = tokio::time::Instant::now() + wait;
    let mut changes = api.storage.subscribe();
    loop {
        let (start, end) = (p.start_offset(), p.end_offset());
        if offset < start || offset > end {
            return Err(ApiError(
                StatusCode::RANGE_NOT_SATISFIABLE,
                format!(
                    "offset {offset} is out of range: partition {pnum} of `{topic}` holds offsets {start}..{end}"
                ),
            ));
        }
        if offset < end || tokio::time::Instant::now() >= deadline {
            break;
        }
        changes.borrow_and_update();
        if p.end_offset() > offset {
            break;
        }
        Storage::wait_for_change(&mut changes, deadline - tokio::time::Instant::now()).await;
    }
    let part = p.clone();
    let result = tokio::task::spawn_blocking(move || part.read(offset, max, MAX_READ_BYTES))
        .await
        .map_err(|e| {
            ApiError(
                StatusCode::INTERNAL_SERVER_ERROR,
                format!("read task failed: {e}"),
            )
        })?
        .map_err(|e| ApiError(StatusCode::INTERNAL_SERVER_ERROR, e.to_string()))?;
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
