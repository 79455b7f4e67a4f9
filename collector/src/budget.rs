//! Shared bounds of the ingest listener: the bytes in flight across all agent
//! connections, and connections per peer address.
//!
//! A frame's bytes are reserved before the frame is read ([`MemoryBudget`]): a
//! connection that announces a large frame waits for room instead of buffering it,
//! so memory stays within the budget whatever the number of connections or what
//! they send. Decompressed payloads are reserved the same way before a batch is
//! opened.

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use tokio::sync::{OwnedSemaphorePermit, Semaphore};

/// Bytes are counted in units of this.
const UNIT: usize = 1024;

/// Bytes in flight across all connections.
#[derive(Clone)]
pub struct MemoryBudget {
    units: Arc<Semaphore>,
    total: usize,
}

/// Bytes held while a frame or payload is in memory; returned when dropped.
pub struct Reserved {
    _permit: Option<OwnedSemaphorePermit>,
}

impl MemoryBudget {
    pub fn new(bytes: usize) -> Self {
        let units = (bytes / UNIT).max(1);
        MemoryBudget {
            units: Arc::new(Semaphore::new(units)),
            total: units * UNIT,
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

    /// Wait until `bytes` (at most the whole budget) can be held.
    pub async fn reserve(&self, bytes: usize) -> Reserved {
        let want = bytes.div_ceil(UNIT).clamp(1, self.total / UNIT) as u32;
        Reserved {
            _permit: self.units.clone().acquire_many_owned(want).await.ok(),
        }
    }
}

/// Connections per peer address.
#[derive(Clone, Default)]
pub struct PerIp {
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

/// One connection counted for its address; uncounted when dropped.
pub struct IpSlot {
    ip: IpAddr,
    open: Arc<Mutex<HashMap<IpAddr, usize>>>,
}

impl PerIp {
    /// Count one more connection from `ip`, unless it already has `max`.
    pub fn admit(&self, ip: IpAddr, max: usize) -> Option<IpSlot> {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        let n = open.entry(ip).or_insert(0);
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(IpSlot {
            ip,
            open: self.open.clone(),
        })
    }
}

impl Drop for IpSlot {
    fn drop(&mut self) {
        let mut open = self
            .open
            .lock()
            .unwrap_or_else(std::sync::PoisonError::into_inner);
        if let Some(n) = open.get_mut(&self.ip) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.ip);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn reservations_wait_for_room_and_return_it() {
        let b = MemoryBudget::new(10 * UNIT);
        let a = b.reserve(6 * UNIT).await;
        assert_eq!(b.available(), 4 * UNIT);
        let more =
            tokio::time::timeout(std::time::Duration::from_millis(50), b.reserve(5 * UNIT)).await;
        assert!(more.is_err(), "waits while there is no room");
        drop(a);
        let _c = b.reserve(5 * UNIT).await;
        // More than the whole budget is the whole budget (it cannot wait forever).
        drop(_c);
        let _all = b.reserve(100 * UNIT).await;
        assert_eq!(b.available(), 0);
    }

    #[test]
    fn per_ip_counts_and_forgets() {
        let p = PerIp::default();
        let ip: IpAddr = "10.0.0.1".parse().unwrap();
        let a = p.admit(ip, 2).unwrap();
        let b = p.admit(ip, 2).unwrap();
        assert!(p.admit(ip, 2).is_none());
        assert!(p.admit("10.0.0.2".parse().unwrap(), 2).is_some());
        drop(a);
        assert!(p.admit(ip, 2).is_some());
        drop(b);
        assert!(p.open.lock().unwrap().len() <= 1);
    }
}
