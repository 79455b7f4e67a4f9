//! Query, follow, consumer groups and installing, as a user does them: real
//! collector and agents on 127.0.0.1, the `tributary` CLI as a process, and the
//! certificates checked by openssl.

use std::collections::HashMap;
use std::path::Path;
use std::process::{Command, Stdio};

use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_e2e::{Env, Proc, append_lines, free_port, run};

/// Messages of the JSON lines in `stdout`.
fn messages(stdout: &str) -> Vec<String> {
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["message"].as_str().expect("message").to_owned()
        })
        .collect()
}

fn query(api: &str, args: &[&str]) -> Vec<String> {
    let mut all = vec!["query", "--api", api, "--topic", "app"];
    if !args.contains(&"--limit") {
        all.extend(["--limit", "10000"]);
    }
    all.extend_from_slice(args);
    let (code, stdout, stderr) = run("tributary", &all);
    assert_eq!(code, 0, "query {args:?}: {stderr}");
    messages(&stdout)
}

fn agent_yaml(env: &Env, name: &str, host: &str, log: &Path, out: &str) -> String {
    format!(
        "host: {host}\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{out}",
        env.path().join(format!("{name}-data")).display(),
        log.display(),
    )
}

/// Wait until `path` holds a line containing `needle`.
fn wait_for_line(path: &Path, needle: &str, what: &str) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let text = std::fs::read_to_string(path).unwrap_or_default();
        if text.lines().any(|l| l.contains(needle)) {
            return;
        }
        assert!(
            Instant::now() < deadline,
            "{what}: no `{needle}` in:\n{text}"
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

#[test]
fn query_filters_count_exactly_and_follow_prints_new_lines() {
    let env = Env::new();
    let collector = env.start_collector("topics:\n  default: {partitions: 3}\n");
    let out = env.output_yaml(&collector, "lz4");
    let a = env.path().join("a.log");
    let b = env.path().join("b.log");
    append_lines(
        &a,
        (0..3000).map(|i| {
            let status = if i % 7 == 0 { 500 } else { 200 };
            format!("GET /api/items/{i} status={status} id={i}")
        }),
    );
    append_lines(&b, (0..1000).map(|i| format!("worker job={i} done")));
    let a1 = env.start_agent("a1", &agent_yaml(&env, "a1", "web-01", &a, &out));
    let a2 = env.start_agent("a2", &agent_yaml(&env, "a2", "web-02", &b, &out));
    collector.wait_for_count("app", 4000, Duration::from_secs(60), &a1);
    let api = format!("http://127.0.0.1:{}", collector.api_port);

    let all = query(&api, &[]);
    assert_eq!(all.len(), 4000);
    let errors = query(&api, &["--grep", "status=500"]);
    assert_eq!(errors.len(), 3000usize.div_ceil(7));
    assert!(errors.iter().all(|m| m.contains("status=500")));
    // ids 100..=199 of a.log.
    let re = query(&api, &["--regex", r"id=1\d\d$"]);
    assert_eq!(re.len(), 100);
    assert_eq!(query(&api, &["--host", "web-02"]).len(), 1000);
    assert_eq!(query(&api, &["--source", "*/b.log"]).len(), 1000);
    assert_eq!(
        query(&api, &["--host", "web-01", "--grep", "job="]).len(),
        0,
        "filters combine"
    );
    // Time windows that match nothing, and one that matches everything.
    assert!(query(&api, &["--until", "2000-01-01T00:00:00Z"]).is_empty());
    let future = (tributary_common::timefmt::now_ms() + 3_600_000).to_string();
    assert!(query(&api, &["--since", &future]).is_empty());
    assert_eq!(query(&api, &["--since", "1h"]).len(), 4000);
    // Per file, order is preserved; --limit and --order desc give the newest first.
    let a_lines: Vec<&String> = all.iter().filter(|m| m.starts_with("GET")).collect();
    assert_eq!(a_lines.len(), 3000);
    assert!(
        a_lines
            .iter()
            .enumerate()
            .all(|(i, m)| m.ends_with(&format!("id={i}")))
    );
    let newest = query(
        &api,
        &["--host", "web-02", "--order", "desc", "--limit", "3"],
    );
    assert_eq!(
        newest,
        [
            "worker job=999 done",
            "worker job=998 done",
            "worker job=997 done"
        ]
    );

    // Bad parameters: the CLI names the problem before asking; the API answers 400.
    let (code, _, stderr) = run(
        "tributary",
        &["query", "--api", &api, "--topic", "app", "--regex", "(open"],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("bad `regex`") && stderr.contains("unclosed group"),
        "{stderr}"
    );
    let (status, body) = tributary_e2e::block_on(collector.api.get_text(
        "/v1/query?topic=app&since=yesterday",
        Duration::from_secs(10),
    ))
    .unwrap();
    assert_eq!(status, 400, "{body}");
    assert!(body.contains("since"), "{body}");

    // --follow: first what matches now, then lines appended after it started.
    append_lines(&b, ["FOLLOWME before".to_string()]);
    collector.wait_for_count("app", 4001, Duration::from_secs(60), &a2);
    let follow_out = env.path().join("follow.out");
    let mut follower = Proc::spawn(
        "query-follow",
        "tributary",
        &[
            "query", "--api", &api, "--topic", "app", "--grep", "FOLLOWME", "--follow", "--output",
            "text",
        ],
        follow_out.clone(),
    );
    wait_for_line(&follow_out, "FOLLOWME before", "initial query");
    append_lines(
        &b,
        ["FOLLOWME after".to_string(), "not this one".to_string()],
    );
    wait_for_line(&follow_out, "FOLLOWME after", "query --follow");
    let text = std::fs::read_to_string(&follow_out).unwrap();
    assert_eq!(text.lines().count(), 2, "{text}");
    assert!(text.lines().all(|l| l.contains(" web-02 ")), "{text}");
    follower.kill();
    drop((a1, a2));
}

#[test]
fn a_consumer_group_resumes_across_a_collector_kill_and_reads_everything_once() {
    let env = Env::new();
    let ingest = free_port();
    let api_port = free_port();
    let topics = "topics:\n  default: {partitions: 3}\n";
    let mut collector = env.start_collector_on(ingest, api_port, topics);
    let out = env.output_yaml(&collector, "lz4");
    // Twelve files, so the records spread over the partitions (by file identity).
    let mut yaml = format!(
        "host: g-host\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}/*.log\"]\n{out}",
        env.path().join("agent-data").display(),
        env.path().join("logs").display(),
    );
    yaml = yaml.replace("linger_ms: 50", "linger_ms: 20");
    std::fs::create_dir_all(env.path().join("logs")).unwrap();
    for f in 0..12 {
        append_lines(
            &env.path().join(format!("logs/f{f}.log")),
            (0..175).map(|i| format!("file {f} line {i}")),
        );
    }
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count("app", 2100, Duration::from_secs(60), &agent);
    let ends = collector.end_offsets("app");
    eprintln!("records per partition: {ends:?}");
    let api = format!("http://127.0.0.1:{api_port}");

    let consume = |args: &[&str]| {
        let mut all = vec![
            "consume",
            "--api",
            api.as_str(),
            "--topic",
            "app",
            "--group",
            "billing",
        ];
        all.extend_from_slice(args);
        let (code, stdout, stderr) = run("tributary", &all);
        assert_eq!(code, 0, "{stderr}");
        messages(&stdout)
    };
    let first = consume(&["--max", "800"]);
    assert_eq!(first.len(), 800);
    let (code, stdout, stderr) = run("tributary", &["groups", "--api", &api, "billing"]);
    assert_eq!(code, 0, "{stderr}");
    let g: Value = serde_json::from_str(stdout.trim()).unwrap();
    let lag: u64 = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["lag"].as_u64().unwrap())
        .sum();
    let committed: u64 = g["offsets"]
        .as_array()
        .unwrap()
        .iter()
        .map(|o| o["offset"].as_u64().unwrap())
        .sum();
    assert_eq!(committed, 800, "{g}");
    // Partitions the group never read have no entry yet: lag covers the ones it did.
    assert!(lag <= 1300, "{g}");

    // SIGKILL the collector; the committed offsets are on disk.
    collector.proc.kill();
    collector = env.start_collector_on(ingest, api_port, topics);
    let rest = consume(&[]);
    assert_eq!(first.len() + rest.len(), 2100);
    let mut seen: HashMap<&str, u32> = HashMap::new();
    for m in first.iter().chain(&rest) {
        *seen.entry(m.as_str()).or_default() += 1;
    }
    assert_eq!(seen.len(), 2100, "every record once");
    assert!(seen.values().all(|n| *n == 1));
    // Nothing left; the text view shows zero lag everywhere.
    assert!(consume(&[]).is_empty());
    let (code, stdout, _) = run("tributary", &["groups", "--api", &api, "--output", "text"]);
    assert_eq!(code, 0);
    let rows: Vec<&str> = stdout.lines().skip(1).collect();
    let used = ends.values().filter(|e| **e > 0).count();
    assert_eq!(
        rows.len(),
        used,
        "a row per partition with records: {stdout}"
    );
    assert!(
        rows.iter()
            .all(|r| r.starts_with("billing") && r.ends_with(" 0")),
        "{stdout}"
    );
    // Commits past the end or to unknown partitions are refused.
    let bad = tributary_e2e::block_on(collector.api.post_json(
        "/v1/groups/billing/offsets",
        &serde_json::json!({"topic": "app", "partition": 0, "offset": 1_000_000}),
        Duration::from_secs(10),
    ));
    assert!(bad.is_err_and(|e| e.to_string().contains("past the end")));
    let bad = tributary_e2e::block_on(collector.api.post_json(
        "/v1/groups/billing/offsets",
        &serde_json::json!({"topic": "app", "partition": 9, "offset": 0}),
        Duration::from_secs(10),
    ));
    assert!(bad.is_err());
    drop(agent);
}

#[test]
fn certs_pass_openssl_and_the_example_configs_pass_check_config() {
    let env = Env::new();
    let dir = env.path().join("etc");
    let (code, stdout, stderr) = run(
        "tributary",
        &[
            "certs",
            "--out",
            dir.to_str().unwrap(),
            "--hosts",
            "collector.example.com,10.1.2.3",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(stdout.contains("ca.pem"), "{stdout}");
    let p = |f: &str| dir.join(f).to_str().unwrap().to_owned();
    let openssl = |args: &[&str]| {
        let out = Command::new("openssl")
            .args(args)
            .stdin(Stdio::null())
            .output()
            .expect("openssl (the CI installs it)");
        (
            out.status.success(),
            String::from_utf8_lossy(&out.stdout).into_owned()
                + &String::from_utf8_lossy(&out.stderr),
        )
    };
    for cert in ["collector.pem", "agent.pem"] {
        let (ok, text) = openssl(&["verify", "-CAfile", &p("ca.pem"), &p(cert)]);
        assert!(ok && text.contains(": OK"), "{cert}: {text}");
    }
    // One more agent certificate per host, from the same CA; the CA is not replaced
    // by accident.
    let (code, _, stderr) = run(
        "tributary",
        &["certs", "--out", dir.to_str().unwrap(), "--agent", "web-07"],
    );
    assert_eq!(code, 0, "{stderr}");
    let (ok, text) = openssl(&["verify", "-CAfile", &p("ca.pem"), &p("web-07.pem")]);
    assert!(ok && text.contains(": OK"), "web-07.pem: {text}");
    let (ok, text) = openssl(&["x509", "-noout", "-subject", "-in", &p("web-07.pem")]);
    assert!(
        ok && text.replace(" = ", "=").contains("CN=web-07"),
        "{text}"
    );
    // Sane lifetimes: a year by default, `--days` otherwise; the CA ten years.
    let lasts = |cert: &str, secs: u64| {
        let (ok, _) = openssl(&[
            "x509",
            "-noout",
            "-checkend",
            &secs.to_string(),
            "-in",
            &p(cert),
        ]);
        ok
    };
    let day = 86_400u64;
    for cert in ["collector.pem", "agent.pem", "web-07.pem"] {
        assert!(lasts(cert, 364 * day) && !lasts(cert, 366 * day), "{cert}");
    }
    assert!(lasts("ca.pem", 3_649 * day) && !lasts("ca.pem", 3_651 * day));
    let (code, _, stderr) = run(
        "tributary",
        &[
            "certs",
            "--out",
            dir.to_str().unwrap(),
            "--agent",
            "short",
            "--days",
            "30",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(lasts("short.pem", 29 * day) && !lasts("short.pem", 31 * day));
    let (code, _, stderr) = run("tributary", &["certs", "--out", dir.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("already exists"), "{stderr}");
    let (ok, text) = openssl(&["x509", "-noout", "-text", "-in", &p("collector.pem")]);
    assert!(ok, "{text}");
    assert!(
        text.contains("DNS:collector.example.com") && text.contains("IP Address:10.1.2.3"),
        "{text}"
    );

    // The example configs, pointed at these certificates and a scratch data dir.
    let configs = Path::new(env!("CARGO_MANIFEST_DIR")).join("../configs");
    let data = env.path().join("var");
    let localize = |text: String| {
        text.replace("/etc/tributary/", &format!("{}/", dir.display()))
            .replace("/var/lib/", &format!("{}/", data.display()))
    };
    let agent_yaml = env.path().join("agent.yaml");
    std::fs::write(
        &agent_yaml,
        localize(std::fs::read_to_string(configs.join("agent.yaml")).unwrap()),
    )
    .unwrap();
    let (code, stdout, stderr) = run(
        "tributary-agent",
        &["--config", agent_yaml.to_str().unwrap(), "--check-config"],
    );
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");
    // The README's install makes the API token file the example config names.
    let (code, token, stderr) = run(
        "tributary",
        &[
            "token",
            "add",
            "--tokens-file",
            &p("tokens"),
            "--name",
            "admin",
            "--scopes",
            "admin",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert!(token.trim().starts_with("trb_"), "{token}");
    let collector_yaml = env.path().join("collector.yaml");
    let ingest = free_port();
    std::fs::write(
        &collector_yaml,
        localize(std::fs::read_to_string(configs.join("collector.yaml")).unwrap())
            .replace("0.0.0.0:7400", &format!("127.0.0.1:{ingest}"))
            .replace("127.0.0.1:7401", &format!("127.0.0.1:{}", free_port())),
    )
    .unwrap();
    let cfg = collector_yaml.to_str().unwrap();
    let (code, stdout, stderr) = run("tributary", &["serve", "--config", cfg, "--check-config"]);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(stdout.contains("configuration is valid"), "{stdout}");

    // A standard TLS client completes a verified handshake with the collector
    // started from that config (mutual TLS with the agent pair).
    let mut collector = Proc::spawn(
        "collector",
        "tributary",
        &["serve", "--config", cfg],
        env.path().join("collector.log"),
    );
    let addr = format!("127.0.0.1:{ingest}");
    let deadline = Instant::now() + Duration::from_secs(30);
    let text = loop {
        let (ok, text) = openssl(&[
            "s_client",
            "-connect",
            &addr,
            "-CAfile",
            &p("ca.pem"),
            "-cert",
            &p("web-07.pem"),
            "-key",
            &p("web-07.key"),
            "-verify_return_error",
            "-verify_hostname",
            "collector.example.com",
            "-brief",
        ]);
        if ok || Instant::now() > deadline {
            break text;
        }
        std::thread::sleep(Duration::from_millis(200));
    };
    assert!(
        text.contains("Verification: OK") || text.contains("Verify return code: 0 (ok)"),
        "{text}"
    );
    collector.terminate(Duration::from_secs(10));

    // The systemd units name the binaries and configs the README installs.
    for (unit, bin) in [
        (
            "tributary-agent.service",
            "/usr/local/bin/tributary-agent --config /etc/tributary/agent.yaml",
        ),
        (
            "tributary-collector.service",
            "/usr/local/bin/tributary serve --config /etc/tributary/collector.yaml",
        ),
    ] {
        let text = std::fs::read_to_string(configs.join(unit)).unwrap();
        assert!(text.contains(&format!("ExecStart={bin}")), "{unit}");
        assert!(text.contains("ProtectSystem=strict"), "{unit}");
    }
}
