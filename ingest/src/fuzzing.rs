//! The fuzz harness of the decoders, here so that the fuzz target (`fuzz/`) and the suite's
//! replay of its corpus (`tests/never_panic.rs`) run the same code.

use std::time::Duration;

use aemos_storage::schema::ReadingsBuilder;

use crate::{
    decode, decode_device_payload, stage_device_payload, DecodeArgs, Decoded, Format, Precision,
    StagedReadings, TimeBounds,
};

const NOW_MS: i64 = 1_768_905_000_000;

/// Decodes `data[1..]` with the decoder `data[0]` picks (JSON, NDJSON, line protocol in each
/// precision, Arrow IPC, a device payload; time bounds on when its high bit is set) and checks
/// what it answers. Panics only on a bug.
pub fn decode_selected(data: &[u8]) {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let mut args = DecodeArgs::new(NOW_MS);
    if selector & 0x80 != 0 {
        args = args.with_time_bounds(TimeBounds {
            retention: Duration::from_secs(86_400),
            max_future: Duration::from_secs(3_600),
        });
    }
    let format = match selector % 9 {
        0 => Format::Json,
        1 => Format::Ndjson,
        2 => Format::LineProtocol(Precision::Nanoseconds),
        3 => Format::LineProtocol(Precision::Microseconds),
        4 => Format::LineProtocol(Precision::Milliseconds),
        5 => Format::LineProtocol(Precision::Seconds),
        6 => Format::LineProtocol(Precision::Auto),
        7 => Format::ArrowIpc,
        _ => {
            let direct = decode_device_payload("dev-1", body, &args);
            if let Ok(d) = &direct {
                check(d);
            }
            same_staged(direct, body, &args);
            return;
        }
    };
    if let Ok(d) = decode(format, body, &args) {
        check(&d);
    }
}

fn check(d: &Decoded) {
    assert!(
        d.rejected.len() <= d.rejected_count,
        "more listed than counted"
    );
    assert!(
        d.rejected.len() <= crate::MAX_LISTED_REJECTIONS,
        "more listed than the limit"
    );
    assert_eq!(d.batch.schema(), aemos_storage::schema::readings_schema());
}

/// Staged (the MQTT links' path) the payload comes to what `direct` decoded: the same error,
/// rejections and readings.
fn same_staged(direct: crate::Result<Decoded>, body: &[u8], args: &DecodeArgs) {
    let mut staged = StagedReadings::default();
    match (
        direct,
        stage_device_payload("dev-1", body, args, &mut staged),
    ) {
        (Err(a), Err(b)) => assert_eq!(a, b, "staged and direct errors differ"),
        (Ok(a), Ok(b)) => {
            assert_eq!(
                a.rejected, b.rejected,
                "staged and direct rejections differ"
            );
            assert_eq!(
                a.accepted(),
                b.accepted(),
                "staged and direct counts differ"
            );
            let mut builder = ReadingsBuilder::with_capacity(0);
            staged.append_to(&mut builder);
            assert_eq!(
                a.batch,
                builder.finish(),
                "staged and direct readings differ"
            );
        }
        (a, b) => panic!("staged and direct disagree: {a:?} / {b:?}"),
    }
}

/// Reads MQTT packets out of `data[1..]` with the embedded broker's codec (3.1.1 when `data[0]`
/// is even, 5 otherwise), as a connection's reader does until its first error, and writes each
/// packet read back out. Panics only on a bug.
pub fn mqtt_packets(data: &[u8]) {
    use rumqttd::protocol::{v4::V4, v5::V5, Protocol};
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    fn drain<P: Protocol>(mut codec: P, body: &[u8]) {
        let mut stream = bytes::BytesMut::from(body);
        let mut out = bytes::BytesMut::new();
        while let Ok(packet) = codec.read_mut(&mut stream, 64 * 1024) {
            let _ = codec.write(packet, &mut out);
        }
    }
    if selector % 2 == 0 {
        drain(V4, body);
    } else {
        drain(V5, body);
    }
}

/// Takes `data` as one CoAP datagram the way the CoAP server does: parsed, routed, its query
/// read, a telemetry payload decoded and checked, the answer encoded; a message that parses is
/// also written back out. Panics only on a bug.
pub fn coap_message(data: &[u8]) {
    use crate::coap::message::{encode_answer, error_body, query_param, route, Route};
    use coap_lite::{CoapRequest, Packet, ResponseType};
    let Ok(packet) = Packet::from_bytes(data) else {
        return;
    };
    let _ = packet.to_bytes();
    let src: std::net::SocketAddr = ([192, 0, 2, 1], 5683).into();
    let mut request = CoapRequest::from_packet(packet, src);
    let token = query_param(&request, "token");
    let (status, body) = match route(&request) {
        Route::Telemetry(device) => {
            let device = device.unwrap_or_else(|| token.unwrap_or_default());
            match crate::validate::check_device(&device) {
                Err(reason) => (ResponseType::BadRequest, error_body(reason)),
                Ok(()) => {
                    let args = DecodeArgs::new(NOW_MS);
                    match decode_device_payload(&device, &request.message.payload, &args) {
                        Ok(d) => {
                            check(&d);
                            (ResponseType::Changed, error_body(d.accepted()))
                        }
                        Err(e) => (ResponseType::BadRequest, error_body(e)),
                    }
                }
            }
        }
        Route::Notifications(device) => {
            let _ = request.get_observe_flag();
            match crate::validate::check_device(&device) {
                Err(reason) => (ResponseType::BadRequest, error_body(reason)),
                Ok(()) => (ResponseType::Content, error_body(device)),
            }
        }
        Route::Refused(status, body) => (status, body),
    };
    if let Some(bytes) = encode_answer(&mut request, status, body) {
        assert!(
            Packet::from_bytes(&bytes).is_ok(),
            "an answer that does not parse"
        );
    }
}
