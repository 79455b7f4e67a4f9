//! Inputs: where records enter the agent.

mod chunk;
pub mod container;
pub mod file;
pub mod journald;
pub mod json;
pub mod multiline;

pub use chunk::Chunk;
pub mod syslog;
