//! Collector outages and agent shutdown: the agent spools while no collector
//! answers, pauses reading when the spool is full, catches up afterwards, and a
//! SIGTERM saves checkpoints so a restart sends nothing twice.

use std::collections::HashMap;
use std::path::Path;
use std::time::{Duration, Instant};

use tributary_e2e::{Collector, Env, agent_metric, append_lines, block_on, free_port, wait_until};

fn line(name: &str, i: usize) -> String {
    format!("{name} {i:08} {}", "p".repeat(60 + i % 50))
}

fn agent_yaml(env: &Env, collector: &Collector, logs: &Path, metrics: u16, spool: &str) -> String {
    let out = env
        .output_yaml(collector, "lz4")
        .replace("batch: {max_bytes: 1MiB, max_records: 10000, linger_ms: 50}", &format!("batch: {{max_bytes: 64KiB, max_records: 1000, linger_ms: 50}}\n  spool: {{max_bytes: {spool}}}"));
    format!(
        "host: outage\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log\"]\n    read_from: beginning\n{out}metrics: {{listen: 127.0.0.1:{metrics}}}\n",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
    )
}

fn check_exactly_once(collector: &Collector, expected: &[(String, usize)]) {
    let records = collector.read_all("app");
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for r in &records {
        *seen.entry(r.message.as_str()).or_default() += 1;
    }
    let mut total = 0;
    for (name, n) in expected {
        for i in 0..*n {
            let l = line(name, i);
            assert_eq!(seen.get(l.as_str()).copied(), Some(1), "{name} line {i}");
        }
        total += n;
    }
    assert_eq!(records.len(), total, "nothing else stored");
}

#[test]
fn collector_down_for_30s_agent_spools_and_catches_up() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (ingest, api, metrics) = (free_port(), free_port(), free_port());
    let mut collector = env.start_collector_on(ingest, api, "");
    let agent = env.start_agent(
        "agent",
        &agent_yaml(&env, &collector, &logs, metrics, "64MiB"),
    );
    append_lines(&logs.join("a.log"), (0..5_000).map(|i| line("a", i)));
    collector.wait_for_count("app", 5_000, Duration::from_secs(60), &agent);

    collector.proc.kill();
    let down_at = Instant::now();
    // During the outage: more lines, and a file that is written, read and deleted
    // before the collector comes back. Only the spool can still deliver it.
    append_lines(&logs.join("a.log"), (5_000..20_000).map(|i| line("a", i)));
    append_lines(&logs.join("gone.log"), (0..10_000).map(|i| line("gone", i)));
    wait_until(
        "the agent to read everything into its spool",
        Duration::from_secs(30),
        &agent,
        || {
            agent_metric(metrics, "tributary_agent_lines_read_total") >= 30_000
                && agent_metric(metrics, "tributary_agent_spool_bytes") > 0
        },
    );
    std::fs::remove_file(logs.join("gone.log")).unwrap();
    // Keep writing while the collector is down, for 30 s in all.
    let mut n = 20_000;
    while down_at.elapsed() < Duration::from_secs(30) {
        append_lines(&logs.join("a.log"), (n..n + 500).map(|i| line("a", i)));
        n += 500;
        std::thread::sleep(Duration::from_millis(200));
    }
    let collector = env.start_collector_on(ingest, api, "");
    collector.wait_for_count("app", (n + 10_000) as u64, Duration::from_secs(120), &agent);
    check_exactly_once(&collector, &[("a".into(), n), ("gone".into(), 10_000)]);
    wait_until(
        "the spool to drain",
        Duration::from_secs(10),
        &agent,
        || agent_metric(metrics, "tributary_agent_spool_bytes") == 0,
    );
}

#[test]
fn full_spool_pauses_reading_without_loss() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (ingest, api, metrics) = (free_port(), free_port(), free_port());
    let mut collector = env.start_collector_on(ingest, api, "");
    let agent = env.start_agent(
        "agent",
        &agent_yaml(&env, &collector, &logs, metrics, "256KiB"),
    );
    append_lines(&logs.join("a.log"), (0..100).map(|i| line("a", i)));
    collector.wait_for_count("app", 100, Duration::from_secs(60), &agent);
    collector.proc.kill();

    // ~13 MB of lines: far more than the spool and the in-memory queues hold.
    let total = 100_000;
    append_lines(&logs.join("a.log"), (100..total).map(|i| line("a", i)));
    wait_until("the spool to fill", Duration::from_secs(30), &agent, || {
        agent_metric(metrics, "tributary_agent_spool_bytes") >= 256 << 10
    });
    // Reading stops: the number of lines read settles well below what was written.
    let mut last = agent_metric(metrics, "tributary_agent_lines_read_total");
    wait_until("reading to pause", Duration::from_secs(30), &agent, || {
        std::thread::sleep(Duration::from_millis(500));
        let now = agent_metric(metrics, "tributary_agent_lines_read_total");
        let settled = now == last;
        last = now;
        settled
    });
    assert!(
        last < total as u64 / 2,
        "read {last} of {total} lines with a full spool"
    );
    let spool = agent_metric(metrics, "tributary_agent_spool_bytes");
    assert!(
        spool < (256 << 10) + (256 << 10),
        "spool holds {spool} bytes, limit 256KiB + one batch"
    );

    let collector = env.start_collector_on(ingest, api, "");
    collector.wait_for_count("app", total as u64, Duration::from_secs(120), &agent);
    check_exactly_once(&collector, &[("a".into(), total)]);
}

#[test]
fn sigterm_saves_checkpoints_and_a_restart_sends_nothing_twice() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (ingest, api, metrics) = (free_port(), free_port(), free_port());
    let collector = env.start_collector_on(ingest, api, "");
    let yaml = agent_yaml(&env, &collector, &logs, metrics, "64MiB");
    let mut agent = env.start_agent("agent-1", &yaml);
    append_lines(&logs.join("a.log"), (0..50_000).map(|i| line("a", i)));
    collector.wait_for_count("app", 50_000, Duration::from_secs(60), &agent);

    let started = Instant::now();
    let status = agent
        .terminate(Duration::from_secs(15))
        .expect("agent exits on SIGTERM");
    assert!(status.success(), "exit status {status:?}");
    assert!(
        started.elapsed() < Duration::from_secs(10),
        "shutdown took {:?}",
        started.elapsed()
    );
    let cp = std::fs::read_to_string(env.path().join("agent-data/checkpoints.json"))
        .expect("checkpoints saved");
    let size = std::fs::metadata(logs.join("a.log")).unwrap().len();
    assert!(
        cp.contains(&format!("\"offset\": {size}")),
        "checkpoint at the end of the file ({size}):\n{cp}"
    );

    // A restart resumes at the checkpoint: new lines arrive, nothing is re-sent.
    append_lines(&logs.join("a.log"), (50_000..51_000).map(|i| line("a", i)));
    let agent = env.start_agent("agent-2", &yaml);
    collector.wait_for_count("app", 51_000, Duration::from_secs(60), &agent);
    check_exactly_once(&collector, &[("a".into(), 51_000)]);
    let (_, text) = block_on(collector.api.get_text("/metrics", Duration::from_secs(5))).unwrap();
    assert!(
        text.lines()
            .any(|l| l == "tributary_ingest_duplicates_total 0"),
        "{text}"
    );
}

#[test]
fn a_thousand_files_with_few_descriptors() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let collector = env.start_collector("");
    let yaml = format!(
        "host: many\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{logs}/*.log\"]\n    close_inactive: 300ms\n{out}",
        data = env.path().join("agent-data").display(),
        logs = logs.display(),
        out = env.output_yaml(&collector, "lz4"),
    );
    let names: Vec<String> = (0..1000).map(|i| format!("f{i:04}")).collect();
    for n in &names {
        append_lines(&logs.join(format!("{n}.log")), (0..10).map(|i| line(n, i)));
    }
    // 1,000 files, 256 descriptors: the agent must close idle files to get through.
    let agent = env.start_agent_with_fd_limit("agent", &yaml, 256);
    collector.wait_for_count("app", 10_000, Duration::from_secs(120), &agent);
    // More lines in every file: idle-closed files are reopened where they stopped.
    for n in &names {
        append_lines(&logs.join(format!("{n}.log")), (10..15).map(|i| line(n, i)));
    }
    collector.wait_for_count("app", 15_000, Duration::from_secs(120), &agent);
    let expected: Vec<(String, usize)> = names.iter().map(|n| (n.clone(), 15)).collect();
    check_exactly_once(&collector, &expected);
}

#[test]
fn fails_over_to_the_next_collector() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let metrics = free_port();
    // The first collector in the list never answers; the second one does.
    let dead = free_port();
    let collector = env.start_collector("");
    let yaml = agent_yaml(&env, &collector, &logs, metrics, "64MiB").replace(
        &format!("collectors: [\"127.0.0.1:{}\"]", collector.ingest_port),
        &format!(
            "collectors: [\"127.0.0.1:{dead}\", \"127.0.0.1:{}\"]",
            collector.ingest_port
        ),
    );
    assert!(yaml.contains(&dead.to_string()));
    append_lines(&logs.join("a.log"), (0..2_000).map(|i| line("a", i)));
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count("app", 2_000, Duration::from_secs(60), &agent);
    check_exactly_once(&collector, &[("a".into(), 2_000)]);
    assert!(agent_metric(metrics, "tributary_agent_connect_failures_total") >= 1);
    assert_eq!(
        agent_metric(metrics, "tributary_agent_records_sent_total"),
        2_000
    );
    assert_eq!(agent_metric(metrics, "tributary_agent_files_open"), 1);
}

/// A restart replays the spool in order even when batches were in flight when the
/// collector went away: the in-flight ones were written to the spool first, so they
/// are not overtaken by newer spooled batches (which would make the collector drop
/// them as duplicates when they are read again).
#[test]
fn restart_during_an_outage_replays_in_flight_and_spooled_batches_in_order() {
    let env = Env::new();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let (ingest, api, metrics) = (free_port(), free_port(), free_port());
    let mut collector = env.start_collector_on(ingest, api, "");
    let yaml = agent_yaml(&env, &collector, &logs, metrics, "64MiB");
    let mut agent = env.start_agent("agent-1", &yaml);
    append_lines(&logs.join("a.log"), (0..1_000).map(|i| line("a", i)));
    collector.wait_for_count("app", 1_000, Duration::from_secs(60), &agent);

    // Kill the collector while a large backlog is being shipped: usually batches
    // are in flight and later ones go to the spool.
    append_lines(&logs.join("a.log"), (1_000..60_000).map(|i| line("a", i)));
    std::thread::sleep(Duration::from_millis(30));
    collector.proc.kill();
    // Everything read into the pipeline: acknowledged, in flight, queued or spooled
    // (how much of each depends on timing; every mix must come out exactly once).
    wait_until(
        "the agent to read every line",
        Duration::from_secs(30),
        &agent,
        || agent_metric(metrics, "tributary_agent_lines_read_total") >= 60_000,
    );
    let _ = agent.terminate(Duration::from_secs(15));
    append_lines(&logs.join("a.log"), (60_000..61_000).map(|i| line("a", i)));

    let collector = env.start_collector_on(ingest, api, "");
    let agent = env.start_agent("agent-2", &yaml);
    collector.wait_for_count("app", 61_000, Duration::from_secs(120), &agent);
    check_exactly_once(&collector, &[("a".into(), 61_000)]);
}
