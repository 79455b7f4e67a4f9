//! `tributary serve`: open the store, bind the ingest and API listeners, start the
//! Kafka sources, run until shutdown.

use std::net::SocketAddr;
use std::sync::Arc;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::config::CollectorConfig;
use crate::ingest::Ingest;
use crate::metrics::Metrics;
use crate::storage::{Storage, StorageError};

#[derive(Debug, Error)]
pub enum ServeError {
    #[error("cannot open the store in {dir}: {source}{}", store_hint(source))]
    Store { dir: String, source: StorageError },
    #[error(
        "cannot listen on {addr} ({what}): {source}{}",
        bind_hint(source, what)
    )]
    Bind {
        addr: SocketAddr,
        what: &'static str,
        source: std::io::Error,
    },
    #[error("HTTP API: {0}")]
    Api(std::io::Error),
}

/// What to do about a store that does not open.
fn store_hint(e: &StorageError) -> &'static str {
    if let StorageError::Store(tributary_store::Error::Locked { .. }) = e {
        return " (another collector is running on this data_dir: stop it, or give this one another data_dir)";
    }
    let mut cur: Option<&(dyn std::error::Error + 'static)> = Some(e);
    while let Some(c) = cur {
        if let Some(io) = c.downcast_ref::<std::io::Error>() {
            match io.kind() {
                std::io::ErrorKind::PermissionDenied | std::io::ErrorKind::ReadOnlyFilesystem => {
                    return " (make data_dir writable by the user the collector runs as)";
                }
                std::io::ErrorKind::StorageFull => return " (the disk is full)",
                _ => {}
            }
        }
        cur = c.source();
    }
    ""
}

/// What to do about an address that cannot be bound.
fn bind_hint(e: &std::io::Error, what: &str) -> String {
    let key = match what {
        "api" => "api.listen",
        "kafka" => "kafka.listen",
        _ => "ingest.listen",
    };
    match e.kind() {
        std::io::ErrorKind::AddrInUse => format!(
            " (another program, perhaps another collector or quickstart, uses this port: stop it or set {key})"
        ),
        std::io::ErrorKind::PermissionDenied => {
            " (ports below 1024 need root or CAP_NET_BIND_SERVICE: use a higher port)".into()
        }
        std::io::ErrorKind::AddrNotAvailable => {
            format!(" (no interface of this host has that address: check {key})")
        }
        _ => String::new(),
    }
}

/// How long a Kafka source may take to stop (last append durable, commit,
/// LeaveGroup) before it is cut off.
const SOURCE_STOP: std::time::Duration = std::time::Duration::from_secs(15);

/// A collector whose listeners are bound, ready to [`Collector::run`].
pub struct Collector {
    config: Arc<CollectorConfig>,
    storage: Arc<Storage>,
    metrics: Arc<Metrics>,
    ingest: TcpListener,
    api: TcpListener,
    kafka: Option<TcpListener>,
}

impl Collector {
    /// Open (and recover) the store and bind both listeners, so that errors surface
    /// before anything runs.
    pub async fn bind(config: CollectorConfig) -> Result<Collector, ServeError> {
        let config = Arc::new(config);
        let dir = config.data_dir.display().to_string();
        let c = config.clone();
        let storage = tokio::task::spawn_blocking(move || Storage::open(c))
            .await
            .map_err(|e| ServeError::Store {
                dir: dir.clone(),
                source: StorageError::Task(e),
            })?
            .map_err(|source| ServeError::Store { dir, source })?;
        let ingest = TcpListener::bind(config.ingest_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.ingest_listen,
                what: "ingest",
                source,
            })?;
        let api = TcpListener::bind(config.api_listen)
            .await
            .map_err(|source| ServeError::Bind {
                addr: config.api_listen,
                what: "api",
                source,
            })?;
        let kafka = match &config.kafka {
            Some(k) => {
                Some(
                    TcpListener::bind(k.listen)
                        .await
                        .map_err(|source| ServeError::Bind {
                            addr: k.listen,
                            what: "kafka",
                            source,
                        })?,
                )
            }
            None => None,
        };
        Ok(Collector {
            kafka,
            config,
            storage: Arc::new(storage),
            metrics: Arc::new(Metrics::new()),
            ingest,
            api,
        })
    }

    pub fn ingest_addr(&self) -> SocketAddr {
        self.ingest
            .local_addr()
            .unwrap_or(self.config.ingest_listen)
    }

    pub fn api_addr(&self) -> SocketAddr {
        self.api.local_addr().unwrap_or(self.config.api_listen)
    }

    /// The Kafka listener's address, when one is configured.
    pub fn kafka_addr(&self) -> Option<SocketAddr> {
        self.kafka.as_ref().and_then(|l| l.local_addr().ok())
    }

    /// Serve until `shutdown`; then finish in-flight batches and flush.
    pub async fn run(self, shutdown: CancellationToken) -> Result<(), ServeError> {
        tracing::info!(
            ingest = %self.ingest_addr(),
            api = %self.api_addr(),
            data_dir = %self.config.data_dir.display(),
            fsync = ?self.config.fsync,
            "collector listening"
        );
        for w in self.config.exposure_warnings() {
            tracing::warn!("{w}");
        }
        let plan = crate::descriptors::Plan::for_config(&self.config);
        match plan.shortfall() {
            Some(warning) => tracing::warn!("{warning}"),
            None => tracing::info!("{}", plan.describe()),
        }
        let flusher = tokio::spawn(self.storage.clone().run_flusher(shutdown.clone()));
        // Certificates, CRLs and tokens are read again when they change or on SIGHUP.
        let watched = tokio::spawn(tributary_common::reload::watch(
            self.config.watched(),
            shutdown.clone(),
        ));
        let retention = tokio::spawn(crate::retention::run(
            self.storage.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let mut router = crate::api::router_with_produce(
            self.storage.reader(),
            self.storage.clone(),
            self.metrics.clone(),
        );
        if let Some(auth) = &self.config.api_auth {
            router = crate::api::auth::guard(router, auth.clone(), self.metrics.clone());
        }
        let api = tokio::spawn(crate::api::server::serve(
            self.api,
            router,
            self.config.http_limits,
            self.config.api_tls.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        ));
        let kafka = match (self.kafka, &self.config.kafka) {
            (Some(listener), Some(settings)) => {
                tracing::info!(
                    kafka = %settings.listen,
                    advertised = %format!("{}:{}", settings.advertised_host, settings.advertised_port),
                    tls = settings.tls.is_some(),
                    "Kafka listener on"
                );
                let broker = std::sync::Arc::new(crate::kafka::Broker {
                    settings: settings.clone(),
                    store: self.storage.reader(),
                    writer: self.storage.clone(),
                    producers: Default::default(),
                    coordinator: Default::default(),
                    shutdown: shutdown.clone(),
                    metrics: self.metrics.clone(),
                    auth: self.config.api_auth.clone(),
                });
                Some(tokio::spawn(broker.run(listener, shutdown.clone())))
            }
            _ => None,
        };
        // Kafka sources: each stops fetching at shutdown, waits for its last
        // append to be durable, commits and leaves its group.
        let sources = crate::source::spawn(
            &self.config.sources,
            self.storage.clone(),
            self.metrics.clone(),
            shutdown.clone(),
        );
        let mut ingest = Ingest::new(
            self.config.tls.clone(),
            self.storage.clone(),
            self.metrics.clone(),
            self.config.max_connections,
        );
        ingest.tls_cert_path = self.config.tls_cert_path.clone();
        ingest.tls_client_ca_path = self.config.tls_client_ca_path.clone();
        ingest.idle_timeout = self.config.idle_timeout;
        ingest.budget = crate::ingest::budget::MemoryBudget::new(self.config.max_inflight_bytes);
        ingest.max_connections_per_ip = self.config.max_connections_per_ip;
        ingest.identity = self.config.identity;
        ingest.run(self.ingest, shutdown.clone()).await;
        let api_result = api.await;
        if let Some(k) = kafka {
            let _ = k.await;
        }
        for s in sources {
            // Bounded by the sources themselves (each step has a timeout); this
            // is the backstop.
            let abort = s.abort_handle();
            if tokio::time::timeout(SOURCE_STOP, s).await.is_err() {
                abort.abort();
                tracing::warn!("a Kafka source did not stop within {SOURCE_STOP:?}; stopped it");
            }
        }
        let _ = flusher.await;
        let _ = watched.await;
        let _ = retention.await;
        self.storage.flush_all().await;
        tracing::info!("collector stopped");
        match api_result {
            Ok(Err(e)) => Err(ServeError::Api(e)),
            _ => Ok(()),
        }
    }
}
