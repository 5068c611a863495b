//! `warren tasks`: list tasks, newest first, with filters, sorting and keyset paging.

use anyhow::{bail, Context};
use clap::Args;
use warren_client::{TaskId, TaskQuery, TaskState};

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::task_rows;
use super::task_args::now;

/// `warren tasks [--state S]... [--owner O] [--worker W] [--sort KEY] [--limit N] [--after ID]`
#[derive(Debug, Args)]
pub struct TasksArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Only tasks in this state (repeatable: WAITING, IN_PROGRESS, DONE, CANCELLED, TIMEOUT,
    /// INVALID, FAILED).
    #[arg(long, value_name = "STATE", value_parser = parse_state)]
    pub state: Vec<TaskState>,
    /// Only this task (repeatable).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<TaskId>,
    /// Only tasks of this priority (repeatable).
    #[arg(long = "priority", value_name = "N")]
    pub priorities: Vec<u8>,
    /// Only tasks of this owner.
    #[arg(long, value_name = "OWNER")]
    pub owner: Option<String>,
    /// Only tasks that ran on this worker.
    #[arg(long, value_name = "ID")]
    pub worker: Option<String>,
    /// Only tasks of this group (repeatable: any of them).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Only tasks requiring this capability (repeatable: all of them).
    #[arg(long = "cap", value_name = "KEY=VALUE")]
    pub caps: Vec<String>,
    /// Sort by `id` (default), `priority`, `deadline`, `valid_after` or `state`.
    #[arg(long, value_name = "KEY")]
    pub sort: Option<String>,
    /// At most this many tasks (up to 65535).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
    /// The page after this task id (printed at the end of the previous page).
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    pub after: Option<String>,
    /// The page before this task id.
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// Ascending (oldest first by id) instead of descending.
    #[arg(long, visible_alias = "asc")]
    pub oldest_first: bool,
}

fn parse_state(text: &str) -> Result<TaskState, String> {
    text.parse()
        .map_err(|e: warren_core::task::FieldError| e.problem)
}

/// Prints one page; how to get the next, if any, goes to stderr.
pub fn run(args: TasksArgs) -> anyhow::Result<u8> {
    let client = args.client.connect()?;
    let mut caps = std::collections::BTreeMap::new();
    for pair in &args.caps {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                caps.insert(k.to_string(), v.to_string());
            }
            _ => bail!("--cap {pair}: expected KEY=VALUE"),
        }
    }
    // One state goes as before (`state=`); several as a list.
    let (state, states) = match args.state.as_slice() {
        [one] => (Some(*one), Vec::new()),
        many => (None, many.to_vec()),
    };
    let query = TaskQuery {
        state,
        states,
        owner: args.owner.clone(),
        worker: args.worker.clone(),
        limit: args.limit,
        after: args.after.clone(),
        oldest_first: args.oldest_first,
        ids: args.ids.clone(),
        priorities: args.priorities.clone(),
        groups: args.groups.clone(),
        caps,
        sort: args.sort.clone(),
        before: args.before.clone(),
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
            let sort = args
                .sort
                .as_deref()
                .map(|s| format!(" --sort {s}"))
                .unwrap_or_default();
            eprintln!(
                "more: warren tasks{order}{sort} --after {next}  ({} more of {})",
                page.remaining, page.total
            );
        }
    }
    Ok(0)
}
