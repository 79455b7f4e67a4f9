//! `tributary serve --check-config`: what the configuration would meet on this host,
//! without starting anything. Loading already checked syntax, keys and
//! certificates; this adds what only the host can tell: whether `data_dir` is
//! writable and free (no other collector on it), whether the listen addresses
//! can be bound, and whether the descriptor limit fits the connection caps.

use std::fmt::Write as _;
use std::net::{SocketAddr, TcpListener};
use std::path::Path;

use crate::config::CollectorConfig;

/// The report for people, and whether everything checked out.
pub struct Report {
    pub text: String,
    pub ok: bool,
}

pub fn check(config_path: &Path, config: &CollectorConfig) -> Report {
    let mut text = String::new();
    let mut ok = true;
    let _ = writeln!(
        text,
        "{}: syntax, keys and certificates are valid",
        config_path.display()
    );
    let dir = &config.data_dir;
    match writable(dir) {
        Ok(()) => match lock_free(dir) {
            Ok(()) => {
                let _ = writeln!(text, "data_dir {} is writable", dir.display());
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(text, "error: data_dir {}: {e}", dir.display());
            }
        },
        Err(e) => {
            ok = false;
            let _ = writeln!(
                text,
                "error: data_dir {}: {e} (make it writable by the user the collector runs as)",
                dir.display()
            );
        }
    }
    for (key, addr) in [
        ("ingest.listen", config.ingest_listen),
        ("api.listen", config.api_listen),
    ] {
        match bindable(addr) {
            Ok(()) => {
                let _ = writeln!(text, "{key} {addr} is free");
            }
            Err(e) => {
                ok = false;
                let _ = writeln!(text, "error: {key} {addr}: {e}");
            }
        }
    }
    for w in config.exposure_warnings() {
        let _ = writeln!(text, "warning: {w}");
    }
    let plan = crate::descriptors::Plan::for_config(config);
    let _ = match plan.shortfall() {
        Some(w) => writeln!(text, "warning: {w}"),
        None => writeln!(text, "{}", plan.describe()),
    };
    let _ = writeln!(
        text,
        "{}",
        if ok {
            "configuration is valid"
        } else {
            "configuration has errors"
        }
    );
    Report { text, ok }
}

/// Create `dir` if needed and write, fsync and remove a probe file in it.
pub fn writable(dir: &Path) -> std::io::Result<()> {
    std::fs::create_dir_all(dir)?;
    let probe = dir.join(format!(".check-config-{}", std::process::id()));
    let r = std::fs::write(&probe, b"probe").and_then(|()| std::fs::File::open(&probe)?.sync_all());
    let _ = std::fs::remove_file(&probe);
    r
}

/// Whether another collector holds the data directory's lock.
fn lock_free(dir: &Path) -> Result<(), String> {
    let path = dir.join(".lock");
    let file = std::fs::OpenOptions::new()
        .create(true)
        .truncate(false)
        .write(true)
        .open(&path)
        .map_err(|e| format!("{}: {e}", path.display()))?;
    match file.try_lock() {
        Ok(()) => {
            let _ = file.unlock();
            Ok(())
        }
        Err(std::fs::TryLockError::WouldBlock) => Err(format!(
            "{} is held: a collector is running on this data_dir (stop it first, or give this one another data_dir)",
            path.display()
        )),
        Err(std::fs::TryLockError::Error(e)) => Err(format!("{}: {e}", path.display())),
    }
}

/// Bind `addr` and let it go again.
fn bindable(addr: SocketAddr) -> Result<(), String> {
    match TcpListener::bind(addr) {
        Ok(_) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::AddrInUse => Err(format!(
            "{e}: another program (a running collector?) listens there; stop it or choose another port"
        )),
        Err(e) if e.kind() == std::io::ErrorKind::AddrNotAvailable => {
            Err(format!("{e}: no interface of this host has that address"))
        }
        Err(e) if e.kind() == std::io::ErrorKind::PermissionDenied => Err(format!(
            "{e}: ports below 1024 need root or CAP_NET_BIND_SERVICE"
        )),
        Err(e) => Err(e.to_string()),
    }
}
