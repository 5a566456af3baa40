//! The backend of every task: `shared/anchors/lbbackend.rs` on a thread. It accepts, writes its
//! name and a newline, and closes (so the backend closes first and holds the TIME_WAIT, as in
//! the anchor). One accepting thread per backend, like the anchor's single-threaded process.

use std::io::{self, Write};
use std::net::{SocketAddr, TcpListener};
use std::os::fd::AsRawFd;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};
use std::thread::JoinHandle;
use std::time::Duration;

use dataplane::shell::netns::{NetnsRef, in_netns};

/// The name of every backend thread (what [`super::cpu`] sums as "backends").
pub(super) const THREAD_NAME: &str = "mesh-backend";

/// A running backend; stops when dropped.
#[derive(Debug)]
pub(super) struct Backend {
    listener: Arc<TcpListener>,
    stopping: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl Backend {
    /// Listens on `addr` inside `ns` (std's backlog of 128, as the anchor's backend) and
    /// answers every connection with `name\n`.
    pub(super) fn start(ns: &NetnsRef, addr: SocketAddr, name: &str) -> io::Result<Backend> {
        let listener = Arc::new(in_netns(ns, move || TcpListener::bind(addr))?);
        let stopping = Arc::new(AtomicBool::new(false));
        let reply = format!("{name}\n").into_bytes();
        let (l, stop) = (listener.clone(), stopping.clone());
        let thread = std::thread::Builder::new()
            .name(THREAD_NAME.into())
            .spawn(move || serve(&l, &stop, &reply))?;
        Ok(Backend {
            listener,
            stopping,
            thread: Some(thread),
        })
    }
}

fn serve(listener: &TcpListener, stopping: &AtomicBool, reply: &[u8]) {
    loop {
        match listener.accept() {
            Ok((mut conn, _)) => {
                let _ = conn.set_nodelay(true);
                let _ = conn.write_all(reply);
                // Dropped here: closed.
            }
            Err(_) if stopping.load(Ordering::Relaxed) => return,
            // EMFILE, ECONNABORTED and the like: do not spin.
            Err(_) => std::thread::sleep(Duration::from_millis(1)),
        }
    }
}

impl Drop for Backend {
    fn drop(&mut self) {
        self.stopping.store(true, Ordering::Relaxed);
        // shutdown() on a listening socket wakes a blocked accept() with an error.
        let _ =
            nix::sys::socket::shutdown(self.listener.as_raw_fd(), nix::sys::socket::Shutdown::Both);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}
