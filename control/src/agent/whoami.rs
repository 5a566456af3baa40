//! `shoal whoami`: the probe server a task runs when its service gives no command. It tells
//! a tester which task served a connection, and holds connections as long as wanted:
//!
//! - a connection whose first line is an HTTP request line gets one HTTP/1.1 response
//!   (`Connection: close`) with plain text lines `task: NAME`, `node: NODE`,
//!   `addresses: A B ...` (the IPv4 addresses of the task's interfaces, loopback left out,
//!   read at each request since the agent may add interfaces later) and `client: IP:PORT`;
//!   `GET /json` gives the same as a JSON object;
//! - any other connection is a TCP echo: everything read is written back until EOF.
//!
//! The decision is made on the first bytes: as soon as they cannot begin a request line
//! (`METHOD SP target SP HTTP/1.x`), the connection is an echo, so an echo client that sends
//! a few bytes and waits for them does not wait for a line end.
//!
//! Bounded: at most [`MAX_CONNECTIONS`] at once (further ones wait in the kernel's accept
//! queue), [`IDLE_TIMEOUT`] without a byte ends a connection, and a request head may be
//! [`HEAD_LIMIT`] long.

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::Semaphore;

pub const MAX_CONNECTIONS: usize = 1024;
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(600);
pub const HEAD_LIMIT: usize = 8 * 1024;

/// Who answers.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Identity {
    pub task: String,
    pub node: String,
}

/// What one response says.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Report {
    pub task: String,
    pub node: String,
    pub addresses: Vec<Ipv4Addr>,
    pub client: SocketAddr,
}

impl Report {
    /// The plain text body: one `key: value` line each.
    pub fn text(&self) -> String {
        let addresses: Vec<String> = self.addresses.iter().map(Ipv4Addr::to_string).collect();
        format!(
            "task: {}\nnode: {}\naddresses: {}\nclient: {}\n",
            self.task,
            self.node,
            addresses.join(" "),
            self.client
        )
    }

    /// The JSON body, with the same keys.
    pub fn json(&self) -> String {
        let value = serde_json::json!({
            "task": self.task,
            "node": self.node,
            "addresses": self.addresses,
            "client": self.client.to_string(),
        });
        format!("{value}\n")
    }
}

/// What the first bytes of a connection are.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Opening {
    /// A complete HTTP/1.x request line.
    Http,
    /// Not HTTP: echo everything.
    Echo,
    /// Could still be a request line: read more.
    More,
    /// A request line longer than [`HEAD_LIMIT`].
    TooLong,
}

const METHODS: [&[u8]; 9] = [
    b"GET", b"HEAD", b"POST", b"PUT", b"DELETE", b"OPTIONS", b"PATCH", b"TRACE", b"CONNECT",
];

/// Classifies the bytes read so far.
pub fn classify(head: &[u8]) -> Opening {
    // A prefix of `METHOD ` (zip stops at the shorter of the two).
    let could_be_method = METHODS
        .iter()
        .any(|m| head.iter().zip(m.iter().chain(b" ")).all(|(a, b)| a == b));
    if !could_be_method {
        return Opening::Echo;
    }
    match head.iter().position(|&b| b == b'\n') {
        Some(end) if request_line(&head[..end]).is_some() => Opening::Http,
        Some(_) => Opening::Echo,
        None if head.len() >= HEAD_LIMIT => Opening::TooLong,
        None => Opening::More,
    }
}

/// `METHOD SP target SP HTTP/1.x` (a trailing CR allowed) → (method, target).
pub fn request_line(line: &[u8]) -> Option<(&str, &str)> {
    let line = std::str::from_utf8(line).ok()?;
    let line = line.strip_suffix('\r').unwrap_or(line);
    let mut parts = line.split(' ');
    let (method, target, version) = (parts.next()?, parts.next()?, parts.next()?);
    let known = METHODS.iter().any(|m| m == &method.as_bytes());
    let http1 = matches!(version, "HTTP/1.0" | "HTTP/1.1");
    (known && http1 && !target.is_empty() && parts.next().is_none()).then_some((method, target))
}

/// Where the request head ends (after its blank line), if it does.
pub fn head_end(head: &[u8]) -> Option<usize> {
    (0..head.len()).find_map(|i| {
        if head[i..].starts_with(b"\r\n\r\n") {
            Some(i + 4)
        } else if head[i..].starts_with(b"\n\n") {
            Some(i + 2)
        } else {
            None
        }
    })
}

/// The whole response to a request.
pub fn respond(method: &str, target: &str, report: &Report) -> Vec<u8> {
    let path = target.split('?').next().unwrap_or(target);
    let (kind, body) = if path == "/json" {
        ("application/json", report.json())
    } else {
        ("text/plain; charset=utf-8", report.text())
    };
    let mut out = format!(
        "HTTP/1.1 200 OK\r\nContent-Type: {kind}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    )
    .into_bytes();
    if method != "HEAD" {
        out.extend_from_slice(body.as_bytes());
    }
    out
}

fn error_response(status: &str) -> Vec<u8> {
    format!("HTTP/1.1 {status}\r\nContent-Length: 0\r\nConnection: close\r\n\r\n").into_bytes()
}

/// The IPv4 addresses of this namespace's interfaces, loopback left out, in interface
/// order without repeats.
pub fn addresses() -> Vec<Ipv4Addr> {
    let mut out = Vec::new();
    let Ok(ifaddrs) = nix::ifaddrs::getifaddrs() else {
        return out;
    };
    for ifaddr in ifaddrs {
        let Some(ip) = ifaddr
            .address
            .as_ref()
            .and_then(|a| a.as_sockaddr_in())
            .map(|a| a.ip())
        else {
            continue;
        };
        if !ip.is_loopback() && !out.contains(&ip) {
            out.push(ip);
        }
    }
    out
}

/// What `shoal whoami` was asked to run.
#[derive(Clone, Debug)]
pub struct Config {
    pub ports: Vec<u16>,
    pub identity: Identity,
}

impl Config {
    /// The command line's values: no port means 80; a missing or empty name or node is the
    /// hostname (what a process outside the runtime is best known by).
    pub fn new(ports: Vec<u16>, name: Option<String>, node: Option<String>) -> Config {
        let or_hostname = |v: Option<String>| v.filter(|v| !v.is_empty()).unwrap_or_else(hostname);
        Config {
            ports: if ports.is_empty() { vec![80] } else { ports },
            identity: Identity {
                task: or_hostname(name),
                node: or_hostname(node),
            },
        }
    }
}

/// This UTS namespace's hostname (the task's own, in the runtime).
pub fn hostname() -> String {
    let mut buf = [0u8; 256];
    // SAFETY: the pointer and length describe `buf`, which gethostname writes at most
    // `len` bytes into. (nix's wrapper needs a feature the workspace does not enable.)
    let rc = unsafe { nix::libc::gethostname(buf.as_mut_ptr().cast(), buf.len()) };
    if rc != 0 {
        return "unknown".to_owned();
    }
    let end = buf.iter().position(|&b| b == 0).unwrap_or(buf.len());
    String::from_utf8_lossy(&buf[..end]).into_owned()
}

/// Runs the server until the process is killed; an error if a port cannot be bound.
pub fn run(config: Config) -> Result<(), String> {
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .map_err(|e| format!("cannot start the async runtime: {e}"))?;
    runtime.block_on(async move {
        let mut listeners = Vec::new();
        for port in &config.ports {
            let addr = SocketAddr::from((Ipv4Addr::UNSPECIFIED, *port));
            let listener = TcpListener::bind(addr).await.map_err(|e| {
                format!("cannot listen on {addr}: {e}: pick a free port with --port")
            })?;
            listeners.push(listener);
        }
        println!(
            "shoal whoami: task {} on node {} listening on port {}",
            config.identity.task,
            config.identity.node,
            config
                .ports
                .iter()
                .map(u16::to_string)
                .collect::<Vec<_>>()
                .join(", ")
        );
        serve(listeners, config.identity).await;
        Ok(())
    })
}

/// Serves the listeners (forever).
pub async fn serve(listeners: Vec<TcpListener>, identity: Identity) {
    let identity = Arc::new(identity);
    let permits = Arc::new(Semaphore::new(MAX_CONNECTIONS));
    let mut loops = tokio::task::JoinSet::new();
    for listener in listeners {
        loops.spawn(accept_loop(listener, identity.clone(), permits.clone()));
    }
    while loops.join_next().await.is_some() {}
}

async fn accept_loop(listener: TcpListener, identity: Arc<Identity>, permits: Arc<Semaphore>) {
    loop {
        // A permit first: beyond the limit, connections wait in the accept queue.
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        match listener.accept().await {
            Ok((stream, client)) => {
                let identity = identity.clone();
                tokio::spawn(async move {
                    let _permit = permit;
                    if let Err(e) = connection(stream, client, &identity).await {
                        tracing::debug!(%client, "whoami: {e}");
                    }
                });
            }
            Err(e) => {
                // Out of file descriptors, most likely: let some connections end.
                tracing::warn!("whoami: accept: {e}");
                tokio::time::sleep(Duration::from_millis(100)).await;
            }
        }
    }
}

async fn idle<T>(io: impl std::future::Future<Output = std::io::Result<T>>) -> std::io::Result<T> {
    tokio::time::timeout(IDLE_TIMEOUT, io)
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "idle for too long"))?
}

async fn connection(
    mut stream: TcpStream,
    client: SocketAddr,
    identity: &Identity,
) -> std::io::Result<()> {
    let mut head = Vec::with_capacity(1024);
    let mut buf = vec![0u8; 16 * 1024];
    let opening = loop {
        match classify(&head) {
            Opening::More => {}
            decided => break decided,
        }
        let room = (HEAD_LIMIT - head.len()).min(buf.len());
        let n = idle(stream.read(&mut buf[..room])).await?;
        if n == 0 {
            // Ended before it was clear: an echo of what came.
            idle(stream.write_all(&head)).await?;
            return idle(stream.shutdown()).await;
        }
        head.extend_from_slice(&buf[..n]);
    };
    match opening {
        Opening::Echo => {
            idle(stream.write_all(&head)).await?;
            echo(&mut stream, &mut buf).await
        }
        Opening::TooLong => {
            idle(stream.write_all(&error_response("414 URI Too Long"))).await?;
            idle(stream.shutdown()).await
        }
        Opening::Http | Opening::More => {
            while head_end(&head).is_none() {
                if head.len() >= HEAD_LIMIT {
                    let response = error_response("431 Request Header Fields Too Large");
                    idle(stream.write_all(&response)).await?;
                    return idle(stream.shutdown()).await;
                }
                let room = (HEAD_LIMIT - head.len()).min(buf.len());
                let n = idle(stream.read(&mut buf[..room])).await?;
                if n == 0 {
                    // The client stopped sending: answer what it asked.
                    break;
                }
                head.extend_from_slice(&buf[..n]);
            }
            let line_end = head.iter().position(|&b| b == b'\n').unwrap_or(head.len());
            let (method, target) = request_line(&head[..line_end]).unwrap_or(("GET", "/"));
            let report = Report {
                task: identity.task.clone(),
                node: identity.node.clone(),
                addresses: addresses(),
                client,
            };
            idle(stream.write_all(&respond(method, target, &report))).await?;
            idle(stream.shutdown()).await
        }
    }
}

async fn echo(stream: &mut TcpStream, buf: &mut [u8]) -> std::io::Result<()> {
    loop {
        let n = idle(stream.read(buf)).await?;
        if n == 0 {
            return idle(stream.shutdown()).await;
        }
        idle(stream.write_all(&buf[..n])).await?;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn openings() {
        assert_eq!(classify(b""), Opening::More);
        assert_eq!(classify(b"G"), Opening::More);
        assert_eq!(classify(b"GET /x HTT"), Opening::More);
        assert_eq!(classify(b"GET / HTTP/1.1\r\n"), Opening::Http);
        assert_eq!(classify(b"HEAD /json HTTP/1.0\n"), Opening::Http);
        // Decided on the first byte that cannot begin a request line.
        assert_eq!(classify(b"h"), Opening::Echo);
        assert_eq!(classify(b"GEX"), Opening::Echo);
        assert_eq!(classify(b"GET"), Opening::More);
        assert_eq!(classify(b"GETX"), Opening::Echo);
        assert_eq!(classify(b"GET hello\n"), Opening::Echo);
        assert_eq!(classify(b"GET / HTTP/2.0\r\n"), Opening::Echo);
        let mut long = b"GET /".to_vec();
        long.resize(HEAD_LIMIT, b'a');
        assert_eq!(classify(&long), Opening::TooLong);
    }

    #[test]
    fn head_ends() {
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n\r\nbody"), Some(27));
        assert_eq!(head_end(b"GET / HTTP/1.0\n\n"), Some(16));
        assert_eq!(head_end(b"GET / HTTP/1.1\r\nHost: x\r\n"), None);
    }

    fn report() -> Report {
        Report {
            task: "web.1.abc".into(),
            node: "n1".into(),
            addresses: vec![Ipv4Addr::new(10, 0, 1, 5), Ipv4Addr::new(10, 0, 2, 7)],
            client: "10.0.1.9:40000".parse().expect("an address"),
        }
    }

    #[test]
    fn text_and_json_say_the_same() {
        assert_eq!(
            report().text(),
            "task: web.1.abc\nnode: n1\naddresses: 10.0.1.5 10.0.2.7\nclient: 10.0.1.9:40000\n"
        );
        let json: serde_json::Value = serde_json::from_str(&report().json()).expect("valid JSON");
        assert_eq!(json["task"], "web.1.abc");
        assert_eq!(json["node"], "n1");
        assert_eq!(json["addresses"][1], "10.0.2.7");
        assert_eq!(json["client"], "10.0.1.9:40000");
    }

    #[test]
    fn responses() {
        let r = String::from_utf8(respond("GET", "/json?x=1", &report())).expect("text");
        assert!(r.starts_with("HTTP/1.1 200 OK\r\n"), "{r}");
        assert!(r.contains("Content-Type: application/json\r\n"), "{r}");
        assert!(r.contains("Connection: close\r\n"), "{r}");
        let r = String::from_utf8(respond("HEAD", "/", &report())).expect("text");
        assert!(r.ends_with("\r\n\r\n"), "no body for HEAD: {r}");
        let body = report().text();
        assert!(
            r.contains(&format!("Content-Length: {}\r\n", body.len())),
            "{r}"
        );
    }
}
