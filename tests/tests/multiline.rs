//! `multiline` end to end: stack traces written by real runtimes (python3, and Java
//! when a JDK is installed) arrive as one record each with every line in order; a
//! record being assembled survives SIGKILLs of the agent and rename rotations
//! exactly once and whole; a timeout flushes a record no line follows, SIGTERM
//! flushes one before the last checkpoint, `max_lines` cuts and marks.

use std::collections::BTreeMap;
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use tributary_e2e::{Collector, Env, Proc, append_lines};

const WAIT: Duration = Duration::from_secs(60);

fn agent_yaml(env: &Env, c: &Collector, data: &str, include: &Path, multiline: &str) -> String {
    format!(
        "host: ml-host\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n    read_from: beginning\n    multiline: {multiline}\n{}",
        env.path().join(data).display(),
        include.display(),
        env.output_yaml(c, "lz4")
    )
}

/// Messages stored in `topic`, counted.
fn stored(c: &Collector, topic: &str) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for r in c.read_all(topic) {
        *m.entry(r.message).or_default() += 1;
    }
    m
}

fn counted(msgs: &[String]) -> BTreeMap<String, usize> {
    let mut m = BTreeMap::new();
    for s in msgs {
        *m.entry(s.clone()).or_default() += 1;
    }
    m
}

/// Python logs through `logging` (message lines, and `logging.exception` with
/// chained exceptions: `During handling…`, `raise … from …`) into a file, and
/// writes what each record's text is as JSON beside it.
const PYTHON: &str = r#"
import json, logging, sys
log_path, expected_path = sys.argv[1], sys.argv[2]
expected = []
class Keep(logging.Handler):
    def emit(self, record):
        expected.append(self.format(record))
fmt = logging.Formatter("%(asctime)s %(levelname)s %(message)s")
fh = logging.FileHandler(log_path)
keep = Keep()
for h in (fh, keep):
    h.setFormatter(fmt)
    logging.getLogger().addHandler(h)
logging.getLogger().setLevel(logging.INFO)

def lookup(d, k):
    return d[k]

def load(i):
    try:
        lookup({}, "user-%d" % i)
    except KeyError as e:
        if i % 2:
            raise ValueError("cannot load %d" % i)
        raise RuntimeError("cannot load %d" % i) from e

for i in range(40):
    logging.info("request %d served", i)
    if i % 3 == 0:
        try:
            load(i)
        except Exception:
            logging.exception("request %d failed", i)
fh.close()
json.dump(expected, open(expected_path, "w"))
"#;

/// Java prints traces with `Caused by:` and `... N more` into a file, and each
/// trace's text into another, separated by a line of `=`.
const JAVA: &str = r#"
import java.io.*;
public class Traces {
    static void inner(int i) { throw new IllegalStateException("inner " + i); }
    static void outer(int i) {
        try { inner(i); } catch (IllegalStateException e) { throw new RuntimeException("outer " + i, e); }
    }
    public static void main(String[] a) throws Exception {
        try (PrintWriter log = new PrintWriter(new FileWriter(a[0]));
             PrintWriter exp = new PrintWriter(new FileWriter(a[1]))) {
            for (int i = 0; i < 12; i++) {
                log.println("2026-12-05 10:00:00 INFO tick " + i);
                exp.println("2026-12-05 10:00:00 INFO tick " + i);
                exp.println("=");
                if (i % 4 == 0) {
                    try { outer(i); } catch (RuntimeException e) {
                        StringWriter sw = new StringWriter();
                        e.printStackTrace(new PrintWriter(sw));
                        log.print(sw);
                        exp.print(sw);
                        exp.println("=");
                    }
                }
            }
        }
    }
}
"#;

#[test]
fn real_python_and_java_traces_arrive_as_one_record_each() {
    let env = Env::new();
    let c = env.start_collector("");
    let dir = env.path().join("py");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("app.log");
    let exp = dir.join("expected.json");
    let script = dir.join("traces.py");
    std::fs::write(&script, PYTHON).unwrap();
    let st = Command::new("python3")
        .args([script.as_os_str(), log.as_os_str(), exp.as_os_str()])
        .status()
        .expect("python3 runs");
    assert!(st.success());
    let expected: Vec<String> =
        serde_json::from_str(&std::fs::read_to_string(&exp).unwrap()).unwrap();
    assert_eq!(expected.len(), 54, "40 info lines and 14 tracebacks");
    assert!(
        expected
            .iter()
            .any(|e| e.contains("During handling of the above exception"))
    );
    assert!(
        expected
            .iter()
            .any(|e| e.contains("direct cause of the following exception"))
    );
    let yaml = agent_yaml(
        &env,
        &c,
        "py-agent",
        &log,
        "{preset: python, timeout_ms: 500}",
    );
    let mut agent = env.start_agent("py-agent", &yaml);
    c.wait_for_count("app", expected.len() as u64, WAIT, &agent);
    assert_eq!(stored(&c, "app"), counted(&expected));
    agent.terminate(Duration::from_secs(10));

    // Java, when a JDK is here (Debian's openjdk; `java File.java` runs a source file).
    let java_ok = Command::new("java")
        .arg("-version")
        .output()
        .is_ok_and(|o| o.status.success());
    if !java_ok {
        eprintln!("SKIPPED: the Java part (no `java` on PATH; install openjdk-17-jdk-headless)");
        return;
    }
    let jdir = env.path().join("java");
    std::fs::create_dir_all(&jdir).unwrap();
    let src = jdir.join("Traces.java");
    std::fs::write(&src, JAVA).unwrap();
    let jlog = jdir.join("app.log");
    let jexp = jdir.join("expected.txt");
    let st = Command::new("java")
        .args([src.as_os_str(), jlog.as_os_str(), jexp.as_os_str()])
        .status()
        .expect("java runs");
    assert!(st.success());
    let text = std::fs::read_to_string(&jexp).unwrap();
    let expected: Vec<String> = text
        .split("\n=\n")
        .map(|s| s.trim_end_matches('\n').to_owned())
        .filter(|s| !s.is_empty())
        .collect();
    assert_eq!(expected.len(), 15, "12 ticks and 3 traces");
    assert!(
        expected
            .iter()
            .any(|e| e.contains("\nCaused by: ") && e.contains(" more"))
    );
    let yaml = agent_yaml(
        &env,
        &c,
        "java-agent",
        &jlog,
        "{preset: java, timeout_ms: 500}",
    )
    .replace("topic: app", "topic: java");
    let mut agent = env.start_agent("java-agent", &yaml);
    c.wait_for_count("java", expected.len() as u64, WAIT, &agent);
    assert_eq!(stored(&c, "java"), counted(&expected));
    agent.terminate(Duration::from_secs(10));
}

/// Record `k`: a first line and `k % 7` continuation lines.
fn record(k: usize) -> Vec<String> {
    let mut v = vec![format!("2026-12-05T10:00:00Z ERROR record {k} failed")];
    v.extend((0..k % 7).map(|j| format!("\tat frame {k}.{j}")));
    v
}

#[test]
fn records_survive_sigkill_mid_record_and_rename_rotation_whole_and_once() {
    let env = Env::new();
    let c = env.start_collector("");
    let dir = env.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("app.log");
    // Only the live name: a renamed file is read to its end, then its last record
    // (which no line will follow) leaves. No timeout in the way.
    let yaml = agent_yaml(&env, &c, "agent", &log, "{preset: java, timeout_ms: 60000}");
    let mut agent: Proc = env.start_agent("agent", &yaml);
    let mut expected: Vec<String> = Vec::new();
    let mut next = 0usize;
    for round in 0..5 {
        // Whole records, then the first line and part of the frames of one more.
        let mut lines = Vec::new();
        for _ in 0..30 {
            let r = record(next);
            expected.push(r.join("\n"));
            lines.extend(r);
            next += 1;
        }
        let mut half = vec![format!(
            "2026-12-05T10:00:00Z ERROR record {next} cut by a kill"
        )];
        half.extend((0..6).map(|j| format!("\tat frame {next}.{j}")));
        next += 1;
        let cut = 1 + round;
        lines.extend(half[..cut].iter().cloned());
        append_lines(&log, lines);
        // Every record before the unfinished one is stored: the agent has read the
        // unfinished one's first lines too (they came in the same write).
        c.wait_for_count("app", expected.len() as u64, WAIT, &agent);
        agent.kill();
        // The rest of it, and a next record, while the agent is down.
        expected.push(half.join("\n"));
        let mut rest: Vec<String> = half[cut..].to_vec();
        let r = record(next);
        expected.push(r.join("\n"));
        rest.extend(r);
        next += 1;
        append_lines(&log, rest);
        agent = env.start_agent("agent", &yaml);
        // All but the last record, which waits for a line that may continue it.
        c.wait_for_count("app", expected.len() as u64 - 1, WAIT, &agent);
        // Renamed: the reader finishes the old file, and its last record leaves.
        std::fs::rename(&log, dir.join("app.log.1")).unwrap();
        c.wait_for_count("app", expected.len() as u64, WAIT, &agent);
    }
    agent.terminate(Duration::from_secs(10));
    let got = stored(&c, "app");
    let want = counted(&expected);
    let dup: Vec<_> = got.iter().filter(|(_, n)| **n > 1).collect();
    let missing: Vec<_> = want.keys().filter(|k| !got.contains_key(*k)).collect();
    assert!(
        dup.is_empty() && missing.is_empty(),
        "duplicates {dup:?}, missing {missing:?}"
    );
    assert_eq!(got, want);
}

#[test]
fn timeout_flush_sigterm_flush_and_max_lines_cut() {
    let env = Env::new();
    let c = env.start_collector("");
    let dir = env.path().join("logs");
    std::fs::create_dir_all(&dir).unwrap();
    let log = dir.join("t.log");
    let yaml = agent_yaml(
        &env,
        &c,
        "agent",
        &log,
        "{start_pattern: '^\\d{4}-', timeout_ms: 300, max_lines: 50}",
    );
    let mut agent = env.start_agent("agent", &yaml);
    // No line follows: it leaves after the timeout, whole.
    append_lines(
        &log,
        ["2026-12-05 first".into(), "  a".into(), "  b".into()],
    );
    c.wait_for_count("app", 1, WAIT, &agent);
    let recs = c.read_all("app");
    assert_eq!(recs[0].message, "2026-12-05 first\n  a\n  b");
    assert_ne!(recs[0].json["partial"], true);
    // 120 lines of one record: cut after 50 and 100 lines, the first two marked.
    let mut lines = vec!["2026-12-05 long".to_owned()];
    lines.extend((1..120).map(|i| format!("  line {i}")));
    lines.push("2026-12-05 after".into());
    append_lines(&log, lines.clone());
    c.wait_for_count("app", 5, WAIT, &agent);
    let recs = c.read_all("app");
    assert_eq!(recs.len(), 5);
    assert_eq!(recs[1].message, lines[..50].join("\n"));
    assert_eq!(recs[2].message, lines[50..100].join("\n"));
    assert_eq!(recs[3].message, lines[100..120].join("\n"));
    assert_eq!(recs[4].message, "2026-12-05 after");
    let partial: Vec<bool> = recs.iter().map(|r| r.json["partial"] == true).collect();
    assert_eq!(partial, [false, true, true, false, false]);
    agent.terminate(Duration::from_secs(10));

    // SIGTERM sends the record still being assembled before the last checkpoint,
    // and a restart does not send it again.
    let yaml = yaml.replace("timeout_ms: 300", "timeout_ms: 600000");
    let mut agent = env.start_agent("agent", &yaml);
    append_lines(
        &log,
        [
            "2026-12-05 before".into(),
            "2026-12-05 pending".into(),
            "  still".into(),
        ],
    );
    c.wait_for_count("app", 6, WAIT, &agent);
    let st = agent.terminate(Duration::from_secs(10));
    assert!(st.is_some_and(|s| s.success()), "{}", agent.log_text());
    assert_eq!(c.count("app"), 7, "{}", agent.log_text());
    let mut agent = env.start_agent("agent", &yaml);
    append_lines(&log, ["2026-12-05 later".into(), "2026-12-05 last".into()]);
    c.wait_for_count("app", 8, WAIT, &agent);
    agent.terminate(Duration::from_secs(10));
    let msgs: Vec<String> = c.read_all("app").into_iter().map(|r| r.message).collect();
    assert_eq!(
        msgs[5..],
        [
            "2026-12-05 before",
            "2026-12-05 pending\n  still",
            "2026-12-05 later",
            "2026-12-05 last"
        ]
    );
}
