//! rustls configurations built from PEM files. Every error names the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, CertificateRevocationListDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{}: cannot read certificates", path.display())]
    Certs {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate found (expected PEM `BEGIN CERTIFICATE`)", path.display())]
    NoCerts { path: PathBuf },
    #[error("{}: cannot read private key", path.display())]
    Key {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: not a usable CA certificate", path.display())]
    Ca {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
    #[error("{}: cannot read certificate revocation lists", path.display())]
    Crl {
        path: PathBuf,
        #[source]
        source: rustls_pki_types::pem::Error,
    },
    #[error("{}: no certificate revocation list found (expected PEM `BEGIN X509 CRL`)", path.display())]
    NoCrl { path: PathBuf },
    #[error("{}: cannot verify client certificates with it", path.display())]
    ClientVerifier {
        path: PathBuf,
        #[source]
        source: rustls::server::VerifierBuilderError,
    },
    #[error("{}: key does not match certificate {}", key.display(), cert.display())]
    KeyMismatch {
        key: PathBuf,
        cert: PathBuf,
        #[source]
        source: rustls::Error,
    },
    /// The TLS library refused its own defaults (protocol versions): a build problem.
    #[error("TLS setup for {}", path.display())]
    Setup {
        path: PathBuf,
        #[source]
        source: rustls::Error,
    },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|source| TlsError::Certs {
            path: path.into(),
            source,
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|source| TlsError::Certs {
            path: path.into(),
            source,
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts { path: path.into() });
    }
    Ok(certs)
}

/// Load the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|source| TlsError::Key {
        path: path.into(),
        source,
    })
}

/// Load every CRL of a PEM file (at least one).
pub fn load_crls(path: &Path) -> Result<Vec<CertificateRevocationListDer<'static>>, TlsError> {
    let err = |source| TlsError::Crl {
        path: path.into(),
        source,
    };
    let crls = CertificateRevocationListDer::pem_file_iter(path)
        .map_err(err)?
        .collect::<Result<Vec<_>, _>>()
        .map_err(err)?;
    if crls.is_empty() {
        return Err(TlsError::NoCrl { path: path.into() });
    }
    Ok(crls)
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|source| TlsError::Ca {
            path: ca.into(),
            source,
        })?;
    }
    Ok(roots)
}

/// The files of a TLS listener.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServerFiles {
    pub cert: PathBuf,
    pub key: PathBuf,
    /// Client certificates must chain to this CA (mutual TLS).
    pub client_ca: Option<PathBuf>,
    /// Client certificates listed in these CRLs are refused.
    pub client_crl: Option<PathBuf>,
}

impl ServerFiles {
    /// Every file the configuration is built from.
    pub fn paths(&self) -> Vec<PathBuf> {
        let mut v = vec![self.cert.clone(), self.key.clone()];
        v.extend(self.client_ca.clone());
        v.extend(self.client_crl.clone());
        v
    }
}

/// A listener's configuration, rebuilt when its files change (see
/// [`crate::reload`]); `what` names it in logs (`ingest.tls`).
pub fn reloading_server(
    what: &str,
    files: &ServerFiles,
) -> Result<Arc<crate::reload::Reloading<ServerConfig>>, TlsError> {
    let f = files.clone();
    crate::reload::Reloading::new(what, files.paths(), move || server_config_from(&f))
}

/// [`server_config`] from a [`ServerFiles`], CRLs included.
pub fn server_config_from(f: &ServerFiles) -> Result<Arc<ServerConfig>, TlsError> {
    let crls = match &f.client_crl {
        Some(p) => load_crls(p)?,
        None => Vec::new(),
    };
    build_server(
        &f.cert,
        &f.key,
        f.client_ca.as_deref(),
        crls,
        f.client_crl.as_deref(),
    )
}

/// Server side: certificate chain and key, and optionally a CA that client
/// certificates must chain to (mutual TLS; clients without one are refused).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    build_server(cert, key, client_ca, Vec::new(), None)
}

fn build_server(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
    crls: Vec<CertificateRevocationListDer<'static>>,
    crl_path: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Setup {
            path: cert.into(),
            source,
        })?;
    let builder = match client_ca {
        Some(ca) => {
            let mut verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider());
            if !crls.is_empty() {
                // The CRLs speak for the certificates the CA issued; a client
                // certificate whose revocation status they cannot tell is refused.
                verifier = verifier.with_crls(crls).only_check_end_entity_revocation();
            }
            let verifier = verifier
                .build()
                .map_err(|source| TlsError::ClientVerifier {
                    path: crl_path.unwrap_or(ca).into(),
                    source,
                })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config =
        builder
            .with_single_cert(chain, key_der)
            .map_err(|source| TlsError::KeyMismatch {
                key: key.into(),
                cert: cert.into(),
                source,
            })?;
    Ok(Arc::new(config))
}

/// A client configuration rebuilt when `ca`, `cert` or `key` change (a renewed
/// agent certificate is used for the next connection, without a restart).
pub fn reloading_client(
    what: &str,
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<crate::reload::Reloading<ClientConfig>>, TlsError> {
    let ca_path = ca.to_owned();
    let pair = client_cert.map(|(c, k)| (c.to_owned(), k.to_owned()));
    let mut paths = vec![ca_path.clone()];
    if let Some((c, k)) = &pair {
        paths.extend([c.clone(), k.clone()]);
    }
    crate::reload::Reloading::new(what, paths, move || {
        client_config(
            &ca_path,
            pair.as_ref().map(|(c, k)| (c.as_path(), k.as_path())),
        )
    })
}

/// Client side: verify the server against `ca`; present `cert`/`key` when given.
pub fn client_config(
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|source| TlsError::Setup {
            path: ca.into(),
            source,
        })?
        .with_root_certificates(roots(ca)?);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|source| TlsError::KeyMismatch {
                key: key.into(),
                cert: cert.into(),
                source,
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}

/// The names a peer's certificate holds: its DNS subject alternative names, else
/// its subject common name. Empty when the certificate cannot be parsed.
pub fn cert_names(der: &CertificateDer<'_>) -> Vec<String> {
    let Ok(cert) = webpki::EndEntityCert::try_from(der) else {
        return Vec::new();
    };
    let sans: Vec<String> = cert.valid_dns_names().map(str::to_owned).collect();
    if !sans.is_empty() {
        return sans;
    }
    common_name(cert.subject()).into_iter().collect()
}

/// One DER element: (tag, contents, rest).
fn element(b: &[u8]) -> Option<(u8, &[u8], &[u8])> {
    let (&tag, b) = b.split_first()?;
    let (&first, b) = b.split_first()?;
    let (len, b) = if first < 0x80 {
        (first as usize, b)
    } else {
        let n = (first & 0x7f) as usize;
        if n == 0 || n > 4 || b.len() < n {
            return None;
        }
        let len = b[..n]
            .iter()
            .fold(0usize, |acc, &x| (acc << 8) | x as usize);
        (len, &b[n..])
    };
    (b.len() >= len).then(|| (tag, &b[..len], &b[len..]))
}

/// The serial number of a DER certificate (its bytes, big-endian, as encoded):
/// what a CRL lists to revoke it. `None` when the certificate does not parse.
pub fn cert_serial(der: &[u8]) -> Option<Vec<u8>> {
    let (_, cert, _) = element(der)?;
    let (_, tbs, _) = element(cert)?;
    let (tag, first, rest) = element(tbs)?;
    // An explicit `[0] version` comes first in v3 certificates.
    let (tag, serial) = if tag == 0xa0 {
        let (tag, serial, _) = element(rest)?;
        (tag, serial)
    } else {
        (tag, first)
    };
    (tag == 0x02 && !serial.is_empty()).then(|| serial.to_vec())
}

/// The first commonName (2.5.4.3) in the contents of a DER `Name` (a SEQUENCE of
/// SETs of SEQUENCE {OID, value}). Bounded by the input; never panics.
fn common_name(name: &[u8]) -> Option<String> {
    const CN: [u8; 3] = [0x55, 0x04, 0x03];
    let mut rdns = name;
    while !rdns.is_empty() {
        let (_, set, rest) = element(rdns)?;
        rdns = rest;
        let mut atvs = set;
        while !atvs.is_empty() {
            let (_, atv, rest) = element(atvs)?;
            atvs = rest;
            let (oid_tag, oid, value) = element(atv)?;
            if oid_tag == 0x06 && oid == CN {
                let (_, text, _) = element(value)?;
                return Some(String::from_utf8_lossy(text).into_owned());
            }
        }
    }
    None
}

/// The rustls error inside an I/O error from a TLS stream, if there is one.
fn rustls_error(e: &std::io::Error) -> Option<&rustls::Error> {
    e.get_ref()?.downcast_ref::<rustls::Error>()
}

/// The agent's TLS files, for messages that say which one to fix.
#[derive(Debug, Clone, Default)]
pub struct ClientFiles {
    pub ca: PathBuf,
    pub cert: Option<PathBuf>,
}

/// A TLS failure seen by the agent (the client), said in terms of its config: which
/// file or name to fix. `None` when the error is not a certificate problem.
pub fn client_failure(
    e: &std::io::Error,
    files: &ClientFiles,
    server_name: &str,
) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let ca = files.ca.display();
    let cert = || {
        files
            .cert
            .as_ref()
            .map_or("output.tls.cert".to_owned(), |c| {
                format!("output.tls.cert ({})", c.display())
            })
    };
    Some(match rustls_error(e)? {
        E::InvalidCertificate(C::BadSignature | C::UnknownIssuer) => format!(
            "the collector's certificate is not signed by output.tls.ca ({ca}): use the CA that issued the collector's certificate"
        ),
        E::InvalidCertificate(C::NotValidForName | C::NotValidForNameContext { .. }) => format!(
            "the collector's certificate is not valid for the name `{server_name}`: set output.tls.server_name to a name it holds, or issue it for this name (tributary certs --hosts)"
        ),
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the collector's certificate is expired or not valid yet (check both clocks, or issue a new one)".into(),
        E::InvalidCertificate(other) => {
            format!("the collector's certificate is refused: {other:?}")
        }
        E::AlertReceived(A::CertificateRequired | A::HandshakeFailure)
            if files.cert.is_none() =>
        {
            "the collector requires a client certificate (ingest.tls.client_ca): set output.tls.cert and output.tls.key".into()
        }
        E::AlertReceived(
            A::BadCertificate | A::UnknownCA | A::DecryptError | A::CertificateUnknown,
        ) => format!(
            "the collector refused this agent's certificate, {}: it is not signed by the collector's ingest.tls.client_ca",
            cert()
        ),
        E::AlertReceived(A::CertificateRevoked) => format!(
            "the collector refused this agent's certificate, {}, as revoked (its client_crl lists it): install a new certificate (tributary certs --agent NAME)",
            cert()
        ),
        E::AlertReceived(A::CertificateExpired) => format!(
            "the collector refused this agent's certificate, {}, as expired or not valid yet",
            cert()
        ),
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => {
            "the peer does not speak TLS: is this address the collector's ingest port?".into()
        }
        _ => return None,
    })
}

/// A TLS failure seen by the collector (the server) during an agent's handshake,
/// said in terms of its config. `None` when the error is not a certificate problem.
pub fn server_failure(e: &std::io::Error, cert: &Path, client_ca: Option<&Path>) -> Option<String> {
    use rustls::{AlertDescription as A, CertificateError as C, Error as E};
    let ca = || client_ca.map_or(String::new(), |p| format!(" ({})", p.display()));
    Some(match rustls_error(e)? {
        E::AlertReceived(
            A::BadCertificate | A::UnknownCA | A::DecryptError | A::CertificateUnknown,
        ) => format!(
            "the agent refused the collector's certificate ingest.tls.cert ({}): its output.tls.ca is not the CA that signed it (or its server_name is not in it)",
            cert.display()
        ),
        E::InvalidCertificate(C::BadSignature | C::UnknownIssuer) => format!(
            "the agent's certificate is not signed by ingest.tls.client_ca{}",
            ca()
        ),
        E::InvalidCertificate(
            C::Expired | C::ExpiredContext { .. } | C::NotValidYet | C::NotValidYetContext { .. },
        ) => "the agent's certificate is expired or not valid yet".into(),
        E::InvalidCertificate(C::Revoked) => {
            "the agent's certificate is revoked (listed in client_crl)".into()
        }
        E::InvalidCertificate(C::UnknownRevocationStatus) => {
            "the agent's certificate is from an issuer no client_crl speaks for: add that issuer's CRL".into()
        }
        E::NoCertificatesPresented => format!(
            "the agent presented no certificate, and ingest.tls.client_ca{} requires one (set output.tls.cert and key on the agent)",
            ca()
        ),
        E::InvalidMessage(_) | E::InappropriateHandshakeMessage { .. } => {
            "not a TLS client (plain TCP, or another protocol on the ingest port)".into()
        }
        _ => return None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn errors_keep_their_cause_and_name_the_file() {
        let dir = tempfile::tempdir().unwrap();
        let missing = dir.path().join("agent.key");
        let e = load_key(&missing).unwrap_err();
        assert!(matches!(e, TlsError::Key { .. }));
        let line = crate::error::report(&e);
        assert!(
            line.contains("agent.key: cannot read private key: "),
            "{line}"
        );
        assert!(std::error::Error::source(&e).is_some());
        let empty = dir.path().join("ca.pem");
        std::fs::write(&empty, "not pem\n").unwrap();
        let e = load_certs(&empty).unwrap_err();
        assert!(crate::error::report(&e).contains("ca.pem: no certificate found"));
    }

    #[test]
    fn common_name_of_a_der_name() {
        // SEQUENCE { SET { SEQUENCE { OID 2.5.4.10, "org" } } SET { SEQUENCE { OID 2.5.4.3, "web-01" } } }
        let name = [
            0x31, 0x0c, 0x30, 0x0a, 0x06, 0x03, 0x55, 0x04, 0x0a, 0x0c, 0x03, b'o', b'r', b'g',
            0x31, 0x0f, 0x30, 0x0d, 0x06, 0x03, 0x55, 0x04, 0x03, 0x0c, 0x06, b'w', b'e', b'b',
            b'-', b'0', b'1',
        ];
        assert_eq!(common_name(&name).as_deref(), Some("web-01"));
        for cut in 0..name.len() {
            let _ = common_name(&name[..cut]);
        }
        assert_eq!(common_name(&[0x31, 0x84, 0xff, 0xff, 0xff, 0xff]), None);
    }
}
