//! HTTP: one policy table says what each route needs, and one middleware applies it to every
//! matched route before its handler runs (liveness and readiness are open).
//!
//! The credential is `Authorization: Bearer <token>` (or `Token <token>`, as InfluxDB clients
//! send it, or `Basic` with the token as the password, as InfluxDB 1 clients send a username
//! and password), or `X-Device-Token`; on the InfluxDB 1 routes (`/write`, `/query`) also the
//! `p` query parameter. The handler finds the [`Principal`] in the request's extensions.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;

use axum::extract::{ConnectInfo, MatchedPath, Request, State};
use axum::http::{header, HeaderMap, Method};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};

use super::{Access, Auth, AuthError, Principal};
use crate::http::ApiError;
use crate::metrics::Metrics;
use crate::tls::ClientAddr;

/// What a route needs; `None`: open to anyone.
pub fn policy<'a>(method: &Method, template: &str, path: &'a str) -> Option<Access<'a>> {
    let id = || segment_at(template, path, "{id}").unwrap_or_default();
    let read = method == Method::GET || method == Method::HEAD;
    Some(match template {
        "/api/v1/health/liveness" | "/api/v1/health/readiness" => return None,
        "/api/v1/write" | "/api/v1/datastreams/token" => Access::WriteReadings,
        // InfluxDB's write routes, and its `/query` (which answers `CREATE DATABASE` only).
        "/write" | "/api/v2/write" | "/api/v3/write_lp" | "/query" => Access::WriteReadings,
        "/ping" => return None,
        "/api/v1/query" => Access::Query,
        "/api/v1/devices" if read => Access::ReadAll,
        "/api/v1/devices/{id}" if read => Access::ReadDevice(id()),
        "/api/v1/devices/{id}/statistics"
        | "/api/v1/devices/{id}/notifications"
        | "/api/v1/devices/{id}/latest"
        | "/api/v1/devices/{id}/state"
        | "/api/v1/devices/{id}/data" => Access::ReadDevice(id()),
        "/api/v1/devices/{id}/commands" | "/api/v1/devices/{id}/commands/{commandId}" if read => {
            Access::ReadDevice(id())
        }
        "/api/v1/devices/{id}/preclean" if read => Access::ReadDevice(id()),
        "/api/v1/devices/{id}/commands"
        | "/api/v1/devices/{id}/preclean"
        | "/api/v1/devices/{id}/preclean/cancel" => Access::Operate,
        "/api/v1/devices" | "/api/v1/devices/{id}" | "/api/v1/devices/{id}/token" => {
            Access::Administer
        }
        "/api/v1/rulechains" | "/api/v1/rulechains/{id}" if read => Access::ReadAll,
        "/api/v1/schedules" | "/api/v1/schedules/{id}" if read => Access::ReadAll,
        "/api/v1/schedules" | "/api/v1/schedules/{id}" => Access::Operate,
        "/api/v1/rulechains" | "/api/v1/rulechains/{id}" => Access::Operate,
        "/api/v1/health"
        | "/api/v1/metrics/prometheus"
        | "/api/v1/metrics/queue"
        | "/api/v1/metrics/queue/summary" => Access::ReadAll,
        "/api/v1/metrics/backpressure/reset" => Access::Administer,
        // A route nobody listed here needs the most, so that a new route is never open.
        _ => Access::Administer,
    })
}

/// The path's segment where the template has `name`.
fn segment_at<'a>(template: &str, path: &'a str, name: &str) -> Option<&'a str> {
    let at = template.split('/').position(|s| s == name)?;
    path.split('/').nth(at)
}

/// The presented credential, if any; `Err` for a malformed `Authorization` header.
pub fn credential(headers: &HeaderMap) -> Result<Option<Cow<'_, str>>, AuthError> {
    if let Some(value) = headers.get(header::AUTHORIZATION) {
        let text = value.to_str().map_err(|_| {
            AuthError::Invalid("`Authorization` header is not visible ASCII".into())
        })?;
        let (scheme, token) = text.split_once(' ').ok_or_else(|| {
            AuthError::Invalid("`Authorization` header must be `Bearer <token>`".into())
        })?;
        let token = if scheme.eq_ignore_ascii_case("basic") {
            Cow::Owned(basic_password(token.trim())?)
        } else if scheme.eq_ignore_ascii_case("bearer") || scheme.eq_ignore_ascii_case("token") {
            Cow::Borrowed(token.trim())
        } else {
            return Err(AuthError::Invalid(format!(
                "`Authorization` scheme {scheme:?} is not supported; use `Bearer <token>`"
            )));
        };
        if token.is_empty() {
            return Err(AuthError::Invalid(
                "`Authorization` header has no token".into(),
            ));
        }
        return Ok(Some(token));
    }
    match headers.get("x-device-token") {
        Some(value) => value
            .to_str()
            .map(|t| Some(Cow::Borrowed(t.trim())))
            .map_err(|_| AuthError::Invalid("`X-Device-Token` is not visible ASCII".into())),
        None => Ok(None),
    }
}

/// The password of `Basic base64(user:password)`: the token (the user name is not checked).
fn basic_password(encoded: &str) -> Result<String, AuthError> {
    use base64::Engine;
    let invalid =
        || AuthError::Invalid("`Authorization: Basic` is not base64 of `user:password`".into());
    let bytes = base64::engine::general_purpose::STANDARD
        .decode(encoded)
        .map_err(|_| invalid())?;
    let text = String::from_utf8(bytes).map_err(|_| invalid())?;
    let (_, password) = text.split_once(':').ok_or_else(invalid)?;
    Ok(password.to_string())
}

/// The credential of an InfluxDB 1 request without an `Authorization` header: its `p` query
/// parameter.
fn query_password(template: &str, query: Option<&str>) -> Option<String> {
    if !matches!(template, "/write" | "/query") {
        return None;
    }
    url::form_urlencoded::parse(query?.as_bytes())
        .find(|(k, _)| k == "p")
        .map(|(_, v)| v.into_owned())
}

/// The peer's address, over plain TCP or TLS (absent in `oneshot` tests).
fn client_addr(request: &Request) -> Option<SocketAddr> {
    let extensions = request.extensions();
    extensions
        .get::<ConnectInfo<SocketAddr>>()
        .map(|c| c.0)
        .or_else(|| extensions.get::<ConnectInfo<ClientAddr>>().map(|c| c.0 .0))
}

/// What the middleware needs.
#[derive(Debug, Clone)]
pub struct HttpAuth {
    pub auth: Arc<Auth>,
    pub metrics: Metrics,
}

fn reason_label(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing => "missing",
        AuthError::Invalid(_) => "invalid",
        AuthError::Forbidden(_) => "forbidden",
        AuthError::RateLimited { .. } => "rate_limited",
    }
}

/// The middleware: authenticate, check the route's policy and the rate limits, then run the
/// handler with the principal in the request's extensions.
pub async fn require(State(state): State<HttpAuth>, mut request: Request, next: Next) -> Response {
    // Reference-counted copies (no allocation), so the request can move on to the handler.
    let template = request.extensions().get::<MatchedPath>().cloned();
    let uri = request.uri().clone();
    let template = template.as_ref().map_or("", MatchedPath::as_str);
    let Some(access) = policy(request.method(), template, uri.path()) else {
        return next.run(request).await;
    };
    let outcome = credential(request.headers()).and_then(|c| {
        let from_query = match c {
            Some(_) => None,
            None => query_password(template, uri.query()),
        };
        let principal = state
            .auth
            .authorize(c.as_deref().or(from_query.as_deref()), &access)?;
        // No key is built when devices and users are not limited.
        let key = match principal {
            Principal::Anonymous => None,
            _ if !state.auth.limits.limits_keys() => Some(None),
            _ => Some(principal.limit_key()),
        };
        let limited = match key {
            Some(Some(key)) => state.auth.limits.check_key(key, "http"),
            Some(None) => Ok(()),
            None => match client_addr(&request) {
                Some(addr) => state.auth.limits.check_addr(addr.ip(), "http"),
                None => Ok(()),
            },
        };
        limited.map_err(|wait| AuthError::RateLimited {
            retry_after_ms: wait.as_millis() as u64,
        })?;
        Ok(principal)
    });
    match outcome {
        Ok(principal) => {
            request.extensions_mut().insert(principal);
            next.run(request).await
        }
        Err(e) => {
            state
                .metrics
                .auth_refusals
                .with_label_values(&["http", reason_label(&e)])
                .inc();
            // Refused credentials count against their address, so guessing (or making the
            // server verify signatures) is limited too.
            if matches!(e, AuthError::Missing | AuthError::Invalid(_)) {
                if let Some(Err(wait)) =
                    client_addr(&request).map(|a| state.auth.limits.check_addr(a.ip(), "http"))
                {
                    return ApiError::from(AuthError::RateLimited {
                        retry_after_ms: wait.as_millis() as u64,
                    })
                    .into_response();
                }
            }
            ApiError::from(e).into_response()
        }
    }
}
