//! A started task: who reaps it, how it is stopped, what it reports.
//!
//! A reaper thread per task blocks in `waitid` until the task's main process ends. Before
//! reaping it, it kills what is left of the task's process group: the task's life is its
//! main process, as in a container whose PID 1 exits. It reaps under the task's lock, and
//! every signal is sent under that lock while the task has not been reaped, so a signal to
//! `-pgid` always reaches this task's group and never a newcomer that reused the number.

use std::fs::File;
use std::os::fd::OwnedFd;
use std::process::Child;
use std::sync::{Arc, Condvar, Mutex, MutexGuard};
use std::time::Duration;

use dataplane::types::Timestamp;
use nix::errno::Errno;
use nix::sys::signal::{Signal, killpg};
use nix::sys::wait::{Id, WaitPidFlag, waitid};
use nix::unistd::Pid;

use super::error::RuntimeError;
use super::exit::{ExitKind, TaskExit};
use super::health::Health;
use super::spec::TaskSpec;
use super::{Clock, Events, TaskEvent};

/// How long a stop waits after SIGKILL before it calls the process stuck.
pub const KILL_WAIT: Duration = Duration::from_secs(10);

/// Where a task is.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum TaskStatus {
    Running { pid: u32, since: Timestamp },
    Exited(TaskExit),
}

/// How a stop ended the task.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Stopped {
    pub exit: TaskExit,
    pub end: StopEnd,
}

#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum StopEnd {
    /// It had ended before the stop.
    AlreadyExited,
    /// It ended on its own within the connection grace; it was not signalled.
    ExitedInGrace,
    /// It ended after SIGTERM, within the termination grace.
    Terminated,
    /// It ignored SIGTERM for the whole grace and was killed.
    Killed,
}

/// The task's namespaces, opened right after the spawn (while its pid is surely its own):
/// health probes enter them, and holding them keeps them alive as long as the task is.
#[derive(Debug)]
pub(super) struct Namespaces {
    pub(super) net: OwnedFd,
    pub(super) mnt: OwnedFd,
    pub(super) uts: OwnedFd,
}

impl Namespaces {
    fn open(pid: u32) -> std::io::Result<Namespaces> {
        let open = |kind: &str| File::open(format!("/proc/{pid}/ns/{kind}")).map(OwnedFd::from);
        Ok(Namespaces {
            net: open("net")?,
            mnt: open("mnt")?,
            uts: open("uts")?,
        })
    }
}

#[derive(Debug, Default)]
struct State {
    exit: Option<TaskExit>,
    /// A stop began: health probes end.
    stopping: bool,
    health: Option<Health>,
}

#[derive(Debug)]
struct Shared {
    spec: TaskSpec,
    pid: u32,
    started: Timestamp,
    clock: Clock,
    namespaces: Option<Namespaces>,
    state: Mutex<State>,
    changed: Condvar,
    events: Arc<Events>,
}

/// A handle on a started task; clones share it.
#[derive(Clone, Debug)]
pub struct RunningTask {
    shared: Arc<Shared>,
}

impl RunningTask {
    /// Takes over a spawned child: starts its reaper (and its health probes, if it has a
    /// check). On failure the child is killed and reaped.
    pub(super) fn launch(
        spec: TaskSpec,
        mut child: Child,
        clock: Clock,
        events: Arc<Events>,
    ) -> Result<RunningTask, RuntimeError> {
        let pid = child.id();
        let namespaces = Namespaces::open(pid)
            .inspect_err(|e| {
                tracing::warn!(
                    task = spec.name,
                    pid,
                    "cannot open the task's namespaces for health probes: {e}"
                )
            })
            .ok();
        let health = spec.health.clone();
        let task = RunningTask {
            shared: Arc::new(Shared {
                pid,
                started: clock.now(),
                clock,
                namespaces,
                state: Mutex::new(State {
                    health: health.as_ref().map(|_| Health::Starting),
                    ..State::default()
                }),
                changed: Condvar::new(),
                events,
                spec,
            }),
        };
        let thread_error = |source| RuntimeError::Thread {
            task: task.shared.spec.label(),
            source,
        };
        let reaper = task.clone();
        let (child_slot, child_back) = std::sync::mpsc::sync_channel::<Child>(1);
        // The child goes to the reaper through a channel so that it comes back if the
        // thread cannot be started.
        let spawned = std::thread::Builder::new()
            .name(format!("task-{}", task.shared.pid))
            .spawn(move || {
                if let Ok(child) = child_back.recv() {
                    reaper.reap(child);
                }
            });
        if let Err(e) = spawned {
            let _ = killpg(Pid::from_raw(pid as i32), Signal::SIGKILL);
            let _ = child.kill();
            let _ = child.wait();
            return Err(thread_error(e));
        }
        if let Err(e) = child_slot.send(child) {
            // The thread is gone before receiving it: cannot happen, but do not leak it.
            let mut child = e.0;
            let _ = child.kill();
            let _ = child.wait();
            return Err(thread_error(std::io::Error::other(
                "the reaper thread ended",
            )));
        }
        if let Some(check) = health {
            let prober = task.clone();
            let spawned = std::thread::Builder::new()
                .name(format!("health-{pid}"))
                .spawn(move || super::probe::run(&prober, &check));
            if let Err(e) = spawned {
                let _ = task.kill_wait(KILL_WAIT);
                return Err(thread_error(e));
            }
        }
        Ok(task)
    }

    pub fn spec(&self) -> &TaskSpec {
        &self.shared.spec
    }

    pub fn id(&self) -> &str {
        &self.shared.spec.id
    }

    /// The main process's pid, which is also the task's process group id.
    pub fn pid(&self) -> u32 {
        self.shared.pid
    }

    /// When it started, on the runtime's clock.
    pub fn started(&self) -> Timestamp {
        self.shared.started
    }

    pub fn status(&self) -> TaskStatus {
        match self.state().exit {
            Some(exit) => TaskStatus::Exited(exit),
            None => TaskStatus::Running {
                pid: self.shared.pid,
                since: self.shared.started,
            },
        }
    }

    pub fn exit(&self) -> Option<TaskExit> {
        self.state().exit
    }

    /// Its health; `None` without a health check.
    pub fn health(&self) -> Option<Health> {
        self.state().health
    }

    /// Waits up to `timeout` for the task to end.
    pub fn wait(&self, timeout: Duration) -> Option<TaskExit> {
        let state = self.state();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.exit.is_none())
            .unwrap_or_else(|p| p.into_inner());
        state.exit
    }

    /// Stops the task: waits `grace_connections` for it to end on its own (the agent took it
    /// out of the balancer and DNS, so its open connections may finish), then sends SIGTERM
    /// to its process group, waits `grace_term`, then sends SIGKILL. Every wait is bounded:
    /// a process that survives SIGKILL for [`KILL_WAIT`] is an error.
    pub fn stop(
        &self,
        grace_connections: Duration,
        grace_term: Duration,
    ) -> Result<Stopped, RuntimeError> {
        {
            let mut state = self.state();
            state.stopping = true;
            self.shared.changed.notify_all();
            if let Some(exit) = state.exit {
                return Ok(Stopped {
                    exit,
                    end: StopEnd::AlreadyExited,
                });
            }
        }
        let ended = |exit, end| Ok(Stopped { exit, end });
        if let Some(exit) = self.wait(grace_connections) {
            return ended(exit, StopEnd::ExitedInGrace);
        }
        if let Some(exit) = self.signal(Signal::SIGTERM) {
            return ended(exit, StopEnd::ExitedInGrace);
        }
        if let Some(exit) = self.wait(grace_term) {
            return ended(exit, StopEnd::Terminated);
        }
        if let Some(exit) = self.signal(Signal::SIGKILL) {
            return ended(exit, StopEnd::Terminated);
        }
        match self.wait(KILL_WAIT) {
            Some(exit) => ended(exit, StopEnd::Killed),
            None => Err(RuntimeError::Unkillable {
                task: self.shared.spec.label(),
                pid: self.shared.pid,
                waited: KILL_WAIT,
            }),
        }
    }

    /// SIGKILLs the task's group at once and waits up to `timeout` for it to end.
    pub(super) fn kill_wait(&self, timeout: Duration) -> Option<TaskExit> {
        self.state().stopping = true;
        self.shared.changed.notify_all();
        match self.signal(Signal::SIGKILL) {
            Some(exit) => Some(exit),
            None => self.wait(timeout),
        }
    }

    /// Signals the task's process group unless the task has ended (then returns its exit).
    fn signal(&self, signal: Signal) -> Option<TaskExit> {
        let state = self.state();
        if state.exit.is_some() {
            return state.exit;
        }
        // Under the lock, before the reaper reaped the leader: the group id is still ours.
        if let Err(e) = killpg(self.pgid(), signal)
            && e != Errno::ESRCH
        {
            tracing::warn!(task = self.shared.spec.name, "{signal}: {e}");
        }
        None
    }

    /// The runtime's clock (for the health probes).
    pub(super) fn now(&self) -> Timestamp {
        self.shared.clock.now()
    }

    pub(super) fn namespaces(&self) -> Option<&Namespaces> {
        self.shared.namespaces.as_ref()
    }

    /// Waits up to `timeout`; `true` once the task ended or a stop began.
    pub(super) fn wait_done(&self, timeout: Duration) -> bool {
        let state = self.state();
        let (state, _) = self
            .shared
            .changed
            .wait_timeout_while(state, timeout, |s| s.exit.is_none() && !s.stopping)
            .unwrap_or_else(|p| p.into_inner());
        state.exit.is_some() || state.stopping
    }

    /// Records a new health and tells the watchers.
    pub(super) fn set_health(&self, health: Health, at: Timestamp) {
        self.state().health = Some(health);
        tracing::info!(task = self.shared.spec.name, %health, "health");
        self.shared.events.send(TaskEvent::Health {
            task: self.shared.spec.id.clone(),
            health,
            at,
        });
    }

    fn pgid(&self) -> Pid {
        Pid::from_raw(self.shared.pid as i32)
    }

    fn state(&self) -> MutexGuard<'_, State> {
        self.shared.state.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The reaper thread's body.
    fn reap(&self, mut child: Child) {
        let pid = self.pgid();
        // WNOWAIT: see the exit but leave the zombie, which keeps the group id reserved
        // while the leftovers are killed below.
        loop {
            match waitid(Id::Pid(pid), WaitPidFlag::WEXITED | WaitPidFlag::WNOWAIT) {
                Err(Errno::EINTR) => continue,
                Ok(_) => break,
                Err(e) => {
                    tracing::warn!(task = self.shared.spec.name, "waitid: {e}");
                    break;
                }
            }
        }
        let exit = {
            let mut state = self.state();
            if let Err(e) = killpg(pid, Signal::SIGKILL)
                && e != Errno::ESRCH
            {
                tracing::warn!(task = self.shared.spec.name, "killing the leftovers: {e}");
            }
            let kind = child
                .wait()
                .map(ExitKind::from_status)
                .unwrap_or(ExitKind::Unknown);
            let exit = TaskExit {
                kind,
                at: self.shared.clock.now(),
            };
            state.exit = Some(exit);
            self.shared.changed.notify_all();
            exit
        };
        tracing::info!(task = self.shared.spec.name, "ended: {}", exit.kind);
        self.shared.events.send(TaskEvent::Exited {
            task: self.shared.spec.id.clone(),
            exit,
        });
    }
}
