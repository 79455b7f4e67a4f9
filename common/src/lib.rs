//! # tributary-common
//!
//! Only what the agent and the collector must agree on:
//!
//! - [`record`]: the record model and its block encoding (shared by wire and disk);
//! - [`wire`]: the framed, versioned ingest protocol (pure codec, no sockets);
//! - [`codec`]: batch compression (none, gzip, lz4) with hard size limits;
//! - [`config`]: YAML loading with precise errors, sizes and durations;
//! - [`kafka`]: the client side of the Kafka protocol (connections, batch codec);
//! - [`json`]: a validating JSON scanner that finds an object's members in place;
//! - [`names`]: topic names and syslog severities, spelled one way;
//! - [`fs`]: `write_atomic`, the one way small state files are replaced;
//! - [`error`]: one-line error reports that say each cause once;
//! - [`ratelimit`]: warnings a flood can trigger, at most one per kind and interval;
//! - [`tls`]: rustls configurations from PEM files, errors naming the file;
//! - [`timefmt`]: RFC 3339 formatting and parsing of epoch milliseconds;
//! - [`telemetry`]: the tracing subscriber both binaries install.
//!
//! No tailing code and no storage code lives here.

pub mod codec;
pub mod config;
pub mod error;
pub mod fs;
pub mod json;
pub mod kafka;
pub mod limits;
pub mod names;
pub mod ratelimit;
pub mod record;
pub mod reload;
pub mod shutdown;
pub mod telemetry;
pub mod timefmt;
pub mod tls;
pub mod wire;
