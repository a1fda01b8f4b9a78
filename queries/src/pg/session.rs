//! What a connection's session answers itself: `SET` and `SHOW` of the settings clients send
//! on connect, and transaction control.
//!
//! Settings live in the connection's metadata (pgwire's text encoders read `datestyle`,
//! `intervalstyle`, `bytea_output` and `extra_float_digits` from there), never in the shared
//! DataFusion session, so one client's `SET` changes nothing for another. A setting aemos
//! cannot honour is refused with the reason, not accepted and ignored. Transactions are
//! accepted for the clients that open one around every query (psycopg, JDBC without
//! autocommit); aemos over SQL is read-only, so there is nothing to commit or roll back.

use std::sync::Arc;
use std::time::Duration;

use datafusion::sql::sqlparser::ast::{Expr, Set, Statement, Value};
use futures::SinkExt;
use pgwire::api::results::{DataRowEncoder, FieldFormat, FieldInfo, QueryResponse, Response, Tag};
use pgwire::api::{ClientInfo, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::startup::ParameterStatus;
use pgwire::messages::PgWireBackendMessage;

use super::encode::sql_error;

/// Where a connection's `statement_timeout` is kept, in milliseconds.
const STATEMENT_TIMEOUT: &str = "statement_timeout";

/// The settings a client may change: name, default, and the name Postgres reports it under in
/// `ParameterStatus` (when it does).
const SETTINGS: &[(&str, &str, Option<&str>)] = &[
    ("application_name", "", Some("application_name")),
    ("bytea_output", "hex", None),
    ("client_encoding", "UTF8", Some("client_encoding")),
    ("client_min_messages", "notice", None),
    ("datestyle", "ISO, MDY", Some("DateStyle")),
    ("extra_float_digits", "1", None),
    ("intervalstyle", "postgres", Some("IntervalStyle")),
    ("search_path", "public", Some("search_path")),
    (
        "standard_conforming_strings",
        "on",
        Some("standard_conforming_strings"),
    ),
    (STATEMENT_TIMEOUT, "0", None),
    ("timezone", "UTC", Some("TimeZone")),
];

/// What `SHOW` answers beyond [`SETTINGS`], fixed by what aemos is.
const FIXED: &[(&str, &str)] = &[
    ("default_transaction_read_only", "on"),
    ("integer_datetimes", "on"),
    ("is_superuser", "off"),
    ("max_identifier_length", "63"),
    ("server_encoding", "UTF8"),
    ("server_version", "16.6"),
    ("server_version_num", "160006"),
    ("transaction_isolation", "read committed"),
    ("transaction_read_only", "on"),
];

/// Whether `statement` is the session's to answer rather than a query to plan.
pub(crate) fn is_session_statement(statement: &Statement) -> bool {
    matches!(
        statement,
        Statement::Set(_)
            | Statement::ShowVariable { .. }
            | Statement::StartTransaction { .. }
            | Statement::Commit { .. }
            | Statement::Rollback { .. }
            | Statement::Savepoint { .. }
            | Statement::ReleaseSavepoint { .. }
    )
}

/// The result columns of a session statement, for `Describe`.
pub(crate) fn result_fields(statement: &Statement) -> Vec<FieldInfo> {
    match statement {
        Statement::ShowVariable { variable } => show_fields(&variable_name(variable)),
        _ => Vec::new(),
    }
}

/// The connection's own `statement_timeout`, when it set one.
pub(crate) fn statement_timeout(client: &impl ClientInfo) -> Option<Duration> {
    let ms: u64 = client.metadata().get(STATEMENT_TIMEOUT)?.parse().ok()?;
    (ms > 0).then(|| Duration::from_millis(ms))
}

pub(crate) async fn answer<C>(client: &mut C, statement: &Statement) -> PgWireResult<Response>
where
    C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    match statement {
        Statement::StartTransaction { .. } => Ok(Response::TransactionStart(Tag::new("BEGIN"))),
        Statement::Commit { .. } => Ok(Response::TransactionEnd(Tag::new("COMMIT"))),
        Statement::Rollback {
            savepoint: Some(_), ..
        } => Ok(Response::Execution(Tag::new("ROLLBACK"))),
        Statement::Rollback { .. } => Ok(Response::TransactionEnd(Tag::new("ROLLBACK"))),
        Statement::Savepoint { .. } => Ok(Response::Execution(Tag::new("SAVEPOINT"))),
        Statement::ReleaseSavepoint { .. } => Ok(Response::Execution(Tag::new("RELEASE"))),
        Statement::ShowVariable { variable } => show(client, &variable_name(variable)),
        Statement::Set(set) => {
            let (name, value) = assignment(set)?;
            set_setting(client, &name, value).await?;
            Ok(Response::Execution(Tag::new("SET")))
        }
        other => Err(sql_error(
            "0A000",
            format!("{other} is not a session statement"),
        )),
    }
}

fn variable_name(parts: &[datafusion::sql::sqlparser::ast::Ident]) -> String {
    parts
        .iter()
        .map(|p| p.value.to_lowercase())
        .collect::<Vec<_>>()
        .join(" ")
}

/// The setting and its new value (`None`: back to the default) of a `SET`.
fn assignment(set: &Set) -> PgWireResult<(String, Option<String>)> {
    match set {
        Set::SingleAssignment {
            variable, values, ..
        } => {
            let name = variable.to_string().to_lowercase();
            let value = match values.as_slice() {
                [Expr::Identifier(id)] if id.value.eq_ignore_ascii_case("default") => None,
                [one] => Some(literal(one)),
                many => Some(many.iter().map(literal).collect::<Vec<_>>().join(", ")),
            };
            Ok((name, value))
        }
        Set::SetTimeZone { value, .. } => Ok(("timezone".into(), Some(literal(value)))),
        Set::SetNames { charset_name, .. } => {
            Ok(("client_encoding".into(), Some(charset_name.value.clone())))
        }
        other => Err(sql_error(
            "0A000",
            format!("{other} is not supported: aemos serves read-only queries over SQL"),
        )),
    }
}

/// A `SET` value as text: `'ISO, MDY'`, `5000`, `utc` become `ISO, MDY`, `5000`, `utc`.
fn literal(expr: &Expr) -> String {
    match expr {
        Expr::Value(v) => match &v.value {
            Value::SingleQuotedString(s) | Value::DoubleQuotedString(s) => s.clone(),
            other => other.to_string(),
        },
        Expr::Identifier(id) => id.value.clone(),
        other => other.to_string(),
    }
}

async fn set_setting<C>(client: &mut C, name: &str, value: Option<String>) -> PgWireResult<()>
where
    C: ClientInfo + futures::Sink<PgWireBackendMessage> + Unpin + Send,
    PgWireError: From<<C as futures::Sink<PgWireBackendMessage>>::Error>,
{
    let Some(&(_, default, reported)) = SETTINGS.iter().find(|(n, _, _)| *n == name) else {
        let code = if FIXED.iter().any(|(n, _)| *n == name) {
            "55P02" // cant_change_runtime_param
        } else {
            "42704" // undefined_object
        };
        return Err(sql_error(
            code,
            format!("unrecognized configuration parameter \"{name}\" (or one aemos cannot change)"),
        ));
    };
    let value = value.unwrap_or_else(|| default.to_owned());
    let stored = checked(name, &value)?;
    client.metadata_mut().insert(name.to_owned(), stored);
    if let Some(reported) = reported {
        client
            .send(PgWireBackendMessage::ParameterStatus(ParameterStatus::new(
                reported.to_owned(),
                value,
            )))
            .await?;
    }
    Ok(())
}

/// The value as stored, or why aemos cannot take it.
fn checked(name: &str, value: &str) -> PgWireResult<String> {
    let invalid = |why: &str| {
        sql_error(
            "22023",
            format!("invalid value for parameter \"{name}\": \"{value}\": {why}"),
        )
    };
    match name {
        "client_encoding" => {
            let v = value.to_ascii_uppercase().replace(['-', '_'], "");
            if v == "UTF8" || v == "UNICODE" {
                Ok("UTF8".into())
            } else {
                Err(invalid("aemos speaks UTF8 only"))
            }
        }
        "timezone" => {
            let utc = [
                "utc", "etc/utc", "gmt", "etc/gmt", "z", "zulu", "utc0", "+00", "0",
            ];
            if utc.contains(&value.to_ascii_lowercase().as_str()) {
                Ok("UTC".into())
            } else {
                Err(invalid(
                    "aemos answers in UTC; convert in the query (AT TIME ZONE) instead",
                ))
            }
        }
        "standard_conforming_strings" => match value.to_ascii_lowercase().as_str() {
            "on" | "true" | "1" => Ok("on".into()),
            _ => Err(invalid("backslashes in string literals are always literal")),
        },
        "extra_float_digits" => match value.parse::<i8>() {
            Ok(n) if (-15..=3).contains(&n) => Ok(n.to_string()),
            _ => Err(invalid("an integer from -15 to 3")),
        },
        STATEMENT_TIMEOUT => parse_timeout(value)
            .map(|ms| ms.to_string())
            .ok_or_else(|| invalid("a duration such as 5000, 5s, 2min or 0 (none)")),
        _ => Ok(value.to_owned()),
    }
}

/// `statement_timeout` in milliseconds: a bare number is milliseconds, as in Postgres.
fn parse_timeout(text: &str) -> Option<u64> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let n: u64 = number.parse().ok()?;
    let factor = match unit.trim() {
        "" | "ms" => 1,
        "s" => 1_000,
        "min" => 60_000,
        "h" => 3_600_000,
        "d" => 86_400_000,
        _ => return None,
    };
    n.checked_mul(factor)
}

fn show_fields(name: &str) -> Vec<FieldInfo> {
    let columns: &[&str] = if name == "all" {
        &["name", "setting"]
    } else {
        &[name]
    };
    columns
        .iter()
        .map(|c| FieldInfo::new((*c).to_owned(), None, None, Type::TEXT, FieldFormat::Text))
        .collect()
}

fn show<C: ClientInfo>(client: &C, name: &str) -> PgWireResult<Response> {
    let current = |setting: &str, default: &str| -> String {
        match client.metadata().get(setting) {
            Some(ms) if setting == STATEMENT_TIMEOUT && ms != "0" => format!("{ms}ms"),
            Some(v) => v.clone(),
            None => default.to_owned(),
        }
    };
    let mut rows: Vec<Vec<String>> = Vec::new();
    if name == "all" {
        for (n, d, _) in SETTINGS {
            rows.push(vec![(*n).to_owned(), current(n, d)]);
        }
        for (n, v) in FIXED {
            rows.push(vec![(*n).to_owned(), (*v).to_owned()]);
        }
        rows.sort();
    } else if let Some((n, d, _)) = SETTINGS.iter().find(|(n, _, _)| *n == name) {
        rows.push(vec![current(n, d)]);
    } else if let Some((_, v)) = FIXED.iter().find(|(n, _)| *n == name) {
        rows.push(vec![(*v).to_owned()]);
    } else if name == "transaction isolation level" {
        rows.push(vec!["read committed".to_owned()]);
    } else {
        return Err(sql_error(
            "42704",
            format!("unrecognized configuration parameter \"{name}\""),
        ));
    }
    let fields = Arc::new(show_fields(name));
    let encoded = rows
        .into_iter()
        .map(|row| {
            let mut encoder = DataRowEncoder::new(Arc::clone(&fields));
            for value in row {
                encoder.encode_field(&value)?;
            }
            Ok(encoder.take_row())
        })
        .collect::<Vec<_>>();
    Ok(Response::Query(QueryResponse::new(
        fields,
        futures::stream::iter(encoded),
    )))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn statement_timeouts_read_as_postgres_reads_them() {
        assert_eq!(parse_timeout("5000"), Some(5000));
        assert_eq!(parse_timeout("5s"), Some(5000));
        assert_eq!(parse_timeout("2min"), Some(120_000));
        assert_eq!(parse_timeout("0"), Some(0));
        assert_eq!(parse_timeout("5 parsecs"), None);
        assert_eq!(parse_timeout("-1"), None);
    }

    #[test]
    fn a_setting_aemos_cannot_honour_is_refused_with_the_reason() {
        let e = checked("timezone", "Europe/Paris").unwrap_err().to_string();
        assert!(e.contains("UTC"), "{e}");
        assert!(checked("client_encoding", "LATIN1").is_err());
        assert_eq!(checked("timezone", "Etc/UTC").unwrap(), "UTC");
        assert_eq!(checked("client_encoding", "utf-8").unwrap(), "UTF8");
    }
}
