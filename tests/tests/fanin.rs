//! Fan-in: 200 agent connections at once on one collector (`fsync: always`,
//! compression at rest on), each sending batches of 100-1,000 lines with two in
//! flight, from the load generator `tributary-bench --agents` uses. Every
//! acknowledged line is then in the store exactly once, in its source's order, and
//! nothing that was not acknowledged is there.

use std::collections::HashMap;
use std::time::Duration;

use tributary_e2e::{Env, fanin};
use tributary_store::{Store, StoreOptions};

#[test]
fn two_hundred_agents_at_once_every_line_stored_once() {
    let env = Env::new();
    let mut collector = env.start_collector_with(
        "  max_connections: 300\n  max_connections_per_ip: 300\n",
        "topics:\n  default: {partitions: 4}\ndurability:\n  fsync: always\n",
    );
    let load = fanin::Load {
        connections: 200,
        topic: "fanin".into(),
        min_lines: 100,
        max_lines: 1000,
        window: 2,
        linger: Duration::from_millis(20),
        duration: Duration::from_secs(3),
        max_lines_per_connection: 4_000,
    };
    let out = fanin::run(&env, collector.ingest_port, &load);
    assert_eq!(out.per_connection.len(), 200);
    assert!(
        out.per_connection.iter().all(|&n| n > 0),
        "every connection had batches acknowledged"
    );
    assert_eq!(collector.count("fanin"), out.lines, "stored = acknowledged");
    collector.proc.terminate(Duration::from_secs(30));

    // Straight from the store: per host, source offsets 1..=acknowledged, each once
    // and in order.
    let store = Store::open(&env.path().join("collector-data"), StoreOptions::default())
        .expect("the collector's store opens after it stopped");
    let topic = store.topic("fanin").expect("topic fanin");
    let mut next: HashMap<String, u64> = HashMap::new();
    let mut total = 0u64;
    for p in topic.partitions() {
        let mut off = p.start_offset();
        while off < p.end_offset() {
            let r = p.read(off, 10_000, 16 << 20).expect("read");
            for rec in &r.records {
                let want = next.entry(rec.block.host.to_string()).or_insert(1);
                assert_eq!(
                    rec.source_offset, *want,
                    "{}: offsets in order, none twice, none missing",
                    rec.block.host
                );
                *want += 1;
                total += 1;
            }
            off = r.next_offset;
        }
    }
    assert_eq!(total, out.lines);
    for (i, &n) in out.per_connection.iter().enumerate() {
        assert_eq!(
            next.get(&fanin::host_of(i)).copied().unwrap_or(1) - 1,
            n,
            "{}: every acknowledged line",
            fanin::host_of(i)
        );
    }
    println!(
        "fan-in: 200 connections, {} lines in {} batches, {:.0} lines/s, ack p99 {:.1} ms",
        out.lines,
        out.batches,
        out.lines as f64 / out.elapsed.as_secs_f64(),
        out.latency(0.99).as_secs_f64() * 1e3
    );
}
