//! The async loop around a [`Tail`]: step it on the blocking pool, register its
//! version before its records leave, send chunks (waiting while the pipeline is
//! full), sleep until the file changes, and close it when gone, idle or finished.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tokio::sync::{Notify, mpsc};
use tokio_util::sync::CancellationToken;
use tracing::{debug, info, warn};

use super::super::Chunk;
use super::super::fingerprint::FileKey;
use super::{Closed, Step, Tail};

/// Why a reader stopped.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum ExitReason {
    /// The file was gone from the scans, read to its end and closed.
    Orphaned,
    /// Reading failed; the error was logged.
    Failed,
    /// Nothing new for `close_inactive`: the file was closed to free its descriptor.
    Idle,
    /// A compressed file was read to its end.
    Finished,
    Shutdown,
    /// The chunk receiver is gone.
    ChannelClosed,
}

#[derive(Debug)]
pub(crate) struct ReaderExit {
    pub key: FileKey,
    pub reason: ExitReason,
    pub closed: Option<Closed>,
}

/// How a reader talks to the rest of the input.
pub(crate) struct Follow {
    pub tx: mpsc::Sender<Chunk>,
    pub shutdown: CancellationToken,
    /// Woken by watcher events for this file's paths and by the coordinator.
    pub wake: Arc<Notify>,
    /// Set by the coordinator when the file no longer appears under any matching path.
    pub orphaned: Arc<AtomicBool>,
    pub poll_interval: Duration,
    /// Close the file after this long without new data (it is reopened by identity
    /// when it changes), so thousands of matched files do not hold thousands of
    /// descriptors. Only while more than [`CLOSE_IDLE_ABOVE`] files are open: a
    /// closed file that is renamed out of the globs right after new lines were
    /// written has no reader to finish it, so files stay open when there is room.
    pub close_inactive: Duration,
    /// The agent's counters (files open).
    pub stats: Arc<crate::stats::AgentStats>,
}

/// Idle files are closed only while more files than this are open.
pub(crate) const CLOSE_IDLE_ABOVE: u64 = 100;

/// Tail one file until shutdown, an error, or (once it is gone) its end.
pub(crate) async fn follow(mut tail: Tail, f: Follow) -> ReaderExit {
    let key = tail.key();
    let exit = |reason, closed| ReaderExit {
        key,
        reason,
        closed,
    };
    debug!(path = %tail.path(), offset = tail.offset(), "tailing file");
    // A copy recognized when it was opened is registered first, even when it holds
    // nothing new: a restart must know it as that content.
    if tail.lineage.is_some()
        && let Some(reason) = make_durable(&mut tail, &f).await
    {
        return exit(reason, None);
    }
    let mut last_data = Instant::now();
    let assembles = tail.assembles();
    loop {
        let mut job = tokio::task::spawn_blocking(move || {
            let r = tail.step();
            (tail, r)
        });
        let (t, step) = tokio::select! {
            biased;
            _ = f.shutdown.cancelled() => {
                // A record being assembled is sent before the final checkpoint: let
                // the read finish, send what it made, then the record.
                if assembles && let Ok((mut t, step)) = (&mut job).await {
                    let sent = match step {
                        Ok(Step::Chunk(c)) => send_final(&mut t, &f, c).await,
                        Ok(_) => true,
                        Err(_) => false,
                    };
                    if sent && let Ok(Some(c)) = t.flush_pending() {
                        send_final(&mut t, &f, c).await;
                    }
                }
                return exit(ExitReason::Shutdown, None);
            }
            r = &mut job => match r {
                Ok(v) => v,
                Err(e) => {
                    warn!(error = %e, "file reader task failed");
                    return exit(ExitReason::Failed, None);
                }
            },
        };
        tail = t;
        match step {
            Err(e) if e.kind() == io::ErrorKind::WouldBlock => {
                // Not failed: the next scan looks again.
                debug!(path = %tail.path(), error = %e, "not ready; looking again at the next scan");
                return exit(ExitReason::Failed, Some(tail.closed(false)));
            }
            Err(e) => {
                warn!(path = %tail.path(), error = %e, "reading file failed; dropping it");
                return exit(ExitReason::Failed, Some(tail.closed(true)));
            }
            Ok(Step::Finished) => {
                if let Some(reason) = make_durable(&mut tail, &f).await {
                    return exit(reason, None);
                }
                debug!(path = %tail.path(), offset = tail.offset(), "compressed file read to its end");
                return exit(ExitReason::Finished, Some(tail.closed(false)));
            }
            Ok(Step::Chunk(chunk)) => {
                last_data = Instant::now();
                if let Some(reason) = make_durable(&mut tail, &f).await {
                    return exit(reason, None);
                }
                if let Some(reason) = send(&f, chunk).await {
                    return exit(reason, None);
                }
            }
            Ok(Step::Progress) => last_data = Instant::now(),
            Ok(Step::Truncated { at, size }) => {
                info!(path = %tail.path(), offset = at, size, "file truncated; reading it again from the start");
                last_data = Instant::now();
            }
            Ok(Step::Eof) => {
                let orphaned = f.orphaned.load(Ordering::Relaxed);
                if orphaned && last_data.elapsed() >= f.poll_interval {
                    if let Some(chunk) = tail.flush_final() {
                        if let Some(reason) = make_durable(&mut tail, &f).await {
                            return exit(reason, None);
                        }
                        if let Some(reason) = send(&f, chunk).await {
                            return exit(reason, None);
                        }
                    }
                    debug!(path = %tail.path(), offset = tail.offset(), "file is gone and read to its end; closing it");
                    return exit(ExitReason::Orphaned, Some(tail.closed(false)));
                }
                let crowded = f.stats.files_open.load(Ordering::Relaxed) > CLOSE_IDLE_ABOVE;
                if crowded && last_data.elapsed() >= f.close_inactive {
                    debug!(path = %tail.path(), offset = tail.offset(), "file inactive; closing it until it changes");
                    let mut closed = tail.closed(false);
                    closed.idle = true;
                    return exit(ExitReason::Idle, Some(closed));
                }
                // A record waiting for a line that does not come leaves after the
                // multiline timeout.
                let flush_at = tail.pending().then(|| last_data + tail.pending_timeout());
                if flush_at.is_some_and(|t| t <= Instant::now()) {
                    last_data = Instant::now();
                    match tail.flush_pending() {
                        Ok(Some(chunk)) => {
                            if let Some(reason) = make_durable(&mut tail, &f).await {
                                return exit(reason, None);
                            }
                            if let Some(reason) = send(&f, chunk).await {
                                return exit(reason, None);
                            }
                        }
                        Ok(None) => {}
                        Err(e) => {
                            warn!(path = %tail.path(), error = %e, "reading file failed; dropping it");
                            return exit(ExitReason::Failed, Some(tail.closed(true)));
                        }
                    }
                    continue;
                }
                tail.shrink_idle();
                // Look again after close_inactive: the file may be due for closing then,
                // or more files may be open by then (never a deadline in the past).
                let since = if crowded { last_data } else { Instant::now() };
                let idle_at = tokio::time::Instant::from_std(since + f.close_inactive);
                let flush_at =
                    tokio::time::Instant::from_std(flush_at.unwrap_or(since + f.close_inactive));
                loop {
                    tokio::select! {
                        biased;
                        _ = f.shutdown.cancelled() => {
                            if let Ok(Some(c)) = tail.flush_pending() {
                                send_final(&mut tail, &f, c).await;
                            }
                            return exit(ExitReason::Shutdown, None);
                        }
                        _ = f.wake.notified() => break,
                        _ = tokio::time::sleep_until(idle_at) => break,
                        _ = tokio::time::sleep_until(flush_at) => break,
                        _ = tokio::time::sleep(f.poll_interval) => {
                            if f.orphaned.load(Ordering::Relaxed) || tail.has_news() {
                                break;
                            }
                        }
                    }
                }
            }
        }
    }
}

/// A generation after a truncation, a recognized copy or a compressed file is
/// registered in the saved checkpoints before its first record leaves (see
/// [`Tail::registration`], [`Marks::make_durable`]). `Some(reason)` when the reader
/// must stop instead.
async fn make_durable(tail: &mut Tail, f: &Follow) -> Option<ExitReason> {
    let info = tail.registration()?;
    tokio::select! {
        biased;
        _ = f.shutdown.cancelled() => Some(ExitReason::Shutdown),
        () = tail.cfg.marks.make_durable(info.clone()) => {
            tail.registered(&info);
            None
        }
    }
}

/// At shutdown: send one last chunk, if the version needs no registration first
/// (that waits on the checkpoint writer, which is stopping) and the pipeline takes
/// it soon. Whether it was sent.
async fn send_final(tail: &mut Tail, f: &Follow, chunk: Chunk) -> bool {
    if tail.registration().is_some() {
        return false;
    }
    matches!(
        tokio::time::timeout(Duration::from_secs(2), f.tx.send(chunk)).await,
        Ok(Ok(()))
    )
}

/// Send one chunk, waiting while the channel is full. `Some(reason)` when the reader
/// must stop instead.
async fn send(f: &Follow, chunk: Chunk) -> Option<ExitReason> {
    tokio::select! {
        biased;
        _ = f.shutdown.cancelled() => Some(ExitReason::Shutdown),
        r = f.tx.send(chunk) => r.is_err().then_some(ExitReason::ChannelClosed),
    }
}
