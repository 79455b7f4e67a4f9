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

impl JsonParse {
    pub fn parse(&self, line: &[u8]) -> Parsed {
        let mut obj: Map<String, Value> = match serde_json::from_slice::<Value>(line) {
            Ok(Value::Object(m)) => m,
            Ok(_) => return Self::unparsed("not a JSON object"),
            Err(e) => return Self::unparsed(&format!("not JSON: {e}")),
        };
        let message = match &self.message_key {
            Some(k) => obj.remove(k),
            None => MESSAGE_KEYS.iter().find_map(|k| obj.remove(*k)),
        }
        .map(|v| match v {
            Value::String(s) => s.into_bytes(),
            other => other.to_string().into_bytes(),
        });
        let timestamp_ms = match &self.timestamp_key {
            Some(k) => obj.get(k).and_then(time_of),
            None => TIME_KEYS.iter().find_map(|k| obj.get(*k).and_then(time_of)),
        };
        let level = ["severity", "level"]
            .iter()
            .find_map(|k| match obj.get(*k) {
                Some(Value::String(s)) => severity_level(s),
                Some(Value::Number(n)) => n.as_u64().filter(|n| *n <= 7).map(|n| n as u8),
                _ => None,
            });
        if let Some(l) = level {
            obj.insert("severity".into(), Value::String(severity_name(l).into()));
        }
        Parsed {
            message,
            fields: serde_json::to_vec(&obj).unwrap_or_default(),
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
    fn other_lines_stay_as_they_are_and_say_why() {
        let j = JsonParse::default();
        for line in [&b"plain text"[..], b"[1,2]", b"{\"a\":", b"\xff\xfe", b""] {
            let p = j.parse(line);
            assert_eq!(p.message, None);
            assert!(fields(&p)["parse_error"].is_string(), "{line:?}");
        }
    }
}
