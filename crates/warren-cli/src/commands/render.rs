//! Text for people: aligned tables, a task's details, ages.

use std::fmt::Write as _;

use warren_client::{TaskView, WorkerView};
use warren_core::result::RunResult;
use warren_core::task::Timestamp;

/// Columns aligned on the widest cell; the last column is not padded.
pub fn table(header: &[&str], rows: &[Vec<String>]) -> String {
    let mut widths: Vec<usize> = header.iter().map(|h| h.chars().count()).collect();
    for row in rows {
        for (i, cell) in row.iter().enumerate() {
            if let Some(width) = widths.get_mut(i) {
                *width = (*width).max(cell.chars().count());
            }
        }
    }
    let mut out = String::new();
    let header: Vec<String> = header.iter().map(|h| h.to_string()).collect();
    for row in std::iter::once(&header).chain(rows) {
        let mut line = String::new();
        for (i, cell) in row.iter().enumerate() {
            if i + 1 == row.len() {
                line.push_str(cell);
            } else {
                let pad = widths.get(i).copied().unwrap_or(0);
                let _ = write!(line, "{cell:<pad$}  ");
            }
        }
        out.push_str(line.trim_end());
        out.push('\n');
    }
    out
}

/// How long ago `then` was, compactly (`5s`, `3m`, `2h`, `4d`).
pub fn age(then: Timestamp, now: Timestamp) -> String {
    let secs = (now.unix_ms - then.unix_ms).max(0) / 1000;
    match secs {
        s if s < 60 => format!("{s}s"),
        s if s < 3600 => format!("{}m", s / 60),
        s if s < 86_400 => format!("{}h", s / 3600),
        s => format!("{}d", s / 86_400),
    }
}

/// An argv as a shell would show it, quoting what needs it.
pub fn command_line(argv: &[String]) -> String {
    argv.iter()
        .map(|arg| {
            let plain = !arg.is_empty()
                && arg
                    .chars()
                    .all(|c| c.is_ascii_alphanumeric() || "-_./=:,+@%".contains(c));
            if plain {
                arg.clone()
            } else {
                format!("'{}'", arg.replace('\'', r"'\''"))
            }
        })
        .collect::<Vec<_>>()
        .join(" ")
}

/// Shortens `text` to `max` characters with an ellipsis.
pub fn shorten(text: &str, max: usize) -> String {
    match text.char_indices().nth(max.saturating_sub(1)) {
        Some((cut, _)) if text.chars().count() > max => format!("{}…", &text[..cut]),
        _ => text.to_string(),
    }
}

/// The result in a few words: `success`, `failed (exit code 3)`, `killed (signal 9)`,
/// `timeout (wall_time)`.
pub fn outcome(result: &RunResult) -> String {
    let mut text = result.status.to_string();
    if let Some(limit) = result.limit_hit {
        let _ = write!(text, " ({limit})");
    } else if let Some(signal) = result.signal {
        let _ = write!(text, " (signal {signal})");
    } else if let Some(code) = result.exit_code.filter(|&c| c != 0) {
        let _ = write!(text, " (exit code {code})");
    }
    text
}

/// The state and, when done, the outcome: `DONE: failed (exit code 3)`.
pub fn state_and_outcome(task: &TaskView) -> String {
    match &task.result {
        Some(result) => format!("{}: {}", task.state, outcome(result)),
        None => task.state.to_string(),
    }
}

/// Everything about one task, one field a line; the output itself is left to `warren logs`.
pub fn task_details(task: &TaskView) -> String {
    let mut out = String::new();
    let mut line = |key: &str, value: String| {
        let _ = writeln!(out, "{:<11}{value}", format!("{key}:"));
    };
    line("task", task.id.to_string());
    line("state", state_and_outcome(task));
    line("command", command_line(&task.command));
    if let Some(owner) = &task.owner {
        line("owner", owner.clone());
    }
    line("priority", task.priority.to_string());
    if let Some(worker) = &task.worker {
        line("worker", worker.clone());
    }
    line("created", task.created_at.to_string());
    if let Some(t) = task.started_at {
        line("started", t.to_string());
    }
    if let Some(t) = task.finished_at {
        line("finished", t.to_string());
    }
    if task.attempts > 1 {
        line("attempts", task.attempts.to_string());
    }
    if let Some(reason) = &task.reason {
        line("reason", reason.clone());
    }
    if let Some(result) = &task.result {
        if let Some(message) = &result.message {
            line("message", message.clone());
        }
        let u = &result.usage;
        line(
            "usage",
            format!(
                "wall {}ms, cpu {}ms user + {}ms sys, peak memory {}, peak pids {}, output {} bytes",
                u.wall_ms,
                u.cpu_user_ms,
                u.cpu_sys_ms,
                human_size(u.peak_memory_bytes),
                u.peak_pids,
                u.output_bytes
            ),
        );
        line("exit code", result.process_exit_code().to_string());
    }
    out
}

/// A size rounded for reading: `512K`, `1.5G`, `23.5G` (exact sizes are in `--json`).
pub fn human_size(bytes: u64) -> String {
    const UNITS: [(u64, &str); 4] = [
        (1 << 40, "T"),
        (1 << 30, "G"),
        (1 << 20, "M"),
        (1 << 10, "K"),
    ];
    for (unit, suffix) in UNITS {
        if bytes >= unit {
            let value = bytes as f64 / unit as f64;
            let text = format!("{value:.1}");
            return format!("{}{suffix}", text.trim_end_matches(".0"));
        }
    }
    bytes.to_string()
}

/// The rows of `warren tasks`.
pub fn task_rows(tasks: &[TaskView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = tasks
        .iter()
        .map(|t| {
            vec![
                t.id.to_string(),
                state_and_outcome(t),
                t.priority.to_string(),
                t.worker.clone().unwrap_or_else(|| "-".to_string()),
                age(t.created_at, now),
                shorten(&command_line(&t.command), 60),
            ]
        })
        .collect();
    table(&["ID", "STATE", "PRI", "WORKER", "AGE", "COMMAND"], &rows)
}

/// The rows of `warren workers`.
pub fn worker_rows(workers: &[WorkerView], now: Timestamp) -> String {
    let rows: Vec<Vec<String>> = workers
        .iter()
        .map(|w| {
            let caps = w
                .caps
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect::<Vec<_>>();
            vec![
                w.id.clone(),
                w.state.to_string(),
                format!("{}/{}", w.running, w.capacity),
                if w.memory_bytes == 0 {
                    "-".into()
                } else {
                    human_size(w.memory_bytes)
                },
                if w.milli_cpus == 0 {
                    "-".into()
                } else {
                    format!("{}", w.milli_cpus as f64 / 1000.0)
                },
                w.last_seen.map_or_else(|| "-".to_string(), |t| age(t, now)),
                w.address.clone().unwrap_or_else(|| "-".into()),
                if caps.is_empty() {
                    "-".into()
                } else {
                    caps.join(",")
                },
                if w.groups.is_empty() {
                    "-".into()
                } else {
                    w.groups.join(",")
                },
                w.reason.clone().unwrap_or_else(|| "-".into()),
            ]
        })
        .collect();
    table(
        &[
            "ID", "STATE", "TASKS", "MEMORY", "CPUS", "SEEN", "ADDRESS", "CAPS", "GROUPS", "REASON",
        ],
        &rows,
    )
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tables_align_columns() {
        let rows = vec![
            vec!["1".to_string(), "IN PROGRESS".to_string(), "x".to_string()],
            vec!["100".to_string(), "DONE".to_string(), "echo hi".to_string()],
        ];
        assert_eq!(
            table(&["ID", "STATE", "COMMAND"], &rows),
            "ID   STATE        COMMAND\n1    IN PROGRESS  x\n100  DONE         echo hi\n"
        );
    }

    #[test]
    fn command_lines_quote_what_needs_it() {
        let argv = |a: &[&str]| a.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        assert_eq!(command_line(&argv(&["echo", "hi"])), "echo hi");
        assert_eq!(
            command_line(&argv(&["sh", "-c", "echo $A"])),
            "sh -c 'echo $A'"
        );
        assert_eq!(command_line(&argv(&["it's", ""])), r"'it'\''s' ''");
    }

    #[test]
    fn ages_and_shortening() {
        let t = |s: i64| Timestamp::from_unix_ms(s * 1000);
        assert_eq!(age(t(0), t(5)), "5s");
        assert_eq!(age(t(0), t(180)), "3m");
        assert_eq!(age(t(0), t(7200)), "2h");
        assert_eq!(age(t(0), t(4 * 86_400)), "4d");
        assert_eq!(age(t(10), t(0)), "0s");
        assert_eq!(shorten("abcdef", 4), "abc…");
        assert_eq!(shorten("abcd", 4), "abcd");
        assert_eq!(human_size(24_684_092 * 1024), "23.5G");
        assert_eq!(human_size(8 << 30), "8G");
        assert_eq!(human_size(512 << 10), "512K");
        assert_eq!(human_size(1000), "1000");
    }
}
