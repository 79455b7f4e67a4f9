//! Agent counters, exposed in Prometheus text format on `metrics.listen`.

use std::fmt::Write;
use std::sync::atomic::{AtomicU64, Ordering};

/// Counters shared by the agent's stages. Relaxed atomics: they are statistics.
#[derive(Debug, Default)]
pub struct AgentStats {
    pub lines_read: AtomicU64,
    pub bytes_read: AtomicU64,
    pub batches_sent: AtomicU64,
    pub bytes_sent: AtomicU64,
    pub batches_acked: AtomicU64,
    pub records_acked: AtomicU64,
    pub records_rejected: AtomicU64,
    pub retries: AtomicU64,
    pub connections: AtomicU64,
    pub connect_failures: AtomicU64,
    /// Syslog messages received (all listeners, parsed or not).
    pub syslog_messages: AtomicU64,
    /// Syslog messages kept whole with `fields.parse_error`.
    pub syslog_parse_errors: AtomicU64,
    /// Syslog messages cut at `max_message_bytes`.
    pub syslog_truncated: AtomicU64,
    /// Syslog messages dropped because the pipeline was full (UDP only).
    pub syslog_udp_dropped: AtomicU64,
    /// Syslog TCP and TLS connections accepted.
    pub syslog_connections: AtomicU64,
    /// Bytes in the disk spool now (a gauge).
    pub spool_bytes: AtomicU64,
    /// Files open for reading now (a gauge).
    pub files_open: AtomicU64,
    /// Records in batches sent (first sends; resends count in `retries`).
    pub records_sent: AtomicU64,
}

impl AgentStats {
    /// Prometheus text exposition.
    pub fn render(&self) -> String {
        let mut out = String::new();
        let mut counter = |name: &str, help: &str, v: &AtomicU64| {
            let _ = writeln!(out, "# HELP tributary_agent_{name} {help}");
            let _ = writeln!(out, "# TYPE tributary_agent_{name} counter");
            let _ = writeln!(out, "tributary_agent_{name} {}", v.load(Ordering::Relaxed));
        };
        counter(
            "lines_read_total",
            "Lines read from files.",
            &self.lines_read,
        );
        counter(
            "bytes_read_total",
            "Bytes read from files.",
            &self.bytes_read,
        );
        counter(
            "batches_sent_total",
            "Batches sent to the output (collector or Kafka; first sends).",
            &self.batches_sent,
        );
        counter(
            "bytes_sent_total",
            "Compressed batch bytes sent.",
            &self.bytes_sent,
        );
        counter(
            "batches_acked_total",
            "Batches acknowledged as durably stored (Kafka: by every in-sync replica).",
            &self.batches_acked,
        );
        counter(
            "records_acked_total",
            "Records acknowledged as durably stored.",
            &self.records_acked,
        );
        counter(
            "records_rejected_total",
            "Records the output refused permanently (a collector's refusal; for Kafka, records larger than max_message_bytes).",
            &self.records_rejected,
        );
        counter(
            "batch_retries_total",
            "Batches sent again after a connection or delivery failed.",
            &self.retries,
        );
        counter(
            "connections_total",
            "Connections established to collectors.",
            &self.connections,
        );
        counter(
            "connect_failures_total",
            "Failed attempts to reach a collector or to deliver to Kafka.",
            &self.connect_failures,
        );
        counter(
            "syslog_messages_total",
            "Syslog messages received.",
            &self.syslog_messages,
        );
        counter(
            "syslog_parse_errors_total",
            "Syslog messages that did not parse (kept whole with fields.parse_error).",
            &self.syslog_parse_errors,
        );
        counter(
            "syslog_truncated_total",
            "Syslog messages cut at max_message_bytes.",
            &self.syslog_truncated,
        );
        counter(
            "syslog_udp_dropped_total",
            "Syslog UDP messages dropped because the pipeline was full.",
            &self.syslog_udp_dropped,
        );
        counter(
            "syslog_connections_total",
            "Syslog TCP and TLS connections accepted.",
            &self.syslog_connections,
        );
        counter(
            "records_sent_total",
            "Records in batches sent to a collector (first sends).",
            &self.records_sent,
        );
        gauge(
            &mut out,
            "spool_bytes",
            "Bytes of batches waiting in the disk spool.",
            &self.spool_bytes,
        );
        gauge(
            &mut out,
            "files_open",
            "Files open for reading.",
            &self.files_open,
        );
        out
    }
}

fn gauge(out: &mut String, name: &str, help: &str, v: &AtomicU64) {
    let _ = writeln!(out, "# HELP tributary_agent_{name} {help}");
    let _ = writeln!(out, "# TYPE tributary_agent_{name} gauge");
    let _ = writeln!(out, "tributary_agent_{name} {}", v.load(Ordering::Relaxed));
}
