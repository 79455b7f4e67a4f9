//! Syslog benchmark: a real agent and a real collector (mutual TLS on 127.0.0.1).
//!
//! ```text
//! cargo run --release -p tributary-e2e --bin tributary-syslog-bench -- [--messages 1000000] [--udp-rate 20000] [--udp-secs 5] [--compression lz4|gzip|none] [--store-compression lz4|gzip|none] [--fsync always|interval]
//! ```
//! 1. TCP: this process writes N RFC 5424 messages (~200 bytes, structured data,
//!    octet counting) over ONE connection as fast as the agent reads them; the clock
//!    runs from the first byte until the last record is durable and visible through
//!    the collector's API. Prints messages/s, MB/s and the agent's CPU seconds and
//!    peak RSS (from /proc).
//!    Then the bytes the topic's segments take on disk, against the messages' bytes
//!    (`--store-compression`: the topic's `compression`).
//! 2. UDP: a fixed rate for a few seconds; prints how many arrived, the agent's
//!    `syslog_udp_dropped_total` and the kernel's UDP receive-buffer errors.
//!
//! Everything runs on 127.0.0.1 and stops by itself.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::{Duration, Instant};

use tributary_e2e::{Collector, Env, Proc, free_port, machine, segment_bytes, usage};

struct Opts {
    messages: usize,
    udp_rate: usize,
    udp_secs: u64,
    compression: String,
    store_compression: String,
    fsync: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        messages: 1_000_000,
        udp_rate: 20_000,
        udp_secs: 5,
        compression: "lz4".into(),
        store_compression: "lz4".into(),
        fsync: "always".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        let num = |v: String| v.parse::<usize>().map_err(|e| format!("{a}: {e}"));
        match a.as_str() {
            "--messages" => o.messages = num(val()?)?,
            "--udp-rate" => o.udp_rate = num(val()?)?,
            "--udp-secs" => o.udp_secs = num(val()?)? as u64,
            "--compression" => o.compression = val()?,
            "--store-compression" => o.store_compression = val()?,
            "--fsync" => o.fsync = val()?,
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// One RFC 5424 message as rsyslog or a library would send it, octet-counted.
fn message(i: usize, out: &mut Vec<u8>) {
    let msg = format!(
        "<165>1 2026-11-25T14:01:34.{:06}Z web-{:02}.example.com api {} ID47 [req@32473 id=\"{i:010}\" status=\"200\"] GET /api/v1/items/{} bytes={} ua=\"Mozilla/5.0 (X11; Linux)\"",
        i % 1_000_000,
        i % 16,
        1000 + i % 50,
        i.wrapping_mul(7919) % 1_000_000,
        i % 65_536
    );
    out.extend_from_slice(format!("{} ", msg.len()).as_bytes());
    out.extend_from_slice(msg.as_bytes());
}

/// Peak (CPU s, RSS) of the agent and the collector while `until` is false.
struct Sampler {
    agent: (f64, u64),
    collector: (f64, u64),
}

impl Sampler {
    fn sample(&mut self, agent: &Proc, collector: &Collector) {
        let (ac, ar) = usage(agent.pid());
        let (cc, cr) = usage(collector.proc.pid());
        self.agent = (self.agent.0.max(ac), self.agent.1.max(ar));
        self.collector = (self.collector.0.max(cc), self.collector.1.max(cr));
    }
}

fn counter(port: u16, name: &str) -> u64 {
    let Ok(mut s) = TcpStream::connect(("127.0.0.1", port)) else {
        return 0;
    };
    let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
    let _ = s.write_all(b"GET /metrics HTTP/1.1\r\nhost: x\r\n\r\n");
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines()
        .find_map(|l| l.strip_prefix(&format!("tributary_agent_{name} ")))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// `RcvbufErrors` of /proc/net/snmp (datagrams the kernel dropped, all sockets).
fn udp_rcvbuf_errors() -> u64 {
    let snmp = std::fs::read_to_string("/proc/net/snmp").unwrap_or_default();
    let udp: Vec<&str> = snmp.lines().filter(|l| l.starts_with("Udp:")).collect();
    if udp.len() < 2 {
        return 0;
    }
    let names: Vec<&str> = udp[0].split_whitespace().collect();
    let values: Vec<&str> = udp[1].split_whitespace().collect();
    names
        .iter()
        .position(|n| *n == "RcvbufErrors")
        .and_then(|i| values.get(i))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn fail(msg: String, agent: &Proc) -> ! {
    eprintln!("tributary-syslog-bench: {msg}\n{}", agent.log_text());
    std::process::exit(1);
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tributary-syslog-bench: {e}");
            std::process::exit(2);
        }
    };
    // The workload, generated before the clock starts.
    let mut data = Vec::with_capacity(opts.messages * 210);
    // The messages' own bytes (what a record's message holds), without the counts.
    let mut raw = 0u64;
    for i in 0..opts.messages {
        let at = data.len();
        message(i, &mut data);
        let count = data[at..]
            .iter()
            .position(|c| *c == b' ')
            .map_or(0, |p| p + 1);
        raw += (data.len() - at - count) as u64;
    }

    let env = Env::new();
    let collector = env.start_collector(&format!(
        "topics:\n  default: {{partitions: 4, compression: {}}}\ndurability:\n  fsync: {}\n  interval_ms: 1000\n",
        opts.store_compression, opts.fsync
    ));
    let (tcp_port, udp_port, metrics_port) = (free_port(), free_port(), free_port());
    let yaml = format!(
        "host: bench\ndata_dir: {data}\ninputs:\n  - type: syslog\n    topic: tcp\n    listen: [\"tcp://127.0.0.1:{tcp_port}\"]\n  - type: syslog\n    topic: udp\n    listen: [\"udp://127.0.0.1:{udp_port}\"]\nmetrics: {{listen: \"127.0.0.1:{metrics_port}\"}}\n{out}",
        data = env.path().join("agent-data").display(),
        out = env
            .output_yaml(&collector, &opts.compression)
            .replace("linger_ms: 50", "linger_ms: 200"),
    );
    let agent = env.start_agent("agent", &yaml);
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut conn = loop {
        match TcpStream::connect(("127.0.0.1", tcp_port)) {
            Ok(c) => break c,
            Err(_) if Instant::now() < deadline => std::thread::sleep(Duration::from_millis(20)),
            Err(e) => fail(format!("agent not listening: {e}"), &agent),
        }
    };
    let mut peak = Sampler {
        agent: (0.0, 0),
        collector: (0.0, 0),
    };

    // 1. TCP, one connection, as fast as possible.
    let bytes = data.len();
    let start = Instant::now();
    let writer = std::thread::spawn(move || {
        let r = conn.write_all(&data);
        (r, Instant::now(), conn)
    });
    let deadline = start + Duration::from_secs(600);
    loop {
        peak.sample(&agent, &collector);
        let n = collector.count("tcp");
        if n >= opts.messages as u64 {
            break;
        }
        if Instant::now() > deadline {
            fail(
                format!(
                    "only {n} of {} messages after {:?}",
                    opts.messages,
                    start.elapsed()
                ),
                &agent,
            );
        }
        std::thread::sleep(Duration::from_millis(20));
    }
    let secs = start.elapsed().as_secs_f64();
    let (written, written_at, _conn) = match writer.join() {
        Ok(v) => v,
        Err(_) => fail("writer thread panicked".into(), &agent),
    };
    if let Err(e) = written {
        fail(format!("writing to the agent failed: {e}"), &agent);
    }
    peak.sample(&agent, &collector);
    let tcp_agent = peak.agent;
    let tcp_collector = peak.collector;
    let mb = bytes as f64 / 1e6;
    let disk = segment_bytes(&env.path().join("collector-data/topics/tcp"));

    // 2. UDP at a fixed rate.
    let udp = match UdpSocket::bind("127.0.0.1:0") {
        Ok(u) => u,
        Err(e) => fail(format!("udp socket: {e}"), &agent),
    };
    let total = opts.udp_rate * opts.udp_secs as usize;
    let kernel_before = udp_rcvbuf_errors();
    let cpu_before = usage(agent.pid()).0;
    let udp_start = Instant::now();
    let mut sent = 0usize;
    let mut buf = Vec::new();
    while sent < total {
        let due = ((udp_start.elapsed().as_secs_f64() * opts.udp_rate as f64) as usize).min(total);
        while sent < due {
            buf.clear();
            message(sent, &mut buf);
            // Without the octet count: one datagram is one message.
            let text = &buf[buf.iter().position(|c| *c == b' ').map_or(0, |p| p + 1)..];
            if udp.send_to(text, ("127.0.0.1", udp_port)).is_err() {
                fail("udp send failed".into(), &agent);
            }
            sent += 1;
        }
        std::thread::sleep(Duration::from_millis(1));
    }
    let udp_send_secs = udp_start.elapsed().as_secs_f64();
    let settle = Instant::now() + Duration::from_secs(15);
    let mut stored = collector.count("udp");
    while stored < total as u64 && Instant::now() < settle {
        std::thread::sleep(Duration::from_millis(100));
        stored = collector.count("udp");
    }
    let udp_cpu = usage(agent.pid()).0 - cpu_before;
    let kernel_drops = udp_rcvbuf_errors().saturating_sub(kernel_before);
    let agent_drops = counter(metrics_port, "syslog_udp_dropped_total");
    peak.sample(&agent, &collector);

    println!("machine:        {}", machine());
    println!(
        "tcp workload:   {} RFC 5424 messages, {:.1} MB ({:.0} bytes/message, octet counting), one connection, compression {}, fsync {}",
        opts.messages,
        mb,
        bytes as f64 / opts.messages as f64,
        opts.compression,
        opts.fsync
    );
    println!(
        "tcp elapsed:    {secs:.2} s (first byte → last message durable and visible); sender done after {:.2} s",
        (written_at - start).as_secs_f64()
    );
    println!(
        "tcp throughput: {:.0} messages/s, {:.1} MB/s",
        opts.messages as f64 / secs,
        mb / secs
    );
    println!(
        "tcp agent:      {:.2} CPU s ({:.1} µs/message), peak RSS {:.1} MB",
        tcp_agent.0,
        tcp_agent.0 * 1e6 / opts.messages as f64,
        tcp_agent.1 as f64 / 1e6
    );
    println!(
        "tcp collector:  {:.2} CPU s, peak RSS {:.1} MB",
        tcp_collector.0,
        tcp_collector.1 as f64 / 1e6
    );
    println!(
        "udp:            {total} messages at {} /s over {udp_send_secs:.2} s: {stored} stored, loss {} (agent dropped {agent_drops}, kernel receive-buffer drops {kernel_drops}); agent {udp_cpu:.2} CPU s",
        opts.udp_rate,
        total as u64 - stored.min(total as u64)
    );
    println!(
        "tcp on disk:    {:.1} MB of segments ({} store compression), {:.1} bytes/message, {:.1} % of the {:.1} MB of messages",
        disk as f64 / 1e6,
        opts.store_compression,
        disk as f64 / opts.messages as f64,
        100.0 * disk as f64 / raw.max(1) as f64,
        raw as f64 / 1e6
    );
    println!("agent peak RSS: {:.1} MB", peak.agent.1 as f64 / 1e6);
    drop(agent);
}
