use std::ffi::OsString;

use super::*;
use crate::cli::{Command, ServeArgs};

/// The example configuration, with every `serve` flag at its default.
const EXAMPLE: &str = concat!(env!("CARGO_MANIFEST_DIR"), "/../deploy/aemos.toml");

fn args(words: &[&str]) -> Vec<OsString> {
    std::iter::once("aemos")
        .chain(words.iter().copied())
        .map(OsString::from)
        .collect()
}

fn serve(cli: Cli) -> ServeArgs {
    match cli.command {
        Command::Serve(args) => *args,
        other => panic!("not serve: {other:?}"),
    }
}

fn file(text: &str) -> (tempfile::TempDir, String) {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("aemos.toml");
    std::fs::write(&path, text).unwrap();
    (dir, path.to_str().unwrap().to_owned())
}

#[test]
fn the_file_sets_defaults_and_flags_override_it() {
    let (_dir, path) = file(
        "# a comment\nhttp-addr = \"0.0.0.0:3100\"\npersist-rows = 1234\nretention = \"30d\"\nmqtt5-addr = \"off\"\n",
    );
    let from_file = serve(parse_from(args(&["serve", "--config", &path]), None).unwrap());
    assert_eq!(from_file.http_addr.to_string(), "0.0.0.0:3100");
    assert_eq!(from_file.persist_rows, 1234);
    assert_eq!(from_file.mqtt5_addr.0, None);
    let overridden = serve(
        parse_from(
            args(&["serve", &format!("--config={path}"), "--persist-rows", "99"]),
            None,
        )
        .unwrap(),
    );
    assert_eq!(overridden.persist_rows, 99);
    assert_eq!(overridden.http_addr.to_string(), "0.0.0.0:3100");
    // `AEMOS_CONFIG` names the file when the flag does not.
    let from_env = serve(parse_from(args(&["serve"]), Some(path.clone().into())).unwrap());
    assert_eq!(from_env.persist_rows, 1234);
    // Another subcommand ignores `AEMOS_CONFIG`.
    assert!(parse_from(args(&["sql", "SELECT 1"]), Some(path.into())).is_ok());
}

#[test]
fn the_environment_overrides_the_file() {
    // nextest runs each test in its own process: the variable reaches no other test.
    std::env::set_var("AEMOS_PERSIST_ROWS", "77");
    let (_dir, path) = file("persist-rows = 1234\n");
    let args = serve(parse_from(args(&["serve", "--config", &path]), None).unwrap());
    std::env::remove_var("AEMOS_PERSIST_ROWS");
    assert_eq!(args.persist_rows, 77);
}

#[test]
fn bad_files_are_refused_with_the_key_and_line() {
    let refused = |text: &str| {
        let (_dir, path) = file(text);
        format!(
            "{:#}",
            parse_from(args(&["serve", "--config", &path]), None).unwrap_err()
        )
    };
    let unknown = refused("retention = \"30d\"\nhttp-adr = \"0.0.0.0:1\"\n");
    assert!(
        unknown.contains("line 2") && unknown.contains("\"http-adr\" is not a flag"),
        "{unknown}"
    );
    let config = refused("config = \"other.toml\"\n");
    assert!(config.contains("\"config\" is not a flag"), "{config}");
    let array = refused("\n\nretention = [\"30d\"]\n");
    assert!(
        array.contains("line 3") && array.contains("retention is a array"),
        "{array}"
    );
    let syntax = refused("retention = \n");
    assert!(syntax.contains("line 1"), "{syntax}");
    // A value its flag refuses: the flag's own parser says why.
    let value = refused("retention = \"ninety days\"\n");
    assert!(value.contains("--retention"), "{value}");
    let missing = format!(
        "{:#}",
        parse_from(
            args(&["serve", "--config", "/nonexistent/aemos.toml"]),
            None
        )
        .unwrap_err()
    );
    assert!(missing.contains("/nonexistent/aemos.toml"), "{missing}");
}

/// The example file: each flag's help as a comment, then `key = default` (commented out when
/// the flag has no default).
fn example() -> String {
    let command = Cli::command();
    let serve = command.find_subcommand("serve").unwrap();
    let mut out = String::from(
        "# aemos serve --config aemos.toml: every flag of `aemos serve`, at its default.\n\
         # Keys are the flags' long names; flags and AEMOS_* variables override the file.\n\
         # Generated from the flags by `AEMOS_WRITE_EXAMPLE_CONFIG=1 cargo nextest run -E\n\
         # 'test(example_config)'`; a test fails when it falls behind them.\n",
    );
    for arg in serve.get_arguments() {
        let Some(long) = arg.get_long() else { continue };
        if NOT_IN_FILE.contains(&long) {
            continue;
        }
        out.push('\n');
        let help = arg
            .get_long_help()
            .or(arg.get_help())
            .map(|h| h.to_string())
            .unwrap_or_default();
        for line in help.lines() {
            out.push_str(&format!("# {line}\n").replace("# \n", "#\n"));
        }
        if let Some(env) = arg.get_env() {
            out.push_str(&format!("# (environment: {})\n", env.to_string_lossy()));
        }
        match arg.get_default_values().first() {
            Some(value) => {
                let value = value.to_string_lossy();
                let bare = value.parse::<i64>().is_ok() || value == "true" || value == "false";
                if bare {
                    out.push_str(&format!("{long} = {value}\n"));
                } else {
                    out.push_str(&format!("{long} = {value:?}\n"));
                }
            }
            None => out.push_str(&format!("# {long} = \"\"\n")),
        }
    }
    out
}

#[test]
fn example_config_is_current_and_loads_as_the_defaults() {
    let want = example();
    if std::env::var_os("AEMOS_WRITE_EXAMPLE_CONFIG").is_some() {
        std::fs::write(EXAMPLE, &want).unwrap();
    }
    let have = std::fs::read_to_string(EXAMPLE).unwrap_or_default();
    assert!(
        have == want,
        "deploy/aemos.toml is behind the flags: regenerate it with AEMOS_WRITE_EXAMPLE_CONFIG=1"
    );
    let mut from_file = serve(parse_from(args(&["serve", "--config", EXAMPLE]), None).unwrap());
    from_file.config = None;
    let defaults = serve(parse_from(args(&["serve"]), None).unwrap());
    assert_eq!(format!("{from_file:?}"), format!("{defaults:?}"));
}
