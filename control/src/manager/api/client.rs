//! A small blocking HTTP/1.1 client for the API: one request per connection, JSON in and out.
//! Enough for the CLI and for tests; the agent's stream will get a TLS client with the node
//! certificate.

use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::Arc;
use std::time::Duration;

use serde::Serialize;
use serde::de::DeserializeOwned;

use super::ApiError;
use crate::manager::trust::MANAGER_SERVER_NAME;

/// Where the manager is, and how to talk to it (TLS with the cluster CA, or plain).
#[derive(Clone, Debug)]
pub struct ApiClient {
    pub addr: SocketAddr,
    pub timeout: Duration,
    tls: Option<Arc<rustls::ClientConfig>>,
}

/// What a request is written to and read from: a TCP stream, or TLS over one.
pub(crate) trait Wire: Read + Write {}
impl<T: Read + Write> Wire for T {}

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("cannot reach the manager at {addr}: {source} (is `shoal manager` running there?)")]
    Unreachable { addr: SocketAddr, source: io::Error },
    /// The manager refused the request; its message says why.
    #[error("{message}")]
    Refused { status: u16, message: String },
    #[error("TLS with the manager at {addr} failed: {why}")]
    Tls { addr: SocketAddr, why: String },
    #[error("the manager at {addr} answered something that is not the API's: {why}")]
    Garbled { addr: SocketAddr, why: String },
}

impl ApiClient {
    /// Plain HTTP (a manager started `--insecure`).
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            timeout: super::LONG_POLL + Duration::from_secs(10),
            tls: None,
        }
    }

    /// TLS, verifying the manager against the cluster CA as `manager.shoal` (every manager's
    /// certificate names it), with the client certificate `config` carries, if any.
    pub fn with_tls(addr: SocketAddr, config: rustls::ClientConfig) -> Self {
        Self {
            tls: Some(Arc::new(config)),
            ..Self::new(addr)
        }
    }

    pub fn get<T: DeserializeOwned>(&self, path: &str) -> Result<T, ClientError> {
        self.request("GET", path, "application/json", &[])
    }

    pub fn post<B: Serialize, T: DeserializeOwned>(
        &self,
        path: &str,
        body: &B,
    ) -> Result<T, ClientError> {
        let body = serde_json::to_vec(body).map_err(|e| self.garbled(e.to_string()))?;
        self.request("POST", path, "application/json", &body)
    }

    pub fn post_text<T: DeserializeOwned>(&self, path: &str, text: &str) -> Result<T, ClientError> {
        self.request("POST", path, "text/plain", text.as_bytes())
    }

    /// An I/O error, told apart: TLS refusals (another cluster, an unknown certificate)
    /// say so; the rest means the manager cannot be reached.
    fn io_error(&self, source: io::Error) -> ClientError {
        if let Some(trust) = crate::manager::trust::refusal(&source) {
            return ClientError::Tls {
                addr: self.addr,
                why: trust.to_string(),
            };
        }
        if source
            .get_ref()
            .is_some_and(|inner| inner.is::<rustls::Error>())
        {
            return ClientError::Tls {
                addr: self.addr,
                why: source.to_string(),
            };
        }
        ClientError::Unreachable {
            addr: self.addr,
            source,
        }
    }

    fn garbled(&self, why: String) -> ClientError {
        ClientError::Garbled {
            addr: self.addr,
            why,
        }
    }

    fn request<T: DeserializeOwned>(
        &self,
        method: &str,
        path: &str,
        content_type: &str,
        body: &[u8],
    ) -> Result<T, ClientError> {
        let unreachable = |source| self.io_error(source);
        let stream =
            TcpStream::connect_timeout(&self.addr, Duration::from_secs(5)).map_err(unreachable)?;
        stream
            .set_read_timeout(Some(self.timeout))
            .map_err(unreachable)?;
        let stream: Box<dyn Wire> = match &self.tls {
            None => Box::new(stream),
            Some(config) => {
                let name = rustls::pki_types::ServerName::try_from(MANAGER_SERVER_NAME)
                    .map_err(|e| self.garbled(e.to_string()))?;
                let connection = rustls::ClientConnection::new(config.clone(), name)
                    .map_err(|e| self.garbled(e.to_string()))?;
                Box::new(rustls::StreamOwned::new(connection, stream))
            }
        };
        let (status_line, body) = exchange(
            stream,
            &self.addr.to_string(),
            method,
            path,
            content_type,
            body,
        )
        .map_err(unreachable)?;
        let status: u16 = status_line
            .split_whitespace()
            .nth(1)
            .and_then(|s| s.parse().ok())
            .ok_or_else(|| {
                // A TLS record (alert 0x15, handshake 0x16) in answer to plain HTTP.
                if status_line.starts_with(['\u{15}', '\u{16}']) {
                    ClientError::Tls {
                        addr: self.addr,
                        why: "the manager speaks TLS: give the CLI the credentials `shoal init` wrote (--certs DIR or SHOAL_CERTS)".into(),
                    }
                } else {
                    self.garbled(format!("status line {status_line:?}"))
                }
            })?;
        if status >= 400 {
            let message = serde_json::from_slice::<ApiError>(&body)
                .map(|e| e.error)
                .unwrap_or_else(|_| String::from_utf8_lossy(&body).into_owned());
            return Err(ClientError::Refused { status, message });
        }
        serde_json::from_slice(&body).map_err(|e| self.garbled(e.to_string()))
    }
}

/// One HTTP/1.1 request on an open stream (`Connection: close`): the response's status line
/// and body (by Content-Length, or to the end). Shared by the manager's client and the
/// agent's local one.
pub(crate) fn exchange(
    mut stream: Box<dyn Wire + '_>,
    host: &str,
    method: &str,
    path: &str,
    content_type: &str,
    body: &[u8],
) -> io::Result<(String, Vec<u8>)> {
    let head = format!(
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: {content_type}\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
        body.len()
    );
    stream.write_all(head.as_bytes())?;
    stream.write_all(body)?;
    let mut reader = BufReader::new(stream);
    let mut status_line = String::new();
    reader.read_line(&mut status_line)?;
    let mut length = None;
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line)? == 0 {
            break;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':')
            && name.eq_ignore_ascii_case("content-length")
        {
            length = value.trim().parse::<usize>().ok();
        }
    }
    let mut response = Vec::new();
    match length {
        // Bounded: a response is read whole, and none of ours is near this.
        Some(n) if n <= 64 << 20 => {
            response.resize(n, 0);
            reader.read_exact(&mut response)?;
        }
        _ => {
            reader.take(64 << 20).read_to_end(&mut response)?;
        }
    }
    Ok((status_line, response))
}
