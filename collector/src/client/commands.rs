//! Client subcommands (`tributary topics`, `consume`, `query`, `groups`): talk to a
//! running collector's HTTP API and print JSON lines (or `--output text`).

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
    /// Records: `timestamp host source: message` (syslog: `appname[procid]
    /// severity`); topics and groups: a table.
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

/// `--api`: where the collector's HTTP API is (every client command).
#[derive(Debug, Clone, clap::Args)]
pub struct ApiArg {
    /// Collector API base URL.
    #[arg(
        long = "api",
        env = "TRIBUTARY_API",
        default_value = "http://127.0.0.1:7401"
    )]
    pub url: String,
    /// Bearer token for a collector with api.auth (`tributary token add` makes one).
    #[arg(long, env = "TRIBUTARY_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// CA certificate that signed the collector's api.tls certificate (for https://).
    #[arg(long, env = "TRIBUTARY_CA", value_name = "FILE")]
    pub ca: Option<std::path::PathBuf>,
}

impl ApiArg {
    pub fn client(&self) -> Result<ApiClient, ClientError> {
        ApiClient::new(&self.url)?
            .with_token(self.token.clone())
            .with_ca(self.ca.as_deref())
    }
}

/// Print one record in the chosen format.
pub fn print_record(out: &mut impl Write, record: &Value, format: Output) -> std::io::Result<()> {
    match format {
        Output::Json => {
            serde_json::to_writer(&mut *out, record)?;
            out.write_all(b"\n")
        }
        Output::Text => {
            out.write_all(text_line(record).as_bytes())?;
            out.write_all(b"\n")
        }
    }
}

/// A record as one line for people, the way syslog and `journalctl` print:
/// `2026-12-04T15:29:27.484Z web-01 app.log: GET /health 200` for a file line (the
/// file's name; the full path is in the JSON), `… web-01 sshd[812] err: …` for
/// syslog. Pieces of a split line end with ` […]`.
pub fn text_line(record: &Value) -> String {
    let s = |k: &str| record.get(k).and_then(Value::as_str).unwrap_or("-");
    let fields = record.get("fields");
    let field = |k: &str| {
        fields
            .and_then(|f| f.get(k))
            .and_then(|v| match v {
                Value::String(s) => Some(s.clone()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            })
            .filter(|v| !v.is_empty())
    };
    let source = s("source");
    let mut origin = match field("appname") {
        Some(app) => match field("procid") {
            Some(pid) => format!("{app}[{pid}]"),
            None => app,
        },
        None if source.starts_with('/') => source
            .rsplit('/')
            .next()
            .filter(|n| !n.is_empty())
            .unwrap_or(source)
            .to_owned(),
        None => source.to_owned(),
    };
    if let Some(sev) = field("severity") {
        origin.push(' ');
        origin.push_str(&sev);
    }
    let mut line = format!(
        "{} {} {origin}: {}",
        s("timestamp"),
        s("host"),
        s("message")
    );
    if record.get("partial").and_then(Value::as_bool) == Some(true) {
        line.push_str(" […]");
    }
    line
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
#[derive(Debug, Clone, clap::Args)]
pub struct ConsumeArgs {
    #[arg(long)]
    pub topic: String,
    /// Partition to read; default: all partitions.
    #[arg(long)]
    pub partition: Option<u32>,
    /// earliest, latest or an offset number.
    #[arg(long, default_value = "earliest")]
    pub offset: String,
    /// Stop after this many records.
    #[arg(long)]
    pub max: Option<u64>,
    /// Keep waiting for new records.
    #[arg(long)]
    pub follow: bool,
    #[arg(long, value_enum, default_value_t = Output::Json)]
    pub output: Output,
    /// Consumer group: start at its committed offsets (--offset where it has
    /// none) and commit what was printed.
    #[arg(long)]
    pub group: Option<String>,
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
    let mut from_group = vec![false; parts.len()];
    if let Some(g) = &args.group {
        // Committed offsets win; partitions the group never committed use --offset.
        let committed = group_offsets(api, g).await?;
        for (i, p) in parts.iter().enumerate() {
            if let Some(o) = committed.get(&(args.topic.clone(), *p)) {
                offsets[i] = o.to_string();
                from_group[i] = true;
            }
        }
    }
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
            let v = match api.get_json(&path, TIMEOUT).await {
                // The group's offset was deleted by retention meanwhile: go on from
                // the earliest record still there (Kafka's auto.offset.reset).
                Err(ClientError::Status { status: 416, .. }) if from_group[i] => {
                    eprintln!(
                        "tributary: partition {p}: the group's offset {} was deleted by retention; continuing at the earliest record",
                        offsets[i]
                    );
                    offsets[i] = "earliest".into();
                    from_group[i] = false;
                    got_any = true;
                    continue;
                }
                r => r?,
            };
            let records = v
                .get("records")
                .and_then(Value::as_array)
                .cloned()
                .unwrap_or_default();
            for r in records.iter().take(max as usize) {
                print_record(&mut out, r, args.output).map_err(CliError::Output)?;
                remaining -= 1;
            }
            let printed = records.len().min(max as usize);
            let next = if printed < records.len() {
                // Stopped inside this answer (--max): continue after the last printed.
                records[printed - 1]
                    .get("offset")
                    .and_then(Value::as_u64)
                    .map(|o| o + 1)
            } else {
                v.get("next_offset").and_then(Value::as_u64)
            };
            if let Some(next) = next {
                if let Some(g) = &args.group
                    && printed > 0
                {
                    // Commit only what is out: flush first.
                    out.flush().map_err(CliError::Output)?;
                    commit(api, g, &args.topic, *p, next).await?;
                }
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

/// `/v1/...` path segment: group and topic names are restricted to
/// `[A-Za-z0-9._-]`, so anything else is refused here with the API's rule.
fn name_segment(kind: &str, name: &str) -> Result<String, CliError> {
    let valid = if kind == "group" {
        crate::storage::groups::valid_group_name(name)
    } else {
        tributary_common::names::valid_topic_name(name)
    };
    if valid {
        Ok(name.to_owned())
    } else {
        Err(CliError::Usage(format!(
            "invalid {kind} name {name:?}: use 1-249 characters from [A-Za-z0-9._-]"
        )))
    }
}

/// A group's committed offsets: (topic, partition) → offset.
pub async fn group_offsets(
    api: &ApiClient,
    group: &str,
) -> Result<std::collections::HashMap<(String, u32), u64>, CliError> {
    let g = name_segment("group", group)?;
    let v = api
        .get_json(&format!("/v1/groups/{g}/offsets"), TIMEOUT)
        .await?;
    Ok(v.get("offsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|o| {
            Some((
                (
                    o.get("topic")?.as_str()?.to_owned(),
                    u32::try_from(o.get("partition")?.as_u64()?).ok()?,
                ),
                o.get("offset")?.as_u64()?,
            ))
        })
        .collect())
}

async fn commit(
    api: &ApiClient,
    group: &str,
    topic: &str,
    partition: u32,
    offset: u64,
) -> Result<(), CliError> {
    let g = name_segment("group", group)?;
    let body = serde_json::json!({"topic": topic, "partition": partition, "offset": offset});
    api.post_json(&format!("/v1/groups/{g}/offsets"), &body, TIMEOUT)
        .await?;
    Ok(())
}

/// `tributary groups [GROUP]`: committed offsets and lag.
pub async fn groups(api: &ApiClient, group: Option<&str>, format: Output) -> Result<(), CliError> {
    let list: Vec<Value> = match group {
        Some(g) => {
            let g = name_segment("group", g)?;
            let v = api
                .get_json(&format!("/v1/groups/{g}/offsets"), TIMEOUT)
                .await?;
            if v.get("offsets")
                .and_then(Value::as_array)
                .is_none_or(|o| o.is_empty())
            {
                let all = api.get_json("/v1/groups", TIMEOUT).await?;
                let names: Vec<&str> = all
                    .as_array()
                    .into_iter()
                    .flatten()
                    .filter_map(|g| g.get("group").and_then(Value::as_str))
                    .collect();
                let known = if names.is_empty() {
                    "there are no groups yet: `tributary consume --group NAME` creates one".into()
                } else {
                    format!("groups: {}", names.join(", "))
                };
                return Err(CliError::Usage(format!(
                    "no consumer group `{g}` (it has committed no offset; {known})"
                )));
            }
            vec![v]
        }
        None => api
            .get_json("/v1/groups", TIMEOUT)
            .await?
            .as_array()
            .cloned()
            .unwrap_or_default(),
    };
    let mut out = std::io::stdout().lock();
    match format {
        Output::Json => {
            for g in &list {
                print_record(&mut out, g, Output::Json).map_err(CliError::Output)?;
            }
        }
        Output::Text => {
            writeln!(
                out,
                "{:<24} {:<24} {:>9} {:>14} {:>14} {:>10}",
                "GROUP", "TOPIC", "PARTITION", "COMMITTED", "END", "LAG"
            )
            .map_err(CliError::Output)?;
            for g in &list {
                let name = g.get("group").and_then(Value::as_str).unwrap_or("?");
                for o in g
                    .get("offsets")
                    .and_then(Value::as_array)
                    .into_iter()
                    .flatten()
                {
                    let n = |k: &str| o.get(k).and_then(Value::as_u64).unwrap_or(0);
                    writeln!(
                        out,
                        "{:<24} {:<24} {:>9} {:>14} {:>14} {:>10}",
                        name,
                        o.get("topic").and_then(Value::as_str).unwrap_or("?"),
                        n("partition"),
                        n("offset"),
                        n("end_offset"),
                        n("lag")
                    )
                    .map_err(CliError::Output)?;
                }
            }
        }
    }
    out.flush().map_err(CliError::Output)
}

/// The filters of `tributary query`: the API's [`QueryParams`] as flags.
///
/// [`QueryParams`]: crate::api::query::QueryParams
#[derive(Debug, Clone, clap::Args)]
pub struct QueryFlags {
    #[arg(long)]
    pub topic: String,
    /// From: a duration back from now (15m, 2h, 7d; also -15m), a date or
    /// date and time (2026-12-04, 2026-12-04T10:00: local time unless it has Z or
    /// +hh:mm), or epoch ms.
    #[arg(long, allow_hyphen_values = true)]
    pub since: Option<String>,
    /// Until (inclusive), same forms as --since.
    #[arg(long, allow_hyphen_values = true)]
    pub until: Option<String>,
    /// Exact host.
    #[arg(long)]
    pub host: Option<String>,
    /// Glob over the source (file path or syslog+udp://IP).
    #[arg(long)]
    pub source: Option<String>,
    /// This severity or more severe (syslog names: emerg … debug).
    #[arg(long)]
    pub severity: Option<String>,
    /// Substring of the message.
    #[arg(long, visible_alias = "contains")]
    pub grep: Option<String>,
    /// Regular expression over the message.
    #[arg(long)]
    pub regex: Option<String>,
    /// At most this many records (1-10000).
    #[arg(long, default_value_t = 100)]
    pub limit: usize,
    /// asc | desc by timestamp.
    #[arg(long, default_value = "asc")]
    pub order: String,
    /// A field's value: KEY=VALUE (dotted keys for nested fields); repeatable.
    #[arg(long = "field", value_name = "KEY=VALUE")]
    pub fields: Vec<String>,
}

impl QueryFlags {
    pub fn params(&self) -> crate::api::query::QueryParams {
        crate::api::query::QueryParams {
            topic: Some(self.topic.clone()),
            since: self.since.clone(),
            until: self.until.clone(),
            host: self.host.clone(),
            source: self.source.clone(),
            severity: self.severity.clone(),
            contains: self.grep.clone(),
            regex: self.regex.clone(),
            limit: Some(self.limit.to_string()),
            order: Some(self.order.clone()),
            extra: self
                .fields
                .iter()
                .map(|f| {
                    let (k, v) = f.split_once('=').unwrap_or((f.as_str(), ""));
                    (format!("field.{k}"), v.to_owned())
                })
                .collect(),
        }
    }
}

/// Options of `tributary query`.
#[derive(Debug, Clone, clap::Args)]
pub struct QueryArgs {
    #[command(flatten)]
    pub filter: QueryFlags,
    /// Then keep printing matching records as they arrive.
    #[arg(long)]
    pub follow: bool,
    #[arg(long, value_enum, default_value_t = Output::Json)]
    pub output: Output,
}

/// `tributary query`: one `/v1/query`, then with `--follow` the records that arrive
/// later, filtered here with the same [`Filter`](crate::api::query::Filter).
pub async fn query(api: &ApiClient, args: &QueryArgs) -> Result<(), CliError> {
    let params = args.filter.params();
    let p = &params;
    if args.follow && (p.order.as_deref() == Some("desc") || p.until.is_some()) {
        return Err(CliError::Usage(
            "--follow prints new records as they arrive: it goes with --order asc and no --until"
                .into(),
        ));
    }
    // Times people type (a date, a local time, `-15m`) become what the API takes.
    let mut p = p.clone();
    for (name, v) in [("--since", &mut p.since), ("--until", &mut p.until)] {
        if let Some(t) = v.as_deref() {
            *v = Some(local_time(t).map_err(|e| CliError::Usage(format!("bad {name}: {e}")))?);
        }
    }
    let p = &p;
    let now = tributary_common::timefmt::now_ms();
    // Checked here too, for the follow filter and a clear message before any request.
    let filter =
        crate::api::query::Filter::parse(p, now).map_err(|e| CliError::Usage(e.to_string()))?;
    let qs = serde_urlencoded::to_string(p)
        .map_err(|e| CliError::Usage(format!("cannot encode the query: {e}")))?;
    let v = api
        .get_json(
            &format!("/v1/query?{qs}"),
            crate::api::query::DEFAULT_DEADLINE + TIMEOUT,
        )
        .await?;
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let records = v
        .get("records")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    for r in records {
        print_record(&mut out, r, args.output).map_err(CliError::Output)?;
    }
    out.flush().map_err(CliError::Output)?;
    if v.get("complete").and_then(Value::as_bool) == Some(false) {
        eprintln!(
            "tributary: the query stopped at its time limit after {} match(es); narrow it (--since/--until, filters) for the rest",
            records.len()
        );
    } else if let Some(limit) = p.limit.as_deref().and_then(|l| l.parse::<usize>().ok())
        && records.len() >= limit
        && !args.follow
    {
        eprintln!(
            "tributary: showing the first {limit} matches; there may be more: raise --limit (up to {}) or narrow --since/--until",
            crate::api::query::MAX_LIMIT
        );
    }
    if !args.follow {
        return Ok(());
    }
    let topic = p.topic.clone().unwrap_or_default();
    let topic = name_segment("topic", &topic)?;
    let mut from: Vec<(u64, u64)> = v
        .get("end_offsets")
        .and_then(Value::as_array)
        .into_iter()
        .flatten()
        .filter_map(|e| Some((e.get("partition")?.as_u64()?, e.get("offset")?.as_u64()?)))
        .collect();
    let wait_ms = 1000 / from.len().max(1) as u64;
    loop {
        for (part, offset) in from.iter_mut() {
            let v = api
                .get_json(
                    &format!(
                        "/v1/topics/{topic}/partitions/{part}/records?offset={offset}&max=1000&wait_ms={wait_ms}"
                    ),
                    TIMEOUT,
                )
                .await?;
            for r in v
                .get("records")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
            {
                if json_matches(&filter, r) {
                    print_record(&mut out, r, args.output).map_err(CliError::Output)?;
                }
            }
            if let Some(next) = v.get("next_offset").and_then(Value::as_u64) {
                *offset = next;
            }
        }
        out.flush().map_err(CliError::Output)?;
    }
}

/// `--since`/`--until` as typed → what the API takes: relative times (`15m`, also
/// `-15m`) and epoch milliseconds pass; a date (`2026-12-04`, local midnight) or a
/// date and time without a zone (`2026-12-04T10:00`, `2026-12-04 10:00:05`) is local
/// time on this machine and becomes RFC 3339 with its offset; with a zone it passes.
pub fn local_time(s: &str) -> Result<String, String> {
    use chrono::{Local, NaiveDate, NaiveDateTime, TimeZone};
    let s = s.trim();
    if let Some(rel) = s.strip_prefix('-')
        && rel.starts_with(|c: char| c.is_ascii_digit())
        && rel.ends_with(|c: char| c.is_ascii_alphabetic())
    {
        return Ok(rel.to_owned());
    }
    let naive = if let Ok(d) = NaiveDate::parse_from_str(s, "%Y-%m-%d") {
        d.and_hms_opt(0, 0, 0)
    } else {
        let t = s.replacen(' ', "T", 1);
        ["%Y-%m-%dT%H:%M:%S%.f", "%Y-%m-%dT%H:%M"]
            .iter()
            .find_map(|f| NaiveDateTime::parse_from_str(&t, f).ok())
    };
    let Some(naive) = naive else {
        return Ok(s.to_owned());
    };
    match Local.from_local_datetime(&naive) {
        chrono::LocalResult::Single(t) | chrono::LocalResult::Ambiguous(t, _) => {
            Ok(t.to_rfc3339_opts(chrono::SecondsFormat::Millis, false))
        }
        chrono::LocalResult::None => Err(format!(
            "`{s}` does not exist in this machine's time zone (a daylight-saving gap): add Z or +hh:mm"
        )),
    }
}

/// Apply `filter` to a record as the API prints it.
fn json_matches(filter: &crate::api::query::Filter, r: &Value) -> bool {
    let s = |k: &str| r.get(k).and_then(Value::as_str).unwrap_or("");
    let ts = tributary_common::timefmt::parse_ms(s("timestamp")).unwrap_or(0);
    let fields = r
        .get("fields")
        .map(|f| serde_json::to_vec(f).unwrap_or_default())
        .unwrap_or_default();
    filter.matches_parts(
        ts,
        s("host"),
        s("source"),
        s("message").as_bytes(),
        b"",
        &fields,
    )
}
