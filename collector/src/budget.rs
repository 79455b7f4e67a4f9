//! The bytes in flight across all agent connections of the ingest listener.
//!
//! A frame's bytes are reserved before the frame is read ([`MemoryBudget`]): a
//! connection that announces a large frame waits for room instead of buffering it,
//! so memory stays within the budget whatever the number of connections or what
//! they send. Decompressed payloads are reserved the same way before a batch is
//! opened.

use std::sync::Arc;

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
}
