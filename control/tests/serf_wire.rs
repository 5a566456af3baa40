#![allow(clippy::unwrap_used)]
//! The wire format against a real HashiCorp Serf agent (Debian's `serf`, memberlist inside),
//! on loopback: we ping it and read its ack, then make it join us — it opens a TCP push/pull,
//! we decode its state and answer with ours, then answer its UDP probes — and `serf members`
//! must list our node as alive. Once in plaintext, once with `-encrypt` (AES-GCM keyring).
//!
//! Skipped, saying so, only when the `serf` binary is missing (CI installs it). Every loop
//! is bounded by a count of socket timeouts (no clock is read), and the agent is killed by a
//! drop guard, also when an assertion fails.

use std::collections::BTreeMap;

use std::io::{ErrorKind, Read, Write};
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener, TcpStream, UdpSocket};

use std::process::{Command, Stdio};
use std::time::Duration;

mod common;
use common::{Serf, free_port, serf_installed};

use control::gossip::wire::{
    Ack, Key, Keyring, Message, NodeState, Ping, PushNodeState, PushPull, StreamMessage, Versions,
    WireError, add_crc, decode_packet, decode_stream, encode, encode_stream, seal_packet,
    seal_stream,
};

const OUR_NAME: &str = "shoal";
const SERF_NAME: &str = "s1";
/// What Serf 0.9.4 announces (memberlist protocol 1–5, speaking 2; Serf protocol 2–5,
/// speaking 5), so its `verifyProtocol` finds us compatible: our membership core's versions.
const VSN: Versions = control::gossip::membership::VERSIONS;
const LOOPBACK: IpAddr = IpAddr::V4(Ipv4Addr::LOCALHOST);

/// What our side saw, for the assertions and for the report on failure.
#[derive(Debug, Default)]
struct Seen {
    /// Count of each message kind received over UDP.
    udp: BTreeMap<&'static str, usize>,
    checksummed: usize,
    encrypted_packets: usize,
    errors: Vec<WireError>,
    /// Serf's push/pulls to us, as decoded.
    push_pulls: Vec<PushPullSeen>,
    /// Serf's probes we answered (UDP and TCP).
    pings_answered: usize,
    tcp_pings: usize,
    alive_about: Vec<String>,
}

/// A push/pull as received (the delegate state only by length: it is Serf's own format).
#[derive(Debug, Clone)]
struct PushPullSeen {
    join: bool,
    nodes: Vec<PushNodeState>,
    user_state_len: usize,
    compressed: bool,
    encrypted: bool,
}

impl PushPullSeen {
    fn new(pp: PushPull, compressed: bool, encrypted: bool) -> Self {
        Self {
            join: pp.join,
            nodes: pp.nodes,
            user_state_len: pp.user_state.len(),
            compressed,
            encrypted,
        }
    }
}

/// Our node: a UDP socket and a TCP listener on one port, speaking through the wire module.
struct Shoal {
    udp: UdpSocket,
    tcp: TcpListener,
    addr: SocketAddr,
    keyring: Option<Keyring>,
    nonces: u64,
    seen: Seen,
}

impl Shoal {
    fn bind(keyring: Option<Keyring>) -> Self {
        let port = free_port();
        let udp = UdpSocket::bind((LOOPBACK, port)).unwrap();
        udp.set_read_timeout(Some(Duration::from_millis(50)))
            .unwrap();
        let tcp = TcpListener::bind((LOOPBACK, port)).unwrap();
        tcp.set_nonblocking(true).unwrap();
        Self {
            udp,
            tcp,
            addr: SocketAddr::new(LOOPBACK, port),
            keyring,
            nonces: 0,
            seen: Seen::default(),
        }
    }

    /// A fresh nonce. A counter is unique per key, which is all GCM needs; a real shell
    /// draws them from a CSPRNG because several processes share a key.
    fn nonce(&mut self) -> [u8; 12] {
        self.nonces += 1;
        let mut nonce = [0; 12];
        nonce[4..].copy_from_slice(&self.nonces.to_be_bytes());
        nonce
    }

    /// Sends one message with a checksum (Serf speaks protocol 5, so Go would add one),
    /// sealed if we have keys.
    fn send(&mut self, msg: &Message, to: SocketAddr) {
        let body = add_crc(&encode(msg));
        let packet = match self.keyring.clone() {
            Some(ring) => seal_packet(&body, ring.primary(), self.nonce(), b"").unwrap(),
            None => body,
        };
        self.udp.send_to(&packet, to).unwrap();
    }

    /// One datagram, decoded, or `None` after the socket's timeout.
    fn recv(&mut self) -> Option<(Vec<Message>, SocketAddr)> {
        let mut buf = [0u8; 65_536];
        let (len, from) = match self.udp.recv_from(&mut buf) {
            Ok(got) => got,
            Err(e) if matches!(e.kind(), ErrorKind::WouldBlock | ErrorKind::TimedOut) => {
                return None;
            }
            Err(e) => panic!("udp: {e}"),
        };
        match decode_packet(&buf[..len], self.keyring.as_ref()) {
            Ok(packet) => {
                self.seen.checksummed += usize::from(packet.checksummed);
                self.seen.encrypted_packets += usize::from(packet.encrypted);
                self.seen.errors.extend(packet.errors);
                for m in &packet.messages {
                    *self.seen.udp.entry(kind(m)).or_default() += 1;
                }
                Some((packet.messages, from))
            }
            Err(e) => {
                self.seen.errors.push(e);
                Some((Vec::new(), from))
            }
        }
    }

    /// Pings Serf until it acks (it may still be starting), up to 100 tries.
    fn ping_until_ack(&mut self, serf: SocketAddr) -> Ack {
        for seq in 1..=100 {
            let ping = Ping {
                seq_no: seq,
                node: SERF_NAME.into(),
                ..Ping::default()
            };
            self.send(&Message::Ping(ping), serf);
            for _ in 0..4 {
                let Some((msgs, _)) = self.recv() else { break };
                for m in msgs {
                    if let Message::Ack(ack) = m
                        && ack.seq_no == seq
                    {
                        return ack;
                    }
                }
            }
        }
        panic!("serf never acked a ping; seen {:?}", self.seen);
    }

    /// One turn of our event loop: a datagram (answering pings) and a connection (answering
    /// push/pulls and TCP pings), if any.
    fn step(&mut self) {
        if let Some((msgs, from)) = self.recv() {
            for m in msgs {
                match m {
                    Message::Ping(p) if p.node == OUR_NAME || p.node.is_empty() => {
                        let to = match p.source_addr {
                            Some(ip) if p.source_port != 0 => SocketAddr::new(ip, p.source_port),
                            _ => from,
                        };
                        let ack = Ack {
                            seq_no: p.seq_no,
                            payload: Vec::new(),
                        };
                        self.send(&Message::Ack(ack), to);
                        self.seen.pings_answered += 1;
                    }
                    Message::Alive(a) => self.seen.alive_about.push(a.node),
                    _ => {}
                }
            }
        }
        match self.tcp.accept() {
            Ok((conn, _)) => self.serve_stream(conn),
            Err(e) if e.kind() == ErrorKind::WouldBlock => {}
            Err(e) => panic!("accept: {e}"),
        }
    }

    fn serve_stream(&mut self, mut conn: TcpStream) {
        conn.set_nonblocking(false).unwrap();
        let (message, compressed, encrypted) = self.read_stream(&mut conn);
        let reply = match message {
            StreamMessage::PushPull(pp) => {
                let join = pp.join;
                let seen = PushPullSeen::new(pp, compressed, encrypted);
                self.seen.push_pulls.push(seen);
                StreamMessage::PushPull(self.our_state(join))
            }
            StreamMessage::Ping(p) => {
                self.seen.tcp_pings += 1;
                self.seen.pings_answered += 1;
                StreamMessage::Ack(Ack {
                    seq_no: p.seq_no,
                    payload: Vec::new(),
                })
            }
            other => panic!("unexpected stream message {other:?}"),
        };
        self.write_stream(&mut conn, &reply);
    }

    fn write_stream(&mut self, conn: &mut TcpStream, msg: &StreamMessage) {
        let plain = encode_stream(msg);
        let out = match self.keyring.clone() {
            Some(ring) => seal_stream(&plain, ring.primary(), self.nonce(), b"").unwrap(),
            None => plain,
        };
        conn.write_all(&out).unwrap();
    }

    /// Reads one stream message to its end (bounded by the read timeout and the size limit).
    fn read_stream(&self, conn: &mut TcpStream) -> (StreamMessage, bool, bool) {
        conn.set_read_timeout(Some(Duration::from_secs(2))).unwrap();
        let mut buf = Vec::new();
        let mut chunk = [0u8; 16 * 1024];
        loop {
            match decode_stream(&buf, self.keyring.as_ref()) {
                Ok((frame, _)) => return (frame.message, frame.compressed, frame.encrypted),
                Err(WireError::Incomplete) => {}
                Err(e) => panic!("stream from serf: {e} after {} bytes", buf.len()),
            }
            let n = conn.read(&mut chunk).unwrap();
            assert!(n > 0, "serf closed the stream after {} bytes", buf.len());
            buf.extend_from_slice(&chunk[..n]);
        }
    }

    /// Our own push/pull to Serf (what an anti-entropy round or our join sends): Serf answers
    /// with its state, which must now hold both of us.
    fn push_pull_with(&mut self, serf: SocketAddr) -> PushPullSeen {
        let mut conn = TcpStream::connect_timeout(&serf, Duration::from_secs(2)).unwrap();
        let ours = StreamMessage::PushPull(self.our_state(false));
        self.write_stream(&mut conn, &ours);
        match self.read_stream(&mut conn) {
            (StreamMessage::PushPull(pp), compressed, encrypted) => {
                PushPullSeen::new(pp, compressed, encrypted)
            }
            (other, ..) => panic!("serf answered a push/pull with {other:?}"),
        }
    }

    /// Our push/pull: ourselves, alive, and no delegate state (Serf merges none then).
    fn our_state(&self, join: bool) -> PushPull {
        PushPull {
            join,
            nodes: vec![PushNodeState {
                name: OUR_NAME.into(),
                addr: self.addr.ip(),
                port: self.addr.port(),
                // Serf reads meta as its tags; empty is "no tags".
                meta: Vec::new(),
                incarnation: 1,
                state: NodeState::Alive,
                vsn: Some(VSN),
            }],
            user_state: Vec::new(),
        }
    }
}

fn kind(m: &Message) -> &'static str {
    match m {
        Message::Ping(_) => "ping",
        Message::IndirectPing(_) => "indirect_ping",
        Message::Ack(_) => "ack",
        Message::Nack(_) => "nack",
        Message::Suspect(_) => "suspect",
        Message::Alive(_) => "alive",
        Message::Dead(_) => "dead",
        Message::User(_) => "user",
        Message::Err(_) => "err",
    }
}

fn interop(key: Option<&str>) {
    if !serf_installed() {
        eprintln!("SKIPPED: the `serf` binary is not installed (apt-get install serf)");
        return;
    }
    let keyring = key.map(|k| Keyring::new(Key::from_base64(k).unwrap()));
    let serf = Serf::start(SERF_NAME, key);
    let mut shoal = Shoal::bind(keyring);

    // 1. Our ping, its ack. Serf's ack carries its Vivaldi coordinate.
    let ack = shoal.ping_until_ack(serf.addr);
    assert!(
        !ack.payload.is_empty(),
        "serf's ack has a coordinate payload"
    );

    // 2. Serf joins us: a TCP push/pull to our port, answered by us.
    let mut join = Command::new("serf")
        .args(["join", &serf.rpc, &shoal.addr.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let mut joined = None;
    for _ in 0..400 {
        shoal.step();
        if let Some(status) = join.try_wait().unwrap() {
            joined = Some(status);
            break;
        }
    }
    let Some(status) = joined else {
        let _ = join.kill();
        let _ = join.wait();
        panic!("serf join did not finish; seen {:?}", shoal.seen);
    };
    let mut out = String::new();
    join.stdout
        .take()
        .unwrap()
        .read_to_string(&mut out)
        .unwrap();
    assert!(
        status.success(),
        "serf join failed: {out}; seen {:?}",
        shoal.seen
    );

    let pp = shoal.seen.push_pulls.first().cloned().unwrap();
    assert!(pp.join, "a join's push/pull says so");
    assert!(
        pp.compressed,
        "memberlist compresses streams (LZW) by default"
    );
    assert_eq!(pp.encrypted, key.is_some());
    assert!(pp.user_state_len > 0, "serf sends its own state");
    let s1 = pp.nodes.iter().find(|n| n.name == SERF_NAME).unwrap();
    assert_eq!(
        (s1.addr, s1.port, s1.state),
        (LOOPBACK, serf.addr.port(), NodeState::Alive)
    );
    assert_eq!(s1.vsn, Some(VSN), "serf's versions");
    // Serf's meta is its tags: the magic byte 255, then a msgpack map (empty: 0x80).
    assert_eq!(s1.meta, [0xff, 0x80]);

    // 3. Serf probes us (once a second: we are its only peer) and we answer. Serf's member
    //    list shows a memberlist *suspect* still as "alive", so "alive" alone is not proof:
    //    we wait for three probes, and require that none fell back to TCP (memberlist does
    //    when a UDP probe gets no valid ack) and that Serf logged no error, warning or
    //    suspicion (a bad ack, checksum or ciphertext is logged as one of those).
    let mut members = BTreeMap::new();
    for _ in 0..60 {
        for _ in 0..10 {
            shoal.step();
        }
        members = serf.members();
        if shoal.seen.pings_answered >= 3 {
            break;
        }
    }
    assert!(shoal.seen.pings_answered >= 3, "seen {:?}", shoal.seen);
    assert_eq!(
        members.get(OUR_NAME).map(String::as_str),
        Some("alive"),
        "serf members: {members:?}; seen {:?}",
        shoal.seen
    );
    assert_eq!(
        shoal.seen.tcp_pings, 0,
        "a UDP ack of ours was not accepted"
    );
    let log = std::fs::read_to_string(&serf.log).unwrap();
    for bad in ["[ERR]", "[WARN]", "Suspect", "Failed ping"] {
        assert!(!log.contains(bad), "serf logged {bad:?}");
    }
    assert!(
        shoal.seen.checksummed > 0,
        "serf checksums packets to a protocol-5 peer"
    );
    if key.is_some() {
        assert!(shoal.seen.encrypted_packets > 0);
    }
    assert!(shoal.seen.errors.is_empty(), "seen {:?}", shoal.seen);

    // 4. The other direction: we start a push/pull; Serf's answer lists both of us.
    let answer = shoal.push_pull_with(serf.addr);
    assert!(!answer.join && answer.compressed && answer.encrypted == key.is_some());
    let mut names: Vec<_> = answer
        .nodes
        .iter()
        .map(|n| (n.name.as_str(), n.state))
        .collect();
    names.sort();
    assert_eq!(
        names,
        [(SERF_NAME, NodeState::Alive), (OUR_NAME, NodeState::Alive)]
    );

    let mode = if key.is_some() {
        "encrypted"
    } else {
        "plaintext"
    };
    eprintln!(
        "serf interop ({mode}): members {members:?}; seen {:?}",
        shoal.seen
    );
}

#[test]
fn serf_acks_our_ping_and_lists_us_alive_after_joining_us() {
    interop(None);
}

#[test]
fn the_same_with_an_encrypted_cluster() {
    // 32 random-looking bytes, as `serf keygen` prints them.
    interop(Some("T9jncgl9mbLus+baTTa7q7nPSUrXwbDi2dhbtqir37s="));
}
