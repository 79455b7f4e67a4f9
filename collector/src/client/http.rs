//! A small HTTP client for the collector's API, used by the CLI subcommands and tests.

use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::client::legacy::Client;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error("bad API address `{0}`: expected http://HOST:PORT, for example http://127.0.0.1:7401")]
    BadUrl(String),
    #[error(
        "cannot reach the collector API at {url}: {reason} (is `tributary serve` running there? set --api or TRIBUTARY_API)"
    )]
    Unreachable { url: String, reason: String },
    #[error("{url}: timed out")]
    Timeout { url: String },
    #[error("{message} (HTTP {status})")]
    Status {
        url: String,
        status: u16,
        message: String,
    },
    #[error("{url}: answer is not JSON: {reason}")]
    BadJson { url: String, reason: String },
}

/// Largest answer accepted (a read is capped well below this).
const MAX_BODY: usize = 256 << 20;

/// Client for one collector API base URL such as `http://127.0.0.1:7401`.
#[derive(Clone)]
pub struct ApiClient {
    base: String,
    http: Client<HttpConnector, Full<Bytes>>,
}

impl ApiClient {
    /// `base` is `http://HOST:PORT`; a bare `HOST:PORT` means the same.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        let valid = base
            .strip_prefix("http://")
            .is_some_and(|rest| !rest.is_empty() && rest.parse::<hyper::Uri>().is_ok());
        if !valid {
            return Err(ClientError::BadUrl(base));
        }
        let http = Client::builder(TokioExecutor::new()).build_http();
        Ok(ApiClient { base, http })
    }

    /// GET `path` (with query) and parse the JSON answer; non-2xx answers become
    /// [`ClientError::Status`] carrying the API's error message.
    pub async fn get_json(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, body, url) = self.request("GET", path, None, timeout).await?;
        parse(status, &body, url)
    }

    /// POST a JSON body.
    pub async fn post_json(
        &self,
        path: &str,
        body: &serde_json::Value,
        timeout: Duration,
    ) -> Result<serde_json::Value, ClientError> {
        let (status, body, url) = self
            .request("POST", path, Some(body.to_string()), timeout)
            .await?;
        parse(status, &body, url)
    }

    /// GET `path` and return status and raw body.
    pub async fn get_text(
        &self,
        path: &str,
        timeout: Duration,
    ) -> Result<(u16, String), ClientError> {
        let (status, body, _) = self.request("GET", path, None, timeout).await?;
        Ok((status, String::from_utf8_lossy(&body).into_owned()))
    }

    async fn request(
        &self,
        method: &str,
        path: &str,
        body: Option<String>,
        timeout: Duration,
    ) -> Result<(u16, Bytes, String), ClientError> {
        let url = format!("{}{}", self.base, path);
        let uri: hyper::Uri = url.parse().map_err(|_| ClientError::BadUrl(url.clone()))?;
        let mut req = hyper::Request::builder().method(method).uri(uri);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        let req = req
            .body(
                body.map(|b| Full::new(Bytes::from(b)))
                    .unwrap_or_else(|| Full::new(Bytes::new())),
            )
            .map_err(|_| ClientError::BadUrl(url.clone()))?;
        let fut = async {
            let resp = self
                .http
                .request(req)
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: self.base.clone(),
                    reason: root_cause(&e),
                })?;
            let status = resp.status().as_u16();
            let body = http_body_util::Limited::new(resp.into_body(), MAX_BODY)
                .collect()
                .await
                .map_err(|e| ClientError::Unreachable {
                    url: url.clone(),
                    reason: e.to_string(),
                })?
                .to_bytes();
            Ok((status, body, url.clone()))
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| ClientError::Timeout { url: url.clone() })?
    }
}

fn parse(status: u16, body: &[u8], url: String) -> Result<serde_json::Value, ClientError> {
    let v: Result<serde_json::Value, _> = serde_json::from_slice(body);
    if !(200..300).contains(&status) {
        let message = v
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| String::from_utf8_lossy(body).into_owned());
        return Err(ClientError::Status {
            url,
            status,
            message,
        });
    }
    v.map_err(|e| ClientError::BadJson {
        url,
        reason: e.to_string(),
    })
}

/// The innermost cause (hyper wraps `Connection refused` in two layers of
/// "client error (Connect): tcp connect error").
fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}
