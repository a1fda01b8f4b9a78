//! `aemos serve --config FILE` (or `AEMOS_CONFIG`): a TOML file of `serve` flags. Its keys
//! are the flags' long names without `--` (`http-addr = "0.0.0.0:3000"`, `persist-rows =
//! 1000000`); each value becomes its flag's default, so a flag on the command line and an
//! `AEMOS_*` variable both override the file. A key that is no flag of `serve`, or a value
//! that is not a string, number or boolean, is refused with its line; a value its flag does
//! not accept is refused by that flag's parser, naming the flag.

use std::ffi::OsString;
use std::path::{Path, PathBuf};

use anyhow::Context;
use clap::{CommandFactory, FromArgMatches};

use crate::cli::Cli;

/// The flags of `serve` the file cannot hold.
const NOT_IN_FILE: [&str; 3] = ["config", "help", "version"];

/// Parses the command line (and the config file it names), exiting on errors and `--help`
/// as clap does.
pub fn parse() -> Cli {
    let args: Vec<OsString> = std::env::args_os().collect();
    let config = std::env::var_os("AEMOS_CONFIG");
    match parse_from(args, config) {
        Ok(cli) => cli,
        Err(e) => match e.downcast::<clap::Error>() {
            Ok(clap_error) => clap_error.exit(),
            Err(e) => {
                eprintln!("error: {e:#}");
                std::process::exit(2);
            }
        },
    }
}

/// [`parse`] over given arguments and `AEMOS_CONFIG`.
pub fn parse_from(args: Vec<OsString>, env_config: Option<OsString>) -> anyhow::Result<Cli> {
    let Some(path) = config_path(&args, env_config) else {
        return Ok(<Cli as clap::Parser>::try_parse_from(args)?);
    };
    let text = std::fs::read_to_string(&path)
        .with_context(|| format!("reading --config {}", path.display()))?;
    let command = with_defaults(Cli::command(), &path, &text)?;
    let matches = command.try_get_matches_from(args)?;
    Ok(Cli::from_arg_matches(&matches)?)
}

/// `--config` of the `serve` subcommand, or `AEMOS_CONFIG` when `serve` runs without it.
fn config_path(args: &[OsString], env_config: Option<OsString>) -> Option<PathBuf> {
    let mut rest = args.iter().skip(1);
    // The subcommand: the first word that is neither a flag nor the global flag's value.
    loop {
        let word = rest.next()?.to_str()?;
        if word == "--log-format" {
            rest.next();
        } else if !word.starts_with('-') {
            if word != "serve" {
                return None;
            }
            break;
        }
    }
    while let Some(word) = rest.next() {
        let word = word.to_str().unwrap_or_default();
        if word == "--" {
            break;
        }
        if word == "--config" {
            return rest.next().map(PathBuf::from);
        }
        if let Some(path) = word.strip_prefix("--config=") {
            return Some(PathBuf::from(path));
        }
    }
    env_config.map(PathBuf::from)
}

/// The command with the file's values as the defaults of `serve`'s flags.
fn with_defaults(command: clap::Command, path: &Path, text: &str) -> anyhow::Result<clap::Command> {
    let table: toml::Table =
        toml::from_str(text).with_context(|| format!("--config {}", path.display()))?;
    let serve = command
        .find_subcommand("serve")
        .expect("serve is a subcommand")
        .clone();
    let mut defaults = Vec::with_capacity(table.len());
    for (key, value) in &table {
        let line = line_of(text, key);
        let arg = serve
            .get_arguments()
            .find(|a| a.get_long() == Some(key.as_str()) && !NOT_IN_FILE.contains(&key.as_str()))
            .with_context(|| {
                format!(
                    "--config {}, line {line}: {key:?} is not a flag of `aemos serve` (see `aemos serve --help`)",
                    path.display()
                )
            })?;
        let value = match value {
            toml::Value::String(s) => s.clone(),
            toml::Value::Integer(i) => i.to_string(),
            toml::Value::Float(f) => f.to_string(),
            toml::Value::Boolean(b) => b.to_string(),
            other => anyhow::bail!(
                "--config {}, line {line}: {key} is a {}; give a string, number or boolean",
                path.display(),
                other.type_str()
            ),
        };
        defaults.push((arg.get_id().clone(), value));
    }
    Ok(command.mut_subcommand("serve", move |mut serve| {
        for (id, value) in defaults {
            // clap keeps defaults as `&'static str`: the file is read once per process.
            let value: &'static str = Box::leak(value.into_boxed_str());
            serve = serve.mut_arg(id, |a| a.default_value(value));
        }
        serve
    }))
}

/// The line (from 1) where `key` is set, for error messages.
fn line_of(text: &str, key: &str) -> usize {
    text.lines()
        .position(|l| {
            let l = l.trim_start();
            l.strip_prefix(key)
                .or_else(|| l.strip_prefix(&format!("\"{key}\"")))
                .is_some_and(|rest| rest.trim_start().starts_with('='))
        })
        .map_or(0, |i| i + 1)
}

#[cfg(test)]
mod tests;
