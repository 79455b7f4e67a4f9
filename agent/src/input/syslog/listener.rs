//! The socket side of the syslog input: one UDP receive loop per UDP address, one
//! accept loop per TCP/TLS address and one task per connection.
//!
//! Every read is bounded in size (a 64 KiB datagram buffer; a TCP buffer of at most
//! one message plus one read) and in time (TCP `idle_timeout`, TLS handshake
//! [`TLS_HANDSHAKE_TIMEOUT`]). Errors of one connection or datagram are logged
//! (rate-limited) and never end a listener. This module decides nothing about
//! message content: that is `framing`, `parse` and `encode`.

use std::collections::VecDeque;
use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::mpsc;
use tokio::sync::mpsc::error::TrySendError;
use tokio::time::{Instant, sleep_until};
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;
use tributary_common::timefmt::now_ms;

use super::encode::{ChunkBuilder, Peer};
use super::framing::{Framer, trim_trailer};
use super::parse::parse;
use super::{FLUSH_INTERVAL, Shared, TLS_HANDSHAKE_TIMEOUT, Transport};
use crate::input::Chunk;

/// Receive buffer asked of the kernel for UDP sockets (capped by `net.core.rmem_max`).
const UDP_RCVBUF: usize = 8 << 20;
/// Largest UDP payload.
const DATAGRAM_BYTES: usize = 65_536;
/// Datagrams read in one burst before the chunk is checked.
const UDP_BURST: usize = 256;
/// Chunks held while the pipeline is full before UDP drops.
const UDP_BACKLOG_BYTES: usize = 4 << 20;
/// Bytes asked per TCP read.
const READ_BYTES: usize = 64 << 10;
/// How long the last chunk of a connection may wait for the pipeline at shutdown.
const SHUTDOWN_FLUSH: Duration = Duration::from_millis(500);
/// Far enough in the future to never fire.
const NEVER: Duration = Duration::from_secs(86_400 * 365);

/// Bind a UDP socket with a large receive buffer (bursts wait in the kernel).
pub(super) fn bind_udp(addr: SocketAddr) -> io::Result<UdpSocket> {
    use socket2::{Domain, Protocol, Socket, Type};
    let sock = Socket::new(Domain::for_address(addr), Type::DGRAM, Some(Protocol::UDP))?;
    if addr.is_ipv6() {
        // `[::]` also receives IPv4; failure leaves the system default.
        let _ = sock.set_only_v6(false);
    }
    if let Err(e) = sock.set_recv_buffer_size(UDP_RCVBUF) {
        tracing::debug!(error = %e, "cannot enlarge the UDP receive buffer");
    }
    sock.set_nonblocking(true)?;
    sock.bind(&addr.into())?;
    UdpSocket::from_std(sock.into())
}

/// Logs a recurring condition at most once a second, with the count in between.
struct RateLog {
    last: Option<Instant>,
    count: u64,
}

impl RateLog {
    fn new() -> Self {
        RateLog {
            last: None,
            count: 0,
        }
    }
    /// Count `n` occurrences; `Some(total since the last log)` when it is time to log.
    fn hit(&mut self, n: u64) -> Option<u64> {
        self.count += n;
        let now = Instant::now();
        if self.last.is_some_and(|t| now < t + Duration::from_secs(1)) {
            return None;
        }
        self.last = Some(now);
        Some(std::mem::take(&mut self.count))
    }
}

fn peer_of(transport: Transport, ip: IpAddr) -> Peer {
    let ip = ip.to_canonical();
    Peer {
        ip: ip.to_string().into(),
        source: format!("syslog+{}://{ip}", transport.scheme()).into(),
    }
}

/// UDP: one datagram is one message.
pub(super) async fn udp(
    socket: UdpSocket,
    sh: Arc<Shared>,
    tx: mpsc::Sender<Chunk>,
    shutdown: CancellationToken,
) {
    let mut buf = vec![0u8; DATAGRAM_BYTES];
    let mut builder = ChunkBuilder::new(sh.topic.clone(), sh.fields.clone());
    let mut backlog = Backlog::default();
    // The sender of the previous datagram, so a burst from one host formats once.
    let mut peer_ip: Option<IpAddr> = None;
    let mut peer = peer_of(Transport::Udp, IpAddr::from([0, 0, 0, 0]));
    let mut errors = RateLog::new();
    loop {
        let flush_at = builder
            .started()
            .map_or_else(|| Instant::now() + NEVER, |t| t + FLUSH_INTERVAL);
        tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            permit = tx.reserve(), if !backlog.chunks.is_empty() => match permit {
                Ok(p) => {
                    if let Some(c) = backlog.pop() {
                        p.send(c);
                    }
                }
                Err(_) => return,
            },
            r = socket.recv_from(&mut buf) => {
                let recv_ms = now_ms();
                let mut next = Some(r);
                let mut n = 0;
                let mut counts = Counts::default();
                while let Some(r) = next.take() {
                    match r {
                        Ok((len, from)) => {
                            if peer_ip != Some(from.ip()) {
                                peer_ip = Some(from.ip());
                                peer = peer_of(Transport::Udp, from.ip());
                            }
                            let data = &buf[..len];
                            let truncated = data.len() > sh.max_message_bytes;
                            let data = trim_trailer(&data[..data.len().min(sh.max_message_bytes)]);
                            counts.add(&sh, &mut builder, &peer, data, truncated, recv_ms);
                        }
                        Err(e) => {
                            if let Some(k) = errors.hit(1) {
                                tracing::warn!(error = %e, errors = k, "syslog UDP receive failed");
                            }
                            // A persistent error must not spin.
                            tokio::time::sleep(Duration::from_millis(10)).await;
                            break;
                        }
                    }
                    n += 1;
                    if n < UDP_BURST {
                        match socket.try_recv_from(&mut buf) {
                            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {}
                            r => next = Some(r),
                        }
                    }
                }
                counts.publish(&sh);
                if builder.bytes() >= sh.chunk_bytes && !backlog.push(&tx, builder.take(false), &sh) {
                    return;
                }
            }
            _ = sleep_until(flush_at) => {
                if !backlog.push(&tx, builder.take(true), &sh) {
                    return;
                }
            }
        }
    }
    if let Some(c) = builder.take(true) {
        backlog.bytes += c.payload.len();
        backlog.chunks.push_back(c);
    }
    while let Some(c) = backlog.pop() {
        if tx.try_send(c).is_err() {
            break;
        }
    }
}

/// UDP chunks waiting for room in the pipeline; beyond [`UDP_BACKLOG_BYTES`] the
/// oldest are dropped and counted.
#[derive(Default)]
struct Backlog {
    chunks: VecDeque<Chunk>,
    bytes: usize,
    drops: Option<RateLog>,
}

impl Backlog {
    fn pop(&mut self) -> Option<Chunk> {
        let c = self.chunks.pop_front()?;
        self.bytes = self.bytes.saturating_sub(c.payload.len());
        Some(c)
    }

    /// Send `chunk` now if the pipeline has room and nothing is queued before it,
    /// else queue it. False when the receiver is gone.
    fn push(&mut self, tx: &mpsc::Sender<Chunk>, chunk: Option<Chunk>, sh: &Shared) -> bool {
        let Some(chunk) = chunk else { return true };
        let chunk = if self.chunks.is_empty() {
            match tx.try_send(chunk) {
                Ok(()) => return true,
                Err(TrySendError::Closed(_)) => return false,
                Err(TrySendError::Full(c)) => c,
            }
        } else {
            chunk
        };
        self.bytes += chunk.payload.len();
        self.chunks.push_back(chunk);
        while self.bytes > UDP_BACKLOG_BYTES {
            let Some(old) = self.pop() else { break };
            let n = old.records as u64;
            sh.stats.syslog_udp_dropped.fetch_add(n, Ordering::Relaxed);
            if let Some(total) = self.drops.get_or_insert_with(RateLog::new).hit(n) {
                tracing::warn!(
                    dropped = total,
                    topic = %sh.topic,
                    "syslog UDP: pipeline full, messages dropped"
                );
            }
        }
        true
    }
}

/// Counters of one burst or read, published once.
#[derive(Default)]
struct Counts {
    messages: u64,
    errors: u64,
    truncated: u64,
}

impl Counts {
    fn add(
        &mut self,
        sh: &Shared,
        builder: &mut ChunkBuilder,
        peer: &Peer,
        data: &[u8],
        truncated: bool,
        recv_ms: i64,
    ) {
        let p = parse(data, recv_ms, &sh.timezone);
        self.messages += 1;
        self.errors += p.error.is_some() as u64;
        self.truncated += truncated as u64;
        builder.push(peer, &p, truncated, recv_ms);
    }

    fn publish(&mut self, sh: &Shared) {
        let s = &sh.stats;
        s.syslog_messages
            .fetch_add(self.messages, Ordering::Relaxed);
        if self.errors > 0 {
            s.syslog_parse_errors
                .fetch_add(self.errors, Ordering::Relaxed);
        }
        if self.truncated > 0 {
            s.syslog_truncated
                .fetch_add(self.truncated, Ordering::Relaxed);
        }
        *self = Counts::default();
    }
}

/// TCP and TLS: accept under the connection cap, one task per connection.
pub(super) async fn tcp(
    listener: TcpListener,
    transport: Transport,
    tls: Option<Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>>,
    sh: Arc<Shared>,
    tx: mpsc::Sender<Chunk>,
    shutdown: CancellationToken,
) {
    let tracker = TaskTracker::new();
    let mut backoff = Duration::from_millis(10);
    loop {
        // The permit is taken before `accept`, so at the cap new connections wait in
        // the kernel's backlog instead of costing a task each.
        let permit = tokio::select! {
            _ = shutdown.cancelled() => break,
            p = sh.connections.clone().acquire_owned() => match p {
                Ok(p) => p,
                Err(_) => break,
            },
        };
        let (stream, addr) = tokio::select! {
            _ = shutdown.cancelled() => break,
            r = listener.accept() => match r {
                Ok(s) => s,
                Err(e) => {
                    tributary_common::ratelimit::warn("syslog_accept", format_args!("syslog accept failed: {e}"));
                    tokio::select! {
                        _ = shutdown.cancelled() => break,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(1));
                    continue;
                }
            },
        };
        backoff = Duration::from_millis(10);
        // One sender cannot take every slot.
        let Some(ip_slot) = sh.per_ip.admit(addr.ip(), sh.max_connections_per_ip) else {
            tributary_common::ratelimit::warn(
                "syslog_per_ip",
                format_args!(
                    "refused a syslog connection from {}: it has {} open already (max_connections_per_ip)",
                    addr.ip(),
                    sh.max_connections_per_ip
                ),
            );
            continue;
        };
        sh.stats.syslog_connections.fetch_add(1, Ordering::Relaxed);
        let peer = peer_of(transport, addr.ip());
        tracing::debug!(peer = %addr, source = %peer.source, "syslog connection");
        // The certificate in force now (renewed without a restart).
        let tls = tls
            .as_ref()
            .map(|t| tokio_rustls::TlsAcceptor::from(t.current()));
        let (sh, tx, stop) = (sh.clone(), tx.clone(), shutdown.clone());
        tracker.spawn(async move {
            let _permit = permit;
            let _ip_slot = ip_slot;
            match tls {
                None => connection(stream, peer, &sh, tx, stop).await,
                Some(acceptor) => {
                    let hs = tokio::select! {
                        _ = stop.cancelled() => return,
                        r = tokio::time::timeout(TLS_HANDSHAKE_TIMEOUT, acceptor.accept(stream)) => r,
                    };
                    match hs {
                        Ok(Ok(s)) => connection(s, peer, &sh, tx, stop).await,
                        Ok(Err(e)) => tracing::debug!(peer = %addr, error = %e, "syslog TLS handshake failed"),
                        Err(_) => tracing::debug!(peer = %addr, "syslog TLS handshake timed out"),
                    }
                }
            }
        });
    }
    tracker.close();
    tracker.wait().await;
}

/// Send a chunk, waiting for room (backpressure). False: stop (shutdown or no receiver).
async fn send(
    tx: &mpsc::Sender<Chunk>,
    chunk: Option<Chunk>,
    shutdown: &CancellationToken,
) -> bool {
    let Some(chunk) = chunk else { return true };
    tokio::select! {
        biased;
        r = tx.send(chunk) => r.is_ok(),
        _ = shutdown.cancelled() => false,
    }
}

/// One connection: read, frame, parse, encode; until EOF, idle timeout, error or
/// shutdown. Whatever was received is sent before returning.
async fn connection<S: AsyncRead + Unpin>(
    mut stream: S,
    peer: Peer,
    sh: &Shared,
    tx: mpsc::Sender<Chunk>,
    shutdown: CancellationToken,
) {
    let mut framer = Framer::new(sh.max_message_bytes);
    let mut buf: Vec<u8> = Vec::with_capacity(READ_BYTES);
    let mut pos = 0;
    let mut builder = ChunkBuilder::new(sh.topic.clone(), sh.fields.clone());
    let mut counts = Counts::default();
    let mut idle_at = Instant::now() + sh.idle_timeout;
    loop {
        if pos > 0 {
            buf.drain(..pos);
            pos = 0;
        }
        if buf.capacity() - buf.len() < READ_BYTES / 2 {
            buf.reserve(READ_BYTES);
        }
        let flush_at = builder
            .started()
            .map_or_else(|| Instant::now() + NEVER, |t| t + FLUSH_INTERVAL);
        let eof = tokio::select! {
            biased;
            _ = shutdown.cancelled() => break,
            r = stream.read_buf(&mut buf) => match r {
                Ok(0) => true,
                Ok(_) => false,
                Err(e) => {
                    tracing::debug!(source = %peer.source, error = %e, "syslog connection read failed");
                    true
                }
            },
            _ = sleep_until(flush_at) => {
                if !send(&tx, builder.take(true), &shutdown).await {
                    break;
                }
                continue;
            }
            _ = sleep_until(idle_at) => {
                tracing::debug!(source = %peer.source, "syslog connection idle; closing");
                true
            }
        };
        idle_at = Instant::now() + sh.idle_timeout;
        let recv_ms = now_ms();
        while let Some(f) = framer.next(&buf, &mut pos, eof) {
            let data = trim_trailer(&buf[f.range]);
            counts.add(sh, &mut builder, &peer, data, f.truncated, recv_ms);
        }
        counts.publish(sh);
        if eof {
            break;
        }
        if builder.bytes() >= sh.chunk_bytes && !send(&tx, builder.take(false), &shutdown).await {
            break;
        }
    }
    if let Some(c) = builder.take(true) {
        let _ = tokio::time::timeout(SHUTDOWN_FLUSH, tx.send(c)).await;
    }
}
