//! How a task's process ended.

use std::os::unix::process::ExitStatusExt;
use std::process::ExitStatus;

use dataplane::types::Timestamp;
use nix::sys::signal::Signal;

/// The end of a task's main process, at a time on the runtime's clock.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct TaskExit {
    pub kind: ExitKind,
    pub at: Timestamp,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ExitKind {
    /// It called exit with this code.
    Code(i32),
    /// A signal ended it (its number: real-time signals have no name).
    Signal(i32),
    /// Its status was lost (someone else reaped it); counted as a failure.
    Unknown,
}

impl ExitKind {
    pub fn from_status(status: ExitStatus) -> ExitKind {
        match (status.code(), status.signal()) {
            (Some(code), _) => ExitKind::Code(code),
            (None, Some(signal)) => ExitKind::Signal(signal),
            (None, None) => ExitKind::Unknown,
        }
    }

    /// What Docker's `on-failure` restart condition calls a failure: anything but exit 0.
    pub fn is_failure(self) -> bool {
        self != ExitKind::Code(0)
    }
}

impl std::fmt::Display for ExitKind {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match *self {
            ExitKind::Code(code) => write!(f, "exit code {code}"),
            ExitKind::Signal(n) => match Signal::try_from(n) {
                Ok(signal) => write!(f, "killed by {signal}"),
                Err(_) => write!(f, "killed by signal {n}"),
            },
            ExitKind::Unknown => f.write_str("exit status unknown"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kinds_from_wait_statuses() {
        assert_eq!(
            ExitKind::from_status(ExitStatus::from_raw(3 << 8)),
            ExitKind::Code(3)
        );
        assert_eq!(
            ExitKind::from_status(ExitStatus::from_raw(9)),
            ExitKind::Signal(9)
        );
        assert_eq!(ExitKind::Signal(15).to_string(), "killed by SIGTERM");
        assert!(!ExitKind::Code(0).is_failure());
        assert!(ExitKind::Code(1).is_failure());
        assert!(ExitKind::Signal(9).is_failure());
    }
}
