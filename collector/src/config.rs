//! The collector's configuration: [`CollectorConfigFile`] mirrors `collector.yaml`
//! (unknown keys are errors); [`CollectorConfigFile::resolve`] loads TLS and checks values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
use tributary_common::codec::Compression;
use tributary_common::config::{self, ByteSize, ConfigError, HumanDuration};
use tributary_common::tls;

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct CollectorConfigFile {
    #[serde(default = "default_data_dir")]
    pub data_dir: PathBuf,
    pub log_level: Option<String>,
    pub ingest: IngestFile,
    #[serde(default)]
    pub api: ApiFile,
    /// `default` applies to topics without their own entry; `max_topics` and
    /// `auto_create` are settings; other keys are topic names.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicEntry>,
    #[serde(default)]
    pub durability: DurabilityFile,
    /// How the collector enforces the topics' `retention` settings.
    #[serde(default)]
    pub retention: RetentionRunFile,
    /// The Kafka-compatible listener; absent = off.
    pub kafka: Option<KafkaFile>,
    /// Kafka topics this collector consumes into its own topics.
    #[serde(default)]
    pub sources: Vec<crate::source::SourceFile>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaFile {
    /// Default `127.0.0.1:9092`.
    #[serde(default = "default_kafka_listen")]
    pub listen: String,
    /// `host:port` that Metadata and FindCoordinator tell clients to connect to;
    /// default: the listen address (`127.0.0.1` when it listens on every interface).
    pub advertised: Option<String>,
    /// TLS for Kafka clients (`security.protocol=SSL`); absent = plaintext.
    pub tls: Option<IngestTlsFile>,
    /// Codec of the batches Fetch answers carry: `lz4` (default), `gzip` or `none`.
    #[serde(default)]
    pub compression: crate::kafka::FetchCompression,
    /// Kafka connections served at once; default 512.
    pub max_connections: Option<usize>,
    /// A connection without a request for this long is closed; default 10m.
    pub idle_timeout: Option<HumanDuration>,
    /// Largest request accepted; default 8MiB.
    pub max_request_bytes: Option<ByteSize>,
    /// Most record bytes in one Fetch answer, whatever the client asks; default 8MiB.
    pub max_fetch_bytes: Option<ByteSize>,
}

fn default_kafka_listen() -> String {
    "127.0.0.1:9092".into()
}

fn default_data_dir() -> PathBuf {
    PathBuf::from("/var/lib/tributary")
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestFile {
    #[serde(default = "default_ingest_listen")]
    pub listen: String,
    pub tls: IngestTlsFile,
    /// Concurrent agent connections; more wait in the accept queue.
    #[serde(default = "default_max_connections")]
    pub max_connections: usize,
    /// An agent connection with no frame for this long is closed (agents reconnect
    /// when they have something to send); default 5m.
    pub idle_timeout: Option<HumanDuration>,
    /// Bytes of frames and decompressed batches in memory across all connections;
    /// a connection waits for room before it reads a frame. Default 256MiB.
    pub max_inflight_bytes: Option<ByteSize>,
    /// Connections from one address at once; default 64.
    pub max_connections_per_ip: Option<usize>,
    /// A record stamped further than this from the collector's clock gets its
    /// arrival time (the original is kept in `fields.original_timestamp_ms`);
    /// default 365d.
    pub max_clock_skew: Option<HumanDuration>,
    /// `enforce` (default with `tls.client_ca`): records' host must be one of the
    /// agent certificate's names; `tag`: any host, the identity is recorded.
    pub identity: Option<crate::ingest::identity::IdentityMode>,
}

fn default_ingest_listen() -> String {
    "0.0.0.0:7400".into()
}
fn default_max_connections() -> usize {
    1024
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct IngestTlsFile {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// When set, clients must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
    /// PEM CRLs: client certificates they list are refused (needs `client_ca`).
    pub client_crl: Option<PathBuf>,
}

impl IngestTlsFile {
    /// The listener's TLS, followed as its files change; `key` names the section.
    pub fn resolve(
        &self,
        path: &str,
        key: &str,
    ) -> Result<Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>, ConfigError> {
        if self.client_crl.is_some() && self.client_ca.is_none() {
            return Err(value_err(
                path,
                format!("{key}.client_crl"),
                "needs client_ca: revocation applies to client certificates",
            ));
        }
        let files = tls::ServerFiles {
            cert: self.cert.clone(),
            key: self.key.clone(),
            client_ca: self.client_ca.clone(),
            client_crl: self.client_crl.clone(),
        };
        tls::reloading_server(key, &files)
            .map_err(|e| value_err(path, key, tributary_common::error::report(&e)))
    }
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    #[serde(default = "default_api_listen")]
    pub listen: String,
    /// HTTP connections served at once; more wait in the accept queue.
    pub max_connections: Option<usize>,
    /// A request's headers must arrive within this, and an idle keep-alive
    /// connection is closed after it; default 10s.
    pub header_timeout: Option<HumanDuration>,
    /// Most consumer groups kept (any API client can create one); default 10000.
    pub max_groups: Option<usize>,
    /// HTTPS: certificate and key, optionally a client CA (and its CRL).
    pub tls: Option<IngestTlsFile>,
    /// Bearer tokens; absent = the API answers anyone who can reach it.
    pub auth: Option<AuthFile>,
}

impl Default for ApiFile {
    fn default() -> Self {
        ApiFile {
            listen: default_api_listen(),
            max_connections: None,
            header_timeout: None,
            max_groups: None,
            tls: None,
            auth: None,
        }
    }
}

/// `api.auth`.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuthFile {
    /// Lines `NAME SCOPES sha256:HEX` (`tributary token add` writes them).
    pub tokens_file: PathBuf,
    /// `token` (default): `/metrics` needs a token with `read`; `open`: anyone.
    #[serde(default)]
    pub metrics: MetricsAccess,
}

/// Who may read `/metrics`.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum MetricsAccess {
    #[default]
    Token,
    Open,
}

fn default_api_listen() -> String {
    "127.0.0.1:7401".into()
}

/// Default most topics (each partition holds a few descriptors while active).
pub const DEFAULT_MAX_TOPICS: usize = 1000;

/// A key under `topics:`: a topic's settings, or one of the settings of topics as a
/// whole (`max_topics: 1000`, `auto_create: true`, `allow: {…}`).
#[derive(Debug, Deserialize, Clone)]
#[serde(untagged)]
pub enum TopicEntry {
    Topic(TopicFile),
    Number(u64),
    Flag(bool),
    /// `allow`: writer pattern → topic patterns ([`crate::access`]).
    Allow(BTreeMap<String, Vec<String>>),
}

/// One entry under `topics:`. `partitions` and `segment_bytes` are fixed when a
/// topic is created (its stored values win afterwards); `segment_age`,
/// `compression` and `retention` are policies applied on every start.
#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TopicFile {
    pub partitions: Option<u32>,
    /// Roll a partition's active segment before it grows past this.
    pub segment_bytes: Option<ByteSize>,
    /// Roll a partition's active segment when a batch's newest record is this much
    /// newer than the segment's first batch (record timestamps, like Kafka's
    /// `segment.ms`); default `1d`. Retention deletes whole segments, so data lives
    /// at most about `max_age` + `segment_age`.
    pub segment_age: Option<HumanDuration>,
    /// How batches are compressed on disk: lz4 (default), gzip or none. Applies
    /// to batches stored from now on; older ones stay readable as they are.
    pub compression: Option<Compression>,
    pub retention: Option<RetentionFile>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    /// Delete a partition's oldest segments once their newest record is older than
    /// this (by record timestamp, or by the segment file's modification time when
    /// that is earlier). An idle partition's active segment is rolled and deleted
    /// too once all of it is that old.
    pub max_age: Option<HumanDuration>,
    /// Delete a partition's oldest segments while the partition (each partition,
    /// like Kafka's `retention.bytes`) holds more than this; the active segment stays.
    pub max_bytes: Option<ByteSize>,
}

/// The top-level `retention:` section.
#[derive(Debug, Deserialize, Clone)]
#[serde(deny_unknown_fields)]
pub struct RetentionRunFile {
    /// How often the collector looks for segments to delete; default `30s`.
    #[serde(default = "default_retention_check")]
    pub check_interval_ms: HumanDuration,
}

impl Default for RetentionRunFile {
    fn default() -> Self {
        RetentionRunFile {
            check_interval_ms: default_retention_check(),
        }
    }
}

fn default_retention_check() -> HumanDuration {
    HumanDuration(Duration::from_secs(30))
}

#[derive(Debug, Deserialize, Clone, Copy, PartialEq, Eq, Default)]
#[serde(rename_all = "lowercase")]
pub enum FsyncMode {
    /// Acknowledge only after the data is on disk (group commit).
    #[default]
    Always,
    /// Acknowledge after the write; flush every `interval_ms`.
    Interval,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct DurabilityFile {
    #[serde(default)]
    pub fsync: FsyncMode,
    #[serde(default = "default_interval")]
    pub interval_ms: HumanDuration,
}

impl Default for DurabilityFile {
    fn default() -> Self {
        DurabilityFile {
            fsync: FsyncMode::Always,
            interval_ms: default_interval(),
        }
    }
}

fn default_interval() -> HumanDuration {
    HumanDuration(Duration::from_millis(1000))
}

/// Settings of one topic after defaults are applied.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct TopicSettings {
    pub partitions: u32,
    pub segment_bytes: u64,
    pub segment_age: Duration,
    pub compression: Compression,
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// The collector's configuration, ready to run.
#[derive(Clone)]
pub struct CollectorConfig {
    pub data_dir: PathBuf,
    pub log_level: Option<String>,
    pub ingest_listen: SocketAddr,
    pub tls: Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>,
    /// `ingest.tls.cert` and `client_ca`, named in handshake failures.
    pub tls_cert_path: PathBuf,
    pub tls_client_ca_path: Option<PathBuf>,
    /// `ingest.identity` when agents present certificates (`client_ca` set).
    pub identity: Option<crate::ingest::identity::IdentityMode>,
    pub max_connections: usize,
    pub idle_timeout: Duration,
    pub max_inflight_bytes: usize,
    pub max_connections_per_ip: usize,
    pub max_clock_skew: Duration,
    pub api_listen: SocketAddr,
    /// `api.tls`: HTTPS, followed as its files change.
    pub api_tls: Option<Arc<tributary_common::reload::Reloading<rustls::ServerConfig>>>,
    /// `api.auth`: bearer tokens (also SASL/PLAIN on the Kafka listener).
    pub api_auth: Option<Arc<crate::api::auth::ApiAuth>>,
    pub http_limits: crate::api::server::HttpLimits,
    pub max_groups: usize,
    pub default_topic: TopicSettings,
    pub topics: BTreeMap<String, TopicSettings>,
    /// Most topics the store may hold; agents cannot create more.
    pub max_topics: usize,
    /// `topics.allow`: who may write to which topics.
    pub topic_acl: crate::access::TopicAcl,
    /// Whether a topic an agent names that does not exist yet is created.
    pub auto_create: bool,
    pub fsync: FsyncMode,
    pub fsync_interval: Duration,
    /// How often retention runs.
    pub retention_check_interval: Duration,
    /// The Kafka-compatible listener, when configured.
    pub kafka: Option<crate::kafka::KafkaSettings>,
    /// `sources:`: Kafka topics consumed into the store.
    pub sources: Vec<crate::source::KafkaSource>,
}

impl CollectorConfig {
    /// What the configuration leaves open to anyone who can reach a port: the
    /// HTTP API or the Kafka listener beyond loopback without `api.auth`, ingest
    /// without client certificates beyond loopback.
    pub fn exposure_warnings(&self) -> Vec<String> {
        let mut v = Vec::new();
        if self.api_auth.is_none() && !self.api_listen.ip().is_loopback() {
            v.push(format!(
                "api.listen {} is reachable beyond this machine and api.auth is not set: anyone who reaches it reads every log and moves consumer groups (set api.auth.tokens_file; README: Security)",
                self.api_listen
            ));
        }
        if let Some(k) = &self.kafka
            && self.api_auth.is_none()
            && !k.listen.ip().is_loopback()
        {
            v.push(format!(
                "kafka.listen {} is reachable beyond this machine and api.auth is not set: any Kafka client reads every log and produces (set api.auth.tokens_file, then clients use SASL/PLAIN)",
                k.listen
            ));
        }
        if self.identity.is_none() && !self.ingest_listen.ip().is_loopback() {
            v.push(format!(
                "ingest.tls.client_ca is not set: any client that reaches ingest.listen {} writes records under any host name (set client_ca so agents prove who they are)",
                self.ingest_listen
            ));
        }
        v
    }

    /// Everything that follows its files (TLS of each listener), for
    /// [`tributary_common::reload::watch`].
    pub fn watched(&self) -> Vec<Arc<dyn tributary_common::reload::Watched>> {
        let mut v: Vec<Arc<dyn tributary_common::reload::Watched>> = vec![self.tls.clone()];
        if let Some(t) = self.kafka.as_ref().and_then(|k| k.tls.clone()) {
            v.push(t);
        }
        if let Some(t) = &self.api_tls {
            v.push(t.clone());
        }
        if let Some(a) = &self.api_auth {
            v.push(a.tokens.clone());
        }
        v
    }

    pub fn load(path: &Path) -> Result<CollectorConfig, ConfigError> {
        let file: CollectorConfigFile = config::load_yaml(path)?;
        file.resolve(&path.display().to_string())
    }

    /// Settings for `topic`: its own entry over `default`.
    pub fn topic_settings(&self, topic: &str) -> TopicSettings {
        self.topics
            .get(topic)
            .copied()
            .unwrap_or(self.default_topic)
    }
}

fn value_err(path: &str, key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Value {
        path: path.to_owned(),
        key: key.into(),
        message: message.into(),
    }
}

const BUILTIN_DEFAULT: TopicSettings = TopicSettings {
    partitions: 4,
    segment_bytes: 128 << 20,
    segment_age: Duration::from_secs(86_400),
    compression: Compression::Lz4,
    max_age: Some(Duration::from_secs(7 * 86_400)),
    max_bytes: None,
};

fn merge(
    path: &str,
    key: &str,
    base: TopicSettings,
    t: &TopicFile,
) -> Result<TopicSettings, ConfigError> {
    let s = TopicSettings {
        partitions: t.partitions.unwrap_or(base.partitions),
        segment_bytes: t.segment_bytes.map(|b| b.0).unwrap_or(base.segment_bytes),
        segment_age: t.segment_age.map(|d| d.0).unwrap_or(base.segment_age),
        compression: t.compression.unwrap_or(base.compression),
        max_age: t
            .retention
            .as_ref()
            .and_then(|r| r.max_age.map(|d| d.0))
            .or(base.max_age),
        max_bytes: t
            .retention
            .as_ref()
            .and_then(|r| r.max_bytes.map(|b| b.0))
            .or(base.max_bytes),
    };
    if !(1..=1024).contains(&s.partitions) {
        return Err(value_err(
            path,
            format!("topics.{key}.partitions"),
            "must be between 1 and 1024",
        ));
    }
    if !((64 << 10)..=(4 << 30)).contains(&s.segment_bytes) {
        return Err(value_err(
            path,
            format!("topics.{key}.segment_bytes"),
            "must be between 64KiB and 4GiB",
        ));
    }
    if s.segment_age < Duration::from_millis(1) {
        return Err(value_err(
            path,
            format!("topics.{key}.segment_age"),
            "must be at least 1ms",
        ));
    }
    if s.max_age.is_some_and(|a| a < Duration::from_millis(1)) {
        return Err(value_err(
            path,
            format!("topics.{key}.retention.max_age"),
            "must be at least 1ms",
        ));
    }
    Ok(s)
}

/// `kafka:` → its settings, every value checked.
fn resolve_kafka(path: &str, k: &KafkaFile) -> Result<crate::kafka::KafkaSettings, ConfigError> {
    use crate::kafka as kf;
    let listen = parse_addr(path, "kafka.listen", &k.listen)?;
    let (advertised_host, advertised_port) = match &k.advertised {
        Some(a) => {
            let (host, port) = a.rsplit_once(':').ok_or_else(|| {
                value_err(path, "kafka.advertised", format!("`{a}` is not host:port"))
            })?;
            let port: u16 = port.parse().map_err(|_| {
                value_err(path, "kafka.advertised", format!("`{port}` is not a port"))
            })?;
            let host = host.trim_start_matches('[').trim_end_matches(']');
            if host.is_empty() || port == 0 {
                return Err(value_err(
                    path,
                    "kafka.advertised",
                    format!("`{a}` is not host:port"),
                ));
            }
            (host.to_owned(), port)
        }
        None if listen.ip().is_unspecified() => ("127.0.0.1".to_owned(), listen.port()),
        None => (listen.ip().to_string(), listen.port()),
    };
    let tls = match &k.tls {
        Some(t) => Some(t.resolve(path, "kafka.tls")?),
        None => None,
    };
    let max_connections = k.max_connections.unwrap_or(kf::DEFAULT_MAX_CONNECTIONS);
    if max_connections == 0 {
        return Err(value_err(
            path,
            "kafka.max_connections",
            "must be at least 1",
        ));
    }
    let idle_timeout = k.idle_timeout.map_or(kf::DEFAULT_IDLE_TIMEOUT, |d| d.0);
    if idle_timeout < Duration::from_secs(1) {
        return Err(value_err(path, "kafka.idle_timeout", "must be at least 1s"));
    }
    let max_request_bytes = k
        .max_request_bytes
        .map_or(kf::DEFAULT_MAX_REQUEST_BYTES as u64, |b| b.0);
    if !((64 << 10)..=(256 << 20)).contains(&max_request_bytes) {
        return Err(value_err(
            path,
            "kafka.max_request_bytes",
            "must be between 64KiB and 256MiB",
        ));
    }
    let max_fetch_bytes = k
        .max_fetch_bytes
        .map_or(kf::DEFAULT_MAX_FETCH_BYTES as u64, |b| b.0);
    if !((64 << 10)..=(256 << 20)).contains(&max_fetch_bytes) {
        return Err(value_err(
            path,
            "kafka.max_fetch_bytes",
            "must be between 64KiB and 256MiB",
        ));
    }
    Ok(kf::KafkaSettings {
        listen,
        advertised_host,
        advertised_port,
        tls,
        compression: k.compression,
        max_connections,
        idle_timeout,
        max_request_bytes: max_request_bytes as usize,
        max_fetch_bytes: max_fetch_bytes as usize,
    })
}

fn parse_addr(path: &str, key: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse()
        .map_err(|_| value_err(path, key, format!("`{addr}` is not an IP:port address")))
}

impl CollectorConfigFile {
    pub fn resolve(self, path: &str) -> Result<CollectorConfig, ConfigError> {
        let ingest_listen = parse_addr(path, "ingest.listen", &self.ingest.listen)?;
        let api_listen = parse_addr(path, "api.listen", &self.api.listen)?;
        let tls = self.ingest.tls.resolve(path, "ingest.tls")?;
        let idle_timeout = self
            .ingest
            .idle_timeout
            .map_or(crate::ingest::IDLE_TIMEOUT, |d| d.0);
        if idle_timeout < Duration::from_millis(100) {
            return Err(value_err(
                path,
                "ingest.idle_timeout",
                "must be at least 100ms",
            ));
        }
        let max_inflight_bytes = self
            .ingest
            .max_inflight_bytes
            .map_or(crate::ingest::DEFAULT_MAX_INFLIGHT_BYTES as u64, |b| b.0);
        if !((16 << 20)..=(64 << 30)).contains(&max_inflight_bytes) {
            return Err(value_err(
                path,
                "ingest.max_inflight_bytes",
                "must be between 16MiB (one largest frame) and 64GiB",
            ));
        }
        let max_inflight_bytes = max_inflight_bytes as usize;
        let max_connections_per_ip = self
            .ingest
            .max_connections_per_ip
            .unwrap_or(crate::ingest::DEFAULT_MAX_CONNECTIONS_PER_IP);
        if max_connections_per_ip == 0 {
            return Err(value_err(
                path,
                "ingest.max_connections_per_ip",
                "must be at least 1",
            ));
        }
        let defaults = crate::api::server::HttpLimits::default();
        let http_limits = crate::api::server::HttpLimits {
            max_connections: self.api.max_connections.unwrap_or(defaults.max_connections),
            header_timeout: self
                .api
                .header_timeout
                .map_or(defaults.header_timeout, |d| d.0),
        };
        if http_limits.max_connections == 0 {
            return Err(value_err(path, "api.max_connections", "must be at least 1"));
        }
        if http_limits.header_timeout < Duration::from_millis(100) {
            return Err(value_err(
                path,
                "api.header_timeout",
                "must be at least 100ms",
            ));
        }
        let mut max_topics = DEFAULT_MAX_TOPICS;
        let mut auto_create = true;
        let mut allow = None;
        let mut files: BTreeMap<&str, &TopicFile> = BTreeMap::new();
        for (name, entry) in &self.topics {
            match (name.as_str(), entry) {
                ("max_topics", TopicEntry::Number(n)) => max_topics = *n as usize,
                ("max_topics", _) => {
                    return Err(value_err(path, "topics.max_topics", "must be a number"));
                }
                ("auto_create", TopicEntry::Flag(b)) => auto_create = *b,
                ("allow", TopicEntry::Allow(m)) => allow = Some(m),
                ("allow", _) => {
                    return Err(value_err(
                        path,
                        "topics.allow",
                        "must map writers (certificate or token names, globs) to lists of topics (globs)",
                    ));
                }
                ("auto_create", _) => {
                    return Err(value_err(
                        path,
                        "topics.auto_create",
                        "must be true or false",
                    ));
                }
                (_, TopicEntry::Topic(t)) => {
                    files.insert(name, t);
                }
                (_, _) => {
                    return Err(value_err(
                        path,
                        format!("topics.{name}"),
                        "a topic's settings are a mapping ({partitions: 4, …})",
                    ));
                }
            }
        }
        let topic_acl =
            crate::access::TopicAcl::new(allow).map_err(|e| value_err(path, "topics.allow", e))?;
        if max_topics == 0 {
            return Err(value_err(path, "topics.max_topics", "must be at least 1"));
        }
        let default_topic = match files.get("default") {
            Some(d) => merge(path, "default", BUILTIN_DEFAULT, d)?,
            None => BUILTIN_DEFAULT,
        };
        let mut topics = BTreeMap::new();
        for (name, t) in files {
            if name == "default" {
                continue;
            }
            if !tributary_common::names::valid_topic_name(name) {
                return Err(value_err(
                    path,
                    format!("topics.{name}"),
                    "not a valid topic name ([A-Za-z0-9._-]{1,249})",
                ));
            }
            topics.insert(name.to_owned(), merge(path, name, default_topic, t)?);
        }
        if self.ingest.max_connections == 0 {
            return Err(value_err(
                path,
                "ingest.max_connections",
                "must be at least 1",
            ));
        }
        let interval = self.durability.interval_ms.0;
        if interval.is_zero() {
            return Err(value_err(
                path,
                "durability.interval_ms",
                "must be at least 1ms",
            ));
        }
        let retention_check_interval = self.retention.check_interval_ms.0;
        if retention_check_interval.is_zero() {
            return Err(value_err(
                path,
                "retention.check_interval_ms",
                "must be at least 1ms",
            ));
        }
        let kafka = match &self.kafka {
            Some(k) => Some(resolve_kafka(path, k)?),
            None => None,
        };
        let sources = crate::source::settings::resolve_all(&self.sources, &self.data_dir)
            .map_err(|e| value_err(path, e.key, e.message))?;
        let identity = match (&self.ingest.tls.client_ca, self.ingest.identity) {
            (Some(_), mode) => Some(mode.unwrap_or_default()),
            (None, None) => None,
            (None, Some(_)) => {
                return Err(value_err(
                    path,
                    "ingest.identity",
                    "needs ingest.tls.client_ca: without client certificates agents have no identity",
                ));
            }
        };
        let api_tls = match &self.api.tls {
            Some(t) => Some(t.resolve(path, "api.tls")?),
            None => None,
        };
        let api_auth = match &self.api.auth {
            Some(a) => {
                let tokens = crate::api::auth::token_store(&a.tokens_file).map_err(|e| {
                    value_err(
                        path,
                        "api.auth.tokens_file",
                        tributary_common::error::report(&e),
                    )
                })?;
                if tokens.current().is_empty() {
                    tracing::warn!(
                        file = %a.tokens_file.display(),
                        "api.auth.tokens_file holds no token: every API request but /healthz is refused (add one: tributary token add)"
                    );
                }
                Some(Arc::new(crate::api::auth::ApiAuth {
                    tokens,
                    open_metrics: a.metrics == MetricsAccess::Open,
                }))
            }
            None => None,
        };
        if let (Some(_), Some(k)) = (&api_auth, &kafka)
            && k.tls.is_none()
            && !k.listen.ip().is_loopback()
        {
            return Err(value_err(
                path,
                "kafka.tls",
                "with api.auth the Kafka listener takes SASL/PLAIN tokens, which must not cross the network in clear text: set kafka.tls (or listen on a loopback address)",
            ));
        }
        Ok(CollectorConfig {
            sources,
            api_tls,
            api_auth,
            identity,
            kafka,
            data_dir: self.data_dir,
            log_level: self.log_level,
            ingest_listen,
            tls,
            tls_cert_path: self.ingest.tls.cert.clone(),
            tls_client_ca_path: self.ingest.tls.client_ca.clone(),
            idle_timeout,
            max_inflight_bytes,
            max_connections_per_ip,
            max_clock_skew: self
                .ingest
                .max_clock_skew
                .map_or(Duration::from_secs(365 * 86_400), |d| d.0)
                .max(Duration::from_secs(60)),
            http_limits,
            max_groups: self
                .api
                .max_groups
                .unwrap_or(crate::storage::groups::DEFAULT_MAX_GROUPS)
                .max(1),
            max_connections: self.ingest.max_connections,
            api_listen,
            default_topic,
            max_topics,
            topic_acl,
            auto_create,
            topics,
            fsync: self.durability.fsync,
            fsync_interval: interval,
            retention_check_interval,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn example_config_parses_and_merges_topic_overrides() {
        let path = concat!(env!("CARGO_MANIFEST_DIR"), "/../configs/collector.yaml");
        let f: CollectorConfigFile = config::load_yaml(Path::new(path)).unwrap();
        let topic = |name: &str| match &f.topics[name] {
            TopicEntry::Topic(t) => t.clone(),
            other => panic!("{other:?}"),
        };
        let default = merge("c", "default", BUILTIN_DEFAULT, &topic("default")).unwrap();
        assert_eq!(default.partitions, 4);
        assert_eq!(default.max_bytes, Some(10 << 30));
        let app = merge("c", "app", default, &topic("app")).unwrap();
        assert!(matches!(f.topics["max_topics"], TopicEntry::Number(1000)));
        assert!(matches!(f.topics["auto_create"], TopicEntry::Flag(true)));
        assert_eq!((app.partitions, app.segment_bytes), (8, 128 << 20));
        assert_eq!(f.durability.fsync, FsyncMode::Always);
        assert_eq!(default.segment_age, Duration::from_secs(86_400));
        assert_eq!(
            f.retention.check_interval_ms,
            HumanDuration(Duration::from_secs(30))
        );
        let bad = TopicFile {
            partitions: Some(0),
            ..TopicFile::default()
        };
        assert!(
            merge("c", "x", default, &bad)
                .unwrap_err()
                .to_string()
                .contains("topics.x.partitions")
        );
    }

    fn topic(yaml: &str) -> Result<TopicSettings, ConfigError> {
        let t: TopicFile = config::parse_yaml("t", yaml).unwrap();
        merge("c", "x", BUILTIN_DEFAULT, &t)
    }

    #[test]
    fn segment_age_and_retention_keys() {
        let t = topic("{segment_age: 2h, retention: {max_age: 3d, max_bytes: 1GiB}}").unwrap();
        assert_eq!(t.segment_age, Duration::from_secs(7200));
        assert_eq!(t.compression, Compression::Lz4, "lz4 by default");
        assert_eq!(
            topic("{compression: gzip}").unwrap().compression,
            Compression::Gzip
        );
        assert_eq!(
            topic("{compression: none}").unwrap().compression,
            Compression::None
        );
        let err = config::parse_yaml::<TopicFile>("t", "{compression: zstd}")
            .unwrap_err()
            .to_string();
        assert!(err.contains("compression") && err.contains("lz4"), "{err}");
        assert_eq!(t.max_age, Some(Duration::from_secs(3 * 86_400)));
        assert_eq!(t.max_bytes, Some(1 << 30));
        let inherited = topic("{partitions: 2}").unwrap();
        assert_eq!(inherited.segment_age, BUILTIN_DEFAULT.segment_age);
        let err = topic("{segment_age: 0}").unwrap_err().to_string();
        assert!(err.contains("topics.x.segment_age"), "{err}");
        let err = topic("{retention: {max_age: 0s}}").unwrap_err().to_string();
        assert!(err.contains("topics.x.retention.max_age"), "{err}");
        let r: RetentionRunFile = config::parse_yaml("t", "{check_interval_ms: 250ms}").unwrap();
        assert_eq!(r.check_interval_ms.0, Duration::from_millis(250));
        assert!(config::parse_yaml::<RetentionRunFile>("t", "{max_age: 1d}").is_err());
    }

    /// Resolve `collector.yaml` text with certificates made in `dir`.
    fn resolve_in(dir: &Path, extra: &str, ingest: &str) -> Result<CollectorConfig, ConfigError> {
        let f = crate::setup::certs::generate(&dir.join("certs"), &[]).unwrap();
        let yaml = format!(
            "data_dir: {}\ningest:\n  listen: 0.0.0.0:7400\n  tls:\n    cert: {}\n    key: {}\n{ingest}{extra}",
            dir.join("data").display(),
            f.collector_cert.display(),
            f.collector_key.display(),
        );
        let file: CollectorConfigFile = config::parse_yaml("collector.yaml", &yaml)?;
        file.resolve("collector.yaml")
    }

    #[test]
    fn sources_resolve_and_errors_name_their_key() {
        let dir = tempfile::tempdir().unwrap();
        let c = resolve_in(
            dir.path(),
            "sources:\n  - kafka: {brokers: [\"127.0.0.1:9092\"], topics: [app], group: g}\n",
            "",
        )
        .unwrap();
        assert_eq!(c.sources.len(), 1);
        assert_eq!(
            (c.sources[0].group.as_str(), c.sources[0].name.as_str()),
            ("g", "sources[0]")
        );
        let e = resolve_in(
            dir.path(),
            "sources:\n  - kafka: {brokers: [\"127.0.0.1:9092\"], topics: []}\n",
            "",
        )
        .err()
        .expect("no topics is an error")
        .to_string();
        assert!(e.contains("collector.yaml: sources[0].kafka.topics"), "{e}");
        assert!(resolve_in(dir.path(), "sources:\n  - files: {}\n", "").is_err());
        assert!(resolve_in(dir.path(), "", "").unwrap().sources.is_empty());
    }

    #[test]
    fn security_settings_are_checked_and_open_doors_are_named() {
        let dir = tempfile::tempdir().unwrap();
        let ca = dir.path().join("certs/ca.pem");
        let crl = dir.path().join("certs/crl.pem");
        let tokens = dir.path().join("tokens");
        std::fs::write(&tokens, "").unwrap();

        // Everything open beyond loopback: each door is named.
        let open = resolve_in(
            dir.path(),
            "api:\n  listen: 0.0.0.0:7401\nkafka:\n  listen: 0.0.0.0:9092\n",
            "",
        )
        .unwrap();
        let w = open.exposure_warnings().join("\n");
        for key in [
            "api.listen 0.0.0.0:7401",
            "kafka.listen 0.0.0.0:9092",
            "ingest.tls.client_ca",
        ] {
            assert!(w.contains(key), "{w}");
        }
        assert!(open.identity.is_none());

        // Closed: client certificates (identity enforce by default) and tokens.
        let closed = resolve_in(
            dir.path(),
            &format!("api:\n  listen: 0.0.0.0:7401\n  auth: {{tokens_file: {}}}\nkafka:\n  listen: 127.0.0.1:9092\n", tokens.display()),
            &format!("    client_ca: {}\n    client_crl: {}\n", ca.display(), crl.display()),
        )
        .unwrap();
        assert!(
            closed.exposure_warnings().is_empty(),
            "{:?}",
            closed.exposure_warnings()
        );
        assert_eq!(
            closed.identity,
            Some(crate::ingest::identity::IdentityMode::Enforce)
        );

        // Settings that cannot work are errors naming the key.
        let err = |extra: &str, ingest: &str| {
            tributary_common::error::report(
                &resolve_in(dir.path(), extra, ingest)
                    .err()
                    .expect("an error"),
            )
        };
        assert!(err("", "  identity: tag\n").contains("ingest.identity"));
        assert!(
            err("", &format!("    client_crl: {}\n", crl.display()))
                .contains("ingest.tls.client_crl")
        );
        let sasl_in_clear = format!(
            "api:\n  auth: {{tokens_file: {}}}\nkafka:\n  listen: 0.0.0.0:9092\n",
            tokens.display()
        );
        assert!(err(&sasl_in_clear, "").contains("kafka.tls"));
        assert!(err("topics:\n  allow: {web: 3}\n", "").contains("topics"));
        assert!(
            err("api:\n  auth: {tokens_file: /nonexistent/tokens}\n", "")
                .contains("api.auth.tokens_file")
        );
    }
}
