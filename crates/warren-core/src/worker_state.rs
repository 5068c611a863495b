//! A worker's lifecycle (Boruta's states), as a pure transition rule like the task's
//! [`crate::task::transition`].
//!
//! ```text
//! first registration  -> MAINTENANCE (or PREPARE -> IDLE when it asks to start at once)
//! set IDLE               MAINTENANCE -> PREPARE -> IDLE, or FAILED if the prepare hook fails
//! task started, ended    IDLE <-> RUNNING
//! set MAINTENANCE        any -> BUSY (no new work) -> drained, maintenance hook -> MAINTENANCE
//! failure                any -> FAILED with its reason (reported, health check, heartbeats)
//! registered again       other capabilities, environments or resources: -> BUSY -> MAINTENANCE;
//!                        unchanged and FAILED: -> PREPARE -> IDLE
//! deregister             from MAINTENANCE or FAILED only
//! ```
//!
//! An operator's maintenance wins over failures: a failure in MAINTENANCE changes nothing, and the
//! worker can still be deregistered. Group changes apply in every state.

use std::fmt;

use crate::task::WorkerState;

/// Something that happens to a worker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum WorkerEvent {
    /// It registered: for the first time when its state is `None`, else again (a reconnection).
    Register {
        /// It registered before with other capabilities, environments or resources.
        caps_changed: bool,
        /// A new worker asks to take work at once (PREPARE, then IDLE) instead of waiting in
        /// MAINTENANCE for an operator.
        straight_to_idle: bool,
    },
    /// An operator sets it IDLE.
    AdminSetIdle,
    /// An operator sets it MAINTENANCE.
    AdminSetMaintenance,
    /// Its prepare hook succeeded.
    PrepareSucceeded,
    /// Its prepare hook failed.
    PrepareFailed {
        /// What the hook said.
        reason: String,
    },
    /// BUSY and no task runs on it any more.
    DrainFinished,
    /// Its maintenance hook finished.
    MaintenanceHookDone,
    /// It reported itself broken.
    ReportedFailure {
        /// What it said.
        reason: String,
    },
    /// Its health check failed.
    HealthCheckFailed {
        /// What the check said.
        reason: String,
    },
    /// It stayed silent past its heartbeat limit (or its connection closed).
    HeartbeatsMissed,
    /// A task started on it.
    TaskStarted,
    /// The last task running on it ended.
    LastTaskEnded,
    /// An operator removes it.
    Deregister,
    /// An operator changed its groups.
    GroupsChanged,
}

impl WorkerEvent {
    /// The event's name in messages.
    pub fn name(&self) -> &'static str {
        match self {
            WorkerEvent::Register { .. } => "register",
            WorkerEvent::AdminSetIdle => "set IDLE",
            WorkerEvent::AdminSetMaintenance => "set MAINTENANCE",
            WorkerEvent::PrepareSucceeded => "prepare succeeded",
            WorkerEvent::PrepareFailed { .. } => "prepare failed",
            WorkerEvent::DrainFinished => "drain finished",
            WorkerEvent::MaintenanceHookDone => "maintenance hook done",
            WorkerEvent::ReportedFailure { .. } => "reported failure",
            WorkerEvent::HealthCheckFailed { .. } => "health check failed",
            WorkerEvent::HeartbeatsMissed => "heartbeats missed",
            WorkerEvent::TaskStarted => "task started",
            WorkerEvent::LastTaskEnded => "last task ended",
            WorkerEvent::Deregister => "deregister",
            WorkerEvent::GroupsChanged => "groups changed",
        }
    }

    /// The reason to keep when this event makes the worker FAILED.
    pub fn failure_reason(&self) -> Option<String> {
        match self {
            WorkerEvent::PrepareFailed { reason } => Some(format!("prepare hook failed: {reason}")),
            WorkerEvent::ReportedFailure { reason } => Some(format!("worker reported: {reason}")),
            WorkerEvent::HealthCheckFailed { reason } => {
                Some(format!("health check failed: {reason}"))
            }
            WorkerEvent::HeartbeatsMissed => Some("heartbeats missed".to_string()),
            _ => None,
        }
    }

    /// One event of each kind, for listing what a state allows.
    fn kinds() -> [WorkerEvent; 14] {
        [
            WorkerEvent::Register {
                caps_changed: false,
                straight_to_idle: false,
            },
            WorkerEvent::AdminSetIdle,
            WorkerEvent::AdminSetMaintenance,
            WorkerEvent::PrepareSucceeded,
            WorkerEvent::PrepareFailed {
                reason: String::new(),
            },
            WorkerEvent::DrainFinished,
            WorkerEvent::MaintenanceHookDone,
            WorkerEvent::ReportedFailure {
                reason: String::new(),
            },
            WorkerEvent::HealthCheckFailed {
                reason: String::new(),
            },
            WorkerEvent::HeartbeatsMissed,
            WorkerEvent::TaskStarted,
            WorkerEvent::LastTaskEnded,
            WorkerEvent::Deregister,
            WorkerEvent::GroupsChanged,
        ]
    }
}

/// What the coordinator must do for an event.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WorkerTransition {
    /// Enter this state and do what entering it means (entering the state it is already in does
    /// it again): PREPARE, run the prepare hook; BUSY, give it no new work and send
    /// [`WorkerEvent::DrainFinished`] once nothing runs on it; FAILED, keep the event's
    /// [`WorkerEvent::failure_reason`].
    Enter(WorkerState),
    /// Stay BUSY and run the maintenance hook: it has drained.
    RunMaintenanceHook,
    /// Nothing changes.
    Unchanged,
    /// Forget the worker.
    Remove,
}

/// Whether a worker in `state` takes new tasks (when it has a free slot).
pub fn accepts_work(state: WorkerState) -> bool {
    matches!(state, WorkerState::Idle | WorkerState::Running)
}

/// An event that does not apply in the worker's state (the API answers 409 with it).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub struct WorkerTransitionError {
    /// The worker's state; `None` when it is not registered.
    pub state: Option<WorkerState>,
    /// What was attempted.
    pub event: &'static str,
    /// The states in which the event applies.
    pub allowed_in: Vec<WorkerState>,
    /// The events that apply in the worker's state.
    pub allowed_events: Vec<&'static str>,
}

impl fmt::Display for WorkerTransitionError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let names = |states: &[WorkerState]| -> String {
            let names: Vec<&str> = states.iter().map(|s| s.name()).collect();
            names.join(", ")
        };
        match self.state {
            None => write!(
                f,
                "the worker is not registered: {} needs a registered worker",
                self.event
            )?,
            Some(state) => write!(f, "the worker is {state}: {} does not apply", self.event)?,
        }
        if !self.allowed_in.is_empty() {
            write!(f, " (only in {})", names(&self.allowed_in))?;
        }
        write!(
            f,
            "; {} allows: {}",
            self.state.map_or("an unregistered worker", |s| s.name()),
            self.allowed_events.join(", ")
        )
    }
}

/// The lifecycle rule; `state` is `None` for a worker that is not registered.
pub fn transition(
    state: Option<WorkerState>,
    event: &WorkerEvent,
) -> Result<WorkerTransition, WorkerTransitionError> {
    rule(state, event).ok_or_else(|| WorkerTransitionError {
        state,
        event: event.name(),
        allowed_in: ALL_STATES
            .into_iter()
            .filter(|&s| rule(Some(s), event).is_some())
            .collect(),
        allowed_events: WorkerEvent::kinds()
            .iter()
            .filter(|e| rule(state, e).is_some())
            .map(WorkerEvent::name)
            .collect(),
    })
}

const ALL_STATES: [WorkerState; 6] = [
    WorkerState::Maintenance,
    WorkerState::Idle,
    WorkerState::Running,
    WorkerState::Failed,
    WorkerState::Prepare,
    WorkerState::Busy,
];

fn rule(state: Option<WorkerState>, event: &WorkerEvent) -> Option<WorkerTransition> {
    use WorkerEvent as E;
    use WorkerState::*;
    use WorkerTransition::{Enter, Remove, RunMaintenanceHook, Unchanged};
    let Some(state) = state else {
        return match event {
            E::Register {
                straight_to_idle, ..
            } => Some(Enter(if *straight_to_idle {
                Prepare
            } else {
                Maintenance
            })),
            _ => None,
        };
    };
    Some(match (event, state) {
        // A worker that comes back offering something else (capabilities, environments,
        // resources: `WorkerView::offer_changes`) is drained and waits for an operator.
        (
            E::Register {
                caps_changed: true, ..
            },
            Maintenance,
        ) => Unchanged,
        (
            E::Register {
                caps_changed: true, ..
            },
            _,
        ) => Enter(Busy),
        // Back unchanged: a failed worker is prepared again; a hook cut short runs again.
        (E::Register { .. }, Failed) => Enter(Prepare),
        (E::Register { .. }, Prepare | Busy) => Enter(state),
        (E::Register { .. }, Maintenance | Idle | Running) => Unchanged,
        (E::AdminSetIdle, Maintenance) => Enter(Prepare),
        (E::AdminSetIdle, _) => return None,
        (E::AdminSetMaintenance, Maintenance | Busy) => Unchanged,
        (E::AdminSetMaintenance, _) => Enter(Busy),
        (E::PrepareSucceeded, Prepare) => Enter(Idle),
        (E::PrepareFailed { .. }, Prepare) => Enter(Failed),
        (E::PrepareSucceeded | E::PrepareFailed { .. }, _) => return None,
        (E::DrainFinished, Busy) => RunMaintenanceHook,
        (E::MaintenanceHookDone, Busy) => Enter(Maintenance),
        (E::DrainFinished | E::MaintenanceHookDone, _) => return None,
        // The operator's maintenance wins; the first failure's reason is kept.
        (E::ReportedFailure { .. } | E::HealthCheckFailed { .. } | E::HeartbeatsMissed, s) => {
            match s {
                Maintenance | Failed => Unchanged,
                _ => Enter(Failed),
            }
        }
        (E::TaskStarted, Idle) => Enter(Running),
        (E::TaskStarted, Running) => Unchanged,
        (E::TaskStarted, _) => return None,
        // Tasks outlive connections, so one may end in any state.
        (E::LastTaskEnded, Running) => Enter(Idle),
        (E::LastTaskEnded, _) => Unchanged,
        (E::Deregister, Maintenance | Failed) => Remove,
        (E::Deregister, _) => return None,
        (E::GroupsChanged, _) => Unchanged,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every state (and "not registered") against every event. Codes: a state's initial (`M`
    /// MAINTENANCE, `I` IDLE, `R` RUNNING, `F` FAILED, `P` PREPARE, `B` BUSY) enters it, `h` runs
    /// the maintenance hook, `=` unchanged, `x` removed, `!` refused.
    #[test]
    fn every_state_and_event() {
        let register = |caps_changed, straight_to_idle| WorkerEvent::Register {
            caps_changed,
            straight_to_idle,
        };
        let reason = || "disk full".to_string();
        let events = [
            register(false, false),
            register(true, false),
            register(false, true),
            WorkerEvent::AdminSetIdle,
            WorkerEvent::AdminSetMaintenance,
            WorkerEvent::PrepareSucceeded,
            WorkerEvent::PrepareFailed { reason: reason() },
            WorkerEvent::DrainFinished,
            WorkerEvent::MaintenanceHookDone,
            WorkerEvent::ReportedFailure { reason: reason() },
            WorkerEvent::HealthCheckFailed { reason: reason() },
            WorkerEvent::HeartbeatsMissed,
            WorkerEvent::TaskStarted,
            WorkerEvent::LastTaskEnded,
            WorkerEvent::Deregister,
            WorkerEvent::GroupsChanged,
        ];
        // Columns: register (unchanged, other capabilities, straight to IDLE); set IDLE, set
        // MAINTENANCE; prepare succeeded, prepare failed, drain finished, maintenance hook done;
        // reported failure, health check failed, heartbeats missed; task started, last task
        // ended; deregister; groups changed.
        const TABLE: &str = "
            unregistered  M M P  ! !  ! ! ! !  ! ! !  ! !  !  !
            MAINTENANCE   = = =  P =  ! ! ! !  = = =  ! =  x  =
            IDLE          = B =  ! B  ! ! ! !  F F F  R =  !  =
            RUNNING       = B =  ! B  ! ! ! !  F F F  = I  !  =
            FAILED        P B P  ! B  ! ! ! !  = = =  ! =  x  =
            PREPARE       P B P  ! B  I F ! !  F F F  ! =  !  =
            BUSY          B B B  ! =  ! ! h M  F F F  ! =  !  =
        ";
        let table = TABLE.lines().filter(|l| !l.trim().is_empty()).map(|line| {
            let mut words = line.split_whitespace();
            let name = words.next().unwrap_or_default();
            let state = ALL_STATES.into_iter().find(|s| s.name() == name);
            assert!(state.is_some() || name == "unregistered", "{name}");
            (state, words.collect::<Vec<&str>>())
        });
        assert_eq!(table.clone().count(), ALL_STATES.len() + 1);
        for (state, codes) in table {
            assert_eq!(codes.len(), events.len(), "{state:?}");
            for (event, code) in events.iter().zip(codes) {
                let got = match transition(state, event) {
                    Ok(WorkerTransition::Enter(s)) => &s.name()[..1],
                    Ok(WorkerTransition::RunMaintenanceHook) => "h",
                    Ok(WorkerTransition::Unchanged) => "=",
                    Ok(WorkerTransition::Remove) => "x",
                    Err(_) => "!",
                };
                assert_eq!(got, code, "{state:?} {event:?}");
            }
        }
    }

    #[test]
    fn refusals_name_the_state_and_what_is_allowed() {
        let err = transition(Some(WorkerState::Running), &WorkerEvent::AdminSetIdle)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "the worker is RUNNING: set IDLE does not apply (only in MAINTENANCE); RUNNING \
                 allows: register, set MAINTENANCE, reported failure, health check failed, \
                 heartbeats missed, task started, last task ended, groups changed"
            )
        );
        let err = transition(Some(WorkerState::Idle), &WorkerEvent::Deregister).err();
        assert_eq!(
            err.as_ref().map(|e| e.allowed_in.clone()),
            Some(vec![WorkerState::Maintenance, WorkerState::Failed])
        );
        let err = transition(None, &WorkerEvent::TaskStarted)
            .err()
            .map(|e| e.to_string());
        assert_eq!(
            err.as_deref(),
            Some(
                "the worker is not registered: task started needs a registered worker (only in \
                 IDLE, RUNNING); an unregistered worker allows: register"
            )
        );
    }

    #[test]
    fn failures_keep_their_reason() {
        let reason = |e: WorkerEvent| e.failure_reason();
        assert_eq!(
            reason(WorkerEvent::PrepareFailed {
                reason: "exit 3".into()
            })
            .as_deref(),
            Some("prepare hook failed: exit 3")
        );
        assert_eq!(
            reason(WorkerEvent::HealthCheckFailed {
                reason: "no /dev/kvm".into()
            })
            .as_deref(),
            Some("health check failed: no /dev/kvm")
        );
        assert_eq!(
            reason(WorkerEvent::HeartbeatsMissed).as_deref(),
            Some("heartbeats missed")
        );
        assert_eq!(reason(WorkerEvent::TaskStarted), None);
        assert!(accepts_work(WorkerState::Idle) && accepts_work(WorkerState::Running));
        assert!(!accepts_work(WorkerState::Busy) && !accepts_work(WorkerState::Prepare));
    }
}
