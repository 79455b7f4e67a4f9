//! `tributary`: the collector and its client commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tributary_collector::client::ApiClient;
use tributary_collector::client::commands::{self as cli, ConsumeArgs, Output};
use tributary_collector::config::CollectorConfig;
use tributary_collector::server::Collector;

/// Tributary collector: stores logs shipped by agents in partitioned topics and serves them.
#[derive(Parser)]
#[command(name = "tributary", version, about)]
struct Args {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the collector.
    Serve {
        /// Path of collector.yaml.
        #[arg(long, short, default_value = "/etc/tributary/collector.yaml")]
        config: PathBuf,
        /// Validate the configuration (syntax, keys, certificates), check that
        /// data_dir is writable and free and the listen addresses can be bound, and
        /// exit: 0 when valid, 2 when the config does not load, 1 for host problems.
        #[arg(long)]
        check_config: bool,
    },
    /// Run a collector and an agent together on localhost with dev certificates.
    Quickstart {
        /// Where certificates, configs, data and the demo log go.
        #[arg(long, default_value = tributary_collector::setup::quickstart::DATA_DIR)]
        dir: PathBuf,
        /// Ingest port on 127.0.0.1 (agents, TLS).
        #[arg(long, default_value_t = 7400)]
        ingest_port: u16,
        /// HTTP API port on 127.0.0.1.
        #[arg(long, default_value_t = 7401)]
        api_port: u16,
    },
    /// Write a CA, a collector certificate and an agent certificate (PEM) into a directory.
    Certs {
        /// Output directory.
        #[arg(long, default_value = "certs")]
        out: PathBuf,
        /// Names and addresses the collector certificate is valid for (comma-separated).
        #[arg(long, value_delimiter = ',')]
        hosts: Vec<String>,
        /// Issue one more agent certificate, `<NAME>.pem`/`.key`, from the CA already
        /// in --out (one certificate per host).
        #[arg(long, value_name = "NAME", conflicts_with = "hosts")]
        agent: Option<String>,
        /// Replace a CA that --out already holds (every existing certificate stops
        /// working).
        #[arg(long)]
        force: bool,
    },
    /// List topics and their partitions.
    Topics {
        #[command(flatten)]
        api: ApiArg,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Print records of a topic by offset.
    Consume {
        #[command(flatten)]
        api: ApiArg,
        #[arg(long)]
        topic: String,
        /// Partition to read; default: all partitions.
        #[arg(long)]
        partition: Option<u32>,
        /// earliest, latest or an offset number.
        #[arg(long, default_value = "earliest")]
        offset: String,
        /// Stop after this many records.
        #[arg(long)]
        max: Option<u64>,
        /// Keep waiting for new records.
        #[arg(long)]
        follow: bool,
        /// Consumer group: start at its committed offsets (--offset where it has
        /// none) and commit what was printed.
        #[arg(long)]
        group: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Search a topic: records matching every filter, across partitions by time.
    Query {
        #[command(flatten)]
        api: ApiArg,
        #[arg(long)]
        topic: String,
        /// From: a duration back from now (15m, 2h, 7d; also -15m), a date or
        /// date and time (2026-12-04, 2026-12-04T10:00: local time unless it has Z or
        /// +hh:mm), or epoch ms.
        #[arg(long, allow_hyphen_values = true)]
        since: Option<String>,
        /// Until (inclusive), same forms as --since.
        #[arg(long, allow_hyphen_values = true)]
        until: Option<String>,
        /// Exact host.
        #[arg(long)]
        host: Option<String>,
        /// Glob over the source (file path or syslog+udp://IP).
        #[arg(long)]
        source: Option<String>,
        /// This severity or more severe (syslog names: emerg … debug).
        #[arg(long)]
        severity: Option<String>,
        /// Substring of the message.
        #[arg(long, visible_alias = "contains")]
        grep: Option<String>,
        /// Regular expression over the message.
        #[arg(long)]
        regex: Option<String>,
        /// At most this many records (1-10000).
        #[arg(long, default_value_t = 100)]
        limit: usize,
        /// asc | desc by timestamp.
        #[arg(long, default_value = "asc")]
        order: String,
        /// Then keep printing matching records as they arrive.
        #[arg(long)]
        follow: bool,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
    /// Consumer groups: committed offsets, end offsets and lag.
    Groups {
        #[command(flatten)]
        api: ApiArg,
        /// One group; default: all.
        group: Option<String>,
        #[arg(long, value_enum, default_value_t = Output::Json)]
        output: Output,
    },
}

#[derive(clap::Args)]
struct ApiArg {
    /// Collector API base URL.
    #[arg(
        long = "api",
        env = "TRIBUTARY_API",
        default_value = "http://127.0.0.1:7401"
    )]
    url: String,
}

fn main() -> ExitCode {
    let args = Args::parse();
    let runtime = match tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tributary: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    match runtime.block_on(run(args.command)) {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            // A closed stdout (`| head`) is not an error.
            if let Some(cli::CliError::Output(io)) = e.downcast_ref::<cli::CliError>()
                && io.kind() == std::io::ErrorKind::BrokenPipe
            {
                return ExitCode::SUCCESS;
            }
            if let Some(Exit(code)) = e.downcast_ref::<Exit>() {
                return ExitCode::from(*code);
            }
            eprintln!("tributary: {}", tributary_common::error::report(e.as_ref()));
            if e.downcast_ref::<tributary_common::config::ConfigError>()
                .is_some()
            {
                return ExitCode::from(2);
            }
            ExitCode::FAILURE
        }
    }
}

/// An exit status already explained on the terminal.
#[derive(Debug, thiserror::Error)]
#[error("exit status {0}")]
struct Exit(u8);

fn signal_token() -> CancellationToken {
    let token = CancellationToken::new();
    tokio::spawn(tributary_common::shutdown::on_signal(token.clone()));
    token
}

async fn run(command: Command) -> anyhow::Result<()> {
    match command {
        Command::Serve {
            config: path,
            check_config,
        } => {
            let config = CollectorConfig::load(&path)?;
            if check_config {
                let report = tributary_collector::setup::check::check(&path, &config);
                print!("{}", report.text);
                if !report.ok {
                    return Err(Exit(1).into());
                }
                return Ok(());
            }
            tributary_common::telemetry::init(config.log_level.as_deref());
            let collector = Collector::bind(config).await?;
            collector.run(signal_token()).await?;
        }
        Command::Quickstart {
            dir,
            ingest_port,
            api_port,
        } => {
            tributary_common::telemetry::init(Some("info"));
            let options = tributary_collector::setup::quickstart::Options {
                dir,
                ingest_port,
                api_port,
            };
            tributary_collector::setup::quickstart::run(options, signal_token()).await?;
        }
        Command::Certs {
            out,
            hosts,
            agent: Some(name),
            ..
        } => {
            debug_assert!(hosts.is_empty());
            let (cert, key) = tributary_collector::setup::certs::issue_agent(&out, &name)?;
            println!("wrote {}, {}", cert.display(), key.display());
        }
        Command::Certs {
            out, hosts, force, ..
        } => {
            let existing = tributary_collector::setup::certs::CertFiles::in_dir(&out).ca;
            if existing.exists() && !force {
                anyhow::bail!(
                    "{} already exists: use --agent NAME to issue an agent certificate from this CA, or --force to replace the CA and every certificate",
                    existing.display()
                );
            }
            let files = tributary_collector::setup::certs::generate(&out, &hosts)?;
            println!(
                "wrote {}, {}, {}, {}, {}, {}",
                files.ca.display(),
                files.ca_key.display(),
                files.collector_cert.display(),
                files.collector_key.display(),
                files.agent_cert.display(),
                files.agent_key.display()
            );
        }
        Command::Topics { api, output } => {
            cli::topics(&ApiClient::new(&api.url)?, output).await?;
        }
        Command::Consume {
            api,
            topic,
            partition,
            offset,
            max,
            follow,
            group,
            output,
        } => {
            let args = ConsumeArgs {
                topic,
                partition,
                offset,
                max,
                follow,
                output,
                group,
            };
            cli::consume(&ApiClient::new(&api.url)?, &args).await?;
        }
        Command::Query {
            api,
            topic,
            since,
            until,
            host,
            source,
            severity,
            grep,
            regex,
            limit,
            order,
            follow,
            output,
        } => {
            let params = tributary_collector::api::query::QueryParams {
                topic: Some(topic),
                since,
                until,
                host,
                source,
                severity,
                contains: grep,
                regex,
                limit: Some(limit.to_string()),
                order: Some(order),
            };
            let args = cli::QueryArgs {
                params,
                follow,
                output,
            };
            cli::query(&ApiClient::new(&api.url)?, &args).await?;
        }
        Command::Groups { api, group, output } => {
            cli::groups(&ApiClient::new(&api.url)?, group.as_deref(), output).await?;
        }
    }
    Ok(())
}
