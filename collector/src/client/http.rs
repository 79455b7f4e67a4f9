//! A small HTTP(S) client for the collector's API, used by the CLI subcommands and
//! tests: one connection per request (the CLI makes few), a bearer token when
//! given, and HTTPS verified against a given CA (`--ca`).

use std::path::Path;
use std::sync::Arc;
use std::time::Duration;

use http_body_util::{BodyExt, Full};
use hyper::body::Bytes;
use hyper_util::rt::TokioIo;
use thiserror::Error;

#[derive(Debug, Error)]
pub enum ClientError {
    #[error(
        "bad API address `{0}`: expected http://HOST:PORT or https://HOST:PORT, for example http://127.0.0.1:7401"
    )]
    BadUrl(String),
    #[error(
        "{url} is HTTPS: give the CA that signed the collector's api.tls certificate (--ca FILE or TRIBUTARY_CA)"
    )]
    NeedCa { url: String },
    #[error("--ca")]
    Tls(#[source] tributary_common::tls::TlsError),
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
    /// `HOST:PORT` to connect to, and the host for TLS and `Host:`.
    authority: String,
    host: String,
    https: bool,
    tls: Option<Arc<rustls::ClientConfig>>,
    token: Option<String>,
}

impl ApiClient {
    /// `base` is `http://HOST:PORT` or `https://HOST:PORT`; a bare `HOST:PORT`
    /// means `http://`.
    pub fn new(base: &str) -> Result<Self, ClientError> {
        let base = base.trim().trim_end_matches('/');
        let base = if base.contains("://") {
            base.to_owned()
        } else {
            format!("http://{base}")
        };
        let (https, rest) = match (base.strip_prefix("http://"), base.strip_prefix("https://")) {
            (Some(r), _) => (false, r),
            (_, Some(r)) => (true, r),
            _ => return Err(ClientError::BadUrl(base)),
        };
        let authority = match rest
            .parse::<hyper::Uri>()
            .ok()
            .and_then(|u| u.into_parts().authority)
        {
            Some(a) if !rest.is_empty() && a.as_str() == rest => a,
            _ => return Err(ClientError::BadUrl(base)),
        };
        let host = authority
            .host()
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_owned();
        let port = authority.port_u16().unwrap_or(if https { 443 } else { 80 });
        let authority = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Ok(ApiClient {
            base,
            authority,
            host,
            https,
            tls: None,
            token: None,
        })
    }

    /// Send `Authorization: Bearer <token>` with every request.
    pub fn with_token(mut self, token: Option<String>) -> Self {
        self.token = token.filter(|t| !t.is_empty());
        self
    }

    /// Verify an HTTPS collector against the CA in `ca`.
    pub fn with_ca(mut self, ca: Option<&Path>) -> Result<Self, ClientError> {
        if let Some(ca) = ca {
            self.tls =
                Some(tributary_common::tls::client_config(ca, None).map_err(ClientError::Tls)?);
        }
        if self.https && self.tls.is_none() {
            return Err(ClientError::NeedCa {
                url: self.base.clone(),
            });
        }
        Ok(self)
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
        let uri: hyper::Uri = path.parse().map_err(|_| ClientError::BadUrl(url.clone()))?;
        let mut req = hyper::Request::builder()
            .method(method)
            .uri(uri)
            .header("host", &self.authority);
        if body.is_some() {
            req = req.header("content-type", "application/json");
        }
        if let Some(t) = &self.token {
            req = req.header("authorization", format!("Bearer {t}"));
        }
        let req = req
            .body(
                body.map(|b| Full::new(Bytes::from(b)))
                    .unwrap_or_else(|| Full::new(Bytes::new())),
            )
            .map_err(|_| ClientError::BadUrl(url.clone()))?;
        let unreachable = |reason: String| ClientError::Unreachable {
            url: self.base.clone(),
            reason,
        };
        let fut = async {
            let tcp = tokio::net::TcpStream::connect(&self.authority)
                .await
                .map_err(|e| unreachable(e.to_string()))?;
            let _ = tcp.set_nodelay(true);
            let resp = if self.https {
                let Some(tls) = &self.tls else {
                    return Err(ClientError::NeedCa {
                        url: self.base.clone(),
                    });
                };
                let name = rustls::pki_types::ServerName::try_from(self.host.clone())
                    .map_err(|_| ClientError::BadUrl(self.base.clone()))?;
                let stream = tokio_rustls::TlsConnector::from(tls.clone())
                    .connect(name, tcp)
                    .await
                    .map_err(|e| unreachable(format!("TLS: {}", root_cause(&e))))?;
                send(stream, req).await
            } else {
                send(tcp, req).await
            }
            .map_err(|e| unreachable(root_cause(&e)))?;
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

/// One request on a new connection.
async fn send<S>(
    io: S,
    req: hyper::Request<Full<Bytes>>,
) -> Result<hyper::Response<hyper::body::Incoming>, hyper::Error>
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io)).await?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    sender.send_request(req).await
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
