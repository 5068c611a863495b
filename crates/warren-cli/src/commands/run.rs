//! `warren run`: submit a task, stream its output live, end with its exit code; Ctrl-C cancels.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use tokio::signal::unix::{signal, Signal, SignalKind};
use warren_client::{task_exit_code, Client, OutputStream, TaskId, TaskSpec, TaskState, TaskView};
use warren_core::result::Status;

use super::client_args::{block_on, print_json, ClientArgs};
use super::render::outcome;
use super::task_args::{now, TaskArgs};

/// The exit codes of `warren run` and `warren submit --wait`, for `--help`.
pub const EXIT_CODES: &str = "\
Exit codes:
  0..=255  DONE: the program's own exit code
  128+N    DONE, killed by signal N
  124      DONE with status timeout (wall or CPU time), or TIMEOUT: the start-by deadline passed
  123      DONE with status memory (out of memory)
  122      DONE with status overflow (output limit)
  121      DONE with status abort, or CANCELLED before it started
  120      DONE with status crash, error or fatal; INVALID (no worker can run it); FAILED
  130      interrupted twice: stopped waiting (the task is being cancelled)
  2        Warren's own errors: bad flags, coordinator unreachable or refusing the task

An interrupt (Ctrl-C) or SIGTERM cancels the task: a waiting task ends CANCELLED, a running one is
aborted on its worker; warren keeps printing its output until it ends. A second one stops waiting.";

/// Exit code when the user interrupts twice and `warren run` stops waiting.
const EXIT_INTERRUPTED: u8 = 130;

/// `warren run [limit flags] -- COMMAND...`
#[derive(Debug, Args)]
#[command(after_long_help = EXIT_CODES)]
pub struct RunArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    #[command(flatten)]
    pub task: TaskArgs,
}

/// Runs the task, returning the process exit code.
pub fn run(args: RunArgs) -> anyhow::Result<u8> {
    let spec = args.task.to_spec(now())?;
    let client = args.client.connect()?;
    block_on(run_task(client, spec, args.client.json))?
}

/// SIGINT and SIGTERM: the first cancels the task, the second stops waiting for it.
struct Interrupts {
    int: Signal,
    term: Signal,
    count: u32,
}

impl Interrupts {
    fn new() -> anyhow::Result<Interrupts> {
        Ok(Interrupts {
            int: signal(SignalKind::interrupt()).context("handling SIGINT")?,
            term: signal(SignalKind::terminate()).context("handling SIGTERM")?,
            count: 0,
        })
    }

    async fn recv(&mut self) {
        tokio::select! {
            _ = self.int.recv() => {}
            _ = self.term.recv() => {}
        }
        self.count += 1;
    }

    /// Acts on an interrupt of task `id`: `Some(code)` when the run must end now.
    async fn act(&self, client: &Client, id: TaskId) -> Option<u8> {
        if self.count >= 2 {
            eprintln!("warren: stopped waiting; task {id} is being cancelled");
            return Some(EXIT_INTERRUPTED);
        }
        eprintln!("warren: cancelling task {id} (interrupt again to stop waiting)");
        if let Err(err) = client.cancel(id).await {
            eprintln!("warren: {err}");
        }
        None
    }
}

/// Where the output goes; remembers how much of each stream was written.
#[derive(Default)]
struct Terminal {
    written: [usize; 2],
    /// A write failed (a closed pipe): the rest is dropped, the task still followed.
    closed: [bool; 2],
}

impl Terminal {
    fn write(&mut self, stream: OutputStream, data: &[u8]) {
        let index = match stream {
            OutputStream::Stdout => 0,
            OutputStream::Stderr => 1,
        };
        self.written[index] += data.len();
        if self.closed[index] {
            return;
        }
        let result = match stream {
            OutputStream::Stdout => {
                let mut out = std::io::stdout().lock();
                out.write_all(data).and_then(|()| out.flush())
            }
            OutputStream::Stderr => {
                let mut err = std::io::stderr().lock();
                err.write_all(data).and_then(|()| err.flush())
            }
        };
        if result.is_err() {
            self.closed[index] = true;
        }
    }

    /// Writes what the result holds beyond what was streamed (after a broken stream).
    fn catch_up(&mut self, task: &TaskView) {
        let Some(result) = &task.result else { return };
        for (stream, data) in [
            (OutputStream::Stdout, &result.stdout),
            (OutputStream::Stderr, &result.stderr),
        ] {
            let index = usize::from(stream == OutputStream::Stderr);
            if let Some(rest) = data.get(self.written[index]..) {
                if !rest.is_empty() {
                    self.write(stream, rest);
                }
            }
        }
    }
}

async fn run_task(client: Client, spec: TaskSpec, json: bool) -> anyhow::Result<u8> {
    let mut interrupts = Interrupts::new()?;
    let submit = client.submit(&spec);
    tokio::pin!(submit);
    let id = loop {
        tokio::select! {
            id = &mut submit => break id?,
            () = interrupts.recv() => if interrupts.count >= 2 {
                eprintln!("warren: interrupted while submitting; the task may have been accepted");
                return Ok(EXIT_INTERRUPTED);
            },
        }
    };
    if interrupts.count > 0 {
        if let Some(code) = interrupts.act(&client, id).await {
            return Ok(code);
        }
    }

    let mut terminal = Terminal::default();
    let mut streamed_all = false;
    let mut finished = None;
    if !json {
        match client.output(id).await {
            Ok(mut output) => loop {
                tokio::select! {
                    chunk = output.next() => match chunk {
                        Ok(Some(chunk)) => terminal.write(chunk.stream, &chunk.data),
                        Ok(None) => {
                            streamed_all = true;
                            finished = output.finished().cloned();
                            break;
                        }
                        Err(err) => {
                            eprintln!("warren: {err}; waiting for task {id} to finish");
                            break;
                        }
                    },
                    () = interrupts.recv() => if let Some(code) = interrupts.act(&client, id).await {
                        return Ok(code);
                    },
                }
            },
            Err(err) => eprintln!("warren: {err}; waiting for task {id} to finish"),
        }
    }

    let task = match finished {
        Some(task) => task,
        None => {
            let wait = client.wait(id);
            tokio::pin!(wait);
            loop {
                tokio::select! {
                    task = &mut wait => break task.with_context(|| format!("waiting for task {id}"))?,
                    () = interrupts.recv() => if let Some(code) = interrupts.act(&client, id).await {
                        return Ok(code);
                    },
                }
            }
        }
    };
    if json {
        print_json(&task)?;
    } else {
        if !streamed_all {
            terminal.catch_up(&task);
        }
        if let Some(note) = ending_note(&task) {
            eprintln!("warren: {note}");
        }
    }
    Ok(exit_code(&task))
}

/// The task's exit code as a process exit status.
pub fn exit_code(task: &TaskView) -> u8 {
    let code = task_exit_code(task).unwrap_or(warren_core::result::exit_codes::CRASH);
    u8::try_from(code).unwrap_or(u8::try_from(warren_core::result::exit_codes::CRASH).unwrap_or(1))
}

/// A line for stderr when the task did not simply exit (a plain non-zero exit speaks for
/// itself, as in a shell).
pub fn ending_note(task: &TaskView) -> Option<String> {
    let id = task.id;
    match (task.state, &task.result) {
        (TaskState::Done, Some(result)) => match result.status {
            Status::Success | Status::Failed => None,
            _ => {
                let mut note = format!("task {id} ended: {}", outcome(result));
                if let Some(message) = &result.message {
                    note.push_str(": ");
                    note.push_str(message);
                }
                Some(note)
            }
        },
        (state, _) => {
            let mut note = format!("task {id} is {state}");
            if let Some(reason) = &task.reason {
                note.push_str(": ");
                note.push_str(reason);
            }
            Some(note)
        }
    }
}
