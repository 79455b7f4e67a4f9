//! Fuzz the syslog input as a sender reaches it: RFC 6587 stream framing (octet
//! counting and non-transparent, mixed, with the size limit), the message parser
//! (RFC 5424, RFC 3164 and what real senders make of them) and the encoding of the
//! result into record blocks for the collector.
//!
//! Input layout:
//! ```text
//! u8   read size seed: the stream arrives in reads of 1 to 64 bytes
//! u8   size limit seed: max_message_bytes from 1 to 512 (small, to reach the cuts)
//! u8   time zone for timestamps without one: UTC, +05:30, -12:00 or local
//! u32  "now" in seconds after 2026-11-25 (picks the year of RFC 3164 stamps)
//! ...  the TCP byte stream; the same bytes are also one UDP datagram
//! ```
//! Checked, beyond "no panic":
//! - framing does not depend on how the stream was cut into reads: fed in small
//!   reads (the connection loop's drain-and-read) and fed whole give the same
//!   messages and truncation marks;
//! - memory stays bounded: between reads the connection buffer holds at most the
//!   limit plus a length prefix plus one read, whatever the sender does;
//! - no message is longer than the limit, and one that was cut says so;
//! - every parsed message's per-record fields are one JSON object (or nothing),
//!   its message borrows from the input, and the chunk built from all messages is a
//!   payload the collector accepts (`record::summarize`), whose records read back as
//!   the messages, fields, hosts and timestamps that went in.

#![no_main]

use std::sync::Arc;

use libfuzzer_sys::fuzz_target;
use tributary_agent::input::syslog::encode::{ChunkBuilder, Peer, render_fields};
use tributary_agent::input::syslog::framing::{Framer, trim_trailer};
use tributary_agent::input::syslog::{Parsed, TimeZone, parse};
use tributary_common::record::{self, FLAG_TRUNCATED};

/// 2026-11-25T14:01:34.123Z.
const BASE_NOW_MS: i64 = 1_795_615_294_123;
/// Longest length prefix (10 digits and a space).
const PREFIX: usize = 11;

/// Messages of `stream` with their truncation marks, fed in reads of `step` bytes
/// (`None`: all at once) the way the TCP connection loop feeds its framer.
fn frames(stream: &[u8], max: usize, step: Option<usize>) -> Vec<(Vec<u8>, bool)> {
    let mut framer = Framer::new(max);
    let mut buf: Vec<u8> = Vec::new();
    let mut pos = 0;
    let mut fed = 0;
    let mut out = Vec::new();
    loop {
        if pos > 0 {
            buf.drain(..pos);
            pos = 0;
        }
        if let Some(step) = step {
            assert!(
                buf.len() <= max + PREFIX + step,
                "the connection buffer holds {} bytes with a limit of {max}",
                buf.len()
            );
        }
        let n = step.unwrap_or(stream.len()).min(stream.len() - fed);
        buf.extend_from_slice(&stream[fed..fed + n]);
        fed += n;
        let eof = fed == stream.len();
        while let Some(f) = framer.next(&buf, &mut pos, eof) {
            assert!(f.range.end <= buf.len() && f.range.start <= f.range.end);
            assert!(pos >= f.range.end, "the read position is past the message");
            let m = trim_trailer(&buf[f.range]);
            assert!(
                m.len() <= max,
                "a message of {} bytes passed a limit of {max}",
                m.len()
            );
            out.push((m.to_vec(), f.truncated));
        }
        if eof {
            return out;
        }
    }
}

/// Whether `inner` lies within `outer` (a borrow, not a copy).
fn borrows(outer: &[u8], inner: &[u8]) -> bool {
    let (o, i) = (outer.as_ptr_range(), inner.as_ptr_range());
    inner.is_empty() || (o.start <= i.start && i.end <= o.end)
}

struct Expected {
    host: String,
    fields: Vec<u8>,
    message: Vec<u8>,
    timestamp_ms: i64,
    truncated: bool,
}

fn expect(p: &Parsed<'_>, peer: &Peer, truncated: bool, now_ms: i64) -> Expected {
    let mut fields = Vec::new();
    render_fields(&mut fields, p);
    if !fields.is_empty() {
        let v: serde_json::Value = serde_json::from_slice(&fields).unwrap_or_else(|e| {
            panic!(
                "fields {:?} are not JSON: {e}",
                String::from_utf8_lossy(&fields)
            )
        });
        assert!(v.is_object(), "fields are not an object");
    }
    Expected {
        host: p.hostname.map_or_else(
            || peer.ip.to_string(),
            |h| String::from_utf8_lossy(h).into_owned(),
        ),
        fields,
        message: p.message.to_vec(),
        timestamp_ms: p.timestamp_ms.unwrap_or(now_ms),
        truncated,
    }
}

/// The chunk built from `expected` reads back as exactly those records.
fn check_chunk(builder: &mut ChunkBuilder, expected: &[Expected]) {
    let Some(chunk) = builder.take() else {
        assert!(expected.is_empty());
        return;
    };
    assert_eq!(chunk.records as usize, expected.len());
    let summary = record::summarize(&chunk.payload).expect("the collector accepts the chunk");
    assert_eq!(summary.records as usize, expected.len());
    let mut want = expected.iter();
    for block in record::blocks(&chunk.payload, true) {
        let block = block.expect("validated");
        for r in block.records() {
            let r = r.expect("validated");
            let e = want.next().expect("no more records than messages");
            // Host names are cut to 64 KiB - 1 bytes at a character boundary.
            assert!(e.host.starts_with(block.header.host), "host");
            assert_eq!(r.message, &e.message[..], "message");
            assert_eq!(r.fields, &e.fields[..], "fields");
            assert_eq!(r.timestamp_ms, e.timestamp_ms, "timestamp");
            assert_eq!(r.flags & FLAG_TRUNCATED != 0, e.truncated, "truncated");
        }
    }
    assert!(want.next().is_none(), "every message became a record");
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 7 {
        return;
    }
    let step = 1 + data[0] as usize % 64;
    let max = 1 + (data[1] as usize * 2);
    let tz = match data[2] % 4 {
        0 => TimeZone::Utc,
        1 => TimeZone::Fixed(5 * 3600 + 30 * 60),
        2 => TimeZone::Fixed(-12 * 3600),
        _ => TimeZone::Local,
    };
    let now_ms =
        BASE_NOW_MS + u32::from_le_bytes([data[3], data[4], data[5], data[6]]) as i64 * 1000;
    let stream = &data[7..];

    let whole = frames(stream, max, None);
    let pieces = frames(stream, max, Some(step));
    assert_eq!(whole, pieces, "framing depends on how reads were cut");

    let peer = Peer {
        ip: Arc::from("192.0.2.7"),
        source: Arc::from("syslog+tcp://192.0.2.7"),
    };
    let mut builder = ChunkBuilder::new(Arc::from("logs"), Arc::from(&b"{\"env\":\"test\"}"[..]));
    let mut expected = Vec::new();
    for (m, truncated) in &whole {
        let p = parse(m, now_ms, &tz);
        assert!(borrows(m, p.message), "the message borrows from the input");
        expected.push(expect(&p, &peer, *truncated, now_ms));
        builder.push(&peer, &p, *truncated, now_ms);
    }
    check_chunk(&mut builder, &expected);

    // The same bytes as one UDP datagram.
    let datagram = trim_trailer(stream);
    let p = parse(datagram, now_ms, &tz);
    assert!(borrows(datagram, p.message));
    let e = expect(&p, &peer, false, now_ms);
    builder.push(&peer, &p, false, now_ms);
    check_chunk(&mut builder, &[e]);
});
