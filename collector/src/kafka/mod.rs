//! The Kafka-compatible front door (`kafka.listen`): any Kafka consumer reads the
//! topics by offset, by time and by consumer group.
//!
//! One broker (node id 0) leads every partition. Per connection, requests are read
//! one at a time (a size prefix, at most `kafka.max_request_bytes`, all of it within
//! a timeout) and answered in order, as Kafka clients expect. The codecs are the
//! `kafka-protocol` crate's; what each API does is in its own module:
//! [`versions`] (ApiVersions and the supported ranges), [`metadata`], [`fetch`]
//! (Fetch and ListOffsets, through a [`StoreReader`]), [`groups`] (FindCoordinator
//! and committed offsets, the same store as the HTTP API's groups), [`records`]
//! (stored records → v2 batches).
//!
//! A malformed request closes only its connection, with a log line naming the
//! peer; an unknown API key or an unsupported version is answered with
//! `UNSUPPORTED_VERSION` and the connection closed. Decoding never aborts on a
//! hostile count: see [`crate::alloc`].

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::{Bytes, BytesMut};
use kafka_protocol::messages::{ApiKey, ResponseHeader};
use kafka_protocol::protocol::{Encodable, HeaderVersion};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::metrics::Metrics;
use crate::storage::StoreReader;

pub mod coordinator;
pub mod fetch;
pub mod groups;
pub mod metadata;
pub mod produce;
pub mod records;
pub mod request;
pub mod sasl;
pub mod versions;

pub use records::FetchCompression;
use request::{Body, Decoded};

/// Kafka's error codes this broker answers with.
pub mod code {
    pub const NONE: i16 = 0;
    pub const OFFSET_OUT_OF_RANGE: i16 = 1;
    pub const UNKNOWN_TOPIC_OR_PARTITION: i16 = 3;
    pub const NOT_COORDINATOR: i16 = 16;
    pub const INVALID_TOPIC_EXCEPTION: i16 = 17;
    pub const GROUP_ID_NOT_FOUND: i16 = 69;
    pub const INVALID_GROUP_ID: i16 = 24;
    pub const UNKNOWN_SERVER_ERROR: i16 = -1;
    pub const UNSUPPORTED_VERSION: i16 = 35;
    pub const COORDINATOR_NOT_AVAILABLE: i16 = 15;
}

/// A request's bytes must all arrive within this once its size was read.
const REQUEST_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// An answer must be taken by the client within this.
const WRITE_TIMEOUT: Duration = Duration::from_secs(30);
/// TLS handshakes must complete within this.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// `kafka:` in collector.yaml, resolved.
#[derive(Clone)]
pub struct KafkaSettings {
    pub listen: SocketAddr,
    /// What Metadata tells clients to connect to.
    pub advertised_host: String,
    pub advertised_port: u16,
    /// Followed as its files change (certificates, CRLs).
    pub tls: Option<Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>>,
    pub compression: FetchCompression,
    pub max_connections: usize,
    /// A connection without a request for this long is closed.
    pub idle_timeout: Duration,
    pub max_request_bytes: usize,
    /// Most bytes of records in one Fetch answer, whatever the client asks.
    pub max_fetch_bytes: usize,
}

/// Defaults of the `kafka:` settings.
pub const DEFAULT_MAX_CONNECTIONS: usize = 512;
pub const DEFAULT_IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const DEFAULT_MAX_REQUEST_BYTES: usize = 8 << 20;
pub const DEFAULT_MAX_FETCH_BYTES: usize = 8 << 20;

/// Shared by every connection.
pub struct Broker {
    pub settings: KafkaSettings,
    /// What consumers read through.
    pub store: StoreReader,
    /// Produce appends (and Metadata creates topics) through this, like ingest.
    pub writer: Arc<crate::storage::Storage>,
    pub producers: produce::Producers,
    /// Consumer-group membership.
    pub coordinator: coordinator::Coordinator,
    pub metrics: Arc<Metrics>,
    /// `api.auth`: when set, clients authenticate with SASL/PLAIN and a token.
    pub auth: Option<Arc<crate::api::auth::ApiAuth>>,
    /// Cancelled when the collector stops: requests that wait (Fetch long-polls,
    /// JoinGroup and SyncGroup) answer at once instead of holding the shutdown.
    pub shutdown: CancellationToken,
}

/// Why a connection was closed by the broker.
#[derive(Debug, thiserror::Error)]
pub enum KafkaError {
    #[error("TLS handshake failed")]
    Handshake(#[source] std::io::Error),
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("request of {size} bytes is over kafka.max_request_bytes ({limit})")]
    TooLarge { size: i64, limit: usize },
    #[error("request of {0} bytes is too short for a request header")]
    TooShort(i64),
    #[error("request not complete within {REQUEST_READ_TIMEOUT:?}")]
    SlowRequest,
    #[error("unsupported API key {key} version {version}")]
    Unsupported { key: i16, version: i16 },
    #[error("malformed {api:?} v{version} request")]
    Malformed {
        api: ApiKey,
        version: i16,
        #[source]
        source: anyhow::Error,
    },
    #[error("cannot encode the {api:?} v{version} answer")]
    Encode {
        api: ApiKey,
        version: i16,
        #[source]
        source: anyhow::Error,
    },
    #[error("the client does not read its answers")]
    WriteTimeout,
    #[error("SASL: {0}")]
    Sasl(String),
    #[error(
        "{api:?} before SASL authentication (this listener wants SASL/PLAIN with an API token)"
    )]
    Unauthenticated { api: ApiKey },
    #[error(transparent)]
    Io(#[from] std::io::Error),
}

impl Broker {
    /// Accept connections until `shutdown`; then let the open ones finish the
    /// request they are on.
    pub async fn run(self: Arc<Self>, listener: TcpListener, shutdown: CancellationToken) {
        let limit = Arc::new(Semaphore::new(self.settings.max_connections));
        let tracker = TaskTracker::new();
        // Sessions expire even in groups nobody talks to.
        let ticker = {
            let broker = self.clone();
            let shutdown = shutdown.clone();
            tokio::spawn(async move {
                let mut tick = tokio::time::interval(Duration::from_secs(1));
                loop {
                    tokio::select! {
                        _ = tick.tick() => broker.coordinator.tick(),
                        _ = shutdown.cancelled() => return,
                    }
                }
            })
        };
        let mut backoff = Duration::from_millis(10);
        loop {
            let permit = tokio::select! {
                p = limit.clone().acquire_owned() => match p {
                    Ok(p) => p,
                    Err(_) => break,
                },
                _ = shutdown.cancelled() => break,
            };
            let (tcp, peer) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(x) => { backoff = Duration::from_millis(10); x }
                    Err(e) => {
                        tributary_common::ratelimit::warn("kafka_accept", format_args!("Kafka listener cannot accept a connection: {e}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let _ = tcp.set_nodelay(true);
            let broker = self.clone();
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                if let Err(e) = broker.connection(tcp, peer, shutdown).await {
                    let reason = tributary_common::error::report(&e);
                    tributary_common::ratelimit::warn(
                        "kafka_connection",
                        format_args!("Kafka connection from {peer} closed: {reason}"),
                    );
                }
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
        let _ = ticker.await;
    }

    async fn connection(
        self: &Arc<Self>,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), KafkaError> {
        match &self.settings.tls {
            None => self.serve(tcp, peer, shutdown).await,
            Some(tls) => {
                let acceptor = tokio_rustls::TlsAcceptor::from(tls.current());
                let stream = tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp))
                    .await
                    .map_err(|_| KafkaError::HandshakeTimeout)?
                    .map_err(KafkaError::Handshake)?;
                self.serve(stream, peer, shutdown).await
            }
        }
    }

    /// Read requests and answer them in order until the client hangs up, idles,
    /// breaks the protocol, or the collector shuts down.
    async fn serve<S: AsyncRead + AsyncWrite + Unpin>(
        &self,
        mut stream: S,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), KafkaError> {
        let mut session = sasl::Session::default();
        loop {
            let mut size = [0u8; 4];
            let read = tokio::select! {
                r = tokio::time::timeout(self.settings.idle_timeout, stream.read_exact(&mut size)) => r,
                _ = shutdown.cancelled() => return Ok(()),
            };
            match read {
                Err(_) => return Ok(()), // idle
                Ok(Err(e)) if e.kind() == std::io::ErrorKind::UnexpectedEof => return Ok(()),
                Ok(Err(e)) => return Err(e.into()),
                Ok(Ok(_)) => {}
            }
            let size = i64::from(i32::from_be_bytes(size));
            if size < 8 {
                return Err(KafkaError::TooShort(size));
            }
            let limit = self.settings.max_request_bytes;
            if size as u64 > limit as u64 {
                return Err(KafkaError::TooLarge { size, limit });
            }
            let mut body = vec![0u8; size as usize];
            tokio::time::timeout(REQUEST_READ_TIMEOUT, stream.read_exact(&mut body))
                .await
                .map_err(|_| KafkaError::SlowRequest)??;
            if session.raw_next {
                // After a v0 SaslHandshake: the bare PLAIN message; an empty frame
                // says it was accepted, a failure closes the connection.
                sasl::authenticate_raw(self, &mut session, &body, peer)?;
                tokio::time::timeout(WRITE_TIMEOUT, async {
                    stream.write_all(&[0, 0, 0, 0]).await?;
                    stream.flush().await
                })
                .await
                .map_err(|_| KafkaError::WriteTimeout)??;
                continue;
            }
            let (answer, close) = self.handle(Bytes::from(body), peer, &mut session).await?;
            // Empty: a Produce with acks=0, which Kafka never answers.
            if answer.is_empty() {
                continue;
            }
            tokio::time::timeout(WRITE_TIMEOUT, async {
                stream.write_all(&answer).await?;
                stream.flush().await
            })
            .await
            .map_err(|_| KafkaError::WriteTimeout)??;
            if let Some(e) = close {
                return Err(e);
            }
        }
    }

    /// One request → its framed answer (empty: none is sent), and the reason to
    /// close afterwards if any.
    async fn handle(
        &self,
        body: Bytes,
        peer: SocketAddr,
        session: &mut sasl::Session,
    ) -> Result<(BytesMut, Option<KafkaError>), KafkaError> {
        self.metrics.kafka_requests.inc();
        let (api, version, correlation, client, body) = match request::decode(body)? {
            Decoded::Request {
                api,
                version,
                correlation,
                client,
                body,
            } => (api, version, correlation, client, body),
            // Newer than we speak: a v0-shaped answer with the ranges, so the client
            // retries with a version we do.
            Decoded::NewerApiVersions { correlation } => {
                return Ok((versions::unsupported_answer(correlation)?, None));
            }
            Decoded::Unsupported {
                key,
                version,
                correlation,
            } => {
                let unsupported = KafkaError::Unsupported { key, version };
                return Ok((versions::error_only(correlation), Some(unsupported)));
            }
        };
        let writer = session.principal.as_ref().map(|p| p.name.clone());
        let ctx = Request {
            api,
            version,
            correlation,
            client: &client,
            peer,
            writer: writer.as_deref().unwrap_or(""),
        };
        let c = &ctx;
        // With tokens: nothing but the handshake until authenticated, then only
        // what the token's scopes allow.
        if self.auth.is_some()
            && !matches!(
                *body,
                Body::ApiVersions | Body::SaslHandshake(_) | Body::SaslAuthenticate(_)
            )
        {
            let Some(principal) = &session.principal else {
                self.metrics.error("kafka_unauthenticated");
                return Err(KafkaError::Unauthenticated { api });
            };
            if let Some(scope) = sasl::required(&body)
                && !principal.has(scope)
            {
                self.metrics.error("kafka_forbidden");
                tributary_common::ratelimit::warn(
                    "kafka_forbidden",
                    format_args!(
                        "Kafka {api:?} from {peer} refused: token `{}` has scope {}, needs `{scope}`",
                        principal.name,
                        principal.scope_list()
                    ),
                );
                return Ok((sasl::denied(c, *body)?, None));
            }
        }
        let answer = match *body {
            Body::SaslHandshake(r) => frame(c, &sasl::handshake(self, session, &r, version))?,
            Body::SaslAuthenticate(r) => {
                let (resp, close) = sasl::authenticate(self, session, &r, peer);
                return Ok((frame(c, &resp)?, close));
            }
            Body::ApiVersions => versions::answer(c)?,
            Body::Metadata(r) => frame(c, &metadata::answer(self, c, r).await)?,
            Body::ListOffsets(r) => frame(c, &fetch::list_offsets(self, c, r).await)?,
            Body::Fetch(r) => frame(c, &fetch::fetch(self, c, r).await)?,
            Body::Produce(r) => {
                let silent = r.acks == 0;
                let resp = produce::produce(self, c, r).await;
                // acks=0: Kafka sends no answer.
                if silent {
                    BytesMut::new()
                } else {
                    frame(c, &resp)?
                }
            }
            Body::InitProducerId(r) => frame(c, &produce::init_producer_id(self, c, r).await)?,
            Body::FindCoordinator(r) => frame(c, &groups::find_coordinator(self, c, r).await)?,
            Body::OffsetCommit(r) => frame(c, &groups::offset_commit(self, c, r).await)?,
            Body::OffsetFetch(r) => frame(c, &groups::offset_fetch(self, c, r).await)?,
            Body::JoinGroup(r) => frame(c, &coordinator::join_group(self, c, r).await)?,
            Body::SyncGroup(r) => frame(c, &coordinator::sync_group(self, c, r).await)?,
            Body::Heartbeat(r) => frame(c, &coordinator::heartbeat(self, c, r).await)?,
            Body::LeaveGroup(r) => frame(c, &coordinator::leave_group(self, c, r).await)?,
            Body::ListGroups(r) => frame(c, &coordinator::list_groups(self, c, r).await)?,
            Body::DescribeGroups(r) => frame(c, &coordinator::describe_groups(self, c, r).await)?,
        };
        Ok((answer, None))
    }
}

/// What every handler may need to know about the request it answers.
pub struct Request<'a> {
    pub api: ApiKey,
    pub version: i16,
    pub correlation: i32,
    pub client: &'a str,
    pub peer: SocketAddr,
    /// The token the connection authenticated with (SASL), or empty.
    pub writer: &'a str,
}

/// Size prefix, response header (of the version the API uses for `ctx.version`)
/// and body.
pub fn frame<R: Encodable + HeaderVersion>(
    ctx: &Request<'_>,
    body: &R,
) -> Result<BytesMut, KafkaError> {
    let mut out = BytesMut::with_capacity(64);
    out.extend_from_slice(&[0; 4]);
    let header = ResponseHeader::default().with_correlation_id(ctx.correlation);
    let encode = |out: &mut BytesMut| -> anyhow::Result<()> {
        header.encode(out, R::header_version(ctx.version))?;
        body.encode(out, ctx.version)
    };
    encode(&mut out).map_err(|source| KafkaError::Encode {
        api: ctx.api,
        version: ctx.version,
        source,
    })?;
    let len = i32::try_from(out.len() - 4).map_err(|_| KafkaError::Encode {
        api: ctx.api,
        version: ctx.version,
        source: anyhow::anyhow!("answer over 2 GiB"),
    })?;
    out[..4].copy_from_slice(&len.to_be_bytes());
    Ok(out)
}
