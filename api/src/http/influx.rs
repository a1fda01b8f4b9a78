//! InfluxDB's write API, so its client libraries, its CLI and Telegraf write to aemos unmodified:
//! `POST /write` (1.x), `POST /api/v2/write` (2.x), `POST /api/v3/write_lp` (3.x), `GET|HEAD
//! /ping`, and `/query`, which answers the `CREATE DATABASE` Telegraf and `influx -import`
//! send and refuses other InfluxQL with a pointer to SQL.
//!
//! Every body is line protocol whatever its `Content-Type`, gzip when `Content-Encoding` says
//! so (decompressed within the body limit), decoded and made durable as `/api/v1/write` does.
//! As InfluxDB does, the valid lines of a body with bad ones are stored and the answer is `400`
//! naming the bad lines (v3 with `accept_partial=false`: nothing is stored); success is `204`.
//! Errors have each version's shape: `{"error"}` (1.x), `{"code", "message"}` (2.x, see
//! [`v2_error_shape`]), `{"error", "data": [{"original_line", "line_number",
//! "error_message"}]}` (3.x). `db`, `bucket`, `org` and `rp` name nothing in aemos (it has one
//! `readings` table) and are not checked.

use std::io::Read;

use aemos_ingest::{Decoded, Format, Precision, Rejection};
use axum::body::{Body, Bytes};
use axum::extract::{Query, Request, State};
use axum::http::{header, HeaderMap, HeaderValue, StatusCode};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use axum::{Extension, Json};
use serde::Deserialize;
use serde_json::{json, Value};

use super::write::{decode_body, forbidden, store};
use super::{ApiError, AppState};
use crate::auth::Principal;
use aemos_storage::Priority;

/// The largest body a request may carry once decompressed (`--max-body-bytes`).
#[derive(Debug, Clone, Copy)]
pub(super) struct BodyLimit(pub(super) usize);

/// Rejections named in a `400` message (all are counted).
const NAMED_REJECTIONS: usize = 10;

#[derive(Debug, Default, Deserialize)]
pub(super) struct WriteParams {
    precision: Option<String>,
    accept_partial: Option<bool>,
}

/// What a write stored and refused.
struct Outcome {
    accepted: usize,
    rejected: Vec<Rejection>,
    rejected_count: usize,
    /// The body as decoded (gunzipped): v3 quotes its refused lines.
    body: Bytes,
}

impl Outcome {
    /// `partial write: 2 of 10 readings refused, the others were stored: line 3: ...`.
    fn message(&self, stored: bool) -> String {
        let named: Vec<String> = self
            .rejected
            .iter()
            .take(NAMED_REJECTIONS)
            .map(|r| match r.line {
                Some(line) => format!("line {line}: {}", r.reason),
                None => r.reason.clone(),
            })
            .collect();
        let total = self.accepted + self.rejected_count;
        let what = if stored {
            "the others were stored"
        } else {
            "nothing was stored"
        };
        format!(
            "partial write: {} of {total} readings refused, {what}: {}",
            self.rejected_count,
            named.join("; ")
        )
    }
}

/// Which InfluxDB's write API a route speaks: its precisions, whether a body with bad lines
/// stores the good ones, and the shape of its partial-write answer.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(super) enum Dialect {
    /// `POST /write?db=&precision=` (InfluxDB 1.x; precision `n`, `u`, `ms`, `s`).
    V1,
    /// `POST /api/v2/write?org=&bucket=&precision=` (InfluxDB 2.x; `ns`, `us`, `ms`, `s`).
    V2,
    /// `POST /api/v3/write_lp?db=&precision=&accept_partial=&no_sync=` (InfluxDB 3.x;
    /// precision `auto` by default). `no_sync=true` lets InfluxDB answer before its WAL is on
    /// disk; aemos answers after, always.
    V3,
}

/// The write routes, each with its [`Dialect`] as a route extension.
pub(super) async fn write(
    State(state): State<AppState>,
    Extension(dialect): Extension<Dialect>,
    Extension(principal): Extension<Principal>,
    Extension(limit): Extension<BodyLimit>,
    Query(params): Query<WriteParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let (precision, partial) = match dialect {
        Dialect::V1 | Dialect::V2 => (params.precision.as_deref().map(Precision::parse), true),
        Dialect::V3 => (
            Some(Precision::parse_v3(
                params.precision.as_deref().unwrap_or("auto"),
            )),
            params.accept_partial.unwrap_or(true),
        ),
    };
    let result = write_line_protocol(
        &state, &principal, &headers, body, limit, precision, partial,
    );
    respond(&state, result.await, |outcome| match dialect {
        Dialect::V1 => Json(json!({ "error": outcome.message(true) })),
        Dialect::V2 => Json(json!({ "code": "invalid", "message": outcome.message(true) })),
        Dialect::V3 => {
            let error = if partial {
                "partial write of line protocol occurred"
            } else {
                "parsing failed for write_lp endpoint"
            };
            Json(json!({ "error": error, "data": v3_data(&outcome.body, &outcome.rejected) }))
        }
    })
}

/// The refused lines as InfluxDB 3 lists them.
fn v3_data(body: &[u8], rejected: &[Rejection]) -> Vec<Value> {
    let text: Vec<&[u8]> = body.split(|b| *b == b'\n').collect();
    rejected
        .iter()
        .map(|r| {
            let original = r
                .line
                .and_then(|line| text.get(line - 1))
                .map(|line| String::from_utf8_lossy(line.strip_suffix(b"\r").unwrap_or(line)));
            json!({
                "original_line": original,
                "line_number": r.line,
                "error_message": r.reason,
            })
        })
        .collect()
}

/// `204` when everything was stored, `400` with `partial`'s body when lines were refused, the
/// error otherwise; counted as `/api/v1/write` counts.
fn respond(
    state: &AppState,
    result: Result<Outcome, ApiError>,
    partial: impl FnOnce(&Outcome) -> Json<Value>,
) -> Response {
    let response = match result {
        Ok(outcome) if outcome.rejected_count == 0 => StatusCode::NO_CONTENT.into_response(),
        Ok(outcome) => (StatusCode::BAD_REQUEST, partial(&outcome)).into_response(),
        Err(e) => e.into_response(),
    };
    state
        .metrics
        .write_requests
        .with_label_values(&[response.status().as_str()])
        .inc();
    response
}

async fn write_line_protocol(
    state: &AppState,
    principal: &Principal,
    headers: &HeaderMap,
    body: Bytes,
    limit: BodyLimit,
    precision: Option<Result<Precision, aemos_ingest::Error>>,
    partial: bool,
) -> Result<Outcome, ApiError> {
    let precision = precision
        .transpose()
        .map_err(|e| ApiError::BadRequest(e.to_string()))?
        .unwrap_or_default();
    let body = decompressed(headers, body, limit)?;
    let decoded: Decoded = decode_body(
        state,
        principal,
        Format::LineProtocol(precision),
        &body,
        Priority::Normal,
    )?;
    if decoded.forbidden {
        return Err(forbidden(principal, &decoded));
    }
    let outcome = Outcome {
        accepted: decoded.accepted(),
        rejected: decoded.rejected,
        rejected_count: decoded.rejected_count,
        body,
    };
    if outcome.rejected_count > 0 && !partial {
        return Ok(Outcome {
            accepted: 0,
            ..outcome
        });
    }
    if outcome.accepted > 0 {
        store(state, decoded.batch, Priority::Normal, "line-protocol").await?;
    }
    Ok(outcome)
}

/// The body, gunzipped when `Content-Encoding: gzip`; a body that inflates beyond `limit` is
/// refused (`413`) once `limit` bytes are out, not after.
fn decompressed(headers: &HeaderMap, body: Bytes, limit: BodyLimit) -> Result<Bytes, ApiError> {
    let encoding = headers
        .get(header::CONTENT_ENCODING)
        .map(|v| v.to_str().unwrap_or_default().trim().to_ascii_lowercase());
    match encoding.as_deref() {
        None | Some("") | Some("identity") => Ok(body),
        Some("gzip") => {
            let inflate = || {
                let mut out = Vec::with_capacity(body.len().saturating_mul(4).min(limit.0));
                flate2::read::MultiGzDecoder::new(&body[..])
                    .take(limit.0 as u64 + 1)
                    .read_to_end(&mut out)
                    .map(|_| out)
            };
            let out = if body.len() > 256 * 1024 {
                tokio::task::block_in_place(inflate)
            } else {
                inflate()
            }
            .map_err(|e| ApiError::BadRequest(format!("gzip body is unreadable: {e}")))?;
            if out.len() > limit.0 {
                return Err(ApiError::PayloadTooLarge(format!(
                    "the body inflates beyond {} bytes (--max-body-bytes)",
                    limit.0
                )));
            }
            Ok(Bytes::from(out))
        }
        Some(other) => Err(ApiError::BadRequest(format!(
            "Content-Encoding {other:?} is not supported; use gzip or none"
        ))),
    }
}

/// `GET|HEAD /ping`: `204` with the version headers InfluxDB 1.x clients read.
pub(super) async fn ping() -> Response {
    (
        StatusCode::NO_CONTENT,
        [
            ("x-influxdb-version", "1.8.10"),
            ("x-influxdb-build", "OSS"),
            ("x-aemos-version", env!("CARGO_PKG_VERSION")),
        ],
    )
        .into_response()
}

#[derive(Debug, Default, Deserialize)]
pub(super) struct QueryParams {
    q: Option<String>,
}

/// `GET|POST /query?q=` (InfluxDB 1.x): `CREATE DATABASE` and `CREATE RETENTION POLICY`
/// succeed and change nothing; any other statement gets its error, as InfluxDB reports one.
pub(super) async fn query_v1(
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Result<Json<Value>, ApiError> {
    let form = headers.get(header::CONTENT_TYPE).is_some_and(|v| {
        v.as_bytes()
            .starts_with(b"application/x-www-form-urlencoded")
    });
    let from_body = || {
        url::form_urlencoded::parse(&body)
            .find(|(k, _)| k == "q")
            .map(|(_, v)| v.into_owned())
    };
    let q = match params.q {
        Some(q) => q,
        None if form => from_body().unwrap_or_default(),
        None => String::new(),
    };
    if q.trim().is_empty() {
        return Err(ApiError::BadRequest("missing parameter: q".into()));
    }
    let results: Vec<Value> = q
        .split(';')
        .map(str::trim)
        .filter(|s| !s.is_empty())
        .enumerate()
        .map(|(i, statement)| {
            let upper = statement.to_ascii_uppercase();
            if upper.starts_with("CREATE DATABASE ") || upper.starts_with("CREATE RETENTION POLICY ")
            {
                json!({ "statement_id": i })
            } else {
                json!({
                    "statement_id": i,
                    "error": "aemos answers InfluxQL CREATE DATABASE only; query with SQL at /api/v1/query",
                })
            }
        })
        .collect();
    Ok(Json(json!({ "results": results })))
}

/// InfluxDB 2.x clients read an error's `code` and `message`: on `/api/v2/write` every error
/// answer (the handler's, the authentication's, the body limit's) is rewritten to that shape.
pub(super) async fn v2_error_shape(request: Request, next: Next) -> Response {
    if request.uri().path() != "/api/v2/write" {
        return next.run(request).await;
    }
    let response = next.run(request).await;
    let status = response.status();
    if !(status.is_client_error() || status.is_server_error()) {
        return response;
    }
    let (mut parts, body) = response.into_parts();
    let bytes = axum::body::to_bytes(body, 64 * 1024)
        .await
        .unwrap_or_default();
    let parsed: Option<Value> = serde_json::from_slice(&bytes).ok();
    if parsed.as_ref().is_some_and(|v| v.get("code").is_some()) {
        return Response::from_parts(parts, Body::from(bytes));
    }
    let message = match parsed.as_ref().and_then(|v| v.get("error")) {
        Some(Value::String(error)) => error.clone(),
        _ => String::from_utf8_lossy(&bytes).into_owned(),
    };
    let code = match status {
        StatusCode::BAD_REQUEST => "invalid",
        StatusCode::UNAUTHORIZED => "unauthorized",
        StatusCode::FORBIDDEN => "forbidden",
        StatusCode::NOT_FOUND => "not found",
        StatusCode::PAYLOAD_TOO_LARGE => "request too large",
        StatusCode::TOO_MANY_REQUESTS => "too many requests",
        StatusCode::SERVICE_UNAVAILABLE => "unavailable",
        _ => "internal error",
    };
    let body = json!({ "code": code, "message": message }).to_string();
    parts.headers.insert(
        header::CONTENT_TYPE,
        HeaderValue::from_static("application/json"),
    );
    parts.headers.remove(header::CONTENT_LENGTH);
    Response::from_parts(parts, Body::from(body))
}
