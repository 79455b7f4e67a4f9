//! The web console in headless Chromium (Debian `chromium`), driven over the
//! DevTools protocol by tests/python/console.py, against a real collector (with
//! API tokens) fed by a real agent: search, histogram, filter, details, context,
//! escaping of hostile log lines, live tail and overview. Screenshots of each page
//! land in `target/console-shots/` (the README's are in docs/). Skips visibly
//! without chromium or the Python virtualenv `.ci/run` makes.

use std::path::PathBuf;
use std::process::Command;
use std::time::Duration;

use tributary_e2e::{Env, append_lines, bin_dir};

fn chromium() -> Option<String> {
    for c in ["chromium", "chromium-browser"] {
        if Command::new(c)
            .arg("--version")
            .output()
            .is_ok_and(|o| o.status.success())
        {
            return Some(c.to_owned());
        }
    }
    eprintln!("SKIPPED: chromium is not installed (apt-get install chromium; .ci/run does)");
    None
}

fn python() -> Option<PathBuf> {
    let py = std::env::var_os("TRIBUTARY_PYTHON")
        .map(PathBuf::from)
        .or_else(|| bin_dir().parent().map(|t| t.join("pyenv/bin/python")))?;
    let ok = Command::new(&py)
        .args(["-c", "import websocket"])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: no Python with websocket-client at {} (.ci/run creates it)",
            py.display()
        );
        return None;
    }
    Some(py)
}

#[test]
fn console_searches_narrows_expands_tails_and_escapes_in_chromium() {
    let (Some(chromium), Some(py)) = (chromium(), python()) else {
        return;
    };
    let env = Env::new();
    let tokens = env.path().join("tokens");
    let token = tributary_e2e::token_add(&tokens, "console", "read");
    let c = env.start_collector_full(
        tributary_e2e::free_port(),
        tributary_e2e::free_port(),
        "",
        &format!("  auth: {{tokens_file: {}}}\n", tokens.display()),
        "topics:\n  web: {partitions: 2}\n",
    );
    let c_api = c.api.clone().with_token(Some(token.trim().to_owned()));
    let logs = env.path().join("logs");
    std::fs::create_dir_all(&logs).unwrap();
    let log = logs.join("app.log");
    // 40 lines: every 5th an ERROR, and two that try to become markup and script.
    let mut lines: Vec<String> = (0..38)
        .map(|i| {
            let level = if i % 5 == 0 { "ERROR" } else { "INFO" };
            format!("{level} request_id={i} path=/api/items/{i} status=200")
        })
        .collect();
    lines.push("INFO <script>window.__pwned=1</script>".into());
    lines.push(r#"INFO "><img src=x onerror=window.__pwned=1>"#.into());
    append_lines(&log, lines);
    let yaml = format!(
        "host: console-host\ndata_dir: {}\ninputs:\n  - type: file\n    topic: web\n    include: [\"{}\"]\n    read_from: beginning\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&c, "lz4")
    );
    let mut agent = env.start_agent("agent", &yaml);
    let deadline = std::time::Instant::now() + Duration::from_secs(30);
    loop {
        let n: u64 = tributary_e2e::block_on(c_api.get_json("/v1/topics", Duration::from_secs(5)))
            .ok()
            .and_then(|v| v.as_array().cloned())
            .into_iter()
            .flatten()
            .flat_map(|t| t["partitions"].as_array().cloned().unwrap_or_default())
            .map(|p| p["end_offset"].as_u64().unwrap_or(0))
            .sum();
        if n >= 40 {
            break;
        }
        assert!(std::time::Instant::now() < deadline, "40 lines not stored");
        std::thread::sleep(Duration::from_millis(100));
    }
    let shots = bin_dir().parent().unwrap().join("console-shots");
    std::fs::create_dir_all(&shots).unwrap();
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("python/console.py");
    let url = format!(
        "http://127.0.0.1:{}/#search?token={}",
        c.api_port,
        token.trim()
    );
    let out = Command::new("timeout")
        .arg("120")
        .arg(&py)
        .arg(&script)
        .args([
            chromium.as_str(),
            url.as_str(),
            "web",
            log.to_str().unwrap(),
            shots.to_str().unwrap(),
            "40",
        ])
        .output()
        .expect("run console.py");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success() && stdout.contains("\"ok\": true"),
        "console.py failed:\n{stdout}\n{stderr}\n---- collector ----\n{}",
        c.proc.log_text()
    );
    for page in ["search", "tail", "overview"] {
        assert!(shots.join(format!("console-{page}.png")).exists());
    }
    agent.terminate(Duration::from_secs(10));
}
