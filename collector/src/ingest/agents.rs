//! The agents connected now (`GET /v1/agents`): one entry per open ingest
//! connection, added when its HELLO is accepted and removed when it closes, so the
//! table is bounded by `ingest.max_connections`.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, PoisonError};

use serde::Serialize;

/// Records/s are measured over windows of this length.
const RATE_WINDOW_MS: i64 = 10_000;

/// One connected agent, as `/v1/agents` shows it.
#[derive(Debug, Clone, Serialize)]
pub struct AgentInfo {
    pub host: String,
    /// The certificate identity (mutual TLS), else empty.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub identity: String,
    pub address: String,
    pub version: String,
    pub connected_since: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub last_batch: Option<String>,
    pub batches: u64,
    pub records: u64,
    pub bytes: u64,
    /// Over the last complete window (about 10 s).
    pub records_per_second: f64,
}

#[derive(Debug)]
struct Entry {
    info: AgentInfo,
    last_batch_ms: Option<i64>,
    window_start_ms: i64,
    window_records: u64,
    /// Records/s of the last closed window (`None` until one closed).
    rate: Option<f64>,
}

/// Every open connection's entry.
#[derive(Debug, Default)]
pub struct Agents {
    next: AtomicU64,
    entries: Mutex<BTreeMap<u64, Entry>>,
}

/// A connection's place in [`Agents`]; removes it when dropped.
pub struct Registration {
    agents: Arc<Agents>,
    id: u64,
}

impl Agents {
    /// Add a connection that said HELLO.
    pub fn register(
        self: &Arc<Self>,
        host: &str,
        identity: &str,
        addr: SocketAddr,
        version: &str,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let now = tributary_common::timefmt::now_ms();
        let entry = Entry {
            info: AgentInfo {
                host: host.to_owned(),
                identity: identity.to_owned(),
                address: addr.to_string(),
                version: version.to_owned(),
                connected_since: tributary_common::timefmt::format_ms(now),
                last_batch: None,
                batches: 0,
                records: 0,
                bytes: 0,
                records_per_second: 0.0,
            },
            last_batch_ms: None,
            window_start_ms: now,
            window_records: 0,
            rate: None,
        };
        self.lock().insert(id, entry);
        Registration {
            agents: self.clone(),
            id,
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, BTreeMap<u64, Entry>> {
        self.entries.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// The connected agents, oldest connection first.
    pub fn list(&self) -> Vec<AgentInfo> {
        let now = tributary_common::timefmt::now_ms();
        self.lock()
            .values_mut()
            .map(|e| {
                roll(e, now);
                let mut info = e.info.clone();
                info.last_batch = e.last_batch_ms.map(tributary_common::timefmt::format_ms);
                // Before a window closed: the rate so far (over at least a second).
                let rate = e.rate.unwrap_or_else(|| {
                    e.window_records as f64 * 1000.0 / (now - e.window_start_ms).max(1000) as f64
                });
                info.records_per_second = (rate * 10.0).round() / 10.0;
                info
            })
            .collect()
    }

    pub fn len(&self) -> usize {
        self.lock().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

/// Close the rate window(s) that ended before `now`.
fn roll(e: &mut Entry, now: i64) {
    let elapsed = now - e.window_start_ms;
    if elapsed >= RATE_WINDOW_MS {
        // A quiet stretch after a busy window reads as 0, not as the old rate.
        e.rate = Some(if elapsed >= 2 * RATE_WINDOW_MS {
            0.0
        } else {
            e.window_records as f64 * 1000.0 / elapsed as f64
        });
        e.window_start_ms = now;
        e.window_records = 0;
    }
}

impl Registration {
    /// Account for one stored batch.
    pub fn batch(&self, records: u64, bytes: u64) {
        let now = tributary_common::timefmt::now_ms();
        if let Some(e) = self.agents.lock().get_mut(&self.id) {
            roll(e, now);
            e.info.batches += 1;
            e.info.records += records;
            e.info.bytes += bytes;
            e.window_records += records;
            e.last_batch_ms = Some(now);
        }
    }
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.agents.lock().remove(&self.id);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn entries_live_as_long_as_their_connection() {
        let agents = Arc::new(Agents::default());
        let addr: SocketAddr = "10.0.0.5:41000".parse().unwrap();
        let a = agents.register("web-01", "web-01", addr, "0.1.0");
        let b = agents.register("web-02", "", addr, "0.1.0");
        a.batch(100, 15_000);
        a.batch(50, 7_000);
        let list = agents.list();
        assert_eq!(list.len(), 2);
        assert_eq!(list[0].host, "web-01");
        assert_eq!(
            (list[0].records, list[0].batches, list[0].bytes),
            (150, 2, 22_000)
        );
        assert!(list[0].last_batch.is_some() && list[1].last_batch.is_none());
        assert!(list[0].records_per_second > 0.0);
        drop(a);
        assert_eq!(agents.list().len(), 1);
        drop(b);
        assert!(agents.is_empty());
    }
}
