//! The bytes in flight across all agent connections of the ingest listener.
//!
//! Before a frame is read, the reader reserves its bytes and, for a batch, the
//! decompressed size it declares, in one reservation held until the batch is
//! appended ([`PeerBudget::reserve`]). A connection that announces a large frame
//! waits for room instead of buffering it, so memory stays within the budget
//! whatever the number of connections or what they send; and since a connection
//! never holds part of the budget while it waits for more, connections cannot
//! deadlock each other.
//!
//! One address may hold at most a quarter of the budget ([`PEER_SHARE`]): its
//! surplus frames wait on its own share, so a sender that announces frames and
//! stalls delays only itself and cannot queue ahead of every other agent.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex, PoisonError, Weak};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in units of this.
const UNIT: usize = 1024;
/// The part of the budget one address may hold: 1 / this.
pub const PEER_SHARE: usize = 4;

/// Bytes in flight across all connections.
#[derive(Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total: usize,
    peers: Arc<Mutex<Peers>>,
}

/// Each address's share; entries die with the last connection holding them.
#[derive(Default)]
struct Peers {
    shares: HashMap<IpAddr, Weak<Semaphore>>,
    /// Prune dead entries when the map reaches this size (then double it).
    prune_at: usize,
}

/// One connection's view of the budget: the global pool and its address's share.
pub struct PeerBudget {
    global: Arc<Semaphore>,
    share: Arc<Semaphore>,
    total_units: usize,
    share_units: usize,
}

/// Bytes held while a frame or payload is in memory; returned when dropped.
pub struct Reserved {
    _share: Option<OwnedSemaphorePermit>,
    _global: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let units = (bytes / UNIT).max(1);
        MemoryBudget {
            units: Arc::new(Semaphore::new(units)),
            total: units * UNIT,
            peers: Arc::default(),
        }
    }

    /// The budget in bytes.
    pub fn total(&self) -> usize {
        self.total
    }

    /// Bytes free now.
    pub fn available(&self) -> usize {
        self.units.available_permits() * UNIT
    }

    /// The budget as a connection from `ip` uses it.
    pub fn peer(&self, ip: IpAddr) -> PeerBudget {
        let share_units = (self.total / UNIT / PEER_SHARE).max(1);
        let mut peers = self.peers.lock().unwrap_or_else(PoisonError::into_inner);
        let share = match peers.shares.get(&ip).and_then(Weak::upgrade) {
            Some(s) => s,
            None => {
                if peers.shares.len() >= peers.prune_at {
                    peers.shares.retain(|_, w| w.strong_count() > 0);
                    peers.prune_at = (peers.shares.len() * 2).max(64);
                }
                let s = Arc::new(Semaphore::new(share_units));
                peers.shares.insert(ip, Arc::downgrade(&s));
                s
            }
        };
        PeerBudget {
            global: self.units.clone(),
            share,
            total_units: self.total / UNIT,
            share_units,
        }
    }
}

impl PeerBudget {
    /// Wait until `bytes` can be held: first within the address's share (at most
    /// the whole share), then in the global budget (at most the whole budget), so
    /// a single request never waits forever.
    pub async fn reserve(&self, bytes: usize) -> Reserved {
        let want = bytes.div_ceil(UNIT).max(1);
        let share = self
            .share
            .clone()
            .acquire_many_owned(want.min(self.share_units) as u32)
            .await
            .ok();
        let global = self
            .global
            .clone()
            .acquire_many_owned(want.min(self.total_units) as u32)
            .await
            .ok();
        Reserved {
            _share: share,
            _global: global,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn ip(last: u8) -> IpAddr {
        IpAddr::from([127, 0, 0, last])
    }

    async fn waits(r: impl std::future::Future<Output = Reserved>) -> bool {
        tokio::time::timeout(Duration::from_millis(50), r)
            .await
            .is_err()
    }

    #[tokio::test]
    async fn reservations_wait_for_room_and_return_it() {
        let b = MemoryBudget::new(40 * UNIT);
        let (p1, p2, p3, p4) = (b.peer(ip(1)), b.peer(ip(2)), b.peer(ip(3)), b.peer(ip(4)));
        let a = p1.reserve(6 * UNIT).await;
        assert_eq!(b.available(), 34 * UNIT);
        assert!(waits(p1.reserve(5 * UNIT)).await, "waits past its share");
        let others = [
            p2.reserve(10 * UNIT).await,
            p3.reserve(10 * UNIT).await,
            p4.reserve(8 * UNIT).await,
        ];
        assert!(
            waits(b.peer(ip(5)).reserve(7 * UNIT)).await,
            "waits for room"
        );
        drop(a);
        let e = b.peer(ip(5)).reserve(5 * UNIT).await;
        assert_eq!(b.available(), 7 * UNIT);
        drop((others, e));
        // More than the budget is the whole budget, and the whole share (it cannot
        // wait forever).
        let _all = b.peer(ip(6)).reserve(100 * UNIT).await;
        assert_eq!(b.available(), 0);
    }

    #[tokio::test]
    async fn one_address_cannot_hold_more_than_its_share() {
        let b = MemoryBudget::new(64 * UNIT);
        let flood = b.peer(ip(9));
        let mut held = Vec::new();
        for _ in 0..4 {
            held.push(flood.reserve(4 * UNIT).await);
        }
        // Its share (16 units) is used: more of its frames wait...
        let queued: Vec<_> = (0..100)
            .map(|_| {
                let p = b.peer(ip(9));
                tokio::spawn(async move { p.reserve(16 * UNIT).await })
            })
            .collect();
        tokio::time::sleep(Duration::from_millis(20)).await;
        // ...and another address is served at once.
        let other = tokio::time::timeout(
            Duration::from_millis(500),
            b.peer(ip(10)).reserve(16 * UNIT),
        )
        .await;
        assert!(other.is_ok(), "another address waited behind the flood");
        assert_eq!(b.available(), 32 * UNIT);
        for q in queued {
            q.abort();
        }
    }

    #[test]
    fn shares_of_gone_addresses_are_pruned() {
        let b = MemoryBudget::new(64 * UNIT);
        for i in 0..10_000u32 {
            let _p = b.peer(IpAddr::from(i.to_be_bytes()));
        }
        let live = b.peer(ip(1));
        let n = b.peers.lock().unwrap().shares.len();
        assert!(
            n <= 128,
            "{n} entries kept for addresses with no connection"
        );
        drop(live);
    }
}
