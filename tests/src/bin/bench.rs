//! End-to-end benchmark: N lines of ~150 bytes from one file, through a real agent
//! and a real collector over mutual TLS, to durable storage.
//!
//! ```text
//! cargo run --release -p tributary-e2e --bin tributary-bench -- [--lines 1000000] [--compression lz4|gzip|none] [--store-compression lz4|gzip|none] [--fsync always|interval] [--gz] [--input plain|multiline|cri|json|journald]
//! ```
//! `--compression` is the agent's (on the wire), `--store-compression` the
//! topic's on disk (`topics.default.compression`); the bytes the topic's segments
//! take are printed beside the message bytes they hold.
//! `--input` picks what the agent reads: plain lines (the default); the same lines
//! with a Java stack trace of 9 frames after every 20th (`multiline: {preset:
//! java}`); the lines as CRI container logs, every 100th split in two pieces
//! (`format: cri`); JSON objects (`parse: json`); or journal entries in a journal
//! file made by `systemd-journal-remote` before the clock starts (`type: journald`).
//! Lines/s count input lines (a trace's frames too); records are what is stored.
//! Prints lines/s, MB/s and, per process, CPU seconds and peak RSS (from /proc).
//! With `--gz` the file is a compressed rotation (`bench.log.1.gz`, gzip level 6
//! as logrotate's `gzip` writes it) that the agent decompresses: the figures are
//! for the decompressed lines shipped.
//!
//! `--agents N [--secs 10] [--window 1] [--linger-ms 0]` measures fan-in instead
//! (each connection pauses `--linger-ms` after each batch; 0 sends flat out): one process
//! opens N agent connections (mutual TLS, distinct hosts and sources, batches of
//! 100-1,000 lines, lz4; see `tributary_e2e::fanin`) to a collector with
//! `fsync: always`, and prints the aggregate lines/s, the acknowledgement latency
//! p50/p99, the collector's CPU and peak RSS, and checks that the topic holds
//! exactly the lines acknowledged.
//! `--freshness N [--interval-ms 100]` measures how soon a line is searchable: N
//! single lines appended to a quiet file `--interval-ms` apart, each timed from its
//! `write` until a long-polling read of its offset over the HTTP API returns it
//! (agent `linger_ms: 200`, `fsync` as given): p50/p99/max.
//! Everything runs on 127.0.0.1 and stops by itself.

use std::time::{Duration, Instant};

use tributary_e2e::{Env, Proc, access_line, machine, segment_bytes, usage};

struct Opts {
    lines: usize,
    compression: String,
    store_compression: String,
    fsync: String,
    gz: bool,
    input: String,
    agents: usize,
    secs: u64,
    window: usize,
    linger_ms: u64,
    freshness: usize,
    interval_ms: u64,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        lines: 1_000_000,
        compression: "lz4".into(),
        store_compression: "lz4".into(),
        fsync: "always".into(),
        gz: false,
        input: "plain".into(),
        agents: 0,
        secs: 10,
        window: 1,
        linger_ms: 0,
        freshness: 0,
        interval_ms: 100,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--lines" => o.lines = val()?.parse().map_err(|e| format!("--lines: {e}"))?,
            "--compression" => o.compression = val()?,
            "--store-compression" => o.store_compression = val()?,
            "--fsync" => o.fsync = val()?,
            "--gz" => o.gz = true,
            "--input" => o.input = val()?,
            "--agents" => o.agents = val()?.parse().map_err(|e| format!("--agents: {e}"))?,
            "--secs" => o.secs = val()?.parse().map_err(|e| format!("--secs: {e}"))?,
            "--linger-ms" => {
                o.linger_ms = val()?.parse().map_err(|e| format!("--linger-ms: {e}"))?
            }
            "--freshness" => {
                o.freshness = val()?.parse().map_err(|e| format!("--freshness: {e}"))?
            }
            "--interval-ms" => {
                o.interval_ms = val()?.parse().map_err(|e| format!("--interval-ms: {e}"))?
            }
            "--window" => o.window = val()?.parse().map_err(|e| format!("--window: {e}"))?,
            "--bench" => {} // passed by `cargo bench`
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tributary-bench: {e}");
            std::process::exit(2);
        }
    };
    if opts.agents > 0 {
        fan_in(&opts);
        return;
    }
    if opts.freshness > 0 {
        freshness(&opts);
        return;
    }
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("bench.log");
    let mut bytes = 0u64;
    let mut records = 0u64;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&file).expect("bench file"),
        );
        let mut i = 0;
        while i < opts.lines {
            let (text, lines, recs) = workload_line(&opts.input, i);
            bytes += text.len() as u64;
            records += recs;
            i += lines;
            w.write_all(text.as_bytes()).expect("write");
        }
        w.flush().expect("flush");
    }
    let input_yaml = match opts.input.as_str() {
        "plain" => String::new(),
        "multiline" => "    multiline: {preset: java, timeout_ms: 100}\n".into(),
        "cri" => "    format: cri\n".into(),
        "json" => "    parse: json\n".into(),
        "journald" => String::new(),
        other => {
            eprintln!("tributary-bench: unknown --input {other}");
            std::process::exit(2);
        }
    };
    let file = if opts.gz {
        let gz = logs.join("bench.log.1.gz");
        let mut enc = flate2::write::GzEncoder::new(
            std::fs::File::create(&gz).expect("gz file"),
            flate2::Compression::new(6),
        );
        std::io::copy(
            &mut std::fs::File::open(&file).expect("bench file"),
            &mut enc,
        )
        .expect("compress");
        enc.finish().expect("finish gz");
        std::fs::remove_file(&file).expect("remove plain file");
        println!(
            "compressed:     {:.1} MB gzip",
            std::fs::metadata(&gz).map(|m| m.len()).unwrap_or(0) as f64 / 1e6
        );
        gz
    } else {
        file
    };
    let collector = env.start_collector(&format!(
        "topics:\n  default: {{partitions: 4, compression: {}}}\ndurability:\n  fsync: {}\n  interval_ms: 1000\n",
        opts.store_compression, opts.fsync
    ));
    let input = if opts.input == "journald" {
        let dir = journal_of(&file, &logs);
        format!(
            "  - type: journald\n    topic: bench\n    directory: {}\n",
            dir.display()
        )
    } else {
        format!(
            "  - type: file\n    topic: bench\n    include: [\"{}\"]\n    read_from: beginning\n{input_yaml}",
            file.display()
        )
    };
    let yaml = format!(
        "host: bench\ndata_dir: {data}\ninputs:\n{input}{out}",
        data = env.path().join("agent-data").display(),
        out = env
            .output_yaml(&collector, &opts.compression)
            .replace("linger_ms: 50", "linger_ms: 200"),
    );
    let start = Instant::now();
    let mut agent: Proc = env.start_agent("agent", &yaml);
    let deadline = start + Duration::from_secs(600);
    let mut peak = (0.0, 0u64, 0.0, 0u64);
    loop {
        let n = collector.count("bench");
        let (ac, ar) = usage(agent.pid());
        let (cc, cr) = usage(collector.proc.pid());
        peak = (
            ac.max(peak.0),
            ar.max(peak.1),
            cc.max(peak.2),
            cr.max(peak.3),
        );
        if n >= records {
            break;
        }
        if Instant::now() > deadline || !agent.is_running() {
            eprintln!(
                "tributary-bench: only {n} of {records} records after {:?}\n{}",
                start.elapsed(),
                agent.log_text()
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = start.elapsed().as_secs_f64();
    let (ac, ar) = usage(agent.pid());
    let (cc, cr) = usage(collector.proc.pid());
    let (ac, ar, cc, cr) = (
        ac.max(peak.0),
        ar.max(peak.1),
        cc.max(peak.2),
        cr.max(peak.3),
    );
    let mb = bytes as f64 / 1e6;
    println!("machine:        {}", machine());
    println!(
        "workload:       {} lines ({} input, {records} records), {:.1} MB ({:.0} bytes/line), compression {}, fsync {}{}",
        opts.lines,
        opts.input,
        mb,
        bytes as f64 / opts.lines as f64,
        opts.compression,
        opts.fsync,
        if opts.gz { ", read from a .gz" } else { "" }
    );
    println!("elapsed:        {secs:.2} s (agent start → last line durable and visible)");
    println!(
        "throughput:     {:.0} lines/s, {:.1} MB/s",
        opts.lines as f64 / secs,
        mb / secs
    );
    println!(
        "agent:          {ac:.2} CPU s, peak RSS {:.1} MB",
        ar as f64 / 1e6
    );
    println!(
        "collector:      {cc:.2} CPU s, peak RSS {:.1} MB",
        cr as f64 / 1e6
    );
    let disk = segment_bytes(&env.path().join("collector-data/topics/bench"));
    // The input's bytes less one newline per line: the message bytes stored.
    let messages = bytes.saturating_sub(opts.lines as u64);
    println!(
        "on disk:        {:.1} MB of segments ({} store compression), {:.1} bytes/line, {:.1} % of the {:.1} MB of messages",
        disk as f64 / 1e6,
        opts.store_compression,
        disk as f64 / opts.lines as f64,
        100.0 * disk as f64 / messages.max(1) as f64,
        messages as f64 / 1e6
    );
    drop(agent);
}

/// `--freshness N`: write → searchable latency of single lines on a quiet file.
fn freshness(opts: &Opts) {
    use std::io::Write;
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("quiet.log");
    let mut log = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&file)
        .expect("log file");
    let collector = env.start_collector(&format!(
        "topics:\n  default: {{partitions: 1, compression: {}}}\ndurability:\n  fsync: {}\n",
        opts.store_compression, opts.fsync
    ));
    let yaml = format!(
        "host: fresh\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: fresh\n    include: [\"{file}\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        file = file.display(),
        out = env
            .output_yaml(&collector, &opts.compression)
            .replace("linger_ms: 50", "linger_ms: 200"),
    );
    let agent: Proc = env.start_agent("agent", &yaml);
    // Line `i` is at offset `i` (one partition, one source); line 0 warms up the path.
    // The topic exists once the warm-up line is stored.
    let read = |i: usize, line: &str| {
        let path = format!("/v1/topics/fresh/partitions/0/records?offset={i}&max=1&wait_ms=10000");
        let deadline = Instant::now() + Duration::from_secs(30);
        let v = loop {
            match collector.get(&path) {
                Ok(v) => break v,
                Err(_) if i == 0 && Instant::now() < deadline => {
                    std::thread::sleep(Duration::from_millis(20));
                }
                Err(e) => panic!("read offset {i}: {e}"),
            }
        };
        let got = v["records"][0]["message"].as_str().unwrap_or_default();
        if got != line {
            eprintln!(
                "tributary-bench: offset {i} holds {got:?}, expected {line:?}\n{}",
                agent.log_text()
            );
            std::process::exit(1);
        }
    };
    let mut latencies = Vec::with_capacity(opts.freshness);
    let interval = Duration::from_millis(opts.interval_ms);
    let mut next = Instant::now();
    for i in 0..=opts.freshness {
        std::thread::sleep(next.saturating_duration_since(Instant::now()));
        next += interval;
        let line = format!("{} fresh line {i}", access_line(i).trim_end());
        let t0 = Instant::now();
        log.write_all(format!("{line}\n").as_bytes())
            .expect("append");
        read(i, &line);
        if i > 0 {
            latencies.push(t0.elapsed());
        }
    }
    latencies.sort();
    let q =
        |q: f64| latencies[((latencies.len() - 1) as f64 * q).round() as usize].as_secs_f64() * 1e3;
    let (ac, ar) = usage(agent.pid());
    println!("machine:        {}", machine());
    println!(
        "workload:       {} single lines, {} ms apart, agent linger_ms 200, compression {}, fsync {}",
        opts.freshness, opts.interval_ms, opts.compression, opts.fsync
    );
    println!(
        "write → searchable: p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms (each through one long-polling API read)",
        q(0.5),
        q(0.99),
        q(1.0)
    );
    println!(
        "agent:          {ac:.2} CPU s, peak RSS {:.1} MB",
        ar as f64 / 1e6
    );
}

/// `--agents N`: many agent connections on one collector.
fn fan_in(opts: &Opts) {
    use tributary_e2e::fanin;
    let env = Env::new();
    let room = opts.agents + 64;
    let collector = env.start_collector_with(
        &format!("  max_connections: {room}\n  max_connections_per_ip: {room}\n"),
        &format!(
            "topics:\n  default: {{partitions: 4, compression: {}}}\ndurability:\n  fsync: {}\n",
            opts.store_compression, opts.fsync
        ),
    );
    let pid = collector.proc.pid();
    let (_, rss_before) = usage(pid);
    let stop = std::sync::Arc::new(std::sync::atomic::AtomicBool::new(false));
    let t0 = Instant::now();
    // RSS every 20 ms: the peak, and what the connections hold before they send.
    let sampler = {
        let stop = stop.clone();
        std::thread::spawn(move || {
            let mut samples = Vec::new();
            while !stop.load(std::sync::atomic::Ordering::Relaxed) {
                samples.push((t0.elapsed(), usage(pid).1));
                std::thread::sleep(Duration::from_millis(20));
            }
            samples
        })
    };
    let load = fanin::Load {
        connections: opts.agents,
        topic: "fanin".into(),
        min_lines: 100,
        max_lines: 1000,
        window: opts.window.max(1),
        linger: Duration::from_millis(opts.linger_ms),
        duration: Duration::from_secs(opts.secs),
        max_lines_per_connection: u64::MAX / 2,
    };
    let (cpu_before, _) = usage(pid);
    let out = fanin::run(&env, collector.ingest_port, &load);
    let (cpu_after, _) = usage(pid);
    stop.store(true, std::sync::atomic::Ordering::Relaxed);
    let samples = sampler.join().unwrap_or_default();
    let peak = samples.iter().map(|s| s.1).max().unwrap_or(0);
    let connected = samples
        .iter()
        .take_while(|s| s.0 <= out.connect)
        .last()
        .map_or(0, |s| s.1);
    let stored = collector.count("fanin");
    let secs = out.elapsed.as_secs_f64();
    println!("machine:        {}", machine());
    println!(
        "workload:       {} agent connections, batches of 100-1000 access-log lines (lz4), window {}, linger {} ms, {} s, fsync {}",
        opts.agents, load.window, opts.linger_ms, opts.secs, opts.fsync
    );
    println!(
        "connect:        {:.2} s for all connections",
        out.connect.as_secs_f64()
    );
    println!(
        "throughput:     {:.0} lines/s ({} lines, {} batches in {secs:.2} s)",
        out.lines as f64 / secs,
        out.lines,
        out.batches
    );
    println!(
        "ack latency:    p50 {:.1} ms, p99 {:.1} ms, max {:.1} ms",
        out.latency(0.5).as_secs_f64() * 1e3,
        out.latency(0.99).as_secs_f64() * 1e3,
        out.latency(1.0).as_secs_f64() * 1e3
    );
    println!(
        "collector:      {:.2} CPU s during the load, RSS {:.1} MB before, {:.1} MB with all connected ({:.1} KB per connection), peak {:.1} MB",
        cpu_after - cpu_before,
        rss_before as f64 / 1e6,
        connected as f64 / 1e6,
        connected.saturating_sub(rss_before) as f64 / 1e3 / opts.agents.max(1) as f64,
        peak as f64 / 1e6
    );
    let slowest = out.per_connection.iter().min().copied().unwrap_or(0);
    println!(
        "fairness:       every connection got {slowest}+ lines acknowledged (mean {:.0})",
        out.lines as f64 / opts.agents.max(1) as f64
    );
    if stored != out.lines {
        eprintln!(
            "tributary-bench: the topic holds {stored} records, {} were acknowledged",
            out.lines
        );
        std::process::exit(1);
    }
    println!("stored:         {stored} records, each acknowledged line once");
}

/// The text of input line `i` for `input` (more than one line for a trace or a
/// split CRI line): (text, input lines, records).
fn workload_line(input: &str, i: usize) -> (String, usize, u64) {
    let access = access_line(i);
    match input {
        "multiline" if i % 20 == 19 => {
            let mut t = format!(
                "2026-11-25T14:01:34.{:03}Z ERROR web-{:02} request_id={i:010} failed\njava.lang.IllegalStateException: item {i} not found\n",
                i % 1000,
                i % 16
            );
            for f in 0..8 {
                t.push_str(&format!(
                    "\tat com.example.shop.ItemService.load{f}(ItemService.java:{})\n",
                    100 + f
                ));
            }
            // The log line, then the exception and its 8 frames as one record.
            (t, 10, 2)
        }
        "cri" if i % 100 == 99 => {
            let (a, b) = access.split_at(access.len() / 2);
            (
                format!(
                    "2026-11-25T14:01:34.{:03}456789Z stdout P {a}\n2026-11-25T14:01:34.{:03}456789Z stdout F {b}\n",
                    i % 1000,
                    i % 1000
                ),
                2,
                1,
            )
        }
        "cri" => (
            format!(
                "2026-11-25T14:01:34.{:03}456789Z stdout F {access}\n",
                i % 1000
            ),
            1,
            1,
        ),
        "json" => (
            format!(
                "{{\"ts\":\"2026-11-25T14:01:34.{:03}Z\",\"level\":\"info\",\"msg\":\"request done\",\"host\":\"web-{:02}\",\"request_id\":{i},\"method\":\"GET\",\"path\":\"/api/v1/items/{}\",\"status\":200,\"bytes\":{}}}\n",
                i % 1000,
                i % 16,
                i.wrapping_mul(7919) % 1_000_000,
                i % 65_536
            ),
            1,
            1,
        ),
        _ => (format!("{access}\n"), 1, 1),
    }
}

/// A journal directory holding the lines of `file` as entries (one per line),
/// written by systemd-journal-remote before the clock starts.
fn journal_of(file: &std::path::Path, logs: &std::path::Path) -> std::path::PathBuf {
    use std::io::{BufRead, Write};
    let remote = ["/lib/systemd/systemd-journal-remote", "/usr/lib/systemd/systemd-journal-remote"]
        .into_iter()
        .find(|p| std::path::Path::new(p).exists())
        .unwrap_or_else(|| {
            eprintln!("tributary-bench: --input journald needs systemd-journal-remote (apt install systemd-journal-remote)");
            std::process::exit(2);
        });
    let export = logs.join("bench.export");
    let mut w = std::io::BufWriter::new(std::fs::File::create(&export).expect("export file"));
    let r = std::io::BufReader::new(std::fs::File::open(file).expect("bench file"));
    for (i, line) in r.lines().enumerate() {
        let line = line.expect("read");
        write!(
            w,
            "__REALTIME_TIMESTAMP={}\n_HOSTNAME=bench\n_SYSTEMD_UNIT=web.service\n_PID=4242\nPRIORITY=6\nSYSLOG_IDENTIFIER=web\nMESSAGE={line}\n\n",
            1_796_000_000_000_000u64 + i as u64
        )
        .expect("write");
    }
    w.flush().expect("flush");
    drop(w);
    let dir = logs.join("journal");
    std::fs::create_dir_all(&dir).expect("journal dir");
    let t = Instant::now();
    let st = std::process::Command::new(remote)
        .arg(format!("--output={}", dir.join("bench.journal").display()))
        .arg(&export)
        .stderr(std::process::Stdio::null())
        .status()
        .expect("systemd-journal-remote runs");
    assert!(st.success(), "systemd-journal-remote failed");
    println!(
        "journal:        written by systemd-journal-remote in {:.1} s",
        t.elapsed().as_secs_f64()
    );
    dir
}
