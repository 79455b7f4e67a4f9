//! HTTP producers against a real collector: JSON lines and text lines, plain and
//! gzip, read back exactly; a body over the limit or with one bad line is refused
//! whole with a JSON error naming the line, and nothing of it is stored.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::time::Duration;

use serde_json::Value;
use tributary_e2e::{Collector, Env};

/// POST `body` with `headers`; (status, JSON answer).
fn post(c: &Collector, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let started = std::time::Instant::now();
    let r = post_inner(c, path, headers, body);
    eprintln!(
        "POST {path} ({} bytes): {} in {:?}",
        body.len(),
        r.0,
        started.elapsed()
    );
    r
}

fn post_inner(c: &Collector, path: &str, headers: &[(&str, &str)], body: &[u8]) -> (u16, Value) {
    let mut s = TcpStream::connect(("127.0.0.1", c.api_port)).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(30))).unwrap();
    let mut req = format!(
        "POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\nContent-Length: {}\r\n",
        body.len()
    );
    for (k, v) in headers {
        req.push_str(&format!("{k}: {v}\r\n"));
    }
    req.push_str("\r\n");
    // The server may answer (413) before reading a large body: ignore write errors.
    let _ = s.write_all(req.as_bytes());
    let _ = s.write_all(body);
    let mut out = Vec::new();
    let _ = s.read_to_end(&mut out);
    let text = String::from_utf8_lossy(&out);
    let status: u16 = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("no status in {text:?}"));
    let body = text.split("\r\n\r\n").nth(1).unwrap_or_default();
    let json = serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body:?}"));
    (status, json)
}

fn gzip(data: &[u8]) -> Vec<u8> {
    let mut enc = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::default());
    enc.write_all(data).unwrap();
    enc.finish().unwrap()
}

#[test]
fn json_and_text_lines_plain_and_gzip_read_back_exactly_and_bad_bodies_store_nothing() {
    let env = Env::new();
    let c = env.start_collector("topics:\n  pushed: {partitions: 2}\n");

    // JSON lines: every key, two hosts (so two partitions may be used).
    let mut json_lines = String::new();
    for i in 0..300 {
        let host = if i % 2 == 0 { "fn-a" } else { "fn-b" };
        json_lines.push_str(&format!(
            "{{\"message\":\"json {i:04} ünïcode\",\"timestamp\":{},\"host\":\"{host}\",\"source\":\"lambda://orders\",\"fields\":{{\"req\":{i},\"env\":\"prod\"}}}}\n",
            1_796_000_000_000i64 + i
        ));
    }
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records",
        &[("Content-Type", "application/x-ndjson")],
        json_lines.as_bytes(),
    );
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["records"], 300);
    let ranged: u64 = a["partitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["records"].as_u64().unwrap())
        .sum();
    assert_eq!(ranged, 300, "{a}");

    // The same as gzip, RFC 3339 timestamps.
    let mut gz_lines = String::new();
    for i in 0..200 {
        gz_lines.push_str(&format!(
            "{{\"message\":\"gz {i:04}\",\"timestamp\":\"2026-12-01T10:00:00.{:03}Z\",\"host\":\"fn-a\",\"source\":\"lambda://orders\"}}\n",
            i
        ));
    }
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records",
        &[
            ("Content-Type", "application/json"),
            ("Content-Encoding", "gzip"),
        ],
        &gzip(gz_lines.as_bytes()),
    );
    assert_eq!(status, 200, "{a}");
    assert_eq!(a["records"], 200);

    // Text lines, plain and gzip, with host and source from the query.
    let text: String = (0..100).map(|i| format!("text {i:04}\r\n")).collect();
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records?host=cron-01&source=backup.sh",
        &[("Content-Type", "text/plain; charset=utf-8")],
        text.as_bytes(),
    );
    assert_eq!(status, 200, "{a}");
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records?source=backup.sh",
        &[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
        &gzip(b"zipped one\nzipped two\n"),
    );
    assert_eq!(status, 200, "{a}");

    let all = c.read_all("pushed");
    assert_eq!(all.len(), 300 + 200 + 100 + 2);
    let json: Vec<_> = all
        .iter()
        .filter(|r| r.message.starts_with("json "))
        .collect();
    assert_eq!(json.len(), 300);
    for r in &json {
        let i: i64 = r.message[5..9].parse().unwrap();
        assert_eq!(r.message, format!("json {i:04} ünïcode"));
        assert_eq!(r.host, if i % 2 == 0 { "fn-a" } else { "fn-b" });
        assert_eq!(r.source, "lambda://orders");
        assert_eq!(r.fields["req"], i);
        assert_eq!(r.fields["env"], "prod");
        assert_eq!(
            tributary_common::timefmt::parse_ms(r.json["timestamp"].as_str().unwrap()).unwrap(),
            1_796_000_000_000 + i
        );
    }
    let gz: Vec<_> = all
        .iter()
        .filter(|r| r.message.starts_with("gz "))
        .collect();
    assert_eq!(gz.len(), 200);
    assert!(
        gz.iter()
            .any(|r| r.json["timestamp"] == "2026-12-01T10:00:00.007Z")
    );
    let text: Vec<_> = all
        .iter()
        .filter(|r| r.message.starts_with("text "))
        .collect();
    assert_eq!(text.len(), 100);
    assert!(
        text.iter()
            .all(|r| r.host == "cron-01" && r.source == "backup.sh")
    );
    // Each source in one partition, in the order sent.
    let mut order: Vec<&str> = text.iter().map(|r| r.message.as_str()).collect();
    let sorted = {
        let mut s = order.clone();
        s.sort();
        s
    };
    assert_eq!(order, sorted);
    order.clear();
    let zipped: Vec<_> = all
        .iter()
        .filter(|r| r.message.starts_with("zipped"))
        .collect();
    assert_eq!(zipped.len(), 2);
    assert_eq!(
        zipped[0].host, "127.0.0.1",
        "the client's address when no host is given"
    );

    // Refused whole: one bad line among good ones names the line; nothing stored.
    let before = c.count("pushed");
    let body = "{\"message\":\"ok\"}\n{\"message\":\"ok\"}\n{\"mesage\":\"typo\"}\n";
    let (status, a) = post(&c, "/v1/topics/pushed/records", &[], body.as_bytes());
    assert_eq!(status, 400, "{a}");
    assert!(a["error"].as_str().unwrap().starts_with("line 3:"), "{a}");
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records",
        &[],
        b"{\"message\":\"ok\",\"timestamp\":\"yesterday\"}\n",
    );
    assert_eq!(status, 400, "{a}");
    assert!(a["error"].as_str().unwrap().contains("line 1"), "{a}");
    // Over the size limit (16 MiB), and a gzip bomb over 64 MiB once decompressed.
    let big = vec![b'x'; 17 << 20];
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records",
        &[("Content-Type", "text/plain")],
        &big,
    );
    assert_eq!(status, 413, "{a}");
    let bomb = gzip(&vec![b'\n'; 65 << 20]);
    let (status, a) = post(
        &c,
        "/v1/topics/pushed/records",
        &[("Content-Type", "text/plain"), ("Content-Encoding", "gzip")],
        &bomb,
    );
    assert_eq!(status, 413, "{a}");
    // An invalid topic name.
    let (status, a) = post(
        &c,
        "/v1/topics/bad%20name/records",
        &[],
        b"{\"message\":\"x\"}\n",
    );
    assert_eq!(status, 400, "{a}");
    assert_eq!(
        c.count("pushed"),
        before,
        "nothing of a refused body is stored"
    );
}
