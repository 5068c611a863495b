//! `warren status ID`: one task, its state and, once done, its result.

use anyhow::Context;
use clap::Args;
use warren_client::TaskId;

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::task_details;

/// `warren status ID`
#[derive(Debug, Args)]
pub struct StatusArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The task's id.
    pub id: TaskId,
}

/// Prints the task; exits 0 whatever its state.
pub fn run(args: StatusArgs) -> anyhow::Result<u8> {
    let client = args.client.connect()?;
    let task = block_on(client.task(args.id))?.with_context(|| format!("task {}", args.id))?;
    if args.client.json {
        print_json(&task)?;
    } else {
        print!("{}", task_details(&task));
    }
    Ok(0)
}
