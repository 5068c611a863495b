//! `warren logs ID [--follow]`: a task's output, stdout to stdout and stderr to stderr.

use std::io::Write;

use anyhow::Context;
use clap::Args;
use warren_client::{OutputStream, TaskId};
use warren_core::task::OutputChunk;

use super::client_args::{block_on, ClientArgs};

/// `warren logs ID [--follow]`
#[derive(Debug, Args)]
pub struct LogsArgs {
    #[command(flatten)]
    pub client: ClientArgs,
    /// Keep following the output as it is written, until the task ends.
    #[arg(long, short)]
    pub follow: bool,
    /// The task's id.
    pub id: TaskId,
}

/// Prints the output; with `--json`, one chunk object (`stream`, `text`, `base64`) per line.
pub fn run(args: LogsArgs) -> anyhow::Result<u8> {
    let client = args.client.connect()?;
    let id = args.id;
    block_on(async {
        let mut output = if args.follow {
            client.output(id).await
        } else {
            client.output_so_far(id).await
        }
        .with_context(|| format!("output of task {id}"))?;
        while let Some(chunk) = output
            .next()
            .await
            .with_context(|| format!("output of task {id}"))?
        {
            let written = if args.client.json {
                let line = serde_json::to_string(&OutputChunk::new(chunk.stream, &chunk.data))
                    .context("encoding JSON")?;
                let mut out = std::io::stdout().lock();
                writeln!(out, "{line}").and_then(|()| out.flush())
            } else {
                match chunk.stream {
                    OutputStream::Stdout => {
                        let mut out = std::io::stdout().lock();
                        out.write_all(&chunk.data).and_then(|()| out.flush())
                    }
                    OutputStream::Stderr => {
                        let mut err = std::io::stderr().lock();
                        err.write_all(&chunk.data).and_then(|()| err.flush())
                    }
                }
            };
            if written.is_err() {
                // The reader went away (`warren logs ID | head`): nothing more to do.
                break;
            }
        }
        Ok(0)
    })?
}
