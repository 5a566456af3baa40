//! Health checks: what a check is, and the state machine that turns probe results into a
//! task's health (Docker's rules), on time given as an argument. The shell that runs the
//! probes is `probe.rs`.
//!
//! Docker's rules: the first probe runs `interval` after the start and each next one
//! `interval` after the previous one ended; a probe slower than `timeout` failed; the task
//! is `Starting` until a probe passes (`Healthy`) or `retries` probes in a row fail
//! (`Unhealthy`); failures within `start_period` of the start do not count, so a slow
//! starter is not marked unhealthy while it boots; any passing probe makes it healthy again.

use std::time::Duration;

use dataplane::types::Timestamp;

/// A health check of a task.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct HealthCheck {
    pub test: HealthTest,
    pub interval: Duration,
    pub timeout: Duration,
    /// Failures in a row that make the task unhealthy (0 counts as 1).
    pub retries: u32,
    pub start_period: Duration,
}

/// What a probe does.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum HealthTest {
    /// Runs the command in the task's network and mount namespaces; exit 0 passes.
    Cmd(Vec<String>),
    /// Connects to 127.0.0.1:port in the task's network namespace; a connection passes.
    TcpConnect(u16),
}

/// Docker's default probe timeout.
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(30);

impl From<&crate::manager::model::HealthCheck> for HealthCheck {
    /// The manager's check with Docker's defaults for what it does not hold yet (a 30 s
    /// timeout, no start period).
    fn from(check: &crate::manager::model::HealthCheck) -> Self {
        use crate::manager::model::HealthCheck as Model;
        let (test, interval_ms, retries) = match check {
            Model::Command {
                command,
                interval_ms,
                retries,
            } => (HealthTest::Cmd(command.clone()), *interval_ms, *retries),
            Model::Tcp {
                port,
                interval_ms,
                retries,
            } => (HealthTest::TcpConnect(*port), *interval_ms, *retries),
        };
        HealthCheck {
            test,
            interval: Duration::from_millis(interval_ms),
            timeout: DEFAULT_TIMEOUT,
            retries,
            start_period: Duration::ZERO,
        }
    }
}

/// A task's health.
#[derive(Clone, Copy, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum Health {
    Starting,
    Healthy,
    Unhealthy,
}

impl std::fmt::Display for Health {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(match self {
            Health::Starting => "starting",
            Health::Healthy => "healthy",
            Health::Unhealthy => "unhealthy",
        })
    }
}

/// What one probe found.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Probe {
    Pass,
    /// Failed, timed out, or could not be run.
    Fail,
}

/// The health state machine of one task. Drive it with [`poll_probe`](Self::poll_probe)
/// at [`poll_timeout`](Self::poll_timeout) and feed each result to
/// [`handle_probe`](Self::handle_probe).
#[derive(Clone, Debug)]
pub struct HealthMonitor {
    interval: Duration,
    retries: u32,
    start_period_end: Timestamp,
    health: Health,
    failures: u32,
    next_probe: Timestamp,
    probing: bool,
}

impl HealthMonitor {
    /// A monitor for a task that started at `started`.
    pub fn new(check: &HealthCheck, started: Timestamp) -> HealthMonitor {
        HealthMonitor {
            interval: check.interval,
            retries: check.retries.max(1),
            start_period_end: after(started, check.start_period),
            health: Health::Starting,
            failures: 0,
            next_probe: after(started, check.interval),
            probing: false,
        }
    }

    pub fn health(&self) -> Health {
        self.health
    }

    /// Failed probes in a row that counted.
    pub fn failures(&self) -> u32 {
        self.failures
    }

    /// When the next probe is due; `None` while one runs (its result decides the next).
    #[must_use]
    pub fn poll_timeout(&self) -> Option<Timestamp> {
        (!self.probing).then_some(self.next_probe)
    }

    /// Whether a probe should start now; if so, it counts as running until its result.
    #[must_use]
    pub fn poll_probe(&mut self, now: Timestamp) -> bool {
        if self.probing || now < self.next_probe {
            return false;
        }
        self.probing = true;
        true
    }

    /// Takes the result of the probe that ended at `now`; returns the new health if it
    /// changed.
    #[must_use]
    pub fn handle_probe(&mut self, now: Timestamp, probe: Probe) -> Option<Health> {
        self.probing = false;
        self.next_probe = after(now, self.interval);
        let before = self.health;
        match probe {
            Probe::Pass => {
                self.failures = 0;
                self.health = Health::Healthy;
            }
            // Docker: while starting, failures within the start period do not count.
            Probe::Fail if self.health == Health::Starting && now < self.start_period_end => {}
            Probe::Fail => {
                self.failures = self.failures.saturating_add(1);
                if self.failures >= self.retries {
                    self.health = Health::Unhealthy;
                }
            }
        }
        (self.health != before).then_some(self.health)
    }
}

fn after(t: Timestamp, d: Duration) -> Timestamp {
    Timestamp(t.0.saturating_add(u64::try_from(d.as_nanos()).unwrap_or(u64::MAX)))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ms(n: u64) -> Timestamp {
        Timestamp::from_millis(n)
    }

    fn check(retries: u32, start_period_ms: u64) -> HealthCheck {
        HealthCheck {
            test: HealthTest::TcpConnect(80),
            interval: Duration::from_millis(100),
            timeout: Duration::from_millis(50),
            retries,
            start_period: Duration::from_millis(start_period_ms),
        }
    }

    /// Runs probes with the given results, each due probe ending 10 ms after it starts, and
    /// returns the transitions with their times.
    fn drive(m: &mut HealthMonitor, results: &[Probe]) -> Vec<(Timestamp, Health)> {
        let mut out = Vec::new();
        for &result in results {
            let due = m.poll_timeout().expect("no probe running");
            assert!(!m.poll_probe(Timestamp(due.0 - 1)), "not before it is due");
            assert!(m.poll_probe(due));
            assert_eq!(m.poll_timeout(), None, "one probe at a time");
            assert!(!m.poll_probe(due));
            let end = after(due, Duration::from_millis(10));
            if let Some(h) = m.handle_probe(end, result) {
                out.push((end, h));
            }
        }
        out
    }

    #[test]
    fn first_probe_one_interval_after_start_then_interval_after_each_end() {
        let mut m = HealthMonitor::new(&check(3, 0), ms(1000));
        assert_eq!(m.poll_timeout(), Some(ms(1100)));
        assert!(m.poll_probe(ms(1100)));
        let _ = m.handle_probe(ms(1130), Probe::Pass);
        assert_eq!(m.poll_timeout(), Some(ms(1230)));
    }

    #[test]
    fn a_passing_probe_makes_it_healthy_once() {
        let mut m = HealthMonitor::new(&check(3, 0), ms(0));
        assert_eq!(m.health(), Health::Starting);
        let t = drive(&mut m, &[Probe::Pass, Probe::Pass]);
        assert_eq!(t, vec![(ms(110), Health::Healthy)]);
    }

    #[test]
    fn retries_failures_in_a_row_make_it_unhealthy() {
        let mut m = HealthMonitor::new(&check(3, 0), ms(0));
        let t = drive(&mut m, &[Probe::Fail, Probe::Fail]);
        assert!(t.is_empty());
        assert_eq!(m.failures(), 2);
        let t = drive(&mut m, &[Probe::Fail]);
        assert_eq!(t, vec![(ms(330), Health::Unhealthy)]);
        // A pass resets the count and heals it; it takes three failures again.
        let t = drive(
            &mut m,
            &[Probe::Pass, Probe::Fail, Probe::Fail, Probe::Pass],
        );
        assert_eq!(t, vec![(ms(440), Health::Healthy)]);
        let t = drive(&mut m, &[Probe::Fail, Probe::Fail, Probe::Fail]);
        assert_eq!(t.len(), 1);
        assert_eq!(t[0].1, Health::Unhealthy);
    }

    #[test]
    fn failures_in_the_start_period_do_not_count() {
        // Probes end at 110, 220, 330, 440, 550: the first three within the 350 ms period.
        let mut m = HealthMonitor::new(&check(2, 350), ms(0));
        let t = drive(&mut m, &[Probe::Fail, Probe::Fail, Probe::Fail]);
        assert!(t.is_empty());
        assert_eq!(m.failures(), 0);
        assert_eq!(m.health(), Health::Starting);
        let t = drive(&mut m, &[Probe::Fail, Probe::Fail]);
        assert_eq!(t, vec![(ms(550), Health::Unhealthy)]);
    }

    #[test]
    fn a_pass_in_the_start_period_ends_it() {
        // After the first pass, failures count even within the start period.
        let mut m = HealthMonitor::new(&check(2, 10_000), ms(0));
        let t = drive(&mut m, &[Probe::Pass, Probe::Fail, Probe::Fail]);
        assert_eq!(
            t,
            vec![(ms(110), Health::Healthy), (ms(330), Health::Unhealthy)]
        );
    }

    #[test]
    fn zero_retries_counts_as_one() {
        let mut m = HealthMonitor::new(&check(0, 0), ms(0));
        let t = drive(&mut m, &[Probe::Fail]);
        assert_eq!(t, vec![(ms(110), Health::Unhealthy)]);
    }

    #[test]
    fn the_managers_check_gets_dockers_defaults() {
        let c = HealthCheck::from(&crate::manager::model::HealthCheck::Tcp {
            port: 8080,
            interval_ms: 500,
            retries: 2,
        });
        assert_eq!(c.test, HealthTest::TcpConnect(8080));
        assert_eq!(c.interval, Duration::from_millis(500));
        assert_eq!(c.timeout, DEFAULT_TIMEOUT);
        assert_eq!(c.retries, 2);
    }
}
