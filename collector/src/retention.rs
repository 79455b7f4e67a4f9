//! The retention task: every `retention.check_interval_ms`, every partition of every
//! topic deletes the segments its topic's `retention` settings (`max_age`,
//! `max_bytes`) no longer keep. The store does the work and logs each deletion
//! (`tributary_store::Partition::enforce_retention`); this module schedules it off
//! the async threads and counts it in the metrics.

use std::sync::Arc;

use tokio_util::sync::CancellationToken;
use tributary_store::{Deleted, RetentionPolicy};

use crate::metrics::Metrics;
use crate::storage::Storage;

/// What one partition's pass deleted.
#[derive(Debug, Clone)]
pub struct PartitionDeleted {
    pub topic: String,
    pub partition: u32,
    pub deleted: Deleted,
}

/// A partition with no append for this long closes its segment files at the next
/// pass (they reopen at its next append).
const IDLE_FILES_MS: i64 = 60_000;

/// Run retention passes (and close idle partitions' files) until `shutdown`.
pub async fn run(storage: Arc<Storage>, metrics: Arc<Metrics>, shutdown: CancellationToken) {
    let mut tick = tokio::time::interval(storage.config().retention_check_interval);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        let s = storage.clone();
        let now = tributary_common::timefmt::now_ms();
        let pass = move || {
            // Partitions idle for a while let go of their open segment files.
            s.store().release_idle(now.saturating_sub(IDLE_FILES_MS));
            enforce(&s, now)
        };
        match tokio::task::spawn_blocking(pass).await {
            Ok(deleted) => account(&storage, &metrics, &deleted),
            Err(e) => tracing::error!(error = %e, "retention task failed"),
        }
    }
}

/// One retention pass over every partition as of `now_ms` (epoch milliseconds).
/// Blocking. Failures are logged and leave that partition for the next pass.
pub fn enforce(storage: &Storage, now_ms: i64) -> Vec<PartitionDeleted> {
    let mut out = Vec::new();
    for t in storage.store().topics() {
        let settings = storage.config().topic_settings(t.name());
        let policy = RetentionPolicy {
            max_age: settings.max_age,
            max_bytes: settings.max_bytes,
        };
        if policy == RetentionPolicy::default() {
            continue;
        }
        for p in t.partitions() {
            match p.enforce_retention(&policy, now_ms) {
                Ok(deleted) if deleted.segments > 0 => out.push(PartitionDeleted {
                    topic: t.name().to_owned(),
                    partition: p.id(),
                    deleted,
                }),
                Ok(_) => {}
                Err(e) => tracing::error!(topic = t.name(), partition = p.id(), error = %e,
                    "retention pass failed"),
            }
        }
    }
    out
}

/// Count a pass in the metrics and wake readers waiting on offsets that are gone.
pub fn account(storage: &Storage, metrics: &Metrics, deleted: &[PartitionDeleted]) {
    if deleted.is_empty() {
        return;
    }
    for d in deleted {
        metrics.retention_segments.inc_by(d.deleted.segments as u64);
        metrics.retention_bytes.inc_by(d.deleted.bytes);
    }
    storage.bump();
}
