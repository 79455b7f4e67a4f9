//! Syslog input: receives messages on UDP, TCP and TLS (RFC 5425) listeners, parses
//! them (RFC 5424 and RFC 3164) and sends them as record blocks ([`Chunk`]s) to the
//! batcher.
//!
//! Brief overview:
//! - [`SyslogInput::bind`] binds every `listen` address at start-up, so a port in
//!   use stops the agent with a reason instead of failing later in the background.
//! - [`SyslogInput::run`] runs one task per listener (`listener`): UDP reads
//!   datagrams in bursts; TCP and TLS accept connections under a connection cap and
//!   run one task per connection, so a slow or hostile client only stalls itself.
//! - `framing` splits TCP streams (octet counting or LF/NUL, per message), `parse`
//!   reads one message (a pure function), `encode` turns parsed messages into
//!   blocks: many messages per chunk (one UDP burst or TCP read, at most
//!   [`FLUSH_INTERVAL`] old), one block per run of the same host and source.
//! - Backpressure: TCP waits on the bounded chunk channel (the sender's TCP window
//!   fills). UDP cannot wait: it keeps a bounded backlog of chunks and, beyond it,
//!   drops and counts (`syslog_udp_dropped_total`), logging at most once a second.
//!
//! Records (SPEC): timestamp = the message's time, else the receive time; host =
//! HOSTNAME, else the sender's IP; source = `syslog+udp://IP`, `syslog+tcp://IP` or
//! `syslog+tls://IP`; `source_id` and offsets are 0 (syslog has no replay position).
//! This module must not block the runtime: all socket work is async and parsing is
//! a few hundred nanoseconds per message.

pub mod encode;
pub mod framing;
mod listener;
pub mod parse;

#[cfg(test)]
mod net_tests;
#[cfg(test)]
mod tests;

use std::fmt;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::{TcpListener, UdpSocket};
use tokio::sync::{Semaphore, mpsc};
use tokio::task::JoinSet;
use tokio_util::sync::CancellationToken;

use crate::config::SyslogInputConfig;
use crate::input::Chunk;
use crate::stats::AgentStats;

pub use self::parse::{Parsed, TimeZone, parse};

/// A pending chunk is sent at the latest this long after its first message.
pub const FLUSH_INTERVAL: Duration = Duration::from_millis(5);
/// TLS handshakes that take longer are abandoned.
pub const TLS_HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);

/// The transport of a listen address.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Transport {
    Udp,
    Tcp,
    Tls,
}

impl Transport {
    /// The scheme, as in `listen` and in record sources (`syslog+udp://…`).
    pub fn scheme(self) -> &'static str {
        match self {
            Transport::Udp => "udp",
            Transport::Tcp => "tcp",
            Transport::Tls => "tls",
        }
    }
}

/// One `listen` entry: `udp://IP:PORT`, `tcp://IP:PORT` or `tls://IP:PORT`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen {
    pub transport: Transport,
    pub addr: SocketAddr,
}

impl Listen {
    pub fn parse(s: &str) -> Result<Listen, String> {
        let (scheme, addr) = s
            .split_once("://")
            .ok_or_else(|| format!("`{s}` needs a scheme: udp://, tcp:// or tls://"))?;
        let transport = match scheme {
            "udp" => Transport::Udp,
            "tcp" => Transport::Tcp,
            "tls" => Transport::Tls,
            other => {
                return Err(format!(
                    "unknown scheme `{other}` in `{s}` (use udp, tcp or tls)"
                ));
            }
        };
        let addr = addr.parse().map_err(|_| {
            format!("`{addr}` in `{s}` is not IP:PORT (e.g. 127.0.0.1:5514, [::]:5514)")
        })?;
        Ok(Listen { transport, addr })
    }
}

impl fmt::Display for Listen {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}://{}", self.transport.scheme(), self.addr)
    }
}

/// Why a syslog input could not start.
#[derive(Debug, Error)]
pub enum SyslogInputError {
    #[error("cannot listen on {listen}: {source}")]
    Bind {
        listen: Listen,
        #[source]
        source: std::io::Error,
    },
    #[error("{listen} needs a `tls` block with cert and key")]
    NoTls { listen: Listen },
}

/// What every listener task of one input shares.
#[derive(Debug)]
pub(crate) struct Shared {
    pub topic: Arc<str>,
    pub fields: Arc<[u8]>,
    pub timezone: TimeZone,
    pub max_message_bytes: usize,
    pub idle_timeout: Duration,
    pub chunk_bytes: usize,
    pub stats: Arc<AgentStats>,
    pub connections: Arc<Semaphore>,
    pub max_connections_per_ip: usize,
    pub per_ip: tributary_common::limits::PerIp,
}

enum Bound {
    Udp(UdpSocket),
    Tcp(
        TcpListener,
        Option<Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>>,
    ),
}

/// A `type: syslog` input with its sockets bound.
pub struct SyslogInput {
    bound: Vec<(Listen, Bound)>,
    shared: Arc<Shared>,
}

impl SyslogInput {
    /// Bind every listen address. `chunk_bytes`: a pending chunk is sent when it
    /// reaches this size.
    pub async fn bind(
        cfg: &SyslogInputConfig,
        chunk_bytes: usize,
        stats: Arc<AgentStats>,
    ) -> Result<SyslogInput, SyslogInputError> {
        let mut bound = Vec::new();
        for &listen in &cfg.listen {
            let b = match listen.transport {
                Transport::Udp => Bound::Udp(
                    listener::bind_udp(listen.addr)
                        .map_err(|source| SyslogInputError::Bind { listen, source })?,
                ),
                Transport::Tcp | Transport::Tls => {
                    let tls = match (listen.transport, &cfg.tls) {
                        (Transport::Tls, Some(c)) => Some(c.clone()),
                        (Transport::Tls, None) => return Err(SyslogInputError::NoTls { listen }),
                        _ => None,
                    };
                    let l = TcpListener::bind(listen.addr)
                        .await
                        .map_err(|source| SyslogInputError::Bind { listen, source })?;
                    Bound::Tcp(l, tls)
                }
            };
            bound.push((listen, b));
        }
        Ok(SyslogInput {
            bound,
            shared: Arc::new(Shared {
                topic: cfg.topic.clone(),
                fields: cfg.fields_json.clone(),
                timezone: cfg.timezone,
                max_message_bytes: cfg.max_message_bytes.max(1),
                idle_timeout: cfg.idle_timeout,
                chunk_bytes: chunk_bytes.max(1),
                stats,
                connections: Arc::new(Semaphore::new(cfg.max_connections.max(1))),
                max_connections_per_ip: cfg.max_connections_per_ip,
                per_ip: Default::default(),
            }),
        })
    }

    /// The bound addresses (port 0 resolved), in `listen` order.
    pub fn local_addrs(&self) -> Vec<Listen> {
        self.bound
            .iter()
            .map(|(l, b)| {
                let addr = match b {
                    Bound::Udp(s) => s.local_addr(),
                    Bound::Tcp(s, _) => s.local_addr(),
                };
                Listen {
                    transport: l.transport,
                    addr: addr.unwrap_or(l.addr),
                }
            })
            .collect()
    }

    /// Receive until `shutdown` is cancelled (then stop promptly and return `Ok`) or
    /// the chunk receiver is gone. Bad input never ends a listener.
    pub async fn run(
        self,
        tx: mpsc::Sender<Chunk>,
        shutdown: CancellationToken,
    ) -> Result<(), SyslogInputError> {
        let mut tasks = JoinSet::new();
        for (listen, b) in self.bound {
            tracing::info!(%listen, topic = %self.shared.topic, "syslog listening");
            let (sh, tx, stop) = (self.shared.clone(), tx.clone(), shutdown.clone());
            match b {
                Bound::Udp(s) => tasks.spawn(listener::udp(s, sh, tx, stop)),
                Bound::Tcp(l, tls) => {
                    tasks.spawn(listener::tcp(l, listen.transport, tls, sh, tx, stop))
                }
            };
        }
        drop(tx);
        while let Some(r) = tasks.join_next().await {
            if let Err(e) = r {
                tracing::error!(error = %e, "syslog listener task failed");
            }
        }
        Ok(())
    }
}
