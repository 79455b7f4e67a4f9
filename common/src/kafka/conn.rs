//! One client connection to one Kafka broker: TCP or TLS, the API versions both
//! sides speak, and request/response calls with a correlation id, a timeout and a
//! size limit on every answer.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Buf, BufMut, Bytes, BytesMut};
use kafka_protocol::messages::{
    ApiKey, ApiVersionsRequest, ApiVersionsResponse, RequestHeader, ResponseHeader,
    SaslAuthenticateRequest, SaslAuthenticateResponse, SaslHandshakeRequest, SaslHandshakeResponse,
};
use kafka_protocol::protocol::{Decodable, Encodable, HeaderVersion, Request, StrBytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio::time::timeout;

/// What can go wrong talking to a broker; each names the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("Kafka broker {addr}: {what}: {source}")]
    Io {
        addr: String,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("Kafka broker {addr}: no answer to {what} within {secs} s")]
    Timeout {
        addr: String,
        what: &'static str,
        secs: u64,
    },
    #[error("Kafka broker {addr}: {what}")]
    Protocol { addr: String, what: String },
    #[error("Kafka broker {addr} answered {api} with error {code} ({name}){message}")]
    Broker {
        addr: String,
        api: &'static str,
        code: i16,
        name: &'static str,
        message: String,
    },
}

impl KafkaError {
    /// Whether trying again (after a metadata refresh, or on another connection)
    /// may succeed.
    pub fn retriable(&self) -> bool {
        match self {
            KafkaError::Broker { code, .. } => retriable_code(*code),
            KafkaError::Io { .. } | KafkaError::Timeout { .. } => true,
            KafkaError::Protocol { .. } => false,
        }
    }
}

/// Kafka error codes that clear up by themselves (leader moves, brokers restart).
pub fn retriable_code(code: i16) -> bool {
    matches!(
        code,
        3 | 5 | 6 | 7 | 8 | 13 | 14 | 15 | 16 | 19 | 20 | 56 | 74 | 75
    )
}

/// The name of a Kafka error code, for messages.
pub fn error_name(code: i16) -> &'static str {
    match code {
        0 => "NONE",
        1 => "OFFSET_OUT_OF_RANGE",
        2 => "CORRUPT_MESSAGE",
        3 => "UNKNOWN_TOPIC_OR_PARTITION",
        5 => "LEADER_NOT_AVAILABLE",
        6 => "NOT_LEADER_OR_FOLLOWER",
        7 => "REQUEST_TIMED_OUT",
        8 => "BROKER_NOT_AVAILABLE",
        10 => "MESSAGE_TOO_LARGE",
        13 => "NETWORK_EXCEPTION",
        14 => "COORDINATOR_LOAD_IN_PROGRESS",
        15 => "COORDINATOR_NOT_AVAILABLE",
        16 => "NOT_COORDINATOR",
        17 => "INVALID_TOPIC_EXCEPTION",
        19 => "NOT_ENOUGH_REPLICAS",
        20 => "NOT_ENOUGH_REPLICAS_AFTER_APPEND",
        25 => "UNKNOWN_MEMBER_ID",
        27 => "REBALANCE_IN_PROGRESS",
        29 => "TOPIC_AUTHORIZATION_FAILED",
        31 => "CLUSTER_AUTHORIZATION_FAILED",
        33 => "UNSUPPORTED_SASL_MECHANISM",
        34 => "ILLEGAL_SASL_STATE",
        35 => "UNSUPPORTED_VERSION",
        56 => "KAFKA_STORAGE_ERROR",
        58 => "SASL_AUTHENTICATION_FAILED",
        74 => "FENCED_LEADER_EPOCH",
        75 => "UNKNOWN_LEADER_EPOCH",
        79 => "MEMBER_ID_REQUIRED",
        _ => "see the Kafka protocol's error codes",
    }
}

/// A SASL mechanism the client speaks.
#[derive(Debug, Clone, Copy, PartialEq, Eq, serde::Deserialize)]
pub enum SaslMechanism {
    #[serde(rename = "plain", alias = "PLAIN")]
    Plain,
    #[serde(rename = "scram-sha-256", alias = "SCRAM-SHA-256")]
    ScramSha256,
    #[serde(rename = "scram-sha-512", alias = "SCRAM-SHA-512")]
    ScramSha512,
}

impl SaslMechanism {
    /// The name brokers know it by (SaslHandshake).
    pub fn name(self) -> &'static str {
        match self {
            SaslMechanism::Plain => "PLAIN",
            SaslMechanism::ScramSha256 => "SCRAM-SHA-256",
            SaslMechanism::ScramSha512 => "SCRAM-SHA-512",
        }
    }
}

/// SASL credentials for a connection.
#[derive(Clone)]
pub struct Sasl {
    pub mechanism: SaslMechanism,
    pub username: String,
    pub password: String,
}

impl std::fmt::Debug for Sasl {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(
            f,
            "Sasl {{ mechanism: {}, username: {:?}, password: <hidden> }}",
            self.mechanism.name(),
            self.username
        )
    }
}

/// How to reach brokers: TLS or not, SASL or not, and the limits of one call.
#[derive(Clone, Debug)]
pub struct ConnSettings {
    pub client_id: String,
    pub tls: Option<Arc<rustls::ClientConfig>>,
    pub sasl: Option<Sasl>,
    /// Connecting, and every call's answer.
    pub timeout: Duration,
    /// The largest answer accepted.
    pub max_response: usize,
}

trait Stream: AsyncRead + AsyncWrite + Send + Unpin {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin> Stream for T {}

/// An open connection to one broker.
pub struct Conn {
    addr: String,
    stream: Box<dyn Stream>,
    client_id: StrBytes,
    next_correlation: i32,
    /// api key → (min, max) version the broker speaks.
    versions: HashMap<i16, (i16, i16)>,
    timeout: Duration,
    max_response: usize,
}

impl Conn {
    /// Connect to `addr` (`host:port`), agree on versions, authenticate.
    pub async fn open(addr: &str, s: &ConnSettings) -> Result<Conn, KafkaError> {
        let io = |what| {
            let addr = addr.to_owned();
            move |source| KafkaError::Io { addr, what, source }
        };
        let secs = s.timeout.as_secs().max(1);
        let tcp = timeout(s.timeout, TcpStream::connect(addr))
            .await
            .map_err(|_| KafkaError::Timeout {
                addr: addr.to_owned(),
                what: "connect",
                secs,
            })?
            .map_err(io("connect"))?;
        let _ = tcp.set_nodelay(true);
        let stream: Box<dyn Stream> = match &s.tls {
            None => Box::new(tcp),
            Some(cfg) => {
                let host = addr.rsplit_once(':').map_or(addr, |(h, _)| h);
                let host = host.trim_start_matches('[').trim_end_matches(']');
                let name =
                    rustls::pki_types::ServerName::try_from(host.to_owned()).map_err(|e| {
                        KafkaError::Protocol {
                            addr: addr.to_owned(),
                            what: format!("`{host}` is not a name TLS can check: {e}"),
                        }
                    })?;
                let tls = tokio_rustls::TlsConnector::from(cfg.clone());
                let stream = timeout(s.timeout, tls.connect(name, tcp))
                    .await
                    .map_err(|_| KafkaError::Timeout {
                        addr: addr.to_owned(),
                        what: "the TLS handshake",
                        secs,
                    })?
                    .map_err(io("TLS handshake"))?;
                Box::new(stream)
            }
        };
        let mut conn = Conn {
            addr: addr.to_owned(),
            stream,
            client_id: StrBytes::from_string(s.client_id.clone()),
            next_correlation: 1,
            versions: HashMap::new(),
            timeout: s.timeout,
            max_response: s.max_response,
        };
        // ApiVersions v0 is understood by every broker since 0.10.
        let v: ApiVersionsResponse = conn.call_v(&ApiVersionsRequest::default(), 0).await?;
        conn.check("ApiVersions", v.error_code, None)?;
        conn.versions = v
            .api_keys
            .iter()
            .map(|k| (k.api_key, (k.min_version, k.max_version)))
            .collect();
        if let Some(sasl) = &s.sasl {
            conn.authenticate(sasl).await?;
        }
        Ok(conn)
    }

    pub fn addr(&self) -> &str {
        &self.addr
    }

    /// The newest version of `R` both this client (`ours`) and the broker speak.
    pub fn version<R: Request>(
        &self,
        ours: std::ops::RangeInclusive<i16>,
    ) -> Result<i16, KafkaError> {
        let (min, max) = self.versions.get(&R::KEY).copied().unwrap_or((-1, -1));
        let best = (*ours.end()).min(max);
        if best < *ours.start() || best < min {
            let api = ApiKey::try_from(R::KEY).map_or("an API", api_name);
            return Err(KafkaError::Protocol {
                addr: self.addr.clone(),
                what: format!(
                    "no common version of {api}: the broker speaks {min}..={max}, this client {}..={}",
                    ours.start(),
                    ours.end()
                ),
            });
        }
        Ok(best)
    }

    /// `error` from an answer to `api` as a [`KafkaError`] (`Ok` for 0).
    pub fn check(
        &self,
        api: &'static str,
        code: i16,
        message: Option<&str>,
    ) -> Result<(), KafkaError> {
        if code == 0 {
            return Ok(());
        }
        Err(KafkaError::Broker {
            addr: self.addr.clone(),
            api,
            code,
            name: error_name(code),
            message: message.map(|m| format!(": {m}")).unwrap_or_default(),
        })
    }

    /// Send `req` at `version` and read its answer.
    pub async fn call_v<R: Request>(
        &mut self,
        req: &R,
        version: i16,
    ) -> Result<R::Response, KafkaError> {
        let correlation = self.next_correlation;
        self.next_correlation = self.next_correlation.wrapping_add(1);
        let header = RequestHeader::default()
            .with_request_api_key(R::KEY)
            .with_request_api_version(version)
            .with_correlation_id(correlation)
            .with_client_id(Some(self.client_id.clone()));
        let protocol = |e: anyhow::Error| KafkaError::Protocol {
            addr: self.addr.clone(),
            what: format!("cannot encode a request: {e}"),
        };
        let mut buf = BytesMut::with_capacity(256);
        buf.put_i32(0);
        header
            .encode(&mut buf, R::header_version(version))
            .map_err(protocol)?;
        req.encode(&mut buf, version).map_err(protocol)?;
        let len = i32::try_from(buf.len() - 4).map_err(|_| KafkaError::Protocol {
            addr: self.addr.clone(),
            what: "request too large".into(),
        })?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        let what = ApiKey::try_from(R::KEY).map_or("a request", api_name);
        let secs = self.timeout.as_secs().max(1);
        let addr = self.addr.clone();
        let deadline = tokio::time::Instant::now() + self.timeout;
        let timed_out = || KafkaError::Timeout {
            addr: addr.clone(),
            what,
            secs,
        };
        let io = |source| KafkaError::Io {
            addr: addr.clone(),
            what: "connection",
            source,
        };
        tokio::time::timeout_at(deadline, async {
            self.stream.write_all(&buf).await?;
            self.stream.flush().await
        })
        .await
        .map_err(|_| timed_out())?
        .map_err(io)?;
        let mut len = [0u8; 4];
        tokio::time::timeout_at(deadline, self.stream.read_exact(&mut len))
            .await
            .map_err(|_| timed_out())?
            .map_err(io)?;
        let len = i32::from_be_bytes(len);
        if len < 4 || len as usize > self.max_response {
            return Err(KafkaError::Protocol {
                addr,
                what: format!(
                    "an answer of {len} bytes to {what} (the limit is {})",
                    self.max_response
                ),
            });
        }
        let mut body = vec![0u8; len as usize];
        tokio::time::timeout_at(deadline, self.stream.read_exact(&mut body))
            .await
            .map_err(|_| timed_out())?
            .map_err(io)?;
        let mut body = Bytes::from(body);
        let malformed = |e: anyhow::Error| KafkaError::Protocol {
            addr: addr.clone(),
            what: format!("a malformed answer to {what}: {e}"),
        };
        let h = ResponseHeader::decode(&mut body, R::Response::header_version(version))
            .map_err(malformed)?;
        if h.correlation_id != correlation {
            return Err(KafkaError::Protocol {
                addr,
                what: format!(
                    "an answer to request {} where {correlation} was expected",
                    h.correlation_id
                ),
            });
        }
        let resp = R::Response::decode(&mut body, version).map_err(malformed)?;
        if body.has_remaining() && version > 0 {
            tracing::debug!(broker = %addr, api = what, left = body.remaining(), "answer longer than its schema");
        }
        Ok(resp)
    }

    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), KafkaError> {
        let v = self.version::<SaslHandshakeRequest>(0..=1)?;
        let req = SaslHandshakeRequest::default()
            .with_mechanism(StrBytes::from_static_str(sasl.mechanism.name()));
        let r: SaslHandshakeResponse = self.call_v(&req, v).await?;
        self.check("SaslHandshake", r.error_code, None)?;
        if sasl.mechanism != SaslMechanism::Plain {
            return Err(KafkaError::Protocol {
                addr: self.addr.clone(),
                what: format!("SASL {} is not implemented yet", sasl.mechanism.name()),
            });
        }
        let mut token = Vec::with_capacity(sasl.username.len() + sasl.password.len() + 2);
        token.push(0);
        token.extend_from_slice(sasl.username.as_bytes());
        token.push(0);
        token.extend_from_slice(sasl.password.as_bytes());
        let v = self.version::<SaslAuthenticateRequest>(0..=1)?;
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let r: SaslAuthenticateResponse = self.call_v(&req, v).await?;
        self.check(
            "SaslAuthenticate",
            r.error_code,
            r.error_message.as_ref().map(|m| m.as_str()),
        )
    }
}

fn api_name(k: ApiKey) -> &'static str {
    match k {
        ApiKey::Produce => "Produce",
        ApiKey::Fetch => "Fetch",
        ApiKey::ListOffsets => "ListOffsets",
        ApiKey::Metadata => "Metadata",
        ApiKey::ApiVersions => "ApiVersions",
        ApiKey::SaslHandshake => "SaslHandshake",
        ApiKey::SaslAuthenticate => "SaslAuthenticate",
        ApiKey::FindCoordinator => "FindCoordinator",
        ApiKey::JoinGroup => "JoinGroup",
        ApiKey::SyncGroup => "SyncGroup",
        ApiKey::Heartbeat => "Heartbeat",
        ApiKey::LeaveGroup => "LeaveGroup",
        ApiKey::OffsetCommit => "OffsetCommit",
        ApiKey::OffsetFetch => "OffsetFetch",
        _ => "a request",
    }
}
