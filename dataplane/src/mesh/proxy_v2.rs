//! The PROXY protocol version 2 header (HAProxy's spec, section 2.2): sent first on a
//! published-port connection when the port asks for it, so the task learns the real client
//! address that the proxying hides.

use std::net::SocketAddr;

/// The fixed 12-byte signature every v2 header starts with.
pub const SIGNATURE: [u8; 12] = [
    0x0d, 0x0a, 0x0d, 0x0a, 0x00, 0x0d, 0x0a, 0x51, 0x55, 0x49, 0x54, 0x0a,
];

/// Transport of the proxied connection.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Transport {
    Stream,
    Datagram,
}

/// The header for a connection from `client` to `local` (the published address it reached).
/// Mixed families (an IPv6 client on an IPv4 listener) are sent as IPv6, the v4 side mapped.
pub fn header(client: SocketAddr, local: SocketAddr, transport: Transport) -> Vec<u8> {
    let proto = match transport {
        Transport::Stream => 0x1,
        Transport::Datagram => 0x2,
    };
    let mut out = Vec::with_capacity(16 + 36);
    out.extend_from_slice(&SIGNATURE);
    out.push(0x21); // version 2, command PROXY
    match (client, local) {
        (SocketAddr::V4(c), SocketAddr::V4(l)) => {
            out.push(0x10 | proto); // AF_INET
            out.extend_from_slice(&12u16.to_be_bytes());
            out.extend_from_slice(&c.ip().octets());
            out.extend_from_slice(&l.ip().octets());
        }
        _ => {
            let v6 = |a: SocketAddr| match a {
                SocketAddr::V4(v4) => v4.ip().to_ipv6_mapped(),
                SocketAddr::V6(v6) => *v6.ip(),
            };
            out.push(0x20 | proto); // AF_INET6
            out.extend_from_slice(&36u16.to_be_bytes());
            out.extend_from_slice(&v6(client).octets());
            out.extend_from_slice(&v6(local).octets());
        }
    }
    out.extend_from_slice(&client.port().to_be_bytes());
    out.extend_from_slice(&local.port().to_be_bytes());
    out
}

/// Reads a v2 header at the start of `bytes`: the client and local addresses, and the header's
/// length. For tests and for tasks written in Rust (the probe server).
pub fn parse(bytes: &[u8]) -> Option<(SocketAddr, SocketAddr, usize)> {
    if bytes.get(..12)? != SIGNATURE || *bytes.get(12)? != 0x21 {
        return None;
    }
    let family = bytes.get(13)? >> 4;
    let len = usize::from(u16::from_be_bytes([*bytes.get(14)?, *bytes.get(15)?]));
    let body = bytes.get(16..16 + len)?;
    let port = |at: usize| Some(u16::from_be_bytes([*body.get(at)?, *body.get(at + 1)?]));
    let (client, local) = match family {
        1 if len >= 12 => {
            let ip = |at: usize| -> Option<[u8; 4]> { body.get(at..at + 4)?.try_into().ok() };
            (
                SocketAddr::from((ip(0)?, port(8)?)),
                SocketAddr::from((ip(4)?, port(10)?)),
            )
        }
        2 if len >= 36 => {
            let ip = |at: usize| -> Option<[u8; 16]> { body.get(at..at + 16)?.try_into().ok() };
            (
                SocketAddr::from((ip(0)?, port(32)?)),
                SocketAddr::from((ip(16)?, port(34)?)),
            )
        }
        _ => return None,
    };
    Some((client, local, 16 + len))
}

#[cfg(test)]
mod tests {
    #![allow(clippy::unwrap_used)]
    use super::*;

    #[test]
    fn an_ipv4_stream_header_is_the_specs_28_bytes() {
        let client: SocketAddr = "192.0.2.7:51000".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:8080".parse().unwrap();
        let h = header(client, local, Transport::Stream);
        let mut want = SIGNATURE.to_vec();
        want.extend_from_slice(&[0x21, 0x11, 0, 12, 192, 0, 2, 7, 198, 51, 100, 1]);
        want.extend_from_slice(&51000u16.to_be_bytes());
        want.extend_from_slice(&8080u16.to_be_bytes());
        assert_eq!(h, want);
        assert_eq!(parse(&h), Some((client, local, 28)));
    }

    #[test]
    fn ipv6_and_datagram_headers_round_trip_and_garbage_is_refused() {
        let client: SocketAddr = "[2001:db8::7]:5353".parse().unwrap();
        let local: SocketAddr = "198.51.100.1:53".parse().unwrap();
        let h = header(client, local, Transport::Datagram);
        assert_eq!(h[13], 0x22);
        let (c, l, len) = parse(&h).unwrap();
        assert_eq!((c, len), (client, 52));
        assert_eq!(l.port(), 53);
        assert_eq!(parse(&h[..20]), None);
        assert_eq!(parse(b"GET / HTTP/1.1\r\n\r\n"), None);
    }
}
