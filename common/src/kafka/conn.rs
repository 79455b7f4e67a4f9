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

use super::scram::{ScramClient, ScramError, ScramHash};

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

    /// SaslHandshake naming the mechanism, then its SaslAuthenticate rounds: one
    /// for PLAIN, two for SCRAM (client-first → server-first, client-final →
    /// server-final, the server's signature checked).
    async fn authenticate(&mut self, sasl: &Sasl) -> Result<(), KafkaError> {
        let mechanism = sasl.mechanism.name();
        let v = self.version::<SaslHandshakeRequest>(0..=1)?;
        let req =
            SaslHandshakeRequest::default().with_mechanism(StrBytes::from_static_str(mechanism));
        let r: SaslHandshakeResponse = self.call_v(&req, v).await?;
        if r.error_code == UNSUPPORTED_SASL_MECHANISM {
            let offered: Vec<&str> = r.mechanisms.iter().map(|m| m.as_str()).collect();
            let offered = format!(
                "the broker does not offer {mechanism}, only {}: configure one of those, or enable {mechanism} on the broker",
                offered.join(", ")
            );
            return self.check("SaslHandshake", r.error_code, Some(&offered));
        }
        self.check("SaslHandshake", r.error_code, None)?;
        let hash = match sasl.mechanism {
            SaslMechanism::Plain => {
                let mut token = Vec::with_capacity(sasl.username.len() + sasl.password.len() + 2);
                token.push(0);
                token.extend_from_slice(sasl.username.as_bytes());
                token.push(0);
                token.extend_from_slice(sasl.password.as_bytes());
                self.sasl_authenticate(sasl, token).await?;
                return Ok(());
            }
            SaslMechanism::ScramSha256 => ScramHash::Sha256,
            SaslMechanism::ScramSha512 => ScramHash::Sha512,
        };
        let scram = ScramClient::with_random_nonce(hash, &sasl.username, &sasl.password)
            .map_err(|e| self.scram_error(sasl, e))?;
        let server_first = self.sasl_authenticate(sasl, scram.client_first()).await?;
        // PBKDF2 is up to a million HMACs: off the async workers.
        let step = tokio::task::spawn_blocking(move || scram.server_first(&server_first))
            .await
            .map_err(|e| KafkaError::Protocol {
                addr: self.addr.clone(),
                what: format!("the {mechanism} computation did not finish: {e}"),
            })?
            .map_err(|e| self.scram_error(sasl, e))?;
        let server_final = self
            .sasl_authenticate(sasl, step.message().to_vec())
            .await?;
        step.server_final(&server_final)
            .map_err(|e| self.scram_error(sasl, e))?;
        tracing::debug!(broker = %self.addr, mechanism, user = %sasl.username, "SASL authenticated");
        Ok(())
    }

    /// One SaslAuthenticate round: send `token`, return the broker's answer. A
    /// refusal (SASL_AUTHENTICATION_FAILED) names the mechanism and the user.
    async fn sasl_authenticate(
        &mut self,
        sasl: &Sasl,
        token: Vec<u8>,
    ) -> Result<Bytes, KafkaError> {
        let v = self.version::<SaslAuthenticateRequest>(0..=1)?;
        let req = SaslAuthenticateRequest::default().with_auth_bytes(Bytes::from(token));
        let r: SaslAuthenticateResponse = self.call_v(&req, v).await?;
        let mut message = r.error_message.as_ref().map(|m| m.to_string());
        if r.error_code == SASL_AUTHENTICATION_FAILED {
            let refusal = refusal(sasl);
            message = Some(match message {
                Some(m) if !m.is_empty() => format!("{m}; {refusal}"),
                _ => refusal,
            });
        }
        self.check("SaslAuthenticate", r.error_code, message.as_deref())?;
        Ok(r.auth_bytes)
    }

    /// A failed SCRAM exchange as a [`KafkaError`] naming this broker, the
    /// mechanism and the user.
    fn scram_error(&self, sasl: &Sasl, e: ScramError) -> KafkaError {
        let what = match &e {
            ScramError::Server(reason) => format!("{} (it answered `e={reason}`)", refusal(sasl)),
            _ => format!(
                "{} authentication of user `{}`: {e}",
                sasl.mechanism.name(),
                sasl.username
            ),
        };
        KafkaError::Protocol {
            addr: self.addr.clone(),
            what,
        }
    }
}

/// SaslHandshake: the broker does not offer the mechanism asked for.
const UNSUPPORTED_SASL_MECHANISM: i16 = 33;
/// SaslAuthenticate: wrong credentials, or an unknown user.
const SASL_AUTHENTICATION_FAILED: i16 = 58;

/// What a broker's refusal of `sasl` means, and what to check.
fn refusal(sasl: &Sasl) -> String {
    let mechanism = sasl.mechanism.name();
    let user = &sasl.username;
    let mut s = format!(
        "the broker refused the {mechanism} credentials of user `{user}`: check the username and password"
    );
    if sasl.mechanism != SaslMechanism::Plain {
        s.push_str(&format!(
            ", and that the broker has {mechanism} credentials for `{user}`"
        ));
    }
    s
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

#[cfg(test)]
mod tests {
    use super::*;
    use crate::kafka::scram::{base64_decode, base64_encode};
    use anyhow::{Context, bail};
    use kafka_protocol::messages::api_versions_response::ApiVersion;
    use ring::{digest, hmac, pbkdf2};
    use std::num::NonZeroU32;
    use tokio::net::TcpListener;

    const USER: &str = "tributary";
    const PASSWORD: &str = "correct horse";

    /// What the fake broker answers a client-final message with a right proof.
    #[derive(Debug, Clone, Copy, PartialEq)]
    enum Answer {
        /// `v=` with the server signature.
        Honest,
        /// `v=` with a signature made without the server key (an impostor).
        ForgedSignature,
        /// `e=invalid-proof` (as RFC 5802 servers do; Kafka answers error 58).
        ErrorAttribute,
    }

    /// A user's SCRAM credentials as a broker stores them (RFC 5802 §3): salt,
    /// iterations, StoredKey and ServerKey.
    struct Stored {
        hash: hmac::Algorithm,
        digest: &'static digest::Algorithm,
        salt: Vec<u8>,
        iterations: u32,
        stored_key: Vec<u8>,
        server_key: Vec<u8>,
    }

    fn stored(mechanism: SaslMechanism, password: &str) -> Stored {
        let (algorithm, hash, digest) = match mechanism {
            SaslMechanism::ScramSha512 => (
                pbkdf2::PBKDF2_HMAC_SHA512,
                hmac::HMAC_SHA512,
                &digest::SHA512,
            ),
            _ => (
                pbkdf2::PBKDF2_HMAC_SHA256,
                hmac::HMAC_SHA256,
                &digest::SHA256,
            ),
        };
        let salt = b"fake-broker-salt".to_vec();
        let iterations = 4096;
        let mut salted = vec![0u8; digest.output_len()];
        pbkdf2::derive(
            algorithm,
            NonZeroU32::new(iterations).unwrap(),
            &salt,
            password.as_bytes(),
            &mut salted,
        );
        let salted = hmac::Key::new(hash, &salted);
        let client_key = hmac::sign(&salted, b"Client Key");
        Stored {
            hash,
            digest,
            salt,
            iterations,
            stored_key: digest::digest(digest, client_key.as_ref())
                .as_ref()
                .to_vec(),
            server_key: hmac::sign(&salted, b"Server Key").as_ref().to_vec(),
        }
    }

    async fn read_frame(s: &mut TcpStream) -> anyhow::Result<Option<Bytes>> {
        let mut len = [0u8; 4];
        match s.read_exact(&mut len).await {
            Ok(_) => {}
            Err(e) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(None),
            Err(e) => return Err(e.into()),
        }
        let mut body = vec![0u8; i32::from_be_bytes(len) as usize];
        s.read_exact(&mut body).await?;
        Ok(Some(Bytes::from(body)))
    }

    /// The request in `frame`, after its header; and its correlation id.
    fn request<R: Request + Decodable>(
        frame: &mut Bytes,
        version: i16,
    ) -> anyhow::Result<(R, i32)> {
        let h = RequestHeader::decode(frame, R::header_version(version))?;
        Ok((R::decode(frame, version)?, h.correlation_id))
    }

    async fn respond<R: Encodable + HeaderVersion>(
        s: &mut TcpStream,
        correlation: i32,
        resp: &R,
        version: i16,
    ) -> anyhow::Result<()> {
        let mut buf = BytesMut::new();
        buf.put_i32(0);
        ResponseHeader::default()
            .with_correlation_id(correlation)
            .encode(&mut buf, R::header_version(version))?;
        resp.encode(&mut buf, version)?;
        let len = i32::try_from(buf.len() - 4)?;
        buf[..4].copy_from_slice(&len.to_be_bytes());
        s.write_all(&buf).await?;
        Ok(())
    }

    /// Serve one connection as a Kafka broker offering `mechanism` for `USER`
    /// with `credentials`: ApiVersions v0, SaslHandshake, and SCRAM over
    /// SaslAuthenticate, the proof checked by RFC 5802's formulas.
    async fn fake_broker(
        listener: TcpListener,
        mechanism: SaslMechanism,
        credentials: Stored,
        answer: Answer,
    ) -> anyhow::Result<()> {
        let (mut s, _) = listener.accept().await?;
        let mut auth_message = String::new();
        let mut server_nonce = String::new();
        while let Some(mut frame) = read_frame(&mut s).await? {
            let key = i16::from_be_bytes([frame[0], frame[1]]);
            let version = i16::from_be_bytes([frame[2], frame[3]]);
            match ApiKey::try_from(key) {
                Ok(ApiKey::ApiVersions) => {
                    let (_, c): (ApiVersionsRequest, _) = request(&mut frame, version)?;
                    let api = |k: ApiKey, max| {
                        ApiVersion::default()
                            .with_api_key(k as i16)
                            .with_min_version(0)
                            .with_max_version(max)
                    };
                    let resp = ApiVersionsResponse::default().with_api_keys(vec![
                        api(ApiKey::ApiVersions, 3),
                        api(ApiKey::SaslHandshake, 1),
                        api(ApiKey::SaslAuthenticate, 2),
                    ]);
                    respond(&mut s, c, &resp, version).await?;
                }
                Ok(ApiKey::SaslHandshake) => {
                    let (req, c): (SaslHandshakeRequest, _) = request(&mut frame, version)?;
                    let code = if req.mechanism.as_str() == mechanism.name() {
                        0
                    } else {
                        UNSUPPORTED_SASL_MECHANISM
                    };
                    let resp = SaslHandshakeResponse::default()
                        .with_error_code(code)
                        .with_mechanisms(vec![StrBytes::from_static_str(mechanism.name())]);
                    respond(&mut s, c, &resp, version).await?;
                }
                Ok(ApiKey::SaslAuthenticate) if auth_message.is_empty() => {
                    let (req, c): (SaslAuthenticateRequest, _) = request(&mut frame, version)?;
                    let first = std::str::from_utf8(&req.auth_bytes)?;
                    let bare = first.strip_prefix("n,,").context("no GS2 header")?;
                    let (name, nonce) = bare
                        .strip_prefix("n=")
                        .and_then(|b| b.split_once(",r="))
                        .context("not n=…,r=…")?;
                    let name = name.replace("=2C", ",").replace("=3D", "=");
                    if name != USER {
                        bail!("unknown user {name}");
                    }
                    server_nonce = format!("{nonce}fake%broker");
                    let server_first = format!(
                        "r={server_nonce},s={},i={}",
                        base64_encode(&credentials.salt),
                        credentials.iterations
                    );
                    auth_message = format!("{bare},{server_first}");
                    let resp = SaslAuthenticateResponse::default()
                        .with_auth_bytes(Bytes::from(server_first.into_bytes()));
                    respond(&mut s, c, &resp, version).await?;
                }
                Ok(ApiKey::SaslAuthenticate) => {
                    let (req, c): (SaslAuthenticateRequest, _) = request(&mut frame, version)?;
                    let last = std::str::from_utf8(&req.auth_bytes)?;
                    let (without_proof, proof) = last.rsplit_once(",p=").context("no proof")?;
                    if without_proof != format!("c=biws,r={server_nonce}") {
                        bail!("unexpected client-final {last}");
                    }
                    let auth_message = format!("{auth_message},{without_proof}");
                    let proof = base64_decode(proof).context("proof not base64")?;
                    let signature = hmac::sign(
                        &hmac::Key::new(credentials.hash, &credentials.stored_key),
                        auth_message.as_bytes(),
                    );
                    let client_key: Vec<u8> = proof
                        .iter()
                        .zip(signature.as_ref())
                        .map(|(p, s)| p ^ s)
                        .collect();
                    let right = proof.len() == credentials.stored_key.len()
                        && digest::digest(credentials.digest, &client_key).as_ref()
                            == credentials.stored_key;
                    let server_key = match answer {
                        Answer::ForgedSignature => credentials.stored_key.clone(),
                        _ => credentials.server_key.clone(),
                    };
                    let verifier = hmac::sign(
                        &hmac::Key::new(credentials.hash, &server_key),
                        auth_message.as_bytes(),
                    );
                    let resp = match (right, answer) {
                        // What Kafka answers a wrong proof.
                        (false, _) => SaslAuthenticateResponse::default()
                            .with_error_code(SASL_AUTHENTICATION_FAILED)
                            .with_error_message(Some(StrBytes::from_string(format!(
                                "Authentication failed during authentication due to invalid credentials with SASL mechanism {}",
                                mechanism.name()
                            )))),
                        (true, Answer::ErrorAttribute) => SaslAuthenticateResponse::default()
                            .with_auth_bytes(Bytes::from_static(b"e=invalid-proof")),
                        (true, _) => SaslAuthenticateResponse::default().with_auth_bytes(
                            Bytes::from(format!("v={}", base64_encode(verifier.as_ref()))),
                        ),
                    };
                    respond(&mut s, c, &resp, version).await?;
                }
                other => bail!("unexpected request {other:?}"),
            }
        }
        Ok(())
    }

    /// The broker's address and what `Conn::open` with SCRAM as `USER` with
    /// `password` gave against a fake broker holding `PASSWORD`'s credentials (the
    /// fake broker must have served the exchange without fault).
    async fn open_against_fake(
        mechanism: SaslMechanism,
        password: &str,
        answer: Answer,
    ) -> (String, Result<(), KafkaError>) {
        let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap().to_string();
        let broker = tokio::spawn(fake_broker(
            listener,
            mechanism,
            stored(mechanism, PASSWORD),
            answer,
        ));
        let settings = ConnSettings {
            client_id: "scram-test".into(),
            tls: None,
            sasl: Some(Sasl {
                mechanism,
                username: USER.into(),
                password: password.into(),
            }),
            timeout: Duration::from_secs(5),
            max_response: 1 << 20,
        };
        let conn = tokio::time::timeout(Duration::from_secs(20), Conn::open(&addr, &settings))
            .await
            .expect("Conn::open took more than 20 s");
        // Closing the connection ends the fake broker's loop.
        let conn = conn.map(drop);
        let served = tokio::time::timeout(Duration::from_secs(20), broker)
            .await
            .expect("the fake broker did not finish")
            .expect("the fake broker panicked");
        if let Err(e) = served {
            panic!("the fake broker failed: {e:#}");
        }
        (addr, conn)
    }

    #[tokio::test]
    async fn scram_sha256_right_password_authenticates() {
        let (_, conn) =
            open_against_fake(SaslMechanism::ScramSha256, PASSWORD, Answer::Honest).await;
        conn.unwrap();
    }

    #[tokio::test]
    async fn scram_sha512_right_password_authenticates() {
        let (_, conn) =
            open_against_fake(SaslMechanism::ScramSha512, PASSWORD, Answer::Honest).await;
        conn.unwrap();
    }

    #[tokio::test]
    async fn scram_wrong_password_is_refused_naming_the_broker() {
        let (addr, conn) =
            open_against_fake(SaslMechanism::ScramSha256, "wrong horse", Answer::Honest).await;
        let e = conn
            .expect_err("a wrong password authenticated")
            .to_string();
        assert!(e.contains(&addr), "{e}");
        assert!(e.contains("SASL_AUTHENTICATION_FAILED"), "{e}");
        assert!(
            e.contains("the broker refused the SCRAM-SHA-256 credentials of user `tributary`"),
            "{e}"
        );
    }

    #[tokio::test]
    async fn scram_forged_server_signature_is_refused() {
        let (addr, conn) = open_against_fake(
            SaslMechanism::ScramSha512,
            PASSWORD,
            Answer::ForgedSignature,
        )
        .await;
        let e = conn.expect_err("a forged signature was accepted");
        assert!(!e.retriable());
        let e = e.to_string();
        assert!(e.contains(&addr) && e.contains("SCRAM-SHA-512"), "{e}");
        assert!(e.contains("signature does not prove"), "{e}");
    }

    #[tokio::test]
    async fn scram_error_attribute_is_an_authentication_failure() {
        let (addr, conn) =
            open_against_fake(SaslMechanism::ScramSha256, PASSWORD, Answer::ErrorAttribute).await;
        let e = conn.expect_err("e= was accepted").to_string();
        assert!(e.contains(&addr), "{e}");
        assert!(
            e.contains("refused the SCRAM-SHA-256 credentials of user `tributary`")
                && e.contains("e=invalid-proof"),
            "{e}"
        );
    }
}
