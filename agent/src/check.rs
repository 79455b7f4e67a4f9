//! `tributary-agent --check-config`: what the configuration would do on this host,
//! without starting anything. Loading the config already checked its syntax, keys,
//! globs and certificates (errors name file, line, column and key); this adds what
//! only the host can tell: which files each input matches, which of them cannot be
//! read, whether `data_dir` is writable and the collectors' names resolve, and with
//! `--connect` whether each collector completes a TLS handshake and HELLO.
//!
//! Only what stops the agent from running is an error (exit 1): an unwritable
//! `data_dir`, and with `--connect` a collector that cannot be reached or trusted.
//! What the agent works around while running (an unreadable file or directory, a
//! glob that matches nothing yet, a name that does not resolve now) is a warning.

use std::fmt::Write as _;
use std::net::ToSocketAddrs;
use std::path::Path;

use crate::config::{AgentConfig, Output};
use crate::input::file::preview;

/// The report for people, and whether everything checked out.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

impl Report {
    fn line(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.text, "{}", s.as_ref());
    }
    fn warn(&mut self, s: impl AsRef<str>) {
        let _ = writeln!(self.text, "warning: {}", s.as_ref());
    }
    fn error(&mut self, s: impl AsRef<str>) {
        self.ok = false;
        let _ = writeln!(self.text, "error: {}", s.as_ref());
    }
}

/// How many matched files are listed per input before "and N more".
const LIST_FILES: usize = 5;

/// Check what needs no network; `connect` adds [`connect`]'s results.
pub fn check(config_path: &Path, config: &AgentConfig) -> Report {
    let mut r = Report {
        text: String::new(),
        ok: true,
    };
    r.line(format!(
        "{}: syntax, keys, globs and certificates are valid",
        config_path.display()
    ));
    for (i, f) in config.files.iter().enumerate() {
        let key = format!("inputs[{i}] (file, topic {})", f.topic);
        let p = match preview(&f.include, &f.exclude) {
            Err(e) => {
                r.error(format!("{key}: {e}"));
                continue;
            }
            Ok(p) => p,
        };
        r.line(format!(
            "{key}: {} readable file(s) match now",
            p.readable.len()
        ));
        for path in p.readable.iter().take(LIST_FILES) {
            r.line(format!("  {}", path.display()));
        }
        if p.readable.len() > LIST_FILES {
            r.line(format!("  … and {} more", p.readable.len() - LIST_FILES));
        }
        for pattern in &p.empty_patterns {
            r.warn(format!(
                "{key}: `{pattern}` matches no file now (files that appear later are read; check the path if you expected some)"
            ));
        }
        for (path, e) in &p.unreadable {
            r.warn(format!(
                "{key}: cannot read {}: {e}; the agent skips it until it changes{}",
                path.display(),
                permission_hint(e)
            ));
        }
        for (path, e) in &p.unlistable {
            r.warn(format!(
                "{key}: cannot list directory {}: {e}; the agent skips it{}",
                path.display(),
                permission_hint(e)
            ));
        }
    }
    for (i, s) in config.syslog.iter().enumerate() {
        let addrs: Vec<String> = s.listen.iter().map(ToString::to_string).collect();
        r.line(format!(
            "inputs[{}] (syslog, topic {}): listens on {}",
            config.files.len() + i,
            s.topic,
            addrs.join(", ")
        ));
    }
    for j in &config.journald {
        match crate::input::journald::check_journalctl(&j.journalctl) {
            Ok(()) => r.line(format!(
                "journald input (topic {}): reads {}",
                j.topic,
                j.key()
            )),
            Err(e) => r.error(format!("journald input (topic {}): {e}", j.topic)),
        }
    }
    match writable(&config.data_dir) {
        Ok(()) => r.line(format!("data_dir {} is writable", config.data_dir.display())),
        Err(e) => r.error(format!(
            "data_dir {}: {e} (the agent keeps checkpoints and its spool there: make it writable by the user it runs as)",
            config.data_dir.display()
        )),
    }
    let (key, addrs): (&str, Vec<&str>) = match &config.output {
        Output::Collectors { collectors, .. } => (
            "output.collectors",
            collectors.iter().map(|c| c.addr.as_str()).collect(),
        ),
        Output::Kafka(k) => (
            "output.kafka.brokers",
            k.brokers.iter().map(String::as_str).collect(),
        ),
    };
    for (i, addr) in addrs.iter().enumerate() {
        match addr.to_socket_addrs().map(|a| a.count()) {
            Ok(n) if n > 0 => {}
            Ok(_) => r.warn(format!(
                "{key}[{i}] `{addr}`: the name resolves to no address"
            )),
            Err(e) => r.warn(format!(
                "{key}[{i}] `{addr}`: cannot resolve: {e} (the agent retries; check the name if this lasts)"
            )),
        }
    }
    match &config.output {
        Output::Collectors { .. } => r.line(format!("ships to {} over TLS", addrs.join(", "))),
        Output::Kafka(k) => r.line(format!(
            "ships to the Kafka cluster {} ({}, topic {}, {:?} compression, acks all)",
            addrs.join(", "),
            match (k.settings.tls.is_some(), &k.settings.sasl) {
                (true, Some(s)) => format!("TLS, SASL {}", s.mechanism.name()),
                (true, None) => "TLS".to_owned(),
                (false, Some(s)) => format!("plaintext, SASL {}", s.mechanism.name()),
                (false, None) => "plaintext".to_owned(),
            },
            k.topic.for_topic("{{topic}}"),
            k.compression
        )),
    }
    r
}

/// Connect to every collector as the agent would (TLS handshake, HELLO/WELCOME) and
/// say what failed in terms of the config.
pub async fn connect(config: &AgentConfig, r: &mut Report) {
    let (collectors, tls, tls_files) = match &config.output {
        Output::Collectors {
            collectors,
            tls,
            tls_files,
        } => (collectors, tls, tls_files),
        Output::Kafka(k) => {
            for (i, b) in k.brokers.iter().enumerate() {
                match tributary_common::kafka::Conn::open(b, &k.settings).await {
                    Ok(_) => r.line(format!(
                        "output.kafka.brokers[{i}] {b}: connected{}",
                        if k.settings.sasl.is_some() {
                            " and authenticated"
                        } else {
                            ""
                        }
                    )),
                    Err(e) => r.error(format!(
                        "output.kafka.brokers[{i}]: {}",
                        tributary_common::error::report(&e)
                    )),
                }
            }
            return;
        }
    };
    for (i, c) in collectors.iter().enumerate() {
        match crate::ship::connect(c, &tls.current(), tls_files, &config.host).await {
            Ok((_reader, mut writer)) => {
                use futures_util::SinkExt;
                let _ =
                    tokio::time::timeout(std::time::Duration::from_secs(2), writer.close()).await;
                r.line(format!(
                    "output.collectors[{i}] {}: TLS handshake and HELLO accepted (server name {})",
                    c.addr, c.server_name
                ));
            }
            Err(e) => r.error(format!(
                "output.collectors[{i}] {}: {}",
                c.addr,
                tributary_common::error::report(&e)
            )),
        }
    }
}

/// The final verdict line.
pub fn finish(r: &mut Report) {
    let verdict = if r.ok {
        "configuration is valid"
    } else {
        "configuration has errors"
    };
    r.line(verdict);
}

fn permission_hint(e: &std::io::Error) -> &'static str {
    if e.kind() == std::io::ErrorKind::PermissionDenied {
        " (add the group that owns it to the agent's user, e.g. SupplementaryGroups= in the service, if you want it read)"
    } else {
        ""
    }
}

/// Create `dir` if needed and write, fsync and remove a probe file in it.
fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".check-config-{}", std::process::id()));
    let r = std::fs::write(&probe, b"probe").and_then(|()| std::fs::File::open(&probe)?.sync_all());
    let _ = std::fs::remove_file(&probe);
    r
}
