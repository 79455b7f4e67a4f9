//! `sources:` of `collector.yaml`: what the file says ([`SourceFile`]) and what a
//! source runs with ([`KafkaSource`]), every value checked when the config loads.
//!
//! ```yaml
//! sources:
//!   - kafka:
//!       brokers: ["k1.example.com:9092"]
//!       topics: ["app"]
//!       group: tributary              # consumer group; default tributary
//!       topic: app-from-kafka         # optional: store here instead of the same name
//!       session_timeout_ms: 30s       # optional; 6s to 30m
//!       tls: {ca: …, cert: …, key: …} # optional
//!       sasl: {mechanism: plain, username: …, password_file: …}   # optional
//! ```

use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use tributary_common::config::HumanDuration;
use tributary_common::kafka::ConnSettings;
use tributary_common::kafka::settings::{KafkaTlsFile, SaslFile, SettingError, resolve};
use tributary_common::names::valid_topic_name;

/// One entry of `sources:`, keyed by its kind (`- kafka: {…}`; the only kind).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SourceFile {
    /// Consume Kafka topics (written by agents with `output.kafka`, or by any
    /// producer) into the collector's topics.
    pub kafka: KafkaSourceFile,
}

/// `sources[].kafka`.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaSourceFile {
    /// Bootstrap brokers, `host:port`.
    pub brokers: Vec<String>,
    /// Kafka topics to consume.
    pub topics: Vec<String>,
    /// The consumer group the collectors reading these topics share (partitions
    /// are split among its members); default `tributary`.
    #[serde(default = "default_group")]
    pub group: String,
    /// Store every consumed record in this collector topic; default: the topic
    /// of the same name as the Kafka topic.
    pub topic: Option<String>,
    /// How long the group coordinator waits for a heartbeat before it gives this
    /// collector's partitions to another member; default 30s.
    pub session_timeout_ms: Option<HumanDuration>,
    pub tls: Option<KafkaTlsFile>,
    pub sasl: Option<SaslFile>,
}

fn default_group() -> String {
    "tributary".into()
}

/// Default `session_timeout_ms`.
pub const DEFAULT_SESSION_TIMEOUT: Duration = Duration::from_secs(30);
/// Kafka brokers refuse session timeouts outside their bounds (by default 6 s to
/// 30 min); so does the config.
const MIN_SESSION_TIMEOUT: Duration = Duration::from_secs(6);
const MAX_SESSION_TIMEOUT: Duration = Duration::from_secs(1800);

/// A Kafka source, ready to run.
#[derive(Debug, Clone)]
pub struct KafkaSource {
    /// `sources[N]`: how logs, metrics and `/healthz` name it.
    pub name: String,
    pub brokers: Vec<String>,
    pub topics: Vec<String>,
    pub group: String,
    /// The collector topic every record goes to, if not the Kafka topic's name.
    pub topic: Option<String>,
    pub session_timeout: Duration,
    /// The static member id (KIP-345) this collector joins the group with, so
    /// that a restart takes its place back at once: the host name, a hash of
    /// `data_dir`, and a counter when several sources of this collector share
    /// the group.
    pub instance_id: String,
    pub conn: ConnSettings,
}

impl KafkaSource {
    /// The collector topic records of Kafka topic `kafka_topic` are stored in.
    pub fn store_topic<'a>(&'a self, kafka_topic: &'a str) -> &'a str {
        self.topic.as_deref().unwrap_or(kafka_topic)
    }
}

/// Check every entry of `sources:` and build what runs. Errors name the key
/// (`sources[1].kafka.topics[0]`).
pub fn resolve_all(
    sources: &[SourceFile],
    data_dir: &Path,
) -> Result<Vec<KafkaSource>, SettingError> {
    let host = sanitize(&gethostname::gethostname().to_string_lossy());
    let dir_hash = fnv1a(data_dir.to_string_lossy().as_bytes());
    let mut out: Vec<KafkaSource> = Vec::new();
    for (i, s) in sources.iter().enumerate() {
        let k = &s.kafka;
        let prefix = format!("sources[{i}].kafka");
        let err = |key: &str, message: String| SettingError {
            key: format!("{prefix}.{key}"),
            message,
        };
        if k.topics.is_empty() {
            return Err(err(
                "topics",
                "list at least one Kafka topic to consume, e.g. [\"app\"]".into(),
            ));
        }
        let mut topics: Vec<String> = Vec::new();
        for (j, t) in k.topics.iter().enumerate() {
            if !valid_topic_name(t) {
                return Err(err(
                    &format!("topics[{j}]"),
                    format!("`{t}` is not a Kafka topic name ([A-Za-z0-9._-]{{1,249}})"),
                ));
            }
            if !topics.contains(t) {
                topics.push(t.clone());
            }
        }
        if let Some(t) = &k.topic
            && !valid_topic_name(t)
        {
            return Err(err(
                "topic",
                format!("`{t}` is not a topic name ([A-Za-z0-9._-]{{1,249}})"),
            ));
        }
        if k.group.is_empty() || k.group.len() > 249 {
            return Err(err(
                "group",
                "a consumer group name of 1 to 249 characters".into(),
            ));
        }
        let session_timeout = k
            .session_timeout_ms
            .map_or(DEFAULT_SESSION_TIMEOUT, |d| d.0);
        if !(MIN_SESSION_TIMEOUT..=MAX_SESSION_TIMEOUT).contains(&session_timeout) {
            return Err(err(
                "session_timeout_ms",
                "must be between 6s and 30m (the bounds Kafka brokers accept by default)".into(),
            ));
        }
        let (mut conn, _files) = resolve(
            &prefix,
            &k.brokers,
            k.tls.as_ref(),
            k.sasl.as_ref(),
            "tributary-collector",
        )?;
        conn.max_response = super::fetch::MAX_RESPONSE;
        let same_group = out.iter().filter(|o| o.group == k.group).count();
        let mut instance_id = format!("tributary-{host}-{:08x}", dir_hash as u32);
        if same_group > 0 {
            instance_id.push_str(&format!("-{same_group}"));
        }
        out.push(KafkaSource {
            name: format!("sources[{i}]"),
            brokers: k.brokers.clone(),
            topics,
            group: k.group.clone(),
            topic: k.topic.clone(),
            session_timeout,
            instance_id,
            conn,
        });
    }
    Ok(out)
}

/// A host name as group instance ids may spell it (`[A-Za-z0-9._-]`, at most 200).
fn sanitize(host: &str) -> String {
    let s: String = host
        .chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '.' | '_' | '-') {
                c
            } else {
                '_'
            }
        })
        .take(200)
        .collect();
    if s.is_empty() { "host".into() } else { s }
}

/// FNV-1a, 64 bits: a stable hash (the same in every build and on every host).
pub fn fnv1a(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(yaml: &str) -> Result<Vec<KafkaSource>, String> {
        let files: Vec<SourceFile> =
            tributary_common::config::parse_yaml("c", yaml).map_err(|e| e.to_string())?;
        resolve_all(&files, Path::new("/var/lib/tributary"))
            .map_err(|e| format!("{}: {}", e.key, e.message))
    }

    #[test]
    fn sources_parse_and_are_checked() {
        let s = parse(
            "- kafka: {brokers: [\"k1:9092\"], topics: [app, app, web], topic: merged}\n- kafka: {brokers: [\"k2:9092\"], topics: [x], session_timeout_ms: 10s}\n",
        )
        .unwrap();
        assert_eq!(s.len(), 2);
        assert_eq!(s[0].topics, vec!["app", "web"]);
        assert_eq!(s[0].group, "tributary");
        assert_eq!(s[0].store_topic("app"), "merged");
        assert_eq!(s[1].store_topic("x"), "x");
        assert_eq!(s[1].session_timeout, Duration::from_secs(10));
        assert_eq!(s[0].name, "sources[0]");
        assert!(s[0].instance_id.starts_with("tributary-"));
        assert_eq!(s[1].instance_id, format!("{}-1", s[0].instance_id));
        assert_eq!(s[0].conn.max_response, crate::source::fetch::MAX_RESPONSE);

        for (yaml, key) in [
            (
                "- kafka: {brokers: [], topics: [a]}",
                "sources[0].kafka.brokers",
            ),
            (
                "- kafka: {brokers: [\"k:1\"], topics: []}",
                "sources[0].kafka.topics",
            ),
            (
                "- kafka: {brokers: [\"k:1\"], topics: [\"a/b\"]}",
                "sources[0].kafka.topics[0]",
            ),
            (
                "- kafka: {brokers: [\"k:1\"], topics: [a], topic: \"..\"}",
                "sources[0].kafka.topic",
            ),
            (
                "- kafka: {brokers: [\"k:1\"], topics: [a], group: \"\"}",
                "sources[0].kafka.group",
            ),
            (
                "- kafka: {brokers: [\"k:1\"], topics: [a], session_timeout_ms: 1s}",
                "sources[0].kafka.session_timeout_ms",
            ),
        ] {
            let e = parse(yaml).unwrap_err();
            assert!(e.starts_with(&format!("{key}:")), "{yaml}: {e}");
        }
        assert!(parse("- kafka: {brokers: [\"k:1\"], topics: [a], nope: 1}").is_err());
        assert!(parse("- files: {}").is_err());
    }
}
