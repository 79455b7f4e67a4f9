//! Inputs: where records enter the agent.

mod chunk;
pub mod file;
pub mod json;

pub use chunk::Chunk;
pub mod syslog;
