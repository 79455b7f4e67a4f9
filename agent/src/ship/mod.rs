//! Shipping: batches → collector over TLS, pipelined, acknowledged in order.
//!
//! Up to `window` batches are in flight on one connection. The collector answers
//! ACK(seq) only after a batch is durably stored, in the order it received them;
//! an acknowledged batch is forgotten, an unacknowledged one is sent again on the
//! next connection. Connection failures rotate through `collectors` with
//! exponential backoff and jitter; meanwhile batches go to the disk spool (see
//! `spool`). Every read from the collector has a timeout.
//!
//! [`order`] decides what leaves next (in flight → spool → held → new);
//! [`connect()`] sets up one connection.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use tokio::sync::mpsc;
use tokio::time::{Instant, timeout};
use tokio_util::sync::CancellationToken;
use tributary_common::wire::{ErrorCode, Frame, WireError};

pub mod connect;
pub mod kafka;
pub mod order;
pub mod to_kafka;

pub use connect::{ConnectError, Reader, Writer, connect};
use order::{Next, Queues, Take};

use crate::batch::{Batch, Position};
use crate::config::CollectorAddr;
use crate::spool::Spool;
use crate::stats::AgentStats;
use tributary_common::error::report;
use tributary_common::tls::ClientFiles;

/// How long an in-flight batch may wait for its acknowledgement before the
/// connection is considered dead and the batch is sent again elsewhere.
const ACK_TIMEOUT: Duration = Duration::from_secs(30);
const BACKOFF_MIN: Duration = Duration::from_millis(100);
const BACKOFF_MAX: Duration = Duration::from_secs(30);

/// Settings of the shipping stage.
pub struct Shipper {
    pub collectors: Vec<CollectorAddr>,
    /// The TLS files as they are now (see `tributary_common::reload`).
    pub tls: Arc<tributary_common::reload::Reloading<rustls::ClientConfig>>,
    /// The files `tls` was built from, named in certificate errors.
    pub tls_files: ClientFiles,
    pub host: Arc<str>,
    /// Batches in flight at once.
    pub window: usize,
    /// After shutdown is requested, how long to keep trying to deliver what is in flight.
    pub drain_timeout: Duration,
    pub stats: Arc<AgentStats>,
    /// Where acknowledged batches' positions go (the checkpointer).
    pub acked: Option<mpsc::UnboundedSender<Vec<Position>>>,
}

struct Inflight {
    seq: u64,
    batch: Batch,
    /// Its spool file, deleted when the batch is acknowledged.
    spool_id: Option<u64>,
}

enum Outcome {
    /// Everything delivered and the input is closed.
    Done,
    /// The collector closed a connection that had nothing in flight for its idle
    /// timeout: connect again when there is something to send.
    Idle,
    /// The connection broke; reconnect and resend.
    Reconnect,
    /// Shutdown drain time is over.
    GaveUp,
}

/// What the shipper carries from one connection to the next.
struct State {
    /// Sent, not yet acknowledged: the oldest batches, resent first after a reconnect.
    pending: VecDeque<Inflight>,
    /// Not sent yet, in order, on disk: after `pending`, before new batches.
    spool: Spool,
    /// Batches the spool could not take (disk error): after the spool, before new
    /// batches; while any is here, no new batch is taken.
    held: VecDeque<Batch>,
    next_seq: u64,
    input_closed: bool,
    failures: u32,
    drain_deadline: Option<Instant>,
}

impl State {
    /// The queues' sizes, for the send order.
    fn queues(&self) -> Queues {
        Queues {
            in_flight: self.pending.len(),
            spooled: self.spool.len(),
            spool_has_room: self.spool.has_room(),
            held: self.held.len(),
            input_closed: self.input_closed,
        }
    }
}

impl Shipper {
    /// Run until the batch channel closes and everything was acknowledged, or the
    /// drain timeout after `shutdown` runs out (what is spooled stays for next time).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        spool: Spool,
        shutdown: CancellationToken,
    ) {
        let mut st = State {
            pending: VecDeque::new(),
            spool,
            held: VecDeque::new(),
            next_seq: 1,
            input_closed: false,
            failures: 0,
            drain_deadline: None,
        };
        let mut which = 0usize;
        self.stats
            .spool_bytes
            .store(st.spool.bytes(), Ordering::Relaxed);
        loop {
            if st.queues().done() {
                return;
            }
            if st.drain_deadline.is_none() && shutdown.is_cancelled() {
                st.drain_deadline = Some(Instant::now() + self.drain_timeout);
            }
            let target = &self.collectors[which % self.collectors.len()];
            let tls = self.tls.current();
            let conn = tokio::select! {
                c = connect(target, &tls, &self.tls_files, &self.host) => c,
                _ = sleep_until_opt(st.drain_deadline) => {
                    self.give_up(&st);
                    return;
                }
            };
            let (mut reader, mut writer) = match conn {
                Ok(c) => c,
                Err(e) => {
                    st.failures += 1;
                    which += 1;
                    let wait = backoff(st.failures);
                    if e.is_setup_problem() {
                        // Retrying will not fix it until the files or the collector change.
                        tracing::error!(collector = %target.addr, retry_in_ms = wait.as_millis() as u64, "cannot connect: {}", report(&e));
                    } else {
                        tracing::warn!(collector = %target.addr, error = %report(&e), retry_in_ms = wait.as_millis() as u64, "cannot reach collector");
                    }
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    // While waiting, keep taking batches into the spool so files keep
                    // being read; when it is full the readers wait.
                    let until = Instant::now() + wait;
                    loop {
                        tokio::select! {
                            _ = tokio::time::sleep_until(until) => break,
                            _ = shutdown.cancelled(), if st.drain_deadline.is_none() => break,
                            _ = sleep_until_opt(st.drain_deadline) => {
                                self.give_up(&st);
                                return;
                            }
                            b = rx.recv(), if st.queues().take_offline() => match b {
                                Some(b) => self.spool_batch(&mut st, b),
                                None => st.input_closed = true,
                            },
                        }
                    }
                    continue;
                }
            };
            if st.failures > 0
                || !st.pending.is_empty()
                || !st.spool.is_empty()
                || self.stats.connections.load(Ordering::Relaxed) == 0
            {
                tracing::info!(collector = %target.addr, resending = st.pending.len(), spooled = st.spool.len(), "connected to collector");
            } else {
                tracing::debug!(collector = %target.addr, "connected to collector");
            }
            self.stats.connections.fetch_add(1, Ordering::Relaxed);
            match self
                .session(&mut reader, &mut writer, &mut st, &mut rx, &shutdown)
                .await
            {
                Outcome::Done => {
                    // Say goodbye properly (TLS close_notify), but do not wait long for it.
                    let _ = timeout(Duration::from_secs(2), writer.close()).await;
                    return;
                }
                Outcome::GaveUp => {
                    self.give_up(&st);
                    return;
                }
                Outcome::Idle => {
                    // Nothing to send: wait for the next batch before connecting again.
                    st.failures = 0;
                    if st.held.is_empty() && st.spool.is_empty() && !st.input_closed {
                        tokio::select! {
                            b = rx.recv() => match b {
                                Some(b) => st.held.push_back(b),
                                None => st.input_closed = true,
                            },
                            _ = shutdown.cancelled() => {}
                        }
                    }
                }
                Outcome::Reconnect => {
                    st.failures += 1;
                    let wait = backoff(st.failures);
                    tokio::select! {
                        _ = tokio::time::sleep(wait) => {}
                        _ = sleep_until_opt(st.drain_deadline) => {}
                    }
                }
            }
        }
    }

    /// Put a batch at the back of the spool. In-flight batches that are not on disk
    /// yet go first, so that after a crash the spool replays everything in order
    /// (they are older than anything spooled). If the disk refuses the batch it is
    /// held in memory and no new batch is taken until it is delivered.
    fn spool_batch(&self, st: &mut State, batch: Batch) {
        for p in st.pending.iter_mut().filter(|p| p.spool_id.is_none()) {
            match st.spool.push_sent(&p.batch) {
                Ok(id) => p.spool_id = Some(id),
                Err(e) => tracing::error!(error = %e, "cannot spool an in-flight batch"),
            }
        }
        spool_or_hold(&mut st.spool, &mut st.held, batch, &self.stats);
    }

    fn give_up(&self, st: &State) {
        if !st.pending.is_empty() || !st.spool.is_empty() {
            let records: u64 = st.pending.iter().map(|p| p.batch.records() as u64).sum();
            tracing::warn!(
                in_flight = st.pending.len(),
                records,
                spooled = st.spool.len(),
                "shutting down before everything was acknowledged; in-flight lines are read again and the spool is sent after restart"
            );
        }
    }

    async fn session(
        &self,
        reader: &mut Reader,
        writer: &mut Writer,
        st: &mut State,
        rx: &mut mpsc::Receiver<Batch>,
        shutdown: &CancellationToken,
    ) -> Outcome {
        // Resend what the previous connection left unacknowledged, in order.
        for p in st.pending.iter() {
            self.stats.retries.fetch_add(1, Ordering::Relaxed);
            if let Err(e) = send(writer, p).await {
                tracing::warn!(error = %e, "resend failed");
                return Outcome::Reconnect;
            }
        }
        let mut ack_deadline = Instant::now() + ACK_TIMEOUT;
        loop {
            let take = match st.queues().next(self.window) {
                Next::Done => return Outcome::Done,
                Next::Wait { take } => take,
                older @ (Next::SendSpooled | Next::SendHeld) => {
                    let next = if older == Next::SendHeld {
                        st.held.pop_front().map(|b| (None, b))
                    } else {
                        match st.spool.next_unsent() {
                            Ok(next) => next.map(|(id, b)| (Some(id), b)),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot read the spool; retrying after a reconnect");
                                return Outcome::Reconnect;
                            }
                        }
                    };
                    if let Some((spool_id, batch)) = next {
                        if st.pending.is_empty() {
                            ack_deadline = Instant::now() + ACK_TIMEOUT;
                        }
                        if let Err(e) = self.send_new(writer, st, batch, spool_id).await {
                            tracing::warn!(error = %e, "sending to collector failed");
                            return Outcome::Reconnect;
                        }
                    }
                    continue;
                }
            };
            tokio::select! {
                biased;
                frame = reader.next() => {
                    ack_deadline = Instant::now() + ACK_TIMEOUT;
                    match frame {
                        Some(Ok(Frame::Ack { seq })) => {
                            match st.pending.front() {
                                Some(front) if front.seq == seq => {
                                    if let Some(done) = st.pending.pop_front() {
                                        st.failures = 0;
                                        acknowledged(&mut st.spool, done.spool_id, done.batch, &self.stats, self.acked.as_ref());
                                    }
                                }
                                _ => {
                                    tracing::warn!(seq, "acknowledgement out of order; reconnecting");
                                    return Outcome::Reconnect;
                                }
                            }
                        }
                        Some(Ok(Frame::Reject { seq, code, message })) => {
                            if code.is_retriable() {
                                tracing::warn!(seq, ?code, %message, "collector could not store a batch; will retry");
                                return Outcome::Reconnect;
                            }
                            match st.pending.front() {
                                Some(front) if front.seq == seq => {
                                    if let Some(dropped) = st.pending.pop_front() {
                                        self.stats.records_rejected.fetch_add(dropped.batch.records() as u64, Ordering::Relaxed);
                                        tracing::error!(seq, ?code, %message, records = dropped.batch.records(), topic = %dropped.batch.frame.topic, "collector permanently refused a batch; it is dropped");
                                    }
                                }
                                _ => return Outcome::Reconnect,
                            }
                        }
                        Some(Ok(Frame::Error { code, message })) => {
                            match code {
                                ErrorCode::Timeout if st.pending.is_empty() => {
                                    tracing::debug!(%message, "collector closed the idle connection");
                                    return Outcome::Idle;
                                }
                                ErrorCode::ShuttingDown => {
                                    tracing::info!("collector is shutting down; reconnecting");
                                }
                                _ => tracing::warn!(?code, %message, "collector closed the connection"),
                            }
                            return Outcome::Reconnect;
                        }
                        Some(Ok(other)) => {
                            tracing::warn!(frame = ?other, "unexpected frame from collector; reconnecting");
                            return Outcome::Reconnect;
                        }
                        Some(Err(e)) => {
                            tracing::warn!(error = %e, "reading from collector failed");
                            return Outcome::Reconnect;
                        }
                        None => {
                            tracing::warn!("collector closed the connection");
                            return Outcome::Reconnect;
                        }
                    }
                }
                batch = rx.recv(), if take.is_some() => {
                    match batch {
                        Some(batch) if take == Some(Take::Send) => {
                            if st.pending.is_empty() {
                                ack_deadline = Instant::now() + ACK_TIMEOUT;
                            }
                            if let Err(e) = self.send_new(writer, st, batch, None).await {
                                tracing::warn!(error = %e, "sending to collector failed");
                                return Outcome::Reconnect;
                            }
                        }
                        Some(batch) => self.spool_batch(st, batch),
                        None => st.input_closed = true,
                    }
                }
                _ = tokio::time::sleep_until(ack_deadline), if !st.pending.is_empty() => {
                    tracing::warn!(in_flight = st.pending.len(), "no acknowledgement for {ACK_TIMEOUT:?}; reconnecting");
                    return Outcome::Reconnect;
                }
                _ = shutdown.cancelled(), if st.drain_deadline.is_none() => {
                    st.drain_deadline = Some(Instant::now() + self.drain_timeout);
                }
                _ = sleep_until_opt(st.drain_deadline) => return Outcome::GaveUp,
            }
        }
    }

    /// Give a batch the next sequence number, send it, and keep it until acknowledged.
    async fn send_new(
        &self,
        writer: &mut Writer,
        st: &mut State,
        batch: Batch,
        spool_id: Option<u64>,
    ) -> Result<(), WireError> {
        let p = Inflight {
            seq: st.next_seq,
            batch,
            spool_id,
        };
        st.next_seq += 1;
        let result = send(writer, &p).await;
        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records_sent
            .fetch_add(u64::from(p.batch.records()), Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(p.batch.frame.payload.len() as u64, Ordering::Relaxed);
        st.pending.push_back(p);
        result
    }
}

async fn send(writer: &mut Writer, p: &Inflight) -> Result<(), WireError> {
    let mut frame = p.batch.frame.clone();
    frame.seq = p.seq;
    writer.send(Frame::Batch(frame)).await
}

/// Put `batch` at the back of the spool, or, behind anything held already or if
/// the disk refuses it, hold it in memory (the shippers take no new batch while
/// any is held).
pub(crate) fn spool_or_hold(
    spool: &mut Spool,
    held: &mut VecDeque<Batch>,
    batch: Batch,
    stats: &AgentStats,
) {
    if !held.is_empty() {
        held.push_back(batch);
    } else if let Err(e) = spool.push(&batch) {
        tracing::error!(error = %e, records = batch.records(), "cannot spool a batch; holding it in memory and pausing reading");
        held.push_back(batch);
    }
    stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
}

/// `batch` is stored at its destination: forget its spool file, count it, and
/// send its positions to the checkpointer.
pub(crate) fn acknowledged(
    spool: &mut Spool,
    spool_id: Option<u64>,
    batch: Batch,
    stats: &AgentStats,
    acked: Option<&mpsc::UnboundedSender<Vec<Position>>>,
) {
    if let Some(id) = spool_id
        && let Err(e) = spool.ack(id)
    {
        tracing::warn!(error = %e, "cannot remove an acknowledged spool file");
    }
    stats.spool_bytes.store(spool.bytes(), Ordering::Relaxed);
    stats.batches_acked.fetch_add(1, Ordering::Relaxed);
    stats
        .records_acked
        .fetch_add(u64::from(batch.records()), Ordering::Relaxed);
    if let Some(acked) = acked {
        let _ = acked.send(batch.positions);
    }
}

pub(crate) async fn sleep_until_opt(deadline: Option<Instant>) {
    match deadline {
        Some(d) => tokio::time::sleep_until(d).await,
        None => std::future::pending().await,
    }
}

/// Exponential backoff with full jitter: a random wait in [min, min·2^n], capped.
pub(crate) fn backoff(failures: u32) -> Duration {
    let ceiling = BACKOFF_MIN
        .saturating_mul(1u32 << failures.min(16))
        .min(BACKOFF_MAX);
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.subsec_nanos())
        .unwrap_or(0);
    // Cheap jitter source: the clock's nanoseconds, mixed.
    let mix = (nanos as u64).wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 32;
    let span = ceiling.saturating_sub(BACKOFF_MIN).as_millis() as u64;
    BACKOFF_MIN + Duration::from_millis(if span == 0 { 0 } else { mix % (span + 1) })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_grows_and_is_capped() {
        for n in 0..40 {
            let b = backoff(n);
            assert!(b >= BACKOFF_MIN && b <= BACKOFF_MAX, "{n}: {b:?}");
        }
        assert!(backoff(0) <= BACKOFF_MIN * 2);
    }
}
