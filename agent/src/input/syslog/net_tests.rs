//! Syslog config keys, and the listeners on 127.0.0.1 in-process: framing over real
//! sockets, TLS, hostile and slow clients, the connection cap, idle timeout,
//! backpressure, UDP drop counting and prompt shutdown.

use std::path::Path;
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::CancellationToken;
use tributary_common::config::{self, ConfigError};
use tributary_common::record::{self, FLAG_TRUNCATED};

use super::{Listen, SyslogInput, SyslogInputError, TimeZone, Transport};
use crate::config::{AgentConfig, AgentConfigFile, SyslogInputConfig};
use crate::input::Chunk;
use crate::stats::AgentStats;

fn self_signed(dir: &Path) -> (std::path::PathBuf, std::path::PathBuf) {
    let ck = rcgen::generate_simple_self_signed(vec!["localhost".to_string()]).unwrap();
    let (cert, key) = (dir.join("cert.pem"), dir.join("key.pem"));
    std::fs::write(&cert, ck.cert.pem()).unwrap();
    std::fs::write(&key, ck.signing_key.serialize_pem()).unwrap();
    (cert, key)
}

fn resolve(yaml: &str) -> Result<AgentConfig, ConfigError> {
    let f: AgentConfigFile = config::parse_yaml("agent.yaml", yaml)?;
    f.resolve("agent.yaml")
}

#[test]
fn config_keys() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let output = format!(
        "output:\n  collectors: [\"127.0.0.1:7400\"]\n  tls: {{ca: {}}}\n",
        cert.display()
    );
    let yaml = |input: &str| format!("inputs:\n  - type: syslog\n    topic: sys\n{input}{output}");
    let c = resolve(&yaml(&format!(
        "    listen: [\"udp://127.0.0.1:5514\", \"tcp://[::1]:5514\", \"tls://0.0.0.0:6514\"]\n    fields: {{env: prod}}\n    timezone: \"+02:00\"\n    max_message_bytes: 1KiB\n    max_connections: 5\n    idle_timeout: 2s\n    tls: {{cert: {}, key: {}}}\n",
        cert.display(),
        key.display()
    )))
    .unwrap();
    assert!(c.files.is_empty());
    let s = &c.syslog[0];
    assert_eq!(&*s.topic, "sys");
    assert_eq!(
        s.listen.iter().map(|l| l.to_string()).collect::<Vec<_>>(),
        [
            "udp://127.0.0.1:5514",
            "tcp://[::1]:5514",
            "tls://0.0.0.0:6514"
        ]
    );
    assert_eq!(&*s.fields_json, br#"{"env":"prod"}"#);
    assert_eq!(s.timezone, TimeZone::Fixed(7200));
    assert_eq!(s.max_message_bytes, 1024);
    assert_eq!(s.max_connections, 5);
    assert_eq!(s.idle_timeout, Duration::from_secs(2));
    assert!(s.tls.is_some());
    // Defaults.
    let c = resolve(&yaml("    listen: [\"udp://127.0.0.1:5514\"]\n")).unwrap();
    let s = &c.syslog[0];
    assert_eq!(s.timezone, TimeZone::Utc);
    assert_eq!(s.max_message_bytes, 64 << 10);
    assert_eq!(s.max_connections, 1024);
    assert_eq!(s.idle_timeout, Duration::from_secs(60));
    assert_eq!(s.max_connections_per_ip, 16);

    let bad = |input: &str, key: &str, says: &str| {
        let err = resolve(&yaml(input)).unwrap_err().to_string();
        assert!(err.contains(key) && err.contains(says), "{input:?}: {err}");
    };
    let listen = "    listen: [\"udp://127.0.0.1:5514\"]\n";
    bad(
        "    fields: {}\n",
        "inputs[0].listen",
        "at least one address",
    );
    bad(
        "    listen: [\"http://1.2.3.4:5\"]\n",
        "inputs[0].listen[0]",
        "unknown scheme",
    );
    bad(
        "    listen: [\"127.0.0.1:5514\"]\n",
        "inputs[0].listen[0]",
        "needs a scheme",
    );
    bad(
        "    listen: [\"tcp://localhost:5514\"]\n",
        "inputs[0].listen[0]",
        "not IP:PORT",
    );
    bad(
        "    listen: [\"tcp://127.0.0.1:1\", \"tcp://127.0.0.1:1\"]\n",
        "inputs[0].listen[1]",
        "twice",
    );
    bad(
        "    listen: [\"tls://127.0.0.1:6514\"]\n",
        "inputs[0].tls",
        "needs `tls",
    );
    bad(
        &format!("{listen}    tls: {{cert: /nonexistent/c.pem, key: /nonexistent/k.pem}}\n"),
        "inputs[0].tls",
        "only used by tls://",
    );
    bad(
        "    listen: [\"tls://127.0.0.1:6514\"]\n    tls: {cert: /nonexistent/c.pem, key: /nonexistent/k.pem}\n",
        "inputs[0].tls",
        "/nonexistent/c.pem",
    );
    bad(
        &format!("{listen}    timezone: Mars/Olympus\n"),
        "inputs[0].timezone",
        "not a time zone",
    );
    bad(
        &format!("{listen}    max_message_bytes: 10\n"),
        "inputs[0].max_message_bytes",
        "between",
    );
    bad(
        &format!("{listen}    max_connections: 0\n"),
        "inputs[0].max_connections",
        "at least 1",
    );
    bad(
        &format!("{listen}    idle_timeout: 0\n"),
        "inputs[0].idle_timeout",
        "at least",
    );
    bad(
        &format!("{listen}    include: [\"/x\"]\n"),
        "inputs[0].include",
        "syslog inputs do not",
    );
    bad(
        &format!("{listen}    read_from: end\n"),
        "inputs[0].read_from",
        "syslog inputs do not",
    );
    bad(
        &format!("{listen}    max_line_bytes: 1KiB\n"),
        "inputs[0].max_line_bytes",
        "syslog inputs do not",
    );
    bad(
        &format!("{listen}    listn: []\n"),
        "listn",
        "unknown field",
    );
    // And the other way round: syslog keys on a file input.
    for k in [
        "listen: [\"udp://127.0.0.1:1\"]",
        "timezone: UTC",
        "max_connections: 3",
        "idle_timeout: 1s",
    ] {
        let y = format!(
            "inputs:\n  - type: file\n    topic: app\n    include: [\"/x\"]\n    {k}\n{output}"
        );
        let err = resolve(&y).unwrap_err().to_string();
        let name = k.split(':').next().unwrap();
        assert!(
            err.contains(&format!("inputs[0].{name}")) && err.contains("only syslog"),
            "{err}"
        );
    }
}

fn settings(listen: &[&str]) -> SyslogInputConfig {
    SyslogInputConfig {
        topic: "sys".into(),
        listen: listen.iter().map(|l| Listen::parse(l).unwrap()).collect(),
        fields_json: br#"{"env":"test"}"#[..].into(),
        timezone: TimeZone::Utc,
        max_message_bytes: 1024,
        tls: None,
        max_connections: 16,
        max_connections_per_ip: 16,
        idle_timeout: Duration::from_secs(30),
    }
}

struct Running {
    addrs: Vec<Listen>,
    rx: mpsc::Receiver<Chunk>,
    stop: CancellationToken,
    task: JoinHandle<Result<(), SyslogInputError>>,
    stats: Arc<AgentStats>,
}

async fn start(cfg: SyslogInputConfig, queue: usize) -> Running {
    let stats = Arc::new(AgentStats::default());
    let input = SyslogInput::bind(&cfg, 64 << 10, stats.clone())
        .await
        .unwrap();
    let addrs = input.local_addrs();
    let (tx, rx) = mpsc::channel(queue);
    let stop = CancellationToken::new();
    let task = tokio::spawn(input.run(tx, stop.clone()));
    Running {
        addrs,
        rx,
        stop,
        task,
        stats,
    }
}

/// (host, source, flags, fields, message) of a received record.
type Rec = (String, String, u8, String, Vec<u8>);

impl Running {
    fn addr(&self, t: Transport) -> std::net::SocketAddr {
        self.addrs.iter().find(|l| l.transport == t).unwrap().addr
    }

    /// Receive until `n` records arrived (or fail after 10 s).
    async fn records(&mut self, n: usize) -> Vec<Rec> {
        let mut out = Vec::new();
        let deadline = Instant::now() + Duration::from_secs(10);
        while out.len() < n {
            let chunk = tokio::time::timeout_at(deadline, self.rx.recv())
                .await
                .unwrap_or_else(|_| panic!("{} of {n} records: {out:?}", out.len()))
                .unwrap();
            assert_eq!(chunk.payload.is_empty(), chunk.records == 0);
            for b in record::blocks(&chunk.payload, true) {
                let b = b.unwrap();
                for r in b.records() {
                    let r = r.unwrap();
                    out.push((
                        b.header.host.to_owned(),
                        b.header.source.to_owned(),
                        r.flags & FLAG_TRUNCATED,
                        String::from_utf8_lossy(r.fields).into_owned(),
                        r.message.to_vec(),
                    ));
                }
            }
        }
        out
    }

    /// Nothing more arrives within `d`.
    async fn quiet(&mut self, d: Duration) {
        if let Ok(Some(c)) = tokio::time::timeout(d, self.rx.recv()).await {
            panic!("unexpected chunk of {} records", c.records);
        }
    }

    async fn shutdown(self) {
        self.stop.cancel();
        let r = tokio::time::timeout(Duration::from_secs(2), self.task).await;
        assert!(matches!(r, Ok(Ok(Ok(())))), "listeners stop promptly");
    }
}

fn messages(recs: &[Rec]) -> Vec<String> {
    recs.iter()
        .map(|r| String::from_utf8_lossy(&r.4).into_owned())
        .collect()
}

#[tokio::test]
async fn udp_and_tcp_with_mixed_framing() {
    let mut r = start(settings(&["udp://127.0.0.1:0", "tcp://127.0.0.1:0"]), 8).await;
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    udp.send_to(
        b"<187>1 2026-11-25T10:00:00Z web-1 app 7 ID1 [a b=\"c\"] over udp\n",
        r.addr(Transport::Udp),
    )
    .await
    .unwrap();
    let got = r.records(1).await;
    assert_eq!(
        got[0],
        (
            "web-1".into(),
            "syslog+udp://127.0.0.1".into(),
            0,
            r#"{"facility":"local7","severity":"err","appname":"app","procid":"7","msgid":"ID1","sd":{"a":{"b":"c"}}}"#.into(),
            b"over udp".to_vec()
        )
    );
    let mut tcp = TcpStream::connect(r.addr(Transport::Tcp)).await.unwrap();
    let stream: &[u8] = b"21 <13>1 - - - - - - one<13>Nov 25 10:00:00 host2 tag: two\r\n\0garbage\n30 <13>1 - - - - -";
    for piece in stream.chunks(5) {
        tcp.write_all(piece).await.unwrap();
        tcp.flush().await.unwrap();
    }
    let got = r.records(3).await;
    assert_eq!(messages(&got), ["one", "two", "garbage"]);
    assert_eq!(got[0].0, "127.0.0.1", "no HOSTNAME: the sender's IP");
    assert_eq!(got[1].0, "host2");
    assert!(got.iter().all(|g| g.1 == "syslog+tcp://127.0.0.1"));
    assert!(got[2].3.contains("parse_error"));
    // The incomplete octet-counted frame is delivered when the sender closes.
    drop(tcp);
    let got = r.records(1).await;
    assert_eq!(messages(&got), ["<13>1 - - - - -"]);
    assert_eq!(got[0].2, FLAG_TRUNCATED);
    assert_eq!(r.stats.syslog_messages.load(Ordering::Relaxed), 5);
    assert_eq!(r.stats.syslog_parse_errors.load(Ordering::Relaxed), 2);
    r.shutdown().await;
}

#[tokio::test]
async fn tls_listener_reads_octet_counted_messages() {
    let dir = tempfile::tempdir().unwrap();
    let (cert, key) = self_signed(dir.path());
    let mut cfg = settings(&["tls://127.0.0.1:0"]);
    cfg.tls = Some(tributary_common::reload::Reloading::fixed(
        "test",
        tributary_common::tls::server_config(&cert, &key, None).unwrap(),
    ));
    let mut r = start(cfg, 8).await;
    let client = tributary_common::tls::client_config(&cert, None).unwrap();
    let connector = tokio_rustls::TlsConnector::from(client);
    let tcp = TcpStream::connect(r.addr(Transport::Tls)).await.unwrap();
    let name = rustls::pki_types::ServerName::try_from("localhost").unwrap();
    let mut tls = connector.connect(name, tcp).await.unwrap();
    tls.write_all(b"27 <14>1 - tls-host a - - - hi4 <1>x")
        .await
        .unwrap();
    tls.flush().await.unwrap();
    let got = r.records(2).await;
    assert_eq!(messages(&got), ["hi", "x"]);
    assert_eq!(
        (got[0].0.as_str(), got[0].1.as_str()),
        ("tls-host", "syslog+tls://127.0.0.1")
    );
    // A client that never finishes its handshake does not block the listener.
    let _stuck = TcpStream::connect(r.addr(Transport::Tls)).await.unwrap();
    tls.write_all(b"5 again").await.unwrap();
    tls.flush().await.unwrap();
    assert_eq!(messages(&r.records(1).await), ["again"]);
    r.shutdown().await;
}

#[tokio::test]
async fn hostile_clients_only_hurt_themselves() {
    let mut r = start(settings(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]), 8).await;
    let addr = r.addr(Transport::Tcp);
    // A client that announces a large frame and stalls.
    let mut stall = TcpStream::connect(addr).await.unwrap();
    stall
        .write_all(b"500 <13>1 - - - - - - start")
        .await
        .unwrap();
    // A client that sends an endless line, then a good message.
    let mut flood = TcpStream::connect(addr).await.unwrap();
    flood.write_all(&vec![b'x'; 100_000]).await.unwrap();
    flood
        .write_all(b"\n<13>1 - h - - - - after flood\n")
        .await
        .unwrap();
    // A huge octet count: the excess is read and discarded.
    let mut huge = TcpStream::connect(addr).await.unwrap();
    huge.write_all(b"3000 ").await.unwrap();
    huge.write_all(&vec![b'y'; 3000]).await.unwrap();
    huge.write_all(b"12 <13>1 - - -").await.unwrap();
    drop(huge);
    // Binary garbage over UDP, then a valid datagram.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    for i in 0..50u8 {
        let junk: Vec<u8> = (0..(i as usize * 37) % 1000)
            .map(|k| (k as u8).wrapping_mul(i))
            .collect();
        udp.send_to(&junk, r.addr(Transport::Udp)).await.unwrap();
    }
    udp.send_to(&vec![b'z'; 5000], r.addr(Transport::Udp))
        .await
        .unwrap();
    udp.send_to(b"<13>1 - h - - - - valid udp", r.addr(Transport::Udp))
        .await
        .unwrap();
    let mut got = r.records(2 + 2 + 51 + 1).await;
    got.sort_by(|a, b| a.4.cmp(&b.4));
    let msgs = messages(&got);
    assert!(msgs.contains(&"after flood".to_string()), "{msgs:?}");
    assert!(msgs.contains(&"valid udp".to_string()));
    let cut: Vec<&Rec> = got.iter().filter(|g| g.2 == FLAG_TRUNCATED).collect();
    // The flood line, the huge frame, the big datagram and the unfinished `12 <13>1 - - -`.
    assert_eq!(
        cut.len(),
        4,
        "{:?}",
        cut.iter().map(|c| c.4.len()).collect::<Vec<_>>()
    );
    assert_eq!(cut.iter().filter(|c| c.4.len() == 1024).count(), 3);
    assert_eq!(r.stats.syslog_truncated.load(Ordering::Relaxed), 4);
    // The stalled client is still open and has cost nothing; its message arrives
    // once it finishes.
    stall.write_all(&vec![b'.'; 500 - 23]).await.unwrap();
    let last = r.records(1).await;
    // 500 bytes of frame: an 18-byte RFC 5424 header and a 482-byte MSG.
    assert_eq!(last[0].4.len(), 482, "{last:?}");
    assert!(last[0].4.starts_with(b"start..."));
    r.shutdown().await;
}

#[tokio::test]
async fn connection_cap_and_idle_timeout() {
    let mut cfg = settings(&["tcp://127.0.0.1:0"]);
    cfg.max_connections = 1;
    cfg.idle_timeout = Duration::from_millis(300);
    let mut r = start(cfg, 8).await;
    let addr = r.addr(Transport::Tcp);
    let mut first = TcpStream::connect(addr).await.unwrap();
    first.write_all(b"<13>1 - - - - - - first\n").await.unwrap();
    assert_eq!(messages(&r.records(1).await), ["first"]);
    // At the cap, a second connection waits in the backlog, unread.
    let mut second = TcpStream::connect(addr).await.unwrap();
    second
        .write_all(b"<13>1 - - - - - - second\n")
        .await
        .unwrap();
    r.quiet(Duration::from_millis(150)).await;
    // The idle first connection is closed by the agent, which frees the slot.
    let started = Instant::now();
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(5), first.read(&mut byte))
        .await
        .unwrap();
    assert!(matches!(n, Ok(0) | Err(_)), "closed by the agent");
    assert!(started.elapsed() < Duration::from_secs(2));
    assert_eq!(messages(&r.records(1).await), ["second"]);
    assert_eq!(r.stats.syslog_connections.load(Ordering::Relaxed), 2);
    r.shutdown().await;
}

#[tokio::test]
async fn one_sender_cannot_take_every_connection() {
    let mut cfg = settings(&["tcp://127.0.0.1:0"]);
    cfg.max_connections_per_ip = 2;
    let mut r = start(cfg, 8).await;
    let addr = r.addr(Transport::Tcp);
    let mut held = Vec::new();
    for i in 0..2 {
        let mut s = TcpStream::connect(addr).await.unwrap();
        s.write_all(format!("<13>1 - - - - - - held {i}\n").as_bytes())
            .await
            .unwrap();
        held.push(s);
    }
    assert_eq!(r.records(2).await.len(), 2);
    // A third from the same address is closed at once, unread.
    let mut third = TcpStream::connect(addr).await.unwrap();
    let _ = third.write_all(b"<13>1 - - - - - - third\n").await;
    let mut byte = [0u8; 1];
    let n = tokio::time::timeout(Duration::from_secs(2), third.read(&mut byte))
        .await
        .expect("closed at once");
    assert!(matches!(n, Ok(0) | Err(_)));
    r.quiet(Duration::from_millis(200)).await;
    // Once one closes, the address may connect again.
    drop(held.pop());
    tokio::time::sleep(Duration::from_millis(100)).await;
    let mut again = TcpStream::connect(addr).await.unwrap();
    again.write_all(b"<13>1 - - - - - - again\n").await.unwrap();
    assert_eq!(messages(&r.records(1).await), ["again"]);
    r.shutdown().await;
}

#[tokio::test]
async fn tcp_waits_for_the_pipeline_udp_drops_and_counts() {
    // Nobody reads the channel at first: TCP must wait and lose nothing.
    let mut r = start(settings(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]), 1).await;
    let mut tcp = TcpStream::connect(r.addr(Transport::Tcp)).await.unwrap();
    let total = 100_000;
    let writer = tokio::spawn(async move {
        let mut buf = Vec::new();
        for i in 0..total {
            buf.extend_from_slice(
                format!("<13>1 - h app - - - message {i:06} {}\n", "p".repeat(100)).as_bytes(),
            );
        }
        tcp.write_all(&buf).await.unwrap();
        tcp
    });
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(
        !writer.is_finished(),
        "14 MB cannot all be buffered: the sender must be waiting"
    );
    // UDP meanwhile: more than the backlog holds while the pipeline is full.
    let udp = UdpSocket::bind("127.0.0.1:0").await.unwrap();
    let big = vec![b'u'; 1000];
    let to = r.addr(Transport::Udp);
    let deadline = Instant::now() + Duration::from_secs(20);
    while r.stats.syslog_udp_dropped.load(Ordering::Relaxed) == 0 {
        assert!(Instant::now() < deadline, "no UDP drop counted");
        for _ in 0..500 {
            let _ = udp.send_to(&big, to).await;
        }
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    // Now drain: every TCP message arrives, in order.
    let mut got = Vec::new();
    let deadline = Instant::now() + Duration::from_secs(20);
    while got.len() < total {
        let c = tokio::time::timeout_at(deadline, r.rx.recv())
            .await
            .unwrap()
            .unwrap();
        for b in record::blocks(&c.payload, true) {
            let b = b.unwrap();
            if b.header.source.starts_with("syslog+tcp") {
                for rec in b.records() {
                    got.push(rec.unwrap().message.to_vec());
                }
            }
        }
    }
    for (i, m) in got.iter().enumerate() {
        assert!(m.starts_with(format!("message {i:06} ").as_bytes()));
    }
    let _tcp = writer.await.unwrap();
    r.shutdown().await;
}

#[tokio::test]
async fn shutdown_is_prompt_with_open_connections() {
    let r = start(settings(&["tcp://127.0.0.1:0", "udp://127.0.0.1:0"]), 1).await;
    let mut a = TcpStream::connect(r.addr(Transport::Tcp)).await.unwrap();
    a.write_all(b"100 partial").await.unwrap();
    let _b = TcpStream::connect(r.addr(Transport::Tcp)).await.unwrap();
    tokio::time::sleep(Duration::from_millis(50)).await;
    r.shutdown().await;
}

#[tokio::test]
async fn bind_failure_names_the_address() {
    let taken = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = taken.local_addr().unwrap();
    let cfg = settings(&[&format!("tcp://{addr}")]);
    let err = SyslogInput::bind(&cfg, 1024, Arc::default())
        .await
        .err()
        .unwrap();
    assert!(err.to_string().contains(&format!("tcp://{addr}")), "{err}");
}
