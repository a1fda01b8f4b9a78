//! `aemos sql` without a query: an interactive shell over a data directory or object store.
//!
//! Statements end with `;` and may span lines; line editing and history (`~/.aemos_history`)
//! come from rustyline, which reads plain lines when stdin is not a terminal, so the shell can
//! be scripted. Backslash commands: `\d` (the tables), `\d NAME` (a table's columns),
//! `\timing` (on by default), `\refresh` (a new snapshot of the data), `\q`, `\?`.

use std::io::Write;
use std::time::Instant;

use aemos_queries::QueryEngine;
use rustyline::error::ReadlineError;
use rustyline::DefaultEditor;

const HELP: &str = "\
  SELECT ...;      run a query (statements end with `;`, and may span lines)
  \\d               list the tables
  \\d NAME          describe a table
  \\timing          turn the time of each query on or off
  \\refresh         read the data again (the shell reads a snapshot taken when it started)
  \\q               quit (or Ctrl-D)";

/// What the shell reads its snapshot with: called at start and on `\refresh`.
pub type Open = Box<dyn Fn() -> futures::future::BoxFuture<'static, anyhow::Result<QueryEngine>>>;

pub async fn run(open: Open) -> anyhow::Result<()> {
    let mut engine = open().await?;
    let mut editor = DefaultEditor::new()?;
    let history = std::env::var_os("HOME").map(|h| std::path::Path::new(&h).join(".aemos_history"));
    if let Some(path) = &history {
        let _ = editor.load_history(path);
    }
    let mut out = std::io::stdout();
    writeln!(
        out,
        "aemos {}: SQL over readings; \\? for help",
        env!("CARGO_PKG_VERSION")
    )?;
    let mut timing = true;
    let mut statement = String::new();
    loop {
        let prompt = if statement.is_empty() {
            "aemos> "
        } else {
            "  ...> "
        };
        let line = match editor.readline(prompt) {
            Ok(line) => line,
            Err(ReadlineError::Interrupted) => {
                statement.clear();
                continue;
            }
            Err(ReadlineError::Eof) => break,
            Err(e) => return Err(e.into()),
        };
        let trimmed = line.trim();
        if trimmed.is_empty() {
            continue;
        }
        let _ = editor.add_history_entry(trimmed);
        if statement.is_empty() && trimmed.starts_with('\\') {
            let mut words = trimmed.split_whitespace();
            match (words.next(), words.next()) {
                (Some("\\q"), _) => break,
                (Some("\\?"), _) => writeln!(out, "{HELP}")?,
                (Some("\\timing"), _) => {
                    timing = !timing;
                    writeln!(out, "Timing is {}.", if timing { "on" } else { "off" })?;
                }
                (Some("\\refresh"), _) => {
                    engine = open().await?;
                    writeln!(out, "Read the data again.")?;
                }
                (Some("\\d"), None) => {
                    show(&engine, &mut out, TABLES, timing).await?;
                }
                (Some("\\d"), Some(table)) => {
                    let sql = format!(
                        "SELECT column_name AS column, data_type AS type, is_nullable AS nullable \
                         FROM information_schema.columns WHERE table_schema = 'public' \
                         AND table_name = '{}' ORDER BY ordinal_position",
                        table.replace('\'', "''")
                    );
                    show(&engine, &mut out, &sql, timing).await?;
                }
                _ => writeln!(out, "unknown command {trimmed}; \\? for help")?,
            }
            continue;
        }
        statement.push_str(&line);
        statement.push('\n');
        if trimmed.ends_with(';') {
            let sql = std::mem::take(&mut statement);
            show(&engine, &mut out, sql.trim().trim_end_matches(';'), timing).await?;
        }
    }
    if let Some(path) = &history {
        let _ = editor.save_history(path);
    }
    Ok(())
}

const TABLES: &str = "SELECT table_name AS table FROM information_schema.tables \
                      WHERE table_schema = 'public' ORDER BY table_name";

/// Runs `sql` and prints its rows, or its error: an error ends the statement, not the shell.
async fn show(
    engine: &QueryEngine,
    out: &mut impl Write,
    sql: &str,
    timing: bool,
) -> anyhow::Result<()> {
    let started = Instant::now();
    match engine.sql(sql).await {
        Ok((_, batches)) => {
            let rows: usize = batches.iter().map(|b| b.num_rows()).sum();
            writeln!(
                out,
                "{}",
                arrow::util::pretty::pretty_format_batches(&batches)?
            )?;
            writeln!(out, "({rows} row{})", if rows == 1 { "" } else { "s" })?;
        }
        Err(e) => writeln!(out, "ERROR: {e}")?,
    }
    if timing {
        writeln!(
            out,
            "Time: {:.3} ms",
            started.elapsed().as_secs_f64() * 1000.0
        )?;
    }
    Ok(())
}
