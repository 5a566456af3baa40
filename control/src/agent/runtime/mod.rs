//! The process task runtime (DESIGN.md, "Task runtimes"): a task is a command run as a
//! child process of the agent,
//!
//! - in the network namespace the agent created for it and put its interfaces in;
//! - in its own mount namespace, where generated /etc/resolv.conf (the agent's DNS on
//!   127.0.0.11), /etc/hosts and /etc/hostname are mounted over the host's, and its own UTS
//!   namespace with its hostname;
//! - with its own environment (`SHOAL_TASK_NAME`, `SHOAL_NODE`, ... say who it is) and its
//!   stdout and stderr appended to its log file;
//! - as the leader of its own process group, so that stopping it reaches its children.
//!
//! Read first: [`Runtime`], then `spawn.rs` for what happens between fork and exec.
//!
//! - [`spec`]: [`TaskSpec`], what the agent asks for, checked before anything is created;
//! - [`files`]: the generated /etc files;
//! - `spawn`: the child's namespace setup (async-signal-safe, between fork and exec);
//! - [`task`]: [`RunningTask`]: the reaper, the stop sequence, status;
//! - [`exit`]: [`TaskExit`], how a process ended;
//! - [`restart`]: the restart policy as a pure function of history, exit and time;
//! - [`health`]: health checks and their state machine, on time given as an argument;
//! - `probe`: the shell that runs health probes inside the task's namespaces.
//!
//! What it is not: it does not create the network namespace or the task's interfaces (the
//! agent does), it does not restart tasks by itself (the agent asks [`RestartPolicy`]), and
//! it gives tasks no PID namespace or root filesystem of their own.

pub mod error;
pub mod exit;
pub mod files;
pub mod health;
mod probe;
pub mod restart;
mod spawn;
pub mod spec;
pub mod task;

use std::collections::BTreeMap;
use std::fs::{File, OpenOptions};
use std::os::fd::{AsRawFd, OwnedFd};
use std::path::{Path, PathBuf};
use std::sync::mpsc::{Receiver, Sender, channel};
use std::sync::{Arc, Mutex, MutexGuard};
use std::time::{Duration, Instant};

use dataplane::types::Timestamp;

pub use error::RuntimeError;
pub use exit::{ExitKind, TaskExit};
pub use health::{Health, HealthCheck, HealthMonitor, HealthTest, Probe};
pub use restart::{Restart, RestartCondition, RestartHistory, RestartPolicy};
pub use spec::TaskSpec;
pub use task::{RunningTask, StopEnd, Stopped, TaskStatus};

/// Where the runtime keeps its tasks' generated files.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RuntimeConfig {
    /// One folder per task id, removed when the task is stopped.
    pub state_dir: PathBuf,
}

impl Default for RuntimeConfig {
    fn default() -> Self {
        RuntimeConfig {
            state_dir: PathBuf::from("/run/shoal/tasks"),
        }
    }
}

/// What the runtime tells its watchers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub enum TaskEvent {
    /// The task's main process ended (on its own or stopped).
    Exited { task: String, exit: TaskExit },
    /// Its health changed.
    Health {
        task: String,
        health: Health,
        at: Timestamp,
    },
}

/// The runtime's clock: time since the runtime was made, as the cores take it.
#[derive(Clone, Copy, Debug)]
pub(crate) struct Clock(Instant);

impl Clock {
    #[allow(clippy::disallowed_methods)] // shell: the origin of the runtime's clock
    fn start() -> Clock {
        Clock(Instant::now())
    }

    pub(crate) fn now(&self) -> Timestamp {
        Timestamp(u64::try_from(self.0.elapsed().as_nanos()).unwrap_or(u64::MAX))
    }
}

/// The watchers' channels; a watcher that went away is dropped at the next event.
#[derive(Debug, Default)]
pub(crate) struct Events(Mutex<Vec<Sender<TaskEvent>>>);

impl Events {
    pub(crate) fn send(&self, event: TaskEvent) {
        lock(&self.0).retain(|tx| tx.send(event.clone()).is_ok());
    }
}

/// The runtime: starts, stops and watches the node's tasks. Dropping it kills the tasks it
/// still runs (an agent that goes away leaves no unsupervised task behind).
#[derive(Debug)]
pub struct Runtime {
    state_dir: PathBuf,
    clock: Clock,
    tasks: Mutex<BTreeMap<String, RunningTask>>,
    events: Arc<Events>,
}

/// `ioctl(fd, NS_GET_NSTYPE)` (linux/nsfs.h): which kind of namespace an nsfs file is.
const NS_GET_NSTYPE: u64 = 0xb703;

impl Runtime {
    pub fn new(config: RuntimeConfig) -> Runtime {
        Runtime {
            state_dir: config.state_dir,
            clock: Clock::start(),
            tasks: Mutex::new(BTreeMap::new()),
            events: Arc::new(Events::default()),
        }
    }

    /// The runtime's clock, which [`TaskExit::at`] and health events are on: what to pass
    /// as `now` to [`RestartPolicy::decide`].
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// A new watcher of exits and health transitions, from now on.
    pub fn events(&self) -> Receiver<TaskEvent> {
        let (tx, rx) = channel();
        lock(&self.events.0).push(tx);
        rx
    }

    /// Starts a task. A task with the same id that ended is replaced (a restart); one that
    /// runs is an error. On error nothing is left behind: no files, no process (a log file
    /// this call created is removed too).
    pub fn start(&self, mut spec: TaskSpec) -> Result<RunningTask, RuntimeError> {
        spec.validate()?;
        let task = spec.label();
        if lock(&self.tasks)
            .get(&spec.id)
            .is_some_and(|t| t.exit().is_none())
        {
            return Err(RuntimeError::AlreadyRunning { task });
        }
        let netns = open_netns(&task, &spec.netns)?;
        if !Path::new("/etc/resolv.conf").exists() {
            return Err(RuntimeError::MissingHostFile {
                task,
                path: "/etc/resolv.conf".into(),
            });
        }
        let dir = self.state_dir.join(&spec.id);
        // A folder of the task's own, removed with it: scratch space (a database's data, a
        // socket) that leaves nothing behind when the task goes.
        spec.env.insert(
            "SHOAL_TASK_DIR".to_owned(),
            dir.join("scratch").display().to_string(),
        );
        let etc = files::write(&dir, &spec).map_err(|(path, source)| {
            let _ = std::fs::remove_dir_all(&dir);
            RuntimeError::Files {
                task: task.clone(),
                path,
                source,
            }
        })?;
        if let Err(source) = std::fs::create_dir_all(dir.join("scratch")) {
            let _ = std::fs::remove_dir_all(&dir);
            return Err(RuntimeError::Files {
                task,
                path: dir.join("scratch"),
                source,
            });
        }
        // Only what the host has can be covered (some hosts have no /etc/hostname).
        let etc: Vec<_> = etc
            .into_iter()
            .filter(|f| f.required || Path::new(f.target).exists())
            .collect();
        let log_existed = spec.log.exists();
        let remove_files = || {
            let _ = std::fs::remove_dir_all(&dir);
            if !log_existed {
                let _ = std::fs::remove_file(&spec.log);
            }
        };
        let log = open_log(&spec.log).map_err(|source| {
            remove_files();
            RuntimeError::Log {
                task: task.clone(),
                path: spec.log.clone(),
                source,
            }
        })?;
        let child = spawn::spawn(&spec, netns, &etc, log).inspect_err(|_| remove_files())?;
        let id = spec.id.clone();
        let running = RunningTask::launch(spec.clone(), child, self.clock, self.events.clone())
            .inspect_err(|_| remove_files())?;
        tracing::info!(task = spec.name, pid = running.pid(), "started");
        lock(&self.tasks).insert(id, running.clone());
        Ok(running)
    }

    /// Stops a task ([`RunningTask::stop`]: connection grace, SIGTERM, termination grace,
    /// SIGKILL) and forgets it, removing its generated files. The agent takes the task out
    /// of the balancer and DNS before. An ended task is forgotten at once.
    pub fn stop(
        &self,
        task_id: &str,
        grace_connections: Duration,
        grace_term: Duration,
    ) -> Result<Stopped, RuntimeError> {
        let task = self.task(task_id).ok_or_else(|| RuntimeError::Unknown {
            task: task_id.to_owned(),
        })?;
        let stopped = task.stop(grace_connections, grace_term)?;
        let mut tasks = lock(&self.tasks);
        // Unless it was started again meanwhile.
        if tasks.get(task_id).is_some_and(|t| t.pid() == task.pid()) {
            tasks.remove(task_id);
            let _ = std::fs::remove_dir_all(self.state_dir.join(task_id));
        }
        Ok(stopped)
    }

    pub fn task(&self, task_id: &str) -> Option<RunningTask> {
        lock(&self.tasks).get(task_id).cloned()
    }

    /// The ids of the tasks it knows (running, or ended and not stopped yet).
    pub fn tasks(&self) -> Vec<String> {
        lock(&self.tasks).keys().cloned().collect()
    }

    pub fn status(&self, task_id: &str) -> Option<TaskStatus> {
        self.task(task_id).map(|t| t.status())
    }

    /// A task's health; `None` for an unknown task or one without a health check.
    pub fn health(&self, task_id: &str) -> Option<Health> {
        self.task(task_id).and_then(|t| t.health())
    }
}

impl Drop for Runtime {
    fn drop(&mut self) {
        let tasks = std::mem::take(&mut *lock(&self.tasks));
        // All killed first, so the waits overlap.
        for task in tasks.values() {
            let _ = task.kill_wait(Duration::ZERO);
        }
        for (id, task) in tasks {
            if task.wait(Duration::from_secs(5)).is_none() {
                tracing::warn!(task = id, pid = task.pid(), "did not end after SIGKILL");
            }
            let _ = std::fs::remove_dir_all(self.state_dir.join(&id));
        }
    }
}

/// Opens the task's network namespace, and says clearly when the path is not one.
fn open_netns(task: &str, path: &Path) -> Result<OwnedFd, RuntimeError> {
    let file = File::open(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => RuntimeError::NoNetns {
            task: task.to_owned(),
            path: path.to_owned(),
        },
        _ => RuntimeError::Netns {
            task: task.to_owned(),
            path: path.to_owned(),
            source,
        },
    })?;
    let not_netns = || RuntimeError::NotNetns {
        task: task.to_owned(),
        path: path.to_owned(),
    };
    let fs = nix::sys::statfs::fstatfs(&file).map_err(|e| RuntimeError::Netns {
        task: task.to_owned(),
        path: path.to_owned(),
        source: e.into(),
    })?;
    if fs.filesystem_type() != nix::sys::statfs::NSFS_MAGIC {
        return Err(not_netns());
    }
    // SAFETY: NS_GET_NSTYPE takes no argument and only inspects the open fd.
    let kind = unsafe { nix::libc::ioctl(file.as_raw_fd(), NS_GET_NSTYPE as _) };
    // Kernels before 4.11 do not know the request (-1): setns in the child still checks.
    if kind >= 0 && kind != nix::libc::CLONE_NEWNET {
        return Err(not_netns());
    }
    Ok(OwnedFd::from(file))
}

fn open_log(path: &Path) -> std::io::Result<File> {
    if let Some(dir) = path.parent()
        && !dir.as_os_str().is_empty()
    {
        std::fs::create_dir_all(dir)?;
    }
    OpenOptions::new().create(true).append(true).open(path)
}

fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}
