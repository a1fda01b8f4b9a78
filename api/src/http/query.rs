//! `POST|GET /api/v1/query`: SQL in, results streamed out in the requested format.

use aemos_queries::{OutputFormat, ResultEncoder};
use axum::body::{Body, Bytes};
use axum::extract::{Query, State};
use axum::http::{header, HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use futures::StreamExt;
use serde::Deserialize;
use tracing::warn;

use super::{ApiError, AppState};

#[derive(Debug, Deserialize)]
pub(super) struct QueryRequest {
    sql: String,
    format: Option<String>,
}

#[derive(Debug, Deserialize)]
pub(super) struct QueryParams {
    sql: Option<String>,
    format: Option<String>,
}

pub(super) async fn query_get(
    State(state): State<AppState>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
) -> Response {
    let Some(sql) = params.sql else {
        return ApiError::BadRequest("missing query parameter `sql`".into()).into_response();
    };
    respond(state, sql, params.format, &headers).await
}

pub(super) async fn query_post(
    State(state): State<AppState>,
    Query(params): Query<QueryParams>,
    headers: HeaderMap,
    body: Bytes,
) -> Response {
    let request: QueryRequest = match serde_json::from_slice(&body) {
        Ok(r) => r,
        Err(e) => {
            return ApiError::BadRequest(format!("body must be {{\"sql\": \"...\"}}: {e}"))
                .into_response()
        }
    };
    respond(
        state,
        request.sql,
        request.format.or(params.format),
        &headers,
    )
    .await
}

async fn respond(
    state: AppState,
    sql: String,
    format: Option<String>,
    headers: &HeaderMap,
) -> Response {
    let response = run(&state, &sql, format, headers).await;
    let status = match &response {
        Ok(_) => StatusCode::OK,
        Err(e) => e.status(),
    };
    state
        .metrics
        .query_requests
        .with_label_values(&[status.as_str()])
        .inc();
    response.unwrap_or_else(IntoResponse::into_response)
}

async fn run(
    state: &AppState,
    sql: &str,
    format: Option<String>,
    headers: &HeaderMap,
) -> Result<Response, ApiError> {
    let format = match format {
        Some(f) => OutputFormat::parse(&f)?,
        None => headers
            .get(header::ACCEPT)
            .and_then(|v| v.to_str().ok())
            .map_or(OutputFormat::Json, OutputFormat::from_accept),
    };
    let (schema, mut stream) = state.queries.execute_limited(sql).await?;
    let mut encoder = ResultEncoder::new(format, &schema)?;
    // The first batch is awaited here so that an early execution error still gets a status.
    let first = match stream.next().await {
        Some(Ok(batch)) => Some(batch),
        Some(Err(e)) => return Err(aemos_queries::Error::from_datafusion(e).into()),
        None => None,
    };
    let head = match &first {
        Some(batch) => encoder.batch(batch)?,
        None => Vec::new(),
    };
    let (tx, rx) = tokio::sync::mpsc::channel::<Result<Bytes, std::io::Error>>(4);
    tokio::spawn(async move {
        if !head.is_empty() && tx.send(Ok(head.into())).await.is_err() {
            return;
        }
        while let Some(item) = stream.next().await {
            let chunk = item
                .map_err(|e| e.to_string())
                .and_then(|b| encoder.batch(&b).map_err(|e| e.to_string()));
            match chunk {
                Ok(bytes) if bytes.is_empty() => continue,
                Ok(bytes) => {
                    if tx.send(Ok(bytes.into())).await.is_err() {
                        return; // client went away
                    }
                }
                Err(e) => {
                    warn!(error = %e, "query failed while streaming");
                    let _ = tx.send(Err(std::io::Error::other(e))).await;
                    return;
                }
            }
        }
        match encoder.finish(&schema) {
            Ok(tail) => {
                let _ = tx.send(Ok(tail.into())).await;
            }
            Err(e) => {
                let _ = tx.send(Err(std::io::Error::other(e.to_string()))).await;
            }
        }
    });
    let body = futures::stream::unfold(rx, |mut rx| async move {
        rx.recv().await.map(|item| (item, rx))
    });
    Ok((
        [(header::CONTENT_TYPE, format.content_type())],
        Body::from_stream(body),
    )
        .into_response())
}
