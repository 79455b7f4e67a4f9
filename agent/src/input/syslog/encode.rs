//! Parsed syslog messages → record blocks → [`Chunk`]s for the batcher.
//!
//! A [`ChunkBuilder`] collects many messages (one UDP burst, one TCP read, at most a
//! few milliseconds) into one payload. Consecutive messages with the same host and
//! source share one block; a new host or source starts a new block, so one chunk may
//! hold several blocks (the batcher only concatenates payloads). The input's static
//! `fields` go into each block header once; the per-message fields (facility,
//! severity, appname, procid, msgid, sd, parse_error) are a JSON object on the record.

use std::borrow::Cow;
use std::sync::Arc;

use tokio::time::Instant;
use tributary_common::names::severity_name;
use tributary_common::record::{BlockWriter, FLAG_TRUNCATED};

use super::parse::{Parsed, SdElement, facility_name, unescape};
use crate::input::Chunk;

/// Where a message came from: the sender's IP (the host when the message names
/// none) and the record source (`syslog+udp://IP`).
#[derive(Debug, Clone)]
pub struct Peer {
    pub ip: Arc<str>,
    pub source: Arc<str>,
}

/// Accumulates encoded records until the chunk is taken.
pub struct ChunkBuilder {
    topic: Arc<str>,
    static_fields: Arc<[u8]>,
    payload: Vec<u8>,
    records: u32,
    block: Option<BlockWriter>,
    host: String,
    source: Option<Arc<str>>,
    fields: Vec<u8>,
    started: Option<Instant>,
    /// Source of the first record: the chunk's `path`.
    path: Option<Arc<str>>,
}

impl ChunkBuilder {
    pub fn new(topic: Arc<str>, static_fields: Arc<[u8]>) -> Self {
        ChunkBuilder {
            topic,
            static_fields,
            payload: Vec::new(),
            records: 0,
            block: None,
            host: String::new(),
            source: None,
            fields: Vec::new(),
            started: None,
            path: None,
        }
    }

    /// Encoded bytes so far.
    pub fn bytes(&self) -> usize {
        self.payload.len()
    }

    /// When the first record of the pending chunk was added.
    pub fn started(&self) -> Option<Instant> {
        self.started
    }

    /// Encode one message. `recv_ms` is the timestamp when the message has none.
    pub fn push(&mut self, peer: &Peer, p: &Parsed<'_>, truncated: bool, recv_ms: i64) {
        let host: Cow<'_, str> = match p.hostname {
            Some(h) => String::from_utf8_lossy(h),
            None => Cow::Borrowed(&*peer.ip),
        };
        let same_source = self
            .source
            .as_ref()
            .is_some_and(|s| Arc::ptr_eq(s, &peer.source) || **s == *peer.source);
        if self.block.is_none() || !same_source || self.host != host {
            if let Some(b) = self.block.take() {
                b.finish(&mut self.payload);
            }
            self.block = Some(BlockWriter::begin(
                &mut self.payload,
                &host,
                &peer.source,
                0,
                &self.static_fields,
            ));
            self.host.clear();
            self.host.push_str(&host);
            self.source = Some(peer.source.clone());
        }
        render_fields(&mut self.fields, p);
        let flags = if truncated { FLAG_TRUNCATED } else { 0 };
        if let Some(b) = self.block.as_mut() {
            b.push(
                &mut self.payload,
                flags,
                p.timestamp_ms.unwrap_or(recv_ms),
                0,
                &self.fields,
                p.message,
            );
        }
        self.records += 1;
        self.started.get_or_insert_with(Instant::now);
        if self.path.is_none() {
            self.path = Some(peer.source.clone());
        }
    }

    /// The pending chunk, if any; the builder starts over empty. `at_end`: the
    /// sender has nothing more right now (see [`Chunk::at_end`]).
    pub fn take(&mut self, at_end: bool) -> Option<Chunk> {
        if let Some(b) = self.block.take() {
            b.finish(&mut self.payload);
        }
        self.source = None;
        self.started = None;
        if self.records == 0 {
            self.payload.clear();
            return None;
        }
        let records = std::mem::take(&mut self.records);
        let payload = std::mem::replace(&mut self.payload, Vec::with_capacity(64 << 10));
        Some(Chunk {
            crc_base: 0,
            crc: 0,
            topic: self.topic.clone(),
            payload,
            records,
            source_id: 0,
            path: self.path.take().unwrap_or_else(|| Arc::from("syslog")),
            start_offset: 0,
            end_offset: 0,
            end_hash: 0,
            cursor: None,
            at_end,
        })
    }
}

/// The per-record JSON object of `p` into `out` (cleared first; left empty when
/// there is nothing to say).
pub fn render_fields(out: &mut Vec<u8>, p: &Parsed<'_>) {
    out.clear();
    let mut first = true;
    let mut key = |out: &mut Vec<u8>, k: &str| {
        out.push(if first { b'{' } else { b',' });
        first = false;
        out.push(b'"');
        out.extend_from_slice(k.as_bytes());
        out.extend_from_slice(b"\":");
    };
    if let Some(f) = p.facility {
        key(out, "facility");
        json_str(out, facility_name(f).as_bytes());
    }
    if let Some(s) = p.severity {
        key(out, "severity");
        json_str(out, severity_name(s).as_bytes());
    }
    for (k, v) in [
        ("appname", p.appname),
        ("procid", p.procid),
        ("msgid", p.msgid),
    ] {
        if let Some(v) = v {
            key(out, k);
            json_str(out, v);
        }
    }
    if !p.sd.is_empty() {
        key(out, "sd");
        render_sd(out, &p.sd);
    }
    if let Some(e) = p.error {
        key(out, "parse_error");
        json_str(out, e.as_bytes());
    }
    if !first {
        out.push(b'}');
    }
}

/// `{"id": {"param": "value"}}`. Elements with the same id are merged, and a repeated
/// parameter keeps its last value, so the object never has duplicate keys.
fn render_sd(out: &mut Vec<u8>, sd: &[SdElement<'_>]) {
    out.push(b'{');
    let mut first_el = true;
    for (i, el) in sd.iter().enumerate() {
        if sd[..i].iter().any(|e| e.id == el.id) {
            continue;
        }
        if !first_el {
            out.push(b',');
        }
        first_el = false;
        json_str(out, el.id);
        out.push(b':');
        out.push(b'{');
        let params: Vec<(&[u8], &[u8])> = sd[i..]
            .iter()
            .filter(|e| e.id == el.id)
            .flat_map(|e| e.params.iter().copied())
            .collect();
        let mut first_param = true;
        for (j, (name, value)) in params.iter().enumerate() {
            if params[j + 1..].iter().any(|(n, _)| n == name) {
                continue;
            }
            if !first_param {
                out.push(b',');
            }
            first_param = false;
            json_str(out, name);
            out.push(b':');
            json_str(out, &unescape(value));
        }
        out.push(b'}');
    }
    out.push(b'}');
}

/// A JSON string of `b`, invalid UTF-8 replaced by U+FFFD.
pub fn json_str(out: &mut Vec<u8>, b: &[u8]) {
    let s = String::from_utf8_lossy(b);
    out.push(b'"');
    let bytes = s.as_bytes();
    let mut from = 0;
    for (i, &c) in bytes.iter().enumerate() {
        let esc: &[u8] = match c {
            b'"' => b"\\\"",
            b'\\' => b"\\\\",
            b'\n' => b"\\n",
            b'\r' => b"\\r",
            b'\t' => b"\\t",
            0..=0x1f | 0x7f => b"",
            _ => continue,
        };
        out.extend_from_slice(&bytes[from..i]);
        if esc.is_empty() {
            out.extend_from_slice(format!("\\u{c:04x}").as_bytes());
        } else {
            out.extend_from_slice(esc);
        }
        from = i + 1;
    }
    out.extend_from_slice(&bytes[from..]);
    out.push(b'"');
}
