//! A client for Warren's HTTP API.
//!
//! [`Client`] names one coordinator and offers its endpoints as async methods: submit a task
//! ([`Client::submit`]), follow its output live from the first byte ([`Client::output`]), wait for
//! it to finish ([`Client::wait`]), cancel it, list tasks and workers. The request and answer
//! types are those of [`warren_core::task`], so a client and a coordinator built from the same
//! tree agree on every field.
//!
//! Errors say which of three things went wrong ([`Error`]): the coordinator could not be reached,
//! it refused the request (with its own message, naming the bad field), or it answered something
//! this client does not understand.
//!
//! ```no_run
//! use warren_client::{Client, TaskSpec};
//!
//! # async fn example() -> Result<(), warren_client::Error> {
//! let client = Client::new("http://127.0.0.1:7070")?;
//! let spec = TaskSpec {
//!     command: vec!["echo".into(), "hello".into()],
//!     ..TaskSpec::default()
//! };
//! let id = client.submit(&spec).await?;
//! let mut output = client.output(id).await?;
//! while let Some(chunk) = output.next().await? {
//!     print!("{}", String::from_utf8_lossy(&chunk.data));
//! }
//! let task = client.wait(id).await?;
//! println!("task {id} is {}", task.state);
//! if let Some(result) = &task.result {
//!     println!("status {}, exit code {}", result.status, result.process_exit_code());
//! }
//! # Ok(())
//! # }
//! ```
#![forbid(unsafe_code)]
#![deny(missing_docs)]

mod client;
mod error;
mod exit;
mod output;
mod sse;

pub use client::{Client, TaskQuery, WorkerQuery, DEFAULT_SERVER, RECONNECT_BUDGET};
pub use error::{Error, Result};
pub use exit::task_exit_code;
pub use output::{Chunk, Output};
pub use warren_core::task::{
    FileSpec, HookRun, OutputStream, TaskId, TaskPage, TaskSpec, TaskState, TaskUpdate, TaskView,
    WorkerPage, WorkerState, WorkerView,
};
