//! What a query asks: its parameters as given ([`QueryParams`], strings as in a
//! URL), checked ([`Query`]), and the record predicate ([`Filter`]) that both the
//! query engine and the CLI's `--follow` apply.

use memchr::memmem;
use tributary_common::names::{SEVERITIES, severity_level};
use tributary_store::StoredRecord;

use super::QueryError;

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}

/// Most records one query returns.
pub const MAX_LIMIT: usize = 10_000;
/// Records returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;

/// `order=`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Order {
    #[default]
    Asc,
    Desc,
}

/// The query as given (strings, as in a URL); [`Query::parse`] checks it.
#[derive(Debug, Clone, Default, serde::Deserialize, serde::Serialize)]
pub struct QueryParams {
    pub topic: Option<String>,
    pub since: Option<String>,
    pub until: Option<String>,
    pub host: Option<String>,
    pub source: Option<String>,
    pub severity: Option<String>,
    pub contains: Option<String>,
    pub regex: Option<String>,
    pub limit: Option<String>,
    pub order: Option<String>,
    /// `field.KEY=VALUE` (dotted keys for nested fields); other keys are ignored.
    #[serde(flatten, default)]
    pub extra: std::collections::BTreeMap<String, String>,
}

/// A checked query.
#[derive(Debug, Clone)]
pub struct Query {
    pub topic: String,
    pub filter: Filter,
    pub limit: usize,
    pub order: Order,
}

/// Which records match.
#[derive(Debug, Clone, Default)]
pub struct Filter {
    /// Timestamps at or after this (ms since the epoch).
    pub since_ms: Option<i64>,
    /// Timestamps at or before this.
    pub until_ms: Option<i64>,
    pub host: Option<String>,
    /// Glob over the record's source (`*` crosses `/`).
    pub source: Option<glob::Pattern>,
    /// Records at this severity or more severe (`fields.severity`, a syslog name);
    /// records without a severity do not match.
    pub max_severity: Option<u8>,
    /// Byte substring of the message.
    pub contains: Option<memmem::Finder<'static>>,
    /// Regular expression over the message bytes.
    pub regex: Option<regex::bytes::Regex>,
    /// `field.KEY=VALUE`: the record's field at the dotted path KEY (its own
    /// fields first, then its block's) equals VALUE (a string as it is, other JSON
    /// values as they print).
    pub fields: Vec<(Vec<String>, String)>,
}

/// Most `field.` filters in one query.
const MAX_FIELD_FILTERS: usize = 16;

/// The value at the dotted `path` of a fields object, as text.
fn field_value(fields: &[u8], path: &[String]) -> Option<String> {
    if fields.is_empty() {
        return None;
    }
    let v: serde_json::Value = serde_json::from_slice(fields).ok()?;
    let mut cur = &v;
    for k in path {
        cur = cur.as_object()?.get(k)?;
    }
    Some(match cur {
        serde_json::Value::String(s) => s.clone(),
        other => other.to_string(),
    })
}

/// Longest accepted regex source, and the compiled size limit: patterns are user
/// input, so they stay small (the engine is linear-time whatever the pattern).
const MAX_REGEX_LEN: usize = 4096;
const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `since`/`until`: RFC 3339, epoch milliseconds, or a duration before `now_ms`
/// (`15m`, `2h`, `7d`).
pub fn parse_time(s: &str, now_ms: i64) -> Result<i64, String> {
    let s = s.trim();
    // `-15m` reads as "15 minutes ago" too.
    let s = match s.strip_prefix('-') {
        Some(rel) if rel.ends_with(|c: char| c.is_ascii_alphabetic()) => rel,
        _ => s,
    };
    if s.ends_with(|c: char| c.is_ascii_alphabetic()) && !s.contains(['T', ':']) {
        let d = tributary_common::config::parse_duration(s).map_err(|_| {
            format!(
                "`{s}` is not a time: use a duration back from now (15m, 2h, 7d), RFC 3339 (2026-12-04T10:00:00Z) or epoch milliseconds"
            )
        })?;
        let ms = i64::try_from(d.as_millis()).unwrap_or(i64::MAX);
        return Ok(now_ms.saturating_sub(ms));
    }
    parse_absolute(s).map_err(|e| {
        if e.contains("is not a time") {
            format!(
                "`{s}` is not a time: use a duration back from now (15m, 2h, 7d), RFC 3339 (2026-12-04T10:00:00Z) or epoch milliseconds"
            )
        } else {
            e
        }
    })
}

/// RFC 3339 or epoch milliseconds, from a URL: a `+` of a UTC offset that was not
/// percent-encoded arrives as a space and is taken back.
pub fn parse_absolute(s: &str) -> Result<i64, String> {
    tributary_common::timefmt::parse_ms(s).or_else(|e| {
        if s.contains(' ')
            && let Ok(ms) = tributary_common::timefmt::parse_ms(&s.replace(' ', "+"))
        {
            return Ok(ms);
        }
        // A date, or a date and time, without a zone: the server cannot know the
        // sender's zone, so it says what to add (the CLI adds the local one).
        let b = s.as_bytes();
        let dated =
            b.len() >= 10 && b[..4].iter().all(u8::is_ascii_digit) && b[4] == b'-' && b[7] == b'-';
        // `get`, not slicing: bytes 8 and 9 may be part of a multi-byte character.
        if dated
            && let (Some(date), Some(rest)) = (s.get(..10), s.get(10..))
            && !s.ends_with(['Z', 'z'])
            && !rest.contains(['+', '-'])
        {
            return Err(format!(
                "`{s}` has no time zone: add Z (UTC) or +hh:mm, e.g. {date}T00:00:00Z"
            ));
        }
        Err(e)
    })
}

impl Filter {
    /// Build from the query's strings; `now_ms` anchors relative times.
    pub fn parse(p: &QueryParams, now_ms: i64) -> Result<Filter, QueryError> {
        fn nonempty(v: &Option<String>) -> Option<&str> {
            v.as_deref().filter(|s| !s.is_empty())
        }
        let since_ms = nonempty(&p.since)
            .map(|s| parse_time(s, now_ms).map_err(|e| invalid(format!("bad `since`: {e}"))))
            .transpose()?;
        let until_ms = nonempty(&p.until)
            .map(|s| parse_time(s, now_ms).map_err(|e| invalid(format!("bad `until`: {e}"))))
            .transpose()?;
        let source = nonempty(&p.source)
            .map(|s| glob::Pattern::new(s).map_err(|e| invalid(format!("bad `source` glob: {e}"))))
            .transpose()?;
        let max_severity = nonempty(&p.severity)
            .map(|s| {
                severity_level(s).ok_or_else(|| {
                    invalid(format!(
                        "bad `severity` {s:?}: one of {} or 0-7",
                        SEVERITIES.join(", ")
                    ))
                })
            })
            .transpose()?;
        let contains =
            nonempty(&p.contains).map(|s| memmem::Finder::new(s.as_bytes()).into_owned());
        let regex = nonempty(&p.regex)
            .map(|s| {
                if s.len() > MAX_REGEX_LEN {
                    return Err(invalid(format!(
                        "`regex` longer than {MAX_REGEX_LEN} bytes"
                    )));
                }
                regex::bytes::RegexBuilder::new(s)
                    .size_limit(REGEX_SIZE_LIMIT)
                    .build()
                    .map_err(|e| invalid(format!("bad `regex`: {e}")))
            })
            .transpose()?;
        let mut fields = Vec::new();
        for (k, v) in &p.extra {
            let Some(path) = k.strip_prefix("field.") else {
                continue;
            };
            let path: Vec<String> = path.split('.').map(str::to_owned).collect();
            if path.iter().any(String::is_empty) {
                return Err(invalid(format!(
                    "bad field filter `{k}`: field.KEY or field.A.B=VALUE"
                )));
            }
            fields.push((path, v.clone()));
        }
        if fields.len() > MAX_FIELD_FILTERS {
            return Err(invalid(format!(
                "{} field filters; at most {MAX_FIELD_FILTERS}",
                fields.len()
            )));
        }
        Ok(Filter {
            since_ms,
            until_ms,
            host: nonempty(&p.host).map(str::to_owned),
            source,
            max_severity,
            contains,
            regex,
            fields,
        })
    }

    /// Whether `r` matches (time range included).
    pub fn matches(&self, r: &StoredRecord) -> bool {
        self.matches_parts(
            r.timestamp_ms,
            &r.block.host,
            &r.block.source,
            &r.message,
            &r.block.fields,
            &r.fields,
        )
    }

    /// [`matches`](Self::matches) on the parts of a record (also used by the CLI on
    /// records it received as JSON).
    pub fn matches_parts(
        &self,
        ts_ms: i64,
        host: &str,
        source: &str,
        message: &[u8],
        block_fields: &[u8],
        fields: &[u8],
    ) -> bool {
        if self.since_ms.is_some_and(|s| ts_ms < s) || self.until_ms.is_some_and(|u| ts_ms > u) {
            return false;
        }
        if self.host.as_deref().is_some_and(|h| h != host) {
            return false;
        }
        if let Some(p) = &self.source
            && !p.matches(source)
        {
            return false;
        }
        if let Some(f) = &self.contains
            && f.find(message).is_none()
        {
            return false;
        }
        if let Some(re) = &self.regex
            && !re.is_match(message)
        {
            return false;
        }
        if let Some(max) = self.max_severity {
            let level = severity_in(fields).or_else(|| severity_in(block_fields));
            if level.is_none_or(|l| l > max) {
                return false;
            }
        }
        for (path, want) in &self.fields {
            let got = field_value(fields, path).or_else(|| field_value(block_fields, path));
            if got.as_deref() != Some(want.as_str()) {
                return false;
            }
        }
        true
    }
}

/// The `severity` of a fields object (JSON bytes), if it has a known one.
pub(crate) fn severity_in(fields: &[u8]) -> Option<u8> {
    if fields.is_empty() || memmem::find(fields, b"\"severity\"").is_none() {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Sev<'a> {
        #[serde(borrow)]
        severity: Option<std::borrow::Cow<'a, str>>,
    }
    let v: Sev<'_> = serde_json::from_slice(fields).ok()?;
    severity_level(&v.severity?)
}

impl Query {
    /// Check the parameters; `now_ms` anchors relative times.
    pub fn parse(p: &QueryParams, now_ms: i64) -> Result<Query, QueryError> {
        let topic = p
            .topic
            .clone()
            .filter(|t| !t.is_empty())
            .ok_or_else(|| invalid("`topic` is required"))?;
        let limit = match p.limit.as_deref().filter(|s| !s.is_empty()) {
            None => DEFAULT_LIMIT,
            Some(s) => s
                .parse::<usize>()
                .ok()
                .filter(|n| (1..=MAX_LIMIT).contains(n))
                .ok_or_else(|| invalid(format!("bad `limit` {s:?}: 1 to {MAX_LIMIT}")))?,
        };
        let order = match p.order.as_deref().unwrap_or("asc") {
            "" | "asc" => Order::Asc,
            "desc" => Order::Desc,
            o => return Err(invalid(format!("bad `order` {o:?}: asc or desc"))),
        };
        let filter = Filter::parse(p, now_ms)?;
        if let (Some(s), Some(u)) = (filter.since_ms, filter.until_ms)
            && s > u
        {
            return Err(invalid("`since` is after `until`"));
        }
        Ok(Query {
            topic,
            filter,
            limit,
            order,
        })
    }
}
