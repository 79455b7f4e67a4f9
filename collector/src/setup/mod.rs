//! Getting started: certificates ([`certs`]), the all-in-one demo ([`quickstart`])
//! and `serve --check-config` ([`check`]).

pub mod certs;
pub mod check;
pub mod quickstart;
