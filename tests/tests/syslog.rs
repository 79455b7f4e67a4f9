//! Syslog end to end: util-linux `logger` (and raw sockets) → a real agent's UDP,
//! TCP and TLS listeners → collector → read back over HTTP, every field checked.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::process::Command;
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde_json::{Value, json};
use tributary_common::timefmt::{now_ms, parse_ms};
use tributary_e2e::{Collector, Env, Proc, Rec, block_on, free_port};

struct Setup {
    env: Env,
    collector: Collector,
    agent: Proc,
    port: u16,
    tls_port: u16,
    metrics_port: u16,
}

/// Collector + agent with one syslog input on UDP, TCP (same port) and TLS.
fn setup() -> Setup {
    let env = Env::new();
    let collector = env.start_collector("topics:\n  default: {partitions: 2}\n");
    let (port, tls_port, metrics_port) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "host: agent-host\ndata_dir: {data}\ninputs:\n  - type: syslog\n    topic: sys\n    listen: [\"udp://127.0.0.1:{port}\", \"tcp://127.0.0.1:{port}\", \"tls://127.0.0.1:{tls_port}\"]\n    fields: {{env: e2e}}\n    max_message_bytes: 2KiB\n    tls: {{cert: {cert}, key: {key}}}\nmetrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\n{out}",
        data = env.path().join("agent-data").display(),
        cert = env.certs.collector_cert.display(),
        key = env.certs.collector_key.display(),
        out = env.output_yaml(&collector, "lz4"),
    );
    let agent = env.start_agent("agent", &yaml);
    // The listeners are bound before the agent runs anything, TLS last.
    let deadline = Instant::now() + Duration::from_secs(30);
    while TcpStream::connect(("127.0.0.1", tls_port)).is_err() {
        assert!(
            Instant::now() < deadline,
            "agent not listening:\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(20));
    }
    Setup {
        env,
        collector,
        agent,
        port,
        tls_port,
        metrics_port,
    }
}

fn logger(port: u16, args: &[&str], message: &str) {
    let port = port.to_string();
    let mut cmd = Command::new("logger");
    cmd.args(["-n", "127.0.0.1", "-P", &port])
        .args(args)
        .arg(message);
    let out = cmd
        .output()
        .expect("util-linux `logger` (apt-get install bsdutils)");
    assert!(out.status.success(), "logger {args:?}: {out:?}");
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .expect("hostname")
        .trim()
        .to_owned()
}

/// Wait until a record with `message` is stored in `sys`; returns all records.
fn wait_for_message(s: &Setup, message: &str) -> Vec<Rec> {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let all = s.collector.read_all("sys");
        if all.iter().any(|r| r.message == message) {
            return all;
        }
        assert!(
            Instant::now() < deadline,
            "`{message}` never arrived; {} records\n{}",
            all.len(),
            s.agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find<'a>(recs: &'a [Rec], message: &str) -> &'a Rec {
    let found: Vec<&Rec> = recs.iter().filter(|r| r.message == message).collect();
    assert_eq!(found.len(), 1, "exactly one `{message}` in {recs:#?}");
    found[0]
}

fn ts_ms(r: &Rec) -> i64 {
    parse_ms(r.json["timestamp"].as_str().expect("timestamp")).expect("RFC 3339")
}

fn metrics(port: u16) -> String {
    let mut s = TcpStream::connect(("127.0.0.1", port)).expect("metrics endpoint");
    s.set_read_timeout(Some(Duration::from_secs(10))).ok();
    s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n")
        .expect("request");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out
}

fn counter(text: &str, name: &str) -> u64 {
    text.lines()
        .find_map(|l| l.strip_prefix(&format!("tributary_agent_{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{name} missing in\n{text}"))
}

/// Send over TLS with the env's CA (RFC 5425: octet counting).
fn send_tls(env: &Env, port: u16, frames: &[u8]) {
    use tokio::io::AsyncWriteExt;
    block_on(async {
        let config = tributary_common::tls::client_config(&env.certs.ca, None).expect("client");
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = rustls::pki_types::ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(name, tcp)
            .await
            .expect("TLS handshake with the agent");
        tls.write_all(frames).await.expect("write");
        tls.shutdown().await.expect("close");
    });
}

#[test]
fn logger_messages_arrive_with_every_field() {
    let s = setup();
    let host = hostname();
    let short_host = host.split('.').next().unwrap_or(&host).to_owned();
    let sent_at = now_ms();
    let common = [
        "-p",
        "local3.err",
        "-t",
        "TAG",
        "--msgid",
        "ID47",
        "--id=4242",
    ];
    let sd = [
        "--sd-id",
        "tq@32473",
        "--sd-param",
        r#"a="b\"c\]""#,
        "--sd-param",
        "n=\"v\"",
    ];
    let cases: [(&[&str], &str, &str); 5] = [
        (&["--udp", "--rfc5424"], "udp rfc5424", "udp"),
        (
            &["--tcp", "--rfc5424", "--octet-count"],
            "tcp rfc5424 octet-count",
            "tcp",
        ),
        (&["--tcp", "--rfc5424"], "tcp rfc5424 newline", "tcp"),
        (&["--udp", "--rfc3164"], "udp rfc3164", "udp"),
        (&["--tcp", "--rfc3164"], "tcp rfc3164 newline", "tcp"),
    ];
    for (args, msg, _) in &cases {
        let mut all: Vec<&str> = args.to_vec();
        all.extend(common);
        if args.contains(&"--rfc5424") {
            all.extend(sd);
        }
        logger(s.port, &all, msg);
    }
    // TLS: RFC 5425 octet counting; no HOSTNAME, so the host is the sender's IP.
    // Stamped three days ago (inside the collector's clock skew window, so kept as
    // sent) in a +01:00 zone: the wall-clock digits are an hour ahead of UTC.
    let stamp = now_ms() / 1000 * 1000 - 3 * 86_400_000 + 678;
    let zoned = tributary_common::timefmt::format_ms(stamp + 3_600_000).replace('Z', "+01:00");
    let mut tls_msg = format!("<134>1 {zoned} - tlsapp - - - over tls ").into_bytes();
    tls_msg.push(0xff);
    let mut frame = format!("{} ", tls_msg.len()).into_bytes();
    frame.extend_from_slice(&tls_msg);
    send_tls(&s.env, s.tls_port, &frame);

    s.collector
        .wait_for_count("sys", 6, Duration::from_secs(60), &s.agent);
    let recs = s.collector.read_all("sys");
    assert_eq!(recs.len(), 6, "{recs:#?}");
    for (args, msg, proto) in &cases {
        let r = find(&recs, msg);
        let rfc5424 = args.contains(&"--rfc5424");
        assert_eq!(r.source, format!("syslog+{proto}://127.0.0.1"), "{msg}");
        assert_eq!(&r.host, if rfc5424 { &host } else { &short_host }, "{msg}");
        let ts = ts_ms(r);
        assert!(
            (ts - sent_at).abs() < 10_000,
            "{msg}: event time {} vs sent {}",
            r.json["timestamp"],
            sent_at
        );
        let mut want = json!({
            "env": "e2e", "facility": "local3", "severity": "err",
            "appname": "TAG", "procid": "4242",
        });
        if rfc5424 {
            want["msgid"] = json!("ID47");
            want["sd"] = json!({
                "timeQuality": {"tzKnown": "1", "isSynced": r.fields["sd"]["timeQuality"]["isSynced"]},
                "tq@32473": {"a": "b\"c]", "n": "v"},
            });
        }
        assert_eq!(Value::Object(r.fields.clone()), want, "{msg}");
        assert!(r.json.get("truncated").is_none_or(|t| t == false));
    }
    let r = find(&recs, "over tls \u{fffd}");
    assert_eq!(
        (r.host.as_str(), r.source.as_str()),
        ("127.0.0.1", "syslog+tls://127.0.0.1")
    );
    assert_eq!(
        r.json["timestamp"],
        tributary_common::timefmt::format_ms(stamp)
    );
    assert_eq!(
        Value::Object(r.fields.clone()),
        json!({"env": "e2e", "facility": "local0", "severity": "info", "appname": "tlsapp"})
    );
    // One source per sender and transport: all its records in one partition.
    for proto in ["udp", "tcp"] {
        let parts: std::collections::BTreeSet<u32> = recs
            .iter()
            .filter(|r| r.source.contains(proto) && r.host == host)
            .map(|r| r.partition)
            .collect();
        assert!(parts.len() <= 1, "{proto}: {parts:?}");
    }
    let m = metrics(s.metrics_port);
    assert_eq!(counter(&m, "syslog_messages_total"), 6);
    assert_eq!(counter(&m, "syslog_parse_errors_total"), 0);
    assert_eq!(counter(&m, "syslog_udp_dropped_total"), 0);
    // Three `logger --tcp`, one TLS sender and the readiness probe of `setup`.
    assert_eq!(counter(&m, "syslog_connections_total"), 5);
}

/// A small deterministic generator (xorshift64*): no extra dependency.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_F491_4F6C_DD1D)
    }
    fn bytes(&mut self, n: usize) -> Vec<u8> {
        (0..n).map(|_| self.next() as u8).collect()
    }
}

#[test]
fn random_bytes_then_valid_messages_arrive() {
    let s = setup();
    let mut rng = Rng(0x5EED_5E5E_0106_0F5E);
    // TCP: connections of random bytes, some closed mid-frame, some with huge counts,
    // some left open and silent.
    let mut silent = Vec::new();
    for i in 0..20 {
        let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("tcp");
        let n = (rng.next() % 20_000) as usize;
        let mut junk = rng.bytes(n);
        if i % 4 == 0 {
            junk.splice(0..0, b"999999 ".iter().copied());
        }
        let _ = c.write_all(&junk);
        if i % 5 == 0 {
            silent.push(c);
        }
    }
    // UDP: random datagrams, including empty and oversized ones.
    let udp = UdpSocket::bind("127.0.0.1:0").expect("udp");
    for i in 0..200 {
        let n = if i == 0 {
            0
        } else {
            (rng.next() % 9000) as usize
        };
        let _ = udp.send_to(&rng.bytes(n), ("127.0.0.1", s.port));
    }
    // TLS: garbage instead of a handshake.
    let mut t = TcpStream::connect(("127.0.0.1", s.tls_port)).expect("tls port");
    let _ = t.write_all(&rng.bytes(3000));
    drop(t);

    // Then valid messages on every transport, and on a connection that had garbage first.
    logger(s.port, &["--udp", "--rfc5424", "-t", "after"], "valid udp");
    logger(s.port, &["--tcp", "--rfc3164", "-t", "after"], "valid tcp");
    let mut c = TcpStream::connect(("127.0.0.1", s.port)).expect("tcp");
    c.write_all(
        b"\x00\xff\xfegarbage line\n<13>1 2026-01-01T00:00:00Z h app - - - same connection\n",
    )
    .expect("write");
    drop(c);
    let tls_msg = "<13>1 - h - - - - tls";
    send_tls(
        &s.env,
        s.tls_port,
        format!("{} {tls_msg}", tls_msg.len()).as_bytes(),
    );
    for m in ["valid udp", "valid tcp", "same connection", "tls"] {
        wait_for_message(&s, m);
    }
    let recs = s.collector.read_all("sys");
    assert_eq!(find(&recs, "valid udp").fields["appname"], "after");
    assert_eq!(find(&recs, "valid tcp").fields["appname"], "after");
    assert_eq!(
        find(&recs, "same connection").json["timestamp"],
        "2026-01-01T00:00:00.000Z"
    );
    // Unparsed messages are kept whole and marked; long ones are cut at 2 KiB and flagged.
    let errors = recs
        .iter()
        .filter(|r| r.fields.contains_key("parse_error"))
        .count();
    assert!(errors > 0);
    assert!(
        recs.iter()
            .any(|r| r.json["truncated"] == true && r.source.starts_with("syslog+udp"))
    );
    let m = metrics(s.metrics_port);
    assert!(counter(&m, "syslog_parse_errors_total") > 0);
    assert!(counter(&m, "syslog_truncated_total") > 0);
    assert_eq!(counter(&m, "syslog_udp_dropped_total"), 0);
    let mut agent = s.agent;
    assert!(agent.is_running(), "the agent survived");
    // A clean stop, with silent connections still open, is prompt.
    let status = agent.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    drop(silent);
}
