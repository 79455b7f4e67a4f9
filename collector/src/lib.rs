//! # tributary-collector
//!
//! The central half of Tributary (binary `tributary`). One-way data flow:
//!
//! ```text
//! ingest/ (TLS, frames, open + validate batch) → storage/ (route blocks to partitions,
//! append, group-commit fsync) → ACK
//! store (tributary-store: segments, indexes) → storage::StoreReader → api/ (read by
//! offset, long-poll, query, groups) → client/ (the CLI)
//! ```
//!
//! Front doors, each a folder: [`ingest`] (agents), [`api`] (HTTP), [`kafka`] (the
//! Kafka protocol); the web console goes in `console/`. [`source`] pulls instead:
//! it consumes Kafka topics (agents' `output.kafka`, other producers) into the
//! store through [`storage::Storage`], like ingest. Behind them:
//! - [`storage`]: the only place tokio meets the synchronous store. Ingest holds
//!   [`storage::Storage`], the one handle that appends; every other front door gets a
//!   [`storage::StoreReader`], which can read and commit group offsets but not write
//!   records.
//! - [`retention`]: the background task deleting old segments; [`descriptors`]: the
//!   process's file-descriptor plan; [`metrics`]; [`config`]: `collector.yaml`,
//!   two-stage (file → resolved); [`server`]: binds and runs it all.
//! - [`client`]: the client subcommands and their HTTP client.
//! - [`setup`]: certificates, quickstart, `serve --check-config`.
//! - [`alloc`]: the global allocator that keeps hostile counts in decoders from
//!   aborting the process.

pub mod access;
pub mod alloc;
pub mod api;
pub mod client;
pub mod config;
pub mod console;
pub mod descriptors;
pub mod ingest;
pub mod kafka;
pub mod metrics;
pub mod retention;
pub mod server;
pub mod setup;
pub mod source;
pub mod storage;
