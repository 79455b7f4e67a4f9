//! Configuration helpers: YAML loading with errors that name the file, line,
//! column and key; human sizes (`64KiB`) and durations (`500ms`, `7d`).
//!
//! `serde_yaml` is archived upstream; it is used only in [`parse_yaml`], so
//! swapping it for a maintained fork is a one-line change.

use std::fmt;
use std::path::Path;
use std::time::Duration;

use serde::Deserialize;
use serde::de::{self, DeserializeOwned, Deserializer, Visitor};
use thiserror::Error;

/// A configuration file could not be loaded.
#[derive(Debug, Error)]
pub enum ConfigError {
    #[error("{path}: cannot read: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("{path}:{line}:{column}: {key}: {message}")]
    Invalid {
        path: String,
        line: usize,
        column: usize,
        key: String,
        message: String,
    },
    #[error("{path}: {key}: {message}")]
    Value {
        path: String,
        key: String,
        message: String,
    },
}

/// The host part of `host:port` (`[v6]:port` too), if `addr` is that and nothing
/// else (no scheme, no path).
pub fn split_host(addr: &str) -> Option<&str> {
    if let Some(rest) = addr.strip_prefix('[') {
        let end = rest.find(']')?;
        rest[end + 1..].strip_prefix(':')?.parse::<u16>().ok()?;
        return Some(&rest[..end]);
    }
    let (host, port) = addr.rsplit_once(':')?;
    port.parse::<u16>().ok()?;
    let bad = host.is_empty() || host.contains(['/', ' ', '[', ']']) || host.contains(':');
    (!bad).then_some(host)
}

/// Read and parse a YAML file into `T`.
pub fn load_yaml<T: DeserializeOwned>(path: &Path) -> Result<T, ConfigError> {
    let text = std::fs::read_to_string(path).map_err(|source| ConfigError::Read {
        path: path.display().to_string(),
        source,
    })?;
    parse_yaml(&path.display().to_string(), &text)
}

/// Parse YAML text into `T`; `name` is used in error messages.
pub fn parse_yaml<T: DeserializeOwned>(name: &str, text: &str) -> Result<T, ConfigError> {
    let de = serde_yaml::Deserializer::from_str(text);
    serde_path_to_error::deserialize(de).map_err(|e| {
        let path = e.path().to_string();
        let inner = e.into_inner();
        let (line, column) = inner
            .location()
            .map(|l| (l.line(), l.column()))
            .unwrap_or((1, 1));
        // serde_yaml appends " at line L column C" to its messages; we print our own.
        let mut message = inner.to_string();
        if let Some(i) = message.find(" at line ") {
            message.truncate(i);
        }
        let (key, message) = shape_error(&path, message);
        ConfigError::Invalid {
            path: name.to_owned(),
            line,
            column,
            key,
            message,
        }
    })
}

/// The key and message of a YAML error as people should read them. A syntax error
/// has no meaningful key (serde_path_to_error prints unknown segments as `?`) and
/// gets a hint instead; serde_yaml's own `key: ` prefix is not repeated.
fn shape_error(path: &str, mut message: String) -> (String, String) {
    let mut key = path.to_owned();
    while let Some(k) = key.strip_suffix(".?") {
        key = k.to_owned();
    }
    if key == "?" || key == "." || key.is_empty() {
        key = "(top level)".into();
    }
    // serde_yaml prefixes data errors with the path of the mapping they are in.
    if let Some((prefix, rest)) = message.split_once(": ")
        && !prefix.contains(' ')
        && path.starts_with(prefix)
    {
        message = rest.to_owned();
    }
    const SYNTAX: [&str; 6] = [
        "mapping values are not allowed",
        "did not find expected",
        "could not find expected",
        "found character that cannot start any token",
        "block sequence entries are not allowed",
        "found a tab character",
    ];
    if SYNTAX.iter().any(|s| message.contains(s)) {
        let hint = if message.contains("cannot start any token") || message.contains("tab") {
            "YAML syntax: indent with spaces, not tabs"
        } else {
            "YAML syntax: check the indentation of this line and the one above (keys of one mapping line up; a value with `: ` in it needs quotes)"
        };
        message = format!("{message} ({hint})");
        if path.contains('?') {
            key = format!("near {key}");
        }
    }
    (key, message)
}

/// A byte size: a plain number or `64KiB`, `16MiB`, `1GiB` (also `KB`/`MB`/`GB` as powers of 1000).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct ByteSize(pub u64);

/// A duration: a plain number of milliseconds or `500ms`, `30s`, `5m`, `2h`, `7d`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord)]
pub struct HumanDuration(pub Duration);

/// Parse `64KiB`-style sizes.
pub fn parse_size(s: &str) -> Result<u64, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a size (expected e.g. 1048576, 64KiB, 16MiB, 1GiB)"))?;
    let mult: u64 = match unit.trim() {
        "" | "B" => 1,
        "KiB" | "K" | "k" => 1 << 10,
        "MiB" | "M" => 1 << 20,
        "GiB" | "G" => 1 << 30,
        "TiB" | "T" => 1 << 40,
        "KB" | "kB" => 1_000,
        "MB" => 1_000_000,
        "GB" => 1_000_000_000,
        "TB" => 1_000_000_000_000,
        other => {
            return Err(format!(
                "unknown size unit `{other}` in `{s}` (use B, KiB, MiB, GiB, TiB)"
            ));
        }
    };
    n.checked_mul(mult)
        .ok_or_else(|| format!("size `{s}` is too large"))
}

/// Parse `500ms`/`30s`/`5m`/`2h`/`7d` durations; a bare number is milliseconds.
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let split = s.find(|c: char| !c.is_ascii_digit()).unwrap_or(s.len());
    let (num, unit) = s.split_at(split);
    let n: u64 = num
        .parse()
        .map_err(|_| format!("`{s}` is not a duration (expected e.g. 500ms, 30s, 5m, 2h, 7d)"))?;
    let ms: u64 = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "m" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        "w" => 7 * 86_400_000,
        other => {
            return Err(format!(
                "unknown duration unit `{other}` in `{s}` (use ms, s, m, h, d)"
            ));
        }
    };
    n.checked_mul(ms)
        .map(Duration::from_millis)
        .ok_or_else(|| format!("duration `{s}` is too large"))
}

struct NumOrStr<F>(F, &'static str);

impl<'de, T, F: Fn(&str) -> Result<T, String>> Visitor<'de> for NumOrStr<F>
where
    T: From<u64>,
{
    type Value = T;
    fn expecting(&self, f: &mut fmt::Formatter) -> fmt::Result {
        f.write_str(self.1)
    }
    fn visit_u64<E: de::Error>(self, v: u64) -> Result<T, E> {
        Ok(T::from(v))
    }
    fn visit_i64<E: de::Error>(self, v: i64) -> Result<T, E> {
        u64::try_from(v)
            .map(T::from)
            .map_err(|_| E::custom(format!("{v} is negative")))
    }
    fn visit_str<E: de::Error>(self, v: &str) -> Result<T, E> {
        (self.0)(v).map_err(E::custom)
    }
}

impl From<u64> for ByteSize {
    fn from(v: u64) -> Self {
        ByteSize(v)
    }
}

impl From<u64> for HumanDuration {
    fn from(v: u64) -> Self {
        HumanDuration(Duration::from_millis(v))
    }
}

impl<'de> Deserialize<'de> for ByteSize {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumOrStr(
            |s: &str| parse_size(s).map(ByteSize),
            "a size such as 1048576 or 64KiB",
        ))
    }
}

impl<'de> Deserialize<'de> for HumanDuration {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        d.deserialize_any(NumOrStr(
            |s: &str| parse_duration(s).map(HumanDuration),
            "a duration such as 500 (ms), 30s or 7d",
        ))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_part() {
        assert_eq!(
            split_host("collector.example.com:7400"),
            Some("collector.example.com")
        );
        assert_eq!(split_host("127.0.0.1:7400"), Some("127.0.0.1"));
        assert_eq!(split_host("[::1]:7400"), Some("::1"));
        assert_eq!(split_host("nohost"), None);
        assert_eq!(split_host("h:notaport"), None);
        assert_eq!(split_host("a/b:7400"), None);
        assert_eq!(split_host("::1:7400"), None);
    }

    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Inner {
        size: ByteSize,
        every: HumanDuration,
    }
    #[derive(Debug, Deserialize)]
    #[serde(deny_unknown_fields)]
    #[allow(dead_code)]
    struct Outer {
        name: String,
        items: Vec<Inner>,
    }

    #[test]
    fn sizes_and_durations() {
        assert_eq!(parse_size("1048576"), Ok(1 << 20));
        assert_eq!(parse_size("64KiB"), Ok(64 << 10));
        assert_eq!(parse_size("16MiB"), Ok(16 << 20));
        assert_eq!(parse_size("10GiB"), Ok(10 << 30));
        assert_eq!(parse_size("2MB"), Ok(2_000_000));
        assert!(parse_size("12 parsecs").is_err());
        assert!(parse_size("KiB").is_err());
        assert!(parse_size("99999999999TiB").is_err());
        assert_eq!(parse_duration("500ms"), Ok(Duration::from_millis(500)));
        assert_eq!(parse_duration("200"), Ok(Duration::from_millis(200)));
        assert_eq!(parse_duration("30s"), Ok(Duration::from_secs(30)));
        assert_eq!(parse_duration("5m"), Ok(Duration::from_secs(300)));
        assert_eq!(parse_duration("7d"), Ok(Duration::from_secs(7 * 86400)));
        assert!(parse_duration("5 fortnights").is_err());
    }

    #[test]
    fn errors_name_line_column_and_key() {
        let text = "name: x\nitems:\n  - size: 64KiB\n    every: 5s\n  - size: 12 parsecs\n    every: 1s\n";
        let err = parse_yaml::<Outer>("agent.yaml", text)
            .unwrap_err()
            .to_string();
        assert!(err.starts_with("agent.yaml:5:"), "{err}");
        assert!(err.contains("items[1].size"), "{err}");
        assert!(err.contains("parsecs"), "{err}");

        let text = "name: x\nitems: []\nbogus: 1\n";
        let err = parse_yaml::<Outer>("c.yaml", text).unwrap_err().to_string();
        assert!(err.starts_with("c.yaml:3:"), "{err}");
        assert!(err.contains("unknown field `bogus`"), "{err}");

        let text = "name: x\nitems:\n  - size: 1\n";
        let err = parse_yaml::<Outer>("c.yaml", text).unwrap_err().to_string();
        assert!(err.contains("missing field `every`"), "{err}");

        // Indentation mistakes: no `?` in the key, a hint, the key said once.
        let text = "items:\n  - size: 1\n    every: 5s\nname: x\n  more: [1]\n";
        let err = parse_yaml::<Outer>("c.yaml", text).unwrap_err().to_string();
        assert!(!err.contains('?'), "{err}");
        assert!(err.contains("check the indentation"), "{err}");
        let text = "name: x\nitems:\n- size: 1\n  every: 5s\n more: 1\n";
        let err = parse_yaml::<Outer>("c.yaml", text).unwrap_err().to_string();
        assert!(!err.contains('?') && err.contains("indentation"), "{err}");
        let text = "name: x\nitems:\n  - size: 1\n    evry: 5s\n";
        let err = parse_yaml::<Outer>("c.yaml", text).unwrap_err().to_string();
        assert_eq!(err.matches("items[0]").count(), 1, "{err}");

        let ok: Outer =
            parse_yaml("c.yaml", "name: x\nitems:\n  - {size: 5, every: 7d}\n").unwrap();
        assert_eq!(ok.items[0].size, ByteSize(5));
    }
}
