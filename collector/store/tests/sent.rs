//! Batches stored as their sender compressed them (`Partition::append_sent`): the
//! agent's lz4 bytes go to disk unchanged, with the identity the collector
//! authenticated beside them (`ATTR_AGENT`), and every reader sees the blocks
//! stamped with it, exactly as if the stamped payload had been compressed again:
//! reads, scans, deduplication (before and after a reopen) and recovery.

use std::ops::ControlFlow;

use tributary_common::codec::{self, Compression};
use tributary_common::record::{self, BlockWriter};
use tributary_store::batch::{ATTR_AGENT, BatchHeader, HEADER_LEN};
use tributary_store::{Partition, Sent, Store, StoreOptions, TopicConfig};

/// One block of `n` access-log-like lines from `/var/log/app.log`, unstamped.
fn unstamped(source_id: u64, lines: std::ops::Range<u64>) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut b = BlockWriter::begin(&mut buf, "web-01", "/var/log/app.log", source_id, b"");
    for i in lines {
        let line = format!(
            "10.0.{}.{} - - [06/Dec/2026:10:00:00 +0000] \"GET /api/items/{i} HTTP/1.1\" 200 {}",
            i % 7,
            i % 250,
            i * 13 % 9000
        );
        b.push(&mut buf, 0, 1_000 + i as i64, i * 120, b"", line.as_bytes());
    }
    b.finish(&mut buf);
    buf
}

fn stamped(payload: &[u8], agent: &str) -> Vec<u8> {
    let mut out = Vec::new();
    record::stamp_agent(payload, agent, &mut out).unwrap();
    out
}

/// Append `raw` as an agent sends it (lz4) from a connection authenticated as `agent`.
fn append_as_sent(p: &Partition, raw: &[u8], agent: &str) -> tributary_store::AppendResult {
    let mut scratch = Vec::new();
    let compressed = codec::compress(Compression::Lz4, raw, &mut scratch).to_vec();
    let payload = stamped(raw, agent);
    let summary = record::summarize(&payload).unwrap();
    let sent = Sent {
        codec: Compression::Lz4,
        bytes: &compressed,
        len: raw.len(),
        agent,
    };
    p.append_sent(&payload, &summary, 1_765_000_000_000, Some(sent))
        .unwrap()
}

fn first_header(p: &Partition) -> BatchHeader {
    let log = std::fs::read_dir(p.dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .find(|f| f.extension().is_some_and(|e| e == "log"))
        .unwrap();
    let bytes = std::fs::read(log).unwrap();
    let head: [u8; HEADER_LEN] = bytes[..HEADER_LEN].try_into().unwrap();
    BatchHeader::decode(&head).unwrap()
}

fn check_records(p: &Partition, n: u64, agent: &str) {
    let r = p.read(0, 100_000, usize::MAX).unwrap();
    assert_eq!(r.records.len() as u64, n);
    for (i, rec) in r.records.iter().enumerate() {
        assert_eq!(&*rec.block.agent, agent);
        assert_eq!(&*rec.block.host, "web-01");
        assert_eq!(rec.source_offset, i as u64 * 120);
        assert!(
            rec.message
                .ends_with(format!("{}", i as u64 * 13 % 9000).as_bytes())
        );
    }
    let mut seen = 0u64;
    p.scan(0, u64::MAX, |off, block, _| {
        assert_eq!(block.agent, agent);
        assert_eq!(off, seen);
        seen += 1;
        ControlFlow::Continue(())
    })
    .unwrap();
    assert_eq!(seen, n);
}

#[test]
fn stamped_batches_keep_the_senders_bytes_and_read_stamped() {
    let dir = tempfile::tempdir().unwrap();
    let cfg = TopicConfig {
        partitions: 1,
        segment_bytes: 8 << 20,
    };
    let raw = unstamped(7, 0..2_000);
    {
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let topic = store.create_topic("app", cfg).unwrap();
        let p = topic.partition(0).unwrap().clone();
        let r = append_as_sent(&p, &raw, "web-01.example");
        assert_eq!((r.appended, r.duplicates), (2_000, 0));

        // On disk: the agent's bytes with the identity beside them, not recompressed.
        let h = first_header(&p);
        assert_eq!(h.attributes, Compression::Lz4.code() | ATTR_AGENT);
        assert_eq!(h.codec(), Compression::Lz4);
        let mut scratch = Vec::new();
        let sent_len = codec::compress(Compression::Lz4, &raw, &mut scratch).len();
        assert_eq!(h.payload_len(), 2 + "web-01.example".len() + 4 + sent_len);
        check_records(&p, 2_000, "web-01.example");

        // A resend is recognised whichever way it comes: the stored identity keys
        // the deduplication like a stamped payload would.
        let again = append_as_sent(&p, &raw, "web-01.example");
        assert_eq!((again.appended, again.duplicates), (0, 2_000));
        let plain = stamped(&raw, "web-01.example");
        let r = p
            .append(&plain, &record::summarize(&plain).unwrap())
            .unwrap();
        assert_eq!((r.appended, r.duplicates), (0, 2_000));
        // Another identity is another sender.
        let other = append_as_sent(&p, &unstamped(7, 0..10), "web-02.example");
        assert_eq!((other.appended, other.duplicates), (10, 0));
        // Half new, half resent: the new half is stored (rebuilt and compressed).
        let half = append_as_sent(&p, &unstamped(7, 1_000..3_000), "web-01.example");
        assert_eq!((half.appended, half.duplicates), (1_000, 1_000));
        p.sync().unwrap();
    }
    // Reopened: recovery walks the batches, the dedup table is rebuilt from them.
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let p = store.topic("app").unwrap().partition(0).unwrap().clone();
    assert_eq!(p.end_offset(), 3_010);
    let r = append_as_sent(&p, &raw, "web-01.example");
    assert_eq!((r.appended, r.duplicates), (0, 2_000));
    let all = p.read(0, 100_000, usize::MAX).unwrap().records;
    assert_eq!(all.len(), 3_010);
    assert!(
        all[..2_000]
            .iter()
            .all(|r| &*r.block.agent == "web-01.example")
    );
    assert!(
        all[2_000..2_010]
            .iter()
            .all(|r| &*r.block.agent == "web-02.example")
    );
    assert!(
        all[2_010..]
            .iter()
            .all(|r| &*r.block.agent == "web-01.example")
    );
}

#[test]
fn an_unstamped_sent_batch_is_stored_as_it_came() {
    let dir = tempfile::tempdir().unwrap();
    let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
    let cfg = TopicConfig {
        partitions: 1,
        segment_bytes: 8 << 20,
    };
    let p = store
        .create_topic("app", cfg)
        .unwrap()
        .partition(0)
        .unwrap()
        .clone();
    let raw = unstamped(9, 0..500);
    let mut scratch = Vec::new();
    let compressed = codec::compress(Compression::Lz4, &raw, &mut scratch).to_vec();
    let sent = Sent {
        codec: Compression::Lz4,
        bytes: &compressed,
        len: raw.len(),
        agent: "",
    };
    p.append_sent(&raw, &record::summarize(&raw).unwrap(), 1, Some(sent))
        .unwrap();
    let h = first_header(&p);
    assert_eq!(h.attributes, Compression::Lz4.code());
    assert_eq!(h.payload_len(), 4 + compressed.len());
    check_records(&p, 500, "");
}
