//! `loadtest`: parse the flags, run the sale, print the report, write
//! `--out`, and exit 0 (audit passed), 1 (audit failed) or 2 (bad flags or setup).

use std::process::ExitCode;

use clap::Parser;
use loadtest::Args;

fn main() -> ExitCode {
    let args = Args::parse();
    let mut runtime = tokio::runtime::Builder::new_multi_thread();
    if let Some(n) = args.threads {
        runtime.worker_threads(n.max(1));
    }
    let runtime = match runtime.enable_all().build() {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: cannot start the runtime: {e}");
            return ExitCode::from(2);
        }
    };
    let out = args.out.clone();
    let report = match runtime.block_on(loadtest::run(args)) {
        Ok(r) => r,
        Err(e) => {
            eprintln!("loadtest: {e:#}");
            return ExitCode::from(2);
        }
    };
    print!("{}", report.render());
    if let Some(path) = out {
        let written = serde_json::to_vec_pretty(&report)
            .map_err(std::io::Error::other)
            .and_then(|json| std::fs::write(&path, json));
        if let Err(e) = written {
            eprintln!("loadtest: cannot write {}: {e}", path.display());
            return ExitCode::from(2);
        }
    }
    // Visitors' leftover close handshakes must not hold the exit.
    runtime.shutdown_timeout(std::time::Duration::from_secs(1));
    if report.passed() { ExitCode::SUCCESS } else { ExitCode::from(1) }
}
