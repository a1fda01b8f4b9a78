//! Arrow Flight SQL over the [`QueryEngine`] (`--flight-addr`), so that ADBC
//! (`adbc_driver_flightsql`), the Flight SQL JDBC driver and pyarrow read results as the Arrow
//! record batches DataFusion makes, with no conversion on either side.
//!
//! `GetFlightInfo` for a statement plans it read-only (DDL, DML and `SET` are refused) and
//! answers its schema with one endpoint, whose ticket is the statement itself; `DoGet` on that
//! ticket runs it within the slots, deadline and memory pool of every user query
//! ([`QueryEngine::admit`]) and streams its batches as they are computed. Prepared statements
//! work the same way: their handle ([`handle`]) is the statement and, once bound by `DoPut`,
//! its parameters, so no server keeps state for a client and any server can serve any ticket.
//! The catalog commands (catalogs, schemas, tables with their Arrow schemas, table types,
//! SqlInfo) are answered from the session's catalog ([`service`]).
//!
//! Every call carries `authorization: Bearer <credential>`, checked by the [`SqlLogin`] (a
//! user's JWT in `production` mode); a client that logs in with a user name and password
//! (`Handshake` with Basic credentials, the password being the JWT) gets that token back as its
//! bearer token.

mod handle;
mod service;

use std::net::SocketAddr;
use std::sync::Arc;

use arrow_flight::flight_service_server::FlightServiceServer;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Identity, Server, ServerTlsConfig};
use tonic::{Request, Status};
use tracing::warn;

use crate::engine::QueryEngine;
use crate::error::{Error, TIMEOUT_MARK};
use crate::login::SqlLogin;
use service::FlightSql;

/// The server's certificate chain and private key, PEM, when Flight SQL is served over TLS.
#[derive(Clone)]
pub struct FlightTls {
    pub cert_pem: Vec<u8>,
    pub key_pem: Vec<u8>,
}

pub struct FlightServerArgs {
    pub addr: SocketAddr,
    pub engine: QueryEngine,
    pub login: Arc<dyn SqlLogin>,
    /// TLS for every connection (gRPC over TLS: a client connects with `grpc+tls://`).
    pub tls: Option<FlightTls>,
}

/// The listening Flight SQL front-end.
#[derive(Debug, Clone, Copy)]
pub struct FlightServer {
    pub addr: SocketAddr,
}

impl FlightServer {
    /// Binds `args.addr` and serves Flight SQL on its own task until the process ends.
    pub async fn start(args: FlightServerArgs) -> std::io::Result<Self> {
        let listener = tokio::net::TcpListener::bind(args.addr).await?;
        let addr = listener.local_addr()?;
        let incoming = TcpIncoming::from(listener).with_nodelay(Some(true));
        let mut server = Server::builder();
        if let Some(tls) = &args.tls {
            let identity = Identity::from_pem(&tls.cert_pem, &tls.key_pem);
            server = server
                .tls_config(ServerTlsConfig::new().identity(identity))
                .map_err(std::io::Error::other)?;
        }
        let service = FlightServiceServer::new(FlightSql::new(args.engine, args.login))
            .max_decoding_message_size(16 * 1024 * 1024);
        let router = server.add_service(service);
        tokio::spawn(async move {
            if let Err(e) = router.serve_with_incoming(incoming).await {
                warn!(error = %e, "flight sql server stopped");
            }
        });
        Ok(Self { addr })
    }
}

/// The bearer token a request carries, if any (`authorization: Bearer T`).
fn bearer<T>(request: &Request<T>) -> Result<Option<&str>, Status> {
    let Some(value) = request.metadata().get("authorization") else {
        return Ok(None);
    };
    let value = value
        .to_str()
        .map_err(|_| Status::unauthenticated("the authorization header is not text"))?;
    match value.split_once(' ') {
        Some((scheme, token)) if scheme.eq_ignore_ascii_case("bearer") => Ok(Some(token.trim())),
        _ => Err(Status::unauthenticated(
            "authorization must be `Bearer <user token>` (or log in by Handshake with the token as the password)",
        )),
    }
}

/// Lets `request` through when the [`SqlLogin`] accepts its bearer token, or needs none.
fn authorize<T>(login: &dyn SqlLogin, request: &Request<T>) -> Result<(), Status> {
    if !login.credential_required() {
        return Ok(());
    }
    match bearer(request)? {
        Some(token) => login.check(token).map_err(Status::unauthenticated),
        None => Err(Status::unauthenticated(
            "no credential: send `authorization: Bearer <user token>`, or log in with the token as the password",
        )),
    }
}

/// An error of the query layer as the gRPC status a Flight client raises.
fn status(e: Error) -> Status {
    let message = e.to_string();
    match e {
        Error::Busy { .. } => Status::resource_exhausted(message),
        _ if message.contains(TIMEOUT_MARK) => Status::deadline_exceeded(message),
        _ if e.is_user_error() => Status::invalid_argument(message),
        _ => Status::internal(message),
    }
}

/// What a write over Flight SQL is told: aemos's SQL is read-only.
fn read_only(what: &str) -> Status {
    Status::invalid_argument(format!(
        "{what} is not run: aemos is read-only over SQL; readings are written over HTTP, MQTT or CoAP"
    ))
}
