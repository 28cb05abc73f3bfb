//! The `booking-core` binary: parse `--config`, load and validate it (exit 2
//! naming the bad key), then run [`booking_core::Application`] until Ctrl-C or
//! SIGTERM; `check` only validates. The same shape as `waiting-room`'s.

use std::path::PathBuf;
use std::process::ExitCode;

use booking_core::{Application, Config};
use clap::{Parser, Subcommand};
use shared::config::ProcessEnv;

/// Command line.
#[derive(Debug, Parser)]
#[command(version, about = "Seat holds and first-come coupon claims behind the waiting room")]
struct Args {
    /// Config file; without it, `configs/booking-core.toml` if present, else the
    /// embedded defaults. `BC_SECTION__KEY` variables override either.
    #[arg(long, short, global = true)]
    config: Option<PathBuf>,
    #[command(subcommand)]
    command: Option<Command>,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Check the configuration and exit (0 valid, 2 invalid).
    Check,
}

const DEFAULT_CONFIG: &str = "configs/booking-core.toml";

fn main() -> ExitCode {
    let args = Args::parse();
    let file = args.config.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let config = match Config::load(file.as_deref(), &ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    if let Some(Command::Check) = args.command {
        println!("configuration is valid");
        return ExitCode::SUCCESS;
    }
    // sqlx logs every statement at info; that would drown the request lines.
    config.log.init(&["sqlx"]);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("error: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match Application::build(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("error: cannot start: {e}");
                return ExitCode::FAILURE;
            }
        };
        let handle = app.shutdown_handle();
        tokio::spawn(async move {
            wait_for_signal().await;
            tracing::info!("shutting down");
            handle.shutdown();
        });
        app.run_until_stopped().await;
        ExitCode::SUCCESS
    })
}

async fn wait_for_signal() {
    #[cfg(unix)]
    {
        use tokio::signal::unix::{SignalKind, signal};
        match signal(SignalKind::terminate()) {
            Ok(mut term) => {
                tokio::select! {
                    _ = tokio::signal::ctrl_c() => {}
                    _ = term.recv() => {}
                }
            }
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
            }
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}
