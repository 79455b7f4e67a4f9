//! Who an agent connection is: the names of its client certificate (mutual TLS),
//! and what it may write under them.
//!
//! With `ingest.tls.client_ca` set, every connection presents a certificate; its
//! DNS subject alternative names (else its common name) are the hosts it may write
//! as, and the first of them is its identity. Every block it sends is stamped with
//! that identity before it is stored, so records show who sent them and
//! deduplication is keyed by it ([`BlockHeader::dedup_key`]): an agent can never
//! raise another agent's high-water marks, whatever host or source id it claims.
//! Under `enforce` (the default) a block whose host is not one of the names is
//! refused, except syslog records relayed by the agent (source `syslog+…`, no
//! source id), which keep the sender's HOSTNAME. Under `tag` every host is
//! accepted and the identity is only recorded.
//!
//! Without mutual TLS there is no identity: blocks are stored as sent, and a block
//! that claims one is refused (only the collector stamps it).
//!
//! [`BlockHeader::dedup_key`]: tributary_common::record::BlockHeader::dedup_key

use serde::Deserialize;
use thiserror::Error;
use tributary_common::record::{self, DecodeError};

/// `ingest.identity`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize, Default)]
#[serde(rename_all = "lowercase")]
pub enum IdentityMode {
    /// Records' host must be one of the certificate's names (syslog relays excepted).
    #[default]
    Enforce,
    /// Any host is accepted; the certificate identity is stored with the records.
    Tag,
}

/// Why a connection's HELLO or batch is refused over identity.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum IdentityError {
    #[error(
        "host `{host}` is not a name of the agent's certificate ({names}); give the agent a certificate for `{host}` or set `host: {first}` in its config (ingest.identity: enforce)",
        names = .names.join(", "),
        first = .names.first().map(String::as_str).unwrap_or("")
    )]
    HostNotAllowed { host: String, names: Vec<String> },
    #[error(
        "the client certificate names no host (no DNS name, no common name) to identify the agent by"
    )]
    Unnamed,
    #[error("batch payload")]
    Payload(#[source] DecodeError),
}

/// A connection's authenticated identity, when mutual TLS is on.
#[derive(Debug, Clone)]
pub struct PeerIdentity {
    /// What records are stamped with: the certificate's first name.
    pub agent: String,
    /// Every name of the certificate (lower case).
    pub names: Vec<String>,
    pub mode: IdentityMode,
}

impl PeerIdentity {
    /// The identity of a certificate with `names`; refused when it has none.
    pub fn new(names: Vec<String>, mode: IdentityMode) -> Result<Self, IdentityError> {
        let names: Vec<String> = names.into_iter().map(|n| n.to_ascii_lowercase()).collect();
        let agent = names.first().cloned().ok_or(IdentityError::Unnamed)?;
        Ok(PeerIdentity { agent, names, mode })
    }

    /// Whether this agent may write records as `host` (DNS names compare without case).
    pub fn may_write_as(&self, host: &str) -> bool {
        self.mode == IdentityMode::Tag || self.names.iter().any(|n| n.eq_ignore_ascii_case(host))
    }

    /// The HELLO's host, checked.
    pub fn check_hello(&self, host: &str) -> Result<(), IdentityError> {
        if self.may_write_as(host) {
            Ok(())
        } else {
            Err(self.not_allowed(host))
        }
    }

    fn not_allowed(&self, host: &str) -> IdentityError {
        IdentityError::HostNotAllowed {
            host: host.to_owned(),
            names: self.names.clone(),
        }
    }

    /// `payload` (validated) with every block stamped with this identity, after
    /// checking each block's host.
    pub fn stamp(&self, payload: &[u8]) -> Result<Vec<u8>, IdentityError> {
        for block in record::blocks(payload, false) {
            let h = block.map_err(IdentityError::Payload)?.header;
            let relayed = h.source_id == 0 && h.source.starts_with("syslog+");
            if !relayed && !self.may_write_as(h.host) {
                return Err(self.not_allowed(h.host));
            }
        }
        let mut out = Vec::new();
        record::stamp_agent(payload, &self.agent, &mut out).map_err(IdentityError::Payload)?;
        Ok(out)
    }
}

/// Without mutual TLS: a payload must not claim an identity.
pub fn check_unstamped(payload: &[u8]) -> Result<(), IdentityError> {
    match record::claims_agent(payload) {
        Ok(None) => Ok(()),
        Ok(Some(at)) => Err(IdentityError::Payload(DecodeError::ClaimsAgent { at })),
        Err(e) => Err(IdentityError::Payload(e)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tributary_common::record::BlockWriter;

    fn payload(blocks: &[(&str, &str, u64)]) -> Vec<u8> {
        let mut p = Vec::new();
        for &(host, source, id) in blocks {
            let mut w = BlockWriter::begin(&mut p, host, source, id, b"");
            w.push(&mut p, 0, 1, 10, b"", b"line");
            w.finish(&mut p);
        }
        p
    }

    fn id(mode: IdentityMode) -> PeerIdentity {
        PeerIdentity::new(vec!["Web-01".into(), "web-01.example".into()], mode).unwrap()
    }

    #[test]
    fn enforce_accepts_own_names_and_relayed_syslog_only() {
        let me = id(IdentityMode::Enforce);
        assert_eq!(me.agent, "web-01");
        assert!(me.check_hello("WEB-01").is_ok());
        assert!(me.check_hello("web-01.example").is_ok());
        let err = me.check_hello("db-prod-01").unwrap_err();
        assert!(err.to_string().contains("`db-prod-01`"), "{err}");
        assert!(err.to_string().contains("web-01, web-01.example"), "{err}");

        let ok = payload(&[
            ("web-01", "/var/log/a.log", 7),
            ("router-3", "syslog+udp://10.0.0.3", 0),
        ]);
        let stamped = me.stamp(&ok).unwrap();
        for b in record::blocks(&stamped, true) {
            assert_eq!(b.unwrap().header.agent, "web-01");
        }
        // A file block as another host, or a "syslog" block with a source id, is refused.
        for bad in [
            payload(&[("web-01", "/a", 1), ("db-prod-01", "/var/log/db.log", 9)]),
            payload(&[("db-prod-01", "syslog+tcp://10.0.0.9", 9)]),
        ] {
            assert!(matches!(
                me.stamp(&bad),
                Err(IdentityError::HostNotAllowed { .. })
            ));
        }
    }

    #[test]
    fn tag_accepts_any_host_but_keys_by_identity() {
        let me = id(IdentityMode::Tag);
        let p = payload(&[("db-prod-01", "/var/log/db.log", 9)]);
        let stamped = me.stamp(&p).unwrap();
        let b = record::blocks(&stamped, true).next().unwrap().unwrap();
        assert_eq!(b.header.host, "db-prod-01");
        assert_eq!(b.header.dedup_key(), "web-01");
    }

    #[test]
    fn identities_are_never_taken_from_the_sender() {
        assert_eq!(
            PeerIdentity::new(vec![], IdentityMode::Tag).unwrap_err(),
            IdentityError::Unnamed
        );
        let me = id(IdentityMode::Tag);
        let stamped = me.stamp(&payload(&[("a", "/a", 1)])).unwrap();
        assert!(check_unstamped(&payload(&[("a", "/a", 1)])).is_ok());
        assert!(check_unstamped(&stamped).is_err());
        assert!(
            me.stamp(&stamped).is_err(),
            "a payload already stamped is refused"
        );
    }
}
