//! Collector metrics, rendered in Prometheus text format on `GET /metrics`.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::gauge::Gauge;
use prometheus_client::registry::Registry;

#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct ErrorLabels {
    pub kind: String,
}

/// A source (`sources[N]`).
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceLabels {
    pub source: String,
}

/// A source's errors by kind.
#[derive(Clone, Debug, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct SourceErrorLabels {
    pub source: String,
    pub kind: String,
}

/// Every counter the collector exports.
pub struct Metrics {
    registry: Registry,
    pub records_in: Counter,
    pub records_deduplicated: Counter,
    pub records_retimed: Counter,
    pub bytes_in: Counter,
    pub bytes_in_compressed: Counter,
    pub batches_in: Counter,
    pub connections_total: Counter,
    pub connections_active: Gauge,
    pub errors: Family<ErrorLabels, Counter>,
    pub http_requests: Counter,
    pub kafka_requests: Counter,
    pub retention_segments: Counter,
    pub retention_bytes: Counter,
    /// Partitions that cannot take writes now (set when `/healthz` or `/metrics`
    /// is asked).
    pub partitions_unwritable: Gauge,
    /// Descriptors: the process's limit and use, the store's open files (set
    /// when `/metrics` is asked).
    pub descriptor_limit: Gauge,
    pub descriptors_open: Gauge,
    pub store_open_writers: Gauge,
    pub store_read_handles: Gauge,
    pub store_read_cache_bytes: Gauge,
    /// The agents connected now (`/v1/agents`).
    pub agents: std::sync::Arc<crate::ingest::agents::Agents>,
    /// Kafka sources: records read, durably stored, dropped as already stored,
    /// refused (malformed Tributary headers); errors by kind; lag in records.
    pub source_consumed: Family<SourceLabels, Counter>,
    pub source_stored: Family<SourceLabels, Counter>,
    pub source_duplicates: Family<SourceLabels, Counter>,
    pub source_rejected: Family<SourceLabels, Counter>,
    pub source_errors: Family<SourceErrorLabels, Counter>,
    pub source_lag: Family<SourceLabels, Gauge>,
    /// Each source's state and problems (`/healthz`).
    pub sources: std::sync::Arc<crate::source::health::SourcesHealth>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::with_prefix("tributary");
        let m = Metrics {
            agents: Default::default(),
            source_consumed: Family::default(),
            source_stored: Family::default(),
            source_duplicates: Family::default(),
            source_rejected: Family::default(),
            source_errors: Family::default(),
            source_lag: Family::default(),
            sources: Default::default(),
            records_in: Counter::default(),
            records_deduplicated: Counter::default(),
            records_retimed: Counter::default(),
            bytes_in: Counter::default(),
            bytes_in_compressed: Counter::default(),
            batches_in: Counter::default(),
            connections_total: Counter::default(),
            connections_active: Gauge::default(),
            errors: Family::default(),
            http_requests: Counter::default(),
            kafka_requests: Counter::default(),
            retention_segments: Counter::default(),
            retention_bytes: Counter::default(),
            partitions_unwritable: Gauge::default(),
            descriptor_limit: Gauge::default(),
            descriptors_open: Gauge::default(),
            store_open_writers: Gauge::default(),
            store_read_handles: Gauge::default(),
            store_read_cache_bytes: Gauge::default(),
            registry: Registry::default(),
        };
        registry.register(
            "ingest_records",
            "Records durably stored",
            m.records_in.clone(),
        );
        registry.register(
            "ingest_duplicates",
            "Records dropped because they were already stored (agent resends)",
            m.records_deduplicated.clone(),
        );
        registry.register(
            "ingest_retimed_records",
            "Records stored with their arrival time because their own was further from the collector's clock than ingest.max_clock_skew",
            m.records_retimed.clone(),
        );
        registry.register(
            "ingest_bytes",
            "Uncompressed payload bytes durably stored",
            m.bytes_in.clone(),
        );
        registry.register(
            "ingest_compressed_bytes",
            "Compressed batch bytes received",
            m.bytes_in_compressed.clone(),
        );
        registry.register(
            "ingest_batches",
            "Batches durably stored and acknowledged",
            m.batches_in.clone(),
        );
        registry.register(
            "ingest_connections",
            "Agent connections accepted",
            m.connections_total.clone(),
        );
        registry.register(
            "ingest_connections_active",
            "Agent connections open now",
            m.connections_active.clone(),
        );
        registry.register(
            "ingest_errors",
            "Refused frames, batches and connections by kind",
            m.errors.clone(),
        );
        registry.register(
            "http_requests",
            "HTTP API requests",
            m.http_requests.clone(),
        );
        registry.register(
            "kafka_requests",
            "Kafka protocol requests",
            m.kafka_requests.clone(),
        );
        registry.register(
            "retention_deleted_segments",
            "Segments deleted by retention",
            m.retention_segments.clone(),
        );
        registry.register(
            "retention_deleted_bytes",
            "Segment bytes deleted by retention",
            m.retention_bytes.clone(),
        );
        registry.register(
            "partitions_unwritable",
            "Partitions that cannot take writes now (see /healthz for why)",
            m.partitions_unwritable.clone(),
        );
        registry.register(
            "descriptor_limit",
            "The process's soft limit on open file descriptors",
            m.descriptor_limit.clone(),
        );
        registry.register(
            "descriptors_open",
            "File descriptors the process has open",
            m.descriptors_open.clone(),
        );
        registry.register(
            "store_open_writers",
            "Partitions with their active segment files open (3 descriptors each)",
            m.store_open_writers.clone(),
        );
        registry.register(
            "store_read_handles",
            "Segment files open in the store's read cache",
            m.store_read_handles.clone(),
        );
        registry.register(
            "store_read_cache_bytes",
            "Bytes of expanded batches kept for reads by offset (at most 64 MiB)",
            m.store_read_cache_bytes.clone(),
        );
        registry.register(
            "source_records_consumed",
            "Records a Kafka source read from its brokers",
            m.source_consumed.clone(),
        );
        registry.register(
            "source_records_stored",
            "Records a Kafka source stored durably",
            m.source_stored.clone(),
        );
        registry.register(
            "source_duplicates",
            "Records a Kafka source read that were already stored (re-reads after a restart, agent resends)",
            m.source_duplicates.clone(),
        );
        registry.register(
            "source_records_rejected",
            "Records a Kafka source refused for malformed tributary.* headers",
            m.source_rejected.clone(),
        );
        registry.register(
            "source_errors",
            "Kafka source errors by kind (broker, group, store, commit, batch_skipped)",
            m.source_errors.clone(),
        );
        registry.register(
            "source_lag_records",
            "Records in a Kafka source's assigned partitions not stored yet (high watermark minus position)",
            m.source_lag.clone(),
        );
        Metrics { registry, ..m }
    }

    /// Count a source error of `kind`.
    pub fn source_error(&self, source: &str, kind: &str) {
        self.source_errors
            .get_or_create(&SourceErrorLabels {
                source: source.to_owned(),
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn error(&self, kind: &str) {
        self.errors
            .get_or_create(&ErrorLabels {
                kind: kind.to_owned(),
            })
            .inc();
    }

    pub fn render(&self) -> String {
        let mut out = String::new();
        if prometheus_client::encoding::text::encode(&mut out, &self.registry).is_err() {
            out.clear();
        }
        out
    }
}
