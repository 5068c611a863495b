//! `warren cancel ID...`: cancel waiting tasks, abort running ones.

use anyhow::Context;
use clap::Args;
use warren_client::{TaskId, TaskState};

use super::client_args::{block_on, print_json, ClientArgs};

/// `warren cancel ID...`
#[derive(Debug, Args)]
pub struct CancelArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// The tasks' ids.
    #[arg(required = true)]
    pub ids: Vec<TaskId>,
}

/// Cancels every task given, printing each one's state after; fails on the first refusal.
pub fn run(args: CancelArgs) -> anyhow::Result<u8> {
    let client = args.client.connect()?;
    block_on(async {
        let mut views = Vec::new();
        for &id in &args.ids {
            client
                .cancel(id)
                .await
                .with_context(|| format!("cancelling task {id}"))?;
            let task = client
                .task(id)
                .await
                .with_context(|| format!("task {id}"))?;
            if !args.client.json {
                match task.state {
                    TaskState::InProgress => {
                        println!("task {id}: aborting (its worker stops it; it ends DONE with status abort)")
                    }
                    state => println!("task {id}: {state}"),
                }
            }
            views.push(task);
        }
        if args.client.json {
            match views.as_slice() {
                [one] => print_json(one)?,
                many => print_json(&many)?,
            }
        }
        Ok(0)
    })?
}
