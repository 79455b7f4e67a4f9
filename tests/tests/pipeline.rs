//! The whole data path with real processes: files matched by YAML globs → agent →
//! compressed batches over mutual TLS → collector → partitioned topic → read by offset.

use std::collections::HashMap;
use std::path::Path;
use std::time::Duration;

use tributary_e2e::{Env, append_lines};

/// A line with a recognisable key and ~120 bytes of payload.
fn line(file: &str, i: usize) -> String {
    format!(
        "{file} seq={i:08} GET /api/v1/items/{} 200 ua=\"Mozilla/5.0 (X11; Linux x86_64)\" latency_ms={}",
        i * 7919 % 100_000,
        i % 997
    )
}

fn lines(file: &str, range: std::ops::Range<usize>) -> impl Iterator<Item = String> + '_ {
    range.map(move |i| line(file, i))
}

fn ship_many_files(compression: &str) {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(logs.join("nested/deeper")).unwrap();
    let collector = env.start_collector("topics:\n  default: {partitions: 3}\n");

    // Present at start-up: three files, one of them two directories down (`**`).
    let start_files = ["a.log", "b.log", "nested/deeper/c.log"];
    for f in start_files {
        append_lines(&logs.join(f), lines(f, 0..25_000));
    }
    // Not matched: wrong extension, and excluded by name.
    append_lines(&logs.join("notes.txt"), lines("notes.txt", 0..100));
    append_lines(&logs.join("old.log.gz"), lines("old.log.gz", 0..100));
    // A line with \r\n, an empty line and invalid UTF-8 in one more matched file.
    std::fs::write(
        logs.join("edge.log"),
        b"crlf line\r\n\nbad \xff\xfe bytes\nunfinished",
    )
    .unwrap();

    let yaml = format!(
        "host: e2e-host\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log\", \"{logs}/**/*.log\"]\n    exclude: [\"*.gz\"]\n    read_from: beginning\n    fields: {{env: test, team: core}}\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(&collector, compression),
    );
    let agent = env.start_agent("agent", &yaml);

    // After start-up: more lines in every file, and a brand-new file.
    collector.wait_for_count("app", 1_000, Duration::from_secs(60), &agent);
    for f in start_files {
        append_lines(&logs.join(f), lines(f, 25_000..35_000));
    }
    append_lines(&logs.join("late.log"), lines("late.log", 0..20_000));
    // Complete the unfinished line.
    append_lines(&logs.join("edge.log"), [" now finished".to_string()]);

    let expected_total = 3 * 35_000 + 20_000 + 4;
    collector.wait_for_count(
        "app",
        expected_total as u64,
        Duration::from_secs(120),
        &agent,
    );
    let records = collector.read_all("app");
    assert_eq!(
        records.len(),
        expected_total,
        "every line exactly once, no more"
    );

    // Per source: every line once and in order, all in one partition.
    let mut per_source: HashMap<String, Vec<&tributary_e2e::Rec>> = HashMap::new();
    for r in &records {
        assert_eq!(r.host, "e2e-host");
        assert_eq!(r.fields.get("env").and_then(|v| v.as_str()), Some("test"));
        assert_eq!(r.fields.get("team").and_then(|v| v.as_str()), Some("core"));
        per_source.entry(r.source.clone()).or_default().push(r);
    }
    let name_of = |source: &str| {
        Path::new(source)
            .strip_prefix(&logs)
            .unwrap_or_else(|_| panic!("unexpected source {source}"))
            .display()
            .to_string()
    };
    let mut seen: Vec<String> = per_source.keys().map(|s| name_of(s)).collect();
    seen.sort();
    assert_eq!(
        seen,
        [
            "a.log",
            "b.log",
            "edge.log",
            "late.log",
            "nested/deeper/c.log"
        ],
        "matched files only"
    );
    for (source, recs) in &per_source {
        let name = name_of(source);
        let partitions: std::collections::BTreeSet<u32> =
            recs.iter().map(|r| r.partition).collect();
        assert_eq!(
            partitions.len(),
            1,
            "{name} spread over partitions {partitions:?}"
        );
        let offsets: Vec<u64> = recs.iter().map(|r| r.offset).collect();
        assert!(offsets.windows(2).all(|w| w[0] < w[1]));
        if name == "edge.log" {
            let msgs: Vec<&str> = recs.iter().map(|r| r.message.as_str()).collect();
            assert_eq!(
                msgs,
                [
                    "crlf line",
                    "",
                    "bad \u{fffd}\u{fffd} bytes",
                    "unfinished now finished"
                ]
            );
            continue;
        }
        let n = if name == "late.log" { 20_000 } else { 35_000 };
        assert_eq!(recs.len(), n, "{name}");
        for (i, r) in recs.iter().enumerate() {
            assert_eq!(r.message, line(&name, i), "{name} line {i}");
        }
    }

    // The record shape of the API.
    let r = &records[0].json;
    for key in [
        "topic",
        "partition",
        "offset",
        "timestamp",
        "host",
        "source",
        "message",
        "fields",
    ] {
        assert!(r.get(key).is_some(), "record lacks `{key}`: {r}");
    }
    assert!(r["timestamp"].as_str().unwrap().ends_with('Z'));

    // Metrics count what was stored.
    let (status, metrics) =
        tributary_e2e::block_on(collector.api.get_text("/metrics", Duration::from_secs(10)))
            .unwrap();
    assert_eq!(status, 200);
    assert!(
        metrics
            .lines()
            .any(|l| l == format!("tributary_ingest_records_total {expected_total}")),
        "metrics:\n{metrics}"
    );
    // The reads above went through the store's cache of expanded batches.
    let cached: u64 = metrics
        .lines()
        .find_map(|l| l.strip_prefix("tributary_store_read_cache_bytes "))
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("no read cache gauge in:\n{metrics}"));
    assert!(
        cached > 0 && cached <= 64 << 20,
        "read cache holds {cached} bytes"
    );
    drop(agent);
}

#[test]
fn ships_files_exactly_once_with_lz4() {
    ship_many_files("lz4");
}

#[test]
fn ships_files_exactly_once_with_gzip() {
    ship_many_files("gzip");
}
