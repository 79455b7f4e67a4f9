//! The API behind the console, against a real collector fed by a real agent:
//! `/v1/histogram` adds up to `/v1/query` over a known file, `/v1/context` keeps to
//! one source, `/v1/agents` shows the connected agent.

use std::time::Duration;

use tributary_e2e::{Env, append_lines};

#[test]
fn histogram_context_and_agents_over_a_known_file() {
    let env = Env::new();
    let c = env.start_collector("topics:\n  app: {partitions: 2}\n");
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    // Two files (two sources); every 7th line of a.log is an error.
    append_lines(
        &logs.join("a.log"),
        (0..3000).map(|i| {
            let kind = if i % 7 == 0 { "ERROR" } else { "ok" };
            format!("a line {i:05} {kind}")
        }),
    );
    append_lines(
        &logs.join("b.log"),
        (0..1000).map(|i| format!("b line {i:05} ok")),
    );
    let yaml = format!(
        "host: console-e2e\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}/*.log\"]\n    read_from: beginning\n{}",
        env.path().join("agent-data").display(),
        logs.display(),
        env.output_yaml(&c, "lz4")
    );
    let mut agent = env.start_agent("agent", &yaml);
    c.wait_for_count("app", 4000, Duration::from_secs(30), &agent);

    // Histogram over the last hour, whole and filtered, against the query.
    for filter in ["", "&contains=ERROR", "&source=*a.log&regex=line%20000"] {
        let h = c
            .get(&format!(
                "/v1/histogram?topic=app&since=1h&buckets=30{filter}"
            ))
            .expect("histogram");
        let q = c
            .get(&format!("/v1/query?topic=app&since=1h&limit=10000{filter}"))
            .expect("query");
        let n = q["records"].as_array().unwrap().len() as u64;
        let sum: u64 = h["buckets"]
            .as_array()
            .unwrap()
            .iter()
            .map(|b| b["count"].as_u64().unwrap())
            .sum();
        assert_eq!(sum, n, "{filter}: {h}");
        assert_eq!(h["total"].as_u64(), Some(n));
        assert_eq!(h["complete"], true);
    }
    let h = c
        .get("/v1/histogram?topic=app&since=1h&contains=ERROR")
        .unwrap();
    assert_eq!(h["total"], 429, "every 7th of 3000 lines");

    // Context: a line of a.log in the middle, with its own neighbours only.
    let q = c
        .get("/v1/query?topic=app&contains=a%20line%2001500")
        .unwrap();
    let r = &q["records"][0];
    let (p, o) = (
        r["partition"].as_u64().unwrap(),
        r["offset"].as_u64().unwrap(),
    );
    let ctx = c
        .get(&format!(
            "/v1/context?topic=app&partition={p}&offset={o}&before=3&after=2"
        ))
        .unwrap();
    let msgs = |k: &str| -> Vec<String> {
        ctx[k]
            .as_array()
            .unwrap()
            .iter()
            .map(|r| r["message"].as_str().unwrap().to_owned())
            .collect()
    };
    assert_eq!(ctx["record"]["message"], "a line 01500 ok");
    assert_eq!(
        msgs("before"),
        ["a line 01497 ok", "a line 01498 ERROR", "a line 01499 ok"]
    );
    assert_eq!(msgs("after"), ["a line 01501 ok", "a line 01502 ok"]);
    assert_eq!(ctx["complete"], true);
    let err = c
        .get("/v1/context?topic=app&partition=0&offset=99999999")
        .unwrap_err();
    assert!(err.to_string().contains("416"), "{err}");

    // Agents: the one connected, with what it sent.
    let agents = c.get("/v1/agents").unwrap();
    let list = agents.as_array().unwrap();
    assert_eq!(list.len(), 1, "{agents}");
    let a = &list[0];
    assert_eq!(a["host"], "console-e2e");
    assert_eq!(a["identity"], "tributary-agent");
    assert!(a["address"].as_str().unwrap().starts_with("127.0.0.1:"));
    assert_eq!(a["records"], 4000);
    assert!(a["version"].as_str().is_some_and(|v| !v.is_empty()));
    assert!(a["connected_since"].is_string() && a["last_batch"].is_string());
    agent.terminate(Duration::from_secs(10));
    // Gone once it disconnected.
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    while !c.get("/v1/agents").unwrap().as_array().unwrap().is_empty() {
        assert!(std::time::Instant::now() < deadline, "agent still listed");
        std::thread::sleep(Duration::from_millis(50));
    }
}
