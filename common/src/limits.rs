//! Connections per peer address, for listeners that face many clients (the
//! collector's ingest, the agent's syslog TCP).

use std::collections::HashMap;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

/// Connections per peer address.
#[derive(Debug, Clone, Default)]
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
