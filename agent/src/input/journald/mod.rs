//! The `journald` input: the systemd journal, read by `journalctl -o export
//! --follow`, one record per entry.
//!
//! - `journalctl` runs as a child (`--merge`, so entries of every boot and of
//!   journals copied from other machines are read too; `--directory`/`--file` for
//!   other journals; `--unit` and `FIELD=value` matches as filters). A blocking
//!   thread parses its output ([`export`]) and sends chunks, waiting when the
//!   pipeline is full (journalctl then waits on its pipe).
//! - Records: message = `MESSAGE` (bytes as they are; cut and marked truncated past
//!   `max_message_bytes`), host = `_HOSTNAME` (else the agent's), source
//!   `journald`, time = `__REALTIME_TIMESTAMP`, fields = the user fields (no leading
//!   `_`), `_SYSTEMD_UNIT`, `_PID`, `_COMM`, `_TRANSPORT`, and `severity` named from
//!   `PRIORITY`.
//! - Exactly once: the entry's cursor is its checkpoint, saved only once the
//!   collector acknowledged it (`Chunk::cursor`); a restart continues
//!   `--after-cursor`. Records carry `source_id` = hash of the journal's sequence
//!   id and offset = the entry's sequence number (both from the cursor), so what a
//!   crash makes the agent send again is dropped by the collector.
//! - A `journalctl` that exits is started again after the last entry read (1 s,
//!   doubling to 30 s); its error lines are logged with what to do.

pub mod export;

use std::io::{BufRead, BufReader};
use std::path::PathBuf;
use std::process::{Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;
use tributary_common::names::severity_name;
use tributary_common::record::{BlockWriter, FLAG_TRUNCATED};

use self::export::{Entry, read_entry};
use crate::input::Chunk;

/// A resolved `type: journald` input.
#[derive(Debug, Clone)]
pub struct JournaldConfig {
    pub topic: Arc<str>,
    pub fields_json: Arc<[u8]>,
    /// `directory`: a journal directory instead of the system's.
    pub directory: Option<PathBuf>,
    /// `files`: journal files instead of the system's.
    pub files: Vec<PathBuf>,
    pub units: Vec<String>,
    /// `match`: `FIELD=value` filters.
    pub matches: Vec<String>,
    /// First start (no checkpoint): only entries from now on.
    pub since_now: bool,
    pub max_message_bytes: usize,
    /// The program to run.
    pub journalctl: PathBuf,
}

impl JournaldConfig {
    /// What the checkpoint of this input is kept under.
    pub fn key(&self) -> String {
        let what = match (&self.directory, self.files.is_empty()) {
            (Some(d), _) => d.display().to_string(),
            (None, false) => self
                .files
                .iter()
                .map(|f| f.display().to_string())
                .collect::<Vec<_>>()
                .join(","),
            (None, true) => "local".into(),
        };
        format!("journald:{}:{what}", self.topic)
    }

    /// journalctl's arguments, continuing after `cursor` when there is one.
    pub fn args(&self, cursor: Option<&str>) -> Vec<String> {
        let mut a = vec![
            "--output=export".to_owned(),
            "--follow".into(),
            "--merge".into(),
        ];
        if let Some(d) = &self.directory {
            a.push(format!("--directory={}", d.display()));
        }
        for f in &self.files {
            a.push(format!("--file={}", f.display()));
        }
        for u in &self.units {
            a.push(format!("--unit={u}"));
        }
        match cursor {
            Some(c) => {
                a.push(format!("--after-cursor={c}"));
                a.push("--no-tail".into());
            }
            None if self.since_now => a.push("--lines=0".into()),
            None => a.push("--no-tail".into()),
        }
        a.extend(self.matches.iter().cloned());
        a
    }
}

/// Whether `journalctl` can run: `Err` says what to install.
pub fn check_journalctl(program: &std::path::Path) -> Result<(), String> {
    match Command::new(program)
        .arg("--version")
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .status()
    {
        Ok(s) if s.success() => Ok(()),
        Ok(s) => Err(format!("`{} --version` failed ({s})", program.display())),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Err(format!(
            "`{}` not found: the journald input reads the journal with journalctl; install systemd (Debian/Ubuntu: apt install systemd)",
            program.display()
        )),
        Err(e) => Err(format!("cannot run `{}`: {e}", program.display())),
    }
}

pub struct JournaldInput {
    cfg: JournaldConfig,
    key: Arc<str>,
    /// Checkpoint saved by an earlier run.
    cursor: Option<String>,
    host: Arc<str>,
    chunk_bytes: usize,
}

impl JournaldInput {
    pub fn new(
        cfg: JournaldConfig,
        cursor: Option<String>,
        host: Arc<str>,
        chunk_bytes: usize,
    ) -> JournaldInput {
        let key = cfg.key().into();
        JournaldInput {
            cfg,
            key,
            cursor,
            host,
            chunk_bytes,
        }
    }

    /// Follow the journal until `shutdown`.
    pub async fn run(self, tx: mpsc::Sender<Chunk>, shutdown: CancellationToken) {
        let me = Arc::new(self);
        let mut after = me.cursor.clone();
        // Positions grow across runs (time-based), so the batcher keeps the latest.
        let seq0 = SystemTime::now()
            .duration_since(UNIX_EPOCH)
            .map_or(0, |d| d.as_micros() as u64);
        let mut seq = seq0;
        let mut backoff = Duration::from_secs(1);
        loop {
            let args = me.cfg.args(after.as_deref());
            let child = Command::new(&me.cfg.journalctl)
                .args(&args)
                .stdin(Stdio::null())
                .stdout(Stdio::piped())
                .stderr(Stdio::piped())
                .spawn();
            let mut child = match child {
                Ok(c) => c,
                Err(e) => {
                    tracing::error!(program = %me.cfg.journalctl.display(), error = %e,
                        "journald input: cannot start journalctl (install systemd); trying again");
                    tokio::select! {
                        _ = shutdown.cancelled() => return,
                        _ = tokio::time::sleep(backoff) => {}
                    }
                    backoff = (backoff * 2).min(Duration::from_secs(30));
                    continue;
                }
            };
            tracing::info!(topic = %me.cfg.topic, after = after.as_deref().unwrap_or("-"), "reading the journal");
            let stdout = child.stdout.take();
            let stderr = child.stderr.take();
            let child = Arc::new(Mutex::new(child));
            if let Some(err) = stderr {
                std::thread::spawn(move || log_stderr(err));
            }
            let reader = {
                let me = me.clone();
                let tx = tx.clone();
                let start_after = after.clone();
                tokio::task::spawn_blocking(move || match stdout {
                    Some(out) => me.read(out, &tx, seq, start_after),
                    None => (seq, start_after, 0),
                })
            };
            tokio::pin!(reader);
            let done = tokio::select! {
                _ = shutdown.cancelled() => None,
                r = &mut reader => Some(r),
            };
            let stopping = done.is_none();
            // Ours, by handle: stop it (a no-op if it exited), then collect it.
            if let Ok(mut c) = child.lock() {
                if stopping {
                    let _ = c.kill();
                }
                let _ = c.wait();
            }
            let r = match done {
                Some(r) => r,
                None => reader.await,
            };
            let Ok((s, last, entries)) = r else {
                return;
            };
            seq = s;
            after = last;
            if stopping || shutdown.is_cancelled() || tx.is_closed() {
                return;
            }
            if entries > 0 {
                backoff = Duration::from_secs(1);
            }
            tracing::warn!(topic = %me.cfg.topic, retry_in = ?backoff, "journalctl exited; starting it again after the last entry read");
            tokio::select! {
                _ = shutdown.cancelled() => return,
                _ = tokio::time::sleep(backoff) => {}
            }
            backoff = (backoff * 2).min(Duration::from_secs(30));
        }
    }

    /// Parse journalctl's output until it ends; returns the position counter, the
    /// cursor of the last entry read and how many entries were read.
    fn read(
        &self,
        out: std::process::ChildStdout,
        tx: &mpsc::Sender<Chunk>,
        mut seq: u64,
        mut last: Option<String>,
    ) -> (u64, Option<String>, u64) {
        let mut r = BufReader::with_capacity(256 << 10, out);
        let mut entry = Entry::default();
        let mut b = Builder::new(self);
        let mut entries = 0u64;
        loop {
            match read_entry(&mut r, &mut entry, self.cfg.max_message_bytes) {
                Ok(true) => {}
                Ok(false) => break,
                Err(e) => {
                    tracing::warn!(error = %e, "journald input: unreadable journalctl output; starting it again");
                    break;
                }
            }
            entries += 1;
            if let Some(c) = b.push(&entry) {
                last = Some(c);
            }
            // Send when the batch is big, or when journalctl has nothing more yet.
            if b.payload.len() >= self.chunk_bytes || r.buffer().is_empty() {
                seq += 1;
                let at_end = r.buffer().is_empty();
                if let Some(c) = b.take(seq, last.as_deref(), at_end)
                    && tx.blocking_send(c).is_err()
                {
                    return (seq, last, entries);
                }
            }
        }
        seq += 1;
        if let Some(c) = b.take(seq, last.as_deref(), true) {
            let _ = tx.blocking_send(c);
        }
        (seq, last, entries)
    }
}

fn log_stderr(err: std::process::ChildStderr) {
    for line in BufReader::new(err).lines().map_while(Result::ok).take(100) {
        let line = line.trim();
        if line.is_empty() {
            continue;
        }
        if line.contains("insufficient permissions")
            || line.contains("not seeing messages from other users")
            || line.contains("Permission denied")
        {
            tracing::error!(journalctl = %line,
                "journald input: the journal is not readable by this user; add it to the systemd-journal group (usermod -aG systemd-journal USER) or run the agent as a member");
        } else {
            tracing::warn!(journalctl = %line, "journald input");
        }
    }
}

/// Chunks of journal entries: one block per run of entries with the same host and
/// journal sequence id.
struct Builder<'a> {
    input: &'a JournaldInput,
    payload: Vec<u8>,
    block: Option<BlockWriter>,
    host: String,
    sid: u64,
    records: u32,
    fields: Vec<u8>,
}

/// The sequence id and number of a cursor (`s=…;i=…;…`).
fn seqnum(cursor: &str) -> Option<(&str, u64)> {
    let mut s = None;
    let mut i = None;
    for part in cursor.split(';') {
        if let Some(v) = part.strip_prefix("s=") {
            s = Some(v);
        } else if let Some(v) = part.strip_prefix("i=") {
            i = u64::from_str_radix(v, 16).ok();
        }
    }
    Some((s?, i?))
}

/// Trusted fields kept besides the user fields.
const TRUSTED: [&[u8]; 4] = [b"_SYSTEMD_UNIT", b"_PID", b"_COMM", b"_TRANSPORT"];

impl<'a> Builder<'a> {
    fn new(input: &'a JournaldInput) -> Builder<'a> {
        Builder {
            input,
            payload: Vec::new(),
            block: None,
            host: String::new(),
            sid: 0,
            records: 0,
            fields: Vec::new(),
        }
    }

    /// Add one entry; returns its cursor.
    fn push(&mut self, e: &Entry) -> Option<String> {
        let text = |n: &[u8]| {
            e.get(n)
                .map(|(v, _)| String::from_utf8_lossy(v).into_owned())
        };
        let cursor = text(b"__CURSOR");
        let (sid, offset) = match cursor.as_deref().and_then(seqnum) {
            Some((s, i)) => (fnv1a(&[self.input.key.as_bytes(), b"\0", s.as_bytes()]), i),
            // No cursor: nothing to deduplicate by.
            None => (0, 0),
        };
        let host = text(b"_HOSTNAME").unwrap_or_else(|| self.input.host.to_string());
        if self.block.is_none() || self.host != host || self.sid != sid {
            if let Some(b) = self.block.take() {
                b.finish(&mut self.payload);
            }
            self.block = Some(BlockWriter::begin(
                &mut self.payload,
                &host,
                "journald",
                sid,
                &self.input.cfg.fields_json,
            ));
            self.host = host;
            self.sid = sid;
        }
        let ts = e
            .get(b"__REALTIME_TIMESTAMP")
            .and_then(|(v, _)| std::str::from_utf8(v).ok()?.parse::<i64>().ok())
            .map_or_else(tributary_common::timefmt::now_ms, |us| us / 1000);
        let mut map = serde_json::Map::new();
        for (n, v, _) in e.iter() {
            let keep = (!n.starts_with(b"_") && n != b"MESSAGE") || TRUSTED.contains(&n);
            if keep && let Ok(name) = std::str::from_utf8(n) {
                map.insert(
                    name.to_owned(),
                    serde_json::Value::String(String::from_utf8_lossy(v).into_owned()),
                );
            }
        }
        if let Some(p) = text(b"PRIORITY").and_then(|p| p.trim().parse::<u8>().ok())
            && p <= 7
        {
            map.insert("severity".into(), severity_name(p).into());
        }
        self.fields.clear();
        if !map.is_empty() {
            let _ = serde_json::to_writer(&mut self.fields, &map);
        }
        let (message, cut) = e.get(b"MESSAGE").unwrap_or((b"", false));
        let flags = if cut { FLAG_TRUNCATED } else { 0 };
        if let Some(b) = self.block.as_mut() {
            b.push(&mut self.payload, flags, ts, offset, &self.fields, message);
        }
        self.records += 1;
        cursor
    }

    fn take(&mut self, seq: u64, cursor: Option<&str>, at_end: bool) -> Option<Chunk> {
        if let Some(b) = self.block.take() {
            b.finish(&mut self.payload);
        }
        if self.records == 0 {
            self.payload.clear();
            return None;
        }
        let records = std::mem::take(&mut self.records);
        let payload = std::mem::take(&mut self.payload);
        let key = self.input.key.clone();
        Some(Chunk {
            topic: self.input.cfg.topic.clone(),
            payload,
            records,
            source_id: fnv1a(&[key.as_bytes()]),
            path: key,
            start_offset: seq,
            end_offset: seq,
            end_hash: 0,
            crc_base: 0,
            crc: 0,
            cursor: cursor.map(Arc::from),
            at_end,
        })
    }
}

/// FNV-1a over `parts`, never 0: an id that stays the same across runs and builds.
fn fnv1a(parts: &[&[u8]]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in parts.iter().flat_map(|p| p.iter()) {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0100_0000_01b3);
    }
    h.max(1)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cursor_parts() {
        assert_eq!(
            seqnum("s=d0ef;i=1a;b=00;m=0;t=66173d6044000;x=330a"),
            Some(("d0ef", 26))
        );
        assert_eq!(seqnum("garbage"), None);
    }

    #[test]
    fn arguments() {
        let cfg = JournaldConfig {
            topic: "j".into(),
            fields_json: Arc::from(&b""[..]),
            directory: Some("/srv/j".into()),
            files: vec![],
            units: vec!["nginx.service".into()],
            matches: vec!["PRIORITY=3".into()],
            since_now: true,
            max_message_bytes: 1 << 20,
            journalctl: "journalctl".into(),
        };
        let a = cfg.args(None);
        assert!(a.contains(&"--lines=0".into()) && a.contains(&"--unit=nginx.service".into()));
        assert_eq!(a.last().map(String::as_str), Some("PRIORITY=3"));
        let a = cfg.args(Some("s=1;i=2"));
        assert!(a.contains(&"--after-cursor=s=1;i=2".into()) && !a.contains(&"--lines=0".into()));
        assert_eq!(cfg.key(), "journald:j:/srv/j");
    }
}
