//! The `commands` SQL table: every command the server keeps (30 days of closed ones, all open
//! ones), read from memory at each query.

use std::sync::Arc;

use aemos_queries::{QueryEngine, SnapshotSource, SnapshotTable};
use arrow::array::{ArrayRef, RecordBatch, StringArray, TimestampMillisecondArray, UInt32Array};
use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use tracing::warn;

use super::{source_label, Commands};

fn timestamp(name: &str, nullable: bool) -> Field {
    Field::new(
        name,
        DataType::Timestamp(TimeUnit::Millisecond, Some("UTC".into())),
        nullable,
    )
}

/// `commands(time, command_id, device, action, value, source, chain, status, attempts,
/// sent_at, acknowledged_at, response)`; `time` is when the command was made, `value` and
/// `response` are JSON text.
pub(super) fn commands_schema() -> SchemaRef {
    Arc::new(Schema::new(vec![
        timestamp("time", false),
        Field::new("command_id", DataType::Utf8, false),
        Field::new("device", DataType::Utf8, false),
        Field::new("action", DataType::Utf8, false),
        Field::new("value", DataType::Utf8, false),
        Field::new("source", DataType::Utf8, false),
        Field::new("chain", DataType::Utf8, true),
        Field::new("status", DataType::Utf8, false),
        Field::new("attempts", DataType::UInt32, false),
        timestamp("sent_at", true),
        timestamp("acknowledged_at", true),
        Field::new("response", DataType::Utf8, true),
    ]))
}

impl SnapshotSource for Commands {
    fn schema(&self) -> SchemaRef {
        commands_schema()
    }

    fn batches(&self) -> Vec<RecordBatch> {
        let mut rows = self.all();
        if rows.is_empty() {
            return Vec::new();
        }
        rows.sort_by(|a, b| (a.created_at, &a.command_id).cmp(&(b.created_at, &b.command_id)));
        let utc = |a: TimestampMillisecondArray| Arc::new(a.with_timezone("UTC")) as ArrayRef;
        let text = |f: &dyn Fn(&super::Command) -> Option<String>| {
            Arc::new(rows.iter().map(f).collect::<StringArray>()) as ArrayRef
        };
        let columns: Vec<ArrayRef> = vec![
            utc(rows.iter().map(|c| Some(c.created_at)).collect()),
            text(&|c| Some(c.command_id.clone())),
            text(&|c| Some(c.device.clone())),
            text(&|c| Some(c.action.clone())),
            text(&|c| Some(c.value.to_string())),
            text(&|c| Some(source_label(c.source).to_owned())),
            text(&|c| c.chain.clone()),
            text(&|c| Some(c.status.as_str().to_owned())),
            Arc::new(rows.iter().map(|c| c.attempts).collect::<UInt32Array>()),
            utc(rows.iter().map(|c| c.sent_at).collect()),
            utc(rows.iter().map(|c| c.acknowledged_at).collect()),
            text(&|c| c.response.as_ref().map(|r| r.to_string())),
        ];
        match RecordBatch::try_new(commands_schema(), columns) {
            Ok(b) => vec![b],
            Err(e) => {
                warn!(error = %e, "commands snapshot");
                Vec::new()
            }
        }
    }
}

/// Registers `commands` with the query engine.
pub fn commands_snapshot(commands: &Arc<Commands>, queries: &QueryEngine) -> anyhow::Result<()> {
    let table = SnapshotTable::new(Arc::clone(commands) as _);
    queries
        .context()
        .register_table("commands", Arc::new(table))?;
    Ok(())
}
