//! Cleanup on SIGINT/SIGTERM/SIGHUP: remove this process's testbed namespaces (killing what
//! runs in them, i.e. every server and client) and any running perf, then exit. Panics already
//! clean up through the testbeds' Drop.

use super::perf;
use nix::sys::signal::{SigSet, Signal, kill};
use nix::unistd::Pid;
use tests::testbed::{list_netns, owner_pid, remove_netns};

/// Blocks the signals and starts the thread that waits for them. Call first, before any thread
/// exists, so that every thread inherits the blocked mask (children get a clean mask from
/// `Command`).
pub(super) fn install_cleanup() {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("overlay: {sig:?}: removing this run's namespaces and exiting");
        if let Some(pid) = perf::running() {
            let _ = kill(Pid::from_raw(pid as i32), Signal::SIGKILL);
        }
        let me = std::process::id();
        for name in list_netns()
            .into_iter()
            .filter(|n| owner_pid(n) == Some(me))
        {
            remove_netns(&name);
        }
        std::process::exit(130);
    });
}
