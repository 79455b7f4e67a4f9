//! Client subcommands (`tributary topics`, `tributary consume`): talk to a running
//! collector's HTTP API and print JSON lines (or `--output text`).

use std::io::Write;
use std::time::Duration;

use clap::ValueEnum;
use serde_json::Value;

use crate::client::{ApiClient, ClientError};

/// How records are printed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, ValueEnum, Default)]
pub enum Output {
    /// One JSON object per line.
    #[default]
    Json,
    /// `timestamp host source message`.
    Text,
}

#[derive(Debug, thiserror::Error)]
pub enum CliError {
    #[error(transparent)]
    Client(#[from] ClientError),
    #[error("{0}")]
    Usage(String),
    #[error("writing output: {0}")]
    Output(std::io::Error),
}

const TIMEOUT: Duration = Duration::from_secs(60);

/// Print one record in the chosen format.
pub fn print_record(out: &mut impl Write, record: &Value, format: Output) -> std::io::Result<()> {
    match format {
        Output::Json => {
            serde_json::to_writer(&mut *out, record)?;
            out.write_all(b"\n")
        }
        Output::Text => {
            let s = |k: &str| {
                record
                    .get(k)
                    .and_then(Value::as_str)
                    .unwrap_or("-")
                    .to_owned()
            };
            writeln!(
                out,
                "{} {} {} {}",
                s("timestamp"),
                s("host"),
                s("source"),
                s("message")
            )
        }
    }
}

/// `tributary topics`
pub async fn topics(api: &ApiClient, format: Output) -> Result<(), CliError> {
    let v = api.get_json("/v1/topics", TIMEOUT).await?;
    let mut out = std::io::stdout().lock();
    match format {
        Output::Json => {
            for t in v.as_array().into_iter().flatten() {
                print_record(&mut out, t, Output::Json).map_err(CliError::Output)?;
            }
        }
        Output::Text => {
            writeln!(
                out,
                "{:<30} {:>9} {:>14} {:>14} {:>14}",
                "TOPIC", "PARTITION", "START", "END", "BYTES"
            )
            .map_err(CliError::Output)?;
            for t in v.as_array().into_iter().flatten() {
                let name = t.get("name").and_then(Value::as_str).unwrap_or("?");
                for p in t
                    .get("partitions")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let n = |k: &str| p.get(k).and_then(Value::as_u64).unwrap_or(0);
                    writeln!(
                        out,
                        "{:<30} {:>9} {:>14} {:>14} {:>14}",
                        name,
                        n("partition"),
                        n("start_offset"),
                        n("end_offset"),
                        n("bytes")
                    )
                    .map_err(CliError::Output)?;
                }
            }
        }
    }
    out.flush().map_err(CliError::Output)
}

/// Options of `tributary consume`.
#[derive(Debug, Clone)]
pub struct ConsumeArgs {
    pub topic: String,
    pub partition: Option<u32>,
    pub offset: String,
    pub max: Option<u64>,
    pub follow: bool,
    pub output: Output,
}

/// Partition numbers of `topic`.
pub async fn partitions_of(api: &ApiClient, topic: &str) -> Result<Vec<u32>, CliError> {
    let v = api.get_json("/v1/topics", TIMEOUT).await?;
    let t = v
        .as_array()
        .and_then(|a| {
            a.iter()
                .find(|t| t.get("name").and_then(Value::as_str) == Some(topic))
        })
        .ok_or_else(|| CliError::Usage(format!("topic `{topic}` does not exist")))?;
    Ok(t.get("partitions")
        .and_then(Value::as_array)
        .map(|ps| {
            ps.iter()
                .filter_map(|p| p.get("partition").and_then(Value::as_u64))
                .map(|p| p as u32)
                .collect()
        })
        .unwrap_or_default())
}

/// `tributary consume`: read records by offset from one partition or all of them.
pub async fn consume(api: &ApiClient, args: &ConsumeArgs) -> Result<(), CliError> {
    match args.offset.as_str() {
        "earliest" | "latest" => {}
        s if s.parse::<u64>().is_ok() => {}
        s => {
            return Err(CliError::Usage(format!(
                "--offset must be earliest, latest or a number, not `{s}`"
            )));
        }
    }
    let parts = match args.partition {
        Some(p) => vec![p],
        None => partitions_of(api, &args.topic).await?,
    };
    let mut offsets: Vec<String> = vec![args.offset.clone(); parts.len()];
    let mut remaining = args.max.unwrap_or(u64::MAX);
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    // With one partition, long-poll it; with several, share the wait among them.
    let wait_ms = if args.follow {
        1000 / parts.len().max(1) as u64
    } else {
        0
    };
    while remaining > 0 {
        let mut got_any = false;
        for (i, p) in parts.iter().enumerate() {
            let max = remaining.min(1000);
            let path = format!(
                "/v1/topics/{}/partitions/{p}/records?offset={}&max={max}&wait_ms={wait_ms}",
                args.topic, offsets[i]
            );
            let v = api.get_json(&path, TIMEOUT).await?;
            let records = v
                .get("records")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for r in &records {
                print_record(&mut out, r, args.output).map_err(CliError::Output)?;
                remaining -= 1;
                if remaining == 0 {
                    break;
                }
            }
            if let Some(next) = v.get("next_offset").and_then(Value::as_u64) {
                offsets[i] = next.to_string();
            }
            got_any |= !records.is_empty();
            if remaining == 0 {
                break;
            }
        }
        out.flush().map_err(CliError::Output)?;
        if !got_any && !args.follow {
            break;
        }
    }
    out.flush().map_err(CliError::Output)
}
