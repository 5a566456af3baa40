//! What can go wrong starting and stopping a task. Every message names the task, the cause
//! and the fix (STYLE.md §5), because it reaches an operator through the agent's report.

use std::io;
use std::path::PathBuf;
use std::time::Duration;

/// A task could not be started or stopped.
#[derive(Debug, thiserror::Error)]
pub enum RuntimeError {
    /// The spec is unusable as given. Nothing was created.
    #[error("task {task}: {problem}")]
    Spec { task: String, problem: String },

    /// The task's network namespace is missing. Nothing was created.
    #[error(
        "task {task}: netns {} does not exist: the agent must create the task's namespace first",
        path.display()
    )]
    NoNetns { task: String, path: PathBuf },

    /// The path exists but is no network namespace (e.g. a leftover file after a failed
    /// `ip netns del`). Nothing was created.
    #[error(
        "task {task}: {} is not a network namespace: give the path of one (a bind mount of /proc/PID/ns/net, as `ip netns add` makes)",
        path.display()
    )]
    NotNetns { task: String, path: PathBuf },

    /// The namespace could not be opened or inspected. Nothing was created.
    #[error(
        "task {task}: cannot open netns {}: {source}: the agent needs root (CAP_SYS_ADMIN)",
        path.display()
    )]
    Netns {
        task: String,
        path: PathBuf,
        source: io::Error,
    },

    /// A host file the task's own copy is mounted over does not exist. Nothing was created.
    #[error(
        "task {task}: {} does not exist on this host: create it (an empty file will do), the task's own copy is mounted over it",
        path.display()
    )]
    MissingHostFile { task: String, path: PathBuf },

    /// The task's generated files (resolv.conf, hosts, hostname) could not be written. What
    /// was written is removed again.
    #[error(
        "task {task}: cannot write {}: {source}: the runtime's state directory must be writable by the agent",
        path.display()
    )]
    Files {
        task: String,
        path: PathBuf,
        source: io::Error,
    },

    /// The log file could not be opened. The task's generated files are removed again.
    #[error(
        "task {task}: cannot open its log {}: {source}: the log's folder must be writable by the agent",
        path.display()
    )]
    Log {
        task: String,
        path: PathBuf,
        source: io::Error,
    },

    /// Setting up the child's namespaces failed (the child never ran the command). Its
    /// generated files are removed again.
    #[error(
        "task {task}: {step} failed in the new process: {source}: the agent needs root (CAP_SYS_ADMIN) and a kernel with mount and UTS namespaces"
    )]
    Setup {
        task: String,
        step: &'static str,
        source: io::Error,
    },

    /// The command could not be executed. Its generated files are removed again.
    #[error("task {task}: cannot run {program:?}: {source}: check the command and the PATH")]
    Exec {
        task: String,
        program: String,
        source: io::Error,
    },

    /// The thread that watches the task could not be started. The task's process was
    /// killed and its generated files removed.
    #[error(
        "task {task}: cannot start a thread to watch it: {source}: the agent is out of threads or memory"
    )]
    Thread { task: String, source: io::Error },

    /// A task with this id runs already. It is left running.
    #[error("task {task} is running already: stop it before starting it again")]
    AlreadyRunning { task: String },

    /// No task with this id was started (or it was stopped and forgotten). Nothing changed.
    #[error("task {task} is not known to this runtime: start it first")]
    Unknown { task: String },

    /// The task's process did not end after SIGKILL: it is stuck in the kernel. The task
    /// is still recorded as running, so a later stop may try again.
    #[error(
        "task {task}: pid {pid} did not end {waited:?} after SIGKILL: it is stuck in the kernel (uninterruptible sleep); see /proc/{pid}/stack"
    )]
    Unkillable {
        task: String,
        pid: u32,
        waited: Duration,
    },
}
