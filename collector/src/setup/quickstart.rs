//! `tributary quickstart`: a collector and an agent in one process on localhost,
//! with generated dev certificates, tailing `/var/log/**/*.log` and a demo file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tributary_agent::config::AgentConfig;

use crate::config::CollectorConfig;
use crate::server::Collector;
use crate::setup::certs::{self, CertFiles};

/// Where quickstart keeps everything, relative to the working directory.
pub const DATA_DIR: &str = "tributary-data";

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// What `tributary quickstart` was asked for.
#[derive(Debug, Clone)]
pub struct Options {
    /// Where certificates, configs, data and the demo log go.
    pub dir: PathBuf,
    /// Ingest and API ports on 127.0.0.1 (0: any free port).
    pub ingest_port: u16,
    pub api_port: u16,
    /// Kafka-compatible listener port on 127.0.0.1 (0: any free port).
    pub kafka_port: u16,
}

/// The system logs quickstart tails besides the demo file.
const SYSTEM_GLOB: &str = "/var/log/**/*.log";

/// A port on 127.0.0.1 for `flag`: `port` if it is free (0: any free one), else an
/// error saying what to do.
fn free_port(port: u16, flag: &str) -> anyhow::Result<u16> {
    match std::net::TcpListener::bind(("127.0.0.1", port)) {
        Ok(l) => Ok(l.local_addr()?.port()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => anyhow::bail!(
            "port {port} on 127.0.0.1 is in use (another quickstart or collector?): stop it, or choose another port with {flag} N"
        ),
        Err(e) => anyhow::bail!("cannot listen on 127.0.0.1:{port} ({flag}): {e}"),
    }
}

/// Run until `shutdown` (Ctrl-C): then stop the demo writer and the agent, which
/// delivers what it has in flight while the collector still runs, then the collector.
pub async fn run(options: Options, shutdown: CancellationToken) -> anyhow::Result<()> {
    let ingest_port = free_port(options.ingest_port, "--ingest-port")?;
    let api_port = free_port(options.api_port, "--api-port")?;
    let kafka_port = free_port(options.kafka_port, "--kafka-port")?;
    let data = abs(&options.dir);
    std::fs::create_dir_all(data.join("demo"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let cert_dir = data.join("certs");
    let certs = if CertFiles::in_dir(&cert_dir).exist() {
        CertFiles::in_dir(&cert_dir)
    } else {
        certs::generate(&cert_dir, &[])?
    };
    // The agent's certificate names this host, so the collector (identity:
    // enforce) accepts its records under the host name they carry; a host name
    // that cannot be a certificate name ships as `tributary-agent`.
    let host = gethostname_for_cert();
    let (agent_cert, agent_key) = match &host {
        Some(h) if cert_dir.join(format!("{h}.pem")).exists() => (
            cert_dir.join(format!("{h}.pem")),
            cert_dir.join(format!("{h}.key")),
        ),
        Some(h) => certs::issue_agent(&cert_dir, h, certs::DEFAULT_DAYS)?,
        None => (certs.agent_cert.clone(), certs.agent_key.clone()),
    };
    let host = host.unwrap_or_else(|| "tributary-agent".to_owned());
    let demo_log = data.join("demo").join("app.log");
    let tokens_file = data.join("tokens");
    let token = quickstart_token(&data, &tokens_file)?;
    let collector_yaml = data.join("collector.yaml");
    let agent_yaml = data.join("agent.yaml");
    write_file(
        &collector_yaml,
        &format!(
            "# Written by `tributary quickstart`.\n\
             data_dir: {store}\n\
             ingest:\n  listen: 127.0.0.1:{ingest_port}\n  tls:\n    cert: {cert}\n    key: {key}\n    client_ca: {ca}\n\
             api:\n  listen: 127.0.0.1:{api_port}\n  auth: {{tokens_file: {tokens}}}\n\
             kafka:\n  listen: 127.0.0.1:{kafka_port}\n\
             topics:\n  default: {{partitions: 4}}\n  demo: {{partitions: 1}}\n\
             durability:\n  fsync: always\n",
            store = data.join("collector").display(),
            tokens = tokens_file.display(),
            cert = certs.collector_cert.display(),
            key = certs.collector_key.display(),
            ca = certs.ca.display(),
        ),
    )?;
    // The system logs are read from their end (their past is not the demo's), and
    // only when some are readable here: an input that matches nothing only warns.
    let system = tributary_agent::input::file::preview(&[SYSTEM_GLOB.to_owned()], &[])
        .map(|p| p.readable.len())
        .unwrap_or(0);
    let system_input = if system > 0 {
        format!(
            "\x20 - type: file\n    topic: system\n    include: [\"{SYSTEM_GLOB}\"]\n    read_from: end\n"
        )
    } else {
        String::new()
    };
    // The systemd journal, from now on, when this machine has one we can read.
    let journal = has_journal();
    let journal_input = if journal {
        "\x20 - type: journald\n    topic: journal\n    since_now: true\n"
    } else {
        ""
    };
    write_file(
        &agent_yaml,
        &format!(
            "# Written by `tributary quickstart`.\n\
             host: {host}\n\
             data_dir: {agent_data}\n\
             inputs:\n\
             \x20 - type: file\n    topic: demo\n    include: [\"{demo}\"]\n    read_from: beginning\n    fields: {{env: quickstart}}\n\
             {system_input}\
             {journal_input}\
             output:\n  collectors: [\"127.0.0.1:{ingest_port}\"]\n  tls:\n    ca: {ca}\n    cert: {cert}\n    key: {key}\n    server_name: localhost\n  compression: lz4\n",
            agent_data = data.join("agent").display(),
            demo = demo_log.display(),
            ca = certs.ca.display(),
            cert = agent_cert.display(),
            key = agent_key.display(),
        ),
    )?;
    // The demo file exists before the agent's first scan looks for it.
    std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(&demo_log)
        .map_err(|e| anyhow::anyhow!("{}: {e}", demo_log.display()))?;
    let collector_config = CollectorConfig::load(&collector_yaml)?;
    let agent_config = AgentConfig::load(&agent_yaml)?;

    let collector = Collector::bind(collector_config).await?;
    let api = format!("http://{}", collector.api_addr());
    // Each part stops on its own token, in order (see below), not all at once on Ctrl-C.
    let collector_shutdown = CancellationToken::new();
    let collector_task = tokio::spawn(collector.run(collector_shutdown.clone()));
    let agent_shutdown = CancellationToken::new();
    let agent_task = tokio::spawn(tributary_agent::run(agent_config, agent_shutdown.clone()));
    let demo_shutdown = CancellationToken::new();
    let demo_task = tokio::spawn(write_demo(demo_log.clone(), demo_shutdown.clone()));

    let system_line = if system > 0 {
        format!(
            "{SYSTEM_GLOB} (topic `system`, {system} file(s) now): read from their end, so only lines written from now on appear (none on a quiet machine)"
        )
    } else {
        format!("no readable file matches {SYSTEM_GLOB} here, so only the demo file is tailed")
    };
    let system_line = if journal {
        format!("{system_line}; the systemd journal goes to topic `journal` from now on")
    } else {
        system_line
    };
    // The client commands, as this checkout runs them, pointed at this collector.
    let cli = if api_port == 7401 {
        "cargo run --release --bin tributary --".to_owned()
    } else {
        format!("TRIBUTARY_API={api} cargo run --release --bin tributary --")
    };
    println!(
        "\nTributary quickstart is running.\n\
         \x20 collector: ingest 127.0.0.1:{ingest_port} (TLS, mutual), API {api}, Kafka 127.0.0.1:{kafka_port}, data in {data}/collector\n\
         \x20 agent:     tails {demo} (topic `demo`, a line every 0.5 s)\n\
         \x20            and {system_line}\n\
         \x20 configs:   {cy} and {ay}\n\n\
         Open the console in a browser (search, histogram, live tail, agents):\n\
         \x20 {api}/#search?topic=demo&range=15m&token={token}\n\n\
         Read the logs back from another terminal; the API and the Kafka listener want a\n\
         token (this one, `quickstart`, may do anything):\n\
         \x20 export TRIBUTARY_TOKEN=$(cat {token_file})\n\
         \x20 {cli} topics --output text\n\
         \x20 {cli} consume --topic demo --offset earliest --max 10\n\
         \x20 {cli} consume --topic demo --follow --output text\n\
         \x20 {cli} query --topic demo --since 5m --grep /api/ --output text\n\
         \x20 {cli} consume --topic demo --group mine --max 5; {cli} groups mine --output text\n\
         \x20 curl -H \"Authorization: Bearer $TRIBUTARY_TOKEN\" '{api}/v1/topics/demo/partitions/0/records?offset=earliest&max=5'\n\
         \x20 curl -H \"Authorization: Bearer $TRIBUTARY_TOKEN\" {api}/metrics\n\
         \x20 kcat -b 127.0.0.1:{kafka_port} -X security.protocol=SASL_PLAINTEXT -X sasl.mechanisms=PLAIN -X sasl.username=quickstart -X sasl.password=$TRIBUTARY_TOKEN -C -t demo -o beginning -e -f '%p/%o %T %k: %s\\n'\n\
         A token that may only read, for a dashboard:\n\
         \x20 {cli} token add --tokens-file {tokens} --name grafana --scopes read\n\n\
         Press Ctrl-C to stop.\n",
        data = data.display(),
        demo = demo_log.display(),
        cy = collector_yaml.display(),
        ay = agent_yaml.display(),
        token_file = data.join("quickstart.token").display(),
        tokens = tokens_file.display(),
    );
    let _ = std::io::stdout().flush();

    // Until Ctrl-C, or until the agent or the collector stops by itself (an error).
    let (mut agent_task, mut collector_task) = (agent_task, collector_task);
    let (mut agent_done, mut collector_done) = (None, None);
    tokio::select! {
        _ = shutdown.cancelled() => {}
        r = &mut agent_task => agent_done = Some(r),
        r = &mut collector_task => collector_done = Some(r),
    }
    // The demo writer first, then the agent, which delivers what is in flight to the
    // collector that is still running; the collector last.
    demo_shutdown.cancel();
    let _ = demo_task.await;
    agent_shutdown.cancel();
    let agent_result = match agent_done {
        Some(r) => r,
        None => agent_task.await,
    };
    collector_shutdown.cancel();
    let collector_result = match collector_done {
        Some(r) => r,
        None => collector_task.await,
    };
    match agent_result {
        Ok(Err(e)) => eprintln!("agent: {}", tributary_common::error::report(&e)),
        Err(e) => eprintln!("agent task: {e}"),
        Ok(Ok(())) => {}
    }
    collector_result??;
    println!("quickstart stopped; data kept in {}", data.display());
    Ok(())
}

/// Append a plausible access-log line to `path` twice a second.
async fn write_demo(path: PathBuf, shutdown: CancellationToken) {
    let paths = [
        "/api/orders",
        "/api/users",
        "/health",
        "/api/search?q=rust",
        "/login",
    ];
    let mut n: u64 = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(500));
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shutdown.cancelled() => return,
        }
        n += 1;
        let status = if n.is_multiple_of(17) {
            500
        } else if n.is_multiple_of(7) {
            404
        } else {
            200
        };
        let level = if status >= 500 { "ERROR" } else { "INFO" };
        // No timestamp in the line: the record carries the time the agent read it.
        let line = format!(
            "{level} request_id={n} method=GET path={} status={status} duration_ms={}\n",
            paths[(n as usize) % paths.len()],
            3 + (n * 37) % 120,
        );
        let r = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&path)
            .and_then(|mut f| f.write_all(line.as_bytes()));
        if let Err(e) = r {
            tracing::warn!(path = %path.display(), error = %e, "demo writer failed");
            return;
        }
    }
}

/// This machine's host name, when it can name an agent certificate.
fn gethostname_for_cert() -> Option<String> {
    let h = tributary_agent::config::hostname().to_ascii_lowercase();
    certs::valid_agent_name(&h).then_some(h)
}

/// The token quickstart's commands use (scope `admin`): kept in
/// `<dir>/quickstart.token` (mode 0600) so a second run prints the same one, and
/// listed (hashed) in `tokens_file`. A pair that does not match is made anew.
fn quickstart_token(dir: &Path, tokens_file: &Path) -> anyhow::Result<String> {
    use std::os::unix::fs::OpenOptionsExt;
    let token_file = dir.join("quickstart.token");
    if let (Ok(t), Ok(tokens)) = (
        std::fs::read_to_string(&token_file),
        crate::api::auth::Tokens::load(tokens_file),
    ) && tokens.find(t.trim()).is_some()
    {
        return Ok(t.trim().to_owned());
    }
    let _ = std::fs::remove_file(tokens_file);
    let token = crate::setup::token::add(tokens_file, "quickstart", &["admin".into()])?;
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(0o600)
        .open(&token_file)
        .map_err(|e| anyhow::anyhow!("{}: {e}", token_file.display()))?;
    f.write_all(token.as_bytes())
        .map_err(|e| anyhow::anyhow!("{}: {e}", token_file.display()))?;
    Ok(token)
}

/// Whether this machine has a systemd journal this user can read (`journalctl`
/// installed and showing at least one entry).
fn has_journal() -> bool {
    std::process::Command::new("journalctl")
        .args(["--lines=1", "--output=export", "--quiet", "--no-pager"])
        .stdin(std::process::Stdio::null())
        .stderr(std::process::Stdio::null())
        .output()
        .is_ok_and(|o| o.status.success() && !o.stdout.is_empty())
}
