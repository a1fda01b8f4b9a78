//! The Postgres wire protocol over the [`QueryEngine`] (`--pg-addr`), so that psql, Grafana,
//! psycopg and JDBC read aemos as they would a Postgres database.
//!
//! A connection's startup ([`startup`]) asks for a password when the [`SqlLogin`] says one is
//! needed (a user's JWT in `production` mode, checked by the [`SqlLogin`]), and refuses it in clear text beyond loopback
//! when TLS is on offer. Its statements ([`handler`]) are parsed with the Postgres dialect
//! (catalog casts such as `'t'::regclass` rewritten), then either answered by the session
//! ([`session`]: `SET`, `SHOW`, `BEGIN`, `COMMIT`) or planned read-only on the shared session
//! and run within the same slots, deadline and memory pool as HTTP queries; results stream out
//! as text or binary rows ([`encode`]). Simple and extended query protocols are both served.

mod encode;
mod handler;
mod session;
mod startup;

use std::net::SocketAddr;
use std::sync::Arc;

use pgwire::api::cancel::DefaultCancelHandler;
use pgwire::api::{ConnectionManager, PgWireServerHandlers};
use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio_rustls::rustls::ServerConfig;
use tokio_rustls::TlsAcceptor;
use tracing::{debug, warn};

use crate::engine::QueryEngine;
use crate::login::SqlLogin;
use handler::PgHandler;
use startup::PgStartup;

pub struct PgServerArgs {
    pub addr: SocketAddr,
    pub engine: QueryEngine,
    pub login: Arc<dyn SqlLogin>,
    /// TLS on offer (clients ask with `sslmode`); a password then never crosses the network in
    /// clear: beyond loopback, a connection without TLS is refused before it is asked for one.
    pub tls: Option<Arc<ServerConfig>>,
    /// Connections open at once; one more is refused (`53300 too_many_connections`).
    pub max_connections: usize,
}

/// The listening Postgres front-end.
#[derive(Debug, Clone, Copy)]
pub struct PgServer {
    pub addr: SocketAddr,
}

struct Handlers {
    handler: Arc<PgHandler>,
    startup: Arc<PgStartup>,
    cancel: Arc<DefaultCancelHandler>,
}

impl PgWireServerHandlers for Handlers {
    fn simple_query_handler(&self) -> Arc<impl pgwire::api::query::SimpleQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn extended_query_handler(&self) -> Arc<impl pgwire::api::query::ExtendedQueryHandler> {
        Arc::clone(&self.handler)
    }

    fn startup_handler(&self) -> Arc<impl pgwire::api::auth::StartupHandler> {
        Arc::clone(&self.startup)
    }

    fn cancel_handler(&self) -> Arc<impl pgwire::api::cancel::CancelHandler> {
        Arc::clone(&self.cancel)
    }
}

impl PgServer {
    /// Binds `args.addr` and serves connections on their own tasks until the process ends.
    pub async fn start(args: PgServerArgs) -> std::io::Result<Self> {
        let listener = TcpListener::bind(args.addr).await?;
        let addr = listener.local_addr()?;
        let tls = args.tls.map(|config| {
            // Postgres clients that negotiate ALPN (libpq 17) ask for `postgresql`.
            let mut config = (*config).clone();
            config.alpn_protocols = vec![b"postgresql".to_vec()];
            TlsAcceptor::from(Arc::new(config))
        });
        let connections = Arc::new(ConnectionManager::new());
        let handlers = Arc::new(Handlers {
            handler: Arc::new(PgHandler::new(args.engine)),
            startup: Arc::new(PgStartup::new(
                args.login,
                tls.is_some(),
                Arc::clone(&connections),
            )),
            cancel: Arc::new(DefaultCancelHandler::new(connections)),
        });
        let slots = Arc::new(Semaphore::new(args.max_connections.max(1)));
        tokio::spawn(async move {
            loop {
                let (socket, peer) = match listener.accept().await {
                    Ok(c) => c,
                    Err(e) => {
                        warn!(error = %e, "postgres: accept failed");
                        tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                        continue;
                    }
                };
                let _ = socket.set_nodelay(true);
                let Ok(slot) = Arc::clone(&slots).try_acquire_owned() else {
                    tokio::spawn(startup::refuse_busy(socket, args.max_connections));
                    continue;
                };
                let handlers = Arc::clone(&handlers);
                let tls = tls.clone();
                tokio::spawn(async move {
                    if let Err(e) = pgwire::tokio::process_socket(socket, tls, handlers).await {
                        debug!(%peer, error = %e, "postgres connection ended");
                    }
                    drop(slot);
                });
            }
        });
        Ok(Self { addr })
    }
}
