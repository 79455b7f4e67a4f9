//! One connection to a collector: TCP connect, TLS handshake, HELLO/WELCOME,
//! every step with a timeout, and failures said in terms of the config.

use std::sync::Arc;
use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio::time::timeout;
use tokio_rustls::TlsConnector;
use tokio_rustls::client::TlsStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tributary_common::tls::ClientFiles;
use tributary_common::wire::{
    DEFAULT_MAX_FRAME_BYTES, ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION, WireError,
};

use crate::config::CollectorAddr;

const CONNECT_TIMEOUT: Duration = Duration::from_secs(10);

pub type Reader = FramedRead<ReadHalf<TlsStream<TcpStream>>, FrameCodec>;
pub type Writer = FramedWrite<WriteHalf<TlsStream<TcpStream>>, FrameCodec>;

/// Why a connection to a collector could not be set up. Each variant keeps the
/// underlying error as its `source`; log it with
/// [`report`](tributary_common::error::report).
#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error("cannot connect")]
    Connect(#[source] std::io::Error),
    #[error("connect timed out after {0:?}")]
    ConnectTimeout(Duration),
    #[error("bad server name `{0}`: set output.tls.server_name")]
    ServerName(String),
    /// A certificate or TLS setup problem, said in terms of the config: retrying
    /// does not fix it.
    #[error("{hint}")]
    Setup {
        hint: String,
        #[source]
        source: std::io::Error,
    },
    #[error("TLS")]
    Tls(#[source] std::io::Error),
    #[error("TLS handshake timed out after {0:?}")]
    TlsTimeout(Duration),
    #[error("collector refused us: {message} ({code:?})")]
    Refused { code: ErrorCode, message: String },
    #[error(
        "collector speaks protocol version {0}, this agent {PROTOCOL_VERSION}: upgrade the older one"
    )]
    Version(u16),
    #[error("unexpected {0} frame during the handshake")]
    UnexpectedFrame(&'static str),
    #[error("bad frame during the handshake")]
    Frame(#[source] WireError),
    #[error("collector closed the connection during the handshake")]
    Closed,
    #[error("no answer to HELLO within {0:?}")]
    NoWelcome(Duration),
}

impl ConnectError {
    /// Whether the configuration (certificates, names, versions) is at fault rather
    /// than the network.
    pub fn is_setup_problem(&self) -> bool {
        matches!(
            self,
            ConnectError::Setup { .. }
                | ConnectError::Version(_)
                | ConnectError::ServerName(_)
                | ConnectError::Refused {
                    code: ErrorCode::UnsupportedVersion,
                    ..
                }
        )
    }
}

/// TCP connect, TLS handshake and HELLO/WELCOME with one collector. Certificate
/// problems come back as [`ConnectError::Setup`] naming the file or key to fix.
pub async fn connect(
    target: &CollectorAddr,
    tls: &Arc<rustls::ClientConfig>,
    files: &ClientFiles,
    host: &str,
) -> Result<(Reader, Writer), ConnectError> {
    let explain = |e: std::io::Error| match tributary_common::tls::client_failure(
        &e,
        files,
        &target.server_name,
    ) {
        Some(hint) => ConnectError::Setup { hint, source: e },
        None => ConnectError::Tls(e),
    };
    let tcp = timeout(CONNECT_TIMEOUT, TcpStream::connect(&target.addr))
        .await
        .map_err(|_| ConnectError::ConnectTimeout(CONNECT_TIMEOUT))?
        .map_err(ConnectError::Connect)?;
    let _ = tcp.set_nodelay(true);
    let name = ServerName::try_from(target.server_name.clone())
        .map_err(|_| ConnectError::ServerName(target.server_name.clone()))?;
    let tls = timeout(
        CONNECT_TIMEOUT,
        TlsConnector::from(tls.clone()).connect(name, tcp),
    )
    .await
    .map_err(|_| ConnectError::TlsTimeout(CONNECT_TIMEOUT))?
    .map_err(explain)?;
    let (r, w) = tokio::io::split(tls);
    let mut reader = FramedRead::new(r, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));
    let mut writer = FramedWrite::new(w, FrameCodec::new(DEFAULT_MAX_FRAME_BYTES));
    let hello = Frame::Hello {
        version: PROTOCOL_VERSION,
        host: host.to_owned(),
        agent: env!("CARGO_PKG_VERSION").to_string(),
    };
    match writer.send(hello).await {
        Ok(()) => {}
        Err(WireError::Io(e)) => return Err(explain(e)),
        Err(e) => return Err(ConnectError::Frame(e)),
    }
    // With TLS 1.3 the collector checks our certificate after the handshake looks
    // done on our side: its refusal arrives here, as the answer to HELLO.
    match timeout(CONNECT_TIMEOUT, reader.next()).await {
        Ok(Some(Ok(Frame::Welcome { version, .. }))) if version == PROTOCOL_VERSION => {
            Ok((reader, writer))
        }
        Ok(Some(Ok(Frame::Welcome { version, .. }))) => Err(ConnectError::Version(version)),
        Ok(Some(Ok(Frame::Error { code, message }))) => {
            Err(ConnectError::Refused { code, message })
        }
        Ok(Some(Ok(other))) => Err(ConnectError::UnexpectedFrame(other.name())),
        Ok(Some(Err(WireError::Io(e)))) => Err(explain(e)),
        Ok(Some(Err(e))) => Err(ConnectError::Frame(e)),
        Ok(None) => Err(ConnectError::Closed),
        Err(_) => Err(ConnectError::NoWelcome(CONNECT_TIMEOUT)),
    }
}
