//! Cleanup on SIGINT/SIGTERM/SIGHUP for every benchmark: block the signals, and on one remove
//! this process's testbed namespaces (killing what runs in them), run the program's own extra
//! step (a perf to stop, a work folder to remove), and exit. Panics and errors clean up
//! through the testbeds' Drop already.

use nix::sys::signal::{SigSet, Signal};
use tests::testbed::{list_netns, owner_pid, remove_netns};

/// Call first, before any thread exists, so that every thread inherits the blocked mask
/// (children get a clean mask from `Command`).
pub fn install(program: &'static str, extra: impl FnOnce() + Send + 'static) {
    let mut set = SigSet::empty();
    for s in [Signal::SIGINT, Signal::SIGTERM, Signal::SIGHUP] {
        set.add(s);
    }
    if set.thread_block().is_err() {
        return;
    }
    std::thread::spawn(move || {
        let Ok(sig) = set.wait() else { return };
        eprintln!("{program}: {sig:?}: removing this run's namespaces and exiting");
        extra();
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
