//! The Kafka output's producer against a real Kafka-compatible broker (noida-db
//! from PyPI, started here on 127.0.0.1) with kafka-python reading back: every
//! record once with its key, value, timestamp and headers, each source in one
//! partition in order, lz4 and gzip batches, and a missing topic named in the
//! error. The broker and client come from the virtualenv `.ci/run` creates; without
//! it the test skips visibly.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use kafka_protocol::records::Compression;
use serde_json::Value;
use tributary_agent::ship::kafka::{Producer, partition_of};
use tributary_common::kafka::ConnSettings;
use tributary_common::record::{BlockWriter, FLAG_PARTIAL};
use tributary_e2e::{Broker, Env, free_port, python_step, python_with};

fn python() -> Option<PathBuf> {
    python_with("kafka")
}

fn step(py: &Path, bootstrap: &str, args: &[&str]) -> Value {
    python_step(py, "kafka_broker.py", bootstrap, args)
}

/// One payload: `per_source` records from each of three sources, with block
/// fields, a record field and a partial record.
fn payload(round: u64, per_source: u64) -> Vec<u8> {
    let mut buf = Vec::new();
    for s in 0..3u64 {
        let source = format!("/var/log/app{s}.log");
        let mut w = BlockWriter::begin(&mut buf, "web-01", &source, 100 + s, br#"{"env":"prod"}"#);
        for i in 0..per_source {
            let n = round * per_source + i;
            let (flags, fields) = if i == 1 {
                (FLAG_PARTIAL, &br#"{"severity":"err","pid":42}"#[..])
            } else {
                (0, &b""[..])
            };
            let message = format!("source {s} line {n}");
            w.push(
                &mut buf,
                flags,
                1_796_000_000_000 + n as i64,
                n * 100 + 99,
                fields,
                message.as_bytes(),
            );
        }
        w.finish(&mut buf);
    }
    buf
}

#[test]
fn records_arrive_once_keyed_by_source_with_their_headers() {
    let (Some(bin), Some(py)) = (Broker::binary(), python()) else {
        return;
    };
    let env = Env::new();
    let mut broker = Broker::start(&bin, &env.path().join("noida"), free_port());
    let bootstrap = broker.bootstrap();
    step(&py, &bootstrap, &["create", "logs", "4"]);

    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let settings = ConnSettings {
        client_id: "tributary-test".into(),
        tls: None,
        sasl: None,
        timeout: std::time::Duration::from_secs(10),
        max_response: 16 << 20,
    };
    let per_source = 50;
    rt.block_on(async {
        for (round, codec) in [
            (0, Compression::Lz4),
            (1, Compression::Gzip),
            (2, Compression::None),
        ] {
            let mut p = Producer::new(vec![bootstrap.clone()], settings.clone(), codec);
            p.send("logs", &payload(round, per_source))
                .await
                .expect("produce");
        }
        let mut p = Producer::new(vec![bootstrap.clone()], settings.clone(), Compression::Lz4);
        let err = p
            .send("no-such-topic", &payload(0, 1))
            .await
            .expect_err("a missing topic is an error");
        let msg = err.to_string();
        assert!(
            msg.contains("`no-such-topic` does not exist") && msg.contains(&bootstrap),
            "{msg}"
        );
    });

    let total = 3 * 3 * per_source as usize;
    let got = step(&py, &bootstrap, &["read", "logs", &total.to_string()]);
    let got = got.as_array().expect("a list");
    assert_eq!(got.len(), total, "every record once");
    let mut by_source: BTreeMap<String, Vec<(i64, i64, u64)>> = BTreeMap::new();
    for m in got {
        let h = &m["headers"];
        let key = m["key"].as_str().unwrap();
        let sid: u64 = h["tributary.source_id"].as_str().unwrap().parse().unwrap();
        assert_eq!(key, format!("web-01:{sid:016x}"));
        assert_eq!(
            m["partition"].as_i64().unwrap() as usize,
            partition_of(key.as_bytes(), 4),
            "the key's partition, as Kafka's own clients choose it"
        );
        assert_eq!(h["host"], "web-01");
        assert_eq!(h["source"], format!("/var/log/app{}.log", sid - 100));
        assert_eq!(h["env"], "prod");
        let off: u64 = h["tributary.offset"].as_str().unwrap().parse().unwrap();
        let n = (off - 99) / 100;
        assert_eq!(m["value"], format!("source {} line {n}", sid - 100));
        assert_eq!(
            m["timestamp"].as_i64().unwrap(),
            1_796_000_000_000 + n as i64
        );
        if n % per_source == 1 {
            assert_eq!(
                (&h["partial"], &h["severity"], &h["pid"]),
                (&Value::from("1"), &Value::from("err"), &Value::from("42"))
            );
        } else {
            assert!(
                h.get("partial").is_none() && h.get("severity").is_none(),
                "{h}"
            );
        }
        by_source.entry(key.to_owned()).or_default().push((
            m["partition"].as_i64().unwrap(),
            m["offset"].as_i64().unwrap(),
            n,
        ));
    }
    assert_eq!(by_source.len(), 3);
    for (key, mut recs) in by_source {
        recs.sort();
        let parts: std::collections::BTreeSet<_> = recs.iter().map(|r| r.0).collect();
        assert_eq!(parts.len(), 1, "{key}: one partition");
        let lines: Vec<u64> = recs.iter().map(|r| r.2).collect();
        let want: Vec<u64> = (0..3 * per_source).collect();
        assert_eq!(lines, want, "{key}: every line once, in order");
    }
    broker.stop();
}

#[test]
fn large_batches_are_split_to_fit_the_brokers_limit() {
    let (Some(bin), Some(py)) = (Broker::binary(), python()) else {
        return;
    };
    let env = Env::new();
    let mut broker = Broker::start(&bin, &env.path().join("noida"), free_port());
    let bootstrap = broker.bootstrap();
    step(&py, &bootstrap, &["create", "split", "1"]);
    // 100 records of 1 KiB from one source, and one of 40 KiB in the middle.
    let mut buf = Vec::new();
    let mut w = BlockWriter::begin(&mut buf, "web-01", "/var/log/big.log", 7, b"");
    for i in 0..101u64 {
        let message = if i == 50 {
            "x".repeat(40 << 10)
        } else {
            format!("{i:04} {}", "y".repeat(1019))
        };
        w.push(
            &mut buf,
            0,
            1_796_000_000_000,
            i * 2000,
            b"",
            message.as_bytes(),
        );
    }
    w.finish(&mut buf);
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let sent = rt.block_on(async {
        let settings = ConnSettings {
            client_id: "tributary-test".into(),
            tls: None,
            sasl: None,
            timeout: std::time::Duration::from_secs(10),
            max_response: 16 << 20,
        };
        let mut p = Producer::new(vec![bootstrap.clone()], settings, Compression::None);
        p.max_message_bytes = 16 << 10;
        p.send("split", &buf).await.expect("produce")
    });
    assert_eq!(sent.too_large, 1, "{sent:?}");
    assert!(sent.too_large_bytes > 40 << 10, "{sent:?}");
    assert!(
        sent.requests >= 7,
        "100 KiB in batches of at most 16 KiB: {sent:?}"
    );
    let got = step(&py, &bootstrap, &["read", "split", "100"]);
    let values: Vec<String> = got
        .as_array()
        .unwrap()
        .iter()
        .map(|m| m["value"].as_str().unwrap()[..4].to_owned())
        .collect();
    let want: Vec<String> = (0..101)
        .filter(|i| *i != 50)
        .map(|i| format!("{i:04}"))
        .collect();
    assert_eq!(values, want, "every record but the oversized one, in order");
    broker.stop();
}
