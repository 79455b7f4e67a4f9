//! The client settings of a Kafka cluster as both configs write them (the agent's
//! `output.kafka`, the collector's `sources[].kafka`): broker addresses, optional
//! TLS and optional SASL, checked and turned into [`ConnSettings`].
//!
//! ```yaml
//! brokers: ["k1.example.com:9093", "k2.example.com:9093"]
//! tls: {ca: /etc/tributary/kafka-ca.pem, cert: …, key: …}   # optional; cert+key for mTLS
//! sasl: {mechanism: scram-sha-512, username: tributary, password_file: /etc/tributary/kafka.pw}
//! ```

use std::path::{Path, PathBuf};
use std::time::Duration;

use serde::Deserialize;

use super::conn::{ConnSettings, Sasl, SaslMechanism};
use crate::config::split_host;

/// `tls:` of a Kafka client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct KafkaTlsFile {
    /// CA the brokers' certificates must chain to.
    pub ca: PathBuf,
    /// Optional client certificate and key (mutual TLS).
    pub cert: Option<PathBuf>,
    pub key: Option<PathBuf>,
}

/// `sasl:` of a Kafka client.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct SaslFile {
    #[serde(default = "plain")]
    pub mechanism: SaslMechanism,
    pub username: String,
    /// A file holding the password (one line; a final newline is not part of it).
    pub password_file: PathBuf,
}

fn plain() -> SaslMechanism {
    SaslMechanism::Plain
}

/// A password file larger than this is not a password file.
const MAX_PASSWORD_FILE: u64 = 4096;

/// A setting that is wrong: the key under the caller's prefix, and why.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SettingError {
    pub key: String,
    pub message: String,
}

/// Check `brokers`, load the TLS files and the password, and build the settings
/// every connection uses. `prefix` (e.g. `output.kafka`) starts each error's key.
/// Returns the files read, so that inputs can be kept away from them.
pub fn resolve(
    prefix: &str,
    brokers: &[String],
    tls: Option<&KafkaTlsFile>,
    sasl: Option<&SaslFile>,
    client_id: &str,
) -> Result<(ConnSettings, Vec<PathBuf>), SettingError> {
    let err = |key: &str, message: String| SettingError {
        key: format!("{prefix}.{key}"),
        message,
    };
    if brokers.is_empty() {
        return Err(err(
            "brokers",
            "list at least one broker (host:port), e.g. [\"kafka1.example.com:9092\"]".into(),
        ));
    }
    for (i, b) in brokers.iter().enumerate() {
        if split_host(b).is_none() {
            return Err(err(
                &format!("brokers[{i}]"),
                format!("`{b}` is not host:port (for example kafka1.example.com:9092; no scheme)"),
            ));
        }
    }
    let mut files = Vec::new();
    let tls = match tls {
        None => None,
        Some(t) => {
            let pair = match (&t.cert, &t.key) {
                (Some(c), Some(k)) => Some((c.as_path(), k.as_path())),
                (None, None) => None,
                _ => return Err(err("tls", "cert and key go together".into())),
            };
            let cfg = crate::tls::client_config(&t.ca, pair)
                .map_err(|e| err("tls", crate::error::report(&e)))?;
            files.push(t.ca.clone());
            files.extend(t.cert.iter().cloned());
            files.extend(t.key.iter().cloned());
            Some(cfg)
        }
    };
    let sasl = match sasl {
        None => None,
        Some(s) => {
            if s.username.is_empty() {
                return Err(err("sasl.username", "must not be empty".into()));
            }
            let password =
                read_password(&s.password_file).map_err(|m| err("sasl.password_file", m))?;
            if tls.is_none() {
                tracing::warn!(
                    "{prefix}.sasl without {prefix}.tls: the {} credentials cross the network unencrypted{}",
                    s.mechanism.name(),
                    if s.mechanism == SaslMechanism::Plain {
                        " and readable"
                    } else {
                        ""
                    }
                );
            }
            files.push(s.password_file.clone());
            Some(Sasl {
                mechanism: s.mechanism,
                username: s.username.clone(),
                password,
            })
        }
    };
    Ok((
        ConnSettings {
            client_id: client_id.to_owned(),
            tls,
            sasl,
            timeout: Duration::from_secs(10),
            max_response: 64 << 20,
        },
        files,
    ))
}

/// The password in `path`: its first line, without the line end.
fn read_password(path: &Path) -> Result<String, String> {
    use std::io::Read;
    let file =
        std::fs::File::open(path).map_err(|e| format!("cannot open {}: {e}", path.display()))?;
    let mut text = String::new();
    file.take(MAX_PASSWORD_FILE + 1)
        .read_to_string(&mut text)
        .map_err(|e| format!("cannot read {} as UTF-8 text: {e}", path.display()))?;
    if text.len() as u64 > MAX_PASSWORD_FILE {
        return Err(format!(
            "{} is larger than {MAX_PASSWORD_FILE} bytes; it should hold only the password",
            path.display()
        ));
    }
    let password = text.lines().next().unwrap_or("").to_owned();
    if password.is_empty() {
        return Err(format!("{} holds no password", path.display()));
    }
    #[cfg(unix)]
    {
        use std::os::unix::fs::PermissionsExt;
        if let Ok(m) = std::fs::metadata(path)
            && m.permissions().mode() & 0o004 != 0
        {
            tracing::warn!("{} can be read by every user: chmod o-r it", path.display());
        }
    }
    Ok(password)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn brokers_are_checked() {
        let e = resolve("output.kafka", &[], None, None, "t").unwrap_err();
        assert_eq!(e.key, "output.kafka.brokers");
        let e = resolve(
            "output.kafka",
            &["k1:9092".into(), "kafka://k2:9092".into()],
            None,
            None,
            "t",
        )
        .unwrap_err();
        assert_eq!(e.key, "output.kafka.brokers[1]");
        assert!(e.message.contains("kafka://k2:9092"), "{}", e.message);
        let (s, files) = resolve("output.kafka", &["k1:9092".into()], None, None, "t").unwrap();
        assert!(s.tls.is_none() && s.sasl.is_none() && files.is_empty());
    }

    #[test]
    fn password_file_first_line() {
        let dir = tempfile::tempdir().unwrap();
        let pw = dir.path().join("pw");
        std::fs::write(&pw, "s3cret\n").unwrap();
        let sasl = SaslFile {
            mechanism: SaslMechanism::ScramSha256,
            username: "u".into(),
            password_file: pw.clone(),
        };
        let (s, files) =
            resolve("sources[0].kafka", &["k:1".into()], None, Some(&sasl), "t").unwrap();
        let got = s.sasl.unwrap();
        assert_eq!(got.password, "s3cret");
        assert_eq!(got.mechanism, SaslMechanism::ScramSha256);
        assert_eq!(files, vec![pw.clone()]);

        std::fs::write(&pw, "\n").unwrap();
        let e = resolve("p", &["k:1".into()], None, Some(&sasl), "t").unwrap_err();
        assert_eq!(e.key, "p.sasl.password_file");
        assert!(e.message.contains("holds no password"), "{}", e.message);

        let missing = SaslFile {
            password_file: dir.path().join("nope"),
            ..sasl
        };
        let e = resolve("p", &["k:1".into()], None, Some(&missing), "t").unwrap_err();
        assert!(e.message.contains("nope"), "{}", e.message);
    }
}
