//! `lab matrix`'s checks, carried out: from inside a source's namespace (a thread that
//! entered it), a DNS query to the agent's resolver at 127.0.0.11 and a TCP connection with a
//! short timeout. Only addresses of the lab's own namespaces are tried (matrix.rs decides).

use std::io;
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpStream, UdpSocket};
use std::time::Duration;

use hickory_proto::op::{Message, MessageType, OpCode, Query};
use hickory_proto::rr::{Name, RData, RecordType};

use super::matrix::{Cell, Check, Destination, Matrix, Source};
use dataplane::shell::netns::{NetnsRef, in_netns};

/// A connection that is neither accepted nor refused within this is `no`.
const CONNECT_TIMEOUT: Duration = Duration::from_millis(1500);
const DNS_TIMEOUT: Duration = Duration::from_millis(1500);

/// The A records of `name` from the resolver at 127.0.0.11 (empty: no such name here).
pub fn resolve(name: &str) -> io::Result<Vec<Ipv4Addr>> {
    let mut query = Message::new(0x5107, MessageType::Query, OpCode::Query);
    query.metadata.recursion_desired = true;
    let qname = Name::from_ascii(name)
        .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
    query.add_query(Query::query(qname, RecordType::A));
    let bytes = query.to_vec().map_err(io::Error::other)?;
    let socket = UdpSocket::bind("127.0.0.1:0")?;
    socket.set_read_timeout(Some(DNS_TIMEOUT))?;
    socket.send_to(&bytes, "127.0.0.11:53")?;
    let mut buf = [0u8; 4096];
    let len = socket.recv(&mut buf)?;
    let reply = Message::from_vec(&buf[..len]).map_err(io::Error::other)?;
    Ok(reply
        .answers
        .iter()
        .filter_map(|r| match &r.data {
            RData::A(a) => Some(a.0),
            _ => None,
        })
        .collect())
}

fn connects(addr: SocketAddrV4) -> bool {
    TcpStream::connect_timeout(&SocketAddr::V4(addr), CONNECT_TIMEOUT).is_ok()
}

/// One check, run on the calling thread (already in the source's namespace).
pub fn check(c: &Check) -> Cell {
    match c {
        Check::Connect(addr) => {
            if connects(*addr) {
                Cell::Ok
            } else {
                Cell::No
            }
        }
        Check::Name { name, port } => match resolve(name).ok().and_then(|a| a.first().copied()) {
            None => Cell::No,
            Some(ip) => match port {
                Some(port) if connects(SocketAddrV4::new(ip, *port)) => Cell::Ok,
                _ => Cell::Resolves,
            },
        },
    }
}

/// Every cell of the matrix, the checks of one source all at once (each on its own thread in
/// that namespace: a check that times out does not hold the others up).
pub fn run(sources: &[Source], destinations: &[Destination]) -> Matrix {
    let mut m = Matrix::default();
    for source in sources {
        let row = std::thread::scope(|scope| {
            let handles: Vec<_> = destinations
                .iter()
                .map(|d| {
                    scope.spawn(move || {
                        let cell = match (&source.netns, d.overlay) {
                            (None, true) => Cell::Skipped,
                            (None, false) => check(&d.check),
                            (Some(ns), _) => {
                                let c = d.check.clone();
                                in_netns(&NetnsRef::named(ns), move || Ok(check(&c)))
                                    .unwrap_or(Cell::No)
                            }
                        };
                        (d.key(), cell)
                    })
                })
                .collect();
            handles.into_iter().filter_map(|h| h.join().ok()).collect()
        });
        m.cells.insert(source.name.clone(), row);
    }
    m
}
