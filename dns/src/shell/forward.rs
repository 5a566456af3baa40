//! Forwarding a query the tables do not answer: each upstream in turn, each try bounded by
//! the per-try timeout, the next one on SERVFAIL, REFUSED, a timeout or a refused connection;
//! SERVFAIL to the client when all of them failed. Sockets are opened from the server's own
//! thread, so upstreams are reached from the host's namespace (127.0.0.53 works).

use std::io;
use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::time::Duration;

use hickory_proto::op::ResponseCode;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpStream, UdpSocket};
use tokio::time::timeout;

use crate::answer::Transport;
use crate::answer::error_reply;
use crate::upstream::{MAX_UPSTREAMS, Verdict, id_of, judge, with_id};

/// The reply the client gets for `query`: an upstream's answer under the client's id, or
/// SERVFAIL. `ids` are the ids each upstream is asked with (random, so an off-path sender
/// cannot guess them).
pub async fn forward(
    upstreams: &[SocketAddr],
    query: &[u8],
    transport: Transport,
    per_try: Duration,
    ids: [u16; MAX_UPSTREAMS],
) -> Option<Vec<u8>> {
    let client_id = id_of(query);
    for (upstream, id) in upstreams.iter().zip(ids) {
        let asked = with_id(query, id);
        let exchange = match transport {
            Transport::Udp => exchange_udp(*upstream, &asked, id, per_try).await,
            Transport::Tcp => timeout(per_try, exchange_tcp(*upstream, &asked, id))
                .await
                .unwrap_or(Ok(None)),
        };
        if let Ok(Some(reply)) = exchange {
            return Some(with_id(&reply, client_id));
        }
    }
    None
}

/// The client's SERVFAIL when no upstream answered.
pub fn servfail(query: &[u8]) -> Vec<u8> {
    error_reply(query, ResponseCode::ServFail)
}

/// One try over UDP: `Ok(Some)` is an answer to pass on, `Ok(None)` means try the next.
async fn exchange_udp(
    upstream: SocketAddr,
    asked: &[u8],
    id: u16,
    per_try: Duration,
) -> io::Result<Option<Vec<u8>>> {
    let local: SocketAddr = match upstream {
        SocketAddr::V4(_) => (Ipv4Addr::UNSPECIFIED, 0).into(),
        SocketAddr::V6(_) => (Ipv6Addr::UNSPECIFIED, 0).into(),
    };
    let socket = UdpSocket::bind(local).await?;
    // Connected: the kernel drops datagrams from anyone else, and an ICMP port unreachable
    // (no resolver there) ends the try at once instead of after the timeout.
    socket.connect(upstream).await?;
    socket.send(asked).await?;
    let mut buf = vec![0u8; usize::from(u16::MAX)];
    let wait = async {
        loop {
            let len = socket.recv(&mut buf).await?;
            match judge(&buf[..len], id) {
                Verdict::Accept => return Ok(Some(buf[..len].to_vec())),
                Verdict::TryNext => return Ok(None),
                Verdict::Ignore => continue,
            }
        }
    };
    timeout(per_try, wait).await.unwrap_or(Ok(None))
}

/// One try over TCP (for clients that came over TCP: their answers may be large).
async fn exchange_tcp(upstream: SocketAddr, asked: &[u8], id: u16) -> io::Result<Option<Vec<u8>>> {
    let mut stream = TcpStream::connect(upstream).await?;
    write_framed(&mut stream, asked).await?;
    let reply = read_framed(&mut stream).await?;
    Ok(match judge(&reply, id) {
        Verdict::Accept => Some(reply),
        Verdict::TryNext | Verdict::Ignore => None,
    })
}

/// DNS over TCP: a two-byte length, then the message (RFC 1035 §4.2.2).
pub async fn read_framed<S: AsyncReadExt + Unpin>(stream: &mut S) -> io::Result<Vec<u8>> {
    let len = stream.read_u16().await?;
    let mut message = vec![0u8; usize::from(len)];
    stream.read_exact(&mut message).await?;
    Ok(message)
}

pub async fn write_framed<S: AsyncWriteExt + Unpin>(
    stream: &mut S,
    message: &[u8],
) -> io::Result<()> {
    let len = u16::try_from(message.len())
        .map_err(|_| io::Error::new(io::ErrorKind::InvalidInput, "a DNS message over 64 KiB"))?;
    let mut framed = Vec::with_capacity(message.len() + 2);
    framed.extend_from_slice(&len.to_be_bytes());
    framed.extend_from_slice(message);
    stream.write_all(&framed).await
}
