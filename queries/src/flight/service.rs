//! The Flight SQL commands aemos answers: statements and prepared statements (run), the
//! catalog (catalogs, schemas, tables, table types), SqlInfo; writes are refused with the reason.

use std::pin::Pin;
use std::sync::{Arc, OnceLock};

use arrow::array::RecordBatch;
use arrow::datatypes::Schema;
use arrow::ipc::writer::IpcWriteOptions;
use arrow_flight::encode::FlightDataEncoderBuilder;
use arrow_flight::error::FlightError;
use arrow_flight::flight_service_server::FlightService;
use arrow_flight::sql::metadata::{SqlInfoData, SqlInfoDataBuilder};
use arrow_flight::sql::server::{FlightSqlService, PeekableFlightDataStream};
use arrow_flight::sql::{
    ActionClosePreparedStatementRequest, ActionCreatePreparedStatementRequest,
    ActionCreatePreparedStatementResult, CommandGetCatalogs, CommandGetDbSchemas,
    CommandGetSqlInfo, CommandGetTableTypes, CommandGetTables, CommandPreparedStatementQuery,
    CommandPreparedStatementUpdate, CommandStatementIngest, CommandStatementQuery,
    CommandStatementUpdate, DoPutPreparedStatementResult, ProstMessageExt, SqlInfo,
    TicketStatementQuery,
};
use arrow_flight::{
    Action, FlightDescriptor, FlightEndpoint, FlightInfo, HandshakeRequest, HandshakeResponse,
    IpcMessage, SchemaAsIpc, Ticket,
};
use base64::Engine;
use datafusion::common::{ParamValues, ScalarValue};
use datafusion::logical_expr::TableType;
use datafusion::prelude::DataFrame;
use futures::{Stream, StreamExt, TryStreamExt};
use prost::Message;
use tonic::metadata::MetadataValue;
use tonic::{Request, Response, Status, Streaming};

use super::handle::Prepared;
use super::{authorize, bearer, read_only, status};
use crate::engine::{parameter_types, QueryEngine};
use crate::error::Error;
use crate::format::{portable_batch, portable_schema};
use crate::login::SqlLogin;

type DoGetStream = <FlightSql as FlightService>::DoGetStream;

pub(super) struct FlightSql {
    engine: QueryEngine,
    login: Arc<dyn SqlLogin>,
}

impl FlightSql {
    pub(super) fn new(engine: QueryEngine, login: Arc<dyn SqlLogin>) -> Self {
        Self { engine, login }
    }

    fn authorize<T>(&self, request: &Request<T>) -> Result<(), Status> {
        authorize(self.login.as_ref(), request)
    }

    /// The statement planned read-only, its parameters (if any) bound.
    async fn plan(&self, prepared: &Prepared) -> Result<DataFrame, Status> {
        let df = self.engine.plan(&prepared.sql).await.map_err(status)?;
        let Some(params) = &prepared.params else {
            return Ok(df);
        };
        if params.num_rows() != 1 {
            return Err(Status::invalid_argument(format!(
                "{} rows of parameters: a query takes one",
                params.num_rows()
            )));
        }
        let types = parameter_types(df.logical_plan()).map_err(status)?;
        let mut values = Vec::with_capacity(params.num_columns());
        for (i, column) in params.columns().iter().enumerate() {
            let mut value = ScalarValue::try_from_array(column, 0)
                .map_err(|e| status(Error::from_datafusion(e)))?;
            if let Some(Some(wanted)) = types.get(i) {
                value = value
                    .cast_to(wanted)
                    .map_err(|e| Status::invalid_argument(format!("parameter ${}: {e}", i + 1)))?;
            }
            values.push(value);
        }
        df.with_param_values(ParamValues::from(values))
            .map_err(|e| status(Error::from_datafusion(e)))
    }

    /// Runs `prepared` within the limits of a user query; its batches stream out as computed.
    async fn run(&self, prepared: Prepared) -> Result<Response<DoGetStream>, Status> {
        let admission = self.engine.admit(None).map_err(status)?;
        let df = admission
            .within(self.plan(&prepared))
            .await
            .map_err(status)??;
        let schema = portable_schema(&Arc::new(df.schema().as_arrow().clone()));
        let stream = admission
            .within(df.execute_stream())
            .await
            .map_err(status)?
            .map_err(|e| status(Error::from_datafusion(e)))?;
        let batches = admission.bound(stream).map(|batch| {
            batch
                .map_err(Error::from_datafusion)
                .and_then(|b| portable_batch(&b))
                .map_err(|e| FlightError::Tonic(Box::new(status(e))))
        });
        let flight = FlightDataEncoderBuilder::new()
            .with_schema(schema)
            .build(batches)
            .map_err(Status::from);
        Ok(Response::new(Box::pin(flight)))
    }

    /// A `FlightInfo` of `schema` whose one endpoint's ticket is `ticket`.
    fn info(
        schema: &Schema,
        ticket: impl ProstMessageExt,
        descriptor: FlightDescriptor,
    ) -> Result<Response<FlightInfo>, Status> {
        let ticket = Ticket::new(ticket.as_any().encode_to_vec());
        let info = FlightInfo::new()
            .try_with_schema(&portable_schema(&Arc::new(schema.clone())))
            .map_err(|e| Status::internal(format!("encoding the schema: {e}")))?
            .with_endpoint(FlightEndpoint::new().with_ticket(ticket))
            .with_descriptor(descriptor);
        Ok(Response::new(info))
    }

    /// One batch as a `DoGet` answer.
    fn batch(batch: Result<RecordBatch, FlightError>) -> Response<DoGetStream> {
        let stream = FlightDataEncoderBuilder::new()
            .build(futures::stream::once(async move { batch }))
            .map_err(Status::from);
        Response::new(Box::pin(stream))
    }

    /// Every table of the session: catalog, schema, name, Flight SQL table type, Arrow schema.
    async fn tables(&self) -> Vec<(String, String, String, &'static str, Arc<Schema>)> {
        let ctx = self.engine.context();
        let mut out = Vec::new();
        for catalog_name in ctx.catalog_names() {
            let Some(catalog) = ctx.catalog(&catalog_name) else {
                continue;
            };
            for schema_name in catalog.schema_names() {
                let Some(schema) = catalog.schema(&schema_name) else {
                    continue;
                };
                let system = matches!(schema_name.as_str(), "information_schema" | "pg_catalog");
                for table_name in schema.table_names() {
                    let Ok(Some(table)) = schema.table(&table_name).await else {
                        continue;
                    };
                    let kind = match table.table_type() {
                        _ if system => "SYSTEM TABLE",
                        TableType::Base => "TABLE",
                        TableType::View => "VIEW",
                        TableType::Temporary => "LOCAL TEMPORARY",
                    };
                    let (c, s) = (catalog_name.clone(), schema_name.clone());
                    out.push((c, s, table_name, kind, portable_schema(&table.schema())));
                }
            }
        }
        out
    }
}

/// What `GetSqlInfo` answers: who the server is, and that it is read-only.
fn sql_info() -> &'static SqlInfoData {
    static INFO: OnceLock<SqlInfoData> = OnceLock::new();
    INFO.get_or_init(|| {
        let mut builder = SqlInfoDataBuilder::new();
        builder.append(SqlInfo::FlightSqlServerName, "aemos");
        builder.append(SqlInfo::FlightSqlServerVersion, env!("CARGO_PKG_VERSION"));
        // The Arrow format version of the schemas (Schema.fbs `MetadataVersion` V5 is 1.3).
        builder.append(SqlInfo::FlightSqlServerArrowVersion, "1.3");
        builder.append(SqlInfo::FlightSqlServerReadOnly, true);
        builder.append(SqlInfo::FlightSqlServerSql, true);
        builder.append(SqlInfo::FlightSqlServerSubstrait, false);
        builder.append(SqlInfo::FlightSqlServerTransaction, 0i32);
        builder.append(SqlInfo::FlightSqlServerCancel, false);
        builder.build().expect("the SqlInfo of fixed values builds")
    })
}

fn schema_ipc(schema: &Schema) -> Result<bytes::Bytes, Status> {
    let IpcMessage(bytes) = SchemaAsIpc::new(schema, &IpcWriteOptions::default())
        .try_into()
        .map_err(|e: arrow::error::ArrowError| {
            Status::internal(format!("encoding a schema: {e}"))
        })?;
    Ok(bytes)
}

#[tonic::async_trait]
impl FlightSqlService for FlightSql {
    type FlightService = FlightSql;

    /// A login with Basic credentials whose password is the user token: the token comes back as
    /// the bearer token the client sends from then on. A bearer token is checked as it is.
    async fn do_handshake(
        &self,
        request: Request<Streaming<HandshakeRequest>>,
    ) -> Result<
        Response<Pin<Box<dyn Stream<Item = Result<HandshakeResponse, Status>> + Send>>>,
        Status,
    > {
        let header = request
            .metadata()
            .get("authorization")
            .and_then(|v| v.to_str().ok())
            .unwrap_or_default();
        let token = match header.split_once(' ') {
            Some((scheme, basic)) if scheme.eq_ignore_ascii_case("basic") => {
                // Padding optional: Go's Flight client (under ADBC) leaves it out.
                let decoded = base64::engine::general_purpose::STANDARD_NO_PAD
                    .decode(basic.trim().trim_end_matches('='))
                    .ok()
                    .and_then(|b| String::from_utf8(b).ok())
                    .ok_or_else(|| {
                        Status::unauthenticated("Basic credentials that do not decode")
                    })?;
                let (_user, password) = decoded.split_once(':').unwrap_or(("", &decoded));
                Some(password.to_owned())
            }
            _ => bearer(&request)?.map(str::to_owned),
        };
        if self.login.credential_required() {
            let token = token.as_deref().ok_or_else(|| {
                Status::unauthenticated("no credential: log in with a user token as the password")
            })?;
            self.login.check(token).map_err(Status::unauthenticated)?;
        }
        let token = token.unwrap_or_default();
        let reply = HandshakeResponse {
            protocol_version: 0,
            payload: token.clone().into_bytes().into(),
        };
        let mut response: Response<Pin<Box<dyn Stream<Item = _> + Send>>> =
            Response::new(Box::pin(futures::stream::iter([Ok(reply)])));
        if !token.is_empty() {
            let value = MetadataValue::try_from(format!("Bearer {token}"))
                .map_err(|_| Status::unauthenticated("the token is not a header value"))?;
            response.metadata_mut().insert("authorization", value);
        }
        Ok(response)
    }

    async fn get_flight_info_statement(
        &self,
        query: CommandStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let prepared = Prepared {
            sql: query.query,
            params: None,
        };
        let df = self.plan(&prepared).await?;
        let ticket = TicketStatementQuery {
            statement_handle: prepared.encode()?,
        };
        Self::info(df.schema().as_arrow(), ticket, request.into_inner())
    }

    async fn do_get_statement(
        &self,
        ticket: TicketStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        self.run(Prepared::decode(&ticket.statement_handle)?).await
    }

    async fn do_action_create_prepared_statement(
        &self,
        query: ActionCreatePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<ActionCreatePreparedStatementResult, Status> {
        self.authorize(&request)?;
        let prepared = Prepared {
            sql: query.query,
            params: None,
        };
        let df = self.plan(&prepared).await?;
        let parameters: Vec<arrow::datatypes::Field> = parameter_types(df.logical_plan())
            .map_err(status)?
            .into_iter()
            .enumerate()
            .map(|(i, t)| {
                let t = t.unwrap_or(arrow::datatypes::DataType::Null);
                arrow::datatypes::Field::new(format!("${}", i + 1), t, true)
            })
            .collect();
        Ok(ActionCreatePreparedStatementResult {
            prepared_statement_handle: prepared.encode()?,
            dataset_schema: schema_ipc(&portable_schema(&Arc::new(
                df.schema().as_arrow().clone(),
            )))?,
            parameter_schema: schema_ipc(&Schema::new(parameters))?,
        })
    }

    /// Binds the parameters `DoPut` carries: the new handle holds them.
    async fn do_put_prepared_statement_query(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<DoPutPreparedStatementResult, Status> {
        self.authorize(&request)?;
        let mut prepared = Prepared::decode(&query.prepared_statement_handle)?;
        let data = request.into_inner().map_err(FlightError::from);
        let mut batches = arrow_flight::decode::FlightRecordBatchStream::new_from_flight_data(data);
        let mut params: Option<RecordBatch> = None;
        while let Some(batch) = batches.next().await {
            let batch = batch.map_err(Status::from)?;
            if batch.num_rows() == 0 {
                continue;
            }
            if params.is_some() || batch.num_rows() > 1 {
                return Err(Status::invalid_argument(
                    "more than one row of parameters: a query takes one",
                ));
            }
            params = Some(batch);
        }
        prepared.params = params;
        Ok(DoPutPreparedStatementResult {
            prepared_statement_handle: Some(prepared.encode()?),
        })
    }

    async fn get_flight_info_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let prepared = Prepared::decode(&query.prepared_statement_handle)?;
        let df = self.plan(&prepared).await?;
        Self::info(df.schema().as_arrow(), query, request.into_inner())
    }

    async fn do_get_prepared_statement(
        &self,
        query: CommandPreparedStatementQuery,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        self.run(Prepared::decode(&query.prepared_statement_handle)?)
            .await
    }

    /// Nothing to free: the handle is all there is.
    async fn do_action_close_prepared_statement(
        &self,
        _query: ActionClosePreparedStatementRequest,
        request: Request<Action>,
    ) -> Result<(), Status> {
        self.authorize(&request)
    }

    async fn get_flight_info_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        Self::info(&schema, query, request.into_inner())
    }

    async fn do_get_catalogs(
        &self,
        query: CommandGetCatalogs,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for name in self.engine.context().catalog_names() {
            builder.append(name);
        }
        Ok(Self::batch(builder.build()))
    }

    async fn get_flight_info_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::info(&schema, query, request.into_inner())
    }

    async fn do_get_schemas(
        &self,
        query: CommandGetDbSchemas,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let ctx = self.engine.context();
        let mut builder = query.into_builder();
        for catalog_name in ctx.catalog_names() {
            if let Some(catalog) = ctx.catalog(&catalog_name) {
                for schema_name in catalog.schema_names() {
                    builder.append(&catalog_name, schema_name);
                }
            }
        }
        Ok(Self::batch(builder.build()))
    }

    async fn get_flight_info_tables(
        &self,
        query: CommandGetTables,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder().schema();
        Self::info(&schema, query, request.into_inner())
    }

    async fn do_get_tables(
        &self,
        query: CommandGetTables,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for (catalog, schema, table, kind, table_schema) in self.tables().await {
            builder
                .append(catalog, schema, table, kind, &table_schema)
                .map_err(Status::from)?;
        }
        Ok(Self::batch(builder.build()))
    }

    async fn get_flight_info_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.into_builder().schema();
        Self::info(&schema, query, request.into_inner())
    }

    async fn do_get_table_types(
        &self,
        query: CommandGetTableTypes,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        let mut builder = query.into_builder();
        for kind in ["LOCAL TEMPORARY", "SYSTEM TABLE", "TABLE", "VIEW"] {
            builder.append(kind);
        }
        Ok(Self::batch(builder.build()))
    }

    async fn get_flight_info_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<FlightDescriptor>,
    ) -> Result<Response<FlightInfo>, Status> {
        self.authorize(&request)?;
        let schema = query.clone().into_builder(sql_info()).schema();
        Self::info(&schema, query, request.into_inner())
    }

    async fn do_get_sql_info(
        &self,
        query: CommandGetSqlInfo,
        request: Request<Ticket>,
    ) -> Result<Response<DoGetStream>, Status> {
        self.authorize(&request)?;
        Ok(Self::batch(query.into_builder(sql_info()).build()))
    }

    async fn do_put_statement_update(
        &self,
        ticket: CommandStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.authorize(&request)?;
        let verb = ticket
            .query
            .split_whitespace()
            .next()
            .unwrap_or("the statement");
        Err(read_only(&verb.to_uppercase()))
    }

    async fn do_put_prepared_statement_update(
        &self,
        _query: CommandPreparedStatementUpdate,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.authorize(&request)?;
        Err(read_only("an update"))
    }

    async fn do_put_statement_ingest(
        &self,
        _ticket: CommandStatementIngest,
        request: Request<PeekableFlightDataStream>,
    ) -> Result<i64, Status> {
        self.authorize(&request)?;
        Err(read_only("a bulk ingest"))
    }

    async fn register_sql_info(&self, _id: i32, _result: &SqlInfo) {}
}
