//! What every client subcommand shares: which coordinator, its token, `--json`, and the async
//! runtime the client library runs on.

use std::future::Future;
use std::path::PathBuf;

use anyhow::Context;
use clap::Args;
use warren_client::{Client, DEFAULT_SERVER};

/// Selects the coordinator and the output format.
#[derive(Debug, Clone, Args)]
pub struct ClientArgs {
    /// The coordinator's HTTP API.
    #[arg(long, value_name = "URL", env = "WARREN_SERVER", default_value = DEFAULT_SERVER)]
    pub server: String,
    /// A file holding the API bearer token, the coordinator's DATA_DIR/api-token (needed when it
    /// listens beyond loopback). The token itself may be given in WARREN_API_TOKEN instead.
    #[arg(long, value_name = "FILE", env = "WARREN_API_TOKEN_FILE")]
    pub token_file: Option<PathBuf>,
    /// Print JSON instead of text meant for people.
    #[arg(long)]
    pub json: bool,
}

impl ClientArgs {
    /// A client of the selected coordinator, with the token when one is given (by
    /// `--token-file`, or the token itself in `WARREN_API_TOKEN`).
    pub fn connect(&self) -> anyhow::Result<Client> {
        let client = Client::new(&self.server)?;
        let token = match &self.token_file {
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .with_context(|| format!("reading the token file {}", path.display()))?;
                Some(text.trim().to_string())
            }
            None => std::env::var("WARREN_API_TOKEN")
                .ok()
                .map(|t| t.trim().to_string()),
        };
        Ok(match token {
            Some(token) if !token.is_empty() => client.with_token(token),
            _ => client,
        })
    }
}

/// Runs `future` to completion on a single-threaded runtime (a client needs no more).
pub fn block_on<F: Future>(future: F) -> anyhow::Result<F::Output> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .context("starting the async runtime")?;
    Ok(runtime.block_on(future))
}

/// Prints `value` as pretty JSON on stdout.
pub fn print_json<T: serde::Serialize>(value: &T) -> anyhow::Result<()> {
    let text = serde_json::to_string_pretty(value).context("encoding JSON")?;
    println!("{text}");
    Ok(())
}
