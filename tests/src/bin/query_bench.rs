//! Query benchmark: a topic of N records (default 5,000,000, ~150-byte access-log
//! lines from 8 hosts over the last 2 hours, 4 partitions) written straight into a
//! store, then queried with the collector's query engine (what `GET /v1/query`
//! runs):
//!
//! ```text
//! cargo run --release -p tributary-e2e --bin tributary-query-bench -- [--records 5000000] [--dir DIR]
//! ```
//! Prints, per query: wall time, records and MB scanned per second (and per core
//! used), and matches. `since 5m` is the time to the first (and only) answer of a
//! query for the newest 5 minutes. The store lives in a temporary directory
//! (under `--dir`, default the current one) and is deleted at the end.

use std::sync::Arc;
use std::time::{Duration, Instant};

use tributary_collector::api::query::{self, Query, QueryParams};
use tributary_collector::storage::TopicReader;
use tributary_common::record::{BlockWriter, summarize};
use tributary_e2e::machine;
use tributary_store::{Store, StoreOptions, Topic, TopicConfig};

const PARTITIONS: u32 = 4;
const PER_BATCH: usize = 1000;
const SPAN_MS: i64 = 2 * 3600 * 1000;

struct Opts {
    records: usize,
    dir: std::path::PathBuf,
}

fn parse_args() -> Result<Opts, String> {
    let mut o = Opts {
        records: 5_000_000,
        dir: std::path::PathBuf::from("."),
    };
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        let mut val = || args.next().ok_or_else(|| format!("{a} needs a value"));
        match a.as_str() {
            "--records" => o.records = val()?.parse().map_err(|e| format!("--records: {e}"))?,
            "--dir" => o.dir = val()?.into(),
            "--bench" => {}
            other => return Err(format!("unknown argument {other}")),
        }
    }
    Ok(o)
}

const PATHS: [&str; 6] = [
    "/api/v1/items",
    "/api/v1/users",
    "/static/app.js",
    "/api/v1/orders",
    "/healthz",
    "/api/v2/search",
];

/// Deterministic access-log line `i` (about 150 bytes); status 503 for 1 in 10,000.
fn line(i: u64, out: &mut Vec<u8>) {
    use std::io::Write;
    let h = i.wrapping_mul(0x9e37_79b9_7f4a_7c15);
    let status = if i % 10_000 == 4_321 {
        503
    } else if h.is_multiple_of(50) {
        404
    } else {
        200
    };
    out.clear();
    let _ = write!(
        out,
        "10.{}.{}.{} - - \"GET {}/{} HTTP/1.1\" {status} {} \"-\" \"Mozilla/5.0 (X11; Linux x86_64) tributary-bench/{}\" rt={}ms",
        (h >> 8) % 256,
        (h >> 16) % 256,
        (h >> 24) % 256,
        PATHS[(h % 6) as usize],
        (h >> 32) % 100_000,
        (h >> 40) % 50_000,
        i % 7,
        (h >> 48) % 900
    );
}

fn build(topic: &Topic, records: usize, now_ms: i64) -> (u64, Duration) {
    let t = Instant::now();
    let parts = topic.partitions();
    let per_part = records / parts.len();
    let mut bytes = 0u64;
    let mut msg = Vec::with_capacity(256);
    let mut payload = Vec::with_capacity(256 << 10);
    for (pi, p) in parts.iter().enumerate() {
        let mut i = 0;
        while i < per_part {
            let n = PER_BATCH.min(per_part - i);
            payload.clear();
            let host = format!("web-{:02}", (i / PER_BATCH + pi) % 8);
            let source = format!("/var/log/nginx/access-{pi}.log");
            let mut b = BlockWriter::begin(&mut payload, &host, &source, 0, b"");
            for j in 0..n {
                let k = (i + j) as u64;
                line(k * u64::from(PARTITIONS) + pi as u64, &mut msg);
                bytes += msg.len() as u64;
                // Spread over the last SPAN_MS, oldest first.
                let ts = now_ms - SPAN_MS + (k as i64 * SPAN_MS) / per_part as i64;
                b.push(&mut payload, 0, ts, k * 160, b"", &msg);
            }
            b.finish(&mut payload);
            let summary = summarize(&payload).expect("valid block");
            p.append(&payload, &summary).expect("append");
            i += n;
        }
        p.sync().expect("sync");
    }
    (bytes, t.elapsed())
}

fn run_query(topic: &TopicReader, name: &str, params: &[(&str, &str)], now_ms: i64, cores: usize) {
    let mut p = QueryParams {
        topic: Some("bench".into()),
        ..Default::default()
    };
    for (k, v) in params {
        let v = Some((*v).to_string());
        match *k {
            "since" => p.since = v,
            "contains" => p.contains = v,
            "regex" => p.regex = v,
            "host" => p.host = v,
            "limit" => p.limit = v,
            "order" => p.order = v,
            other => panic!("{other}"),
        }
    }
    let q = Query::parse(&p, now_ms).expect("query");
    // Best of three (the first run also warms the page cache).
    let mut best: Option<(Duration, query::QueryResult)> = None;
    for _ in 0..3 {
        let t = Instant::now();
        let r = query::run(topic, &q, Instant::now() + Duration::from_secs(600)).expect("run");
        let d = t.elapsed();
        if best.as_ref().is_none_or(|(b, _)| d < *b) {
            best = Some((d, r));
        }
    }
    let Some((d, r)) = best else { return };
    let secs = d.as_secs_f64().max(1e-9);
    let used = cores.min(PARTITIONS as usize) as f64;
    println!(
        "{name:<34} {:>9.1} ms {:>12.0} rec/s {:>8.0} MB/s {:>8.0} MB/s/core {:>7} matches{}",
        secs * 1e3,
        r.scanned_records as f64 / secs,
        r.scanned_bytes as f64 / secs / 1e6,
        r.scanned_bytes as f64 / secs / 1e6 / used,
        r.records.len(),
        if r.complete { "" } else { " (deadline)" }
    );
}

/// `GET /v1/histogram` as the console asks it: 60 buckets over the last 24 h.
fn run_histogram(topic: &TopicReader, name: &str, params: &[(&str, &str)], now_ms: i64) {
    use query::histogram::{self, Buckets};
    let mut p = QueryParams {
        topic: Some("bench".into()),
        since: Some("24h".into()),
        ..Default::default()
    };
    for (k, v) in params {
        match *k {
            "contains" => p.contains = Some((*v).to_string()),
            other => panic!("{other}"),
        }
    }
    let q = Query::parse(&p, now_ms).expect("query");
    let mut f = q.filter.clone();
    let since = f.since_ms.expect("since");
    f.until_ms = Some(now_ms);
    let b = Buckets::new(since, now_ms, 60);
    let mut best: Option<(Duration, histogram::Histogram)> = None;
    for _ in 0..3 {
        let t = Instant::now();
        let h =
            histogram::run(topic, &f, b, Instant::now() + Duration::from_secs(600)).expect("run");
        let d = t.elapsed();
        if best.as_ref().is_none_or(|(x, _)| d < *x) {
            best = Some((d, h));
        }
    }
    let Some((d, h)) = best else { return };
    let secs = d.as_secs_f64().max(1e-9);
    println!(
        "{name:<34} {:>9.1} ms {:>12.0} rec/s {:>7} counted in {} buckets of {} min",
        secs * 1e3,
        h.scanned_records as f64 / secs,
        h.total(),
        b.count,
        b.width_ms / 60_000
    );
}

fn main() {
    let opts = match parse_args() {
        Ok(o) => o,
        Err(e) => {
            eprintln!("tributary-query-bench: {e}");
            std::process::exit(2);
        }
    };
    let tmp = tempfile::Builder::new()
        .prefix("tributary-query-bench.")
        .tempdir_in(&opts.dir)
        .expect("temp dir");
    let store = Store::open(tmp.path(), StoreOptions::default()).expect("store");
    let topic: Arc<Topic> = store
        .create_topic(
            "bench",
            TopicConfig {
                partitions: PARTITIONS,
                segment_bytes: 128 << 20,
            },
        )
        .expect("topic");
    let now_ms = tributary_common::timefmt::now_ms();
    let (bytes, took) = build(&topic, opts.records, now_ms);
    let reader = TopicReader::from(topic.clone());
    let cores = std::thread::available_parallelism().map_or(1, |n| n.get());
    let on_disk: u64 = topic.partitions().iter().map(|p| p.size_bytes()).sum();
    println!("machine: {}", machine());
    println!(
        "topic: {} records, {:.0} MB of messages ({:.0} MB on disk), {PARTITIONS} partitions, over the last 2 h; written in {:.1} s",
        opts.records,
        bytes as f64 / 1e6,
        on_disk as f64 / 1e6,
        took.as_secs_f64()
    );
    println!(
        "(best of 3 runs each; MB = message bytes scanned; cores used = min(cores, partitions) = {})",
        cores.min(PARTITIONS as usize)
    );
    let limit = "10000";
    run_query(
        &reader,
        "contains \"\\\" 503 \" (1 in 10,000)",
        &[("contains", "\" 503 "), ("limit", limit)],
        now_ms,
        cores,
    );
    run_query(
        &reader,
        "regex rt=89\\dms.*404 (rare)",
        &[("regex", r#"" 404 .* rt=89\dms$"#), ("limit", limit)],
        now_ms,
        cores,
    );
    run_query(
        &reader,
        "contains, no match at all",
        &[("contains", "no such text"), ("limit", limit)],
        now_ms,
        cores,
    );
    run_query(
        &reader,
        "host web-03, first 100",
        &[("host", "web-03"), ("limit", "100")],
        now_ms,
        cores,
    );
    run_query(
        &reader,
        "since 5m (time index), first 100",
        &[("since", "5m"), ("limit", "100")],
        now_ms,
        cores,
    );
    run_query(
        &reader,
        "since 5m, contains \" 404 \"",
        &[("since", "5m"), ("contains", "\" 404 "), ("limit", limit)],
        now_ms,
        cores,
    );
    run_query(
        &reader,
        "newest 100 (order desc)",
        &[("order", "desc"), ("limit", "100")],
        now_ms,
        cores,
    );
    // What the console's search page asks: the histogram and the newest results.
    run_histogram(&reader, "histogram 24h, 60 buckets", &[], now_ms);
    run_histogram(
        &reader,
        "histogram 24h, contains \" 503 \"",
        &[("contains", "\" 503 ")],
        now_ms,
    );
    run_query(
        &reader,
        "since 1h, newest 100 (search page)",
        &[("since", "1h"), ("order", "desc"), ("limit", "100")],
        now_ms,
        cores,
    );
}
