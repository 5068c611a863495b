//! `warren submit`: queue a task and print its id; `--wait` prints the finished task.

use anyhow::Context;
use clap::Args;

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::task_details;
use super::run::{exit_code, EXIT_CODES};
use super::task_args::{now, TaskArgs};

/// `warren submit [--wait] [limit flags] -- COMMAND...`
#[derive(Debug, Args)]
#[command(after_long_help = EXIT_CODES)]
pub struct SubmitArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Wait until the task has finished, print it, and exit with its exit code (as `warren run`).
    #[arg(long)]
    pub wait: bool,
    #[command(flatten)]
    pub task: TaskArgs,
}

/// Submits the task, returning the process exit code.
pub fn run(args: SubmitArgs) -> anyhow::Result<u8> {
    let spec = args.task.to_spec(now())?;
    let client = args.client.connect()?;
    block_on(async {
        if args.wait {
            let task = client
                .submit_and_wait(&spec)
                .await
                .context("running the task")?;
            if args.client.json {
                print_json(&task)?;
            } else {
                print!("{}", task_details(&task));
            }
            Ok(exit_code(&task))
        } else {
            let id = client.submit(&spec).await.context("submitting the task")?;
            if args.client.json {
                print_json(&serde_json::json!({ "id": id }))?;
            } else {
                println!("{id}");
            }
            Ok(0)
        }
    })?
}
