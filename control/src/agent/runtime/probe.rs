//! The health check shell: a thread per task with a check, that runs probes when the
//! [`HealthMonitor`] says so and reports its transitions. It ends when the task ends or a
//! stop begins.
//!
//! A command probe runs in the task's network, mount and UTS namespaces (it sees the task's
//! /etc files and reaches its 127.0.0.1), entered with `setns` between fork and exec on the
//! namespace fds the task opened at its start. A TCP probe connects to 127.0.0.1:port from a
//! thread inside the task's network namespace. Both are bounded by the check's timeout.

use std::net::{Ipv4Addr, SocketAddr, TcpStream};
use std::os::unix::process::CommandExt;
use std::process::{Command, Stdio};
use std::time::{Duration, Instant};

use dataplane::shell::netns::{NetnsRef, in_netns};
use nix::errno::Errno;
use nix::sched::CloneFlags;
use nix::sys::signal::{Signal, killpg};
use nix::unistd::Pid;

use super::health::{HealthCheck, HealthMonitor, HealthTest, Probe};
use super::task::RunningTask;

/// Runs the task's probes until it ends or is being stopped.
pub(super) fn run(task: &RunningTask, check: &HealthCheck) {
    let mut monitor = HealthMonitor::new(check, task.started());
    loop {
        let now = task.now();
        if monitor.poll_probe(now) {
            let result = probe(task, check);
            if let Some(health) = monitor.handle_probe(task.now(), result) {
                task.set_health(health, task.now());
            }
            continue;
        }
        let due = monitor.poll_timeout().unwrap_or(now);
        if task.wait_done(Duration::from_nanos(due.saturating_sub_nanos(now))) {
            return;
        }
    }
}

fn probe(task: &RunningTask, check: &HealthCheck) -> Probe {
    match &check.test {
        HealthTest::Cmd(argv) => command(task, argv, check.timeout),
        HealthTest::TcpConnect(port) => {
            let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, *port));
            let timeout = check.timeout;
            let ns = NetnsRef::Path(task.spec().netns.clone());
            match in_netns(&ns, move || TcpStream::connect_timeout(&addr, timeout)) {
                Ok(_) => Probe::Pass,
                Err(e) => {
                    tracing::debug!(task = task.spec().name, "health probe {addr}: {e}");
                    Probe::Fail
                }
            }
        }
    }
}

/// Runs `argv` in the task's namespaces; passes on exit 0 within `timeout`. A probe that
/// overstays is killed with its whole process group.
fn command(task: &RunningTask, argv: &[String], timeout: Duration) -> Probe {
    let Some(ns) = task.namespaces() else {
        return Probe::Fail;
    };
    let Some((program, args)) = argv.split_first() else {
        return Probe::Fail;
    };
    // Copies the closure owns (close-on-exec, like the originals).
    let fds = (|| {
        Ok::<_, std::io::Error>((
            ns.net.try_clone()?,
            ns.mnt.try_clone()?,
            ns.uts.try_clone()?,
        ))
    })();
    let (net, mnt, uts) = match fds {
        Ok(fds) => fds,
        Err(e) => {
            tracing::warn!(task = task.spec().name, "health probe: {e}");
            return Probe::Fail;
        }
    };
    let mut cmd = Command::new(program);
    cmd.args(args)
        .env_clear()
        .envs(task.spec().environment())
        .current_dir("/")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .process_group(0);
    // SAFETY: only setns system calls on fds owned by the closure; no allocation, no lock.
    unsafe {
        cmd.pre_exec(move || {
            let enter = |fd, kind| {
                nix::sched::setns(fd, kind)
                    .map_err(|e: Errno| std::io::Error::from_raw_os_error(e as i32))
            };
            enter(&net, CloneFlags::CLONE_NEWNET)?;
            enter(&mnt, CloneFlags::CLONE_NEWNS)?;
            enter(&uts, CloneFlags::CLONE_NEWUTS)
        });
    }
    let mut child = match cmd.spawn() {
        Ok(child) => child,
        Err(e) => {
            tracing::debug!(task = task.spec().name, "health probe {program:?}: {e}");
            return Probe::Fail;
        }
    };
    #[allow(clippy::disallowed_methods)] // shell: the probe's timeout is wall time
    let deadline = Instant::now() + timeout;
    let mut pause = Duration::from_millis(5);
    loop {
        match child.try_wait() {
            Ok(Some(status)) if status.success() => return Probe::Pass,
            Ok(Some(_)) | Err(_) => return Probe::Fail,
            Ok(None) => {}
        }
        #[allow(clippy::disallowed_methods)] // shell: the probe's timeout is wall time
        let now = Instant::now();
        if now >= deadline {
            // The child is not reaped yet: its pid is still its group's id.
            let _ = killpg(Pid::from_raw(child.id() as i32), Signal::SIGKILL);
            let _ = child.wait();
            tracing::debug!(
                task = task.spec().name,
                "health probe {program:?} timed out"
            );
            return Probe::Fail;
        }
        std::thread::sleep(pause.min(deadline - now));
        pause = (pause * 2).min(Duration::from_millis(50));
    }
}
