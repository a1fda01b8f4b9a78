//! The simple and extended query protocols over the shared session.

use std::fmt::Debug;
use std::sync::Arc;

use async_trait::async_trait;
use datafusion::arrow::datatypes::DataType;
use datafusion::common::ParamValues;
use datafusion::logical_expr::LogicalPlan;
use datafusion::prelude::SQLOptions;
use datafusion::sql::parser::Statement as DfStatement;
use datafusion::sql::sqlparser::ast::Statement;
use datafusion_pg_catalog::sql::PostgresCompatibilityParser;
use futures::Sink;
use pgwire::api::portal::{Format, Portal};
use pgwire::api::query::{ExtendedQueryHandler, SimpleQueryHandler};
use pgwire::api::results::{FieldInfo, Response};
use pgwire::api::stmt::QueryParser;
use pgwire::api::store::PortalStore;
use pgwire::api::{ClientInfo, ClientPortalStore, ConnectionHandle, Type};
use pgwire::error::{PgWireError, PgWireResult};
use pgwire::messages::PgWireBackendMessage;
use pgwire::types::format::FormatOptions;

use super::encode::{self, pg_error, read_only, sql_error};
use super::session;
use crate::engine::QueryEngine;
use crate::error::Error;

/// A statement as parsed (extended protocol: as prepared, its parameters still placeholders).
#[derive(Debug, Clone)]
pub(crate) enum PgStatement {
    /// A read-only query, planned.
    Query(Box<LogicalPlan>),
    /// `SET`, `SHOW`, `BEGIN`, ...: the session's to answer.
    Session(Box<Statement>),
}

pub(crate) struct PgHandler {
    parser: Arc<PgParser>,
}

pub(crate) struct PgParser {
    engine: QueryEngine,
    sql: PostgresCompatibilityParser,
}

impl PgHandler {
    pub(crate) fn new(engine: QueryEngine) -> Self {
        Self {
            parser: Arc::new(PgParser {
                engine,
                sql: PostgresCompatibilityParser::new(),
            }),
        }
    }
}

impl PgParser {
    fn parse(&self, sql: &str) -> PgWireResult<Vec<Statement>> {
        self.sql
            .parse(sql)
            .map_err(|e| sql_error("42601", e.to_string()))
    }

    /// Plans `statement`; anything but a query (DDL, DML, `COPY`) is refused, before planning
    /// and again by the plan's kind.
    async fn plan(&self, statement: Statement) -> PgWireResult<PgStatement> {
        if session::is_session_statement(&statement) {
            return Ok(PgStatement::Session(Box::new(statement)));
        }
        let read_only_kind = matches!(
            statement,
            Statement::Query(_)
                | Statement::Explain { .. }
                | Statement::ExplainTable { .. }
                | Statement::ShowTables { .. }
                | Statement::ShowColumns { .. }
                | Statement::ShowFunctions { .. }
        );
        if !read_only_kind {
            let text = statement.to_string();
            let verb = text.split_whitespace().next().unwrap_or_default();
            return Err(read_only(&format!("{} is not run", verb.to_uppercase())));
        }
        let state = self.engine.context().state();
        let plan = state
            .statement_to_plan(DfStatement::Statement(Box::new(statement)))
            .await
            .map_err(|e| pg_error(Error::from_datafusion(e)))?;
        let options = SQLOptions::new()
            .with_allow_ddl(false)
            .with_allow_dml(false)
            .with_allow_statements(false);
        if let Err(e) = options.verify_plan(&plan) {
            return Err(read_only(&e.strip_backtrace()));
        }
        let plan = crate::gapfill::fill_gaps(plan, &state)
            .map_err(|e| pg_error(Error::from_datafusion(e)))?;
        Ok(PgStatement::Query(Box::new(plan)))
    }

    /// Runs a planned query within the engine's limits (and the connection's own
    /// `statement_timeout`), its rows streamed in `format`.
    async fn run<C>(&self, client: &C, plan: LogicalPlan, format: &Format) -> PgWireResult<Response>
    where
        C: ClientInfo + Sync,
    {
        let admission = self
            .engine
            .admit(session::statement_timeout(client))
            .map_err(pg_error)?;
        let ctx = self.engine.context();
        let df = admission
            .within(ctx.execute_logical_plan(plan))
            .await
            .and_then(|r| r.map_err(Error::from_datafusion))
            .map_err(pg_error)?;
        let stream = admission
            .within(df.execute_stream())
            .await
            .and_then(|r| r.map_err(Error::from_datafusion))
            .map_err(pg_error)?;
        let cancel = match client.session_extensions().get::<Arc<ConnectionHandle>>() {
            Some(handle) => Some(handle.start_query().await),
            None => None,
        };
        let options = Arc::new(FormatOptions::from_client_metadata(client.metadata()));
        let rows = encode::respond(admission.bound(stream), format, options, cancel)?;
        Ok(Response::Query(rows))
    }
}

#[async_trait]
impl SimpleQueryHandler for PgHandler {
    async fn do_query<C>(&self, client: &mut C, query: &str) -> PgWireResult<Vec<Response>>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        let statements = self.parser.parse(query)?;
        if statements.is_empty() {
            return Ok(vec![Response::EmptyQuery]);
        }
        let mut responses = Vec::with_capacity(statements.len());
        for statement in statements {
            let response = match self.parser.plan(statement).await? {
                PgStatement::Session(s) => session::answer(client, &s).await?,
                PgStatement::Query(plan) => {
                    self.parser.run(client, *plan, &Format::UnifiedText).await?
                }
            };
            responses.push(response);
        }
        Ok(responses)
    }
}

#[async_trait]
impl QueryParser for PgParser {
    type Statement = PgStatement;

    async fn parse_sql<C>(
        &self,
        _client: &C,
        sql: &str,
        _types: &[Option<Type>],
    ) -> PgWireResult<Option<PgStatement>>
    where
        C: ClientInfo + Unpin + Send + Sync,
    {
        let mut statements = self.parse(sql)?;
        match statements.len() {
            0 => Ok(None),
            1 => self.plan(statements.remove(0)).await.map(Some),
            _ => Err(sql_error(
                "42601",
                "cannot insert multiple commands into a prepared statement".into(),
            )),
        }
    }

    fn get_parameter_types(&self, statement: &PgStatement) -> PgWireResult<Vec<Type>> {
        match statement {
            PgStatement::Query(plan) => crate::engine::parameter_types(plan)
                .map_err(pg_error)?
                .into_iter()
                .map(|t| match t {
                    Some(t) => arrow_pg::datatypes::into_pg_type(&t),
                    None => Ok(Type::UNKNOWN),
                })
                .collect(),
            PgStatement::Session(_) => Ok(Vec::new()),
        }
    }

    fn get_result_schema(
        &self,
        statement: &PgStatement,
        format: Option<&Format>,
    ) -> PgWireResult<Vec<FieldInfo>> {
        match statement {
            PgStatement::Query(plan) => encode::fields(
                plan.schema().as_arrow(),
                format.unwrap_or(&Format::UnifiedText),
                None,
            ),
            PgStatement::Session(s) => Ok(session::result_fields(s)),
        }
    }
}

#[async_trait]
impl ExtendedQueryHandler for PgHandler {
    type Statement = PgStatement;
    type QueryParser = PgParser;

    fn query_parser(&self) -> Arc<PgParser> {
        Arc::clone(&self.parser)
    }

    async fn do_query<C>(
        &self,
        client: &mut C,
        portal: &Portal<PgStatement>,
        _max_rows: usize,
    ) -> PgWireResult<Response>
    where
        C: ClientInfo + ClientPortalStore + Sink<PgWireBackendMessage> + Unpin + Send + Sync,
        C::PortalStore: PortalStore,
        C::Error: Debug,
        PgWireError: From<<C as Sink<PgWireBackendMessage>>::Error>,
    {
        match &portal.statement.statement {
            PgStatement::Session(s) => session::answer(client, s).await,
            PgStatement::Query(plan) => {
                let types = crate::engine::parameter_types(plan).map_err(pg_error)?;
                let hints: Vec<Option<&DataType>> = types.iter().map(Option::as_ref).collect();
                let params: ParamValues =
                    arrow_pg::datatypes::df::deserialize_parameters(portal, &hints)?;
                let plan = plan
                    .as_ref()
                    .clone()
                    .replace_params_with_values(&params)
                    .map_err(|e| pg_error(Error::from_datafusion(e)))?;
                self.parser
                    .run(client, plan, &portal.result_column_format)
                    .await
            }
        }
    }
}
