//! Why an agent connection ended before the agent closed it. Each variant says
//! what happened on this connection and keeps the underlying error as its
//! `source`; [`report`](tributary_common::error::report) prints the chain.

use thiserror::Error;
use tokio::task::JoinError;
use tributary_common::wire::{BatchError, PROTOCOL_VERSION, WireError};

use crate::storage::StorageError;

#[derive(Debug, Error)]
pub enum ConnectionError {
    /// `hint` says the failure in terms of the config when it is a certificate
    /// problem.
    #[error("TLS handshake failed{}", .hint.as_ref().map(|h| format!(": {h}")).unwrap_or_default())]
    Handshake {
        hint: Option<String>,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS handshake timed out")]
    HandshakeTimeout,
    #[error("no HELLO within the handshake timeout")]
    NoHello,
    #[error("protocol version {0} not supported; this collector speaks {PROTOCOL_VERSION}")]
    UnsupportedVersion(u16),
    #[error("expected {expected}, got a {got} frame")]
    UnexpectedFrame {
        expected: &'static str,
        got: &'static str,
    },
    /// The peer sent bytes that are not a valid frame.
    #[error("bad frame")]
    Frame(#[source] WireError),
    /// The batch failed its checks (checksum, size, codec, records): the sender's fault.
    #[error("batch {seq} refused")]
    Refused {
        seq: u64,
        #[source]
        source: BatchError,
    },
    /// The batch was fine but could not be stored; the agent sends it again.
    #[error("batch {seq} not stored")]
    NotStored {
        seq: u64,
        #[source]
        source: StorageError,
    },
    /// A blocking task (decompression, validation) panicked: a bug.
    #[error("batch task failed")]
    Task(#[from] JoinError),
    /// The agent's certificate does not allow what it sent.
    #[error("refused by identity")]
    Identity(#[source] super::identity::IdentityError),
    #[error("cannot write to the agent")]
    Send(#[source] WireError),
    #[error("the agent does not read its acknowledgements")]
    AckStalled,
}

impl ConnectionError {
    /// What a flood of bad or stalled clients produces: logged rate-limited, not
    /// one line each.
    pub fn is_handshake_noise(&self) -> bool {
        matches!(
            self,
            ConnectionError::Handshake { .. }
                | ConnectionError::HandshakeTimeout
                | ConnectionError::NoHello
        )
    }
}
