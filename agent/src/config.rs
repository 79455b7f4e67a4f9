//! The agent's configuration, in two stages: [`AgentConfigFile`] mirrors what the
//! user wrote in `agent.yaml` (unknown keys are errors); [`AgentConfigFile::resolve`]
//! turns it into an [`AgentConfig`] with compiled patterns, loaded TLS and checked limits.

use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tributary_common::codec::Compression;
use tributary_common::config::{self, ByteSize, ConfigError, HumanDuration, split_host};
use tributary_common::error::report;
use tributary_common::names::valid_topic_name;
use tributary_common::tls;

use crate::input::syslog::{Listen, TimeZone, Transport};

/// `agent.yaml` as written.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AgentConfigFile {
    /// Checkpoints and spool live here.
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    /// Host name put on every record; default: the machine's hostname.
    pub host: Option<String>,
    /// Log level when `RUST_LOG` is not set (`info`, `debug`, ...).
    pub log_level: Option<String>,
    pub inputs: Vec<InputFile>,
    pub output: OutputFile,
    pub metrics: Option<MetricsFile>,
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/tributary-agent")
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum InputType {
    File,
    Syslog,
    Journald,
}

/// `parse:` of a file input.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum ParseMode {
    Json,
}

/// `format:` of a file input.
#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum FormatName {
    Cri,
    Docker,
}

/// `multiline:` of a file input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MultilineFile {
    /// A line matching it starts a record; the others continue the current one.
    pub start_pattern: Option<String>,
    /// `java`, `python`, `go` or `ruby` instead of a pattern.
    pub preset: Option<String>,
    /// Send an unfinished record when no line came for this long; default 1000.
    pub timeout_ms: Option<HumanDuration>,
    /// Cut a record (marked partial) after this many lines; default 500.
    pub max_lines: Option<u32>,
    /// Cut a record before it grows past this; default `max_line_bytes`.
    pub max_bytes: Option<ByteSize>,
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum ReadFrom {
    #[default]
    Beginning,
    End,
}

/// One entry of `inputs:`. Keys that do not belong to the input's `type` are refused at resolve time.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct InputFile {
    #[serde(rename = "type")]
    pub kind: InputType,
    pub topic: String,
    #[serde(default)]
    pub include: Vec<String>,
    #[serde(default)]
    pub exclude: Vec<String>,
    /// File inputs only; default `beginning`.
    pub read_from: Option<ReadFrom>,
    /// Static labels added to every record.
    #[serde(default)]
    pub fields: serde_json::Map<String, serde_json::Value>,
    /// Longer lines are split into pieces marked partial.
    pub max_line_bytes: Option<ByteSize>,
    /// File inputs: close a file after this long without new data (reopened when
    /// it changes); default 1m. Keeps descriptors free when thousands of files match.
    pub close_inactive: Option<HumanDuration>,
    /// File inputs: read a symlink whose target the globs do not match; default
    /// false (a link is read only when its target also matches).
    pub follow_symlinks: Option<bool>,
    /// File inputs: `json` parses lines that are JSON objects into fields.
    pub parse: Option<ParseMode>,
    /// With `parse: json`: the key holding the message (default message, msg, log).
    pub message_key: Option<String>,
    /// With `parse: json`: the key holding the event time (default timestamp,
    /// time, ts, @timestamp).
    pub timestamp_key: Option<String>,
    /// File inputs: `cri` or `docker` decodes container runtime lines.
    pub format: Option<FormatName>,
    /// File inputs: group lines into records (stack traces).
    pub multiline: Option<MultilineFile>,
    /// Journald: a journal directory instead of the system's journal.
    pub directory: Option<PathBuf>,
    /// Journald: journal files instead of the system's journal.
    #[serde(default)]
    pub files: Vec<PathBuf>,
    /// Journald: only these units' entries.
    #[serde(default)]
    pub units: Vec<String>,
    /// Journald: `FIELD=value` matches.
    #[serde(default, rename = "match")]
    pub matches: Vec<String>,
    /// Journald: on the first start (no checkpoint), only entries from now on;
    /// default false (the whole journal).
    pub since_now: Option<bool>,
    /// Syslog listen addresses (`udp://…`, `tcp://…`, `tls://…`).
    #[serde(default)]
    pub listen: Vec<String>,
    /// Syslog: zone of RFC 3164 timestamps (`UTC`, `local`, `+02:00`); default UTC.
    pub timezone: Option<String>,
    /// Syslog: longer messages are truncated and marked; default 64KiB.
    pub max_message_bytes: Option<ByteSize>,
    /// Syslog: certificate and key for `tls://` listeners.
    pub tls: Option<SyslogTlsFile>,
    /// Syslog: most TCP/TLS connections at once (per input); default 1024.
    pub max_connections: Option<u32>,
    /// Syslog: TCP/TLS connections from one address at once; default 16.
    pub max_connections_per_ip: Option<u32>,
    /// Syslog: a TCP/TLS connection silent this long is closed; default 5m.
    pub idle_timeout: Option<HumanDuration>,
}

impl InputFile {
    /// The first syslog-only key that is set.
    fn syslog_key_set(&self) -> Option<&'static str> {
        [
            ("listen", !self.listen.is_empty()),
            ("timezone", self.timezone.is_some()),
            ("max_message_bytes", self.max_message_bytes.is_some()),
            ("tls", self.tls.is_some()),
            ("max_connections", self.max_connections.is_some()),
            (
                "max_connections_per_ip",
                self.max_connections_per_ip.is_some(),
            ),
            ("idle_timeout", self.idle_timeout.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
    }

    /// The first journald-only key that is set.
    fn journald_key_set(&self) -> Option<&'static str> {
        [
            ("directory", self.directory.is_some()),
            ("files", !self.files.is_empty()),
            ("units", !self.units.is_empty()),
            ("match", !self.matches.is_empty()),
            ("since_now", self.since_now.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
    }

    /// The first file-only key that is set.
    fn file_key_set(&self) -> Option<&'static str> {
        [
            ("include", !self.include.is_empty()),
            ("exclude", !self.exclude.is_empty()),
            ("read_from", self.read_from.is_some()),
            ("max_line_bytes", self.max_line_bytes.is_some()),
            ("close_inactive", self.close_inactive.is_some()),
            ("follow_symlinks", self.follow_symlinks.is_some()),
            ("parse", self.parse.is_some()),
            ("message_key", self.message_key.is_some()),
            ("timestamp_key", self.timestamp_key.is_some()),
            ("format", self.format.is_some()),
            ("multiline", self.multiline.is_some()),
        ]
        .into_iter()
        .find_map(|(k, set)| set.then_some(k))
    }
}

/// `tls:` of a syslog input.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SyslogTlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct OutputFile {
    /// `host:port` of collectors; several = failover in order.
    #[serde(default)]
    pub collectors: Vec<String>,
    pub tls: Option<TlsFile>,
    /// Instead of `collectors`: ship to a Kafka cluster.
    pub kafka: Option<KafkaOutputFile>,
    pub compression: Option<Compression>,
    #[serde(default)]
    pub batch: BatchFile,
    #[serde(default)]
    pub spool: SpoolFile,
}

/// `output.kafka`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaOutputFile {
    pub brokers: Vec<String>,
    /// The Kafka topic: a name, or a pattern where `{{topic}}` is the input's topic.
    #[serde(default = "default_kafka_topic")]
    pub topic: String,
    #[serde(default)]
    pub compression: KafkaCompression,
    /// Only `all` (every in-sync replica) keeps the delivery promise.
    #[serde(default = "default_acks")]
    pub acks: String,
    /// The largest record batch the brokers accept (their `message.max.bytes`).
    #[serde(default = "default_kafka_message_bytes")]
    pub max_message_bytes: ByteSize,
    pub tls: Option<tributary_common::kafka::settings::KafkaTlsFile>,
    pub sasl: Option<tributary_common::kafka::settings::SaslFile>,
}

fn default_kafka_topic() -> String {
    "{{topic}}".into()
}
fn default_acks() -> String {
    "all".into()
}
fn default_kafka_message_bytes() -> ByteSize {
    ByteSize(1_000_000)
}

/// `output.kafka.compression`: Kafka's own batch codecs that need no C library.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum KafkaCompression {
    #[default]
    Lz4,
    Gzip,
    None,
}

impl KafkaCompression {
    pub fn codec(self) -> kafka_protocol::records::Compression {
        match self {
            KafkaCompression::Lz4 => kafka_protocol::records::Compression::Lz4,
            KafkaCompression::Gzip => kafka_protocol::records::Compression::Gzip,
            KafkaCompression::None => kafka_protocol::records::Compression::None,
        }
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct TlsFile {
    /// CA that the collector's certificate must chain to.
    pub ca: PathBuf,
    /// Optional client certificate and key (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
    /// Name to verify in the collector's certificate; default: host part of the address.
    pub server_name: Option<String>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct BatchFile {
    /// Default: 1 MiB to collectors, 512 KiB to Kafka (see [`KAFKA_BATCH_BYTES`]).
    pub max_bytes: Option<ByteSize>,
    #[serde(default = "default_batch_records")]
    pub max_records: u32,
    #[serde(default = "default_linger")]
    pub linger_ms: HumanDuration,
}

impl Default for BatchFile {
    fn default() -> Self {
        BatchFile {
            max_bytes: None,
            max_records: default_batch_records(),
            linger_ms: default_linger(),
        }
    }
}

/// Default `output.batch.max_bytes` to collectors.
const COLLECTOR_BATCH_BYTES: usize = 1 << 20;
/// Default `output.batch.max_bytes` to Kafka: a batch is held twice there (the
/// one delivered and the next, encoded ahead), and at 512 KiB the agent stays
/// at about 16 MB RSS at full speed instead of 25-27 MB, at the same throughput.
const KAFKA_BATCH_BYTES: usize = 512 << 10;
fn default_batch_records() -> u32 {
    10_000
}
fn default_linger() -> HumanDuration {
    HumanDuration(Duration::from_millis(200))
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SpoolFile {
    #[serde(default = "default_spool")]
    pub max_bytes: ByteSize,
}

impl Default for SpoolFile {
    fn default() -> Self {
        SpoolFile {
            max_bytes: default_spool(),
        }
    }
}

fn default_spool() -> ByteSize {
    ByteSize(1 << 30)
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct MetricsFile {
    pub listen: String,
}

/// Largest batch the agent builds; the collector accepts up to 32 MiB uncompressed.
pub const MAX_BATCH_BYTES: u64 = 16 << 20;

/// A resolved file input.
#[derive(Debug, Clone)]
pub struct FileInputConfig {
    pub topic: Arc<str>,
    pub include: Vec<String>,
    pub exclude: Vec<String>,
    pub read_from: ReadFrom,
    pub fields_json: Arc<[u8]>,
    pub max_line_bytes: usize,
    pub close_inactive: Duration,
    pub follow_symlinks: bool,
    /// `parse: json` and its keys.
    pub json: Option<crate::input::json::JsonParse>,
    /// `format: cri | docker`.
    pub format: Option<crate::input::container::Format>,
    /// `multiline`.
    pub multiline: Option<crate::input::multiline::Multiline>,
}

/// A resolved syslog input.
#[derive(Debug, Clone)]
pub struct SyslogInputConfig {
    pub topic: Arc<str>,
    pub listen: Vec<Listen>,
    pub fields_json: Arc<[u8]>,
    pub timezone: TimeZone,
    pub max_message_bytes: usize,
    /// Server configuration for `tls://` listeners, followed as its files change.
    pub tls: Option<Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>>,
    pub max_connections: usize,
    pub max_connections_per_ip: usize,
    pub idle_timeout: Duration,
}

/// A resolved collector address.
#[derive(Debug, Clone)]
pub struct CollectorAddr {
    pub addr: String,
    pub server_name: String,
}

/// The Kafka topic records of an input's topic go to.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct KafkaTopic {
    /// The pattern, `{{topic}}` standing for the input's topic.
    pattern: String,
}

impl KafkaTopic {
    pub fn for_topic(&self, topic: &str) -> String {
        self.pattern.replace("{{topic}}", topic)
    }
}

/// The resolved `output.kafka`.
#[derive(Clone, Debug)]
pub struct KafkaOutput {
    pub brokers: Vec<String>,
    pub topic: KafkaTopic,
    pub compression: KafkaCompression,
    pub max_message_bytes: usize,
    pub settings: tributary_common::kafka::ConnSettings,
}

/// Where batches go.
#[derive(Clone, Debug)]
pub enum Output {
    /// Tributary collectors over TLS (`output.collectors`).
    Collectors {
        collectors: Vec<CollectorAddr>,
        /// Followed as its files change: a renewed certificate is used by the next
        /// connection, without a restart.
        tls: Arc<tributary_common::reload::Reloading<rustls::ClientConfig>>,
        /// The files `tls` was built from, for messages that name them.
        tls_files: tls::ClientFiles,
    },
    /// A Kafka cluster (`output.kafka`).
    Kafka(KafkaOutput),
}

/// The agent's configuration, ready to run.
#[derive(Clone, Debug)]
pub struct AgentConfig {
    pub data_dir: PathBuf,
    pub host: Arc<str>,
    pub log_level: Option<String>,
    pub files: Vec<FileInputConfig>,
    pub syslog: Vec<SyslogInputConfig>,
    pub journald: Vec<crate::input::journald::JournaldConfig>,
    pub output: Output,
    /// How batches are compressed (`none` for Kafka: the producer compresses).
    pub compression: Compression,
    pub batch_max_bytes: usize,
    pub batch_max_records: u32,
    pub linger: Duration,
    pub spool_max_bytes: u64,
    pub metrics_listen: Option<String>,
    /// Files no input reads, whatever its globs: the config itself, TLS keys and
    /// certificates (with `data_dir`, see `input::file::Guard`).
    pub protected: Vec<PathBuf>,
}

impl AgentConfig {
    /// Load and resolve `path`.
    pub fn load(path: &Path) -> Result<AgentConfig, ConfigError> {
        let file: AgentConfigFile = config::load_yaml(path)?;
        file.resolve(&path.display().to_string())
    }
}

fn value_err(path: &str, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        path: path.to_owned(),
        key: key.into(),
        message: message.into(),
    }
}

impl AgentConfigFile {
    /// Check every value and build what the agent runs with. `path` names the file in errors.
    pub fn resolve(self, path: &str) -> Result<AgentConfig, ConfigError> {
        let host: Arc<str> = match self.host {
            Some(h) if !h.trim().is_empty() => h.trim().into(),
            Some(_) => return Err(value_err(path, "host", "must not be empty")),
            None => hostname().into(),
        };
        if self.inputs.is_empty() {
            return Err(value_err(path, "inputs", "at least one input is needed"));
        }
        let mut files = Vec::new();
        let mut syslog = Vec::new();
        let mut journald = Vec::new();
        // The agent's own files, which no input reads whatever its globs match.
        let mut protected = vec![PathBuf::from(path)];
        for input in &self.inputs {
            if let Some(t) = &input.tls {
                protected.extend([t.cert.clone(), t.key.clone()]);
            }
        }
        for (i, input) in self.inputs.into_iter().enumerate() {
            let key = |k: &str| format!("inputs[{i}].{k}");
            if !valid_topic_name(&input.topic) {
                return Err(value_err(
                    path,
                    key("topic"),
                    format!(
                        "`{}` is not a valid topic name ([A-Za-z0-9._-]{{1,249}})",
                        input.topic
                    ),
                ));
            }
            match input.kind {
                InputType::File => {
                    if let Some(k) = input.journald_key_set() {
                        return Err(value_err(
                            path,
                            key(k),
                            "only journald inputs have this key",
                        ));
                    }
                    if input.include.is_empty() {
                        return Err(value_err(
                            path,
                            key("include"),
                            "a file input needs at least one glob",
                        ));
                    }
                    if let Some(k) = input.syslog_key_set() {
                        return Err(value_err(path, key(k), "only syslog inputs have this key"));
                    }
                    for (j, pattern) in input.include.iter().chain(&input.exclude).enumerate() {
                        if let Err(e) = glob::Pattern::new(pattern) {
                            let which = if j < input.include.len() {
                                format!("include[{j}]")
                            } else {
                                format!("exclude[{}]", j - input.include.len())
                            };
                            return Err(value_err(
                                path,
                                key(&which),
                                format!("bad glob `{pattern}`: {e}"),
                            ));
                        }
                    }
                    let max_line_bytes = input.max_line_bytes.map(|b| b.0).unwrap_or(1 << 20);
                    if !(16..=(8 << 20)).contains(&max_line_bytes) {
                        return Err(value_err(
                            path,
                            key("max_line_bytes"),
                            "must be between 16 bytes and 8MiB",
                        ));
                    }
                    let fields_json = fields_json(&input.fields, path, key("fields"))?;
                    let json = match input.parse {
                        Some(ParseMode::Json) => Some(crate::input::json::JsonParse {
                            message_key: input.message_key.clone(),
                            timestamp_key: input.timestamp_key.clone(),
                        }),
                        None if input.message_key.is_some() || input.timestamp_key.is_some() => {
                            return Err(value_err(
                                path,
                                key("parse"),
                                "message_key and timestamp_key need `parse: json`",
                            ));
                        }
                        None => None,
                    };
                    let multiline = match &input.multiline {
                        Some(m) => Some(resolve_multiline(
                            path,
                            &key("multiline"),
                            m,
                            max_line_bytes as usize,
                        )?),
                        None => None,
                    };
                    let format = input.format.map(|f| match f {
                        FormatName::Cri => crate::input::container::Format::Cri,
                        FormatName::Docker => crate::input::container::Format::Docker,
                    });
                    files.push(FileInputConfig {
                        json,
                        format,
                        multiline,
                        topic: input.topic.into(),
                        include: input.include,
                        exclude: input.exclude,
                        read_from: input.read_from.unwrap_or_default(),
                        fields_json,
                        max_line_bytes: max_line_bytes as usize,
                        close_inactive: input
                            .close_inactive
                            .map_or(Duration::from_secs(60), |d| d.0),
                        follow_symlinks: input.follow_symlinks.unwrap_or(false),
                    });
                }
                InputType::Journald => {
                    if let Some(k) = input.file_key_set().or(input.syslog_key_set()) {
                        return Err(value_err(
                            path,
                            key(k),
                            "journald inputs do not have this key",
                        ));
                    }
                    if input.directory.is_some() && !input.files.is_empty() {
                        return Err(value_err(
                            path,
                            key("files"),
                            "give either directory or files, not both",
                        ));
                    }
                    for (j, m) in input.matches.iter().enumerate() {
                        let ok = m == "+"
                            || m.split_once('=').is_some_and(|(f, _)| {
                                !f.is_empty()
                                    && f.bytes().all(|b| {
                                        b.is_ascii_uppercase() || b.is_ascii_digit() || b == b'_'
                                    })
                            });
                        if !ok {
                            return Err(value_err(
                                path,
                                key(&format!("match[{j}]")),
                                format!("`{m}` is not FIELD=value (FIELD in A-Z, 0-9, _)"),
                            ));
                        }
                    }
                    let fields_json = fields_json(&input.fields, path, key("fields"))?;
                    journald.push(crate::input::journald::JournaldConfig {
                        topic: input.topic.into(),
                        fields_json,
                        directory: input.directory,
                        files: input.files,
                        units: input.units,
                        matches: input.matches,
                        since_now: input.since_now.unwrap_or(false),
                        max_message_bytes: 1 << 20,
                        journalctl: PathBuf::from("journalctl"),
                    });
                }
                InputType::Syslog => {
                    if let Some(k) = input.file_key_set().or(input.journald_key_set()) {
                        return Err(value_err(
                            path,
                            key(k),
                            "syslog inputs do not have this key",
                        ));
                    }
                    syslog.push(resolve_syslog(path, &format!("inputs[{i}]"), input)?);
                }
            }
        }
        let out = self.output;
        let (output, compression) = match (&out.kafka, out.collectors.is_empty()) {
            (Some(_), false) => {
                return Err(value_err(
                    path,
                    "output",
                    "`collectors` and `kafka` are alternatives: ship to collectors or to a Kafka cluster, not both",
                ));
            }
            (None, true) => {
                return Err(value_err(
                    path,
                    "output.collectors",
                    "at least one collector address is needed (or `output.kafka` to ship to a Kafka cluster)",
                ));
            }
            (Some(k), true) => {
                for (key, set) in [
                    ("tls", out.tls.is_some()),
                    ("compression", out.compression.is_some()),
                ] {
                    if set {
                        return Err(value_err(
                            path,
                            format!("output.{key}"),
                            format!(
                                "applies to collectors; with `output.kafka` write `output.kafka.{key}`"
                            ),
                        ));
                    }
                }
                let (kafka, kafka_files) = resolve_kafka(path, k, &host)?;
                protected.extend(kafka_files);
                // The producer compresses each Kafka batch; the agent's batches stay plain.
                (Output::Kafka(kafka), Compression::None)
            }
            (None, false) => {
                let Some(out_tls) = &out.tls else {
                    return Err(value_err(
                        path,
                        "output.tls",
                        "missing: the agent speaks TLS to collectors; give at least `ca`",
                    ));
                };
                let collectors = resolve_collectors(path, &out.collectors, out_tls)?;
                let client_cert = match (&out_tls.cert, &out_tls.key) {
                    (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                    (None, None) => None,
                    _ => return Err(value_err(path, "output.tls", "cert and key go together")),
                };
                let tls = tls::reloading_client("output.tls", &out_tls.ca, client_cert)
                    .map_err(|e| value_err(path, "output.tls", report(&e)))?;
                protected.push(out_tls.ca.clone());
                protected.extend(out_tls.cert.iter().cloned());
                protected.extend(out_tls.key.iter().cloned());
                (
                    Output::Collectors {
                        collectors,
                        tls,
                        tls_files: tls::ClientFiles {
                            ca: out_tls.ca.clone(),
                            cert: out_tls.cert.clone(),
                        },
                    },
                    out.compression.unwrap_or_default(),
                )
            }
        };
        let batch = out.batch;
        let batch_max_bytes = batch.max_bytes.map_or(
            match output {
                Output::Kafka(_) => KAFKA_BATCH_BYTES,
                Output::Collectors { .. } => COLLECTOR_BATCH_BYTES,
            },
            |b| usize::try_from(b.0).unwrap_or(usize::MAX),
        );
        if !(1024..=MAX_BATCH_BYTES as usize).contains(&batch_max_bytes) {
            return Err(value_err(
                path,
                "output.batch.max_bytes",
                "must be between 1KiB and 16MiB",
            ));
        }
        if batch.max_records == 0 {
            return Err(value_err(
                path,
                "output.batch.max_records",
                "must be at least 1",
            ));
        }
        Ok(AgentConfig {
            protected,
            data_dir: self.data_dir,
            host,
            log_level: self.log_level,
            files,
            syslog,
            journald,
            output,
            compression,
            batch_max_bytes,
            batch_max_records: batch.max_records,
            linger: batch.linger_ms.0,
            spool_max_bytes: out.spool.max_bytes.0,
            metrics_listen: self.metrics.map(|m| m.listen),
        })
    }
}

/// Check `output.collectors`.
fn resolve_collectors(
    path: &str,
    addrs: &[String],
    tls: &TlsFile,
) -> Result<Vec<CollectorAddr>, ConfigError> {
    let mut collectors = Vec::new();
    for (i, addr) in addrs.iter().enumerate() {
        let key = format!("output.collectors[{i}]");
        if let Some((scheme, rest)) = addr.split_once("://") {
            return Err(value_err(
                path,
                key,
                format!(
                    "`{addr}` has a scheme: write host:port (`{}`); the agent always speaks TLS to the collector's ingest port, not {scheme}",
                    rest.trim_end_matches('/')
                ),
            ));
        }
        let host = split_host(addr).ok_or_else(|| {
            value_err(
                path,
                key.clone(),
                format!("`{addr}` is not host:port (for example collector.example.com:7400)"),
            )
        })?;
        collectors.push(CollectorAddr {
            addr: addr.clone(),
            server_name: tls.server_name.clone().unwrap_or_else(|| host.to_owned()),
        });
    }
    Ok(collectors)
}

/// Check `output.kafka` and load its TLS files and password.
fn resolve_kafka(
    path: &str,
    k: &KafkaOutputFile,
    host: &str,
) -> Result<(KafkaOutput, Vec<PathBuf>), ConfigError> {
    if k.acks != "all" && k.acks != "-1" {
        return Err(value_err(
            path,
            "output.kafka.acks",
            format!(
                "`{}` is not offered: only `all` (every in-sync replica) keeps the promise that a checkpoint moves only after the cluster holds the lines",
                k.acks
            ),
        ));
    }
    let sample = k.topic.replace("{{topic}}", "app");
    if !valid_topic_name(&sample) || sample.contains(['{', '}']) {
        return Err(value_err(
            path,
            "output.kafka.topic",
            format!(
                "`{}` is not a Kafka topic name ([A-Za-z0-9._-]{{1,249}}) or a pattern with `{{{{topic}}}}` standing for the input's topic",
                k.topic
            ),
        ));
    }
    if k.max_message_bytes.0 < 16 << 10 || k.max_message_bytes.0 > 64 << 20 {
        return Err(value_err(
            path,
            "output.kafka.max_message_bytes",
            "must be between 16KiB and 64MiB (the brokers' message.max.bytes)",
        ));
    }
    let (settings, files) = tributary_common::kafka::settings::resolve(
        "output.kafka",
        &k.brokers,
        k.tls.as_ref(),
        k.sasl.as_ref(),
        &format!("tributary-agent/{host}"),
    )
    .map_err(|e| value_err(path, e.key, e.message))?;
    Ok((
        KafkaOutput {
            brokers: k.brokers.clone(),
            topic: KafkaTopic {
                pattern: k.topic.clone(),
            },
            compression: k.compression,
            max_message_bytes: k.max_message_bytes.0 as usize,
            settings,
        },
        files,
    ))
}

/// Check and build one `type: syslog` input; `prefix` is `inputs[i]` for errors.
fn resolve_syslog(
    path: &str,
    prefix: &str,
    input: InputFile,
) -> Result<SyslogInputConfig, ConfigError> {
    let key = |k: &str| format!("{prefix}.{k}");
    if input.listen.is_empty() {
        return Err(value_err(
            path,
            key("listen"),
            "a syslog input needs at least one address (udp://, tcp:// or tls://IP:PORT)",
        ));
    }
    let mut listen: Vec<Listen> = Vec::new();
    for (j, l) in input.listen.iter().enumerate() {
        let l = Listen::parse(l).map_err(|e| value_err(path, key(&format!("listen[{j}]")), e))?;
        if listen.contains(&l) {
            return Err(value_err(
                path,
                key(&format!("listen[{j}]")),
                format!("{l} is listed twice"),
            ));
        }
        listen.push(l);
    }
    let timezone = match &input.timezone {
        Some(tz) => TimeZone::parse(tz).map_err(|e| value_err(path, key("timezone"), e))?,
        None => TimeZone::Utc,
    };
    let max_message_bytes = input.max_message_bytes.map_or(64 << 10, |b| b.0);
    if !(480..=(4 << 20)).contains(&max_message_bytes) {
        return Err(value_err(
            path,
            key("max_message_bytes"),
            "must be between 480 bytes and 4MiB",
        ));
    }
    let wants_tls = listen.iter().any(|l| l.transport == Transport::Tls);
    let tls = match (&input.tls, wants_tls) {
        (Some(t), true) => Some(
            tls::reloading_server(
                &key("tls"),
                &tls::ServerFiles {
                    cert: t.cert.clone(),
                    key: t.key.clone(),
                    client_ca: None,
                    client_crl: None,
                },
            )
            .map_err(|e| value_err(path, key("tls"), report(&e)))?,
        ),
        (None, false) => None,
        (None, true) => {
            return Err(value_err(
                path,
                key("tls"),
                "a tls:// address needs `tls: {cert, key}`",
            ));
        }
        (Some(_), false) => {
            return Err(value_err(
                path,
                key("tls"),
                "only used by tls:// addresses, and none is listed",
            ));
        }
    };
    let max_connections = input.max_connections.unwrap_or(1024);
    if max_connections == 0 {
        return Err(value_err(
            path,
            key("max_connections"),
            "must be at least 1",
        ));
    }
    let max_connections_per_ip = input.max_connections_per_ip.unwrap_or(16);
    if max_connections_per_ip == 0 {
        return Err(value_err(
            path,
            key("max_connections_per_ip"),
            "must be at least 1",
        ));
    }
    let idle_timeout = input.idle_timeout.map_or(Duration::from_secs(60), |d| d.0);
    if idle_timeout < Duration::from_millis(100) {
        return Err(value_err(
            path,
            key("idle_timeout"),
            "must be at least 100ms",
        ));
    }
    let fields_json = fields_json(&input.fields, path, key("fields"))?;
    Ok(SyslogInputConfig {
        topic: input.topic.into(),
        listen,
        fields_json,
        timezone,
        max_message_bytes: max_message_bytes as usize,
        tls,
        max_connections: max_connections as usize,
        max_connections_per_ip: max_connections_per_ip as usize,
        idle_timeout,
    })
}

/// An input's static `fields` as the JSON object every record carries (empty when none).
/// Check `multiline:` of an input (`at` names it in errors).
fn resolve_multiline(
    path: &str,
    at: &str,
    m: &MultilineFile,
    max_line_bytes: usize,
) -> Result<crate::input::multiline::Multiline, ConfigError> {
    use crate::input::multiline::{Multiline, Rule};
    let key = |k: &str| format!("{at}.{k}");
    let rule = match (&m.start_pattern, &m.preset) {
        (Some(_), Some(_)) => {
            return Err(value_err(
                path,
                key("preset"),
                "give either start_pattern or preset, not both",
            ));
        }
        (None, None) => {
            return Err(value_err(
                path,
                at,
                "needs start_pattern (a regex matching a record's first line) or preset (java, python, go, ruby)",
            ));
        }
        (Some(p), None) => {
            let re = regex::bytes::RegexBuilder::new(p)
                .size_limit(1 << 20)
                .build()
                .map_err(|e| {
                    value_err(
                        path,
                        key("start_pattern"),
                        format!(
                            "bad regex `{p}`: {}",
                            e.to_string().lines().last().unwrap_or("")
                        ),
                    )
                })?;
            Rule::Pattern(re)
        }
        (None, Some(name)) => Rule::preset(name).ok_or_else(|| {
            value_err(
                path,
                key("preset"),
                format!("unknown preset `{name}`: use java, python, go or ruby"),
            )
        })?,
    };
    let timeout = m.timeout_ms.map_or(Duration::from_millis(1000), |d| d.0);
    if !(Duration::from_millis(10)..=Duration::from_secs(3600)).contains(&timeout) {
        return Err(value_err(
            path,
            key("timeout_ms"),
            "must be between 10ms and 1h",
        ));
    }
    let max_lines = m.max_lines.unwrap_or(500);
    if !(1..=100_000).contains(&max_lines) {
        return Err(value_err(
            path,
            key("max_lines"),
            "must be between 1 and 100000",
        ));
    }
    let max_bytes = m.max_bytes.map_or(max_line_bytes as u64, |b| b.0);
    if !(16..=(64 << 20)).contains(&max_bytes) {
        return Err(value_err(
            path,
            key("max_bytes"),
            "must be between 16 bytes and 64MiB",
        ));
    }
    Ok(Multiline {
        rule,
        timeout,
        max_lines: max_lines as usize,
        max_bytes: max_bytes as usize,
    })
}

fn fields_json(
    fields: &serde_json::Map<String, serde_json::Value>,
    path: &str,
    key: String,
) -> Result<Arc<[u8]>, ConfigError> {
    if fields.is_empty() {
        return Ok(Arc::from(&[][..]));
    }
    serde_json::to_vec(fields)
        .map(Into::into)
        .map_err(|e| value_err(path, key, e.to_string()))
}

/// Host part of `host:port` or `[v6]:port`.
#[cfg(test)]
mod tests {
    use super::*;

    fn parse(text: &str) -> Result<AgentConfig, ConfigError> {
        let f: AgentConfigFile = config::parse_yaml("agent.yaml", text)?;
        f.resolve("agent.yaml")
    }

    #[test]
    fn kafka_output() {
        let base = "host: h1\ninputs:\n  - type: file\n    topic: app\n    include: [\"/tmp/*.log\"]\noutput:\n  kafka:\n    brokers: [\"k1:9092\", \"[::1]:9093\"]\n";
        let c = parse(base).unwrap();
        let Output::Kafka(k) = &c.output else {
            panic!("{:?}", c.output)
        };
        assert_eq!(k.topic.for_topic("app"), "app");
        assert_eq!(k.compression, KafkaCompression::Lz4);
        assert_eq!(k.max_message_bytes, 1_000_000);
        assert_eq!(k.settings.client_id, "tributary-agent/h1");
        assert_eq!(c.compression, Compression::None, "the producer compresses");

        let c = parse(&format!(
            "{base}    topic: \"logs-{{{{topic}}}}\"\n    compression: gzip\n"
        ))
        .unwrap();
        let Output::Kafka(k) = &c.output else {
            panic!()
        };
        assert_eq!(k.topic.for_topic("app"), "logs-app");
        assert_eq!(k.compression, KafkaCompression::Gzip);

        for (extra, key, says) in [
            ("    acks: 1\n", "output.kafka.acks", "only `all`"),
            (
                "    topic: \"a/{{topic}}\"\n",
                "output.kafka.topic",
                "a/{{topic}}",
            ),
            (
                "    topic: \"{{host}}\"\n",
                "output.kafka.topic",
                "{{host}}",
            ),
            ("    compression: zstd\n", "compression", "zstd"),
            ("  collectors: [\"c:7400\"]\n", "output", "alternatives"),
            (
                "  compression: lz4\n",
                "output.compression",
                "output.kafka.compression",
            ),
            ("  tls: {ca: /x}\n", "output.tls", "output.kafka.tls"),
            (
                "    sasl: {mechanism: scram-sha-512, username: u, password_file: /nonexistent/pw}\n",
                "output.kafka.sasl.password_file",
                "/nonexistent/pw",
            ),
            (
                "    tls: {ca: /nonexistent/kafka-ca.pem}\n",
                "output.kafka.tls",
                "/nonexistent/kafka-ca.pem",
            ),
            (
                "    max_message_bytes: 1KiB\n",
                "output.kafka.max_message_bytes",
                "16KiB",
            ),
        ] {
            let err = parse(&format!("{base}{extra}")).unwrap_err().to_string();
            assert!(err.contains(key) && err.contains(says), "{extra}: {err}");
        }
        let err = parse(&base.replace("\"k1:9092\", ", "\"kafka://k1:9092\", "))
            .unwrap_err()
            .to_string();
        assert!(err.contains("output.kafka.brokers[0]"), "{err}");
        let err = parse(
            "inputs:\n  - type: file\n    topic: app\n    include: [\"/tmp/*.log\"]\noutput: {}\n",
        )
        .unwrap_err()
        .to_string();
        assert!(err.contains("output.kafka"), "{err}");
    }

    #[test]
    fn errors_name_the_key() {
        let base = "inputs:\n  - type: file\n    topic: app\n    include: [\"/tmp/*.log\"]\noutput:\n  collectors: [\"127.0.0.1:7400\"]\n  tls: {ca: /nonexistent/ca.pem}\n";
        let err = parse(base).unwrap_err().to_string();
        assert!(
            err.contains("output.tls") && err.contains("/nonexistent/ca.pem"),
            "{err}"
        );

        let err = parse(&base.replace("topic: app", "topic: a/b"))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inputs[0].topic"), "{err}");

        let err = parse(&base.replace("    include", "    inclde"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("agent.yaml:4:"), "{err}");
        assert!(err.contains("unknown field `inclde`"), "{err}");

        let err = parse(&base.replace("\"/tmp/*.log\"", "\"/tmp/[.log\""))
            .unwrap_err()
            .to_string();
        assert!(err.contains("inputs[0].include[0]"), "{err}");

        let err = parse(&base.replace("127.0.0.1:7400", "https://collector:7400"))
            .unwrap_err()
            .to_string();
        assert!(
            err.contains("output.collectors[0]")
                && err.contains("write host:port (`collector:7400`)"),
            "{err}"
        );

        let err = parse(&base.replace("type: file", "type: carrier-pigeon"))
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("agent.yaml:2:"), "{err}");
        assert!(err.contains("inputs[0].type"), "{err}");

        let with = |extra: &str| {
            parse(&base.replace("    include:", &format!("    {extra}\n    include:")))
                .unwrap_err()
                .to_string()
        };
        let err = with("multiline: {preset: cobol}");
        assert!(
            err.contains("inputs[0].multiline.preset") && err.contains("java, python"),
            "{err}"
        );
        let err = with("multiline: {preset: java, start_pattern: x}");
        assert!(err.contains("not both"), "{err}");
        let err = with("multiline: {timeout_ms: 10}");
        assert!(err.contains("needs start_pattern"), "{err}");
        let err = with("multiline: {start_pattern: '(unclosed'}");
        assert!(
            err.contains("multiline.start_pattern") && err.contains("bad regex"),
            "{err}"
        );
        let err = with("multiline: {preset: go, max_lines: 0}");
        assert!(err.contains("multiline.max_lines"), "{err}");
        let err = with("format: syslog");
        assert!(err.contains("format") && err.contains("cri"), "{err}");
        // Valid ones get as far as the output's CA.
        let err = with("multiline: {preset: python}\n    format: cri");
        assert!(err.contains("/nonexistent/ca.pem"), "{err}");
    }
}

#[cfg(test)]
mod example_tests {
    use super::*;

    #[test]
    fn example_config_parses() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/agent.yaml");
        let f: AgentConfigFile = config::load_yaml(Path::new(path)).unwrap();
        assert_eq!(f.inputs.len(), 3);
        assert_eq!(f.inputs[1].kind, InputType::Journald);
        assert_eq!(f.inputs[1].units, ["nginx.service", "ssh.service"]);
        assert_eq!(f.output.compression, Some(Compression::Lz4));
        assert_eq!(f.output.batch.max_bytes, Some(ByteSize(1 << 20)));
    }
}

/// This machine's host name: what `host:` defaults to.
pub fn hostname() -> String {
    gethostname::gethostname().to_string_lossy().into_owned()
}
