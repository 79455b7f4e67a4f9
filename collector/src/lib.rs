//! # tributary-collector
//!
//! The central half of Tributary (binary `tributary`). One-way data flow:
//!
//! ```text
//! ingest (TLS, frames, open + validate batch) → storage (route blocks to partitions,
//! append, group-commit fsync) → ACK
//! store (tributary-store: segments, index) → http (read by offset, long-poll) → cli
//! ```
//! - [`config`]: `collector.yaml`, two-stage (file → resolved);
//! - [`ingest`]: accept loop with a connection cap, one task per agent connection;
//! - [`storage`]: the only place tokio meets the synchronous store; [`retention`]:
//!   the background task deleting old segments;
//! - [`http`]: the API; [`client`] and [`cli`]: the client subcommands;
//! - [`certs`], [`quickstart`]: getting started; [`check`]: `serve --check-config`.

pub mod budget;
pub mod certs;
pub mod check;
pub mod cli;
pub mod client;
pub mod clock;
pub mod config;
pub mod descriptors;
pub mod groups;
pub mod http;
pub mod http_server;
pub mod ingest;
pub mod metrics;
pub mod query;
pub mod quickstart;
pub mod retention;
pub mod server;
pub mod storage;
