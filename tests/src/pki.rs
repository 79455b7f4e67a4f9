//! An administrator's own PKI, made with the `openssl` command line as one would by
//! hand: a CA, a server certificate and client certificates with DNS names, and
//! CRLs from `openssl ca`. Tests use it next to the certificates `tributary certs`
//! writes, so the collector is proven against both.

use std::path::{Path, PathBuf};
use std::process::Command;

use tributary_collector::setup::certs::CertFiles;

/// A CA made by `openssl` in a directory, and the certificates it issued.
pub struct Pki {
    pub dir: PathBuf,
    pub ca: PathBuf,
    pub ca_key: PathBuf,
}

/// Run `openssl` with `line` split at whitespace (no argument holds a space).
fn openssl(dir: &Path, line: &str) {
    let args: Vec<&str> = line.split_whitespace().collect();
    let out = Command::new("openssl")
        .args(args)
        .current_dir(dir)
        .output()
        .expect("run openssl (Debian package `openssl`)");
    assert!(
        out.status.success(),
        "openssl {line}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
}

impl Pki {
    /// A new CA (P-256, 30 days) in `dir`, with the files `openssl ca` keeps.
    pub fn new(dir: &Path) -> Pki {
        std::fs::create_dir_all(dir).expect("pki dir");
        openssl(
            dir,
            "req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout ca.key \
             -out ca.pem -days 30 -subj /O=Example/CN=Example-Logging-CA \
             -addext basicConstraints=critical,CA:TRUE -addext keyUsage=critical,keyCertSign,cRLSign",
        );
        std::fs::write(dir.join("index.txt"), "").expect("index.txt");
        std::fs::write(dir.join("crlnumber"), "01\n").expect("crlnumber");
        std::fs::write(
            dir.join("ca.cnf"),
            "[ca]\ndefault_ca = local\n[local]\ndatabase = index.txt\ncrlnumber = crlnumber\n\
             certificate = ca.pem\nprivate_key = ca.key\ndefault_md = sha256\ndefault_crl_days = 7\nunique_subject = no\n",
        )
        .expect("ca.cnf");
        Pki {
            dir: dir.to_owned(),
            ca: dir.join("ca.pem"),
            ca_key: dir.join("ca.key"),
        }
    }

    /// Issue `<name>.pem`/`.key` with these subject alternative names
    /// (`DNS:web-01,IP:127.0.0.1`) for `usage` (`serverAuth` or `clientAuth`),
    /// recorded in the CA database so that it can be revoked.
    pub fn issue(&self, name: &str, san: &str, usage: &str) -> (PathBuf, PathBuf) {
        let ext = format!(
            "subjectAltName={san}\nextendedKeyUsage={usage}\nkeyUsage=critical,digitalSignature\nbasicConstraints=CA:FALSE\n"
        );
        std::fs::write(self.dir.join(format!("{name}.ext")), ext).expect("ext file");
        openssl(
            &self.dir,
            &format!(
                "req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -keyout {name}.key \
                 -out {name}.csr -subj /O=Example/CN={name}"
            ),
        );
        openssl(
            &self.dir,
            &format!(
                "x509 -req -in {name}.csr -CA ca.pem -CAkey ca.key -CAcreateserial -days 30 \
                 -extfile {name}.ext -out {name}.pem"
            ),
        );
        // Enter it in the CA database (`openssl ca -valid`), so `revoke` knows it.
        openssl(&self.dir, &format!("ca -config ca.cnf -valid {name}.pem"));
        (
            self.dir.join(format!("{name}.pem")),
            self.dir.join(format!("{name}.key")),
        )
    }

    /// Revoke `<name>.pem` in the CA database.
    pub fn revoke(&self, name: &str) {
        openssl(&self.dir, &format!("ca -config ca.cnf -revoke {name}.pem"));
    }

    /// Write the CA's current CRL (PEM) to `out`.
    pub fn crl(&self, out: &Path) {
        let out = out.to_str().expect("utf-8 path");
        openssl(&self.dir, &format!("ca -config ca.cnf -gencrl -out {out}"));
    }

    /// Files for a test [`Env`](crate::Env): this CA, a collector certificate for
    /// localhost and 127.0.0.1, and a client certificate named `agent`.
    pub fn cert_files(&self, agent: &str) -> CertFiles {
        let (collector_cert, collector_key) =
            self.issue("collector", "DNS:localhost,IP:127.0.0.1", "serverAuth");
        let (agent_cert, agent_key) = self.issue(agent, &format!("DNS:{agent}"), "clientAuth");
        CertFiles {
            ca: self.ca.clone(),
            ca_key: self.ca_key.clone(),
            collector_cert,
            collector_key,
            agent_cert,
            agent_key,
        }
    }
}
