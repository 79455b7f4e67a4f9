//! The HTTP API's listener, bounded whatever clients do: at most
//! `max_connections` at once (more wait in the accept queue), request headers read
//! within `header_timeout` (a slow-header client is dropped; the same timeout ends
//! an idle keep-alive connection), request line and headers of bounded size, and a
//! JSON body for every error status, including the ones the router and the
//! extractors produce (405, 413, …).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use axum::Router;
use axum::extract::Request;
use axum::http::{HeaderValue, StatusCode, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use hyper_util::rt::{TokioIo, TokioTimer};
use hyper_util::service::TowerToHyperService;
use serde_json::json;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use tributary_common::reload::Reloading;

use crate::metrics::Metrics;

/// Limits of the HTTP listener.
#[derive(Debug, Clone, Copy)]
pub struct HttpLimits {
    /// Connections served at once.
    pub max_connections: usize,
    /// A request's line and headers must arrive within this; also how long an idle
    /// keep-alive connection stays open.
    pub header_timeout: Duration,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            max_connections: 512,
            header_timeout: Duration::from_secs(10),
        }
    }
}

/// Longest request target (path and query).
const MAX_URI_BYTES: usize = 8 << 10;
/// Most bytes of request headers.
const MAX_HEADER_BYTES: usize = 16 << 10;
/// hyper's read buffer: a request head larger than this is refused by hyper itself.
const MAX_BUF_BYTES: usize = 64 << 10;
/// How long open connections get to finish at shutdown.
const DRAIN: Duration = Duration::from_secs(5);

/// Add the size checks and JSON errors to `router`.
pub fn harden(router: Router) -> Router {
    router.layer(axum::middleware::from_fn(bounded_and_json))
}

/// Refuse oversized request targets and headers (JSON 414 and 431), and give every
/// error answer without a JSON body one (`{"error": "..."}`).
async fn bounded_and_json(req: Request, next: Next) -> Response {
    let uri_len = req.uri().path_and_query().map_or(0, |p| p.as_str().len());
    if uri_len > MAX_URI_BYTES {
        return error(
            StatusCode::URI_TOO_LONG,
            format!("request target of {uri_len} bytes; at most {MAX_URI_BYTES}"),
        );
    }
    let header_bytes: usize = req
        .headers()
        .iter()
        .map(|(k, v)| k.as_str().len() + v.len() + 4)
        .sum();
    if header_bytes > MAX_HEADER_BYTES {
        return error(
            StatusCode::REQUEST_HEADER_FIELDS_TOO_LARGE,
            format!("request headers of {header_bytes} bytes; at most {MAX_HEADER_BYTES}"),
        );
    }
    let resp = next.run(req).await;
    let status = resp.status();
    let is_json = resp
        .headers()
        .get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/json"));
    if !(status.is_client_error() || status.is_server_error()) || is_json {
        return resp;
    }
    // An extractor's or the router's plain-text rejection: keep its words.
    let (_, body) = resp.into_parts();
    let text = axum::body::to_bytes(body, 4096).await.unwrap_or_default();
    let text = String::from_utf8_lossy(&text).trim().to_owned();
    let reason = status.canonical_reason().unwrap_or("error");
    let message = if text.is_empty() {
        reason.to_ascii_lowercase()
    } else {
        text
    };
    error(status, message)
}

fn error(status: StatusCode, message: String) -> Response {
    let mut resp = (status, axum::Json(json!({ "error": message }))).into_response();
    resp.headers_mut().insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    resp
}

/// The JSON answer for a method the route does not take.
pub async fn method_not_allowed() -> Response {
    error(
        StatusCode::METHOD_NOT_ALLOWED,
        "method not allowed on this endpoint".into(),
    )
}

/// Serve `router` on `listener` until `shutdown`, within `limits`; then let open
/// requests finish (bounded).
/// With `tls`, connections are HTTPS (the certificate in force at accept time).
pub async fn serve(
    listener: TcpListener,
    router: Router,
    limits: HttpLimits,
    tls: Option<Arc<Reloading<rustls::ServerConfig>>>,
    metrics: Arc<Metrics>,
    shutdown: CancellationToken,
) -> std::io::Result<()> {
    let slots = Arc::new(Semaphore::new(limits.max_connections.max(1)));
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        // A slot before accepting: over the cap, clients wait in the accept queue.
        let permit = tokio::select! {
            p = slots.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
            _ = shutdown.cancelled() => break,
        };
        let (tcp, peer): (_, SocketAddr) = tokio::select! {
            r = listener.accept() => match r {
                Ok(x) => { backoff = Duration::from_millis(10); x }
                Err(e) => {
                    // EMFILE and friends: wait and retry, never exit.
                    metrics.error("http_accept");
                    tributary_common::ratelimit::warn("http_accept", format_args!("HTTP API cannot accept a connection: {e}"));
                    tokio::time::sleep(backoff).await;
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
            _ = shutdown.cancelled() => break,
        };
        // Handlers that need the client's address (HTTP producers) find it here.
        let service = TowerToHyperService::new(
            router
                .clone()
                .layer(axum::Extension(super::produce::Peer(peer)))
                .into_service::<hyper::body::Incoming>(),
        );
        let shutdown = shutdown.clone();
        let acceptor = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.current()));
        let metrics = metrics.clone();
        tracker.spawn(async move {
            let _permit = permit;
            match acceptor {
                None => serve_connection(tcp, service, limits, peer, shutdown).await,
                Some(acceptor) => {
                    // The handshake gets the header timeout too: a silent client
                    // cannot hold a slot.
                    match tokio::time::timeout(limits.header_timeout, acceptor.accept(tcp)).await {
                        Ok(Ok(stream)) => {
                            serve_connection(stream, service, limits, peer, shutdown).await
                        }
                        Ok(Err(e)) => {
                            metrics.error("http_tls_handshake");
                            tributary_common::ratelimit::warn(
                                "http_tls",
                                format_args!(
                                    "HTTPS connection from {peer}: TLS handshake failed: {e}"
                                ),
                            );
                        }
                        Err(_) => metrics.error("http_tls_handshake"),
                    }
                }
            }
        });
    }
    tracker.close();
    let _ = tokio::time::timeout(DRAIN + Duration::from_secs(1), tracker.wait()).await;
    Ok(())
}

/// Serve HTTP/1.1 on one connection (plain or TLS) until it ends or `shutdown`.
async fn serve_connection<S>(
    io: S,
    service: TowerToHyperService<axum::routing::RouterIntoService<hyper::body::Incoming>>,
    limits: HttpLimits,
    peer: SocketAddr,
    shutdown: CancellationToken,
) where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let mut builder = hyper::server::conn::http1::Builder::new();
    builder
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_timeout)
        .max_buf_size(MAX_BUF_BYTES);
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    let result = tokio::select! {
        r = conn.as_mut() => r,
        _ = shutdown.cancelled() => {
            conn.as_mut().graceful_shutdown();
            tokio::time::timeout(DRAIN, conn.as_mut()).await.unwrap_or(Ok(()))
        }
    };
    if let Err(e) = result {
        tracing::debug!(%peer, error = %e, "HTTP connection ended");
    }
}
