//! The `journald` input end to end, on journal files made here from known entries
//! by `systemd-journal-remote` (Debian package `systemd-journal-remote`, installed
//! by `.ci/run`): every entry arrives once with its host, time, fields and
//! severity; entries appended while the agent is SIGKILLed arrive exactly once; a
//! unit filter selects exactly its entries.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::Duration;

use tributary_e2e::{Collector, Env};

const WAIT: Duration = Duration::from_secs(60);
const T0_US: i64 = 1_796_000_000_000_000;

fn journal_remote() -> Option<PathBuf> {
    [
        "/lib/systemd/systemd-journal-remote",
        "/usr/lib/systemd/systemd-journal-remote",
    ]
    .iter()
    .map(PathBuf::from)
    .find(|p| p.exists())
}

/// Entry `i` in the export format: two hosts' worth of units and priorities, a
/// user field, and every 50th message binary (a newline and a NUL in it).
fn entry(i: usize) -> Vec<u8> {
    let unit = if i.is_multiple_of(3) {
        "nginx.service"
    } else {
        "cron.service"
    };
    let mut e = format!(
        "__REALTIME_TIMESTAMP={}\n_HOSTNAME=web-{}\n_SYSTEMD_UNIT={unit}\n_PID={}\nPRIORITY={}\nSYSLOG_IDENTIFIER=app\nREQUEST_ID=req-{i}\n",
        T0_US + i as i64 * 1000,
        i % 2,
        1000 + i,
        i % 8
    )
    .into_bytes();
    if i % 50 == 7 {
        let m = message(i);
        e.extend_from_slice(b"MESSAGE\n");
        e.extend_from_slice(&(m.len() as u64).to_le_bytes());
        e.extend_from_slice(m.as_bytes());
        e.push(b'\n');
    } else {
        e.extend_from_slice(format!("MESSAGE={}\n", message(i)).as_bytes());
    }
    e.push(b'\n');
    e
}

fn message(i: usize) -> String {
    if i % 50 == 7 {
        format!("entry {i} line one\nline two \u{0}end")
    } else {
        format!("entry {i} done")
    }
}

/// Append entries `range` to the journal file `file` through systemd-journal-remote.
fn write_journal(remote: &Path, file: &Path, range: std::ops::Range<usize>) {
    let export = file.with_extension(format!("{}.export", range.start));
    let data: Vec<u8> = range.flat_map(entry).collect();
    std::fs::write(&export, data).unwrap();
    let out = Command::new(remote)
        .arg(format!("--output={}", file.display()))
        .arg(&export)
        .output()
        .expect("systemd-journal-remote runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
}

fn agent_yaml(
    env: &Env,
    c: &Collector,
    data: &str,
    topic: &str,
    extra: &str,
    dir: &Path,
) -> String {
    format!(
        "host: journal-agent\ndata_dir: {}\ninputs:\n  - type: journald\n    topic: {topic}\n    directory: {}\n{extra}{}",
        env.path().join(data).display(),
        dir.display(),
        env.output_yaml(c, "lz4")
    )
}

fn by_message(c: &Collector, topic: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in c.read_all(topic) {
        *m.entry(r.message).or_default() += 1;
    }
    m
}

#[test]
fn journal_entries_arrive_once_with_fields_across_sigkill_and_by_unit() {
    if Command::new("journalctl")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIPPED: journalctl is not installed (apt install systemd)");
        return;
    }
    let Some(remote) = journal_remote() else {
        eprintln!(
            "SKIPPED: systemd-journal-remote is not installed (apt install systemd-journal-remote)"
        );
        return;
    };
    let env = Env::new();
    let c = env.start_collector("");
    let dir = env.path().join("journal");
    std::fs::create_dir_all(&dir).unwrap();
    let file = dir.join("remote.journal");
    write_journal(&remote, &file, 0..200);

    let yaml = agent_yaml(&env, &c, "agent", "journal", "", &dir);
    let mut agent = env.start_agent("agent", &yaml);
    c.wait_for_count("journal", 200, WAIT, &agent);
    // Killed right away: the last acknowledgements may not be saved yet, so what
    // the agent sends again is dropped by the collector.
    agent.kill();
    let recs = c.read_all("journal");
    assert_eq!(recs.len(), 200);
    let r = recs
        .iter()
        .find(|r| r.message == "entry 9 done")
        .expect("entry 9");
    assert_eq!(r.host, "web-1");
    assert_eq!(r.source, "journald");
    assert_eq!(r.fields["_SYSTEMD_UNIT"], "nginx.service");
    assert_eq!(r.fields["_PID"], "1009");
    assert_eq!(r.fields["SYSLOG_IDENTIFIER"], "app");
    assert_eq!(r.fields["REQUEST_ID"], "req-9");
    assert_eq!(r.fields["PRIORITY"], "1");
    assert_eq!(r.fields["severity"], "alert");
    assert!(r.fields.get("_HOSTNAME").is_none() && r.fields.get("MESSAGE").is_none());
    let t = tributary_common::timefmt::parse_ms(r.json["timestamp"].as_str().unwrap()).unwrap();
    assert_eq!(t, (T0_US + 9_000) / 1000, "the entry's own time");
    let bin = recs
        .iter()
        .find(|r| r.message.starts_with("entry 57 "))
        .expect("binary");
    assert_eq!(bin.message, message(57), "binary-safe");

    // Appended while the agent is down: each arrives once after the restart.
    write_journal(&remote, &file, 200..300);
    let mut agent = env.start_agent("agent", &yaml);
    c.wait_for_count("journal", 300, WAIT, &agent);
    // And while it runs.
    write_journal(&remote, &file, 300..350);
    c.wait_for_count("journal", 350, WAIT, &agent);
    agent.terminate(Duration::from_secs(10));
    let got = by_message(&c, "journal");
    let want: BTreeMap<String, usize> = (0..350).map(|i| (message(i), 1)).collect();
    assert_eq!(got, want, "every entry exactly once");

    // A unit filter: exactly nginx's entries.
    let yaml = agent_yaml(
        &env,
        &c,
        "agent-nginx",
        "nginx",
        "    units: [nginx.service]\n",
        &dir,
    );
    let mut agent = env.start_agent("agent-nginx", &yaml);
    let nginx = (0..350usize).filter(|i| i.is_multiple_of(3)).count() as u64;
    c.wait_for_count("nginx", nginx, WAIT, &agent);
    // One more entry of each unit: only nginx's arrives, and it proves the filter
    // has read past the cron entry before it.
    write_journal(&remote, &file, 350..352);
    c.wait_for_count("nginx", nginx + 1, WAIT, &agent);
    agent.terminate(Duration::from_secs(10));
    let recs = c.read_all("nginx");
    assert_eq!(recs.len() as u64, nginx + 1);
    assert!(
        recs.iter()
            .all(|r| r.fields["_SYSTEMD_UNIT"] == "nginx.service")
    );
}
