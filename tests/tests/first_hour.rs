//! The first hour of a new user (issue 10): quickstart stops cleanly, `--check-config`
//! warns instead of failing on what the agent works around, and the errors a new
//! user meets say what happened and what to do, once.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::process::Command;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_e2e::{Env, Proc, append_lines, bin_dir, free_port, run};

fn chmod(path: &Path, mode: u32) {
    std::fs::set_permissions(path, std::fs::Permissions::from_mode(mode))
        .unwrap_or_else(|e| panic!("chmod {}: {e}", path.display()));
}

fn is_root() -> bool {
    std::fs::read_to_string("/proc/self/status")
        .unwrap_or_default()
        .lines()
        .find(|l| l.starts_with("Uid:"))
        .and_then(|l| l.split_whitespace().nth(2))
        == Some("0")
}

/// `--check-config` as the unprivileged user the systemd unit runs, on a tree with
/// a directory that user cannot list (like /var/log/private): a warning, exit 0,
/// because the agent itself skips such a directory. An unwritable data_dir, which
/// stops the agent, stays an error.
#[test]
fn check_config_warns_about_unreadable_directories_as_an_unprivileged_user() {
    let env = Env::new();
    let root = env.path();
    let logs = root.join("log");
    std::fs::create_dir_all(logs.join("app")).unwrap();
    std::fs::create_dir_all(logs.join("private")).unwrap();
    std::fs::write(logs.join("app/web.log"), "hello\n").unwrap();
    std::fs::write(logs.join("private/secret.log"), "no\n").unwrap();
    std::fs::write(logs.join("app/locked.log"), "no\n").unwrap();
    let data = root.join("agent-data");
    std::fs::create_dir_all(&data).unwrap();
    // What the unprivileged user may see: the tree, the CA, its data_dir.
    chmod(root, 0o755);
    chmod(&logs, 0o755);
    chmod(&logs.join("app"), 0o755);
    chmod(&logs.join("app/web.log"), 0o644);
    chmod(&data, 0o777);
    chmod(&env.certs.ca, 0o644);
    chmod(env.certs.ca.parent().unwrap(), 0o755);
    chmod(&logs.join("private"), 0o700);
    chmod(&logs.join("app/locked.log"), 0o600);
    let yaml = format!(
        "data_dir: {data}\ninputs:\n  - type: file\n    topic: sys\n    include: [\"{logs}/**/*.log\", \"{logs}/nothing-here/*.log\"]\noutput:\n  collectors: [\"127.0.0.1:7400\"]\n  tls: {{ca: {ca}}}\n",
        data = data.display(),
        logs = logs.display(),
        ca = env.certs.ca.display(),
    );
    let cfg = root.join("agent.yaml");
    std::fs::write(&cfg, &yaml).unwrap();
    chmod(&cfg, 0o644);
    let agent = bin_dir().join("tributary-agent");
    let check = |config: &Path| {
        let mut cmd = if is_root() {
            // Root reads everything: drop to `nobody` as the unit's user would be.
            let mut c = Command::new("setpriv");
            c.args(["--reuid=65534", "--regid=65534", "--clear-groups"])
                .arg(&agent);
            c
        } else {
            Command::new(&agent)
        };
        let out = cmd
            .args(["--check-config", "--config"])
            .arg(config)
            .output()
            .expect("setpriv (util-linux; the CI installs it)");
        (
            out.status.code().unwrap_or(-1),
            String::from_utf8_lossy(&out.stdout).into_owned(),
            String::from_utf8_lossy(&out.stderr).into_owned(),
        )
    };
    let (code, stdout, stderr) = check(&cfg);
    assert_eq!(code, 0, "{stdout}{stderr}");
    assert!(
        stdout.contains("1 readable file(s) match now") && stdout.contains("web.log"),
        "{stdout}"
    );
    let private = logs.join("private");
    assert!(
        stdout.contains(&format!(
            "warning: inputs[0] (file, topic sys): cannot list directory {}: Permission denied",
            private.display()
        )),
        "{stdout}"
    );
    assert!(
        stdout.contains("warning: inputs[0] (file, topic sys): cannot read")
            && stdout.contains("locked.log"),
        "{stdout}"
    );
    assert!(
        stdout.contains("nothing-here/*.log` matches no file now"),
        "{stdout}"
    );
    assert!(!stdout.contains("error:"), "{stdout}");
    assert!(stdout.ends_with("configuration is valid\n"), "{stdout}");

    // A data_dir this user cannot write stops the agent: an error, exit 1.
    let locked = root.join("locked-data");
    std::fs::create_dir_all(&locked).unwrap();
    chmod(&locked, 0o755);
    let bad = root.join("bad.yaml");
    std::fs::write(
        &bad,
        yaml.replace(
            &format!("data_dir: {}", data.display()),
            &format!("data_dir: {}/sub", locked.display()),
        ),
    )
    .unwrap();
    chmod(&bad, 0o644);
    let (code, stdout, _) = check(&bad);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("error: data_dir") && stdout.contains("make it writable"),
        "{stdout}"
    );
}

/// The API token quickstart keeps in its directory.
fn quickstart_token(dir: &Path) -> String {
    std::fs::read_to_string(dir.join("quickstart.token")).expect("quickstart.token")
}

/// Records of the demo topic, read from a collector started on quickstart's own
/// collector.yaml after quickstart stopped.
fn demo_records(dir: &Path, api_port: u16) -> Vec<String> {
    let mut collector = Proc::spawn(
        "collector",
        "tributary",
        &[
            "serve",
            "--config",
            dir.join("collector.yaml").to_str().unwrap(),
        ],
        dir.join("serve.log"),
    );
    let api = format!("127.0.0.1:{api_port}");
    let token = quickstart_token(dir);
    let deadline = Instant::now() + Duration::from_secs(30);
    let stdout = loop {
        let (code, stdout, stderr) = run(
            "tributary",
            &[
                "consume", "--api", &api, "--token", &token, "--topic", "demo", "--offset",
                "earliest",
            ],
        );
        if code == 0 {
            break stdout;
        }
        assert!(Instant::now() < deadline, "consume failed: {stderr}");
        std::thread::sleep(Duration::from_millis(100));
    };
    // Quickstart's API wants its token.
    let (code, _, stderr) = run("tributary", &["topics", "--api", &api]);
    assert_ne!(code, 0, "the API answered without a token");
    assert!(stderr.contains("needs a token"), "{stderr}");
    collector.terminate(Duration::from_secs(10));
    stdout
        .lines()
        .map(|l| {
            let v: Value = serde_json::from_str(l).expect("JSON line");
            v["message"].as_str().expect("message").to_owned()
        })
        .collect()
}

/// Start quickstart in `dir`, wait until the collector holds `n` demo records, then
/// Ctrl-C (SIGINT). Returns its output.
fn quickstart_until(dir: &Path, (ingest, api, kafka): (u16, u16, u16), n: u64) -> String {
    let log = dir.with_extension(format!("{n}.log"));
    let mut qs = Proc::spawn(
        "quickstart",
        "tributary",
        &[
            "quickstart",
            "--dir",
            dir.to_str().unwrap(),
            "--ingest-port",
            &ingest.to_string(),
            "--api-port",
            &api.to_string(),
            "--kafka-port",
            &kafka.to_string(),
        ],
        log,
    );
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        // The token quickstart made (it exists once quickstart started).
        let token = std::fs::read_to_string(dir.join("quickstart.token")).ok();
        let client = tributary_collector::client::ApiClient::new(&format!("127.0.0.1:{api}"))
            .unwrap()
            .with_token(token);
        let end = tributary_e2e::block_on(client.get_json(
            "/v1/topics/demo/partitions/0/records?offset=latest&max=1",
            Duration::from_secs(5),
        ))
        .ok()
        .and_then(|v| v["end_offset"].as_u64())
        .unwrap_or(0);
        if end >= n {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "quickstart: {end} of {n} demo records:\n{}",
            qs.log_text()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    let status = qs.stop_with("INT", Duration::from_secs(20));
    let text = qs.log_text();
    assert!(
        status.is_some_and(|s| s.success()),
        "quickstart did not exit cleanly on SIGINT ({status:?}):\n{text}"
    );
    text
}

/// Ctrl-C stops the agent first, so everything it read is acknowledged while the
/// collector still runs: no warning, no line left unacknowledged, and a second run
/// in the same directory continues with no line twice and none missing.
#[test]
fn quickstart_ctrl_c_leaves_nothing_unacknowledged_and_warns_nothing() {
    let env = Env::new();
    let dir = env.path().join("qs");
    let (ingest, api, kafka) = (free_port(), free_port(), free_port());
    let mut stored = 0;
    for (round, n) in [(1, 6u64), (2, 14)] {
        let text = quickstart_until(&dir, (ingest, api, kafka), n);
        for bad in [" WARN ", " ERROR ", "unacknowledged", "Connection refused"] {
            assert!(!text.contains(bad), "round {round}: `{bad}` in:\n{text}");
        }
        assert!(text.contains("quickstart stopped"), "{text}");
        assert!(text.contains("agent stopped"), "{text}");

        let records = demo_records(&dir, api);
        let file = std::fs::read_to_string(dir.join("demo/app.log")).unwrap();
        let lines: Vec<&str> = file.lines().collect();
        // Exactly the file's first lines, in order, each once.
        assert!(
            records.len() as u64 >= n,
            "round {round}: {}",
            records.len()
        );
        assert!(records.len() > stored, "round {round} added nothing");
        assert_eq!(
            records,
            lines[..records.len().min(lines.len())],
            "round {round}: stored records are not the file's lines in order"
        );
        // And the agent's checkpoint sits exactly after the last stored line:
        // everything it sent was acknowledged before it stopped.
        let acked: usize = lines[..records.len()].iter().map(|l| l.len() + 1).sum();
        let cp: Value = serde_json::from_str(
            &std::fs::read_to_string(dir.join("agent/checkpoints.json")).unwrap(),
        )
        .unwrap();
        let demo = dir.join("demo/app.log");
        let offset = cp["files"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["path"] == demo.to_str().unwrap())
            .and_then(|f| f["offset"].as_u64());
        assert_eq!(offset, Some(acked as u64), "round {round}: {cp}");
        stored = records.len();
    }
}

/// A port in use, a data_dir in use, a wrong CA on either side, and the CLI's
/// common mistakes: each error says what happened and what to do, once.
#[test]
fn errors_say_what_to_do_once() {
    let env = Env::new();
    let collector = env.start_collector_with("  idle_timeout: 1s\n", "");
    let api = format!("127.0.0.1:{}", collector.api_port);
    let cfg = env.path().join("collector.yaml");
    let cfg_s = cfg.to_str().unwrap();

    // The same config again: its ports and its data_dir are taken.
    let (code, stdout, _) = run("tributary", &["serve", "--config", cfg_s, "--check-config"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(
        stdout.contains("error: ingest.listen") && stdout.contains("another program"),
        "{stdout}"
    );
    assert!(
        stdout.contains("a collector is running on this data_dir"),
        "{stdout}"
    );
    let (code, _, stderr) = run("tributary", &["serve", "--config", cfg_s]);
    assert_eq!(code, 1);
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.contains("another collector is running on this data_dir"),
        "{stderr}"
    );
    assert_eq!(
        stderr.matches("is held by another store").count(),
        1,
        "{stderr}"
    );
    // Another data_dir, same ports.
    let other = env.path().join("other.yaml");
    std::fs::write(
        &other,
        std::fs::read_to_string(&cfg)
            .unwrap()
            .replace("collector-data", "collector-data-2"),
    )
    .unwrap();
    let (code, _, stderr) = run("tributary", &["serve", "--config", other.to_str().unwrap()]);
    assert_eq!(code, 1);
    assert_eq!(stderr.matches("os error 98").count(), 1, "{stderr}");
    assert!(stderr.contains("set ingest.listen"), "{stderr}");
    // A quickstart on a port in use names the flag to change.
    let (code, _, stderr) = run(
        "tributary",
        &[
            "quickstart",
            "--dir",
            env.path().join("qs").to_str().unwrap(),
            "--ingest-port",
            &collector.ingest_port.to_string(),
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains(&format!(
            "port {} on 127.0.0.1 is in use",
            collector.ingest_port
        )) && stderr.contains("--ingest-port"),
        "{stderr}"
    );

    // An agent whose CA did not sign the collector's certificate: an ERROR naming
    // output.tls.ca on the agent, the reason on the collector, and --connect says so.
    let other_ca = env.path().join("other-certs");
    tributary_collector::setup::certs::generate(&other_ca, &[]).unwrap();
    let log = env.path().join("app.log");
    append_lines(&log, ["one".to_owned()]);
    let good = format!(
        "host: web-01\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&collector, "lz4")
    );
    let ca = env.certs.ca.display().to_string();
    let wrong = good.replace(&ca, other_ca.join("ca.pem").to_str().unwrap());
    let wrong_path = env.path().join("wrong.yaml");
    std::fs::write(&wrong_path, &wrong).unwrap();
    let (code, stdout, _) = run(
        "tributary-agent",
        &[
            "--config",
            wrong_path.to_str().unwrap(),
            "--check-config",
            "--connect",
        ],
    );
    assert_eq!(code, 1, "{stdout}");
    let expected = format!(
        "the collector's certificate is not signed by output.tls.ca ({})",
        other_ca.join("ca.pem").display()
    );
    assert!(stdout.contains(&expected), "{stdout}");
    let mut agent = env.start_agent("wrong", &wrong);
    let deadline = Instant::now() + Duration::from_secs(20);
    while !agent.log_text().contains(&expected) {
        assert!(Instant::now() < deadline, "{}", agent.log_text());
        std::thread::sleep(Duration::from_millis(50));
    }
    agent.kill();
    assert!(agent.log_text().contains(" ERROR "), "{}", agent.log_text());
    assert!(
        collector
            .proc
            .log_text()
            .contains("the agent refused the collector's certificate ingest.tls.cert"),
        "{}",
        collector.proc.log_text()
    );
    // The right CA: --connect passes, the collector logs who connected.
    let good_path = env.path().join("good.yaml");
    std::fs::write(&good_path, &good).unwrap();
    let (code, stdout, _) = run(
        "tributary-agent",
        &[
            "--config",
            good_path.to_str().unwrap(),
            "--check-config",
            "--connect",
        ],
    );
    assert_eq!(code, 0, "{stdout}");
    assert!(
        stdout.contains("TLS handshake and HELLO accepted"),
        "{stdout}"
    );
    let agent = env.start_agent("good", &good);
    collector.wait_for_count("app", 1, Duration::from_secs(30), &agent);
    let clog = collector.proc.log_text();
    assert!(
        clog.contains("agent connected host=web-01 identity=tributary-agent"),
        "{clog}"
    );

    // The collector closes the idle connection (1 s here): a normal event, not a
    // warning, and the agent reconnects when it has a line to send, not before.
    let connected = |log: &str| log.matches("agent connected host=web-01").count();
    let before = connected(&collector.proc.log_text());
    std::thread::sleep(Duration::from_secs(3));
    let after = connected(&collector.proc.log_text());
    assert_eq!(before, after, "reconnected without anything to send");
    append_lines(&log, ["two".to_owned()]);
    collector.wait_for_count("app", 2, Duration::from_secs(30), &agent);
    assert_eq!(connected(&collector.proc.log_text()), after + 1);
    let alog = agent.log_text();
    assert!(!alog.contains(" WARN "), "{alog}");

    // The CLI: a bare host:port for --api, a date, a relative time with a minus.
    for since in ["2020-01-01", "2020-01-01 00:00", "-5m", "1h"] {
        let (code, stdout, stderr) = run(
            "tributary",
            &["query", "--api", &api, "--topic", "app", "--since", since],
        );
        assert_eq!(code, 0, "--since {since}: {stderr}");
        assert_eq!(stdout.lines().count(), 2, "--since {since}: {stdout}");
    }
    let (code, _, stderr) = run(
        "tributary",
        &[
            "query",
            "--api",
            &api,
            "--topic",
            "app",
            "--since",
            "yesterday",
        ],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("a duration back from now (15m, 2h, 7d)"),
        "{stderr}"
    );
    // The API cannot guess a zone: it says what to add.
    let err = collector
        .get("/v1/query?topic=app&since=2026-12-04")
        .unwrap_err()
        .to_string();
    assert!(
        err.contains("has no time zone: add Z (UTC) or +hh:mm"),
        "{err}"
    );
    // A topic that does not exist: named with the ones that do, no URL.
    let (code, _, stderr) = run("tributary", &["query", "--api", &api, "--topic", "nosuch"]);
    assert_eq!(code, 1);
    assert!(
        stderr.contains("topic `nosuch` does not exist (topics: app)") && !stderr.contains("http"),
        "{stderr}"
    );
    // A group that does not exist is an error, not `{"offsets":[]}`.
    let (code, stdout, stderr) = run("tributary", &["groups", "--api", &api, "nosuch"]);
    assert_eq!(code, 1, "{stdout}");
    assert!(stderr.contains("no consumer group `nosuch`"), "{stderr}");
    // A query that hit its limit says so.
    append_lines(&log, ["three".to_owned(), "four".to_owned()]);
    collector.wait_for_count("app", 4, Duration::from_secs(30), &agent);
    let (code, stdout, stderr) = run(
        "tributary",
        &[
            "query", "--api", &api, "--topic", "app", "--limit", "2", "--output", "text",
        ],
    );
    assert_eq!(code, 0, "{stderr}");
    assert_eq!(stdout.lines().count(), 2, "{stdout}");
    assert!(stdout.contains(" web-01 app.log: one\n"), "{stdout}");
    assert!(stderr.contains("showing the first 2 matches"), "{stderr}");
    // No collector there: where it looked and what to set.
    let (code, _, stderr) = run(
        "tributary",
        &["topics", "--api", &format!("127.0.0.1:{}", free_port())],
    );
    assert_eq!(code, 1);
    assert!(
        stderr.contains("Connection refused") && stderr.contains("set --api or TRIBUTARY_API"),
        "{stderr}"
    );
    drop(agent);
}
