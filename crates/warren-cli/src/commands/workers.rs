//! `warren workers`: the workers the coordinator knows, their state and load.

use anyhow::Context;
use clap::Args;

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::worker_rows;
use super::task_args::now;

/// `warren workers`
#[derive(Debug, Args)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub client: ClientArgs,
}

/// Prints the workers.
pub fn run(args: WorkersArgs) -> anyhow::Result<u8> {
    let client = args.client.connect()?;
    let workers = block_on(client.workers())?.context("listing workers")?;
    if args.client.json {
        print_json(&workers)?;
    } else {
        print!("{}", worker_rows(&workers, now()));
    }
    Ok(0)
}
