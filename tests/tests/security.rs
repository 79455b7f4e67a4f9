//! Who may write what, and who may read, against real processes: agent identity
//! bound to client certificates made by `openssl` (an administrator's own PKI) and
//! by `tributary certs`; deduplication that no agent can poison for another.

use std::path::Path;
use std::sync::Arc;
use std::time::{Duration, Instant};

use futures_util::{SinkExt, StreamExt};
use rustls::pki_types::ServerName;
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;
use tokio_util::codec::{FramedRead, FramedWrite};
use tributary_common::codec::Compression;
use tributary_common::record::BlockWriter;
use tributary_common::wire::{BatchFrame, ErrorCode, Frame, FrameCodec, PROTOCOL_VERSION};
use tributary_e2e::pki::Pki;
use tributary_e2e::{Collector, Env, Proc, append_lines, block_on, token_add};

type Tls = tokio_rustls::client::TlsStream<TcpStream>;

/// An agent connection made by hand with the certificate `cert`/`key`, past HELLO
/// as `host`: the collector's answer to HELLO (`None` = WELCOME) and the framed halves.
struct Raw {
    reader: FramedRead<tokio::io::ReadHalf<Tls>, FrameCodec>,
    writer: FramedWrite<tokio::io::WriteHalf<Tls>, FrameCodec>,
    seq: u64,
}

/// `tributary certs --agent NAME` into the env's certificate directory, as an
/// operator issues one per host; returns the directory.
fn issue_agent_cert(env: &Env, name: &str) -> std::path::PathBuf {
    let dir = env.certs.ca.parent().expect("cert dir").to_owned();
    let (code, _, err) = tributary_e2e::run(
        "tributary",
        &[
            "certs",
            "--out",
            dir.to_str().expect("utf-8"),
            "--agent",
            name,
        ],
    );
    assert_eq!(code, 0, "{err}");
    dir
}

/// Why a hand-made connection got no WELCOME.
#[derive(Debug)]
enum Refused {
    /// The TLS handshake failed, or the collector hung up (a refused certificate
    /// shows on the first read with TLS 1.3).
    Tls(String),
    /// The collector answered HELLO with this frame.
    Answer(Frame),
}

impl Raw {
    async fn connect(
        env: &Env,
        c: &Collector,
        cert: &Path,
        key: &Path,
        host: &str,
    ) -> Result<Raw, Refused> {
        Self::connect_port(&env.certs.ca, c.ingest_port, cert, key, host)
            .await
            .map(|(raw, _)| raw)
    }

    /// Connect to `port` trusting `ca`; also returns the certificate the server showed.
    async fn connect_port(
        ca: &Path,
        port: u16,
        cert: &Path,
        key: &Path,
        host: &str,
    ) -> Result<(Raw, Vec<u8>), Refused> {
        let tls_err = |e: std::io::Error| Refused::Tls(e.to_string());
        let config =
            tributary_common::tls::client_config(ca, Some((cert, key))).expect("client config");
        let tcp = TcpStream::connect(("127.0.0.1", port))
            .await
            .expect("connect");
        let name = ServerName::try_from("localhost").expect("name");
        let mut tls = tokio_rustls::TlsConnector::from(Arc::clone(&config))
            .connect(name, tcp)
            .await
            .map_err(tls_err)?;
        tls.flush().await.map_err(tls_err)?;
        let shown = tls
            .get_ref()
            .1
            .peer_certificates()
            .and_then(|c| c.first())
            .map(|c| c.to_vec())
            .unwrap_or_default();
        let (r, w) = tokio::io::split(tls);
        let mut reader = FramedRead::new(r, FrameCodec::new(1 << 20));
        let mut writer = FramedWrite::new(w, FrameCodec::new(64 << 20));
        writer
            .send(Frame::Hello {
                version: PROTOCOL_VERSION,
                host: host.into(),
                agent: "hand-made".into(),
            })
            .await
            .map_err(|e| Refused::Tls(e.to_string()))?;
        match tokio::time::timeout(Duration::from_secs(10), reader.next()).await {
            Ok(Some(Ok(Frame::Welcome { .. }))) => Ok((
                Raw {
                    reader,
                    writer,
                    seq: 0,
                },
                shown,
            )),
            Ok(Some(Ok(f))) => Err(Refused::Answer(f)),
            Ok(Some(Err(e))) => Err(Refused::Tls(e.to_string())),
            Ok(None) => Err(Refused::Tls("closed".into())),
            Err(_) => panic!("no answer to HELLO within 10 s"),
        }
    }

    /// Send one batch of `payload` to `topic` and return the collector's answer.
    async fn send(&mut self, topic: &str, payload: &[u8], records: u32) -> Frame {
        self.seq += 1;
        let mut scratch = Vec::new();
        let b = BatchFrame::build(
            self.seq,
            topic,
            Compression::Lz4,
            records,
            payload,
            &mut scratch,
        );
        self.writer.send(Frame::Batch(b)).await.expect("send batch");
        match tokio::time::timeout(Duration::from_secs(10), self.reader.next()).await {
            Ok(Some(Ok(f))) => f,
            other => panic!("no answer to a batch: {other:?}"),
        }
    }
}

/// One block of `n` records claiming (`host`, `source`, `source_id`), at `offset`.
fn forged(host: &str, source: &str, source_id: u64, offset: u64, n: u32) -> Vec<u8> {
    let mut p = Vec::new();
    let mut w = BlockWriter::begin(&mut p, host, source, source_id, b"");
    for i in 0..n {
        w.push(
            &mut p,
            0,
            1_700_000_000_000,
            offset + u64::from(i),
            b"",
            b"forged line",
        );
    }
    w.finish(&mut p);
    p
}

/// The `source_id` the agent in `data_dir` saved for `path` once it was acknowledged
/// (what an attacker who can read that host's checkpoint file would use).
fn saved_source_id(data_dir: &Path, path: &Path, timeout: Duration) -> u64 {
    let deadline = Instant::now() + timeout;
    loop {
        if let Ok(text) = std::fs::read_to_string(data_dir.join("checkpoints.json"))
            && let Ok(v) = serde_json::from_str::<serde_json::Value>(&text)
        {
            let mut found = None;
            find_entry(&v, path.to_str().expect("utf-8 path"), &mut found);
            if let Some(id) = found {
                return id;
            }
        }
        assert!(
            Instant::now() < deadline,
            "no checkpoint for {}",
            path.display()
        );
        std::thread::sleep(Duration::from_millis(100));
    }
}

fn find_entry(v: &serde_json::Value, path: &str, found: &mut Option<u64>) {
    match v {
        serde_json::Value::Object(m) => {
            if m.values().any(|x| x == path)
                && let Some(id) = m.get("source_id").and_then(serde_json::Value::as_u64)
            {
                *found = Some(id);
            }
            m.values().for_each(|x| find_entry(x, path, found));
        }
        serde_json::Value::Array(a) => a.iter().for_each(|x| find_entry(x, path, found)),
        _ => {}
    }
}

fn agent_yaml(
    env: &Env,
    c: &Collector,
    name: &str,
    host: &str,
    log: &Path,
    cert: &Path,
    key: &Path,
) -> String {
    format!(
        "host: {host}\ndata_dir: {data}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{log}\"]\n    read_from: beginning\n\
         output:\n  collectors: [\"127.0.0.1:{port}\"]\n  tls:\n    ca: {ca}\n    cert: {cert}\n    key: {key}\n    server_name: localhost\n  batch: {{linger_ms: 20}}\n",
        data = env.path().join(format!("{name}-data")).display(),
        log = log.display(),
        port = c.ingest_port,
        ca = env.certs.ca.display(),
        cert = cert.display(),
        key = key.display(),
    )
}

/// Where the tests' input files live (not beside the processes' own logs).
fn logs_dir(env: &Env) -> std::path::PathBuf {
    let d = env.path().join("logs");
    std::fs::create_dir_all(&d).expect("logs dir");
    d
}

fn lines(prefix: &str, range: std::ops::Range<u32>) -> Vec<String> {
    range.map(|i| format!("{prefix} line {i:05}")).collect()
}

/// Every line of `expected` is stored exactly once under `host`.
fn assert_exactly_once(c: &Collector, host: &str, expected: &[String]) {
    let got: Vec<String> = c
        .read_all("app")
        .into_iter()
        .filter(|r| r.host == host && r.message != "forged line")
        .map(|r| r.message)
        .collect();
    let mut sorted = got.clone();
    sorted.sort();
    sorted.dedup();
    assert_eq!(sorted.len(), got.len(), "{host}: duplicates stored");
    let mut want = expected.to_vec();
    want.sort();
    assert_eq!(sorted, want, "{host}: lines lost");
}

fn wait_for_log(p: &Proc, needle: &str, timeout: Duration) {
    let deadline = Instant::now() + timeout;
    while !p.log_text().contains(needle) {
        assert!(
            Instant::now() < deadline,
            "`{needle}` not logged within {timeout:?}:\n{}",
            p.log_text()
        );
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `identity: enforce` with an administrator's openssl PKI: an agent writes only as
/// the names of its certificate; a forged source id with a huge offset under its
/// own name leaves another agent's lines untouched.
#[test]
fn enforce_binds_hosts_to_certificates_made_by_openssl() {
    let mut env = Env::new();
    let pki = Pki::new(&env.path().join("pki"));
    env.certs = pki.cert_files("web-01");
    let (b_cert, b_key) = pki.issue("web-02", "DNS:web-02,DNS:web-02.example.com", "clientAuth");
    let c = env.start_collector_with("  identity: enforce\n", "");

    // Agent A, host web-01 with the certificate for web-01.
    let a_log = logs_dir(&env).join("a.log");
    append_lines(&a_log, lines("a", 0..200));
    let a_yaml = agent_yaml(
        &env,
        &c,
        "a",
        "web-01",
        &a_log,
        &env.certs.agent_cert,
        &env.certs.agent_key,
    );
    let mut a = env.start_agent("a", &a_yaml);
    c.wait_for_count("app", 200, Duration::from_secs(30), &a);
    assert!(
        c.read_all("app")
            .iter()
            .all(|r| r.json["agent"] == "web-01")
    );

    // The same certificate claiming to be db-prod-01: refused, nothing stored, and
    // both sides say why.
    let m_log = logs_dir(&env).join("m.log");
    append_lines(&m_log, lines("m", 0..10));
    let m_yaml = agent_yaml(
        &env,
        &c,
        "m",
        "db-prod-01",
        &m_log,
        &env.certs.agent_cert,
        &env.certs.agent_key,
    );
    let mut m = env.start_agent("m", &m_yaml);
    wait_for_log(
        &c.proc,
        "host `db-prod-01` is not a name of the agent's certificate",
        Duration::from_secs(20),
    );
    wait_for_log(
        &m,
        "host `db-prod-01` is not a name of the agent's certificate",
        Duration::from_secs(20),
    );
    m.kill();
    assert_eq!(c.count("app"), 200, "the impostor's records were stored");

    // Agent B (web-02) by hand: writing as web-01 is refused whatever the source…
    let a_id = saved_source_id(&env.path().join("a-data"), &a_log, Duration::from_secs(20));
    let a_source = a_log.to_str().expect("utf-8 path");
    block_on(async {
        let mut b = Raw::connect(&env, &c, &b_cert, &b_key, "web-02")
            .await
            .expect("B is welcome");
        match b
            .send("app", &forged("web-01", a_source, a_id, 1 << 62, 1), 1)
            .await
        {
            Frame::Error {
                code: ErrorCode::Forbidden,
                message,
            } => {
                assert!(message.contains("`web-01` is not a name"), "{message}")
            }
            other => panic!("B writing as web-01 was not refused: {other:?}"),
        }
        // …and under its own name, A's source id with a huge offset only lands in
        // B's own deduplication state.
        let mut b = Raw::connect(&env, &c, &b_cert, &b_key, "web-02.example.com")
            .await
            .expect("B is welcome");
        match b
            .send("app", &forged("web-02", a_source, a_id, 1 << 62, 1), 1)
            .await
        {
            Frame::Ack { .. } => {}
            other => panic!("B's own batch was not stored: {other:?}"),
        }
        // HELLO as another host is refused at once.
        match Raw::connect(&env, &c, &b_cert, &b_key, "web-01").await {
            Err(Refused::Answer(Frame::Error {
                code: ErrorCode::Forbidden,
                ..
            })) => {}
            Err(other) => panic!("unexpected answer {other:?}"),
            Ok(_) => panic!("HELLO as web-01 with web-02's certificate was welcome"),
        }
    });

    // A goes on writing: every line arrives, once.
    append_lines(&a_log, lines("a", 200..300));
    c.wait_for_count("app", 301, Duration::from_secs(30), &a);
    assert_exactly_once(&c, "web-01", &lines("a", 0..300));
    let forged_rec: Vec<_> = c
        .read_all("app")
        .into_iter()
        .filter(|r| r.message == "forged line")
        .collect();
    assert_eq!(forged_rec.len(), 1);
    assert_eq!(forged_rec[0].json["agent"], "web-02");
    a.terminate(Duration::from_secs(10));
}

/// `identity: tag` with certificates from `tributary certs`: any host is accepted
/// and the identity is stored; the original probe (agent B sends A's host and
/// source id with offset 2^63) no longer drops a single line of A.
#[test]
fn tag_records_identity_and_forged_offsets_drop_nothing() {
    let env = Env::new();
    let cert_dir = issue_agent_cert(&env, "web-02");
    let c = env.start_collector_with("  identity: tag\n", "");

    let a_log = logs_dir(&env).join("a.log");
    append_lines(&a_log, lines("a", 0..200));
    let a_yaml = agent_yaml(
        &env,
        &c,
        "a",
        "web-01",
        &a_log,
        &env.certs.agent_cert,
        &env.certs.agent_key,
    );
    let mut a = env.start_agent("a", &a_yaml);
    c.wait_for_count("app", 200, Duration::from_secs(30), &a);
    let recs = c.read_all("app");
    assert!(
        recs.iter()
            .all(|r| r.host == "web-01" && r.json["agent"] == "tributary-agent")
    );

    let a_id = saved_source_id(&env.path().join("a-data"), &a_log, Duration::from_secs(20));
    let a_source = a_log.to_str().expect("utf-8 path");
    block_on(async {
        let (cert, key) = (cert_dir.join("web-02.pem"), cert_dir.join("web-02.key"));
        let mut b = Raw::connect(&env, &c, &cert, &key, "web-01")
            .await
            .expect("tag welcomes any host");
        match b
            .send("app", &forged("web-01", a_source, a_id, 1 << 63, 1), 1)
            .await
        {
            Frame::Ack { .. } => {}
            other => panic!("forged batch not stored: {other:?}"),
        }
    });
    append_lines(&a_log, lines("a", 200..300));
    c.wait_for_count("app", 301, Duration::from_secs(30), &a);
    assert_exactly_once(&c, "web-01", &lines("a", 0..300));
    let forged_rec: Vec<_> = c
        .read_all("app")
        .into_iter()
        .filter(|r| r.message == "forged line")
        .collect();
    assert_eq!(forged_rec.len(), 1);
    assert_eq!(forged_rec[0].host, "web-01");
    assert_eq!(
        forged_rec[0].json["agent"], "web-02",
        "the forgery carries its sender's identity"
    );
    a.terminate(Duration::from_secs(10));
}

/// Poll `f` every 100 ms until it returns true or `timeout` passes.
fn eventually(what: &str, timeout: Duration, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !f() {
        assert!(Instant::now() < deadline, "not within {timeout:?}: {what}");
        std::thread::sleep(Duration::from_millis(100));
    }
}

/// `tributary certs --revoke`: the collector refuses the revoked certificate once
/// the CRL on disk is replaced, without a restart; other agents carry on.
#[test]
fn revoked_certificate_is_refused_after_the_crl_changes_on_disk() {
    let env = Env::new();
    let dir = issue_agent_cert(&env, "web-02");
    let dir_s = dir.to_str().expect("utf-8");
    let crl = dir.join("crl.pem");
    assert!(crl.exists(), "a new CA comes with an empty CRL");
    let c = env.start_collector_with(
        &format!("    client_crl: {}\n  identity: tag\n", crl.display()),
        "",
    );
    let (cert, key) = (dir.join("web-02.pem"), dir.join("web-02.key"));
    let (agent_cert, agent_key) = (env.certs.agent_cert.clone(), env.certs.agent_key.clone());
    block_on(async {
        Raw::connect(&env, &c, &cert, &key, "web-02")
            .await
            .expect("web-02 is welcome before revocation");
    });
    let (code, out, err) = tributary_e2e::run(
        "tributary",
        &["certs", "--out", dir_s, "--revoke", "web-02"],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("crl.pem"), "{out}");
    eventually(
        "web-02 refused after revocation",
        Duration::from_secs(15),
        || block_on(Raw::connect(&env, &c, &cert, &key, "web-02")).is_err(),
    );
    block_on(async {
        match Raw::connect(&env, &c, &cert, &key, "web-02").await {
            Err(Refused::Tls(why)) => assert!(!why.is_empty()),
            Err(other) => panic!("revoked certificate refused oddly: {other:?}"),
            Ok(_) => panic!("revoked certificate welcome"),
        }
        Raw::connect(&env, &c, &agent_cert, &agent_key, "web-01")
            .await
            .expect("other agents carry on");
    });
    wait_for_log(
        &c.proc,
        "the agent's certificate is revoked",
        Duration::from_secs(10),
    );
    wait_for_log(&c.proc, "files reloaded", Duration::from_secs(1));

    // A CRL that does not parse keeps the one in force, and says why.
    std::fs::write(
        &crl,
        "-----BEGIN X509 CRL-----\nbm90IGEgQ1JM\n-----END X509 CRL-----\n",
    )
    .expect("write");
    wait_for_log(
        &c.proc,
        "cannot be used; keeping the previous ones",
        Duration::from_secs(15),
    );
    block_on(async {
        assert!(
            Raw::connect(&env, &c, &cert, &key, "web-02").await.is_err(),
            "still revoked"
        );
        Raw::connect(&env, &c, &agent_cert, &agent_key, "web-01")
            .await
            .expect("still serving");
    });
}

/// With an administrator's openssl CA: a CRL made by `openssl ca -gencrl` replaced
/// on disk is applied without a restart, and a renewed collector certificate is
/// served to new connections.
#[test]
fn openssl_crl_and_renewed_collector_certificate_apply_without_restart() {
    let mut env = Env::new();
    let pki = Pki::new(&env.path().join("pki"));
    env.certs = pki.cert_files("web-01");
    let (b_cert, b_key) = pki.issue("web-02", "DNS:web-02", "clientAuth");
    let crl = env.path().join("crl.pem");
    pki.crl(&crl);
    let mut c = env.start_collector_with(
        &format!("    client_crl: {}\n  identity: enforce\n", crl.display()),
        "",
    );
    let (a_cert, a_key) = (env.certs.agent_cert.clone(), env.certs.agent_key.clone());
    let first_shown = block_on(async {
        Raw::connect(&env, &c, &b_cert, &b_key, "web-02")
            .await
            .expect("web-02 welcome");
        let (_, shown) = Raw::connect_port(&env.certs.ca, c.ingest_port, &a_cert, &a_key, "web-01")
            .await
            .expect("web-01 welcome");
        shown
    });
    // Revoke web-02 in the CA database and publish the new CRL over the old file.
    pki.revoke("web-02");
    let staged = env.path().join("crl.new");
    pki.crl(&staged);
    std::fs::rename(&staged, &crl).expect("replace CRL");
    eventually(
        "web-02 refused after the openssl CRL",
        Duration::from_secs(15),
        || block_on(Raw::connect(&env, &c, &b_cert, &b_key, "web-02")).is_err(),
    );

    // Renew the collector's certificate (with a new key) in place.
    pki.issue("collector", "DNS:localhost,IP:127.0.0.1", "serverAuth");
    let renewed =
        tributary_common::tls::load_certs(&env.certs.collector_cert).expect("renewed")[0].to_vec();
    assert_ne!(renewed, first_shown);
    eventually(
        "the renewed collector certificate is served",
        Duration::from_secs(15),
        || {
            block_on(Raw::connect_port(
                &env.certs.ca,
                c.ingest_port,
                &a_cert,
                &a_key,
                "web-01",
            ))
            .is_ok_and(|(_, shown)| shown == renewed)
        },
    );
    assert!(c.proc.is_running(), "served without a restart");
}

/// `curl` as an operator would run it: (HTTP status, body).
fn curl(ca: &Path, url: &str, token: Option<&str>, post: Option<&str>) -> (u16, String) {
    let mut args: Vec<String> = vec![
        "-sS".into(),
        "--max-time".into(),
        "20".into(),
        "--cacert".into(),
        ca.display().to_string(),
        "-w".into(),
        "\n%{http_code}".into(),
    ];
    if let Some(t) = token {
        args.extend(["-H".into(), format!("Authorization: Bearer {t}")]);
    }
    if let Some(body) = post {
        args.extend([
            "-H".into(),
            "Content-Type: application/json".into(),
            "--data".into(),
            body.into(),
        ]);
    }
    args.push(url.into());
    let out = std::process::Command::new("curl")
        .args(&args)
        .output()
        .expect("run curl (Debian package `curl`)");
    let text = String::from_utf8_lossy(&out.stdout).into_owned();
    let (body, code) = text.rsplit_once('\n').unwrap_or(("", &text));
    (code.trim().parse().unwrap_or(0), body.to_owned())
}

/// HTTPS with `api.tls` and bearer tokens with scopes, checked with curl and the CLI.
#[test]
fn api_over_https_needs_a_token_with_the_right_scope() {
    let env = Env::new();
    let tokens = env.path().join("tokens");
    let reader = token_add(&tokens, "dashboard", "read");
    let committer = token_add(&tokens, "etl", "read,commit");
    assert!(
        !std::fs::read_to_string(&tokens)
            .expect("tokens")
            .contains(&reader)
    );
    let mut c = env.start_collector_full(
        tributary_e2e::free_port(),
        tributary_e2e::free_port(),
        "",
        &format!(
            "  tls: {{cert: {}, key: {}}}\n  auth: {{tokens_file: {}}}\n",
            env.certs.collector_cert.display(),
            env.certs.collector_key.display(),
            tokens.display()
        ),
        "",
    );
    c.api = c.api.clone().with_token(Some(reader.clone()));
    let log = logs_dir(&env).join("app.log");
    append_lines(&log, lines("x", 0..50));
    let yaml = format!(
        "host: web-01\ndata_dir: {}\ninputs:\n  - type: file\n    topic: app\n    include: [\"{}\"]\n{}",
        env.path().join("agent-data").display(),
        log.display(),
        env.output_yaml(&c, "lz4")
    );
    let mut agent = env.start_agent("agent", &yaml);
    c.wait_for_count("app", 50, Duration::from_secs(30), &agent);

    let ca = &env.certs.ca;
    let base = format!("https://127.0.0.1:{}", c.api_port);
    let url = |p: &str| format!("{base}{p}");
    // Open: health. Everything else needs a token.
    assert_eq!(curl(ca, &url("/healthz"), None, None).0, 200);
    for path in ["/v1/topics", "/v1/query?topic=app", "/metrics", "/v1/nope"] {
        let (code, body) = curl(ca, &url(path), None, None);
        assert_eq!(code, 401, "{path}: {body}");
        assert!(
            body.contains("\"error\"") && body.contains("needs a token"),
            "{body}"
        );
    }
    let (code, body) = curl(ca, &url("/v1/topics"), Some("trb_guess"), None);
    assert_eq!(code, 401, "{body}");
    assert!(body.contains("unknown or revoked token"), "{body}");
    // read: topics, records, queries, metrics; not commits.
    let (code, body) = curl(
        ca,
        &url("/v1/query?topic=app&contains=x%20line%2000042"),
        Some(&reader),
        None,
    );
    assert_eq!(code, 200, "{body}");
    assert!(body.contains("x line 00042"), "{body}");
    assert_eq!(curl(ca, &url("/metrics"), Some(&reader), None).0, 200);
    let part = c
        .end_offsets("app")
        .into_iter()
        .find(|&(_, end)| end >= 3)
        .map(|(p, _)| p)
        .expect("a partition with records");
    let commit = format!(r#"{{"topic":"app","partition":{part},"offset":3}}"#);
    let commit = commit.as_str();
    let (code, body) = curl(
        ca,
        &url("/v1/groups/etl-job/offsets"),
        Some(&reader),
        Some(commit),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("token `dashboard` has scope read") && body.contains("`commit`"),
        "{body}"
    );
    assert!(
        c.get("/v1/groups")
            .expect("groups")
            .as_array()
            .is_some_and(|g| g.is_empty()),
        "no group created"
    );
    // commit: can commit.
    let (code, body) = curl(
        ca,
        &url("/v1/groups/etl-job/offsets"),
        Some(&committer),
        Some(commit),
    );
    assert_eq!(code, 200, "{body}");
    let (_, body) = curl(ca, &url("/v1/groups/etl-job/offsets"), Some(&reader), None);
    assert!(body.contains("\"offset\":3"), "{body}");
    // Plain HTTP to the HTTPS port gets nowhere.
    let (code, _) = curl(
        ca,
        &format!("http://127.0.0.1:{}/v1/topics", c.api_port),
        Some(&reader),
        None,
    );
    assert_ne!(code, 200);

    // The CLI: --ca and --token (or TRIBUTARY_TOKEN).
    let api_arg = base.as_str();
    let ca_s = ca.to_str().expect("utf-8");
    let (code, out, err) = tributary_e2e::run(
        "tributary",
        &["topics", "--api", api_arg, "--ca", ca_s, "--token", &reader],
    );
    assert_eq!(code, 0, "{err}");
    assert!(out.contains("\"app\""), "{out}");
    let (code, _, err) = tributary_e2e::run(
        "tributary",
        &["topics", "--api", api_arg, "--token", &reader],
    );
    assert_ne!(code, 0);
    assert!(err.contains("--ca"), "{err}");
    let (code, _, err) =
        tributary_e2e::run("tributary", &["topics", "--api", api_arg, "--ca", ca_s]);
    assert_ne!(code, 0);
    assert!(
        err.contains("needs a token") && err.contains("401"),
        "{err}"
    );
    let (code, _, err) = tributary_e2e::run(
        "tributary",
        &[
            "consume", "--api", api_arg, "--ca", ca_s, "--token", &reader, "--topic", "app",
            "--group", "cli", "--max", "5",
        ],
    );
    assert_ne!(code, 0, "a read token cannot commit");
    assert!(err.contains("needs `commit`"), "{err}");

    // Removing a token's line revokes it without a restart.
    let kept: String = std::fs::read_to_string(&tokens)
        .expect("tokens")
        .lines()
        .filter(|l| !l.starts_with("dashboard "))
        .map(|l| format!("{l}\n"))
        .collect();
    std::fs::write(&tokens, kept).expect("rewrite tokens");
    eventually(
        "the removed token is refused",
        Duration::from_secs(15),
        || curl(ca, &url("/v1/topics"), Some(&reader), None).0 == 401,
    );
    assert_eq!(curl(ca, &url("/v1/topics"), Some(&committer), None).0, 200);
    agent.terminate(Duration::from_secs(10));
}

/// `topics.allow`: an agent writes only to the topics its certificate identity is
/// allowed, an HTTP producer only to its token's.
#[test]
fn topics_allow_limits_writers_by_identity_and_token() {
    let env = Env::new();
    let dir = issue_agent_cert(&env, "web-02");
    let tokens = env.path().join("tokens");
    let etl = token_add(&tokens, "etl", "read,write");
    let mut c = env.start_collector_full(
        tributary_e2e::free_port(),
        tributary_e2e::free_port(),
        "",
        &format!("  auth: {{tokens_file: {}}}\n", tokens.display()),
        "topics:\n  allow:\n    \"web-*\": [\"web\", \"app-*\"]\n    etl: [imports]\n    \"*\": [misc]\n",
    );
    c.api = c.api.clone().with_token(Some(etl.clone()));
    let (cert, key) = (dir.join("web-02.pem"), dir.join("web-02.key"));
    block_on(async {
        let mut b = Raw::connect(&env, &c, &cert, &key, "web-02")
            .await
            .expect("welcome");
        for (topic, allowed) in [
            ("web", true),
            ("app-api", true),
            ("misc", true),
            ("imports", false),
            ("db", false),
        ] {
            match b
                .send(topic, &forged("web-02", "/var/log/x.log", 0, 0, 2), 2)
                .await
            {
                Frame::Ack { .. } => assert!(allowed, "web-02 wrote to {topic}"),
                Frame::Reject {
                    code: ErrorCode::Forbidden,
                    message,
                    ..
                } => {
                    assert!(!allowed, "web-02 refused {topic}: {message}");
                    assert!(
                        message.contains("`web-02` may not write to topic"),
                        "{message}"
                    );
                }
                other => panic!("{topic}: {other:?}"),
            }
        }
    });
    for topic in ["web", "app-api", "misc"] {
        assert_eq!(c.count(topic), 2, "{topic}");
    }
    assert_eq!(c.count("imports") + c.count("db"), 0);
    // HTTP producers by token name.
    let base = format!("http://127.0.0.1:{}", c.api_port);
    let ca = &env.certs.ca;
    let (code, body) = curl(
        ca,
        &format!("{base}/v1/topics/imports/records"),
        Some(&etl),
        Some("{\"message\":\"ok\"}"),
    );
    assert_eq!(code, 200, "{body}");
    let (code, body) = curl(
        ca,
        &format!("{base}/v1/topics/web/records"),
        Some(&etl),
        Some("{\"message\":\"no\"}"),
    );
    assert_eq!(code, 403, "{body}");
    assert!(
        body.contains("`etl` may not write to topic `web`"),
        "{body}"
    );
    assert_eq!(c.count("imports"), 1);
    assert_eq!(c.count("web"), 2);
    assert_eq!(
        c.read_all("imports")[0].json["agent"],
        "etl",
        "stamped with its token"
    );
}

/// The agent follows its own certificate too: a renewed (here: re-issued under
/// another name) certificate is used by its next connection, without a restart;
/// SIGHUP rebuilds the collector's TLS at once.
#[test]
fn agent_uses_a_renewed_certificate_without_restart_and_sighup_reloads() {
    let env = Env::new();
    let dir = issue_agent_cert(&env, "web-02");
    // The agent reconnects for every batch: the collector closes idle connections.
    let c = env.start_collector_with("  idle_timeout: 300ms\n  identity: tag\n", "");
    let (cert, key) = (env.path().join("agent.pem"), env.path().join("agent.key"));
    std::fs::copy(&env.certs.agent_cert, &cert).expect("copy cert");
    std::fs::copy(&env.certs.agent_key, &key).expect("copy key");
    let log = logs_dir(&env).join("app.log");
    append_lines(&log, lines("before", 0..10));
    let yaml = agent_yaml(&env, &c, "agent", "web-02", &log, &cert, &key);
    let mut agent = env.start_agent("agent", &yaml);
    c.wait_for_count("app", 10, Duration::from_secs(30), &agent);
    // Renew in place: the key first, then the certificate (a moment where they do
    // not match, which must not break anything).
    std::fs::copy(dir.join("web-02.key"), &key).expect("new key");
    std::fs::copy(dir.join("web-02.pem"), &cert).expect("new cert");
    wait_for_log(&agent, "files reloaded", Duration::from_secs(15));
    std::thread::sleep(Duration::from_millis(500));
    append_lines(&log, lines("after", 0..10));
    c.wait_for_count("app", 20, Duration::from_secs(30), &agent);
    let recs = c.read_all("app");
    let agent_of = |prefix: &str| -> Vec<String> {
        recs.iter()
            .filter(|r| r.message.starts_with(prefix))
            .map(|r| r.json["agent"].as_str().unwrap_or("").to_owned())
            .collect()
    };
    assert!(agent_of("before").iter().all(|a| a == "tributary-agent"));
    assert!(
        agent_of("after").iter().all(|a| a == "web-02"),
        "{:?}",
        agent_of("after")
    );
    assert!(agent.is_running(), "no restart");

    let reloads = |p: &Proc| p.log_text().matches("files reloaded").count();
    let before = reloads(&c.proc);
    let out = std::process::Command::new("kill")
        .args(["-HUP", &c.proc.pid().to_string()])
        .status()
        .expect("kill -HUP");
    assert!(out.success());
    eventually(
        "SIGHUP reloads the collector's TLS",
        Duration::from_secs(10),
        || reloads(&c.proc) > before,
    );
    assert_eq!(c.count("app"), 20);
    agent.terminate(Duration::from_secs(10));
}
