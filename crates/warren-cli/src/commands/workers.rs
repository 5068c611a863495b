//! `warren workers`: the workers the coordinator knows, their state and load; and an operator's
//! changes to one (state, groups, deregistration).

use std::collections::BTreeMap;

use anyhow::{bail, Context};
use clap::{Args, Subcommand};
use warren_client::{WorkerQuery, WorkerState};

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::worker_rows;
use super::task_args::now;

/// `warren workers [filters] | set-state | groups | deregister | show`
#[derive(Debug, Args)]
#[command(args_conflicts_with_subcommands = true)]
pub struct WorkersArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub list: WorkerListArgs,
    #[command(subcommand)]
    pub action: Option<WorkerAction>,
}

/// Filters, order and paging of the listing.
#[derive(Debug, Args)]
pub struct WorkerListArgs {
    /// Only this worker (repeatable).
    #[arg(long = "id", value_name = "ID")]
    pub ids: Vec<String>,
    /// Only workers in this state (repeatable): MAINTENANCE, IDLE, RUNNING, FAILED, PREPARE, BUSY.
    #[arg(long = "state", value_name = "STATE", value_parser = parse_state)]
    pub states: Vec<WorkerState>,
    /// Only workers in this group (repeatable: any of them).
    #[arg(long = "group", value_name = "GROUP")]
    pub groups: Vec<String>,
    /// Only workers offering this capability (repeatable: all of them).
    #[arg(long = "cap", value_name = "KEY=VALUE")]
    pub caps: Vec<String>,
    /// Sort by `id` or `state`.
    #[arg(long, value_name = "KEY")]
    pub sort: Option<String>,
    /// Largest first.
    #[arg(long)]
    pub desc: bool,
    /// The page after this worker.
    #[arg(long, value_name = "ID", conflicts_with = "before")]
    pub after: Option<String>,
    /// The page before this worker.
    #[arg(long, value_name = "ID")]
    pub before: Option<String>,
    /// At most this many workers (up to 65535).
    #[arg(long, value_name = "N")]
    pub limit: Option<u32>,
}

/// An operator's change to one worker.
#[derive(Debug, Subcommand)]
pub enum WorkerAction {
    /// Set a worker `idle` (from MAINTENANCE, through its prepare hook) or `maintenance` (its
    /// tasks drain, then its maintenance hook runs with the message).
    SetState {
        #[command(flatten)]
        client: ClientArgs,
        /// The worker.
        id: String,
        /// `idle` or `maintenance`.
        #[arg(value_parser = parse_target)]
        state: WorkerState,
        /// For maintenance: the message its maintenance hook gets.
        #[arg(long, value_name = "TEXT")]
        message: Option<String>,
    },
    /// Set the groups a worker serves (comma-separated; empty for none).
    Groups {
        #[command(flatten)]
        client: ClientArgs,
        /// The worker.
        id: String,
        /// `g1,g2`.
        groups: String,
    },
    /// Forget a worker in MAINTENANCE or FAILED.
    Deregister {
        #[command(flatten)]
        client: ClientArgs,
        /// The worker.
        id: String,
    },
    /// Show one worker, with its hooks' last output.
    Show {
        #[command(flatten)]
        client: ClientArgs,
        /// The worker.
        id: String,
    },
}

fn parse_state(text: &str) -> Result<WorkerState, String> {
    text.parse()
        .map_err(|e: warren_core::task::FieldError| e.problem)
}

fn parse_target(text: &str) -> Result<WorkerState, String> {
    match parse_state(text)? {
        state @ (WorkerState::Idle | WorkerState::Maintenance) => Ok(state),
        other => Err(format!(
            "a worker can be set idle or maintenance, not {other}"
        )),
    }
}

fn caps(pairs: &[String]) -> anyhow::Result<BTreeMap<String, String>> {
    let mut map = BTreeMap::new();
    for pair in pairs {
        match pair.split_once('=') {
            Some((k, v)) if !k.is_empty() => {
                map.insert(k.to_string(), v.to_string());
            }
            _ => bail!("--cap {pair}: expected KEY=VALUE"),
        }
    }
    Ok(map)
}

fn print_worker(client: &ClientArgs, view: &warren_client::WorkerView) -> anyhow::Result<()> {
    if client.json {
        print_json(view)?;
    } else {
        print!("{}", worker_rows(std::slice::from_ref(view), now()));
        for (name, run) in &view.hooks {
            let outcome = match &run.problem {
                None => "ok".to_string(),
                Some(problem) => problem.clone(),
            };
            println!("hook {name}: {outcome}");
            for line in run.output.lines() {
                println!("  {line}");
            }
        }
    }
    Ok(())
}

/// Lists the workers, or changes one.
pub fn run(args: WorkersArgs) -> anyhow::Result<u8> {
    match args.action {
        None => list(args.client, args.list),
        Some(WorkerAction::SetState {
            client,
            id,
            state,
            message,
        }) => {
            let c = client.connect()?;
            let view = block_on(c.set_worker_state(&id, state, message))?
                .with_context(|| format!("setting worker {id} {state}"))?;
            print_worker(&client, &view)?;
            Ok(0)
        }
        Some(WorkerAction::Groups { client, id, groups }) => {
            let c = client.connect()?;
            let groups: Vec<String> = groups
                .split(',')
                .map(str::trim)
                .filter(|g| !g.is_empty())
                .map(String::from)
                .collect();
            let view = block_on(c.set_worker_groups(&id, groups))?
                .with_context(|| format!("setting the groups of worker {id}"))?;
            print_worker(&client, &view)?;
            Ok(0)
        }
        Some(WorkerAction::Deregister { client, id }) => {
            let c = client.connect()?;
            block_on(c.deregister_worker(&id))?
                .with_context(|| format!("deregistering worker {id}"))?;
            if !client.json {
                println!("worker {id} deregistered");
            }
            Ok(0)
        }
        Some(WorkerAction::Show { client, id }) => {
            let c = client.connect()?;
            let view = block_on(c.worker(&id))?.with_context(|| format!("reading worker {id}"))?;
            print_worker(&client, &view)?;
            Ok(0)
        }
    }
}

fn list(client: ClientArgs, args: WorkerListArgs) -> anyhow::Result<u8> {
    let c = client.connect()?;
    let query = WorkerQuery {
        ids: args.ids,
        states: args.states,
        groups: args.groups,
        caps: caps(&args.caps)?,
        sort: args.sort,
        descending: args.desc,
        after: args.after,
        before: args.before,
        limit: args.limit,
    };
    let page = block_on(c.worker_page(&query))?.context("listing workers")?;
    if client.json {
        print_json(&page.workers)?;
    } else {
        print!("{}", worker_rows(&page.workers, now()));
        if let Some(next) = &page.next {
            eprintln!(
                "more: warren workers --after {next}  ({} more of {})",
                page.remaining, page.total
            );
        }
    }
    Ok(0)
}
