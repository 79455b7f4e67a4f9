//! Certificates for an install or a dev setup (rcgen): a CA, a collector server
//! certificate and an agent client certificate, written as PEM files.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    KeyPair, KeyUsagePurpose,
};
use thiserror::Error;

#[derive(Debug, Error)]
pub enum CertError {
    #[error("certificate generation: {0}")]
    Generate(#[from] rcgen::Error),
    #[error("{}: {source}", path.display())]
    Write {
        path: PathBuf,
        source: std::io::Error,
    },
}

/// Paths of the files [`generate`] writes.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub collector_cert: PathBuf,
    pub collector_key: PathBuf,
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> Self {
        CertFiles {
            ca: dir.join("ca.pem"),
            collector_cert: dir.join("collector.pem"),
            collector_key: dir.join("collector.key"),
            agent_cert: dir.join("agent.pem"),
            agent_key: dir.join("agent.key"),
        }
    }

    pub fn exist(&self) -> bool {
        [
            &self.ca,
            &self.collector_cert,
            &self.collector_key,
            &self.agent_cert,
            &self.agent_key,
        ]
        .iter()
        .all(|p| p.exists())
    }
}

fn write(path: &Path, text: &str, private: bool) -> Result<(), CertError> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    let err = |source| CertError::Write {
        path: path.to_owned(),
        source,
    };
    let mut f = std::fs::OpenOptions::new()
        .write(true)
        .create(true)
        .truncate(true)
        .mode(if private { 0o600 } else { 0o644 })
        .open(path)
        .map_err(err)?;
    f.write_all(text.as_bytes()).map_err(err)?;
    f.sync_all().map_err(err)
}

/// Generate a CA, a server certificate valid for `hosts` (DNS names or IP addresses;
/// `localhost`, `127.0.0.1` and `::1` are always included) and an agent client
/// certificate, and write them into `dir`.
pub fn generate(dir: &Path, hosts: &[String]) -> Result<CertFiles, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let files = CertFiles::in_dir(dir);

    let mut ca_params = CertificateParams::new(Vec::<String>::new())?;
    ca_params.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    ca_params
        .distinguished_name
        .push(DnType::CommonName, "Tributary CA");
    ca_params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let ca = CertifiedIssuer::self_signed(ca_params, KeyPair::generate()?)?;

    let mut names: Vec<String> = vec!["localhost".into(), "127.0.0.1".into(), "::1".into()];
    for h in hosts {
        if !names.contains(h) {
            names.push(h.clone());
        }
    }
    let mut server = CertificateParams::new(names)?;
    server
        .distinguished_name
        .push(DnType::CommonName, "tributary-collector");
    server.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    server.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca)?;

    let mut agent = CertificateParams::new(Vec::<String>::new())?;
    agent
        .distinguished_name
        .push(DnType::CommonName, "tributary-agent");
    agent.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    agent.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    let agent_key = KeyPair::generate()?;
    let agent_cert = agent.signed_by(&agent_key, &ca)?;

    write(&files.ca, &ca.pem(), false)?;
    write(&files.collector_cert, &server_cert.pem(), false)?;
    write(&files.collector_key, &server_key.serialize_pem(), true)?;
    write(&files.agent_cert, &agent_cert.pem(), false)?;
    write(&files.agent_key, &agent_key.serialize_pem(), true)?;
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn generated_certificates_load_into_rustls() {
        let dir = tempfile::tempdir().unwrap();
        let f = generate(dir.path(), &["collector.example.com".into()]).unwrap();
        tributary_common::tls::server_config(&f.collector_cert, &f.collector_key, Some(&f.ca))
            .unwrap();
        tributary_common::tls::client_config(&f.ca, Some((&f.agent_cert, &f.agent_key))).unwrap();
    }
}
