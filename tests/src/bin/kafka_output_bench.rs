//! Kafka output benchmark: the same file of N access-log lines (default
//! 1,000,000, ~150 bytes each) produced into a Kafka-compatible broker twice in
//! one run, by `kcat -P` (librdkafka, the usual yardstick) and by the agent with
//! `output.kafka`. kcat runs twice: with the plain lines, and with the lines keyed
//! and carrying the headers the agent adds (`-K`, `-H`), the same records:
//!
//! ```text
//! cargo run --release -p tributary-e2e --bin tributary-kafka-output-bench -- [--lines 1000000] [--compression lz4|gzip|none] [--partitions 4]
//! ```
//! Both use `acks=all` and the same codec. kcat's time is from its start to its
//! exit (it exits once every message is acknowledged); the agent's from its start
//! to the last line acknowledged (its `records_acked` metric). Lines/s, MB/s of
//! lines, CPU seconds and peak RSS of each. The broker is noida-db from the
//! virtualenv `.ci/run` creates (`target/pyenv`); kcat comes from Debian
//! (`apt install kcat`). Everything runs on 127.0.0.1 and stops by itself.

use std::io::Write;
use std::path::Path;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use kafka_protocol::messages::{
    CreateTopicsRequest, CreateTopicsResponse, TopicName, create_topics_request::CreatableTopic,
};
use kafka_protocol::protocol::StrBytes;
use tributary_common::kafka::{Conn, ConnSettings};
use tributary_e2e::{Broker, Env, access_line, agent_metric, free_port, machine, usage};

struct Opts {
    lines: usize,
    compression: String,
    partitions: i32,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        lines: 1_000_000,
        compression: "lz4".into(),
        partitions: 4,
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--lines" => o.lines = val()?.parse().map_err(|e| format!("--lines: {e}"))?,
            "--compression" => o.compression = val()?,
            "--partitions" => {
                o.partitions = val()?.parse().map_err(|e| format!("--partitions: {e}"))?
            }
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    if !["lz4", "gzip", "none"].contains(&o.compression.as_str()) {
        return Err(format!(
            "--compression {}: lz4, gzip or none",
            o.compression
        ));
    }
    Ok(o)
}

/// Create `topic` with `partitions` through the Kafka protocol.
fn create_topic(bootstrap: &str, topic: &str, partitions: i32) -> Result<(), String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        let settings = ConnSettings {
            client_id: "tributary-bench".into(),
            tls: None,
            sasl: None,
            timeout: Duration::from_secs(30),
            max_response: 1 << 20,
        };
        let mut conn = Conn::open(bootstrap, &settings)
            .await
            .map_err(|e| e.to_string())?;
        let v = conn
            .version::<CreateTopicsRequest>(2..=4)
            .map_err(|e| e.to_string())?;
        let req = CreateTopicsRequest::default()
            .with_timeout_ms(30_000)
            .with_topics(vec![
                CreatableTopic::default()
                    .with_name(TopicName(StrBytes::from_string(topic.to_owned())))
                    .with_num_partitions(partitions)
                    .with_replication_factor(1),
            ]);
        let r: CreateTopicsResponse = conn.call_v(&req, v).await.map_err(|e| e.to_string())?;
        for t in &r.topics {
            if t.error_code != 0 && t.error_code != 36 {
                return Err(format!("CreateTopics {topic}: error {}", t.error_code));
            }
        }
        Ok(())
    })
}

struct Run {
    secs: f64,
    cpu: f64,
    rss: u64,
}

fn report(name: &str, r: &Run, lines: usize, mb: f64) {
    println!(
        "{name:<9} {:>10.0} lines/s {:>7.1} MB/s {:>7.2} s {:>6.2} CPU s {:>7.1} MB peak RSS",
        lines as f64 / r.secs,
        mb / r.secs,
        r.secs,
        r.cpu,
        r.rss as f64 / 1e6
    );
}

/// `kcat -P` of `file` into `topic`, with `extra` arguments.
fn run_kcat(
    bootstrap: &str,
    topic: &str,
    extra: &[&str],
    file: &Path,
    codec: &str,
    log: &Path,
) -> Result<Run, String> {
    let start = Instant::now();
    let mut child = Command::new("kcat")
        .args(["-P", "-b", bootstrap, "-t", topic, "-z", codec])
        .args(["-X", "acks=all", "-X", "linger.ms=5"])
        .args(extra)
        .arg("-l")
        .arg(file)
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(log).map_err(|e| e.to_string())?)
        .spawn()
        .map_err(|e| format!("cannot run kcat (apt install kcat): {e}"))?;
    let pid = child.id();
    let (mut cpu, mut rss) = (0.0f64, 0u64);
    let deadline = start + Duration::from_secs(600);
    loop {
        // Sampled until it exits: the last sample is at most 5 ms before its end.
        let (c, r) = usage(pid);
        cpu = cpu.max(c);
        rss = rss.max(r);
        match child.try_wait() {
            Ok(Some(st)) if st.success() => break,
            Ok(Some(st)) => {
                return Err(format!(
                    "kcat exited with {st}: {}",
                    std::fs::read_to_string(log).unwrap_or_default()
                ));
            }
            Ok(None) if Instant::now() > deadline => {
                let _ = child.kill();
                return Err("kcat did not finish within 600 s".into());
            }
            Ok(None) => std::thread::sleep(Duration::from_millis(5)),
            Err(e) => return Err(e.to_string()),
        }
    }
    Ok(Run {
        secs: start.elapsed().as_secs_f64(),
        cpu,
        rss,
    })
}

fn run_agent(env: &Env, bootstrap: &str, file: &Path, codec: &str, lines: usize) -> Run {
    let metrics = free_port();
    let yaml = format!(
        "host: bench\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: agent\n    include: [\"{file}\"]\n    read_from: beginning\noutput:\n  kafka:\n    brokers: [\"{bootstrap}\"]\n    compression: {codec}\nmetrics: {{listen: 127.0.0.1:{metrics}}}\n",
        data = env.path().join("agent-data").display(),
        file = file.display(),
    );
    let start = Instant::now();
    let mut agent = env.start_agent("agent", &yaml);
    let deadline = start + Duration::from_secs(600);
    let (mut cpu, mut rss) = (0.0f64, 0u64);
    loop {
        let acked = agent_metric(metrics, "tributary_agent_records_acked_total");
        let (c, r) = usage(agent.pid());
        cpu = cpu.max(c);
        rss = rss.max(r);
        if acked >= lines as u64 {
            break;
        }
        if Instant::now() > deadline || !agent.is_running() {
            eprintln!(
                "tributary-kafka-output-bench: only {acked} of {lines} lines acknowledged after {:?}\n{}",
                start.elapsed(),
                agent.log_text()
            );
            std::process::exit(1);
        }
        std::thread::sleep(Duration::from_millis(10));
    }
    let secs = start.elapsed().as_secs_f64();
    let (c, r) = usage(agent.pid());
    drop(agent);
    Run {
        secs,
        cpu: cpu.max(c),
        rss: rss.max(r),
    }
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tributary-kafka-output-bench: {e}");
            std::process::exit(2);
        }
    };
    let Some(bin) = Broker::binary() else {
        std::process::exit(2);
    };
    let env = Env::new();
    let file = env.path().join("bench.log");
    // The same lines, each after the key the agent gives them and a tab (kcat -K).
    let keyed = env.path().join("bench-keyed.log");
    let key = "bench:00000000a1b2c3d4";
    let mut bytes = 0u64;
    {
        let mut w = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&file).expect("bench file"),
        );
        let mut k = std::io::BufWriter::with_capacity(
            1 << 20,
            std::fs::File::create(&keyed).expect("bench file"),
        );
        for i in 0..opts.lines {
            let l = access_line(i);
            bytes += l.len() as u64;
            writeln!(w, "{l}").expect("write");
            writeln!(k, "{key}\t{l}").expect("write");
        }
        w.flush().expect("flush");
        k.flush().expect("flush");
    }
    let mut broker = Broker::start(&bin, &env.path().join("noida"), free_port());
    let bootstrap = broker.bootstrap();
    for topic in ["kcat", "kcat-keyed", "agent"] {
        if let Err(e) = create_topic(&bootstrap, topic, opts.partitions) {
            eprintln!("tributary-kafka-output-bench: {e}");
            std::process::exit(1);
        }
    }
    // Plain lines; then the same lines with what the agent's records carry: the
    // source's key and four headers (host, source and the two exactly-once
    // headers; kcat's are the same on every record, the agent's offsets differ).
    let source = format!("source={}", file.display());
    let kcat_runs = [
        ("kcat", vec![]),
        (
            "kcat-keyed",
            vec![
                "-K",
                "\t",
                "-H",
                "host=bench",
                "-H",
                &source,
                "-H",
                "tributary.source_id=2712847316",
                "-H",
                "tributary.offset=74000000",
            ],
        ),
    ];
    let mut kcat = Vec::new();
    for (topic, extra) in &kcat_runs {
        let input = if extra.is_empty() { &file } else { &keyed };
        match run_kcat(
            &bootstrap,
            topic,
            extra,
            input,
            &opts.compression,
            &env.path().join(format!("{topic}.log")),
        ) {
            Ok(r) => kcat.push(r),
            Err(e) => {
                eprintln!("tributary-kafka-output-bench: {e}");
                std::process::exit(1);
            }
        }
    }
    let agent = run_agent(&env, &bootstrap, &file, &opts.compression, opts.lines);
    broker.stop();
    let mb = bytes as f64 / 1e6;
    println!("machine:  {}", machine());
    println!(
        "workload: {} lines, {mb:.1} MB ({:.0} bytes/line), {} compression, acks=all, {} partitions, broker noida-db on 127.0.0.1",
        opts.lines,
        bytes as f64 / opts.lines as f64,
        opts.compression,
        opts.partitions
    );
    report("kcat -P", &kcat[0], opts.lines, mb);
    report("kcat -K -H", &kcat[1], opts.lines, mb);
    report("agent", &agent, opts.lines, mb);
}
