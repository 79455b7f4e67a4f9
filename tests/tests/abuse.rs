//! Bounded resources and self-healing (issue 12), against the real binaries: a
//! transient fault heals without a restart and shows in `/healthz` meanwhile;
//! idle and slow clients are dropped at their timeouts while real clients are
//! served.

use std::collections::HashMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tributary_e2e::{Collector, Env, append_lines};

fn open_fds(pid: u32) -> usize {
    std::fs::read_dir(format!("/proc/{pid}/fd"))
        .map(|d| d.count())
        .unwrap_or(0)
}

/// Set the soft descriptor limit of a running process (ours, by PID) with
/// util-linux `prlimit`; the hard limit stays, so it can be raised again.
fn set_nofile(pid: u32, n: usize) {
    let status = Command::new("prlimit")
        .args(["--pid", &pid.to_string(), &format!("--nofile={n}:")])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit --pid {pid} --nofile={n}:");
}

/// The hard descriptor limit of a process.
fn hard_nofile(pid: u32) -> usize {
    std::fs::read_to_string(format!("/proc/{pid}/limits"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Max open files"))
        .and_then(|l| l.split_whitespace().nth(4))
        .and_then(|v| v.parse().ok())
        .unwrap_or(1024)
}

/// GET /healthz: (status code, body).
fn healthz(c: &Collector) -> (u16, String) {
    tributary_e2e::block_on(c.api.get_text("/healthz", Duration::from_secs(5)))
        .unwrap_or((0, String::new()))
}

fn wait_for(what: &str, timeout: Duration, mut ok: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !ok() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// A segment roll that fails for lack of descriptors leaves the partition as it
/// was; `/healthz` says 503 and why while it lasts; once descriptors are back the
/// same partition takes writes again, with no restart, and no line is lost or
/// stored twice.
#[test]
fn a_failed_roll_heals_without_a_restart_and_shows_in_healthz() {
    let env = Env::new();
    // A roll before nearly every batch (records a millisecond apart).
    let collector = env.start_collector("topics:\n  default: {partitions: 1, segment_age: 1ms}\n");
    let log = env.path().join("app.log");
    append_lines(&log, (0..100).map(|i| format!("before {i}")));
    let yaml = format!(
        "host: heal\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count("app", 100, Duration::from_secs(30), &agent);
    assert_eq!(healthz(&collector).0, 200);

    // No descriptor left for a new segment's files (the open ones stay usable).
    let pid = collector.proc.pid();
    set_nofile(pid, open_fds(pid) + 2);
    let mut n = 100;
    let mut degraded = String::new();
    wait_for(
        "/healthz to report the partition",
        Duration::from_secs(30),
        || {
            append_lines(&log, [format!("during {n}")]);
            n += 1;
            std::thread::sleep(Duration::from_millis(100));
            let (status, body) = healthz(&collector);
            if status == 503 {
                degraded = body;
                true
            } else {
                false
            }
        },
    );
    assert!(
        degraded.contains("app/0") && degraded.contains("Too many open files"),
        "{degraded}"
    );

    // Descriptors are back: the same process heals.
    set_nofile(pid, hard_nofile(pid));
    append_lines(&log, (0..100).map(|i| format!("after {i}")));
    let total = n as u64 + 100;
    collector.wait_for_count("app", total, Duration::from_secs(60), &agent);
    wait_for("/healthz 200 again", Duration::from_secs(30), || {
        healthz(&collector).0 == 200
    });
    let mut seen: HashMap<String, u32> = HashMap::new();
    for r in collector.read_all("app") {
        *seen.entry(r.message).or_default() += 1;
    }
    assert_eq!(seen.len() as u64, total, "every line");
    assert!(seen.values().all(|&c| c == 1), "each once");
    assert!(collector.proc.log_text().contains("Too many open files"));
    drop(agent);
}

/// Idle sockets and slow headers on the HTTP API are closed at the header
/// timeout, while `/healthz` keeps answering; errors are JSON.
#[test]
fn http_idle_and_slowloris_clients_are_dropped_and_errors_are_json() {
    let env = Env::new();
    let api_yaml = "  header_timeout: 1s\n  max_connections: 64\n";
    let collector = env.start_collector_with_api(api_yaml);
    let addr = format!("127.0.0.1:{}", collector.api_port);
    // 40 idle sockets and 20 that send a header byte per 300 ms.
    let idle: Vec<TcpStream> = (0..40)
        .map(|_| TcpStream::connect(&addr).expect("connect"))
        .collect();
    let mut slow: Vec<TcpStream> = (0..20)
        .map(|_| {
            let mut s = TcpStream::connect(&addr).expect("connect");
            s.write_all(b"GET /healthz HTTP/1.1\r\nHost: x\r\nX-Slow: ")
                .expect("write");
            s
        })
        .collect();
    let started = Instant::now();
    // A real client is served meanwhile.
    assert_eq!(healthz(&collector).0, 200);
    for _ in 0..10 {
        for s in &mut slow {
            let _ = s.write_all(b"a");
        }
        std::thread::sleep(Duration::from_millis(300));
        if started.elapsed() > Duration::from_secs(3) {
            break;
        }
    }
    // Every one of them was closed by the server (EOF or reset).
    for mut s in idle.into_iter().chain(slow) {
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 256];
        let closed = match s.read(&mut buf) {
            Ok(0) => true,
            Ok(_) => {
                // hyper may answer 408 first; then EOF.
                matches!(s.read(&mut buf), Ok(0) | Err(_))
            }
            Err(e) => {
                e.kind() != std::io::ErrorKind::WouldBlock
                    && e.kind() != std::io::ErrorKind::TimedOut
            }
        };
        assert!(closed, "a stalled connection stayed open");
    }
    assert!(started.elapsed() < Duration::from_secs(10));
    assert_eq!(healthz(&collector).0, 200);

    // Every error status has a JSON body.
    let raw = |req: &str| {
        let mut s = TcpStream::connect(&addr).expect("connect");
        s.write_all(req.as_bytes()).expect("write");
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut out = String::new();
        let _ = s.read_to_string(&mut out);
        out
    };
    let long = "x".repeat(10_000);
    let big_header = "y".repeat(20_000);
    for (req, status) in [
        (
            "DELETE /v1/topics HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "405",
        ),
        (
            format!("GET /v1/topics?{long} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n"),
            "414",
        ),
        (
            format!("GET /v1/topics HTTP/1.1\r\nHost: x\r\nX-Big: {big_header}\r\nConnection: close\r\n\r\n"),
            "431",
        ),
        (
            "POST /v1/groups/g/offsets HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\nContent-Length: 5\r\nConnection: close\r\n\r\n{nope".to_owned(),
            "400",
        ),
        (
            "GET /nowhere HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n".to_owned(),
            "404",
        ),
    ] {
        let answer = raw(&req);
        assert!(
            answer.starts_with(&format!("HTTP/1.1 {status}")),
            "{status}: {answer}"
        );
        let body = answer.split("\r\n\r\n").nth(1).unwrap_or("");
        let v: serde_json::Value =
            serde_json::from_str(body).unwrap_or_else(|e| panic!("{status}: {e}: {answer}"));
        assert!(v["error"].is_string(), "{status}: {answer}");
    }
}

fn rss(pid: u32) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("VmRSS:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024
}

type Tls = tokio_rustls::client::TlsStream<tokio::net::TcpStream>;

/// The address real agents connect from.
const LOCAL: [u8; 4] = [127, 0, 0, 1];
/// Another sender on the same machine (all of 127/8 reaches the loopback).
const OTHER: [u8; 4] = [127, 0, 0, 2];

/// TLS from source address `from` with the agent certificate, then HELLO and its
/// WELCOME.
async fn agent_session(env: &Env, port: u16, from: [u8; 4]) -> std::io::Result<Tls> {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tributary_common::wire::{Frame, FrameCodec, PROTOCOL_VERSION};
    let config = tributary_common::tls::client_config(
        &env.certs.ca,
        Some((
            env.certs.agent_cert.as_path(),
            env.certs.agent_key.as_path(),
        )),
    )
    .expect("client config");
    let socket = tokio::net::TcpSocket::new_v4()?;
    socket.bind((std::net::Ipv4Addr::from(from), 0).into())?;
    let tcp = socket
        .connect((std::net::Ipv4Addr::LOCALHOST, port).into())
        .await?;
    let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
    let mut tls = tokio_rustls::TlsConnector::from(config)
        .connect(name, tcp)
        .await?;
    let mut hello = bytes::BytesMut::new();
    tokio_util::codec::Encoder::encode(
        &mut FrameCodec::new(1 << 20),
        Frame::Hello {
            version: PROTOCOL_VERSION,
            host: "abuse".into(),
            agent: "test".into(),
        },
        &mut hello,
    )
    .expect("encode");
    tls.write_all(&hello).await?;
    tls.flush().await?;
    let mut len = [0u8; 4];
    tls.read_exact(&mut len).await?;
    let mut welcome = vec![0u8; u32::from_le_bytes(len) as usize];
    tls.read_exact(&mut welcome).await?;
    Ok(tls)
}

/// Hundreds of connections from one address announcing 16 MiB frames and sending
/// part of them: the collector reads a frame only once the memory budget has room
/// for it, so its memory stays within the budget; the address holds at most its
/// share of the budget, so a real agent on another address is served at once, and
/// the stalled senders are dropped at the frame timeout.
#[test]
fn half_sent_frames_stay_within_the_memory_budget() {
    let env = Env::new();
    let collector = env.start_collector_with(
        "  max_inflight_bytes: 64MiB\n  max_connections_per_ip: 1000\n",
        "topics:\n  default: {partitions: 1}\n",
    );
    let pid = collector.proc.pid();
    let before = rss(pid);
    let port = collector.ingest_port;
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let peak = std::sync::Arc::new(std::sync::atomic::AtomicU64::new(before));
    let sampler = {
        let (stop, peak) = (stop.clone(), peak.clone());
        std::thread::spawn(move || {
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                peak.fetch_max(rss(pid), std::sync::atomic::Ordering::Relaxed);
                std::thread::sleep(Duration::from_millis(50));
            }
        })
    };
    let t0 = std::time::Instant::now();
    let held = tributary_e2e::block_on(async {
        use tokio::io::AsyncWriteExt;
        let mut tasks = Vec::new();
        for _ in 0..500 {
            tasks.push(agent_session(&env, port, OTHER));
        }
        let mut streams = Vec::new();
        for t in futures_util::future::join_all(tasks).await {
            streams.push(t.expect("session"));
        }
        // Each announces a frame of 16 MiB - 100 bytes and sends 2 MiB of it (or as
        // much as the socket takes within a few seconds), then stalls.
        let chunk = vec![0x42u8; 2 << 20];
        let writes = streams.iter_mut().map(|s| async {
            let len = ((16u32 << 20) - 100).to_le_bytes();
            let _ = tokio::time::timeout(Duration::from_secs(5), async {
                s.write_all(&len).await?;
                s.write_all(&chunk).await?;
                s.flush().await
            })
            .await;
        });
        futures_util::future::join_all(writes).await;
        streams
    });
    let stalled_at = t0.elapsed();
    // A real agent meanwhile.
    let log = env.path().join("app.log");
    append_lines(&log, (0..500).map(|i| format!("real {i}")));
    let yaml = format!(
        "host: real\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    let agent_started = std::time::Instant::now();
    collector.wait_for_count("app", 500, Duration::from_secs(90), &agent);
    let served_in = agent_started.elapsed();
    eprintln!(
        "abuse: 500 stalled senders set up in {:.1} s; the agent's lines arrived {:.1} s after it started",
        stalled_at.as_secs_f64(),
        served_in.as_secs_f64()
    );
    // Not behind the flood: the stalled frames are dropped only after 30 s.
    assert!(
        served_in < Duration::from_secs(20),
        "the agent waited {served_in:?} behind another address's stalled frames"
    );
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    sampler.join().unwrap();
    let grew = peak
        .load(std::sync::atomic::Ordering::Relaxed)
        .saturating_sub(before);
    eprintln!(
        "abuse: collector RSS {:.1} MB before, peak {:.1} MB with 500 half-sent 16 MiB frames (budget 64 MiB)",
        before as f64 / 1e6,
        (before + grew) as f64 / 1e6
    );
    assert!(
        grew < (64 + 48) << 20,
        "RSS grew by {:.1} MB",
        grew as f64 / 1e6
    );
    drop(held);
    drop(agent);
}

/// Many senders at once with whole frames that declare the largest decompressed
/// size: each batch's frame and payload are reserved together, so no connection
/// holds part of the budget while it waits for the rest, and ingest never
/// deadlocks (before, four such frames held the whole budget, each waiting for
/// room for its payload, and ingest stopped for everyone). The bogus batches are
/// refused and a real agent is served.
#[test]
fn large_declared_batches_from_many_senders_do_not_deadlock_ingest() {
    let env = Env::new();
    let collector = env.start_collector_with(
        "  max_inflight_bytes: 64MiB\n",
        "topics:\n  default: {partitions: 1}\n",
    );
    let port = collector.ingest_port;
    let outcomes = tributary_e2e::block_on(async {
        use tokio::io::{AsyncReadExt, AsyncWriteExt};
        // Topic "app", 1 record, 32 MiB declared, a 15 MiB payload that is not lz4.
        let topic = b"app";
        let payload = vec![0xA5u8; 15 << 20];
        let mut frame = Vec::with_capacity(payload.len() + 64);
        let body_len = 1 + 8 + 1 + 1 + topic.len() + 12 + payload.len();
        frame.extend_from_slice(&(body_len as u32).to_le_bytes());
        frame.push(3); // BATCH
        frame.extend_from_slice(&1u64.to_le_bytes());
        frame.push(2); // lz4
        frame.push(topic.len() as u8);
        frame.extend_from_slice(topic);
        frame.extend_from_slice(&1u32.to_le_bytes());
        frame.extend_from_slice(&(32u32 << 20).to_le_bytes());
        frame.extend_from_slice(&0u32.to_le_bytes());
        frame.extend_from_slice(&payload);
        let frame = std::sync::Arc::new(frame);
        let senders = (0..8u8).map(|i| {
            let (env, frame) = (&env, frame.clone());
            async move {
                let mut s = agent_session(env, port, [127, 0, 1, i]).await?;
                s.write_all(&frame).await?;
                s.flush().await?;
                // The answer: an ERROR frame.
                tokio::time::timeout(Duration::from_secs(60), async {
                    let mut len = [0u8; 4];
                    s.read_exact(&mut len).await?;
                    let mut answer = vec![0u8; u32::from_le_bytes(len) as usize];
                    s.read_exact(&mut answer).await?;
                    std::io::Result::Ok(answer)
                })
                .await
                .map_err(|_| std::io::Error::other("no answer within 60 s (ingest stuck?)"))?
            }
        });
        futures_util::future::join_all(senders).await
    });
    for (i, o) in outcomes.iter().enumerate() {
        let answer = o.as_ref().unwrap_or_else(|e| panic!("sender {i}: {e}"));
        let text = String::from_utf8_lossy(answer);
        assert!(
            text.contains("refused"),
            "sender {i} got no refusal: {text:?}"
        );
    }
    let log = env.path().join("app.log");
    append_lines(&log, (0..100).map(|i| format!("after {i}")));
    let yaml = format!(
        "host: real\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count("app", 100, Duration::from_secs(60), &agent);
}

/// Idle TCP sockets are closed at the TLS handshake timeout (5 s), a client that
/// says HELLO and nothing more at the first-batch timeout (the idle timeout, 2 s
/// here), and connections beyond the per-address limit at once, while a real
/// agent is served.
#[test]
fn stalled_ingest_clients_are_dropped_and_each_address_is_capped() {
    let env = Env::new();
    let collector = env.start_collector_with(
        "  idle_timeout: 2s\n  max_connections_per_ip: 8\n",
        "topics:\n  default: {partitions: 1}\n",
    );
    let port = collector.ingest_port;
    let started = Instant::now();
    let idle: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let sessions = tributary_e2e::block_on(async {
        let a = agent_session(&env, port, LOCAL).await.expect("session");
        let b = agent_session(&env, port, LOCAL).await.expect("session");
        vec![a, b]
    });
    // 4 idle + 2 sessions = 6 of 8: two more fit, the rest are closed at once.
    let extra: Vec<TcpStream> = (0..4)
        .map(|_| TcpStream::connect(("127.0.0.1", port)).expect("connect"))
        .collect();
    let closed_at = |mut s: TcpStream| {
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        let mut b = [0u8; 64];
        let _ = s.read(&mut b);
        started.elapsed()
    };
    // Give the collector a moment to see them, then look at each without waiting.
    std::thread::sleep(Duration::from_millis(300));
    let mut quick = 0;
    for s in &extra {
        s.set_read_timeout(Some(Duration::from_millis(200)))
            .unwrap();
        let mut b = [0u8; 8];
        if matches!((&*s).read(&mut b), Ok(0)) {
            quick += 1;
        }
    }
    assert_eq!(
        quick, 2,
        "connections beyond the per-address limit are closed at once"
    );
    // The HELLO-only sessions end at the first-batch timeout.
    let ended = tributary_e2e::block_on(async {
        use tokio::io::AsyncReadExt;
        let mut out = Vec::new();
        for mut s in sessions {
            let mut buf = [0u8; 256];
            let r = tokio::time::timeout(Duration::from_secs(10), s.read(&mut buf)).await;
            out.push((r.is_ok(), started.elapsed()));
        }
        out
    });
    for (closed, at) in ended {
        assert!(
            closed && at < Duration::from_secs(6),
            "HELLO-only session open for {at:?}"
        );
    }
    for s in idle {
        let at = closed_at(s);
        assert!(at < Duration::from_secs(8), "idle socket open for {at:?}");
    }
    // A real agent is served.
    let log = env.path().join("app.log");
    append_lines(&log, (0..10).map(|i| format!("real {i}")));
    let yaml = format!(
        "host: real\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count("app", 10, Duration::from_secs(30), &agent);
}

/// Topics and consumer groups are bounded: an agent cannot create more topics than
/// `topics.max_topics` (its batches wait in its spool and arrive once the cap is
/// raised), and an API client cannot create more groups than `api.max_groups`.
#[test]
fn topics_and_groups_are_capped() {
    let env = Env::new();
    let (ingest, api) = (tributary_e2e::free_port(), tributary_e2e::free_port());
    let topics = |max: u32| format!("topics:\n  max_topics: {max}\n  default: {{partitions: 1}}\n");
    let mut collector = env.start_collector_full(ingest, api, "", "  max_groups: 2\n", &topics(2));
    let mut inputs = String::new();
    for t in ["a", "b", "c"] {
        let log = env.path().join(format!("{t}.log"));
        append_lines(&log, (0..50).map(|i| format!("{t} {i}")));
        inputs.push_str(&format!(
            "  - type: file\n    topic: {t}\n    include: [\"{}\"]\n",
            log.display()
        ));
    }
    let yaml = format!(
        "host: caps\ndata_dir: {}\ninputs:\n{inputs}{}",
        env.path().join("agent-data").display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    // Whichever two topics come first are created; the third is refused.
    wait_for("the refusal in the log", Duration::from_secs(30), || {
        collector.proc.log_text().contains("topics.max_topics")
    });
    let created: Vec<&str> = ["a", "b", "c"]
        .into_iter()
        .filter(|t| !collector.end_offsets(t).is_empty())
        .collect();
    assert_eq!(created.len(), 2, "two topics of at most 2: {created:?}");
    let refused = ["a", "b", "c"]
        .into_iter()
        .find(|t| !created.contains(t))
        .unwrap();
    assert!(
        collector
            .proc
            .log_text()
            .contains(&format!("topic `{refused}` would be topic 3 of at most 2")),
        "the refusal names topic {refused}"
    );

    // Groups: two may exist, a third is refused with a JSON 429.
    let commit = |c: &Collector, g: &str| {
        tributary_e2e::block_on(c.api.post_json(
            &format!("/v1/groups/{g}/offsets"),
            &serde_json::json!({"topic": created[0], "partition": 0, "offset": 1}),
            Duration::from_secs(10),
        ))
    };
    commit(&collector, "g1").expect("first group");
    commit(&collector, "g2").expect("second group");
    let err = commit(&collector, "g3").unwrap_err().to_string();
    assert!(
        err.contains("429") && err.contains("consumer groups"),
        "{err}"
    );
    commit(&collector, "g1").expect("an existing group commits");

    // The cap raised (a restart with the new config): the waiting lines arrive.
    collector.proc.terminate(Duration::from_secs(10));
    collector = env.start_collector_full(ingest, api, "", "  max_groups: 2\n", &topics(3));
    collector.wait_for_count(refused, 50, Duration::from_secs(60), &agent);
    for t in ["a", "b", "c"] {
        let mut msgs: Vec<String> = collector
            .read_all(t)
            .into_iter()
            .map(|r| r.message)
            .collect();
        msgs.sort();
        let mut want: Vec<String> = (0..50).map(|i| format!("{t} {i}")).collect();
        want.sort();
        assert_eq!(msgs, want, "topic {t}: every line once");
    }
    drop(agent);
}

/// Syslog stamped in 2020 and in 2099 by wrong clocks: stored with their arrival
/// time (the original kept in a field), not deleted by retention right away, and
/// not kept forever either: retention goes by when the collector stored them.
#[test]
fn wrong_clocks_neither_delete_early_nor_keep_forever() {
    let env = Env::new();
    let collector = env.start_collector(
        "topics:\n  default: {partitions: 1, retention: {max_age: 4s}}\nretention:\n  check_interval_ms: 200ms\n",
    );
    let port = tributary_e2e::free_port();
    let yaml = format!(
        "host: clocks\ndata_dir: {}\ninputs:\n  - type: syslog\n    topic: sys\n    listen: [\"tcp://127.0.0.1:{port}\"]\n{}",
        env.path().join("agent-data").display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    let mut tcp = None;
    wait_for("the syslog listener", Duration::from_secs(20), || {
        tcp = TcpStream::connect(("127.0.0.1", port)).ok();
        tcp.is_some()
    });
    let mut tcp = tcp.unwrap();
    let sent = tributary_common::timefmt::now_ms();
    for (i, ts) in ["2020-01-01T00:00:00Z", "2099-01-01T00:00:00Z"]
        .iter()
        .enumerate()
    {
        tcp.write_all(format!("<13>1 {ts} dev app - - - clock {i}\n").as_bytes())
            .unwrap();
    }
    tcp.flush().unwrap();
    collector.wait_for_count("sys", 2, Duration::from_secs(30), &agent);
    let recs = collector.read_all("sys");
    for r in &recs {
        let ts =
            tributary_common::timefmt::parse_ms(r.json["timestamp"].as_str().unwrap()).unwrap();
        assert!(
            (ts - sent).abs() < 30_000,
            "arrival time, not the sender's: {}",
            r.json
        );
        assert!(r.fields["original_timestamp_ms"].is_i64(), "{}", r.json);
    }
    // Still there two seconds after arrival (a 2020 stamp used to expire at once).
    std::thread::sleep(Duration::from_secs(2));
    assert_eq!(collector.read_all("sys").len(), 2);
    // Gone a little after max_age (the 2099 stamp used to keep them forever).
    let start = |c: &Collector| {
        c.get("/v1/topics").unwrap()[0]["partitions"][0]["start_offset"]
            .as_u64()
            .unwrap_or(0)
    };
    wait_for("retention", Duration::from_secs(20), || {
        start(&collector) == 2
    });
    drop(agent);
}

/// Batches of `lines` records for each of `topics`, shipped over one agent session
/// and acknowledged one by one. Returns the first refusal, if any.
async fn ship_to_topics(
    env: &Env,
    port: u16,
    topics: impl Iterator<Item = String>,
    lines: u32,
) -> Result<(), String> {
    use futures_util::{SinkExt, StreamExt};
    use tributary_common::codec::Compression;
    use tributary_common::record::BlockWriter;
    use tributary_common::wire::{BatchFrame, Frame, FrameCodec};
    let tls = agent_session(env, port, LOCAL)
        .await
        .map_err(|e| e.to_string())?;
    let mut framed = tokio_util::codec::Framed::new(tls, FrameCodec::new(1 << 20));
    let mut scratch = Vec::new();
    for (seq, topic) in topics.enumerate() {
        let mut payload = Vec::new();
        let mut b = BlockWriter::begin(&mut payload, "abuse", "test://topics", 0, b"");
        for i in 0..lines {
            let msg = format!("{topic} line {i}");
            b.push(
                &mut payload,
                0,
                tributary_common::timefmt::now_ms(),
                0,
                b"",
                msg.as_bytes(),
            );
        }
        b.finish(&mut payload);
        let seq = seq as u64 + 1;
        let frame = BatchFrame::build(seq, &topic, Compression::Lz4, lines, &payload, &mut scratch);
        framed
            .send(Frame::Batch(frame))
            .await
            .map_err(|e| format!("send to {topic}: {e}"))?;
        match tokio::time::timeout(Duration::from_secs(30), framed.next()).await {
            Ok(Some(Ok(Frame::Ack { seq: s }))) if s == seq => {}
            other => return Err(format!("batch for {topic}: {other:?}")),
        }
    }
    Ok(())
}

/// 2,000 topics, each created by an agent's batch, under a 1,024-descriptor limit
/// (soft and hard): closed segments and idle partitions hold no descriptors, so
/// every batch is stored with descriptors to spare, and the collector restarts
/// under the same limit with every topic and keeps taking writes.
#[test]
fn two_thousand_topics_fit_a_1024_descriptor_limit() {
    let env = Env::new();
    let (ingest, api) = (tributary_e2e::free_port(), tributary_e2e::free_port());
    let extra = "topics:\n  max_topics: 5000\n  default: {partitions: 2}\n";
    let collector = env.start_collector_with_fd_limit(ingest, api, extra, 1024);
    let pid = collector.proc.pid();
    let names = |r: std::ops::Range<usize>| r.map(|i| format!("t{i:04}"));
    let mut most = 0;
    for chunk in 0..20 {
        tributary_e2e::block_on(ship_to_topics(
            &env,
            ingest,
            names(chunk * 100..(chunk + 1) * 100),
            3,
        ))
        .unwrap_or_else(|e| panic!("{e}\n{}", collector.proc.log_text()));
        most = most.max(open_fds(pid));
    }
    let log = collector.proc.log_text();
    assert!(!log.contains("Too many open files"), "{log}");
    // 2,000 topics of 2 partitions were 12,000 descriptors before the budget.
    assert!(most < 1024, "{most} descriptors open");
    let metrics =
        tributary_e2e::block_on(collector.api.get_text("/metrics", Duration::from_secs(10)))
            .expect("metrics")
            .1;
    assert!(
        metrics.contains("tributary_descriptor_limit 1024"),
        "{metrics}"
    );
    let topics = collector.get("/v1/topics").expect("topics");
    assert_eq!(topics.as_array().map(Vec::len), Some(2000));
    for t in ["t0000", "t0999", "t1999"] {
        assert_eq!(collector.count(t), 3, "{t}");
    }
    eprintln!("2,000 topics: at most {most} descriptors open (limit 1024)");

    // Restart under the same limit: every topic opens, and takes writes again.
    let mut collector = collector;
    collector.proc.terminate(Duration::from_secs(30));
    let collector = env.start_collector_with_fd_limit(ingest, api, extra, 1024);
    let after_start = open_fds(collector.proc.pid());
    let topics = collector.get("/v1/topics").expect("topics");
    assert_eq!(topics.as_array().map(Vec::len), Some(2000));
    tributary_e2e::block_on(ship_to_topics(&env, ingest, names(0..2000), 1))
        .unwrap_or_else(|e| panic!("{e}\n{}", collector.proc.log_text()));
    for t in ["t0000", "t1234", "t1999"] {
        assert_eq!(collector.count(t), 4, "{t}");
    }
    let most = open_fds(collector.proc.pid());
    assert!(most < 1024, "{most} descriptors open");
    eprintln!(
        "restart with 2,000 topics: {after_start} descriptors open after start, {most} after writing to all"
    );
}
