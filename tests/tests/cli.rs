//! The binaries as a user runs them: config errors, `--check-config`, `topics`, `consume`.

use std::time::Duration;

use tributary_e2e::{Env, append_lines, run};

#[test]
fn bad_configs_fail_with_file_line_column_and_key() {
    let env = Env::new();
    let path = env.path().join("agent.yaml");
    let p = path.to_str().unwrap();
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    for i in 0..7 {
        std::fs::write(logs.join(format!("f{i}.log")), "x\n").unwrap();
    }
    std::fs::write(logs.join("skip.gz"), "x\n").unwrap();
    let good = format!(
        "data_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}/*\"]\n    exclude: [\"*.gz\"]\noutput:\n  collectors: [\"127.0.0.1:7400\"]\n  tls:\n    ca: {}\n",
        env.path().join("agent-data").display(),
        logs.display(),
        env.certs.ca.display()
    );
    std::fs::write(&path, &good).unwrap();
    let (code, stdout, _) = run("tributary-agent", &["--config", p, "--check-config"]);
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("inputs[0] (file, topic app): 7 readable file(s) match now"),
        "{stdout}"
    );
    assert!(stdout.contains("… and 2 more"), "{stdout}");
    assert!(!stdout.contains("skip.gz"), "{stdout}");
    assert!(stdout.ends_with("configuration is valid\n"), "{stdout}");

    // A data_dir that cannot be created (below a regular file, even for root).
    let blocked = good.replace(
        &format!("data_dir: {}", env.path().join("agent-data").display()),
        &format!("data_dir: {}", logs.join("f0.log").join("data").display()),
    );
    std::fs::write(&path, &blocked).unwrap();
    let (code, stdout, _) = run("tributary-agent", &["--config", p, "--check-config"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stdout.contains("error: data_dir"), "{stdout}");
    assert!(stdout.ends_with("configuration has errors\n"), "{stdout}");

    std::fs::write(
        &path,
        good.replace(
            "    topic: app\n",
            "    topic: app\n    max_line_bytes: lots\n",
        ),
    )
    .unwrap();
    let (code, _, stderr) = run("tributary-agent", &["--config", p, "--check-config"]);
    assert_ne!(code, 0);
    assert_eq!(stderr.lines().count(), 1, "one-line reason: {stderr}");
    assert!(stderr.contains(&format!("{p}:5:")), "{stderr}");
    assert!(stderr.contains("inputs[0].max_line_bytes"), "{stderr}");

    std::fs::write(&path, good.replace("  tls:\n", "  tls:\n    bogus: 1\n")).unwrap();
    let (code, _, stderr) = run("tributary-agent", &["--config", p]);
    assert_ne!(code, 0);
    assert!(
        stderr.contains(&format!("{p}:10:")) && stderr.contains("unknown field `bogus`"),
        "{stderr}"
    );

    let (code, _, stderr) = run("tributary-agent", &["--config", "/nonexistent/agent.yaml"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nonexistent/agent.yaml"), "{stderr}");

    let cpath = env.path().join("collector.yaml");
    std::fs::write(&cpath, "ingest:\n  listen: 127.0.0.1:1\n  tls: {cert: /nope.pem, key: /nope.key}\ntopics:\n  default: {partitions: 0}\n").unwrap();
    let (code, _, stderr) = run("tributary", &["serve", "--config", cpath.to_str().unwrap()]);
    assert_ne!(code, 0);
    assert!(stderr.contains("/nope.pem"), "{stderr}");

    let (code, stdout, _) = run("tributary", &["--version"]);
    assert_eq!(code, 0);
    assert!(stdout.starts_with("tributary "));
}

#[test]
fn topics_and_consume_print_what_was_shipped() {
    let env = Env::new();
    let collector = env.start_collector("topics:\n  default: {partitions: 2}\n");
    let log = env.path().join("app.log");
    append_lines(&log, (0..500).map(|i| format!("hello {i}")));
    let yaml = format!(
        "host: cli-host\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&collector, "lz4")
    );
    let agent = env.start_agent("agent", &yaml);
    collector.wait_for_count("app", 500, Duration::from_secs(60), &agent);
    let api = format!("http://127.0.0.1:{}", collector.api_port);

    let (code, stdout, stderr) = run("tributary", &["topics", "--api", &api]);
    assert_eq!(code, 0, "{stderr}");
    let t: serde_json::Value = serde_json::from_str(stdout.lines().next().unwrap()).unwrap();
    assert_eq!(t["name"], "app");
    assert_eq!(t["partitions"].as_array().unwrap().len(), 2);

    // All partitions, JSON lines, in file order (one source = one partition).
    let (code, stdout, stderr) = run("tributary", &["consume", "--api", &api, "--topic", "app"]);
    assert_eq!(code, 0, "{stderr}");
    let msgs: Vec<String> = stdout
        .lines()
        .map(|l| {
            serde_json::from_str::<serde_json::Value>(l).unwrap()["message"]
                .as_str()
                .unwrap()
                .to_owned()
        })
        .collect();
    assert_eq!(
        msgs,
        (0..500).map(|i| format!("hello {i}")).collect::<Vec<_>>()
    );

    // --max, --offset and --output text on the partition that holds the file.
    let p = collector
        .end_offsets("app")
        .into_iter()
        .find(|(_, end)| *end == 500)
        .unwrap()
        .0
        .to_string();
    let (code, stdout, _) = run(
        "tributary",
        &[
            "consume",
            "--api",
            &api,
            "--topic",
            "app",
            "--partition",
            &p,
            "--offset",
            "10",
            "--max",
            "3",
            "--output",
            "text",
        ],
    );
    assert_eq!(code, 0);
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 3);
    // Text: the file's name, not its whole path, and the message once.
    assert!(
        lines[0].ends_with(" cli-host app.log: hello 10"),
        "{}",
        lines[0]
    );
    assert!(
        !lines[0].contains(&log.display().to_string()),
        "{}",
        lines[0]
    );

    // An offset below the start or past the end is a clear error, not a hang.
    let (code, _, stderr) = run(
        "tributary",
        &[
            "consume",
            "--api",
            &api,
            "--topic",
            "app",
            "--partition",
            &p,
            "--offset",
            "999999",
        ],
    );
    assert_ne!(code, 0);
    assert!(
        stderr.contains("416") && stderr.contains("out of range"),
        "{stderr}"
    );
    let (code, _, stderr) = run("tributary", &["consume", "--api", &api, "--topic", "nope"]);
    assert_ne!(code, 0);
    assert!(stderr.contains("nope"), "{stderr}");
    drop(agent);
}
