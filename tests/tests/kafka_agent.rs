//! The agent binary with `output.kafka` against a real Kafka-compatible broker
//! (noida-db from PyPI, on 127.0.0.1), kafka-python reading back: every line with
//! its key and headers, each source in one partition in order; an agent SIGKILL
//! leaves every line in the topic (some possibly twice, never reordered within a
//! source); a broker down for 30 s makes the agent spool while it keeps reading,
//! and everything arrives once the broker is back. Without the virtualenv
//! `.ci/run` creates, the test skips visibly.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;
use std::time::{Duration, Instant};

use tributary_e2e::{
    Broker, Env, agent_metric, append_lines, free_port, python_step, python_with, wait_until,
};

const FILES: [&str; 3] = ["api", "web", "db"];

fn line(file: &str, i: usize) -> String {
    format!("{file} {i:06} {}", "k".repeat(40 + i % 60))
}

fn write(logs: &Path, from: usize, to: usize) {
    for f in FILES {
        append_lines(
            &logs.join(format!("{f}.log")),
            (from..to).map(|i| line(f, i)),
        );
    }
}

/// The agent's config: SASL PLAIN (the broker accepts any credentials, but the
/// exchange is real), small batches so that many are in flight over a run.
fn agent_yaml(env: &Env, logs: &Path, bootstrap: &str, metrics: u16) -> String {
    let password = env.path().join("kafka.pw");
    std::fs::write(&password, "s3cret\n").unwrap();
    let owner_only = std::os::unix::fs::PermissionsExt::from_mode(0o600);
    std::fs::set_permissions(&password, owner_only).unwrap();
    format!(
        "host: kafka-agent\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\n    fields: {{env: test}}\noutput:\n  kafka:\n    brokers: [\"{bootstrap}\"]\n    topic: \"logs-{{{{topic}}}}\"\n    compression: lz4\n    sasl: {{mechanism: plain, username: agent, password_file: {password}}}\n  batch: {{max_bytes: 32KiB, max_records: 200, linger_ms: 20}}\nmetrics: {{listen: 127.0.0.1:{metrics}}}\n",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        password = password.display(),
    )
}

/// Every record of the topic, checked for key, headers and per-source order;
/// returns how many times each line is there.
fn check_topic(py: &Path, bootstrap: &str, logs: &Path, at_least: usize) -> BTreeMap<String, u32> {
    let got = python_step(
        py,
        "kafka_broker.py",
        bootstrap,
        &["read", "logs-app", &at_least.to_string()],
    );
    let got = got.as_array().expect("a list");
    let mut counts: BTreeMap<String, u32> = BTreeMap::new();
    // per key: (partition, kafka offset, source offset, line)
    let mut by_key: BTreeMap<String, Vec<(i64, i64, u64, String)>> = BTreeMap::new();
    for m in got {
        let h = &m["headers"];
        let key = m["key"].as_str().expect("a key");
        let sid: u64 = h["tributary.source_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(key, format!("kafka-agent:{sid:016x}"), "{m}");
        assert_eq!(h["host"], "kafka-agent");
        assert_eq!(h["env"], "test", "{m}");
        let source = h["source"].as_str().unwrap();
        assert!(source.starts_with(&logs.display().to_string()), "{source}");
        let value = m["value"].as_str().unwrap().to_owned();
        let file = Path::new(source).file_stem().unwrap().to_str().unwrap();
        assert!(value.starts_with(file), "{value} from {source}");
        let off: u64 = h["tributary.offset"].as_str().unwrap().parse().unwrap();
        *counts.entry(value.clone()).or_default() += 1;
        by_key.entry(key.to_owned()).or_default().push((
            m["partition"].as_i64().unwrap(),
            m["offset"].as_i64().unwrap(),
            off,
            value,
        ));
    }
    assert_eq!(by_key.len(), FILES.len(), "one key per file");
    for (key, mut recs) in by_key {
        let parts: BTreeSet<i64> = recs.iter().map(|r| r.0).collect();
        assert_eq!(parts.len(), 1, "{key}: one partition");
        recs.sort();
        // In Kafka order, source offsets never go back except where a batch was
        // sent again (from its start): then the same lines repeat in order.
        let mut seen: BTreeMap<u64, &str> = BTreeMap::new();
        for (_, _, off, value) in &recs {
            if let Some(prev) = seen.insert(*off, value) {
                assert_eq!(prev, value, "{key}: offset {off} holds two different lines");
            }
        }
        let lines: Vec<&str> = seen.values().copied().collect();
        let mut sorted = lines.clone();
        sorted.sort();
        assert_eq!(
            lines, sorted,
            "{key}: source offsets follow the file's order"
        );
    }
    counts
}

fn expect_all(counts: &BTreeMap<String, u32>, n: usize, once: bool) {
    for f in FILES {
        for i in 0..n {
            let c = counts.get(&line(f, i)).copied().unwrap_or(0);
            assert!(c >= 1, "{f} line {i} is missing");
            if once {
                assert_eq!(c, 1, "{f} line {i} is there {c} times");
            }
        }
    }
    assert!(
        counts.len() == FILES.len() * n,
        "nothing else: {} distinct lines",
        counts.len()
    );
}

fn acked(metrics: u16) -> u64 {
    agent_metric(metrics, "tributary_agent_records_acked_total")
}

#[test]
fn agent_ships_to_kafka_survives_sigkill_and_spools_through_a_broker_outage() {
    let (Some(bin), Some(py)) = (Broker::binary(), python_with("kafka")) else {
        return;
    };
    let env = Env::new();
    let port = free_port();
    let broker_data = env.path().join("noida");
    let mut broker = Broker::start(&bin, &broker_data, port);
    let bootstrap = broker.bootstrap();
    python_step(
        &py,
        "kafka_broker.py",
        &bootstrap,
        &["create", "logs-app", "4"],
    );
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let metrics = free_port();
    let yaml = agent_yaml(&env, &logs, &bootstrap, metrics);

    // 1. Every line once, keyed and in order.
    write(&logs, 0, 500);
    let mut agent = env.start_agent("agent", &yaml);
    wait_until(
        "the first 1,500 lines acknowledged",
        Duration::from_secs(60),
        &agent,
        || acked(metrics) >= 1_500,
    );
    let counts = check_topic(&py, &bootstrap, &logs, 1_500);
    expect_all(&counts, 500, true);

    // 2. SIGKILL while lines are being shipped: nothing is lost.
    write(&logs, 500, 2_500);
    wait_until(
        "some of the next lines acknowledged",
        Duration::from_secs(60),
        &agent,
        || acked(metrics) > 1_500,
    );
    agent.kill();
    let mut agent = env.start_agent("agent-2", &yaml);
    let counts = {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let counts = check_topic(&py, &bootstrap, &logs, 7_500);
            if counts.len() >= 7_500 || Instant::now() > deadline {
                break counts;
            }
        }
    };
    expect_all(&counts, 2_500, false);
    let dups: u32 = counts.values().map(|c| c - 1).sum();
    eprintln!(
        "after the SIGKILL the topic holds {dups} duplicate lines (the collector drops them)"
    );

    // 3. The broker is down for 30 s: the agent keeps reading into its spool.
    wait_until(
        "everything acknowledged before the outage",
        Duration::from_secs(60),
        &agent,
        || {
            agent_metric(metrics, "tributary_agent_spool_bytes") == 0
                && agent_metric(metrics, "tributary_agent_lines_read_total") == acked(metrics)
        },
    );
    broker.stop();
    let down = Instant::now();
    let read_before = agent_metric(metrics, "tributary_agent_lines_read_total");
    write(&logs, 2_500, 3_500);
    wait_until(
        "the outage's lines read into the spool",
        Duration::from_secs(25),
        &agent,
        || {
            agent_metric(metrics, "tributary_agent_lines_read_total") >= read_before + 3_000
                && agent_metric(metrics, "tributary_agent_spool_bytes") > 0
        },
    );
    assert!(agent.is_running(), "{}", agent.log_text());
    std::thread::sleep(Duration::from_secs(30).saturating_sub(down.elapsed()));
    let mut broker = Broker::start(&bin, &broker_data, port);
    wait_until(
        "the spool delivered",
        Duration::from_secs(90),
        &agent,
        || {
            agent_metric(metrics, "tributary_agent_spool_bytes") == 0
                && acked(metrics) >= agent_metric(metrics, "tributary_agent_lines_read_total")
        },
    );
    let counts = check_topic(&py, &bootstrap, &logs, 10_500);
    expect_all(&counts, 3_500, false);
    let log = agent.log_text();
    assert!(
        log.contains("cannot deliver to Kafka"),
        "the outage is logged:\n{log}"
    );
    let st = agent.terminate(Duration::from_secs(20));
    assert!(st.is_some_and(|s| s.success()), "{}", agent.log_text());
    broker.stop();
}

/// Agent → Kafka → collector: the agent is SIGKILLed twice and the broker
/// restarted while lines are written; the Kafka topic may hold duplicates, the
/// collector reading it holds every line exactly once.
#[test]
fn agent_to_kafka_to_collector_exactly_once_through_sigkills_and_a_broker_restart() {
    let (Some(bin), Some(py)) = (Broker::binary(), python_with("kafka")) else {
        return;
    };
    let env = Env::new();
    let port = free_port();
    let broker_data = env.path().join("noida");
    let mut broker = Broker::start(&bin, &broker_data, port);
    let bootstrap = broker.bootstrap();
    python_step(
        &py,
        "kafka_broker.py",
        &bootstrap,
        &["create", "logs-app", "4"],
    );
    let collector = env.start_collector(&format!(
        "sources:\n  - kafka: {{brokers: [\"{bootstrap}\"], topics: [logs-app], group: central, topic: app}}\n"
    ));
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let metrics = free_port();
    let yaml = agent_yaml(&env, &logs, &bootstrap, metrics);

    let per_round = 200;
    let mut written = 0;
    let mut round = |agent: &mut tributary_e2e::Proc| {
        write(&logs, written, written + per_round);
        written += per_round;
        let want = acked(metrics) + 1;
        // Steady writes: the next round once something more was delivered (or a
        // moment passed, while the broker is down).
        let deadline = Instant::now() + Duration::from_millis(300);
        while acked(metrics) < want && Instant::now() < deadline && agent.is_running() {
            std::thread::sleep(Duration::from_millis(20));
        }
    };
    let mut agent = env.start_agent("agent", &yaml);
    for _ in 0..4 {
        round(&mut agent);
    }
    agent.kill();
    let mut agent = env.start_agent("agent-2", &yaml);
    for _ in 0..3 {
        round(&mut agent);
    }
    broker.stop();
    for _ in 0..3 {
        round(&mut agent);
    }
    broker = Broker::start(&bin, &broker_data, port);
    for _ in 0..3 {
        round(&mut agent);
    }
    agent.kill();
    let mut agent = env.start_agent("agent-3", &yaml);
    for _ in 0..2 {
        round(&mut agent);
    }
    let total = (written * FILES.len()) as u64;
    collector.wait_for_count("app", total, Duration::from_secs(120), &agent);
    // Nothing more arrives (a duplicate would).
    std::thread::sleep(Duration::from_secs(2));
    let records = collector.read_all("app");
    let mut seen: BTreeMap<&str, u32> = BTreeMap::new();
    for r in &records {
        assert_eq!(r.host, "kafka-agent");
        *seen.entry(r.message.as_str()).or_default() += 1;
    }
    for f in FILES {
        for i in 0..written {
            let l = line(f, i);
            assert_eq!(seen.get(l.as_str()).copied(), Some(1), "{f} line {i}");
        }
    }
    assert_eq!(records.len() as u64, total, "nothing else stored");
    let in_kafka = check_topic(&py, &bootstrap, &logs, total as usize);
    let dups: u32 = in_kafka.values().map(|c| c - 1).sum();
    eprintln!("{total} lines: the Kafka topic holds {dups} duplicates, the collector none");
    drop(agent);
    broker.stop();
}

/// Ask `broker` (TLS with the env's agent certificate, SASL PLAIN as `shipper`)
/// for `topic`'s metadata with auto-creation allowed, as producers that create
/// topics do, until it exists.
fn create_topic_over_tls(broker: &str, env: &Env, password: &str, topic: &str) {
    use kafka_protocol::messages::metadata_request::MetadataRequestTopic;
    use kafka_protocol::messages::{MetadataRequest, MetadataResponse, TopicName};
    use kafka_protocol::protocol::StrBytes;
    use tributary_common::kafka::{Conn, ConnSettings, Sasl, SaslMechanism};
    let c = &env.certs;
    let settings = ConnSettings {
        client_id: "test".into(),
        tls: Some(
            tributary_common::tls::client_config(&c.ca, Some((&c.agent_cert, &c.agent_key)))
                .unwrap(),
        ),
        sasl: Some(Sasl {
            mechanism: SaslMechanism::Plain,
            username: "shipper".into(),
            password: password.into(),
        }),
        timeout: Duration::from_secs(10),
        max_response: 1 << 20,
    };
    tributary_e2e::block_on(async {
        let mut conn = Conn::open(broker, &settings)
            .await
            .expect("connect over TLS with SASL");
        let v = conn.version::<MetadataRequest>(4..=9).unwrap();
        let req = MetadataRequest::default()
            .with_topics(Some(vec![MetadataRequestTopic::default().with_name(Some(
                TopicName(StrBytes::from_string(topic.to_owned())),
            ))]))
            .with_allow_auto_topic_creation(true);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let r: MetadataResponse = conn.call_v(&req, v).await.unwrap();
            if r.topics
                .iter()
                .any(|t| t.error_code == 0 && !t.partitions.is_empty())
            {
                return;
            }
            assert!(Instant::now() < deadline, "{topic} was not created: {r:?}");
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
}

/// The agent's Kafka output over TLS with a client certificate and SASL PLAIN:
/// against a Tributary collector's own Kafka listener (noida-db has no TLS), which
/// wants both, and a wrong password is refused, named in the agent's log.
#[test]
fn agent_ships_to_kafka_over_mutual_tls_with_sasl() {
    let env = Env::new();
    let tokens = env.path().join("tokens");
    let writer = tributary_e2e::token_add(&tokens, "shipper", "write");
    let kport = free_port();
    let broker = format!("127.0.0.1:{kport}");
    let c = &env.certs;
    let mut collector = env.start_collector_full(
        free_port(),
        free_port(),
        "",
        &format!("  auth: {{tokens_file: {}}}\n", tokens.display()),
        &format!(
            "kafka:\n  listen: {broker}\n  tls:\n    cert: {}\n    key: {}\n    client_ca: {}\ntopics:\n  secure: {{partitions: 2}}\n",
            c.collector_cert.display(),
            c.collector_key.display(),
            c.ca.display(),
        ),
    );
    collector.api = collector
        .api
        .clone()
        .with_token(Some(tributary_e2e::token_add(&tokens, "reader", "read")));
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    write(&logs, 0, 300);
    let agent_yaml = |name: &str, password: &str| {
        let pw = env.path().join(format!("{name}.pw"));
        std::fs::write(&pw, format!("{password}\n")).unwrap();
        format!(
            "host: kafka-agent\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: secure\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\noutput:\n  kafka:\n    brokers: [\"{broker}\"]\n    compression: gzip\n    tls: {{ca: {ca}, cert: {cert}, key: {key}}}\n    sasl: {{mechanism: plain, username: shipper, password_file: {pw}}}\n  batch: {{max_bytes: 16KiB, max_records: 100, linger_ms: 20}}\n",
            data = env.path().join(format!("{name}-data")).display(),
            logs = logs.display(),
            ca = c.ca.display(),
            cert = c.agent_cert.display(),
            key = c.agent_key.display(),
            pw = pw.display(),
        )
    };
    // A wrong password: refused, said in the log, nothing stored.
    let mut bad = env.start_agent("bad", &agent_yaml("bad", "not-the-token"));
    wait_until(
        "the SASL refusal logged",
        Duration::from_secs(30),
        &bad,
        || bad.log_text().contains("SaslAuthenticate"),
    );
    let log = bad.log_text();
    assert!(
        log.contains(&broker) && log.contains("shipper"),
        "the refusal names the broker and the user:\n{log}"
    );
    bad.terminate(Duration::from_secs(20));
    assert_eq!(collector.count("secure"), 0);

    // The topic does not exist yet: the agent says so, keeps the lines, and
    // delivers them once it is created.
    let agent = env.start_agent("good", &agent_yaml("good", &writer));
    wait_until(
        "the missing topic logged",
        Duration::from_secs(30),
        &agent,
        || agent.log_text().contains("topic `secure` does not exist"),
    );
    create_topic_over_tls(&broker, &env, &writer, "secure");
    collector.wait_for_count("secure", 900, Duration::from_secs(60), &agent);
    let records = collector.read_all("secure");
    let mut seen: BTreeSet<&str> = BTreeSet::new();
    for r in &records {
        assert!(seen.insert(r.message.as_str()), "{} twice", r.message);
    }
    assert_eq!(records.len(), 900);
    for f in FILES {
        for i in 0..300 {
            assert!(seen.contains(line(f, i).as_str()), "{f} line {i}");
        }
    }
}
