//! Getting started: certificates ([`certs`]), the all-in-one demo ([`quickstart`])
//! `serve --check-config` ([`check`]) and API tokens ([`token`]).

pub mod certs;
pub mod check;
pub mod quickstart;
pub mod token;
