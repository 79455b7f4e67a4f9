//! # tributary-agent
//!
//! The lightweight half of Tributary. Data flows one way through stages joined by
//! bounded channels, so a slow collector pauses reading instead of growing memory:
//!
//! ```text
//! input::file (tail, split lines, encode blocks) → Chunk
//!   → batch::Batcher (per topic, size/count/linger, compress) → Batch
//!   → ship::Shipper (TLS, pipelined, ACK after durable append)
//!     or ship::to_kafka::KafkaShipper (v2 batches, acks=all, one in flight)
//!   ⇢ checkpoint (acknowledged positions only; the one return path)
//! ```
//! [`run`] wires the stages; `main.rs` only parses flags and loads the config.
//! The agent never links the collector's storage engine.

pub mod batch;
pub mod check;
pub mod checkpoint;
pub mod config;
pub mod input;
pub mod memory;
pub mod metrics;
pub mod ship;
pub mod spool;
pub mod stats;

use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

use crate::batch::{BatchLimits, Batcher};
use crate::checkpoint::Checkpoints;
use crate::checkpoint::Marks;
use crate::config::{AgentConfig, Output, ReadFrom};
use crate::input::file::{FileInput, FileInputSettings, Guard};
use crate::input::syslog::SyslogInput;
use crate::ship::Shipper;
use crate::ship::to_kafka::KafkaShipper;
use crate::spool::Spool;
use crate::stats::AgentStats;

/// Why the agent could not start or stopped with an error.
#[derive(Debug, Error)]
pub enum AgentError {
    #[error("file input for topic {topic}: {source}")]
    FileInput {
        topic: String,
        source: input::file::FileInputError,
    },
    #[error("syslog input for topic {topic}: {source}")]
    SyslogInput {
        topic: String,
        source: input::syslog::SyslogInputError,
    },
    #[error("journald input for topic {topic}: {message}")]
    JournaldInput { topic: String, message: String },
    #[error("checkpoints: {0}")]
    Checkpoint(#[from] checkpoint::CheckpointError),
    #[error("spool: {0}")]
    Spool(#[from] spool::SpoolError),
    #[error("metrics listener on {addr}: {source}")]
    Metrics {
        addr: String,
        source: std::io::Error,
    },
}

/// Encoded chunks waiting for the batcher (each up to `chunk_bytes`).
const CHUNK_QUEUE: usize = 4;
/// Closed batches waiting for the shipper.
const BATCH_QUEUE: usize = 2;
/// Batches in flight per connection.
const WINDOW: usize = 4;
/// Acknowledged positions are saved at most this often (and at shutdown). After a
/// crash, what was acknowledged since the last save is sent again and dropped by
/// the collector as duplicates.
const CHECKPOINT_INTERVAL: Duration = Duration::from_millis(500);

/// Run the agent until `shutdown` is cancelled, then deliver what is in flight
/// (bounded by a drain timeout) and return.
pub async fn run(config: AgentConfig, shutdown: CancellationToken) -> Result<(), AgentError> {
    let stats = Arc::new(AgentStats::default());
    let chunk_bytes = (256 << 10).min(config.batch_max_bytes);
    let (chunk_tx, chunk_rx) = mpsc::channel(CHUNK_QUEUE);
    // The Kafka shipper holds one batch beyond the one in flight (encoded ahead),
    // so its queue is one shorter: the same memory in batches either way.
    let batch_queue = match config.output {
        Output::Kafka(_) => BATCH_QUEUE - 1,
        Output::Collectors { .. } => BATCH_QUEUE,
    };
    let (batch_tx, batch_rx) = mpsc::channel(batch_queue);
    let checkpoints = Checkpoints::load(&config.data_dir)?;
    let spool = Spool::open(&config.data_dir.join("spool"), config.spool_max_bytes)?;
    let resume = checkpoints.resume_points();
    let (register_tx, register_rx) = mpsc::unbounded_channel();
    let marks = Arc::new(Marks::with_checkpointer(register_tx));
    checkpoints.publish(&marks);

    let mut inputs = Vec::new();
    let mut journald_inputs = Vec::new();
    for f in &config.files {
        let input = FileInput::new(FileInputSettings {
            topic: f.topic.clone(),
            host: config.host.clone(),
            include: f.include.clone(),
            exclude: f.exclude.clone(),
            read_from_beginning: f.read_from == ReadFrom::Beginning,
            fields_json: f.fields_json.clone(),
            max_line_bytes: f.max_line_bytes,
            json: f.json.clone(),
            format: f.format,
            multiline: f.multiline.clone(),
            rescan_interval: Duration::from_secs(1),
            poll_interval: Duration::from_millis(250),
            chunk_bytes,
            close_inactive: f.close_inactive,
            resume: resume.clone(),
            marks: marks.clone(),
            stats: stats.clone(),
            guard: Guard {
                follow_symlinks: f.follow_symlinks,
                files: config.protected.clone(),
                dirs: vec![config.data_dir.clone(), config.data_dir.join("spool")],
            },
        })
        .map_err(|source| AgentError::FileInput {
            topic: f.topic.to_string(),
            source,
        })?;
        inputs.push(tokio::spawn(input.run(chunk_tx.clone(), shutdown.clone())));
    }
    for j in &config.journald {
        input::journald::check_journalctl(&j.journalctl).map_err(|message| {
            AgentError::JournaldInput {
                topic: j.topic.to_string(),
                message,
            }
        })?;
        let cursor = checkpoints.journal_cursor(&j.key());
        let input = input::journald::JournaldInput::new(
            j.clone(),
            cursor,
            config.host.clone(),
            chunk_bytes,
        );
        journald_inputs.push(tokio::spawn(input.run(chunk_tx.clone(), shutdown.clone())));
    }
    let mut syslog_inputs = Vec::new();
    for s in &config.syslog {
        let input = SyslogInput::bind(s, chunk_bytes, stats.clone())
            .await
            .map_err(|source| AgentError::SyslogInput {
                topic: s.topic.to_string(),
                source,
            })?;
        syslog_inputs.push(tokio::spawn(input.run(chunk_tx.clone(), shutdown.clone())));
    }
    drop(chunk_tx);

    let metrics = match &config.metrics_listen {
        Some(addr) => Some(
            metrics::serve(addr, stats.clone(), shutdown.clone())
                .await
                .map_err(|source| AgentError::Metrics {
                    addr: addr.clone(),
                    source,
                })?,
        ),
        None => None,
    };

    let batcher = tokio::spawn(
        Batcher::new(BatchLimits {
            max_bytes: config.batch_max_bytes,
            max_records: config.batch_max_records,
            linger: config.linger,
            compression: config.compression,
        })
        .with_stats(stats.clone())
        .run(chunk_rx, batch_tx),
    );
    let (acked_tx, acked_rx) = mpsc::unbounded_channel();
    let checkpointer = tokio::spawn(checkpoint::run(
        checkpoints,
        acked_rx,
        register_rx,
        marks,
        CHECKPOINT_INTERVAL,
    ));
    // The output's certificate, key and CA are read again when they change or on SIGHUP.
    let mut files: Vec<Arc<dyn tributary_common::reload::Watched>> = Vec::new();
    if let Output::Collectors { tls, .. } = &config.output {
        files.push(tls.clone());
    }
    for s in &config.syslog {
        if let Some(t) = &s.tls {
            files.push(t.clone());
        }
    }
    let watched = tokio::spawn(tributary_common::reload::watch(files, shutdown.clone()));
    let drain_timeout = Duration::from_secs(5);
    // Returns when everything was delivered or the drain time after shutdown ran out;
    // dropping it closes the acknowledgement channel, so the checkpointer saves last.
    match config.output {
        Output::Collectors {
            collectors,
            tls,
            tls_files,
        } => {
            tracing::info!(
                host = %config.host,
                inputs = config.files.len(),
                syslog_inputs = config.syslog.len(),
                journald_inputs = config.journald.len(),
                collectors = ?collectors.iter().map(|c| c.addr.as_str()).collect::<Vec<_>>(),
                compression = config.compression.name(),
                "agent started"
            );
            let shipper = Shipper {
                collectors,
                tls,
                tls_files,
                host: config.host.clone(),
                window: WINDOW,
                drain_timeout,
                stats: stats.clone(),
                acked: Some(acked_tx),
            };
            shipper.run(batch_rx, spool, shutdown.clone()).await;
        }
        Output::Kafka(output) => {
            tracing::info!(
                host = %config.host,
                inputs = config.files.len(),
                syslog_inputs = config.syslog.len(),
                journald_inputs = config.journald.len(),
                kafka_brokers = ?output.brokers,
                kafka_topic = %output.topic.for_topic("{{topic}}"),
                compression = ?output.compression,
                "agent started"
            );
            let shipper = KafkaShipper {
                output,
                drain_timeout,
                stats: stats.clone(),
                acked: Some(acked_tx),
            };
            shipper.run(batch_rx, spool, shutdown.clone()).await;
        }
    }
    let _ = checkpointer.await;
    let _ = watched.await;
    for i in inputs {
        match i.await {
            Ok(Err(e)) => tracing::error!(error = %e, "file input failed"),
            Err(e) => tracing::error!(error = %e, "file input task panicked"),
            Ok(Ok(())) => {}
        }
    }
    for i in syslog_inputs {
        match i.await {
            Ok(Err(e)) => tracing::error!(error = %e, "syslog input failed"),
            Err(e) => tracing::error!(error = %e, "syslog input task panicked"),
            Ok(Ok(())) => {}
        }
    }
    for j in journald_inputs {
        let _ = j.await;
    }
    let _ = batcher.await;
    if let Some(m) = metrics {
        let _ = m.await;
    }
    tracing::info!(
        records_acked = stats
            .records_acked
            .load(std::sync::atomic::Ordering::Relaxed),
        "agent stopped"
    );
    Ok(())
}
