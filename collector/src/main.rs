//! `tributary`: the collector and its client commands.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use tokio_util::sync::CancellationToken;
use tributary_collector::client::commands::{self as cli, ApiArg, ConsumeArgs, Output, QueryArgs};
use tributary_collector::config::CollectorConfig;
use tributary_collector::server::Collector;
use tributary_collector::setup::certs::CertsArgs;

/// Untrusted decoders may ask for absurd reservations: see `alloc`.
#[global_allocator]
static ALLOCATOR: tributary_collector::alloc::Allocator = tributary_collector::alloc::Allocator;

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
        /// Kafka-compatible listener port on 127.0.0.1.
        #[arg(long, default_value_t = 9092)]
        kafka_port: u16,
    },
    /// Write a CA, a collector certificate and an agent certificate (PEM) into a directory.
    Certs(CertsArgs),
    /// Manage API tokens (api.auth.tokens_file).
    #[command(subcommand)]
    Token(tributary_collector::setup::token::TokenCommand),
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
        #[command(flatten)]
        args: ConsumeArgs,
    },
    /// Search a topic: records matching every filter, across partitions by time.
    Query {
        #[command(flatten)]
        api: ApiArg,
        #[command(flatten)]
        args: QueryArgs,
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
            kafka_port,
        } => {
            tributary_common::telemetry::init(Some("info"));
            let options = tributary_collector::setup::quickstart::Options {
                dir,
                ingest_port,
                api_port,
                kafka_port,
            };
            tributary_collector::setup::quickstart::run(options, signal_token()).await?;
        }
        Command::Certs(args) => {
            let written = tributary_collector::setup::certs::run(&args)?;
            let names: Vec<String> = written.iter().map(|p| p.display().to_string()).collect();
            println!("wrote {}", names.join(", "));
        }
        Command::Token(cmd) => {
            let token = tributary_collector::setup::token::run(&cmd)?;
            // The token alone on stdout (for scripts); what to do with it on stderr.
            println!("{token}");
            eprintln!(
                "Keep this token: only its hash is stored. Use it as `--token` (or TRIBUTARY_TOKEN), `Authorization: Bearer …`, or the SASL/PLAIN password on the Kafka listener."
            );
        }
        Command::Topics { api, output } => {
            cli::topics(&api.client()?, output).await?;
        }
        Command::Consume { api, args } => cli::consume(&api.client()?, &args).await?,
        Command::Query { api, args } => cli::query(&api.client()?, &args).await?,
        Command::Groups { api, group, output } => {
            cli::groups(&api.client()?, group.as_deref(), output).await?;
        }
    }
    Ok(())
}
