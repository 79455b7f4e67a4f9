//! The client subcommands (`topics`, `consume`, `query`, `groups`): their
//! arguments and output ([`commands`]) over the HTTP API client ([`http`]).

pub mod commands;
pub mod http;

pub use http::{ApiClient, ClientError};
