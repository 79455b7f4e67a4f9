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
