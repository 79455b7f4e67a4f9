//! Syslog message parsing: RFC 5424 and RFC 3164 (BSD) bytes → [`Parsed`].
//!
//! [`parse`] is a pure function of the bytes, the receive time and the input's time
//! zone: no I/O, no allocation unless the message has structured data, and no panic
//! on any input (a proptest feeds it random bytes). It never loses data: a message
//! it cannot make sense of comes back whole with [`Parsed::error`] set.
//!
//! Rules, in order:
//! - Leading whitespace is skipped. `<PRI>` (0–191) is optional; a malformed one
//!   (`<aaa>`, `<192>`, `<87]`) is an error.
//! - `<PRI>` followed by `VERSION SP` (1–3 digits, first non-zero) is RFC 5424, as is
//!   a message without PRI that starts with `1 `. The header fields are split on
//!   single spaces; each is `-` (NILVALUE, absent) or non-empty without control
//!   characters. Field lengths are not enforced (senders exceed them). The timestamp
//!   is RFC 3339 (`T`/`Z` in either case, up to 9 fraction digits, offsets up to
//!   ±23:59). Structured data follows RFC 5424 §6.3; inside a quoted value only `"`
//!   ends it, so an unescaped `]` is accepted. A UTF-8 BOM at the start of MSG is
//!   dropped (it marks the encoding, it is not content).
//! - Anything else is RFC 3164: optional spaces, a timestamp (`Mmm dd hh:mm:ss`,
//!   optionally with a year and/or fraction, or RFC 3339), then HOSTNAME unless the
//!   first word already is a tag (`name:` / `name[pid]:`, as network devices and
//!   local daemons send), then an optional tag, then MSG. Without a timestamp the
//!   rest after PRI is MSG (as an RFC 3164 relay would treat it); without PRI *and*
//!   without a timestamp the message is an error ("garbage").
//! - RFC 3164 timestamps have no year and no zone: the year is the latest that does
//!   not put the time more than a week after `now` (so a `Dec 31` message read on
//!   `Jan 1` is last year's, a `Jan 1` message read on `Dec 31` next year's) and the
//!   zone is the input's [`TimeZone`].

use std::borrow::Cow;

use chrono::{Datelike, Local, NaiveDate, TimeZone as _};

/// The zone of timestamps that carry none (RFC 3164).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum TimeZone {
    #[default]
    Utc,
    /// Seconds east of UTC.
    Fixed(i32),
    /// The machine's zone (`TZ` or `/etc/localtime`), with its daylight-saving rules.
    Local,
}

impl TimeZone {
    /// `UTC`, `local`, or a fixed offset `+02:00` / `-0530` / `+02`.
    pub fn parse(s: &str) -> Result<TimeZone, String> {
        let t = s.trim();
        if t.eq_ignore_ascii_case("utc") || t == "Z" {
            return Ok(TimeZone::Utc);
        }
        if t.eq_ignore_ascii_case("local") {
            return Ok(TimeZone::Local);
        }
        let bad =
            || format!("`{s}` is not a time zone (expected UTC, local, or an offset like +02:00)");
        let b = t.as_bytes();
        let sign = match b.first() {
            Some(b'+') => 1,
            Some(b'-') => -1,
            _ => return Err(bad()),
        };
        let digits: Vec<u8> = b[1..].iter().copied().filter(|c| *c != b':').collect();
        if !(digits.len() == 2 || digits.len() == 4) || !digits.iter().all(u8::is_ascii_digit) {
            return Err(bad());
        }
        if b[1..].contains(&b':') && !(b.len() == 6 && b[3] == b':') {
            return Err(bad());
        }
        let h = num(&digits[..2]) as i32;
        let m = if digits.len() == 4 {
            num(&digits[2..]) as i32
        } else {
            0
        };
        if h > 23 || m > 59 {
            return Err(bad());
        }
        Ok(if h == 0 && m == 0 {
            TimeZone::Utc
        } else {
            TimeZone::Fixed(sign * (h * 3600 + m * 60))
        })
    }

    /// The calendar year at `utc_ms` in this zone.
    fn year_at(&self, utc_ms: i64) -> i64 {
        let off = match self {
            TimeZone::Utc => 0,
            TimeZone::Fixed(s) => *s as i64,
            TimeZone::Local => match Local.timestamp_millis_opt(utc_ms).single() {
                Some(t) => return t.year() as i64,
                None => 0,
            },
        };
        civil_from_days((utc_ms / 1000 + off).div_euclid(86_400)).0
    }

    /// Epoch milliseconds of a wall-clock time in this zone; `None` for an invalid date.
    fn utc_ms_of(&self, t: &Civil) -> Option<i64> {
        if t.month == 0 || t.month > 12 || t.day == 0 || t.day > days_in_month(t.year, t.month) {
            return None;
        }
        let naive_ms = (days_from_civil(t.year, t.month, t.day) * 86_400
            + t.hour as i64 * 3600
            + t.minute as i64 * 60
            + t.second as i64)
            * 1000
            + (t.nanos / 1_000_000) as i64;
        let off = match self {
            TimeZone::Utc => 0,
            TimeZone::Fixed(s) => *s as i64,
            TimeZone::Local => {
                let year = i32::try_from(t.year).ok()?;
                let dt = NaiveDate::from_ymd_opt(year, t.month, t.day)?.and_hms_nano_opt(
                    t.hour,
                    t.minute,
                    t.second.min(59),
                    t.nanos,
                )?;
                match Local.from_local_datetime(&dt).earliest() {
                    Some(l) => {
                        return Some(l.timestamp_millis() + if t.second == 60 { 1000 } else { 0 });
                    }
                    // A wall time skipped by a daylight-saving jump: use the offset
                    // in force just before it.
                    None => {
                        let before = dt.checked_sub_signed(chrono::TimeDelta::hours(3))?;
                        Local.offset_from_utc_datetime(&before).local_minus_utc() as i64
                    }
                }
            }
        };
        Some(naive_ms - off * 1000)
    }
}

/// A wall-clock time read from a message.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Civil {
    year: i64,
    month: u32,
    day: u32,
    hour: u32,
    minute: u32,
    second: u32,
    nanos: u32,
}

/// Which grammar a message was read with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Format {
    Rfc5424,
    Rfc3164,
    /// Not parsed: see [`Parsed::error`].
    Unknown,
}

/// One SD-ELEMENT; parameter values are raw (still escaped, see [`unescape`]).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SdElement<'a> {
    pub id: &'a [u8],
    pub params: Vec<(&'a [u8], &'a [u8])>,
}

/// A parsed message. Absent fields are `None`; everything borrows from the input.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Parsed<'a> {
    pub format: Format,
    pub facility: Option<u8>,
    pub severity: Option<u8>,
    /// Event time in epoch milliseconds, when the message has a usable one.
    pub timestamp_ms: Option<i64>,
    pub hostname: Option<&'a [u8]>,
    pub appname: Option<&'a [u8]>,
    pub procid: Option<&'a [u8]>,
    pub msgid: Option<&'a [u8]>,
    pub sd: Vec<SdElement<'a>>,
    /// MSG; the whole input when `error` is set.
    pub message: &'a [u8],
    /// Why the message could not be parsed (short, constant).
    pub error: Option<&'static str>,
}

impl<'a> Parsed<'a> {
    fn new(format: Format, pri: Option<u8>, message: &'a [u8]) -> Self {
        Parsed {
            format,
            facility: pri.map(|p| p >> 3),
            severity: pri.map(|p| p & 7),
            timestamp_ms: None,
            hostname: None,
            appname: None,
            procid: None,
            msgid: None,
            sd: Vec::new(),
            message,
            error: None,
        }
    }

    fn failed(input: &'a [u8], pri: Option<u8>, error: &'static str) -> Self {
        Parsed {
            error: Some(error),
            ..Parsed::new(Format::Unknown, pri, input)
        }
    }
}

/// Facility names as syslog(3) and `logger -p` spell them.
pub fn facility_name(f: u8) -> &'static str {
    const NAMES: [&str; 24] = [
        "kern",
        "user",
        "mail",
        "daemon",
        "auth",
        "syslog",
        "lpr",
        "news",
        "uucp",
        "cron",
        "authpriv",
        "ftp",
        "ntp",
        "security",
        "console",
        "solaris-cron",
        "local0",
        "local1",
        "local2",
        "local3",
        "local4",
        "local5",
        "local6",
        "local7",
    ];
    NAMES.get(f as usize).copied().unwrap_or("unknown")
}

/// Parse one message (without its framing). `now_ms` picks the year of RFC 3164
/// timestamps; `tz` is the zone of timestamps that carry none.
pub fn parse<'a>(input: &'a [u8], now_ms: i64, tz: &TimeZone) -> Parsed<'a> {
    let s = trim_start(input);
    if s.is_empty() {
        return Parsed::failed(input, None, "empty message");
    }
    let (pri, rest) = if s[0] == b'<' {
        match parse_pri(s) {
            Some((p, rest)) => (Some(p), rest),
            None => return Parsed::failed(input, None, "invalid PRI"),
        }
    } else {
        (None, s)
    };
    if let Some(body) = version_prefix(rest, pri.is_some()) {
        return match rfc5424(body, pri) {
            Ok(p) => p,
            Err(e) => Parsed::failed(input, pri, e),
        };
    }
    match rfc3164(rest, pri, now_ms, tz) {
        Some(p) => p,
        None => Parsed::failed(input, None, "no PRI and no timestamp"),
    }
}

fn trim_start(b: &[u8]) -> &[u8] {
    let n = b
        .iter()
        .take_while(|c| matches!(c, b' ' | b'\t' | b'\r' | b'\n'))
        .count();
    &b[n..]
}

fn num(d: &[u8]) -> u32 {
    d.iter().fold(0u32, |n, c| {
        n.saturating_mul(10).saturating_add((c - b'0') as u32)
    })
}

/// `<` 1–3 digits `>`, value ≤ 191.
fn parse_pri(s: &[u8]) -> Option<(u8, &[u8])> {
    let digits = s[1..].iter().take_while(|c| c.is_ascii_digit()).count();
    if !(1..=3).contains(&digits) || s.get(1 + digits) != Some(&b'>') {
        return None;
    }
    let v = num(&s[1..1 + digits]);
    (v <= 191).then(|| (v as u8, &s[2 + digits..]))
}

/// The body after `VERSION SP` when this is RFC 5424.
fn version_prefix(s: &[u8], has_pri: bool) -> Option<&[u8]> {
    if !has_pri {
        return s.strip_prefix(b"1 ");
    }
    let digits = s.iter().take(4).take_while(|c| c.is_ascii_digit()).count();
    if (1..=3).contains(&digits) && s[0] != b'0' && s.get(digits) == Some(&b' ') {
        return Some(&s[digits + 1..]);
    }
    None
}

/// Next space-separated header field; `-` is `None`.
fn header_field<'a>(
    s: &mut &'a [u8],
    what: &'static str,
) -> Result<Option<&'a [u8]>, &'static str> {
    let end = s.iter().position(|c| *c == b' ').ok_or(what)?;
    let f = &s[..end];
    *s = &s[end + 1..];
    if f.is_empty() || f.iter().any(|c| *c < 33 || *c == 127) {
        return Err(what);
    }
    Ok((f != b"-").then_some(f))
}

fn rfc5424(mut s: &[u8], pri: Option<u8>) -> Result<Parsed<'_>, &'static str> {
    let ts = header_field(&mut s, "invalid TIMESTAMP")?;
    let timestamp_ms = match ts {
        None => None,
        Some(t) => Some(parse_rfc3339(t, &TimeZone::Utc, false).ok_or("invalid TIMESTAMP")?),
    };
    let hostname = header_field(&mut s, "invalid HOSTNAME")?;
    let appname = header_field(&mut s, "invalid APP-NAME")?;
    let procid = header_field(&mut s, "invalid PROCID")?;
    let msgid = header_field(&mut s, "invalid MSGID")?;
    let (sd, rest) = match s.first() {
        Some(b'-') => (Vec::new(), &s[1..]),
        Some(b'[') => parse_sd(s)?,
        _ => return Err("invalid STRUCTURED-DATA"),
    };
    let message = match rest.first() {
        None => rest,
        Some(b' ') => {
            let m = &rest[1..];
            m.strip_prefix(b"\xef\xbb\xbf").unwrap_or(m)
        }
        Some(_) => return Err("invalid STRUCTURED-DATA"),
    };
    Ok(Parsed {
        timestamp_ms,
        hostname,
        appname,
        procid,
        msgid,
        sd,
        ..Parsed::new(Format::Rfc5424, pri, message)
    })
}

/// SD-NAME: 1–255 printable ASCII bytes except `=`, SP, `]`, `"`.
fn sd_name(s: &[u8]) -> usize {
    s.iter()
        .take_while(|c| (33..127).contains(*c) && !matches!(c, b'=' | b']' | b'"'))
        .count()
}

type SdResult<'a> = Result<(Vec<SdElement<'a>>, &'a [u8]), &'static str>;

fn parse_sd(mut s: &[u8]) -> SdResult<'_> {
    const BAD: &str = "invalid STRUCTURED-DATA";
    let mut out = Vec::new();
    while s.first() == Some(&b'[') {
        s = &s[1..];
        let n = sd_name(s);
        if n == 0 {
            return Err(BAD);
        }
        let mut el = SdElement {
            id: &s[..n],
            params: Vec::new(),
        };
        s = &s[n..];
        loop {
            match s.first() {
                Some(b']') => {
                    s = &s[1..];
                    break;
                }
                Some(b' ') => s = &s[1..],
                _ => return Err(BAD),
            }
            let n = sd_name(s);
            if n == 0 || s.get(n) != Some(&b'=') || s.get(n + 1) != Some(&b'"') {
                return Err(BAD);
            }
            let name = &s[..n];
            s = &s[n + 2..];
            let mut i = 0;
            loop {
                match s.get(i) {
                    None => return Err(BAD),
                    Some(b'\\') => i += 2,
                    Some(b'"') => break,
                    Some(_) => i += 1,
                }
            }
            el.params.push((name, &s[..i]));
            s = &s[i + 1..];
        }
        out.push(el);
    }
    Ok((out, s))
}

/// Undo the escapes of an SD-PARAM value: `\"`, `\\` and `\]` lose their backslash;
/// a backslash before anything else is kept (RFC 5424 §6.3.3).
pub fn unescape(v: &[u8]) -> Cow<'_, [u8]> {
    if !v.contains(&b'\\') {
        return Cow::Borrowed(v);
    }
    let mut out = Vec::with_capacity(v.len());
    let mut i = 0;
    while i < v.len() {
        if v[i] == b'\\' && matches!(v.get(i + 1), Some(b'"' | b'\\' | b']')) {
            i += 1;
        }
        out.push(v[i]);
        i += 1;
    }
    Cow::Owned(out)
}

fn rfc3164<'a>(s: &'a [u8], pri: Option<u8>, now_ms: i64, tz: &TimeZone) -> Option<Parsed<'a>> {
    let s = trim_spaces(s);
    let Some((timestamp_ms, used)) = parse_3164_time(s, now_ms, tz) else {
        return pri.map(|p| Parsed::new(Format::Rfc3164, Some(p), s));
    };
    let mut p = Parsed::new(Format::Rfc3164, pri, &[]);
    p.timestamp_ms = timestamp_ms;
    let mut rest = &s[used..];
    // Some devices end the timestamp with a colon (`Mar  1 18:46:11: %SYS-5-…`).
    if let Some(r) = rest.strip_prefix(b":") {
        rest = r;
    }
    if !rest.is_empty() && rest[0] != b' ' {
        // The timestamp runs into other text: not a timestamp after all.
        return pri.map(|p| Parsed::new(Format::Rfc3164, Some(p), s));
    }
    rest = trim_spaces(rest);
    // HOSTNAME, unless the first word is already the tag or the only word.
    let first_end = rest.iter().position(|c| *c == b' ');
    if let Some(end) = first_end
        && tag(&rest[..end]).is_none()
        && !rest[..end].iter().any(|c| *c < 32)
    {
        p.hostname = Some(&rest[..end]);
        rest = trim_spaces(&rest[end..]);
    }
    let word_end = rest.iter().position(|c| *c == b' ').unwrap_or(rest.len());
    if let Some((name, pid)) = tag(&rest[..word_end]) {
        p.appname = Some(name);
        p.procid = pid;
        rest = &rest[word_end..];
        rest = rest.strip_prefix(b" ").unwrap_or(rest);
    }
    p.message = rest;
    Some(p)
}

fn trim_spaces(s: &[u8]) -> &[u8] {
    let n = s.iter().take_while(|c| **c == b' ').count();
    &s[n..]
}

/// `name:`, `name[pid]:` or `name[pid]` → (name, pid).
fn tag(w: &[u8]) -> Option<(&[u8], Option<&[u8]>)> {
    let (w, colon) = match w.strip_suffix(b":") {
        Some(w) => (w, true),
        None => (w, false),
    };
    let ok_name = |n: &[u8]| {
        !n.is_empty()
            && n.iter()
                .all(|c| *c > 32 && *c != 127 && !matches!(c, b'[' | b']' | b':'))
    };
    if let Some(inner) = w.strip_suffix(b"]") {
        let open = inner.iter().position(|c| *c == b'[')?;
        let (name, pid) = (&inner[..open], &inner[open + 1..]);
        if ok_name(name) && ok_name(pid) {
            return Some((name, Some(pid)));
        }
        return None;
    }
    (colon && ok_name(w)).then_some((w, None))
}

/// How far in the future an RFC 3164 time may be before it is taken as last year's.
const FUTURE_SKEW_MS: i64 = 7 * 86_400_000;

const MONTHS: [&[u8; 3]; 12] = [
    b"Jan", b"Feb", b"Mar", b"Apr", b"May", b"Jun", b"Jul", b"Aug", b"Sep", b"Oct", b"Nov", b"Dec",
];

/// An RFC 3164 timestamp at the start of `s`: `Mmm dd [yyyy ]hh:mm:ss[.f]` or RFC
/// 3339. Returns the time (`None` when the date does not exist) and the bytes used.
fn parse_3164_time(s: &[u8], now_ms: i64, tz: &TimeZone) -> Option<(Option<i64>, usize)> {
    if s.first().is_some_and(u8::is_ascii_digit) {
        let end = s.iter().position(|c| *c == b' ').unwrap_or(s.len());
        return parse_rfc3339(&s[..end], tz, true).map(|t| (Some(t), end));
    }
    let month = MONTHS
        .iter()
        .position(|m| s.len() >= 3 && s[..3].eq_ignore_ascii_case(&m[..]))? as u32
        + 1;
    let mut c = Scan { s, i: 3 };
    c.spaces(1, 2)?;
    let day = c.digits(1, 2)?;
    c.spaces(1, 1)?;
    let mut year = None;
    if c.s[c.i..]
        .iter()
        .take(5)
        .take_while(|b| b.is_ascii_digit())
        .count()
        == 4
    {
        year = Some(c.digits(4, 4)? as i64);
        c.spaces(1, 1)?;
    }
    let hour = c.digits(2, 2)?;
    c.lit(b':')?;
    let minute = c.digits(2, 2)?;
    c.lit(b':')?;
    let second = c.digits(2, 2)?;
    let nanos = c.fraction()?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let mut t = Civil {
        year: 0,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
    };
    let ms = match year {
        Some(y) => {
            t.year = y;
            tz.utc_ms_of(&t)
        }
        None => {
            // The latest year that does not put the message in the future (beyond
            // a week of clock skew): Dec 31 read on Jan 1 is last year's, Jan 1
            // read on Dec 31 next year's.
            let now_year = tz.year_at(now_ms);
            [now_year + 1, now_year, now_year - 1]
                .into_iter()
                .filter_map(|y| tz.utc_ms_of(&Civil { year: y, ..t }))
                .find(|ms| *ms <= now_ms + FUTURE_SKEW_MS)
        }
    };
    Some((ms, c.i))
}

struct Scan<'a> {
    s: &'a [u8],
    i: usize,
}

impl Scan<'_> {
    fn digits(&mut self, min: usize, max: usize) -> Option<u32> {
        let n = self.s[self.i..]
            .iter()
            .take(max)
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n < min {
            return None;
        }
        let v = num(&self.s[self.i..self.i + n]);
        self.i += n;
        Some(v)
    }
    fn spaces(&mut self, min: usize, max: usize) -> Option<()> {
        let n = self.s[self.i..]
            .iter()
            .take(max)
            .take_while(|c| **c == b' ')
            .count();
        self.i += n;
        (n >= min).then_some(())
    }
    fn lit(&mut self, c: u8) -> Option<()> {
        (self.s.get(self.i) == Some(&c)).then(|| self.i += 1)
    }
    fn lit_any(&mut self, a: u8, b: u8) -> Option<()> {
        matches!(self.s.get(self.i), Some(c) if *c == a || *c == b).then(|| self.i += 1)
    }
    /// Optional `.` and 1–9 digits → nanoseconds (more digits are an error).
    fn fraction(&mut self) -> Option<u32> {
        if self.s.get(self.i) != Some(&b'.') {
            return Some(0);
        }
        self.i += 1;
        let start = self.i;
        let n = self.s[start..]
            .iter()
            .take_while(|c| c.is_ascii_digit())
            .count();
        if n == 0 || n > 9 {
            return None;
        }
        self.i += n;
        Some(num(&self.s[start..start + n]) * 10u32.pow(9 - n as u32))
    }
}

/// RFC 3339 `YYYY-MM-DDTHH:MM:SS[.f](Z|±HH:MM)`, the whole of `s`. With
/// `zone_optional`, a time without zone is read in `tz` (rsyslog's RFC 3164 variant).
fn parse_rfc3339(s: &[u8], tz: &TimeZone, zone_optional: bool) -> Option<i64> {
    let mut c = Scan { s, i: 0 };
    let year = c.digits(4, 4)? as i64;
    c.lit(b'-')?;
    let month = c.digits(2, 2)?;
    c.lit(b'-')?;
    let day = c.digits(2, 2)?;
    c.lit_any(b'T', b't')?;
    let hour = c.digits(2, 2)?;
    c.lit(b':')?;
    let minute = c.digits(2, 2)?;
    c.lit(b':')?;
    let second = c.digits(2, 2)?;
    let nanos = c.fraction()?;
    if hour > 23 || minute > 59 || second > 60 {
        return None;
    }
    let offset = match s.get(c.i) {
        Some(b'Z' | b'z') => {
            c.i += 1;
            TimeZone::Utc
        }
        Some(sign @ (b'+' | b'-')) => {
            let sign = if *sign == b'-' { -1 } else { 1 };
            c.i += 1;
            let h = c.digits(2, 2)?;
            c.lit(b':')?;
            let m = c.digits(2, 2)?;
            if h > 23 || m > 59 {
                return None;
            }
            TimeZone::Fixed(sign * (h * 3600 + m * 60) as i32)
        }
        None if zone_optional => *tz,
        _ => return None,
    };
    if c.i != s.len() {
        return None;
    }
    offset.utc_ms_of(&Civil {
        year,
        month,
        day,
        hour,
        minute,
        second,
        nanos,
    })
}

fn is_leap(y: i64) -> bool {
    y % 4 == 0 && (y % 100 != 0 || y % 400 == 0)
}

fn days_in_month(y: i64, m: u32) -> u32 {
    match m {
        2 if is_leap(y) => 29,
        2 => 28,
        4 | 6 | 9 | 11 => 30,
        _ => 31,
    }
}

/// Days since 1970-01-01 of a proleptic Gregorian date (H. Hinnant's algorithm).
fn days_from_civil(y: i64, m: u32, d: u32) -> i64 {
    let y = if m <= 2 { y - 1 } else { y };
    let era = y.div_euclid(400);
    let yoe = y - era * 400;
    let mp = (m as i64 + 9) % 12;
    let doy = (153 * mp + 2) / 5 + d as i64 - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month, day) of a day count since 1970-01-01.
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (yoe + era * 400 + i64::from(m <= 2), m, d)
}

#[cfg(test)]
mod unit {
    use super::*;

    #[test]
    fn civil_roundtrip() {
        for days in [-800_000i64, -1, 0, 1, 11_016, 20_000, 2_000_000] {
            let (y, m, d) = civil_from_days(days);
            assert_eq!(days_from_civil(y, m, d), days);
        }
        assert_eq!(days_from_civil(2000, 3, 1), 11_017);
    }

    #[test]
    fn time_zones() {
        assert_eq!(TimeZone::parse("UTC"), Ok(TimeZone::Utc));
        assert_eq!(TimeZone::parse("local"), Ok(TimeZone::Local));
        assert_eq!(TimeZone::parse("+02:00"), Ok(TimeZone::Fixed(7200)));
        assert_eq!(TimeZone::parse("-0530"), Ok(TimeZone::Fixed(-19_800)));
        assert_eq!(TimeZone::parse("+02"), Ok(TimeZone::Fixed(7200)));
        for bad in [
            "", "CET", "+2:00", "+24:00", "+02:60", "02:00", "+02:0", "+0200:",
        ] {
            assert!(TimeZone::parse(bad).is_err(), "{bad}");
        }
    }
}
