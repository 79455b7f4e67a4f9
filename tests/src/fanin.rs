//! Fan-in load: many agents on one collector, from one process.
//!
//! Each of `connections` tasks is one agent as the collector sees it: its own
//! mutual-TLS connection, HELLO as host `fanin-NNNN`, then batches of one block
//! (source `/var/log/app.log`, a source id of its own, consecutive source offsets)
//! of `min_lines..=max_lines` access-log lines, lz4-compressed like the agent's,
//! up to `window` batches in flight, `linger` between batches. Every batch's
//! acknowledgement latency (send → ACK, i.e. durable with `fsync: always`) is
//! recorded. Used by `tributary-bench --agents N` and by the fan-in test.

use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use tributary_common::codec::Compression;
use tributary_common::record::BlockWriter;
use tributary_common::wire::{BatchFrame, Frame, FrameCodec, PROTOCOL_VERSION};

use crate::{Env, access_line};

/// What to send.
#[derive(Debug, Clone)]
pub struct Load {
    pub connections: usize,
    pub topic: String,
    pub min_lines: usize,
    pub max_lines: usize,
    /// Batches in flight per connection (the agent's window is 4).
    pub window: usize,
    /// Pause after each batch sent (an agent's linger between bursts).
    pub linger: Duration,
    /// Stop starting batches after this long.
    pub duration: Duration,
    /// Or after this many lines per connection.
    pub max_lines_per_connection: u64,
}

/// What happened.
#[derive(Debug, Default)]
pub struct Outcome {
    /// Lines acknowledged, all connections.
    pub lines: u64,
    pub batches: u64,
    /// From the first connection's start to the last acknowledgement.
    pub elapsed: Duration,
    /// Time to connect all of them.
    pub connect: Duration,
    /// Acknowledgement latencies, sorted.
    pub latencies: Vec<Duration>,
    /// Lines acknowledged per connection (index = connection).
    pub per_connection: Vec<u64>,
}

impl Outcome {
    /// The `q` quantile (0..=1) of the acknowledgement latency.
    pub fn latency(&self, q: f64) -> Duration {
        if self.latencies.is_empty() {
            return Duration::ZERO;
        }
        let i = ((self.latencies.len() - 1) as f64 * q).round() as usize;
        self.latencies[i.min(self.latencies.len() - 1)]
    }
}

/// The host name connection `i` sends as.
pub fn host_of(i: usize) -> String {
    format!("fanin-{i:04}")
}

/// Run `load` against the collector's ingest port; panics on a refused batch or a
/// broken connection (the load is well-formed: any refusal is a bug).
pub fn run(env: &Env, ingest_port: u16, load: &Load) -> Outcome {
    let tls = tributary_common::tls::client_config(
        &env.certs.ca,
        Some((
            env.certs.agent_cert.as_path(),
            env.certs.agent_key.as_path(),
        )),
    )
    .expect("client TLS config");
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async move {
        let start = Instant::now();
        let connected = Arc::new(AtomicU64::new(0));
        let go = Arc::new(tokio::sync::Notify::new());
        let all_in = Arc::new(AtomicBool::new(false));
        let mut tasks = Vec::new();
        for i in 0..load.connections {
            let (tls, load) = (tls.clone(), load.clone());
            let (connected, go, all_in) = (connected.clone(), go.clone(), all_in.clone());
            tasks.push(tokio::spawn(async move {
                let (mut rd, mut wr) = connect(ingest_port, tls, &host_of(i)).await;
                connected.fetch_add(1, Ordering::SeqCst);
                // Everyone starts sending together, once all are connected.
                let wait = go.notified();
                if !all_in.load(Ordering::SeqCst) {
                    wait.await;
                }
                agent_loop(i, &load, &mut rd, &mut wr).await
            }));
        }
        while connected.load(Ordering::SeqCst) < load.connections as u64 {
            assert!(
                start.elapsed() < Duration::from_secs(120),
                "only {} of {} connections after 120 s",
                connected.load(Ordering::SeqCst),
                load.connections
            );
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        let connect = start.elapsed();
        let sending = Instant::now();
        all_in.store(true, Ordering::SeqCst);
        go.notify_waiters();
        let mut out = Outcome {
            connect,
            ..Outcome::default()
        };
        for t in tasks {
            let (lines, batches, lat) = t.await.expect("connection task");
            out.lines += lines;
            out.batches += batches;
            out.per_connection.push(lines);
            out.latencies.extend(lat);
        }
        out.elapsed = sending.elapsed();
        out.latencies.sort();
        out
    })
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;
type Rd = tokio_util::codec::FramedRead<tokio::io::ReadHalf<Tls>, FrameCodec>;
type Wr = tokio_util::codec::FramedWrite<tokio::io::WriteHalf<Tls>, FrameCodec>;

async fn connect(port: u16, tls: Arc<rustls::ClientConfig>, host: &str) -> (Rd, Wr) {
    let mut tries = 0;
    let tcp = loop {
        // A burst of connects can overflow the listen backlog: retry as agents do.
        match tokio::net::TcpStream::connect(("127.0.0.1", port)).await {
            Ok(t) => break t,
            Err(_) if tries < 50 => {
                tries += 1;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Err(e) => panic!("connect to 127.0.0.1:{port}: {e}"),
        }
    };
    let _ = tcp.set_nodelay(true);
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("server name");
    let stream = tokio_rustls::TlsConnector::from(tls)
        .connect(name, tcp)
        .await
        .expect("TLS handshake");
    let (r, w) = tokio::io::split(stream);
    let mut rd = tokio_util::codec::FramedRead::new(r, FrameCodec::new(16 << 20));
    let mut wr = tokio_util::codec::FramedWrite::new(w, FrameCodec::new(16 << 20));
    wr.send(Frame::Hello {
        version: PROTOCOL_VERSION,
        host: host.to_owned(),
        agent: "fanin".into(),
    })
    .await
    .expect("send HELLO");
    match tokio::time::timeout(Duration::from_secs(30), rd.next()).await {
        Ok(Some(Ok(Frame::Welcome { .. }))) => {}
        other => panic!("{host}: no WELCOME: {other:?}"),
    }
    (rd, wr)
}

/// One agent: batches until the time or line budget is spent, then the last
/// acknowledgements. Returns (lines acknowledged, batches, latencies).
async fn agent_loop(i: usize, load: &Load, rd: &mut Rd, wr: &mut Wr) -> (u64, u64, Vec<Duration>) {
    let host = host_of(i);
    let source_id = 1 + i as u64;
    let start = Instant::now();
    let mut next_offset = 1u64;
    let mut seq = 0u64;
    let mut in_flight: std::collections::VecDeque<(u64, u64, Instant)> = Default::default();
    let mut scratch = Vec::new();
    let mut payload = Vec::new();
    let (mut acked, mut batches, mut lat) = (0u64, 0u64, Vec::new());
    // A different batch size per batch, deterministic per connection.
    let mut x = 0x9e37_79b9_u64.wrapping_mul(1 + i as u64);
    // When the next batch may leave (linger after the previous one); acknowledgements
    // are read meanwhile, so their latency does not include the linger.
    // Agents are not in step: the first batches are spread over one linger.
    let mut next_send = tokio::time::Instant::now()
        + load
            .linger
            .mul_f64(i as f64 / load.connections.max(1) as f64);
    loop {
        let more = start.elapsed() < load.duration && next_offset <= load.max_lines_per_connection;
        let may_send = more && in_flight.len() < load.window;
        if may_send && tokio::time::Instant::now() >= next_send {
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let span = (load.max_lines - load.min_lines + 1) as u64;
            let n = (load.min_lines as u64 + x % span)
                .min(load.max_lines_per_connection + 1 - next_offset);
            payload.clear();
            let mut w = BlockWriter::begin(&mut payload, &host, "/var/log/app.log", source_id, b"");
            let now = tributary_common::timefmt::now_ms();
            for k in 0..n {
                let off = next_offset + k;
                let line = access_line(off as usize);
                w.push(&mut payload, 0, now, off, b"", line.as_bytes());
            }
            w.finish(&mut payload);
            next_offset += n;
            seq += 1;
            let frame = BatchFrame::build(
                seq,
                &load.topic,
                Compression::Lz4,
                n as u32,
                &payload,
                &mut scratch,
            );
            wr.send(Frame::Batch(frame)).await.expect("send BATCH");
            in_flight.push_back((seq, n, Instant::now()));
            next_send = tokio::time::Instant::now() + load.linger;
            continue;
        }
        let Some(&(want, n, sent)) = in_flight.front() else {
            if !more {
                break;
            }
            tokio::time::sleep_until(next_send).await;
            continue;
        };
        let until = if may_send {
            next_send
        } else {
            tokio::time::Instant::now() + Duration::from_secs(60)
        };
        // FramedRead keeps a partly read frame when its future is dropped.
        let answer = tokio::time::timeout_at(until, rd.next()).await;
        if answer.is_err() && may_send {
            continue;
        }
        match answer {
            Ok(Some(Ok(Frame::Ack { seq }))) if seq == want => {
                in_flight.pop_front();
                lat.push(sent.elapsed());
                acked += n;
                batches += 1;
            }
            other => panic!("{host}: batch {want}: expected its ACK, got {other:?}"),
        }
    }
    (acked, batches, lat)
}
