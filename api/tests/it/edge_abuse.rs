//! Abuse of the device edge leaves the server serving with flat memory: malformed MQTT
//! packets, oversized publishes, unknown topics, a subscriber that never reads, 1,000
//! connect/disconnect cycles, and garbage datagrams on the CoAP port.

use std::io::{Read, Write};
use std::net::{TcpStream, UdpSocket};
use std::time::Duration;

use rumqttc::QoS;
use serde_json::json;

use crate::edge::{create_chain, hot_chain, mqtt_client, next_on, SocketIoListener};
use crate::server::TestServer;

fn rss_kib(pid: u32) -> u64 {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap();
    status
        .lines()
        .find_map(|l| l.strip_prefix("VmRSS:"))
        .and_then(|v| v.split_whitespace().next())
        .and_then(|v| v.parse().ok())
        .unwrap()
}

/// An MQTT 3.1.1 string: length-prefixed.
fn mqtt_str(s: &str) -> Vec<u8> {
    let mut out = (s.len() as u16).to_be_bytes().to_vec();
    out.extend_from_slice(s.as_bytes());
    out
}

fn packet(kind: u8, body: Vec<u8>) -> Vec<u8> {
    let mut out = vec![kind];
    let mut len = body.len();
    loop {
        let mut byte = (len % 128) as u8;
        len /= 128;
        if len > 0 {
            byte |= 0x80;
        }
        out.push(byte);
        if len == 0 {
            break;
        }
    }
    out.extend(body);
    out
}

fn connect_packet(client_id: &str) -> Vec<u8> {
    let mut body = mqtt_str("MQTT");
    body.extend([4, 0x02, 0, 60]);
    body.extend(mqtt_str(client_id));
    packet(0x10, body)
}

fn subscribe_packet(filter: &str) -> Vec<u8> {
    let mut body = vec![0, 1];
    body.extend(mqtt_str(filter));
    body.push(1);
    packet(0x82, body)
}

/// Connects with a raw socket and reads the CONNACK.
fn raw_connect(addr: &str, client_id: &str) -> TcpStream {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    s.write_all(&connect_packet(client_id)).unwrap();
    let mut connack = [0u8; 4];
    s.read_exact(&mut connack).unwrap();
    assert_eq!(connack[0], 0x20, "CONNACK");
    s
}

/// A masked WebSocket text frame (client to server), payload under 126 bytes.
fn ws_text(payload: &str) -> Vec<u8> {
    let mask = [0x12u8, 0x34, 0x56, 0x78];
    let mut out = vec![0x81, 0x80 | payload.len() as u8];
    out.extend(mask);
    out.extend(payload.bytes().enumerate().map(|(i, b)| b ^ mask[i % 4]));
    out
}

/// One unmasked server text frame.
fn read_ws_text(s: &mut TcpStream) -> String {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).unwrap();
    let len = match head[1] & 0x7f {
        126 => {
            let mut l = [0u8; 2];
            s.read_exact(&mut l).unwrap();
            u16::from_be_bytes(l) as usize
        }
        127 => {
            let mut l = [0u8; 8];
            s.read_exact(&mut l).unwrap();
            u64::from_be_bytes(l) as usize
        }
        n => n as usize,
    };
    let mut payload = vec![0u8; len];
    s.read_exact(&mut payload).unwrap();
    String::from_utf8_lossy(&payload).into_owned()
}

/// A Socket.IO client over a raw WebSocket that subscribes to `device` and never reads again.
fn stalled_socketio(http_url: &str, device: &str) -> TcpStream {
    let addr = http_url.trim_start_matches("http://");
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /socket.io/?EIO=4&transport=websocket HTTP/1.1\r\nHost: {addr}\r\nUpgrade: websocket\r\n\
         Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\nSec-WebSocket-Version: 13\r\n\r\n"
    )
    .unwrap();
    let mut head = Vec::new();
    let mut byte = [0u8; 1];
    while !head.ends_with(b"\r\n\r\n") {
        s.read_exact(&mut byte).unwrap();
        head.push(byte[0]);
    }
    assert!(
        head.starts_with(b"HTTP/1.1 101"),
        "{}",
        String::from_utf8_lossy(&head)
    );
    s.write_all(&ws_text("40")).unwrap();
    // Wait for the namespace's CONNECT answer (`40{"sid":...}`), as a real client does.
    while !read_ws_text(&mut s).starts_with("40") {}
    s.write_all(&ws_text(&format!(
        r#"42["subscribe",{{"devices":["{device}"]}}]"#
    )))
    .unwrap();
    s
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn abuse_leaves_the_edge_serving_with_flat_memory() {
    let dir = tempfile::tempdir().unwrap();
    let server = TestServer::start(
        dir.path(),
        &["--workers", "2", "--mqtt-max-payload-bytes", "4096"],
        &[],
    );
    let http = reqwest::Client::new();
    create_chain(&http, &server, hot_chain("d-9")).await;
    let pid = server.child.id();

    // Subscribers that never read their sockets, on the device that will be flooded: one over
    // MQTT, one over Socket.IO; and a stock Socket.IO client that reads.
    let mut stalled = raw_connect(&server.mqtt_addr, "stalled");
    stalled
        .write_all(&subscribe_packet("aemos/devices/d-9/#"))
        .unwrap();
    let stalled_sio = stalled_socketio(&server.url, "d-9");
    let sio = SocketIoListener::start(&server, "d-9");
    sio.next("subscribed");
    let metric = |name: &'static str| {
        let (http, server) = (http.clone(), &server);
        async move {
            let text = server.metrics(&http).await;
            text.lines()
                .find_map(|l| l.strip_prefix(&format!("{name} ")).map(str::to_owned))
                .unwrap_or_else(|| panic!("no {name} in {text}"))
        }
    };
    for _ in 0..100 {
        if metric("aemos_socketio_subscriptions").await == "2" {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(
        metric("aemos_socketio_subscriptions").await,
        "2",
        "both sockets subscribed"
    );

    // Garbage where a CONNECT should be; a CONNECT with a bad protocol level; a packet with an
    // invalid remaining length. Each closes its own connection only.
    for junk in [
        b"GET / HTTP/1.1\r\n\r\n".to_vec(),
        packet(0x10, {
            let mut b = mqtt_str("MQTT");
            b.extend([9, 0x02, 0, 60]);
            b.extend(mqtt_str("bad-level"));
            b
        }),
        vec![0x30, 0xff, 0xff, 0xff, 0xff, 0x7f],
    ] {
        let mut s = TcpStream::connect(&server.mqtt_addr).unwrap();
        let _ = s.write_all(&junk);
        s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
        let mut buf = [0u8; 64];
        let _ = s.read(&mut buf);
    }
    // A publish after CONNECT with garbage in place of the next packet.
    let mut s = raw_connect(&server.mqtt_addr, "garbage-after-connect");
    let _ = s.write_all(&[0xf0, 0x00, 0x13, 0x37]);

    let (device, _) = mqtt_client(&server, "d-9").await;
    let (watcher, mut inbox) = mqtt_client(&server, "watcher-9").await;
    watcher
        .subscribe("aemos/devices/d-9/notifications", QoS::AtLeastOnce)
        .await
        .unwrap();
    watcher
        .subscribe("aemos/devices/d-9/errors", QoS::AtLeastOnce)
        .await
        .unwrap();
    // Unknown topics are routed by the broker and ignored by aemos.
    device
        .publish("somewhere/else", QoS::AtLeastOnce, false, "{}")
        .await
        .unwrap();
    device
        .publish("aemos/devices/d-9/unknown", QoS::AtLeastOnce, false, "x")
        .await
        .unwrap();
    // An oversized publish closes only that client's connection.
    let (big, _) = mqtt_client(&server, "big").await;
    big.publish(
        "aemos/devices/d-9/telemetry",
        QoS::AtLeastOnce,
        false,
        vec![b' '; 10_000],
    )
    .await
    .unwrap();

    // Garbage datagrams on the CoAP port.
    let udp = UdpSocket::bind("127.0.0.1:0").unwrap();
    for junk in [&b"\x00"[..], b"\xff\xff\xff\xff", b"hello coap"] {
        udp.send_to(junk, &server.coap_addr).unwrap();
    }

    // Flood the device's notifications while the stalled subscriber reads nothing: the
    // watcher still gets every state change.
    for i in 0..100 {
        let t = if i % 2 == 0 { 30 } else { 20 };
        device
            .publish(
                "aemos/devices/d-9/telemetry",
                QoS::AtLeastOnce,
                false,
                json!({"temperature": t}).to_string(),
            )
            .await
            .unwrap();
        let n = next_on(&mut inbox, "aemos/devices/d-9/notifications").await;
        assert_eq!(n["seq"], i + 1, "{n}");
        assert_eq!(sio.next("device-state-change")["seq"], i + 1);
    }

    // 1,000 connect/disconnect cycles, memory measured after a warm-up.
    let cycle = |n: usize, tag: &str| {
        for i in 0..n {
            let mut s = raw_connect(&server.mqtt_addr, &format!("{tag}-{i}"));
            s.write_all(&[0xe0, 0x00]).unwrap(); // DISCONNECT
        }
    };
    tokio::task::block_in_place(|| cycle(200, "warm"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let before = rss_kib(pid);
    tokio::task::block_in_place(|| cycle(1000, "cycle"));
    tokio::time::sleep(Duration::from_millis(500)).await;
    let after = rss_kib(pid);
    assert!(
        after < before + 16 * 1024,
        "RSS grew from {before} KiB to {after} KiB over 1,000 MQTT connect/disconnect cycles"
    );

    // Still serving: HTTP, MQTT, CoAP.
    let r = http
        .get(format!("{}/api/v1/health", server.url))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200);
    device
        .publish(
            "aemos/devices/d-9/telemetry",
            QoS::AtLeastOnce,
            false,
            r#"{"temperature": 31}"#,
        )
        .await
        .unwrap();
    let n = next_on(&mut inbox, "aemos/devices/d-9/notifications").await;
    assert_eq!(n["seq"], 101, "{n}");
    let r = coap::UdpCoAPClient::get_with_timeout(
        &format!("coap://{}/devices/d-9/notifications", server.coap_addr),
        Duration::from_secs(5),
    )
    .await
    .expect("coap still answers");
    let last: serde_json::Value = serde_json::from_slice(&r.message.payload).unwrap();
    assert_eq!(last["seq"], 101, "{last}");
    assert_eq!(metric("aemos_coap_malformed_total").await, "3");
    drop(stalled);
    drop(stalled_sio);
}
