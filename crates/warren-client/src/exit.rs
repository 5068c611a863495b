//! The exit code a command-line client ends with for a finished task.

use warren_core::result::exit_codes;
use warren_core::task::{TaskState, TaskView};

/// The exit code for a task in a terminal state, `None` while it is WAITING or IN PROGRESS.
///
/// | state | code |
/// |---|---|
/// | DONE | the result's [`process_exit_code`](warren_core::result::RunResult::process_exit_code): the program's own code, 128 + signal when killed, 124 timeout, 123 memory, 122 overflow, 121 abort, 120 crash / error / fatal |
/// | CANCELLED | 121, as a run aborted while running |
/// | TIMEOUT (its start-by deadline passed while waiting) | 124 |
/// | INVALID (no worker can ever run it) | 120 |
/// | FAILED (its workers were lost too many times) | 120 |
pub fn task_exit_code(task: &TaskView) -> Option<i32> {
    match task.state {
        TaskState::Waiting | TaskState::InProgress => None,
        TaskState::Done => Some(
            task.result
                .as_ref()
                .map_or(exit_codes::CRASH, |result| result.process_exit_code()),
        ),
        TaskState::Cancelled => Some(exit_codes::ABORT),
        TaskState::Timeout => Some(exit_codes::TIMEOUT),
        TaskState::Invalid | TaskState::Failed => Some(exit_codes::CRASH),
    }
}

#[cfg(test)]
mod tests {
    use warren_core::result::{RunResult, Status};
    use warren_core::task::Timestamp;

    use super::*;

    fn task(state: TaskState, result: Option<(Status, Option<i32>, Option<i32>)>) -> TaskView {
        TaskView {
            id: 1,
            state,
            worker: None,
            owner: None,
            priority: 8,
            created_at: Timestamp::from_unix_ms(0),
            started_at: None,
            finished_at: None,
            attempts: 0,
            reason: None,
            command: vec!["true".into()],
            result: result.map(|(status, exit_code, signal)| RunResult {
                status,
                exit_code,
                signal,
                ..RunResult::crash("")
            }),
            valid_after: None,
            deadline: None,
            caps: Default::default(),
            groups: Vec::new(),
        }
    }

    fn check(view: TaskView, expected: Option<i32>) {
        assert_eq!(task_exit_code(&view), expected, "{view:?}");
    }

    #[test]
    fn codes_by_state_and_status() {
        use TaskState::*;
        check(task(Waiting, None), None);
        check(task(InProgress, None), None);
        check(task(Done, Some((Status::Success, Some(0), None))), Some(0));
        check(task(Done, Some((Status::Failed, Some(3), None))), Some(3));
        check(task(Done, Some((Status::Killed, None, Some(9)))), Some(137));
        check(
            task(Done, Some((Status::Timeout, None, Some(9)))),
            Some(124),
        );
        check(task(Done, Some((Status::Memory, None, Some(9)))), Some(123));
        check(
            task(Done, Some((Status::Overflow, None, Some(9)))),
            Some(122),
        );
        check(task(Done, Some((Status::Abort, None, Some(9)))), Some(121));
        check(task(Done, Some((Status::Fatal, None, None))), Some(120));
        check(task(Done, None), Some(120));
        check(task(Cancelled, None), Some(121));
        check(task(Timeout, None), Some(124));
        check(task(Invalid, None), Some(120));
        check(task(Failed, None), Some(120));
    }
}
