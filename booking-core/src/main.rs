//! The `booking-core` binary: parse `--config`, load and validate it (exit 2
//! naming the bad key), then run [`booking_core::Application`] until Ctrl-C or
//! SIGTERM.

use std::path::PathBuf;
use std::process::ExitCode;

use booking_core::config::{LogConfig, LogFormat};
use booking_core::{Application, Config};
use clap::Parser;
use shared::config::ProcessEnv;

/// Command line.
#[derive(Debug, Parser)]
#[command(version, about = "Seat holds and first-come coupon claims behind the waiting room")]
struct Args {
    /// Config file; without it, `configs/booking-core.toml` if present, else the
    /// embedded defaults. `BC_SECTION__KEY` variables override either.
    #[arg(long)]
    config: Option<PathBuf>,
}

const DEFAULT_CONFIG: &str = "configs/booking-core.toml";

fn main() -> ExitCode {
    let args = Args::parse();
    let file = args.config.or_else(|| Some(PathBuf::from(DEFAULT_CONFIG)).filter(|p| p.exists()));
    let config = match Config::load(file.as_deref(), &ProcessEnv) {
        Ok(config) => config,
        Err(e) => {
            eprintln!("booking-core: invalid config: {e}");
            return ExitCode::from(2);
        }
    };
    init_logging(&config.log);
    let runtime = match tokio::runtime::Runtime::new() {
        Ok(rt) => rt,
        Err(e) => {
            eprintln!("booking-core: cannot start the runtime: {e}");
            return ExitCode::FAILURE;
        }
    };
    runtime.block_on(async {
        let app = match Application::build(config).await {
            Ok(app) => app,
            Err(e) => {
                eprintln!("booking-core: cannot start: {e}");
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

/// Logs go to stderr (stdout stays free for anything a wrapper prints), as
/// text or one JSON object per line. Every line logged while a request is
/// handled carries the `request` span and its `request_id` (the proxy's
/// `x-request-id`), so one visitor's request can be followed from the proxy's
/// log into this one.
fn init_logging(log: &LogConfig) {
    // The level was validated with the config; the fallback only guards a
    // filter that parsed then but not now.
    let filter = tracing_subscriber::EnvFilter::try_new(&log.level)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    let builder = tracing_subscriber::fmt().with_env_filter(filter).with_writer(std::io::stderr);
    let _ = match log.format {
        LogFormat::Json => builder.json().with_current_span(true).with_span_list(false).try_init(),
        LogFormat::Text => builder.with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr())).try_init(),
    };
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
