//! The collector's configuration: [`CollectorConfigFile`] mirrors `collector.yaml`
//! (unknown keys are errors); [`CollectorConfigFile::resolve`] loads TLS and checks values.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use serde::Deserialize;
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
    /// `default` applies to topics without their own entry; other keys are topic names.
    #[serde(default)]
    pub topics: BTreeMap<String, TopicFile>,
    #[serde(default)]
    pub durability: DurabilityFile,
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
    /// When set, agents must present a certificate signed by this CA.
    pub client_ca: Option<PathBuf>,
}

#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ApiFile {
    #[serde(default = "default_api_listen")]
    pub listen: String,
}

impl Default for ApiFile {
    fn default() -> Self {
        ApiFile {
            listen: default_api_listen(),
        }
    }
}

fn default_api_listen() -> String {
    "127.0.0.1:7401".into()
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct TopicFile {
    pub partitions: Option<u32>,
    pub segment_bytes: Option<ByteSize>,
    pub retention: Option<RetentionFile>,
}

#[derive(Debug, Deserialize, Default, Clone)]
#[serde(deny_unknown_fields)]
pub struct RetentionFile {
    pub max_age: Option<HumanDuration>,
    pub max_bytes: Option<ByteSize>,
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
    pub max_age: Option<Duration>,
    pub max_bytes: Option<u64>,
}

/// The collector's configuration, ready to run.
#[derive(Clone)]
pub struct CollectorConfig {
    pub data_dir: PathBuf,
    pub log_level: Option<String>,
    pub ingest_listen: SocketAddr,
    pub tls: Arc<rustls::ServerConfig>,
    pub max_connections: usize,
    pub api_listen: SocketAddr,
    pub default_topic: TopicSettings,
    pub topics: BTreeMap<String, TopicSettings>,
    pub fsync: FsyncMode,
    pub fsync_interval: Duration,
}

impl CollectorConfig {
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
    Ok(s)
}

fn parse_addr(path: &str, key: &str, addr: &str) -> Result<SocketAddr, ConfigError> {
    addr.parse()
        .map_err(|_| value_err(path, key, format!("`{addr}` is not an IP:port address")))
}

impl CollectorConfigFile {
    pub fn resolve(self, path: &str) -> Result<CollectorConfig, ConfigError> {
        let ingest_listen = parse_addr(path, "ingest.listen", &self.ingest.listen)?;
        let api_listen = parse_addr(path, "api.listen", &self.api.listen)?;
        let t = &self.ingest.tls;
        let tls = tls::server_config(&t.cert, &t.key, t.client_ca.as_deref())
            .map_err(|e| value_err(path, "ingest.tls", e.to_string()))?;
        let default_topic = match self.topics.get("default") {
            Some(d) => merge(path, "default", BUILTIN_DEFAULT, d)?,
            None => BUILTIN_DEFAULT,
        };
        let mut topics = BTreeMap::new();
        for (name, t) in &self.topics {
            if name == "default" {
                continue;
            }
            if !tributary_store::valid_topic_name(name) {
                return Err(value_err(
                    path,
                    format!("topics.{name}"),
                    "not a valid topic name ([A-Za-z0-9._-]{1,249})",
                ));
            }
            topics.insert(name.clone(), merge(path, name, default_topic, t)?);
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
        Ok(CollectorConfig {
            data_dir: self.data_dir,
            log_level: self.log_level,
            ingest_listen,
            tls,
            max_connections: self.ingest.max_connections,
            api_listen,
            default_topic,
            topics,
            fsync: self.durability.fsync,
            fsync_interval: interval,
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
        let default = merge("c", "default", BUILTIN_DEFAULT, &f.topics["default"]).unwrap();
        assert_eq!(default.partitions, 4);
        assert_eq!(default.max_bytes, Some(10 << 30));
        let app = merge("c", "app", default, &f.topics["app"]).unwrap();
        assert_eq!((app.partitions, app.segment_bytes), (8, 128 << 20));
        assert_eq!(f.durability.fsync, FsyncMode::Always);
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
}
