//! Warren's coordinator: the durable queue.
//!
//! Every accepted task is in the store (SQLite in WAL mode by default) before the API answers;
//! the live queue is rebuilt from the store at start-up, so a coordinator killed at any moment
//! loses nothing. Dispatch is event-driven: a task arriving, a slot freeing, a worker registering
//! or a timer firing runs the incremental matcher ([`warren_core::matcher::Matcher`]) and
//! applies its launches.
//!
//! ```no_run
//! # async fn example() -> Result<(), warren_coordinator::StartError> {
//! use warren_coordinator::{Config, Coordinator};
//! let coordinator = Coordinator::start(Config::new("/var/lib/warren".into())).await?;
//! println!("API on http://{}", coordinator.http_addr);
//! coordinator.wait().await;
//! # Ok(()) }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use axum::serve::ListenerExt;
use tokio::net::TcpListener;
use tokio::task::JoinHandle;

pub mod api;
pub mod auth;
pub mod clock;
pub mod dashboard;
pub mod hub;
pub mod pythia_http;
pub mod queue;
pub mod service;
pub mod store;
pub mod writer;

pub use pythia_http::PythiaHttpConfig;
pub use service::{QueueConfig, Service, ServiceError};
pub use store::Durability;

/// Everything the coordinator needs to start.
#[derive(Debug, Clone)]
pub struct Config {
    /// Holds `warren.db` and the token files.
    pub data_dir: PathBuf,
    /// HTTP API address.
    pub http: SocketAddr,
    /// Queue (worker/Pythia) port address.
    pub queue: SocketAddr,
    /// Keep-alive interval on the queue port.
    pub keepalive: Duration,
    /// Queue behaviour.
    pub queue_config: QueueConfig,
    /// Largest API request body.
    pub max_body: usize,
    /// Longest `?wait=true`.
    pub max_wait: Duration,
    /// How hard commits wait for the disk.
    pub durability: Durability,
    /// Keep everything in memory instead of SQLite (tests of the queue logic only).
    pub in_memory: bool,
    /// Require the join token from workers and the bearer token from API clients even on
    /// loopback listeners (they are always required beyond loopback).
    pub require_tokens: bool,
    /// Pythia's HTTP frontends: the tasks directory, wait and callback settings.
    pub pythia: PythiaHttpConfig,
}

/// Default API address.
pub const DEFAULT_HTTP: &str = "127.0.0.1:7070";
/// Default queue address (Pythia's port).
pub const DEFAULT_QUEUE: &str = "127.0.0.1:9000";

impl Config {
    /// Defaults: loopback listeners on 7070 and 9000, 30 s keep-alive, 16 MiB bodies.
    pub fn new(data_dir: PathBuf) -> Config {
        Config {
            data_dir,
            http: SocketAddr::from(([127, 0, 0, 1], 7070)),
            queue: SocketAddr::from(([127, 0, 0, 1], 9000)),
            keepalive: warren_proto::DEFAULT_KEEPALIVE,
            queue_config: QueueConfig::default(),
            max_body: 16 << 20,
            max_wait: Duration::from_secs(300),
            durability: Durability::Full,
            in_memory: false,
            require_tokens: false,
            pythia: PythiaHttpConfig::default(),
        }
    }
}

/// Why the coordinator could not start.
#[derive(Debug, thiserror::Error)]
pub enum StartError {
    /// The store could not be opened or read.
    #[error("opening the store in {dir}: {source}")]
    Store {
        /// The data directory.
        dir: String,
        /// What failed.
        source: ServiceError,
    },
    /// A token file could not be read or made.
    #[error(transparent)]
    Token(#[from] auth::TokenError),
    /// A listener could not be bound.
    #[error("binding {what} on {addr}: {source}")]
    Bind {
        /// Which listener.
        what: &'static str,
        /// The address.
        addr: SocketAddr,
        /// What failed.
        source: std::io::Error,
    },
    /// A non-loopback address without a token.
    #[error("refusing to listen on {0} beyond loopback without a token")]
    NoToken(SocketAddr),
}

/// A running coordinator.
#[derive(Debug)]
pub struct Coordinator {
    /// Where the API listens.
    pub http_addr: SocketAddr,
    /// Where the queue port listens.
    pub queue_addr: SocketAddr,
    /// The queue service.
    pub service: Arc<Service>,
    /// The join token (required from workers only on a non-loopback queue port).
    pub join_token: String,
    /// The API bearer token (required only on a non-loopback API listener).
    pub api_token: String,
    tasks: Vec<JoinHandle<()>>,
}

impl Coordinator {
    /// Opens the store, binds both listeners and starts serving.
    pub async fn start(config: Config) -> Result<Coordinator, StartError> {
        let dir = config.data_dir.display().to_string();
        std::fs::create_dir_all(&config.data_dir).map_err(|e| StartError::Store {
            dir: dir.clone(),
            source: ServiceError::Store(e.to_string()),
        })?;
        // The database holds task specs (commands, environment variables): owner only.
        {
            use std::os::unix::fs::PermissionsExt;
            let _ =
                std::fs::set_permissions(&config.data_dir, std::fs::Permissions::from_mode(0o700));
        }
        let store_err = |source| StartError::Store {
            dir: dir.clone(),
            source,
        };
        let (writer_store, reader_store): (Box<dyn store::Store>, Box<dyn store::Store>) = if config
            .in_memory
        {
            let memory = store::MemoryStore::new();
            (Box::new(memory.clone()), Box::new(memory))
        } else {
            let path = config.data_dir.join("warren.db");
            let open = || {
                store::SqliteStore::open(&path, config.durability).map_err(|e| store_err(e.into()))
            };
            (Box::new(open()?), Box::new(open()?))
        };
        let join_token = auth::load_or_create(&config.data_dir.join("join-token"))?;
        let api_token = auth::load_or_create(&config.data_dir.join("api-token"))?;
        for (addr, token) in [(config.http, &api_token), (config.queue, &join_token)] {
            if !addr.ip().is_loopback() && token.is_empty() {
                return Err(StartError::NoToken(addr));
            }
        }
        // Binds and reads back the address (the port is chosen by the kernel when it is 0).
        let bind = |what, addr| async move {
            let listener = TcpListener::bind(addr)
                .await
                .map_err(|source| StartError::Bind { what, addr, source })?;
            let bound =
                listener
                    .local_addr()
                    .map_err(|source| StartError::Bind { what, addr, source })?;
            Ok::<_, StartError>((listener, bound))
        };
        let (http_listener, http_addr) = bind("the HTTP API", config.http).await?;
        let (queue_listener, queue_addr) = bind("the queue port", config.queue).await?;

        let (service, _writer_thread) = Service::open(
            writer_store,
            reader_store,
            Arc::new(clock::SystemClock),
            config.queue_config.clone(),
        )
        .map_err(store_err)?;
        let require = config.require_tokens;
        let token_for = |addr: SocketAddr, token: &str| {
            (require || !addr.ip().is_loopback()).then(|| Arc::<str>::from(token))
        };
        let api_state = api::ApiState {
            service: Arc::clone(&service),
            token: token_for(http_addr, &api_token),
            max_body: config.max_body,
            max_wait: config.max_wait,
            pythia: Arc::new(pythia_http::PythiaFrontends::new(config.pythia.clone())),
        };
        let port = queue::QueuePort {
            keepalive: config.keepalive,
            token: token_for(queue_addr, &join_token),
        };
        let mut tasks = Vec::new();
        let router = api::router(api_state);
        tasks.push(tokio::spawn(async move {
            // Small writes (server-sent events, short answers) go out at once, not after the
            // peer's delayed ACK.
            let listener = http_listener.tap_io(|tcp| {
                let _ = tcp.set_nodelay(true);
            });
            if let Err(e) = axum::serve(listener, router).await {
                tracing::error!("HTTP API stopped: {e}");
            }
        }));
        tasks.push(tokio::spawn(queue::serve(
            queue_listener,
            Arc::clone(&service),
            port,
        )));
        tasks.push(tokio::spawn(Arc::clone(&service).run_timers()));
        let grace = config.queue_config.orphan_grace;
        let orphans = Arc::clone(&service);
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(grace).await;
            orphans.expire_orphans();
        }));
        Ok(Coordinator {
            http_addr,
            queue_addr,
            service,
            join_token,
            api_token,
            tasks,
        })
    }

    /// Serves until the process ends.
    pub async fn wait(self) {
        for task in self.tasks {
            let _ = task.await;
        }
    }

    /// Stops serving (listeners close; connections already open end when their peers go).
    pub fn stop(self) {
        for task in self.tasks {
            task.abort();
        }
    }
}
