//! kafka-python and confluent-kafka (PyPI) against a real collector fed by a real
//! agent: a consumer group of two splits the partitions and consumes every record
//! once, one leaves and the other takes over, the group resumes at its committed
//! offsets after a collector SIGKILL and at offsets committed over HTTP,
//! offsets_for_times, idempotent producers
//! (gzip, lz4, zstd, acks=all) whose records read back over HTTP; committed offsets show
//! in `/v1/groups`.
//!
//! The clients run from the virtualenv `.ci/run` creates under the target
//! directory (`target/pyenv`, or `TRIBUTARY_PYTHON`); without it the test skips
//! visibly.

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;
use tributary_e2e::{Env, append_lines, free_port, python_step, python_with};

fn python() -> Option<PathBuf> {
    python_with("kafka, confluent_kafka, lz4")
}

fn step(py: &Path, bootstrap: &str, args: &[&str]) -> Value {
    python_step(py, "kafka_clients.py", bootstrap, args)
}

#[test]
fn python_clients_consume_in_groups_resume_after_a_crash_and_produce() {
    let Some(py) = python() else {
        return;
    };
    let env = Env::new();
    let (ingest, api, kport) = (free_port(), free_port(), free_port());
    let bootstrap = format!("127.0.0.1:{kport}");
    let extra =
        format!("kafka:\n  listen: 127.0.0.1:{kport}\ntopics:\n  logs: {{partitions: 4}}\n");
    let mut collector = env.start_collector_on(ingest, api, &extra);
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let files = ["a.log", "b.log", "c.log", "d.log", "e.log", "f.log"];
    for f in files {
        append_lines(
            &logs.join(f),
            (0..1_000).map(|i| format!("{f} first {i:05}")),
        );
    }
    let yaml = format!(
        "host: py-e2e\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: logs\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(&collector, "lz4"),
    );
    let agent = env.start_agent("agent", &yaml);
    let first = 6 * 1_000u64;
    collector.wait_for_count("logs", first, Duration::from_secs(60), &agent);

    // Two consumers split the partitions, every record once; one leaves, the
    // other takes over every partition.
    let g = step(
        &py,
        &bootstrap,
        &["group", "logs", "py", &first.to_string()],
    );
    assert_eq!(g["distinct"], first, "{g}");
    assert_eq!(g["duplicates"], 0, "{g}");
    assert_eq!(g["partitions"], serde_json::json!([0, 1, 2, 3]), "{g}");
    assert_eq!(g["takeover"], g["partitions"], "{g}");
    let split = g["split"].as_object().unwrap();
    assert_eq!(split.len(), 2, "{g}");
    // The committed offsets are the HTTP groups' store: no lag left.
    let groups = collector.get("/v1/groups/py/offsets").unwrap();
    let lag: u64 = groups["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lag"].as_u64().unwrap())
        .sum();
    assert_eq!(lag, 0, "{groups}");

    // SIGKILL the collector, restart it; new lines arrive; the group resumes at its
    // committed offsets: exactly the new lines.
    collector.proc.kill();
    collector = env.start_collector_on(ingest, api, &extra);
    for f in files {
        append_lines(
            &logs.join(f),
            (0..200).map(|i| format!("{f} second {i:05}")),
        );
    }
    let second = 6 * 200u64;
    collector.wait_for_count("logs", first + second, Duration::from_secs(60), &agent);
    let r = step(
        &py,
        &bootstrap,
        &["resume", "logs", "py", &second.to_string()],
    );
    assert_eq!(r["distinct"], second, "{r}");
    assert_eq!(r["duplicates"], 0, "{r}");

    // The other way round: offsets committed over HTTP are where a Kafka consumer
    // of that group starts (five records before each partition's end).
    let mut expected = 0u64;
    for (p, end) in collector.end_offsets("logs") {
        let offset = end.saturating_sub(5);
        expected += end - offset;
        tributary_e2e::block_on(collector.api.post_json(
            "/v1/groups/from-http/offsets",
            &serde_json::json!({"topic": "logs", "partition": p, "offset": offset}),
            Duration::from_secs(10),
        ))
        .unwrap();
    }
    let r = step(
        &py,
        &bootstrap,
        &["resume", "logs", "from-http", &expected.to_string()],
    );
    assert_eq!(r["distinct"], expected, "{r}");

    // offsets_for_times finds each record's offset by its timestamp; a time past
    // every record has none.
    let t = step(&py, &bootstrap, &["times", "logs"]);
    let t = t.as_object().unwrap();
    assert!(!t.is_empty());
    for (p, v) in t {
        assert!(
            v["found"].as_u64().unwrap() <= v["offset"].as_u64().unwrap(),
            "partition {p}: {v}"
        );
        assert_eq!(v["found_timestamp"], v["timestamp"], "partition {p}: {v}");
        assert!(
            v["beyond"].is_null() || v["beyond"] == -1,
            "partition {p}: {v}"
        );
    }

    // Idempotent producers, gzip and lz4, acks=all: every record acknowledged and
    // stored once, readable over HTTP.
    let p = step(&py, &bootstrap, &["produce", "py-out", "500"]);
    assert_eq!(p["acknowledged"], 1_000, "{p}");
    let stored = collector.read_all("py-out");
    assert_eq!(stored.len(), 1_000);
    for codec in ["gzip", "lz4"] {
        let mut messages: Vec<&str> = stored
            .iter()
            .filter(|r| r.fields.get("codec").and_then(Value::as_str) == Some(codec))
            .map(|r| r.message.as_str())
            .collect();
        messages.sort();
        let expected: Vec<String> = (0..500).map(|i| format!("{codec} record {i:05}")).collect();
        assert_eq!(messages, expected, "{codec}");
    }
    assert!(stored.iter().all(|r| r.host == "py-host"));
    assert!(stored.iter().all(|r| r.source.starts_with("kafka://py-")));

    // confluent-kafka: a consumer group over lz4 fetches, an idempotent producer.
    let c = step(
        &py,
        &bootstrap,
        &[
            "confluent",
            "logs",
            "ck",
            &(first + second).to_string(),
            "ck-out",
            "300",
        ],
    );
    assert_eq!(c["consumed"], first + second, "{c}");
    assert_eq!(c["acknowledged"], 600, "{c}");
    let ck = collector.read_all("ck-out");
    assert_eq!(ck.len(), 600);
    assert!(
        ck.iter()
            .all(|r| r.host == "ck-host" && r.source == "kafka://ck")
    );
    for codec in ["lz4", "zstd"] {
        let mut messages: Vec<&str> = ck
            .iter()
            .filter(|r| r.message.starts_with(&format!("confluent {codec} ")))
            .map(|r| r.message.as_str())
            .collect();
        messages.sort();
        let expected: Vec<String> = (0..300)
            .map(|i| format!("confluent {codec} record {i:05}"))
            .collect();
        assert_eq!(messages, expected, "{codec}");
    }
    // ListGroups shows the groups committed over Kafka; DescribeGroups their state.
    let g = step(&py, &bootstrap, &["groups", "py"]);
    let listed: Vec<&str> = g["listed"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(Value::as_str)
        .collect();
    assert!(listed.contains(&"py") && listed.contains(&"ck"), "{g}");
    assert_eq!(g["described"]["py"]["state"], "Empty", "{g}");
    assert_eq!(g["described"]["py"]["members"], 0, "{g}");
    // Every answer could be encoded at the version each client asked for.
    let log = std::fs::read_to_string(env.path().join(format!("collector-{ingest}.log"))).unwrap();
    assert!(!log.contains("cannot encode"), "{log}");
    assert!(!log.contains("malformed"), "{log}");
}
