//! `POST /v1/topics/{topic}/records`: programs that cannot run an agent
//! (serverless functions, scripts, other pipelines) push records over HTTP.
//!
//! The body is JSON lines — `{"message", "timestamp"?, "host"?, "source"?,
//! "fields"?}`, one object per line — or, with `Content-Type: text/plain`, plain
//! lines, each a message. `Content-Encoding: gzip` is accepted. Missing hosts are
//! the `host` query parameter or else the client's address; missing sources the
//! `source` parameter or else `http`; missing timestamps the arrival time. The body
//! is checked whole before anything is stored: a bad line refuses it all with a
//! 400 naming the line. Records are appended like an agent's batch (same topic
//! rules, each host and source in one partition) and the answer, after the
//! durable append, gives each partition's offset range.

use std::collections::BTreeMap;
use std::io::Read;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::Router;
use axum::extract::{DefaultBodyLimit, Path, Query, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::post;
use serde::Deserialize;
use serde_json::{Map, Value, json};
use tributary_common::record::{self, BlockWriter};

use super::ApiError;
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};

/// Largest request body, as sent (compressed or not).
pub const MAX_BODY: usize = 16 << 20;
/// Largest body once decompressed.
pub const MAX_DECODED: usize = 64 << 20;

/// The client's address, added to each request by the server.
#[derive(Clone, Copy)]
pub struct Peer(pub SocketAddr);

#[derive(Clone)]
struct Producer {
    writer: Arc<Storage>,
    metrics: Arc<Metrics>,
}

/// The produce route, with its own body limit.
pub fn routes(writer: Arc<Storage>, metrics: Arc<Metrics>) -> Router {
    Router::new()
        .route("/v1/topics/{topic}/records", post(produce))
        .layer(DefaultBodyLimit::max(MAX_BODY))
        .with_state(Producer { writer, metrics })
}

#[derive(Deserialize, Default)]
struct Defaults {
    host: Option<String>,
    source: Option<String>,
}

/// One JSON line.
#[derive(Deserialize)]
#[serde(deny_unknown_fields)]
struct Line {
    message: String,
    timestamp: Option<Value>,
    host: Option<String>,
    source: Option<String>,
    fields: Option<Map<String, Value>>,
}

/// A record ready to encode.
struct Parsed {
    host: String,
    source: String,
    timestamp_ms: i64,
    fields: Vec<u8>,
    message: Vec<u8>,
}

fn bad(message: String) -> ApiError {
    ApiError(StatusCode::BAD_REQUEST, message)
}

fn timestamp(v: &Value, now_ms: i64) -> Result<i64, String> {
    match v {
        Value::Null => Ok(now_ms),
        Value::Number(n) => n
            .as_i64()
            .ok_or_else(|| format!("`timestamp` {n} is not whole milliseconds")),
        Value::String(s) => {
            tributary_common::timefmt::parse_ms(s).map_err(|e| format!("`timestamp` {s:?}: {e}"))
        }
        other => Err(format!(
            "`timestamp` must be RFC 3339 or epoch milliseconds, not {other}"
        )),
    }
}

/// The body's records, or the reason the whole body is refused.
fn parse(
    body: &[u8],
    text: bool,
    host: &str,
    source: &str,
    now_ms: i64,
) -> Result<Vec<Parsed>, ApiError> {
    let mut lines: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    if lines.last().is_some_and(|l| l.is_empty()) {
        lines.pop();
    }
    let mut out = Vec::with_capacity(lines.len().min(1 << 20));
    for (i, line) in lines.into_iter().enumerate() {
        let n = i + 1;
        let line = line.strip_suffix(b"\r").unwrap_or(line);
        if text {
            out.push(Parsed {
                host: host.to_owned(),
                source: source.to_owned(),
                timestamp_ms: now_ms,
                fields: Vec::new(),
                message: line.to_vec(),
            });
            continue;
        }
        if line.iter().all(u8::is_ascii_whitespace) {
            return Err(bad(format!("line {n}: empty (one JSON object per line)")));
        }
        let l: Line = serde_json::from_slice(line).map_err(|e| bad(format!("line {n}: {e}")))?;
        let timestamp_ms = match &l.timestamp {
            None => now_ms,
            Some(v) => timestamp(v, now_ms).map_err(|e| bad(format!("line {n}: {e}")))?,
        };
        let fields = match l.fields {
            Some(f) if !f.is_empty() => serde_json::to_vec(&f).unwrap_or_default(),
            _ => Vec::new(),
        };
        out.push(Parsed {
            host: l.host.unwrap_or_else(|| host.to_owned()),
            source: l.source.unwrap_or_else(|| source.to_owned()),
            timestamp_ms,
            fields,
            message: l.message.into_bytes(),
        });
    }
    if out.is_empty() {
        return Err(bad("empty body: no records".into()));
    }
    Ok(out)
}

/// Record blocks, one per run of records with the same host and source.
/// Encode as record blocks, stamped with the producer's token name (`agent`) when
/// it authenticated.
fn encode(records: &[Parsed], agent: &str) -> Vec<u8> {
    let mut payload = Vec::new();
    let mut current: Option<(&str, &str, BlockWriter)> = None;
    for r in records {
        let same = current
            .as_ref()
            .is_some_and(|(h, s, _)| *h == r.host && *s == r.source);
        if !same {
            if let Some((_, _, b)) = current.take() {
                b.finish(&mut payload);
            }
            let b = BlockWriter::begin_as(&mut payload, &r.host, &r.source, agent, 0, b"");
            current = Some((&r.host, &r.source, b));
        }
        if let Some((_, _, b)) = current.as_mut() {
            b.push(&mut payload, 0, r.timestamp_ms, 0, &r.fields, &r.message);
        }
    }
    if let Some((_, _, b)) = current {
        b.finish(&mut payload);
    }
    payload
}

fn decode_body(headers: &HeaderMap, body: &[u8]) -> Result<Vec<u8>, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("identity")
        .trim()
        .to_ascii_lowercase();
    match encoding.as_str() {
        "identity" | "" => Ok(body.to_vec()),
        "gzip" | "x-gzip" => {
            let mut out = Vec::new();
            flate2::read::MultiGzDecoder::new(body)
                .take(MAX_DECODED as u64 + 1)
                .read_to_end(&mut out)
                .map_err(|e| bad(format!("body is not valid gzip: {e}")))?;
            if out.len() > MAX_DECODED {
                return Err(ApiError(
                    StatusCode::PAYLOAD_TOO_LARGE,
                    format!("body decompresses to more than {MAX_DECODED} bytes"),
                ));
            }
            Ok(out)
        }
        other => Err(ApiError(
            StatusCode::UNSUPPORTED_MEDIA_TYPE,
            format!("Content-Encoding `{other}` is not accepted: send gzip or none"),
        )),
    }
}

async fn produce(
    State(p): State<Producer>,
    Path(topic): Path<String>,
    Query(defaults): Query<Defaults>,
    peer: Option<axum::Extension<Peer>>,
    principal: Option<axum::Extension<super::auth::Principal>>,
    headers: HeaderMap,
    body: axum::body::Bytes,
) -> Result<Response, ApiError> {
    p.metrics.http_requests.inc();
    // topics.allow knows an HTTP producer by its token's name (api.auth).
    let writer = principal
        .as_ref()
        .map_or("", |axum::Extension(p)| p.name.as_str());
    if !p.writer.config().topic_acl.allows(writer, &topic) {
        p.metrics.error("topic_forbidden");
        return Err(ApiError(
            StatusCode::FORBIDDEN,
            crate::access::TopicAcl::refusal(writer, &topic),
        ));
    }
    let body = decode_body(&headers, &body)?;
    let text = headers
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.trim().starts_with("text/plain"));
    let peer_host = peer.map_or_else(
        || "http".to_owned(),
        |axum::Extension(Peer(a))| a.ip().to_string(),
    );
    let host = defaults.host.unwrap_or(peer_host);
    let source = defaults.source.unwrap_or_else(|| "http".to_owned());
    let now = tributary_common::timefmt::now_ms();
    let records = parse(&body, text, &host, &source, now)?;
    let payload = encode(&records, writer);
    drop(records);
    let summary = record::summarize(&payload).map_err(|e| {
        ApiError(
            StatusCode::INTERNAL_SERVER_ERROR,
            format!("cannot encode the records: {e}"),
        )
    })?;
    let refused = |e: StorageError| match e {
        StorageError::InvalidTopic(_) => bad(format!(
            "invalid topic name `{topic}`: use [A-Za-z0-9._-]{{1,249}}"
        )),
        StorageError::TopicRefused(why) => ApiError(StatusCode::NOT_FOUND, why),
        other => ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not stored: {}", tributary_common::error::report(&other)),
        ),
    };
    // The topic first (same rules as agents), so that each block's partition, and
    // so the answer's offset ranges, are known before the payload moves.
    p.writer.create_topic(&topic).await.map_err(refused)?;
    let partitions = p
        .writer
        .reader()
        .topic(&topic)
        .map_or(1, |t| t.partition_count() as u32);
    let mut counts: BTreeMap<u32, u64> = BTreeMap::new();
    for block in record::blocks(&payload, false).flatten() {
        *counts
            .entry(record::partition_for_block(&block.header, partitions))
            .or_default() += u64::from(block.header.record_count);
    }
    let appended = p
        .writer
        .append(&topic, payload, summary)
        .await
        .map_err(refused)?;
    p.writer.make_durable(&appended).await.map_err(|e| {
        ApiError(
            StatusCode::SERVICE_UNAVAILABLE,
            format!("not durable: {}", tributary_common::error::report(&e)),
        )
    })?;
    let ranges: Vec<Value> = appended
        .parts
        .iter()
        .map(|(part, end)| {
            let n = counts.get(&part.id()).copied().unwrap_or(0);
            json!({
                "partition": part.id(),
                "first_offset": end.saturating_sub(n),
                "last_offset": end.saturating_sub(1),
                "records": n,
            })
        })
        .collect();
    p.metrics.records_in.inc_by(appended.records);
    Ok(axum::Json(json!({
        "topic": topic,
        "records": appended.records,
        "partitions": ranges,
    }))
    .into_response())
}
