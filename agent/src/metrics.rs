//! The optional Prometheus endpoint (`metrics.listen`): `GET /metrics` answers the
//! agent's counters. A tiny HTTP/1.1 responder keeps the agent free of an HTTP stack;
//! requests are size-limited and time-limited.

use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

use crate::stats::AgentStats;

const MAX_REQUEST: usize = 8 << 10;
const READ_TIMEOUT: Duration = Duration::from_secs(5);

/// Bind `addr` and serve until `shutdown`.
pub async fn serve(
    addr: &str,
    stats: Arc<AgentStats>,
    shutdown: CancellationToken,
) -> std::io::Result<JoinHandle<()>> {
    let listener = TcpListener::bind(addr).await?;
    tracing::info!(addr = %listener.local_addr()?, "metrics endpoint listening");
    Ok(tokio::spawn(async move {
        loop {
            let (mut sock, _) = tokio::select! {
                r = listener.accept() => match r {
                    Ok(s) => s,
                    Err(e) => {
                        tracing::warn!(error = %e, "metrics accept failed");
                        tokio::time::sleep(Duration::from_millis(100)).await;
                        continue;
                    }
                },
                _ = shutdown.cancelled() => return,
            };
            let stats = stats.clone();
            tokio::spawn(async move {
                let mut buf = vec![0u8; MAX_REQUEST];
                let mut n = 0;
                let head_done = loop {
                    match tokio::time::timeout(READ_TIMEOUT, sock.read(&mut buf[n..])).await {
                        Ok(Ok(0)) | Ok(Err(_)) | Err(_) => break false,
                        Ok(Ok(k)) => {
                            n += k;
                            if buf[..n].windows(4).any(|w| w == b"\r\n\r\n") {
                                break true;
                            }
                            if n == buf.len() {
                                break false;
                            }
                        }
                    }
                };
                let (status, body) = if !head_done {
                    ("400 Bad Request", String::from("bad request\n"))
                } else if buf[..n].starts_with(b"GET /metrics ") {
                    ("200 OK", stats.render())
                } else {
                    ("404 Not Found", String::from("not found; try /metrics\n"))
                };
                let resp = format!(
                    "HTTP/1.1 {status}\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = sock.write_all(resp.as_bytes()).await;
            });
        }
    }))
}
