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
pub struct Parsed {
    pub message: Option<Vec<u8>>,
    pub fields: Vec<u8>,
    pub timestamp_ms: Option<i64>,
}

fn time_of(v: &Value) -> Option<i64> {
    match v {
        Value::String(s) => tributary_common::timefmt::parse_ms(s).ok(),
        Value::Number(n) => {
            let f = n.as_f64()?;
            // Seconds until the year 5138, milliseconds after.
            let ms = if f.abs() < 1e11 { f * 1000.0 } else { f };
            (ms.is_finite() && ms.abs() < 1e15).then_some(ms as i64)
        }
        _ => None,
    }
}

/// A top-level object's members, values left as their JSON text (nothing nested is
/// built: a line's fields are written back from the text as it came).
struct Members<'a>(Vec<(Cow<'a, str>, &'a str)>);

/// Why a line is not an object.
enum NotObject {
    /// Valid JSON of another kind.
    Kind,
    Syntax(String),
}

fn skip_ws(b: &[u8], mut i: usize) -> usize {
    while i < b.len() && matches!(b[i], b' ' | b'\t' | b'\n' | b'\r') {
        i += 1;
    }
    i
}

/// Index just past the string starting at `b[i] == '"'`.
fn string_end(b: &[u8], mut i: usize) -> usize {
    i += 1;
    while i < b.len() {
        match b[i] {
            b'\\' => i += 2,
            b'"' => return i + 1,
            _ => i += 1,
        }
    }
    b.len()
}

impl<'a> Members<'a> {
    /// The members of `text`, checked as JSON first (so the scan below only has to
    /// find where each top-level member starts and ends).
    fn parse(text: &'a str) -> Result<Members<'a>, NotObject> {
        serde_json::from_str::<serde::de::IgnoredAny>(text)
            .map_err(|e| NotObject::Syntax(e.to_string()))?;
        let b = text.as_bytes();
        let mut i = skip_ws(b, 0);
        if b.get(i) != Some(&b'{') {
            return Err(NotObject::Kind);
        }
        let mut out = Vec::with_capacity(16);
        i = skip_ws(b, i + 1);
        while i < b.len() && b[i] == b'"' {
            let ks = i;
            i = string_end(b, i);
            let raw_key = &text[ks + 1..i - 1];
            let key = if raw_key.contains('\\') {
                Cow::Owned(serde_json::from_str::<String>(&text[ks..i]).unwrap_or_default())
            } else {
                Cow::Borrowed(raw_key)
            };
            i = skip_ws(b, i) + 1; // ':'
            i = skip_ws(b, i);
            let vs = i;
            let mut depth = 0usize;
            while i < b.len() {
                match b[i] {
                    b'"' => {
                        i = string_end(b, i);
                        if depth == 0 {
                            break;
                        }
                        continue;
                    }
                    b'{' | b'[' => depth += 1,
                    b'}' | b']' if depth > 0 => {
                        depth -= 1;
                        if depth == 0 {
                            i += 1;
                            break;
                        }
                    }
                    b',' | b'}' | b' ' | b'\t' | b'\n' | b'\r' if depth == 0 => break,
                    _ => {}
                }
                i += 1;
            }
            out.push((key, &text[vs..i]));
            i = skip_ws(b, i);
            if b.get(i) == Some(&b',') {
                i = skip_ws(b, i + 1);
            }
        }
        Ok(Members(out))
    }
}

impl Members<'_> {
    /// Index of the member named `k` (the last one, as JSON readers keep).
    fn find(&self, k: &str) -> Option<usize> {
        self.0.iter().rposition(|(n, _)| n == k)
    }

    /// Which members an earlier one of the same name hides (only the last is kept).
    fn hidden(&self) -> Vec<bool> {
        let n = self.0.len();
        let mut hidden = vec![false; n];
        if n <= 32 {
            for (i, h) in hidden.iter_mut().enumerate() {
                *h = self.0[i + 1..].iter().any(|(k, _)| *k == self.0[i].0);
            }
        } else {
            let mut last = std::collections::HashMap::with_capacity(n);
            for (i, (k, _)) in self.0.iter().enumerate() {
                if let Some(j) = last.insert(k.as_ref(), i) {
                    hidden[j] = true;
                }
            }
        }
        hidden
    }
}

/// A string value's text, or the JSON text of any other value.
fn text_of(t: &str) -> Vec<u8> {
    if t.starts_with('"')
        && let Ok(s) = serde_json::from_str::<String>(t)
    {
        return s.into_bytes();
    }
    t.as_bytes().to_vec()
}

impl JsonParse {
    pub fn parse(&self, line: &[u8]) -> Parsed {
        let Ok(text) = std::str::from_utf8(line) else {
            return Self::unparsed("not JSON: not UTF-8");
        };
        let obj = match Members::parse(text) {
            Ok(m) => m,
            Err(NotObject::Kind) => return Self::unparsed("not a JSON object"),
            Err(NotObject::Syntax(e)) => return Self::unparsed(&format!("not JSON: {e}")),
        };
        let message_at = match &self.message_key {
            Some(k) => obj.find(k),
            None => MESSAGE_KEYS.iter().find_map(|k| obj.find(k)),
        };
        let message = message_at.map(|i| text_of(obj.0[i].1));
        let value = |i: usize| serde_json::from_str::<Value>(obj.0[i].1).ok();
        let timestamp_ms = match &self.timestamp_key {
            Some(k) => obj.find(k).and_then(value).and_then(|v| time_of(&v)),
            None => TIME_KEYS
                .iter()
                .find_map(|k| obj.find(k).and_then(value).and_then(|v| time_of(&v))),
        };
        let level = ["severity", "level"]
            .iter()
            .find_map(|k| match obj.find(k).and_then(value) {
                Some(Value::String(s)) => severity_level(&s),
                Some(Value::Number(n)) => n.as_u64().filter(|n| *n <= 7).map(|n| n as u8),
                _ => None,
            });
        let hidden = obj.hidden();
        let mut fields = Vec::with_capacity(line.len() + 32);
        fields.push(b'{');
        let mut severity_done = false;
        for (i, (k, raw)) in obj.0.iter().enumerate() {
            if hidden[i] || Some(i) == message_at {
                continue;
            }
            if fields.len() > 1 {
                fields.push(b',');
            }
            let _ = serde_json::to_writer(&mut fields, k);
            fields.push(b':');
            match level {
                Some(l) if k == "severity" => {
                    let _ = serde_json::to_writer(&mut fields, severity_name(l));
                    severity_done = true;
                }
                _ => fields.extend_from_slice(raw.as_bytes()),
            }
        }
        if let Some(l) = level
            && !severity_done
        {
            if fields.len() > 1 {
                fields.push(b',');
            }
            fields.extend_from_slice(b"\"severity\":");
            let _ = serde_json::to_writer(&mut fields, severity_name(l));
        }
        fields.push(b'}');
        Parsed {
            message,
            fields,
            timestamp_ms,
        }
    }

    fn unparsed(why: &str) -> Parsed {
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
        let p = j.parse(format!("{{{many}\"msg\":\"x\"}}").as_bytes());
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
