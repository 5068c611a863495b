//! The pure rules behind the coordinator's Pythia-compatible HTTP frontends (`/execute`,
//! `/api/execute`): which task ids may name a file in the tasks directory, how Pythia's Go
//! servers read their JSON and their `?async=` flag, how long a blocking execution waits, and
//! the schedule on which a result is delivered to a callback.

use std::time::Duration;

use serde_json::{Map, Value};

/// Whether `tid` can name `TASKS_DIR/<tid>.task`: non-empty, at most 255 bytes, no path
/// separator, no `..`, no NUL or other control character, so it never names a file outside the
/// directory.
pub fn check_tid(tid: &str) -> Result<(), String> {
    if tid.is_empty() {
        return Err("is empty".into());
    }
    if tid.len() > 255 {
        return Err("is longer than 255 bytes".into());
    }
    if tid.contains(['/', '\\']) {
        return Err(format!(
            "`{}` contains a path separator",
            tid.escape_debug()
        ));
    }
    if tid.contains("..") {
        return Err(format!("`{}` contains `..`", tid.escape_debug()));
    }
    if tid.contains('\0') {
        return Err("contains a NUL byte".into());
    }
    if tid.chars().any(char::is_control) {
        return Err(format!(
            "`{}` contains a control character",
            tid.escape_debug()
        ));
    }
    Ok(())
}

/// Go's `strconv.ParseBool`, which pythia-server applies to `?async=`.
pub fn parse_go_bool(text: &str) -> Option<bool> {
    match text {
        "1" | "t" | "T" | "TRUE" | "true" | "True" => Some(true),
        "0" | "f" | "F" | "FALSE" | "false" | "False" => Some(false),
        _ => None,
    }
}

/// A string field of a request as Go's `encoding/json` decodes it into a struct: the key
/// matches exactly or, failing that, case-insensitively; `null` or absence is the empty string;
/// any other type is an error saying what it should be (the caller names the field).
pub fn go_string_field(object: &Map<String, Value>, name: &str) -> Result<String, String> {
    let value = object.get(name).or_else(|| {
        object
            .iter()
            .find(|(key, _)| key.eq_ignore_ascii_case(name))
            .map(|(_, value)| value)
    });
    match value {
        None | Some(Value::Null) => Ok(String::new()),
        Some(Value::String(s)) => Ok(s.clone()),
        Some(other) => Err(format!("must be a string, not {other}")),
    }
}

/// How long a blocking execution waits for its task to end: the task's own wall-time limit (or
/// `unlimited` when it has none) plus `margin` for queueing and start-up.
pub fn execution_wait(
    wall_time: Option<Duration>,
    unlimited: Duration,
    margin: Duration,
) -> Duration {
    wall_time.unwrap_or(unlimited).saturating_add(margin)
}

/// Attempts made to deliver a result to a callback before giving up.
pub const CALLBACK_ATTEMPTS: u32 = 4;

/// The pause before callback attempt `attempt` (0 is the first, sent at once): `first`, then
/// doubling.
pub fn callback_backoff(attempt: u32, first: Duration) -> Duration {
    match attempt {
        0 => Duration::ZERO,
        n => first.saturating_mul(1 << (n - 1).min(16)),
    }
}

/// Whether a callback that answered HTTP `status` is tried again: its server failed (5xx),
/// timed out (408) or asked to slow down (429). Any other refusal is final, and 2xx is delivered.
pub fn callback_retryable(status: u16) -> bool {
    matches!(status, 408 | 429 | 500..=599)
}

/// The name a Pythia task file uses for a field of the task spec made from it (`limits.time`
/// for `limits.wall_time`, `input` for `stdin`), so an error points at what its author wrote.
pub fn pythia_field(spec_field: &str) -> String {
    match spec_field {
        "limits.wall_time" => "limits.time".into(),
        "stdin" | "stdin_base64" => "input".into(),
        other => other.to_string(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn task_ids_never_leave_the_directory() {
        for ok in [
            "hello-world",
            "execute-python",
            "c+make",
            "hello.v2",
            "a b",
            "é",
        ] {
            assert_eq!(check_tid(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("", "empty"),
            ("../etc/passwd", "separator"),
            ("..", "`..`"),
            ("a..b", "`..`"),
            ("sub/task", "separator"),
            ("/abs", "separator"),
            ("back\\slash", "separator"),
            ("nul\0", "NUL"),
            ("line\nbreak", "control"),
        ] {
            let err = check_tid(bad).err().unwrap_or_default();
            assert!(err.contains(why), "{bad:?}: {err}");
        }
        assert!(check_tid(&"x".repeat(256)).is_err());
    }

    #[test]
    fn go_booleans() {
        for (text, want) in [
            ("true", Some(true)),
            ("1", Some(true)),
            ("T", Some(true)),
            ("True", Some(true)),
            ("false", Some(false)),
            ("0", Some(false)),
            ("F", Some(false)),
            ("yes", None),
            ("", None),
            ("tRUE", None),
        ] {
            assert_eq!(parse_go_bool(text), want, "{text:?}");
        }
    }

    #[test]
    fn fields_match_as_go_decodes_them() {
        let object = |text: &str| match serde_json::from_str::<Value>(text) {
            Ok(Value::Object(map)) => map,
            other => panic!("{other:?}"),
        };
        for (body, want) in [
            (r#"{"tid": "a"}"#, Ok("a")),
            (r#"{"Tid": "a"}"#, Ok("a")),
            (r#"{"TID": "a", "tid": "exact"}"#, Ok("exact")),
            (r#"{"tid": null}"#, Ok("")),
            (r#"{}"#, Ok("")),
            (r#"{"tid": 5}"#, Err("5")),
            (r#"{"tid": ["a"]}"#, Err("[\"a\"]")),
        ] {
            let got = go_string_field(&object(body), "tid");
            match want {
                Ok(want) => assert_eq!(got.as_deref(), Ok(want), "{body}"),
                Err(shown) => {
                    let err = got.err().unwrap_or_default();
                    assert!(
                        err.contains("must be a string") && err.contains(shown),
                        "{err}"
                    );
                }
            }
        }
    }

    #[test]
    fn blocking_wait_is_the_time_limit_plus_a_margin() {
        let s = Duration::from_secs;
        assert_eq!(execution_wait(Some(s(60)), s(300), s(30)), s(90));
        assert_eq!(execution_wait(None, s(300), s(30)), s(330));
        assert_eq!(
            execution_wait(Some(Duration::MAX), s(1), s(1)),
            Duration::MAX
        );
    }

    #[test]
    fn callback_backoff_doubles_and_is_bounded() {
        let ms = Duration::from_millis;
        let delays: Vec<Duration> = (0..CALLBACK_ATTEMPTS)
            .map(|a| callback_backoff(a, ms(250)))
            .collect();
        assert_eq!(delays, [ms(0), ms(250), ms(500), ms(1000)]);
        assert_eq!(callback_backoff(40, ms(1)), ms(1 << 16));
        for (status, retry) in [
            (500, true),
            (503, true),
            (408, true),
            (429, true),
            (400, false),
            (404, false),
            (301, false),
        ] {
            assert_eq!(callback_retryable(status), retry, "{status}");
        }
    }

    #[test]
    fn spec_fields_read_as_pythia_names_them() {
        for (spec, pythia) in [
            ("limits.wall_time", "limits.time"),
            ("limits.memory", "limits.memory"),
            ("limits.disk", "limits.disk"),
            ("stdin", "input"),
            ("taskfs", "taskfs"),
            ("environment", "environment"),
        ] {
            assert_eq!(pythia_field(spec), pythia);
        }
    }
}
