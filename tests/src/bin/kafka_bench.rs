//! Kafka read benchmark: a topic of N records of ~150 bytes (default 1,000,000),
//! shipped by a real agent, then read whole by Kafka clients and over the HTTP
//! API, each against the same collector:
//!
//! ```text
//! cargo run --release -p tributary-e2e --bin tributary-kafka-bench -- [--records 1000000] [--partitions 4] [--compression lz4|gzip|none]
//! ```
//! - `kcat -C -e -q` (librdkafka): records/s, MB/s of messages;
//! - confluent-kafka (Python, from `target/pyenv` when present);
//! - the HTTP API (`/v1/topics/…/records`, 10,000 per request, partitions one
//!   after another), the same records;
//! - the tail: a Fetch of the last record of a partition on a kept-open
//!   connection (`max_wait_ms` 0), 1,000 times: p50 and p99;
//!
//! and the collector's CPU seconds and RSS during each read. Everything runs on
//! 127.0.0.1 and stops by itself.

use std::io::{Read, Write};
use std::net::TcpStream;
use std::process::Command;
use std::time::{Duration, Instant};

use tributary_e2e::{Env, bin_dir, free_port, machine, usage};

struct Opts {
    records: usize,
    partitions: u32,
    compression: String,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        records: 1_000_000,
        partitions: 4,
        compression: "lz4".into(),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--records" => o.records = val()?.parse().map_err(|e| format!("--records: {e}"))?,
            "--partitions" => {
                o.partitions = val()?.parse().map_err(|e| format!("--partitions: {e}"))?
            }
            "--compression" => o.compression = val()?,
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

/// A Fetch v4 request for one partition at `offset`, framed.
fn fetch_request(topic: &str, partition: i32, offset: i64, correlation: i32) -> Vec<u8> {
    let mut r = Vec::new();
    r.extend_from_slice(&1i16.to_be_bytes()); // Fetch
    r.extend_from_slice(&4i16.to_be_bytes()); // v4
    r.extend_from_slice(&correlation.to_be_bytes());
    r.extend_from_slice(&5i16.to_be_bytes());
    r.extend_from_slice(b"bench");
    r.extend_from_slice(&(-1i32).to_be_bytes()); // replica
    r.extend_from_slice(&0i32.to_be_bytes()); // max_wait_ms
    r.extend_from_slice(&1i32.to_be_bytes()); // min_bytes
    r.extend_from_slice(&(1i32 << 20).to_be_bytes()); // max_bytes
    r.push(0); // isolation level
    r.extend_from_slice(&1i32.to_be_bytes()); // one topic
    r.extend_from_slice(&(topic.len() as i16).to_be_bytes());
    r.extend_from_slice(topic.as_bytes());
    r.extend_from_slice(&1i32.to_be_bytes()); // one partition
    r.extend_from_slice(&partition.to_be_bytes());
    r.extend_from_slice(&offset.to_be_bytes());
    r.extend_from_slice(&(1i32 << 20).to_be_bytes());
    let mut framed = (r.len() as i32).to_be_bytes().to_vec();
    framed.extend_from_slice(&r);
    framed
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let i = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[i.min(sorted.len() - 1)]
}

fn report(name: &str, records: usize, bytes: u64, took: Duration, cpu: f64, rss: u64) {
    let secs = took.as_secs_f64().max(1e-9);
    println!(
        "{name:<28} {:>10.0} records/s {:>7.1} MB/s   {:>6.2} s   collector {:>5.2} CPU s, RSS {:>5.1} MB",
        records as f64 / secs,
        bytes as f64 / 1e6 / secs,
        secs,
        cpu,
        rss as f64 / 1e6
    );
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tributary-kafka-bench: {e}");
            std::process::exit(2);
        }
    };
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("bench.log");
    let mut bytes = 0u64;
    {
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&file).expect("bench file"),
        );
        for i in 0..opts.records {
            let line = format!("{}\n", tributary_e2e::access_line(i));
            bytes += line.len() as u64 - 1;
            w.write_all(line.as_bytes()).expect("write");
        }
        w.flush().expect("flush");
    }
    let kport = free_port();
    let broker = format!("127.0.0.1:{kport}");
    let collector = env.start_collector(&format!(
        "kafka:\n  listen: {broker}\n  compression: {}\ntopics:\n  bench: {{partitions: {}}}\n",
        opts.compression, opts.partitions
    ));
    // One source is one partition: split the file's lines over as many files.
    let yaml = format!(
        "host: bench\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: bench\n    include: [\"{file}\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        file = file.display(),
        out = env.output_yaml(&collector, "lz4"),
    );
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count(
        "bench",
        opts.records as u64,
        Duration::from_secs(600),
        &agent,
    );
    drop(agent);
    let ends = collector.end_offsets("bench");
    let (partition, end) = ends
        .iter()
        .find(|(_, e)| **e > 0)
        .map(|(p, e)| (*p, *e))
        .expect("a partition with records");
    println!(
        "topic: {} records, {:.0} MB of messages, in partition {partition} of {} (one file is one source); Fetch answers {}",
        opts.records,
        bytes as f64 / 1e6,
        opts.partitions,
        opts.compression
    );
    let pid = collector.proc.pid();

    // kcat (librdkafka).
    let (cpu0, _) = usage(pid);
    let t = Instant::now();
    let out = Command::new("kcat")
        .args([
            "-b",
            &broker,
            "-C",
            "-t",
            "bench",
            "-o",
            "beginning",
            "-e",
            "-q",
            "-f",
            "%s\n",
        ])
        .output()
        .expect("run kcat (apt-get install kcat)");
    let took = t.elapsed();
    let (cpu1, rss) = usage(pid);
    let n = out.stdout.iter().filter(|b| **b == b'\n').count();
    assert_eq!(n, opts.records, "kcat read {n} records");
    report("kcat -C -e (librdkafka)", n, bytes, took, cpu1 - cpu0, rss);

    // confluent-kafka, when the virtualenv is there.
    let py = bin_dir().parent().map(|t| t.join("pyenv/bin/python"));
    if let Some(py) = py.filter(|p| p.exists()) {
        let script = format!(
            "import time\nfrom confluent_kafka import Consumer\nc=Consumer({{'bootstrap.servers':'{broker}','group.id':'bench','auto.offset.reset':'earliest','enable.auto.commit':False}})\nc.subscribe(['bench'])\nn=0\nwhile n<{}:\n    for m in c.consume(10000, 1.0):\n        if not m.error(): n+=1\nprint(n)\nc.close()\n",
            opts.records
        );
        let (cpu0, _) = usage(pid);
        let t = Instant::now();
        let out = Command::new("timeout")
            .arg("600")
            .arg(&py)
            .args(["-c", &script])
            .output()
            .expect("run python");
        let took = t.elapsed();
        let (cpu1, rss) = usage(pid);
        let n: usize = String::from_utf8_lossy(&out.stdout)
            .trim()
            .parse()
            .unwrap_or(0);
        assert_eq!(n, opts.records, "{}", String::from_utf8_lossy(&out.stderr));
        report("confluent-kafka (Python)", n, bytes, took, cpu1 - cpu0, rss);
    } else {
        println!("confluent-kafka: skipped (no target/pyenv; .ci/run makes it)");
    }

    // The HTTP API, the same records.
    let (cpu0, _) = usage(pid);
    let t = Instant::now();
    let all = collector.read_all("bench");
    let took = t.elapsed();
    let (cpu1, rss) = usage(pid);
    assert_eq!(all.len(), opts.records);
    report("HTTP API (JSON)", all.len(), bytes, took, cpu1 - cpu0, rss);
    drop(all);

    // The tail: the last record, on a kept-open connection.
    let mut s = TcpStream::connect(("127.0.0.1", kport)).expect("connect");
    s.set_nodelay(true).expect("nodelay");
    let mut times = Vec::with_capacity(1000);
    for i in 0..1000 {
        let req = fetch_request("bench", partition as i32, end as i64 - 1, i);
        let t = Instant::now();
        s.write_all(&req).expect("send");
        let mut size = [0u8; 4];
        s.read_exact(&mut size).expect("answer size");
        let mut body = vec![0u8; i32::from_be_bytes(size) as usize];
        s.read_exact(&mut body).expect("answer");
        times.push(t.elapsed());
        assert_eq!(&body[..4], &i.to_be_bytes());
    }
    times.sort();
    println!(
        "tail Fetch (last record)     p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms over 1000",
        percentile(&times, 0.5).as_secs_f64() * 1e3,
        percentile(&times, 0.99).as_secs_f64() * 1e3,
        times.last().map_or(0.0, |d| d.as_secs_f64() * 1e3)
    );
    println!("machine: {}", machine());
}
