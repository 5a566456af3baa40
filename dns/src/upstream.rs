//! The sans-IO half of forwarding: which upstream resolvers the host has, and what to make
//! of an upstream's reply. The shell does the sending and the waiting.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use hickory_proto::op::ResponseCode;

/// At most this many upstreams are tried, as in Docker (and glibc's MAXNS).
pub const MAX_UPSTREAMS: usize = 3;

/// The `nameserver` lines of a resolv.conf, in order, at most [`MAX_UPSTREAMS`]. Our own
/// address is skipped: forwarding to ourselves would loop.
pub fn parse_resolv_conf(text: &str) -> Vec<SocketAddr> {
    text.lines()
        .filter_map(|line| {
            let mut words = line.split_whitespace();
            (words.next() == Some("nameserver"))
                .then(|| words.next())
                .flatten()
        })
        // A scoped IPv6 address (fe80::1%eth0) names an interface of the host: not ours to use.
        .filter_map(|addr| addr.parse::<IpAddr>().ok())
        .filter(|ip| *ip != IpAddr::V4(Ipv4Addr::new(127, 0, 0, 11)))
        .map(|ip| SocketAddr::new(ip, 53))
        .take(MAX_UPSTREAMS)
        .collect()
}

/// What to do with a datagram received from an upstream.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Verdict {
    /// The reply to our query: hand it to the client (NOERROR, NXDOMAIN, ...).
    Accept,
    /// The upstream could not answer (SERVFAIL, REFUSED): try the next one.
    TryNext,
    /// Not a reply to our query (another id, not a response, too short): keep waiting.
    Ignore,
}

/// Judges a datagram from an upstream against the id we sent.
pub fn judge(reply: &[u8], sent_id: u16) -> Verdict {
    if reply.len() < 12 || reply[..2] != sent_id.to_be_bytes() || reply[2] & 0x80 == 0 {
        return Verdict::Ignore;
    }
    match ResponseCode::from_low(reply[3] & 0x0f) {
        ResponseCode::ServFail | ResponseCode::Refused => Verdict::TryNext,
        _ => Verdict::Accept,
    }
}

/// The message with another id (we query upstreams with our own random ids, and give the
/// client back its own).
pub fn with_id(message: &[u8], id: u16) -> Vec<u8> {
    let mut out = message.to_vec();
    if out.len() >= 2 {
        out[..2].copy_from_slice(&id.to_be_bytes());
    }
    out
}

/// The id of a message (0 when it is too short to have one).
pub fn id_of(message: &[u8]) -> u16 {
    match message {
        [a, b, ..] => u16::from_be_bytes([*a, *b]),
        _ => 0,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn resolv_conf_gives_up_to_three_nameservers_in_order_without_ourselves() {
        let text = "# generated\nsearch example.org\nnameserver 127.0.0.11\nnameserver 10.0.0.2\n\
                    nameserver  192.0.2.53 # trailing\nnameserver ::1\nnameserver 10.9.9.9\n\
                    nameserver fe80::1%eth0\noptions ndots:2\n";
        let got = parse_resolv_conf(text);
        let want: Vec<SocketAddr> = vec![
            "10.0.0.2:53".parse().unwrap(),
            "192.0.2.53:53".parse().unwrap(),
            "[::1]:53".parse().unwrap(),
        ];
        assert_eq!(got, want);
        assert!(parse_resolv_conf("").is_empty());
    }

    fn reply(id: u16, flags: u8, rcode: u8) -> Vec<u8> {
        let mut r = vec![0u8; 12];
        r[..2].copy_from_slice(&id.to_be_bytes());
        r[2] = flags;
        r[3] = 0x80 | rcode;
        r
    }

    #[test]
    fn verdicts_follow_the_rcode_and_ignore_what_is_not_our_reply() {
        assert_eq!(judge(&reply(7, 0x81, 0), 7), Verdict::Accept);
        assert_eq!(
            judge(&reply(7, 0x81, 3), 7),
            Verdict::Accept,
            "NXDOMAIN is an answer"
        );
        assert_eq!(judge(&reply(7, 0x81, 2), 7), Verdict::TryNext, "SERVFAIL");
        assert_eq!(judge(&reply(7, 0x81, 5), 7), Verdict::TryNext, "REFUSED");
        assert_eq!(judge(&reply(8, 0x81, 0), 7), Verdict::Ignore, "another id");
        assert_eq!(
            judge(&reply(7, 0x01, 0), 7),
            Verdict::Ignore,
            "a query, not a reply"
        );
        assert_eq!(judge(&[0, 7, 0x81], 7), Verdict::Ignore, "too short");
    }

    #[test]
    fn ids_are_rewritten_in_place() {
        let m = reply(0x1234, 0x81, 0);
        assert_eq!(id_of(&with_id(&m, 0xbeef)), 0xbeef);
        assert_eq!(with_id(&m, 0xbeef)[2..], m[2..]);
        assert_eq!(id_of(&[1]), 0);
    }
}
