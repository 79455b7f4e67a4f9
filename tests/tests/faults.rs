//! Fault tests for the exactly-once guarantee of file inputs: steady writes while
//! files rotate (rename-and-create and copytruncate) and the agent and the collector
//! are killed with SIGKILL at random moments and restarted. Each test ends by
//! checking that every written line is stored exactly once.
//!
//! The random moments come from a seed printed at the start; replay a failure with
//! `TRIBUTARY_SEED=<seed> cargo test --release --test faults`.

use std::collections::HashMap;
use std::io::Write;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
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
    eprintln!("faults: TRIBUTARY_SEED={seed}");
    seed
}

fn append(path: &Path, text: &str) {
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(text.as_bytes()).expect("append");
}

/// The first line of `ct.log` after every truncation.
const CT_HEADER: &str = "ct header: the same first line after every copytruncate";

/// Writes numbered lines to `rot.log` (rotated by rename-and-create) and `ct.log`
/// (rotated by copytruncate), and plain `steady.log`, until stopped. Returns, per
/// stream, how many lines were written.
fn writer(
    dir: PathBuf,
    checkpoints: PathBuf,
    stop: Arc<AtomicBool>,
    mut rng: Rng,
    written: Arc<[AtomicU64; 3]>,
) -> (u32, u32) {
    let names = ["rot", "ct", "steady"];
    let mut rotations = 0;
    let mut truncations = 0;
    append(&dir.join("ct.log"), &format!("{CT_HEADER}\n"));
    while !stop.load(Ordering::Relaxed) {
        for (i, name) in names.iter().enumerate() {
            let n = 1 + rng.below(200);
            let start = written[i].load(Ordering::Relaxed);
            let mut text = String::new();
            for seq in start..start + n {
                text.push_str(&format!(
                    "{name} seq={seq:09} {}\n",
                    "x".repeat((seq % 97) as usize)
                ));
            }
            append(&dir.join(format!("{name}.log")), &text);
            written[i].store(start + n, Ordering::Relaxed);
        }
        match rng.below(40) {
            0 => {
                // Rename-and-create: the old file keeps its identity under a new name.
                rotations += 1;
                let _ = std::fs::rename(
                    dir.join("rot.log"),
                    dir.join(format!("rot.log.{rotations}")),
                );
            }
            1 if wait_checkpointed(&dir.join("ct.log"), &checkpoints, Duration::from_secs(3)) => {
                // copytruncate, as logrotate does it: copy aside (excluded), then
                // truncate. Lines the agent has not read when the file is truncated
                // exist only in the copy (the inherent race of copytruncate), so the
                // test truncates once the agent's checkpoint covers the whole file.
                let src = dir.join("ct.log");
                let _ = std::fs::copy(&src, dir.join(format!("ct.log.{rotations}.gz")));
                let _ = std::fs::OpenOptions::new()
                    .write(true)
                    .open(&src)
                    .and_then(|f| f.set_len(0));
                // Every content starts with the same line, like a CSV header: only
                // the truncation generation tells the contents apart.
                append(&src, &format!("{CT_HEADER}\n"));
                truncations += 1;
            }
            _ => {}
        }
        std::thread::sleep(Duration::from_millis(5 + rng.below(20)));
    }
    (rotations, truncations)
}

/// Wait until the agent's checkpoint covers all of `path`, or `timeout` passes.
fn wait_checkpointed(path: &Path, checkpoints: &Path, timeout: Duration) -> bool {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if checkpointed_to_end(path, checkpoints) {
            return true;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
    false
}

/// Whether the agent's saved checkpoint covers all of `path`: an entry for its inode
/// whose fingerprint matches the file's current first bytes (not an entry of the
/// content before an earlier truncation) and whose offset is the file's size.
fn checkpointed_to_end(path: &Path, checkpoints: &Path) -> bool {
    use std::os::unix::fs::MetadataExt;
    let Ok(data) = std::fs::read(path) else {
        return false;
    };
    let Ok(meta) = std::fs::metadata(path) else {
        return false;
    };
    let Ok(text) = std::fs::read_to_string(checkpoints) else {
        return false;
    };
    let Ok(v) = serde_json::from_str::<serde_json::Value>(&text) else {
        return false;
    };
    let fnv = |b: &[u8]| {
        b.iter().fold(0xcbf2_9ce4_8422_2325u64, |h, &x| {
            (h ^ u64::from(x)).wrapping_mul(0x100_0000_01b3)
        })
    };
    // The entry of the file's latest generation (older ones can share the first line).
    let latest = v["files"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|e| {
            let fp_len = e["mark"]["fp_len"].as_u64().unwrap_or(0) as usize;
            e["mark"]["ino"].as_u64() == Some(meta.ino())
                && fp_len > 0
                && fp_len <= data.len()
                && e["mark"]["fp_hash"].as_u64() == Some(fnv(&data[..fp_len]))
        })
        .max_by_key(|e| e["mark"]["generation"].as_u64());
    data.len() as u64 == meta.len()
        && latest.is_some_and(|e| e["offset"].as_u64() == Some(data.len() as u64))
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
            "topics:\n  default: {partitions: 2, segment_bytes: 1MiB}\n",
        ));
    }

    fn start_agent(&mut self) {
        self.agent_starts += 1;
        self.agent = Some(
            self.env
                .start_agent(&format!("agent-{}", self.agent_starts), &self.agent_yaml),
        );
    }

    fn collector(&self) -> &Collector {
        self.collector.as_ref().expect("collector running")
    }
}

#[test]
fn sigkill_of_agent_and_collector_during_rotation_loses_and_duplicates_nothing() {
    let mut rng = Rng(seed());
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let ingest = free_port();
    let api = free_port();
    let mut cluster = Cluster {
        env: &env,
        ingest,
        api,
        agent_yaml: String::new(),
        collector: None,
        agent: None,
        agent_starts: 0,
    };
    cluster.start_collector();
    cluster.agent_yaml = format!(
        "host: chaos\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log\", \"{logs}/*.log.*\"]\n    exclude: [\"*.gz\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(cluster.collector(), "lz4"),
    );
    cluster.start_agent();

    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<[AtomicU64; 3]> =
        Arc::new([AtomicU64::new(0), AtomicU64::new(0), AtomicU64::new(0)]);
    let w = {
        let (dir, stop, written) = (logs.clone(), stop.clone(), written.clone());
        let checkpoints = env.path().join("agent-data/checkpoints.json");
        let rng = Rng(rng.next());
        std::thread::spawn(move || writer(dir, checkpoints, stop, rng, written))
    };

    // Kill one of them with SIGKILL at random moments, restart it, repeat.
    let chaos_until = Instant::now() + Duration::from_secs(20);
    let mut kills = (0, 0);
    while Instant::now() < chaos_until {
        std::thread::sleep(Duration::from_millis(300 + rng.below(1500)));
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
    let (renames, truncations) = w.join().expect("writer");
    let counts: Vec<u64> = written.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    eprintln!(
        "faults: wrote {counts:?} lines, {renames} renames, {truncations} copytruncates; killed the agent {} and the collector {} times",
        kills.0, kills.1
    );

    let agent = cluster.agent.take().expect("agent");
    let collector = cluster.collector();
    let got = collector.settle(
        "app",
        total + u64::from(truncations) + 1,
        Duration::from_secs(60),
    );
    if got < total {
        eprintln!("faults: only {got} of {total} records arrived");
    }
    let records = collector.read_all("app");

    let mut seen: HashMap<String, u32> = HashMap::new();
    for r in &records {
        *seen.entry(r.message.clone()).or_default() += 1;
    }
    let headers = seen.remove(CT_HEADER).unwrap_or(0);
    let mut missing = Vec::new();
    let mut doubled = Vec::new();
    for (i, name) in ["rot", "ct", "steady"].iter().enumerate() {
        for seq in 0..counts[i] {
            let line = format!("{name} seq={seq:09} {}", "x".repeat((seq % 97) as usize));
            match seen.remove(&line) {
                Some(1) => {}
                Some(_) => doubled.push(format!("{name} seq={seq}")),
                None => missing.push(format!("{name} seq={seq}")),
            }
        }
    }
    if !missing.is_empty() || !doubled.is_empty() {
        for d in doubled.iter().take(3) {
            let prefix = format!("{d:0>1}");
            for r in records
                .iter()
                .filter(|r| r.message.starts_with(&prefix[..prefix.len()]))
            {
                if r.message.split(' ').take(2).collect::<Vec<_>>().join(" ") == *d {
                    eprintln!(
                        "faults: duplicate {d}: partition {} offset {} source {}",
                        r.partition, r.offset, r.source
                    );
                }
            }
        }
        eprintln!(
            "faults: missing {}; stored twice {}",
            ranges(&missing),
            ranges(&doubled)
        );
    }
    assert!(
        missing.is_empty() && doubled.is_empty(),
        "{} lines missing, {} stored twice",
        missing.len(),
        doubled.len()
    );
    assert!(
        seen.is_empty(),
        "unexpected records: {:?}",
        seen.keys().take(5).collect::<Vec<_>>()
    );
    assert_eq!(
        u64::from(headers),
        u64::from(truncations) + 1,
        "one header per ct.log content"
    );
    assert_eq!(records.len() as u64, total + u64::from(headers));
    drop(agent);
}

/// "rot seq=5..9, ct seq=100..120" from a sorted list of "name seq=N".
fn ranges(missing: &[String]) -> String {
    let mut out: Vec<String> = Vec::new();
    let mut cur: Option<(String, u64, u64)> = None;
    for m in missing {
        let (name, seq) = m.split_once(" seq=").unwrap_or((m, "0"));
        let seq: u64 = seq.parse().unwrap_or(0);
        match &mut cur {
            Some((n, _, end)) if n == name && *end + 1 == seq => *end = seq,
            _ => {
                if let Some((n, a, b)) = cur.take() {
                    out.push(format!("{n} {a}..={b}"));
                }
                cur = Some((name.to_owned(), seq, seq));
            }
        }
    }
    if let Some((n, a, b)) = cur {
        out.push(format!("{n} {a}..={b}"));
    }
    out.join(", ")
}
