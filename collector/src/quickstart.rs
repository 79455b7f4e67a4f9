//! `tributary quickstart`: a collector and an agent in one process on localhost,
//! with generated dev certificates, tailing `/var/log/**/*.log` and a demo file.

use std::io::Write;
use std::path::{Path, PathBuf};
use std::time::Duration;

use tokio_util::sync::CancellationToken;
use tributary_agent::config::AgentConfig;

use crate::certs::{self, CertFiles};
use crate::config::CollectorConfig;
use crate::server::Collector;

/// Where quickstart keeps everything, relative to the working directory.
pub const DATA_DIR: &str = "tributary-data";

fn write_file(path: &Path, text: &str) -> anyhow::Result<()> {
    std::fs::write(path, text).map_err(|e| anyhow::anyhow!("{}: {e}", path.display()))
}

fn abs(p: &Path) -> PathBuf {
    std::path::absolute(p).unwrap_or_else(|_| p.to_owned())
}

/// Run until Ctrl-C.
pub async fn run(shutdown: CancellationToken) -> anyhow::Result<()> {
    let data = abs(Path::new(DATA_DIR));
    std::fs::create_dir_all(data.join("demo"))
        .map_err(|e| anyhow::anyhow!("{}: {e}", data.display()))?;
    let cert_dir = data.join("certs");
    let certs = if CertFiles::in_dir(&cert_dir).exist() {
        CertFiles::in_dir(&cert_dir)
    } else {
        certs::generate(&cert_dir, &[])?
    };
    let demo_log = data.join("demo").join("app.log");
    let collector_yaml = data.join("collector.yaml");
    let agent_yaml = data.join("agent.yaml");
    write_file(
        &collector_yaml,
        &format!(
            "# Written by `tributary quickstart`.\n\
             data_dir: {store}\n\
             ingest:\n  listen: 127.0.0.1:7400\n  tls:\n    cert: {cert}\n    key: {key}\n    client_ca: {ca}\n\
             api:\n  listen: 127.0.0.1:7401\n\
             topics:\n  default: {{partitions: 4}}\n  demo: {{partitions: 1}}\n\
             durability:\n  fsync: always\n",
            store = data.join("collector").display(),
            cert = certs.collector_cert.display(),
            key = certs.collector_key.display(),
            ca = certs.ca.display(),
        ),
    )?;
    write_file(
        &agent_yaml,
        &format!(
            "# Written by `tributary quickstart`.\n\
             data_dir: {agent_data}\n\
             inputs:\n\
             \x20 - type: file\n    topic: demo\n    include: [\"{demo}\"]\n    read_from: beginning\n    fields: {{env: quickstart}}\n\
             \x20 - type: file\n    topic: system\n    include: [\"/var/log/**/*.log\"]\n    read_from: end\n\
             output:\n  collectors: [\"127.0.0.1:7400\"]\n  tls:\n    ca: {ca}\n    cert: {cert}\n    key: {key}\n    server_name: localhost\n  compression: lz4\n",
            agent_data = data.join("agent").display(),
            demo = demo_log.display(),
            ca = certs.ca.display(),
            cert = certs.agent_cert.display(),
            key = certs.agent_key.display(),
        ),
    )?;
    let collector_config = CollectorConfig::load(&collector_yaml)?;
    let agent_config = AgentConfig::load(&agent_yaml)?;

    let collector = Collector::bind(collector_config).await?;
    let api = format!("http://{}", collector.api_addr());
    let collector_task = tokio::spawn(collector.run(shutdown.clone()));
    let agent_shutdown = CancellationToken::new();
    let agent_task = tokio::spawn(tributary_agent::run(agent_config, agent_shutdown.clone()));
    let demo_task = tokio::spawn(write_demo(demo_log.clone(), shutdown.clone()));

    println!(
        "\nTributary quickstart is running.\n\
         \x20 collector: ingest 127.0.0.1:7400 (TLS, mutual), API {api}, data in {data}/collector\n\
         \x20 agent:     tails {demo} (topic `demo`) and /var/log/**/*.log (topic `system`, new lines)\n\
         \x20 configs:   {cy} and {ay}\n\n\
         Read the logs back from another terminal:\n\
         \x20 cargo run --release --bin tributary -- topics --output text\n\
         \x20 cargo run --release --bin tributary -- consume --topic demo --offset earliest --max 10\n\
         \x20 cargo run --release --bin tributary -- consume --topic demo --follow --output text\n\
         \x20 cargo run --release --bin tributary -- query --topic demo --since 5m --grep /api/ --output text\n\
         \x20 cargo run --release --bin tributary -- consume --topic demo --group mine --max 5; \
         cargo run --release --bin tributary -- groups mine --output text\n\
         \x20 curl '{api}/v1/topics/demo/partitions/0/records?offset=earliest&max=5'\n\
         \x20 curl {api}/metrics\n\n\
         Press Ctrl-C to stop.\n",
        data = data.display(),
        demo = demo_log.display(),
        cy = collector_yaml.display(),
        ay = agent_yaml.display(),
    );
    let _ = std::io::stdout().flush();

    shutdown.cancelled().await;
    // Stop the agent first so it can deliver what is in flight, then the collector.
    agent_shutdown.cancel();
    let _ = demo_task.await;
    match agent_task.await {
        Ok(Err(e)) => eprintln!("agent: {e}"),
        Err(e) => eprintln!("agent task: {e}"),
        Ok(Ok(())) => {}
    }
    collector_task.await??;
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
        let line = format!(
            "{} {level} request_id={n} method=GET path={} status={status} duration_ms={}\n",
            tributary_common::timefmt::format_ms(tributary_common::timefmt::now_ms()),
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
