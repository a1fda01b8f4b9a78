use crate::link::local::{LinkError, LinkRx, LinkTx};
use crate::link::network;
use crate::link::network::Network;
use crate::local::LinkBuilder;
use crate::protocol::{
    ConnAck, Connect, ConnectReturnCode, Disconnect, DisconnectProperties, DisconnectReasonCode,
    Login, Packet, Protocol, Publish,
};
use crate::router::{Event, Notification};
use crate::{ConnectionId, ConnectionSettings, PacketFilter, PacketVerdict, ReadPause, SessionCheck};

use flume::{RecvError, SendError, Sender, TrySendError};
use std::cmp::min;
use std::collections::VecDeque;
use std::io;
use std::sync::Arc;
use std::time::Duration;
use subtle::ConstantTimeEq;
use tokio::time::error::Elapsed;
use tokio::{select, time};
use tracing::{debug, trace, Span};

#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("I/O")]
    Io(#[from] io::Error),
    #[error("Not connect packet")]
    NotConnectPacket(Packet),
    #[error("Network {0}")]
    Network(#[from] network::Error),
    #[error("Timeout")]
    Timeout(#[from] Elapsed),
    #[error("Channel send error")]
    Send(#[from] SendError<(ConnectionId, Event)>),
    #[error("Channel recv error")]
    Recv(#[from] RecvError),
    #[error("Got new session, disconnecting old one")]
    SessionEnd,
    #[error("Persistent session requires valid client id")]
    InvalidClientId,
    #[error("Unexpected router message")]
    NotConnectionAck,
    #[error("ConnAck error {0}")]
    ConnectionAck(String),
    #[error("Authentication error")]
    InvalidAuth,
    #[error("Channel try send error")]
    TrySend(#[from] TrySendError<(ConnectionId, Event)>),
    #[error("Link error = {0}")]
    Link(#[from] LinkError),
    // aemos: the packet filter refused a packet (the verdict's message); the link closes.
    #[error("Refused: {0}")]
    Refused(String),
}

/// Orchestrates between Router and Network.
pub struct RemoteLink<P> {
    connect: Connect,
    pub(crate) connection_id: ConnectionId,
    network: Network<P>,
    link_tx: LinkTx,
    link_rx: LinkRx,
    notifications: VecDeque<Notification>,
    pub(crate) will_delay_interval: u32,
    // aemos: the client id the filter is called with (the CONNECT's, or the assigned one)
    client_id: String,
    // aemos: from `ConnectionSettings::packet_filter`
    packet_filter: Option<PacketFilter>,
    // aemos: from `ConnectionSettings::session_check`
    session_check: Option<SessionCheck>,
    // aemos: from `ConnectionSettings::read_pause` (set after `new`)
    read_pause: Option<ReadPause>,
}

impl<P: Protocol> RemoteLink<P> {
    pub async fn new(
        router_tx: Sender<(ConnectionId, Event)>,
        tenant_id: Option<String>,
        mut network: Network<P>,
        connect_packet: Packet,
        dynamic_filters: bool,
        assigned_client_id: Option<String>,
        packet_filter: Option<PacketFilter>, // aemos
        session_check: Option<SessionCheck>, // aemos
    ) -> Result<RemoteLink<P>, Error> {
        let Packet::Connect(connect, props, lastwill, lastwill_props, _) = connect_packet else {
            return Err(Error::NotConnectPacket(connect_packet));
        };

        // Register this connection with the router. Router replys with ack which if ok will
        // start the link. Router can sometimes reject the connection (ex max connection limit)
        let client_id = assigned_client_id
            .clone()
            .unwrap_or_else(|| connect.client_id.clone()); // aemos: owned, kept for the filter
        let clean_session = connect.clean_session;

        let topic_alias_max = props.as_ref().and_then(|p| p.topic_alias_max);
        let session_expiry = props
            .as_ref()
            .and_then(|p| p.session_expiry_interval)
            .unwrap_or(0);

        let delay_interval = lastwill_props
            .as_ref()
            .and_then(|f| f.delay_interval)
            .unwrap_or(0);

        // The Server delays publishing the Client’s Will Message until
        // the Will Delay Interval has passed or the Session ends, whichever happens first
        let will_delay_interval = min(session_expiry, delay_interval);

        let (link_tx, link_rx, notification) = LinkBuilder::new(&client_id, router_tx)
            .tenant_id(tenant_id)
            .clean_session(clean_session)
            .last_will(lastwill)
            .last_will_properties(lastwill_props)
            .dynamic_filters(dynamic_filters)
            .topic_alias_max(topic_alias_max.unwrap_or(0))
            .build_async() // aemos: change 7
            .await?;

        let id = link_rx.id();
        Span::current().record("connection_id", id);

        if let Some(mut packet) = notification.into() {
            if let Packet::ConnAck(_ack, props) = &mut packet {
                let mut new_props = props.clone().unwrap_or_default();
                new_props.assigned_client_identifier = assigned_client_id;
                *props = Some(new_props);
                network.write(packet).await?;
            }
        }

        Ok(RemoteLink {
            connect,
            connection_id: id,
            network,
            link_tx,
            link_rx,
            // aemos: allocated on demand (change 6), not per connection up front
            notifications: VecDeque::new(),
            will_delay_interval,
            client_id,
            packet_filter,
            session_check,
            read_pause: None,
        })
    }

    /// aemos: reads wait while `pause` says so.
    pub(crate) fn set_read_pause(&mut self, pause: Option<ReadPause>) {
        self.read_pause = pause;
    }

    pub async fn start(&mut self) -> Result<(), Error> {
        self.network.set_keepalive(self.connect.keep_alive);

        // Note:
        // Shouldn't result in bounded queue deadlocks because of blocking n/w send
        loop {
            // aemos: backpressure, the application may hold reads (not writes) for a while
            let pause = self.read_pause.as_ref().and_then(|pause| pause());
            select! {
                _ = tokio::time::sleep(pause.unwrap_or_default()), if pause.is_some() => {}
                o = self.network.read(), if pause.is_none() => {
                    let packet = o?;
                    let (len, new, refused) = {
                        let mut buffer = self.link_tx.buffer();
                        let first_new = buffer.len(); // aemos
                        buffer.push_back(packet);
                        let read = self.network.readv(&mut buffer);
                        // aemos: filter the new packets before the lock is released (even if
                        // readv failed): the router may swap the buffer out at any time after.
                        let refused = match &self.packet_filter {
                            Some(filter) => {
                                refuse_from(filter, &self.client_id, &mut buffer, first_new)
                            }
                            None => None,
                        };
                        if refused.is_none() {
                            read?;
                        }
                        (buffer.len(), buffer.len() - first_new, refused)
                    };

                    trace!("Packets read from network, count = {}", len);
                    // aemos: the packets before a refused one still go to the router
                    if new > 0 {
                        self.link_tx.notify().await?;
                    }
                    if let Some((reason_code, message)) = refused {
                        return Err(self.refuse(reason_code, message).await);
                    }
                }
                // Receive from router when previous when state isn't in collision
                // due to previously received data request
                o = self.link_rx.exchange(&mut self.notifications) => {
                    o?;
                    let mut packets = VecDeque::new();
                    let mut unscheduled = false;

                    for notif in self.notifications.drain(..) {
                        if let Some(packet) = notif.into() {
                            packets.push_back(packet);
                        } else {
                            unscheduled = true;
                        }

                    }
                    // aemos: nothing more is written to a session whose credential went
                    if let Some(check) = &self.session_check {
                        if !packets.is_empty() {
                            if let PacketVerdict::Refuse { reason, message } = check(&self.client_id) {
                                return Err(self.refuse(reason, message).await);
                            }
                        }
                    }
                    self.network.writev(packets).await?;
                    if unscheduled {
                        self.link_rx.wake().await?;
                    }
                }
            }
        }
    }
}

// aemos: the packet filter's verdicts
impl<P: Protocol> RemoteLink<P> {
    /// Closes the link after a refused packet: MQTT 5 peers first get a DISCONNECT with the
    /// verdict's reason code and message; MQTT 3.1.1 servers must not send DISCONNECT, so those
    /// connections are just closed. Write errors are ignored, the peer may already be gone.
    async fn refuse(&mut self, reason_code: DisconnectReasonCode, message: String) -> Error {
        debug!(?reason_code, reason_string = %message, "packet refused, closing");
        if P::MQTT5 {
            let disconnect = Packet::Disconnect(
                Disconnect { reason_code },
                Some(DisconnectProperties {
                    session_expiry_interval: None,
                    reason_string: Some(message.clone()),
                    user_properties: Vec::new(),
                    server_reference: None,
                }),
            );
            if let Err(e) = self.network.write(disconnect).await {
                debug!(error = ?e, "failed to send DISCONNECT");
            }
        }
        if let Err(e) = self.network.close().await {
            debug!(error = ?e, "failed to close the connection");
        }
        Error::Refused(message)
    }
}

/// aemos: runs the filter over `buffer[first_new..]` in order. At the first refused packet, drops
/// it and everything after it, and returns the verdict's reason code and message.
fn refuse_from(
    filter: &PacketFilter,
    client_id: &str,
    buffer: &mut VecDeque<Packet>,
    first_new: usize,
) -> Option<(DisconnectReasonCode, String)> {
    let (index, reason, message) =
        buffer
            .iter()
            .enumerate()
            .skip(first_new)
            .find_map(|(i, packet)| match filter(client_id, packet) {
                PacketVerdict::Allow => None,
                PacketVerdict::Refuse { reason, message } => Some((i, reason, message)),
            })?;
    buffer.truncate(index);
    Some((reason, message))
}

/// Read MQTT connect packet from network and verify it.
/// authentication and checks are done here.
pub async fn mqtt_connect<P>(
    config: Arc<ConnectionSettings>,
    network: &mut Network<P>,
) -> Result<Packet, Error>
where
    P: Protocol,
{
    // Wait for MQTT connect packet and error out if it's not received in time to prevent
    // DOS attacks by filling total connections that the server can handle with idle open
    // connections which results in server rejecting new connections
    let connection_timeout_ms = config.connection_timeout_ms.into();
    let packet = time::timeout(Duration::from_millis(connection_timeout_ms), async {
        let packet = network.read().await?;
        Ok::<_, network::Error>(packet)
    })
    .await??;

    let (connect, _props, login) = match packet {
        Packet::Connect(ref connect, ref props, _, _, ref login) => (connect, props, login),
        packet => return Err(Error::NotConnectPacket(packet)),
    };

    Span::current().record("client_id", &connect.client_id);

    handle_auth(config.clone(), login.as_ref(), &connect.client_id).await?;

    // aemos: the router publishes a Will itself when the link ends, past the packet filter, so
    // the Will is put to the filter here as the PUBLISH it would become; a refused one refuses
    // the connection (CONNACK not authorized).
    if let (Some(filter), Packet::Connect(_, _, Some(will), _, _)) = (&config.packet_filter, &packet) {
        let probe = Packet::Publish(
            Publish {
                dup: false,
                qos: will.qos,
                pkid: 0,
                retain: will.retain,
                topic: will.topic.clone(),
                payload: will.message.clone(),
            },
            None,
        );
        if let PacketVerdict::Refuse { message, .. } = filter(&connect.client_id, &probe) {
            let ack = ConnAck {
                session_present: false,
                code: ConnectReturnCode::NotAuthorized,
            };
            network.write(Packet::ConnAck(ack, None)).await?;
            return Err(Error::Refused(format!("will message: {message}")));
        }
    }

    // aemos: upstream refuses keep_alive == 0 here (Error::ZeroKeepAlive). MQTT 3.1.1 and 5
    // (§3.1.2.10) allow it: it turns keep-alive off, see `Network::set_keepalive`.

    let empty_client_id = connect.client_id.is_empty();
    let clean_session = connect.clean_session;

    if empty_client_id && !clean_session {
        let ack = ConnAck {
            session_present: false,
            code: ConnectReturnCode::ClientIdentifierNotValid,
        };

        let packet = Packet::ConnAck(ack, None);
        network.write(packet).await?;

        return Err(Error::InvalidClientId);
    }

    // Ok((connect, props, lastwill, lastwill_props))
    Ok(packet)
}

async fn handle_auth(
    config: Arc<ConnectionSettings>,
    login: Option<&Login>,
    client_id: &str,
) -> Result<(), Error> {
    if config.auth.is_none() && config.external_auth.is_none() {
        return Ok(());
    }

    // if authentication is configured and connect packet doesn't have login details
    // return an error
    let Some(login) = login else {
        return Err(Error::InvalidAuth);
    };

    let username = &login.username;
    let password = &login.password;

    if let Some(auth) = &config.external_auth {
        if !auth(
            client_id.to_owned(),
            username.to_owned(),
            password.to_owned(),
        )
        .await
        {
            return Err(Error::InvalidAuth);
        }

        return Ok(());
    }

    if let Some(pairs) = &config.auth {
        if let Some(stored_password) = pairs.get(username) {
            if stored_password.as_bytes().ct_eq(password.as_bytes()).into() {
                return Ok(());
            }
        }

        return Err(Error::InvalidAuth);
    }

    Err(Error::InvalidAuth)
}

#[cfg(test)]
mod tests {
    use std::{collections::HashMap, sync::Arc};

    use crate::{protocol::Login, ConnectionSettings};

    use super::handle_auth;

    fn config() -> ConnectionSettings {
        ConnectionSettings {
            connection_timeout_ms: 0,
            max_payload_size: 0,
            max_inflight_count: 0,
            auth: None,
            external_auth: None,
            dynamic_filters: false,
            packet_filter: None, // aemos
            session_check: None, // aemos
            read_pause: None,    // aemos
        }
    }

    fn login() -> Login {
        Login {
            username: "u".to_owned(),
            password: "p".to_owned(),
        }
    }

    #[tokio::test]
    async fn no_login_no_auth() {
        let cfg = Arc::new(config());
        let r = handle_auth(cfg, None, "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn some_login_no_auth() {
        let cfg = Arc::new(config());
        let login = login();
        let r = handle_auth(cfg, Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_matches_static_auth() {
        let login = login();
        let mut map = HashMap::<String, String>::new();
        map.insert(login.username.clone(), login.password.clone());

        let mut cfg = config();
        cfg.auth = Some(map);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_fails_static_no_external() {
        let login = login();
        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let mut cfg = config();
        cfg.auth = Some(map);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn login_fails_static_matches_external() {
        let login = login();

        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let dynamic = |_: String, _: String, _: String| async { true };

        let mut cfg = config();
        cfg.auth = Some(map);
        cfg.set_auth_handler(dynamic);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_ok());
    }

    #[tokio::test]
    async fn login_fails_static_fails_external() {
        let login = login();

        let mut map = HashMap::<String, String>::new();
        map.insert("wrong".to_owned(), "wrong".to_owned());

        let dynamic = |_: String, _: String, _: String| async { false };

        let mut cfg = config();
        cfg.auth = Some(map);
        cfg.set_auth_handler(dynamic);

        let r = handle_auth(Arc::new(cfg), Some(&login), "").await;
        assert!(r.is_err());
    }

    #[tokio::test]
    async fn external_auth_clousre_or_fnptr_type_check_or_fail_compile() {
        let closure = |_: String, _: String, _: String| async { false };
        async fn fnptr(_: String, _: String, _: String) -> bool {
            true
        }

        let mut cfg = config();
        cfg.set_auth_handler(closure);
        cfg.set_auth_handler(fnptr);
    }
}
