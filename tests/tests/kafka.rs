//! The Kafka-compatible listener against real Kafka clients: Debian's `kcat`
//! (librdkafka) lists and reads what a real agent shipped, by offset and by time,
//! and hostile bytes on the Kafka port close only their own connection.
//!
//! Skips (visibly) when `kcat` is not installed; `.ci/run` installs it.

use std::collections::BTreeMap;
use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tributary_e2e::{Collector, Env, append_lines, free_port};

fn kcat_available() -> bool {
    let ok = Command::new("kcat")
        .arg("-V")
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!("SKIPPED: kcat is not installed (apt-get install kcat)");
    }
    ok
}

/// Run kcat with `args` (bounded in time); (status ok, stdout, stderr).
fn kcat(args: &[&str]) -> (bool, String, String) {
    let out = Command::new("timeout")
        .arg("60")
        .arg("kcat")
        .args(args)
        .output()
        .expect("run kcat");
    (
        out.status.success(),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

fn start(env: &Env, kafka: u16, topics: &str) -> Collector {
    env.start_collector(&format!(
        "kafka:\n  listen: 127.0.0.1:{kafka}\n  compression: lz4\ntopics:\n{topics}retention:\n  check_interval_ms: 100ms\n"
    ))
}

/// One record as kcat prints it with `FORMAT`.
const FORMAT: &str = "%p\t%o\t%T\t%k\t%h\t%s\n";

#[derive(Debug, PartialEq, Eq, PartialOrd, Ord)]
struct Seen {
    partition: u32,
    offset: u64,
    timestamp_ms: i64,
    key: String,
    headers: BTreeMap<String, String>,
    message: String,
}

fn parse(out: &str) -> Vec<Seen> {
    out.lines()
        .filter(|l| !l.is_empty())
        .map(|l| {
            let f: Vec<&str> = l.splitn(6, '\t').collect();
            assert_eq!(f.len(), 6, "kcat line {l:?}");
            let headers = f[4]
                .split(',')
                .filter_map(|kv| kv.split_once('='))
                .map(|(k, v)| (k.to_owned(), v.to_owned()))
                .collect();
            Seen {
                partition: f[0].parse().unwrap(),
                offset: f[1].parse().unwrap(),
                timestamp_ms: f[2].parse().unwrap(),
                key: f[3].to_owned(),
                headers,
                message: f[5].to_owned(),
            }
        })
        .collect()
}

#[test]
fn kcat_lists_topics_and_reads_every_shipped_line_once_by_offset_and_by_time() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    let kport = free_port();
    let broker = format!("127.0.0.1:{kport}");
    let collector = start(&env, kport, "  logs: {partitions: 3}\n");
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let files = ["a.log", "b.log", "c.log", "d.log"];
    for f in files {
        append_lines(
            &logs.join(f),
            (0..3_000).map(|i| format!("{f} line {i:05} GET /api/items/{} 200", i * 31 % 977)),
        );
    }
    let yaml = format!(
        "host: kafka-e2e\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: logs\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\n    fields: {{env: test, build: 7}}\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(&collector, "lz4"),
    );
    let agent = env.start_agent("agent", &yaml);
    let total = 4 * 3_000;
    collector.wait_for_count("logs", total, Duration::from_secs(60), &agent);

    // -L: one broker, the topic with its three partitions led by it.
    let (ok, meta, err) = kcat(&["-b", &broker, "-L"]);
    assert!(ok, "kcat -L: {err}");
    assert!(meta.contains(&format!("broker 0 at {broker}")), "{meta}");
    assert!(meta.contains("topic \"logs\" with 3 partitions"), "{meta}");
    for p in 0..3 {
        assert!(meta.contains(&format!("partition {p}, leader 0")), "{meta}");
    }

    // -C -e: every record once, as the HTTP API has it.
    let (ok, out, err) = kcat(&[
        "-b",
        &broker,
        "-C",
        "-t",
        "logs",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        FORMAT,
    ]);
    assert!(ok, "kcat -C: {err}");
    let mut seen = parse(&out);
    seen.sort();
    let http = collector.read_all("logs");
    assert_eq!(seen.len(), http.len(), "every record exactly once");
    let mut expected: Vec<Seen> = http
        .iter()
        .map(|r| {
            let mut headers = BTreeMap::new();
            headers.insert("host".to_owned(), r.host.clone());
            headers.insert("source".to_owned(), r.source.clone());
            for (k, v) in &r.fields {
                let v = match v {
                    serde_json::Value::String(s) => s.clone(),
                    other => other.to_string(),
                };
                headers.insert(k.clone(), v);
            }
            // The certificate identity the collector stamped (mutual TLS).
            if let Some(agent) = r.json["agent"].as_str() {
                headers.insert("agent".to_owned(), agent.to_owned());
            }
            Seen {
                partition: r.partition,
                offset: r.offset,
                timestamp_ms: tributary_common::timefmt::parse_ms(
                    r.json["timestamp"].as_str().unwrap(),
                )
                .unwrap(),
                key: r.source.clone(),
                headers,
                message: r.message.clone(),
            }
        })
        .collect();
    expected.sort();
    assert_eq!(seen, expected);
    assert_eq!(seen[0].headers["host"], "kafka-e2e");
    assert_eq!(seen[0].headers["env"], "test");
    assert_eq!(seen[0].headers["build"], "7");

    // -o s@TS: each partition starts at the offset the time index gives.
    let mut by_partition: BTreeMap<u32, Vec<&tributary_e2e::Rec>> = BTreeMap::new();
    for r in &http {
        by_partition.entry(r.partition).or_default().push(r);
    }
    for (p, records) in by_partition {
        let mid = records[records.len() / 2];
        let ts =
            tributary_common::timefmt::parse_ms(mid.json["timestamp"].as_str().unwrap()).unwrap();
        let lookup = collector
            .get(&format!(
                "/v1/topics/logs/partitions/{p}/offset?timestamp={ts}"
            ))
            .unwrap();
        let (ok, out, err) = kcat(&[
            "-b",
            &broker,
            "-C",
            "-t",
            "logs",
            "-p",
            &p.to_string(),
            "-o",
            &format!("s@{ts}"),
            "-c",
            "1",
            "-q",
            "-f",
            "%o %T\n",
        ]);
        assert!(ok, "kcat -o s@: {err}");
        let (offset, stamp) = out.trim().split_once(' ').unwrap();
        assert_eq!(
            offset.parse::<u64>().ok(),
            lookup["offset"].as_u64(),
            "p{p}"
        );
        assert!(stamp.parse::<i64>().unwrap() >= ts);
    }
    // A balanced consumer group (librdkafka's own group protocol versions): every
    // record once, committed.
    let (ok, out, err) = kcat(&[
        "-b",
        &broker,
        "-G",
        "kcat-group",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%p %o\n",
        "-X",
        "enable.auto.commit=false",
        "logs",
    ]);
    assert!(ok, "kcat -G: {err}");
    let mut group_seen: Vec<&str> = out.lines().collect();
    group_seen.sort();
    group_seen.dedup();
    assert_eq!(
        group_seen.len(),
        http.len(),
        "kcat -G read every record once"
    );
    let log = std::fs::read_to_string(
        env.path()
            .join(format!("collector-{}.log", collector.ingest_port)),
    )
    .unwrap();
    assert!(!log.contains("cannot encode"), "{log}");
    assert!(!log.contains("malformed"), "{log}");
    // Long-poll: a consumer waiting at the end gets a new line as it arrives.
    let a_log = http
        .iter()
        .find(|r| r.source.ends_with("/a.log"))
        .expect("a.log records");
    let p = a_log.partition;
    let end = collector.end_offsets("logs")[&p];
    let waiting = Command::new("timeout")
        .args([
            "30",
            "kcat",
            "-b",
            &broker,
            "-C",
            "-t",
            "logs",
            "-p",
            &p.to_string(),
        ])
        .args(["-o", &end.to_string(), "-c", "1", "-q", "-f", "%o %s\n"])
        .stdout(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    let appended = Instant::now();
    append_lines(&logs.join("a.log"), ["a.log the newest line".to_string()]);
    let out = waiting.wait_with_output().unwrap();
    assert!(out.status.success());
    assert_eq!(
        String::from_utf8_lossy(&out.stdout).trim(),
        format!("{end} a.log the newest line")
    );
    assert!(
        appended.elapsed() < Duration::from_secs(10),
        "{:?}",
        appended.elapsed()
    );
    // Produce with acks=0 (no answer at all), 1 and all: stored once each.
    for acks in ["0", "1", "all"] {
        let mut produce = Command::new("timeout")
            .args(["60", "kcat", "-b", &broker, "-P", "-t", "acks"])
            .args(["-X", &format!("acks={acks}"), "-H", "host=producer"])
            .stdin(std::process::Stdio::piped())
            .spawn()
            .unwrap();
        produce
            .stdin
            .take()
            .unwrap()
            .write_all(format!("acks {acks} one\nacks {acks} two\n").as_bytes())
            .unwrap();
        assert!(produce.wait().unwrap().success(), "acks={acks}");
    }
    assert_eq!(collector.settle("acks", 6, Duration::from_secs(10)), 6);
    let mut produced: Vec<String> = collector
        .read_all("acks")
        .into_iter()
        .map(|r| {
            assert_eq!(r.host, "producer");
            assert_eq!(r.source, "kafka://rdkafka");
            r.message
        })
        .collect();
    produced.sort();
    assert_eq!(
        produced,
        [
            "acks 0 one",
            "acks 0 two",
            "acks 1 one",
            "acks 1 two",
            "acks all one",
            "acks all two"
        ]
    );
    // A topic that does not exist is an error, not a hang.
    let (ok, _, err) = kcat(&["-b", &broker, "-C", "-t", "nosuch", "-o", "beginning", "-e"]);
    assert!(!ok && err.contains("Unknown topic or partition"), "{err}");
}

#[test]
fn reading_below_the_retention_start_gets_the_clients_out_of_range_handling() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    let kport = free_port();
    let broker = format!("127.0.0.1:{kport}");
    let collector = start(
        &env,
        kport,
        // Uncompressed, so that ~40 KiB of lines fill ~40 KiB of segment (these lines
        // compress ~20x, and retention counts bytes on disk).
        "  small: {partitions: 1, segment_bytes: 64KiB, retention: {max_bytes: 64KiB}, compression: none}\n",
    );
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let yaml = format!(
        "data_dir: {data}\ninputs:\n  - type: file\n    topic: small\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(&collector, "none"),
    );
    let agent = env.start_agent("agent", &yaml);
    // Six batches of ~40 KiB: segments roll between batches, so there are several.
    for round in 0..6u64 {
        append_lines(
            &logs.join("a.log"),
            (0..700)
                .map(|i| format!("round {round} line {i:05} with some padding to fill segments")),
        );
        collector.wait_for_count("small", 700 * (round + 1), Duration::from_secs(60), &agent);
    }
    // Retention deletes the oldest segments.
    let deadline = Instant::now() + Duration::from_secs(30);
    let start = loop {
        let v = collector.get("/v1/topics").unwrap();
        let start = v[0]["partitions"][0]["start_offset"].as_u64().unwrap();
        if start > 0 {
            break start;
        }
        assert!(Instant::now() < deadline, "retention never ran");
        std::thread::sleep(Duration::from_millis(100));
    };
    // With auto.offset.reset=error the client reports the range error...
    let (ok, _, err) = kcat(&[
        "-b",
        &broker,
        "-C",
        "-t",
        "small",
        "-o",
        "0",
        "-e",
        "-X",
        "auto.offset.reset=error",
    ]);
    assert!(!ok || err.contains("out of range"), "{err}");
    assert!(err.to_lowercase().contains("out of range"), "{err}");
    // ...and with `earliest` it resets to the first stored offset.
    let (ok, out, err) = kcat(&[
        "-b",
        &broker,
        "-C",
        "-t",
        "small",
        "-o",
        "0",
        "-c",
        "1",
        "-q",
        "-X",
        "auto.offset.reset=earliest",
        "-f",
        "%o\n",
    ]);
    assert!(ok, "{err}");
    assert!(out.trim().parse::<u64>().unwrap() >= start, "{out}");
}

/// Write `bytes` on a fresh connection and read until the broker closes it
/// (bounded): what it answered.
fn exchange(port: u16, bytes: &[u8]) -> Vec<u8> {
    let mut s = TcpStream::connect(("127.0.0.1", port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(40))).unwrap();
    let _ = s.write_all(bytes);
    let _ = s.shutdown(std::net::Shutdown::Write);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    out
}

/// A framed request: size, api key, version, correlation id 7, client id "t", body.
fn request(key: i16, version: i16, body: &[u8]) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&key.to_be_bytes());
    r.extend_from_slice(&version.to_be_bytes());
    r.extend_from_slice(&7i32.to_be_bytes());
    r.extend_from_slice(&1i16.to_be_bytes());
    r.push(b't');
    r.extend_from_slice(body);
    let mut framed = (r.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&r);
    framed
}

#[test]
fn hostile_requests_close_only_their_connection() {
    let env = Env::new();
    let kport = free_port();
    let collector = start(&env, kport, "  default: {partitions: 1}\n");
    // A well-behaved connection held open across the abuse.
    let mut good = TcpStream::connect(("127.0.0.1", kport)).unwrap();
    good.set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    let ask_metadata = |s: &mut TcpStream| {
        // Metadata v1 with a null topic list (every topic).
        s.write_all(&request(3, 1, &(-1i32).to_be_bytes())).unwrap();
        let mut size = [0u8; 4];
        s.read_exact(&mut size).unwrap();
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        s.read_exact(&mut body).unwrap();
        assert_eq!(&body[..4], &7i32.to_be_bytes(), "correlation id");
    };
    ask_metadata(&mut good);

    let mut random = vec![0u8; 4096];
    let mut x = 0x9E37_79B9_7F4A_7C15u64;
    for b in random.iter_mut() {
        x ^= x << 13;
        x ^= x >> 7;
        x ^= x << 17;
        *b = x as u8;
    }
    // Unknown API key: UNSUPPORTED_VERSION (35) for correlation 7, then closed.
    let answer = exchange(kport, &request(999, 0, b""));
    assert_eq!(answer.len(), 10, "{answer:?}");
    assert_eq!(&answer[4..8], &7i32.to_be_bytes());
    assert_eq!(&answer[8..10], &35i16.to_be_bytes());
    // Metadata v13 (newer than offered): the same.
    let answer = exchange(kport, &request(3, 13, &[0]));
    assert_eq!(&answer[8..10], &35i16.to_be_bytes());
    // Metadata v0 declaring 2^31-1 topics in a 20-byte request: closed, not a crash.
    assert!(exchange(kport, &request(3, 0, &i32::MAX.to_be_bytes())).is_empty());
    // Fetch v4 declaring 2^31-1 topics.
    let mut fetch = Vec::new();
    for v in [-1i32, 500, 1, 1 << 20] {
        fetch.extend_from_slice(&v.to_be_bytes());
    }
    fetch.push(0);
    fetch.extend_from_slice(&i32::MAX.to_be_bytes());
    assert!(exchange(kport, &request(1, 4, &fetch)).is_empty());
    // A huge declared size, a negative one, random bytes, a truncated request.
    assert!(exchange(kport, &0x7fff_ffffi32.to_be_bytes()).is_empty());
    assert!(exchange(kport, &(-5i32).to_be_bytes()).is_empty());
    assert!(exchange(kport, &random).is_empty());
    let truncated = request(3, 1, &(-1i32).to_be_bytes());
    assert!(exchange(kport, &truncated[..truncated.len() - 3]).is_empty());

    // Still serving: the held connection and new ones.
    ask_metadata(&mut good);
    let mut fresh = TcpStream::connect(("127.0.0.1", kport)).unwrap();
    fresh
        .set_read_timeout(Some(Duration::from_secs(10)))
        .unwrap();
    ask_metadata(&mut fresh);
    collector.wait_healthy(Duration::from_secs(5));
    let log = std::fs::read_to_string(
        env.path()
            .join(format!("collector-{}.log", collector.ingest_port)),
    )
    .unwrap();
    assert!(log.contains("Kafka connection from 127.0.0.1"), "{log}");
    assert!(log.contains("unsupported API key 999"), "{log}");

    // A Fetch long-polling an empty partition for 30 s does not hold up SIGTERM.
    let mut waiting = TcpStream::connect(("127.0.0.1", kport)).unwrap();
    waiting
        .set_read_timeout(Some(Duration::from_secs(40)))
        .unwrap();
    // Metadata v1 naming the topic creates it (auto-creation before v4).
    let mut meta = 1i32.to_be_bytes().to_vec();
    meta.extend_from_slice(&4i16.to_be_bytes());
    meta.extend_from_slice(b"idle");
    waiting.write_all(&request(3, 1, &meta)).unwrap();
    let mut size = [0u8; 4];
    waiting.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    waiting.read_exact(&mut body).unwrap();
    let mut fetch = Vec::new();
    for v in [-1i32, 30_000, 1, 1 << 20] {
        fetch.extend_from_slice(&v.to_be_bytes());
    }
    fetch.push(0);
    fetch.extend_from_slice(&1i32.to_be_bytes());
    fetch.extend_from_slice(&4i16.to_be_bytes());
    fetch.extend_from_slice(b"idle");
    fetch.extend_from_slice(&1i32.to_be_bytes());
    fetch.extend_from_slice(&0i32.to_be_bytes());
    fetch.extend_from_slice(&0i64.to_be_bytes());
    fetch.extend_from_slice(&(1i32 << 20).to_be_bytes());
    waiting.write_all(&request(1, 4, &fetch)).unwrap();
    std::thread::sleep(Duration::from_millis(200));
    let mut collector = collector;
    let stopped = Instant::now();
    let status = collector.proc.terminate(Duration::from_secs(10));
    assert!(status.is_some_and(|s| s.success()), "{status:?}");
    assert!(
        stopped.elapsed() < Duration::from_secs(5),
        "{:?}",
        stopped.elapsed()
    );
    // The waiting Fetch was answered (empty) at the shutdown, not dropped.
    let mut size = [0u8; 4];
    waiting.read_exact(&mut size).unwrap();
    let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
    waiting.read_exact(&mut body).unwrap();
    assert_eq!(&body[..4], &7i32.to_be_bytes());
}

#[test]
fn the_kafka_listener_speaks_tls_with_mutual_certificates() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    let kport = free_port();
    let broker = format!("127.0.0.1:{kport}");
    let c = &env.certs;
    let collector = env.start_collector(&format!(
        "kafka:\n  listen: {broker}\n  tls:\n    cert: {}\n    key: {}\n    client_ca: {}\ntopics:\n  secure: {{partitions: 1}}\n",
        c.collector_cert.display(),
        c.collector_key.display(),
        c.ca.display(),
    ));
    let ca = format!("ssl.ca.location={}", c.ca.display());
    let cert = format!("ssl.certificate.location={}", c.agent_cert.display());
    let key = format!("ssl.key.location={}", c.agent_key.display());
    let tls = [
        "-X",
        "security.protocol=ssl",
        "-X",
        &ca,
        "-X",
        &cert,
        "-X",
        &key,
    ];
    // Produce and read back over TLS with a client certificate.
    let mut produce = Command::new("timeout")
        .args(["60", "kcat", "-b", &broker, "-P", "-t", "secure"])
        .args(tls)
        .stdin(std::process::Stdio::piped())
        .spawn()
        .unwrap();
    produce
        .stdin
        .take()
        .unwrap()
        .write_all(b"over tls 1\nover tls 2\n")
        .unwrap();
    assert!(produce.wait().unwrap().success());
    let mut args = vec![
        "-b",
        &broker,
        "-C",
        "-t",
        "secure",
        "-o",
        "beginning",
        "-e",
        "-q",
        "-f",
        "%s\n",
    ];
    args.extend(tls);
    let (ok, out, err) = kcat(&args);
    assert!(ok, "{err}");
    assert_eq!(out, "over tls 1\nover tls 2\n");
    assert_eq!(collector.count("secure"), 2);
    // Without a client certificate, and in plaintext, nothing gets through.
    let (ok, _, err) = kcat(&[
        "-b",
        &broker,
        "-L",
        "-m",
        "5",
        "-X",
        "security.protocol=ssl",
        "-X",
        &ca,
    ]);
    assert!(!ok, "no client certificate must not be served: {err}");
    let (ok, _, _) = kcat(&["-b", &broker, "-L", "-m", "5"]);
    assert!(!ok, "plaintext must not be served");
}

/// With `api.auth`, the Kafka listener (over TLS) wants SASL/PLAIN with the API's
/// tokens: username = token name, password = token; Produce needs `write`, reads
/// `read`, and a request beyond the token's scopes gets Kafka's authorization error.
#[test]
fn sasl_plain_over_tls_with_api_tokens_and_scopes() {
    if !kcat_available() {
        return;
    }
    let env = Env::new();
    let tokens = env.path().join("tokens");
    let token = |name: &str, scopes: &str| tributary_e2e::token_add(&tokens, name, scopes);
    let reader = token("dashboard", "read");
    let writer = token("shipper", "write");
    let kport = free_port();
    let broker = format!("127.0.0.1:{kport}");
    let mut collector = env.start_collector_full(
        free_port(),
        free_port(),
        "",
        &format!("  auth: {{tokens_file: {}}}\n", tokens.display()),
        &format!(
            "kafka:\n  listen: {broker}\n  tls:\n    cert: {}\n    key: {}\ntopics:\n  secure: {{partitions: 1}}\n",
            env.certs.collector_cert.display(),
            env.certs.collector_key.display(),
        ),
    );
    collector.api = collector.api.clone().with_token(Some(reader.clone()));
    let ca = env.certs.ca.to_str().unwrap().to_owned();
    let sasl = |user: &str, pass: &str| -> Vec<String> {
        [
            "-b",
            &broker,
            "-X",
            "security.protocol=SASL_SSL",
            "-X",
            &format!("ssl.ca.location={ca}"),
            "-X",
            "ssl.endpoint.identification.algorithm=none",
            "-X",
            "sasl.mechanisms=PLAIN",
            "-X",
            &format!("sasl.username={user}"),
            "-X",
            &format!("sasl.password={pass}"),
        ]
        .iter()
        .map(|s| s.to_string())
        .collect()
    };
    let run = |mut args: Vec<String>, extra: &[&str], input: Option<&str>| {
        args.extend(extra.iter().map(|s| s.to_string()));
        let mut child = Command::new("timeout")
            .arg("30")
            .arg("kcat")
            .args(&args)
            .stdin(std::process::Stdio::piped())
            .stdout(std::process::Stdio::piped())
            .stderr(std::process::Stdio::piped())
            .spawn()
            .expect("run kcat");
        {
            use std::io::Write;
            let mut stdin = child.stdin.take().unwrap();
            if let Some(i) = input {
                stdin.write_all(i.as_bytes()).unwrap();
            }
        }
        let out = child.wait_with_output().unwrap();
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };

    // A read token cannot produce: the broker says so, nothing is stored.
    let (ok, _, err) = run(
        sasl("dashboard", &reader),
        &["-P", "-t", "secure", "-X", "message.timeout.ms=10000"],
        Some("not allowed\n"),
    );
    assert!(!ok, "a read token produced");
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    assert_eq!(collector.count("secure"), 0);
    // A write token can.
    let (ok, _, err) = run(
        sasl("shipper", &writer),
        &["-P", "-t", "secure"],
        Some("first\nsecond\nthird\n"),
    );
    assert!(ok, "write token could not produce: {err}");
    assert_eq!(collector.count("secure"), 3);
    // Stored with the token that wrote them.
    assert!(
        collector
            .read_all("secure")
            .iter()
            .all(|r| r.json["agent"] == "shipper")
    );
    // A read token reads them back; the write token cannot read.
    let (ok, out, err) = run(
        sasl("dashboard", &reader),
        &["-C", "-t", "secure", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(ok, "{err}");
    assert_eq!(
        out.lines().collect::<Vec<_>>(),
        ["first", "second", "third"]
    );
    let (ok, out, err) = run(
        sasl("shipper", &writer),
        &["-C", "-t", "secure", "-o", "beginning", "-e", "-q"],
        None,
    );
    assert!(!ok || out.is_empty(), "a write token read: {out}");
    assert!(err.to_lowercase().contains("authorization"), "{err}");
    // Wrong password, wrong user name, or no SASL at all: refused.
    for (user, pass) in [("dashboard", "trb_wrong"), ("someone", reader.as_str())] {
        let (ok, _, err) = run(sasl(user, pass), &["-L", "-m", "3"], None);
        assert!(!ok, "{user} listed metadata");
        assert!(
            err.contains("Authentication failed") || err.contains("SASL"),
            "{err}"
        );
    }
    let (ok, _, _) = run(
        vec![
            "-b".into(),
            broker.clone(),
            "-X".into(),
            "security.protocol=SSL".into(),
            "-X".into(),
            format!("ssl.ca.location={ca}"),
            "-X".into(),
            "ssl.endpoint.identification.algorithm=none".into(),
        ],
        &["-L", "-m", "3"],
        None,
    );
    assert!(!ok, "metadata without SASL");
    let log = collector.proc.log_text();
    assert!(
        log.contains("Kafka Produce from")
            && log.contains("token `dashboard` has scope read, needs `write`"),
        "{log}"
    );
}
