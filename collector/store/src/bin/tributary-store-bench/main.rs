//! `tributary-store-bench`: what the storage engine sustains on this machine's disk,
//! next to what `dd` gets on the same disk in the same run.
//!
//! ```text
//! cargo run --release -p tributary-store --bin tributary-store-bench -- \
//!     [--dir DIR] [--size-gb 2] [--threads 8] [--lines FILE] [--quick] [--keep]
//! ```
//! Everything happens in a fresh directory `DIR/tributary-store-bench.<pid>` (DIR
//! defaults to the current directory, so the disk measured is the one you run it
//! on), removed at the end unless `--keep`. Figures:
//! - append MB/s, batches/s and per-batch latency with `fsync: always` (each append
//!   followed by `Partition::sync_to` of its end, as the collector does before it
//!   acks), single-threaded and with `--threads` writers sharing group commits, and
//!   with `fsync: interval` (no fsync per append; a flusher thread syncs every second
//!   and the final sync is inside the timing), for 1 MiB and 16 KiB batches;
//! - sequential read MB/s of segment and of the records read (message and fields,
//!   uncompressed; `Partition::read` from offset 0, page cache warm),
//!   offset lookup latency (random offset, read one record) and timestamp lookup
//!   latency (`Partition::offset_for_timestamp` of a random time, answer checked) on
//!   a partition of `--size-gb` GB filled with 1 MiB batches, one record per ms;
//! - `dd if=/dev/zero bs=1M count=1024 conv=fdatasync` in the same directory, before
//!   and after the appends; ratios are taken against the faster of the two.
//!
//! Payloads are real record blocks (`tributary_common::record::BlockWriter`): one
//! block per batch from one file source, as the agent sends them, of realistic log
//! lines (web access, JSON application, syslog and Java-style lines) or of the lines
//! of `--lines FILE`. Each writer re-stamps a few prebuilt batches in place (next
//! source offsets and timestamps) so that building payloads costs nothing in the
//! timing, while deduplication sees an ordinary growing file.
//!
//! Every phase stops at its byte target or its time cap, whichever comes first, so
//! a run is bounded in time. `--quick` is a smoke run: 64 MB per phase and for dd.

mod payload;

use std::error::Error;
use std::fs;
use std::io::Read;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use tributary_store::{Partition, Store, StoreOptions, TopicConfig};

use payload::{Lines, Rng, Source};

type Res<T> = Result<T, Box<dyn Error + Send + Sync>>;

const MIB: usize = 1 << 20;
const KIB: usize = 1 << 10;
/// Throughput unit: 10^6 bytes, as `dd` reports it.
const MB: f64 = 1e6;
/// The collector's default segment size.
const SEGMENT_BYTES: u64 = 128 << 20;
/// What the HTTP API asks of one read (`max` and its byte cap).
const READ_MAX_RECORDS: usize = 10_000;
const READ_MAX_BYTES: usize = 8 << 20;

const USAGE: &str = "usage: tributary-store-bench [--dir DIR] [--size-gb N] [--threads N] [--lines FILE] [--quick] [--reads-only] [--keep]
  --dir DIR      directory on the disk to measure (default: the current directory);
                 the bench works in DIR/tributary-store-bench.<pid> and removes it
  --size-gb N    size of the partition for reads and lookups, in GB (default 2)
  --threads N    writers sharing group commits in the group-commit rows (default 8)
  --lines FILE   build payloads from the lines of FILE instead of generated lines
  --quick        smoke run: 64 MB per phase, dd of 64 MiB
  --reads-only   skip dd and the write rows: fill the partition, then read and look up
  --keep         keep the work directory";

struct Args {
    dir: PathBuf,
    size_bytes: u64,
    threads: usize,
    lines: Option<PathBuf>,
    quick: bool,
    reads_only: bool,
    keep: bool,
}

fn parse_args() -> Result<Args, String> {
    let mut a = Args {
        dir: PathBuf::from("."),
        size_bytes: 2_000_000_000,
        threads: 8,
        lines: None,
        quick: false,
        reads_only: false,
        keep: false,
    };
    let mut size_given = false;
    let mut it = std::env::args().skip(1);
    while let Some(arg) = it.next() {
        let mut val = || it.next().ok_or_else(|| format!("{arg} needs a value"));
        match arg.as_str() {
            "--dir" => a.dir = PathBuf::from(val()?),
            "--size-gb" => {
                let gb: f64 = val()?.parse().map_err(|e| format!("--size-gb: {e}"))?;
                if !(gb > 0.0 && gb <= 1000.0) {
                    return Err("--size-gb must be in (0, 1000]".into());
                }
                a.size_bytes = (gb * 1e9) as u64;
                size_given = true;
            }
            "--threads" => {
                a.threads = val()?.parse().map_err(|e| format!("--threads: {e}"))?;
                if a.threads < 2 {
                    return Err("--threads must be at least 2".into());
                }
            }
            "--lines" => a.lines = Some(PathBuf::from(val()?)),
            "--quick" => a.quick = true,
            "--reads-only" => a.reads_only = true,
            "--keep" => a.keep = true,
            "--bench" => {} // passed by `cargo bench`
            "-h" | "--help" => {
                println!("{USAGE}");
                std::process::exit(0);
            }
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if a.quick && !size_given {
        a.size_bytes = 64_000_000;
    }
    Ok(a)
}

fn main() {
    let args = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            eprintln!("tributary-store-bench: {e}");
            std::process::exit(2);
        }
    };
    if let Err(e) = run(&args) {
        eprintln!("tributary-store-bench: {e}");
        std::process::exit(1);
    }
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Fsync {
    /// `sync_to` after every append (what the collector does before it acks).
    Always,
    /// A flusher thread syncs every second; the final sync is timed too.
    Interval,
}

/// What one write load achieved.
struct Outcome {
    payload_bytes: u64,
    batches: u64,
    records: u64,
    elapsed: Duration,
    /// Per batch: append (and its fsync with `Always`), sorted.
    latencies: Vec<Duration>,
    /// Stopped by the time cap before reaching the byte target.
    capped: bool,
}

impl Outcome {
    fn mb_s(&self) -> f64 {
        self.payload_bytes as f64 / MB / self.elapsed.as_secs_f64()
    }

    fn batches_s(&self) -> f64 {
        self.batches as f64 / self.elapsed.as_secs_f64()
    }
}

/// One writer's (payload bytes, batches, records, per-batch latencies).
type Tally = (u64, u64, u64, Vec<Duration>);

struct Load {
    batch_bytes: usize,
    threads: usize,
    fsync: Fsync,
    target_bytes: u64,
    cap: Duration,
}

/// Per-run settings shared by every phase.
struct Ctx {
    lines: Arc<Vec<Vec<u8>>>,
    start_ms: i64,
    seed: u64,
}

/// Append to `p` from `load.threads` writers until the byte target or the time cap.
fn write_load(p: &Arc<Partition>, load: &Load, ctx: &Ctx) -> Res<Outcome> {
    // Prebuilt untimed: each writer is its own file source.
    let mut sources: Vec<Source> = (0..load.threads)
        .map(|t| {
            let mut lines = Lines::new(ctx.seed ^ (t as u64 + 1), ctx.lines.clone());
            Source::new(t as u64, load.batch_bytes, &mut lines, ctx.start_ms)
        })
        .collect();
    sources[0].check_layout()?;

    let written = AtomicU64::new(0);
    let stop = AtomicBool::new(false);
    let start = Instant::now();
    let deadline = start + load.cap;
    let results: Vec<Res<Tally>> = std::thread::scope(|s| {
        let flusher = (load.fsync == Fsync::Interval).then(|| {
            s.spawn(|| -> Res<()> {
                let mut last = Instant::now();
                while !stop.load(Ordering::Acquire) {
                    std::thread::sleep(Duration::from_millis(10));
                    if last.elapsed() >= Duration::from_secs(1) {
                        p.sync()?;
                        last = Instant::now();
                    }
                }
                Ok(())
            })
        });
        let writers: Vec<_> = sources
            .iter_mut()
            .map(|src| {
                let (written, p) = (&written, p);
                s.spawn(move || -> Res<Tally> {
                    let (mut bytes, mut batches, mut records) = (0u64, 0u64, 0u64);
                    let mut lat = Vec::new();
                    while written.load(Ordering::Relaxed) < load.target_bytes
                        && Instant::now() < deadline
                    {
                        let (payload, summary) = src.next_batch();
                        let t = Instant::now();
                        let r = p.append(payload, &summary)?;
                        if load.fsync == Fsync::Always {
                            p.sync_to(r.next_offset)?;
                        }
                        lat.push(t.elapsed());
                        if r.appended != summary.records {
                            return Err(format!(
                                "append stored {} of {} records ({} duplicates)",
                                r.appended, summary.records, r.duplicates
                            )
                            .into());
                        }
                        bytes += payload.len() as u64;
                        batches += 1;
                        records += u64::from(summary.records);
                        written.fetch_add(payload.len() as u64, Ordering::Relaxed);
                    }
                    Ok((bytes, batches, records, lat))
                })
            })
            .collect();
        let mut results: Vec<_> = writers
            .into_iter()
            .map(|h| h.join().unwrap_or_else(|_| Err("writer panicked".into())))
            .collect();
        stop.store(true, Ordering::Release);
        if let Some(f) = flusher {
            let r = f.join().unwrap_or_else(|_| Err("flusher panicked".into()));
            results.push(r.map(|()| (0, 0, 0, Vec::new())));
        }
        results
    });
    // Everything written is durable before the clock stops, in both modes.
    p.sync()?;
    let elapsed = start.elapsed();
    let mut out = Outcome {
        payload_bytes: 0,
        batches: 0,
        records: 0,
        elapsed,
        latencies: Vec::new(),
        capped: false,
    };
    for r in results {
        let (bytes, batches, records, lat) = r?;
        out.payload_bytes += bytes;
        out.batches += batches;
        out.records += records;
        out.latencies.extend(lat);
    }
    out.latencies.sort_unstable();
    out.capped = out.payload_bytes < load.target_bytes;
    if p.durable_end_offset() < out.records || out.batches == 0 {
        return Err(format!(
            "partition holds {} durable records after appending {}",
            p.durable_end_offset(),
            out.records
        )
        .into());
    }
    Ok(out)
}

/// A store with one single-partition topic, in a fresh directory.
fn open_partition(dir: &Path, fsync: Fsync) -> Res<(Store, Arc<Partition>)> {
    let store = Store::open(
        dir,
        StoreOptions {
            publish_on_sync: fsync == Fsync::Always,
            ..StoreOptions::default()
        },
    )?;
    let topic = store.create_topic(
        "bench",
        TopicConfig {
            partitions: 1,
            segment_bytes: SEGMENT_BYTES,
        },
    )?;
    let p = topic.partition(0).ok_or("partition 0 missing")?.clone();
    Ok((store, p))
}

/// Run one write load in its own store under `work`, then delete it.
fn write_phase(work: &Path, name: &str, load: &Load, ctx: &Ctx) -> Res<Outcome> {
    let dir = work.join(name);
    let out = {
        let (_store, p) = open_partition(&dir, load.fsync)?;
        write_load(&p, load, ctx)?
    };
    fs::remove_dir_all(&dir)?;
    Ok(out)
}

/// `dd if=/dev/zero of=DIR/dd.bin bs=1M count=N conv=fdatasync`: bytes and seconds.
fn dd(dir: &Path, count: u64) -> Res<(u64, f64)> {
    let file = dir.join("dd.bin");
    let started = Instant::now();
    let out = Command::new("dd")
        .arg("if=/dev/zero")
        .arg(format!("of={}", file.display()))
        .args(["bs=1M", &format!("count={count}"), "conv=fdatasync"])
        .output()
        .map_err(|e| format!("run dd: {e}"))?;
    let wall = started.elapsed().as_secs_f64();
    let _ = fs::remove_file(&file);
    let stderr = String::from_utf8_lossy(&out.stderr);
    if !out.status.success() {
        return Err(format!("dd failed: {}", stderr.trim()).into());
    }
    // "1073741824 bytes (1.1 GB, 1.0 GiB) copied, 0.81 s, 1.3 GB/s"
    let parsed = stderr
        .lines()
        .find(|l| l.contains(" copied, "))
        .and_then(|l| {
            let bytes = l.split_whitespace().next()?.parse::<u64>().ok()?;
            let secs = l
                .split(", ")
                .nth(2)?
                .strip_suffix(" s")?
                .parse::<f64>()
                .ok()?;
            Some((bytes, secs))
        });
    Ok(parsed.unwrap_or((count << 20, wall)))
}

/// Read every segment file once so the timed read finds the page cache warm.
fn warm_cache(dir: &Path) -> Res<()> {
    let mut buf = vec![0u8; MIB];
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        if path.extension().is_some_and(|e| e == "log") {
            let mut f = fs::File::open(&path)?;
            while f.read(&mut buf)? > 0 {}
        }
    }
    Ok(())
}

/// Read the whole partition from offset 0 as a consumer would: records, bytes of
/// segment traversed, bytes of the records read (message and fields: what a
/// compressed segment expands to), seconds, whether the time cap cut it short.
fn sequential_read(p: &Partition, cap: Duration) -> Res<(u64, u64, u64, Duration, bool)> {
    let end = p.end_offset();
    let start = Instant::now();
    let mut offset = 0;
    let mut records = 0u64;
    let mut record_bytes = 0u64;
    let mut capped = false;
    while offset < end {
        let r = p.read(offset, READ_MAX_RECORDS, READ_MAX_BYTES)?;
        match (r.records.first(), r.records.last()) {
            (Some(first), Some(last)) if first.offset == offset => {
                records += r.records.len() as u64;
                record_bytes += r
                    .records
                    .iter()
                    .map(|x| (x.message.len() + x.fields.len()) as u64)
                    .sum::<u64>();
                offset = last.offset + 1;
            }
            _ => return Err(format!("read at offset {offset} returned no record").into()),
        }
        if r.next_offset != offset {
            return Err(format!("read ended at {offset}, next_offset {}", r.next_offset).into());
        }
        if start.elapsed() > cap {
            capped = true;
            break;
        }
    }
    let elapsed = start.elapsed();
    // Bytes of segment that were traversed.
    let bytes = if capped {
        (p.size_bytes() as f64 * offset as f64 / end as f64) as u64
    } else {
        p.size_bytes()
    };
    Ok((records, bytes, record_bytes, elapsed, capped))
}

/// Latency of reading one record at a random offset.
fn offset_lookups(p: &Partition, n: usize, cap: Duration, rng: &mut Rng) -> Res<Vec<Duration>> {
    let end = p.end_offset();
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    while lat.len() < n && start.elapsed() < cap {
        let offset = rng.below(end);
        let t = Instant::now();
        let r = p.read(offset, 1, 1)?;
        lat.push(t.elapsed());
        if r.records.len() != 1 || r.records[0].offset != offset {
            return Err(format!("lookup of offset {offset} read {:?}", r.next_offset).into());
        }
    }
    lat.sort_unstable();
    Ok(lat)
}

/// Latency of `Partition::offset_for_timestamp` for a random timestamp. The fill
/// gives record `o` the timestamp `first_ms + o`, so every answer is checked exactly.
fn timestamp_lookups(
    p: &Partition,
    first_ms: i64,
    n: usize,
    cap: Duration,
    rng: &mut Rng,
) -> Res<Vec<Duration>> {
    let end = p.end_offset();
    let start = Instant::now();
    let mut lat = Vec::with_capacity(n);
    while lat.len() < n && start.elapsed() < cap {
        let offset = rng.below(end);
        let ts = first_ms + offset as i64;
        let t = Instant::now();
        let found = p.offset_for_timestamp(ts)?;
        lat.push(t.elapsed());
        match found {
            Some(f) if f.offset == offset && f.timestamp_ms == ts => {}
            other => {
                return Err(
                    format!("timestamp {ts}: expected offset {offset}, got {other:?}").into(),
                );
            }
        }
    }
    lat.sort_unstable();
    Ok(lat)
}

fn percentile(sorted: &[Duration], pct: usize) -> Duration {
    if sorted.is_empty() {
        return Duration::ZERO;
    }
    sorted[(sorted.len() * pct / 100).min(sorted.len() - 1)]
}

/// "N cores, CPU model", as the e2e harness prints it.
fn machine() -> String {
    let cpuinfo = fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {model}")
}

/// "device fstype" of the file system holding `dir`, from `df`.
fn filesystem(dir: &Path) -> String {
    Command::new("df")
        .args(["--output=source,fstype"])
        .arg(dir)
        .output()
        .ok()
        .and_then(|o| {
            let text = String::from_utf8_lossy(&o.stdout).into_owned();
            text.lines()
                .nth(1)
                .map(|l| l.split_whitespace().collect::<Vec<_>>().join(" "))
        })
        .unwrap_or_else(|| "unknown file system".into())
}

fn size_label(bytes: usize) -> String {
    if bytes >= MIB {
        format!("{} MiB", bytes / MIB)
    } else {
        format!("{} KiB", bytes / KIB)
    }
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

fn us(d: Duration) -> f64 {
    d.as_secs_f64() * 1e6
}

/// Removes the work directory when dropped (also on an error return).
struct WorkDir {
    path: PathBuf,
    keep: bool,
}

impl Drop for WorkDir {
    fn drop(&mut self) {
        if self.keep {
            eprintln!("kept {}", self.path.display());
        } else if let Err(e) = fs::remove_dir_all(&self.path) {
            eprintln!("cannot remove {}: {e}", self.path.display());
        }
    }
}

/// The read side: a partition of `--size-gb` filled with 1 MiB batches
/// (`fsync: interval`), read sequentially and looked up, then removed.
struct Reads {
    fill: Outcome,
    size: u64,
    read_records: u64,
    read_bytes: u64,
    read_record_bytes: u64,
    read_time: Duration,
    read_capped: bool,
    lookups: Vec<Duration>,
    ts_lookups: Vec<Duration>,
}

fn reads(work_path: &Path, args: &Args, ctx: &Ctx) -> Res<Reads> {
    let fill_dir = work_path.join("lookup");
    let (store, p) = open_partition(&fill_dir, Fsync::Interval)?;
    let fill = write_load(
        &p,
        &Load {
            batch_bytes: MIB,
            threads: 1,
            fsync: Fsync::Interval,
            target_bytes: args.size_bytes,
            cap: Duration::from_secs(600),
        },
        ctx,
    )?;
    let size = p.size_bytes();
    warm_cache(p.dir())?;
    let (read_records, read_bytes, read_record_bytes, read_time, read_capped) =
        sequential_read(&p, Duration::from_secs(120))?;
    let mut rng = Rng(ctx.seed);
    let lookups = offset_lookups(&p, 10_000, Duration::from_secs(30), &mut rng)?;
    let ts_lookups =
        timestamp_lookups(&p, ctx.start_ms, 10_000, Duration::from_secs(30), &mut rng)?;
    drop(p);
    drop(store);
    fs::remove_dir_all(&fill_dir)?;
    Ok(Reads {
        fill,
        size,
        read_records,
        read_bytes,
        read_record_bytes,
        read_time,
        read_capped,
        lookups,
        ts_lookups,
    })
}

impl Reads {
    /// What is read, uncompressed, per second: the bar is on it, since with
    /// compression at rest the segment bytes are a fraction of it.
    fn records_mb_s(&self) -> f64 {
        self.read_record_bytes as f64 / MB / self.read_time.as_secs_f64()
    }

    /// The fill as a write row (its ratio to dd when dd ran).
    fn print_fill(&self, dd_best: Option<f64>) {
        let fill = &self.fill;
        println!(
            "{:<50} {:>8.0} {:>10.0} {:>8.2} {:>8.2} {:>6}{}",
            format!(
                "fill {:.2} GB partition, fsync=interval 1 MiB",
                self.size as f64 / 1e9
            ),
            fill.mb_s(),
            fill.batches_s(),
            ms(percentile(&fill.latencies, 50)),
            ms(percentile(&fill.latencies, 99)),
            dd_best.map_or("-".into(), |dd| format!("{:.2}", fill.mb_s() / dd)),
            if fill.capped { "  (time cap)" } else { "" },
        );
    }

    fn print_reads(&self) {
        let gb = self.size as f64 / 1e9;
        let secs = self.read_time.as_secs_f64();
        println!(
            "{:<50} {:>8} {:>10} {:>12}",
            format!("read ({gb:.2} GB partition, 1 MiB batches)"),
            "MB/s",
            "records/s",
            "records MB/s"
        );
        println!(
            "{:<50} {:>8.0} {:>10.0} {:>12.0}{}",
            format!("sequential from 0, warm cache, {READ_MAX_RECORDS} rec/read"),
            self.read_bytes as f64 / MB / secs,
            self.read_records as f64 / secs,
            self.records_mb_s(),
            if self.read_capped { "  (time cap)" } else { "" },
        );
        println!();
        println!(
            "{:<50} {:>8} {:>10} {:>8}",
            format!("lookup ({gb:.2} GB partition, warm cache)"),
            "p50 µs",
            "p99 µs",
            "n"
        );
        for (what, lat) in [
            ("offset: read 1 record at a random offset", &self.lookups),
            (
                "timestamp: offset_for_timestamp(random time)",
                &self.ts_lookups,
            ),
        ] {
            println!(
                "{what:<50} {:>8.0} {:>10.0} {:>8}",
                us(percentile(lat, 50)),
                us(percentile(lat, 99)),
                lat.len()
            );
        }
        println!();
    }

    fn print_read_bar(&self) {
        let mb_s = self.records_mb_s();
        println!(
            "  sequential read of records    {:>6.2} GB/s  (bar >= 1 GB/s) {}",
            mb_s / 1e3,
            if mb_s >= 1e3 { "ok" } else { "BELOW BAR" }
        );
    }
}

fn run(args: &Args) -> Res<()> {
    let work = WorkDir {
        path: args
            .dir
            .join(format!("tributary-store-bench.{}", std::process::id())),
        keep: args.keep,
    };
    fs::create_dir_all(&work.path).map_err(|e| format!("create {}: {e}", work.path.display()))?;
    let work_path = fs::canonicalize(&work.path)?;
    let pool: Vec<Vec<u8>> = match &args.lines {
        Some(f) => fs::read(f)
            .map_err(|e| format!("{}: {e}", f.display()))?
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(<[u8]>::to_vec)
            .collect(),
        None => Vec::new(),
    };
    if args.lines.is_some() && pool.is_empty() {
        return Err("--lines: the file holds no lines".into());
    }
    let seed = 0x7269_6275_7461_7279;
    let avg_line = {
        let mut l = Lines::new(seed, Arc::new(pool.clone()));
        let n = 10_000;
        (0..n).map(|_| l.next_line().len()).sum::<usize>() as f64 / n as f64
    };
    let ctx = Ctx {
        lines: Arc::new(pool),
        start_ms: SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map(|d| d.as_millis() as i64)
            .unwrap_or(0),
        seed,
    };
    let (target, cap, dd_count) = if args.quick {
        (64_000_000u64, Duration::from_secs(10), 64u64)
    } else {
        (1u64 << 30, Duration::from_secs(30), 1024u64)
    };

    println!(
        "tributary-store-bench{}",
        if args.quick {
            " --quick (smoke run: figures are indicative only)"
        } else {
            ""
        }
    );
    println!("machine: {}", machine());
    println!(
        "disk:    {} ({})",
        filesystem(&work_path),
        work_path.display()
    );
    println!(
        "store:   1 partition, {} MiB segments, sparse index every {} B; payload = 1 block/batch of {} lines (avg {avg_line:.0} B)",
        SEGMENT_BYTES >> 20,
        StoreOptions::default().index_interval_bytes,
        match &args.lines {
            Some(f) => format!("{}", f.display()),
            None => "generated web/JSON/syslog/Java log".into(),
        },
    );
    println!(
        "each write row: up to {:.0} MB of payload or {} s, whichever first; MB = 10^6 bytes",
        target as f64 / MB,
        cap.as_secs()
    );
    println!();

    if args.reads_only {
        let r = reads(&work_path, args, &ctx)?;
        r.print_fill(None);
        println!();
        r.print_reads();
        println!("bars");
        r.print_read_bar();
        return Ok(());
    }
    let dd_before = dd(&work_path, dd_count)?;

    // Write phases.
    let t = args.threads;
    let phases: [(&str, usize, usize, Fsync); 6] = [
        ("interval", MIB, 1, Fsync::Interval),
        ("interval", 16 * KIB, 1, Fsync::Interval),
        ("always", MIB, 1, Fsync::Always),
        ("always", MIB, t, Fsync::Always),
        ("always", 16 * KIB, 1, Fsync::Always),
        ("always", 16 * KIB, t, Fsync::Always),
    ];
    let mut rows = Vec::new();
    for (i, &(mode, batch_bytes, threads, fsync)) in phases.iter().enumerate() {
        let load = Load {
            batch_bytes,
            threads,
            fsync,
            target_bytes: target,
            cap,
        };
        let out = write_phase(&work_path, &format!("phase-{i}"), &load, &ctx)?;
        rows.push((mode, batch_bytes, threads, out));
    }

    // The big partition: filled, read and looked up (see `reads`).
    let r = reads(&work_path, args, &ctx)?;
    let dd_after = dd(&work_path, dd_count)?;

    // Report.
    let dd_mb = |(bytes, secs): (u64, f64)| bytes as f64 / MB / secs;
    let dd_best = dd_mb(dd_before).max(dd_mb(dd_after));
    println!(
        "{:<50} {:>8} {:>10} {:>8} {:>8} {:>6}",
        "write", "MB/s", "batches/s", "p50 ms", "p99 ms", "vs dd"
    );
    println!(
        "{:<50} {:>8.0} {:>10} {:>8} {:>8} {:>6}",
        format!("dd bs=1M count={dd_count} conv=fdatasync (best of 2)"),
        dd_best,
        "-",
        "-",
        "-",
        "1.00"
    );
    for (mode, batch_bytes, threads, out) in &rows {
        let who = if *threads == 1 {
            "1 writer".to_owned()
        } else {
            format!("{threads} writers, group commit")
        };
        println!(
            "{:<50} {:>8.0} {:>10.0} {:>8.2} {:>8.2} {:>6.2}{}",
            format!("append fsync={mode} {}, {who}", size_label(*batch_bytes)),
            out.mb_s(),
            out.batches_s(),
            ms(percentile(&out.latencies, 50)),
            ms(percentile(&out.latencies, 99)),
            out.mb_s() / dd_best,
            if out.capped {
                format!("  (time cap: {:.0} MB)", out.payload_bytes as f64 / MB)
            } else {
                String::new()
            },
        );
    }
    r.print_fill(Some(dd_best));
    println!(
        "  dd runs: {:.0} MB/s before the appends, {:.0} MB/s after",
        dd_mb(dd_before),
        dd_mb(dd_after)
    );
    println!();
    r.print_reads();

    let ratio = |mb: f64| mb / dd_best;
    let verdict = |ok: bool| if ok { "ok" } else { "BELOW BAR" };
    let interval_1m = rows[0].3.mb_s();
    let always_1m = rows[2].3.mb_s();
    println!("bars");
    println!(
        "  append fsync=interval 1 MiB / dd    {:>5.2}  (bar >= 0.80)  {}",
        ratio(interval_1m),
        verdict(ratio(interval_1m) >= 0.8)
    );
    println!(
        "  append fsync=always 1 MiB / dd      {:>5.2}  (bar >= 0.50)  {}",
        ratio(always_1m),
        verdict(ratio(always_1m) >= 0.5)
    );
    r.print_read_bar();
    Ok(())
}
