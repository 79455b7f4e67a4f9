//! `tributary-agent`: tails log files and ships them to a Tributary collector (or a
//! Kafka cluster).

use std::path::PathBuf;
use std::process::ExitCode;

use clap::Parser;
use tributary_agent::config::AgentConfig;

/// Tail log files chosen by globs and ship them, compressed, over TLS to a Tributary collector or a Kafka cluster.
#[derive(Parser)]
#[command(name = "tributary-agent", version, about)]
struct Args {
    /// Path of agent.yaml.
    #[arg(long, short, default_value = "/etc/tributary/agent.yaml")]
    config: PathBuf,
    /// Validate the configuration (syntax, keys, globs, certificates), show which
    /// files each input matches, check they are readable and data_dir is writable,
    /// and exit: 0 when valid, 2 when the config does not load, 1 for host problems.
    #[arg(long)]
    check_config: bool,
    /// With --check-config: also connect to each collector (TLS handshake with the
    /// configured certificates, HELLO) or Kafka broker (TLS, SASL) and say what
    /// fails, like `filebeat test output`.
    #[arg(long, requires = "check_config")]
    connect: bool,
}

fn main() -> ExitCode {
    tributary_agent::memory::tune_allocator();
    let args = Args::parse();
    let config = match AgentConfig::load(&args.config) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("tributary-agent: {}", tributary_common::error::report(&e));
            return ExitCode::from(2);
        }
    };
    if args.check_config {
        use tributary_agent::check;
        let mut report = check::check(&args.config, &config);
        if args.connect {
            match tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
            {
                Ok(rt) => rt.block_on(check::connect(&config, &mut report)),
                Err(e) => {
                    eprintln!("tributary-agent: cannot start the runtime: {e}");
                    return ExitCode::FAILURE;
                }
            }
        }
        check::finish(&mut report);
        print!("{}", report.text);
        return if report.ok {
            ExitCode::SUCCESS
        } else {
            ExitCode::FAILURE
        };
    }
    tributary_common::telemetry::init(config.log_level.as_deref());
    // One event-loop thread and two threads for blocking file reads: the agent's
    // work is light per byte, and every extra thread costs memory (malloc arenas).
    let runtime = match tokio::runtime::Builder::new_current_thread()
        .max_blocking_threads(2)
        .enable_all()
        .build()
    {
        Ok(r) => r,
        Err(e) => {
            eprintln!("tributary-agent: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    let result = runtime.block_on(async {
        let shutdown = tokio_util::sync::CancellationToken::new();
        tokio::spawn(tributary_common::shutdown::on_signal(shutdown.clone()));
        tributary_agent::run(config, shutdown).await
    });
    match result {
        Ok(()) => ExitCode::SUCCESS,
        Err(e) => {
            eprintln!("tributary-agent: {}", tributary_common::error::report(&e));
            ExitCode::FAILURE
        }
    }
}
