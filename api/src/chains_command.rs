//! `aemos chains apply FILE.json`: PUTs each chain of the file to a running server, which
//! registers it or replaces the chain with the same id.

use anyhow::{bail, Context};
use serde_json::Value;

use crate::cli::ChainsApplyArgs;

pub async fn apply(args: ChainsApplyArgs) -> anyhow::Result<()> {
    let text = std::fs::read_to_string(&args.file)
        .with_context(|| format!("reading {}", args.file.display()))?;
    let doc: Value = serde_json::from_str(&text)
        .with_context(|| format!("{} is not JSON", args.file.display()))?;
    let chains = match doc {
        Value::Array(items) => items,
        one => vec![one],
    };
    let client = reqwest::Client::new();
    let mut failed = 0;
    for (i, chain) in chains.iter().enumerate() {
        let Some(id) = chain.get("id").and_then(Value::as_str) else {
            eprintln!("chain {i}: no \"id\"");
            failed += 1;
            continue;
        };
        let url = format!(
            "{}/api/v1/rulechains/{}",
            args.url.trim_end_matches('/'),
            urlencode(id)
        );
        let res = client
            .put(&url)
            .json(chain)
            .send()
            .await
            .with_context(|| format!("PUT {url}"))?;
        let status = res.status();
        let body = res.text().await.unwrap_or_default();
        match status.as_u16() {
            201 => println!("{id}: created"),
            200 => println!("{id}: replaced"),
            _ => {
                eprintln!("{id}: {status} {body}");
                failed += 1;
            }
        }
    }
    if failed > 0 {
        bail!("{failed} of {} chains were refused", chains.len());
    }
    Ok(())
}

/// Percent-encodes an id for a path segment.
fn urlencode(id: &str) -> String {
    id.bytes()
        .map(|b| match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'~' => {
                (b as char).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}
