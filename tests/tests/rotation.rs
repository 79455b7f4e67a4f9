//! Every logrotate mode, driven by the real `logrotate` (Debian package), with the
//! rotated names inside the globs: `copytruncate` and `rotate 4`, `create` with
//! `compress` and `delaycompress`, and `dateext`, under steady writes while the agent and the
//! collector are killed with SIGKILL at random moments. Every line must be stored
//! exactly once: rotated copies and compressed rotations are recognized as the
//! content they hold and read only for their unread tail.
//!
//! The seed is printed; replay with `TRIBUTARY_SEED=<seed> cargo test --release
//! --test rotation`.

use std::collections::HashMap;
use std::io::Write;
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::time::{Duration, Instant};

use tributary_e2e::{Collector, Env, Proc, free_port};

/// splitmix64: small and deterministic.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9e37_79b9_7f4a_7c15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xbf58_476d_1ce4_e5b9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94d0_49bb_1331_11eb);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
}

fn seed() -> u64 {
    let seed = std::env::var("TRIBUTARY_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| {
            std::time::SystemTime::now()
                .duration_since(std::time::UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(1)
        });
    eprintln!("rotation: TRIBUTARY_SEED={seed}");
    seed
}

/// The logrotate mode of each stream.
const STREAMS: [(&str, &str); 3] = [
    ("ct", "copytruncate\n  rotate 4\n"),
    ("cr", "create\n  rotate 4\n  compress\n  delaycompress\n"),
    (
        "de",
        "create\n  rotate 4\n  dateext\n  dateformat -%Y%m%d-%H%M%S\n",
    ),
];

/// The first line of every `ct.log` content: only positions past it tell the
/// contents (and their copies) apart.
const HEADER: &str = "ct header: the same first line after every truncation";

fn line(name: &str, seq: u64) -> String {
    format!("{name} seq={seq:09} {}", "x".repeat((seq % 89) as usize))
}

fn append(path: &Path, text: &str) {
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .and_then(|mut f| f.write_all(text.as_bytes()))
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
}

/// The rotated files of `name`, oldest first (the one logrotate deletes next when
/// there are 4).
fn rotated(dir: &Path, name: &str) -> Vec<PathBuf> {
    let base = format!("{name}.log");
    let mut out: Vec<(u64, PathBuf)> = std::fs::read_dir(dir)
        .map(|d| {
            d.flatten()
                .filter_map(|e| {
                    let n = e.file_name().to_string_lossy().into_owned();
                    let rest = n.strip_prefix(&base)?;
                    if rest.is_empty() {
                        return None;
                    }
                    // .1 .2.gz … (higher is older) or -YYYYmmdd-HHMMSS (lower is older)
                    let rank = match rest.strip_prefix('.') {
                        Some(r) => u64::MAX - r.trim_end_matches(".gz").parse::<u64>().ok()?,
                        None => rest.trim_start_matches('-').replace('-', "").parse().ok()?,
                    };
                    Some((rank, e.path()))
                })
                .collect()
        })
        .unwrap_or_default();
    out.sort();
    out.into_iter().map(|(_, p)| p).collect()
}

/// Whether the agent's saved checkpoints show `path` read to its end (its
/// decompressed size for a compressed file).
fn read_to_end(path: &Path, checkpoints: &Path) -> bool {
    let Ok(meta) = std::fs::metadata(path) else {
        return true;
    };
    let Ok(v) = std::fs::read_to_string(checkpoints)
        .map_err(|_| ())
        .and_then(|t| serde_json::from_str::<serde_json::Value>(&t).map_err(|_| ()))
    else {
        return false;
    };
    // Inode numbers are reused: the birth time tells the files apart.
    let btime = meta
        .created()
        .ok()
        .and_then(|t| t.duration_since(std::time::UNIX_EPOCH).ok())
        .map(|d| d.as_nanos() as i64);
    v["files"].as_array().into_iter().flatten().any(|e| {
        let offset = e["offset"].as_u64().unwrap_or(0);
        e["mark"]["ino"].as_u64() == Some(meta.ino())
            && e["mark"]["btime"].as_i64() == btime
            && match e["total"].as_u64() {
                Some(total) => offset >= total,
                None => offset >= meta.len(),
            }
    })
}

/// Writes numbered lines to the three streams and runs logrotate on one of them
/// now and then, until stopped. A rotation that would delete a rotated file waits
/// (up to 10 s) until the agent has read that file: data deleted before anyone read
/// it is gone for every shipper. Returns lines written and rotations done per stream.
fn writer(
    dir: PathBuf,
    checkpoints: PathBuf,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
) -> ([u64; 3], [u32; 3], u32) {
    let mut written = [0u64; 3];
    let mut rotations = [0u32; 3];
    let mut skipped = 0;
    let mut last_dateext = Instant::now() - Duration::from_secs(10);
    append(&dir.join("ct.log"), &format!("{HEADER}\n"));
    while !stop.load(Ordering::Relaxed) {
        for (i, (name, _)) in STREAMS.iter().enumerate() {
            let n = 1 + rng.below(150);
            let mut text = String::new();
            for seq in written[i]..written[i] + n {
                text.push_str(&line(name, seq));
                text.push('\n');
            }
            append(&dir.join(format!("{name}.log")), &text);
            written[i] += n;
        }
        let pick = rng.below(30) as usize;
        if pick < 3 {
            let name = STREAMS[pick].0;
            // dateext names have a one-second resolution.
            let ready = pick != 2 || last_dateext.elapsed() > Duration::from_millis(1100);
            let old = rotated(&dir, name);
            let deletes = (old.len() >= 4).then(|| old[0].clone());
            let safe = deletes.as_ref().is_none_or(|p| {
                let deadline = Instant::now() + Duration::from_secs(10);
                while !read_to_end(p, &checkpoints) {
                    if Instant::now() > deadline {
                        return false;
                    }
                    std::thread::sleep(Duration::from_millis(50));
                }
                true
            });
            if ready && safe {
                let conf = dir.join(format!("../{name}.conf"));
                let state = dir.join(format!("../{name}.state"));
                let out = Command::new("logrotate")
                    .arg("-s")
                    .arg(&state)
                    .arg("-f")
                    .arg(&conf)
                    .output()
                    .expect("logrotate (Debian package logrotate; the CI installs it)");
                assert!(
                    out.status.success(),
                    "logrotate {name}: {}",
                    String::from_utf8_lossy(&out.stderr)
                );
                rotations[pick] += 1;
                if pick == 0 {
                    append(&dir.join("ct.log"), &format!("{HEADER}\n"));
                }
                if pick == 2 {
                    last_dateext = Instant::now();
                }
            } else if !safe {
                skipped += 1;
            }
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(25)));
    }
    (written, rotations, skipped)
}

struct Cluster<'a> {
    env: &'a Env,
    ingest: u16,
    api: u16,
    agent_yaml: String,
    collector: Option<Collector>,
    agent: Option<Proc>,
    agent_starts: u32,
}

impl Cluster<'_> {
    fn start_collector(&mut self) {
        self.collector = Some(self.env.start_collector_on(
            self.ingest,
            self.api,
            "topics:\n  default: {partitions: 3, segment_bytes: 1MiB}\n",
        ));
    }

    fn start_agent(&mut self) {
        self.agent_starts += 1;
        self.agent = Some(
            self.env
                .start_agent(&format!("agent-{}", self.agent_starts), &self.agent_yaml),
        );
    }
}

#[test]
fn logrotate_modes_under_sigkill_store_every_line_exactly_once() {
    let mut rng = Rng(seed());
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for (name, mode) in STREAMS {
        std::fs::write(
            env.path().join(format!("{name}.conf")),
            format!(
                "{}/{name}.log {{\n  {mode}  missingok\n}}\n",
                logs.display()
            ),
        )
        .unwrap();
    }
    // A damaged compressed file the globs match: logged and skipped, harming nothing.
    let junk = logs.join("junk.log.1.gz");
    std::fs::write(&junk, b"\x1f\x8b\x08\x00 not really gzip").unwrap();
    // Written long ago, not one being written right now.
    std::fs::File::options()
        .write(true)
        .open(&junk)
        .and_then(|f| f.set_modified(std::time::SystemTime::now() - Duration::from_secs(3600)))
        .unwrap();
    let mut cluster = Cluster {
        env: &env,
        ingest: free_port(),
        api: free_port(),
        agent_yaml: String::new(),
        collector: None,
        agent: None,
        agent_starts: 0,
    };
    cluster.start_collector();
    cluster.agent_yaml = format!(
        "host: rotation\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log*\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(cluster.collector.as_ref().unwrap(), "lz4"),
    );
    cluster.start_agent();

    let stop = Arc::new(AtomicBool::new(false));
    let w = {
        let (dir, stop) = (logs.clone(), stop.clone());
        let checkpoints = env.path().join("agent-data/checkpoints.json");
        let rng = Rng(rng.next());
        std::thread::spawn(move || writer(dir, checkpoints, stop, rng))
    };
    let chaos_until = Instant::now() + Duration::from_secs(25);
    let mut kills = (0, 0);
    while Instant::now() < chaos_until {
        std::thread::sleep(Duration::from_millis(400 + rng.below(1600)));
        if std::env::var("TRIBUTARY_CHAOS").as_deref() == Ok("0") {
            continue;
        }
        if rng.below(2) == 0 {
            if let Some(mut a) = cluster.agent.take() {
                a.kill();
            }
            kills.0 += 1;
            std::thread::sleep(Duration::from_millis(rng.below(500)));
            cluster.start_agent();
        } else {
            if let Some(mut c) = cluster.collector.take() {
                c.proc.kill();
            }
            kills.1 += 1;
            std::thread::sleep(Duration::from_millis(rng.below(500)));
            cluster.start_collector();
        }
    }
    stop.store(true, Ordering::Relaxed);
    let (written, rotations, skipped) = w.join().expect("writer");
    let headers = u64::from(rotations[0]) + 1;
    let total: u64 = written.iter().sum::<u64>() + headers;
    eprintln!(
        "rotation: wrote {written:?} lines; logrotate runs {rotations:?} (ct, cr, de), {skipped} put off; killed the agent {} and the collector {} times",
        kills.0, kills.1
    );
    assert!(
        rotations.iter().all(|r| *r >= 2),
        "too few rotations to test anything: {rotations:?}"
    );

    let agent = cluster.agent.take().expect("agent");
    let collector = cluster.collector.as_ref().expect("collector");
    let got = collector.settle("app", total, Duration::from_secs(60));
    // Give duplicates, if any, a moment to arrive too.
    std::thread::sleep(Duration::from_secs(2));
    let records = collector.read_all("app");
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for r in &records {
        *seen.entry(r.message.as_str()).or_default() += 1;
    }
    let header_count = seen.remove(HEADER).unwrap_or(0);
    let (mut missing, mut doubled) = (Vec::new(), Vec::new());
    for (i, (name, _)) in STREAMS.iter().enumerate() {
        for seq in 0..written[i] {
            match seen.remove(line(name, seq).as_str()) {
                Some(1) => {}
                Some(n) => doubled.push(format!("{name} {seq} ×{n}")),
                None => missing.push(format!("{name} {seq}")),
            }
        }
    }
    for d in doubled.iter().chain(&missing).take(4) {
        let mut parts = d.split(' ');
        let (name, seq) = (parts.next().unwrap_or(""), parts.next().unwrap_or("0"));
        let seq: u64 = seq.parse().unwrap_or(0);
        for near in [seq.saturating_sub(1), seq, seq + 1] {
            let text = line(name, near);
            for r in records.iter().filter(|r| r.message == text) {
                eprintln!(
                    "rotation: {name} {near}: partition {} offset {} source {} at {}",
                    r.partition, r.offset, r.source, r.json["timestamp"]
                );
            }
        }
    }
    let log = agent.log_text();
    assert!(
        log.contains("junk.log.1.gz") && log.contains("not a complete gzip file"),
        "the damaged file is named in the agent's log"
    );
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{got} of {total} records; missing {} (first {:?}); stored twice {} (first {:?})",
        missing.len(),
        missing.iter().take(5).collect::<Vec<_>>(),
        doubled.len(),
        doubled.iter().take(5).collect::<Vec<_>>()
    );
    assert!(
        seen.is_empty(),
        "unexpected records: {:?}",
        seen.keys().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        u64::from(header_count),
        headers,
        "one header per ct.log content"
    );
    assert_eq!(records.len() as u64, total);
    drop(agent);
}
