//! A connection's startup: protocol negotiation, the password when one is needed, and the
//! session parameters a client learns on connect.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use futures::{Sink, SinkExt};
use pgwire::api::auth::{
    finish_authentication, protocol_negotiation, save_startup_parameters_to_metadata,
    DefaultServerParameterProvider, StartupHandler,
};
use pgwire::api::{
    ClientInfo, ConnectionManager, PgWireConnectionState, PidSecretKeyGenerator,
    RandomPidSecretKeyGenerator,
};
use pgwire::error::{ErrorInfo, PgWireError, PgWireResult};
use pgwire::messages::response::ErrorResponse;
use pgwire::messages::startup::Authentication;
use pgwire::messages::{PgWireBackendMessage, PgWireFrontendMessage};
use tokio::io::AsyncWriteExt;
use tokio::net::TcpStream;

use crate::login::SqlLogin;

pub(crate) struct PgStartup {
    login: Arc<dyn SqlLogin>,
    /// TLS is on offer: a password must not then cross the network in clear.
    tls: bool,
    connections: Arc<ConnectionManager>,
    pids: RandomPidSecretKeyGenerator,
    parameters: DefaultServerParameterProvider,
}

impl PgStartup {
    pub(crate) fn new(
        login: Arc<dyn SqlLogin>,
        tls: bool,
        connections: Arc<ConnectionManager>,
    ) -> Self {
        let mut parameters = DefaultServerParameterProvider::default();
        parameters.server_version = format!("16.6 (aemos {})", env!("CARGO_PKG_VERSION"));
        parameters.is_superuser = false;
        parameters.default_transaction_read_only = true;
        parameters.time_zone = "UTC".into();
        Self {
            login,
            tls,
            connections,
            pids: RandomPidSecretKeyGenerator::default(),
            parameters,
        }
    }

    /// The connection is let in: its key for cancel requests, then `AuthenticationOk`, the
    /// parameters and `ReadyForQuery`.
    async fn admit<C>(&self, client: &mut C) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let (pid, key) = self.pids.generate(client);
        client.set_pid_and_secret_key(pid, key.clone());
        let (handle, guard) = self.connections.register(pid, key);
        client.session_extensions().insert(handle);
        client.session_extensions().insert(guard);
        finish_authentication(client, &self.parameters).await
    }
}

fn fatal(code: &str, message: String) -> PgWireError {
    PgWireError::UserError(Box::new(ErrorInfo::new(
        "FATAL".into(),
        code.into(),
        message,
    )))
}

#[async_trait]
impl StartupHandler for PgStartup {
    async fn on_startup<C>(
        &self,
        client: &mut C,
        message: PgWireFrontendMessage,
    ) -> PgWireResult<()>
    where
        C: ClientInfo + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match message {
            PgWireFrontendMessage::Startup(ref startup) => {
                protocol_negotiation(client, startup).await?;
                save_startup_parameters_to_metadata(client, startup);
                if !self.login.credential_required() {
                    return self.admit(client).await;
                }
                if self.tls && !client.is_secure() && !client.socket_addr().ip().is_loopback() {
                    return Err(fatal(
                        "28000",
                        "this server takes passwords only over TLS: connect with sslmode=require"
                            .into(),
                    ));
                }
                client.set_state(PgWireConnectionState::AuthenticationInProgress);
                client
                    .send(PgWireBackendMessage::Authentication(
                        Authentication::CleartextPassword,
                    ))
                    .await?;
                Ok(())
            }
            PgWireFrontendMessage::PasswordMessageFamily(password) => {
                let password = password.into_password()?;
                let user = client
                    .metadata()
                    .get(pgwire::api::METADATA_USER)
                    .cloned()
                    .unwrap_or_default();
                match self.login.check(&password.password) {
                    Ok(()) => self.admit(client).await,
                    Err(reason) => Err(fatal(
                        "28P01",
                        format!("password authentication failed for user \"{user}\": {reason}"),
                    )),
                }
            }
            _ => Ok(()),
        }
    }
}

/// Answers a connection beyond `--pg-max-connections` with Postgres' own refusal, then closes
/// it. The client's startup message is not read: the error is what it reads first.
pub(crate) async fn refuse_busy(mut socket: TcpStream, max: usize) {
    use pgwire::messages::Message;
    let info = ErrorInfo::new(
        "FATAL".into(),
        "53300".into(),
        format!("sorry, too many clients already ({max} connections are open, the most at once)"),
    );
    let mut buf = bytes::BytesMut::new();
    if ErrorResponse::from(info).encode(&mut buf).is_ok() {
        let _ =
            tokio::time::timeout(std::time::Duration::from_secs(1), socket.write_all(&buf)).await;
    }
}
