//! Shipping to a Kafka cluster (`output.kafka`): batches → Kafka records (see
//! [`super::kafka`]) → the partitions' leaders, acknowledged by every in-sync
//! replica (`acks=all`) before the batch's positions go to the checkpointer.
//!
//! One batch is in flight at a time. A produce can fail half way (some partitions
//! acknowledged, others not); the whole batch is then sent again, so a source's
//! records reach its partition in order, possibly twice: the collector reading the
//! topic drops the copies by their `tributary.source_id` + `tributary.offset`.
//! While the cluster cannot take the batch it stays first in line (written to the
//! spool, so that a crash replays it first), and new batches go into the spool
//! behind it: files keep being read until the spool is full, then the readers wait.
//! Nothing is dropped, except a record larger than the brokers accept
//! (`max_message_bytes`), which is logged and counted as rejected.
//!
//! The order of what leaves is the collectors' one ([`super::order`]): the batch
//! in flight, then the spool, then batches the spool refused, then new ones.

use std::collections::VecDeque;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::sync::mpsc;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_common::codec::{self, Compression};
use tributary_common::error::report;
use tributary_common::kafka::KafkaError;

use super::kafka::encode::{EncodeError, Encoded};
use super::kafka::{Encoder, Producer, Sent};
use super::order::Queues;
use super::{acknowledged, backoff, sleep_until_opt, spool_or_hold};
use crate::batch::{Batch, Position};
use crate::config::KafkaOutput;
use crate::spool::Spool;
use crate::stats::AgentStats;

/// The largest batch payload taken back from the spool (the agent builds at most
/// 16 MiB).
const MAX_PAYLOAD: usize = 32 << 20;

/// Settings of the Kafka shipping stage.
pub struct KafkaShipper {
    pub output: KafkaOutput,
    /// After shutdown is requested, how long to keep trying to deliver.
    pub drain_timeout: Duration,
    pub stats: Arc<AgentStats>,
    /// Where acknowledged batches' positions go (the checkpointer).
    pub acked: Option<mpsc::UnboundedSender<Vec<Position>>>,
}

/// The batch being delivered, or the one after it.
struct Current {
    batch: Batch,
    /// Its spool file, deleted once the batch is acknowledged.
    spool_id: Option<u64>,
    /// Its Kafka batches, being encoded on another thread while the batch
    /// before it is delivered.
    encoding: Option<Encoding>,
}

impl Current {
    fn new(batch: Batch, spool_id: Option<u64>) -> Self {
        Current {
            batch,
            spool_id,
            encoding: None,
        }
    }
}

/// Batches encoded ahead, for a topic of `partitions` partitions.
struct Encoding {
    partitions: usize,
    task: tokio::task::JoinHandle<Result<Encoded, EncodeError>>,
}

struct State {
    current: Option<Current>,
    /// Taken from the batcher while `current` is being delivered (only when
    /// nothing older waits), so that its encoding overlaps the wait for the
    /// brokers; it goes next, or behind `current` into the spool.
    next: Option<Current>,
    spool: Spool,
    /// Batches the spool could not take (disk error): after the spool, before new
    /// batches; while any is here, no new batch is taken.
    held: VecDeque<Batch>,
    input_closed: bool,
    failures: u32,
    drain_deadline: Option<Instant>,
}

impl State {
    fn queues(&self) -> Queues {
        Queues {
            in_flight: usize::from(self.current.is_some()) + usize::from(self.next.is_some()),
            spooled: self.spool.len(),
            spool_has_room: self.spool.has_room(),
            held: self.held.len(),
            input_closed: self.input_closed,
        }
    }
}

impl KafkaShipper {
    /// Run until the batch channel closes and everything was acknowledged, or the
    /// drain timeout after `shutdown` runs out (what is spooled stays for next time).
    pub async fn run(
        self,
        mut rx: mpsc::Receiver<Batch>,
        spool: Spool,
        shutdown: CancellationToken,
    ) {
        let out = &self.output;
        let mut producer = Producer::new(
            out.brokers.clone(),
            out.settings.clone(),
            out.compression.codec(),
        );
        producer.max_message_bytes = out.max_message_bytes;
        let mut st = State {
            current: None,
            next: None,
            spool,
            held: VecDeque::new(),
            input_closed: false,
            failures: 0,
            drain_deadline: None,
        };
        self.stats
            .spool_bytes
            .store(st.spool.bytes(), Ordering::Relaxed);
        loop {
            if st.drain_deadline.is_none() && shutdown.is_cancelled() {
                st.drain_deadline = Some(Instant::now() + self.drain_timeout);
            }
            if st.current.is_none() {
                // Oldest first: the batch taken ahead (only ever taken while
                // nothing older waited), the spool, what it refused, new batches.
                if let Some(next) = st.next.take() {
                    st.current = Some(next);
                    continue;
                }
                if !st.spool.is_empty() {
                    match st.spool.next_unsent() {
                        Ok(Some((id, batch))) => {
                            st.current = Some(Current::new(batch, Some(id)));
                        }
                        Ok(None) => {}
                        Err(e) => {
                            tracing::error!(error = %e, "cannot read the spool; retrying");
                            if !self.pause(&mut st, &mut rx, &shutdown).await {
                                return;
                            }
                        }
                    }
                    continue;
                }
                if let Some(batch) = st.held.pop_front() {
                    st.current = Some(Current::new(batch, None));
                    continue;
                }
                if st.queues().done() {
                    return;
                }
                tokio::select! {
                    b = rx.recv() => match b {
                        Some(batch) => st.current = Some(Current::new(batch, None)),
                        None => st.input_closed = true,
                    },
                    _ = shutdown.cancelled(), if st.drain_deadline.is_none() => {}
                }
                continue;
            }
            let Some(mut cur) = st.current.take() else {
                continue;
            };
            let topic = self.output.topic.for_topic(&cur.batch.frame.topic);
            let partitions = producer.known_partitions(&topic);
            let encoder = producer.encoder();
            let result = {
                let deliver = self.deliver(&mut producer, &mut cur);
                tokio::pin!(deliver);
                loop {
                    let take_next = st.next.is_none()
                        && st.spool.is_empty()
                        && st.held.is_empty()
                        && !st.input_closed;
                    tokio::select! {
                        r = &mut deliver => break Some(r),
                        // A delivery can take its retries' worth of timeouts: the
                        // drain time after SIGTERM starts now, not after it.
                        _ = shutdown.cancelled(), if st.drain_deadline.is_none() => {
                            st.drain_deadline = Some(Instant::now() + self.drain_timeout);
                        }
                        _ = sleep_until_opt(st.drain_deadline) => break None,
                        b = rx.recv(), if take_next => match b {
                            Some(batch) => st.next = Some(self.prepare(batch, &topic, partitions, encoder)),
                            None => st.input_closed = true,
                        },
                    }
                }
            };
            st.current = Some(cur);
            match result {
                None => {
                    self.give_up(&st);
                    return;
                }
                Some(Ok(())) => {
                    if let Some(done) = st.current.take() {
                        self.acknowledged(&mut st, done);
                    }
                }
                Some(Err(e)) => {
                    st.failures += 1;
                    self.stats.connect_failures.fetch_add(1, Ordering::Relaxed);
                    if e.retriable() {
                        tracing::warn!(error = %report(&e), retry_in_ms = backoff(st.failures).as_millis() as u64, "cannot deliver to Kafka; spooling meanwhile");
                    } else {
                        // Will not clear up by itself (a missing topic, refused
                        // credentials): say so loudly, keep every line, keep trying.
                        tracing::error!(error = %report(&e), "cannot deliver to Kafka; spooling and retrying until this is fixed");
                    }
                    // A crash from here on replays it first.
                    if let Some(cur) = st.current.as_mut()
                        && cur.spool_id.is_none()
                    {
                        match st.spool.push_sent(&cur.batch) {
                            Ok(id) => cur.spool_id = Some(id),
                            Err(e) => {
                                tracing::error!(error = %e, "cannot spool the batch in flight")
                            }
                        }
                    }
                    // The batch taken ahead waits behind it, in the spool.
                    if let Some(next) = st.next.take() {
                        if let Some(e) = next.encoding {
                            e.task.abort();
                        }
                        self.spool_batch(&mut st, next.batch);
                    }
                    if !self.pause(&mut st, &mut rx, &shutdown).await {
                        return;
                    }
                    self.stats.retries.fetch_add(1, Ordering::Relaxed);
                }
            }
        }
    }

    /// Wait out the backoff, taking new batches into the spool meanwhile. `false`
    /// when the drain time after shutdown ran out.
    async fn pause(
        &self,
        st: &mut State,
        rx: &mut mpsc::Receiver<Batch>,
        shutdown: &CancellationToken,
    ) -> bool {
        let until = Instant::now() + backoff(st.failures);
        loop {
            tokio::select! {
                _ = tokio::time::sleep_until(until) => return true,
                _ = shutdown.cancelled(), if st.drain_deadline.is_none() => {
                    st.drain_deadline = Some(Instant::now() + self.drain_timeout);
                }
                _ = sleep_until_opt(st.drain_deadline) => {
                    self.give_up(st);
                    return false;
                }
                b = rx.recv(), if st.queues().take_offline() => match b {
                    Some(b) => self.spool_batch(st, b),
                    None => st.input_closed = true,
                },
            }
        }
    }

    /// `batch`, taken ahead of its turn: when it goes to `topic` (whose number of
    /// partitions is known) its Kafka batches are encoded on a blocking thread
    /// meanwhile.
    fn prepare(
        &self,
        batch: Batch,
        topic: &str,
        partitions: Option<usize>,
        encoder: Encoder,
    ) -> Current {
        let mut next = Current::new(batch, None);
        let f = &next.batch.frame;
        if let Some(partitions) = partitions
            && f.codec == Compression::None
            && self.output.topic.for_topic(&f.topic) == topic
        {
            let payload = f.payload.clone();
            next.encoding = Some(Encoding {
                partitions,
                task: tokio::task::spawn_blocking(move || encoder.encode(&payload, partitions)),
            });
        }
        next
    }

    /// Produce one batch; `Ok` once every record is acknowledged (or could never
    /// be stored: undecodable, or larger than the brokers accept, logged).
    async fn deliver(&self, producer: &mut Producer, cur: &mut Current) -> Result<(), KafkaError> {
        let batch = &cur.batch;
        let f = &batch.frame;
        let raw;
        let payload: &[u8] = if f.codec == Compression::None {
            &f.payload
        } else {
            match codec::decompress(
                f.codec,
                &f.payload,
                f.uncompressed_len as usize,
                MAX_PAYLOAD,
            ) {
                Ok(p) => {
                    raw = p;
                    &raw
                }
                Err(e) => {
                    self.drop_batch(batch, &format!("cannot decompress it: {e}"));
                    return Ok(());
                }
            }
        };
        let topic = self.output.topic.for_topic(&f.topic);
        self.stats.batches_sent.fetch_add(1, Ordering::Relaxed);
        self.stats
            .records_sent
            .fetch_add(u64::from(f.records), Ordering::Relaxed);
        self.stats
            .bytes_sent
            .fetch_add(payload.len() as u64, Ordering::Relaxed);
        let partitions = producer.partitions(&topic).await?;
        let ahead = match cur.encoding.take() {
            Some(e) if e.partitions == partitions => e.task.await.ok(),
            Some(e) => {
                e.task.abort();
                None
            }
            None => None,
        };
        let encoded = match ahead {
            Some(r) => r,
            None => producer.encoder().encode(payload, partitions),
        };
        let encoded = match encoded {
            Ok(enc) => enc,
            Err(e) => {
                self.drop_batch(batch, &e.to_string());
                return Ok(());
            }
        };
        let Sent {
            too_large,
            too_large_bytes,
            ..
        } = producer.send_encoded(&topic, encoded).await?;
        if too_large > 0 {
            self.stats
                .records_rejected
                .fetch_add(u64::from(too_large), Ordering::Relaxed);
            tracing::error!(
                topic = %topic,
                records = too_large,
                largest_bytes = too_large_bytes,
                max_message_bytes = self.output.max_message_bytes,
                "records larger than the brokers accept were left out; raise the topic's max.message.bytes and output.kafka.max_message_bytes, or lower the input's max_line_bytes"
            );
        }
        Ok(())
    }

    /// A batch that can never be delivered (a damaged spool file that passed its
    /// checksum, or a bug): logged and counted, so the rest can go on.
    fn drop_batch(&self, batch: &Batch, why: &str) {
        self.stats
            .records_rejected
            .fetch_add(u64::from(batch.records()), Ordering::Relaxed);
        tracing::error!(topic = %batch.frame.topic, records = batch.records(), "a batch cannot be delivered: {why}; it is dropped");
    }

    fn acknowledged(&self, st: &mut State, done: Current) {
        st.failures = 0;
        acknowledged(
            &mut st.spool,
            done.spool_id,
            done.batch,
            &self.stats,
            self.acked.as_ref(),
        );
    }

    /// Put a batch at the back of the spool, or hold it (see [`spool_or_hold`]).
    fn spool_batch(&self, st: &mut State, batch: Batch) {
        spool_or_hold(&mut st.spool, &mut st.held, batch, &self.stats);
    }

    fn give_up(&self, st: &State) {
        if st.current.is_some() || !st.spool.is_empty() {
            tracing::warn!(
                in_flight = usize::from(st.current.is_some()),
                spooled = st.spool.len(),
                "shutting down before Kafka acknowledged everything; in-flight lines are read again and the spool is sent after restart"
            );
        }
    }
}
