//! `waiting-room`: run the edge waiting room, or manage its signing keys.

use std::path::PathBuf;
use std::process::ExitCode;

use clap::{Parser, Subcommand};
use shared::config::ProcessEnv;
use waiting_room::config::Config;

/// mimalloc: the proxy allocates and frees small buffers on every request and
/// glibc's allocator was the largest user-space cost in profiles.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// The edge waiting room (Pingora proxy).
#[derive(Parser)]
#[command(version, about)]
struct Args {
    #[command(flatten)]
    config: ConfigArg,
    #[command(subcommand)]
    command: Option<Command>,
}

/// `--config`, accepted before or after the subcommands that read the
/// configuration (not a global: `verify-lottery` reads none).
#[derive(clap::Args, Default)]
struct ConfigArg {
    /// Config file (TOML); every key can be overridden by `WR_SECTION__KEY`.
    #[arg(long, short)]
    config: Option<PathBuf>,
}

#[derive(Subcommand)]
enum Command {
    /// Check the configuration and exit (0 valid, 2 invalid).
    Check(ConfigArg),
    /// Start signing with a new key; the old public key stays trusted.
    RotateKey(ConfigArg),
    /// Check a queue's published lottery: that its seed matches the
    /// commitment made before the pre-queue opened, and that the entrants
    /// are in the order the rule gives (see `GET /wr/{queue}/lottery`).
    /// Exit status 0 when it checks out, 1 when it does not, 2 when it could
    /// not be fetched or read.
    VerifyLottery(waiting_room::verify::Args),
}

fn main() -> ExitCode {
    let args = Args::parse();
    // A visitor's tool: it needs no configuration of this proxy.
    if let Some(Command::VerifyLottery(v)) = &args.command {
        return waiting_room::verify::run(v);
    }
    let path = match &args.command {
        Some(Command::Check(c) | Command::RotateKey(c)) => c.config.clone().or(args.config.config),
        _ => args.config.config,
    };
    let config = match Config::load(path.as_deref(), &ProcessEnv) {
        Ok(c) => c,
        Err(e) => {
            eprintln!("error: invalid configuration: {e}");
            return ExitCode::from(2);
        }
    };
    match args.command {
        Some(Command::Check(_)) => {
            println!("configuration is valid");
            ExitCode::SUCCESS
        }
        Some(Command::VerifyLottery(_)) => ExitCode::SUCCESS,
        Some(Command::RotateKey(_)) => match shared::keys::rotate(&config.keys.dir) {
            Ok(kid) => {
                println!("now signing with key {kid}; restart the proxies to pick it up");
                ExitCode::SUCCESS
            }
            Err(e) => {
                eprintln!("error: {e}");
                ExitCode::FAILURE
            }
        },
        None => {
            waiting_room::init_logging(&config.log);
            match waiting_room::app::build(&config, path.as_deref()) {
                Ok(server) => {
                    server.run(pingora::server::RunArgs { shutdown_signal: Box::new(waiting_room::drain::Signals) });
                    ExitCode::SUCCESS
                }
                Err(e) => {
                    eprintln!("error: {e:#}");
                    ExitCode::FAILURE
                }
            }
        }
    }
}
