//! `parse: json` end to end: JSON lines shipped by a real agent arrive with their
//! keys as fields, their message and event time, a severity from `level`; lines
//! that are not JSON arrive as they are with `fields.parse_error`; `--field` and
//! `--severity` queries over them give exact counts.

use std::time::Duration;

use tributary_e2e::{Env, append_lines};

#[test]
fn json_lines_become_fields_message_time_and_answer_field_queries() {
    let env = Env::new();
    let c = env.start_collector("");
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.json");
    let t0 = tributary_common::timefmt::now_ms() - 60_000;
    let mut lines: Vec<String> = (0..300)
        .map(|i| {
            let level = if i % 10 == 0 { "error" } else { "info" };
            let db = if i % 3 == 0 { "orders" } else { "users" };
            format!(
                r#"{{"ts":{},"level":"{level}","msg":"request {i} done","ctx":{{"db":"{db}","ms":{i}}},"ok":{}}}"#,
                t0 + i,
                i % 2 == 0
            )
        })
        .collect();
    lines.push("not json at all".into());
    lines.push(r#"{"msg": "truncated object""#.into());
    let big: String = (0..2000).map(|i| format!(r#""k{i}":{i},"#)).collect();
    lines.push(format!(r#"{{{big}"msg":"big one"}}"#));
    append_lines(&log, lines);
    let yaml = format!(
        "host: json-host\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n    read_from: beginning\n    parse: json\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&c, "lz4")
    );
    let mut agent = env.start_agent("agent", &yaml);
    c.wait_for_count("app", 303, Duration::from_secs(30), &agent);
    let recs = c.read_all("app");
    assert_eq!(recs.len(), 303);
    let r7 = recs
        .iter()
        .find(|r| r.message == "request 7 done")
        .expect("record 7");
    assert_eq!(r7.fields["ctx"]["db"], "users");
    assert_eq!(r7.fields["ctx"]["ms"], 7);
    assert_eq!(r7.fields["ok"], false);
    assert_eq!(r7.fields["severity"], "info");
    assert!(r7.fields.get("msg").is_none());
    assert_eq!(
        tributary_common::timefmt::parse_ms(r7.json["timestamp"].as_str().unwrap()).unwrap(),
        t0 + 7,
        "the event time is the line's"
    );
    for raw in ["not json at all", r#"{"msg": "truncated object""#] {
        let r = recs.iter().find(|r| r.message == raw).expect(raw);
        assert!(r.fields["parse_error"].is_string(), "{:?}", r.fields);
    }
    let big = recs.iter().find(|r| r.message == "big one").expect("big");
    assert_eq!(big.fields["k1999"], 1999);

    // Field and severity queries, with the CLI.
    let api = format!("127.0.0.1:{}", c.api_port);
    let count = |args: &[&str]| -> usize {
        let mut all = vec!["query", "--api", &api, "--topic", "app", "--limit", "10000"];
        all.extend_from_slice(args);
        let (code, out, err) = tributary_e2e::run("tributary", &all);
        assert_eq!(code, 0, "{err}");
        out.lines().count()
    };
    assert_eq!(count(&["--field", "ctx.db=orders"]), 100);
    assert_eq!(
        count(&["--field", "ctx.db=orders", "--field", "ok=true"]),
        50
    );
    assert_eq!(count(&["--field", "ctx.ms=42"]), 1);
    assert_eq!(count(&["--severity", "err"]), 30);
    // i = 10 and 100, 110, … 190.
    assert_eq!(
        count(&["--field", "severity=err", "--grep", "request 1"]),
        11
    );
    agent.terminate(Duration::from_secs(10));
}
