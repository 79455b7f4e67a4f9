//! Bad input against a real collector: every violation closes only the offending
//! connection, with an ERROR frame naming the reason, and harms nothing else.

use std::sync::Arc;
use std::time::Duration;

use bytes::{BufMut, BytesMut};
use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tributary_common::codec::Compression;
use tributary_common::record::BlockWriter;
use tributary_common::wire::{BatchFrame, ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION};
use tributary_e2e::{Env, block_on};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

async fn connect(env: &Env, port: u16, with_client_cert: bool) -> std::io::Result<Tls> {
    let cert = with_client_cert.then_some((
        env.certs.agent_cert.as_path(),
        env.certs.agent_key.as_path(),
    ));
    let config = tributary_common::tls::client_config(&env.certs.ca, cert).expect("client config");
    let tcp = TcpStream::connect(("127.0.0.1", port)).await?;
    let name = ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
        .connect(name, tcp)
        .await?;
    // With TLS 1.3 a refused client certificate only shows on the first read.
    tls.flush().await?;
    Ok(tls)
}

async fn hello(
    tls: Tls,
) -> (
    FramedRead<tokio::io::ReadHalf<Tls>, FrameCodec>,
    tokio::io::WriteHalf<Tls>,
) {
    let (r, w) = tokio::io::split(tls);
    let mut reader = FramedRead::new(r, FrameCodec::new(1 << 20));
    let mut writer = FramedWrite::new(w, FrameCodec::new(64 << 20));
    writer
        .send(Frame::Hello {
            version: PROTOCOL_VERSION,
            host: "evil".into(),
            agent: "test".into(),
        })
        .await
        .expect("send hello");
    match reader.next().await {
        Some(Ok(Frame::Welcome { .. })) => {}
        other => panic!("expected WELCOME, got {other:?}"),
    }
    (reader, writer.into_inner())
}

/// Send raw bytes after the handshake and return the collector's answer.
async fn send_raw(env: &Env, port: u16, raw: &[u8]) -> Option<Frame> {
    let tls = connect(env, port, true).await.expect("connect");
    let (mut reader, mut w) = hello(tls).await;
    w.write_all(raw).await.expect("write");
    w.flush().await.expect("flush");
    match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
        Ok(Some(Ok(f))) => Some(f),
        _ => None,
    }
}

fn encode(frame: Frame) -> BytesMut {
    let mut buf = BytesMut::new();
    tokio_util::codec::Encoder::encode(&mut FrameCodec::new(64 << 20), frame, &mut buf)
        .expect("encode");
    buf
}

fn valid_payload(n: u32) -> Vec<u8> {
    let mut p = Vec::new();
    let mut b = BlockWriter::begin(&mut p, "evil", "/x", 1, b"");
    for i in 0..n {
        b.push(&mut p, 0, 1, i as u64, b"", b"hello");
    }
    b.finish(&mut p);
    p
}

fn expect_error(answer: Option<Frame>, code: ErrorCode) {
    match answer {
        Some(Frame::Error { code: c, message }) => assert_eq!(c, code, "{message}"),
        other => panic!("expected ERROR {code:?}, got {other:?}"),
    }
}

#[test]
fn bad_input_closes_only_the_offending_connection() {
    let env = Env::new();
    let collector = env.start_collector("");
    let port = collector.ingest_port;

    block_on(async {
        // A frame header announcing 1 GiB.
        let mut raw = BytesMut::new();
        raw.put_u32_le(1 << 30);
        raw.put_u8(3);
        expect_error(send_raw(&env, port, &raw).await, ErrorCode::FrameTooLarge);

        // A batch whose checksum does not match its payload.
        let mut scratch = Vec::new();
        let mut b = BatchFrame::build(
            1,
            "app",
            Compression::Lz4,
            10,
            &valid_payload(10),
            &mut scratch,
        );
        b.crc32c ^= 0xdead_beef;
        expect_error(
            send_raw(&env, port, &encode(Frame::Batch(b))).await,
            ErrorCode::BadChecksum,
        );

        // A decompression bomb: 1 GiB of zeros declared honestly, and declared small.
        let zeros = vec![0u8; 256 << 20];
        let b = BatchFrame::build(2, "app", Compression::Lz4, 1, &zeros, &mut scratch);
        let mut honest = b.clone();
        honest.uncompressed_len = 1 << 30;
        expect_error(
            send_raw(&env, port, &encode(Frame::Batch(honest))).await,
            ErrorCode::BatchTooLarge,
        );
        let mut lying = b;
        lying.uncompressed_len = 1000;
        expect_error(
            send_raw(&env, port, &encode(Frame::Batch(lying))).await,
            ErrorCode::BadCodec,
        );

        // A well-framed batch whose payload is garbage with a matching checksum.
        let b = BatchFrame::build(3, "app", Compression::None, 1, &[0xff; 100], &mut scratch);
        expect_error(
            send_raw(&env, port, &encode(Frame::Batch(b))).await,
            ErrorCode::BadPayload,
        );

        // Unknown frame type and garbage bytes.
        expect_error(
            send_raw(&env, port, &[1, 0, 0, 0, 99]).await,
            ErrorCode::MalformedFrame,
        );

        // A topic name that would escape the data directory is refused for that batch
        // only; the same connection then stores a valid batch.
        let tls = connect(&env, port, true).await.expect("connect");
        let (mut reader, w) = hello(tls).await;
        let mut writer = FramedWrite::new(w, FrameCodec::new(1 << 20));
        let bad = BatchFrame::build(
            1,
            "../etc",
            Compression::Lz4,
            3,
            &valid_payload(3),
            &mut scratch,
        );
        let good = BatchFrame::build(
            2,
            "app",
            Compression::Lz4,
            3,
            &valid_payload(3),
            &mut scratch,
        );
        writer.send(Frame::Batch(bad)).await.expect("send");
        writer.send(Frame::Batch(good)).await.expect("send");
        match reader.next().await {
            Some(Ok(Frame::Reject {
                seq: 1,
                code: ErrorCode::InvalidTopic,
                ..
            })) => {}
            other => panic!("expected REJECT for the bad topic, got {other:?}"),
        }
        match reader.next().await {
            Some(Ok(Frame::Ack { seq: 2 })) => {}
            other => panic!("expected ACK for the good batch, got {other:?}"),
        }

        // Without a client certificate (mTLS is on) the TLS handshake fails.
        let refused = async {
            let mut tls = connect(&env, port, false).await?;
            let mut buf = [0u8; 16];
            tls.read(&mut buf).await
        };
        match tokio::time::timeout(Duration::from_secs(10), refused).await {
            Ok(Ok(0)) | Ok(Err(_)) => {}
            other => panic!("a client without certificate was accepted: {other:?}"),
        }

        // Plain TCP garbage (no TLS at all).
        let mut tcp = TcpStream::connect(("127.0.0.1", port)).await.expect("tcp");
        tcp.write_all(b"GET / HTTP/1.1\r\n\r\n")
            .await
            .expect("write");
        let mut buf = [0u8; 64];
        let _ = tokio::time::timeout(Duration::from_secs(10), tcp.read(&mut buf)).await;
    });

    // The collector is still up and kept exactly the one valid batch.
    collector.wait_healthy(Duration::from_secs(5));
    assert_eq!(collector.count("app"), 3);
    assert!(
        collector
            .get("/v1/topics")
            .unwrap()
            .as_array()
            .unwrap()
            .iter()
            .all(|t| t["name"] == "app")
    );
    let (_, metrics) =
        block_on(collector.api.get_text("/metrics", Duration::from_secs(5))).unwrap();
    for kind in [
        "bad_checksum",
        "batch_too_large",
        "bad_codec",
        "bad_payload",
        "malformed_frame",
        "invalid_topic",
        "tls_handshake",
    ] {
        assert!(
            metrics.contains(&format!("kind=\"{kind}\"")),
            "no {kind} in metrics:\n{metrics}"
        );
    }
}
