//! The descriptor budget: a store of many topics and segments holds no more
//! descriptors than its budget, opens under a descriptor limit far below its
//! number of files, and reads and writes everything correctly meanwhile. One test
//! in this binary: it lowers the descriptor limit of the whole test process.

mod util;

use std::collections::BTreeMap;
use std::process::Command;

use tributary_store::{Budget, Store, StoreOptions, TopicConfig};
use util::{Rec, Rng, append, flat, gen_batch, logs, read_all, recs};

fn open_fds() -> usize {
    std::fs::read_dir("/proc/self/fd").map_or(0, |d| d.count())
}

/// Lower this process's soft descriptor limit with util-linux `prlimit`.
fn set_soft_nofile(n: usize) {
    let status = Command::new("prlimit")
        .args([
            "--pid",
            &std::process::id().to_string(),
            &format!("--nofile={n}:"),
        ])
        .status()
        .expect("prlimit (util-linux)");
    assert!(status.success(), "prlimit --nofile={n}:");
}

const TOPICS: usize = 300;

#[test]
fn many_topics_and_segments_fit_a_small_descriptor_limit() {
    let dir = tempfile::tempdir().unwrap();
    let budget = Budget {
        open_writers: 8,
        read_handles: 16,
    };
    let opts = StoreOptions {
        index_interval_bytes: 256,
        budget,
        ..StoreOptions::DEFAULT
    };
    // 300 topics of 3+ segments are over 2,700 files; the process may hold 160.
    set_soft_nofile(160);
    let base = open_fds();
    let bound = base + budget.descriptors() + 4;
    let cfg = TopicConfig {
        partitions: 1,
        segment_bytes: 1024,
    };
    let mut rng = Rng(7);
    let mut want: BTreeMap<String, Vec<Rec>> = BTreeMap::new();
    {
        let store = Store::open(dir.path(), opts).unwrap();
        for t in 0..TOPICS {
            let name = format!("t{t:03}");
            let p = store.create_topic(&name, cfg).unwrap().partitions()[0].clone();
            for _ in 0..8 {
                let b = gen_batch(&mut rng, 1, 4, 80);
                append(&p, &b);
                want.entry(name.clone()).or_default().extend(flat(&b));
            }
            p.sync().unwrap();
            assert!(logs(p.dir()).len() >= 3, "{name} rolled");
            let fds = open_fds();
            assert!(
                fds <= bound,
                "{fds} descriptors open after topic {t}, bound {bound}"
            );
        }
        // Reads of every topic go through the read cache, evicting as they go.
        for (name, recs_wanted) in &want {
            let p = store.topic(name).unwrap().partitions()[0].clone();
            assert_eq!(&recs(&read_all(&p, 0, 7)), recs_wanted, "{name}");
        }
        let usage = store.descriptors();
        assert!(usage.open_writers <= budget.open_writers, "{usage:?}");
        assert!(usage.read_handles <= budget.read_handles, "{usage:?}");
        assert!(open_fds() <= bound);
        // Idle partitions let go of their files altogether.
        store.release_idle(i64::MAX);
        assert_eq!(store.descriptors().open_writers, 0);
    }
    assert!(open_fds() <= base + 1, "everything closed with the store");

    // Open again under the same limit, then read and write every topic.
    let store = Store::open(dir.path(), opts).unwrap();
    assert_eq!(store.topics().len(), TOPICS);
    assert!(open_fds() <= bound);
    for (name, recs_wanted) in &mut want {
        let p = store.topic(name).unwrap().partitions()[0].clone();
        let b = gen_batch(&mut rng, 1, 3, 80);
        append(&p, &b);
        recs_wanted.extend(flat(&b));
        assert_eq!(&recs(&read_all(&p, 0, 100)), recs_wanted, "{name}");
        assert!(open_fds() <= bound);
    }
}
