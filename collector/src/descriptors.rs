//! The collector's descriptor plan: the process runs with the descriptor limit it
//! was given (`ulimit -n`, systemd's `LimitNOFILE=`) and divides it. Connections
//! get their caps (`ingest.max_connections`, `api.max_connections`) plus a few
//! for listeners and bookkeeping; the store gets what is left, bounded, for its
//! open segment files (see `tributary_store::Budget`). The number of topics and
//! segments on disk never enters into it.

use crate::config::CollectorConfig;
use tributary_store::Budget;

/// Descriptors kept for listeners, the data directory lock, consumer group files,
/// snapshots, logs and short-lived opens.
const RESERVED: usize = 64;
/// The store never takes more than this, whatever the limit.
const STORE_MAX: usize = 16_384;
/// Nor less than this (a very low limit is warned about instead).
const STORE_MIN: usize = 64;

/// How the descriptor limit is divided.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Plan {
    /// The soft limit, when it could be read.
    pub limit: Option<usize>,
    /// Descriptors connections may take at their caps, plus [`RESERVED`].
    pub network: usize,
    /// The store's share.
    pub store: Budget,
}

impl Plan {
    pub fn for_config(config: &CollectorConfig) -> Plan {
        Plan::new(
            soft_limit(),
            config.max_connections + config.http_limits.max_connections,
        )
    }

    pub fn new(limit: Option<usize>, connections: usize) -> Plan {
        let network = connections + RESERVED;
        let store = match limit {
            None => STORE_MAX / 4,
            Some(l) if l >= network + 4 * STORE_MIN => (l - network).min(STORE_MAX),
            Some(l) => (l / 4).max(STORE_MIN),
        };
        Plan {
            limit,
            network,
            store: Budget::of_descriptors(store),
        }
    }

    /// Whether connections at their caps plus the store could run out of
    /// descriptors: then what to change, naming the keys.
    pub fn shortfall(&self) -> Option<String> {
        let limit = self.limit?;
        let want = self.network + self.store.descriptors();
        (want > limit).then(|| {
            format!(
                "the descriptor limit ({limit}) is below what ingest.max_connections and api.max_connections may use at their caps plus the store's open files ({want}): raise it (LimitNOFILE= in the systemd unit, ulimit -n) or lower those caps; meanwhile connections beyond it wait"
            )
        })
    }

    /// One line for the start-up log.
    pub fn describe(&self) -> String {
        format!(
            "descriptor limit {}: up to {} for connections, {} for the store ({} partitions writing, {} read handles)",
            self.limit.map_or("unknown".into(), |l| l.to_string()),
            self.network,
            self.store.descriptors(),
            self.store.open_writers,
            self.store.read_handles
        )
    }
}

/// The soft `RLIMIT_NOFILE` of this process, from `/proc/self/limits`.
pub fn soft_limit() -> Option<usize> {
    let limits = std::fs::read_to_string("/proc/self/limits").ok()?;
    parse_soft_limit(&limits)
}

fn parse_soft_limit(limits: &str) -> Option<usize> {
    let line = limits.lines().find(|l| l.starts_with("Max open files"))?;
    let soft = line
        .trim_start_matches("Max open files")
        .split_whitespace()
        .next()?;
    match soft {
        "unlimited" => Some(usize::MAX / 2),
        n => n.parse().ok(),
    }
}

/// Descriptors this process has open now.
pub fn open_now() -> Option<usize> {
    std::fs::read_dir("/proc/self/fd").ok().map(|d| d.count())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_proc_limits() {
        let text = "Limit                     Soft Limit           Hard Limit           Units     \n\
                    Max cpu time              unlimited            unlimited            seconds   \n\
                    Max open files            1024                 524288               files     \n";
        assert_eq!(parse_soft_limit(text), Some(1024));
        assert_eq!(
            parse_soft_limit("Max open files unlimited unlimited files"),
            Some(usize::MAX / 2)
        );
        assert_eq!(parse_soft_limit("nothing here"), None);
    }

    #[test]
    fn divides_the_limit() {
        // Defaults (1024 ingest + 512 HTTP connections) under a 1024 limit: the
        // store still gets a quarter, and the shortfall is named.
        let p = Plan::new(Some(1024), 1536);
        assert_eq!(p.store.descriptors(), 256);
        assert!(p.shortfall().unwrap().contains("LimitNOFILE"));
        // A generous limit: everything fits, the store is capped.
        let p = Plan::new(Some(1 << 20), 1536);
        assert!(p.store.descriptors() <= STORE_MAX);
        assert!(p.shortfall().is_none());
        let p = Plan::new(Some(65_536), 1536);
        assert_eq!(p.store.descriptors(), STORE_MAX);
        assert!(p.shortfall().is_none());
        // Room for both at a middling limit.
        let p = Plan::new(Some(4096), 1536);
        assert!(p.network + p.store.descriptors() <= 4096);
        assert!(p.shortfall().is_none());
        assert!(Plan::new(None, 1536).store.descriptors() > 0);
    }
}
