//! Certificates for an install or a dev setup (rcgen): a CA, a collector server
//! certificate and an agent client certificate, written as PEM files; later, more
//! agent certificates (one per host) issued from the same CA ([`issue_agent`]).
//!
//! The CA key (`ca.key`, mode 0600) is what issues certificates: keep it where
//! certificates are made, not necessarily on the collector.
//!
//! Revocation ([`revoke`]): `revoked.txt` in the same directory is the list of
//! revoked serial numbers (one line each: serial in hex, time, name), and `crl.pem`
//! the CRL signed by the CA that lists them, rewritten atomically after every
//! change, so a collector whose `client_crl` points at it picks it up in seconds.

use std::path::{Path, PathBuf};

use rcgen::{
    BasicConstraints, CertificateParams, CertifiedIssuer, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose,
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
    #[error("{}: {source}", path.display())]
    Read {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("{}: not a private key this tool wrote: {source}", path.display())]
    BadKey { path: PathBuf, source: rcgen::Error },
    #[error("invalid agent name {0:?}: use 1-64 characters from [A-Za-z0-9._-]")]
    BadName(String),
    #[error("{}: not a PEM certificate whose serial number can be read", path.display())]
    BadCert { path: PathBuf },
    #[error(transparent)]
    Replace(#[from] tributary_common::fs::WriteError),
    #[error("{}:{line}: not `SERIAL_HEX UNIX_SECONDS NAME`", path.display())]
    BadRevokedList { path: PathBuf, line: usize },
    #[error(
        "{} already exists: use --agent NAME to issue an agent certificate from this CA, or --force to replace the CA and every certificate",
        .0.display()
    )]
    CaExists(PathBuf),
}

/// `tributary certs`.
#[derive(Debug, Clone, clap::Args)]
pub struct CertsArgs {
    /// Output directory.
    #[arg(long, default_value = "certs")]
    pub out: PathBuf,
    /// Names and addresses the collector certificate is valid for (comma-separated).
    #[arg(long, value_delimiter = ',')]
    pub hosts: Vec<String>,
    /// Issue one more agent certificate, `<NAME>.pem`/`.key`, from the CA already
    /// in --out (one certificate per host).
    #[arg(long, value_name = "NAME", conflicts_with = "hosts")]
    pub agent: Option<String>,
    /// Revoke the certificate `<NAME>.pem` in --out: add it to `revoked.txt` and
    /// rewrite `crl.pem` (point the collector's client_crl at it).
    #[arg(long, value_name = "NAME", conflicts_with_all = ["hosts", "agent", "force"])]
    pub revoke: Option<String>,
    /// Replace a CA that --out already holds (every existing certificate stops
    /// working).
    #[arg(long)]
    pub force: bool,
    /// Days the collector and agent certificates are valid (the CA: 10 years).
    #[arg(long, default_value_t = DEFAULT_DAYS, value_parser = clap::value_parser!(u32).range(1..=3650))]
    pub days: u32,
}

/// Run `tributary certs`: an agent certificate from the existing CA with
/// `--agent`, else a new CA with collector and agent certificates (refused over an
/// existing CA without `--force`). Returns the files written.
pub fn run(args: &CertsArgs) -> Result<Vec<PathBuf>, CertError> {
    if let Some(name) = &args.revoke {
        return Ok(vec![revoke(&args.out, name, args.days)?]);
    }
    if let Some(name) = &args.agent {
        let (cert, key) = issue_agent(&args.out, name, args.days)?;
        return Ok(vec![cert, key]);
    }
    let existing = CertFiles::in_dir(&args.out).ca;
    if existing.exists() && !args.force {
        return Err(CertError::CaExists(existing));
    }
    let f = generate_for(&args.out, &args.hosts, args.days)?;
    Ok(vec![
        crl_path(&args.out),
        f.ca,
        f.ca_key,
        f.collector_cert,
        f.collector_key,
        f.agent_cert,
        f.agent_key,
    ])
}

/// Paths of the files [`generate`] writes.
#[derive(Debug, Clone)]
pub struct CertFiles {
    pub ca: PathBuf,
    pub ca_key: PathBuf,
    pub collector_cert: PathBuf,
    pub collector_key: PathBuf,
    pub agent_cert: PathBuf,
    pub agent_key: PathBuf,
}

impl CertFiles {
    pub fn in_dir(dir: &Path) -> Self {
        CertFiles {
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
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

/// Days the collector and agent certificates are valid by default (`--days`); the
/// CA lasts [`CA_DAYS`]. Renew with `tributary certs --agent NAME` from the same CA.
pub const DEFAULT_DAYS: u32 = 365;
pub const CA_DAYS: u32 = 3650;

/// Valid from an hour ago (clocks differ a little) for `days` days.
fn validity(p: &mut CertificateParams, days: u32) {
    let now = time::OffsetDateTime::now_utc();
    p.not_before = now - time::Duration::hours(1);
    p.not_after = now + time::Duration::days(i64::from(days));
}

/// [`generate_for`] with certificates valid for [`DEFAULT_DAYS`].
pub fn generate(dir: &Path, hosts: &[String]) -> Result<CertFiles, CertError> {
    generate_for(dir, hosts, DEFAULT_DAYS)
}

/// Generate a CA (valid [`CA_DAYS`]), a server certificate valid for `hosts` (DNS
/// names or IP addresses; `localhost`, `127.0.0.1` and `::1` are always included)
/// and an agent client certificate, both valid `days` days, and write them into
/// `dir`.
pub fn generate_for(dir: &Path, hosts: &[String], days: u32) -> Result<CertFiles, CertError> {
    std::fs::create_dir_all(dir).map_err(|source| CertError::Write {
        path: dir.to_owned(),
        source,
    })?;
    let files = CertFiles::in_dir(dir);

    let ca_key = KeyPair::generate()?;
    let ca_key_pem = ca_key.serialize_pem();
    let mut ca_p = ca_params()?;
    validity(&mut ca_p, CA_DAYS.max(days));
    let ca = CertifiedIssuer::self_signed(ca_p, ca_key)?;

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
    validity(&mut server, days);
    let server_key = KeyPair::generate()?;
    let server_cert = server.signed_by(&server_key, &ca)?;

    let agent_key = KeyPair::generate()?;
    let agent_cert = agent_params("tributary-agent", days)?.signed_by(&agent_key, &ca)?;

    write(&files.ca, &ca.pem(), false)?;
    write(&files.ca_key, &ca_key_pem, true)?;
    write(&files.collector_cert, &server_cert.pem(), false)?;
    write(&files.collector_key, &server_key.serialize_pem(), true)?;
    write(&files.agent_cert, &agent_cert.pem(), false)?;
    write(&files.agent_key, &agent_key.serialize_pem(), true)?;
    // A new CA has revoked nothing; the empty CRL lets client_crl point at it now.
    let _ = std::fs::remove_file(dir.join("revoked.txt"));
    write_crl(dir, days)?;
    Ok(files)
}

/// The CA's parameters: fixed, so that [`issue_agent`] can sign with the CA key
/// alone (an issuer is its name, key usages and key).
fn ca_params() -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    p.is_ca = IsCa::Ca(BasicConstraints::Constrained(0));
    p.distinguished_name
        .push(DnType::CommonName, "Tributary CA");
    p.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    Ok(p)
}

fn agent_params(name: &str, days: u32) -> Result<CertificateParams, rcgen::Error> {
    let mut p = CertificateParams::new(Vec::<String>::new())?;
    validity(&mut p, days);
    p.distinguished_name.push(DnType::CommonName, name);
    p.key_usages = vec![KeyUsagePurpose::DigitalSignature];
    p.extended_key_usages = vec![ExtendedKeyUsagePurpose::ClientAuth];
    Ok(p)
}

/// Whether `name` can name an agent certificate (and its files in the cert directory).
pub fn valid_agent_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && name != "."
        && name != ".."
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'_' | b'-'))
        && !["ca", "collector", "crl"].contains(&name)
}

/// Issue an agent client certificate named `name` (its common name) from the CA in
/// `dir` (`ca.pem` + `ca.key` written by [`generate`]): writes `dir/<name>.pem` and
/// `dir/<name>.key` and returns their paths. Valid `days` days.
pub fn issue_agent(dir: &Path, name: &str, days: u32) -> Result<(PathBuf, PathBuf), CertError> {
    if !valid_agent_name(name) {
        return Err(CertError::BadName(name.to_owned()));
    }
    let files = CertFiles::in_dir(dir);
    let pem = std::fs::read_to_string(&files.ca_key).map_err(|source| CertError::Read {
        path: files.ca_key.clone(),
        source,
    })?;
    let key = KeyPair::from_pem(&pem).map_err(|source| CertError::BadKey {
        path: files.ca_key.clone(),
        source,
    })?;
    let issuer = Issuer::new(ca_params()?, key);
    let agent_key = KeyPair::generate()?;
    let cert = agent_params(name, days)?.signed_by(&agent_key, &issuer)?;
    let (cert_path, key_path) = (
        dir.join(format!("{name}.pem")),
        dir.join(format!("{name}.key")),
    );
    write(&cert_path, &cert.pem(), false)?;
    write(&key_path, &agent_key.serialize_pem(), true)?;
    Ok((cert_path, key_path))
}

/// The CA in `dir` as an issuer (its fixed parameters and its key).
fn ca_issuer(dir: &Path) -> Result<Issuer<'static, KeyPair>, CertError> {
    let ca_key = CertFiles::in_dir(dir).ca_key;
    let pem = std::fs::read_to_string(&ca_key).map_err(|source| CertError::Read {
        path: ca_key.clone(),
        source,
    })?;
    let key = KeyPair::from_pem(&pem).map_err(|source| CertError::BadKey {
        path: ca_key.clone(),
        source,
    })?;
    Ok(Issuer::new(ca_params()?, key))
}

/// One line of `revoked.txt`.
struct Revoked {
    serial: Vec<u8>,
    at: i64,
}

fn revoked_list(dir: &Path) -> Result<Vec<Revoked>, CertError> {
    let path = dir.join("revoked.txt");
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => String::new(),
        Err(source) => return Err(CertError::Read { path, source }),
    };
    let mut out = Vec::new();
    for (i, line) in text.lines().enumerate() {
        if line.trim().is_empty() || line.starts_with('#') {
            continue;
        }
        let bad = || CertError::BadRevokedList {
            path: path.clone(),
            line: i + 1,
        };
        let mut parts = line.split_whitespace();
        let (Some(serial), Some(at)) = (parts.next(), parts.next()) else {
            return Err(bad());
        };
        let serial = (0..serial.len())
            .step_by(2)
            .map(|i| {
                serial
                    .get(i..i + 2)
                    .and_then(|h| u8::from_str_radix(h, 16).ok())
            })
            .collect::<Option<Vec<u8>>>()
            .filter(|s| !s.is_empty())
            .ok_or_else(bad)?;
        out.push(Revoked {
            serial,
            at: at.parse().map_err(|_| bad())?,
        });
    }
    Ok(out)
}

/// Where the CRL of the CA in `dir` is written.
pub fn crl_path(dir: &Path) -> PathBuf {
    dir.join("crl.pem")
}

/// Sign and write `dir/crl.pem` listing every serial of `revoked.txt` (none: an
/// empty CRL, so client_crl can point at it before anything is revoked); valid
/// `days` days.
pub fn write_crl(dir: &Path, days: u32) -> Result<PathBuf, CertError> {
    let issuer = ca_issuer(dir)?;
    let now = time::OffsetDateTime::now_utc();
    let revoked = revoked_list(dir)?;
    let params = rcgen::CertificateRevocationListParams {
        this_update: now - time::Duration::minutes(5),
        next_update: now + time::Duration::days(i64::from(days.max(1))),
        // Increases with every CRL written (seconds since the epoch).
        crl_number: rcgen::SerialNumber::from(now.unix_timestamp().max(1).to_be_bytes().to_vec()),
        issuing_distribution_point: None,
        revoked_certs: revoked
            .iter()
            .map(|r| rcgen::RevokedCertParams {
                serial_number: rcgen::SerialNumber::from(r.serial.clone()),
                revocation_time: time::OffsetDateTime::from_unix_timestamp(r.at).unwrap_or(now),
                reason_code: None,
                invalidity_date: None,
            })
            .collect(),
        key_identifier_method: rcgen::KeyIdMethod::Sha256,
    };
    let crl = params.signed_by(&issuer)?;
    let path = crl_path(dir);
    tributary_common::fs::write_atomic(&path, crl.pem()?.as_bytes())?;
    Ok(path)
}

/// Revoke `dir/<name>.pem`: list its serial number in `revoked.txt` (once) and
/// rewrite `crl.pem`. Returns the CRL's path.
pub fn revoke(dir: &Path, name: &str, days: u32) -> Result<PathBuf, CertError> {
    if !valid_agent_name(name) && name != "collector" {
        return Err(CertError::BadName(name.to_owned()));
    }
    let cert_path = dir.join(format!("{name}.pem"));
    let der = tributary_common::tls::load_certs(&cert_path)
        .ok()
        .and_then(|c| c.into_iter().next())
        .ok_or_else(|| CertError::BadCert {
            path: cert_path.clone(),
        })?;
    let serial = tributary_common::tls::cert_serial(&der).ok_or(CertError::BadCert {
        path: cert_path.clone(),
    })?;
    let list = revoked_list(dir)?;
    if !list.iter().any(|r| r.serial == serial) {
        let hex: String = serial.iter().map(|b| format!("{b:02x}")).collect();
        let line = format!(
            "{hex} {} {name}\n",
            time::OffsetDateTime::now_utc().unix_timestamp()
        );
        let path = dir.join("revoked.txt");
        let mut text = std::fs::read_to_string(&path).unwrap_or_default();
        text.push_str(&line);
        tributary_common::fs::write_atomic(&path, text.as_bytes())?;
    }
    write_crl(dir, days)
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
        let (cert, key) = issue_agent(dir.path(), "web-07", 30).unwrap();
        tributary_common::tls::client_config(&f.ca, Some((&cert, &key))).unwrap();
        assert!(issue_agent(dir.path(), "../x", 30).is_err());
        assert!(issue_agent(dir.path(), "ca", 30).is_err());
        assert!(issue_agent(tempfile::tempdir().unwrap().path(), "web-08", 30).is_err());
    }

    #[test]
    fn revoking_lists_the_serial_once_in_a_crl_rustls_accepts() {
        let dir = tempfile::tempdir().unwrap();
        let f = generate(dir.path(), &[]).unwrap();
        let files = |crl: bool| tributary_common::tls::ServerFiles {
            cert: f.collector_cert.clone(),
            key: f.collector_key.clone(),
            client_ca: Some(f.ca.clone()),
            client_crl: crl.then(|| crl_path(dir.path())),
        };
        // The empty CRL of a new CA already loads.
        tributary_common::tls::server_config_from(&files(true)).unwrap();
        issue_agent(dir.path(), "web-07", 30).unwrap();
        revoke(dir.path(), "web-07", 30).unwrap();
        revoke(dir.path(), "web-07", 30).unwrap();
        let listed = revoked_list(dir.path()).unwrap();
        assert_eq!(listed.len(), 1, "revoked once");
        let der = tributary_common::tls::load_certs(&dir.path().join("web-07.pem")).unwrap();
        assert_eq!(
            Some(listed[0].serial.clone()),
            tributary_common::tls::cert_serial(&der[0])
        );
        assert_eq!(
            tributary_common::tls::load_crls(&crl_path(dir.path()))
                .unwrap()
                .len(),
            1
        );
        tributary_common::tls::server_config_from(&files(true)).unwrap();
        assert!(matches!(
            revoke(dir.path(), "nobody", 30),
            Err(CertError::BadCert { .. })
        ));
    }
}
