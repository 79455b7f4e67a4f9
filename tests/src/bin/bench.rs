//! End-to-end benchmark: N lines of ~150 bytes from one file, through a real agent
//! and a real collector over mutual TLS, to durable storage.
//!
//! ```text
//! cargo run --release -p tributary-e2e --bin tributary-bench -- [--lines 1000000] [--compression lz4|gzip|none] [--fsync always|interval] [--gz]
//! ```
//! Prints lines/s, MB/s and, per process, CPU seconds and peak RSS (from /proc).
//! With `--gz` the file is a compressed rotation (`bench.log.1.gz`, gzip level 6
//! as logrotate's `gzip` writes it) that the agent decompresses: the figures are
//! for the decompressed lines shipped.
//! Everything runs on 127.0.0.1 and stops by itself.

use std::time::{Duration, Instant};

use tributary_e2e::{Env, Proc, machine, usage};

struct Opts {
    lines: usize,
    compression: String,
    fsync: String,
    gz: bool,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        lines: 1_000_000,
        compression: "lz4".into(),
        fsync: "always".into(),
        gz: false,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--lines" => o.lines = val()?.parse().map_err(|e| format!("--lines: {e}"))?,
            "--compression" => o.compression = val()?,
            "--fsync" => o.fsync = val()?,
            "--gz" => o.gz = true,
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
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).expect("logs dir");
    let file = logs.join("bench.log");
    let mut bytes = 0u64;
    {
        use std::io::Write;
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&file).expect("bench file"),
        );
        for i in 0..opts.lines {
            let line = format!(
                "2026-11-25T14:01:34.{:03}Z INFO web-{:02} request_id={i:010} method=GET path=/api/v1/items/{} status=200 bytes={} ua=\"Mozilla/5.0 (X11; Linux)\"\n",
                i % 1000,
                i % 16,
                i.wrapping_mul(7919) % 1_000_000,
                i % 65_536
            );
            bytes += line.len() as u64;
            w.write_all(line.as_bytes()).expect("write");
        }
        w.flush().expect("flush");
    }
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
        "topics:\n  default: {{partitions: 4}}\ndurability:\n  fsync: {}\n  interval_ms: 1000\n",
        opts.fsync
    ));
    let yaml = format!(
        "host: bench\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: bench\n    include: [\"{file}\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        file = file.display(),
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
        if n >= opts.lines as u64 {
            break;
        }
        if Instant::now() > deadline || !agent.is_running() {
            eprintln!(
                "tributary-bench: only {n} of {} lines after {:?}\n{}",
                opts.lines,
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
        "workload:       {} lines, {:.1} MB ({:.0} bytes/line), compression {}, fsync {}{}",
        opts.lines,
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
    drop(agent);
}
