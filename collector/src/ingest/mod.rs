//! Ingest: the TLS listener and one task per agent connection.
//!
//! Per connection, three stages joined by bounded queues, in arrival order: the
//! reader reads a frame and starts preparing its batch on the blocking pool
//! (decompress, checksum, validate every record, stamp the sender's identity,
//! route to partitions, compress for the disk); the committer appends prepared
//! batches strictly in order; the acknowledger waits for durability and answers.
//! So batch N+1 is prepared while N is appended and N-1 fsynced, and one agent's
//! batches use more than one core. Acknowledgements leave in the order the batches
//! arrived, and after a batch that cannot be stored nothing later is. A protocol
//! violation closes that connection with an ERROR frame and a log line naming the
//! peer; nothing else is affected.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures_util::SinkExt;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Semaphore, mpsc};
use tokio_rustls::TlsAcceptor;
use tokio_util::codec::FramedWrite;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_common::wire::{
    BATCH_HEAD_MAX, BatchError, BatchFrame, DEFAULT_MAX_BATCH_BYTES, DEFAULT_MAX_FRAME_BYTES,
    ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION, WireError, declared_batch_len, decode_frame,
};

pub mod agents;
pub mod budget;
pub mod error;
pub mod identity;

use crate::metrics::Metrics;
use crate::storage::{Appended, PreparedBatch, SentPayload, Storage, StorageError};
use budget::{MemoryBudget, PeerBudget, Reserved};
pub use error::ConnectionError;
use identity::{IdentityError, IdentityMode, PeerIdentity};
use tributary_common::codec::Compression;
use tributary_common::error::report;
use tributary_common::limits::PerIp;
use tributary_common::reload::Reloading;

/// TLS and HELLO must complete within this: shorter than an agent's connect
/// timeout (10 s), so a flood of stalled handshakes cannot outlast real agents'.
const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(5);
/// A connection that said HELLO must send its first batch within this (agents
/// connect when they have something to send).
const FIRST_BATCH_TIMEOUT: Duration = Duration::from_secs(30);
/// A frame's bytes must all arrive within this once its length was read.
const FRAME_READ_TIMEOUT: Duration = Duration::from_secs(30);
/// Default bytes in flight across all connections.
pub const DEFAULT_MAX_INFLIGHT_BYTES: usize = 256 << 20;
/// Default connections per peer address.
pub const DEFAULT_MAX_CONNECTIONS_PER_IP: usize = 64;
/// By default, a connection with no frame for this long is closed (agents reconnect
/// when they have something to send).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(300);
/// Batches read and appended but not yet acknowledged, per connection.
const ACK_QUEUE: usize = 16;
/// Batches being prepared ahead of the one being appended, per connection (each
/// holds its reservation in the memory budget until it is appended).
const PREPARE_AHEAD: usize = 2;

/// Limits and shared state of the ingest listener.
pub struct Ingest {
    /// Followed as its files change: each connection gets the one in force.
    pub tls: Arc<Reloading<rustls::ServerConfig>>,
    /// `ingest.tls.cert` and `client_ca`, named when a handshake fails over them.
    pub tls_cert_path: std::path::PathBuf,
    pub tls_client_ca_path: Option<std::path::PathBuf>,
    pub storage: Arc<Storage>,
    pub metrics: Arc<Metrics>,
    pub max_connections: usize,
    /// A connection with no frame for this long is closed.
    pub idle_timeout: Duration,
    pub max_frame_bytes: usize,
    pub max_batch_bytes: usize,
    /// Bytes of frames and decompressed payloads in memory, all connections.
    pub budget: MemoryBudget,
    pub max_connections_per_ip: usize,
    /// `ingest.identity`; `None` without mutual TLS (no client CA, no identity).
    pub identity: Option<IdentityMode>,
    per_ip: PerIp,
}

impl Ingest {
    pub fn new(
        tls: Arc<Reloading<rustls::ServerConfig>>,
        storage: Arc<Storage>,
        metrics: Arc<Metrics>,
        max_connections: usize,
    ) -> Self {
        Ingest {
            tls,
            tls_cert_path: std::path::PathBuf::new(),
            tls_client_ca_path: None,
            storage,
            metrics,
            max_connections,
            idle_timeout: IDLE_TIMEOUT,
            max_frame_bytes: DEFAULT_MAX_FRAME_BYTES,
            max_batch_bytes: DEFAULT_MAX_BATCH_BYTES,
            budget: MemoryBudget::new(DEFAULT_MAX_INFLIGHT_BYTES),
            max_connections_per_ip: DEFAULT_MAX_CONNECTIONS_PER_IP,
            identity: None,
            per_ip: PerIp::default(),
        }
    }

    /// Accept connections on `listener` until `shutdown`; then wait for open
    /// connections to finish the batch they are on.
    pub async fn run(self, listener: TcpListener, shutdown: CancellationToken) {
        let this = Arc::new(self);
        let limit = Arc::new(Semaphore::new(this.max_connections));
        let tracker = TaskTracker::new();
        let mut backoff = Duration::from_millis(10);
        loop {
            // Take a permit before accepting, so the cap needs no other bookkeeping.
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
                        // EMFILE and friends: wait and retry, never exit.
                        this.metrics.error("accept");
                        tributary_common::ratelimit::warn("ingest_accept", format_args!("ingest cannot accept a connection: {e}"));
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(1));
                        continue;
                    }
                },
                _ = shutdown.cancelled() => break,
            };
            let Some(ip_slot) = this.per_ip.admit(peer.ip(), this.max_connections_per_ip) else {
                this.metrics.error("per_ip_limit");
                tributary_common::ratelimit::warn(
                    "ingest_per_ip",
                    format_args!(
                        "refused a connection from {}: it has {} open already (ingest.max_connections_per_ip)",
                        peer.ip(),
                        this.max_connections_per_ip
                    ),
                );
                continue;
            };
            let _ = tcp.set_nodelay(true);
            let this = this.clone();
            // Certificates and CRLs as they are now (reloaded without a restart).
            let acceptor = TlsAcceptor::from(this.tls.current());
            let shutdown = shutdown.clone();
            tracker.spawn(async move {
                this.metrics.connections_total.inc();
                this.metrics.connections_active.inc();
                if let Err(e) = this.connection(acceptor, tcp, peer, shutdown).await {
                    let reason = report(&e);
                    if e.is_handshake_noise() {
                        tributary_common::ratelimit::warn(
                            "ingest_handshake",
                            format_args!("agent connection from {peer} closed: {reason}"),
                        );
                    } else {
                        tracing::warn!(%peer, %reason, "agent connection closed");
                    }
                }
                this.metrics.connections_active.dec();
                drop(ip_slot);
                drop(permit);
            });
        }
        tracker.close();
        tracker.wait().await;
    }

    async fn connection(
        self: &Arc<Self>,
        acceptor: TlsAcceptor,
        tcp: TcpStream,
        peer: SocketAddr,
        shutdown: CancellationToken,
    ) -> Result<(), ConnectionError> {
        let tls = match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
            Ok(Ok(s)) => s,
            Ok(Err(e)) => {
                self.metrics.error("tls_handshake");
                let hint = tributary_common::tls::server_failure(
                    &e,
                    &self.tls_cert_path,
                    self.tls_client_ca_path.as_deref(),
                );
                return Err(ConnectionError::Handshake { hint, source: e });
            }
            Err(_) => {
                self.metrics.error("tls_handshake");
                return Err(ConnectionError::HandshakeTimeout);
            }
        };
        // The certificate's names (mutual TLS): who this agent proved to be.
        let names = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(tributary_common::tls::cert_names)
            .unwrap_or_default();
        let (r, w) = tokio::io::split(tls);
        let mut reader = FrameReader {
            inner: r,
            max_frame: self.max_frame_bytes.min(self.budget.total()),
            max_batch: self.max_batch_bytes,
            budget: self.budget.peer(peer.ip()),
        };
        let mut writer = FramedWrite::new(w, FrameCodec::new(self.max_frame_bytes));
        let hello = tokio::time::timeout(HANDSHAKE_TIMEOUT, reader.next())
            .await
            .map(|o| o.map(|r| r.map(|(f, _)| f)));
        let (host, agent_version) = match hello {
            Ok(Some(Ok(Frame::Hello {
                version,
                host,
                agent,
            }))) => {
                if version != PROTOCOL_VERSION {
                    self.metrics.error("version");
                    let e = ConnectionError::UnsupportedVersion(version);
                    let _ = writer
                        .send(Frame::Error {
                            code: ErrorCode::UnsupportedVersion,
                            message: e.to_string(),
                        })
                        .await;
                    return Err(e);
                }
                (host, agent)
            }
            Ok(Some(Ok(other))) => {
                self.metrics.error("malformed_frame");
                return Err(ConnectionError::UnexpectedFrame {
                    expected: "HELLO",
                    got: other.name(),
                });
            }
            Ok(Some(Err(e))) => {
                self.metrics.error("malformed_frame");
                let _ = writer
                    .send(Frame::Error {
                        code: e.code(),
                        message: e.to_string(),
                    })
                    .await;
                return Err(ConnectionError::Frame(e));
            }
            Ok(None) => return Ok(()),
            Err(_) => {
                self.metrics.error("timeout");
                return Err(ConnectionError::NoHello);
            }
        };
        let peer_id = match self.identity {
            Some(mode) => {
                match PeerIdentity::new(names, mode).and_then(|p| p.check_hello(&host).map(|()| p))
                {
                    Ok(p) => Some(Arc::new(p)),
                    Err(e) => {
                        self.metrics.error("identity");
                        let _ = writer
                            .send(Frame::Error {
                                code: ErrorCode::Forbidden,
                                message: e.to_string(),
                            })
                            .await;
                        return Err(ConnectionError::Identity(e));
                    }
                }
            }
            None => None,
        };
        writer
            .send(Frame::Welcome {
                version: PROTOCOL_VERSION,
                max_frame_bytes: self.max_frame_bytes as u32,
                max_batch_bytes: self.max_batch_bytes as u32,
            })
            .await
            .map_err(ConnectionError::Send)?;
        let registration = self.metrics.agents.register(
            &host,
            peer_id.as_ref().map_or("", |p| p.agent.as_str()),
            peer,
            &agent_version,
        );
        tracing::info!(
            %host,
            identity = %peer_id.as_ref().map_or("-", |p| p.agent.as_str()),
            %peer,
            version = %agent_version,
            "agent connected"
        );

        let (ack_tx, ack_rx) = mpsc::channel::<Pending>(ACK_QUEUE);
        let acker = tokio::spawn(acknowledge(self.clone(), writer, ack_rx, registration));
        let (step_tx, step_rx) = mpsc::channel::<Step>(PREPARE_AHEAD);
        // Cancelled when the committer stops at a batch that cannot be stored.
        let failed = CancellationToken::new();
        let committer = tokio::spawn(self.clone().commit_loop(step_rx, ack_tx, failed.clone()));
        // Who `topics.allow` knows this connection by.
        let writer: Arc<str> = match &peer_id {
            Some(p) => Arc::from(p.agent.as_str()),
            None => Arc::from(host.as_str()),
        };
        let result = self
            .read_loop(&mut reader, &step_tx, peer_id, &writer, &shutdown, &failed)
            .await;
        drop(step_tx);
        let commit_result = committer.await.unwrap_or_else(|e| Err(e.into()));
        let ack_result = acker.await.unwrap_or_else(|e| Err(e.into()));
        result.and(commit_result).and(ack_result)
    }

    async fn read_loop<R: AsyncRead + Unpin>(
        self: &Arc<Self>,
        reader: &mut FrameReader<R>,
        steps: &mpsc::Sender<Step>,
        peer_id: Option<Arc<PeerIdentity>>,
        writer: &str,
        shutdown: &CancellationToken,
        failed: &CancellationToken,
    ) -> Result<(), ConnectionError> {
        // Answers go through the committer, after the batches before them.
        let answer = |p: Pending| async move {
            let _ = steps.send(Step::Answer(p)).await;
        };
        let mut batches = 0u64;
        loop {
            // Until its first batch a connection gets a short idle timeout.
            let idle = if batches == 0 {
                self.idle_timeout.min(FIRST_BATCH_TIMEOUT)
            } else {
                self.idle_timeout
            };
            let frame = tokio::select! {
                f = tokio::time::timeout(idle, reader.next()) => f,
                _ = shutdown.cancelled() => {
                    answer(Pending::Fatal(ErrorCode::ShuttingDown, "collector is shutting down".into())).await;
                    return Ok(());
                }
                // The committer said why; nothing more is read.
                _ = failed.cancelled() => return Ok(()),
            };
            let batch = match frame {
                Err(_) => {
                    answer(Pending::Fatal(ErrorCode::Timeout, "idle timeout".into())).await;
                    return Ok(());
                }
                Ok(None) => return Ok(()),
                // Closed between frames without a TLS close_notify: a plain hang-up.
                Ok(Some(Err(WireError::Io(e))))
                    if e.kind() == std::io::ErrorKind::UnexpectedEof =>
                {
                    return Ok(());
                }
                Ok(Some(Err(e))) => {
                    self.metrics.error("malformed_frame");
                    answer(Pending::Fatal(e.code(), e.to_string())).await;
                    return Err(ConnectionError::Frame(e));
                }
                Ok(Some(Ok((Frame::Batch(b), held)))) => (b, held),
                Ok(Some(Ok((other, _)))) => {
                    self.metrics.error("malformed_frame");
                    let e = ConnectionError::UnexpectedFrame {
                        expected: "BATCH",
                        got: other.name(),
                    };
                    answer(Pending::Fatal(ErrorCode::MalformedFrame, e.to_string())).await;
                    return Err(e);
                }
            };
            batches += 1;
            let (batch, held) = batch;
            let step = self.prepare_batch(batch, held, peer_id.clone(), writer);
            if steps.send(step).await.is_err() {
                // The committer stopped (and said why).
                return Ok(());
            }
        }
    }

    /// Start preparing one batch on the blocking pool (see the module docs); a
    /// batch this sender may not write is answered at once, in its turn.
    fn prepare_batch(
        &self,
        batch: BatchFrame,
        held: Reserved,
        peer_id: Option<Arc<PeerIdentity>>,
        writer: &str,
    ) -> Step {
        let seq = batch.seq;
        if !self.storage.config().topic_acl.allows(writer, &batch.topic) {
            self.metrics.error("topic_forbidden");
            let why = crate::access::TopicAcl::refusal(writer, &batch.topic);
            tributary_common::ratelimit::warn(
                "ingest_topic_forbidden",
                format_args!("batch refused: {why}"),
            );
            return Step::Answer(Pending::Reject(seq, ErrorCode::Forbidden, why));
        }
        let compressed = batch.payload.len() as u64;
        let limit = self.max_batch_bytes;
        let topic = batch.topic.clone();
        // The bytes as sent can be stored as they are, with the identity beside
        // them (readers stamp it).
        let sent = (batch.codec != Compression::None).then(|| (batch.codec, batch.payload.clone()));
        let storage = self.storage.clone();
        // CPU work: off the runtime threads.
        let work = tokio::task::spawn_blocking(move || {
            let (payload, summary) = batch.open(limit).map_err(Unprepared::Batch)?;
            let sent = sent.map(|(codec, bytes)| SentPayload {
                codec,
                bytes,
                len: payload.len(),
                agent: peer_id.as_ref().map(|p| Arc::from(p.agent.as_str())),
            });
            // Who sent it: stamped on every block (mutual TLS), else checked unclaimed.
            let payload = match &peer_id {
                Some(p) => p.stamp(&payload),
                None => identity::check_unstamped(&payload).map(|()| payload),
            }
            .map_err(Unprepared::Identity)?;
            let bytes = payload.len() as u64;
            let now = tributary_common::timefmt::now_ms();
            let prepared = storage
                .prepare(&batch.topic, payload, summary, sent, now)
                .map_err(Unprepared::Storage)?;
            Ok((prepared, bytes))
        });
        Step::Batch {
            seq,
            topic,
            compressed,
            held,
            work,
        }
    }

    /// Append prepared batches in arrival order and hand them to the acknowledger.
    /// Stops at the first batch that cannot be stored (after answering it), so
    /// nothing after it is stored: the agent resends from it.
    async fn commit_loop(
        self: Arc<Self>,
        mut steps: mpsc::Receiver<Step>,
        ack_tx: mpsc::Sender<Pending>,
        failed: CancellationToken,
    ) -> Result<(), ConnectionError> {
        while let Some(step) = steps.recv().await {
            let done = match step {
                Step::Answer(p) => {
                    let last = matches!(p, Pending::Fatal(..));
                    if ack_tx.send(p).await.is_err() || last {
                        return Ok(());
                    }
                    continue;
                }
                Step::Batch {
                    seq,
                    topic,
                    compressed,
                    held,
                    work,
                } => {
                    let done = self.commit_batch(seq, &topic, compressed, work).await;
                    // The batch's memory is released once it is stored (or refused).
                    drop(held);
                    done
                }
            };
            match done {
                Ok(p) => {
                    if ack_tx.send(p).await.is_err() {
                        return Ok(());
                    }
                }
                Err(Fatal { code, error }) => {
                    let _ = ack_tx.send(Pending::Fatal(code, report(&error))).await;
                    failed.cancel();
                    return Err(error);
                }
            }
        }
        Ok(())
    }

    /// Wait for a batch's preparation and append it. A refused batch whose fault
    /// is the sender's (bad checksum, bomb, malformed payload) is fatal for the
    /// connection.
    async fn commit_batch(
        &self,
        seq: u64,
        topic: &str,
        compressed: u64,
        work: tokio::task::JoinHandle<Result<(PreparedBatch, u64), Unprepared>>,
    ) -> Result<Pending, Fatal> {
        let prepared = work
            .await
            .map_err(|e| Fatal::new(ErrorCode::Unknown, e.into()))?;
        let stored = match prepared {
            Ok((prepared, bytes)) => self
                .storage
                .commit(prepared)
                .await
                .map(|appended| (appended, bytes)),
            Err(Unprepared::Identity(e)) => {
                let code = match e {
                    IdentityError::Payload(_) => ErrorCode::BadPayload,
                    _ => ErrorCode::Forbidden,
                };
                self.metrics.error("identity");
                return Err(Fatal::new(code, ConnectionError::Identity(e)));
            }
            Err(Unprepared::Batch(e)) => {
                let kind = match e.code() {
                    ErrorCode::BadChecksum => "bad_checksum",
                    ErrorCode::BatchTooLarge => "batch_too_large",
                    ErrorCode::BadCodec => "bad_codec",
                    _ => "bad_payload",
                };
                self.metrics.error(kind);
                return Err(Fatal::new(
                    e.code(),
                    ConnectionError::Refused { seq, source: e },
                ));
            }
            Err(Unprepared::Storage(e)) => Err(e),
        };
        match stored {
            Ok((appended, bytes)) => {
                if appended.duplicates > 0 {
                    tracing::debug!(
                        seq,
                        duplicates = appended.duplicates,
                        "dropped records already stored"
                    );
                }
                Ok(Pending::Stored {
                    seq,
                    bytes,
                    compressed,
                    appended,
                })
            }
            Err(StorageError::InvalidTopic(t)) => {
                self.metrics.error("invalid_topic");
                Ok(Pending::Reject(
                    seq,
                    ErrorCode::InvalidTopic,
                    format!("invalid topic name `{t}`: use [A-Za-z0-9._-]{{1,249}}"),
                ))
            }
            // Retried by the agent (its data waits in its spool) until the topic may be
            // created: an operator raises the cap or adds the topic.
            Err(e @ StorageError::TopicRefused(_)) => {
                self.metrics.error("topic_refused");
                tributary_common::ratelimit::warn(
                    "ingest_topic_refused",
                    format_args!("batch refused: {e}"),
                );
                Err(Fatal::new(
                    ErrorCode::Storage,
                    ConnectionError::NotStored { seq, source: e },
                ))
            }
            // Not the sender's fault, but later batches must not be stored before this
            // one (deduplication would then drop it when it is sent again): close the
            // connection after acknowledging what came before; the agent resends
            // from this batch on.
            Err(e) => {
                self.metrics.error("storage");
                tracing::error!(error = %report(&e), topic = %topic, "append failed");
                Err(Fatal::new(
                    ErrorCode::Storage,
                    ConnectionError::NotStored { seq, source: e },
                ))
            }
        }
    }
}

/// Why a batch could not be prepared.
enum Unprepared {
    Batch(BatchError),
    Identity(IdentityError),
    Storage(StorageError),
}

/// One batch (or answer) on its way from the reader to the committer.
enum Step {
    Batch {
        seq: u64,
        topic: String,
        compressed: u64,
        /// Its memory budget, held until it is appended.
        held: Reserved,
        work: tokio::task::JoinHandle<Result<(PreparedBatch, u64), Unprepared>>,
    },
    Answer(Pending),
}

/// A batch that ends the connection: the code for the agent, and why.
struct Fatal {
    code: ErrorCode,
    error: ConnectionError,
}

impl Fatal {
    fn new(code: ErrorCode, error: ConnectionError) -> Self {
        Fatal { code, error }
    }
}

/// What the acknowledger must answer, in arrival order.
enum Pending {
    Stored {
        seq: u64,
        appended: Appended,
        bytes: u64,
        compressed: u64,
    },
    Reject(u64, ErrorCode, String),
    Fatal(ErrorCode, String),
}

async fn acknowledge<W: AsyncWrite + Unpin>(
    ingest: Arc<Ingest>,
    mut writer: FramedWrite<W, FrameCodec>,
    mut rx: mpsc::Receiver<Pending>,
    agent: agents::Registration,
) -> Result<(), ConnectionError> {
    while let Some(p) = rx.recv().await {
        let frame = match p {
            Pending::Stored {
                seq,
                appended,
                bytes,
                compressed,
            } => match ingest.storage.make_durable(&appended).await {
                Ok(()) => {
                    ingest.metrics.batches_in.inc();
                    ingest.metrics.records_in.inc_by(appended.records);
                    ingest
                        .metrics
                        .records_deduplicated
                        .inc_by(appended.duplicates);
                    ingest.metrics.records_retimed.inc_by(appended.retimed);
                    ingest.metrics.bytes_in.inc_by(bytes);
                    ingest.metrics.bytes_in_compressed.inc_by(compressed);
                    agent.batch(appended.records, bytes);
                    Frame::Ack { seq }
                }
                Err(e) => {
                    ingest.metrics.error("fsync");
                    tracing::error!(error = %report(&e), "fsync failed; batch not acknowledged");
                    // As for a failed append: nothing after it may be acknowledged.
                    let _ = tokio::time::timeout(
                        Duration::from_secs(5),
                        writer.send(Frame::Error {
                            code: ErrorCode::Storage,
                            message: report(&ConnectionError::NotStored { seq, source: e }),
                        }),
                    )
                    .await;
                    return Ok(());
                }
            },
            Pending::Reject(seq, code, message) => Frame::Reject { seq, code, message },
            Pending::Fatal(code, message) => {
                let _ = tokio::time::timeout(
                    Duration::from_secs(5),
                    writer.send(Frame::Error { code, message }),
                )
                .await;
                return Ok(());
            }
        };
        // A stalled agent must not hold this task forever.
        match tokio::time::timeout(IDLE_TIMEOUT, writer.send(frame)).await {
            Ok(Ok(())) => {}
            Ok(Err(e)) => return Err(ConnectionError::Send(e)),
            Err(_) => return Err(ConnectionError::AckStalled),
        }
    }
    Ok(())
}

/// Reads frames, reserving each frame's bytes (and a batch's decompressed size) in
/// the memory budget before they are read: a connection announcing a large frame
/// waits for room, it does not buffer.
struct FrameReader<R> {
    inner: R,
    max_frame: usize,
    max_batch: usize,
    budget: PeerBudget,
}

impl<R: AsyncRead + Unpin> FrameReader<R> {
    /// The next frame and the budget it holds; `None` at a clean end between frames.
    async fn next(&mut self) -> Option<Result<(Frame, Reserved), WireError>> {
        let mut len = [0u8; 4];
        match self.inner.read(&mut len[..1]).await {
            Ok(0) => return None,
            Ok(_) => {}
            Err(e) => return Some(Err(WireError::Io(e))),
        }
        Some(self.rest(len).await)
    }

    async fn rest(&mut self, mut len: [u8; 4]) -> Result<(Frame, Reserved), WireError> {
        let read = async {
            self.inner.read_exact(&mut len[1..]).await?;
            let n = u32::from_le_bytes(len) as usize;
            if n > self.max_frame {
                return Err(WireError::FrameTooLarge {
                    len: n,
                    limit: self.max_frame,
                });
            }
            if n == 0 {
                return Err(WireError::Malformed {
                    frame: "any",
                    reason: "empty frame",
                });
            }
            // The head first (a few hundred bytes at most, outside the budget): a
            // batch declares its decompressed size there, reserved with the frame
            // in one go, so no connection holds budget while waiting for more.
            let mut body = Vec::with_capacity(n.min(BATCH_HEAD_MAX));
            (&mut self.inner)
                .take(n.min(BATCH_HEAD_MAX) as u64)
                .read_to_end(&mut body)
                .await?;
            if body.len() < n.min(BATCH_HEAD_MAX) {
                return Err(std::io::Error::from(std::io::ErrorKind::UnexpectedEof).into());
            }
            let payload = declared_batch_len(&body).map_or(0, |d| (d as usize).min(self.max_batch));
            let held = self.budget.reserve(n + payload).await;
            body.resize(n, 0);
            self.inner
                .read_exact(&mut body[n.min(BATCH_HEAD_MAX)..])
                .await?;
            Ok((decode_frame(Bytes::from(body))?, held))
        };
        match tokio::time::timeout(FRAME_READ_TIMEOUT, read).await {
            Ok(Err(WireError::Io(e))) if e.kind() == std::io::ErrorKind::UnexpectedEof => {
                Err(WireError::TruncatedStream)
            }
            Ok(r) => r,
            Err(_) => Err(WireError::Io(std::io::Error::new(
                std::io::ErrorKind::TimedOut,
                format!("a frame was not complete within {FRAME_READ_TIMEOUT:?}"),
            ))),
        }
    }
}
