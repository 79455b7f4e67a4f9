//! Queries over the centralized logs (`GET /v1/query`, `tributary query`): filter
//! the records of one topic and merge its partitions by timestamp.
//!
//! - [`Filter`] is the predicate (time range, host, source glob, severity,
//!   substring, regex). The CLI's `--follow` applies the same one to new records.
//! - [`run`] plans per partition with the time index (`since` and `until` become an
//!   offset range through `Partition::offset_for_timestamp`, so segments outside the
//!   range are never read), scans the partitions in parallel in bounded steps, and
//!   merges their heads by timestamp until `limit` matches are out or the deadline
//!   passes. Memory is bounded by the per-partition buffers, never by the topic.
//!
//! Time ranges follow the time index (Kafka's semantics for event times): a
//! partition is read from the first batch holding a record at or after `since` to
//! the first batch holding one after `until`; within that range every record is
//! checked. A record that arrived far out of time order, outside those batches, is
//! not found by a time-bounded query. Within a partition records come in offset
//! order, so the merge is by timestamp exactly when each partition is in time
//! order (file lines and most syslog traffic).

use std::collections::VecDeque;
use std::sync::Arc;
use std::time::{Duration, Instant};

use memchr::memmem;
use tributary_store::{Error as StoreError, Partition, StoredRecord, Topic};

/// Most records one query returns.
pub const MAX_LIMIT: usize = 10_000;
/// Records returned when `limit` is not given.
pub const DEFAULT_LIMIT: usize = 100;
/// Records read per partition per step.
const STEP_RECORDS: usize = 2048;
/// Payload bytes read per partition per step.
const STEP_BYTES: usize = 1 << 20;

/// Why a query cannot run.
#[derive(Debug, thiserror::Error)]
pub enum QueryError {
    #[error("{0}")]
    Invalid(String),
    #[error(transparent)]
    Store(#[from] StoreError),
}

fn invalid(msg: impl Into<String>) -> QueryError {
    QueryError::Invalid(msg.into())
}

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
}

/// A checked query.
#[derive(Debug, Clone)]
pub struct Query {
    pub topic: String,
    pub filter: Filter,
    pub limit: usize,
    pub order: Order,
}

/// Syslog severities, most severe first (RFC 5424 numbering).
const SEVERITIES: [&str; 8] = [
    "emerg", "alert", "crit", "err", "warning", "notice", "info", "debug",
];

/// The severity number of a name (with the usual aliases) or digit.
pub fn severity_level(s: &str) -> Option<u8> {
    let s = s.trim().to_ascii_lowercase();
    let alias = match s.as_str() {
        "emergency" | "panic" => "emerg",
        "critical" => "crit",
        "error" => "err",
        "warn" => "warning",
        "informational" => "info",
        other => other,
    };
    if let Some(i) = SEVERITIES.iter().position(|n| *n == alias) {
        return Some(i as u8);
    }
    s.parse::<u8>().ok().filter(|n| *n < 8)
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
        Ok(Filter {
            since_ms,
            until_ms,
            host: nonempty(&p.host).map(str::to_owned),
            source,
            max_severity,
            contains,
            regex,
        })
    }

    /// Whether `r` matches (time range included).
    pub fn matches(&self, r: &StoredRecord) -> bool {
        self.matches_parts(
            r.timestamp_ms,
            &r.host,
            &r.source,
            &r.message,
            &r.block_fields,
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
        true
    }
}

/// The `severity` of a fields object (JSON bytes), if it has a known one.
fn severity_in(fields: &[u8]) -> Option<u8> {
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

/// What a query found.
#[derive(Debug, Default)]
pub struct QueryResult {
    /// (partition, record), merged in the query's order.
    pub records: Vec<(u32, StoredRecord)>,
    /// Records read and checked.
    pub scanned_records: u64,
    /// Message bytes of the records read.
    pub scanned_bytes: u64,
    /// False when the deadline cut the scan short (the records are still ordered,
    /// but more may match).
    pub complete: bool,
    /// Per partition, the end offset when the query started (where `--follow`
    /// continues).
    pub end_offsets: Vec<(u32, u64)>,
}

/// One partition's scan: an offset range read in steps, its matches buffered.
struct Cursor {
    partition: Arc<Partition>,
    /// Next offset to read (asc) or one past the next to read (desc).
    next: u64,
    lo: u64,
    hi: u64,
    buf: VecDeque<StoredRecord>,
    done: bool,
    scanned_records: u64,
    scanned_bytes: u64,
}

impl Cursor {
    fn plan(partition: Arc<Partition>, f: &Filter, order: Order) -> Result<Cursor, QueryError> {
        let end = partition.end_offset();
        let start = partition.start_offset();
        let lo = match f.since_ms {
            Some(s) => partition.offset_for_timestamp(s)?.map_or(end, |t| t.offset),
            None => start,
        };
        let hi = match f.until_ms {
            Some(u) => partition
                .offset_for_timestamp(u.saturating_add(1))?
                .map_or(end, |t| t.offset)
                // The batch holding the first newer record may hold older ones too.
                .saturating_add(STEP_RECORDS as u64)
                .min(end),
            None => end,
        };
        let lo = lo.max(start);
        Ok(Cursor {
            partition,
            next: if order == Order::Asc { lo } else { hi },
            lo,
            hi,
            buf: VecDeque::new(),
            done: lo >= hi,
            scanned_records: 0,
            scanned_bytes: 0,
        })
    }

    /// Read steps until some matches are buffered, the range is done, or about
    /// `budget` bytes were read.
    fn fill(&mut self, f: &Filter, order: Order, budget: usize) -> Result<(), StoreError> {
        let mut read = 0usize;
        while !self.done && self.buf.is_empty() && read < budget {
            // Retention may have deleted the start of the range meanwhile.
            let start = self.partition.start_offset();
            if start > self.lo {
                self.lo = start;
                if order == Order::Asc {
                    self.next = self.next.max(start);
                }
            }
            // One step covers the window [from, to); ascending steps may stop early
            // at the byte budget. Descending windows are sized from the average
            // record seen so far, so a window of huge records stays small.
            let window = match self.scanned_bytes.checked_div(self.scanned_records) {
                Some(avg) => ((4 * STEP_BYTES) as u64 / avg.max(1)).clamp(1, STEP_RECORDS as u64),
                None => 64,
            };
            let (from, to) = match order {
                Order::Asc => (self.next, self.hi.min(self.next + STEP_RECORDS as u64)),
                Order::Desc => (self.next.saturating_sub(window).max(self.lo), self.next),
            };
            if from >= to {
                self.done = true;
                break;
            }
            let mut matched = Vec::new();
            let mut at = from;
            while at < to {
                let r = match self.partition.read(at, (to - at) as usize, STEP_BYTES) {
                    Ok(r) => r,
                    Err(StoreError::OffsetOutOfRange { start, .. }) if start > at => {
                        at = start;
                        continue;
                    }
                    Err(e) => return Err(e),
                };
                if r.records.is_empty() {
                    break;
                }
                at = r.next_offset;
                for rec in &r.records {
                    read += rec.message.len() + rec.fields.len();
                    self.scanned_bytes += rec.message.len() as u64;
                }
                self.scanned_records += r.records.len() as u64;
                matched.extend(r.records.into_iter().filter(|x| f.matches(x)));
                if order == Order::Asc && read >= budget {
                    break;
                }
            }
            match order {
                Order::Asc => {
                    self.buf.extend(matched);
                    // `at` is where reading stopped (the budget, or `to`).
                    self.next = if at > from { at } else { to };
                    self.done = self.next >= self.hi;
                }
                Order::Desc => {
                    self.buf.extend(matched.into_iter().rev());
                    self.next = from;
                    self.done = self.next <= self.lo;
                }
            }
        }
        Ok(())
    }
}

/// Run `q` over `topic`, at most until `deadline`.
pub fn run(topic: &Topic, q: &Query, deadline: Instant) -> Result<QueryResult, QueryError> {
    let mut result = QueryResult {
        complete: true,
        ..Default::default()
    };
    let mut cursors = Vec::new();
    for p in topic.partitions() {
        result.end_offsets.push((p.id(), p.end_offset()));
        cursors.push(Cursor::plan(p.clone(), &q.filter, q.order)?);
    }
    'merge: while result.records.len() < q.limit {
        // Every live cursor needs a head before the smallest can be chosen; fill
        // the empty ones in parallel.
        loop {
            let empty: Vec<usize> = (0..cursors.len())
                .filter(|&i| cursors[i].buf.is_empty() && !cursors[i].done)
                .collect();
            if empty.is_empty() {
                break;
            }
            if Instant::now() >= deadline {
                result.complete = false;
                break 'merge;
            }
            fill_parallel(&mut cursors, &empty, &q.filter, q.order)?;
        }
        let best = cursors
            .iter()
            .enumerate()
            .filter_map(|(i, c)| c.buf.front().map(|r| (i, r.timestamp_ms, c.partition.id())))
            .reduce(|a, b| {
                let better = match q.order {
                    Order::Asc => (b.1, b.2) < (a.1, a.2),
                    Order::Desc => (b.1, std::cmp::Reverse(b.2)) > (a.1, std::cmp::Reverse(a.2)),
                };
                if better { b } else { a }
            });
        let Some((i, _, pid)) = best else {
            break;
        };
        if let Some(r) = cursors[i].buf.pop_front() {
            result.records.push((pid, r));
        }
    }
    for c in &cursors {
        result.scanned_records += c.scanned_records;
        result.scanned_bytes += c.scanned_bytes;
    }
    Ok(result)
}

/// Fill the cursors `which`, one thread each (the machine's cores scan partitions
/// side by side); one cursor is filled on this thread.
fn fill_parallel(
    cursors: &mut [Cursor],
    which: &[usize],
    f: &Filter,
    order: Order,
) -> Result<(), StoreError> {
    let budget = 8 * STEP_BYTES;
    if which.len() == 1 {
        return cursors[which[0]].fill(f, order, budget);
    }
    let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
    let mut picked: Vec<&mut Cursor> = cursors
        .iter_mut()
        .enumerate()
        .filter(|(i, _)| which.contains(i))
        .map(|(_, c)| c)
        .collect();
    let per = picked.len().div_ceil(threads);
    std::thread::scope(|s| {
        let handles: Vec<_> = picked
            .chunks_mut(per)
            .map(|group| {
                s.spawn(move || -> Result<(), StoreError> {
                    for c in group {
                        c.fill(f, order, budget)?;
                    }
                    Ok(())
                })
            })
            .collect();
        let mut first_err = None;
        for h in handles {
            match h.join() {
                Ok(Ok(())) => {}
                Ok(Err(e)) => {
                    first_err.get_or_insert(e);
                }
                Err(_) => {
                    first_err.get_or_insert(StoreError::Io {
                        op: "query scan thread",
                        path: std::path::PathBuf::new(),
                        source: std::io::Error::other("scan thread panicked"),
                    });
                }
            }
        }
        first_err.map_or(Ok(()), Err)
    })
}

/// Scanning a query must end: the default deadline of `/v1/query`.
pub const DEFAULT_DEADLINE: Duration = Duration::from_secs(30);

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_common::record::{BlockWriter, summarize};
    use tributary_store::{Store, StoreOptions, TopicConfig};

    const T0: i64 = 1_795_600_000_000;

    /// Append one block per call: `(ts, message, fields)` records of one host/source.
    fn append(p: &Partition, host: &str, source: &str, recs: &[(i64, &str, &str)]) {
        let mut payload = Vec::new();
        let mut b = BlockWriter::begin(&mut payload, host, source, 0, b"");
        for (i, (ts, msg, fields)) in recs.iter().enumerate() {
            b.push(
                &mut payload,
                0,
                *ts,
                i as u64,
                fields.as_bytes(),
                msg.as_bytes(),
            );
        }
        b.finish(&mut payload);
        let summary = summarize(&payload).unwrap();
        p.append(&payload, &summary).unwrap();
    }

    /// Three partitions; partition p holds records at T0 + (3i + p) seconds, i < 1000,
    /// in blocks of 50; every 10th is "error", hosts alternate, syslog severities
    /// on partition 2.
    fn store() -> (tempfile::TempDir, Arc<Topic>) {
        let dir = tempfile::tempdir().unwrap();
        let store = Store::open(dir.path(), StoreOptions::default()).unwrap();
        let topic = store
            .create_topic(
                "app",
                TopicConfig {
                    partitions: 3,
                    segment_bytes: 16 << 10,
                },
            )
            .unwrap();
        for (pi, p) in topic.partitions().iter().enumerate() {
            for block in 0..20 {
                let msgs: Vec<(i64, String, String)> = (0..50)
                    .map(|j| {
                        let i = block * 50 + j;
                        let ts = T0 + (3 * i + pi as i64) * 1000;
                        let kind = if i % 10 == 0 { "error" } else { "ok" };
                        let fields = if pi == 2 {
                            let sev = if i % 10 == 0 { "err" } else { "info" };
                            format!(r#"{{"severity":"{sev}"}}"#)
                        } else {
                            String::new()
                        };
                        (ts, format!("p{pi} i={i:04} {kind}"), fields)
                    })
                    .collect();
                let recs: Vec<(i64, &str, &str)> = msgs
                    .iter()
                    .map(|(t, m, f)| (*t, m.as_str(), f.as_str()))
                    .collect();
                let host = if block % 2 == 0 { "web-01" } else { "web-02" };
                append(p, host, &format!("/var/log/app{pi}.log"), &recs);
            }
        }
        (dir, topic)
    }

    fn q(params: &[(&str, &str)]) -> Query {
        let mut p = QueryParams {
            topic: Some("app".into()),
            ..Default::default()
        };
        for (k, v) in params {
            let v = Some(v.to_string());
            match *k {
                "since" => p.since = v,
                "until" => p.until = v,
                "host" => p.host = v,
                "source" => p.source = v,
                "severity" => p.severity = v,
                "contains" => p.contains = v,
                "regex" => p.regex = v,
                "limit" => p.limit = v,
                "order" => p.order = v,
                _ => panic!("{k}"),
            }
        }
        Query::parse(&p, T0 + 10_000_000).unwrap()
    }

    fn go(topic: &Topic, query: &Query) -> QueryResult {
        run(topic, query, Instant::now() + Duration::from_secs(30)).unwrap()
    }

    fn msgs(r: &QueryResult) -> Vec<String> {
        r.records
            .iter()
            .map(|(_, x)| String::from_utf8_lossy(&x.message).into_owned())
            .collect()
    }

    #[test]
    fn merges_partitions_by_time_and_counts_exactly() {
        let (_d, topic) = store();
        let r = go(&topic, &q(&[("limit", "10000")]));
        assert_eq!(r.records.len(), 3000);
        assert!(r.complete);
        assert!(
            r.records
                .windows(2)
                .all(|w| w[0].1.timestamp_ms < w[1].1.timestamp_ms)
        );
        assert_eq!(
            &msgs(&r)[..3],
            ["p0 i=0000 error", "p1 i=0000 error", "p2 i=0000 error"]
        );

        let r = go(&topic, &q(&[("contains", "error"), ("limit", "10000")]));
        assert_eq!(r.records.len(), 300);
        let r = go(
            &topic,
            &q(&[("regex", r"^p1 i=00[0-4]\d error$"), ("limit", "10000")]),
        );
        assert_eq!(r.records.len(), 5);
        let r = go(&topic, &q(&[("host", "web-02"), ("limit", "10000")]));
        assert_eq!(r.records.len(), 1500);
        let r = go(
            &topic,
            &q(&[("source", "/var/log/app[01].log"), ("limit", "10000")]),
        );
        assert_eq!(r.records.len(), 2000);
        let r = go(&topic, &q(&[("severity", "warning"), ("limit", "10000")]));
        assert_eq!(r.records.len(), 100, "err on partition 2 only");
        let r = go(&topic, &q(&[("severity", "debug"), ("limit", "10000")]));
        assert_eq!(r.records.len(), 1000, "every record with a severity");
        let r = go(&topic, &q(&[("contains", "no such text")]));
        assert!(r.records.is_empty() && r.complete);
        assert_eq!(r.scanned_records, 3000);
    }

    #[test]
    fn time_ranges_use_the_index_and_order_and_limit_hold() {
        let (_d, topic) = store();
        // Records 100..=199 of the merged stream: T0+100s ..= T0+199s.
        let since = (T0 + 100_000).to_string();
        let until = (T0 + 199_000).to_string();
        let r = go(
            &topic,
            &q(&[("since", &since), ("until", &until), ("limit", "10000")]),
        );
        assert_eq!(r.records.len(), 100);
        assert_eq!(r.records[0].1.timestamp_ms, T0 + 100_000);
        assert!(
            r.scanned_records < 3000,
            "the time index skipped most: {}",
            r.scanned_records
        );

        let r = go(
            &topic,
            &q(&[
                ("since", &since),
                ("until", &until),
                ("order", "desc"),
                ("limit", "7"),
            ]),
        );
        let ts: Vec<i64> = r.records.iter().map(|(_, x)| x.timestamp_ms - T0).collect();
        assert_eq!(
            ts,
            [
                199_000, 198_000, 197_000, 196_000, 195_000, 194_000, 193_000
            ]
        );

        let r = go(
            &topic,
            &q(&[("order", "desc"), ("limit", "2"), ("contains", "error")]),
        );
        assert_eq!(msgs(&r), ["p2 i=0990 error", "p1 i=0990 error"]);

        // A window that matches nothing: before the first record, after the last.
        let before = (T0 - 10_000).to_string();
        let r = go(&topic, &q(&[("until", &before)]));
        assert!(r.records.is_empty());
        let after = (T0 + 4_000_000).to_string();
        let r = go(&topic, &q(&[("since", &after)]));
        assert!(r.records.is_empty());
        assert_eq!(r.scanned_records, 0);
        // Relative, from now = T0 + 10,000 s: the last hour holds nothing; the last
        // 8,000 s hold the records from T0 + 2,000 s on.
        let r = go(&topic, &q(&[("since", "1h")]));
        assert!(r.records.is_empty());
        let r = go(&topic, &q(&[("since", "8000s"), ("limit", "10000")]));
        assert_eq!(r.records.len(), 3000 - 2000);
    }

    #[test]
    fn bad_parameters_are_clear_errors() {
        let bad = |k: &str, v: &str| {
            let mut p = QueryParams {
                topic: Some("app".into()),
                ..Default::default()
            };
            match k {
                "since" => p.since = Some(v.into()),
                "regex" => p.regex = Some(v.into()),
                "limit" => p.limit = Some(v.into()),
                "order" => p.order = Some(v.into()),
                "severity" => p.severity = Some(v.into()),
                "source" => p.source = Some(v.into()),
                _ => unreachable!(),
            }
            Query::parse(&p, T0).unwrap_err().to_string()
        };
        assert!(bad("since", "yesterday").contains("since"));
        assert!(bad("regex", "(unclosed").contains("regex"));
        assert!(bad("limit", "0").contains("limit"));
        assert!(bad("limit", "100001").contains("limit"));
        assert!(bad("order", "up").contains("order"));
        assert!(bad("severity", "loud").contains("severity"));
        assert!(bad("source", "[").contains("source"));
        assert!(
            Query::parse(&QueryParams::default(), T0)
                .unwrap_err()
                .to_string()
                .contains("topic")
        );
        assert_eq!(parse_time("15m", 1_000_000).unwrap(), 100_000);
        assert_eq!(
            parse_time("2026-11-25T14:01:34Z", 0).unwrap(),
            1_795_615_294_000
        );
        assert_eq!(severity_level("ERROR"), Some(3));
        assert_eq!(severity_level("4"), Some(4));
    }
}
