//! Sessions that outlive a request end with their credential: a device token rotated while a
//! Socket.IO socket, an MQTT subscriber that sends nothing more (keep alive 0) and a CoAP
//! observation are open with it. None of them gets the next notification; a viewer's socket
//! and observation, opened beside them, do.

use std::time::Duration;

use coap::request::{Method, RequestBuilder};
use rumqttc::{Event, Packet, QoS};
use serde_json::{json, Value};
use tokio::sync::mpsc::{unbounded_channel, UnboundedReceiver};

use super::access::user_jwt;
use super::edge::{hot_chain, SocketIoListener};
use super::secure_edge::{connect, outcome, start, Secure, SECRET, WAIT};

/// Observes the device's notifications with `?token=credential`; what arrives, in order.
async fn observe(
    s: &Secure,
    device: &str,
    credential: &str,
) -> (
    coap::UdpCoAPClient,
    tokio::sync::oneshot::Sender<coap::client::ObserveMessage>,
    UnboundedReceiver<Value>,
) {
    let client = coap::UdpCoAPClient::new_udp(s.server.coap_addr.as_str())
        .await
        .unwrap();
    let path = format!("/devices/{device}/notifications");
    let request = RequestBuilder::new(&path, Method::Get)
        .queries(Some(format!("token={credential}").into_bytes()))
        .build();
    let (tx, rx) = unbounded_channel();
    let stop = client
        .observe_with(request, move |message| {
            if let Ok(v) = serde_json::from_slice::<Value>(&message.payload) {
                if v.get("seq").is_some() {
                    let _ = tx.send(v);
                }
            }
        })
        .await
        .unwrap();
    (client, stop, rx)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn live_sessions_end_when_the_device_token_is_rotated() {
    let s = start(&[]).await;
    let token = s.device("dev-r", &[]).await;
    let viewer = user_jwt(SECRET, "viewer");
    let r = s
        .http
        .post(format!("{}/api/v1/rulechains", s.https))
        .bearer_auth(&s.admin)
        .json(&hot_chain("dev-r"))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 201);

    let sio = |credential: &str| {
        let listener = SocketIoListener::start_with(
            &s.https,
            "dev-r",
            &["--token", credential],
            Some(&s.cert_path),
        );
        assert_eq!(
            listener.next("subscribed")["rooms"],
            json!(["device-uuid-dev-r"])
        );
        listener
    };
    let device_socket = sio(&token);
    let viewer_socket = sio(&viewer);
    let (_c1, _stop1, mut device_observation) = observe(&s, "dev-r", &token).await;
    let (_c2, _stop2, mut viewer_observation) = observe(&s, "dev-r", &viewer).await;
    let mut quiet = s.mqtt_options("dev-r", Some(("dev-r", &token)));
    quiet.set_keep_alive(Duration::ZERO);
    let (mqtt, mut eventloop) = connect(quiet).await.expect("the device connects");
    mqtt.subscribe("aemos/devices/dev-r/notifications", QoS::AtLeastOnce)
        .await
        .unwrap();
    assert_eq!(outcome(&mut eventloop).await, Ok("suback"));
    let (mqtt_tx, mut mqtt_rx) = unbounded_channel::<Result<String, String>>();
    tokio::spawn(async move {
        loop {
            match eventloop.poll().await {
                Ok(Event::Incoming(Packet::Publish(p))) => {
                    let _ = mqtt_tx.send(Ok(p.topic));
                }
                Ok(_) => {}
                Err(e) => {
                    let _ = mqtt_tx.send(Err(e.to_string()));
                    return;
                }
            }
        }
    });

    s.rotate("dev-r").await;
    assert_eq!(
        device_socket.next("disconnect"),
        "io server disconnect",
        "the socket of the rotated token is closed by the server"
    );

    // The chain fires: the viewer hears it, the rotated token's sessions do not.
    let r = s
        .http
        .post(format!("{}/api/v1/write", s.https))
        .bearer_auth(&s.admin)
        .json(&json!({"readings": [{"sensor": "dev-r", "variable": "temperature", "value": 30}]}))
        .send()
        .await
        .unwrap();
    assert_eq!(r.status(), 200, "{}", r.text().await.unwrap());
    assert_eq!(
        viewer_socket.next("device-state-change")["metadata"]["newValue"],
        "hot"
    );
    // The device's presence (online at its reading) is notified too.
    let heard = loop {
        let n = tokio::time::timeout(WAIT, viewer_observation.recv())
            .await
            .expect("the viewer's observation is notified")
            .unwrap();
        if n["type"] == "device-state-change" {
            break n;
        }
    };
    assert_eq!(heard["metadata"]["newValue"], "hot");
    match tokio::time::timeout(WAIT, mqtt_rx.recv()).await {
        Ok(Some(Err(_closed))) => {}
        other => panic!("the rotated MQTT session was not closed: {other:?}"),
    }
    // The observations were notified together: the device's would have arrived by now.
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert!(
        device_observation.try_recv().is_err(),
        "the rotated token's observation was notified"
    );
}
