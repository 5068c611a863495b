//! `warren tasks`: list tasks, newest first, with filters and keyset paging.

use anyhow::Context;
use clap::Args;
use warren_client::{TaskQuery, TaskState};

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::task_rows;
use super::task_args::now;

/// `warren tasks [--state S] [--owner O] [--worker W] [--limit N] [--after CURSOR]`
#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only tasks in this state (WAITING, IN_PROGRESS, DONE, CANCELLED, TIMEOUT, INVALID, FAILED).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Option<TaskState>,
    /// Only tasks of this owner.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,
    /// Only tasks that ran on this worker.
    #[arg(long, value_name = "ID")]
    pub worker: Option<String>,
    /// At most this many tasks.
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// Continue after this cursor (printed at the end of the previous page).
    #[arg(long, value_name = "CURSOR")]
    pub after: Option<String>,
    /// Oldest first instead of newest first.
    #[arg(long)]
    pub oldest_first: bool,
}

fn parse_state(text: &str) -> Result<TaskState, String> {
    text.parse()
        .map_err(|e: warren_core::task::FieldError| e.problem)
}

/// Prints one page; the cursor of the next, if any, goes to stderr.
pub fn run(args: TasksArgs) -> anyhow::Result<u8> {
    let client = args.client.connect()?;
    let query = TaskQuery {
        state: args.state,
        owner: args.owner.clone(),
        worker: args.worker.clone(),
        limit: args.limit,
        after: args.after.clone(),
        oldest_first: args.oldest_first,
    };
    let page = block_on(client.tasks(&query))?.context("listing tasks")?;
    if args.client.json {
        print_json(&page)?;
    } else {
        print!("{}", task_rows(&page.tasks, now()));
        if let Some(next) = &page.next {
            let order = if args.oldest_first {
                " --oldest-first"
            } else {
                ""
            };
            eprintln!("more: warren tasks{order} --after {next}");
        }
    }
    Ok(0)
}
