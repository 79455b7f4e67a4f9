//! Inputs: where records enter the agent.

pub mod file;
pub mod syslog;
