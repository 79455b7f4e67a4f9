//! rustls configurations built from PEM files. Every error names the file.

use std::path::{Path, PathBuf};
use std::sync::Arc;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, PrivateKeyDer};
use rustls::server::WebPkiClientVerifier;
use rustls::{ClientConfig, RootCertStore, ServerConfig};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum TlsError {
    #[error("{}: cannot read certificates: {reason}", path.display())]
    Certs { path: PathBuf, reason: String },
    #[error("{}: no certificate found (expected PEM `BEGIN CERTIFICATE`)", path.display())]
    NoCerts { path: PathBuf },
    #[error("{}: cannot read private key: {reason}", path.display())]
    Key { path: PathBuf, reason: String },
    #[error("{}: {reason}", path.display())]
    Config { path: PathBuf, reason: String },
}

fn provider() -> Arc<rustls::crypto::CryptoProvider> {
    Arc::new(rustls::crypto::ring::default_provider())
}

/// Load every certificate of a PEM file.
pub fn load_certs(path: &Path) -> Result<Vec<CertificateDer<'static>>, TlsError> {
    let certs = CertificateDer::pem_file_iter(path)
        .map_err(|e| TlsError::Certs {
            path: path.into(),
            reason: e.to_string(),
        })?
        .collect::<Result<Vec<_>, _>>()
        .map_err(|e| TlsError::Certs {
            path: path.into(),
            reason: e.to_string(),
        })?;
    if certs.is_empty() {
        return Err(TlsError::NoCerts { path: path.into() });
    }
    Ok(certs)
}

/// Load the first private key (PKCS#8, PKCS#1 or SEC1) of a PEM file.
pub fn load_key(path: &Path) -> Result<PrivateKeyDer<'static>, TlsError> {
    PrivateKeyDer::from_pem_file(path).map_err(|e| TlsError::Key {
        path: path.into(),
        reason: e.to_string(),
    })
}

fn roots(ca: &Path) -> Result<RootCertStore, TlsError> {
    let mut roots = RootCertStore::empty();
    for cert in load_certs(ca)? {
        roots.add(cert).map_err(|e| TlsError::Config {
            path: ca.into(),
            reason: format!("not a usable CA certificate: {e}"),
        })?;
    }
    Ok(roots)
}

/// Server side: certificate chain and key, and optionally a CA that client
/// certificates must chain to (mutual TLS; clients without one are refused).
pub fn server_config(
    cert: &Path,
    key: &Path,
    client_ca: Option<&Path>,
) -> Result<Arc<ServerConfig>, TlsError> {
    let chain = load_certs(cert)?;
    let key_der = load_key(key)?;
    let builder = ServerConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            path: cert.into(),
            reason: e.to_string(),
        })?;
    let builder = match client_ca {
        Some(ca) => {
            let verifier =
                WebPkiClientVerifier::builder_with_provider(Arc::new(roots(ca)?), provider())
                    .build()
                    .map_err(|e| TlsError::Config {
                        path: ca.into(),
                        reason: e.to_string(),
                    })?;
            builder.with_client_cert_verifier(verifier)
        }
        None => builder.with_no_client_auth(),
    };
    let config = builder
        .with_single_cert(chain, key_der)
        .map_err(|e| TlsError::Config {
            path: key.into(),
            reason: format!("key does not match certificate {}: {e}", cert.display()),
        })?;
    Ok(Arc::new(config))
}

/// Client side: verify the server against `ca`; present `cert`/`key` when given.
pub fn client_config(
    ca: &Path,
    client_cert: Option<(&Path, &Path)>,
) -> Result<Arc<ClientConfig>, TlsError> {
    let builder = ClientConfig::builder_with_provider(provider())
        .with_safe_default_protocol_versions()
        .map_err(|e| TlsError::Config {
            path: ca.into(),
            reason: e.to_string(),
        })?
        .with_root_certificates(roots(ca)?);
    let config = match client_cert {
        Some((cert, key)) => builder
            .with_client_auth_cert(load_certs(cert)?, load_key(key)?)
            .map_err(|e| TlsError::Config {
                path: key.into(),
                reason: format!("key does not match certificate {}: {e}", cert.display()),
            })?,
        None => builder.with_no_client_auth(),
    };
    Ok(Arc::new(config))
}
