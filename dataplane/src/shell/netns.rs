//! Network namespaces: naming one, entering it on a dedicated OS thread, and running rtnetlink
//! requests inside it.
//!
//! The rule: never `setns` a thread we do not own (a tokio worker, the caller's thread). Every
//! function here spawns a fresh OS thread, moves it into the namespace, runs the closure there
//! and joins it. Anything the closure creates (sockets, TAP fds, netlink connections) stays bound
//! to that namespace for its whole life and may be used from any thread afterwards.

use std::fs::File;
use std::future::Future;
use std::io;
use std::os::fd::OwnedFd;
use std::path::PathBuf;

use nix::sched::CloneFlags;

/// Where a network namespace lives: a bind-mounted file (`ip netns add` puts them in
/// `/run/netns/<name>`, container runtimes elsewhere) or a process that is in it.
#[derive(Clone, Debug, PartialEq, Eq, PartialOrd, Ord)]
pub enum NetnsRef {
    Path(PathBuf),
    Pid(u32),
}

impl NetnsRef {
    /// The namespace `ip netns add <name>` created: `/run/netns/<name>`.
    pub fn named(name: &str) -> NetnsRef {
        NetnsRef::Path(PathBuf::from("/run/netns").join(name))
    }

    /// The namespace file: the path itself, or `/proc/<pid>/ns/net`.
    pub fn path(&self) -> PathBuf {
        match self {
            NetnsRef::Path(p) => p.clone(),
            NetnsRef::Pid(pid) => PathBuf::from(format!("/proc/{pid}/ns/net")),
        }
    }

    /// Opens the namespace file (read-only, close-on-exec); the error names the path.
    pub fn open(&self) -> io::Result<OwnedFd> {
        let path = self.path();
        File::open(&path)
            .map(OwnedFd::from)
            .map_err(|e| io::Error::new(e.kind(), format!("open netns {}: {e}", path.display())))
    }
}

impl std::fmt::Display for NetnsRef {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{}", self.path().display())
    }
}

/// Runs `f` on a fresh OS thread that first enters `ns` (`setns(CLONE_NEWNET)`), waits for it,
/// and returns its result. A panic in `f` comes back as an `io::Error` (kind `Other`).
pub fn in_netns<T, F>(ns: &NetnsRef, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let fd = ns.open()?;
    let label = ns.to_string();
    run_on_thread(move || {
        nix::sched::setns(&fd, CloneFlags::CLONE_NEWNET).map_err(|e| {
            io::Error::new(io::Error::from(e).kind(), format!("setns {label}: {e}"))
        })?;
        drop(fd);
        f()
    })
}

/// [`in_netns`] when `ns` is given; otherwise runs `f` on a fresh thread in the namespace of the
/// calling thread (useful when `f` must not run on a tokio worker, e.g. [`netlink_here`]).
pub fn in_netns_or_current<T, F>(ns: Option<&NetnsRef>, f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    match ns {
        Some(ns) => in_netns(ns, f),
        None => run_on_thread(f),
    }
}

/// Runs `f(handle)` with an rtnetlink connection opened inside `ns`, on a dedicated thread with
/// its own current-thread tokio runtime. Use it for all link, address and route configuration.
///
/// The future need not be `Send`: it is built and polled on that thread only.
pub fn netlink_in<T, F, Fut>(ns: &NetnsRef, f: F) -> io::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<T>>,
    T: Send + 'static,
{
    in_netns(ns, move || netlink_here(f))
}

/// [`netlink_in`] when `ns` is given; otherwise the calling thread's namespace (still on a
/// fresh thread, so it is safe to call from async code that may block briefly).
pub fn netlink_in_or_current<T, F, Fut>(ns: Option<&NetnsRef>, f: F) -> io::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut + Send + 'static,
    Fut: Future<Output = io::Result<T>>,
    T: Send + 'static,
{
    in_netns_or_current(ns, move || netlink_here(f))
}

/// Runs `f(handle)` to completion on the calling thread, with a new current-thread tokio runtime
/// and an rtnetlink connection in the calling thread's namespace. Meant to be called from inside
/// an [`in_netns`] closure that does more than netlink (e.g. opens a TAP first). Panics if the
/// calling thread is already inside a tokio runtime (tokio refuses nested `block_on`).
pub fn netlink_here<T, F, Fut>(f: F) -> io::Result<T>
where
    F: FnOnce(rtnetlink::Handle) -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    rt.block_on(async move {
        let (conn, handle, _messages) = rtnetlink::new_connection()?;
        let conn_task = tokio::spawn(conn);
        let result = f(handle).await;
        conn_task.abort();
        result
    })
}

/// Spawns a named OS thread, joins it, and turns a panic into an `io::Error`.
fn run_on_thread<T, F>(f: F) -> io::Result<T>
where
    F: FnOnce() -> io::Result<T> + Send + 'static,
    T: Send + 'static,
{
    let handle = std::thread::Builder::new()
        .name("shoal-netns".into())
        .spawn(f)?;
    match handle.join() {
        Ok(result) => result,
        Err(panic) => {
            let msg = panic
                .downcast_ref::<&str>()
                .map(|s| (*s).to_string())
                .or_else(|| panic.downcast_ref::<String>().cloned())
                .unwrap_or_else(|| "non-string panic payload".to_string());
            Err(io::Error::other(format!("panic on netns thread: {msg}")))
        }
    }
}

/// Where named namespaces live, as `ip netns` keeps them.
pub const NETNS_RUN_DIR: &str = "/run/netns";

/// Creates a new network namespace named `name` (`/run/netns/<name>`, as `ip netns add`
/// makes one, so `ip netns exec` works on it) with its loopback up: 127.0.0.11, the
/// resolver's address, lives on it. Fails if the name is taken. Undone by [`delete_named`].
pub fn create_named(name: &str) -> io::Result<NetnsRef> {
    if name.is_empty() || name.contains('/') || name.len() > 200 {
        return Err(io::Error::new(
            io::ErrorKind::InvalidInput,
            format!("netns name {name:?}: not a file name"),
        ));
    }
    std::fs::create_dir_all(NETNS_RUN_DIR)?;
    let ns = NetnsRef::named(name);
    let path = ns.path();
    // The mount point: created exclusively, so two creators of one name cannot both win.
    std::fs::OpenOptions::new()
        .write(true)
        .create_new(true)
        .open(&path)
        .map_err(|e| io::Error::new(e.kind(), format!("create netns {name}: {e}")))?;
    let target = path.clone();
    let made = run_on_thread(move || {
        nix::sched::unshare(CloneFlags::CLONE_NEWNET)
            .map_err(|e| io::Error::other(format!("unshare(CLONE_NEWNET): {e}")))?;
        // This thread's namespace outlives it through the bind mount.
        nix::mount::mount(
            Some("/proc/thread-self/ns/net"),
            &target,
            None::<&str>,
            nix::mount::MsFlags::MS_BIND,
            None::<&str>,
        )
        .map_err(|e| io::Error::other(format!("bind-mount netns at {}: {e}", target.display())))
    })
    .and_then(|()| {
        netlink_in(&ns, |handle| async move {
            super::netlink::set_up_by_name(&handle, "lo").await
        })
    });
    match made {
        Ok(()) => Ok(ns),
        Err(e) => {
            let _ = delete_named(name);
            Err(e)
        }
    }
}

/// Removes the namespace named `name` (lazy unmount: it lives on while a process or a
/// socket still holds it, as with `ip netns del`). A missing one is not an error.
pub fn delete_named(name: &str) -> io::Result<()> {
    let path = NetnsRef::named(name).path();
    if !path.exists() {
        return Ok(());
    }
    // EINVAL: not mounted (a half-created one); the file goes all the same.
    match nix::mount::umount2(&path, nix::mount::MntFlags::MNT_DETACH) {
        Ok(()) | Err(nix::errno::Errno::EINVAL) => {}
        Err(e) => return Err(io::Error::other(format!("unmount {}: {e}", path.display()))),
    }
    match std::fs::remove_file(&path) {
        Err(e) if e.kind() != io::ErrorKind::NotFound => Err(e),
        _ => Ok(()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paths() {
        assert_eq!(
            NetnsRef::named("a-b").path(),
            PathBuf::from("/run/netns/a-b")
        );
        assert_eq!(NetnsRef::Pid(42).path(), PathBuf::from("/proc/42/ns/net"));
    }

    #[test]
    fn open_missing_names_the_path() {
        let err = NetnsRef::named("shoal-does-not-exist-xyz")
            .open()
            .unwrap_err();
        assert_eq!(err.kind(), io::ErrorKind::NotFound);
        assert!(
            err.to_string()
                .contains("/run/netns/shoal-does-not-exist-xyz"),
            "{err}"
        );
    }

    #[test]
    fn panics_become_errors() {
        let err =
            in_netns_or_current(None, || -> io::Result<()> { panic!("boom {}", 7) }).unwrap_err();
        assert!(err.to_string().contains("boom 7"), "{err}");
        let ok = in_netns_or_current(None, || Ok(5)).unwrap();
        assert_eq!(ok, 5);
    }
}
