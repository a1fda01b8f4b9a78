//! Many idle MQTT devices (`aemos-loadgen hold --connections N`): `N` connections, each its own client id
//! and keep-alive, speaking MQTT 3.1.1 directly (a CONNECT, then a PINGREQ per keep-alive
//! period), so that the client side costs one socket and one small task per device. The
//! connects come as a storm (`concurrency` in flight at once); what the server holds is read from
//! its `/proc/{pid}/status` before and after. With `subscribe`, each device also subscribes
//! to its `aemos/devices/{id}/commands` topic as a real device does (the broker then holds a
//! filter per device, which is what a disconnection has to be cleaned from).
//!
//! Loopback has about 28,000 ephemeral ports per destination, so device `i` connects to
//! `127.0.0.{1 + i / 25,000}` (the broker listening on `0.0.0.0` past 25,000 devices).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpSocket, TcpStream};
use tokio::sync::{watch, Semaphore};

const PER_DESTINATION: usize = 25_000;

#[derive(Debug, Clone)]
pub struct HoldArgs {
    pub broker: SocketAddr,
    pub connections: usize,
    /// Connects in flight at once.
    pub concurrency: usize,
    pub keep_alive_secs: u16,
    /// Subscribe each device to its `commands` topic (QoS 1) after its CONNACK.
    pub subscribe: bool,
    /// How long to hold them once all are connected.
    pub hold: Duration,
    /// The server's process, for its resident memory.
    pub server_pid: Option<u32>,
}

/// What holding the connections showed.
#[derive(Debug)]
pub struct HoldReport {
    pub connected: u64,
    pub failed: u64,
    pub connect_seconds: f64,
    /// Resident memory of the server (`VmRSS`, KiB) before the first connect and with all held.
    pub rss_before_kib: Option<u64>,
    pub rss_after_kib: Option<u64>,
    /// Connections still answering PINGREQ at the end.
    pub alive_at_end: u64,
}

/// The server's `VmRSS` in KiB.
pub fn rss_kib(pid: u32) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    let line = status.lines().find(|l| l.starts_with("VmRSS:"))?;
    line.split_whitespace().nth(1)?.parse().ok()
}

/// An MQTT 3.1.1 CONNECT: clean session, no credentials.
fn connect_packet(client_id: &str, keep_alive: u16) -> Vec<u8> {
    let mut variable = vec![0, 4, b'M', b'Q', b'T', b'T', 4, 0x02];
    variable.extend_from_slice(&keep_alive.to_be_bytes());
    variable.extend_from_slice(&(client_id.len() as u16).to_be_bytes());
    variable.extend_from_slice(client_id.as_bytes());
    let mut packet = vec![0x10];
    let mut len = variable.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        packet.push(byte);
        if len == 0 {
            break;
        }
    }
    packet.extend_from_slice(&variable);
    packet
}

/// An MQTT 3.1.1 SUBSCRIBE of one filter at QoS 1, packet id 1.
fn subscribe_packet(filter: &str) -> Vec<u8> {
    let remaining = 2 + 2 + filter.len() + 1;
    assert!(remaining < 128, "a short filter");
    let mut packet = vec![0x82, remaining as u8, 0, 1];
    packet.extend_from_slice(&(filter.len() as u16).to_be_bytes());
    packet.extend_from_slice(filter.as_bytes());
    packet.push(1);
    packet
}

/// Where device `i` connects: a broker on loopback (listening on 127.0.0.1 for the first
/// 25,000, on `0.0.0.0` for more) is reached at `127.0.0.{1 + i / 25,000}`, so each
/// destination has its own ephemeral ports (binding a source address instead makes the
/// kernel's port search for `bind(0)` slow down as the ports fill).
fn destination(i: usize, broker: SocketAddr) -> SocketAddr {
    match broker {
        SocketAddr::V4(b) if b.ip().is_loopback() || b.ip().is_unspecified() => SocketAddr::from((
            Ipv4Addr::new(127, 0, 0, 1 + (i / PER_DESTINATION) as u8),
            b.port(),
        )),
        other => other,
    }
}

async fn connect(i: usize, args: &HoldArgs) -> anyhow::Result<TcpStream> {
    let socket = TcpSocket::new_v4()?;
    let mut stream = socket.connect(destination(i, args.broker)).await?;
    let id = format!("idle-{i:07}");
    stream
        .write_all(&connect_packet(&id, args.keep_alive_secs))
        .await?;
    let mut connack = [0u8; 4];
    stream.read_exact(&mut connack).await?;
    anyhow::ensure!(
        connack[0] == 0x20 && connack[3] == 0,
        "CONNACK {connack:02x?}"
    );
    if args.subscribe {
        stream
            .write_all(&subscribe_packet(&format!("aemos/devices/{id}/commands")))
            .await?;
        let mut suback = [0u8; 5];
        stream.read_exact(&mut suback).await?;
        anyhow::ensure!(
            suback == [0x90, 0x03, 0x00, 0x01, 0x01],
            "SUBACK {suback:02x?}"
        );
    }
    Ok(stream)
}

/// One PINGREQ and its PINGRESP.
async fn ping(stream: &mut TcpStream) -> anyhow::Result<()> {
    stream.write_all(&[0xC0, 0x00]).await?;
    let mut pong = [0u8; 2];
    stream.read_exact(&mut pong).await?;
    anyhow::ensure!(pong == [0xD0, 0x00], "PINGRESP {pong:02x?}");
    Ok(())
}

pub async fn hold(args: HoldArgs) -> anyhow::Result<HoldReport> {
    anyhow::ensure!(
        args.connections <= PER_DESTINATION * 250,
        "at most {} connections",
        PER_DESTINATION * 250
    );
    let rss_before_kib = args.server_pid.and_then(rss_kib);
    let permits = Arc::new(Semaphore::new(args.concurrency.max(1)));
    let (connected, failed, alive) = (
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
        Arc::new(AtomicU64::new(0)),
    );
    let (stop_tx, stop) = watch::channel(false);
    let started = Instant::now();
    let mut tasks = Vec::with_capacity(args.connections);
    for i in 0..args.connections {
        let permit = Arc::clone(&permits).acquire_owned().await?;
        let (args, connected, failed, alive) = (
            args.clone(),
            Arc::clone(&connected),
            Arc::clone(&failed),
            Arc::clone(&alive),
        );
        let mut stop = stop.clone();
        tasks.push(tokio::spawn(async move {
            let mut stream = match connect(i, &args).await {
                Ok(s) => s,
                Err(e) => {
                    if failed.fetch_add(1, Ordering::Relaxed) < 5 {
                        eprintln!("device {i}: {e}");
                    }
                    return;
                }
            };
            drop(permit);
            connected.fetch_add(1, Ordering::Relaxed);
            let period = Duration::from_secs(u64::from(args.keep_alive_secs.max(1))) * 4 / 5;
            loop {
                tokio::select! {
                    _ = tokio::time::sleep(period) => {
                        if ping(&mut stream).await.is_err() {
                            return;
                        }
                    }
                    _ = stop.changed() => break,
                }
            }
            if ping(&mut stream).await.is_ok() {
                alive.fetch_add(1, Ordering::Relaxed);
            }
        }));
    }
    // Every connect has finished once all permits are back.
    let _all = permits.acquire_many(args.concurrency.max(1) as u32).await?;
    let connect_seconds = started.elapsed().as_secs_f64();
    tokio::time::sleep(args.hold).await;
    let rss_after_kib = args.server_pid.and_then(rss_kib);
    let _ = stop_tx.send(true);
    for t in tasks {
        let _ = t.await;
    }
    Ok(HoldReport {
        connected: connected.load(Ordering::Relaxed),
        failed: failed.load(Ordering::Relaxed),
        connect_seconds,
        rss_before_kib,
        rss_after_kib,
        alive_at_end: alive.load(Ordering::Relaxed),
    })
}

#[cfg(test)]
mod tests {
    #[test]
    fn connect_packets_encode_their_remaining_length() {
        let p = super::connect_packet("idle-0000001", 60);
        assert_eq!(p[0], 0x10);
        assert_eq!(usize::from(p[1]), p.len() - 2);
        assert_eq!(&p[2..8], b"\x00\x04MQTT");
        assert_eq!(&p[10..12], &60u16.to_be_bytes());
        let s = super::subscribe_packet("aemos/devices/idle-0000001/commands");
        assert_eq!(usize::from(s[1]), s.len() - 2);
        assert_eq!(s.last(), Some(&1), "QoS 1");
    }
}
