//! Starting a task's process: the child enters the task's network namespace, gets its own
//! mount and UTS namespaces, mounts the task's /etc files over the host's, takes the task's
//! hostname and becomes the leader of its own process group, then executes the command.
//!
//! That setup runs between fork and exec (`pre_exec`), where only async-signal-safe calls
//! are allowed: no allocation, no locks. So everything it needs (paths as `CString`s, the
//! namespace fd, the hostname) is prepared before the fork and only borrowed there, and the
//! calls are plain system calls. Errors from there reach the parent as a bare errno; to say
//! which step failed, the child writes each step's number to a close-on-exec pipe before
//! taking it, and the parent reads the last one when the spawn fails.

use std::ffi::{CString, OsStr};
use std::fs::File;
use std::io::{self, Read};
use std::os::fd::OwnedFd;
use std::os::unix::ffi::OsStrExt;
use std::os::unix::process::CommandExt;
use std::process::{Child, Command, Stdio};

use nix::errno::Errno;
use nix::fcntl::OFlag;
use nix::mount::MsFlags;
use nix::sched::CloneFlags;

use super::error::RuntimeError;
use super::files::EtcFile;
use super::spec::TaskSpec;

/// The steps of the child's setup, in order; their numbers go through the report pipe.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
#[repr(u8)]
enum Step {
    EnterNetns = 1,
    Unshare = 2,
    MakePrivate = 3,
    MountEtc = 4,
    SetHostname = 5,
    Exec = 6,
}

impl Step {
    fn from_byte(b: u8) -> Option<Step> {
        [
            Step::EnterNetns,
            Step::Unshare,
            Step::MakePrivate,
            Step::MountEtc,
            Step::SetHostname,
            Step::Exec,
        ]
        .into_iter()
        .find(|s| *s as u8 == b)
    }

    fn describe(self) -> &'static str {
        match self {
            Step::EnterNetns => "entering the task's network namespace (setns)",
            Step::Unshare => "creating its mount and UTS namespaces (unshare)",
            Step::MakePrivate => "making its mounts private (mount --make-rprivate /)",
            Step::MountEtc => "mounting its /etc files (bind mount)",
            Step::SetHostname => "setting its hostname (sethostname)",
            Step::Exec => "executing the command",
        }
    }
}

/// Everything the child's setup uses, prepared before the fork.
struct ChildSetup {
    netns: OwnedFd,
    /// (generated file, host path it covers)
    mounts: Vec<(CString, CString)>,
    hostname: Vec<u8>,
    report: OwnedFd,
    /// No signal blocked: the task's mask.
    unblocked: nix::sys::signal::SigSet,
}

impl ChildSetup {
    /// Runs in the child between fork and exec: system calls on prepared data only.
    fn run(&self) -> io::Result<()> {
        self.step(Step::EnterNetns);
        nix::sched::setns(&self.netns, CloneFlags::CLONE_NEWNET).map_err(errno)?;
        self.step(Step::Unshare);
        nix::sched::unshare(CloneFlags::CLONE_NEWNS | CloneFlags::CLONE_NEWUTS).map_err(errno)?;
        // Without this, the bind mounts below would propagate to the host's namespace
        // (systemd makes / shared).
        self.step(Step::MakePrivate);
        nix::mount::mount(
            None::<&std::ffi::CStr>,
            c"/",
            None::<&std::ffi::CStr>,
            MsFlags::MS_REC | MsFlags::MS_PRIVATE,
            None::<&std::ffi::CStr>,
        )
        .map_err(errno)?;
        self.step(Step::MountEtc);
        for (source, target) in &self.mounts {
            nix::mount::mount(
                Some(source.as_c_str()),
                target.as_c_str(),
                None::<&std::ffi::CStr>,
                MsFlags::MS_BIND,
                None::<&std::ffi::CStr>,
            )
            .map_err(errno)?;
        }
        self.step(Step::SetHostname);
        // SAFETY: the pointer and length describe `self.hostname`, alive for the call;
        // sethostname only reads them. (nix's wrapper needs a feature the workspace does
        // not enable.)
        let rc =
            unsafe { nix::libc::sethostname(self.hostname.as_ptr().cast(), self.hostname.len()) };
        Errno::result(rc).map_err(errno)?;
        // The agent blocks SIGTERM and SIGINT in its threads to wait for them; a blocked
        // mask survives exec, and a task that cannot get SIGTERM would only ever be killed.
        // The empty set is built before the fork's copy of memory; sigprocmask is
        // async-signal-safe.
        nix::sys::signal::sigprocmask(
            nix::sys::signal::SigmaskHow::SIG_SETMASK,
            Some(&self.unblocked),
            None,
        )
        .map_err(errno)?;
        self.step(Step::Exec);
        Ok(())
    }

    /// Tells the parent which step comes next. A failed write only loses the detail.
    fn step(&self, step: Step) {
        let _ = nix::unistd::write(&self.report, &[step as u8]);
    }
}

/// No allocation: an OS error is stored inline.
fn errno(e: Errno) -> io::Error {
    io::Error::from_raw_os_error(e as i32)
}

fn cstring(task: &str, what: &str, bytes: &OsStr) -> Result<CString, RuntimeError> {
    CString::new(bytes.as_bytes()).map_err(|_| RuntimeError::Spec {
        task: task.to_owned(),
        problem: format!("{what} {bytes:?} contains a NUL byte: remove it"),
    })
}

/// Starts the task's process. `netns` is the opened namespace, `etc` the generated files
/// whose targets exist on this host, `log` the opened log file.
pub(super) fn spawn(
    spec: &TaskSpec,
    netns: OwnedFd,
    etc: &[EtcFile],
    log: File,
) -> Result<Child, RuntimeError> {
    let task = spec.label();
    let mut mounts = Vec::with_capacity(etc.len());
    for file in etc {
        mounts.push((
            cstring(&task, "path", file.source.as_os_str())?,
            cstring(&task, "path", OsStr::new(file.target))?,
        ));
    }
    let (report_read, report_write) =
        nix::unistd::pipe2(OFlag::O_CLOEXEC).map_err(|e| RuntimeError::Setup {
            task: task.clone(),
            step: "creating a pipe",
            source: errno(e),
        })?;
    let stderr = log.try_clone().map_err(|e| RuntimeError::Log {
        task: task.clone(),
        path: spec.log.clone(),
        source: e,
    })?;
    let setup = ChildSetup {
        netns,
        mounts,
        hostname: spec.hostname.as_bytes().to_vec(),
        report: report_write,
        unblocked: nix::sys::signal::SigSet::empty(),
    };
    let mut command = Command::new(&spec.command[0]);
    command
        .args(&spec.command[1..])
        .env_clear()
        .envs(spec.environment())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(log)
        .stderr(stderr)
        // setpgid(0, 0) in the child: the task's children share its group, so a stop
        // signals them all with kill(-pgid).
        .process_group(0);
    // SAFETY: the closure only makes system calls (setns, unshare, mount, sethostname,
    // write) on data prepared above and owned by the closure; it allocates nothing and
    // takes no lock, so it is safe between fork and exec in a multi-threaded process.
    unsafe {
        command.pre_exec(move || setup.run());
    }
    let spawned = command.spawn();
    // The closure holds the pipe's write end: drop it so the read below ends.
    drop(command);
    spawned.map_err(|source| {
        let mut steps = Vec::new();
        let _ = File::from(report_read).read_to_end(&mut steps);
        match steps.last().copied().and_then(Step::from_byte) {
            Some(Step::Exec) => RuntimeError::Exec {
                task,
                program: spec.command[0].clone(),
                source,
            },
            None => RuntimeError::Setup {
                task,
                step: "starting the process (fork)",
                source,
            },
            Some(step) => RuntimeError::Setup {
                task,
                step: step.describe(),
                source,
            },
        }
    })
}
