//! Test harness: real `tributary` and `tributary-agent` processes on 127.0.0.1,
//! with certificates generated per test in a temporary directory.
//!
//! Every process is started by the harness, remembered by PID and killed (SIGKILL)
//! when its handle drops, so a failing test leaves nothing running.

use std::collections::BTreeMap;
use std::io::Write;
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::OnceLock;
use std::time::{Duration, Instant};

use serde_json::Value;
use tributary_collector::client::ApiClient;
use tributary_collector::setup::certs::{self, CertFiles};

pub mod fanin;
pub mod pki;

/// Directory holding the built binaries (`target/release` or `target/debug`).
pub fn bin_dir() -> PathBuf {
    static DIR: OnceLock<PathBuf> = OnceLock::new();
    DIR.get_or_init(|| {
        // Test binaries built elsewhere (an install, a packaged build) as they are.
        if let Some(dir) = std::env::var_os("TRIBUTARY_BIN_DIR") {
            return PathBuf::from(dir);
        }
        // The test executable lives in target/<profile>/deps/.
        let exe = std::env::current_exe().expect("current exe");
        let dir = exe
            .parent()
            .and_then(|d| {
                if d.ends_with("deps") {
                    d.parent()
                } else {
                    Some(d)
                }
            })
            .expect("target dir")
            .to_path_buf();
        // target/debug, target/release or target/<profile> (e.g. `profiling`).
        let profile = dir
            .file_name()
            .and_then(|n| n.to_str())
            .unwrap_or("debug")
            .to_owned();
        // Build the binaries with the same profile and the same target selection as
        // `cargo test --workspace`: the feature resolution is then identical and this
        // reuses what the test run just compiled instead of rebuilding a variant.
        let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
        let mut cmd = Command::new(cargo);
        cmd.args(["build", "--quiet", "--workspace", "--bins", "--tests"]);
        // Variables cargo sets for this test process; build scripts (ring's) track
        // CARGO_MANIFEST_DIR, so passing them on would force a rebuild.
        for (k, _) in std::env::vars_os() {
            if let Some(k) = k.to_str()
                && (k.starts_with("CARGO_PKG_")
                    || k.starts_with("CARGO_BIN_EXE_")
                    || matches!(
                        k,
                        "CARGO_MANIFEST_DIR"
                            | "CARGO_MANIFEST_PATH"
                            | "CARGO_CRATE_NAME"
                            | "CARGO_TARGET_TMPDIR"
                            | "CARGO_PRIMARY_PACKAGE"
                    ))
            {
                cmd.env_remove(k);
            }
        }
        if profile != "debug" {
            cmd.args(["--profile", &profile]);
        }
        let started = Instant::now();
        let status = cmd.status().expect("run cargo build");
        eprintln!("harness: binaries ready in {:.1?}", started.elapsed());
        assert!(status.success(), "building the binaries failed");
        dir
    })
    .clone()
}

/// Run one of the project's binaries to completion: (exit code, stdout, stderr).
pub fn run(bin: &str, args: &[&str]) -> (i32, String, String) {
    let out = Command::new(bin_dir().join(bin))
        .args(args)
        .output()
        .unwrap_or_else(|e| panic!("run {bin}: {e}"));
    (
        out.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&out.stdout).into_owned(),
        String::from_utf8_lossy(&out.stderr).into_owned(),
    )
}

/// `tributary token add` as an operator runs it: a token named `name` with
/// `scopes` (comma-separated) appended to the tokens file `file`; returns it.
pub fn token_add(file: &Path, name: &str, scopes: &str) -> String {
    let file = file.to_str().expect("utf-8 path");
    let (code, out, err) = run(
        "tributary",
        &[
            "token",
            "add",
            "--tokens-file",
            file,
            "--name",
            name,
            "--scopes",
            scopes,
        ],
    );
    assert_eq!(code, 0, "tributary token add: {err}");
    assert!(err.contains("only its hash is stored"), "{err}");
    out.trim().to_owned()
}

/// A free TCP port on 127.0.0.1 (bound, then released).
pub fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .expect("free port")
}

/// A child process killed with SIGKILL when dropped.
pub struct Proc {
    pub name: &'static str,
    child: Option<Child>,
    pub log: PathBuf,
}

impl Proc {
    pub fn spawn(name: &'static str, bin: &str, args: &[&str], log: PathBuf) -> Proc {
        Self::spawn_command(name, &bin_dir().join(bin).to_string_lossy(), args, log)
    }

    /// Spawn `program` (a path, or a name looked up in `PATH`).
    pub fn spawn_command(name: &'static str, program: &str, args: &[&str], log: PathBuf) -> Proc {
        let bin = program;
        let out = std::fs::File::create(&log).expect("log file");
        let err = out.try_clone().expect("log file");
        let child = Command::new(program)
            .args(args)
            .env(
                "RUST_LOG",
                std::env::var("TEST_RUST_LOG").unwrap_or_else(|_| "info".into()),
            )
            .stdin(Stdio::null())
            .stdout(out)
            .stderr(err)
            .spawn()
            .unwrap_or_else(|e| panic!("spawn {bin}: {e}"));
        Proc {
            name,
            child: Some(child),
            log,
        }
    }

    pub fn pid(&self) -> u32 {
        self.child.as_ref().map(|c| c.id()).unwrap_or(0)
    }

    /// SIGKILL and reap.
    pub fn kill(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }

    /// SIGTERM, then wait up to `timeout` for a clean exit; returns the exit status.
    pub fn terminate(&mut self, timeout: Duration) -> Option<std::process::ExitStatus> {
        self.stop_with("TERM", timeout)
    }

    /// Send `signal` (`INT`, `TERM`, …), then wait up to `timeout` for the exit
    /// (SIGKILL after it); returns the exit status if it exited by itself.
    pub fn stop_with(
        &mut self,
        signal: &str,
        timeout: Duration,
    ) -> Option<std::process::ExitStatus> {
        let mut c = self.child.take()?;
        // Our own child, by PID.
        let _ = Command::new("kill")
            .args([&format!("-{signal}"), &c.id().to_string()])
            .status();
        let deadline = Instant::now() + timeout;
        loop {
            if let Ok(Some(s)) = c.try_wait() {
                return Some(s);
            }
            if Instant::now() > deadline {
                let _ = c.kill();
                let _ = c.wait();
                return None;
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    pub fn is_running(&mut self) -> bool {
        matches!(self.child.as_mut().map(|c| c.try_wait()), Some(Ok(None)))
    }

    pub fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for Proc {
    fn drop(&mut self) {
        self.kill();
        if std::thread::panicking() {
            eprintln!(
                "---- {} log ({}) ----\n{}",
                self.name,
                self.log.display(),
                tail(&self.log_text(), 4000)
            );
        }
    }
}

fn tail(s: &str, n: usize) -> &str {
    let mut start = s.len().saturating_sub(n);
    while !s.is_char_boundary(start) {
        start += 1;
    }
    &s[start..]
}

/// A test directory with certificates, and helpers to run a collector and agents in it.
pub struct Env {
    pub dir: tempfile::TempDir,
    pub certs: CertFiles,
}

impl Drop for Env {
    /// With `TRIBUTARY_KEEP_TEST_DIR` set, a failing test leaves its directory (logs,
    /// data, configs) behind for a look; the path is printed.
    fn drop(&mut self) {
        if std::thread::panicking() && std::env::var_os("TRIBUTARY_KEEP_TEST_DIR").is_some() {
            let dir = std::mem::replace(&mut self.dir, tempfile::tempdir().expect("tempdir"));
            eprintln!("test directory kept: {}", dir.keep().display());
        }
    }
}

impl Default for Env {
    fn default() -> Self {
        Self::new()
    }
}

impl Env {
    pub fn new() -> Env {
        let dir = tempfile::tempdir().expect("tempdir");
        let certs = certs::generate(&dir.path().join("certs"), &[]).expect("certs");
        Env { dir, certs }
    }

    pub fn path(&self) -> &Path {
        self.dir.path()
    }

    /// Write `collector.yaml` and start `tributary serve`; waits until `/healthz` answers.
    pub fn start_collector(&self, extra_yaml: &str) -> Collector {
        let ingest = free_port();
        let api = free_port();
        self.start_collector_on(ingest, api, extra_yaml)
    }

    /// [`start_collector`](Self::start_collector) with more keys in `ingest:`
    /// (`ingest_yaml` lines indented by two spaces).
    pub fn start_collector_with(&self, ingest_yaml: &str, extra_yaml: &str) -> Collector {
        self.start_collector_full(free_port(), free_port(), ingest_yaml, "", extra_yaml)
    }

    /// [`start_collector`](Self::start_collector) with more keys in `api:`.
    pub fn start_collector_with_api(&self, api_yaml: &str) -> Collector {
        self.start_collector_full(free_port(), free_port(), "", api_yaml, "")
    }

    pub fn start_collector_on(&self, ingest: u16, api: u16, extra_yaml: &str) -> Collector {
        self.start_collector_full(ingest, api, "", "", extra_yaml)
    }

    pub fn start_collector_full(
        &self,
        ingest: u16,
        api: u16,
        ingest_yaml: &str,
        api_yaml: &str,
        extra_yaml: &str,
    ) -> Collector {
        self.start_collector_limited(ingest, api, ingest_yaml, api_yaml, extra_yaml, None)
    }

    /// [`start_collector_on`](Self::start_collector_on) with at most `nofile` open
    /// file descriptors (soft and hard), set by util-linux `prlimit`, which execs the
    /// collector: the PID is the collector's.
    pub fn start_collector_with_fd_limit(
        &self,
        ingest: u16,
        api: u16,
        extra_yaml: &str,
        nofile: u32,
    ) -> Collector {
        self.start_collector_limited(ingest, api, "", "", extra_yaml, Some(nofile))
    }

    fn start_collector_limited(
        &self,
        ingest: u16,
        api: u16,
        ingest_yaml: &str,
        api_yaml: &str,
        extra_yaml: &str,
        nofile: Option<u32>,
    ) -> Collector {
        let cfg = self.path().join("collector.yaml");
        // The tests' agents share one certificate under many host names: the
        // collector records its identity (`tag`) unless a test asks otherwise.
        let ingest_yaml = if ingest_yaml.contains("identity:") {
            ingest_yaml.to_owned()
        } else {
            format!("  identity: tag\n{ingest_yaml}")
        };
        let yaml = format!(
            "data_dir: {data}\ningest:\n  listen: 127.0.0.1:{ingest}\n  tls:\n    cert: {cert}\n    key: {key}\n    client_ca: {ca}\n{ingest_yaml}api:\n  listen: 127.0.0.1:{api}\n{api_yaml}{extra_yaml}",
            data = self.path().join("collector-data").display(),
            cert = self.certs.collector_cert.display(),
            key = self.certs.collector_key.display(),
            ca = self.certs.ca.display(),
        );
        std::fs::write(&cfg, yaml).expect("write collector.yaml");
        let cfg = cfg.to_str().expect("utf-8 path");
        let log = self.path().join(format!("collector-{ingest}.log"));
        let proc = match nofile {
            None => Proc::spawn("collector", "tributary", &["serve", "--config", cfg], log),
            Some(n) => {
                let bin = bin_dir().join("tributary");
                let bin = bin.to_str().expect("utf-8 path");
                let limit = format!("--nofile={n}:{n}");
                Proc::spawn_command(
                    "collector",
                    "prlimit",
                    &[&limit, "--", bin, "serve", "--config", cfg],
                    log,
                )
            }
        };
        // HTTPS when the test configures api.tls (certificates of this env).
        let client = if api_yaml.contains("tls:") {
            ApiClient::new(&format!("https://127.0.0.1:{api}"))
                .and_then(|c| c.with_ca(Some(&self.certs.ca)))
        } else {
            ApiClient::new(&format!("http://127.0.0.1:{api}"))
        };
        let c = Collector {
            proc,
            ingest_port: ingest,
            api_port: api,
            api: client.expect("api url"),
        };
        c.wait_healthy(Duration::from_secs(30));
        c
    }

    /// Write an agent config and start `tributary-agent`.
    pub fn start_agent(&self, name: &str, yaml: &str) -> Proc {
        let cfg = self.path().join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).expect("write agent.yaml");
        Proc::spawn(
            "agent",
            "tributary-agent",
            &["--config", cfg.to_str().expect("utf-8 path")],
            self.path().join(format!("{name}.log")),
        )
    }

    /// Start `tributary-agent` with at most `nofile` open file descriptors (through
    /// util-linux `prlimit`, which execs the agent: the PID is the agent's).
    pub fn start_agent_with_fd_limit(&self, name: &str, yaml: &str, nofile: u32) -> Proc {
        let cfg = self.path().join(format!("{name}.yaml"));
        std::fs::write(&cfg, yaml).expect("write agent.yaml");
        let agent = bin_dir().join("tributary-agent");
        let limit = format!("--nofile={nofile}:{nofile}");
        Proc::spawn_command(
            "agent",
            "prlimit",
            &[
                &limit,
                "--",
                agent.to_str().expect("utf-8 path"),
                "--config",
                cfg.to_str().expect("utf-8 path"),
            ],
            self.path().join(format!("{name}.log")),
        )
    }

    /// The `output:` section pointing at `collector` with this env's certificates.
    pub fn output_yaml(&self, collector: &Collector, compression: &str) -> String {
        format!(
            "output:\n  collectors: [\"127.0.0.1:{port}\"]\n  tls:\n    ca: {ca}\n    cert: {cert}\n    key: {key}\n    server_name: localhost\n  compression: {compression}\n  batch: {{max_bytes: 1MiB, max_records: 10000, linger_ms: 50}}\n",
            port = collector.ingest_port,
            ca = self.certs.ca.display(),
            cert = self.certs.agent_cert.display(),
            key = self.certs.agent_key.display(),
        )
    }
}

/// A running collector process and a client for its API.
pub struct Collector {
    pub proc: Proc,
    pub ingest_port: u16,
    pub api_port: u16,
    pub api: ApiClient,
}

fn runtime() -> &'static tokio::runtime::Runtime {
    static RT: OnceLock<tokio::runtime::Runtime> = OnceLock::new();
    RT.get_or_init(|| {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .expect("runtime")
    })
}

/// Run a future on the harness's runtime (tests are plain `#[test]` functions).
pub fn block_on<F: std::future::Future>(f: F) -> F::Output {
    runtime().block_on(f)
}

/// One record as read back over HTTP.
#[derive(Debug, Clone)]
pub struct Rec {
    pub partition: u32,
    pub offset: u64,
    pub host: String,
    pub source: String,
    pub message: String,
    pub fields: serde_json::Map<String, Value>,
    pub json: Value,
}

impl Collector {
    pub fn wait_healthy(&self, timeout: Duration) {
        let deadline = Instant::now() + timeout;
        loop {
            if block_on(self.api.get_json("/healthz", Duration::from_secs(2))).is_ok() {
                return;
            }
            assert!(
                Instant::now() < deadline,
                "collector not healthy after {timeout:?}:\n{}",
                self.proc.log_text()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn get(&self, path: &str) -> Result<Value, tributary_collector::client::ClientError> {
        block_on(self.api.get_json(path, Duration::from_secs(60)))
    }

    /// `end_offset` per partition of `topic` (empty when the topic does not exist).
    pub fn end_offsets(&self, topic: &str) -> BTreeMap<u32, u64> {
        let v = self.get("/v1/topics").expect("GET /v1/topics");
        let mut out = BTreeMap::new();
        for t in v.as_array().into_iter().flatten() {
            if t["name"] == topic {
                for p in t["partitions"].as_array().into_iter().flatten() {
                    out.insert(
                        p["partition"].as_u64().unwrap_or(0) as u32,
                        p["end_offset"].as_u64().unwrap_or(0),
                    );
                }
            }
        }
        out
    }

    /// Wait until `topic` holds at least `n` records or `timeout` passes; returns the
    /// count either way (for tests that report what is missing themselves).
    pub fn settle(&self, topic: &str, n: u64, timeout: Duration) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count(topic);
            if c >= n || Instant::now() > deadline {
                return c;
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Records stored in `topic`, all partitions.
    pub fn count(&self, topic: &str) -> u64 {
        let ends = self.end_offsets(topic);
        ends.values().sum()
    }

    /// Wait until `topic` holds at least `n` records; returns the count. Fails the
    /// test with the logs when the deadline passes.
    pub fn wait_for_count(&self, topic: &str, n: u64, timeout: Duration, agent: &Proc) -> u64 {
        let deadline = Instant::now() + timeout;
        loop {
            let c = self.count(topic);
            if c >= n {
                return c;
            }
            if Instant::now() > deadline {
                panic!(
                    "topic {topic}: {c} of {n} records after {timeout:?}\n---- agent log ----\n{}\n---- collector log ----\n{}",
                    tail(&agent.log_text(), 4000),
                    tail(&self.proc.log_text(), 4000)
                );
            }
            std::thread::sleep(Duration::from_millis(100));
        }
    }

    /// Read every record of every partition of `topic` by offset, from 0 to the end.
    pub fn read_all(&self, topic: &str) -> Vec<Rec> {
        let mut all = Vec::new();
        for (p, end) in self.end_offsets(topic) {
            let mut offset = 0u64;
            while offset < end {
                let v = self
                    .get(&format!(
                        "/v1/topics/{topic}/partitions/{p}/records?offset={offset}&max=10000"
                    ))
                    .expect("read records");
                let records = v["records"].as_array().cloned().unwrap_or_default();
                assert!(
                    !records.is_empty(),
                    "empty read at {topic}/{p}@{offset} below end {end}"
                );
                for r in records {
                    assert_eq!(r["offset"].as_u64(), Some(offset), "offsets must be dense");
                    all.push(Rec {
                        partition: p,
                        offset,
                        host: r["host"].as_str().unwrap_or_default().to_owned(),
                        source: r["source"].as_str().unwrap_or_default().to_owned(),
                        message: r["message"].as_str().unwrap_or_default().to_owned(),
                        fields: r["fields"].as_object().cloned().unwrap_or_default(),
                        json: r,
                    });
                    offset += 1;
                }
                assert_eq!(v["next_offset"].as_u64(), Some(offset));
            }
        }
        all
    }
}

/// Line `i` of the benchmarks' access log (~150 bytes, without its newline).
pub fn access_line(i: usize) -> String {
    format!(
        "2026-11-25T14:01:34.{:03}Z INFO web-{:02} request_id={i:010} method=GET path=/api/v1/items/{} status=200 bytes={} ua=\"Mozilla/5.0 (X11; Linux)\"",
        i % 1000,
        i % 16,
        i.wrapping_mul(7919) % 1_000_000,
        i % 65_536
    )
}

/// Append `lines` to `path` (created if missing) in one write.
pub fn append_lines<I: IntoIterator<Item = String>>(path: &Path, lines: I) {
    let mut buf = String::new();
    for l in lines {
        buf.push_str(&l);
        buf.push('\n');
    }
    let mut f = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
        .unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    f.write_all(buf.as_bytes()).expect("append");
}

/// CPU seconds (user + system) and peak RSS in bytes of a live process (from `/proc`).
pub fn usage(pid: u32) -> (f64, u64) {
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    // Fields after the command name, which is in parentheses and may contain spaces.
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let ticks = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // utime and stime are fields 14 and 15 of stat; here indexes 11 and 12.
    let cpu = (ticks(11) + ticks(12)) / 100.0;
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    let hwm = status
        .lines()
        .find(|l| l.starts_with("VmHWM:"))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse::<u64>().ok())
        .unwrap_or(0)
        * 1024;
    (cpu, hwm)
}

/// "N cores, CPU model" of this machine, for benchmark reports.
pub fn machine() -> String {
    let cpuinfo = std::fs::read_to_string("/proc/cpuinfo").unwrap_or_default();
    let model = cpuinfo
        .lines()
        .find(|l| l.starts_with("model name"))
        .and_then(|l| l.split(':').nth(1))
        .map(str::trim)
        .unwrap_or("unknown CPU")
        .to_owned();
    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(1);
    format!("{cores} cores, {model}")
}

/// One counter or gauge from the agent's /metrics on `port` (0 when unreachable).
pub fn agent_metric(port: u16, name: &str) -> u64 {
    let api = tributary_collector::client::ApiClient::new(&format!("http://127.0.0.1:{port}"))
        .expect("url");
    let Ok((_, text)) = block_on(api.get_text("/metrics", Duration::from_secs(5))) else {
        return 0;
    };
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

/// Poll `cond` every 50 ms until it holds; after `timeout` fail with `what` and
/// the agent's log.
pub fn wait_until(what: &str, timeout: Duration, agent: &Proc, mut cond: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !cond() {
        assert!(
            Instant::now() < deadline,
            "timed out waiting for {what}\n{}",
            agent.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// The virtualenv's Python (`target/pyenv`, or `TRIBUTARY_PYTHON`) if it can
/// import every module of `modules` (comma-separated, as `import` takes them), or
/// `None` with a visible SKIPPED line.
pub fn python_with(modules: &str) -> Option<PathBuf> {
    let py = std::env::var_os("TRIBUTARY_PYTHON")
        .map(PathBuf::from)
        .or_else(|| bin_dir().parent().map(|t| t.join("pyenv/bin/python")))?;
    let ok = Command::new(&py)
        .args(["-c", &format!("import {modules}")])
        .output()
        .is_ok_and(|o| o.status.success());
    if !ok {
        eprintln!(
            "SKIPPED: no Python with {modules} at {} (.ci/run creates it)",
            py.display()
        );
        return None;
    }
    Some(py)
}

/// Run one step of `tests/python/SCRIPT` (`SCRIPT BOOTSTRAP ARGS...`, bounded to
/// 120 s) and return the JSON value it prints.
pub fn python_step(py: &Path, script: &str, bootstrap: &str, args: &[&str]) -> serde_json::Value {
    let script = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("python")
        .join(script);
    let out = Command::new("timeout")
        .arg("120")
        .arg(py)
        .arg(&script)
        .arg(bootstrap)
        .args(args)
        .output()
        .expect("run python");
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(out.status.success(), "{args:?} failed:\n{stdout}\n{stderr}");
    serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{args:?}: {e}: {stdout}\n{stderr}"))
}

/// A Kafka-compatible broker for the Kafka output and source tests: `noida-db`
/// (PyPI) from the virtualenv `.ci/run` creates, started on 127.0.0.1.
pub struct Broker {
    pub proc: Proc,
    pub port: u16,
    pub data: PathBuf,
}

impl Broker {
    /// The broker's own binary in `target/pyenv` (run directly so that SIGTERM
    /// reaches it; the PyPI wrapper does not pass it on), or `None` with a
    /// visible SKIPPED line.
    pub fn binary() -> Option<PathBuf> {
        let pyenv = bin_dir().parent()?.join("pyenv/lib");
        let found = std::fs::read_dir(&pyenv).ok().and_then(|dirs| {
            dirs.flatten()
                .map(|d| d.path().join("site-packages/noida_db/noida-db"))
                .find(|p| p.exists())
        });
        if found.is_none() {
            eprintln!(
                "SKIPPED: no noida-db under {} (.ci/run installs it: pip install noida-db)",
                pyenv.display()
            );
        }
        found
    }

    /// Start `bin` with its data in `data` and wait until it answers a Kafka
    /// request.
    pub fn start(bin: &Path, data: &Path, port: u16) -> Broker {
        std::fs::create_dir_all(data).expect("broker data dir");
        let log = data.with_extension("log");
        let proc = Proc::spawn_command(
            "noida-db",
            &bin.to_string_lossy(),
            &[
                "start",
                "--only",
                "kafka",
                "--kafka-port",
                &port.to_string(),
                "--host",
                "127.0.0.1",
                "--data-dir",
                &data.to_string_lossy(),
            ],
            log,
        );
        let b = Broker {
            proc,
            port,
            data: data.to_owned(),
        };
        let deadline = Instant::now() + Duration::from_secs(60);
        while !b.answers() {
            assert!(
                Instant::now() < deadline,
                "noida-db on port {port} did not answer ApiVersions within 60 s; log: {}",
                std::fs::read_to_string(&b.proc.log).unwrap_or_default()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
        b
    }

    pub fn bootstrap(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }

    /// Whether an ApiVersions v0 request gets its answer.
    pub fn answers(&self) -> bool {
        use std::io::Read;
        let Ok(mut s) = std::net::TcpStream::connect_timeout(
            &([127, 0, 0, 1], self.port).into(),
            Duration::from_secs(1),
        ) else {
            return false;
        };
        let _ = s.set_read_timeout(Some(Duration::from_secs(5)));
        // size, api key 18, version 0, correlation 7, no client id
        let req = [0, 0, 0, 10, 0, 18, 0, 0, 0, 0, 0, 7, 0xff, 0xff];
        let mut head = [0u8; 8];
        s.write_all(&req).is_ok() && s.read_exact(&mut head).is_ok() && head[4..8] == [0, 0, 0, 7]
    }

    /// SIGTERM (the broker writes its data), then wait for the exit.
    pub fn stop(&mut self) {
        let st = self.proc.terminate(Duration::from_secs(60));
        assert!(st.is_some(), "noida-db did not stop within 60 s of SIGTERM");
    }
}

/// Bytes of the segment files (`*.log`) under a topic's directory.
pub fn segment_bytes(topic: &std::path::Path) -> u64 {
    let mut total = 0;
    for part in std::fs::read_dir(topic).into_iter().flatten().flatten() {
        for f in std::fs::read_dir(part.path())
            .into_iter()
            .flatten()
            .flatten()
        {
            if f.path().extension().is_some_and(|e| e == "log") {
                total += f.metadata().map(|m| m.len()).unwrap_or(0);
            }
        }
    }
    total
}
