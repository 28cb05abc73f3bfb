//! `waiting-room verify-lottery`: anyone's check of a published draw (see
//! `lottery.rs`), from the queue's URL or from a saved copy of its
//! `GET /wr/{queue}/lottery` document.

use std::process::ExitCode;
use std::time::Duration;

use crate::lottery::{Mismatch, Published, verify};

/// `verify-lottery`'s arguments.
#[derive(Debug, clap::Args)]
pub struct Args {
    /// The waiting room's base URL (`http://host:8080`); the document is
    /// fetched from `{url}/wr/{queue}/lottery`. For HTTPS, save the document
    /// with any client and pass `--file`.
    #[arg(long, required_unless_present = "file")]
    pub url: Option<String>,
    /// The queue id.
    #[arg(long, required_unless_present = "file")]
    pub queue: Option<String>,
    /// A saved copy of the document instead of fetching it.
    #[arg(long, conflicts_with_all = ["url", "queue"])]
    pub file: Option<std::path::PathBuf>,
    /// Your public id (shown on the queue page): prints your place in the draw.
    #[arg(long)]
    pub public_id: Option<String>,
}

/// Why the document could not be had.
fn fetch(args: &Args) -> Result<String, String> {
    if let Some(path) = &args.file {
        return std::fs::read_to_string(path).map_err(|e| format!("cannot read {}: {e}", path.display()));
    }
    let (Some(url), Some(queue)) = (&args.url, &args.queue) else {
        return Err("give --url and --queue, or --file".into());
    };
    let url = format!("{}/wr/{queue}/lottery", url.trim_end_matches('/'));
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start a runtime: {e}"))?;
    runtime.block_on(async {
        let client = reqwest::Client::builder()
            .timeout(Duration::from_secs(30))
            .build()
            .map_err(|e| format!("cannot build an HTTP client: {e}"))?;
        let answer = client.get(&url).send().await.map_err(|e| format!("cannot fetch {url}: {e}"))?;
        let status = answer.status();
        let body = answer.text().await.map_err(|e| format!("cannot read the answer of {url}: {e}"))?;
        if !status.is_success() {
            return Err(format!("{url} answered {status}: {body}"));
        }
        Ok(body)
    })
}

/// Run the check; prints what it found.
pub fn run(args: &Args) -> ExitCode {
    let text = match fetch(args) {
        Ok(text) => text,
        Err(e) => {
            eprintln!("error: {e}");
            return ExitCode::from(2);
        }
    };
    let published: Published = match serde_json::from_str(&text) {
        Ok(p) => p,
        Err(e) => {
            eprintln!("error: not a lottery document: {e}");
            return ExitCode::from(2);
        }
    };
    match verify(&published) {
        Ok(n) => {
            println!(
                "OK: queue {:?}: SHA-256 of the seed is the commitment made at {}; the {n} entrants are in the \
                 order {} gives (drawn at {})",
                published.queue,
                published.committed_at,
                published.algorithm,
                published.drawn_at.as_deref().unwrap_or("?"),
            );
            let at = |t: &str| crate::schedule::At::parse(t).ok();
            if let (Some(c), Some(p)) = (at(&published.committed_at), at(&published.prequeue_from))
                && c > p
            {
                println!(
                    "warning: the commitment was made after the pre-queue opened ({}): the store may have lost \
                     the first one",
                    published.prequeue_from
                );
            }
            if let Some(id) = &args.public_id {
                match published.entrants.as_ref().and_then(|e| e.iter().position(|p| p == id)) {
                    Some(i) => println!("{id} was drawn at place {} of {n}", i + 1),
                    None => {
                        println!("MISSING: {id} is not among the entrants");
                        return ExitCode::FAILURE;
                    }
                }
            }
            ExitCode::SUCCESS
        }
        Err(Mismatch::NotDrawn(c)) => {
            println!(
                "not drawn yet: the commitment is {c} (made at {}); check again after {}",
                published.committed_at, published.opens_at
            );
            ExitCode::FAILURE
        }
        Err(e) => {
            println!("FAILED: {e}");
            ExitCode::FAILURE
        }
    }
}
