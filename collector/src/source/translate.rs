//! Kafka records → our records (pure: no I/O).
//!
//! - **Written by a Tributary agent** (`output.kafka`): the headers `host`,
//!   `source`, `tributary.source_id` and `tributary.offset` give the record back
//!   its source and source offset, so the store deduplicates it like a record
//!   that came over ingest; `partial: 1` is the partial flag and every other
//!   header a field (values that read as JSON other than a string stay JSON, the
//!   rest are strings). A record with one of the `tributary.*` headers but not
//!   the others as they must be is refused ([`Malformed`]).
//! - **Anything else**: a synthetic source per Kafka topic-partition: host = the
//!   `host` header or `kafka`, source = `kafka:TOPIC/PARTITION`, source id =
//!   [`synthetic_source_id`], source offset = Kafka offset + 1 (the store drops
//!   offsets at or below the highest it holds, so offset 0 must not be 0), fields
//!   = the other headers and the key (as `key`).
//!
//! Agent records of sources without an id (syslog, `tributary.source_id: 0`)
//! cannot be deduplicated by their own offsets (all 0): they take the synthetic
//! source id and offset of the topic-partition, keeping their host and source.
//!
//! [`PayloadBuilder`] packs consecutive records of one source into one block.

use bytes::Bytes;
use kafka_protocol::protocol::StrBytes;
use kafka_protocol::records::Record;
use serde_json::{Map, Value};
use tributary_common::record::{BlockWriter, FLAG_PARTIAL};

pub const HOST: &str = "host";
pub const SOURCE: &str = "source";
pub const PARTIAL: &str = "partial";
pub const SOURCE_ID: &str = "tributary.source_id";
pub const OFFSET: &str = "tributary.offset";

/// The Kafka topic-partition records come from, and its synthetic source id.
#[derive(Debug, Clone)]
pub struct Origin {
    pub topic: String,
    pub partition: i32,
    pub source_id: u64,
    /// `kafka:TOPIC/PARTITION`.
    pub source: String,
}

impl Origin {
    /// `topic_id`: the topic's id when the brokers give one (Kafka 2.8+), so that
    /// a topic deleted and created again under the same name is a new source
    /// (its offsets start again at 0).
    pub fn new(topic: &str, partition: i32, topic_id: Option<[u8; 16]>) -> Origin {
        Origin {
            topic: topic.to_owned(),
            partition,
            source_id: synthetic_source_id(topic, partition, topic_id),
            source: format!("kafka:{topic}/{partition}"),
        }
    }
}

/// A stable, non-zero source id for the records of one Kafka topic-partition:
/// FNV-1a of the topic name, the partition and the topic id.
pub fn synthetic_source_id(topic: &str, partition: i32, topic_id: Option<[u8; 16]>) -> u64 {
    let mut bytes = b"kafka\0".to_vec();
    bytes.extend_from_slice(topic.as_bytes());
    bytes.push(0);
    bytes.extend_from_slice(&partition.to_le_bytes());
    if let Some(id) = topic_id {
        bytes.extend_from_slice(&id);
    }
    super::settings::fnv1a(&bytes).max(1)
}

/// One record as it will be stored.
#[derive(Debug, Clone, PartialEq)]
pub struct Translated {
    pub host: String,
    pub source: String,
    pub source_id: u64,
    pub flags: u8,
    pub timestamp_ms: i64,
    pub source_offset: u64,
    /// A JSON object, or empty.
    pub fields: Vec<u8>,
    pub message: Bytes,
}

/// Why a record with Tributary headers was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Malformed {
    #[error(
        "header `{0}` is missing (a record with tributary.* headers needs host, source, tributary.source_id and tributary.offset)"
    )]
    Missing(&'static str),
    #[error("header `{name}` is {what}")]
    Bad { name: &'static str, what: String },
    #[error("the Kafka offset {0} is negative")]
    Offset(i64),
    /// What it translates to does not make a valid record (a safety net: the
    /// translation builds only what validates).
    #[error("it does not make a valid record: {0}")]
    Invalid(String),
}

fn header<'a>(r: &'a Record, name: &'static str) -> Option<&'a Option<Bytes>> {
    r.headers.get(&StrBytes::from_static_str(name))
}

fn text<'a>(r: &'a Record, name: &'static str) -> Result<Option<&'a str>, Malformed> {
    match header(r, name) {
        None => Ok(None),
        Some(None) => Err(Malformed::Bad {
            name,
            what: "null".into(),
        }),
        Some(Some(v)) => std::str::from_utf8(v)
            .map(Some)
            .map_err(|_| Malformed::Bad {
                name,
                what: "not UTF-8".into(),
            }),
    }
}

fn decimal(r: &Record, name: &'static str) -> Result<u64, Malformed> {
    let v = text(r, name)?.ok_or(Malformed::Missing(name))?;
    if v.is_empty() || v.len() > 20 || !v.bytes().all(|b| b.is_ascii_digit()) {
        return Err(Malformed::Bad {
            name,
            what: format!("`{}`, not a decimal number", shorten(v)),
        });
    }
    v.parse().map_err(|_| Malformed::Bad {
        name,
        what: format!("`{v}`, larger than 64 bits"),
    })
}

fn shorten(s: &str) -> &str {
    let mut end = s.len().min(64);
    while !s.is_char_boundary(end) {
        end -= 1;
    }
    &s[..end]
}

/// The deepest nesting of arrays and objects a header's value keeps as JSON:
/// deeper, it stays a string. Well within what a record's fields may hold
/// (`tributary_common::json::MAX_DEPTH`, counting the fields object itself).
pub const MAX_FIELD_DEPTH: usize = 64;

/// How deep arrays and objects nest in `s` (JSON or not; strings skipped), up
/// to `MAX_FIELD_DEPTH + 1`: one pass, no allocation.
fn nesting(s: &str) -> usize {
    let (mut depth, mut deepest) = (0usize, 0usize);
    let (mut in_string, mut escaped) = (false, false);
    for b in s.bytes() {
        if in_string {
            if escaped {
                escaped = false;
            } else if b == b'\\' {
                escaped = true;
            } else if b == b'"' {
                in_string = false;
            }
            continue;
        }
        match b {
            b'"' => in_string = true,
            b'[' | b'{' => {
                depth += 1;
                deepest = deepest.max(depth);
                if deepest > MAX_FIELD_DEPTH {
                    break;
                }
            }
            b']' | b'}' => depth = depth.saturating_sub(1),
            _ => {}
        }
    }
    deepest
}

/// A header's value as a field: JSON when it reads as JSON other than a string
/// (and a number only when it keeps every digit, arrays and objects only when
/// nested at most [`MAX_FIELD_DEPTH`] deep), else the text.
pub fn field_value(v: Option<&Bytes>) -> Value {
    let Some(v) = v else {
        return Value::Null;
    };
    let Ok(s) = std::str::from_utf8(v) else {
        return Value::String(String::from_utf8_lossy(v).into_owned());
    };
    let looks_json = s
        .trim_start()
        .starts_with(|c: char| c == '{' || c == '[' || c == '-' || c.is_ascii_digit())
        || matches!(s.trim(), "true" | "false" | "null");
    if looks_json
        && nesting(s) <= MAX_FIELD_DEPTH
        && let Ok(j) = serde_json::from_str::<Value>(s)
    {
        match &j {
            Value::String(_) => {}
            // An integer beyond 64 bits would come back as an approximation.
            Value::Number(n) if n.is_f64() && !s.contains(['.', 'e', 'E']) => {}
            _ => return j,
        }
    }
    Value::String(s.to_owned())
}

/// The field an agent's header carries: `field.NAME` is the field NAME when NAME
/// is one of the headers that say where a record comes from (the agent renames
/// such fields so that none can pass for them), any other header its own name.
pub fn field_name(header: &str) -> &str {
    match header.strip_prefix("field.") {
        Some(n) if matches!(n, HOST | SOURCE | PARTIAL) || n.starts_with("tributary.") => n,
        _ => header,
    }
}

fn fields_json(fields: Map<String, Value>) -> Vec<u8> {
    if fields.is_empty() {
        return Vec::new();
    }
    serde_json::to_vec(&Value::Object(fields)).unwrap_or_default()
}

/// Translate one Kafka record of `origin` (`now_ms` replaces a missing timestamp).
pub fn translate(r: &Record, origin: &Origin, now_ms: i64) -> Result<Translated, Malformed> {
    if r.offset < 0 {
        return Err(Malformed::Offset(r.offset));
    }
    let kafka_offset = r.offset as u64 + 1;
    let timestamp_ms = if r.timestamp >= 0 {
        r.timestamp
    } else {
        now_ms
    };
    let message = r.value.clone().unwrap_or_default();
    let headered = header(r, SOURCE_ID).is_some() || header(r, OFFSET).is_some();
    let mut fields = Map::new();
    if headered {
        let source_id = decimal(r, SOURCE_ID)?;
        let offset = decimal(r, OFFSET)?;
        let host = text(r, HOST)?.ok_or(Malformed::Missing(HOST))?;
        if host.is_empty() {
            return Err(Malformed::Bad {
                name: HOST,
                what: "empty".into(),
            });
        }
        let source = text(r, SOURCE)?.ok_or(Malformed::Missing(SOURCE))?;
        let flags = match text(r, PARTIAL)? {
            None | Some("0") => 0,
            Some("1") => FLAG_PARTIAL,
            Some(other) => {
                return Err(Malformed::Bad {
                    name: PARTIAL,
                    what: format!("`{}`, not 1", shorten(other)),
                });
            }
        };
        for (name, value) in &r.headers {
            if matches!(name.as_str(), HOST | SOURCE | PARTIAL | SOURCE_ID | OFFSET) {
                continue;
            }
            fields.insert(
                field_name(name.as_str()).to_owned(),
                field_value(value.as_ref()),
            );
        }
        let (source_id, source_offset) = if source_id == 0 {
            (origin.source_id, kafka_offset)
        } else {
            (source_id, offset)
        };
        return Ok(Translated {
            host: host.to_owned(),
            source: source.to_owned(),
            source_id,
            flags,
            timestamp_ms,
            source_offset,
            fields: fields_json(fields),
            message,
        });
    }
    let host = match header(r, HOST) {
        Some(Some(h)) if !h.is_empty() => String::from_utf8_lossy(h).into_owned(),
        _ => "kafka".to_owned(),
    };
    for (name, value) in &r.headers {
        if name.as_str() == HOST {
            continue;
        }
        fields.insert(name.as_str().to_owned(), field_value(value.as_ref()));
    }
    if let Some(k) = &r.key
        && !fields.contains_key("key")
    {
        fields.insert(
            "key".into(),
            Value::String(String::from_utf8_lossy(k).into_owned()),
        );
    }
    Ok(Translated {
        host,
        source: origin.source.clone(),
        source_id: origin.source_id,
        flags: 0,
        timestamp_ms,
        source_offset: kafka_offset,
        fields: fields_json(fields),
        message,
    })
}

/// A payload of record blocks built record by record: consecutive records of
/// one source share a block while their source offsets grow. A record at or
/// below the offset before it (an agent's resend, right behind the original)
/// starts a new block: the store checks each block's first offset against what
/// came before and drops it there, but within a block it relies on offsets
/// that grow, as agents write them.
#[derive(Default)]
pub struct PayloadBuilder {
    buf: Vec<u8>,
    /// The open block: host, source, source id, its writer, its last offset.
    open: Option<(String, String, u64, BlockWriter, u64)>,
    records: u32,
}

impl PayloadBuilder {
    pub fn push(&mut self, t: &Translated) {
        let same = self.open.as_ref().is_some_and(|(h, s, id, _, last)| {
            *h == t.host && *s == t.source && *id == t.source_id && t.source_offset > *last
        });
        if !same {
            if let Some((_, _, _, w, _)) = self.open.take() {
                w.finish(&mut self.buf);
            }
            let w = BlockWriter::begin(&mut self.buf, &t.host, &t.source, t.source_id, b"");
            self.open = Some((t.host.clone(), t.source.clone(), t.source_id, w, 0));
        }
        if let Some((_, _, _, w, last)) = self.open.as_mut() {
            w.push(
                &mut self.buf,
                t.flags,
                t.timestamp_ms,
                t.source_offset,
                &t.fields,
                &t.message,
            );
            *last = t.source_offset;
        }
        self.records += 1;
    }

    /// Bytes so far.
    pub fn len(&self) -> usize {
        self.buf.len()
    }

    pub fn records(&self) -> u32 {
        self.records
    }

    pub fn is_empty(&self) -> bool {
        self.records == 0
    }

    /// The payload (empty without records).
    pub fn finish(mut self) -> Vec<u8> {
        if let Some((_, _, _, w, _)) = self.open.take() {
            w.finish(&mut self.buf);
        }
        self.buf
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use kafka_protocol::indexmap::IndexMap;
    use kafka_protocol::records::{
        NO_PARTITION_LEADER_EPOCH, NO_PRODUCER_EPOCH, NO_PRODUCER_ID, TimestampType,
    };
    use tributary_common::record::{self, BlockWriter};

    fn origin() -> Origin {
        Origin::new("app", 2, None)
    }

    fn plain(offset: i64, headers: &[(&str, Option<&str>)], value: Option<&str>) -> Record {
        let mut h = IndexMap::new();
        for (k, v) in headers {
            h.insert(
                StrBytes::from_string((*k).to_owned()),
                v.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            );
        }
        Record {
            transactional: false,
            control: false,
            partition_leader_epoch: NO_PARTITION_LEADER_EPOCH,
            producer_id: NO_PRODUCER_ID,
            producer_epoch: NO_PRODUCER_EPOCH,
            timestamp_type: TimestampType::Creation,
            offset,
            sequence: -1,
            timestamp: 1_700_000_000_123,
            key: None,
            value: value.map(|v| Bytes::copy_from_slice(v.as_bytes())),
            headers: h,
            delete_horizon: false,
        }
    }

    /// What an agent's Kafka output makes of a payload (`output.kafka`, as the
    /// agent documents it): key HOST:SOURCE_ID_HEX, headers host, source, the
    /// block's then the record's fields, partial, tributary.source_id,
    /// tributary.offset.
    fn agent_records(payload: &[u8]) -> Vec<Record> {
        let mut out = Vec::new();
        for b in record::blocks(payload, true) {
            let b = b.unwrap();
            let h = b.header;
            for r in b.records() {
                let r = r.unwrap();
                let mut headers = IndexMap::new();
                headers.insert(
                    StrBytes::from_static_str(HOST),
                    Some(Bytes::copy_from_slice(h.host.as_bytes())),
                );
                headers.insert(
                    StrBytes::from_static_str(SOURCE),
                    Some(Bytes::copy_from_slice(h.source.as_bytes())),
                );
                tributary_common::kafka::field_headers(&mut headers, h.fields);
                tributary_common::kafka::field_headers(&mut headers, r.fields);
                if r.flags & FLAG_PARTIAL != 0 {
                    headers.insert(
                        StrBytes::from_static_str(PARTIAL),
                        Some(Bytes::from_static(b"1")),
                    );
                }
                headers.insert(
                    StrBytes::from_static_str(SOURCE_ID),
                    Some(Bytes::from(h.source_id.to_string())),
                );
                headers.insert(
                    StrBytes::from_static_str(OFFSET),
                    Some(Bytes::from(r.source_offset.to_string())),
                );
                let mut k = plain(0, &[], None);
                k.key = Some(Bytes::from(format!("{}:{:016x}", h.host, h.source_id)));
                k.timestamp = r.timestamp_ms;
                k.value = Some(Bytes::copy_from_slice(r.message));
                k.headers = headers;
                out.push(k);
            }
        }
        out
    }

    /// Every record of a payload with its block's metadata and merged fields.
    /// Host, source, source id, partial flag, timestamp, offset, fields, message.
    type Flat = (String, String, u64, u8, i64, u64, Value, Vec<u8>);

    fn flatten(payload: &[u8]) -> Vec<Flat> {
        let mut out = Vec::new();
        for b in record::blocks(payload, true) {
            let b = b.unwrap();
            let h = b.header;
            for r in b.records() {
                let r = r.unwrap();
                let mut f = Map::new();
                for part in [h.fields, r.fields] {
                    if !part.is_empty() {
                        let v: Value = serde_json::from_slice(part).unwrap();
                        f.extend(v.as_object().unwrap().clone());
                    }
                }
                out.push((
                    h.host.to_owned(),
                    h.source.to_owned(),
                    h.source_id,
                    r.flags & FLAG_PARTIAL,
                    r.timestamp_ms,
                    r.source_offset,
                    Value::Object(f),
                    r.message.to_vec(),
                ));
            }
        }
        out
    }

    #[test]
    fn renamed_fields_come_back_under_their_names() {
        assert_eq!(field_name("field.host"), "host");
        assert_eq!(field_name("field.tributary.offset"), "tributary.offset");
        assert_eq!(
            field_name("field.env"),
            "field.env",
            "only our own names are renamed"
        );
        assert_eq!(field_name("env"), "env");
    }

    #[test]
    fn agent_records_come_back_as_they_were_sent() {
        // What an agent ships: blocks with static and per-record fields, a
        // partial piece, two sources.
        let mut sent = Vec::new();
        let mut w = BlockWriter::begin(
            &mut sent,
            "web-01",
            "/var/log/app.log",
            77,
            br#"{"env":"prod","rack":3}"#,
        );
        w.push(&mut sent, 0, 1000, 0, b"", b"first line");
        w.push(
            &mut sent,
            FLAG_PARTIAL,
            1001,
            11,
            br#"{"severity":"err","ok":true,"n":1.5,"tags":["a"]}"#,
            b"a long line, piece one",
        );
        w.push(&mut sent, 0, 1002, 40, br#"{"id":"0042"}"#, b"");
        w.finish(&mut sent);
        let mut w = BlockWriter::begin(&mut sent, "db-02", "/var/log/pg.log", 9, b"");
        w.push(&mut sent, 0, 2000, 5, b"", b"checkpoint");
        w.finish(&mut sent);

        let kafka = agent_records(&sent);
        let mut b = PayloadBuilder::default();
        for (i, r) in kafka.iter().enumerate() {
            let r = Record {
                offset: 100 + i as i64,
                ..r.clone()
            };
            b.push(&translate(&r, &origin(), 0).unwrap());
        }
        assert_eq!(b.records(), 4);
        let got = b.finish();
        record::summarize(&got).expect("a valid payload");
        assert_eq!(
            record::blocks(&got, true).count(),
            2,
            "one block per source"
        );
        let got = flatten(&got);
        let want = flatten(&sent);
        // Strings that read as other JSON come back as that JSON ("0042" is not
        // a JSON number, so it stays a string).
        assert_eq!(got, want);
    }

    #[test]
    fn a_resent_record_starts_a_new_block() {
        // Each record twice in a row (an agent resending): offsets within a block
        // always grow, so the store's per-block check sees every copy.
        let mut sent = Vec::new();
        let mut w = BlockWriter::begin(&mut sent, "web-01", "/a.log", 5, b"");
        for off in [0u64, 10, 20] {
            w.push(&mut sent, 0, 1000, off, b"", b"line");
        }
        w.finish(&mut sent);
        let mut b = PayloadBuilder::default();
        for r in agent_records(&sent) {
            let t = translate(&r, &origin(), 0).unwrap();
            b.push(&t);
            b.push(&t);
        }
        let got = b.finish();
        let mut blocks = Vec::new();
        for block in record::blocks(&got, true) {
            let offsets: Vec<u64> = block
                .unwrap()
                .records()
                .map(|r| r.unwrap().source_offset)
                .collect();
            assert!(offsets.windows(2).all(|w| w[0] < w[1]), "{offsets:?}");
            blocks.push(offsets);
        }
        assert_eq!(blocks, vec![vec![0], vec![0, 10], vec![10, 20], vec![20]]);
    }

    #[test]
    fn syslog_records_of_agents_take_the_partition_as_source() {
        let r = plain(
            7,
            &[
                ("host", Some("fw-1")),
                ("source", Some("syslog+udp://10.0.0.1")),
                ("facility", Some("daemon")),
                ("tributary.source_id", Some("0")),
                ("tributary.offset", Some("0")),
            ],
            Some("link up"),
        );
        let t = translate(&r, &origin(), 0).unwrap();
        assert_eq!(
            (t.host.as_str(), t.source.as_str()),
            ("fw-1", "syslog+udp://10.0.0.1")
        );
        assert_eq!(t.source_id, origin().source_id);
        assert_eq!(t.source_offset, 8);
    }

    #[test]
    fn other_producers_get_a_source_per_partition() {
        let mut r = plain(
            0,
            &[
                ("trace", Some("abc")),
                ("attempt", Some("3")),
                ("big", Some("123456789012345678901234567890")),
                ("nothing", None),
            ],
            None,
        );
        r.key = Some(Bytes::from_static(b"user-9"));
        r.timestamp = -1;
        let t = translate(&r, &origin(), 55).unwrap();
        assert_eq!(t.host, "kafka");
        assert_eq!(t.source, "kafka:app/2");
        assert_eq!(t.source_id, synthetic_source_id("app", 2, None));
        assert_ne!(t.source_id, 0);
        assert_eq!(t.source_offset, 1, "Kafka offset 0 is stored as 1");
        assert_eq!(t.timestamp_ms, 55);
        assert!(t.message.is_empty());
        let f: Value = serde_json::from_slice(&t.fields).unwrap();
        assert_eq!(
            f,
            serde_json::json!({"trace": "abc", "attempt": 3, "big": "123456789012345678901234567890", "nothing": null, "key": "user-9"})
        );
        let with_host = plain(4, &[("host", Some("edge-7"))], Some("x"));
        let t = translate(&with_host, &origin(), 0).unwrap();
        assert_eq!((t.host.as_str(), t.fields.is_empty()), ("edge-7", true));
        assert_eq!(t.timestamp_ms, 1_700_000_000_123);

        // Another partition, another topic, another topic id: other sources.
        let ids = [
            synthetic_source_id("app", 2, None),
            synthetic_source_id("app", 3, None),
            synthetic_source_id("ap", 2, None),
            synthetic_source_id("app", 2, Some([7; 16])),
        ];
        for (i, a) in ids.iter().enumerate() {
            for b in &ids[i + 1..] {
                assert_ne!(a, b);
            }
        }
    }

    #[test]
    fn malformed_tributary_headers_are_refused() {
        let full = |over: &[(&str, Option<&str>)]| {
            let mut h = vec![
                ("host", Some("web-01")),
                ("source", Some("/a.log")),
                ("tributary.source_id", Some("12")),
                ("tributary.offset", Some("99")),
            ];
            for (k, v) in over {
                match h.iter_mut().find(|(n, _)| n == k) {
                    Some(slot) => slot.1 = *v,
                    None => h.push((k, *v)),
                }
            }
            h.retain(|(_, v)| *v != Some("<drop>"));
            plain(3, &h, Some("m"))
        };
        assert!(translate(&full(&[]), &origin(), 0).is_ok());
        for (over, want) in [
            (
                vec![("tributary.offset", Some("<drop>"))],
                Malformed::Missing(OFFSET),
            ),
            (vec![("host", Some("<drop>"))], Malformed::Missing(HOST)),
            (vec![("source", Some("<drop>"))], Malformed::Missing(SOURCE)),
        ] {
            assert_eq!(translate(&full(&over), &origin(), 0).unwrap_err(), want);
        }
        for over in [
            vec![("tributary.source_id", Some("-1"))],
            vec![("tributary.source_id", Some("12x"))],
            vec![("tributary.offset", Some("99999999999999999999"))],
            vec![("tributary.offset", None)],
            vec![("host", Some(""))],
            vec![("partial", Some("yes"))],
        ] {
            let e = translate(&full(&over), &origin(), 0).unwrap_err();
            assert!(matches!(e, Malformed::Bad { .. }), "{over:?}: {e}");
        }
        let mut bad_utf8 = full(&[]);
        bad_utf8.headers.insert(
            StrBytes::from_static_str("source"),
            Some(Bytes::from_static(&[0xff, 0xfe])),
        );
        assert!(translate(&bad_utf8, &origin(), 0).is_err());
        assert_eq!(
            translate(&plain(-1, &[], None), &origin(), 0).unwrap_err(),
            Malformed::Offset(-1)
        );
    }

    #[test]
    fn a_deeply_nested_header_value_stays_a_string() {
        // 127 levels: serde_json reads it, but inside the fields object it is 128,
        // which no payload may hold.
        let deep = format!("{}{}", "[".repeat(127), "]".repeat(127));
        for r in [
            plain(0, &[("h", Some(&deep))], Some("line")),
            plain(
                1,
                &[
                    ("host", Some("web-01")),
                    ("source", Some("/a.log")),
                    ("tributary.source_id", Some("5")),
                    ("tributary.offset", Some("1")),
                    ("h", Some(&deep)),
                ],
                Some("line"),
            ),
        ] {
            let t = translate(&r, &origin(), 0).unwrap();
            let f: Value = serde_json::from_slice(&t.fields).unwrap();
            assert_eq!(f["h"], Value::String(deep.clone()));
            let mut b = PayloadBuilder::default();
            b.push(&t);
            let s = record::summarize(&b.finish()).expect("a valid payload");
            assert_eq!(s.records, 1);
        }
    }

    #[test]
    fn field_values() {
        let v = |s: &str| field_value(Some(&Bytes::copy_from_slice(s.as_bytes())));
        assert_eq!(v("42"), serde_json::json!(42));
        assert_eq!(v("-1.5"), serde_json::json!(-1.5));
        assert_eq!(v("true"), serde_json::json!(true));
        assert_eq!(v("{\"a\": 1}"), serde_json::json!({"a": 1}));
        assert_eq!(v("\"quoted\""), serde_json::json!("\"quoted\""));
        assert_eq!(v("007"), serde_json::json!("007"));
        assert_eq!(v("plain text"), serde_json::json!("plain text"));
        assert_eq!(
            v("18446744073709551616"),
            serde_json::json!("18446744073709551616")
        );
        assert_eq!(field_value(None), Value::Null);
        // Nested deeper than a record's fields may hold (serde_json reads up to
        // 127 levels; inside the fields object that is one too many): a string.
        for (depth, json) in [(64, true), (65, false), (127, false), (128, false)] {
            let s = format!("{}{}", "[".repeat(depth), "]".repeat(depth));
            assert_eq!(v(&s).is_array(), json, "{depth}");
            assert_eq!(v(&s).is_string(), !json, "{depth}");
        }
        let s = format!(
            "{{\"a\":\"{}\",\"b\":{}1{}}}",
            "[".repeat(99),
            "[".repeat(63),
            "]".repeat(63)
        );
        assert!(v(&s).is_object(), "brackets in strings do not count");
        assert_eq!(
            field_value(Some(&Bytes::from_static(&[b'a', 0xff]))),
            serde_json::json!("a\u{fffd}")
        );
    }
}
