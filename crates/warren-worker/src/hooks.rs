//! The operator's hooks: commands run on the host, as the worker's user, when the worker enters
//! service (prepare), periodically while it is idle (health check), and when it leaves service
//! (maintenance, given the operator's message). Each runs in its own process group, which is
//! killed whole at the hook's timeout; its output is kept, bounded.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};
use tokio::process::Command;
use warren_proto::HookReport;

/// Most bytes of each of a hook's output streams kept.
pub const HOOK_OUTPUT_LIMIT: usize = 16 * 1024;

/// The hooks a worker runs; a hook that is not set always succeeds.
#[derive(Debug, Clone)]
pub struct Hooks {
    /// Run (`sh -c`) before entering service; the worker is IDLE only if it succeeds.
    pub prepare: Option<String>,
    /// Run every `health_interval` while the worker is idle; failing makes it FAILED.
    pub health_check: Option<String>,
    /// Time between health checks.
    pub health_interval: Duration,
    /// Run when leaving service; gets the operator's message as `$1` and `WARREN_MESSAGE`.
    pub maintenance: Option<String>,
    /// Longest a hook may run before its process group is killed (and the hook fails), for
    /// each hook that has no timeout of its own.
    pub timeout: Duration,
    /// The prepare hook's own timeout.
    pub prepare_timeout: Option<Duration>,
    /// The health check's own timeout.
    pub health_check_timeout: Option<Duration>,
    /// The maintenance hook's own timeout.
    pub maintenance_timeout: Option<Duration>,
}

impl Hooks {
    /// How long the hook named `name` (`warren_proto::hook::*`) may run.
    pub fn timeout_of(&self, name: &str) -> Duration {
        let own = match name {
            warren_proto::hook::PREPARE => self.prepare_timeout,
            warren_proto::hook::HEALTH_CHECK => self.health_check_timeout,
            warren_proto::hook::MAINTENANCE => self.maintenance_timeout,
            _ => None,
        };
        own.unwrap_or(self.timeout)
    }
}

impl Default for Hooks {
    fn default() -> Self {
        Hooks {
            prepare: None,
            health_check: None,
            health_interval: Duration::from_secs(60),
            maintenance: None,
            timeout: Duration::from_secs(300),
            prepare_timeout: None,
            health_check_timeout: None,
            maintenance_timeout: None,
        }
    }
}

/// Runs `command` with `sh -c` (`message`, when given, as `$1` and `WARREN_MESSAGE`), and reports
/// it as the hook named `name`.
pub async fn run_hook(
    name: &str,
    command: Option<&str>,
    message: Option<&str>,
    worker_id: &str,
    timeout: Duration,
) -> HookReport {
    let report = |ok, output: String, problem: Option<String>| HookReport {
        hook: name.to_string(),
        ok,
        output,
        problem,
    };
    let Some(command) = command else {
        return report(true, String::new(), None);
    };
    let mut cmd = Command::new("/bin/sh");
    cmd.arg("-c")
        .arg(command)
        .arg(format!("warren-{name}"))
        .env("WARREN_HOOK", name)
        .env("WARREN_WORKER_ID", worker_id)
        .stdin(Stdio::null())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .process_group(0)
        .kill_on_drop(true);
    if let Some(message) = message {
        cmd.arg(message).env("WARREN_MESSAGE", message);
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => return report(false, String::new(), Some(format!("could not start: {e}"))),
    };
    let group = child.id();
    let stdout = child.stdout.take().map(|s| tokio::spawn(read_bounded(s)));
    let stderr = child.stderr.take().map(|s| tokio::spawn(read_bounded(s)));
    let started = tokio::time::Instant::now();
    let status = tokio::time::timeout(timeout, child.wait()).await;
    let problem = match &status {
        Err(_) => {
            // Not yet reaped, so the group id is still this hook's.
            if let Some(group) = group {
                let _ = warren_sandbox::kill_process_group(group);
            }
            let _ = child.wait().await;
            Some(format!("timed out after {timeout:?}"))
        }
        Ok(Err(e)) => Some(format!("waiting for it: {e}")),
        Ok(Ok(status)) if status.success() => None,
        Ok(Ok(status)) => Some(match (status.code(), status_signal(status)) {
            (Some(code), _) => format!("exited with code {code}"),
            (None, Some(signal)) => format!("killed by signal {signal}"),
            (None, None) => "ended abnormally".to_string(),
        }),
    };
    // Output it left to background processes is not waited for beyond the hook's own time.
    let left = timeout
        .saturating_sub(started.elapsed())
        .max(Duration::from_millis(100));
    let mut output = String::new();
    for reader in [stdout, stderr].into_iter().flatten() {
        match tokio::time::timeout(left, reader).await {
            Ok(Ok(text)) => output.push_str(&text),
            _ => output.push_str("[output still open when the hook ended]\n"),
        }
    }
    report(problem.is_none(), output, problem)
}

fn status_signal(status: &std::process::ExitStatus) -> Option<i32> {
    use std::os::unix::process::ExitStatusExt;
    status.signal()
}

/// Reads to the end, keeping the first [`HOOK_OUTPUT_LIMIT`] bytes.
async fn read_bounded(mut pipe: impl AsyncRead + Unpin) -> String {
    let mut kept = Vec::new();
    let mut dropped = 0usize;
    let mut buf = [0u8; 4096];
    loop {
        match pipe.read(&mut buf).await {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                let room = HOOK_OUTPUT_LIMIT.saturating_sub(kept.len()).min(n);
                kept.extend_from_slice(&buf[..room]);
                dropped += n - room;
            }
        }
    }
    let mut text = String::from_utf8_lossy(&kept).into_owned();
    if dropped > 0 {
        text.push_str(&format!("\n[{dropped} more bytes not kept]\n"));
    }
    text
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn each_hook_has_its_own_timeout_or_the_common_one() {
        let hooks = Hooks {
            timeout: Duration::from_secs(9),
            prepare_timeout: Some(Duration::from_secs(1)),
            maintenance_timeout: Some(Duration::from_secs(3)),
            ..Hooks::default()
        };
        let of = |name| hooks.timeout_of(name).as_secs();
        assert_eq!(
            [
                of(warren_proto::hook::PREPARE),
                of(warren_proto::hook::HEALTH_CHECK),
                of(warren_proto::hook::MAINTENANCE)
            ],
            [1, 9, 3]
        );
    }
}
