//! What the CoAP server reads out of a request and writes into its answer, apart from the
//! socket and the state: the route a method and path pick, the query's arguments, the encoded
//! response. The fuzz harness ([`crate::fuzzing::coap_message`]) runs the same functions.

use std::net::SocketAddr;

use bytes::Bytes;
use coap_lite::{CoapRequest, ContentFormat, Packet, RequestType, ResponseType};
use serde_json::json;
use tracing::warn;

/// Seconds a client should wait before it retries a request answered `5.03`, as HTTP's
/// `Retry-After: 1` (RFC 7252 §5.9.3.4: the Max-Age option of a 5.03 says when to retry).
const RETRY_AFTER_SECS: u8 = 1;

/// Where a request goes.
#[derive(Debug, PartialEq)]
pub(crate) enum Route {
    /// `POST /telemetry[/{device}]`.
    Telemetry(Option<String>),
    /// `GET /devices/{device}/notifications`.
    Notifications(String),
    /// Answered as it is: no such resource, or not with that method.
    Refused(ResponseType, Bytes),
}

pub(crate) fn route(request: &CoapRequest<SocketAddr>) -> Route {
    let path = request.get_path();
    let segments: Vec<&str> = path.split('/').filter(|s| !s.is_empty()).collect();
    match (*request.get_method(), segments.as_slice()) {
        (RequestType::Post, ["telemetry", device]) => Route::Telemetry(Some((*device).to_owned())),
        (RequestType::Post, ["telemetry"]) => Route::Telemetry(None),
        (RequestType::Get, ["devices", device, "notifications"]) => {
            Route::Notifications((*device).to_owned())
        }
        (_, ["telemetry", ..]) | (_, ["devices", _, "notifications"]) => Route::Refused(
            ResponseType::MethodNotAllowed,
            Bytes::from_static(b"{\"error\":\"method not allowed\"}"),
        ),
        _ => Route::Refused(
            ResponseType::NotFound,
            Bytes::from(json!({"error": format!("no resource {path:?}: use /telemetry/{{device}} or /devices/{{device}}/notifications")}).to_string()),
        ),
    }
}

/// The value of `name=` among the request's Uri-Query options (one option per argument, as
/// RFC 7252 §6.5 has it, or several joined by `&`, as some clients send them).
pub(crate) fn query_param(request: &CoapRequest<SocketAddr>, name: &str) -> Option<String> {
    let options = request
        .message
        .get_option(coap_lite::CoapOption::UriQuery)?;
    options.iter().find_map(|option| {
        let text = std::str::from_utf8(option).ok()?;
        text.split('&').find_map(|arg| {
            let (key, value) = arg.split_once('=')?;
            (key == name).then(|| value.to_owned())
        })
    })
}

pub(crate) fn retry_after(message: &mut Packet) {
    message.set_option(
        coap_lite::CoapOption::MaxAge,
        std::collections::LinkedList::from([vec![RETRY_AFTER_SECS]]),
    );
}

pub(crate) fn error_body(reason: impl std::fmt::Display) -> Bytes {
    Bytes::from(json!({ "error": reason.to_string() }).to_string())
}

/// The request's response with `status` and the JSON `body`, encoded; `None` when the request
/// takes no response (not a request) or it cannot be encoded.
pub(crate) fn encode_answer(
    request: &mut CoapRequest<SocketAddr>,
    status: ResponseType,
    body: Bytes,
) -> Option<Vec<u8>> {
    let response = request.response.as_mut()?;
    response.set_status(status);
    if status == ResponseType::ServiceUnavailable {
        retry_after(&mut response.message);
    }
    response
        .message
        .set_content_format(ContentFormat::ApplicationJSON);
    response.message.payload = body.to_vec();
    match response.message.to_bytes() {
        Ok(b) => Some(b),
        Err(e) => {
            warn!(error = ?e, "coap: encoding a response");
            None
        }
    }
}
