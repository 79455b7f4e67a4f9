//! `parse: json` on a file input: a line that is a JSON object becomes a record
//! whose fields are the object's keys (nested objects stay objects), whose message
//! is the value of `message_key` (default the first of `message`, `msg`, `log`
//! present; the whole line when none is) and whose time is the value of
//! `timestamp_key` (default the first of `timestamp`, `time`, `ts`, `@timestamp`)
//! when it is RFC 3339 or epoch seconds or milliseconds. A `level` or `severity`
//! naming a syslog severity (`error`, `WARN`, `info`, `3` …) also sets
//! `fields.severity` to its syslog name, so `--severity` and the console's
//! histogram know it. A line that is not a JSON object is kept as it is, with
//! `fields.parse_error` saying why.

use std::borrow::Cow;

use serde_json::{Map, Value};
use tributary_common::json::{self, NotObject};
use tributary_common::names::{severity_level, severity_name};

/// The settings of `parse: json`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct JsonParse {
    pub message_key: Option<String>,
    pub timestamp_key: Option<String>,
}

const MESSAGE_KEYS: [&str; 3] = ["message", "msg", "log"];
const TIME_KEYS: [&str; 4] = ["timestamp", "time", "ts", "@timestamp"];

/// One parsed line: its message (`None`: the line as it is), fields (a JSON
/// object, encoded) and event time when the line carries one.
#[derive(Debug, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub message: Option<Cow<'a, [u8]>>,
    pub fields: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

/// A JSON string's text (borrowed when it has no escapes), `None` for other values.
fn str_of(raw: &str) -> Option<Cow<'_, str>> {
    let inner = raw.strip_prefix('"')?.strip_suffix('"')?;
    if inner.contains('\\') {
        serde_json::from_str::<String>(raw).ok().map(Cow::Owned)
    } else {
        Some(Cow::Borrowed(inner))
    }
}

/// The time a value names: RFC 3339 text, or epoch seconds or milliseconds.
fn time_of(raw: &str) -> Option<i64> {
    if let Some(s) = str_of(raw) {
        return tributary_common::timefmt::parse_ms(&s).ok();
    }
    if !raw.starts_with(|c: char| c == '-' || c.is_ascii_digit()) {
        return None;
    }
    let f: f64 = raw.parse().ok()?;
    // Seconds until the year 5138, milliseconds after.
    let ms = if f.abs() < 1e11 { f * 1000.0 } else { f };
    (ms.is_finite() && ms.abs() < 1e15).then_some(ms as i64)
}

/// A syslog severity named by a `level`/`severity` value (`"error"`, `"WARN"`, `3`).
fn level_of(raw: &str) -> Option<u8> {
    match str_of(raw) {
        Some(s) => severity_level(&s),
        None => raw.parse::<u8>().ok().filter(|n| *n <= 7),
    }
}

/// One top-level member: its key's name (borrowed when it has no escapes) and
/// JSON text, its value's JSON text, and a tag (length and first and last byte of
/// the name) that tells most different names apart without comparing them.
struct Member<'a> {
    name: Cow<'a, str>,
    tag: u64,
    key: &'a str,
    value: &'a str,
}

/// Where the members a line's record is made of are: the message, the time and
/// the level (by the rank of the key that named them) and which members a later
/// one of the same name hides (JSON readers keep the last).
struct Roles {
    message: [Option<usize>; 3],
    time: [Option<usize>; 4],
    level: [Option<usize>; 2],
}

/// A top-level object's members. Nothing nested is built: a line's fields are
/// written back from the text as it came.
struct Members<'a>(Vec<Member<'a>>);

impl<'a> Members<'a> {
    /// The members of `text` in one validating pass, or why it is not an object.
    fn parse(text: &'a str) -> Result<Members<'a>, String> {
        let mut out = Vec::with_capacity(16);
        let mut bad_key = None;
        let found = json::object_members(text, |m| {
            let name = match m.plain_key() {
                Some(k) => Cow::Borrowed(k),
                None => match serde_json::from_str::<String>(m.key) {
                    Ok(k) => Cow::Owned(k),
                    Err(e) => {
                        bad_key.get_or_insert_with(|| format!("not JSON: key {}: {e}", m.key));
                        return;
                    }
                },
            };
            let b = name.as_bytes();
            let edge = |c: Option<&u8>| u64::from(c.copied().unwrap_or(0));
            let tag = (b.len() as u64) << 16 | edge(b.first()) << 8 | edge(b.last());
            out.push(Member {
                name,
                tag,
                key: m.key,
                value: m.value,
            });
        });
        match found {
            Err(NotObject::Kind) => Err("not a JSON object".into()),
            Err(NotObject::Syntax(e)) => Err(format!("not JSON: {e}")),
            Ok(()) => match bad_key {
                Some(why) => Err(why),
                None => Ok(Members(out)),
            },
        }
    }

    /// Which members a later one of the same name hides; `None` when no name
    /// repeats (the usual case, found without allocating).
    fn hidden(&self) -> Option<Vec<bool>> {
        let m = &self.0;
        let repeats = |i: usize| {
            m[i + 1..]
                .iter()
                .any(|o| o.tag == m[i].tag && o.name == m[i].name)
        };
        if m.len() <= 32 {
            let first = (0..m.len()).find(|&i| repeats(i))?;
            let mut hidden = vec![false; m.len()];
            for (i, h) in hidden.iter_mut().enumerate().skip(first) {
                *h = repeats(i);
            }
            return Some(hidden);
        }
        let mut hidden = vec![false; m.len()];
        let mut last = std::collections::HashMap::with_capacity(m.len());
        for (i, member) in m.iter().enumerate() {
            if let Some(j) = last.insert(member.name.as_ref(), i) {
                hidden[j] = true;
            }
        }
        hidden.contains(&true).then_some(hidden)
    }
}

/// Appends `KEY:` (a key's JSON text) to an encoded object.
fn put_key(out: &mut Vec<u8>, key: &str) {
    if out.len() > 1 {
        out.push(b',');
    }
    out.extend_from_slice(key.as_bytes());
    out.push(b':');
}

impl JsonParse {
    /// The members that play a role, in one pass over the names (the last of a
    /// repeated name, as for the fields).
    fn roles(&self, obj: &Members<'_>) -> Roles {
        let mut r = Roles {
            message: [None; 3],
            time: [None; 4],
            level: [None; 2],
        };
        let rank = |configured: &Option<String>, defaults: &[&str], name: &str| match configured {
            Some(k) => (k == name).then_some(0),
            None => defaults.iter().position(|k| *k == name),
        };
        for (i, m) in obj.0.iter().enumerate() {
            if let Some(k) = rank(&self.message_key, &MESSAGE_KEYS, &m.name) {
                r.message[k] = Some(i);
            }
            if let Some(k) = rank(&self.timestamp_key, &TIME_KEYS, &m.name) {
                r.time[k] = Some(i);
            }
            if let Some(k) = ["severity", "level"].iter().position(|k| *k == m.name) {
                r.level[k] = Some(i);
            }
        }
        r
    }

    pub fn parse<'a>(&self, line: &'a [u8]) -> Parsed<'a> {
        let Ok(text) = std::str::from_utf8(line) else {
            return Self::unparsed("not JSON: not UTF-8");
        };
        let obj = match Members::parse(text) {
            Ok(m) => m,
            Err(why) => return Self::unparsed(&why),
        };
        let roles = self.roles(&obj);
        let message_at = roles.message.iter().find_map(|i| *i);
        let message = message_at.map(|i| {
            let raw = obj.0[i].value;
            match str_of(raw) {
                Some(Cow::Borrowed(s)) => Cow::Borrowed(s.as_bytes()),
                Some(Cow::Owned(s)) => Cow::Owned(s.into_bytes()),
                None => Cow::Borrowed(raw.as_bytes()),
            }
        });
        let timestamp_ms = roles
            .time
            .iter()
            .find_map(|i| i.and_then(|i| time_of(obj.0[i].value)));
        let level = roles
            .level
            .iter()
            .find_map(|i| i.and_then(|i| level_of(obj.0[i].value)));
        let hidden = obj.hidden();
        let mut fields = Vec::with_capacity(line.len() + 32);
        fields.push(b'{');
        let mut severity_done = false;
        for (i, m) in obj.0.iter().enumerate() {
            if hidden.as_ref().is_some_and(|h| h[i]) || Some(i) == message_at {
                continue;
            }
            put_key(&mut fields, m.key);
            match level {
                Some(l) if m.name == "severity" => {
                    let _ = serde_json::to_writer(&mut fields, severity_name(l));
                    severity_done = true;
                }
                _ => fields.extend_from_slice(m.value.as_bytes()),
            }
        }
        if let Some(l) = level
            && !severity_done
        {
            put_key(&mut fields, "\"severity\"");
            let _ = serde_json::to_writer(&mut fields, severity_name(l));
        }
        fields.push(b'}');
        Parsed {
            message,
            fields,
            timestamp_ms,
        }
    }

    fn unparsed(why: &str) -> Parsed<'static> {
        let mut m = Map::new();
        m.insert("parse_error".into(), Value::String(why.to_owned()));
        Parsed {
            message: None,
            fields: serde_json::to_vec(&m).unwrap_or_default(),
            timestamp_ms: None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn fields(p: &Parsed) -> Value {
        serde_json::from_slice(&p.fields).unwrap()
    }

    #[test]
    fn objects_become_message_fields_time_and_severity() {
        let j = JsonParse::default();
        let p = j.parse(
            br#"{"ts":"2026-12-05T10:00:00.250Z","level":"ERROR","msg":"db down","ctx":{"db":"orders","retry":3},"ok":false}"#,
        );
        assert_eq!(p.message.as_deref(), Some(&b"db down"[..]));
        assert_eq!(p.timestamp_ms, Some(1_796_464_800_250));
        let f = fields(&p);
        assert_eq!(f["severity"], "err");
        assert_eq!(f["level"], "ERROR");
        assert_eq!(f["ctx"]["retry"], 3);
        assert!(f.get("msg").is_none(), "the message is not a field too");
        // Epoch seconds and milliseconds, configured keys, non-string messages.
        let k = JsonParse {
            message_key: Some("text".into()),
            timestamp_key: Some("at".into()),
        };
        let p = k.parse(br#"{"at":1796464800,"text":42}"#);
        assert_eq!(
            (p.message.as_deref(), p.timestamp_ms),
            (Some(&b"42"[..]), Some(1_796_464_800_000))
        );
        let p = k.parse(br#"{"at":1796464800123}"#);
        assert_eq!((p.message, p.timestamp_ms), (None, Some(1_796_464_800_123)));
        let p = j.parse(br#"{"time":"yesterday","severity":4}"#);
        assert_eq!(p.timestamp_ms, None);
        assert_eq!(fields(&p)["severity"], "warning");
    }

    #[test]
    fn escaped_keys_duplicates_and_nested_text_survive() {
        let j = JsonParse::default();
        let p = j.parse(br#"{"a\"b":1,"x":1,"x":{"y": [1, "z"]},"msg":"m\u00e9"}"#);
        assert_eq!(p.message.as_deref(), Some("m\u{e9}".as_bytes()));
        let f = fields(&p);
        assert_eq!(f["a\"b"], 1);
        assert_eq!(f["x"]["y"][1], "z");
        assert_eq!(
            f.as_object().unwrap().len(),
            2,
            "the last duplicate kept: {f}"
        );
        let many: String = (0..100).map(|i| format!(r#""k{}":{i},"#, i % 50)).collect();
        // Whitespace around members is not part of their values.
        let p = j.parse(b" { \"a\" : [1, 2] ,\t\"msg\" : \"x\" , \"level\": 3 } ");
        assert_eq!(p.message.as_deref(), Some(&b"x"[..]));
        assert_eq!(
            String::from_utf8_lossy(&p.fields),
            r#"{"a":[1, 2],"level":3,"severity":"err"}"#
        );
        let line = format!("{{{many}\"msg\":\"x\"}}");
        let p = j.parse(line.as_bytes());
        let f = fields(&p);
        assert_eq!(f.as_object().unwrap().len(), 50);
        assert_eq!(f["k3"], 53);
    }

    #[test]
    fn other_lines_stay_as_they_are_and_say_why() {
        let j = JsonParse::default();
        for line in [&b"plain text"[..], b"[1,2]", b"{\"a\":", b"\xff\xfe", b""] {
            let p = j.parse(line);
            assert_eq!(p.message, None);
            assert!(fields(&p)["parse_error"].is_string(), "{line:?}");
        }
    }
}
