//! Configurations that follow their files: TLS certificates, keys, CAs and CRLs,
//! and the API's tokens file, are read again when they change on disk (checked
//! every few seconds) or on SIGHUP, so a renewed certificate, a new CRL or a
//! revoked token takes effect without a restart.
//!
//! A new set of files is validated by building the whole configuration before it
//! is used; when that fails (a half-written key, a CRL that does not parse) the
//! previous configuration stays in force and the reason is logged once per change.
//! Connections already open keep the configuration they started with; new ones
//! get the current one.

use std::path::PathBuf;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, RwLock};
use std::time::{Duration, SystemTime};

use tokio_util::sync::CancellationToken;

/// How often the files are looked at.
pub const CHECK_INTERVAL: Duration = Duration::from_secs(2);

/// What identifies a version of a file: a replaced or rewritten file differs in
/// at least one of these (`None`: the file cannot be read right now).
type Stamp = Option<(SystemTime, u64, u64)>;

fn stamp(path: &PathBuf) -> Stamp {
    use std::os::unix::fs::MetadataExt;
    let m = std::fs::metadata(path).ok()?;
    Some((m.modified().ok()?, m.len(), m.ino()))
}

type Build<C, E> = Box<dyn Fn() -> Result<Arc<C>, E> + Send + Sync>;

/// A configuration of type `C` (a rustls `ServerConfig`, a tokens table) built
/// from `files`, rebuilt when they change; `E` says why a build failed.
pub struct Reloading<C, E = crate::tls::TlsError> {
    /// What the configuration is for, in the config's words (`ingest.tls`).
    what: String,
    files: Vec<PathBuf>,
    build: Build<C, E>,
    current: RwLock<Arc<C>>,
    stamps: Mutex<Vec<Stamp>>,
    reloads: AtomicU64,
    failures: AtomicU64,
}

impl<C, E> std::fmt::Debug for Reloading<C, E> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Reloading")
            .field("what", &self.what)
            .field("files", &self.files)
            .finish_non_exhaustive()
    }
}

/// The outcome of one look at the files.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Reload {
    Unchanged,
    Reloaded,
    /// The files changed but do not make a valid configuration; the old one stays.
    Kept(String),
}

impl<C, E> Reloading<C, E>
where
    C: Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    /// Build the configuration once (an error here is a start-up error) and keep
    /// `build` to rebuild it from `files`.
    pub fn new(
        what: impl Into<String>,
        files: Vec<PathBuf>,
        build: impl Fn() -> Result<Arc<C>, E> + Send + Sync + 'static,
    ) -> Result<Arc<Self>, E> {
        let stamps = files.iter().map(stamp).collect();
        let first = build()?;
        Ok(Arc::new(Reloading {
            what: what.into(),
            files,
            build: Box::new(build),
            current: RwLock::new(first),
            stamps: Mutex::new(stamps),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        }))
    }

    /// A configuration that follows no file (tests, built-in settings).
    pub fn fixed(what: impl Into<String>, value: Arc<C>) -> Arc<Self> {
        Arc::new(Reloading {
            what: what.into(),
            files: Vec::new(),
            build: Box::new(move || unreachable_build()),
            current: RwLock::new(value),
            stamps: Mutex::new(Vec::new()),
            reloads: AtomicU64::new(0),
            failures: AtomicU64::new(0),
        })
    }

    /// The configuration in force.
    pub fn current(&self) -> Arc<C> {
        match self.current.read() {
            Ok(c) => c.clone(),
            Err(poisoned) => poisoned.into_inner().clone(),
        }
    }

    /// Successful reloads so far.
    pub fn reloads(&self) -> u64 {
        self.reloads.load(Ordering::Relaxed)
    }

    /// Rebuilds that failed (the previous configuration was kept).
    pub fn failures(&self) -> u64 {
        self.failures.load(Ordering::Relaxed)
    }

    /// Rebuild when a file changed since the last look, or always with `force`
    /// (SIGHUP).
    pub fn check(&self, force: bool) -> Reload {
        if self.files.is_empty() {
            return Reload::Unchanged;
        }
        let now: Vec<Stamp> = self.files.iter().map(stamp).collect();
        {
            let mut seen = match self.stamps.lock() {
                Ok(s) => s,
                Err(p) => p.into_inner(),
            };
            if !force && *seen == now {
                return Reload::Unchanged;
            }
            // Remembered even when the rebuild fails, so a bad file is reported
            // once, not every few seconds; the next change is tried again.
            *seen = now;
        }
        match (self.build)() {
            Ok(c) => {
                match self.current.write() {
                    Ok(mut cur) => *cur = c,
                    Err(p) => *p.into_inner() = c,
                }
                self.reloads.fetch_add(1, Ordering::Relaxed);
                tracing::info!(config = %self.what, "files reloaded; new connections use them");
                Reload::Reloaded
            }
            Err(e) => {
                self.failures.fetch_add(1, Ordering::Relaxed);
                let why = crate::error::report(&e);
                tracing::warn!(
                    config = %self.what,
                    error = %why,
                    "files changed but cannot be used; keeping the previous ones"
                );
                Reload::Kept(why)
            }
        }
    }
}

/// The build of a [`Reloading::fixed`] configuration, which `check` never calls.
fn unreachable_build<C, E>() -> Result<Arc<C>, E> {
    unreachable!("a fixed configuration is never rebuilt")
}

/// Something [`watch`] looks after.
pub trait Watched: Send + Sync {
    fn check(&self, force: bool) -> Reload;
}

impl<C, E> Watched for Reloading<C, E>
where
    C: Send + Sync + 'static,
    E: std::error::Error + Send + Sync + 'static,
{
    fn check(&self, force: bool) -> Reload {
        Reloading::check(self, force)
    }
}

/// Look at every configuration's files every [`CHECK_INTERVAL`], and rebuild all
/// of them on SIGHUP, until `shutdown`.
pub async fn watch(items: Vec<Arc<dyn Watched>>, shutdown: CancellationToken) {
    if items.is_empty() {
        return;
    }
    let mut hup = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::hangup()) {
        Ok(s) => Some(s),
        Err(e) => {
            tracing::warn!(error = %e, "cannot listen for SIGHUP; files are still reloaded when they change");
            None
        }
    };
    let mut tick = tokio::time::interval(CHECK_INTERVAL);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        let force = tokio::select! {
            _ = shutdown.cancelled() => return,
            _ = tick.tick() => false,
            Some(()) = async { match hup.as_mut() { Some(h) => h.recv().await, None => std::future::pending().await } } => true,
        };
        for item in &items {
            // File reads and key parsing: off the runtime threads.
            let item = item.clone();
            let _ = tokio::task::spawn_blocking(move || item.check(force)).await;
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::tls::TlsError;

    #[test]
    fn a_bad_new_file_keeps_the_old_configuration() {
        let dir = tempfile::tempdir().unwrap();
        let f = dir.path().join("value");
        std::fs::write(&f, "1").unwrap();
        let path = f.clone();
        let r = Reloading::new("test.tls", vec![f.clone()], move || {
            let text = std::fs::read_to_string(&path).map_err(|e| TlsError::Certs {
                path: path.clone(),
                source: rustls_pki_types::pem::Error::Io(e),
            })?;
            text.trim()
                .parse::<u32>()
                .map(Arc::new)
                .map_err(|_| TlsError::NoCerts { path: path.clone() })
        })
        .unwrap();
        assert_eq!(*r.current(), 1);
        assert_eq!(r.check(false), Reload::Unchanged);
        std::fs::write(&f, "22").unwrap();
        assert_eq!(r.check(false), Reload::Reloaded);
        assert_eq!(*r.current(), 22);
        std::fs::write(&f, "not a number").unwrap();
        assert!(matches!(r.check(false), Reload::Kept(why) if why.contains("value")));
        assert_eq!(*r.current(), 22, "the old configuration stays");
        assert_eq!(
            r.check(false),
            Reload::Unchanged,
            "reported once per change"
        );
        std::fs::remove_file(&f).unwrap();
        assert!(matches!(r.check(false), Reload::Kept(_)));
        std::fs::write(&f, "333").unwrap();
        assert_eq!(r.check(false), Reload::Reloaded);
        assert_eq!(*r.current(), 333);
        assert_eq!(
            r.check(true),
            Reload::Reloaded,
            "SIGHUP rebuilds regardless"
        );
        assert_eq!((r.reloads(), r.failures()), (3, 2));
    }
}
