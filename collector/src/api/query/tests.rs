//! The query engine over a real store: merging, time ranges, limits, errors.

use std::sync::Arc;
use std::time::{Duration, Instant};

use super::*;
use tributary_common::record::{BlockWriter, summarize};
use tributary_store::{Partition, Store, StoreOptions, Topic, TopicConfig};

const T0: i64 = 1_795_600_000_000;

/// Append one block per call: `(ts, message, fields)` records of one host/source.
fn append(p: &Partition, host: &str, source: &str, recs: &[(i64, &str, &str)]) {
    let mut payload = Vec::new();
    let mut b = BlockWriter::begin(&mut payload, host, source, 0, b"");
    for (i, (ts, msg, fields)) in recs.iter().enumerate() {
        b.push(
            &mut payload,
            0,
            *ts,
            i as u64,
            fields.as_bytes(),
            msg.as_bytes(),
        );
    }
    b.finish(&mut payload);
    let summary = summarize(&payload).unwrap();
    p.append(&payload, &summary).unwrap();
}

/// Three partitions; partition p holds records at T0 + (3i + p) seconds, i < 1000,
/// in blocks of 50; every 10th is "error", hosts alternate, syslog severities
/// on partition 2.
fn store() -> (tempfile::TempDir, Arc<Topic>) {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let topic = store
        .create_topic(
            "app",
            TopicConfig {
                partitions: 3,
                segment_bytes: 16 << 10,
            },
        )
        .unwrap();
    for (pi, p) in topic.partitions().iter().enumerate() {
        for block in 0..20 {
            let msgs: Vec<(i64, String, String)> = (0..50)
                .map(|j| {
                    let i = block * 50 + j;
                    let ts = T0 + (3 * i + pi as i64) * 1000;
                    let kind = if i % 10 == 0 { "error" } else { "ok" };
                    let fields = if pi == 2 {
                        let sev = if i % 10 == 0 { "err" } else { "info" };
                        format!(r#"{{"severity":"{sev}"}}"#)
                    } else {
                        String::new()
                    };
                    (ts, format!("p{pi} i={i:04} {kind}"), fields)
                })
                .collect();
            let recs: Vec<(i64, &str, &str)> = msgs
                .iter()
                .map(|(t, m, f)| (*t, m.as_str(), f.as_str()))
                .collect();
            let host = if block % 2 == 0 { "web-01" } else { "web-02" };
            append(p, host, &format!("/var/log/app{pi}.log"), &recs);
        }
    }
    (dir, topic)
}

fn q(params: &[(&str, &str)]) -> Query {
    let mut p = QueryParams {
        topic: Some("app".into()),
        ..Default::default()
    };
    for (k, text) in params {
        let v = Some(text.to_string());
        match *k {
            "since" => p.since = v,
            "until" => p.until = v,
            "host" => p.host = v,
            "source" => p.source = v,
            "severity" => p.severity = v,
            "contains" => p.contains = v,
            "regex" => p.regex = v,
            "limit" => p.limit = v,
            "order" => p.order = v,
            f if f.starts_with("field.") => {
                p.extra.insert(f.to_owned(), text.to_string());
            }
            _ => panic!("{k}"),
        }
    }
    Query::parse(&p, T0 + 10_000_000).unwrap()
}

fn go(topic: &Arc<Topic>, query: &Query) -> QueryResult {
    let topic = TopicReader::from(topic.clone());
    run(&topic, query, Instant::now() + Duration::from_secs(30)).unwrap()
}

fn msgs(r: &QueryResult) -> Vec<String> {
    r.records
        .iter()
        .map(|(_, x)| String::from_utf8_lossy(&x.message).into_owned())
        .collect()
}

#[test]
fn merges_partitions_by_time_and_counts_exactly() {
    let (_d, topic) = store();
    let r = go(&topic, &q(&[("limit", "10000")]));
    assert_eq!(r.records.len(), 3000);
    assert!(r.complete);
    assert!(
        r.records
            .windows(2)
            .all(|w| w[0].1.timestamp_ms < w[1].1.timestamp_ms)
    );
    assert_eq!(
        &msgs(&r)[..3],
        ["p0 i=0000 error", "p1 i=0000 error", "p2 i=0000 error"]
    );

    let r = go(&topic, &q(&[("contains", "error"), ("limit", "10000")]));
    assert_eq!(r.records.len(), 300);
    let r = go(
        &topic,
        &q(&[("regex", r"^p1 i=00[0-4]\d error$"), ("limit", "10000")]),
    );
    assert_eq!(r.records.len(), 5);
    let r = go(&topic, &q(&[("host", "web-02"), ("limit", "10000")]));
    assert_eq!(r.records.len(), 1500);
    let r = go(
        &topic,
        &q(&[("source", "/var/log/app[01].log"), ("limit", "10000")]),
    );
    assert_eq!(r.records.len(), 2000);
    let r = go(&topic, &q(&[("severity", "warning"), ("limit", "10000")]));
    assert_eq!(r.records.len(), 100, "err on partition 2 only");
    let r = go(&topic, &q(&[("severity", "debug"), ("limit", "10000")]));
    assert_eq!(r.records.len(), 1000, "every record with a severity");
    let r = go(&topic, &q(&[("contains", "no such text")]));
    assert!(r.records.is_empty() && r.complete);
    assert_eq!(r.scanned_records, 3000);
}

#[test]
fn time_ranges_use_the_index_and_order_and_limit_hold() {
    let (_d, topic) = store();
    // Records 100..=199 of the merged stream: T0+100s ..= T0+199s.
    let since = (T0 + 100_000).to_string();
    let until = (T0 + 199_000).to_string();
    let r = go(
        &topic,
        &q(&[("since", &since), ("until", &until), ("limit", "10000")]),
    );
    assert_eq!(r.records.len(), 100);
    assert_eq!(r.records[0].1.timestamp_ms, T0 + 100_000);
    assert!(
        r.scanned_records < 3000,
        "the time index skipped most: {}",
        r.scanned_records
    );

    let r = go(
        &topic,
        &q(&[
            ("since", &since),
            ("until", &until),
            ("order", "desc"),
            ("limit", "7"),
        ]),
    );
    let ts: Vec<i64> = r.records.iter().map(|(_, x)| x.timestamp_ms - T0).collect();
    assert_eq!(
        ts,
        [
            199_000, 198_000, 197_000, 196_000, 195_000, 194_000, 193_000
        ]
    );

    let r = go(
        &topic,
        &q(&[("order", "desc"), ("limit", "2"), ("contains", "error")]),
    );
    assert_eq!(msgs(&r), ["p2 i=0990 error", "p1 i=0990 error"]);

    // A window that matches nothing: before the first record, after the last.
    let before = (T0 - 10_000).to_string();
    let r = go(&topic, &q(&[("until", &before)]));
    assert!(r.records.is_empty());
    let after = (T0 + 4_000_000).to_string();
    let r = go(&topic, &q(&[("since", &after)]));
    assert!(r.records.is_empty());
    assert_eq!(r.scanned_records, 0);
    // Relative, from now = T0 + 10,000 s: the last hour holds nothing; the last
    // 8,000 s hold the records from T0 + 2,000 s on.
    let r = go(&topic, &q(&[("since", "1h")]));
    assert!(r.records.is_empty());
    let r = go(&topic, &q(&[("since", "8000s"), ("limit", "10000")]));
    assert_eq!(r.records.len(), 3000 - 2000);
}

#[test]
fn bad_parameters_are_clear_errors() {
    let bad = |k: &str, v: &str| {
        let mut p = QueryParams {
            topic: Some("app".into()),
            ..Default::default()
        };
        match k {
            "since" => p.since = Some(v.into()),
            "regex" => p.regex = Some(v.into()),
            "limit" => p.limit = Some(v.into()),
            "order" => p.order = Some(v.into()),
            "severity" => p.severity = Some(v.into()),
            "source" => p.source = Some(v.into()),
            _ => unreachable!(),
        }
        Query::parse(&p, T0).unwrap_err().to_string()
    };
    assert!(bad("since", "yesterday").contains("since"));
    assert!(bad("regex", "(unclosed").contains("regex"));
    assert!(bad("limit", "0").contains("limit"));
    assert!(bad("limit", "100001").contains("limit"));
    assert!(bad("order", "up").contains("order"));
    assert!(bad("severity", "loud").contains("severity"));
    assert!(bad("source", "[").contains("source"));
    assert!(
        Query::parse(&QueryParams::default(), T0)
            .unwrap_err()
            .to_string()
            .contains("topic")
    );
    assert_eq!(parse_time("15m", 1_000_000).unwrap(), 100_000);
    assert_eq!(
        parse_time("2026-11-25T14:01:34Z", 0).unwrap(),
        1_795_615_294_000
    );
}

/// The histogram counts exactly what the query returns, bucket by bucket, for
/// each filter; severities stack where records have one.
#[test]
fn histogram_buckets_add_up_to_the_query_count() {
    use super::histogram::{self, Buckets};
    let (_d, topic) = store();
    let reader = TopicReader::from(topic.clone());
    // Records span T0 .. T0 + 3000 s.
    let since = T0 - 5_000;
    let until = T0 + 3_005_000;
    for filters in [
        vec![],
        vec![("contains", "error")],
        vec![("host", "web-02")],
        vec![("severity", "err")],
        vec![("source", "/var/log/app[01].log"), ("regex", "i=0[0-4]")],
        vec![("since", "1795600500000"), ("until", "1795601200000")],
    ] {
        let mut params = filters.clone();
        params.push(("limit", "10000"));
        let query = q(&params);
        let want = go(&topic, &query);
        let mut f = query.filter.clone();
        let (s, u) = (f.since_ms.unwrap_or(since), f.until_ms.unwrap_or(until));
        f.since_ms = Some(s);
        f.until_ms = Some(u);
        for n in [1, 7, 60, 1000] {
            let b = Buckets::new(s, u, n);
            let h =
                histogram::run(&reader, &f, b, Instant::now() + Duration::from_secs(30)).unwrap();
            assert!(h.complete);
            assert_eq!(h.counts.len(), b.count);
            assert_eq!(
                h.total(),
                want.records.len() as u64,
                "{filters:?} in {n} buckets"
            );
            // Each bucket holds exactly the records whose time falls in it.
            let mut per = vec![0u64; b.count];
            for (_, r) in &want.records {
                per[((r.timestamp_ms - b.start_ms) / b.width_ms) as usize] += 1;
            }
            let got: Vec<u64> = h.counts.iter().map(|c| c.iter().sum()).collect();
            assert_eq!(got, per, "{filters:?} in {n} buckets");
        }
    }
    // Severity stacking: partition 2's records carry one (100 err, 900 info).
    let mut f = q(&[]).filter;
    f.since_ms = Some(since);
    f.until_ms = Some(until);
    let h = histogram::run(
        &reader,
        &f,
        Buckets::new(since, until, 1),
        Instant::now() + Duration::from_secs(30),
    )
    .unwrap();
    let c = h.counts.iter().fold([0u64; histogram::SLOTS], |mut a, c| {
        for (x, y) in a.iter_mut().zip(c) {
            *x += y;
        }
        a
    });
    assert_eq!((c[3], c[6], c[histogram::SLOTS - 1]), (100, 900, 2000));
    // A deadline already past: an incomplete answer, not an error.
    let h = histogram::run(&reader, &f, Buckets::new(since, until, 10), Instant::now()).unwrap();
    assert!(!h.complete);
}

/// Context: the record's own source only, nearest first, in offset order, across
/// blocks of other sources.
#[test]
fn context_keeps_to_the_records_source() {
    let (_d, topic) = store();
    let reader = TopicReader::from(topic.clone());
    let p = reader.partition(0).unwrap();
    // Partition 0: blocks of 50 offsets, even blocks web-01, odd web-02.
    let c = super::context::around(&p, 500, 5, 3).unwrap();
    assert_eq!((c.record.offset, &*c.record.block.host), (500, "web-01"));
    let offs = |v: &[StoredRecord]| v.iter().map(|r| r.offset).collect::<Vec<_>>();
    assert_eq!(offs(&c.before), [445, 446, 447, 448, 449]);
    assert_eq!(offs(&c.after), [501, 502, 503]);
    assert!(c.complete);
    let c = super::context::around(&p, 500, 60, 0).unwrap();
    let want: Vec<u64> = (340..350).chain(400..450).collect();
    assert_eq!(offs(&c.before), want);
    assert!(c.after.is_empty());
    // At the start and the end: what there is, complete.
    let c = super::context::around(&p, 0, 10, 10).unwrap();
    assert!(c.before.is_empty() && c.complete);
    assert_eq!(offs(&c.after), (1..11).collect::<Vec<_>>());
    let last = p.end_offset() - 1;
    let c = super::context::around(&p, last, 2, 10).unwrap();
    assert!(c.after.is_empty() && c.complete);
    assert_eq!(offs(&c.before), [last - 2, last - 1]);
    assert!(super::context::around(&p, p.end_offset(), 1, 1).is_err());
}

#[test]
fn field_filters_match_record_then_block_fields() {
    let (_d, topic) = store();
    // Partition 2's records carry {"severity": "err" | "info"}.
    let r = go(&topic, &q(&[("field.severity", "err"), ("limit", "10000")]));
    assert_eq!(r.records.len(), 100);
    let r = go(
        &topic,
        &q(&[
            ("field.severity", "info"),
            ("contains", "i=00"),
            ("limit", "10000"),
        ]),
    );
    assert_eq!(r.records.len(), 90);
    let r = go(
        &topic,
        &q(&[("field.nope.deeper", "x"), ("limit", "10000")]),
    );
    assert!(r.records.is_empty());
    let mut p = QueryParams {
        topic: Some("app".into()),
        ..Default::default()
    };
    p.extra.insert("field.".into(), "x".into());
    assert!(Query::parse(&p, T0).is_err(), "an empty key is refused");
}
