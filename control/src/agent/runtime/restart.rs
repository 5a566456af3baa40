//! Whether and when an ended task is started again: Docker's restart policy (condition,
//! delay, max attempts within a window), as a pure function of the task's restart history,
//! how it ended and the time now. The agent consults it for tasks that ended on their own;
//! a task the agent stopped is not restarted.

use std::collections::VecDeque;
use std::time::Duration;

use dataplane::types::Timestamp;

pub use crate::manager::model::RestartCondition;

use super::exit::TaskExit;

/// The restart policy of a service as the runtime applies it: the manager's
/// [`RestartPolicy`](crate::manager::model::RestartPolicy) (condition and attempts) plus
/// the timing Docker also has.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct RestartPolicy {
    pub condition: RestartCondition,
    /// How long after the exit to start again.
    pub delay: Duration,
    /// Restarts allowed (within `window`, or ever without one); `None`: no limit.
    pub max_attempts: Option<u32>,
    /// The period in which `max_attempts` counts; `None`: the task's whole life.
    pub window: Option<Duration>,
}

/// Docker's default delay between an exit and the restart.
pub const DEFAULT_DELAY: Duration = Duration::from_secs(5);

impl Default for RestartPolicy {
    fn default() -> Self {
        RestartPolicy::from(crate::manager::model::RestartPolicy::default())
    }
}

impl From<crate::manager::model::RestartPolicy> for RestartPolicy {
    /// The manager's policy with Docker's defaults for what it does not hold yet (a 5 s
    /// delay, no window).
    fn from(p: crate::manager::model::RestartPolicy) -> Self {
        RestartPolicy {
            condition: p.condition,
            delay: DEFAULT_DELAY,
            max_attempts: p.max_attempts,
            window: None,
        }
    }
}

/// The decision.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[must_use]
pub enum Restart {
    /// Start the task again after this long (zero: now).
    After(Duration),
    No,
}

/// When a task was restarted before. Bounded: only the latest [`RestartHistory::KEPT`]
/// times are kept (enough for any sensible window), and a count of all of them.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct RestartHistory {
    recent: VecDeque<Timestamp>,
    total: u64,
}

impl RestartHistory {
    pub const KEPT: usize = 1024;

    /// Records a restart made at `at`.
    pub fn record(&mut self, at: Timestamp) {
        if self.recent.len() == Self::KEPT {
            self.recent.pop_front();
        }
        self.recent.push_back(at);
        self.total += 1;
    }

    /// All restarts ever recorded.
    pub fn total(&self) -> u64 {
        self.total
    }

    /// Restarts recorded at or after `since`.
    pub fn since(&self, since: Timestamp) -> u64 {
        self.recent.iter().filter(|&&t| t >= since).count() as u64
    }
}

impl RestartPolicy {
    /// Whether to restart a task that ended with `exit`, given its earlier restarts, at
    /// `now`. The delay runs from the exit, so a decision taken late waits only the rest.
    pub fn decide(&self, history: &RestartHistory, exit: &TaskExit, now: Timestamp) -> Restart {
        let wanted = match self.condition {
            RestartCondition::None => false,
            RestartCondition::OnFailure => exit.kind.is_failure(),
            RestartCondition::Any => true,
        };
        if !wanted {
            return Restart::No;
        }
        if let Some(max) = self.max_attempts {
            let made = match self.window {
                Some(window) => {
                    let start = now.0.saturating_sub(nanos(window));
                    history.since(Timestamp(start))
                }
                None => history.total(),
            };
            if made >= u64::from(max) {
                return Restart::No;
            }
        }
        let waited = Duration::from_nanos(now.saturating_sub_nanos(exit.at));
        Restart::After(self.delay.saturating_sub(waited))
    }
}

fn nanos(d: Duration) -> u64 {
    u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)
}

#[cfg(test)]
mod tests {
    use super::super::exit::ExitKind;
    use super::*;

    const S: u64 = 1_000_000_000;

    fn exit(kind: ExitKind, at_s: u64) -> TaskExit {
        TaskExit {
            kind,
            at: Timestamp(at_s * S),
        }
    }

    fn policy(condition: RestartCondition) -> RestartPolicy {
        RestartPolicy {
            condition,
            delay: Duration::from_secs(5),
            max_attempts: None,
            window: None,
        }
    }

    #[test]
    fn conditions() {
        let h = RestartHistory::default();
        let ok = exit(ExitKind::Code(0), 10);
        let failed = exit(ExitKind::Code(2), 10);
        let killed = exit(ExitKind::Signal(9), 10);
        let now = Timestamp(10 * S);
        let none = policy(RestartCondition::None);
        assert_eq!(none.decide(&h, &failed, now), Restart::No);
        let on_failure = policy(RestartCondition::OnFailure);
        assert_eq!(on_failure.decide(&h, &ok, now), Restart::No);
        assert_eq!(
            on_failure.decide(&h, &failed, now),
            Restart::After(Duration::from_secs(5))
        );
        assert_eq!(
            on_failure.decide(&h, &killed, now),
            Restart::After(Duration::from_secs(5))
        );
        let any = policy(RestartCondition::Any);
        assert_eq!(
            any.decide(&h, &ok, now),
            Restart::After(Duration::from_secs(5))
        );
    }

    #[test]
    fn the_delay_runs_from_the_exit() {
        let h = RestartHistory::default();
        let p = policy(RestartCondition::Any);
        let e = exit(ExitKind::Code(1), 10);
        assert_eq!(
            p.decide(&h, &e, Timestamp(13 * S)),
            Restart::After(Duration::from_secs(2))
        );
        assert_eq!(
            p.decide(&h, &e, Timestamp(60 * S)),
            Restart::After(Duration::ZERO)
        );
    }

    #[test]
    fn max_attempts_without_a_window_counts_every_restart() {
        let p = RestartPolicy {
            max_attempts: Some(2),
            ..policy(RestartCondition::Any)
        };
        let mut h = RestartHistory::default();
        let e = exit(ExitKind::Code(1), 0);
        assert!(matches!(p.decide(&h, &e, Timestamp(0)), Restart::After(_)));
        h.record(Timestamp(5 * S));
        assert!(matches!(
            p.decide(&h, &e, Timestamp(5 * S)),
            Restart::After(_)
        ));
        h.record(Timestamp(10 * S));
        assert_eq!(p.decide(&h, &e, Timestamp(1_000_000 * S)), Restart::No);
        let never = RestartPolicy {
            max_attempts: Some(0),
            ..p
        };
        assert_eq!(
            never.decide(&RestartHistory::default(), &e, Timestamp(0)),
            Restart::No
        );
    }

    #[test]
    fn max_attempts_within_a_window_forgets_old_restarts() {
        let p = RestartPolicy {
            max_attempts: Some(2),
            window: Some(Duration::from_secs(60)),
            ..policy(RestartCondition::OnFailure)
        };
        let mut h = RestartHistory::default();
        h.record(Timestamp(10 * S));
        h.record(Timestamp(20 * S));
        let e = exit(ExitKind::Code(1), 30);
        // Both restarts are within the last 60 s at t=30 and at t=70.
        assert_eq!(p.decide(&h, &e, Timestamp(30 * S)), Restart::No);
        assert_eq!(p.decide(&h, &e, Timestamp(70 * S)), Restart::No);
        // At t=75 the first one is older than the window.
        assert_eq!(
            p.decide(&h, &e, Timestamp(75 * S)),
            Restart::After(Duration::ZERO)
        );
    }

    #[test]
    fn the_history_is_bounded_but_keeps_the_total() {
        let mut h = RestartHistory::default();
        for i in 0..(RestartHistory::KEPT as u64 + 10) {
            h.record(Timestamp(i));
        }
        assert_eq!(h.total(), RestartHistory::KEPT as u64 + 10);
        assert_eq!(h.since(Timestamp(0)), RestartHistory::KEPT as u64);
    }

    #[test]
    fn the_managers_policy_gets_dockers_defaults() {
        let p = RestartPolicy::from(crate::manager::model::RestartPolicy {
            condition: RestartCondition::OnFailure,
            max_attempts: Some(3),
        });
        assert_eq!(p.delay, DEFAULT_DELAY);
        assert_eq!(p.max_attempts, Some(3));
        assert_eq!(p.window, None);
    }
}
