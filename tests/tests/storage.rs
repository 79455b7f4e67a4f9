//! Storage recovery with real processes: the collector (`fsync: always`) is killed
//! with SIGKILL while an agent ships lines, the tail of its newest segment is
//! damaged on disk, and the restarted collector must cut exactly the damaged tail
//! (logging the file and byte), keep everything before it, and end up holding every
//! line once, in order, after the agent re-sends what was not acknowledged.
//!
//! Two kinds of damage, one per restart:
//! - a torn write: the first half of a batch that was being written when the
//!   process died (a copy of a stored batch, renumbered to the next offset, so its
//!   header is sane and only the missing half gives it away);
//! - garbage bytes after the last batch.
//!
//! Damage is only ever added after the last complete batch: cutting a stored batch
//! would destroy records that may have been acknowledged, which no guarantee covers.
//! The agent is stopped (SIGSTOP) while the collector is down, so the end offset
//! after recovery can be checked exactly before it sends again (SIGCONT).

use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::Duration;

use tributary_e2e::{Collector, Env, Proc, append_lines, free_port};

const FILES: [&str; 3] = ["api", "worker", "audit"];
/// Most lines the writer puts into each file: bounds the test's size.
const MAX_LINES_PER_FILE: u64 = 150_000;

/// Batch layout (tributary-store `batch.rs`): u64 base_offset, u32 length (bytes
/// after this field), u32 crc32c, u8 version, u8 attributes, u32 record_count, ...
const LENGTH_PREFIX: usize = 12;
const HEADER_LEN: usize = 38;

fn line(file: &str, seq: u64) -> String {
    format!(
        "{file} seq={seq:08} level=info msg=\"request served\" path=/api/v1/items/{} took_ms={}",
        seq * 7919 % 100_000,
        seq % 997
    )
}

/// Appends numbered lines to each file until stopped (or the cap); `written[i]` is
/// how many lines file `i` has, always complete lines.
fn writer(dir: PathBuf, stop: Arc<AtomicBool>, written: Arc<[AtomicU64; 3]>) {
    while !stop.load(Ordering::Relaxed) {
        for (i, name) in FILES.iter().enumerate() {
            let start = written[i].load(Ordering::Relaxed);
            let end = (start + 40).min(MAX_LINES_PER_FILE);
            if end > start {
                append_lines(
                    &dir.join(format!("{name}.log")),
                    (start..end).map(|s| line(name, s)),
                );
                written[i].store(end, Ordering::Relaxed);
            }
        }
        std::thread::sleep(Duration::from_millis(5));
    }
}

/// Send a signal to one of our own child processes, by PID.
fn signal(proc: &Proc, sig: &str) {
    let status = Command::new("kill")
        .args([sig, &proc.pid().to_string()])
        .status()
        .expect("run kill");
    assert!(status.success(), "kill {sig} {}", proc.pid());
}

/// The complete batches of a segment file: (position, base offset, record count,
/// total length). Stops at the first batch that does not fit (a torn write).
fn batches(log: &[u8]) -> Vec<(usize, u64, u64, usize)> {
    let mut out = Vec::new();
    let mut pos = 0;
    while pos + HEADER_LEN <= log.len() {
        let base = u64::from_le_bytes(log[pos..pos + 8].try_into().unwrap());
        let length = u32::from_le_bytes(log[pos + 8..pos + 12].try_into().unwrap()) as usize;
        let count = u32::from_le_bytes(log[pos + 18..pos + 22].try_into().unwrap());
        let total = LENGTH_PREFIX + length;
        if length < HEADER_LEN - LENGTH_PREFIX || pos + total > log.len() {
            break;
        }
        out.push((pos, base, u64::from(count), total));
        pos += total;
    }
    out
}

/// Segment files of the single partition of `app`, oldest first.
fn segments(data: &Path) -> Vec<PathBuf> {
    let dir = data.join("topics/app/0");
    let mut logs: Vec<PathBuf> = std::fs::read_dir(&dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|x| x == "log"))
        .collect();
    logs.sort();
    assert!(!logs.is_empty(), "no segment in {}", dir.display());
    logs
}

enum Damage {
    /// The first half of one more batch.
    TornBatch,
    /// Bytes that are no batch at all.
    Garbage,
}

/// Damage the newest segment after its last complete batch. Returns the segment, the
/// byte position where its valid data ends and the offset recovery must resume at.
fn damage_newest_segment(data: &Path, damage: Damage) -> (PathBuf, u64, u64) {
    let segs = segments(data);
    let newest = segs.last().expect("segment").clone();
    let mut log = std::fs::read(&newest).expect("read segment");
    let base: u64 = newest
        .file_stem()
        .and_then(|s| s.to_str())
        .and_then(|s| s.parse().ok())
        .expect("segment named by its base offset");
    let found = batches(&log);
    let valid_end = found.last().map_or(0, |&(pos, _, _, total)| pos + total);
    let next_offset = found.last().map_or(base, |&(_, b, n, _)| b + n);
    // A torn batch the SIGKILL itself may have left is cut here too, so that what
    // recovery must find is known exactly.
    log.truncate(valid_end);
    match damage {
        Damage::TornBatch => {
            // The last complete batch of the newest non-empty segment, renumbered to
            // the next offset (the base offset is outside the CRC), cut in half.
            let mut copy = segs
                .iter()
                .rev()
                .find_map(|p| {
                    let bytes = std::fs::read(p).expect("read segment");
                    let &(pos, _, _, total) = batches(&bytes).last()?;
                    Some(bytes[pos..pos + total].to_vec())
                })
                .expect("a stored batch to copy");
            copy[0..8].copy_from_slice(&next_offset.to_le_bytes());
            copy.truncate(copy.len() / 2);
            log.extend_from_slice(&copy);
        }
        Damage::Garbage => {
            let mut x = 0x2545_f491_4f6c_dd1du64;
            for _ in 0..3000 {
                x ^= x << 13;
                x ^= x >> 7;
                x ^= x << 17;
                log.push(x as u8);
            }
        }
    }
    std::fs::write(&newest, &log).expect("write damaged segment");
    (newest, valid_end as u64, next_offset)
}

struct Cluster<'a> {
    env: &'a Env,
    ingest: u16,
    api: u16,
    collector: Option<Collector>,
}

impl Cluster<'_> {
    fn start_collector(&mut self) -> &Collector {
        self.collector = Some(self.env.start_collector_on(
            self.ingest,
            self.api,
            "topics:\n  default: {partitions: 1, segment_bytes: 256KiB}\ndurability:\n  fsync: always\n",
        ));
        self.collector()
    }

    fn collector(&self) -> &Collector {
        self.collector.as_ref().expect("collector running")
    }

    /// SIGKILL the collector while the agent ships, damage the newest segment with the
    /// agent stopped, restart, and check what recovery kept and what it logged.
    fn crash_and_damage(&mut self, agent: &Proc, damage: Damage, records_before: u64) {
        let c = self.collector();
        c.wait_for_count("app", records_before, Duration::from_secs(60), agent);
        self.collector.take().expect("collector").proc.kill();
        signal(agent, "-STOP");

        let data = self.env.path().join("collector-data");
        let (segment, position, offset) = damage_newest_segment(&data, damage);
        let c = self.start_collector();
        let end = c.end_offsets("app").get(&0).copied();
        assert_eq!(
            end,
            Some(offset),
            "recovery must keep every complete batch and nothing of the damaged tail"
        );
        let len = std::fs::metadata(&segment).expect("segment").len();
        assert_eq!(len, position, "the damaged tail is cut off the file");
        let log = c.proc.log_text();
        let name = segment.file_name().and_then(|n| n.to_str()).expect("name");
        let warning = log.lines().find(|l| {
            l.contains("WARN")
                && l.contains(name)
                && l.split(|ch: char| !ch.is_ascii_digit())
                    .any(|n| n == position.to_string())
        });
        let Some(warning) = warning else {
            panic!("no warning naming {name} and byte {position} in the collector log:\n{log}");
        };
        eprintln!("storage: recovered {name} at byte {position}, offset {offset}: {warning}");
        signal(agent, "-CONT");
    }
}

#[test]
fn damaged_segment_tail_after_sigkill_is_cut_and_every_line_is_stored_once() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let mut cluster = Cluster {
        env: &env,
        ingest: free_port(),
        api: free_port(),
        collector: None,
    };
    cluster.start_collector();
    let yaml = format!(
        "host: storage-e2e\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(cluster.collector(), "lz4"),
    );
    let agent = env.start_agent("agent", &yaml);

    let stop = Arc::new(AtomicBool::new(false));
    let written: Arc<[AtomicU64; 3]> = Arc::new(Default::default());
    let w = {
        let (dir, stop, written) = (logs.clone(), stop.clone(), written.clone());
        std::thread::spawn(move || writer(dir, stop, written))
    };

    cluster.crash_and_damage(&agent, Damage::TornBatch, 5_000);
    let now = cluster.collector().count("app");
    cluster.crash_and_damage(&agent, Damage::Garbage, now + 5_000);

    // Let the agent ship for a moment after the last restart, then stop writing.
    let now = cluster.collector().count("app");
    cluster
        .collector()
        .wait_for_count("app", now + 2_000, Duration::from_secs(60), &agent);
    stop.store(true, Ordering::Relaxed);
    w.join().expect("writer");
    let counts: Vec<u64> = written.iter().map(|c| c.load(Ordering::Relaxed)).collect();
    let total: u64 = counts.iter().sum();
    eprintln!("storage: wrote {counts:?} lines");

    let c = cluster.collector();
    let got = c.settle("app", total, Duration::from_secs(120));
    let records = c.read_all("app");
    assert!(got >= total, "only {got} of {total} records arrived");

    // Every line of every file once, in order (one partition: offset order).
    for (i, name) in FILES.iter().enumerate() {
        let source = logs.join(format!("{name}.log")).display().to_string();
        let msgs: Vec<&str> = records
            .iter()
            .filter(|r| r.source == source)
            .map(|r| r.message.as_str())
            .collect();
        let first_bad =
            (0..counts[i]).find(|&s| msgs.get(s as usize) != Some(&line(name, s).as_str()));
        assert!(
            first_bad.is_none() && msgs.len() as u64 == counts[i],
            "{name}: {} records for {} lines; first mismatch at seq {first_bad:?}: {:?}",
            msgs.len(),
            counts[i],
            first_bad.and_then(|s| msgs.get(s as usize))
        );
    }
    assert_eq!(records.len() as u64, total, "no records besides the lines");
    drop(agent);
}
